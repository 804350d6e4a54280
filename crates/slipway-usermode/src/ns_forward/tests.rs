//! The relays on this process's own loopback: the "namespace" sockets are
//! bound here too (the end-to-end tests against pasta use a real
//! namespace: `crates/slipway/tests/passt_twin.rs`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use mio::{Events, Poll};

use super::*;
use crate::iface::decode_token;

/// Binds in this process's own network namespace.
struct Here;

impl LoopbackSockets for Here {
    fn bind(&self, protocol: ForwardProtocol, loopback: IpAddr, port: u16) -> io::Result<OwnedFd> {
        let addr = SocketAddr::new(loopback, port);
        Ok(match protocol {
            ForwardProtocol::Tcp => {
                let l = TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                l.into()
            }
            ForwardProtocol::Udp => {
                let s = UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                s.into()
            }
        })
    }

    fn connect(&self, loopback: IpAddr, port: u16) -> io::Result<OwnedFd> {
        let s = mio::net::TcpStream::connect(SocketAddr::new(loopback, port))?;
        Ok(std::net::TcpStream::from(OwnedFd::from(s)).into())
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spec(tcp: Vec<(u16, u16)>, udp: Vec<(u16, u16)>) -> NsForwardSpec {
    NsForwardSpec {
        tcp,
        udp,
        auto: Vec::new(),
        loopbacks: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        splice_inbound: false,
        sockets: Arc::new(Here),
    }
}

/// Runs the event loop of `fwd` until `client` (run on a thread) returns.
fn drive<T: Send + 'static>(
    fwd: &mut NsForward,
    poll: &mut Poll,
    client: impl FnOnce() -> T + Send + 'static,
) -> T {
    let client = std::thread::spawn(client);
    let mut events = Events::with_capacity(64);
    let end = Instant::now() + Duration::from_secs(60);
    while !client.is_finished() {
        assert!(Instant::now() < end, "the client did not finish");
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        for event in events.iter() {
            let (kind, index) = decode_token(event.token()).unwrap();
            fwd.on_event(poll.registry(), kind, index, event, Instant::now());
        }
    }
    client.join().unwrap()
}

#[test]
fn tcp_is_relayed_whole_with_half_closes_and_backpressure() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = server.local_addr().unwrap().port();
    // The server reads to end-of-file, slowly at first (so the relay
    // must hold back), then answers with 4 MiB and closes.
    let srv = std::thread::spawn(move || {
        let (mut c, _) = server.accept().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let down: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        c.write_all(&down).unwrap();
        got
    });
    let ns_port = free_tcp_port();
    let mut poll = Poll::new().unwrap();
    let mut fwd = NsForward::open(
        &spec(vec![(ns_port, host_port)], Vec::new()),
        poll.registry(),
    )
    .unwrap();
    assert_eq!(
        fwd.ns_ports(),
        BTreeSet::from([(ForwardProtocol::Tcp, ns_port)])
    );
    let up: Vec<u8> = (0..8 << 20).map(|i: u32| (i * 13 % 241) as u8).collect();
    let sent = up.clone();
    let down = drive(&mut fwd, &mut poll, move || {
        let mut c = TcpStream::connect(("127.0.0.1", ns_port)).unwrap();
        c.write_all(&sent).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut down = Vec::new();
        c.read_to_end(&mut down).unwrap();
        down
    });
    assert_eq!(srv.join().unwrap(), up, "the upload arrived whole");
    let want: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    assert!(down == want, "the download arrived whole");
    // Both directions ended: the relay is gone.
    drive(&mut fwd, &mut poll, || {
        std::thread::sleep(Duration::from_millis(100))
    });
    assert_eq!(fwd.tcp.count(), 0);
}

#[test]
fn connections_over_the_bound_are_reset() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = server.local_addr().unwrap().port();
    let _srv = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in server.incoming() {
            held.push(c.unwrap());
        }
    });
    let ns_port = free_tcp_port();
    let mut poll = Poll::new().unwrap();
    let mut fwd = NsForward::open(
        &spec(vec![(ns_port, host_port)], Vec::new()),
        poll.registry(),
    )
    .unwrap();
    fwd.tcp = tcp::Relays::new(2);
    let conns = drive(&mut fwd, &mut poll, move || {
        let conns: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", ns_port)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        conns
    });
    assert_eq!(fwd.tcp.count(), 2);
    let mut third = &conns[2];
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let err = third.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    // Nothing listens on the host port of an unforwarded one: reset too.
    let dead = free_tcp_port();
    let ns2 = free_tcp_port();
    fwd.add(poll.registry(), ForwardProtocol::Tcp, ns2, dead)
        .unwrap();
    let got = drive(&mut fwd, &mut poll, move || {
        let mut c = TcpStream::connect(("127.0.0.1", ns2)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.read(&mut [0u8; 1]).map_err(|e| e.kind())
    });
    assert!(
        matches!(got, Err(io::ErrorKind::ConnectionReset) | Ok(0)),
        "{got:?}"
    );
}

#[test]
fn udp_flows_answer_their_source_are_bounded_and_expire() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host_port = server.local_addr().unwrap().port();
    let _srv = std::thread::spawn(move || {
        let mut buf = [0u8; 100];
        loop {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let reply = format!("{}:{}", String::from_utf8_lossy(&buf[..n]), from.port());
            server.send_to(reply.as_bytes(), from).unwrap();
        }
    });
    let ns_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut poll = Poll::new().unwrap();
    let mut fwd = NsForward::open(
        &spec(Vec::new(), vec![(ns_port, host_port)]),
        poll.registry(),
    )
    .unwrap();
    fwd.udp = udp::Flows::new(2, Duration::from_millis(300));
    let answers = drive(&mut fwd, &mut poll, move || {
        (0..3)
            .map(|i| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.send_to(format!("q{i}").as_bytes(), ("127.0.0.1", ns_port))
                    .unwrap();
                let mut buf = [0u8; 100];
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!(
                    from.port(),
                    ns_port,
                    "the answer comes from the forwarded port"
                );
                let port = c.local_addr().unwrap().port();
                (String::from_utf8_lossy(&buf[..n]).into_owned(), port)
            })
            .collect::<Vec<_>>()
    });
    for (i, (answer, port)) in answers.iter().enumerate() {
        // Here the client's own port is taken (by the client): the flow
        // falls back to another one. (In a namespace the host's is free
        // and kept: passt_twin's `pasta_ns_forwards_match_debian_pasta`.)
        let (q, seen) = answer.split_once(':').unwrap();
        assert_eq!(q, format!("q{i}"));
        assert_ne!(seen, port.to_string());
    }
    // Three sources, two flows: the least recently used one gave way.
    assert_eq!(fwd.udp.count(), 2);
    let later = Instant::now() + Duration::from_millis(400);
    assert!(fwd.next_deadline().is_some());
    fwd.on_timer(poll.registry(), &BTreeSet::new(), later);
    assert_eq!(fwd.udp.count(), 0, "idle flows end");
}

/// A /proc/net/tcp-like table listening on `ports`.
fn table(ports: &[u16]) -> String {
    let mut text = String::from("  sl  local_address rem_address   st\n");
    for (i, port) in ports.iter().enumerate() {
        text += &format!("{i}: 0100007F:{port:04X} 00000000:0000 0A 0\n");
    }
    text
}

#[test]
fn auto_follows_the_table_within_the_limit_and_skips_the_stacks_forwards() {
    let dir = std::env::temp_dir().join(format!("slipway-ns-auto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tcp");
    let (a, b, c, fwd_port) = (
        free_tcp_port(),
        free_tcp_port(),
        free_tcp_port(),
        free_tcp_port(),
    );
    std::fs::write(&path, table(&[a, b, c, fwd_port])).unwrap();
    let poll = Poll::new().unwrap();
    let mut fwd = NsForward::open(&spec(Vec::new(), Vec::new()), poll.registry()).unwrap();
    fwd.tables = vec![(ForwardProtocol::Tcp, File::open(&path).unwrap())];
    fwd.auto_limit = 2;
    let stack_forwards = BTreeSet::from([(ForwardProtocol::Tcp, fwd_port)]);
    let now = Instant::now();
    fwd.scan(poll.registry(), &stack_forwards, now);
    let bound = |fwd: &NsForward| {
        fwd.ns_ports()
            .into_iter()
            .map(|(_, p)| p)
            .collect::<Vec<_>>()
    };
    // Two of a, b, c (the limit), never the stack's own forward.
    assert_eq!(
        bound(&fwd),
        [a, b, c]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(2)
            .collect::<Vec<_>>()
    );
    assert!(fwd.capped);
    assert_eq!(fwd.next_deadline(), Some(now + SCAN_INTERVAL));
    // The host's port goes away: so does the namespace's.
    std::fs::write(&path, table(&[c])).unwrap();
    fwd.scan(poll.registry(), &stack_forwards, now);
    assert_eq!(bound(&fwd), [c]);
    assert!(
        TcpStream::connect(("127.0.0.1", c)).is_ok(),
        "bound on loopback"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
