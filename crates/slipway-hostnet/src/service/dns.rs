//! DNS on the bridge's addresses, over UDP and TCP: the local zone
//! (`<dns><host>` records and the guests' lease names) answers, the rest
//! goes upstream unless the network keeps its domain local.
//!
//! Over UDP, queries are read [`DNS_BATCH`] at a time per listener (a flood
//! does not starve DHCP, RA and TFTP) and relayed by
//! [`slipway_dns::relay::Relay`]: at most [`MAX_FORWARDED`] wait for an
//! upstream, each on its own socket.
//!
//! Over TCP (RFC 1035 4.2.2: each message behind its 2-byte length), each
//! of at most [`MAX_TCP_CLIENTS`] clients is a state machine driven by the
//! loop's readiness events and timer, never a thread of its own:
//!
//! * reading: bytes are taken until a whole query is there (a client
//!   idle for [`TCP_TIMEOUT`] is closed);
//! * answering: a local answer is queued at once; a query for upstream
//!   opens a TCP connection to the first upstream, and the next one when
//!   it fails or makes no progress for [`TCP_TIMEOUT`]; once none is left
//!   the client gets SERVFAIL (REFUSED when the network has no upstream);
//! * writing: the answer is written out, then the next query is read.
//!
//! One query is served at a time per client, so a client holds at most one
//! query's bytes, one answer and one upstream connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slipway_dns::relay::{Relay, RelayConfig, Submitted, TRY_TIMEOUT};
use slipway_dns::{Answer, LocalZone, RCODE_REFUSED, RCODE_SERVFAIL};
use slipway_netmgr::plan::ServiceConfig;
use socket2::Type;

use super::socket::{bound, bound_udp};
use super::{TCP_CLIENT_BASE, UPSTREAM_BASE};
use crate::error::Result;

/// Queries relayed upstream at once (dnsmasq's `dns-forward-max` default);
/// more are dropped until answers or timeouts free a place.
pub const MAX_FORWARDED: usize = 150;
/// DNS queries read from one listener before DHCP, RA and TFTP get their
/// turn again (a flood of queries does not starve them).
const DNS_BATCH: usize = 64;
/// Dropped relayed queries are logged at most this often.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// TCP DNS connections served at once; more are closed.
const MAX_TCP_CLIENTS: usize = 32;
/// How long a TCP DNS client may stay idle or a TCP upstream may make no
/// progress.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// The DNS service of one bridge.
pub(super) struct Dns {
    zone: LocalZone,
    /// Whether the network has upstream servers at all (SERVFAIL when
    /// none answers) or keeps its names local (REFUSED).
    upstream: bool,
    listeners: Vec<UdpSocket>,
    tcp_listeners: Vec<TcpListener>,
    /// Queries relayed upstream; a client is its address and the index
    /// of the listener it asked.
    relay: Relay<(SocketAddr, usize)>,
    /// Relayed queries dropped, as counted when last reported.
    reported_drops: u64,
    /// When dropped queries were last reported.
    reported_at: Option<Instant>,
    /// TCP clients, in slots whose index makes their tokens.
    clients: Vec<Option<TcpClient>>,
}

impl Dns {
    /// Binds UDP and TCP port 53 on each address of the bridge, when the
    /// network has DNS, answering from `zone`.
    pub(super) fn open(svc: &ServiceConfig, resolv_conf: &Path, zone: LocalZone) -> Result<Dns> {
        let mut listeners = Vec::new();
        let mut tcp_listeners = Vec::new();
        if svc.dns {
            for addr in &svc.listen {
                let at = SocketAddr::new(*addr, 53);
                listeners.push(bound_udp(at, Some(svc.interface.as_str()), false)?);
                tcp_listeners
                    .push(bound(at, Some(svc.interface.as_str()), false, Type::STREAM)?.into());
            }
        }
        let upstreams = if !svc.dns || !svc.upstream {
            Vec::new()
        } else if !svc.forwarders.is_empty() {
            svc.forwarders
                .iter()
                .map(|a| SocketAddr::new(*a, 53))
                .collect()
        } else {
            slipway_dns::upstreams_from_file(resolv_conf).unwrap_or_else(|e| {
                tracing::warn!("no upstream DNS servers: {e}");
                Vec::new()
            })
        };
        let relay = relay(upstreams);
        Ok(Dns {
            zone,
            upstream: svc.upstream,
            listeners,
            tcp_listeners,
            relay,
            reported_drops: 0,
            reported_at: None,
            clients: (0..MAX_TCP_CLIENTS).map(|_| None).collect(),
        })
    }

    /// The UDP listeners, then the TCP ones (to register with the poller).
    pub(super) fn listeners(&self) -> (&[UdpSocket], &[TcpListener]) {
        (&self.listeners, &self.tcp_listeners)
    }

    /// Replaces the zone (leases changed, or a reload).
    pub(super) fn set_zone(&mut self, zone: LocalZone) {
        self.zone = zone;
    }

    /// Sets whether the network has upstream servers (a reload).
    pub(super) fn set_upstream(&mut self, upstream: bool) {
        self.upstream = upstream;
    }

    /// The answer to `query` when it does not get one from upstream.
    fn no_upstream(&self, query: &[u8]) -> Option<Vec<u8>> {
        no_upstream(self.upstream, query)
    }

    /// Answers or relays up to [`DNS_BATCH`] queries waiting on UDP
    /// listener `i`; true when more may be waiting.
    pub(super) fn udp_ready(&mut self, registry: &Registry, i: usize) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..DNS_BATCH {
            let Ok((len, client)) = self.listeners[i].recv_from(&mut buf) else {
                return false;
            };
            let query = &mut buf[..len];
            let reply = match self.zone.answer(query) {
                Answer::Local(r) | Answer::Refuse(r) => Some(r),
                Answer::Ignore => None,
                Answer::Forward if self.relay.upstreams().is_empty() => self.no_upstream(query),
                // A full table drops the query (counted, reported by
                // `expire`): the client retries.
                Answer::Forward => {
                    match self
                        .relay
                        .query(registry, Instant::now(), (client, i), query)
                    {
                        Submitted::Sent | Submitted::InFlight | Submitted::Dropped(_) => None,
                        Submitted::Failed => slipway_dns::error_response(query, RCODE_SERVFAIL),
                    }
                }
            };
            if let Some(r) = reply {
                let _ = self.listeners[i].send_to(&r, client);
            }
        }
        true
    }

    /// Relays the answer waiting on the socket of relayed query `slot`.
    pub(super) fn upstream_ready(&mut self, slot: usize) {
        if let Some(((client, listener), answer)) = self.relay.on_readable(slot) {
            let _ = self.listeners[listener].send_to(answer, client);
        }
    }

    /// Accepts the TCP clients waiting on listener `i` while there is room.
    pub(super) fn accept(&mut self, registry: &Registry, i: usize) {
        while let Ok((stream, peer)) = self.tcp_listeners[i].accept() {
            let Some(slot) = self.clients.iter().position(Option::is_none) else {
                tracing::warn!("too many TCP DNS clients: closing {peer}");
                continue;
            };
            let opened = stream.set_nonblocking(true).and_then(|()| {
                let mut stream = TcpStream::from_std(stream);
                registry.register(
                    &mut stream,
                    client_token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(stream)
            });
            match opened {
                Ok(stream) => {
                    self.clients[slot] = Some(TcpClient::new(stream, peer));
                    self.client_ready(registry, slot);
                }
                Err(e) => tracing::debug!("TCP DNS client {peer}: {e}"),
            }
        }
    }

    /// Drives TCP client `slot` after an event on its connection or its
    /// upstream's.
    pub(super) fn client_ready(&mut self, registry: &Registry, slot: usize) {
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        let ctx = Ctx {
            registry,
            slot,
            zone: &self.zone,
            upstreams: self.relay.upstreams(),
            upstream: self.upstream,
            now: Instant::now(),
        };
        if let Err(e) = client.drive(&ctx) {
            tracing::debug!("TCP DNS client {}: {e}", client.peer);
            client.close(registry);
            self.clients[slot] = None;
        }
    }

    /// Moves relayed queries whose upstream did not answer in time on to
    /// the next upstream (a query none answered gets SERVFAIL), closes idle
    /// TCP clients and reports dropped queries.
    pub(super) fn expire(&mut self, registry: &Registry, now: Instant) {
        let listeners = &self.listeners;
        self.relay
            .on_timer(registry, now, |(client, listener), query| {
                if let Some(r) = slipway_dns::error_response(query, RCODE_SERVFAIL) {
                    let _ = listeners[listener].send_to(&r, client);
                }
            });
        for slot in 0..self.clients.len() {
            let Some(client) = self.clients[slot].as_mut() else {
                continue;
            };
            if client.deadline() > now {
                continue;
            }
            if let Some(mut up) = client.upstream.take() {
                // The upstream made no progress: the next one is asked.
                up.conn.close(registry);
                let ctx = Ctx {
                    registry,
                    slot,
                    zone: &self.zone,
                    upstreams: self.relay.upstreams(),
                    upstream: self.upstream,
                    now,
                };
                client.ask(&ctx, up.query, up.index + 1);
                client.conn.deadline = now + TCP_TIMEOUT;
                self.client_ready(registry, slot);
            } else {
                tracing::debug!("TCP DNS client {}: idle, closed", client.peer);
                client.close(registry);
                self.clients[slot] = None;
            }
        }
        // Drops are reported at most every DROP_REPORT_EVERY: a flood
        // does not flood the log.
        let stats = self.relay.stats();
        let drops = stats.dropped_full + stats.dropped_other;
        if drops > self.reported_drops
            && self
                .reported_at
                .is_none_or(|at| at.elapsed() >= DROP_REPORT_EVERY)
        {
            tracing::warn!(
                "{} DNS queries dropped (at most {MAX_FORWARDED} wait for an upstream answer)",
                drops - self.reported_drops
            );
            self.reported_drops = drops;
            self.reported_at = Some(now);
        }
    }

    /// What the relay has counted.
    pub(super) fn relay_stats(&self) -> slipway_dns::relay::RelayStats {
        self.relay.stats()
    }

    /// When [`Dns::expire`] next needs to run.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let clients = self.clients.iter().flatten().map(TcpClient::deadline);
        clients.chain(self.relay.next_deadline()).min()
    }
}

/// The answer to `query` that no upstream answered: SERVFAIL, or REFUSED
/// when the network has no upstream (`upstream` false).
fn no_upstream(upstream: bool, query: &[u8]) -> Option<Vec<u8>> {
    let rcode = if upstream {
        RCODE_SERVFAIL
    } else {
        RCODE_REFUSED
    };
    slipway_dns::error_response(query, rcode)
}

/// The token of TCP client `slot`'s connection; its upstream's is the next.
fn client_token(slot: usize) -> Token {
    Token(TCP_CLIENT_BASE + 2 * slot)
}

/// What a TCP client's state machine works with.
struct Ctx<'a> {
    registry: &'a Registry,
    slot: usize,
    zone: &'a LocalZone,
    upstreams: &'a [SocketAddr],
    upstream: bool,
    now: Instant,
}

/// A TCP connection carrying length-prefixed DNS messages both ways.
struct Framed {
    stream: TcpStream,
    /// Bytes read and not yet a whole message.
    input: Vec<u8>,
    /// Messages to write, with their lengths, and how much is written.
    output: Vec<u8>,
    written: usize,
    /// When it is given up unless it makes progress.
    deadline: Instant,
}

impl Framed {
    fn new(stream: TcpStream, now: Instant) -> Framed {
        Framed {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            deadline: now + TCP_TIMEOUT,
        }
    }

    /// Queues `msg` with its length.
    fn queue(&mut self, msg: &[u8]) {
        if let Ok(len) = u16::try_from(msg.len()) {
            self.output.extend_from_slice(&len.to_be_bytes());
            self.output.extend_from_slice(msg);
        }
    }

    /// Writes what is queued as far as the socket takes it: true once all
    /// is written.
    fn flush(&mut self, now: Instant) -> std::io::Result<bool> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.deadline = now + TCP_TIMEOUT;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(true)
    }

    /// The next whole message, reading as far as needed and the socket
    /// lets it (never past one message more than a read).
    fn receive(&mut self, now: Instant) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(msg) = take_message(&mut self.input) {
                return Ok(Some(msg));
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.deadline = now + TCP_TIMEOUT;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn close(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}

/// One TCP DNS client.
struct TcpClient {
    conn: Framed,
    peer: SocketAddr,
    /// The query being asked upstream.
    upstream: Option<Upstream>,
}

/// A query relayed to an upstream server over TCP.
struct Upstream {
    conn: Framed,
    /// The client's query (for the next upstream, or SERVFAIL).
    query: Vec<u8>,
    /// The upstream asked (index into the upstreams).
    index: usize,
    connected: bool,
}

impl TcpClient {
    fn new(stream: TcpStream, peer: SocketAddr) -> TcpClient {
        TcpClient {
            conn: Framed::new(stream, Instant::now()),
            peer,
            upstream: None,
        }
    }

    /// When the client, or its upstream, times out.
    fn deadline(&self) -> Instant {
        self.upstream
            .as_ref()
            .map_or(self.conn.deadline, |u| u.conn.deadline)
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut up) = self.upstream.take() {
            up.conn.close(registry);
        }
        self.conn.close(registry);
    }

    /// Runs the client as far as its sockets let it: `Err` when it is
    /// over (closed, broken, or a query not to answer).
    fn drive(&mut self, ctx: &Ctx) -> std::io::Result<()> {
        loop {
            if let Some(up) = &mut self.upstream {
                let answer = match up.drive(ctx.now) {
                    Ok(None) => return Ok(()),
                    Ok(Some(answer)) => Some(answer),
                    Err(e) => {
                        tracing::debug!("TCP DNS upstream {}: {e}", ctx.upstreams[up.index]);
                        None
                    }
                };
                let mut up = self.upstream.take().expect("an upstream");
                up.conn.close(ctx.registry);
                match answer {
                    Some(answer) => self.conn.queue(&answer),
                    None => self.ask(ctx, up.query, up.index + 1),
                }
                // Time to write the answer out (or to hear the next upstream).
                self.conn.deadline = ctx.now + TCP_TIMEOUT;
                continue;
            }
            if !self.conn.flush(ctx.now)? {
                return Ok(());
            }
            let Some(query) = self.conn.receive(ctx.now)? else {
                return Ok(());
            };
            match ctx.zone.answer(&query) {
                Answer::Local(r) | Answer::Refuse(r) => self.conn.queue(&r),
                Answer::Ignore => return Err(ErrorKind::InvalidData.into()),
                Answer::Forward => self.ask(ctx, query, 0),
            }
        }
    }

    /// Asks upstream `index` (or the next one that takes a connection) for
    /// `query`; once none is left, queues the answer for no upstream.
    fn ask(&mut self, ctx: &Ctx, query: Vec<u8>, index: usize) {
        for (i, up) in ctx.upstreams.iter().enumerate().skip(index) {
            let token = Token(client_token(ctx.slot).0 + 1);
            let connected = TcpStream::connect(*up).and_then(|mut stream| {
                ctx.registry.register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(stream)
            });
            match connected {
                Ok(stream) => {
                    let mut conn = Framed::new(stream, ctx.now);
                    conn.queue(&query);
                    self.upstream = Some(Upstream {
                        conn,
                        query,
                        index: i,
                        connected: false,
                    });
                    return;
                }
                Err(e) => tracing::debug!("TCP DNS upstream {up}: {e}"),
            }
        }
        if let Some(r) = no_upstream(ctx.upstream, &query) {
            self.conn.queue(&r);
        }
    }
}

impl Upstream {
    /// Connects, writes the query and reads the answer as far as the
    /// socket lets it: the answer once whole.
    fn drive(&mut self, now: Instant) -> std::io::Result<Option<Vec<u8>>> {
        if !self.connected {
            if let Some(e) = self.conn.stream.take_error()? {
                return Err(e);
            }
            match self.conn.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(None),
                Err(e) => return Err(e),
            }
            self.conn.deadline = now + TCP_TIMEOUT;
        }
        if !self.conn.flush(now)? {
            return Ok(None);
        }
        self.conn.receive(now)
    }
}

/// Takes the first whole length-prefixed message out of `buf`.
fn take_message(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    if buf.len() < 2 + len {
        return None;
    }
    let msg = buf[2..2 + len].to_vec();
    buf.drain(..2 + len);
    Some(msg)
}

/// The relay toward `upstreams`: at most [`MAX_FORWARDED`] queries in
/// flight, each from a fresh socket of its own, polled under
/// `UPSTREAM_BASE + slot`.
fn relay(upstreams: Vec<SocketAddr>) -> Relay<(SocketAddr, usize)> {
    Relay::new(
        RelayConfig {
            upstreams,
            max_queries: MAX_FORWARDED,
            bind_v4: Ipv4Addr::UNSPECIFIED,
            bind_v6: Ipv6Addr::UNSPECIFIED,
            try_timeout: TRY_TIMEOUT,
        },
        |slot| Token(UPSTREAM_BASE + slot),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A query for `name`, type A, with ID `id`.
    fn query(id: u16, name: &str) -> Vec<u8> {
        slipway_testkit::dns_query(id, name, 1)
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut out = (msg.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(msg);
        out
    }

    fn read_framed(s: &mut std::net::TcpStream) -> Vec<u8> {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut msg).unwrap();
        msg
    }

    /// A TCP upstream on loopback answering each query with itself, QR set.
    fn echo_upstream() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut q = read_framed(&mut s);
                q[2] |= 0x80;
                let _ = s.write_all(&framed(&q));
            }
        });
        addr
    }

    /// A DNS service on a loopback TCP listener (no UDP), its zone holding
    /// `nas.lab`, relaying to `upstreams`.
    fn dns(upstreams: Vec<SocketAddr>) -> Dns {
        let mut zone = LocalZone::new(Some("lab")).unwrap();
        zone.add_host("10.9.0.7".parse().unwrap(), "nas").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Dns {
            zone,
            upstream: true,
            listeners: Vec::new(),
            tcp_listeners: vec![listener],
            relay: relay(upstreams),
            reported_drops: 0,
            reported_at: None,
            clients: (0..MAX_TCP_CLIENTS).map(|_| None).collect(),
        }
    }

    /// Runs `dns` on one thread, as the service's loop does, until `client`
    /// (on another thread) returns; `idle` asks for the timers to run as if
    /// [`TCP_TIMEOUT`] had passed.
    fn serve(
        mut dns: Dns,
        idle: Arc<AtomicBool>,
        client: impl FnOnce(SocketAddr) + Send + 'static,
    ) {
        let addr = dns.tcp_listeners[0].local_addr().unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dns.tcp_listeners[0]);
        poll.registry()
            .register(&mut mio::unix::SourceFd(&fd), Token(0), Interest::READABLE)
            .unwrap();
        let client = std::thread::spawn(move || client(addr));
        let mut events = mio::Events::with_capacity(64);
        let give_up = Instant::now() + Duration::from_secs(30);
        while !client.is_finished() {
            assert!(Instant::now() < give_up, "the client did not finish");
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for ev in events.iter() {
                match ev.token() {
                    Token(0) => dns.accept(poll.registry(), 0),
                    Token(t) => dns.client_ready(poll.registry(), (t - TCP_CLIENT_BASE) / 2),
                }
            }
            let now = if idle.swap(false, Ordering::SeqCst) {
                Instant::now() + TCP_TIMEOUT + Duration::from_secs(1)
            } else {
                Instant::now()
            };
            dns.expire(poll.registry(), now);
        }
        client.join().unwrap();
    }

    /// Pipelined queries over one connection: a local answer, one relayed
    /// past an upstream that refuses the connection to the next, in order;
    /// an idle client is closed after TCP_TIMEOUT.
    #[test]
    fn tcp_clients_are_answered_relayed_and_closed_when_idle() {
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let idle = Arc::new(AtomicBool::new(false));
        let idle_client = idle.clone();
        serve(dns(vec![refused, echo_upstream()]), idle, move |addr| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut both = framed(&query(1, "www.example.com"));
            both.extend(framed(&query(2, "nas.lab")));
            s.write_all(&both).unwrap();
            let relayed = read_framed(&mut s);
            let mut want = query(1, "www.example.com");
            want[2] |= 0x80;
            assert_eq!(relayed, want, "relayed by the second upstream");
            let local = read_framed(&mut s);
            assert_eq!(&local[..2], &[0, 2]);
            assert!(local.ends_with(&[10, 9, 0, 7]), "{local:?}");
            idle_client.store(true, Ordering::SeqCst);
            let mut buf = [0u8; 1];
            assert_eq!(s.read(&mut buf).unwrap(), 0, "closed when idle");
        });
    }

    /// At most MAX_TCP_CLIENTS at once: the next is closed at once, and
    /// served once another leaves.
    #[test]
    fn tcp_clients_are_capped() {
        serve(dns(Vec::new()), Arc::default(), move |addr| {
            let held: Vec<_> = (0..MAX_TCP_CLIENTS)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(&framed(&query(3, "nas.lab"))).unwrap();
                    read_framed(&mut s);
                    s
                })
                .collect();
            let mut extra = std::net::TcpStream::connect(addr).unwrap();
            extra
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let _ = extra.write_all(&framed(&query(4, "nas.lab")));
            let mut buf = [0u8; 1];
            assert!(
                matches!(extra.read(&mut buf), Ok(0) | Err(_)),
                "the client over the cap is closed"
            );
            drop(held);
            // The slots free as the loop sees the clients leave.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.write_all(&framed(&query(5, "nas.lab")));
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_ok() {
                    break;
                }
                assert!(Instant::now() < deadline, "no slot freed");
            }
        });
    }

    #[test]
    fn messages_are_taken_whole_and_in_order() {
        let mut buf = vec![0, 2, b'a'];
        assert_eq!(take_message(&mut buf), None);
        buf.extend_from_slice(&[b'b', 0, 0, 0]);
        assert_eq!(take_message(&mut buf), Some(b"ab".to_vec()));
        assert_eq!(take_message(&mut buf), Some(Vec::new()));
        assert_eq!(buf, vec![0]);
        assert_eq!(take_message(&mut buf), None);
    }
}
