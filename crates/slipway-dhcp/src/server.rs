//! The lease pool and the answer to each client message (RFC 2131 section 4.3).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use slipway_dns::HostName;
use slipway_host::MacAddr;

use crate::config::{validate_static_hosts, DhcpConfig, DhcpConfigError, StaticHost};
use crate::reply::{self, DhcpReply, ReplyKind, ReplyParams};
use crate::request::{parse, ClientMessage, DhcpError, Request};

/// How long an offered address stays reserved for the client that was offered it.
const OFFER_HOLD: Duration = Duration::from_secs(60);
/// How long a declined address (in use by someone else, RFC 2131 3.1.5) is not handed out.
const DECLINE_HOLD: Duration = Duration::from_secs(600);

/// An address bound to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Client hardware address.
    pub mac: [u8; 6],
    /// The leased address.
    pub ip: Ipv4Addr,
    /// The lease's host name: its static host's configured name, else the
    /// one the client sent (option 12) unless another lease holds it.
    pub hostname: Option<HostName>,
    /// The client identifier (option 61), if any.
    pub client_id: Option<Vec<u8>>,
    /// When the lease ends; `None` for an infinite lease.
    pub expires: Option<SystemTime>,
}

impl Lease {
    /// Whether the lease still holds at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// How a client is recognised: its client identifier if it sent one, else its MAC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum ClientKey {
    Id(Vec<u8>),
    Mac([u8; 6]),
}

impl ClientKey {
    fn of(mac: [u8; 6], client_id: Option<&[u8]>) -> Self {
        match client_id {
            Some(id) if !id.is_empty() => ClientKey::Id(id.to_vec()),
            _ => ClientKey::Mac(mac),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Offered, reserved until the given time; not yet a lease.
    Offered(SystemTime),
    /// Acknowledged: a lease (possibly expired, kept so the client gets the same address back).
    Bound,
}

#[derive(Debug)]
struct Entry {
    lease: Lease,
    state: State,
}

impl Entry {
    fn holds(&self, now: SystemTime) -> bool {
        match self.state {
            State::Offered(until) => until > now,
            State::Bound => self.lease.is_active(now),
        }
    }
}

/// A DHCPv4 server: configuration plus lease table. Feed it client messages with
/// [`DhcpServer::handle`].
#[derive(Debug)]
pub struct DhcpServer {
    config: DhcpConfig,
    entries: BTreeMap<ClientKey, Entry>,
    /// Which client's entry names each address (at most one).
    by_ip: HashMap<Ipv4Addr, ClientKey>,
    /// Addresses declined by clients, not handed out until the given time.
    declined: HashMap<Ipv4Addr, SystemTime>,
}

impl DhcpServer {
    /// A server for `config`, after checking it (see [`DhcpConfig::validate`]).
    pub fn new(config: DhcpConfig) -> Result<Self, DhcpConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            entries: BTreeMap::new(),
            by_ip: HashMap::new(),
            declined: HashMap::new(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// Replaces the static hosts (live update). Leases other clients hold on addresses
    /// now reserved are refused at their next renewal.
    pub fn set_static_hosts(&mut self, hosts: Vec<StaticHost>) -> Result<(), DhcpConfigError> {
        validate_static_hosts(&self.config, &hosts)?;
        self.config.static_hosts = hosts;
        Ok(())
    }

    /// Every acknowledged lease, including expired ones (kept so a returning client gets
    /// its address back; see [`Lease::is_active`]). Offers not yet requested are not leases.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.entries
            .values()
            .filter(|e| e.state == State::Bound)
            .map(|e| &e.lease)
    }

    /// Loads leases saved from an earlier run. Leases whose address this configuration
    /// would not give that client (outside the pool, reserved for another static host,
    /// already taken) are dropped with a warning; a name this configuration would not
    /// give the lease (see [`Lease::hostname`]) is dropped from it.
    pub fn restore_leases(&mut self, leases: impl IntoIterator<Item = Lease>) {
        for mut lease in leases {
            let key = ClientKey::of(lease.mac, lease.client_id.as_deref());
            let fits = match self.static_for(lease.mac) {
                Some(host) => host.ip == lease.ip,
                None => {
                    self.config.pool.contains(lease.ip)
                        && !self.is_infrastructure(lease.ip)
                        && self.static_owner(lease.ip).is_none()
                        && !self.by_ip.contains_key(&lease.ip)
                }
            };
            if !fits {
                tracing::warn!(mac = %MacAddr(lease.mac), ip = %lease.ip, "saved DHCP lease does not fit the configuration; dropped");
                continue;
            }
            lease.hostname = self.lease_name(lease.mac, &key, lease.hostname.take(), None);
            self.bind(key, lease, State::Bound);
        }
    }

    /// Handles one client message (the UDP payload sent to port 67) at time `now`.
    /// `Ok(None)` means no reply is due (RELEASE, DECLINE, a REQUEST for another
    /// server, an exhausted pool).
    pub fn handle(
        &mut self,
        request: &[u8],
        now: SystemTime,
    ) -> Result<Option<DhcpReply>, DhcpError> {
        let req = parse(request)?;
        self.declined.retain(|_, until| *until > now);
        Ok(match req.kind {
            ClientMessage::Discover => self.discover(&req, now),
            ClientMessage::Request => self.request(&req, now)?,
            ClientMessage::Release => {
                self.release(&req, now);
                None
            }
            ClientMessage::Decline => {
                self.decline(&req, now);
                None
            }
            ClientMessage::Inform => {
                Some(self.reply(&req, ReplyKind::Ack, Ipv4Addr::UNSPECIFIED, false))
            }
        })
    }

    fn discover(&mut self, req: &Request, now: SystemTime) -> Option<DhcpReply> {
        let key = ClientKey::of(req.mac, req.client_id.as_deref());
        let Some(ip) = self.choose_address(req, &key, now) else {
            tracing::warn!(mac = %MacAddr(req.mac), "DHCP pool exhausted: no address to offer");
            return None;
        };
        let already_bound = self
            .entries
            .get(&key)
            .is_some_and(|e| e.state == State::Bound && e.lease.ip == ip && e.holds(now));
        if !already_bound {
            let lease = self.new_lease(req, &key, ip, now);
            self.bind(key.clone(), lease, State::Offered(now + OFFER_HOLD));
        }
        tracing::debug!(mac = %MacAddr(req.mac), %ip, "DHCPOFFER");
        Some(self.reply(req, ReplyKind::Offer, ip, true))
    }

    fn request(&mut self, req: &Request, now: SystemTime) -> Result<Option<DhcpReply>, DhcpError> {
        let key = ClientKey::of(req.mac, req.client_id.as_deref());
        let ciaddr = req.ciaddr;
        let selecting = req.server_id.is_some();
        if let Some(server_id) = req.server_id {
            if server_id != self.config.server_ip {
                // The client chose another server's offer: free what we reserved.
                if let Some(Entry {
                    state: State::Offered(_),
                    ..
                }) = self.entries.get(&key)
                {
                    self.unbind(&key);
                }
                return Ok(None);
            }
        }
        let target = match (req.requested, ciaddr.is_unspecified()) {
            (Some(ip), _) => ip,
            (None, false) => ciaddr,
            (None, true) => return Err(DhcpError::RequestWithoutAddress),
        };
        if self.acceptable(req.mac, &key, target, now) {
            let lease = self.new_lease(req, &key, target, now);
            self.bind(key.clone(), lease, State::Bound);
            tracing::info!(mac = %MacAddr(req.mac), ip = %target, "DHCPACK");
            return Ok(Some(self.reply(req, ReplyKind::Ack, target, true)));
        }
        // A SELECTING request names this server, so it is ours to refuse; in the
        // other states only an authoritative server speaks for the whole link.
        if selecting || self.config.authoritative {
            tracing::info!(mac = %MacAddr(req.mac), ip = %target, "DHCPNAK");
            Ok(Some(self.reply(
                req,
                ReplyKind::Nak,
                Ipv4Addr::UNSPECIFIED,
                false,
            )))
        } else {
            Ok(None)
        }
    }

    /// The client gives its address back: the lease ends now, but is remembered so
    /// the client gets the same address again if it is still free.
    fn release(&mut self, req: &Request, now: SystemTime) {
        let key = ClientKey::of(req.mac, req.client_id.as_deref());
        if req.server_id.is_some_and(|s| s != self.config.server_ip) {
            return;
        }
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.lease.ip == req.ciaddr {
                entry.lease.expires = Some(now);
                entry.state = State::Bound;
                tracing::info!(mac = %MacAddr(req.mac), ip = %entry.lease.ip, "DHCPRELEASE");
            }
        }
    }

    /// The client found its address in use: forget its lease, keep the address out
    /// of the pool for a while.
    fn decline(&mut self, req: &Request, now: SystemTime) {
        let key = ClientKey::of(req.mac, req.client_id.as_deref());
        if req.server_id.is_some_and(|s| s != self.config.server_ip) {
            return;
        }
        let Some(ip) = req.requested else { return };
        if self.entries.get(&key).is_some_and(|e| e.lease.ip == ip) {
            self.unbind(&key);
            self.declined.insert(ip, now + DECLINE_HOLD);
            tracing::warn!(mac = %MacAddr(req.mac), %ip, "DHCPDECLINE: address in use by an unknown host");
        }
    }

    fn reply(
        &self,
        req: &Request,
        kind: ReplyKind,
        yiaddr: Ipv4Addr,
        with_lease: bool,
    ) -> DhcpReply {
        let hostname = self
            .static_for(req.mac)
            .and_then(|h| h.name.as_deref())
            .or(self.config.hostname.as_deref());
        reply::build(
            &self.config,
            req,
            ReplyParams {
                kind,
                yiaddr,
                with_lease,
                lease_time: self.lease_time_for(req.mac),
                hostname,
            },
        )
    }

    fn new_lease(&self, req: &Request, key: &ClientKey, ip: Ipv4Addr, now: SystemTime) -> Lease {
        // Not every client repeats its hostname when renewing: keep the one it gave.
        let wanted = req
            .hostname
            .clone()
            .or_else(|| self.entries.get(key).and_then(|e| e.lease.hostname.clone()));
        let hostname = self.lease_name(req.mac, key, wanted, Some(now));
        Lease {
            mac: req.mac,
            ip,
            hostname,
            client_id: req.client_id.clone(),
            expires: self.lease_time_for(req.mac).map(|d| now + d),
        }
    }

    /// The name a lease of client `mac`/`key` carries (dnsmasq's rules): its
    /// static host's configured name; else `wanted` (what the client sent),
    /// unless it is another static host's name or another lease holding at
    /// `now` (`None`: any bound lease) has it: the first holder keeps it.
    fn lease_name(
        &self,
        mac: [u8; 6],
        key: &ClientKey,
        wanted: Option<HostName>,
        now: Option<SystemTime>,
    ) -> Option<HostName> {
        if let Some(host) = self.static_for(mac) {
            if let Some(name) = &host.name {
                return HostName::from_client(name.as_bytes()).ok();
            }
        }
        let wanted = wanted?;
        if let Some(owner) = self.config.static_hosts.iter().find(|h| {
            h.mac != mac
                && h.name
                    .as_deref()
                    .and_then(|n| HostName::from_client(n.as_bytes()).ok())
                    .is_some_and(|n| n.is(wanted.as_str()))
        }) {
            tracing::warn!(mac = %MacAddr(mac), "not giving name {wanted} to the DHCP lease: it is the name of static host {}", MacAddr(owner.mac));
            return None;
        }
        let holder = self.entries.iter().find(|(k, e)| {
            *k != key
                && e.state == State::Bound
                && now.is_none_or(|now| e.lease.is_active(now))
                && e.lease
                    .hostname
                    .as_ref()
                    .is_some_and(|h| h.is(wanted.as_str()))
        });
        if let Some((_, e)) = holder {
            tracing::warn!(mac = %MacAddr(mac), "not giving name {wanted} to the DHCP lease: the lease of {} has it", e.lease.ip);
            return None;
        }
        Some(wanted)
    }

    /// The lease time of client `mac`: its static host's own, else the
    /// server's (`None`: infinite).
    fn lease_time_for(&self, mac: [u8; 6]) -> Option<Duration> {
        self.static_for(mac)
            .and_then(|h| h.lease_time)
            .unwrap_or(self.config.lease_time)
    }

    fn static_for(&self, mac: [u8; 6]) -> Option<&StaticHost> {
        self.config.static_hosts.iter().find(|h| h.mac == mac)
    }

    fn static_owner(&self, ip: Ipv4Addr) -> Option<&StaticHost> {
        self.config.static_hosts.iter().find(|h| h.ip == ip)
    }

    /// Whether `ip` is one of the network's own service addresses (router, name
    /// servers, next server), which a pool may overlap but must never hand out.
    fn is_infrastructure(&self, ip: Ipv4Addr) -> bool {
        let c = &self.config;
        c.router == Some(ip) || c.next_server == Some(ip) || c.dns_servers.contains(&ip)
    }

    /// Whether `ip` may be given to this client now.
    fn acceptable(&self, mac: [u8; 6], key: &ClientKey, ip: Ipv4Addr, now: SystemTime) -> bool {
        if let Some(host) = self.static_for(mac) {
            return host.ip == ip;
        }
        self.config.pool.contains(ip)
            && !self.is_infrastructure(ip)
            && self.static_owner(ip).is_none()
            && !self.declined.contains_key(&ip)
            && match self.by_ip.get(&ip) {
                None => true,
                Some(holder) => holder == key || !self.entries[holder].holds(now),
            }
    }

    /// The address to offer: a static host's own; else the client's previous address,
    /// the one it asks for, a never-used one, or one whose lease ended, in that order.
    fn choose_address(&self, req: &Request, key: &ClientKey, now: SystemTime) -> Option<Ipv4Addr> {
        if let Some(host) = self.static_for(req.mac) {
            return Some(host.ip);
        }
        let previous = self.entries.get(key).map(|e| e.lease.ip);
        previous
            .into_iter()
            .chain(req.requested)
            .find(|&ip| self.acceptable(req.mac, key, ip, now))
            .or_else(|| {
                self.config.pool.iter().find(|ip| {
                    !self.by_ip.contains_key(ip) && self.acceptable(req.mac, key, *ip, now)
                })
            })
            .or_else(|| {
                self.config
                    .pool
                    .iter()
                    .find(|&ip| self.acceptable(req.mac, key, ip, now))
            })
    }

    /// Records `lease` for `key`, replacing the client's old entry and any lapsed entry
    /// of another client on the same address.
    fn bind(&mut self, key: ClientKey, lease: Lease, state: State) {
        self.unbind(&key);
        if let Some(other) = self.by_ip.get(&lease.ip).cloned() {
            self.unbind(&other);
        }
        self.by_ip.insert(lease.ip, key.clone());
        self.entries.insert(key, Entry { lease, state });
    }

    fn unbind(&mut self, key: &ClientKey) {
        if let Some(old) = self.entries.remove(key) {
            if self.by_ip.get(&old.lease.ip) == Some(key) {
                self.by_ip.remove(&old.lease.ip);
            }
        }
    }
}
