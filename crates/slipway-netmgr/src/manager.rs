//! The network manager: every operation reads the definitions and live state
//! from disk under the lock, changes them with crash-safe writes, and reports
//! the lifecycle events it caused. It keeps no state in memory, so the daemon
//! and direct-mode commands can work side by side.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use slipway_netxml::{DefaultsContext, Network};

use crate::defaultnet;
use crate::error::{Error, Result};
use crate::fsutil::{self, LockGuard};
use crate::paths::Paths;
use crate::plan::{self, Plan};
use crate::proto::{
    Event, EventKind, ListFilter, Lookup, NetworkInfo, Outcome, Problem, Reply, Request,
};
use crate::realize::{Backend, LiveState, ServiceStats};
use crate::update::{self, UpdateSpec};
use slipway_host::atomic;

mod ports;

/// One network as found on disk.
#[derive(Debug, Clone)]
struct Entry {
    /// The persistent definition, if any.
    config: Option<Network>,
    /// The running definition and its realized state, if active.
    live: Option<(Network, LiveState)>,
    /// Whether the autostart link exists.
    autostart: bool,
}

impl Entry {
    /// The running definition of network `name`, or libvirt's "not
    /// active" error.
    fn running(&self, name: &str) -> Result<&Network> {
        match &self.live {
            Some((net, _)) => Ok(net),
            None => Err(Error::NotValid(format!("network '{name}' is not active"))),
        }
    }

    /// The definition in effect: live when running, else the persistent one.
    fn current(&self) -> &Network {
        match (&self.live, &self.config) {
            (Some((live, _)), _) => live,
            (None, Some(cfg)) => cfg,
            (None, None) => unreachable!("an entry has a definition or live state"),
        }
    }

    fn uuid(&self) -> String {
        self.current()
            .uuid
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    fn info(&self) -> NetworkInfo {
        let cur = self.current();
        NetworkInfo {
            name: cur.name.clone(),
            uuid: self.uuid(),
            active: self.live.is_some(),
            persistent: self.config.is_some(),
            autostart: self.autostart,
            bridge: cur.bridge_name().map(str::to_string),
        }
    }
}

/// Everything on disk: networks by name plus files that could not be read.
#[derive(Debug, Default)]
struct Inventory {
    nets: BTreeMap<String, Entry>,
    problems: Vec<Problem>,
}

impl Inventory {
    /// virsh's lookup: by UUID first when allowed and the key looks like one,
    /// then by name; the error names the last kind tried.
    fn find(&self, key: &Lookup) -> Result<(&String, &Entry)> {
        let try_uuid = key.by_uuid && key.key.len() == 36;
        if try_uuid {
            if let Ok(u) = uuid::Uuid::parse_str(&key.key) {
                if let Some(found) = self.nets.iter().find(|(_, e)| e.current().uuid == Some(u)) {
                    return Ok(found);
                }
            }
        }
        if key.by_name {
            if let Some(found) = self.nets.get_key_value(&key.key) {
                return Ok(found);
            }
            // A definition that exists but cannot be read is reported as such,
            // not as "not found".
            if let Some(p) = self
                .problems
                .iter()
                .find(|p| p.network.as_deref() == Some(key.key.as_str()))
            {
                return Err(Error::Corrupt {
                    path: PathBuf::from(&p.path),
                    why: p.message.clone(),
                });
            }
            return Err(Error::NoSuchName(key.key.clone()));
        }
        Err(Error::NoSuchUuid(key.key.clone()))
    }

    fn bridges_except(&self, name: &str) -> Vec<String> {
        let mut v = Vec::new();
        for (n, e) in &self.nets {
            if n == name {
                continue;
            }
            for def in e.config.iter().chain(e.live.iter().map(|(l, _)| l)) {
                if let Some(b) = def.bridge_name() {
                    v.push(b.to_string());
                }
            }
        }
        v
    }
}

/// The definitions and live state on disk under [`Paths`]: the lock and
/// the reading, which need no [`Backend`].
struct Store<'a> {
    paths: &'a Paths,
}

impl Store<'_> {
    /// Takes the lock, creating the shipped `default` network first if the
    /// definitions directory does not exist yet (first run; not under
    /// `--root`, see [`Paths::first_run_default`]).
    fn lock(&self, exclusive: bool) -> Result<LockGuard> {
        if self.paths.first_run_default && !self.paths.config_dir.exists() {
            let guard = LockGuard::acquire(&self.paths.lock, true)?;
            if !self.paths.config_dir.exists() {
                match self.default_network(Vec::new())? {
                    Some(net) => self.write_default(&net)?,
                    None => fsutil::ensure_dir(&self.paths.config_dir)?,
                }
            }
            if exclusive {
                return Ok(guard);
            }
        }
        LockGuard::acquire(&self.paths.lock, exclusive)
    }

    /// The shipped `default` network for this host: on the first free
    /// 192.168.N.0/24 and the first `virbrN` that is neither a device here
    /// nor in `bridges_in_use`; `None` when every such subnet is routed.
    fn default_network(&self, mut bridges_in_use: Vec<String>) -> Result<Option<Network>> {
        let routes = defaultnet::host_routes();
        let Some(n) = defaultnet::pick_subnet(&routes) else {
            tracing::warn!("every 192.168.N.0/24 subnet is routed on this host: not creating the default network");
            return Ok(None);
        };
        if n != 122 {
            tracing::warn!(
                "192.168.122.0/24 is already in use on this host: the default network uses 192.168.{n}.0/24 instead"
            );
        }
        let mut net = Network::from_xml(&defaultnet::default_xml(n))?;
        bridges_in_use.extend(defaultnet::host_links());
        net.fill_defaults(&DefaultsContext { bridges_in_use });
        if net.bridge_name() != Some("virbr0") {
            tracing::warn!(
                "virbr0 is already in use on this host: the default network uses bridge {} instead",
                net.bridge_name().unwrap_or_default()
            );
        }
        Ok(Some(net))
    }

    /// Writes the default network's definition, marked for autostart.
    fn write_default(&self, net: &Network) -> Result<()> {
        // The autostart directory is created first: the definitions directory
        // appearing is what marks the first run as done.
        fsutil::ensure_dir(&self.paths.autostart_dir)?;
        let cfg = self.paths.config_file(&net.name);
        fsutil::write_atomic(&cfg, net.to_xml().as_bytes())?;
        Ok(atomic::symlink(
            &cfg,
            &self.paths.autostart_link(&net.name),
        )?)
    }

    fn load(&self) -> Inventory {
        self.load_from(None)
    }

    /// Takes the lock ([`Store::lock`]) and reads everything under it.
    fn locked(&self, exclusive: bool) -> Result<(LockGuard, Inventory)> {
        let guard = self.lock(exclusive)?;
        Ok((guard, self.load()))
    }

    /// What lookup `key` needs: by name only, network `key` alone, reading
    /// only its own files (none for a name that cannot be a file name),
    /// else everything.
    fn load_for(&self, key: &Lookup) -> Inventory {
        self.load_from((key.by_name && !key.by_uuid).then_some(key.key.as_str()))
    }

    fn load_from(&self, only: Option<&str>) -> Inventory {
        let mut inv = Inventory::default();
        let defs = match only {
            None => xml_files(&self.paths.config_dir, &mut inv.problems),
            Some(n) if check_name(n).is_err() => return inv,
            Some(n) => {
                let path = self.paths.config_file(n);
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => vec![(n.to_string(), path)],
                    _ => Vec::new(),
                }
            }
        };
        for (name, path) in defs {
            match read_def(&path, &name) {
                Ok(net) => {
                    let autostart = fs::symlink_metadata(self.paths.autostart_link(&name)).is_ok();
                    inv.nets.insert(
                        name,
                        Entry {
                            config: Some(net),
                            live: None,
                            autostart,
                        },
                    );
                }
                Err(why) => inv.problems.push(Problem {
                    path: path.display().to_string(),
                    network: Some(name),
                    message: why,
                }),
            }
        }
        let statuses: Vec<(String, PathBuf)> = match only {
            Some(n) => {
                let path = self.paths.status_file(n);
                match fs::symlink_metadata(&path) {
                    Ok(_) => vec![(n.to_string(), path)],
                    Err(_) => Vec::new(),
                }
            }
            None => {
                let Ok(dir) = fs::read_dir(&self.paths.state_dir) else {
                    return inv;
                };
                let mut statuses: Vec<(String, PathBuf)> = dir
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let stem = name.strip_suffix(".json")?.to_string();
                        (!atomic::is_temp_name(std::ffi::OsStr::new(&name)))
                            .then(|| (stem, e.path()))
                    })
                    .collect();
                statuses.sort();
                statuses
            }
        };
        for (name, status_path) in statuses {
            match self.read_live(&name, &status_path) {
                Ok(live) => match inv.nets.get_mut(&name) {
                    Some(e) => e.live = Some(live),
                    None => {
                        inv.nets.insert(
                            name,
                            Entry {
                                config: None,
                                live: Some(live),
                                autostart: false,
                            },
                        );
                    }
                },
                Err((path, why)) => inv.problems.push(Problem {
                    path: path.display().to_string(),
                    network: Some(name),
                    message: why,
                }),
            }
        }
        inv
    }

    fn read_live(
        &self,
        name: &str,
        status_path: &Path,
    ) -> std::result::Result<(Network, LiveState), (PathBuf, String)> {
        let text = fs::read_to_string(status_path)
            .map_err(|e| (status_path.to_path_buf(), e.to_string()))?;
        let status: LiveState =
            serde_json::from_str(&text).map_err(|e| (status_path.to_path_buf(), e.to_string()))?;
        let live_path = self.paths.live_file(name);
        let net = read_def(&live_path, name).map_err(|why| (live_path, why))?;
        Ok((net, status))
    }
}

/// One network's summary, as `net-info` gives it, read from the definitions
/// and live state under `paths` (under the shared lock, as every reader):
/// for readers that realize nothing, such as a guest's interfaces looking
/// up a network's bridge. Like every operation, the first run outside
/// `--root` defines the shipped `default` network first.
pub fn read_info(paths: &Paths, key: &Lookup) -> Result<NetworkInfo> {
    let store = Store { paths };
    let _g = store.lock(false)?;
    Ok(store.load_for(key).find(key)?.1.info())
}

/// The definition of running network `key` as it runs, read from the
/// live state as [`read_info`] reads (the guest launcher's view of a
/// network it plugs a tap into); libvirt's "not active" error when it is
/// defined but not running.
pub fn read_live(paths: &Paths, key: &Lookup) -> Result<Network> {
    let store = Store { paths };
    let _g = store.lock(false)?;
    let inv = store.load_for(key);
    let (name, e) = inv.find(key)?;
    e.running(name).cloned()
}

/// The network manager over one set of [`Paths`] and a realization backend.
pub struct Manager {
    paths: Paths,
    backend: Box<dyn Backend>,
    /// sysfs's PCI device directory, where a hostdev pool's devices are
    /// checked ([`SYSFS_PCI_DEVICES`]; a stand-in in unit tests).
    pci_devices: PathBuf,
}

impl Manager {
    /// A manager for `paths` realizing networks with `backend`.
    pub fn new(paths: Paths, backend: Box<dyn Backend>) -> Manager {
        Manager {
            paths,
            backend,
            pci_devices: PathBuf::from(SYSFS_PCI_DEVICES),
        }
    }

    /// The same manager checking hostdev pools against `dir` instead of
    /// sysfs's PCI devices.
    #[cfg(test)]
    pub(crate) fn with_pci_devices(mut self, dir: &Path) -> Manager {
        self.pci_devices = dir.to_path_buf();
        self
    }

    /// The state on disk.
    fn store(&self) -> Store<'_> {
        Store { paths: &self.paths }
    }

    /// Waits until no request is in progress and keeps others out while
    /// the guard lives: for a daemon about to exit, so that it never ends
    /// half-way through a change (a change waits for the lock, a read does
    /// too). Past the lock's wait, the error names the holders.
    pub fn lock_for_shutdown(&self) -> Result<ShutdownGuard> {
        Ok(ShutdownGuard {
            _lock: LockGuard::acquire(&self.paths.lock, true)?,
        })
    }

    /// The locations this manager works on.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Defines the shipped `default` network (autostart), as the first run
    /// outside `--root` does; refused when a network `default` exists.
    pub fn define_default(&self) -> Result<Outcome> {
        let store = self.store();
        let _g = store.lock(true)?;
        let inv = store.load();
        if inv.nets.contains_key("default") {
            return Err(Error::NotValid("network 'default' already exists".into()));
        }
        let net = store
            .default_network(inv.bridges_except("default"))?
            .ok_or_else(|| {
                Error::NotValid(
                    "every 192.168.N.0/24 subnet is routed on this host: no default network".into(),
                )
            })?;
        store.write_default(&net)?;
        Ok(Outcome::new(&net.name, Vec::new()).event(&net, EventKind::Defined))
    }

    /// Lists networks matching `filter`, sorted by name as virsh sorts
    /// (case-insensitively), plus the files that could not be read.
    pub fn list(&self, filter: &ListFilter) -> Result<(Vec<NetworkInfo>, Vec<Problem>)> {
        let (_g, inv) = self.store().locked(false)?;
        let mut out: Vec<NetworkInfo> = inv
            .nets
            .values()
            .map(Entry::info)
            .filter(|i| filter.matches(i))
            .collect();
        out.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then(a.name.cmp(&b.name))
        });
        Ok((out, inv.problems))
    }

    /// One network's summary.
    pub fn info(&self, key: &Lookup) -> Result<NetworkInfo> {
        read_info(&self.paths, key)
    }

    /// The live definition (or the persistent one with `inactive`, or when
    /// the network is not running), formatted as libvirt does.
    pub fn dumpxml(&self, key: &Lookup, inactive: bool) -> Result<String> {
        let (_g, inv) = self.store().locked(false)?;
        let (_, e) = inv.find(key)?;
        let net = match (&e.config, inactive) {
            (Some(cfg), true) => cfg,
            _ => e.current(),
        };
        Ok(net.to_xml())
    }

    /// Defines (or redefines) a persistent network from XML. `strict`
    /// refuses unknown elements instead of warning about them.
    pub fn define(&self, xml: &str, strict: bool) -> Result<Outcome> {
        let (mut net, warnings) = parse(xml, strict)?;
        check_hostdev_pool(&net, &self.pci_devices)?;
        let (_g, inv) = self.store().locked(true)?;
        self.prepare(&inv, &mut net)?;
        fsutil::write_atomic(&self.paths.config_file(&net.name), net.to_xml().as_bytes())?;
        Ok(Outcome::new(&net.name, warnings).event(&net, EventKind::Defined))
    }

    /// Creates and starts a transient network (or starts an inactive
    /// persistent one with this definition as its live state).
    pub fn create(&self, xml: &str) -> Result<Outcome> {
        let (mut net, warnings) = parse(xml, false)?;
        check_hostdev_pool(&net, &self.pci_devices)?;
        let (_g, inv) = self.store().locked(true)?;
        if let Some(e) = inv.nets.get(&net.name) {
            if e.live.is_some() {
                return Err(Error::NotValid(format!(
                    "network is already active as '{}'",
                    net.name
                )));
            }
        }
        self.prepare(&inv, &mut net)?;
        let actions = self.realize(&net)?;
        Ok(Outcome {
            actions,
            ..Outcome::new(&net.name, warnings).event(&net, EventKind::Started)
        })
    }

    /// Starts a defined network.
    pub fn start(&self, key: &Lookup) -> Result<Outcome> {
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(key)?;
        if e.live.is_some() {
            return Err(Error::NotValid(format!(
                "Network '{name}' is already running"
            )));
        }
        let net = e
            .config
            .as_ref()
            .expect("an inactive network is persistent");
        let actions = self.realize(net)?;
        Ok(Outcome {
            actions,
            ..Outcome::new(name, Vec::new()).event(net, EventKind::Started)
        })
    }

    /// What starting the network would do, without doing it; fails where
    /// the start would fail its checks of the host ([`Backend::check`]).
    pub fn plan(&self, key: &Lookup) -> Result<Plan> {
        let (_g, inv) = self.store().locked(false)?;
        let (name, e) = inv.find(key)?;
        if e.live.is_some() {
            return Err(Error::NotValid(format!(
                "Network '{name}' is already running"
            )));
        }
        let plan = plan::plan(e.current())?;
        self.backend.check(&plan)?;
        Ok(plan)
    }

    /// Stops a running network; a transient one disappears.
    pub fn destroy(&self, key: &Lookup) -> Result<Outcome> {
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(key)?;
        let Some((net, live)) = &e.live else {
            return Err(Error::NotValid(format!("network '{name}' is not active")));
        };
        // The backend undoes the ports before the network (an OVN switch
        // goes only once it has no ports).
        for port in ports::load_ports(&self.paths.port_dir(name)) {
            if let Err(err) = self.backend.port_removed(net, &port) {
                tracing::warn!("network {name}: cannot undo port {}: {err}", port.uuid);
            }
        }
        self.backend.stop(live)?;
        // The status file is the commit point: once it is gone the network
        // is inactive; a leftover live XML is removed at recovery.
        atomic::remove(&self.paths.status_file(name))?;
        atomic::remove(&self.paths.live_file(name))?;
        // Its ports go with it (libvirt's networkDestroy); ports left by a
        // crash here are removed at recovery.
        self.remove_all_ports(name, None)?;
        Ok(Outcome {
            actions: undo_lines(live),
            ..Outcome::new(name, Vec::new()).event(net, EventKind::Stopped)
        })
    }

    /// Removes a persistent definition; a running network stays up as a
    /// transient one (as libvirt's network driver does).
    pub fn undefine(&self, key: &Lookup) -> Result<Outcome> {
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(key)?;
        let Some(cfg) = &e.config else {
            return Err(Error::NotValid(format!(
                "network '{name}' is not persistent"
            )));
        };
        atomic::remove(&self.paths.autostart_link(name))?;
        atomic::remove(&self.paths.config_file(name))?;
        Ok(Outcome::new(name, Vec::new()).event(cfg, EventKind::Undefined))
    }

    /// Marks or unmarks a persistent network for autostart.
    pub fn set_autostart(&self, key: &Lookup, on: bool) -> Result<Outcome> {
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(key)?;
        if e.config.is_none() {
            return Err(Error::NotValid(
                "cannot set autostart for transient network".into(),
            ));
        }
        let link = self.paths.autostart_link(name);
        if on {
            fsutil::ensure_dir(&self.paths.autostart_dir)?;
            atomic::symlink(&self.paths.config_file(name), &link)?;
        } else {
            atomic::remove(&link)?;
        }
        Ok(Outcome::new(name, Vec::new()))
    }

    /// Applies a `net-update` to the live state and/or the persistent config.
    pub fn update(&self, key: &Lookup, spec: &UpdateSpec) -> Result<Outcome> {
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(key)?;
        let active = e.live.is_some();
        let (live, config) = match (spec.live, spec.config) {
            (false, false) => (active, !active),
            other => other,
        };
        if live && !active {
            return Err(Error::NotValid(format!("network '{name}' is not running")));
        }
        if config && e.config.is_none() {
            return Err(Error::NotValid(format!(
                "cannot change persistent config of a transient network '{name}'"
            )));
        }
        let mut new_cfg = None;
        if config {
            let mut net = e.config.clone().expect("checked persistent");
            update::apply(&mut net, spec)?;
            net.validate()?;
            self.prepare(&inv, &mut net)?;
            new_cfg = Some(net);
        }
        let mut new_live = None;
        if live {
            let (mut net, status) = e.live.clone().expect("checked active");
            if !spec.section.live_updatable() {
                return Err(Error::Unsupported(format!(
                    "can't update '{}' section of running network '{name}': destroy and start it to apply the change",
                    spec.section.as_str()
                )));
            }
            update::apply(&mut net, spec)?;
            net.validate()?;
            new_live = Some((net, status));
        }
        // Both versions are checked, and the running network changed,
        // before either is written.
        if let Some((net, status)) = &new_live {
            if status.backend != self.backend.name() {
                return Err(Error::Backend(
                    format!(
                        "network '{name}' was started by backend {}, not {}",
                        status.backend,
                        self.backend.name()
                    )
                    .into(),
                ));
            }
            self.backend.update_live(&plan::plan(net)?)?;
        }
        if let Some(net) = &new_cfg {
            fsutil::write_atomic(&self.paths.config_file(name), net.to_xml().as_bytes())?;
        }
        if let Some((net, _)) = &new_live {
            fsutil::write_atomic(&self.paths.live_file(name), net.to_xml().as_bytes())?;
        }
        let affected = match (config, live) {
            (true, true) => "persistent config and live state",
            (true, false) => "persistent config",
            _ => "live state",
        };
        let mut out = Outcome::new(name, Vec::new());
        out.detail = Some(affected.to_string());
        Ok(out)
    }

    /// At daemon start: removes what crashed writers left behind, reports
    /// the recovered running networks, and starts autostart networks that
    /// are not running. Returns the resulting events.
    pub fn recover(&self) -> Result<Vec<Event>> {
        let _g = self.store().lock(true)?;
        for dir in [
            &self.paths.config_dir,
            &self.paths.autostart_dir,
            &self.paths.state_dir,
        ] {
            for p in atomic::clean_stale(dir) {
                tracing::info!("removed leftover temporary file {}", p.display());
            }
        }
        // A live XML without its status is a start or stop that did not
        // reach its commit point.
        if let Ok(dir) = fs::read_dir(&self.paths.state_dir) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|x| x == "xml")
                    && !path.with_extension("json").exists()
                {
                    tracing::info!("removing live definition without status {}", path.display());
                    atomic::remove(&path)?;
                }
            }
        }
        let inv = self.store().load();
        for p in &inv.problems {
            tracing::warn!("{}: {}", p.path, p.message);
        }
        self.recover_ports(&inv)?;
        let mut events = Vec::new();
        for (name, e) in &inv.nets {
            if let Some((live_net, live)) = &e.live {
                tracing::info!(
                    "network {name} is running (recovered, backend {})",
                    live.backend
                );
                if live.backend != self.backend.name() {
                    tracing::warn!(
                        "network {name} was started by backend {}, not {}: not checking it",
                        live.backend,
                        self.backend.name()
                    );
                } else if let Err(err) = self.backend.recover(live) {
                    tracing::warn!("recovery of network {name} failed: {err}");
                } else {
                    self.readd_ports(live_net);
                }
                continue;
            }
            if e.autostart {
                let net = e.config.as_ref().expect("autostart implies persistent");
                match self.realize(net) {
                    Ok(_) => events.push(Event::new(net, EventKind::Started)),
                    Err(err) => tracing::warn!("autostart of network {name} failed: {err}"),
                }
            }
        }
        Ok(events)
    }

    /// The running networks whose service has ended, with how
    /// ([`Backend::service_exit`]); networks another backend started are
    /// left alone.
    pub fn exited_services(&self) -> Result<Vec<(String, String)>> {
        let (_g, inv) = self.store().locked(false)?;
        let mut out = Vec::new();
        for (name, e) in &inv.nets {
            let Some((_, live)) = &e.live else { continue };
            if live.backend != self.backend.name() {
                continue;
            }
            match self.backend.service_exit(live) {
                Ok(Some(how)) => out.push((name.clone(), how)),
                Ok(None) => {}
                Err(err) => tracing::warn!("cannot check the service of network {name}: {err}"),
            }
        }
        Ok(out)
    }

    /// Every network with its state (active or not), and for the running
    /// ones what their service last reported ([`Backend::service_stats`]):
    /// the daemon's metrics. Reads without the lock (every file is
    /// replaced atomically): a scrape never waits for a change.
    pub fn metrics(&self) -> Vec<(String, bool, Option<ServiceStats>)> {
        let inv = self.store().load();
        inv.nets
            .iter()
            .map(|(name, e)| {
                let stats = e
                    .live
                    .as_ref()
                    .filter(|(_, live)| live.backend == self.backend.name())
                    .and_then(|(_, live)| self.backend.service_stats(live));
                (name.clone(), e.live.is_some(), stats)
            })
            .collect()
    }

    /// Brings back the service of running network `name` if it is still
    /// down ([`Backend::recover`], which keeps the leases); false when the
    /// network is no longer running (or another backend started it).
    pub fn restart_service(&self, name: &str) -> Result<bool> {
        let (_g, inv) = self.store().locked(true)?;
        let Some((_, live)) = inv.nets.get(name).and_then(|e| e.live.as_ref()) else {
            return Ok(false);
        };
        if live.backend != self.backend.name() {
            return Ok(false);
        }
        self.backend.recover(live)?;
        Ok(true)
    }

    /// Checks name, UUID and bridge uniqueness against the other networks
    /// (a name already taken is redefined only with its UUID, as libvirt
    /// does), keeps the bridge/MAC of a network being redefined, and fills
    /// libvirt's defaults.
    fn prepare(&self, inv: &Inventory, net: &mut Network) -> Result<()> {
        check_name(&net.name)?;
        if let Some(existing) = inv.nets.get(&net.name) {
            let cur = existing.current();
            // libvirt gives a definition without a UUID a fresh one, so it
            // never matches: only the same UUID redefines a network
            // (virNetworkObjAssignDefLocked).
            match (net.uuid, cur.uuid) {
                (Some(new), Some(old)) if new == old => {}
                (_, Some(old)) => {
                    return Err(Error::NameTaken {
                        name: net.name.clone(),
                        uuid: old.to_string(),
                    })
                }
                (_, None) => {}
            }
            let keep = existing.config.as_ref().unwrap_or(cur);
            if net.mac.is_none() {
                net.mac = keep.mac;
            }
            if net.bridge_name().is_none() {
                if let (Some(b), Some(old)) = (net.bridge.as_mut(), keep.bridge_name()) {
                    b.name = Some(old.to_string());
                }
            }
        }
        if let Some(u) = net.uuid {
            if let Some((other, _)) = inv
                .nets
                .iter()
                .find(|(n, e)| **n != net.name && e.current().uuid == Some(u))
            {
                return Err(Error::UuidTaken {
                    name: other.clone(),
                    uuid: u.to_string(),
                });
            }
        }
        let mut bridges = inv.bridges_except(&net.name);
        // A generated virbrN must not collide with a device that already
        // exists on the host either (libvirt checks the same).
        bridges.extend(defaultnet::host_links());
        if let Some(b) = net.bridge_name() {
            if let Some((other, _)) = inv.nets.iter().find(|(n, e)| {
                **n != net.name
                    && e.config
                        .iter()
                        .chain(e.live.iter().map(|(l, _)| l))
                        .any(|d| d.bridge_name() == Some(b))
            }) {
                return Err(Error::BridgeTaken {
                    bridge: b.to_string(),
                    network: other.clone(),
                });
            }
        }
        net.fill_defaults(&DefaultsContext {
            bridges_in_use: bridges,
        });
        Ok(())
    }

    /// Starts `net` through the backend and records its live state (the
    /// definition with libvirt's live-only defaults); undoes the start if
    /// the state cannot be recorded. Returns what was done, one line per
    /// action.
    fn realize(&self, net: &Network) -> Result<Vec<String>> {
        let mut net = net.clone();
        net.fill_live_defaults();
        let net = &net;
        let plan = plan::plan(net)?;
        // Ports of an earlier run are stale (libvirt's networkStartNetwork).
        self.remove_all_ports(&net.name, Some(net))?;
        let live = self.backend.start(&plan)?;
        let record = (|| {
            fsutil::write_atomic(&self.paths.live_file(&net.name), net.to_xml().as_bytes())?;
            let status = serde_json::to_vec_pretty(&live).map_err(|e| Error::Backend(e.into()))?;
            // Written last: its presence is what makes the network active.
            fsutil::write_atomic(&self.paths.status_file(&net.name), &status)
        })();
        if let Err(err) = record {
            if let Err(undo) = self.backend.stop(&live) {
                tracing::error!("could not undo the start of {}: {undo}", net.name);
            }
            let _ = atomic::remove(&self.paths.live_file(&net.name));
            return Err(err);
        }
        Ok(live.applied.iter().map(ToString::to_string).collect())
    }
}

/// The manager's lock, held by [`Manager::lock_for_shutdown`] until dropped.
#[derive(Debug)]
pub struct ShutdownGuard {
    _lock: LockGuard,
}

/// What stopping `live` undid, last action first, one `undo: ACTION` line
/// each.
fn undo_lines(live: &LiveState) -> Vec<String> {
    live.applied
        .iter()
        .rev()
        .map(|a| format!("undo: {a}"))
        .collect()
}

/// Parses a definition; returns it with warnings about ignored parts.
fn parse(xml: &str, strict: bool) -> Result<(Network, Vec<String>)> {
    let net = if strict {
        Network::from_xml_strict(xml)?
    } else {
        Network::from_xml(xml)?
    };
    net.validate()?;
    check_name(&net.name)?;
    let warnings = net
        .unknown
        .iter()
        .map(|p| format!("unknown element or attribute {p} ignored"))
        .chain(crate::dnsmasq::warnings(&net.dnsmasq_options))
        .collect();
    Ok((net, warnings))
}

/// Where the kernel lists PCI devices.
const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// libvirtd's define-time check of a hostdev pool given by PCI address
/// (`networkValidate`, run by define and create, not by updates): each
/// device must be an SR-IOV virtual function of this host, i.e. have a
/// `physfn` link under `devices` (sysfs).
fn check_hostdev_pool(net: &Network, devices: &Path) -> Result<()> {
    let Some(fwd) = net.forward.as_ref() else {
        return Ok(());
    };
    for (i, a) in fwd.pci_addresses.iter().enumerate() {
        let dev = devices.join(a.to_string());
        if !dev.join("physfn").exists() {
            return Err(Error::Invalid(slipway_netxml::ValidationError {
                element: format!("/network/forward/address[{}]", i + 1),
                value: a.to_string(),
                rule: format!(
                    "device '{}' is not an SR-IOV Virtual Function of this host",
                    dev.display()
                ),
            }));
        }
    }
    Ok(())
}

/// A network name becomes a file name: refuse anything that could escape
/// the directory or hide as a temporary file.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "must not be empty"
    } else if name.contains('/') {
        "must not contain '/'"
    } else if name.starts_with('.') {
        "must not start with '.'"
    } else if name.contains('\0') || name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(Error::BadName {
        name: name.to_string(),
        why,
    })
}

/// `NAME.xml` files of a directory (not temporaries, not directories).
fn xml_files(dir: &Path, problems: &mut Vec<Problem>) -> Vec<(String, PathBuf)> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(Problem {
                path: dir.display().to_string(),
                network: None,
                message: e.to_string(),
            });
            return Vec::new();
        }
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".xml")?.to_string();
            (!atomic::is_temp_name(std::ffi::OsStr::new(&name))).then(|| (stem, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Reads one stored definition; the error text says what is wrong.
fn read_def(path: &Path, name: &str) -> std::result::Result<Network, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let net = crate::defcache::parsed(path, text, |t| {
        Network::from_xml(t).map_err(|e| e.to_string())
    })?;
    if net.name != name {
        return Err(format!(
            "the file defines network '{}', not '{name}'",
            net.name
        ));
    }
    Ok(net)
}

impl Manager {
    /// Runs one API request in this process (direct mode, and the daemon's
    /// worker). `status` and `subscribe` only make sense in the daemon.
    pub fn handle(&self, req: Request) -> Result<Reply> {
        Ok(match req {
            Request::List { filter } => {
                let (networks, problems) = self.list(&filter)?;
                Reply::List { networks, problems }
            }
            Request::Info { lookup } => Reply::Info(self.info(&lookup)?),
            Request::DumpXml { lookup, inactive } => Reply::Xml {
                xml: self.dumpxml(&lookup, inactive)?,
            },
            Request::Define { xml, validate } => Reply::Done(self.define(&xml, validate)?),
            Request::DefineDefault => Reply::Done(self.define_default()?),
            Request::Create { xml } => Reply::Done(self.create(&xml)?),
            Request::Start { lookup } => Reply::Done(self.start(&lookup)?),
            Request::Plan { lookup } => Reply::Plan(self.plan(&lookup)?),
            Request::Destroy { lookup } => Reply::Done(self.destroy(&lookup)?),
            Request::Undefine { lookup } => Reply::Done(self.undefine(&lookup)?),
            Request::Autostart { lookup, enable } => {
                Reply::Done(self.set_autostart(&lookup, enable)?)
            }
            Request::Update { lookup, spec } => Reply::Done(self.update(&lookup, &spec)?),
            Request::PortCreate {
                network,
                xml,
                flags,
            } => {
                let (port, warnings) = self.port_create(&network, &xml, flags)?;
                Reply::Port { port, warnings }
            }
            Request::PortList { network } => Reply::Ports {
                uuids: self
                    .port_list(&network)?
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            Request::PortDumpXml { network, port } => Reply::Xml {
                xml: self.port_xml(&network, crate::portapi::port_uuid(&port)?)?,
            },
            Request::PortDelete { network, port } => Reply::Port {
                port: self.port_delete(&network, crate::portapi::port_uuid(&port)?)?,
                warnings: Vec::new(),
            },
            Request::PortGetParameters { network, port } => Reply::PortParameters(
                self.port_parameters(&network, crate::portapi::port_uuid(&port)?)?,
            ),
            Request::PortSetParameters {
                network,
                port,
                params,
            } => {
                let uuid = crate::portapi::port_uuid(&port)?;
                Reply::Port {
                    port: self.port_set_parameters(&network, uuid, &params)?,
                    warnings: Vec::new(),
                }
            }
            Request::Status | Request::Subscribe => {
                return Err(Error::NotValid(
                    "this request needs the slipway daemon".into(),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realize::RecordingBackend;

    /// A manager under a temporary `--root`, which behaves like a first run
    /// outside it (creating the default network).
    fn manager() -> (tempfile::TempDir, Manager) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            first_run_default: true,
            ..Paths::detect(Some(dir.path()))
        };
        let m = Manager::new(paths, Box::new(RecordingBackend));
        (dir, m)
    }

    fn all() -> ListFilter {
        ListFilter {
            active: true,
            inactive: true,
            ..Default::default()
        }
    }

    /// A hostdev pool's PCI devices must be SR-IOV virtual functions: a
    /// `physfn` link in sysfs (here a directory standing in for it).
    #[test]
    fn hostdev_pool_devices_must_be_virtual_functions() {
        let sys = tempfile::tempdir().unwrap();
        let net = Network::from_xml(
            "<network><name>h</name><forward mode='hostdev' managed='yes'>\
             <address type='pci' domain='0' bus='3' slot='0' function='1'/>\
             <address type='pci' domain='0' bus='3' slot='0' function='2'/></forward></network>",
        )
        .unwrap();
        let vf = |f: u8| sys.path().join(format!("0000:03:00.{f}/physfn"));
        fs::create_dir_all(vf(1)).unwrap();
        let e = check_hostdev_pool(&net, sys.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/network/forward/address[2] '0000:03:00.2': device '")
                && e.ends_with("0000:03:00.2' is not an SR-IOV Virtual Function of this host"),
            "{e}"
        );
        fs::create_dir_all(vf(2)).unwrap();
        check_hostdev_pool(&net, sys.path()).unwrap();
    }

    #[test]
    fn first_run_creates_the_default_network() {
        let (_d, m) = manager();
        let (nets, problems) = m.list(&all()).unwrap();
        assert!(problems.is_empty());
        assert_eq!(nets.len(), 1);
        let d = &nets[0];
        assert_eq!(
            (d.name.as_str(), d.active, d.persistent, d.autostart),
            ("default", false, true, true)
        );
        assert_eq!(d.bridge.as_deref(), Some("virbr0"));
        let xml = m.dumpxml(&Lookup::any("default"), false).unwrap();
        assert!(xml.contains("<forward mode='nat'/>"), "{xml}");
        assert!(xml.contains("<mac address='52:54:00:"), "{xml}");
    }

    /// Under `--root` nothing is created unless asked for, with
    /// `net-define-default`.
    #[test]
    fn root_creates_no_default_network_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manager::new(Paths::detect(Some(dir.path())), Box::new(RecordingBackend));
        assert!(m.list(&all()).unwrap().0.is_empty());
        assert!(m.recover().unwrap().is_empty());
        m.define(
            "<network><name>b</name><bridge name='virbr0'/></network>",
            false,
        )
        .unwrap();
        let out = m.define_default().unwrap();
        assert_eq!(out.events[0].kind, EventKind::Defined);
        let d = m.info(&Lookup::any("default")).unwrap();
        assert_eq!(
            (d.active, d.persistent, d.autostart, d.bridge.as_deref()),
            (false, true, true, Some("virbr1"))
        );
        let e = m.define_default().unwrap_err();
        assert_eq!(
            e.to_string(),
            "Requested operation is not valid: network 'default' already exists"
        );
    }

    /// A lookup by name reads that network's files only, and finds what
    /// the full read finds; a name that cannot be a file name reads none.
    #[test]
    fn lookup_by_name_reads_one_network() {
        let (d, m) = manager();
        m.define(
            "<network><name>b</name><bridge name='vb1'/></network>",
            false,
        )
        .unwrap();
        m.start(&Lookup::any("b")).unwrap();
        let by_name = |k: &str| Lookup {
            key: k.into(),
            by_name: true,
            by_uuid: false,
        };
        for name in ["b", "default"] {
            let one = m.info(&by_name(name)).unwrap();
            let all = m.list(&all()).unwrap().0;
            assert_eq!(Some(&one), all.iter().find(|i| i.name == name));
        }
        // Another network's unreadable definition does not matter here.
        fs::write(m.paths().config_file("broken"), "<network>").unwrap();
        assert!(m.info(&by_name("b")).unwrap().active);
        assert!(matches!(
            m.info(&by_name("broken")),
            Err(Error::Corrupt { .. })
        ));
        // A definition outside the directory is never reached by name.
        fs::write(
            d.path().join("etc/slipway/outside.xml"),
            "<network><name>../outside</name></network>",
        )
        .unwrap();
        assert!(matches!(
            m.info(&by_name("../outside")),
            Err(Error::NoSuchName(_))
        ));
    }

    #[test]
    fn nat_port_range_is_only_in_the_live_definition() {
        let (_d, m) = manager();
        let key = Lookup::any("default");
        let nat = "<nat>\n      <port start='1024' end='65535'/>\n    </nat>";
        assert!(!m.dumpxml(&key, false).unwrap().contains(nat));
        m.start(&key).unwrap();
        assert!(m.dumpxml(&key, false).unwrap().contains(nat));
        assert!(!m.dumpxml(&key, true).unwrap().contains(nat));
        assert!(!fs::read_to_string(m.paths().config_file("default"))
            .unwrap()
            .contains("<port"));
        m.destroy(&key).unwrap();
        assert!(!m.dumpxml(&key, false).unwrap().contains(nat));
        // A transient network has it while it runs.
        m.create("<network><name>t</name><forward/><ip address='10.4.0.1' prefix='24'/></network>")
            .unwrap();
        assert!(m.dumpxml(&Lookup::any("t"), false).unwrap().contains(nat));
    }

    #[test]
    fn redefine_needs_the_uuid_and_keeps_bridge_and_mac() {
        let (_d, m) = manager();
        m.define(
            "<network><name>n</name><ip address='10.1.0.1' prefix='24'/></network>",
            false,
        )
        .unwrap();
        let first = Network::from_xml(&m.dumpxml(&Lookup::any("n"), true).unwrap()).unwrap();
        // virbr0 belongs to the default network.
        assert_ne!(first.bridge_name(), Some("virbr0"));
        assert!(first.bridge_name().unwrap().starts_with("virbr"));
        // Without the UUID the name is taken (libvirt gives the new
        // definition a UUID of its own) and nothing changes.
        let e = m
            .define(
                "<network><name>n</name><ip address='10.2.0.1' prefix='24'/></network>",
                false,
            )
            .unwrap_err();
        let uuid = first.uuid.unwrap();
        assert_eq!(
            e.to_string(),
            format!("operation failed: network 'n' already exists with uuid {uuid}")
        );
        assert!(m
            .dumpxml(&Lookup::any("n"), true)
            .unwrap()
            .contains("10.1.0.1"));
        let e = m
            .create("<network><name>n</name><ip address='10.3.0.1' prefix='24'/></network>")
            .unwrap_err();
        assert!(matches!(e, Error::NameTaken { .. }), "{e}");
        // With it, the definition is replaced.
        let out = m
            .define(
                &format!("<network><name>n</name><uuid>{uuid}</uuid><ip address='10.2.0.1' prefix='24'/></network>"),
                false,
            )
            .unwrap();
        assert_eq!(out.events, vec![Event::new(&first, EventKind::Defined)]);
        let second = Network::from_xml(&m.dumpxml(&Lookup::any("n"), true).unwrap()).unwrap();
        assert_eq!((second.uuid, second.mac), (first.uuid, first.mac));
        assert_eq!(second.bridge_name(), first.bridge_name());
        assert_eq!(second.ips[0].address.to_string(), "10.2.0.1");
    }

    #[test]
    fn conflicts_are_refused() {
        let (_d, m) = manager();
        m.define("<network><name>a</name><uuid>11111111-2222-3333-4444-555555555555</uuid><bridge name='br7'/></network>", false).unwrap();
        let e = m.define("<network><name>a</name><uuid>21111111-2222-3333-4444-555555555555</uuid></network>", false).unwrap_err();
        assert!(matches!(e, Error::NameTaken { .. }), "{e}");
        let e = m.define("<network><name>b</name><uuid>11111111-2222-3333-4444-555555555555</uuid></network>", false).unwrap_err();
        assert_eq!(e.to_string(), "operation failed: network 'a' is already defined with uuid 11111111-2222-3333-4444-555555555555");
        let e = m
            .define(
                "<network><name>c</name><bridge name='br7'/></network>",
                false,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "bridge name 'br7' already in use by network 'a'"
        );
        assert_eq!(m.list(&all()).unwrap().0.len(), 2);
    }

    #[test]
    fn lifecycle_records_live_state_and_events() {
        let (_d, m) = manager();
        m.define("<network><name>a</name><bridge name='br7'/><ip address='10.1.0.1' prefix='24'/></network>", false).unwrap();
        let key = Lookup::any("a");
        let started = m.start(&key).unwrap();
        assert_eq!(started.events[0].kind, EventKind::Started);
        let status: LiveState =
            serde_json::from_str(&fs::read_to_string(m.paths().status_file("a")).unwrap()).unwrap();
        assert_eq!(status.backend, "none");
        assert_eq!(status.applied, m.plan_of("a"));
        assert!(matches!(m.start(&key), Err(Error::NotValid(_))));
        assert!(matches!(m.plan(&key), Err(Error::NotValid(_))));
        // Redefining a running network changes the config, not the live state.
        let uuid = m.info(&key).unwrap().uuid;
        m.define(&format!("<network><name>a</name><uuid>{uuid}</uuid><bridge name='br7'/><ip address='10.9.0.1' prefix='24'/></network>"), false).unwrap();
        assert!(m.dumpxml(&key, false).unwrap().contains("10.1.0.1"));
        assert!(m.dumpxml(&key, true).unwrap().contains("10.9.0.1"));
        assert_eq!(m.destroy(&key).unwrap().events[0].kind, EventKind::Stopped);
        assert!(!m.paths().status_file("a").exists() && !m.paths().live_file("a").exists());
        assert!(matches!(m.destroy(&key), Err(Error::NotValid(_))));
        // Transient: gone after destroy.
        let c = m.create("<network><name>t</name></network>").unwrap();
        assert_eq!(c.events[0].kind, EventKind::Started);
        assert!(matches!(
            m.set_autostart(&Lookup::any("t"), true),
            Err(Error::NotValid(_))
        ));
        m.destroy(&Lookup::any("t")).unwrap();
        assert!(matches!(
            m.info(&Lookup::any("t")),
            Err(Error::NoSuchName(_))
        ));
    }

    #[test]
    fn lookup_follows_virsh() {
        let (_d, m) = manager();
        let uuid = "11111111-2222-3333-4444-555555555555";
        m.define(
            &format!("<network><name>a</name><uuid>{uuid}</uuid></network>"),
            false,
        )
        .unwrap();
        assert_eq!(m.info(&Lookup::any(uuid)).unwrap().name, "a");
        let by_uuid = Lookup {
            key: "a".into(),
            by_name: false,
            by_uuid: true,
        };
        assert!(matches!(m.info(&by_uuid), Err(Error::NoSuchUuid(_))));
        let by_name = Lookup {
            key: uuid.into(),
            by_name: true,
            by_uuid: false,
        };
        assert_eq!(
            m.info(&by_name).unwrap_err().to_string(),
            format!("Network not found: no network with matching name '{uuid}'")
        );
    }

    #[test]
    fn recovery_cleans_up_and_autostarts() {
        let (_d, m) = manager();
        m.list(&all()).unwrap();
        fs::create_dir_all(&m.paths().state_dir).unwrap();
        fs::write(
            m.paths().live_file("half"),
            "<network><name>half</name></network>",
        )
        .unwrap();
        fs::write(m.paths().config_dir.join(".tmp-1-x.xml"), "<netw").unwrap();
        let events = m.recover().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].network.as_str(), events[0].kind),
            ("default", EventKind::Started)
        );
        assert!(!m.paths().live_file("half").exists());
        assert!(!m.paths().config_dir.join(".tmp-1-x.xml").exists());
        // Running networks are kept, not restarted.
        assert!(m.recover().unwrap().is_empty());
        assert!(m.info(&Lookup::any("default")).unwrap().active);
    }

    impl Manager {
        fn plan_of(&self, name: &str) -> Vec<crate::plan::Action> {
            let net = Network::from_xml(&self.dumpxml(&Lookup::any(name), false).unwrap()).unwrap();
            plan::plan(&net).unwrap().actions
        }
    }
}
