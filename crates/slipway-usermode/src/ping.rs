//! Real ICMP echo: the guest's echo requests leave through the host's
//! unprivileged ICMP sockets (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`,
//! "ping sockets"; ICMPv6 ones for IPv6), and the host's replies come back
//! to the guest. Nothing
//! is made up: a destination that does not answer the host does not answer
//! the guest either.
//!
//! Each (guest, echo identifier, destination) is one flow with its own
//! socket. The kernel gives every ping socket its own identifier and
//! rewrites the requests' to it, so replies need no demultiplexing here:
//! the identifier is put back to the guest's and the checksum recomputed.
//!
//! The host may forbid ping sockets (`net.ipv4.ping_group_range` not
//! covering the process's group): the first refusal is logged with the
//! sysctl to change, and further requests are dropped and counted.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mio::Interest;
use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol};
use socket2::{Domain, Protocol, Socket, Type};

use crate::iface::{token, Ctx, DropReason, TokenKind};

/// Most echo flows at once.
const MAX_FLOWS: usize = 64;
/// A flow without requests for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// Largest echo reply read from a socket (the ICMP header and payload).
const MAX_REPLY: usize = 65536;

struct Flow {
    sock: mio::net::UdpSocket,
    guest: IpAddr,
    guest_id: u16,
    /// The destination as the guest addressed it (replies come from it).
    remote: IpAddr,
    /// The host address the requests go to (same family as `guest`).
    target: IpAddr,
    last_used: Instant,
}

/// The echo flows and their host sockets.
#[derive(Default)]
pub(crate) struct PingTable {
    flows: Vec<Option<Flow>>,
    /// Whether the host refused a ping socket already (logged once).
    forbidden: bool,
    buf: Vec<u8>,
}

/// What became of a guest's echo request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Echo {
    /// It went out through a ping socket.
    Out,
    /// The host forbids ping sockets.
    Forbidden,
    /// It was dropped (counted).
    Dropped,
}

impl PingTable {
    /// Sends the echo request `message` (ICMP or ICMPv6 header and
    /// payload) from `guest` toward `remote` (as the guest addressed it) to
    /// the host address `target`, all of one family.
    pub fn send(
        &mut self,
        ctx: &mut Ctx,
        guest: IpAddr,
        remote: IpAddr,
        target: IpAddr,
        message: &[u8],
    ) -> Echo {
        let guest_id = match guest {
            IpAddr::V4(_) => Icmpv4Packet::new_checked(message).map(|p| p.echo_ident()),
            IpAddr::V6(_) => Icmpv6Packet::new_checked(message).map(|p| p.echo_ident()),
        };
        let Ok(guest_id) = guest_id else {
            ctx.counters.drop(DropReason::Truncated);
            return Echo::Dropped;
        };
        let found = self.flows.iter().position(|f| {
            f.as_ref()
                .is_some_and(|f| f.guest == guest && f.guest_id == guest_id && f.remote == remote)
        });
        let slot = match found {
            Some(slot) => slot,
            None => match self.open(ctx, guest, guest_id, remote, target) {
                Ok(slot) => slot,
                Err(sent) => return sent,
            },
        };
        let Some(flow) = self.flows[slot].as_mut() else {
            return Echo::Dropped;
        };
        flow.last_used = ctx.now;
        match flow.sock.send_to(message, SocketAddr::new(target, 0)) {
            Ok(_) => Echo::Out,
            Err(e) => {
                tracing::debug!(%target, error = %e, "ICMP echo not sent");
                ctx.counters.drop(DropReason::HostSocketError);
                Echo::Dropped
            }
        }
    }

    fn open(
        &mut self,
        ctx: &mut Ctx,
        guest: IpAddr,
        guest_id: u16,
        remote: IpAddr,
        target: IpAddr,
    ) -> Result<usize, Echo> {
        self.close_idle(ctx.registry, ctx.now);
        let Some(slot) = slipway_host::free_slot(&mut self.flows, MAX_FLOWS) else {
            ctx.counters.drop(DropReason::FlowLimit);
            return Err(Echo::Dropped);
        };
        let sock = match ping_socket(target) {
            Ok(s) => s,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                if !self.forbidden {
                    self.forbidden = true;
                    tracing::warn!(
                        "the host forbids ICMP ping sockets for this process's group \
                         (sysctl net.ipv4.ping_group_range): the guest's echo requests \
                         to other hosts are dropped"
                    );
                }
                ctx.counters.drop(DropReason::HostSocketError);
                return Err(Echo::Forbidden);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open an ICMP ping socket");
                ctx.counters.drop(DropReason::HostSocketError);
                return Err(Echo::Dropped);
            }
        };
        let mut sock = mio::net::UdpSocket::from_std(sock);
        if let Err(e) =
            ctx.registry
                .register(&mut sock, token(TokenKind::Icmp, slot), Interest::READABLE)
        {
            tracing::warn!(error = %e, "cannot register an ICMP ping socket");
            ctx.counters.drop(DropReason::HostSocketError);
            return Err(Echo::Dropped);
        }
        tracing::debug!(%guest, %remote, %target, id = guest_id, "ICMP echo flow through a ping socket");
        self.flows[slot] = Some(Flow {
            sock,
            guest,
            guest_id,
            remote,
            target,
            last_used: ctx.now,
        });
        Ok(slot)
    }

    /// Relays the replies waiting on flow `slot`'s socket to the guest.
    pub fn on_readable(&mut self, ctx: &mut Ctx, slot: usize) {
        let Some(Some(flow)) = self.flows.get(slot) else {
            return;
        };
        if self.buf.len() < MAX_REPLY {
            self.buf.resize(MAX_REPLY, 0);
        }
        loop {
            let n = match flow.sock.recv_from(&mut self.buf) {
                Ok((n, from)) if from.ip() == flow.target => n,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "ICMP ping socket");
                    return;
                }
            };
            let reply = &self.buf[..n];
            let (id, src, dst) = (flow.guest_id, flow.remote, flow.guest);
            match (src, dst) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    let ok = Icmpv4Packet::new_checked(reply)
                        .is_ok_and(|p| p.msg_type() == Icmpv4Message::EchoReply);
                    if ok {
                        ctx.emit_ipv4(src, dst, IpProtocol::Icmp, n, |out| {
                            out[..n].copy_from_slice(reply);
                            let mut p = Icmpv4Packet::new_unchecked(&mut out[..n]);
                            p.set_echo_ident(id);
                            p.fill_checksum();
                        });
                    }
                }
                (IpAddr::V6(src), IpAddr::V6(dst)) => {
                    let ok = Icmpv6Packet::new_checked(reply)
                        .is_ok_and(|p| p.msg_type() == Icmpv6Message::EchoReply);
                    if ok {
                        ctx.emit_ipv6(None, src, dst, IpProtocol::Icmpv6, n, |out| {
                            out[..n].copy_from_slice(reply);
                            let mut p = Icmpv6Packet::new_unchecked(&mut out[..n]);
                            p.set_echo_ident(id);
                            p.fill_checksum(&src, &dst);
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Closes the flows idle for too long.
    pub fn on_timer(&mut self, ctx: &mut Ctx) {
        self.close_idle(ctx.registry, ctx.now);
    }

    fn close_idle(&mut self, registry: &mio::Registry, now: Instant) {
        for slot in self.flows.iter_mut() {
            if slot.as_ref().is_some_and(|f| f.last_used + IDLE <= now) {
                if let Some(mut f) = slot.take() {
                    let _ = registry.deregister(&mut f.sock);
                }
            }
        }
    }

    /// When [`PingTable::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.flows
            .iter()
            .flatten()
            .map(|f| f.last_used + IDLE)
            .min()
    }
}

/// A non-blocking unprivileged ICMP (or ICMPv6) socket for `target`'s family.
fn ping_socket(target: IpAddr) -> std::io::Result<UdpSocket> {
    let s = match target {
        IpAddr::V4(_) => Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4))?,
        IpAddr::V6(_) => Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::ICMPV6))?,
    };
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    Ok(std::net::UdpSocket::from(std::os::fd::OwnedFd::from(s)))
}
