//! The validated configuration of one user-mode network.
//!
//! [`StackConfig`] is what the rest of the stack reads; it is produced from
//! QEMU's `-netdev user` option string by [`crate::options`] and from the
//! command line's own flags (`--mtu`, `--dns-upstream`). Everything in it has
//! been checked already, so the data path never re-validates configuration.
//!
//! Configuration never imports the runtime: [`services`] (DHCP boot,
//! TFTP, SMB, guest forwards) and [`OptionsError`] live here so the option
//! parser and the validated model depend only on each other's data.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

pub mod passt_ports;
pub mod services;

/// The host's resolvers from `/etc/resolv.conf`: the default DNS upstreams.
pub use slipway_dns::system_upstreams as system_dns_upstreams;

/// Largest MTU the stack accepts (passt's default, the largest that fits a
/// 64 KiB IPv4 packet with an Ethernet header).
pub const MAX_MTU: usize = 65520;
/// Smallest MTU the stack accepts (the IPv4 minimum).
pub const MIN_MTU: usize = 68;
/// Number of addresses the DHCP pool hands out, as libslirp does.
pub const DHCP_POOL_SIZE: u8 = 16;

slipway_host::keywords! {
    /// Transport protocol of a port forward or a flow, with its keyword in
    /// the options and the API (`tcp`, `udp`).
    #[derive(PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum ForwardProtocol {
        /// TCP: a host listener whose connections are translated to guest connections.
        Tcp = "tcp",
        /// UDP: a host socket whose datagrams are relayed to a guest port.
        Udp = "udp",
    }
}

impl std::fmt::Display for ForwardProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One host-to-guest forward (`hostfwd=` / `-redir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostForward {
    /// TCP or UDP.
    pub protocol: ForwardProtocol,
    /// Address and port the host side listens on (address 0.0.0.0 when the
    /// option left it empty, as QEMU does).
    pub host: SocketAddr,
    /// Guest address; `None` means the first DHCP address (QEMU's rule)
    /// for an IPv4 host address, and the guest's learned (SLAAC) address in
    /// the IPv6 prefix for an IPv6 host address (on a copied network, the
    /// copied address until the guest is seen using another).
    pub guest_addr: Option<IpAddr>,
    /// Guest port.
    pub guest_port: u16,
    /// An IPv6 host address takes IPv6 clients only (`IPV6_V6ONLY`): the
    /// IPv6 listener of a port that has an IPv4 one beside it, as passt
    /// binds one per family. `false` leaves the kernel's default
    /// (`net.ipv6.bindv6only`, usually both families), as QEMU's
    /// `hostfwd=` does.
    pub v6_only: bool,
    /// The interface the host side is bound to (`SO_BINDTODEVICE`, passt's
    /// `ADDR%IFNAME/`): only clients that arrive through it are taken.
    /// A valid interface name (checked where it was given).
    pub device: Option<String>,
}

impl HostForward {
    /// Whether the forward reaches the guest over IPv6: an IPv6 guest
    /// address, or none with an IPv6 host address.
    pub fn guest_is_ipv6(&self) -> bool {
        match self.guest_addr {
            Some(ip) => ip.is_ipv6(),
            None => self.host.is_ipv6(),
        }
    }
}

/// The IPv6 side of the network (`ipv6=`, `ipv6-prefix=`, ...): SLAAC
/// through router advertisements, like QEMU's `-netdev user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Config {
    /// Whether IPv6 is served at all (`ipv6=off` drops every IPv6 frame).
    pub enabled: bool,
    /// The guest prefix (host bits zero), advertised for SLAAC.
    pub prefix: Ipv6Addr,
    /// Length of the prefix (64 for SLAAC to work).
    pub prefix_len: u8,
    /// Guest-visible address of the host; maps to host `::1`.
    pub host: Ipv6Addr,
    /// Guest-visible DNS server address; queries to it go to the upstreams.
    pub dns: Ipv6Addr,
    /// The stack's link-local address: the source of its router
    /// advertisements and neighbour solicitations, hence the guest's
    /// default gateway ([`ROUTER_LINK_LOCAL`] unless slipway runs as
    /// passt or pasta, which take the host's gateway's).
    pub router: Ipv6Addr,
}

impl Ipv6Config {
    /// Whether `addr` lies inside the guest prefix.
    pub fn in_prefix(&self, addr: Ipv6Addr) -> bool {
        let mask = prefix6_mask(self.prefix_len);
        u128::from(addr) & mask == u128::from(self.prefix)
    }

    /// Whether `addr` is a virtual IPv6 address the stack owns (it answers
    /// neighbour solicitations for it and terminates traffic to it).
    pub fn is_virtual(&self, addr: Ipv6Addr) -> bool {
        addr == self.host || addr == self.dns || addr == self.router
    }
}

/// The stack's link-local address: the source of its router
/// advertisements, hence the guest's default gateway (libslirp's choice).
pub const ROUTER_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

/// Mask of an IPv6 prefix of `len` bits (0 to 128).
pub fn prefix6_mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l.min(128))),
    }
}

/// Resource caps that keep a hostile or buggy guest from exhausting the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most TCP connections translated at once.
    pub max_tcp_flows: usize,
    /// Most UDP flows (guest address/port pairs with a host socket) at once.
    pub max_udp_flows: usize,
    /// Seconds a UDP flow may stay idle before its host socket is closed.
    pub udp_idle_timeout_secs: u64,
    /// Bytes the stack itself may hold for one flow (data the host socket
    /// would not take yet); beyond it the guest's window closes.
    pub max_flow_buffer: usize,
    /// Frames queued toward the guest before handlers are told to hold back.
    pub guest_tx_slots: usize,
    /// TFTP transfers at once (`tftp=`); more requests get an error packet.
    pub max_tftp_transfers: usize,
    /// DNS queries relayed and awaiting an upstream answer at once, 1 to
    /// 4096 (others are clamped); each holds one host socket. More are
    /// dropped and counted (`flow-limit`); the guest's resolver retries.
    pub max_dns_queries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tcp_flows: 4096,
            max_udp_flows: 1024,
            udp_idle_timeout_secs: 60,
            max_flow_buffer: 256 * 1024,
            guest_tx_slots: 512,
            max_tftp_transfers: slipway_tftp::MAX_TRANSFERS,
            max_dns_queries: 128,
        }
    }
}

/// The complete, validated configuration of one user-mode network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// Guest network address (host bits zero).
    pub net: Ipv4Addr,
    /// Prefix length of the guest network.
    pub prefix_len: u8,
    /// Guest-visible address of the host (the gateway); maps to host loopback.
    pub host: Ipv4Addr,
    /// Guest-visible DNS server address; queries to it go to the upstreams.
    pub dns: Ipv4Addr,
    /// First address of the DHCP pool ([`DHCP_POOL_SIZE`] addresses).
    pub dhcp_start: Ipv4Addr,
    /// `restrict=on`: no router or DNS in DHCP, no new outbound flows.
    pub restrict: bool,
    /// Whether the guest may reach the host's loopback: through the host
    /// address (mapped to 127.0.0.1 / ::1) or addressed to 127/8 directly.
    /// Off (`--no-host-loopback`), both are refused.
    pub host_loopback: bool,
    /// Whether queries to the DNS address are relayed to the upstreams
    /// (off: slirp4netns's `--disable-dns`; the address is then one of the
    /// network's with nothing behind it).
    pub dns_relay: bool,
    /// Host source addresses of outbound flows (slirp4netns's
    /// `--outbound-addr`, `--outbound-addr6`).
    pub outbound: OutboundAddrs,
    /// DHCP option 12.
    pub hostname: Option<String>,
    /// DHCP option 15.
    pub domainname: Option<String>,
    /// DHCP option 119 (RFC 3397), in the order given.
    pub dnssearch: Vec<String>,
    /// Host-to-guest forwards.
    pub hostfwd: Vec<HostForward>,
    /// Whether IPv4 is served at all (`ipv4=off` leaves the guest without it).
    pub ipv4: bool,
    /// The IPv6 side of the network.
    pub ipv6: Ipv6Config,
    /// Link MTU, advertised in DHCP option 26.
    pub mtu: usize,
    /// Upstream DNS servers, in order of preference.
    pub dns_upstreams: Vec<SocketAddr>,
    /// Resource caps.
    pub limits: Limits,
    /// TFTP, SMB and guest forwards.
    pub services: services::Services,
    /// passt's model instead of QEMU's: the guest has the host's own
    /// address, and the subnet's other addresses are hosts beyond the
    /// host ([`CopiedNetwork`]); `None` is QEMU's virtual subnet.
    pub copied: Option<CopiedNetwork>,
    /// How long the event loop keeps polling without blocking after a
    /// batch that moved data (`--busy-poll-us`; zero, the default: it
    /// blocks at once). See [`crate::busy_poll`].
    pub busy_poll: std::time::Duration,
}

/// passt's model of the guest's network (slipway as `passt`): the guest
/// gets one address, the host's (copied with its prefix from the host's
/// interface), the network's host address is the host's default gateway
/// (still mapped to the host's loopback), and every other address of the
/// subnet is a real host on the host's network: the stack answers ARP for
/// it and sends the guest's traffic there through host sockets, as it
/// does for addresses off the subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedNetwork {
    /// The guest's one address (DHCP hands out no other).
    pub guest: Ipv4Addr,
    /// The DNS servers DHCP advertises (passt: the host's resolvers, a
    /// loopback one replaced by the gateway address that maps to it).
    pub dhcp_dns: Vec<Ipv4Addr>,
    /// Whether the host address (the gateway) maps to the host's loopback;
    /// off (passt's `--no-map-gw`), traffic to it goes to the real gateway.
    pub map_gw: bool,
    /// The guest's one IPv6 address (the host's global one, in the IPv6
    /// prefix, which is the host's); `None` when IPv6 is not copied. The
    /// prefix's other addresses are then hosts beyond the host, as the
    /// IPv4 subnet's are, and `ipv6.host` is the host's gateway's
    /// (link-local) address.
    pub guest6: Option<Ipv6Addr>,
    /// The IPv6 DNS servers advertised (RDNSS, DHCPv6): the host's IPv6
    /// resolvers, a loopback one replaced by the mapped gateway.
    pub dns6: Vec<Ipv6Addr>,
    /// The index of the host interface the IPv6 side was copied from:
    /// with `map_gw` off, a link-local gateway is the real router on
    /// that link and is reached there (the host socket's scope), as
    /// passt reaches it. `None`: no such interface (none given, no
    /// default route), and a link-local gateway is not reached.
    pub link6: Option<u32>,
}

/// The host addresses outbound TCP connections, UDP flows and DNS
/// queries are sent from, per family; `None` lets the kernel choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboundAddrs {
    /// Source of IPv4 flows.
    pub v4: Option<Ipv4Addr>,
    /// Source of IPv6 flows.
    pub v6: Option<Ipv6Addr>,
}

impl OutboundAddrs {
    /// The source address to bind a socket toward `target` to, if any.
    /// A link-local target gets none: the kernel picks the link-local
    /// address of its interface.
    pub fn for_target(&self, target: SocketAddr) -> Option<IpAddr> {
        match target {
            SocketAddr::V4(_) => self.v4.map(IpAddr::V4),
            SocketAddr::V6(t) if t.ip().is_unicast_link_local() => None,
            SocketAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
}

impl StackConfig {
    /// Netmask of the guest network.
    pub fn netmask(&self) -> Ipv4Addr {
        slipway_host::netmask_v4(self.prefix_len)
    }

    /// Whether `addr` lies inside the guest network.
    pub fn in_subnet(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & u32::from(self.netmask()) == u32::from(self.net)
    }

    /// Directed broadcast address of the guest network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) | !u32::from(self.netmask()))
    }

    /// The address of a network namespace served through a tap: the 100th
    /// of the network, as slirp4netns uses (10.0.2.100; its
    /// `recommended_vguest`), or the first DHCP address when the network
    /// is too small.
    pub fn namespace_address(&self) -> Ipv4Addr {
        let hundredth = Ipv4Addr::from(u32::from(self.net).wrapping_add(100));
        if self.in_subnet(hundredth) && hundredth != self.broadcast() && !self.is_virtual(hundredth)
        {
            hundredth
        } else {
            self.dhcp_start
        }
    }

    /// Whether `addr` is a virtual address the stack itself owns on the
    /// guest's link (it answers ARP for it and terminates traffic to it).
    pub fn is_virtual(&self, addr: Ipv4Addr) -> bool {
        addr == self.host || addr == self.dns || self.services.owns(addr)
    }

    /// Whether `addr` is a host beyond the host on a copied network
    /// ([`CopiedNetwork`]): an address of the subnet that is neither the
    /// guest's, virtual, nor the broadcast address.
    pub fn is_copied_peer(&self, addr: Ipv4Addr) -> bool {
        self.copied.as_ref().is_some_and(|c| {
            self.in_subnet(addr)
                && addr != c.guest
                && addr != self.net
                && addr != self.broadcast()
                && !self.is_virtual(addr)
        })
    }

    /// Whether `addr` is a host beyond the host in a copied IPv6 prefix
    /// ([`CopiedNetwork::guest6`]): an address of the prefix that is
    /// neither the guest's, virtual, nor the prefix's own.
    pub fn is_copied_peer6(&self, addr: Ipv6Addr) -> bool {
        self.copied.as_ref().is_some_and(|c| {
            c.guest6.is_some_and(|g| g != addr)
                && self.ipv6.in_prefix(addr)
                && addr != self.ipv6.prefix
                && !self.ipv6.is_virtual(addr)
        })
    }

    /// The IPv6 DNS servers advertised (RDNSS, DHCPv6): none under
    /// `restrict=on`, where the guest gets no way out; the copied ones
    /// on a copied network.
    pub fn ipv6_dns_servers(&self) -> Vec<Ipv6Addr> {
        match &self.copied {
            _ if self.restrict => Vec::new(),
            Some(c) if c.guest6.is_some() => c.dns6.clone(),
            _ => vec![self.ipv6.dns],
        }
    }

    /// The DNS search list advertised over IPv6 (DNSSL, DHCPv6): the domain
    /// name first, then `dnssearch`; none under `restrict=on`.
    pub fn dns_search_list(&self) -> Vec<String> {
        if self.restrict {
            Vec::new()
        } else {
            self.domainname
                .iter()
                .chain(&self.dnssearch)
                .cloned()
                .collect()
        }
    }

    /// Where a new outbound flow from the guest to `dst` goes on the host.
    ///
    /// Every protocol handler asks this one question, so the address
    /// mapping and restrict mode are decided in one place.
    pub fn outbound_target(&self, dst: SocketAddr) -> Outbound {
        let (is_dns, is_host, host_local, no_route, loopback) = match dst {
            SocketAddr::V4(v4) => {
                // SMB and guest forwards work under restrict=on, as in libslirp.
                if let Some(target) = self.services.redirect(v4) {
                    return Outbound::Host(target);
                }
                let ip = *v4.ip();
                (
                    ip == self.dns,
                    ip == self.host,
                    // 127/8 straight from the guest: the host's loopback
                    // as much as the host address is.
                    ip.is_loopback(),
                    (self.in_subnet(ip) && !self.is_copied_peer(ip))
                        || ip.is_broadcast()
                        || ip.is_multicast()
                        // 0.0.0.0/8: "this host" (connect() to it reaches loopback).
                        || ip.octets()[0] == 0,
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                )
            }
            SocketAddr::V6(v6) => {
                let ip = *v6.ip();
                if !self.ipv6.enabled {
                    return Outbound::Denied(DenyReason::Unsupported);
                }
                (
                    ip == self.ipv6.dns,
                    ip == self.ipv6.host,
                    ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
                    (self.ipv6.in_prefix(ip) && !self.is_copied_peer6(ip))
                        || ip.is_multicast()
                        || ip.is_unspecified()
                        || ip.is_loopback()
                        || ip.is_unicast_link_local()
                        || ip.to_ipv4_mapped().is_some(),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                )
            }
        };
        if is_dns && dst.port() == 53 && self.dns_relay {
            return if self.restrict {
                Outbound::Denied(DenyReason::Restricted)
            } else {
                Outbound::Dns
            };
        }
        if self.restrict {
            return Outbound::Denied(DenyReason::Restricted);
        }
        if (is_host || host_local) && !self.host_loopback {
            // --no-host-loopback: nothing of the guest's reaches the host's
            // loopback, whether through the host address or addressed to it.
            return Outbound::Denied(DenyReason::HostLoopbackDisabled);
        }
        if let Some(copied) = self.copied.as_ref().filter(|c| is_host && !c.map_gw) {
            // The real gateway; a link-local one on the copied link.
            return match (dst, copied.link6) {
                (SocketAddr::V6(v6), Some(link)) if v6.ip().is_unicast_link_local() => {
                    Outbound::Host(SocketAddr::V6(SocketAddrV6::new(
                        *v6.ip(),
                        v6.port(),
                        0,
                        link,
                    )))
                }
                (SocketAddr::V6(v6), None) if v6.ip().is_unicast_link_local() => {
                    Outbound::Denied(DenyReason::NoRoute)
                }
                _ => Outbound::Host(dst),
            };
        }
        if is_host {
            return Outbound::Host(SocketAddr::new(loopback, dst.port()));
        }
        if no_route {
            // Other addresses of the virtual subnet have nothing behind them.
            return Outbound::Denied(DenyReason::NoRoute);
        }
        Outbound::Host(dst)
    }
}

/// The answer of [`StackConfig::outbound_target`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Open a host socket to this address.
    Host(SocketAddr),
    /// A query to the DNS address: relay it to the upstream resolvers.
    Dns,
    /// Refuse the flow (TCP: RST; UDP: drop; ICMP: no reply).
    Denied(DenyReason),
}

/// Why an outbound flow was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// `restrict=on`.
    Restricted,
    /// The host address, or a loopback address, under `--no-host-loopback`.
    HostLoopbackDisabled,
    /// A virtual address with nothing behind it, broadcast or multicast.
    NoRoute,
    /// An address family the stack does not serve.
    Unsupported,
}

/// Why an option string (or a `--redir` spec) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A key QEMU's `-netdev user` does not have.
    #[error("unknown option '{key}'")]
    Unknown {
        /// The key as written.
        key: String,
    },
    /// A key QEMU has that slipway does not implement yet.
    #[error("option '{key}' is not supported yet")]
    NotSupported {
        /// The key as written.
        key: String,
    },
    /// A key written without `=value` that needs one.
    #[error("option '{key}' needs a value ('{key}=...')")]
    MissingValue {
        /// The key as written.
        key: String,
    },
    /// A value that does not parse or breaks a rule.
    #[error("invalid value '{value}' for option '{key}': {reason}")]
    Invalid {
        /// The option.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// [`OptionsError::Invalid`]: `value` given for option `key` is refused
/// for `reason`.
pub(crate) fn invalid(
    key: &str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> OptionsError {
    OptionsError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// DHCP lease time, as libslirp hands out.
const LEASE_TIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The DHCP server's configuration for a user-mode network (libslirp's
/// choices: server identifier and router are the host address, 24 h leases).
pub(crate) fn dhcp_config(cfg: &StackConfig) -> slipway_dhcp::DhcpConfig {
    let start = cfg.dhcp_start;
    let end = match &cfg.copied {
        Some(copied) => copied.guest,
        None => Ipv4Addr::from(u32::from(start) + u32::from(DHCP_POOL_SIZE) - 1),
    };
    slipway_dhcp::DhcpConfig {
        server_ip: cfg.host,
        netmask: cfg.netmask(),
        router: (!cfg.restrict).then_some(cfg.host),
        dns_servers: match &cfg.copied {
            _ if cfg.restrict => Vec::new(),
            Some(copied) => copied.dhcp_dns.clone(),
            None => vec![cfg.dns],
        },
        pool: slipway_dhcp::AddressPool::Range { start, end },
        static_hosts: Vec::new(),
        // passt's leases never end, and it names no next server.
        lease_time: cfg.copied.is_none().then_some(LEASE_TIME),
        hostname: cfg.hostname.clone(),
        domain_name: cfg.domainname.clone(),
        domain_search: cfg.dnssearch.clone(),
        mtu: u16::try_from(cfg.mtu).ok(),
        broadcast: None,
        boot_file: cfg.services.bootfile.clone(),
        tftp_server_name: cfg.services.tftp_server_name.clone(),
        next_server: cfg.copied.as_ref().map(|_| Ipv4Addr::UNSPECIFIED),
        authoritative: true,
    }
}

/// The address a forwarded peer appears as to a guest at `guest` (whose
/// family decides): loopback peers come from the host address, and so,
/// on a copied network, do clients of the host's own address (the one the
/// guest has too, as passt maps it); others keep their own address; a
/// peer that cannot be shown in the guest's family (or that hides behind
/// a guest-side address) gets `None`.
pub(crate) fn guest_visible(
    cfg: &StackConfig,
    guest: IpAddr,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    let peer_ip = match peer.ip() {
        IpAddr::V6(ip) => ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
        v4 => v4,
    };
    let copied_own = cfg.copied.as_ref().is_some_and(|c| {
        peer_ip == IpAddr::V4(c.guest) || c.guest6.map(IpAddr::V6) == Some(peer_ip)
    });
    let ip = match (guest, peer_ip) {
        (IpAddr::V4(_), IpAddr::V4(ip))
            if ip.is_loopback() || ip.is_unspecified() || copied_own =>
        {
            IpAddr::V4(cfg.host)
        }
        (IpAddr::V4(_), IpAddr::V4(ip)) if !cfg.in_subnet(ip) || cfg.is_copied_peer(ip) => {
            IpAddr::V4(ip)
        }
        (IpAddr::V4(_), IpAddr::V6(ip)) if ip.is_loopback() => IpAddr::V4(cfg.host),
        (IpAddr::V6(_), IpAddr::V6(ip))
            if ip.is_loopback() || ip.is_unspecified() || copied_own =>
        {
            IpAddr::V6(cfg.ipv6.host)
        }
        (IpAddr::V6(_), IpAddr::V4(ip)) if ip.is_loopback() => IpAddr::V6(cfg.ipv6.host),
        (IpAddr::V6(_), IpAddr::V6(ip))
            if (!cfg.ipv6.in_prefix(ip) || cfg.is_copied_peer6(ip))
                && !ip.is_unicast_link_local() =>
        {
            IpAddr::V6(ip)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, peer.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_options;

    fn target(cfg: &StackConfig, dst: &str) -> Outbound {
        cfg.outbound_target(dst.parse().unwrap())
    }

    #[test]
    fn outbound_mapping_and_restrict() {
        let mut cfg = parse_options("").unwrap();
        assert_eq!(
            target(&cfg, "10.0.2.2:80"),
            Outbound::Host("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(target(&cfg, "10.0.2.3:53"), Outbound::Dns);
        assert_eq!(
            target(&cfg, "10.0.2.3:80"),
            Outbound::Denied(DenyReason::NoRoute)
        );
        assert_eq!(
            target(&cfg, "10.0.2.77:80"),
            Outbound::Denied(DenyReason::NoRoute)
        );
        assert_eq!(
            target(&cfg, "224.0.0.251:5353"),
            Outbound::Denied(DenyReason::NoRoute)
        );
        assert_eq!(
            target(&cfg, "192.0.2.1:80"),
            Outbound::Host("192.0.2.1:80".parse().unwrap())
        );
        assert_eq!(
            target(&cfg, "[fec0::2]:80"),
            Outbound::Host("[::1]:80".parse().unwrap())
        );
        assert_eq!(target(&cfg, "[fec0::3]:53"), Outbound::Dns);
        for no_route in [
            "[fec0::3]:80",
            "[fec0::99]:80",
            "[::1]:80",
            "[ff02::1]:80",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(
                target(&cfg, no_route),
                Outbound::Denied(DenyReason::NoRoute),
                "{no_route}"
            );
        }
        assert_eq!(
            target(&cfg, "[2001:db8::1]:80"),
            Outbound::Host("[2001:db8::1]:80".parse().unwrap())
        );
        let off = parse_options("ipv6=off").unwrap();
        assert_eq!(
            target(&off, "[fec0::2]:80"),
            Outbound::Denied(DenyReason::Unsupported)
        );
        assert_eq!(
            target(&cfg, "127.0.0.5:80"),
            Outbound::Host("127.0.0.5:80".parse().unwrap()),
            "127/8 is reached by default, as before"
        );
        for this_host in ["0.0.0.0:80", "0.1.2.3:80"] {
            assert_eq!(
                target(&cfg, this_host),
                Outbound::Denied(DenyReason::NoRoute),
                "{this_host}"
            );
        }
        cfg.host_loopback = false;
        for host in [
            "10.0.2.2:80",
            "[fec0::2]:80",
            "127.0.0.1:80",
            "127.0.0.5:80",
            "127.255.255.254:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(
                target(&cfg, host),
                Outbound::Denied(DenyReason::HostLoopbackDisabled),
                "{host}"
            );
        }
        let cfg = parse_options("restrict=on").unwrap();
        for dst in [
            "10.0.2.2:80",
            "10.0.2.3:53",
            "192.0.2.1:80",
            "[fec0::2]:80",
            "[fec0::3]:53",
        ] {
            assert_eq!(
                target(&cfg, dst),
                Outbound::Denied(DenyReason::Restricted),
                "{dst}"
            );
        }
    }

    /// passt's model: one address handed out, the resolvers as given, a
    /// lease that never ends, no next server; subnet peers are hosts.
    #[test]
    fn copied_network() {
        let mut cfg = parse_options("ipv6=off").unwrap();
        cfg.net = Ipv4Addr::new(192, 0, 2, 0);
        cfg.host = Ipv4Addr::new(192, 0, 2, 1);
        cfg.dns = cfg.host;
        cfg.dns_relay = false;
        cfg.dhcp_start = Ipv4Addr::new(192, 0, 2, 10);
        cfg.copied = Some(CopiedNetwork {
            guest: cfg.dhcp_start,
            dhcp_dns: vec![Ipv4Addr::new(198, 51, 100, 53)],
            map_gw: true,
            guest6: None,
            dns6: Vec::new(),
            link6: None,
        });
        let dhcp = dhcp_config(&cfg);
        assert_eq!(
            dhcp.pool,
            slipway_dhcp::AddressPool::Range {
                start: cfg.dhcp_start,
                end: cfg.dhcp_start
            }
        );
        assert_eq!(dhcp.dns_servers, [Ipv4Addr::new(198, 51, 100, 53)]);
        assert_eq!(
            (dhcp.lease_time, dhcp.next_server),
            (None, Some(Ipv4Addr::UNSPECIFIED))
        );
        assert!(slipway_dhcp::DhcpServer::new(dhcp).is_ok());
        assert_eq!(
            target(&cfg, "192.0.2.1:53"),
            Outbound::Host("127.0.0.1:53".parse().unwrap()),
            "no relay: the gateway's port 53 is the host's"
        );
        assert_eq!(
            target(&cfg, "192.0.2.77:80"),
            Outbound::Host("192.0.2.77:80".parse().unwrap())
        );
        for not_routed in ["192.0.2.255:80", "192.0.2.0:80"] {
            assert_eq!(
                target(&cfg, not_routed),
                Outbound::Denied(DenyReason::NoRoute)
            );
        }
        let peer = "192.0.2.77:80".parse().unwrap();
        assert_eq!(guest_visible(&cfg, cfg.dhcp_start.into(), peer), Some(peer));
        // A client of the host's own address (the guest's too) comes
        // from the gateway, as a loopback one does.
        let own = SocketAddr::new(cfg.dhcp_start.into(), 4000);
        assert_eq!(
            guest_visible(&cfg, cfg.dhcp_start.into(), own),
            Some("192.0.2.1:4000".parse().unwrap())
        );
        // IPv6 likewise: the host's own address comes from the gateway,
        // the prefix's other hosts as themselves.
        cfg.ipv6.prefix = "2001:db8:99::".parse().unwrap();
        cfg.ipv6.host = "fe80::1".parse().unwrap();
        cfg.copied.as_mut().unwrap().guest6 = Some("2001:db8:99::2".parse().unwrap());
        let guest6: IpAddr = "2001:db8:99::2".parse().unwrap();
        for (peer, seen) in [
            ("[2001:db8:99::2]:4000", "[fe80::1]:4000"),
            ("[::1]:4001", "[fe80::1]:4001"),
            ("[2001:db8:99::3]:4002", "[2001:db8:99::3]:4002"),
        ] {
            assert_eq!(
                guest_visible(&cfg, guest6, peer.parse().unwrap()),
                Some(seen.parse().unwrap()),
                "{peer}"
            );
        }
        cfg.copied.as_mut().unwrap().map_gw = false;
        assert_eq!(
            target(&cfg, "192.0.2.1:80"),
            Outbound::Host("192.0.2.1:80".parse().unwrap())
        );
        // --no-map-gw with a link-local IPv6 gateway: the real router on
        // the copied link, which must be known.
        cfg.ipv6.enabled = true;
        assert_eq!(
            target(&cfg, "[fe80::1]:80"),
            Outbound::Denied(DenyReason::NoRoute)
        );
        cfg.copied.as_mut().unwrap().link6 = Some(7);
        assert_eq!(
            target(&cfg, "[fe80::1]:80"),
            Outbound::Host(SocketAddr::V6(SocketAddrV6::new(
                "fe80::1".parse().unwrap(),
                80,
                0,
                7
            )))
        );
        cfg.outbound.v6 = Some("2001:db8:99::2".parse().unwrap());
        assert_eq!(
            cfg.outbound.for_target(SocketAddr::V6(SocketAddrV6::new(
                "fe80::1".parse().unwrap(),
                80,
                0,
                7
            ))),
            None
        );
    }

    #[test]
    fn subnet_helpers() {
        let cfg = parse_options("net=192.168.0.0/16").unwrap();
        assert_eq!(cfg.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(cfg.broadcast(), Ipv4Addr::new(192, 168, 255, 255));
        assert!(cfg.in_subnet(Ipv4Addr::new(192, 168, 3, 4)));
        assert!(!cfg.in_subnet(Ipv4Addr::new(192, 169, 0, 1)));
        assert!(
            cfg.is_virtual(cfg.host) && cfg.is_virtual(cfg.dns) && !cfg.is_virtual(cfg.dhcp_start)
        );
        assert_eq!(slipway_host::netmask_v4(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(slipway_host::netmask_v4(32), Ipv4Addr::BROADCAST);
        let v6 = parse_options("ipv6-prefix=2001:db8:1::,ipv6-prefixlen=48")
            .unwrap()
            .ipv6;
        assert!(v6.in_prefix("2001:db8:1:ffff::1".parse().unwrap()));
        assert!(!v6.in_prefix("2001:db8:2::1".parse().unwrap()));
        assert!(v6.is_virtual("2001:db8:1::2".parse().unwrap()));
        assert!(v6.is_virtual(ROUTER_LINK_LOCAL));
        assert_eq!(prefix6_mask(0), 0);
        assert_eq!(prefix6_mask(128), u128::MAX);
    }
}
