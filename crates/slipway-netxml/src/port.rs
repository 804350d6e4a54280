//! What a network says about the ports guests get on it: `<virtualport>`,
//! `<vlan>`, `<bandwidth>`, `<port>` and the `<portgroup>`s that bundle
//! them. The types follow libvirt 9.0's (`virNetDevVPortProfile`,
//! `virNetDevVlan`, `virNetDevBandwidth`, `virPortGroupDef`); parsing is in
//! `parse`, printing in `format`, the rules between them in `validate`.

/// `<virtualport type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VirtualPortType {
    /// `802.1Qbg` (VEPA with a VSI manager).
    Qbg,
    /// `802.1Qbh` (port profiles on the adapter).
    Qbh,
    /// `openvswitch`: the port is on an Open vSwitch bridge.
    OpenVswitch,
    /// `midonet`.
    Midonet,
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

    /// Parses the XML spelling (libvirt's names, case-sensitive).
    pub fn from_xml(s: &str) -> Option<VirtualPortType> {
        Some(match s {
            "802.1Qbg" => VirtualPortType::Qbg,
            "802.1Qbh" => VirtualPortType::Qbh,
            "openvswitch" => VirtualPortType::OpenVswitch,
            "midonet" => VirtualPortType::Midonet,
            _ => return None,
        })
    }
}

/// Longest `profileid` libvirt stores (`LIBVIRT_IFLA_VF_PORT_PROFILE_MAX` - 1).
pub const PROFILE_ID_MAX: usize = 39;

/// `<virtualport>` with its `<parameters>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtualPort {
    /// `type`; `None` in a `<portgroup>` or `<interface>` means "whatever
    /// the network's is" (libvirt merges them when a guest connects).
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
    /// `profileid` (openvswitch, 802.1Qbh), at most [`PROFILE_ID_MAX`] bytes.
    pub profile_id: Option<String>,
}

/// `<tag nativeMode>`: how the native VLAN of a trunk is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeVlanMode {
    /// `tagged`.
    Tagged,
    /// `untagged`.
    Untagged,
}

impl NativeVlanMode {
    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NativeVlanMode::Tagged => "tagged",
            NativeVlanMode::Untagged => "untagged",
        }
    }
}

/// Largest VLAN id libvirt accepts.
pub const VLAN_ID_MAX: u16 = 4095;

/// `<vlan>`: the VLAN tags of a port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vlan {
    /// `trunk='yes'` (always so with several tags).
    pub trunk: bool,
    /// The `<tag id>`s in document order, each 0-4095.
    pub tags: Vec<u16>,
    /// The native VLAN of a trunk: mode and tag id (the `<tag>` that
    /// carried `nativeMode`).
    pub native: Option<(NativeVlanMode, u16)>,
}

/// `<inbound>` or `<outbound>`: rates in KiB/s, burst in KiB; `None` where
/// absent (libvirt also treats 0 as absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BandwidthRate {
    /// `average`.
    pub average: Option<u64>,
    /// `peak` (needs `average`).
    pub peak: Option<u64>,
    /// `burst` (needs `average`).
    pub burst: Option<u64>,
    /// `floor`: guaranteed minimum, only on `<inbound>` of a guest's port
    /// (libvirt refuses it on a network or a portgroup).
    pub floor: Option<u64>,
}

/// `<bandwidth>`: traffic shaping of the network or of each port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// `<inbound>`: traffic toward the guests (or into the network).
    pub inbound: Option<BandwidthRate>,
    /// `<outbound>`: traffic from the guests.
    pub outbound: Option<BandwidthRate>,
}

/// `<portgroup>`: port settings a guest interface picks by name
/// (`<source portgroup>`), or gets by default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortGroup {
    /// `name` (required, unique in the network).
    pub name: String,
    /// `default='yes'`: used by interfaces that name no portgroup (one at most).
    pub default: bool,
    /// `trustGuestRxFilters`.
    pub trust_guest_rx_filters: Option<bool>,
    /// `<vlan>`.
    pub vlan: Option<Vlan>,
    /// `<virtualport>` (type optional: the network's applies).
    pub virtualport: Option<VirtualPort>,
    /// `<bandwidth>`.
    pub bandwidth: Option<Bandwidth>,
}
