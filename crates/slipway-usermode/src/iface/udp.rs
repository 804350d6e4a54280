//! UDP datagrams in and out of the guest: the check every received
//! datagram passes and the emitter every UDP sender (NAT flows, DHCP, the
//! DNS relay, TFTP) queues its replies with, and the offload emitter NAT
//! flows use for batches toward a tap with virtio-net headers: several
//! datagrams in one frame the namespace's kernel cuts up
//! (`VIRTIO_NET_HDR_GSO_UDP_L4`), the checksum left to it.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{EthernetAddress, IpAddress, IpProtocol, UdpPacket};

use super::counters::{Counters, DropReason};
use super::ctx::Ctx;
use crate::wire::framing::{Offload, RxChecksum, MAX_UDP_RX_SEGMENTS};

/// Length of a UDP header.
pub(crate) const UDP_HEADER_LEN: usize = 8;
/// A UDP datagram from the guest that passed [`check`].
#[derive(Clone, Copy)]
pub(crate) struct Datagram<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The payload (the UDP length's worth, without padding).
    pub payload: &'a [u8],
    /// Payload bytes of each datagram the payload holds: its whole length
    /// but for a segmentation-offload frame ([`RxChecksum::UdpSegments`]).
    pub segment: usize,
}

impl<'a> Datagram<'a> {
    /// The datagrams this one stands for: itself, or each segment of a
    /// segmentation-offload frame (all `segment` bytes, the last maybe
    /// fewer), without copying.
    pub fn datagrams(self) -> impl Iterator<Item = Datagram<'a>> {
        // An empty datagram has no chunks but is still one datagram.
        let empty = self.payload.is_empty().then_some(self);
        let parts = self.payload.chunks(self.segment.max(1));
        empty.into_iter().chain(parts.map(move |payload| Datagram {
            payload,
            segment: payload.len(),
            ..self
        }))
    }
}

/// Validates a UDP datagram (length, checksum when present and not
/// vouched for by the link; IPv6 requires one) from `src` to `dst`; a
/// segmentation-offload frame may hold at most [`MAX_UDP_RX_SEGMENTS`].
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
    let payload = &segment[UDP_HEADER_LEN..len];
    let segment = match checksum {
        RxChecksum::UdpSegments(size) => usize::from(size.get()),
        _ => payload.len(),
    };
    if payload.len().div_ceil(segment.max(1)) > MAX_UDP_RX_SEGMENTS {
        counters.drop(DropReason::Oversized);
        return None;
    }
    Some(Datagram {
        sport: udp.src_port(),
        dport: udp.dst_port(),
        payload,
        segment,
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

/// Queues the datagrams `payloads` (`total` bytes together; every one
/// `size` bytes but the last, which may be shorter) from `src` to `dst` as
/// one offload frame: a single UDP header and the payloads back to back,
/// which the link's receiver cuts into datagrams of `size` bytes and
/// checksums (only when [`Ctx::can_offload_to`] `dst`; the caller keeps
/// `total` within [`Ctx::max_offload_udp_payload`]). One datagram goes
/// whole, its checksum still left to the receiver.
pub(crate) fn emit_offload<'p>(
    ctx: &mut Ctx,
    src: SocketAddr,
    dst: SocketAddr,
    size: usize,
    payloads: impl IntoIterator<Item = &'p [u8]>,
    total: usize,
) -> bool {
    let len = UDP_HEADER_LEN + total;
    let (Ok(udp_len), Ok(mss)) = (u16::try_from(len), u16::try_from(size.max(1))) else {
        ctx.counters.drop(DropReason::Oversized);
        return false;
    };
    let offload = Offload {
        mss,
        header_len: UDP_HEADER_LEN,
        udp: true,
    };
    let (s, d) = (src.ip(), dst.ip());
    let fill = |buf: &mut [u8]| {
        let buf = &mut buf[..len];
        let mut udp = UdpPacket::new_unchecked(&mut *buf);
        udp.set_src_port(src.port());
        udp.set_dst_port(dst.port());
        udp.set_len(udp_len);
        let mut at = UDP_HEADER_LEN;
        for p in payloads {
            let end = (at + p.len()).min(len);
            buf[at..end].copy_from_slice(&p[..end - at]);
            at = end;
        }
        crate::wire::csum::fill_partial(s, d, IpProtocol::Udp, buf);
    };
    ctx.emit_ip_offload(s, d, IpProtocol::Udp, len, Some(offload), fill)
}
