//! The runtime control API: a unix stream socket on the host that speaks
//! JSON lines (docs/usermode-api.md).
//!
//! A client writes one JSON request object per line and reads one reply
//! object per line, in order. The wire shape follows the network manager's
//! daemon API: replies are `{"ok": {...}}` or `{"error": {"code",
//! "message"}}`. Requests add, remove and list host forwards and read
//! leases, flows and counters ([`crate::status`]).
//!
//! The socket is a file on the host, created with mode 0600: only the
//! user running the stack can use it. Nothing of it is reachable from a
//! guest (the guest only ever talks to the stack's virtual addresses, and
//! the API has no address on the virtual network).
//!
//! The server ([`ApiServer`]) is driven by the event loop that owns the
//! [`Stack`]: it is registered under [`TokenKind::Control`] tokens and
//! handles requests between frames, so a request sees and changes the
//! stack without locks. Any front end that runs a [`Stack`] on a
//! `mio::Poll` can host it. Bad input never panics: a line that is not a
//! request gets an `invalid` error reply and the connection stays open; a
//! line over [`MAX_LINE`] bytes gets an error and the connection is closed.
//! The socket handling is `control_socket`'s.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use mio::Registry;
use serde::{Deserialize, Serialize};
use slipway_host::jsonl::{self, LineEnd};

pub use crate::control_socket::ApiError;
use crate::control_socket::{ControlSocket, Next};
#[cfg(doc)]
use crate::iface::TokenKind;
use crate::options::{parse_hostfwd, parse_hostfwd_remove};
use crate::stack::Stack;
use crate::status::{CountersInfo, FlowInfo, ForwardInfo, LeaseInfo};

/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// [`TokenKind::Control`] index of the listening socket (0 is the
/// event loop's signal descriptor); its clients follow.
pub const LISTENER_INDEX: usize = 1;

/// A request to the stack. With the `clap` feature it is also the
/// subcommands of a client (`slipway ctl`), one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Subcommand))]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Open a host forward; `spec` is `hostfwd=` syntax,
    /// `[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`.
    AddForward {
        /// The forward.
        spec: String,
    },
    /// Close a host forward; `spec` is `[tcp|udp]:[hostaddr]:hostport`
    /// (QEMU's `hostfwd_remove`).
    RemoveForward {
        /// Which forward.
        spec: String,
    },
    /// List host forwards.
    #[cfg_attr(feature = "clap", command(name = "forwards"))]
    ListForwards,
    /// List DHCP leases.
    Leases,
    /// List active flows.
    Flows,
    /// Frame and drop counters.
    Counters,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Reply {
    /// For `add-forward`: the forward as bound.
    Added {
        /// The new forward.
        forward: ForwardInfo,
    },
    /// For `remove-forward`: the forward that was closed.
    Removed {
        /// The closed forward.
        forward: ForwardInfo,
    },
    /// For `list-forwards`.
    Forwards {
        /// Every forward.
        forwards: Vec<ForwardInfo>,
    },
    /// For `leases`.
    Leases {
        /// Every lease in force.
        leases: Vec<LeaseInfo>,
    },
    /// For `flows`.
    Flows {
        /// Every active flow.
        flows: Vec<FlowInfo>,
    },
    /// For `counters`.
    Counters(CountersInfo),
}

/// Classification of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The line is not a valid request, or a spec does not parse.
    Invalid,
    /// No such forward.
    NotFound,
    /// The host refused (address in use, permission denied...).
    Failed,
}

/// An error as sent over the wire.
pub type WireError = jsonl::WireError<ErrorCode>;

/// One reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireMessage {
    /// The request succeeded.
    Ok(Reply),
    /// The request failed.
    Error(WireError),
}

fn error(code: ErrorCode, message: impl Into<String>) -> WireMessage {
    WireMessage::Error(WireError {
        code,
        message: message.into(),
    })
}

/// Carries out one request on `stack`.
pub fn handle_request(stack: &mut Stack, registry: &Registry, request: Request) -> WireMessage {
    match request {
        Request::AddForward { spec } => {
            let fwd = match parse_hostfwd(&spec, stack.config()) {
                Ok(f) => f,
                Err(e) => return error(ErrorCode::Invalid, e.to_string()),
            };
            match stack.add_forward(registry, &fwd) {
                Ok(forward) => WireMessage::Ok(Reply::Added { forward }),
                Err(e) => error(ErrorCode::Failed, error_chain(&e)),
            }
        }
        Request::RemoveForward { spec } => {
            let (protocol, host) = match parse_hostfwd_remove(&spec) {
                Ok(x) => x,
                Err(e) => return error(ErrorCode::Invalid, e.to_string()),
            };
            match stack.remove_forward(registry, protocol, host) {
                Some(forward) => WireMessage::Ok(Reply::Removed { forward }),
                None => error(
                    ErrorCode::NotFound,
                    format!("no {protocol} forward bound to {host}"),
                ),
            }
        }
        Request::ListForwards => WireMessage::Ok(Reply::Forwards {
            forwards: stack.forwards(),
        }),
        Request::Leases => WireMessage::Ok(Reply::Leases {
            leases: stack.leases(SystemTime::now()),
        }),
        Request::Flows => WireMessage::Ok(Reply::Flows {
            flows: stack.flows(Instant::now()),
        }),
        Request::Counters => WireMessage::Ok(Reply::Counters(CountersInfo::from(stack.counters()))),
    }
}

/// Parses one request line and carries it out; a line that is not a
/// request gets an `invalid` error.
pub fn handle_line(stack: &mut Stack, registry: &Registry, line: &[u8]) -> WireMessage {
    match parse_request(line) {
        Ok(request) => handle_request(stack, registry, request),
        Err(e) => e,
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, WireMessage> {
    serde_json::from_slice(line)
        .map_err(|e| error(ErrorCode::Invalid, format!("not a valid request: {e}")))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The control API's listening socket and its clients.
pub struct ApiServer {
    socket: ControlSocket,
}

impl ApiServer {
    /// Creates the socket at `path` (mode 0600; a stale socket file from
    /// a process that is gone is replaced) and registers it.
    pub fn open(path: &Path, registry: &Registry) -> Result<ApiServer, ApiError> {
        Ok(ApiServer {
            socket: ControlSocket::open(path, registry, LISTENER_INDEX, "control API")?,
        })
    }

    /// Whether [`TokenKind::Control`] index `index` is this server's (the
    /// listener or a client).
    pub fn owns(&self, index: usize) -> bool {
        self.socket.owns(index)
    }

    /// Handles readiness of [`TokenKind::Control`] index `index` (the
    /// listener or a client), carrying out complete requests on `stack`.
    pub fn on_event(&mut self, registry: &Registry, index: usize, stack: &mut Stack) {
        self.socket
            .on_event(registry, index, |input, _eof, output| {
                answer_lines(input, output, stack, registry)
            });
    }
}

/// Answers each complete line of `input`; a line over [`MAX_LINE`] bytes
/// gets an error and ends the connection. (A last line without its
/// newline when the client shuts its side is not a request.)
fn answer_lines(
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    stack: &mut Stack,
    registry: &Registry,
) -> Next {
    while let Some(line) = jsonl::take_line(input, MAX_LINE) {
        let (reply, next) = match line {
            Ok(line) if line.trim_ascii().is_empty() => continue,
            Ok(line) => (handle_line(stack, registry, line.trim_ascii()), Next::Read),
            Err(jsonl::TooLong) => (
                error(
                    ErrorCode::Invalid,
                    format!("request line longer than {MAX_LINE} bytes"),
                ),
                Next::Close,
            ),
        };
        if let Err(err) = jsonl::push_line(output, &reply) {
            tracing::warn!(%err, "control API: encoding a reply");
        }
        if next == Next::Close {
            return next;
        }
    }
    Next::Read
}

/// A blocking client of the control API (what `slipway ctl` uses).
pub struct ApiClient {
    path: PathBuf,
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl ApiClient {
    /// Connects to the API socket at `path`.
    pub fn connect(path: &Path) -> Result<ApiClient, ApiError> {
        let err = |what| {
            move |source| ApiError::Socket {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        let stream = std::os::unix::net::UnixStream::connect(path).map_err(err("connect"))?;
        let writer = stream.try_clone().map_err(err("connect"))?;
        Ok(ApiClient {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, request: &Request) -> Result<WireMessage, ApiError> {
        let err = |what| {
            let path = self.path.clone();
            move |source| ApiError::Socket { path, what, source }
        };
        jsonl::write_line(&self.writer, request).map_err(err("send"))?;
        let mut reply = Vec::new();
        match jsonl::read_line(&mut self.reader, usize::MAX, &mut reply) {
            Ok(LineEnd::Closed) if reply.is_empty() => {
                return Err(ApiError::BadReply("the stack closed the connection".into()))
            }
            Ok(_) => {}
            Err(e) => return Err(err("receive")(e)),
        }
        serde_json::from_slice(&reply)
            .map_err(|e| ApiError::BadReply(format!("{e}: {}", String::from_utf8_lossy(&reply))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::TokenKind;
    use crate::stack::started_for_tests;
    use proptest::prelude::*;
    use std::io::{BufRead, Write};
    use std::os::unix::fs::PermissionsExt;

    fn code(reply: &WireMessage) -> Option<ErrorCode> {
        match reply {
            WireMessage::Error(e) => Some(e.code),
            WireMessage::Ok(_) => None,
        }
    }

    #[test]
    fn requests_parse_from_their_documented_form() {
        assert_eq!(
            parse_request(br#"{"op":"add-forward","spec":"tcp::8080-:80"}"#).unwrap(),
            Request::AddForward {
                spec: "tcp::8080-:80".into()
            }
        );
        assert_eq!(
            parse_request(br#"{"op":"remove-forward","spec":"tcp::8080"}"#).unwrap(),
            Request::RemoveForward {
                spec: "tcp::8080".into()
            }
        );
        for (line, want) in [
            (r#"{"op":"list-forwards"}"#, Request::ListForwards),
            (r#"{"op":"leases"}"#, Request::Leases),
            (r#"{"op":"flows"}"#, Request::Flows),
            (r#"{"op":"counters"}"#, Request::Counters),
        ] {
            assert_eq!(parse_request(line.as_bytes()).unwrap(), want);
        }
    }

    #[test]
    fn bad_lines_get_invalid_errors() {
        let (mut s, poll) = started_for_tests();
        for line in [
            &b"not json"[..],
            b"{}",
            b"[]",
            b"{\"op\":\"reboot\"}",
            b"{\"op\":\"add-forward\"}",
            b"{\"op\":\"add-forward\",\"spec\":\"tcp::99999-:80\"}",
            b"{\"op\":\"remove-forward\",\"spec\":\"sctp::1\"}",
            b"\xff\xfe",
        ] {
            let reply = handle_line(&mut s, poll.registry(), line);
            assert_eq!(
                code(&reply),
                Some(ErrorCode::Invalid),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let reply = handle_line(
            &mut s,
            poll.registry(),
            br#"{"op":"remove-forward","spec":"tcp:127.0.0.1:1"}"#,
        );
        assert_eq!(code(&reply), Some(ErrorCode::NotFound));
        let wire = serde_json::to_string(&reply).unwrap();
        assert!(
            wire.starts_with(r#"{"error":{"code":"not-found","#),
            "{wire}"
        );
    }

    #[test]
    fn a_taken_address_is_a_failure_not_a_panic() {
        let (mut s, poll) = started_for_tests();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let line = format!(r#"{{"op":"add-forward","spec":"tcp:127.0.0.1:{port}-:80"}}"#);
        let reply = handle_line(&mut s, poll.registry(), line.as_bytes());
        assert_eq!(code(&reply), Some(ErrorCode::Failed), "{reply:?}");
    }

    #[test]
    fn server_answers_lines_in_order_over_the_socket() {
        let (mut s, mut poll) = started_for_tests();
        let dir = std::env::temp_dir().join(format!("slipway-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let mut server = ApiServer::open(&path, poll.registry()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let mut c = ApiClient::connect(&path).unwrap();
                let added = c
                    .call(&Request::AddForward {
                        spec: "udp:127.0.0.1:0-:53".into(),
                    })
                    .unwrap();
                let listed = c.call(&Request::ListForwards).unwrap();
                let counters = c.call(&Request::Counters).unwrap();
                // Two requests in one write, then garbage: three replies.
                let mut raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
                raw.write_all(b"{\"op\":\"leases\"}\n{\"op\":\"flows\"}\n}{\n")
                    .unwrap();
                let mut lines = BufReader::new(raw).lines();
                let raw_replies: Vec<String> =
                    (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
                (added, listed, counters, raw_replies)
            }
        });
        let mut events = mio::Events::with_capacity(16);
        while !client.is_finished() {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(50)))
                .unwrap();
            for ev in events.iter() {
                if let Some((TokenKind::Control, index)) = crate::iface::decode_token(ev.token()) {
                    server.on_event(poll.registry(), index, &mut s);
                }
            }
        }
        let (added, listed, counters, raw) = client.join().unwrap();
        let WireMessage::Ok(Reply::Added { forward }) = added else {
            panic!("{added:?}");
        };
        assert_eq!(
            listed,
            WireMessage::Ok(Reply::Forwards {
                forwards: vec![forward]
            })
        );
        assert!(matches!(counters, WireMessage::Ok(Reply::Counters(_))));
        assert_eq!(raw[0], r#"{"ok":{"type":"leases","leases":[]}}"#);
        assert_eq!(raw[1], r#"{"ok":{"type":"flows","flows":[]}}"#);
        assert!(
            raw[2].starts_with(r#"{"error":{"code":"invalid""#),
            "{}",
            raw[2]
        );
        drop(server);
        assert!(!path.exists(), "socket file removed");
        let _ = std::fs::remove_dir_all(dir);
    }

    proptest! {
        #[test]
        fn random_lines_never_panic(line in prop::collection::vec(any::<u8>(), 0..200)) {
            let (mut s, poll) = started_for_tests();
            let _ = handle_line(&mut s, poll.registry(), &line);
        }

        #[test]
        fn random_specs_never_panic(spec in "[0-9a-z.:\\[\\]-]{0,30}") {
            let (mut s, poll) = started_for_tests();
            let line = serde_json::json!({"op": "remove-forward", "spec": spec}).to_string();
            let _ = handle_line(&mut s, poll.registry(), line.as_bytes());
            // Parsed only: a random spec that happens to be valid must not
            // bind ports on the test machine.
            let line = serde_json::json!({"op": "add-forward", "spec": spec}).to_string();
            if let Ok(Request::AddForward { spec }) = parse_request(line.as_bytes()) {
                let _ = parse_hostfwd(&spec, s.config());
            }
        }
    }
}
