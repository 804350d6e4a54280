//! End-to-end: `slipway net-*` and `slipway daemon` bringing networks up on
//! Linux for real (bridge, nftables, the DHCP/DNS service), each test in a
//! user + network namespace of its own (`unshare -Urn`); "guests" are
//! further namespaces wired to the bridge by veth pairs. Nothing touches the
//! machine's own namespace.
//!
//! Needs: util-linux (unshare, nsenter), iproute2, nftables, busybox-static.

mod net_common;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use net_common::*;
use slipway_testkit::netns::{sh, var, wait_for, NsGuest as Guest};

/// Links and the nft ruleset (without counter values).
fn snapshot() -> (String, String) {
    (
        sh("ip -o link show | cut -d: -f2 | sort"),
        sh("nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'"),
    )
}

/// Waits until the guests' veths are gone (the caller dropped the guests)
/// and links and ruleset are as `before`, and the services `pids` exited.
fn wait_all_gone(before: &(String, String), pids: impl IntoIterator<Item = i32>) {
    wait_for("the guests' veths to go", || snapshot() == *before);
    for p in pids {
        wait_for("the service to exit", || !alive(p));
    }
}

/// `net-list` shows `default` (autostart) and `lab`, both active.
fn assert_default_and_lab_listed(root: &Path) {
    let list = ok(root, &["net-list"]);
    for row in [
        " default   active   yes         yes\n",
        " lab       active   no          yes\n",
    ] {
        assert!(list.contains(row), "{list}");
    }
}

/// Adds the DNS host `scanner` (10.44.0.6) to the running `lab`, live only;
/// `guest` then resolves it through the network's DNS.
fn add_scanner_live(root: &Path, guest: &Guest) {
    ok(
        root,
        &[
            "net-update",
            "lab",
            "add-last",
            "dns-host",
            "<host ip='10.44.0.6'><hostname>scanner</hostname></host>",
            "--live",
        ],
    );
    let ns = guest.run("busybox nslookup scanner.lab.test 10.44.0.1");
    assert!(ns.contains("10.44.0.6"), "{ns}");
}

const CUSTOM: &str = "<network><name>lab</name>\
  <uuid>44444444-2222-3333-4444-555555555555</uuid><forward mode='nat'/>\
  <bridge name='br-lab'/><domain name='lab.test'/><mtu size='1400'/>\
  <dns><host ip='10.44.0.5'><hostname>printer</hostname></host></dns>\
  <ip address='10.44.0.1' prefix='24'><dhcp><range start='10.44.0.10' end='10.44.0.20'/></dhcp></ip>\
  </network>";

/// The rows of a `net-dhcp-leases` table with the expiry time (local time,
/// checked for its format) cut off; header and dash row checked as virsh
/// lays them out.
fn lease_rows(table: &str) -> Vec<String> {
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with(" Expiry Time           MAC address         Protocol   IP address "),
        "{table}"
    );
    assert!(lines[1].chars().all(|c| c == '-'), "{table}");
    assert_eq!(
        lines.last(),
        Some(&""),
        "virsh's closing empty line: {table:?}"
    );
    lines[2..lines.len() - 1]
        .iter()
        .map(|l| {
            let (expiry, rest) = l.split_at(20);
            let digits: String = expiry
                .chars()
                .map(|c| if c.is_ascii_digit() { 'd' } else { c })
                .collect();
            assert_eq!(digits, " dddd-dd-dd dd:dd:dd", "{table}");
            rest.to_string()
        })
        .collect()
}

#[test]
fn guests_get_leases_and_names_through_the_cli() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let before = snapshot();
    write(root, "lab.xml", CUSTOM);
    ok(root, &["net-define", "lab.xml"]);
    // Under --root the default network exists only when asked for.
    ok(root, &["net-define-default"]);
    let t = std::time::Instant::now();
    assert_eq!(
        ok(root, &["net-start", "default"]),
        "Network default started\n\n"
    );
    eprintln!("TIMING slipway net-start default: {:?}", t.elapsed());
    assert_eq!(ok(root, &["net-start", "lab"]), "Network lab started\n\n");
    let lab_pid = service_pid(root, "lab");
    assert!(alive(lab_pid));
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
    // No lease yet: virsh's header alone, the dash row each column's width
    // plus three.
    assert_eq!(
        ok(root, &["net-dhcp-leases", "lab"]),
        format!(
            " Expiry Time   MAC address   Protocol   IP address   Hostname   Client ID or DUID\n{}\n\n",
            "-".repeat(11 + 11 + 8 + 10 + 8 + 17 + 6 * 3)
        )
    );

    // A guest of each network gets a lease with every option.
    let g0 = Guest::new("virbr0", "vd0", "52:54:00:00:12:20");
    let t = std::time::Instant::now();
    let l0 = g0.udhcpc(root, "guest0");
    eprintln!(
        "TIMING first lease on default (udhcpc run): {:?}",
        t.elapsed()
    );
    assert!(var(&l0, "ip").starts_with("192.168.122."), "{l0:?}");
    assert_eq!(var(&l0, "router"), "192.168.122.1");
    let g1 = Guest::new("br-lab", "vl1", "52:54:00:00:44:11");
    let l1 = g1.udhcpc(root, "guest1");
    let ip1 = var(&l1, "ip").to_string();
    let n: u8 = ip1.strip_prefix("10.44.0.").unwrap().parse().unwrap();
    assert!((10..=20).contains(&n), "{ip1}");
    assert_eq!(var(&l1, "router"), "10.44.0.1");
    assert_eq!(var(&l1, "dns").trim(), "10.44.0.1");
    assert_eq!(var(&l1, "domain"), "lab.test");
    assert_eq!(var(&l1, "mtu"), "1400");
    let g2 = Guest::new("br-lab", "vl2", "52:54:00:00:44:12");
    let l2 = g2.udhcpc(root, "guest2");
    let ip2 = var(&l2, "ip").to_string();

    // Names resolve through the network's DNS: another guest's lease
    // hostname, and a <dns><host>.
    let ns = g2.run("busybox nslookup guest1.lab.test 10.44.0.1");
    assert!(ns.contains(&ip1), "{ns}");
    let ns = g2.run("busybox nslookup printer.lab.test 10.44.0.1");
    assert!(ns.contains("10.44.0.5"), "{ns}");

    // net-dhcp-leases: virsh's table, sorted by MAC, by name or UUID, and
    // filtered by MAC; a malformed MAC is refused.
    let table = ok(root, &["net-dhcp-leases", "lab"]);
    let pad = |ip: &str| format!("{ip}/24{}", " ".repeat(13 - ip.len() - 3));
    assert_eq!(
        lease_rows(&table),
        [
            format!(
                "   52:54:00:00:44:11   ipv4       {}   guest1     01:52:54:00:00:44:11",
                pad(&ip1)
            ),
            format!(
                "   52:54:00:00:44:12   ipv4       {}   guest2     01:52:54:00:00:44:12",
                pad(&ip2)
            ),
        ],
        "{table}"
    );
    assert_eq!(
        ok(
            root,
            &["net-dhcp-leases", "44444444-2222-3333-4444-555555555555"]
        ),
        table
    );
    let one = ok(
        root,
        &["net-dhcp-leases", "lab", "--mac", "52:54:00:00:44:12"],
    );
    assert_eq!(lease_rows(&one).len(), 1, "{one}");
    assert!(one.contains(&format!(" {ip2}/24 ")), "{one}");
    let r = sw(root, &["net-dhcp-leases", "lab", "--mac", "52:54:00:44:12"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "error: Failed to get leases info for lab\nerror: invalid MAC address: 52:54:00:44:12\n"
        )
    );
    let r = sw(root, &["net-dhcp-leases", "nope"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "error: failed to get network 'nope'\nerror: Network not found: no network with matching name 'nope'\n"
        )
    );

    // net-update --live of a DHCP host (with a lease time of its own) and a
    // DNS host: the running service takes them without a restart.
    assert_eq!(
        ok(
            root,
            &[
                "net-update",
                "lab",
                "add-last",
                "ip-dhcp-host",
                "<host mac='52:54:00:00:44:11' name='fixed' ip='10.44.0.50'>\
                 <lease expiry='10' unit='minutes'/></host>",
                "--live",
                "--config",
            ]
        ),
        "Updated network lab persistent config and live state\n"
    );
    add_scanner_live(root, &g2);
    let l1 = g1.udhcpc(root, "guest1");
    assert_eq!(var(&l1, "ip"), "10.44.0.50");
    assert_eq!(var(&l1, "hostname"), "fixed");
    // Its own lease time; the other guests keep the network's hour.
    assert_eq!(var(&l1, "lease"), "600");
    assert_eq!(var(&l2, "lease"), "3600");
    assert_eq!(
        service_pid(root, "lab"),
        lab_pid,
        "the service was restarted"
    );
    assert!(alive(lab_pid));

    // Destroy: links and ruleset as before (once the guests' veths go),
    // the services gone.
    let pids = [service_pid(root, "default"), lab_pid];
    assert_eq!(
        ok(root, &["net-destroy", "lab"]),
        "Network lab destroyed\n\n"
    );
    let t = std::time::Instant::now();
    ok(root, &["net-destroy", "default"]);
    eprintln!("TIMING slipway net-destroy default: {:?}", t.elapsed());
    drop((g0, g1, g2));
    wait_all_gone(&before, pids);
}

#[test]
fn daemon_killed_with_networks_up_recovers_them() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let before = snapshot();
    // The daemon starts the autostart `default` network.
    ok(root, &["net-define-default"]);
    let mut daemon = Daemon::start(root);
    write(root, "lab.xml", CUSTOM);
    ok(root, &["net-define", "lab.xml"]);
    ok(root, &["net-start", "lab"]);
    assert_default_and_lab_listed(root);
    let g1 = Guest::new("br-lab", "vl1", "52:54:00:00:44:11");
    let ip1 = var(&g1.udhcpc(root, "guest1"), "ip").to_string();
    let up = snapshot();
    let lab_pid = service_pid(root, "lab");
    let default_pid = service_pid(root, "default");

    // kill -9 the daemon, and the default network's service with it.
    daemon.kill9();
    sh(&format!("kill -9 {default_pid}"));
    wait_for("the service to die", || !alive(default_pid));
    let _daemon = Daemon::start(root);
    // Both networks are still up, nothing added twice; the dead service is
    // back, the other one untouched and still serving.
    assert_default_and_lab_listed(root);
    assert_eq!(snapshot(), up, "links or rules changed by the restart");
    assert_eq!(service_pid(root, "lab"), lab_pid);
    assert!(alive(lab_pid));
    let revived = service_pid(root, "default");
    assert_ne!(revived, default_pid);
    assert!(alive(revived));
    let l1 = g1.udhcpc(root, "guest1");
    assert_eq!(var(&l1, "ip"), ip1, "the lease was lost");
    let g0 = Guest::new("virbr0", "vd0", "52:54:00:00:12:20");
    let l0 = g0.udhcpc(root, "guest0");
    assert!(var(&l0, "ip").starts_with("192.168.122."), "{l0:?}");
    assert!(ok(root, &["net-dhcp-leases", "default"]).contains(" 52:54:00:00:12:20 "));

    // Through the daemon: a live update and destroy.
    add_scanner_live(root, &g1);
    ok(root, &["net-destroy", "lab"]);
    ok(root, &["net-destroy", "default"]);
    drop((g0, g1));
    wait_all_gone(&before, [lab_pid, revived]);
}

#[test]
fn the_daemon_restarts_a_killed_service_with_its_leases() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let log = root.join("daemon.log");
    let _daemon = Daemon::start_logged(root, &log);
    write(root, "lab.xml", CUSTOM);
    ok(root, &["net-define", "lab.xml"]);
    ok(root, &["net-start", "lab"]);
    let g1 = Guest::new("br-lab", "vs1", "52:54:00:00:44:21");
    let ip1 = var(&g1.udhcpc(root, "guest1"), "ip").to_string();
    let first = service_pid(root, "lab");

    // kill -9 the service; no command is run: the daemon notices and starts
    // it again, saying why.
    sh(&format!("kill -9 {first}"));
    let restarted = |old: i32| {
        let mut new = old;
        wait_for("the daemon to restart the service", || {
            new = service_pid(root, "lab");
            new != old && alive(new)
        });
        new
    };
    let second = restarted(first);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!(
            "the DHCP/DNS service of network lab (pid {first}) was killed by signal 9: restarting it\n"
        )),
        "{logged}"
    );
    // The new one answers DHCP with the old lease, and DNS.
    assert_eq!(
        var(&g1.udhcpc(root, "guest1"), "ip"),
        ip1,
        "the lease was lost"
    );
    let ns = g1.run("busybox nslookup printer.lab.test 10.44.0.1");
    assert!(ns.contains("10.44.0.5"), "{ns}");
    assert!(ok(root, &["net-dhcp-leases", "lab"]).contains(" 52:54:00:00:44:21 "));

    // Killed again right away: restarted after a backoff, and said so.
    sh(&format!("kill -9 {second}"));
    let third = restarted(second);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!(
            "the DHCP/DNS service of network lab (pid {second}) was killed by signal 9: restarting it in 1 s\n"
        )),
        "{logged}"
    );
    assert_eq!(
        var(&g1.udhcpc(root, "guest1"), "ip"),
        ip1,
        "the lease was lost"
    );

    // Destroyed: the service is stopped, not brought back.
    ok(root, &["net-destroy", "lab"]);
    wait_for("the service to exit", || !alive(third));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!state_dir(root).join("hostnet/lab.json").exists());
    drop(g1);
}

#[test]
fn a_subnet_in_use_is_refused_in_both_families() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sh("ip link add d7 type veth peer name d8 && \
        ip addr add 10.44.0.7/24 dev d7 && ip addr add fd00:77::7/64 dev d7 nodad && \
        ip link set d7 up && ip link set d8 up");
    write(root, "lab.xml", CUSTOM);
    write(
        root,
        "six.xml",
        "<network><name>six</name><bridge name='br-six'/>\
         <ip family='ipv6' address='fd00:77::1' prefix='64'/></network>",
    );
    ok(root, &["net-define", "lab.xml"]);
    ok(root, &["net-define", "six.xml"]);
    let before = snapshot();
    for net in ["lab", "six"] {
        let r = sw(root, &["net-start", net]);
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(
            r.stderr,
            format!(
                "error: Failed to start network {net}\n\
                 error: internal error: Network is already in use by interface d7\n"
            )
        );
        assert_eq!(snapshot(), before, "{net} left something behind");
        assert!(ok(root, &["net-info", net]).contains("Active:         no\n"));
    }
}

/// A bridge with no <ip>: no service to run; a live DNS host update only
/// changes the live definition, as with libvirt.
#[test]
fn a_network_without_addresses_starts_and_updates_live() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let before = snapshot();
    write(
        root,
        "bare.xml",
        "<network><name>bare</name><bridge name='br-bare'/></network>",
    );
    ok(root, &["net-define", "bare.xml"]);
    ok(root, &["net-start", "bare"]);
    assert!(sh("ip -br link show br-bare").contains("br-bare"));
    let host = "<host ip='10.9.9.9'><hostname>h</hostname></host>";
    assert_eq!(
        ok(
            root,
            &["net-update", "bare", "add", "dns-host", host, "--live"]
        ),
        "Updated network bare live state\n"
    );
    assert!(ok(root, &["net-dumpxml", "bare"]).contains("<hostname>h</hostname>"));
    assert!(!ok(root, &["net-dumpxml", "bare", "--inactive"]).contains("<hostname>"));
    ok(root, &["net-destroy", "bare"]);
    assert_eq!(snapshot(), before);
}

const NAMES: &str = "<network><name>names</name>\
  <bridge name='br-names'/><domain name='names.test'/>\
  <dns><host ip='10.45.0.5'><hostname>printer</hostname></host></dns>\
  <ip address='10.45.0.1' prefix='24'><dhcp><range start='10.45.0.10' end='10.45.0.20'/>\
  <host mac='52:54:00:00:45:99' name='fixed' ip='10.45.0.50'/></dhcp></ip>\
  </network>";

/// What the network's DNS answers for `name` (A records, `dig +short`),
/// asked from `guest`.
fn resolve(guest: &Guest, name: &str) -> String {
    guest.run(&format!(
        "dig +short +tries=1 +time=2 @10.45.0.1 {name} A || true"
    ))
}

/// A DHCPINFORM from `ciaddr` with client hardware address `mac`, as a
/// configured client sends it to ask for options only.
fn inform(ciaddr: [u8; 4], mac: [u8; 6]) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[..4].copy_from_slice(&[1, 1, 6, 0]);
    m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    m[12..16].copy_from_slice(&ciaddr);
    m[28..34].copy_from_slice(&mac);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend_from_slice(&[53, 1, 8, 255]);
    m
}

#[test]
fn guests_cannot_take_names_or_neighbours_and_damaged_leases_are_set_aside() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "names.xml", NAMES);
    ok(root, &["net-define", "names.xml"]);

    // A damaged leases file (an older version's name with control bytes,
    // a record of the wrong shape, then cut short): the network starts
    // anyway, the file is set aside with a warning, what reads is kept.
    let hostnet = state_dir(root).join("hostnet");
    let leases_dir = hostnet.join("names.leases");
    std::fs::create_dir_all(&leases_dir).unwrap();
    let leases = leases_dir.join("leases.json");
    let record = |mac: &str, ip: &str, name: &str| {
        format!(
            r#"{{"mac":"{mac}","ip":"{ip}","prefix":24,"hostname":{},"client_id":null,"expires":null}}"#,
            serde_json::to_string(name).unwrap()
        )
    };
    let damaged = format!(
        "[{},{},{{\"mac\":5}},{{\"mac\":\"52:54",
        record("52:54:00:00:45:15", "10.45.0.15", "kept"),
        record("52:54:00:00:45:16", "10.45.0.16", "evil\u{1b}[2J\rx"),
    );
    std::fs::write(&leases, &damaged).unwrap();
    ok(root, &["net-start", "names"]);
    let aside: Vec<_> = std::fs::read_dir(&leases_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("leases.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", std::fs::read_dir(&leases_dir));
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), damaged);
    let log = std::fs::read_to_string(hostnet.join("names.service.log")).unwrap();
    assert!(
        log.contains("is damaged") && log.contains("2 leases kept, 1 unreadable"),
        "{log}"
    );
    // net-dhcp-leases prints the kept leases, the name with control bytes
    // escaped: only printable text reaches the terminal.
    let table = ok(root, &["net-dhcp-leases", "names"]);
    assert!(table.contains(" kept "), "{table}");
    assert!(table.contains(r"evil\u{1b}[2J\u{d}x"), "{table}");
    assert!(
        table.chars().all(|c| c == '\n' || (' '..='~').contains(&c)),
        "{table:?}"
    );

    let g1 = Guest::new("br-names", "vn1", "52:54:00:00:45:11");
    let g2 = Guest::new("br-names", "vn2", "52:54:00:00:45:12");
    let g3 = Guest::new("br-names", "vn3", "52:54:00:00:45:13");
    // A guest calling itself www.example.com is `www` of the network's
    // domain, not the owner of www.example.com.
    let ip1 = var(&g1.udhcpc(root, "www.example.com"), "ip").to_string();
    // (The kept lease's name resolves.)
    assert_eq!(resolve(&g1, "kept.names.test").trim(), "10.45.0.15");
    assert_eq!(resolve(&g1, "www.names.test").trim(), ip1);
    assert_eq!(resolve(&g1, "www").trim(), ip1);
    let www = resolve(&g1, "www.example.com");
    assert!(!www.contains(&ip1), "{www}");

    // Nor can a guest shadow a <dns><host>, a DHCP <host>'s name, or a
    // name another lease holds.
    let ip2 = var(&g2.udhcpc(root, "printer"), "ip").to_string();
    assert_eq!(resolve(&g1, "printer.names.test").trim(), "10.45.0.5");
    let ip3 = var(&g3.udhcpc(root, "fixed"), "ip").to_string();
    let fixed = resolve(&g1, "fixed.names.test");
    assert!(!fixed.contains(&ip3), "{fixed}");
    g2.udhcpc(root, "www");
    assert_eq!(resolve(&g1, "www.names.test").trim(), ip1);
    g2.udhcpc(root, "kept");
    assert_eq!(resolve(&g1, "kept.names.test").trim(), "10.45.0.15");
    let table = ok(root, &["net-dhcp-leases", "names"]);
    let row = |mac: &str| {
        table
            .lines()
            .find(|l| l.contains(mac))
            .unwrap_or_else(|| panic!("no {mac} in {table}"))
            .to_string()
    };
    assert!(row("52:54:00:00:45:11").contains(" www "), "{table}");
    assert!(
        row("52:54:00:00:45:12").contains(&format!(" {ip2}/24 ")),
        "{table}"
    );
    assert!(!row("52:54:00:00:45:12").contains(" www "), "{table}");

    // DHCPINFORMs claiming another address, then g3's own address, both
    // with a MAC that is nobody's: the service answers (to the address
    // claimed) but puts neither in the bridge's neighbour table; g3 gets
    // the answer to its address through ordinary ARP.
    let ip3_octets: Ipv4Addr = ip3.parse().unwrap();
    let fake = [0x52, 0x54, 0, 0x66, 0x66, 0x66];
    let answer = g3.ns.spawn(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 68)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let server = (Ipv4Addr::new(10, 45, 0, 1), 67);
        s.send_to(&inform([10, 45, 0, 77], fake), server).unwrap();
        s.send_to(&inform(ip3_octets.octets(), fake), server)
            .unwrap();
        let mut buf = [0u8; 1500];
        s.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec())
    });
    let reply = answer
        .join()
        .unwrap()
        .expect("the INFORM's answer reaches the client's own address");
    assert_eq!(reply[0], 2, "a BOOTREPLY");
    assert_eq!(&reply[4..8], &0x1234_5678u32.to_be_bytes());
    let neigh = sh("ip neigh show dev br-names");
    assert!(!neigh.contains("52:54:00:66:66:66"), "{neigh}");
    assert!(
        !neigh
            .lines()
            .any(|l| l.starts_with("10.45.0.77 ") && l.contains("lladdr")),
        "{neigh}"
    );
    // An ordinary DISCOVER/REQUEST still works, and its address is in
    // the table with the client's MAC.
    let again = g3.udhcpc(root, "g3");
    assert_eq!(var(&again, "ip"), ip3);
    let neigh = sh("ip neigh show dev br-names");
    assert!(
        neigh
            .lines()
            .any(|l| l.starts_with(&format!("{ip3} ")) && l.contains("52:54:00:00:45:13")),
        "{neigh}"
    );

    ok(root, &["net-destroy", "names"]);
}

/// A host that already runs libvirt's `virbr0` on 192.168.122.1/24: the
/// default network asked for under --root moves to the next free subnet
/// and bridge name, starts, and `--dry-run` fails exactly where a start
/// fails.
#[test]
fn default_network_beside_libvirts_virbr0() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    sh(
        "ip link add virbr0 type bridge && ip addr add 192.168.122.1/24 dev virbr0 && \
        ip link set virbr0 up",
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let before = snapshot();
    // Nothing is defined under --root until asked for.
    assert_eq!(ok(root, &["net-list", "--all", "--name"]), "\n");
    let r = sw(root, &["net-define-default"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "Network default defined\n\n"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("the default network uses 192.168.123.0/24 instead"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("the default network uses bridge virbr1 instead"),
        "{r:?}"
    );
    assert!(ok(root, &["net-info", "default"]).contains("Bridge:         virbr1\n"));
    let plan = ok(root, &["net-start", "--dry-run", "default"]);
    assert!(plan.starts_with("ip link add virbr1 "), "{plan}");
    ok(root, &["net-start", "default"]);
    assert!(sh("ip -br addr show virbr1").contains("192.168.123.1/24"));
    let pid = service_pid(root, "default");
    ok(root, &["net-destroy", "default"]);
    wait_all_gone(&before, [pid]);

    // The dry run checks the host as the start does: a taken bridge name,
    // a subnet routed elsewhere.
    for (name, xml, why) in [
        (
            "taken",
            "<network><name>taken</name><bridge name='virbr0'/><ip address='10.9.0.1' prefix='24'/></network>",
            "bridge device virbr0 already exists on the host",
        ),
        (
            "routed",
            "<network><name>routed</name><bridge name='br-r'/><ip address='192.168.122.7' prefix='24'/></network>",
            "Network is already in use by interface virbr0",
        ),
    ] {
        write(root, "n.xml", xml);
        ok(root, &["net-define", "n.xml"]);
        for args in [vec!["net-start", "--dry-run", name], vec!["net-start", name]] {
            let r = sw(root, &args);
            assert_eq!(r.code, 1, "{args:?}: {r:?}");
            assert!(r.stderr.contains(why), "{args:?}: {r:?}");
        }
        assert_eq!(snapshot(), before, "{name} left something behind");
    }
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap()
        .trim()
        .to_string()
}

/// ip_forward is 0 before, 1 while any forwarding network is up, 0 again
/// after the last one (whichever started first) is destroyed; an
/// administrator's 1 stays 1.
#[test]
fn forwarding_is_put_back_by_the_last_network() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "a.xml",
        "<network><name>a</name><forward mode='route'/><bridge name='br-a'/><ip address='10.71.0.1' prefix='24'/></network>",
    );
    write(
        root,
        "b.xml",
        "<network><name>b</name><forward mode='nat'/><bridge name='br-b'/><ip address='10.72.0.1' prefix='24'/></network>",
    );
    ok(root, &["net-define", "a.xml"]);
    ok(root, &["net-define", "b.xml"]);
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").unwrap();
    ok(root, &["net-start", "a"]);
    assert_eq!(ip_forward(), "1");
    ok(root, &["net-start", "b"]);
    // a turned it on, but b still needs it.
    ok(root, &["net-destroy", "a"]);
    assert_eq!(ip_forward(), "1");
    ok(root, &["net-destroy", "b"]);
    assert_eq!(ip_forward(), "0");
    // Set by the administrator: left alone.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    ok(root, &["net-start", "a"]);
    ok(root, &["net-destroy", "a"]);
    assert_eq!(ip_forward(), "1");
}
