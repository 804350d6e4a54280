//! DNS relay: UDP queries to the DNS address go to the upstream resolvers.
//!
//! Each forwarded query gets its own message ID (slot number plus a
//! counter), so queries of several guest ports never mix; the guest's ID is
//! put back into the answer. A query that gets no answer within
//! [`TRY_TIMEOUT`] goes to the next upstream; when every upstream has been
//! tried, or there is none at all, the guest gets SERVFAIL instead of
//! waiting for nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry};

use crate::config::StackConfig;
use crate::ctx::{token, Ctx, DropReason, TokenKind};
use crate::stack::StackError;
use crate::udp;

/// How long one upstream has to answer before the next is asked.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries in flight at once (a power of two: the low ID bits index them).
/// Largest query relayed (a UDP payload at the default MTU).
const MAX_QUERY: usize = 1472;
/// DNS port.
const DNS_PORT: u16 = 53;
/// Header flag bits (second 16-bit word).
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RA: u16 = 0x0080;
const RCODE_SERVFAIL: u16 = 2;

struct Pending {
    active: bool,
    guest: SocketAddr,
    guest_id: u16,
    id: u16,
    upstream: usize,
    tries: usize,
    deadline: Instant,
    len: usize,
    query: Vec<u8>,
}

/// The relay: one socket per address family toward the upstreams and the
/// queries in flight.
pub(crate) struct DnsRelay {
    upstreams: Vec<SocketAddr>,
    sockets: [Option<UdpSocket>; 2],
    pending: Vec<Pending>,
    active: usize,
    counter: u16,
    buf: Vec<u8>,
    reply: Vec<u8>,
    warned_no_upstream: bool,
}

/// Query slots: `limits.max_dns_queries` rounded down to a power of two
/// (1 to 4096), so a slot's index is the low bits of the upstream query ID.
fn slots(cfg: &StackConfig) -> usize {
    let n = cfg.limits.max_dns_queries.clamp(1, 4096);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

impl DnsRelay {
    /// A relay to `cfg.dns_upstreams`, with every buffer allocated now.
    pub fn new(cfg: &StackConfig) -> Self {
        let now = Instant::now();
        DnsRelay {
            upstreams: cfg.dns_upstreams.clone(),
            sockets: [None, None],
            pending: (0..slots(cfg))
                .map(|_| Pending {
                    active: false,
                    guest: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                    guest_id: 0,
                    id: 0,
                    upstream: 0,
                    tries: 0,
                    deadline: now,
                    len: 0,
                    query: vec![0; MAX_QUERY],
                })
                .collect(),
            active: 0,
            counter: 0,
            buf: vec![0; 65535],
            reply: vec![0; MAX_QUERY],
            warned_no_upstream: false,
        }
    }

    /// Opens the sockets the upstreams need (IPv4, IPv6 or both), from
    /// `cfg`'s outbound addresses; none when `cfg` turns the relay off.
    pub fn open(&mut self, registry: &Registry, cfg: &StackConfig) -> Result<(), StackError> {
        if !cfg.dns_relay {
            return Ok(());
        }
        let v4 = cfg.outbound.v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let v6 = cfg.outbound.v6.unwrap_or(Ipv6Addr::UNSPECIFIED);
        for (family, bind) in [
            (0, SocketAddr::from((v4, 0))),
            (1, SocketAddr::from((v6, 0))),
        ] {
            if !self
                .upstreams
                .iter()
                .any(|u| usize::from(u.is_ipv6()) == family)
            {
                continue;
            }
            let err = |source| StackError::Socket {
                what: "DNS relay socket",
                addr: bind.to_string(),
                source,
            };
            let mut socket = UdpSocket::bind(bind).map_err(err)?;
            registry
                .register(
                    &mut socket,
                    token(TokenKind::Dns, family),
                    Interest::READABLE,
                )
                .map_err(err)?;
            self.sockets[family] = Some(socket);
        }
        if self.upstreams.is_empty() {
            tracing::error!("no DNS upstream (no nameserver in /etc/resolv.conf, no --dns-upstream): the guest's DNS queries get SERVFAIL");
            self.warned_no_upstream = true;
        }
        Ok(())
    }

    /// Relays one query the guest at `guest` sent to the DNS address.
    pub fn query(&mut self, ctx: &mut Ctx, guest: SocketAddr, query: &[u8]) {
        let Some(guest_id) =
            slipway_dns::query_id(query).filter(|_| query.len() >= slipway_dns::HEADER_LEN)
        else {
            ctx.counters.drop(DropReason::Malformed);
            return;
        };
        if query.len() > MAX_QUERY {
            ctx.counters.drop(DropReason::Oversized);
            return;
        }
        if self.upstreams.is_empty() {
            if !self.warned_no_upstream {
                tracing::error!("no DNS upstream: answering SERVFAIL");
                self.warned_no_upstream = true;
            }
            answer_empty(
                ctx,
                &mut self.reply,
                guest,
                guest_id,
                query,
                0,
                RCODE_SERVFAIL,
            );
            return;
        }
        // A guest retransmission reuses its slot; otherwise take a free one.
        let slot = self
            .pending
            .iter()
            .position(|p| p.active && p.guest == guest && p.guest_id == guest_id)
            .or_else(|| self.pending.iter().position(|p| !p.active));
        let Some(slot) = slot else {
            ctx.counters.drop(DropReason::FlowLimit);
            return;
        };
        self.counter = self.counter.wrapping_add(1);
        let id = (self.counter << self.pending.len().trailing_zeros()) | slot as u16;
        let p = &mut self.pending[slot];
        if !p.active {
            self.active += 1;
            p.upstream = 0;
        }
        p.active = true;
        p.guest = guest;
        p.guest_id = guest_id;
        p.id = id;
        p.tries = 0;
        p.len = query.len();
        p.query[..query.len()].copy_from_slice(query);
        slipway_dns::set_query_id(&mut p.query[..query.len()], id);
        self.send(ctx, slot);
    }

    /// Sends slot `slot`'s query to its current upstream, moving on to the
    /// next upstream while sending fails.
    fn send(&mut self, ctx: &mut Ctx, slot: usize) {
        loop {
            let p = &mut self.pending[slot];
            if p.tries >= self.upstreams.len() {
                tracing::warn!(guest = %p.guest, "no DNS upstream answered: SERVFAIL");
                answer_empty(
                    ctx,
                    &mut self.reply,
                    p.guest,
                    p.guest_id,
                    &p.query[..p.len],
                    0,
                    RCODE_SERVFAIL,
                );
                self.release(slot);
                return;
            }
            p.tries += 1;
            p.deadline = ctx.now + TRY_TIMEOUT;
            let upstream = self.upstreams[p.upstream];
            let socket = self.sockets[usize::from(upstream.is_ipv6())].as_ref();
            match socket.map(|s| s.send_to(&p.query[..p.len], upstream)) {
                Some(Ok(_)) => return,
                Some(Err(err)) => tracing::warn!(%err, %upstream, "DNS upstream send failed"),
                None => {}
            }
            p.upstream = (p.upstream + 1) % self.upstreams.len();
        }
    }

    fn release(&mut self, slot: usize) {
        if self.pending[slot].active {
            self.pending[slot].active = false;
            self.active -= 1;
        }
    }

    /// Relays answers from the upstreams (socket `family`) to the guests.
    pub fn on_readable(&mut self, ctx: &mut Ctx, family: usize) {
        let Some(socket) = self.sockets.get(family).and_then(Option::as_ref) else {
            return;
        };
        loop {
            let (n, from) = match socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    tracing::debug!(%err, "DNS relay receive");
                    continue;
                }
            };
            let Some(id) =
                slipway_dns::query_id(&self.buf[..n]).filter(|_| n >= slipway_dns::HEADER_LEN)
            else {
                continue;
            };
            let slot = usize::from(id) % self.pending.len();
            let p = &self.pending[slot];
            if !p.active || p.id != id || !same_peer(self.upstreams[p.upstream], from) {
                tracing::debug!(%from, id, "unexpected DNS answer");
                continue;
            }
            // IP and UDP headers: 28 bytes over IPv4, 48 over IPv6.
            if n + if p.guest.is_ipv6() { 48 } else { 28 } > ctx.cfg.mtu {
                // Too big for the link: tell the guest to retry over TCP.
                answer_empty(
                    ctx,
                    &mut self.reply,
                    p.guest,
                    p.guest_id,
                    &p.query[..p.len],
                    FLAG_TC,
                    0,
                );
            } else {
                slipway_dns::set_query_id(&mut self.buf[..n], p.guest_id);
                udp::emit(ctx, None, dns_addr(ctx, p.guest), p.guest, &self.buf[..n]);
            }
            self.pending[slot].active = false;
            self.active -= 1;
        }
    }

    /// Retries queries whose upstream did not answer in time.
    pub fn on_timer(&mut self, ctx: &mut Ctx) {
        for slot in 0..self.pending.len() {
            let p = &mut self.pending[slot];
            if p.active && p.deadline <= ctx.now {
                tracing::debug!(upstream = %self.upstreams[p.upstream], "DNS upstream timed out");
                p.upstream = (p.upstream + 1) % self.upstreams.len();
                self.send(ctx, slot);
            }
        }
    }

    /// When [`DnsRelay::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.active == 0 {
            return None;
        }
        self.pending
            .iter()
            .filter(|p| p.active)
            .map(|p| p.deadline)
            .min()
    }
}

/// Answers the guest's `query` with a reply carrying no records, only
/// `flags` and `rcode`, built in `out`.
fn answer_empty(
    ctx: &mut Ctx,
    out: &mut [u8],
    guest: SocketAddr,
    guest_id: u16,
    query: &[u8],
    flags: u16,
    rcode: u16,
) {
    let Some(len) = reply_header(query, out, flags, rcode) else {
        ctx.counters.drop(DropReason::Malformed);
        return;
    };
    slipway_dns::set_query_id(&mut out[..len], guest_id);
    udp::emit(ctx, None, dns_addr(ctx, guest), guest, &out[..len]);
}

/// The DNS address (and port) in the family of `guest`: the source of the
/// answers it gets.
fn dns_addr(ctx: &Ctx, guest: SocketAddr) -> SocketAddr {
    let ip = match guest.ip() {
        IpAddr::V4(_) => IpAddr::V4(ctx.cfg.dns),
        IpAddr::V6(_) => IpAddr::V6(ctx.cfg.ipv6.dns),
    };
    SocketAddr::new(ip, DNS_PORT)
}

/// Writes into `out` a reply to `query` with no records: the header (QR,
/// RA, the query's opcode and RD, `flags`, `rcode`) and the question.
/// Returns its length, or `None` when the query's question does not parse.
fn reply_header(query: &[u8], out: &mut [u8], flags: u16, rcode: u16) -> Option<usize> {
    let question = slipway_dns::parse_question(query).ok()?;
    let len = question.end;
    out[..len].copy_from_slice(&query[..len]);
    let old = u16::from_be_bytes([query[2], query[3]]);
    let word = FLAG_QR | (old & 0x7900) | FLAG_RA | flags | rcode;
    out[2..4].copy_from_slice(&word.to_be_bytes());
    // One question, no answer, authority or additional records.
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    Some(len)
}

/// Whether an answer from `from` comes from `upstream` (an IPv4 upstream
/// may answer through an IPv4-mapped address on a dual-stack socket).
fn same_peer(upstream: SocketAddr, from: SocketAddr) -> bool {
    upstream == from
        || match (upstream, from) {
            (SocketAddr::V4(u), SocketAddr::V6(f)) => {
                f.ip().to_ipv4_mapped() == Some(*u.ip()) && f.port() == u.port()
            }
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servfail_keeps_id_question_and_rd() {
        // ID 0x1234, RD, one question "a.example" A IN, one OPT additional record.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
        let qlen = q.len();
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let mut out = vec![0; 512];
        let n = reply_header(&q, &mut out, 0, RCODE_SERVFAIL).unwrap();
        assert_eq!(n, qlen);
        assert_eq!(&out[..4], &[0x12, 0x34, 0x81, 0x82]);
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[12..n], &q[12..qlen]);
        assert!(reply_header(&q[..14], &mut out, 0, 2).is_none());
    }
}
