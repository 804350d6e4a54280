//! IPv6 for the stack: header checks and dispatch of guest IPv6 packets to
//! neighbour discovery and echo ([`crate::ndp`]), the stateless DHCPv6
//! server (`slipway_dhcp::v6`), and the same UDP, DNS and TCP handlers
//! IPv4 uses (their flow keys are address-family generic), plus the
//! periodic router advertisement.
//!
//! A child of `stack` so it can share the handlers' state without
//! widening their visibility.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use mio::Registry;
use smoltcp::wire::{EthernetAddress, IpProtocol, Ipv6Packet};

use super::{Stack, StackError};
use crate::config::{StackConfig, ROUTER_LINK_LOCAL};
use crate::ctx::{DropReason, GATEWAY_MAC, IPV6_HEADER_LEN};
use crate::{ndp, udp};
use slipway_dhcp::v6::{Dhcpv6Config, Dhcpv6Server, ALL_SERVERS, SERVER_PORT};

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
    /// address and the search list (neither under `restrict=on`).
    pub fn new(cfg: &StackConfig) -> Result<Self, StackError> {
        let dhcp = Dhcpv6Server::new(&Dhcpv6Config {
            server_mac: GATEWAY_MAC.0,
            dns_servers: if cfg.restrict {
                Vec::new()
            } else {
                vec![cfg.ipv6.dns]
            },
            domain_search: if cfg.restrict {
                Vec::new()
            } else {
                cfg.domainname
                    .iter()
                    .chain(&cfg.dnssearch)
                    .cloned()
                    .collect()
            },
        })?;
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
                && (v6.in_prefix(dst)
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
            IpProtocol::Udp => self.handle_udp6(registry, src_mac, src, dst, payload, now),
            IpProtocol::Tcp if !multicast => self.tcp.on_guest_segment(
                &mut core.ctx(registry, now),
                src.into(),
                dst.into(),
                payload,
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
        segment: &[u8],
        now: Instant,
    ) {
        let core = &mut self.core;
        let Some((sport, dport, payload)) =
            udp::check(&mut core.counters, src.into(), dst.into(), segment)
        else {
            return;
        };
        if dport == SERVER_PORT && (dst == ALL_SERVERS || core.cfg.ipv6.is_virtual(dst)) {
            let reply = match self.v6.dhcp.handle(payload) {
                Ok(Some(reply)) => reply,
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(%err, "DHCPv6 message refused");
                    core.counters.drop(DropReason::BadDhcp);
                    return;
                }
            };
            tracing::info!(mac = %src_mac, "DHCPv6 reply (stateless)");
            udp::emit(
                &mut core.ctx(registry, now),
                Some(src_mac),
                SocketAddr::new(ROUTER_LINK_LOCAL.into(), SERVER_PORT),
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
