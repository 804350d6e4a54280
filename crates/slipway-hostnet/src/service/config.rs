//! The service's configuration: the file the backend writes
//! ([`ServiceFile`]), read at start and on SIGHUP, and what it means for
//! each protocol (the DHCPv4 server's configuration, the static hosts, the
//! local DNS zone). Nothing here touches a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use slipway_dhcp::{AddressPool, DhcpConfig, HostName, StaticHost};
use slipway_dns::LocalZone;
use slipway_host::{netmask_v4, MacAddr};
use slipway_netmgr::plan::{network_of, ServiceConfig};

use crate::error::{Error, Result};
use crate::leases::LeaseRecord;

/// What the service process reads at start and on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFile {
    /// The network's name.
    pub network: String,
    /// What to serve.
    pub service: ServiceConfig,
    /// Where leases are kept.
    pub leases_file: PathBuf,
    /// The resolver configuration naming the host's upstream servers (used
    /// when the network has no `<forwarder>`).
    pub resolv_conf: PathBuf,
    /// The user the service switches to once set up, when started as root
    /// (it gets the leases file's directory).
    #[serde(default = "default_user")]
    pub user: String,
}

/// The user the service runs as unless its configuration names another:
/// the one dnsmasq falls back to.
pub const DEFAULT_USER: &str = "nobody";

fn default_user() -> String {
    DEFAULT_USER.into()
}

/// The configuration file of network `name`'s service in the backend's
/// directory `dir`.
pub(crate) fn service_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.service.json"))
}

/// Reads a [`ServiceFile`].
pub fn read_service_file(path: &Path) -> Result<ServiceFile> {
    parse_service_file(path, std::fs::read(path))
}

pub(super) fn parse_service_file(
    path: &Path,
    read: std::io::Result<Vec<u8>>,
) -> Result<ServiceFile> {
    let bytes = read.map_err(|e| Error::io("cannot read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(path, e))
}

pub(super) fn static_hosts(svc: &ServiceConfig) -> Vec<StaticHost> {
    svc.hosts
        .iter()
        .filter_map(|h| {
            let IpAddr::V4(ip) = h.ip? else { return None };
            Some(StaticHost {
                mac: h.mac.as_deref()?.parse::<MacAddr>().ok()?.0,
                ip,
                name: h.name.clone(),
                // `<lease expiry='0'/>` is infinite, as for the range.
                lease_time: h
                    .lease_secs
                    .map(|s| (s != 0).then(|| Duration::from_secs(s))),
            })
        })
        .collect()
}

/// The DHCPv4 configuration of a service, with the subnet's prefix length;
/// `None` when the network serves no IPv4 range.
pub fn dhcp_config(svc: &ServiceConfig) -> Result<Option<(DhcpConfig, u8)>> {
    let Some(pool) = svc.ranges.iter().find(|r| r.start.is_ipv4()) else {
        return Ok(None);
    };
    let (IpAddr::V4(start), IpAddr::V4(end)) = (pool.start, pool.end) else {
        return Err(Error::Plan("DHCP range mixes address families".into()));
    };
    let subnet = network_of(pool.start, pool.prefix);
    let server_ip = svc
        .listen
        .iter()
        .find_map(|a| match a {
            IpAddr::V4(v4) if network_of(*a, pool.prefix) == subnet => Some(*v4),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Plan(format!(
                "no address of the bridge lies in the DHCP range's subnet {subnet}/{}",
                pool.prefix
            ))
        })?;
    let netmask = netmask_v4(pool.prefix);
    let (boot_file, next_server) = match &svc.bootp {
        Some((file, server)) => (
            Some(file.clone()),
            match server {
                Some(IpAddr::V4(s)) => Some(*s),
                _ => None,
            },
        ),
        None => (None, None),
    };
    let config = DhcpConfig {
        server_ip,
        netmask,
        router: match svc.router {
            Some(IpAddr::V4(r)) => Some(r),
            _ => None,
        },
        dns_servers: if svc.dns { vec![server_ip] } else { Vec::new() },
        pool: AddressPool::Range { start, end },
        static_hosts: static_hosts(svc),
        lease_time: (pool.lease_secs != 0).then(|| Duration::from_secs(pool.lease_secs)),
        hostname: None,
        domain_name: svc.domain.clone(),
        domain_search: Vec::new(),
        mtu: svc.mtu.map(|m| m.min(u32::from(u16::MAX)) as u16),
        broadcast: Some(Ipv4Addr::from(u32::from(server_ip) | !u32::from(netmask))),
        boot_file,
        tftp_server_name: None,
        next_server,
        authoritative: true,
    };
    config.validate()?;
    Ok(Some((config, pool.prefix)))
}

/// The local DNS zone: `<dns><host>` records and lease hostnames.
pub(super) fn zone(svc: &ServiceConfig, leases: &[LeaseRecord]) -> Result<LocalZone> {
    let mut zone = LocalZone::new(svc.domain.as_deref()).map_err(Error::DnsDomain)?;
    for (ip, names) in &svc.dns_hosts {
        for n in names {
            zone.add_host(*ip, n)
                .map_err(|source| Error::DnsHost { ip: *ip, source })?;
        }
    }
    // A DHCP <host>'s name is its own: no other guest may publish it.
    for h in &svc.hosts {
        if let (Some(ip), Some(name)) = (h.ip, &h.name) {
            if let Err(e) = zone.reserve_host(ip, name) {
                tracing::warn!("DHCP host {ip}: {e}; its name is not guarded");
            }
        }
    }
    let now = epoch_secs();
    let names: Vec<(HostName, IpAddr)> = leases
        .iter()
        .filter(|l| l.is_active(now))
        .filter_map(|l| Some((l.host_name()?, l.ip)))
        .collect();
    zone.set_lease_hosts(names.iter().map(|(name, ip)| (name, *ip)));
    Ok(zone)
}

pub(super) fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The network's DNS servers over IPv6 (for advertisements and DHCPv6):
/// its IPv6 addresses, when it has DNS.
pub(super) fn ipv6_dns_servers(svc: &ServiceConfig) -> Vec<Ipv6Addr> {
    if !svc.dns {
        return Vec::new();
    }
    svc.ipv6_prefixes.iter().map(|p| p.address).collect()
}
