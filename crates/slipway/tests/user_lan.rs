//! Several VMs on one `slipway user`: two real guests attach to the same
//! listening socket and form one Ethernet segment through the stack's
//! learning switch. Each gets its own lease, one fetches a page from a
//! busybox httpd on the other by its leased address, both reach the host,
//! and the one that leaves does not disturb the other.

use std::process::Command;
use std::time::Duration;

use slipway_testkit::{Guest, HttpServer};

mod common;
use common::{
    arp_request, assert_serves, check, run_guest, s, unix_stream_netdev, wait_line, Slipway,
};

/// How the two guests attach.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Two connections to one listening unix stream socket.
    Stream,
    /// Two QEMU datagram sockets sending to one bound socket.
    Dgram,
}

#[test]
fn two_guests_share_one_lan_over_a_stream_socket() {
    two_guests_share_one_lan(Link::Stream);
}

#[test]
fn two_guests_share_one_lan_over_a_dgram_socket() {
    two_guests_share_one_lan(Link::Dgram);
}

fn two_guests_share_one_lan(link: Link) {
    let dir = slipway_testkit::temp_dir().unwrap();
    std::fs::write(dir.path().join("host.txt"), "host-page\n").unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let sock = dir.path().join("lan.sock");
    let api = dir.path().join("api.sock");
    let fwd = slipway_testkit::free_port().unwrap();
    let netdev = |vm: &str| match link {
        Link::Stream => unix_stream_netdev(&sock),
        Link::Dgram => format!(
            "dgram,id=n0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            dir.path().join(format!("{vm}.sock")).display(),
            sock.display()
        ),
    };
    let mut args = vec![
        s(if link == Link::Stream {
            "--socket"
        } else {
            "--dgram"
        }),
        sock.display().to_string(),
        s("--api"),
        api.display().to_string(),
        s("--dns-upstream"),
        s("127.0.0.1:9"),
        format!("hostfwd=tcp:127.0.0.1:{fwd}-10.0.2.15:80"),
    ];
    if link == Link::Dgram {
        // The second VM's socket (root's, in root's private directory) is
        // reached after the sandbox is on: as `nobody` it could not be, so
        // the sandbox keeps uid 0 (still without capabilities).
        args.push(s("--runas"));
        args.push(s("root"));
    }
    let mut slipway = Slipway::start(&args);
    slipway.wait_for_path(&sock);

    // Guest A serves a page and stays up.
    let script_a = format!(
        "dhcp eth0 || exit 1\n\
         mkdir -p /www && echo page-from-guest-a > /www/index.html\n\
         httpd -p 80 -h /www\n\
         wget -q -O - http://10.0.2.2:{port}/host.txt | grep -q host-page && result host ok\n\
         ready serving\n\
         sleep 600\n",
        port = http.port()
    );
    let mut guest_a = Guest::builder()
        .netdev(&netdev("a"))
        .mac("52:54:00:00:00:0a")
        .script(&script_a)
        .timeout(Duration::from_secs(700))
        .boot()
        .unwrap();
    wait_line(&mut guest_a, "SLIPWAY-READY serving", &slipway);
    let out_a = guest_a.output_so_far();
    check(&out_a, &slipway, "ip", "10.0.2.15");
    check(&out_a, &slipway, "host", "ok");
    let ip_a = "10.0.2.15";

    // Guest B joins the same socket, gets its own lease, reaches A by its
    // leased address (VM to VM through the switch) and the host.
    let script_b = format!(
        "dhcp eth0 || exit 1\n\
         result page \"$(wget -q -O - http://{ip_a}/index.html)\"\n\
         ping -c 1 -W 10 {ip_a} >/dev/null && result ping_a ok\n\
         wget -q -O - http://10.0.2.2:{port}/host.txt | grep -q host-page && result host ok\n",
        port = http.port()
    );
    let out_b = run_guest(
        Guest::builder()
            .netdev(&netdev("b"))
            .mac("52:54:00:00:00:0b")
            .script(&script_b),
        &slipway,
    );
    check(&out_b, &slipway, "ip", "10.0.2.16");
    check(&out_b, &slipway, "router", "10.0.2.2");
    check(&out_b, &slipway, "page", "page-from-guest-a");
    check(&out_b, &slipway, "ping_a", "ok");
    check(&out_b, &slipway, "host", "ok");
    if link == Link::Stream {
        // A stream says at once when a VM goes (a datagram VM's departure
        // shows only when a frame to it bounces).
        assert!(
            slipway.log().contains("VM went away; the others stay"),
            "{}",
            slipway.log()
        );
    }

    // B is gone; A is undisturbed: the host still reaches it through a
    // forward, and both leases are listed.
    assert_serves(("127.0.0.1", fwd), "page-from-guest-a", &slipway);
    let leases = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["ctl", "--api"])
        .arg(&api)
        .arg("leases")
        .output()
        .unwrap();
    let leases = String::from_utf8_lossy(&leases.stdout);
    assert!(
        leases.contains("52:54:00:00:00:0a 10.0.2.15")
            && leases.contains("52:54:00:00:00:0b 10.0.2.16"),
        "{leases}"
    );

    drop(guest_a);
    let (status, log) = match link {
        // The last VM leaving ends the stack as before.
        Link::Stream => slipway.wait_exit(),
        Link::Dgram => slipway.terminate(),
    };
    assert!(status.success(), "{status}\n{log}");
}

/// Whether the VM socket `vm` gets the gateway's ARP reply to `request`
/// (sent to `stack` once a second) within `wait`.
fn gets_arp_reply(
    vm: &std::os::unix::net::UnixDatagram,
    stack: &std::path::Path,
    request: &[u8],
    wait: Duration,
) -> bool {
    vm.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0_u8; 2048];
    while std::time::Instant::now() < deadline {
        match vm.send_to(request, stack) {
            Ok(_) => {}
            // The stack's socket is connected to the only VM until it sees
            // this one's socket appear (README: QEMU binds long before its
            // guest sends; this test sends at once).
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => panic!("sending to the stack: {e}"),
        }
        while let Ok(n) = vm.recv(&mut buf) {
            // To this VM's MAC, ARP, a reply from 10.0.2.2.
            if n >= 42
                && buf[..6] == request[6..12]
                && buf[12..14] == [0x08, 0x06]
                && buf[20..22] == [0, 2]
                && buf[28..32] == [10, 0, 2, 2]
            {
                return true;
            }
        }
    }
    false
}

/// `--dgram DIR/s.sock` serves VMs whose sockets are in DIR, the first
/// one and one joining after the sandbox is on (each gets the gateway's
/// ARP reply); a VM whose socket is in another directory joins after the
/// sandbox in vain: the stack's private mount namespace holds only DIR, so
/// it cannot name that socket (the documented limit, with its warning),
/// though plain permissions would let it. Started as root (it becomes
/// `nobody`) and, when the test is root, as an unprivileged user (a user
/// namespace is made first).
#[test]
fn dgram_vms_are_reached_only_in_the_socket_directory() {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    dgram_vms_reached_only_in_the_socket_directory(false);
    if root {
        dgram_vms_reached_only_in_the_socket_directory(true);
    }
}

fn dgram_vms_reached_only_in_the_socket_directory(unprivileged: bool) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixDatagram;
    let top = slipway_testkit::temp_dir().unwrap();
    let dir = top.path().join("lan");
    let other = top.path().join("other");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&other).unwrap();
    // Started as root the stack becomes `nobody`: let plain permissions
    // allow everything, so only the sandbox can refuse.
    for p in [top.path(), &dir, &other] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let sock = dir.join("s.sock");
    let args = [s("--dgram"), sock.display().to_string()];
    let mut slipway = if unprivileged {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_slipway"));
        Slipway::spawn(cmd, &args)
    } else {
        Slipway::start(&args)
    };
    slipway.wait_for_path(&sock);
    let bind = |path: std::path::PathBuf| {
        let vm = UnixDatagram::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        vm
    };
    let a = bind(dir.join("vm-a.sock"));
    let req_a = arp_request([0x52, 0x54, 0, 0, 0, 0x0a], [10, 0, 2, 15]);
    assert!(
        gets_arp_reply(&a, &sock, &req_a, Duration::from_secs(30)),
        "first VM: no ARP reply\n{}",
        slipway.log()
    );
    assert!(
        slipway.log().contains("sandbox applied"),
        "{}",
        slipway.log()
    );
    assert!(
        slipway.log().contains("private_root=true"),
        "{}",
        slipway.log()
    );
    let b = bind(dir.join("vm-b.sock"));
    let req_b = arp_request([0x52, 0x54, 0, 0, 0, 0x0b], [10, 0, 2, 16]);
    assert!(
        gets_arp_reply(&b, &sock, &req_b, Duration::from_secs(30)),
        "a later VM in the directory: no ARP reply\n{}",
        slipway.log()
    );
    let c = bind(other.join("vm-c.sock"));
    let req_c = arp_request([0x52, 0x54, 0, 0, 0, 0x0c], [10, 0, 2, 17]);
    assert!(
        !gets_arp_reply(&c, &sock, &req_c, Duration::from_secs(3)),
        "a VM outside the socket directory was reached\n{}",
        slipway.log()
    );
    let log = slipway.terminate_ok();
    assert!(
        log.contains("connecting to the VM's datagram socket") && log.contains("vm-c.sock"),
        "{log}"
    );
}
