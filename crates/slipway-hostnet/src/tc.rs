//! Traffic shaping through the kernel's traffic control, laid out exactly
//! as libvirt 9.0 lays it out (src/util/virnetdevbandwidth.c), so that
//! `tc` output, monitoring and habits carry over:
//!
//! - a device's *transmit* side (traffic toward the guests: a network's
//!   inbound on its bridge, a guest's inbound on its tap) gets an HTB root
//!   qdisc `1:`; without a hierarchy (a tap) one class `1:1` holds
//!   everything; with one (a network's bridge) class `1:1` caps the whole
//!   and its child `1:2` takes traffic without a guaranteed `floor`, while
//!   each port with a floor gets a class `1:N` (N ≥ 3) and a u32 filter
//!   matching its MAC address ([`plug_floor`]);
//! - a device's *receive* side (traffic from the guests) gets an `ingress`
//!   qdisc and a u32 filter matching everything with a `police` action
//!   that drops above the rate.
//!
//! Units are libvirt's: rates in KiB/s written as tc's `kbps`, bursts in
//! KiB as `kb`, HTB's `quantum` computed as libvirt computes it.
//!
//! Why the `tc` program: netlink-packet-route (the crate `netlink` uses)
//! has no HTB qdisc or class options and no police action, and writing
//! HTB's rate tables by hand would re-implement tc's `tc_calc_rtable`; tc
//! is what libvirt itself runs. It is run with argument vectors, never a
//! shell: device names are validated interface names, every other
//! argument is a number formatted here.
//!
//! Kernels without some of the modules: libvirt's `sfq` leaf qdiscs and
//! its `fw` filter are optional here. Without `sch_sfq` a class keeps
//! HTB's default leaf (a pfifo: fair queueing between flows is lost, the
//! rates are not); without `cls_fw` the filter is left out (it only
//! classifies packets carrying firewall mark 1, which slipway never sets,
//! into the class traffic goes to anyway). What shaping cannot do without
//! (`sch_htb`, `sch_ingress`, `cls_u32`, `act_police`) fails the whole
//! call with [`Error::KernelFeature`], after removing what the call had
//! set: a device is shaped as asked or not at all.

use std::process::{Command, Stdio};

use slipway_netmgr::shaping::Shape;

use crate::error::{Error, Result};

/// The MTU libvirt's quantum computation assumes.
const QUANTUM_MTU: u64 = 1500;

/// What a step needs from the kernel, and whether shaping can do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// A qdisc, class or filter shaping cannot do without: (module, what).
    Module(&'static str, &'static str),
    /// One that is left out when the kernel lacks it: (module, what).
    Optional(&'static str, &'static str),
}

/// One `tc` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    args: Vec<String>,
    needs: Needs,
}

fn step(args: &[&str], needs: Needs) -> Step {
    Step {
        args: args.iter().map(|a| a.to_string()).collect(),
        needs,
    }
}

const HTB: Needs = Needs::Module("sch_htb", "the HTB qdisc");
const SFQ: Needs = Needs::Optional("sch_sfq", "the SFQ qdisc");
const FW: Needs = Needs::Optional("cls_fw", "the fw classifier");
const INGRESS: Needs = Needs::Module("sch_ingress", "the ingress qdisc");
const U32: Needs = Needs::Module("cls_u32", "the u32 classifier");
const POLICE: Needs = Needs::Module("act_police", "the police action");

fn kbps(v: u64) -> String {
    format!("{v}kbps")
}

/// libvirt's `virNetDevBandwidthCmdAddOptimalQuantum`.
fn quantum(average: u64) -> String {
    (average * 1024 / 8 / QUANTUM_MTU).max(1).to_string()
}

/// The steps of libvirt's `virNetDevBandwidthSet(dev, shape,
/// hierarchical, swapped=true)`: every device slipway shapes (a bridge, a
/// tap) has the guests on its far side.
fn set_steps(dev: &str, shape: &Shape, hierarchical: bool) -> Vec<Step> {
    let mut out = Vec::new();
    if let Some(tx) = shape.inbound.filter(|r| r.average != 0) {
        let average = kbps(tx.average);
        let peak = (tx.peak != 0).then(|| kbps(tx.peak));
        let default = if hierarchical { "2" } else { "1" };
        out.push(step(
            &[
                "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", default,
            ],
            HTB,
        ));
        if hierarchical {
            let ceil = peak.clone().unwrap_or_else(|| average.clone());
            out.push(step(
                &[
                    "class",
                    "add",
                    "dev",
                    dev,
                    "parent",
                    "1:",
                    "classid",
                    "1:1",
                    "htb",
                    "rate",
                    &average,
                    "ceil",
                    &ceil,
                    "quantum",
                    &quantum(tx.average),
                ],
                HTB,
            ));
        }
        let (parent, classid) = if hierarchical {
            ("1:1", "1:2")
        } else {
            ("1:", "1:1")
        };
        let mut class = step(
            &[
                "class", "add", "dev", dev, "parent", parent, "classid", classid, "htb", "rate",
                &average,
            ],
            HTB,
        );
        if let Some(p) = &peak {
            class.args.extend(["ceil".into(), p.clone()]);
        }
        if tx.burst != 0 {
            class
                .args
                .extend(["burst".into(), format!("{}kb", tx.burst)]);
        }
        class.args.extend(["quantum".into(), quantum(tx.average)]);
        out.push(class);
        out.push(step(
            &[
                "qdisc", "add", "dev", dev, "parent", classid, "handle", "2:", "sfq", "perturb",
                "10",
            ],
            SFQ,
        ));
        out.push(step(
            &[
                "filter", "add", "dev", dev, "parent", "1:0", "protocol", "all", "prio", "1",
                "handle", "1", "fw", "flowid", "1",
            ],
            FW,
        ));
    }
    if let Some(rx) = shape.outbound.filter(|r| r.average != 0) {
        // tc keeps a burst in a 32-bit byte count: libvirt's default burst
        // (one second at the average) is capped there.
        let burst = if rx.burst != 0 {
            rx.burst
        } else {
            rx.average.min(u64::from(u32::MAX) / 1024)
        };
        out.push(step(&["qdisc", "add", "dev", dev, "ingress"], INGRESS));
        out.push(step(
            &[
                "filter",
                "add",
                "dev",
                dev,
                "parent",
                "ffff:",
                "protocol",
                "all",
                "u32",
                "match",
                "u32",
                "0",
                "0",
                "police",
                "rate",
                &kbps(rx.average),
                "burst",
                &format!("{burst}kb"),
                "mtu",
                "64kb",
                "drop",
                "flowid",
                ":1",
            ],
            POLICE,
        ));
    }
    out
}

/// What tc's message says is missing from the kernel, if anything.
fn says_missing(stderr: &str) -> bool {
    [
        "Specified qdisc kind is unknown",
        "Specified qdisc not found",
        "TC classifier not found",
        "Failed to load TC action module",
        "Unknown qdisc",
        "Unknown filter",
        "Unknown action",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// Why one `tc` run failed.
enum Failure {
    /// The kernel lacks what the step needs.
    Missing,
    /// Anything else: tc's message.
    Other(String),
}

fn run(args: &[String]) -> std::result::Result<(), Failure> {
    let out = Command::new("tc")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::Other(format!("cannot run tc: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if says_missing(&stderr) {
        return Err(Failure::Missing);
    }
    Err(Failure::Other(if stderr.is_empty() {
        format!("tc exited with {}", out.status)
    } else {
        stderr
    }))
}

/// Runs `steps` in order: optional ones the kernel lacks are left out
/// (logged), anything else failing stops the run with its error.
fn run_steps(dev: &str, what: &str, steps: &[Step]) -> Result<()> {
    for s in steps {
        match (run(&s.args), s.needs) {
            (Ok(()), _) => {}
            (Err(Failure::Missing), Needs::Optional(module, thing)) => {
                tracing::info!("{what} on {dev}: this kernel has no {thing} ({module}): left out");
            }
            (Err(Failure::Missing), Needs::Module(module, thing)) => {
                return Err(Error::KernelFeature {
                    what: format!("{what} on {dev}"),
                    feature: thing,
                    module,
                })
            }
            (Err(Failure::Other(message)), _) => {
                return Err(Error::Tc {
                    command: format!("tc {}", s.args.join(" ")),
                    message,
                })
            }
        }
    }
    Ok(())
}

/// What the limits of `shape` are called in errors.
fn describe(shape: &Shape) -> &'static str {
    match (shape.inbound.is_some(), shape.outbound.is_some()) {
        (true, true) => "inbound and outbound bandwidth",
        (false, true) => "outbound bandwidth (policing traffic from the guests)",
        _ => "inbound bandwidth",
    }
}

/// Shapes device `dev` as `shape` says (libvirt's `virNetDevBandwidthSet`
/// with the guests on the far side): whatever shaping it had is removed
/// first; `hierarchical` lays out a network's bridge, ready for ports'
/// floors. On failure nothing of it stays.
pub fn set(dev: &str, shape: &Shape, hierarchical: bool) -> Result<()> {
    clear(dev);
    let r = run_steps(dev, describe(shape), &set_steps(dev, shape, hierarchical));
    if r.is_err() {
        clear(dev);
    }
    r
}

/// Removes the root and ingress qdiscs of `dev` (libvirt's
/// `virNetDevBandwidthClear`); a device without them is fine.
pub fn clear(dev: &str) {
    for which in ["root", "ingress"] {
        let args: Vec<String> = ["qdisc", "del", "dev", dev, which]
            .iter()
            .map(|a| a.to_string())
            .collect();
        // tc fails on a device without that qdisc: nothing to remove.
        let _ = run(&args);
    }
}

/// The u32 filter handle of floor class `id` (libvirt: `800::(800+id)`).
fn filter_handle(id: u32) -> String {
    format!("800::{}", 800 + id)
}

/// The steps of libvirt's `virNetDevBandwidthPlug`.
fn plug_steps(bridge: &str, ceiling: u64, mac: [u8; 6], floor: u64, id: u32) -> Vec<Step> {
    let class_id = format!("1:{id:x}");
    vec![
        step(
            &[
                "class",
                "add",
                "dev",
                bridge,
                "parent",
                "1:1",
                "classid",
                &class_id,
                "htb",
                "rate",
                &kbps(floor),
                "ceil",
                &kbps(ceiling),
                "quantum",
                &quantum(floor),
            ],
            HTB,
        ),
        step(
            &[
                "qdisc",
                "add",
                "dev",
                bridge,
                "parent",
                &class_id,
                "handle",
                &format!("{id:x}:"),
                "sfq",
                "perturb",
                "10",
            ],
            SFQ,
        ),
        step(
            &[
                "filter",
                "add",
                "dev",
                bridge,
                "protocol",
                "ip",
                "prio",
                "2",
                "handle",
                &filter_handle(id),
                "u32",
                "match",
                "u16",
                "0x0800",
                "0xffff",
                "at",
                "-2",
                "match",
                "u32",
                &format!("0x{:02x}{:02x}{:02x}{:02x}", mac[2], mac[3], mac[4], mac[5]),
                "0xffffffff",
                "at",
                "-12",
                "match",
                "u16",
                &format!("0x{:02x}{:02x}", mac[0], mac[1]),
                "0xffff",
                "at",
                "-14",
                "flowid",
                &class_id,
            ],
            U32,
        ),
    ]
}

/// Guarantees `floor` KiB/s toward the guest with MAC `mac` on a network's
/// bridge shaped with [`set`] (`hierarchical`): class `1:ID` under 1:1,
/// capped at `ceiling` (the network's inbound peak, else its average), and
/// a filter sending the MAC's IPv4 traffic there. On failure nothing of it
/// stays.
pub fn plug_floor(bridge: &str, ceiling: u64, mac: [u8; 6], floor: u64, id: u32) -> Result<()> {
    let r = run_steps(
        bridge,
        "a port's inbound floor",
        &plug_steps(bridge, ceiling, mac, floor, id),
    );
    if r.is_err() {
        unplug_floor(bridge, id);
    }
    r
}

/// Removes floor class `id` from `bridge` (libvirt's
/// `virNetDevBandwidthUnplug`), as far as it exists.
pub fn unplug_floor(bridge: &str, id: u32) {
    let strings = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let class_id = format!("1:{id:x}");
    let handle = filter_handle(id);
    for args in [
        strings(&["qdisc", "del", "dev", bridge, "handle", &format!("{id:x}:")]),
        strings(&[
            "filter", "del", "dev", bridge, "prio", "2", "handle", &handle, "u32",
        ]),
        strings(&["class", "del", "dev", bridge, "classid", &class_id]),
    ] {
        let _ = run(&args);
    }
}

/// Sets the rate of class `1:ID` of `bridge` (libvirt's
/// `virNetDevBandwidthUpdateRate`): class 1:2 gets what the floors leave.
pub fn update_rate(bridge: &str, id: u32, ceiling: u64, rate: u64) -> Result<()> {
    let class_id = format!("1:{id:x}");
    let s = step(
        &[
            "class",
            "change",
            "dev",
            bridge,
            "classid",
            &class_id,
            "htb",
            "rate",
            &kbps(rate),
            "ceil",
            &kbps(ceiling),
            "quantum",
            &quantum(rate),
        ],
        HTB,
    );
    run_steps(bridge, "the rate of traffic without a floor", &[s])
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_netmgr::shaping::ShapeRate;

    fn argv(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.args.join(" ")).collect()
    }

    fn rate(average: u64, peak: u64, burst: u64) -> ShapeRate {
        ShapeRate {
            average,
            peak,
            burst,
        }
    }

    /// A tap (libvirt's `virNetDevBandwidthSet(tap, bw, false, true)`):
    /// the commands libvirt 9.0 runs, argument for argument.
    #[test]
    fn a_taps_shape_is_libvirts_flat_layout() {
        let shape = Shape {
            inbound: Some(rate(1000, 2000, 64)),
            outbound: Some(rate(128, 0, 0)),
        };
        assert_eq!(
            argv(&set_steps("vnet0", &shape, false)),
            [
                "qdisc add dev vnet0 root handle 1: htb default 1",
                "class add dev vnet0 parent 1: classid 1:1 htb rate 1000kbps ceil 2000kbps burst 64kb quantum 85",
                "qdisc add dev vnet0 parent 1:1 handle 2: sfq perturb 10",
                "filter add dev vnet0 parent 1:0 protocol all prio 1 handle 1 fw flowid 1",
                "qdisc add dev vnet0 ingress",
                "filter add dev vnet0 parent ffff: protocol all u32 match u32 0 0 police rate 128kbps burst 128kb mtu 64kb drop flowid :1",
            ]
        );
    }

    /// A network's bridge (hierarchical): 1:1 caps, 1:2 is the default.
    #[test]
    fn a_bridges_shape_is_libvirts_hierarchy() {
        let shape = Shape {
            inbound: Some(rate(1, 0, 0)),
            outbound: None,
        };
        assert_eq!(
            argv(&set_steps("virbr1", &shape, true)),
            [
                "qdisc add dev virbr1 root handle 1: htb default 2",
                "class add dev virbr1 parent 1: classid 1:1 htb rate 1kbps ceil 1kbps quantum 1",
                "class add dev virbr1 parent 1:1 classid 1:2 htb rate 1kbps quantum 1",
                "qdisc add dev virbr1 parent 1:2 handle 2: sfq perturb 10",
                "filter add dev virbr1 parent 1:0 protocol all prio 1 handle 1 fw flowid 1",
            ]
        );
        // The police burst is capped where tc's 32-bit byte count ends.
        let big = Shape {
            inbound: None,
            outbound: Some(rate(100_000_000, 0, 0)),
        };
        assert!(argv(&set_steps("b", &big, true))[1].contains(" burst 4194303kb "));
    }

    #[test]
    fn a_floor_is_a_class_a_leaf_and_a_mac_filter() {
        let mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        assert_eq!(
            argv(&plug_steps("virbr1", 2000, mac, 300, 11)),
            [
                "class add dev virbr1 parent 1:1 classid 1:b htb rate 300kbps ceil 2000kbps quantum 25",
                "qdisc add dev virbr1 parent 1:b handle b: sfq perturb 10",
                "filter add dev virbr1 protocol ip prio 2 handle 800::811 u32 match u16 0x0800 0xffff at -2 match u32 0x00abcdef 0xffffffff at -12 match u16 0x5254 0xffff at -14 flowid 1:b",
            ]
        );
    }

    #[test]
    fn tcs_messages_for_missing_modules_are_recognised() {
        assert!(says_missing(
            "Error: Failed to load TC action module.\nWe have an error talking to the kernel"
        ));
        assert!(says_missing("Error: Specified qdisc kind is unknown."));
        assert!(says_missing("Error: TC classifier not found."));
        assert!(!says_missing("Cannot find device \"x\""));
    }
}
