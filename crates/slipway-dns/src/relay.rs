//! The DNS relay both stacks use: UDP queries go to the upstream resolvers
//! and their answers back to the clients that asked.
//!
//! # Theory of operation
//!
//! A client's query takes a *slot* of a table allocated once with room for
//! `max_queries` queries ([`RelayConfig::max_queries`]). When every slot is
//! taken the query is dropped and counted ([`RelayStats::dropped_full`]):
//! nothing waits, nothing grows, and the caller's event loop never spends
//! more than a constant amount of work on one query, however many arrive.
//! The client retries; once slots free up it is served again.
//!
//! Each query sent upstream leaves from a fresh UDP socket (left unbound
//! until its first send, or bound to port 0 of the outbound address: the
//! kernel picks a random ephemeral port) with a random 16-bit message ID,
//! as dnsmasq does: an off-path attacker who wants to slip a forged
//! answer in (cache poisoning, RFC 5452) has to guess both, about 30 bits
//! instead of the 16 bits of a fixed port, or none at all of a sequential
//! ID. The ID is drawn from the OS's random source; one already used by
//! another query in flight is redrawn up to [`ID_TRIES`] times (a bitmap of
//! the IDs in use, never a scan of the ID space), after which the query is
//! dropped. With at most 4096 queries in flight out of 65536 IDs that
//! happens less often than once in 60000 queries.
//!
//! An answer is accepted only on the socket of its query, from the
//! upstream that query was sent to (address and port), with the query's ID,
//! the response bit, and the same question (name ignoring case, type,
//! class); anything else is counted ([`RelayStats::ignored`]) and
//! dropped. The first valid answer ends the query: its socket is closed,
//! its ID freed, and the answer goes to the client under the client's own
//! ID.
//!
//! The upstreams are tried one at a time, starting with the one that
//! answered last: a query unanswered after [`RelayConfig::try_timeout`]
//! goes to the next upstream (again from a fresh socket under a fresh ID);
//! once every upstream has had its turn the client is told to give up
//! (the caller answers SERVFAIL). A client retransmitting a query still in
//! flight (same client, same ID) is not sent again: the relay retries on
//! its own schedule, so neither the table nor the traffic toward the
//! upstreams grows with a client's retransmissions (at most
//! `max_queries` upstream queries per `try_timeout`, plus one per answer).
//!
//! Timeouts are kept in a list ordered by deadline (every try has the same
//! timeout, so a try always goes to the end), so finding the next deadline
//! and expiring are O(1) per query. Buffers are allocated when the relay is
//! made; relaying a query allocates nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::message::{parse_question, query_id, set_query_id, Header, HEADER_LEN};

/// Largest query relayed (a UDP payload at a 1500-byte MTU over IPv4).
pub const MAX_QUERY: usize = 1472;
/// Largest answer read from an upstream (a whole UDP datagram).
const MAX_ANSWER: usize = 65535;
/// How many random IDs are drawn before a query is dropped because each
/// was in use.
pub const ID_TRIES: usize = 4;
/// The default time one upstream has to answer before the next is asked.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Random bytes fetched from the OS at once (16-bit IDs drawn from them).
const RANDOM_BATCH: usize = 256;
/// "No slot" in the deadline list.
const NIL: usize = usize::MAX;

/// What a relay is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The upstream resolvers, in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// Queries in flight at once; more are dropped.
    pub max_queries: usize,
    /// Source address of queries to IPv4 upstreams (unspecified: the
    /// kernel's choice).
    pub bind_v4: Ipv4Addr,
    /// Source address of queries to IPv6 upstreams.
    pub bind_v6: Ipv6Addr,
    /// How long one upstream has to answer.
    pub try_timeout: Duration,
}

/// Why the relay did not take a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not a query with one question (or shorter than a header).
    Malformed,
    /// Longer than [`MAX_QUERY`].
    Oversized,
    /// Every slot is taken.
    Full,
    /// No unused random ID after [`ID_TRIES`] draws, or no randomness.
    NoId,
    /// No socket toward the upstream could be opened (descriptor limit).
    Socket,
}

/// What became of a query handed to [`Relay::query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Sent to an upstream; the answer comes through [`Relay::on_readable`].
    Sent,
    /// The client asked this already and the query is still in flight:
    /// that query's answer answers this one too.
    InFlight,
    /// Not taken (and counted).
    Dropped(Dropped),
    /// No upstream to ask (none configured, or sending failed to every
    /// one): the client should get SERVFAIL now.
    Failed,
}

/// What the relay has counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Queries sent upstream (a retry to the next upstream counts again).
    pub sent: u64,
    /// Answers relayed to clients.
    pub answered: u64,
    /// Queries dropped because every slot was taken.
    pub dropped_full: u64,
    /// Queries dropped for another reason (see [`Dropped`]).
    pub dropped_other: u64,
    /// Queries no upstream answered (the client gets SERVFAIL).
    pub failed: u64,
    /// Datagrams from upstream sockets that answered no query in flight.
    pub ignored: u64,
}

/// One query in flight.
struct Slot<C> {
    /// The client and its ID; `None` when the slot is free.
    client: Option<(C, u16)>,
    /// The socket of the current try.
    socket: Option<UdpSocket>,
    /// The ID of the current try (reserved in the relay's bitmap while
    /// `socket` is open).
    id: u16,
    /// Index of the upstream of the current try.
    upstream: usize,
    /// Upstreams tried so far.
    tries: usize,
    deadline: Instant,
    /// The query as sent (the current try's ID in its first two bytes).
    query: Box<[u8]>,
    len: usize,
    /// Neighbours in the deadline list.
    prev: usize,
    next: usize,
}

/// The relay: a bounded table of queries in flight, each with its own
/// socket toward its upstream. `C` names a client (its address, and for a
/// service with several listeners which one it asked).
pub struct Relay<C> {
    cfg: RelayConfig,
    token: fn(usize) -> Token,
    slots: Vec<Slot<C>>,
    free: Vec<usize>,
    by_client: HashMap<(C, u16), usize>,
    /// Bit `id` set: a query in flight carries upstream ID `id`.
    ids_in_use: Box<[u64; 1024]>,
    /// Oldest deadline first.
    head: usize,
    tail: usize,
    /// The upstream that answered last: new queries go there first.
    preferred: usize,
    random: [u8; RANDOM_BATCH],
    random_pos: usize,
    buf: Box<[u8]>,
    stats: RelayStats,
}

impl<C: Copy + Eq + Hash> Relay<C> {
    /// A relay to `cfg.upstreams` whose query sockets are registered under
    /// `token(slot)` for slot numbers below `cfg.max_queries` (at least 1);
    /// every buffer is allocated now.
    pub fn new(cfg: RelayConfig, token: fn(usize) -> Token) -> Self {
        let n = cfg.max_queries.max(1);
        let now = Instant::now();
        Relay {
            slots: (0..n)
                .map(|_| Slot {
                    client: None,
                    socket: None,
                    id: 0,
                    upstream: 0,
                    tries: 0,
                    deadline: now,
                    query: vec![0; MAX_QUERY].into_boxed_slice(),
                    len: 0,
                    prev: NIL,
                    next: NIL,
                })
                .collect(),
            free: (0..n).rev().collect(),
            by_client: HashMap::with_capacity(n),
            ids_in_use: Box::new([0; 1024]),
            head: NIL,
            tail: NIL,
            preferred: 0,
            random: [0; RANDOM_BATCH],
            random_pos: RANDOM_BATCH,
            buf: vec![0; MAX_ANSWER].into_boxed_slice(),
            stats: RelayStats::default(),
            token,
            cfg,
        }
    }

    /// The upstreams queries go to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.cfg.upstreams
    }

    /// Queries in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// What the relay has counted.
    pub fn stats(&self) -> RelayStats {
        self.stats
    }

    /// Relays `query`, which `client` sent under its own ID. On
    /// [`Submitted::Failed`] the caller answers SERVFAIL from `query`.
    pub fn query(
        &mut self,
        registry: &Registry,
        now: Instant,
        client: C,
        query: &[u8],
    ) -> Submitted {
        if query.len() > MAX_QUERY {
            return self.drop(Dropped::Oversized);
        }
        let is_query = Header::parse(query).is_ok_and(|h| !h.is_response());
        let (Some(client_id), true, true) =
            (query_id(query), is_query, parse_question(query).is_ok())
        else {
            return self.drop(Dropped::Malformed);
        };
        if self.cfg.upstreams.is_empty() {
            self.stats.failed += 1;
            return Submitted::Failed;
        }
        if self.by_client.contains_key(&(client, client_id)) {
            return Submitted::InFlight;
        }
        let Some(slot) = self.free.pop() else {
            self.stats.dropped_full += 1;
            return Submitted::Dropped(Dropped::Full);
        };
        self.by_client.insert((client, client_id), slot);
        let s = &mut self.slots[slot];
        s.client = Some((client, client_id));
        s.upstream = self.preferred;
        s.tries = 0;
        s.len = query.len();
        s.query[..query.len()].copy_from_slice(query);
        let outcome = self.send(registry, now, slot);
        if outcome != Submitted::Sent {
            self.release(slot);
        }
        outcome
    }

    /// Sends slot `slot`'s query to its current upstream from a new socket
    /// under a new ID, moving on to the next upstream while sending fails.
    /// Unless the query was sent the caller frees the slot.
    fn send(&mut self, registry: &Registry, now: Instant, slot: usize) -> Submitted {
        self.close_try(slot);
        let Some(id) = self.fresh_id() else {
            return self.drop(Dropped::NoId);
        };
        let n = self.cfg.upstreams.len();
        while self.slots[slot].tries < n {
            let upstream = self.cfg.upstreams[self.slots[slot].upstream];
            self.slots[slot].tries += 1;
            let socket = match self.open(registry, slot, upstream) {
                Ok(socket) => socket,
                Err(err) => {
                    tracing::debug!(%err, "cannot open a DNS relay socket: query dropped");
                    return self.drop(Dropped::Socket);
                }
            };
            let s = &mut self.slots[slot];
            set_query_id(&mut s.query[..s.len], id);
            match socket.send_to(&s.query[..s.len], upstream) {
                Ok(_) => {
                    s.socket = Some(socket);
                    s.id = id;
                    s.deadline = now + self.cfg.try_timeout;
                    self.set_id(id, true);
                    self.unlink(slot);
                    self.push_back(slot);
                    self.stats.sent += 1;
                    return Submitted::Sent;
                }
                Err(err) => {
                    tracing::debug!(%err, %upstream, "DNS upstream send failed");
                    // Dropping the socket closes it, which takes it out of
                    // the epoll set (no other descriptor refers to it).
                    drop(socket);
                    s.upstream = (s.upstream + 1) % n;
                }
            }
        }
        self.stats.failed += 1;
        Submitted::Failed
    }

    /// A new socket toward `upstream`, registered for slot `slot`.
    fn open(
        &self,
        registry: &Registry,
        slot: usize,
        upstream: SocketAddr,
    ) -> io::Result<UdpSocket> {
        let (domain, bind) = match upstream {
            SocketAddr::V4(_) => (Domain::IPV4, SocketAddr::from((self.cfg.bind_v4, 0))),
            SocketAddr::V6(_) => (Domain::IPV6, SocketAddr::from((self.cfg.bind_v6, 0))),
        };
        // Close-on-exec is set by `Socket::new`.
        let socket = Socket::new(domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
        // Unbound, the first send binds it to the wildcard address and a
        // random port (as bind to port 0 would, one call less).
        if !bind.ip().is_unspecified() {
            socket.bind(&bind.into())?;
        }
        let mut socket = UdpSocket::from_std(socket.into());
        registry.register(&mut socket, (self.token)(slot), Interest::READABLE)?;
        Ok(socket)
    }

    /// Reads what the upstream of slot `slot` sent; returns the client and
    /// the answer (under the client's ID) when one answers the query, which
    /// then ends.
    pub fn on_readable(&mut self, slot: usize) -> Option<(C, &mut [u8])> {
        let s = self.slots.get(slot)?;
        let socket = s.socket.as_ref()?;
        let (client, client_id) = s.client?;
        let upstream = self.cfg.upstreams[s.upstream];
        let question = parse_question(&s.query[..s.len]).ok()?;
        loop {
            let (n, from) = match socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(err) => {
                    // An ICMP error queued on the socket: the upstream is
                    // unreachable, the timeout moves on.
                    tracing::debug!(%err, %upstream, "DNS relay receive");
                    continue;
                }
            };
            let answer = &self.buf[..n];
            let valid = from.ip() == upstream.ip()
                && from.port() == upstream.port()
                && n >= HEADER_LEN
                && query_id(answer) == Some(s.id)
                && Header::parse(answer).is_ok_and(|h| h.is_response())
                && parse_question(answer).is_ok_and(|a| {
                    a.name == question.name
                        && a.qtype == question.qtype
                        && a.qclass == question.qclass
                });
            if !valid {
                tracing::debug!(%from, "unexpected DNS answer ignored");
                self.stats.ignored += 1;
                continue;
            }
            self.preferred = s.upstream;
            self.stats.answered += 1;
            self.release(slot);
            set_query_id(&mut self.buf[..n], client_id);
            return Some((client, &mut self.buf[..n]));
        }
    }

    /// Moves queries whose upstream did not answer in time to the next
    /// upstream; hands each query no upstream answered to `failed` (with
    /// its client and the query under the client's ID), for SERVFAIL.
    pub fn on_timer(
        &mut self,
        registry: &Registry,
        now: Instant,
        mut failed: impl FnMut(C, &[u8]),
    ) {
        while self.head != NIL && self.slots[self.head].deadline <= now {
            let slot = self.head;
            let n = self.cfg.upstreams.len();
            let s = &mut self.slots[slot];
            tracing::debug!(upstream = %self.cfg.upstreams[s.upstream], "DNS upstream timed out");
            if s.upstream == self.preferred {
                self.preferred = (self.preferred + 1) % n;
            }
            s.upstream = (s.upstream + 1) % n;
            let outcome = self.send(registry, now, slot);
            if outcome == Submitted::Failed {
                let s = &mut self.slots[slot];
                if let Some((client, client_id)) = s.client {
                    set_query_id(&mut s.query[..s.len], client_id);
                    failed(client, &s.query[..s.len]);
                }
            }
            if outcome != Submitted::Sent {
                self.release(slot);
            }
        }
    }

    /// When [`Relay::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.head != NIL).then(|| self.slots[self.head].deadline)
    }

    fn drop(&mut self, why: Dropped) -> Submitted {
        self.stats.dropped_other += 1;
        Submitted::Dropped(why)
    }

    /// Ends the current try of `slot`: closes its socket, frees its ID.
    fn close_try(&mut self, slot: usize) {
        // Closing the socket takes it out of the epoll set: no other
        // descriptor refers to it, so no deregistration call is needed.
        if self.slots[slot].socket.take().is_some() {
            let id = self.slots[slot].id;
            self.set_id(id, false);
        }
    }

    /// Frees `slot`.
    fn release(&mut self, slot: usize) {
        self.close_try(slot);
        self.unlink(slot);
        if let Some(key) = self.slots[slot].client.take() {
            self.by_client.remove(&key);
            self.free.push(slot);
        }
    }

    /// A random ID no query in flight uses.
    fn fresh_id(&mut self) -> Option<u16> {
        for _ in 0..ID_TRIES {
            if self.random_pos + 2 > RANDOM_BATCH {
                if let Err(err) = getrandom::fill(&mut self.random) {
                    tracing::error!(%err, "no random numbers for DNS query IDs");
                    return None;
                }
                self.random_pos = 0;
            }
            let id = u16::from_ne_bytes([
                self.random[self.random_pos],
                self.random[self.random_pos + 1],
            ]);
            self.random_pos += 2;
            if !self.id_in_use(id) {
                return Some(id);
            }
        }
        None
    }

    fn id_in_use(&self, id: u16) -> bool {
        self.ids_in_use[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    fn set_id(&mut self, id: u16, used: bool) {
        let word = &mut self.ids_in_use[usize::from(id) / 64];
        if used {
            *word |= 1 << (id % 64);
        } else {
            *word &= !(1 << (id % 64));
        }
    }

    /// Takes `slot` out of the deadline list (if it is in).
    fn unlink(&mut self, slot: usize) {
        let (prev, next) = (self.slots[slot].prev, self.slots[slot].next);
        if prev == NIL && next == NIL && self.head != slot {
            return;
        }
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
        self.slots[slot].prev = NIL;
        self.slots[slot].next = NIL;
    }

    /// Appends `slot` (not in the list) to the deadline list.
    fn push_back(&mut self, slot: usize) {
        self.slots[slot].prev = self.tail;
        self.slots[slot].next = NIL;
        match self.tail {
            NIL => self.head = slot,
            t => self.slots[t].next = slot,
        }
        self.tail = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdSocket;

    use mio::{Events, Poll};

    /// A query for `name` (dotted), type A, under ID `id`.
    fn query(id: u16, name: &str) -> Vec<u8> {
        slipway_testkit::dns_query(id, name, 1)
    }

    /// The answer an upstream gives to `q` (QR and RA set, no records).
    fn answer(q: &[u8]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] |= 0x80;
        a[3] |= 0x80;
        a
    }

    /// A fake upstream on loopback that answers only when told to.
    fn upstream() -> StdSocket {
        let s = StdSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn relay(upstreams: &[&StdSocket], max: usize) -> (Relay<u16>, Poll) {
        let cfg = RelayConfig {
            upstreams: upstreams.iter().map(|u| u.local_addr().unwrap()).collect(),
            max_queries: max,
            bind_v4: Ipv4Addr::LOCALHOST,
            bind_v6: Ipv6Addr::LOCALHOST,
            try_timeout: TRY_TIMEOUT,
        };
        (Relay::new(cfg, Token), Poll::new().unwrap())
    }

    /// Waits for the relay's sockets to be readable; returns what
    /// `on_readable` hands over (client, answer).
    fn answers(relay: &mut Relay<u16>, poll: &mut Poll) -> Vec<(u16, Vec<u8>)> {
        let mut events = Events::with_capacity(64);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        let mut out = Vec::new();
        for ev in events.iter() {
            if let Some((c, a)) = relay.on_readable(ev.token().0) {
                out.push((c, a.to_vec()));
            }
        }
        out
    }

    #[test]
    fn queries_over_the_cap_are_dropped_and_counted() {
        let up = upstream();
        let (mut relay, poll) = relay(&[&up], 4);
        let now = Instant::now();
        let q = query(7, "a.example");
        for client in 0..4 {
            assert_eq!(
                relay.query(poll.registry(), now, client, &q),
                Submitted::Sent
            );
        }
        // A retransmission of a query in flight takes no new slot and is
        // not sent again.
        assert_eq!(
            relay.query(poll.registry(), now, 0, &q),
            Submitted::InFlight
        );
        for client in 4..100 {
            assert_eq!(
                relay.query(poll.registry(), now, client, &q),
                Submitted::Dropped(Dropped::Full)
            );
        }
        assert_eq!(relay.in_flight(), 4);
        assert_eq!(relay.stats().dropped_full, 96);
        assert_eq!(relay.stats().sent, 4);
    }

    #[test]
    fn each_upstream_query_has_its_own_random_id_and_source_port() {
        let up = upstream();
        let (mut relay, poll) = relay(&[&up], 64);
        let now = Instant::now();
        for client in 0..64 {
            let q = query(1000 + client, "a.example");
            assert_eq!(
                relay.query(poll.registry(), now, client, &q),
                Submitted::Sent
            );
        }
        let mut ids = Vec::new();
        let mut ports = Vec::new();
        let mut buf = [0; 512];
        for _ in 0..64 {
            let (n, from) = up.recv_from(&mut buf).unwrap();
            ids.push(query_id(&buf[..n]).unwrap());
            ports.push(from.port());
        }
        let distinct = |v: &[u16]| v.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(distinct(&ids), 64, "IDs in flight are unique: {ids:?}");
        assert_eq!(distinct(&ports), 64, "one source port per query: {ports:?}");
        // Not the clients' IDs, not a counter: 64 random IDs are in
        // increasing order with a chance of 1/64!.
        assert!(ids.windows(2).any(|w| w[1] < w[0]), "{ids:?}");
        assert!(!ids.iter().all(|id| (1000..1064).contains(id)), "{ids:?}");
    }

    #[test]
    fn only_the_queried_upstream_answering_the_question_under_the_id_is_relayed() {
        let up = upstream();
        let (mut relay, mut poll) = relay(&[&up], 8);
        let q = query(0x4242, "a.example");
        assert_eq!(
            relay.query(poll.registry(), Instant::now(), 9, &q),
            Submitted::Sent
        );
        let mut buf = [0; 512];
        let (n, from) = up.recv_from(&mut buf).unwrap();
        let sent = buf[..n].to_vec();
        let good = answer(&sent);

        // Right ID and question, wrong sender (another port on the host).
        let stranger = StdSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(&good, from).unwrap();
        // Right sender, wrong ID.
        let mut wrong_id = good.clone();
        wrong_id[..2].copy_from_slice(&query_id(&good).unwrap().wrapping_add(1).to_be_bytes());
        up.send_to(&wrong_id, from).unwrap();
        // Right sender and ID, another question.
        let mut other = answer(&query(0, "b.example"));
        other[..2].copy_from_slice(&good[..2]);
        up.send_to(&other, from).unwrap();
        // Right everything but not a response.
        up.send_to(&sent, from).unwrap();
        assert_eq!(answers(&mut relay, &mut poll), vec![]);
        assert_eq!(relay.stats().ignored, 4);
        assert_eq!(relay.in_flight(), 1);

        up.send_to(&good, from).unwrap();
        let got = answers(&mut relay, &mut poll);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 9);
        assert_eq!(query_id(&got[0].1), Some(0x4242), "the client's ID is back");
        assert_eq!(&got[0].1[2..], &good[2..]);
        assert_eq!(relay.in_flight(), 0);
        assert_eq!(relay.stats().answered, 1);
    }

    #[test]
    fn unanswered_queries_try_the_next_upstream_then_fail_and_free_their_slots() {
        let (first, second) = (upstream(), upstream());
        let (mut relay, poll) = relay(&[&first, &second], 2);
        let start = Instant::now();
        for client in 0..2 {
            let q = query(client, "a.example");
            assert_eq!(
                relay.query(poll.registry(), start, client, &q),
                Submitted::Sent
            );
        }
        assert_eq!(
            relay.query(poll.registry(), start, 5, &query(5, "a.example")),
            Submitted::Dropped(Dropped::Full)
        );
        let mut buf = [0; 512];
        let mut first_ports = Vec::new();
        for _ in 0..2 {
            first_ports.push(first.recv_from(&mut buf).unwrap().1.port());
        }
        assert_eq!(relay.next_deadline(), Some(start + TRY_TIMEOUT));

        // The first upstream's time is up: the queries go to the second,
        // from new sockets.
        let mut failed = Vec::new();
        relay.on_timer(poll.registry(), start + TRY_TIMEOUT, |c, q| {
            failed.push((c, q.to_vec()))
        });
        assert!(failed.is_empty());
        for _ in 0..2 {
            let port = second.recv_from(&mut buf).unwrap().1.port();
            assert!(!first_ports.contains(&port));
        }
        assert_eq!(relay.in_flight(), 2);

        // The second's too: the clients are told (under their own IDs) and
        // the slots are free again.
        relay.on_timer(poll.registry(), start + 2 * TRY_TIMEOUT, |c, q| {
            failed.push((c, q.to_vec()))
        });
        failed.sort();
        assert_eq!(
            failed,
            vec![(0, query(0, "a.example")), (1, query(1, "a.example"))]
        );
        assert_eq!(relay.in_flight(), 0);
        assert_eq!(relay.next_deadline(), None);
        assert_eq!(relay.stats().failed, 2);
        let q = query(6, "a.example");
        assert_eq!(relay.query(poll.registry(), start, 6, &q), Submitted::Sent);
    }

    #[test]
    fn a_query_finding_no_free_id_is_dropped_without_searching() {
        let up = upstream();
        let (mut relay, poll) = relay(&[&up], 4);
        // Every ID taken (as if 65536 queries were in flight): a few random
        // draws, then the query is dropped, its slot free again.
        relay.ids_in_use.fill(u64::MAX);
        let q = query(1, "a.example");
        assert_eq!(
            relay.query(poll.registry(), Instant::now(), 1, &q),
            Submitted::Dropped(Dropped::NoId)
        );
        assert_eq!(relay.in_flight(), 0);
        relay.ids_in_use.fill(0);
        assert_eq!(
            relay.query(poll.registry(), Instant::now(), 1, &q),
            Submitted::Sent
        );
        let mut buf = [0; 512];
        let (n, _) = up.recv_from(&mut buf).unwrap();
        let id = query_id(&buf[..n]).unwrap();
        assert!(relay.id_in_use(id), "the ID in flight is reserved");
    }

    #[test]
    fn bad_queries_and_no_upstream() {
        let up = upstream();
        let (mut relay, poll) = relay(&[&up], 2);
        let now = Instant::now();
        let r = poll.registry();
        assert_eq!(
            relay.query(r, now, 1, &[0; 5]),
            Submitted::Dropped(Dropped::Malformed)
        );
        let q = query(1, "a.example");
        assert_eq!(
            relay.query(r, now, 1, &answer(&q)),
            Submitted::Dropped(Dropped::Malformed)
        );
        let mut long = q.clone();
        long.resize(MAX_QUERY + 1, 0);
        assert_eq!(
            relay.query(r, now, 1, &long),
            Submitted::Dropped(Dropped::Oversized)
        );
        assert_eq!(relay.in_flight(), 0);

        let (mut none, poll) = self::relay(&[], 2);
        assert_eq!(none.query(poll.registry(), now, 1, &q), Submitted::Failed);
    }
}
