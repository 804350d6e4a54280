//! pasta's `-t auto` and `-u auto`: forward from the host the ports the
//! served namespace listens on, following them as they come and go.
//!
//! Theory of operation: a [`PortWatch`] holds the socket tables
//! (`/proc/PID/net/tcp`, `tcp6`, `udp`, `udp6`, proc(5)) of a process in
//! the served namespace, opened before the sandbox applies (procfs makes a
//! table's text anew for each read from offset 0, so one open descriptor
//! serves every later scan: a seek and a read, which the sandbox allows).
//! Every [`SCAN_INTERVAL`] (pasta's one second) the event loop calls
//! [`PortWatch::scan`]: the ports in state LISTEN (TCP) or bound and
//! unconnected (UDP, state 07) are compared with the forwards this watch
//! made. A port open in either table (IPv4 or IPv6) gets, as with pasta,
//! a forward per family served: from the same port on every host IPv4
//! address to the namespace's IPv4 address, and from every host IPv6
//! address (an `IPV6_V6ONLY` listener beside the IPv4 one) to the
//! namespace's IPv6 address (the one it was last seen using, else the
//! copied one); a port gone has its forwards removed (forwards made
//! otherwise are never touched). A host port that cannot be bound (taken
//! on the host) is logged once and tried again at later scans. At most
//! [`MAX_AUTO_FORWARDS`] forwards per protocol and family are made,
//! however many ports the namespace opens.
//!
//! The tables are parsed here by hand: the format is a fixed,
//! whitespace-separated text (a header line, then `sl local_address
//! rem_address st ...` with hexadecimal `ADDR:PORT` and state), and the
//! crates that read it bring a whole process-inspection library.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::Registry;

use crate::config::{ForwardProtocol, HostForward};
use crate::stack::Stack;

/// How often the tables are read (pasta's period).
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// The most forwards one watch makes per protocol.
pub const MAX_AUTO_FORWARDS: usize = 4096;

/// The most bytes read of one table per scan (a table of some 100 000
/// sockets); the rest is left out of that scan.
const MAX_TABLE_BYTES: u64 = 16 << 20;

/// The TCP state of a listening socket in the tables.
const TCP_LISTEN: u8 = 0x0a;
/// The state a bound, unconnected UDP socket shows (TCP_CLOSE).
const UDP_UNCONNECTED: u8 = 0x07;

/// What to watch: the namespace of a process, the protocols, and where
/// the forwards go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortWatchSpec {
    /// A process in the served network namespace.
    pub pid: u32,
    /// The protocols whose listening ports are forwarded.
    pub protocols: Vec<ForwardProtocol>,
    /// The namespace's IPv4 address (`None`: the stack's default guest).
    pub guest_addr: Option<IpAddr>,
    /// Whether ports are forwarded from the host's IPv4 addresses.
    pub ipv4: bool,
    /// Whether ports are forwarded from the host's IPv6 addresses, to the
    /// namespace's IPv6 address.
    pub ipv6: bool,
}

/// Where one family's forwards listen (the family's unspecified address)
/// and go (`None`: the stack's guest of that family).
#[derive(Clone, Copy, Debug)]
struct Family {
    host: IpAddr,
    guest: Option<IpAddr>,
}

/// Watches a namespace's listening ports and keeps forwards for them.
pub struct PortWatch {
    tables: Vec<(ForwardProtocol, File)>,
    families: Vec<Family>,
    /// The forwards this watch made, by protocol and host address.
    active: BTreeSet<(ForwardProtocol, SocketAddr)>,
    failed: BTreeSet<(ForwardProtocol, SocketAddr)>,
    capped: bool,
    limit: usize,
    next: Instant,
}

impl PortWatch {
    /// Opens the tables `spec` names.
    pub fn open(spec: &PortWatchSpec) -> std::io::Result<PortWatch> {
        let tables = open_tables(Some(spec.pid), &spec.protocols)?;
        let mut families = Vec::new();
        if spec.ipv4 {
            families.push(Family {
                host: Ipv4Addr::UNSPECIFIED.into(),
                guest: spec.guest_addr,
            });
        }
        if spec.ipv6 {
            families.push(Family {
                host: Ipv6Addr::UNSPECIFIED.into(),
                guest: None,
            });
        }
        Ok(PortWatch::of_tables(tables, families, MAX_AUTO_FORWARDS))
    }

    /// A watch of open `tables` forwarding `families`, making at most
    /// `limit` forwards per protocol and family.
    fn of_tables(
        tables: Vec<(ForwardProtocol, File)>,
        families: Vec<Family>,
        limit: usize,
    ) -> PortWatch {
        PortWatch {
            tables,
            families,
            active: BTreeSet::new(),
            failed: BTreeSet::new(),
            capped: false,
            limit,
            next: Instant::now(),
        }
    }

    /// When the next scan is due.
    pub fn next_deadline(&self) -> Instant {
        self.next
    }

    /// Reads the tables and brings the forwards in line with them (see the
    /// module header); the next scan is due [`SCAN_INTERVAL`] later.
    pub fn scan(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        exclude: &BTreeSet<(ForwardProtocol, u16)>,
        now: Instant,
    ) {
        self.next = now + SCAN_INTERVAL;
        let mut listening = match read_listening(&mut self.tables) {
            Ok(listening) => listening,
            Err(err) => {
                tracing::debug!(%err, "reading the namespace's socket table");
                // Keep what is forwarded: a table that cannot be read says nothing.
                return;
            }
        };
        // Ports slipway itself listens on in the namespace (pasta's -T)
        // are not forwarded back to the host.
        listening.retain(|p| !exclude.contains(p));
        let wanted: BTreeSet<(ForwardProtocol, SocketAddr)> = listening
            .iter()
            .flat_map(|&(protocol, port)| {
                self.families
                    .iter()
                    .map(move |f| (protocol, SocketAddr::new(f.host, port)))
            })
            .collect();
        let gone: Vec<_> = self.active.difference(&wanted).copied().collect();
        for (protocol, host) in gone {
            self.active.remove(&(protocol, host));
            stack.remove_forward(registry, protocol, host);
        }
        self.failed.retain(|p| wanted.contains(p));
        for &(protocol, host) in wanted.difference(&self.active.clone()) {
            let same_kind = |(p, h): &&(ForwardProtocol, SocketAddr)| {
                *p == protocol && h.is_ipv6() == host.is_ipv6()
            };
            if self.active.iter().filter(same_kind).count() >= self.limit {
                if !self.capped {
                    tracing::warn!(
                        "the namespace listens on more than {} {protocol:?} ports: the rest are not forwarded",
                        self.limit
                    );
                    self.capped = true;
                }
                continue;
            }
            let guest_addr = self
                .families
                .iter()
                .find(|f| f.host.is_ipv6() == host.is_ipv6())
                .and_then(|f| f.guest);
            let fwd = HostForward {
                protocol,
                host,
                guest_addr,
                guest_port: host.port(),
                v6_only: true,
                device: None,
            };
            match stack.add_forward(registry, &fwd) {
                Ok(_) => {
                    self.active.insert((protocol, host));
                    self.failed.remove(&(protocol, host));
                }
                Err(err) => {
                    if self.failed.insert((protocol, host)) {
                        tracing::info!(%err, "not forwarding {protocol:?} {host} from the host");
                    }
                }
            }
        }
    }
}

/// Opens the socket tables of `protocols` (`/proc/PID/net/tcp`, `tcp6`,
/// `udp`, `udp6`) of process `pid`'s network namespace, or of this
/// process's own (`None`): descriptors read again by [`read_listening`]
/// at every scan.
pub fn open_tables(
    pid: Option<u32>,
    protocols: &[ForwardProtocol],
) -> std::io::Result<Vec<(ForwardProtocol, File)>> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/net"),
        None => "/proc/self/net".to_owned(),
    };
    let mut tables = Vec::new();
    for &protocol in protocols {
        for suffix in ["", "6"] {
            let path = format!("{dir}/{protocol}{suffix}");
            match File::open(&path) {
                Ok(file) => tables.push((protocol, file)),
                // No IPv6 in this kernel: no table.
                Err(e) if suffix == "6" && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("opening {path}: {e}"),
                    ))
                }
            }
        }
    }
    Ok(tables)
}

/// The ports listening (TCP) or bound and unconnected (UDP) in `tables`
/// now, each table read from its start (at most [`MAX_TABLE_BYTES`]).
pub fn read_listening(
    tables: &mut [(ForwardProtocol, File)],
) -> std::io::Result<BTreeSet<(ForwardProtocol, u16)>> {
    let mut listening = BTreeSet::new();
    for (protocol, file) in tables {
        let mut text = String::new();
        file.seek(SeekFrom::Start(0))?;
        file.take(MAX_TABLE_BYTES).read_to_string(&mut text)?;
        let want = match protocol {
            ForwardProtocol::Tcp => TCP_LISTEN,
            ForwardProtocol::Udp => UDP_UNCONNECTED,
        };
        listening.extend(
            listening_ports(&text, want)
                .into_iter()
                .map(|port| (*protocol, port)),
        );
    }
    Ok(listening)
}

/// The local ports of the sockets in state `state` in a /proc/net table's
/// `text`; lines that do not parse are left out.
pub fn listening_ports(text: &str, state: u8) -> BTreeSet<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let st = fields.nth(1)?;
            let (_, port) = local.rsplit_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let st = u8::from_str_radix(st, 16).ok()?;
            (st == state && port != 0).then_some(port)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0200000A:0016 0300000A:D431 01 00000000:00000000 02:00000000 00000000     0        0 3 2 0 20 4 30 10 -1\n\
   3: garbage\n";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n";

    #[test]
    fn listening_ports_of_the_tables() {
        assert_eq!(
            listening_ports(TCP, TCP_LISTEN),
            BTreeSet::from([22, 8080]),
            "the established connection (state 01) and the garbage line are left out"
        );
        assert_eq!(listening_ports(TCP6, TCP_LISTEN), BTreeSet::from([8081]));
        assert!(listening_ports(TCP, UDP_UNCONNECTED).is_empty());
        assert!(listening_ports("", TCP_LISTEN).is_empty());
        // UDP: bound and unconnected (07) only, not a connected socket (01).
        let udp = "  sl  local_address rem_address   st\n           1: 00000000:0035 00000000:0000 07 0\n           2: 0200000A:A000 0100000A:0035 01 0\n";
        assert_eq!(listening_ports(udp, UDP_UNCONNECTED), BTreeSet::from([53]));
    }

    /// A free TCP port of the host's loopback.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn table(ports: &[u16]) -> String {
        let mut text = String::from("  sl  local_address rem_address   st\n");
        for (i, port) in ports.iter().enumerate() {
            text += &format!("{i}: 00000000:{port:04X} 00000000:0000 0A 0\n");
        }
        text
    }

    fn reaches(port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    fn reaches6(port: u16) -> bool {
        std::net::TcpStream::connect(("::1", port)).is_ok()
    }

    fn ipv4() -> Family {
        Family {
            host: Ipv4Addr::UNSPECIFIED.into(),
            guest: None,
        }
    }

    fn v4(port: u16) -> (ForwardProtocol, SocketAddr) {
        (
            ForwardProtocol::Tcp,
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        )
    }

    #[test]
    fn forwards_follow_the_table_within_the_limit() {
        let (mut stack, poll) = crate::stack::started_for_tests();
        let dir = std::env::temp_dir().join(format!("slipway-port-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tcp");
        let (a, b, taken) = (free_port(), free_port(), free_port());
        let taken_listener = std::net::TcpListener::bind(("0.0.0.0", taken)).unwrap();
        std::fs::write(&path, table(&[a, taken])).unwrap();
        let file = File::open(&path).unwrap();
        let mut watch = PortWatch::of_tables(vec![(ForwardProtocol::Tcp, file)], vec![ipv4()], 2);
        let now = Instant::now();
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        assert_eq!(watch.next_deadline(), now + SCAN_INTERVAL);
        assert!(reaches(a), "port {a} forwarded");
        assert_eq!(watch.active, BTreeSet::from([v4(a)]));
        assert!(!reaches6(a), "IPv4 only");
        // The host port freed: forwarded at the next scan.
        drop(taken_listener);
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        assert_eq!(watch.active.len(), 2);
        // The namespace closes `a` and opens `b`: over the limit of 2
        // until `a` is gone, which happens in the same scan.
        std::fs::write(&path, table(&[taken, b])).unwrap();
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        assert!(!reaches(a), "port {a} no longer forwarded");
        assert!(reaches(b), "port {b} forwarded");
        // A third port is over the limit.
        let c = free_port();
        std::fs::write(&path, table(&[taken, b, c])).unwrap();
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        assert!(!reaches(c) && watch.capped, "port {c} is over the limit");
        // Forwards made otherwise are left alone.
        let own = free_port();
        stack
            .add_forward(
                poll.registry(),
                &HostForward {
                    protocol: ForwardProtocol::Tcp,
                    host: v4(own).1,
                    guest_addr: None,
                    guest_port: 80,
                    v6_only: false,
                    device: None,
                },
            )
            .unwrap();
        std::fs::write(&path, table(&[])).unwrap();
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        assert!(watch.active.is_empty() && reaches(own));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A port of either table is forwarded on both families when both
    /// are served: the IPv6 listener (`IPV6_V6ONLY`) beside the IPv4 one;
    /// a port taken on one family only is forwarded on the other, and the
    /// taken one follows once it is free; both go with the port.
    #[test]
    fn both_families_each_with_its_own_listener() {
        let (mut stack, poll) = crate::stack::started_for_tests();
        let dir = std::env::temp_dir().join(format!("slipway-port-watch6-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path4, path6) = (dir.join("tcp"), dir.join("tcp6"));
        let (a, b) = (free_port(), free_port());
        let taken6 = std::net::TcpListener::bind(("::1", b)).unwrap();
        std::fs::write(&path4, table(&[a])).unwrap();
        std::fs::write(&path6, table(&[b])).unwrap();
        let tables = vec![
            (ForwardProtocol::Tcp, File::open(&path4).unwrap()),
            (ForwardProtocol::Tcp, File::open(&path6).unwrap()),
        ];
        let ipv6 = Family {
            host: Ipv6Addr::UNSPECIFIED.into(),
            guest: None,
        };
        let mut watch = PortWatch::of_tables(tables, vec![ipv4(), ipv6], 10);
        let now = Instant::now();
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        let v6 = |port| (ForwardProtocol::Tcp, SocketAddr::new(ipv6.host, port));
        assert_eq!(watch.active, BTreeSet::from([v4(a), v4(b), v6(a)]));
        assert!(reaches(a) && reaches6(a) && reaches(b));
        drop(taken6);
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        assert!(watch.active.contains(&v6(b)) && reaches6(b));
        std::fs::write(&path4, table(&[])).unwrap();
        std::fs::write(&path6, table(&[])).unwrap();
        watch.scan(&mut stack, poll.registry(), &BTreeSet::new(), now);
        assert!(watch.active.is_empty());
        assert!(!reaches(a) && !reaches6(a) && !reaches(b) && !reaches6(b));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
