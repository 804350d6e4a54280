//! One error style and virsh's exit codes: every refused command line is
//! one `error: …` line on standard error and exit status 1 (as virsh, and
//! as slirp4netns when slipway stands in for it); `--json` on the listings
//! and on errors; `--dns-upstream` without a port; `--listen-tcp` with a
//! host name; global flags before or after the subcommand.
//!
//! virsh's `test:///default` driver and slirp4netns are the oracles.

use std::process::{Command, Stdio};

mod common;
mod net_common;

use net_common::{sw, virsh, write, Run, BIN};

const NET_XML: &str = "<network><name>alpha</name>\
<bridge name='alpha0'/><ip address='192.168.150.1' netmask='255.255.255.0'/></network>";

fn assert_one_error_line(r: &Run, what: &str) {
    assert_eq!(r.code, 1, "{what}: {r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line wanted: {r:?}");
    assert!(lines[0].starts_with("error: "), "{what}: {r:?}");
    assert!(r.stdout.is_empty(), "{what}: {r:?}");
}

/// Usage errors of the net-* commands (and of every other command) are one
/// `error:` line and exit 1, as virsh's are.
#[test]
fn usage_errors_are_one_error_line_and_exit_1_as_in_virsh() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (virsh_cmd, args, needle) in [
        (
            "net-info",
            &["net-info"][..],
            "<NETWORK|--network <NETWORK>>",
        ),
        (
            "net-info --bogus x",
            &["net-info", "--bogus", "x"][..],
            "'--bogus'",
        ),
        (
            "net-list --bogus",
            &["net-list", "--bogus"][..],
            "'--bogus'",
        ),
        ("nosuchcmd", &["nosuchcmd"][..], "'nosuchcmd'"),
    ] {
        let theirs = virsh(root, virsh_cmd);
        assert_eq!(theirs.code, 1, "virsh {virsh_cmd}: {theirs:?}");
        assert!(theirs.stderr.starts_with("error: "), "{theirs:?}");
        let ours = sw(root, args);
        assert_one_error_line(&ours, virsh_cmd);
        assert!(ours.stderr.contains(needle), "{virsh_cmd}: {ours:?}");
        assert!(ours.stderr.contains("--help"), "{virsh_cmd}: {ours:?}");
    }
    // The other commands too, with the option and the value named.
    let r = sw(
        root,
        &["user", "--socket", "/nonexistent/s", "--mtu", "abc"],
    );
    assert_one_error_line(&r, "user --mtu abc");
    assert!(
        r.stderr.contains("--mtu") && r.stderr.contains("'abc'"),
        "{r:?}"
    );
    // No subcommand.
    let r = sw(root, &[]);
    assert_one_error_line(&r, "no subcommand");
    assert!(r.stderr.contains("requires a subcommand"), "{r:?}");
    // --help and --version are no errors.
    for arg in ["--help", "--version"] {
        let r = sw(root, &["net-list", arg]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(!r.stdout.is_empty() && r.stderr.is_empty(), "{r:?}");
    }
    // A command's failure: virsh's lines, status and empty stdout line.
    let theirs = virsh(root, "net-info nosuch");
    let ours = sw(root, &["net-info", "nosuch"]);
    assert_eq!(
        (ours.code, &ours.stdout, &ours.stderr),
        (theirs.code, &theirs.stdout, &theirs.stderr)
    );
}

/// As slirp4netns, slipway exits as slirp4netns does on a bad command line
/// (1), options after the positional arguments included.
#[test]
fn as_slirp4netns_usage_errors_exit_as_slirp4netns_does() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("slirp4netns");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    for args in [&["--bogus"][..], &["1", "tap0", "--mtu", "abc"][..]] {
        let theirs = Command::new("slirp4netns")
            .args(args)
            .output()
            .expect("slirp4netns (Debian package slirp4netns)");
        let ours = Command::new(&link).args(args).output().unwrap();
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        let err = String::from_utf8_lossy(&ours.stderr);
        assert!(
            err.starts_with("error: ") && err.contains("'slirp4netns --help'"),
            "{args:?}: {err}"
        );
    }
    let err = Command::new(&link)
        .args(["1", "tap0", "--mtu", "abc"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&err.stderr).contains("--mtu"));
}

/// `--json` on the listings (net-list, net-dhcp-leases, net-info) and on
/// errors: the error's class and virsh's lines on standard output, the
/// lines also on standard error.
#[test]
fn json_on_listings_and_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let xml = write(root, "alpha.xml", NET_XML);
    let r = sw(root, &["net-define", xml.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");

    let r = sw(root, &["net-info", "nosuch", "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON error");
    assert_eq!(v["error"]["code"], "not-found", "{r:?}");
    let lines: Vec<String> = r
        .stderr
        .lines()
        .map(|l| l["error: ".len()..].to_string())
        .collect();
    assert_eq!(v["error"]["messages"], serde_json::json!(lines), "{r:?}");
    assert_eq!(lines[0], "failed to get network 'nosuch'");

    let r = sw(root, &["net-list", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON list");
    assert_eq!(v[0]["name"], "alpha", "{r:?}");

    // The leases the service would have written (two: one expired).
    let leases = root.join("run/slipway/networks/hostnet/alpha.leases");
    std::fs::create_dir_all(&leases).unwrap();
    std::fs::write(
        leases.join("leases.json"),
        r#"[{"mac":"52:54:00:aa:bb:01","ip":"192.168.150.20","prefix":24,
             "hostname":"vm1","client_id":"01:52:54:00:aa:bb:01","expires":4000000000},
            {"mac":"52:54:00:aa:bb:02","ip":"192.168.150.21","prefix":24,
             "hostname":null,"client_id":null,"expires":10},
            {"mac":"52:54:00:aa:bb:03","ip":"fd00::5","prefix":64,
             "hostname":null,"client_id":"00:03:00:01:52:54:00:aa:bb:03","iaid":7,"expires":null}]"#,
    )
    .unwrap();
    let table = sw(root, &["net-dhcp-leases", "alpha"]);
    assert_eq!(table.code, 0, "{table:?}");
    let r = sw(root, &["net-dhcp-leases", "alpha", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON leases");
    // python-libvirt's DHCPLeases() dictionaries, the same leases as the table.
    assert_eq!(
        v,
        serde_json::json!([
            {"iface": "alpha0", "expirytime": 4000000000u64, "type": 0, "mac": "52:54:00:aa:bb:01",
             "iaid": null, "ipaddr": "192.168.150.20", "prefix": 24, "hostname": "vm1",
             "clientid": "01:52:54:00:aa:bb:01"},
            {"iface": "alpha0", "expirytime": 0, "type": 1, "mac": "52:54:00:aa:bb:03",
             "iaid": "7", "ipaddr": "fd00::5", "prefix": 64, "hostname": null,
             "clientid": "00:03:00:01:52:54:00:aa:bb:03"}
        ])
    );
    for l in v.as_array().unwrap() {
        assert!(
            table.stdout.contains(l["mac"].as_str().unwrap()),
            "{table:?}"
        );
    }
    assert!(!table.stdout.contains("52:54:00:aa:bb:02"));
    let r = sw(
        root,
        &[
            "net-dhcp-leases",
            "alpha",
            "--mac",
            "52:54:00:AA:BB:03",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{r:?}");
    let r = sw(root, &["net-dhcp-leases", "nosuch", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON error");
    assert_eq!(
        (r.code, &v["error"]["code"]),
        (1, &serde_json::json!("not-found"))
    );
}

/// `-v` and `--root` go before or after the subcommand; virsh's
/// `--network=NAME` form works too.
#[test]
fn global_flags_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let xml = write(root, "alpha.xml", NET_XML);
    let r = sw(root, &["net-define", xml.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let r = root.to_str().unwrap();
    let want = run(&["--root", r, "net-info", "alpha"]);
    assert!(want.contains("alpha0"), "{want}");
    for args in [
        &["net-info", "alpha", "--root", r][..],
        &["net-info", "--root", r, "--network=alpha"][..],
        &["-v", "net-info", "--network", "alpha", "--root", r][..],
        &["net-info", "alpha", "-v", "--root", r][..],
    ] {
        assert_eq!(run(args), want, "{args:?}");
    }
}

/// `--dns-upstream ADDR` without a port asks port 53: a dnsmasq on
/// 127.0.0.1:53 (in a network and PID namespace of the test's, where the
/// port is free; as root, so that dnsmasq can drop to its user) answers a
/// name through the stack.
#[test]
fn dns_upstream_without_a_port_is_port_53() {
    let script = r#"set -e
ip link set lo up
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --pid-file \
  --listen-address=127.0.0.1 --bind-interfaces --port=53 \
  --host-record=db.example.test,192.0.2.7 &
for i in $(seq 100); do
  dig +short +time=1 +tries=1 @127.0.0.1 db.example.test >/dev/null 2>&1 && break
  sleep 0.1
done
exec "$SLIPWAY" run --dns-upstream 127.0.0.1 -- dig +short +time=2 +tries=2 @10.0.2.3 db.example.test"#;
    let out = Command::new("unshare")
        .args([
            "-n",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            script,
        ])
        .env("SLIPWAY", BIN)
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "192.0.2.7\n",
        "{stderr}"
    );
}

/// `--listen-tcp` takes a host name: `localhost:PORT` listens on the
/// address the resolver gives for it first.
#[test]
fn listen_tcp_takes_a_host_name() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut slipway = common::Slipway::start(&[
        "--dns-upstream".into(),
        "127.0.0.1".into(),
        "--listen-tcp".into(),
        format!("localhost:{port}"),
    ]);
    slipway.wait_for_listening();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port))
        .unwrap()
        .next()
        .unwrap();
    assert!(
        slipway.log().contains(&addr.to_string()),
        "{}",
        slipway.log()
    );
    std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}\n{}", slipway.log()));
}
