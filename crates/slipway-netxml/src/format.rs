//! Formatting, byte for byte as libvirt's `virNetworkDefFormatBuf` (libvirt 9.0):
//! two-space indentation, single-quoted attributes, libvirt's fixed element
//! order (metadata, forward, bridge, mtu, mac, domain, dns, vlan,
//! bandwidth, port, ip…, route…, virtualport, portgroup…, dnsmasq:options)
//! whatever the order of the input.

use std::net::IpAddr;

use crate::model::*;
use crate::netdev::{write_bandwidth, write_virtualport, write_vlan};
use crate::parse::DNSMASQ_NS;
use crate::tree::{esc, yes_no, Tag, XmlWriter};
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

fn lease_line(b: &mut XmlWriter, lease: &Lease) {
    let unit = lease.unit.unwrap_or(LeaseUnit::Minutes);
    b.empty(
        Tag::new("lease")
            .attr("expiry", lease.expiry)
            .opt("unit", (lease.expiry != 0).then_some(unit.as_str())),
    );
}

/// An element that is self-closing without a lease and wraps it otherwise.
fn with_lease(b: &mut XmlWriter, tag: Tag, name: &str, lease: Option<&Lease>) {
    match lease {
        None => b.empty(tag),
        Some(l) => {
            b.start(tag);
            lease_line(b, l);
            b.end(name);
        }
    }
}

fn forward(b: &mut XmlWriter, f: &Forward) {
    // libvirt prints the first interface as dev= unless the pool is a PF's.
    let mut tag = Tag::new("forward")
        .opt("dev", f.dev().filter(|_| f.pf.is_none()).map(esc))
        .attr("mode", f.mode.as_str());
    if f.mode == ForwardMode::Hostdev {
        tag = tag.attr("managed", yes_no(f.managed.unwrap_or(false)));
    }
    if f.interfaces.is_empty()
        && f.pci_addresses.is_empty()
        && f.pf.is_none()
        && f.nat.is_none()
        && f.driver.is_none()
    {
        b.empty(tag);
        return;
    }
    b.start(tag);
    if let Some(d) = f.driver {
        b.empty(Tag::new("driver").attr("name", d.as_str()));
    }
    if let (ForwardMode::Nat, Some(nat)) = (f.mode, &f.nat) {
        let tag = Tag::new("nat").opt("ipv6", nat.ipv6.map(yes_no));
        if nat.address.is_none() && nat.port.is_none() {
            b.empty(tag);
        } else {
            b.start(tag);
            if let Some((start, end)) = nat.address {
                b.empty(Tag::new("address").attr("start", start).attr("end", end));
            }
            if let Some((start, end)) = nat.port {
                let end = Some(end).filter(|&e| e != 0);
                b.empty(Tag::new("port").attr("start", start).opt("end", end));
            }
            b.end("nat");
        }
    }
    if let Some(pf) = &f.pf {
        b.empty(Tag::new("pf").attr("dev", esc(pf)));
    }
    for dev in &f.interfaces {
        b.empty(Tag::new("interface").attr("dev", esc(dev)));
    }
    for a in &f.pci_addresses {
        b.line(&format!(
            "<address type='pci' domain='{:#06x}' bus='{:#04x}' slot='{:#04x}' function='{:#x}'/>",
            a.domain, a.bus, a.slot, a.function
        ));
    }
    b.end("forward");
}

fn dns(b: &mut XmlWriter, d: &Dns) {
    let records =
        !(d.forwarders.is_empty() && d.txts.is_empty() && d.srvs.is_empty() && d.hosts.is_empty());
    if d.enable.is_none() && d.forward_plain_names.is_none() && !records {
        return;
    }
    let tag = Tag::new("dns")
        .opt("enable", d.enable.map(yes_no))
        .opt("forwardPlainNames", d.forward_plain_names.map(yes_no));
    if !records {
        b.empty(tag);
        return;
    }
    b.start(tag);
    for f in &d.forwarders {
        b.empty(
            Tag::new("forwarder")
                .opt("domain", f.domain.as_deref().map(esc))
                .opt("addr", f.addr.map(addr)),
        );
    }
    for t in &d.txts {
        b.empty(
            Tag::new("txt")
                .attr("name", esc(&t.name))
                .attr("value", esc(&t.value)),
        );
    }
    for s in &d.srvs {
        // libvirt skips records lacking service or protocol.
        let (Some(service), Some(protocol)) = (&s.service, &s.protocol) else {
            continue;
        };
        let nonzero = |v: Option<u16>| v.filter(|&v| v != 0);
        b.empty(
            Tag::new("srv")
                .attr("service", esc(service))
                .attr("protocol", esc(protocol))
                .opt("domain", s.domain.as_deref().map(esc))
                .opt("target", s.target.as_deref().map(esc))
                .opt("port", nonzero(s.port))
                .opt("priority", nonzero(s.priority))
                .opt("weight", nonzero(s.weight)),
        );
    }
    for h in &d.hosts {
        b.start(Tag::new("host").opt("ip", h.ip.map(addr)));
        for name in &h.hostnames {
            b.text("hostname", name);
        }
        b.end("host");
    }
    b.end("dns");
}

fn ip(b: &mut XmlWriter, ip: &IpDef) {
    // libvirt always writes <ip> as an open and a close tag, even when empty.
    b.start(
        Tag::new("ip")
            .opt("family", ip.family.map(IpFamily::as_str))
            .attr("address", addr(ip.address))
            .opt("netmask", ip.netmask)
            .opt("prefix", ip.prefix.filter(|&p| p != 0))
            .opt("localPtr", ip.local_ptr.map(yes_no)),
    );
    if let Some(root) = &ip.tftp_root {
        b.empty(Tag::new("tftp").attr("root", esc(root)));
    }
    if let Some(d) = ip
        .dhcp
        .as_ref()
        .filter(|d| !(d.ranges.is_empty() && d.hosts.is_empty()))
    {
        b.start(Tag::new("dhcp"));
        for r in &d.ranges {
            let tag = Tag::new("range")
                .attr("start", addr(r.start))
                .attr("end", addr(r.end));
            with_lease(b, tag, "range", r.lease.as_ref());
        }
        for h in &d.hosts {
            // The MAC as written when it reads back as the same address.
            let mac = h.mac.map(|m| match &h.mac_text {
                Some(t) if t.parse::<MacAddr>() == Ok(m) => esc(t),
                _ => m.to_string(),
            });
            let tag = Tag::new("host")
                .opt("mac", mac)
                .opt("id", h.id.as_deref().map(esc))
                .opt("name", h.name.as_deref().map(esc))
                .opt("ip", h.ip.map(addr));
            with_lease(b, tag, "host", h.lease.as_ref());
        }
        if let Some(bp) = &d.bootp {
            b.empty(
                Tag::new("bootp")
                    .attr("file", esc(&bp.file))
                    .opt("server", bp.server.map(addr)),
            );
        }
        b.end("dhcp");
    }
    b.end("ip");
}

fn route(b: &mut XmlWriter, r: &Route) {
    b.empty(
        Tag::new("route")
            .opt("family", r.family.map(IpFamily::as_str))
            .attr("address", addr(r.address))
            .opt("netmask", r.netmask)
            .opt("prefix", r.prefix)
            .attr("gateway", addr(r.gateway))
            .opt("metric", r.metric.filter(|&m| m != 0)),
    );
}

fn portgroup(b: &mut XmlWriter, pg: &PortGroup) {
    b.start(
        Tag::new("portgroup")
            .attr("name", esc(&pg.name))
            .opt("default", pg.default.then_some("yes"))
            .opt("trustGuestRxFilters", pg.trust_guest_rx_filters.map(yes_no)),
    );
    if let Some(v) = &pg.vlan {
        write_vlan(b, v);
    }
    if let Some(v) = &pg.virtualport {
        write_virtualport(b, v);
    }
    if let Some(bw) = &pg.bandwidth {
        write_bandwidth(b, bw);
    }
    b.end("portgroup");
}

pub(crate) fn format(net: &Network) -> String {
    let mut b = XmlWriter::default();
    let dnsmasq = !net.dnsmasq_options.is_empty();
    b.start(
        Tag::new("network")
            .opt("xmlns:dnsmasq", dnsmasq.then_some(DNSMASQ_NS))
            .opt("ipv6", (net.ipv6 == Some(true)).then_some("yes"))
            .opt(
                "trustGuestRxFilters",
                net.trust_guest_rx_filters.map(yes_no),
            ),
    );
    b.text("name", &net.name);
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
        let stp = if bridge.stp.unwrap_or(true) {
            "on"
        } else {
            "off"
        };
        b.empty(
            Tag::new("bridge")
                .opt("name", bridge.name.as_deref().map(esc))
                .opt("zone", bridge.zone.as_deref().map(esc))
                .opt("stp", own_bridge.then_some(stp))
                .opt("delay", own_bridge.then_some(bridge.delay.unwrap_or(0)))
                .opt(
                    "macTableManager",
                    bridge.mac_table_manager.map(|m| m.as_str()),
                ),
        );
    }
    if let Some(m) = net.mtu.filter(|&m| m != 0) {
        b.empty(Tag::new("mtu").attr("size", m));
    }
    if let Some(m) = net.mac {
        b.empty(Tag::new("mac").attr("address", m));
    }
    if let Some(d) = &net.domain {
        b.empty(
            Tag::new("domain")
                .attr("name", esc(&d.name))
                .opt("localOnly", d.local_only.map(yes_no)),
        );
    }
    if let Some(d) = &net.dns {
        dns(&mut b, d);
    }
    if let Some(v) = &net.vlan {
        write_vlan(&mut b, v);
    }
    if let Some(bw) = &net.bandwidth {
        write_bandwidth(&mut b, bw);
    }
    if let Some(iso) = net.port_isolated {
        b.empty(Tag::new("port").attr("isolated", yes_no(iso)));
    }
    for i in &net.ips {
        ip(&mut b, i);
    }
    for r in &net.routes {
        route(&mut b, r);
    }
    if let Some(v) = &net.virtualport {
        write_virtualport(&mut b, v);
    }
    for pg in &net.portgroups {
        portgroup(&mut b, pg);
    }
    if dnsmasq {
        b.start(Tag::new("dnsmasq:options"));
        for o in &net.dnsmasq_options {
            b.empty(Tag::new("dnsmasq:option").attr("value", esc(o)));
        }
        b.end("dnsmasq:options");
    }
    b.end("network");
    b.out
}
