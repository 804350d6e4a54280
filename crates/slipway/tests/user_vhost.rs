//! `slipway user --vhost-user`: the test guest boots under QEMU with
//! `-netdev vhost-user` (guest memory shared as a memfd), in a user and
//! network namespace of the test's own, and is served through the rings
//! in its memory: DHCP, DNS through slipway's relay, NAT to loopback
//! servers, a host forward into the guest, and large transfers both ways
//! with identical checksums.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;

use slipway_testkit::{DnsServer, Guest, HttpServer};

mod common;
use common::{assert_serves, check, md5, s, wait_line, Slipway};

const IN_NETNS: &str = "SLIPWAY_USER_VHOST_NETNS";
/// Host to guest: 100 MiB (read by the guest straight into md5sum).
const DOWN_BYTES: u32 = 100 * 1024 * 1024;
/// Guest to host: 8 MiB (the guest holds it in its RAM-backed /tmp).
const UP_BYTES: u32 = 8 * 1024 * 1024;
/// Guest RAM, shared with slipway as a memfd.
const GUEST_MEM: &str = "256M";

fn varied(len: u32, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// QEMU's arguments for a vhost-user NIC on `sock`, besides the netdev.
fn vhost_args(sock: &Path) -> Vec<String> {
    vec![
        s("-chardev"),
        format!("socket,id=c0,path={}", sock.display()),
        s("-object"),
        format!("memory-backend-memfd,id=mem,size={GUEST_MEM},share=on"),
        s("-machine"),
        s("memory-backend=mem"),
    ]
}

#[test]
fn vhost_user_serves_a_guest_through_shared_rings() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    slipway_testkit::netns::sh("ip link set lo up");
    let dir = slipway_testkit::temp_dir().unwrap();
    let down = dir.path().join("down.bin");
    std::fs::write(&down, varied(DOWN_BYTES, 0)).unwrap();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, varied(UP_BYTES, 0x5a5a)).unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let dns = DnsServer::builder()
        .host("www.example.test", "192.0.2.10".parse().unwrap())
        .start()
        .unwrap();
    // The guest's upload arrives here, through the NAT.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let received = dir.path().join("received.bin");
    let received_path = received.clone();
    let sink_thread = std::thread::spawn(move || {
        let (mut conn, _) = sink.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < UP_BYTES as usize {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        std::fs::write(&received_path, &got).unwrap();
    });
    let fwd = slipway_testkit::free_port().unwrap();
    let sock = dir.path().join("vhost.sock");
    let mut slipway = Slipway::start(&[
        s("--vhost-user"),
        s("--socket"),
        sock.display().to_string(),
        s("--dns-upstream"),
        dns.addr().to_string(),
        format!("hostfwd=tcp:127.0.0.1:{fwd}-:8080"),
    ]);
    slipway.wait_for_path(&sock);
    let script = format!(
        "dhcp eth0 || exit 1\n\
         nslookup www.example.test 10.0.2.3 > /tmp/ns 2>&1; grep -q 192.0.2.10 /tmp/ns && result nslookup ok\n\
         result down \"$(wget -q -O - http://10.0.2.2:{http}/down.bin | md5sum | cut -d' ' -f1)\"\n\
         wget -q -O /tmp/up.bin http://10.0.2.2:{http}/up.bin && nc 10.0.2.2 {sink_port} < /tmp/up.bin && result upload sent\n\
         mkdir -p /www && echo guest-page > /www/index.html\n\
         httpd -p 8080 -h /www\n\
         ready forwards\n\
         sleep 300\n",
        http = http.port(),
    );
    let mut guest = Guest::builder()
        .netdev("vhost-user,id=n0,chardev=c0")
        // INTx: QEMU 7.2 under TCG crashes starting vhost with MSI-X
        // (msix_set_vector_notifiers in vhost_net_start).
        .nic_model("virtio-net-pci,vectors=0")
        .extra_args(vhost_args(&sock))
        .script(&script)
        .timeout(std::time::Duration::from_secs(600))
        .boot()
        .unwrap();
    wait_line(&mut guest, "SLIPWAY-READY forwards", &slipway);
    let out = guest.output_so_far();
    check(&out, &slipway, "dhcp", "bound");
    check(&out, &slipway, "ip", "10.0.2.15");
    check(&out, &slipway, "router", "10.0.2.2");
    check(&out, &slipway, "nslookup", "ok");
    assert!(dns.log().contains("www.example.test"), "{}", dns.log());
    check(&out, &slipway, "down", &md5(&down));
    check(&out, &slipway, "upload", "sent");
    sink_thread.join().unwrap();
    assert_eq!(md5(&received), md5(&up), "{}", slipway.log());
    assert!(
        slipway.log().contains("vhost-user"),
        "not the vhost-user transport:\n{}",
        slipway.log()
    );

    // The host forward reaches the guest's httpd.
    assert_serves(("127.0.0.1", fwd), "guest-page", &slipway);

    // QEMU goes away: slipway sees the connection end, exits 0 and
    // removes its socket file.
    drop(guest);
    slipway.wait_exit_ok();
    assert!(!sock.exists(), "socket file left behind");
}
