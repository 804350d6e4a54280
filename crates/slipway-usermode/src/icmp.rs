//! ICMP echo from the guest (the routing of echo requests is shared with
//! ICMPv6, [`crate::ndp`]).
//!
//! Requests toward the host address and the outside go through host ping
//! sockets ([`crate::ping`]), with the host address mapped to loopback as
//! for TCP and UDP. The stack's other own addresses (DNS, SMB server, guest
//! forward servers) answer themselves, as a gateway does; so does the host
//! address when the host forbids ping sockets or under `restrict=on`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol};

use crate::config::Outbound;
use crate::iface::{Ctx, DropReason};
use crate::ping::{Echo, PingTable};

/// Handles one ICMP message (the IPv4 payload) from the guest at `src` to `dst`.
pub(crate) fn handle(
    ctx: &mut Ctx,
    ping: &mut PingTable,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    message: &[u8],
) {
    let Ok(icmp) = Icmpv4Packet::new_checked(message) else {
        ctx.counters.drop(DropReason::Truncated);
        return;
    };
    if !icmp.verify_checksum() {
        ctx.counters.drop(DropReason::BadChecksum);
        return;
    }
    if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
        ctx.counters.drop(DropReason::UnsupportedProtocol);
        return;
    }
    let virtual_dst = ctx.cfg.is_virtual(dst);
    let host = dst == ctx.cfg.host;
    if echo_outbound(
        ctx,
        ping,
        src.into(),
        dst.into(),
        virtual_dst,
        host,
        message,
    ) {
        return;
    }
    ctx.emit_ipv4(dst, src, IpProtocol::Icmp, message.len(), |buf| {
        buf[..message.len()].copy_from_slice(message);
        let mut reply = Icmpv4Packet::new_unchecked(&mut buf[..message.len()]);
        reply.set_msg_type(Icmpv4Message::EchoReply);
        reply.fill_checksum();
    });
}

/// Sends a guest's echo request (either family) through a host ping
/// socket when `dst` is the host address or outside. Returns true when the
/// request is dealt with (sent, or dropped and counted), false when the
/// stack answers it itself: one of its own addresses (`virtual_dst`), or
/// the host address (`host`) under `restrict=on` or when the host forbids
/// ping sockets.
pub(crate) fn echo_outbound(
    ctx: &mut Ctx,
    ping: &mut PingTable,
    src: IpAddr,
    dst: IpAddr,
    virtual_dst: bool,
    host: bool,
    message: &[u8],
) -> bool {
    if virtual_dst && !host {
        return false;
    }
    match ctx.cfg.outbound_target(SocketAddr::new(dst, 0)) {
        Outbound::Host(target) => {
            let sent = ping.send(ctx, src, dst, target.ip(), message);
            // The host address answers itself when ping sockets are forbidden.
            !(sent == Echo::Forbidden && virtual_dst)
        }
        Outbound::Denied(reason) if !virtual_dst => {
            ctx.counters.drop(reason.drop_reason());
            true
        }
        _ => false,
    }
}
