//! `slipway user` end to end: a real Linux guest under QEMU on each VM
//! attachment, with busybox clients (udhcpc, ping, nc, nslookup, wget,
//! httpd) talking to real peers on the host's loopback.

use std::process::Command;
use std::time::{Duration, Instant};

use slipway_testkit::{DnsServer, Guest, HttpServer};

mod common;
use common::{assert_serves, check, md5, run_guest, s, unix_stream_netdev, wait_line, Slipway};

/// The defaults over a unix stream socket: QEMU's well-known lease, and
/// every service through the host and DNS addresses.
#[test]
fn defaults_over_unix_stream() {
    let dir = slipway_testkit::temp_dir().unwrap();
    // 4 MiB of varied bytes.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let dns = DnsServer::builder()
        .host("www.example.test", "192.0.2.10".parse().unwrap())
        .start()
        .unwrap();
    let refused = slipway_testkit::free_port().unwrap();
    let sock = dir.path().join("vm.sock");

    let mut slipway = Slipway::start(&[
        s("--socket"),
        sock.display().to_string(),
        s("--dns-upstream"),
        dns.addr().to_string(),
    ]);
    slipway.wait_for_path(&sock);
    let script = format!(
        "dhcp eth0 || exit 1\n\
         ping -c 2 -W 10 10.0.2.2 >/dev/null && result ping ok\n\
         nslookup www.example.test 10.0.2.2:{dns_port} > /tmp/udp 2>&1; grep -q 192.0.2.10 /tmp/udp && result udp_nat ok\n\
         nslookup www.example.test 10.0.2.3 > /tmp/ns 2>&1; grep -q 192.0.2.10 /tmp/ns && result nslookup ok\n\
         wget -q -O /tmp/big.bin http://10.0.2.2:{http}/big.bin && result md5 \"$(md5sum /tmp/big.bin | cut -d' ' -f1)\"\n\
         wget -q -O /tmp/x http://10.0.2.2:{refused}/ 2> /tmp/refused; result refused \"$(grep -c 'Connection refused' /tmp/refused)\"\n\
         cat /tmp/ns /tmp/udp /tmp/refused\n",
        dns_port = dns.port(),
        http = http.port(),
    );
    let out = run_guest(
        Guest::builder()
            .netdev(&unix_stream_netdev(&sock))
            .script(&script),
        &slipway,
    );
    check(&out, &slipway, "dhcp", "bound");
    check(&out, &slipway, "ip", "10.0.2.15");
    check(&out, &slipway, "mask", "24");
    check(&out, &slipway, "router", "10.0.2.2");
    check(&out, &slipway, "dns", "10.0.2.3");
    check(&out, &slipway, "mtu", "1500");
    check(&out, &slipway, "lease", "86400");
    check(&out, &slipway, "domain", "");
    check(&out, &slipway, "search", "");
    check(&out, &slipway, "hostname", "");
    check(&out, &slipway, "ping", "ok");
    check(&out, &slipway, "udp_nat", "ok");
    check(&out, &slipway, "nslookup", "ok");
    assert!(dns.log().contains("www.example.test"), "{}", dns.log());
    check(&out, &slipway, "md5", &md5(&file));
    check(&out, &slipway, "refused", "1");
    // The guest powered off: QEMU closed the link, so slipway exits 0 and
    // removes its socket file.
    slipway.wait_exit_ok();
    assert!(!sock.exists(), "socket file left behind");
}

/// A custom network over a TCP stream: every lease field is what the
/// options say.
#[test]
fn custom_network_over_tcp_stream() {
    let port = slipway_testkit::free_port().unwrap();
    let mut slipway = Slipway::start(&[
        s("--listen-tcp"),
        format!("127.0.0.1:{port}"),
        s("--mtu"),
        s("1400"),
        s("--dns-upstream"),
        s("127.0.0.1:9"),
        s(
            "net=192.168.77.0/24,host=192.168.77.1,dns=192.168.77.53,dhcpstart=192.168.77.100,\
           hostname=vm1,domainname=example.test,dnssearch=a.example.test,dnssearch=b.example.test",
        ),
    ]);
    slipway.wait_for_listening();
    let script = "dhcp eth0 || exit 1\n\
                  ping -c 2 -W 10 192.168.77.1 >/dev/null && result ping ok\n\
                  ping -c 1 -W 10 192.168.77.53 >/dev/null && result ping_dns ok\n";
    let out = run_guest(
        Guest::builder()
            .netdev(&format!(
                "stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port={port}"
            ))
            .script(script),
        &slipway,
    );
    check(&out, &slipway, "dhcp", "bound");
    check(&out, &slipway, "ip", "192.168.77.100");
    check(&out, &slipway, "mask", "24");
    check(&out, &slipway, "router", "192.168.77.1");
    check(&out, &slipway, "dns", "192.168.77.53");
    check(&out, &slipway, "serverid", "192.168.77.1");
    check(&out, &slipway, "mtu", "1400");
    check(&out, &slipway, "hostname", "vm1");
    check(&out, &slipway, "domain", "example.test");
    check(&out, &slipway, "search", "a.example.test b.example.test");
    check(&out, &slipway, "ping", "ok");
    check(&out, &slipway, "ping_dns", "ok");
    slipway.wait_exit_ok();
}

/// The legacy `-netdev socket,connect=` speaks the same framing.
#[test]
fn legacy_socket_netdev_over_tcp() {
    let port = slipway_testkit::free_port().unwrap();
    let mut slipway = Slipway::start(&[s("--listen-tcp"), format!("127.0.0.1:{port}")]);
    slipway.wait_for_listening();
    let out = run_guest(
        Guest::builder()
            .netdev(&format!("socket,id=n0,connect=127.0.0.1:{port}"))
            .script("dhcp eth0 || exit 1\nping -c 1 -W 10 10.0.2.2 >/dev/null && result ping ok\n"),
        &slipway,
    );
    check(&out, &slipway, "ip", "10.0.2.15");
    check(&out, &slipway, "ping", "ok");
}

/// A unix datagram attachment (`-netdev dgram`) carries a guest; the
/// stack learns QEMU's address from its first frame.
#[test]
fn unix_dgram_carries_a_guest() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let dns = DnsServer::builder()
        .host("dgram.example.test", "192.0.2.20".parse().unwrap())
        .start()
        .unwrap();
    // 2 MiB toward the guest: far more than the 10 datagrams a unix socket
    // queues, so the link must wait for room instead of stalling.
    let data: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let file = dir.path().join("dgram.bin");
    std::fs::write(&file, &data).unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let sock = dir.path().join("stack.sock");
    let vm_sock = dir.path().join("vm.sock");
    let mut slipway = Slipway::start(&[
        s("--dgram"),
        sock.display().to_string(),
        s("--dns-upstream"),
        dns.addr().to_string(),
    ]);
    slipway.wait_for_path(&sock);
    let script = format!(
        "dhcp eth0 || exit 1\n\
         ping -c 2 -W 10 10.0.2.2 >/dev/null && result ping ok\n\
         nslookup dgram.example.test 2>&1 | grep -q 192.0.2.20 && result nslookup ok\n\
         wget -q -O /tmp/d.bin http://10.0.2.2:{port}/dgram.bin && result md5 \"$(md5sum /tmp/d.bin | cut -d' ' -f1)\"\n",
        port = http.port()
    );
    let netdev = format!(
        "dgram,id=n0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
        vm_sock.display(),
        sock.display()
    );
    let out = run_guest(Guest::builder().netdev(&netdev).script(&script), &slipway);
    check(&out, &slipway, "ip", "10.0.2.15");
    check(&out, &slipway, "router", "10.0.2.2");
    check(&out, &slipway, "ping", "ok");
    check(&out, &slipway, "nslookup", "ok");
    check(&out, &slipway, "md5", &md5(&file));
    // A datagram link has no end: SIGTERM stops it cleanly.
    slipway.terminate_ok();
    assert!(!sock.exists(), "socket file left behind");
}

/// restrict=on over a unix datagram socket: no router or DNS in the lease,
/// nothing outbound, but host forwards (TCP and UDP) still reach the guest.
#[test]
fn restrict_over_unix_dgram_with_forwards() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let dns = DnsServer::builder()
        .host("www.example.test", "192.0.2.10".parse().unwrap())
        .start()
        .unwrap();
    let fwd_tcp = slipway_testkit::free_port().unwrap();
    let fwd_udp = slipway_testkit::free_port().unwrap();
    let sock = dir.path().join("stack.sock");
    let vm_sock = dir.path().join("vm.sock");
    let mut slipway = Slipway::start(&[
        s("--dgram"),
        sock.display().to_string(),
        s("--dns-upstream"),
        dns.addr().to_string(),
        format!("restrict=on,hostfwd=tcp:127.0.0.1:{fwd_tcp}-:8080,hostfwd=udp:127.0.0.1:{fwd_udp}-:7777"),
    ]);
    slipway.wait_for_path(&sock);
    // busybox has no UDP server: the guest kernel's "no port" counter shows
    // that the forwarded datagram arrived.
    let script = format!(
        "dhcp eth0 || exit 1\n\
         wget -q -O /tmp/x http://10.0.2.2:{http}/ 2>/dev/null && result outbound_tcp open || result outbound_tcp blocked\n\
         nslookup www.example.test 10.0.2.2:{dns_port} 2>&1 | grep -q 192.0.2.10 && result outbound_udp open || result outbound_udp blocked\n\
         nslookup www.example.test 10.0.2.3 2>&1 | grep -q 192.0.2.10 && result dns_relay open || result dns_relay blocked\n\
         mkdir -p /www && echo guest-page > /www/index.html\n\
         httpd -p 8080 -h /www\n\
         noports() {{ awk '/^Udp: [0-9]/ {{ print $3 }}' /proc/net/snmp; }}\n\
         base=$(noports)\n\
         ready forwards\n\
         i=0; while [ $i -lt 120 ]; do [ \"$(noports)\" -gt \"$base\" ] && {{ result udp_fwd delivered; break; }}; sleep 1; i=$((i+1)); done\n\
         sleep 120\n",
        http = http.port(),
        dns_port = dns.port(),
    );
    let netdev = format!(
        "dgram,id=n0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
        vm_sock.display(),
        sock.display()
    );
    let mut guest = Guest::builder()
        .netdev(&netdev)
        .script(&script)
        .boot()
        .unwrap();
    wait_line(&mut guest, "SLIPWAY-READY forwards", &slipway);
    let out = guest.output_so_far();
    for (key, want) in [
        ("dhcp", "bound"),
        ("ip", "10.0.2.15"),
        ("router", ""),
        ("dns", ""),
        ("outbound_tcp", "blocked"),
        ("outbound_udp", "blocked"),
        ("dns_relay", "blocked"),
    ] {
        check(&out, &slipway, key, want);
    }
    assert!(
        !dns.log().contains("www.example.test"),
        "a query got out:\n{}",
        dns.log()
    );

    // UDP forward: a datagram from the host reaches the guest.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"hello guest\n", ("127.0.0.1", fwd_udp))
        .unwrap();
    wait_line(&mut guest, "SLIPWAY-RESULT udp_fwd=delivered", &slipway);

    // TCP forward: fetch the guest's page from the host.
    assert_serves(("127.0.0.1", fwd_tcp), "guest-page", &slipway);

    drop(guest);
    slipway.terminate_ok();
    assert!(!sock.exists(), "socket file left behind");
}

/// Connect mode: QEMU listens (`server=on`) and slipway connects; a legacy
/// `--redir` forward lets the host fetch from the guest.
#[test]
fn connect_mode_with_redir() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let sock = dir.path().join("qemu.sock");
    let fwd = slipway_testkit::free_port().unwrap();
    let script = "dhcp eth0 || exit 1\n\
                  mkdir -p /www && echo redir-page > /www/index.html\n\
                  httpd -p 80 -h /www\n\
                  ready served\n\
                  sleep 120\n";
    let mut guest = Guest::builder()
        .netdev(&format!(
            "stream,id=n0,server=on,addr.type=unix,addr.path={}",
            sock.display()
        ))
        .script(script)
        .boot()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "QEMU did not create {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let slipway = Slipway::start(&[
        s("--connect-socket"),
        sock.display().to_string(),
        s("--redir"),
        format!("tcp:{fwd}::80"),
    ]);
    wait_line(&mut guest, "SLIPWAY-READY served", &slipway);
    check(&guest.output_so_far(), &slipway, "ip", "10.0.2.15");
    assert_serves(("127.0.0.1", fwd), "redir-page", &slipway);
    // QEMU going away ends slipway in connect mode.
    drop(guest);
    slipway.wait_exit_ok();
}

/// `--keep-listening`: after one VM powers off the next one attaches; the
/// first VM's lease is kept, so the second gets the next address.
#[test]
fn keep_listening_serves_vm_after_vm() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let sock = dir.path().join("vm.sock");
    let mut slipway = Slipway::start(&[
        s("--socket"),
        sock.display().to_string(),
        s("--keep-listening"),
        s("--dns-upstream"),
        s("127.0.0.1:9"),
    ]);
    slipway.wait_for_path(&sock);
    for (mac, ip) in [
        ("52:54:00:00:00:01", "10.0.2.15"),
        ("52:54:00:00:00:02", "10.0.2.16"),
    ] {
        let out = run_guest(
            Guest::builder()
                .netdev(&unix_stream_netdev(&sock))
                .mac(mac)
                .script(
                    "dhcp eth0 || exit 1\nping -c 1 -W 10 10.0.2.2 >/dev/null && result ping ok\n",
                ),
            &slipway,
        );
        check(&out, &slipway, "ip", ip);
        check(&out, &slipway, "ping", "ok");
    }
    let log = slipway.terminate_ok();
    assert!(log.contains("waiting for the next VM"), "{log}");
    assert!(!sock.exists(), "socket file left behind");
}

/// A host without any nameserver (an empty /etc/resolv.conf, bind-mounted
/// in a user+mount namespace): slipway says so once and the guest's queries
/// get SERVFAIL at once instead of timing out; everything else works.
#[test]
fn no_host_nameserver_gives_servfail() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let empty = dir.path().join("resolv.conf");
    std::fs::write(&empty, "# offline\n").unwrap();
    let sock = dir.path().join("vm.sock");
    let mut cmd = Command::new("unshare");
    cmd.args(["-Urm", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
            empty.display()
        ))
        .arg(env!("CARGO_BIN_EXE_slipway"));
    let mut slipway = Slipway::spawn(cmd, &[s("--socket"), sock.display().to_string()]);
    slipway.wait_for_path(&sock);
    let script = "dhcp eth0 || exit 1\n\
                  nslookup www.example.test > /tmp/ns 2>&1; grep -q SERVFAIL /tmp/ns && result servfail yes\n\
                  cat /tmp/ns\n";
    let out = run_guest(
        Guest::builder()
            .netdev(&unix_stream_netdev(&sock))
            .script(script),
        &slipway,
    );
    check(&out, &slipway, "dns", "10.0.2.3");
    check(&out, &slipway, "servfail", "yes");
    let log = slipway.wait_exit_ok();
    assert_eq!(log.matches("no DNS upstream").count(), 1, "{log}");
}

/// A guest's upload over a unix stream arrives intact: its MTU-sized
/// segments reach the host socket gathered over each read of the link
/// (slipway-usermode's `tcp`, one `sendmsg` per batch over the payloads
/// where they lie in the link's buffer), with the Linux guest's TCP as the
/// peer that retransmits whatever was not taken.
#[test]
fn upload_over_unix_stream_arrives_intact() {
    upload_over_unix_stream(1500);
}

/// The same at MTU 65520: several 64 KiB frames of one flow per read of
/// the link go out in one `sendmsg`, and the link's buffer, which a few
/// such frames fill, has its partial frame moved to the front only once
/// those payloads have left.
#[test]
fn upload_over_unix_stream_at_mtu_65520_arrives_intact() {
    upload_over_unix_stream(65520);
}

fn upload_over_unix_stream(mtu: usize) {
    use std::io::Read;
    const LEN: usize = 8 << 20;
    let dir = slipway_testkit::temp_dir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = vec![0; LEN];
        conn.read_exact(&mut got).unwrap();
        // Dropping the connection ends the guest's nc.
        got
    });
    let sock = dir.path().join("vm.sock");
    let mut slipway = Slipway::start(&[
        s("--socket"),
        sock.display().to_string(),
        s("--mtu"),
        mtu.to_string(),
    ]);
    slipway.wait_for_path(&sock);
    let script = format!(
        "dhcp eth0 || exit 1\n\
         result mtu \"$(cat /sys/class/net/eth0/mtu)\"\n\
         dd if=/dev/urandom of=/tmp/up.bin bs=4096 count={count} 2>/dev/null\n\
         result md5 \"$(md5sum /tmp/up.bin | cut -d' ' -f1)\"\n\
         nc 10.0.2.2 {port} < /tmp/up.bin > /dev/null; result sent done\n",
        count = LEN / 4096,
    );
    let out = run_guest(
        Guest::builder()
            .netdev(&unix_stream_netdev(&sock))
            .script(&script),
        &slipway,
    );
    let got = server.join().unwrap();
    let file = dir.path().join("got.bin");
    std::fs::write(&file, &got).unwrap();
    check(&out, &slipway, "mtu", &mtu.to_string());
    check(&out, &slipway, "sent", "done");
    check(&out, &slipway, "md5", &md5(&file));
    slipway.wait_exit_ok();
}
