//! ARP (RFC 826) for Ethernet and IPv4: the requests the stack sends to
//! learn a guest's MAC address and its replies for its own addresses.

use std::net::Ipv4Addr;

use smoltcp::wire::{ArpHardware, ArpOperation, ArpPacket, EthernetAddress, EthernetProtocol};

use super::GATEWAY_MAC;

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;

/// Writes an ARP request from the gateway at `sender` asking who has
/// `target` into `buf` (at least [`ARP_LEN`] bytes).
pub fn write_request(buf: &mut [u8], sender: Ipv4Addr, target: Ipv4Addr) {
    write(
        buf,
        ArpOperation::Request,
        sender,
        EthernetAddress([0; 6]),
        target,
    );
}

/// Writes into `buf` (at least [`ARP_LEN`] bytes) an Ethernet/IPv4 ARP
/// `operation` from the gateway's MAC address at `sender` to `target_mac`
/// at `target`.
pub fn write(
    buf: &mut [u8],
    operation: ArpOperation,
    sender: Ipv4Addr,
    target_mac: EthernetAddress,
    target: Ipv4Addr,
) {
    let mut arp = ArpPacket::new_unchecked(&mut buf[..ARP_LEN]);
    arp.set_hardware_type(ArpHardware::Ethernet);
    arp.set_protocol_type(EthernetProtocol::Ipv4);
    arp.set_hardware_len(6);
    arp.set_protocol_len(4);
    arp.set_operation(operation);
    arp.set_source_hardware_addr(GATEWAY_MAC.as_bytes());
    arp.set_source_protocol_addr(&sender.octets());
    arp.set_target_hardware_addr(target_mac.as_bytes());
    arp.set_target_protocol_addr(&target.octets());
}
