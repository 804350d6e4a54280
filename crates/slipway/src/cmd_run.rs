//! `slipway run`: a command in its own user + network namespace whose
//! only link is a tap served by this process's stack (what `pasta -- CMD`
//! and `slirp4netns` with `unshare` do together), exiting with the
//! command's status.

use std::ffi::OsString;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use slipway_netns::{Ipv4Setup, TapSetup, DEFAULT_IFNAME};
use slipway_usermode::attach::AttachSpec;
use slipway_usermode::config::StackConfig;
use slipway_usermode::event_loop::{self, RunOptions};
use slipway_usermode::tcp::MAX_ADVERTISED_WINDOW;

use crate::cmd_user::{stack_config, SandboxArgs, StackArgs};

/// Arguments of `slipway run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Name of the tap device inside the namespace.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_IFNAME)]
    pub ifname: String,

    /// The network itself.
    #[command(flatten)]
    pub stack: StackArgs,

    /// The stack's sandbox (the command is not confined by it).
    #[command(flatten)]
    pub sandbox: SandboxArgs,

    /// QEMU `-netdev user` option string, e.g. `hostfwd=tcp::8080-:80`
    /// (forwards without a guest address go to the namespace's address).
    #[arg(value_name = "OPTS")]
    pub options: Option<String>,

    /// The command to run in the namespace, and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The namespace's address: the 100th of the network as slirp4netns uses
/// (10.0.2.100), or the first DHCP address when the network is too small.
pub(crate) fn namespace_ipv4(cfg: &StackConfig) -> Ipv4Setup {
    Ipv4Setup {
        address: cfg.namespace_address(),
        prefix: cfg.prefix_len,
        gateway: cfg.host,
    }
}

/// The tap for `cfg`: its MTU, a transmit queue that holds a full
/// advertised window, and `ipv4` when the namespace is to be configured.
/// IPv4 forwards that name no guest address go to the namespace's address.
pub(crate) fn tap_setup(ifname: &str, cfg: &mut StackConfig, ipv4: Option<Ipv4Setup>) -> TapSetup {
    if let Some(ipv4) = ipv4 {
        for fwd in cfg.hostfwd.iter_mut().filter(|f| !f.guest_is_ipv6()) {
            fwd.guest_addr.get_or_insert(ipv4.address.into());
        }
    }
    let mtu = u32::try_from(cfg.mtu).unwrap_or(u32::MAX);
    TapSetup {
        ifname: ifname.to_string(),
        mtu,
        txqueuelen: slipway_netns::txqueuelen_for_window(MAX_ADVERTISED_WINDOW, mtu),
        ipv4,
        ipv6: None,
        mac: None,
    }
}

/// Serves the tap `fd` until one of `exit_fds` fires (or a signal
/// arrives), with the control API on `api` and slirp4netns's API on
/// `slirp4netns_api` if given, confined by `sandbox` once set up.
pub(crate) fn serve(
    cfg: StackConfig,
    api: Option<PathBuf>,
    slirp4netns_api: Option<PathBuf>,
    fd: OwnedFd,
    exit_fds: Vec<std::os::fd::RawFd>,
    ready_fd: Option<OwnedFd>,
    sandbox: Option<slipway_sandbox::Sandbox>,
) -> anyhow::Result<()> {
    event_loop::run(
        cfg,
        AttachSpec::Tap(Arc::new(fd)),
        RunOptions {
            api,
            slirp4netns_api,
            exit_fds,
            ready_fd: ready_fd.map(IntoRawFd::into_raw_fd),
            sandbox,
            ..RunOptions::default()
        },
    )?;
    Ok(())
}

/// A private directory holding the namespace's resolv.conf, removed on drop.
struct ResolvConf {
    dir: PathBuf,
}

/// The host's resolver configuration, which the namespace's copy covers.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

impl ResolvConf {
    /// The namespace's resolv.conf: the stack's DNS address, and the
    /// search list (`domainname`, `dnssearch`) when there is one.
    fn write(cfg: &StackConfig) -> anyhow::Result<ResolvConf> {
        use std::io::Write;
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("slipway-run-{}", std::process::id()));
        // A leftover of an earlier process with our PID.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let guard = ResolvConf { dir };
        let path = guard.path();
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut text = format!("nameserver {}\n", cfg.dns);
        let search = cfg.dns_search_list();
        if !search.is_empty() {
            text += &format!("search {}\n", search.join(" "));
        }
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(guard)
    }

    fn path(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the command in its namespace and returns its exit status.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut cfg = stack_config(&args.stack, args.options.as_deref().unwrap_or(""))?;
    let ipv4 = namespace_ipv4(&cfg);
    let tap = tap_setup(&args.ifname, &mut cfg, Some(ipv4));
    // A bind mount needs something to cover: without a host resolv.conf
    // (or with a dangling link) the command runs without one.
    let resolv = if Path::new(HOST_RESOLV_CONF).exists() {
        Some(ResolvConf::write(&cfg)?)
    } else {
        tracing::warn!(
            "{HOST_RESOLV_CONF} does not exist on this host, so the command gets none; \
             its resolver should use {} (the stack's DNS address)",
            cfg.dns
        );
        None
    };
    let resolv_path = resolv.as_ref().map(ResolvConf::path);
    let (fd, mut command) =
        slipway_netns::spawn_in_new_namespace(&args.command, &tap, resolv_path.as_deref())
            .context("setting up the namespace")?;
    let go = command.take_go();
    let exit_fds = vec![command.exit_fd()];
    let api = args.stack.api;
    serve_command(command, args.sandbox.sandbox(), move |sandbox| {
        serve(cfg, api, None, fd, exit_fds, go, sandbox)
    })
}

/// Serves the namespace of `command` with `serve`, confined by `sandbox`
/// (then in a child process: [`serve_in_child`]); returns the command's
/// exit status, or the stack's if that failed. The loop ends when the
/// command exits, on SIGTERM/SIGINT, or on an error; in the last two
/// cases the command is asked to stop.
pub(crate) fn serve_command(
    command: slipway_netns::Spawned,
    sandbox: Option<slipway_sandbox::Sandbox>,
    serve: impl FnOnce(Option<slipway_sandbox::Sandbox>) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    let served = match sandbox {
        None => serve(None).map(|()| 0),
        Some(sandbox) => serve_in_child(move || serve(Some(sandbox))),
    };
    command.terminate();
    let status = command.wait().context("waiting for the command")?;
    // A failed stack child has said why; its status is ours.
    Ok(match served? {
        0 => status,
        failed => failed,
    })
}

/// Runs `serve` (the stack, which confines itself) in a child process and
/// returns its exit status once it ends, forwarding SIGTERM and SIGINT to
/// it meanwhile. Only the stack is sandboxed: this process keeps the
/// command, its own child, to signal and reap, which the sandbox forbids
/// (no `kill`, no `wait4`, and as root another user than the command's).
pub(crate) fn serve_in_child(serve: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<i32> {
    // The three signals are taken from a signalfd, so they are blocked
    // before the fork: none is lost in between.
    let signals = slipway_sandbox::supervisor_signals().context("taking signals")?;
    // SAFETY: fork in a process that is single-threaded (no thread was
    // spawned during setup).
    unsafe {
        let stack = libc::fork();
        if stack < 0 {
            let err = std::io::Error::last_os_error();
            signals.restore();
            return Err(err).context("forking the stack's process");
        }
        if stack == 0 {
            signals.restore();
            let code = match serve() {
                Ok(()) => 0,
                Err(err) => {
                    let message = format!("{err:#}");
                    eprintln!("error: {message}");
                    if let Some(hint) = crate::cmd_doctor::permission_hint(&message) {
                        eprintln!("{hint}");
                    }
                    1
                }
            };
            // The parent owns everything else (the command, resolv.conf).
            std::process::exit(code);
        }
        // The stack's descriptors (tap, go signal) are the child's alone.
        drop(serve);
        let code = slipway_sandbox::forward_signals_until_exit(stack, &signals);
        signals.restore();
        Ok(code)
    }
}
