//! `slipway doctor`: what this host allows slipway to do, each finding with
//! the command that fixes it.
//!
//! Theory of operation: every check looks at the real thing where it can
//! (it creates a user namespace in a child process, opens `/dev/net/tun`
//! and asks for a tap, runs `nft --version` from `PATH` as the firewall
//! code does, asks the kernel for its Landlock ABI and seccomp mode, reads
//! the routes and links of this network namespace), and reads the sysctls
//! that explain a failure from `/proc/sys` (or the `--sysctl-dir` tests
//! give it, for sysctls a test kernel lacks). Nothing is changed: the
//! defined networks are read without the first run's default network.
//!
//! A finding is `ok`, `warn` (slipway works, with less: no sandbox layer,
//! no ping from guests) or `fail` (a part of slipway cannot work here:
//! `slipway run`/`attach` without user namespaces or a tap, networks with
//! NAT without nft, a defined network whose bridge or subnet the host
//! already uses). Any `fail` makes the exit status 1.
//!
//! Hand-written rather than a crate: each check is a few lines of libc or
//! a file read, and what matters is the wording of the fixes.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use slipway_host::ipnet::Ipv4Net;
use slipway_netmgr::proto::{ListFilter, Lookup};
use slipway_netmgr::{Manager, Paths, RecordingBackend};

/// `slipway doctor` options.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the findings as JSON (an array of {check, status, detail, fix}).
    #[arg(long)]
    json: bool,
    /// Read sysctls from DIR instead of /proc/sys (tests).
    #[arg(long, value_name = "DIR", hide = true, default_value = "/proc/sys")]
    sysctl_dir: PathBuf,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

/// One finding.
#[derive(Debug, Serialize)]
struct Finding {
    /// Which check (`userns`, `tun`, `nft`, ...).
    check: &'static str,
    status: Status,
    /// What was found.
    detail: String,
    /// The command (or edit) that fixes it, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(
        check: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        let fix: String = fix.into();
        Finding {
            check,
            status,
            detail: detail.into(),
            fix: (!fix.is_empty()).then_some(fix),
        }
    }
}

/// The line printed after an error that says a permission was missing
/// (EPERM or EACCES, "Operation not permitted", "Permission denied",
/// anywhere in `message`): where to find out what this host allows.
pub fn permission_hint(message: &str) -> Option<&'static str> {
    [libc::EPERM, libc::EACCES]
        .into_iter()
        .any(|errno| message.contains(&std::io::Error::from_raw_os_error(errno).to_string()))
        .then_some(
            "hint: `slipway doctor` checks what this host allows (user namespaces, \
             /dev/net/tun, capabilities) and prints the command that fixes each gap",
        )
}

/// Runs the checks, prints the findings; 1 when one failed.
pub fn run(args: DoctorArgs, root: Option<&Path>) -> anyhow::Result<i32> {
    let sysctl = |key: &str| read_sysctl(&args.sysctl_dir, key);
    let mut findings = Vec::new();
    findings.extend(check_userns(&sysctl));
    findings.push(check_tun());
    findings.push(check_nft());
    findings.push(check_caps());
    findings.push(check_ping(&sysctl));
    findings.push(check_landlock());
    findings.push(check_seccomp());
    findings.extend(check_clashes(root));
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for f in &findings {
            let tag = match f.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("[{tag}] {}: {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                println!("       fix: {fix}");
            }
        }
    }
    Ok(i32::from(failed))
}

/// A sysctl's value (`user.max_user_namespaces`), trimmed; `None` when the
/// kernel has no such sysctl.
fn read_sysctl(dir: &Path, key: &str) -> Option<String> {
    let path = dir.join(key.replace('.', "/"));
    fs::read_to_string(path).ok().map(|v| v.trim().to_string())
}

/// Unprivileged user namespaces (`slipway run`, `attach`, the sandbox's
/// private mount namespace): a real attempt in a child, then the sysctls
/// that explain a refusal.
fn check_userns(sysctl: &dyn Fn(&str) -> Option<String>) -> Vec<Finding> {
    let mut out = Vec::new();
    let attempt = try_in_child(|| {
        // SAFETY: unshare in a forked child that only exits afterwards.
        unsafe { libc::unshare(libc::CLONE_NEWUSER) == 0 }
    });
    let max = sysctl("user.max_user_namespaces");
    let clone = sysctl("kernel.unprivileged_userns_clone");
    let apparmor = sysctl("kernel.apparmor_restrict_unprivileged_userns");
    match &attempt {
        Ok(()) => out.push(Finding::ok("userns", "a user namespace can be created")),
        Err(e) => out.push(Finding::bad(
            "userns",
            Status::Fail,
            format!("creating a user namespace failed: {e} (`slipway run` and `attach` need one)"),
            "see the sysctl findings below",
        )),
    }
    match max.as_deref().map(str::parse::<u64>) {
        Some(Ok(0)) => out.push(Finding::bad(
            "user.max_user_namespaces",
            Status::Fail,
            "is 0: no user namespaces at all",
            "sysctl -w user.max_user_namespaces=15000",
        )),
        Some(Ok(n)) => out.push(Finding::ok("user.max_user_namespaces", n.to_string())),
        _ => {}
    }
    if clone.as_deref() == Some("0") {
        out.push(Finding::bad(
            "kernel.unprivileged_userns_clone",
            Status::Fail,
            "is 0: only root may create user namespaces",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        ));
    }
    if apparmor.as_deref().is_some_and(|v| v != "0") {
        out.push(Finding::bad(
            "kernel.apparmor_restrict_unprivileged_userns",
            Status::Warn,
            "is set: AppArmor denies capabilities in user namespaces unprivileged programs create",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for slipway with `userns,`)",
        ));
    }
    out
}

/// Runs `f` in a forked child (a namespace change must not touch this
/// process); `Ok` when it returned true, else the errno it left.
fn try_in_child(f: impl FnOnce() -> bool) -> Result<(), std::io::Error> {
    // SAFETY: the child only runs `f` (an unshare) and _exits; the CLI is
    // single-threaded here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        let code = if f() {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
        };
        // SAFETY: _exit is async-signal-safe, right for a forked child.
        unsafe { libc::_exit(code.clamp(0, 255)) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        None => Err(std::io::Error::other("the probe process died")),
    }
}

/// `/dev/net/tun`: open it and ask for a tap as `slipway run` does.
fn check_tun() -> Finding {
    const TUN: &str = "/dev/net/tun";
    let file = match fs::OpenOptions::new().read(true).write(true).open(TUN) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::bad(
                "tun",
                Status::Fail,
                format!("{TUN} does not exist (taps for `run`, `attach` and guests need it)"),
                "modprobe tun, or: mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200",
            )
        }
        Err(e) => {
            return Finding::bad(
                "tun",
                Status::Fail,
                format!("cannot open {TUN}: {e}"),
                "chmod 0666 /dev/net/tun",
            )
        }
    };
    drop(file);
    // A tap as `slipway run` makes it: in a child, in a network namespace of
    // its own (and a user namespace, when not root), so that nothing
    // appears on this host; the tap goes with the child.
    // SAFETY: geteuid cannot fail.
    let flags = if unsafe { libc::geteuid() } == 0 {
        libc::CLONE_NEWNET
    } else {
        libc::CLONE_NEWUSER | libc::CLONE_NEWNET
    };
    let attempt = try_in_child(|| {
        // SAFETY: unshare and open in a forked child that exits right
        // after; an ifreq of zeros with a name and flags, read by TUNSETIFF.
        unsafe {
            if libc::unshare(flags) != 0 {
                return false;
            }
            let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if fd < 0 {
                return false;
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            for (d, s) in req.ifr_name.iter_mut().zip(b"doctor0") {
                *d = *s as libc::c_char;
            }
            req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
            libc::ioctl(fd, libc::TUNSETIFF, &req) == 0
        }
    });
    match attempt {
        Ok(()) => Finding::ok("tun", format!("{TUN} gives taps")),
        Err(e) => Finding::bad(
            "tun",
            Status::Fail,
            format!("{TUN} opens, but a tap in a network namespace of slipway's own failed: {e}"),
            "see the userns finding (without a user namespace only root can make the tap)",
        ),
    }
}

/// nft, for networks with NAT or routing (the firewall runs `nft` from PATH).
fn check_nft() -> Finding {
    match std::process::Command::new("nft").arg("--version").output() {
        Ok(out) if out.status.success() => Finding::ok(
            "nft",
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ),
        Ok(out) => Finding::bad(
            "nft",
            Status::Fail,
            format!(
                "`nft --version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "apt-get install --reinstall nftables",
        ),
        Err(e) => Finding::bad(
            "nft",
            Status::Fail,
            format!(
                "cannot run nft ({e}): networks with <forward mode='nat'/'route'> cannot start"
            ),
            "apt-get install nftables",
        ),
    }
}

/// The capabilities at hand: bridge networks need CAP_NET_ADMIN (root or
/// the daemon).
fn check_caps() -> Finding {
    use slipway_host::caps::{self, CapSet, Capability};
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let eff = caps::read(None, CapSet::Effective).unwrap_or_default();
    if eff.contains(&Capability::CAP_NET_ADMIN) {
        Finding::ok(
            "capabilities",
            format!(
                "uid {uid}, CAP_NET_ADMIN at hand ({} effective capabilities)",
                eff.len()
            ),
        )
    } else {
        Finding::bad(
            "capabilities",
            Status::Warn,
            format!("uid {uid} without CAP_NET_ADMIN: bridge networks only through the system daemon"),
            "sudo slipway net-start NAME (or start `slipway daemon` as root); user-mode networks need no capability",
        )
    }
}

/// ping from guests: unprivileged ICMP sockets for the caller's group.
fn check_ping(sysctl: &dyn Fn(&str) -> Option<String>) -> Finding {
    let key = "net.ipv4.ping_group_range";
    let Some(range) = sysctl(key) else {
        return Finding::bad(
            key,
            Status::Warn,
            "not present",
            "a kernel with ICMP sockets",
        );
    };
    let mut it = range.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(lo)), Some(Ok(hi))) = (it.next(), it.next()) else {
        return Finding::bad(key, Status::Warn, format!("unreadable: {range:?}"), "");
    };
    // SAFETY: getegid cannot fail.
    let gid = u64::from(unsafe { libc::getegid() });
    if (lo..=hi).contains(&gid) {
        Finding::ok(key, format!("{lo} {hi}: guests can ping (group {gid})"))
    } else {
        Finding::bad(
            key,
            Status::Warn,
            format!("{lo} {hi} leaves out group {gid}: ICMP echo from guests is dropped"),
            format!("sysctl -w {key}=\"0 2147483647\""),
        )
    }
}

/// Landlock, the sandbox's file-access layer.
fn check_landlock() -> Finding {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no ruleset and returns an integer.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi > 0 {
        Finding::ok("landlock", format!("ABI {abi}"))
    } else {
        let e = std::io::Error::last_os_error();
        Finding::bad(
            "landlock",
            Status::Warn,
            format!("not available ({e}): the sandbox runs without its file-access layer (--require-sandbox refuses to run)"),
            "boot with lsm=landlock,... (CONFIG_SECURITY_LANDLOCK=y), see docs/sandbox.md",
        )
    }
}

/// seccomp filters, the sandbox's system-call allowlist: a child installs
/// a filter that allows everything, compiled and installed by seccompiler
/// as the sandbox's allowlist is.
fn check_seccomp() -> Finding {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    let attempt = try_in_child(|| {
        // No rule: every call takes the mismatch action, Allow.
        let Ok(arch) = std::env::consts::ARCH.try_into() else {
            return false;
        };
        let no_rules = std::collections::BTreeMap::new();
        let filter = SeccompFilter::new(
            no_rules,
            SeccompAction::Allow,
            SeccompAction::KillProcess,
            arch,
        );
        let program = filter.and_then(BpfProgram::try_from);
        program.is_ok_and(|p| seccompiler::apply_filter(&p).is_ok())
    });
    match attempt {
        Ok(()) => Finding::ok("seccomp", "filters can be installed"),
        Err(e) => Finding::bad(
            "seccomp",
            Status::Fail,
            format!("installing a seccomp filter failed ({e}): the sandbox cannot be applied"),
            "a kernel with CONFIG_SECCOMP_FILTER=y (or, unconfined: --no-sandbox)",
        ),
    }
}

/// Defined networks whose bridge name or subnet the host already uses
/// (libvirt's virbr0, a VPN's route): their start would fail.
fn check_clashes(root: Option<&Path>) -> Vec<Finding> {
    let mut out = Vec::new();
    let paths = Paths {
        // Reading only: no default network created by a first run.
        first_run_default: false,
        ..Paths::detect(root)
    };
    let manager = Manager::new(paths, Box::new(RecordingBackend));
    let filter = ListFilter {
        active: false,
        inactive: true,
        ..ListFilter::default()
    };
    let nets = match manager.list(&filter) {
        Ok((nets, _)) => nets,
        Err(e) => {
            out.push(Finding::bad(
                "networks",
                Status::Warn,
                format!("cannot read the defined networks: {e}"),
                "",
            ));
            return out;
        }
    };
    let routes = slipway_host::routes::list_v4().unwrap_or_default();
    let mut clashes = 0;
    for info in nets {
        let Ok(xml) = manager.dumpxml(&Lookup::any(&info.name), true) else {
            continue;
        };
        let Ok(net) = slipway_netxml::Network::from_xml(&xml) else {
            continue;
        };
        if let Some(bridge) = net.bridge.as_ref().and_then(|b| b.name.as_deref()) {
            // Asked of the kernel: /sys may be another namespace's.
            if slipway_hostnet::netlink::link_index(bridge).is_some() {
                clashes += 1;
                out.push(Finding::bad(
                    "bridge-name",
                    Status::Fail,
                    format!(
                        "network {} (inactive) wants bridge {bridge}, which exists on this host{}",
                        info.name,
                        if bridge.starts_with("virbr") { " (libvirt's?)" } else { "" }
                    ),
                    format!(
                        "slipway net-edit {} (another <bridge name=...>), or remove the other one: ip link del {bridge} / virsh net-destroy NAME",
                        info.name
                    ),
                ));
            }
        }
        for ip in &net.ips {
            let std::net::IpAddr::V4(addr) = ip.address else {
                continue;
            };
            let prefix = slipway_netmgr::plan::ip_prefix(ip);
            let Ok(subnet) = Ipv4Net::new(addr, prefix).map(|n| n.trunc()) else {
                continue;
            };
            // A default route is no clash.
            if let Some(r) = routes.iter().find(|r| {
                !r.is_default() && r.destination == subnet.network() && r.mask == subnet.netmask()
            }) {
                clashes += 1;
                out.push(Finding::bad(
                    "subnet",
                    Status::Fail,
                    format!(
                        "network {} (inactive) uses {subnet}, already routed through {}",
                        info.name, r.ifname
                    ),
                    format!(
                        "slipway net-edit {} (another <ip address=...>), or: ip route del {subnet} dev {}",
                        info.name, r.ifname
                    ),
                ));
            }
        }
    }
    if clashes == 0 {
        out.push(Finding::ok(
            "clashes",
            "no defined network's bridge name or subnet is in use on this host",
        ));
    }
    out
}
