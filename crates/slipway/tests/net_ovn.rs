//! End-to-end: one slipway network spanning two "hosts" on OVN, the recipe
//! of docs/multi-host.md. Inside a user + network namespace of the test's
//! own, two more namespaces are the hosts, joined by a veth pair (the
//! underlay, 192.168.50.0/24). Each host runs its own `ovsdb-server` and
//! `ovs-vswitchd` (userspace datapath: the kernel here has neither the
//! `openvswitch` nor the `geneve` module) and `ovn-controller`; host 1
//! also runs the OVN northbound and southbound databases and `ovn-northd`
//! (`slipway_testkit::ovn`; Debian's services are never started). Each
//! host runs slipway (its own `--root`) with the same network XML, marked
//! for OVN by `<slipway:ovn>` in `<metadata>`: slipway makes the logical
//! switch and, for each guest's port, the logical switch port named by
//! the port's `iface-id` (`net-port-create`, as libvirt's QEMU driver
//! asks for a port), and `slipway launch` plugs the VM's tap into
//! `br-int` with that iface-id and libvirt's external-ids (the "VM" a
//! namespace joined to the tap by a QEMU without a machine); ovn-controller
//! binds it, and the two guests reach each other over Geneve: ping and a
//! TCP transfer. Then teardown: a host's ports go with its network,
//! the switch only with the last port.
//!
//! Needs: ovn-central, ovn-host, openvswitch-switch, qemu-system-x86,
//! util-linux (unshare, nsenter), iproute2, ethtool, busybox-static (ping).

mod net_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use net_common::*;
use slipway_netxml::NetworkPort;
use slipway_testkit::netns::{sh, wait_for, Netns};
use slipway_testkit::ovn::{OvnCentral, OvnController};
use slipway_testkit::ovs::{hub_guest_qemu, OvsInstance};
use slipway_testkit::KillOnDrop;

const SWITCH: &str = "tenant-sw";
const NS: &str = "https://slipway.dev/xmlns/network/ovn/1";
/// Guest 1's MAC: a fixed address in the XML.
const MAC1: &str = "52:54:00:0a:00:01";
const IP1: &str = "10.10.0.11";
/// Guest 2's MAC: OVN's IPAM picks its address from the subnet.
const MAC2: &str = "52:54:00:0a:00:02";

fn network_xml(nb: &str) -> String {
    format!(
        "<network>\n  <name>tenant</name>\n  <uuid>0e0e0e0e-2222-3333-4444-555555555555</uuid>\n  \
         <metadata>\n    <slipway:ovn xmlns:slipway='{NS}' switch='{SWITCH}' nb='{nb}' \
         subnet='10.10.0.0/24'>\n      <slipway:address mac='{MAC1}' ip='{IP1}'/>\n    \
         </slipway:ovn>\n  </metadata>\n  <forward mode='bridge'/>\n  \
         <bridge name='br-int'/>\n  <virtualport type='openvswitch'/>\n</network>\n"
    )
}

/// Runs `f` in namespace `ns` (every process it starts runs there).
fn on<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    ns.within(f)
}

/// One host: its namespace, Open vSwitch, ovn-controller and slipway root.
struct Host {
    ovn: Option<OvnController>,
    ovs: OvsInstance,
    root: PathBuf,
    ns: Netns,
}

impl Host {
    /// slipway on this host; panics with its output if it fails.
    fn ok(&self, args: &[&str]) -> String {
        on(&self.ns, || ok(&self.root, args))
    }

    /// slipway on this host, as it ended.
    fn sw(&self, args: &[&str]) -> Run {
        on(&self.ns, || sw(&self.root, args))
    }
}

/// Host `n`: Open vSwitch with its underlay address 192.168.50.n on
/// `br-phy`, whose port is `underlay` (ovn-controller comes later, once
/// the databases run).
fn host(n: u8, ns: Netns, underlay: &str, root: PathBuf) -> Host {
    let underlay = underlay.to_string();
    let ovs = on(&ns, move || {
        let ovs = OvsInstance::start().expect("start Open vSwitch");
        // The userspace datapath tunnels through OVS's own routing table,
        // which knows only addresses on OVS bridges: the underlay address
        // goes on br-phy, the underlay device becomes its port.
        ovs.add_bridge("br-phy").unwrap();
        ovs.vsctl(&["add-port", "br-phy", &underlay]).unwrap();
        sh(&format!(
            "ip addr add 192.168.50.{n}/24 dev br-phy && ip link set {underlay} up && \
             ethtool -K {underlay} tx off >/dev/null"
        ));
        ovs
    });
    std::fs::create_dir_all(&root).unwrap();
    Host {
        ovn: None,
        ovs,
        root,
        ns,
    }
}

impl Host {
    /// Starts ovn-controller: chassis `hostN`, Geneve from its underlay
    /// address, the southbound database on host 1.
    fn join_ovn(&mut self, n: u8) {
        let ovs = &self.ovs;
        let ctl = self.ns.within(|| {
            OvnController::start(
                ovs,
                &format!("host{n}"),
                "tcp:192.168.50.1:6642",
                [192, 168, 50, n].into(),
            )
            .unwrap_or_else(|e| panic!("ovn-controller on host {n}: {e}"))
        });
        self.ovn = Some(ctl);
    }
}

/// Guest `n` on host `h`, as libvirt's QEMU driver brings up a VM on a
/// network: the network's port first (`net-port-create`: slipway adds the
/// logical switch port), then the VM (`slipway launch`: its tap on
/// `br-int` with the port's `iface-id` and libvirt's external-ids). The
/// "VM" is a namespace whose `eth0` a QEMU without a machine joins to
/// slipway's tap (`hub_guest_qemu`); `eth0` gets `mac` and MTU 1400
/// (Geneve's overhead fits the underlay's 1500). Returns the namespace,
/// the launcher and the iface-id (the logical switch port's name).
fn guest(h: &Host, n: u8, mac: &str) -> (Netns, KillOnDrop, String) {
    let port_uuid = format!("0e0e0e0e-0000-0000-0000-00000000000{n}");
    let vm_uuid = format!("0e0e0e0e-1111-0000-0000-00000000000{n}");
    let xml = write(
        &h.root,
        &format!("port{n}.xml"),
        &format!(
            "<networkport><uuid>{port_uuid}</uuid><owner><name>vm{n}</name>\
             <uuid>{vm_uuid}</uuid></owner><mac address='{mac}'/></networkport>"
        ),
    );
    h.ok(&["net-port-create", "tenant", xml.to_str().unwrap()]);
    let port = NetworkPort::from_xml(&h.ok(&["net-port-dumpxml", "tenant", &port_uuid])).unwrap();
    let iface_id = port
        .virtualport
        .and_then(|v| v.interface_id)
        .expect("a port on an OVS network has an interfaceid")
        .to_string();
    let g = Netns::new();
    let domain = write(
        &h.root,
        &format!("vm{n}.xml"),
        &format!(
            "<domain type='qemu'><name>vm{n}</name><uuid>{vm_uuid}</uuid><devices>\
             <interface type='network'><source network='tenant'/><mac address='{mac}'/>\
             <virtualport><parameters interfaceid='{iface_id}'/></virtualport>\
             <model type='virtio'/></interface></devices></domain>"
        ),
    );
    let qemu = hub_guest_qemu(&h.root, &format!("qemu-vm{n}"), g.pid()).unwrap();
    let log = std::fs::File::create(h.root.join(format!("vm{n}.log"))).unwrap();
    let child = on(&h.ns, || {
        Command::new(BIN)
            .arg("--root")
            .arg(&h.root)
            .arg("launch")
            .arg(&domain)
            .arg("--")
            .arg(&qemu)
            .envs(h.ovs.env())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run slipway launch")
    });
    let launch = KillOnDrop(child);
    g.wait_for_link("eth0");
    g.run(&format!(
        "ip link set eth0 address {mac} mtu 1400 && ip link set eth0 up"
    ));
    (g, launch, iface_id)
}

/// The OVS interface of `ovs` whose `iface-id` is `id`.
fn ovs_port(ovs: &OvsInstance, id: &str) -> String {
    ovs.vsctl(&[
        "--bare",
        "--columns=name",
        "find",
        "Interface",
        &format!("external_ids:iface-id=\"{id}\""),
    ])
    .unwrap()
}

/// 4 MiB from guest `from` to `to`'s port 5001 over TCP; what arrived.
fn transfer(from: &Netns, to: &Netns, to_ip: &str) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let listener = on(to, || TcpListener::bind("0.0.0.0:5001").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let addr = format!("{to_ip}:5001");
    let sent = data.clone();
    on(from, move || {
        let mut s =
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(20)).unwrap();
        s.write_all(&sent).unwrap();
    });
    (data, server.join().unwrap())
}

/// The column of a logical switch port, trimmed of quotes ("" when the
/// port does not exist).
fn lsp(central: &OvnCentral, name: &str, column: &str) -> String {
    central
        .nbctl(&["--if-exists", "get", "Logical_Switch_Port", name, column])
        .unwrap()
        .trim_matches('"')
        .to_string()
}

fn switches(central: &OvnCentral) -> String {
    central
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
        .unwrap()
}

#[test]
fn two_hosts_one_network_on_ovn() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let base: PathBuf = dir.path().to_path_buf();
    let (ns1, ns2) = (Netns::new(), Netns::new());
    sh(&format!(
        "ip link add u1 netns {} type veth peer name u2 netns {}",
        ns1.pid(),
        ns2.pid()
    ));
    let mut h1 = host(1, ns1, "u1", base.join("host1"));
    let mut h2 = host(2, ns2, "u2", base.join("host2"));
    let central = on(&h1.ns, || {
        OvnCentral::start(Some([192, 168, 50, 1].into())).expect("start the OVN databases")
    });
    h1.join_ovn(1);
    h2.join_ovn(2);
    let diag = |what: &str| {
        format!(
            "{what}\n{}\n{}\n{}\n{}",
            central.logs(),
            h1.ovn.as_ref().map(OvnController::logs).unwrap_or_default(),
            h2.ovn.as_ref().map(OvnController::logs).unwrap_or_default(),
            central.sbctl(&["show"]).unwrap_or_default()
        )
    };

    // The same network on both hosts: host 1 reaches the northbound
    // database over its unix socket, host 2 over TCP.
    let nb1 = format!("unix:{}", central.nb_sock().display());
    write(&h1.root, "tenant.xml", &network_xml(&nb1));
    write(
        &h2.root,
        "tenant.xml",
        &network_xml("tcp:192.168.50.1:6641"),
    );
    for h in [&h1, &h2] {
        h.ok(&["net-define", h.root.join("tenant.xml").to_str().unwrap()]);
        // The metadata element is kept as written.
        let dumped = h.ok(&["net-dumpxml", "tenant", "--inactive"]);
        assert!(
            dumped.contains(&format!(
                "<slipway:ovn xmlns:slipway=\"{NS}\" switch=\"{SWITCH}\""
            )),
            "{dumped}"
        );
        let plan = h.ok(&["net-start", "tenant", "--dry-run"]);
        assert!(
            plan.contains(&format!(
                "OVN logical switch {SWITCH} at {} with other_config:subnet=10.10.0.0/24",
                if h.root.ends_with("host1") {
                    nb1.as_str()
                } else {
                    "tcp:192.168.50.1:6641"
                }
            )),
            "{plan}"
        );
        h.ok(&["net-start", "tenant"]);
    }
    // One switch, made by the first host, found by the second.
    assert_eq!(switches(&central), SWITCH);
    assert_eq!(
        central
            .nbctl(&["get", "Logical_Switch", SWITCH, "other_config:subnet"])
            .unwrap(),
        "\"10.10.0.0/24\""
    );
    assert_eq!(
        central
            .nbctl(&[
                "get",
                "Logical_Switch",
                SWITCH,
                "external_ids:slipway-network"
            ])
            .unwrap(),
        "tenant"
    );

    let (g1, mut l1, id1) = guest(&h1, 1, MAC1);
    let (g2, mut l2, id2) = guest(&h2, 2, MAC2);
    // slipway's taps carry the ports' iface-ids on each host's br-int.
    for (h, id, mac) in [(&h1, &id1, MAC1), (&h2, &id2, MAC2)] {
        let tap = ovs_port(&h.ovs, id);
        assert!(
            tap.starts_with("vnet"),
            "no OVS port with iface-id {id}: {tap}"
        );
        assert_eq!(
            h.ovs
                .get("Interface", &tap, "external_ids:attached-mac")
                .unwrap(),
            format!("\"{mac}\"")
        );
    }
    assert_eq!(
        lsp(&central, &id1, "addresses"),
        format!("[\"{MAC1} {IP1}\"]")
    );
    assert_eq!(
        lsp(&central, &id2, "addresses"),
        format!("[\"{MAC2} dynamic\"]")
    );
    assert_eq!(
        lsp(&central, &id1, "external_ids:slipway-port"),
        "0e0e0e0e-0000-0000-0000-000000000001"
    );
    // OVN's IPAM gave guest 2 an address of the subnet.
    let mut dynamic = String::new();
    wait_for("OVN's dynamic address for guest 2", || {
        dynamic = lsp(&central, &id2, "dynamic_addresses");
        !dynamic.is_empty() && dynamic != "[]"
    });
    let ip2 = dynamic
        .strip_prefix(&format!("{MAC2} "))
        .unwrap_or_else(|| panic!("dynamic_addresses {dynamic}"))
        .to_string();
    assert!(ip2.starts_with("10.10.0."), "{ip2}");
    g1.run(&format!("ip addr add {IP1}/24 dev eth0"));
    g2.run(&format!("ip addr add {ip2}/24 dev eth0"));

    // ovn-controller on each host binds the port whose iface-id it sees.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !(lsp(&central, &id1, "up") == "true" && lsp(&central, &id2, "up") == "true") {
        assert!(
            std::time::Instant::now() < end,
            "{}\n{}\n{}\n{}",
            diag("the ports were not bound"),
            central.nbctl(&["show"]).unwrap_or_default(),
            h1.ovs.vsctl(&["show"]).unwrap_or_default(),
            h2.ovs.vsctl(&["show"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let chassis = central
        .sbctl(&["--bare", "--columns=name", "list", "Chassis"])
        .unwrap();
    assert!(
        chassis.contains("host1") && chassis.contains("host2"),
        "{chassis}"
    );

    // Across the Geneve tunnel: ping, then a TCP transfer.
    assert!(
        (0..10).any(|_| g1.pings(&ip2)),
        "{}",
        diag("guest 1 cannot ping guest 2")
    );
    assert!(g2.pings(IP1), "{}", diag("guest 2 cannot ping guest 1"));
    let (sent, got) = transfer(&g1, &g2, &ip2);
    assert!(
        got == sent,
        "received {} of {} bytes, or other bytes",
        got.len(),
        sent.len()
    );
    let tunnel = h1
        .ovs
        .vsctl(&["--bare", "--columns=type", "list", "Interface"])
        .unwrap();
    assert!(
        tunnel.contains("geneve"),
        "no Geneve tunnel port on host 1: {tunnel}"
    );

    // A daemon taking over (as after a restart or a crash) brings back
    // what went while none ran, adding nothing that is there: the logical
    // switch port deleted behind slipway's back returns, and guest 1 is
    // reachable again.
    central.nbctl(&["lsp-del", &id1]).unwrap();
    // (Once ovn-controller has removed its flows.)
    assert!(
        (0..15).any(|_| !g2.pings(IP1)),
        "guest 1 reachable without its logical port"
    );
    let mut daemon = on(&h1.ns, || Daemon::start(&h1.root));
    assert_eq!(
        lsp(&central, &id1, "addresses"),
        format!("[\"{MAC1} {IP1}\"]")
    );
    daemon.kill9();
    let mut daemon = on(&h1.ns, || Daemon::start(&h1.root));
    daemon.terminate();
    assert!(
        (0..10).any(|_| g2.pings(IP1)),
        "{}",
        diag("guest 1 unreachable after the daemon's recovery")
    );

    // Starting again is refused and adds nothing; the manager's port
    // creation does not duplicate the logical port either.
    assert_ne!(h1.sw(&["net-start", "tenant"]).code, 0);
    assert_eq!(switches(&central), SWITCH);
    assert_eq!(
        central
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch_Port"])
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        2
    );

    // Host 2 stops the network: its port goes, the switch stays (host 1's
    // port is on it), and guest 2 is unreachable.
    l2.terminate();
    assert_eq!(ovs_port(&h2.ovs, &id2), "");
    h2.ok(&["net-destroy", "tenant"]);
    assert_eq!(lsp(&central, &id2, "name"), "");
    assert_eq!(lsp(&central, &id1, "name"), id1);
    assert_eq!(switches(&central), SWITCH);
    // Host 1 deletes its port, then stops: the empty switch goes.
    l1.terminate();
    h1.ok(&[
        "net-port-delete",
        "tenant",
        "0e0e0e0e-0000-0000-0000-000000000001",
    ]);
    assert_eq!(lsp(&central, &id1, "name"), "");
    assert_eq!(switches(&central), SWITCH);
    h1.ok(&["net-destroy", "tenant"]);
    assert_eq!(switches(&central), "");

    // A switch slipway did not make is used, never removed.
    central.nbctl(&["ls-add", SWITCH]).unwrap();
    h1.ok(&["net-start", "tenant"]);
    h1.ok(&["net-destroy", "tenant"]);
    assert_eq!(switches(&central), SWITCH);
    central.nbctl(&["ls-del", SWITCH]).unwrap();

    // Two switches of that name: slipway will not guess which is meant.
    central.nbctl(&["ls-add", SWITCH]).unwrap();
    central
        .nbctl(&["--add-duplicate", "ls-add", SWITCH])
        .unwrap();
    let r = h1.sw(&["net-start", "tenant"]);
    assert!(
        r.code != 0
            && r.stderr
                .contains("2 logical switches are named 'tenant-sw'"),
        "{}",
        r.stderr
    );
    let dups = central
        .nbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Logical_Switch",
            &format!("name={SWITCH}"),
        ])
        .unwrap();
    for uuid in dups.split_whitespace() {
        central.nbctl(&["ls-del", uuid]).unwrap();
    }
    assert_eq!(switches(&central), "");

    // The northbound database unreachable: the start fails, naming OVN,
    // and the network stays inactive. (One slipway network per bridge, as
    // libvirt: host 2's is undefined first.)
    h2.ok(&["net-undefine", "tenant"]);
    write(
        &h2.root,
        "dead.xml",
        &network_xml("tcp:192.168.50.1:1")
            .replace("tenant<", "dead<")
            .replace("0e0e0e0e-2222", "0d0d0d0d-2222"),
    );
    h2.ok(&["net-define", h2.root.join("dead.xml").to_str().unwrap()]);
    let r = h2.sw(&["net-start", "dead"]);
    assert!(
        r.code != 0 && r.stderr.contains("OVN") && r.stderr.contains("ovn-nbctl"),
        "{}",
        r.stderr
    );
    assert!(h2
        .ok(&["net-list", "--inactive", "--name"])
        .contains("dead"));

    // A network name full of what ovn-nbctl and shells give a meaning to
    // reaches OVN as one value, as written.
    const HOSTILE: &str = "\"t\" e'n a;$(x) {--ls-del} \\ =:,";
    h1.ok(&["net-undefine", "tenant"]);
    write(
        &h1.root,
        "hostile.xml",
        &network_xml(&nb1).replace("<name>tenant<", &format!("<name>{HOSTILE}<")),
    );
    h1.ok(&["net-define", h1.root.join("hostile.xml").to_str().unwrap()]);
    h1.ok(&["net-start", HOSTILE]);
    let json = central
        .nbctl(&[
            "--format=json",
            "--columns=external_ids",
            "list",
            "Logical_Switch",
        ])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["data"][0][0],
        serde_json::json!(["map", [["slipway-network", HOSTILE]]]),
        "{json}"
    );
    h1.ok(&["net-destroy", HOSTILE]);
    assert_eq!(switches(&central), "");
    drop((h1, h2, central));
}
