//! `slipway-bridge-helper`: a drop-in for qemu-bridge-helper, which QEMU
//! runs for `-netdev bridge,br=BR,helper=PATH` as `PATH --use-vnet
//! --fd=N --br=BR`, N being one end of a unix socket pair. The helper
//! checks the bridge against the ACL file, creates a tap, attaches it to
//! the bridge and passes its descriptor back over N (SCM_RIGHTS).
//!
//! It is its own small program, not a subcommand of `slipway`, because it
//! is meant to be installed setuid root (or with `cap_net_admin+ep`) and a
//! privileged program must do nothing but its one job. [`helper_main`]
//! runs it, in this order, as qemu-bridge-helper does:
//!
//! 1. it notes whether the run gained privileges at exec (setuid, setgid,
//!    file capabilities: [`privileged_exec`]) and forgets its whole
//!    environment, so no variable (logging, `PATH`, locale) can steer it;
//! 2. it switches to the caller's real uid and gid, keeping only
//!    CAP_NET_ADMIN (effective and permitted); the bounding, inheritable
//!    and ambient sets are emptied and no-new-privileges is set
//!    ([`drop_privileges`]);
//! 3. it reads the ACL file, as the caller: `/etc/qemu/bridge.conf`
//!    ([`DEFAULT_ACL`]); `--acl=FILE` chooses another only when the run
//!    gained no privileges (the caller could do all it does anyway);
//! 4. it creates one tap, attaches it to the one bridge the ACL allowed and
//!    sends its descriptor back. It runs no other program.
//!
//! ACL format (as qemu-bridge-helper): one rule a line, `allow BRIDGE`,
//! `allow all`, `deny BRIDGE`, `deny all`, `include FILE`; `#` starts a
//! comment. A relative `include` is found in the including file's
//! directory (never the caller's working directory). The bridge must be
//! allowed by some rule and denied by none.

#![deny(missing_docs)]

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use slipway_host::caps::{self, CapSet, Capability, CapsHashSet};
use slipway_hostnet::netlink::{link_index, link_mtu, Netlink};
use slipway_hostnet::tap::{Tap, TapMode};

/// The ACL file qemu-bridge-helper reads.
pub const DEFAULT_ACL: &str = "/etc/qemu/bridge.conf";

/// How deep `include` may nest (a loop ends here with an error).
pub const MAX_INCLUDE_DEPTH: usize = 10;

/// The MAC qemu-bridge-helper gives the tap: the largest unicast address,
/// so the bridge never takes it as its own.
const TAP_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// qemu-bridge-helper's command line (and the one option of ours).
pub const USAGE: &str = "usage: slipway-bridge-helper [--use-vnet] --br=BRIDGE --fd=FD\n\
     (--acl=FILE instead of /etc/qemu/bridge.conf: only when not setuid, setgid or file-capable)";

/// Everything the helper can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is not qemu-bridge-helper's.
    #[error("{0}\n{USAGE}")]
    Usage(String),
    /// An ACL file cannot be read.
    #[error("cannot read ACL file {path}: {cause}")]
    ReadAcl {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not chained).
        cause: std::io::Error,
    },
    /// A line of an ACL file is not a rule.
    #[error("{path}:{line}: {message}")]
    AclSyntax {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// `include`s nest deeper than [`MAX_INCLUDE_DEPTH`] (a loop, usually).
    #[error("{0}: includes nested more than {MAX_INCLUDE_DEPTH} deep")]
    IncludeDepth(PathBuf),
    /// The ACL does not allow the bridge.
    #[error("access denied by acl file: bridge {bridge} is not allowed by {acl}")]
    Denied {
        /// The bridge asked for.
        bridge: String,
        /// The ACL file read.
        acl: PathBuf,
    },
    /// `--acl` on a run that gained privileges at exec.
    #[error(
        "--acl is refused when running setuid/setgid or with file capabilities: the ACL is {DEFAULT_ACL}"
    )]
    AclRefused,
    /// The bridge name is not an interface name.
    #[error("'{0}' is not a valid bridge name")]
    BadBridge(String),
    /// The bridge does not exist.
    #[error("bridge {0} does not exist")]
    NoBridge(String),
    /// Switching user or dropping capabilities failed: the helper stops.
    #[error("cannot drop privileges ({what}): {cause}")]
    Privileges {
        /// The step that failed.
        what: &'static str,
        /// Why.
        cause: String,
    },
    /// Creating or attaching the tap failed.
    #[error(transparent)]
    Host(#[from] slipway_hostnet::Error),
    /// The tap disappeared between its creation and its configuration.
    #[error("tap {0} vanished after it was created")]
    TapVanished(String),
    /// The descriptor could not be sent back.
    #[error("cannot pass the tap to QEMU on fd {fd}: {cause}")]
    SendFd {
        /// The socket descriptor given with `--fd`.
        fd: RawFd,
        /// The OS error.
        cause: std::io::Error,
    },
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One ACL rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclRule {
    /// `allow all`.
    AllowAll,
    /// `allow BRIDGE`.
    Allow(String),
    /// `deny all`.
    DenyAll,
    /// `deny BRIDGE`.
    Deny(String),
}

/// Reads an ACL file and the files it includes, rules in order.
pub fn read_acl(path: &Path) -> Result<Vec<AclRule>> {
    let mut rules = Vec::new();
    read_acl_into(path, 0, &mut rules)?;
    Ok(rules)
}

fn read_acl_into(path: &Path, depth: usize, rules: &mut Vec<AclRule>) -> Result<()> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(Error::IncludeDepth(path.to_path_buf()));
    }
    let text = std::fs::read_to_string(path).map_err(|cause| Error::ReadAcl {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_acl(
        &text,
        path,
        &mut |inc, rules| read_acl_into(inc, depth + 1, rules),
        rules,
    )
}

/// Where `include FILE` in the ACL file `including` points: FILE itself
/// when absolute, else FILE in `including`'s directory.
pub fn include_path(including: &Path, file: &str) -> PathBuf {
    let file = Path::new(file);
    match including.parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_path_buf(),
    }
}

/// Parses ACL text read from `path`; `include` lines call `include` with
/// the included file's path ([`include_path`]).
pub fn parse_acl(
    text: &str,
    path: &Path,
    include: &mut dyn FnMut(&Path, &mut Vec<AclRule>) -> Result<()>,
    rules: &mut Vec<AclRule>,
) -> Result<()> {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let syntax = |message: String| Error::AclSyntax {
            path: path.to_path_buf(),
            line: n + 1,
            message,
        };
        let mut words = line.split_whitespace();
        let (Some(cmd), Some(arg), None) = (words.next(), words.next(), words.next()) else {
            return Err(syntax(format!(
                "expected 'allow NAME', 'deny NAME' or 'include FILE', got '{line}'"
            )));
        };
        match (cmd, arg) {
            ("allow", "all") => rules.push(AclRule::AllowAll),
            ("allow", b) => rules.push(AclRule::Allow(b.to_string())),
            ("deny", "all") => rules.push(AclRule::DenyAll),
            ("deny", b) => rules.push(AclRule::Deny(b.to_string())),
            ("include", f) => include(&include_path(path, f), rules)?,
            (other, _) => return Err(syntax(format!("unknown command '{other}'"))),
        }
    }
    Ok(())
}

/// True when some rule allows `bridge` and none denies it.
pub fn allowed(rules: &[AclRule], bridge: &str) -> bool {
    let mut allow = false;
    for r in rules {
        match r {
            AclRule::AllowAll => allow = true,
            AclRule::Allow(b) if b == bridge => allow = true,
            AclRule::DenyAll => return false,
            AclRule::Deny(b) if b == bridge => return false,
            _ => {}
        }
    }
    allow
}

/// The helper's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperRequest {
    /// `--use-vnet`: open the tap with the virtio-net header.
    pub use_vnet: bool,
    /// `--br`: the bridge.
    pub bridge: String,
    /// `--fd`: the unix socket to send the tap on.
    pub fd: RawFd,
    /// The ACL file (`None`: [`DEFAULT_ACL`]).
    pub acl: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`: print [`USAGE`].
    Help,
    /// Attach a tap to a bridge.
    Attach(HelperRequest),
}

/// Parses the arguments after the program name as qemu-bridge-helper
/// does: `--use-vnet`, `--br=BRIDGE`, `--fd=FD` in any order (the last of
/// a repeated option wins), `--br` and `--fd` required; `--help` alone.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command> {
    let mut use_vnet = false;
    let mut bridge = None;
    let mut fd = None;
    let mut acl = None;
    let args: Vec<OsString> = args.into_iter().collect();
    if args.len() == 1 && args[0] == "--help" {
        return Ok(Command::Help);
    }
    for arg in args {
        let Some(arg) = arg.to_str() else {
            return Err(Error::Usage(format!(
                "argument {} is not UTF-8",
                arg.to_string_lossy()
            )));
        };
        if arg == "--use-vnet" {
            use_vnet = true;
        } else if let Some(b) = arg.strip_prefix("--br=") {
            bridge = Some(b.to_string());
        } else if let Some(n) = arg.strip_prefix("--fd=") {
            fd = Some(
                n.parse::<RawFd>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| Error::Usage(format!("--fd={n}: not a descriptor number")))?,
            );
        } else if let Some(a) = arg.strip_prefix("--acl=") {
            acl = Some(PathBuf::from(a));
        } else {
            return Err(Error::Usage(format!("unknown argument '{arg}'")));
        }
    }
    match (bridge, fd) {
        (Some(bridge), Some(fd)) => Ok(Command::Attach(HelperRequest {
            use_vnet,
            bridge,
            fd,
            acl,
        })),
        _ => Err(Error::Usage("--br and --fd are required".into())),
    }
}

pub use slipway_host::privileged_exec;

/// Removes every environment variable, so that nothing later in this
/// process (this crate or a library) can be steered by the caller's
/// environment.
fn forget_environment() {
    let names: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for name in names {
        std::env::remove_var(name);
    }
}

/// Turns the failure of privilege step `what` (a caps, io or host error)
/// into [`Error::Privileges`].
fn privileges<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Privileges {
        what,
        cause: e.to_string(),
    }
}

/// `prctl(option, arg, 0, 0, 0)` with every argument at full width.
fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &'static str) -> Result<()> {
    let zero: libc::c_ulong = 0;
    // SAFETY: the options used here take plain integer arguments.
    if unsafe { libc::prctl(option, arg, zero, zero, zero) } != 0 {
        return Err(privileges(what)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Keeps only CAP_NET_ADMIN, as qemu-bridge-helper does: every other
/// capability goes (effective, permitted, inheritable, ambient; the
/// bounding set is emptied whenever the process may, i.e. it holds
/// CAP_SETPCAP: root, or setuid root); a `privileged` run (see
/// [`privileged_exec`]) switches to the caller's real uid and gid first,
/// keeping its supplementary groups; no-new-privileges is set last.
pub fn drop_privileges(privileged: bool) -> Result<()> {
    let mut keep = CapsHashSet::new();
    if caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_ADMIN)
        .map_err(privileges("reading the permitted set"))?
    {
        keep.insert(Capability::CAP_NET_ADMIN);
    }
    caps::clear(None, CapSet::Ambient).map_err(privileges("clearing the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(privileges("clearing the inheritable set"))?;
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(privileges("reading the effective set"))?
    {
        slipway_host::clear_bounding_set().map_err(privileges("clearing the bounding set"))?;
    }
    if privileged {
        // SAFETY: the id getters only read process state.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        // Keep the permitted set across the switch away from uid 0.
        prctl(libc::PR_SET_KEEPCAPS, 1, "keeping capabilities")?;
        // SAFETY: plain system calls with integer arguments.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(privileges("switching to the real group")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(privileges("switching to the real user")(
                std::io::Error::last_os_error(),
            ));
        }
        prctl(libc::PR_SET_KEEPCAPS, 0, "keeping capabilities")?;
    }
    caps::set(None, CapSet::Effective, &keep).map_err(privileges("setting the effective set"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(privileges("setting the permitted set"))?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "setting no-new-privileges")
}

/// The whole helper, given the arguments after the program name: notes
/// whether the run is privileged, forgets the environment, drops
/// privileges, then parses the command line and does what it asks.
pub fn helper_main(args: impl IntoIterator<Item = OsString>) -> Result<()> {
    let privileged = privileged_exec();
    forget_environment();
    drop_privileges(privileged)?;
    match parse_args(args)? {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Attach(req) => run(&req, privileged),
    }
}

/// Attaches a tap to `req.bridge` when the ACL allows it and sends its
/// descriptor back on `req.fd`. Call it after [`drop_privileges`];
/// `privileged` (from [`privileged_exec`]) refuses `req.acl`.
pub fn run(req: &HelperRequest, privileged: bool) -> Result<()> {
    if req.acl.is_some() && privileged {
        return Err(Error::AclRefused);
    }
    if !slipway_netxml::interface::valid_ifname(&req.bridge) {
        return Err(Error::BadBridge(req.bridge.clone()));
    }
    let acl = req
        .acl
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ACL));
    let rules = read_acl(&acl)?;
    if !allowed(&rules, &req.bridge) {
        return Err(Error::Denied {
            bridge: req.bridge.clone(),
            acl,
        });
    }
    let bridge_index =
        link_index(&req.bridge).ok_or_else(|| Error::NoBridge(req.bridge.clone()))?;
    let tap = Tap::open("tap%d", TapMode::Create, req.use_vnet)?;
    let index = link_index(&tap.name).ok_or_else(|| Error::TapVanished(tap.name.clone()))?;
    let mut nl = Netlink::open()?;
    nl.set_mac(index, &tap.name, TAP_MAC)?;
    nl.set_mtu(index, &tap.name, link_mtu(&req.bridge)?)?;
    nl.set_master(index, &tap.name, bridge_index, &req.bridge)?;
    nl.set_up(index, &tap.name)?;
    slipway_host::fdpass::send_fd(req.fd, tap.fd.as_raw_fd())
        .map_err(|cause| Error::SendFd { fd: req.fd, cause })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<AclRule> {
        let mut v = Vec::new();
        parse_acl(text, Path::new("t"), &mut |_, _| Ok(()), &mut v).unwrap();
        v
    }

    #[test]
    fn deny_wins_and_all_works() {
        assert!(allowed(&rules("allow br0\n"), "br0"));
        assert!(!allowed(&rules("allow br0\n"), "br1"));
        assert!(allowed(&rules("# c\nallow all\n"), "br1"));
        assert!(!allowed(&rules("allow all\ndeny br1\n"), "br1"));
        assert!(!allowed(&rules("deny all\nallow br0"), "br0"));
        assert!(!allowed(&rules(""), "br0"));
    }

    #[test]
    fn includes_nest_and_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("inner.conf");
        std::fs::write(&inner, "allow br7 # comment\n").unwrap();
        let outer = d.path().join("bridge.conf");
        std::fs::write(&outer, format!("\ninclude {}\n", inner.display())).unwrap();
        assert_eq!(
            read_acl(&outer).unwrap(),
            vec![AclRule::Allow("br7".into())]
        );
        std::fs::write(&inner, format!("include {}\n", outer.display())).unwrap();
        assert!(read_acl(&outer).unwrap_err().to_string().contains("nested"));
        std::fs::write(&inner, "permit br0\n").unwrap();
        let e = read_acl(&outer).unwrap_err().to_string();
        assert!(e.contains("inner.conf:1") && e.contains("permit"), "{e}");
        std::fs::write(&inner, "allow\n").unwrap();
        assert!(read_acl(&outer).is_err());
    }

    /// A relative `include` is looked up beside the including file, not in
    /// the working directory (which a setuid run's caller chooses).
    #[test]
    fn relative_includes_resolve_against_the_including_file() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("more.conf"), "deny br1\n").unwrap();
        let outer = sub.join("bridge.conf");
        std::fs::write(&outer, "allow br1\ninclude more.conf\n").unwrap();
        let rules = read_acl(&outer).unwrap();
        assert_eq!(
            rules,
            vec![AclRule::Allow("br1".into()), AclRule::Deny("br1".into())]
        );
        assert!(!allowed(&rules, "br1"));
        assert_eq!(
            include_path(Path::new("/etc/qemu/bridge.conf"), "/abs.conf"),
            Path::new("/abs.conf")
        );
    }

    fn args(a: &[&str]) -> Result<Command> {
        parse_args(a.iter().map(OsString::from))
    }

    #[test]
    fn command_line_is_qemu_bridge_helpers() {
        assert_eq!(
            args(&["--use-vnet", "--fd=3", "--br=br0"]).unwrap(),
            Command::Attach(HelperRequest {
                use_vnet: true,
                bridge: "br0".into(),
                fd: 3,
                acl: None,
            })
        );
        assert_eq!(args(&["--help"]).unwrap(), Command::Help);
        for bad in [
            &["--br=br0"][..],
            &["--fd=3"],
            &["--br=br0", "--fd=x"],
            &["--br=br0", "--fd=-1"],
            &["--br", "br0", "--fd=3"],
            &["--br=br0", "--fd=3", "--verbose"],
        ] {
            assert!(matches!(args(bad), Err(Error::Usage(_))), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The command line is a setuid program's user input: whatever it
        /// is, an answer and no panic; so for ACL text.
        #[test]
        fn random_command_lines_and_acl_text_never_panic(
            argv in proptest::collection::vec("(--(br|fd|acl|use-vnet|help)=?)?\\PC{0,12}", 0..6),
            text in "((allow|deny|include|#) ?\\PC{0,10}\n?){0,8}",
        ) {
            if let Ok(Command::Attach(req)) = parse_args(argv.iter().map(OsString::from)) {
                proptest::prop_assert!(req.fd >= 0);
            }
            let mut v = Vec::new();
            let _ = parse_acl(&text, Path::new("t"), &mut |_, _| Ok(()), &mut v);
        }
    }

    /// A privileged run never reads a caller-chosen ACL.
    #[test]
    fn acl_option_is_refused_when_privileged() {
        let req = HelperRequest {
            use_vnet: false,
            bridge: "br0".into(),
            fd: 0,
            acl: Some("/nonexistent/acl".into()),
        };
        assert!(matches!(run(&req, true), Err(Error::AclRefused)));
        assert!(matches!(run(&req, false), Err(Error::ReadAcl { .. })));
    }
}
