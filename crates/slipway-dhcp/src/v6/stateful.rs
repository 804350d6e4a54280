//! Stateful DHCPv6 (RFC 8415 section 18.3): addresses leased from a range
//! in IA_NA options, as dnsmasq does for libvirt's `<ip family='ipv6'>
//! <dhcp><range/><host/></dhcp></ip>`.
//!
//! Split from the message handling in the parent module so the binding
//! table (which client holds which address until when) is plain data the
//! caller can persist and restore, like the DHCPv4 leases. Clients are
//! known by their DUID and IAID; `<host>` reservations match the DUID
//! (libvirt's `id=`) or the host name the client sends in its FQDN option
//! (`name=`).

use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime};

use slipway_dns::HostName;
use slipway_host::ipnet::Ipv6Net;

use super::Dhcpv6ConfigError;

/// dnsmasq's lease time when the network names none: one hour.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// At most this many active bindings (dnsmasq's default `dhcp-lease-max`):
/// a client inventing DUIDs cannot grow the table without bound.
pub const MAX_BINDINGS: usize = 1000;

/// An address range served statefully, with its reservations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcpv6Pool {
    /// First address leased.
    pub start: Ipv6Addr,
    /// Last address leased.
    pub end: Ipv6Addr,
    /// Prefix length of the link (CONFIRM checks addresses against it).
    pub prefix: u8,
    /// Lease time of range addresses; `None` is infinite.
    pub lease_time: Option<Duration>,
    /// Reserved addresses.
    pub hosts: Vec<Dhcpv6Host>,
}

/// A reserved address (`<host id=... name=... ip=...>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcpv6Host {
    /// The client's DUID.
    pub duid: Option<Vec<u8>>,
    /// The host name the client sends (FQDN option, first label).
    pub name: Option<String>,
    /// The address it gets.
    pub ip: Ipv6Addr,
    /// Its own lease time (`Some(None)`: infinite); `None`: the range's.
    pub lease_time: Option<Option<Duration>>,
}

/// One address bound to one IA of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The client's DUID.
    pub duid: Vec<u8>,
    /// The IA_NA's identifier.
    pub iaid: u32,
    /// The leased address.
    pub ip: Ipv6Addr,
    /// The binding's host name: its reservation's name, else the one the
    /// client sent (FQDN option, first label) unless another client's
    /// binding holds it.
    pub hostname: Option<HostName>,
    /// When it ends; `None` for an infinite lease.
    pub expires: Option<SystemTime>,
}

impl Binding {
    /// Whether the binding still holds at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

fn in_prefix(a: Ipv6Addr, b: Ipv6Addr, prefix: u8) -> bool {
    let net = |ip| Ipv6Net::new(ip, prefix.min(128)).map(|n| n.network());
    net(a) == net(b)
}

impl Dhcpv6Pool {
    /// Refuses a range that is empty or leaves its prefix, and a
    /// reservation outside the prefix or identifying nobody.
    pub(crate) fn validate(&self) -> Result<(), Dhcpv6ConfigError> {
        if self.start > self.end || !in_prefix(self.start, self.end, self.prefix) {
            return Err(Dhcpv6ConfigError::BadRange {
                start: self.start,
                end: self.end,
                prefix: self.prefix,
            });
        }
        for h in &self.hosts {
            if !in_prefix(h.ip, self.start, self.prefix) {
                return Err(Dhcpv6ConfigError::HostOffLink(h.ip));
            }
            if h.duid.is_none() && h.name.is_none() {
                return Err(Dhcpv6ConfigError::HostWithoutId(h.ip));
            }
        }
        Ok(())
    }

    /// Whether `ip` is on the link the pool serves.
    pub(crate) fn on_link(&self, ip: Ipv6Addr) -> bool {
        in_prefix(ip, self.start, self.prefix)
    }
}

/// The pool and who holds what.
#[derive(Clone, Debug)]
pub(crate) struct Leases {
    pub(crate) pool: Dhcpv6Pool,
    pub(crate) bindings: Vec<Binding>,
    /// Addresses a client declined (in use by someone else), until when.
    declined: Vec<(Ipv6Addr, SystemTime)>,
}

impl Leases {
    pub(crate) fn new(pool: Dhcpv6Pool) -> Leases {
        Leases {
            pool,
            bindings: Vec::new(),
            declined: Vec::new(),
        }
    }

    /// The reservation of a client, by DUID first, then by name.
    fn host(&self, duid: &[u8], name: Option<&str>) -> Option<&Dhcpv6Host> {
        self.pool
            .hosts
            .iter()
            .find(|h| h.duid.as_deref() == Some(duid))
            .or_else(|| {
                let name = name?;
                self.pool.hosts.iter().find(|h| {
                    h.name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
            })
    }

    /// The lease time a client's address gets.
    pub(crate) fn lease_time(&self, duid: &[u8], name: Option<&str>) -> Option<Duration> {
        match self.host(duid, name).and_then(|h| h.lease_time) {
            Some(t) => t,
            None => self.pool.lease_time,
        }
    }

    fn position(&self, duid: &[u8], iaid: u32) -> Option<usize> {
        self.bindings
            .iter()
            .position(|b| b.duid == duid && b.iaid == iaid)
    }

    /// The binding of an IA, active or not (an expired one keeps its
    /// address for the client until someone else needs it).
    pub(crate) fn binding(&self, duid: &[u8], iaid: u32) -> Option<&Binding> {
        self.position(duid, iaid).map(|i| &self.bindings[i])
    }

    /// Whether `ip` can go to this IA: no other IA holds it, nobody
    /// declined it lately, and it is not reserved for another client.
    fn free_for(&self, ip: Ipv6Addr, duid: &[u8], iaid: u32, now: SystemTime) -> bool {
        let taken = self
            .bindings
            .iter()
            .any(|b| b.ip == ip && (b.duid != duid || b.iaid != iaid) && b.is_active(now));
        let declined = self
            .declined
            .iter()
            .any(|(a, until)| *a == ip && *until > now);
        let reserved = self
            .pool
            .hosts
            .iter()
            .any(|h| h.ip == ip && h.duid.as_deref() != Some(duid));
        !taken && !declined && !reserved
    }

    /// The address this IA would get: its reservation, the address it
    /// holds, the one it asks for if free in the range, or the first free
    /// one of the range.
    pub(crate) fn choose(
        &self,
        duid: &[u8],
        iaid: u32,
        name: Option<&str>,
        hint: Option<Ipv6Addr>,
        now: SystemTime,
    ) -> Option<Ipv6Addr> {
        if let Some(h) = self.host(duid, name) {
            // A name reservation is the host's; the DUID check in
            // free_for is about DUID reservations.
            let held = self
                .bindings
                .iter()
                .any(|b| b.ip == h.ip && b.duid != duid && b.is_active(now));
            return (!held).then_some(h.ip);
        }
        let in_range = |a: Ipv6Addr| self.pool.start <= a && a <= self.pool.end;
        if let Some(b) = self.binding(duid, iaid) {
            if in_range(b.ip) && self.free_for(b.ip, duid, iaid, now) {
                return Some(b.ip);
            }
        }
        if self.bindings.iter().filter(|b| b.is_active(now)).count() >= MAX_BINDINGS {
            return None;
        }
        if let Some(h) = hint.filter(|h| in_range(*h)) {
            if self.free_for(h, duid, iaid, now) {
                return Some(h);
            }
        }
        // Each address tried is either free or one of the finitely many
        // held, declined or reserved: the walk ends within that many steps.
        let limit = self.bindings.len() + self.declined.len() + self.pool.hosts.len() + 1;
        let (start, end) = (u128::from(self.pool.start), u128::from(self.pool.end));
        (0..limit as u128)
            .map_while(|i| start.checked_add(i).filter(|a| *a <= end))
            .map(Ipv6Addr::from)
            .find(|a| self.free_for(*a, duid, iaid, now))
    }

    /// Binds `ip` to the IA until `now` plus its lease time.
    pub(crate) fn commit(
        &mut self,
        duid: &[u8],
        iaid: u32,
        ip: Ipv6Addr,
        hostname: Option<&HostName>,
        now: SystemTime,
    ) -> Option<Duration> {
        let lease = self.lease_time(duid, hostname.map(HostName::as_str));
        let hostname = self.binding_name(duid, hostname, now);
        // Whoever held the address before (expired) loses it.
        self.bindings
            .retain(|b| b.ip != ip || (b.duid == duid && b.iaid == iaid));
        let binding = Binding {
            duid: duid.to_vec(),
            iaid,
            ip,
            hostname,
            expires: lease.map(|l| now + l),
        };
        match self.position(duid, iaid) {
            Some(i) => self.bindings[i] = binding,
            None => self.bindings.push(binding),
        }
        lease
    }

    /// The name a binding of `duid` carries (dnsmasq's rules): its
    /// reservation's name; else `wanted` unless an active binding of
    /// another client has it (the first holder keeps it).
    fn binding_name(
        &self,
        duid: &[u8],
        wanted: Option<&HostName>,
        now: SystemTime,
    ) -> Option<HostName> {
        let wanted_str = wanted.map(HostName::as_str);
        if let Some(name) = self.host(duid, wanted_str).and_then(|h| h.name.as_deref()) {
            return HostName::from_client(name.as_bytes()).ok();
        }
        let wanted = wanted?;
        if let Some(b) = self.bindings.iter().find(|b| {
            b.duid != duid
                && b.is_active(now)
                && b.hostname.as_ref().is_some_and(|h| h.is(wanted.as_str()))
        }) {
            tracing::warn!(
                "not giving name {wanted} to a DHCPv6 binding: the binding of {} has it",
                b.ip
            );
            return None;
        }
        Some(wanted.clone())
    }

    /// Forgets the IA's binding; whether it had one.
    pub(crate) fn release(&mut self, duid: &[u8], iaid: u32) -> Option<Binding> {
        self.position(duid, iaid).map(|i| self.bindings.remove(i))
    }

    /// Forgets the binding and keeps the address out of use for a lease
    /// time (dnsmasq's behaviour for a declined address).
    pub(crate) fn decline(&mut self, duid: &[u8], iaid: u32, now: SystemTime) -> bool {
        let Some(b) = self.release(duid, iaid) else {
            return false;
        };
        let quarantine = self.pool.lease_time.unwrap_or(DEFAULT_LEASE);
        self.declined.retain(|(_, until)| *until > now);
        self.declined.push((b.ip, now + quarantine));
        true
    }

    /// Loads bindings saved by an earlier run; those the configuration
    /// would not give (off the link, another client's reservation, a
    /// duplicate) are dropped.
    pub(crate) fn restore(&mut self, bindings: impl IntoIterator<Item = Binding>) {
        for b in bindings {
            let reserved_elsewhere = self.pool.hosts.iter().any(|h| {
                let theirs = h.duid.as_deref() == Some(&b.duid[..])
                    || h.name
                        .as_deref()
                        .is_some_and(|n| b.hostname.as_ref().is_some_and(|bn| bn.is(n)));
                h.ip == b.ip && !theirs
            });
            let dup = self
                .bindings
                .iter()
                .any(|o| o.ip == b.ip || (o.duid == b.duid && o.iaid == b.iaid));
            if !self.pool.on_link(b.ip) || reserved_elsewhere || dup {
                tracing::warn!(ip = %b.ip, "saved DHCPv6 binding does not fit the configuration; dropped");
                continue;
            }
            self.bindings.push(b);
        }
    }
}
