//! slipway as `pasta`: pasta's command line (what podman 5 passes), a
//! network namespace served through a tap with passt's model of the
//! network.
//!
//! Theory of operation: pasta's options are passt's plus the namespace's
//! ([`PastaArgs`]); the stack's configuration is passt's ([`plan`]: the
//! namespace gets the host's address, prefix and gateway, the gateway maps
//! to the host's loopback), the tap is opened inside the namespace (by PID
//! or path) the way `slipway attach` does it, named after the host's
//! interface (or `-I`) and, with `--config-net`, given that address,
//! the default route and the MTU, and on the IPv6 side the host's IPv6
//! address (`nodad`) and a default route via the host's gateway. Serving then goes as for passt
//! ([`start`]): in the background once ready, ending with the namespace's
//! process when a PID was given.
//!
//! Given a command instead (`pasta [OPTIONS] [COMMAND [ARGS]]`, or no
//! namespace at all: the user's `$SHELL`), pasta makes the namespace
//! itself: [`run_command`] starts the command in a new user and network
//! namespace (our user is root inside) with the tap set up as above, serves
//! it in the foreground (the stack, sandboxed, in a child process, as
//! `slipway run` does) and exits with the command's status.
//!
//! `-T`/`-U` (namespace to host, [`ns_fwd`]) start a helper in the
//! namespace that binds its loopback for the stack.

mod ns_fwd;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use slipway_netns::{Ipv4Setup, Ipv6Setup, TapSetup, Target};
use slipway_usermode::attach::AttachSpec;
use slipway_usermode::config::{ForwardProtocol, StackConfig};
use slipway_usermode::event_loop::{self, RunOptions};
use slipway_usermode::port_watch::PortWatchSpec;

use crate::cmd_passt::{
    log_level, open_log, plan, start, template_ifname, HostView, PasstArgs, ThisHost,
};
use crate::cmd_run::{serve_command, tap_setup};

/// pasta's options: passt's, and the namespace's.
#[derive(Args, Debug)]
pub struct PastaArgs {
    /// passt's options (`-t`/`-u` forward host ports into the namespace).
    #[command(flatten)]
    pub common: PasstArgs,
    /// The tap's name in the namespace (default: the host interface's).
    #[arg(short = 'I', long, value_name = "NAME")]
    pub ns_ifname: Option<String>,
    /// TCP ports of the namespace's loopback forwarded to the host's
    /// (default `auto`: the host's listening ports).
    #[arg(short = 'T', long = "tcp-ns", value_name = "SPEC")]
    pub tcp_ns: Vec<String>,
    /// UDP ports of the namespace's loopback forwarded to the host's
    /// (default `auto`: the host's bound ports).
    #[arg(short = 'U', long = "udp-ns", value_name = "SPEC")]
    pub udp_ns: Vec<String>,
    /// The user namespace to join first, as a path.
    #[arg(long, value_name = "PATH")]
    pub userns: Option<PathBuf>,
    /// The network namespace, as a path or a name under /run/netns.
    #[arg(long, value_name = "PATH|NAME")]
    pub netns: Option<String>,
    /// Join only the network namespace (slipway always does, with a path).
    #[arg(long)]
    pub netns_only: bool,
    /// Keep serving when the namespace goes away (accepted).
    #[arg(long)]
    pub no_netns_quit: bool,
    /// Give the namespace's interface the address, route and MTU, and bring it up.
    #[arg(long)]
    pub config_net: bool,
    /// The tap's MAC address.
    #[arg(long, value_name = "ADDR")]
    pub ns_mac_addr: Option<slipway_host::MacAddr>,
    /// The namespace: a PID, or a network namespace file; or else a
    /// command (and its arguments) to run in a new one.
    #[arg(
        value_name = "PID|PATH|COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub target: Vec<OsString>,
}

/// What pasta serves: a namespace that exists, or one it makes for a
/// command.
#[derive(Debug, PartialEq, Eq)]
enum Serve {
    /// Join this namespace.
    Join(Target),
    /// Run this command (never empty) in a new namespace.
    Spawn(Vec<OsString>),
}

/// Whether the lone argument `arg` names a namespace rather than a
/// command: a PID, or a path that exists and is not an executable file (a
/// namespace file, bind-mounted or under /proc, has no execute bit), or
/// any path when `--userns` says a namespace is meant.
fn names_a_namespace(arg: &str, userns: bool) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let executable = |m: std::fs::Metadata| m.is_file() && m.permissions().mode() & 0o111 != 0;
    arg.contains('/') && (userns || std::fs::metadata(arg).is_ok_and(|m| !executable(m)))
}

/// What `args` ask to serve.
fn what(args: &PastaArgs) -> anyhow::Result<Serve> {
    let lone = match args.target.as_slice() {
        [one] => one
            .to_str()
            .filter(|a| names_a_namespace(a, args.userns.is_some())),
        _ => None,
    };
    if lone.is_some() || args.netns.is_some() {
        return target(args, lone).map(Serve::Join);
    }
    for (given, option) in [
        (args.userns.is_some(), "--userns"),
        (args.netns_only, "--netns-only"),
        (args.no_netns_quit, "--no-netns-quit"),
    ] {
        if given {
            anyhow::bail!(
                "{option} goes with a namespace to join (a PID, a path or --netns), not with a command"
            );
        }
    }
    if !args.target.is_empty() {
        return Ok(Serve::Spawn(args.target.clone()));
    }
    // No namespace and no command: the user's shell, as pasta does.
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    Ok(Serve::Spawn(vec![shell]))
}

/// The namespace `args` name: `--netns`, or `lone`, the one positional
/// argument, a PID or a path.
fn target(args: &PastaArgs, lone: Option<&str>) -> anyhow::Result<Target> {
    let path = |netns: PathBuf| Target::Path {
        netns,
        userns: args.userns.clone(),
    };
    if args.netns.is_some() && !args.target.is_empty() {
        anyhow::bail!("--netns and a PID, path or command were both given: give one");
    }
    match (&args.netns, lone) {
        (Some(_), Some(t)) => {
            anyhow::bail!("--netns and '{t}' both name the namespace: give one")
        }
        (Some(name), None) if !name.contains('/') => {
            if name.is_empty() || name == "." || name == ".." {
                anyhow::bail!("invalid --netns '{name}': not a namespace name");
            }
            Ok(path(PathBuf::from("/run/netns").join(name)))
        }
        (Some(p), None) => Ok(path(PathBuf::from(p))),
        (None, Some(t)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            if args.userns.is_some() {
                anyhow::bail!(
                    "--userns goes with a namespace path: a PID names its own user namespace"
                );
            }
            let pid = t
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .with_context(|| format!("invalid PID '{t}'"))?;
            Ok(Target::Pid(pid))
        }
        (None, Some(t)) => Ok(path(PathBuf::from(t))),
        (None, None) => anyhow::bail!("no namespace to join: give a PID, a path or --netns"),
    }
}

/// Refuses what slipway as pasta does not do yet (README: slipway as pasta).
fn check_supported(args: &PastaArgs) -> anyhow::Result<()> {
    if args.common.socket.is_some() || args.common.one_off || args.common.vhost_user {
        anyhow::bail!("--socket, --one-off and --vhost-user are passt's, not pasta's");
    }
    Ok(())
}

/// pasta's `auto` in `-t`/`-u` (its default when the option is not
/// given): the protocols whose listening ports in the namespace are
/// forwarded as they come and go. Their `auto` is taken out of `args`
/// (the stack's other forwards are passt's). `auto` stands alone.
fn take_auto(args: &mut PastaArgs) -> anyhow::Result<Vec<ForwardProtocol>> {
    let mut watched = Vec::new();
    for (protocol, option, specs) in [
        (
            ForwardProtocol::Tcp,
            "--tcp-ports",
            &mut args.common.tcp_ports,
        ),
        (
            ForwardProtocol::Udp,
            "--udp-ports",
            &mut args.common.udp_ports,
        ),
    ] {
        if specs.is_empty() || specs.iter().any(|s| s == "auto") {
            if specs.len() > 1 {
                anyhow::bail!("{option} auto stands alone: give it without other specifications");
            }
            specs.clear();
            watched.push(protocol);
        }
    }
    Ok(watched)
}

/// What [`PortWatch`](slipway_usermode::port_watch::PortWatch) watches:
/// `protocols` in process `pid`'s namespace, forwarded on each family
/// `cfg` serves, over IPv4 to the tap's address if it is configured.
fn watch_spec(
    protocols: Vec<ForwardProtocol>,
    pid: u32,
    tap: &TapSetup,
    cfg: &StackConfig,
) -> Option<PortWatchSpec> {
    (!protocols.is_empty()).then(|| PortWatchSpec {
        pid,
        protocols,
        guest_addr: tap.ipv4.as_ref().map(|i| i.address.into()),
        ipv4: cfg.ipv4,
        ipv6: cfg.ipv6.enabled,
    })
}

/// The stack's configuration and the tap pasta's options describe.
fn plan_tap(args: &PastaArgs) -> anyhow::Result<(slipway_usermode::config::StackConfig, TapSetup)> {
    let mut cfg = plan(&args.common, &ThisHost)?;
    let copied = cfg.copied.clone().context("a copied network")?;
    let ifname = match &args.ns_ifname {
        Some(name) => name.clone(),
        None => template_ifname(&args.common, &ThisHost)?.unwrap_or_else(|| "tap0".into()),
    };
    let ipv4 = (args.config_net && cfg.ipv4).then_some(Ipv4Setup {
        address: copied.guest,
        prefix: cfg.prefix_len,
        gateway: cfg.host,
    });
    let mut tap = tap_setup(&ifname, &mut cfg, ipv4);
    // As pasta does: the host's address without duplicate address
    // detection, the default route via the host's gateway (link-local).
    tap.ipv6 = copied
        .guest6
        .filter(|_| args.config_net)
        .map(|address| Ipv6Setup {
            address,
            prefix: cfg.ipv6.prefix_len,
            gateway: cfg.ipv6.host,
        });
    if let Some(mac) = args.ns_mac_addr {
        if mac.is_multicast() {
            anyhow::bail!("--ns-mac-addr {mac}: a multicast address cannot be the tap's");
        }
        tap.mac = Some(mac.octets());
    }
    Ok((cfg, tap))
}

/// Runs slipway as pasta; returns the exit status.
pub fn run(mut args: PastaArgs) -> anyhow::Result<i32> {
    check_supported(&args)?;
    let ns_ports = ns_fwd::ns_ports(
        &args,
        &slipway_usermode::config::passt_ports::non_ephemeral(ThisHost.ephemeral_ports()),
    )?;
    let explicit_auto = [&args.common.tcp_ports, &args.common.udp_ports]
        .iter()
        .any(|specs| specs.iter().any(|s| s == "auto"));
    let mut watched = take_auto(&mut args)?;
    let target = match what(&args)? {
        Serve::Join(target) => target,
        Serve::Spawn(command) => return run_command(&args, &command, watched, ns_ports),
    };
    let watched_pid = match &target {
        Target::Pid(pid) => Some(*pid),
        Target::Path { .. } if explicit_auto => anyhow::bail!(
            "-t/-u auto follows a namespace given by PID (or a command): with a path, give the ports"
        ),
        // pasta's default `auto` with a namespace path: nothing forwarded.
        Target::Path { .. } => {
            watched.clear();
            None
        }
    };
    let log = open_log(&args.common)?;
    let (cfg, tap) = plan_tap(&args)?;
    let copied = cfg.copied.clone().context("a copied network")?;
    let ifname = tap.ifname.clone();
    let process = match target {
        Target::Pid(pid) if !args.no_netns_quit => Some(
            slipway_netns::process_exit_fd(pid)
                .with_context(|| format!("watching process {pid}"))?,
        ),
        _ => None,
    };
    let fd = slipway_netns::open_tap_in(&target, &tap)
        .with_context(|| format!("attaching to {target}"))?;
    let summary = format!(
        "namespace {target}: {ifname} {}/{} via {}, IPv6 {:?}",
        copied.guest, cfg.prefix_len, cfg.host, tap.ipv6
    );
    let exit_fds = process.iter().map(AsRawFd::as_raw_fd).collect();
    let port_watch = watched_pid.and_then(|pid| watch_spec(watched, pid, &tap, &cfg));
    let inbound = tcp_inbound(&args, port_watch.as_ref());
    let ns_forward = ns_fwd::spec(ns_ports, &target, loopbacks(&args, &cfg), inbound)?;
    let code = start(
        &args.common,
        cfg,
        AttachSpec::Tap(Arc::new(fd)),
        exit_fds,
        (port_watch, ns_forward),
        log,
        &summary,
    )?;
    // The watched process's descriptor stays open until serving ends.
    drop(process);
    Ok(code)
}

/// Which of the namespace's loopbacks `-T`/`-U` bind: IPv4 unless `-6`,
/// IPv6 when the host has it (unless `-4`).
fn loopbacks(args: &PastaArgs, cfg: &slipway_usermode::config::StackConfig) -> (bool, bool) {
    let ipv6 = !args.common.ipv4_only && cfg.copied.as_ref().is_some_and(|c| c.guest6.is_some());
    (!args.common.ipv6_only, ipv6)
}

/// Whether TCP ports are forwarded from the host (`-t` ports, or `-t
/// auto`): connections to them from the host's loopback are spliced into
/// the namespace's loopback, as pasta does.
fn tcp_inbound(args: &PastaArgs, port_watch: Option<&PortWatchSpec>) -> bool {
    args.common.tcp_ports.iter().any(|s| s != "none")
        || port_watch.is_some_and(|w| w.protocols.contains(&ForwardProtocol::Tcp))
}

/// Runs `command` in a new user and network namespace served as pasta
/// serves it, in the foreground; returns the command's exit status (128
/// plus the signal's number if a signal ended it), or the stack's if
/// that failed first.
fn run_command(
    args: &PastaArgs,
    command: &[OsString],
    watched: Vec<ForwardProtocol>,
    ns_ports: ns_fwd::NsPorts,
) -> anyhow::Result<i32> {
    crate::init_log_writer(log_level(&args.common), open_log(&args.common)?);
    let (cfg, tap) = plan_tap(args)?;
    if let Some(pid) = &args.common.pid {
        crate::cmd_passt::write_pid(pid, std::process::id())?;
    }
    let (fd, mut spawned) = slipway_netns::spawn_in_new_namespace(command, &tap, None)
        .with_context(|| {
            format!(
                "starting {} in a new namespace",
                Path::new(&command[0]).display()
            )
        })?;
    tracing::info!(
        "namespace of {}: {} {:?}",
        Path::new(&command[0]).display(),
        tap.ifname,
        tap.ipv4
    );
    let port_watch = watch_spec(watched, spawned.pid(), &tap, &cfg);
    let inbound = tcp_inbound(args, port_watch.as_ref());
    let ns_forward = ns_fwd::spec(
        ns_ports,
        &Target::Pid(spawned.pid()),
        loopbacks(args, &cfg),
        inbound,
    )?;
    let go = spawned.take_go().map(IntoRawFd::into_raw_fd);
    let exit_fds = vec![spawned.exit_fd()];
    serve_command(spawned, args.common.sandbox(), move |sandbox| {
        let options = RunOptions {
            exit_fds,
            ready_fd: go,
            sandbox,
            port_watch,
            ns_forward,
            ..RunOptions::default()
        };
        event_loop::run(cfg, AttachSpec::Tap(Arc::new(fd)), options).map_err(anyhow::Error::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: PastaArgs,
    }

    fn args(line: &[&str]) -> PastaArgs {
        Cmd::try_parse_from(std::iter::once("pasta").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn the_namespace_by_pid_path_or_name() {
        let join = |t| Serve::Join(t);
        assert_eq!(what(&args(&["1234"])).unwrap(), join(Target::Pid(1234)));
        assert_eq!(
            what(&args(&["--netns", "ctr1"])).unwrap(),
            join(Target::Path {
                netns: "/run/netns/ctr1".into(),
                userns: None
            })
        );
        assert_eq!(
            what(&args(&[
                "--userns",
                "/proc/9/ns/user",
                "/run/user/1000/netns/n"
            ]))
            .unwrap(),
            join(Target::Path {
                netns: "/run/user/1000/netns/n".into(),
                userns: Some("/proc/9/ns/user".into())
            })
        );
        // A namespace file has no execute bit.
        assert_eq!(
            what(&args(&["/proc/self/ns/net"])).unwrap(),
            join(Target::Path {
                netns: "/proc/self/ns/net".into(),
                userns: None
            })
        );
        for (line, want) in [
            (&["--netns", "a", "12"][..], "were both given"),
            (&["--netns", "a", "sh"][..], "were both given"),
            (&["--netns", ".."], "not a namespace name"),
            (&["0"], "invalid PID '0'"),
            (&["99999999999"], "invalid PID"),
            (
                &["--userns", "/x", "12"],
                "--userns goes with a namespace path",
            ),
            (&["--userns", "/x", "sh"], "not with a command"),
            (&["--netns-only", "sh"], "not with a command"),
        ] {
            let err = what(&args(line)).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{line:?}: {err:#}");
        }
    }

    #[test]
    fn a_command_or_the_shell_in_a_new_namespace() {
        let spawn = |argv: &[&str]| Serve::Spawn(argv.iter().map(OsString::from).collect());
        assert_eq!(what(&args(&["sh"])).unwrap(), spawn(&["sh"]));
        // An executable path is a command, with its own options.
        assert_eq!(
            what(&args(&["-t", "80", "/bin/sh", "-c", "exit 3"])).unwrap(),
            spawn(&["/bin/sh", "-c", "exit 3"])
        );
        assert_eq!(
            what(&args(&["/nonexistent/cmd"])).unwrap(),
            spawn(&["/nonexistent/cmd"])
        );
        assert_eq!(
            what(&args(&["--", "12", "x"])).unwrap(),
            spawn(&["12", "x"])
        );
        let shell = std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or("/bin/sh".into());
        assert_eq!(what(&args(&[])).unwrap(), spawn(&[&shell]));
    }

    #[test]
    fn auto_is_the_default_and_stands_alone() {
        let mut a = args(&["1"]);
        assert_eq!(
            take_auto(&mut a).unwrap(),
            [ForwardProtocol::Tcp, ForwardProtocol::Udp]
        );
        let mut a = args(&["-t", "auto", "-u", "53", "1"]);
        assert_eq!(take_auto(&mut a).unwrap(), [ForwardProtocol::Tcp]);
        assert!(a.common.tcp_ports.is_empty() && a.common.udp_ports == ["53"]);
        let mut a = args(&["-t", "none", "-u", "none", "1"]);
        assert!(take_auto(&mut a).unwrap().is_empty());
        let mut a = args(&["-t", "auto", "-t", "80", "1"]);
        let err = take_auto(&mut a).unwrap_err();
        assert!(
            format!("{err:#}").contains("--tcp-ports auto stands alone"),
            "{err:#}"
        );
    }

    #[test]
    fn what_is_not_done_yet_is_refused_by_name() {
        assert!(check_supported(&args(&["-t", "8080", "-T", "80", "-U", "auto", "1"])).is_ok());
        for (line, want) in [
            (&["--socket", "/x", "1"][..], "passt's, not pasta's"),
            (&["--vhost-user", "1"], "passt's, not pasta's"),
        ] {
            let err = check_supported(&args(line)).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{line:?}: {err:#}");
        }
    }
}
