//! Link framing: the 4-byte length prefix of QEMU's stream netdev and the
//! `virtio_net_hdr` of a tap opened with `IFF_VNET_HDR` (what it says of
//! a received frame's checksum, and the offload header of a frame sent).

use std::num::NonZeroU16;

use super::ETHERNET_HEADER_LEN;

/// Room kept in front of every queued frame for a stream length prefix.
pub const FRAME_PREFIX_LEN: usize = 4;

/// Length of the `virtio_net_hdr` a tap opened with `IFF_VNET_HDR` puts in
/// front of every frame (the kernel's default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;
/// Largest IP packet a segmentation-offload frame carries.
pub const MAX_OFFLOAD_PACKET: usize = 65535;

/// `virtio_net_hdr` flag: the checksum from `csum_start` is left to the
/// receiver (the pseudo-header sum is in place).
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr` flag: the sender's kernel already checked the checksum.
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `virtio_net_hdr` GSO type of a TCP/IPv4 segment.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `virtio_net_hdr` GSO type of a TCP/IPv6 segment.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `virtio_net_hdr` GSO type of UDP datagrams (either family; Linux 6.2+
/// takes it from a tap, `TUN_F_USO4`/`TUN_F_USO6` the other way).
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// Offset of the UDP checksum field in its header.
const UDP_CSUM_OFFSET: u16 = 6;
/// Offset of the TCP checksum field in its header.
const TCP_CSUM_OFFSET: u16 = 16;

/// Most datagrams one UDP segmentation-offload frame from a tap may carry
/// (Linux's own `UDP_MAX_SEGMENTS`); a frame that claims more is dropped
/// (`oversized`) rather than cut into thousands of tiny datagrams.
pub const MAX_UDP_RX_SEGMENTS: usize = 128;

/// What the link says of a received frame's TCP or UDP checksum (and, for
/// UDP from a tap with `TUN_F_USO4`/`TUN_F_USO6`, of its segmentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxChecksum {
    /// Nothing: the stack verifies it.
    Unverified,
    /// The sending kernel vouches for the payload, so the stack does not
    /// sum it again: a tap's virtio-net header said `NEEDS_CSUM` (the field
    /// holds only the pseudo-header sum, Linux's `CHECKSUM_PARTIAL`, as
    /// for any frame of a tap with `TUN_F_CSUM` offload) or `DATA_VALID`.
    Trusted,
    /// Trusted as above, and the UDP datagram is really several: the
    /// namespace's kernel handed over a `VIRTIO_NET_HDR_GSO_UDP_L4` frame
    /// (one UDP header, payloads back to back) that it would otherwise
    /// have cut up itself; each datagram carries this many payload bytes
    /// (the last may carry fewer). Ignored for anything but UDP.
    UdpSegments(NonZeroU16),
}

impl RxChecksum {
    /// Reads the flags of the `virtio_net_hdr` in front of a frame read
    /// from a tap opened with `IFF_VNET_HDR`.
    /// A UDP segmentation frame is only taken as such with its checksum
    /// left to the receiver (as the kernel always sends one) and a
    /// non-zero segment size; otherwise it is one datagram.
    pub fn from_vnet_hdr(hdr: &[u8]) -> RxChecksum {
        let flags = hdr.first().copied().unwrap_or(0);
        if flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) == 0 {
            return RxChecksum::Unverified;
        }
        let gso_type = hdr.get(1).copied().unwrap_or(0);
        let gso_size = match hdr.get(4..6) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => 0,
        };
        match NonZeroU16::new(gso_size) {
            Some(size) if gso_type == VIRTIO_NET_HDR_GSO_UDP_L4 => RxChecksum::UdpSegments(size),
            _ => RxChecksum::Trusted,
        }
    }
}

/// A TCP segment or UDP datagrams the attachment's receiver finishes (a
/// tap with `IFF_VNET_HDR`): it computes the checksum from the
/// pseudo-header sum the stack put in place, and a packet with more than
/// `mss` bytes of payload arrives as one large (GRO-like) packet of
/// `mss`-sized TCP segments, or is cut into UDP datagrams of `mss` bytes
/// of payload each (the last may be shorter; `VIRTIO_NET_HDR_GSO_UDP_L4`).
#[derive(Clone, Copy, Debug)]
pub struct Offload {
    /// Payload bytes per segment on the wire (the guest's MSS, or the
    /// size of each UDP datagram).
    pub mss: u16,
    /// Length of the TCP header (options included), or 8 for UDP.
    pub header_len: usize,
    /// Whether the packet is UDP (else TCP).
    pub udp: bool,
}

/// The virtio-net header (little-endian, as a tap on a little-endian host
/// reads it) of a frame whose IP header is `ip_header_len` bytes: none
/// without `offload`; else the checksum left to the receiver and, when the
/// payload exceeds the MSS, segmentation of type `gso_type` (for TCP; UDP
/// is always `VIRTIO_NET_HDR_GSO_UDP_L4`).
pub fn vnet_header(
    offload: Option<Offload>,
    ip_header_len: usize,
    segment_len: usize,
    gso_type: u8,
) -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let Some(o) = offload else {
        return hdr;
    };
    let csum_start = ETHERNET_HEADER_LEN + ip_header_len;
    let headers = csum_start + o.header_len;
    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    if segment_len > o.header_len + usize::from(o.mss) {
        hdr[1] = if o.udp {
            VIRTIO_NET_HDR_GSO_UDP_L4
        } else {
            gso_type
        };
    }
    let csum_offset = if o.udp {
        UDP_CSUM_OFFSET
    } else {
        TCP_CSUM_OFFSET
    };
    // hdr_len, gso_size, csum_start, csum_offset (the checksum field).
    hdr[2..4].copy_from_slice(&(headers as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&o.mss.to_le_bytes());
    hdr[6..8].copy_from_slice(&(csum_start as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    hdr
}
