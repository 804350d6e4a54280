//! DHCPv6 on the bridge, as libvirt's dnsmasq serves it: stateless (DNS
//! and domain) for SLAAC prefixes, stateful (addresses leased from the
//! `<range>`, `<host>` reservations) when the IPv6 `<ip>` has a DHCP range.
//! The server is `slipway_dhcp::v6`, the user-mode stack's too; here it
//! listens on a UDP socket on port 547 of the bridge in the DHCPv6
//! servers' multicast group. A reply is handed to the loop, which saves
//! the bindings before [`Dhcpv6::send`] lets the client hear of it.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::{Duration, SystemTime};

use slipway_dhcp::v6::{
    Dhcpv6Config, Dhcpv6Host, Dhcpv6Pool, Dhcpv6Server, ALL_SERVERS, CLIENT_PORT, SERVER_PORT,
};
use slipway_netmgr::plan::ServiceConfig;

use super::config::ipv6_dns_servers;
use super::socket::bound_udp;
use crate::error::{Error, Result};
use crate::leases::{parse_duid, LeaseRecord};

/// The DHCPv6 server of one bridge.
pub(super) struct Dhcpv6 {
    sock: UdpSocket,
    server: Dhcpv6Server,
    /// Prefix length of the leased range (for the leases table).
    pool_prefix: u8,
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
pub(super) fn dhcpv6_pool(svc: &ServiceConfig) -> Result<Option<Dhcpv6Pool>> {
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

impl Dhcpv6 {
    /// Binds port 547 on the bridge (index `ifindex`, MAC `server_mac`)
    /// with the bindings `saved` by an earlier run.
    pub(super) fn open(
        svc: &ServiceConfig,
        ifindex: u32,
        server_mac: [u8; 6],
        saved: &[LeaseRecord],
    ) -> Result<Dhcpv6> {
        let interface = svc.interface.as_str();
        let sock = bound_udp(
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, SERVER_PORT)),
            Some(interface),
            false,
        )?;
        sock.join_multicast_v6(&ALL_SERVERS, ifindex)
            .map_err(|source| Error::Os {
                what: format!("cannot join {ALL_SERVERS} on {interface}"),
                source,
            })?;
        let server = Dhcpv6Server::new(&Dhcpv6Config {
            server_mac,
            dns_servers: ipv6_dns_servers(svc),
            domain_search: svc.domain.iter().cloned().collect(),
        })?;
        let pool = dhcpv6_pool(svc)?;
        let pool_prefix = pool.as_ref().map_or(128, |p| p.prefix);
        let server = match pool {
            Some(pool) => {
                let mut server = server.with_pool(pool)?;
                server.restore_bindings(saved.iter().filter_map(LeaseRecord::to_binding));
                server
            }
            None => server,
        };
        Ok(Dhcpv6 {
            sock,
            server,
            pool_prefix,
        })
    }

    /// The socket to poll.
    pub(super) fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// The answer to the next DHCPv6 message waiting that gets one, with
    /// where it goes; `None` once none is waiting.
    pub(super) fn next(&mut self) -> Option<(Vec<u8>, SocketAddrV6)> {
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = self.sock.recv_from(&mut buf) {
            let reply = match self.server.handle(&buf[..len], SystemTime::now()) {
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

    /// Sends a reply [`Dhcpv6::next`] made.
    pub(super) fn send(&self, reply: &[u8], to: SocketAddrV6) {
        if let Err(e) = self.sock.send_to(reply, to) {
            tracing::warn!("cannot send DHCPv6 reply to {to}: {e}");
        }
    }

    /// The bindings as lease records.
    pub(super) fn lease_records(&self) -> impl Iterator<Item = LeaseRecord> + '_ {
        self.server
            .bindings()
            .iter()
            .map(|b| LeaseRecord::from_binding(b, self.pool_prefix))
    }

    /// Takes new `<host>` reservations (a live update).
    pub(super) fn set_hosts(&mut self, svc: &ServiceConfig) -> Result<()> {
        Ok(self.server.set_hosts(v6_hosts(svc)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
