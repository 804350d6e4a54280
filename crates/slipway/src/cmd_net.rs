//! The network manager's commands: `slipway daemon` and virsh's `net-*`,
//! with virsh's option names, output and messages.
//!
//! Every command goes to the daemon when its socket answers, and otherwise
//! runs the same request in-process under the same lock (direct mode), so
//! definitions can be managed without a daemon. `net-event` needs the
//! daemon: only it sees the events.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use slipway_host::signals::Signals;
use slipway_netmgr::proto::{EventKind, ListFilter, Lookup, NetworkInfo, Reply, Request};
use slipway_netmgr::update::{Section, UpdateCommand, UpdateSpec};
use slipway_netmgr::{Backend, Client, Error, ErrorCode, Manager, Paths};

mod complete;
mod port;

/// An argument virsh accepts either positionally or by its option name
/// (`net-start default` or `net-start --network default`): a positional and
/// a named argument of which exactly one must be given.
macro_rules! either_form {
    ($(#[$doc:meta])* $ty:ident { $pos:ident, $named:ident, $long:literal, $value:literal $(, $complete:expr)? }) => {
        $(#[$doc])*
        #[derive(Args, Debug)]
        #[group(required = true, multiple = false)]
        pub struct $ty {
            $(#[$doc])*
            #[arg(value_name = $value $(, add = clap_complete::ArgValueCompleter::new($complete))?)]
            $pos: Option<String>,
            #[arg(
                long = $long,
                value_name = $value,
                $(add = clap_complete::ArgValueCompleter::new($complete),)?
                help = concat!("The same as ", $value, ", given by name as virsh also takes it")
            )]
            $named: Option<String>,
        }

        impl $ty {
            /// The value, in whichever form it was given.
            fn get(self) -> String {
                // clap's group makes one of the two present.
                self.$pos.or(self.$named).unwrap_or_default()
            }
        }
    };
}

either_form!(
    /// Network name or UUID.
    NetworkArg { network, network_named, "network", "NETWORK", crate::cmd_net::complete::network_names }
);
either_form!(
    /// File containing an XML network description.
    FileArg { file, file_named, "file", "FILE" }
);
either_form!(
    /// Type of update (add-first, add-last (add), delete, or modify).
    CommandArg { command, command_named, "command", "COMMAND" }
);
either_form!(
    /// Which section of the configuration to update.
    SectionArg { section, section_named, "section", "SECTION" }
);
either_form!(
    /// The XML element, or the name of a file containing it.
    XmlArg { xml, xml_named, "xml", "XML" }
);

/// Network-manager subcommands, named as virsh names them.
#[derive(Subcommand, Debug)]
pub enum NetCommand {
    /// Run the network manager daemon (API on a unix socket, see docs/daemon-api.md).
    Daemon(DaemonArgs),
    /// List networks.
    NetList(ListArgs),
    /// Define an inactive persistent network, or modify an existing one, from an XML file.
    NetDefine {
        #[command(flatten)]
        file: FileArg,
        /// Refuse elements and attributes slipway (and libvirt) would ignore.
        #[arg(long)]
        validate: bool,
    },
    /// Define the shipped `default` network (NAT, autostart) on a subnet and
    /// bridge name free on this host. The first run does this by itself,
    /// except under `--root`.
    NetDefineDefault,
    /// Create and start a transient network from an XML file.
    NetCreate {
        #[command(flatten)]
        file: FileArg,
    },
    /// Start a (previously defined) inactive network.
    NetStart {
        #[command(flatten)]
        network: NetworkArg,
        /// Print what starting would do (one line per action) without doing it, after the checks of the host a start makes.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Destroy (stop) a network.
    NetDestroy {
        #[command(flatten)]
        network: NetworkArg,
    },
    /// Undefine a persistent network (a running one becomes transient).
    NetUndefine {
        #[command(flatten)]
        network: NetworkArg,
    },
    /// Autostart a network with the daemon.
    NetAutostart {
        #[command(flatten)]
        network: NetworkArg,
        /// Disable autostarting.
        #[arg(long)]
        disable: bool,
    },
    /// Network information in XML.
    NetDumpxml {
        #[command(flatten)]
        network: NetworkArg,
        /// The persistent definition rather than the live one.
        #[arg(long)]
        inactive: bool,
    },
    /// Network information.
    NetInfo {
        #[command(flatten)]
        network: NetworkArg,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert a network name to its UUID.
    NetUuid {
        #[command(flatten)]
        network: NetworkArg,
    },
    /// Convert a network UUID to its name.
    NetName {
        #[command(flatten)]
        network: NetworkArg,
    },
    /// Edit the XML configuration of a network with $VISUAL or $EDITOR.
    NetEdit {
        #[command(flatten)]
        network: NetworkArg,
    },
    /// Update parts of an existing network's configuration.
    NetUpdate(UpdateArgs),
    /// Print lease info for a given network.
    NetDhcpLeases {
        #[command(flatten)]
        network: NetworkArg,
        /// Only the leases of this MAC address.
        #[arg(long)]
        mac: Option<String>,
        /// Print as JSON (python-libvirt's `DHCPLeases()` keys).
        #[arg(long)]
        json: bool,
    },
    /// Wait for network events (needs the daemon).
    NetEvent(EventArgs),
    #[command(flatten)]
    Port(port::PortCommand),
}

/// `slipway daemon` options.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Serve Prometheus metrics (`GET /metrics`: each network's state,
    /// service restarts, leases, DNS counts) on HOST:PORT or on the unix
    /// socket PATH (mode 0600).
    #[arg(long, value_name = "HOST:PORT|unix:PATH", value_parser = crate::cmd_user::parse_metrics_addr)]
    metrics: Option<slipway_host::prometheus::Listen>,
}

/// `net-list` options.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// List inactive networks.
    #[arg(long)]
    inactive: bool,
    /// List inactive and active networks.
    #[arg(long)]
    all: bool,
    /// List persistent networks.
    #[arg(long)]
    persistent: bool,
    /// List transient networks.
    #[arg(long)]
    transient: bool,
    /// List networks with autostart enabled.
    #[arg(long)]
    autostart: bool,
    /// List networks with autostart disabled.
    #[arg(long)]
    no_autostart: bool,
    /// List UUIDs only.
    #[arg(long)]
    uuid: bool,
    /// List network names only.
    #[arg(long)]
    name: bool,
    /// List as a table (default).
    #[arg(long)]
    table: bool,
    /// Print as JSON (for scripts).
    #[arg(long)]
    json: bool,
}

/// `net-update` arguments.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    network: NetworkArg,
    #[command(flatten)]
    command: CommandArg,
    #[command(flatten)]
    section: SectionArg,
    #[command(flatten)]
    xml: XmlArg,
    /// Which <ip> (0-based) holds the DHCP entry.
    #[arg(long)]
    parent_index: Option<usize>,
    /// Affect the next network startup.
    #[arg(long)]
    config: bool,
    /// Affect the running network.
    #[arg(long)]
    live: bool,
    /// Affect the current state of the network.
    #[arg(long)]
    current: bool,
}

/// `net-event` options.
#[derive(Args, Debug)]
pub struct EventArgs {
    /// Filter by network name or UUID.
    #[arg(long, add = clap_complete::ArgValueCompleter::new(crate::cmd_net::complete::network_names))]
    network: Option<String>,
    /// Which event type to wait for.
    #[arg(long)]
    event: Option<String>,
    /// Loop until timeout or interrupt, rather than one-shot.
    #[arg(long = "loop")]
    looping: bool,
    /// Timeout in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// List valid event types.
    #[arg(long)]
    list: bool,
    /// Show a timestamp (UTC, as virsh) for each printed event.
    #[arg(long)]
    timestamp: bool,
}

/// A failed command: virsh's `error: ` lines, and the manager's
/// classification of the error when it came from the manager (`--json`
/// prints both).
struct Failure {
    lines: Vec<String>,
    code: Option<ErrorCode>,
}

impl Failure {
    fn one(msg: impl Into<String>) -> Failure {
        Failure::lines(vec![msg.into()])
    }

    fn lines(lines: Vec<String>) -> Failure {
        Failure { lines, code: None }
    }

    /// The failure as `--json` prints it on standard output:
    /// `{"error": {"code": "not-found", "messages": [...]}}` (code `null`
    /// for failures of the command line itself, such as an unreadable file).
    fn to_json(&self) -> String {
        to_json(&serde_json::json!({
            "error": { "code": self.code, "messages": self.lines }
        }))
    }

    /// `context` line then the error itself; lookup failures get virsh's
    /// "failed to get network" instead of the command's context.
    fn with(err: Error, key: &str, context: Option<String>) -> Failure {
        let mut lines = Vec::new();
        if err.code() == ErrorCode::NotFound {
            lines.push(format!("failed to get network '{key}'"));
        } else if let Some(c) = context {
            lines.push(c);
        }
        lines.push(err.to_string());
        Failure {
            lines,
            code: Some(err.code()),
        }
    }
}

/// Where requests go: the daemon, or this process.
enum Conn {
    Daemon(Client),
    Direct(Box<Manager>),
}

impl Conn {
    /// The daemon if it answers, else a manager in this process realizing
    /// networks with `backend` (the Linux backend).
    fn open(
        paths: &Paths,
        backend: impl FnOnce() -> anyhow::Result<Box<dyn Backend>>,
    ) -> anyhow::Result<Conn> {
        Ok(match Client::connect(&paths.socket) {
            Ok(c) => Conn::Daemon(c),
            Err(e) => {
                tracing::debug!("no daemon at {} ({e}): direct mode", paths.socket.display());
                Conn::Direct(Box::new(Manager::new(paths.clone(), backend()?)))
            }
        })
    }

    /// Sends `req`. What the daemon did on the host is logged here at info
    /// level (`-v`), as it is in direct mode by the backend itself.
    fn call(&mut self, req: Request) -> Result<Reply, Error> {
        match self {
            Conn::Daemon(c) => {
                let reply = c.call(&req)?;
                if let Reply::Done(o) = &reply {
                    for action in &o.actions {
                        tracing::info!(network = %o.network, "network {}: {action}", o.network);
                    }
                }
                Ok(reply)
            }
            Conn::Direct(m) => m.handle(req),
        }
    }
}

/// Runs one network-manager command; returns the exit status.
pub fn run(cmd: NetCommand, root: Option<&Path>) -> anyhow::Result<i32> {
    let paths = Paths::detect(root);
    match cmd {
        NetCommand::Daemon(args) => {
            let manager = Manager::new(paths.clone(), linux_backend(&paths)?);
            // libvirt's clients reach the same manager through
            // virtnetworkd's sockets (README "slipway under libvirt").
            let dir = paths.libvirt_dir.clone();
            let system = paths.system;
            let leases = std::sync::Arc::new(HostnetLeases(paths.state_dir.clone()));
            let limits = slipway_netmgr::daemon::Limits::from_env();
            let also = slipway_netmgr::daemon::AlsoServe {
                socket_names: slipway_virtrpc::FD_NAMES,
                start: |m: &std::sync::Arc<Manager>, hub: &slipway_netmgr::EventHub, activated| {
                    let rpc = slipway_virtrpc::Config {
                        dir,
                        system,
                        limits: slipway_virtrpc::Limits::from_env(),
                        leases,
                        activated,
                    };
                    slipway_virtrpc::serve(m.clone(), hub.clone(), rpc).map_err(|e| match e {
                        slipway_virtrpc::ServeError::Io {
                            action,
                            path,
                            source,
                        } => {
                            Error::Io(slipway_host::atomic::AtomicError::new(action, path, source))
                        }
                        other => Error::NotValid(other.to_string()),
                    })
                },
            };
            let served = slipway_netmgr::daemon::run_serving(manager, limits, args.metrics, also);
            match served {
                Ok(()) => Ok(0),
                Err(e) => {
                    let message = e.to_string();
                    tracing::error!(target: "slipway::lifecycle", "slipway daemon stopping: {message}");
                    eprintln!("error: {message}");
                    if let Some(hint) = crate::cmd_doctor::permission_hint(&message) {
                        eprintln!("{hint}");
                    }
                    Ok(1)
                }
            }
        }
        NetCommand::NetEvent(args) => Ok(net_event(&paths, args)),
        cmd => {
            // virsh ends every command's output with an empty line (even
            // after an error); JSON output does not.
            let json = matches!(
                &cmd,
                NetCommand::NetList(ListArgs { json: true, .. })
                    | NetCommand::NetInfo { json: true, .. }
                    | NetCommand::NetStart { json: true, .. }
                    | NetCommand::NetDhcpLeases { json: true, .. }
                    | NetCommand::Port(port::PortCommand::List { json: true, .. })
            );
            // A dry run too checks the host with the Linux backend, as the
            // start would (it changes nothing).
            let mut conn = Conn::open(&paths, || linux_backend(&paths))?;
            let result = exec(&mut conn, cmd, &paths);
            let mut stdout = std::io::stdout().lock();
            match result {
                Ok(text) => {
                    let _ = write!(stdout, "{text}{}", if json { "" } else { "\n" });
                    let _ = stdout.flush();
                    Ok(0)
                }
                Err(failure) => {
                    // virsh's empty line; with --json, the error as JSON.
                    if json {
                        let _ = write!(stdout, "{}", failure.to_json());
                    } else {
                        let _ = writeln!(stdout);
                    }
                    let _ = stdout.flush();
                    let hint = crate::cmd_doctor::permission_hint(&failure.lines.join("\n"));
                    for l in failure.lines {
                        eprintln!("error: {l}");
                    }
                    if let Some(hint) = hint {
                        eprintln!("{hint}");
                    }
                    Ok(1)
                }
            }
        }
    }
}

/// The Linux backend, running each network's DHCP/DNS service as this
/// binary's hidden `net-service` subcommand (logging at info level into the
/// service's log file).
fn linux_backend(paths: &Paths) -> anyhow::Result<Box<dyn Backend>> {
    let exe = std::env::current_exe()
        .context("cannot find the slipway executable to run network services")?;
    Ok(Box::new(slipway_hostnet::LinuxBackend::new(
        &paths.state_dir,
        vec![exe.into(), "-v".into(), "net-service".into()],
    )))
}

/// DHCP leases for libvirt's `virNetworkGetDHCPLeases`: the files the
/// Linux backend's services keep, read as `net-dhcp-leases` reads them.
struct HostnetLeases(PathBuf);

impl slipway_virtrpc::LeaseSource for HostnetLeases {
    fn leases(&self, name: &str) -> Result<Vec<slipway_virtrpc::DhcpLease>, String> {
        let records =
            slipway_hostnet::leases::network_leases(&self.0, name).map_err(|e| e.to_string())?;
        Ok(records
            .into_iter()
            .map(|r| slipway_virtrpc::DhcpLease {
                mac: r.mac,
                ip: r.ip,
                prefix: r.prefix,
                hostname: r.hostname,
                client_id: r.client_id,
                iaid: r.iaid,
                expires: r.expires,
            })
            .collect())
    }
}

/// Reads a file the way virsh reports failures to.
fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        let why = match e.raw_os_error() {
            // SAFETY: strerror returns a valid NUL-terminated string.
            Some(code) => unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) }
                .to_string_lossy()
                .into_owned(),
            None => e.to_string(),
        };
        Failure::one(format!("Failed to open file '{}': {why}", path.display()))
    })
}

fn done(reply: Reply) -> Result<slipway_netmgr::proto::Outcome, Failure> {
    match reply {
        Reply::Done(o) => {
            for w in &o.warnings {
                eprintln!("warning: {w}");
            }
            Ok(o)
        }
        other => Err(Failure::one(format!("unexpected reply {other:?}"))),
    }
}

fn info(conn: &mut Conn, lookup: Lookup) -> Result<NetworkInfo, Failure> {
    let key = lookup.key.clone();
    match conn.call(Request::Info { lookup }) {
        Ok(Reply::Info(i)) => Ok(i),
        Ok(other) => Err(Failure::one(format!("unexpected reply {other:?}"))),
        Err(e) => Err(Failure::with(e, &key, None)),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// Sends a request that changes a network and reports a [`Reply::Done`];
/// a failure is `context` then the error (or virsh's lookup failure for
/// `key`).
fn change(
    conn: &mut Conn,
    req: Request,
    key: &str,
    context: String,
) -> Result<slipway_netmgr::proto::Outcome, Failure> {
    conn.call(req)
        .map_err(|e| Failure::with(e, key, Some(context)))
        .and_then(done)
}

fn exec(conn: &mut Conn, cmd: NetCommand, paths: &Paths) -> Result<String, Failure> {
    match cmd {
        NetCommand::NetList(a) => net_list(conn, a),
        NetCommand::NetDefine { file, validate } => net_define(conn, &file.get(), validate),
        NetCommand::NetDefineDefault => net_define_default(conn),
        NetCommand::NetCreate { file } => net_create(conn, &file.get()),
        NetCommand::NetStart {
            network,
            dry_run: true,
            json,
        } => net_start_dry_run(conn, &network.get(), json),
        NetCommand::NetStart { network, .. } => net_start(conn, &network.get()),
        NetCommand::NetDestroy { network } => net_destroy(conn, &network.get()),
        NetCommand::NetUndefine { network } => net_undefine(conn, &network.get()),
        NetCommand::NetAutostart { network, disable } => {
            net_autostart(conn, &network.get(), disable)
        }
        NetCommand::NetDumpxml { network, inactive } => net_dumpxml(conn, &network.get(), inactive),
        NetCommand::NetInfo { network, json } => net_info(conn, &network.get(), json),
        NetCommand::NetUuid { network } => net_uuid(conn, &network.get()),
        NetCommand::NetName { network } => net_name(conn, &network.get()),
        NetCommand::NetEdit { network } => net_edit(conn, &network.get()),
        NetCommand::NetUpdate(a) => net_update(conn, a),
        NetCommand::NetDhcpLeases { network, mac, json } => {
            net_dhcp_leases(conn, paths, &network.get(), mac.as_deref(), json)
        }
        NetCommand::Port(c) => port::exec(conn, c),
        NetCommand::Daemon(_) | NetCommand::NetEvent(_) => unreachable!("handled by run"),
    }
}

fn net_define(conn: &mut Conn, file: &str, validate: bool) -> Result<String, Failure> {
    let file = PathBuf::from(file);
    let xml = read_file(&file)?;
    let from = file.display().to_string();
    let context = format!("Failed to define network from {from}");
    let o = change(conn, Request::Define { xml, validate }, "", context)?;
    Ok(format!("Network {} defined from {from}\n", o.network))
}

fn net_define_default(conn: &mut Conn) -> Result<String, Failure> {
    let context = "Failed to define the default network".to_string();
    let o = change(conn, Request::DefineDefault, "", context)?;
    Ok(format!("Network {} defined\n", o.network))
}

fn net_create(conn: &mut Conn, file: &str) -> Result<String, Failure> {
    let file = PathBuf::from(file);
    let xml = read_file(&file)?;
    let from = file.display().to_string();
    let context = format!("Failed to create network from {from}");
    let o = change(conn, Request::Create { xml }, "", context)?;
    Ok(format!("Network {} created from {from}\n", o.network))
}

fn net_start_dry_run(conn: &mut Conn, network: &str, json: bool) -> Result<String, Failure> {
    match conn.call(Request::Plan {
        lookup: Lookup::any(network),
    }) {
        Ok(Reply::Plan(plan)) if json => Ok(to_json(&plan)),
        Ok(Reply::Plan(plan)) => Ok(plan.to_string()),
        Ok(other) => Err(Failure::one(format!("unexpected reply {other:?}"))),
        Err(e) => Err(Failure::with(
            e,
            network,
            Some(format!("Failed to start network {network}")),
        )),
    }
}

fn net_start(conn: &mut Conn, network: &str) -> Result<String, Failure> {
    let lookup = Lookup::any(network);
    let context = format!("Failed to start network {network}");
    change(conn, Request::Start { lookup }, network, context)?;
    Ok(format!("Network {network} started\n"))
}

fn net_destroy(conn: &mut Conn, network: &str) -> Result<String, Failure> {
    let lookup = Lookup::any(network);
    let context = format!("Failed to destroy network {network}");
    change(conn, Request::Destroy { lookup }, network, context)?;
    Ok(format!("Network {network} destroyed\n"))
}

fn net_undefine(conn: &mut Conn, network: &str) -> Result<String, Failure> {
    let lookup = Lookup::any(network);
    let context = format!("Failed to undefine network {network}");
    change(conn, Request::Undefine { lookup }, network, context)?;
    Ok(format!("Network {network} has been undefined\n"))
}

fn net_autostart(conn: &mut Conn, network: &str, disable: bool) -> Result<String, Failure> {
    let (verb, done) = if disable {
        ("unmark", "unmarked")
    } else {
        ("mark", "marked")
    };
    let context = format!("failed to {verb} network {network} as autostarted");
    let req = Request::Autostart {
        lookup: Lookup::any(network),
        enable: !disable,
    };
    change(conn, req, network, context)?;
    Ok(format!("Network {network} {done} as autostarted\n"))
}

fn net_dumpxml(conn: &mut Conn, network: &str, inactive: bool) -> Result<String, Failure> {
    match conn.call(Request::DumpXml {
        lookup: Lookup::any(network),
        inactive,
    }) {
        Ok(Reply::Xml { xml }) => Ok(xml),
        Ok(other) => Err(Failure::one(format!("unexpected reply {other:?}"))),
        Err(e) => Err(Failure::with(e, network, None)),
    }
}

fn net_info(conn: &mut Conn, network: &str, json: bool) -> Result<String, Failure> {
    let i = info(conn, Lookup::any(network))?;
    if json {
        return Ok(to_json(&i));
    }
    let yn = |b: bool| if b { "yes" } else { "no" };
    let mut s = format!("{:<15} {}\n", "Name:", i.name);
    s += &format!("{:<15} {}\n", "UUID:", i.uuid);
    s += &format!("{:<15} {}\n", "Active:", yn(i.active));
    s += &format!("{:<15} {}\n", "Persistent:", yn(i.persistent));
    s += &format!("{:<15} {}\n", "Autostart:", yn(i.autostart));
    if let Some(b) = &i.bridge {
        s += &format!("{:<15} {b}\n", "Bridge:");
    }
    Ok(s)
}

fn net_uuid(conn: &mut Conn, network: &str) -> Result<String, Failure> {
    Ok(info(conn, Lookup::name(network))?.uuid + "\n")
}

fn net_name(conn: &mut Conn, network: &str) -> Result<String, Failure> {
    // virsh only tries UUID-length strings, and then has no lookup error
    // to add.
    if network.len() != 36 {
        return Err(Failure::one(format!("failed to get network '{network}'")));
    }
    Ok(info(conn, Lookup::uuid(network))?.name + "\n")
}

fn net_dhcp_leases(
    conn: &mut Conn,
    paths: &Paths,
    network: &str,
    mac: Option<&str>,
    json: bool,
) -> Result<String, Failure> {
    let failed = || format!("Failed to get leases info for {network}");
    // The name as defined (the key may be a UUID); the leases file is read
    // directly: it is written atomically by the service.
    let net = info(conn, Lookup::any(network))?;
    let name = net.name;
    if let Some(m) = mac {
        if m.parse::<slipway_netxml::MacAddr>().is_err() {
            return Err(Failure::lines(vec![
                failed(),
                format!("invalid MAC address: {m}"),
            ]));
        }
    }
    if json {
        let bridge = net.bridge.unwrap_or_default();
        return slipway_hostnet::leases_json(&paths.state_dir, &name, &bridge, mac)
            .map(|l| to_json(&l))
            .map_err(|e| Failure::lines(vec![failed(), e.to_string()]));
    }
    slipway_hostnet::leases_table(&paths.state_dir, &name, mac)
        .map_err(|e| Failure::lines(vec![failed(), e.to_string()]))
}

fn net_list(conn: &mut Conn, a: ListArgs) -> Result<String, Failure> {
    if [a.table, a.name, a.uuid].iter().filter(|b| **b).count() > 1 {
        return Err(Failure::one(
            "Only one argument from --table, --name and --uuid may be specified.",
        ));
    }
    let filter = ListFilter {
        active: a.all || !a.inactive,
        inactive: a.all || a.inactive,
        persistent: a.persistent,
        transient: a.transient,
        autostart: a.autostart,
        no_autostart: a.no_autostart,
    };
    let (networks, problems) = match conn.call(Request::List { filter }) {
        Ok(Reply::List { networks, problems }) => (networks, problems),
        Ok(other) => return Err(Failure::one(format!("unexpected reply {other:?}"))),
        Err(e) => {
            return Err(Failure {
                lines: vec!["Failed to list networks".into(), e.to_string()],
                code: Some(e.code()),
            })
        }
    };
    for p in &problems {
        eprintln!("warning: cannot read {}: {}", p.path, p.message);
    }
    if a.json {
        return Ok(to_json(&networks));
    }
    if a.name || a.uuid {
        return Ok(networks
            .iter()
            .map(|n| format!("{}\n", if a.name { &n.name } else { &n.uuid }))
            .collect());
    }
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                if n.active { "active" } else { "inactive" }.to_string(),
                yn(n.autostart),
                yn(n.persistent),
            ]
        })
        .collect();
    Ok(slipway_netmgr::vsh_table(
        &["Name", "State", "Autostart", "Persistent"],
        &rows,
    ))
}

fn net_update(conn: &mut Conn, a: UpdateArgs) -> Result<String, Failure> {
    let (command_name, section_name) = (a.command.get(), a.section.get());
    let command: UpdateCommand = command_name
        .parse()
        .map_err(|()| Failure::one(format!("unrecognized command name '{command_name}'")))?;
    let section: Section = section_name
        .parse()
        .map_err(|()| Failure::one(format!("unrecognized section name '{section_name}'")))?;
    if a.current && a.live {
        return Err(Failure::one(
            "Options --current and --live are mutually exclusive",
        ));
    }
    if a.current && a.config {
        return Err(Failure::one(
            "Options --current and --config are mutually exclusive",
        ));
    }
    let xml = a.xml.get();
    let xml = if xml.starts_with('<') {
        xml
    } else {
        read_file(Path::new(&xml))?
    };
    let spec = UpdateSpec {
        command,
        section,
        xml,
        parent_index: a.parent_index,
        live: a.live,
        config: a.config,
    };
    let network = a.network.get();
    let lookup = Lookup::any(&network);
    let context = format!("Failed to update network {network}");
    let o = change(conn, Request::Update { lookup, spec }, &network, context)?;
    // virsh prints this one without a newline (its end-of-command newline follows).
    Ok(format!(
        "Updated network {} {}",
        o.network,
        o.detail.unwrap_or_default()
    ))
}

fn net_edit(conn: &mut Conn, network: &str) -> Result<String, Failure> {
    let original = net_dumpxml(conn, network, true)?;
    let name = info(conn, Lookup::any(network))?.name;
    let path = std::env::temp_dir().join(format!(
        "slipway-net-edit-{}-{name}.xml",
        std::process::id()
    ));
    let result = edit_loop(conn, &path, &original, &name);
    let _ = std::fs::remove_file(&path);
    result
}

fn edit_loop(conn: &mut Conn, path: &Path, original: &str, name: &str) -> Result<String, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_fail = |e: std::io::Error| {
        Failure::one(format!(
            "cannot write temporary file '{}': {e}",
            path.display()
        ))
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(original.as_bytes()))
        .map_err(io_fail)?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    loop {
        // Through the shell, so EDITOR may carry arguments ("code -w").
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(path)
            .status()
            .map_err(|e| Failure::one(format!("cannot run editor '{editor}': {e}")))?;
        if !status.success() {
            return Err(Failure::one(format!(
                "editor '{editor}' failed ({status}); nothing changed"
            )));
        }
        let edited = read_file(path)?;
        if edited == original {
            return Ok(format!("Network {name} XML configuration not changed.\n"));
        }
        match conn
            .call(Request::Define {
                xml: edited,
                validate: false,
            })
            .map_err(|e| Failure::with(e, "", None))
        {
            Ok(reply) => {
                let o = done(reply)?;
                return Ok(format!("Network {} XML configuration edited.\n", o.network));
            }
            Err(fail) if std::io::stdin().is_terminal() => {
                for l in &fail.lines {
                    eprintln!("error: {l}");
                }
                if !ask_retry() {
                    return Err(Failure::one("edit abandoned; nothing changed"));
                }
            }
            Err(fail) => return Err(fail),
        }
    }
}

/// virsh's "Failed. Try again?" prompt; true to edit again.
fn ask_retry() -> bool {
    loop {
        print!("Failed. Try again? [y,n,i,f,?]: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).unwrap_or(0) == 0 {
            return false;
        }
        match answer.trim() {
            "y" | "i" | "f" => return true,
            "n" => return false,
            _ => println!(
                "y - yes, start editor again\nn - no, throw away my changes\n\
                 i, f - like y: slipway cannot define a network that does not validate\n? - print this help"
            ),
        }
    }
}

fn net_event(paths: &Paths, a: EventArgs) -> i32 {
    let fail = |lines: Vec<String>| {
        println!();
        for l in lines {
            eprintln!("error: {l}");
        }
        1
    };
    if a.list {
        println!("lifecycle\n");
        return 0;
    }
    if let Some(ev) = &a.event {
        if ev != "lifecycle" {
            return fail(vec![format!("unknown event type {ev}")]);
        }
    }
    let mut client = match Client::connect(&paths.socket) {
        Ok(c) => c,
        Err(e) => {
            return fail(vec![format!(
                "net-event needs the slipway daemon: cannot connect to {}: {e}",
                paths.socket.display()
            )])
        }
    };
    let filter = match &a.network {
        Some(key) => match client.call(&Request::Info {
            lookup: Lookup::any(key),
        }) {
            Ok(Reply::Info(i)) => Some(i.uuid),
            Ok(other) => return fail(vec![format!("unexpected reply {other:?}")]),
            Err(e) => return fail(Failure::with(e, key, None).lines),
        },
        None => None,
    };
    // Before subscribing: once subscribed, Ctrl-C ends the loop cleanly.
    // SIGINT is blocked and read from a descriptor instead of killing the
    // process (no thread was started before: none takes it instead).
    let sigint = match Signals::new(&[libc::SIGINT]) {
        Ok(s) => s,
        Err(e) => return fail(vec![format!("cannot catch Ctrl-C: {e}")]),
    };
    let mut stream = match client.subscribe() {
        Ok(s) => s,
        Err(e) => return fail(vec![e.to_string()]),
    };
    let deadline = a.timeout.map(|t| Instant::now() + Duration::from_secs(t));
    let mut count = 0;
    let mut out = std::io::stdout().lock();
    loop {
        if sigint.next().is_some() {
            let _ = writeln!(out, "event loop interrupted");
            break;
        }
        // Woken at least every INTERRUPT_POLL to notice Ctrl-C.
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let wait = left.map_or(INTERRUPT_POLL, |l| l.min(INTERRUPT_POLL));
        match stream.next(Some(wait)) {
            Ok(None) if left.is_none_or(|l| l > wait) => continue,
            Ok(Some(ev)) => {
                if filter.as_ref().is_some_and(|u| *u != ev.uuid) {
                    continue;
                }
                let kind = match ev.kind {
                    EventKind::Defined => "Defined",
                    EventKind::Undefined => "Undefined",
                    EventKind::Started => "Started",
                    EventKind::Stopped => "Stopped",
                };
                if a.timestamp {
                    let _ = write!(out, "{}: ", timestamp_now());
                }
                let _ = writeln!(out, "event 'lifecycle' for network {}: {kind}", ev.network);
                let _ = out.flush();
                count += 1;
                if !a.looping {
                    break;
                }
            }
            Ok(None) => {
                let _ = writeln!(out, "event loop timed out");
                break;
            }
            Err(e) => {
                drop(out);
                return fail(vec![e.to_string()]);
            }
        }
    }
    let _ = writeln!(out, "events received: {count}\n");
    let _ = out.flush();
    if count > 0 {
        0
    } else {
        1
    }
}

/// How often the event loop checks for Ctrl-C.
const INTERRUPT_POLL: Duration = Duration::from_millis(200);

/// virsh's event timestamp: `YYYY-MM-DD HH:MM:SS.mmm+0000` in UTC, from
/// the log's RFC 3339 clock (`YYYY-MM-DDTHH:MM:SS.uuuuuuZ`).
fn timestamp_now() -> String {
    use tracing_subscriber::fmt::{format::Writer, time::FormatTime};
    let mut rfc3339 = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut rfc3339));
    let (date, time) = rfc3339.split_once('T').unwrap_or_default();
    format!("{date} {}+0000", time.get(..12).unwrap_or_default())
}
