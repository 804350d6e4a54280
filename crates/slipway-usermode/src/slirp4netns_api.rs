//! slirp4netns's API (`slirp4netns --api-socket PATH`), spoken by slipway
//! so that rootless container runtimes that add port forwards through it
//! (rootlesskit's slirp4netns port driver, podman with
//! `port_handler=slirp4netns`) work unchanged (docs/usermode-api.md,
//! "slirp4netns's API").
//!
//! The protocol is one request per connection: the client writes one JSON
//! object (and usually shuts its write side), the server writes one JSON
//! object back and closes. Requests are `add_hostfwd`, `list_hostfwd` and
//! `remove_hostfwd`; forwards are named by integer ids this server assigns
//! (1, 2, ..., never reused), mapped to the stack's own forwards. Replies
//! and error texts are slirp4netns 1.2.0's, byte for byte where the
//! request is one slirp4netns handles; where slirp4netns crashes or takes
//! nonsense (no `proto`, port 70000, a guest address outside the network)
//! this server answers an `error` instead.
//!
//! The socket handling (mode 0600, stale file replaced, non-blocking
//! clients served between frames) is `control_socket`'s. A
//! request is answered as soon as it is a complete JSON value, so clients
//! that do not shut their side are served too; a request of
//! [`MAX_REQUEST`] bytes or more gets an error (slirp4netns's limit).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use mio::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{error_chain, ApiError};
use crate::config::ForwardProtocol;
use crate::control_socket::{ControlSocket, Next, MAX_CLIENTS};
use crate::options::parse_hostfwd;
use crate::stack::Stack;
use crate::status::FlowProtocol;

/// A request must be shorter than this (slirp4netns's read buffer).
pub const MAX_REQUEST: usize = 4096;
/// [`crate::iface::TokenKind::Control`] index of the listening socket, far
/// above [`crate::api`]'s.
pub const LISTENER_INDEX: usize = 1 << 16;
const _: () = assert!(crate::api::LISTENER_INDEX + MAX_CLIENTS < LISTENER_INDEX);

/// One forward as `list_hostfwd` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The id `add_hostfwd` returned.
    pub id: u64,
    /// `tcp` or `udp`.
    pub proto: FlowProtocol,
    /// The host address it is bound to.
    pub host_addr: Ipv4Addr,
    /// The host port.
    pub host_port: u16,
    /// The namespace's (guest's) address it forwards to.
    pub guest_addr: Ipv4Addr,
    /// The guest port.
    pub guest_port: u16,
}

/// A reply, in slirp4netns's shapes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// `{"return": {...}}`: `{"id": N}` for `add_hostfwd`, `{}` for
    /// `remove_hostfwd`.
    Return(ReturnValue),
    /// `{"entries": [...]}` for `list_hostfwd` (slirp4netns answers it
    /// without the `return` wrapper its manual shows).
    Entries(Vec<Entry>),
    /// `{"error": {"desc": "..."}}`.
    Error {
        /// What went wrong, starting `bad request: `.
        desc: String,
    },
}

/// The object inside a `return` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnValue {
    /// The new forward's id (`add_hostfwd`); absent for `remove_hostfwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

fn bad(desc: impl std::fmt::Display) -> Reply {
    Reply::Error {
        desc: format!("bad request: {desc}"),
    }
}

/// A forward added through this API.
#[derive(Clone, Debug)]
struct Added {
    id: u64,
    protocol: ForwardProtocol,
    host: SocketAddrV4,
    guest: SocketAddrV4,
}

type SocketAddrV4 = std::net::SocketAddrV4;

/// The ids handed out and the forwards they name.
#[derive(Debug)]
pub struct Forwards {
    next_id: u64,
    added: Vec<Added>,
}

impl Default for Forwards {
    fn default() -> Self {
        Forwards {
            next_id: 1,
            added: Vec::new(),
        }
    }
}

impl Forwards {
    /// Carries out one request (the bytes of one JSON value) on `stack`.
    pub fn handle(&mut self, stack: &mut Stack, registry: &Registry, request: &[u8]) -> Reply {
        match serde_json::from_slice::<Value>(request) {
            Ok(value) => self.handle_value(stack, registry, &value),
            Err(_) => bad("cannot parse JSON"),
        }
    }

    fn handle_value(&mut self, stack: &mut Stack, registry: &Registry, request: &Value) -> Reply {
        let Some(request) = request.as_object() else {
            return bad("json_object() failed");
        };
        let Some(execute) = request.get("execute").and_then(Value::as_str) else {
            return bad("no execute found");
        };
        let args = request.get("arguments").and_then(Value::as_object);
        match execute {
            "add_hostfwd" => self.add(stack, registry, args),
            "list_hostfwd" => Reply::Entries(self.list(stack)),
            "remove_hostfwd" => self.remove(stack, registry, args),
            _ => bad("unknown execute"),
        }
    }

    fn add(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        args: Option<&Map<String, Value>>,
    ) -> Reply {
        let arg = |name: &str| args.and_then(|a| a.get(name));
        let bad_arg = |name: &str| bad(format!("add_hostfwd: bad arguments.{name}"));
        let proto = arg("proto").and_then(Value::as_str);
        let Some(protocol) = proto.and_then(ForwardProtocol::from_keyword) else {
            return bad_arg("proto");
        };
        let Some(host_addr) = ipv4_or(arg("host_addr"), Ipv4Addr::UNSPECIFIED) else {
            return bad_arg("host_addr");
        };
        let Some(host_port) = port(arg("host_port")) else {
            return bad_arg("host_port");
        };
        let default_guest = stack.config().namespace_address();
        let Some(guest_addr) = ipv4_or(arg("guest_addr"), default_guest) else {
            return bad_arg("guest_addr");
        };
        let Some(guest_port) = port(arg("guest_port")) else {
            return bad_arg("guest_port");
        };
        let spec = format!("{protocol}:{host_addr}:{host_port}-{guest_addr}:{guest_port}");
        let fwd = match parse_hostfwd(&spec, stack.config()) {
            Ok(fwd) => fwd,
            Err(e) => return bad(format!("add_hostfwd: bad arguments.guest_addr: {e}")),
        };
        if let Err(e) = stack.add_forward(registry, &fwd) {
            return bad(format!(
                "add_hostfwd: slirp_add_hostfwd failed: {}",
                error_chain(&e)
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.added.push(Added {
            id,
            protocol,
            host: SocketAddrV4::new(host_addr, host_port),
            guest: SocketAddrV4::new(guest_addr, guest_port),
        });
        Reply::Return(ReturnValue { id: Some(id) })
    }

    /// The forwards added here that the stack still has (one removed
    /// through [`crate::api`] is gone from this list too).
    fn list(&mut self, stack: &Stack) -> Vec<Entry> {
        let live = stack.forwards();
        self.added.retain(|a| {
            live.iter().any(|f| {
                f.protocol == a.protocol
                    && f.host == SocketAddr::V4(a.host)
                    && f.guest == SocketAddr::V4(a.guest)
            })
        });
        self.added
            .iter()
            .map(|a| Entry {
                id: a.id,
                proto: a.protocol,
                host_addr: *a.host.ip(),
                host_port: a.host.port(),
                guest_addr: *a.guest.ip(),
                guest_port: a.guest.port(),
            })
            .collect()
    }

    fn remove(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        args: Option<&Map<String, Value>>,
    ) -> Reply {
        let id = args.and_then(|a| a.get("id")).and_then(integer);
        let Some(pos) = id.and_then(|id| self.added.iter().position(|a| a.id == id)) else {
            return bad("remove_hostfwd: bad arguments.id");
        };
        let gone = self.added.remove(pos);
        match stack.remove_forward(registry, gone.protocol, SocketAddr::V4(gone.host)) {
            Some(_) => Reply::Return(ReturnValue { id: None }),
            None => bad("remove_hostfwd: slirp_remove_hostfwd failed"),
        }
    }
}

/// A non-negative integral JSON number (`80` or `80.0`).
fn integer(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
            .map(|f| f as u64)
    })
}

/// A port, 1 to 65535 (slirp4netns takes 0 or a missing port as an error).
fn port(v: Option<&Value>) -> Option<u16> {
    v.and_then(integer)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
}

/// An IPv4 address in dotted-quad text; missing, null or empty is `default`.
fn ipv4_or(v: Option<&Value>, default: Ipv4Addr) -> Option<Ipv4Addr> {
    match v {
        None | Some(Value::Null) => Some(default),
        Some(Value::String(s)) if s.is_empty() => Some(default),
        Some(Value::String(s)) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Some(a),
            _ => None,
        },
        Some(_) => None,
    }
}

/// What the start of a client's input holds.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    /// Not a whole JSON value yet.
    Incomplete,
    /// A whole JSON value (or bytes that can never become one): the first
    /// `len` bytes are the request.
    Request(usize),
    /// [`MAX_REQUEST`] bytes or more without a whole value.
    TooLarge,
}

/// Finds the request at the start of `input`; at `eof` whatever is there
/// is the request.
fn frame(input: &[u8], eof: bool) -> Framed {
    let mut values = serde_json::Deserializer::from_slice(input).into_iter::<Value>();
    let complete = match values.next() {
        Some(Ok(_)) => Some(values.byte_offset()),
        Some(Err(e)) if !e.is_eof() => Some(input.len()),
        _ => None,
    };
    match complete {
        Some(len) if len < MAX_REQUEST => Framed::Request(len),
        Some(_) => Framed::TooLarge,
        None if input.len() >= MAX_REQUEST => Framed::TooLarge,
        None if eof => Framed::Request(input.len()),
        None => Framed::Incomplete,
    }
}

/// Answers the request at the start of `input`, once there is one.
fn answer(
    forwards: &mut Forwards,
    stack: &mut Stack,
    registry: &Registry,
    input: &mut Vec<u8>,
    eof: bool,
    output: &mut Vec<u8>,
) -> Next {
    let reply = match frame(input, eof) {
        Framed::Incomplete => return Next::Read,
        Framed::TooLarge => bad("too large message"),
        Framed::Request(len) => forwards.handle(stack, registry, &input[..len]),
    };
    input.clear();
    if let Err(err) = serde_json::to_writer(&mut *output, &reply) {
        tracing::warn!(%err, "slirp4netns API: encoding a reply");
    }
    Next::Close
}

/// slirp4netns's API socket and the forwards added through it.
pub struct Slirp4netnsApiServer {
    socket: ControlSocket,
    forwards: Forwards,
}

impl Slirp4netnsApiServer {
    /// Creates the socket at `path` (mode 0600; a stale socket file from a
    /// process that is gone is replaced) and registers it.
    pub fn open(path: &Path, registry: &Registry) -> Result<Slirp4netnsApiServer, ApiError> {
        Ok(Slirp4netnsApiServer {
            socket: ControlSocket::open(path, registry, LISTENER_INDEX, "slirp4netns API")?,
            forwards: Forwards::default(),
        })
    }

    /// Whether [`crate::iface::TokenKind::Control`] index `index` is this
    /// server's (the listener or a client).
    pub fn owns(&self, index: usize) -> bool {
        self.socket.owns(index)
    }

    /// Handles readiness of [`crate::iface::TokenKind::Control`] index
    /// `index`, carrying out a complete request on `stack`.
    pub fn on_event(&mut self, registry: &Registry, index: usize, stack: &mut Stack) {
        let forwards = &mut self.forwards;
        self.socket.on_event(registry, index, |input, eof, output| {
            answer(forwards, stack, registry, input, eof, output)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::{decode_token, TokenKind};
    use crate::stack::started_for_tests;
    use proptest::prelude::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;

    fn wire(reply: &Reply) -> String {
        serde_json::to_string(reply).unwrap()
    }

    fn call(f: &mut Forwards, s: &mut Stack, poll: &mio::Poll, req: &str) -> String {
        wire(&f.handle(s, poll.registry(), req.as_bytes()))
    }

    #[test]
    fn replies_have_slirp4netns_shapes() {
        assert_eq!(
            wire(&Reply::Return(ReturnValue { id: Some(3) })),
            r#"{"return":{"id":3}}"#
        );
        assert_eq!(
            wire(&Reply::Return(ReturnValue { id: None })),
            r#"{"return":{}}"#
        );
        assert_eq!(wire(&Reply::Entries(vec![])), r#"{"entries":[]}"#);
        assert_eq!(
            wire(&bad("unknown execute")),
            r#"{"error":{"desc":"bad request: unknown execute"}}"#
        );
    }

    #[test]
    fn add_list_remove_with_ids_and_defaults() {
        let (mut s, poll) = started_for_tests();
        let mut f = Forwards::default();
        let a = call(
            &mut f,
            &mut s,
            &poll,
            r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"127.0.0.1","host_port":0,"guest_port":53}}"#,
        );
        assert_eq!(
            a,
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}"#
        );
        let p1 = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let req = format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"udp","host_addr":"127.0.0.1","host_port":{p1},"guest_port":53}}}}"#
        );
        assert_eq!(call(&mut f, &mut s, &poll, &req), r#"{"return":{"id":1}}"#);
        // The same port again: the host refuses, no id is used up.
        let again = call(&mut f, &mut s, &poll, &req);
        assert!(
            again.starts_with(
                r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"#
            ),
            "{again}"
        );
        let p2 = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let req = format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{p2}.0,"guest_addr":"10.0.2.15","guest_port":80}}}}"#
        );
        assert_eq!(call(&mut f, &mut s, &poll, &req), r#"{"return":{"id":2}}"#);
        let list = call(&mut f, &mut s, &poll, r#"{"execute":"list_hostfwd"}"#);
        assert_eq!(
            list,
            format!(
                r#"{{"entries":[{{"id":1,"proto":"udp","host_addr":"127.0.0.1","host_port":{p1},"guest_addr":"10.0.2.100","guest_port":53}},{{"id":2,"proto":"tcp","host_addr":"127.0.0.1","host_port":{p2},"guest_addr":"10.0.2.15","guest_port":80}}]}}"#
            )
        );
        let rm = r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#;
        assert_eq!(call(&mut f, &mut s, &poll, rm), r#"{"return":{}}"#);
        assert_eq!(
            call(&mut f, &mut s, &poll, rm),
            r#"{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}"#
        );
        assert_eq!(s.forwards().len(), 1);
        // Removed behind this API's back: gone from its list too.
        s.remove_forward(
            poll.registry(),
            ForwardProtocol::Tcp,
            SocketAddr::from(([127, 0, 0, 1], p2)),
        )
        .unwrap();
        assert_eq!(
            call(&mut f, &mut s, &poll, r#"{"execute":"list_hostfwd"}"#),
            r#"{"entries":[]}"#
        );
    }

    #[test]
    fn bad_requests_get_slirp4netns_errors() {
        let (mut s, poll) = started_for_tests();
        let mut f = Forwards::default();
        let add = |args: &str| format!(r#"{{"execute":"add_hostfwd","arguments":{args}}}"#);
        for (req, desc) in [
            ("not json".to_string(), "cannot parse JSON"),
            ("".into(), "cannot parse JSON"),
            ("\u{fffd}".into(), "cannot parse JSON"),
            ("[]".into(), "json_object() failed"),
            ("{}".into(), "no execute found"),
            (r#"{"execute":42}"#.into(), "no execute found"),
            (r#"{"execute":"reboot"}"#.into(), "unknown execute"),
            (
                r#"{"execute":"add_hostfwd"}"#.into(),
                "add_hostfwd: bad arguments.proto",
            ),
            (
                add(r#"{"proto":"sctp","host_port":1,"guest_port":1}"#),
                "add_hostfwd: bad arguments.proto",
            ),
            (
                add(r#"{"proto":"tcp","host_addr":"::1","host_port":1,"guest_port":1}"#),
                "add_hostfwd: bad arguments.host_addr",
            ),
            (
                add(r#"{"proto":"tcp","host_addr":7,"host_port":1,"guest_port":1}"#),
                "add_hostfwd: bad arguments.host_addr",
            ),
            (
                add(r#"{"proto":"tcp","guest_port":1}"#),
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                add(r#"{"proto":"tcp","host_port":70000,"guest_port":1}"#),
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                add(r#"{"proto":"tcp","host_port":"80","guest_port":1}"#),
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                add(r#"{"proto":"tcp","host_port":-1,"guest_port":1}"#),
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                add(r#"{"proto":"tcp","host_port":80.5,"guest_port":1}"#),
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                add(r#"{"proto":"tcp","host_port":1,"guest_addr":"bogus","guest_port":1}"#),
                "add_hostfwd: bad arguments.guest_addr",
            ),
            (
                add(r#"{"proto":"tcp","host_port":1}"#),
                "add_hostfwd: bad arguments.guest_port",
            ),
            (
                r#"{"execute":"remove_hostfwd"}"#.into(),
                "remove_hostfwd: bad arguments.id",
            ),
            (
                r#"{"execute":"remove_hostfwd","arguments":{"id":"1"}}"#.into(),
                "remove_hostfwd: bad arguments.id",
            ),
        ] {
            let got = call(&mut f, &mut s, &poll, &req);
            let want = wire(&bad(desc));
            assert_eq!(got, want, "{req}");
        }
        // A guest address the network cannot reach: refused, with why.
        let got = call(
            &mut f,
            &mut s,
            &poll,
            &add(r#"{"proto":"tcp","host_port":1,"guest_addr":"10.0.2.2","guest_port":1}"#),
        );
        assert!(
            got.contains("bad arguments.guest_addr: ") && got.contains("10.0.2.2"),
            "{got}"
        );
        assert!(s.forwards().is_empty());
    }

    #[test]
    fn requests_are_framed_by_their_json_value() {
        assert_eq!(frame(b"", false), Framed::Incomplete);
        assert_eq!(frame(b"  ", false), Framed::Incomplete);
        assert_eq!(frame(b"{\"execute\":", false), Framed::Incomplete);
        assert_eq!(frame(b"{\"execute\":", true), Framed::Request(11));
        assert_eq!(frame(b"{} trailing", false), Framed::Request(2));
        assert_eq!(frame(b"}{", false), Framed::Request(2));
        assert_eq!(frame(&[b' '; MAX_REQUEST], false), Framed::TooLarge);
        let mut big = b"{\"x\":\"".to_vec();
        big.resize(MAX_REQUEST + 10, b'a');
        big.extend_from_slice(b"\"}");
        assert_eq!(frame(&big, true), Framed::TooLarge);
    }

    /// Over the socket: one request per connection, answered without the
    /// client shutting its side, a silent client holding nothing up, a
    /// too large request refused.
    #[test]
    fn server_answers_one_request_per_connection() {
        let (mut s, mut poll) = started_for_tests();
        let dir = std::env::temp_dir().join(format!("slipway-s4napi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let mut server = Slirp4netnsApiServer::open(&path, poll.registry()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let connect = || std::os::unix::net::UnixStream::connect(&path).unwrap();
                let silent = connect();
                let read_all = |mut c: std::os::unix::net::UnixStream| {
                    let mut reply = String::new();
                    c.read_to_string(&mut reply).unwrap();
                    reply
                };
                // Shut down after the request, as rootlesskit does.
                let mut c = connect();
                c.write_all(br#"{"execute": "list_hostfwd"}"#).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                let listed = read_all(c);
                // Not shut down: answered once the object is complete.
                let mut c = connect();
                c.write_all(br#"{"execute":"#).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                c.write_all(br#""nope"}"#).unwrap();
                let unknown = read_all(c);
                let mut c = connect();
                c.write_all(&[b' '; MAX_REQUEST]).unwrap();
                let large = read_all(c);
                drop(silent);
                (listed, unknown, large)
            }
        });
        let mut events = mio::Events::with_capacity(16);
        while !client.is_finished() {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(50)))
                .unwrap();
            for ev in events.iter() {
                if let Some((TokenKind::Control, index)) = decode_token(ev.token()) {
                    assert!(server.owns(index));
                    server.on_event(poll.registry(), index, &mut s);
                }
            }
        }
        let (listed, unknown, large) = client.join().unwrap();
        assert_eq!(listed, r#"{"entries":[]}"#);
        assert_eq!(
            unknown,
            r#"{"error":{"desc":"bad request: unknown execute"}}"#
        );
        assert_eq!(
            large,
            r#"{"error":{"desc":"bad request: too large message"}}"#
        );
        drop(server);
        assert!(!path.exists(), "socket file removed");
        let _ = std::fs::remove_dir_all(dir);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..300), eof: bool) {
            let (mut s, poll) = started_for_tests();
            let mut f = Forwards::default();
            let mut input = input;
            let mut output = Vec::new();
            let _ = answer(&mut f, &mut s, poll.registry(), &mut input, eof, &mut output);
            let _ = f.handle(&mut s, poll.registry(), &input);
        }

        #[test]
        fn random_arguments_never_panic(
            execute in "(add|list|remove)_hostfwd|[a-z_]{0,12}",
            proto in prop::option::of("tcp|udp|[a-z]{0,4}"),
            host_addr in prop::option::of("[0-9.:a-f]{0,16}"),
            host_port in prop::option::of(any::<i64>()),
            guest_addr in prop::option::of("[0-9.:a-f]{0,16}"),
            guest_port in prop::option::of(any::<f64>()),
            id in prop::option::of(any::<i64>()),
        ) {
            let (mut s, poll) = started_for_tests();
            let mut f = Forwards::default();
            // The host address is one no socket here can bind (TEST-NET-1),
            // so no port on the test machine is opened.
            let mut args = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| { if let Some(v) = v { args.insert(k.into(), v); } };
            put("proto", proto.map(Value::from));
            put("host_addr", Some(Value::from("192.0.2.1")));
            put("host_port", host_port.map(Value::from));
            put("guest_addr", guest_addr.map(Value::from));
            put("guest_port", guest_port.map(Value::from));
            put("id", id.map(Value::from));
            let req = serde_json::json!({"execute": execute, "arguments": args}).to_string();
            let reply = f.handle(&mut s, poll.registry(), req.as_bytes());
            prop_assert!(matches!(reply, Reply::Error { .. } | Reply::Entries(_)), "{reply:?}");
            let _ = ipv4_or(host_addr.map(Value::from).as_ref(), Ipv4Addr::UNSPECIFIED);
        }
    }
}
