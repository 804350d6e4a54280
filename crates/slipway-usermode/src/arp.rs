//! ARP: answers for the stack's virtual addresses, learns the guests',
//! and asks for a guest address the stack must send to but has not heard
//! from ([`crate::wire::arp::write_request`], sent by the neighbour cache).

use std::net::Ipv4Addr;

use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol,
};

use crate::iface::{Core, DropReason};
use crate::wire::arp::ARP_LEN;
use crate::wire::{self, ETHERNET_HEADER_LEN, GATEWAY_MAC};

/// Handles one ARP packet (the Ethernet payload) from `src_mac`.
pub(crate) fn handle(core: &mut Core, src_mac: EthernetAddress, packet: &[u8]) {
    let Ok(arp) = ArpPacket::new_checked(packet) else {
        core.counters.drop(DropReason::Truncated);
        return;
    };
    if arp.hardware_type() != ArpHardware::Ethernet
        || arp.protocol_type() != EthernetProtocol::Ipv4
        || arp.hardware_len() != 6
        || arp.protocol_len() != 4
        || packet.len() < ARP_LEN
    {
        core.counters.drop(DropReason::Malformed);
        return;
    }
    let sender_mac = EthernetAddress::from_bytes(arp.source_hardware_addr());
    let sender_ip = ipv4(arp.source_protocol_addr());
    let target_ip = ipv4(arp.target_protocol_addr());
    if sender_mac != src_mac || !sender_mac.is_unicast() {
        core.counters.drop(DropReason::Malformed);
        return;
    }
    if core.cfg.in_subnet(sender_ip) && !core.cfg.is_virtual(sender_ip) {
        core.neighbours.learn(sender_ip, sender_mac);
    }
    match arp.operation() {
        ArpOperation::Request
            if core.cfg.is_virtual(target_ip) || core.cfg.is_copied_peer(target_ip) => {}
        ArpOperation::Request | ArpOperation::Reply => return,
        _ => {
            core.counters.drop(DropReason::Malformed);
            return;
        }
    }
    let len = ETHERNET_HEADER_LEN + ARP_LEN;
    let queued = core.tx.push(|buf| {
        let buf = &mut buf[..len];
        let mut eth = EthernetFrame::new_unchecked(&mut *buf);
        eth.set_dst_addr(sender_mac);
        eth.set_src_addr(GATEWAY_MAC);
        eth.set_ethertype(EthernetProtocol::Arp);
        let arp = &mut buf[ETHERNET_HEADER_LEN..];
        wire::arp::write(arp, ArpOperation::Reply, target_ip, sender_mac, sender_ip);
        len
    });
    if queued {
        core.counters.frames_out += 1;
        core.counters.bytes_out += len as u64;
    } else {
        core.counters.drop(DropReason::GuestTxFull);
    }
}

fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    let mut o = [0u8; 4];
    o.copy_from_slice(&bytes[..4]);
    o.into()
}
