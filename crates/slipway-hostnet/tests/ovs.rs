//! slipway's Open vSwitch ports (`slipway_hostnet::ovs`) against a real
//! Open vSwitch: an `ovsdb-server` and `ovs-vswitchd` this test starts in a
//! user + network namespace of its own (`slipway_testkit::ovs`), a bridge on
//! the userspace datapath, and "guests" that are namespaces wired by veth
//! pairs whose host ends slipway plugs in. Checks what libvirt sets
//! (external-ids read back with `ovs-vsctl get`), that the guests reach
//! each other, that VLAN tags separate them as OVS's VLAN semantics say,
//! and that removing a port takes it out of OVSDB.
//!
//! Needs: openvswitch-switch, util-linux (unshare, nsenter), iproute2,
//! busybox-static (ping).

use slipway_hostnet::ovs::{Ovs, OvsError, OvsName, OvsPort, ProfileId};
use slipway_netxml::{NativeVlanMode, Vlan};
use slipway_testkit::netns::{sh, Netns};
use slipway_testkit::ovs::OvsInstance;

const IN_NETNS: &str = "SLIPWAY_HOSTNET_OVS_TEST_IN_NETNS";

/// A guest: namespace with `eth0` (MAC, address), host end `host_if` not
/// attached to anything yet.
fn guest(host_if: &str, mac: &str, ip: &str) -> Netns {
    let ns = Netns::new();
    sh(&format!(
        "ip link add {host_if} type veth peer name eth0 address {mac} && \
         ip link set eth0 netns {} && ip link set {host_if} up",
        ns.pid()
    ));
    ns.run(&format!(
        "ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
    ));
    ns
}

fn port(iface: &str, mac: &str, id: &str, vlan: Option<Vlan>) -> OvsPort {
    OvsPort {
        bridge: OvsName::bridge("ovsbr0").unwrap(),
        iface: OvsName::interface(iface).unwrap(),
        iface_id: id.parse().unwrap(),
        mac: mac.parse().unwrap(),
        vm_id: "c7a5fdbd-edaf-9455-926a-d65c16db1809".parse().unwrap(),
        profile_id: None,
        vlan,
    }
}

fn tag(t: u16) -> Option<Vlan> {
    Some(Vlan {
        trunk: false,
        tags: vec![t],
        native: None,
    })
}

const ID1: &str = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa41";
const ID2: &str = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa42";
const ID3: &str = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa43";

#[test]
fn ports_get_libvirts_external_ids_and_vlans_separate_guests() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    let ovs_run = OvsInstance::start().expect("start Open vSwitch");
    ovs_run.add_bridge("ovsbr0").unwrap();
    // slipway's side finds the instance as a daemon would: ovs-vsctl reads
    // OVS_RUNDIR, here given by the database override.
    let ovs = ovs_with_db(&ovs_run);

    let g1 = guest("h1", "52:54:00:00:00:01", "10.7.0.1");
    let g2 = guest("h2", "52:54:00:00:00:02", "10.7.0.2");
    let g3 = guest("h3", "52:54:00:00:00:03", "10.7.0.3");
    ovs.add_port(&port("h1", "52:54:00:00:00:01", ID1, None))
        .unwrap();
    ovs.add_port(&port("h2", "52:54:00:00:00:02", ID2, None))
        .unwrap();
    ovs.add_port(&port("h3", "52:54:00:00:00:03", ID3, tag(42)))
        .unwrap();
    assert!(ovs
        .bridge_exists(&OvsName::bridge("ovsbr0").unwrap())
        .unwrap());
    assert!(!ovs
        .bridge_exists(&OvsName::bridge("nosuch").unwrap())
        .unwrap());

    let get = |iface: &str, col: &str| ovs_run.get("Interface", iface, col).unwrap();
    assert_eq!(
        get("h1", "external-ids:attached-mac"),
        "\"52:54:00:00:00:01\""
    );
    assert_eq!(get("h1", "external-ids:iface-id"), format!("\"{ID1}\""));
    assert_eq!(
        get("h1", "external-ids:vm-id"),
        "\"c7a5fdbd-edaf-9455-926a-d65c16db1809\""
    );
    assert_eq!(get("h1", "external-ids:iface-status"), "active");
    assert_eq!(ovs_run.get("Port", "h3", "tag").unwrap(), "42");
    assert_eq!(ovs_run.get("Port", "h1", "tag").unwrap(), "[]");
    assert_eq!(ovs_run.ports("ovsbr0").unwrap(), ["h1", "h2", "h3"]);

    // Untagged ports share VLAN 0; the port tagged 42 is alone on its VLAN.
    assert!(g1.reaches("10.7.0.2"), "{}", ovs_run.logs());
    assert!(!g1.pings("10.7.0.3"));
    assert!(!g3.pings("10.7.0.2"));

    // Re-plugging h2 on VLAN 42 replaces its port (del-port first): now it
    // reaches h3 and no longer h1.
    ovs.add_port(&port("h2", "52:54:00:00:00:02", ID2, tag(42)))
        .unwrap();
    assert_eq!(ovs_run.get("Port", "h2", "tag").unwrap(), "42");
    assert!(g2.reaches("10.7.0.3"));
    assert!(!g2.pings("10.7.0.1"));

    // A trunk carrying 42 with native VLAN 42 untagged: h1 on it is on
    // VLAN 42's untagged side, as h2 and h3 are.
    let trunk = Vlan {
        trunk: true,
        tags: vec![42, 43],
        native: Some((NativeVlanMode::Untagged, 42)),
    };
    let mut p1 = port("h1", "52:54:00:00:00:01", ID1, Some(trunk));
    // A profile with ovs-vsctl's quoting characters reads back exactly.
    p1.profile_id = Some(ProfileId::new(r#"gold "x" \y"#).unwrap());
    ovs.add_port(&p1).unwrap();
    assert_eq!(ovs_run.get("Port", "h1", "trunks").unwrap(), "[42, 43]");
    assert_eq!(
        ovs_run.get("Port", "h1", "vlan_mode").unwrap(),
        "native-untagged"
    );
    assert_eq!(
        get("h1", "external-ids:port-profile"),
        r#""gold \"x\" \\y""#
    );
    assert_eq!(get("h1", "external-ids:ifname"), "h1");
    assert!(g1.reaches("10.7.0.3"));

    // Removal: gone from OVSDB; removing again is no error (--if-exists).
    for name in ["h1", "h2", "h3"] {
        ovs.del_port(&OvsName::interface(name).unwrap()).unwrap();
    }
    ovs.del_port(&OvsName::interface("h1").unwrap()).unwrap();
    assert!(ovs_run.ports("ovsbr0").unwrap().is_empty());
    assert_eq!(get("h1", "name"), "");
    assert!(!g3.pings("10.7.0.2"));
}

#[test]
fn failures_name_the_port_and_leave_nothing_behind() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    let ovs_run = OvsInstance::start().expect("start Open vSwitch");
    ovs_run.add_bridge("ovsbr0").unwrap();
    let ovs = ovs_with_db(&ovs_run);
    let _g = guest("h1", "52:54:00:00:00:01", "10.7.0.1");
    // A bridge OVS does not have: one transaction, so no port and no ids.
    let mut p = port("h1", "52:54:00:00:00:01", ID1, None);
    p.bridge = OvsName::bridge("nosuchbr").unwrap();
    let e = ovs.add_port(&p).unwrap_err();
    assert!(matches!(e, OvsError::Failed { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("Unable to add port h1 to OVS bridge nosuchbr: ovs-vsctl failed"),
        "{msg}"
    );
    assert!(msg.contains("no bridge named nosuchbr"), "{msg}");
    assert!(ovs_run.ports("ovsbr0").unwrap().is_empty());
    assert_eq!(ovs_run.get("Interface", "h1", "name").unwrap(), "");
    // A database that is not there: ovs-vsctl gives up after its timeout.
    let gone = Ovs::with_db("unix:/nonexistent/db.sock");
    let e = gone.add_port(&port("h1", "52:54:00:00:00:01", ID1, None));
    assert!(matches!(e, Err(OvsError::Failed { .. })), "{e:?}");
}

fn ovs_with_db(ovs: &OvsInstance) -> Ovs {
    Ovs::with_db(&format!("unix:{}/db.sock", ovs.rundir().display()))
}
