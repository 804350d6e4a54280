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
//! the default route and the MTU. Serving then goes as for passt
//! ([`start`]): in the background once ready, ending with the namespace's
//! process when a PID was given.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use slipway_netns::{Ipv4Setup, Target};
use slipway_usermode::attach::AttachSpec;

use crate::cmd_passt::{open_log, plan, start, template_ifname, PasstArgs, ThisHost};
use crate::cmd_run::tap_setup;

/// pasta's options: passt's, and the namespace's.
#[derive(Args, Debug)]
pub struct PastaArgs {
    /// passt's options (`-t`/`-u` forward host ports into the namespace).
    #[command(flatten)]
    pub common: PasstArgs,
    /// The tap's name in the namespace (default: the host interface's).
    #[arg(short = 'I', long, value_name = "NAME")]
    pub ns_ifname: Option<String>,
    /// TCP ports forwarded from the namespace to the host (`none` only).
    #[arg(short = 'T', long = "tcp-ns", value_name = "SPEC")]
    pub tcp_ns: Vec<String>,
    /// UDP ports forwarded from the namespace to the host (`none` only).
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
    /// The namespace: a PID, or a network namespace file.
    #[arg(value_name = "PID|PATH")]
    pub target: Option<String>,
}

/// The namespace `args` name.
fn target(args: &PastaArgs) -> anyhow::Result<Target> {
    let path = |netns: PathBuf| Target::Path {
        netns,
        userns: args.userns.clone(),
    };
    match (&args.netns, &args.target) {
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
                anyhow::bail!("--userns goes with a namespace path: a PID names its own user namespace");
            }
            let pid = t
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .with_context(|| format!("invalid PID '{t}'"))?;
            Ok(Target::Pid(pid))
        }
        (None, Some(t)) if t.contains('/') => Ok(path(PathBuf::from(t))),
        (None, Some(t)) => anyhow::bail!(
            "'{t}': slipway as pasta joins an existing namespace (a PID or a path); running a command in a new one is not supported yet"
        ),
        (None, None) => anyhow::bail!(
            "a namespace is required (a PID, a path, or --netns): slipway as pasta does not create one yet"
        ),
    }
}

/// Refuses what slipway as pasta does not do yet (README: slipway as pasta).
fn check_supported(args: &PastaArgs) -> anyhow::Result<()> {
    if args.common.socket.is_some() || args.common.one_off || args.common.vhost_user {
        anyhow::bail!("--socket, --one-off and --vhost-user are passt's, not pasta's");
    }
    for (option, specs) in [("--tcp-ns", &args.tcp_ns), ("--udp-ns", &args.udp_ns)] {
        if let Some(spec) = specs.iter().find(|s| *s != "none") {
            anyhow::bail!(
                "{option} '{spec}': forwarding from the namespace to the host is not supported by slipway as pasta yet (only 'none')"
            );
        }
    }
    for (option, specs) in [
        ("--tcp-ports", &args.common.tcp_ports),
        ("--udp-ports", &args.common.udp_ports),
    ] {
        if specs.iter().any(|s| s == "auto") {
            anyhow::bail!("{option} auto: not supported by slipway as pasta yet: give the ports");
        }
    }
    Ok(())
}

/// Runs slipway as pasta; returns the exit status.
pub fn run(args: PastaArgs) -> anyhow::Result<i32> {
    check_supported(&args)?;
    let target = target(&args)?;
    let log = open_log(&args.common)?;
    let mut cfg = plan(&args.common, &ThisHost)?;
    let copied = cfg.copied.clone().context("a copied network")?;
    let ifname = match &args.ns_ifname {
        Some(name) => name.clone(),
        None => template_ifname(&args.common, &ThisHost)?.unwrap_or_else(|| "tap0".into()),
    };
    let ipv4 = args.config_net.then_some(Ipv4Setup {
        address: copied.guest,
        prefix: cfg.prefix_len,
        gateway: cfg.host,
    });
    let mut tap = tap_setup(&ifname, &mut cfg, ipv4);
    if let Some(mac) = args.ns_mac_addr {
        if mac.is_multicast() {
            anyhow::bail!("--ns-mac-addr {mac}: a multicast address cannot be the tap's");
        }
        tap.mac = Some(mac.octets());
    }
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
        "namespace {target}: {ifname} {}/{} via {}",
        copied.guest, cfg.prefix_len, cfg.host
    );
    let exit_fds = process.iter().map(AsRawFd::as_raw_fd).collect();
    let code = start(
        &args.common,
        cfg,
        AttachSpec::Tap(Arc::new(fd)),
        exit_fds,
        log,
        &summary,
    )?;
    // The watched process's descriptor stays open until serving ends.
    drop(process);
    Ok(code)
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
        assert_eq!(target(&args(&["1234"])).unwrap(), Target::Pid(1234));
        assert_eq!(
            target(&args(&["--netns", "ctr1"])).unwrap(),
            Target::Path {
                netns: "/run/netns/ctr1".into(),
                userns: None
            }
        );
        assert_eq!(
            target(&args(&[
                "--userns",
                "/proc/9/ns/user",
                "/run/user/1000/netns/n"
            ]))
            .unwrap(),
            Target::Path {
                netns: "/run/user/1000/netns/n".into(),
                userns: Some("/proc/9/ns/user".into())
            }
        );
        for (line, want) in [
            (&["--netns", "a", "12"][..], "both name the namespace"),
            (&["--netns", ".."], "not a namespace name"),
            (&["0"], "invalid PID '0'"),
            (&["99999999999"], "invalid PID"),
            (
                &["--userns", "/x", "12"],
                "--userns goes with a namespace path",
            ),
            (&["sh"], "running a command in a new one is not supported"),
            (&[], "a namespace is required"),
        ] {
            let err = target(&args(line)).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{line:?}: {err:#}");
        }
    }

    #[test]
    fn what_is_not_done_yet_is_refused_by_name() {
        assert!(check_supported(&args(&["-t", "8080", "-T", "none", "-U", "none", "1"])).is_ok());
        for (line, want) in [
            (&["-T", "8080", "1"][..], "--tcp-ns '8080'"),
            (&["-U", "auto", "1"], "--udp-ns 'auto'"),
            (&["-t", "auto", "1"], "--tcp-ports auto"),
            (&["--socket", "/x", "1"], "passt's, not pasta's"),
            (&["--vhost-user", "1"], "passt's, not pasta's"),
        ] {
            let err = check_supported(&args(line)).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{line:?}: {err:#}");
        }
    }
}
