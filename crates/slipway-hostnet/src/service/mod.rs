//! The DHCP, DNS, TFTP and router advertisement service of one bridge
//! network: a process of its own (like libvirt's dnsmasq), bound to the
//! bridge only, driving the shared `slipway-dhcp` servers, `slipway-dns`
//! zone and relay and `slipway-tftp` core over real sockets.
//!
//! The backend starts it with the path of its configuration file
//! ([`ServiceFile`]) as the last argument; it prints `ready` on stdout once
//! its sockets are bound, keeps its leases in a crash-safe file, rereads its
//! configuration on SIGHUP (live updates of DHCP and DNS hosts) and exits
//! on SIGTERM.
//!
//! One thread, one `mio` loop ([`run`]): every socket, and the signalfd
//! its signals arrive on, is registered under a token naming its protocol,
//! and each protocol's module handles its own readiness and timers: [`dhcp`], [`dhcpv6`], [`ra`], [`dns`] (UDP, the
//! upstream relay, TCP clients as state machines) and [`tftp`] (each
//! transfer a state machine on its own socket). This module only
//! dispatches, and saves the leases a DHCP reply grants before it is sent.
//!
//! It parses every guest's packets, so once its sockets are bound and its
//! files open it confines itself ([`slipway_sandbox::Sandbox::network_service`]):
//! the unprivileged user of [`ServiceFile::user`] keeping only
//! CAP_NET_ADMIN, a seccomp allowlist (no new thread, no new process),
//! Landlock limited to its leases directory (read-write), its
//! configuration's directory and the TFTP root (read-only), no_new_privs
//! (docs/sandbox.md).

mod config;
mod dhcp;
mod dhcpv6;
mod dns;
mod ra;
mod setup;
mod socket;
mod tftp;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slipway_host::files::Dir;
use slipway_host::signals::Signals;
use slipway_netmgr::ServiceStats;
use slipway_sandbox::{LandlockState, Sandbox};
use socket2::{Domain, Socket, Type};

pub(crate) use config::service_file;
pub use config::{dhcp_config, read_service_file, ServiceFile, DEFAULT_USER};
pub use dns::MAX_FORWARDED;

use crate::error::{Error, Result};
use crate::leases::{LeaseRecord, LeasesFile};

/// How often the loop wakes without traffic (lease expiry, router
/// advertisements, is the bridge still there?).
const TICK: Duration = Duration::from_millis(500);
const DHCP: Token = Token(0);
/// SIGTERM, SIGINT and SIGHUP, from a signalfd.
const SIGNALS: Token = Token(1);
const TFTP: Token = Token(3);
const ICMP6: Token = Token(4);
const DHCP6: Token = Token(5);
/// UDP DNS listeners are `Token(DNS_BASE + i)`.
const DNS_BASE: usize = 16;
/// TCP DNS listeners are `Token(TCP_BASE + i)`.
const TCP_BASE: usize = 1024;
/// The socket of TFTP transfer slot `i` is `Token(TFTP_TRANSFER_BASE + i)`.
const TFTP_TRANSFER_BASE: usize = 2048;
/// TCP DNS client slot `i` is `Token(TCP_CLIENT_BASE + 2 * i)`, its
/// connection to an upstream the token after.
const TCP_CLIENT_BASE: usize = 4096;
/// The socket of relayed query slot `i` is `Token(UPSTREAM_BASE + i)`.
const UPSTREAM_BASE: usize = 1 << 20;

/// The file in the leases directory the service's counts go to.
pub const STATS_FILE: &str = "stats.json";
/// How often, at most, [`STATS_FILE`] is rewritten.
const STATS_EVERY: Duration = Duration::from_secs(2);

/// The open service: its files, sandbox and protocols.
struct Service {
    file: ServiceFile,
    path: PathBuf,
    /// The configuration's directory and name, reread from there on SIGHUP.
    config_dir: Dir,
    config_name: OsString,
    leases: LeasesFile,
    /// What the service may still do once set up.
    sandbox: Sandbox,
    dhcp: Option<dhcp::Dhcp>,
    /// Router advertisements and DHCPv6, when the network has IPv6.
    ra: Option<ra::Advertiser>,
    dhcpv6: Option<dhcpv6::Dhcpv6>,
    dns: dns::Dns,
    tftp: Option<tftp::Tftp>,
    saved: Vec<LeaseRecord>,
    /// When the zone was last built (seconds since the epoch).
    zone_built: u64,
    /// The stats last written ([`STATS_FILE`]) and when.
    stats: (ServiceStats, Option<Instant>),
}

impl Service {
    /// Every socket to poll, with its token.
    fn sockets(&self) -> Vec<(RawFd, Token)> {
        let mut fds = Vec::new();
        if let Some(d) = &self.dhcp {
            fds.push((d.socket().as_raw_fd(), DHCP));
        }
        if let Some(t) = &self.tftp {
            fds.push((t.socket().as_raw_fd(), TFTP));
        }
        if let Some(ra) = &self.ra {
            fds.push((ra.socket().as_raw_fd(), ICMP6));
        }
        if let Some(v6) = &self.dhcpv6 {
            fds.push((v6.socket().as_raw_fd(), DHCP6));
        }
        let (udp, tcp) = self.dns.listeners();
        for (i, s) in udp.iter().enumerate() {
            fds.push((s.as_raw_fd(), Token(DNS_BASE + i)));
        }
        for (i, s) in tcp.iter().enumerate() {
            fds.push((s.as_raw_fd(), Token(TCP_BASE + i)));
        }
        fds
    }

    /// Answers every DHCP and DHCPv6 message waiting, each lease on disk
    /// (and its hostname in DNS) before the client hears of it.
    fn dhcp_ready(&mut self, token: Token) {
        loop {
            if token == DHCP {
                let Some(reply) = self.dhcp.as_mut().and_then(|d| d.next()) else {
                    return;
                };
                self.sync_leases();
                if let Some(d) = &self.dhcp {
                    d.send(&reply);
                }
            } else {
                let Some((reply, to)) = self.dhcpv6.as_mut().and_then(|d| d.next()) else {
                    return;
                };
                self.sync_leases();
                if let Some(d) = &self.dhcpv6 {
                    d.send(&reply, to);
                }
            }
        }
    }

    /// Saves the servers' leases (IPv4 and DHCPv6) and rebuilds the DNS
    /// zone when they changed.
    fn sync_leases(&mut self) {
        let mut now: Vec<LeaseRecord> = Vec::new();
        if let Some(d) = &self.dhcp {
            now.extend(d.lease_records());
        }
        if let Some(v6) = &self.dhcpv6 {
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

    /// Writes [`STATS_FILE`] next to the leases when the counts changed,
    /// at most every [`STATS_EVERY`] (the daemon's metrics read it).
    fn write_stats(&mut self, now: Instant) {
        if self
            .stats
            .1
            .is_some_and(|at| now.duration_since(at) < STATS_EVERY)
        {
            return;
        }
        let relay = self.dns.relay_stats();
        let secs = config::epoch_secs();
        let stats = ServiceStats {
            dhcp_leases: self.saved.iter().filter(|l| l.is_active(secs)).count() as u64,
            dns_upstream_queries: relay.sent,
            dns_answered: relay.answered,
            dns_upstream_failures: relay.failed,
            dns_dropped: relay.dropped_full + relay.dropped_other,
        };
        if self.stats.1.is_some() && stats == self.stats.0 {
            return;
        }
        self.stats = (stats, Some(now));
        match serde_json::to_vec(&stats) {
            Ok(json) => {
                if let Err(e) = self.leases.dir().write_atomic(STATS_FILE.as_ref(), &json) {
                    tracing::warn!("{e}");
                }
            }
            Err(e) => tracing::warn!("stats: {e}"),
        }
    }

    /// A lease that ran out takes its hostname out of DNS.
    fn expire_leases(&mut self) {
        let secs = config::epoch_secs();
        if self.saved.iter().any(|l| {
            l.hostname.is_some() && l.expires.is_some_and(|e| e <= secs && e > self.zone_built)
        }) {
            self.rebuild_zone();
        }
    }

    fn rebuild_zone(&mut self) {
        match config::zone(&self.file.service, &self.saved) {
            Ok(z) => self.dns.set_zone(z),
            Err(e) => tracing::error!("{e}"),
        }
        self.zone_built = config::epoch_secs();
    }

    /// When the loop must wake at the latest.
    fn next_wake(&self, now: Instant) -> Duration {
        let deadline = [
            self.dns.next_deadline(),
            self.tftp.as_ref().and_then(tftp::Tftp::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        deadline.map_or(TICK, |d| TICK.min(d.saturating_duration_since(now)))
    }
}

/// The service's main loop; returns when asked to terminate. Prints `ready`
/// on stdout once its sockets are bound (the backend waits for it).
pub fn run(config: &Path) -> Result<()> {
    // Taken before anything else: a signal during setup waits for the loop.
    let mut signals =
        Signals::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]).map_err(|source| Error::Os {
            what: "signal handling".into(),
            source,
        })?;
    let mut svc = Service::new(config)?;
    let perr = |source| Error::Os {
        what: "poll".into(),
        source,
    };
    let mut poll = Poll::new().map_err(perr)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(perr)?;
    for (fd, token) in svc.sockets() {
        poll.registry()
            .register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)
            .map_err(perr)?;
    }
    // Asks whether the bridge is still there (SIOCGIFINDEX).
    let probe = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(perr)?;
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
    tracing::info!(
        target: "slipway::lifecycle",
        network = %svc.file.network,
        interface = %svc.file.service.interface,
        "the DHCP/DNS service of network {} is ready on {}",
        svc.file.network,
        svc.file.service.interface
    );
    let mut events = Events::with_capacity(64);
    // DNS listeners with queries left after a batch: read on after the
    // other sockets had their turn.
    let mut dns_backlog = vec![false; svc.dns.listeners().0.len()];
    loop {
        let wait = if dns_backlog.contains(&true) {
            Duration::ZERO
        } else {
            svc.next_wake(Instant::now())
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(perr(e)),
        }
        let registry = poll.registry();
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    for sig in signals.pending() {
                        if sig != libc::SIGHUP {
                            let signal = slipway_host::signals::signal_name(sig);
                            tracing::info!(
                                target: "slipway::lifecycle",
                                network = %svc.file.network,
                                %signal,
                                "the DHCP/DNS service of network {} is stopping: {signal} received",
                                svc.file.network
                            );
                            return Ok(());
                        }
                        svc.reload();
                    }
                }
                t @ (DHCP | DHCP6) => svc.dhcp_ready(t),
                TFTP => svc.tftp.as_mut().map_or((), |t| t.listener_ready(registry)),
                ICMP6 => svc.ra.as_mut().map_or((), |ra| ra.icmp_ready()),
                Token(t) if t >= UPSTREAM_BASE => svc.dns.upstream_ready(t - UPSTREAM_BASE),
                Token(t) if t >= TCP_CLIENT_BASE => {
                    svc.dns.client_ready(registry, (t - TCP_CLIENT_BASE) / 2)
                }
                Token(t) if t >= TFTP_TRANSFER_BASE => {
                    let slot = t - TFTP_TRANSFER_BASE;
                    svc.tftp
                        .as_mut()
                        .map_or((), |tf| tf.transfer_ready(registry, slot))
                }
                Token(t) if t >= TCP_BASE => svc.dns.accept(registry, t - TCP_BASE),
                Token(t) => dns_backlog[t - DNS_BASE] = true,
            }
        }
        for (i, more) in dns_backlog.iter_mut().enumerate() {
            if *more {
                *more = svc.dns.udp_ready(registry, i);
            }
        }
        let now = Instant::now();
        svc.dns.expire(registry, now);
        if let Some(t) = &mut svc.tftp {
            t.expire(registry, now);
        }
        svc.expire_leases();
        svc.write_stats(now);
        if let Some(ra) = &mut svc.ra {
            ra.tick();
        }
        if crate::netlink::link_index_via(&probe, svc.file.service.interface.as_str()).is_none() {
            // The bridge was removed without stopping us: nothing left to serve.
            tracing::warn!(
                target: "slipway::lifecycle",
                network = %svc.file.network,
                "the DHCP/DNS service of network {} is stopping: {} is gone",
                svc.file.network,
                svc.file.service.interface
            );
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::config::{dhcp_config, zone};
    use super::*;
    use slipway_dns::Answer;
    use slipway_netmgr::plan::{DhcpPool, ServiceConfig, StaticLease};
    use std::net::{IpAddr, Ipv4Addr};
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

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
        let query = |name: &str| slipway_testkit::dns_query(0x1234, name, 1);
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
