//! The parent that outlives a sandboxed child to remove its socket files.
//!
//! A process that started as root and switched to `nobody` can no longer
//! unlink the socket it bound in a root-owned directory. So the sandbox
//! forks first: the child goes on to drop privileges and run; the parent
//! closes every descriptor, confines itself to a handful of calls (wait,
//! forward a signal, remove files under the socket directories), and when
//! the child ends removes the files and exits with the child's status.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use landlock::RulesetCreated;

use crate::{os_err, syscalls, SandboxError};

/// Forks; returns in the child only (with the parent's pid, for
/// [`die_with_parent`]). The parent never returns.
pub(crate) fn fork(
    paths: &[PathBuf],
    ruleset: RulesetCreated,
) -> Result<libc::pid_t, SandboxError> {
    // SAFETY: signal masks on locally owned sets; fork in a process that is
    // single-threaded at this point (setup is done, no thread was spawned).
    unsafe {
        let parent = libc::getpid();
        let (set, old) = block_supervisor_signals();
        let child = libc::fork();
        if child < 0 {
            return Err(os_err("forking the socket-cleaning parent"));
        }
        if child == 0 {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Ok(parent);
        }
        // The parent: Landlock first (it consumes the ruleset's descriptor),
        // then nothing of the stack stays open here.
        let confined =
            crate::prctl(libc::PR_SET_NO_NEW_PRIVS, 1) == 0 && ruleset.restrict_self().is_ok();
        libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0);
        let confined = confined && syscalls::install(syscalls::CLEANER).is_ok();
        if !confined {
            // Running on unconfined as root would be worse than leaving a
            // socket file behind: stop the child and leave.
            libc::kill(child, libc::SIGKILL);
            libc::_exit(1);
        }
        let code = forward_signals_until_exit(child, &set);
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

/// Blocks SIGTERM, SIGINT and SIGCHLD in the calling thread, for a
/// process that is about to fork a child and then supervise it with
/// [`forward_signals_until_exit`] (blocked before the fork, none is lost in
/// between). Returns the blocked set and the mask to restore (in the child,
/// or on failure).
pub fn block_supervisor_signals() -> (libc::sigset_t, libc::sigset_t) {
    // SAFETY: sigemptyset/sigaddset/pthread_sigmask on locally owned sets.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        (set, old)
    }
}

/// Waits for `child` to end while passing SIGTERM and SIGINT on to it, and
/// returns its exit status as a shell reports it (128 + signal when a
/// signal ended it). `set` holds SIGTERM, SIGINT and SIGCHLD, blocked in
/// the calling thread since before `child` was forked, so none is lost.
/// The calls it makes (sigwaitinfo, kill, wait4) are the ones the cleaning
/// parent's filter allows.
///
/// # Safety
/// `child` must be a child of this process that nothing else reaps.
pub unsafe fn forward_signals_until_exit(child: libc::pid_t, set: &libc::sigset_t) -> i32 {
    loop {
        // SAFETY: sigwaitinfo on a caller-provided set; kill and waitpid on
        // the caller's own child.
        unsafe {
            let sig = libc::sigwaitinfo(set, std::ptr::null_mut());
            if sig == libc::SIGTERM || sig == libc::SIGINT {
                libc::kill(child, sig);
                continue;
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
