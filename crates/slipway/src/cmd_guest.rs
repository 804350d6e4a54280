//! Guest interfaces: `slipway qemu-args` and `slipway launch` (see the
//! slipway-guestif crate). QEMU's bridge helper is the separate
//! `slipway-bridge-helper` program.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use slipway_guestif::host::{check_networks, Context, ManagerNetworks};
use slipway_guestif::launch::{launch, SignalForwarder};
use slipway_guestif::{HostSide, Plan, StateDir};
use slipway_netmgr::Paths;

/// Guest-interface subcommands.
#[derive(Subcommand, Debug)]
pub enum GuestCommand {
    /// Print the QEMU networking arguments for a domain's interfaces, one per line.
    QemuArgs {
        /// A libvirt domain XML file, or a file of bare <interface> elements.
        file: PathBuf,
    },
    /// Set up a domain's interfaces, run QEMU with them, clean up when it exits.
    Launch {
        /// A libvirt domain XML file, or a file of bare <interface> elements.
        file: PathBuf,
        /// The QEMU command and its other arguments, after `--`.
        #[arg(last = true, required = true, value_name = "QEMU ARGS")]
        qemu: Vec<OsString>,
    },
}

fn state_dir(root: Option<&Path>) -> StateDir {
    let paths = Paths::detect(root);
    let base = paths
        .state_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| paths.state_dir.clone());
    StateDir::new(base.join("guests"))
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Runs a guest-interface subcommand.
pub fn run(cmd: GuestCommand, root: Option<&Path>) -> anyhow::Result<i32> {
    match cmd {
        GuestCommand::QemuArgs { file } => {
            let xml = read(&file)?;
            let ifaces = slipway_netxml::parse_interfaces(&xml)
                .with_context(|| format!("in {}", file.display()))?;
            let state = state_dir(root);
            let in_use = match state.lock() {
                Ok(lock) => state.macs_in_use(&lock)?,
                // Printing arguments must not need a writable state directory.
                Err(_) => HashSet::new(),
            };
            let plan = Plan::new(&ifaces, &in_use, &state.socket_dir())
                .with_context(|| format!("in {}", file.display()))?;
            check_networks(&plan, &ManagerNetworks(Paths::detect(root)))
                .with_context(|| format!("in {}", file.display()))?;
            for i in &ifaces {
                for u in &i.unknown {
                    eprintln!("warning: interface {}: ignoring {u}", i.index);
                }
            }
            for nic in &plan.nics {
                if nic.generated_mac {
                    eprintln!(
                        "note: interface {} ({}) has no MAC: generated {} \
                         (add <mac address='{}'/> to keep it)",
                        nic.index, nic.kind, nic.mac, nic.mac
                    );
                }
                if let HostSide::User(u) = &nic.host {
                    eprintln!(
                        "note: interface {} needs its user-mode stack: slipway user --dgram {}{} '{}'",
                        nic.index,
                        u.stack_socket.display(),
                        u.mtu.map(|m| format!(" --mtu {m}")).unwrap_or_default(),
                        u.options
                    );
                }
            }
            let mut out = String::new();
            for a in plan.args() {
                out.push_str(&a);
                out.push('\n');
            }
            print!("{out}");
            Ok(0)
        }
        GuestCommand::Launch { file, qemu } => {
            let signals = SignalForwarder::start()?;
            let xml = read(&file)?;
            let exe = std::env::current_exe().context("cannot find the slipway executable")?;
            let state = state_dir(root);
            let ctx = Context {
                state: &state,
                networks: &ManagerNetworks(Paths::detect(root)),
                stack_cmd: &[exe.into_os_string()],
                signals: &signals,
            };
            launch(&xml, &qemu, &ctx).with_context(|| format!("launching {}", file.display()))
        }
    }
}
