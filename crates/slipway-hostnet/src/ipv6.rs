//! IPv6 configuration of the guests on a bridge network: router
//! advertisements for every IPv6 `<ip>` and a DHCPv6 server, as libvirt's
//! dnsmasq provides them (`enable-ra`, DHCPv6 on the bridge): stateless
//! (DNS and domain) for SLAAC prefixes, stateful (addresses leased from
//! the `<range>`, `<host>` reservations) when the IPv6 `<ip>` has a DHCP
//! range, which the advertisements then announce with the M flag.
//!
//! The messages come from the code the user-mode stack uses too
//! (`slipway_dhcp::ra` and `slipway_dhcp::v6`); here they travel over real
//! sockets bound to the bridge: a raw ICMPv6 socket (CAP_NET_RAW) that
//! hears router solicitations and sends advertisements to all nodes, and a
//! UDP socket on port 547 in the DHCPv6 servers' multicast group.
//!
//! Advertisements must come from the bridge's link-local address (hosts
//! drop others, RFC 4861 6.1.2), which exists only once the bridge has a
//! port with carrier and has passed duplicate address detection; until
//! then advertisements due (the first one, or answers to solicitations)
//! wait, and go out on the first tick after it is ready.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use slipway_dhcp::ra::{self, Prefix, RouterAdvert};
use slipway_dhcp::v6::{
    Dhcpv6Config, Dhcpv6Host, Dhcpv6Pool, Dhcpv6Server, ALL_SERVERS, CLIENT_PORT, SERVER_PORT,
};
use slipway_netmgr::plan::ServiceConfig;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::fsutil::Reread;
use crate::leases::{parse_duid, LeaseRecord};

/// All-routers multicast group (ff02::2): where solicitations go.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Answers to solicitations go to all nodes, at most this often (RFC 4861
/// 6.2.6, MIN_DELAY_BETWEEN_RAS).
const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// `ICMP6_FILTER` socket option (linux/icmpv6.h), not in `libc`.
const ICMP6_FILTER: libc::c_int = 1;
/// Address flags in /proc/net/if_inet6 (IFA_F_TENTATIVE, IFA_F_DADFAILED).
const IFA_F_TENTATIVE: u32 = 0x40;
const IFA_F_DADFAILED: u32 = 0x08;

/// Router advertisements and DHCPv6 on one bridge.
pub(crate) struct Ipv6Service {
    interface: String,
    ifindex: u32,
    icmp: Socket,
    dhcp_sock: UdpSocket,
    dhcp: Dhcpv6Server,
    /// Prefix length of the leased range (for the leases table).
    pool_prefix: u8,
    advert: RouterAdvert,
    /// When the next advertisement is due (now: as soon as the bridge's
    /// link-local address is usable).
    next_ra: Instant,
    last_ra: Option<Instant>,
    /// The bridge's MAC address file, when sysfs shows it.
    address: Option<Reread>,
    /// The kernel's table of IPv6 addresses.
    if_inet6: Reread,
}

/// The advertisement for `svc` (without the link-layer address, read when
/// sending): each IPv6 prefix on-link, for SLAAC; the bridge as default
/// router when the network forwards; its addresses as DNS servers when the
/// network has DNS; the O flag, sending clients to the DHCPv6 server for
/// DNS and domain. A prefix with a DHCPv6 range is not autonomous and sets
/// the M flag, as dnsmasq advertises a plain `dhcp-range` (addresses come
/// from DHCPv6 only, not SLAAC).
pub(crate) fn advert(svc: &ServiceConfig) -> RouterAdvert {
    RouterAdvert {
        source_mac: None,
        router_lifetime: if svc.ipv6_router {
            ra::ROUTER_LIFETIME_SECS
        } else {
            0
        },
        managed: svc.ipv6_prefixes.iter().any(|p| p.managed),
        other: true,
        mtu: svc.mtu,
        prefixes: svc
            .ipv6_prefixes
            .iter()
            .map(|p| Prefix {
                prefix: p.address,
                len: p.prefix,
                autonomous: !p.managed,
            })
            .collect(),
        dns_servers: dns_servers(svc),
        search: svc.domain.iter().cloned().collect(),
        dns_lifetime: u32::from(ra::ROUTER_LIFETIME_SECS),
    }
}

fn dns_servers(svc: &ServiceConfig) -> Vec<Ipv6Addr> {
    if !svc.dns {
        return Vec::new();
    }
    svc.ipv6_prefixes.iter().map(|p| p.address).collect()
}

/// The reservations of `svc` with an IPv6 address: by DUID (`id=`) or
/// name; an `id` that is not hex bytes is refused.
fn v6_hosts(svc: &ServiceConfig) -> Result<Vec<Dhcpv6Host>> {
    svc.hosts
        .iter()
        .filter_map(|h| match h.ip? {
            std::net::IpAddr::V6(ip) => Some((h, ip)),
            std::net::IpAddr::V4(_) => None,
        })
        .map(|(h, ip)| {
            let duid = match &h.id {
                Some(id) => Some(parse_duid(id).ok_or_else(|| {
                    Error::Plan(format!(
                        "DHCPv6 host {ip}: id '{id}' is not a DUID (hex bytes separated by ':')"
                    ))
                })?),
                None => None,
            };
            Ok(Dhcpv6Host {
                duid,
                name: h.name.clone(),
                ip,
                lease_time: h
                    .lease_secs
                    .map(|s| (s != 0).then(|| Duration::from_secs(s))),
            })
        })
        .collect()
}

/// The stateful DHCPv6 pool of `svc`: its IPv6 range (libvirt allows DHCP
/// on one IPv6 `<ip>`; of several ranges the first is served) and
/// reservations; `None` without an IPv6 range.
pub(crate) fn dhcpv6_pool(svc: &ServiceConfig) -> Result<Option<Dhcpv6Pool>> {
    let mut ranges = svc.ranges.iter().filter_map(|r| match (r.start, r.end) {
        (std::net::IpAddr::V6(start), std::net::IpAddr::V6(end)) => Some((r, start, end)),
        _ => None,
    });
    let Some((range, start, end)) = ranges.next() else {
        return Ok(None);
    };
    if ranges.next().is_some() {
        tracing::warn!("only the first IPv6 DHCP range ({start} - {end}) is leased");
    }
    Ok(Some(Dhcpv6Pool {
        start,
        end,
        prefix: range.prefix,
        lease_time: (range.lease_secs != 0).then(|| Duration::from_secs(range.lease_secs)),
        hosts: v6_hosts(svc)?,
    }))
}

/// The bridge's MAC address, from its sysfs file (`/sys/class/net/DEV/address`).
fn link_mac(address: Option<&Reread>) -> Option<[u8; 6]> {
    let text = address?.read().ok()?;
    text.trim()
        .parse::<slipway_host::MacAddr>()
        .ok()
        .map(|m| m.0)
}

/// Whether `interface` has a usable (not tentative) link-local address,
/// from the kernel's table of IPv6 addresses (`/proc/net/if_inet6`: address,
/// index, prefix length, scope, flags, name; numbers in hex).
fn link_local_ready(if_inet6: &str, interface: &str) -> bool {
    if_inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 6
            && f[5] == interface
            && f[0].starts_with("fe80")
            && u32::from_str_radix(f[4], 16)
                .is_ok_and(|flags| flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0)
    })
}

impl Ipv6Service {
    /// Binds the sockets for `svc`, with the DHCPv6 bindings `saved` by an
    /// earlier run; `None` when the network has no IPv6 address.
    pub(crate) fn new(svc: &ServiceConfig, saved: &[LeaseRecord]) -> Result<Option<Ipv6Service>> {
        if svc.ipv6_prefixes.is_empty() {
            return Ok(None);
        }
        let interface = svc.interface.to_string();
        // Opened now: the confined service looks up no path.
        let address =
            Reread::open(&Path::new("/sys/class/net").join(&interface).join("address")).ok();
        let if_inet6 = Reread::open(Path::new("/proc/net/if_inet6"))
            .map_err(|e| Error::Service(format!("cannot open /proc/net/if_inet6: {e}")))?;
        let ifindex = crate::netlink::link_index(&interface)
            .ok_or_else(|| Error::Service(format!("no link {interface} to advertise on")))?;
        let icmp = icmp_socket(&interface, ifindex).map_err(|e| {
            Error::Service(format!("cannot open ICMPv6 socket on {interface}: {e}"))
        })?;
        let dhcp_sock = crate::service::bound_udp(
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, SERVER_PORT)),
            Some(&interface),
            false,
        )?;
        dhcp_sock
            .join_multicast_v6(&ALL_SERVERS, ifindex)
            .map_err(|e| {
                Error::Service(format!("cannot join {ALL_SERVERS} on {interface}: {e}"))
            })?;
        let dhcp = Dhcpv6Server::new(&Dhcpv6Config {
            server_mac: link_mac(address.as_ref()).unwrap_or_default(),
            dns_servers: dns_servers(svc),
            domain_search: svc.domain.iter().cloned().collect(),
        })
        .map_err(|e| Error::Plan(format!("DHCPv6 configuration: {e}")))?;
        let pool = dhcpv6_pool(svc)?;
        let pool_prefix = pool.as_ref().map_or(128, |p| p.prefix);
        let dhcp = match pool {
            Some(pool) => {
                let mut dhcp = dhcp
                    .with_pool(pool)
                    .map_err(|e| Error::Plan(format!("DHCPv6 configuration: {e}")))?;
                dhcp.restore_bindings(saved.iter().filter_map(LeaseRecord::to_binding));
                dhcp
            }
            None => dhcp,
        };
        Ok(Some(Ipv6Service {
            interface,
            ifindex,
            icmp,
            dhcp_sock,
            dhcp,
            pool_prefix,
            advert: advert(svc),
            next_ra: Instant::now(),
            last_ra: None,
            address,
            if_inet6,
        }))
    }

    /// The sockets to poll: ICMPv6, then DHCPv6.
    pub(crate) fn fds(&self) -> [RawFd; 2] {
        [self.icmp.as_raw_fd(), self.dhcp_sock.as_raw_fd()]
    }

    /// Reads the router solicitations waiting; each brings the next
    /// advertisement forward (no sooner than the minimum delay).
    pub(crate) fn icmp_ready(&mut self) {
        let mut buf = [0u8; 1500];
        while let Ok((len, hop_limit)) = recv_with_hop_limit(&self.icmp, &mut buf) {
            if ra::is_router_solicitation(&buf[..len], hop_limit) {
                let now = Instant::now();
                let soonest = self.last_ra.map_or(now, |t| t + MIN_DELAY_BETWEEN_RAS);
                self.next_ra = self.next_ra.min(soonest.max(now));
            }
        }
    }

    /// The answer to the next DHCPv6 message waiting that gets one, with
    /// where it goes; `None` once none is waiting. The caller saves the
    /// bindings ([`Ipv6Service::lease_records`]) before sending it.
    pub(crate) fn dhcp_next(&mut self) -> Option<(Vec<u8>, SocketAddrV6)> {
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = self.dhcp_sock.recv_from(&mut buf) {
            let reply = match self.dhcp.handle(&buf[..len], SystemTime::now()) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!("ignored DHCPv6 message from {from}: {e}");
                    continue;
                }
            };
            let SocketAddr::V6(from) = from else { continue };
            let to = SocketAddrV6::new(*from.ip(), CLIENT_PORT, 0, from.scope_id());
            return Some((reply, to));
        }
        None
    }

    /// Sends a reply [`Ipv6Service::dhcp_next`] made.
    pub(crate) fn send_dhcp(&self, reply: &[u8], to: SocketAddrV6) {
        if let Err(e) = self.dhcp_sock.send_to(reply, to) {
            tracing::warn!("cannot send DHCPv6 reply to {to}: {e}");
        }
    }

    /// The DHCPv6 bindings as lease records.
    pub(crate) fn lease_records(&self) -> impl Iterator<Item = LeaseRecord> + '_ {
        self.dhcp
            .bindings()
            .iter()
            .map(|b| LeaseRecord::from_binding(b, self.pool_prefix))
    }

    /// Takes new `<host>` reservations (a live update).
    pub(crate) fn set_hosts(&mut self, svc: &ServiceConfig) -> Result<()> {
        self.dhcp
            .set_hosts(v6_hosts(svc)?)
            .map_err(|e| Error::Plan(format!("DHCPv6 hosts: {e}")))
    }

    /// Sends the advertisement if one is due and the bridge can send it.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        if now < self.next_ra {
            return;
        }
        let ready = self
            .if_inet6
            .read()
            .is_ok_and(|t| link_local_ready(&t, &self.interface));
        if !ready {
            return;
        }
        let mut advert = self.advert.clone();
        advert.source_mac = link_mac(self.address.as_ref());
        let to = SocketAddrV6::new(ra::ALL_NODES, 0, 0, self.ifindex);
        match self.icmp.send_to(&advert.to_bytes(), &to.into()) {
            Ok(_) => {
                self.last_ra = Some(now);
                self.next_ra = now + Duration::from_secs(ra::INTERVAL_SECS);
            }
            Err(e) => tracing::warn!(
                "cannot send router advertisement on {}: {e}",
                self.interface
            ),
        }
    }
}

/// A raw ICMPv6 socket on `interface` that hears only router
/// solicitations (to all routers, which it joins) with their hop limits,
/// and sends with hop limit 255.
fn icmp_socket(interface: &str, ifindex: u32) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.set_multicast_hops_v6(u32::from(ra::NDP_HOP_LIMIT))?;
    s.set_unicast_hops_v6(u32::from(ra::NDP_HOP_LIMIT))?;
    s.set_multicast_if_v6(ifindex)?;
    s.set_multicast_loop_v6(false)?;
    s.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
    // Block every type but router solicitations (a set bit blocks).
    let mut filter = [u32::MAX; 8];
    let rs = usize::from(ra::ROUTER_SOLICITATION);
    filter[rs >> 5] &= !(1 << (rs & 31));
    setsockopt(&s, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
    setsockopt(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &1_i32)?;
    Ok(s)
}

fn setsockopt<T>(s: &Socket, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` of the size passed, for the call only.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message and the hop limit it arrived with (0 if the
/// kernel did not say, which no check accepts).
fn recv_with_hop_limit(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, u8)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one cmsg holding an int (u64 for alignment).
    let mut control = [MaybeUninit::<u64>::uninit(); 8];
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hop_limit = 0;
    // SAFETY: walking the control buffer the kernel filled, with its macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                hop_limit = u8::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, hop_limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_netmgr::plan::RaPrefix;

    #[test]
    fn link_local_is_ready_once_not_tentative() {
        let table = "fe800000000000005054fffe000001 05 40 20 c0 br0\n\
                     fd000000000000000000000000000001 05 40 00 80 br0\n\
                     fe800000000000000000000000000002 06 40 20 80 br1\n";
        assert!(!link_local_ready(table, "br0"), "tentative");
        assert!(link_local_ready(table, "br1"));
        assert!(!link_local_ready(table, "br2"));
        assert!(!link_local_ready("garbage\n\n1 2 3 4 zz br1", "br1"));
    }

    #[test]
    fn advert_follows_the_network() {
        let mut svc: ServiceConfig = serde_json::from_str(
            r#"{"interface":"br0","listen":["fd00::1"],"ranges":[],"hosts":[],
                "router":null,"mtu":1400,"dns":true,"domain":"lab","forwarders":[],
                "upstream":true,"dns_hosts":[],"tftp_root":null,"bootp":null}"#,
        )
        .unwrap();
        // A service file from before IPv6 was served: nothing to advertise.
        assert!(svc.ipv6_prefixes.is_empty());
        svc.ipv6_prefixes = vec![RaPrefix {
            address: "fd00::1".parse().unwrap(),
            prefix: 64,
            managed: false,
        }];
        svc.ipv6_router = true;
        let a = advert(&svc);
        assert_eq!(a.router_lifetime, ra::ROUTER_LIFETIME_SECS);
        assert!(a.other && !a.managed);
        assert_eq!(a.mtu, Some(1400));
        assert!(a.prefixes[0].autonomous);
        assert_eq!(a.dns_servers, vec!["fd00::1".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(a.search, vec!["lab".to_string()]);
        // Isolated, no DNS: not a default router, no DNS servers.
        svc.ipv6_router = false;
        svc.dns = false;
        let a = advert(&svc);
        assert_eq!(a.router_lifetime, 0);
        assert!(a.dns_servers.is_empty());
        // A DHCPv6 range: M flag, the prefix on-link but not for SLAAC
        // (dnsmasq's advertisement of a plain dhcp-range).
        svc.ipv6_prefixes[0].managed = true;
        let a = advert(&svc);
        assert!(a.managed && a.other);
        assert!(!a.prefixes[0].autonomous);
    }

    #[test]
    fn pool_comes_from_the_ipv6_range_and_hosts() {
        let mut svc: ServiceConfig = serde_json::from_str(
            r#"{"interface":"br0","listen":["fd00::1"],
                "ranges":[{"start":"10.0.0.2","end":"10.0.0.9","prefix":24,"lease_secs":60},
                          {"start":"fd00::100","end":"fd00::1ff","prefix":64,"lease_secs":0}],
                "hosts":[{"mac":"52:54:00:00:00:01","id":null,"ip":"10.0.0.5","name":null,"lease_secs":null},
                         {"mac":null,"id":"0:3:0:1:52:54:0:0:0:2","ip":"fd00::5","name":null,"lease_secs":600},
                         {"mac":null,"id":null,"ip":"fd00::6","name":"paul","lease_secs":null}],
                "router":null,"mtu":null,"dns":true,"domain":null,"forwarders":[],
                "upstream":true,"dns_hosts":[],"tftp_root":null,"bootp":null}"#,
        )
        .unwrap();
        let pool = dhcpv6_pool(&svc).unwrap().unwrap();
        assert_eq!(
            (pool.start, pool.end, pool.prefix, pool.lease_time),
            (
                "fd00::100".parse().unwrap(),
                "fd00::1ff".parse().unwrap(),
                64,
                None
            )
        );
        assert_eq!(pool.hosts.len(), 2);
        assert_eq!(
            pool.hosts[0].duid,
            Some(vec![0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 2])
        );
        assert_eq!(
            pool.hosts[0].lease_time,
            Some(Some(Duration::from_secs(600)))
        );
        assert_eq!(pool.hosts[1].name.as_deref(), Some("paul"));
        svc.hosts[1].id = Some("zz:1".into());
        let e = dhcpv6_pool(&svc).unwrap_err().to_string();
        assert!(e.contains("fd00::5") && e.contains("zz:1"), "{e}");
        svc.ranges.pop();
        assert_eq!(dhcpv6_pool(&svc).unwrap(), None);
    }
}
