//! The harness proves itself against QEMU's own user-mode stack (SLIRP), a
//! network stack nobody here wrote: busybox udhcpc must get QEMU's well-known
//! lease, and busybox wget must fetch a file from the host's loopback HTTP
//! server through the gateway 10.0.2.2, byte for byte.

use std::process::Command;
use std::time::Duration;

use slipway_testkit::{Guest, HttpServer};

fn host_md5(path: &std::path::Path) -> String {
    let out = Command::new("md5sum")
        .arg(path)
        .output()
        .expect("md5sum runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("md5sum prints a sum")
        .to_string()
}

#[test]
fn dhcp_and_http_over_qemu_slirp() {
    let dir = slipway_testkit::temp_dir().unwrap();
    // 300 KiB of varied bytes: several TCP windows, not a single segment.
    let data: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &data).unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();

    let script = format!(
        "dhcp eth0 || exit 1\n\
         wget -q -O /tmp/payload.bin http://10.0.2.2:{port}/payload.bin || exit 2\n\
         result md5 \"$(md5sum /tmp/payload.bin | cut -d' ' -f1)\"\n\
         result size \"$(wc -c < /tmp/payload.bin)\"\n",
        port = http.port()
    );
    let out = Guest::builder()
        .netdev("user,id=n0")
        .mac("52:54:00:12:34:99")
        .script(&script)
        .run()
        .unwrap();

    assert_eq!(out.result("dhcp"), Some("bound"), "{}", out.console);
    assert_eq!(out.result("ip"), Some("10.0.2.15"), "{}", out.console);
    assert_eq!(out.result("mask"), Some("24"), "{}", out.console);
    assert_eq!(out.result("router"), Some("10.0.2.2"), "{}", out.console);
    assert_eq!(out.result("dns"), Some("10.0.2.3"), "{}", out.console);
    assert_eq!(out.result("size"), Some("307200"), "{}", out.console);
    assert_eq!(
        out.result("md5"),
        Some(host_md5(&file).as_str()),
        "{}",
        out.console
    );
}

#[test]
fn background_guest_signals_ready_and_reports_failure() {
    // The guest waits for the host between two markers; then the script fails
    // on purpose and wait() must say so with the console.
    let mut guest = Guest::builder()
        .script("ip -o link show eth0 >/dev/null && ready first\nready second\nresult seen yes\nexit 7\n")
        .netdev("user")
        .timeout(Duration::from_secs(180))
        .boot()
        .unwrap();
    let first = guest
        .wait_for_line("SLIPWAY-READY", Duration::from_secs(180))
        .unwrap();
    assert!(first.ends_with("SLIPWAY-READY first"), "{first}");
    let second = guest
        .wait_for_line("SLIPWAY-READY", Duration::from_secs(180))
        .unwrap();
    assert!(second.ends_with("SLIPWAY-READY second"), "{second}");
    let err = guest.wait().unwrap_err().to_string();
    assert!(err.contains("/test.sh exited with status 7"), "{err}");
    assert!(err.contains("SLIPWAY-RESULT seen=yes"), "{err}");
    assert!(err.contains("--- QEMU command ---"), "{err}");
}

#[test]
fn timeout_kills_the_guest_and_shows_the_console() {
    let err = Guest::builder()
        .script("echo before-the-hang\nwhile true; do sleep 1; done\n")
        .timeout(Duration::from_secs(15))
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains("timed out"), "{err}");
    // The guest may be slow to boot on a loaded machine; if it got as far as
    // the script, its output is in the error.
    assert!(err.contains("--- guest console ---"), "{err}");
}

#[test]
fn ending_before_a_marker_is_an_error() {
    let mut guest = Guest::builder()
        .script("echo no marker here\n")
        .boot()
        .unwrap();
    let err = guest
        .wait_for_line("SLIPWAY-READY", Duration::from_secs(180))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ended before printing"), "{err}");
    assert!(err.contains("no marker here"), "{err}");
}

#[test]
fn host_reaches_a_guest_server_through_hostfwd() {
    // The pattern for host-to-guest tests: the guest listens, says ready,
    // the host connects while the guest runs, the guest reports what it got.
    let port = slipway_testkit::free_port().unwrap();
    let mut guest = Guest::builder()
        .netdev(&format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8080"))
        .script(
            "dhcp eth0 || exit 1\n\
             nc -l -p 8080 </dev/null >/tmp/got &\n\
             while ! netstat -ltn | grep -q ':8080 '; do sleep 0.2; done\n\
             ready\n\
             wait\n\
             result got \"$(cat /tmp/got)\"\n",
        )
        .boot()
        .unwrap();
    guest
        .wait_for_line(slipway_testkit::READY_MARKER, Duration::from_secs(180))
        .unwrap();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut conn, b"hello from the host\n").unwrap();
    drop(conn);
    let out = guest.wait().unwrap();
    assert_eq!(
        out.result("got"),
        Some("hello from the host"),
        "{}",
        out.console
    );
}

#[test]
fn two_guests_over_a_stream_socket_with_several_nics() {
    // Guest A listens on a unix stream socket (QEMU server=on); guest B
    // connects to it as its second NIC. Proves several NICs, their order and
    // MACs, and -netdev stream, which slipway's own attachments use.
    let dir = slipway_testkit::temp_dir().unwrap();
    let sock = dir.path().join("link.sock");
    let sock = sock.display();
    let mut a = Guest::builder()
        .netdev(&format!(
            "stream,id=s0,server=on,addr.type=unix,addr.path={sock}"
        ))
        .mac("52:54:00:aa:00:01")
        .script(
            "ip addr add 10.9.0.1/24 dev eth0 && ip link set eth0 up || exit 1\n\
             result mac \"$(cat /sys/class/net/eth0/address)\"\n\
             nc -l -p 7000 </dev/null >/tmp/got &\n\
             while ! netstat -ltn | grep -q ':7000 '; do sleep 0.2; done\n\
             ready\n\
             wait\n\
             result got \"$(cat /tmp/got)\"\n",
        )
        .boot()
        .unwrap();
    a.wait_for_line(slipway_testkit::READY_MARKER, Duration::from_secs(180))
        .unwrap();
    let b = Guest::builder()
        .netdev("user,id=u0")
        .mac("52:54:00:bb:00:01")
        .netdev(&format!(
            "stream,id=s1,server=off,addr.type=unix,addr.path={sock}"
        ))
        .mac("52:54:00:bb:00:02")
        .script(
            "result eth0 \"$(cat /sys/class/net/eth0/address)\"\n\
             result eth1 \"$(cat /sys/class/net/eth1/address)\"\n\
             ip addr add 10.9.0.2/24 dev eth1 && ip link set eth1 up || exit 1\n\
             for i in 1 2 3 4 5 6 7 8 9 10; do\n\
                 echo hello over stream | nc 10.9.0.1 7000 && exit 0\n\
                 sleep 1\n\
             done\n\
             exit 1\n",
        )
        .run()
        .unwrap();
    assert_eq!(b.result("eth0"), Some("52:54:00:bb:00:01"), "{}", b.console);
    assert_eq!(b.result("eth1"), Some("52:54:00:bb:00:02"), "{}", b.console);
    let a = a.wait().unwrap();
    assert_eq!(a.result("mac"), Some("52:54:00:aa:00:01"), "{}", a.console);
    assert_eq!(a.result("got"), Some("hello over stream"), "{}", a.console);
}

#[test]
fn network_boot_through_ipxe_and_tftp() {
    // iPXE (QEMU's NIC ROM) gets DHCP and the boot file from SLIRP, loads
    // kernel and initramfs over SLIRP's TFTP, and the guest runs its script.
    let tftp = slipway_testkit::temp_dir().unwrap();
    let out = Guest::builder()
        .netdev(&format!(
            "user,id=n0,tftp={},bootfile={}",
            tftp.path().display(),
            slipway_testkit::NETBOOT_FILE
        ))
        .network_boot(tftp.path())
        .script("dhcp eth0 || exit 1\n")
        .run()
        .unwrap();
    assert!(
        out.console.contains("tftp://10.0.2.2/boot.ipxe"),
        "{}",
        out.console
    );
    assert_eq!(out.result("ip"), Some("10.0.2.15"), "{}", out.console);
    assert_eq!(
        out.result("boot_file"),
        Some("boot.ipxe"),
        "{}",
        out.console
    );
}

#[test]
fn udp_from_the_guest_with_ncat() {
    // busybox nc has no UDP mode; the guest's ncat (copied from the host with
    // its libraries) talks to the host's UDP echo server through SLIRP.
    let echo = slipway_testkit::UdpEchoServer::start().unwrap();
    let out = Guest::builder()
        .netdev("user")
        .script(&format!(
            "dhcp eth0 || exit 1\n\
             result udp \"$( (echo hello-udp; sleep 2) | ncat -u 10.0.2.2 {})\"\n\
             result iperf3 \"$(iperf3 --version | head -n1 | cut -d' ' -f1)\"\n",
            echo.port()
        ))
        .run()
        .unwrap();
    assert_eq!(out.result("udp"), Some("hello-udp"), "{}", out.console);
    assert_eq!(out.result("iperf3"), Some("iperf"), "{}", out.console);
}
