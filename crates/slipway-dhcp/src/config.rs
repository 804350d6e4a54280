//! What the server hands out, and the checks that make a configuration usable.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use dhcproto::Name;
use slipway_host::MacAddr;

/// Everything the DHCP server tells clients, and the addresses it may lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The server's own address: option 54 (server identifier) and the default `siaddr`.
    pub server_ip: Ipv4Addr,
    /// Subnet mask of the served network: option 1. Must be contiguous.
    pub netmask: Ipv4Addr,
    /// Default gateway, option 3. `None` leaves the option out (restrict=on, isolated networks).
    pub router: Option<Ipv4Addr>,
    /// Name servers, option 6. Empty leaves the option out.
    pub dns_servers: Vec<Ipv4Addr>,
    /// The addresses handed out dynamically.
    pub pool: AddressPool,
    /// Fixed MAC → address bindings (libvirt `<dhcp><host>`); may lie outside the pool.
    pub static_hosts: Vec<StaticHost>,
    /// Lease duration, option 51. `None` means an infinite lease (0xffffffff).
    pub lease_time: Option<Duration>,
    /// A fixed hostname sent to every client, option 12 (QEMU's `hostname=`).
    /// A static host's own name takes precedence for that host.
    pub hostname: Option<String>,
    /// DNS domain, option 15.
    pub domain_name: Option<String>,
    /// Domain search list, option 119 (RFC 3397, name-compressed).
    pub domain_search: Vec<String>,
    /// Interface MTU, option 26.
    pub mtu: Option<u16>,
    /// Broadcast address, option 28.
    pub broadcast: Option<Ipv4Addr>,
    /// Boot file name: the BOOTP `file` field and option 67.
    pub boot_file: Option<String>,
    /// TFTP server name, option 66.
    pub tftp_server_name: Option<String>,
    /// Next server (`siaddr`); `None` uses `server_ip`.
    pub next_server: Option<Ipv4Addr>,
    /// NAK requests for addresses this server does not own or did not give the client.
    /// When false, such requests are ignored silently (another server may own them).
    pub authoritative: bool,
}

/// The set of addresses leased dynamically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPool {
    /// Every address from `start` to `end`, both included.
    Range {
        /// First address of the range.
        start: Ipv4Addr,
        /// Last address of the range (inclusive).
        end: Ipv4Addr,
    },
}

impl AddressPool {
    /// Whether `ip` belongs to the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        match *self {
            AddressPool::Range { start, end } => start <= ip && ip <= end,
        }
    }

    /// The pool's addresses in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        match *self {
            AddressPool::Range { start, end } => {
                (u32::from(start)..=u32::from(end)).map(Ipv4Addr::from)
            }
        }
    }
}

/// A fixed binding: the client with this MAC always gets this address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticHost {
    /// Client hardware (Ethernet) address.
    pub mac: [u8; 6],
    /// The address it always gets.
    pub ip: Ipv4Addr,
    /// Hostname sent to this client in option 12 (libvirt `name=`).
    pub name: Option<String>,
    /// This host's own lease time (libvirt's `<host><lease/></host>`):
    /// `None` for the server's, `Some(None)` for an infinite lease.
    pub lease_time: Option<Option<Duration>>,
}

/// Why a [`DhcpConfig`] (or a live static host update) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpConfigError {
    /// The netmask has holes (ones after zeros).
    #[error("netmask {0} is not contiguous")]
    BadNetmask(Ipv4Addr),
    /// The server address is the subnet's network or broadcast address.
    #[error("server address {0} is the network or broadcast address of its subnet")]
    BadServerAddress(Ipv4Addr),
    /// Pool start after pool end.
    #[error("DHCP range {start}-{end}: start is after end")]
    EmptyRange {
        /// Range start.
        start: Ipv4Addr,
        /// Range end.
        end: Ipv4Addr,
    },
    /// An address (pool bound, static host) is not a host address of the served subnet.
    #[error("{what} {ip} is not a host address of subnet {network}/{netmask}")]
    OutsideSubnet {
        /// Which setting holds the address.
        what: &'static str,
        /// The offending address.
        ip: Ipv4Addr,
        /// The subnet's network address.
        network: Ipv4Addr,
        /// The subnet mask.
        netmask: Ipv4Addr,
    },
    /// The pool or a static host would hand out the server's own address.
    #[error("{what} includes the server's own address {ip}")]
    ContainsServer {
        /// Which setting holds the address.
        what: &'static str,
        /// The server address.
        ip: Ipv4Addr,
    },
    /// Two static hosts share a MAC address.
    #[error("static host MAC {0} is listed twice")]
    DuplicateMac(String),
    /// Two static hosts share an IP address.
    #[error("static host address {0} is given to two MACs")]
    DuplicateStaticIp(Ipv4Addr),
    /// A name (hostname, domain, search entry) is not a valid DNS name.
    #[error("{what} {name:?} is not a valid DNS name")]
    BadName {
        /// Which setting holds the name.
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// A string does not fit into its field or option.
    #[error("{what} is {len} bytes long, at most {max} fit")]
    TooLong {
        /// Which setting.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The largest length that fits.
        max: usize,
    },
    /// The lease time is zero or does not fit into option 51 (use `None` for infinite).
    #[error("lease time {0:?} must be between 1 s and 4294967294 s (None = infinite)")]
    BadLeaseTime(Duration),
    /// MTU below the IPv4 minimum of 68.
    #[error("MTU {0} is below the IPv4 minimum of 68")]
    BadMtu(u16),
}

/// Largest option payload (one option; longer ones would need RFC 3396 splitting).
const MAX_OPTION_LEN: usize = 255;

impl DhcpConfig {
    /// The served subnet's network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.server_ip) & u32::from(self.netmask))
    }

    /// The served subnet's broadcast address.
    pub fn subnet_broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.server_ip) | !u32::from(self.netmask))
    }

    /// Whether `ip` is a usable host address of the served subnet (not network/broadcast).
    pub fn is_host_address(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        (u32::from(ip) & mask) == u32::from(self.network())
            && ip != self.network()
            && ip != self.subnet_broadcast()
    }

    /// Domain search list as DNS names (validated by [`DhcpConfig::validate`]).
    pub(crate) fn search_names(&self) -> Vec<Name> {
        self.domain_search
            .iter()
            .filter_map(|d| fqdn(d).ok())
            .collect()
    }

    /// Checks everything [`crate::DhcpServer::new`] relies on.
    pub fn validate(&self) -> Result<(), DhcpConfigError> {
        if slipway_host::prefix_of_netmask(self.netmask).is_none() {
            return Err(DhcpConfigError::BadNetmask(self.netmask));
        }
        if !self.is_host_address(self.server_ip) {
            return Err(DhcpConfigError::BadServerAddress(self.server_ip));
        }
        let AddressPool::Range { start, end } = self.pool;
        if start > end {
            return Err(DhcpConfigError::EmptyRange { start, end });
        }
        for ip in [start, end] {
            self.check_host_address("DHCP range bound", ip)?;
        }
        if self.pool.contains(self.server_ip) {
            return Err(DhcpConfigError::ContainsServer {
                what: "DHCP range",
                ip: self.server_ip,
            });
        }
        validate_static_hosts(self, &self.static_hosts)?;
        if let Some(lease) = self.lease_time {
            check_lease_time(lease)?;
        }
        if let Some(mtu) = self.mtu {
            if mtu < 68 {
                return Err(DhcpConfigError::BadMtu(mtu));
            }
        }
        if let Some(h) = &self.hostname {
            check_name("hostname", h)?;
        }
        if let Some(d) = &self.domain_name {
            check_name("domain name", d)?;
        }
        for d in &self.domain_search {
            check_name("search domain", d)?;
        }
        // Option 119 is sent as one option; RFC 3396 long options are not produced.
        let search_len: usize = self.search_names().iter().map(|n| n.len() + 1).sum();
        check_len("domain search list", search_len, MAX_OPTION_LEN)?;
        check_len(
            "DNS server list",
            self.dns_servers.len() * 4,
            MAX_OPTION_LEN,
        )?;
        if let Some(f) = &self.boot_file {
            // The BOOTP `file` field is 128 bytes and NUL-terminated.
            check_len("boot file name", f.len(), 127)?;
        }
        if let Some(t) = &self.tftp_server_name {
            check_len("TFTP server name", t.len(), MAX_OPTION_LEN)?;
        }
        Ok(())
    }

    fn check_host_address(&self, what: &'static str, ip: Ipv4Addr) -> Result<(), DhcpConfigError> {
        if self.is_host_address(ip) {
            Ok(())
        } else {
            Err(DhcpConfigError::OutsideSubnet {
                what,
                ip,
                network: self.network(),
                netmask: self.netmask,
            })
        }
    }
}

/// Checks static hosts against the (otherwise valid) configuration `config`.
pub(crate) fn validate_static_hosts(
    config: &DhcpConfig,
    hosts: &[StaticHost],
) -> Result<(), DhcpConfigError> {
    let mut macs = HashSet::new();
    let mut ips = HashSet::new();
    for host in hosts {
        config.check_host_address("static host address", host.ip)?;
        if host.ip == config.server_ip {
            return Err(DhcpConfigError::ContainsServer {
                what: "static host",
                ip: host.ip,
            });
        }
        if !macs.insert(host.mac) {
            return Err(DhcpConfigError::DuplicateMac(MacAddr(host.mac).to_string()));
        }
        if !ips.insert(host.ip) {
            return Err(DhcpConfigError::DuplicateStaticIp(host.ip));
        }
        if let Some(name) = &host.name {
            check_name("static host name", name)?;
        }
        if let Some(Some(lease)) = host.lease_time {
            check_lease_time(lease)?;
        }
    }
    Ok(())
}

/// A finite lease time must fit option 51 (u32 seconds; all ones is infinite).
fn check_lease_time(lease: Duration) -> Result<(), DhcpConfigError> {
    if lease.as_secs() == 0 || lease.as_secs() >= u64::from(u32::MAX) {
        return Err(DhcpConfigError::BadLeaseTime(lease));
    }
    Ok(())
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), DhcpConfigError> {
    if len > max {
        Err(DhcpConfigError::TooLong { what, len, max })
    } else {
        Ok(())
    }
}

/// Parses `s` as an absolute DNS name.
fn fqdn(s: &str) -> Result<Name, dhcproto::NameError> {
    let mut name = Name::from_str(s)?;
    name.set_fqdn(true);
    Ok(name)
}

/// Whether `name` is a name the server accepts for a hostname, domain or
/// search entry (what [`DhcpConfig::validate`] requires), so callers can
/// refuse it where the user typed it.
pub fn is_valid_name(name: &str) -> bool {
    check_name("name", name).is_ok()
}

/// A name must be non-empty, made of valid labels, and fit into a 255-byte option.
fn check_name(what: &'static str, name: &str) -> Result<(), DhcpConfigError> {
    let bad = || DhcpConfigError::BadName {
        what,
        name: name.to_string(),
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let labels_ok = !trimmed.is_empty()
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_ok || fqdn(name).is_err() {
        return Err(bad());
    }
    check_len(what, name.len(), MAX_OPTION_LEN)
}
