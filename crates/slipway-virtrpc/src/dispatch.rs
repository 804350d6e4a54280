//! One client's session: turns each message read into the messages to
//! send back, with libvirt's rules (`virnetserverprogram.c`,
//! `remote_daemon_dispatch.c`): the keepalive program answered, calls of
//! other programs or versions refused, `CONNECT_OPEN` first, writes refused
//! on a read-only connection, each procedure run through slipway's
//! [`Manager`] (the one implementation behind this API and the JSON one),
//! and lifecycle events turned into `NETWORK_EVENT_LIFECYCLE` messages for
//! the callbacks the client registered.
//!
//! No sockets here: the server feeds frames in and writes out what comes
//! back, so the whole protocol is testable in memory.

use std::net::IpAddr;

use slipway_netmgr::portapi::{PortCreateFlags, PortParam, PortParameters};
use slipway_netmgr::proto::{Event, EventKind, ListFilter, Lookup, NetworkInfo, Reply, Request};
use slipway_netmgr::update::{Section, UpdateCommand, UpdateSpec, SECTIONS};
use slipway_netmgr::{Error, Manager};

use crate::errors::{code, domain};
use crate::host;
use crate::message::{
    kind, status, Frame, Header, RpcError, HEADER_SIZE, KEEPALIVE_PING, KEEPALIVE_PONG,
    KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, REMOTE_PROGRAM, REMOTE_VERSION,
};
use crate::procs::{self, num, Call, NetRef};
use crate::remote;
use crate::xdr::Writer;

/// `VIR_CONNECT_RO`.
const CONNECT_RO: u32 = 1;
/// `VIR_DRV_FEATURE_PROGRAM_KEEPALIVE`.
const FEATURE_KEEPALIVE: i32 = 10;
/// The `VIR_DRV_FEATURE_*` virtnetworkd reports as supported: FD passing,
/// string typed parameters, remote event callbacks, remote close
/// callbacks, network update's corrected argument order.
const FEATURES: [i32; 5] = [8, 9, 14, 15, 16];
/// The libvirt version whose protocol this is (9.0.0).
const LIB_VERSION: u64 = 9_000_000;
/// `VIR_NETWORK_EVENT_ID_LIFECYCLE`, the only network event.
const EVENT_ID_LIFECYCLE: i32 = 0;

/// One DHCP lease, as `virNetworkGetDHCPLeases` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLease {
    /// Client MAC.
    pub mac: String,
    /// The leased address.
    pub ip: IpAddr,
    /// Prefix length of its subnet.
    pub prefix: u8,
    /// Host name the client gave.
    pub hostname: Option<String>,
    /// Client identifier (IPv4) or DUID (IPv6), as dnsmasq prints them.
    pub client_id: Option<String>,
    /// IA_NA identifier (IPv6).
    pub iaid: Option<u32>,
    /// Expiry, seconds since the epoch; `None` for an infinite lease.
    pub expires: Option<u64>,
}

/// Where the leases of a network come from (its DHCP service's file, kept
/// by the realization backend).
pub trait LeaseSource: Send + Sync {
    /// Every stored lease of network `name`, expired ones included.
    fn leases(&self, name: &str) -> Result<Vec<DhcpLease>, String>;
}

/// What a session needs from the daemon.
pub struct Context<'a> {
    /// The network manager.
    pub manager: &'a Manager,
    /// DHCP leases.
    pub leases: &'a dyn LeaseSource,
    /// The URI this daemon answers to: `network:///system` (privileged) or
    /// `network:///session`.
    pub uri: &'a str,
    /// Event callbacks one connection may register.
    pub max_callbacks: usize,
}

/// What handling one message produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send, in order.
    pub send: Vec<Vec<u8>>,
    /// Lifecycle events the call caused, for every subscriber.
    pub events: Vec<Event>,
    /// Close the connection once `send` is written.
    pub close: bool,
}

/// A registered lifecycle callback.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Callback {
    id: i32,
    /// Only this network's events (by UUID).
    only: Option<[u8; 16]>,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    readonly_socket: bool,
    /// `Some(read_only)` once `CONNECT_OPEN` succeeded.
    open: Option<bool>,
    keepalive: bool,
    callbacks: Vec<Callback>,
    next_callback: i32,
}

/// The result of one procedure: a reply payload or libvirt's error.
type Answer = Result<Vec<u8>, RpcError>;

impl Session {
    /// A session of a connection on the read-write socket, or on the
    /// read-only one (`readonly_socket`: every connection is read-only).
    pub fn new(readonly_socket: bool) -> Session {
        Session {
            readonly_socket,
            open: None,
            keepalive: false,
            callbacks: Vec::new(),
            next_callback: 1,
        }
    }

    /// Whether `CONNECT_OPEN` succeeded.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether the client asked for keepalive (so the server pings it).
    pub fn keepalive(&self) -> bool {
        self.keepalive
    }

    /// Whether the client registered lifecycle callbacks.
    pub fn wants_events(&self) -> bool {
        !self.callbacks.is_empty()
    }

    /// A keepalive PING, sent when the client has been silent.
    pub fn ping() -> Vec<u8> {
        keepalive_message(KEEPALIVE_PING)
    }

    /// The `NETWORK_EVENT_LIFECYCLE` messages of `ev`, one per matching
    /// callback.
    pub fn event_messages(&self, ev: &Event) -> Vec<Vec<u8>> {
        let Some(uuid) = uuid_bytes(&ev.uuid) else {
            return Vec::new();
        };
        let event = match ev.kind {
            EventKind::Defined => 0,
            EventKind::Undefined => 1,
            EventKind::Started => 2,
            EventKind::Stopped => 3,
        };
        self.callbacks
            .iter()
            .filter(|c| c.only.is_none_or(|u| u == uuid))
            .map(|c| {
                let mut w = Writer::new();
                w.i32(c.id)
                    .string(&ev.network)
                    .opaque_fixed(&uuid)
                    .i32(event)
                    .i32(0);
                Header {
                    prog: REMOTE_PROGRAM,
                    vers: REMOTE_VERSION,
                    proc_: num::NETWORK_EVENT_LIFECYCLE,
                    kind: kind::MESSAGE,
                    serial: 1,
                    status: status::OK,
                }
                .encode(&w.into_bytes())
            })
            .collect()
    }

    /// Handles one message read from the client.
    pub fn handle(&mut self, ctx: &Context, frame: Frame) -> Output {
        let mut out = Output::default();
        let (body, oversized) = match &frame {
            Frame::Whole(b) => (b.as_slice(), false),
            Frame::Oversized(b) => (b.as_slice(), true),
        };
        // libvirtd closes a connection whose message has no header.
        let Ok((h, payload)) = Header::decode(body) else {
            out.close = true;
            return out;
        };
        debug_assert!(body.len() >= HEADER_SIZE);
        if h.prog == KEEPALIVE_PROGRAM && h.vers == KEEPALIVE_VERSION && h.kind == kind::MESSAGE {
            if h.proc_ == KEEPALIVE_PING {
                out.send.push(keepalive_message(KEEPALIVE_PONG));
            }
            return out;
        }
        let is_call = h.kind == kind::CALL || h.kind == kind::CALL_WITH_FDS;
        // Anything but a call (replies, events, stream data from a client)
        // is dropped without an answer, as libvirtd drops it.
        if !is_call {
            return out;
        }
        let answer = if h.prog != REMOTE_PROGRAM {
            Err(RpcError::rpc(format!(
                "Cannot find program {} version {}",
                h.prog as i32, h.vers as i32
            )))
        } else if h.vers != REMOTE_VERSION {
            Err(RpcError::rpc(format!(
                "version mismatch (actual {:x}, expected {:x})",
                h.vers, REMOTE_VERSION
            )))
        } else if h.kind == kind::CALL_WITH_FDS {
            Err(RpcError::rpc(
                "file descriptor passing is not supported by this daemon",
            ))
        } else if h.status != status::OK {
            Err(RpcError::rpc(format!(
                "Unexpected message status {}",
                h.status
            )))
        } else if oversized {
            Err(RpcError::rpc("Unable to decode message payload"))
        } else {
            self.call(ctx, h.proc_, payload, &mut out)
        };
        let (st, payload) = match answer {
            Ok(p) => (status::OK, p),
            Err(e) => (status::ERROR, e.encode()),
        };
        out.send.insert(
            0,
            Header {
                kind: kind::REPLY,
                status: st,
                ..h
            }
            .encode(&payload),
        );
        out
    }

    fn call(&mut self, ctx: &Context, proc_: i32, payload: &[u8], out: &mut Output) -> Answer {
        let Some(p) = procs::procedure(proc_) else {
            return Err(remote::unserved(proc_, self.open));
        };
        let args = Call::decode(proc_, payload)
            .map_err(|_| RpcError::rpc("Unable to decode message payload"))?;
        if !p.before_open && self.open.is_none() {
            return Err(remote::not_open(proc_));
        }
        if p.writes && self.open == Some(true) {
            return Err(RpcError::read_only(p.api(), domain::NETWORK));
        }
        let mut w = Writer::new();
        match (proc_, args) {
            (num::AUTH_LIST, _) => {
                // One auth type: REMOTE_AUTH_NONE (the socket's mode and the
                // peer's credentials decide who connects).
                w.u32(1).u32(0);
            }
            (num::CONNECT_OPEN, Call::Open { name, flags }) => self.open(ctx, name, flags)?,
            (num::CONNECT_CLOSE, _) => out.close = true,
            (num::CONNECT_SUPPORTS_FEATURE, Call::Feature(f)) => {
                let yes = if f == FEATURE_KEEPALIVE {
                    self.keepalive = true;
                    true
                } else if self.open.is_none() {
                    return Err(RpcError::internal("hypervisor connection not open"));
                } else {
                    FEATURES.contains(&f)
                };
                w.i32(i32::from(yes));
            }
            (num::CONNECT_GET_TYPE, _) => {
                w.string("network");
            }
            (num::CONNECT_GET_VERSION, _) => {
                w.u64(version_number(env!("CARGO_PKG_VERSION")));
            }
            (num::CONNECT_GET_LIB_VERSION, _) => {
                w.u64(LIB_VERSION);
            }
            (num::CONNECT_GET_HOSTNAME, _) => {
                w.string(&hostname());
            }
            (num::CONNECT_GET_URI, _) => {
                w.string(ctx.uri);
            }
            (num::CONNECT_IS_SECURE, _) => {
                w.i32(1);
            }
            (num::NODE_GET_INFO, _) => host::NodeInfo::host().encode(&mut w),
            (num::CONNECT_GET_CAPABILITIES, _) => {
                let uuid = host::host_uuid(std::path::Path::new("/"));
                w.string(&host::capabilities_xml(
                    &host::NodeInfo::host(),
                    uuid.as_ref(),
                ));
            }
            (num::CONNECT_LIST_ALL_DOMAINS, Call::ListAll { flags, .. }) => {
                check_flags(flags, host::LIST_DOMAINS_FLAGS, "virConnectListAllDomains")?;
                // No domains run through this connection: an empty list
                // (asked for or not) and a count of 0.
                w.u32(0).u32(0);
            }
            // The daemon's own connection to its driver never closes apart
            // from the client's: nothing to report.
            (num::CONNECT_REGISTER_CLOSE_CALLBACK | num::CONNECT_UNREGISTER_CLOSE_CALLBACK, _) => {}
            (num::CONNECT_NUM_OF_NETWORKS | num::CONNECT_NUM_OF_DEFINED_NETWORKS, _) => {
                let active = proc_ == num::CONNECT_NUM_OF_NETWORKS;
                w.i32(list(ctx, state_filter(active))?.len() as i32);
            }
            (
                num::CONNECT_LIST_NETWORKS | num::CONNECT_LIST_DEFINED_NETWORKS,
                Call::MaxNames(max),
            ) => {
                if max as u32 > procs::NETWORK_LIST_MAX {
                    return Err(RpcError::rpc("maxnames > REMOTE_NETWORK_LIST_MAX"));
                }
                let active = proc_ == num::CONNECT_LIST_NETWORKS;
                let nets = list(ctx, state_filter(active))?;
                let names: Vec<&NetworkInfo> = nets.iter().take(max.max(0) as usize).collect();
                w.u32(names.len() as u32);
                for n in names {
                    w.string(&n.name);
                }
            }
            (
                num::CONNECT_LIST_ALL_NETWORKS,
                Call::ListAll {
                    need_results,
                    flags,
                },
            ) => {
                check_flags(flags, 0x3f, "networkConnectListAllNetworks")?;
                let nets = list(ctx, list_filter(flags))?;
                if need_results {
                    w.u32(nets.len() as u32);
                    for n in &nets {
                        net_ref(&mut w, n);
                    }
                } else {
                    w.u32(0);
                }
                w.u32(nets.len() as u32);
            }
            (num::NETWORK_LOOKUP_BY_NAME, Call::Name(name)) => {
                net_ref(&mut w, &info(ctx, &Lookup::name(&name))?);
            }
            (num::NETWORK_LOOKUP_BY_UUID, Call::Uuid(u)) => {
                let key = uuid::Uuid::from_bytes(u).to_string();
                net_ref(&mut w, &info(ctx, &Lookup::uuid(&key))?);
            }
            (num::NETWORK_CREATE_XML | num::NETWORK_CREATE_XML_FLAGS, Call::Xml { xml, flags }) => {
                check_flags(flags, 1, "networkCreateXMLFlags")?;
                if flags & 1 != 0 {
                    // VIR_NETWORK_CREATE_VALIDATE: refuse what would be
                    // ignored, as a strict define does.
                    slipway_netxml_strict(&xml)?;
                }
                let name = done(ctx, Request::Create { xml }, out)?;
                net_ref(&mut w, &info(ctx, &Lookup::name(&name))?);
            }
            (num::NETWORK_DEFINE_XML | num::NETWORK_DEFINE_XML_FLAGS, Call::Xml { xml, flags }) => {
                check_flags(flags, 1, "networkDefineXMLFlags")?;
                let validate = flags & 1 != 0;
                let name = done(ctx, Request::Define { xml, validate }, out)?;
                net_ref(&mut w, &info(ctx, &Lookup::name(&name))?);
            }
            (num::NETWORK_CREATE, Call::Net(n)) => {
                done(ctx, Request::Start { lookup: by_ref(&n) }, out).map_err(|e| gone(e, &n))?;
            }
            (num::NETWORK_DESTROY, Call::Net(n)) => {
                done(ctx, Request::Destroy { lookup: by_ref(&n) }, out).map_err(|e| gone(e, &n))?;
            }
            (num::NETWORK_UNDEFINE, Call::Net(n)) => {
                done(ctx, Request::Undefine { lookup: by_ref(&n) }, out)
                    .map_err(|e| gone(e, &n))?;
            }
            (num::NETWORK_GET_XML_DESC, Call::NetFlags(n, flags)) => {
                check_flags(flags, 1, "networkGetXMLDesc")?;
                let xml = ctx
                    .manager
                    .dumpxml(&by_ref(&n), flags & 1 != 0)
                    .map_err(|e| gone(rpc(&e), &n))?;
                w.string(&xml);
            }
            (num::NETWORK_GET_AUTOSTART, Call::Net(n)) => {
                w.i32(i32::from(net_info(ctx, &n)?.autostart));
            }
            (num::NETWORK_IS_ACTIVE, Call::Net(n)) => {
                w.i32(i32::from(net_info(ctx, &n)?.active));
            }
            (num::NETWORK_IS_PERSISTENT, Call::Net(n)) => {
                w.i32(i32::from(net_info(ctx, &n)?.persistent));
            }
            (num::NETWORK_GET_BRIDGE_NAME, Call::Net(n)) => {
                let i = net_info(ctx, &n)?;
                let bridge = i.bridge.ok_or_else(|| {
                    RpcError::new(
                        code::INTERNAL_ERROR,
                        domain::NETWORK,
                        format!(
                            "internal error: network '{}' does not have a bridge name.",
                            i.name
                        ),
                    )
                })?;
                w.string(&bridge);
            }
            (num::NETWORK_SET_AUTOSTART, Call::NetInt(n, on)) => {
                let req = Request::Autostart {
                    lookup: by_ref(&n),
                    enable: on != 0,
                };
                done(ctx, req, out).map_err(|e| gone(e, &n))?;
            }
            (
                num::NETWORK_UPDATE,
                Call::Update {
                    net,
                    command,
                    section,
                    parent_index,
                    xml,
                    flags,
                },
            ) => {
                check_flags(flags, 3, "networkUpdate")?;
                let spec = UpdateSpec {
                    command: update_command(command)?,
                    section: update_section(section)?,
                    xml,
                    parent_index: usize::try_from(parent_index).ok(),
                    live: flags & 1 != 0,
                    config: flags & 2 != 0,
                };
                let req = Request::Update {
                    lookup: by_ref(&net),
                    spec,
                };
                done(ctx, req, out).map_err(|e| gone(e, &net))?;
            }
            (
                num::NETWORK_GET_DHCP_LEASES,
                Call::Leases {
                    net,
                    mac,
                    need_results,
                    flags,
                },
            ) => {
                check_flags(flags, 0, "networkGetDHCPLeases")?;
                leases(ctx, &mut w, &net, mac.as_deref(), need_results)?;
            }
            (num::CONNECT_NETWORK_EVENT_REGISTER_ANY, Call::EventRegister { event_id, net }) => {
                if event_id != EVENT_ID_LIFECYCLE {
                    return Err(RpcError::internal(&format!(
                        "unsupported network event ID {event_id}"
                    )));
                }
                if self.callbacks.len() >= ctx.max_callbacks {
                    return Err(RpcError::internal(&format!(
                        "too many network event callbacks on this connection (limit {})",
                        ctx.max_callbacks
                    )));
                }
                let id = self.next_callback;
                self.next_callback = self.next_callback.wrapping_add(1).max(1);
                self.callbacks.push(Callback {
                    id,
                    only: net.map(|n| n.uuid),
                });
                w.i32(id);
            }
            (num::CONNECT_NETWORK_EVENT_DEREGISTER_ANY, Call::EventDeregister(id)) => {
                let before = self.callbacks.len();
                self.callbacks.retain(|c| c.id != id);
                if self.callbacks.len() == before {
                    return Err(RpcError::internal(&format!(
                        "network event callback {id} not registered"
                    )));
                }
            }
            (
                num::NETWORK_LIST_ALL_PORTS
                | num::NETWORK_PORT_LOOKUP_BY_UUID
                | num::NETWORK_PORT_CREATE_XML
                | num::NETWORK_PORT_GET_PARAMETERS
                | num::NETWORK_PORT_SET_PARAMETERS
                | num::NETWORK_PORT_GET_XML_DESC
                | num::NETWORK_PORT_DELETE,
                call,
            ) => ports(ctx, proc_, call, &mut w)?,
            // Call::decode gives each procedure its layout; a mismatch is a
            // bug here, reported to the client rather than panicking.
            (_, call) => {
                return Err(RpcError::internal(&format!(
                    "procedure {proc_} decoded as {call:?}"
                )))
            }
        }
        Ok(w.into_bytes())
    }

    fn open(&mut self, ctx: &Context, name: Option<String>, flags: u32) -> Result<(), RpcError> {
        if self.open.is_some() {
            return Err(RpcError::internal("connection already open"));
        }
        if let Some(uri) = name.as_deref().filter(|n| !n.is_empty()) {
            let (scheme, rest) = uri.split_once(':').unwrap_or((uri, ""));
            if !scheme.eq_ignore_ascii_case("network") || !rest.starts_with("///") {
                return Err(RpcError::new(
                    code::NO_CONNECT,
                    domain::NONE,
                    format!("no connection driver available for {uri}"),
                ));
            }
            let path = rest[2..].split(['?', '#']).next().unwrap_or_default();
            let want = ctx.uri.trim_start_matches("network://");
            if path != want {
                return Err(RpcError::internal(&format!(
                    "unexpected network URI path '{path}', try {}",
                    ctx.uri
                )));
            }
        }
        self.open = Some(self.readonly_socket || flags & CONNECT_RO != 0);
        Ok(())
    }
}

/// The network port API (procedures 404-410), on the manager's port
/// operations, with libvirt's network driver's flag checks
/// (`networkListAllPorts`, `networkPort*` in bridge_driver.c). A port
/// travels with the network the client named (as libvirt's
/// `virGetNetworkPort` keeps the caller's network object).
fn ports(ctx: &Context, proc_: i32, call: Call, w: &mut Writer) -> Result<(), RpcError> {
    let port_err = |e: Error, n: &NetRef| gone(rpc(&e), n);
    match (proc_, call) {
        (
            num::NETWORK_LIST_ALL_PORTS,
            Call::ListPorts {
                net,
                need_results,
                flags,
            },
        ) => {
            check_flags(flags, 0, "networkListAllPorts")?;
            let uuids = ctx
                .manager
                .port_list(&by_ref(&net))
                .map_err(|e| port_err(e, &net))?;
            if uuids.len() > procs::NETWORK_PORT_LIST_MAX as usize {
                return Err(RpcError::rpc(format!(
                    "Too many network ports '{}' for limit '{}'",
                    uuids.len(),
                    procs::NETWORK_PORT_LIST_MAX
                )));
            }
            if need_results {
                w.u32(uuids.len() as u32);
                for u in &uuids {
                    port_ref(w, &net, *u.as_bytes());
                }
            } else {
                w.u32(0);
            }
            w.u32(uuids.len() as u32);
        }
        (num::NETWORK_PORT_LOOKUP_BY_UUID, Call::PortLookup { net, uuid }) => {
            let found = ctx
                .manager
                .port_lookup(&by_ref(&net), uuid::Uuid::from_bytes(uuid))
                .map_err(|e| port_err(e, &net))?;
            port_ref(w, &net, *found.uuid.as_bytes());
        }
        (num::NETWORK_PORT_CREATE_XML, Call::PortCreate { net, xml, flags }) => {
            check_flags(flags, 3, "networkPortCreateXML")?;
            let flags = PortCreateFlags {
                reclaim: flags & 1 != 0,
                validate: flags & 2 != 0,
            };
            let (port, warnings) = ctx
                .manager
                .port_create(&by_ref(&net), &xml, flags)
                .map_err(|e| port_err(e, &net))?;
            for warning in &warnings {
                tracing::info!("network {} port {}: {warning}", port.network, port.uuid);
            }
            port_ref(w, &net, *port.uuid.as_bytes());
        }
        (num::NETWORK_PORT_GET_PARAMETERS, Call::PortGetParameters { port, flags }) => {
            check_flags(flags, 0, "networkPortGetParameters")?;
            let params = ctx
                .manager
                .port_parameters(&by_ref(&port.net), uuid::Uuid::from_bytes(port.uuid))
                .map_err(|e| port_err(e, &port.net))?
                .to_list();
            w.u32(params.len() as u32);
            for (p, v) in params {
                w.string(p.name()).u32(TYPED_PARAM_UINT).u32(v);
            }
            // libvirt's dispatcher leaves `nparams` of the reply 0; its
            // clients count the array.
            w.i32(0);
        }
        (
            num::NETWORK_PORT_SET_PARAMETERS,
            Call::PortSetParameters {
                port,
                params,
                flags,
            },
        ) => {
            let list = port_parameters(&params)?;
            check_flags(flags, 0, "networkPortSetParameters")?;
            ctx.manager
                .port_set_parameters(
                    &by_ref(&port.net),
                    uuid::Uuid::from_bytes(port.uuid),
                    &PortParameters::from_list(&list),
                )
                .map_err(|e| port_err(e, &port.net))?;
        }
        (num::NETWORK_PORT_GET_XML_DESC, Call::PortFlags(port, flags)) => {
            check_flags(flags, 0, "networkPortGetXMLDesc")?;
            let xml = ctx
                .manager
                .port_xml(&by_ref(&port.net), uuid::Uuid::from_bytes(port.uuid))
                .map_err(|e| port_err(e, &port.net))?;
            w.string(&xml);
        }
        (num::NETWORK_PORT_DELETE, Call::PortFlags(port, flags)) => {
            check_flags(flags, 0, "networkPortDelete")?;
            ctx.manager
                .port_delete(&by_ref(&port.net), uuid::Uuid::from_bytes(port.uuid))
                .map_err(|e| port_err(e, &port.net))?;
        }
        (_, call) => {
            return Err(RpcError::internal(&format!(
                "procedure {proc_} decoded as {call:?}"
            )))
        }
    }
    Ok(())
}

/// `VIR_TYPED_PARAM_UINT`, the type of every port parameter.
const TYPED_PARAM_UINT: u32 = 2;
/// `VIR_TYPED_PARAM_FIELD_LENGTH`: a field name and its NUL.
const TYPED_PARAM_FIELD_LENGTH: usize = 80;

/// The port parameters a `SET_PARAMETERS` call gives. As libvirt's
/// `virTypedParamsDeserialize`, a field name must fit its 80 bytes; as
/// its network driver, names it does not know are ignored. Beyond libvirt
/// (whose driver reads any known field's value as an unsigned int, so a
/// string's pointer or a double's bits would become a rate), a known
/// field must be `uint`, as `virTypedParamsValidate` words it.
fn port_parameters(params: &[procs::TypedParam]) -> Result<Vec<(PortParam, u32)>, RpcError> {
    let mut list = Vec::new();
    for p in params {
        if p.field.len() >= TYPED_PARAM_FIELD_LENGTH {
            return Err(RpcError::internal(&format!(
                "parameter {} too big for destination",
                p.field
            )));
        }
        let Some(known) = PortParam::from_name(&p.field) else {
            continue;
        };
        match p.value {
            procs::TypedValue::UInt(v) => list.push((known, v)),
            ref other => {
                return Err(RpcError::new(
                    code::INVALID_ARG,
                    domain::NETWORK,
                    format!(
                        "invalid argument: invalid type '{}' for parameter '{}', expected 'uint'",
                        other.type_name(),
                        p.field
                    ),
                ))
            }
        }
    }
    Ok(list)
}

fn port_ref(w: &mut Writer, net: &NetRef, uuid: [u8; 16]) {
    w.string(&net.name)
        .opaque_fixed(&net.uuid)
        .opaque_fixed(&uuid);
}

fn keepalive_message(proc_: i32) -> Vec<u8> {
    Header {
        prog: KEEPALIVE_PROGRAM,
        vers: KEEPALIVE_VERSION,
        proc_,
        kind: kind::MESSAGE,
        serial: 0,
        status: status::OK,
    }
    .encode(&[])
}

fn rpc(e: &Error) -> RpcError {
    RpcError::from(e)
}

/// libvirt looks a network argument up by its UUID, and names both when it
/// is gone.
fn gone(e: RpcError, n: &NetRef) -> RpcError {
    if e.code != code::NO_NETWORK {
        return e;
    }
    RpcError::new(
        code::NO_NETWORK,
        domain::NETWORK,
        format!(
            "Network not found: no network with matching uuid '{}' ({})",
            uuid::Uuid::from_bytes(n.uuid),
            n.name
        ),
    )
}

fn by_ref(n: &NetRef) -> Lookup {
    Lookup::uuid(&uuid::Uuid::from_bytes(n.uuid).to_string())
}

fn info(ctx: &Context, l: &Lookup) -> Result<NetworkInfo, RpcError> {
    ctx.manager.info(l).map_err(|e| rpc(&e))
}

/// The network `n` names: libvirt finds it by UUID; the name it carries
/// is tried first (one network's files to read, not all), and must have
/// that UUID.
fn net_info(ctx: &Context, n: &NetRef) -> Result<NetworkInfo, RpcError> {
    match ctx.manager.info(&Lookup::name(&n.name)) {
        Ok(i) if uuid_bytes(&i.uuid) == Some(n.uuid) => Ok(i),
        _ => info(ctx, &by_ref(n)).map_err(|e| gone(e, n)),
    }
}

fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    uuid::Uuid::parse_str(s).ok().map(|u| *u.as_bytes())
}

fn net_ref(w: &mut Writer, n: &NetworkInfo) {
    w.string(&n.name)
        .opaque_fixed(&uuid_bytes(&n.uuid).unwrap_or_default());
}

/// Runs a state-changing request; returns the network's name and keeps
/// the events it caused for the subscribers.
fn done(ctx: &Context, req: Request, out: &mut Output) -> Result<String, RpcError> {
    match ctx.manager.handle(req).map_err(|e| rpc(&e))? {
        Reply::Done(o) => {
            for w in &o.warnings {
                tracing::info!("network {}: {w}", o.network);
            }
            out.events.extend(o.events);
            Ok(o.network)
        }
        other => Err(RpcError::internal(&format!("unexpected reply {other:?}"))),
    }
}

fn state_filter(active: bool) -> ListFilter {
    ListFilter {
        active,
        inactive: !active,
        ..ListFilter::default()
    }
}

/// `VIR_CONNECT_LIST_NETWORKS_*` as a filter; no state flag means both.
fn list_filter(flags: u32) -> ListFilter {
    let bit = |b: u32| flags & b != 0;
    let (inactive, active) = (bit(1), bit(2));
    ListFilter {
        active: active || !inactive,
        inactive: inactive || !active,
        persistent: bit(4),
        transient: bit(8),
        autostart: bit(16),
        no_autostart: bit(32),
    }
}

fn list(ctx: &Context, filter: ListFilter) -> Result<Vec<NetworkInfo>, RpcError> {
    let (nets, problems) = ctx.manager.list(&filter).map_err(|e| rpc(&e))?;
    for p in problems {
        tracing::warn!("cannot read {}: {}", p.path, p.message);
    }
    Ok(nets)
}

fn check_flags(flags: u32, known: u32, func: &str) -> Result<(), RpcError> {
    match flags & !known {
        0 => Ok(()),
        extra => Err(RpcError::bad_flags(extra, func)),
    }
}

fn slipway_netxml_strict(xml: &str) -> Result<(), RpcError> {
    slipway_netxml::Network::from_xml_strict(xml)
        .map(drop)
        .map_err(|e| rpc(&Error::from(e)))
}

fn update_command(n: u32) -> Result<UpdateCommand, RpcError> {
    Ok(match n {
        1 => UpdateCommand::Modify,
        2 => UpdateCommand::Delete,
        3 => UpdateCommand::AddLast,
        4 => UpdateCommand::AddFirst,
        _ => {
            return Err(RpcError::new(
                code::NO_SUPPORT,
                domain::NETWORK,
                format!(
                    "this function is not supported by the connection driver: can't update network with command {n}"
                ),
            ))
        }
    })
}

fn update_section(n: u32) -> Result<Section, RpcError> {
    n.checked_sub(1)
        .and_then(|i| SECTIONS.get(i as usize).map(|&(_, s)| s))
        .ok_or_else(|| {
            RpcError::new(
                code::NO_SUPPORT,
                domain::NETWORK,
                "this function is not supported by the connection driver: can't update unrecognized section of network",
            )
        })
}

fn leases(
    ctx: &Context,
    w: &mut Writer,
    n: &NetRef,
    mac: Option<&str>,
    need_results: bool,
) -> Result<(), RpcError> {
    let i = net_info(ctx, n)?;
    if let Some(m) = mac {
        // virMacAddrParse's rule: six colon-separated bytes of one or two
        // hex digits.
        if m.parse::<slipway_host::MacAddr>().is_err() {
            return Err(RpcError::new(
                code::INVALID_MAC,
                domain::NETWORK,
                format!("invalid MAC address: {m}"),
            ));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let all = ctx
        .leases
        .leases(&i.name)
        .map_err(|e| RpcError::internal(&e))?;
    let leases: Vec<&DhcpLease> = all
        .iter()
        .filter(|l| l.expires.is_none_or(|e| e >= now))
        .filter(|l| mac.is_none_or(|m| m.eq_ignore_ascii_case(&l.mac)))
        .take(procs::DHCP_LEASES_MAX as usize)
        .collect();
    if need_results {
        w.u32(leases.len() as u32);
        let iface = i.bridge.as_deref().unwrap_or_default();
        for l in &leases {
            w.string(iface)
                .i64(l.expires.unwrap_or(0) as i64)
                .i32(i32::from(l.ip.is_ipv6()))
                .opt_string(Some(&l.mac))
                .opt_string(l.iaid.map(|i| i.to_string()).as_deref())
                .string(&l.ip.to_string())
                .u32(u32::from(l.prefix))
                .opt_string(l.hostname.as_deref())
                .opt_string(l.client_id.as_deref());
        }
    } else {
        w.u32(0);
    }
    w.u32(leases.len() as u32);
    Ok(())
}

/// libvirt's version number of `major.minor.micro`.
fn version_number(v: &str) -> u64 {
    let mut n = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b, c) = (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    );
    a * 1_000_000 + b * 1_000 + c
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of its length; gethostname
    // NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_netmgr::{Paths, RecordingBackend};

    struct NoLeases;

    impl LeaseSource for NoLeases {
        fn leases(&self, _: &str) -> Result<Vec<DhcpLease>, String> {
            Ok(Vec::new())
        }
    }

    fn open_call(name: Option<&str>, flags: u32) -> Frame {
        let mut w = Writer::new();
        w.opt_string(name).u32(flags);
        call_of(num::CONNECT_OPEN, w)
    }

    fn call_of(proc_: i32, args: Writer) -> Frame {
        let msg = Header {
            prog: REMOTE_PROGRAM,
            vers: REMOTE_VERSION,
            proc_,
            kind: kind::CALL,
            serial: 3,
            status: status::OK,
        }
        .encode(&args.into_bytes());
        Frame::Whole(msg[4..].to_vec())
    }

    /// The status word of the reply (0 OK, 1 error) and, for an error,
    /// its message.
    fn answer(out: &Output) -> (u32, String) {
        let (h, payload) = Header::decode(&out.send[0][4..]).unwrap();
        if h.status == status::OK {
            return (0, String::new());
        }
        let mut r = crate::xdr::Reader::new(payload);
        let (_, _) = (r.i32().unwrap(), r.i32().unwrap());
        (1, r.optional(|r| r.string(1000)).unwrap().unwrap())
    }

    #[test]
    fn open_checks_the_uri() {
        let dir = tempfile::tempdir().unwrap();
        let manager = Manager::new(Paths::detect(Some(dir.path())), Box::new(RecordingBackend));
        let ctx = Context {
            manager: &manager,
            leases: &NoLeases,
            uri: "network:///system",
            max_callbacks: 4,
        };
        let cases = [
            (
                Some("qemu:///system"),
                "no connection driver available for qemu:///system",
            ),
            (
                Some("network:///session"),
                "internal error: unexpected network URI path '/session', try network:///system",
            ),
        ];
        for (name, want) in cases {
            let mut s = Session::new(false);
            assert_eq!(
                answer(&s.handle(&ctx, open_call(name, 0))),
                (1, want.into())
            );
            assert!(!s.is_open());
        }
        for name in [
            None,
            Some(""),
            Some("network:///system"),
            Some("network:///system?x=1"),
        ] {
            let mut s = Session::new(false);
            assert_eq!(answer(&s.handle(&ctx, open_call(name, 0))).0, 0, "{name:?}");
            assert_eq!(s.open, Some(false));
        }
        // VIR_CONNECT_RO, and every connection of the read-only socket.
        let mut s = Session::new(false);
        s.handle(&ctx, open_call(None, CONNECT_RO));
        assert_eq!(s.open, Some(true));
        let mut s = Session::new(true);
        s.handle(&ctx, open_call(None, 0));
        assert_eq!(s.open, Some(true));
        // A write is refused there, named by libvirt's API function.
        let mut w = Writer::new();
        w.string("<network/>");
        assert_eq!(
            answer(&s.handle(&ctx, call_of(num::NETWORK_DEFINE_XML, w))),
            (
                1,
                "operation forbidden: read only access prevents virNetworkDefineXML".into()
            )
        );
    }

    /// Set-parameters: unknown names ignored (as libvirt's driver), a
    /// known one must be `uint`, a field name must fit libvirt's 80 bytes.
    #[test]
    fn port_parameters_are_checked() {
        use procs::{TypedParam, TypedValue};
        let tp = |field: &str, value: TypedValue| TypedParam {
            field: field.into(),
            value,
        };
        assert_eq!(
            port_parameters(&[
                tp("inbound.average", TypedValue::UInt(5)),
                tp("inbound.color", TypedValue::String("red".into())),
                tp("outbound.burst", TypedValue::UInt(9)),
            ])
            .unwrap(),
            vec![
                (PortParam::InboundAverage, 5),
                (PortParam::OutboundBurst, 9)
            ]
        );
        let e = port_parameters(&[tp("inbound.peak", TypedValue::String("1".into()))]).unwrap_err();
        assert_eq!((e.code, e.domain), (code::INVALID_ARG, domain::NETWORK));
        assert_eq!(
            e.message,
            "invalid argument: invalid type 'string' for parameter 'inbound.peak', expected 'uint'"
        );
        let e =
            port_parameters(&[tp("inbound.peak", TypedValue::Double(1f64.to_bits()))]).unwrap_err();
        assert!(e.message.contains("'double'"), "{}", e.message);
        let long = "x".repeat(80);
        let e = port_parameters(&[tp(&long, TypedValue::UInt(1))]).unwrap_err();
        assert_eq!(e.code, code::INTERNAL_ERROR);
        assert_eq!(
            e.message,
            format!("internal error: parameter {long} too big for destination")
        );
        assert!(port_parameters(&[tp(&"x".repeat(79), TypedValue::UInt(1))]).is_ok());
    }

    /// Port errors carry libvirt's numbers.
    #[test]
    fn port_errors_carry_libvirts_codes() {
        for (e, want) in [
            (Error::NoSuchPort("u".into()), code::NO_NETWORK_PORT),
            (Error::PortExists("u".into()), code::NETWORK_PORT_EXIST),
            (Error::InvalidArg("x".into()), code::INVALID_ARG),
            (
                Error::ConfigUnsupported("x".into()),
                code::CONFIG_UNSUPPORTED,
            ),
        ] {
            let r = RpcError::from(&e);
            assert_eq!((r.code, r.domain), (want, domain::NETWORK), "{e:?}");
            assert_eq!(r.message, e.to_string());
        }
    }
}
