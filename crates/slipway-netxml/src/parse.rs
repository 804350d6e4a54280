//! Parsing a `<network>` document: the element tree ([`crate::tree`]) read
//! into the model by libvirt's rules, reporting elements and attributes it
//! did not use. Errors carry the line and column of the element.

use std::net::{IpAddr, Ipv4Addr};

mod ovn;
mod port;

pub(crate) use port::DNSMASQ_NS;

use crate::metadata::{decls, Metadata};
use crate::model::*;
use crate::tree::{read_tree, Located, Node, Report, TreeReader};
use crate::{MacAddr, XmlError};

/// Parts of libvirt's network XML that slipway does not model: libvirt
/// would use them, slipway drops them (and says so).
const LIBVIRT_ONLY: &[&str] = &["/network/@connections"];

/// Marks paths of libvirt features slipway does not support, so a warning
/// does not call them unknown.
fn annotate(path: String) -> String {
    if LIBVIRT_ONLY.contains(&path.as_str()) {
        format!("{path} (a libvirt feature slipway does not support)")
    } else {
        path
    }
}

/// Repeated elements of which libvirt 9.0 keeps the last (it reads them in a
/// loop that overwrites); of all others it reads the first.
const LAST_WINS: &[&str] = &["lease", "bootp"];

/// Attributes libvirt reads through XPath `string()`, where an empty value
/// is the same as no attribute at all: (element path, attributes).
const EMPTY_IS_ABSENT: &[(&[&str], &[&str])] = &[
    (&[], &["ipv6"]),
    (&["portgroup"], &["name", "default"]),
    (
        &["bridge"],
        &["name", "zone", "stp", "delay", "macTableManager"],
    ),
    (&["mac"], &["address"]),
    (&["forward"], &["mode", "dev"]),
    (&["ip"], &["family", "address", "netmask"]),
    (&["ip", "tftp"], &["root"]),
];

/// Drops the empty attributes listed in [`EMPTY_IS_ABSENT`] from the tree.
fn drop_empty_attrs(root: &mut Node) {
    fn visit(node: &mut Node, path: &[&str], attrs: &[&str]) {
        match path.split_first() {
            None => node
                .attrs
                .retain(|(k, v)| !(v.is_empty() && attrs.contains(&k.as_str()))),
            Some((first, rest)) => {
                for c in node.children.iter_mut().filter(|c| c.name == *first) {
                    visit(c, rest, attrs);
                }
            }
        }
    }
    for (path, attrs) in EMPTY_IS_ABSENT {
        visit(root, path, attrs);
    }
}

/// Walks the tree, tracking paths and collecting what it did not understand.
type Walker<'a> = TreeReader<Located<'a>>;

impl Walker<'_> {
    /// Records attributes and child elements of `node` outside the known
    /// lists, repeated children where libvirt reads only the first
    /// (`single`), and stray text.
    fn check_libvirt(
        &mut self,
        node: &Node,
        path: &str,
        attrs: &[&str],
        children: &[&str],
        single: &[&str],
    ) {
        for k in Self::unknown_attrs(node, attrs) {
            // Namespace declarations are not data.
            if k != "xmlns" && !k.starts_with("xmlns:") {
                self.unknown.push(annotate(format!("{path}/@{k}")));
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for c in &node.children {
            if !children.contains(&c.name.as_str()) {
                self.unknown.push(annotate(format!("{path}/{}", c.name)));
            } else if single.contains(&c.name.as_str()) {
                if seen.contains(&c.name.as_str()) {
                    let which = if LAST_WINS.contains(&c.name.as_str()) {
                        "last"
                    } else {
                        "first"
                    };
                    self.unknown.push(format!(
                        "{path}/{} (repeated; only the {which} is used)",
                        c.name
                    ));
                }
                seen.push(&c.name);
            }
        }
        if !node.text.trim().is_empty() {
            self.unknown.push(format!("{path}/text()"));
        }
    }

    /// For elements whose content is text (`<name>`, `<hostname>`…): any
    /// attribute or child element is unknown.
    fn check_text(&mut self, node: &Node, path: &str) {
        for (k, _) in &node.attrs {
            self.unknown.push(format!("{path}/@{k}"));
        }
        for c in &node.children {
            self.unknown.push(format!("{path}/{}", c.name));
        }
    }

    /// The child `child` of `node` (at `path`), of which libvirt refuses
    /// more than one.
    fn only_one<'n>(
        &self,
        node: &'n Node,
        path: &str,
        child: &'n str,
    ) -> Result<Option<&'n Node>, XmlError> {
        let mut kids = node.kids(child);
        let first = kids.next();
        match kids.next() {
            Some(second) => Err(self.report.structure(
                second,
                path,
                format!("only one <{child}> element is allowed in <{}>", node.name),
            )),
            None => Ok(first),
        }
    }

    fn ip(&self, node: &Node, path: &str, name: &str) -> Result<Option<IpAddr>, XmlError> {
        self.parsed(node, path, name, "an IPv4 or IPv6 address")
    }

    fn ipv4(&self, node: &Node, path: &str, name: &str) -> Result<Option<Ipv4Addr>, XmlError> {
        self.parsed(node, path, name, "an IPv4 address")
    }

    /// `v`, the value of attribute `name`, which must be there.
    fn present<T>(&self, node: &Node, path: &str, name: &str, v: Option<T>) -> Result<T, XmlError> {
        v.ok_or_else(|| self.report.missing(node, path, name))
    }

    fn string(&self, node: &Node, name: &str) -> Option<String> {
        node.attr(name).map(str::to_string)
    }

    /// A `family` attribute: `ipv4` or `ipv6`.
    fn family(&self, node: &Node, path: &str) -> Result<Option<IpFamily>, XmlError> {
        self.choice(
            node,
            path,
            "family",
            &IpFamily::KEYWORDS,
            "'ipv4' or 'ipv6'",
        )
    }

    fn network(&mut self, root: &Node) -> Result<Network, XmlError> {
        if root.name != "network" {
            return Err(self.report.structure(
                root,
                &format!("/{}", root.name),
                format!("expecting root element of 'network', not '{}'", root.name),
            ));
        }
        let p = "/network";
        let (dnsmasq_names, dnsmasq_options) = self.dnsmasq_options(root)?;
        let mut known = vec![
            "name",
            "uuid",
            "forward",
            "bridge",
            "mtu",
            "mac",
            "domain",
            "dns",
            "ip",
            "route",
            "metadata",
            "bandwidth",
            "vlan",
            "port",
            "virtualport",
            "portgroup",
        ];
        known.extend(dnsmasq_names.iter().map(String::as_str));
        self.check_libvirt(
            root,
            p,
            &["ipv6", "trustGuestRxFilters"],
            &known,
            &[
                "name",
                "uuid",
                "forward",
                "bridge",
                "mac",
                "domain",
                "dns",
                "metadata",
                "bandwidth",
                "vlan",
                "port",
                "virtualport",
            ],
        );
        let name_node = root.kid("name").ok_or_else(|| {
            self.report
                .structure(root, p, "missing required element <name>")
        })?;
        self.check_text(name_node, "/network/name");
        let name = name_node.string_value.clone();

        let uuid = match root.kid("uuid") {
            None => None,
            Some(n) => {
                self.check_text(n, "/network/uuid");
                let text = n.string_value.trim();
                Some(uuid::Uuid::parse_str(text).map_err(|_| {
                    self.report.value_err(
                        n,
                        "/network/uuid",
                        text,
                        "a UUID like 8ee3cc4f-5ea0-4a4b-b5a7-0d9ea38a6d61",
                    )
                })?)
            }
        };
        // libvirt prints only ipv6='yes'; 'no' is the same as absent.
        let ipv6 = self.yes_no(root, p, "ipv6")?.filter(|&v| v);

        let forward = self.kid_with(root, "forward", Self::forward)?;
        let own_bridge = forward.as_ref().is_none_or(|f| f.mode.has_own_bridge());
        let mut bridge = self.kid_with(root, "bridge", |w, n| w.bridge(n).map(Some))?;
        if own_bridge {
            // libvirt always has STP and delay values for networks with a
            // bridge of their own (on and 0 unless given) and prints them;
            // keeping them in the model makes parse(format(x)) == x.
            let b = bridge.get_or_insert_with(Bridge::default);
            b.stp.get_or_insert(true);
            b.delay.get_or_insert(0);
        } else if bridge.as_ref().is_some_and(|b| *b == Bridge::default()) {
            bridge = None;
        }

        // libvirt reads `string(./mtu/@size)`: the size of the first <mtu>
        // that has one (an empty one meaning none).
        let path = "/network/mtu";
        for n in root.kids("mtu") {
            self.check_libvirt(n, path, &["size"], &[], &[]);
        }
        if root.kids("mtu").count() > 1 {
            self.unknown.push(format!(
                "{path} (repeated; only the first with a size is used)"
            ));
        }
        let mtu = match root.kids("mtu").find(|n| n.attr("size").is_some()) {
            Some(n) if n.attr("size") != Some("") => self
                .parsed::<u32>(n, path, "size", "an MTU in bytes")?
                .filter(|&m| m != 0),
            _ => None,
        };
        let mac = self.kid_with(root, "mac", |w, n| {
            let path = "/network/mac";
            w.check_libvirt(n, path, &["address"], &[], &[]);
            w.parsed::<MacAddr>(n, path, "address", "a MAC address like 52:54:00:12:34:56")
        })?;
        let domain = self.kid_with(root, "domain", |w, n| {
            let path = "/network/domain";
            w.check_libvirt(n, path, &["name", "localOnly"], &[], &[]);
            let local_only = w.yes_no(n, path, "localOnly")?;
            // libvirt forgets a <domain> without a name.
            Ok(w.string(n, "name").map(|name| Domain { name, local_only }))
        })?;
        let dns = self.kid_with(root, "dns", Self::dns)?;
        let mut ips = Vec::new();
        for n in root.kids("ip") {
            ips.push(self.ip_def(n)?);
        }
        let mut routes = Vec::new();
        for n in root.kids("route") {
            routes.push(self.route(n)?);
        }
        let trust_guest_rx_filters = self.yes_no(root, p, "trustGuestRxFilters")?;
        let mut ovn = None;
        let metadata = match root.kid("metadata") {
            Some(n) => {
                // Declarations on <network> are in scope in <metadata>
                // and are written onto it.
                self.namespace_uris(root, "/network")?;
                self.metadata_uris(n, "/network/metadata")?;
                ovn = self.ovn(n, &decls(root))?;
                let (m, dropped) = Metadata::from_node(n, &decls(root));
                self.unknown.extend(dropped);
                Some(m)
            }
            None => None,
        };
        let vlan = self.kid_with(root, "vlan", |w, n| w.vlan(n, "/network/vlan").map(Some))?;
        let bandwidth = self.kid_with(root, "bandwidth", |w, n| {
            w.bandwidth(
                n,
                "/network/bandwidth",
                crate::netdev::BandwidthUse::Network,
            )
        })?;
        let port_isolated = self.kid_with(root, "port", Self::port_options)?;
        let virtualport = self.kid_with(root, "virtualport", |w, n| {
            w.virtualport(n, "/network/virtualport", true)
        })?;
        let mut portgroups = Vec::new();
        for n in root.kids("portgroup") {
            portgroups.push(self.portgroup(n)?);
        }
        Ok(Network {
            name,
            uuid,
            ipv6,
            trust_guest_rx_filters,
            metadata,
            forward,
            bridge,
            mtu,
            mac,
            domain,
            dns,
            vlan,
            bandwidth,
            port_isolated,
            ips,
            routes,
            virtualport,
            portgroups,
            dnsmasq_options,
            unknown: std::mem::take(&mut self.unknown),
            ovn,
        })
    }

    /// `<forward>`; `None` for libvirt's `mode='none'`, an isolated network.
    fn forward(&mut self, n: &Node) -> Result<Option<Forward>, XmlError> {
        let p = "/network/forward";
        self.check_libvirt(
            n,
            p,
            &["mode", "dev", "managed"],
            &["nat", "interface", "pf", "address", "driver"],
            &["driver"],
        );
        let mode = match n.attr("mode") {
            None => ForwardMode::Nat,
            Some("none") => {
                if n.kid("nat").is_some() {
                    return Err(self.report.structure(
                        n,
                        p,
                        "the <nat> element can only be used when <forward> 'mode' is 'nat'",
                    ));
                }
                if n.attr("dev").is_some() || n.kid("interface").is_some() {
                    self.unknown.push(format!(
                        "{p}/interface (dropped: mode='none' is an isolated network)"
                    ));
                }
                return Ok(None);
            }
            Some(m) => m.parse::<ForwardMode>().map_err(|_| {
                self.report.value_err(
                    n,
                    "/network/forward/@mode",
                    m,
                    "one of nat, route, open, bridge, private, vepa, passthrough, hostdev, none",
                )
            })?,
        };
        let nat = match self.only_one(n, p, "nat")? {
            // libvirt refuses any <nat>, even an empty one, outside nat mode.
            Some(nn) if mode != ForwardMode::Nat => {
                return Err(self.report.structure(
                    nn,
                    "/network/forward/nat",
                    format!(
                        "the <nat> element can only be used when <forward> 'mode' is 'nat', not '{mode}'"
                    ),
                ))
            }
            Some(nn) => self.nat(nn)?,
            None => None,
        };
        // libvirt: anything but "yes" (any case) is no; printed for hostdev only.
        let managed = (mode == ForwardMode::Hostdev).then(|| {
            n.attr("managed")
                .is_some_and(|m| m.eq_ignore_ascii_case("yes"))
        });
        let driver = self.kid_with(n, "driver", |w, d| {
            let dp = "/network/forward/driver";
            w.check_libvirt(d, dp, &["name"], &[], &[]);
            match d.attr("name") {
                None | Some("") => Ok(None),
                Some(_) => w.choice(d, dp, "name", &HostdevDriver::KEYWORDS, "'kvm' or 'vfio'"),
            }
        })?;
        let pfs: Vec<&Node> = n.kids("pf").collect();
        let addrs: Vec<&Node> = n.kids("address").collect();
        if n.attr("dev").is_some() && !(pfs.is_empty() && addrs.is_empty()) {
            return Err(self.report.structure(
                n,
                p,
                "the <forward> 'dev' attribute cannot be used when <address> or <pf> sub-elements are present",
            ));
        }
        let mut fwd = Forward {
            mode,
            nat,
            interfaces: Vec::new(),
            pf: None,
            pci_addresses: Vec::new(),
            managed,
            driver,
        };
        // One kind of pool, in libvirt's order of preference; the others
        // are ignored (and reported).
        if n.attr("dev").is_some() || n.kid("interface").is_some() {
            fwd.interfaces = self.forward_interfaces(n)?;
            for (kind, nodes) in [("pf", &pfs), ("address", &addrs)] {
                if !nodes.is_empty() {
                    self.unknown.push(format!(
                        "{p}/{kind} (ignored: <interface> elements take precedence)"
                    ));
                }
            }
        } else if !addrs.is_empty() {
            for a in &addrs {
                let pci = self.pci_address(a)?;
                if fwd.pci_addresses.contains(&pci) {
                    return Err(self.report.structure(
                        a,
                        "/network/forward/address",
                        format!("PCI device '{pci}' can only be listed once"),
                    ));
                }
                fwd.pci_addresses.push(pci);
            }
            if !pfs.is_empty() {
                self.unknown.push(format!(
                    "{p}/pf (ignored: <address> elements take precedence)"
                ));
            }
        } else if let Some(pf) = self.only_one(n, p, "pf")? {
            let pp = "/network/forward/pf";
            self.check_libvirt(pf, pp, &["dev"], &[], &[]);
            fwd.pf = Some(self.present(pf, pp, "dev", self.string(pf, "dev"))?);
        }
        Ok(Some(fwd))
    }

    /// `<forward dev>` and the `<interface dev>` children, as one list.
    fn forward_interfaces(&mut self, n: &Node) -> Result<Vec<String>, XmlError> {
        let mut interfaces: Vec<String> = Vec::new();
        if let Some(dev) = n.attr("dev") {
            interfaces.push(dev.to_string());
        }
        for (i, ifn) in n.kids("interface").enumerate() {
            let ip = "/network/forward/interface";
            self.check_libvirt(ifn, ip, &["dev"], &[], &[]);
            let dev = self.present(ifn, ip, "dev", self.string(ifn, "dev"))?;
            if i == 0 && interfaces.len() == 1 {
                // <forward dev='x'> and a first <interface dev='x'/> name the same device.
                if interfaces[0] != dev {
                    return Err(self.report.structure(
                        ifn,
                        ip,
                        format!(
                            "<forward dev='{}'> must match first <interface dev='{dev}'/>",
                            interfaces[0]
                        ),
                    ));
                }
                continue;
            }
            if interfaces.contains(&dev) {
                return Err(self.report.structure(
                    ifn,
                    ip,
                    format!("interface '{dev}' can only be listed once"),
                ));
            }
            interfaces.push(dev);
        }
        Ok(interfaces)
    }

    /// `<address type='pci' domain bus slot function>`; numbers as C's
    /// `strtoul(…, 0)` reads them (0x hex, leading-0 octal, decimal), a
    /// missing one is 0.
    fn pci_address(&mut self, a: &Node) -> Result<PciAddress, XmlError> {
        let ap = "/network/forward/address";
        self.check_libvirt(
            a,
            ap,
            &["type", "domain", "bus", "slot", "function", "multifunction"],
            &[],
            &[],
        );
        match a.attr("type") {
            Some("pci") => {}
            None => return Err(self.report.structure(a, ap, "missing address type")),
            Some(t) => return Err(self.report.value_err(a, &format!("{ap}/@type"), t, "'pci'")),
        }
        let num = |w: &Self, name: &str, max: u32| -> Result<u32, XmlError> {
            let Some(v) = a.attr(name) else {
                return Ok(0);
            };
            match crate::tree::c_uint(v) {
                Some(x) if x <= max => Ok(x),
                _ => Err(w.report.value_err(
                    a,
                    &format!("{ap}/@{name}"),
                    v,
                    &format!("a number from 0 to {max:#x}"),
                )),
            }
        };
        // The limits make the narrowing conversions below lossless.
        Ok(PciAddress {
            domain: num(self, "domain", u32::MAX)?,
            bus: num(self, "bus", 0xff)? as u8,
            slot: num(self, "slot", 0x1f)? as u8,
            function: num(self, "function", 7)? as u8,
        })
    }

    fn nat(&mut self, n: &Node) -> Result<Option<Nat>, XmlError> {
        let p = "/network/forward/nat";
        self.check_libvirt(n, p, &["ipv6"], &["address", "port"], &[]);
        let ipv6 = self.yes_no(n, p, "ipv6")?;
        let address = match self.only_one(n, p, "address")? {
            Some(a) => {
                let ap = "/network/forward/nat/address";
                self.check_libvirt(a, ap, &["start", "end"], &[], &[]);
                let start = self.ipv4(a, ap, "start")?;
                let end = self.ipv4(a, ap, "end")?;
                Some((
                    self.present(a, ap, "start", start)?,
                    self.present(a, ap, "end", end)?,
                ))
            }
            None => None,
        };
        let port = match self.only_one(n, p, "port")? {
            Some(pn) => {
                let pp = "/network/forward/nat/port";
                self.check_libvirt(pn, pp, &["start", "end"], &[], &[]);
                let start = self.parsed::<u16>(pn, pp, "start", "a port number 0-65535")?;
                let end = self.parsed::<u16>(pn, pp, "end", "a port number 0-65535")?;
                Some((
                    self.present(pn, pp, "start", start)?,
                    self.present(pn, pp, "end", end)?,
                ))
            }
            None => None,
        };
        let nat = Nat {
            address,
            port,
            ipv6,
        };
        // An empty <nat/> carries nothing and libvirt does not print it.
        Ok((nat != Nat::default()).then_some(nat))
    }

    fn bridge(&mut self, n: &Node) -> Result<Bridge, XmlError> {
        let p = "/network/bridge";
        self.check_libvirt(
            n,
            p,
            &["name", "zone", "stp", "delay", "macTableManager"],
            &[],
            &[],
        );
        let stp = self.choice(
            n,
            p,
            "stp",
            &[("on", true), ("off", false)],
            "'on' or 'off'",
        )?;
        let mac_table_manager = self.choice(
            n,
            p,
            "macTableManager",
            &MacTableManager::KEYWORDS,
            "'kernel' or 'libvirt'",
        )?;
        Ok(Bridge {
            name: self.string(n, "name"),
            zone: self.string(n, "zone"),
            stp,
            delay: self.parsed(n, p, "delay", "a forward delay in seconds")?,
            mac_table_manager,
        })
    }

    fn dns(&mut self, n: &Node) -> Result<Option<Dns>, XmlError> {
        let p = "/network/dns";
        self.check_libvirt(
            n,
            p,
            &["enable", "forwardPlainNames"],
            &["forwarder", "txt", "srv", "host"],
            &[],
        );
        let mut dns = Dns {
            enable: self.yes_no(n, p, "enable")?,
            forward_plain_names: self.yes_no(n, p, "forwardPlainNames")?,
            ..Dns::default()
        };
        for f in n.kids("forwarder") {
            let fp = "/network/dns/forwarder";
            self.check_libvirt(f, fp, &["addr", "domain"], &[], &[]);
            let fwd = DnsForwarder {
                domain: self.string(f, "domain"),
                addr: self.ip(f, fp, "addr")?,
            };
            if fwd.domain.is_none() && fwd.addr.is_none() {
                return Err(self.report.structure(
                    f,
                    fp,
                    "must have at least one of 'addr' or 'domain'",
                ));
            }
            dns.forwarders.push(fwd);
        }
        for t in n.kids("txt") {
            let tp = "/network/dns/txt";
            self.check_libvirt(t, tp, &["name", "value"], &[], &[]);
            dns.txts.push(DnsTxt {
                name: self.present(t, tp, "name", self.string(t, "name"))?,
                value: self.present(t, tp, "value", self.string(t, "value"))?,
            });
        }
        for s in n.kids("srv") {
            let sp = "/network/dns/srv";
            self.check_libvirt(
                s,
                sp,
                &[
                    "service", "protocol", "domain", "target", "port", "priority", "weight",
                ],
                &[],
                &[],
            );
            let nonzero = |v: Option<u16>| v.filter(|&x| x != 0);
            dns.srvs.push(DnsSrv {
                service: self.string(s, "service"),
                protocol: self.string(s, "protocol"),
                domain: self.string(s, "domain"),
                target: self.string(s, "target"),
                port: self.parsed(s, sp, "port", "a port number 1-65535")?,
                priority: nonzero(self.parsed(s, sp, "priority", "a number 0-65535")?),
                weight: nonzero(self.parsed(s, sp, "weight", "a number 0-65535")?),
            });
        }
        for h in n.kids("host") {
            let hp = "/network/dns/host";
            self.check_libvirt(h, hp, &["ip"], &["hostname"], &[]);
            let mut hostnames = Vec::new();
            for hn in h.kids("hostname") {
                self.check_text(hn, "/network/dns/host/hostname");
                hostnames.push(hn.string_value.clone());
            }
            dns.hosts.push(DnsHost {
                ip: self.ip(h, hp, "ip")?,
                hostnames,
            });
        }
        // libvirt prints nothing for a <dns> without attributes or records.
        Ok((dns != Dns::default()).then_some(dns))
    }

    /// The `<lease>` of a range or host. libvirt 9.0 reads every one (so
    /// any can be an error) and keeps the last with an expiry.
    fn lease(&mut self, parent: &Node, path: &str) -> Result<Option<Lease>, XmlError> {
        let lp = format!("{path}/lease");
        let mut kept = None;
        for n in parent.kids("lease") {
            self.check_libvirt(n, &lp, &["expiry", "unit"], &[], &[]);
            let Some(expiry) =
                self.parsed::<u64>(n, &lp, "expiry", "a lease time (0 = infinite)")?
            else {
                // libvirt ignores a <lease> without expiry.
                continue;
            };
            let unit = self
                .choice(
                    n,
                    &lp,
                    "unit",
                    &LeaseUnit::KEYWORDS,
                    "'seconds', 'minutes' or 'hours'",
                )?
                .unwrap_or(LeaseUnit::Minutes);
            // The unit of an infinite lease is meaningless and libvirt does not print it.
            let lease = Lease {
                expiry,
                unit: (expiry != 0).then_some(unit),
            };
            // Checked here too because libvirt refuses any short <lease>,
            // even one a later <lease> replaces.
            if lease.is_too_short() {
                return Err(self.report.value_err(
                    n,
                    &format!("{lp}/@expiry"),
                    &expiry.to_string(),
                    Lease::MINIMUM_RULE,
                ));
            }
            kept = Some(lease);
        }
        Ok(kept)
    }

    fn ip_def(&mut self, n: &Node) -> Result<IpDef, XmlError> {
        let p = "/network/ip";
        self.check_libvirt(
            n,
            p,
            &["family", "address", "netmask", "prefix", "localPtr"],
            &["tftp", "dhcp"],
            &["tftp", "dhcp"],
        );
        let family = self.family(n, p)?;
        let address = self.ip(n, p, "address")?;
        let address = self.present(n, p, "address", address)?;
        let mut def = IpDef::new(address);
        def.family = family;
        def.netmask = self.ipv4(n, p, "netmask")?;
        // libvirt treats prefix='0' as absent.
        def.prefix = self
            .parsed::<u8>(n, p, "prefix", "a prefix length 0-128")?
            .filter(|&x| x != 0);
        def.local_ptr = self.yes_no(n, p, "localPtr")?;
        if let Some(t) = n.kid("tftp") {
            self.check_libvirt(t, "/network/ip/tftp", &["root"], &[], &[]);
            def.tftp_root = self.string(t, "root");
        }
        if let Some(d) = n.kid("dhcp") {
            def.dhcp = self.dhcp(d, address)?;
        }
        Ok(def)
    }

    fn dhcp(&mut self, n: &Node, address: IpAddr) -> Result<Option<Dhcp>, XmlError> {
        let p = "/network/ip/dhcp";
        self.check_libvirt(n, p, &[], &["range", "host", "bootp"], &["bootp"]);
        let mut dhcp = Dhcp::default();
        for r in n.kids("range") {
            let rp = "/network/ip/dhcp/range";
            self.check_libvirt(r, rp, &["start", "end"], &["lease"], &["lease"]);
            let start = self.ip(r, rp, "start")?;
            let end = self.ip(r, rp, "end")?;
            dhcp.ranges.push(DhcpRange {
                start: self.present(r, rp, "start", start)?,
                end: self.present(r, rp, "end", end)?,
                lease: self.lease(r, rp)?,
            });
        }
        for h in n.kids("host") {
            let hp = "/network/ip/dhcp/host";
            self.check_libvirt(h, hp, &["mac", "id", "name", "ip"], &["lease"], &["lease"]);
            dhcp.hosts.push(DhcpHost {
                mac: self.parsed(h, hp, "mac", "a MAC address like 52:54:00:12:34:56")?,
                mac_text: self.string(h, "mac"),
                id: self.string(h, "id"),
                name: self.string(h, "name"),
                ip: self.ip(h, hp, "ip")?,
                lease: self.lease(h, hp)?,
            });
        }
        // libvirt 9.0 reads every <bootp> of an IPv4 <ip> (any can be an
        // error), skips those without a file and keeps the last.
        let bp = "/network/ip/dhcp/bootp";
        for b in n.kids("bootp") {
            self.check_libvirt(b, bp, &["file", "server"], &[], &[]);
            if address.is_ipv6() {
                self.unknown
                    .push(format!("{bp} (ignored in an IPv6 <ip>, as libvirt does)"));
                continue;
            }
            let Some(file) = self.string(b, "file") else {
                self.unknown
                    .push(format!("{bp} (ignored without a file, as libvirt does)"));
                continue;
            };
            dhcp.bootp = Some(Bootp {
                file,
                server: self.ip(b, bp, "server")?,
            });
        }
        // libvirt prints <dhcp> only when it has ranges or hosts; a lone
        // <bootp> is dropped with it.
        if dhcp.ranges.is_empty() && dhcp.hosts.is_empty() {
            if dhcp.bootp.is_some() {
                self.unknown.push(format!(
                    "{p}/bootp (dropped: libvirt keeps <bootp> only with a <range> or <host>)"
                ));
            }
            return Ok(None);
        }
        Ok(Some(dhcp))
    }

    /// The check of [`Self::metadata_uris`] on the declarations of `n`
    /// alone.
    fn namespace_uris(&mut self, n: &Node, path: &str) -> Result<(), XmlError> {
        for (k, v) in &n.attrs {
            if (k == "xmlns" || k.starts_with("xmlns:")) && v.contains(['\r', '\n', '\t', '<']) {
                return Err(self.report.value_err(
                    n,
                    &format!("{path}/@{k}"),
                    v,
                    "a namespace URI without CR, LF, tab or '<'",
                ));
            }
        }
        Ok(())
    }

    /// Refuses a namespace URI under `<metadata>` (or in scope there)
    /// holding CR, LF, tab or `<`: libxml2 (and so libvirt) prints such a
    /// URI raw, which reads back as a different URI (whitespace
    /// normalized) or not at all (`<`), so slipway could not keep the
    /// document as given (found by the `network_xml` fuzz target, first
    /// under `<metadata>`, then on `<network>` itself).
    fn metadata_uris(&mut self, n: &Node, path: &str) -> Result<(), XmlError> {
        self.namespace_uris(n, path)?;
        for c in &n.children {
            self.metadata_uris(c, &format!("{path}/{}", c.name))?;
        }
        Ok(())
    }

    fn route(&mut self, n: &Node) -> Result<Route, XmlError> {
        let p = "/network/route";
        self.check_libvirt(
            n,
            p,
            &[
                "family", "address", "netmask", "prefix", "gateway", "metric",
            ],
            &[],
            &[],
        );
        let family = self.family(n, p)?;
        let address = self.ip(n, p, "address")?;
        let gateway = self.ip(n, p, "gateway")?;
        Ok(Route {
            family,
            address: self.present(n, p, "address", address)?,
            netmask: self.ipv4(n, p, "netmask")?,
            prefix: self.parsed(n, p, "prefix", "a prefix length 0-128")?,
            gateway: self.present(n, p, "gateway", gateway)?,
            metric: self.parsed(n, p, "metric", "a route metric 1-4294967295")?,
        })
    }
}

pub(crate) fn parse(src: &str) -> Result<Network, XmlError> {
    let mut root = read_tree(src)?;
    drop_empty_attrs(&mut root);
    Walker::new(Located { src }).network(&root)
}
