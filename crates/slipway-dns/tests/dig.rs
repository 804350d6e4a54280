//! Real-peer proof: `dig` (dnsutils) queries a tiny test-only UDP server on 127.0.0.1
//! that answers with a `LocalZone` and relays the rest, with `set_query_id`/`query_id`,
//! to a second test server on 127.0.0.1 standing in for the upstream resolver.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use slipway_dns::{error_response, query_id, set_query_id, Answer, LocalZone, RCODE_SERVFAIL};

/// Serves `zone` on a fresh 127.0.0.1 port until `stop`; `upstream` receives forwarded
/// queries (none: SERVFAIL, as for a host without nameservers). Returns the port.
fn serve(
    zone: LocalZone,
    upstream: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> (u16, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Only so the loop notices `stop`; nothing is timed.
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut next_id: u16 = 0x7000;
        while !stop.load(Ordering::SeqCst) {
            let Ok((len, client)) = socket.recv_from(&mut buf) else {
                continue;
            };
            match zone.answer(&buf[..len]) {
                Answer::Local(resp) | Answer::Refuse(resp) => {
                    socket.send_to(&resp, client).unwrap();
                }
                Answer::Forward => {
                    let Some(upstream) = upstream else {
                        let resp = error_response(&buf[..len], RCODE_SERVFAIL).unwrap();
                        socket.send_to(&resp, client).unwrap();
                        continue;
                    };
                    // Relay under our own ID, as the stack does, and restore the client's.
                    let query = &mut buf[..len];
                    let client_id = query_id(query).unwrap();
                    next_id = next_id.wrapping_add(1);
                    assert!(set_query_id(query, next_id));
                    relay.send_to(query, upstream).unwrap();
                    let mut reply = [0u8; 1500];
                    let (n, _) = relay.recv_from(&mut reply).expect("upstream answers");
                    assert_eq!(query_id(&reply[..n]), Some(next_id));
                    set_query_id(&mut reply[..n], client_id);
                    socket.send_to(&reply[..n], client).unwrap();
                }
                Answer::Ignore => {}
            }
        }
    });
    (port, thread)
}

/// Runs dig and returns its output (header comments and answer section).
fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["+tries=1", "+time=5", "+noall", "+comments", "+answer"])
        .args(args)
        .output()
        .expect("run dig (dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {args:?} failed: {text}");
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr)).to_lowercase();
    assert!(
        !all.contains("warning") && !all.contains("malformed") && !all.contains("mismatch"),
        "dig complained: {all}"
    );
    text
}

/// The answer records as (name, type, data).
fn answers(output: &str) -> Vec<(String, String, String)> {
    output
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[3].to_string(), f[4..].join(" "))
        })
        .collect()
}

fn status(output: &str) -> &str {
    let at = output.find("status: ").expect("dig printed a header") + 8;
    output[at..].split(',').next().unwrap()
}

#[test]
fn dig_gets_local_answers_and_forwarded_ones() {
    let stop = Arc::new(AtomicBool::new(false));

    let mut upstream_zone = LocalZone::new(Some("example.org")).unwrap();
    upstream_zone
        .add_host(
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            "upstream.example.org",
        )
        .unwrap();
    upstream_zone.set_local_only(true);
    let (upstream_port, upstream) = serve(upstream_zone, None, stop.clone());

    let mut zone = LocalZone::new(Some("example.test")).unwrap();
    zone.add_host(IpAddr::V4(Ipv4Addr::new(192, 168, 122, 10)), "web")
        .unwrap();
    zone.add_host("fd00::10".parse().unwrap(), "web").unwrap();
    zone.set_lease_hosts([(
        &slipway_dns::HostName::from_client(b"guest1").unwrap(),
        Ipv4Addr::new(192, 168, 122, 50),
    )]);
    zone.set_local_only(true);
    let upstream_addr = SocketAddr::from(([127, 0, 0, 1], upstream_port));
    let (port, front) = serve(zone, Some(upstream_addr), stop.clone());

    let out = dig(port, &["web.example.test", "A"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(out.contains("flags: qr aa rd ra"), "{out}");
    assert_eq!(
        answers(&out),
        vec![(
            "web.example.test.".into(),
            "A".into(),
            "192.168.122.10".into()
        )]
    );

    let out = dig(port, &["WEB.example.test", "AAAA"]);
    assert_eq!(
        answers(&out),
        vec![("WEB.example.test.".into(), "AAAA".into(), "fd00::10".into())]
    );

    let out = dig(port, &["guest1.example.test"]);
    assert_eq!(
        answers(&out),
        vec![(
            "guest1.example.test.".into(),
            "A".into(),
            "192.168.122.50".into()
        )]
    );

    let out = dig(port, &["-x", "192.168.122.10"]);
    assert_eq!(
        answers(&out),
        vec![(
            "10.122.168.192.in-addr.arpa.".into(),
            "PTR".into(),
            "web.example.test.".into()
        )]
    );
    let out = dig(port, &["-x", "fd00::10"]);
    assert_eq!(answers(&out)[0].2, "web.example.test.");

    // Known name, no such type: NODATA. Unknown name in the local-only domain: NXDOMAIN.
    let out = dig(port, &["web.example.test", "MX"]);
    assert_eq!((status(&out), answers(&out).len()), ("NOERROR", 0));
    let out = dig(port, &["nothere.example.test"]);
    assert_eq!(status(&out), "NXDOMAIN");

    // Not local: relayed to the upstream, answer back under dig's own ID.
    let out = dig(port, &["upstream.example.org"]);
    assert_eq!(status(&out), "NOERROR");
    assert_eq!(
        answers(&out),
        vec![(
            "upstream.example.org.".into(),
            "A".into(),
            "203.0.113.7".into()
        )]
    );
    let out = dig(port, &["missing.example.org"]);
    assert_eq!(status(&out), "NXDOMAIN");

    // No upstream at all (an offline host): SERVFAIL, not a timeout.
    let (offline_port, offline) = serve(LocalZone::new(None).unwrap(), None, stop.clone());
    let out = dig(offline_port, &["www.example.com"]);
    assert_eq!(status(&out), "SERVFAIL");

    stop.store(true, Ordering::SeqCst);
    offline.join().unwrap();
    front.join().unwrap();
    upstream.join().unwrap();
}
