//! ARP (RFC 826) for Ethernet and IPv4: the request the stack sends to
//! learn a guest's MAC address.

use std::net::Ipv4Addr;

use smoltcp::wire::{ArpHardware, ArpOperation, ArpPacket, EthernetProtocol};

use super::GATEWAY_MAC;

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;

/// Writes an ARP request from the gateway at `sender` asking who has
/// `target` into `buf` (at least [`ARP_LEN`] bytes).
pub fn write_request(buf: &mut [u8], sender: Ipv4Addr, target: Ipv4Addr) {
    let mut req = ArpPacket::new_unchecked(&mut buf[..ARP_LEN]);
    req.set_hardware_type(ArpHardware::Ethernet);
    req.set_protocol_type(EthernetProtocol::Ipv4);
    req.set_hardware_len(6);
    req.set_protocol_len(4);
    req.set_operation(ArpOperation::Request);
    req.set_source_hardware_addr(GATEWAY_MAC.as_bytes());
    req.set_source_protocol_addr(&sender.octets());
    req.set_target_hardware_addr(&[0; 6]);
    req.set_target_protocol_addr(&target.octets());
}
