//! The Internet checksum (RFC 1071) of TCP segments, fast.
//!
//! Every byte of bulk TCP data passes a checksum twice in the stack (the
//! guest's segments are verified, ours are filled in), and profiles of
//! MTU 65520 transfers showed smoltcp's 16-bit loop as the largest cost
//! after the kernel's own copies. This sums 32-bit words into a 64-bit
//! accumulator instead: the one's complement sum does not depend on byte order
//! (RFC 1071 §2(B)), so native-order words summed and folded give the
//! checksum's bytes as they lie in memory.

use std::net::IpAddr;

use smoltcp::wire::IpProtocol;

/// Adds `data` to the running sum `acc`, in 4-byte native-order words
/// widened to 64 bits: no carry to propagate per word (a segment of at
/// most 64 KiB cannot overflow), so the loop vectorises. `data` must
/// start at an even offset of the summed whole (every caller passes whole
/// headers or segments).
fn add(acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    let mut sum = acc;
    for w in &mut words {
        sum += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut last = [0u8; 4];
    last[..rest.len()].copy_from_slice(rest);
    sum + u64::from(u32::from_ne_bytes(last))
}

/// Folds a 64-bit sum to 16 bits (still one's complement, native order).
fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The sum of the pseudo-header and `segment` (header and payload).
fn segment_sum(src: IpAddr, dst: IpAddr, protocol: IpProtocol, segment: &[u8]) -> u16 {
    fold(add(pseudo_sum(src, dst, protocol, segment.len()), segment))
}

/// The (unfolded) sum of the pseudo-header of a `len`-byte segment.
fn pseudo_sum(src: IpAddr, dst: IpAddr, protocol: IpProtocol, len: usize) -> u64 {
    let len = len as u32;
    let proto = u8::from(protocol);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut pseudo = [0u8; 12];
            pseudo[..4].copy_from_slice(&s.octets());
            pseudo[4..8].copy_from_slice(&d.octets());
            pseudo[9] = proto;
            pseudo[10..].copy_from_slice(&(len as u16).to_be_bytes());
            add(0, &pseudo)
        }
        _ => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let mut pseudo = [0u8; 40];
            pseudo[..16].copy_from_slice(&v6(src).octets());
            pseudo[16..32].copy_from_slice(&v6(dst).octets());
            pseudo[32..36].copy_from_slice(&len.to_be_bytes());
            pseudo[39] = proto;
            add(0, &pseudo)
        }
    }
}

/// Fills in the checksum of a TCP segment (`segment`: header and
/// payload; the checksum field at bytes 16..18 is overwritten).
pub(crate) fn fill_tcp(src: IpAddr, dst: IpAddr, segment: &mut [u8]) {
    if segment.len() < 18 {
        return;
    }
    segment[16..18].fill(0);
    let sum = segment_sum(src, dst, IpProtocol::Tcp, segment);
    segment[16..18].copy_from_slice(&(!sum).to_ne_bytes());
}

/// Puts the pseudo-header sum (not complemented) in a TCP segment's or a
/// UDP datagram's checksum field (`protocol`), for a receiver that sums
/// the rest itself from there (a virtio-net header's `NEEDS_CSUM`,
/// Linux's `CHECKSUM_PARTIAL`).
pub(crate) fn fill_partial(src: IpAddr, dst: IpAddr, protocol: IpProtocol, segment: &mut [u8]) {
    let at = if protocol == IpProtocol::Udp { 6 } else { 16 };
    if segment.len() < at + 2 {
        return;
    }
    let sum = fold(pseudo_sum(src, dst, protocol, segment.len()));
    segment[at..at + 2].copy_from_slice(&sum.to_ne_bytes());
}

/// Whether a received TCP segment's checksum is right.
pub(crate) fn verify_tcp(src: IpAddr, dst: IpAddr, segment: &[u8]) -> bool {
    segment_sum(src, dst, IpProtocol::Tcp, segment) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::{IpAddress, TcpPacket};

    fn addrs(v6: bool) -> (IpAddr, IpAddr) {
        if v6 {
            ("fd00::2".parse().unwrap(), "fd00::15".parse().unwrap())
        } else {
            ("10.0.2.2".parse().unwrap(), "10.0.2.15".parse().unwrap())
        }
    }

    proptest! {
        #[test]
        fn agrees_with_smoltcp(payload in proptest::collection::vec(any::<u8>(), 0..3000), v6 in any::<bool>()) {
            let (src, dst) = addrs(v6);
            let mut seg = vec![0u8; 20];
            seg[12] = 5 << 4;
            seg.extend_from_slice(&payload);
            let mut theirs = seg.clone();
            TcpPacket::new_unchecked(&mut theirs[..])
                .fill_checksum(&IpAddress::from(src), &IpAddress::from(dst));
            fill_tcp(src, dst, &mut seg);
            prop_assert_eq!(&seg[16..18], &theirs[16..18]);
            prop_assert!(verify_tcp(src, dst, &seg));
            prop_assert!(TcpPacket::new_unchecked(&seg[..])
                .verify_checksum(&IpAddress::from(src), &IpAddress::from(dst)));
            // One flipped bit is caught.
            let at = payload.len() % seg.len();
            seg[at] ^= 0x10;
            prop_assert!(!verify_tcp(src, dst, &seg));
        }
    }

    proptest! {
        #[test]
        fn partial_sum_completes_to_the_full_checksum(payload in proptest::collection::vec(any::<u8>(), 0..3000), v6 in any::<bool>()) {
            // What a NEEDS_CSUM receiver does: sum from the TCP header with
            // the pseudo-header sum in the checksum field, store the complement.
            let (src, dst) = addrs(v6);
            let mut seg = vec![0u8; 20];
            seg[12] = 5 << 4;
            seg.extend_from_slice(&payload);
            fill_partial(src, dst, IpProtocol::Tcp, &mut seg);
            let finished = !fold(add(0, &seg));
            seg[16..18].copy_from_slice(&finished.to_ne_bytes());
            prop_assert!(verify_tcp(src, dst, &seg));
        }

        #[test]
        fn udp_partial_sum_completes_to_the_full_checksum(payload in proptest::collection::vec(any::<u8>(), 0..3000), v6 in any::<bool>()) {
            let (src, dst) = addrs(v6);
            let len = 8 + payload.len();
            let mut dgram = vec![0u8; 8];
            dgram[..2].copy_from_slice(&1234u16.to_be_bytes());
            dgram[2..4].copy_from_slice(&53u16.to_be_bytes());
            dgram[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            dgram.extend_from_slice(&payload);
            fill_partial(src, dst, IpProtocol::Udp, &mut dgram);
            let finished = !fold(add(0, &dgram));
            dgram[6..8].copy_from_slice(&finished.to_ne_bytes());
            prop_assert!(smoltcp::wire::UdpPacket::new_unchecked(&dgram[..])
                .verify_checksum(&IpAddress::from(src), &IpAddress::from(dst)));
        }
    }

    #[test]
    fn short_segments_are_left_alone() {
        let (src, dst) = addrs(false);
        let mut seg = [7u8; 10];
        fill_tcp(src, dst, &mut seg);
        assert_eq!(seg, [7u8; 10]);
        assert!(!verify_tcp(src, dst, &[]));
    }
}
