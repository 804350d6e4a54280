//! Interop with a real DHCP client: busybox `udhcpc` on one end of a veth pair, a
//! test-only UDP server on port 67 driving `DhcpServer` on the other, inside a user +
//! network namespace this test creates (`unshare -Urn`), so nothing touches the host.
//!
//! Needs: `unshare` (util-linux), `ip` (iproute2), `busybox` with udhcpc (busybox-static).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use slipway_dhcp::{AddressPool, DhcpConfig, DhcpServer, ReplyDestination, ReplyKind, StaticHost};
use slipway_testkit::netns::{wait_for, Netns};
use socket2::{Domain, Protocol, Socket, Type};

/// Set in the re-executed test process that already runs inside the namespaces.
const IN_NETNS: &str = "SLIPWAY_DHCP_TEST_IN_NETNS";
const SERVER_IF: &str = "veth-s";
const CLIENT_IF: &str = "veth-c";

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed: {status}");
}

fn config() -> DhcpConfig {
    DhcpConfig {
        server_ip: Ipv4Addr::new(10, 0, 2, 2),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 0, 2, 2)),
        dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
        pool: AddressPool::Range {
            start: Ipv4Addr::new(10, 0, 2, 15),
            end: Ipv4Addr::new(10, 0, 2, 30),
        },
        static_hosts: vec![],
        lease_time: Some(Duration::from_secs(86400)),
        hostname: Some("vmhost".into()),
        domain_name: Some("example.test".into()),
        domain_search: vec!["eng.example.test".into(), "example.test".into()],
        mtu: Some(1400),
        broadcast: Some(Ipv4Addr::new(10, 0, 2, 255)),
        boot_file: Some("pxelinux.0".into()),
        tftp_server_name: Some("tftp.example.test".into()),
        next_server: None,
        authoritative: true,
    }
}

/// The UDP server on port 67: hands each datagram to the DhcpServer and sends the
/// reply where it says, until `stop` is set. Returns the reply kinds and destinations.
fn serve(
    server: Arc<Mutex<DhcpServer>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(ReplyKind, ReplyDestination)>> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_broadcast(true).expect("SO_BROADCAST");
    socket
        .bind_device(Some(SERVER_IF.as_bytes()))
        .expect("SO_BINDTODEVICE");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 67)).into())
        .expect("bind port 67");
    // Only so the loop notices `stop`; no timing is asserted.
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let socket: std::net::UdpSocket = socket.into();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::SeqCst) {
            let Ok((len, _from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let reply = server
                .lock()
                .unwrap()
                .handle(&buf[..len], SystemTime::now())
                .expect("udhcpc sent a message the server rejects");
            let Some(reply) = reply else { continue };
            seen.push((reply.kind, reply.destination));
            let to = match reply.destination {
                ReplyDestination::Broadcast => Ipv4Addr::BROADCAST,
                ReplyDestination::Unicast(ip) => ip,
                ReplyDestination::Assigned(ip) => {
                    // The client has no address yet and does not answer ARP: give the
                    // kernel the client's MAC, as a real server's raw send would.
                    let mac = reply
                        .client_mac
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":");
                    run(
                        "ip",
                        &[
                            "neigh",
                            "replace",
                            &ip.to_string(),
                            "lladdr",
                            &mac,
                            "nud",
                            "permanent",
                            "dev",
                            SERVER_IF,
                        ],
                    );
                    ip
                }
            };
            socket
                .send_to(&reply.payload, SocketAddrV4::new(to, 68))
                .expect("send reply");
        }
        seen
    })
}

/// Runs udhcpc once (it exits after a lease or after its retries) and returns the
/// variables its script saw for the `bound` event.
fn udhcpc(dir: &Path, extra: &[&str]) -> Vec<(String, String)> {
    let out = dir.join("bound.env");
    let _ = fs::remove_file(&out);
    let script = dir.join("script.sh");
    fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && env > \"$LEASE_OUT\"\nexit 0\n",
    )
    .expect("write udhcpc script");
    run("chmod", &["+x", script.to_str().unwrap()]);
    let status = Command::new("busybox")
        .args([
            "udhcpc", "-f", "-q", "-n", "-t", "4", "-T", "2", "-i", CLIENT_IF,
        ])
        .arg("-s")
        .arg(&script)
        .args(["-x", "hostname:guest1"])
        .args(extra)
        .env("LEASE_OUT", &out)
        .status()
        .expect("run busybox udhcpc (busybox-static)");
    assert!(status.success(), "udhcpc got no lease: {status}");
    let text = fs::read_to_string(&out).expect("udhcpc script ran for the bound event");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn var<'a>(vars: &'a [(String, String)], name: &str) -> &'a str {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("udhcpc gave no {name}; variables: {vars:?}"))
}

/// Creates the veth pair, server side 10.0.2.2/24; returns the client MAC.
fn setup_veth() -> [u8; 6] {
    // A fixed client MAC (/sys shows the host's view, not this namespace's).
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    run(
        "ip",
        &[
            "link",
            "add",
            SERVER_IF,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "address",
            "52:54:00:12:34:56",
        ],
    );
    run("ip", &["addr", "add", "10.0.2.2/24", "dev", SERVER_IF]);
    run("ip", &["link", "set", SERVER_IF, "up"]);
    run("ip", &["link", "set", CLIENT_IF, "up"]);

    mac
}

#[test]
fn busybox_udhcpc_gets_lease_with_all_options() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    run("ip", &["link", "set", "lo", "up"]);
    let mac = setup_veth();
    let server = Arc::new(Mutex::new(DhcpServer::new(config()).unwrap()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = serve(server.clone(), stop.clone());
    let dir = tempfile::tempdir().unwrap();

    // 1. Plain udhcpc: OFFER and ACK unicast to the new address.
    let first = udhcpc(dir.path(), &[]);
    assert_eq!(var(&first, "ip"), "10.0.2.15");
    assert_eq!(var(&first, "subnet"), "255.255.255.0");
    assert_eq!(var(&first, "router"), "10.0.2.2");
    assert_eq!(var(&first, "dns"), "10.0.2.3");
    assert_eq!(var(&first, "serverid"), "10.0.2.2");
    assert_eq!(var(&first, "lease"), "86400");
    assert_eq!(var(&first, "hostname"), "vmhost");
    assert_eq!(var(&first, "domain"), "example.test");
    // Option 119 decoded by busybox's own RFC 1035 name decompressor.
    assert_eq!(
        var(&first, "search").trim(),
        "eng.example.test example.test"
    );
    assert_eq!(var(&first, "mtu"), "1400");
    assert_eq!(var(&first, "broadcast"), "10.0.2.255");
    assert_eq!(var(&first, "boot_file"), "pxelinux.0");
    assert_eq!(var(&first, "tftp"), "tftp.example.test");
    assert_eq!(var(&first, "bootfile"), "pxelinux.0");
    assert_eq!(var(&first, "siaddr"), "10.0.2.2");

    // 2. Again with the broadcast flag: same address (one lease per client).
    let second = udhcpc(dir.path(), &["-B"]);
    assert_eq!(var(&second, "ip"), "10.0.2.15");

    // 3. A static host added live for this MAC: the client moves to it, with its name.
    server
        .lock()
        .unwrap()
        .set_static_hosts(vec![StaticHost {
            mac,
            ip: Ipv4Addr::new(10, 0, 2, 100),
            name: Some("fixed".into()),
            lease_time: None,
        }])
        .unwrap();
    let third = udhcpc(dir.path(), &[]);
    assert_eq!(var(&third, "ip"), "10.0.2.100");
    assert_eq!(var(&third, "hostname"), "fixed");

    stop.store(true, Ordering::SeqCst);
    let seen = thread.join().unwrap();
    let server = server.lock().unwrap();
    let leases: Vec<_> = server.leases().collect();
    assert_eq!(leases.len(), 1, "one lease per client: {leases:?}");
    assert_eq!(leases[0].mac, mac);
    assert_eq!(leases[0].ip, Ipv4Addr::new(10, 0, 2, 100));
    // A static host's lease carries its configured name, as with dnsmasq.
    assert_eq!(
        leases[0].hostname.as_ref().map(|h| h.as_str()),
        Some("fixed")
    );
    let unicast_offer = (
        ReplyKind::Offer,
        ReplyDestination::Assigned(Ipv4Addr::new(10, 0, 2, 15)),
    );
    assert!(seen.contains(&unicast_offer), "replies: {seen:?}");
    assert!(
        seen.contains(&(ReplyKind::Ack, ReplyDestination::Broadcast)),
        "replies: {seen:?}"
    );
}

/// The client in a network namespace of its own, so the address it is given is really
/// configured and RENEWING requests travel as ordinary unicast UDP from it.
#[test]
fn busybox_udhcpc_renews_and_releases() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    run("ip", &["link", "set", "lo", "up"]);
    setup_veth();
    let client_ns = Netns::new();
    let pid = client_ns.pid().to_string();
    run("ip", &["link", "set", CLIENT_IF, "netns", &pid]);
    run(
        "nsenter",
        &["-t", &pid, "-n", "ip", "link", "set", CLIENT_IF, "up"],
    );

    let server = Arc::new(Mutex::new(DhcpServer::new(config()).unwrap()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = serve(server.clone(), stop.clone());

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sh");
    fs::write(
        &script,
        "#!/bin/sh\n\
         case \"$1\" in\n\
         bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\"; env > \"$LEASE_OUT.tmp\"; mv \"$LEASE_OUT.tmp\" \"$LEASE_OUT.$1\";;\n\
         deconfig) ip addr flush dev \"$interface\"; : > \"$LEASE_OUT.deconfig\";;\n\
         esac\nexit 0\n",
    )
    .unwrap();
    run("chmod", &["+x", script.to_str().unwrap()]);
    let out = dir.path().join("event");
    let mut client = Command::new("nsenter")
        .args([
            "-t", &pid, "-n", "busybox", "udhcpc", "-f", "-n", "-t", "4", "-T", "2",
        ])
        .args(["-i", CLIENT_IF, "-x", "hostname:guest1", "-s"])
        .arg(&script)
        .env("LEASE_OUT", &out)
        .spawn()
        .expect("run busybox udhcpc in the client namespace");
    let event = |name: &str| dir.path().join(format!("event.{name}"));
    wait_for("udhcpc to get a lease", || event("bound").exists());
    let bound = fs::read_to_string(event("bound")).unwrap();
    assert!(bound.contains("ip=10.0.2.15\n"), "{bound}");

    // SIGUSR1: renew now (RENEWING: unicast REQUEST with ciaddr, ACK unicast back).
    let udhcpc = client.id().to_string();
    run("kill", &["-USR1", &udhcpc]);
    wait_for("udhcpc to renew", || event("renew").exists());
    let renewed = fs::read_to_string(event("renew")).unwrap();
    assert!(renewed.contains("ip=10.0.2.15\n"), "{renewed}");
    assert!(renewed.contains("lease=86400\n"), "{renewed}");
    let active = |s: &DhcpServer| {
        s.leases()
            .filter(|l| l.is_active(SystemTime::now()))
            .count()
    };
    assert_eq!(active(&server.lock().unwrap()), 1);

    // SIGUSR2: release the lease; the server ends it.
    run("kill", &["-USR2", &udhcpc]);
    wait_for("the server to see the release", || {
        active(&server.lock().unwrap()) == 0
    });

    run("kill", &["-TERM", &udhcpc]);
    let _ = client.wait();
    drop(client_ns);
    stop.store(true, Ordering::SeqCst);
    let seen = thread.join().unwrap();
    // The selecting request's ACK goes to the address given (the client
    // does not answer ARP yet), the renewal's to the client's own address.
    let a = Ipv4Addr::new(10, 0, 2, 15);
    for want in [ReplyDestination::Assigned(a), ReplyDestination::Unicast(a)] {
        assert!(
            seen.contains(&(ReplyKind::Ack, want)),
            "ACK to {want:?} for the selecting and the renewing request: {seen:?}"
        );
    }
    let leases: Vec<_> = server.lock().unwrap().leases().cloned().collect();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].ip, Ipv4Addr::new(10, 0, 2, 15));
}
