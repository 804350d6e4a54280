use super::*;
use proptest::prelude::*;

fn rrq(file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(file.as_bytes());
    p.extend_from_slice(b"\0octet\0");
    for (n, v) in options {
        p.extend_from_slice(n.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

fn ack(block: u16) -> Vec<u8> {
    let mut p = vec![0, 4];
    p.extend_from_slice(&block.to_be_bytes());
    p
}

#[test]
fn requests_parse_with_options() {
    let r = parse_request(&rrq(
        "boot.ipxe",
        &[
            ("BLKSIZE", "1432"),
            ("tsize", "0"),
            ("timeout", "3"),
            ("x", "y"),
        ],
    ))
    .unwrap();
    assert_eq!(
        r,
        Request {
            file: "boot.ipxe".into(),
            blksize: Some(1432),
            tsize: true,
            timeout: Some(3),
        }
    );
}

#[test]
fn out_of_range_option_values_are_ignored_or_clamped() {
    let r = parse_request(&rrq(
        "f",
        &[
            ("blksize", "99999999999999999999"),
            ("timeout", "0"),
            ("tsize", "12"),
        ],
    ))
    .unwrap();
    assert_eq!((r.blksize, r.timeout, r.tsize), (None, None, false));
    let r = parse_request(&rrq("f", &[("blksize", "70000"), ("timeout", "256")])).unwrap();
    assert_eq!((r.blksize, r.timeout), (Some(MAX_BLKSIZE), None));
    let r = parse_request(&rrq("f", &[("blksize", "7")])).unwrap();
    assert_eq!(r.blksize, None);
}

#[test]
fn bad_requests_are_refused_with_the_right_code() {
    let code = |p: &[u8]| parse_request(p).unwrap_err().code;
    assert_eq!(code(b"\x00\x02f\x00octet\x00"), ErrorCode::AccessViolation);
    assert_eq!(code(b"\x00\x04\x00\x01"), ErrorCode::IllegalOperation);
    assert_eq!(
        code(b"\x00\x01f\x00netascii\x00"),
        ErrorCode::IllegalOperation
    );
    assert_eq!(code(b"\x00\x01"), ErrorCode::IllegalOperation);
    assert_eq!(code(b"\x00\x01f\x00octet"), ErrorCode::IllegalOperation);
    assert_eq!(
        code(b"\x00\x01f\x00octet\x00blksize\x00"),
        ErrorCode::IllegalOperation
    );
    for name in [
        "../etc/passwd",
        "a/../../b",
        "..",
        "/etc/passwd",
        "",
        &"a".repeat(MAX_FILE_NAME + 1),
    ] {
        assert_eq!(
            code(&rrq(name, &[])),
            ErrorCode::AccessViolation,
            "{name:?}"
        );
    }
}

#[test]
fn files_are_confined_to_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("root");
    std::fs::create_dir_all(inner.join("sub")).unwrap();
    std::fs::write(inner.join("sub/a"), "x").unwrap();
    std::fs::write(dir.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", inner.join("abs")).unwrap();
    std::os::unix::fs::symlink("../secret", inner.join("rel")).unwrap();
    std::os::unix::fs::symlink("sub/a", inner.join("inside")).unwrap();
    std::os::unix::fs::symlink("/proc/self/root/etc/hostname", inner.join("magic")).unwrap();
    let root = Root::open(&inner).unwrap();
    assert_eq!(root.open_file("sub/a").unwrap().1, 1);
    assert_eq!(
        root.open_file("inside").unwrap().1,
        1,
        "a link inside the root is fine"
    );
    for escape in ["abs", "rel", "magic", "sub/../../secret"] {
        assert_eq!(
            root.open_file(escape).unwrap_err().code,
            ErrorCode::AccessViolation,
            "{escape}"
        );
    }
    assert_eq!(
        root.open_file("missing").unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        root.open_file("sub").unwrap_err().code,
        ErrorCode::AccessViolation,
        "directories are not served"
    );
    assert!(Root::open(&dir.path().join("nope")).is_err());
}

/// Runs a whole transfer of `req` as a client that acknowledges every block
/// (dropping the first send of every 7th block), returning the data.
fn fetch(root: &Root, req: &Request, max_blksize: u16) -> Vec<u8> {
    let mut now = Instant::now();
    let mut t = Transfer::start(root, req, max_blksize, now).unwrap();
    let mut got = Vec::new();
    let mut expect: u16 = if t.packet()[1] == 6 { 0 } else { 1 };
    let mut dropped = false;
    loop {
        let p = t.packet().to_vec();
        let block = u16::from_be_bytes([p[2], p[3]]);
        if p[1] == 3 {
            assert_eq!(block, expect);
            if block % 7 == 0 && !dropped {
                dropped = true;
                now += t.deadline() - now;
                assert_eq!(t.on_timeout(now), Step::Send);
                continue;
            }
            dropped = false;
            got.extend_from_slice(&p[4..]);
        }
        // A duplicate of an older ACK changes nothing.
        assert_eq!(t.on_packet(&ack(expect.wrapping_sub(1)), now), Step::Wait);
        match t.on_packet(&ack(expect), now) {
            Step::Send => expect = expect.wrapping_add(1),
            Step::Finished => return got,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn transfers_deliver_the_file_with_and_without_options() {
    let dir = tempfile::tempdir().unwrap();
    // Exactly 3 blocks of 512: a final empty block ends the transfer.
    let exact: Vec<u8> = (0..1536u32).map(|i| (i * 7) as u8).collect();
    let odd: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
    std::fs::write(dir.path().join("exact"), &exact).unwrap();
    std::fs::write(dir.path().join("odd"), &odd).unwrap();
    std::fs::write(dir.path().join("empty"), "").unwrap();
    let root = Root::open(dir.path()).unwrap();
    let plain = parse_request(&rrq("exact", &[])).unwrap();
    assert_eq!(fetch(&root, &plain, MAX_BLKSIZE), exact);
    let big = parse_request(&rrq("odd", &[("blksize", "1468"), ("tsize", "0")])).unwrap();
    let t = Transfer::start(&root, &big, 1000, Instant::now()).unwrap();
    assert_eq!(
        t.packet(),
        b"\x00\x06blksize\x001000\x00tsize\x0010000\x00",
        "the block size is cut to what the path carries"
    );
    assert_eq!(fetch(&root, &big, 1000), odd);
    assert_eq!(fetch(&root, &plain_of("empty"), MAX_BLKSIZE), b"");
}

fn plain_of(name: &str) -> Request {
    parse_request(&rrq(name, &[])).unwrap()
}

#[test]
fn silence_ends_a_transfer_and_errors_end_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), vec![1u8; 2000]).unwrap();
    let root = Root::open(dir.path()).unwrap();
    let mut now = Instant::now();
    let mut t = Transfer::start(&root, &plain_of("f"), MAX_BLKSIZE, now).unwrap();
    for _ in 0..RETRIES {
        now = t.deadline();
        assert_eq!(t.on_timeout(now), Step::Send);
    }
    assert!(matches!(t.on_timeout(t.deadline()), Step::Failed(_)));
    let mut t = Transfer::start(&root, &plain_of("f"), MAX_BLKSIZE, now).unwrap();
    assert!(matches!(
        t.on_packet(&error_packet(ErrorCode::Undefined, "bye"), now),
        Step::Failed(_)
    ));
    assert_eq!(t.on_packet(b"\x00", now), Step::Wait);
}

proptest! {
    #[test]
    fn random_requests_never_panic(pkt in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_request(&pkt);
    }

    #[test]
    fn damaged_requests_never_panic_and_never_escape(
        name in "[a-z./]{0,12}",
        cut in 0usize..80,
        flips in prop::collection::vec((0usize..80, any::<u8>()), 0..4),
    ) {
        let mut p = rrq(&name, &[("blksize", "1468"), ("tsize", "0")]);
        for (at, b) in flips {
            if at < p.len() {
                p[at] = b;
            }
        }
        p.truncate(cut.max(2));
        if let Ok(r) = parse_request(&p) {
            prop_assert!(!r.file.starts_with('/'));
            prop_assert!(!r.file.split('/').any(|c| c == ".."));
        }
    }

    #[test]
    fn random_client_packets_never_panic(pkts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..30)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![1u8; 3000]).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let now = Instant::now();
        let mut t = Transfer::start(&root, &plain_of("f"), MAX_BLKSIZE, now).unwrap();
        for p in &pkts {
            let _ = t.on_packet(p, now);
        }
    }
}
