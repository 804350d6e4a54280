//! `slipway user` refuses bad command lines with a message naming the
//! option and the value, and exits non-zero without touching anything.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::Command;

mod common;

fn slipway_user(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("user")
        .args(args)
        .output()
        .expect("slipway runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sock() -> String {
    std::env::temp_dir()
        .join(format!("slipway-cli-{}.sock", std::process::id()))
        .display()
        .to_string()
}

#[test]
fn bad_options_name_the_option_and_value() {
    let path = sock();
    for (opts, needles) in [
        ("bogus=1", vec!["unknown option 'bogus'"]),
        ("tftp=", vec!["'tftp'", "empty"]),
        ("smbserver=10.0.2.4", vec!["'smbserver'", "needs smb=DIR"]),
        (
            "ipv6-prefix=fd00::x",
            vec!["'ipv6-prefix'", "fd00::x", "not an IPv6 address"],
        ),
        (
            "guestfwd=tcp:10.0.2.100:1234-file:/x",
            vec!["'guestfwd'", "tcp:10.0.2.100:1234-file:/x"],
        ),
        ("net=10.0.2.0/40", vec!["'net'", "10.0.2.0/40"]),
        ("dns=10.0.2.2", vec!["'dns'", "10.0.2.2"]),
        (
            "hostfwd=tcp::99999-:22",
            vec!["'hostfwd'", "tcp::99999-:22"],
        ),
        ("restrict=perhaps", vec!["'restrict'", "perhaps"]),
    ] {
        let (code, err) = slipway_user(&["--socket", &path, opts]);
        assert_ne!(code, 0, "{opts} accepted");
        for n in needles {
            assert!(err.contains(n), "{opts}: {err:?} lacks {n:?}");
        }
        assert!(
            !std::path::Path::new(&path).exists(),
            "{opts}: socket created"
        );
    }
}

#[test]
fn bad_flags_are_refused() {
    let path = sock();
    let (code, err) = slipway_user(&["--socket", &path, "--mtu", "67"]);
    assert_ne!(code, 0);
    assert!(err.contains("--mtu") && err.contains("67"), "{err}");
    let (code, err) = slipway_user(&["--socket", &path, "--mtu", "65521"]);
    assert_ne!(code, 0);
    assert!(err.contains("65521"), "{err}");
    let (code, err) = slipway_user(&["--socket", &path, "--redir", "tcp:5022-:22"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("'redir'") && err.contains("tcp:5022-:22"),
        "{err}"
    );
    let (code, err) = slipway_user(&["--socket", &path, "--dns-upstream", "nowhere"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--dns-upstream") && err.contains("nowhere"),
        "{err}"
    );
    // Exactly one attachment.
    let (code, _) = slipway_user(&[]);
    assert_ne!(code, 0);
    let (code, err) = slipway_user(&["--socket", &path, "--dgram", &path]);
    assert_ne!(code, 0);
    assert!(err.contains("--dgram") || err.contains("--socket"), "{err}");
    let (code, err) = slipway_user(&["--socket", &path, "--require-sandbox", "--no-sandbox"]);
    assert_ne!(code, 0);
    assert!(err.contains("--require-sandbox"), "{err}");
}

#[test]
fn a_forward_that_cannot_be_bound_is_fatal_and_named() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = sock() + "-fwd";
    let (code, err) = slipway_user(&[
        "--socket",
        &path,
        &format!("hostfwd=udp:127.0.0.1:{port}-:53"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn a_tcp_forward_that_cannot_be_bound_is_fatal_and_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = sock() + "-tcpfwd";
    let (code, err) = slipway_user(&[
        "--socket",
        &path,
        "--redir",
        &format!("tcp:{port}::22"),
        "restrict=on",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!(":{port}")), "{err}");
    assert!(!std::path::Path::new(&path).exists());
}

/// `--print-sandbox` prints how many system calls the sandbox allows, then
/// each one: the count matches the list, the data path's calls are in it,
/// and what an attacker would want is not.
#[test]
fn print_sandbox_lists_the_allowed_syscalls() {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["user", "--print-sandbox"])
        .output()
        .expect("slipway runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    let count: usize = head
        .strip_suffix(" system calls allowed")
        .unwrap_or_else(|| panic!("{head}"))
        .parse()
        .unwrap();
    let calls: Vec<&str> = lines.collect();
    assert_eq!(calls.len(), count, "{text}");
    for needed in ["recvmmsg", "sendmmsg", "epoll_pwait", "connect", "accept4"] {
        assert!(calls.contains(&needed), "{needed} missing:\n{text}");
    }
    for forbidden in [
        "execve", "fork", "clone", "ptrace", "mount", "setuid", "openat",
    ] {
        assert!(!calls.contains(&forbidden), "{forbidden} allowed:\n{text}");
    }
}

/// `slipway user` runs sandboxed by default once its socket is up (the
/// process serving the VM has a seccomp filter and no_new_privs), and
/// `--no-sandbox` opts out.
#[test]
fn user_runs_sandboxed_unless_told_not_to() {
    for (flag, sandboxed) in [
        (None, true),
        (Some("--require-sandbox"), true),
        (Some("--no-sandbox"), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.args(["user", "-v", "--dns-upstream", "127.0.0.1:53", "--socket"])
            .arg(&path)
            .args(flag)
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        // With the sandbox, "sandbox applied" is logged once it is on;
        // without, the socket's "waiting for the VM" is the last word.
        let wanted = if sandboxed {
            "sandbox applied"
        } else {
            "waiting for the VM"
        };
        let mut log = String::new();
        while !log.contains(wanted) {
            let mut line = String::new();
            use std::io::BufRead;
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "slipway ended:\n{log}"
            );
            log.push_str(&line);
        }
        // With a socket file to remove, the sandbox forks a parent that removes the
        // socket file at the end; the VM is served by its child.
        let pid = child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let server = children
            .split_whitespace()
            .next()
            .map_or(pid.to_string(), str::to_string);
        let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
        let seccomp = status.lines().find(|l| l.starts_with("Seccomp:")).unwrap();
        assert_eq!(
            seccomp.ends_with('2'),
            sandboxed,
            "{flag:?}: {seccomp}\n{log}"
        );
        assert!(Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success());
        assert!(child.wait().unwrap().success(), "{log}");
        assert!(!path.exists(), "socket file left behind");
    }
}

/// Resource caps are validated where they are typed.
#[test]
fn resource_caps_are_validated() {
    let path = sock();
    for n in ["0", "4097"] {
        let (code, err) = slipway_user(&["--socket", &path, "--max-dns-queries", n]);
        assert_eq!(code, 1);
        assert!(err.contains("--max-dns-queries"), "{err}");
    }
    let (code, err) = slipway_user(&["--socket", &path, "--max-tftp-transfers", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--max-tftp-transfers"), "{err}");
    for n in ["1001", "lots"] {
        let (code, err) = slipway_user(&["--socket", &path, "--busy-poll-us", n]);
        assert_eq!(code, 1, "--busy-poll-us {n} accepted");
        assert!(err.contains("--busy-poll-us"), "{err}");
    }
}

/// With a socket file, the sandbox forks a parent that cleans up the socket
/// file; when that parent is killed outright (SIGKILL, no chance to pass it
/// on), the sandboxed child serving the VM goes too instead of serving on,
/// orphaned.
#[test]
fn sandboxed_child_dies_with_its_parent() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // No fork without root: nothing to orphan (CI runs as root).
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["user", "-v", "--dns-upstream", "127.0.0.1:53", "--socket"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("sandbox applied") {
        let mut line = String::new();
        use std::io::BufRead;
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "slipway ended:\n{log}"
        );
        log.push_str(&line);
    }
    let pid = child.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let server: u32 = children
        .split_whitespace()
        .next()
        .expect("a child")
        .parse()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // Gone once the parent-death signal is delivered (a zombie until its
    // new parent reaps it counts as gone: no State R/S).
    let mut tries = 0;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{server}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if matches!(state, None | Some("Z") | Some("X")) {
            break;
        }
        tries += 1;
        assert!(
            tries < 1000,
            "sandboxed child {server} outlived its parent: {state:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Probes of `slipway user --socket` (a second `slipway user` on the same
/// path, a health check that connects and closes) do not end the network:
/// a VM that comes afterwards is answered, and that VM leaving ends it.
#[test]
fn probes_of_the_socket_do_not_end_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let p = path.display().to_string();
    let mut slipway = common::Slipway::start(&[
        "--dns-upstream".into(),
        "127.0.0.1:53".into(),
        "--socket".into(),
        p.clone(),
    ]);
    slipway.wait_for_listening();
    let (code, err) = slipway_user(&["--dns-upstream", "127.0.0.1:53", "--socket", &p]);
    assert_ne!(code, 0, "a second slipway on the same socket is refused");
    assert!(err.contains("listening on this socket"), "{err}");
    drop(UnixStream::connect(&path).unwrap());
    // A VM (QEMU's stream framing: 4-byte length, frame) asks for the
    // gateway's MAC.
    let mut vm = UnixStream::connect(&path).unwrap();
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    common::send_frame(&mut vm, &common::arp_request(mac, [10, 0, 2, 15]));
    vm.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut len = [0u8; 4];
    vm.read_exact(&mut len)
        .unwrap_or_else(|e| panic!("no answer to the VM ({e}):\n{}", slipway.log()));
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    vm.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..6], &mac, "the ARP reply comes to the VM");
    assert_eq!(&reply[12..14], &[0x08, 0x06]);
    drop(vm);
    slipway.wait_exit_ok();
}
