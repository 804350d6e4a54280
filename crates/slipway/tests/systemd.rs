//! slipway under systemd, against systemd's own tools where a whole
//! systemd cannot run (a container without systemd as PID 1):
//!
//! - socket activation with `systemd-socket-activate` (systemd's tool that
//!   passes a listening socket as systemd does: LISTEN_FDS, LISTEN_PID,
//!   LISTEN_FDNAMES) in front of the daemon;
//! - `Type=notify` readiness with a NOTIFY_SOCKET the test listens on, for
//!   the daemon and `slipway user`;
//! - the system unit's CapabilityBoundingSet= applied with `setpriv
//!   --bounding-set` to a daemon that starts and destroys a network;
//! - the `slipway-user@.service` template's command line, expanded as
//!   systemd expands it for an instance.
//!
//! Tests that run a daemon do it in a network namespace of their own.
//! Needs: systemd (systemd-socket-activate), util-linux (unshare, setpriv),
//! iproute2, nftables; the capability test runs as root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod net_common;
use net_common::{alive, enter_netns, in_netns, ok, service_pid, sw, write, Daemon, Ns, BIN};
use slipway_testkit::netns::{sh, wait_for};
use slipway_testkit::KillOnDrop;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A NOTIFY_SOCKET of the test's, as systemd's manager would listen.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        NotifySocket {
            _dir: dir,
            path,
            socket,
        }
    }

    /// The next notification, as text.
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within 60 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Starts `cmd` (output discarded) with NOTIFY_SOCKET set to this socket.
    fn spawn(&self, cmd: &mut Command) -> KillOnDrop {
        KillOnDrop(
            cmd.env("NOTIFY_SOCKET", &self.path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// A daemon behind `systemd-socket-activate`, which listens on `socket`.
struct Activated {
    socket: PathBuf,
    /// The daemon's log.
    log: PathBuf,
    /// Where the daemon's readiness and stopping notifications arrive.
    notify: NotifySocket,
    daemon: KillOnDrop,
}

/// `systemd-socket-activate --listen=SOCKET [socket_args] -- slipway --root
/// ROOT -v daemon` with NOTIFY_SOCKET passed through, SOCKET being `root`'s
/// daemon socket; returns once the socket is there.
fn activate(root: &Path, socket_args: &[&str]) -> Activated {
    let socket = root.join("run/slipway/slipway-sock");
    fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let log = root.join("daemon.log");
    let notify = NotifySocket::new();
    let child = Command::new("systemd-socket-activate")
        .arg(format!("--listen={}", socket.display()))
        .args(socket_args)
        .args(["-E", "NOTIFY_SOCKET", BIN, "--root"])
        .arg(root)
        .args(["-v", "daemon"])
        .env("NOTIFY_SOCKET", &notify.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    let daemon = KillOnDrop(child);
    wait_for("the activation socket", || socket.exists());
    Activated {
        socket,
        log,
        notify,
        daemon,
    }
}

#[test]
fn daemon_is_socket_activated_and_notifies() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Activated {
        socket,
        log,
        notify,
        mut daemon,
    } = activate(root, &["--fdname=json"]);
    let inode = fs::metadata(&socket).unwrap().ino();
    // The first connection starts the daemon (systemd-socket-activate
    // execs it then), which serves it on the socket it was given.
    write(
        root,
        "n.xml",
        "<network><name>n1</name><bridge name='swa0'/></network>",
    );
    assert_eq!(
        ok(root, &["net-define", "n.xml"]),
        "Network n1 defined from n.xml\n\n"
    );
    let ready = notify.next();
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=serving {}", socket.display()),
        "log:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(ok(root, &["net-list", "--all", "--name"]).contains("n1"));
    // Served on systemd's socket: the file is not replaced.
    assert_eq!(fs::metadata(&socket).unwrap().ino(), inode);
    let status = daemon.terminate().unwrap();
    assert!(status.success(), "daemon exit on SIGTERM: {status}");
    let stopping = notify.next();
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=stopping: SIGTERM received"),
        "{stopping}"
    );
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("slipway daemon stopping: SIGTERM received"),
        "{log}"
    );
    assert!(log.contains("slipway daemon stopped"), "{log}");
    // systemd's socket file stays: its unit owns it.
    assert_eq!(fs::metadata(&socket).unwrap().ino(), inode);
}

#[test]
fn daemon_refuses_sockets_it_does_not_serve() {
    enter_netns!(Ns::User);
    let cases: [(&[&str], &str); 2] = [
        (
            &["--fdname=libvirt"],
            "socket activation: systemd passed sockets but none named 'json'",
        ),
        (
            &["--datagram", "--fdname=json"],
            "is not a listening unix stream socket",
        ),
    ];
    for (extra, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let Activated {
            socket,
            log,
            notify: _notify,
            mut daemon,
        } = activate(root, extra);
        // A stream socket activates on a connection, a datagram one on a datagram.
        if extra.contains(&"--datagram") {
            let _ = UnixDatagram::unbound().unwrap().send_to(b"x", &socket);
        } else {
            let _ = std::os::unix::net::UnixStream::connect(&socket);
        }
        let status = daemon.0.wait().unwrap();
        daemon.0 = Command::new("true").spawn().unwrap();
        assert_eq!(status.code(), Some(1), "{extra:?}");
        let log = fs::read_to_string(&log).unwrap();
        assert!(log.contains(want), "{extra:?}: {log}");
    }
}

#[test]
fn user_notifies_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vm.sock");
    let notify = NotifySocket::new();
    let mut user = notify.spawn(Command::new(BIN).args(["user", "--socket"]).arg(&socket));
    assert_eq!(
        notify.next(),
        format!("READY=1\nSTATUS=listening on {}", socket.display())
    );
    // Ready means ready: QEMU can connect at once.
    std::os::unix::net::UnixStream::connect(&socket).unwrap();
    assert!(user.terminate().unwrap().success());
    assert_eq!(
        notify.next(),
        "STOPPING=1\nSTATUS=stopping: SIGTERM received"
    );
}

/// The values of `KEY=` lines in a unit file, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

#[test]
fn unit_capability_bounding_set_is_enough_for_a_network() {
    enter_netns!(Ns::Root);
    sh("ip link set lo up");
    let unit = fs::read_to_string(repo().join("dist/systemd/system/slipway.service")).unwrap();
    let caps = unit_values(&unit, "CapabilityBoundingSet");
    assert_eq!(caps.len(), 1, "{caps:?}");
    let caps: Vec<&str> = caps[0].split_whitespace().collect();
    assert_eq!(network_cycle(&caps, 0), Ok(()));
    // Each cycle on a bridge and subnet of its own, so that what a failed
    // one left does not fail the next.
    for (n, dropped) in (1..).zip(&caps) {
        let fewer: Vec<&str> = caps.iter().copied().filter(|c| c != dropped).collect();
        assert!(
            network_cycle(&fewer, n).is_err(),
            "{dropped} is in the unit's CapabilityBoundingSet= but a network works without it"
        );
        // What a failed cycle left running in the namespace goes with it.
        net_common::kill_others_in_netns();
    }
}

/// Starts a daemon bounded to `caps`, then starts and destroys a network
/// with it (bridge `swbN`, 10.47.N.0/24); says what failed.
fn network_cycle(caps: &[&str], n: u32) -> Result<(), String> {
    let bounding = std::iter::once("-all".to_owned())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let bounding_arg = format!("--bounding-set={bounding}");
    let daemon = Daemon::start_as(root, &[&bounding_arg, "--inh-caps=-all"]);
    let bnd = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let bnd = bnd
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .to_owned();
    assert_ne!(bnd.trim(), "CapBnd:\t000001ffffffffff", "not bounded");
    write(
        root,
        "lab.xml",
        &format!(
            "<network><name>lab</name><forward mode='nat'/><bridge name='swb{n}'/>\
             <ip address='10.47.{n}.1' prefix='24'><dhcp><range start='10.47.{n}.10' end='10.47.{n}.20'/></dhcp></ip>\
             <ip family='ipv6' address='fd47:{n}::1' prefix='64'/></network>"
        ),
    );
    ok(root, &["net-define", "lab.xml"]);
    let start = sw(root, &["net-start", "lab"]);
    if start.code != 0 {
        return Err(format!("net-start: {}", start.stderr));
    }
    let pid = service_pid(root, "lab");
    std::thread::sleep(Duration::from_millis(500));
    if !alive(pid) {
        return Err("the network's service died".into());
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    assert!(sh(&format!("ip addr show swb{n}")).contains(&format!("10.47.{n}.1/24")));
    let destroy = sw(root, &["net-destroy", "lab"]);
    if destroy.code != 0 {
        return Err(format!("net-destroy: {}", destroy.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() > deadline {
            return Err("the service outlived net-destroy".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(daemon);
    Ok(())
}

/// The template's ExecStart= for instance `vm1`, expanded as systemd
/// expands it: specifiers (%i, %t, %E), then `$OPTIONS` split at spaces
/// and `${NETDEV}` as one word, from the instance's EnvironmentFile=.
#[test]
fn user_template_runs_a_network_per_instance() {
    let unit = fs::read_to_string(repo().join("dist/systemd/user/slipway-user@.service")).unwrap();
    let config_home = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let expand = |s: &str| {
        s.replace("%i", "vm1")
            .replace("%t", runtime.path().to_str().unwrap())
            .replace("%E", config_home.path().to_str().unwrap())
    };
    let env_file = PathBuf::from(expand(&unit_values(&unit, "EnvironmentFile")[0]));
    fs::create_dir_all(env_file.parent().unwrap()).unwrap();
    fs::write(
        &env_file,
        "NETDEV=net=10.0.9.0/24,hostfwd=tcp:127.0.0.1:0-:22\nOPTIONS=--mtu 1400\n",
    )
    .unwrap();
    let vars: Vec<(String, String)> = fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let var = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // RuntimeDirectory= is made by systemd before ExecStart=.
    let run_dir = runtime
        .path()
        .join(unit_values(&unit, "RuntimeDirectory")[0].replace("%i", "vm1"));
    fs::create_dir_all(&run_dir).unwrap();
    let exec = expand(&unit_values(&unit, "ExecStart")[0]);
    let mut argv: Vec<String> = Vec::new();
    for word in exec.split_whitespace() {
        match word {
            "$OPTIONS" => argv.extend(var("OPTIONS").split_whitespace().map(str::to_owned)),
            "${NETDEV}" => argv.push(var("NETDEV")),
            w => argv.push(w.to_owned()),
        }
    }
    assert_eq!(argv[0], "/usr/bin/slipway");
    let notify = NotifySocket::new();
    let mut user = notify.spawn(Command::new(BIN).args(&argv[1..]));
    let sock = run_dir.join("sock");
    assert_eq!(
        notify.next(),
        format!("READY=1\nSTATUS=listening on {}", sock.display())
    );
    // The documented paths: the VM's socket and the control API.
    std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let forwards = Command::new(BIN)
        .args(["ctl", "--api"])
        .arg(run_dir.join("api"))
        .arg("forwards")
        .output()
        .unwrap();
    assert!(forwards.status.success(), "{forwards:?}");
    assert!(
        String::from_utf8_lossy(&forwards.stdout).contains(":22"),
        "{forwards:?}"
    );
    assert!(user.terminate().unwrap().success());
}

#[test]
fn unit_syscall_filter_and_address_families_allow_a_network() {
    in_netns(
        "unit_syscall_filter_and_address_families_allow_a_network",
        Ns::Root,
        traced_daemon,
    );
}

/// The system calls of a group as this host's systemd defines it
/// (`systemd-analyze syscall-filter @GROUP`, nested groups included).
fn syscall_group(group: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", group])
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut calls = std::collections::BTreeSet::new();
    for word in text.split_whitespace() {
        if let Some(nested) = word.strip_prefix('@') {
            if nested != group.trim_start_matches('@') {
                calls.extend(syscall_group(word));
            }
        } else if !word.starts_with('#')
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            calls.insert(word.to_owned());
        }
    }
    calls
}

/// What systemd would refuse the daemon (and everything it runs: `nft`,
/// the network services) under the unit's SystemCallFilter= and
/// RestrictAddressFamilies=: none of it. The daemon runs under strace
/// through a network's start and destroy, as root; every system call and
/// socket family it and its children use must be allowed by the unit.
fn traced_daemon() {
    sh("ip link set lo up");
    let unit = fs::read_to_string(repo().join("dist/systemd/system/slipway.service")).unwrap();
    let mut allowed = std::collections::BTreeSet::new();
    for word in unit_values(&unit, "SystemCallFilter")[0].split_whitespace() {
        if word.starts_with('@') {
            allowed.extend(syscall_group(word));
        } else {
            allowed.insert(word.to_owned());
        }
    }
    let families: Vec<String> = unit_values(&unit, "RestrictAddressFamilies")[0]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let trace = root.join("strace.out");
    let mut daemon = KillOnDrop(
        Command::new("strace")
            .args(["-f", "-qq", "-e", "signal=none", "-o"])
            .arg(&trace)
            .args(["--", BIN, "--root"])
            .arg(root)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace (Debian package strace)"),
    );
    wait_for("the traced daemon", || net_common::status(root).is_some());
    write(
        root,
        "lab.xml",
        "<network><name>lab</name><forward mode='nat'/><bridge name='swt0'/>\
         <ip address='10.48.0.1' prefix='24'><dhcp><range start='10.48.0.10' end='10.48.0.20'/></dhcp></ip>\
         <ip family='ipv6' address='fd48::1' prefix='64'/></network>",
    );
    ok(root, &["net-define", "lab.xml"]);
    assert_eq!(ok(root, &["net-start", "lab"]), "Network lab started\n\n");
    let pid = service_pid(root, "lab");
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid));
    assert_eq!(
        ok(root, &["net-destroy", "lab"]),
        "Network lab destroyed\n\n"
    );
    // The daemon (strace's child) stops on SIGTERM; strace then ends too.
    let daemon_pid: i32 = fs::read_to_string(root.join("run/slipway/daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: plain kill(2) of the daemon this test started.
    unsafe { libc::kill(daemon_pid, libc::SIGTERM) };
    assert!(daemon.0.wait().unwrap().success());
    let trace = fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    let mut used_families = std::collections::BTreeSet::new();
    for line in trace.lines() {
        // "PID name(args) = ret", "PID <... name resumed> ...", "PID +++ exited"
        let Some((_, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        used.insert(name.to_owned());
        if name == "socket" || name == "socketpair" {
            used_families.insert(args.split(',').next().unwrap_or("").to_owned());
        }
    }
    assert!(
        used.contains("landlock_restrict_self") || used.contains("seccomp"),
        "{used:?}"
    );
    assert!(used.len() > 40, "too few calls traced: {used:?}");
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "system calls the unit's SystemCallFilter= refuses: {refused:?}"
    );
    let refused: Vec<&String> = used_families
        .iter()
        .filter(|f| !families.contains(f))
        .collect();
    assert!(
        refused.is_empty(),
        "socket families the unit's RestrictAddressFamilies= refuses: {refused:?}"
    );
}

/// libvirt's two sockets from systemd, as `slipway-virtnetworkd.socket`
/// and `slipway-virtnetworkd-ro.socket` pass them (the descriptor names of
/// libvirt's own `virtnetworkd.socket` and `virtnetworkd-ro.socket`),
/// without the JSON socket: virsh connects before the daemon runs, its
/// connection starts the daemon, which serves it on systemd's socket and
/// binds its JSON socket itself.
#[test]
fn libvirt_sockets_are_socket_activated() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let libvirt = root.join("run/libvirt");
    fs::create_dir_all(&libvirt).unwrap();
    let rw = libvirt.join("virtnetworkd-sock");
    let ro = libvirt.join("virtnetworkd-sock-ro");
    let log = root.join("daemon.log");
    let notify = NotifySocket::new();
    let mut daemon = KillOnDrop(
        Command::new("systemd-socket-activate")
            .arg(format!("--listen={}", rw.display()))
            .arg(format!("--listen={}", ro.display()))
            .arg("--fdname=virtnetworkd.socket:virtnetworkd-ro.socket")
            .args(["-E", "NOTIFY_SOCKET", BIN, "--root"])
            .arg(root)
            .args(["-v", "daemon"])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("systemd-socket-activate (Debian package systemd)"),
    );
    wait_for("the activation sockets", || rw.exists() && ro.exists());
    let inodes = [&rw, &ro].map(|p| fs::metadata(p).unwrap().ino());
    // Nothing runs yet: no daemon socket, no lock.
    assert!(!root.join("run/slipway/slipway-sock").exists());
    let vsh = |socket: &Path, args: &[&str]| {
        let uri = format!("network:///system?socket={}", socket.display());
        let mut cmd = Command::new("virsh");
        if socket == ro {
            cmd.arg("-r");
        }
        let out = cmd
            .args(["-c", &uri])
            .args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .expect("virsh (Debian package libvirt-clients)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write(
        root,
        "n.xml",
        "<network><name>n1</name><bridge name='swa1'/></network>",
    );
    // The first connection, virsh's, starts the daemon.
    let (code, out, err) = vsh(&rw, &["net-define", "n.xml"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "Network n1 defined from n.xml\n\n"),
        "{err}\nlog:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        notify.next(),
        format!(
            "READY=1\nSTATUS=serving {}",
            root.join("run/slipway/slipway-sock").display()
        )
    );
    // Both APIs, one manager; the JSON socket bound by the daemon itself.
    let (_, list, _) = vsh(&rw, &["net-list", "--all"]);
    assert_eq!(list, ok(root, &["net-list", "--all"]));
    assert!(list.contains(" n1 "), "{list}");
    // The read-only socket is systemd's second one: it lists, refuses changes.
    let (code, out, _) = vsh(&ro, &["net-list", "--all", "--name"]);
    assert_eq!((code, out.as_str()), (Some(0), "n1\n\n"));
    let (code, _, err) = vsh(&ro, &["net-undefine", "n1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("read only access prevents"), "{err}");
    // Served on systemd's sockets: the files are not replaced.
    assert_eq!([&rw, &ro].map(|p| fs::metadata(p).unwrap().ino()), inodes);
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("libvirt RPC serving virtnetworkd.socket (from systemd)")
            && log_text.contains("libvirt RPC serving virtnetworkd-ro.socket (from systemd)"),
        "{log_text}"
    );
    assert!(daemon.terminate().unwrap().success());
    // systemd's socket files stay: their units own them.
    assert_eq!([&rw, &ro].map(|p| fs::metadata(p).unwrap().ino()), inodes);
}

/// A descriptor under libvirt's name that is not a listening unix stream
/// socket stops the daemon with a message naming it.
#[test]
fn a_bad_libvirt_socket_from_systemd_stops_the_daemon() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Activated {
        socket,
        log,
        notify: _notify,
        mut daemon,
    } = activate(root, &["--datagram", "--fdname=virtnetworkd.socket"]);
    let _ = UnixDatagram::unbound().unwrap().send_to(b"x", &socket);
    let status = daemon.0.wait().unwrap();
    daemon.0 = Command::new("true").spawn().unwrap();
    assert_eq!(status.code(), Some(1));
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(
            "socket activation: the socket systemd passed as 'virtnetworkd.socket' is not a listening unix stream socket"
        ),
        "{log}"
    );
}
