//! `net-update … portgroup` and the port settings of a network through the
//! CLI, compared with libvirt's own (`virsh -c test:///default`, which runs
//! libvirt's parser, formatter and update code in one process): the same
//! commands must print the same output and errors, and leave the same XML.
//! Also what `net-define` says about `<dnsmasq:options>`.
//!
//! Needs: libvirt-clients (virsh), util-linux (unshare).

mod net_common;

use net_common::*;

/// An Open vSwitch network with one default portgroup.
const OVS: &str = "<network>
  <name>ovs</name>
  <uuid>6b7c2e4c-1f0e-4d8a-9c11-0a0b0c0d0e10</uuid>
  <forward mode='bridge'/>
  <bridge name='ovsbr0'/>
  <virtualport type='openvswitch'/>
  <portgroup name='bob' default='yes'>
    <vlan>
      <tag id='10'/>
    </vlan>
  </portgroup>
</network>
";

#[test]
fn portgroup_updates_match_virsh() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "ovs.xml", OVS);
    let alice = "<portgroup name=\"alice\"><vlan trunk=\"yes\"><tag id=\"20\" nativeMode=\"tagged\"/><tag id=\"30\"/></vlan><virtualport type=\"openvswitch\"><parameters profileid=\"alice-profile\"/></virtualport><bandwidth><inbound average=\"1000\" burst=\"64\"/></bandwidth></portgroup>";
    let script: Vec<Vec<&str>> = vec![
        vec!["net-define", "ovs.xml"],
        vec!["net-update", "ovs", "add-last", "portgroup", alice],
        vec![
            "net-update",
            "ovs",
            "add-first",
            "portgroup",
            "<portgroup name=\"carol\" trustGuestRxFilters=\"yes\"/>",
        ],
        vec!["net-dumpxml", "ovs"],
        // Errors: a name taken, a name missing, a second default.
        vec![
            "net-update",
            "ovs",
            "add",
            "portgroup",
            "<portgroup name=\"alice\"/>",
        ],
        vec![
            "net-update",
            "ovs",
            "modify",
            "portgroup",
            "<portgroup name=\"dave\"/>",
        ],
        vec![
            "net-update",
            "ovs",
            "delete",
            "portgroup",
            "<portgroup name=\"dave\"/>",
        ],
        vec![
            "net-update",
            "ovs",
            "add",
            "portgroup",
            "<portgroup name=\"dave\" default=\"yes\"/>",
        ],
        vec![
            "net-update",
            "ovs",
            "add",
            "portgroup",
            "<vlan><tag id=\"1\"/></vlan>",
        ],
        // The default moves: modify bob, then make carol the default.
        vec![
            "net-update",
            "ovs",
            "modify",
            "portgroup",
            "<portgroup name=\"bob\"><vlan><tag id=\"11\"/></vlan></portgroup>",
        ],
        vec![
            "net-update",
            "ovs",
            "modify",
            "portgroup",
            "<portgroup name=\"carol\" default=\"yes\"/>",
        ],
        vec![
            "net-update",
            "ovs",
            "delete",
            "portgroup",
            "<portgroup name=\"alice\"/>",
        ],
        vec!["net-dumpxml", "ovs"],
        vec!["net-undefine", "ovs"],
    ];
    let (expected, stdout, stderr) = virsh_and_sw_script(root, &script);
    // The oracle ran the whole script.
    assert!(
        expected.stdout.contains("Network ovs has been undefined"),
        "{expected:?}"
    );
    // Every refusal was one (virsh names the failed update each time).
    assert_eq!(
        expected
            .stderr
            .matches("error: Failed to update network ovs")
            .count(),
        5,
        "{expected:?}"
    );
    assert_eq!(stdout, expected.stdout, "stdout differs from virsh");
    assert_eq!(stderr, expected.stderr, "stderr differs from virsh");
}

/// slipway also applies libvirtd's define-time rules to an update: a
/// portgroup whose VLAN the network cannot apply is refused, and nothing
/// changes.
#[test]
fn portgroup_updates_keep_libvirtds_rules() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "nat.xml",
        "<network><name>natnet</name><forward mode='nat'/><bridge name='virbr77'/>\
         <ip address='10.77.0.1' prefix='24'/></network>",
    );
    ok(root, &["net-define", "nat.xml"]);
    let before = ok(root, &["net-dumpxml", "natnet"]);
    let r = sw(
        root,
        &[
            "net-update",
            "natnet",
            "add",
            "portgroup",
            "<portgroup name='p'><vlan><tag id='5'/></vlan></portgroup>",
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("/network/portgroup[1]/vlan")
            && r.stderr.contains("doesn't support vlan configuration"),
        "{r:?}"
    );
    assert_eq!(ok(root, &["net-dumpxml", "natnet"]), before);
    // Bandwidth is fine on a network with a bridge.
    ok(
        root,
        &[
            "net-update",
            "natnet",
            "add",
            "portgroup",
            "<portgroup name='p'><bandwidth><outbound average='10'/></bandwidth></portgroup>",
        ],
    );
    assert!(ok(root, &["net-dumpxml", "natnet"])
        .contains("  <portgroup name='p'>\n    <bandwidth>\n      <outbound average='10'/>\n"));
}

/// `net-define` keeps every `<dnsmasq:option>` and warns about each one
/// slipway's own DHCP/DNS does not act on.
#[test]
fn dnsmasq_options_are_kept_and_the_ignored_ones_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "dm.xml",
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
         <name>dm</name><bridge name='virbr78'/><ip address='10.78.0.1' prefix='24'/>\
         <dnsmasq:options><dnsmasq:option value='host-record=nas,10.78.0.9'/>\
         <dnsmasq:option value='dhcp-option=42,10.78.0.1'/></dnsmasq:options></network>",
    );
    let r = sw(root, &["net-define", "dm.xml"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        "warning: <dnsmasq:option value='dhcp-option=42,10.78.0.1'> ignored: slipway runs no \
         dnsmasq; of the dnsmasq options it honours only server=ADDRESS and host-record=\n"
    );
    let xml = ok(root, &["net-dumpxml", "dm"]);
    assert!(
        xml.contains(
            "  <dnsmasq:options>\n    <dnsmasq:option value='host-record=nas,10.78.0.9'/>\n    \
             <dnsmasq:option value='dhcp-option=42,10.78.0.1'/>\n  </dnsmasq:options>\n</network>\n"
        ),
        "{xml}"
    );
    // The honoured one reaches the network's DNS service configuration.
    let plan = ok(root, &["net-start", "dm", "--dry-run"]);
    assert!(plan.contains("nas"), "{plan}");
}
