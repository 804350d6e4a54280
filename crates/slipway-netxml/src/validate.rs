//! The rules a definition must follow: those of libvirt's
//! `virNetworkDefParseXML` and the network driver's `networkValidate`
//! (wording kept close to libvirt's), plus a few libvirt only discovers when
//! dnsmasq or the kernel refuses at start (host addresses outside the
//! subnet, non-contiguous netmasks, MTU range).

use std::net::{IpAddr, Ipv4Addr};

use slipway_host::ipnet::{IpNet, Ipv4Net};
use slipway_host::prefix_of_netmask;

use crate::model::*;
use crate::{IfName, ValidationError};

mod port;

type R = Result<(), ValidationError>;

fn err(element: impl Into<String>, value: impl std::fmt::Display, rule: impl Into<String>) -> R {
    Err(ValidationError::new(element, value, rule))
}

/// Characters libvirt allows in an SRV service name.
const SERVICE_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/*";
/// Characters libvirt allows in an SRV protocol name.
const PROTOCOL_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+/";
/// libvirt's `DNS_RECORD_LENGTH_SRV`: 512 bytes minus RFC 2782 overhead.
const SRV_MAX_LEN: usize = 512 - 30;
/// Smallest MTU Linux accepts on an IPv4-capable bridge.
const MTU_MIN: u32 = 68;
/// Largest MTU a Linux bridge accepts.
const MTU_MAX: u32 = 65535;

/// The address as a 128-bit number (IPv4 in the low 32 bits) and its width.
fn bits(a: IpAddr) -> (u128, u32) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The subnet `a`/`prefix` (a prefix past the family's width taken as the
/// whole address).
fn subnet(a: IpAddr, prefix: u8) -> IpNet {
    let width = if a.is_ipv4() { 32 } else { 128 };
    IpNet::new(a, prefix.min(width)).expect("a prefix within the width")
}

/// True when `a` is inside the subnet `net`/`prefix` (same family).
fn in_subnet(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    same_family(a, net) && subnet(net, prefix).contains(&a)
}

fn network_addr(a: IpAddr, prefix: u8) -> IpAddr {
    subnet(a, prefix).network()
}

fn broadcast_addr(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Net::new(a, prefix.min(32))
        .expect("a prefix within the width")
        .broadcast()
}

/// The rule [`is_dns_name`] checks, as worded in errors.
const DNS_NAME_RULE: &str = "must be a DNS name (letters, digits, '-', '_' and '.')";

/// True for a non-empty name of letters, digits, `-`, `_` and `.`: what
/// dnsmasq can serve. libvirt writes these names into its XML without
/// escaping, so anything else would also make its output malformed.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// libvirt's `virSocketAddrGetRange` limit: start and end may differ only
/// in their last 16 bits.
fn too_large(start: IpAddr, end: IpAddr) -> bool {
    bits(start).0 >> 16 != bits(end).0 >> 16
}

/// slipway's `<slipway:ovn>` needs an Open vSwitch network: guests'
/// interfaces on an OVS bridge (`<forward mode='bridge'/>`, `<bridge
/// name>`, `<virtualport type='openvswitch'/>`), where ovn-controller
/// binds them to the switch's ports by their `iface-id`.
fn ovn_rules(net: &Network) -> R {
    if net.ovn.is_none() {
        return Ok(());
    }
    let ovs = net.forward_mode() == Some(ForwardMode::Bridge)
        && net.bridge_name().is_some()
        && net
            .virtualport
            .as_ref()
            .is_some_and(|v| v.kind == Some(crate::VirtualPortType::OpenVswitch));
    if !ovs {
        return err(
            "/network/metadata/ovn",
            crate::OVN_NS,
            "an OVN network needs <forward mode='bridge'/>, <bridge name=...> and <virtualport type='openvswitch'/>",
        );
    }
    Ok(())
}

pub(crate) fn validate(net: &Network) -> R {
    if net.name.is_empty() {
        return err("/network/name", "", "a network needs a non-empty name");
    }
    if net.name.contains('/') {
        return err("/network/name", &net.name, "name cannot contain '/'");
    }
    if net.name.contains('\n') {
        return err(
            "/network/name",
            net.name.escape_debug(),
            "name cannot contain a newline",
        );
    }
    if let Some(mac) = net.mac {
        if mac.is_multicast() {
            return err(
                "/network/mac/@address",
                mac,
                "invalid multicast bridge MAC address",
            );
        }
    }
    if let Some(mtu) = net.mtu {
        if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
            return err(
                "/network/mtu/@size",
                mtu,
                format!("MTU must be between {MTU_MIN} and {MTU_MAX}"),
            );
        }
    }
    if let Some(d) = &net.domain {
        if !is_dns_name(&d.name) {
            return err("/network/domain/@name", &d.name, DNS_NAME_RULE);
        }
    }
    device_names(net)?;
    ovn_rules(net)?;
    // Before the forward rules, so that a definition libvirtd refuses for
    // its VLANs is refused for the same reason here.
    port::port_rules(net)?;
    forward_rules(net)?;
    for (i, ip) in net.ips.iter().enumerate() {
        ip_rules(ip, &format!("/network/ip[{}]", i + 1))?;
    }
    // libvirt (networkValidate) supports DHCP on one address per family.
    for family in [IpFamily::Ipv4, IpFamily::Ipv6] {
        let with_dhcp: Vec<usize> = net
            .ips
            .iter()
            .enumerate()
            .filter(|(_, ip)| {
                ip.family() == family
                    && ip
                        .dhcp
                        .as_ref()
                        .is_some_and(|d| !(d.ranges.is_empty() && d.hosts.is_empty()))
            })
            .map(|(i, _)| i + 1)
            .collect();
        if with_dhcp.len() > 1 {
            let fam = if family == IpFamily::Ipv4 {
                "IPv4"
            } else {
                "IPv6"
            };
            return err(
                format!("/network/ip[{}]/dhcp", with_dhcp[1]),
                net.ips[with_dhcp[1] - 1].address,
                format!(
                    "multiple {fam} dhcp sections found -- dhcp is supported only for a single {fam} address on each network"
                ),
            );
        }
    }
    if let Some(dns) = &net.dns {
        dns_rules(dns)?;
    }
    for (i, r) in net.routes.iter().enumerate() {
        route_rules(net, r, &format!("/network/route[{}]", i + 1))?;
    }
    Ok(())
}

/// Every device name of the definition reaches the kernel (and nftables
/// rules): each must be an [`IfName`].
fn device_names(net: &Network) -> R {
    if let Some(b) = net.bridge_name() {
        // `virbr%d` is libvirt's template, filled in with a free number
        // when the network is defined: the name it becomes must be valid.
        if let Err(e) = IfName::new(b.replacen("%d", "0", 1)) {
            return err("/network/bridge/@name", b.escape_debug(), e.to_string());
        }
    }
    let mut names: Vec<(String, &str)> = Vec::new();
    if let Some(fwd) = &net.forward {
        for (i, dev) in fwd.interfaces.iter().enumerate() {
            // The first is also `<forward dev>`, and printed back as that.
            let path = if i == 0 {
                "/network/forward/@dev".to_string()
            } else {
                format!("/network/forward/interface[{}]/@dev", i + 1)
            };
            names.push((path, dev));
        }
        if let Some(pf) = &fwd.pf {
            names.push(("/network/forward/pf/@dev".into(), pf));
        }
    }
    for (path, name) in names {
        if let Err(e) = IfName::new(name) {
            return err(path, name.escape_debug(), e.to_string());
        }
    }
    Ok(())
}

fn forward_rules(net: &Network) -> R {
    let Some(fwd) = &net.forward else {
        return Ok(());
    };
    let mode = fwd.mode;
    let p = "/network/forward";
    let bridge = net.bridge.clone().unwrap_or_default();
    if fwd.nat.is_some() && mode != ForwardMode::Nat {
        return err(
            format!("{p}/nat"),
            mode,
            "the <nat> element can only be used when <forward> 'mode' is 'nat'",
        );
    }
    if let Some(nat) = &fwd.nat {
        if let Some((start, end)) = nat.address {
            if u32::from(start) > u32::from(end) {
                return err(
                    format!("{p}/nat/address"),
                    format!("{start} - {end}"),
                    "NAT address range is reversed (start must not be after end)",
                );
            }
            if too_large(IpAddr::V4(start), IpAddr::V4(end)) {
                return err(
                    format!("{p}/nat/address"),
                    format!("{start} - {end}"),
                    "range is too large (> 65535)",
                );
            }
        }
        if let Some((start, end)) = nat.port {
            if start == 0 || end == 0 {
                return err(
                    format!("{p}/nat/port"),
                    format!("{start}-{end}"),
                    "NAT ports must be between 1 and 65535",
                );
            }
            if start > end {
                return err(
                    format!("{p}/nat/port"),
                    format!("{start}-{end}"),
                    "NAT port range is reversed (start must not be after end)",
                );
            }
        }
    }
    if mode != ForwardMode::Hostdev {
        if let Some(a) = fwd.pci_addresses.first() {
            return err(
                format!("{p}/address[1]"),
                a,
                format!("network has forward mode '{mode}' but lists a device by PCI address; this is only supported for forward mode 'hostdev'"),
            );
        }
    }
    match mode {
        ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open => {
            if let Some(pf) = &fwd.pf {
                return err(
                    format!("{p}/pf/@dev"),
                    pf,
                    format!(
                        "a <pf> device pool is for bridge, macvtap and hostdev modes, not {mode}"
                    ),
                );
            }
            if net.ips.is_empty() {
                return err(
                    p,
                    mode,
                    format!("{mode} forwarding requested, but no IP address provided"),
                );
            }
            if fwd.interfaces.len() > 1 {
                return err(
                    format!("{p}/interface[2]"),
                    &fwd.interfaces[1],
                    "multiple forwarding interfaces specified, only one is supported",
                );
            }
            if mode == ForwardMode::Open && !fwd.interfaces.is_empty() {
                return err(
                    format!("{p}/@dev"),
                    &fwd.interfaces[0],
                    "forward dev not allowed with forward mode='open'",
                );
            }
        }
        ForwardMode::Bridge
        | ForwardMode::Private
        | ForwardMode::Vepa
        | ForwardMode::Passthrough
        | ForwardMode::Hostdev => {
            if mode != ForwardMode::Bridge {
                if let Some(name) = &bridge.name {
                    return err(
                        "/network/bridge/@name",
                        name,
                        format!("bridge name not allowed in {mode} mode"),
                    );
                }
                if let Some(m) = bridge.mac_table_manager {
                    return err(
                        "/network/bridge/@macTableManager",
                        m.as_str(),
                        format!("bridge macTableManager setting not allowed in {mode} mode"),
                    );
                }
            }
            let stp = bridge
                .stp
                .map(|on| if on { "on" } else { "off" }.to_string());
            let delay = bridge.delay.map(|d| d.to_string());
            for (attr, value) in [
                ("stp", stp),
                ("delay", delay),
                ("zone", bridge.zone.clone()),
            ] {
                if let Some(value) = value {
                    return err(
                        format!("/network/bridge/@{attr}"),
                        value,
                        format!("bridge delay/stp/zone options only allowed in route, nat, and isolated mode, not in {mode}"),
                    );
                }
            }
            if bridge.name.is_some() && !(fwd.interfaces.is_empty() && fwd.pf.is_none()) {
                return err(
                    p,
                    mode,
                    format!("a network with forward mode='{mode}' can specify a bridge name or a forward dev, but not both"),
                );
            }
            let no_pool = fwd.interfaces.is_empty() && fwd.pf.is_none();
            if mode == ForwardMode::Bridge && bridge.name.is_none() && no_pool {
                return err(
                    p,
                    mode,
                    "forward mode='bridge' needs a <bridge name>, an <interface dev> or a <pf dev>",
                );
            }
            if mode == ForwardMode::Hostdev {
                if let Some(dev) = fwd.interfaces.first() {
                    return err(
                        format!("{p}/interface[1]"),
                        dev,
                        "hostdev networks require all devices to be listed by PCI address, not network device name",
                    );
                }
                if fwd.pf.is_none() && fwd.pci_addresses.is_empty() {
                    return err(
                        p,
                        mode,
                        "forward mode='hostdev' needs a <pf dev> or <address type='pci'> pool",
                    );
                }
            }
            if matches!(
                mode,
                ForwardMode::Private | ForwardMode::Vepa | ForwardMode::Passthrough
            ) && no_pool
            {
                return err(
                    p,
                    mode,
                    format!(
                        "forward mode='{mode}' needs a forward dev, an <interface dev> or a <pf dev>"
                    ),
                );
            }
            if let Some(mtu) = net.mtu {
                return err(
                    "/network/mtu/@size",
                    mtu,
                    format!("mtu size only allowed in open, route, nat, and isolated mode, not in {mode}"),
                );
            }
            if let Some(mac) = net.mac {
                return err(
                    "/network/mac/@address",
                    mac,
                    format!("unsupported <mac> element with forward mode='{mode}'"),
                );
            }
            if let Some(ip) = net.ips.first() {
                return err(
                    "/network/ip[1]",
                    ip.address,
                    format!("unsupported <ip> element with forward mode='{mode}'"),
                );
            }
            if let Some(dns) = &net.dns {
                if !(dns.txts.is_empty() && dns.hosts.is_empty() && dns.srvs.is_empty()) {
                    return err(
                        "/network/dns",
                        "records",
                        format!("unsupported <dns> element with forward mode='{mode}'"),
                    );
                }
            }
            if let Some(d) = &net.domain {
                return err(
                    "/network/domain/@name",
                    &d.name,
                    format!("unsupported <domain> element with forward mode='{mode}'"),
                );
            }
        }
    }
    Ok(())
}

fn lease_rules(lease: &Lease, p: &str) -> R {
    if lease.is_too_short() {
        return err(
            format!("{p}/lease/@expiry"),
            lease.expiry,
            Lease::MINIMUM_RULE,
        );
    }
    Ok(())
}

fn ip_rules(ip: &IpDef, p: &str) -> R {
    let addr = ip.address;
    match (ip.family, addr) {
        (Some(IpFamily::Ipv6), IpAddr::V4(_)) => {
            return err(
                format!("{p}/@address"),
                addr,
                "family 'ipv6' specified for non-IPv6 address",
            )
        }
        (Some(IpFamily::Ipv4), IpAddr::V6(_)) | (None, IpAddr::V6(_)) => {
            return err(
                format!("{p}/@address"),
                addr,
                "IPv6 addresses need family='ipv6' (libvirt reads an <ip> without family as IPv4)",
            )
        }
        _ => {}
    }
    if let Some(m) = ip.netmask {
        if addr.is_ipv6() {
            return err(
                format!("{p}/@netmask"),
                m,
                "netmask not allowed for an IPv6 address",
            );
        }
        if ip.prefix.is_some() {
            return err(
                format!("{p}/@netmask"),
                m,
                "an IP address cannot have both a prefix and a netmask",
            );
        }
        if prefix_of_netmask(m).is_none() {
            return err(
                format!("{p}/@netmask"),
                m,
                "netmask must be contiguous (ones followed by zeros)",
            );
        }
    }
    if let Some(px) = ip.prefix {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if px > max {
            let fam = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            return err(
                format!("{p}/@prefix"),
                px,
                format!("invalid {fam} prefix (0-{max})"),
            );
        }
    }
    let Some(prefix) = ip.prefix_len() else {
        return err(
            format!("{p}/@address"),
            addr,
            "cannot derive a prefix from a class D/E address; give prefix or netmask",
        );
    };
    if ip.tftp_root.is_some() && addr.is_ipv6() {
        return err(
            format!("{p}/tftp"),
            addr,
            "unsupported <tftp> element in an IPv6 element",
        );
    }
    let Some(dhcp) = &ip.dhcp else {
        return Ok(());
    };
    let subnet = network_addr(addr, prefix);
    let net_str = format!("{addr}/{prefix}");
    let special = |a: IpAddr| -> Option<&'static str> {
        if a == subnet {
            return Some("the network address");
        }
        if let (IpAddr::V4(a4), IpAddr::V4(s4)) = (a, subnet) {
            if prefix < 31 && a4 == broadcast_addr(s4, prefix) {
                return Some("the broadcast address");
            }
        }
        if a == addr {
            return Some("the network's own address");
        }
        None
    };
    for (i, r) in dhcp.ranges.iter().enumerate() {
        let rp = format!("{p}/dhcp/range[{}]", i + 1);
        let shown = format!("{} - {}", r.start, r.end);
        if !same_family(r.start, addr) || !same_family(r.end, addr) {
            return err(
                rp,
                shown,
                format!("mismatch of address family in range for network {addr}"),
            );
        }
        if !in_subnet(r.start, addr, prefix) || !in_subnet(r.end, addr, prefix) {
            return err(
                rp,
                shown,
                format!("range is not entirely within network {net_str}"),
            );
        }
        if bits(r.start).0 > bits(r.end).0 {
            return err(rp, shown, "range is reversed (start must not be after end)");
        }
        if too_large(r.start, r.end) {
            return err(rp, shown, "range is too large (> 65535)");
        }
        for (which, a) in [("start", r.start), ("end", r.end)] {
            if let Some(what) = special(a) {
                return err(
                    rp,
                    shown,
                    format!("{which} of range in network {net_str} is {what}"),
                );
            }
        }
        if let Some(l) = &r.lease {
            lease_rules(l, &rp)?;
        }
    }
    for (i, h) in dhcp.hosts.iter().enumerate() {
        let hp = format!("{p}/dhcp/host[{}]", i + 1);
        if let Some(mac) = h.mac {
            if addr.is_ipv6() {
                return err(
                    format!("{hp}/@mac"),
                    mac,
                    "a MAC address is not allowed in an IPv6 static host (use id)",
                );
            }
            if mac.is_multicast() {
                return err(
                    format!("{hp}/@mac"),
                    mac,
                    "expected unicast MAC address, found multicast",
                );
            }
        }
        if let Some(id) = &h.id {
            if let Some(c) = id.chars().find(|c| !(c.is_ascii_hexdigit() || *c == ':')) {
                return err(
                    format!("{hp}/@id"),
                    id,
                    format!("invalid character '{c}' in id (hex digits and ':' only)"),
                );
            }
        }
        if let Some(name) = &h.name {
            if !name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            {
                return err(
                    format!("{hp}/@name"),
                    name,
                    "host name must start with a letter or digit",
                );
            }
            if !is_dns_name(name) {
                return err(format!("{hp}/@name"), name, DNS_NAME_RULE);
            }
        }
        if addr.is_ipv6() {
            if h.id.is_none() && h.name.is_none() {
                return err(
                    &hp,
                    "",
                    "static host in an IPv6 network must have id or name attribute",
                );
            }
        } else if h.mac.is_none() && h.name.is_none() {
            return err(
                &hp,
                "",
                "static host in an IPv4 network must have mac or name attribute",
            );
        }
        let Some(hip) = h.ip else {
            return err(
                format!("{hp}/@ip"),
                "",
                "missing IP address in static host definition",
            );
        };
        if !same_family(hip, addr) {
            return err(
                format!("{hp}/@ip"),
                hip,
                "the address family of a host entry IP must match the address family of the dhcp element's parent",
            );
        }
        if !in_subnet(hip, addr, prefix) {
            return err(
                format!("{hp}/@ip"),
                hip,
                format!("static host IP is not within network {net_str}"),
            );
        }
        if let Some(what) = special(hip) {
            return err(
                format!("{hp}/@ip"),
                hip,
                format!("static host IP is {what}"),
            );
        }
        if let Some(l) = &h.lease {
            lease_rules(l, &hp)?;
        }
    }
    Ok(())
}

fn dns_rules(dns: &Dns) -> R {
    let p = "/network/dns";
    let records = !(dns.forwarders.is_empty()
        && dns.txts.is_empty()
        && dns.srvs.is_empty()
        && dns.hosts.is_empty());
    if dns.enable == Some(false) && records {
        return err(
            p,
            "enable='no'",
            "extra data in a network with DNS disabled",
        );
    }
    for (i, f) in dns.forwarders.iter().enumerate() {
        if f.addr.is_none() && f.domain.is_none() {
            return err(
                format!("{p}/forwarder[{}]", i + 1),
                "",
                "invalid forwarder element, must contain at least one of addr or domain",
            );
        }
    }
    for (i, t) in dns.txts.iter().enumerate() {
        let tp = format!("{p}/txt[{}]", i + 1);
        if t.name.is_empty() {
            return err(
                format!("{tp}/@name"),
                "",
                "missing required name attribute in DNS TXT record",
            );
        }
        if t.name.contains([' ', ',']) {
            return err(
                format!("{tp}/@name"),
                &t.name,
                "prohibited character (space or comma) in DNS TXT record name",
            );
        }
    }
    for (i, s) in dns.srvs.iter().enumerate() {
        let sp = format!("{p}/srv[{}]", i + 1);
        let Some(service) = &s.service else {
            return err(
                format!("{sp}/@service"),
                "",
                "missing required service attribute in DNS SRV record",
            );
        };
        if service.len() > SRV_MAX_LEN {
            return err(
                format!("{sp}/@service"),
                service,
                format!("service attribute is too long, limit is {SRV_MAX_LEN} bytes"),
            );
        }
        if service.is_empty() || !service.chars().all(|c| SERVICE_CHARS.contains(c)) {
            return err(
                format!("{sp}/@service"),
                service,
                "invalid character in service attribute of DNS SRV record",
            );
        }
        let Some(protocol) = &s.protocol else {
            return err(
                format!("{sp}/@protocol"),
                "",
                "missing required protocol attribute in DNS SRV record",
            );
        };
        if protocol.is_empty() || !protocol.chars().all(|c| PROTOCOL_CHARS.contains(c)) {
            return err(
                format!("{sp}/@protocol"),
                protocol,
                "invalid character in protocol attribute of DNS SRV record",
            );
        }
        for (attr, v) in [
            ("port", s.port),
            ("priority", s.priority),
            ("weight", s.weight),
        ] {
            if let Some(v) = v {
                if s.target.is_none() {
                    return err(
                        format!("{sp}/@{attr}"),
                        v,
                        format!("DNS SRV {attr} attribute not permitted without target"),
                    );
                }
            }
        }
        if s.port == Some(0) {
            return err(
                format!("{sp}/@port"),
                0,
                "invalid DNS SRV port attribute (1-65535)",
            );
        }
    }
    for (i, h) in dns.hosts.iter().enumerate() {
        let hp = format!("{p}/host[{}]", i + 1);
        if h.ip.is_none() {
            return err(
                format!("{hp}/@ip"),
                "",
                "missing IP address in DNS host record",
            );
        }
        if h.hostnames.is_empty() {
            return err(
                &hp,
                h.ip.map(|a| a.to_string()).unwrap_or_default(),
                "missing hostname in DNS host record",
            );
        }
        if let Some(j) = h.hostnames.iter().position(|n| n.trim().is_empty()) {
            return err(
                format!("{hp}/hostname[{}]", j + 1),
                "",
                "empty hostname in DNS host record",
            );
        }
    }
    Ok(())
}

fn route_rules(net: &Network, r: &Route, p: &str) -> R {
    match (r.family, r.address) {
        (Some(IpFamily::Ipv6), IpAddr::V4(_)) => {
            return err(
                format!("{p}/@address"),
                r.address,
                "ipv6 family specified for non-IPv6 address in route definition",
            )
        }
        (Some(IpFamily::Ipv4) | None, IpAddr::V6(_)) => {
            return err(
                format!("{p}/@address"),
                r.address,
                "IPv6 routes need family='ipv6' (a route without family is IPv4)",
            )
        }
        _ => {}
    }
    if !same_family(r.gateway, r.address) {
        return err(
            format!("{p}/@gateway"),
            r.gateway,
            "gateway and address of a route must be of the same family",
        );
    }
    if r.netmask.is_some() && r.prefix.is_some() {
        return err(
            p,
            r.address,
            "route definition cannot have both a prefix and a netmask",
        );
    }
    let max = if r.address.is_ipv4() { 32 } else { 128 };
    let prefix = match (r.netmask, r.prefix) {
        (Some(m), _) => {
            if r.address.is_ipv6() {
                return err(
                    format!("{p}/@netmask"),
                    m,
                    "netmask not allowed for an IPv6 route",
                );
            }
            match prefix_of_netmask(m) {
                Some(px) => px,
                None => {
                    return err(
                        format!("{p}/@netmask"),
                        m,
                        "netmask must be contiguous (ones followed by zeros)",
                    )
                }
            }
        }
        (None, Some(px)) if px > max => {
            return err(
                format!("{p}/@prefix"),
                px,
                format!("invalid route prefix (0-{max})"),
            )
        }
        (None, Some(px)) => px,
        // libvirt treats a route without prefix or netmask as prefix 0.
        (None, None) => 0,
    };
    if network_addr(r.address, prefix) != r.address {
        return err(
            format!("{p}/@address"),
            r.address,
            format!("address in route definition is not a network address for prefix {prefix}"),
        );
    }
    if r.metric == Some(0) {
        return err(
            format!("{p}/@metric"),
            0,
            "route metric zero is not permitted",
        );
    }
    let reachable = net.ips.iter().any(|ip| {
        ip.prefix_len()
            .is_some_and(|px| in_subnet(r.gateway, ip.address, px))
    });
    if !reachable {
        return err(
            format!("{p}/@gateway"),
            r.gateway,
            "unreachable static route gateway (not inside any <ip> subnet of the network)",
        );
    }
    Ok(())
}
