//! Network namespaces for slipway's user-mode stack: how a container's
//! namespace gets a tap device whose other end is the stack.
//!
//! Rootless container tools (podman, rootlesskit, buildah) give a network
//! namespace its outside connectivity the way slirp4netns does: a helper
//! process enters the namespace, opens `/dev/net/tun` with
//! `IFF_TAP | IFF_NO_PI`, configures the device, and passes the descriptor
//! back over a unix socket (`SCM_RIGHTS`). The stack's own sockets stay in
//! the host namespace; only the tap lives inside.
//!
//! Two ways in:
//! - [`open_tap_in`]: join an existing namespace (a process's, or a bind
//!   mount such as `ip netns` makes), like `slirp4netns PID tap0`.
//! - [`spawn_in_new_namespace`]: make a new user + network + mount
//!   namespace (works unprivileged), give it a configured tap and its own
//!   `resolv.conf`, and start a command in it, like `pasta -- CMD`.
//!
//! And [`LoopbackBinder`]: a helper that stays in a namespace and makes
//! sockets on its loopback for pasta's `-T`/`-U`.
//!
//! The helper is a forked child of a single-threaded process: between
//! `fork` and `exec`/`_exit` it only makes system calls on data prepared
//! before the fork (no allocation), so it is safe even if the caller has
//! threads.

#![deny(missing_docs)]

mod binder;
mod child;
mod fail;
mod ifconfig;

use std::ffi::{CString, OsString};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::process::{PidfdFlags, Signal};

pub use binder::{LoopbackBinder, LoopbackSocket};
use child::{ChildPlan, Join};

/// Default name of the tap device inside the namespace.
pub const DEFAULT_IFNAME: &str = "tap0";

/// Why a namespace or its tap could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A step failed; `what` names it (and the path or device involved).
    #[error("{what}")]
    Step {
        /// What was being done.
        what: String,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// An argument cannot be handed to the kernel.
    #[error("{0}")]
    Invalid(String),
    /// The confinement of a helper could not be prepared.
    #[error("preparing the confinement of the namespace's loopback helper: {0}")]
    Sandbox(#[from] slipway_sandbox::SandboxError),
}

fn step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::Step { what, source }
}

/// IPv4 configuration of the tap (`--configure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Setup {
    /// The namespace's address on the tap (slirp4netns: 10.0.2.100).
    pub address: Ipv4Addr,
    /// Prefix length of the tap's network.
    pub prefix: u8,
    /// Default gateway: the stack's host address.
    pub gateway: Ipv4Addr,
}

/// IPv6 configuration of the tap (pasta's `--config-net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Setup {
    /// The namespace's address on the tap, added without duplicate
    /// address detection (`nodad`).
    pub address: Ipv6Addr,
    /// Prefix length of the address.
    pub prefix: u8,
    /// Default gateway, usually link-local (reached through the tap).
    pub gateway: Ipv6Addr,
}

/// The tap device to create inside the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapSetup {
    /// Interface name (at most 15 bytes).
    pub ifname: String,
    /// Link MTU.
    pub mtu: u32,
    /// Transmit queue length: packets the namespace may queue toward the
    /// stack. Size it to the window the stack advertises (see
    /// [`txqueuelen_for_window`]) or bursts overflow it.
    pub txqueuelen: u32,
    /// Address and default route; `None` leaves the device unconfigured
    /// (but up, as slirp4netns does without `--configure`).
    pub ipv4: Option<Ipv4Setup>,
    /// IPv6 address and default route; `None` leaves IPv6 to the kernel
    /// (link-local, and router advertisements).
    pub ipv6: Option<Ipv6Setup>,
    /// The tap's MAC address; `None` keeps the random one the kernel gave.
    pub mac: Option<[u8; 6]>,
}

/// Transmit queue length for a tap whose peer advertises windows of up to
/// `window` bytes at `mtu`: one full window of full-size segments, plus
/// room for ACKs and other flows, and never below the kernel's default.
pub fn txqueuelen_for_window(window: u32, mtu: u32) -> u32 {
    let mss = mtu.saturating_sub(40).max(1);
    window.div_ceil(mss).saturating_add(256).max(1000)
}

/// Which existing namespace to join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The network namespace of a process (and its user namespace when
    /// that differs from ours).
    Pid(u32),
    /// A network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`),
    /// optionally with the user namespace to join first.
    Path {
        /// The network namespace.
        netns: PathBuf,
        /// The user namespace owning it, if it must be joined.
        userns: Option<PathBuf>,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pid(pid) => write!(f, "the network namespace of process {pid}"),
            Target::Path { netns, .. } => write!(f, "network namespace {}", netns.display()),
        }
    }
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString, NetnsError> {
    CString::new(bytes).map_err(|_| NetnsError::Invalid(format!("{what} contains a NUL byte")))
}

fn ifname_bytes(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ], NetnsError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(NetnsError::Invalid(format!(
            "invalid interface name {name:?}: 1 to {} bytes, no '/', space or NUL",
            libc::IFNAMSIZ - 1
        )));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

/// Whether two namespace files are the same namespace.
fn same_namespace(a: &Path, b: &Path) -> Result<bool, NetnsError> {
    use std::os::unix::fs::MetadataExt;
    let ma = std::fs::metadata(a).map_err(step(format!("{}", a.display())))?;
    let mb = std::fs::metadata(b).map_err(step(format!("{}", b.display())))?;
    Ok(ma.ino() == mb.ino() && ma.dev() == mb.dev())
}

/// Enters `target`'s network namespace in a helper process, creates and
/// configures the tap there, and returns its descriptor (non-blocking,
/// close-on-exec). The caller stays in its own namespaces.
pub fn open_tap_in(target: &Target, tap: &TapSetup) -> Result<OwnedFd, NetnsError> {
    let (join, netns) = join_of(target)?;
    let plan = ChildPlan {
        join,
        tap: child::TapPlan::new(tap)?,
    };
    let (pid, ours) = child::fork_with_socket(|sock| child::run(&plan, sock))?;
    let received = child::receive_tap(ours.as_raw_fd(), &netns);
    let status = child::wait(pid);
    let fd = received?;
    if let Err(err) = status {
        return Err(step("the namespace helper")(err));
    }
    Ok(fd)
}

/// How a helper joins `target`: its network namespace, and its user
/// namespace when that is not ours (by PID) or is given (by path); and
/// the network namespace's path.
fn join_of(target: &Target) -> Result<(Join, PathBuf), NetnsError> {
    let (netns, userns) = match target {
        Target::Pid(pid) => {
            let proc = PathBuf::from(format!("/proc/{pid}/ns"));
            let netns = proc.join("net");
            if !netns.exists() {
                return Err(NetnsError::Invalid(format!("no process with PID {pid}")));
            }
            let userns = proc.join("user");
            let join_user = !same_namespace(&userns, Path::new("/proc/self/ns/user"))?;
            (netns, join_user.then_some(userns))
        }
        Target::Path { netns, userns } => (netns.clone(), userns.clone()),
    };
    let join = Join::Existing {
        userns: userns
            .as_deref()
            .map(|p| cstring("user namespace path", p.as_os_str().as_bytes()))
            .transpose()?,
        netns: cstring("network namespace path", netns.as_os_str().as_bytes())?,
    };
    Ok((join, netns))
}

/// A descriptor (pidfd) that becomes readable when process `pid` exits.
pub fn process_exit_fd(pid: u32) -> Result<OwnedFd, NetnsError> {
    let invalid = || NetnsError::Invalid(format!("invalid PID {pid}"));
    let raw = libc::pid_t::try_from(pid).map_err(|_| invalid())?;
    let pid = rustix::process::Pid::from_raw(raw).ok_or_else(invalid)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty())
        .map_err(|e| step(format!("pidfd_open({raw})"))(e.into()))
}

/// A command running in its own new namespaces.
#[derive(Debug)]
pub struct Spawned {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    go: Option<OwnedFd>,
}

impl Spawned {
    /// The command's process ID.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// A descriptor that becomes readable when the command has exited
    /// (a pidfd), for the event loop.
    pub fn exit_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// The descriptor to write one byte to (or close) when the stack is
    /// ready: the command starts only then. Dropping [`Spawned::take_go`]'s
    /// result without writing makes the helper exit without running it.
    pub fn take_go(&mut self) -> Option<OwnedFd> {
        self.go.take()
    }

    /// Asks the command to stop (SIGTERM), if it is still running.
    pub fn terminate(&self) {
        // Through the pidfd, which cannot hit a reused PID.
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::TERM);
    }

    /// Waits for the command to end and returns its exit code (128 plus
    /// the signal number when a signal killed it, as shells report it).
    pub fn wait(self) -> Result<i32, NetnsError> {
        let status = child::wait_status(self.pid).map_err(step("waiting for the command"))?;
        Ok(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            1
        })
    }
}

/// Starts `argv` in a new user + network + mount namespace (works
/// unprivileged: our user and group map to root inside), with a tap
/// configured by `tap`, loopback up, and `resolv_conf` (a file naming the
/// stack's DNS address) bind-mounted over `/etc/resolv.conf`.
///
/// The command is started only once the stack is ready: write a byte to
/// [`Spawned::take_go`]'s descriptor. Returns the tap's descriptor
/// (non-blocking, close-on-exec) and the command.
///
/// Call it before the stack opens its sockets: the command's process is
/// dumpable from the moment it makes its user namespace (it is the
/// container's own; the stack's loopback helper joins its namespaces
/// through `/proc/PID/ns`), and until its `exec` it holds a copy of every
/// descriptor open at the fork.
pub fn spawn_in_new_namespace(
    argv: &[OsString],
    tap: &TapSetup,
    resolv_conf: Option<&Path>,
) -> Result<(OwnedFd, Spawned), NetnsError> {
    if argv.is_empty() {
        return Err(NetnsError::Invalid("no command given".into()));
    }
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| cstring("a command argument", a.as_bytes()))
        .collect::<Result<_, _>>()?;
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let plan = ChildPlan {
        join: Join::New {
            uid_map: format!("0 {uid} 1\n").into_bytes(),
            gid_map: format!("0 {gid} 1\n").into_bytes(),
            resolv_conf: resolv_conf
                .map(|p| cstring("resolv.conf path", p.as_os_str().as_bytes()))
                .transpose()?,
            argv,
        },
        tap: child::TapPlan::new(tap)?,
    };
    let exec = plan.exec_pointers();
    let (pid, ours) = child::fork_with_socket(|sock| child::run_and_exec(&plan, &exec, sock))?;
    // Our own child cannot have been reaped: the pidfd names it.
    let pidfd = match process_exit_fd(pid as u32) {
        Ok(fd) => fd,
        Err(err) => {
            // SAFETY: our child; killed and reaped so it does not linger.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = child::wait(pid);
            return Err(err);
        }
    };
    match child::receive_tap(ours.as_raw_fd(), Path::new("a new namespace")) {
        Ok(fd) => Ok((
            fd,
            Spawned {
                pid,
                pidfd,
                go: Some(ours),
            },
        )),
        Err(err) => {
            let _ = child::wait(pid);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txqueuelen_covers_a_window_of_full_segments() {
        // 8 MiB of 1460-byte segments.
        assert_eq!(txqueuelen_for_window(8 << 20, 1500), 5746 + 256);
        // Large MTU: the kernel default is enough.
        assert_eq!(txqueuelen_for_window(8 << 20, 65520), 1000);
        assert_eq!(txqueuelen_for_window(0, 0), 1000);
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(ifname_bytes("tap0").is_ok());
        for bad in ["", "a/b", "sixteen-bytes-xx", "a b"] {
            let err = ifname_bytes(bad).unwrap_err().to_string();
            assert!(err.contains("invalid interface name"), "{bad}: {err}");
        }
    }
}
