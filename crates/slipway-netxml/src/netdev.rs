//! The port settings libvirt shares between a network, its `<portgroup>`s,
//! a guest's `<interface>` and a network port (`<networkport>`):
//! `<virtualport>`, `<vlan>` and `<bandwidth>`. One set of types, one
//! reader and one printer for each, as libvirt has one for each
//! (`netdev_vport_profile_conf.c`, `netdev_vlan_conf.c`,
//! `netdev_bandwidth_conf.c` in src/conf of libvirt 9.0).
//!
//! Theory of operation: the readers are methods of the element-tree reader
//! ([`TreeReader`] with [`Located`] errors) that both the network and the
//! network port parsers are, so an error names the element or attribute
//! with its line and column, and what libvirt ignores lands in the
//! reader's `unknown`. The callers pass what libvirt's callers pass: a
//! network requires a virtualport type, only a network port may carry a
//! bandwidth `classID` and an inbound `floor`. The printers write what
//! libvirt's `…Format` functions write, at the caller's indentation.
//! Where slipway departs from libvirt (a rate of zero `average` and
//! `floor` dropped at parse, `peak`/`burst` with a zero `average`
//! refused, `profileid` escaped), it is to keep the output readable
//! again: each place says why.

use crate::tree::{c_uint, esc, Located, Node, Tag, TreeReader, XmlWriter};
use crate::XmlError;
use slipway_host::keywords;

keywords! {
    /// `<virtualport type>`.
    pub enum VirtualPortType {
        /// `802.1Qbg` (VEPA with a VSI manager).
        Qbg = "802.1Qbg",
        /// `802.1Qbh` (port profiles on the adapter).
        Qbh = "802.1Qbh",
        /// `openvswitch`: the port is on an Open vSwitch bridge.
        OpenVswitch = "openvswitch",
        /// `midonet`.
        Midonet = "midonet",
    }
}

/// Longest `profileid` libvirt stores (`LIBVIRT_IFLA_VF_PORT_PROFILE_MAX` - 1).
pub const PROFILE_ID_MAX: usize = 39;

/// `<virtualport>` with its `<parameters>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtualPort {
    /// `type`; `None` in a `<portgroup>`, an `<interface>` or a port means
    /// "whatever the network's is" (libvirt merges them when a guest
    /// connects).
    pub kind: Option<VirtualPortType>,
    /// `managerid` (802.1Qbg), 0-255.
    pub manager_id: Option<u8>,
    /// `typeid` (802.1Qbg), 24 bits.
    pub type_id: Option<u32>,
    /// `typeidversion` (802.1Qbg), 0-255.
    pub type_id_version: Option<u8>,
    /// `instanceid` (802.1Qbg).
    pub instance_id: Option<uuid::Uuid>,
    /// `interfaceid` (openvswitch, midonet): the OVS `iface-id`.
    pub interface_id: Option<uuid::Uuid>,
    /// `profileid` (openvswitch, 802.1Qbh), 1 to [`PROFILE_ID_MAX`] bytes.
    pub profile_id: Option<String>,
}

keywords! {
    /// `<tag nativeMode>`: how the native VLAN of a trunk is carried.
    pub enum NativeVlanMode {
        /// `tagged`.
        Tagged = "tagged",
        /// `untagged`.
        Untagged = "untagged",
    }
}

/// Largest VLAN id libvirt accepts.
pub const VLAN_ID_MAX: u16 = 4095;

/// `<vlan>`: the VLAN tags of a port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vlan {
    /// `trunk='yes'` (always so with several tags).
    pub trunk: bool,
    /// The `<tag id>`s in document order, each 0-4095 (at least one).
    pub tags: Vec<u16>,
    /// The native VLAN of a trunk: mode and tag id (the `<tag>` that
    /// carried `nativeMode`).
    pub native: Option<(NativeVlanMode, u16)>,
}

/// `<inbound>` or `<outbound>`: rates in KiB/s, burst in KiB. As in
/// libvirt (`virNetDevBandwidthRate`), 0 means "not set" for every field.
/// A parsed rate always has a non-zero `average` or `floor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BandwidthRate {
    /// `average`.
    pub average: u64,
    /// `peak` (needs `average`).
    pub peak: u64,
    /// `floor`: the guaranteed minimum, only on the `<inbound>` of a
    /// network port (libvirt refuses it on a network or a portgroup).
    pub floor: u64,
    /// `burst` (needs `average`).
    pub burst: u64,
}

/// `<bandwidth>`: traffic shaping of a network, a portgroup or a port; at
/// least one of the rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// `classID`: the traffic-control class of a network port's `floor`
    /// (0 = none; only a network port carries one).
    pub class_id: u32,
    /// `<inbound>`: traffic toward the guests (or into the network).
    pub inbound: Option<BandwidthRate>,
    /// `<outbound>`: traffic from the guests.
    pub outbound: Option<BandwidthRate>,
}

impl Bandwidth {
    /// The inbound `floor`, 0 when none (libvirt's `virNetDevBandwidthHasFloor`).
    pub fn floor(&self) -> u64 {
        self.inbound.map_or(0, |r| r.floor)
    }
}

/// Where each `<bandwidth>` is and what it may carry (libvirt's
/// `class_id` and `allowFloor` arguments of `virNetDevBandwidthParse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BandwidthUse {
    /// A network's or a portgroup's: no `classID`, no `floor`.
    Network,
    /// A network port's: `classID` and an inbound `floor`.
    Port,
}

type Reader<'a> = TreeReader<Located<'a>>;

impl Reader<'_> {
    /// `<virtualport>` at `path` (`virNetDevVPortProfileParse`):
    /// `require_type` on a network (`VIR_VPORT_XML_REQUIRE_TYPE`). `None`
    /// for one that says nothing (no type, no parameter), which libvirt
    /// keeps but never prints.
    pub(crate) fn virtualport(
        &mut self,
        n: &Node,
        path: &str,
        require_type: bool,
    ) -> Result<Option<VirtualPort>, XmlError> {
        self.check(n, path, &["type"], &["parameters"]);
        if n.kids("parameters").count() > 1 {
            self.unknown.push(format!(
                "{path}/parameters (repeated; only the first is used)"
            ));
        }
        let kind = match n.attr("type") {
            None => None,
            Some(t) => Some(VirtualPortType::from_keyword(t).ok_or_else(|| {
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
        if let Some(params) = n.kid("parameters") {
            self.virtualport_parameters(params, &format!("{path}/parameters"), &mut vp)?;
        }
        Ok((vp != VirtualPort::default()).then_some(vp))
    }

    fn virtualport_parameters(
        &mut self,
        params: &Node,
        pp: &str,
        vp: &mut VirtualPort,
    ) -> Result<(), XmlError> {
        self.check(
            params,
            pp,
            &[
                "managerid",
                "typeid",
                "typeidversion",
                "instanceid",
                "profileid",
                "interfaceid",
            ],
            &[],
        );
        // virStrToLong_ui(…, 0): decimal, 0x hexadecimal or 0 octal.
        let number = |r: &Self, name: &str, max: u32| -> Result<Option<u32>, XmlError> {
            match params.attr(name) {
                None => Ok(None),
                Some(v) => match c_uint(v) {
                    Some(x) if x <= max => Ok(Some(x)),
                    _ => Err(r.report.value_err(
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
        vp.type_id = number(self, "typeid", 0xff_ffff)?;
        vp.type_id_version = number(self, "typeidversion", 0xff)?.map(|x| x as u8);
        let uuid_attr = |r: &Self, name: &str| -> Result<Option<uuid::Uuid>, XmlError> {
            match params.attr(name) {
                None => Ok(None),
                Some(v) => uuid::Uuid::parse_str(v.trim()).map(Some).map_err(|_| {
                    r.report.value_err(
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
        let extra = match vp.kind {
            Some(VirtualPortType::Qbg) => [
                ("profileid", vp.profile_id.is_some()),
                ("interfaceid", vp.interface_id.is_some()),
            ]
            .into_iter()
            .find(|(_, set)| *set),
            Some(kind @ (VirtualPortType::Qbh | VirtualPortType::OpenVswitch)) => [
                ("managerid", vp.manager_id.is_some()),
                ("typeid", vp.type_id.is_some()),
                ("typeidversion", vp.type_id_version.is_some()),
                ("instanceid", vp.instance_id.is_some()),
                (
                    "interfaceid",
                    kind == VirtualPortType::Qbh && vp.interface_id.is_some(),
                ),
            ]
            .into_iter()
            .find(|(_, set)| *set),
            Some(VirtualPortType::Midonet) | None => None,
        };
        if let (Some((name, _)), Some(kind)) = (extra, vp.kind) {
            return Err(self.report.structure(
                params,
                &format!("{pp}/@{name}"),
                format!(
                    "extra {name} unsupported in <virtualport type='{}'>",
                    kind.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// `<vlan>` at `path` (`virNetDevVlanParse`).
    pub(crate) fn vlan(&mut self, n: &Node, path: &str) -> Result<Vlan, XmlError> {
        self.check(n, path, &["trunk"], &["tag"]);
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
            self.check(t, &tp, &["id", "nativeMode"], &[]);
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
                &NativeVlanMode::KEYWORDS,
                "'tagged' or 'untagged'",
            )?;
            // libvirt prints nativeMode on every tag whose id is the native
            // one, so a repeated tag would come back as two native settings
            // (XML that no longer reads): refused, as a trunk listing a tag
            // twice means nothing.
            if vlan.tags.contains(&id) {
                return Err(self.report.value_err(
                    t,
                    &format!("{tp}/@id"),
                    &id.to_string(),
                    &format!("vlan tag id {id} listed twice in one <vlan>"),
                ));
            }
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
        if let Some(t) = n.attr("trunk").filter(|t| !t.is_empty()) {
            vlan.trunk = t.eq_ignore_ascii_case("yes");
            if !vlan.trunk {
                let why = if tags.len() > 1 {
                    Some(format!("invalid \"trunk='{t}'\" in <vlan> - trunk='yes' is required for more than one vlan tag"))
                } else if vlan.native.is_some() {
                    Some("invalid configuration in <vlan> - \"trunk='no'\" is not allowed with a native vlan id".to_string())
                } else if !t.eq_ignore_ascii_case("no") {
                    Some(format!(
                        "invalid \"trunk='{t}'\" in <vlan> - must be yes or no"
                    ))
                } else {
                    // libvirt allows (and drops) trunk='no' on one tag.
                    None
                };
                if let Some(why) = why {
                    return Err(self.report.structure(n, &format!("{path}/@trunk"), why));
                }
            }
        }
        Ok(vlan)
    }

    /// `<bandwidth>` at `path` (`virNetDevBandwidthParse`): `None` when it
    /// has no rate that says anything.
    pub(crate) fn bandwidth(
        &mut self,
        n: &Node,
        path: &str,
        usage: BandwidthUse,
    ) -> Result<Option<Bandwidth>, XmlError> {
        // libvirt silently ignores other children.
        self.check(n, path, &["classID"], &["inbound", "outbound"]);
        let class_id = match (n.attr("classID"), usage) {
            (None, _) => 0,
            (Some(_), BandwidthUse::Network) => {
                return Err(self.report.structure(
                    n,
                    &format!("{path}/@classID"),
                    "classID attribute not supported on <bandwidth> in this usage context",
                ))
            }
            (Some(_), BandwidthUse::Port) => self
                .parsed::<u32>(n, path, "classID", "a class number (0-4294967295)")?
                .unwrap_or(0),
        };
        // libvirt looks for a repeated child before it reads either.
        for dir in ["inbound", "outbound"] {
            if let Some(second) = n.kids(dir).nth(1) {
                return Err(self.report.structure(
                    second,
                    path,
                    format!("Only one child <{dir}> element allowed"),
                ));
            }
        }
        let mut rates = [None, None];
        for (i, dir) in ["inbound", "outbound"].into_iter().enumerate() {
            let Some(r) = n.kid(dir) else { continue };
            let rp = format!("{path}/{dir}");
            let rate = self.rate(r, &rp)?;
            if rate.floor != 0 {
                if i == 1 {
                    return Err(self.report.structure(
                        r,
                        &rp,
                        "'floor' attribute allowed only in <inbound> element",
                    ));
                }
                if usage == BandwidthUse::Network {
                    return Err(self.report.structure(
                        r,
                        &rp,
                        "floor attribute is not supported for this config \
                         (only on a guest's port)",
                    ));
                }
            }
            // A rate of zero average and floor is never printed (libvirt
            // keeps it, then prints a <bandwidth> without it, which may
            // read back as none): dropped here, so that formatting is
            // stable.
            rates[i] = Some(rate).filter(|r| r.average != 0 || r.floor != 0);
        }
        let [inbound, outbound] = rates;
        if inbound.is_none() && outbound.is_none() {
            return Ok(None);
        }
        Ok(Some(Bandwidth {
            class_id,
            inbound,
            outbound,
        }))
    }

    /// `<inbound>` or `<outbound>` (`virNetDevBandwidthParseRate`).
    fn rate(&mut self, n: &Node, path: &str) -> Result<BandwidthRate, XmlError> {
        self.check(n, path, &["average", "peak", "floor", "burst"], &[]);
        let num = |r: &Self, name: &str| {
            r.parsed::<u64>(
                n,
                path,
                name,
                "a non-negative decimal number (KiB/s, or KiB for burst)",
            )
        };
        let average = num(self, "average")?;
        let peak = num(self, "peak")?;
        let floor = num(self, "floor")?;
        let burst = num(self, "burst")?;
        if average.is_none() && floor.is_none() {
            return Err(self.report.structure(
                n,
                path,
                "Missing mandatory average or floor attributes",
            ));
        }
        // libvirt checks only that `average` is present; an `average` of 0
        // is refused here too, since libvirt would then print the peak or
        // burst without it (beside a floor): output it cannot read back.
        if (peak.is_some() || burst.is_some()) && average.unwrap_or(0) == 0 {
            return Err(self.report.structure(
                n,
                path,
                "'peak' and 'burst' require 'average' attribute",
            ));
        }
        Ok(BandwidthRate {
            average: average.unwrap_or(0),
            peak: peak.unwrap_or(0),
            floor: floor.unwrap_or(0),
            burst: burst.unwrap_or(0),
        })
    }
}

/// `virNetDevVPortProfileFormat`: only the parameters that belong to the
/// type (all of them for a typeless one); nothing for one that says nothing.
pub(crate) fn write_virtualport(b: &mut XmlWriter, vp: &VirtualPort) {
    use VirtualPortType as T;
    let kind = vp.kind;
    let for_types = |types: &[T]| kind.is_none_or(|k| types.contains(&k));
    let qbg = for_types(&[T::Qbg]);
    let params = Tag::new("parameters")
        .opt("managerid", vp.manager_id.filter(|_| qbg))
        .opt("typeid", vp.type_id.filter(|_| qbg))
        .opt("typeidversion", vp.type_id_version.filter(|_| qbg))
        .opt(
            "instanceid",
            vp.instance_id.filter(|_| qbg).map(|v| v.hyphenated()),
        )
        .opt(
            "interfaceid",
            vp.interface_id
                .filter(|_| for_types(&[T::Midonet, T::OpenVswitch]))
                .map(|v| v.hyphenated()),
        )
        // libvirt prints it raw; escaped here so that no profile id can
        // break the document (a network refuses the characters libvirt
        // would print raw, see validate).
        .opt(
            "profileid",
            vp.profile_id
                .as_deref()
                .filter(|_| for_types(&[T::OpenVswitch, T::Qbh]))
                .map(esc),
        );
    // Whether any parameter is set decides the form, even one not printed.
    let no_parameters = vp.manager_id.is_none()
        && vp.type_id.is_none()
        && vp.type_id_version.is_none()
        && vp.instance_id.is_none()
        && vp.profile_id.as_deref().is_none_or(str::is_empty)
        && vp.interface_id.is_none();
    let tag = Tag::new("virtualport").opt("type", kind.map(T::as_str));
    match (kind, no_parameters) {
        (None, true) => {}
        (Some(_), true) => b.empty(tag),
        (_, false) => {
            b.start(tag);
            b.empty(params);
            b.end("virtualport");
        }
    }
}

/// `virNetDevVlanFormat`.
pub(crate) fn write_vlan(b: &mut XmlWriter, v: &Vlan) {
    if v.tags.is_empty() {
        return;
    }
    b.start(Tag::new("vlan").opt("trunk", v.trunk.then_some("yes")));
    for &id in &v.tags {
        let mode = v.native.filter(|&(_, native)| native == id);
        b.empty(
            Tag::new("tag")
                .attr("id", id)
                .opt("nativeMode", mode.map(|(m, _)| m.as_str())),
        );
    }
    b.end("vlan");
}

/// `virNetDevBandwidthFormat` with the class id of the bandwidth: a rate
/// is printed only with a non-zero `average` or `floor`, each number only
/// when non-zero.
pub(crate) fn write_bandwidth(b: &mut XmlWriter, bw: &Bandwidth) {
    let nonzero = |v: u64| Some(v).filter(|&v| v != 0);
    b.start(Tag::new("bandwidth").opt("classID", nonzero(bw.class_id.into())));
    for (name, rate) in [("inbound", &bw.inbound), ("outbound", &bw.outbound)] {
        let Some(r) = rate else { continue };
        if r.average == 0 && r.floor == 0 {
            continue;
        }
        b.empty(
            Tag::new(name)
                .opt("average", nonzero(r.average))
                .opt("peak", nonzero(r.peak))
                .opt("floor", nonzero(r.floor))
                .opt("burst", nonzero(r.burst)),
        );
    }
    b.end("bandwidth");
}
