//! TFTP from a guest: a read request, then the client's packets (ACKs,
//! errors, junk) through a real transfer of a real file, with timeouts in
//! between, as the stack's TFTP service drives `slipway_tftp`.
//!
//! Input: records; the first is the request, the rest go to
//! `Transfer::on_packet`, and an empty record stands for a timeout. The
//! served root holds a small file, a file of several blocks, a directory
//! and a symlink out of the root.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slipway_tftp::{parse_request, Root, Step, Transfer};

fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("slipway-fuzz-tftp-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).expect("root");
        std::fs::write(root.join("a"), b"hello").expect("file");
        std::fs::write(root.join("sub/big"), vec![7_u8; 3 * 512 + 100]).expect("file");
        std::fs::write(dir.join("secret"), b"secret").expect("file");
        let _ = std::os::unix::fs::symlink("../secret", root.join("escape"));
        Root::open(&PathBuf::from(&root)).expect("root opens")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut records = slipway_fuzz::records(data);
    let Some(first) = records.next() else {
        return;
    };
    let Ok(req) = parse_request(first) else {
        return;
    };
    assert!(
        !req.file.is_empty() && !req.file.starts_with('/'),
        "{:?}",
        req.file
    );
    let mut now = Instant::now();
    let Ok(mut transfer) = Transfer::start(root(), &req, 1468, now) else {
        return;
    };
    assert!(
        !req.file.contains("escape"),
        "served through a symlink out of the root"
    );
    for pkt in records {
        now += Duration::from_millis(100);
        let step = if pkt.is_empty() {
            now = transfer.deadline();
            transfer.on_timeout(now)
        } else {
            transfer.on_packet(pkt, now)
        };
        assert!(
            transfer.bytes_sent() <= transfer.size(),
            "sent past the end"
        );
        match step {
            Step::Send | Step::Wait => assert!(transfer.packet().len() <= 4 + 1468),
            Step::Finished | Step::Failed(_) => return,
        }
    }
});
