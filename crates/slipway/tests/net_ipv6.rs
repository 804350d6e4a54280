//! End-to-end: IPv6 guests on a bridge network started by `slipway
//! net-start`, checked with clients nobody here wrote: the guest kernel's
//! SLAAC and default route from the router advertisements, `rdisc6`
//! (ndisc6) reading them, ISC `dhclient -6 -S` (stateless DHCPv6) and
//! `dhclient -6` (stateful: addresses leased from the range, a `<host>`
//! reservation, release), busybox `ping6` and `dig` over IPv6 to the bridge. Runs in a user +
//! network namespace of its own (`unshare -Urn`); the "guest" is a further
//! namespace wired to the bridge by a veth pair.
//!
//! Needs: util-linux, iproute2, nftables, busybox-static, ndisc6,
//! isc-dhcp-client, dnsutils.

mod net_common;

use net_common::*;
use slipway_testkit::netns::{sh, wait_for, NsGuest as Guest};

const SIX: &str = "<network><name>six</name><forward mode='nat'/>\
  <bridge name='br-six'/><domain name='six.test'/><mtu size='1420'/>\
  <dns><host ip='fd00:46::5'><hostname>nas</hostname></host></dns>\
  <ip address='10.46.0.1' prefix='24'><dhcp><range start='10.46.0.10' end='10.46.0.20'/></dhcp></ip>\
  <ip family='ipv6' address='fd00:46::1' prefix='64'/>\
  </network>";

/// Words of `text` joined by single spaces (rdisc6 aligns with spaces).
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn ipv6_guests_get_slaac_router_dns_and_domain() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "six.xml", SIX);
    ok(root, &["net-define", "six.xml"]);
    ok(root, &["net-start", "six"]);
    let guest = Guest::new("br-six", "v6g0", "52:54:00:46:00:02");

    // SLAAC: an address in the prefix from the guest's MAC (EUI-64), past DAD.
    let slaac = "fd00:46::5054:ff:fe46:2/64";
    wait_for("the guest's SLAAC address", || {
        let a = guest.run("ip -6 addr show dev eth0");
        a.contains(slaac) && !a.contains("tentative")
    });
    // The default route goes through the bridge's link-local address.
    let bridge_ll = sh("ip -6 -o addr show dev br-six scope link");
    let bridge_ll = bridge_ll
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/64").filter(|a| a.starts_with("fe80:")))
        .unwrap_or_else(|| panic!("no link-local address on br-six: {bridge_ll}"))
        .to_string();
    wait_for("the guest's default route", || {
        guest
            .run("ip -6 route show default")
            .contains(&format!("default via {bridge_ll} dev eth0"))
    });

    // rdisc6 solicits and prints what the advertisement says.
    let ra = squeeze(&guest.run("rdisc6 -1 eth0"));
    for want in [
        "Stateful address conf. : No",
        "Stateful other conf. : Yes",
        "Router lifetime : 600",
        "MTU : 1420 bytes (valid)",
        "Prefix : fd00:46::/64",
        "On-link : Yes",
        "Autonomous address conf.: Yes",
        "Recursive DNS server : fd00:46::1",
        "DNS search list : six.test",
        &format!("from {bridge_ll}"),
    ] {
        assert!(ra.contains(want), "rdisc6 lacks '{want}':\n{ra}");
    }

    // Stateless DHCPv6: INFORMATION-REQUEST gets DNS and domain.
    let out = root.join("dhclient");
    std::fs::create_dir(&out).unwrap();
    let o = out.display();
    std::fs::write(
        out.join("script.sh"),
        format!("#!/bin/sh\nenv > {o}/env.$reason\n"),
    )
    .unwrap();
    sh(&format!("chmod +x {o}/script.sh"));
    guest.run(&format!(
        "timeout 60 dhclient -6 -S -1 -sf {o}/script.sh -lf {o}/leases -pf {o}/pid eth0"
    ));
    let env: String = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("env."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for want in [
        "new_dhcp6_name_servers=fd00:46::1",
        "new_dhcp6_domain_search=six.test.",
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "dhclient lacks {want}:\n{env}"
        );
    }

    // The guest reaches the bridge over IPv6: echo, and DNS on port 53.
    guest.run("busybox ping6 -c 1 -W 10 fd00:46::1");
    let aaaa = guest.run("dig +short +time=5 +tries=2 @fd00:46::1 nas.six.test AAAA");
    assert_eq!(aaaa.trim(), "fd00:46::5");

    ok(root, &["net-destroy", "six"]);
}

/// An IPv6 network with a DHCPv6 range and one reservation by DUID (the
/// DUID-LL `dhclient -D LL` makes from the second guest's MAC).
const STATEFUL: &str = "<network><name>st6</name>\
  <bridge name='br-st6'/><domain name='st6.test'/>\
  <dns><host ip='2001:db8:ca2:2::5'><hostname>printer</hostname></host></dns>\
  <ip family='ipv6' address='2001:db8:ca2:2::1' prefix='64'><dhcp>\
  <range start='2001:db8:ca2:2::100' end='2001:db8:ca2:2::1ff'/>\
  <host id='0:3:0:1:52:54:0:47:0:3' ip='2001:db8:ca2:2::42'/>\
  </dhcp></ip></network>";

/// ISC dhclient -6 (stateful) in a guest, with a script that configures
/// the address it is given on the interface (as Debian's dhclient-script
/// does, without touching the machine's resolv.conf) and removes it on
/// release. Stopped on drop if a check failed before the release.
struct Dhclient<'a> {
    guest: &'a Guest,
    args: String,
    pidfile: std::path::PathBuf,
}

impl<'a> Dhclient<'a> {
    /// Starts it in `guest`; with `fqdn`, it sends that host name (FQDN
    /// option, from a dhclient.conf).
    fn start(
        guest: &'a Guest,
        dir: &std::path::Path,
        name: &str,
        fqdn: Option<&str>,
    ) -> Dhclient<'a> {
        let d = dir.display();
        let conf = match fqdn {
            Some(f) => {
                let path = dir.join(format!("{name}.conf"));
                std::fs::write(&path, format!("send fqdn.fqdn \"{f}\";\n")).unwrap();
                format!("-cf {} ", path.display())
            }
            None => String::new(),
        };
        std::fs::write(
            dir.join(format!("{name}.sh")),
            "#!/bin/sh\n\
             case $reason in\n\
             BOUND6|RENEW6|REBIND6) ip -6 addr replace $new_ip6_address/$new_ip6_prefixlen dev $interface;;\n\
             RELEASE6|EXPIRE6|STOP6) ip -6 addr del $old_ip6_address/$old_ip6_prefixlen dev $interface;;\n\
             esac\nexit 0\n",
        )
        .unwrap();
        sh(&format!("chmod +x {d}/{name}.sh"));
        let pidfile = dir.join(format!("{name}.pid"));
        let args = format!(
            "-6 -D LL {conf}-sf {d}/{name}.sh -lf {d}/{name}.leases -pf {} eth0",
            pidfile.display()
        );
        // -1: one try; once bound it goes to the background and renews.
        guest.run(&format!("timeout 60 dhclient -1 {args}"));
        Dhclient {
            guest,
            args,
            pidfile,
        }
    }

    /// `dhclient -r`: sends RELEASE and stops the running client.
    fn release(self) {
        self.guest
            .run(&format!("timeout 60 dhclient -r {}", self.args));
    }
}

impl Drop for Dhclient<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: plain kill(2) of the client this test started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
}

/// Waits until the guest's link-local address is usable (dhclient binds
/// to it) and an advertisement made the prefix on-link (a route to it).
fn wait_for_ipv6_link(g: &Guest) {
    wait_for("the guest's link-local address", || {
        let a = g.run("ip -6 addr show dev eth0 scope link");
        a.contains("fe80:") && !a.contains("tentative")
    });
    wait_for("the on-link prefix from the advertisement", || {
        g.run("ip -6 route show dev eth0")
            .contains("2001:db8:ca2:2::/64")
    });
}

/// The guest's global IPv6 addresses.
fn global_addrs(guest: &Guest) -> String {
    guest.run("ip -6 -o addr show dev eth0 scope global")
}

#[test]
fn stateful_dhcpv6_leases_reserves_lists_and_releases() {
    enter_netns!(Ns::User);
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "st6.xml", STATEFUL);
    ok(root, &["net-define", "st6.xml"]);
    ok(root, &["net-start", "st6"]);
    let g1 = Guest::new("br-st6", "st6g1", "52:54:00:47:00:02");
    let g2 = Guest::new("br-st6", "st6g2", "52:54:00:47:00:03");
    for g in [&g1, &g2] {
        wait_for_ipv6_link(g);
    }

    // The advertisement says: addresses from DHCPv6, not SLAAC.
    let ra = squeeze(&g1.run("rdisc6 -1 eth0"));
    for want in [
        "Stateful address conf. : Yes",
        "Stateful other conf. : Yes",
        "Prefix : 2001:db8:ca2:2::/64",
        "On-link : Yes",
        "Autonomous address conf.: No",
    ] {
        assert!(ra.contains(want), "rdisc6 lacks '{want}':\n{ra}");
    }

    let out = root.join("dhclient");
    std::fs::create_dir(&out).unwrap();
    // The first client gets the first address of the range. It calls
    // itself `printer`, a <dns><host>'s name: not its to take.
    let c1 = Dhclient::start(&g1, &out, "g1", Some("printer.example.com"));
    let a1 = global_addrs(&g1);
    assert!(a1.contains("inet6 2001:db8:ca2:2::100/"), "g1: {a1}");
    // The second one's DUID matches the <host>: the reserved address.
    let c2 = Dhclient::start(&g2, &out, "g2", None);
    let a2 = global_addrs(&g2);
    assert!(a2.contains("inet6 2001:db8:ca2:2::42/"), "g2: {a2}");
    // No SLAAC address beside them (the prefix is not autonomous).
    assert_eq!(a1.matches("inet6").count(), 1, "g1: {a1}");

    // The leases table has both, with protocol, prefix, MAC and DUID.
    let table = ok(root, &["net-dhcp-leases", "st6"]);
    let rows: Vec<String> = table
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(squeeze)
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    // (Expiry date and time are the first two words.)
    let tails: Vec<String> = rows
        .iter()
        .map(|r| r.split(' ').skip(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        tails,
        [
            "52:54:00:47:00:02 ipv6 2001:db8:ca2:2::100/64 printer 00:03:00:01:52:54:00:47:00:02",
            "52:54:00:47:00:03 ipv6 2001:db8:ca2:2::42/64 - 00:03:00:01:52:54:00:47:00:03",
        ],
        "{table}"
    );

    // kill -9 the service; the daemon starts it again, with the bindings
    // from the leases file: a third client does not get g1's address.
    let pid = service_pid(root, "st6");
    sh(&format!("kill -9 {pid}"));
    wait_for("the service to die", || !alive(pid));
    let _daemon = Daemon::start(root);
    let revived = service_pid(root, "st6");
    assert!(revived != pid && alive(revived));
    let g3 = Guest::new("br-st6", "st6g3", "52:54:00:47:00:04");
    wait_for_ipv6_link(&g3);
    // It sends a host name: listed with its lease, and in the network's
    // DNS as an AAAA record.
    let c3 = Dhclient::start(&g3, &out, "g3", Some("third"));
    let a3 = global_addrs(&g3);
    assert!(a3.contains("inet6 2001:db8:ca2:2::101/"), "g3: {a3}");
    let table = ok(
        root,
        &["net-dhcp-leases", "st6", "--mac", "52:54:00:47:00:04"],
    );
    assert!(
        squeeze(&table).contains("ipv6 2001:db8:ca2:2::101/64 third 00:03:00:01:52:54:00:47:00:04"),
        "{table}"
    );
    let aaaa = g3.run("dig +short +time=5 +tries=2 @2001:db8:ca2:2::1 third.st6.test AAAA");
    assert_eq!(aaaa.trim(), "2001:db8:ca2:2::101");
    // The <dns><host> keeps its name (g1's lease does not shadow it).
    let aaaa = g3.run("dig +short +time=5 +tries=2 @2001:db8:ca2:2::1 printer.st6.test AAAA");
    assert_eq!(aaaa.trim(), "2001:db8:ca2:2::5");

    // Release (to the new service): the address leaves the guest and the
    // lease the table.
    c1.release();
    assert!(!global_addrs(&g1).contains("2001:db8:ca2:2::100"));
    let table = ok(root, &["net-dhcp-leases", "st6"]);
    assert!(!table.contains("52:54:00:47:00:02"), "{table}");
    assert!(table.contains("2001:db8:ca2:2::42/64"), "{table}");
    c2.release();
    c3.release();
    ok(root, &["net-destroy", "st6"]);
}
