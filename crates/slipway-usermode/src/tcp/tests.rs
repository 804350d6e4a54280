//! The TCP translation driven directly: a real `mio::Poll`, a real
//! `GuestTx`, segments crafted and parsed with smoltcp (an encoder and
//! parser independent of ours, both checksums verified), and real TCP
//! servers and clients on 127.0.0.1.
//!
//! Waits have a generous hang guard but nothing asserts on time.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener as StdListener, TcpStream as StdStream};
use std::thread;

use mio::{Events, Poll};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, Ipv4Packet, TcpControl, TcpRepr,
};

use super::*;
use crate::config::{HostForward, Limits};
use crate::iface::{decode_token, Counters, GuestTx, Neighbours, ETHERNET_HEADER_LEN, GATEWAY_MAC};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
/// Hang guard: a test that makes no progress for this long fails.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn config(mtu: usize) -> StackConfig {
    StackConfig {
        net: Ipv4Addr::new(10, 0, 2, 0),
        prefix_len: 24,
        host: HOST_IP,
        dns: Ipv4Addr::new(10, 0, 2, 3),
        dhcp_start: GUEST_IP,
        restrict: false,
        host_loopback: true,
        dns_relay: true,
        outbound: Default::default(),
        hostname: None,
        domainname: None,
        dnssearch: Vec::new(),
        hostfwd: Vec::new(),
        ipv4: true,
        ipv6: crate::options::parse_options("").unwrap().ipv6,
        mtu,
        dns_upstreams: Vec::new(),
        limits: Limits::default(),
        copied: None,
        services: Default::default(),
        busy_poll: std::time::Duration::ZERO,
    }
}

/// A segment the stack sent to the guest, parsed back by smoltcp.
#[derive(Clone, Debug)]
struct Seg {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    window: u16,
    wscale: Option<u8>,
    mss: Option<u16>,
    payload: Vec<u8>,
}

struct Harness {
    poll: Poll,
    events: Events,
    cfg: StackConfig,
    tx: GuestTx,
    counters: Counters,
    neighbours: Neighbours,
    ip_ident: u16,
    table: TcpTable,
    queue: VecDeque<Seg>,
    /// Frames toward the guest that failed a checksum on purpose (short peek).
    spoiled: usize,
}

macro_rules! ctx {
    ($h:expr) => {
        Ctx {
            cfg: &$h.cfg,
            tx: &mut $h.tx,
            registry: $h.poll.registry(),
            counters: &mut $h.counters,
            neighbours: &mut $h.neighbours,
            now: Instant::now(),
            ip_ident: &mut $h.ip_ident,
            forward_notices: None,
        }
    };
}

impl Harness {
    fn new(cfg: StackConfig) -> Harness {
        Harness::with_slots(cfg, 64)
    }

    fn with_slots(cfg: StackConfig, slots: usize) -> Harness {
        let mut neighbours = Neighbours::default();
        neighbours.learn(GUEST_IP, GUEST_MAC);
        let poll = Poll::new().unwrap();
        let mut table = TcpTable::new(&cfg);
        table.listen_forwards(poll.registry(), &cfg).unwrap();
        Harness {
            poll,
            events: Events::with_capacity(256),
            tx: GuestTx::new(cfg.mtu, slots),
            cfg,
            counters: Counters::default(),
            neighbours,
            ip_ident: 0,
            table,
            queue: VecDeque::new(),
            spoiled: 0,
        }
    }

    /// Hands the table one guest segment built by smoltcp.
    fn inject(&mut self, src: SocketAddrV4, dst: SocketAddrV4, repr: &TcpRepr) {
        self.inject_raw(*src.ip(), *dst.ip(), &encode(src, dst, repr));
    }

    /// Hands the table one guest segment as a link batch of its own.
    fn inject_raw(&mut self, src: Ipv4Addr, dst: Ipv4Addr, bytes: &[u8]) {
        self.table.on_guest_segment(
            &mut ctx!(self),
            src.into(),
            dst.into(),
            bytes,
            RxChecksum::Unverified,
            &[],
        );
        self.table.end_guest_batch(&mut ctx!(self), &[]);
        self.drain();
    }

    /// Hands the table several guest segments as one batch of the link
    /// (as a stream link's read delivers them), then ends the batch.
    fn inject_batch(&mut self, src: SocketAddrV4, dst: SocketAddrV4, reprs: &[TcpRepr]) {
        for repr in reprs {
            self.table.on_guest_segment(
                &mut ctx!(self),
                (*src.ip()).into(),
                (*dst.ip()).into(),
                &encode(src, dst, repr),
                RxChecksum::Unverified,
                &[],
            );
        }
        self.table.end_guest_batch(&mut ctx!(self), &[]);
        self.drain();
    }

    /// Hands the table several guest segments as one batch of a link
    /// whose buffer stays put until the batch ends (a stream link): the
    /// segments lie back to back in one buffer, a 4-byte gap before each
    /// (a stream frame's length prefix), and that buffer goes with them.
    /// The batch ends with `end`'s buffer instead when given (a link that
    /// broke that rule).
    fn inject_in_place(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        reprs: &[TcpRepr],
        end: Option<&[u8]>,
    ) {
        let mut buf = Vec::new();
        let mut places = Vec::new();
        for repr in reprs {
            let seg = encode(src, dst, repr);
            buf.extend_from_slice(&[0; 4]);
            places.push(buf.len()..buf.len() + seg.len());
            buf.extend_from_slice(&seg);
        }
        for place in places {
            self.table.on_guest_segment(
                &mut ctx!(self),
                (*src.ip()).into(),
                (*dst.ip()).into(),
                &buf[place],
                RxChecksum::Unverified,
                &buf,
            );
        }
        self.table
            .end_guest_batch(&mut ctx!(self), end.unwrap_or(&buf));
        self.drain();
    }

    /// Moves every frame queued toward the guest into `queue`, checking
    /// Ethernet, IPv4 and TCP (with checksums) on the way.
    fn drain(&mut self) {
        for i in 0..self.tx.len() {
            let frame = self.tx.frame(i);
            let eth = EthernetFrame::new_checked(frame).unwrap();
            assert_eq!(eth.dst_addr(), GUEST_MAC);
            assert_eq!(eth.src_addr(), GATEWAY_MAC);
            assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
            let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(ip.next_header(), IpProtocol::Tcp);
            assert!(ip.total_len() as usize <= self.cfg.mtu);
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let pkt = TcpPacket::new_checked(ip.payload()).unwrap();
            if !pkt.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
                self.spoiled += 1;
                continue;
            }
            let repr = TcpRepr::parse(
                &pkt,
                &IpAddress::Ipv4(src),
                &IpAddress::Ipv4(dst),
                &ChecksumCapabilities::default(),
            )
            .expect("segment toward the guest parses");
            self.queue.push_back(Seg {
                src: SocketAddrV4::new(src, repr.src_port),
                dst: SocketAddrV4::new(dst, repr.dst_port),
                seq: repr.seq_number.0 as u32,
                ack: repr.ack_number.map(|a| a.0 as u32),
                syn: repr.control == TcpControl::Syn,
                fin: repr.control == TcpControl::Fin,
                rst: repr.control == TcpControl::Rst,
                window: repr.window_len,
                wscale: repr.window_scale,
                mss: repr.max_seg_size,
                payload: repr.payload.to_vec(),
            });
        }
        let n = self.tx.len();
        self.tx.pop(n);
        self.table.on_guest_tx_space(&mut ctx!(self));
        // Serving waiters may have queued more.
        if !self.tx.is_empty() {
            self.drain();
        }
    }

    /// One round of the event loop: host events, then due timers.
    fn turn(&mut self, timeout: Duration) {
        let timeout = match self.table.next_deadline() {
            Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let tokens: Vec<_> = self.events.iter().map(|e| (e.token(), e.clone())).collect();
        for (t, event) in tokens {
            let (kind, index) = decode_token(t).unwrap();
            self.table
                .on_host_event(&mut ctx!(self), kind, index, &event);
            self.drain();
        }
        self.table.on_timer(&mut ctx!(self));
        self.drain();
    }

    /// The next segment toward the guest, running the loop until one comes.
    fn next(&mut self) -> Seg {
        let start = Instant::now();
        loop {
            if let Some(s) = self.queue.pop_front() {
                return s;
            }
            assert!(start.elapsed() < HANG_GUARD, "no segment toward the guest");
            self.turn(Duration::from_millis(20));
        }
    }

    /// Whether every flow of the table has flow flag `flag` set.
    fn every_flow_has(&self, flag: u16) -> bool {
        self.table
            .flows
            .iter()
            .flatten()
            .all(|f| f.flags & flag != 0)
    }

    /// Runs the loop until `done` holds.
    fn run_until(&mut self, mut done: impl FnMut(&mut Harness) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < HANG_GUARD, "condition never reached");
            self.turn(Duration::from_millis(20));
        }
    }
}

/// A guest segment's bytes, encoded by smoltcp with its checksum.
fn encode(src: SocketAddrV4, dst: SocketAddrV4, repr: &TcpRepr) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    let mut pkt = TcpPacket::new_unchecked(&mut buf[..]);
    repr.emit(
        &mut pkt,
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// A minimal guest TCP endpoint.
struct Guest {
    me: SocketAddrV4,
    peer: SocketAddrV4,
    snd_nxt: u32,
    snd_una: u32,
    rcv_nxt: u32,
    /// Window field we advertise and its scale.
    window: u16,
    wscale: u8,
    /// The stack's window toward us, scaled.
    peer_window: u32,
    peer_wscale: u8,
    peer_mss: u16,
}

impl Guest {
    fn new(port: u16, peer: SocketAddrV4) -> Guest {
        Guest {
            me: SocketAddrV4::new(GUEST_IP, port),
            peer,
            snd_nxt: 1000,
            snd_una: 1000,
            rcv_nxt: 0,
            window: 0xffff,
            wscale: 7,
            peer_window: 0,
            peer_wscale: 0,
            peer_mss: 536,
        }
    }

    fn repr<'a>(&self, control: TcpControl, seq: u32, payload: &'a [u8]) -> TcpRepr<'a> {
        TcpRepr {
            src_port: self.me.port(),
            dst_port: self.peer.port(),
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(self.rcv_nxt as i32)),
            window_len: self.window,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        }
    }

    fn send(&self, h: &mut Harness, repr: &TcpRepr) {
        h.inject(self.me, self.peer, repr);
    }

    fn ack(&self, h: &mut Harness) {
        self.send(h, &self.repr(TcpControl::None, self.snd_nxt, &[]));
    }

    /// Sends the SYN of a guest connection.
    fn syn(&mut self, h: &mut Harness) {
        let mut r = self.repr(TcpControl::Syn, self.snd_nxt, &[]);
        r.ack_number = None;
        r.window_scale = Some(self.wscale);
        r.max_seg_size = Some(1460);
        self.send(h, &r);
        self.snd_nxt += 1;
        self.snd_una = self.snd_nxt;
    }

    /// Takes in the stack's SYN-ACK (or SYN) options.
    fn learn_syn(&mut self, s: &Seg) {
        self.rcv_nxt = s.seq.wrapping_add(1);
        self.peer_mss = s.mss.unwrap_or(536);
        self.peer_wscale = s.wscale.unwrap_or(0);
        self.peer_window = u32::from(s.window);
    }

    /// Opens a connection through the stack and completes the handshake.
    fn connect(&mut self, h: &mut Harness) -> Seg {
        self.syn(h);
        let synack = h.next();
        assert!(
            synack.syn && synack.ack == Some(self.snd_nxt),
            "SYN-ACK expected, got {synack:?}"
        );
        assert_eq!(synack.src, self.peer);
        assert_eq!(synack.dst, self.me);
        assert_eq!(synack.wscale, Some(OUR_WSCALE));
        self.learn_syn(&synack);
        self.ack(h);
        synack
    }

    fn note_ack(&mut self, s: &Seg) {
        if let Some(a) = s.ack {
            if seq_gt(a, self.snd_una) {
                self.snd_una = a;
            }
            self.peer_window = u32::from(s.window) << self.peer_wscale;
        }
    }

    /// Sends `data` in order, honouring the stack's window, retransmitting
    /// from the last acknowledged byte when the stack stops acknowledging.
    fn send_all(&mut self, h: &mut Harness, data: &[u8]) {
        let base = self.snd_nxt;
        let end = base.wrapping_add(data.len() as u32);
        let mut idle_turns = 0;
        while self.snd_una != end {
            let mut sent = false;
            while seq_lt(self.snd_nxt, end) {
                let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
                let room = self.peer_window.saturating_sub(in_flight);
                if room == 0 {
                    break;
                }
                let off = self.snd_nxt.wrapping_sub(base) as usize;
                let len = (data.len() - off)
                    .min(usize::from(self.peer_mss))
                    .min(room as usize);
                let r = self.repr(TcpControl::Psh, self.snd_nxt, &data[off..off + len]);
                self.send(h, &r);
                self.snd_nxt = self.snd_nxt.wrapping_add(len as u32);
                sent = true;
            }
            let before = self.snd_una;
            while let Some(s) = h.queue.pop_front() {
                assert!(!s.rst, "unexpected RST while sending");
                self.note_ack(&s);
            }
            if !sent && self.snd_una == before {
                h.turn(Duration::from_millis(5));
                while let Some(s) = h.queue.pop_front() {
                    self.note_ack(&s);
                }
                idle_turns += 1;
                if idle_turns > 20 {
                    // Nothing acknowledged for a while: go back.
                    self.snd_nxt = self.snd_una;
                    idle_turns = 0;
                }
            } else {
                idle_turns = 0;
            }
        }
    }

    /// Receives host data until the stack's FIN (or `limit` bytes), ACKing
    /// in order and dropping every `drop_every`-th new segment once.
    fn receive(&mut self, h: &mut Harness, limit: usize, drop_every: usize) -> Vec<u8> {
        let mut data = Vec::new();
        let mut seen = 0usize;
        let mut dropped = std::collections::HashSet::new();
        loop {
            let s = h.next();
            assert!(!s.rst, "unexpected RST while receiving");
            self.note_ack(&s);
            if s.payload.is_empty() && !s.fin {
                continue;
            }
            if s.seq == self.rcv_nxt {
                seen += 1;
                if drop_every > 0 && seen.is_multiple_of(drop_every) && dropped.insert(s.seq) {
                    continue;
                }
                data.extend_from_slice(&s.payload);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(s.payload.len() as u32);
                if s.fin {
                    self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                }
                self.ack(h);
                if s.fin || data.len() >= limit {
                    return data;
                }
            } else {
                // Out of order or old: duplicate ACK.
                self.ack(h);
            }
        }
    }

    fn fin(&mut self, h: &mut Harness) {
        let r = self.repr(TcpControl::Fin, self.snd_nxt, &[]);
        self.send(h, &r);
        self.snd_nxt += 1;
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn loopback_server() -> (StdListener, SocketAddrV4) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, SocketAddrV4::new(HOST_IP, port))
}

/// A loopback server with a small receive buffer that reads (to the end)
/// only when `go` is sent, so a host socket cannot take a whole batch:
/// its port, `go`, and the thread that returns what it read.
fn gated_small_receiver() -> (
    u16,
    std::sync::mpsc::Sender<()>,
    thread::JoinHandle<Vec<u8>>,
) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(4096).unwrap();
    listener
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    listener.listen(1).unwrap();
    let port = listener.local_addr().unwrap().as_socket().unwrap().port();
    let listener: StdListener = listener.into();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        wait.recv().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    (port, go, server)
}

/// Shrinks the send buffer of the table's only flow's host socket.
fn shrink_send_buffer(h: &Harness) {
    let flow = h.table.flows.iter().flatten().next().unwrap();
    SockRef::from(&flow.sock)
        .set_send_buffer_size(4096)
        .unwrap();
}

#[test]
fn handshake_data_both_ways_and_close() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        s.write_all(b"world").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "EOF after the guest's FIN");
        // Half-closed by the guest: the host can still send.
        s.write_all(b"bye").unwrap();
    });
    let mut g = Guest::new(40000, remote);
    let synack = g.connect(&mut h);
    assert_eq!(synack.mss, Some(1460), "MSS from the MTU");
    assert_eq!(h.table.len(), 1);
    let r = g.repr(TcpControl::Psh, g.snd_nxt, b"hello");
    g.send(&mut h, &r);
    g.snd_nxt += 5;
    let mut got = g.receive(&mut h, 5, 0);
    assert_eq!(got, b"world");
    assert_eq!(
        g.snd_una, g.snd_nxt,
        "the stack acknowledged what the socket took"
    );
    g.fin(&mut h);
    got = g.receive(&mut h, usize::MAX, 0);
    assert_eq!(got, b"bye");
    server.join().unwrap();
    h.run_until(|h| h.table.is_empty());
    let st = h.table.stats();
    assert_eq!(
        (
            st.opened_outbound,
            st.closed,
            st.bytes_to_host,
            st.bytes_to_guest
        ),
        (1, 1, 5, 8)
    );
    assert_eq!(h.spoiled, 0);
}

#[test]
fn refused_port_gets_rst_at_once() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    drop(listener);
    let mut g = Guest::new(40001, remote);
    g.syn(&mut h);
    let s = h.next();
    assert!(s.rst, "RST expected, got {s:?}");
    assert_eq!(s.ack, Some(g.snd_nxt));
    assert!(h.table.is_empty());
    assert_eq!(h.table.stats().refused, 1);
}

#[test]
fn denied_destinations_get_rst() {
    let mut cfg = config(1500);
    cfg.restrict = true;
    let mut h = Harness::new(cfg);
    let mut g = Guest::new(40002, SocketAddrV4::new(HOST_IP, 80));
    g.syn(&mut h);
    assert!(h.next().rst);
    // Another address of the virtual subnet has nothing behind it.
    let mut h = Harness::new(config(1500));
    let mut g = Guest::new(40003, SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 77), 80));
    g.syn(&mut h);
    assert!(h.next().rst);
    assert_eq!(h.table.stats().denied, 1);
    assert!(h.table.is_empty());
}

fn host_to_guest(mtu: usize, len: usize, drop_every: usize, fallback: bool) -> TcpStats {
    let mut h = Harness::new(config(mtu));
    h.table.sh.force_peek_fallback = fallback;
    let (listener, remote) = loopback_server();
    let data = pattern(len, 7);
    let sent = data.clone();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&sent).unwrap();
    });
    let mut g = Guest::new(40010, remote);
    g.connect(&mut h);
    let got = g.receive(&mut h, usize::MAX, drop_every);
    server.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "data arrived intact");
    g.fin(&mut h);
    h.run_until(|h| h.table.is_empty());
    h.table.stats().clone()
}

#[test]
fn large_transfer_to_guest() {
    let st = host_to_guest(1500, 4 << 20, 0, false);
    assert_eq!(st.bytes_to_guest, 4 << 20);
}

#[test]
fn large_transfer_to_guest_recovers_losses() {
    let st = host_to_guest(1500, 3 << 20, 97, false);
    assert!(
        st.fast_retransmits + st.timeouts > 0,
        "losses were repaired: {st:?}"
    );
}

#[test]
fn large_transfer_to_guest_jumbo_mtu() {
    host_to_guest(65520, 8 << 20, 0, false);
}

#[test]
fn transfer_without_peek_offset() {
    let st = host_to_guest(1500, 2 << 20, 131, true);
    assert!(st.fast_retransmits + st.timeouts > 0);
}

fn guest_to_host(mtu: usize, len: usize) -> TcpStats {
    let mut h = Harness::new(config(mtu));
    let (listener, remote) = loopback_server();
    let data = pattern(len, 11);
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut g = Guest::new(40020, remote);
    g.connect(&mut h);
    g.send_all(&mut h, &data);
    g.fin(&mut h);
    let got = server.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "data arrived intact");
    // The host closed after EOF: the guest gets a FIN and the flow ends.
    let rest = g.receive(&mut h, usize::MAX, 0);
    assert!(rest.is_empty());
    h.run_until(|h| h.table.is_empty());
    h.table.stats().clone()
}

#[test]
fn large_transfer_from_guest() {
    let st = guest_to_host(1500, 4 << 20);
    assert_eq!(st.bytes_to_host, 4 << 20);
}

#[test]
fn large_transfer_from_guest_jumbo_mtu() {
    guest_to_host(65520, 8 << 20);
}

#[test]
fn window_follows_a_slow_host_reader() {
    // The host reads nothing until the guest has been stopped by the window.
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        rx.recv().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut g = Guest::new(40030, remote);
    g.connect(&mut h);
    let data = pattern(64 << 20, 3);
    // Offer far more than any socket buffer: the window must close.
    let mut off = 0;
    loop {
        let in_flight = g.snd_nxt.wrapping_sub(g.snd_una);
        let room = g.peer_window.saturating_sub(in_flight) as usize;
        if room == 0 {
            break;
        }
        let len = room.min(1460).min(data.len() - off);
        let r = g.repr(TcpControl::Psh, g.snd_nxt, &data[off..off + len]);
        g.send(&mut h, &r);
        g.snd_nxt += len as u32;
        off += len;
        while let Some(s) = h.queue.pop_front() {
            g.note_ack(&s);
        }
        assert!(off < data.len(), "the window never closed");
    }
    assert_eq!(
        g.snd_una, g.snd_nxt,
        "everything inside the window was taken"
    );
    assert!(
        h.every_flow_has(WATCH_WRITABLE),
        "a closed window watches the socket's writable edge"
    );
    tx.send(()).unwrap();
    // The reader drains the socket: a window update lets the rest go.
    let remaining = data[off..off + (1 << 20)].to_vec();
    g.send_all(&mut h, &remaining);
    g.fin(&mut h);
    let got = server.join().unwrap();
    assert_eq!(got.len(), off + (1 << 20));
    assert!(got[..off] == data[..off] && got[off..] == remaining[..]);
    assert!(h.table.stats().window_updates > 0);
}

#[test]
fn guest_rst_resets_host_and_bad_rst_is_ignored() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        s.read(&mut buf)
    });
    let mut g = Guest::new(40040, remote);
    g.connect(&mut h);
    // A RST outside the window changes nothing.
    let r = g.repr(TcpControl::Rst, g.snd_nxt.wrapping_add(1 << 30), &[]);
    g.send(&mut h, &r);
    assert_eq!(h.table.len(), 1);
    // In the window but not exact: a challenge ACK.
    let r = g.repr(TcpControl::Rst, g.snd_nxt.wrapping_add(10), &[]);
    g.send(&mut h, &r);
    let s = h.next();
    assert!(
        !s.rst && s.ack == Some(g.snd_nxt),
        "challenge ACK expected, got {s:?}"
    );
    assert_eq!(h.table.len(), 1);
    let r = g.repr(TcpControl::Rst, g.snd_nxt, &[]);
    g.send(&mut h, &r);
    assert!(h.table.is_empty());
    let err = server.join().unwrap().expect_err("the host sees a reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let st = h.table.stats();
    assert_eq!((st.resets_from_guest, st.challenge_acks), (1, 1));
}

#[test]
fn host_reset_reaches_guest() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    // The reset waits for the handshake with the guest: a reset before
    // it is a refused connection (a RST to the guest's SYN).
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        wait.recv().unwrap();
        SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    });
    let mut g = Guest::new(40041, remote);
    g.connect(&mut h);
    go.send(()).unwrap();
    server.join().unwrap();
    let s = loop {
        let s = h.next();
        if s.rst {
            break s;
        }
    };
    assert_eq!(s.seq, g.rcv_nxt);
    h.run_until(|h| h.table.is_empty());
}

#[test]
fn flow_cap_refuses_with_rst() {
    let mut cfg = config(1500);
    cfg.limits.max_tcp_flows = 2;
    let mut h = Harness::new(cfg);
    let (listener, remote) = loopback_server();
    let mut guests: Vec<Guest> = (0..2).map(|i| Guest::new(41000 + i, remote)).collect();
    for g in &mut guests {
        g.connect(&mut h);
    }
    assert_eq!(h.table.len(), 2);
    let mut third = Guest::new(41002, remote);
    third.syn(&mut h);
    let s = h.next();
    assert!(s.rst && s.dst == third.me);
    assert_eq!(h.table.stats().flow_limit, 1);
    assert_eq!(h.counters.drops(DropReason::FlowLimit), 1);
    drop(listener);
}

#[test]
fn bad_segments_are_counted_and_stray_ack_gets_rst() {
    let mut h = Harness::new(config(1500));
    let g = Guest::new(40050, SocketAddrV4::new(HOST_IP, 9));
    let r = g.repr(TcpControl::Syn, 5, &[]);
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(
        &mut TcpPacket::new_unchecked(&mut buf[..]),
        &IpAddress::Ipv4(GUEST_IP),
        &IpAddress::Ipv4(HOST_IP),
        &ChecksumCapabilities::default(),
    );
    buf[4] ^= 0x40;
    h.inject_raw(GUEST_IP, HOST_IP, &buf);
    h.inject_raw(GUEST_IP, HOST_IP, &buf[..10]);
    assert_eq!(h.counters.drops(DropReason::BadChecksum), 1);
    assert_eq!(h.counters.drops(DropReason::Truncated), 1);
    assert!(h.queue.is_empty() && h.table.is_empty());
    // An ACK for no connection: RST with the ACK's number.
    let r = g.repr(TcpControl::None, 5, &[]);
    g.send(&mut h, &r);
    let s = h.next();
    assert!(s.rst && s.seq == g.rcv_nxt);
    assert_eq!(h.table.stats().bad_segments, 2);
}

fn forward_config() -> StackConfig {
    let mut cfg = config(1500);
    cfg.hostfwd.push(HostForward {
        protocol: ForwardProtocol::Tcp,
        host: "127.0.0.1:0".parse().unwrap(),
        guest_addr: None,
        guest_port: 8080,
        v6_only: false,
        device: None,
    });
    cfg
}

#[test]
fn hostfwd_carries_a_connection_into_the_guest() {
    let mut h = Harness::new(forward_config());
    let addr = h.table.forward_addrs().next().unwrap();
    let data = pattern(1 << 20, 5);
    let upload = data.clone();
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        s.write_all(&upload).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        reply
    });
    let syn = h.next();
    assert!(
        syn.syn && syn.ack.is_none(),
        "SYN to the guest expected, got {syn:?}"
    );
    assert_eq!(syn.dst, SocketAddrV4::new(GUEST_IP, 8080));
    assert_eq!(*syn.src.ip(), HOST_IP);
    let mut g = Guest::new(8080, syn.src);
    g.learn_syn(&syn);
    let mut r = g.repr(TcpControl::Syn, g.snd_nxt, &[]);
    r.window_scale = Some(g.wscale);
    r.max_seg_size = Some(1460);
    g.send(&mut h, &r);
    g.snd_nxt += 1;
    g.snd_una = g.snd_nxt;
    let got = g.receive(&mut h, usize::MAX, 0);
    assert!(got == data, "upload arrived intact");
    g.peer_wscale = OUR_WSCALE;
    g.send_all(&mut h, b"thanks");
    g.fin(&mut h);
    assert_eq!(client.join().unwrap(), b"thanks");
    h.run_until(|h| h.table.is_empty());
    assert_eq!(h.table.stats().opened_forward, 1);
}

#[test]
fn hostfwd_refused_by_guest_closes_the_client() {
    let mut h = Harness::new(forward_config());
    let addr = h.table.forward_addrs().next().unwrap();
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        let mut buf = [0u8; 1];
        s.read(&mut buf)
    });
    let syn = h.next();
    assert!(syn.syn);
    let mut g = Guest::new(8080, syn.src);
    g.rcv_nxt = syn.seq.wrapping_add(1);
    let mut r = g.repr(TcpControl::Rst, 0, &[]);
    r.ack_number = Some(TcpSeqNumber(syn.seq.wrapping_add(1) as i32));
    g.send(&mut h, &r);
    assert!(h.table.is_empty());
    match client.join().unwrap() {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("read {n} bytes from a refused forward"),
    }
}

#[test]
fn guest_tx_full_holds_back_and_resumes() {
    // Two slots toward the guest: the flow must wait for room repeatedly.
    let mut h = Harness::with_slots(config(1500), 2);
    let (listener, remote) = loopback_server();
    let data = pattern(256 << 10, 9);
    let sent = data.clone();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&sent).unwrap();
    });
    let mut g = Guest::new(40060, remote);
    g.connect(&mut h);
    let got = g.receive(&mut h, usize::MAX, 0);
    server.join().unwrap();
    assert!(got == data);
}

#[test]
fn syn_options_parse() {
    assert_eq!(syn_options(&[]), (DEFAULT_GUEST_MSS, None));
    assert_eq!(syn_options(&[2, 4, 5, 0xb4, 1, 3, 3, 7]), (1460, Some(7)));
    assert_eq!(
        syn_options(&[3, 3, 30]),
        (DEFAULT_GUEST_MSS, Some(MAX_WSCALE))
    );
    assert_eq!(syn_options(&[2, 4, 0, 1]), (MIN_GUEST_MSS, None));
    // Truncated options end the parse without a panic.
    assert_eq!(syn_options(&[2, 4, 5]), (DEFAULT_GUEST_MSS, None));
}

/// A segment with arbitrary header fields and a valid checksum.
#[allow(clippy::too_many_arguments)]
fn raw_segment(
    from: SocketAddrV4,
    to: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opts = options.len().min(40) / 4 * 4;
    let header_len = 20 + opts;
    let mut buf = vec![0u8; header_len + payload.len()];
    let mut pkt = TcpPacket::new_unchecked(&mut buf[..]);
    pkt.set_src_port(from.port());
    pkt.set_dst_port(to.port());
    pkt.set_seq_number(TcpSeqNumber(seq as i32));
    pkt.set_ack_number(TcpSeqNumber(ack as i32));
    pkt.set_header_len(header_len as u8);
    pkt.clear_flags();
    pkt.set_fin(flags & 1 != 0);
    pkt.set_syn(flags & 2 != 0);
    pkt.set_rst(flags & 4 != 0);
    pkt.set_psh(flags & 8 != 0);
    pkt.set_ack(flags & 16 != 0);
    pkt.set_window_len(window);
    pkt.options_mut().copy_from_slice(&options[..opts]);
    pkt.payload_mut().copy_from_slice(payload);
    pkt.fill_checksum(&IpAddress::Ipv4(*from.ip()), &IpAddress::Ipv4(*to.ip()));
    buf
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Random bytes as a TCP segment never panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
        let mut h = Harness::new(config(1500));
        h.inject_raw(GUEST_IP, HOST_IP, &bytes);
        let _ = h.table.stats();
    }

    /// Hostile segments (any flags, sequence and acknowledgement numbers,
    /// options, payload) aimed at one connection never panic and never
    /// disturb another connection of the same guest.
    #[test]
    fn hostile_segments_leave_other_flows_alone(
        segs in proptest::collection::vec(
            (
                proptest::prelude::any::<u32>(),
                proptest::prelude::any::<u32>(),
                proptest::prelude::any::<u8>(),
                proptest::prelude::any::<u16>(),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                proptest::prelude::any::<bool>(),
            ),
            1..24,
        )
    ) {
        let mut h = Harness::new(config(1500));
        let (listener, remote) = loopback_server();
        let server = thread::spawn(move || {
            let (_victim, _) = listener.accept().unwrap();
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
            buf
        });
        let mut victim = Guest::new(42000, remote);
        victim.connect(&mut h);
        let mut other = Guest::new(42001, remote);
        other.connect(&mut h);
        for (seq, ack, flags, window, options, payload, near) in &segs {
            // Half of the segments carry numbers close to the real ones.
            let (seq, ack) = if *near {
                (victim.snd_nxt.wrapping_add(seq % 64), victim.rcv_nxt.wrapping_add(ack % 64))
            } else {
                (*seq, *ack)
            };
            let bytes = raw_segment(victim.me, victim.peer, seq, ack, *flags, *window, options, payload);
            h.inject_raw(GUEST_IP, HOST_IP, &bytes);
        }
        h.queue.retain(|s| s.dst != other.me);
        let r = other.repr(TcpControl::Psh, other.snd_nxt, b"ping");
        other.send(&mut h, &r);
        other.snd_nxt += 4;
        let echoed = loop {
            let s = h.next();
            if s.dst == other.me && !s.payload.is_empty() {
                proptest::prop_assert!(!s.rst);
                break s.payload;
            }
        };
        proptest::prop_assert_eq!(echoed, b"ping".to_vec());
        proptest::prop_assert_eq!(server.join().unwrap(), *b"ping");
    }
}

#[test]
fn full_size_segments_are_acknowledged_every_second_one_offload_frames_at_once() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    let mut g = Guest::new(40070, remote);
    g.connect(&mut h);
    let data = pattern(3 * 1460, 1);
    for chunk in data.chunks(1460).take(2) {
        let r = g.repr(TcpControl::None, g.snd_nxt, chunk);
        g.send(&mut h, &r);
        g.snd_nxt += 1460;
    }
    let acks: Vec<_> = h.queue.drain(..).collect();
    assert_eq!(
        acks.len(),
        1,
        "one ACK for two full-size segments: {acks:?}"
    );
    assert_eq!(acks[0].ack, Some(g.snd_nxt));
    // A lone full-size segment is acknowledged by the delayed-ACK timer.
    let r = g.repr(TcpControl::None, g.snd_nxt, &data[2920..]);
    g.send(&mut h, &r);
    g.snd_nxt += 1460;
    assert!(h.queue.is_empty());
    assert_eq!(h.next().ack, Some(g.snd_nxt));
    // A segment of several full sizes (a tap's segmentation-offload
    // frame) is acknowledged at once, as Linux does a GRO'd packet.
    let big = pattern(4 * 1460, 2);
    let r = g.repr(TcpControl::None, g.snd_nxt, &big);
    g.send(&mut h, &r);
    g.snd_nxt += big.len() as u32;
    let acks: Vec<_> = h.queue.drain(..).collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].ack, Some(g.snd_nxt));
    g.fin(&mut h);
    assert_eq!(server.join().unwrap(), 7 * 1460);
}

#[test]
fn many_concurrent_connections_stay_apart() {
    const N: usize = 40;
    const LEN: usize = 6000;
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let server = thread::spawn(move || {
        let echoes: Vec<_> = (0..N)
            .map(|_| {
                let (mut s, _) = listener.accept().unwrap();
                thread::spawn(move || {
                    let mut buf = vec![0u8; LEN];
                    s.read_exact(&mut buf).unwrap();
                    s.write_all(&buf).unwrap();
                })
            })
            .collect();
        for e in echoes {
            e.join().unwrap();
        }
    });
    let mut guests: Vec<Guest> = (0..N)
        .map(|i| Guest::new(43000 + i as u16, remote))
        .collect();
    for g in &mut guests {
        g.connect(&mut h);
    }
    assert_eq!(h.table.len(), N);
    // Every connection sends its own pattern, interleaved segment by segment.
    let payloads: Vec<Vec<u8>> = (0..N).map(|i| pattern(LEN, 100 + i as u32)).collect();
    for off in (0..LEN).step_by(1000) {
        for (g, p) in guests.iter_mut().zip(&payloads) {
            let end = (off + 1000).min(LEN);
            let r = g.repr(TcpControl::Psh, g.snd_nxt, &p[off..end]);
            g.send(&mut h, &r);
            g.snd_nxt += (end - off) as u32;
        }
    }
    let mut received: Vec<Vec<u8>> = vec![Vec::new(); N];
    while received.iter().any(|r| r.len() < LEN) {
        let s = h.next();
        assert!(!s.rst, "unexpected RST {s:?}");
        let i = usize::from(s.dst.port() - 43000);
        let g = &mut guests[i];
        g.note_ack(&s);
        if !s.payload.is_empty() && s.seq == g.rcv_nxt {
            received[i].extend_from_slice(&s.payload);
            g.rcv_nxt = g.rcv_nxt.wrapping_add(s.payload.len() as u32);
            g.ack(&mut h);
        }
    }
    server.join().unwrap();
    for (r, p) in received.iter().zip(&payloads) {
        assert!(r == p, "each connection got its own echo");
    }
    for g in &mut guests {
        g.fin(&mut h);
    }
    // The echo servers closed: each guest gets a FIN and ACKs it.
    while !h.table.is_empty() {
        let s = h.next();
        let i = usize::from(s.dst.port() - 43000);
        let g = &mut guests[i];
        if s.fin && s.seq == g.rcv_nxt {
            g.rcv_nxt = g.rcv_nxt.wrapping_add(1);
            g.ack(&mut h);
        }
    }
    assert_eq!(h.table.stats().closed, N as u64);
}

#[test]
fn dns_address_port_53_reaches_the_first_upstream() {
    let upstream = StdListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(1500);
    cfg.dns_upstreams = vec![upstream.local_addr().unwrap()];
    let mut h = Harness::new(cfg);
    let server = thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        let mut query = [0u8; 6];
        s.read_exact(&mut query).unwrap();
        s.write_all(b"answer").unwrap();
        query
    });
    let mut g = Guest::new(40080, SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 3), 53));
    g.connect(&mut h);
    let r = g.repr(TcpControl::Psh, g.snd_nxt, b"query!");
    g.send(&mut h, &r);
    g.snd_nxt += 6;
    assert_eq!(g.receive(&mut h, 6, 0), b"answer");
    assert_eq!(&server.join().unwrap(), b"query!");
    // Without upstreams the DNS address refuses TCP at once.
    let mut h = Harness::new(config(1500));
    let mut g = Guest::new(40081, SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 3), 53));
    g.syn(&mut h);
    assert!(h.next().rst);
}

/// A connect to a loopback server has completed when `connect()` returns:
/// the SYN-ACK is queued while the guest's SYN is handled, without a turn
/// of the event loop (one wake-up less per connection).
#[test]
fn syn_to_a_listening_loopback_server_is_answered_at_once() {
    let mut h = Harness::new(config(1500));
    let (_listener, remote) = loopback_server();
    let mut g = Guest::new(40050, remote);
    g.syn(&mut h);
    let synack = h
        .queue
        .pop_front()
        .expect("SYN-ACK queued with no event-loop turn");
    assert!(synack.syn && synack.ack == Some(g.snd_nxt), "{synack:?}");
    g.learn_syn(&synack);
    g.ack(&mut h);
    // The socket's writable event comes later and sends nothing more.
    h.turn(Duration::from_millis(50));
    assert!(h.queue.is_empty(), "{:?}", h.queue);
    assert_eq!(h.table.len(), 1);
}

/// Segments of two connections interleaved reach their own host sockets
/// (the table's shortcut for the flow the last segment found checks the
/// key), and a segment of a reset connection whose slot a new one took is
/// answered with a RST instead of reaching the new connection.
#[test]
fn interleaved_connections_and_a_reused_slot_keep_their_segments_apart() {
    let mut h = Harness::new(config(1500));
    let (l1, r1) = loopback_server();
    let (l2, r2) = loopback_server();
    let mut g1 = Guest::new(40100, r1);
    let mut g2 = Guest::new(40101, r2);
    g1.connect(&mut h);
    let (mut s1, _) = l1.accept().unwrap();
    g2.connect(&mut h);
    let (mut s2, _) = l2.accept().unwrap();
    for (first, msg) in [
        (true, b"one-a"),
        (false, b"two-a"),
        (true, b"one-b"),
        (false, b"two-b"),
    ] {
        let g = if first { &mut g1 } else { &mut g2 };
        let r = g.repr(TcpControl::Psh, g.snd_nxt, msg);
        g.send(&mut h, &r);
        g.snd_nxt += 5;
    }
    for (s, want) in [(&mut s1, b"one-aone-b"), (&mut s2, b"two-atwo-b")] {
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, want);
    }
    // g1 resets; a new connection to the same server takes its slot.
    let r = g1.repr(TcpControl::Rst, g1.snd_nxt, &[]);
    g1.send(&mut h, &r);
    assert_eq!(h.table.len(), 1);
    h.queue.clear();
    let mut g3 = Guest::new(40102, r1);
    g3.connect(&mut h);
    let (mut s3, _) = l1.accept().unwrap();
    h.queue.clear();
    let r = g1.repr(TcpControl::Psh, g1.snd_nxt, b"stale");
    g1.send(&mut h, &r);
    let s = h.next();
    assert!(
        s.rst && s.dst == g1.me,
        "RST to the old connection, got {s:?}"
    );
    s3.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 8];
    let err = s3
        .read(&mut buf)
        .expect_err("nothing reached the new connection");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

/// A connected socket is registered for readable events only: after the
/// handshake nothing wakes the loop for it (a writable event at
/// registration would be one more turn per connection), until the host
/// speaks.
#[test]
fn a_connected_socket_wakes_the_loop_only_when_the_host_speaks() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let mut g = Guest::new(40060, remote);
    g.connect(&mut h);
    let (mut s, _) = listener.accept().unwrap();
    h.poll
        .poll(&mut h.events, Some(Duration::from_millis(200)))
        .unwrap();
    let woke: Vec<_> = h.events.iter().map(|e| format!("{e:?}")).collect();
    assert!(woke.is_empty(), "events for an idle connection: {woke:?}");
    s.write_all(b"hi").unwrap();
    let seg = h.next();
    assert_eq!(seg.payload, b"hi");
}

/// A server that answers and closes: its data and its FIN reach the guest
/// in one segment. The guest's FIN then ends the flow at once, and the
/// host sees an orderly close (EOF, no reset) after reading everything.
#[test]
fn host_eof_rides_on_the_last_data_segment() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let mut g = Guest::new(40061, remote);
    g.connect(&mut h);
    let (mut s, _) = listener.accept().unwrap();
    let r = g.repr(TcpControl::Psh, g.snd_nxt, b"GET\n");
    g.send(&mut h, &r);
    g.snd_nxt += 4;
    let mut req = [0u8; 4];
    s.read_exact(&mut req).unwrap();
    assert_eq!(&req, b"GET\n");
    s.write_all(b"ok\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut seg = h.next();
    while seg.payload.is_empty() && !seg.fin {
        // The ACK of the request.
        seg = h.next();
    }
    assert_eq!(seg.payload, b"ok\n");
    assert!(seg.fin, "FIN on the data segment: {seg:?}");
    assert!(h.queue.is_empty(), "nothing after it: {:?}", h.queue);
    g.rcv_nxt = seg.seq.wrapping_add(3 + 1);
    g.fin(&mut h);
    let last = h.queue.pop_front().expect("the guest's FIN acknowledged");
    assert_eq!(last.ack, Some(g.snd_nxt));
    assert!(h.table.is_empty(), "the flow ended with the guest's FIN");
    s.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("an orderly close, not a reset");
    assert!(rest.is_empty());
    let st = h.table.stats();
    assert_eq!((st.bytes_to_host, st.bytes_to_guest, st.closed), (4, 3, 1));
}

/// A server that speaks first (a banner) and closes before the guest's
/// handshake completes: the socket's early event is remembered, so the
/// guest's ACK brings the banner and the FIN at once.
#[test]
fn data_from_a_server_that_speaks_first_leaves_with_the_handshake_ack() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let mut g = Guest::new(40062, remote);
    g.syn(&mut h);
    let synack = h.queue.pop_front().expect("SYN-ACK");
    g.learn_syn(&synack);
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"220 hello\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    h.run_until(|h| {
        h.table
            .flows
            .iter()
            .flatten()
            .any(|f| f.flags & HOST_READABLE != 0)
    });
    assert!(h.queue.is_empty(), "nothing before the handshake completes");
    g.ack(&mut h);
    let seg = h
        .queue
        .pop_front()
        .expect("the banner, with no event-loop turn");
    assert_eq!(seg.payload, b"220 hello\r\n");
    assert!(seg.fin, "{seg:?}");
}

/// The guest's segments `data` cut at `size` bytes from `g.snd_nxt` on,
/// plain (no PSH), the last one with `last` (FIN or none); moves
/// `g.snd_nxt` past them.
fn segments<'a>(g: &mut Guest, data: &'a [u8], size: usize, last: TcpControl) -> Vec<TcpRepr<'a>> {
    let n = data.len().div_ceil(size);
    let mut reprs = Vec::new();
    for (i, chunk) in data.chunks(size).enumerate() {
        let control = if i + 1 == n { last } else { TcpControl::None };
        reprs.push(g.repr(control, g.snd_nxt, chunk));
        g.snd_nxt = g.snd_nxt.wrapping_add(chunk.len() as u32);
    }
    if last == TcpControl::Fin {
        g.snd_nxt = g.snd_nxt.wrapping_add(1);
    }
    reprs
}

/// A loopback server that reads everything until EOF on its own thread.
fn reading_server() -> (SocketAddrV4, thread::JoinHandle<Vec<u8>>) {
    let (listener, remote) = loopback_server();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    (remote, server)
}

#[test]
fn in_order_segments_of_one_batch_leave_in_one_write_with_one_ack() {
    let mut h = Harness::new(config(1500));
    let (remote, server) = reading_server();
    let mut g = Guest::new(40080, remote);
    g.connect(&mut h);
    let data = pattern(40 * 1460, 4);
    let writes = h.table.stats().writes_to_host;
    let reprs = segments(&mut g, &data, 1460, TcpControl::None);
    h.inject_batch(g.me, g.peer, &reprs);
    assert_eq!(
        h.table.stats().writes_to_host - writes,
        1,
        "one send for the batch"
    );
    let acks: Vec<_> = h.queue.drain(..).collect();
    assert_eq!(acks.len(), 1, "one ACK for the batch: {acks:?}");
    assert_eq!(acks[0].ack, Some(g.snd_nxt), "the ACK covers every byte");
    assert!(acks[0].payload.is_empty());
    // Segments one per batch (a tap's or vhost-user's single frames) still
    // work, one send each.
    let more = pattern(3 * 1460, 5);
    for r in segments(&mut g, &more, 1460, TcpControl::None) {
        g.send(&mut h, &r);
    }
    assert_eq!(h.table.stats().writes_to_host - writes, 4);
    g.fin(&mut h);
    let got = server.join().unwrap();
    assert!(got.len() == data.len() + more.len() && got == [data, more].concat());
}

#[test]
fn a_partial_write_of_a_batch_acknowledges_only_what_the_socket_took() {
    let mut h = Harness::new(config(1500));
    // A receiver with small buffers that reads only when told: the
    // host socket cannot take the whole batch.
    let (port, go, server) = gated_small_receiver();
    let mut g = Guest::new(40081, SocketAddrV4::new(HOST_IP, port));
    g.connect(&mut h);
    shrink_send_buffer(&h);
    let start = g.snd_nxt;
    let data = pattern(150 * 1460, 6);
    let reprs = segments(&mut g, &data, 1460, TcpControl::None);
    h.inject_batch(g.me, g.peer, &reprs);
    let st = h.table.stats();
    assert_eq!(st.partial_writes, 1, "{st:?}");
    let acks: Vec<_> = h.queue.drain(..).collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    let acked = acks[0].ack.unwrap().wrapping_sub(start) as usize;
    assert!(
        acked > 0 && acked < data.len(),
        "acked {acked} of {}",
        data.len()
    );
    assert_eq!(acked as u64, st.bytes_to_host);
    // The guest goes back to the ACK and sends the rest: the host gets
    // every byte once, so the ACK was exactly what the socket took.
    go.send(()).unwrap();
    g.snd_una = acks[0].ack.unwrap();
    g.snd_nxt = g.snd_una;
    g.note_ack(&acks[0]);
    g.send_all(&mut h, &data[acked..]);
    g.fin(&mut h);
    let got = server.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "data arrived intact");
}

#[test]
fn a_gap_in_a_batch_sends_what_came_before_and_a_fin_in_a_batch_closes() {
    let mut h = Harness::new(config(1500));
    let (remote, server) = reading_server();
    let mut g = Guest::new(40082, remote);
    g.connect(&mut h);
    let start = g.snd_nxt;
    let data = pattern(6 * 1000, 7);
    let all = segments(&mut g, &data, 1000, TcpControl::Fin);
    let writes = h.table.stats().writes_to_host;
    // Segments 0, 1, then 3 and 4 (2 lost on the way).
    let first = [all[0], all[1], all[3], all[4]];
    h.inject_batch(g.me, g.peer, &first);
    assert_eq!(h.table.stats().writes_to_host - writes, 1);
    assert_eq!(h.table.stats().out_of_order, 2);
    let acks: Vec<_> = h.queue.drain(..).collect();
    assert!(!acks.is_empty());
    for a in &acks {
        assert_eq!(
            a.ack,
            Some(start + 2000),
            "only the bytes before the gap: {acks:?}"
        );
    }
    // The guest retransmits from the gap; the batch ends with its FIN.
    h.inject_batch(g.me, g.peer, &all[2..]);
    assert_eq!(
        h.table.stats().writes_to_host - writes,
        2,
        "the rest in one send"
    );
    let acks: Vec<_> = h.queue.drain(..).filter(|s| !s.fin).collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].ack, Some(g.snd_nxt), "data and FIN acknowledged");
    let got = server.join().unwrap();
    assert!(got == data, "data arrived intact, then EOF");
}

#[test]
fn gathering_is_bounded_by_its_buffer_and_segment_size() {
    // More than RX_BATCH_BYTES in one batch: two sends.
    let mut h = Harness::new(config(1500));
    let (remote, server) = reading_server();
    let mut g = Guest::new(40083, remote);
    g.connect(&mut h);
    let data = pattern(200 * 1460, 8);
    assert!(data.len() > RX_BATCH_BYTES && data.len() < 2 * RX_BATCH_BYTES);
    let writes = h.table.stats().writes_to_host;
    let reprs = segments(&mut g, &data, 1460, TcpControl::Fin);
    h.inject_batch(g.me, g.peer, &reprs);
    assert_eq!(h.table.stats().writes_to_host - writes, 2);
    assert!(server.join().unwrap() == data);
    // Segments over GATHER_MAX_SEGMENT go straight from their frame.
    let mut h = Harness::new(config(65520));
    let (remote, server) = reading_server();
    let mut g = Guest::new(40084, remote);
    g.connect(&mut h);
    let size = GATHER_MAX_SEGMENT + 1;
    let data = pattern(3 * size, 9);
    let writes = h.table.stats().writes_to_host;
    let reprs = segments(&mut g, &data, size, TcpControl::None);
    h.inject_batch(g.me, g.peer, &reprs);
    assert_eq!(h.table.stats().writes_to_host - writes, 3);
    let acks: Vec<_> = h.queue.drain(..).collect();
    assert_eq!(acks.last().and_then(|a| a.ack), Some(g.snd_nxt));
    g.fin(&mut h);
    assert!(server.join().unwrap() == data);
}

#[test]
fn small_segments_toward_the_guest_are_peeked_together() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let data = pattern(40 * 1460, 12);
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let written = data.clone();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        wait.recv().unwrap();
        s.write_all(&written).unwrap();
        s
    });
    let mut g = Guest::new(40085, remote);
    g.connect(&mut h);
    let peeks = h.table.stats().peeks_from_host;
    go.send(()).unwrap();
    // Everything is in the host socket before the stack looks.
    let host = server.join().unwrap();
    let got = g.receive(&mut h, data.len(), 0);
    assert!(got == data, "data arrived intact");
    let used = h.table.stats().peeks_from_host - peeks;
    assert!(used <= 2, "40 segments took {used} peeks");
    drop(host);
    let rest = g.receive(&mut h, usize::MAX, 0);
    assert!(rest.is_empty());
}

#[test]
fn segments_in_the_links_buffer_leave_in_place_in_one_sendmsg() {
    for (mtu, size, count) in [(1500, 1460, 40), (65520, 65480, 4)] {
        let mut h = Harness::new(config(mtu));
        let (remote, server) = reading_server();
        let mut g = Guest::new(40090, remote);
        g.connect(&mut h);
        let data = pattern(count * size, 11);
        let writes = h.table.stats().writes_to_host;
        let reprs = segments(&mut g, &data, size, TcpControl::None);
        h.inject_in_place(g.me, g.peer, &reprs, None);
        let st = h.table.stats();
        assert_eq!(
            st.writes_to_host - writes,
            1,
            "MTU {mtu}: one sendmsg: {st:?}"
        );
        assert_eq!(st.partial_writes, 0);
        assert!(
            h.table.sh.rx.buf.is_empty(),
            "MTU {mtu}: nothing copied into the gathering buffer"
        );
        let acks: Vec<_> = h.queue.drain(..).collect();
        assert_eq!(acks.len(), 1, "MTU {mtu}: one ACK: {acks:?}");
        assert_eq!(acks[0].ack, Some(g.snd_nxt));
        g.fin(&mut h);
        let got = server.join().unwrap();
        assert!(got == data, "MTU {mtu}: the pieces arrived in order");
    }
}

#[test]
fn a_sendmsg_that_takes_part_of_the_pieces_acknowledges_that_and_the_rest_follows_in_order() {
    let mut h = Harness::new(config(1500));
    let (port, go, server) = gated_small_receiver();
    let mut g = Guest::new(40091, SocketAddrV4::new(HOST_IP, port));
    g.connect(&mut h);
    shrink_send_buffer(&h);
    let start = g.snd_nxt;
    // Odd sizes, so the socket's cut falls inside a piece.
    let data = pattern(150 * 1001, 12);
    let reprs = segments(&mut g, &data, 1001, TcpControl::None);
    h.inject_in_place(g.me, g.peer, &reprs, None);
    let st = h.table.stats();
    assert_eq!(st.partial_writes, 1, "{st:?}");
    assert_eq!(st.writes_to_host, 1, "{st:?}");
    let acks: Vec<_> = h.queue.drain(..).collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    let acked = acks[0].ack.unwrap().wrapping_sub(start) as usize;
    assert!(acked > 0 && acked < data.len(), "acked {acked}");
    assert_eq!(
        acked as u64, st.bytes_to_host,
        "the ACK is what the socket took"
    );
    // The guest resends from the ACK, again as in-place batches.
    go.send(()).unwrap();
    g.note_ack(&acks[0]);
    g.snd_nxt = g.snd_una;
    let mut off = acked;
    while off < data.len() {
        let end = (off + 40 * 1001).min(data.len());
        g.snd_nxt = start.wrapping_add(off as u32);
        let reprs = segments(&mut g, &data[off..end], 1001, TcpControl::None);
        h.inject_in_place(g.me, g.peer, &reprs, None);
        let mut acked_to = start.wrapping_add(off as u32);
        while let Some(s) = h.queue.pop_front() {
            if let Some(a) = s.ack {
                if seq_gt(a, acked_to) {
                    acked_to = a;
                }
            }
        }
        if acked_to == start.wrapping_add(off as u32) {
            h.turn(Duration::from_millis(5));
        }
        off = acked_to.wrapping_sub(start) as usize;
    }
    g.snd_nxt = start.wrapping_add(data.len() as u32);
    g.fin(&mut h);
    let got = server.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "every byte once, in order");
}

#[test]
fn a_batch_ended_with_another_buffer_sends_and_acknowledges_nothing() {
    let mut h = Harness::new(config(1500));
    let (remote, server) = reading_server();
    let mut g = Guest::new(40092, remote);
    g.connect(&mut h);
    let start = g.snd_nxt;
    let data = pattern(10 * 1460, 13);
    let reprs = segments(&mut g, &data, 1460, TcpControl::None);
    // A copy of the buffer: same bytes, another place (the link changed
    // its buffer before the batch ended).
    let other = vec![0u8; 10 * (1460 + 60)];
    h.inject_in_place(g.me, g.peer, &reprs, Some(&other));
    assert_eq!(h.table.stats().bytes_to_host, 0);
    for s in h.queue.drain(..) {
        assert_eq!(s.ack, Some(start), "nothing acknowledged: {s:?}");
    }
    // The guest retransmits; they arrive once.
    g.snd_nxt = start;
    let reprs = segments(&mut g, &data, 1460, TcpControl::Fin);
    h.inject_in_place(g.me, g.peer, &reprs, None);
    assert!(server.join().unwrap() == data);
}

#[test]
fn in_place_batches_are_bounded_by_their_pieces_and_do_not_mix_with_copies() {
    let mut h = Harness::new(config(1500));
    let (remote, server) = reading_server();
    let mut g = Guest::new(40093, remote);
    g.connect(&mut h);
    // More pieces than one sendmsg takes: two.
    let data = pattern((RX_BATCH_PIECES + 44) * 100, 14);
    let writes = h.table.stats().writes_to_host;
    let reprs = segments(&mut g, &data, 100, TcpControl::None);
    h.inject_in_place(g.me, g.peer, &reprs, None);
    assert_eq!(h.table.stats().writes_to_host - writes, 2);
    h.queue.clear();
    // A copied segment (a frame from a link that reuses its buffer), then
    // pieces in place: the copy leaves first, then the pieces, in order.
    let more = pattern(5 * 1000, 15);
    let reprs = segments(&mut g, &more, 1000, TcpControl::None);
    let (me, peer) = (g.me, g.peer);
    let feed = |h: &mut Harness, seg: &[u8], batch: &[u8]| {
        h.table.on_guest_segment(
            &mut ctx!(h),
            (*me.ip()).into(),
            (*peer.ip()).into(),
            seg,
            RxChecksum::Unverified,
            batch,
        )
    };
    let copied = encode(g.me, g.peer, &reprs[0]);
    feed(&mut h, &copied, &[]);
    let buf: Vec<u8> = reprs[1..]
        .iter()
        .flat_map(|r| encode(g.me, g.peer, r))
        .collect();
    let seg_len = buf.len() / 4;
    for k in 0..4 {
        feed(&mut h, &buf[k * seg_len..(k + 1) * seg_len], &buf);
    }
    h.table.end_guest_batch(&mut ctx!(h), &buf);
    assert_eq!(h.table.stats().writes_to_host - writes, 4);
    h.drain();
    let acked = h.queue.drain(..).filter_map(|s| s.ack).next_back();
    assert_eq!(acked, Some(g.snd_nxt));
    // Pieces in place, then a segment from elsewhere within the same batch
    // (no link does that: the attachment ends a batch per buffer): the
    // pieces cannot be sent from a buffer that is not at hand, so they are
    // dropped unacknowledged; the guest's retransmission brings them.
    let last = pattern(5 * 1000, 16);
    let start = g.snd_nxt;
    let reprs = segments(&mut g, &last, 1000, TcpControl::None);
    let buf: Vec<u8> = reprs[..4]
        .iter()
        .flat_map(|r| encode(g.me, g.peer, r))
        .collect();
    for k in 0..4 {
        feed(&mut h, &buf[k * seg_len..(k + 1) * seg_len], &buf);
    }
    feed(&mut h, &encode(g.me, g.peer, &reprs[4]), &[]);
    h.table.end_guest_batch(&mut ctx!(h), &[]);
    assert_eq!(h.table.stats().writes_to_host - writes, 4);
    h.drain();
    assert!(h.queue.drain(..).all(|s| s.ack == Some(start)));
    g.snd_nxt = start;
    let reprs = segments(&mut g, &last, 1000, TcpControl::None);
    h.inject_in_place(g.me, g.peer, &reprs, None);
    assert_eq!(h.table.stats().writes_to_host - writes, 5);
    g.fin(&mut h);
    assert!(server.join().unwrap() == [data, more, last].concat());
}

#[test]
fn segments_toward_the_guest_are_peeked_several_at_once_within_the_window() {
    // MTU 65520 without offload: the guest's MSS sets the segment size,
    // its window how much goes before its first ACK.
    let mut h = Harness::new(config(65520));
    let (listener, remote) = loopback_server();
    // More than the window, less than the host socket's receive buffer
    // holds (so all of the window's worth is there when the stack looks).
    let data = pattern(2 * 65000, 13);
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let written = data.clone();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        wait.recv().unwrap();
        s.write_all(&written).unwrap();
        s
    });
    let mut g = Guest::new(40087, remote);
    g.window = (110_000u32 >> g.wscale) as u16;
    let window = u32::from(g.window) << g.wscale;
    let mut syn = g.repr(TcpControl::Syn, g.snd_nxt, &[]);
    syn.ack_number = None;
    syn.window_scale = Some(g.wscale);
    syn.max_seg_size = Some(65000);
    g.send(&mut h, &syn);
    g.snd_nxt += 1;
    g.snd_una = g.snd_nxt;
    let synack = h.next();
    assert!(synack.syn, "{synack:?}");
    g.learn_syn(&synack);
    g.ack(&mut h);
    let peeks = h.table.stats().peeks_from_host;
    go.send(()).unwrap();
    // Everything is in the host socket before the stack looks.
    let host = server.join().unwrap();
    h.run_until(|h| h.queue.iter().any(|s| !s.payload.is_empty()));
    let burst: Vec<usize> = h.queue.iter().map(|s| s.payload.len()).collect();
    assert_eq!(
        burst,
        [65000, window as usize - 65000],
        "the window's worth, the last segment cut to it"
    );
    assert_eq!(
        h.table.stats().peeks_from_host - peeks,
        1,
        "both segments in one peek"
    );
    let got = g.receive(&mut h, data.len(), 0);
    assert!(got == data, "data arrived intact");
    drop(host);
    let rest = g.receive(&mut h, usize::MAX, 0);
    assert!(rest.is_empty());
}

#[test]
fn a_batch_of_guest_acks_costs_one_discard_and_one_peek() {
    let mut h = Harness::new(config(1500));
    let (listener, remote) = loopback_server();
    let data = pattern(40 * 1460, 14);
    let written = data.clone();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&written).unwrap();
        s
    });
    let mut g = Guest::new(40088, remote);
    // Room for 20 segments before the first ACK.
    g.window = ((20 * 1460u32) >> g.wscale) as u16;
    g.connect(&mut h);
    let host = server.join().unwrap();
    h.run_until(|h| h.queue.iter().filter(|s| !s.payload.is_empty()).count() >= 2);
    // Take the first burst in, then acknowledge it as Linux would: one
    // ACK per two segments, all in one batch of the link.
    let mut acks = Vec::new();
    let mut got = Vec::new();
    while let Some(s) = h.queue.pop_front() {
        if s.payload.is_empty() {
            continue;
        }
        assert_eq!(s.seq, g.rcv_nxt);
        got.extend_from_slice(&s.payload);
        g.rcv_nxt = g.rcv_nxt.wrapping_add(s.payload.len() as u32);
        acks.push(g.rcv_nxt);
    }
    assert!(acks.len() >= 4, "a burst of segments: {}", acks.len());
    let reprs: Vec<_> = acks
        .iter()
        .skip(1)
        .step_by(2)
        .map(|&ack| {
            let mut r = g.repr(TcpControl::None, g.snd_nxt, &[]);
            r.ack_number = Some(TcpSeqNumber(ack as i32));
            r
        })
        .collect();
    let (discards, peeks) = (h.table.stats().discards, h.table.stats().peeks_from_host);
    h.inject_batch(g.me, g.peer, &reprs);
    assert_eq!(
        (
            h.table.stats().discards - discards,
            h.table.stats().peeks_from_host - peeks
        ),
        (1, 1),
        "{} ACKs in one batch",
        reprs.len()
    );
    // What they allowed went out, after what the guest has: the rest of
    // the transfer arrives intact.
    got.extend(g.receive(&mut h, data.len() - got.len(), 0));
    assert!(got == data, "data arrived intact");
    drop(host);
    g.fin(&mut h);
    let rest = g.receive(&mut h, usize::MAX, 0);
    assert!(rest.is_empty());
}

/// Bytes of payload queued toward the guest.
fn queued_payload(h: &Harness) -> usize {
    h.queue.iter().map(|s| s.payload.len()).sum()
}

/// A guest connection whose window (45 << 7 = 5760 bytes before each
/// ACK) the host's `data` overfills: returns once the window's worth is
/// queued toward the guest and the rest waits in the host socket. The
/// guest, the host's end and the room.
fn waiting_for_room(h: &mut Harness, port: u16, data: &[u8]) -> (Guest, StdStream, usize) {
    let (listener, remote) = loopback_server();
    let mut g = Guest::new(port, remote);
    g.window = 45;
    let room = 45usize << g.wscale;
    g.connect(h);
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(data).unwrap();
    h.run_until(|h| queued_payload(h) >= room);
    (g, s, room)
}

/// While the flow knows of host bytes the guest has no room for yet, a
/// segment the host adds wakes nobody (the loop would only count it);
/// when the known bytes run out the flow asks the socket itself, so all
/// of it arrives. Once the socket is empty, new data wakes the loop
/// again; the host's EOF is reported even while the flow waits for room.
#[test]
fn host_data_the_guest_has_no_room_for_yet_wakes_nobody() {
    fn flow_events(h: &Harness) -> Vec<String> {
        h.events.iter().map(|e| format!("{e:?}")).collect()
    }
    let mut h = Harness::new(config(1500));
    let first = pattern(8 * 1460, 15);
    let (mut g, mut s, room) = waiting_for_room(&mut h, 40089, &first);
    assert_eq!(queued_payload(&h), room, "the window's worth");
    let more = pattern(20 * 1460, 16);
    s.write_all(&more).unwrap();
    h.turn(Duration::from_millis(200));
    assert!(
        flow_events(&h).is_empty(),
        "the host's data woke a flow that cannot send: {:?}",
        flow_events(&h)
    );
    let got = g.receive(&mut h, first.len() + more.len(), 0);
    assert!(got == [first, more].concat(), "data arrived intact");
    h.turn(Duration::from_millis(100));
    assert!(h.queue.iter().all(|s| s.payload.is_empty()));
    h.queue.clear();

    // Drained: the socket reports new data again.
    s.write_all(b"tail").unwrap();
    h.turn(Duration::from_millis(200));
    assert_eq!(flow_events(&h).len(), 1, "new data wakes the loop");
    assert_eq!(g.receive(&mut h, 4, 0), b"tail");

    // Waiting for room again, the host closes: its EOF is reported.
    let last = pattern(8 * 1460, 17);
    s.write_all(&last).unwrap();
    h.run_until(|h| queued_payload(h) >= room);
    s.shutdown(Shutdown::Write).unwrap();
    h.turn(Duration::from_millis(200));
    assert_eq!(flow_events(&h).len(), 1, "the EOF wakes the loop");
    assert!(h.every_flow_has(HOST_EOF), "and is known to the flow");
    let got = g.receive(&mut h, usize::MAX, 0);
    assert!(got == last, "the rest arrived intact, up to the FIN");
    g.fin(&mut h);
    h.run_until(|h| h.table.is_empty());
}

/// A host that resets while the flow waits for the guest's room (its
/// readable events parked): the reset still reaches the guest at once,
/// without the guest acknowledging anything.
#[test]
fn a_host_reset_reaches_a_guest_that_has_no_room() {
    let mut h = Harness::new(config(1500));
    let (_, s, _) = waiting_for_room(&mut h, 40090, &pattern(8 * 1460, 18));
    assert!(
        h.every_flow_has(READ_PARKED),
        "the flow waits for room with its readable events parked"
    );
    h.queue.clear();
    SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let rst = h.next();
    assert!(rst.rst, "a RST, not {rst:?}");
    h.run_until(|h| h.table.is_empty());
}
