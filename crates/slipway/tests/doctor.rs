//! `slipway doctor` in a namespace where each check fails, and in one where
//! they pass: user namespaces exhausted (`user.max_user_namespaces=0` in
//! the test's own user namespace), no /dev/net/tun (an empty tmpfs over
//! /dev/net in its mount namespace), no nft on PATH, no CAP_NET_ADMIN (a
//! bounding set without it), a `virbr0` bridge and a routed subnet in its
//! network namespace that defined networks want, Landlock and seccomp
//! answering ENOSYS (a seccomp filter of libseccomp's Python binding); the
//! sysctls a kernel may lack (unprivileged_userns_clone, AppArmor's
//! restriction) from a directory of the test's.

use std::path::Path;
use std::process::{Command, Stdio};

mod net_common;

use net_common::{sw, write, BIN};

fn define(root: &Path, name: &str, bridge: &str, address: &str) {
    let xml = format!(
        "<network><name>{name}</name><bridge name='{bridge}'/>\
         <ip address='{address}' netmask='255.255.255.0'/></network>"
    );
    let file = write(root, &format!("{name}.xml"), &xml);
    let r = sw(root, &["net-define", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
}

fn sysctl_dir(dir: &Path, values: &[(&str, &str)]) {
    for (key, value) in values {
        let path = dir.join(key.replace('.', "/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{value}\n")).unwrap();
    }
}

/// Runs `script` then `slipway doctor --json ARGS` (as `$DOCTOR`) in a new
/// user, network and mount namespace; returns the exit code, the findings
/// and stderr.
fn doctor_in_ns(script: &str) -> (i32, serde_json::Value, String) {
    let out = Command::new("unshare")
        .args(["-Urnm", "sh", "-c", script])
        .env("SLIPWAY", BIN)
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let findings = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), findings, stderr)
}

fn find<'a>(findings: &'a serde_json::Value, check: &str) -> &'a serde_json::Value {
    findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding: {findings:#}"))
}

/// Runs its arguments under a seccomp filter (libseccomp's Python
/// binding) that answers Landlock's and seccomp's own system calls ENOSYS,
/// as a kernel without them does.
const NO_SANDBOX_SYSCALLS: &str = "import errno, os, sys, seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
for call in (\"landlock_create_ruleset\", \"seccomp\"):
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), call)
f.load()
os.execvp(sys.argv[1], sys.argv[1:])";

#[test]
fn every_check_fails_where_the_host_lacks_it_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    define(&root, "clash", "virbr0", "192.168.151.1");
    define(&root, "routed", "br-routed", "192.168.150.1");
    let sysctls = dir.path().join("sys");
    sysctl_dir(
        &sysctls,
        &[
            ("user.max_user_namespaces", "0"),
            ("kernel.unprivileged_userns_clone", "0"),
            ("kernel.apparmor_restrict_unprivileged_userns", "1"),
            ("net.ipv4.ping_group_range", "1 0"),
        ],
    );
    let script = format!(
        r#"set -e
echo 0 > /proc/sys/user/max_user_namespaces
mount -t tmpfs none /dev/net
ip link add virbr0 type bridge
ip link add ve0 type veth peer name ve1
ip link set ve1 up
ip addr add 192.168.150.7/24 dev ve0
ip link set ve0 up
exec /usr/bin/python3 -c '{NO_SANDBOX_SYSCALLS}' \
  setpriv --bounding-set -net_admin --inh-caps -net_admin \
  env PATH=/nonexistent "$SLIPWAY" --root {root} doctor --json --sysctl-dir {sys}"#,
        root = root.display(),
        sys = sysctls.display()
    );
    let (code, findings, stderr) = doctor_in_ns(&script);
    assert_eq!(code, 1, "{findings:#}\n{stderr}");
    for (check, status, fix) in [
        ("userns", "fail", "sysctl"),
        (
            "user.max_user_namespaces",
            "fail",
            "sysctl -w user.max_user_namespaces=",
        ),
        (
            "kernel.unprivileged_userns_clone",
            "fail",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "warn",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
        ),
        ("tun", "fail", "modprobe tun"),
        ("nft", "fail", "apt-get install nftables"),
        ("capabilities", "warn", "sudo"),
        (
            "net.ipv4.ping_group_range",
            "warn",
            "sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"",
        ),
        ("bridge-name", "fail", "slipway net-edit clash"),
        ("subnet", "fail", "ip route del 192.168.150.0/24 dev ve0"),
    ] {
        let f = find(&findings, check);
        assert_eq!(f["status"], status, "{check}: {f:#}");
        let got = f["fix"].as_str().unwrap_or_default();
        assert!(got.contains(fix), "{check}: fix {got:?} lacks {fix:?}");
    }
    assert!(find(&findings, "bridge-name")["detail"]
        .as_str()
        .unwrap()
        .contains("virbr0"));
    let landlock = find(&findings, "landlock");
    assert_eq!(landlock["status"], "warn", "{landlock:#}");
    assert!(landlock["fix"].as_str().unwrap().contains("lsm=landlock"));
    let seccomp = find(&findings, "seccomp");
    assert_eq!(seccomp["status"], "fail", "{seccomp:#}");
    assert!(seccomp["fix"]
        .as_str()
        .unwrap()
        .contains("CONFIG_SECCOMP_FILTER"));
}

/// Where the host allows everything (root of a user namespace of its own,
/// nothing defined), every needed check passes and the exit status is 0;
/// the text form names each check.
#[test]
fn a_capable_host_passes() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"exec "$SLIPWAY" --root {} doctor --json"#,
        dir.path().display()
    );
    let (code, findings, stderr) = doctor_in_ns(&script);
    assert_eq!(code, 0, "{findings:#}\n{stderr}");
    for check in [
        "userns",
        "tun",
        "nft",
        "capabilities",
        "landlock",
        "seccomp",
        "clashes",
    ] {
        assert_eq!(find(&findings, check)["status"], "ok", "{findings:#}");
    }
    let text = Command::new("unshare")
        .args(["-Urn", BIN, "--root"])
        .arg(dir.path())
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[ok  ] tun: /dev/net/tun gives taps"),
        "{text}"
    );
}

/// A permission error elsewhere points at the doctor: a daemon that may
/// not create its socket's directory.
#[test]
fn permission_errors_point_at_the_doctor() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--root",
        ])
        .arg(dir.path())
        .arg("daemon")
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Permission denied") && stderr.contains("`slipway doctor`"),
        "{stderr}"
    );
}
