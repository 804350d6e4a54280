//! UDP datagrams in and out of the guest: the check every received
//! datagram passes and the emitter every UDP sender (NAT flows, DHCP, the
//! DNS relay, TFTP) queues its replies with.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{EthernetAddress, IpAddress, IpProtocol, UdpPacket};

use super::counters::{Counters, DropReason};
use super::ctx::Ctx;
use crate::wire::framing::RxChecksum;

/// Length of a UDP header.
pub(crate) const UDP_HEADER_LEN: usize = 8;
/// A UDP datagram from the guest that passed [`check`].
pub(crate) struct Datagram<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The payload (the UDP length's worth, without padding).
    pub payload: &'a [u8],
}

/// Validates a UDP datagram (length, checksum when present and not
/// vouched for by the link; IPv6 requires one) from `src` to `dst`.
pub(crate) fn check<'a>(
    counters: &mut Counters,
    src: IpAddr,
    dst: IpAddr,
    segment: &'a [u8],
    checksum: RxChecksum,
) -> Option<Datagram<'a>> {
    let Ok(udp) = UdpPacket::new_checked(segment) else {
        counters.drop(DropReason::Truncated);
        return None;
    };
    // A zero checksum means "none" over IPv4 but is invalid over IPv6
    // (RFC 8200 8.1), which smoltcp's check would let through.
    let missing = udp.checksum() == 0;
    let verify = checksum == RxChecksum::Unverified && !missing;
    if (missing && src.is_ipv6())
        || (verify && !udp.verify_checksum(&IpAddress::from(src), &IpAddress::from(dst)))
    {
        counters.drop(DropReason::BadChecksum);
        return None;
    }
    let len = usize::from(udp.len());
    Some(Datagram {
        sport: udp.src_port(),
        dport: udp.dst_port(),
        payload: &segment[UDP_HEADER_LEN..len],
    })
}

/// Queues one UDP datagram toward the guest; `dst_mac` overrides the
/// neighbour lookup (DHCP replies to a client without an address).
pub(crate) fn emit(
    ctx: &mut Ctx,
    dst_mac: Option<EthernetAddress>,
    src: impl Into<SocketAddr>,
    dst: impl Into<SocketAddr>,
    payload: &[u8],
) -> bool {
    let (src, dst) = (src.into(), dst.into());
    let len = UDP_HEADER_LEN + payload.len();
    if len > usize::from(u16::MAX) {
        ctx.counters.drop(DropReason::Oversized);
        return false;
    }
    let fill = |buf: &mut [u8]| {
        let mut udp = UdpPacket::new_unchecked(&mut buf[..len]);
        udp.set_src_port(src.port());
        udp.set_dst_port(dst.port());
        udp.set_len(len as u16);
        udp.payload_mut()[..payload.len()].copy_from_slice(payload);
        udp.fill_checksum(&IpAddress::from(src.ip()), &IpAddress::from(dst.ip()));
    };
    match (src.ip(), dst.ip(), dst_mac) {
        (IpAddr::V4(s), IpAddr::V4(d), Some(mac)) => {
            ctx.emit_ipv4_to(mac, s, d, IpProtocol::Udp, len, fill)
        }
        (IpAddr::V6(s), IpAddr::V6(d), mac) => ctx.emit_ipv6(mac, s, d, IpProtocol::Udp, len, fill),
        (s, d, _) => ctx.emit_ip(s, d, IpProtocol::Udp, len, fill),
    }
}
