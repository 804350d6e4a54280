//! Router advertisements on the bridge for every IPv6 `<ip>`, as libvirt's
//! dnsmasq sends them (`enable-ra`): the code the user-mode stack uses too
//! (`slipway_dhcp::ra`) over a raw ICMPv6 socket bound to the bridge
//! (CAP_NET_RAW) that hears router solicitations and sends advertisements
//! to all nodes. Prefixes with a DHCPv6 range are announced with the M
//! flag (addresses from DHCPv6 only, [`super::dhcpv6`]), the others for
//! SLAAC; the O flag sends clients to DHCPv6 for DNS and domain.
//!
//! Advertisements must come from the bridge's link-local address (hosts
//! drop others, RFC 4861 6.1.2), which exists only once the bridge has a
//! port with carrier and has passed duplicate address detection; until
//! then advertisements due (the first one, or answers to solicitations)
//! wait, and go out on the first tick after it is ready.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use slipway_dhcp::ra::{self, Prefix, RouterAdvert};
use slipway_netmgr::plan::ServiceConfig;
use socket2::{Domain, Protocol, Socket, Type};

use super::config::ipv6_dns_servers;
use super::socket::link_mac;
use crate::error::{Error, Result};
use slipway_host::files::Reread;

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

/// The router advertiser of one bridge.
pub(super) struct Advertiser {
    interface: String,
    ifindex: u32,
    icmp: Socket,
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
pub(super) fn advert(svc: &ServiceConfig) -> RouterAdvert {
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
        dns_servers: ipv6_dns_servers(svc),
        search: svc.domain.iter().cloned().collect(),
        dns_lifetime: u32::from(ra::ROUTER_LIFETIME_SECS),
    }
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

impl Advertiser {
    /// Opens the socket for `svc`; `None` when the network has no IPv6
    /// address.
    pub(super) fn open(svc: &ServiceConfig) -> Result<Option<Advertiser>> {
        if svc.ipv6_prefixes.is_empty() {
            return Ok(None);
        }
        let interface = svc.interface.to_string();
        // Opened now: the confined service looks up no path.
        let address =
            Reread::open(&Path::new("/sys/class/net").join(&interface).join("address")).ok();
        let if_inet6 = Reread::open(Path::new("/proc/net/if_inet6"))
            .map_err(|e| Error::io("cannot open", "/proc/net/if_inet6", e))?;
        let ifindex = crate::netlink::link_index(&interface)
            .ok_or_else(|| Error::Service(format!("no link {interface} to advertise on")))?;
        let icmp = icmp_socket(&interface, ifindex).map_err(|source| Error::Os {
            what: format!("cannot open ICMPv6 socket on {interface}"),
            source,
        })?;
        Ok(Some(Advertiser {
            interface,
            ifindex,
            icmp,
            advert: advert(svc),
            next_ra: Instant::now(),
            last_ra: None,
            address,
            if_inet6,
        }))
    }

    /// The bridge's index.
    pub(super) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The bridge's MAC address, when sysfs shows it.
    pub(super) fn mac(&self) -> Option<[u8; 6]> {
        link_mac(self.address.as_ref())
    }

    /// The socket to poll.
    pub(super) fn socket(&self) -> &Socket {
        &self.icmp
    }

    /// Reads the router solicitations waiting; each brings the next
    /// advertisement forward (no sooner than the minimum delay).
    pub(super) fn icmp_ready(&mut self) {
        let mut buf = [0u8; 1500];
        while let Ok((len, hop_limit)) = recv_with_hop_limit(&self.icmp, &mut buf) {
            if ra::is_router_solicitation(&buf[..len], hop_limit) {
                let now = Instant::now();
                let soonest = self.last_ra.map_or(now, |t| t + MIN_DELAY_BETWEEN_RAS);
                self.next_ra = self.next_ra.min(soonest.max(now));
            }
        }
    }

    /// Sends the advertisement if one is due and the bridge can send it.
    pub(super) fn tick(&mut self) {
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
        advert.source_mac = self.mac();
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
}
