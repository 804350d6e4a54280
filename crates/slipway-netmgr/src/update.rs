//! `net-update`: add, delete or modify one part of a definition, with
//! libvirt's matching rules and messages.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use slipway_host::keywords;
use slipway_netxml::{DhcpHost, DhcpRange, DnsHost, IpDef, Network, PortGroup};

use crate::error::{Error, Result};
use crate::plan::{ip_prefix, network_of};

/// The update verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateCommand {
    /// Insert before existing entries.
    AddFirst,
    /// Append (virsh's `add` too).
    AddLast,
    /// Remove the matching entry.
    Delete,
    /// Replace the matching entry.
    Modify,
}

impl UpdateCommand {
    /// Where an entry added to a list of `len` goes: first for
    /// [`UpdateCommand::AddFirst`], else last.
    fn insert_at(self, len: usize) -> usize {
        if self == UpdateCommand::AddFirst {
            0
        } else {
            len
        }
    }
}

impl FromStr for UpdateCommand {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "add-first" => UpdateCommand::AddFirst,
            "add-last" | "add" => UpdateCommand::AddLast,
            "delete" => UpdateCommand::Delete,
            "modify" => UpdateCommand::Modify,
            _ => return Err(()),
        })
    }
}

keywords! {
    /// The part of the definition to update, by virsh's name, in the order
    /// of libvirt's `virNetworkUpdateSection` (`VIR_NETWORK_SECTION_BRIDGE`
    /// = 1 first). virsh knows more sections than slipway updates; those
    /// parse (so the error says "can't update", as libvirt's does) and are
    /// refused.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum Section {
        /// `<bridge>`.
        Bridge = "bridge",
        /// `<domain>`.
        Domain = "domain",
        /// `<ip>` (not updatable).
        Ip = "ip",
        /// `<ip><dhcp><host>`.
        IpDhcpHost = "ip-dhcp-host",
        /// `<ip><dhcp><range>`.
        IpDhcpRange = "ip-dhcp-range",
        /// `<forward>`.
        Forward = "forward",
        /// `<forward><interface>` (not updatable).
        ForwardInterface = "forward-interface",
        /// `<forward><pf>` (not updatable).
        ForwardPf = "forward-pf",
        /// `<portgroup>`.
        Portgroup = "portgroup",
        /// `<dns><host>`.
        DnsHost = "dns-host",
        /// `<dns><txt>` (not updatable).
        DnsTxt = "dns-txt",
        /// `<dns><srv>` (not updatable).
        DnsSrv = "dns-srv",
    }
}

/// Every section with virsh's name, in the order of libvirt's
/// `virNetworkUpdateSection`, which numbers them from 1.
pub const SECTIONS: [(&str, Section); 12] = Section::KEYWORDS;

impl FromStr for Section {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Section::from_keyword(s).ok_or(())
    }
}

impl Section {
    /// Whether a running network can take the change without a restart.
    pub fn live_updatable(self) -> bool {
        !matches!(self, Section::Bridge | Section::Forward)
    }
}

/// One `net-update` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSpec {
    /// The verb.
    pub command: UpdateCommand,
    /// The section.
    pub section: Section,
    /// The XML element.
    pub xml: String,
    /// Which `<ip>` (0-based) for DHCP sections; `None` = the one with DHCP.
    pub parent_index: Option<usize>,
    /// Change the running network.
    pub live: bool,
    /// Change the persistent definition (neither: the current state).
    pub config: bool,
}

/// Applies `spec` to `net` in place.
pub fn apply(net: &mut Network, spec: &UpdateSpec) -> Result<()> {
    let name = net.name.clone();
    match spec.section {
        Section::IpDhcpHost => dhcp_host(net, spec, &name),
        Section::IpDhcpRange => dhcp_range(net, spec, &name),
        Section::DnsHost => dns_host(net, spec, &name),
        Section::Portgroup => portgroup(net, spec, &name),
        // The section's name is the element's.
        Section::Forward | Section::Bridge | Section::Domain => {
            let what = spec.section.as_str();
            let frag = parse_fragment(&spec.xml, what, &name, in_network)?;
            let cmd = spec.command;
            match spec.section {
                Section::Forward => single(&mut net.forward, frag.forward, cmd, what, &name, true),
                Section::Bridge => single(&mut net.bridge, frag.bridge, cmd, what, &name, false),
                _ => single(&mut net.domain, frag.domain, cmd, what, &name, true),
            }
        }
        other => Err(Error::Unsupported(format!(
            "can't update '{}' section of network '{name}'",
            other.as_str()
        ))),
    }
}

/// Parses an update element by wrapping it in a minimal document, after
/// checking it is the element the section expects.
fn parse_fragment(
    xml: &str,
    expect: &str,
    network: &str,
    wrap: impl Fn(&str) -> String,
) -> Result<Network> {
    let root = root_element(xml);
    if root != expect {
        return Err(Error::XmlFragment(format!(
            "unexpected element <{root}>, expecting <{expect}>, while updating network '{network}'"
        )));
    }
    let body = xml.trim_start();
    let body = if body.starts_with("<?xml") {
        body.split_once("?>").map(|(_, r)| r).unwrap_or("")
    } else {
        body
    };
    let net = Network::from_xml(&wrap(body)).map_err(|e| {
        Error::XmlFragment(format!(
            "{e} (in the <{expect}> given to update network '{network}')"
        ))
    })?;
    if let Some(u) = net.unknown.first() {
        return Err(Error::XmlFragment(format!(
            "unknown element or attribute {u} in the <{expect}> given to update network '{network}'"
        )));
    }
    Ok(net)
}

/// Wraps a child of `<network>` in a minimal document.
fn in_network(x: &str) -> String {
    format!("<network><name>u</name>{x}</network>")
}

/// The name of the first element of `xml` (after an optional declaration).
fn root_element(xml: &str) -> &str {
    let mut s = xml.trim_start();
    if s.starts_with("<?") {
        s = s
            .split_once("?>")
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
    }
    let Some(s) = s.strip_prefix('<') else {
        return "";
    };
    let end = s
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(s.len());
    &s[..end]
}

/// Updates an element that appears at most once.
fn single<T>(
    slot: &mut Option<T>,
    new: Option<T>,
    cmd: UpdateCommand,
    what: &str,
    network: &str,
    deletable: bool,
) -> Result<()> {
    match cmd {
        UpdateCommand::Modify => *slot = new,
        UpdateCommand::AddFirst | UpdateCommand::AddLast => {
            if slot.is_some() {
                return Err(Error::NotValid(format!(
                    "there is already a <{what}> element in network '{network}'; use modify"
                )));
            }
            *slot = new;
        }
        UpdateCommand::Delete if deletable => *slot = None,
        UpdateCommand::Delete => {
            return Err(Error::Unsupported(format!(
                "the <{what}> element of network '{network}' cannot be deleted"
            )))
        }
    }
    Ok(())
}

/// libvirt's choice of `<ip>` for DHCP updates: the given index, else the
/// first `<ip>` with DHCP ranges or hosts, else the first IPv4, else IPv6.
fn dhcp_ip<'a>(
    net: &'a mut Network,
    parent: Option<usize>,
    what: &str,
    name: &str,
) -> Result<&'a mut IpDef> {
    let idx = match parent {
        Some(i) if i < net.ips.len() => i,
        Some(i) => {
            return Err(Error::NotValid(format!(
            "couldn't update {what} entry - no <ip> element found at index {i} in network '{name}'"
        )))
        }
        None => net
            .ips
            .iter()
            .position(|ip| {
                ip.dhcp
                    .as_ref()
                    .is_some_and(|d| !d.ranges.is_empty() || !d.hosts.is_empty())
            })
            .or_else(|| net.ips.iter().position(|ip| ip.address.is_ipv4()))
            .or_else(|| (!net.ips.is_empty()).then_some(0))
            .ok_or_else(|| {
                Error::NotValid(format!(
                    "couldn't update {what} entry - no <ip> element found in network '{name}'"
                ))
            })?,
    };
    Ok(&mut net.ips[idx])
}

/// Wraps a DHCP child in an `<ip>` like the target one so it parses in context.
fn wrap_in_ip(ip: &IpDef) -> impl Fn(&str) -> String {
    let addr = ip.address;
    let prefix = ip_prefix(ip);
    move |x| {
        format!("<network><name>u</name><ip address='{addr}' prefix='{prefix}'><dhcp>{x}</dhcp></ip></network>")
    }
}

/// A host's identifying fields as libvirt quotes them in messages, with
/// C's "(null)" for missing ones.
fn host_fields(h: &DhcpHost) -> [String; 3] {
    let or_null = |v: Option<String>| v.unwrap_or_else(|| "(null)".into());
    [
        format!("mac='{}'", or_null(h.mac.map(|m| m.to_string()))),
        format!("name='{}'", or_null(h.name.clone())),
        format!("ip='{}'", or_null(h.ip.map(|i| i.to_string()))),
    ]
}

fn dhcp_host(net: &mut Network, spec: &UpdateSpec, name: &str) -> Result<()> {
    let ip = dhcp_ip(net, spec.parent_index, "dhcp host", name)?;
    let frag = parse_fragment(&spec.xml, "host", name, wrap_in_ip(ip))?;
    let host = frag
        .ips
        .into_iter()
        .next()
        .and_then(|i| i.dhcp)
        .and_then(|d| d.hosts.into_iter().next())
        .ok_or_else(|| {
            Error::XmlFragment(format!("empty <host> while updating network '{name}'"))
        })?;
    let hosts = &mut ip.dhcp.get_or_insert_with(Default::default).hosts;
    // Any shared identifier (MAC, id, name, address) is a match, as libvirt.
    let same = |h: &DhcpHost| {
        (host.mac.is_some() && h.mac == host.mac)
            || (host.id.is_some() && h.id == host.id)
            || (host.name.is_some() && h.name == host.name)
            || (host.ip.is_some() && h.ip == host.ip)
    };
    match spec.command {
        UpdateCommand::AddFirst | UpdateCommand::AddLast => {
            if hosts.iter().any(same) {
                // libvirt quotes the entry being added, not the one it clashes with.
                return Err(Error::NotValid(format!(
                    "there is an existing dhcp host entry in network '{name}' that matches \"<host {}/>\"",
                    host_fields(&host).join(" ")
                )));
            }
            hosts.insert(spec.command.insert_at(hosts.len()), host);
        }
        UpdateCommand::Delete => {
            // Every attribute given must match.
            let pos = hosts.iter().position(|h| {
                host.mac.is_none_or(|m| h.mac == Some(m))
                    && host.id.as_ref().is_none_or(|i| h.id.as_ref() == Some(i))
                    && host
                        .name
                        .as_ref()
                        .is_none_or(|n| h.name.as_ref() == Some(n))
                    && host.ip.is_none_or(|a| h.ip == Some(a))
            });
            let p = pos.ok_or_else(|| {
                Error::NotValid(format!(
                    "couldn't locate a matching dhcp host entry in network '{name}'"
                ))
            })?;
            hosts.remove(p);
        }
        UpdateCommand::Modify => match hosts.iter().position(same) {
            Some(p) => hosts[p] = host,
            None => {
                let quoted: Vec<String> = host_fields(&host)
                    .iter()
                    .map(|f| format!("\"{f}\""))
                    .collect();
                return Err(Error::NotValid(format!(
                    "couldn't locate an existing dhcp host entry with {} in network '{name}'",
                    quoted.join(" ")
                )));
            }
        },
    }
    Ok(())
}

fn dhcp_range(net: &mut Network, spec: &UpdateSpec, name: &str) -> Result<()> {
    if spec.command == UpdateCommand::Modify {
        return Err(Error::Unsupported(
            "dhcp ranges cannot be modified, only added or deleted".into(),
        ));
    }
    // Parse first (in the context of any IPv4 <ip>), then pick the <ip>
    // whose subnet holds the range when no index is given.
    let probe = net.ips.first().cloned().ok_or_else(|| {
        Error::NotValid(format!(
            "couldn't update dhcp range entry - no <ip> element found in network '{name}'"
        ))
    })?;
    let frag = parse_fragment(&spec.xml, "range", name, wrap_in_ip(&probe))?;
    let range: DhcpRange = frag
        .ips
        .into_iter()
        .next()
        .and_then(|i| i.dhcp)
        .and_then(|d| d.ranges.into_iter().next())
        .ok_or_else(|| {
            Error::XmlFragment(format!("empty <range> while updating network '{name}'"))
        })?;
    let parent = spec.parent_index.or_else(|| {
        net.ips.iter().position(|ip| {
            let p = ip_prefix(ip);
            ip.address.is_ipv4() == range.start.is_ipv4()
                && network_of(ip.address, p) == network_of(range.start, p)
        })
    });
    let ip = dhcp_ip(net, parent, "dhcp range", name)?;
    let ranges = &mut ip.dhcp.get_or_insert_with(Default::default).ranges;
    let pos = ranges
        .iter()
        .position(|r| r.start == range.start && r.end == range.end);
    match (spec.command, pos) {
        (UpdateCommand::Delete, Some(p)) => {
            ranges.remove(p);
        }
        (UpdateCommand::Delete, None) => {
            return Err(Error::NotValid(format!("couldn't locate a matching dhcp range entry in network '{name}'")))
        }
        (_, Some(_)) => {
            return Err(Error::NotValid(format!(
                "there is an existing dhcp range entry in network '{name}' that matches \"<range start='{}' end='{}'/>\"",
                range.start, range.end
            )))
        }
        (cmd, None) => ranges.insert(cmd.insert_at(ranges.len()), range),
    }
    Ok(())
}

/// libvirt's `virNetworkDefUpdatePortGroup`: portgroups are matched by
/// name; at most one is the default.
fn portgroup(net: &mut Network, spec: &UpdateSpec, name: &str) -> Result<()> {
    let frag = parse_fragment(&spec.xml, "portgroup", name, in_network)?;
    let pg: PortGroup = frag.portgroups.into_iter().next().ok_or_else(|| {
        Error::XmlFragment(format!("empty <portgroup> while updating network '{name}'"))
    })?;
    let found = net.portgroups.iter().position(|p| p.name == pg.name);
    let default = net.portgroups.iter().position(|p| p.default);
    let cmd = spec.command;
    match (cmd, found) {
        (UpdateCommand::Modify | UpdateCommand::Delete, None) => {
            return Err(Error::NotValid(format!(
                "couldn't find a portgroup entry in network '{name}' matching <portgroup name='{}'>",
                pg.name
            )))
        }
        (UpdateCommand::AddFirst | UpdateCommand::AddLast, Some(_)) => {
            return Err(Error::NotValid(format!(
                "there is an existing portgroup entry in network '{name}' that matches \"<portgroup name='{}'>\"",
                pg.name
            )))
        }
        _ => {}
    }
    if cmd != UpdateCommand::Delete && pg.default && default.is_some_and(|d| Some(d) != found) {
        return Err(Error::NotValid(format!(
            "a different portgroup entry in network '{name}' is already set as the default. Only one default is allowed."
        )));
    }
    match (cmd, found) {
        (UpdateCommand::Modify, Some(i)) => net.portgroups[i] = pg,
        (UpdateCommand::Delete, Some(i)) => {
            net.portgroups.remove(i);
        }
        (UpdateCommand::AddFirst, _) => net.portgroups.insert(0, pg),
        _ => net.portgroups.push(pg),
    }
    Ok(())
}

fn dns_host(net: &mut Network, spec: &UpdateSpec, name: &str) -> Result<()> {
    if spec.command == UpdateCommand::Modify {
        return Err(Error::Unsupported(
            "DNS HOST records cannot be modified, only added or deleted".into(),
        ));
    }
    let frag = parse_fragment(&spec.xml, "host", name, |x| {
        format!("<network><name>u</name><dns>{x}</dns></network>")
    })?;
    let host: DnsHost = frag
        .dns
        .and_then(|d| d.hosts.into_iter().next())
        .ok_or_else(|| {
            Error::XmlFragment(format!("empty <host> while updating network '{name}'"))
        })?;
    let hosts = &mut net.dns.get_or_insert_with(Default::default).hosts;
    // As libvirt: an address match always counts; a shared host name only
    // when deleting (several addresses may carry one name).
    let is_add = spec.command != UpdateCommand::Delete;
    let matches: Vec<usize> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            (host.ip.is_some() && h.ip == host.ip)
                || (!is_add && h.hostnames.iter().any(|n| host.hostnames.contains(n)))
        })
        .map(|(i, _)| i)
        .collect();
    match (spec.command, matches.as_slice()) {
        (UpdateCommand::Delete, [one]) => {
            hosts.remove(*one);
        }
        (UpdateCommand::Delete, []) => {
            return Err(Error::NotValid(format!(
                "couldn't locate a matching DNS HOST record in network {name}"
            )))
        }
        (UpdateCommand::Delete, _) => {
            return Err(Error::NotValid(format!(
                "multiple matching DNS HOST records were found in network {name}"
            )))
        }
        (_, [_, ..]) => {
            return Err(Error::NotValid(format!(
            "there is already at least one DNS HOST record with a matching field in network {name}"
        )))
        }
        (cmd, []) => hosts.insert(cmd.insert_at(hosts.len()), host),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_element_names() {
        assert_eq!(root_element("  <host mac='x'/>"), "host");
        assert_eq!(
            root_element("<?xml version='1.0'?>\n<range start='a'/>"),
            "range"
        );
        assert_eq!(root_element("<a>"), "a");
        assert_eq!(root_element("text"), "");
    }

    #[test]
    fn command_and_section_names() {
        assert_eq!("add".parse::<UpdateCommand>(), Ok(UpdateCommand::AddLast));
        assert!("frob".parse::<UpdateCommand>().is_err());
        for (n, s) in SECTIONS {
            assert_eq!(n.parse::<Section>(), Ok(s));
            assert_eq!(s.as_str(), n);
        }
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;

    const NET: &str = "<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp>\
        <range start='10.0.0.100' end='10.0.0.200'/>\
        <host mac='52:54:00:00:00:01' name='a' ip='10.0.0.11'/>\
        <host mac='52:54:00:00:00:02' name='b' ip='10.0.0.12'/></dhcp></ip>\
        <ip family='ipv6' address='fd00::1' prefix='64'/></network>";

    fn spec(command: UpdateCommand, section: Section, xml: &str) -> UpdateSpec {
        UpdateSpec {
            command,
            section,
            xml: xml.into(),
            parent_index: None,
            live: false,
            config: false,
        }
    }

    fn hosts(net: &Network) -> Vec<String> {
        net.ips[0]
            .dhcp
            .as_ref()
            .unwrap()
            .hosts
            .iter()
            .map(|h| h.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn dhcp_hosts_add_first_last_delete_modify() {
        let mut net = Network::from_xml(NET).unwrap();
        use UpdateCommand::*;
        let s = Section::IpDhcpHost;
        apply(
            &mut net,
            &spec(
                AddFirst,
                s,
                "<host mac='52:54:00:00:00:03' name='c' ip='10.0.0.13'/>",
            ),
        )
        .unwrap();
        apply(
            &mut net,
            &spec(
                AddLast,
                s,
                "<host mac='52:54:00:00:00:04' name='d' ip='10.0.0.14'/>",
            ),
        )
        .unwrap();
        assert_eq!(hosts(&net), ["c", "a", "b", "d"]);
        // Any shared identifier is a duplicate.
        let e = apply(
            &mut net,
            &spec(
                AddLast,
                s,
                "<host mac='52:54:00:00:00:09' name='x' ip='10.0.0.12'/>",
            ),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Requested operation is not valid: there is an existing dhcp host entry in network 'n' that matches \"<host mac='52:54:00:00:00:09' name='x' ip='10.0.0.12'/>\"");
        // Delete needs every given attribute to match.
        assert!(apply(
            &mut net,
            &spec(Delete, s, "<host mac='52:54:00:00:00:01' name='zz'/>")
        )
        .is_err());
        apply(
            &mut net,
            &spec(Delete, s, "<host mac='52:54:00:00:00:01'/>"),
        )
        .unwrap();
        apply(
            &mut net,
            &spec(
                Modify,
                s,
                "<host mac='52:54:00:00:00:02' name='bee' ip='10.0.0.22'/>",
            ),
        )
        .unwrap();
        assert_eq!(hosts(&net), ["c", "bee", "d"]);
        let e = apply(
            &mut net,
            &spec(Modify, s, "<host mac='52:54:00:00:00:77'/>"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("couldn't locate an existing dhcp host entry with \"mac='52:54:00:00:00:77'\" \"name='(null)'\" \"ip='(null)'\""), "{e}");
        let e = apply(
            &mut net,
            &spec(AddLast, s, "<range start='10.0.0.2' end='10.0.0.3'/>"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "XML error: unexpected element <range>, expecting <host>, while updating network 'n'"
        );
        let mut bad = spec(AddLast, s, "<host mac='52:54:00:00:00:08' ip='10.0.0.18'/>");
        bad.parent_index = Some(5);
        assert!(apply(&mut net, &bad)
            .unwrap_err()
            .to_string()
            .contains("no <ip> element found at index 5"));
    }

    #[test]
    fn ranges_go_to_the_matching_ip_and_cannot_be_modified() {
        let mut net = Network::from_xml(NET).unwrap();
        use UpdateCommand::*;
        let s = Section::IpDhcpRange;
        apply(
            &mut net,
            &spec(AddLast, s, "<range start='fd00::10' end='fd00::20'/>"),
        )
        .unwrap();
        assert_eq!(net.ips[1].dhcp.as_ref().unwrap().ranges.len(), 1);
        apply(
            &mut net,
            &spec(AddFirst, s, "<range start='10.0.0.2' end='10.0.0.9'/>"),
        )
        .unwrap();
        assert_eq!(
            net.ips[0].dhcp.as_ref().unwrap().ranges[0]
                .start
                .to_string(),
            "10.0.0.2"
        );
        assert!(matches!(
            apply(
                &mut net,
                &spec(Modify, s, "<range start='10.0.0.2' end='10.0.0.9'/>")
            ),
            Err(Error::Unsupported(_))
        ));
        apply(
            &mut net,
            &spec(Delete, s, "<range start='10.0.0.2' end='10.0.0.9'/>"),
        )
        .unwrap();
        assert_eq!(net.ips[0].dhcp.as_ref().unwrap().ranges.len(), 1);
    }

    #[test]
    fn dns_hosts_and_single_elements() {
        let mut net = Network::from_xml(NET).unwrap();
        use UpdateCommand::*;
        apply(
            &mut net,
            &spec(
                AddLast,
                Section::DnsHost,
                "<host ip='10.0.0.5'><hostname>w</hostname></host>",
            ),
        )
        .unwrap();
        let dns = |net: &mut Network, cmd, xml: &str| apply(net, &spec(cmd, Section::DnsHost, xml));
        // One name on several addresses is fine; one address twice is not.
        dns(
            &mut net,
            AddLast,
            "<host ip='10.0.0.6'><hostname>w</hostname></host>",
        )
        .unwrap();
        let e = dns(
            &mut net,
            AddLast,
            "<host ip='10.0.0.6'><hostname>v</hostname></host>",
        )
        .unwrap_err();
        assert!(e
            .to_string()
            .contains("at least one DNS HOST record with a matching field in network n"));
        // Deleting by a name that two records share is ambiguous.
        let e = dns(
            &mut net,
            Delete,
            "<host ip='10.0.0.9'><hostname>w</hostname></host>",
        )
        .unwrap_err();
        assert!(e
            .to_string()
            .contains("multiple matching DNS HOST records were found in network n"));
        dns(&mut net, Delete, "<host ip='10.0.0.5'/>").unwrap();
        dns(&mut net, Delete, "<host ip='10.0.0.6'/>").unwrap();
        let e = dns(&mut net, Delete, "<host ip='10.0.0.6'/>").unwrap_err();
        assert!(e
            .to_string()
            .ends_with("couldn't locate a matching DNS HOST record in network n"));
        assert!(net.dns.as_ref().unwrap().hosts.is_empty());
        apply(
            &mut net,
            &spec(AddLast, Section::Forward, "<forward mode='route'/>"),
        )
        .unwrap();
        assert!(apply(&mut net, &spec(AddLast, Section::Forward, "<forward/>")).is_err());
        apply(&mut net, &spec(Delete, Section::Forward, "<forward/>")).unwrap();
        assert!(net.forward.is_none());
        apply(
            &mut net,
            &spec(
                Modify,
                Section::Domain,
                "<domain name='x.test' localOnly='yes'/>",
            ),
        )
        .unwrap();
        assert_eq!(net.domain.as_ref().unwrap().name, "x.test");
        assert!(apply(&mut net, &spec(Delete, Section::Bridge, "<bridge/>")).is_err());
        let e = apply(
            &mut net,
            &spec(Modify, Section::Bridge, "<bridge name='b' color='red'/>"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown element or attribute /network/bridge/@color"),
            "{e}"
        );
    }
}
