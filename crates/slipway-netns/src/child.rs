//! The helper child: everything that runs between `fork` and `exec` or
//! `_exit`, and the parent's side of the conversation with it.
//!
//! The child only makes system calls on a plan prepared before the fork;
//! it never allocates (another thread of the parent may have held the
//! allocator's lock at fork time). It reports over a `SOCK_SEQPACKET`
//! socketpair: one message, either "ok" with the tap descriptor attached
//! (`SCM_RIGHTS`) or "failed" with an errno and a static description.

use std::ffi::CString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::fail::{last, Fail};
use crate::ifconfig::{open_tap, CtlSocket};
use crate::{ifname_bytes, NetnsError, TapSetup};

/// How the child gets into the namespace.
pub(crate) enum Join {
    /// `setns` into existing namespaces.
    Existing {
        userns: Option<CString>,
        netns: CString,
    },
    /// `unshare` new ones, map our IDs to root, then run a command.
    New {
        uid_map: Vec<u8>,
        gid_map: Vec<u8>,
        resolv_conf: Option<CString>,
        argv: Vec<CString>,
    },
}

/// The tap to create, in kernel form.
pub(crate) struct TapPlan {
    name: [libc::c_char; libc::IFNAMSIZ],
    mtu: i32,
    txqueuelen: u32,
    ipv4: Option<(Ipv4Addr, u8, Ipv4Addr)>,
    ipv6: Option<(Ipv6Addr, u8, Ipv6Addr)>,
    mac: Option<[u8; 6]>,
    /// `/proc/sys/net/ipv4/conf/NAME/arp_notify`: set so the namespace
    /// announces its address (gratuitous ARP) when the tap comes up, and
    /// the stack knows where to send forwarded connections at once.
    arp_notify: CString,
}

impl TapPlan {
    pub(crate) fn new(tap: &TapSetup) -> Result<TapPlan, NetnsError> {
        let int = |what: &str, v: u32| {
            i32::try_from(v).map_err(|_| NetnsError::Invalid(format!("{what} {v} is too large")))
        };
        Ok(TapPlan {
            name: ifname_bytes(&tap.ifname)?,
            mtu: int("MTU", tap.mtu)?,
            txqueuelen: tap.txqueuelen,
            ipv4: tap.ipv4.map(|c| (c.address, c.prefix, c.gateway)),
            ipv6: tap.ipv6.map(|c| (c.address, c.prefix, c.gateway)),
            mac: tap.mac,
            arp_notify: crate::cstring(
                "interface name",
                format!("/proc/sys/net/ipv4/conf/{}/arp_notify", tap.ifname).as_bytes(),
            )?,
        })
    }
}

/// Everything the child does.
pub(crate) struct ChildPlan {
    pub join: Join,
    pub tap: TapPlan,
}

impl ChildPlan {
    /// The NULL-terminated argv pointers for `execvp` (empty when there is
    /// no command to run).
    pub(crate) fn exec_pointers(&self) -> Vec<*const libc::c_char> {
        match &self.join {
            Join::New { argv, .. } => argv
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect(),
            Join::Existing { .. } => Vec::new(),
        }
    }
}

/// Forks the helper child, which runs `child` with its end of a fresh
/// `SOCK_SEQPACKET` pair; the parent gets the child's PID and its own end.
///
/// `child` must only make system calls on what was prepared before the
/// fork (see the module header) and end in `_exit` or `exec`; should it
/// return, the child exits rather than run the parent's code.
pub(crate) fn fork_with_socket(
    child: impl FnOnce(RawFd),
) -> Result<(libc::pid_t, OwnedFd), NetnsError> {
    let (ours, theirs) = socketpair()?;
    fork_with_pair(ours, theirs, child)
}

/// [`fork_with_socket`] with a pair made beforehand ([`socketpair`]), for a
/// child whose confinement names its descriptor.
pub(crate) fn fork_with_pair(
    ours: OwnedFd,
    theirs: OwnedFd,
    child: impl FnOnce(RawFd),
) -> Result<(libc::pid_t, OwnedFd), NetnsError> {
    // SAFETY: the child runs only `child`, which ends in `_exit` or `exec`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(crate::step("fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ours);
        child(theirs.as_raw_fd());
        // SAFETY: _exit is async-signal-safe and ends only this child.
        unsafe { libc::_exit(127) }
    }
    Ok((pid, ours))
}

/// A close-on-exec `SOCK_SEQPACKET` pair: (the parent's end, the child's).
pub(crate) fn socketpair() -> Result<(OwnedFd, OwnedFd), NetnsError> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors we then own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(crate::step("socketpair")(std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_file(path: &std::ffi::CStr, data: &[u8], what: &'static str) -> Result<(), Fail> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last(what));
    }
    // SAFETY: writes from a live slice.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let fail = (n != data.len() as isize).then(|| last(what));
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    fail.map_or(Ok(()), Err)
}

fn setns(path: &CString, nstype: libc::c_int, what: &'static str) -> Result<(), Fail> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last(what));
    }
    // SAFETY: setns on a namespace descriptor.
    let rc = unsafe { libc::setns(fd, nstype) };
    let fail = (rc != 0).then(|| last(what));
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    fail.map_or(Ok(()), Err)
}

/// Joins the existing namespaces of `join` (nothing for [`Join::New`]).
pub(crate) fn join_existing(join: &Join) -> Result<(), Fail> {
    if let Join::Existing { userns, netns } = join {
        if let Some(userns) = userns {
            setns(userns, libc::CLONE_NEWUSER, "joining the user namespace")?;
        }
        setns(netns, libc::CLONE_NEWNET, "joining the network namespace")?;
        // Joining a user namespace another user owns may have made it
        // dumpable again; in the container's namespaces it holds copies of
        // every descriptor of the stack (`fork` copies them all).
        slipway_sandbox::make_undumpable().map_err(|_| last("making the helper not dumpable"))?;
    }
    Ok(())
}

/// Gets into the namespaces and returns the configured tap's descriptor.
fn setup(plan: &ChildPlan) -> Result<RawFd, Fail> {
    match &plan.join {
        Join::Existing { .. } => join_existing(&plan.join)?,
        Join::New {
            uid_map,
            gid_map,
            resolv_conf,
            ..
        } => {
            // The container's own first process (its command once exec'd,
            // dumpable anyway), forked before the stack opened its sockets:
            // dumpable, so that it can write its id maps and the stack's
            // loopback helper can join its namespaces (/proc/PID/ns).
            slipway_sandbox::make_dumpable()
                .map_err(|_| last("making the command's process dumpable"))?;
            // SAFETY: unshare of this (single-threaded) child.
            if unsafe {
                libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS)
            } != 0
            {
                return Err(last(
                    "creating user, network and mount namespaces (are unprivileged user namespaces enabled?)",
                ));
            }
            write_file(
                c"/proc/self/setgroups",
                b"deny",
                "writing /proc/self/setgroups",
            )?;
            write_file(c"/proc/self/gid_map", gid_map, "writing /proc/self/gid_map")?;
            write_file(c"/proc/self/uid_map", uid_map, "writing /proc/self/uid_map")?;
            if let Some(resolv) = resolv_conf {
                // SAFETY: mount with NUL-terminated paths or NULL.
                unsafe {
                    if libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(last("making the new mount namespace private"));
                    }
                    if libc::mount(
                        resolv.as_ptr(),
                        c"/etc/resolv.conf".as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(last("bind-mounting resolv.conf over /etc/resolv.conf"));
                    }
                }
            }
        }
    }
    let ctl = CtlSocket::open()?;
    ctl.set_up(&lo_name(), "bringing the loopback device up")?;
    let tap = &plan.tap;
    let fd = open_tap(&tap.name)?;
    let configured = (|| {
        if let Some(mac) = tap.mac {
            ctl.set_mac(&tap.name, mac)?;
        }
        ctl.set_mtu(&tap.name, tap.mtu)?;
        crate::ifconfig::set_txqueuelen(&tap.name, tap.txqueuelen)?;
        if let Some((addr, prefix, _)) = tap.ipv4 {
            ctl.set_ipv4(&tap.name, addr, prefix)?;
            // Best effort: without it the stack learns the address from
            // the namespace's first frame instead.
            let _ = write_file(&tap.arp_notify, b"1", "arp_notify");
        }
        ctl.set_up(&tap.name, "bringing the tap device up")?;
        if let Some((_, _, gateway)) = tap.ipv4 {
            ctl.add_default_route(gateway)?;
        }
        if let Some((addr, prefix, gateway)) = tap.ipv6 {
            crate::ifconfig::add_ipv6(&tap.name, addr, prefix)?;
            crate::ifconfig::add_ipv6_default_route(&tap.name, gateway)?;
        }
        Ok(())
    })();
    if let Err(fail) = configured {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return Err(fail);
    }
    Ok(fd)
}

pub(crate) fn lo_name() -> [libc::c_char; libc::IFNAMSIZ] {
    let mut name = [0; libc::IFNAMSIZ];
    name[0] = b'l' as libc::c_char;
    name[1] = b'o' as libc::c_char;
    name
}

/// Sends "ok" with the tap descriptor attached.
fn send_ok(sock: RawFd, fd: RawFd) -> bool {
    slipway_host::fdpass::send_fd(sock, fd).is_ok()
}

/// Longest failure description sent.
pub(crate) const MAX_WHAT: usize = 200;

/// Sends "failed": a 1, the errno (4 bytes, native order), the description.
pub(crate) fn send_fail(sock: RawFd, fail: &Fail) {
    let mut buf = [0u8; 5 + MAX_WHAT];
    buf[0] = 1;
    buf[1..5].copy_from_slice(&fail.errno.to_ne_bytes());
    let what = &fail.what.as_bytes()[..fail.what.len().min(MAX_WHAT)];
    buf[5..5 + what.len()].copy_from_slice(what);
    // SAFETY: sends from a live buffer.
    unsafe {
        libc::send(
            sock,
            buf.as_ptr().cast(),
            5 + what.len(),
            libc::MSG_NOSIGNAL,
        )
    };
}

/// The child of [`crate::open_tap_in`]: set up, report, exit.
pub(crate) fn run(plan: &ChildPlan, sock: RawFd) -> ! {
    let code = match setup(plan) {
        Ok(fd) => i32::from(!send_ok(sock, fd)),
        Err(fail) => {
            send_fail(sock, &fail);
            1
        }
    };
    // SAFETY: ends the child without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

/// The child of [`crate::spawn_in_new_namespace`]: set up, report, wait
/// for the go byte, exec the command.
pub(crate) fn run_and_exec(plan: &ChildPlan, argv: &[*const libc::c_char], sock: RawFd) -> ! {
    match setup(plan) {
        Ok(fd) => {
            let sent = send_ok(sock, fd);
            // SAFETY: our copy of the descriptor; the parent has its own.
            unsafe { libc::close(fd) };
            if !sent {
                // SAFETY: as in `run`.
                unsafe { libc::_exit(1) };
            }
        }
        Err(fail) => {
            send_fail(sock, &fail);
            // SAFETY: as in `run`.
            unsafe { libc::_exit(1) };
        }
    }
    let mut go = [0u8];
    // SAFETY: reads one byte into a live buffer.
    let n = unsafe { libc::read(sock, go.as_mut_ptr().cast(), 1) };
    if n != 1 {
        // The stack did not start; it reports why.
        // SAFETY: as in `run`.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: our descriptor; the command must not inherit it.
    unsafe { libc::close(sock) };
    // SAFETY: argv is NULL-terminated and points at live CStrings.
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: writes static and prepared bytes to stderr, then exits.
    unsafe {
        let prog = std::ffi::CStr::from_ptr(argv[0]).to_bytes();
        let parts: [&[u8]; 3] = [b"slipway: cannot run '", prog, b"': "];
        for p in parts {
            libc::write(2, p.as_ptr().cast(), p.len());
        }
        let msg = std::ffi::CStr::from_ptr(libc::strerror(errno)).to_bytes();
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::_exit(if errno == libc::ENOENT { 127 } else { 126 })
    }
}

/// The parent's side: the tap descriptor, or the child's failure with
/// `context` (the namespace) added.
pub(crate) fn receive_tap(sock: RawFd, context: &Path) -> Result<OwnedFd, NetnsError> {
    let mut buf = [0u8; 5 + MAX_WHAT];
    let (n, fd) = slipway_host::fdpass::recv_fd(sock, &mut buf)
        .map_err(crate::step("receiving the tap device from the helper"))?;
    match (n, fd) {
        (1, Some(fd)) if buf[0] == 0 => Ok(fd),
        (n, _) if n >= 5 && buf[0] == 1 => {
            let errno = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let what = String::from_utf8_lossy(&buf[5..n]);
            Err(NetnsError::Step {
                what: format!("{what} ({})", context.display()),
                source: std::io::Error::from_raw_os_error(errno),
            })
        }
        _ => Err(NetnsError::Invalid(format!(
            "the namespace helper for {} ended without a tap device",
            context.display()
        ))),
    }
}

/// Waits for our child `pid` and returns its raw wait status.
pub(crate) fn wait_status(pid: libc::pid_t) -> std::io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Waits for the helper child; an error if it did not exit with 0.
pub(crate) fn wait(pid: libc::pid_t) -> std::io::Result<()> {
    let status = wait_status(pid)?;
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "exited with wait status {status:#x}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binder::tests::Container;

    /// The helper that joins a container's namespaces holds copies of all
    /// the stack's descriptors, so it must not be dumpable there even if it
    /// was before: joining a user namespace its own user owns leaves a
    /// dumpable process dumpable (the kernel resets the flag only when the
    /// credentials lose something), and the container's processes could
    /// then trace it.
    #[test]
    fn a_helper_that_joined_a_user_namespace_is_not_dumpable() {
        // A user and a network namespace of this user's.
        let holder = Container::owned_by_us();
        let pid = holder.0.id();
        let join = Join::Existing {
            userns: Some(CString::new(format!("/proc/{pid}/ns/user")).unwrap()),
            netns: CString::new(format!("/proc/{pid}/ns/net")).unwrap(),
        };
        // SAFETY: the child makes system calls only (prctl, open, setns,
        // close) on the plan made above, then `_exit`s.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let code = if slipway_sandbox::make_dumpable().is_err() {
                3
            } else if join_existing(&join).is_err() {
                2
            } else {
                // SAFETY: prctl with integer arguments.
                i32::from(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } != 0)
            };
            // SAFETY: ends the forked child without the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        let waited = unsafe { libc::waitpid(child, &mut status, 0) };
        drop(holder);
        assert_eq!(waited, child);
        assert!(libc::WIFEXITED(status), "status {status}");
        let what = [
            "",
            "still dumpable after joining",
            "joining failed",
            "PR_SET_DUMPABLE failed",
        ];
        let code = libc::WEXITSTATUS(status);
        assert_eq!(code, 0, "{}", what.get(code as usize).unwrap_or(&"?"));
    }
}
