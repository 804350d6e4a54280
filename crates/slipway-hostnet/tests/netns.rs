//! End-to-end: networks started and stopped by the manager with the Linux
//! backend, inside a user + network namespace this test creates
//! (`unshare -Urn`); "guests" and an "upstream" (the outside world) are
//! further network namespaces inside it, wired by veth pairs. Nothing
//! touches the machine's own namespace; all traffic stays between them.
//!
//! Needs: util-linux (unshare, nsenter), iproute2, nftables, busybox-static.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use slipway_hostnet::LinuxBackend;
use slipway_netmgr::proto::Lookup;
use slipway_netmgr::{Manager, Paths};
use slipway_testkit::netns::{sh, var, wait_for, Netns, NsGuest as Guest};

const IN_NETNS: &str = "SLIPWAY_HOSTNET_TEST_IN_NETNS";
const UPSTREAM_IP: &str = "198.51.100.2";
const HOST_UPLINK_IP: &str = "198.51.100.1";

/// The upstream: a namespace reached from this one over `up0`, with an HTTP
/// server on 8080 that answers each request with the client's address, and
/// a DNS server on 53 answering every A query with 198.51.100.80.
struct Upstream {
    ns: Netns,
    /// The address and port each HTTP client came from.
    peers: mpsc::Receiver<SocketAddr>,
}

impl Upstream {
    fn new() -> Upstream {
        let ns = Netns::new();
        sh(&format!(
            "ip link add up0 type veth peer name up1 && ip link set up1 netns {} && \
             ip addr add {HOST_UPLINK_IP}/24 dev up0 && ip link set up0 up",
            ns.pid()
        ));
        ns.run(&format!(
            "ip addr add {UPSTREAM_IP}/24 dev up1 && ip link set up1 up"
        ));
        let (tx, peers) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let dns_ready = ready_tx.clone();
        let ready_tx2 = ready_tx.clone();
        ns.spawn(move || {
            let l = TcpListener::bind((UPSTREAM_IP, 8080)).unwrap();
            ready_tx.send(()).unwrap();
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let peer = s.peer_addr().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let body = format!("hello {}\n", peer.ip());
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if tx.send(peer).is_err() {
                    return;
                }
            }
        });
        ns.spawn(move || {
            let s = UdpSocket::bind((UPSTREAM_IP, 53)).unwrap();
            dns_ready.send(()).unwrap();
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&dns_answer(&buf[..len]), from);
            }
        });
        let tcp_ready = ready_tx2;
        ns.spawn(move || {
            let l = TcpListener::bind((UPSTREAM_IP, 53)).unwrap();
            tcp_ready.send(()).unwrap();
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut q).is_err() {
                    continue;
                }
                let r = dns_answer(&q);
                let _ = s.write_all(&(r.len() as u16).to_be_bytes());
                let _ = s.write_all(&r);
            }
        });
        for _ in 0..3 {
            ready.recv().unwrap();
        }
        Upstream { ns, peers }
    }
}

/// The ruleset without counter values (guests' traffic changes them).
fn ruleset() -> String {
    sh("nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'")
}

/// Link names and the ruleset.
/// The upstream's answer to any query: one A record, 198.51.100.80.
fn dns_answer(query: &[u8]) -> Vec<u8> {
    // Header and question only (drop an EDNS record): skip the labels.
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    let mut r = query[..end + 5].to_vec();
    r[10..12].copy_from_slice(&[0, 0]); // ARCOUNT
    r[2] |= 0x80; // QR
    r[3] = 0x80; // RA, NOERROR
    r[6..8].copy_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&[198, 51, 100, 80]);
    r
}

fn snapshot() -> (String, String) {
    let links = sh("ip -o link show | cut -d: -f2 | sort");
    (links, ruleset())
}

struct Env {
    root: PathBuf,
    manager: Manager,
    // Last: removed after the services are stopped.
    _dir: tempfile::TempDir,
}

/// A failed test leaves networks up: their service processes (in sessions
/// of their own) would keep the test's namespace alive. Kill them.
impl Drop for Env {
    fn drop(&mut self) {
        let backend = self.backend();
        let dir = self.root.join("run/slipway/networks/hostnet");
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(net) = name.strip_suffix(".json").filter(|n| !n.contains('.')) else {
                continue;
            };
            if let Ok(Some(rec)) = backend.record(net) {
                if let Some(p) = rec.service {
                    // SAFETY: plain kill(2) of a service this test started.
                    unsafe { libc::kill(p.pid, libc::SIGKILL) };
                }
            }
        }
    }
}

impl Env {
    /// A second backend over the same state (as a restarted daemon has).
    fn backend(&self) -> LinuxBackend {
        backend(&self.root)
    }
}

/// The pid of network `default`'s service, from `backend`'s record.
fn service_pid(backend: &LinuxBackend) -> i32 {
    backend
        .record("default")
        .unwrap()
        .unwrap()
        .service
        .unwrap()
        .pid
}

fn backend(root: &Path) -> LinuxBackend {
    let paths = Paths::detect(Some(root));
    LinuxBackend::new(
        &paths.state_dir,
        vec![env!("CARGO_BIN_EXE_slipway-net-service").into()],
    )
    .with_resolv_conf(root.join("resolv.conf"))
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let paths = Paths::detect(Some(&root));
    // Not a first run: no shipped `default` network, the tests define
    // their own (a redefinition would need its UUID).
    fs::create_dir_all(&paths.config_dir).unwrap();
    fs::write(
        root.join("resolv.conf"),
        format!("nameserver {UPSTREAM_IP}\n"),
    )
    .unwrap();
    Env {
        manager: Manager::new(paths, Box::new(backend(&root))),
        root,
        _dir: dir,
    }
}

const DEFAULT_NET: &str = "<network><name>default</name><forward mode='nat'/>\
  <bridge name='virbr0' stp='on' delay='0'/><mac address='52:54:00:0a:0b:0c'/>\
  <domain name='test.lan'/><mtu size='1400'/>\
  <dns><host ip='192.168.122.50'><hostname>printer</hostname></host></dns>\
  <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>\
  <range start='192.168.122.2' end='192.168.122.254'/>\
  <host mac='52:54:00:00:00:22' name='fixed' ip='192.168.122.10'/>\
  </dhcp></ip></network>";

#[test]
fn nat_network_serves_guests_and_cleans_up() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    sh("ip link set lo up");
    let upstream = Upstream::new();
    let before = snapshot();
    let e = env();
    e.manager.define(DEFAULT_NET, false).unwrap();
    let t0 = Instant::now();
    e.manager.start(&Lookup::any("default")).unwrap();
    eprintln!("TIMING net-start default: {:?}", t0.elapsed());

    // The bridge as defined.
    let link = sh("ip -d link show virbr0");
    assert!(link.contains("link/ether 52:54:00:0a:0b:0c"), "{link}");
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(link.contains("stp_state 1"), "{link}");
    // Kernel STP raises a forward delay below 2 s to 2 s when it starts,
    // as it does for libvirt's virbr0.
    assert!(link.contains("bridge forward_delay 200 "), "{link}");
    let addr = sh("ip addr show virbr0");
    assert!(
        addr.contains("inet 192.168.122.1/24 brd 192.168.122.255"),
        "{addr}"
    );
    assert!(addr.contains("state UP") || addr.contains(",UP"), "{addr}");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv6/conf/virbr0/disable_ipv6")
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let rules = ruleset();
    for want in [
        "table ip slipway_network",
        "table ip6 slipway_network",
        "iifname \"virbr0\" counter reject",
        "ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 meta l4proto tcp counter masquerade to :1024-65535",
        "ip saddr 192.168.122.0/24 ip daddr 224.0.0.0/24 counter return",
        "oifname \"virbr0\" ip daddr 192.168.122.0/24 ct state established,related counter accept",
    ] {
        assert!(rules.contains(want), "missing {want:?} in\n{rules}");
    }
    // The service listens on the bridge only: DNS on the bridge address,
    // DHCP on port 67 bound to virbr0, nothing on other addresses' port 53.
    let socks = sh("ss -lunp");
    assert!(socks.contains("192.168.122.1%virbr0:53"), "{socks}");
    assert!(socks.contains("0.0.0.0%virbr0:67"), "{socks}");
    let tcp = sh("ss -ltnp");
    assert!(tcp.contains("192.168.122.1%virbr0:53"), "{tcp}");
    assert!(
        !tcp.contains("0.0.0.0:53 ") && !tcp.contains("*:53 "),
        "{tcp}"
    );
    assert!(
        !socks.contains("0.0.0.0:53 ") && !socks.contains("*:53 "),
        "{socks}"
    );

    // A guest gets a lease with every option.
    let dir = tempfile::tempdir().unwrap();
    let g1 = Guest::new("virbr0", "vg1", "52:54:00:00:00:11");
    let t1 = Instant::now();
    let l1 = g1.udhcpc(dir.path(), "guest1");
    eprintln!("TIMING first lease (udhcpc run): {:?}", t1.elapsed());
    let ip1: Ipv4Addr = var(&l1, "ip").parse().unwrap();
    assert!(
        (Ipv4Addr::new(192, 168, 122, 2)..=Ipv4Addr::new(192, 168, 122, 254)).contains(&ip1),
        "{ip1}"
    );
    assert_eq!(var(&l1, "router"), "192.168.122.1");
    assert_eq!(var(&l1, "dns").trim(), "192.168.122.1");
    assert_eq!(var(&l1, "domain"), "test.lan");
    assert_eq!(var(&l1, "mtu"), "1400");
    assert_eq!(var(&l1, "subnet"), "255.255.255.0");
    assert_eq!(var(&l1, "lease"), "3600");

    // A static host gets its fixed address and name.
    let g2 = Guest::new("virbr0", "vg2", "52:54:00:00:00:22");
    let l2 = g2.udhcpc(dir.path(), "guest2");
    assert_eq!(var(&l2, "ip"), "192.168.122.10");
    assert_eq!(var(&l2, "hostname"), "fixed");

    // The first guest's lease hostname, a <dns><host>, and a forwarded name
    // (the upstream's DNS server) resolve through the network's DNS.
    let ns = g2.ns.run("busybox nslookup guest1.test.lan 192.168.122.1");
    assert!(ns.contains(&ip1.to_string()), "{ns}");
    let ns = g2.ns.run("busybox nslookup guest1 192.168.122.1");
    assert!(ns.contains(&ip1.to_string()), "{ns}");
    let ns = g2.ns.run("busybox nslookup printer.test.lan 192.168.122.1");
    assert!(ns.contains("192.168.122.50"), "{ns}");
    let ns = g2.ns.run("busybox nslookup www.example.test 192.168.122.1");
    assert!(ns.contains("198.51.100.80"), "{ns}");
    // The same over TCP.
    let tcp = g2
        .ns
        .run("dig +tcp +short +tries=1 @192.168.122.1 printer.test.lan A");
    assert_eq!(tcp.trim(), "192.168.122.50");
    let tcp = g2
        .ns
        .run("dig +tcp +short +tries=1 @192.168.122.1 www.example.test A");
    assert_eq!(tcp.trim(), "198.51.100.80");

    // NAT: the upstream sees the host's uplink address, not the guest's.
    let page = g1
        .ns
        .run(&format!("busybox wget -q -O - http://{UPSTREAM_IP}:8080/"));
    assert_eq!(page.trim(), format!("hello {HOST_UPLINK_IP}"));
    assert_eq!(
        upstream.peers.recv().unwrap().ip(),
        HOST_UPLINK_IP.parse::<IpAddr>().unwrap()
    );

    // Leases are persisted and listed like virsh does.
    let state = e.root.join("run/slipway/networks");
    let table = slipway_hostnet::leases_table(&state, "default", None).unwrap();
    assert!(
        table.contains(" 52:54:00:00:00:11   ipv4       "),
        "{table}"
    );
    assert!(table.contains(&format!("{ip1}/24")), "{table}");
    assert!(table.contains("guest1"), "{table}");
    assert!(table.contains("192.168.122.10/24"), "{table}");
    let one = slipway_hostnet::leases_table(&state, "default", Some("52:54:00:00:00:22")).unwrap();
    assert_eq!(one.lines().count(), 3, "{one}");

    // The service killed and brought back: leases come back from the
    // leases file (the lease hostname still resolves, the guest renews the
    // same address).
    let old = service_pid(&e.backend());
    sh(&format!("kill -9 {old}"));
    wait_for("the service to die", || {
        fs::read_to_string(format!("/proc/{old}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    // Its configuration as written before the leases had a directory of
    // their own: the revived service finds them moved there.
    let hostnet = state.join("hostnet");
    let config = hostnet.join("default.service.json");
    let mut file = slipway_hostnet::service::read_service_file(&config).unwrap();
    let (new, old_leases) = (
        hostnet.join("default.leases/leases.json"),
        hostnet.join("default.leases.json"),
    );
    fs::rename(&new, &old_leases).unwrap();
    file.leases_file = old_leases.clone();
    fs::write(&config, serde_json::to_vec(&file).unwrap()).unwrap();
    assert!(e.backend().revive("default").unwrap());
    assert!(!old_leases.exists() && new.exists());
    let file = slipway_hostnet::service::read_service_file(&config).unwrap();
    assert_eq!(file.leases_file, new);
    let ns = g2.ns.run("busybox nslookup guest1.test.lan 192.168.122.1");
    assert!(ns.contains(&ip1.to_string()), "{ns}");
    let again = g1.udhcpc(dir.path(), "guest1");
    assert_eq!(var(&again, "ip"), ip1.to_string());

    // net-update --live: a static host for the first guest and a DNS host,
    // applied by the running service without a restart.
    let pid_before = service_pid(&e.backend());
    let updated = DEFAULT_NET
        .replace(
            "</dhcp>",
            "<host mac='52:54:00:00:00:11' name='moved' ip='192.168.122.20'/></dhcp>",
        )
        .replace(
            "</dns>",
            "<host ip='192.168.122.51'><hostname>scanner</hostname></host></dns>",
        );
    let mut net = slipway_netxml::Network::from_xml(&updated).unwrap();
    net.validate().unwrap();
    net.fill_defaults(&Default::default());
    let log = state.join("hostnet/default.service.log");
    let reloads = || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("configuration reloaded")
            .count()
    };
    e.backend()
        .update_live(&slipway_netmgr::plan::plan(&net).unwrap())
        .unwrap();
    wait_for("the service to reload", || reloads() == 1);
    let l1 = g1.udhcpc(dir.path(), "guest1");
    assert_eq!(var(&l1, "ip"), "192.168.122.20");
    assert_eq!(var(&l1, "hostname"), "moved");
    let ns = g2.ns.run("busybox nslookup scanner.test.lan 192.168.122.1");
    assert!(ns.contains("192.168.122.51"), "{ns}");
    let pid_after = service_pid(&e.backend());
    assert_eq!(pid_before, pid_after, "the service was restarted");

    // Destroy: links and ruleset exactly as before (after the test's own
    // guest veths go).
    let t2 = Instant::now();
    e.manager.destroy(&Lookup::any("default")).unwrap();
    eprintln!("TIMING net-destroy default: {:?}", t2.elapsed());
    sh("ip link del vg1 && ip link del vg2");
    assert_eq!(snapshot(), before);
    assert!(!state.join("hostnet/default.json").exists());
    drop(upstream);
}

#[test]
fn route_and_isolated_modes() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    sh("ip link set lo up");
    let upstream = Upstream::new();
    upstream
        .ns
        .run(&format!("ip route add 10.20.0.0/24 via {HOST_UPLINK_IP}"));
    let before = snapshot();
    let e = env();
    e.manager
        .define(
            "<network><name>routed</name><forward mode='route' dev='up0'/><bridge name='br-r' stp='off' delay='3'/>\
             <ip address='10.20.0.1' prefix='24'><dhcp><range start='10.20.0.100' end='10.20.0.110'/></dhcp></ip>\
             <ip family='ipv6' address='fd00:20::1' prefix='64'/></network>",
            false,
        )
        .unwrap();
    e.manager
        .define(
            "<network><name>iso</name><bridge name='br-i'/>\
             <ip address='10.30.0.1' prefix='24'><dhcp><range start='10.30.0.100' end='10.30.0.110'/></dhcp></ip></network>",
            false,
        )
        .unwrap();
    let t = Instant::now();
    e.manager.start(&Lookup::any("routed")).unwrap();
    eprintln!("TIMING net-start routed (IPv4 + IPv6): {:?}", t.elapsed());
    e.manager.start(&Lookup::any("iso")).unwrap();
    let link = sh("ip -d link show br-r");
    assert!(link.contains("bridge forward_delay 300 "), "{link}");
    assert!(link.contains("stp_state 0"), "{link}");
    // IPv6: the address, no router advertisements taken, forwarding on,
    // the ip6 table's accept rules, DNS on the IPv6 address too.
    let addr = sh("ip -6 addr show br-r");
    assert!(addr.contains("inet6 fd00:20::1/64"), "{addr}");
    for (key, want) in [
        ("net/ipv6/conf/br-r/accept_ra", "0"),
        ("net/ipv6/conf/br-r/disable_ipv6", "0"),
        ("net/ipv6/conf/all/forwarding", "1"),
    ] {
        let got = fs::read_to_string(format!("/proc/sys/{key}")).unwrap();
        assert_eq!(got.trim(), want, "{key}");
    }
    let rules = ruleset();
    assert!(
        rules.contains("ip6 saddr fd00:20::/64 iifname \"br-r\" oifname \"up0\" counter accept"),
        "{rules}"
    );
    let socks = sh("ss -lunp");
    assert!(socks.contains("[fd00:20::1]%br-r:53"), "{socks}");
    // dev= narrows the accept rules to the uplink.
    assert!(
        rules.contains("ip saddr 10.20.0.0/24 iifname \"br-r\" oifname \"up0\" counter accept"),
        "{rules}"
    );
    let dir = tempfile::tempdir().unwrap();

    // Route mode: the upstream sees the guest's own address.
    let g = Guest::new("br-r", "vr1", "52:54:00:00:01:01");
    let t = Instant::now();
    let l = g.udhcpc(dir.path(), "routed1");
    eprintln!(
        "TIMING first lease, STP off (udhcpc run): {:?}",
        t.elapsed()
    );
    let ip = var(&l, "ip").to_string();
    assert_eq!(var(&l, "router"), "10.20.0.1");
    let page =
        g.ns.run(&format!("busybox wget -q -O - http://{UPSTREAM_IP}:8080/"));
    assert_eq!(page.trim(), format!("hello {ip}"));
    assert_eq!(upstream.peers.recv().unwrap().ip().to_string(), ip);

    // Isolated: no router offered; with one set by hand, still nothing
    // leaves the bridge.
    let gi = Guest::new("br-i", "vi1", "52:54:00:00:02:01");
    let li = gi.udhcpc(dir.path(), "iso1");
    assert!(li.iter().all(|(k, _)| k != "router"), "{li:?}");
    gi.ns.run("ip route add default via 10.30.0.1");
    let out = Command::new("sh")
        .args([
            "-c",
            &gi.ns
                .cmd(&format!("ncat -w 3 {UPSTREAM_IP} 8080 </dev/null 2>&1")),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "connected out of an isolated network: {text}"
    );
    // Refused by the network's own reject rule, not by chance.
    let chain = sh("nft list chain ip slipway_network guest_output");
    let rejected = chain
        .lines()
        .find(|l| l.contains("iifname \"br-i\" counter packets"))
        .unwrap_or_else(|| panic!("{chain}"));
    assert!(!rejected.contains("packets 0 "), "{chain}");
    assert!(upstream.peers.try_recv().is_err());
    // The isolated network's DNS refuses what it cannot answer locally.
    let text = gi
        .ns
        .run("dig +tries=1 +time=3 @10.30.0.1 www.example.test A");
    assert!(text.contains("status: REFUSED"), "{text}");

    // Stopping one network leaves the other's rules alone.
    e.manager.destroy(&Lookup::any("routed")).unwrap();
    let rules = sh("nft list ruleset");
    assert!(!rules.contains("br-r"), "{rules}");
    assert!(rules.contains("iifname \"br-i\""), "{rules}");
    e.manager.destroy(&Lookup::any("iso")).unwrap();
    sh("ip link del vr1 && ip link del vi1");
    assert_eq!(snapshot(), before);
}

#[test]
fn collisions_and_failures_leave_nothing_behind() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    sh("ip link set lo up");
    let e = env();
    e.manager.define(DEFAULT_NET, false).unwrap();
    e.manager
        .set_autostart(&Lookup::any("default"), true)
        .unwrap();
    // A subnet routed elsewhere is refused.
    sh("ip link add dummy7 type veth peer name dummy8 && ip addr add 192.168.122.7/24 dev dummy7 && ip link set dummy7 up && ip link set dummy8 up");
    let before = snapshot();
    let err = e.manager.start(&Lookup::any("default")).unwrap_err();
    assert!(
        err.to_string()
            .contains("Network is already in use by interface dummy7"),
        "{err}"
    );
    assert_eq!(snapshot(), before);
    sh("ip link del dummy7");

    // A service configuration the DHCP server would refuse (here a range
    // holding the bridge's own address, which the XML checks also catch):
    // refused before anything is made.
    let before = snapshot();
    let mut net = slipway_netxml::Network::from_xml(
        "<network><name>bad</name><bridge name='br-bad'/><ip address='10.70.0.1' prefix='24'>\
         <dhcp><range start='10.70.0.2' end='10.70.0.9'/></dhcp></ip></network>",
    )
    .unwrap();
    net.fill_defaults(&Default::default());
    let mut plan = slipway_netmgr::plan::plan(&net).unwrap();
    for a in &mut plan.actions {
        if let slipway_netmgr::Action::DhcpDns(svc) = a {
            svc.ranges[0].start = "10.70.0.1".parse().unwrap();
        }
    }
    let err = slipway_netmgr::Backend::start(&e.backend(), &plan).unwrap_err();
    assert!(
        err.to_string()
            .contains("DHCP range includes the server's own address 10.70.0.1"),
        "{err}"
    );
    assert_eq!(snapshot(), before);

    // A service that cannot start: everything done before it is rolled back.
    let before = snapshot();
    let paths = Paths::detect(Some(&e.root));
    let broken = Manager::new(
        paths.clone(),
        Box::new(LinuxBackend::new(&paths.state_dir, vec!["false".into()])),
    );
    let err = broken.start(&Lookup::any("default")).unwrap_err();
    assert!(err.to_string().contains("did not start"), "{err}");
    assert_eq!(snapshot(), before);
    assert!(!paths.state_dir.join("hostnet/default.json").exists());

    // Killed service and a manager restarted with the network up: stop still
    // removes exactly what start added; a start after a lost status does not
    // duplicate anything.
    e.manager.start(&Lookup::any("default")).unwrap();
    let up = snapshot();
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(paths.state_dir.join("hostnet/default.json")).unwrap())
            .unwrap();
    let pid = rec["service"]["pid"].as_i64().unwrap();
    sh(&format!("kill -9 {pid}"));
    // Our child: it stays a zombie until reaped.
    wait_for("the service to die", || {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    let restarted = Manager::new(
        paths.clone(),
        Box::new(LinuxBackend::new(
            &paths.state_dir,
            vec![env!("CARGO_BIN_EXE_slipway-net-service").into()],
        )),
    );
    // Recovery brings the killed service back, with the same configuration.
    restarted.recover().unwrap();
    let backend = LinuxBackend::new(
        &paths.state_dir,
        vec![env!("CARGO_BIN_EXE_slipway-net-service").into()],
    );
    assert!(
        !backend.revive("default").unwrap(),
        "revived a running service"
    );
    let new_pid = service_pid(&backend);
    assert_ne!(i64::from(new_pid), pid);
    let socks = sh("ss -lunp");
    assert!(socks.contains("192.168.122.1%virbr0:53"), "{socks}");
    assert_eq!(snapshot(), up);
    // The status lost (a crash between the backend's start and the
    // manager's commit): the autostart network comes up again at recovery,
    // the leftovers of the first start removed first, nothing duplicated.
    fs::remove_file(paths.state_dir.join("default.json")).unwrap();
    restarted.recover().unwrap();
    assert!(paths.state_dir.join("default.json").exists());
    assert_eq!(snapshot(), up, "links or rules duplicated");
    restarted.destroy(&Lookup::any("default")).unwrap();
    assert_eq!(snapshot(), before);

    // The bridge deleted by hand: the service notices and exits; destroy
    // still removes the rules.
    restarted.start(&Lookup::any("default")).unwrap();
    let pid = service_pid(&backend);
    sh("ip link del virbr0");
    wait_for("the service to exit", || {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    restarted.destroy(&Lookup::any("default")).unwrap();
    assert_eq!(snapshot(), before);
}

/// A real Linux guest under QEMU on a tap attached to the bridge: it gets a
/// lease, resolves names through the network's DNS and reaches the upstream
/// through NAT.
#[test]
fn qemu_guest_on_a_tap() {
    if std::env::var_os(IN_NETNS).is_none() {
        // Built (apt-get download, cpio) before the namespace cuts the network.
        slipway_testkit::GuestImage::get().expect("test guest image");
    }
    slipway_testkit::enter_new_netns!(IN_NETNS);
    sh("ip link set lo up");
    let upstream = Upstream::new();
    let before = snapshot();
    let e = env();
    e.manager.define(DEFAULT_NET, false).unwrap();
    e.manager.start(&Lookup::any("default")).unwrap();
    // The tap takes the bridge's MTU before it is attached (libvirt's order).
    sh(
        "ip tuntap add vnet0 mode tap && ip link set vnet0 mtu 1400 && \
        ip link set vnet0 master virbr0 up",
    );
    let out = slipway_testkit::Guest::builder()
        .netdev("tap,id=n0,ifname=vnet0,script=no,downscript=no")
        .mac("52:54:00:00:00:22")
        .script(&format!(
            "dhcp eth0 || exit 1\n\
             result body \"$(wget -q -O - http://{UPSTREAM_IP}:8080/)\"\n\
             result printer \"$(nslookup printer.test.lan | grep -c 192.168.122.50)\"\n"
        ))
        .run()
        .expect("run the QEMU guest");
    assert_eq!(out.result("ip"), Some("192.168.122.10"), "{}", out.console);
    assert_eq!(out.result("hostname"), Some("fixed"), "{}", out.console);
    assert_eq!(
        out.result("router"),
        Some("192.168.122.1"),
        "{}",
        out.console
    );
    assert_eq!(out.result("mtu"), Some("1400"), "{}", out.console);
    assert_eq!(out.result("domain"), Some("test.lan"), "{}", out.console);
    assert_eq!(
        out.result("body"),
        Some(format!("hello {HOST_UPLINK_IP}").as_str()),
        "{}",
        out.console
    );
    assert_eq!(out.result("printer"), Some("1"), "{}", out.console);
    let state = e.root.join("run/slipway/networks");
    let table = slipway_hostnet::leases_table(&state, "default", None).unwrap();
    assert!(table.contains("52:54:00:00:00:22"), "{table}");
    e.manager.destroy(&Lookup::any("default")).unwrap();
    sh("ip link del vnet0");
    assert_eq!(snapshot(), before);
    drop(upstream);
}

/// PXE: QEMU's iPXE ROM gets its lease and boot file from the network's
/// DHCP, loads the iPXE script, kernel and initramfs from its TFTP root,
/// and the booted guest leases again.
#[test]
fn qemu_guest_boots_from_the_network() {
    if std::env::var_os(IN_NETNS).is_none() {
        slipway_testkit::GuestImage::get().expect("test guest image");
    }
    slipway_testkit::enter_new_netns!(IN_NETNS);
    sh("ip link set lo up");
    let before = snapshot();
    let e = env();
    let root = tempfile::tempdir().unwrap();
    e.manager
        .define(
            &format!(
                "<network><name>pxe</name><forward mode='nat'/><bridge name='br-pxe' stp='off'/>\
                 <ip address='10.40.0.1' prefix='24'><tftp root='{}'/><dhcp>\
                 <range start='10.40.0.10' end='10.40.0.20'/>\
                 <bootp file='{}'/></dhcp></ip></network>",
                root.path().display(),
                slipway_testkit::NETBOOT_FILE
            ),
            false,
        )
        .unwrap();
    e.manager.start(&Lookup::any("pxe")).unwrap();
    let socks = sh("ss -lunp");
    assert!(socks.contains("10.40.0.1%br-pxe:69"), "{socks}");
    sh("ip tuntap add vnet1 mode tap && ip link set vnet1 master br-pxe up");
    let out = slipway_testkit::Guest::builder()
        .netdev("tap,id=n0,ifname=vnet1,script=no,downscript=no")
        .network_boot(root.path())
        .script("dhcp eth0 || exit 1\n")
        .run()
        .expect("run the QEMU guest");
    assert!(
        out.console.contains("tftp://10.40.0.1/boot.ipxe"),
        "{}",
        out.console
    );
    assert_eq!(
        out.result("boot_file"),
        Some("boot.ipxe"),
        "{}",
        out.console
    );
    assert_eq!(out.result("router"), Some("10.40.0.1"), "{}", out.console);
    e.manager.destroy(&Lookup::any("pxe")).unwrap();
    sh("ip link del vnet1");
    assert_eq!(snapshot(), before);
}

/// `open` adds no firewall rules at all; `<nat><port>` limits the source
/// ports the upstream sees.
#[test]
fn open_mode_and_nat_port_range() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    sh("ip link set lo up");
    let upstream = Upstream::new();
    upstream
        .ns
        .run(&format!("ip route add 10.50.0.0/24 via {HOST_UPLINK_IP}"));
    let before = snapshot();
    let e = env();
    e.manager
        .define(
            "<network><name>open</name><forward mode='open'/><bridge name='br-o' stp='off'/>\
             <ip address='10.50.0.1' prefix='24'><dhcp><range start='10.50.0.100' end='10.50.0.110'/></dhcp></ip></network>",
            false,
        )
        .unwrap();
    e.manager
        .define(
            "<network><name>snat</name><forward mode='nat'><nat><port start='2000' end='2099'/></nat></forward>\
             <bridge name='br-s' stp='off'/>\
             <ip address='10.60.0.1' prefix='24'><dhcp><range start='10.60.0.100' end='10.60.0.110'/></dhcp></ip></network>",
            false,
        )
        .unwrap();
    e.manager.start(&Lookup::any("open")).unwrap();
    assert_eq!(ruleset(), before.1, "open mode added firewall rules");
    e.manager.start(&Lookup::any("snat")).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let go = Guest::new("br-o", "vo1", "52:54:00:00:03:01");
    let ip = var(&go.udhcpc(dir.path(), "open1"), "ip").to_string();
    let page = go
        .ns
        .run(&format!("busybox wget -q -O - http://{UPSTREAM_IP}:8080/"));
    assert_eq!(page.trim(), format!("hello {ip}"));
    assert_eq!(upstream.peers.recv().unwrap().ip().to_string(), ip);

    let gs = Guest::new("br-s", "vs1", "52:54:00:00:04:01");
    gs.udhcpc(dir.path(), "snat1");
    for _ in 0..3 {
        gs.ns
            .run(&format!("busybox wget -q -O - http://{UPSTREAM_IP}:8080/"));
        let peer = upstream.peers.recv().unwrap();
        assert_eq!(peer.ip().to_string(), HOST_UPLINK_IP);
        assert!((2000..=2099).contains(&peer.port()), "{peer}");
    }

    e.manager.destroy(&Lookup::any("snat")).unwrap();
    e.manager.destroy(&Lookup::any("open")).unwrap();
    sh("ip link del vo1 && ip link del vs1");
    assert_eq!(snapshot(), before);
}

/// CPU time (user + system) process `pid` has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces): state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A guest floods the network's DNS with queries its silent upstream never
/// answers (issue 12: the service used to spin forever looking for a free
/// query ID, and DHCP stopped with it). The relay keeps at most
/// `MAX_FORWARDED` queries waiting and drops the rest: right after the
/// flood DHCP and local names are served and the service idles. At the
/// upstream, the relayed queries come from different ports under random
/// IDs.
#[test]
fn dns_flood_toward_a_silent_upstream_leaves_the_service_serving() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    const FLOOD: u32 = 200_000;
    sh("ip link set lo up");
    let e = env();
    // The upstream: a socket of this test on a loopback address of its own,
    // which records what reaches it and never answers.
    let upstream = UdpSocket::bind(("127.0.0.53", 53)).unwrap();
    fs::write(e.root.join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
    let (seen_tx, seen) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = upstream.recv_from(&mut buf) {
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            if n < 12 || seen_tx.send((id, from.port())).is_err() {
                return;
            }
        }
    });
    e.manager
        .define(
            "<network><name>flood</name><forward mode='open'/><bridge name='br-f' stp='off'/>\
             <domain name='flood.lan'/>\
             <dns><host ip='10.70.0.50'><hostname>printer</hostname></host></dns>\
             <ip address='10.70.0.1' prefix='24'>\
             <dhcp><range start='10.70.0.100' end='10.70.0.110'/></dhcp></ip></network>",
            false,
        )
        .unwrap();
    e.manager.start(&Lookup::any("flood")).unwrap();
    let pid = e
        .backend()
        .record("flood")
        .unwrap()
        .unwrap()
        .service
        .unwrap()
        .pid;
    let dir = tempfile::tempdir().unwrap();

    // The flooding guest: FLOOD queries under ever new IDs in bursts of 50
    // a millisecond (about 45,000/s: a service that keeps up receives
    // them all rather than the kernel dropping most), for at most 20 s.
    let flooder = Guest::new("br-f", "vf1", "52:54:00:00:07:01");
    flooder.run("ip addr add 10.70.0.5/24 dev eth0");
    let sent = flooder
        .ns
        .spawn(|| {
            let s = UdpSocket::bind("10.70.0.5:0").unwrap();
            s.set_nonblocking(true).unwrap();
            let mut q = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            q.extend_from_slice(b"\x03www\x07example\x04test\x00\x00\x01\x00\x01");
            let end = Instant::now() + std::time::Duration::from_secs(20);
            let mut sent = 0u32;
            while sent < FLOOD && Instant::now() < end {
                q[..2].copy_from_slice(&(sent as u16).to_be_bytes());
                // A full send buffer drops the query, as a flood does.
                let _ = s.send_to(&q, "10.70.0.1:53");
                sent += 1;
                if sent % 50 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            sent
        })
        .join()
        .unwrap();
    assert_eq!(sent, FLOOD);

    // Right after: a new guest gets a lease (udhcpc gives up after 5
    // tries of 2 s), and a local name resolves.
    let guest = Guest::new("br-f", "vf2", "52:54:00:00:07:02");
    let lease = guest.udhcpc(dir.path(), "after");
    let ip: Ipv4Addr = var(&lease, "ip").parse().unwrap();
    assert!(
        (Ipv4Addr::new(10, 70, 0, 100)..=Ipv4Addr::new(10, 70, 0, 110)).contains(&ip),
        "{ip}"
    );
    let local = guest
        .ns
        .run("dig +short +tries=3 +timeout=2 @10.70.0.1 printer.flood.lan A");
    assert_eq!(local.trim(), "10.70.0.50");

    // The service idles: less than half a second of CPU in two seconds.
    let ticks = cpu_ticks(pid);
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
    let used = cpu_ticks(pid) - ticks;
    assert!(
        used < hz / 2,
        "the service used {used} ticks of {hz}/s in 2 s"
    );

    // The excess was dropped and reported.
    let log = fs::read_to_string(
        e.root
            .join("run/slipway/networks/hostnet/flood.service.log"),
    )
    .unwrap();
    assert!(log.contains("DNS queries dropped"), "{log}");

    // What reached the upstream: the queries in flight at once each from
    // a port of their own, under IDs that are neither the guest's nor a
    // counter's.
    let seen: Vec<(u16, u16)> = seen.try_iter().collect();
    eprintln!("{} of {FLOOD} queries reached the upstream", seen.len());
    let first = &seen[..100.min(seen.len())];
    assert_eq!(first.len(), 100, "{first:?}");
    let ports: std::collections::HashSet<u16> = first.iter().map(|&(_, p)| p).collect();
    assert_eq!(ports.len(), 100, "{first:?}");
    let ids: Vec<u16> = first.iter().map(|&(id, _)| id).collect();
    assert!(ids.windows(2).any(|w| w[1] < w[0]), "{ids:?}");
    assert!(
        !ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{ids:?}"
    );

    // During a flood as fast as the guest can send: DHCP is still served
    // between batches of queries. (A query of another client may be lost
    // meanwhile: the kernel drops what overflows the DNS socket's buffer.)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = stop.clone();
    let flood = flooder.ns.spawn(move || {
        let s = UdpSocket::bind("10.70.0.5:0").unwrap();
        s.set_nonblocking(true).unwrap();
        let mut q = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x03www\x07example\x04test\x00\x00\x01\x00\x01");
        let end = Instant::now() + std::time::Duration::from_secs(60);
        let mut sent = 0u16;
        while !flooding.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            q[..2].copy_from_slice(&sent.to_be_bytes());
            let _ = s.send_to(&q, "10.70.0.1:53");
            sent = sent.wrapping_add(1);
        }
    });
    let during = Guest::new("br-f", "vf3", "52:54:00:00:07:03");
    let served =
        std::panic::catch_unwind(|| var(&during.udhcpc(dir.path(), "during"), "ip").to_string());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    let ip = served.expect("DHCP served during the flood");
    assert!(ip.starts_with("10.70.0.1"), "{ip}");

    e.manager.destroy(&Lookup::any("flood")).unwrap();
    sh("ip link del vf1 && ip link del vf2 && ip link del vf3");
}
