//! End-to-end: bandwidth through tc and port isolation through the bridge
//! port flag, on a running network, with guests plugged by `slipway
//! launch` (the path a VM's taps take), each test in a user + network
//! namespace of its own.
//!
//! A "guest" here is QEMU without a CPU (`-M none`): its net layer joins,
//! through a hub, the tap slipway created and handed over (fd 3) with a
//! second tap `eth0` that QEMU opens inside a namespace of the guest's
//! own. Traffic between the network's bridge and that namespace crosses
//! slipway's tap exactly as a VM's would; the NIC arguments slipway adds
//! for a real VM are ignored by the wrapper.
//!
//! Needs: util-linux (unshare, nsenter), iproute2 (ip, tc), iperf3,
//! qemu-system-x86, busybox-static.

mod net_common;

use std::path::Path;
use std::process::{Command, Stdio};

use net_common::*;
use slipway_testkit::netns::{sh, wait_for, Netns};
use slipway_testkit::KillOnDrop;

/// A network with a bridge and no DHCP (guests get fixed addresses).
fn network(extra: &str) -> String {
    format!(
        "<network><name>qos</name><uuid>61111111-2222-3333-4444-555555555555</uuid>\
         <bridge name='br-qos' stp='off' delay='0'/>{extra}\
         <ip address='10.77.0.1' prefix='24'/></network>"
    )
}

/// A guest on network `qos` through `slipway launch`: QEMU (no CPU)
/// joins slipway's tap to `eth0` in the guest's namespace, which gets
/// `addr`. Killed on drop (the launcher then removes its tap).
struct Guest {
    ns: Netns,
    launcher: KillOnDrop,
}

impl Guest {
    fn new(root: &Path, name: &str, mac: &str, addr: &str, extra: &str) -> Guest {
        let ns = Netns::new();
        let xml = write(
            root,
            &format!("{name}.xml"),
            &format!(
                "<interface type='network'><mac address='{mac}'/><source network='qos'/>\
                 <target dev='{name}'/><model type='e1000'/>{extra}</interface>"
            ),
        );
        let qemu = format!(
            "exec nsenter -t {} -n qemu-system-x86_64 -M none -nodefaults -display none \
             -netdev tap,id=a,fd=3 -netdev tap,id=b,ifname=eth0,script=no,downscript=no \
             -netdev hubport,id=h1,hubid=0,netdev=a -netdev hubport,id=h2,hubid=0,netdev=b",
            ns.pid()
        );
        let launcher = Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("--root")
            .arg(root)
            .arg("launch")
            .arg(&xml)
            .args(["--", "sh", "-c", &qemu, "qemu"])
            .stdin(Stdio::null())
            .spawn()
            .map(KillOnDrop)
            .expect("slipway launch");
        let g = Guest { ns, launcher };
        g.ns.wait_for_link("eth0");
        g.ns.run(&format!(
            "ip link set eth0 address {mac} up && ip addr add {addr}/24 dev eth0"
        ));
        g
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SIGTERM: the launcher tears down.
        self.launcher.terminate();
    }
}

/// iperf3 between the host (the bridge's address) and the guest at
/// 10.77.0.10 for `secs` seconds, toward the guest or (`from_guest`, the
/// server sending: `-R`) from it: the receiver's rate in bit/s.
fn rate(guest: &Guest, secs: u32, from_guest: bool) -> f64 {
    let _server = KillOnDrop(
        Command::new("nsenter")
            .args(["-t", &guest.ns.pid().to_string(), "-n"])
            .args(["iperf3", "-s", "-1", "-B", "10.77.0.10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s"),
    );
    let mut last = String::new();
    for _ in 0..50 {
        let o = Command::new("iperf3")
            .args(["-c", "10.77.0.10", "-J", "-t", &secs.to_string()])
            .args(from_guest.then_some("-R"))
            .output()
            .expect("iperf3 -c");
        last = String::from_utf8_lossy(&o.stdout).into_owned();
        // iperf3 3.12 exits 0 with -J even when it could not connect
        // (the server is not listening yet): the JSON says.
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        if o.status.success() && v.get("error").is_none() {
            return v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or_else(|| panic!("no received rate in {last}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("iperf3 with the guest failed: {last}");
}

fn start(root: &Path, extra: &str) {
    write(root, "qos.xml", &network(extra));
    ok(root, &["net-define", "qos.xml"]);
    ok(root, &["net-start", "qos"]);
}

/// An interface's `<inbound average='1000'/>` (1000 KiB/s as tc's kbps:
/// 8 Mbit/s) holds iperf3 toward the guest near that rate and far below
/// the same guest's rate without it; the tap carries libvirt's HTB layout
/// while it exists. No absolute speed is asserted: only ratios, with wide
/// margins.
#[test]
fn an_inbound_limit_holds_a_guest_to_its_rate() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    start(root, "");
    let free = {
        let g = Guest::new(root, "vfree0", "52:54:00:77:00:10", "10.77.0.10", "");
        assert!(g.ns.pings("10.77.0.1"));
        rate(&g, 3, false)
    };
    wait_for("the first guest's tap to go", || {
        sh("ip -o link show").lines().all(|l| !l.contains("vfree0"))
    });
    let g = Guest::new(
        root,
        "vlim0",
        "52:54:00:77:00:10",
        "10.77.0.10",
        "<bandwidth><inbound average='1000' burst='32'/></bandwidth>",
    );
    let qdiscs = sh("tc qdisc show dev vlim0");
    assert!(qdiscs.contains("qdisc htb 1: root"), "{qdiscs}");
    let classes = sh("tc class show dev vlim0");
    assert!(classes.contains("class htb 1:1 root"), "{classes}");
    assert!(classes.contains("rate 8Mbit"), "{classes}");
    let limited = rate(&g, 4, false);
    let limit = 8_000_000.0;
    eprintln!("toward the guest: {free:.0} bit/s free, {limited:.0} bit/s limited to {limit}");
    assert!(
        limited < limit * 1.5 && limited > limit * 0.3,
        "limited to {limited} bit/s, limit {limit}"
    );
    assert!(
        free > limited * 3.0,
        "unlimited {free} bit/s is not well above limited {limited} bit/s"
    );
    // The other direction is not limited by <inbound>.
    let back = rate(&g, 2, true);
    assert!(
        back > limited * 3.0,
        "from the guest {back} bit/s, toward it {limited} bit/s"
    );
    drop(g);
    wait_for("the limited guest's tap to go", || {
        sh("ip -o link show").lines().all(|l| !l.contains("vlim0"))
    });
}

/// A network's `<bandwidth>` shapes its bridge with libvirt's hierarchy
/// (1:1 caps, 1:2 default) while it runs; after `net-destroy` nothing of
/// it is left. A floor beyond the network's inbound average is refused
/// through the port API with libvirt's message.
#[test]
fn a_networks_bandwidth_shapes_its_bridge_until_it_stops() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    start(
        root,
        "<bandwidth><inbound average='2000' peak='4000'/></bandwidth>",
    );
    let classes = sh("tc class show dev br-qos");
    assert!(classes.contains("class htb 1:1 root"), "{classes}");
    assert!(classes.contains("class htb 1:2 parent 1:1"), "{classes}");
    assert!(sh("tc qdisc show dev br-qos").contains("qdisc htb 1: root"));
    let port = |uuid: &str, floor: u32| {
        format!(
            "<networkport><uuid>{uuid}</uuid><owner><name>vm</name>\
             <uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid></owner>\
             <mac address='52:54:00:77:00:{:02x}'/>\
             <bandwidth><inbound floor='{floor}'/></bandwidth></networkport>",
            floor / 100
        )
    };
    write(
        root,
        "p1.xml",
        &port("5d744f21-ba4a-4d6e-bdb2-30a35ff3207d", 3000),
    );
    write(
        root,
        "p2.xml",
        &port("0d744f21-ba4a-4d6e-bdb2-30a35ff3207d", 1100),
    );
    ok(root, &["net-port-create", "qos", "p1.xml"]);
    let refused = sw(root, &["net-port-create", "qos", "p2.xml"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(
            "Cannot plug '52:54:00:77:00:0b' interface into 'br-qos' because new combined \
             inbound floor=4100 would overcommit peak=4000 on network 'qos'"
        ),
        "{}",
        refused.stderr
    );
    let dump = ok(
        root,
        &[
            "net-port-dumpxml",
            "qos",
            "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d",
        ],
    );
    assert!(dump.contains("<bandwidth classID='3'>"), "{dump}");
    // The floor is a class of its own under 1:1 with a filter on the MAC;
    // class 1:2 keeps the peak less the floors (4000 - 3000 kbps).
    let classes = sh("tc class show dev br-qos");
    assert!(classes.contains("class htb 1:3 parent 1:1"), "{classes}");
    assert!(classes.contains("rate 24Mbit ceil 32Mbit"), "{classes}");
    let rest = sh("tc class show dev br-qos classid 1:2");
    assert!(rest.contains("rate 8Mbit ceil 32Mbit"), "{rest}");
    let filters = sh("tc filter show dev br-qos");
    assert!(filters.contains("*flowid 1:3"), "{filters}");
    assert!(
        filters.contains("match 5254/ffff at -14") || filters.contains("00005254/0000ffff at -16"),
        "{filters}"
    );
    // Deleting the port gives the floor back.
    ok(
        root,
        &[
            "net-port-delete",
            "qos",
            "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d",
        ],
    );
    let classes = sh("tc class show dev br-qos");
    assert!(!classes.contains("1:3"), "{classes}");
    let rest = sh("tc class show dev br-qos classid 1:2");
    assert!(rest.contains("rate 32Mbit ceil 32Mbit"), "{rest}");
    assert!(!sh("tc filter show dev br-qos").contains("flowid 1:3"));
    ok(root, &["net-port-create", "qos", "p2.xml"]);
    ok(root, &["net-destroy", "qos"]);
    assert!(sh("ip -o link show").lines().all(|l| !l.contains("br-qos")));
    assert!(!sh("tc qdisc show").contains("htb"));
}

/// `<outbound>` needs the police action; on a kernel without act_police
/// the guest's start fails naming it, and no tap or qdisc is left. Where
/// the kernel has it, the same guest starts and its rate from the guest
/// is measured like the inbound one.
#[test]
fn an_outbound_limit_needs_the_police_action() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    start(root, "");
    let has_police = {
        sh("ip link add probe0 type bridge");
        let ok = Command::new("sh")
            .args([
                "-c",
                "tc qdisc add dev probe0 ingress && tc filter add dev probe0 parent ffff: \
                 protocol all u32 match u32 0 0 police rate 1mbit burst 10k drop flowid :1",
            ])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        sh("ip link del probe0");
        ok
    };
    let xml = write(
        root,
        "out.xml",
        "<interface type='network'><mac address='52:54:00:77:00:20'/><source network='qos'/>\
         <target dev='vout0'/><model type='e1000'/>\
         <bandwidth><outbound average='1000'/></bandwidth></interface>",
    );
    if has_police {
        // This kernel has the action: measure from the guest instead.
        let g = Guest::new(
            root,
            "vout0",
            "52:54:00:77:00:20",
            "10.77.0.10",
            "<bandwidth><outbound average='1000'/></bandwidth>",
        );
        let r = rate(&g, 4, true);
        assert!(r < 8_000_000.0 * 1.5, "policed to {r} bit/s");
        return;
    }
    let run = sw(root, &["launch", xml.to_str().unwrap(), "--", "true"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(
            "outbound bandwidth (policing traffic from the guests) on vout0 needs the police \
             action of the kernel's traffic control (module act_police), which this kernel \
             does not have: load it (modprobe act_police) or remove that limit from <bandwidth>"
        ),
        "{}",
        run.stderr
    );
    assert!(sh("ip -o link show").lines().all(|l| !l.contains("vout0")));
    assert!(!sh("tc qdisc show").contains("ingress"));
    // A host bridge (forward mode='bridge') is not slipway's to delete:
    // its inbound HTB, set before the police step failed, is taken off
    // again, and the network does not start.
    sh("ip link add br-host type bridge && ip link set br-host up");
    write(
        root,
        "host.xml",
        "<network><name>host</name><forward mode='bridge'/><bridge name='br-host'/>\
         <bandwidth><inbound average='1000'/><outbound average='1000'/></bandwidth></network>",
    );
    ok(root, &["net-define", "host.xml"]);
    let start = sw(root, &["net-start", "host"]);
    assert_ne!(start.code, 0, "{start:?}");
    assert!(
        start.stderr.contains("(module act_police)"),
        "{}",
        start.stderr
    );
    let left = sh("tc qdisc show dev br-host");
    assert!(!left.contains("htb") && !left.contains("ingress"), "{left}");
    assert!(ok(root, &["net-list", "--all"]).contains(" host "));
}

/// With `<port isolated='yes'/>` on the network, two guests reach the
/// gateway but not each other; without it they reach each other; an
/// interface's own `<port isolated='no'/>` wins over the network's.
#[test]
fn isolated_ports_reach_the_gateway_but_not_each_other() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    start(root, "<port isolated='yes'/>");
    {
        let a = Guest::new(root, "viso1", "52:54:00:77:00:31", "10.77.0.31", "");
        let b = Guest::new(root, "viso2", "52:54:00:77:00:32", "10.77.0.32", "");
        assert!(sh("bridge -d link show dev viso1").contains("isolated on"));
        assert!(a.ns.pings("10.77.0.1"), "a reaches the gateway");
        assert!(b.ns.pings("10.77.0.1"), "b reaches the gateway");
        assert!(
            !a.ns.pings("10.77.0.32"),
            "a reaches b across isolated ports"
        );
        assert!(
            !b.ns.pings("10.77.0.31"),
            "b reaches a across isolated ports"
        );
        // b's own <port isolated='no'/> wins over the network's.
        drop(b);
        let b = Guest::new(
            root,
            "viso3",
            "52:54:00:77:00:32",
            "10.77.0.32",
            "<port isolated='no'/>",
        );
        assert!(sh("bridge -d link show dev viso3").contains("isolated off"));
        assert!(
            a.ns.pings("10.77.0.32"),
            "an isolated port reaches one that is not"
        );
        assert!(
            b.ns.pings("10.77.0.31"),
            "a port that is not isolated reaches an isolated one"
        );
    }
    ok(root, &["net-destroy", "qos"]);
    ok(root, &["net-undefine", "qos"]);
    start(root, "");
    let a = Guest::new(root, "vopen1", "52:54:00:77:00:41", "10.77.0.41", "");
    let b = Guest::new(root, "vopen2", "52:54:00:77:00:42", "10.77.0.42", "");
    assert!(a.ns.pings("10.77.0.42"), "without isolation a reaches b");
    assert!(b.ns.pings("10.77.0.41"), "without isolation b reaches a");
}
