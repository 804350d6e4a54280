//! Logs that say what happened: the daemon's `ready` line with its socket,
//! every change request with the uid and pid that asked and each action
//! and undo on the host, `-v` on the CLI showing the same actions, a
//! network's service saying it is ready and why it stops, the daemon
//! saying why it stops (SIGTERM) instead of vanishing; `slipway user`'s
//! ready and stop lines by default.

use std::path::Path;

mod common;
mod net_common;

use net_common::*;
use slipway_testkit::netns::{sh, wait_for};

const LAB: &str = "<network><name>lab</name><bridge name='br-lab'/>\
<ip address='10.44.0.1' netmask='255.255.255.0'>\
<dhcp><range start='10.44.0.100' end='10.44.0.199'/></dhcp></ip></network>";

/// Runs `slipway -v ARGS` under `root` (no RUST_LOG), which must succeed;
/// returns its stderr.
fn verbose(root: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("--root")
        .arg(root)
        .arg("-v")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    err
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_daemon_logs_who_asked_what_was_done_and_why_it_stops() {
    in_netns(
        "the_daemon_logs_who_asked_what_was_done_and_why_it_stops",
        Ns::User,
        daemon_logs,
    );
}

fn daemon_logs() {
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let log = root.join("daemon.log");
    let mut daemon = Daemon::start_logged(root, &log);
    let socket = root.join("run/slipway/slipway-sock");
    let logged = read(&log);
    assert!(
        logged.contains(&format!("slipway daemon ready on {}", socket.display())),
        "{logged}"
    );
    write(root, "lab.xml", LAB);
    ok(root, &["net-define", "lab.xml"]);
    // -v: the actions the daemon carried out, on the CLI's stderr.
    let start = verbose(root, &["net-start", "lab"]);
    for want in [
        "network lab: ip link add br-lab",
        "network lab: ip addr add 10.44.0.1/24 dev br-lab",
        "network lab: ip link set br-lab up",
    ] {
        assert!(start.contains(want), "{want:?} not in:\n{start}");
    }
    let destroy = verbose(root, &["net-destroy", "lab"]);
    assert!(
        destroy.contains("network lab: undo: ip link add br-lab"),
        "{destroy}"
    );
    ok(root, &["net-start", "lab"]);

    // The daemon's log: who asked, each action, each undo.
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    let logged = read(&log);
    for want in [
        format!("uid {me} (pid "),
        "asks to start network \"lab\"".to_string(),
        "asks to destroy network \"lab\"".to_string(),
        "network lab: ip link add br-lab".to_string(),
        "network lab: undo: ip link del br-lab".to_string(),
        "network lab: undo: stop the DHCP/DNS service (pid ".to_string(),
        format!("done: start network \"lab\" for uid {me}"),
    ] {
        assert!(logged.contains(&want), "{want:?} not in:\n{logged}");
    }
    // A failing request says so, with who asked.
    assert_eq!(sw(root, &["net-start", "nosuch"]).code, 1);
    wait_for("the failure in the log", || {
        read(&log).contains(&format!("failed: start network \"nosuch\" for uid {me}"))
    });

    // The network's service: ready, and stopping on SIGTERM (the destroy).
    let svc_log = state_dir(root).join("hostnet/lab.service.log");
    let svc = read(&svc_log);
    assert!(
        svc.contains("the DHCP/DNS service of network lab is ready on br-lab"),
        "{svc}"
    );
    ok(root, &["net-destroy", "lab"]);
    for _ in 0..500 {
        if read(&svc_log).contains("is stopping: SIGTERM received") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let svc = read(&svc_log);
    assert!(
        svc.contains("the DHCP/DNS service of network lab is stopping: SIGTERM received"),
        "{svc}"
    );

    // SIGTERM: said, and a clean exit without the socket file.
    let status = daemon.terminate();
    let logged = read(&log);
    assert!(status.success(), "{status}\n{logged}");
    assert!(
        logged.contains("slipway daemon stopping: SIGTERM received")
            && logged.contains("slipway daemon stopped"),
        "{logged}"
    );
    assert!(!socket.exists(), "socket file left behind");
}

/// `slipway user` says when it is ready (with its socket) and when it
/// stops and why, without -v.
#[test]
fn slipway_user_says_ready_and_why_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let mut child = std::process::Command::new(BIN)
        .args(["user", "--dns-upstream", "127.0.0.1", "--socket"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let log = dir.path().join("log");
    wait_for("the ready line", || {
        read(&log).contains("ready: waiting for the VM on")
    });
    assert!(
        read(&log).contains(&path.display().to_string()),
        "{}",
        read(&log)
    );
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let logged = read(&log);
    assert!(logged.contains("stopping: SIGTERM received"), "{logged}");
    // Nothing else at the default level: no debug noise.
    assert!(!logged.contains("DEBUG"), "{logged}");
}

/// The fake journald of [`under_systemd_the_log_goes_to_the_journal`]: binds
/// the journal's socket (in a mount namespace of the test's), runs `slipway
/// user` with stderr a file named by JOURNAL_STREAM (as systemd does), waits
/// for the ready message, sends SIGTERM, and prints every datagram's fields
/// (the native protocol: `KEY=value` lines, or `KEY`, a 64-bit length and
/// the value) as one JSON object per line.
const FAKE_JOURNALD: &str = r#"
import json, os, signal, socket, struct, subprocess, sys
slipway, err_path, vm_socket = sys.argv[1:4]
os.makedirs("/run/systemd/journal", exist_ok=True)
journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
journal.bind("/run/systemd/journal/socket")
journal.settimeout(30)
err = open(err_path, "w")
st = os.fstat(err.fileno())
env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
env.pop("RUST_LOG", None)
child = subprocess.Popen([slipway, "user", "--dns-upstream", "127.0.0.1", "--socket", vm_socket],
                         stderr=err, env=env)

def fields(data):
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            k, v = line, data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        out[k.decode()] = v.decode(errors="replace")
    return out

def until(word):
    while True:
        data = journal.recv(1 << 20)
        if not data:
            continue
        f = fields(data)
        print(json.dumps(f), flush=True)
        if word in f.get("MESSAGE", ""):
            return

until("ready:")
child.send_signal(signal.SIGTERM)
until("stopping:")
sys.exit(child.wait())
"#;

/// Under systemd (stderr is the journal's stream, JOURNAL_STREAM names it)
/// the log goes to the journal as structured entries, from the sandboxed
/// stack too, and nothing to stderr.
#[test]
fn under_systemd_the_log_goes_to_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr");
    let script = format!(
        "mount -t tmpfs none /run/systemd && exec /usr/bin/python3 -c '{FAKE_JOURNALD}' {BIN} {} {}",
        err.display(),
        dir.path().join("vm.sock").display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-Urm", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |word: &str| {
        entries
            .iter()
            .find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains(word)))
            .unwrap_or_else(|| panic!("no {word:?} entry: {stdout}"))
    };
    let ready = find("ready: waiting for the VM on");
    // tracing-journald's default mapping: info is "notice" (5).
    assert_eq!(ready["PRIORITY"], "5", "{ready}");
    assert_eq!(ready["TARGET"], "slipway::lifecycle", "{ready}");
    assert_eq!(ready["SYSLOG_IDENTIFIER"], "slipway", "{ready}");
    assert!(
        ready["F_SPEC"]
            .as_str()
            .is_some_and(|s| s.contains("vm.sock")),
        "{ready}"
    );
    let stopping = find("stopping: SIGTERM received");
    assert_eq!(stopping["F_SIGNAL"], "SIGTERM", "{stopping}");
    assert_eq!(read(&err), "", "stderr is not the log under systemd");
}
