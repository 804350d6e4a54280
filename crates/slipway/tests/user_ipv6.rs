//! `slipway user` over IPv6 end to end, with one real guest: the Linux
//! kernel configures a SLAAC address from slipway's router advertisement,
//! busybox pings the IPv6 host address, fetches a page from an httpd on
//! host `[::1]` through it, resolves a name through the IPv6 DNS address
//! (relayed to a dnsmasq on loopback), and a host client reaches the
//! guest's httpd through an IPv6 forward (`hostfwd=tcp:[::1]:PORT-:8080`,
//! guest address left to the learned SLAAC address). The DNS upstream is
//! itself on `[::1]`, a UDP echo server on `[::1]` is reached through
//! `fec0::2` (ncat -u, its stdin held open a moment: at end of input it
//! may exit before the echo is back), and busybox tftp fetches a file from the TFTP
//! server at `fec0::2`.
//!
//! Router advertisement options, stateless DHCPv6 and real ICMPv6 echo
//! are checked against clients nobody here wrote: `rdisc6` (ndisc6), ISC
//! `dhclient -6 -S` and busybox `ping6`, on a tap device in a namespace of
//! the test's own that QEMU's hub joins to slipway's socket (no guest
//! needed).

use std::net::Ipv6Addr;

use slipway_testkit::{DnsServer, Guest, HttpServer, UdpEchoServer};

mod common;
use common::{assert_serves, check, s, unix_stream_netdev, wait_line, Slipway};

#[test]
fn slaac_ping_http_dns_and_forward_over_ipv6() {
    let dir = slipway_testkit::temp_dir().unwrap();
    std::fs::write(dir.path().join("v6.txt"), "served-over-ipv6\n").unwrap();
    let http = HttpServer::serve_dir_on(dir.path(), Ipv6Addr::LOCALHOST.into()).unwrap();
    let dns = DnsServer::builder()
        .host("v6.example.test", "192.0.2.66".parse().unwrap())
        .start_on(Ipv6Addr::LOCALHOST.into())
        .unwrap();
    let echo = UdpEchoServer::start_on(Ipv6Addr::LOCALHOST.into()).unwrap();
    let tftp = dir.path().join("tftp");
    std::fs::create_dir(&tftp).unwrap();
    std::fs::write(tftp.join("t6.txt"), "tftp-over-ipv6\n").unwrap();
    let fwd = slipway_testkit::free_port().unwrap();
    let sock = dir.path().join("vm.sock");
    let mut slipway = Slipway::start(&[
        s("--socket"),
        sock.display().to_string(),
        s("--dns-upstream"),
        dns.addr().to_string(),
        format!("hostfwd=tcp:[::1]:{fwd}-:8080,tftp={}", tftp.display()),
    ]);
    slipway.wait_for_path(&sock);
    // No IPv4 at all in the guest: everything below goes over IPv6.
    let script = format!(
        "ip link set eth0 up\n\
         i=0; while [ $i -lt 60 ]; do ip -6 addr show dev eth0 | grep 'inet6 fec0:' | grep -qv tentative && break; sleep 1; i=$((i+1)); done\n\
         result slaac \"$(ip -6 addr show dev eth0 | awk '/inet6 fec0:/ {{ print $2 }}')\"\n\
         result route \"$(ip -6 route show default | awk '{{ print $3 }}')\"\n\
         ping6 -c 2 -W 10 fec0::2 >/dev/null && result ping6 ok\n\
         ping6 -c 1 -W 10 fec0::3 >/dev/null && result ping6_dns ok\n\
         wget -q -O /tmp/v6.txt 'http://[fec0::2]:{http}/v6.txt' && result http \"$(cat /tmp/v6.txt)\"\n\
         nslookup v6.example.test fec0::3 > /tmp/ns 2>&1; grep -q 192.0.2.66 /tmp/ns && result dns6 ok\n\
         cat /tmp/ns\n\
         (echo udp6-hello; sleep 3) | timeout 20 ncat -u -i 2 fec0::2 {echo} > /tmp/u6 2> /tmp/u6.err; result udp6 \"$(head -n1 /tmp/u6)\"; cat /tmp/u6.err\n\
         tftp -g -r t6.txt -l /tmp/t6.txt fec0::2 && result tftp6 \"$(cat /tmp/t6.txt)\"\n\
         ip -6 addr show dev eth0\n\
         mkdir -p /www && echo guest-page-v6 > /www/index.html\n\
         httpd -p 8080 -h /www\n\
         ready forwards\n\
         sleep 120\n",
        http = http.port(),
        echo = echo.port(),
    );
    let mut guest = Guest::builder()
        .netdev(&unix_stream_netdev(&sock))
        .script(&script)
        .boot()
        .unwrap();
    wait_line(&mut guest, "SLIPWAY-READY forwards", &slipway);
    let out = guest.output_so_far();
    let context = || {
        format!(
            "--- guest ---\n{}\n--- slipway ---\n{}",
            out.console,
            slipway.log()
        )
    };
    let slaac = out.result("slaac").unwrap_or_default();
    let (addr, len) = slaac.split_once('/').unwrap_or(("", ""));
    let addr: Ipv6Addr = addr
        .parse()
        .unwrap_or_else(|_| panic!("no SLAAC address: '{slaac}'\n{}", context()));
    assert_eq!(len, "64", "{}", context());
    assert_eq!(addr.segments()[..4], [0xfec0, 0, 0, 0], "{}", context());
    for (key, want) in [
        ("route", "fe80::2"),
        ("ping6", "ok"),
        ("ping6_dns", "ok"),
        ("http", "served-over-ipv6"),
        ("dns6", "ok"),
        ("udp6", "udp6-hello"),
        ("tftp6", "tftp-over-ipv6"),
    ] {
        check(&out, &slipway, key, want);
    }
    assert!(dns.log().contains("v6.example.test"), "{}", dns.log());

    // The forward on [::1] reaches the guest's SLAAC address.
    assert_serves((Ipv6Addr::LOCALHOST, fwd), "guest-page-v6", &slipway);

    drop(guest);
    slipway.terminate_ok();
}

/// Custom IPv6 options reach real clients: the kernel's SLAAC takes the
/// prefix, `rdisc6` shows every router advertisement field, `dhclient -6
/// -S` (INFORMATION-REQUEST) gets the DNS address and search list, echo
/// requests to the IPv6 host address and to an outside address leave
/// through real ICMPv6 ping sockets (to `::1` and to it), and a TCP
/// connection to the outside address through a real IPv6 socket. slipway
/// lives in a namespace of the test's own (ping sockets allowed, the
/// "outside" 2001:db8::1 on its lo), the tap client in one nested in it.
#[test]
fn router_advert_dhcpv6_and_ping_reach_real_clients() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let sock = dir.path().join("vm.sock");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // The client side: a namespace of its own (nested in slipway's) with
    // the tap, so its kernel routes everything but its own link through
    // slipway.
    let client = format!(
        "ip link set lo up\n\
         ip tuntap add tap0 mode tap\n\
         ip link set tap0 up\n\
         for i in $(seq 300); do [ -S {sock} ] && break; sleep 0.1; done\n\
         qemu-system-x86_64 -M none -nographic -nodefaults \\\n\
           -netdev tap,id=t,ifname=tap0,script=no,downscript=no \\\n\
           -netdev stream,id=s,server=off,addr.type=unix,addr.path={sock} \\\n\
           -netdev hubport,id=h0,hubid=0,netdev=t -netdev hubport,id=h1,hubid=0,netdev=s &\n\
         qemu=$!\n\
         # Until SLAAC has configured an address (and its DAD is done).\n\
         for i in $(seq 300); do\n\
           ip -6 addr show dev tap0 | grep 'inet6 fd00:5:' | grep -qv tentative && break\n\
           sleep 0.2\n\
         done\n\
         ip -6 addr show dev tap0 > {out}/addr\n\
         rdisc6 -1 tap0 > {out}/ra 2>&1\n\
         printf '#!/bin/sh\\nenv > {out}/env.$reason\\n' > {out}/script.sh\n\
         chmod +x {out}/script.sh\n\
         dhclient -6 -S -1 -sf {out}/script.sh -lf {out}/leases -pf {out}/pid tap0 > {out}/dhclient.log 2>&1\n\
         busybox ping6 -c 2 -W 10 fd00:5::2 > {out}/ping 2>&1 && echo ok >> {out}/ping\n\
         busybox ping6 -c 2 -W 10 2001:db8::1 > {out}/ping_out 2>&1 && echo ok >> {out}/ping_out\n\
         ncat --recv-only -w 20 2001:db8::1 7001 > {out}/tcp_out 2>&1\n\
         kill $qemu\n",
        sock = sock.display(),
        out = out.display(),
    );
    std::fs::write(out.join("client.sh"), client).unwrap();
    // slipway's namespace: ping sockets allowed, an "outside" address on
    // lo with a TCP server, and the client namespace started in the
    // background.
    let setup = format!(
        "ip link set lo up\n\
         echo '0 0' > /proc/sys/net/ipv4/ping_group_range\n\
         ip addr add 2001:db8::1/128 dev lo nodad\n\
         timeout 120 ncat -l 2001:db8::1 7001 --sh-exec 'echo V6OUT' &\n\
         unshare -n sh {out}/client.sh > {out}/client.log 2>&1 &\n",
        out = out.display(),
    );
    let slipway = Slipway::start_in_netns(
        &setup,
        &[
            s("--socket"),
            sock.display().to_string(),
            s("--mtu"),
            s("1400"),
            s("ipv6-prefix=fd00:5::,ipv6-dns=fd00:5::53,dnssearch=v6.example.test"),
        ],
    );
    // The client kills QEMU when done: slipway then exits by itself.
    let (status, log) = slipway.wait_exit();
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let context = format!(
        "--- client ---\n{}\n--- addr ---\n{}\n--- rdisc6 ---\n{}\n--- dhclient ---\n{}\n--- ping ---\n{}\n--- slipway ---\n{log}",
        read("client.log"),
        read("addr"),
        read("ra"),
        read("dhclient.log"),
        read("ping"),
    );
    assert!(status.success(), "{status}\n{context}");
    assert!(read("addr").contains("inet6 fd00:5::"), "{context}");
    let ra: String = read("ra").split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "Stateful address conf. : No",
        "Stateful other conf. : Yes",
        "Router lifetime : 600",
        "MTU : 1400 bytes (valid)",
        "Prefix : fd00:5::/64",
        "On-link : Yes",
        "Autonomous address conf.: Yes",
        "Recursive DNS server : fd00:5::53",
        "DNS search list : v6.example.test",
        "from fe80::2",
    ] {
        assert!(ra.contains(want), "rdisc6 lacks '{want}'\n{context}");
    }
    // dhclient names the script's reason RENEW6 or INFORM6 by version.
    let env = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("env."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap_or_default();
    assert!(
        env.lines()
            .any(|l| l == "new_dhcp6_name_servers=fd00:5::53"),
        "{env}\n{context}"
    );
    assert!(
        env.lines()
            .any(|l| l == "new_dhcp6_domain_search=v6.example.test."),
        "{env}\n{context}"
    );
    assert!(read("ping").ends_with("ok\n"), "{context}");
    // The outside over IPv6: a real ICMPv6 ping socket and a real TCP
    // socket toward 2001:db8::1.
    assert!(
        read("ping_out").ends_with("ok\n"),
        "{}\n{context}",
        read("ping_out")
    );
    assert_eq!(read("tcp_out"), "V6OUT\n", "{context}");
    let plain = ["\u{1b}[0m", "\u{1b}[2m", "\u{1b}[3m"]
        .iter()
        .fold(log.clone(), |l, code| l.replace(code, ""));
    assert!(
        plain.contains("ICMP echo flow through a ping socket")
            && plain.contains("target=::1")
            && plain.contains("target=2001:db8::1"),
        "the echo did not go through a ping socket:\n{context}"
    );
}
