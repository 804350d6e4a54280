//! Network names for shell completion, from the running system.
//!
//! A network argument (`net-start NETWORK`, `--network NETWORK`, ...)
//! completes to the names `slipway net-list --all --name` would print,
//! asked the same way: of the daemon when its socket answers, else read
//! from the definitions and live state in this process (which only reads).
//! As virsh's completer does, the command narrows the list: `net-start`
//! offers inactive networks, `net-destroy` and `net-dhcp-leases` active
//! ones, `net-undefine` and `net-autostart` persistent ones.
//!
//! clap_complete hands a completer only the word being completed, so the
//! command and a `--root DIR` given earlier on the line are read from the
//! words the shell passed (`slipway -- slipway net-start --root DIR ''`).
//! Completion never fails loudly: an unreadable state gives no names.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap_complete::CompletionCandidate;
use slipway_netmgr::proto::{ListFilter, Reply, Request};
use slipway_netmgr::Paths;

use super::{linux_backend, Conn};

/// The completer of network arguments: the network names starting with
/// `current`.
pub fn network_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let words: Vec<OsString> = std::env::args_os()
        .skip_while(|a| a != "--")
        .skip(1)
        .collect();
    let (command, root) = scan(&words);
    let paths = Paths::detect(root.as_deref());
    let Ok(mut conn) = Conn::open(&paths, || linux_backend(&paths)) else {
        return Vec::new();
    };
    let filter = filter_for(command.as_deref());
    let Ok(Reply::List { networks, .. }) = conn.call(Request::List { filter }) else {
        return Vec::new();
    };
    let prefix = current.to_string_lossy();
    networks
        .into_iter()
        .filter(|n| n.name.starts_with(&*prefix))
        .map(|n| CompletionCandidate::new(n.name))
        .collect()
}

/// The `net-*` command and the `--root` directory among the words of the
/// command line being completed (the first word is the program).
fn scan(words: &[OsString]) -> (Option<String>, Option<PathBuf>) {
    let mut command = None;
    let mut root = None;
    let mut words = words.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        if word == "--root" {
            root = words.next().map(PathBuf::from);
        } else if let Some(dir) = word.strip_prefix("--root=") {
            root = Some(PathBuf::from(dir));
        } else if command.is_none() && word.starts_with("net-") {
            command = Some(word.into_owned());
        }
    }
    (command, root.filter(|r| !r.as_os_str().is_empty()))
}

/// Which networks a command takes, as virsh's completer narrows them.
fn filter_for(command: Option<&str>) -> ListFilter {
    let all = ListFilter {
        active: true,
        inactive: true,
        persistent: false,
        transient: false,
        autostart: false,
        no_autostart: false,
    };
    match command {
        Some("net-start") => ListFilter {
            active: false,
            ..all
        },
        Some("net-destroy" | "net-dhcp-leases") => ListFilter {
            inactive: false,
            ..all
        },
        Some("net-undefine" | "net-autostart") => ListFilter {
            persistent: true,
            ..all
        },
        _ => all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn scan_finds_the_command_and_root() {
        assert_eq!(
            scan(&words("slipway --root /r net-start de")),
            (Some("net-start".into()), Some("/r".into()))
        );
        assert_eq!(
            scan(&words("slipway net-destroy --root=/x --network ")),
            (Some("net-destroy".into()), Some("/x".into()))
        );
        // A network called net-x is not the command.
        assert_eq!(
            scan(&words("slipway net-info net-x")),
            (Some("net-info".into()), None)
        );
        assert_eq!(scan(&words("slipway --root")), (None, None));
    }

    #[test]
    fn commands_narrow_the_list() {
        let start = filter_for(Some("net-start"));
        assert!(start.inactive && !start.active);
        let destroy = filter_for(Some("net-destroy"));
        assert!(destroy.active && !destroy.inactive);
        assert!(filter_for(Some("net-undefine")).persistent);
        let info = filter_for(Some("net-info"));
        assert!(info.active && info.inactive && !info.persistent);
    }
}
