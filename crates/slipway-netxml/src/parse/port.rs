//! Reading what a network says about its ports that is the network's
//! own: `<portgroup>` (`virNetworkPortGroupParseXML` in libvirt 9.0's
//! `network_conf.c`), `<port isolated>`, and libvirt's dnsmasq namespace.
//! The `<virtualport>`, `<vlan>` and `<bandwidth>` inside them are read by
//! the readers shared with the network port (`netdev`). Part of the
//! network parser (`parse`): the same walker, the same error reporting.

use super::Walker;
use crate::metadata::{decls, prefix_of, resolve};
use crate::model::PortGroup;
use crate::netdev::BandwidthUse;
use crate::tree::Node;
use crate::XmlError;

/// libvirt's dnsmasq namespace (`networkDnsmasqXMLNamespace`).
pub(crate) const DNSMASQ_NS: &str = "http://libvirt.org/schemas/network/dnsmasq/1.0";

/// True when element `qname`, in `scope`, is `local` in the dnsmasq namespace.
fn is_dnsmasq(qname: &str, scope: &[(String, String)], local: &str) -> bool {
    let name_local = qname.split_once(':').map_or(qname, |(_, l)| l);
    name_local == local && resolve(scope, prefix_of(qname)) == Some(DNSMASQ_NS)
}

impl Walker<'_> {
    /// `<portgroup>` (`virNetworkPortGroupParseXML`).
    pub(crate) fn portgroup(&mut self, n: &Node) -> Result<PortGroup, XmlError> {
        let p = "/network/portgroup";
        self.check_libvirt(
            n,
            p,
            &["name", "default", "trustGuestRxFilters"],
            &["virtualport", "bandwidth", "vlan"],
            &["virtualport", "bandwidth", "vlan"],
        );
        let name = match n.attr("name") {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                return Err(self.report.structure(
                    n,
                    p,
                    "missing required name attribute in portgroup",
                ))
            }
        };
        let mut pg = PortGroup {
            name,
            default: n
                .attr("default")
                .is_some_and(|d| d.eq_ignore_ascii_case("yes")),
            trust_guest_rx_filters: self.yes_no(n, p, "trustGuestRxFilters")?,
            ..PortGroup::default()
        };
        if let Some(v) = n.kid("virtualport") {
            // An empty one (no type, no parameters) is not printed by
            // libvirt, so it does not survive a define and dump there
            // either: slipway drops it at once. (libvirtd's VLAN check
            // would still count it on the first define: a difference only
            // for a portgroup with both an empty <virtualport/> and a
            // <vlan> on an Open vSwitch network, which libvirtd refuses.)
            pg.virtualport = self.virtualport(v, &format!("{p}/virtualport"), false)?;
        }
        if let Some(b) = n.kid("bandwidth") {
            pg.bandwidth = self.bandwidth(b, &format!("{p}/bandwidth"), BandwidthUse::Network)?;
        }
        if let Some(v) = n.kid("vlan") {
            pg.vlan = Some(self.vlan(v, &format!("{p}/vlan"))?);
        }
        Ok(pg)
    }

    /// `<port isolated>`: yes, no, or absent.
    pub(crate) fn port_options(&mut self, n: &Node) -> Result<Option<bool>, XmlError> {
        let p = "/network/port";
        self.check_libvirt(n, p, &["isolated"], &[], &[]);
        self.yes_no(n, p, "isolated")
    }

    /// The names of `<network>`'s children in libvirt's dnsmasq namespace,
    /// and the `value` of every `<dnsmasq:option>` in them.
    pub(crate) fn dnsmasq_options(
        &mut self,
        root: &Node,
    ) -> Result<(Vec<String>, Vec<String>), XmlError> {
        let root_scope = decls(root);
        let mut names = Vec::new();
        let mut values = Vec::new();
        for opts in &root.children {
            let mut scope = root_scope.clone();
            scope.extend(decls(opts));
            if !is_dnsmasq(&opts.name, &scope, "options") {
                continue;
            }
            names.push(opts.name.clone());
            let p = "/network/dnsmasq:options";
            for (k, _) in &opts.attrs {
                if k != "xmlns" && !k.starts_with("xmlns:") {
                    self.unknown.push(format!("{p}/@{k}"));
                }
            }
            for o in &opts.children {
                let mut inner = scope.clone();
                inner.extend(decls(o));
                if !is_dnsmasq(&o.name, &inner, "option") {
                    self.unknown.push(format!("{p}/{}", o.name));
                    continue;
                }
                let op = "/network/dnsmasq:options/dnsmasq:option";
                for (k, _) in &o.attrs {
                    if k != "value" && k != "xmlns" && !k.starts_with("xmlns:") {
                        self.unknown.push(format!("{op}/@{k}"));
                    }
                }
                match o.attr("value") {
                    Some(v) => values.push(v.to_string()),
                    None => {
                        return Err(self.report.structure(
                            o,
                            op,
                            "no dnsmasq options value specified",
                        ))
                    }
                }
            }
        }
        Ok((names, values))
    }
}
