//! Reading the port settings of a network (`<virtualport>`, `<vlan>`,
//! `<bandwidth>`, `<port>`, `<portgroup>`) and libvirt's dnsmasq
//! namespace, by the rules of libvirt 9.0's `netdev_vport_profile_conf.c`,
//! `netdev_vlan_conf.c`, `netdev_bandwidth_conf.c` and `network_conf.c`
//! (error wording kept close to theirs). Part of the network parser
//! (`parse`): the same walker, the same error reporting.

use super::Walker;
use crate::metadata::{decls, prefix_of, resolve};
use crate::port::*;
use crate::tree::Node;
use crate::XmlError;

/// libvirt's dnsmasq namespace (`networkDnsmasqXMLNamespace`).
pub(crate) const DNSMASQ_NS: &str = "http://libvirt.org/schemas/network/dnsmasq/1.0";

/// C's `strtoul(s, NULL, 0)` as libvirt's `virStrToLong_ui(…, 0)` uses it:
/// `0x` hexadecimal, a leading `0` octal, else decimal; the whole string.
pub(crate) fn c_unsigned(v: &str) -> Option<u64> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if v.len() > 1 && v.starts_with('0') {
        u64::from_str_radix(&v[1..], 8).ok()
    } else {
        v.parse::<u64>().ok()
    }
}

/// True when element `qname`, in `scope`, is `local` in the dnsmasq namespace.
fn is_dnsmasq(qname: &str, scope: &[(String, String)], local: &str) -> bool {
    let name_local = qname.split_once(':').map_or(qname, |(_, l)| l);
    name_local == local && resolve(scope, prefix_of(qname)) == Some(DNSMASQ_NS)
}

impl Walker<'_> {
    /// `<virtualport>` at `path`; `require_type` on a network (libvirt's
    /// `VIR_VPORT_XML_REQUIRE_TYPE`), not in a portgroup.
    pub(crate) fn virtualport(
        &mut self,
        n: &Node,
        path: &str,
        require_type: bool,
    ) -> Result<VirtualPort, XmlError> {
        self.check_libvirt(n, path, &["type"], &["parameters"], &["parameters"]);
        let kind = match n.attr("type") {
            None => None,
            Some(t) => Some(VirtualPortType::from_xml(t).ok_or_else(|| {
                self.report.value_err(
                    n,
                    &format!("{path}/@type"),
                    t,
                    "one of 802.1Qbg, 802.1Qbh, openvswitch, midonet",
                )
            })?),
        };
        if kind.is_none() && require_type {
            return Err(self
                .report
                .structure(n, path, "missing required virtualport type"));
        }
        let mut vp = VirtualPort {
            kind,
            ..VirtualPort::default()
        };
        let Some(params) = n.kid("parameters") else {
            return Ok(vp);
        };
        let pp = format!("{path}/parameters");
        self.check_libvirt(
            params,
            &pp,
            &[
                "managerid",
                "typeid",
                "typeidversion",
                "instanceid",
                "profileid",
                "interfaceid",
            ],
            &[],
            &[],
        );
        let number = |w: &Self, name: &str, max: u64| -> Result<Option<u64>, XmlError> {
            match params.attr(name) {
                None => Ok(None),
                Some(v) => match c_unsigned(v) {
                    Some(x) if x <= max => Ok(Some(x)),
                    _ => Err(w.report.value_err(
                        params,
                        &format!("{pp}/@{name}"),
                        v,
                        &format!("a number from 0 to {max}"),
                    )),
                },
            }
        };
        // The limits make the narrowing conversions lossless.
        vp.manager_id = number(self, "managerid", 0xff)?.map(|x| x as u8);
        vp.type_id = number(self, "typeid", 0xff_ffff)?.map(|x| x as u32);
        vp.type_id_version = number(self, "typeidversion", 0xff)?.map(|x| x as u8);
        let uuid_attr = |w: &Self, name: &str| -> Result<Option<uuid::Uuid>, XmlError> {
            match params.attr(name) {
                None => Ok(None),
                Some(v) => uuid::Uuid::parse_str(v.trim()).map(Some).map_err(|_| {
                    w.report.value_err(
                        params,
                        &format!("{pp}/@{name}"),
                        v,
                        "a UUID like 8ee3cc4f-5ea0-4a4b-b5a7-0d9ea38a6d61",
                    )
                }),
            }
        };
        vp.instance_id = uuid_attr(self, "instanceid")?;
        vp.interface_id = uuid_attr(self, "interfaceid")?;
        if let Some(p) = params.attr("profileid") {
            if p.len() > PROFILE_ID_MAX {
                return Err(self.report.value_err(
                    params,
                    &format!("{pp}/@profileid"),
                    p,
                    &format!("profileid parameter too long (at most {PROFILE_ID_MAX} bytes)"),
                ));
            }
            // libvirt keeps it in a C string: an empty one is no profile.
            vp.profile_id = (!p.is_empty()).then(|| p.to_string());
        }
        // virNetDevVPortProfileCheckNoExtras.
        let extra = match kind {
            Some(VirtualPortType::Qbg) => [
                ("profileid", vp.profile_id.is_some()),
                ("interfaceid", vp.interface_id.is_some()),
            ]
            .into_iter()
            .find(|(_, set)| *set),
            Some(VirtualPortType::Qbh) => [
                ("managerid", vp.manager_id.is_some()),
                ("typeid", vp.type_id.is_some()),
                ("typeidversion", vp.type_id_version.is_some()),
                ("instanceid", vp.instance_id.is_some()),
                ("interfaceid", vp.interface_id.is_some()),
            ]
            .into_iter()
            .find(|(_, set)| *set),
            Some(VirtualPortType::OpenVswitch) => [
                ("managerid", vp.manager_id.is_some()),
                ("typeid", vp.type_id.is_some()),
                ("typeidversion", vp.type_id_version.is_some()),
                ("instanceid", vp.instance_id.is_some()),
            ]
            .into_iter()
            .find(|(_, set)| *set),
            Some(VirtualPortType::Midonet) | None => None,
        };
        if let (Some((name, _)), Some(kind)) = (extra, kind) {
            return Err(self.report.structure(
                params,
                &format!("{pp}/@{name}"),
                format!(
                    "extra {name} unsupported in <virtualport type='{}'>",
                    kind.as_str()
                ),
            ));
        }
        Ok(vp)
    }

    /// `<vlan>` at `path` (`virNetDevVlanParse`).
    pub(crate) fn vlan(&mut self, n: &Node, path: &str) -> Result<Vlan, XmlError> {
        self.check_libvirt(n, path, &["trunk"], &["tag"], &[]);
        let tp = format!("{path}/tag");
        let tags: Vec<&Node> = n.kids("tag").collect();
        if tags.is_empty() {
            return Err(self.report.structure(
                n,
                path,
                "missing tag id - each <vlan> must have at least one <tag id='n'/> subelement",
            ));
        }
        let mut vlan = Vlan::default();
        for t in &tags {
            self.check_libvirt(t, &tp, &["id", "nativeMode"], &[], &[]);
            let id = self.required(t, &tp, "id")?;
            let id = match id.parse::<u32>() {
                Ok(x) if x <= u32::from(VLAN_ID_MAX) => x as u16,
                Ok(x) => {
                    return Err(self.report.value_err(
                        t,
                        &format!("{tp}/@id"),
                        id,
                        &format!("vlan tag id {x} too large (maximum {VLAN_ID_MAX})"),
                    ))
                }
                Err(_) => {
                    return Err(self.report.value_err(
                        t,
                        &format!("{tp}/@id"),
                        id,
                        "a VLAN id 0-4095",
                    ))
                }
            };
            let mode = self.choice(
                t,
                &tp,
                "nativeMode",
                &[
                    ("tagged", NativeVlanMode::Tagged),
                    ("untagged", NativeVlanMode::Untagged),
                ],
                "'tagged' or 'untagged'",
            )?;
            if let Some(mode) = mode {
                if vlan.native.is_some() {
                    return Err(self
                        .report
                        .structure(t, &tp, "duplicate native vlan setting"));
                }
                vlan.native = Some((mode, id));
            }
            vlan.tags.push(id);
        }
        vlan.trunk = tags.len() > 1;
        // An empty trunk='' reads as absent (XPath string()).
        if let Some(trunk) = n.attr("trunk").filter(|t| !t.is_empty()) {
            vlan.trunk = trunk.eq_ignore_ascii_case("yes");
            if !vlan.trunk {
                let ap = format!("{path}/@trunk");
                if tags.len() > 1 {
                    return Err(self.report.value_err(
                        n,
                        &ap,
                        trunk,
                        "trunk='yes' is required for more than one vlan tag",
                    ));
                }
                if vlan.native.is_some() {
                    return Err(self.report.value_err(
                        n,
                        &ap,
                        trunk,
                        "trunk='no' is not allowed with a native vlan id",
                    ));
                }
                if !trunk.eq_ignore_ascii_case("no") {
                    return Err(self.report.value_err(n, &ap, trunk, "'yes' or 'no'"));
                }
            }
        }
        Ok(vlan)
    }

    /// `<bandwidth>` at `path` of a network or portgroup
    /// (`virNetDevBandwidthParse` without a class id, floor not allowed).
    pub(crate) fn bandwidth(
        &mut self,
        n: &Node,
        path: &str,
    ) -> Result<Option<Bandwidth>, XmlError> {
        // libvirt silently ignores other children.
        self.check_libvirt(n, path, &[], &["inbound", "outbound"], &[]);
        if n.attr("classID").is_some() {
            return Err(self.report.structure(
                n,
                &format!("{path}/@classID"),
                "classID attribute not supported on <bandwidth> in this usage context",
            ));
        }
        let mut bw = Bandwidth::default();
        for (dir, slot) in [("inbound", 0), ("outbound", 1)] {
            let nodes: Vec<&Node> = n.kids(dir).collect();
            if nodes.len() > 1 {
                return Err(self.report.structure(
                    nodes[1],
                    path,
                    format!("only one child <{dir}> element allowed"),
                ));
            }
            let Some(r) = nodes.first() else { continue };
            let rp = format!("{path}/{dir}");
            self.check_libvirt(r, &rp, &["average", "peak", "burst", "floor"], &[], &[]);
            let num = |w: &Self, name: &str| -> Result<Option<u64>, XmlError> {
                match r.attr(name) {
                    None => Ok(None),
                    Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                        w.report.value_err(
                            r,
                            &format!("{rp}/@{name}"),
                            v,
                            "a number (KiB/s, or KiB for burst)",
                        )
                    }),
                }
            };
            let average = num(self, "average")?;
            let peak = num(self, "peak")?;
            let burst = num(self, "burst")?;
            let floor = num(self, "floor")?;
            if average.is_none() && floor.is_none() {
                return Err(self.report.structure(
                    r,
                    &rp,
                    "missing mandatory average or floor attributes",
                ));
            }
            if average.is_none() && (peak.is_some() || burst.is_some()) {
                return Err(self.report.structure(
                    r,
                    &rp,
                    "'peak' and 'burst' require 'average' attribute",
                ));
            }
            let nonzero = |v: Option<u64>| v.filter(|&x| x != 0);
            if nonzero(floor).is_some() {
                let why = if slot == 0 {
                    "floor attribute is not supported for this config (only on a guest's port)"
                } else {
                    "'floor' attribute allowed only in <inbound> element"
                };
                return Err(self.report.structure(r, &format!("{rp}/@floor"), why));
            }
            let rate = BandwidthRate {
                average: nonzero(average),
                peak: nonzero(peak),
                burst: nonzero(burst),
                floor: None,
            };
            if slot == 0 {
                bw.inbound = Some(rate);
            } else {
                bw.outbound = Some(rate);
            }
        }
        Ok((bw.inbound.is_some() || bw.outbound.is_some()).then_some(bw))
    }

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
            let vp = self.virtualport(v, &format!("{p}/virtualport"), false)?;
            // An empty one (no type, no parameters) is not printed by
            // libvirt, so it does not survive a define and dump there
            // either: slipway drops it at once. (libvirtd's VLAN check
            // would still count it on the first define: a difference only
            // for a portgroup with both an empty <virtualport/> and a
            // <vlan> on an Open vSwitch network, which libvirtd refuses.)
            pg.virtualport = (vp != VirtualPort::default()).then_some(vp);
        }
        if let Some(b) = n.kid("bandwidth") {
            pg.bandwidth = self.bandwidth(b, &format!("{p}/bandwidth"))?;
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
