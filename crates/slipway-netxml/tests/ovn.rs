//! `<slipway:ovn>` in `<metadata>`: read into the model, checked, and
//! printed back exactly as written (it stays part of `<metadata>`).

use slipway_netxml::{Network, OvnRemote, XmlError, OVN_NS};

fn net(ovn: &str) -> String {
    format!(
        "<network>\n  <name>tenant</name>\n  <uuid>11111111-2222-3333-4444-555555555555</uuid>\n  \
         <metadata>\n    {ovn}\n  </metadata>\n  <forward mode='bridge'/>\n  \
         <bridge name='br-int'/>\n  <virtualport type='openvswitch'/>\n</network>\n"
    )
}

const GOOD: &str = "<slipway:ovn xmlns:slipway='https://slipway.dev/xmlns/network/ovn/1' \
    switch='tenant1' nb='unix:/run/ovn/nb.sock,tcp:192.0.2.1:6641' subnet='10.10.0.0/24'>\
    <slipway:address mac='52:54:00:00:00:10' ip='10.10.0.10'/></slipway:ovn>";

#[test]
fn the_element_is_read_and_printed_back_unchanged() {
    let xml = net(GOOD);
    let n = Network::from_xml_strict(&xml).unwrap();
    n.validate().unwrap();
    let ovn = n.ovn.as_ref().expect("the OVN element is read");
    assert_eq!(ovn.switch, "tenant1");
    assert_eq!(
        ovn.nb,
        vec![
            OvnRemote::Unix("/run/ovn/nb.sock".into()),
            OvnRemote::Tcp("192.0.2.1:6641".parse().unwrap())
        ]
    );
    assert_eq!(ovn.db(), "unix:/run/ovn/nb.sock,tcp:192.0.2.1:6641");
    assert_eq!(ovn.subnet, Some("10.10.0.0/24".parse().unwrap()));
    assert_eq!(
        ovn.port_addresses("52:54:00:00:00:10".parse().unwrap()),
        "52:54:00:00:00:10 10.10.0.10"
    );
    assert_eq!(
        ovn.port_addresses("52:54:00:00:00:99".parse().unwrap()),
        "52:54:00:00:00:99 dynamic"
    );
    // Printed as libvirt prints <metadata>: double quotes, the namespace
    // kept on the element; read again, the same model.
    let out = n.to_xml();
    assert!(
        out.contains(&format!(
            "<slipway:ovn xmlns:slipway=\"{OVN_NS}\" switch=\"tenant1\" \
             nb=\"unix:/run/ovn/nb.sock,tcp:192.0.2.1:6641\" subnet=\"10.10.0.0/24\">\n      \
             <slipway:address mac=\"52:54:00:00:00:10\" ip=\"10.10.0.10\"/>\n    </slipway:ovn>"
        )),
        "{out}"
    );
    assert_eq!(Network::from_xml(&out).unwrap().ovn, n.ovn);
    assert_eq!(Network::from_xml(&out).unwrap().to_xml(), out);
}

#[test]
fn any_prefix_and_a_namespace_declared_on_network_work() {
    let xml = format!(
        "<network xmlns:o='{OVN_NS}'><name>n</name><metadata><other:x xmlns:other='urn:x'/>\
         <o:ovn switch='s' nb='tcp:[2001:db8::1]:6641'/></metadata>\
         <forward mode='bridge'/><bridge name='br-int'/><virtualport type='openvswitch'/></network>"
    );
    let n = Network::from_xml(&xml).unwrap();
    n.validate().unwrap();
    assert_eq!(n.ovn.unwrap().db(), "tcp:[2001:db8::1]:6641");
}

#[test]
fn a_network_without_the_element_has_no_ovn() {
    let n = Network::from_xml(&net("<a:b xmlns:a='urn:a' switch='x'/>")).unwrap();
    assert_eq!(n.ovn, None);
}

/// Every bad value is refused at parse time, naming the element (and the
/// attribute) and the line.
#[test]
fn bad_values_are_refused_naming_the_element() {
    let ns = format!("xmlns:slipway='{OVN_NS}'");
    let cases: Vec<(String, &str)> = vec![
        (format!("<slipway:ovn {ns} nb='tcp:192.0.2.1:6641'/>"), "missing required attribute 'switch'"),
        (format!("<slipway:ovn {ns} switch='s'/>"), "missing required attribute 'nb'"),
        (format!("<slipway:ovn {ns} switch='-s' nb='tcp:192.0.2.1:6641'/>"), "/network/metadata/slipway:ovn/@switch = '-s'"),
        (format!("<slipway:ovn {ns} switch='a b' nb='tcp:192.0.2.1:6641'/>"), "/@switch = 'a b'"),
        (format!("<slipway:ovn {ns} switch='{}' nb='tcp:192.0.2.1:6641'/>", "a".repeat(65)), "a name of 1 to 64 bytes"),
        (format!("<slipway:ovn {ns} switch='s' nb='ssl:192.0.2.1:6641'/>"), "/@nb = 'ssl:192.0.2.1:6641'"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641,'/>"), "/@nb = ''"),
        (format!("<slipway:ovn {ns} switch='s' nb='unix:nb.sock'/>"), "unix: with an absolute path"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:ovn.example:6641'/>"), "tcp:IP:PORT"),
        (format!("<slipway:ovn {ns} switch='s' nb='{}'/>", ["tcp:192.0.2.1:1"; 9].join(",")), "at most 8 remotes"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641' subnet='10.0.0.1/24'/>"), "/@subnet = '10.0.0.1/24'"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641' subnet='fd00::/64'/>"), "an IPv4 subnet"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641' subnett='10.0.0.0/24'/>"), "unknown attribute 'subnett'"),
        (format!("<slipway:other {ns} switch='s' nb='tcp:192.0.2.1:6641'/>"), "expected 'ovn'"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641'><slipway:port/></slipway:ovn>"), "/network/metadata/slipway:ovn/slipway:port: unknown element"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641'><slipway:address ip='10.0.0.2'/></slipway:ovn>"), "missing required attribute 'mac'"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641'><slipway:address mac='01:00:5e:00:00:01' ip='10.0.0.2'/></slipway:ovn>"), "/@mac = '01:00:5e:00:00:01'"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641' subnet='10.0.0.0/24'><slipway:address mac='52:54:00:00:00:01' ip='10.0.1.2'/></slipway:ovn>"), "/@ip = '10.0.1.2'"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641'><slipway:address mac='52:54:00:00:00:01' ip='10.0.0.2'/><slipway:address mac='52:54:00:00:00:01' ip='10.0.0.3'/></slipway:ovn>"), "a unicast MAC address given once"),
        (format!("<slipway:ovn {ns} switch='s' nb='tcp:192.0.2.1:6641'><slipway:address mac='52:54:00:00:00:01' ip='10.0.0.2'/><slipway:address mac='52:54:00:00:00:02' ip='10.0.0.2'/></slipway:ovn>"), "given once"),
    ];
    for (ovn, want) in cases {
        let e = Network::from_xml(&net(&ovn)).expect_err(&ovn);
        let msg = e.to_string();
        assert!(msg.contains(want), "{ovn}\n gave: {msg}\n wanted: {want}");
        assert!(msg.contains("line 5"), "{msg}");
        assert!(
            matches!(e, XmlError::Value { .. } | XmlError::Structure { .. }),
            "{e:?}"
        );
    }
}

#[test]
fn only_open_vswitch_networks_can_be_on_ovn() {
    let ovn = format!("<o:ovn xmlns:o='{OVN_NS}' switch='s' nb='tcp:192.0.2.1:6641'/>");
    for rest in [
        "<forward mode='nat'/><bridge name='virbr9'/>",
        "<forward mode='bridge'/><bridge name='br0'/>",
        "<forward mode='bridge'/><bridge name='br0'/><virtualport type='midonet'/>",
        "<bridge name='virbr9'/>",
    ] {
        let xml = format!("<network><name>n</name><metadata>{ovn}</metadata>{rest}</network>");
        let e = Network::from_xml(&xml).unwrap().validate().expect_err(rest);
        assert_eq!(e.element, "/network/metadata/ovn", "{rest}");
        assert!(e.rule.contains("openvswitch"), "{e}");
    }
}
