//! The `slipway` command: one binary, one subcommand per job.
//!
//! Each subcommand family lives in its own module and only calls into the
//! library crates; nothing here implements networking itself.

mod cmd_attach;
mod cmd_ctl;
mod cmd_guest;
mod cmd_net;
mod cmd_netservice;
mod cmd_passt;
mod cmd_pasta;
mod cmd_run;
mod cmd_user;

use clap::{Parser, Subcommand};

/// Networking for QEMU/KVM virtual machines.
#[derive(Parser, Debug)]
#[command(name = "slipway", version, about, propagate_version = true)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Keep network definitions, live state and the daemon socket under DIR
    /// instead of the system or per-user locations (tests, development).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one user-mode network (QEMU's `-netdev user`, in its own process).
    User(cmd_user::UserArgs),
    /// Talk to a running `slipway user` through its control API (`--api`).
    Ctl(cmd_ctl::CtlArgs),
    /// Run a command in a new user and network namespace served by a user-mode network.
    Run(cmd_run::RunArgs),
    /// Serve an existing network namespace through a tap (like slirp4netns).
    Attach(cmd_attach::AttachArgs),
    #[command(flatten)]
    Net(cmd_net::NetCommand),
    /// The DHCP/DNS service of one bridge network (run by the network manager).
    #[command(hide = true)]
    NetService(cmd_netservice::NetServiceArgs),
    #[command(flatten)]
    Guest(cmd_guest::GuestCommand),
    /// passt's command line (slipway installed or linked as `passt`).
    #[command(hide = true)]
    Passt(cmd_passt::PasstArgs),
    /// pasta's command line (slipway installed or linked as `pasta`).
    #[command(hide = true)]
    Pasta(cmd_pasta::PastaArgs),
}

fn main() {
    refuse_privileged_exec();
    let cli = Cli::parse_from(helper_argv(std::env::args_os().collect()));
    // As passt, slipway logs where and as much as passt's options say.
    if !matches!(cli.command, Command::Passt(_) | Command::Pasta(_)) {
        init_logging(cli.verbose);
    }
    let result = match cli.command {
        Command::User(args) => cmd_user::run(args),
        Command::Ctl(args) => cmd_ctl::run(args),
        Command::Run(args) => cmd_run::run(args),
        Command::Attach(args) => cmd_attach::run(args),
        Command::Net(cmd) => cmd_net::run(cmd, cli.root.as_deref()),
        Command::NetService(args) => cmd_netservice::run(args),
        Command::Guest(cmd) => cmd_guest::run(cmd, cli.root.as_deref()),
        Command::Passt(args) => cmd_passt::run(args),
        Command::Pasta(args) => cmd_pasta::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("slipway: error: {err:#}");
            std::process::exit(1);
        }
    }
}

/// Exits at once when this process gained privileges at exec (setuid,
/// setgid, file capabilities): `slipway` runs commands, reads any file
/// named on its command line and trusts its environment, so a privileged
/// copy would hand its privileges to whoever runs it. The one program meant
/// to be installed that way is `slipway-bridge-helper`.
fn refuse_privileged_exec() {
    if slipway_bridge_helper::privileged_exec() {
        eprintln!(
            "slipway: error: refusing to run setuid, setgid or with file capabilities; \
             never install slipway that way: for QEMU's -netdev bridge, install \
             slipway-bridge-helper setuid root (or with cap_net_admin+ep) instead"
        );
        std::process::exit(126);
    }
}

/// Installed (or linked) under another tool's name, slipway stands in for
/// it (as `qemu-bridge-helper` it says which program is, and exits): as
/// `passt` and `pasta` it takes their command lines (hidden subcommands
/// of the same names); as `slirp4netns` it is `slipway attach`,
/// whose options include slirp4netns's, so that rootless container
/// runtimes run it unchanged (there `-v` asks for the version, as
/// slirp4netns's does).
fn helper_argv(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_os_string());
    if name.as_ref().is_some_and(|n| n == "qemu-bridge-helper") {
        eprintln!(
            "slipway: error: slipway is not the bridge helper (any more): install \
             slipway-bridge-helper as qemu-bridge-helper instead"
        );
        std::process::exit(1);
    } else if name.as_ref().is_some_and(|n| n == "passt" || n == "pasta") {
        // As passt (or pasta), slipway takes passt's command line.
        let name = name.unwrap_or_default();
        args.insert(1, name);
    } else if name.is_some_and(|n| n == "slirp4netns") {
        for arg in args.iter_mut().skip(1) {
            if arg == "-v" {
                *arg = "--version".into();
            }
        }
        args.insert(1, "attach".into());
    }
    args
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    init_log_writer(default, None);
}

/// Logs at `default` (RUST_LOG overrides) to `file`, or to standard error.
fn init_log_writer(default: &str, file: Option<std::fs::File>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(file) => builder
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init(),
        None => builder
            .with_writer(std::io::stderr)
            // No colour codes in log files (network services log to one).
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
