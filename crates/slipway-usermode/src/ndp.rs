//! ICMPv6 from the guest: neighbour discovery (RFC 4861) for the stack's
//! own IPv6 addresses, and echo (through host ping sockets toward the host
//! address and the outside, as [`crate::icmp`] does for IPv4).
//!
//! The stack is the guest's IPv6 router: it answers neighbour
//! solicitations for its addresses (host, DNS, and the link-local
//! `fe80::2` its router advertisements come from), sends router
//! advertisements (on a router solicitation and periodically) carrying the
//! prefix for SLAAC, the MTU and the DNS address (RDNSS, RFC 8106), with
//! the "other configuration" flag that sends clients to the stateless
//! DHCPv6 server. What the guest says about its own addresses (its
//! solicitations, advertisements and duplicate address detection) is
//! handed back to the caller to learn, so a forward can reach the guest's
//! SLAAC address before the guest has sent anything from it.
//!
//! Wire formats are smoltcp's (`Icmpv6Packet`, `NdiscRepr`), except the
//! router advertisement, which comes from `slipway_dhcp::ra` (shared with
//! bridge networks; it also writes the RDNSS and DNSSL options smoltcp
//! does not model).

use std::net::Ipv6Addr;
use std::time::Duration;

use slipway_dhcp::ra;
use smoltcp::wire::{
    EthernetAddress, Icmpv6Message, Icmpv6Packet, IpProtocol, NdiscNeighborFlags, NdiscRepr,
    RawHardwareAddress,
};

use crate::iface::{Ctx, DropReason, GATEWAY_MAC};
use crate::ping::PingTable;

/// All-nodes multicast group (ff02::1): where unsolicited advertisements go.
pub(crate) const ALL_NODES: Ipv6Addr = ra::ALL_NODES;
/// How often an unsolicited router advertisement goes out.
pub(crate) const RA_INTERVAL: Duration = Duration::from_secs(ra::INTERVAL_SECS);
/// Neighbour discovery messages must arrive with this hop limit (RFC 4861
/// 6.1.1, 7.1.1): proof that they were not routed.
const NDP_HOP_LIMIT: u8 = ra::NDP_HOP_LIMIT;

/// Something the guest told about its own addresses: `(address, MAC)`.
pub(crate) type Learned = Option<(Ipv6Addr, EthernetAddress)>;

/// Handles one ICMPv6 message (the IPv6 payload) the guest at `src`
/// (MAC `src_mac`) sent to `dst` with `hop_limit`; answers what is due
/// and returns an address of the guest's to learn.
pub(crate) fn handle(
    ctx: &mut Ctx,
    ping: &mut PingTable,
    src_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    message: &[u8],
) -> Learned {
    let Ok(icmp) = Icmpv6Packet::new_checked(message) else {
        ctx.counters.drop(DropReason::Truncated);
        return None;
    };
    if !icmp.verify_checksum(&src, &dst) {
        ctx.counters.drop(DropReason::BadChecksum);
        return None;
    }
    match icmp.msg_type() {
        Icmpv6Message::EchoRequest if icmp.msg_code() == 0 => {
            echo(ctx, ping, src_mac, src, dst, message);
            None
        }
        Icmpv6Message::RouterSolicit
        | Icmpv6Message::NeighborSolicit
        | Icmpv6Message::NeighborAdvert => {
            if hop_limit != NDP_HOP_LIMIT || icmp.msg_code() != 0 {
                ctx.counters.drop(DropReason::Malformed);
                return None;
            }
            let Ok(repr) = NdiscRepr::parse(&icmp) else {
                ctx.counters.drop(DropReason::Malformed);
                return None;
            };
            neighbour_discovery(ctx, src_mac, src, &repr)
        }
        _ => {
            // MLD reports, router advertisements from a guest, errors...
            ctx.counters.drop(DropReason::UnsupportedProtocol);
            None
        }
    }
}

fn neighbour_discovery(
    ctx: &mut Ctx,
    src_mac: EthernetAddress,
    src: Ipv6Addr,
    repr: &NdiscRepr,
) -> Learned {
    let v6 = &ctx.cfg.ipv6;
    match *repr {
        NdiscRepr::RouterSolicit { lladdr } => {
            let mac = link_addr(lladdr).unwrap_or(src_mac);
            if src.is_unspecified() {
                send_router_advert(ctx, None, ALL_NODES);
                None
            } else {
                send_router_advert(ctx, Some(mac), src);
                Some((src, mac))
            }
        }
        NdiscRepr::NeighborSolicit {
            target_addr,
            lladdr,
        } => {
            let ours = v6.is_virtual(target_addr);
            let guest_claim = !ours && v6.in_prefix(target_addr);
            if src.is_unspecified() {
                // Duplicate address detection: defend ours, note the
                // guest's tentative address (on a copied network too: the
                // guest's SLAAC address is its own, not a peer's).
                if ours {
                    send_neighbour_advert(ctx, None, ALL_NODES, target_addr, false);
                }
                return guest_claim.then_some((target_addr, src_mac));
            }
            let mac = link_addr(lladdr).unwrap_or(src_mac);
            // On a copied network the prefix's other hosts are reached
            // through the stack, as the IPv4 subnet's are (ARP).
            if ours || ctx.cfg.is_copied_peer6(target_addr) {
                send_neighbour_advert(ctx, Some(mac), src, target_addr, true);
            } else {
                ctx.counters.drop(DropReason::NotForUs);
            }
            Some((src, mac))
        }
        NdiscRepr::NeighborAdvert {
            target_addr,
            lladdr,
            ..
        } => {
            let guest_addr = !v6.is_virtual(target_addr)
                && (v6.in_prefix(target_addr) || target_addr.is_unicast_link_local());
            guest_addr.then(|| (target_addr, link_addr(lladdr).unwrap_or(src_mac)))
        }
        _ => None,
    }
}

/// An Ethernet address from a link-layer address option.
fn link_addr(lladdr: Option<RawHardwareAddress>) -> Option<EthernetAddress> {
    let raw = lladdr?;
    let bytes = raw.as_bytes();
    (bytes.len() == 6)
        .then(|| EthernetAddress::from_bytes(bytes))
        .filter(|m| m.is_unicast())
}

/// An echo request: out through a ping socket, or answered here for the
/// stack's own addresses ([`crate::icmp::echo_outbound`] decides).
fn echo(
    ctx: &mut Ctx,
    ping: &mut PingTable,
    src_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    message: &[u8],
) {
    let v6 = &ctx.cfg.ipv6;
    let (virtual_dst, host) = (v6.is_virtual(dst), dst == v6.host);
    let (s, d) = (src.into(), dst.into());
    if crate::icmp::echo_outbound(ctx, ping, s, d, virtual_dst, host, message) {
        return;
    }
    let len = message.len();
    ctx.emit_ipv6(Some(src_mac), dst, src, IpProtocol::Icmpv6, len, |buf| {
        buf[..len].copy_from_slice(message);
        let mut reply = Icmpv6Packet::new_unchecked(&mut buf[..len]);
        reply.set_msg_type(Icmpv6Message::EchoReply);
        reply.fill_checksum(&dst, &src);
    });
}

/// Sends a neighbour advertisement for our address `target` to `dst`.
fn send_neighbour_advert(
    ctx: &mut Ctx,
    dst_mac: Option<EthernetAddress>,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    solicited: bool,
) {
    let mut flags = NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE;
    if solicited {
        flags |= NdiscNeighborFlags::SOLICITED;
    }
    let repr = NdiscRepr::NeighborAdvert {
        flags,
        target_addr: target,
        lladdr: Some(GATEWAY_MAC.into()),
    };
    let len = repr.buffer_len();
    // Answer from the address asked about (RFC 4861 7.2.4 allows any of ours).
    ctx.emit_ipv6(dst_mac, target, dst, IpProtocol::Icmpv6, len, |buf| {
        let mut pkt = Icmpv6Packet::new_unchecked(&mut buf[..len]);
        repr.emit(&mut pkt);
        pkt.fill_checksum(&target, &dst);
    });
}

/// Sends a router advertisement to `dst` (`ff02::1` for an unsolicited
/// one): the prefix for SLAAC, the link MTU, and (unless restricted) the
/// DNS address and search list; with `restrict=on` the stack is no default
/// router. The message is built by the shared [`slipway_dhcp::ra`].
pub(crate) fn send_router_advert(ctx: &mut Ctx, dst_mac: Option<EthernetAddress>, dst: Ipv6Addr) {
    let msg = router_advert(ctx.cfg).to_bytes();
    let len = msg.len();
    let router = ctx.cfg.ipv6.router;
    ctx.emit_ipv6(dst_mac, router, dst, IpProtocol::Icmpv6, len, |buf| {
        let out = &mut buf[..len];
        out.copy_from_slice(&msg);
        Icmpv6Packet::new_unchecked(out).fill_checksum(&router, &dst);
    });
}

/// The router advertisement for `cfg`: the O flag (DNS from the stateless
/// DHCPv6 server), the prefix with the A flag, RDNSS and DNSSL (DHCP's
/// domain name, then `dnssearch`) unless restricted.
fn router_advert(cfg: &crate::config::StackConfig) -> ra::RouterAdvert {
    let lifetime = ra::ROUTER_LIFETIME_SECS;
    ra::RouterAdvert {
        source_mac: Some(GATEWAY_MAC.0),
        router_lifetime: if cfg.restrict { 0 } else { lifetime },
        managed: false,
        other: true,
        mtu: Some(u32::try_from(cfg.mtu).unwrap_or(u32::MAX)),
        prefixes: vec![ra::Prefix {
            prefix: cfg.ipv6.prefix,
            len: cfg.ipv6.prefix_len,
            autonomous: true,
        }],
        dns_servers: cfg.ipv6_dns_servers(),
        search: cfg.dns_search_list(),
        dns_lifetime: u32::from(lifetime),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ROUTER_LINK_LOCAL;
    use crate::iface::{Counters, GuestTx, Neighbours, ETHERNET_HEADER_LEN, IPV6_HEADER_LEN};
    use crate::options::parse_options;
    use proptest::prelude::*;
    use smoltcp::wire::{EthernetFrame, Ipv6Packet};

    const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);

    struct H {
        cfg: crate::config::StackConfig,
        tx: GuestTx,
        counters: Counters,
        neighbours: Neighbours,
        poll: mio::Poll,
        ident: u16,
        ping: PingTable,
    }

    impl H {
        fn new(opts: &str) -> H {
            H {
                cfg: parse_options(opts).unwrap(),
                tx: GuestTx::new(1500, 8),
                counters: Counters::default(),
                neighbours: Neighbours::default(),
                poll: mio::Poll::new().unwrap(),
                ident: 0,
                ping: PingTable::default(),
            }
        }

        fn run(&mut self, src: Ipv6Addr, dst: Ipv6Addr, hop: u8, msg: &[u8]) -> Learned {
            let mut ctx = Ctx {
                cfg: &self.cfg,
                tx: &mut self.tx,
                registry: self.poll.registry(),
                counters: &mut self.counters,
                neighbours: &mut self.neighbours,
                now: std::time::Instant::now(),
                ip_ident: &mut self.ident,
                forward_notices: None,
            };
            handle(&mut ctx, &mut self.ping, GUEST_MAC, src, dst, hop, msg)
        }

        /// The one frame sent: Ethernet destination, IPv6 source and
        /// destination, and the ICMPv6 message (checksum verified).
        fn sent(&mut self) -> (EthernetAddress, Ipv6Addr, Ipv6Addr, Vec<u8>) {
            assert_eq!(self.tx.len(), 1, "{:?}", self.counters);
            let f = self.tx.frame(0).to_vec();
            self.tx.clear();
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            assert_eq!(eth.src_addr(), GATEWAY_MAC);
            let ip = Ipv6Packet::new_checked(&f[ETHERNET_HEADER_LEN..]).unwrap();
            assert_eq!(ip.hop_limit(), 255);
            assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
            let msg = f[ETHERNET_HEADER_LEN + IPV6_HEADER_LEN..].to_vec();
            let icmp = Icmpv6Packet::new_checked(&msg[..]).unwrap();
            assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
            (eth.dst_addr(), ip.src_addr(), ip.dst_addr(), msg)
        }
    }

    /// `msg` with its ICMPv6 checksum filled in for `src` → `dst`.
    fn sum(src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
        Icmpv6Packet::new_unchecked(&mut msg[..]).fill_checksum(&src, &dst);
        msg
    }

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// Neighbour solicitation for `target` with a source link-layer option.
    fn ns(target: Ipv6Addr, with_lladdr: bool) -> Vec<u8> {
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        if with_lladdr {
            m.extend_from_slice(&[1, 1]);
            m.extend_from_slice(GUEST_MAC.as_bytes());
        }
        m
    }

    #[test]
    fn neighbour_solicitation_for_the_host_gets_this_advert() {
        let mut h = H::new("");
        let sn = a("ff02::1:ff00:2");
        let learned = h.run(
            GUEST_LL,
            sn,
            255,
            &sum(GUEST_LL, sn, ns(a("fec0::2"), true)),
        );
        assert_eq!(learned, Some((GUEST_LL, GUEST_MAC)));
        let (mac, src, dst, msg) = h.sent();
        assert_eq!((mac, src, dst), (GUEST_MAC, a("fec0::2"), GUEST_LL));
        let mut want = vec![136, 0, msg[2], msg[3], 0xe0, 0, 0, 0];
        want.extend_from_slice(&a("fec0::2").octets());
        want.extend_from_slice(&[2, 1, 0x52, 0x55, 10, 0, 2, 2]);
        assert_eq!(
            msg, want,
            "router, solicited, override; target link-layer address"
        );
    }

    #[test]
    fn solicitations_for_other_addresses_and_bad_hop_limits_get_nothing() {
        let mut h = H::new("");
        let sn = a("ff02::1:ff00:9");
        h.run(
            GUEST_LL,
            sn,
            255,
            &sum(GUEST_LL, sn, ns(a("fec0::9"), true)),
        );
        assert!(h.tx.is_empty());
        let msg = sum(GUEST_LL, sn, ns(a("fec0::2"), true));
        assert_eq!(h.run(GUEST_LL, sn, 64, &msg), None);
        assert!(h.tx.is_empty());
        assert_eq!(h.counters.drops(DropReason::Malformed), 1);
        let mut bad = msg.clone();
        bad[2] ^= 1;
        h.run(GUEST_LL, sn, 255, &bad);
        assert_eq!(h.counters.drops(DropReason::BadChecksum), 1);
    }

    #[test]
    fn duplicate_address_detection_is_learned_and_ours_defended() {
        let mut h = H::new("");
        let any = Ipv6Addr::UNSPECIFIED;
        let sn = a("ff02::1:ff00:55");
        let learned = h.run(any, sn, 255, &sum(any, sn, ns(a("fec0::55"), false)));
        assert_eq!(learned, Some((a("fec0::55"), GUEST_MAC)));
        assert!(h.tx.is_empty());
        let sn = a("ff02::1:ff00:3");
        assert_eq!(
            h.run(any, sn, 255, &sum(any, sn, ns(a("fec0::3"), false))),
            None
        );
        let (mac, src, dst, msg) = h.sent();
        assert_eq!(mac, EthernetAddress([0x33, 0x33, 0, 0, 0, 1]));
        assert_eq!((src, dst), (a("fec0::3"), ALL_NODES));
        assert_eq!(msg[4], 0xa0, "router and override, not solicited");
    }

    /// A copied network (slipway as passt): fec0::/64 is the host's
    /// prefix, fec0::9 the guest's copied address, fe80::1 the host's
    /// gateway and the stack's own link-local address.
    fn copied() -> H {
        let mut h = H::new("");
        h.cfg.ipv6.host = a("fe80::1");
        h.cfg.ipv6.router = a("fe80::1");
        h.cfg.copied = Some(crate::config::CopiedNetwork {
            guest: h.cfg.dhcp_start,
            dhcp_dns: Vec::new(),
            map_gw: true,
            guest6: Some(a("fec0::9")),
            link6: None,
            dns6: Vec::new(),
        });
        h
    }

    #[test]
    fn copied_prefix_peers_are_answered_but_not_defended() {
        let mut h = copied();
        // The guest resolving a host of the prefix: the stack answers.
        let sn = a("ff02::1:ff00:77");
        let src = a("fec0::9");
        h.run(src, sn, 255, &sum(src, sn, ns(a("fec0::77"), true)));
        let (_, from, to, msg) = h.sent();
        assert_eq!((from, to), (a("fec0::77"), src));
        assert_eq!(&msg[8..24], &a("fec0::77").octets());
        // Its SLAAC address under duplicate address detection: the
        // guest's, not a peer's to defend.
        let any = Ipv6Addr::UNSPECIFIED;
        let learned = h.run(any, sn, 255, &sum(any, sn, ns(a("fec0::77"), false)));
        assert_eq!(learned, Some((a("fec0::77"), GUEST_MAC)));
        assert!(h.tx.is_empty());
        // The gateway's link-local address is the stack's: defended, and
        // router advertisements come from it.
        let sn = a("ff02::1:ff00:1");
        h.run(any, sn, 255, &sum(any, sn, ns(a("fe80::1"), false)));
        assert_eq!(h.sent().1, a("fe80::1"));
        let all_routers = a("ff02::2");
        let rs = vec![133, 0, 0, 0, 0, 0, 0, 0];
        h.run(GUEST_LL, all_routers, 255, &sum(GUEST_LL, all_routers, rs));
        assert_eq!(h.sent().1, a("fe80::1"));
    }

    #[test]
    fn router_solicitation_gets_prefix_mtu_and_rdnss() {
        let mut h = H::new("");
        let all_routers = a("ff02::2");
        let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        rs.extend_from_slice(GUEST_MAC.as_bytes());
        let learned = h.run(GUEST_LL, all_routers, 255, &sum(GUEST_LL, all_routers, rs));
        assert_eq!(learned, Some((GUEST_LL, GUEST_MAC)));
        let (mac, src, dst, msg) = h.sent();
        assert_eq!((mac, src, dst), (GUEST_MAC, ROUTER_LINK_LOCAL, GUEST_LL));
        // Header: hop limit 64, O flag, router lifetime 600 s, no timers.
        let mut want = vec![
            134, 0, msg[2], msg[3], 64, 0x40, 0x02, 0x58, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        // Source link-layer address.
        want.extend_from_slice(&[1, 1, 0x52, 0x55, 10, 0, 2, 2]);
        // MTU 1500.
        want.extend_from_slice(&[5, 1, 0, 0, 0, 0, 0x05, 0xdc]);
        // Prefix fec0::/64, on-link + autonomous, 86400 s / 14400 s.
        want.extend_from_slice(&[
            3, 4, 64, 0xc0, 0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40, 0, 0, 0, 0,
        ]);
        want.extend_from_slice(&a("fec0::").octets());
        // RDNSS fec0::3, lifetime 600 s.
        want.extend_from_slice(&[25, 3, 0, 0, 0, 0, 0x02, 0x58]);
        want.extend_from_slice(&a("fec0::3").octets());
        assert_eq!(msg, want);

        // restrict=on: no default router, no DNS.
        let mut h = H::new("restrict=on");
        let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0];
        rs = sum(Ipv6Addr::UNSPECIFIED, all_routers, std::mem::take(&mut rs));
        h.run(Ipv6Addr::UNSPECIFIED, all_routers, 255, &rs);
        let (mac, _, dst, msg) = h.sent();
        assert_eq!(
            (mac, dst),
            (EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), ALL_NODES)
        );
        assert_eq!(&msg[6..8], &[0, 0]);
        assert_eq!(msg.len(), want.len() - 24, "no RDNSS");
    }

    #[test]
    fn search_list_goes_out_as_dnssl() {
        let mut h = H::new("domainname=a.test,dnssearch=bc.test");
        let rs = sum(
            Ipv6Addr::UNSPECIFIED,
            ALL_NODES,
            vec![133, 0, 0, 0, 0, 0, 0, 0],
        );
        h.run(Ipv6Addr::UNSPECIFIED, ALL_NODES, 255, &rs);
        let (_, _, _, msg) = h.sent();
        // After the RDNSS option: type 31, 4 units, lifetime 600 s, then
        // "a.test" and "bc.test" in wire form (17 bytes), zero-padded.
        let mut want = vec![31, 4, 0, 0, 0, 0, 0x02, 0x58, 1, b'a', 4];
        want.extend_from_slice(b"test");
        want.extend_from_slice(&[0, 2, b'b', b'c', 4]);
        want.extend_from_slice(b"test");
        want.extend_from_slice(&[0; 8]);
        assert_eq!(&msg[msg.len() - 32..], &want[..]);
        assert_eq!(&msg[msg.len() - 56..msg.len() - 54], &[25, 3]);
    }

    #[test]
    fn echo_to_our_own_addresses_is_answered_here() {
        // The host address goes to a ping socket on ::1 unless restricted;
        // the DNS and router addresses answer themselves.
        let mut h = H::new("restrict=on");
        let guest = a("fec0::55");
        for dst in [a("fec0::2"), a("fec0::3"), ROUTER_LINK_LOCAL] {
            let req = sum(guest, dst, vec![128, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i']);
            h.run(guest, dst, 64, &req);
            let (mac, src, to, msg) = h.sent();
            assert_eq!((mac, src, to), (GUEST_MAC, dst, guest));
            assert_eq!(msg[0], 129);
            assert_eq!(&msg[4..], &req[4..]);
        }
        let dst = a("2001:db8::1");
        h.run(
            guest,
            dst,
            64,
            &sum(guest, dst, vec![128, 0, 0, 0, 0, 1, 0, 1]),
        );
        assert!(h.tx.is_empty());
        assert_eq!(h.counters.drops(DropReason::Restricted), 1);
        let mut h = H::new("");
        for dst in [a("fe80::1"), a("fec0::77")] {
            h.run(
                guest,
                dst,
                64,
                &sum(guest, dst, vec![128, 0, 0, 0, 0, 1, 0, 1]),
            );
        }
        assert!(h.tx.is_empty());
        assert_eq!(h.counters.drops(DropReason::NotForUs), 2);
    }

    #[test]
    fn neighbour_adverts_from_the_guest_are_learned() {
        let mut h = H::new("");
        let mut na = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        na.extend_from_slice(&a("fec0::77").octets());
        let learned = h.run(
            a("fec0::77"),
            ALL_NODES,
            255,
            &sum(a("fec0::77"), ALL_NODES, na),
        );
        assert_eq!(learned, Some((a("fec0::77"), GUEST_MAC)));
        assert!(h.tx.is_empty());
    }

    proptest! {
        #[test]
        fn random_and_truncated_ndp_never_panics(
            kind in prop::sample::select(vec![128u8, 133, 134, 135, 136, 137, 143]),
            body in prop::collection::vec(any::<u8>(), 0..80),
            cut in 0usize..90,
            src_unspecified in any::<bool>(),
        ) {
            let mut h = H::new("");
            let src = if src_unspecified { Ipv6Addr::UNSPECIFIED } else { GUEST_LL };
            let mut msg = vec![kind, 0, 0, 0];
            msg.extend_from_slice(&body);
            msg.truncate(cut.max(1));
            if msg.len() >= 4 {
                msg = sum(src, ALL_NODES, msg);
            }
            let _ = h.run(src, ALL_NODES, 255, &msg);
            let _ = h.run(src, a("fec0::2"), 255, &msg);
        }
    }
}
