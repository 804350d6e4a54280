//! The sandbox confines a real process: each test re-runs this test binary
//! as a child (`SLIPWAY_SANDBOX_CHILD` set) that applies the sandbox and
//! then tries what a compromised data path would try; the parent checks
//! the child's verdict. A child is needed because the sandbox cannot be
//! undone in the process that applied it.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

const CHILD: &str = "SLIPWAY_SANDBOX_CHILD";

/// Runs test `name` again in a child process with `arg`; returns its output.
fn in_child(name: &str, arg: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, arg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    text
}

fn child_arg() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD).map(Into::into)
}

/// A forbidden call fails with EPERM (the filter's documented action; the
/// process is not killed), while the data path's calls still work.
/// The value of field `name` (with its colon) of a `/proc/PID/status` text.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} in {status}"))
        .trim()
        .to_string()
}

#[test]
fn forbidden_syscalls_fail_with_eperm() {
    if child_arg().is_some() {
        let report = slipway_sandbox::Sandbox::new()
            .apply()
            .expect("sandbox applies");
        assert!(report.syscalls > 20, "{report:?}");
        // Allowed: a socket for a new flow.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("sockets still work");
        udp.send_to(b"x", udp.local_addr().unwrap()).expect("send");
        // Forbidden: running a program, opening a file, tracing, mounting.
        let err = Command::new("/bin/true")
            .status()
            .expect_err("exec forbidden");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        let err = std::fs::read("/etc/hostname").expect_err("open forbidden");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        for (name, nr) in [
            ("ptrace", libc::SYS_ptrace),
            ("mount", libc::SYS_mount),
            ("setuid", libc::SYS_setuid),
        ] {
            // SAFETY: forbidden calls return before doing anything.
            let rc = unsafe { libc::syscall(nr, 0, 0, 0, 0, 0) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert_eq!((rc, errno), (-1, Some(libc::EPERM)), "{name}");
        }
        println!("CHILD-OK");
        return;
    }
    let out = in_child("forbidden_syscalls_fail_with_eperm", Path::new("-"));
    assert!(out.contains("CHILD-OK"), "{out}");
}

/// A read-only tree (a TFTP root) can be read, but nothing outside it, not
/// even through a symlink that points out of it (neither by the TFTP
/// server's own resolution nor by a plain open, which only Landlock stops),
/// and nothing can be written.
#[test]
fn landlock_keeps_reads_inside_the_allowed_tree() {
    if let Some(dir) = child_arg() {
        let root = dir.join("root");
        // The TFTP server's own root, opened before the sandbox as the
        // stack does, serves what is inside and nothing through the link.
        let tftp = slipway_tftp::Root::open(&root).expect("TFTP root");
        slipway_sandbox::Sandbox::new()
            .allow_read(&root)
            .apply()
            .expect("sandbox applies");
        let (mut file, size) = tftp.open_file("inside").expect("TFTP serves inside");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!((text.as_str(), size), ("ok", 2));
        assert!(
            tftp.open_file("escape").is_err(),
            "TFTP followed the link out"
        );
        assert!(tftp.open_file("../outside/secret").is_err());
        assert_eq!(std::fs::read_to_string(root.join("inside")).unwrap(), "ok");
        for path in [root.join("escape"), dir.join("outside/secret")] {
            let err = std::fs::read(&path).expect_err("read outside the root");
            assert_eq!(
                err.kind(),
                ErrorKind::PermissionDenied,
                "{}",
                path.display()
            );
        }
        let err = std::fs::write(root.join("new"), "x").expect_err("write forbidden");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        println!("CHILD-OK");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("inside"), "ok").unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink("../outside/secret", root.join("escape")).unwrap();
    // Started as root the child becomes `nobody`: let plain permissions
    // allow everything, so only the sandbox can refuse.
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.path(), &root, &outside] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for p in [root.join("inside"), outside.join("secret")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let out = in_child("landlock_keeps_reads_inside_the_allowed_tree", dir.path());
    assert!(out.contains("CHILD-OK"), "{out}");
}

/// Started as root, the process ends up as an unprivileged user with no
/// capability left (not even in the bounding set), no_new_privs and a
/// seccomp filter: what the kernel reports for the sandboxed child.
#[test]
fn the_kernel_reports_the_confinement() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    if child_arg().is_some() {
        // Dumpable, as any program starts.
        slipway_sandbox::make_dumpable().unwrap();
        slipway_sandbox::Sandbox::new()
            .apply()
            .expect("sandbox applies");
        // The harness runs tests on a thread of their own, and capability
        // sets are per thread: the parent looks at this one.
        // SAFETY: gettid cannot fail.
        println!("READY {}", unsafe { libc::gettid() });
        // Wait for the parent to look, then end.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_kernel_reports_the_confinement",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    // libtest may print "test NAME ... " on the same line first.
    let tid = line.rsplit("READY ").next().unwrap().trim();
    let status =
        std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", child.id())).unwrap();
    // Not dumpable: its /proc files are root's, not its user's (another
    // than root: the test's, or the one root switched to).
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(format!("/proc/{}/environ", child.id())).unwrap(),
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let field = |name: &str| status_field(&status, name);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert!(!field("Uid:").starts_with('0'), "{status}");
        assert_eq!(field("CapBnd:"), "0000000000000000", "{status}");
    }
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("Seccomp:"), "2", "{status}");
    assert_eq!(owner, 0, "the sandboxed process is not dumpable");
}

/// A confined process is not dumpable, even one that switches no user (a
/// user's own slipway; programs start dumpable): before, its /proc files
/// are its user's; after, root's, and no process of that user (a
/// container's root) may trace it or take its descriptors.
#[test]
fn the_confined_process_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    const NAME: &str = "the_confined_process_is_not_dumpable";
    // SAFETY: geteuid and getuid cannot fail.
    let (root, uid) = unsafe { (libc::geteuid() == 0, libc::getuid()) };
    if let Some(dir) = child_arg() {
        // SAFETY: plain system calls with integer arguments.
        unsafe {
            if root {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
                assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
            }
        }
        slipway_sandbox::make_dumpable().unwrap();
        let owner = || std::fs::metadata("/proc/self/environ").unwrap().uid();
        let before = owner();
        slipway_sandbox::Sandbox::new()
            .allow_read(&dir)
            .apply()
            .expect("sandbox applies");
        println!("OWNER {before} {}", owner());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = in_child(NAME, dir.path());
    let me = if root { 65534 } else { uid };
    assert!(out.contains(&format!("OWNER {me} 0\n")), "{out}");
}

/// The bridge network service's profile: files are written (temporary file
/// and rename) only in the leases directory, read only there and in the
/// TFTP root; no thread, no process; no netlink, Unix or packet
/// socket; execve fails with EPERM. The kernel reports another user, only
/// CAP_NET_ADMIN (effective and permitted, none in the bounding set),
/// no_new_privs and a filter.
#[test]
fn network_service_profile_confines_the_service() {
    use std::io::{BufRead, BufReader};
    use std::os::fd::AsRawFd;
    use std::process::Stdio;
    const NAME: &str = "network_service_profile_confines_the_service";
    if let Some(dir) = child_arg() {
        let leases = dir.join("leases");
        let tftp = dir.join("tftp");
        // Opened (and handed over) while still root, as the service does.
        let leases_fd = std::fs::File::open(&leases).unwrap();
        let mut sandbox = slipway_sandbox::Sandbox::network_service();
        sandbox.allow_write_dir(&leases).allow_read(&tftp);
        sandbox.hand_over(&leases_fd).expect("hand over");
        let report = sandbox.apply().expect("sandbox applies");
        // Allowed: replacing the leases file, reading the TFTP root.
        std::fs::write(leases.join(".tmp"), "new").expect("write in the leases dir");
        std::fs::rename(leases.join(".tmp"), leases.join("leases.json")).expect("rename");
        assert_eq!(
            std::fs::read_to_string(leases.join("leases.json")).unwrap(),
            "new"
        );
        // SAFETY: fsync on a descriptor this test owns.
        assert_eq!(unsafe { libc::fsync(leases_fd.as_raw_fd()) }, 0);
        assert_eq!(std::fs::read_to_string(tftp.join("boot")).unwrap(), "ok");
        // Refused by Landlock: writing anywhere else, renaming out, reading
        // outside.
        for path in [dir.join("outside/new"), tftp.join("new"), dir.join("new")] {
            let err = std::fs::write(&path, "x").expect_err("write outside");
            assert_eq!(
                err.kind(),
                ErrorKind::PermissionDenied,
                "{}",
                path.display()
            );
        }
        let err = std::fs::rename(leases.join("leases.json"), dir.join("outside/moved"))
            .expect_err("rename out of the leases dir");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        let err = std::fs::read(dir.join("outside/secret")).expect_err("read outside");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        // Upstream sockets; no thread (one loop serves every client).
        std::net::UdpSocket::bind("127.0.0.1:0").expect("UDP over IPv4");
        std::net::TcpListener::bind("[::1]:0").expect("TCP over IPv6");
        let err = std::thread::Builder::new()
            .spawn(|| ())
            .expect_err("a thread starts");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        // Refused by seccomp: a program, a process, sockets other than IP.
        let err = Command::new("/bin/true").status().expect_err("exec");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        // SAFETY: a refused fork returns before doing anything; a child
        // (the filter failing) exits at once.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(0) };
        }
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((pid, errno), (-1, Some(libc::EPERM)), "fork");
        for (family, ty) in [
            (libc::AF_NETLINK, libc::SOCK_RAW),
            (libc::AF_UNIX, libc::SOCK_STREAM),
            (libc::AF_PACKET, libc::SOCK_RAW),
        ] {
            // SAFETY: plain socket(2).
            let fd = unsafe { libc::socket(family, ty, 0) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert_eq!(
                (fd, errno),
                (-1, Some(libc::EPERM)),
                "socket family {family}"
            );
        }
        println!(
            "READY {} {:#x}",
            // SAFETY: gettid cannot fail.
            unsafe { libc::gettid() },
            report.capabilities
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["leases", "tftp", "outside"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("tftp/boot"), "ok").unwrap();
    std::fs::write(dir.path().join("outside/secret"), "secret").unwrap();
    // Plain permissions allow everything but the leases directory (root's,
    // 0700, until handed over), so only the sandbox can refuse the rest.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    for p in ["", "tftp", "outside"] {
        mode(&dir.path().join(p), 0o777).unwrap();
    }
    mode(&dir.path().join("leases"), 0o700).unwrap();
    mode(&dir.path().join("outside/secret"), 0o666).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    let mut fields = line.rsplit("READY ").next().unwrap().split_whitespace();
    let (tid, caps) = (fields.next().unwrap(), fields.next().unwrap());
    let status =
        std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", child.id())).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let field = |name: &str| status_field(&status, name);
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("Seccomp:"), "2", "{status}");
    assert_eq!(field("CapInh:"), "0000000000000000", "{status}");
    assert_eq!(field("CapAmb:"), "0000000000000000", "{status}");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert!(!field("Uid:").starts_with('0'), "{status}");
        assert!(!field("Gid:").starts_with('0'), "{status}");
        assert_eq!(field("Groups:"), "", "{status}");
        assert_eq!(caps, "0x1000");
        assert_eq!(field("CapEff:"), "0000000000001000", "{status}");
        assert_eq!(field("CapPrm:"), "0000000000001000", "{status}");
        assert_eq!(field("CapBnd:"), "0000000000000000", "{status}");
    }
}

/// `socket()` with `family` and `kind`; the errno when it fails.
fn socket_errno(family: libc::c_int, kind: libc::c_int) -> Option<i32> {
    // SAFETY: socket with integer arguments; a descriptor made is closed.
    unsafe {
        let fd = libc::socket(family, kind | libc::SOCK_CLOEXEC, 0);
        if fd >= 0 {
            libc::close(fd);
            return None;
        }
    }
    std::io::Error::last_os_error().raw_os_error()
}

/// The sandboxed process reaches nothing through the filesystem or unix
/// sockets: no unix stream socket (a session bus, an agent, a listening
/// socket in its own directory, an abstract socket), no unix datagram
/// socket unless allowed, no netlink, packet or raw socket, no removal of
/// a file next to its own socket, while TCP and UDP over IPv4 and IPv6
/// work. Its own socket file is removed when it ends, by the parent the
/// sandbox forks.
#[test]
fn sockets_are_inet_only_and_no_file_is_removed() {
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    if let Some(dir) = child_arg() {
        let own = UnixListener::bind(dir.join("own.sock")).expect("own socket");
        let unix_dgram = dir.join("dgram").exists();
        let mut sandbox = slipway_sandbox::Sandbox::new();
        sandbox.remove_on_exit(dir.join("own.sock"));
        if unix_dgram {
            sandbox.allow_unix_datagrams(&dir);
        }
        sandbox.apply().expect("sandbox applies");
        let err = UnixStream::connect(dir.join("listener.sock")).expect_err("unix connect");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert_eq!(
            socket_errno(libc::AF_UNIX, libc::SOCK_STREAM),
            Some(libc::EPERM)
        );
        assert_eq!(
            socket_errno(libc::AF_UNIX, libc::SOCK_SEQPACKET),
            Some(libc::EPERM)
        );
        for (family, kind) in [
            (libc::AF_NETLINK, libc::SOCK_RAW),
            (libc::AF_PACKET, libc::SOCK_RAW),
            (libc::AF_INET, libc::SOCK_RAW),
            (libc::AF_INET6, libc::SOCK_RAW),
            (libc::AF_ALG, libc::SOCK_SEQPACKET),
        ] {
            assert_eq!(
                socket_errno(family, kind),
                Some(libc::EPERM),
                "family {family} type {kind}"
            );
        }
        if unix_dgram {
            let s = UnixDatagram::unbound().expect("unix datagrams allowed");
            s.connect(dir.join("peer.sock"))
                .expect("reaches a datagram VM");
        } else {
            assert_eq!(
                socket_errno(libc::AF_UNIX, libc::SOCK_DGRAM),
                Some(libc::EPERM)
            );
        }
        std::net::TcpListener::bind("127.0.0.1:0").expect("TCP");
        std::net::UdpSocket::bind("[::1]:0").expect("UDP over IPv6");
        let err = std::fs::remove_file(dir.join("sibling")).expect_err("unlink forbidden");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        let err = std::fs::remove_file(dir.join("own.sock")).expect_err("own socket too");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        drop(own);
        println!("CHILD-OK");
        return;
    }
    for unix_dgram in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let _listener = UnixListener::bind(d.join("listener.sock")).unwrap();
        let _peer = UnixDatagram::bind(d.join("peer.sock")).unwrap();
        std::fs::write(d.join("sibling"), "stays").unwrap();
        if unix_dgram {
            std::fs::write(d.join("dgram"), "").unwrap();
        }
        // Started as root the child becomes `nobody`: let plain
        // permissions allow everything, so only the sandbox can refuse.
        use std::os::unix::fs::PermissionsExt;
        for p in [
            d.to_path_buf(),
            d.join("listener.sock"),
            d.join("peer.sock"),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let out = in_child("sockets_are_inet_only_and_no_file_is_removed", d);
        assert!(out.contains("CHILD-OK"), "unix_dgram={unix_dgram}: {out}");
        assert!(d.join("sibling").exists());
        assert!(!d.join("own.sock").exists(), "the parent removed it");
    }
}

/// Unix datagrams reach only sockets in the allowed directory: a socket the
/// test bound in another directory (standing for the journal's or a
/// notify socket, writable by anyone) has no path the sandboxed process
/// can name, while a VM's socket in the directory is reached and an
/// allowed read-only tree is still read by path. Its own socket file is
/// still removed at exit (the cleaning parent stays in the real
/// filesystem). Run as the test's user and, when root, as an unprivileged
/// user too (a user namespace is then made first).
#[test]
fn unix_datagrams_reach_only_their_directory() {
    use std::os::unix::net::UnixDatagram;
    const NAME: &str = "unix_datagrams_reach_only_their_directory";
    if let Some(dir) = child_arg() {
        let vms = dir.join("vms");
        if dir.join("unprivileged").exists() {
            // SAFETY: plain system calls with integer arguments.
            unsafe {
                assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
                assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
            }
        }
        // As slipway runs: not dumpable, its /proc files root's, yet the
        // id maps of the user namespace it makes are written.
        slipway_sandbox::make_undumpable().unwrap();
        let own = UnixDatagram::bind(vms.join("own.sock")).expect("own socket");
        // Relative addresses stay relative to the working directory.
        std::env::set_current_dir(&vms).unwrap();
        let mut sandbox = slipway_sandbox::Sandbox::new();
        sandbox
            .remove_on_exit(vms.join("own.sock"))
            .allow_unix_datagrams(&vms)
            .allow_read(dir.join("tftp"))
            .require(true);
        let report = sandbox.apply().expect("sandbox applies");
        assert!(report.private_root, "{report:?}");
        let s = UnixDatagram::unbound().expect("unix datagrams allowed");
        s.send_to(b"in", vms.join("vm.sock"))
            .expect("reaches a VM in the directory");
        own.send_to(b"rel", "vm.sock").expect("relative address");
        for outside in [
            dir.join("outside/journal.sock"),
            vms.join("../outside/journal.sock"),
        ] {
            let err = s.send_to(b"out", &outside).expect_err("reached outside");
            assert_eq!(err.kind(), ErrorKind::NotFound, "{}", outside.display());
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("tftp/boot")).unwrap(),
            "ok"
        );
        drop(own);
        println!("CHILD-OK");
        return;
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    for unprivileged in [false, true] {
        if unprivileged && !root {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["vms", "outside", "tftp"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("tftp/boot"), "ok").unwrap();
        if unprivileged {
            std::fs::write(d.join("unprivileged"), "").unwrap();
        }
        let vm = UnixDatagram::bind(d.join("vms/vm.sock")).unwrap();
        let journal = UnixDatagram::bind(d.join("outside/journal.sock")).unwrap();
        // Plain permissions allow everything, so only the sandbox refuses.
        use std::os::unix::fs::PermissionsExt;
        for p in [
            "",
            "vms",
            "outside",
            "tftp",
            "vms/vm.sock",
            "outside/journal.sock",
        ] {
            std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::set_permissions(d.join("tftp/boot"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let out = in_child(NAME, d);
        assert!(
            out.contains("CHILD-OK"),
            "unprivileged={unprivileged}: {out}"
        );
        let mut buf = [0_u8; 8];
        let n = vm.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"in");
        let n = vm.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"rel");
        journal.set_nonblocking(true).unwrap();
        let err = journal.recv(&mut buf).expect_err("nothing arrived outside");
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        assert!(!d.join("vms/own.sock").exists(), "the parent removed it");
    }
}

/// Where the kernel refuses the namespaces (here a filter makes `unshare`
/// fail with EPERM, as `kernel.unprivileged_userns_clone=0` does),
/// `--require-sandbox` (required) makes it an error naming the gap;
/// otherwise the sandbox applies without the private root (a warning says
/// so) and other datagram sockets stay reachable.
#[test]
fn without_namespaces_datagrams_are_unconfined_or_with_require_an_error() {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    use std::os::unix::net::UnixDatagram;
    const NAME: &str = "without_namespaces_datagrams_are_unconfined_or_with_require_an_error";
    if let Some(dir) = child_arg() {
        let filter: BpfProgram = SeccompFilter::new(
            [(libc::SYS_unshare, vec![])].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            std::env::consts::ARCH.try_into().unwrap(),
        )
        .unwrap()
        .try_into()
        .unwrap();
        seccompiler::apply_filter(&filter).unwrap();
        let mut sandbox = slipway_sandbox::Sandbox::new();
        sandbox.allow_unix_datagrams(dir.join("vms")).require(true);
        let err = sandbox.apply().expect_err("required");
        let text = err.to_string();
        assert!(
            text.contains("--require-sandbox") && text.contains("vms"),
            "{text}"
        );
        let report = sandbox.require(false).apply().expect("applies without");
        assert!(!report.private_root, "{report:?}");
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"out", dir.join("outside.sock"))
            .expect("the gap the warning names");
        println!("CHILD-OK");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("vms")).unwrap();
    let outside = UnixDatagram::bind(dir.path().join("outside.sock")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in ["", "outside.sock"] {
        std::fs::set_permissions(dir.path().join(p), std::fs::Permissions::from_mode(0o777))
            .unwrap();
    }
    let out = in_child(NAME, dir.path());
    assert!(out.contains("CHILD-OK"), "{out}");
    let mut buf = [0_u8; 8];
    assert_eq!(outside.recv(&mut buf).unwrap(), 3);
}

/// Without Landlock the sandbox says what is missing; `--require-sandbox`
/// (required) makes it an error. (The kernel here has Landlock: a real
/// process shows the full state, the decision is checked for every state.)
#[test]
fn missing_landlock_is_a_warning_or_with_require_an_error() {
    use slipway_sandbox::LandlockState;
    for state in [LandlockState::Full, LandlockState::Partial] {
        assert!(slipway_sandbox::check_landlock(state, true).is_ok());
    }
    assert!(slipway_sandbox::check_landlock(LandlockState::Unsupported, false).is_ok());
    let err = slipway_sandbox::check_landlock(LandlockState::Unsupported, true).unwrap_err();
    assert!(err.to_string().contains("--require-sandbox"), "{err}");
}

/// A /proc table opened before the sandbox (pasta's `-t auto` reading the
/// namespace's sockets) is read again from its start only with
/// `allow_rereading`: without it the seek fails with EPERM.
#[test]
fn rereading_an_open_table_needs_allow_rereading() {
    use std::io::{Read, Seek, SeekFrom};
    if let Some(arg) = child_arg() {
        let allow = arg == Path::new("allow");
        let mut table = std::fs::File::open("/proc/self/net/tcp").expect("tcp table");
        let mut sandbox = slipway_sandbox::Sandbox::new();
        if allow {
            sandbox.allow_rereading();
        }
        sandbox.apply().expect("sandbox applies");
        let mut text = String::new();
        table.read_to_string(&mut text).expect("first read");
        let again = table
            .seek(SeekFrom::Start(0))
            .and_then(|_| table.read_to_string(&mut text));
        match (allow, again) {
            (true, Ok(_)) => println!("CHILD-OK"),
            (false, Err(e)) if e.raw_os_error() == Some(libc::EPERM) => println!("CHILD-OK"),
            (_, other) => println!("unexpected: {other:?}"),
        }
        return;
    }
    for arg in ["allow", "deny"] {
        let out = in_child(
            "rereading_an_open_table_needs_allow_rereading",
            Path::new(arg),
        );
        assert!(out.contains("CHILD-OK"), "{arg}: {out}");
    }
}
