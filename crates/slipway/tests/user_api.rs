//! The runtime control API end to end: `slipway user --api` with a real
//! guest, driven by `slipway ctl`. A forward added at run time reaches a
//! busybox httpd in the guest; once removed, its port is closed; leases,
//! flows and counters show what the guest did.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use slipway_testkit::{Guest, TcpEchoServer};

mod common;
use common::{assert_serves, s, unix_stream_netdev, wait_line, Slipway};

/// Runs `slipway ctl --api API ARGS`; returns success, stdout and stderr.
fn ctl(api: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("ctl")
        .arg("--api")
        .arg(api)
        .args(args)
        .output()
        .expect("slipway ctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ctl` with `--json`, which must succeed; returns the parsed reply.
fn ctl_json(api: &Path, args: &[&str], slipway: &Slipway) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = ctl(api, &all);
    assert!(ok, "ctl {args:?} failed: {err}\n{out}\n{}", slipway.log());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Without a stack behind the path, `ctl` fails with a message naming it.
#[test]
fn ctl_without_a_stack_names_the_socket() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let api = dir.path().join("nothing.sock");
    let (ok, _, err) = ctl(&api, &["counters"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&api.display().to_string()) && err.contains("connect"),
        "{err}"
    );
}

#[test]
fn forwards_added_and_removed_at_run_time() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let sock = dir.path().join("vm.sock");
    let api = dir.path().join("api.sock");
    let echo = TcpEchoServer::start().unwrap();
    let mut slipway = Slipway::start(&[
        s("--socket"),
        sock.display().to_string(),
        s("--api"),
        api.display().to_string(),
        s("--dns-upstream"),
        s("127.0.0.1:9"),
    ]);
    slipway.wait_for_path(&sock);
    assert!(
        api.exists(),
        "the API socket exists once the VM socket does"
    );

    // Before any VM: empty lists, not errors.
    let leases = ctl_json(&api, &["leases"], &slipway);
    assert_eq!(leases["ok"]["leases"], serde_json::json!([]), "{leases}");

    let script = format!(
        "dhcp eth0 || exit 1\n\
         mkdir -p /www && echo runtime-forward-page > /www/index.html\n\
         httpd -p 8080 -h /www\n\
         (echo hello-flow; sleep 300) | nc 10.0.2.2 {echo} > /dev/null &\n\
         ready serving\n\
         sleep 300\n",
        echo = echo.port()
    );
    let mut guest = Guest::builder()
        .netdev(&unix_stream_netdev(&sock))
        .mac("52:54:00:12:34:56")
        .script(&script)
        .timeout(Duration::from_secs(400))
        .boot()
        .unwrap();
    wait_line(&mut guest, "SLIPWAY-READY serving", &slipway);

    // The lease.
    let leases = ctl_json(&api, &["leases"], &slipway);
    let list = leases["ok"]["leases"].as_array().expect("lease list");
    assert_eq!(list.len(), 1, "{leases}");
    assert_eq!(list[0]["mac"], "52:54:00:12:34:56", "{leases}");
    assert_eq!(list[0]["ip"], "10.0.2.15", "{leases}");
    assert!(list[0]["expires_in_secs"].as_u64().unwrap() > 80000);

    // The guest's open connection to the echo server, with its bytes:
    // "hello-flow\n" out and echoed back.
    let remote = format!("10.0.2.2:{}", echo.port());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let flows = ctl_json(&api, &["flows"], &slipway);
        let found = flows["ok"]["flows"].as_array().and_then(|l| {
            l.iter()
                .find(|f| f["protocol"] == "tcp" && f["remote"] == remote.as_str())
                .cloned()
        });
        if let Some(f) = found {
            if f["bytes_from_guest"] == 11 && f["bytes_to_guest"] == 11 {
                assert!(
                    f["guest"].as_str().unwrap().starts_with("10.0.2.15:"),
                    "{f}"
                );
                assert!(f["age_secs"].is_u64(), "{f}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no flow to {remote} with 11 bytes each way: {flows}\n{}",
            slipway.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The text form names the same flow.
    let (ok, text, _) = ctl(&api, &["flows"]);
    assert!(
        ok && text.contains(&format!("-> {remote} from_guest=11 to_guest=11")),
        "{text}"
    );

    // A forward added now reaches the guest's httpd.
    let port = slipway_testkit::free_port().unwrap();
    let (ok, out, err) = ctl(
        &api,
        &["add-forward", &format!("tcp:127.0.0.1:{port}-:8080")],
    );
    assert!(ok, "{err}\n{}", slipway.log());
    assert_eq!(
        out.trim(),
        format!("added tcp 127.0.0.1:{port} -> 10.0.2.15:8080")
    );
    assert_serves(("127.0.0.1", port), "runtime-forward-page", &slipway);
    let (ok, out, _) = ctl(&api, &["forwards"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("tcp 127.0.0.1:{port} -> 10.0.2.15:8080")
    );
    // The same address again is refused by the host, with the reason.
    let (ok, _, err) = ctl(
        &api,
        &["add-forward", &format!("tcp:127.0.0.1:{port}-:8080")],
    );
    assert!(!ok && err.contains("in use"), "{err}");

    // Removed: the port is closed, and a second removal says there is none.
    let (ok, out, err) = ctl(&api, &["remove-forward", &format!("tcp:127.0.0.1:{port}")]);
    assert!(ok, "{err}");
    assert!(out.starts_with("removed tcp"), "{out}");
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    let (ok, _, err) = ctl(&api, &["remove-forward", &format!("tcp:127.0.0.1:{port}")]);
    assert!(!ok && err.contains("no tcp forward"), "{err}");
    let (ok, out, _) = ctl(&api, &["forwards"]);
    assert!(ok && out.is_empty(), "{out}");

    // A bad spec is an error reply, and the stack goes on.
    let (ok, _, err) = ctl(&api, &["add-forward", "tcp::99999-:80"]);
    assert!(!ok && err.contains("99999"), "{err}");

    // Counters: frames both ways, drops listed by name. At least the
    // frames no stack can merge: from the guest, DHCP's DISCOVER and
    // REQUEST, the echo flow's SYN, handshake ACK and data, the forward's
    // SYN-ACK and response; to it, DHCP's OFFER and ACK, the echo flow's
    // SYN-ACK and echo, the forward's SYN and request. (How many bare
    // ACKs and FINs come on top depends on timing: CI once saw 10 out.)
    let counters = ctl_json(&api, &["counters"], &slipway);
    let c = &counters["ok"];
    assert_eq!(c["type"], "counters", "{counters}");
    assert!(c["frames_in"].as_u64().unwrap() >= 7, "{counters}");
    assert!(c["frames_out"].as_u64().unwrap() >= 6, "{counters}");
    assert!(c["drops"]["bad-checksum"].is_u64(), "{counters}");

    drop(guest);
    slipway.wait_exit_ok();
    assert!(!api.exists(), "API socket left behind");
}
