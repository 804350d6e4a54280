//! `slipway user`: one user-mode network in this process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args};
use slipway_usermode::attach::AttachSpec;
use slipway_usermode::config::{Limits, StackConfig, MAX_MTU, MIN_MTU};
use slipway_usermode::event_loop::{self, RunOptions};
use slipway_usermode::options;

/// Arguments of `slipway user`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("attach").args(["socket", "connect_socket", "listen_tcp", "dgram"])))]
pub struct UserArgs {
    /// Listen on a unix stream socket for QEMU
    /// `-netdev stream,server=off,addr.type=unix,addr.path=PATH`. Several
    /// VMs may connect; they share one LAN (and the NAT and forwards).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Connect to a unix stream socket QEMU listens on (`-netdev stream,server=on,...`).
    #[arg(long, value_name = "PATH")]
    pub connect_socket: Option<PathBuf>,

    /// Listen on a TCP address for QEMU `-netdev stream` (inet) or
    /// `-netdev socket,connect=`. Several VMs may connect; they share one LAN.
    /// HOST is an address or a host name (its first address is used).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen_tcp)]
    pub listen_tcp: Option<SocketAddr>,

    /// Bind a unix datagram socket for QEMU `-netdev dgram` (remote.path=PATH).
    /// Several VMs may send to it (each with its own local.path); they share one LAN.
    #[arg(long, value_name = "PATH")]
    pub dgram: Option<PathBuf>,

    /// Serve Prometheus metrics (`GET /metrics`: frames, bytes, drops by
    /// reason, flows, leases, DNS queries) on HOST:PORT or on the unix
    /// socket PATH (mode 0600).
    #[arg(long, value_name = "HOST:PORT|unix:PATH", value_parser = parse_metrics_addr)]
    pub metrics: Option<slipway_usermode::metrics::MetricsAddr>,

    /// Serve `--socket PATH` as a vhost-user backend for QEMU's
    /// `-chardev socket,path=PATH -netdev vhost-user,chardev=...` (guest
    /// memory shared with `memory-backend-memfd,share=on`): the VM's
    /// virtio-net rings are read and written in place. One VM; slipway
    /// exits when it disconnects.
    #[arg(long, requires = "socket")]
    pub vhost_user: bool,

    /// After the last VM disconnects, wait for the next one instead of exiting
    /// (listening and datagram modes; in connect mode slipway always exits).
    #[arg(long)]
    pub keep_listening: bool,

    /// The sandbox.
    #[command(flatten)]
    pub sandbox: SandboxArgs,

    /// Print the system calls the sandbox allows (count, then one per line) and exit.
    #[arg(long)]
    pub print_sandbox: bool,

    /// The network itself.
    #[command(flatten)]
    pub stack: StackArgs,

    /// QEMU `-netdev user` option string, e.g. `net=10.0.2.0/24,hostfwd=tcp::5022-:22`.
    #[arg(value_name = "OPTS")]
    pub options: Option<String>,
}

/// The sandbox's options, shared by `slipway user`, `run` and `attach`
/// (docs/sandbox.md).
#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// Run without the sandbox (seccomp allowlist, Landlock, no
    /// capabilities, no root) that confines the stack once set up.
    #[arg(long)]
    pub no_sandbox: bool,

    /// When started as root, the user the sandbox switches to (`root` keeps
    /// uid 0, still without capabilities: for datagram VMs whose sockets
    /// only root may reach, since later VMs are reached after the switch).
    #[arg(long, value_name = "USER", default_value = "nobody")]
    pub runas: String,

    /// Refuse to run unless the whole sandbox applies: a kernel without
    /// Landlock, or (with --dgram) without the user or mount namespaces
    /// that limit unix datagrams to the socket's directory (otherwise
    /// warnings), is then an error.
    #[arg(long, conflicts_with = "no_sandbox")]
    pub require_sandbox: bool,
}

impl SandboxArgs {
    /// The sandbox to apply, or `None` with `--no-sandbox`.
    pub fn sandbox(&self) -> Option<slipway_sandbox::Sandbox> {
        let mut sandbox = slipway_sandbox::Sandbox::new();
        sandbox
            .runas(self.runas.clone())
            .require(self.require_sandbox);
        (!self.no_sandbox).then_some(sandbox)
    }
}

/// Options of the network itself, shared by `slipway user`, `run` and `attach`.
#[derive(Args, Debug)]
pub struct StackArgs {
    /// Upstream DNS server, ADDR or ADDR:PORT (port 53 unless given; an
    /// IPv6 address with a port in brackets, `[::1]:5353`), repeatable;
    /// default: the nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_name = "ADDR[:PORT]", value_parser = parse_dns_upstream)]
    pub dns_upstream: Vec<SocketAddr>,

    /// Link MTU, advertised to the guest by DHCP (68 to 65520).
    #[arg(short = 'm', long, value_name = "N", default_value_t = 1500)]
    pub mtu: usize,

    /// Legacy QEMU `-redir` forward, `[tcp|udp]:hostport:[guestaddr]:guestport` (repeatable).
    #[arg(long, value_name = "SPEC")]
    pub redir: Vec<String>,

    /// Most TCP connections translated at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_tcp_flows as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tcp_flows: u32,

    /// Most UDP flows at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_udp_flows as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_udp_flows: u32,

    /// Seconds before an idle UDP flow is closed.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().udp_idle_timeout_secs, value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_timeout: u64,

    /// Bytes the stack may hold for one flow before the guest's window closes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_flow_buffer as u64, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_flow_buffer: u64,

    /// Most TFTP transfers at once (`tftp=`).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_tftp_transfers as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tftp_transfers: u32,

    /// Most DNS queries awaiting an upstream answer at once (1 to 4096).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_dns_queries as u32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_dns_queries: u32,

    /// Keep the guest off the host's loopback: the host address is not
    /// mapped to it, and traffic addressed to 127/8, ::1 or 0.0.0.0 is
    /// refused (TCP: RST; UDP and ICMP echo: dropped, counted
    /// `host-loopback`).
    #[arg(long, visible_alias = "disable-host-loopback")]
    pub no_host_loopback: bool,

    /// Serve the runtime control API on a unix socket at PATH (mode 0600;
    /// see docs/usermode-api.md and `slipway ctl`).
    #[arg(long, value_name = "PATH")]
    pub api: Option<PathBuf>,

    /// After a wake-up that moved data, keep polling without sleeping for
    /// up to N microseconds (0 to 1000; 0, the default: off). Cuts a
    /// request/response exchange's latency at the cost of CPU time.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=slipway_usermode::busy_poll::MAX_BUSY_POLL.as_micros() as u64))]
    pub busy_poll_us: u64,
}

/// `--dns-upstream`: an address with or without a port (53), as in
/// resolv.conf and dnsmasq's `--server`.
fn parse_dns_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| "not an IP address, nor ADDR:PORT ([ADDR]:PORT for IPv6)".into())
}

/// `--metrics`: `unix:PATH`, or a TCP `HOST:PORT` as `--listen-tcp` takes it.
pub fn parse_metrics_addr(text: &str) -> Result<slipway_usermode::metrics::MetricsAddr, String> {
    use slipway_usermode::metrics::MetricsAddr;
    match text.strip_prefix("unix:") {
        Some("") => Err("unix: needs a socket path".into()),
        Some(path) => Ok(MetricsAddr::Unix(path.into())),
        None => parse_listen_tcp(text).map(MetricsAddr::Tcp),
    }
}

/// `--listen-tcp`: `ADDR:PORT`, or `NAME:PORT` with a host name resolved
/// now, before the sandbox (the first address the resolver gives, as
/// QEMU's own listeners take it).
fn parse_listen_tcp(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected HOST:PORT".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port '{port}' is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("expected HOST:PORT (the host is empty)".into());
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("cannot resolve host '{host}': {e}"))?
        .next()
        .ok_or_else(|| format!("host '{host}' has no address"))
}

/// The validated stack configuration of a `-netdev user` option string
/// (`opts`, may be empty) and the flags `args`.
pub fn stack_config(args: &StackArgs, opts: &str) -> anyhow::Result<StackConfig> {
    let mut cfg = options::parse_options(opts).context("invalid -netdev user options")?;
    if !(MIN_MTU..=MAX_MTU).contains(&args.mtu) {
        anyhow::bail!(
            "invalid value '{}' for '--mtu': must be between {MIN_MTU} and {MAX_MTU}",
            args.mtu
        );
    }
    cfg.mtu = args.mtu;
    cfg.limits = Limits {
        max_tcp_flows: args.max_tcp_flows as usize,
        max_udp_flows: args.max_udp_flows as usize,
        udp_idle_timeout_secs: args.udp_timeout,
        max_flow_buffer: usize::try_from(args.max_flow_buffer).unwrap_or(usize::MAX),
        max_tftp_transfers: args.max_tftp_transfers as usize,
        max_dns_queries: args.max_dns_queries as usize,
        ..Limits::default()
    };
    cfg.host_loopback = !args.no_host_loopback;
    cfg.busy_poll = std::time::Duration::from_micros(args.busy_poll_us);
    for spec in &args.redir {
        let fwd = options::parse_redir(spec, &cfg)?;
        cfg.hostfwd.push(fwd);
    }
    cfg.dns_upstreams = if args.dns_upstream.is_empty() {
        match slipway_usermode::config::system_dns_upstreams() {
            Ok(upstreams) => upstreams,
            Err(err) => {
                // The stack reports the missing upstream once, as an error.
                tracing::debug!(%err, "reading the host's resolvers");
                Vec::new()
            }
        }
    } else {
        args.dns_upstream.clone()
    };
    Ok(cfg)
}

/// Runs the stack until the VM disconnects or a signal arrives.
pub fn run(args: UserArgs) -> anyhow::Result<i32> {
    let cfg = stack_config(&args.stack, args.options.as_deref().unwrap_or(""))?;
    let mut sandbox = slipway_sandbox::Sandbox::new();
    sandbox.runas(args.sandbox.runas.clone());
    if args.vhost_user {
        sandbox.allow_vhost_user();
    }
    if args.print_sandbox {
        // What these options would allow (a TFTP root adds file reads).
        let sandbox = event_loop::sandbox_for(sandbox, &cfg, args.stack.api.as_deref());
        let calls = sandbox.syscalls();
        let mut text = format!("{} system calls allowed\n", calls.len());
        for call in calls {
            text.push_str(call.name());
            text.push('\n');
        }
        // A reader that stops early (`| head`) is not an error.
        use std::io::Write;
        match std::io::stdout().lock().write_all(text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing to standard output")
            }
            _ => return Ok(0),
        }
    }
    if args.vhost_user && args.socket.is_none() {
        anyhow::bail!(
            "--vhost-user serves --socket PATH (not --connect-socket, --listen-tcp or --dgram)"
        );
    }
    let spec = if let Some(p) = args.socket {
        if args.vhost_user {
            AttachSpec::VhostUser(p)
        } else {
            AttachSpec::UnixListen(p)
        }
    } else if let Some(p) = args.connect_socket {
        AttachSpec::UnixConnect(p)
    } else if let Some(a) = args.listen_tcp {
        AttachSpec::TcpListen(a)
    } else if let Some(p) = args.dgram {
        AttachSpec::UnixDgram(p)
    } else {
        anyhow::bail!("one of --socket, --connect-socket, --listen-tcp or --dgram is required");
    };
    event_loop::run(
        cfg,
        spec,
        RunOptions {
            keep_listening: args.keep_listening,
            api: args.stack.api,
            metrics: args.metrics,
            // Short ones for the tests of the bound.
            metrics_timeout: slipway_host::env_millis("SLIPWAY_METRICS_TIMEOUT_MS"),
            sandbox: args.sandbox.sandbox(),
            ..RunOptions::default()
        },
    )?;
    Ok(0)
}
