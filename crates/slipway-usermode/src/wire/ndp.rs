//! Neighbour discovery (RFC 4861): the neighbour solicitation the stack
//! sends to learn a guest's MAC address.

use std::net::Ipv6Addr;

use smoltcp::wire::{Icmpv6Packet, NdiscRepr};

use super::GATEWAY_MAC;

/// Length of the neighbour solicitation [`write_solicit`] writes (the
/// ICMPv6 message with a source link-layer address option).
pub const SOLICIT_LEN: usize = 32;

/// The solicited-node multicast group of `target` (`ff02::1:ffXX:XXXX`).
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    )
}

/// Writes into `buf` (at least [`SOLICIT_LEN`] bytes) the ICMPv6
/// neighbour solicitation from `src` asking who has `target`, sent to
/// `target`'s [`solicited_node`] group, checksum filled in.
pub fn write_solicit(buf: &mut [u8], src: Ipv6Addr, target: Ipv6Addr) {
    let repr = NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(GATEWAY_MAC.into()),
    };
    let mut pkt = Icmpv6Packet::new_unchecked(&mut buf[..SOLICIT_LEN]);
    repr.emit(&mut pkt);
    pkt.fill_checksum(&src, &solicited_node(target));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicit_has_its_stated_length_and_group() {
        let repr = NdiscRepr::NeighborSolicit {
            target_addr: Ipv6Addr::LOCALHOST,
            lladdr: Some(GATEWAY_MAC.into()),
        };
        assert_eq!(repr.buffer_len(), SOLICIT_LEN);
        let group = solicited_node("fec0::1:2:3".parse().unwrap());
        assert_eq!(group, "ff02::1:ff02:3".parse::<Ipv6Addr>().unwrap());
    }
}
