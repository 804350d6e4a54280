//! `slipway generate man|completions DIR` (hidden): writes the manual pages
//! and the shell completion scripts, for packaging (`scripts/package.sh`).
//!
//! Both come from the clap definitions, so they cannot drift from the
//! command line: the pages are clap_mangen's rendering, one per command
//! (`slipway(1)`, `slipway-user(1)`, `slipway-net-start(1)`, ...; hidden
//! commands get none), plus `slipway-bridge-helper(8)`. The helper parses
//! qemu-bridge-helper's command line by hand (it must link nothing it does
//! not need), so its page is rendered from a clap description of that
//! command line kept here; a test checks that every option it documents is
//! one the helper's parser takes.
//!
//! The completion scripts are clap_complete's dynamic ones, the design
//! virsh's own completion has (`virsh complete -- WORDS`): the shell hands
//! the words to `slipway` (`COMPLETE=bash slipway -- WORDS`, handled at the
//! top of `main`), which answers from the same clap definitions and, for a
//! network argument, from the running system (`cmd_net::complete`). The
//! scripts call `slipway` through `PATH`, so a package upgrade replaces
//! the program and the scripts together.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Arg, ArgAction, Args, Subcommand};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};

/// `slipway generate` arguments.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Manual pages (roff): `DIR/man1/*.1` and `DIR/man8/slipway-bridge-helper.8`.
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
    /// Shell completions: `DIR/bash/slipway`, `DIR/zsh/_slipway`, `DIR/fish/slipway.fish`.
    Completions {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

/// The program the completion scripts run (found through `PATH`).
const COMPLETER: &str = "slipway";

/// Writes what `args` asks for; `cli` is slipway's whole command line.
pub fn run(args: GenerateArgs, cli: clap::Command) -> anyhow::Result<i32> {
    match args.what {
        What::Man { dir } => {
            let man1 = dir.join("man1");
            create_dir(&man1)?;
            clap_mangen::generate_to(cli, &man1)
                .with_context(|| format!("cannot write manual pages to {}", man1.display()))?;
            let man8 = dir.join("man8");
            create_dir(&man8)?;
            clap_mangen::Man::new(bridge_helper_command())
                .section("8")
                .generate_to(&man8)
                .with_context(|| format!("cannot write a manual page to {}", man8.display()))?;
        }
        What::Completions { dir } => {
            let shells: [(&dyn EnvCompleter, &str); 3] = [
                (&Bash, "bash/slipway"),
                (&Zsh, "zsh/_slipway"),
                (&Fish, "fish/slipway.fish"),
            ];
            let name = cli.get_name().to_string();
            for (shell, file) in shells {
                let mut script = Vec::new();
                shell
                    .write_registration("COMPLETE", &name, &name, COMPLETER, &mut script)
                    .with_context(|| format!("cannot generate the {} script", shell.name()))?;
                let path = dir.join(file);
                create_dir(path.parent().unwrap_or(&dir))?;
                fs::write(&path, script)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(0)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// qemu-bridge-helper's command line as `slipway-bridge-helper` takes it
/// (`slipway_bridge_helper::parse_args`), described for its manual page.
fn bridge_helper_command() -> clap::Command {
    clap::Command::new("slipway-bridge-helper")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Attach a tap to a bridge for QEMU's -netdev bridge (qemu-bridge-helper's drop-in)")
        .long_about(
            "QEMU runs the helper for `-netdev bridge,br=BRIDGE,helper=PATH` as \
             `PATH --use-vnet --br=BRIDGE --fd=N`, N being one end of a unix socket pair. \
             The helper checks BRIDGE against the ACL file /etc/qemu/bridge.conf, creates \
             a tap, attaches it to the bridge and sends its descriptor back over N.\n\n\
             It is meant to be installed privileged so that unprivileged users can attach \
             VMs to the bridges the ACL names: the Debian package installs it as \
             /usr/libexec/slipway-bridge-helper with the file capability cap_net_admin+ep \
             (an administrator's dpkg-statoverride entry, e.g. mode 4755 for setuid root, \
             takes precedence). Either way it switches to the caller's uid and gid at once, \
             keeps only CAP_NET_ADMIN, ignores its environment, reads the ACL as the caller \
             and runs no other program.\n\n\
             The ACL has one rule a line: `allow BRIDGE`, `allow all`, `deny BRIDGE`, \
             `deny all`, `include FILE` (a relative FILE is found beside the including \
             file); `#` starts a comment. A bridge must be allowed by some rule and denied \
             by none. Without the file nothing is allowed.\n\n\
             Exit status: 0 when the tap was sent, 1 on any error (named on stderr).",
        )
        .disable_help_flag(true)
        .arg(
            Arg::new("use-vnet")
                .long("use-vnet")
                .action(ArgAction::SetTrue)
                .help("Open the tap with the virtio-net header (QEMU always passes it)"),
        )
        .arg(
            Arg::new("br")
                .long("br")
                .value_name("BRIDGE")
                .required(true)
                .help("The bridge to attach the tap to; the ACL must allow it"),
        )
        .arg(
            Arg::new("fd")
                .long("fd")
                .value_name("FD")
                .required(true)
                .help("The unix socket (a descriptor number) to send the tap's descriptor on"),
        )
        .arg(Arg::new("acl").long("acl").value_name("FILE").help(
            "Read this ACL instead of /etc/qemu/bridge.conf; refused when the helper \
                     runs setuid, setgid or with file capabilities",
        ))
        .arg(
            Arg::new("help")
                .long("help")
                .action(ArgAction::Help)
                .help("Print the usage line (alone)"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option the page documents is one the helper's own parser
    /// takes, in the `--name=VALUE` form QEMU passes.
    #[test]
    fn bridge_helper_page_matches_its_parser() {
        let cmd = bridge_helper_command();
        let mut line = Vec::new();
        for arg in cmd.get_arguments() {
            let long = arg.get_long().expect("every option is long");
            if long == "help" {
                continue;
            }
            line.push(if arg.get_action().takes_values() {
                let value = if long == "fd" { "3" } else { "x" };
                format!("--{long}={value}")
            } else {
                format!("--{long}")
            });
        }
        assert_eq!(line.len(), 4, "{line:?}");
        let parsed = slipway_bridge_helper::parse_args(line.iter().map(Into::into));
        assert!(parsed.is_ok(), "{line:?}: {parsed:?}");
        assert_eq!(
            slipway_bridge_helper::parse_args(["--help".into()]).ok(),
            Some(slipway_bridge_helper::Command::Help)
        );
    }
}
