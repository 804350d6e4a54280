//! The DHCP and DNS service of one bridge network: a process of its own
//! (like libvirt's dnsmasq), bound to the bridge only, driving the shared
//! `slipway-dhcp` server and `slipway-dns` zone over real sockets.
//!
//! The backend starts it with the path of its configuration file
//! ([`ServiceFile`]) as the last argument; it prints `ready` on stdout once
//! its sockets are bound, keeps its leases in a crash-safe file, rereads its
//! configuration on SIGHUP (live updates of DHCP and DNS hosts) and exits
//! on SIGTERM.
//!
//! It parses every guest's packets, so once its sockets are bound and its
//! files open it confines itself ([`slipway_sandbox::Sandbox::network_service`]):
//! the unprivileged user of [`ServiceFile::user`] keeping only
//! CAP_NET_ADMIN, a seccomp allowlist, Landlock limited to its leases
//! directory (read-write), its configuration's directory and the TFTP root
//! (read-only), no_new_privs (docs/sandbox.md).

use std::ffi::OsString;
use std::io::Read;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Interest, Poll, Registry, Token};
use serde::{Deserialize, Serialize};
use slipway_dhcp::{AddressPool, DhcpConfig, DhcpServer, HostName, ReplyDestination, StaticHost};
use slipway_dns::relay::{Relay, RelayConfig, Submitted, TRY_TIMEOUT};
use slipway_dns::{Answer, LocalZone, RCODE_REFUSED, RCODE_SERVFAIL};
use slipway_host::{netmask_v4, MacAddr};
use slipway_netmgr::plan::{network_of, ServiceConfig};
use slipway_sandbox::{LandlockState, Sandbox, SandboxError};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::fsutil::Dir;
use crate::leases::{LeaseRecord, LeasesFile};

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

/// Queries relayed upstream at once (dnsmasq's `dns-forward-max` default);
/// more are dropped until answers or timeouts free a place.
pub const MAX_FORWARDED: usize = 150;
/// DNS queries read from one listener before DHCP, RA and TFTP get their
/// turn again (a flood of queries does not starve them).
const DNS_BATCH: usize = 64;
/// Dropped relayed queries are logged at most this often.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often the loop wakes without traffic (signals, lease expiry).
const TICK: Duration = Duration::from_millis(500);
const DHCP: Token = Token(0);
const TFTP: Token = Token(3);
const ICMP6: Token = Token(4);
const DHCP6: Token = Token(5);
/// UDP DNS listeners are `Token(DNS_BASE + i)`.
const DNS_BASE: usize = 16;
/// TCP DNS listeners are `Token(TCP_BASE + i)`.
const TCP_BASE: usize = 1024;
/// The socket of relayed query slot `i` is `Token(UPSTREAM_BASE + i)`.
const UPSTREAM_BASE: usize = 1 << 20;
/// TCP DNS connections served at once (one thread each); more are closed.
const MAX_TCP_CLIENTS: usize = 32;
/// How long a TCP DNS client may stay idle or a TCP upstream may take.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

static TERMINATE: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::SeqCst);
    } else {
        TERMINATE.store(true, Ordering::SeqCst);
    }
}

/// Reads a [`ServiceFile`].
pub fn read_service_file(path: &Path) -> Result<ServiceFile> {
    parse_service_file(path, std::fs::read(path))
}

fn parse_service_file(path: &Path, read: std::io::Result<Vec<u8>>) -> Result<ServiceFile> {
    let bytes = read.map_err(|e| Error::io("cannot read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn static_hosts(svc: &ServiceConfig) -> Vec<StaticHost> {
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
    config
        .validate()
        .map_err(|e| Error::Plan(format!("DHCP configuration: {e}")))?;
    Ok(Some((config, pool.prefix)))
}

/// The local DNS zone: `<dns><host>` records and lease hostnames.
fn zone(svc: &ServiceConfig, leases: &[LeaseRecord]) -> Result<LocalZone> {
    let mut zone = LocalZone::new(svc.domain.as_deref())
        .map_err(|e| Error::Plan(format!("DNS domain: {e}")))?;
    for (ip, names) in &svc.dns_hosts {
        for n in names {
            zone.add_host(*ip, n)
                .map_err(|e| Error::Plan(format!("DNS host {ip}: {e}")))?;
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

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Service {
    file: ServiceFile,
    path: PathBuf,
    /// The configuration's directory and name, reread from there on SIGHUP.
    config_dir: Dir,
    config_name: OsString,
    leases: LeasesFile,
    /// What the service may still do once set up.
    sandbox: Sandbox,
    dhcp: Option<(DhcpServer, u8, UdpSocket)>,
    /// Router advertisements and DHCPv6, when the network has IPv6.
    ipv6: Option<crate::ipv6::Ipv6Service>,
    /// Shared with the threads serving TCP clients.
    zone: Arc<Mutex<LocalZone>>,
    listeners: Vec<UdpSocket>,
    tcp_listeners: Vec<TcpListener>,
    tcp_clients: Arc<AtomicUsize>,
    /// Queries relayed upstream; a client is its address and the index
    /// of the listener it asked.
    relay: Relay<(SocketAddr, usize)>,
    /// Relayed queries dropped, as counted when last reported.
    reported_drops: u64,
    /// When dropped queries were last reported.
    reported_at: Option<Instant>,
    tftp: Option<crate::tftp::TftpServer>,
    saved: Vec<LeaseRecord>,
    /// When the zone was last built (seconds since the epoch).
    zone_built: u64,
}

pub(crate) fn bound_udp(
    addr: SocketAddr,
    device: Option<&str>,
    broadcast: bool,
) -> Result<UdpSocket> {
    bound(addr, device, broadcast, Type::DGRAM).map(Into::into)
}

fn bound(addr: SocketAddr, device: Option<&str>, broadcast: bool, ty: Type) -> Result<Socket> {
    let ctx = |e| Error::Service(format!("cannot bind {ty:?} {addr}: {e}"));
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let s = Socket::new(domain, ty, Some(proto)).map_err(ctx)?;
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes())).map_err(ctx)?;
        // The bridge's addresses may still be tentative (IPv6 DAD).
        if addr.is_ipv4() {
            s.set_freebind_v4(true).map_err(ctx)?;
        } else {
            s.set_only_v6(true).map_err(ctx)?;
            s.set_freebind_v6(true).map_err(ctx)?;
        }
    }
    s.set_reuse_address(true).map_err(ctx)?;
    if broadcast {
        s.set_broadcast(true).map_err(ctx)?;
    }
    s.set_nonblocking(true).map_err(ctx)?;
    s.bind(&addr.into()).map_err(ctx)?;
    if ty == Type::STREAM {
        s.listen(16).map_err(ctx)?;
    }
    Ok(s)
}

impl Service {
    fn new(path: &Path) -> Result<Service> {
        let file = read_service_file(path)?;
        let svc = &file.service;
        let config_dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let config_dir =
            Dir::open(config_dir).map_err(|e| Error::io("cannot open", config_dir, e))?;
        let config_name = path.file_name().unwrap_or_default().to_os_string();
        let leases = LeasesFile::open(&file.leases_file)?;
        if same_file(leases.dir().file(), config_dir.file()) {
            // It is handed to the confined service's user.
            return Err(Error::Service(format!(
                "the leases file {} must be in a directory of its own, not in {}",
                file.leases_file.display(),
                config_dir.path().display()
            )));
        }
        let mut sandbox = Sandbox::network_service();
        sandbox
            .runas(file.user.clone())
            .allow_read(config_dir.path())
            .allow_write_dir(leases.dir().path());
        if let Some(root) = &svc.tftp_root {
            sandbox.allow_read(root);
        }
        sandbox
            .hand_over(leases.dir().file())
            .map_err(|e| match e {
                SandboxError::NoSuchUser(user) => Error::Service(format!(
                    "user {user:?} (\"user\" in {}) not found: the service switches to it from root",
                    path.display()
                )),
                e => e.into(),
            })?;
        let mut saved = leases.load_or_recover()?;
        // Names in a file of an older version pass today's rule or go (once,
        // with a warning, not at every rebuild of the zone).
        for r in &mut saved {
            r.hostname = r.host_name().map(|h| h.to_string());
        }
        let ipv6 = crate::ipv6::Ipv6Service::new(svc, &saved)?;
        let dhcp = match dhcp_config(svc)? {
            Some((config, prefix)) => {
                let mut server = DhcpServer::new(config)
                    .map_err(|e| Error::Plan(format!("DHCP configuration: {e}")))?;
                server.restore_leases(saved.iter().filter_map(LeaseRecord::to_lease));
                let sock = bound_udp(
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 67)),
                    Some(svc.interface.as_str()),
                    true,
                )?;
                Some((server, prefix, sock))
            }
            None => None,
        };
        let mut listeners = Vec::new();
        let mut tcp_listeners = Vec::new();
        if svc.dns {
            for addr in &svc.listen {
                let at = SocketAddr::new(*addr, 53);
                listeners.push(bound_udp(at, Some(svc.interface.as_str()), false)?);
                tcp_listeners
                    .push(bound(at, Some(svc.interface.as_str()), false, Type::STREAM)?.into());
            }
        }
        let upstreams = if !svc.dns || !svc.upstream {
            Vec::new()
        } else if !svc.forwarders.is_empty() {
            svc.forwarders
                .iter()
                .map(|a| SocketAddr::new(*a, 53))
                .collect()
        } else {
            slipway_dns::upstreams_from_file(&file.resolv_conf).unwrap_or_else(|e| {
                tracing::warn!("no upstream DNS servers: {e}");
                Vec::new()
            })
        };
        let relay = Relay::new(
            RelayConfig {
                upstreams,
                max_queries: MAX_FORWARDED,
                bind_v4: Ipv4Addr::UNSPECIFIED,
                bind_v6: std::net::Ipv6Addr::UNSPECIFIED,
                try_timeout: TRY_TIMEOUT,
            },
            |slot| Token(UPSTREAM_BASE + slot),
        );
        let zone = zone(svc, &saved)?;
        let tftp = match &svc.tftp_root {
            Some(root) => {
                let root = Path::new(root);
                if !root.is_dir() {
                    return Err(Error::Service(format!(
                        "TFTP root {} is not a directory",
                        root.display()
                    )));
                }
                let addr = svc.listen.iter().find(|a| a.is_ipv4()).ok_or_else(|| {
                    Error::Plan("TFTP needs an IPv4 address on the bridge".into())
                })?;
                Some(
                    crate::tftp::TftpServer::bind(*addr, svc.interface.as_str(), root)
                        .map_err(|e| Error::Service(format!("cannot bind TFTP on {addr}: {e}")))?,
                )
            }
            None => None,
        };
        Ok(Service {
            tftp,
            path: path.to_path_buf(),
            config_dir,
            config_name,
            leases,
            sandbox,
            dhcp,
            ipv6,
            zone: Arc::new(Mutex::new(zone)),
            listeners,
            tcp_listeners,
            tcp_clients: Arc::new(AtomicUsize::new(0)),
            relay,
            reported_drops: 0,
            reported_at: None,
            saved,
            zone_built: epoch_secs(),
            file,
        })
    }

    /// Handles every DHCP message waiting on the socket.
    fn dhcp_ready(&mut self) {
        let mut buf = [0u8; 1500];
        loop {
            let Some((server, _, sock)) = &mut self.dhcp else {
                return;
            };
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                return;
            };
            let reply = match server.handle(&buf[..len], SystemTime::now()) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!("ignored DHCP message: {e}");
                    continue;
                }
            };
            // The lease is on disk, and its hostname in DNS, before the
            // client hears of it.
            self.sync_leases();
            let Some((_, _, sock)) = &self.dhcp else {
                return;
            };
            let to = match reply.destination {
                ReplyDestination::Broadcast => Ipv4Addr::BROADCAST,
                // The client's own address (INFORM, renewal): the kernel
                // resolves it. Never a neighbour entry for what a client
                // merely claims.
                ReplyDestination::Unicast(ip) => ip,
                ReplyDestination::Assigned(ip) => {
                    // The address this reply gives, to a client that does
                    // not answer ARP for it yet: tell the kernel its MAC, as
                    // dnsmasq does.
                    if let Err(e) = set_arp(
                        sock,
                        ip,
                        reply.client_mac,
                        self.file.service.interface.as_str(),
                    ) {
                        tracing::warn!("cannot add ARP entry for {ip}: {e}");
                    }
                    ip
                }
            };
            if let Err(e) = sock.send_to(&reply.payload, SocketAddrV4::new(to, 68)) {
                tracing::warn!("cannot send DHCP reply to {to}: {e}");
            }
        }
    }

    /// Answers every DHCPv6 message waiting, each binding on disk before
    /// the client hears of it.
    fn dhcpv6_ready(&mut self) {
        while let Some((reply, to)) = self.ipv6.as_mut().and_then(|v6| v6.dhcp_next()) {
            self.sync_leases();
            if let Some(v6) = &self.ipv6 {
                v6.send_dhcp(&reply, to);
            }
        }
    }

    /// Saves the servers' leases (IPv4 and DHCPv6) and rebuilds the DNS
    /// zone when they changed.
    fn sync_leases(&mut self) {
        let mut now: Vec<LeaseRecord> = Vec::new();
        if let Some((server, prefix, _)) = &self.dhcp {
            now.extend(server.leases().map(|l| LeaseRecord::from_lease(l, *prefix)));
        }
        if let Some(v6) = &self.ipv6 {
            now.extend(v6.lease_records());
        }
        if now != self.saved {
            if let Err(e) = self.leases.save(&now) {
                tracing::error!("{e}");
            }
            self.saved = now;
            self.rebuild_zone();
        }
    }

    /// Answers or relays up to [`DNS_BATCH`] queries waiting on listener
    /// `i`; true when more may be waiting.
    fn dns_ready(&mut self, registry: &Registry, i: usize) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..DNS_BATCH {
            let Ok((len, client)) = self.listeners[i].recv_from(&mut buf) else {
                return false;
            };
            let query = &mut buf[..len];
            let answer = lock(&self.zone).answer(query);
            let reply = match answer {
                Answer::Local(r) | Answer::Refuse(r) => Some(r),
                Answer::Ignore => None,
                Answer::Forward if self.relay.upstreams().is_empty() => {
                    let rcode = if self.file.service.upstream {
                        RCODE_SERVFAIL
                    } else {
                        RCODE_REFUSED
                    };
                    slipway_dns::error_response(query, rcode)
                }
                // A full table drops the query (counted, reported by
                // `expire`): the client retries.
                Answer::Forward => {
                    match self
                        .relay
                        .query(registry, Instant::now(), (client, i), query)
                    {
                        Submitted::Sent | Submitted::InFlight | Submitted::Dropped(_) => None,
                        Submitted::Failed => slipway_dns::error_response(query, RCODE_SERVFAIL),
                    }
                }
            };
            if let Some(r) = reply {
                let _ = self.listeners[i].send_to(&r, client);
            }
        }
        true
    }

    /// Relays the answer waiting on the socket of query slot `slot`.
    fn upstream_ready(&mut self, slot: usize) {
        if let Some(((client, listener), answer)) = self.relay.on_readable(slot) {
            let _ = self.listeners[listener].send_to(answer, client);
        }
    }

    /// Accepts TCP clients on listener `i`, one thread each.
    fn tcp_ready(&mut self, i: usize) {
        while let Ok((stream, client)) = self.tcp_listeners[i].accept() {
            if self.tcp_clients.load(Ordering::SeqCst) >= MAX_TCP_CLIENTS {
                tracing::warn!("too many TCP DNS clients: closing {client}");
                continue;
            }
            self.tcp_clients.fetch_add(1, Ordering::SeqCst);
            let zone = self.zone.clone();
            let clients = self.tcp_clients.clone();
            let upstreams = self.relay.upstreams().to_vec();
            let upstream = self.file.service.upstream;
            std::thread::spawn(move || {
                if let Err(e) = serve_tcp(stream, &zone, &upstreams, upstream) {
                    tracing::debug!("TCP DNS client {client}: {e}");
                }
                clients.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Moves relayed queries whose upstream did not answer in time on to
    /// the next upstream; a query none answered gets SERVFAIL.
    fn expire(&mut self, registry: &Registry) {
        let listeners = &self.listeners;
        self.relay
            .on_timer(registry, Instant::now(), |(client, listener), query| {
                if let Some(r) = slipway_dns::error_response(query, RCODE_SERVFAIL) {
                    let _ = listeners[listener].send_to(&r, client);
                }
            });
        // Drops are reported at most every DROP_REPORT_EVERY: a flood
        // does not flood the log.
        let stats = self.relay.stats();
        let drops = stats.dropped_full + stats.dropped_other;
        if drops > self.reported_drops
            && self
                .reported_at
                .is_none_or(|at| at.elapsed() >= DROP_REPORT_EVERY)
        {
            tracing::warn!(
                "{} DNS queries dropped (at most {MAX_FORWARDED} wait for an upstream answer)",
                drops - self.reported_drops
            );
            self.reported_drops = drops;
            self.reported_at = Some(Instant::now());
        }
        // A lease that ran out takes its hostname out of DNS.
        let secs = epoch_secs();
        if self.saved.iter().any(|l| {
            l.hostname.is_some() && l.expires.is_some_and(|e| e <= secs && e > self.zone_built)
        }) {
            self.rebuild_zone();
        }
    }

    fn rebuild_zone(&mut self) {
        match zone(&self.file.service, &self.saved) {
            Ok(z) => *lock(&self.zone) = z,
            Err(e) => tracing::error!("{e}"),
        }
        self.zone_built = epoch_secs();
    }

    /// Rereads the configuration: static hosts and DNS records change live.
    fn reload(&mut self) {
        // Through the directory opened at start: the confined service may
        // not search the directories above it.
        let read = self.config_dir.read(&self.config_name);
        let file = match parse_service_file(&self.path, read) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("reload: {e}");
                return;
            }
        };
        if let Some((server, _, _)) = &mut self.dhcp {
            if let Err(e) = server.set_static_hosts(static_hosts(&file.service)) {
                tracing::error!("reload: DHCP hosts: {e}");
                return;
            }
        }
        if let Some(v6) = &mut self.ipv6 {
            if let Err(e) = v6.set_hosts(&file.service) {
                tracing::error!("reload: {e}");
                return;
            }
        }
        match zone(&file.service, &self.saved) {
            Ok(z) => *lock(&self.zone) = z,
            Err(e) => {
                tracing::error!("reload: {e}");
                return;
            }
        }
        self.file.service = file.service;
        tracing::info!("configuration reloaded");
    }
}

fn lock(zone: &Mutex<LocalZone>) -> std::sync::MutexGuard<'_, LocalZone> {
    // A panicked holder leaves a whole zone (it is replaced, never edited).
    zone.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one length-prefixed DNS message (RFC 1035 4.2.2); `None` at EOF.
fn read_msg(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg)?;
    Ok(Some(msg))
}

fn write_msg(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out)
}

/// Relays one query to an upstream over TCP.
fn ask_upstream(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&up, TCP_TIMEOUT)?;
    s.set_read_timeout(Some(TCP_TIMEOUT))?;
    s.set_write_timeout(Some(TCP_TIMEOUT))?;
    write_msg(&mut s, query)?;
    read_msg(&mut s)?.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

/// Serves one TCP DNS client until it closes or idles out.
fn serve_tcp(
    mut stream: TcpStream,
    zone: &Mutex<LocalZone>,
    upstreams: &[SocketAddr],
    upstream: bool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TCP_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_TIMEOUT))?;
    while let Some(query) = read_msg(&mut stream)? {
        let answer = lock(zone).answer(&query);
        let reply = match answer {
            Answer::Local(r) | Answer::Refuse(r) => Some(r),
            Answer::Ignore => return Ok(()),
            Answer::Forward => upstreams
                .iter()
                .find_map(|up| ask_upstream(*up, &query).ok())
                .or_else(|| {
                    let rcode = if upstream {
                        RCODE_SERVFAIL
                    } else {
                        RCODE_REFUSED
                    };
                    slipway_dns::error_response(&query, rcode)
                }),
        };
        if let Some(r) = reply {
            write_msg(&mut stream, &r)?;
        }
    }
    Ok(())
}

/// Whether two open files are the same (device and inode).
fn same_file(a: &std::fs::File, b: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Adds a complete ARP entry `ip` → `mac` on `dev` (SIOCSARP).
fn set_arp(sock: &UdpSocket, ip: Ipv4Addr, mac: [u8; 6], dev: &str) -> std::io::Result<()> {
    // SAFETY: arpreq is plain old data; all-zero is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes).
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            (&mut req.arp_pa as *mut libc::sockaddr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    req.arp_flags = libc::ATF_COM;
    for (d, s) in req.arp_dev.iter_mut().zip(dev.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: the fd is a valid socket and req a valid arpreq for SIOCSARP.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSARP, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The service's main loop; returns when asked to terminate. Prints `ready`
/// on stdout once its sockets are bound (the backend waits for it).
pub fn run(config: &Path) -> Result<()> {
    // SAFETY: the handler only stores to atomics, which is async-signal-safe.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
    let mut svc = Service::new(config)?;
    let perr = |e| Error::Service(format!("poll: {e}"));
    let mut poll = Poll::new().map_err(perr)?;
    let mut fds = Vec::new();
    if let Some((_, _, s)) = &svc.dhcp {
        fds.push((s.as_raw_fd(), DHCP));
    }
    if let Some(t) = &svc.tftp {
        fds.push((t.socket().as_raw_fd(), TFTP));
    }
    if let Some(v6) = &svc.ipv6 {
        let [icmp, dhcp] = v6.fds();
        fds.push((icmp, ICMP6));
        fds.push((dhcp, DHCP6));
    }
    for (i, s) in svc.listeners.iter().enumerate() {
        fds.push((s.as_raw_fd(), Token(DNS_BASE + i)));
    }
    for (i, s) in svc.tcp_listeners.iter().enumerate() {
        fds.push((s.as_raw_fd(), Token(TCP_BASE + i)));
    }
    for (fd, token) in fds {
        poll.registry()
            .register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)
            .map_err(perr)?;
    }
    // Asks whether the bridge is still there (SIOCGIFINDEX).
    let probe = Socket::new(Domain::IPV4, Type::DGRAM, None)
        .map_err(|e| Error::Service(format!("socket: {e}")))?;
    // Everything is open: from here on the service only serves.
    let report = svc.sandbox.apply()?;
    if report.landlock == LandlockState::Unsupported {
        tracing::warn!(
            "Landlock is not available in this kernel: the service's file access is not \
             restricted (it runs as {:?}, under seccomp, with only CAP_NET_ADMIN)",
            svc.file.user
        );
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    let mut events = Events::with_capacity(64);
    // DNS listeners with queries left after a batch: read on after the
    // other sockets had their turn.
    let mut dns_backlog = vec![false; svc.listeners.len()];
    while !TERMINATE.load(Ordering::SeqCst) {
        if RELOAD.swap(false, Ordering::SeqCst) {
            svc.reload();
        }
        let wait = if dns_backlog.contains(&true) {
            Duration::ZERO
        } else {
            svc.relay.next_deadline().map_or(TICK, |d| {
                TICK.min(d.saturating_duration_since(Instant::now()))
            })
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(perr(e)),
        }
        for ev in events.iter() {
            match ev.token() {
                DHCP => svc.dhcp_ready(),
                TFTP => {
                    if let Some(t) = &svc.tftp {
                        t.ready();
                    }
                }
                ICMP6 => svc.ipv6.as_mut().map_or((), |v6| v6.icmp_ready()),
                DHCP6 => svc.dhcpv6_ready(),
                Token(t) if t >= UPSTREAM_BASE => svc.upstream_ready(t - UPSTREAM_BASE),
                Token(t) if t >= TCP_BASE => svc.tcp_ready(t - TCP_BASE),
                Token(t) => dns_backlog[t - DNS_BASE] = true,
            }
        }
        for (i, more) in dns_backlog.iter_mut().enumerate() {
            if *more {
                *more = svc.dns_ready(poll.registry(), i);
            }
        }
        svc.expire(poll.registry());
        if let Some(v6) = &mut svc.ipv6 {
            v6.tick();
        }
        if crate::netlink::link_index_via(&probe, svc.file.service.interface.as_str()).is_none() {
            // The bridge was removed without stopping us: nothing left to serve.
            tracing::warn!("{} is gone: exiting", svc.file.service.interface);
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_netmgr::plan::{DhcpPool, StaticLease};
    use std::os::unix::fs::MetadataExt;

    fn svc() -> ServiceConfig {
        ServiceConfig {
            interface: slipway_netxml::IfName::new("br0").unwrap(),
            listen: vec!["fd00::1".parse().unwrap(), "10.9.0.1".parse().unwrap()],
            ranges: vec![DhcpPool {
                start: "10.9.0.10".parse().unwrap(),
                end: "10.9.0.20".parse().unwrap(),
                prefix: 24,
                lease_secs: 0,
            }],
            hosts: vec![
                StaticLease {
                    mac: Some("52:54:00:aa:bb:cc".into()),
                    id: None,
                    ip: Some("10.9.0.99".parse().unwrap()),
                    name: Some("db".into()),
                    lease_secs: None,
                },
                // IPv6 hosts (by DUID) are not for the DHCPv4 server.
                StaticLease {
                    mac: None,
                    id: Some("0:1:2".into()),
                    ip: Some("fd00::9".parse().unwrap()),
                    name: None,
                    lease_secs: None,
                },
            ],
            router: None,
            mtu: Some(9000),
            dns: true,
            domain: Some("lab".into()),
            forwarders: Vec::new(),
            upstream: false,
            dns_hosts: Vec::new(),
            tftp_root: None,
            bootp: Some(("pxelinux.0".into(), Some("10.9.0.5".parse().unwrap()))),
            ipv6_prefixes: Vec::new(),
            ipv6_router: false,
        }
    }

    #[test]
    fn dhcp_config_follows_the_network() {
        let (c, prefix) = dhcp_config(&svc()).unwrap().unwrap();
        assert_eq!(prefix, 24);
        assert_eq!(c.server_ip, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(c.netmask, Ipv4Addr::new(255, 255, 255, 0));
        // Isolated: no router; infinite lease for lease_secs 0.
        assert_eq!(c.router, None);
        assert_eq!(c.lease_time, None);
        assert_eq!(c.dns_servers, vec![Ipv4Addr::new(10, 9, 0, 1)]);
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.domain_name.as_deref(), Some("lab"));
        assert_eq!(c.broadcast, Some(Ipv4Addr::new(10, 9, 0, 255)));
        assert_eq!(c.boot_file.as_deref(), Some("pxelinux.0"));
        assert_eq!(c.next_server, Some(Ipv4Addr::new(10, 9, 0, 5)));
        assert!(c.authoritative);
        assert_eq!(c.static_hosts.len(), 1);
        assert_eq!(c.static_hosts[0].mac, [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(c.static_hosts[0].name.as_deref(), Some("db"));

        let mut dns_off = svc();
        dns_off.dns = false;
        dns_off.router = Some("10.9.0.1".parse().unwrap());
        dns_off.ranges[0].lease_secs = 600;
        let (c, _) = dhcp_config(&dns_off).unwrap().unwrap();
        assert!(c.dns_servers.is_empty());
        assert_eq!(c.router, Some(Ipv4Addr::new(10, 9, 0, 1)));
        assert_eq!(c.lease_time, Some(Duration::from_secs(600)));

        let mut none = svc();
        none.ranges.clear();
        assert_eq!(dhcp_config(&none).unwrap(), None);
    }

    #[test]
    fn unusable_configurations_are_refused_with_the_reason() {
        let mut elsewhere = svc();
        elsewhere.listen = vec!["10.8.0.1".parse().unwrap()];
        let e = dhcp_config(&elsewhere).unwrap_err().to_string();
        assert!(
            e.contains("no address of the bridge lies in the DHCP range's subnet 10.9.0.0/24"),
            "{e}"
        );
        let mut with_server = svc();
        with_server.ranges[0].start = "10.9.0.1".parse().unwrap();
        let e = dhcp_config(&with_server).unwrap_err().to_string();
        assert!(
            e.contains("DHCP configuration: DHCP range includes the server's own address 10.9.0.1"),
            "{e}"
        );
    }

    #[test]
    fn missing_or_damaged_service_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.service.json");
        let e = run(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}", path.display())),
            "{e}"
        );
        std::fs::write(&path, "{\"network\": 3").unwrap();
        let e = run(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("corrupted file {}", path.display())),
            "{e}"
        );
    }

    /// The leases directory is handed to the confined service's user: a
    /// configuration (of an older layout) keeping the leases next to it, in
    /// the backend's own directory, is refused before anything is changed.
    #[test]
    fn leases_next_to_the_configuration_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.service.json");
        let file = ServiceFile {
            network: "n".into(),
            service: svc(),
            leases_file: dir.path().join("n.leases.json"),
            resolv_conf: dir.path().join("resolv.conf"),
            user: DEFAULT_USER.into(),
        };
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        let owner = std::fs::metadata(dir.path()).unwrap().uid();
        let e = run(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "the leases file {} must be in a directory of its own, not in {}",
                file.leases_file.display(),
                dir.path().display()
            )),
            "{e}"
        );
        assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), owner);
    }

    /// A user that does not exist is named with the file naming it, before
    /// anything is handed over or bound (started as root: otherwise there
    /// is no switch and no user to look up).
    #[test]
    fn an_unknown_user_is_named() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.service.json");
        let file = ServiceFile {
            network: "n".into(),
            service: svc(),
            leases_file: dir.path().join("n.leases/leases.json"),
            resolv_conf: dir.path().join("resolv.conf"),
            user: "no-such-user-of-slipway".into(),
        };
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        let e = run(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "user \"no-such-user-of-slipway\" (\"user\" in {}) not found",
                path.display()
            )),
            "{e}"
        );
        let leases_dir = std::fs::metadata(dir.path().join("n.leases")).unwrap();
        assert_eq!(leases_dir.uid(), 0);
    }

    #[test]
    fn zone_has_dns_hosts_and_active_lease_names() {
        let mut s = svc();
        s.dns_hosts = vec![("10.9.0.7".parse().unwrap(), vec!["nas".into()])];
        let lease = |name: &str, ip: [u8; 4], expires| LeaseRecord {
            mac: "52:54:00:00:00:01".into(),
            ip: IpAddr::from(ip),
            prefix: 24,
            hostname: Some(name.into()),
            client_id: None,
            iaid: None,
            expires,
        };
        let z = zone(
            &s,
            &[
                lease("live", [10, 9, 0, 11], None),
                lease("gone", [10, 9, 0, 12], Some(1)),
            ],
        )
        .unwrap();
        let query = |name: &str| {
            let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in name.split('.') {
                q.push(label.len() as u8);
                q.extend_from_slice(label.as_bytes());
            }
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
            q
        };
        for (name, ip) in [("nas.lab", [10, 9, 0, 7]), ("live.lab", [10, 9, 0, 11])] {
            let Answer::Local(r) = z.answer(&query(name)) else {
                panic!("{name} not answered locally");
            };
            assert!(r.ends_with(&ip), "{name}: {r:?}");
        }
        // An expired lease's name is not ours any more: it goes upstream
        // like any unknown name (the domain is not localOnly).
        assert_eq!(z.answer(&query("gone.lab")), Answer::Forward);

        // Guests' names: the first label only, under the network's domain;
        // never a <dns><host> or a DHCP <host> name of another address.
        let z = zone(
            &s,
            &[
                lease("www.example.com", [10, 9, 0, 13], None),
                lease("nas", [10, 9, 0, 14], None),
                lease("db", [10, 9, 0, 15], None),
                lease("bad\u{1b}name", [10, 9, 0, 16], None),
            ],
        )
        .unwrap();
        let answered = |name: &str| match z.answer(&query(name)) {
            Answer::Local(r) => Some(r[r.len() - 4..].to_vec()),
            _ => None,
        };
        assert_eq!(answered("www.example.com"), None);
        assert_eq!(answered("www.lab"), Some(vec![10, 9, 0, 13]));
        assert_eq!(answered("nas.lab"), Some(vec![10, 9, 0, 7]));
        assert_eq!(answered("db.lab"), None);
        assert_eq!(answered("bad"), None);
    }
}
