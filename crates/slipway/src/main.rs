//! The `slipway` command: one binary, one subcommand per job.
//!
//! Each subcommand family lives in its own module and only calls into the
//! library crates; nothing here implements networking itself.

mod cmd_attach;
mod cmd_ctl;
mod cmd_doctor;
mod cmd_generate;
mod cmd_guest;
mod cmd_net;
mod cmd_netservice;
mod cmd_passt;
mod cmd_pasta;
mod cmd_run;
mod cmd_user;

use clap::{CommandFactory, Parser, Subcommand};

/// Networking for QEMU/KVM virtual machines.
#[derive(Parser, Debug)]
#[command(
    name = "slipway",
    version,
    about,
    propagate_version = true,
    after_help = "Manual: man slipway-COMMAND. Documents named docs/NAME.md are in \
                  /usr/share/doc/slipway/docs/ when installed from the package."
)]
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
    /// Write the manual pages or shell completions (packaging).
    #[command(hide = true)]
    Generate(cmd_generate::GenerateArgs),
    /// Check what this host allows slipway to do (user namespaces, /dev/net/tun,
    /// nft, capabilities, ping, Landlock, seccomp, bridge and subnet clashes),
    /// each finding with the command that fixes it; exit status 1 when
    /// something needed fails.
    Doctor(cmd_doctor::DoctorArgs),
    /// passt's command line (slipway installed or linked as `passt`).
    #[command(hide = true)]
    Passt(cmd_passt::PasstArgs),
    /// pasta's command line (slipway installed or linked as `pasta`).
    #[command(hide = true)]
    Pasta(cmd_pasta::PastaArgs),
}

fn main() {
    refuse_privileged_exec();
    not_dumpable();
    // `COMPLETE=SHELL slipway -- WORDS`: the completion scripts asking
    // (cmd_generate); answers and exits.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let args = helper_argv(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => usage_error(err, &args),
    };
    // As passt, slipway logs where and as much as passt's options say.
    if !matches!(cli.command, Command::Passt(_) | Command::Pasta(_)) {
        init_logging(cli.verbose, default_filter(&cli.command));
    }
    let result = match cli.command {
        Command::User(args) => cmd_user::run(args),
        Command::Ctl(args) => cmd_ctl::run(args),
        Command::Run(args) => cmd_run::run(args),
        Command::Attach(args) => cmd_attach::run(args),
        Command::Net(cmd) => cmd_net::run(cmd, cli.root.as_deref()),
        Command::NetService(args) => cmd_netservice::run(args),
        Command::Guest(cmd) => cmd_guest::run(cmd, cli.root.as_deref()),
        Command::Generate(args) => cmd_generate::run(args, Cli::command()),
        Command::Doctor(args) => cmd_doctor::run(args, cli.root.as_deref()),
        Command::Passt(args) => cmd_passt::run(args),
        Command::Pasta(args) => cmd_pasta::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let message = format!("{err:#}");
            eprintln!("error: {message}");
            if let Some(hint) = cmd_doctor::permission_hint(&message) {
                eprintln!("{hint}");
            }
            std::process::exit(1);
        }
    }
}

/// Reports a command line clap refused in slipway's one error style, as
/// virsh does (`error: …` on standard error, exit status 1, for every
/// command: slirp4netns, which slipway also stands in for, exits 1 too);
/// `--help` and `--version` print as clap prints them and exit 0.
/// `args` is the command line, to name the command whose help to read.
fn usage_error(err: clap::Error, args: &[std::ffi::OsString]) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        err.exit()
    }
    eprintln!(
        "{}. See '{} --help'.",
        usage_message(&err.render().to_string()),
        command_name(args)
    );
    std::process::exit(1)
}

/// clap's rendered error block as one line: its first paragraph (`error:
/// …` and the arguments it names).
fn usage_message(rendered: &str) -> String {
    let first = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    if first.is_empty() {
        "error: invalid command line".into()
    } else {
        first.trim_end_matches(':').to_string()
    }
}

/// The command a command line runs, for "See '… --help'": `slipway
/// SUBCOMMAND` (the first argument naming one), `slipway`, or
/// `slirp4netns` when slipway stands in for it.
fn command_name(args: &[std::ffi::OsString]) -> String {
    use clap::CommandFactory;
    let as_slirp4netns = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "slirp4netns");
    if as_slirp4netns {
        return "slirp4netns".into();
    }
    let cli = Cli::command();
    args.iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| cli.find_subcommand(a).is_some())
        .map_or_else(|| "slipway".into(), |sub| format!("slipway {sub}"))
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

/// Makes slipway not dumpable before it opens anything, as passt does: a
/// container's root (a rootless container tool runs slipway in the
/// container's user namespace) may then neither trace it nor take its
/// descriptors (docs/sandbox.md).
fn not_dumpable() {
    if let Err(err) = slipway_sandbox::make_undumpable() {
        eprintln!("slipway: error: cannot make the process not dumpable: {err}");
        std::process::exit(1);
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

/// The log filter when neither `-v` nor RUST_LOG says otherwise: the
/// services (the daemon, a network's service) log what they do; `slipway
/// user` says when it is ready and when it stops, and why (the
/// `slipway::lifecycle` target); the other commands only warn.
fn default_filter(command: &Command) -> &'static str {
    match command {
        Command::Net(cmd_net::NetCommand::Daemon(_)) | Command::NetService(_) => "info",
        Command::User(_) => "warn,slipway::lifecycle=info",
        _ => "warn",
    }
}

/// Logs to standard error, or under systemd (its journal on standard
/// error, `JOURNAL_STREAM`) to the journal, with each event's fields as
/// journal fields (`journalctl -o verbose`: `F_UID`, `F_NETWORK`, ...).
fn init_logging(verbose: u8, default: &str) {
    let level = match verbose {
        0 => default,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    init_log_writer(level, None);
}

/// Logs at `default` (RUST_LOG overrides) to `file`, or to standard error
/// (the journal under systemd).
fn init_log_writer(default: &str, file: Option<std::fs::File>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter);
    if let Some(file) = file {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false),
            )
            .init();
        return;
    }
    let journal = stderr_is_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    match journal {
        Some(journal) => registry.with(journal).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // No colour codes in log files (network services log to one).
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
}

/// Whether standard error is the journal's stream systemd connected
/// (`JOURNAL_STREAM=DEV:INODE` naming it, as sd_journal_stream_fd(3)
/// says to check: a child whose stderr was redirected keeps the variable).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
