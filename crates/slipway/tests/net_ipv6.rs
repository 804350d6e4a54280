//! End-to-end: IPv6 guests on a bridge network started by `slipway
//! net-start`, checked with clients nobody here wrote: the guest kernel's
//! SLAAC and default route from the router advertisements, `rdisc6`
//! (ndisc6) reading them, ISC `dhclient -6 -S` (stateless DHCPv6),
//! busybox `ping6` and `dig` over IPv6 to the bridge. Runs in a user +
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

#[test]
fn ipv6_guests_get_slaac_router_dns_and_domain() {
    in_netns(
        "ipv6_guests_get_slaac_router_dns_and_domain",
        Ns::User,
        ipv6_guests,
    );
}

/// Words of `text` joined by single spaces (rdisc6 aligns with spaces).
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ipv6_guests() {
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
