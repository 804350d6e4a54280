//! Helpers shared by the `slipway user` end-to-end tests: a `slipway user`
//! process with its log, checks on a guest's results that print both
//! sides when they fail, and the host-side clients the tests share.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use slipway_testkit::{Guest, GuestOutput};

/// A `slipway user` process; killed when dropped.
pub struct Slipway {
    child: Option<Child>,
    /// Whether `child` is the `unshare` whose only child (PID 1 of a PID
    /// namespace) is slipway: [`Slipway::start_in_netns`].
    in_pid_namespace: bool,
    log: PathBuf,
    /// The scratch directory holding the log, removed when dropped.
    _dir: Box<dyn std::any::Any>,
}

impl Slipway {
    pub fn start(args: &[String]) -> Slipway {
        Slipway::spawn(Command::new(env!("CARGO_BIN_EXE_slipway")), args)
    }

    /// slipway in a new user, network and PID namespace (with a mount
    /// namespace for its own /proc) prepared by `setup` (shell commands,
    /// run in the namespace first; what they start in the background,
    /// servers and clients, lives in that PID namespace), with `-vv user
    /// ARGS`. slipway is the namespace's PID 1: when it ends, or `unshare`
    /// is killed (dropped), the kernel ends every process of the setup
    /// with it.
    pub fn start_in_netns(setup: &str, args: &[String]) -> Slipway {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-Urn",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
        ])
        .arg(format!("{setup}exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_slipway"));
        let mut slipway = Slipway::spawn(cmd, args);
        slipway.in_pid_namespace = true;
        slipway
    }

    /// Runs `cmd` (slipway itself, or a wrapper that execs it) with
    /// `-vv user ARGS`.
    pub fn spawn(mut cmd: Command, args: &[String]) -> Slipway {
        let dir = slipway_testkit::temp_dir().expect("temp dir");
        let log = dir.path().join("slipway.log");
        let child = cmd
            .arg("-vv")
            .arg("user")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("slipway starts");
        Slipway {
            child: Some(child),
            in_pid_namespace: false,
            log,
            _dir: Box::new(dir),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// slipway's process id (started with [`Slipway::start`] or `spawn`
    /// of slipway itself, not in a PID namespace).
    pub fn pid(&self) -> u32 {
        assert!(!self.in_pid_namespace, "slipway is unshare's child");
        self.child.as_ref().expect("running").id()
    }

    /// Waits until slipway has created `path` (its socket), or fails with its log.
    pub fn wait_for_path(&mut self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !path.exists() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "slipway exited with {status} before creating {}:\n{}",
                    path.display(),
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "slipway did not create {}:\n{}",
                path.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until slipway logs that it listens.
    pub fn wait_for_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains("waiting for the VM") {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "slipway exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "slipway does not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let mut pid = child.id().to_string();
        if self.in_pid_namespace {
            // unshare ignores SIGTERM; slipway, its child, takes it.
            let children = format!("/proc/{pid}/task/{pid}/children");
            pid = std::fs::read_to_string(children)
                .ok()
                .and_then(|c| c.split_whitespace().next().map(str::to_string))
                .expect("slipway runs under unshare");
        }
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM failed");
        let status = child.wait().expect("slipway exits");
        (status, self.log())
    }

    /// [`Slipway::terminate`], which must exit successfully; returns the log.
    pub fn terminate_ok(self) -> String {
        let (status, log) = self.terminate();
        assert!(status.success(), "{status}\n{log}");
        log
    }

    /// [`Slipway::wait_exit`], which must exit successfully; returns the log.
    pub fn wait_exit_ok(self) -> String {
        let (status, log) = self.wait_exit();
        assert!(status.success(), "{status}\n{log}");
        log
    }

    /// Waits for slipway to exit by itself (the VM went away).
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "slipway did not exit after the VM went away:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Slipway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn s(v: &str) -> String {
    v.to_string()
}

pub fn check(out: &GuestOutput, slipway: &Slipway, key: &str, want: &str) {
    assert_eq!(
        out.result(key),
        Some(want),
        "result {key}\n--- guest ---\n{}\n--- slipway ---\n{}",
        out.console,
        slipway.log()
    );
}

pub fn run_guest(builder: slipway_testkit::GuestBuilder, slipway: &Slipway) -> GuestOutput {
    match builder.run() {
        Ok(out) => out,
        Err(err) => panic!("guest failed: {err}\n--- slipway ---\n{}", slipway.log()),
    }
}

pub fn unix_stream_netdev(path: &Path) -> String {
    format!(
        "stream,id=n0,server=off,addr.type=unix,addr.path={}",
        path.display()
    )
}

/// Guest RAM (the test guest's 256 MiB), shared with the vhost-user
/// backend as a memfd.
const VHOST_GUEST_MEM: &str = "256M";

/// QEMU's arguments for a vhost-user NIC on `sock` (chardev `c0`), besides
/// the netdev: the guest's memory as a shared memfd.
pub fn vhost_args(sock: &Path) -> Vec<String> {
    vec![
        s("-chardev"),
        format!("socket,id=c0,path={}", sock.display()),
        s("-object"),
        format!("memory-backend-memfd,id=mem,size={VHOST_GUEST_MEM},share=on"),
        s("-machine"),
        s("memory-backend=mem"),
    ]
}

/// The md5 sum of a host file, to compare with the one a guest reports.
pub fn md5(path: &Path) -> String {
    let out = Command::new("md5sum")
        .arg(path)
        .output()
        .expect("md5sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// `GET /index.html` over HTTP/1.0 from `addr` (typically a forward into a
/// guest's httpd); the whole reply.
pub fn http_get(addr: impl ToSocketAddrs) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    Ok(body)
}

/// Waits (up to 240 s) for a line of a running guest's console containing
/// `pattern`, or fails with slipway's log.
pub fn wait_line(guest: &mut Guest, pattern: &str, slipway: &Slipway) {
    if let Err(e) = guest.wait_for_line(pattern, Duration::from_secs(240)) {
        panic!("{e}\n--- slipway ---\n{}", slipway.log());
    }
}

/// Fetches `/index.html` through the forward at `addr` (see [`http_get`])
/// and checks that the reply contains `want`; failures show slipway's log.
pub fn assert_serves(addr: impl ToSocketAddrs, want: &str, slipway: &Slipway) {
    let body = http_get(addr).unwrap_or_else(|e| panic!("forward: {e}\n{}", slipway.log()));
    assert!(body.contains(want), "{body}\n{}", slipway.log());
}

/// An ARP request for the gateway (10.0.2.2) from `mac`/`ip`, as a VM
/// sends it (padded to Ethernet's 60 bytes).
pub fn arp_request(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 2, 2]);
    f.resize(60, 0);
    f
}

/// Sends `frame` as a VM on the stream socket does (QEMU's framing:
/// 4-byte length, frame).
pub fn send_frame(vm: &mut impl Write, frame: &[u8]) {
    vm.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    vm.write_all(frame).unwrap();
}
