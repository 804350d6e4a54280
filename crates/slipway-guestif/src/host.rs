//! Plan → host plumbing: taps created, named, given their MAC and MTU,
//! attached and brought up; ethernet scripts run; user-mode stacks started.
//! Every step is recorded in [`Realized`] as it happens, so a failure
//! halfway and the end of the VM both undo exactly what was done, in
//! reverse: stacks stopped, down-scripts run, taps removed.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use slipway_hostnet::netlink::{link_index, link_mtu, Netlink};
use slipway_hostnet::tap::{Tap, TapMode};
use slipway_netmgr::proto::Lookup;
use slipway_netmgr::{read_info, read_live, Paths};

use crate::error::{Error, Result};
use crate::ovs::Attachment;
use crate::plan::{BridgeRef, HostSide, Nic, Plan, TapSpec, UserStack};
use crate::state::{Lock, Running, StateDir};

/// How long a user-mode stack may take to bind its socket.
const STACK_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Finds the bridge of a running slipway network.
pub trait Networks {
    /// The bridge device of running network `name`, or why there is none.
    fn bridge(&self, name: &str) -> std::result::Result<String, String>;
    /// `Ok` when a network `name` is defined (running or not), else why not.
    fn defined(&self, name: &str) -> std::result::Result<(), String>;
    /// The definition of running network `name` as it runs (its
    /// `<virtualport>`, portgroups and VLAN decide an Open vSwitch plug).
    fn live(&self, name: &str) -> std::result::Result<slipway_netxml::Network, String>;
}

/// Refuses a plan whose `type='network'` interfaces name networks that
/// are not defined (whether they run is `launch`'s concern: they may be
/// started in between).
pub fn check_networks(plan: &Plan, networks: &dyn Networks) -> Result<()> {
    for nic in &plan.nics {
        if let HostSide::Tap(TapSpec {
            bridge: Some(BridgeRef::Network(n)),
            ..
        }) = &nic.host
        {
            networks
                .defined(n)
                .map_err(|m| nic_err(nic, format!("<source network='{n}'>: {m}")))?;
        }
    }
    Ok(())
}

/// The network manager's view: live state under [`Paths`], read directly
/// (the definitions and status files are the truth the daemon also reads).
pub struct ManagerNetworks(pub Paths);

impl Networks for ManagerNetworks {
    fn bridge(&self, name: &str) -> std::result::Result<String, String> {
        let info = read_info(&self.0, &Lookup::any(name)).map_err(|e| e.to_string())?;
        if !info.active {
            return Err(format!("network '{}' is not active", info.name));
        }
        info.bridge
            .ok_or_else(|| format!("network '{}' has no bridge to attach a tap to", info.name))
    }

    fn defined(&self, name: &str) -> std::result::Result<(), String> {
        read_info(&self.0, &Lookup::any(name))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn live(&self, name: &str) -> std::result::Result<slipway_netxml::Network, String> {
        read_live(&self.0, &Lookup::any(name)).map_err(|e| e.to_string())
    }
}

/// A tap held open for QEMU.
#[derive(Debug)]
pub struct HeldTap {
    /// Its descriptor (moved to [`HeldTap::qemu_fd`] in QEMU).
    pub fd: OwnedFd,
    /// The number QEMU expects it on.
    pub qemu_fd: i32,
    /// Device name.
    pub name: String,
}

/// Everything realized for one VM.
pub struct Realized {
    /// The record in the state directory.
    pub record: Running,
    /// Open taps, in XML order.
    pub taps: Vec<HeldTap>,
    /// Taps slipway created (removed at the end if still there).
    created: Vec<String>,
    /// Down-scripts to run at the end: (script, tap).
    downscripts: Vec<(PathBuf, String)>,
    /// Stack processes and their sockets.
    stacks: Vec<(Child, Vec<PathBuf>)>,
    /// Open vSwitch ports added (removed at the end).
    ovs_ports: Vec<String>,
    /// The VM's id for Open vSwitch (`vm-id`).
    vm_id: uuid::Uuid,
    state: StateDir,
}

/// Host-side facts the realization needs from the outside.
pub struct Context<'a> {
    /// The state directory.
    pub state: &'a StateDir,
    /// Where network bridges come from.
    pub networks: &'a dyn Networks,
    /// The command that runs a user-mode stack: program and leading
    /// arguments, followed by `user --dgram PATH [--mtu N] OPTIONS`.
    pub stack_cmd: &'a [OsString],
    /// Signals for QEMU (see [`crate::signals::SignalForwarder`]).
    pub signals: &'a crate::signals::SignalForwarder,
}

fn host_err(nic: &Nic, source: slipway_hostnet::Error) -> Error {
    Error::Host {
        index: nic.index,
        mac: nic.mac,
        cause: source,
    }
}

fn nic_err(nic: &Nic, message: impl Into<String>) -> Error {
    Error::Interface {
        index: nic.index,
        mac: nic.mac,
        message: message.into(),
    }
}

/// Carries out the plan. The caller holds the state lock (taken before
/// planning, so generated MACs and tap names are unique); the record is
/// written before anything is created, and kept current.
pub fn realize(plan: &Plan, ctx: &Context<'_>, lock: &Lock) -> Result<Realized> {
    let mut r = Realized {
        record: Running {
            pid: std::process::id(),
            macs: plan.nics.iter().map(|n| n.mac.to_string()).collect(),
            ..Running::default()
        },
        taps: Vec::new(),
        created: Vec::new(),
        downscripts: Vec::new(),
        stacks: Vec::new(),
        ovs_ports: Vec::new(),
        vm_id: plan.vm_id.unwrap_or_else(uuid::Uuid::new_v4),
        state: ctx.state.clone(),
    };
    ctx.state.record(&r.record)?;
    match realize_steps(plan, ctx, lock, &mut r) {
        Ok(()) => Ok(r),
        Err(e) => {
            r.teardown();
            Err(e)
        }
    }
}

fn realize_steps(plan: &Plan, ctx: &Context<'_>, lock: &Lock, r: &mut Realized) -> Result<()> {
    let mut nl = None;
    for nic in &plan.nics {
        match &nic.host {
            HostSide::Tap(spec) => {
                let nl = match &mut nl {
                    Some(nl) => nl,
                    None => nl.insert(Netlink::open().map_err(|e| host_err(nic, e))?),
                };
                tap(nic, spec, ctx, lock, nl, r)?;
            }
            HostSide::User(u) => stack(nic, u, ctx, r)?,
            HostSide::None => {}
        }
    }
    Ok(())
}

fn tap(
    nic: &Nic,
    spec: &TapSpec,
    ctx: &Context<'_>,
    lock: &Lock,
    nl: &mut Netlink,
    r: &mut Realized,
) -> Result<()> {
    // Open vSwitch or not, and every name checked, before a tap exists.
    let live;
    let attachment = match &spec.bridge {
        None => None,
        Some(BridgeRef::Bridge(b)) => Some(Attachment::Bridge(b)),
        Some(BridgeRef::Network(n)) => {
            live = ctx.networks.live(n).map_err(|m| nic_err(nic, m))?;
            Some(Attachment::Network(&live))
        }
    };
    let ovs = match attachment {
        Some(to) => crate::ovs::resolve(to, spec.name.as_deref(), &spec.port)
            .map_err(|m| nic_err(nic, m))?,
        None => None,
    };
    let bridge = match &spec.bridge {
        None => None,
        Some(BridgeRef::Bridge(b)) => Some(b.clone()),
        Some(BridgeRef::Network(n)) => Some(ctx.networks.bridge(n).map_err(|m| nic_err(nic, m))?),
    };
    let bridge = match bridge {
        None => None,
        Some(b) => match link_index(&b) {
            Some(i) => Some((b, i)),
            None => return Err(nic_err(nic, format!("bridge {b} does not exist"))),
        },
    };
    if !spec.managed {
        // managed='no': the tap exists and is used exactly as it is.
        let name = spec.name.clone().unwrap_or_default();
        if link_index(&name).is_none() {
            return Err(nic_err(
                nic,
                format!("tap {name} does not exist (managed='no' uses an existing tap)"),
            ));
        }
        let t = Tap::open(&name, TapMode::Existing, spec.vnet_hdr).map_err(|e| host_err(nic, e))?;
        r.taps.push(HeldTap {
            fd: t.fd,
            qemu_fd: spec.fd,
            name: t.name,
        });
        return Ok(());
    }
    let name = match &spec.name {
        Some(n) => n.clone(),
        None => ctx.state.next_vnet(lock, |n| link_index(n).is_some())?,
    };
    let t = Tap::open(&name, TapMode::Create, spec.vnet_hdr).map_err(|e| host_err(nic, e))?;
    r.created.push(t.name.clone());
    r.record.taps.push(t.name.clone());
    ctx.state.record(&r.record)?;
    let held = HeldTap {
        fd: t.fd,
        qemu_fd: spec.fd,
        name: t.name,
    };
    let name = held.name.clone();
    r.taps.push(held);
    let index = link_index(&name)
        .ok_or_else(|| nic_err(nic, format!("tap {name} vanished after it was created")))?;
    let mut host_mac = nic.mac.0;
    host_mac[0] = 0xfe;
    nl.set_mac(index, &name, host_mac)
        .map_err(|e| host_err(nic, e))?;
    let mtu = match (spec.mtu, &bridge) {
        (Some(m), _) => Some(m),
        (None, Some((b, _))) => Some(link_mtu(b).map_err(|e| host_err(nic, e))?),
        (None, None) => None,
    };
    if let Some(mtu) = mtu {
        nl.set_mtu(index, &name, mtu)
            .map_err(|e| host_err(nic, e))?;
    }
    if let Some((b, bi)) = bridge.as_ref().filter(|_| ovs.is_none()) {
        nl.set_master(index, &name, *bi, b)
            .map_err(|e| host_err(nic, e))?;
    }
    // The network's `<port isolated>` (a host bridge's ports are not).
    let network_isolated = match attachment {
        Some(Attachment::Network(net)) => net.port_isolated.unwrap_or(false),
        _ => false,
    };
    crate::port::apply(
        nl,
        &name,
        index,
        bridge.is_some() && ovs.is_none(),
        spec.shape.as_deref(),
        spec.isolated,
        network_isolated,
    )
    .map_err(|e| host_err(nic, e))?;
    nl.set_up(index, &name).map_err(|e| host_err(nic, e))?;
    if let Some(plug) = &ovs {
        let port = crate::ovs::port_name(plug, &name).map_err(|e| host_err(nic, e.into()))?;
        r.ovs_ports.push(port.to_string());
        r.record.ovs_ports.push(port.to_string());
        ctx.state.record(&r.record)?;
        crate::ovs::plug(plug, &port, nic.mac, r.vm_id).map_err(|e| host_err(nic, e.into()))?;
    }
    if let Some(script) = &spec.script {
        run_script(script, &name).map_err(|m| nic_err(nic, m))?;
    }
    if let Some(down) = &spec.downscript {
        r.downscripts.push((down.clone(), name));
    }
    Ok(())
}

/// Runs an interface script with the tap's name as its only argument.
fn run_script(script: &Path, tap: &str) -> std::result::Result<(), String> {
    let mut cmd = Command::new(script);
    cmd.arg(tap);
    launcher_child(&mut cmd);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run script {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "script {} {tap} failed: {status}",
            script.display()
        ));
    }
    Ok(())
}

/// Prepares a child of the launcher: it gets SIGTERM when the launcher
/// dies, so nothing started for a VM outlives it even when it is killed,
/// and it starts with no signal blocked (the launcher blocks the signals it
/// passes on to QEMU, and a blocked mask is inherited across exec).
pub(crate) fn launcher_child(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (sigemptyset, sigprocmask,
    // prctl); no allocation in the closure.
    unsafe {
        cmd.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn stack(nic: &Nic, u: &UserStack, ctx: &Context<'_>, r: &mut Realized) -> Result<()> {
    ctx.state.ensure_socket_dir()?;
    if let Some(dir) = u.stack_socket.parent() {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(nic_err(
                    nic,
                    format!("cannot create {}: {e}", dir.display()),
                ))
            }
        }
    }
    for p in [&u.stack_socket, &u.qemu_socket] {
        slipway_host::atomic::remove(p)?;
    }
    let (program, lead) = ctx
        .stack_cmd
        .split_first()
        .ok_or_else(|| nic_err(nic, "no command to run the user-mode stack"))?;
    let mut cmd = Command::new(program);
    cmd.args(lead)
        .arg("user")
        .arg("--dgram")
        .arg(&u.stack_socket);
    if let Some(mtu) = u.mtu {
        cmd.arg("--mtu").arg(mtu.to_string());
    }
    cmd.arg(&u.options);
    launcher_child(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| nic_err(nic, format!("cannot start the user-mode stack: {e}")))?;
    r.record.stacks.push(child.id());
    let wait_result = wait_for_socket(&mut child, &u.stack_socket);
    r.stacks
        .push((child, vec![u.stack_socket.clone(), u.qemu_socket.clone()]));
    ctx.state.record(&r.record)?;
    wait_result.map_err(|m| nic_err(nic, m))
}

/// Waits until the stack has bound its datagram socket (the file exists;
/// it did not before), or fails if the stack exits first.
fn wait_for_socket(child: &mut Child, path: &Path) -> std::result::Result<(), String> {
    let end = Instant::now() + STACK_READY_TIMEOUT;
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the user-mode stack exited at start: {status}"));
        }
        if Instant::now() > end {
            return Err(format!(
                "the user-mode stack did not bind {} within {}s",
                path.display(),
                STACK_READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Realized {
    /// Undoes everything, in reverse order; problems are logged, not
    /// returned, so one failure does not leave the rest behind.
    pub fn teardown(mut self) {
        // Our copies of the tap descriptors first: a non-persistent tap goes
        // away with its last descriptor.
        self.taps.clear();
        for (mut child, sockets) in self.stacks.drain(..).rev() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            for s in &sockets {
                let _ = slipway_host::atomic::remove(s);
            }
            // The interface's own socket directory, now empty.
            if let Some(dir) = sockets.first().and_then(|s| s.parent()) {
                let _ = std::fs::remove_dir(dir);
            }
        }
        for port in self.ovs_ports.drain(..).rev() {
            crate::ovs::unplug(&port);
        }
        for (script, tap) in self.downscripts.drain(..).rev() {
            if let Err(e) = run_script(&script, &tap) {
                tracing::warn!("{e}");
            }
        }
        if !self.created.is_empty() {
            if let Ok(mut nl) = Netlink::open() {
                for tap in self.created.drain(..).rev() {
                    if let Some(i) = link_index(&tap) {
                        if let Err(e) = nl.delete_link(i, &tap) {
                            tracing::warn!("{e}");
                        }
                    }
                }
            }
        }
        if let Err(e) = self.state.forget(self.record.pid) {
            tracing::warn!("{e}");
        }
    }
}
