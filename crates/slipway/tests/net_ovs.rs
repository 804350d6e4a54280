//! End-to-end: guests plugged into Open vSwitch by slipway as libvirt
//! plugs them. Each test runs in a user + network namespace of its own with
//! an `ovsdb-server` and `ovs-vswitchd` it starts there
//! (`slipway_testkit::ovs`; the system's OVS service is never used), an
//! OVS bridge on the userspace datapath (the kernel here has no
//! `openvswitch` module), and a slipway network
//! `<forward mode='bridge'/><bridge name='ovsbr0'/><virtualport type='openvswitch'/>`.
//! "Guests" are namespaces whose `eth0` is joined to the tap `slipway
//! launch` creates by a real QEMU with no machine (a hub between the tap's
//! descriptor and `eth0`), so every frame crosses slipway's tap and OVS.
//! slipway and its launcher find this OVS through `OVS_RUNDIR`, as
//! `ovs-vsctl` does.
//!
//! Needs: openvswitch-switch, qemu-system-x86, util-linux (unshare,
//! nsenter), iproute2, busybox-static.

mod net_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use net_common::*;
use slipway_testkit::netns::{sh, wait_for, Netns};
use slipway_testkit::ovs::{hub_guest_qemu, OvsInstance};
use slipway_testkit::KillOnDrop;

const NET: &str = "<network><name>ovs</name>\
  <uuid>55555555-2222-3333-4444-555555555555</uuid>\
  <forward mode='bridge'/><bridge name='ovsbr0'/><virtualport type='openvswitch'/>\
  <portgroup name='blue'><vlan><tag id='42'/></vlan></portgroup>\
  </network>";

/// A guest: its namespace, and the domain it is launched from.
struct G {
    ns: Netns,
    ip: String,
}

fn launcher(root: &Path, ovs: &OvsInstance, xml: &Path, qemu: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--root")
        .arg(root)
        .arg("launch")
        .arg(xml)
        .arg("--")
        .arg(qemu)
        .envs(ovs.env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

fn domain(n: u8, iface: &str) -> String {
    format!(
        "<domain type='qemu'><name>g{n}</name>\
         <uuid>c7a5fdbd-edaf-9455-926a-d65c16db180{n}</uuid><devices>{iface}</devices></domain>"
    )
}

fn mac(n: u8) -> String {
    format!("52:54:00:0f:00:0{n}")
}

/// Launches guest `n` (10.7.0.n) with interface XML `iface` and waits for
/// its `eth0`.
/// The launcher is killed on drop.
fn start_guest(root: &Path, ovs: &OvsInstance, n: u8, iface: &str) -> (G, KillOnDrop) {
    let ns = Netns::new();
    let xml = write(root, &format!("g{n}.xml"), &domain(n, iface));
    let qemu = hub_guest_qemu(root, &format!("qemu-g{n}"), ns.pid()).unwrap();
    let child = launcher(root, ovs, &xml, &qemu)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(root.join(format!("g{n}.log"))).unwrap(),
        ))
        .spawn()
        .unwrap();
    let launch = KillOnDrop(child);
    ns.wait_for_link("eth0");
    let ip = format!("10.7.0.{n}");
    ns.run(&format!(
        "ip link set eth0 address {} && ip addr add {ip}/24 dev eth0 && ip link set eth0 up",
        mac(n)
    ));
    (G { ns, ip }, launch)
}

/// The OVS interface whose attached-mac is guest `n`'s.
fn port_of(ovs: &OvsInstance, n: u8) -> String {
    ovs.vsctl(&[
        "--bare",
        "--columns=name",
        "find",
        "Interface",
        &format!("external_ids:attached-mac=\"{}\"", mac(n)),
    ])
    .unwrap()
}

fn ext(ovs: &OvsInstance, iface: &str, key: &str) -> String {
    ovs.get("Interface", iface, &format!("external_ids:{key}"))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// Whether `s` is a UUID in its hyphenated form.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn links() -> String {
    sh("ip -o link show | cut -d: -f2 | sort")
}

#[test]
fn guests_on_an_ovs_network_get_libvirts_ports_vlans_and_cleanup() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ovs = OvsInstance::start().expect("start Open vSwitch");
    ovs.add_bridge("ovsbr0").unwrap();
    let ovs_env: Vec<(&str, String)> = ovs
        .env()
        .into_iter()
        .map(|(k, v)| (k, v.display().to_string()))
        .collect();
    let env: Vec<(&str, &str)> = ovs_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = root.join("daemon.log");
    let mut daemon = Daemon::start_env(root, &env);
    write(root, "ovs.xml", NET);
    ok(root, &["net-define", "ovs.xml"]);
    ok(root, &["net-start", "ovs"]);

    const GIVEN: &str = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa42";
    // 1: the network's virtualport, generated interfaceid, tap named by us.
    let (g1, mut l1) = start_guest(
        root,
        &ovs,
        1,
        &format!(
            "<interface type='network'><source network='ovs'/><mac address='{}'/>\
             <target dev='tg1'/><model type='virtio'/></interface>",
            mac(1)
        ),
    );
    // 2: its own interfaceid, a generated vnetN tap.
    let (g2, mut l2) = start_guest(
        root,
        &ovs,
        2,
        &format!(
            "<interface type='network'><source network='ovs'/><mac address='{}'/>\
             <virtualport><parameters interfaceid='{GIVEN}'/></virtualport>\
             <model type='virtio'/></interface>",
            mac(2)
        ),
    );
    // 3: portgroup blue, VLAN 42.
    let (g3, l3) = start_guest(
        root,
        &ovs,
        3,
        &format!(
            "<interface type='network'><source network='ovs' portgroup='blue'/>\
             <mac address='{}'/><model type='virtio'/></interface>",
            mac(3)
        ),
    );
    // 4: type='bridge' straight onto the OVS bridge, its own VLAN 42 and
    // port profile.
    let (g4, l4) = start_guest(
        root,
        &ovs,
        4,
        &format!(
            "<interface type='bridge'><source bridge='ovsbr0'/><mac address='{}'/>\
             <virtualport type='openvswitch'><parameters profileid='gold'/></virtualport>\
             <vlan><tag id='42'/></vlan><model type='virtio'/></interface>",
            mac(4)
        ),
    );

    // What libvirt sets, read back from OVSDB.
    let p1 = port_of(&ovs, 1);
    assert_eq!(p1, "tg1");
    let p2 = port_of(&ovs, 2);
    assert!(p2.starts_with("vnet"), "{p2}");
    let (p3, p4) = (port_of(&ovs, 3), port_of(&ovs, 4));
    let mut all = vec![p1.clone(), p2.clone(), p3.clone(), p4.clone()];
    all.sort();
    assert_eq!(ovs.ports("ovsbr0").unwrap(), all);
    for (n, p) in [(1, &p1), (2, &p2), (3, &p3), (4, &p4)] {
        assert_eq!(ext(&ovs, p, "attached-mac"), mac(n));
        assert_eq!(
            ext(&ovs, p, "vm-id"),
            format!("c7a5fdbd-edaf-9455-926a-d65c16db180{n}")
        );
        assert_eq!(ext(&ovs, p, "iface-status"), "active");
        let id = ext(&ovs, p, "iface-id");
        assert!(is_uuid(&id), "{p}: iface-id {id}");
    }
    assert_eq!(ext(&ovs, &p2, "iface-id"), GIVEN);
    assert_ne!(ext(&ovs, &p1, "iface-id"), ext(&ovs, &p3, "iface-id"));
    assert_eq!(ext(&ovs, &p4, "port-profile"), "gold");
    assert_eq!(ext(&ovs, &p4, "ifname"), p4);
    assert_eq!(ovs.get("Port", &p1, "tag").unwrap(), "[]");
    assert_eq!(ovs.get("Port", &p3, "tag").unwrap(), "42");
    assert_eq!(ovs.get("Port", &p4, "tag").unwrap(), "42");
    // Not on a Linux bridge as well.
    assert!(!sh(&format!("ip -o link show {p1}")).contains(" master "));

    // Untagged guests reach each other, VLAN 42 guests each other, and
    // nothing crosses between the two.
    assert!(g1.ns.reaches(&g2.ip), "{}", ovs.logs());
    assert!(g3.ns.reaches(&g4.ip), "{}", ovs.logs());
    assert!(!g1.ns.pings(&g3.ip));
    assert!(!g4.ns.pings(&g2.ip));

    // A port created through the port API (as libvirt's QEMU driver asks
    // for one) carries the merged virtualport with its generated
    // interfaceid and the portgroup's VLAN, for the driver to plug.
    write(
        root,
        "port.xml",
        "<networkport><uuid>5d744f21-ba4a-4d6e-bdb2-30a35ff3207d</uuid>\
         <owner><name>vm9</name><uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid></owner>\
         <group>blue</group><mac address='52:54:00:0f:00:09'/></networkport>",
    );
    ok(root, &["net-port-create", "ovs", "port.xml"]);
    let dump = || {
        ok(
            root,
            &[
                "net-port-dumpxml",
                "ovs",
                "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d",
            ],
        )
    };
    let port = dump();
    assert!(port.contains("<virtualport type='openvswitch'>"), "{port}");
    assert!(port.contains("<parameters interfaceid='"), "{port}");
    assert!(port.contains("<tag id='42'/>"), "{port}");
    assert!(
        port.contains("<plug type='bridge' bridge='ovsbr0'/>"),
        "{port}"
    );

    // A daemon restart changes nothing: ports, tags, traffic, port API.
    let ports = ovs.ports("ovsbr0").unwrap();
    daemon.terminate();
    daemon = Daemon::start_with(root, &[], &log);
    assert_eq!(ovs.ports("ovsbr0").unwrap(), ports);
    assert_eq!(ovs.get("Port", &p3, "tag").unwrap(), "42");
    assert!(g2.ns.reaches(&g1.ip));
    assert_eq!(dump(), port);

    // Teardown: a VM that ends takes its port out of OVSDB.
    l1.terminate();
    wait_for("g1's port to go", || {
        !ovs.ports("ovsbr0").unwrap().contains(&p1)
    });
    assert_eq!(ovs.get("Interface", &p1, "name").unwrap(), "");
    // A launcher killed outright cannot; the next launch removes what it
    // left (its tap is gone with its QEMU).
    l2.kill();
    wait_for("g2's tap to go", || !links().contains(&format!(" {p2}")));
    assert!(ovs.ports("ovsbr0").unwrap().contains(&p2));
    let (_g5, l5) = start_guest(
        root,
        &ovs,
        5,
        &format!(
            "<interface type='network'><source network='ovs'/><mac address='{}'/></interface>",
            mac(5)
        ),
    );
    assert!(
        !ovs.ports("ovsbr0").unwrap().contains(&p2),
        "stale port kept"
    );
    for mut l in [l3, l4, l5] {
        l.terminate();
    }
    wait_for("every port to go", || {
        ovs.ports("ovsbr0").unwrap().is_empty()
    });
    drop(daemon);
    drop((g1, g2, g3, g4));
}

/// Runs `slipway launch` of `iface` (expected to fail) with a QEMU that
/// must never run; returns its stderr.
fn launch_fails(root: &Path, ovs: &OvsInstance, iface: &str) -> String {
    let xml = write(root, "bad.xml", &domain(9, iface));
    let marker = root.join("qemu-ran");
    let qemu: PathBuf = write(
        root,
        "qemu",
        &format!("#!/bin/sh\ntouch {}\n", marker.display()),
    );
    sh(&format!("chmod +x {}", qemu.display()));
    let out = launcher(root, ovs, &xml, &qemu).output().unwrap();
    assert!(!out.status.success(), "{iface}");
    assert!(!marker.exists(), "QEMU ran for {iface}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_names_and_settings_are_refused_before_ovs_is_touched() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ovs = OvsInstance::start().expect("start Open vSwitch");
    ovs.add_bridge("ovsbr0").unwrap();
    write(root, "ovs.xml", NET);
    ok(root, &["net-define", "ovs.xml"]);
    ok(root, &["net-start", "ovs"]);
    // A NAT network: no virtualport, no VLAN.
    write(
        root,
        "nat.xml",
        "<network><name>nat</name><bridge name='br-nat'/><forward mode='nat'/>\
         <ip address='10.8.0.1' prefix='24'/></network>",
    );
    ok(root, &["net-define", "nat.xml"]);
    ok(root, &["net-start", "nat"]);
    // A Linux bridge, which OVS does not know.
    sh("ip link add brlx type bridge && ip link set brlx up");
    let before = (links(), ovs.vsctl(&["show"]).unwrap());
    for (iface, want) in [
        // Tap names ovs-vsctl could read as options or syntax.
        (
            "<interface type='network'><source network='ovs'/><target dev='-x'/></interface>",
            "invalid Open vSwitch interface name '-x': starts with '-'",
        ),
        (
            "<interface type='network'><source network='ovs'/><target dev='a=b'/></interface>",
            "invalid Open vSwitch interface name 'a=b'",
        ),
        (
            "<interface type='bridge'><source bridge='br,x'/>\
             <virtualport type='openvswitch'/></interface>",
            "invalid Open vSwitch bridge name 'br,x'",
        ),
        (
            "<interface type='bridge'><source bridge='ovsbr0'/><virtualport type='openvswitch'>\
             <parameters profileid='a&#10;b'/></virtualport></interface>",
            "invalid Open vSwitch port profile 'a\\nb': control characters are not allowed",
        ),
        // libvirt's merge and network checks.
        (
            "<interface type='network'><source network='ovs'/>\
             <virtualport type='802.1Qbh'/></interface>",
            "attempt to merge virtualports with mismatched types (802.1Qbh and openvswitch)",
        ),
        (
            "<interface type='network'><source network='nat'/>\
             <virtualport type='openvswitch'/></interface>",
            "<virtualport type='openvswitch'> not supported for network 'nat' which uses IP forwarding",
        ),
        (
            "<interface type='network'><source network='nat'/><vlan><tag id='5'/></vlan></interface>",
            "network 'nat' cannot carry <vlan>",
        ),
        // A bridge OVS does not have: ovs-vsctl's own refusal, after the
        // tap was made; nothing left behind.
        (
            "<interface type='bridge'><source bridge='brlx'/>\
             <virtualport type='openvswitch'/></interface>",
            "Unable to add port vnet",
        ),
    ] {
        let err = launch_fails(root, &ovs, iface);
        assert!(err.contains(want), "{iface}:\n{err}");
        assert_eq!((links(), ovs.vsctl(&["show"]).unwrap()), before, "{iface}");
    }
}
