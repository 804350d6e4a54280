//! One test per validation rule: each breaks exactly one rule in an
//! otherwise valid definition and checks the error names the element, the
//! value and the rule.

use slipway_netxml::{Lease, LeaseUnit, Nat, Network, ValidationError};

/// Wraps body elements in a named NAT network with a bridge.
fn nat(body: &str) -> String {
    format!("<network><name>n</name><forward mode='nat'/><bridge name='virbr9'/>{body}</network>")
}

fn ip24(inner: &str) -> String {
    format!("<ip address='10.0.0.1' prefix='24'>{inner}</ip>")
}

fn verr(xml: &str) -> ValidationError {
    let net = Network::from_xml(xml).unwrap_or_else(|e| panic!("parse failed: {e}\n{xml}"));
    match net.validate() {
        Ok(()) => panic!("validation passed but should fail:\n{xml}"),
        Err(e) => e,
    }
}

#[track_caller]
fn expect(xml: &str, element: &str, value: &str, rule: &str) {
    let e = verr(xml);
    assert_eq!(e.element, element, "element in {e}");
    assert_eq!(e.value, value, "value in {e}");
    assert!(e.rule.contains(rule), "rule {:?} lacks {rule:?}", e.rule);
    let shown = e.to_string();
    assert!(
        shown.contains(element) && shown.contains(value) && shown.contains(rule),
        "{shown}"
    );
}

#[track_caller]
fn ok(xml: &str) {
    let net = Network::from_xml(xml).unwrap_or_else(|e| panic!("parse failed: {e}\n{xml}"));
    net.validate()
        .unwrap_or_else(|e| panic!("unexpected: {e}\n{xml}"));
}

#[test]
fn baseline_is_valid() {
    ok(&nat(&ip24(
        "<dhcp><range start='10.0.0.2' end='10.0.0.254'/></dhcp>",
    )));
}

#[test]
fn name_rules() {
    expect(
        "<network><name></name></network>",
        "/network/name",
        "",
        "non-empty name",
    );
    expect(
        "<network><name>a/b</name></network>",
        "/network/name",
        "a/b",
        "cannot contain '/'",
    );
}

/// Device names reach the kernel and nftables: each is checked as the
/// kernel checks it, so a hostile `<forward dev>` cannot become rule text.
#[test]
fn device_names_are_kernel_names() {
    let hostile = "eth0\" accept; add table inet pwned; #";
    expect(
        &format!(
            "<network><name>n</name><forward mode='nat' dev='{}'/><bridge name='virbr9'/>{}</network>",
            hostile.replace('"', "&quot;"),
            ip24("")
        ),
        "/network/forward/@dev",
        "eth0\\\" accept; add table inet pwned; #",
        "invalid interface name: 37 bytes long, at most 15 allowed",
    );
    expect(
        &format!(
            "<network><name>n</name><forward mode='route'><interface dev='a b'/></forward>{}</network>",
            ip24("")
        ),
        "/network/forward/@dev",
        "a b",
        "invalid interface name: must not contain white space",
    );
    expect(
        &format!(
            "<network><name>n</name><bridge name='../x'/>{}</network>",
            ip24("")
        ),
        "/network/bridge/@name",
        "../x",
        "invalid interface name: must not contain '/'",
    );
    expect(
        "<network><name>n</name><forward mode='bridge'><pf dev='eth:0'/></forward></network>",
        "/network/forward/pf/@dev",
        "eth:0",
        "must not contain ':'",
    );
    ok(&format!(
        "<network><name>n</name><forward mode='nat' dev='eth0.100'/><bridge name='br-x_1'/>{}</network>",
        ip24("")
    ));
    // libvirt's template, filled in at define, is not refused for its '%'.
    ok(&format!(
        "<network><name>n</name><bridge name='virbr%d'/>{}</network>",
        ip24("")
    ));
    expect(
        "<network><name>n</name><bridge name='br%x'/></network>",
        "/network/bridge/@name",
        "br%x",
        "must not contain '%'",
    );
}

#[test]
fn bridge_mac_not_multicast() {
    expect(
        &nat(&format!("<mac address='01:00:5e:00:00:01'/>{}", ip24(""))),
        "/network/mac/@address",
        "01:00:5e:00:00:01",
        "multicast",
    );
}

#[test]
fn mtu_range() {
    expect(
        &nat(&format!("<mtu size='20'/>{}", ip24(""))),
        "/network/mtu/@size",
        "20",
        "between 68 and 65535",
    );
    expect(
        &nat(&format!("<mtu size='70000'/>{}", ip24(""))),
        "/network/mtu/@size",
        "70000",
        "between 68 and 65535",
    );
    ok(&nat(&format!("<mtu size='9000'/>{}", ip24(""))));
}

#[test]
fn netmask_rules() {
    expect(
        &nat("<ip address='10.0.0.1' netmask='255.255.255.0' prefix='24'/>"),
        "/network/ip[1]/@netmask",
        "255.255.255.0",
        "both a prefix and a netmask",
    );
    expect(
        &nat("<ip address='10.0.0.1' netmask='255.0.255.0'/>"),
        "/network/ip[1]/@netmask",
        "255.0.255.0",
        "contiguous",
    );
    expect(
        &nat("<ip family='ipv6' address='fd00::1' netmask='255.255.0.0'/>"),
        "/network/ip[1]/@netmask",
        "255.255.0.0",
        "not allowed for an IPv6",
    );
    expect(
        &nat("<ip address='10.0.0.1' prefix='33'/>"),
        "/network/ip[1]/@prefix",
        "33",
        "invalid IPv4 prefix",
    );
}

#[test]
fn family_must_match_address() {
    expect(
        &nat("<ip family='ipv6' address='10.0.0.1' prefix='24'/>"),
        "/network/ip[1]/@address",
        "10.0.0.1",
        "non-IPv6 address",
    );
    expect(
        &nat("<ip address='fd00::1' prefix='64'/>"),
        "/network/ip[1]/@address",
        "fd00::1",
        "family='ipv6'",
    );
}

#[test]
fn dhcp_range_inside_subnet() {
    expect(
        &nat(&ip24(
            "<dhcp><range start='10.0.1.2' end='10.0.1.9'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/range[1]",
        "10.0.1.2 - 10.0.1.9",
        "not entirely within network 10.0.0.1/24",
    );
}

#[test]
fn dhcp_range_order_and_special_addresses() {
    expect(
        &nat(&ip24(
            "<dhcp><range start='10.0.0.9' end='10.0.0.5'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/range[1]",
        "10.0.0.9 - 10.0.0.5",
        "reversed",
    );
    expect(
        &nat(&ip24(
            "<dhcp><range start='10.0.0.0' end='10.0.0.5'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/range[1]",
        "10.0.0.0 - 10.0.0.5",
        "start of range in network 10.0.0.1/24 is the network address",
    );
    expect(
        &nat(&ip24(
            "<dhcp><range start='10.0.0.2' end='10.0.0.255'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/range[1]",
        "10.0.0.2 - 10.0.0.255",
        "is the broadcast address",
    );
    expect(
        &nat(&ip24(
            "<dhcp><range start='10.0.0.1' end='10.0.0.9'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/range[1]",
        "10.0.0.1 - 10.0.0.9",
        "is the network's own address",
    );
    expect(
        &nat(&ip24("<dhcp><range start='fd00::2' end='fd00::9'/></dhcp>")),
        "/network/ip[1]/dhcp/range[1]",
        "fd00::2 - fd00::9",
        "mismatch of address family",
    );
}

#[test]
fn dhcp_lease_minimum() {
    // The parser already refuses a short lease, like libvirt...
    let e = Network::from_xml(&nat(&ip24(
        "<dhcp><range start='10.0.0.2' end='10.0.0.9'><lease expiry='60' unit='seconds'/>\
         <lease expiry='1' unit='hours'/></range></dhcp>",
    )))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/network/ip/dhcp/range/lease/@expiry")
            && e.contains("'60'")
            && e.contains("minimum lease time is 2 minutes"),
        "{e}"
    );
    // ...and validation catches one set in code.
    let mut net = Network::from_xml(&nat(&ip24(
        "<dhcp><range start='10.0.0.2' end='10.0.0.9'/><host mac='00:16:3e:00:00:01' ip='10.0.0.20'/></dhcp>",
    )))
    .unwrap();
    let dhcp = net.ips[0].dhcp.as_mut().unwrap();
    dhcp.hosts[0].lease = Some(Lease {
        expiry: 1,
        unit: Some(LeaseUnit::Minutes),
    });
    let e = net.validate().unwrap_err();
    assert_eq!(
        (e.element.as_str(), e.value.as_str()),
        ("/network/ip[1]/dhcp/host[1]/lease/@expiry", "1")
    );
    assert!(e.rule.contains("minimum lease time is 2 minutes"), "{e}");
}

#[test]
fn static_host_rules() {
    expect(
        &nat(&ip24(
            "<dhcp><host mac='00:16:3e:00:00:01' ip='10.0.5.5'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/host[1]/@ip",
        "10.0.5.5",
        "not within network 10.0.0.1/24",
    );
    expect(
        &nat(&ip24(
            "<dhcp><host mac='00:16:3e:00:00:01' ip='10.0.0.1'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/host[1]/@ip",
        "10.0.0.1",
        "network's own address",
    );
    expect(
        &nat(&ip24(
            "<dhcp><host mac='01:16:3e:00:00:01' ip='10.0.0.5'/></dhcp>",
        )),
        "/network/ip[1]/dhcp/host[1]/@mac",
        "01:16:3e:00:00:01",
        "found multicast",
    );
    expect(
        &nat(&ip24("<dhcp><host ip='10.0.0.5'/></dhcp>")),
        "/network/ip[1]/dhcp/host[1]",
        "",
        "must have mac or name",
    );
    expect(
        &nat(&ip24("<dhcp><host name='-x' ip='10.0.0.5'/></dhcp>")),
        "/network/ip[1]/dhcp/host[1]/@name",
        "-x",
        "start with a letter or digit",
    );
    expect(
        &nat(&ip24("<dhcp><host name='x'/></dhcp>")),
        "/network/ip[1]/dhcp/host[1]/@ip",
        "",
        "missing IP address",
    );
    expect(
        &nat("<ip family='ipv6' address='fd00::1' prefix='64'><dhcp><host mac='00:16:3e:00:00:01' name='a' ip='fd00::5'/></dhcp></ip>"),
        "/network/ip[1]/dhcp/host[1]/@mac",
        "00:16:3e:00:00:01",
        "not allowed in an IPv6 static host",
    );
    expect(
        &nat("<ip family='ipv6' address='fd00::1' prefix='64'><dhcp><host id='0:1:zz' ip='fd00::5'/></dhcp></ip>"),
        "/network/ip[1]/dhcp/host[1]/@id",
        "0:1:zz",
        "invalid character 'z'",
    );
}

#[test]
fn one_dhcp_per_family() {
    let two_v4 = format!(
        "{}<ip address='10.1.0.1' prefix='24'><dhcp><range start='10.1.0.2' end='10.1.0.9'/></dhcp></ip>",
        ip24("<dhcp><range start='10.0.0.2' end='10.0.0.9'/></dhcp>")
    );
    expect(
        &nat(&two_v4),
        "/network/ip[2]/dhcp",
        "10.1.0.1",
        "dhcp is supported only for a single IPv4 address",
    );
    let two_v6 = "<ip family='ipv6' address='fd00::1' prefix='64'><dhcp><range start='fd00::2' end='fd00::9'/></dhcp></ip>\
                  <ip family='ipv6' address='fd01::1' prefix='64'><dhcp><range start='fd01::2' end='fd01::9'/></dhcp></ip>";
    expect(
        &nat(two_v6),
        "/network/ip[2]/dhcp",
        "fd01::1",
        "single IPv6 address",
    );
    // One of each family is fine.
    ok(&nat(&format!(
        "{}<ip family='ipv6' address='fd00::1' prefix='64'><dhcp><range start='fd00::2' end='fd00::9'/></dhcp></ip>",
        ip24("<dhcp><range start='10.0.0.2' end='10.0.0.9'/></dhcp>")
    )));
}

#[test]
fn tftp_only_ipv4() {
    expect(
        &nat("<ip family='ipv6' address='fd00::1' prefix='64'><tftp root='/srv'/></ip>"),
        "/network/ip[1]/tftp",
        "fd00::1",
        "unsupported <tftp> element in an IPv6",
    );
}

#[test]
fn l3_modes_need_an_ip() {
    expect(
        "<network><name>n</name><forward mode='route'/></network>",
        "/network/forward",
        "route",
        "no IP address provided",
    );
    expect(
        "<network><name>n</name><forward/></network>",
        "/network/forward",
        "nat",
        "nat forwarding requested",
    );
}

#[test]
fn open_mode_refuses_dev() {
    expect(
        &format!(
            "<network><name>n</name><forward mode='open' dev='eth0'/>{}</network>",
            ip24("")
        ),
        "/network/forward/@dev",
        "eth0",
        "forward dev not allowed with forward mode='open'",
    );
}

#[test]
fn nat_mode_one_interface() {
    expect(
        &format!(
            "<network><name>n</name><forward mode='nat'><interface dev='a'/><interface dev='b'/></forward>{}</network>",
            ip24("")
        ),
        "/network/forward/interface[2]",
        "b",
        "only one is supported",
    );
}

#[test]
fn nat_element_only_in_nat_mode() {
    // The parser refuses it, as libvirt does, even when empty...
    for nat in ["<nat><port start='1' end='2'/></nat>", "<nat/>"] {
        let xml = format!(
            "<network><name>n</name><forward mode='route'>{nat}</forward>{}</network>",
            ip24("")
        );
        let e = Network::from_xml(&xml).unwrap_err().to_string();
        assert!(
            e.contains("/network/forward/nat")
                && e.contains("only be used when <forward> 'mode' is 'nat'"),
            "{e}"
        );
    }
    // ...and validation refuses one set in code.
    let mut net = Network::from_xml(&format!(
        "<network><name>n</name><forward mode='route'/>{}</network>",
        ip24("")
    ))
    .unwrap();
    net.forward.as_mut().unwrap().nat = Some(Nat {
        port: Some((1, 2)),
        ..Nat::default()
    });
    let e = net.validate().unwrap_err();
    assert_eq!(
        (e.element.as_str(), e.value.as_str()),
        ("/network/forward/nat", "route")
    );
    assert!(
        e.rule
            .contains("only be used when <forward> 'mode' is 'nat'"),
        "{e}"
    );
}

#[test]
fn nat_port_and_address_ranges() {
    let port = |s: u32, e: u32| {
        format!(
            "<network><name>n</name><forward><nat><port start='{s}' end='{e}'/></nat></forward>{}</network>",
            ip24("")
        )
    };
    expect(
        &port(0, 100),
        "/network/forward/nat/port",
        "0-100",
        "between 1 and 65535",
    );
    expect(
        &port(2000, 1000),
        "/network/forward/nat/port",
        "2000-1000",
        "reversed",
    );
    ok(&port(1, 65535));
    expect(
        &format!(
            "<network><name>n</name><forward><nat><address start='1.2.3.9' end='1.2.3.4'/></nat></forward>{}</network>",
            ip24("")
        ),
        "/network/forward/nat/address",
        "1.2.3.9 - 1.2.3.4",
        "reversed",
    );
}

#[test]
fn nat_addresses_must_be_ipv4() {
    // Typed as IPv4 in the model, so the parser refuses them with a position.
    let xml = format!(
        "<network><name>n</name><forward><nat><address start='fd00::1' end='fd00::2'/></nat></forward>{}</network>",
        ip24("")
    );
    let e = Network::from_xml(&xml).unwrap_err().to_string();
    assert!(
        e.contains("/network/forward/nat/address/@start")
            && e.contains("fd00::1")
            && e.contains("IPv4"),
        "{e}"
    );
}

#[test]
fn bridge_mode_rules() {
    let bridge = |extra: &str| {
        format!(
            "<network><name>n</name><forward mode='bridge'/><bridge name='br0'/>{extra}</network>"
        )
    };
    ok(&bridge(""));
    expect(
        "<network><name>n</name><forward mode='bridge'/></network>",
        "/network/forward",
        "bridge",
        "needs a <bridge name>, an <interface dev> or a <pf dev>",
    );
    expect(
        &bridge(&ip24("")),
        "/network/ip[1]",
        "10.0.0.1",
        "unsupported <ip> element with forward mode='bridge'",
    );
    expect(
        &bridge("<dns><host ip='10.0.0.5'><hostname>a</hostname></host></dns>"),
        "/network/dns",
        "records",
        "unsupported <dns> element",
    );
    expect(
        &bridge("<domain name='x.example'/>"),
        "/network/domain/@name",
        "x.example",
        "unsupported <domain> element",
    );
    expect(
        &bridge("<mac address='52:54:00:00:00:01'/>"),
        "/network/mac/@address",
        "52:54:00:00:00:01",
        "unsupported <mac> element",
    );
    expect(
        &bridge("<mtu size='1500'/>"),
        "/network/mtu/@size",
        "1500",
        "mtu size only allowed in open, route, nat, and isolated mode",
    );
    expect(
        "<network><name>n</name><forward mode='bridge'/><bridge name='br0' stp='off'/></network>",
        "/network/bridge/@stp",
        "off",
        "bridge delay/stp/zone options only allowed",
    );
    expect(
        "<network><name>n</name><forward mode='bridge'/><bridge name='br0' delay='2'/></network>",
        "/network/bridge/@delay",
        "2",
        "bridge delay/stp/zone options only allowed",
    );
    expect(
        "<network><name>n</name><forward mode='bridge' dev='eth0'/><bridge name='br0'/></network>",
        "/network/forward",
        "bridge",
        "a bridge name or a forward dev, but not both",
    );
}

#[test]
fn macvtap_modes_refuse_bridge_name() {
    expect(
        "<network><name>n</name><forward mode='vepa' dev='eth0'/><bridge name='br0'/></network>",
        "/network/bridge/@name",
        "br0",
        "bridge name not allowed in vepa mode",
    );
    expect(
        "<network><name>n</name><forward mode='private'/></network>",
        "/network/forward",
        "private",
        "needs a forward dev",
    );
}

#[test]
fn dns_host_rules() {
    expect(
        &nat(&format!(
            "<dns><host ip='10.0.0.5'></host></dns>{}",
            ip24("")
        )),
        "/network/dns/host[1]",
        "10.0.0.5",
        "missing hostname",
    );
    expect(
        &nat(&format!(
            "<dns><host><hostname>a</hostname></host></dns>{}",
            ip24("")
        )),
        "/network/dns/host[1]/@ip",
        "",
        "missing IP address",
    );
    expect(
        &nat(&format!(
            "<dns><host ip='10.0.0.5'><hostname>a</hostname><hostname> </hostname></host></dns>{}",
            ip24("")
        )),
        "/network/dns/host[1]/hostname[2]",
        "",
        "empty hostname",
    );
}

#[test]
fn dns_disabled_has_no_records() {
    expect(
        &nat(&format!(
            "<dns enable='no'><forwarder addr='192.0.2.1'/></dns>{}",
            ip24("")
        )),
        "/network/dns",
        "enable='no'",
        "DNS disabled",
    );
}

#[test]
fn dns_txt_rules() {
    expect(
        &nat(&format!(
            "<dns><txt name='a b' value='v'/></dns>{}",
            ip24("")
        )),
        "/network/dns/txt[1]/@name",
        "a b",
        "prohibited character",
    );
}

#[test]
fn dns_srv_rules() {
    let srv = |attrs: &str| nat(&format!("<dns><srv {attrs}/></dns>{}", ip24("")));
    ok(&srv(
        "service='ldap' protocol='tcp' target='t.example' port='389' priority='1' weight='2'",
    ));
    expect(
        &srv("protocol='tcp'"),
        "/network/dns/srv[1]/@service",
        "",
        "missing required service",
    );
    expect(
        &srv("service='ldap'"),
        "/network/dns/srv[1]/@protocol",
        "",
        "missing required protocol",
    );
    expect(
        &srv("service='l.dap' protocol='tcp'"),
        "/network/dns/srv[1]/@service",
        "l.dap",
        "invalid character in service",
    );
    expect(
        &srv("service='ldap' protocol='t.cp'"),
        "/network/dns/srv[1]/@protocol",
        "t.cp",
        "invalid character in protocol",
    );
    expect(
        &srv("service='ldap' protocol='tcp' port='389'"),
        "/network/dns/srv[1]/@port",
        "389",
        "not permitted without target",
    );
    expect(
        &srv("service='ldap' protocol='tcp' target='t' port='0'"),
        "/network/dns/srv[1]/@port",
        "0",
        "invalid DNS SRV port",
    );
    let long = "s".repeat(483);
    expect(
        &srv(&format!("service='{long}' protocol='tcp'")),
        "/network/dns/srv[1]/@service",
        &long,
        "too long, limit is 482 bytes",
    );
}

#[test]
fn route_rules() {
    let route = |attrs: &str| nat(&format!("{}<route {attrs}/>", ip24("")));
    ok(&route("address='10.5.0.0' prefix='16' gateway='10.0.0.2'"));
    expect(
        &route("address='10.5.0.0' prefix='16' gateway='10.9.0.1'"),
        "/network/route[1]/@gateway",
        "10.9.0.1",
        "unreachable static route gateway",
    );
    expect(
        &route("address='10.5.0.1' prefix='16' gateway='10.0.0.2'"),
        "/network/route[1]/@address",
        "10.5.0.1",
        "not a network address for prefix 16",
    );
    expect(
        &route("address='10.5.0.0' prefix='16' netmask='255.255.0.0' gateway='10.0.0.2'"),
        "/network/route[1]",
        "10.5.0.0",
        "both a prefix and a netmask",
    );
    expect(
        &route("address='10.5.0.0' prefix='16' gateway='10.0.0.2' metric='0'"),
        "/network/route[1]/@metric",
        "0",
        "zero is not permitted",
    );
    expect(
        &route("family='ipv6' address='10.5.0.0' prefix='16' gateway='10.0.0.2'"),
        "/network/route[1]/@address",
        "10.5.0.0",
        "ipv6 family specified for non-IPv6 address",
    );
    expect(
        &route("address='10.5.0.0' prefix='16' gateway='fd00::2'"),
        "/network/route[1]/@gateway",
        "fd00::2",
        "same family",
    );
}

#[test]
fn ranges_limited_to_65536_addresses() {
    expect(
        &format!(
            "<network><name>n</name><forward><nat><address start='198.51.0.0' end='198.52.0.0'/></nat></forward>{}</network>",
            ip24("")
        ),
        "/network/forward/nat/address",
        "198.51.0.0 - 198.52.0.0",
        "too large (> 65535)",
    );
    expect(
        &nat("<ip address='10.0.0.1' prefix='8'><dhcp><range start='10.0.0.2' end='10.1.0.1'/></dhcp></ip>"),
        "/network/ip[1]/dhcp/range[1]",
        "10.0.0.2 - 10.1.0.1",
        "too large (> 65535)",
    );
    ok(&nat("<ip address='10.0.0.1' prefix='8'><dhcp><range start='10.0.0.2' end='10.0.255.254'/></dhcp></ip>"));
}

#[test]
fn names_served_by_dns_are_dns_names() {
    expect(
        &nat(&format!("<domain name='a&amp;b'/>{}", ip24(""))),
        "/network/domain/@name",
        "a&b",
        "must be a DNS name",
    );
    expect(
        &nat(&ip24("<dhcp><host name='a&lt;b' ip='10.0.0.5'/></dhcp>")),
        "/network/ip[1]/dhcp/host[1]/@name",
        "a<b",
        "must be a DNS name",
    );
}

#[test]
fn hostdev_pools_are_pci_addresses() {
    expect(
        "<network><name>n</name><forward mode='hostdev' dev='eth0'/></network>",
        "/network/forward/interface[1]",
        "eth0",
        "listed by PCI address",
    );
}

#[test]
fn device_pool_rules() {
    expect(
        "<network><name>n</name><forward mode='hostdev'/></network>",
        "/network/forward",
        "hostdev",
        "needs a <pf dev> or <address type='pci'> pool",
    );
    ok("<network><name>n</name><forward mode='hostdev'><pf dev='eth3'/></forward></network>");
    ok("<network><name>n</name><forward mode='passthrough'><pf dev='eth3'/></forward></network>");
    expect(
        "<network><name>n</name><forward mode='vepa'><address type='pci' bus='1' slot='2' function='3'/></forward></network>",
        "/network/forward/address[1]",
        "0000:01:02.3",
        "only supported for forward mode 'hostdev'",
    );
    expect(
        &format!(
            "<network><name>n</name><forward mode='nat'><pf dev='eth3'/></forward>{}</network>",
            ip24("")
        ),
        "/network/forward/pf/@dev",
        "eth3",
        "not nat",
    );
    expect(
        "<network><name>n</name><forward mode='bridge'><pf dev='eth3'/></forward><bridge name='br0'/></network>",
        "/network/forward",
        "bridge",
        "a bridge name or a forward dev, but not both",
    );
}
