//! ICMP: echo requests to the stack's own addresses are answered here.
//!
//! Echo toward other destinations needs host ping sockets (a later issue);
//! until then such requests are dropped and counted.

use std::net::Ipv4Addr;

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol};

use crate::ctx::{Ctx, DropReason};

/// Handles one ICMP message (the IPv4 payload) from the guest at `src` to `dst`.
pub(crate) fn handle(ctx: &mut Ctx, src: Ipv4Addr, dst: Ipv4Addr, message: &[u8]) {
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
    if !ctx.cfg.is_virtual(dst) {
        ctx.counters.drop(if ctx.cfg.restrict {
            DropReason::Restricted
        } else {
            DropReason::NotForUs
        });
        return;
    }
    ctx.emit_ipv4(dst, src, IpProtocol::Icmp, message.len(), |buf| {
        buf[..message.len()].copy_from_slice(message);
        let mut reply = Icmpv4Packet::new_unchecked(&mut buf[..message.len()]);
        reply.set_msg_type(Icmpv4Message::EchoReply);
        reply.fill_checksum();
    });
}
