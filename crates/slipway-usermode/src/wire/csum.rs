//! The Internet checksum (RFC 1071) of TCP segments, fast.
//!
//! Every byte of bulk TCP data passes a checksum twice in the stack (the
//! guest's segments are verified, ours are filled in), and profiles of
//! MTU 65520 transfers showed smoltcp's 16-bit loop as the largest cost
//! after the kernel's own copies. The one's complement sum does not depend
//! on byte order (RFC 1071 §2(B)), so native-order 16-bit words summed and
//! folded give the checksum's bytes as they lie in memory. They are summed
//! into sixteen 32-bit lanes, one word of each 32-byte block per lane,
//! which compiles to wide vector adds with no carry to propagate; where
//! the CPU has AVX2 (checked once, at run time) the same loop is compiled
//! for it too and used for anything longer than a header. A profile of a
//! stream-path upload at MTU 65520 found the earlier 32-bit-word loop,
//! inlined into the segment handler, adding 8 bytes per iteration: 5-6 %
//! of the stack's samples (bench/README.md, "The checksum in vector
//! lanes").

use std::net::IpAddr;

use smoltcp::wire::IpProtocol;

/// Most bytes summed in the lanes before they are added to the 64-bit
/// sum: each lane takes one 16-bit word per 32-byte block, and 65536
/// words of at most 0xffff cannot overflow 32 bits.
const BLOCK: usize = 65536 * 32;

/// Shorter than this, the scalar tail does all the work and dispatching
/// to the AVX2 copy is not worth the call.
const WIDE: usize = 128;

/// Adds `data` to the running sum `acc` (see the module header). `data`
/// must start at an even offset of the summed whole (every caller passes
/// whole headers or segments).
fn add(acc: u64, data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= WIDE && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only requirement of the function.
        return unsafe { add_avx2(acc, data) };
    }
    add_portable(acc, data)
}

/// [`add_words`] for any x86-64 (SSE2) or other target.
#[inline(never)]
fn add_portable(acc: u64, data: &[u8]) -> u64 {
    add_words(acc, data)
}

/// [`add_words`] compiled for AVX2 (twice SSE2's lanes per add).
///
/// # Safety
///
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
unsafe fn add_avx2(acc: u64, data: &[u8]) -> u64 {
    add_words(acc, data)
}

/// The summing loop itself, inlined into each compiled copy. Runs of
/// whole 32-byte blocks go through the lanes (a run at most [`BLOCK`]
/// long, so no lane overflows), the tail word by word.
#[inline(always)]
fn add_words(acc: u64, data: &[u8]) -> u64 {
    let mut sum = acc;
    let whole = data.len() - data.len() % 32;
    for run in data[..whole].chunks(BLOCK) {
        let mut lanes = [0u32; 16];
        for block in run.chunks_exact(32) {
            for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(2)) {
                *lane += u32::from(u16::from_ne_bytes([word[0], word[1]]));
            }
        }
        sum += lanes.iter().map(|&l| u64::from(l)).sum::<u64>();
    }
    let mut words = data[whole..].chunks_exact(2);
    for word in &mut words {
        sum += u64::from(u16::from_ne_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    sum
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

    /// The sum word by word, as RFC 1071 states it, for comparison.
    fn reference(data: &[u8]) -> u16 {
        let mut sum = 0u64;
        for word in data.chunks(2) {
            sum += u64::from(u16::from_ne_bytes([word[0], *word.get(1).unwrap_or(&0)]));
        }
        fold(sum)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_copy_of_the_loop_sums_as_the_rfc_does(data in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            let want = reference(&data);
            prop_assert_eq!(fold(add(0, &data)), want);
            prop_assert_eq!(fold(add_portable(0, &data)), want);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                prop_assert_eq!(fold(unsafe { add_avx2(0, &data) }), want);
            }
        }
    }

    /// Words of all ones through more than one run of the lanes: a lane
    /// that overflowed would lose a carry.
    #[test]
    fn the_lanes_do_not_overflow() {
        let data = vec![0xffu8; 2 * BLOCK + 1000];
        assert_eq!(fold(add(0, &data)), reference(&data));
        assert_eq!(fold(add_portable(0, &data)), reference(&data));
        let data = vec![0xfeu8; BLOCK];
        assert_eq!(fold(add(7, &data)), fold(u64::from(reference(&data)) + 7));
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
