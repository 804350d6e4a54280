//! libvirt's network port: the `<networkport>` document a VM's driver (or
//! `virsh net-port-create`) hands the network driver for each interface
//! plugged into a network, and gets back with the plug filled in.
//!
//! Theory of operation: the document is read into the shared element tree
//! ([`crate::tree`]) and from there into [`NetworkPort`] by libvirt 9.0's
//! rules (`virNetworkPortDefParseXML` in src/conf/virnetworkportdef.c and
//! the helpers it calls; its bandwidth, VLAN and virtualport are read and
//! printed by the code the network and its portgroups use, [`crate::netdev`],
//! as libvirt shares its `netdev_*_conf.c`). As in
//! libvirt, what the port does not use is ignored, but recorded in
//! [`NetworkPort::unknown`]; every error names the element or attribute
//! (`/networkport/bandwidth/inbound/@peak`) with its line and column.
//! [`NetworkPort::to_xml`] prints byte for byte what
//! `virNetworkPortDefFormat` prints: libvirt's element order whatever the
//! input's, and its "zero means unset" conventions for bandwidth numbers
//! (checked against libvirt's own corpus, tests/virnetworkportxml2xmldata,
//! in this crate's tests).

use crate::netdev::{
    write_bandwidth, write_virtualport, write_vlan, Bandwidth, BandwidthUse, VirtualPort, Vlan,
};
use crate::tree::{c_uint, esc, read_tree, yes_no, Located, Node, Tag, TreeReader, XmlWriter};
use crate::{HostdevDriver, MacAddr, MacTableManager, PciAddress, XmlError};
use slipway_host::keywords;

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

keywords! {
    /// macvtap modes of a `direct` plug.
    pub enum MacvlanMode {
        /// `vepa` (libvirt's default).
        Vepa = "vepa",
        /// `private`.
        Private = "private",
        /// `bridge`.
        Bridge = "bridge",
        /// `passthrough`.
        Passthrough = "passthrough",
    }
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

        let virtualport = self.kid_with(root, "virtualport", |w, n| {
            w.virtualport(n, "/networkport/virtualport", false)
        })?;

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

        let bandwidth = self.kid_with(root, "bandwidth", |w, n| {
            w.bandwidth(n, "/networkport/bandwidth", BandwidthUse::Port)
        })?;
        let vlan = self.kid_with(root, "vlan", |w, n| {
            w.vlan(n, "/networkport/vlan").map(Some)
        })?;
        let isolated = self.kid_with(root, "port", |w, n| {
            let pp = "/networkport/port";
            w.check(n, pp, &["isolated"], &[]);
            w.yes_no(n, pp, "isolated")
        })?;
        let trust_guest_rx_filters = self.kid_with(root, "rxfilters", |w, n| {
            let rp = "/networkport/rxfilters";
            w.check(n, rp, &["trustGuest"], &[]);
            w.yes_no(n, rp, "trustGuest")
        })?;
        let plug = self.kid_with(root, "plug", Self::plug)?;
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
                &MacTableManager::KEYWORDS,
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
                        &MacvlanMode::KEYWORDS,
                        "'vepa', 'private', 'bridge' or 'passthrough'",
                    )?
                    .unwrap_or(MacvlanMode::Vepa);
                Plug::Direct { dev, mode }
            }
            4 => {
                self.check(n, p, &["type", "managed"], &["driver", "address"]);
                let managed = self.yes_no(n, p, "managed")?;
                let driver = self.kid_with(n, "driver", |w, d| {
                    let dp = "/networkport/plug/driver";
                    w.check(d, dp, &["name"], &[]);
                    match d.attr("name") {
                        None | Some("") => Ok(None),
                        Some(_) => {
                            w.choice(d, dp, "name", &HostdevDriver::KEYWORDS, "'kvm' or 'vfio'")
                        }
                    }
                })?;
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
    let mut b = XmlWriter::default();
    b.start(Tag::new("networkport"));
    b.line(&format!("<uuid>{}</uuid>", port.uuid));
    b.start(Tag::new("owner"));
    b.text("name", &port.owner_name);
    b.line(&format!("<uuid>{}</uuid>", port.owner_uuid));
    b.end("owner");
    if let Some(g) = &port.group {
        b.text("group", g);
    }
    b.empty(Tag::new("mac").attr("address", port.mac));
    if let Some(vp) = &port.virtualport {
        write_virtualport(&mut b, vp);
    }
    if let Some(bw) = &port.bandwidth {
        write_bandwidth(&mut b, bw);
    }
    if let Some(v) = &port.vlan {
        write_vlan(&mut b, v);
    }
    if let Some(i) = port.isolated {
        b.empty(Tag::new("port").attr("isolated", yes_no(i)));
    }
    if let Some(t) = port.trust_guest_rx_filters {
        b.empty(Tag::new("rxfilters").attr("trustGuest", yes_no(t)));
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
        ) => b.empty(
            Tag::new("plug")
                .attr("type", plug.type_str())
                .attr("bridge", esc(bridge))
                .opt("macTableManager", mac_table_manager.map(|m| m.as_str())),
        ),
        Some(Plug::Direct { dev, mode }) => b.empty(
            Tag::new("plug")
                .attr("type", "direct")
                .attr("dev", esc(dev))
                .attr("mode", mode.as_str()),
        ),
        Some(Plug::HostdevPci {
            managed,
            driver,
            address,
        }) => {
            b.start(
                Tag::new("plug")
                    .attr("type", "hostdev-pci")
                    .opt("managed", managed.map(yes_no)),
            );
            if let Some(d) = driver {
                b.empty(Tag::new("driver").attr("name", d.as_str()));
            }
            b.line(&format!(
                "<address domain='0x{:04x}' bus='0x{:02x}' slot='0x{:02x}' function='0x{}'/>",
                address.domain, address.bus, address.slot, address.function
            ));
            b.end("plug");
        }
    }
    b.end("networkport");
    b.out
}
