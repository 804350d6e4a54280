//! slipway as `passt`: passt's command line (what libvirt 9.0 and later
//! pass, and the options users type), run by the same stack as `slipway
//! user`.
//!
//! Theory of operation: [`PasstArgs`] takes passt's options; [`plan`]
//! turns them, with the namespace's routes, addresses and resolvers, into
//! passt's model of the guest's network (a [`StackConfig`] with
//! [`CopiedNetwork`]: the guest gets the host's address and prefix, the
//! default gateway maps to the host's loopback, DHCP hands out the host's
//! resolvers) and the stack's forwards from the `-t`/`-u` specifications
//! ([`forwards`]: per family served, as passt listens). [`run`] then serves QEMU's
//! `-netdev stream` socket, in the background unless `--foreground`: the
//! parent waits for the stack's ready signal (a pipe, the stack's
//! `ready_fd`), writes the `--pid` file with the daemon's PID, and exits,
//! as passt does; an error before that is the parent's exit status.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use slipway_usermode::attach::AttachSpec;
use slipway_usermode::config::{
    CopiedNetwork, ForwardProtocol, HostForward, StackConfig, MAX_MTU, MIN_MTU,
};
use slipway_usermode::event_loop::{self, RunOptions};
use slipway_usermode::ns_forward::NsForwardSpec;
use slipway_usermode::port_watch::PortWatchSpec;

mod forwards;
mod v6;

/// passt's options (passt(1)); the ones slipway does not take are refused
/// by name. Differences are listed in README.md ("slipway as passt").
#[derive(Args, Debug)]
pub struct PasstArgs {
    /// Log debug messages too.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Log every packet (implies --debug).
    #[arg(long)]
    pub trace: bool,
    /// Log errors only.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Stay in the foreground (default: fork into the background once serving).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Log to standard error too (slipway logs there unless daemonized).
    #[arg(short = 'e', long)]
    pub stderr: bool,
    /// Log to this file instead of standard error.
    #[arg(short = 'l', long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Largest log file size (accepted; slipway does not rotate the log).
    #[arg(long, value_name = "SIZE")]
    pub log_size: Option<u64>,
    /// The user to switch to when started as root (default: nobody).
    #[arg(long, value_name = "LOGIN", default_value = "nobody")]
    pub runas: String,
    /// Write the serving process's PID to this file.
    #[arg(short = 'P', long, value_name = "FILE")]
    pub pid: Option<PathBuf>,
    /// The MTU DHCP advertises (default 65520).
    #[arg(short = 'm', long, value_name = "MTU")]
    pub mtu: Option<usize>,
    /// The guest's IPv4 address (default: the host's, on the default-route interface).
    #[arg(short = 'a', long, value_name = "ADDR")]
    pub address: Vec<IpAddr>,
    /// The guest's netmask, dotted or as a prefix length (default: the host's).
    #[arg(short = 'n', long, value_name = "MASK")]
    pub netmask: Option<String>,
    /// The MAC address passt uses toward the guest (accepted and checked;
    /// slipway keeps its own, see README).
    #[arg(short = 'M', long, value_name = "ADDR")]
    pub mac_addr: Option<slipway_host::MacAddr>,
    /// The guest's default gateway (default: the host's).
    #[arg(short = 'g', long, value_name = "ADDR")]
    pub gateway: Vec<IpAddr>,
    /// The host interface to copy addresses and routes from.
    #[arg(short = 'i', long, value_name = "NAME")]
    pub interface: Option<String>,
    /// The source address of outbound flows.
    #[arg(short = 'o', long, value_name = "ADDR")]
    pub outbound: Vec<IpAddr>,
    /// DNS resolvers instead of /etc/resolv.conf's (`none`: no DNS at all).
    #[arg(short = 'D', long = "dns", value_name = "ADDR")]
    pub dns: Vec<String>,
    /// Map this address, as the guest sees it, to the first resolver (port 53).
    #[arg(long, value_name = "ADDR")]
    pub dns_forward: Vec<IpAddr>,
    /// DNS search list instead of /etc/resolv.conf's (`none`: no list).
    #[arg(short = 'S', long, value_name = "LIST", num_args = 1)]
    pub search: Option<String>,
    /// Do not hand out DNS resolvers by DHCP.
    #[arg(long)]
    pub no_dhcp_dns: bool,
    /// Do not hand out the DNS search list by DHCP.
    #[arg(long)]
    pub no_dhcp_search: bool,
    /// The gateway address is the real gateway, not the host's loopback.
    #[arg(long)]
    pub no_map_gw: bool,
    /// The address that maps to the host's loopback (newer passt; default the gateway).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_map_gw")]
    pub map_host_loopback: Option<IpAddr>,
    /// IPv4 only (default: both families where the host has them).
    #[arg(short = '4', long, conflicts_with = "ipv6_only")]
    pub ipv4_only: bool,
    /// IPv6 only.
    #[arg(short = '6', long)]
    pub ipv6_only: bool,
    /// The UNIX domain socket QEMU connects to (default: the first free of
    /// /tmp/passt_1.socket to /tmp/passt_64.socket); `--socket-path` is
    /// the vhost-user backend programs' name for it.
    #[arg(short = 's', long, alias = "socket-path", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Serve the socket as a vhost-user backend (QEMU's `-netdev
    /// vhost-user`, guest memory shared) instead of `-netdev stream`.
    #[arg(long)]
    pub vhost_user: bool,
    /// Exit once the first client goes away.
    #[arg(short = '1', long)]
    pub one_off: bool,
    /// TCP ports forwarded to the guest (passt's specification, repeatable).
    #[arg(short = 't', long = "tcp-ports", value_name = "SPEC")]
    pub tcp_ports: Vec<String>,
    /// UDP ports forwarded to the guest (passt's specification, repeatable).
    #[arg(short = 'u', long = "udp-ports", value_name = "SPEC")]
    pub udp_ports: Vec<String>,
    /// Run without the sandbox (slipway's option).
    #[arg(long)]
    pub no_sandbox: bool,
}

impl PasstArgs {
    /// The sandbox to apply, or `None` with `--no-sandbox`.
    pub(crate) fn sandbox(&self) -> Option<slipway_sandbox::Sandbox> {
        let mut sandbox = slipway_sandbox::Sandbox::new();
        sandbox.runas(self.runas.clone());
        (!self.no_sandbox).then_some(sandbox)
    }
}

/// What [`plan`] reads from the namespace: its routes, an interface's
/// addresses, the resolvers and search list of /etc/resolv.conf, and
/// the kernel's ephemeral port range. A trait so that [`plan`] is tested
/// on made-up hosts.
pub trait HostView {
    /// The IPv4 routing table.
    fn routes(&self) -> anyhow::Result<Vec<slipway_host::routes::Route>>;
    /// The IPv4 addresses of interface `name`.
    fn addresses(&self, name: &str) -> anyhow::Result<Vec<Ipv4Addr>>;
    /// The IPv6 routing table.
    fn routes6(&self) -> anyhow::Result<Vec<slipway_host::routes6::Route6>>;
    /// The IPv6 addresses of interface `name`.
    fn addresses6(&self, name: &str) -> anyhow::Result<Vec<std::net::Ipv6Addr>>;
    /// The index of interface `name`, if it exists.
    fn index(&self, name: &str) -> Option<u32>;
    /// /etc/resolv.conf's nameservers.
    fn resolvers(&self) -> Vec<IpAddr>;
    /// /etc/resolv.conf's search list.
    fn search(&self) -> Vec<String>;
    /// `net.ipv4.ip_local_port_range`.
    fn ephemeral_ports(&self) -> std::ops::RangeInclusive<u16>;
    /// Whether forward `fwd`'s listener could bind now (for `all`: passt
    /// skips ports that are taken).
    fn can_bind(&self, fwd: &HostForward) -> bool;
}

/// The namespace this process runs in.
pub struct ThisHost;

impl HostView for ThisHost {
    fn routes(&self) -> anyhow::Result<Vec<slipway_host::routes::Route>> {
        slipway_host::routes::list_v4().context("reading /proc/net/route")
    }

    fn addresses(&self, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
        addresses_of(name)
    }

    fn routes6(&self) -> anyhow::Result<Vec<slipway_host::routes6::Route6>> {
        slipway_host::routes6::list_v6().context("reading /proc/net/ipv6_route")
    }

    fn addresses6(&self, name: &str) -> anyhow::Result<Vec<std::net::Ipv6Addr>> {
        addresses_of(name)
    }

    fn index(&self, name: &str) -> Option<u32> {
        slipway_hostnet::netlink::link_index(name)
    }

    fn resolvers(&self) -> Vec<IpAddr> {
        slipway_usermode::config::system_dns_upstreams()
            .map(|u| u.into_iter().map(|s| s.ip()).collect())
            .unwrap_or_default()
    }

    fn search(&self) -> Vec<String> {
        slipway_dns::system_search_domains().unwrap_or_default()
    }

    fn ephemeral_ports(&self) -> std::ops::RangeInclusive<u16> {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().map(|p| p.parse::<u16>().ok());
                Some(it.next()??..=it.next()??)
            })
            .unwrap_or(32768..=60999)
    }

    fn can_bind(&self, fwd: &HostForward) -> bool {
        use slipway_usermode::iface::listen;
        match fwd.protocol {
            ForwardProtocol::Tcp => listen::tcp_listener(fwd).is_ok(),
            ForwardProtocol::Udp => listen::udp_socket(fwd).is_ok(),
        }
    }
}

/// An address family, for what passt does the same way in both: its
/// options that take one address per family, the interface addresses
/// copied, the resolvers advertised.
pub(crate) trait Family: Copy + PartialEq + Sized {
    /// "IPv4" or "IPv6", for messages.
    const NAME: &'static str;
    /// `ip` if it is of this family.
    fn of(ip: IpAddr) -> Option<Self>;
}

impl Family for Ipv4Addr {
    const NAME: &'static str = "IPv4";
    fn of(ip: IpAddr) -> Option<Ipv4Addr> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
}

impl Family for Ipv6Addr {
    const NAME: &'static str = "IPv6";
    fn of(ip: IpAddr) -> Option<Ipv6Addr> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
}

/// The one value of family `A` of a repeatable passt option (passt takes
/// one per address family).
pub(crate) fn one_of<A: Family>(values: &[IpAddr], option: &str) -> anyhow::Result<Option<A>> {
    let mut of_family = values.iter().filter_map(|v| A::of(*v));
    let first = of_family.next();
    if of_family.next().is_some() {
        anyhow::bail!("{option} given twice for {}", A::NAME);
    }
    Ok(first)
}

/// The addresses of family `A` of this host's interface `name`.
fn addresses_of<A: Family>(name: &str) -> anyhow::Result<Vec<A>> {
    let all = slipway_host::ifaddrs::of(name).context("listing interface addresses")?;
    Ok(all.into_iter().filter_map(A::of).collect())
}

/// The resolvers of family `A` advertised to the guest: `resolvers` in
/// order without repeats, a loopback one replaced by `gateway` (the guest
/// reaches the host's loopback through it) if `map_gw`, else left out.
pub(crate) fn advertised<A: Family>(resolvers: &[IpAddr], gateway: A, map_gw: bool) -> Vec<A> {
    let mut list = Vec::new();
    for r in resolvers {
        let Some(a) = A::of(*r) else { continue };
        let advertised = if r.is_loopback() {
            map_gw.then_some(gateway)
        } else {
            Some(a)
        };
        if let Some(a) = advertised.filter(|a| !list.contains(a)) {
            list.push(a);
        }
    }
    list
}

/// The prefix length of `--netmask` (dotted or a number of bits).
fn parse_netmask(text: &str) -> anyhow::Result<u8> {
    if let Ok(bits) = text.parse::<u8>() {
        if bits <= 32 {
            return Ok(bits);
        }
    } else if let Ok(mask) = text.parse::<Ipv4Addr>() {
        if let Some(bits) = slipway_host::prefix_of_netmask(mask) {
            return Ok(bits);
        }
    }
    anyhow::bail!(
        "invalid --netmask '{text}': expected a prefix length (0 to 32) or a dotted netmask"
    )
}

/// The prefix of an address's class (RFC 4632's "CIDR block"), passt's
/// fallback when the host has no address matching the assigned one.
fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// The interface addresses and routes are copied from: `--interface`, or
/// the one with the first IPv4 default route.
pub fn template_ifname(args: &PasstArgs, host: &dyn HostView) -> anyhow::Result<Option<String>> {
    let routes = host.routes()?;
    Ok(args
        .interface
        .clone()
        .or_else(|| slipway_host::routes::default_v4(&routes, None).map(|r| r.ifname.clone())))
}

/// passt's IPv4 side, planned: the guest's address and prefix, the
/// gateway, the network.
struct V4Plan {
    address: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
    net: Ipv4Addr,
}

/// The IPv4 side passt's options describe on `host`.
fn plan_v4(args: &PasstArgs, host: &dyn HostView) -> anyhow::Result<V4Plan> {
    let routes = host.routes()?;
    let default = slipway_host::routes::default_v4(&routes, args.interface.as_deref());
    let ifname = args
        .interface
        .clone()
        .or_else(|| default.map(|r| r.ifname.clone()));
    let connected = |addr: Ipv4Addr| {
        routes.iter().find(|r| {
            r.gateway.is_none()
                && !r.is_default()
                && ifname.as_deref().is_none_or(|n| r.ifname == n)
                && r.contains(addr)
        })
    };
    let address = match one_of::<Ipv4Addr>(&args.address, "--address")? {
        Some(a) => a,
        None => {
            let Some(name) = &ifname else {
                anyhow::bail!("no IPv4 default route to copy the guest's address from: give --address and --gateway (or --interface)");
            };
            let addrs = host.addresses(name)?;
            *addrs
                .iter()
                .find(|a| connected(**a).is_some())
                .or(addrs.first())
                .with_context(|| {
                    format!("interface {name} has no IPv4 address to copy: give --address")
                })?
        }
    };
    let prefix_len = match &args.netmask {
        Some(mask) => parse_netmask(mask)?,
        None => connected(address)
            .and_then(|r| r.prefix_len())
            .unwrap_or_else(|| classful_prefix(address)),
    };
    let gateway = match one_of::<Ipv4Addr>(&args.gateway, "--gateway")? {
        Some(g) => g,
        None => default.and_then(|r| r.gateway).with_context(|| {
            "no IPv4 default route to copy the guest's gateway from: give --gateway"
        })?,
    };
    let mask = u32::from(slipway_host::netmask_v4(prefix_len));
    let net = Ipv4Addr::from(u32::from(address) & mask);
    let in_subnet = |a: Ipv4Addr| u32::from(a) & mask == u32::from(net);
    if prefix_len > 30 || address == net || !in_subnet(gateway) || gateway == address {
        anyhow::bail!(
            "the guest's address {address}/{prefix_len} and gateway {gateway} do not make a network: \
             the gateway must be another address of the guest's subnet (of at most /30)"
        );
    }
    Ok(V4Plan {
        address,
        prefix_len,
        gateway,
        net,
    })
}

/// The stack configuration passt's options describe on `host`.
pub fn plan(args: &PasstArgs, host: &dyn HostView) -> anyhow::Result<StackConfig> {
    let mut cfg =
        slipway_usermode::options::parse_options("ipv6=off").context("the base configuration")?;
    // `-6`: no IPv4 at all (the stack drops it); the IPv4 fields keep
    // the base configuration's values, which nothing then uses.
    let V4Plan {
        address,
        prefix_len,
        gateway,
        net,
    } = if args.ipv6_only {
        V4Plan {
            address: cfg.dhcp_start,
            prefix_len: cfg.prefix_len,
            gateway: cfg.host,
            net: cfg.net,
        }
    } else {
        plan_v4(args, host)?
    };
    cfg.ipv4 = !args.ipv6_only;
    let map_gw = !args.no_map_gw;
    let host_addr = match args.map_host_loopback {
        None => gateway,
        Some(IpAddr::V4(a)) if a == gateway => a,
        // The IPv6 one is checked with the IPv6 side.
        Some(IpAddr::V6(_)) => gateway,
        Some(a) => anyhow::bail!(
            "--map-host-loopback {a}: slipway maps the gateway address only (README: slipway as passt)"
        ),
    };

    // Resolvers: -D, else /etc/resolv.conf's; `-D none`: no DNS at all.
    let resolvers: Vec<IpAddr> = if args.dns.iter().any(|d| d == "none") {
        Vec::new()
    } else if args.dns.is_empty() {
        host.resolvers()
    } else {
        args.dns
            .iter()
            .map(|d| {
                d.parse::<IpAddr>()
                    .with_context(|| format!("invalid --dns '{d}': expected an address or 'none'"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let dns_forward = one_of::<Ipv4Addr>(&args.dns_forward, "--dns-forward")?;
    let dhcp_dns: Vec<Ipv4Addr> = if args.no_dhcp_dns {
        Vec::new()
    } else if let Some(fwd) = dns_forward {
        vec![fwd]
    } else {
        advertised(&resolvers, gateway, map_gw)
    };
    let search = if args.no_dhcp_search {
        Vec::new()
    } else {
        match args.search.as_deref() {
            Some("none") => Vec::new(),
            Some(list) => list.split_whitespace().map(str::to_owned).collect(),
            None => host.search(),
        }
    };

    cfg.net = net;
    cfg.prefix_len = prefix_len;
    cfg.host = host_addr;
    cfg.dhcp_start = address;
    // Without --dns-forward, the DNS address is the gateway's (port 53 on
    // it reaches the host's loopback like any other port).
    cfg.dns = dns_forward.unwrap_or(gateway);
    cfg.dns_relay = dns_forward.is_some();
    cfg.dns_upstreams = resolvers
        .iter()
        .map(|ip| SocketAddr::new(*ip, 53))
        .collect();
    cfg.dnssearch = search;
    cfg.outbound.v4 = one_of::<Ipv4Addr>(&args.outbound, "--outbound")?;
    cfg.mtu = args.mtu.unwrap_or(MAX_MTU);
    if !(MIN_MTU..=MAX_MTU).contains(&cfg.mtu) {
        anyhow::bail!(
            "invalid --mtu {}: must be between {MIN_MTU} and {MAX_MTU}",
            cfg.mtu
        );
    }
    let v6 = v6::plan_v6(args, host, map_gw, &resolvers)?;
    if let Some(v6) = &v6 {
        cfg.ipv6 = v6.config.clone();
        cfg.outbound.v6 = one_of(&args.outbound, "--outbound")?;
    }
    if args.dns_forward.iter().any(IpAddr::is_ipv6) {
        cfg.dns_relay = true;
    }
    cfg.copied = Some(CopiedNetwork {
        guest: address,
        dhcp_dns,
        map_gw,
        guest6: v6.as_ref().map(|v| v.guest),
        link6: v6.as_ref().and_then(|v| v.link),
        dns6: v6.map(|v| v.dns).unwrap_or_default(),
    });
    cfg.hostfwd = forwards::plan_forwards(args, &cfg, host)?;
    Ok(cfg)
}

/// passt's default socket: the first of /tmp/passt_1.socket to
/// /tmp/passt_64.socket that nothing serves (a stale file is replaced).
fn probe_socket() -> anyhow::Result<PathBuf> {
    for n in 1..=64 {
        let path = PathBuf::from(format!("/tmp/passt_{n}.socket"));
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // Only a socket file nobody listens on is replaced.
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing stale {}", path.display()))?;
                    return Ok(path);
                }
            }
            Err(_) => continue,
        }
    }
    anyhow::bail!(
        "no free socket path from /tmp/passt_1.socket to /tmp/passt_64.socket: give --socket"
    )
}

/// The level of passt's `-d`, `--trace`, `-q`.
pub(crate) fn log_level(args: &PasstArgs) -> &'static str {
    if args.trace {
        "trace"
    } else if args.debug {
        "debug"
    } else if args.quiet {
        "error"
    } else {
        "info"
    }
}

/// Writes `pid` to the `--pid` file (replaced whole, never half-written).
pub(crate) fn write_pid(path: &Path, pid: u32) -> anyhow::Result<()> {
    slipway_host::atomic::write(path, format!("{pid}\n").as_bytes())
        .with_context(|| format!("writing the PID file {}", path.display()))
}

/// Opens the `--log-file` (appended to), if any.
pub(crate) fn open_log(args: &PasstArgs) -> anyhow::Result<Option<File>> {
    args.log_file
        .as_ref()
        .map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the log file {}", path.display()))
        })
        .transpose()
}

/// Refuses `auto` in `-t`/`-u`: forwarding what a namespace listens on
/// is pasta's (passt says so too).
fn refuse_auto(args: &PasstArgs) -> anyhow::Result<()> {
    for (option, specs) in [
        ("--tcp-ports", &args.tcp_ports),
        ("--udp-ports", &args.udp_ports),
    ] {
        if specs.iter().any(|s| s == "auto") {
            anyhow::bail!("{option} auto: 'auto' port forwarding is only allowed for pasta");
        }
    }
    Ok(())
}

/// Runs slipway as passt (see the module header); returns the exit status.
pub fn run(args: PasstArgs) -> anyhow::Result<i32> {
    refuse_auto(&args)?;
    let log = open_log(&args)?;
    let cfg = plan(&args, &ThisHost)?;
    let socket = match &args.socket {
        Some(p) => p.clone(),
        None => probe_socket()?,
    };
    let copied = cfg.copied.clone().context("a copied network")?;
    let spec = if args.vhost_user {
        AttachSpec::VhostUser(socket)
    } else {
        AttachSpec::UnixListen(socket)
    };
    let ipv6 = match copied.guest6 {
        Some(g) => format!(
            "; IPv6: {g}/{} router {} dns {:?}",
            cfg.ipv6.prefix_len, cfg.ipv6.host, copied.dns6
        ),
        None => "; IPv6 off".to_owned(),
    };
    let summary = format!(
        "DHCP: assign {}/{} router {} dns {:?}{ipv6}; serving the {spec}",
        copied.guest, cfg.prefix_len, cfg.host, copied.dhcp_dns,
    );
    start(&args, cfg, spec, Vec::new(), (None, None), log, &summary)
}

/// Serves `spec` with `cfg` as passt and pasta do: in the foreground with
/// `-f`, otherwise forked into the background once serving (the `--pid`
/// file names the background process); stops when one of `exit_fds`
/// fires (pasta's namespace process); pasta's `-t auto` and `-T`/`-U`
/// come with it.
pub(crate) fn start(
    args: &PasstArgs,
    cfg: StackConfig,
    spec: AttachSpec,
    exit_fds: Vec<std::os::fd::RawFd>,
    (port_watch, ns_forward): (Option<PortWatchSpec>, Option<NsForwardSpec>),
    log: Option<File>,
    summary: &str,
) -> anyhow::Result<i32> {
    let sandbox = args.sandbox();
    let options = |ready_fd| RunOptions {
        keep_listening: !args.one_off,
        sandbox,
        ready_fd,
        exit_fds,
        port_watch,
        ns_forward,
        ..RunOptions::default()
    };
    if args.foreground {
        crate::init_log_writer(log_level(args), log);
        tracing::info!("{summary}");
        if let Some(pid) = &args.pid {
            write_pid(pid, std::process::id())?;
        }
        event_loop::run(cfg, spec, options(None))?;
        return Ok(0);
    }
    let (mut ready_r, ready_w) = std::io::pipe().context("creating a pipe")?;
    let (mut error_r, error_w) = std::io::pipe().context("creating a pipe")?;
    // SAFETY: fork in a process with one thread (nothing has started
    // another yet); the child goes on with its own copy.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("forking into the background"),
        0 => {
            drop((ready_r, error_r));
            // SAFETY: setsid has no memory effects.
            unsafe { libc::setsid() };
            let status = daemon(
                cfg,
                spec,
                log,
                args,
                summary,
                |fd| options(Some(fd)),
                (ready_w, error_w),
            );
            std::process::exit(status);
        }
        child => {
            drop((ready_w, error_w));
            let mut byte = [0u8; 1];
            if ready_r.read(&mut byte).unwrap_or(0) == 1 {
                if let Some(pid) = &args.pid {
                    write_pid(pid, child as u32)?;
                }
                return Ok(0);
            }
            let mut error = String::new();
            let _ = error_r.read_to_string(&mut error);
            let mut status = 0;
            // SAFETY: waits for our own child into a local.
            unsafe { libc::waitpid(child, &mut status, 0) };
            if error.is_empty() {
                anyhow::bail!("the background process ended before serving (status {status})");
            }
            anyhow::bail!("{}", error.trim_end())
        }
    }
}

/// The background process: standard input and output on /dev/null, the
/// log in the log file (or nowhere: nobody reads a daemon's standard
/// error, and a full pipe would stop it; and whoever started passt waits
/// for the end of its output), an error before serving to the parent
/// through `error_w`.
fn daemon(
    cfg: StackConfig,
    spec: AttachSpec,
    log: Option<File>,
    args: &PasstArgs,
    summary: &str,
    options: impl FnOnce(std::os::fd::RawFd) -> RunOptions,
    (ready_w, mut error_w): (std::io::PipeWriter, std::io::PipeWriter),
) -> i32 {
    let devnull = File::options().read(true).write(true).open("/dev/null");
    let log_target = log.as_ref().map(|f| f.as_raw_fd());
    if let Ok(null) = &devnull {
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(log_target.unwrap_or(null.as_raw_fd()), 2);
        }
    }
    drop(devnull);
    crate::init_log_writer(log_level(args), None);
    tracing::info!("{summary}");
    drop(log);
    let ready_fd = OwnedFd::from(ready_w).into_raw_fd();
    match event_loop::run(cfg, spec, options(ready_fd)) {
        Ok(()) => 0,
        Err(err) => {
            let err = format!("{:#}", anyhow::Error::from(err));
            tracing::error!("{err}");
            // The parent is waiting, or gone (then nobody reads this).
            let _ = error_w.write_all(err.as_bytes());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use slipway_host::routes::Route;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: PasstArgs,
    }

    fn args(line: &[&str]) -> PasstArgs {
        Cmd::try_parse_from(std::iter::once("passt").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    /// A namespace with 10.99.0.2/24 on eth0 and a default route via
    /// 10.99.0.1, resolvers as given, port 80 taken; with `v6`, also
    /// 2001:db8:99::2/64 and fe80::5 on eth0 and a default route via
    /// fe80::1.
    struct FakeHost {
        resolvers: Vec<IpAddr>,
        v6: bool,
    }

    impl HostView for FakeHost {
        fn routes(&self) -> anyhow::Result<Vec<Route>> {
            Ok(vec![
                Route {
                    ifname: "eth0".into(),
                    destination: Ipv4Addr::UNSPECIFIED,
                    gateway: Some(Ipv4Addr::new(10, 99, 0, 1)),
                    mask: Ipv4Addr::UNSPECIFIED,
                },
                Route {
                    ifname: "eth0".into(),
                    destination: Ipv4Addr::new(10, 99, 0, 0),
                    gateway: None,
                    mask: Ipv4Addr::new(255, 255, 255, 0),
                },
            ])
        }
        fn addresses(&self, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
            Ok(match name {
                "eth0" => vec![Ipv4Addr::new(10, 99, 0, 2)],
                _ => Vec::new(),
            })
        }
        fn routes6(&self) -> anyhow::Result<Vec<slipway_host::routes6::Route6>> {
            use slipway_host::routes6::Route6;
            if !self.v6 {
                return Ok(Vec::new());
            }
            Ok(vec![
                Route6 {
                    ifname: "eth0".into(),
                    destination: "2001:db8:99::".parse().unwrap(),
                    prefix_len: 64,
                    gateway: None,
                },
                Route6 {
                    ifname: "eth0".into(),
                    destination: "::".parse().unwrap(),
                    prefix_len: 0,
                    gateway: Some("fe80::1".parse().unwrap()),
                },
            ])
        }
        fn addresses6(&self, name: &str) -> anyhow::Result<Vec<std::net::Ipv6Addr>> {
            Ok(match name {
                "eth0" if self.v6 => vec![
                    "fe80::5".parse().unwrap(),
                    "2001:db8:99::2".parse().unwrap(),
                ],
                _ => Vec::new(),
            })
        }
        fn index(&self, name: &str) -> Option<u32> {
            (name == "eth0").then_some(2)
        }
        fn resolvers(&self) -> Vec<IpAddr> {
            self.resolvers.clone()
        }
        fn search(&self) -> Vec<String> {
            vec!["example.test".into()]
        }
        fn ephemeral_ports(&self) -> std::ops::RangeInclusive<u16> {
            1024..=65535
        }
        fn can_bind(&self, fwd: &HostForward) -> bool {
            fwd.host.port() != 80
        }
    }

    fn host() -> FakeHost {
        FakeHost {
            resolvers: vec![
                "198.51.100.53".parse().unwrap(),
                "127.0.0.53".parse().unwrap(),
            ],
            v6: false,
        }
    }

    /// [`host`] with IPv6, and IPv6 resolvers (one on the loopback).
    fn host6() -> FakeHost {
        let mut h = host();
        h.v6 = true;
        h.resolvers.extend([
            "2001:db8:53::1".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap(),
        ]);
        h
    }

    #[test]
    fn copies_the_hosts_address_and_resolvers() {
        let cfg = plan(&args(&["--one-off", "--socket", "/x"]), &host()).unwrap();
        let copied = cfg.copied.clone().unwrap();
        assert_eq!(copied.guest, Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!((cfg.net, cfg.prefix_len), (Ipv4Addr::new(10, 99, 0, 0), 24));
        assert_eq!(cfg.host, Ipv4Addr::new(10, 99, 0, 1));
        // The loopback resolver is reached through the gateway.
        assert_eq!(
            copied.dhcp_dns,
            [Ipv4Addr::new(198, 51, 100, 53), Ipv4Addr::new(10, 99, 0, 1)]
        );
        assert_eq!(cfg.dnssearch, ["example.test"]);
        assert_eq!((cfg.mtu, copied.map_gw), (65520, true));
        assert!(!cfg.dns_relay && !cfg.ipv6.enabled);
        use slipway_usermode::config::Outbound;
        let to = |s: &str| cfg.outbound_target(s.parse().unwrap());
        assert_eq!(
            to("10.99.0.1:53"),
            Outbound::Host("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            to("10.99.0.3:80"),
            Outbound::Host("10.99.0.3:80".parse().unwrap())
        );
        assert!(cfg.is_copied_peer(Ipv4Addr::new(10, 99, 0, 3)));
        for not_peer in [
            [10, 99, 0, 2],
            [10, 99, 0, 255],
            [10, 99, 0, 0],
            [10, 99, 0, 1],
        ] {
            assert!(
                !cfg.is_copied_peer(Ipv4Addr::from(not_peer)),
                "{not_peer:?}"
            );
        }
    }

    #[test]
    fn options_override_what_is_copied() {
        let a = args(&[
            "-a",
            "192.0.2.10",
            "-n",
            "255.255.255.240",
            "-g",
            "192.0.2.1",
            "-m",
            "1400",
            "-D",
            "192.0.2.53",
            "--dns-forward",
            "192.0.2.3",
            "-S",
            "a.test b.test",
            "--no-map-gw",
            "-t",
            "2222:22,8000-8001",
            "-u",
            "5353",
        ]);
        let cfg = plan(&a, &host()).unwrap();
        let copied = cfg.copied.clone().unwrap();
        assert_eq!(
            (copied.guest, cfg.prefix_len, cfg.host),
            (
                Ipv4Addr::new(192, 0, 2, 10),
                28,
                Ipv4Addr::new(192, 0, 2, 1)
            )
        );
        assert_eq!((cfg.mtu, copied.map_gw), (1400, false));
        assert_eq!(copied.dhcp_dns, [Ipv4Addr::new(192, 0, 2, 3)]);
        assert_eq!(
            (cfg.dns, cfg.dns_relay),
            (Ipv4Addr::new(192, 0, 2, 3), true)
        );
        assert_eq!(cfg.dns_upstreams, ["192.0.2.53:53".parse().unwrap()]);
        assert_eq!(cfg.dnssearch, ["a.test", "b.test"]);
        use slipway_usermode::config::Outbound;
        assert_eq!(
            cfg.outbound_target("192.0.2.1:80".parse().unwrap()),
            Outbound::Host("192.0.2.1:80".parse().unwrap()),
            "--no-map-gw: the gateway is the gateway"
        );
        let fwd: Vec<_> = cfg
            .hostfwd
            .iter()
            .map(|f| (f.protocol, f.host.port(), f.guest_port, f.guest_addr))
            .collect();
        assert_eq!(
            fwd,
            [
                (ForwardProtocol::Tcp, 2222, 22, None),
                (ForwardProtocol::Tcp, 8000, 8000, None),
                (ForwardProtocol::Tcp, 8001, 8001, None),
                (ForwardProtocol::Udp, 5353, 5353, None),
            ]
        );
        assert!(cfg.hostfwd.iter().all(|f| f.host.ip().is_unspecified()));
        let cfg = plan(&args(&["-D", "none", "--no-dhcp-search"]), &host()).unwrap();
        assert!(cfg.copied.unwrap().dhcp_dns.is_empty() && cfg.dns_upstreams.is_empty());
        assert!(cfg.dnssearch.is_empty());
    }

    #[test]
    fn all_skips_taken_ports() {
        let cfg = plan(&args(&["-t", "all"]), &host()).unwrap();
        assert_eq!(
            cfg.hostfwd.len(),
            1022,
            "1 to 1023 without the taken port 80"
        );
        assert!(!cfg.hostfwd.iter().any(|f| f.host.port() == 80));
        let cfg = plan(&args(&["-t", "~1-1000"]), &host()).unwrap();
        assert_eq!(cfg.hostfwd.len(), 23);
    }

    #[test]
    fn bad_options_are_named() {
        for (line, want) in [
            (&["-t", "80-22"][..], "invalid --tcp-ports '80-22'"),
            (&["-u", "eth0%x/5"], "invalid --udp-ports 'eth0%x/5'"),
            (&["-t", "%eth0/22"], "interface 'eth0' without an address"),
            (
                &["-t", "::1/22"],
                "'::1/22': ::1 is an IPv6 address, and the guest is served IPv4",
            ),
            (&["-t", "22", "-t", "20-30"], "port 22 is forwarded twice"),
            (&["-6"], "--ipv6-only: no IPv6 default route"),
            (&["-n", "33"], "invalid --netmask '33'"),
            (&["-n", "255.0.255.0"], "invalid --netmask"),
            (&["-a", "10.99.0.1"], "do not make a network"),
            (&["-g", "192.0.2.1"], "do not make a network"),
            (&["-m", "40"], "invalid --mtu 40"),
            (&["-D", "dns.example"], "invalid --dns 'dns.example'"),
            (&["-a", "1.2.3.4", "-a", "1.2.3.5"], "--address given twice"),
            (&["-i", "eth9"], "interface eth9 has no IPv4 address"),
            (
                &["--map-host-loopback", "10.99.0.9"],
                "maps the gateway address only",
            ),
        ] {
            let err = plan(&args(line), &host()).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{line:?}: {err:#}");
        }
        for line in [&["-t", "auto"][..], &["-t", "22", "-u", "auto"]] {
            let err = refuse_auto(&args(line)).unwrap_err();
            assert!(
                format!("{err:#}").contains("only allowed for pasta"),
                "{err:#}"
            );
        }
        assert!(refuse_auto(&args(&["-t", "22", "-u", "all"])).is_ok());
    }

    #[test]
    fn copies_the_hosts_ipv6_address_and_gateway() {
        use slipway_usermode::config::Outbound;
        let cfg = plan(&args(&[]), &host6()).unwrap();
        let copied = cfg.copied.clone().unwrap();
        let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        assert!(cfg.ipv4 && cfg.ipv6.enabled);
        assert_eq!(copied.guest6, Some(a("2001:db8:99::2")));
        assert_eq!(
            (cfg.ipv6.prefix, cfg.ipv6.prefix_len),
            (a("2001:db8:99::"), 64)
        );
        // The gateway is the router's link-local address, and the stack's.
        assert_eq!(
            (cfg.ipv6.host, cfg.ipv6.router),
            (a("fe80::1"), a("fe80::1"))
        );
        // The loopback resolver is reached through the gateway.
        assert_eq!(copied.dns6, [a("2001:db8:53::1"), a("fe80::1")]);
        assert_eq!(cfg.ipv6_dns_servers(), copied.dns6);
        let to = |s: &str| cfg.outbound_target(s.parse().unwrap());
        assert_eq!(
            to("[fe80::1]:53"),
            Outbound::Host("[::1]:53".parse().unwrap())
        );
        // The prefix's other addresses are hosts beyond the host.
        assert_eq!(
            to("[2001:db8:99::1]:80"),
            Outbound::Host("[2001:db8:99::1]:80".parse().unwrap())
        );
        assert!(cfg.is_copied_peer6(a("2001:db8:99::1")));
        for not_peer in [
            "2001:db8:99::2",
            "2001:db8:99::",
            "fe80::1",
            "2001:db8:98::1",
        ] {
            assert!(!cfg.is_copied_peer6(a(not_peer)), "{not_peer}");
        }
        // --no-map-gw: the link-local gateway is the router on eth0 (index
        // 2), not the host's ::1; the loopback resolver is not advertised.
        let cfg = plan(&args(&["--no-map-gw"]), &host6()).unwrap();
        assert_eq!(cfg.copied.as_ref().unwrap().link6, Some(2));
        assert_eq!(cfg.copied.as_ref().unwrap().dns6, [a("2001:db8:53::1")]);
        assert_eq!(
            cfg.outbound_target("[fe80::1]:53".parse().unwrap()),
            Outbound::Host(std::net::SocketAddrV6::new(a("fe80::1"), 53, 0, 2).into())
        );
        // -4: IPv6 off; -6: IPv4 off.
        let cfg = plan(&args(&["-4"]), &host6()).unwrap();
        assert!(cfg.ipv4 && !cfg.ipv6.enabled && cfg.copied.unwrap().guest6.is_none());
        let cfg = plan(&args(&["-6"]), &host6()).unwrap();
        assert!(!cfg.ipv4 && cfg.ipv6.enabled);
        // A host without IPv6 gets an IPv4-only guest.
        assert!(!plan(&args(&[]), &host()).unwrap().ipv6.enabled);
    }

    #[test]
    fn ipv6_options_override_what_is_copied() {
        let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        let line = [
            "-a",
            "2001:db8:7::10",
            "-a",
            "192.0.2.10",
            "-n",
            "24",
            "-g",
            "2001:db8:7::1",
            "-g",
            "192.0.2.1",
            "--dns-forward",
            "2001:db8:7::53",
            "--no-map-gw",
        ];
        let cfg = plan(&args(&line), &host6()).unwrap();
        let copied = cfg.copied.clone().unwrap();
        assert_eq!(copied.guest, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(copied.guest6, Some(a("2001:db8:7::10")));
        // No connected route for it: a /64.
        assert_eq!(
            (cfg.ipv6.prefix, cfg.ipv6.prefix_len),
            (a("2001:db8:7::"), 64)
        );
        // A global gateway: the stack's link-local address stays its own.
        assert_eq!(cfg.ipv6.host, a("2001:db8:7::1"));
        assert_eq!(cfg.ipv6.router, slipway_usermode::config::ROUTER_LINK_LOCAL);
        assert_eq!((cfg.ipv6.dns, cfg.dns_relay), (a("2001:db8:7::53"), true));
        assert_eq!(copied.dns6, [a("2001:db8:7::53")]);
        use slipway_usermode::config::Outbound;
        assert_eq!(
            cfg.outbound_target("[2001:db8:7::1]:80".parse().unwrap()),
            Outbound::Host("[2001:db8:7::1]:80".parse().unwrap()),
            "--no-map-gw: the gateway is the gateway"
        );
        for (line, want) in [
            (&["-a", "fe80::9"][..], "not an address a guest can have"),
            (&["-g", "2001:db8:5::1"], "do not make a network"),
            (&["-g", "2001:db8:99::2"], "do not make a network"),
            (
                &["-a", "2001:db8::1", "-a", "2001:db8::2"],
                "--address given twice for IPv6",
            ),
            (
                &["--map-host-loopback", "fe80::9"],
                "maps the gateway address only",
            ),
            (
                &["-6", "-i", "eth9"],
                "--ipv6-only: interface eth9 has no global IPv6 address",
            ),
            (
                &["-6", "-t", "127.0.0.1/22"],
                "127.0.0.1 is an IPv4 address, and the guest is served IPv6 (-6) only",
            ),
            (
                &["-4", "-u", "::/53"],
                ":: is an IPv6 address, and the guest is served IPv4 (-4",
            ),
            (
                &["-t", "22", "-t", "::1/22"],
                "'::1/22': port 22 is forwarded twice",
            ),
        ] {
            let err = plan(&args(line), &host6()).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{line:?}: {err:#}");
        }
        assert!(Cmd::try_parse_from(["passt", "-4", "-6"]).is_err());
        assert!(plan(&args(&["-6", "-t", "none", "-u", "none"]), &host6()).is_ok());
    }

    /// (protocol, host address, guest port, IPV6_V6ONLY, device) of
    /// each forward `line` plans on `host`.
    fn forwards(
        line: &[&str],
        host: &FakeHost,
    ) -> Vec<(ForwardProtocol, String, u16, bool, Option<String>)> {
        plan(&args(line), host)
            .unwrap()
            .hostfwd
            .into_iter()
            .inspect(|f| assert_eq!(f.guest_addr, None, "the stack's guest of the family"))
            .map(|f| {
                let host = f.host.to_string();
                (f.protocol, host, f.guest_port, f.v6_only, f.device)
            })
            .collect()
    }

    /// As passt: a specification without an address listens on each
    /// family served (an IPV6_V6ONLY IPv6 listener beside the IPv4 one),
    /// one with an address on that address only, `ADDR%IFNAME/` bound to
    /// the interface; `-4` and `-6` leave one family; `all` probes each
    /// family apart.
    #[test]
    fn forwards_listen_on_each_family_served() {
        use ForwardProtocol::{Tcp, Udp};
        let t = |host: &str, guest, v6: bool, dev: Option<&str>| {
            (Tcp, host.to_string(), guest, v6, dev.map(str::to_owned))
        };
        let line = [
            "-t",
            "2222:22",
            "-u",
            "5353",
            "-t",
            "127.0.0.1%lo/8000",
            "-t",
            "::1%lo/8001:81",
            "-t",
            "2001:db8:99::2/8002",
        ];
        assert_eq!(
            forwards(&line, &host6()),
            [
                t("0.0.0.0:2222", 22, false, None),
                t("[::]:2222", 22, true, None),
                t("127.0.0.1:8000", 8000, false, Some("lo")),
                t("[::1]:8001", 81, true, Some("lo")),
                t("[2001:db8:99::2]:8002", 8002, true, None),
                (Udp, "0.0.0.0:5353".into(), 5353, false, None),
                (Udp, "[::]:5353".into(), 5353, true, None),
            ]
        );
        assert_eq!(
            forwards(&["-4", "-t", "22"], &host6()),
            [t("0.0.0.0:22", 22, false, None)]
        );
        assert_eq!(
            forwards(&["-6", "-t", "22"], &host6()),
            [t("[::]:22", 22, true, None)]
        );
        assert_eq!(
            forwards(&["-t", "22"], &host()),
            [t("0.0.0.0:22", 22, false, None)],
            "a host without IPv6: IPv4 only"
        );
        let all = forwards(&["-t", "all"], &host6());
        assert_eq!(all.len(), 2 * 1022, "1 to 1023 on both families but 80");
        assert!(!all.iter().any(|f| f.1.ends_with(":80")));
    }
}
