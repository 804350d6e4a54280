//! The daemon API: requests, replies and events, one JSON object per line
//! (documented in docs/daemon-api.md). Direct mode runs the same requests
//! in-process through [`crate::Manager::handle`].

use serde::{Deserialize, Serialize};
use slipway_netxml::Network;

use crate::error::{Error, ErrorCode, Result};
use crate::plan::Plan;
use crate::portapi::{PortCreateFlags, PortParameters, PortRef};
use crate::update::UpdateSpec;

/// How a command names a network, with virsh's lookup rules: a 36-character
/// key is tried as a UUID first (when `by_uuid`), then as a name (when
/// `by_name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    /// The name or UUID as typed.
    pub key: String,
    /// Try it as a name.
    pub by_name: bool,
    /// Try it as a UUID.
    pub by_uuid: bool,
}

impl Lookup {
    /// Name or UUID (most commands).
    pub fn any(key: &str) -> Lookup {
        Lookup {
            key: key.to_string(),
            by_name: true,
            by_uuid: true,
        }
    }

    /// By name only (`virNetworkLookupByName`, `net-uuid`).
    pub fn name(key: &str) -> Lookup {
        Lookup {
            by_uuid: false,
            ..Lookup::any(key)
        }
    }

    /// By UUID only (`virNetworkLookupByUUID`, `net-name`).
    pub fn uuid(key: &str) -> Lookup {
        Lookup {
            by_name: false,
            ..Lookup::any(key)
        }
    }
}

/// `net-list` filters, with virsh's semantics: the state flags select
/// active and/or inactive networks; within each pair of the other flags,
/// none set means no filtering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Include running networks.
    pub active: bool,
    /// Include inactive networks.
    pub inactive: bool,
    /// Only persistent (unless `transient` too).
    pub persistent: bool,
    /// Only transient (unless `persistent` too).
    pub transient: bool,
    /// Only autostart (unless `no_autostart` too).
    pub autostart: bool,
    /// Only non-autostart (unless `autostart` too).
    pub no_autostart: bool,
}

impl ListFilter {
    /// Whether a network passes the filter.
    pub fn matches(&self, i: &NetworkInfo) -> bool {
        let state = (self.active && i.active) || (self.inactive && !i.active);
        let persist = (!self.persistent && !self.transient)
            || (self.persistent && i.persistent)
            || (self.transient && !i.persistent);
        let auto = (!self.autostart && !self.no_autostart)
            || (self.autostart && i.autostart)
            || (self.no_autostart && !i.autostart);
        state && persist && auto
    }
}

/// One network's summary (`net-list`, `net-info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// Running.
    pub active: bool,
    /// Has a persistent definition.
    pub persistent: bool,
    /// Starts with the daemon.
    pub autostart: bool,
    /// Bridge device, if the network has one.
    pub bridge: Option<String>,
}

/// A definition or state file that could not be read; the other networks
/// are still listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The file.
    pub path: String,
    /// The network it would define, when known from the file name.
    pub network: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Lifecycle event types (virsh's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A persistent definition was created or replaced.
    Defined,
    /// A persistent definition was removed.
    Undefined,
    /// A network started.
    Started,
    /// A network stopped.
    Stopped,
}

/// A lifecycle event as streamed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The network's name.
    pub network: String,
    /// Its UUID.
    pub uuid: String,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// The event for `net`.
    pub fn new(net: &Network, kind: EventKind) -> Event {
        Event {
            network: net.name.clone(),
            uuid: net.uuid.map(|u| u.to_string()).unwrap_or_default(),
            kind,
        }
    }
}

/// The result of a state-changing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The network concerned.
    pub network: String,
    /// Things the caller should know (ignored XML parts).
    pub warnings: Vec<String>,
    /// Events caused.
    pub events: Vec<Event>,
    /// Extra detail (for updates: which versions changed).
    pub detail: Option<String>,
    /// What was done on the host, one line each (`ip link add virbr1 ...`,
    /// `undo: ...`), as the daemon logged it: `slipway -v` prints them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

impl Outcome {
    pub(crate) fn new(network: &str, warnings: Vec<String>) -> Outcome {
        Outcome {
            network: network.to_string(),
            warnings,
            events: Vec::new(),
            detail: None,
            actions: Vec::new(),
        }
    }

    pub(crate) fn event(mut self, net: &Network, kind: EventKind) -> Outcome {
        self.events.push(Event::new(net, kind));
        self
    }
}

/// A request to the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// List networks.
    List {
        /// Filters.
        filter: ListFilter,
    },
    /// One network's summary.
    Info {
        /// Which network.
        lookup: Lookup,
    },
    /// A definition as XML.
    DumpXml {
        /// Which network.
        lookup: Lookup,
        /// The persistent definition rather than the live one.
        inactive: bool,
    },
    /// Define or redefine a persistent network.
    Define {
        /// The XML document.
        xml: String,
        /// Refuse unknown elements.
        validate: bool,
    },
    /// Define the shipped `default` network (subnet and bridge free on this
    /// host, autostart): what the first run does outside `--root`.
    DefineDefault,
    /// Create and start a transient network.
    Create {
        /// The XML document.
        xml: String,
    },
    /// Start a defined network.
    Start {
        /// Which network.
        lookup: Lookup,
    },
    /// The plan starting a network would carry out.
    Plan {
        /// Which network.
        lookup: Lookup,
    },
    /// Stop a network.
    Destroy {
        /// Which network.
        lookup: Lookup,
    },
    /// Remove a persistent definition.
    Undefine {
        /// Which network.
        lookup: Lookup,
    },
    /// Set or clear autostart.
    Autostart {
        /// Which network.
        lookup: Lookup,
        /// On or off.
        enable: bool,
    },
    /// Change a section of a network.
    Update {
        /// Which network.
        lookup: Lookup,
        /// The change.
        spec: UpdateSpec,
    },
    /// Create a port on a running network (`net-port-create`).
    PortCreate {
        /// Which network.
        network: Lookup,
        /// The `<networkport>` document.
        xml: String,
        /// Reclaim / validate.
        flags: PortCreateFlags,
    },
    /// The UUIDs of a running network's ports (`net-port-list`).
    PortList {
        /// Which network.
        network: Lookup,
    },
    /// A port's XML (`net-port-dumpxml`).
    PortDumpXml {
        /// Which network.
        network: Lookup,
        /// The port's UUID as typed.
        port: String,
    },
    /// Delete a port, releasing it (`net-port-delete`).
    PortDelete {
        /// Which network.
        network: Lookup,
        /// The port's UUID as typed.
        port: String,
    },
    /// A port's bandwidth parameters.
    PortGetParameters {
        /// Which network.
        network: Lookup,
        /// The port's UUID as typed.
        port: String,
    },
    /// Replace a port's bandwidth parameters.
    PortSetParameters {
        /// Which network.
        network: Lookup,
        /// The port's UUID as typed.
        port: String,
        /// The new parameters.
        params: PortParameters,
    },
    /// Daemon status (daemon only).
    Status,
    /// Turn this connection into an event stream (daemon only).
    Subscribe,
}

impl Request {
    /// What the request asks, for the daemon's log: `start network
    /// "default"` (names quoted and escaped as Rust strings: they come from
    /// clients).
    pub fn summary(&self) -> String {
        let on = |verb: &str, l: &Lookup| format!("{verb} network {:?}", l.key);
        match self {
            Request::List { .. } => "list networks".into(),
            Request::Info { lookup } => on("describe", lookup),
            Request::DumpXml { lookup, .. } => on("dump the XML of", lookup),
            Request::Define { xml, .. } => format!("define a network ({} bytes of XML)", xml.len()),
            Request::DefineDefault => "define the default network".into(),
            Request::Create { xml } => format!("create a network ({} bytes of XML)", xml.len()),
            Request::Start { lookup } => on("start", lookup),
            Request::Plan { lookup } => on("plan the start of", lookup),
            Request::Destroy { lookup } => on("destroy", lookup),
            Request::Undefine { lookup } => on("undefine", lookup),
            Request::Autostart { lookup, enable } => on(
                if *enable {
                    "autostart"
                } else {
                    "not autostart"
                },
                lookup,
            ),
            Request::Update { lookup, spec } => format!(
                "update network {:?} ({:?} {:?}{})",
                lookup.key,
                spec.command,
                spec.section,
                if spec.live { ", live" } else { "" }
            ),
            Request::PortCreate { network, xml, .. } => format!(
                "create a port on network {:?} ({} bytes of XML)",
                network.key,
                xml.len()
            ),
            Request::PortList { network } => on("list the ports of", network),
            Request::PortDumpXml { network, port } => {
                format!("dump port {port:?} of network {:?}", network.key)
            }
            Request::PortDelete { network, port } => {
                format!("delete port {port:?} of network {:?}", network.key)
            }
            Request::PortGetParameters { network, port } => {
                format!(
                    "read the parameters of port {port:?} of network {:?}",
                    network.key
                )
            }
            Request::PortSetParameters { network, port, .. } => {
                format!(
                    "set the parameters of port {port:?} of network {:?}",
                    network.key
                )
            }
            Request::Status => "daemon status".into(),
            Request::Subscribe => "subscribe to events".into(),
        }
    }

    /// Whether the request changes anything (and so needs the right credentials).
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            Request::List { .. }
                | Request::Info { .. }
                | Request::DumpXml { .. }
                | Request::Plan { .. }
                | Request::PortList { .. }
                | Request::PortDumpXml { .. }
                | Request::PortGetParameters { .. }
                | Request::Status
                | Request::Subscribe
        )
    }
}

/// The daemon's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its process id.
    pub pid: u32,
    /// Connected event subscribers.
    pub subscribers: usize,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Reply {
    /// For `list`.
    List {
        /// Matching networks, sorted.
        networks: Vec<NetworkInfo>,
        /// Unreadable files.
        problems: Vec<Problem>,
    },
    /// For `info`.
    Info(NetworkInfo),
    /// For `dump-xml`.
    Xml {
        /// The document.
        xml: String,
    },
    /// For `plan`.
    Plan(Plan),
    /// For state changes.
    Done(Outcome),
    /// For `port-create`, `port-delete` and `port-set-parameters`.
    Port {
        /// The port.
        port: PortRef,
        /// Ignored parts of the XML (`port-create`).
        warnings: Vec<String>,
    },
    /// For `port-list`.
    Ports {
        /// The ports' UUIDs, sorted.
        uuids: Vec<String>,
    },
    /// For `port-get-parameters`.
    PortParameters(PortParameters),
    /// For `status`.
    Status(DaemonStatus),
    /// For `subscribe`: events follow as [`WireMessage::Event`] lines.
    Subscribed,
}

/// An error as sent over the wire (its message is libvirt-style).
pub type WireError = slipway_host::jsonl::WireError<ErrorCode>;

/// One line from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireMessage {
    /// The request succeeded.
    Ok(Reply),
    /// The request failed.
    Error(WireError),
    /// A lifecycle event (subscribed connections only).
    Event(Event),
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        WireError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Remote {
            code: e.code,
            message: e.message,
        }
    }
}

/// Converts a reply line into a result.
pub fn into_result(msg: WireMessage) -> Result<Reply> {
    match msg {
        WireMessage::Ok(r) => Ok(r),
        WireMessage::Error(e) => Err(e.into()),
        WireMessage::Event(_) => Err(Error::Protocol("unexpected event before the reply".into())),
    }
}
