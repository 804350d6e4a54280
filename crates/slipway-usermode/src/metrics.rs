//! Prometheus metrics of a running stack: `GET /metrics` over HTTP on a TCP
//! address or a unix socket (`slipway user --metrics ADDR|unix:PATH`),
//! served from the stack's own event loop.
//!
//! Theory of operation: the listener and its clients are registered under
//! [`TokenKind::Control`] indices from [`LISTENER_INDEX`]. A client's bytes
//! are gathered until the request head ends (an empty line); then one
//! response is built from the stack's existing counters (frames and bytes
//! by direction, drops by reason, DNS queries and upstream failures) and
//! snapshots (flows by protocol, DHCP leases), written as the socket takes
//! it, and the connection is closed (HTTP/1.0 style, `Connection: close`).
//! Nothing is counted for the metrics: the data path is untouched, and a
//! scrape costs one walk of the flow tables.
//!
//! Bounds (docs/bad-input.md): at most [`MAX_CLIENTS`] connections (more
//! are closed at once), a request head of at most [`MAX_REQUEST`] bytes
//! (then `431` and close), and a deadline per connection from its accept
//! (then closed, answered or not), so no client holds a slot or the loop.
//!
//! Hand-written rather than a crate: the text format is a few `# TYPE`
//! lines and samples, and an HTTP server crate would bring its own runtime
//! or threads (the sandbox allows no thread creation).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use mio::event::Source;
use mio::{Interest, Registry};

use crate::iface::{token, DropReason, TokenKind};
use crate::stack::Stack;
use crate::status::FlowProtocol;

/// The listener's [`TokenKind::Control`] index; clients follow it.
pub const LISTENER_INDEX: usize = 1 << 24;
const _: () = assert!(crate::slirp4netns_api::LISTENER_INDEX + 64 < LISTENER_INDEX);
/// Most connections served at once; more are closed on accept.
pub const MAX_CLIENTS: usize = 16;
/// The longest request head, in bytes.
pub const MAX_REQUEST: usize = 8192;
/// How long a connection may stay open, from its accept, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to serve the metrics: `HOST:PORT` or `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix stream socket (mode 0600, a stale file replaced).
    Unix(PathBuf),
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Tcp(a) => write!(f, "http://{a}/metrics"),
            MetricsAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Why the metrics listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("metrics listener {addr}: {what}")]
pub struct MetricsError {
    addr: String,
    what: &'static str,
    #[source]
    source: std::io::Error,
}

enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

enum Conn {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Conn {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
}

struct Client {
    conn: Conn,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Whether the response is in `output` (no more input is read).
    answered: bool,
    deadline: Instant,
}

/// The metrics listener and its clients.
pub struct MetricsServer {
    listener: Listener,
    /// The socket file to remove on drop (unix sockets).
    path: Option<PathBuf>,
    clients: Vec<Option<Client>>,
    timeout: Duration,
}

impl MetricsServer {
    /// Binds `addr` and registers it; connections are closed `timeout`
    /// after their accept.
    pub fn open(
        addr: &MetricsAddr,
        registry: &Registry,
        timeout: Duration,
    ) -> Result<MetricsServer, MetricsError> {
        let err = |what| {
            let addr = addr.to_string();
            move |source| MetricsError { addr, what, source }
        };
        let (mut listener, path) = match addr {
            MetricsAddr::Tcp(a) => (
                Listener::Tcp(mio::net::TcpListener::bind(*a).map_err(err("bind"))?),
                None,
            ),
            MetricsAddr::Unix(p) => {
                crate::link::remove_stale_socket(p, true).map_err(err("socket file"))?;
                let l = mio::net::UnixListener::bind(p).map_err(err("bind"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                    .map_err(err("permissions"))?;
                (Listener::Unix(l), Some(p.clone()))
            }
        };
        let tok = token(TokenKind::Control, LISTENER_INDEX);
        let source: &mut dyn Source = match &mut listener {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        };
        registry
            .register(source, tok, Interest::READABLE)
            .map_err(err("register"))?;
        let shown = match &listener {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| addr.to_string(), |a| MetricsAddr::Tcp(a).to_string()),
            Listener::Unix(_) => addr.to_string(),
        };
        tracing::info!(target: "slipway::lifecycle", metrics = %shown, "metrics on {shown}");
        Ok(MetricsServer {
            listener,
            path,
            clients: Vec::new(),
            timeout,
        })
    }

    /// The TCP address bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    /// Whether [`TokenKind::Control`] index `index` is this server's.
    pub fn owns(&self, index: usize) -> bool {
        (LISTENER_INDEX..=LISTENER_INDEX + MAX_CLIENTS).contains(&index)
    }

    /// Handles readiness of index `index` (the listener or a client),
    /// answering from `stack`.
    pub fn on_event(&mut self, registry: &Registry, index: usize, stack: &Stack, now: Instant) {
        if index == LISTENER_INDEX {
            self.accept(registry, now);
            return;
        }
        let slot = index - LISTENER_INDEX - 1;
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        if !serve(client, stack) {
            self.close(registry, slot);
        }
    }

    /// Closes the connections past their deadline.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        for slot in 0..self.clients.len() {
            if self.clients[slot]
                .as_ref()
                .is_some_and(|c| c.deadline <= now)
            {
                tracing::debug!("metrics: a client past its deadline closed");
                self.close(registry, slot);
            }
        }
    }

    /// The earliest connection deadline, to wake the loop for.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().flatten().map(|c| c.deadline).min()
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut c) = self.clients[slot].take() {
            let _ = registry.deregister(c.conn.source());
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Conn::Tcp(s)),
                Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
            };
            let mut conn = match accepted {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::warn!(%err, "metrics: accept");
                    return;
                }
            };
            let slot = match self.clients.iter().position(Option::is_none) {
                Some(s) => s,
                None if self.clients.len() < MAX_CLIENTS => {
                    self.clients.push(None);
                    self.clients.len() - 1
                }
                None => {
                    tracing::warn!("metrics: {MAX_CLIENTS} connections open; connection closed");
                    continue;
                }
            };
            let tok = token(TokenKind::Control, LISTENER_INDEX + 1 + slot);
            if let Err(err) =
                registry.register(conn.source(), tok, Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!(%err, "metrics: registering a client");
                continue;
            }
            self.clients[slot] = Some(Client {
                conn,
                input: Vec::new(),
                output: Vec::new(),
                answered: false,
                deadline: now + self.timeout,
            });
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads the request, answers it once its head is whole, writes what the
/// socket takes. False when the connection is to be closed.
fn serve(client: &mut Client, stack: &Stack) -> bool {
    let mut buf = [0u8; 2048];
    while !client.answered {
        match client.conn.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => client.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        if let Some(end) = head_end(&client.input) {
            client.output = respond(&client.input[..end], stack);
            client.answered = true;
        } else if client.input.len() > MAX_REQUEST {
            client.output = response(
                "431 Request Header Fields Too Large",
                &format!("request head longer than {MAX_REQUEST} bytes\n"),
                false,
            );
            client.answered = true;
        }
    }
    while !client.output.is_empty() {
        match client.conn.write(&client.output) {
            Ok(0) => return false,
            Ok(n) => {
                client.output.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    // Answered and written: done.
    !client.answered
}

/// Where the request head ends (after its empty line), if it has.
fn head_end(input: &[u8]) -> Option<usize> {
    input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| input.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// The response to request head `head`.
fn respond(head: &[u8], stack: &Stack) -> Vec<u8> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render(stack, Instant::now(), SystemTime::now());
            response("200 OK", &body, method == "HEAD")
        }
        ("GET" | "HEAD", _) => response("404 Not Found", "only /metrics is served\n", false),
        _ => response("405 Method Not Allowed", "only GET and HEAD\n", false),
    }
}

/// An HTTP/1.0 response with `body` (left out for HEAD: `head_only`), of
/// the content type Prometheus expects of its text format.
fn response(status: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The stack's metrics in Prometheus's text format (version 0.0.4).
pub fn render(stack: &Stack, now: Instant, wall: SystemTime) -> String {
    let c = stack.counters();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let dir = |d: &str| format!("{{direction=\"{d}\"}}");
    family(
        "slipway_frames_total",
        "counter",
        "Ethernet frames between the guests and the stack.",
        &[(dir("from_guest"), c.frames_in), (dir("to_guest"), c.frames_out)],
    );
    family(
        "slipway_bytes_total",
        "counter",
        "Bytes of Ethernet frames between the guests and the stack.",
        &[(dir("from_guest"), c.bytes_in), (dir("to_guest"), c.bytes_out)],
    );
    let drops: Vec<(String, u64)> = DropReason::ALL
        .iter()
        .map(|&r| (format!("{{reason=\"{}\"}}", r.name()), c.drops(r)))
        .collect();
    family(
        "slipway_drops_total",
        "counter",
        "Frames (or host datagrams) dropped, by reason.",
        &drops,
    );
    let flows = stack.flows(now);
    let count = |p: FlowProtocol| flows.iter().filter(|f| f.protocol == p).count() as u64;
    family(
        "slipway_flows",
        "gauge",
        "Translated connections open now, by protocol.",
        &[
            ("{protocol=\"tcp\"}".into(), count(FlowProtocol::Tcp)),
            ("{protocol=\"udp\"}".into(), count(FlowProtocol::Udp)),
        ],
    );
    family(
        "slipway_dhcp_leases",
        "gauge",
        "DHCP leases held now.",
        &[(String::new(), stack.leases(wall).len() as u64)],
    );
    family(
        "slipway_dns_queries_total",
        "counter",
        "DNS queries the guests sent to the DNS address.",
        &[(String::new(), c.dns_queries)],
    );
    family(
        "slipway_dns_upstream_failures_total",
        "counter",
        "DNS queries no upstream answered (the guest got SERVFAIL).",
        &[(String::new(), c.dns_upstream_failures)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_the_empty_line() {
        assert_eq!(head_end(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some(35));
        assert_eq!(head_end(b"GET /metrics HTTP/1.0\n\n"), Some(23));
        assert_eq!(head_end(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
