//! End-to-end: `slipway net-*` and `slipway daemon` bringing networks up on
//! Linux for real (bridge, nftables, the DHCP/DNS service), each test in a
//! user + network namespace of its own (`unshare -Urn`); "guests" are
//! further namespaces wired to the bridge by veth pairs. Nothing touches the
//! machine's own namespace.
//!
//! Needs: util-linux (unshare, nsenter), iproute2, nftables, busybox-static.

mod net_common;

use std::path::Path;
use std::process::Command;

use net_common::*;

/// Runs a shell command in this (the test's) namespace; panics with its
/// output if it fails; returns stdout.
fn sh(cmd: &str) -> String {
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

/// Links and the nft ruleset (without counter values).
fn snapshot() -> (String, String) {
    (
        sh("ip -o link show | cut -d: -f2 | sort"),
        sh("nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'"),
    )
}

/// The pid of the DHCP/DNS service of `net`, from the backend's record.
fn service_pid(root: &Path, net: &str) -> i32 {
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state_dir(root).join(format!("hostnet/{net}.json"))).unwrap(),
    )
    .unwrap();
    rec["service"]["pid"].as_i64().unwrap() as i32
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| !st.contains(") Z "))
}

const CUSTOM: &str = "<network><name>lab</name><forward mode='nat'/>\
  <bridge name='br-lab'/><domain name='lab.test'/>\
  <ip address='10.44.0.1' prefix='24'><dhcp><range start='10.44.0.10' end='10.44.0.20'/></dhcp></ip>\
  </network>";

#[test]
fn net_start_creates_bridges_and_destroy_removes_them() {
    in_netns(
        "net_start_creates_bridges_and_destroy_removes_them",
        Ns::User,
        start_and_destroy,
    );
}

fn start_and_destroy() {
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let before = snapshot();
    write(root, "lab.xml", CUSTOM);
    ok(root, &["net-define", "lab.xml"]);
    assert_eq!(
        ok(root, &["net-start", "default"]),
        "Network default started\n\n"
    );
    assert_eq!(ok(root, &["net-start", "lab"]), "Network lab started\n\n");
    let addr = sh("ip addr show virbr0");
    assert!(addr.contains("inet 192.168.122.1/24"), "{addr}");
    let addr = sh("ip addr show br-lab");
    assert!(addr.contains("inet 10.44.0.1/24"), "{addr}");
    let rules = snapshot().1;
    for want in [
        "table ip slipway_network",
        "table ip6 slipway_network",
        "chain guest_nat",
        "ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade",
        "ip saddr 10.44.0.0/24 ip daddr != 10.44.0.0/24 counter masquerade",
    ] {
        assert!(rules.contains(want), "missing {want:?} in\n{rules}");
    }
    let pids = [service_pid(root, "default"), service_pid(root, "lab")];
    assert!(pids.iter().all(|p| alive(*p)));
    // No lease yet: virsh's header alone, the dash row each column's width
    // plus three.
    assert_eq!(
        ok(root, &["net-dhcp-leases", "lab"]),
        format!(
            " Expiry Time   MAC address   Protocol   IP address   Hostname   Client ID or DUID\n{}\n\n",
            "-".repeat(11 + 11 + 8 + 10 + 8 + 17 + 6 * 3)
        )
    );
    assert_eq!(
        ok(root, &["net-destroy", "lab"]),
        "Network lab destroyed\n\n"
    );
    ok(root, &["net-destroy", "default"]);
    assert_eq!(snapshot(), before);
    for p in pids {
        net_common::wait_for("the service to exit", || !alive(p));
    }
}
