//! `slipway attach`: serve an existing network namespace (a container's)
//! through a tap, the way `slirp4netns PID tap0` does: a helper joins the
//! namespace, opens the tap and hands it back; the stack's sockets stay in
//! the host namespace.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use slipway_netns::{Target, DEFAULT_IFNAME};

use crate::cmd_run::{namespace_ipv4, serve, tap_setup};
use crate::cmd_user::{stack_config, SandboxArgs, StackArgs};

/// Arguments of `slipway attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Configure the tap: the namespace's address (10.0.2.100 in the
    /// default network) and a default route via the host address.
    #[arg(long)]
    pub configure: bool,

    /// Write `1` to this descriptor once the network serves (slirp4netns `--ready-fd`).
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<RawFd>,

    /// Exit when this descriptor becomes readable or is closed (slirp4netns `--exit-fd`).
    #[arg(long, value_name = "FD")]
    pub exit_fd: Option<RawFd>,

    /// Join this network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`) instead of a process's.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,

    /// With `--netns`: the user namespace to join first (slirp4netns `--userns-path`).
    #[arg(long, value_name = "PATH", requires = "netns")]
    pub userns: Option<PathBuf>,

    /// The network itself.
    #[command(flatten)]
    pub stack: StackArgs,

    /// The sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,

    /// `[OPTS] PID [IFNAME]`, or `[OPTS] [IFNAME]` with `--netns`: a QEMU
    /// `-netdev user` option string (recognised by its `=`), the process
    /// whose network namespace to join (serving ends when it exits), and
    /// the tap's name (default tap0).
    #[arg(value_name = "[OPTS] PID [IFNAME]", num_args = 0..=3)]
    pub positional: Vec<String>,
}

/// What the positional arguments say.
#[derive(Debug, PartialEq, Eq)]
struct Positional {
    options: String,
    pid: Option<u32>,
    ifname: String,
}

fn parse_positional(args: &[String], have_netns: bool) -> anyhow::Result<Positional> {
    let mut rest = args;
    let mut options = String::new();
    if let Some((first, tail)) = rest.split_first() {
        if first.contains('=') {
            options = first.clone();
            rest = tail;
        }
    }
    let mut pid = None;
    if !have_netns {
        let Some((first, tail)) = rest.split_first() else {
            anyhow::bail!("a PID or --netns PATH is required");
        };
        pid = Some(
            first
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .with_context(|| format!("invalid PID '{first}': expected a process ID"))?,
        );
        rest = tail;
    }
    let ifname = match rest {
        [] => DEFAULT_IFNAME.to_string(),
        [name] => name.clone(),
        [_, extra, ..] => anyhow::bail!("unexpected argument '{extra}'"),
    };
    Ok(Positional {
        options,
        pid,
        ifname,
    })
}

/// Takes a descriptor number from the command line into ownership.
fn inherited_fd(fd: RawFd, flag: &str) -> anyhow::Result<OwnedFd> {
    // SAFETY: fcntl only asks whether the number is an open descriptor.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        anyhow::bail!("invalid value '{fd}' for '{flag}': not an open file descriptor");
    }
    // SAFETY: an open descriptor the caller gave us for this purpose.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches to the namespace and serves it until the tap goes away (the
/// namespace was destroyed), the exit descriptor fires, or a signal.
pub fn run(args: AttachArgs) -> anyhow::Result<i32> {
    let pos = parse_positional(&args.positional, args.netns.is_some())?;
    let ready = args
        .ready_fd
        .map(|fd| inherited_fd(fd, "--ready-fd"))
        .transpose()?;
    let exit = args
        .exit_fd
        .map(|fd| inherited_fd(fd, "--exit-fd"))
        .transpose()?;
    let mut cfg = stack_config(&args.stack, &pos.options)?;
    let ipv4 = args.configure.then(|| namespace_ipv4(&cfg));
    let tap = tap_setup(&pos.ifname, &mut cfg, ipv4);
    let target = match (pos.pid, args.netns) {
        (Some(pid), _) => Target::Pid(pid),
        (None, Some(netns)) => Target::Path {
            netns,
            userns: args.userns,
        },
        (None, None) => anyhow::bail!("a PID or --netns PATH is required"),
    };
    // The namespace lives as long as our tap does: with a PID, serving
    // ends when that process exits.
    let process = match target {
        Target::Pid(pid) => Some(
            slipway_netns::process_exit_fd(pid)
                .with_context(|| format!("watching process {pid}"))?,
        ),
        Target::Path { .. } => None,
    };
    let fd = slipway_netns::open_tap_in(&target, &tap)
        .with_context(|| format!("attaching to {target}"))?;
    let exit_fds = exit
        .iter()
        .chain(&process)
        .map(AsRawFd::as_raw_fd)
        .collect();
    serve(
        cfg,
        args.stack.api,
        fd,
        exit_fds,
        ready,
        args.sandbox.sandbox(),
    )?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn positionals_are_told_apart() {
        let p = parse_positional(&strings(&["1234"]), false).unwrap();
        assert_eq!(
            (p.pid, p.ifname.as_str(), p.options.as_str()),
            (Some(1234), "tap0", "")
        );
        let p = parse_positional(&strings(&["hostfwd=tcp::80-:80", "99", "eth0"]), false).unwrap();
        assert_eq!((p.pid, p.ifname.as_str()), (Some(99), "eth0"));
        assert_eq!(p.options, "hostfwd=tcp::80-:80");
        let p = parse_positional(&strings(&["eth1"]), true).unwrap();
        assert_eq!((p.pid, p.ifname.as_str()), (None, "eth1"));
        for (args, netns, needle) in [
            (vec![], false, "PID or --netns"),
            (vec!["tap0"], false, "invalid PID 'tap0'"),
            (vec!["0"], false, "invalid PID '0'"),
            (vec!["1", "a", "b"], false, "unexpected argument 'b'"),
        ] {
            let err = parse_positional(&strings(&args), netns)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
