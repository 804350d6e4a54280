//! Reading `<slipway:ovn>` out of `<metadata>` (the model and its rules:
//! [`crate::ovn`]). Part of the network parser (`parse`): the same walker,
//! errors with the element's line, column and path. `<metadata>` itself is
//! still kept and printed verbatim by [`crate::metadata`].

use std::collections::HashSet;

use super::Walker;
use crate::metadata::{decls, prefix_of, resolve};
use crate::ovn::{
    parse_remote, switch_name_problem, OvnAddress, OvnSwitch, OVN_ADDRESSES_MAX, OVN_NS,
    OVN_REMOTES_MAX,
};
use crate::tree::Node;
use crate::XmlError;

/// The local part of a qualified name.
fn local(qname: &str) -> &str {
    qname.split_once(':').map_or(qname, |(_, l)| l)
}

/// The attributes of `n` that are not namespace declarations.
fn plain_attrs(n: &Node) -> impl Iterator<Item = &(String, String)> {
    n.attrs
        .iter()
        .filter(|(k, _)| k != "xmlns" && !k.starts_with("xmlns:"))
}

impl Walker<'_> {
    /// The OVN element of `<metadata>` node `md` (`outer`: the namespaces
    /// declared on `<network>`), if it has one: the first child in
    /// [`OVN_NS`], the one libvirt keeps.
    pub(crate) fn ovn(
        &mut self,
        md: &Node,
        outer: &[(String, String)],
    ) -> Result<Option<OvnSwitch>, XmlError> {
        let mut scope = outer.to_vec();
        scope.extend(decls(md));
        let depth = scope.len();
        for el in &md.children {
            scope.truncate(depth);
            scope.extend(decls(el));
            if resolve(&scope, prefix_of(&el.name)) == Some(OVN_NS) {
                return self.ovn_switch(el, &scope).map(Some);
            }
        }
        Ok(None)
    }

    fn ovn_switch(&mut self, n: &Node, scope: &[(String, String)]) -> Result<OvnSwitch, XmlError> {
        let p = format!("/network/metadata/{}", n.name);
        if local(&n.name) != "ovn" {
            return Err(self.report.structure(
                n,
                &p,
                format!("unknown element in slipway's OVN namespace {OVN_NS} (expected 'ovn')"),
            ));
        }
        for (k, _) in plain_attrs(n) {
            if !["switch", "nb", "subnet"].contains(&k.as_str()) {
                return Err(self.report.structure(
                    n,
                    &p,
                    format!("unknown attribute '{k}' (expected switch, nb, subnet)"),
                ));
            }
        }
        let switch = self.present(n, &p, "switch", n.attr("switch"))?.to_string();
        if let Some(why) = switch_name_problem(&switch) {
            return Err(self
                .report
                .value_err(n, &format!("{p}/@switch"), &switch, &why));
        }
        let nb_text = self.present(n, &p, "nb", n.attr("nb"))?;
        let mut nb = Vec::new();
        for r in nb_text.split(',') {
            let remote = parse_remote(r)
                .map_err(|why| self.report.value_err(n, &format!("{p}/@nb"), r, &why))?;
            nb.push(remote);
        }
        if nb.len() > OVN_REMOTES_MAX {
            return Err(self.report.value_err(
                n,
                &format!("{p}/@nb"),
                nb_text,
                &format!("at most {OVN_REMOTES_MAX} remotes"),
            ));
        }
        let subnet = match n.attr("subnet") {
            None => None,
            Some(s) => {
                let net: slipway_host::ipnet::Ipv4Net = s.parse().map_err(|_| {
                    self.report.value_err(
                        n,
                        &format!("{p}/@subnet"),
                        s,
                        "an IPv4 subnet ADDRESS/PREFIX",
                    )
                })?;
                if net.prefix_len() > 30 || net.network() != net.addr() {
                    return Err(self.report.value_err(
                        n,
                        &format!("{p}/@subnet"),
                        s,
                        "a subnet's network address with a prefix of at most 30",
                    ));
                }
                Some(net)
            }
        };
        let mut sw = OvnSwitch {
            switch,
            nb,
            subnet,
            addresses: Vec::new(),
        };
        let mut macs = HashSet::new();
        let mut ips = HashSet::new();
        let depth = scope.len();
        let mut scope = scope.to_vec();
        for c in &n.children {
            scope.truncate(depth);
            scope.extend(decls(c));
            let cp = format!("{p}/{}", c.name);
            if resolve(&scope, prefix_of(&c.name)) != Some(OVN_NS) || local(&c.name) != "address" {
                return Err(self.report.structure(
                    c,
                    &cp,
                    format!("unknown element (expected address in namespace {OVN_NS})"),
                ));
            }
            if sw.addresses.len() == OVN_ADDRESSES_MAX {
                return Err(self.report.structure(
                    c,
                    &cp,
                    format!("more than {OVN_ADDRESSES_MAX} addresses"),
                ));
            }
            sw.addresses
                .push(self.ovn_address(c, &cp, &sw, &mut macs, &mut ips)?);
        }
        Ok(sw)
    }

    fn ovn_address(
        &mut self,
        c: &Node,
        cp: &str,
        sw: &OvnSwitch,
        macs: &mut HashSet<crate::MacAddr>,
        ips: &mut HashSet<std::net::IpAddr>,
    ) -> Result<OvnAddress, XmlError> {
        for (k, _) in plain_attrs(c) {
            if k != "mac" && k != "ip" {
                return Err(self.report.structure(
                    c,
                    cp,
                    format!("unknown attribute '{k}' (expected mac, ip)"),
                ));
            }
        }
        let mac_text = self.present(c, cp, "mac", c.attr("mac"))?;
        let mac: crate::MacAddr = mac_text.parse().map_err(|_| {
            self.report
                .value_err(c, &format!("{cp}/@mac"), mac_text, "a MAC address")
        })?;
        if mac.is_multicast() || !macs.insert(mac) {
            return Err(self.report.value_err(
                c,
                &format!("{cp}/@mac"),
                mac_text,
                "a unicast MAC address given once",
            ));
        }
        let ip_text = self.present(c, cp, "ip", c.attr("ip"))?;
        let ip: std::net::IpAddr = ip_text.parse().map_err(|_| {
            self.report
                .value_err(c, &format!("{cp}/@ip"), ip_text, "an IP address")
        })?;
        let inside = match (sw.subnet, ip) {
            (None, _) => true,
            (Some(net), std::net::IpAddr::V4(v4)) => {
                net.contains(&v4) && v4 != net.network() && v4 != net.broadcast()
            }
            (Some(_), std::net::IpAddr::V6(_)) => true,
        };
        if !inside || ip.is_unspecified() || ip.is_multicast() || !ips.insert(ip) {
            return Err(self.report.value_err(
                c,
                &format!("{cp}/@ip"),
                ip_text,
                "a unicast host address of the switch's subnet, given once",
            ));
        }
        Ok(OvnAddress { mac, ip })
    }
}
