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
//! The text format and the HTTP framing are `slipway_host::prometheus`'s
//! (shared with the daemon); an HTTP server crate would bring its own
//! runtime or threads (the sandbox allows no thread creation).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use mio::event::Source;
use mio::{Interest, Registry};
use slipway_host::free_slot;
use slipway_host::prometheus::{self, MAX_REQUEST};

use crate::control_socket::flush;
use crate::iface::{token, DropReason, TokenKind};
use crate::stack::Stack;
use crate::status::FlowProtocol;

/// The listener's [`TokenKind::Control`] index; clients follow it.
pub const LISTENER_INDEX: usize = 1 << 24;
const _: () = assert!(crate::slirp4netns_api::LISTENER_INDEX + 64 < LISTENER_INDEX);
/// Most connections served at once; more are closed on accept.
pub const MAX_CLIENTS: usize = 16;
/// How long a connection may stay open, from its accept, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to serve the metrics: `HOST:PORT` or `unix:PATH`.
pub use slipway_host::prometheus::Listen as MetricsAddr;

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

/// A client's connection, TCP or unix: all the server needs of either.
trait Conn: Read + Write + Source {}

impl<T: Read + Write + Source> Conn for T {}

struct Client {
    conn: Box<dyn Conn>,
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
            let _ = registry.deregister(&mut *c.conn);
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
                Listener::Unix(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
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
            let Some(slot) = free_slot(&mut self.clients, MAX_CLIENTS) else {
                tracing::warn!("metrics: {MAX_CLIENTS} connections open; connection closed");
                continue;
            };
            let tok = token(TokenKind::Control, LISTENER_INDEX + 1 + slot);
            if let Err(err) =
                registry.register(&mut *conn, tok, Interest::READABLE | Interest::WRITABLE)
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
        if let Some(end) = prometheus::head_end(&client.input) {
            client.output = prometheus::answer(&client.input[..end], || {
                render(stack, Instant::now(), SystemTime::now())
            });
            client.answered = true;
        } else if client.input.len() > MAX_REQUEST {
            client.output = prometheus::too_long();
            client.answered = true;
        }
    }
    if !flush(&mut client.conn, &mut client.output) {
        return false;
    }
    // Answered and written: done (or the socket is full: more to write).
    !client.answered || !client.output.is_empty()
}

/// The stack's metrics in Prometheus's text format (version 0.0.4).
pub fn render(stack: &Stack, now: Instant, wall: SystemTime) -> String {
    let c = stack.counters();
    let mut t = prometheus::Text::new();
    let from: &[(&str, &str)] = &[("direction", "from_guest")];
    let to: &[(&str, &str)] = &[("direction", "to_guest")];
    t.family(
        "slipway_frames_total",
        "counter",
        "Ethernet frames between the guests and the stack.",
        &[(from, c.frames_in), (to, c.frames_out)],
    );
    t.family(
        "slipway_bytes_total",
        "counter",
        "Bytes of Ethernet frames between the guests and the stack.",
        &[(from, c.bytes_in), (to, c.bytes_out)],
    );
    let reasons: Vec<[(&str, &str); 1]> = DropReason::KEYWORDS
        .iter()
        .map(|&(name, _)| [("reason", name)])
        .collect();
    let drops: Vec<(&[(&str, &str)], u64)> = reasons
        .iter()
        .zip(DropReason::KEYWORDS)
        .map(|(labels, (_, r))| (&labels[..], c.drops(r)))
        .collect();
    t.family(
        "slipway_drops_total",
        "counter",
        "Frames (or host datagrams) dropped, by reason.",
        &drops,
    );
    let flows = stack.flows(now);
    let count = |p: FlowProtocol| flows.iter().filter(|f| f.protocol == p).count() as u64;
    t.family(
        "slipway_flows",
        "gauge",
        "Translated connections open now, by protocol.",
        &[
            (&[("protocol", "tcp")], count(FlowProtocol::Tcp)),
            (&[("protocol", "udp")], count(FlowProtocol::Udp)),
        ],
    );
    t.family(
        "slipway_dhcp_leases",
        "gauge",
        "DHCP leases held now.",
        &[(&[], stack.leases(wall).len() as u64)],
    );
    t.family(
        "slipway_dns_queries_total",
        "counter",
        "DNS queries the guests sent to the DNS address.",
        &[(&[], c.dns_queries)],
    );
    t.family(
        "slipway_dns_upstream_failures_total",
        "counter",
        "DNS queries no upstream answered (the guest got SERVFAIL).",
        &[(&[], c.dns_upstream_failures)],
    );
    t.finish()
}
