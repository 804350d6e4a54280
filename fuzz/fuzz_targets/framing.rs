//! QEMU's stream and datagram framings as the VM link sees them: the fuzz
//! input is written by a real peer socket into a real `Attachment`, which
//! deframes it and hands each frame to a real `Stack`.
//!
//! First byte: bit 0 chooses stream (length-prefixed byte stream written in
//! pieces) or datagram (records, one datagram each). Bits 1-7 choose how
//! the stream is cut into writes, to exercise partial prefixes and frames.
#![no_main]

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mio::{Events, Poll};
use slipway_usermode::attach::{AttachSpec, Attachment, LinkState};
use slipway_usermode::ctx::{decode_token, TokenKind};
use slipway_usermode::stack::Stack;

fn stack(registry: &mio::Registry) -> Stack {
    let mut cfg = slipway_usermode::options::parse_options("restrict=on").expect("options");
    cfg.dns_upstreams = Vec::new();
    cfg.limits.guest_tx_slots = 16;
    let mut stack = Stack::new(cfg).expect("stack");
    stack.start(registry).expect("start");
    stack
}

/// Delivers readiness events as the event loop does, then reads and
/// drains until the attachment has nothing more or the link is gone.
fn pump(
    poll: &mut Poll,
    registry: &mio::Registry,
    attach: &mut Attachment,
    stack: &mut Stack,
) -> bool {
    let mut events = Events::with_capacity(16);
    for _ in 0..64 {
        let tx = stack.guest_tx();
        let n = tx.len();
        tx.pop(n);
        if poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            for event in events.iter() {
                if let Some((TokenKind::Attach, index)) = decode_token(event.token()) {
                    attach.on_event(registry, index, event);
                }
            }
        }
        if !attach.can_read(stack.guest_tx()) {
            return true;
        }
        if attach.receive(registry, stack, Instant::now()) == LinkState::Gone {
            return false;
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let dir = tempdir();
    let mut poll = Poll::new().expect("epoll");
    let registry = poll.registry().try_clone().expect("epoll");
    let mut stack = stack(&registry);
    if mode & 1 == 0 {
        let path = dir.0.join("vm.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut attach =
            Attachment::open(AttachSpec::UnixConnect(path.clone()), &registry).expect("connect");
        let (mut peer, _) = listener.accept().expect("accept");
        let piece = usize::from(mode >> 1) * 37 + 1;
        for chunk in body.chunks(piece) {
            peer.write_all(chunk).expect("write to the attachment");
            if !pump(&mut poll, &registry, &mut attach, &mut stack) {
                return;
            }
        }
        drop(peer);
        // End of stream: the attachment must notice, whatever was pending.
        let mut gone = false;
        for _ in 0..4 {
            if !pump(&mut poll, &registry, &mut attach, &mut stack) {
                gone = true;
                break;
            }
        }
        assert!(gone, "end of stream not noticed");
    } else {
        let path = dir.0.join("slipway.dgram");
        let mut attach =
            Attachment::open(AttachSpec::UnixDgram(path.clone()), &registry).expect("bind");
        let vm = UnixDatagram::bind(dir.0.join("vm.dgram")).expect("bind vm");
        for record in slipway_fuzz::records(body) {
            // A full receive queue is back-pressure, not a finding.
            let _ = vm.send_to(record, &path);
            pump(&mut poll, &registry, &mut attach, &mut stack);
        }
    }
});

/// A fresh directory per input (socket paths must not collide), removed
/// when the input is done.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "slipway-fuzz-framing-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}
