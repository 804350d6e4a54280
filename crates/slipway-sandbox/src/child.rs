//! Confinement of a forked helper child: built by the parent before the
//! fork, entered by the child without allocating.
//!
//! A child forked by a process that may have other threads must not
//! allocate before it execs or exits (another thread may have held the
//! allocator's lock at the fork), so [`Sandbox::apply`](crate::Sandbox::apply)
//! — which reads /proc, builds rule sets and compiles a filter — cannot run
//! there. [`ChildSandbox`] does the allocating part first: the seccomp
//! program is compiled, the Landlock ruleset (every filesystem right
//! handled, none granted) is created and its descriptor kept, the
//! capabilities to keep are fixed. The child then only makes system calls
//! on that ([`ChildSandbox::enter`]), in this order:
//!
//! 1. the ambient set is cleared and, when the child holds CAP_SETPCAP
//!    (root, or a user namespace it joined), the bounding set emptied;
//! 2. the effective and permitted sets keep only the capabilities of the
//!    profile the child has, the inheritable set is emptied;
//! 3. not dumpable: a process in the namespaces it joined (a container's
//!    root, which holds CAP_SYS_PTRACE in that user namespace, or shares
//!    the child's uid) may not trace it nor take its descriptors
//!    (`pidfd_getfd`), as passt makes itself; and `no_new_privs`;
//! 4. Landlock: no file may be opened, created, removed or executed;
//! 5. the seccomp filter: the profile's calls, and any other kills the
//!    process (`SECCOMP_RET_KILL_PROCESS`): the child's code is small and
//!    fixed, so a call outside its list means it was taken over.
//!
//! Capabilities are read and set with `capget`/`capset` by hand: the
//! `caps` crate builds hash sets (allocation) for both.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use seccompiler::{BpfProgram, SeccompAction};
use slipway_host::caps::Capability;

use crate::{syscalls, LandlockState, Sandbox, SandboxError};

/// A failed step of [`ChildSandbox::enter`]: what, and the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildFail {
    /// The step (a static description: nothing is allocated).
    pub what: &'static str,
    /// The kernel's error number.
    pub errno: i32,
}

impl ChildFail {
    fn last(what: &'static str) -> ChildFail {
        ChildFail {
            what,
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        }
    }
}

/// A confinement prepared for a child about to be forked.
#[derive(Debug)]
pub struct ChildSandbox {
    filter: BpfProgram,
    /// The Landlock ruleset; `None` when the kernel has no Landlock.
    ruleset: Option<OwnedFd>,
    /// The capabilities kept, as a bit mask by number.
    keep: u64,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, two data words.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one 32-bit half of each set.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl ChildSandbox {
    /// The profile of the namespace's loopback helper
    /// (`slipway_netns::LoopbackBinder`): it reads requests from and
    /// answers on `sock` only (receives, sends, descriptors sent with
    /// `sendmsg`), makes TCP and UDP sockets over IPv4 and IPv6, sets
    /// `SO_REUSEADDR` and `IPV6_V6ONLY`, binds, connects, listens with
    /// `backlog`, closes, and exits. It keeps CAP_NET_BIND_SERVICE (in
    /// the namespace's user namespace: pasta's `-T 80` binds port 80 of
    /// the namespace's loopback), and no other capability.
    /// `sock` must not be 0, 1 or 2 (the child points those at /dev/null).
    pub fn loopback_helper(sock: RawFd, backlog: libc::c_int) -> Result<Self, SandboxError> {
        let filter = syscalls::compile(
            &syscalls::loopback_helper(sock, backlog),
            SeccompAction::KillProcess,
        )?;
        let ruleset: Option<OwnedFd> = Sandbox::new().landlock_ruleset()?.into();
        // Kept above the standard descriptors, which the child replaces.
        let ruleset = match ruleset {
            Some(fd) if fd.as_raw_fd() <= 2 => {
                Some(fd.try_clone().map_err(|source| SandboxError::Os {
                    what: "moving the Landlock ruleset's descriptor",
                    source,
                })?)
            }
            other => other,
        };
        Ok(ChildSandbox {
            filter,
            ruleset,
            keep: Capability::CAP_NET_BIND_SERVICE.bitmask(),
        })
    }

    /// The descriptor the child must keep open until [`ChildSandbox::enter`]
    /// (the Landlock ruleset's), if any.
    pub fn keep_fd(&self) -> Option<RawFd> {
        self.ruleset.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Whether the child's filesystem will be closed by Landlock
    /// ([`LandlockState::Full`]) or the kernel has none
    /// ([`LandlockState::Unsupported`]: seccomp still forbids opening
    /// files).
    pub fn landlock(&self) -> LandlockState {
        if self.ruleset.is_some() {
            LandlockState::Full
        } else {
            LandlockState::Unsupported
        }
    }

    /// The capabilities the child keeps when it has them, as a bit mask
    /// by capability number.
    pub fn kept_capabilities(&self) -> u64 {
        self.keep
    }

    /// Confines the calling process, a child forked after
    /// [`ChildSandbox::loopback_helper`] (see the module header for the
    /// steps). Allocation-free. It closes the child's copy of the Landlock
    /// ruleset: call it once, in a child that ends in `_exit` without
    /// dropping `self`. On an error the child must exit: it is partly
    /// confined.
    pub fn enter(&self) -> Result<(), ChildFail> {
        // SAFETY: prctl, capget and capset with integer arguments or
        // pointers to live locals; landlock_restrict_self on the ruleset's
        // descriptor, which this child still holds, then closed once (the
        // child never drops `self`, see above).
        unsafe {
            if crate::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as _) != 0
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(ChildFail::last("clearing the ambient capabilities"));
            }
            let mut header = CapHeader {
                version: CAP_VERSION_3,
                pid: 0,
            };
            let mut data = [CapData::default(); 2];
            if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
                return Err(ChildFail::last("reading the capabilities"));
            }
            let effective = u64::from(data[0].effective) | u64::from(data[1].effective) << 32;
            let permitted = u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32;
            // Without CAP_SETPCAP the bounding set cannot change; it
            // matters only at execve, which the filter forbids.
            if effective & Capability::CAP_SETPCAP.bitmask() != 0 {
                slipway_host::clear_bounding_set()
                    .map_err(|_| ChildFail::last("emptying the capability bounding set"))?;
            }
            let kept = permitted & self.keep;
            for (i, half) in data.iter_mut().enumerate() {
                let bits = (kept >> (32 * i)) as u32;
                *half = CapData {
                    effective: bits,
                    permitted: bits,
                    inheritable: 0,
                };
            }
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
                return Err(ChildFail::last("dropping capabilities"));
            }
            if crate::make_undumpable().is_err() {
                return Err(ChildFail::last("making the process not dumpable"));
            }
            if crate::prctl(libc::PR_SET_NO_NEW_PRIVS, 1) != 0 {
                return Err(ChildFail::last("setting no_new_privs"));
            }
            if let Some(ruleset) = &self.ruleset {
                if libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) != 0 {
                    return Err(ChildFail::last("closing the filesystem (Landlock)"));
                }
                libc::close(ruleset.as_raw_fd());
            }
        }
        seccompiler::apply_filter(&self.filter).map_err(|err| ChildFail {
            what: "installing the seccomp filter",
            errno: match err {
                seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => {
                    e.raw_os_error().unwrap_or(libc::EIO)
                }
                _ => libc::EINVAL,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a child that enters `sandbox`, then opens `/etc/hostname`;
    /// returns the child's exit code: 0 refused with EACCES (Landlock),
    /// 1 opened, 2 refused otherwise, 3 `enter` failed.
    fn open_in_child(sandbox: &ChildSandbox) -> i32 {
        // SAFETY: the child makes only system calls on what was prepared
        // before the fork and ends in _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                if sandbox.enter().is_err() {
                    libc::_exit(3);
                }
                let fd = libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY);
                let errno = *libc::__errno_location();
                libc::_exit(match (fd, errno) {
                    (-1, libc::EACCES) => 0,
                    (-1, _) => 2,
                    _ => 1,
                });
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "{status:#x}");
            libc::WEXITSTATUS(status)
        }
    }

    /// With the helper's filter widened to let `openat` through, Landlock
    /// alone refuses to open a file: the filesystem is closed twice.
    #[test]
    fn landlock_alone_refuses_files() {
        let mut sandbox = ChildSandbox::loopback_helper(3, 128).unwrap();
        assert_eq!(sandbox.landlock(), LandlockState::Full);
        let mut calls = syscalls::loopback_helper(3, 128);
        calls.extend(
            syscalls::allowed(false, true, false, false)
                .into_iter()
                .filter(|c| c.name() == "openat"),
        );
        sandbox.filter = syscalls::compile(&calls, SeccompAction::KillProcess).unwrap();
        assert_eq!(open_in_child(&sandbox), 0);
    }
}
