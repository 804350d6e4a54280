//! Formatting, byte for byte as libvirt's `virNetworkDefFormatBuf` (libvirt 9.0):
//! two-space indentation, single-quoted attributes, libvirt's fixed element
//! order (metadata, forward, bridge, mtu, mac, domain, dns, vlan,
//! bandwidth, port, ip…, route…, virtualport, portgroup…, dnsmasq:options)
//! whatever the order of the input.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::model::*;
use crate::netdev::{write_bandwidth, write_virtualport, write_vlan};
use crate::parse::DNSMASQ_NS;
use crate::tree::esc;
use crate::MacAddr;

/// An address as libvirt prints it (glibc's `inet_ntop`). That matches
/// Rust's RFC 5952 form except for IPv4-compatible addresses (first 96
/// bits zero, not `::` or `::x`), which glibc prints in dotted form.
fn addr(a: IpAddr) -> String {
    if let IpAddr::V6(v6) = a {
        let w = v6.segments();
        if w[..6].iter().all(|&x| x == 0) && w[6] != 0 {
            let [.., a, b, c, d] = v6.octets();
            return format!("::{a}.{b}.{c}.{d}");
        }
    }
    a.to_string()
}

/// A buffer with libvirt's indentation handling.
struct Buf {
    out: String,
    indent: usize,
}

impl Buf {
    /// Appends one line at the current indentation.
    fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push(' ');
        }
        self.out.push_str(text);
        self.out.push('\n');
    }
}

/// libvirt's spelling of a tristate that is set.
pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn family_str(f: IpFamily) -> &'static str {
    match f {
        IpFamily::Ipv4 => "ipv4",
        IpFamily::Ipv6 => "ipv6",
    }
}

fn lease_line(b: &mut Buf, lease: &Lease) {
    match lease.unit {
        Some(unit) if lease.expiry != 0 => b.line(&format!(
            "<lease expiry='{}' unit='{}'/>",
            lease.expiry,
            unit.as_str()
        )),
        None if lease.expiry != 0 => b.line(&format!(
            "<lease expiry='{}' unit='minutes'/>",
            lease.expiry
        )),
        _ => b.line("<lease expiry='0'/>"),
    }
}

/// An element that is self-closing without a lease and wraps it otherwise.
fn with_lease(b: &mut Buf, open: &str, close: &str, lease: Option<&Lease>) {
    match lease {
        None => b.line(&format!("{open}/>")),
        Some(l) => {
            b.line(&format!("{open}>"));
            b.indent += 2;
            lease_line(b, l);
            b.indent -= 2;
            b.line(close);
        }
    }
}

fn forward(b: &mut Buf, f: &Forward) {
    let mut open = String::from("<forward");
    // libvirt prints the first interface as dev= unless the pool is a PF's.
    if let Some(dev) = f.dev().filter(|_| f.pf.is_none()) {
        let _ = write!(open, " dev='{}'", esc(dev));
    }
    let _ = write!(open, " mode='{}'", f.mode.as_str());
    if f.mode == ForwardMode::Hostdev {
        let _ = write!(open, " managed='{}'", yes_no(f.managed.unwrap_or(false)));
    }
    if f.interfaces.is_empty()
        && f.pci_addresses.is_empty()
        && f.pf.is_none()
        && f.nat.is_none()
        && f.driver.is_none()
    {
        open.push_str("/>");
        b.line(&open);
        return;
    }
    open.push('>');
    b.line(&open);
    b.indent += 2;
    if let Some(d) = f.driver {
        b.line(&format!("<driver name='{}'/>", d.as_str()));
    }
    if let (ForwardMode::Nat, Some(nat)) = (f.mode, &f.nat) {
        let mut open = String::from("<nat");
        if let Some(v6) = nat.ipv6 {
            let _ = write!(open, " ipv6='{}'", yes_no(v6));
        }
        if nat.address.is_none() && nat.port.is_none() {
            open.push_str("/>");
            b.line(&open);
        } else {
            open.push('>');
            b.line(&open);
            b.indent += 2;
            if let Some((start, end)) = nat.address {
                b.line(&format!("<address start='{start}' end='{end}'/>"));
            }
            if let Some((start, end)) = nat.port {
                if end != 0 {
                    b.line(&format!("<port start='{start}' end='{end}'/>"));
                } else {
                    b.line(&format!("<port start='{start}'/>"));
                }
            }
            b.indent -= 2;
            b.line("</nat>");
        }
    }
    if let Some(pf) = &f.pf {
        b.line(&format!("<pf dev='{}'/>", esc(pf)));
    }
    for dev in &f.interfaces {
        b.line(&format!("<interface dev='{}'/>", esc(dev)));
    }
    for a in &f.pci_addresses {
        b.line(&format!(
            "<address type='pci' domain='{:#06x}' bus='{:#04x}' slot='{:#04x}' function='{:#x}'/>",
            a.domain, a.bus, a.slot, a.function
        ));
    }
    b.indent -= 2;
    b.line("</forward>");
}

fn dns(b: &mut Buf, d: &Dns) {
    let records =
        !(d.forwarders.is_empty() && d.txts.is_empty() && d.srvs.is_empty() && d.hosts.is_empty());
    if d.enable.is_none() && d.forward_plain_names.is_none() && !records {
        return;
    }
    let mut open = String::from("<dns");
    if let Some(e) = d.enable {
        let _ = write!(open, " enable='{}'", yes_no(e));
    }
    if let Some(f) = d.forward_plain_names {
        let _ = write!(open, " forwardPlainNames='{}'", yes_no(f));
    }
    if !records {
        open.push_str("/>");
        b.line(&open);
        return;
    }
    open.push('>');
    b.line(&open);
    b.indent += 2;
    for f in &d.forwarders {
        let mut l = String::from("<forwarder");
        if let Some(dom) = &f.domain {
            let _ = write!(l, " domain='{}'", esc(dom));
        }
        if let Some(a) = f.addr {
            let _ = write!(l, " addr='{}'", addr(a));
        }
        l.push_str("/>");
        b.line(&l);
    }
    for t in &d.txts {
        b.line(&format!(
            "<txt name='{}' value='{}'/>",
            esc(&t.name),
            esc(&t.value)
        ));
    }
    for s in &d.srvs {
        // libvirt skips records lacking service or protocol.
        let (Some(service), Some(protocol)) = (&s.service, &s.protocol) else {
            continue;
        };
        let mut l = format!(
            "<srv service='{}' protocol='{}'",
            esc(service),
            esc(protocol)
        );
        if let Some(v) = &s.domain {
            let _ = write!(l, " domain='{}'", esc(v));
        }
        if let Some(v) = &s.target {
            let _ = write!(l, " target='{}'", esc(v));
        }
        for (name, v) in [
            ("port", s.port),
            ("priority", s.priority),
            ("weight", s.weight),
        ] {
            if let Some(v) = v.filter(|&v| v != 0) {
                let _ = write!(l, " {name}='{v}'");
            }
        }
        l.push_str("/>");
        b.line(&l);
    }
    for h in &d.hosts {
        match h.ip {
            Some(ip) => b.line(&format!("<host ip='{}'>", addr(ip))),
            None => b.line("<host>"),
        }
        b.indent += 2;
        for name in &h.hostnames {
            b.line(&format!("<hostname>{}</hostname>", esc(name)));
        }
        b.indent -= 2;
        b.line("</host>");
    }
    b.indent -= 2;
    b.line("</dns>");
}

fn ip(b: &mut Buf, ip: &IpDef) {
    let mut open = String::from("<ip");
    if let Some(f) = ip.family {
        let _ = write!(open, " family='{}'", family_str(f));
    }
    let _ = write!(open, " address='{}'", addr(ip.address));
    if let Some(m) = ip.netmask {
        let _ = write!(open, " netmask='{m}'");
    }
    if let Some(p) = ip.prefix.filter(|&p| p != 0) {
        let _ = write!(open, " prefix='{p}'");
    }
    if let Some(l) = ip.local_ptr {
        let _ = write!(open, " localPtr='{}'", yes_no(l));
    }
    open.push('>');
    // libvirt always writes <ip> as an open and a close tag, even when empty.
    b.line(&open);
    b.indent += 2;
    if let Some(root) = &ip.tftp_root {
        b.line(&format!("<tftp root='{}'/>", esc(root)));
    }
    if let Some(d) = ip
        .dhcp
        .as_ref()
        .filter(|d| !(d.ranges.is_empty() && d.hosts.is_empty()))
    {
        b.line("<dhcp>");
        b.indent += 2;
        for r in &d.ranges {
            with_lease(
                b,
                &format!("<range start='{}' end='{}'", addr(r.start), addr(r.end)),
                "</range>",
                r.lease.as_ref(),
            );
        }
        for h in &d.hosts {
            let mut open = String::from("<host");
            if let Some(m) = h.mac {
                match &h.mac_text {
                    Some(t) if t.parse::<MacAddr>() == Ok(m) => {
                        let _ = write!(open, " mac='{}'", esc(t));
                    }
                    _ => {
                        let _ = write!(open, " mac='{m}'");
                    }
                }
            }
            if let Some(id) = &h.id {
                let _ = write!(open, " id='{}'", esc(id));
            }
            if let Some(n) = &h.name {
                let _ = write!(open, " name='{}'", esc(n));
            }
            if let Some(a) = h.ip {
                let _ = write!(open, " ip='{}'", addr(a));
            }
            with_lease(b, &open, "</host>", h.lease.as_ref());
        }
        if let Some(bp) = &d.bootp {
            let mut l = format!("<bootp file='{}'", esc(&bp.file));
            if let Some(s) = bp.server {
                let _ = write!(l, " server='{}'", addr(s));
            }
            l.push_str("/>");
            b.line(&l);
        }
        b.indent -= 2;
        b.line("</dhcp>");
    }
    b.indent -= 2;
    b.line("</ip>");
}

fn route(b: &mut Buf, r: &Route) {
    let mut l = String::from("<route");
    if let Some(f) = r.family {
        let _ = write!(l, " family='{}'", family_str(f));
    }
    let _ = write!(l, " address='{}'", addr(r.address));
    if let Some(m) = r.netmask {
        let _ = write!(l, " netmask='{m}'");
    }
    if let Some(p) = r.prefix {
        let _ = write!(l, " prefix='{p}'");
    }
    let _ = write!(l, " gateway='{}'", addr(r.gateway));
    if let Some(m) = r.metric.filter(|&m| m != 0) {
        let _ = write!(l, " metric='{m}'");
    }
    l.push_str("/>");
    b.line(&l);
}

fn portgroup(b: &mut Buf, pg: &PortGroup) {
    let mut open = format!("<portgroup name='{}'", esc(&pg.name));
    if pg.default {
        open.push_str(" default='yes'");
    }
    if let Some(t) = pg.trust_guest_rx_filters {
        let _ = write!(open, " trustGuestRxFilters='{}'", yes_no(t));
    }
    open.push('>');
    b.line(&open);
    b.indent += 2;
    if let Some(v) = &pg.vlan {
        write_vlan(&mut b.out, b.indent, v);
    }
    if let Some(v) = &pg.virtualport {
        write_virtualport(&mut b.out, b.indent, v);
    }
    if let Some(bw) = &pg.bandwidth {
        write_bandwidth(&mut b.out, b.indent, bw);
    }
    b.indent -= 2;
    b.line("</portgroup>");
}

pub(crate) fn format(net: &Network) -> String {
    let mut b = Buf {
        out: String::new(),
        indent: 0,
    };
    let mut open = String::from("<network");
    if !net.dnsmasq_options.is_empty() {
        let _ = write!(open, " xmlns:dnsmasq='{DNSMASQ_NS}'");
    }
    if net.ipv6 == Some(true) {
        open.push_str(" ipv6='yes'");
    }
    if let Some(t) = net.trust_guest_rx_filters {
        let _ = write!(open, " trustGuestRxFilters='{}'", yes_no(t));
    }
    open.push('>');
    b.line(&open);
    b.indent = 2;
    b.line(&format!("<name>{}</name>", esc(&net.name)));
    if let Some(u) = net.uuid {
        b.line(&format!("<uuid>{}</uuid>", u.hyphenated()));
    }
    if let Some(m) = &net.metadata {
        let mut text = String::new();
        m.write(&mut text, b.indent / 2);
        b.line(&text);
    }
    if let Some(f) = &net.forward {
        forward(&mut b, f);
    }
    let own_bridge = net.has_own_bridge();
    let bridge = net.bridge.clone().unwrap_or_default();
    if own_bridge || bridge.name.is_some() || bridge.mac_table_manager.is_some() {
        let mut l = String::from("<bridge");
        if let Some(n) = &bridge.name {
            let _ = write!(l, " name='{}'", esc(n));
        }
        if let Some(z) = &bridge.zone {
            let _ = write!(l, " zone='{}'", esc(z));
        }
        if own_bridge {
            let stp = if bridge.stp.unwrap_or(true) {
                "on"
            } else {
                "off"
            };
            let _ = write!(l, " stp='{stp}' delay='{}'", bridge.delay.unwrap_or(0));
        }
        if let Some(m) = bridge.mac_table_manager {
            let _ = write!(l, " macTableManager='{}'", m.as_str());
        }
        l.push_str("/>");
        b.line(&l);
    }
    if let Some(m) = net.mtu.filter(|&m| m != 0) {
        b.line(&format!("<mtu size='{m}'/>"));
    }
    if let Some(m) = net.mac {
        b.line(&format!("<mac address='{m}'/>"));
    }
    if let Some(d) = &net.domain {
        match d.local_only {
            Some(l) => b.line(&format!(
                "<domain name='{}' localOnly='{}'/>",
                esc(&d.name),
                yes_no(l)
            )),
            None => b.line(&format!("<domain name='{}'/>", esc(&d.name))),
        }
    }
    if let Some(d) = &net.dns {
        dns(&mut b, d);
    }
    if let Some(v) = &net.vlan {
        write_vlan(&mut b.out, b.indent, v);
    }
    if let Some(bw) = &net.bandwidth {
        write_bandwidth(&mut b.out, b.indent, bw);
    }
    if let Some(iso) = net.port_isolated {
        b.line(&format!("<port isolated='{}'/>", yes_no(iso)));
    }
    for i in &net.ips {
        ip(&mut b, i);
    }
    for r in &net.routes {
        route(&mut b, r);
    }
    if let Some(v) = &net.virtualport {
        write_virtualport(&mut b.out, b.indent, v);
    }
    for pg in &net.portgroups {
        portgroup(&mut b, pg);
    }
    if !net.dnsmasq_options.is_empty() {
        b.line("<dnsmasq:options>");
        b.indent += 2;
        for o in &net.dnsmasq_options {
            b.line(&format!("<dnsmasq:option value='{}'/>", esc(o)));
        }
        b.indent -= 2;
        b.line("</dnsmasq:options>");
    }
    b.indent = 0;
    b.line("</network>");
    b.out
}
