//! `<dnsmasq:options>` on a running network: the options slipway's own DNS
//! honours take effect (asked with dig from a guest namespace), in a user +
//! network namespace of the test's own.
//!
//! Needs: util-linux (unshare, nsenter), iproute2, nftables, dnsutils (dig).

mod net_common;

use net_common::*;
use slipway_testkit::netns::{sh, wait_for, NsGuest as Guest};

const NET: &str = "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
  <name>dm</name><bridge name='br-dm'/>\
  <dns><host ip='10.79.0.5'><hostname>printer</hostname></host></dns>\
  <ip address='10.79.0.1' prefix='24'/>\
  <dnsmasq:options>\
  <dnsmasq:option value='host-record=nas,nas.lab,10.79.0.9'/>\
  <dnsmasq:option value='cname=files,nas'/>\
  </dnsmasq:options></network>";

#[test]
fn honoured_dnsmasq_options_answer_in_the_networks_dns() {
    in_netns(
        "honoured_dnsmasq_options_answer_in_the_networks_dns",
        Ns::User,
        honoured_dnsmasq_options,
    );
}

fn honoured_dnsmasq_options() {
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "dm.xml", NET);
    let r = sw(root, &["net-define", "dm.xml"]);
    assert_eq!(r.code, 0, "{r:?}");
    // The one it cannot honour is named.
    assert!(
        r.stderr
            .contains("<dnsmasq:option value='cname=files,nas'> ignored"),
        "{r:?}"
    );
    assert_eq!(r.stderr.matches("warning:").count(), 1, "{r:?}");
    ok(root, &["net-start", "dm"]);
    let g = Guest::new("br-dm", "vdm1", "52:54:00:00:79:50");
    g.run("ip addr add 10.79.0.50/24 dev eth0");
    let dig = |name: &str| {
        g.run(&format!(
            "dig +short +tries=1 +time=2 @10.79.0.1 {name} A || true"
        ))
    };
    // The bridge port forwards once STP lets it (a few seconds).
    wait_for("the network's DNS to answer the guest", || {
        !dig("printer").contains("timed out")
    });
    assert_eq!(dig("nas").trim(), "10.79.0.9");
    assert_eq!(dig("nas.lab").trim(), "10.79.0.9");
    // The <dns><host> still answers beside it; the ignored cname does not.
    assert_eq!(dig("printer").trim(), "10.79.0.5");
    assert_eq!(dig("files").trim(), "");
    ok(root, &["net-destroy", "dm"]);
}
