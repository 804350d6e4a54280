//! slipway for containers, end to end: `slipway run` puts a command in a
//! new user + network namespace behind a tap, and `slipway attach` serves
//! a namespace made by `unshare`, with real clients inside (curl, dig,
//! busybox httpd) and real peers on the host's loopback.

mod common;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use slipway_testkit::netns::wait_for;
use slipway_testkit::{free_port, temp_dir, DnsServer, HttpServer, KillOnDrop};

const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");

/// `len` bytes that do not compress or repeat (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn run_fetches_resolves_serves_a_forward_and_exits_with_the_status() {
    let dir = temp_dir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("big.bin"), noise(6 << 20)).unwrap();
    let inner = d.join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(inner.join("index.html"), "hello from the namespace\n").unwrap();
    let http = HttpServer::serve_dir(&www).unwrap();
    let dns = DnsServer::builder()
        .host("www.example.test", "192.0.2.10".parse().unwrap())
        .start()
        .unwrap();
    let fwd_port = free_port().unwrap();
    // Inside: fetch through the host address, resolve through the DNS
    // address (resolv.conf), then serve a page until the test is done.
    let script = format!(
        r#"set -e
cd {d}
curl -sSf -o got.bin http://10.0.2.2:{http}/big.bin
sha256sum got.bin > inside.sha
dig +short +time=3 +tries=2 www.example.test > dig.txt
cat /etc/resolv.conf > resolv.txt
ip -o link show tap0 > link.txt
busybox httpd -f -p 8000 -h {inner} &
httpd=$!
touch ready
while [ ! -e done ]; do sleep 0.05; done
kill $httpd
exit 7
"#,
        d = d.display(),
        http = http.port(),
        inner = inner.display(),
    );
    let mut cmd = Command::new(SLIPWAY);
    cmd.args(["-vv", "run", "--dns-upstream", &dns.addr().to_string()])
        .arg(format!("hostfwd=tcp:127.0.0.1:{fwd_port}-:8000"))
        .args(["--", "sh", "-c", &script]);
    let mut slipway = Background::spawn(cmd, d.join("slipway.log"));
    slipway.wait_for_file("the command's servers starting", &d.join("ready"));
    let original = www.join("big.bin");
    assert_eq!(
        std::fs::read(d.join("got.bin")).unwrap(),
        std::fs::read(&original).unwrap(),
        "the file came through intact"
    );
    let inside = std::fs::read_to_string(d.join("inside.sha")).unwrap();
    assert!(inside.starts_with(&sha256(&original)), "{inside}");
    assert_eq!(
        std::fs::read_to_string(d.join("resolv.txt")).unwrap(),
        "nameserver 10.0.2.3\n"
    );
    // The tap's queue holds a whole advertised window of MSS-sized frames
    // (far above the kernel's default 1000 at MTU 1500).
    let qlen =
        slipway_netns::txqueuelen_for_window(slipway_usermode::tcp::MAX_ADVERTISED_WINDOW, 1500);
    assert!(qlen > 1000, "{qlen}");
    let link = std::fs::read_to_string(d.join("link.txt")).unwrap();
    assert!(link.contains(&format!(" qlen {qlen}")), "{link}");
    assert_eq!(
        std::fs::read_to_string(d.join("dig.txt")).unwrap().trim(),
        "192.0.2.10"
    );
    assert!(
        dns.log().contains("www.example.test"),
        "the query reached the test DNS server:\n{}",
        dns.log()
    );
    // The forward reaches the server inside the namespace.
    let mut conn = TcpStream::connect(("127.0.0.1", fwd_port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains(" 200 "),
        "{reply}"
    );
    assert!(reply.ends_with("hello from the namespace\n"), "{reply}");
    std::fs::write(d.join("done"), "").unwrap();
    let status = slipway.wait();
    assert_eq!(
        status.code(),
        Some(7),
        "the command's status:\n{}",
        slipway.log()
    );
}

/// The namespace's kernel is offered checksum and segmentation offload on
/// the tap: an upload leaves it in TCP segments far longer than the MTU,
/// with their checksums left undone, and must still reach the host intact.
#[test]
fn run_takes_segmentation_offload_frames_from_the_namespace_intact() {
    let dir = temp_dir().unwrap();
    let d = dir.path();
    let upload = noise(8 << 20);
    std::fs::write(d.join("up.bin"), &upload).unwrap();
    // One upload over IPv4 (TSO4) and one over IPv6 (TSO6: the stack's
    // host address fec0::2 reaches the host's ::1).
    let sink = |addr: &str| {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        (port, received)
    };
    let (port4, received4) = sink("127.0.0.1:0");
    let (port6, received6) = sink("[::1]:0");
    let api = d.join("api.sock");
    let script = format!(
        r#"set -e
cd {d}
PATH=$PATH:/usr/sbin:/sbin ethtool -k tap0 > features.txt
bash -c 'cat up.bin > /dev/tcp/10.0.2.2/{port4}'
# SLAAC from the stack's router advertisements.
i=0
until ip -6 route show default | grep -q tap0 && ! ip -6 addr show dev tap0 | grep -q tentative; do
    i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05
done
bash -c 'cat up.bin > /dev/tcp/fec0::2/{port6}'
touch sent
while [ ! -e done ]; do sleep 0.05; done
"#,
        d = d.display(),
    );
    let mut slipway = Background::run_sh(&api, &script, d.join("slipway.log"));
    slipway.wait_for_file("the upload to finish", &d.join("sent"));
    let features = std::fs::read_to_string(d.join("features.txt")).unwrap();
    for on in [
        "tx-checksumming: on",
        "tx-tcp-segmentation: on",
        "tx-tcp6-segmentation: on",
    ] {
        assert!(features.contains(on), "{on} in:\n{features}");
    }
    for (family, received) in [("IPv4", received4), ("IPv6", received6)] {
        let got = received.join().unwrap();
        assert!(
            got == upload,
            "the {family} upload came through intact ({} bytes of {})",
            got.len(),
            upload.len()
        );
    }
    let counters = slipway.counters(&api);
    let c = &counters["ok"];
    let (frames, bytes) = (
        c["frames_in"].as_u64().unwrap(),
        c["bytes_in"].as_u64().unwrap(),
    );
    // Frames of at most 1514 bytes could not carry 2 x 8 MiB in fewer
    // than 11,600 frames; the kernel's 64 KiB segments need about 260.
    assert!(
        bytes >= 2 * upload.len() as u64 && bytes / frames > 3 * 1514,
        "{frames} frames, {bytes} bytes from the namespace: {counters}"
    );
    assert_eq!(c["drops"]["bad-checksum"], 0, "{counters}");
    std::fs::write(d.join("done"), "").unwrap();
    assert!(slipway.wait().success(), "{}", slipway.log());
}

/// Bursts of UDP replies from a host server reach a namespace served by
/// `slipway run` whole, in order and with their own sizes, over IPv4 and
/// IPv6 (USO4/USO6 toward the tap: the stack reads a flow's datagrams in
/// batches and hands runs of equal-sized ones to the namespace's kernel
/// as single frames it cuts up; fewer frames than datagrams prove it).
#[test]
fn run_delivers_bursts_of_udp_replies_whole_and_in_order() {
    const BURSTS: usize = 20;
    const PER_BURST: usize = 20;
    let dir = temp_dir().unwrap();
    let d = dir.path();
    // Datagram i of burst k: 1200 bytes, the burst's last 700 (a run of
    // equal sizes ended by a shorter one), contents all different.
    let datagram = |k: usize, i: usize| -> Vec<u8> {
        let len = if i + 1 == PER_BURST { 700 } else { 1200 };
        let mut v = noise(len + k * PER_BURST + i);
        v.drain(..k * PER_BURST + i);
        v[0] = k as u8;
        v[1] = i as u8;
        v
    };
    let expected: Vec<u8> = (0..BURSTS)
        .flat_map(|k| (0..PER_BURST).map(move |i| (k, i)))
        .flat_map(|(k, i)| {
            let v = datagram(k, i);
            [(v.len() as u32).to_be_bytes().to_vec(), v].concat()
        })
        .collect();
    let server = |addr: &str| {
        let sock = std::net::UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let served = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for k in 0..BURSTS {
                let (_, peer) = sock.recv_from(&mut buf).unwrap();
                for i in 0..PER_BURST {
                    sock.send_to(&datagram(k, i), peer).unwrap();
                }
            }
        });
        (port, served)
    };
    let (port4, served4) = server("127.0.0.1:0");
    let (port6, served6) = server("[::1]:0");
    let client = format!(
        r#"
import socket, sys
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.connect((host, port))
got = []
for k in range({BURSTS}):
    s.send(b"go %d" % k)
    for i in range({PER_BURST}):
        d = s.recv(65535)
        got.append(len(d).to_bytes(4, "big") + d)
open(out, "wb").write(b"".join(got))
"#
    );
    std::fs::write(d.join("client.py"), client).unwrap();
    let api = d.join("api.sock");
    let script = format!(
        r#"set -e
cd {d}
python3 client.py 10.0.2.2 {port4} got4
i=0
until ip -6 route show default | grep -q tap0 && ! ip -6 addr show dev tap0 | grep -q tentative; do
    i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05
done
python3 client.py fec0::2 {port6} got6
touch received
while [ ! -e done ]; do sleep 0.05; done
"#,
        d = d.display(),
    );
    let mut slipway = Background::run_sh(&api, &script, d.join("slipway.log"));
    slipway.wait_for_file("the bursts to arrive", &d.join("received"));
    served4.join().unwrap();
    served6.join().unwrap();
    for family in ["4", "6"] {
        let got = std::fs::read(d.join(format!("got{family}"))).unwrap();
        assert!(
            got == expected,
            "IPv{family}: the datagrams came through whole and in order ({} bytes of {})",
            got.len(),
            expected.len()
        );
    }
    let counters = slipway.counters(&api);
    let frames_out = counters["ok"]["frames_out"].as_u64().unwrap();
    let datagrams = (2 * BURSTS * PER_BURST) as u64;
    assert!(
        frames_out < datagrams,
        "{frames_out} frames toward the namespace carried {datagrams} datagrams and more: {counters}"
    );
    std::fs::write(d.join("done"), "").unwrap();
    assert!(slipway.wait().success(), "{}", slipway.log());
}

/// A program in the namespace that sends with `UDP_SEGMENT` (UDP GSO)
/// hands the tap runs of datagrams as single frames (USO4/USO6 offered
/// with `TUNSETOFFLOAD`; `ethtool` shows `tx-udp-segmentation: on`), and
/// the host server still gets every datagram whole, in order and with its
/// own size, over IPv4 and IPv6: fewer frames than datagrams prove the
/// runs arrived as one frame each.
#[test]
fn run_takes_udp_segmentation_offload_frames_from_the_namespace() {
    const BURSTS: usize = 20;
    const PER_BURST: usize = 20;
    let dir = temp_dir().unwrap();
    let d = dir.path();
    // Datagram i of burst k: 1200 bytes, the burst's last 700; the same
    // formula as the client's below.
    let datagram = |k: usize, i: usize| -> Vec<u8> {
        let len = if i + 1 == PER_BURST { 700 } else { 1200 };
        (0..len)
            .map(|j| ((k * 31 + i * 7 + j) % 251) as u8)
            .collect()
    };
    let server = |addr: &str| {
        let sock = std::net::UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let served = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            for k in 0..BURSTS {
                let mut peer = None;
                for i in 0..PER_BURST {
                    let (n, from) = sock.recv_from(&mut buf).unwrap();
                    assert!(
                        buf[..n] == datagram(k, i)[..],
                        "burst {k} datagram {i}: {n} bytes, not as sent"
                    );
                    peer = Some(from);
                }
                // The client sends the next burst once this one is in.
                sock.send_to(b"ok", peer.unwrap()).unwrap();
            }
        });
        (port, served)
    };
    let (port4, served4) = server("127.0.0.1:0");
    let (port6, served6) = server("[::1]:0");
    let client = format!(
        r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.connect((host, port))
s.setsockopt(17, 103, 1200)  # SOL_UDP, UDP_SEGMENT: the kernel cuts each send
for k in range({BURSTS}):
    run = b"".join(
        bytes((k * 31 + i * 7 + j) % 251 for j in range(700 if i + 1 == {PER_BURST} else 1200))
        for i in range({PER_BURST})
    )
    s.send(run)
    assert s.recv(16) == b"ok"
"#
    );
    std::fs::write(d.join("client.py"), client).unwrap();
    let api = d.join("api.sock");
    let script = format!(
        r#"set -e
cd {d}
PATH=$PATH:/usr/sbin:/sbin ethtool -k tap0 > features.txt
python3 client.py 10.0.2.2 {port4}
i=0
until ip -6 route show default | grep -q tap0 && ! ip -6 addr show dev tap0 | grep -q tentative; do
    i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05
done
python3 client.py fec0::2 {port6}
touch sent
while [ ! -e done ]; do sleep 0.05; done
"#,
        d = d.display(),
    );
    let mut slipway = Background::run_sh(&api, &script, d.join("slipway.log"));
    slipway.wait_for_file("the bursts to be sent", &d.join("sent"));
    served4.join().unwrap();
    served6.join().unwrap();
    let features = std::fs::read_to_string(d.join("features.txt")).unwrap();
    assert!(
        features.contains("tx-udp-segmentation: on"),
        "USO offered to the namespace's kernel:\n{features}"
    );
    let counters = slipway.counters(&api);
    let c = &counters["ok"];
    let frames_in = c["frames_in"].as_u64().unwrap();
    let datagrams = (2 * BURSTS * PER_BURST) as u64;
    assert!(
        frames_in < datagrams / 2,
        "{frames_in} frames from the namespace carried {datagrams} datagrams and more: {counters}"
    );
    assert_eq!(c["drops"]["oversized"], 0, "{counters}");
    std::fs::write(d.join("done"), "").unwrap();
    assert!(slipway.wait().success(), "{}", slipway.log());
}

/// slipway as an ordinary user (nobody), with nothing but an openable
/// `/dev/net/tun`: `run` makes a namespace of its own and the fetch through
/// the host address works, with `--no-host-loopback` that address is
/// refused; `attach` serves a namespace the user made with `unshare -Urn`
/// (rootless containers' way).
#[test]
fn run_and_attach_work_unprivileged() {
    let dir = temp_dir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("f.bin"), noise(300_000)).unwrap();
    std::fs::create_dir(d.join("dev")).unwrap();
    let http = HttpServer::serve_dir(&www).unwrap();
    let url = format!("http://10.0.2.2:{}/f.bin", http.port());
    // This machine's /dev/net/tun may be root's alone (Debian makes it
    // 0666): in a mount namespace of the test's own, a 0666 node of the
    // same device is bound over it; nothing outside changes. `script`
    // then runs as nobody.
    let as_nobody = |script: &str| {
        let setup = format!(
            r#"set -e
mount --make-rprivate /
mount -t tmpfs -o size=64k tmpfs {d}/dev
mknod -m 666 {d}/dev/tun c 10 200
mount --bind {d}/dev/tun /dev/net/tun
exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "$1""#,
            d = d.display(),
        );
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &setup, "sh", script])
            .env("SLIPWAY", SLIPWAY)
            .env("URL", &url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            text,
        )
    };
    let fetch = r#"curl -sSf -o /dev/null -w "%{size_download}\n" "$URL""#;
    let (code, stdout, all) = as_nobody(&format!(
        r#""$SLIPWAY" run -- sh -c 'cat /proc/self/uid_map; {fetch}; exit 3'"#
    ));
    assert_eq!(code, Some(3), "{all}");
    let mut lines = stdout.lines();
    let uid_map: Vec<_> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        uid_map,
        ["0", "65534", "1"],
        "root inside is nobody outside: {all}"
    );
    assert_eq!(lines.next(), Some("300000"), "{all}");
    // Without host loopback the host address refuses at once (curl: 7,
    // could not connect) while the command runs on.
    let (code, stdout, all) = as_nobody(
        r#""$SLIPWAY" run --no-host-loopback -- sh -c 'curl -sS -m 10 -o /dev/null "$URL"; echo curl=$?'"#,
    );
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(stdout.trim(), "curl=7", "{all}");
    // attach: nobody's own namespace, served until its process ends.
    let (code, stdout, all) = as_nobody(&format!(
        r#"unshare -Urn sleep 120 &
ns=$!
inside() {{ nsenter -t $ns -U -n --preserve-credentials "$@"; }}
i=0
until [ "$(readlink /proc/$ns/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do
    i=$((i+1)); [ $i -lt 500 ] || exit 9; sleep 0.02
done
"$SLIPWAY" attach --configure $ns tap0 &
sw=$!
i=0
until inside ip -4 addr show tap0 2>/dev/null | grep -q 10.0.2.100/24; do
    i=$((i+1)); [ $i -lt 500 ] || exit 10; sleep 0.02
done
inside {fetch}
kill $ns
wait $sw
echo attach=$?"#
    ));
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(stdout, "300000\nattach=0\n", "{all}");
}

/// `--no-host-loopback` keeps every guest packet off the host's loopback,
/// not only those to the host address: a namespace that routes 127/8 out
/// through its tap (loopback address removed, `route_localnet` on) reaches
/// a server on the host's 127.0.0.1 without the option and is refused at
/// once with it.
#[test]
fn run_with_no_host_loopback_refuses_loopback_addressed_directly() {
    let dir = temp_dir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "on the host's loopback\n").unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let script = format!(
        r#"set -e
ip addr flush dev lo
ip link set lo down
for c in all tap0; do echo 1 > /proc/sys/net/ipv4/conf/$c/route_localnet; done
ip route add 127.0.0.0/8 via 10.0.2.2 dev tap0
set +e
curl -sS -m 10 http://127.0.0.1:{port}/f.txt
echo curl=$?"#,
        port = http.port()
    );
    let run = |extra: &[&str]| {
        let out = Command::new(SLIPWAY)
            .arg("run")
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{all}");
        (stdout, all)
    };
    let (stdout, all) = run(&[]);
    assert_eq!(stdout, "on the host's loopback\ncurl=0\n", "{all}");
    // curl 7: could not connect (the stack answered the SYN with a RST).
    let (stdout, all) = run(&["--no-host-loopback"]);
    assert_eq!(stdout, "curl=7\n", "{all}");
}

/// The namespace's resolv.conf names the stack's DNS address and the
/// search list; on a host without /etc/resolv.conf (here: an /etc of the
/// test's own, in a mount namespace) there is nothing to cover, and the
/// command runs anyway, with a warning naming the address to use.
#[test]
fn run_writes_the_search_list_and_copes_without_a_host_resolv_conf() {
    let out = Command::new(SLIPWAY)
        .args([
            "run",
            "domainname=corp.test,dnssearch=a.test,dnssearch=b.test",
        ])
        .args(["--", "cat", "/etc/resolv.conf"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nameserver 10.0.2.3\nsearch corp.test a.test b.test\n",
        "{stderr}"
    );
    let dir = temp_dir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    // The sandbox looks its user up in passwd and group.
    for f in ["passwd", "group"] {
        std::fs::copy(Path::new("/etc").join(f), etc.join(f)).unwrap();
    }
    let script = format!(
        r#"set -e
mount --make-rprivate /
mount --bind {etc} /etc
exec "$SLIPWAY" run -- sh -c 'test ! -e /etc/resolv.conf; exit 4'"#,
        etc = etc.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("SLIPWAY", SLIPWAY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("/etc/resolv.conf does not exist on this host")
            && stderr.contains("should use 10.0.2.3"),
        "{stderr}"
    );
}

#[test]
fn run_reports_a_missing_command() {
    let out = Command::new(SLIPWAY)
        .args(["run", "--", "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run '/nonexistent/command'"), "{err}");
}

/// A line of `/proc/PID/status` (`Seccomp:`, `NoNewPrivs:`, `Uid:`...),
/// without its key; empty once the process is gone.
fn proc_status(pid: &str, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn run_confines_its_stack_unless_told_not_to() {
    for (flag, sandboxed) in [(None, true), (Some("--no-sandbox"), false)] {
        let dir = temp_dir().unwrap();
        let d = dir.path().display();
        let script = format!(
            "echo $$ > {d}/pid.tmp && mv {d}/pid.tmp {d}/pid\n\
             while [ ! -e {d}/done ]; do sleep 0.05; done"
        );
        let mut cmd = Command::new(SLIPWAY);
        cmd.args(["-v", "run", "--dns-upstream", "127.0.0.1:53"])
            .args(flag)
            .args(["--", "sh", "-c", &script]);
        let mut slipway = Background::spawn(cmd, dir.path().join("slipway.log"));
        let pidfile = dir.path().join("pid");
        slipway.wait_for_file("the command", &pidfile);
        let command = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        let pid = slipway.child.0.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let children: Vec<&str> = children.split_whitespace().collect();
        assert!(children.contains(&command.as_str()), "{children:?}");
        // With the sandbox, the stack is slipway's other child; without,
        // slipway itself.
        let stack = if sandboxed {
            let others: Vec<&str> = children.into_iter().filter(|&c| c != command).collect();
            assert_eq!(others.len(), 1, "{others:?}\n{}", slipway.log());
            others[0].to_string()
        } else {
            assert_eq!(children, [command.as_str()]);
            pid.to_string()
        };
        if sandboxed {
            wait_for("the stack confining itself", || {
                proc_status(&stack, "Seccomp:") == "2"
            });
            assert_eq!(proc_status(&stack, "NoNewPrivs:"), "1");
            assert_eq!(proc_status(&stack, "CapEff:"), "0000000000000000");
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                let uid = proc_status(&stack, "Uid:");
                assert!(!uid.starts_with("0\t"), "the stack left root: {uid}");
            }
        } else {
            assert_eq!(proc_status(&stack, "Seccomp:"), "0", "{}", slipway.log());
        }
        // The command itself is not confined.
        assert_eq!(proc_status(&command, "Seccomp:"), "0");
        // SIGTERM reaches the stack (forwarded when it is a child), which
        // ends; the command is stopped and its status is slipway's.
        assert!(Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success());
        let status = slipway.wait();
        let log = slipway.log();
        assert_eq!(status.code(), Some(128 + 15), "{flag:?}:\n{log}");
        assert!(!log.contains("Operation not permitted"), "{flag:?}:\n{log}");
    }
}

/// A process in its own user + network namespace (`unshare -Urn`).
struct Unshared(KillOnDrop);

impl Unshared {
    fn start() -> Unshared {
        let child = Command::new("unshare")
            .args(["-Urn", "sleep", "300"])
            .spawn()
            .expect("unshare runs");
        let me = std::fs::metadata("/proc/self/ns/net").unwrap();
        let pid = child.id();
        use std::os::unix::fs::MetadataExt;
        wait_for("the namespace", || {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() != me.ino())
        });
        Unshared(KillOnDrop(child))
    }

    fn pid(&self) -> u32 {
        self.0 .0.id()
    }

    /// Runs `args` inside the namespace.
    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid().to_string(),
                "-U",
                "-n",
                "--preserve-credentials",
            ])
            .args(args)
            .output()
            .unwrap()
    }
}

/// A background `slipway` whose log (stderr) goes to a file, killed when
/// the test ends.
struct Background {
    child: KillOnDrop,
    log: std::path::PathBuf,
}

impl Background {
    /// `slipway run --api API -- sh -c SCRIPT`, its log in `log`.
    fn run_sh(api: &Path, script: &str, log: std::path::PathBuf) -> Background {
        let mut cmd = Command::new(SLIPWAY);
        cmd.arg("run")
            .arg("--api")
            .arg(api)
            .args(["--", "sh", "-c", script]);
        Background::spawn(cmd, log)
    }

    /// `slipway ctl --api API --json counters`, parsed (failing with this
    /// process's log when the reply is not JSON).
    fn counters(&self, api: &Path) -> serde_json::Value {
        let out = Command::new(SLIPWAY)
            .args(["ctl", "--api"])
            .arg(api)
            .args(["--json", "counters"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", self.log()))
    }

    /// Spawns `cmd` (a `slipway` command line) with its log in `log`.
    fn spawn(mut cmd: Command, log: std::path::PathBuf) -> Background {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Background {
            child: KillOnDrop(child),
            log,
        }
    }

    /// Spawns `cmd` (`slipway attach`, or slipway linked as slirp4netns)
    /// with `--ready-fd` and then `namespace` (its last arguments), and
    /// waits for the ready signal.
    fn spawn_ready(mut cmd: Command, namespace: &[String], log: std::path::PathBuf) -> Background {
        let (ready_r, ready_w) = pipe();
        cmd.arg("--ready-fd")
            .arg(ready_w.as_raw_fd().to_string())
            .args(namespace);
        pass_fd(&mut cmd, &ready_w);
        let spawned = Background::spawn(cmd, log);
        drop(ready_w);
        let mut ready = String::new();
        std::fs::File::from(ready_r)
            .read_to_string(&mut ready)
            .unwrap();
        assert_eq!(ready, "1", "ready signal:\n{}", spawned.log());
        spawned
    }

    /// Its log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `marker` exists (the command inside writes it), failing
    /// at once, with the log, if slipway ends first.
    fn wait_for_file(&mut self, what: &str, marker: &Path) {
        wait_for(what, || {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("slipway ended early with {status}:\n{}", self.log());
            }
            marker.exists()
        });
    }

    /// Waits for slipway to end.
    fn wait(&mut self) -> std::process::ExitStatus {
        self.child.0.wait().unwrap()
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Lets the child of `cmd`, and only it, inherit `fd` across exec (a
/// descriptor without close-on-exec in the test process would leak into
/// every child that tests running alongside spawn, and keep pipes open).
fn pass_fd(cmd: &mut Command, fd: &OwnedFd) {
    use std::os::unix::process::CommandExt;
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl is async-signal-safe; it clears FD_CLOEXEC in the
    // forked child only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

#[test]
fn attach_serves_a_namespace_made_by_unshare_until_it_goes_away() {
    let dir = temp_dir().unwrap();
    std::fs::write(dir.path().join("f.bin"), noise(3 << 20)).unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let ns = Unshared::start();
    let mut cmd = Command::new(SLIPWAY);
    cmd.args(["-vv", "attach", "--configure", "--mtu", "65520"]);
    let mut slipway =
        Background::spawn_ready(cmd, &[ns.pid().to_string()], dir.path().join("attach.log"));
    let pid = slipway.child.0.id().to_string();
    wait_for("slipway attach confining itself", || {
        proc_status(&pid, "Seccomp:") == "2"
    });
    assert_eq!(proc_status(&pid, "NoNewPrivs:"), "1");
    let addr = ns.exec(&["ip", "-4", "-o", "addr", "show", "tap0"]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("10.0.2.100/24"), "{addr}");
    let link = ns.exec(&["ip", "-o", "link", "show", "tap0"]);
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("mtu 65520"), "{link}");
    let route = ns.exec(&["ip", "route", "show", "default"]);
    assert!(String::from_utf8_lossy(&route.stdout).contains("via 10.0.2.2 dev tap0"));
    let got = ns.exec(&[
        "curl",
        "-sSf",
        &format!("http://10.0.2.2:{}/f.bin", http.port()),
    ]);
    assert!(
        got.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&got.stderr),
        slipway.log()
    );
    assert!(
        got.stdout == std::fs::read(dir.path().join("f.bin")).unwrap(),
        "the file came through intact"
    );
    // The process whose namespace is served ends: so does slipway.
    drop(ns);
    wait_for("slipway attach exiting", || {
        slipway.child.0.try_wait().unwrap().is_some()
    });
    assert!(slipway.wait().success(), "{}", slipway.log());
}

/// `--exit-fd` (slirp4netns's): slipway stops serving when the other end
/// of that pipe is closed, though the namespace lives on.
#[test]
fn attach_ends_when_its_exit_fd_closes() {
    let dir = temp_dir().unwrap();
    let ns = Unshared::start();
    let (exit_r, exit_w) = pipe();
    let mut cmd = Command::new(SLIPWAY);
    cmd.args(["attach", "--exit-fd"])
        .arg(exit_r.as_raw_fd().to_string());
    pass_fd(&mut cmd, &exit_r);
    let mut slipway =
        Background::spawn_ready(cmd, &[ns.pid().to_string()], dir.path().join("attach.log"));
    drop(exit_r);
    // Serving: the tap is there, and slipway still runs.
    let link = ns.exec(&["ip", "-o", "link", "show", "tap0"]);
    assert!(link.status.success(), "{}", slipway.log());
    assert!(slipway.child.0.try_wait().unwrap().is_none());
    drop(exit_w);
    wait_for("slipway attach exiting", || {
        slipway.child.0.try_wait().unwrap().is_some()
    });
    assert!(slipway.wait().success(), "{}", slipway.log());
    assert!(
        std::fs::metadata(format!("/proc/{}/ns/net", ns.pid())).is_ok(),
        "the namespace outlives slipway"
    );
}

/// Linked as `slirp4netns`, slipway takes the command line podman gives
/// slirp4netns (namespace files, short options, its option names) and
/// serves the namespace as slirp4netns would: address, MTU and route from
/// `-c`, `--mtu`, `--cidr` and `--macaddress`, DNS through the network's DNS address, host
/// loopback refused under `--disable-host-loopback`, IPv6 in slirp4netns's
/// fd00::/64; `-v` is the version.
#[test]
fn linked_as_slirp4netns_it_takes_podmans_command_line() {
    let dir = temp_dir().unwrap();
    let d = dir.path();
    let s4n = d.join("slirp4netns");
    std::os::unix::fs::symlink(SLIPWAY, &s4n).unwrap();
    let version = Command::new(&s4n).arg("-v").output().unwrap();
    assert!(version.status.success());
    assert!(
        String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{version:?}"
    );
    std::fs::write(d.join("index.html"), "host page\n").unwrap();
    let http = HttpServer::serve_dir(d).unwrap();
    let dns = DnsServer::builder()
        .host("db.example.test", "192.0.2.7".parse().unwrap())
        .start()
        .unwrap();
    let ns = Unshared::start();
    let (exit_r, exit_w) = pipe();
    let pid = ns.pid();
    let mut cmd = Command::new(&s4n);
    cmd.args([
        "--disable-host-loopback",
        "--mtu=65520",
        "--enable-sandbox",
        "--enable-seccomp",
        "--enable-ipv6",
        "-c",
        "--cidr=10.8.0.0/24",
        "--macaddress=52:54:00:12:34:99",
    ])
    .arg(format!("--dns-upstream={}", dns.addr()))
    .arg("-e")
    .arg(exit_r.as_raw_fd().to_string())
    .arg("--netns-type=path")
    .arg(format!("--userns-path=/proc/{pid}/ns/user"));
    pass_fd(&mut cmd, &exit_r);
    let namespace = [format!("/proc/{pid}/ns/net"), "tap0".to_string()];
    let mut slipway = Background::spawn_ready(cmd, &namespace, d.join("s4n.log"));
    drop(exit_r);
    let text = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let addr = text(ns.exec(&["ip", "-4", "-o", "addr", "show", "tap0"]));
    assert!(addr.contains("10.8.0.100/24"), "{addr}");
    let link = text(ns.exec(&["ip", "-o", "link", "show", "tap0"]));
    assert!(link.contains("mtu 65520"), "{link}");
    assert!(link.contains("link/ether 52:54:00:12:34:99 "), "{link}");
    let route = text(ns.exec(&["ip", "route", "show", "default"]));
    assert!(route.contains("via 10.8.0.2 dev tap0"), "{route}");
    let answer = text(ns.exec(&[
        "dig",
        "+short",
        "+time=3",
        "+tries=2",
        "@10.8.0.3",
        "db.example.test",
    ]));
    assert_eq!(answer.trim(), "192.0.2.7", "{}", slipway.log());
    // IPv6 as slirp4netns serves it: SLAAC in fd00::/64, DNS at fd00::3
    // (not QEMU's fec0::, which `slipway user` and `run` keep).
    wait_for("a SLAAC address in fd00::/64 on tap0", || {
        text(ns.exec(&["ip", "-6", "-o", "addr", "show", "tap0", "scope", "global"]))
            .contains(" inet6 fd00::5054:ff:fe12:3499/64 ")
    });
    let answer = text(ns.exec(&[
        "dig",
        "+short",
        "+time=3",
        "+tries=2",
        "@fd00::3",
        "db.example.test",
    ]));
    assert_eq!(answer.trim(), "192.0.2.7", "{}", slipway.log());
    let refused = ns.exec(&[
        "curl",
        "-sS",
        "-m",
        "10",
        &format!("http://10.8.0.2:{}/", http.port()),
    ]);
    assert_eq!(refused.status.code(), Some(7), "{}", slipway.log());
    // Closing the exit descriptor ends it, as slirp4netns's does.
    drop(exit_w);
    wait_for("slirp4netns (slipway) exiting", || {
        slipway.child.0.try_wait().unwrap().is_some()
    });
    assert!(slipway.wait().success(), "{}", slipway.log());
}

/// Sends one request to a slirp4netns API socket the way rootlesskit does
/// (write, shut the write side, read to the end) and returns the reply.
fn slirp4netns_api_call(socket: &Path, request: &str) -> String {
    // The file may be there a moment before the socket listens.
    let mut conn = None;
    wait_for("connecting to the API socket", || {
        conn = std::os::unix::net::UnixStream::connect(socket).ok();
        conn.is_some()
    });
    let mut conn = conn.unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply
}

/// slirp4netns's API (`--api-socket`): the same requests, sent to real
/// slirp4netns and to `slipway attach --api-socket`, each serving a
/// namespace made by unshare, get the same replies (ids 1, 2, ... never
/// reused, the default addresses, the error texts), except that slipway
/// says why the host refused a port. A forward added through slipway's
/// socket reaches a server in the namespace; once removed, the port
/// refuses.
#[test]
fn attach_answers_slirp4netns_api_requests_as_slirp4netns_does() {
    let dir = temp_dir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "served through add_hostfwd\n").unwrap();
    let (tcp_port, udp_port) = (free_port().unwrap(), free_port().unwrap());
    let add = |args: String| format!(r#"{{"execute":"add_hostfwd","arguments":{{{args}}}}}"#);
    let tcp_fwd = add(format!(
        r#""proto":"tcp","host_addr":"127.0.0.1","host_port":{tcp_port},"guest_port":80"#
    ));
    let requests = [
        r#"{"execute":"list_hostfwd"}"#.to_string(),
        tcp_fwd.clone(),
        add(format!(
            r#""proto":"udp","host_addr":"127.0.0.1","host_port":{udp_port},"guest_addr":"10.0.2.100","guest_port":53"#
        )),
        tcp_fwd.clone(),
        r#"{"execute": "list_hostfwd"}"#.to_string(),
        r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#.to_string(),
        r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#.to_string(),
        r#"{"execute":"remove_hostfwd","arguments":{"id":99}}"#.to_string(),
        add(r#""proto":"sctp","host_port":1,"guest_port":1"#.to_string()),
        add(r#""proto":"tcp","host_addr":"bogus","host_port":1,"guest_port":1"#.to_string()),
        add(r#""proto":"tcp","host_port":1"#.to_string()),
        r#"{"execute":"reboot"}"#.to_string(),
        "not json".to_string(),
        "[]".to_string(),
        "{}".to_string(),
        tcp_fwd.clone(),
        r#"{"execute":"list_hostfwd"}"#.to_string(),
    ];
    // Real slirp4netns first (then gone, its ports free again).
    let reference = {
        let ns = Unshared::start();
        let socket = d.join("slirp4netns.sock");
        let mut cmd = Command::new("slirp4netns");
        cmd.arg("--api-socket")
            .arg(&socket)
            .args(["--configure", &ns.pid().to_string(), "tap0"]);
        let mut s4n = Background::spawn(cmd, d.join("slirp4netns.log"));
        s4n.wait_for_file("slirp4netns's API socket", &socket);
        let replies: Vec<String> = requests
            .iter()
            .map(|r| slirp4netns_api_call(&socket, r))
            .collect();
        drop(s4n);
        replies
    };
    let ns = Unshared::start();
    let socket = d.join("slipway.sock");
    let mut cmd = Command::new(SLIPWAY);
    cmd.args(["-vv", "attach", "--configure", "-a"])
        .arg(&socket)
        .arg(ns.pid().to_string());
    let mut slipway = Background::spawn(cmd, d.join("slipway.log"));
    slipway.wait_for_file("slipway's API socket", &socket);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let replies: Vec<String> = requests
        .iter()
        .map(|r| slirp4netns_api_call(&socket, r))
        .collect();
    // The port already forwarded: slipway adds the host's reason.
    let refused = r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#;
    assert_eq!(reference[3], refused);
    for ((request, want), got) in requests.iter().zip(&reference).zip(&replies) {
        if want == refused {
            assert!(
                got.starts_with(refused.trim_end_matches("\"}}")) && got.len() > refused.len(),
                "{request}: {got}"
            );
        } else {
            assert_eq!(got, want, "{request}\n{}", slipway.log());
        }
    }
    assert_eq!(
        replies.last().unwrap(),
        &format!(
            r#"{{"entries":[{{"id":2,"proto":"udp","host_addr":"127.0.0.1","host_port":{udp_port},"guest_addr":"10.0.2.100","guest_port":53}},{{"id":3,"proto":"tcp","host_addr":"127.0.0.1","host_port":{tcp_port},"guest_addr":"10.0.2.100","guest_port":80}}]}}"#
        )
    );
    // Forward id 3 reaches a server in the namespace.
    let mut httpd = Command::new("nsenter");
    httpd
        .args([
            "-t",
            &ns.pid().to_string(),
            "-U",
            "-n",
            "--preserve-credentials",
        ])
        .args(["busybox", "httpd", "-f", "-p", "80", "-h"])
        .arg(&www);
    let _httpd = Background::spawn(httpd, d.join("httpd.log"));
    let get = || -> std::io::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", tcp_port))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    };
    let mut reply = String::new();
    wait_for("the page through the forward", || {
        reply = get().unwrap_or_default();
        reply.contains(" 200 ")
    });
    assert!(reply.ends_with("served through add_hostfwd\n"), "{reply}");
    // Removed, the port refuses.
    assert_eq!(
        slirp4netns_api_call(
            &socket,
            r#"{"execute":"remove_hostfwd","arguments":{"id":3}}"#
        ),
        r#"{"return":{}}"#
    );
    let refused = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // The namespace's process ends: so does slipway, and the socket goes.
    drop(ns);
    wait_for("slipway attach exiting", || {
        slipway.child.0.try_wait().unwrap().is_some()
    });
    assert!(slipway.wait().success(), "{}", slipway.log());
    assert!(!socket.exists(), "the API socket is removed");
}

/// rootlesskit, unchanged, with slipway as its slirp4netns
/// (`--slirp4netns-binary`) and its slirp4netns port driver: the ports
/// given with `-p` and added, listed and removed with `rootlessctl` go
/// through slipway's slirp4netns API and reach a server in rootlesskit's
/// namespace.
#[test]
fn rootlesskit_exposes_ports_through_slipway_as_its_slirp4netns() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // rootlesskit needs subordinate ids, given here in a private mount
        // namespace, which takes root (CI runs as root).
        return;
    }
    let dir = temp_dir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "served for rootlesskit\n").unwrap();
    let s4n = d.join("slirp4netns");
    std::os::unix::fs::symlink(SLIPWAY, &s4n).unwrap();
    // The test's own subordinate ids, seen by rootlesskit only.
    let subid = d.join("subid");
    std::fs::write(&subid, "root:100000:65536\n").unwrap();
    let state = d.join("state");
    let (ready, done) = (d.join("ready"), d.join("done"));
    let (port1, port2) = (free_port().unwrap(), free_port().unwrap());
    let inside = format!(
        "busybox httpd -f -p 80 -h {www} & touch {ready}; \
         while [ ! -e {done} ]; do sleep 0.05; done; kill $!",
        www = www.display(),
        ready = ready.display(),
        done = done.display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$0\" /etc/subuid && mount --bind \"$0\" /etc/subgid && \
             exec rootlesskit \"$@\"",
        )
        .arg(&subid)
        .arg(format!("--state-dir={}", state.display()))
        .arg("--net=slirp4netns")
        .arg(format!("--slirp4netns-binary={}", s4n.display()))
        .args(["--disable-host-loopback", "--port-driver=slirp4netns"])
        .arg(format!("--publish=127.0.0.1:{port1}:80/tcp"))
        .args(["sh", "-c", &inside]);
    let mut rootlesskit = Background::spawn(cmd, d.join("rootlesskit.log"));
    rootlesskit.wait_for_file("the server in rootlesskit's namespace", &ready);
    let get = |port: u16| -> std::io::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", port))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    };
    let serves = |port: u16| {
        let mut reply = String::new();
        wait_for("the page through a published port", || {
            reply = get(port).unwrap_or_default();
            reply.contains(" 200 ")
        });
        assert!(reply.ends_with("served for rootlesskit\n"), "{reply}");
    };
    serves(port1);
    let rootlessctl = |args: &[&str]| {
        let out = Command::new("rootlessctl")
            .arg(format!("--socket={}", state.join("api.sock").display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rootlessctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            rootlesskit.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let added = rootlessctl(&["add-ports", &format!("127.0.0.1:{port2}:80/tcp")]);
    assert_eq!(added.trim(), "2");
    serves(port2);
    let listed = rootlessctl(&["list-ports"]);
    assert!(listed.contains(&format!("{port2}")), "{listed}");
    assert_eq!(rootlessctl(&["remove-ports", "2"]).trim(), "2");
    let refused = TcpStream::connect(("127.0.0.1", port2)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    serves(port1);
    std::fs::write(&done, "").unwrap();
    let status = rootlesskit.wait();
    assert!(status.success(), "{status}:\n{}", rootlesskit.log());
}

/// `--outbound-addr` (slirp4netns's): the namespace's TCP connections and
/// UDP datagrams leave the host from that address (127.0.0.2 here, seen by
/// servers on 127.0.0.1); `--disable-dns`: the DNS address relays nothing.
#[test]
fn attach_sends_from_the_outbound_address_and_disable_dns_stops_the_relay() {
    let dir = temp_dir().unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (tcp_port, udp_port) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let tcp_peer = std::thread::spawn(move || {
        let (mut conn, peer) = tcp.accept().unwrap();
        conn.write_all(b"hello\n").unwrap();
        peer.ip()
    });
    let dns = DnsServer::builder()
        .host("db.example.test", "192.0.2.7".parse().unwrap())
        .start()
        .unwrap();
    let ns = Unshared::start();
    let mut cmd = Command::new(SLIPWAY);
    cmd.args(["attach", "-c", "--outbound-addr=127.0.0.2", "--disable-dns"])
        .arg(format!("--dns-upstream={}", dns.addr()));
    let mut slipway =
        Background::spawn_ready(cmd, &[ns.pid().to_string()], dir.path().join("attach.log"));
    let got = ns.exec(&[
        "bash",
        "-c",
        &format!(
            "exec 3<>/dev/tcp/10.0.2.2/{tcp_port} && head -n1 <&3 && echo datagram > /dev/udp/10.0.2.2/{udp_port}"
        ),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "hello\n",
        "{}\n{}",
        String::from_utf8_lossy(&got.stderr),
        slipway.log()
    );
    assert_eq!(tcp_peer.join().unwrap(), IpAddr::from([127, 0, 0, 2]));
    let mut buf = [0u8; 64];
    let (n, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"datagram\n"[..], IpAddr::from([127, 0, 0, 2]))
    );
    let dig = ns.exec(&["dig", "+time=1", "+tries=1", "@10.0.2.3", "db.example.test"]);
    assert!(
        !dig.status.success(),
        "{}",
        String::from_utf8_lossy(&dig.stdout)
    );
    assert!(!dns.log().contains("db.example.test"), "{}", dns.log());
    drop(ns);
    wait_for("slipway attach exiting", || {
        slipway.child.0.try_wait().unwrap().is_some()
    });
}

/// A counter of `/proc/PID/io` (`syscr`: the `read`-family system calls
/// the process made; socket receives are not among them, so for the
/// stack these are its tap reads).
fn proc_io(pid: &str, key: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/io: {io}"))
}

/// CPU time (user + system, clock ticks) of process `pid`.
fn proc_cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based); fields[0] is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The tap is read level-triggered (`link/tap.rs`): in a UDP ping-pong
/// between the namespace and a host echo server, `slipway attach` reads
/// the tap once per datagram, with no read that finds it empty (the
/// kernel counts the reads: `syscr`); a burst queued in the tap while the
/// stack was stopped, far more frames than one read batch, still arrives
/// whole after it goes on (the reads stop at a budget and the next poll
/// comes back for the rest); and afterwards the stack sleeps instead of
/// spinning on a level-triggered descriptor.
#[test]
fn attach_reads_the_tap_once_per_datagram_and_a_queued_burst_arrives_whole() {
    const WARM_UP: usize = 50;
    const PINGS: usize = 400;
    // Over three read batches (64 frames), and few enough that the host
    // sink's default receive buffer holds them all unread (no loss there
    // whatever the machine's load).
    const BURST: usize = 200;
    let dir = temp_dir().unwrap();
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let sunk = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = sunk.clone();
    std::thread::spawn(move || {
        let mut buf = [0; 2048];
        while sink.recv(&mut buf).is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let client = dir.path().join("client.py");
    std::fs::write(
        &client,
        r#"
import socket, sys
mode, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.connect(("10.0.2.2", port))
for i in range(count):
    s.send(b"%s %d" % (mode.encode(), i))
    if mode == "ping":
        assert s.recv(2048) == b"ping %d" % i
"#,
    )
    .unwrap();
    let ns = Unshared::start();
    let mut cmd = Command::new(SLIPWAY);
    cmd.args(["attach", "--configure"]);
    let slipway =
        Background::spawn_ready(cmd, &[ns.pid().to_string()], dir.path().join("attach.log"));
    let pid = slipway.child.0.id().to_string();
    let client_run = |mode: &str, port: u16, count: usize| {
        let out = ns.exec(&[
            "python3",
            client.to_str().unwrap(),
            mode,
            &port.to_string(),
            &count.to_string(),
        ]);
        assert!(
            out.status.success(),
            "{mode}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            slipway.log()
        );
    };
    // The first exchanges settle the read budget at one frame.
    client_run("ping", echo_port, WARM_UP);
    let reads = proc_io(&pid, "syscr:");
    client_run("ping", echo_port, PINGS);
    let reads = proc_io(&pid, "syscr:") - reads;
    // One read per datagram (two before: the second found the tap
    // empty); a few frames of the namespace's own (IPv6 neighbour
    // discovery) may come in between.
    assert!(
        reads < (PINGS + PINGS / 4) as u64,
        "{reads} tap reads for {PINGS} datagrams"
    );

    // SAFETY: kill has no memory preconditions; the pid is our child's.
    let stop = |sig| assert_eq!(unsafe { libc::kill(slipway.child.0.id() as i32, sig) }, 0);
    stop(libc::SIGSTOP);
    wait_for("the stack to stop", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').unwrap().1.trim_start().starts_with('T'))
    });
    // The tap's transmit drops (/proc/net/dev of the namespace: receive
    // bytes, packets, errs, drop, fifo, frame, compressed, multicast,
    // then transmit bytes, packets, errs, drop).
    let dropped = || {
        let out = ns.exec(&["cat", "/proc/net/dev"]);
        let dev = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = dev.lines().find_map(|l| l.trim().strip_prefix("tap0:"));
        let fields: Vec<u64> = line
            .unwrap_or_else(|| panic!("no tap0 in {dev}"))
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        fields[11]
    };
    let dropped_before = dropped();
    client_run("burst", sink_port, BURST);
    // The tap's queue (500 frames) held them all while nobody read.
    assert_eq!(
        dropped(),
        dropped_before,
        "the tap dropped part of the burst"
    );
    stop(libc::SIGCONT);
    wait_for("the whole burst at the host", || {
        sunk.load(std::sync::atomic::Ordering::Relaxed) >= BURST
    });
    assert_eq!(sunk.load(std::sync::atomic::Ordering::Relaxed), BURST);

    // Idle again: the loop sleeps (a level-triggered descriptor it did
    // not drain, or one watched for room, would keep waking it).
    std::thread::sleep(Duration::from_millis(100));
    let ticks = proc_cpu_ticks(&pid);
    std::thread::sleep(Duration::from_millis(1000));
    let spent = proc_cpu_ticks(&pid) - ticks;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        spent * 10 < hz,
        "the idle stack used {spent} ticks of CPU in 1 s (of {hz})"
    );
}
