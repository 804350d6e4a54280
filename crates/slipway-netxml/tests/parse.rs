//! Parser behaviour: positions in errors, unknown-part reporting, strict
//! mode, libvirt's normalisations, and the helper API.

use std::net::{IpAddr, Ipv4Addr};

use slipway_netxml::{
    BandwidthRate, DefaultsContext, ForwardMode, IpFamily, MacAddr, NativeVlanMode, Network,
    VirtualPortType, Vlan, XmlError,
};

#[test]
fn syntax_error_has_line_and_column() {
    let xml = "<network>\n  <name>x</name>\n  <bridge name='a'>\n</network>\n";
    match Network::from_xml(xml) {
        Err(XmlError::Syntax {
            line,
            column,
            message,
        }) => {
            assert_eq!(line, 4, "{message}");
            assert!(column >= 1, "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    // Attribute errors point into the tag, not at its start.
    match Network::from_xml(
        "<network>\n<name>x</name>\n<ip address='1.2.3.4' prefix=24/>\n</network>",
    ) {
        Err(XmlError::Syntax {
            line,
            column,
            message,
        }) => {
            assert_eq!((line, column), (3, 30), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn bad_value_names_path_value_and_position() {
    let xml = "<network>\n  <name>x</name>\n  <ip address='10.0.0.300' prefix='24'/>\n</network>";
    match Network::from_xml(xml).unwrap_err() {
        XmlError::Value {
            line,
            column,
            path,
            value,
            expected,
        } => {
            assert_eq!((line, column), (3, 3));
            assert_eq!(path, "/network/ip/@address");
            assert_eq!(value, "10.0.0.300");
            assert!(expected.contains("address"));
        }
        other => panic!("{other:?}"),
    }
    let e =
        Network::from_xml("<network><name>x</name><forward mode='tunnel'/></network>").unwrap_err();
    assert!(
        e.to_string().contains("tunnel") && e.to_string().contains("/network/forward/@mode"),
        "{e}"
    );
    let e =
        Network::from_xml("<network><name>x</name><mac address='52:54:00:zz:00:01'/></network>")
            .unwrap_err();
    assert!(e.to_string().contains("52:54:00:zz:00:01"), "{e}");
    let e =
        Network::from_xml("<network><name>x</name><uuid>not-a-uuid</uuid></network>").unwrap_err();
    assert!(e.to_string().contains("/network/uuid"), "{e}");
}

#[test]
fn missing_required_parts() {
    let e =
        Network::from_xml("<network><uuid>0b5a3e6c-1d2f-4a44-9a0e-000000000001</uuid></network>")
            .unwrap_err();
    assert!(
        matches!(e, XmlError::Structure { .. }) && e.to_string().contains("<name>"),
        "{e}"
    );
    let e = Network::from_xml("<network><name>x</name><ip prefix='24'/></network>").unwrap_err();
    assert!(
        e.to_string()
            .contains("missing required attribute 'address'"),
        "{e}"
    );
    let e = Network::from_xml("<net><name>x</name></net>").unwrap_err();
    assert!(
        e.to_string()
            .contains("expecting root element of 'network'"),
        "{e}"
    );
    let e = Network::from_xml("").unwrap_err();
    assert!(matches!(e, XmlError::Syntax { .. }), "{e}");
}

#[test]
fn forward_dev_must_match_first_interface() {
    let e = Network::from_xml(
        "<network><name>x</name><forward dev='eth0'><interface dev='eth1'/></forward></network>",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("must match first <interface dev='eth1'/>"),
        "{e}"
    );
    let e = Network::from_xml(
        "<network><name>x</name><forward mode='bridge'><interface dev='a'/><interface dev='a'/></forward></network>",
    )
    .unwrap_err();
    assert!(e.to_string().contains("only be listed once"), "{e}");
}

#[test]
fn unknown_parts_are_reported_not_lost() {
    let xml = "<network foo='1'>\n<name>x</name>\n<bridge name='b' color='red'/>\n<portgroup name='p'><shape/></portgroup>\n\
               <ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.3' step='2'/></dhcp><extra/></ip>\n\
               <bridge name='c'/>\n</network>";
    let net = Network::from_xml(xml).unwrap();
    assert_eq!(
        net.unknown,
        vec![
            "/network/@foo".to_string(),
            "/network/bridge (repeated; only the first is used)".to_string(),
            "/network/bridge/@color".to_string(),
            "/network/ip/extra".to_string(),
            "/network/ip/dhcp/range/@step".to_string(),
            "/network/portgroup/shape".to_string(),
        ]
    );
    // The first <bridge> wins, as in libvirt.
    assert_eq!(net.bridge_name(), Some("b"));
    match Network::from_xml_strict(xml).unwrap_err() {
        XmlError::Unknown { path } => assert_eq!(path, "/network/@foo"),
        other => panic!("{other:?}"),
    }
    assert!(Network::from_xml_strict("<network><name>x</name></network>").is_ok());
    // libvirt features slipway does not model are named as such (the
    // live-only `connections` count; <metadata> and <portgroup>, named here
    // before, are modelled now and kept).
    let net = Network::from_xml(
        "<network connections='2'><name>x</name><metadata><a:b xmlns:a='urn:a'/></metadata><portgroup name='p'/></network>",
    )
    .unwrap();
    assert_eq!(
        net.unknown,
        vec!["/network/@connections (a libvirt feature slipway does not support)".to_string()]
    );
}

#[test]
fn libvirt_normalisations() {
    let net = Network::from_xml(
        "<network><name>x</name><forward dev='eth0'><nat/></forward>\
         <ip address='10.0.0.1' prefix='24'><dhcp><bootp file='f'/></dhcp></ip><dns/></network>",
    )
    .unwrap();
    // No mode means nat; dev becomes the first interface.
    assert_eq!(net.forward_mode(), Some(ForwardMode::Nat));
    assert_eq!(
        net.forward.as_ref().unwrap().interfaces,
        vec!["eth0".to_string()]
    );
    assert_eq!(net.forward.as_ref().unwrap().dev(), Some("eth0"));
    // Empty <nat/>, <dns/> and a <dhcp> with only <bootp> vanish, as in libvirt
    // (the lost <bootp> is reported).
    assert!(net.forward.as_ref().unwrap().nat.is_none());
    assert!(net.dns.is_none());
    assert!(net.ips[0].dhcp.is_none());
    assert_eq!(net.unknown.len(), 1, "{:?}", net.unknown);
    // STP on and delay 0 are filled for networks with their own bridge.
    let b = net.bridge.as_ref().unwrap();
    assert_eq!((b.stp, b.delay), (Some(true), Some(0)));
    assert_eq!(net.ips[0].family(), IpFamily::Ipv4);
    assert_eq!(net.ips[0].prefix_len(), Some(24));
}

#[test]
fn prefix_fallbacks() {
    let net = Network::from_xml(
        "<network><name>x</name><ip address='172.16.0.1'/><ip address='10.0.0.1' netmask='255.255.240.0'/>\
         <ip family='ipv6' address='fd00::1'/></network>",
    )
    .unwrap();
    let p: Vec<_> = net.ips.iter().map(|i| i.prefix_len()).collect();
    assert_eq!(p, vec![Some(16), Some(20), Some(64)]);
}

#[test]
fn formatting_uses_libvirts_order_not_input_order() {
    let net = Network::from_xml(
        "<network><ip address='10.0.0.1' prefix='24'/><mac address='52:54:00:00:00:01'/>\
         <mtu size='1400'/><forward mode='route'/><name>o</name></network>",
    )
    .unwrap();
    assert_eq!(
        net.to_xml(),
        "<network>\n  <name>o</name>\n  <forward mode='route'/>\n  <bridge stp='on' delay='0'/>\n  \
         <mtu size='1400'/>\n  <mac address='52:54:00:00:00:01'/>\n  <ip address='10.0.0.1' prefix='24'>\n  </ip>\n</network>\n"
    );
}

#[test]
fn mac_parse_and_display() {
    let m: MacAddr = "52:54:00:AB:c:0e".parse().unwrap();
    assert_eq!(m.to_string(), "52:54:00:ab:0c:0e");
    assert!(!m.is_multicast());
    assert!("ff:ff:ff:ff:ff:ff"
        .parse::<MacAddr>()
        .unwrap()
        .is_multicast());
    for bad in [
        "",
        "52:54:00:ab:0c",
        "52:54:00:ab:0c:0e:01",
        "52-54-00-ab-0c-0e",
        "52:54:00:ab:0c:100",
        "g2:54:00:ab:0c:0e",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
    }
    let r = slipway_netxml::generate_mac();
    assert_eq!(&r.octets()[..3], &[0x52, 0x54, 0x00]);
    assert!(!r.is_multicast());
    let u = slipway_netxml::generate_uuid();
    assert_eq!(u.get_version_num(), 4);
}

#[test]
fn fill_defaults_like_libvirtd() {
    let mut net = Network::from_xml(
        "<network><name>d</name><forward mode='nat'/><ip address='192.168.122.1' prefix='24'/></network>",
    )
    .unwrap();
    net.fill_defaults(&DefaultsContext {
        bridges_in_use: vec!["virbr0".into(), "virbr1".into(), "virbr3".into()],
    });
    assert!(net.uuid.is_some());
    assert_eq!(net.bridge_name(), Some("virbr2"));
    let mac = net.mac.expect("bridge mac");
    assert_eq!(&mac.octets()[..3], &[0x52, 0x54, 0x00]);
    // The NAT port range is not added on define, only to a live definition.
    assert!(net.forward.as_ref().unwrap().nat.is_none());
    let mut live = net.clone();
    live.fill_live_defaults();
    let nat = live.forward.as_ref().unwrap().nat.as_ref().unwrap();
    assert_eq!(nat.port, Some((1024, 65535)));
    live.validate().unwrap();
    assert!(live
        .to_xml()
        .contains("<forward mode='nat'>\n    <nat>\n      <port start='1024' end='65535'/>"));
    let b = net.bridge.as_ref().unwrap();
    assert_eq!((b.stp, b.delay), (Some(true), Some(0)));
    net.validate().unwrap();

    // Given values are kept; a bridge-name template with %d is expanded.
    let uuid = net.uuid;
    net.fill_defaults(&DefaultsContext::default());
    assert_eq!(
        (net.uuid, net.mac, net.bridge_name()),
        (uuid, Some(mac), Some("virbr2"))
    );
    let mut t =
        Network::from_xml("<network><name>t</name><bridge name='lab%d'/></network>").unwrap();
    t.fill_defaults(&DefaultsContext {
        bridges_in_use: vec!["lab0".into()],
    });
    assert_eq!(t.bridge_name(), Some("lab1"));

    // Bridge-mode networks get no generated bridge or MAC.
    let mut b = Network::from_xml(
        "<network><name>b</name><forward mode='bridge'/><bridge name='br0'/></network>",
    )
    .unwrap();
    b.fill_defaults(&DefaultsContext::default());
    assert!(b.mac.is_none());
    assert_eq!(b.bridge.as_ref().unwrap().stp, None);
    b.validate().unwrap();
}

#[test]
fn typed_values() {
    let net = Network::from_xml(
        "<network><name>x</name><forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>\
         <ip address='192.168.122.1' netmask='255.255.255.0'/></network>",
    )
    .unwrap();
    assert_eq!(
        net.ips[0].address,
        IpAddr::V4(Ipv4Addr::new(192, 168, 122, 1))
    );
    assert_eq!(net.ips[0].netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
}

#[test]
fn xml_rules_libxml2_enforces() {
    for (xml, what) in [
        ("<network><name>x</name><!-- a -- b --></network>", "'--'"),
        (
            "<network><name>x<?xml version='1.0'?></name></network>",
            "declaration",
        ),
        (
            "<network><name>x<?x/y z?></name></network>",
            "processing instruction",
        ),
        (
            "<network><name>x</name><bridge name='a'stp='on'/></network>",
            "separated by white space",
        ),
        (
            "<network><name>x</name><bridge name='a<b'/></network>",
            "'<' is not allowed",
        ),
        (
            "<network><name>x</name><1bridge/></network>",
            "not a valid element name",
        ),
        ("<network><name>x</name><!DOCTYPE x></network>", "DOCTYPE"),
        ("<network><name>&#1;</name></network>", "U+0001"),
        ("<network><name>a]]>b</name></network>", "']]>'"),
        (
            "<?xml version='open'?><network><name>x</name></network>",
            "XML version",
        ),
    ] {
        match Network::from_xml(xml) {
            Err(e @ XmlError::Syntax { .. }) => assert!(e.to_string().contains(what), "{e}"),
            other => panic!("{xml}: {other:?}"),
        }
    }
}

#[test]
fn libvirt_reading_quirks() {
    // Empty values of attributes libvirt reads with XPath mean "absent".
    let net = Network::from_xml(
        "<network ipv6=''><name>x</name><forward mode='' dev=''/><bridge name='' zone='' stp=''/>\
         <mtu size=''/><mac address=''/><ip address='10.0.0.1' family='' netmask='' prefix='24'><tftp root=''/></ip></network>",
    )
    .unwrap();
    assert_eq!(net.forward_mode(), Some(ForwardMode::Nat));
    assert!(net.forward.as_ref().unwrap().interfaces.is_empty());
    assert_eq!(
        (net.bridge_name(), net.mtu, net.mac, net.ipv6),
        (None, None, None, None)
    );
    assert_eq!(
        (net.ips[0].family, net.ips[0].netmask, &net.ips[0].tftp_root),
        (None, None, &None)
    );
    // Repeated <lease> and <bootp>: libvirt 9.0 keeps the last one.
    let net = Network::from_xml(
        "<network><name>x</name><ip address='10.0.0.1' prefix='24'><dhcp>\
         <range start='10.0.0.2' end='10.0.0.9'><lease expiry='5'/><lease expiry='7'/></range>\
         <bootp file='a'/><bootp file='b'/></dhcp></ip></network>",
    )
    .unwrap();
    let dhcp = net.ips[0].dhcp.as_ref().unwrap();
    assert_eq!(dhcp.ranges[0].lease.unwrap().expiry, 7);
    assert_eq!(dhcp.bootp.as_ref().unwrap().file, "b");
    assert!(
        net.unknown
            .iter()
            .any(|u| u.contains("only the last is used")),
        "{:?}",
        net.unknown
    );
    // <name>, <uuid> and <hostname> are XPath string-values: descendants' text counts.
    let net = Network::from_xml("<network><name>a<b>x</b>c</name></network>").unwrap();
    assert_eq!(net.name, "axc");
    assert_eq!(net.unknown, vec!["/network/name/b".to_string()]);
    // <mtu>: libvirt reads string(./mtu/@size), the first <mtu> with a size.
    let net =
        Network::from_xml("<network><name>x</name><mtu/><mtu size='1400'/></network>").unwrap();
    assert_eq!(net.mtu, Some(1400));
}

#[test]
fn forward_mode_none_is_isolated() {
    let net = Network::from_xml(
        "<network><name>x</name><forward mode='none' dev='eth0'/><bridge name='b0'/></network>",
    )
    .unwrap();
    assert_eq!(net.forward_mode(), None);
    assert_eq!(net.unknown.len(), 1, "{:?}", net.unknown);
    assert!(net
        .to_xml()
        .contains("<bridge name='b0' stp='on' delay='0'/>"));
    assert!(Network::from_xml(
        "<network><name>x</name><forward mode='none'><nat/></forward></network>"
    )
    .is_err());
}

#[test]
fn hostdev_pools() {
    let net = Network::from_xml(
        "<network><name>h</name><forward mode='hostdev' managed='YES'><driver name='vfio'/>\
         <address type='pci' domain='0' bus='010' slot='0x1f' function='7'/></forward></network>",
    )
    .unwrap();
    let f = net.forward.as_ref().unwrap();
    assert_eq!(f.managed, Some(true));
    assert_eq!(f.driver, Some(slipway_netxml::HostdevDriver::Vfio));
    let a = f.pci_addresses[0];
    assert_eq!((a.domain, a.bus, a.slot, a.function), (0, 8, 0x1f, 7));
    assert_eq!(a.to_string(), "0000:08:1f.7");
    for (bad, what) in [
        ("<address type='pci' bus='0x100'/>", "@bus"),
        ("<address type='pci' slot='32'/>", "@slot"),
        ("<address type='pci' function='8'/>", "@function"),
        ("<address type='usb'/>", "@type"),
        ("<address bus='1'/>", "missing address type"),
        (
            "<address type='pci' bus='1'/><address type='pci' bus='0x1'/>",
            "can only be listed once",
        ),
        ("<pf dev='a'/><pf dev='b'/>", "only one <pf>"),
        ("<pf/>", "'dev'"),
    ] {
        let xml =
            format!("<network><name>h</name><forward mode='hostdev'>{bad}</forward></network>");
        let e = Network::from_xml(&xml).unwrap_err().to_string();
        assert!(e.contains(what), "{bad}: {e}");
    }
    let e = Network::from_xml(
        "<network><name>h</name><forward mode='hostdev' dev='eth0'><pf dev='a'/></forward></network>",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot be used when <address> or <pf>"),
        "{e}"
    );
}

/// libvirt's dnsmasq namespace is matched by URI, not prefix; every
/// `<option>` of every `<options>` is kept, and printed back under the
/// `dnsmasq` prefix (libvirt's `networkDnsmasqDefNamespaceFormatXML`).
#[test]
fn dnsmasq_options_by_namespace() {
    let xml = "<network xmlns:d='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
        <name>n</name><bridge name='br-dm'/><ip address='10.61.0.1' prefix='24'/>\
        <d:options><d:option value='server=192.0.2.53'/></d:options>\
        <other:options xmlns:other='urn:not-dnsmasq'><other:option value='x'/></other:options>\
        <options xmlns='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
        <option value=\"a &amp; b 'c'\"/></options></network>";
    let net = Network::from_xml(xml).unwrap();
    assert_eq!(net.dnsmasq_options, ["server=192.0.2.53", "a & b 'c'"]);
    assert_eq!(net.unknown, ["/network/other:options"]);
    let out = net.to_xml();
    assert!(
        out.starts_with(
            "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n"
        ),
        "{out}"
    );
    assert!(
        out.ends_with(
            "  <dnsmasq:options>\n    <dnsmasq:option value='server=192.0.2.53'/>\n    \
             <dnsmasq:option value='a &amp; b &apos;c&apos;'/>\n  </dnsmasq:options>\n</network>\n"
        ),
        "{out}"
    );
    assert_eq!(
        Network::from_xml(&out).unwrap().dnsmasq_options,
        net.dnsmasq_options
    );
    // Without options nothing is printed, not even the namespace.
    let none = Network::from_xml(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><name>n</name>\
         <dnsmasq:options/></network>",
    )
    .unwrap();
    assert!(none.to_xml().starts_with("<network>\n"));
    let e = Network::from_xml(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><name>n</name>\
         <dnsmasq:options><dnsmasq:option/></dnsmasq:options></network>",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("no dnsmasq options value specified"),
        "{e}"
    );
}

/// The port settings read into typed values.
#[test]
fn port_settings_are_typed() {
    let net = Network::from_xml(
        "<network trustGuestRxFilters='yes'><name>n</name><forward mode='bridge'/><bridge name='ovsbr0'/>\
         <virtualport type='openvswitch'><parameters interfaceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport>\
         <vlan trunk='yes'><tag id='10' nativeMode='untagged'/><tag id='20'/></vlan>\
         <bandwidth><inbound average='100' peak='200' burst='300'/><outbound average='0'/></bandwidth>\
         <port isolated='yes'/><portgroup name='p' default='Yes'/></network>",
    )
    .unwrap();
    assert!(net.unknown.is_empty(), "{:?}", net.unknown);
    assert_eq!(net.trust_guest_rx_filters, Some(true));
    let vp = net.virtualport.as_ref().unwrap();
    assert_eq!(vp.kind, Some(VirtualPortType::OpenVswitch));
    assert_eq!(
        vp.interface_id.unwrap().to_string(),
        "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"
    );
    assert_eq!(
        net.vlan,
        Some(Vlan {
            trunk: true,
            tags: vec![10, 20],
            native: Some((NativeVlanMode::Untagged, 10)),
        })
    );
    let bw = net.bandwidth.unwrap();
    assert_eq!(
        bw.inbound,
        Some(BandwidthRate {
            average: 100,
            peak: 200,
            burst: 300,
            floor: 0
        })
    );
    // average='0' is no average: libvirt prints no <outbound>, and slipway
    // drops it at once (so that what it prints reads back the same).
    assert_eq!(bw.outbound, None);
    assert!(!net.to_xml().contains("<outbound"));
    assert_eq!(net.port_isolated, Some(true));
    assert!(net.portgroups[0].default);
    net.validate().unwrap();
}

/// The `<metadata>` children libvirt drops are named in `unknown`.
#[test]
fn dropped_metadata_children_are_reported() {
    let net = Network::from_xml(
        "<network><name>n</name><metadata><plain/><a:x xmlns:a='urn:a'/>\
         <b:y xmlns:b='urn:a'/></metadata></network>",
    )
    .unwrap();
    assert_eq!(
        net.unknown,
        [
            "/network/metadata/plain (dropped: no namespace, as libvirt does)",
            "/network/metadata/b:y (dropped: a second element in namespace urn:a, as libvirt does)",
        ]
    );
    assert_eq!(net.metadata.unwrap().elements.len(), 1);
}

/// Namespace URIs (as written in XML) holding characters libxml2 writes
/// raw: CR, LF, tab, `<`.
const UNREADABLE_URIS: [&str; 4] = ["urn:x&#13;y", "urn:x&#10;y", "urn:x&#9;y", "urn:x&lt;y"];

/// A namespace URI holding characters libxml2 writes raw (CR, LF, tab,
/// `<`) is refused, naming it: printed as libvirt prints it, it would read
/// back as another URI or not at all (found by the `network_xml` fuzz
/// target: a raw CR came back as a space).
#[test]
fn metadata_namespace_uris_that_cannot_read_back_are_refused() {
    for uri in UNREADABLE_URIS {
        let err = Network::from_xml(&format!(
            "<network><name>n</name><metadata><m:a xmlns:m='{uri}'/></metadata></network>"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/network/metadata/m:a/@xmlns:m"),
            "{uri}: {err}"
        );
    }
    Network::from_xml(
        "<network><name>n</name><metadata><m:a xmlns:m='urn:x&amp;y'/></metadata></network>",
    )
    .unwrap();
}

/// The same for a declaration on `<network>`, in scope in `<metadata>`
/// and written onto it (found by the fuzz target: a tab came back as a
/// space). Without metadata the declaration is dropped and harmless.
#[test]
fn network_namespace_uris_that_metadata_would_carry_are_refused() {
    for uri in UNREADABLE_URIS {
        let err = Network::from_xml(&format!(
            "<network xmlns:m='{uri}'><name>n</name><metadata><m:a/></metadata></network>"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("/network/@xmlns:m"), "{uri}: {err}");
        Network::from_xml(&format!(
            "<network xmlns:m='{uri}'><name>n</name></network>"
        ))
        .unwrap();
    }
    let net = Network::from_xml(
        "<network xmlns:m='urn:x&amp;y'><name>n</name><metadata><m:a/></metadata></network>",
    )
    .unwrap();
    let xml = net.to_xml();
    assert_eq!(Network::from_xml(&xml).unwrap().to_xml(), xml);
}
