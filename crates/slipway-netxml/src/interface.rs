//! Guest `<interface>` elements of a libvirt domain: the typed model and its
//! parser.
//!
//! The input is either a whole domain definition (`<domain>`, interfaces
//! taken from `<devices>` in document order) or a file of bare
//! `<interface>` elements (one or several top-level elements, or a
//! `<devices>` wrapper). Every error names the interface by its index among
//! the document's interfaces and by its MAC when it has one, because that is
//! how a person finds it in a domain file of many devices. Only what decides
//! the host plumbing and the QEMU arguments is modelled; anything else
//! (`<address>`, `<driver>`, `<boot>`…) is listed in
//! [`Interface::unknown`] so callers can warn, as libvirt would use it.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::netdev::{Bandwidth, BandwidthUse, VirtualPort, VirtualPortType, Vlan};
use crate::tree::{line_col, read_forest, Located, Node, Report, TreeReader};
use crate::MacAddr;
use slipway_host::keywords;

/// How the interface reaches the outside: libvirt's `type` attribute plus
/// its `<source>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceKind {
    /// `type='user'`: a user-mode (NAT in a process) network.
    User {
        /// `<ip>` elements: the guest network (`address` + `prefix`).
        ips: Vec<UserIp>,
        /// `<portForward>` elements: host ports forwarded into the guest.
        port_forwards: Vec<PortForward>,
    },
    /// `type='network'`: a tap on the bridge of a running virtual network.
    Network {
        /// `<source network>`.
        network: String,
    },
    /// `type='bridge'`: a tap on an existing host bridge.
    Bridge {
        /// `<source bridge>`.
        bridge: String,
    },
    /// `type='ethernet'`: a bare tap, configured by a script or by hand.
    Ethernet,
    /// `type='mcast'`: a UDP multicast group shared by the guests.
    Mcast {
        /// Group address.
        address: IpAddr,
        /// Port.
        port: u16,
    },
    /// `type='server'`: QEMU listens on a TCP socket for one peer.
    Server {
        /// Listen address (all addresses when absent).
        address: Option<IpAddr>,
        /// Port.
        port: u16,
    },
    /// `type='client'`: QEMU connects to a `server` peer.
    Client {
        /// Server address.
        address: IpAddr,
        /// Port.
        port: u16,
    },
    /// `type='udp'`: unicast UDP tunnel between two QEMUs.
    Udp {
        /// Remote address.
        address: IpAddr,
        /// Remote port.
        port: u16,
        /// `<local address>`.
        local_address: IpAddr,
        /// `<local port>`.
        local_port: u16,
    },
    /// `type='vhostuser'`: a vhost-user backend on a unix socket.
    VhostUser {
        /// `<source path>`.
        path: PathBuf,
        /// `<source mode='server'>`: QEMU is the server of the socket.
        server: bool,
    },
}

impl InterfaceKind {
    /// libvirt's name of the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            InterfaceKind::User { .. } => "user",
            InterfaceKind::Network { .. } => "network",
            InterfaceKind::Bridge { .. } => "bridge",
            InterfaceKind::Ethernet => "ethernet",
            InterfaceKind::Mcast { .. } => "mcast",
            InterfaceKind::Server { .. } => "server",
            InterfaceKind::Client { .. } => "client",
            InterfaceKind::Udp { .. } => "udp",
            InterfaceKind::VhostUser { .. } => "vhostuser",
        }
    }
}

/// `<ip>` of a user-mode interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIp {
    /// The network address.
    pub address: IpAddr,
    /// Its prefix length (libvirt's default: 24 for IPv4).
    pub prefix: Option<u8>,
}

/// `<portForward proto address dev>` with its `<range>` children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// `tcp` or `udp`.
    pub proto: ForwardProto,
    /// Host address to listen on (all when absent).
    pub address: Option<IpAddr>,
    /// Host interface to listen on (kept for warnings; slipway listens on addresses).
    pub dev: Option<String>,
    /// Port ranges, in document order.
    pub ranges: Vec<PortRange>,
}

keywords! {
    /// The protocol of a port forward.
    pub enum ForwardProto {
        /// TCP.
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
    }
}

impl fmt::Display for ForwardProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `<range start end to exclude>`: host ports `start..=end` to guest ports
/// `to..` (the same ports when `to` is absent), or ports not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First host port.
    pub start: u16,
    /// Last host port (`start` when absent).
    pub end: Option<u16>,
    /// Guest port of `start`.
    pub to: Option<u16>,
    /// `exclude='yes'`: these host ports are not forwarded.
    pub exclude: bool,
}

/// `<target dev managed>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// The tap's name.
    pub dev: Option<String>,
    /// `managed='no'`: the tap exists already and is left as it is.
    pub managed: Option<bool>,
}

/// One `<interface>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Position among the document's interfaces (0-based, XML order).
    pub index: usize,
    /// 1-based line of the element.
    pub line: usize,
    /// Type and source.
    pub kind: InterfaceKind,
    /// `<mac address>`.
    pub mac: Option<MacAddr>,
    /// `<model type>`, e.g. `virtio`.
    pub model: Option<String>,
    /// `<target>`.
    pub target: Target,
    /// `<mtu size>`.
    pub mtu: Option<u32>,
    /// `<link state>`: `Some(false)` for `down`.
    pub link_up: Option<bool>,
    /// `<script path>` (ethernet).
    pub script: Option<PathBuf>,
    /// `<downscript path>` (ethernet).
    pub downscript: Option<PathBuf>,
    /// `<source portgroup>` (network): the network's `<portgroup>` to use.
    pub portgroup: Option<String>,
    /// `<virtualport>` (network, bridge): for `type='bridge'` always
    /// `openvswitch` (the tap goes on an Open vSwitch bridge); for
    /// `type='network'` merged with the network's and its portgroup's.
    pub virtualport: Option<VirtualPort>,
    /// `<vlan>` (network, or bridge on Open vSwitch).
    pub vlan: Option<Vlan>,
    /// `<bandwidth>`: the tap's traffic shaping (types with a tap).
    pub bandwidth: Option<crate::Bandwidth>,
    /// `<port isolated>` (network and bridge): the tap's bridge port
    /// isolated from the other isolated ports; `None` takes the network's.
    pub port_isolated: Option<bool>,
    /// Paths of elements and attributes not modelled, e.g. `driver`.
    pub unknown: Vec<String>,
}

/// An interface that cannot be used: where (index, MAC, line) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interface {index}{} (line {line}): {message}", mac.map(|m| format!(" (mac {m})")).unwrap_or_default())]
pub struct InterfaceError {
    /// Position among the document's interfaces.
    pub index: usize,
    /// Its MAC address, when it has a valid one.
    pub mac: Option<MacAddr>,
    /// 1-based line of the element.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a document of interfaces could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfacesError {
    /// Malformed XML.
    #[error(transparent)]
    Xml(#[from] crate::XmlError),
    /// The document is neither a domain nor bare interfaces.
    #[error("line {line}: expecting <domain>, <devices> or <interface> elements, not <{element}>")]
    Root {
        /// The offending top-level element.
        element: String,
        /// Its line.
        line: usize,
    },
    /// One interface is wrong.
    #[error(transparent)]
    Interface(#[from] InterfaceError),
}

/// Parses the `<interface>` elements of a domain definition or of a file of
/// bare `<interface>` elements, in document order.
pub fn parse_interfaces(src: &str) -> Result<Vec<Interface>, InterfacesError> {
    let roots = read_forest(src)?;
    let mut nodes: Vec<&Node> = Vec::new();
    for root in &roots {
        match root.name.as_str() {
            "domain" => {
                for devices in root.kids("devices") {
                    nodes.extend(devices.kids("interface"));
                }
            }
            "devices" => nodes.extend(root.kids("interface")),
            "interface" => nodes.push(root),
            other => {
                return Err(InterfacesError::Root {
                    element: other.to_string(),
                    line: line_col(src, root.offset).0,
                })
            }
        }
    }
    let mut out = Vec::with_capacity(nodes.len());
    for (index, node) in nodes.into_iter().enumerate() {
        out.push(parse_one(src, index, node)?);
    }
    Ok(out)
}

/// The `<uuid>` of a `<domain>` document (what libvirt passes to Open
/// vSwitch as `vm-id`); `None` for bare interfaces, a domain without one,
/// or one that is not a UUID (`parse_interfaces` reports malformed XML).
pub fn domain_uuid(src: &str) -> Option<uuid::Uuid> {
    let roots = read_forest(src).ok()?;
    let domain = roots.iter().find(|r| r.name == "domain")?;
    uuid::Uuid::parse_str(domain.kid("uuid")?.string_value.trim()).ok()
}

/// Names one `<interface>` in its errors: index, MAC and line.
struct Which {
    index: usize,
    line: usize,
    mac: Option<MacAddr>,
}

impl Report for Which {
    type Error = InterfaceError;

    fn bad_value(
        &self,
        _: &Node,
        path: &str,
        name: &str,
        value: &str,
        expected: &str,
    ) -> InterfaceError {
        self.err(format!("{path}/@{name} = '{value}': expected {expected}"))
    }

    fn missing(&self, _: &Node, path: &str, name: &str) -> InterfaceError {
        self.err(format!("{path}: missing required attribute '{name}'"))
    }
}

impl Which {
    fn err(&self, message: impl Into<String>) -> InterfaceError {
        InterfaceError {
            index: self.index,
            mac: self.mac,
            line: self.line,
            message: message.into(),
        }
    }
}

/// Reads one `<interface>`.
type Reader = TreeReader<Which>;

impl Reader {
    fn err(&self, message: impl Into<String>) -> InterfaceError {
        self.report.err(message)
    }

    /// Attribute `name`, which must be there and not empty.
    fn nonempty<'n>(
        &self,
        node: &'n Node,
        path: &str,
        name: &str,
    ) -> Result<&'n str, InterfaceError> {
        match self.required(node, path, name)? {
            "" => Err(self.report.missing(node, path, name)),
            v => Ok(v),
        }
    }

    fn required_parsed<T: std::str::FromStr>(
        &self,
        node: &Node,
        path: &str,
        name: &str,
        expected: &str,
    ) -> Result<T, InterfaceError> {
        self.nonempty(node, path, name)?;
        self.parsed(node, path, name, expected)?
            .ok_or_else(|| self.report.missing(node, path, name))
    }

    fn port(&self, node: &Node, path: &str, name: &str) -> Result<u16, InterfaceError> {
        let port: u16 = self.required_parsed(node, path, name, "a port 1-65535")?;
        if port == 0 {
            return Err(self.err(format!("{path}/@{name} = '0': expected a port 1-65535")));
        }
        Ok(port)
    }

    fn source<'n>(&self, node: &'n Node, what: &str) -> Result<&'n Node, InterfaceError> {
        node.kid("source")
            .ok_or_else(|| self.err(format!("type '{what}' needs a <source> element")))
    }
}

/// Element names understood inside `<interface>`.
const CHILDREN: &[&str] = &[
    "source",
    "mac",
    "model",
    "target",
    "mtu",
    "link",
    "script",
    "downscript",
    "ip",
    "portForward",
    "virtualport",
    "vlan",
    "bandwidth",
    "port",
];

fn parse_one(src: &str, index: usize, node: &Node) -> Result<Interface, InterfaceError> {
    let line = line_col(src, node.offset).0;
    let mut r = Reader::new(Which {
        index,
        line,
        mac: None,
    });
    // The MAC first, so every later error can name it.
    let mac = mac(&mut r, node)?;
    r.report.mac = mac;
    let type_name = node
        .attr("type")
        .ok_or_else(|| r.err("missing required attribute 'type'"))?;
    r.check(node, "interface", &["type"], CHILDREN);
    let kind = kind(&mut r, node, type_name)?;
    let model = model(&mut r, node)?;
    let target = target(&mut r, node)?;
    let mtu = mtu(&mut r, node)?;
    let link_up = link(&mut r, node)?;
    let script = script_path(&mut r, node, "script")?;
    let downscript = script_path(&mut r, node, "downscript")?;
    let (virtualport, vlan, bandwidth) = port_settings(&mut r, src, node)?;
    let portgroup = match (&kind, node.kid("source").and_then(|s| s.attr("portgroup"))) {
        (InterfaceKind::Network { .. }, Some(pg)) if !pg.is_empty() => Some(pg.to_string()),
        _ => None,
    };
    let port_isolated = port_isolated(&mut r, node)?;
    let iface = Interface {
        index,
        line,
        kind,
        mac,
        model,
        target,
        mtu,
        link_up,
        script,
        downscript,
        portgroup,
        virtualport,
        vlan,
        bandwidth,
        port_isolated,
        unknown: Vec::new(),
    };
    check_combination(&r, node, &iface)?;
    Ok(Interface {
        unknown: r.unknown,
        ..iface
    })
}

/// An interface's `<virtualport>`, `<vlan>` and `<bandwidth>`.
type PortSettings = (Option<VirtualPort>, Option<Vlan>, Option<Bandwidth>);

/// `<virtualport>`, `<vlan>` and `<bandwidth>`, read by the readers
/// networks and ports use (libvirt shares them too), their errors given
/// this interface's index, MAC and line. The bandwidth is read as a
/// network port's (libvirt's domain interfaces take a `floor`, which only
/// a network port can reserve).
fn port_settings(r: &mut Reader, src: &str, node: &Node) -> Result<PortSettings, InterfaceError> {
    let mut lr = TreeReader::new(Located { src });
    let read = |lr: &mut TreeReader<Located>| {
        Ok::<_, crate::XmlError>((
            lr.kid_with(node, "virtualport", |w, n| {
                w.virtualport(n, "interface/virtualport", false)
            })?,
            lr.kid_with(node, "vlan", |w, n| w.vlan(n, "interface/vlan").map(Some))?,
            lr.kid_with(node, "bandwidth", |w, n| {
                w.bandwidth(n, "interface/bandwidth", BandwidthUse::Port)
            })?,
        ))
    };
    let (vp, vlan, bw) = read(&mut lr).map_err(|e| r.err(e.to_string()))?;
    r.unknown.append(&mut lr.unknown);
    if bw.is_some_and(|b| b.class_id != 0) {
        return Err(r.err("interface/bandwidth/@classID: only a network port has a class"));
    }
    Ok((vp, vlan, bw))
}

/// `<port isolated='yes|no'/>`.
fn port_isolated(r: &mut Reader, node: &Node) -> Result<Option<bool>, InterfaceError> {
    let Some(p) = node.kid("port") else {
        return Ok(None);
    };
    r.check(p, "interface/port", &["isolated"], &[]);
    match p.attr("isolated") {
        None => Ok(None),
        Some("yes") => Ok(Some(true)),
        Some("no") => Ok(Some(false)),
        Some(v) => Err(r.err(format!(
            "interface/port/@isolated = '{v}': expected yes or no"
        ))),
    }
}

/// `<mac address>`: a unicast MAC, not one of the host side's.
fn mac(r: &mut Reader, node: &Node) -> Result<Option<MacAddr>, InterfaceError> {
    let Some(m) = node.kid("mac") else {
        return Ok(None);
    };
    r.check(m, "interface/mac", &["address"], &[]);
    let Some(v) = m.attr("address") else {
        return Ok(None);
    };
    let m = v.parse::<MacAddr>().map_err(|e| r.err(e.to_string()))?;
    r.report.mac = Some(m);
    if m.is_multicast() {
        return Err(r.err(format!(
            "MAC {m} is a multicast address; a NIC needs a unicast one"
        )));
    }
    if m.0[0] == 0xfe {
        return Err(r.err(format!(
            "MAC {m} starts with 0xFE, which is reserved for the host side of the tap"
        )));
    }
    Ok(Some(m))
}

/// The `type` and its `<source>`.
fn kind(r: &mut Reader, node: &Node, type_name: &str) -> Result<InterfaceKind, InterfaceError> {
    Ok(match type_name {
        "user" => user(r, node)?,
        "network" => {
            let s = r.source(node, type_name)?;
            r.check(s, "interface/source", &["network", "portgroup"], &[]);
            InterfaceKind::Network {
                network: r.nonempty(s, "interface/source", "network")?.to_string(),
            }
        }
        "bridge" => bridge(r, node)?,
        "ethernet" => InterfaceKind::Ethernet,
        "mcast" | "client" => socket(r, node, type_name)?,
        "server" => {
            let s = r.source(node, type_name)?;
            r.check(s, "interface/source", &["address", "port"], &[]);
            InterfaceKind::Server {
                address: r.parsed(s, "interface/source", "address", "an IP address")?,
                port: r.port(s, "interface/source", "port")?,
            }
        }
        "udp" => udp(r, node)?,
        "vhostuser" => vhostuser(r, node)?,
        other => {
            return Err(r.err(format!(
                "unknown interface type '{other}' (slipway knows user, network, bridge, \
                 ethernet, mcast, server, client, udp, vhostuser)"
            )))
        }
    })
}

/// `type='bridge'`: `<source bridge>`, a valid device name.
fn bridge(r: &mut Reader, node: &Node) -> Result<InterfaceKind, InterfaceError> {
    let s = r.source(node, "bridge")?;
    r.check(s, "interface/source", &["bridge"], &[]);
    let bridge = r.nonempty(s, "interface/source", "bridge")?;
    if let Err(e) = crate::IfName::new(bridge) {
        return Err(r.err(format!(
            "interface/source/@bridge = '{}': {e}",
            bridge.escape_debug()
        )));
    }
    Ok(InterfaceKind::Bridge {
        bridge: bridge.to_string(),
    })
}

/// `type='mcast'` (a multicast group) or `type='client'`: `<source address port>`.
fn socket(r: &mut Reader, node: &Node, type_name: &str) -> Result<InterfaceKind, InterfaceError> {
    let s = r.source(node, type_name)?;
    r.check(s, "interface/source", &["address", "port"], &[]);
    let address: IpAddr = r.required_parsed(s, "interface/source", "address", "an IP address")?;
    let port = r.port(s, "interface/source", "port")?;
    if type_name != "mcast" {
        return Ok(InterfaceKind::Client { address, port });
    }
    if !address.is_multicast() {
        return Err(r.err(format!(
            "interface/source/@address = '{address}': mcast needs a multicast group address"
        )));
    }
    Ok(InterfaceKind::Mcast { address, port })
}

/// `type='udp'`: `<source address port><local address port/></source>`.
fn udp(r: &mut Reader, node: &Node) -> Result<InterfaceKind, InterfaceError> {
    let s = r.source(node, "udp")?;
    r.check(s, "interface/source", &["address", "port"], &["local"]);
    let local = s
        .kid("local")
        .ok_or_else(|| r.err("type 'udp' needs <source><local address port/></source>"))?;
    r.check(local, "interface/source/local", &["address", "port"], &[]);
    Ok(InterfaceKind::Udp {
        address: r.required_parsed(s, "interface/source", "address", "an IP address")?,
        port: r.port(s, "interface/source", "port")?,
        local_address: r.required_parsed(
            local,
            "interface/source/local",
            "address",
            "an IP address",
        )?,
        local_port: r.port(local, "interface/source/local", "port")?,
    })
}

/// `type='vhostuser'`: `<source type='unix' path mode>`.
fn vhostuser(r: &mut Reader, node: &Node) -> Result<InterfaceKind, InterfaceError> {
    let s = r.source(node, "vhostuser")?;
    r.check(
        s,
        "interface/source",
        &["type", "path", "mode"],
        &["reconnect"],
    );
    match s.attr("type") {
        Some("unix") => {}
        Some(other) => {
            return Err(r.err(format!(
                "interface/source/@type = '{other}': vhostuser supports only 'unix'"
            )))
        }
        None => return Err(r.err("interface/source: missing required attribute 'type'")),
    }
    let path = PathBuf::from(r.nonempty(s, "interface/source", "path")?);
    let server = match s.attr("mode") {
        Some("server") => true,
        Some("client") | None => false,
        Some(other) => {
            return Err(r.err(format!(
                "interface/source/@mode = '{other}': expected 'server' or 'client'"
            )))
        }
    };
    Ok(InterfaceKind::VhostUser { path, server })
}

/// `<model type>`: a device model name.
fn model(r: &mut Reader, node: &Node) -> Result<Option<String>, InterfaceError> {
    let Some(m) = node.kid("model") else {
        return Ok(None);
    };
    r.check(m, "interface/model", &["type"], &[]);
    let t = r.nonempty(m, "interface/model", "type")?;
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(r.err(format!(
            "interface/model/@type = '{t}': expected a device model name (letters, digits, '-', '_')"
        )));
    }
    Ok(Some(t.to_string()))
}

/// `<target dev managed>`.
fn target(r: &mut Reader, node: &Node) -> Result<Target, InterfaceError> {
    let Some(t) = node.kid("target") else {
        return Ok(Target::default());
    };
    r.check(t, "interface/target", &["dev", "managed"], &[]);
    let dev = t.attr("dev").filter(|d| !d.is_empty()).map(str::to_string);
    if let Some(d) = &dev {
        if let Err(e) = crate::IfName::new(d.as_str()) {
            return Err(r.err(format!(
                "interface/target/@dev = '{}': {e}",
                d.escape_debug()
            )));
        }
    }
    let managed = r.yes_no(t, "interface/target", "managed")?;
    Ok(Target { dev, managed })
}

/// `<mtu size>`.
fn mtu(r: &mut Reader, node: &Node) -> Result<Option<u32>, InterfaceError> {
    let Some(m) = node.kid("mtu") else {
        return Ok(None);
    };
    r.check(m, "interface/mtu", &["size"], &[]);
    let size: u32 = r.required_parsed(m, "interface/mtu", "size", "an MTU 68-65535")?;
    if !(68..=65535).contains(&size) {
        return Err(r.err(format!(
            "interface/mtu/@size = '{size}': expected an MTU 68-65535"
        )));
    }
    Ok(Some(size))
}

/// `<link state>`: `Some(false)` for `down`.
fn link(r: &mut Reader, node: &Node) -> Result<Option<bool>, InterfaceError> {
    let Some(l) = node.kid("link") else {
        return Ok(None);
    };
    r.check(l, "interface/link", &["state"], &[]);
    r.choice(
        l,
        "interface/link",
        "state",
        &[("up", true), ("down", false)],
        "'up' or 'down'",
    )
}

/// `<script path>` or `<downscript path>` (`name`).
fn script_path(r: &mut Reader, node: &Node, name: &str) -> Result<Option<PathBuf>, InterfaceError> {
    let Some(s) = node.kid(name) else {
        return Ok(None);
    };
    let path = format!("interface/{name}");
    r.check(s, &path, &["path"], &[]);
    Ok(Some(PathBuf::from(r.nonempty(s, &path, "path")?)))
}

/// Elements that do not go with the interface's type.
fn check_combination(r: &Reader, node: &Node, iface: &Interface) -> Result<(), InterfaceError> {
    let kind = &iface.kind;
    if !matches!(kind, InterfaceKind::Ethernet)
        && (iface.script.is_some() || iface.downscript.is_some())
    {
        return Err(r.err(format!(
            "<script>/<downscript> are for type 'ethernet', not '{}'",
            kind.type_name()
        )));
    }
    if iface.target.managed == Some(false) {
        if !matches!(kind, InterfaceKind::Ethernet) {
            return Err(r.err(format!(
                "<target managed='no'> is for type 'ethernet', not '{}'",
                kind.type_name()
            )));
        }
        if iface.target.dev.is_none() {
            return Err(r.err("<target managed='no'> needs the name of the existing tap in 'dev'"));
        }
    }
    if !matches!(kind, InterfaceKind::User { .. }) {
        if node.kid("portForward").is_some() {
            return Err(r.err(format!(
                "<portForward> is for type 'user', not '{}'",
                kind.type_name()
            )));
        }
        if node.kid("ip").is_some() {
            return Err(r.err(format!(
                "<ip> is supported for type 'user' only, not '{}'",
                kind.type_name()
            )));
        }
    }
    let on_network = matches!(kind, InterfaceKind::Network { .. });
    let on_ovs = matches!(kind, InterfaceKind::Bridge { .. })
        && node.kid("virtualport").is_some()
        && iface.virtualport.as_ref().and_then(|v| v.kind) == Some(VirtualPortType::OpenVswitch);
    if node.kid("virtualport").is_some() && !on_network {
        match kind {
            InterfaceKind::Bridge { .. } if !on_ovs => {
                return Err(r.err(
                    "<virtualport> on type 'bridge' must be type='openvswitch' \
                     (the other types need a macvtap or SR-IOV device slipway does not plug)",
                ))
            }
            InterfaceKind::Bridge { .. } => {}
            _ => {
                return Err(r.err(format!(
                    "<virtualport> is for type 'network' or 'bridge', not '{}'",
                    kind.type_name()
                )))
            }
        }
    }
    if iface.vlan.is_some() && !on_network && !on_ovs {
        return Err(r.err(format!(
            "<vlan> needs type 'network', or type 'bridge' with <virtualport type='openvswitch'/> \
             (a Linux bridge port carries no VLAN tags here), not type '{}'{}",
            kind.type_name(),
            if matches!(kind, InterfaceKind::Bridge { .. }) {
                " without Open vSwitch"
            } else {
                ""
            }
        )));
    }
    let tap = matches!(
        kind,
        InterfaceKind::Network { .. } | InterfaceKind::Bridge { .. } | InterfaceKind::Ethernet
    );
    if iface.bandwidth.is_some() && !tap {
        return Err(r.err(format!(
            "<bandwidth> is for interfaces on a tap (network, bridge, ethernet), not '{}'",
            kind.type_name()
        )));
    }
    if iface.bandwidth.is_some() && iface.target.managed == Some(false) {
        return Err(
            r.err("<bandwidth> needs a tap slipway creates (managed='no' uses the tap as it is)")
        );
    }
    if iface.port_isolated.is_some()
        && !matches!(
            kind,
            InterfaceKind::Network { .. } | InterfaceKind::Bridge { .. }
        )
    {
        return Err(r.err(format!(
            "<port isolated> is for interfaces on a bridge (network, bridge), not '{}'",
            kind.type_name()
        )));
    }
    if matches!(kind, InterfaceKind::VhostUser { .. })
        && iface.model.as_deref().is_some_and(|m| m != "virtio")
    {
        return Err(r.err("type 'vhostuser' needs <model type='virtio'/>"));
    }
    Ok(())
}

/// `type='user'`: `<ip>` and `<portForward>` elements.
fn user(r: &mut Reader, node: &Node) -> Result<InterfaceKind, InterfaceError> {
    let mut ips = Vec::new();
    for ip in node.kids("ip") {
        r.check(ip, "interface/ip", &["family", "address", "prefix"], &[]);
        let address: IpAddr = r.required_parsed(ip, "interface/ip", "address", "an IP address")?;
        let prefix: Option<u8> = r.parsed(ip, "interface/ip", "prefix", "a prefix length")?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix.is_some_and(|p| p > max) {
            return Err(r.err(format!(
                "interface/ip/@prefix = '{}': at most {max} for {address}",
                prefix.unwrap_or_default()
            )));
        }
        match (ip.attr("family"), address) {
            (None | Some("ipv4"), IpAddr::V4(_)) | (Some("ipv6"), IpAddr::V6(_)) => {}
            (None, IpAddr::V6(_)) => {}
            (Some(f), _) => {
                return Err(r.err(format!(
                    "interface/ip/@family = '{f}' does not match address {address}"
                )))
            }
        }
        ips.push(UserIp { address, prefix });
    }
    let mut port_forwards = Vec::new();
    for pf in node.kids("portForward") {
        let p = "interface/portForward";
        r.check(pf, p, &["proto", "address", "dev"], &["range"]);
        let v = r.nonempty(pf, p, "proto")?;
        let proto = ForwardProto::from_keyword(v)
            .ok_or_else(|| r.err(format!("{p}/@proto = '{v}': expected 'tcp' or 'udp'")))?;
        let address: Option<IpAddr> = r.parsed(pf, p, "address", "an IP address")?;
        let dev = pf.attr("dev").map(str::to_string);
        if let Some(d) = &dev {
            if let Err(e) = crate::IfName::new(d.as_str()) {
                return Err(r.err(format!("{p}/@dev = '{}': {e}", d.escape_debug())));
            }
        }
        let mut ranges = Vec::new();
        for range in pf.kids("range") {
            let rp = "interface/portForward/range";
            r.check(range, rp, &["start", "end", "to", "exclude"], &[]);
            let start = r.port(range, rp, "start")?;
            let end: Option<u16> = r.parsed(range, rp, "end", "a port 1-65535")?;
            let to: Option<u16> = r.parsed(range, rp, "to", "a port 1-65535")?;
            let exclude = match range.attr("exclude") {
                None | Some("no") => false,
                Some("yes") => true,
                Some(v) => {
                    return Err(r.err(format!("{rp}/@exclude = '{v}': expected 'yes' or 'no'")))
                }
            };
            if end.is_some_and(|e| e < start) {
                return Err(r.err(format!(
                    "{rp}: end {} is below start {start}",
                    end.unwrap_or_default()
                )));
            }
            if to == Some(0) {
                return Err(r.err(format!("{rp}/@to = '0': expected a port 1-65535")));
            }
            if let Some(to) = to {
                let span = end.unwrap_or(start) - start;
                if u32::from(to) + u32::from(span) > 65535 {
                    return Err(r.err(format!(
                        "{rp}: guest ports from {to} for {} ports run past 65535",
                        span + 1
                    )));
                }
            }
            if exclude && to.is_some() {
                return Err(r.err(format!("{rp}: an excluded range cannot have 'to'")));
            }
            ranges.push(PortRange {
                start,
                end,
                to,
                exclude,
            });
        }
        if ranges.iter().all(|r| r.exclude) {
            return Err(r.err(format!(
                "{p}: needs at least one <range> that is not excluded"
            )));
        }
        port_forwards.push(PortForward {
            proto,
            address,
            dev,
            ranges,
        });
    }
    Ok(InterfaceKind::User { ips, port_forwards })
}

/// True for a name the kernel accepts for a network device ([`IfName`]).
///
/// [`IfName`]: crate::IfName
pub fn valid_ifname(name: &str) -> bool {
    crate::IfName::new(name).is_ok()
}

impl PortForward {
    /// The host port → guest port pairs this forward adds, excluded ports
    /// removed, in document order.
    pub fn pairs(&self) -> Vec<(u16, u16)> {
        let excluded = |port: u16| {
            self.ranges
                .iter()
                .any(|r| r.exclude && (r.start..=r.end.unwrap_or(r.start)).contains(&port))
        };
        let mut out = Vec::new();
        for r in self.ranges.iter().filter(|r| !r.exclude) {
            let end = r.end.unwrap_or(r.start);
            for host in r.start..=end {
                if excluded(host) {
                    continue;
                }
                // Guest ports were checked to stay within 1-65535 at parse time.
                let guest = r.to.map_or(host, |to| to + (host - r.start));
                out.push((host, guest));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(xml: &str) -> Interface {
        let mut v = parse_interfaces(xml).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    fn err(xml: &str) -> String {
        parse_interfaces(xml).unwrap_err().to_string()
    }

    #[test]
    fn domain_uuid_for_vm_id() {
        let u = "c7a5fdbd-edaf-9455-926a-d65c16db1809";
        let d = format!("<domain><name>a</name><uuid> {u} </uuid><devices/></domain>");
        assert_eq!(domain_uuid(&d), Some(u.parse().unwrap()));
        assert_eq!(domain_uuid("<domain><uuid>x</uuid></domain>"), None);
        assert_eq!(domain_uuid("<interface type='user'/>"), None);
    }

    #[test]
    fn virtualport_vlan_and_portgroup() {
        let i = one(
            "<interface type='network'><source network='ovs' portgroup='blue'/>\
             <virtualport><parameters interfaceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport>\
             <vlan trunk='yes'><tag id='42' nativeMode='untagged'/><tag id='43'/></vlan></interface>",
        );
        assert_eq!(i.portgroup.as_deref(), Some("blue"));
        let vp = i.virtualport.unwrap();
        assert_eq!(vp.kind, None);
        assert_eq!(
            vp.interface_id.unwrap().to_string(),
            "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"
        );
        let vlan = i.vlan.unwrap();
        assert_eq!(vlan.tags, [42, 43]);
        assert!(vlan.trunk);
        let i = one("<interface type='bridge'><source bridge='ovsbr0'/>\
             <virtualport type='openvswitch'><parameters profileid='gold'/></virtualport>\
             <vlan><tag id='7'/></vlan></interface>");
        assert_eq!(i.virtualport.unwrap().profile_id.as_deref(), Some("gold"));
        assert_eq!(i.vlan.unwrap().tags, [7]);
        // Where slipway cannot carry them, or libvirt's readers refuse them.
        for (xml, want) in [
            (
                "<interface type='bridge'><source bridge='br0'/><vlan><tag id='7'/></vlan></interface>",
                "<vlan> needs type 'network', or type 'bridge' with <virtualport type='openvswitch'/>",
            ),
            (
                "<interface type='bridge'><source bridge='br0'/><virtualport type='802.1Qbh'/></interface>",
                "<virtualport> on type 'bridge' must be type='openvswitch'",
            ),
            (
                "<interface type='bridge'><source bridge='br0'/><virtualport/></interface>",
                "<virtualport> on type 'bridge' must be type='openvswitch'",
            ),
            (
                "<interface type='ethernet'><virtualport type='openvswitch'/></interface>",
                "<virtualport> is for type 'network' or 'bridge', not 'ethernet'",
            ),
            (
                "<interface type='network'><source network='n'/><vlan><tag id='4096'/></vlan></interface>",
                "interface/vlan/tag/@id",
            ),
            (
                "<interface type='network'><source network='n'/><virtualport type='openvswitch'>\
                 <parameters interfaceid='nope'/></virtualport></interface>",
                "interface/virtualport/parameters/@interfaceid",
            ),
            (
                "<interface type='network'><source network='n'/><virtualport type='openvswitch'>\
                 <parameters instanceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport></interface>",
                "extra instanceid unsupported in <virtualport type='openvswitch'>",
            ),
        ] {
            let e = err(xml);
            assert!(e.starts_with("interface 0 (line 1): "), "{e}");
            assert!(e.contains(want), "{xml}: {e}");
        }
    }

    #[test]
    fn domain_interfaces_in_order() {
        let v = parse_interfaces(
            "<domain type='kvm'><name>d</name><devices><disk/>\
             <interface type='network'><source network='default'/><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>\
             <interface type='bridge'><source bridge='br0'/><target dev='tap7'/><mtu size='9000'/></interface>\
             <interface type='user'/></devices></domain>",
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0].kind,
            InterfaceKind::Network {
                network: "default".into()
            }
        );
        assert_eq!(v[0].model.as_deref(), Some("virtio"));
        assert_eq!(
            v[1].kind,
            InterfaceKind::Bridge {
                bridge: "br0".into()
            }
        );
        assert_eq!(v[1].target.dev.as_deref(), Some("tap7"));
        assert_eq!(v[1].mtu, Some(9000));
        assert_eq!(v[2].index, 2);
    }

    #[test]
    fn bare_interfaces() {
        let v = parse_interfaces(
            "<?xml version='1.0'?>\n<interface type='mcast'><source address='230.0.0.1' port='5558'/></interface>\n\
             <interface type='udp'><source address='127.0.0.1' port='5555'><local address='127.0.0.1' port='5556'/></source></interface>",
        )
        .unwrap();
        assert_eq!(
            v[0].kind,
            InterfaceKind::Mcast {
                address: "230.0.0.1".parse().unwrap(),
                port: 5558
            }
        );
        assert!(matches!(
            v[1].kind,
            InterfaceKind::Udp {
                local_port: 5556,
                ..
            }
        ));
    }

    #[test]
    fn ethernet_with_scripts_and_unmanaged_target() {
        let i = one(
            "<interface type='ethernet'><target dev='mytap' managed='no'/>\
             <script path='/etc/up'/><downscript path='/etc/down'/><link state='down'/></interface>",
        );
        assert_eq!(i.target.managed, Some(false));
        assert_eq!(i.script, Some(PathBuf::from("/etc/up")));
        assert_eq!(i.downscript, Some(PathBuf::from("/etc/down")));
        assert_eq!(i.link_up, Some(false));
    }

    #[test]
    fn user_with_ip_and_port_forwards() {
        let i = one(
            "<interface type='user'><ip family='ipv4' address='172.17.2.0' prefix='24'/>\
             <portForward proto='tcp' address='127.0.0.1'>\
             <range start='2022' to='22'/><range start='5000' end='5003' to='6000'/><range start='5001' exclude='yes'/>\
             </portForward></interface>",
        );
        let InterfaceKind::User { ips, port_forwards } = &i.kind else {
            panic!()
        };
        assert_eq!(ips[0].prefix, Some(24));
        assert_eq!(
            port_forwards[0].pairs(),
            vec![(2022, 22), (5000, 6000), (5002, 6002), (5003, 6003)]
        );
    }

    #[test]
    fn errors_name_index_and_mac() {
        let e = err(
            "<interface type='user'/><interface type='bogus'><mac address='52:54:00:aa:bb:cc'/></interface>",
        );
        assert!(e.contains("interface 1 (mac 52:54:00:aa:bb:cc)"), "{e}");
        assert!(e.contains("unknown interface type 'bogus'"), "{e}");
        let e = err("<interface type='network'><mac address='fe:54:00:aa:bb:cc'/><source network='n'/></interface>");
        assert!(e.contains("0xFE"), "{e}");
        let e = err("<interface type='bridge'><script path='/x'/><source bridge='b'/></interface>");
        assert!(e.contains("interface 0") && e.contains("ethernet"), "{e}");
        let e = err("<interface type='mcast'><source address='10.0.0.1' port='1'/></interface>");
        assert!(e.contains("multicast"), "{e}");
        let e = err("<interface type='client'><source port='1'/></interface>");
        assert!(e.contains("'address'"), "{e}");
        let e = err("<interface type='ethernet'><target managed='no'/></interface>");
        assert!(e.contains("managed='no'"), "{e}");
        let e =
            err("<interface type='network'><source network='n'/><target dev='a/b'/></interface>");
        assert!(e.contains("a/b"), "{e}");
        let e = err("<interface type='bridge'><source bridge='br0&quot; accept; #'/></interface>");
        assert!(
            e.contains("interface/source/@bridge = 'br0\\\" accept; #': invalid interface name: must not contain white space"),
            "{e}"
        );
        let e = err("<network/>");
        assert!(e.contains("<network>"), "{e}");
        let e = err("<interface type='user'><portForward proto='sctp'><range start='1'/></portForward></interface>");
        assert!(e.contains("sctp"), "{e}");
        let e = err("<interface type='user'><mtu size='5'/></interface>");
        assert!(e.contains("MTU"), "{e}");
    }

    #[test]
    fn vhostuser() {
        let i = one(
            "<interface type='vhostuser'><source type='unix' path='/tmp/v.sock' mode='server'/><model type='virtio'/></interface>",
        );
        assert_eq!(
            i.kind,
            InterfaceKind::VhostUser {
                path: "/tmp/v.sock".into(),
                server: true
            }
        );
    }
}
