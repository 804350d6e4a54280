//! `slipway user --metrics`: Prometheus text format, read by Prometheus's
//! own Python parser (Debian's python3-prometheus-client), with the
//! counters of what a VM sent; and the listener's bounds (connections, the
//! request head, the per-connection deadline, methods and paths).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
mod net_common;

use common::{arp_request, send_frame, Slipway};
use net_common::{in_netns, ok, service_pid, write, Daemon, Ns};
use slipway_testkit::netns::{sh, wait_for, NsGuest};

/// The metrics address `slipway user` logged ("metrics on http://ADDR/metrics").
fn metrics_addr(slipway: &Slipway) -> String {
    let log = slipway.log();
    log.lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics line:\n{log}"))
        .to_string()
}

fn get(mut stream: impl Read + Write, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// The samples of a text-format body as Prometheus's parser reads them:
/// `name{labels}` (labels sorted, as JSON) to value, one per line.
fn parse_with_prometheus_client(body: &str) -> std::collections::BTreeMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps([family.type, s.name, s.labels, s.value], sort_keys=True))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (Debian's, with python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the body: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = format!("{}{}", v[1].as_str().unwrap(), v[2]);
            (key, v[3].as_f64().unwrap())
        })
        .collect()
}

fn start(dir: &Path, metrics: &str, env: &[(&str, &str)]) -> Slipway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.envs(env.iter().copied());
    let mut slipway = Slipway::spawn(
        cmd,
        &[
            "--dns-upstream".into(),
            "127.0.0.1".into(),
            "--socket".into(),
            dir.join("vm.sock").display().to_string(),
            "--metrics".into(),
            metrics.into(),
        ],
    );
    slipway.wait_for_listening();
    slipway
}

#[test]
fn metrics_parse_with_prometheus_client_and_count_the_vms_frames() {
    let dir = tempfile::tempdir().unwrap();
    let slipway = start(dir.path(), "127.0.0.1:0", &[]);
    let addr = metrics_addr(&slipway);

    let mut vm = UnixStream::connect(dir.path().join("vm.sock")).unwrap();
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let arp = arp_request(mac, [10, 0, 2, 15]);
    send_frame(&mut vm, &arp);
    // An EtherType the stack does not serve: one drop.
    let mut odd = vec![0xff; 6];
    odd.extend_from_slice(&mac);
    odd.extend_from_slice(&[0x88, 0xb5]);
    odd.extend_from_slice(&[0; 46]);
    send_frame(&mut vm, &odd);
    vm.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut len = [0u8; 4];
    vm.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    vm.read_exact(&mut reply).unwrap();

    let want_in = 2.0;
    let mut samples = Default::default();
    // The drop is counted once the loop has read the second frame.
    for _ in 0..200 {
        let response = get(
            TcpStream::connect(&addr).unwrap(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        samples = parse_with_prometheus_client(body);
        if samples["slipway_frames_total{\"direction\":\"from_guest\"}"] >= want_in {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = |k: &str| {
        *samples
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing: {samples:#?}"))
    };
    assert_eq!(
        s("slipway_frames_total{\"direction\":\"from_guest\"}"),
        want_in
    );
    assert_eq!(s("slipway_frames_total{\"direction\":\"to_guest\"}"), 1.0);
    assert_eq!(
        s("slipway_bytes_total{\"direction\":\"from_guest\"}"),
        (arp.len() + odd.len()) as f64
    );
    assert_eq!(
        s("slipway_bytes_total{\"direction\":\"to_guest\"}"),
        reply.len() as f64
    );
    assert_eq!(
        s("slipway_drops_total{\"reason\":\"unsupported-protocol\"}"),
        1.0
    );
    assert_eq!(s("slipway_drops_total{\"reason\":\"truncated\"}"), 0.0);
    assert_eq!(s("slipway_flows{\"protocol\":\"tcp\"}"), 0.0);
    assert_eq!(s("slipway_dhcp_leases{}"), 0.0);
    assert_eq!(s("slipway_dns_queries_total{}"), 0.0);
    assert_eq!(s("slipway_dns_upstream_failures_total{}"), 0.0);
}

#[test]
fn metrics_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.sock");
    let slipway = start(dir.path(), &format!("unix:{}", path.display()), &[]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let response = get(
        UnixStream::connect(&path).unwrap(),
        b"GET /metrics HTTP/1.0\r\n\r\n",
    );
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let samples = parse_with_prometheus_client(body);
    assert!(
        samples.contains_key("slipway_drops_total{\"reason\":\"flow-limit\"}"),
        "{samples:?}"
    );
    drop(slipway.terminate_ok());
    assert!(!path.exists(), "metrics socket file left behind");
}

/// The bounds: 16 connections (the 17th is closed unanswered), an 8 KiB
/// request head (431), a deadline per connection, GET/HEAD on /metrics
/// only.
#[test]
fn metrics_listener_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let slipway = start(
        dir.path(),
        "127.0.0.1:0",
        &[("SLIPWAY_METRICS_TIMEOUT_MS", "3000")],
    );
    let addr = metrics_addr(&slipway);
    let status = |request: &[u8]| {
        let r = get(TcpStream::connect(&addr).unwrap(), request);
        r.lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(
        status(b"POST /metrics HTTP/1.0\r\n\r\n"),
        "HTTP/1.0 405 Method Not Allowed"
    );
    assert_eq!(
        status(b"GET /other HTTP/1.0\r\n\r\n"),
        "HTTP/1.0 404 Not Found"
    );
    let head = status(b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(head, "HTTP/1.0 200 OK");
    let mut big = b"GET /metrics HTTP/1.0\r\nX-Pad: ".to_vec();
    big.resize(9000, b'a');
    assert_eq!(status(&big), "HTTP/1.0 431 Request Header Fields Too Large");

    // 16 idle connections hold every slot: the next is closed unanswered.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "answered past the limit: {}",
        String::from_utf8_lossy(&got)
    );
    // Closed at once, not at its deadline: the 16, connected before it,
    // are still open (their deadline would have closed them first).
    idle[0].set_nonblocking(true).unwrap();
    let still_open = idle[0].peek(&mut [0u8; 1]);
    assert!(
        matches!(&still_open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the 17th connection was only closed at its deadline: {still_open:?}"
    );
    idle[0].set_nonblocking(false).unwrap();
    // Their deadline closes them, answered nothing; then scrapes work again.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got)
            .expect("closed by the server, not timed out here");
        assert!(got.is_empty());
    }
    assert_eq!(status(b"GET /metrics HTTP/1.0\r\n\r\n"), "HTTP/1.0 200 OK");
    drop(slipway);
}

const LAB: &str = "<network><name>lab</name><forward mode='nat'/><bridge name='br-lab'/>\
<ip address='10.44.0.1' netmask='255.255.255.0'>\
<dhcp><range start='10.44.0.100' end='10.44.0.199'/></dhcp></ip></network>";
const IDLE: &str = "<network><name>idle</name><bridge name='br-idle'/>\
<ip address='10.45.0.1' netmask='255.255.255.0'/></network>";

/// `slipway daemon --metrics`: each network's state, the restarts of its
/// service, and what the service counted (leases, DNS), read from the
/// file it writes next to its leases; read by prometheus_client's parser.
#[test]
fn daemon_metrics_show_networks_restarts_and_service_counts() {
    in_netns(
        "daemon_metrics_show_networks_restarts_and_service_counts",
        Ns::User,
        daemon_metrics,
    );
}

fn daemon_metrics() {
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let log = root.join("daemon.log");
    let _daemon = Daemon::start_with(root, &["--metrics", "127.0.0.1:0"], &log);
    let logged = std::fs::read_to_string(&log).unwrap();
    let addr = logged
        .lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics line:\n{logged}"))
        .to_string();
    write(root, "lab.xml", LAB);
    write(root, "idle.xml", IDLE);
    ok(root, &["net-define", "lab.xml"]);
    ok(root, &["net-define", "idle.xml"]);
    ok(root, &["net-start", "lab"]);
    let first = service_pid(root, "lab");
    sh(&format!("kill -9 {first}"));
    wait_for("the daemon to restart the service", || {
        service_pid(root, "lab") != first
    });
    // A guest on the bridge takes a lease and asks a name the service
    // relays to the (unreachable) upstream.
    let guest = NsGuest::new("br-lab", "vs1", "52:54:00:00:44:21");
    guest.udhcpc(root, "guest1");
    guest.run("busybox nslookup www.example.com 10.44.0.1; true");
    let scrape = || {
        let r = get(
            TcpStream::connect(&addr).unwrap(),
            b"GET /metrics HTTP/1.0\r\n\r\n",
        );
        parse_with_prometheus_client(r.split_once("\r\n\r\n").unwrap().1)
    };
    let key = |name: &str, net: &str| format!("{name}{{\"network\":\"{net}\"}}");
    let mut samples = scrape();
    for _ in 0..100 {
        let dns = |n| samples.get(&key(n, "lab")).copied().unwrap_or(0.0);
        if dns("slipway_network_dns_upstream_queries_total")
            + dns("slipway_network_dns_upstream_failures_total")
            > 0.0
            && dns("slipway_network_dhcp_leases") == 1.0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        samples = scrape();
    }
    let s = |k: String| {
        *samples
            .get(&k)
            .unwrap_or_else(|| panic!("{k} missing: {samples:#?}"))
    };
    assert_eq!(s(key("slipway_network_active", "lab")), 1.0);
    assert_eq!(s(key("slipway_network_active", "idle")), 0.0);
    assert_eq!(s(key("slipway_network_service_restarts_total", "lab")), 1.0);
    assert_eq!(
        s(key("slipway_network_service_restarts_total", "idle")),
        0.0
    );
    assert_eq!(s(key("slipway_network_dhcp_leases", "lab")), 1.0);
    assert!(
        s(key("slipway_network_dns_upstream_queries_total", "lab"))
            + s(key("slipway_network_dns_upstream_failures_total", "lab"))
            > 0.0,
        "{samples:#?}"
    );
    // A stopped network has no service to count for it.
    assert!(!samples.contains_key(&key("slipway_network_dhcp_leases", "idle")));
    assert!(s("slipway_daemon_connections".to_string() + "{}") >= 0.0);
    ok(root, &["net-destroy", "lab"]);
    drop(guest);
}
