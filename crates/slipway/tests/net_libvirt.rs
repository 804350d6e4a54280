//! libvirt's own clients drive `slipway daemon` through libvirt's remote
//! protocol on virtnetworkd's sockets (`DIR/run/libvirt/virtnetworkd-sock`
//! and `-sock-ro` under `--root DIR`): virsh 9.0 (Debian libvirt-clients)
//! and Python's bindings (python3-libvirt), each test in namespaces of its
//! own. virsh's output must equal slipway's own CLI's for the same request.
//! Bad input (malformed XDR, oversized messages, unknown programs and
//! procedures, calls before open, writes on the read-only socket) gets
//! libvirt's error or a clean close, and the daemon keeps serving.

mod net_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use net_common::*;
use slipway_testkit::KillOnDrop;

const ALPHA: &str = "<network>
  <name>alpha</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <forward mode='nat'/>
  <bridge name='virbr5' stp='on' delay='0'/>
  <mac address='52:54:00:aa:00:05'/>
  <domain name='alpha.test'/>
  <ip address='10.0.5.1' prefix='24'>
    <dhcp>
      <range start='10.0.5.2' end='10.0.5.100'/>
    </dhcp>
  </ip>
</network>
";

const BETA: &str = "<network>
  <name>beta</name>
  <uuid>21111111-2222-3333-4444-555555555555</uuid>
  <bridge name='virbr6'/>
  <ip address='10.0.6.1' prefix='24'/>
</network>
";

/// A root with `alpha.xml` and `beta.xml` (not defined) and a daemon serving it.
fn alpha_beta_daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    write(root, "beta.xml", BETA);
    let daemon = Daemon::start(root);
    (dir, daemon)
}

fn sock(root: &Path) -> PathBuf {
    root.join("run/libvirt/virtnetworkd-sock")
}

fn sock_ro(root: &Path) -> PathBuf {
    root.join("run/libvirt/virtnetworkd-sock-ro")
}

fn uri(path: &Path) -> String {
    format!("network:///system?socket={}", path.display())
}

/// virsh through the protocol: on the read-write socket, or with `-r` on
/// the read-only one; in `root`, so file names print as slipway's.
fn vsh(root: &Path, readonly: bool, args: &[&str]) -> Run {
    let mut cmd = Command::new("virsh");
    if readonly {
        cmd.args(["-r", "-c", &uri(&sock_ro(root))]);
    } else {
        cmd.args(["-c", &uri(&sock(root))]);
    }
    let out = cmd
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .expect("virsh (Debian package libvirt-clients) must be installed");
    text(out)
}

/// virsh and slipway give the same output, status and messages.
fn same(root: &Path, args: &[&str]) -> Run {
    let v = vsh(root, false, args);
    let s = sw(root, args);
    assert_eq!(
        (v.code, &v.stdout, &v.stderr),
        (s.code, &s.stdout, &s.stderr),
        "virsh {args:?} differs from slipway"
    );
    v
}

/// A change made by virsh, undone with slipway's CLI (`undo`), then made by
/// slipway: both print the same.
fn same_change(root: &Path, args: &[&str], undo: &[&str]) -> Run {
    let v = vsh(root, false, args);
    assert_eq!(v.code, 0, "virsh {args:?}: {v:?}");
    ok(root, undo);
    let s = sw(root, args);
    assert_eq!(
        (v.code, &v.stdout, &v.stderr),
        (s.code, &s.stdout, &s.stderr),
        "virsh {args:?} differs from slipway"
    );
    v
}

#[test]
fn virsh_runs_every_net_command_like_slipway() {
    enter_netns!(Ns::User);
    let (dir, _d) = alpha_beta_daemon();
    let root = dir.path();
    let meta = std::fs::metadata(sock(root)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let meta = std::fs::metadata(sock_ro(root)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);

    same(root, &["net-list", "--all"]);
    same_change(
        root,
        &["net-define", "alpha.xml"],
        &["net-undefine", "alpha"],
    );
    same_change(
        root,
        &["net-define", "--validate", "beta.xml"],
        &["net-undefine", "beta"],
    );
    // Refused definitions: the messages are the manager's, through both.
    write(root, "bad.xml", "<network><name>x</name><bogus/></network>");
    same(root, &["net-define", "--validate", "bad.xml"]);
    write(root, "dup.xml", &ALPHA.replace("1111-2222", "9999-2222"));
    same(root, &["net-define", "dup.xml"]);
    for args in [
        &["net-list", "--all"][..],
        &["net-list", "--inactive"],
        &["net-list", "--persistent", "--name"],
        &["net-list", "--all", "--uuid"],
        &["net-info", "alpha"],
        &["net-info", "11111111-2222-3333-4444-555555555555"],
        &["net-info", "nope"],
        &["net-uuid", "alpha"],
        &["net-name", "21111111-2222-3333-4444-555555555555"],
        &["net-dumpxml", "alpha"],
        &["net-dumpxml", "--inactive", "alpha"],
        &["net-start", "nope"],
        &["net-destroy", "alpha"],
    ] {
        same(root, args);
    }
    same_change(root, &["net-start", "alpha"], &["net-destroy", "alpha"]);
    for args in [
        &["net-list"][..],
        &["net-info", "alpha"],
        &["net-dumpxml", "alpha"],
        &["net-dumpxml", "--inactive", "alpha"],
        &["net-start", "alpha"],
    ] {
        same(root, args);
    }
    same_change(
        root,
        &["net-autostart", "alpha"],
        &["net-autostart", "--disable", "alpha"],
    );
    same(root, &["net-list", "--autostart"]);
    same_change(
        root,
        &["net-autostart", "--disable", "alpha"],
        &["net-autostart", "alpha"],
    );
    let host = "<host mac='52:54:00:00:05:09' name='nine' ip='10.0.5.9'/>";
    same_change(
        root,
        &[
            "net-update",
            "alpha",
            "add",
            "ip-dhcp-host",
            host,
            "--live",
            "--config",
        ],
        &[
            "net-update",
            "alpha",
            "delete",
            "ip-dhcp-host",
            host,
            "--live",
            "--config",
        ],
    );
    same(root, &["net-dumpxml", "alpha"]);
    same(
        root,
        &[
            "net-update",
            "alpha",
            "add",
            "ip-dhcp-host",
            host,
            "--live",
            "--config",
        ],
    );
    same(
        root,
        &[
            "net-update",
            "alpha",
            "modify",
            "forward",
            "<forward mode='route'/>",
            "--live",
        ],
    );
    // Leases from the service's file (what its DHCP server writes).
    let leases = state_dir(root).join("hostnet/alpha.leases/leases.json");
    std::fs::create_dir_all(leases.parent().unwrap()).unwrap();
    std::fs::write(
        &leases,
        r#"[{"mac":"52:54:00:00:05:09","ip":"10.0.5.9","prefix":24,"hostname":"nine","client_id":"01:52:54:00:00:05:09","expires":4000000000},
            {"mac":"52:54:00:00:05:0a","ip":"10.0.5.10","prefix":24,"hostname":null,"client_id":null,"expires":null},
            {"mac":"52:54:00:00:05:0b","ip":"10.0.5.11","prefix":24,"hostname":"old","client_id":null,"expires":10}]"#,
    )
    .unwrap();
    let v = same(root, &["net-dhcp-leases", "alpha"]);
    assert_eq!(v.stdout.lines().count(), 5, "two active leases: {v:?}");
    assert!(
        v.stdout.contains(" 10.0.5.9/24 ") && v.stdout.contains(" nine "),
        "{v:?}"
    );
    same(
        root,
        &["net-dhcp-leases", "alpha", "--mac", "52:54:00:00:05:0A"],
    );
    same(root, &["net-dhcp-leases", "alpha", "--mac", "zz"]);
    same_change(root, &["net-destroy", "alpha"], &["net-start", "alpha"]);
    same_change(root, &["net-undefine", "beta"], &["net-define", "beta.xml"]);
    same(root, &["net-undefine", "beta"]);
    // A transient network: created, listed, destroyed (and gone).
    same_change(root, &["net-create", "beta.xml"], &["net-destroy", "beta"]);
    same(root, &["net-list", "--all", "--transient"]);
    same(root, &["net-autostart", "beta"]);
    same(root, &["net-undefine", "beta"]);
    same_change(root, &["net-destroy", "beta"], &["net-create", "beta.xml"]);
    same(root, &["net-list", "--all"]);
}

#[test]
fn virsh_net_event_sees_changes_of_both_apis() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    // Keepalive every 200 ms: virsh (which asks for it) answers the PINGs
    // and stays connected through the idle second below.
    let _d = Daemon::start_env(root, &[("SLIPWAY_LIBVIRT_KEEPALIVE_MS", "200")]);
    // Over the read-only socket: events are reads.
    let mut ev = Command::new("virsh")
        .args(["-r", "-c", &uri(&sock_ro(root))])
        .args(["net-event", "--event", "lifecycle", "--loop"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_subscribers(root, 1);
    ok(root, &["net-define", "alpha.xml"]);
    assert_eq!(vsh(root, false, &["net-start", "alpha"]).code, 0);
    ok(root, &["net-destroy", "alpha"]);
    assert_eq!(vsh(root, false, &["net-undefine", "alpha"]).code, 0);
    let mut lines = BufReader::new(ev.stdout.take().unwrap()).lines();
    let got: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    assert_eq!(
        got,
        [
            "event 'lifecycle' for network alpha: Defined",
            "event 'lifecycle' for network alpha: Started",
            "event 'lifecycle' for network alpha: Stopped",
            "event 'lifecycle' for network alpha: Undefined",
        ]
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        status(root).unwrap()["ok"]["subscribers"],
        1,
        "virsh still connected"
    );
    // Ctrl-C ends the loop, virsh's end as slipway's own net-event's.
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(ev.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest, ["event loop interrupted", "events received: 4", ""]);
    assert!(ev.wait().unwrap().success());
    // A filter on one network, one-shot, as slipway's own net-event.
    ok(root, &["net-define", "alpha.xml"]);
    wait_for_subscribers(root, 0);
    let one = Command::new("virsh")
        .args(["-c", &uri(&sock(root))])
        .args([
            "net-event",
            "--event",
            "lifecycle",
            "--network",
            "alpha",
            "--timeout",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_subscribers(root, 1);
    write(root, "beta.xml", BETA);
    ok(root, &["net-define", "beta.xml"]);
    ok(root, &["net-start", "alpha"]);
    let r = text(one.wait_with_output().unwrap());
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            "event 'lifecycle' for network alpha: Started\nevents received: 1\n\n"
        )
    );
}

#[test]
fn read_only_socket_lists_and_dumps_but_changes_nothing() {
    enter_netns!(Ns::User);
    let (dir, _d) = alpha_beta_daemon();
    let root = dir.path();
    ok(root, &["net-define", "alpha.xml"]);
    for args in [
        &["net-list", "--all"][..],
        &["net-info", "alpha"],
        &["net-dumpxml", "--inactive", "alpha"],
        &["net-dhcp-leases", "alpha"],
    ] {
        let v = vsh(root, true, args);
        let s = sw(root, args);
        assert_eq!((v.code, &v.stdout), (s.code, &s.stdout), "{args:?}");
    }
    let before = ok(root, &["net-list", "--all"]);
    let changes: [(&[&str], &str); 8] = [
        (&["net-define", "beta.xml"], "virNetworkDefineXML"),
        (
            &["net-define", "--validate", "beta.xml"],
            "virNetworkDefineXMLFlags",
        ),
        (&["net-create", "beta.xml"], "virNetworkCreateXML"),
        (&["net-start", "alpha"], "virNetworkCreate"),
        (&["net-autostart", "alpha"], "virNetworkSetAutostart"),
        (&["net-undefine", "alpha"], "virNetworkUndefine"),
        (&["net-destroy", "alpha"], "virNetworkDestroy"),
        (
            &[
                "net-update",
                "alpha",
                "add",
                "dns-host",
                "<host ip='10.0.5.7'><hostname>h</hostname></host>",
            ],
            "virNetworkUpdate",
        ),
    ];
    // `-r` (the client refuses, libvirt's library checks first) and a
    // read-write open of the read-only socket (the daemon refuses).
    let plain = uri(&sock_ro(root));
    for (args, api) in changes {
        let want = format!("operation forbidden: read only access prevents {api}");
        let r = vsh(root, true, args);
        assert!(
            r.code == 1 && r.stderr.contains(&want),
            "virsh -r {args:?}: {r:?}"
        );
        let out = Command::new("virsh")
            .args(["-c", &plain])
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        let r = text(out);
        assert!(
            r.code == 1 && r.stderr.contains(&want),
            "virsh {args:?} on -ro: {r:?}"
        );
    }
    assert_eq!(ok(root, &["net-list", "--all"]), before);
}

const PY_CLIENT: &str = r#"
import json, sys, threading, time
import libvirt

uri, xml = sys.argv[1], open(sys.argv[2]).read()
libvirt.virEventRegisterDefaultImpl()
def loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=loop, daemon=True).start()

conn = libvirt.open(uri)
out = {"uri": conn.getURI(), "before": sorted(n.name() for n in conn.listAllNetworks())}
events = []
got = threading.Event()
def cb(c, net, event, detail, opaque):
    events.append([net.name(), event])
    if event == libvirt.VIR_NETWORK_EVENT_STOPPED:
        got.set()
cid = conn.networkEventRegisterAny(None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, cb, None)
net = conn.networkDefineXML(xml)
out["defined"] = [net.name(), net.UUIDString(), net.isActive(), net.isPersistent()]
net.create()
out["active"] = net.isActive()
out["bridge"] = net.bridgeName()
out["xml_has_name"] = "<name>alpha</name>" in net.XMLDesc(0)
out["leases"] = net.DHCPLeases()
out["all"] = sorted((n.name(), n.isActive()) for n in
    conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE))
try:
    conn.networkLookupByName("nope")
except libvirt.libvirtError as e:
    out["error"] = [e.get_error_code(), e.get_error_domain(), str(e)]
net.destroy()
got.wait(20)
out["events"] = events
conn.networkEventDeregisterAny(cid)
conn.close()
print(json.dumps(out))
"#;

#[test]
fn python_bindings_drive_slipway() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    let script = write(root, "client.py", PY_CLIENT);
    let _d = Daemon::start(root);
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(uri(&sock(root)))
        .arg(root.join("alpha.xml"))
        .output()
        .expect("python3 (with python3-libvirt) must be installed");
    let r = text(out);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    // The URI as opened (the client's), its path checked by the daemon.
    assert_eq!(v["uri"], uri(&sock(root)));
    assert_eq!(v["before"], serde_json::json!([]));
    assert_eq!(
        v["defined"],
        serde_json::json!(["alpha", "11111111-2222-3333-4444-555555555555", 0, 1])
    );
    assert_eq!(v["active"], 1);
    assert_eq!(v["bridge"], "virbr5");
    assert_eq!(v["xml_has_name"], true);
    assert_eq!(v["leases"], serde_json::json!([]));
    assert_eq!(v["all"], serde_json::json!([["alpha", 1]]));
    // VIR_ERR_NO_NETWORK from VIR_FROM_NETWORK, libvirt's message.
    assert_eq!(
        v["error"],
        serde_json::json!([
            43,
            19,
            "Network not found: no network with matching name 'nope'"
        ])
    );
    // VIR_NETWORK_EVENT_DEFINED, STARTED, STOPPED.
    assert_eq!(
        v["events"],
        serde_json::json!([["alpha", 0], ["alpha", 2], ["alpha", 3]])
    );
    assert_eq!(ok(root, &["net-list", "--all", "--name"]), "alpha\n\n");
}

// ---------------------------------------------------------------------
// Bad input, through a raw socket.

const REMOTE: u32 = 0x2000_8086;

fn message(prog: u32, vers: u32, proc_: i32, kind: u32, serial: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(((28 + payload.len()) as u32).to_be_bytes());
    for w in [prog, vers, proc_ as u32, kind, serial, 0] {
        m.extend(w.to_be_bytes());
    }
    m.extend(payload);
    m
}

fn call(proc_: i32, serial: u32, payload: &[u8]) -> Vec<u8> {
    message(REMOTE, 1, proc_, 0, serial, payload)
}

fn xdr_string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend(s.as_bytes());
    v.resize(v.len().div_ceil(4) * 4, 0);
    v
}

/// A reply: header words and payload.
struct Reply {
    proc_: i32,
    kind: u32,
    serial: u32,
    status: u32,
    payload: Vec<u8>,
}

impl Reply {
    /// code, domain and message of an error reply.
    fn error(&self) -> (i32, i32, String) {
        assert_eq!(self.status, 1, "not an error reply");
        let p = &self.payload;
        let word = |at: usize| u32::from_be_bytes(p[at..at + 4].try_into().unwrap());
        assert_eq!(word(8), 1, "a message");
        let len = word(12) as usize;
        (
            word(0) as i32,
            word(4) as i32,
            String::from_utf8(p[16..16 + len].to_vec()).unwrap(),
        )
    }
}

struct Raw(UnixStream);

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw(s)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    fn read(&mut self) -> Option<Reply> {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).ok()?;
        let len = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; len - 4];
        self.0.read_exact(&mut body).unwrap();
        let w = |i: usize| u32::from_be_bytes(body[i * 4..i * 4 + 4].try_into().unwrap());
        Some(Reply {
            proc_: w(2) as i32,
            kind: w(3),
            serial: w(4),
            status: w(5),
            payload: body[24..].to_vec(),
        })
    }

    /// Sends a call and reads its reply.
    fn call(&mut self, proc_: i32, serial: u32, payload: &[u8]) -> Reply {
        self.send(&call(proc_, serial, payload));
        let r = self.read().expect("a reply");
        assert_eq!((r.proc_, r.serial, r.kind), (proc_, serial, 1));
        r
    }

    fn open(&mut self) {
        // CONNECT_OPEN with name "network:///system", flags 0.
        let mut args = 1u32.to_be_bytes().to_vec();
        args.extend(xdr_string("network:///system"));
        args.extend(0u32.to_be_bytes());
        assert_eq!(self.call(1, 1, &args).status, 0);
    }

    /// Whether the daemon closed the connection (EOF).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0))
    }
}

/// Another client is served while `raw` is in whatever state it is in.
fn still_serving(root: &Path) {
    let r = vsh(root, false, &["net-list", "--all", "--name"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn bad_input_gets_libvirts_errors_and_never_blocks_the_daemon() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _d = Daemon::start_env(root, &[("SLIPWAY_DAEMON_IDLE_TIMEOUT_MS", "3000")]);
    let rw = sock(root);

    // Calls before CONNECT_OPEN.
    let mut c = Raw::connect(&rw);
    let mut lookup = xdr_string("alpha");
    assert_eq!(
        c.call(46, 5, &lookup).error(),
        (1, 7, "internal error: connection not open".into())
    );
    // AUTH_LIST works before open: one type, REMOTE_AUTH_NONE.
    assert_eq!(c.call(66, 6, &[]).payload, [0, 0, 0, 1, 0, 0, 0, 0]);
    // The keepalive program: a PING gets a PONG (a MESSAGE, no reply).
    c.send(&message(0x6b65_6570, 1, 1, 2, 0, &[]));
    let pong = c.read().unwrap();
    assert_eq!((pong.proc_, pong.kind), (2, 2));
    c.open();
    assert_eq!(
        c.call(1, 7, &[0, 0, 0, 0, 0, 0, 0, 0]).error(),
        (1, 7, "internal error: connection already open".into())
    );
    // Unknown procedure, program, version; bad status.
    assert_eq!(
        c.call(9999, 8, &[]).error(),
        (39, 7, "unknown procedure: 9999".into())
    );
    c.send(&message(0x1234, 1, 1, 0, 9, &[]));
    let r = c.read().unwrap();
    assert_eq!((r.serial, r.status), (9, 1));
    assert_eq!(
        r.error(),
        (39, 7, "Cannot find program 4660 version 1".into())
    );
    c.send(&message(REMOTE, 2, 46, 0, 10, &lookup));
    assert_eq!(
        c.read().unwrap().error(),
        (39, 7, "version mismatch (actual 2, expected 1)".into())
    );
    // Malformed XDR: a string longer than the data; a truncated argument.
    assert_eq!(
        c.call(46, 11, &[0, 0, 0, 200, b'a', b'b', 0, 0]).error(),
        (39, 7, "Unable to decode message payload".into())
    );
    assert_eq!(
        c.call(41, 12, &[0, 0]).error(),
        (39, 7, "Unable to decode message payload".into())
    );
    // Replies and events from a client are dropped without an answer;
    // the connection goes on.
    c.send(&message(REMOTE, 1, 46, 1, 13, &[]));
    lookup = xdr_string("nope");
    let r = c.call(46, 14, &lookup);
    assert_eq!(
        r.error(),
        (
            43,
            19,
            "Network not found: no network with matching name 'nope'".into()
        )
    );
    // A message longer than any call (but within libvirt's limit): read,
    // dropped, answered as libvirt answers what it cannot decode.
    let mut big = call(41, 15, &xdr_string(&"x".repeat(5 << 20)));
    c.send(&big);
    assert_eq!(
        c.read().unwrap().error(),
        (39, 7, "Unable to decode message payload".into())
    );
    still_serving(root);
    // A length word past libvirt's VIR_NET_MESSAGE_MAX: closed, as libvirtd
    // closes it, without reading 32 MiB.
    big.truncate(0);
    big.extend(((32 << 20) + 5u32).to_be_bytes());
    c.send(&big);
    assert!(c.closed());
    // Too small a length word, and a length word without a header.
    for bytes in [&[0u8, 0, 0, 3][..], &[0, 0, 0, 8, 0, 0, 0, 0]] {
        let mut c = Raw::connect(&rw);
        c.send(bytes);
        assert!(c.closed(), "{bytes:?}");
    }
    // Random bytes.
    let mut c = Raw::connect(&rw);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.closed());

    // A client that sends half a message and stalls holds nothing: closed
    // after the handshake timeout; meanwhile others are served.
    let mut stall = Raw::connect(&rw);
    stall.send(&call(66, 1, &[])[..10]);
    still_serving(root);
    assert!(stall.closed());
    // Nor one that never opens.
    let mut idle = Raw::connect(&rw);
    assert!(idle.closed());

    // Writes on the read-only socket, opened read-write by the client: the
    // daemon refuses them with libvirt's error.
    let mut ro = Raw::connect(&sock_ro(root));
    ro.open();
    write(root, "alpha.xml", ALPHA);
    let define = xdr_string(ALPHA);
    assert_eq!(
        ro.call(41, 2, &define).error(),
        (
            29,
            19,
            "operation forbidden: read only access prevents virNetworkDefineXML".into()
        )
    );
    // A read-only connection keeps at most 64 KiB of a message (its calls
    // carry no document): a longer one is dropped and answered, and the
    // connection goes on.
    assert_eq!(
        ro.call(41, 20, &xdr_string(&"x".repeat(100_000))).error(),
        (39, 7, "Unable to decode message payload".into())
    );
    // LIST_ALL_NETWORKS (need_results, flags 0) works there.
    assert_eq!(ro.call(283, 3, &[0, 0, 0, 1, 0, 0, 0, 0]).status, 0);
    // Unknown flags get virCheckFlags's error.
    assert_eq!(
        ro.call(283, 4, &[0, 0, 0, 1, 0, 0, 1, 0]).error(),
        (
            8,
            19,
            "invalid argument: unsupported flags (0x100) in function networkConnectListAllNetworks"
                .into()
        )
    );
    // The port procedures look the network up by its UUID, as libvirt's
    // do: a UUID no network has is libvirt's "Network not found".
    let mut args = xdr_string("alpha");
    args.extend([0u8; 16]);
    args.extend([0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(
        ro.call(404, 5, &args).error(),
        (
            43,
            19,
            "Network not found: no network with matching uuid '00000000-0000-0000-0000-000000000000' (alpha)"
                .into()
        )
    );
    // Nothing was defined through any of it.
    assert_eq!(ok(root, &["net-list", "--all", "--name"]), "\n");
    still_serving(root);
}

#[test]
fn connection_cap_keeps_slots_and_frees_them() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _d = Daemon::start(root);
    // 64 connections (the cap, both sockets together) are served; the
    // 65th is closed at once.
    let mut held: Vec<Raw> = (0..64)
        .map(|i| {
            let path = if i % 2 == 0 {
                sock(root)
            } else {
                sock_ro(root)
            };
            let mut c = Raw::connect(&path);
            c.open();
            c
        })
        .collect();
    let mut extra = Raw::connect(&sock(root));
    assert!(extra.closed());
    // Closing one frees its slot.
    held.pop();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = vsh(root, true, &["net-list", "--all"]);
        if r.code == 0 {
            break;
        }
        assert!(std::time::Instant::now() < end, "slot never freed: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn slow_and_dead_clients_are_closed() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _d = Daemon::start_env(
        root,
        &[
            ("SLIPWAY_DAEMON_WRITE_TIMEOUT_MS", "1000"),
            ("SLIPWAY_LIBVIRT_KEEPALIVE_MS", "200"),
        ],
    );
    // Keepalive, once asked for (CONNECT_SUPPORTS_FEATURE 10): PINGs after
    // silence; a client that answers none is closed after 5.
    let mut c = Raw::connect(&sock(root));
    assert_eq!(c.call(60, 1, &[0, 0, 0, 10]).payload, [0, 0, 0, 1]);
    c.open();
    let mut pings = 0;
    while let Some(m) = c.read() {
        assert_eq!((m.proc_, m.kind), (1, 2), "a keepalive PING");
        pings += 1;
    }
    assert_eq!(pings, 5);
    // One that answers stays.
    let mut c = Raw::connect(&sock(root));
    assert_eq!(c.call(60, 1, &[0, 0, 0, 10]).payload, [0, 0, 0, 1]);
    c.open();
    for _ in 0..8 {
        let m = c.read().unwrap();
        assert_eq!((m.proc_, m.kind), (1, 2));
        c.send(&message(0x6b65_6570, 1, 2, 2, 0, &[]));
    }
    assert_eq!(c.call(66, 2, &[]).status, 0);

    // A client that sends calls and never reads the replies: the daemon
    // stops reading its calls, and closes it after the write timeout;
    // others are served meanwhile.
    let mut flood = Raw::connect(&sock(root));
    flood.open();
    let calls: Vec<u8> = (0..40_000).flat_map(|i| call(66, i, &[])).collect();
    flood.0.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while sent < calls.len() && std::time::Instant::now() < end {
        match flood.0.write(&calls[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            // Closed by the daemon.
            Err(_) => break,
        }
    }
    assert!(
        sent < calls.len(),
        "the daemon read every call without the replies being read"
    );
    still_serving(root);
    flood.0.set_nonblocking(false).unwrap();
    // Its replies until the close, then EOF (or a reset).
    let mut sink = Vec::new();
    let _ = flood.0.read_to_end(&mut sink);
    assert!(
        sink.len() < calls.len() / 28 * 36,
        "not every call was answered"
    );

    // Lifecycle callbacks: 64 per connection.
    let mut c = Raw::connect(&sock_ro(root));
    c.open();
    for i in 0..64 {
        assert_eq!(c.call(313, 10 + i, &[0; 8]).status, 0);
    }
    assert_eq!(
        c.call(313, 99, &[0; 8]).error(),
        (
            1,
            7,
            "internal error: too many network event callbacks on this connection (limit 64)".into()
        )
    );
    assert_eq!(
        c.call(314, 100, &[0, 0, 0, 99]).error(),
        (
            1,
            7,
            "internal error: network event callback 99 not registered".into()
        )
    );
    assert_eq!(c.call(314, 101, &[0, 0, 0, 1]).status, 0);
    assert_eq!(c.call(313, 102, &[0; 8]).status, 0);
}

#[test]
fn a_libvirt_socket_in_use_stops_the_daemon() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("run/libvirt")).unwrap();
    // Something (libvirt's virtnetworkd, say) answers on the socket.
    let _other = std::os::unix::net::UnixListener::bind(sock(root)).unwrap();
    let r = sw(root, &["daemon"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "{} is served by another process",
            sock(root).display()
        )),
        "{r:?}"
    );
}

#[test]
fn other_users_read_only_and_never_read_write() {
    enter_netns!(Ns::Root);
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(root, "alpha.xml", ALPHA);
    let _d = Daemon::start(root);
    ok(root, &["net-define", "alpha.xml"]);
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .current_dir("/")
            .env("HOME", "/nonexistent")
            .output()
            .expect("setpriv (util-linux)");
        text(out)
    };
    // The read-only socket serves anyone.
    let ro = uri(&sock_ro(root));
    let r = as_nobody(&["virsh", "-r", "-c", &ro, "net-list", "--all", "--name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "alpha\n\n"), "{r:?}");
    // The read-write one: its mode keeps them out...
    let rw = uri(&sock(root));
    let r = as_nobody(&["virsh", "-c", &rw, "net-destroy", "alpha"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{r:?}");
    // ...and, its mode loosened, the peer-credential check: closed unserved.
    std::fs::set_permissions(sock(root), std::fs::Permissions::from_mode(0o666)).unwrap();
    // A reset or a broken pipe is a close too.
    let probe = format!(
        "import socket,struct\ns=socket.socket(socket.AF_UNIX)\ns.connect('{}')\n\
         try:\n    s.sendall(struct.pack('!IIIiIII',28,0x20008086,1,66,0,1,0))\n    r=s.recv(100)\n\
         except ConnectionError:\n    r=b''\nprint(repr(r))",
        sock(root).display()
    );
    let r = as_nobody(&["/usr/bin/python3", "-c", &probe]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "b''\n"), "{r:?}");
    assert_eq!(ok(root, &["net-list", "--all", "--name"]), "alpha\n\n");
}

// ---------------------------------------------------------------------
// The network port API (procedures 404-410).
// ---------------------------------------------------------------------

const P1: &str = "426d4b86-08a2-410a-824c-15a34137c1f8";
const P2: &str = "026d4b86-08a2-410a-824c-15a34137c1f8";
const NO_PORT: &str = "99999999-08a2-410a-824c-15a34137c1f8";

#[test]
fn virsh_runs_every_net_port_command_like_slipway() {
    in_netns(
        "virsh_runs_every_net_port_command_like_slipway",
        Ns::User,
        virsh_net_port_body,
    );
}

fn virsh_net_port_body() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    write(root, "beta.xml", BETA);
    write(root, "p1.xml", &qemu_port(P1, "52:54:00:11:22:33"));
    write(root, "p2.xml", &qemu_port(P2, "52:54:00:11:22:34"));
    let _d = Daemon::start(root);
    ok(root, &["net-define", "alpha.xml"]);
    ok(root, &["net-define", "beta.xml"]);
    ok(root, &["net-start", "alpha"]);

    let created = same_change(
        root,
        &["net-port-create", "alpha", "p1.xml"],
        &["net-port-delete", "alpha", P1],
    );
    assert_eq!(
        created.stdout,
        format!("Network port {P1} created from p1.xml\n\n")
    );
    let v = vsh(root, false, &["net-port-create", "alpha", "p2.xml"]);
    assert_eq!(v.code, 0, "{v:?}");
    let table = same(root, &["net-port-list", "alpha"]);
    assert_eq!(
        table.stdout,
        format!(" UUID\n{}\n {P2}\n {P1}\n\n", "-".repeat(39))
    );
    same(root, &["net-port-list", "alpha", "--uuid"]);
    // The plug the network filled in, as the QEMU driver reads it back.
    let xml = same(root, &["net-port-dumpxml", "alpha", P1]);
    assert_eq!(
        xml.stdout,
        qemu_port(P1, "52:54:00:11:22:33").replace(
            "</networkport>",
            "  <plug type='network' bridge='virbr5'/>\n</networkport>\n"
        )
    );
    // libvirt's errors, worded and numbered as libvirt's.
    // virsh 9.0's net-port-dumpxml and net-port-delete start with `ret =
    // true` (tools/virsh-network.c), so a port lookup that fails exits 0
    // and hides libvirt's error; slipway's CLI exits 1 and prints it. The
    // rest of the output is the same (libvirt's code and message for it
    // are checked through python3-libvirt below).
    for args in [
        &["net-port-dumpxml", "alpha", NO_PORT][..],
        &["net-port-delete", "alpha", NO_PORT],
        &["net-port-dumpxml", "alpha", "not-a-uuid"],
    ] {
        let v = vsh(root, false, args);
        let s = sw(root, args);
        assert_eq!((v.code, s.code), (0, 1), "{args:?}: {v:?} {s:?}");
        assert_eq!(v.stdout, s.stdout, "{args:?}");
        assert_eq!(
            Some(v.stderr.as_str()),
            s.stderr.split_inclusive('\n').next(),
            "{args:?}"
        );
    }
    for args in [
        &["net-port-create", "alpha", "p1.xml"][..],
        &["net-port-list", "nosuch"],
        &["net-port-list", "beta"],
        &["net-port-create", "beta", "p1.xml"],
    ] {
        let r = same(root, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
    }
    same_change(
        root,
        &["net-port-delete", "alpha", P2],
        &["net-port-create", "alpha", "p2.xml"],
    );
    let after = same(root, &["net-port-list", "alpha", "--uuid"]);
    assert_eq!(after.stdout, format!("{P1}\n\n"));

    // Read-only: list and dump, but no change, refused by the client
    // (`-r`) and by the daemon (a read-write open of the -ro socket).
    for args in [
        &["net-port-list", "alpha"][..],
        &["net-port-dumpxml", "alpha", P1],
    ] {
        let v = vsh(root, true, args);
        let s = sw(root, args);
        assert_eq!((v.code, &v.stdout), (s.code, &s.stdout), "{args:?}");
    }
    let plain = uri(&sock_ro(root));
    // virsh 9.0's net-port-delete hides libvirt's error (and exits 0) as
    // its dumpxml does: only its own line shows.
    let delete = ["net-port-delete", "alpha", P1];
    let refused = format!("error: Failed to delete network port {P1}\n");
    assert_eq!(vsh(root, true, &delete).stderr, refused);
    let r = text(
        Command::new("virsh")
            .args(["-c", &plain])
            .args(delete)
            .output()
            .unwrap(),
    );
    assert_eq!(r.stderr, refused);
    let args = ["net-port-create", "alpha", "p2.xml"];
    let want = "operation forbidden: read only access prevents virNetworkPortCreateXML";
    let r = vsh(root, true, &args);
    assert!(
        r.code == 1 && r.stderr.contains(want),
        "virsh -r {args:?}: {r:?}"
    );
    let out = Command::new("virsh")
        .args(["-c", &plain])
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    let r = text(out);
    assert!(
        r.code == 1 && r.stderr.contains(want),
        "virsh {args:?} on -ro: {r:?}"
    );
    assert_eq!(
        after.stdout,
        ok(root, &["net-port-list", "alpha", "--uuid"])
    );
}

const PY_PORTS: &str = r#"
import json, sys
import libvirt

uri, ro_uri, xml, bw_xml = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
conn = libvirt.open(uri)
net = conn.networkLookupByName("alpha")
out = {"empty": net.listAllPorts()}
def err(f):
    try:
        f()
        return None
    except libvirt.libvirtError as e:
        return [e.get_error_code(), e.get_error_domain(), str(e)]
port = net.portCreateXML(xml)
out["created"] = port.UUIDString()
out["list"] = [p.UUIDString() for p in net.listAllPorts()]
out["xml"] = port.XMLDesc()
out["params"] = port.parameters()
out["lookup"] = net.portLookupByUUIDString(out["created"]).UUIDString()
out["exists"] = err(lambda: net.portCreateXML(xml))
out["nosuch"] = err(lambda: net.portLookupByUUIDString("99999999-08a2-410a-824c-15a34137c1f8"))
out["flags"] = err(lambda: net.portCreateXML(xml, 4))
out["xml_flags"] = err(lambda: port.XMLDesc(1))
plugged = out["xml"]
out["reclaim_none"] = err(lambda: net.portCreateXML(xml, libvirt.VIR_NETWORK_PORT_CREATE_RECLAIM))
bw = net.portCreateXML(bw_xml)
out["bw_params"] = bw.parameters()
bw.setParameters({"inbound.average": 1000, "inbound.burst": 64, "outbound.peak": 7})
out["bw_set"] = bw.parameters()
out["bw_xml"] = bw.XMLDesc()
ro = libvirt.openReadOnly(ro_uri)
rnet = ro.networkLookupByName("alpha")
out["ro_list"] = sorted(p.UUIDString() for p in rnet.listAllPorts())
out["ro_create"] = err(lambda: rnet.portCreateXML(bw_xml))
out["ro_delete"] = err(lambda: rnet.portLookupByUUIDString(out["created"]).delete())
out["ro_set"] = err(lambda: rnet.portLookupByUUIDString(bw.UUIDString()).setParameters({"inbound.average": 1}))
rw_on_ro = libvirt.open(ro_uri)
out["ro_daemon_delete"] = err(lambda: rw_on_ro.networkLookupByName("alpha").portLookupByUUIDString(out["created"]).delete())
port.delete()
bw.delete()
out["deleted"] = err(lambda: port.XMLDesc())
out["after"] = net.listAllPorts()
print(json.dumps(out))
"#;

#[test]
fn python_bindings_drive_ports() {
    in_netns(
        "python_bindings_drive_ports",
        Ns::User,
        python_bindings_drive_ports_body,
    );
}

fn python_bindings_drive_ports_body() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    let script = write(root, "ports.py", PY_PORTS);
    let _d = Daemon::start(root);
    ok(root, &["net-define", "alpha.xml"]);
    ok(root, &["net-start", "alpha"]);
    let bw = qemu_port(P2, "52:54:00:11:22:34").replace(
        "</networkport>",
        "  <bandwidth>\n    <inbound average='100' peak='200' burst='10'/>\n    <outbound average='300'/>\n  </bandwidth>\n</networkport>",
    );
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(uri(&sock(root)))
        .arg(uri(&sock_ro(root)))
        .arg(qemu_port(P1, "52:54:00:11:22:33"))
        .arg(&bw)
        .output()
        .expect("python3 (with python3-libvirt) must be installed");
    let r = text(out);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["empty"], serde_json::json!([]));
    assert_eq!(v["created"], P1);
    assert_eq!(v["list"], serde_json::json!([P1]));
    assert_eq!(v["lookup"], P1);
    // The plug the network filled in, as the QEMU driver reads it back.
    assert_eq!(
        v["xml"],
        qemu_port(P1, "52:54:00:11:22:33").replace(
            "</networkport>",
            "  <plug type='network' bridge='virbr5'/>\n</networkport>"
        )
    );
    assert_eq!(v["params"], serde_json::json!({}));
    // VIR_ERR_NETWORK_PORT_EXIST, VIR_ERR_NO_NETWORK_PORT, VIR_ERR_INVALID_ARG
    // (virCheckFlags), all from VIR_FROM_NETWORK.
    assert_eq!(
        v["exists"],
        serde_json::json!([
            106,
            19,
            format!("network port Network port with UUID {P1} already exists exists already")
        ])
    );
    assert_eq!(
        v["nosuch"],
        serde_json::json!([
            107,
            19,
            format!("network port not found: Network port with UUID {NO_PORT} does not exist")
        ])
    );
    assert_eq!(
        v["flags"],
        serde_json::json!([
            8,
            19,
            "invalid argument: unsupported flags (0x4) in function networkPortCreateXML"
        ])
    );
    assert_eq!(
        v["xml_flags"],
        serde_json::json!([
            8,
            19,
            "invalid argument: unsupported flags (0x1) in function networkPortGetXMLDesc"
        ])
    );
    assert_eq!(
        v["reclaim_none"],
        serde_json::json!([
            8,
            19,
            "invalid argument: Port reclaim requested but plug type is none"
        ])
    );
    assert_eq!(
        v["bw_params"],
        serde_json::json!({"inbound.average": 100, "inbound.peak": 200, "inbound.floor": 0, "inbound.burst": 10,
            "outbound.average": 300, "outbound.peak": 0, "outbound.burst": 0})
    );
    // networkPortSetParameters: fields not given are 0, and the outbound
    // rate without an average is dropped.
    assert_eq!(
        v["bw_set"],
        serde_json::json!({"inbound.average": 1000, "inbound.peak": 0, "inbound.floor": 0, "inbound.burst": 64})
    );
    assert!(v["bw_xml"]
        .as_str()
        .unwrap()
        .contains("<inbound average='1000' burst='64'/>"));
    assert_eq!(v["ro_list"], serde_json::json!([P2, P1]));
    for k in ["ro_create", "ro_delete", "ro_set"] {
        assert_eq!(v[k][0], 29, "{k}: {}", v[k]);
    }
    assert_eq!(
        v["ro_daemon_delete"],
        serde_json::json!([
            29,
            19,
            "operation forbidden: read only access prevents virNetworkPortDelete"
        ])
    );
    assert_eq!(v["deleted"][0], 107);
    assert_eq!(v["after"], serde_json::json!([]));
    assert_eq!(ok(root, &["net-port-list", "alpha", "--uuid"]), "\n");
}

// ---------------------------------------------------------------------
// Procedures slipway does not serve: what virtnetworkd answers.

/// Debian's libvirtd 9.0 in session mode, as `nobody` with its own XDG
/// directories under `dir`: the oracle for what libvirt answers on a
/// connection opened to the network driver. Killed on drop (and with the
/// test's namespace).
struct Libvirtd {
    sock: PathBuf,
    _child: KillOnDrop,
}

impl Libvirtd {
    fn start(dir: &Path) -> Libvirtd {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let sock = dir.join("run/libvirt/libvirt-sock");
        let child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg("libvirtd")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", dir.join("home"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("libvirtd (Debian package libvirt-daemon) must be installed");
        let d = Libvirtd {
            sock,
            _child: KillOnDrop(child),
        };
        for _ in 0..300 {
            if UnixStream::connect(&d.sock).is_ok() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("libvirtd did not listen on {}", d.sock.display());
    }

    fn uri(&self) -> String {
        format!("network:///session?socket={}", self.sock.display())
    }
}

/// Calls of drivers a network daemon lacks, through python3-libvirt: for
/// each, `[code, domain, message]` of the error, or `"ok"`.
const PY_UNSERVED: &str = r#"
import json, sys, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open(sys.argv[1])
calls = {
    "getSysinfo": lambda: conn.getSysinfo(0),
    "lookupDomain": lambda: conn.lookupByName("vm1"),
    "nodeMemoryStats": lambda: conn.getMemoryStats(-1, 0),
    "defineDomain": lambda: conn.defineXML("<domain/>"),
    "listAllInterfaces": lambda: conn.listAllInterfaces(0),
    "listAllStoragePools": lambda: conn.listAllStoragePools(0),
    "listAllDevices": lambda: conn.listAllDevices(0),
    "listAllSecrets": lambda: conn.listAllSecrets(0),
    "listAllNWFilters": lambda: conn.listAllNWFilters(0),
}
out = {}
for name, f in calls.items():
    try:
        f()
        out[name] = "ok"
    except libvirt.libvirtError as e:
        out[name] = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
out["networks"] = sorted(n.name() for n in conn.listAllNetworks(0))
print(json.dumps(out))
"#;

fn py_unserved(root: &Path, uri: &str) -> serde_json::Value {
    let script = write(root, "unserved.py", PY_UNSERVED);
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(uri)
        .output()
        .expect("python3 (with python3-libvirt) must be installed");
    let r = text(out);
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(r.stdout.trim()).unwrap()
}

/// Every procedure of libvirt's remote program that slipway does not
/// serve gets what virtnetworkd answers: a call on the hypervisor
/// connection runs the public API on the network driver's connection, so
/// "not supported" naming that API (VIR_ERR_NO_SUPPORT in the API's error
/// domain), exactly as Debian's libvirtd says on a network:/// connection
/// (the oracle here); a call of another driver (storage, interface, node
/// device, secret, nwfilter) finds no connection for it in virtnetworkd
/// ("internal error: connection not open", read from libvirt 9.0's
/// `remoteDispatchConnectOpen`/`remoteOpenConn`; the monolithic libvirtd
/// says "not supported" there instead). A read-only connection is refused
/// a write before the driver is asked; a number that is no procedure, or
/// an event's, gets "unknown procedure". The daemon answers after each.
#[test]
fn unserved_procedures_get_virtnetworkds_errors() {
    // Root: libvirtd runs as `nobody`, unmapped in a user namespace.
    enter_netns!(Ns::Root);
    let (dir, _d) = alpha_beta_daemon();
    let root = dir.path();
    ok(root, &["net-define", "alpha.xml"]);
    let oracle_dir = tempfile::tempdir().unwrap();
    let libvirtd = Libvirtd::start(oracle_dir.path());

    let ours = py_unserved(root, &uri(&sock(root)));
    let theirs = py_unserved(root, &libvirtd.uri());
    let no_support = |api: &str, domain: i32| {
        serde_json::json!([
            3,
            domain,
            format!("this function is not supported by the connection driver: {api}")
        ])
    };
    for (call, api) in [
        ("getSysinfo", "virConnectGetSysinfo"),
        ("lookupDomain", "virDomainLookupByName"),
        ("nodeMemoryStats", "virNodeGetMemoryStats"),
        ("defineDomain", "virDomainDefineXML"),
    ] {
        // VIR_FROM_DOMAIN: libvirt-host.c's and libvirt-domain.c's domain.
        assert_eq!(ours[call], no_support(api, 20), "{call}");
        assert_eq!(
            ours[call], theirs[call],
            "{call}: slipway and libvirtd differ"
        );
    }
    for call in [
        "listAllInterfaces",
        "listAllStoragePools",
        "listAllDevices",
        "listAllSecrets",
        "listAllNWFilters",
    ] {
        // VIR_ERR_INTERNAL_ERROR from VIR_FROM_RPC.
        assert_eq!(
            ours[call],
            serde_json::json!([1, 7, "internal error: connection not open"]),
            "{call}"
        );
        // libvirtd's monolithic daemon: the public API without a driver.
        assert_eq!(theirs[call][0], 3, "{call}: {}", theirs[call]);
    }
    assert_eq!(ours["networks"], serde_json::json!(["alpha"]));

    // virsh prints libvirt's words, the same through both daemons.
    for args in [
        &["sysinfo"][..],
        &["dominfo", "vm1"],
        &["nodememstats"],
        &["define", "/dev/null"],
    ] {
        let v = vsh(root, false, args);
        let lv = Command::new("virsh")
            .arg("-c")
            .arg(libvirtd.uri())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let lv = text(lv);
        assert_ne!(v.code, 0, "{args:?}");
        // (virsh's dominfo prints only its own line for a failed lookup.)
        assert!(
            args[0] == "dominfo"
                || v.stderr
                    .contains("this function is not supported by the connection driver: vir"),
            "{args:?}: {v:?}"
        );
        assert_eq!(
            (v.code, &v.stdout, &v.stderr),
            (lv.code, &lv.stdout, &lv.stderr),
            "virsh {args:?}: slipway and libvirtd differ"
        );
    }
    let pools = vsh(root, false, &["pool-list"]);
    assert_eq!(
        (pools.code, pools.stderr.as_str()),
        (
            1,
            "error: Failed to list pools\nerror: internal error: connection not open\n"
        ),
        "{pools:?}"
    );
    let devs = vsh(root, false, &["nodedev-list"]);
    assert_eq!(devs.code, 1, "{devs:?}");
    assert!(
        devs.stderr
            .ends_with("error: internal error: connection not open\n"),
        "{devs:?}"
    );

    // Raw calls: before open, on the read-only socket, outside the table.
    let dom_arg = {
        // remote_nonnull_domain: name, uuid, id.
        let mut a = xdr_string("vm1");
        a.extend([7u8; 16]);
        a.extend(1i32.to_be_bytes());
        a
    };
    let mut c = Raw::connect(&sock_ro(root));
    // CONNECT_GET_SYSINFO (203), DOMAIN_CREATE (9), CONNECT_LIST_ALL_STORAGE_POOLS (281).
    assert_eq!(
        c.call(203, 2, &[0, 0, 0, 0]).error(),
        (
            1,
            7,
            "internal error: hypervisor connection not open".into()
        )
    );
    assert_eq!(
        c.call(281, 3, &[0, 0, 0, 1, 0, 0, 0, 0]).error(),
        (1, 7, "internal error: connection not open".into())
    );
    c.open();
    assert_eq!(
        c.call(9, 4, &dom_arg).error(),
        (
            29,
            20,
            "operation forbidden: read only access prevents virDomainCreate".into()
        )
    );
    assert_eq!(
        c.call(203, 5, &[0, 0, 0, 0]).error(),
        (
            3,
            20,
            "this function is not supported by the connection driver: virConnectGetSysinfo".into()
        )
    );
    // A network write is refused as before: NETWORK_CREATE (39).
    let mut net = xdr_string("alpha");
    net.extend([
        0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55,
        0x55,
    ]);
    assert_eq!(
        c.call(39, 6, &net).error(),
        (
            29,
            19,
            "operation forbidden: read only access prevents virNetworkCreate".into()
        )
    );
    // The read-write socket: the write reaches the (missing) driver.
    let mut w = Raw::connect(&sock(root));
    w.open();
    assert_eq!(
        w.call(9, 2, &dom_arg).error(),
        (
            3,
            20,
            "this function is not supported by the connection driver: virDomainCreate".into()
        )
    );
    // SASL on a socket without it.
    assert_eq!(
        w.call(67, 3, &[]).error(),
        (45, 7, "authentication failed: authentication failed".into())
    );
    // No procedure 444 in libvirt 9.0; 107 is DOMAIN_EVENT_LIFECYCLE, a
    // message the daemon sends, never a call.
    for (n, serial) in [(444, 4), (107, 5), (0, 6), (-3, 7)] {
        assert_eq!(
            w.call(n, serial, &[]).error(),
            (39, 7, format!("unknown procedure: {n}")),
            "{n}"
        );
    }
    still_serving(root);
    assert_eq!(
        vsh(root, true, &["net-list", "--all", "--name"]).stdout,
        "alpha\n\n"
    );
}
