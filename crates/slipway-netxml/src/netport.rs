//! libvirt's network port: the `<networkport>` document a VM's driver (or
//! `virsh net-port-create`) hands the network driver for each interface
//! plugged into a network, and gets back with the plug filled in.
//!
//! Theory of operation: the document is read into the shared element tree
//! ([`crate::tree`]) and from there into [`NetworkPort`] by libvirt 9.0's
//! rules (`virNetworkPortDefParseXML` in src/conf/virnetworkportdef.c and
//! the helpers it calls: bandwidth, VLAN, virtualport, PCI address). As in
//! libvirt, what the port does not use is ignored, but recorded in
//! [`NetworkPort::unknown`]; every error names the element or attribute
//! (`/networkport/bandwidth/inbound/@peak`) with its line and column.
//! [`NetworkPort::to_xml`] prints byte for byte what
//! `virNetworkPortDefFormat` prints: libvirt's element order whatever the
//! input's, and its "zero means unset" conventions for bandwidth numbers
//! (checked against libvirt's own corpus, tests/virnetworkportxml2xmldata,
//! in this crate's tests).

use crate::format::esc;
use crate::parse::Located;
use crate::tree::{c_uint, read_tree, Node, TreeReader};
use crate::{HostdevDriver, MacAddr, MacTableManager, PciAddress, XmlError};

/// One network port (`<networkport>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPort {
    /// `<uuid>`: the port's identity (required: libvirt refuses a port
    /// without one, "network port has no uuid").
    pub uuid: uuid::Uuid,
    /// `<owner><name>`: the VM (or whatever) the port is for.
    pub owner_name: String,
    /// `<owner><uuid>`.
    pub owner_uuid: uuid::Uuid,
    /// `<group>`: the network's `<portgroup>` the port belongs to.
    pub group: Option<String>,
    /// `<mac address>`: the guest's MAC address on the network.
    pub mac: MacAddr,
    /// `<virtualport>`: the port profile (Open vSwitch, 802.1Qbg/Qbh, midonet).
    pub virtualport: Option<VirtualPort>,
    /// `<bandwidth>`: QoS of the port.
    pub bandwidth: Option<Bandwidth>,
    /// `<vlan>`: VLAN tags.
    pub vlan: Option<Vlan>,
    /// `<port isolated>`: no traffic with other isolated ports of the bridge.
    pub isolated: Option<bool>,
    /// `<rxfilters trustGuest>`: trust the guest's receive-filter changes.
    pub trust_guest_rx_filters: Option<bool>,
    /// `<plug>`: how the port is connected; `None` (libvirt's plug type
    /// `none`) until the network driver allocates the port.
    pub plug: Option<Plug>,
    /// Paths of elements and attributes libvirt ignores (unknown ones, a
    /// repeated element of which only the first is read). Never formatted.
    pub unknown: Vec<String>,
}

/// `<bandwidth>`: inbound and outbound rates (kB/s, kB), at least one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// `classID`: the traffic-control class of the port's `floor` (0 = none).
    pub class_id: u32,
    /// `<inbound>`: traffic to the guest.
    pub inbound: Option<Rate>,
    /// `<outbound>`: traffic from the guest (no `floor`).
    pub outbound: Option<Rate>,
}

/// `<inbound>` / `<outbound>`. As in libvirt, 0 means "not set" for every
/// field, and a rate with neither `average` nor `floor` is not printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    /// `average` (kB/s).
    pub average: u64,
    /// `peak` (kB/s).
    pub peak: u64,
    /// `floor` (kB/s, inbound only): the guaranteed minimum.
    pub floor: u64,
    /// `burst` (kB).
    pub burst: u64,
}

/// `<vlan>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    /// `trunk='yes'` (implied by more than one tag).
    pub trunk: bool,
    /// `<tag id>`s, 0-4095, in document order (at least one).
    pub tags: Vec<u16>,
    /// The native VLAN: `nativeMode` and the tag that carries it.
    pub native: Option<(NativeMode, u16)>,
}

/// `<tag nativeMode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeMode {
    /// `tagged`.
    Tagged,
    /// `untagged`.
    Untagged,
}

/// `<virtualport type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualPortType {
    /// `802.1Qbg`.
    Qbg,
    /// `802.1Qbh`.
    Qbh,
    /// `openvswitch`.
    OpenVswitch,
    /// `midonet`.
    Midonet,
}

/// `<virtualport>` with its `<parameters>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtualPort {
    /// `type`; `None` leaves it to be merged with the network's.
    pub kind: Option<VirtualPortType>,
    /// `managerid` (802.1Qbg).
    pub manager_id: Option<u8>,
    /// `typeid` (802.1Qbg, 24 bits).
    pub type_id: Option<u32>,
    /// `typeidversion` (802.1Qbg).
    pub type_id_version: Option<u8>,
    /// `instanceid` (802.1Qbg).
    pub instance_id: Option<uuid::Uuid>,
    /// `interfaceid` (openvswitch, midonet).
    pub interface_id: Option<uuid::Uuid>,
    /// `profileid` (openvswitch, 802.1Qbh), at most 39 characters.
    pub profile_id: Option<String>,
}

/// macvtap modes of a `direct` plug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    /// `vepa` (libvirt's default).
    Vepa,
    /// `private`.
    Private,
    /// `bridge`.
    Bridge,
    /// `passthrough`.
    Passthrough,
}

/// `<plug type>` and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plug {
    /// `type='network'`: a tap on the network's own bridge.
    Network {
        /// `bridge`.
        bridge: String,
        /// `macTableManager`.
        mac_table_manager: Option<MacTableManager>,
    },
    /// `type='bridge'`: a tap on the host bridge a `<forward mode='bridge'>`
    /// network names.
    Bridge {
        /// `bridge`.
        bridge: String,
        /// `macTableManager`.
        mac_table_manager: Option<MacTableManager>,
    },
    /// `type='direct'`: macvtap on a host device.
    Direct {
        /// `dev`.
        dev: String,
        /// `mode`.
        mode: MacvlanMode,
    },
    /// `type='hostdev-pci'`: an SR-IOV virtual function given to the guest.
    HostdevPci {
        /// `managed`.
        managed: Option<bool>,
        /// `<driver name>`.
        driver: Option<HostdevDriver>,
        /// `<address>`.
        address: PciAddress,
    },
}

impl Plug {
    /// The `type` attribute.
    pub fn type_str(&self) -> &'static str {
        match self {
            Plug::Network { .. } => "network",
            Plug::Bridge { .. } => "bridge",
            Plug::Direct { .. } => "direct",
            Plug::HostdevPci { .. } => "hostdev-pci",
        }
    }
}

impl VirtualPortType {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VirtualPortType::Qbg => "802.1Qbg",
            VirtualPortType::Qbh => "802.1Qbh",
            VirtualPortType::OpenVswitch => "openvswitch",
            VirtualPortType::Midonet => "midonet",
        }
    }
}

impl MacvlanMode {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Private => "private",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthrough => "passthrough",
        }
    }
}

impl NativeMode {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NativeMode::Tagged => "tagged",
            NativeMode::Untagged => "untagged",
        }
    }
}

impl Bandwidth {
    /// The inbound `floor`, 0 when none (libvirt's `virNetDevBandwidthHasFloor`).
    pub fn floor(&self) -> u64 {
        self.inbound.map_or(0, |r| r.floor)
    }
}

impl NetworkPort {
    /// Parses a `<networkport>` document by libvirt's rules.
    pub fn from_xml(xml: &str) -> Result<NetworkPort, XmlError> {
        let root = read_tree(xml)?;
        let mut r = TreeReader::new(Located { src: xml });
        r.port(&root)
    }

    /// Formats the port exactly as libvirt's `virNetworkPortDefFormat`.
    pub fn to_xml(&self) -> String {
        format(self)
    }
}

/// Yes/no choices of libvirt's tristate attributes.
const YES_NO: &[(&str, bool)] = &[("yes", true), ("no", false)];

type Reader<'a> = TreeReader<Located<'a>>;

impl Reader<'_> {
    /// The XPath string-value of the first child `name`, `None` when it is
    /// absent or empty (libvirt's `virXPathString` returns NULL for both).
    fn text_of(&mut self, node: &Node, path: &str, name: &str) -> Option<String> {
        let kid = node.kid(name)?;
        for (k, _) in &kid.attrs {
            self.unknown.push(format!("{path}/{name}/@{k}"));
        }
        Some(kid.string_value.clone()).filter(|s| !s.is_empty())
    }

    fn uuid_text(&self, node: &Node, path: &str, text: &str) -> Result<uuid::Uuid, XmlError> {
        uuid::Uuid::parse_str(text.trim()).map_err(|_| {
            self.report.value_err(
                node,
                path,
                text,
                "a UUID like 5d744f21-ba4a-4d6e-bdb2-30a35ff3207d",
            )
        })
    }

    fn port(&mut self, root: &Node) -> Result<NetworkPort, XmlError> {
        let p = "/networkport";
        if root.name != "networkport" {
            return Err(self.report.structure(
                root,
                &format!("/{}", root.name),
                format!(
                    "expecting root element of 'networkport', not '{}'",
                    root.name
                ),
            ));
        }
        let known = [
            "uuid",
            "owner",
            "group",
            "mac",
            "virtualport",
            "bandwidth",
            "vlan",
            "port",
            "rxfilters",
            "plug",
        ];
        self.check(root, p, &[], &known);
        for name in known {
            if root.kids(name).count() > 1 {
                self.unknown
                    .push(format!("{p}/{name} (repeated; only the first is used)"));
            }
        }

        let uuid_text = self
            .text_of(root, p, "uuid")
            .ok_or_else(|| self.report.structure(root, p, "network port has no uuid"))?;
        let uuid_node = root.kid("uuid").unwrap_or(root);
        let uuid = self.uuid_text(uuid_node, "/networkport/uuid", &uuid_text)?;

        let owner = root.kid("owner").ok_or_else(|| {
            self.report
                .structure(root, p, "network port has no owner name")
        })?;
        let op = "/networkport/owner";
        self.check(owner, op, &[], &["name", "uuid"]);
        let owner_name = self.text_of(owner, op, "name").ok_or_else(|| {
            self.report
                .structure(owner, op, "network port has no owner name")
        })?;
        let owner_uuid_text = self.text_of(owner, op, "uuid").ok_or_else(|| {
            self.report
                .structure(owner, op, "network port has no owner UUID")
        })?;
        let owner_uuid = self.uuid_text(
            owner.kid("uuid").unwrap_or(owner),
            "/networkport/owner/uuid",
            &owner_uuid_text,
        )?;

        let group = self.text_of(root, p, "group");

        let virtualport = match root.kid("virtualport") {
            Some(n) => self.port_virtualport(n)?,
            None => None,
        };

        let mac_node = root.kid("mac");
        let mac_text = mac_node
            .and_then(|n| n.attr("address"))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                self.report
                    .structure(mac_node.unwrap_or(root), p, "network port has no mac")
            })?;
        let mac_node = mac_node.unwrap_or(root);
        self.check(mac_node, "/networkport/mac", &["address"], &[]);
        let mac: MacAddr = mac_text.parse().map_err(|_| {
            self.report.value_err(
                mac_node,
                "/networkport/mac/@address",
                mac_text,
                "a MAC address like 52:54:00:7b:35:93",
            )
        })?;

        let bandwidth = match root.kid("bandwidth") {
            Some(n) => self.port_bandwidth(n)?,
            None => None,
        };
        let vlan = match root.kid("vlan") {
            Some(n) => Some(self.port_vlan(n)?),
            None => None,
        };
        let isolated = match root.kid("port") {
            Some(n) => {
                let pp = "/networkport/port";
                self.check(n, pp, &["isolated"], &[]);
                self.choice(n, pp, "isolated", YES_NO, "'yes' or 'no'")?
            }
            None => None,
        };
        let trust_guest_rx_filters = match root.kid("rxfilters") {
            Some(n) => {
                let rp = "/networkport/rxfilters";
                self.check(n, rp, &["trustGuest"], &[]);
                self.choice(n, rp, "trustGuest", YES_NO, "'yes' or 'no'")?
            }
            None => None,
        };
        let plug = match root.kid("plug") {
            Some(n) => self.plug(n)?,
            None => None,
        };
        Ok(NetworkPort {
            uuid,
            owner_name,
            owner_uuid,
            group,
            mac,
            virtualport,
            bandwidth,
            vlan,
            isolated,
            trust_guest_rx_filters,
            plug,
            unknown: std::mem::take(&mut self.unknown),
        })
    }

    /// `<bandwidth>` (`virNetDevBandwidthParse`, floor allowed): `None`
    /// when it has neither `<inbound>` nor `<outbound>`.
    fn port_bandwidth(&mut self, n: &Node) -> Result<Option<Bandwidth>, XmlError> {
        let p = "/networkport/bandwidth";
        self.check(n, p, &["classID"], &["inbound", "outbound"]);
        let class_id = self
            .parsed::<u32>(n, p, "classID", "a class number (0-4294967295)")?
            .unwrap_or(0);
        let mut rates = [None, None];
        for (i, name) in ["inbound", "outbound"].into_iter().enumerate() {
            let kids: Vec<&Node> = n.kids(name).collect();
            if let Some(second) = kids.get(1) {
                return Err(self.report.structure(
                    second,
                    p,
                    format!("Only one child <{name}> element allowed"),
                ));
            }
            if let Some(k) = kids.first() {
                rates[i] = Some(self.rate(k, &format!("{p}/{name}"))?);
            }
        }
        // A rate of zero average and floor is never printed (libvirt keeps
        // it, then prints an empty <bandwidth> that reads back as none):
        // dropped here, so that formatting is stable.
        let [inbound, outbound] = rates.map(|r| r.filter(|r| r.average != 0 || r.floor != 0));
        if let Some(out) = outbound {
            if out.floor != 0 {
                let node = n.kid("outbound").unwrap_or(n);
                return Err(self.report.structure(
                    node,
                    &format!("{p}/outbound"),
                    "'floor' attribute allowed only in <inbound> element",
                ));
            }
        }
        if inbound.is_none() && outbound.is_none() {
            return Ok(None);
        }
        Ok(Some(Bandwidth {
            class_id,
            inbound,
            outbound,
        }))
    }

    fn rate(&mut self, n: &Node, path: &str) -> Result<Rate, XmlError> {
        self.check(n, path, &["average", "peak", "floor", "burst"], &[]);
        let num =
            |r: &Self, name: &str| r.parsed::<u64>(n, path, name, "a non-negative decimal number");
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
        // burst without it: output it cannot read back.
        if (peak.is_some() || burst.is_some()) && average.unwrap_or(0) == 0 {
            return Err(self.report.structure(
                n,
                path,
                "'peak' and 'burst' require 'average' attribute",
            ));
        }
        Ok(Rate {
            average: average.unwrap_or(0),
            peak: peak.unwrap_or(0),
            floor: floor.unwrap_or(0),
            burst: burst.unwrap_or(0),
        })
    }

    /// `<vlan>` (`virNetDevVlanParse`).
    fn port_vlan(&mut self, n: &Node) -> Result<Vlan, XmlError> {
        let p = "/networkport/vlan";
        self.check(n, p, &["trunk"], &["tag"]);
        let tp = "/networkport/vlan/tag";
        let mut tags = Vec::new();
        let mut native = None;
        for t in n.kids("tag") {
            self.check(t, tp, &["id", "nativeMode"], &[]);
            let id = self.required(t, tp, "id")?;
            let id: u16 = match id.parse::<u32>() {
                Ok(v) if v <= 4095 => v as u16,
                Ok(_) => {
                    return Err(self.report.value_err(
                        t,
                        &format!("{tp}/@id"),
                        id,
                        "a VLAN tag id of at most 4095",
                    ))
                }
                Err(_) => {
                    return Err(self.report.value_err(
                        t,
                        &format!("{tp}/@id"),
                        id,
                        "a non-negative integer",
                    ))
                }
            };
            let mode = self.choice(
                t,
                tp,
                "nativeMode",
                &[
                    ("tagged", NativeMode::Tagged),
                    ("untagged", NativeMode::Untagged),
                ],
                "'tagged' or 'untagged'",
            )?;
            if let Some(mode) = mode {
                if native.is_some() {
                    return Err(self
                        .report
                        .structure(t, tp, "duplicate native vlan setting"));
                }
                native = Some((mode, id));
            }
            tags.push(id);
        }
        if tags.is_empty() {
            return Err(self.report.structure(
                n,
                p,
                "missing tag id - each <vlan> must have at least one <tag id='n'/> subelement",
            ));
        }
        let mut trunk = tags.len() > 1;
        if let Some(t) = n.attr("trunk").filter(|t| !t.is_empty()) {
            trunk = t.eq_ignore_ascii_case("yes");
            if !trunk {
                let why = if tags.len() > 1 {
                    Some(format!("invalid \"trunk='{t}'\" in <vlan> - trunk='yes' is required for more than one vlan tag"))
                } else if native.is_some() {
                    Some("invalid configuration in <vlan> - \"trunk='no'\" is not allowed with a native vlan id".to_string())
                } else if !t.eq_ignore_ascii_case("no") {
                    Some(format!(
                        "invalid \"trunk='{t}'\" in <vlan> - must be yes or no"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(self.report.structure(n, &format!("{p}/@trunk"), why));
                }
            }
        }
        Ok(Vlan {
            trunk,
            tags,
            native,
        })
    }

    /// `<virtualport>` (`virNetDevVPortProfileParse` with no flags):
    /// `None` for one that says nothing (libvirt prints nothing for it).
    fn port_virtualport(&mut self, n: &Node) -> Result<Option<VirtualPort>, XmlError> {
        let p = "/networkport/virtualport";
        self.check(n, p, &["type"], &["parameters"]);
        let kind = match n.attr("type") {
            None => None,
            Some(t) => Some(
                [
                    VirtualPortType::Qbg,
                    VirtualPortType::Qbh,
                    VirtualPortType::OpenVswitch,
                    VirtualPortType::Midonet,
                ]
                .into_iter()
                .find(|k| k.as_str() == t)
                .ok_or_else(|| {
                    self.report.value_err(
                        n,
                        &format!("{p}/@type"),
                        t,
                        "'802.1Qbg', '802.1Qbh', 'openvswitch' or 'midonet'",
                    )
                })?,
            ),
        };
        let mut vp = VirtualPort {
            kind,
            ..VirtualPort::default()
        };
        if let Some(params) = n.kid("parameters") {
            let pp = "/networkport/virtualport/parameters";
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
            let num = |r: &Self, name: &str, max: u32| -> Result<Option<u32>, XmlError> {
                match params.attr(name) {
                    None => Ok(None),
                    Some(v) => match c_uint(v) {
                        Some(x) if x <= max => Ok(Some(x)),
                        _ => Err(r.report.value_err(
                            params,
                            &format!("{pp}/@{name}"),
                            v,
                            &format!("a number from 0 to {max:#x}"),
                        )),
                    },
                }
            };
            // The limits make the narrowing conversions lossless.
            vp.manager_id = num(self, "managerid", 0xff)?.map(|v| v as u8);
            vp.type_id = num(self, "typeid", 0xff_ffff)?;
            vp.type_id_version = num(self, "typeidversion", 0xff)?.map(|v| v as u8);
            for (name, slot) in [
                ("instanceid", &mut vp.instance_id),
                ("interfaceid", &mut vp.interface_id),
            ] {
                if let Some(v) = params.attr(name) {
                    *slot = Some(self.uuid_text(params, &format!("{pp}/@{name}"), v)?);
                }
            }
            if let Some(v) = params.attr("profileid") {
                if v.len() >= 40 {
                    return Err(self.report.value_err(
                        params,
                        &format!("{pp}/@profileid"),
                        v,
                        "a profile id of at most 39 bytes",
                    ));
                }
                vp.profile_id = Some(v.to_string());
            }
        }
        // virNetDevVPortProfileCheckNoExtras.
        let extra = match vp.kind {
            Some(VirtualPortType::Qbg) => {
                if vp.profile_id.is_some() {
                    Some("profileid")
                } else if vp.interface_id.is_some() {
                    Some("interfaceid")
                } else {
                    None
                }
            }
            Some(VirtualPortType::Qbh) | Some(VirtualPortType::OpenVswitch) => {
                if vp.manager_id.is_some() {
                    Some("managerid")
                } else if vp.type_id.is_some() {
                    Some("typeid")
                } else if vp.type_id_version.is_some() {
                    Some("typeidversion")
                } else if vp.instance_id.is_some() {
                    Some("instanceid")
                } else if vp.kind == Some(VirtualPortType::Qbh) && vp.interface_id.is_some() {
                    Some("interfaceid")
                } else {
                    None
                }
            }
            _ => None,
        };
        if let (Some(extra), Some(kind)) = (extra, vp.kind) {
            return Err(self.report.structure(
                n,
                p,
                format!(
                    "extra {extra} unsupported in <virtualport type='{}'>",
                    kind.as_str()
                ),
            ));
        }
        let empty = VirtualPort::default();
        Ok((vp != empty).then_some(vp))
    }

    /// `<plug>`: `None` for type `none` (or no type).
    fn plug(&mut self, n: &Node) -> Result<Option<Plug>, XmlError> {
        let p = "/networkport/plug";
        let ty = self.choice(
            n,
            p,
            "type",
            &[
                ("none", 0u8),
                ("network", 1),
                ("bridge", 2),
                ("direct", 3),
                ("hostdev-pci", 4),
            ],
            "'none', 'network', 'bridge', 'direct' or 'hostdev-pci'",
        )?;
        let mtm = |r: &Self| {
            r.choice(
                n,
                p,
                "macTableManager",
                &[
                    ("kernel", MacTableManager::Kernel),
                    ("libvirt", MacTableManager::Libvirt),
                ],
                "'kernel' or 'libvirt'",
            )
        };
        let plug = match ty.unwrap_or(0) {
            1 | 2 => {
                self.check(n, p, &["type", "bridge", "macTableManager"], &[]);
                let bridge = self
                    .attr_or(n, p, "bridge", "Missing network port bridge name")?
                    .to_string();
                let mac_table_manager = mtm(self)?;
                if ty == Some(1) {
                    Plug::Network {
                        bridge,
                        mac_table_manager,
                    }
                } else {
                    Plug::Bridge {
                        bridge,
                        mac_table_manager,
                    }
                }
            }
            3 => {
                self.check(n, p, &["type", "dev", "mode"], &[]);
                let dev = self
                    .attr_or(n, p, "dev", "Missing network port link device name")?
                    .to_string();
                let mode = self
                    .choice(
                        n,
                        p,
                        "mode",
                        &[
                            ("vepa", MacvlanMode::Vepa),
                            ("private", MacvlanMode::Private),
                            ("bridge", MacvlanMode::Bridge),
                            ("passthrough", MacvlanMode::Passthrough),
                        ],
                        "'vepa', 'private', 'bridge' or 'passthrough'",
                    )?
                    .unwrap_or(MacvlanMode::Vepa);
                Plug::Direct { dev, mode }
            }
            4 => {
                self.check(n, p, &["type", "managed"], &["driver", "address"]);
                let managed = self.choice(n, p, "managed", YES_NO, "'yes' or 'no'")?;
                let driver = match n.kid("driver") {
                    Some(d) => {
                        let dp = "/networkport/plug/driver";
                        self.check(d, dp, &["name"], &[]);
                        match d.attr("name") {
                            None | Some("") => None,
                            Some(_) => self.choice(
                                d,
                                dp,
                                "name",
                                &[("kvm", HostdevDriver::Kvm), ("vfio", HostdevDriver::Vfio)],
                                "'kvm' or 'vfio'",
                            )?,
                        }
                    }
                    None => None,
                };
                let a = n.kid("address").ok_or_else(|| {
                    self.report
                        .structure(n, p, "Missing network port PCI address")
                })?;
                let address = self.plug_address(a)?;
                Plug::HostdevPci {
                    managed,
                    driver,
                    address,
                }
            }
            _ => {
                self.check(n, p, &["type"], &[]);
                return Ok(None);
            }
        };
        Ok(Some(plug))
    }

    /// Attribute `name` of `n`, or a structure error with libvirt's `message`.
    fn attr_or<'n>(
        &self,
        n: &'n Node,
        path: &str,
        name: &str,
        message: &str,
    ) -> Result<&'n str, XmlError> {
        n.attr(name)
            .ok_or_else(|| self.report.structure(n, path, message))
    }

    /// `<address domain bus slot function>` of a hostdev plug
    /// (`virPCIDeviceAddressParseXML`): numbers as `strtoul(…, 0)`, missing
    /// ones 0, limits checked unless the address is all zero.
    fn plug_address(&mut self, a: &Node) -> Result<PciAddress, XmlError> {
        let ap = "/networkport/plug/address";
        self.check(
            a,
            ap,
            &["type", "domain", "bus", "slot", "function", "multifunction"],
            &["zpci"],
        );
        let num = |r: &Self, name: &str| -> Result<u32, XmlError> {
            match a.attr(name) {
                None => Ok(0),
                Some(v) => c_uint(v).ok_or_else(|| {
                    r.report
                        .value_err(a, &format!("{ap}/@{name}"), v, "a non-negative integer")
                }),
            }
        };
        let (domain, bus, slot, function) = (
            num(self, "domain")?,
            num(self, "bus")?,
            num(self, "slot")?,
            num(self, "function")?,
        );
        self.choice(
            a,
            ap,
            "multifunction",
            &[("on", ()), ("off", ())],
            "'on' or 'off'",
        )?;
        // libvirt skips the limits for an all-zero domain, bus and slot;
        // slipway keeps the function's limit there too (it is printed as a
        // single digit, and no device has a function above 7).
        let empty = domain == 0 && bus == 0 && slot == 0;
        let limit = if bus > 0xff {
            Some(("bus", bus, "must be <= 0xFF"))
        } else if slot > 0x1f {
            Some(("slot", slot, "must be <= 0x1F"))
        } else if function > 7 {
            Some(("function", function, "must be <= 7"))
        } else {
            None
        };
        if let Some((name, v, rule)) = limit.filter(|(name, ..)| !empty || *name == "function") {
            return Err(self.report.value_err(
                a,
                &format!("{ap}/@{name}"),
                &format!("{v:#x}"),
                rule,
            ));
        }
        // The limits make the narrowing conversions lossless.
        Ok(PciAddress {
            domain,
            bus: bus as u8,
            slot: slot as u8,
            function: function as u8,
        })
    }
}

/// The port as `virNetworkPortDefFormat` prints it.
fn format(port: &NetworkPort) -> String {
    let mut out = String::from("<networkport>\n");
    let mut line = |indent: usize, text: &str| {
        for _ in 0..indent {
            out.push(' ');
        }
        out.push_str(text);
        out.push('\n');
    };
    line(2, &format!("<uuid>{}</uuid>", port.uuid));
    line(2, "<owner>");
    line(4, &format!("<name>{}</name>", esc(&port.owner_name)));
    line(4, &format!("<uuid>{}</uuid>", port.owner_uuid));
    line(2, "</owner>");
    if let Some(g) = &port.group {
        line(2, &format!("<group>{}</group>", esc(g)));
    }
    line(2, &format!("<mac address='{}'/>", port.mac));
    if let Some(vp) = &port.virtualport {
        virtualport(&mut line, vp);
    }
    if let Some(bw) = &port.bandwidth {
        let class = if bw.class_id != 0 {
            format!(" classID='{}'", bw.class_id)
        } else {
            String::new()
        };
        line(2, &format!("<bandwidth{class}>"));
        for (name, rate) in [("inbound", &bw.inbound), ("outbound", &bw.outbound)] {
            let Some(r) = rate else { continue };
            if r.average == 0 && r.floor == 0 {
                continue;
            }
            let mut s = format!("<{name}");
            for (attr, v) in [
                ("average", r.average),
                ("peak", r.peak),
                ("floor", r.floor),
                ("burst", r.burst),
            ] {
                if v != 0 {
                    s += &format!(" {attr}='{v}'");
                }
            }
            s += "/>";
            line(4, &s);
        }
        line(2, "</bandwidth>");
    }
    if let Some(v) = &port.vlan {
        line(
            2,
            if v.trunk {
                "<vlan trunk='yes'>"
            } else {
                "<vlan>"
            },
        );
        for &id in &v.tags {
            match v.native {
                Some((mode, tag)) if tag == id => line(
                    4,
                    &format!("<tag id='{id}' nativeMode='{}'/>", mode.as_str()),
                ),
                _ => line(4, &format!("<tag id='{id}'/>")),
            }
        }
        line(2, "</vlan>");
    }
    if let Some(i) = port.isolated {
        line(2, &format!("<port isolated='{}'/>", yes_no(i)));
    }
    if let Some(t) = port.trust_guest_rx_filters {
        line(2, &format!("<rxfilters trustGuest='{}'/>", yes_no(t)));
    }
    match &port.plug {
        None => {}
        Some(
            plug @ (Plug::Network {
                bridge,
                mac_table_manager,
            }
            | Plug::Bridge {
                bridge,
                mac_table_manager,
            }),
        ) => {
            let mtm = mac_table_manager
                .map(|m| format!(" macTableManager='{}'", m.as_str()))
                .unwrap_or_default();
            line(
                2,
                &format!(
                    "<plug type='{}' bridge='{}'{mtm}/>",
                    plug.type_str(),
                    esc(bridge)
                ),
            );
        }
        Some(Plug::Direct { dev, mode }) => line(
            2,
            &format!(
                "<plug type='direct' dev='{}' mode='{}'/>",
                esc(dev),
                mode.as_str()
            ),
        ),
        Some(Plug::HostdevPci {
            managed,
            driver,
            address,
        }) => {
            let m = managed
                .map(|m| format!(" managed='{}'", yes_no(m)))
                .unwrap_or_default();
            line(2, &format!("<plug type='hostdev-pci'{m}>"));
            if let Some(d) = driver {
                line(4, &format!("<driver name='{}'/>", d.as_str()));
            }
            line(
                4,
                &format!(
                    "<address domain='0x{:04x}' bus='0x{:02x}' slot='0x{:02x}' function='0x{}'/>",
                    address.domain, address.bus, address.slot, address.function
                ),
            );
            line(2, "</plug>");
        }
    }
    out.push_str("</networkport>\n");
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `virNetDevVPortProfileFormat`: only the parameters that belong to the type.
fn virtualport(line: &mut impl FnMut(usize, &str), vp: &VirtualPort) {
    use VirtualPortType::*;
    let kind = vp.kind;
    let is = |types: &[VirtualPortType]| kind.is_none_or(|k| types.contains(&k));
    let mut params = String::new();
    if is(&[Qbg]) {
        if let Some(v) = vp.manager_id {
            params += &format!(" managerid='{v}'");
        }
        if let Some(v) = vp.type_id {
            params += &format!(" typeid='{v}'");
        }
        if let Some(v) = vp.type_id_version {
            params += &format!(" typeidversion='{v}'");
        }
        if let Some(v) = vp.instance_id {
            params += &format!(" instanceid='{v}'");
        }
    }
    if is(&[Midonet, OpenVswitch]) {
        if let Some(v) = vp.interface_id {
            params += &format!(" interfaceid='{v}'");
        }
    }
    if is(&[OpenVswitch, Qbh]) {
        if let Some(v) = &vp.profile_id {
            // libvirt prints it raw; escaped here so that no profile id
            // can break the document.
            params += &format!(" profileid='{}'", esc(v));
        }
    }
    let no_params = vp.manager_id.is_none()
        && vp.type_id.is_none()
        && vp.type_id_version.is_none()
        && vp.instance_id.is_none()
        && vp.profile_id.as_deref().is_none_or(str::is_empty)
        && vp.interface_id.is_none();
    match kind {
        None if no_params => return,
        None => line(2, "<virtualport>"),
        Some(k) if no_params => {
            line(2, &format!("<virtualport type='{}'/>", k.as_str()));
            return;
        }
        Some(k) => line(2, &format!("<virtualport type='{}'>", k.as_str())),
    }
    line(4, &format!("<parameters{params}/>"));
    line(2, "</virtualport>");
}
