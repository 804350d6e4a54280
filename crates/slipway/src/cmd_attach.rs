//! `slipway attach`: serve an existing network namespace (a container's)
//! through a tap, the way `slirp4netns PID tap0` does: a helper joins the
//! namespace, opens the tap and hands it back; the stack's sockets stay in
//! the host namespace.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use slipway_netns::{Target, DEFAULT_IFNAME};

use crate::cmd_run::{namespace_ipv4, serve, tap_setup};
use crate::cmd_user::{stack_config, SandboxArgs, StackArgs};

/// Arguments of `slipway attach`.
///
/// slirp4netns's command line is accepted too (its short options, and its
/// long names as visible aliases), so that rootless container runtimes
/// that run `slirp4netns` can run slipway in its place (installed or
/// linked under that name, see `main.rs`).
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Configure the tap: the namespace's address (10.0.2.100 in the
    /// default network) and a default route via the host address.
    #[arg(short = 'c', long)]
    pub configure: bool,

    /// Write `1` to this descriptor once the network serves (slirp4netns `--ready-fd`).
    #[arg(short = 'r', long, value_name = "FD")]
    pub ready_fd: Option<RawFd>,

    /// Exit when this descriptor becomes readable or is closed (slirp4netns `--exit-fd`).
    #[arg(short = 'e', long, value_name = "FD")]
    pub exit_fd: Option<RawFd>,

    /// Join this network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`) instead of a process's.
    #[arg(long, value_name = "PATH", conflicts_with = "netns_type")]
    pub netns: Option<PathBuf>,

    /// What the namespace argument is: `pid` (default) or `path` (a
    /// network namespace file, as with `--netns`); slirp4netns's option.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub netns_type: Option<NetnsType>,

    /// With a namespace file: the user namespace to join first.
    #[arg(long, visible_alias = "userns-path", value_name = "PATH")]
    pub userns: Option<PathBuf>,

    /// The network's IPv4 address range (QEMU's `net=`; slirp4netns's option).
    #[arg(long, value_name = "CIDR")]
    pub cidr: Option<String>,

    /// IPv6 on (slirp4netns's option; slipway serves IPv6 unless the
    /// options say `ipv6=off`, and the namespace configures itself from
    /// its router advertisements). The prefix is slirp4netns's fd00::/64
    /// (host fd00::2, DNS fd00::3) unless the options' `ipv6-prefix=`
    /// names another.
    #[arg(short = '6', long)]
    pub enable_ipv6: bool,

    /// Confine the stack (slirp4netns's option; slipway always does
    /// unless `--no-sandbox`: seccomp allowlist, Landlock, no privileges).
    #[arg(long, conflicts_with = "no_sandbox")]
    pub enable_sandbox: bool,

    /// The seccomp part of the sandbox (slirp4netns's option; on unless `--no-sandbox`).
    #[arg(long, conflicts_with = "no_sandbox")]
    pub enable_seccomp: bool,

    /// Serve slirp4netns's API (add_hostfwd, list_hostfwd, remove_hostfwd)
    /// on a unix socket at PATH (slirp4netns's option; docs/usermode-api.md).
    #[arg(short = 'a', long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// Send outbound IPv4 flows (TCP, UDP, DNS queries) from this host
    /// address, or from the first IPv4 address of this interface
    /// (slirp4netns's option).
    #[arg(long, value_name = "IPv4|IFNAME")]
    pub outbound_addr: Option<String>,

    /// Send outbound IPv6 flows from this host address, or from the first
    /// IPv6 address of this interface (slirp4netns's option).
    #[arg(long, value_name = "IPv6|IFNAME")]
    pub outbound_addr6: Option<String>,

    /// Do not relay DNS queries sent to the network's DNS address (it is
    /// then an address with nothing behind it; slirp4netns's option).
    #[arg(long)]
    pub disable_dns: bool,

    /// With `--configure`: the tap's MAC address (slirp4netns's option).
    #[arg(long, value_name = "MAC", requires = "configure")]
    pub macaddress: Option<slipway_netxml::MacAddr>,

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

/// How `slipway attach` reads its namespace argument (slirp4netns's
/// `--netns-type`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsType {
    /// A process ID: its network namespace (and user namespace).
    Pid,
    /// A network namespace file.
    Path,
}

/// What the positional arguments say.
#[derive(Debug, PartialEq, Eq)]
struct Positional {
    options: String,
    /// The PID or namespace file (absent with `--netns`).
    namespace: Option<String>,
    ifname: String,
}

/// Splits `[OPTS] NAMESPACE [IFNAME]` (`[OPTS] [IFNAME]` when the
/// namespace came with `--netns`: `namespace_given`).
fn parse_positional(args: &[String], namespace_given: bool) -> anyhow::Result<Positional> {
    let mut rest = args;
    let mut options = String::new();
    if let Some((first, tail)) = rest.split_first() {
        if first.contains('=') {
            options = first.clone();
            rest = tail;
        }
    }
    let mut namespace = None;
    if !namespace_given {
        let Some((first, tail)) = rest.split_first() else {
            anyhow::bail!(
                "a PID (or a namespace file with --netns-type=path or --netns PATH) is required"
            );
        };
        namespace = Some(first.clone());
        rest = tail;
    }
    let ifname = match rest {
        [] => DEFAULT_IFNAME.to_string(),
        [name] => name.clone(),
        [_, extra, ..] => anyhow::bail!("unexpected argument '{extra}'"),
    };
    Ok(Positional {
        options,
        namespace,
        ifname,
    })
}

/// The namespace to serve, from `--netns`, `--netns-type` and the
/// positional namespace argument.
fn target(args: &AttachArgs, namespace: Option<&str>) -> anyhow::Result<Target> {
    let path = |netns: PathBuf| Target::Path {
        netns,
        userns: args.userns.clone(),
    };
    match (
        &args.netns,
        args.netns_type.unwrap_or(NetnsType::Pid),
        namespace,
    ) {
        (Some(netns), _, _) => Ok(path(netns.clone())),
        (None, NetnsType::Path, Some(file)) => Ok(path(file.into())),
        (None, NetnsType::Pid, Some(pid)) => {
            if args.userns.is_some() {
                anyhow::bail!("--userns goes with a namespace file (--netns PATH or --netns-type=path): a PID names its own user namespace");
            }
            let pid = pid
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .with_context(|| format!("invalid PID '{pid}': expected a process ID (or --netns-type=path for a namespace file)"))?;
            Ok(Target::Pid(pid))
        }
        (None, _, None) => anyhow::bail!("a PID or --netns PATH is required"),
    }
}

/// slirp4netns's IPv6 prefix (its host is `fd00::2`, its DNS `fd00::3`),
/// where QEMU's `-netdev user` (and `slipway user`, `slipway run`) use
/// `fec0::`.
const SLIRP4NETNS_IPV6_PREFIX: &str = "fd00::";

/// The `-netdev user` option string with slirp4netns's `--cidr` and
/// `--enable-ipv6` folded in; each may not contradict the options.
/// slirp4netns's IPv6 prefix is the default.
fn options_with_flags(args: &AttachArgs, options: &str) -> anyhow::Result<String> {
    let keys: Vec<(&str, &str)> = options
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let mut all = options.to_string();
    if let Some(cidr) = &args.cidr {
        if keys.iter().any(|(k, _)| *k == "net") {
            anyhow::bail!("--cidr {cidr} and the options' net= both set the network: give one");
        }
        if !all.is_empty() {
            all.push(',');
        }
        all.push_str(&format!("net={cidr}"));
    }
    if args.enable_ipv6 && keys.iter().any(|&(k, v)| k == "ipv6" && v == "off") {
        anyhow::bail!("--enable-ipv6 contradicts the options' ipv6=off");
    }
    if !keys.iter().any(|(k, _)| *k == "ipv6-prefix") {
        if !all.is_empty() {
            all.push(',');
        }
        all.push_str("ipv6-prefix=");
        all.push_str(SLIRP4NETNS_IPV6_PREFIX);
    }
    Ok(all)
}

/// An outbound source address from `--outbound-addr[6]`: an address, or
/// an interface whose first address of the family (`v6`) is taken, as
/// slirp4netns resolves it. It must be of that family and one this host
/// can send from.
fn outbound_addr(spec: &str, v6: bool) -> anyhow::Result<IpAddr> {
    let (flag, family) = if v6 {
        ("--outbound-addr6", "IPv6")
    } else {
        ("--outbound-addr", "IPv4")
    };
    let ip = match spec.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv6() != v6 => anyhow::bail!("{flag} {spec}: not an {family} address"),
        Ok(ip) => ip,
        Err(_) => interface_addr(spec, v6)?.with_context(|| {
            format!("{flag} {spec}: neither an address nor an interface with an {family} address")
        })?,
    };
    std::net::UdpSocket::bind((ip, 0)).with_context(|| {
        format!("{flag} {spec}: {ip} is not an address this host can send from")
    })?;
    Ok(ip)
}

/// The first IPv4 (or, with `v6`, IPv6) address of interface `name`; not
/// an IPv6 link-local one, which needs a scope to be bound to.
fn interface_addr(name: &str, v6: bool) -> anyhow::Result<Option<IpAddr>> {
    let addrs = slipway_host::ifaddrs::of(name).context("listing the host's addresses")?;
    Ok(addrs.into_iter().find(|ip| match ip {
        IpAddr::V4(_) => !v6,
        IpAddr::V6(ip) => v6 && !ip.is_unicast_link_local(),
    }))
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
    let target = target(&args, pos.namespace.as_deref())?;
    let options = options_with_flags(&args, &pos.options)?;
    let ready = args
        .ready_fd
        .map(|fd| inherited_fd(fd, "--ready-fd"))
        .transpose()?;
    let exit = args
        .exit_fd
        .map(|fd| inherited_fd(fd, "--exit-fd"))
        .transpose()?;
    let mut cfg = stack_config(&args.stack, &options)?;
    cfg.dns_relay = !args.disable_dns;
    // outbound_addr checks the family, so each `if let` matches.
    if let Some(spec) = &args.outbound_addr {
        if let IpAddr::V4(ip) = outbound_addr(spec, false)? {
            cfg.outbound.v4 = Some(ip);
        }
    }
    if let Some(spec) = &args.outbound_addr6 {
        if let IpAddr::V6(ip) = outbound_addr(spec, true)? {
            cfg.outbound.v6 = Some(ip);
        }
    }
    let ipv4 = args.configure.then(|| namespace_ipv4(&cfg));
    let mut tap = tap_setup(&pos.ifname, &mut cfg, ipv4);
    if let Some(mac) = args.macaddress {
        if mac.is_multicast() {
            anyhow::bail!("--macaddress {mac}: a multicast address cannot be the tap's");
        }
        tap.mac = Some(mac.octets());
    }
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
        args.api_socket,
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
    use clap::Parser;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// `slipway attach ARGS`, parsed as the CLI would.
    fn attach(args: &[&str]) -> AttachArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            attach: AttachArgs,
        }
        Cli::try_parse_from(std::iter::once("attach").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .attach
    }

    fn target_of(args: &[&str]) -> anyhow::Result<Target> {
        let a = attach(args);
        let pos = parse_positional(&a.positional, a.netns.is_some())?;
        target(&a, pos.namespace.as_deref())
    }

    #[test]
    fn positionals_are_told_apart() {
        let p = parse_positional(&strings(&["1234"]), false).unwrap();
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.ifname.as_str(),
                p.options.as_str()
            ),
            (Some("1234"), "tap0", "")
        );
        let p = parse_positional(&strings(&["hostfwd=tcp::80-:80", "99", "eth0"]), false).unwrap();
        assert_eq!(
            (p.namespace.as_deref(), p.ifname.as_str()),
            (Some("99"), "eth0")
        );
        assert_eq!(p.options, "hostfwd=tcp::80-:80");
        let p = parse_positional(&strings(&["eth1"]), true).unwrap();
        assert_eq!((p.namespace, p.ifname.as_str()), (None, "eth1"));
        for (args, netns, needle) in [
            (vec![], false, "a PID (or a namespace file"),
            (vec!["1", "a", "b"], false, "unexpected argument 'b'"),
        ] {
            let err = parse_positional(&strings(&args), netns)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn namespaces_come_as_pids_or_files_the_slirp4netns_way_too() {
        assert_eq!(target_of(&["42"]).unwrap(), Target::Pid(42));
        let file = Target::Path {
            netns: "/run/netns/x".into(),
            userns: None,
        };
        assert_eq!(target_of(&["--netns", "/run/netns/x"]).unwrap(), file);
        assert_eq!(
            target_of(&["--netns-type=path", "/run/netns/x", "tap0"]).unwrap(),
            file
        );
        assert_eq!(
            target_of(&[
                "--netns-type",
                "path",
                "--userns-path=/proc/7/ns/user",
                "/proc/7/ns/net"
            ])
            .unwrap(),
            Target::Path {
                netns: "/proc/7/ns/net".into(),
                userns: Some("/proc/7/ns/user".into()),
            }
        );
        assert_eq!(
            target_of(&["--netns-type=pid", "42"]).unwrap(),
            Target::Pid(42)
        );
        for (args, needle) in [
            (vec!["tap0"], "invalid PID 'tap0'"),
            (vec!["0"], "invalid PID '0'"),
            (
                vec!["--userns", "/proc/1/ns/user", "42"],
                "--userns goes with a namespace file",
            ),
        ] {
            let err = target_of(&args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn outbound_addresses_are_addresses_or_interfaces_of_this_host() {
        assert_eq!(
            outbound_addr("127.0.0.2", false).unwrap(),
            IpAddr::from([127, 0, 0, 2])
        );
        assert_eq!(
            outbound_addr("lo", false).unwrap(),
            IpAddr::from([127, 0, 0, 1])
        );
        for (spec, v6, needle) in [
            (
                "nosuchif0",
                false,
                "neither an address nor an interface with an IPv4 address",
            ),
            (
                "nosuchif0",
                true,
                "neither an address nor an interface with an IPv6 address",
            ),
            (
                "192.0.2.1",
                false,
                "192.0.2.1 is not an address this host can send from",
            ),
            ("::1", false, "--outbound-addr ::1: not an IPv4 address"),
            (
                "127.0.0.1",
                true,
                "--outbound-addr6 127.0.0.1: not an IPv6 address",
            ),
        ] {
            let err = format!("{:#}", outbound_addr(spec, v6).unwrap_err());
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    /// The command line podman gives slirp4netns parses as it means.
    #[test]
    fn slirp4netns_command_lines_parse() {
        let a = attach(&[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-r",
            "3",
            "-e",
            "4",
            "--cidr=10.8.0.0/24",
            "--macaddress=52:54:00:AB:cd:01",
            "--netns-type=path",
            "/run/user/1000/netns/cni-1",
            "tap0",
        ]);
        assert!(a.configure && a.enable_ipv6 && a.stack.no_host_loopback);
        assert_eq!(
            (a.ready_fd, a.exit_fd, a.stack.mtu),
            (Some(3), Some(4), 65520)
        );
        assert_eq!(
            a.macaddress.map(|m| m.octets()),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 1])
        );
        assert_eq!(
            options_with_flags(&a, "").unwrap(),
            "net=10.8.0.0/24,ipv6-prefix=fd00::"
        );
        assert_eq!(
            options_with_flags(&a, "hostfwd=tcp::80-:80").unwrap(),
            "hostfwd=tcp::80-:80,net=10.8.0.0/24,ipv6-prefix=fd00::"
        );
        assert_eq!(
            options_with_flags(&a, "ipv6-prefix=2001:db8::").unwrap(),
            "ipv6-prefix=2001:db8::,net=10.8.0.0/24",
            "an explicit prefix stays"
        );
        let err = options_with_flags(&a, "net=10.9.0.0/24").unwrap_err();
        assert!(
            err.to_string()
                .contains("--cidr 10.8.0.0/24 and the options' net="),
            "{err}"
        );
        let err = options_with_flags(&a, "ipv6=off").unwrap_err();
        assert!(
            err.to_string().contains("--enable-ipv6 contradicts"),
            "{err}"
        );
        let short = attach(&["-c", "-m", "9000", "-6", "1234"]);
        assert!(short.configure && short.enable_ipv6);
        assert_eq!(short.stack.mtu, 9000);
    }
}
