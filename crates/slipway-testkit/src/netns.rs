//! Network namespaces for tests of host networking (bridges, firewall,
//! DHCP on a veth): a namespace held by a sleeping process, a "guest" in
//! one wired to a bridge by a veth pair, and busybox udhcpc run in it.
//! Shared by the tests of every crate that needs them so that each does
//! not grow its own copy. Call these only inside a user + network
//! namespace the test created (`unshare -Urn`), never in the machine's own.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::KillOnDrop;

/// Runs a shell command; panics with its output if it fails; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `done` until it holds; panics naming `what` after 60 s (a bound so
/// that a broken exchange fails instead of hanging; nothing about speed is
/// asserted).
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// The kind of namespace a test runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    /// A user + network namespace (`unshare -Urn`): root inside, nothing
    /// needed outside.
    User,
    /// A network namespace only (`unshare -n`), for tests that switch to
    /// other users with setpriv (a user namespace maps only root); needs
    /// root, as those tests do anyway.
    Root,
}

/// Whether the calling test runs inside its own namespace: outside (the
/// environment variable `marker` unset), the test binary re-executes
/// itself (only test `name`, its output shown) under `unshare` with
/// `marker` set, waits for it and returns false (the test is done; it
/// panics if the test inside failed); inside, returns true: the caller
/// runs the test's body.
pub fn enter_new_netns(marker: &str, name: &str, ns: Ns) -> bool {
    if std::env::var_os(marker).is_some() {
        return true;
    }
    let flags = match ns {
        Ns::User => "-Urn",
        Ns::Root => "-n",
    };
    let status = Command::new("unshare")
        .arg(flags)
        .arg(std::env::current_exe().expect("test executable path"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(marker, "1")
        .status()
        .expect("run unshare (util-linux) to create a network namespace");
    assert!(
        status.success(),
        "test inside the namespace failed: {status}"
    );
    false
}

/// The first statement of a test that runs in a namespace of its own:
/// `enter_new_netns!(MARKER)` (a user + network namespace) or
/// `enter_new_netns!(MARKER, Ns::Root)` runs the rest of the test there
/// ([`enter_new_netns`] under the test function's own name).
#[macro_export]
macro_rules! enter_new_netns {
    ($marker:expr) => {
        $crate::enter_new_netns!($marker, $crate::netns::Ns::User)
    };
    ($marker:expr, $ns:expr) => {
        if !$crate::netns::enter_new_netns($marker, $crate::test_name!(), $ns) {
            return;
        }
    };
}

/// The name of the test function it is written in (its path without the
/// crate), as `--exact` takes it.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        // "crate::test_name::here"
        let path = std::any::type_name_of_val(&here);
        path.split("::").nth(1).expect("a test function's path")
    }};
}

/// A network namespace of its own (with `lo` up), held by a sleeping
/// process that is killed on drop.
pub struct Netns {
    holder: KillOnDrop,
}

impl Netns {
    /// Creates the namespace (`unshare -n`) and waits until it exists.
    pub fn new() -> Netns {
        let holder = KillOnDrop(
            Command::new("unshare")
                .args(["-n", "sleep", "3600"])
                .spawn()
                .expect("unshare -n"),
        );
        let pid = holder.pid();
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        wait_for("a new network namespace", || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != own)
        });
        let ns = Netns { holder };
        ns.run("ip link set lo up");
        ns
    }

    /// The process id of the holder (for `ip link set ... netns PID`).
    pub fn pid(&self) -> u32 {
        self.holder.pid()
    }

    /// `cmd` wrapped in `nsenter` so that it runs inside.
    pub fn cmd(&self, cmd: &str) -> String {
        format!("nsenter -t {} -n sh -c '{cmd}'", self.pid())
    }

    /// Runs a shell command inside; panics if it fails; returns stdout.
    pub fn run(&self, cmd: &str) -> String {
        sh(&self.cmd(cmd))
    }

    /// `program` run inside by `nsenter`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-n"]).arg(program);
        cmd
    }

    /// Whether `program` with `args`, run inside, output discarded, succeeds.
    fn succeeds(&self, program: &str, args: &[&str]) -> bool {
        self.command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits (see [`wait_for`]) until link `name` exists inside: the tap a
    /// QEMU opened there, a veth moved in.
    pub fn wait_for_link(&self, name: &str) {
        wait_for(&format!("link {name} in the namespace"), || {
            self.succeeds("ip", &["link", "show", name])
        });
    }

    /// Whether one ping (busybox's, 2 s) of `addr` from inside is answered.
    pub fn pings(&self, addr: &str) -> bool {
        self.succeeds("busybox", &["ping", "-c", "1", "-W", "2", addr])
    }

    /// Like [`Netns::pings`], with up to five tries: the first packets of
    /// a path wait for ARP (and a userspace datapath's flow setup).
    pub fn reaches(&self, addr: &str) -> bool {
        (0..5).any(|_| self.pings(addr))
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        std::thread::spawn(self.entering(f))
    }

    /// Runs `f` on a scoped thread that has entered this namespace and
    /// returns its result (what `f` starts runs inside; unlike
    /// [`Netns::spawn`], `f` may borrow).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(self.entering(f))
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// `f`, for a thread of its own that enters this namespace first.
    fn entering<T>(&self, f: impl FnOnce() -> T) -> impl FnOnce() -> T {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        move || {
            // SAFETY: setns on this thread only, with a valid netns fd.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        }
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

/// A "guest": a namespace of its own with one veth pair, `eth0` inside and
/// the host end attached to a bridge in the test's namespace.
pub struct NsGuest {
    /// The guest's namespace.
    pub ns: Netns,
    host_if: String,
}

impl NsGuest {
    /// A guest whose `eth0` has MAC `mac`, its host end `host_if` attached
    /// to `bridge` (which must exist) and up.
    pub fn new(bridge: &str, host_if: &str, mac: &str) -> NsGuest {
        let ns = Netns::new();
        sh(&format!(
            "ip link add {host_if} type veth peer name eth0 address {mac} && \
             ip link set eth0 netns {} && ip link set {host_if} master {bridge} up",
            ns.pid()
        ));
        ns.run("ip link set eth0 up");
        NsGuest {
            ns,
            host_if: host_if.into(),
        }
    }

    /// Runs a shell command inside; panics if it fails; returns stdout.
    pub fn run(&self, cmd: &str) -> String {
        self.ns.run(cmd)
    }

    /// Runs busybox udhcpc once on `eth0`, sending `hostname`; its script
    /// sets the address and default route and keeps what the server sent.
    /// Returns those variables (`ip`, `router`, `dns`, `domain`,
    /// `hostname`, ...; see [`var`]). `dir` holds the script and the result.
    pub fn udhcpc(&self, dir: &Path, hostname: &str) -> Vec<(String, String)> {
        let out = dir.join(format!("{}.env", self.host_if));
        let script = dir.join("udhcpc.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             case \"$1\" in\n\
             bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\";\n\
               [ -n \"$router\" ] && ip route replace default via \"$router\";\n\
               env > \"$LEASE_OUT\";;\n\
             esac\nexit 0\n",
        )
        .unwrap();
        sh(&format!("chmod +x {}", script.display()));
        let _ = std::fs::remove_file(&out);
        self.run(&format!(
            "LEASE_OUT={} busybox udhcpc -f -q -n -t 5 -T 2 -i eth0 -x hostname:{hostname} -s {}",
            out.display(),
            script.display()
        ));
        std::fs::read_to_string(&out)
            .expect("udhcpc bound")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// A variable udhcpc passed to its script (from [`NsGuest::udhcpc`]);
/// panics naming it if there is none.
pub fn var<'a>(vars: &'a [(String, String)], name: &str) -> &'a str {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("udhcpc gave no {name}: {vars:?}"))
}
