//! Linux realization of slipway's virtual networks: [`LinuxBackend`]
//! implements [`slipway_netmgr::Backend`].
//!
//! Starting a network follows libvirt's sequence: refuse a subnet already
//! routed elsewhere, create the bridge over netlink (MAC, MTU, STP, forward
//! delay), IPv6 sysctls, nftables rules in slipway's own `slipway_network`
//! tables (one `nft -j` transaction of the plan's rules rendered as JSON,
//! rule handles read back), addresses, link
//! up, static routes, forwarding sysctls, and the DHCP/DNS service process
//! ([`service`]). Every step is recorded in a [`Record`] written next to the
//! live state (`hostnet/NAME.json`) before the next one starts, so a failure
//! rolls back in reverse order and a later `stop`, even from a restarted
//! daemon, removes exactly what was added.
//!
//! Needs CAP_NET_ADMIN in the network namespace (root, or root of an
//! unprivileged user + network namespace, which is how the tests run), `nft`
//! (Debian package nftables), and a writable `/proc/sys/net`.

#![deny(missing_docs)]

mod error;
mod firewall;
pub mod leases;
pub mod netlink;
pub mod ovn;
pub mod ovs;
pub mod service;
pub mod tap;
pub mod tc;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use slipway_host::atomic;
use slipway_netmgr::plan::network_of;
use slipway_netmgr::{Action, Backend, LiveState, Plan};
use slipway_netxml::{Network, NetworkPort};

pub use error::{Error, Result};
pub use firewall::RuleHandle;
pub use leases::{leases_json, leases_table, LeaseJson};

/// How long `start` waits for the service to report `ready`.
const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits for the service to exit after SIGTERM before SIGKILL.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A sysctl changed, with the value it had. Forwarding is put back when the
/// last running network that needs it stops; a bridge's own sysctls go with
/// the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlChange {
    /// The key, dotted.
    pub key: String,
    /// Its value before.
    pub old: String,
}

/// A static route added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAdded {
    /// Destination.
    pub dest: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway.
    pub gateway: IpAddr,
    /// Metric.
    pub metric: Option<u32>,
}

/// The service process started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceProcess {
    /// Its pid.
    pub pid: i32,
    /// Its configuration file (also how the pid is recognised as ours).
    pub config: PathBuf,
}

/// What starting a network added to the host, in the order added. Kept in
/// `hostnet/NAME.json` in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The network.
    pub network: String,
    /// The bridge created (its addresses go with it).
    pub bridge: Option<String>,
    /// Sysctls changed: by this network, or handed over by a network that
    /// changed them and stopped while this one still needed them.
    pub sysctls: Vec<SysctlChange>,
    /// The host-wide sysctls (forwarding) this network needs, changed by it
    /// or not.
    #[serde(default)]
    pub host_sysctls: Vec<String>,
    /// nftables rules added (handles).
    pub rules: Vec<RuleHandle>,
    /// Static routes added.
    pub routes: Vec<RouteAdded>,
    /// The DHCP/DNS service.
    pub service: Option<ServiceProcess>,
    /// The OVN logical switch made sure of (removed at stop when it has
    /// no ports left; see [`ovn`]).
    #[serde(default)]
    pub ovn: Option<OvnSwitchRecord>,
    /// A device shaped with tc that slipway did not create (a host
    /// bridge): its shaping is removed at stop. A bridge slipway created
    /// takes its shaping with it.
    #[serde(default)]
    pub shaped: Option<String>,
}

/// The OVN logical switch of a network, as its start found or made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvnSwitchRecord {
    /// The switch's name.
    pub switch: String,
    /// The northbound database's remotes.
    pub nb: Vec<String>,
    /// Its `other_config:subnet`.
    pub subnet: Option<String>,
}

impl OvnSwitchRecord {
    /// Makes sure the switch exists for `network` ([`ovn::OvnNb::ensure_switch`]).
    fn ensure(&self, network: &str) -> Result<()> {
        let owner = ovn::OvnNb::new(&self.nb).ensure_switch(
            network,
            &self.switch,
            self.subnet.as_deref(),
        )?;
        if let ovn::SwitchOwner::Other(mark) = owner {
            tracing::warn!(
                "network {network}: OVN logical switch {} was not made by slipway for this \
                 network ({}): using it as it is",
                self.switch,
                mark.map_or("no slipway mark".into(), |m| format!(
                    "made for network {m}"
                ))
            );
        }
        Ok(())
    }
}

/// Where the backend keeps its files inside the manager's state directory:
/// a directory of its own, since the manager reads every `*.json` of the
/// state directory as a network status.
pub fn own_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("hostnet")
}

/// The Linux backend.
#[derive(Debug, Clone)]
pub struct LinuxBackend {
    dir: PathBuf,
    service_cmd: Vec<OsString>,
    resolv_conf: PathBuf,
}

impl LinuxBackend {
    /// A backend keeping its records in `state_dir` (the manager's live state
    /// directory) and running the DHCP/DNS service as `service_cmd` (program
    /// and arguments) followed by the service's configuration file; for the
    /// `slipway` binary that is `[current_exe, "net-service"]`.
    pub fn new(state_dir: impl AsRef<Path>, service_cmd: Vec<OsString>) -> LinuxBackend {
        LinuxBackend {
            dir: own_dir(state_dir.as_ref()),
            service_cmd,
            resolv_conf: PathBuf::from(slipway_dns::RESOLV_CONF),
        }
    }

    /// Uses this resolver configuration instead of `/etc/resolv.conf` for the
    /// host's upstream DNS servers.
    pub fn with_resolv_conf(mut self, path: impl Into<PathBuf>) -> LinuxBackend {
        self.resolv_conf = path.into();
        self
    }

    /// The record file of network `name`.
    pub fn record_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Reads the record of network `name`, if any.
    pub fn record(&self, name: &str) -> Result<Option<Record>> {
        let path = self.record_file(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::corrupt(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read", path, e)),
        }
    }

    fn save(&self, rec: &Record) -> Result<()> {
        let path = self.record_file(&rec.network);
        let json = serde_json::to_vec_pretty(rec).map_err(|e| Error::corrupt(&path, e))?;
        Ok(atomic::write(&path, &json)?)
    }

    /// Applies a live update (`net-update --live` of DHCP hosts or DNS
    /// hosts) of a running network: `plan` is the plan of its updated live
    /// definition; its service's configuration is rewritten and the service
    /// rereads it (SIGHUP) without restarting. Other sections cannot change
    /// live (the manager refuses them).
    pub fn update_live(&self, plan: &Plan) -> Result<()> {
        let name = &plan.network;
        let rec = self
            .record(name)?
            .ok_or_else(|| Error::Service(format!("network {name} is not started")))?;
        let svc = plan.actions.iter().find_map(|a| match a {
            Action::DhcpDns(s) => Some(s),
            _ => None,
        });
        let (svc, proc_) = match (svc, rec.service) {
            (Some(svc), Some(p)) => (svc, p),
            // Nothing runs that serves the changed sections (a network
            // without addresses): the new live definition is all there is
            // to it, as with libvirt.
            (None, None) => return Ok(()),
            (Some(_), None) => {
                return Err(Error::Service(format!(
                    "network {name} runs no DHCP/DNS service: destroy and start it to apply the change"
                )))
            }
            (None, Some(_)) => {
                return Err(Error::Service(format!(
                    "the change leaves network {name} without a DHCP/DNS service: destroy and start it to apply it"
                )))
            }
        };
        let mut file = service::read_service_file(&proc_.config)?;
        file.service = (**svc).clone();
        write_service_file(&proc_.config, &file)?;
        if gone(&proc_) {
            return Err(Error::Service(format!(
                "the service of network {name} (pid {}) is not running",
                proc_.pid
            )));
        }
        // SAFETY: plain kill(2) on a pid checked to be our service.
        unsafe { libc::kill(proc_.pid, libc::SIGHUP) };
        Ok(())
    }

    /// How the DHCP/DNS service of running network `name` ended (`(pid N)
    /// was killed by signal 9`), if it did; `None` while it runs or when the
    /// network has none.
    pub fn service_exit(&self, name: &str) -> Result<Option<String>> {
        let Some(p) = self.record(name)?.and_then(|r| r.service) else {
            return Ok(None);
        };
        Ok(exit_of(&p).map(|how| format!("(pid {}) {how}", p.pid)))
    }

    /// Restarts the DHCP/DNS service of running network `name` if it died
    /// (at daemon start, for networks that stayed up); leases come back from
    /// the leases file. Returns whether it had to be restarted.
    pub fn revive(&self, name: &str) -> Result<bool> {
        let Some(mut rec) = self.record(name)? else {
            return Ok(false);
        };
        let Some(p) = rec.service.clone() else {
            return Ok(false);
        };
        if !gone(&p) {
            return Ok(false);
        }
        tracing::warn!("the DHCP/DNS service of network {name} died: restarting it");
        self.adopt_old_leases(name, &p.config)?;
        self.spawn_service(name, &p.config, &mut rec)?;
        Ok(true)
    }

    /// Moves the leases of a service configuration written before they had
    /// a directory of their own (`NAME.leases.json` next to it, in a
    /// directory the confined service must not own) into that directory.
    fn adopt_old_leases(&self, name: &str, config: &Path) -> Result<()> {
        let mut file = service::read_service_file(config)?;
        let new = leases::leases_file(&self.dir, name);
        if file.leases_file == new {
            return Ok(());
        }
        leases::LeasesFile::open(&new)?;
        match std::fs::rename(&file.leases_file, &new) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot move", &file.leases_file, e)),
        }
        tracing::info!("network {name}: leases moved to {}", new.display());
        file.leases_file = new;
        write_service_file(config, &file)
    }

    fn do_start(&self, plan: &Plan, rec: &mut Record) -> Result<()> {
        let mut nl = netlink::Netlink::open()?;
        preflight(&mut nl, plan)?;
        let mut bridge_index = 0;
        let fw_steps: Vec<&slipway_netmgr::plan::FirewallStep> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Firewall { step } => Some(step),
                _ => None,
            })
            .collect();
        let mut fw_done = false;
        let mut fw_logged = false;
        for action in &plan.actions {
            match action {
                Action::CreateBridge {
                    name,
                    mac,
                    mtu,
                    stp,
                    delay,
                } => {
                    let mac = match mac {
                        Some(m) => Some(m.parse::<slipway_host::MacAddr>().map(|m| m.0).map_err(
                            |_| Error::Plan(format!("bridge MAC {m:?} is not a MAC address")),
                        )?),
                        None => None,
                    };
                    // Recorded first: a failure after the kernel created it
                    // still removes it.
                    rec.bridge = Some(name.to_string());
                    self.save(rec)?;
                    bridge_index = nl.create_bridge(&netlink::BridgeSpec {
                        name: name.as_str(),
                        mac,
                        mtu: *mtu,
                        stp: *stp,
                        delay: *delay,
                    })?;
                }
                Action::Sysctl { key, value } => {
                    if is_host_wide(key) {
                        rec.host_sysctls.push(key.clone());
                        self.save(rec)?;
                    }
                    if let Some(old) = set_sysctl(key, value)? {
                        rec.sysctls.push(SysctlChange {
                            key: key.clone(),
                            old,
                        });
                        self.save(rec)?;
                    }
                }
                Action::Firewall { .. } if fw_done => {}
                Action::Firewall { .. } => {
                    // All of a plan's rules go in as one transaction.
                    rec.rules = firewall::apply(&fw_steps)?;
                    fw_done = true;
                    self.save(rec)?;
                }
                Action::AddAddress {
                    address, prefix, ..
                } => nl.add_address(bridge_index, *address, *prefix)?,
                Action::LinkUp { dev } => nl.set_up(bridge_index, dev.as_str())?,
                Action::AddRoute {
                    dest,
                    prefix,
                    gateway,
                    metric,
                    ..
                } => {
                    let route = RouteAdded {
                        dest: *dest,
                        prefix: *prefix,
                        gateway: *gateway,
                        metric: *metric,
                    };
                    nl.add_route(&route, bridge_index)?;
                    rec.routes.push(route);
                    self.save(rec)?;
                }
                Action::OvnSwitch { switch, nb, subnet } => {
                    let sw = OvnSwitchRecord {
                        switch: switch.clone(),
                        nb: nb.clone(),
                        subnet: subnet.clone(),
                    };
                    // Recorded first: a failure after the database made it
                    // still removes it.
                    rec.ovn = Some(sw.clone());
                    self.save(rec)?;
                    sw.ensure(&plan.network)?;
                }
                Action::Bandwidth { dev, shape } => {
                    if rec.bridge.as_deref() != Some(dev.as_str()) {
                        if netlink::link_index(dev.as_str()).is_none() {
                            return Err(Error::Plan(format!(
                                "bridge {dev} does not exist, so its <bandwidth> cannot be set"
                            )));
                        }
                        rec.shaped = Some(dev.to_string());
                        self.save(rec)?;
                    }
                    tc::set(dev.as_str(), shape, true)?;
                }
                Action::DhcpDns(svc) => {
                    let config = service::service_file(&self.dir, &plan.network);
                    let file = service::ServiceFile {
                        network: plan.network.clone(),
                        service: (**svc).clone(),
                        leases_file: leases::leases_file(&self.dir, &plan.network),
                        resolv_conf: self.resolv_conf.clone(),
                        user: service::DEFAULT_USER.into(),
                    };
                    write_service_file(&config, &file)?;
                    self.spawn_service(&plan.network, &config, rec)?;
                }
            }
            match action {
                // One transaction, logged as its nft commands once.
                Action::Firewall { .. } if fw_logged => {}
                Action::Firewall { .. } => {
                    fw_logged = true;
                    for step in &fw_steps {
                        log_action(&plan.network, step);
                    }
                }
                action => log_action(&plan.network, action),
            }
        }
        Ok(())
    }

    /// Starts the service process in its own session (it outlives a CLI run
    /// in direct mode), records it, and waits for its `ready` line.
    fn spawn_service(&self, network: &str, config: &Path, rec: &mut Record) -> Result<()> {
        let (program, args) = self
            .service_cmd
            .split_first()
            .ok_or_else(|| Error::Service("no service command configured".into()))?;
        let log_path = self.dir.join(format!("{network}.service.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io("cannot open", &log_path, e))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: program.into(),
            source,
        })?;
        let pid = child.id() as i32;
        // Recorded before waiting, so a failure below still stops it.
        rec.service = Some(ServiceProcess {
            pid,
            config: config.to_path_buf(),
        });
        self.save(rec)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(SERVICE_READY_TIMEOUT) {
            Ok(line) if line.trim() == "ready" => Ok(()),
            _ => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let last = log.lines().last().unwrap_or("no message").to_string();
                Err(Error::Service(format!(
                    "the DHCP/DNS service for {network} did not start: {last} (log {})",
                    log_path.display()
                )))
            }
        }
    }

    /// Undoes `rec` in reverse order; keeps going past failures and returns
    /// the first.
    fn undo(&self, rec: &Record) -> Result<()> {
        let mut first: Option<Error> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::error!("undo {}: {e}", rec.network);
                first.get_or_insert(e);
            }
        };
        let network = rec.network.as_str();
        if let Some(p) = &rec.service {
            log_undo(
                network,
                format_args!("stop the DHCP/DNS service (pid {})", p.pid),
            );
            note(stop_service(p));
        }
        match netlink::Netlink::open() {
            Ok(mut nl) => {
                let bridge_index = rec.bridge.as_deref().and_then(netlink::link_index);
                if let Some(idx) = bridge_index {
                    for r in rec.routes.iter().rev() {
                        log_undo(
                            network,
                            format_args!("ip route del {}/{} via {}", r.dest, r.prefix, r.gateway),
                        );
                        // Gone already if the bridge went down: not an error.
                        let _ = nl.del_route(r, idx);
                    }
                }
                for r in &rec.rules {
                    log_undo(
                        network,
                        format_args!(
                            "nft delete rule {} slipway {} handle {}",
                            r.family, r.chain, r.handle
                        ),
                    );
                }
                note(firewall::remove(&rec.rules));
                if let (Some(idx), Some(b)) = (bridge_index, &rec.bridge) {
                    log_undo(network, format_args!("ip link del {b}"));
                    note(nl.delete_link(idx, b));
                }
            }
            Err(e) => note(Err(e)),
        }
        if let Some(dev) = &rec.shaped {
            log_undo(
                network,
                format_args!("tc qdisc del dev {dev} root; ingress"),
            );
            tc::clear(dev);
        }
        note(self.restore_host_sysctls(rec));
        if let Some(sw) = &rec.ovn {
            log_undo(
                network,
                format_args!(
                    "remove OVN logical switch {} if no ports are left",
                    sw.switch
                ),
            );
            let removed = ovn::OvnNb::new(&sw.nb).remove_switch(network, &sw.switch);
            if let Ok(false) = removed {
                tracing::info!(
                    "network {network}: OVN logical switch {} kept (ports of other hosts \
                     left on it, or not slipway's)",
                    sw.switch
                );
            }
            note(removed.map(drop).map_err(Error::from));
        }
        first.map_or(Ok(()), Err)
    }
}

impl LinuxBackend {
    /// The records of the other networks started by this backend.
    fn other_records(&self, name: &str) -> Vec<Record> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let stem = file.strip_suffix(".json")?;
                // Service and lease files share the directory: a record is
                // the file of the network it names.
                let rec = self.record(stem).ok().flatten()?;
                (rec.network == stem && stem != name).then_some(rec)
            })
            .collect()
    }

    /// Puts back the host-wide sysctls `rec` changed, unless another
    /// running network needs them: that one takes over the change, and
    /// puts it back when it stops. The bridge's own sysctls went with it.
    fn restore_host_sysctls(&self, rec: &Record) -> Result<()> {
        let mut others = self.other_records(&rec.network);
        let mut first = None;
        for change in rec.sysctls.iter().filter(|c| is_host_wide(&c.key)) {
            match others
                .iter_mut()
                .find(|o| o.host_sysctls.contains(&change.key))
            {
                Some(other) => {
                    other.sysctls.push(change.clone());
                    if let Err(e) = self.save(other) {
                        first.get_or_insert(e);
                    }
                }
                None => {
                    log_undo(
                        &rec.network,
                        format_args!("sysctl -w {}={}", change.key, change.old),
                    );
                    if let Err(e) = set_sysctl(&change.key, &change.old) {
                        first.get_or_insert(e);
                    }
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Backend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn check(&self, plan: &Plan) -> slipway_netmgr::Result<()> {
        let mut nl = netlink::Netlink::open()?;
        Ok(preflight(&mut nl, plan)?)
    }

    fn start(&self, plan: &Plan) -> slipway_netmgr::Result<LiveState> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create", &self.dir, e))?;
        if let Some(old) = self.record(&plan.network)? {
            // A start that crashed half-way, or state the manager lost:
            // remove what it added before adding it again.
            tracing::warn!("cleaning up leftovers of network {}", plan.network);
            self.undo(&old)?;
        }
        let mut rec = Record {
            network: plan.network.clone(),
            ..Record::default()
        };
        if let Err(e) = self.do_start(plan, &mut rec) {
            if let Err(undo) = self.undo(&rec) {
                tracing::error!("rollback of network {} incomplete: {undo}", plan.network);
            } else {
                let _ = atomic::remove(&self.record_file(&plan.network));
            }
            return Err(e.into());
        }
        let started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(LiveState {
            network: plan.network.clone(),
            backend: self.name().into(),
            applied: plan.actions.clone(),
            started_at,
        })
    }

    fn stop(&self, live: &LiveState) -> slipway_netmgr::Result<()> {
        let Some(rec) = self.record(&live.network)? else {
            tracing::warn!("network {} has no record: nothing to undo", live.network);
            return Ok(());
        };
        self.undo(&rec)?;
        if let Some(p) = &rec.service {
            atomic::remove(&p.config).map_err(Error::from)?;
        }
        atomic::remove(&self.record_file(&live.network)).map_err(Error::from)?;
        Ok(())
    }

    fn recover(&self, live: &LiveState) -> slipway_netmgr::Result<()> {
        // Record files a crashed daemon was replacing.
        atomic::clean_stale(&self.dir);
        self.revive(&live.network)?;
        // The OVN switch may have been removed while no daemon watched
        // (its database restarted empty, an admin): made again, as at start.
        if let Some(sw) = self.record(&live.network)?.and_then(|r| r.ovn) {
            sw.ensure(&live.network)?;
        }
        Ok(())
    }

    fn port_added(&self, net: &Network, port: &NetworkPort) -> slipway_netmgr::Result<()> {
        let (Some(sw), Some(lsp)) = (&net.ovn, ovn_port_name(port)) else {
            return Ok(());
        };
        log_action(
            &net.name,
            &format_args!("OVN logical switch port {lsp} on {}", sw.switch),
        );
        ovn::OvnNb::of(sw)
            .set_port(
                &net.name,
                &sw.switch,
                &lsp,
                &sw.port_addresses(port.mac),
                port.uuid,
            )
            .map_err(|e| Error::from(e).into())
    }

    fn port_removed(&self, net: &Network, port: &NetworkPort) -> slipway_netmgr::Result<()> {
        let (Some(sw), Some(lsp)) = (&net.ovn, ovn_port_name(port)) else {
            return Ok(());
        };
        log_undo(
            &net.name,
            format_args!("remove OVN logical switch port {lsp}"),
        );
        ovn::OvnNb::of(sw)
            .del_port(&lsp)
            .map_err(|e| Error::from(e).into())
    }

    fn service_exit(&self, live: &LiveState) -> slipway_netmgr::Result<Option<String>> {
        Ok(LinuxBackend::service_exit(self, &live.network)?)
    }

    fn update_live(&self, plan: &Plan) -> slipway_netmgr::Result<()> {
        Ok(LinuxBackend::update_live(self, plan)?)
    }

    fn plug_floor(&self, f: &slipway_netmgr::shaping::FloorClass) -> slipway_netmgr::Result<()> {
        tc::plug_floor(&f.bridge, f.ceiling, f.mac, f.floor, f.class)?;
        if let Err(e) = tc::update_rate(&f.bridge, 2, f.ceiling, f.rest) {
            // libvirt only warns here: the floor itself is in place.
            tracing::warn!("bridge {}: {e}", f.bridge);
        }
        Ok(())
    }

    fn unplug_floor(&self, f: &slipway_netmgr::shaping::FloorClass) -> slipway_netmgr::Result<()> {
        tc::unplug_floor(&f.bridge, f.class);
        if let Err(e) = tc::update_rate(&f.bridge, 2, f.ceiling, f.rest) {
            tracing::warn!("bridge {}: {e}", f.bridge);
        }
        Ok(())
    }

    fn service_stats(&self, live: &LiveState) -> Option<slipway_netmgr::ServiceStats> {
        let leases = leases::leases_file(&self.dir, &live.network);
        let stats = leases.parent()?.join(service::STATS_FILE);
        let bytes = slipway_host::files::read_regular(&stats).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The OVN logical switch port of a guest's port: its `iface-id`.
fn ovn_port_name(port: &NetworkPort) -> Option<String> {
    port.virtualport
        .as_ref()
        .and_then(|v| v.interface_id)
        .map(|id| id.to_string())
}

/// Logs one action carried out for `network` (at info: `slipway -v` and
/// the daemon show it).
fn log_action(network: &str, action: &dyn std::fmt::Display) {
    tracing::info!(network, action = %action, "network {network}: {action}");
}

/// Logs one step of undoing `network`.
fn log_undo(network: &str, step: std::fmt::Arguments<'_>) {
    tracing::info!(network, undo = %step, "network {network}: undo: {step}");
}

fn write_service_file(path: &Path, file: &service::ServiceFile) -> Result<()> {
    let json = serde_json::to_vec_pretty(file).map_err(|e| Error::corrupt(path, e))?;
    Ok(atomic::write(path, &json)?)
}

/// The host checks of a start, before anything is created (also what
/// `net-start --dry-run` runs): the bridge must not exist yet, its subnets
/// must not be routed elsewhere, and the service must accept its
/// configuration.
fn preflight(nl: &mut netlink::Netlink, plan: &Plan) -> Result<()> {
    for a in &plan.actions {
        if let Action::CreateBridge { name, .. } = a {
            if netlink::link_index(name.as_str()).is_some() {
                return Err(Error::BridgeExists(name.to_string()));
            }
        }
    }
    check_subnets(nl, plan)?;
    for a in &plan.actions {
        if let Action::DhcpDns(svc) = a {
            service::dhcp_config(svc)?;
        }
    }
    Ok(())
}

/// Refuses a plan whose bridge subnets are already routed through an
/// interface (libvirt's "Network is already in use by interface X").
fn check_subnets(nl: &mut netlink::Netlink, plan: &Plan) -> Result<()> {
    let routes = nl.routes()?;
    for a in &plan.actions {
        let Action::AddAddress {
            address, prefix, ..
        } = a
        else {
            continue;
        };
        let net = network_of(*address, *prefix);
        for r in &routes {
            // Only routes of the same size and net, like libvirt; default
            // routes and host routes never collide.
            if r.oif != 0 && r.prefix == *prefix && r.dest == net {
                let interface = netlink::link_name(r.oif).unwrap_or_else(|| r.oif.to_string());
                return Err(Error::SubnetInUse { interface });
            }
        }
    }
    Ok(())
}

/// Whether a sysctl is the host's (forwarding), not a device's.
fn is_host_wide(key: &str) -> bool {
    key == "net.ipv4.ip_forward" || key == "net.ipv6.conf.all.forwarding"
}

/// The /proc/sys file of a dotted key; in `net.ipv{4,6}.conf.DEV.LEAF` the
/// device name may itself contain dots (`br.100`).
fn sysctl_path(key: &str) -> PathBuf {
    let root = Path::new("/proc/sys");
    for family in ["net.ipv4.conf.", "net.ipv6.conf."] {
        if let Some((dev, leaf)) = key
            .strip_prefix(family)
            .and_then(|rest| rest.rsplit_once('.'))
        {
            return root
                .join(family.trim_end_matches('.').replace('.', "/"))
                .join(dev)
                .join(leaf);
        }
    }
    root.join(key.replace('.', "/"))
}

/// Writes a sysctl; returns its old value when it changed. A missing key
/// for disabling IPv6 is fine (a kernel without IPv6).
fn set_sysctl(key: &str, value: &str) -> Result<Option<String>> {
    let path = sysctl_path(key);
    let err = |e| Error::Sysctl {
        key: key.to_string(),
        source: e,
    };
    let old = match std::fs::read_to_string(&path) {
        Ok(v) => v.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && key.contains("ipv6") => {
            return Ok(None)
        }
        Err(e) => return Err(err(e)),
    };
    if old == value {
        return Ok(None);
    }
    std::fs::write(&path, value).map_err(err)?;
    Ok(Some(old))
}

/// Whether the process `p` names is still the service started with that
/// configuration (not a recycled pid).
fn is_our_service(p: &ServiceProcess) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", p.pid)) else {
        return false;
    };
    let config = p.config.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == config)
}

/// How the service ended (`exited with status 1`, `was killed by signal
/// 9`), reaping it if it is our child; `None` while it runs. A process that
/// is not our child and is gone simply `exited` (its status is its parent's).
fn exit_of(p: &ServiceProcess) -> Option<String> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid; ECHILD when not our child.
    let r = unsafe { libc::waitpid(p.pid, &mut status, libc::WNOHANG) };
    if r == p.pid {
        return Some(if libc::WIFSIGNALED(status) {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        });
    }
    (!is_our_service(p) || is_zombie(p.pid)).then(|| "exited".to_string())
}

/// Reaps `pid` if it is our exited child; true when it is gone.
fn gone(p: &ServiceProcess) -> bool {
    exit_of(p).is_some()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(false)
}

/// Stops the service: SIGTERM, then SIGKILL if it lingers.
fn stop_service(p: &ServiceProcess) -> Result<()> {
    if gone(p) {
        return Ok(());
    }
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        // SAFETY: plain kill(2) on a pid checked to be our service.
        unsafe { libc::kill(p.pid, signal) };
        let deadline = Instant::now() + SERVICE_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if gone(p) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(Error::Service(format!(
        "service pid {} does not exit",
        p.pid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_with_dotted_device_names() {
        assert_eq!(
            sysctl_path("net.ipv6.conf.br.100.disable_ipv6"),
            Path::new("/proc/sys/net/ipv6/conf/br.100/disable_ipv6")
        );
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net.ipv6.conf.all.forwarding"),
            Path::new("/proc/sys/net/ipv6/conf/all/forwarding")
        );
    }
}
