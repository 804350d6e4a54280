//! DNS relay: UDP queries to the DNS address go to the upstream resolvers
//! through the relay the bridge networks use too ([`slipway_dns::relay`]:
//! a bounded table of queries in flight, each upstream query from its own
//! socket under a random ID).
//!
//! The guest's ID is put back into the answer. A query that gets no
//! answer within [`TRY_TIMEOUT`] goes to the next upstream; when every
//! upstream has been tried, or there is none at all, the guest gets
//! SERVFAIL instead of waiting for nothing. An answer too large for the
//! link becomes an empty one with TC set, so the guest retries over TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use slipway_dns::relay::{Dropped, Relay, RelayConfig, Submitted, MAX_QUERY, TRY_TIMEOUT};

use crate::config::StackConfig;
use crate::iface::udp;
use crate::iface::StackError;
use crate::iface::{token, Ctx, DropReason, TokenKind};

/// DNS port.
const DNS_PORT: u16 = 53;
/// Header flag bits (second 16-bit word).
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RA: u16 = 0x0080;
const RCODE_SERVFAIL: u16 = 2;

/// The relay toward the upstreams and the buffer of the replies the stack
/// makes itself (SERVFAIL, truncated).
pub(crate) struct DnsRelay {
    relay: Relay<SocketAddr>,
    reply: Vec<u8>,
    warned_no_upstream: bool,
}

impl DnsRelay {
    /// A relay to `cfg.dns_upstreams` from `cfg`'s outbound addresses, at
    /// most `limits.max_dns_queries` (1 to 4096) queries in flight, with
    /// every buffer allocated now.
    pub fn new(cfg: &StackConfig) -> Self {
        let relay = Relay::new(
            RelayConfig {
                upstreams: cfg.dns_upstreams.clone(),
                max_queries: cfg.limits.max_dns_queries.clamp(1, 4096),
                bind_v4: cfg.outbound.v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
                bind_v6: cfg.outbound.v6.unwrap_or(Ipv6Addr::UNSPECIFIED),
                try_timeout: TRY_TIMEOUT,
            },
            |slot| token(TokenKind::Dns, slot),
        );
        DnsRelay {
            relay,
            reply: vec![0; MAX_QUERY],
            warned_no_upstream: false,
        }
    }

    /// Checks, unless `cfg` turns the relay off, that the upstream queries'
    /// source addresses (`cfg`'s outbound addresses) can be bound: each
    /// query opens its own socket later, a bad address is an error now.
    pub fn open(&mut self, cfg: &StackConfig) -> Result<(), StackError> {
        if !cfg.dns_relay {
            return Ok(());
        }
        let v4 = cfg.outbound.v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let v6 = cfg.outbound.v6.unwrap_or(Ipv6Addr::UNSPECIFIED);
        let upstreams = self.relay.upstreams();
        for (bind, needed) in [
            (
                SocketAddr::from((v4, 0)),
                upstreams.iter().any(SocketAddr::is_ipv4),
            ),
            (
                SocketAddr::from((v6, 0)),
                upstreams.iter().any(SocketAddr::is_ipv6),
            ),
        ] {
            if needed {
                std::net::UdpSocket::bind(bind).map_err(|source| StackError::Socket {
                    what: "DNS relay socket",
                    addr: bind.to_string(),
                    source,
                })?;
            }
        }
        if upstreams.is_empty() {
            tracing::error!("no DNS upstream (no nameserver in /etc/resolv.conf, no --dns-upstream): the guest's DNS queries get SERVFAIL");
            self.warned_no_upstream = true;
        }
        Ok(())
    }

    /// Relays one query the guest at `guest` sent to the DNS address.
    pub fn query(&mut self, ctx: &mut Ctx, guest: SocketAddr, query: &[u8]) {
        ctx.counters.dns_queries += 1;
        match self.relay.query(ctx.registry, ctx.now, guest, query) {
            Submitted::Sent | Submitted::InFlight => {}
            Submitted::Dropped(why) => ctx.counters.drop(match why {
                Dropped::Malformed => DropReason::Malformed,
                Dropped::Oversized => DropReason::Oversized,
                Dropped::Full | Dropped::NoId => DropReason::FlowLimit,
                Dropped::Socket => DropReason::HostSocketError,
            }),
            Submitted::Failed => {
                ctx.counters.dns_upstream_failures += 1;
                if self.relay.upstreams().is_empty() {
                    if !self.warned_no_upstream {
                        tracing::error!("no DNS upstream: answering SERVFAIL");
                        self.warned_no_upstream = true;
                    }
                } else {
                    tracing::debug!(%guest, "no DNS upstream could be asked: SERVFAIL");
                }
                answer_empty(ctx, &mut self.reply, guest, query, 0, RCODE_SERVFAIL);
            }
        }
    }

    /// Relays the answer waiting on the socket of query slot `slot` to its
    /// guest.
    pub fn on_readable(&mut self, ctx: &mut Ctx, slot: usize) {
        let Some((guest, answer)) = self.relay.on_readable(slot) else {
            return;
        };
        // IP and UDP headers: 28 bytes over IPv4, 48 over IPv6.
        if answer.len() + if guest.is_ipv6() { 48 } else { 28 } > ctx.cfg.mtu {
            // Too big for the link: tell the guest to retry over TCP (the
            // answer starts with the query's header and question).
            answer_empty(ctx, &mut self.reply, guest, answer, FLAG_TC, 0);
        } else {
            udp::emit(ctx, None, dns_addr(ctx, guest), guest, answer);
        }
    }

    /// Moves queries whose upstream did not answer in time on to the next
    /// one; the guest gets SERVFAIL when none is left.
    pub fn on_timer(&mut self, ctx: &mut Ctx) {
        let (registry, now) = (ctx.registry, ctx.now);
        let reply = &mut self.reply;
        self.relay.on_timer(registry, now, |guest, query| {
            ctx.counters.dns_upstream_failures += 1;
            tracing::warn!(%guest, "no DNS upstream answered: SERVFAIL");
            answer_empty(ctx, reply, guest, query, 0, RCODE_SERVFAIL);
        });
    }

    /// When [`DnsRelay::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.relay.next_deadline()
    }
}

/// Answers the guest's `query` (under the guest's ID) with a reply
/// carrying no records, only `flags` and `rcode`, built in `out`.
fn answer_empty(
    ctx: &mut Ctx,
    out: &mut [u8],
    guest: SocketAddr,
    query: &[u8],
    flags: u16,
    rcode: u16,
) {
    let Some(len) = reply_header(query, out, flags, rcode) else {
        ctx.counters.drop(DropReason::Malformed);
        return;
    };
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
