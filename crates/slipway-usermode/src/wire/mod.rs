//! Wire formats: the addresses, header lengths and frame builders the
//! stack shares, and its checksums. This layer knows nothing of the
//! stack: it imports no other module of the crate (smoltcp's `wire`).
//!
//! - [`framing`]: what a link puts in front of a frame (the stream
//!   length prefix, a tap's virtio-net header) and what it says of it.
//! - [`arp`], [`ndp`]: the requests the stack sends to resolve a guest's
//!   address.
//! - `csum`: the Internet checksum, hand-written for speed.

use std::net::Ipv6Addr;

use smoltcp::wire::EthernetAddress;

pub mod arp;
pub(crate) mod csum;
pub mod framing;
pub mod ndp;

/// MAC address the stack uses for every virtual address (gateway, DNS,
/// forwards): `52:55` followed by the default host address, as libslirp does.
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);

/// Length of an Ethernet header without VLAN tag.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of an IPv6 header (the stack sends no extension headers).
pub const IPV6_HEADER_LEN: usize = 40;

/// The Ethernet multicast address of IPv6 multicast group `group`
/// (RFC 2464: `33:33` and the group's last four bytes).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}
