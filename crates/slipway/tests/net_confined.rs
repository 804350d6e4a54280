//! End-to-end: the DHCP/DNS/TFTP/RA service of a bridge network, started
//! by `slipway net-start` as real root, confines itself: the kernel reports
//! another user, only CAP_NET_ADMIN, no_new_privs and a seccomp filter, and
//! real clients still get everything it serves: busybox udhcpc (DHCP),
//! dig over UDP and TCP (DNS; TCP clients get a thread each), tftp-hpa
//! (TFTP; a thread per transfer), rdisc6 (router advertisements), a live
//! update (SIGHUP, the configuration reread) and the leases the confined
//! service wrote, read back by the next one. Runs in a network namespace of
//! its own (`unshare -n`, not a user namespace: the switch to `nobody`
//! needs the machine's users); the guest is a further namespace wired to
//! the bridge by a veth pair.
//!
//! Needs: root, util-linux, iproute2, nftables, busybox-static, dnsutils,
//! tftp-hpa, ndisc6.

mod net_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use net_common::*;
use slipway_testkit::netns::{sh, var, wait_for, NsGuest as Guest};

fn network(tftp: &Path) -> String {
    format!(
        "<network><name>box</name><forward mode='nat'/>\
         <bridge name='br-box'/><domain name='box.test'/>\
         <dns><host ip='10.47.0.5'><hostname>printer</hostname></host></dns>\
         <ip address='10.47.0.1' prefix='24'><tftp root='{}'/><dhcp>\
         <range start='10.47.0.10' end='10.47.0.20'/><bootp file='boot.txt'/></dhcp></ip>\
         <ip family='ipv6' address='fd00:47::1' prefix='64'/></network>",
        tftp.display()
    )
}

/// A field of a /proc/PID/status text.
fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

/// What the kernel says of the service's main thread and of every thread
/// it has (threads serving TCP clients or transfers included).
fn assert_confined(pid: i32) {
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| t.path().join("status"))
        .collect();
    for path in tasks {
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // a thread that ended meanwhile
        };
        let uids: Vec<&str> = field(&status, "Uid:").split_whitespace().collect();
        let gids: Vec<&str> = field(&status, "Gid:").split_whitespace().collect();
        assert_eq!(uids, ["65534"; 4], "{status}");
        assert_eq!(gids, ["65534"; 4], "{status}");
        assert_eq!(field(&status, "Groups:"), "", "{status}");
        // CAP_NET_ADMIN (12) only; nothing it could ever regain.
        assert_eq!(field(&status, "CapEff:"), "0000000000001000", "{status}");
        assert_eq!(field(&status, "CapPrm:"), "0000000000001000", "{status}");
        assert_eq!(field(&status, "CapInh:"), "0000000000000000", "{status}");
        assert_eq!(field(&status, "CapBnd:"), "0000000000000000", "{status}");
        assert_eq!(field(&status, "CapAmb:"), "0000000000000000", "{status}");
        assert_eq!(field(&status, "NoNewPrivs:"), "1", "{status}");
        assert_eq!(field(&status, "Seccomp:"), "2", "{status}");
    }
}

#[test]
fn the_bridge_service_runs_confined_and_still_serves() {
    enter_netns!(Ns::Root);
    sh("ip link set lo up");
    // The state directory is root's alone (0700, as tempdir makes it): the
    // confined service reaches its files through descriptors opened before.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tftp = root.join("tftp");
    std::fs::create_dir(&tftp).unwrap();
    std::fs::write(tftp.join("boot.txt"), "boot over tftp\n").unwrap();
    write(root, "box.xml", &network(&tftp));
    ok(root, &["net-define", "box.xml"]);
    ok(root, &["net-start", "box"]);
    let pid = service_pid(root, "box");
    assert_confined(pid);

    let guest = Guest::new("br-box", "vbox0", "52:54:00:47:00:02");
    // Router advertisements (raw ICMPv6 socket opened before the switch);
    // first, as udhcpc's script flushes the guest's addresses.
    wait_for("the guest's link-local address", || {
        let a = guest.run("ip -6 addr show dev eth0 scope link");
        a.contains("fe80:") && !a.contains("tentative")
    });
    let ra = guest.run("rdisc6 -1 eth0");
    assert!(
        ra.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains("Prefix : fd00:47::/64"),
        "{ra}"
    );

    // DHCP: a lease, written to disk by the confined service.
    let lease = guest.udhcpc(root, "guest1");
    let ip = var(&lease, "ip").to_string();
    assert!(ip.starts_with("10.47.0."), "{lease:?}");
    assert_eq!(var(&lease, "boot_file"), "boot.txt");
    let leases = state_dir(root).join("hostnet/box.leases/leases.json");
    let meta = std::fs::metadata(&leases).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "written as nobody"
    );
    let dir_meta = std::fs::metadata(leases.parent().unwrap()).unwrap();
    assert_eq!(dir_meta.uid(), 65534);
    assert!(std::fs::read_to_string(&leases).unwrap().contains("guest1"));

    // DNS over UDP and TCP (a thread per TCP client).
    // The answer (dig's last line; a failed try prints a line before it).
    let dig = |args: &str| {
        let cmd = guest
            .ns
            .cmd(&format!("dig +short +time=5 +tries=2 {args} @10.47.0.1"));
        let out = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().last().unwrap_or_default().trim().to_string()
    };
    assert_eq!(dig("guest1.box.test A"), ip);
    assert_eq!(dig("+tcp printer.box.test A"), "10.47.0.5");

    // TFTP (a thread per transfer), read from the root only.
    let got = root.join("got.txt");
    guest.run(&format!(
        "tftp -m binary 10.47.0.1 -c get boot.txt {}",
        got.display()
    ));
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "boot over tftp\n");

    // A live update: SIGHUP, the configuration reread through the
    // directory opened before the switch.
    ok(
        root,
        &[
            "net-update",
            "box",
            "add-last",
            "dns-host",
            "<host ip='10.47.0.6'><hostname>scanner</hostname></host>",
            "--live",
        ],
    );
    wait_for("the live DNS host", || {
        dig("scanner.box.test A") == "10.47.0.6"
    });
    assert_confined(pid);
    // No refused call or file in its log (warnings and errors).
    let log = std::fs::read_to_string(state_dir(root).join("hostnet/box.service.log")).unwrap();
    assert!(!log.contains("Operation not permitted"), "{log}");
    assert!(!log.contains("Permission denied"), "{log}");

    // A restart: the next (confined) service reads the leases the last one
    // wrote, before any client asks again: the lease's name resolves.
    ok(root, &["net-destroy", "box"]);
    ok(root, &["net-start", "box"]);
    // The guest's cable went with the old bridge.
    sh("ip link set vbox0 master br-box up");
    let again = service_pid(root, "box");
    assert_ne!(again, pid);
    assert_confined(again);
    // (The guest's port on the new bridge may take a moment to forward.)
    wait_for("the lease's name after the restart", || {
        dig("guest1.box.test A") == ip
    });
    let table = ok(root, &["net-dhcp-leases", "box"]);
    assert!(table.contains(&format!("{ip}/24")), "{table}");
    let renewed = guest.udhcpc(root, "guest1");
    assert_eq!(var(&renewed, "ip"), ip);
    ok(root, &["net-destroy", "box"]);
}
