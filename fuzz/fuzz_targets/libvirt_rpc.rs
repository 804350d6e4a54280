//! Bytes a libvirt client sends to `slipway daemon`'s libvirt sockets: the
//! first byte picks the size of the pieces the stream arrives in, the rest
//! is the stream. Every message goes through `FrameReader` and a real
//! `Session` over a `Manager` (recording backend, its own temporary root),
//! first on a read-write then on a read-only connection; every procedure's
//! argument decoder also sees every payload. Each message sent back must be
//! framed (its length word its length) and a reply must repeat its call's
//! serial and procedure.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slipway_netmgr::{Manager, Paths, RecordingBackend};
use slipway_virtrpc::dispatch::{Context, DhcpLease, LeaseSource};
use slipway_virtrpc::message::{Frame, FrameReader, Header, MAX_BUFFERED, MAX_BUFFERED_READ_ONLY};
use slipway_virtrpc::procs::{Call, PROCEDURES};
use slipway_virtrpc::Session;

struct NoLeases;

impl LeaseSource for NoLeases {
    fn leases(&self, _: &str) -> Result<Vec<DhcpLease>, String> {
        Ok(Vec::new())
    }
}

fn manager() -> &'static Manager {
    static M: OnceLock<Manager> = OnceLock::new();
    M.get_or_init(|| {
        // One directory, emptied at each start, so runs do not pile up.
        let root = std::env::temp_dir().join("slipway-fuzz-libvirt_rpc");
        let _ = std::fs::remove_dir_all(&root);
        Manager::new(Paths::detect(Some(&root)), Box::new(RecordingBackend))
    })
}

fn check(sent: &[Vec<u8>], call: Option<&Header>) {
    for (i, m) in sent.iter().enumerate() {
        let len = u32::from_be_bytes(m[..4].try_into().unwrap()) as usize;
        assert_eq!(len, m.len(), "length word");
        let (h, _) = Header::decode(&m[4..]).expect("a header");
        if let (0, Some(c)) = (i, call) {
            if h.kind == 1 {
                assert_eq!((h.serial, h.proc_), (c.serial, c.proc_));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let ctx = Context {
        manager: manager(),
        leases: &NoLeases,
        uri: "network:///system",
        max_callbacks: 64,
    };
    for readonly in [false, true] {
        let mut session = Session::new(readonly);
        let mut reader = FrameReader::with_limit(if readonly {
            MAX_BUFFERED_READ_ONLY
        } else {
            MAX_BUFFERED
        });
        'stream: for chunk in stream.chunks(piece) {
            let mut chunk = chunk;
            while !chunk.is_empty() {
                let Ok((used, frame)) = reader.push(chunk) else {
                    break 'stream;
                };
                chunk = &chunk[used..];
                let Some(frame) = frame else { continue };
                let header = match &frame {
                    Frame::Whole(b) => Header::decode(b).ok().map(|(h, payload)| {
                        for p in PROCEDURES {
                            let _ = Call::decode(p.num, payload);
                        }
                        h
                    }),
                    Frame::Oversized(_) => None,
                };
                let out = session.handle(&ctx, frame);
                check(&out.send, header.as_ref());
                for ev in &out.events {
                    check(&session.event_messages(ev), None);
                }
                if out.close {
                    break 'stream;
                }
            }
        }
    }
});
