//! The parent that outlives a sandboxed child to remove its socket files.
//!
//! A process that started as root and switched to `nobody` can no longer
//! unlink the socket it bound in a root-owned directory. So the sandbox
//! forks first: the child goes on to drop privileges and run; the parent
//! closes every descriptor but its signalfd, confines itself to a handful
//! of calls (read a signal, wait, forward a signal, remove files under the
//! socket directories), and when the child ends removes the files and
//! exits with the child's status.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use landlock::RulesetCreated;
use slipway_host::signals::Signals;

use crate::{os_err, syscalls, SandboxError};

/// Forks; returns in the child only (with the parent's pid, for
/// [`die_with_parent`]). The parent never returns.
pub(crate) fn fork(
    paths: &[PathBuf],
    ruleset: RulesetCreated,
) -> Result<libc::pid_t, SandboxError> {
    let signals = supervisor_signals().map_err(|source| SandboxError::Os {
        what: "taking signals for the socket-cleaning parent",
        source,
    })?;
    // SAFETY: fork in a process that is single-threaded at this point
    // (setup is done, no thread was spawned); then plain system calls.
    unsafe {
        let parent = libc::getpid();
        let child = libc::fork();
        if child < 0 {
            let err = os_err("forking the socket-cleaning parent");
            signals.restore();
            return Err(err);
        }
        if child == 0 {
            signals.restore();
            return Ok(parent);
        }
        // The parent: Landlock first (it consumes the ruleset's descriptor),
        // then nothing of the stack stays open here, only the signals.
        let confined =
            crate::prctl(libc::PR_SET_NO_NEW_PRIVS, 1) == 0 && ruleset.restrict_self().is_ok();
        let keep = signals.as_raw_fd() as libc::c_uint;
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3, keep - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
        let confined = confined && syscalls::install(syscalls::CLEANER).is_ok();
        if !confined {
            // Running on unconfined as root would be worse than leaving a
            // socket file behind: stop the child and leave.
            libc::kill(child, libc::SIGKILL);
            libc::_exit(1);
        }
        let code = forward_signals_until_exit(child, &signals);
        for path in paths {
            // Only a socket is removed (whatever replaced it stays); the
            // calls are the *at forms the filter allows on every arch.
            let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
                continue;
            };
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstatat(
                libc::AT_FDCWD,
                cpath.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
            {
                libc::unlinkat(libc::AT_FDCWD, cpath.as_ptr(), 0);
            }
        }
        libc::_exit(code);
    }
}

/// Makes the sandboxed child die when the cleaning parent does (killed with
/// SIGKILL, say): without it the child would serve on, orphaned. Called
/// after the switch of user, which clears the parent-death signal.
pub(crate) fn die_with_parent(parent: libc::pid_t) -> Result<(), SandboxError> {
    // SAFETY: plain prctl and getppid.
    unsafe {
        if crate::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(os_err("setting the parent-death signal"));
        }
        // The parent may have died before the signal was armed.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// SIGTERM, SIGINT and SIGCHLD, blocked and read from a descriptor, for a
/// process that is about to fork a child and then supervise it with
/// [`forward_signals_until_exit`] (blocked before the fork, none is lost in
/// between). The child gives them back with [`Signals::restore`].
pub fn supervisor_signals() -> std::io::Result<Signals> {
    Signals::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGCHLD])
}

/// Waits for `child` to end while passing SIGTERM and SIGINT on to it, and
/// returns its exit status as a shell reports it (128 + signal when a
/// signal ended it). `signals` are [`supervisor_signals`], taken since
/// before `child` was forked. The child's end is seen through a pidfd as
/// well as SIGCHLD: in a process with other threads (a test harness) the
/// kernel may hand SIGCHLD to a thread that does not block it, which
/// ignores it. The calls it makes (pidfd_open, ppoll, read, kill, wait4)
/// are the ones the cleaning parent's filter allows.
///
/// # Safety
/// `child` must be a child of this process that nothing else reaps.
pub unsafe fn forward_signals_until_exit(child: libc::pid_t, signals: &Signals) -> i32 {
    // SAFETY: pidfd_open of the caller's child; the descriptor is owned
    // from here on. Without one (an old kernel) SIGCHLD alone wakes the
    // loop (poll skips a negative descriptor).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as libc::c_int;
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    let _owned = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    loop {
        let mut fds = [signals.as_raw_fd(), pidfd].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: ppoll on two valid pollfds, no timeout, no mask; kill
        // and waitpid on the caller's own child.
        unsafe {
            libc::ppoll(fds.as_mut_ptr(), 2, std::ptr::null(), std::ptr::null());
            for sig in signals.pending() {
                if sig == libc::SIGTERM || sig == libc::SIGINT {
                    libc::kill(child, sig);
                }
            }
            let mut status = 0;
            if libc::waitpid(child, &mut status, libc::WNOHANG) == child {
                if libc::WIFEXITED(status) {
                    return libc::WEXITSTATUS(status);
                }
                if libc::WIFSIGNALED(status) {
                    return 128 + libc::WTERMSIG(status);
                }
            }
        }
    }
}
