//! IPv6 for the stack: header checks and dispatch of guest IPv6 packets to
//! neighbour discovery and echo ([`crate::ndp`]), the stateless DHCPv6
//! server (`slipway_dhcp::v6`), and the same UDP, DNS and TCP handlers
//! IPv4 uses (their flow keys are address-family generic), plus the
//! periodic router advertisement.
//!
//! A child of `stack` so it can share the handlers' state without
//! widening their visibility.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use mio::Registry;
use smoltcp::wire::{EthernetAddress, IpProtocol, Ipv6Packet};

use super::{Stack, StackError};
use crate::config::StackConfig;
use crate::iface::udp;
use crate::iface::{DropReason, RxChecksum, GATEWAY_MAC, IPV6_HEADER_LEN};
use crate::ndp;
use slipway_dhcp::v6::{Dhcpv6Config, Dhcpv6Pool, Dhcpv6Server, ALL_SERVERS, SERVER_PORT};

/// All-routers multicast group (router solicitations go there).
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The IPv6 side's own state.
pub(super) struct Ipv6State {
    dhcp: Dhcpv6Server,
    /// When the next unsolicited router advertisement is due; armed by the
    /// first IPv6 frame from a guest.
    next_ra: Option<Instant>,
}

impl Ipv6State {
    /// The state for `cfg`: a DHCPv6 server handing out the IPv6 DNS
    /// address and the search list (neither under `restrict=on`); on a
    /// copied network (passt's model) it also leases the guest's one
    /// address, the host's, for ever, to a client asking for it (IA_NA).
    pub fn new(cfg: &StackConfig) -> Result<Self, StackError> {
        let mut dhcp = Dhcpv6Server::new(&Dhcpv6Config {
            server_mac: GATEWAY_MAC.0,
            dns_servers: cfg.ipv6_dns_servers(),
            domain_search: cfg.dns_search_list(),
        })?;
        if let Some(guest) = cfg.copied.as_ref().and_then(|c| c.guest6) {
            dhcp = dhcp.with_pool(Dhcpv6Pool {
                start: guest,
                end: guest,
                prefix: cfg.ipv6.prefix_len,
                lease_time: None,
                hosts: Vec::new(),
            })?;
        }
        Ok(Ipv6State {
            dhcp,
            next_ra: None,
        })
    }

    /// When [`Stack::ipv6_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_ra
    }
}

/// Whether a guest packet to multicast group `dst` may concern the stack:
/// all nodes, all routers, all DHCP servers, or a solicited-node group
/// (ff02::1:ffXX:XXXX, where neighbour solicitations go).
fn wanted_group(dst: Ipv6Addr) -> bool {
    let s = dst.segments();
    dst == ndp::ALL_NODES
        || dst == ALL_ROUTERS
        || dst == ALL_SERVERS
        || (s[..6] == [0xff02, 0, 0, 0, 0, 1] && s[6] >> 8 == 0xff)
}

impl Stack {
    /// Handles one IPv6 packet (the Ethernet payload) from the guest.
    pub(super) fn handle_ipv6(
        &mut self,
        registry: &Registry,
        src_mac: EthernetAddress,
        packet: &[u8],
        checksum: RxChecksum,
        batch: &[u8],
        now: Instant,
    ) {
        let core = &mut self.core;
        let Ok(ip) = Ipv6Packet::new_checked(packet) else {
            core.counters.drop(DropReason::Truncated);
            return;
        };
        if ip.version() != 6 || ip.hop_limit() == 0 {
            core.counters.drop(DropReason::Malformed);
            return;
        }
        let payload = &packet[IPV6_HEADER_LEN..ip.total_len()];
        let (src, dst, protocol) = (ip.src_addr(), ip.dst_addr(), ip.next_header());
        let v6 = &core.cfg.ipv6;
        let src_ok = src.is_unspecified()
            || src.is_unicast_link_local()
            || (v6.in_prefix(src) && !v6.is_virtual(src) && src != v6.prefix);
        if !src_ok
            || (src.is_unspecified() && matches!(protocol, IpProtocol::Tcp | IpProtocol::Udp))
        {
            // Spoofed or foreign sources would make replies go astray.
            core.counters.drop(DropReason::Malformed);
            return;
        }
        let multicast = dst.is_multicast();
        if (multicast && !wanted_group(dst))
            || (!multicast
                && !v6.is_virtual(dst)
                && ((v6.in_prefix(dst) && !core.cfg.is_copied_peer6(dst))
                    || dst.is_unicast_link_local()
                    || dst.is_loopback()
                    || dst.is_unspecified()))
        {
            core.counters.drop(DropReason::NotForUs);
            return;
        }
        if !src.is_unspecified() {
            core.neighbours.learn(src, src_mac);
        }
        if self.v6.next_ra.is_none() {
            self.v6.next_ra = Some(now + ndp::RA_INTERVAL);
        }
        match protocol {
            IpProtocol::Icmpv6 => {
                let learned = ndp::handle(
                    &mut core.ctx(registry, now),
                    &mut self.ping,
                    src_mac,
                    src,
                    dst,
                    ip.hop_limit(),
                    payload,
                );
                if let Some((addr, mac)) = learned {
                    core.neighbours.learn(addr, mac);
                }
            }
            IpProtocol::Udp => {
                let counters = &mut core.counters;
                if let Some(datagram) =
                    udp::check(counters, src.into(), dst.into(), payload, checksum)
                {
                    for d in datagram.datagrams() {
                        self.handle_udp6(registry, src_mac, src, dst, d, now);
                    }
                }
            }
            IpProtocol::Tcp if !multicast => self.tcp.on_guest_segment(
                &mut core.ctx(registry, now),
                src.into(),
                dst.into(),
                payload,
                checksum,
                batch,
            ),
            IpProtocol::Ipv6Frag => core.counters.drop(DropReason::Fragment),
            // Hop-by-hop options carry MLD reports, which a one-link
            // router without multicast forwarding has no use for.
            _ => core.counters.drop(DropReason::UnsupportedProtocol),
        }
    }

    fn handle_udp6(
        &mut self,
        registry: &Registry,
        src_mac: EthernetAddress,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        datagram: udp::Datagram,
        now: Instant,
    ) {
        let core = &mut self.core;
        let udp::Datagram {
            sport,
            dport,
            payload,
            ..
        } = datagram;
        if dport == SERVER_PORT && (dst == ALL_SERVERS || core.cfg.ipv6.is_virtual(dst)) {
            let reply = match self.v6.dhcp.handle(payload, SystemTime::now()) {
                Ok(Some(reply)) => reply,
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(%err, "DHCPv6 message refused");
                    core.counters.drop(DropReason::BadDhcp);
                    return;
                }
            };
            tracing::info!(mac = %src_mac, "DHCPv6 reply (stateless)");
            let router = core.cfg.ipv6.router;
            udp::emit(
                &mut core.ctx(registry, now),
                Some(src_mac),
                SocketAddr::new(router.into(), SERVER_PORT),
                SocketAddr::new(src.into(), sport),
                &reply,
            );
            return;
        }
        if dst.is_multicast() {
            core.counters.drop(DropReason::NotForUs);
            return;
        }
        let guest = SocketAddr::new(IpAddr::V6(src), sport);
        let remote = SocketAddr::new(IpAddr::V6(dst), dport);
        self.udp_outbound(registry, guest, remote, payload, now);
    }

    /// Sends the periodic router advertisement when it is due.
    pub(super) fn ipv6_timer(&mut self, registry: &Registry, now: Instant) {
        if self.v6.next_ra.is_none_or(|at| at > now) {
            return;
        }
        self.v6.next_ra = Some(now + ndp::RA_INTERVAL);
        if self.core.cfg.ipv6.enabled && self.core.neighbours.last_seen().is_some() {
            ndp::send_router_advert(&mut self.core.ctx(registry, now), None, ndp::ALL_NODES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ROUTER_LINK_LOCAL;
    use crate::iface::ETHERNET_HEADER_LEN;
    use crate::options::parse_options;
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, Icmpv6Packet, IpAddress, TcpOption, TcpPacket, TcpRepr, TcpSeqNumber,
        UdpPacket,
    };

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn guest() -> Ipv6Addr {
        a("fec0::5054:ff:fe12:3456")
    }

    fn guest_ll() -> Ipv6Addr {
        a("fe80::5054:ff:fe12:3456")
    }

    /// An Ethernet + IPv6 frame from the guest (hop limit 255).
    fn ipv6_frame(
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = dst_mac.to_vec();
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[next, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(payload);
        f
    }

    fn udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = 8 + payload.len();
        let mut u = vec![0u8; len];
        let mut p = UdpPacket::new_unchecked(&mut u[..]);
        p.set_src_port(sport);
        p.set_dst_port(dport);
        p.set_len(len as u16);
        p.payload_mut().copy_from_slice(payload);
        p.fill_checksum(&IpAddress::Ipv6(src), &IpAddress::Ipv6(dst));
        u
    }

    /// A neighbour solicitation for the host address, to the solicited-node group.
    fn ns_frame() -> Vec<u8> {
        let group = a("ff02::1:ff00:2");
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&a("fec0::2").octets());
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&GUEST_MAC);
        Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(&guest_ll(), &group);
        ipv6_frame([0x33, 0x33, 0xff, 0, 0, 2], guest_ll(), group, 58, &m)
    }

    fn info_request_frame() -> Vec<u8> {
        let mut req = vec![11, 0xab, 0xcd, 0xef, 0, 1, 0, 10, 0, 3, 0, 1];
        req.extend_from_slice(&GUEST_MAC);
        req.extend_from_slice(&[0, 6, 0, 2, 0, 23]);
        let u = udp(guest_ll(), 546, ALL_SERVERS, 547, &req);
        ipv6_frame([0x33, 0x33, 0, 1, 0, 2], guest_ll(), ALL_SERVERS, 17, &u)
    }

    /// The IPv6 packet of the only frame toward the guest.
    fn sent(stack: &mut Stack) -> Vec<u8> {
        assert_eq!(stack.guest_tx().len(), 1, "{:?}", stack.counters());
        let f = stack.guest_tx().frame(0).to_vec();
        stack.guest_tx().clear();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst_addr().0, GUEST_MAC);
        f[ETHERNET_HEADER_LEN..].to_vec()
    }

    fn stack(opts: &str) -> (Stack, mio::Poll) {
        let poll = mio::Poll::new().unwrap();
        let mut s = Stack::new(parse_options(opts).unwrap()).unwrap();
        s.start(poll.registry()).unwrap();
        (s, poll)
    }

    #[test]
    fn neighbour_solicitation_through_the_stack_and_ipv6_off() {
        let (mut s, poll) = stack("");
        s.handle_frame(poll.registry(), &ns_frame(), Instant::now());
        let ip = sent(&mut s);
        let ip = Ipv6Packet::new_checked(&ip[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (a("fec0::2"), guest_ll()));
        assert_eq!(ip.payload()[0], 136);
        let (mut s, poll) = stack("ipv6=off");
        s.handle_frame(poll.registry(), &ns_frame(), Instant::now());
        assert!(s.guest_tx().is_empty());
        assert_eq!(s.counters().drops(DropReason::UnsupportedProtocol), 1);
    }

    #[test]
    fn dhcpv6_information_request_gets_dns_and_search() {
        let (mut s, poll) = stack("dnssearch=example.test");
        s.handle_frame(poll.registry(), &info_request_frame(), Instant::now());
        let ip = sent(&mut s);
        let ip = Ipv6Packet::new_checked(&ip[..]).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (ROUTER_LINK_LOCAL, guest_ll())
        );
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(
            &IpAddress::Ipv6(ip.src_addr()),
            &IpAddress::Ipv6(ip.dst_addr())
        ));
        assert_eq!((u.src_port(), u.dst_port()), (547, 546));
        let reply = u.payload();
        assert_eq!(&reply[..4], &[7, 0xab, 0xcd, 0xef]);
        let dns = a("fec0::3").octets();
        assert!(reply.windows(16).any(|w| w == dns), "{reply:02x?}");
        assert!(reply.windows(7).any(|w| w == b"example"), "{reply:02x?}");
        // restrict=on: neither DNS nor search list.
        let (mut s, poll) = stack("restrict=on,dnssearch=example.test");
        s.handle_frame(poll.registry(), &info_request_frame(), Instant::now());
        let ip = sent(&mut s);
        let reply = &ip[40 + 8..];
        assert!(!reply.windows(16).any(|w| w == dns));
        assert!(!reply.windows(7).any(|w| w == b"example"));
    }

    #[test]
    fn udp_to_the_host_address_reaches_host_loopback_v6() {
        let (mut s, mut poll) = stack("");
        let server = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let host = a("fec0::2");
        let u = udp(guest(), 4000, host, port, b"ping6");
        s.handle_frame(
            poll.registry(),
            &ipv6_frame(GATEWAY_MAC.0, guest(), host, 17, &u),
            Instant::now(),
        );
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping6");
        server.send_to(b"pong6", from).unwrap();
        crate::stack::udp_tests::pump_host(&mut s, &mut poll);
        let ip = sent(&mut s);
        let ip = Ipv6Packet::new_checked(&ip[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (host, guest()));
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(&IpAddress::Ipv6(host), &IpAddress::Ipv6(guest())));
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (port, 4000, &b"pong6"[..])
        );
        // IPv6 UDP without checksum is refused.
        let mut bare = udp(guest(), 4001, host, port, b"x");
        bare[6..8].fill(0);
        s.handle_frame(
            poll.registry(),
            &ipv6_frame(GATEWAY_MAC.0, guest(), host, 17, &bare),
            Instant::now(),
        );
        assert_eq!(s.counters().drops(DropReason::BadChecksum), 1);
    }

    /// With `--no-host-loopback`, UDP to `::1`, to `::ffff:127.0.0.1` and
    /// to the host address is dropped and counted.
    #[test]
    fn no_host_loopback_refuses_the_ipv6_loopback() {
        let poll = mio::Poll::new().unwrap();
        let mut cfg = parse_options("").unwrap();
        cfg.host_loopback = false;
        let mut s = Stack::new(cfg).unwrap();
        s.start(poll.registry()).unwrap();
        let server = std::net::UdpSocket::bind("[::1]:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let port = server.local_addr().unwrap().port();
        for dst in [a("::1"), a("::ffff:127.0.0.1"), a("fec0::2")] {
            let u = udp(guest(), 4000, dst, port, b"x");
            s.handle_frame(
                poll.registry(),
                &ipv6_frame(GATEWAY_MAC.0, guest(), dst, 17, &u),
                Instant::now(),
            );
        }
        // ::1 is no destination on the link at all (refused before any
        // flow, option or not); the other two are the option's.
        assert_eq!(s.counters().drops(DropReason::NotForUs), 1);
        assert_eq!(s.counters().drops(DropReason::HostLoopback), 2);
        let mut buf = [0u8; 4];
        assert!(server.recv_from(&mut buf).is_err(), "no datagram came");
    }

    #[test]
    fn tcp_syn_to_the_host_address_gets_a_syn_ack_with_the_ipv6_mss() {
        let (mut s, mut poll) = stack("");
        let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let host = a("fec0::2");
        let repr = TcpRepr {
            src_port: 40000,
            dst_port: port,
            control: smoltcp::wire::TcpControl::Syn,
            seq_number: TcpSeqNumber(1000),
            ack_number: None,
            window_len: 64240,
            window_scale: Some(7),
            max_seg_size: Some(1440),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let mut seg = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut seg[..]),
            &IpAddress::Ipv6(guest()),
            &IpAddress::Ipv6(host),
            &ChecksumCapabilities::default(),
        );
        s.handle_frame(
            poll.registry(),
            &ipv6_frame(GATEWAY_MAC.0, guest(), host, 6, &seg),
            Instant::now(),
        );
        let (_conn, from) = listener.accept().unwrap();
        assert!(from.ip().is_loopback() && from.is_ipv6());
        crate::stack::udp_tests::pump_host(&mut s, &mut poll);
        let ip = sent(&mut s);
        let ip = Ipv6Packet::new_checked(&ip[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (host, guest()));
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(&IpAddress::Ipv6(host), &IpAddress::Ipv6(guest())));
        assert!(tcp.syn() && tcp.ack());
        assert_eq!(tcp.ack_number(), TcpSeqNumber(1001));
        let (_, opt) = TcpOption::parse(tcp.options()).unwrap();
        assert_eq!(opt, TcpOption::MaxSegmentSize(1500 - 60));
    }

    #[test]
    fn router_advertisements_repeat_once_a_guest_has_spoken() {
        let poll = mio::Poll::new().unwrap();
        let mut s = Stack::new(parse_options("").unwrap()).unwrap();
        let t0 = Instant::now();
        assert_eq!(s.next_deadline(), None);
        s.handle_frame(poll.registry(), &ns_frame(), t0);
        s.guest_tx().clear();
        let due = t0 + ndp::RA_INTERVAL;
        assert_eq!(s.next_deadline(), Some(due));
        s.on_timer(poll.registry(), due);
        assert_eq!(s.guest_tx().len(), 1);
        let f = s.guest_tx().frame(0).to_vec();
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let ip = Ipv6Packet::new_checked(&f[ETHERNET_HEADER_LEN..]).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (ROUTER_LINK_LOCAL, ndp::ALL_NODES)
        );
        assert_eq!(ip.payload()[0], 134);
        assert_eq!(s.next_deadline(), Some(due + ndp::RA_INTERVAL));
    }

    #[test]
    fn udp_forward_reaches_the_slaac_address_learned_from_dad() {
        let mut poll = mio::Poll::new().unwrap();
        let mut s = Stack::new(parse_options("hostfwd=udp:[::1]:0-:7777").unwrap()).unwrap();
        s.start(poll.registry()).unwrap();
        let fwd = s.udp.forwards().next().unwrap().0;
        let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let client_port = client.local_addr().unwrap().port();
        // No IPv6 address of the guest known yet: nowhere to go.
        client.send_to(b"early", fwd).unwrap();
        for _ in 0..50 {
            if s.counters().drops(DropReason::NotForUs) > 0 {
                break;
            }
            let mut events = mio::Events::with_capacity(4);
            poll.poll(&mut events, Some(std::time::Duration::from_millis(100)))
                .unwrap();
            for ev in events.iter() {
                if let Some((kind, index)) = crate::iface::decode_token(ev.token()) {
                    s.handle_host_event(poll.registry(), kind, index, ev, Instant::now());
                }
            }
        }
        assert_eq!(s.counters().drops(DropReason::NotForUs), 1);
        assert!(s.guest_tx().is_empty());
        // Duplicate address detection for the SLAAC address.
        let group = a("ff02::1:ff12:3456");
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&guest().octets());
        let any = Ipv6Addr::UNSPECIFIED;
        Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(&any, &group);
        let dad = ipv6_frame([0x33, 0x33, 0xff, 0x12, 0x34, 0x56], any, group, 58, &m);
        s.handle_frame(poll.registry(), &dad, Instant::now());
        assert!(s.guest_tx().is_empty(), "nothing to defend");
        client.send_to(b"hello", fwd).unwrap();
        crate::stack::udp_tests::pump_host(&mut s, &mut poll);
        let ip = sent(&mut s);
        let ip = Ipv6Packet::new_checked(&ip[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (a("fec0::2"), guest()));
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (client_port, 7777, &b"hello"[..])
        );
        // The guest's answer leaves through the forward's socket.
        let reply = udp(guest(), 7777, a("fec0::2"), client_port, b"back");
        s.handle_frame(
            poll.registry(),
            &ipv6_frame(GATEWAY_MAC.0, guest(), a("fec0::2"), 17, &reply),
            Instant::now(),
        );
        let mut buf = [0u8; 8];
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], fwd));
    }

    proptest! {
        #[test]
        fn damaged_ipv6_frames_never_panic_and_ndp_still_works(
            mutate in prop::collection::vec((0usize..140, any::<u8>()), 1..8),
            cut in 14usize..160,
        ) {
            let (mut s, poll) = stack("");
            let host = a("fec0::2");
            let bases = [
                ns_frame(),
                info_request_frame(),
                ipv6_frame(GATEWAY_MAC.0, guest(), host, 17, &udp(guest(), 1, host, 9, b"x")),
                ipv6_frame(GATEWAY_MAC.0, guest(), host, 6, &[0u8; 20]),
            ];
            for base in bases {
                let mut f = base.clone();
                for (at, byte) in &mutate {
                    if *at < f.len() {
                        f[*at] = *byte;
                    }
                }
                s.handle_frame(poll.registry(), &f, Instant::now());
                f.truncate(cut);
                s.handle_frame(poll.registry(), &f, Instant::now());
            }
            s.guest_tx().clear();
            s.handle_frame(poll.registry(), &ns_frame(), Instant::now());
            prop_assert_eq!(s.guest_tx().len(), 1);
        }
    }
}
