//! A flooding guest cannot take the stack down: SYN flood, UDP to many
//! ports, a DNS query flood, a DHCP storm, an ARP storm and tiny
//! fragments go through
//! `Stack::handle_frame` (the entry a VM's frames take) with real host
//! sockets on loopback. After each flood the flow tables, the open
//! descriptors and the memory stay under the caps, the drop counters say
//! why, and a well-behaved UDP flow opened before the flood still gets its
//! echo.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry};
use slipway_usermode::ctx::{decode_token, DropReason};
use slipway_usermode::stack::Stack;
use slipway_usermode::status::FlowProtocol;

mod frames;
use frames::{ethernet, ipv4, udp, with_checksum, GATEWAY, GUEST};
const MAX_TCP: usize = 64;
const MAX_UDP: usize = 32;
const MAX_DNS: usize = 16;
const FLOOD: u16 = 2000;

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut seg = Vec::new();
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&dport.to_be_bytes());
    seg.extend_from_slice(&1000_u32.to_be_bytes());
    seg.extend_from_slice(&0_u32.to_be_bytes());
    seg.extend_from_slice(&[5 << 4, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    let seg = with_checksum(GUEST, GATEWAY, 6, seg, 16);
    ipv4(GUEST, GATEWAY, 6, 0x4000, &seg)
}

fn dhcp_discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut b = vec![1, 1, 6, 0];
    b.extend_from_slice(&xid.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0x80, 0]);
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&mac);
    b.extend_from_slice(&[0; 10 + 64 + 128]);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 255]);
    let seg = udp(Ipv4Addr::UNSPECIFIED, 68, Ipv4Addr::BROADCAST, 67, &b);
    let mut frame = seg;
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame
}

fn arp_request(src_mac: [u8; 6], src_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&src_mac);
    a.extend_from_slice(&src_ip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&GATEWAY.octets());
    ethernet([0xff; 6], src_mac, 0x0806, &a)
}

/// The stack with small caps, its event loop, and loopback peers.
struct Bench {
    stack: Stack,
    poll: Poll,
    registry: Registry,
    events: Events,
    echo_port: u16,
    _echo: std::thread::JoinHandle<()>,
}

impl Bench {
    fn new() -> Bench {
        let mut cfg = slipway_usermode::options::parse_options("").unwrap();
        cfg.limits.max_tcp_flows = MAX_TCP;
        cfg.limits.max_udp_flows = MAX_UDP;
        cfg.limits.max_dns_queries = MAX_DNS;
        cfg.dns_upstreams = vec!["127.0.0.1:9".parse().unwrap()];
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let mut stack = Stack::new(cfg).unwrap();
        stack.start(&registry).unwrap();
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut buf = [0; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        Bench {
            stack,
            poll,
            registry,
            events: Events::with_capacity(256),
            echo_port,
            _echo: handle,
        }
    }

    /// Hands one guest frame to the stack; returns the frames toward the guest.
    fn frame(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        self.stack
            .handle_frame(&self.registry, frame, Instant::now());
        self.events()
    }

    /// Host events as the event loop hands them over; frames toward the
    /// guest are returned (and drained, as the attachment would).
    fn events(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let tx = self.stack.guest_tx();
            out.extend((0..tx.len()).map(|i| tx.frame(i).to_vec()));
            let n = tx.len();
            tx.pop(n);
            self.stack.on_guest_tx_space(&self.registry, Instant::now());
            self.poll
                .poll(&mut self.events, Some(Duration::ZERO))
                .unwrap();
            if self.events.is_empty() && self.stack.guest_tx().is_empty() {
                return out;
            }
            self.dispatch();
        }
    }

    /// Hands the host events of the last poll to the stack.
    fn dispatch(&mut self) {
        for event in self.events.iter() {
            if let Some((kind, index)) = decode_token(event.token()) {
                self.stack
                    .handle_host_event(&self.registry, kind, index, event, Instant::now());
            }
        }
    }

    /// The well-behaved flow: a datagram to the echo server through the
    /// gateway's loopback mapping comes back to the guest.
    fn echo_works(&mut self, tag: &str) -> bool {
        let frame = udp(GUEST, 5000, GATEWAY, self.echo_port, tag.as_bytes());
        let echoed = |frames: &[Vec<u8>]| {
            frames
                .iter()
                .any(|f| f.ends_with(tag.as_bytes()) && f[30..34] == GUEST.octets())
        };
        if echoed(&self.frame(&frame)) {
            return true;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(100)))
                .unwrap();
            self.dispatch();
            if echoed(&self.events()) {
                return true;
            }
        }
        false
    }

    fn flows(&self, protocol: FlowProtocol) -> usize {
        self.stack
            .flows(Instant::now())
            .iter()
            .filter(|f| f.protocol == protocol)
            .count()
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.stack.counters().drops(reason)
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn floods_stay_under_the_caps_and_a_good_flow_is_still_served() {
    let mut b = Bench::new();
    assert!(b.echo_works("before"), "the echo flow works at all");
    let fds = open_fds();
    let rss = rss_kib();

    // SYN flood toward a host port whose listener never accepts: each SYN
    // would be a flow and a host socket; the table stops at its cap.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(port) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    for i in 0..FLOOD {
        b.frame(&syn(20000 + i, port.port()));
    }
    assert!(
        b.flows(FlowProtocol::Tcp) <= MAX_TCP,
        "{}",
        b.flows(FlowProtocol::Tcp)
    );
    assert!(
        b.drops(DropReason::FlowLimit) >= u64::from(FLOOD) - MAX_TCP as u64,
        "flow-limit drops: {}",
        b.drops(DropReason::FlowLimit)
    );
    assert!(b.echo_works("after-syn-flood"));

    // UDP to many ports from many guest ports: one flow (and socket) each,
    // up to the cap; the echo flow, opened first, keeps its place.
    let before = b.drops(DropReason::FlowLimit);
    for i in 0..FLOOD {
        b.frame(&udp(GUEST, 30000 + i, GATEWAY, 1 + i, b"x"));
    }
    assert!(
        b.flows(FlowProtocol::Udp) <= MAX_UDP,
        "{}",
        b.flows(FlowProtocol::Udp)
    );
    assert!(b.drops(DropReason::FlowLimit) - before >= u64::from(FLOOD) - MAX_UDP as u64);
    assert!(b.echo_works("after-udp-flood"));

    // DNS queries from many guest ports to an upstream that never answers
    // (a blackhole address on loopback's port 9): at most MAX_DNS wait.
    let before = b.drops(DropReason::FlowLimit);
    for i in 0..FLOOD {
        let mut q = vec![(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x04test\x00\x00\x01\x00\x01");
        b.frame(&udp(GUEST, 40000 + i, Ipv4Addr::new(10, 0, 2, 3), 53, &q));
    }
    assert!(
        b.drops(DropReason::FlowLimit) - before >= u64::from(FLOOD) - MAX_DNS as u64,
        "{}",
        b.drops(DropReason::FlowLimit) - before
    );
    assert!(b.echo_works("after-dns-flood"));

    // A DHCP storm from ever new MACs: the pool (16 addresses) runs dry,
    // the rest get no lease and no state.
    for i in 0..FLOOD {
        let [hi, lo] = i.to_be_bytes();
        b.frame(&dhcp_discover([0x52, 0x54, 0x01, 0, hi, lo], u32::from(i)));
    }
    assert!(b.stack.leases(std::time::SystemTime::now()).len() <= 16);
    assert!(b.echo_works("after-dhcp-storm"));

    // An ARP storm from many addresses and MACs: answered or not, nothing
    // accumulates.
    for i in 0..FLOOD {
        let [hi, lo] = i.to_be_bytes();
        b.frame(&arp_request(
            [0x52, 0x54, 0x02, 0, hi, lo],
            Ipv4Addr::new(10, 0, 2, 16 + (i % 200) as u8),
        ));
    }
    assert!(b.echo_works("after-arp-storm"));

    // Tiny fragments (8 bytes, more-fragments set): the stack does not
    // reassemble, so each is dropped and counted, and none is kept.
    let before = b.drops(DropReason::Fragment);
    for i in 0..FLOOD {
        b.frame(&ipv4(GUEST, GATEWAY, 17, 0x2000 | (i % 100), &[0; 8]));
    }
    assert_eq!(b.drops(DropReason::Fragment) - before, u64::from(FLOOD));
    assert!(b.echo_works("after-fragments"));

    // Descriptors: at most one per flow of each table and per DNS query
    // in flight (each has its own socket toward the upstream), plus a few
    // (the echo thread's socket, the listener's backlog being the kernel's).
    let grown = open_fds().saturating_sub(fds);
    assert!(
        grown <= MAX_TCP + MAX_UDP + MAX_DNS + 8,
        "{grown} more descriptors"
    );
    // Memory: the caps bound it; 10,000 frames must not add 64 MiB.
    let grown_kib = rss_kib().saturating_sub(rss);
    assert!(grown_kib < 64 * 1024, "RSS grew by {grown_kib} KiB");
    drop(listener);
}
