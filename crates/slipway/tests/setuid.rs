//! Privileged installs, as a user of the machine meets them. Copies of the
//! binaries are installed root-owned with the setuid bit (or setgid, or
//! `cap_net_admin+ep`) and run as `nobody`:
//!
//! - `slipway` refuses to run at all, whatever the subcommand or the name
//!   it is run under;
//! - `slipway-bridge-helper` runs as its caller with CAP_NET_ADMIN only,
//!   reads only /etc/qemu/bridge.conf (relative includes beside it),
//!   ignores its environment and working directory, refuses bridges the
//!   ACL does not allow, and hands back a tap attached to one it allows.
//!
//! Runs as root (as CI does), each test in a network namespace of its own;
//! each helper run gets a mount namespace where /etc is an overlay holding
//! the test's /etc/qemu, so the machine's /etc is never touched.
//!
//! Needs: util-linux (unshare, setpriv), libcap2-bin (setcap), iproute2,
//! the kernel's overlayfs.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use slipway_testkit::netns::sh;

mod net_common;

use net_common::{enter_netns, Ns};

const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");
const HELPER: &str = env!("CARGO_BIN_EXE_slipway-bridge-helper");
/// The unprivileged user the copies are run as.
const NOBODY: &str = "65534";

/// A directory for installed copies, on a filesystem that honours the
/// setuid bit (the system temp directory, or the target directory when
/// that one is mounted nosuid), readable by everyone.
fn install_dir() -> tempfile::TempDir {
    slipway_testkit::setuid_temp_dir(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Installs a root-owned copy of `bin` as `dir/name` with `mode` (the
/// setuid and setgid bits included) and, with `file_caps`, those file
/// capabilities (`setcap`).
fn install(bin: &str, dir: &Path, name: &str, mode: u32, file_caps: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    fs::copy(bin, &path).unwrap();
    std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    chmod(&path, mode);
    if let Some(caps) = file_caps {
        let out = Command::new("setcap")
            .arg(caps)
            .arg(&path)
            .output()
            .expect("run setcap (Debian package libcap2-bin)");
        assert!(out.status.success(), "{out:?}");
    }
    path
}

/// `setpriv` switching fully to nobody, as a user's shell would run things.
fn as_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups");
    c
}

/// The subcommands `slipway --help` lists (and the hidden `net-service`).
fn subcommands() -> Vec<String> {
    let out = Command::new(SLIPWAY).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut subs: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    subs.push("net-service".into());
    assert!(
        subs.len() > 10 && subs.iter().any(|s| s == "launch"),
        "{help}"
    );
    subs
}

#[test]
fn privileged_slipway_refuses_every_subcommand() {
    enter_netns!(Ns::Root);
    let dir = install_dir();
    let d = dir.path();
    let setuid = install(SLIPWAY, d, "slipway", 0o4755, None);
    let copies = [
        setuid.clone(),
        install(SLIPWAY, d, "slipway-setgid", 0o2755, None),
        install(SLIPWAY, d, "slipway-caps", 0o755, Some("cap_net_admin+ep")),
    ];
    // Under another tool's name too (it used to stand in for it).
    for name in ["slirp4netns", "qemu-bridge-helper"] {
        std::os::unix::fs::symlink(&setuid, d.join(name)).unwrap();
    }
    // A place nobody may write to, so that a refusal is the only reason
    // the marker is missing.
    let out = d.join("out");
    fs::create_dir(&out).unwrap();
    chmod(&out, 0o777);
    let marker = out.join("ran");
    let xml = d.join("x.xml");
    fs::write(&xml, "<domain><name>x</name><devices/></domain>\n").unwrap();
    let launch: Vec<String> = vec![
        "launch".into(),
        xml.display().to_string(),
        "--".into(),
        "/usr/bin/touch".into(),
        marker.display().to_string(),
    ];
    let mut runs: Vec<Vec<String>> = vec![vec![], vec!["--version".into()], launch];
    runs.extend(subcommands().into_iter().map(|s| vec![s, "--help".into()]));
    let mut bins: Vec<PathBuf> = copies.to_vec();
    bins.extend([d.join("slirp4netns"), d.join("qemu-bridge-helper")]);
    for bin in &bins {
        for args in &runs {
            let o = as_nobody()
                .arg(bin)
                .args(args)
                .current_dir(&out)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(126), "{bin:?} {args:?}: {err}");
            assert!(o.stdout.is_empty(), "{bin:?} {args:?} printed output");
            assert!(
                err.contains("refusing to run setuid") && err.contains("slipway-bridge-helper"),
                "{bin:?} {args:?}: {err}"
            );
        }
    }
    assert!(!marker.exists(), "launch ran its command");

    // Unprivileged under the helper's old name: it says which program is.
    let plain = d.join("plain");
    fs::create_dir(&plain).unwrap();
    std::os::unix::fs::symlink(SLIPWAY, plain.join("qemu-bridge-helper")).unwrap();
    let o = Command::new(plain.join("qemu-bridge-helper"))
        .args(["--use-vnet", "--br=br0", "--fd=3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("install slipway-bridge-helper as qemu-bridge-helper"),
        "{err}"
    );
}

/// A private /etc for one helper run: the machine's, with `qemu/` from
/// this directory overlaid.
struct Etc {
    dir: tempfile::TempDir,
}

impl Etc {
    /// `files`: (name in /etc/qemu, content).
    fn new(files: &[(&str, &str)]) -> Etc {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let qemu = dir.path().join("upper/qemu");
        fs::create_dir_all(&qemu).unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        chmod(&dir.path().join("upper"), 0o755);
        chmod(&qemu, 0o755);
        for (name, text) in files {
            fs::write(qemu.join(name), text).unwrap();
        }
        // /dev/net/tun as distributions ship it, open to everyone (the
        // kernel checks CAP_NET_ADMIN when a tap is made); a container's
        // may be root's only.
        let tun = dir.path().join("tun");
        let c = std::ffi::CString::new(tun.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the tun device's numbers.
        let made =
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 200)) };
        assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
        chmod(&tun, 0o666);
        Etc { dir }
    }

    /// The real path of /etc/qemu/`name` as the helper sees it.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("upper/qemu").join(name)
    }

    /// `helper ARGS` as nobody, in a mount namespace of its own where /etc
    /// is this overlay (and /dev/net/tun the node above), in `cwd`, with
    /// exactly the environment `env`.
    /// Every step execs the next, so the child's pid is the helper's.
    fn command(&self, helper: &Path, args: &[&str], cwd: &Path, env: &[String]) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t overlay overlay -o \"lowerdir=/etc,upperdir=$1,workdir=$2\" /etc \
                 && mount --bind \"$3\" /dev/net/tun && shift 3 && exec \"$@\"",
            )
            .arg("sh")
            .arg(self.dir.path().join("upper"))
            .arg(self.dir.path().join("work"))
            .arg(self.dir.path().join("tun"))
            .arg("setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "/usr/bin/env", "-i"])
            .args(env)
            .arg(helper)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

/// Names of the links in this namespace.
fn links() -> String {
    sh("ip -o link show | cut -d: -f2 | sort")
}

/// The tap name of a tun/tap descriptor (its fdinfo's `iff:` line).
fn tap_name(fd: &OwnedFd) -> String {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .unwrap_or_else(|| panic!("not a tap: {info}"))
        .trim()
        .to_string()
}

/// Receives the descriptor the helper (ended) left on `sock`.
fn recv_fd(sock: &UnixStream) -> OwnedFd {
    sock.set_nonblocking(true).unwrap();
    let (n, fd) = slipway_host::fdpass::recv_fd(sock.as_raw_fd(), &mut [0u8; 1]).unwrap();
    assert_eq!(n, 1);
    fd.expect("a descriptor")
}

fn output(child: Child) -> (Output, String) {
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, err)
}

/// A directory of programs named like the ones a careless helper would
/// run from PATH; each leaves a marker.
fn hostile_path(d: &Path) -> (PathBuf, PathBuf) {
    let bin = d.join("evil-bin");
    fs::create_dir(&bin).unwrap();
    chmod(&bin, 0o755);
    let marker = d.join("evil-ran");
    for name in ["ip", "nft", "modprobe", "tc", "sh", "brctl", "iptables"] {
        let p = bin.join(name);
        fs::write(
            &p,
            format!("#!/bin/sh\necho \"$0\" >> {}\n", marker.display()),
        )
        .unwrap();
        chmod(&p, 0o755);
    }
    (bin, marker)
}

#[test]
fn setuid_helper_keeps_only_net_admin_and_attaches_an_allowed_bridge() {
    enter_netns!(Ns::Root);
    sh("ip link add brok type bridge && ip link set brok mtu 1400 up");
    let dir = install_dir();
    let d = dir.path();
    let helper = install(HELPER, d, "qemu-bridge-helper", 0o4755, None);
    let (evil, evil_marker) = hostile_path(d);
    let env = [
        format!("PATH={}", evil.display()),
        "RUST_LOG=trace".to_string(),
        "RUST_BACKTRACE=full".to_string(),
    ];
    // The ACL's last include is a FIFO: the helper blocks reading it, with
    // its privileges as they will be when it creates the tap.
    let etc = Etc::new(&[("bridge.conf", "include wait.conf\n")]);
    let fifo = etc.file("wait.conf");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let (mine, theirs) = UnixStream::pair().unwrap();
    let mut child = etc
        .command(&helper, &["--use-vnet", "--br=brok", "--fd=0"], d, &env)
        .stdin(OwnedFd::from(theirs))
        .spawn()
        .unwrap();
    let pid = child.id();
    // Opening the FIFO's write end succeeds once the helper has it open
    // (through the helper's own /etc: an overlay's FIFO is its own pipe).
    let fifo_there = PathBuf::from(format!("/proc/{pid}/root/etc/qemu/wait.conf"));
    let end = Instant::now() + Duration::from_secs(60);
    let mut writer = loop {
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo_there)
        {
            Ok(f) => break f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::ENOENT)) => {
                if child.try_wait().unwrap().is_some() || Instant::now() > end {
                    let _ = child.kill();
                    let (o, err) = output(child);
                    panic!("the helper never read the ACL: {:?} {err}", o.status);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{}: {e}", fifo_there.display()),
        }
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Name:"), "qemu-bridge-hel", "{status}");
    assert_eq!(field("Uid:"), "65534 65534 65534 65534", "{status}");
    assert_eq!(field("Gid:"), "65534 65534 65534 65534", "{status}");
    let net_admin = format!("{:016x}", 1u64 << 12 /* CAP_NET_ADMIN */);
    assert_eq!(field("CapEff:"), net_admin, "{status}");
    assert_eq!(field("CapPrm:"), net_admin, "{status}");
    for set in ["CapInh:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(set), "0000000000000000", "{set} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");

    writer.write_all(b"allow brok\n").unwrap();
    drop(writer);
    let (o, err) = output(child);
    assert!(o.status.success(), "{err}");
    let tap = recv_fd(&mine);
    // Nothing from the environment: no log output, no program run.
    assert_eq!(err, "");
    assert!(
        !evil_marker.exists(),
        "{:?}",
        fs::read_to_string(&evil_marker)
    );
    let name = tap_name(&tap);
    let link = sh(&format!("ip -o link show dev {name}"));
    assert!(
        link.contains("master brok") && link.contains("mtu 1400"),
        "{link}"
    );

    // Installed with file capabilities instead: the same, as its caller.
    let capped = install(HELPER, d, "helper-caps", 0o755, Some("cap_net_admin+ep"));
    let etc = Etc::new(&[("bridge.conf", "allow brok\n")]);
    let (mine, theirs) = UnixStream::pair().unwrap();
    let child = etc
        .command(&capped, &["--br=brok", "--fd=0"], d, &env)
        .stdin(OwnedFd::from(theirs))
        .spawn()
        .unwrap();
    let (o, err) = output(child);
    assert!(o.status.success(), "{err}");
    let tap2 = recv_fd(&mine);
    let link = sh(&format!("ip -o link show dev {}", tap_name(&tap2)));
    assert!(link.contains("master brok"), "{link}");
    assert!(!evil_marker.exists());
}

#[test]
fn setuid_helper_refuses_bridges_the_acl_does_not_allow() {
    enter_netns!(Ns::Root);
    for br in ["brok", "brno", "brother"] {
        sh(&format!(
            "ip link add {br} type bridge && ip link set {br} up"
        ));
    }
    let dir = install_dir();
    let d = dir.path();
    let copies = [
        install(HELPER, d, "qemu-bridge-helper", 0o4755, None),
        install(HELPER, d, "helper-caps", 0o755, Some("cap_net_admin+ep")),
    ];
    // /etc/qemu/bridge.conf includes more.conf, relative: the one beside
    // it, which denies brno. The caller's working directory has its own
    // more.conf that would allow everything.
    let etc = Etc::new(&[
        ("bridge.conf", "allow brok\nallow brno\ninclude more.conf\n"),
        ("more.conf", "deny brno\n"),
    ]);
    let cwd = d.join("cwd");
    fs::create_dir(&cwd).unwrap();
    chmod(&cwd, 0o755);
    fs::write(cwd.join("more.conf"), "allow all\n").unwrap();
    let allow_all = cwd.join("allow-all.conf");
    fs::write(&allow_all, "allow all\n").unwrap();
    let acl_opt = format!("--acl={}", allow_all.display());
    let before = links();
    for helper in &copies {
        for (args, refusal) in [
            (
                vec!["--br=brno", "--fd=0"],
                "access denied by acl file: bridge brno is not allowed by /etc/qemu/bridge.conf",
            ),
            (
                vec!["--br=brother", "--fd=0"],
                "access denied by acl file: bridge brother",
            ),
            (
                vec!["--br=brother", "--fd=0", acl_opt.as_str()],
                "--acl is refused when running setuid/setgid or with file capabilities",
            ),
        ] {
            let (mine, theirs) = UnixStream::pair().unwrap();
            let child = etc
                .command(helper, &args, &cwd, &[])
                .stdin(OwnedFd::from(theirs))
                .spawn()
                .unwrap();
            let (o, err) = output(child);
            assert_eq!(o.status.code(), Some(1), "{helper:?} {args:?}: {err}");
            assert!(err.contains(refusal), "{helper:?} {args:?}: {err}");
            drop(mine);
            assert_eq!(links(), before, "{helper:?} {args:?} left a link");
        }
    }
}
