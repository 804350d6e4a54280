//! Whole Ethernet frames from a hostile guest into `Stack::handle_frame`,
//! the entry point a real VM's frames take, with a real host side: the
//! stack opens real sockets, inside an empty network namespace where only
//! loopback exists (connections are refused, datagrams go nowhere), and
//! their readiness events are handed back as the event loop would.
//!
//! Input: records (2-byte length, frame), so a conversation (ARP, DHCP,
//! a TCP handshake and data) runs through one stack. Inputs of odd length
//! arrive as from a tap with checksum offload (`RxChecksum::Trusted`: TCP
//! and UDP checksums are not verified), so the fuzzer reaches the TCP and
//! UDP handlers without having to forge checksums; those of length 3 mod 4
//! as from a tap with UDP segmentation offload too (each UDP datagram is
//! cut into segments of an odd size up to 255 bytes the first byte picks).
#![no_main]

use std::sync::Once;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mio::{Events, Poll};
use slipway_usermode::ctx::{decode_token, RxChecksum};
use slipway_usermode::stack::Stack;

static INIT: Once = Once::new();

fn drain(stack: &mut Stack, max_frame: usize) {
    let tx = stack.guest_tx();
    for i in 0..tx.len() {
        let frame = tx.frame(i);
        assert!(
            frame.len() >= 14 && frame.len() <= max_frame,
            "frame toward the guest of {} bytes",
            frame.len()
        );
    }
    let n = tx.len();
    tx.pop(n);
}

fuzz_target!(|data: &[u8]| {
    INIT.call_once(slipway_fuzz::require_isolated_network);
    let mut cfg = slipway_usermode::options::parse_options(
        "net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:0-:22,hostfwd=udp:127.0.0.1:0-:53",
    )
    .expect("fixed options parse");
    cfg.dns_upstreams = vec!["127.0.0.1:53".parse().unwrap()];
    cfg.limits.guest_tx_slots = 64;
    let mut poll = Poll::new().expect("epoll");
    let registry = poll.registry().try_clone().expect("epoll");
    let mut stack = Stack::new(cfg).expect("stack");
    stack.start(&registry).expect("stack start");
    let max_frame = stack.guest_tx().max_frame_len();
    let mut events = Events::with_capacity(64);
    let mut now = Instant::now();
    // Lengths of 3 mod 4 are frames of a tap with UDP segmentation
    // offload: UDP datagrams cut at a segment size the first byte picks.
    let checksum = match (data.len() % 4, data.first()) {
        (3, Some(&seg)) => RxChecksum::from_vnet_hdr(&[1, 5, 0, 0, seg | 1, 0, 0, 0, 0, 0]),
        (1 | 3, _) => RxChecksum::Trusted,
        _ => RxChecksum::Unverified,
    };
    for frame in slipway_fuzz::records(data) {
        stack.handle_frame_with(&registry, frame, checksum, now);
        drain(&mut stack, max_frame);
        stack.on_guest_tx_space(&registry, now);
        if poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            for event in events.iter() {
                if let Some((kind, index)) = decode_token(event.token()) {
                    stack.handle_host_event(&registry, kind, index, event, now);
                }
            }
        }
        drain(&mut stack, max_frame);
        now += Duration::from_millis(250);
        if stack.next_deadline().is_some_and(|d| d <= now) {
            stack.on_timer(&registry, now);
            drain(&mut stack, max_frame);
        }
    }
    // Let every timer fire: retransmissions give up, idle flows close.
    for _ in 0..4 {
        now += Duration::from_secs(600);
        stack.on_timer(&registry, now);
        drain(&mut stack, max_frame);
    }
});
