//! The shared state (`Core`) and what a handler may use of it while it
//! handles one event ([`Ctx`]): the IP emitters, which resolve a
//! destination no guest has been heard from first
//! ([`super::neighbours`]) and build frames in place in the [`GuestTx`]
//! slots, and the forward lookup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use mio::Registry;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet,
};

use super::counters::{Counters, DropReason};
use super::neighbours::{Held, Neighbours};
use super::tx::GuestTx;
use crate::config::{HostForward, StackConfig};
use crate::wire::framing::{
    vnet_header, Offload, MAX_OFFLOAD_PACKET, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VNET_HDR_LEN,
};
use crate::wire::{
    arp, ipv6_multicast_mac, ndp, ETHERNET_HEADER_LEN, GATEWAY_MAC, IPV4_HEADER_LEN,
    IPV6_HEADER_LEN,
};

/// Where a frame toward the guests goes on the link.
#[derive(Clone, Copy, Debug)]
enum NextHop {
    /// To this Ethernet address.
    Mac(EthernetAddress),
    /// To whoever answers for this address (held until then).
    Resolve(IpAddr),
}

/// Everything a handler may use while it handles one event.
pub struct Ctx<'a> {
    /// The network's configuration.
    pub cfg: &'a StackConfig,
    /// Frames toward the guest.
    pub tx: &'a mut GuestTx,
    /// Registry for host sockets (use [`super::token()`] to make their tokens).
    pub registry: &'a Registry,
    /// Counters.
    pub counters: &'a mut Counters,
    /// Guest MAC addresses (and frames held while resolving one).
    pub neighbours: &'a mut Neighbours,
    /// Time of the current event.
    pub now: Instant,
    /// Next IPv4 identification value.
    pub ip_ident: &'a mut u16,
    /// The pipe on which the stack names its connections to the guest
    /// forwards' listeners to the helper serving them (`crate::guestfwd`).
    pub forward_notices: Option<BorrowedFd<'a>>,
}

impl Ctx<'_> {
    /// Queues one IPv4 packet to the guest at `dst`: writes the Ethernet and
    /// IPv4 headers (TTL 64, don't-fragment, header checksum) and lets
    /// `fill` write `payload_len` bytes of payload in place. The caller fills
    /// in its own transport checksum.
    ///
    /// A `dst` no guest has been heard from is resolved first (the packet
    /// is held meanwhile: see the module header).
    ///
    /// Returns false when the packet was not queued: no room toward the
    /// guest (counted as [`DropReason::GuestTxFull`]), a payload larger
    /// than the MTU allows, or too many packets held for resolution.
    pub fn emit_ipv4(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let next = self.next_hop_v4(dst);
        self.emit_ipv4_via(next, src, dst, protocol, payload_len, None, fill)
    }

    /// Where an IPv4 packet to `dst` goes on the link.
    fn next_hop_v4(&self, dst: Ipv4Addr) -> NextHop {
        if dst.is_broadcast() || dst == self.cfg.broadcast() {
            NextHop::Mac(EthernetAddress::BROADCAST)
        } else {
            match self.neighbours.lookup(dst) {
                Some(mac) => NextHop::Mac(mac),
                None => NextHop::Resolve(dst.into()),
            }
        }
    }

    /// [`Ctx::emit_ipv4`] to an Ethernet address the caller already knows
    /// (a DHCP client that has no IPv4 address yet).
    pub fn emit_ipv4_to(
        &mut self,
        dst_mac: EthernetAddress,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let next = NextHop::Mac(dst_mac);
        self.emit_ipv4_via(next, src, dst, protocol, payload_len, None, fill)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_ipv4_via(
        &mut self,
        next: NextHop,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        offload: Option<Offload>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let total = IPV4_HEADER_LEN + payload_len;
        if total > self.packet_limit(offload) {
            self.counters.drop(DropReason::Oversized);
            return false;
        }
        let ident = *self.ip_ident;
        *self.ip_ident = ident.wrapping_add(1);
        let vnet = vnet_header(
            offload,
            IPV4_HEADER_LEN,
            payload_len,
            VIRTIO_NET_HDR_GSO_TCPV4,
        );
        self.queue_frame(next, EthernetProtocol::Ipv4, total, &vnet, |buf| {
            let mut ip = Ipv4Packet::new_unchecked(&mut *buf);
            ip.set_version(4);
            ip.set_header_len(IPV4_HEADER_LEN as u8);
            ip.set_dscp(0);
            ip.set_ecn(0);
            ip.set_total_len(total as u16);
            ip.set_ident(ident);
            ip.clear_flags();
            ip.set_dont_frag(true);
            ip.set_frag_offset(0);
            ip.set_hop_limit(64);
            ip.set_next_header(protocol);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
            fill(&mut buf[IPV4_HEADER_LEN..]);
        })
    }

    /// Queues one IPv6 packet to the guest at `dst` (or to the Ethernet
    /// address `dst_mac` when given: multicast, or a neighbour the caller
    /// knows): writes the Ethernet and IPv6 headers (hop limit 255 for
    /// neighbour discovery's sake, which every receiver accepts) and lets
    /// `fill` write `payload_len` bytes of payload. The caller fills in its
    /// own transport checksum. Returns false as [`Ctx::emit_ipv4`] does.
    pub fn emit_ipv6(
        &mut self,
        dst_mac: Option<EthernetAddress>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.ipv6(dst_mac, src, dst, protocol, payload_len, None, fill)
    }

    /// [`Ctx::emit_ipv6`], for a TCP segment the link may finish (`offload`).
    #[allow(clippy::too_many_arguments)]
    fn ipv6(
        &mut self,
        dst_mac: Option<EthernetAddress>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: IpProtocol,
        payload_len: usize,
        offload: Option<Offload>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let next = match dst_mac {
            Some(mac) => NextHop::Mac(mac),
            None if dst.is_multicast() => NextHop::Mac(ipv6_multicast_mac(dst)),
            None => match self.neighbours.lookup(dst) {
                Some(mac) => NextHop::Mac(mac),
                None => NextHop::Resolve(dst.into()),
            },
        };
        let total = IPV6_HEADER_LEN + payload_len;
        if total > self.packet_limit(offload) {
            self.counters.drop(DropReason::Oversized);
            return false;
        }
        let vnet = vnet_header(
            offload,
            IPV6_HEADER_LEN,
            payload_len,
            VIRTIO_NET_HDR_GSO_TCPV6,
        );
        self.queue_frame(next, EthernetProtocol::Ipv6, total, &vnet, |buf| {
            let mut ip = Ipv6Packet::new_unchecked(&mut *buf);
            ip.set_version(6);
            ip.set_traffic_class(0);
            ip.set_flow_label(0);
            ip.set_payload_len(payload_len as u16);
            ip.set_next_header(protocol);
            ip.set_hop_limit(255);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            fill(&mut buf[IPV6_HEADER_LEN..]);
        })
    }

    /// Queues one frame to the guest at `next`: the gateway's Ethernet
    /// header with `ethertype`, then `packet_len` bytes that `fill` writes.
    /// Counts the frame, or the drop when the queue toward the guest is full.
    /// An offload frame (`vnet` not all zero) is not held for an unresolved
    /// address (a held frame goes out plain): it is dropped, the address
    /// solicited, and TCP sends it again.
    fn queue_frame(
        &mut self,
        next: NextHop,
        ethertype: EthernetProtocol,
        packet_len: usize,
        vnet: &[u8; VNET_HDR_LEN],
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let frame_len = ETHERNET_HEADER_LEN + packet_len;
        let dst_mac = match next {
            NextHop::Mac(mac) => mac,
            NextHop::Resolve(ip) if vnet[0] != 0 => {
                self.solicit(ip);
                self.counters.drop(DropReason::Unresolved);
                return false;
            }
            NextHop::Resolve(ip) => {
                let mut frame = vec![0; frame_len];
                let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
                eth.set_src_addr(GATEWAY_MAC);
                eth.set_ethertype(ethertype);
                fill(&mut frame[ETHERNET_HEADER_LEN..]);
                return match self.neighbours.hold(ip, frame, self.now) {
                    Held::Solicit => {
                        self.solicit(ip);
                        true
                    }
                    Held::Waiting => true,
                    Held::Full => {
                        self.counters.drop(DropReason::Unresolved);
                        false
                    }
                };
            }
        };
        let queued = self.tx.push_with_vnet(vnet, |buf| {
            let buf = &mut buf[..frame_len];
            let mut eth = EthernetFrame::new_unchecked(&mut *buf);
            eth.set_dst_addr(dst_mac);
            eth.set_src_addr(GATEWAY_MAC);
            eth.set_ethertype(ethertype);
            fill(&mut buf[ETHERNET_HEADER_LEN..]);
            frame_len
        });
        if queued {
            self.counters.frames_out += 1;
            self.counters.bytes_out += frame_len as u64;
        } else {
            self.counters.drop(DropReason::GuestTxFull);
        }
        queued
    }

    /// Asks the link who has `ip`: an ARP request, or a neighbour
    /// solicitation to its solicited-node group.
    pub fn solicit(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(ip) => {
                let sender = self.cfg.host;
                self.queue_frame(
                    NextHop::Mac(EthernetAddress::BROADCAST),
                    EthernetProtocol::Arp,
                    arp::ARP_LEN,
                    &[0; VNET_HDR_LEN],
                    |buf| arp::write_request(buf, sender, ip),
                );
            }
            IpAddr::V6(ip) => {
                let group = ndp::solicited_node(ip);
                let len = ndp::SOLICIT_LEN;
                let router = self.cfg.ipv6.router;
                self.emit_ipv6(None, router, group, IpProtocol::Icmpv6, len, |buf| {
                    ndp::write_solicit(buf, router, ip)
                });
            }
        }
    }

    /// Queues the held frames whose destination was learnt.
    pub fn release_held(&mut self) {
        for frame in self.neighbours.take_released() {
            let len = frame.len();
            if self.tx.push(|buf| {
                buf[..len].copy_from_slice(&frame);
                len
            }) {
                self.counters.frames_out += 1;
                self.counters.bytes_out += len as u64;
            } else {
                self.counters.drop(DropReason::GuestTxFull);
            }
        }
    }

    /// [`Ctx::emit_ipv4`] or [`Ctx::emit_ipv6`], by the addresses' family;
    /// mixed families are refused.
    pub fn emit_ip(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.emit_ip_offload(src, dst, protocol, payload_len, None, fill)
    }

    /// [`Ctx::emit_ip`] for a TCP segment the link finishes (`offload`,
    /// only when [`GuestTx::offload`]): the caller puts the pseudo-header
    /// sum in the checksum field, and the packet may exceed the MTU up to
    /// [`MAX_OFFLOAD_PACKET`].
    pub fn emit_ip_offload(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        protocol: IpProtocol,
        payload_len: usize,
        offload: Option<Offload>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let next = self.next_hop_v4(d);
                self.emit_ipv4_via(next, s, d, protocol, payload_len, offload, fill)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.ipv6(None, s, d, protocol, payload_len, offload, fill)
            }
            _ => {
                self.counters.drop(DropReason::UnsupportedProtocol);
                false
            }
        }
    }

    /// Whether a packet to `dst` may go as an offload frame now: the link
    /// takes them and `dst`'s Ethernet address is known (an offload frame
    /// is never held for resolution, see `queue_frame`).
    pub fn can_offload_to(&self, dst: IpAddr) -> bool {
        self.tx.offload() && self.resolved(dst)
    }

    /// Whether a packet to unicast `dst` goes straight into a `GuestTx`
    /// slot (its Ethernet address is known) rather than being held for
    /// resolution: what a frame whose payload was read in place
    /// ([`GuestTx::read_into_free`](crate::iface::GuestTx::read_into_free))
    /// needs, since a held frame is built elsewhere.
    pub fn resolved(&self, dst: IpAddr) -> bool {
        match dst {
            IpAddr::V4(d) => matches!(self.next_hop_v4(d), NextHop::Mac(_)),
            IpAddr::V6(d) => self.neighbours.lookup(d).is_some(),
        }
    }

    /// Largest UDP payload of one offload frame from `src` (its family):
    /// what [`Ctx::emit_ip_offload`] takes with a UDP header.
    pub fn max_offload_udp_payload(&self, src: IpAddr) -> usize {
        let ip = if src.is_ipv6() {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        };
        let probe = Offload {
            mss: 1,
            header_len: 8,
            udp: true,
        };
        self.packet_limit(Some(probe)).saturating_sub(ip + 8)
    }

    /// Largest IP packet to queue: the MTU, or an offload frame's limit.
    fn packet_limit(&self, offload: Option<Offload>) -> usize {
        if offload.is_some() && self.tx.offload() {
            MAX_OFFLOAD_PACKET.min(self.tx.max_frame_len() - ETHERNET_HEADER_LEN)
        } else {
            self.cfg.mtu
        }
    }

    /// The guest end of host forward `fwd` ([`forward_guest`]).
    pub fn forward_guest(&self, fwd: &HostForward) -> Option<SocketAddr> {
        forward_guest(self.cfg, self.neighbours, fwd)
    }

    /// The guest end of a forwarded UDP flow ([`link_local_guest`]).
    pub fn link_local_guest(&self, guest: SocketAddr, remote: SocketAddr) -> SocketAddr {
        link_local_guest(self.neighbours, guest, remote)
    }

    /// The host address as the guest sees it in the family of `guest`
    /// (the source of connections forwarded from host loopback).
    pub fn host_addr_for(&self, guest: IpAddr) -> IpAddr {
        match guest {
            IpAddr::V4(_) => IpAddr::V4(self.cfg.host),
            IpAddr::V6(_) => IpAddr::V6(self.cfg.ipv6.host),
        }
    }
}

/// The guest end of host forward `fwd`: its guest address, or by default
/// the first DHCP address (IPv4) or the guest's most recently learned
/// address in the IPv6 prefix (its SLAAC address), on a copied network
/// the copied address until then (passt's "address seen", which starts
/// as the copied one). `None` while no such IPv6 address is known.
pub fn forward_guest(
    cfg: &StackConfig,
    neighbours: &Neighbours,
    fwd: &HostForward,
) -> Option<SocketAddr> {
    let ip = match fwd.guest_addr {
        Some(ip) => ip,
        None if fwd.guest_is_ipv6() => {
            let v6 = &cfg.ipv6;
            let copied = cfg.copied.as_ref().and_then(|c| c.guest6).map(IpAddr::V6);
            neighbours
                .latest(|a| matches!(a, IpAddr::V6(a) if v6.in_prefix(a) && !v6.is_virtual(a)))
                .or(copied)?
        }
        None => IpAddr::V4(cfg.dhcp_start),
    };
    Some(SocketAddr::new(ip, fwd.guest_port))
}

/// The guest end of a forwarded UDP flow that the guest sees coming from
/// `remote`: for a link-local `remote` (a copied network's gateway, which
/// clients of the host's loopback and of its own address come from), the
/// guest's link-local address it was last seen using, as passt sends
/// them: the guest answers a link-local peer from its link-local address
/// (source address selection, RFC 6724 rule 2), and that answer must
/// belong to the flow. `guest` otherwise, or while no link-local address
/// of the guest is known.
pub fn link_local_guest(
    neighbours: &Neighbours,
    guest: SocketAddr,
    remote: SocketAddr,
) -> SocketAddr {
    match (guest.ip(), remote.ip()) {
        (IpAddr::V6(g), IpAddr::V6(r))
            if r.is_unicast_link_local() && !g.is_unicast_link_local() =>
        {
            neighbours
                .latest(|a| matches!(a, IpAddr::V6(a) if a.is_unicast_link_local()))
                .map_or(guest, |ll| SocketAddr::new(ll, guest.port()))
        }
        _ => guest,
    }
}

/// The state every handler shares, split from the handlers so a [`Ctx`]
/// can borrow it while a handler borrows itself.
pub(crate) struct Core {
    pub cfg: StackConfig,
    pub tx: GuestTx,
    pub counters: Counters,
    pub neighbours: Neighbours,
    pub ip_ident: u16,
    /// See [`Ctx::forward_notices`].
    pub forward_notices: Option<OwnedFd>,
}

impl Core {
    pub fn ctx<'a>(&'a mut self, registry: &'a Registry, now: Instant) -> Ctx<'a> {
        Ctx {
            cfg: &self.cfg,
            tx: &mut self.tx,
            registry,
            counters: &mut self.counters,
            neighbours: &mut self.neighbours,
            now,
            ip_ident: &mut self.ip_ident,
            forward_notices: self.forward_notices.as_ref().map(AsFd::as_fd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CopiedNetwork, ForwardProtocol};
    use crate::options::parse_options;
    use smoltcp::wire::EthernetAddress;

    /// An IPv6 forward without a guest address goes, on a copied network,
    /// to the copied address until the guest is seen using one of the
    /// prefix (passt's "address seen"); without a copied network, nowhere
    /// until then. An IPv4 one goes to the copied (first DHCP) address.
    #[test]
    fn copied_ipv6_forwards_go_to_the_address_seen() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let mut cfg = parse_options("ipv6-prefix=2001:db8:99::,ipv6-prefixlen=64").unwrap();
        let fwd = |host: &str| HostForward {
            protocol: ForwardProtocol::Tcp,
            host: host.parse().unwrap(),
            guest_addr: None,
            guest_port: 8080,
            v6_only: true,
            device: None,
        };
        let mut neighbours = Neighbours::default();
        let v6 = fwd("[::]:8080");
        assert_eq!(forward_guest(&cfg, &neighbours, &v6), None);
        cfg.copied = Some(CopiedNetwork {
            guest: cfg.dhcp_start,
            dhcp_dns: Vec::new(),
            map_gw: true,
            guest6: Some(a("2001:db8:99::2")),
            dns6: Vec::new(),
            link6: None,
        });
        assert_eq!(
            forward_guest(&cfg, &neighbours, &v6),
            Some("[2001:db8:99::2]:8080".parse().unwrap())
        );
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        // A link-local source is not the address forwards go to.
        neighbours.learn(a("fe80::9"), mac);
        assert_eq!(
            forward_guest(&cfg, &neighbours, &v6),
            Some("[2001:db8:99::2]:8080".parse().unwrap())
        );
        neighbours.learn(a("2001:db8:99:0:5054:ff:fe12:3456"), mac);
        assert_eq!(
            forward_guest(&cfg, &neighbours, &v6),
            Some("[2001:db8:99:0:5054:ff:fe12:3456]:8080".parse().unwrap())
        );
        assert_eq!(
            forward_guest(&cfg, &neighbours, &fwd("0.0.0.0:8080")),
            Some(SocketAddr::new(cfg.dhcp_start.into(), 8080))
        );
    }

    /// A UDP flow shown to the guest from a link-local address goes to the
    /// guest's link-local address once one is known; others stay.
    #[test]
    fn link_local_peers_reach_the_guests_link_local_address() {
        let s = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut neighbours = Neighbours::default();
        let guest = s("[2001:db8:99::2]:5300");
        let gateway = s("[fe80::1]:40000");
        assert_eq!(link_local_guest(&neighbours, guest, gateway), guest);
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        neighbours.learn("fe80::9".parse::<Ipv6Addr>().unwrap(), mac);
        neighbours.learn("2001:db8:99::2".parse::<Ipv6Addr>().unwrap(), mac);
        assert_eq!(
            link_local_guest(&neighbours, guest, gateway),
            s("[fe80::9]:5300")
        );
        for remote in ["[2001:db8:99::3]:53", "10.0.2.2:53"] {
            assert_eq!(link_local_guest(&neighbours, guest, s(remote)), guest);
        }
        let v4 = s("10.0.2.15:53");
        assert_eq!(link_local_guest(&neighbours, v4, gateway), v4);
    }
}
