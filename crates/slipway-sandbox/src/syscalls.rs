//! The seccomp allowlist: the system calls a slipway data path makes once
//! set up (socket I/O, epoll, memory, time, signals read from a signalfd,
//! exit), and nothing else. It was written from the data path's code and
//! checked by running every end-to-end test of `slipway user` with the
//! filter on (a missing call would show as EPERM errors); see
//! docs/sandbox.md.
//!
//! Not in the list, so impossible after [`crate::Sandbox::apply`]: execve,
//! fork/clone, ptrace, mount, setuid and friends, kill of other processes,
//! opening files (unless the sandbox allows reading files), removing files,
//! bpf, keyctl, io_uring, perf_event_open, reboot, module loading,
//! chmod/chown, ... `socket` is allowed for TCP and UDP over IPv4 and IPv6
//! only (and unix datagram sockets when the sandbox allows them): no unix
//! stream socket (a session bus, an agent), no netlink, packet or raw one.
//!
//! Two processes have a list of their own: the socket-cleaning parent
//! ([`CLEANER`]) and the namespace's loopback helper ([`loopback_helper`],
//! where any other call kills it).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::SandboxError;

/// One allowed system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    /// `SYS_` and its name, as libc spells the constant.
    ident: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// Argument restrictions.
    limit: Limit,
}

impl Syscall {
    /// Its name, as in `man 2`.
    pub fn name(&self) -> &'static str {
        self.ident.trim_start_matches("SYS_")
    }
}

/// A restriction on the arguments of an allowed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// Any arguments.
    Any,
    /// Only when argument 2 (the protection of `mmap`/`mprotect`) lacks PROT_EXEC.
    NoExec,
    /// Only these `ioctl` requests (argument 1).
    Ioctl(&'static [u64]),
    /// Only toward the process itself (argument 0 is its pid: `tgkill` for abort).
    OwnProcess,
    /// `socket` only for these (family, type) pairs (arguments 0 and 1;
    /// the type's SOCK_NONBLOCK and SOCK_CLOEXEC flags aside).
    Socket(&'static [(libc::c_int, libc::c_int)]),
    /// [`Limit::Socket`], and the protocol (argument 2) only 0, the
    /// family's default (no MPTCP, ping or UDP-Lite socket).
    DefaultProtocolSocket(&'static [(libc::c_int, libc::c_int)]),
    /// `setsockopt` only for these (level, name) pairs (arguments 1 and 2).
    SockOpt(&'static [(libc::c_int, libc::c_int)]),
    /// Only when argument `.0` is `.1` (a descriptor, a backlog).
    Arg(u8, u64),
}

/// Sockets of the data path: TCP and UDP (ping sockets are UDP-typed) over
/// IPv4 and IPv6. No unix, netlink, packet or raw sockets.
const INET_SOCKETS: &[(libc::c_int, libc::c_int)] = &[
    (libc::AF_INET, libc::SOCK_STREAM),
    (libc::AF_INET, libc::SOCK_DGRAM),
    (libc::AF_INET6, libc::SOCK_STREAM),
    (libc::AF_INET6, libc::SOCK_DGRAM),
];

/// [`INET_SOCKETS`] and unix datagram sockets, for a datagram attachment
/// that reaches later VMs through sockets of their own. Still no unix
/// stream socket: nothing like a session bus or an agent can be connected.
const INET_AND_UNIX_DGRAM_SOCKETS: &[(libc::c_int, libc::c_int)] = &[
    (libc::AF_INET, libc::SOCK_STREAM),
    (libc::AF_INET, libc::SOCK_DGRAM),
    (libc::AF_INET6, libc::SOCK_STREAM),
    (libc::AF_INET6, libc::SOCK_DGRAM),
    (libc::AF_UNIX, libc::SOCK_DGRAM),
];

/// The bits of `socket`'s type argument that are the type (the rest are
/// SOCK_NONBLOCK and SOCK_CLOEXEC), as the kernel's SOCK_TYPE_MASK.
const SOCK_TYPE_MASK: u64 = 0xf;

macro_rules! calls {
    ($($name:ident $(: $limit:expr)?),* $(,)?) => {
        &[$(Syscall {
            ident: stringify!($name),
            nr: libc::$name as i64,
            limit: calls!(@limit $($limit)?),
        }),*]
    };
    (@limit) => { Limit::Any };
    (@limit $limit:expr) => { $limit };
}

/// What every data path needs: socket I/O, the event loop, memory, time,
/// signals read from a signalfd, and exit.
const BASE: &[Syscall] = calls![
    // Reading and writing sockets, the signalfd and stderr.
    SYS_read,
    SYS_write,
    SYS_readv,
    SYS_writev,
    SYS_recvfrom,
    SYS_sendto,
    SYS_recvmsg,
    SYS_sendmsg,
    SYS_recvmmsg,
    SYS_sendmmsg,
    // Host sockets of new flows, accepted forwards and VMs (`socket` and
    // `ioctl` come with the profile's limits, see `allowed`).
    SYS_connect,
    SYS_bind,
    SYS_listen,
    SYS_accept4,
    SYS_shutdown,
    SYS_getsockopt,
    SYS_setsockopt,
    SYS_getsockname,
    SYS_getpeername,
    SYS_close,
    SYS_fcntl,
    // The event loop.
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    // Memory.
    SYS_brk,
    SYS_mmap: Limit::NoExec,
    SYS_mprotect: Limit::NoExec,
    SYS_munmap,
    SYS_mremap,
    SYS_madvise,
    // Time and waiting.
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_nanosleep,
    SYS_futex,
    SYS_sched_yield,
    // Signals and exit (a panic aborts through tgkill on itself).
    SYS_rt_sigreturn,
    SYS_rt_sigprocmask,
    SYS_sigaltstack,
    SYS_getpid,
    SYS_gettid,
    SYS_tgkill: Limit::OwnProcess,
    SYS_restart_syscall,
    SYS_exit,
    SYS_exit_group,
    // Random keys (hash maps).
    SYS_getrandom,
];

/// The `ioctl` requests of every data path: non-blocking mode and queue
/// lengths of its sockets.
const IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIONREAD, libc::TIOCOUTQ];

/// The bridge network service's `ioctl` requests besides [`IOCTLS`]: a
/// complete ARP entry for a client that has no address yet (`SIOCSARP`,
/// which needs CAP_NET_ADMIN) and the bridge's index (is it still there?).
const SERVICE_IOCTLS: &[u64] = &[
    libc::FIONBIO,
    libc::FIONREAD,
    libc::TIOCOUTQ,
    libc::SIOCSARP,
    libc::SIOCGIFINDEX,
];

/// Calls only x86_64 has (older spellings the C library still uses there).
#[cfg(target_arch = "x86_64")]
const ARCH: &[Syscall] = calls![SYS_epoll_wait, SYS_poll];
#[cfg(not(target_arch = "x86_64"))]
const ARCH: &[Syscall] = &[];

/// Replacing files in a writable directory (temporary file, fsync, rename;
/// the temporary file removed when a write fails).
const WRITES: &[Syscall] = calls![SYS_fsync, SYS_fdatasync, SYS_renameat2, SYS_unlinkat];
#[cfg(target_arch = "x86_64")]
const ARCH_WRITES: &[Syscall] = calls![SYS_rename, SYS_renameat];
#[cfg(not(target_arch = "x86_64"))]
const ARCH_WRITES: &[Syscall] = &[];

/// Reading the files the sandbox allows (a TFTP root, resolv.conf).
const FILES: &[Syscall] = calls![
    SYS_openat,
    SYS_openat2,
    SYS_newfstatat,
    SYS_fstat,
    SYS_statx,
    SYS_lseek,
    SYS_pread64,
    SYS_getdents64,
];

/// What a vhost-user link adds: the size of each guest memory file QEMU
/// passes (`lseek` to its end; no path involved), checked before it is
/// mapped.
pub(crate) const VHOST_USER: &[Syscall] = calls![SYS_lseek];

/// What rereading a file opened before the sandbox adds: a seek back to
/// its start.
pub(crate) const REREAD: &[Syscall] = calls![SYS_lseek];

/// What naming sockets to the guest-forward helper adds: a descriptor's
/// inode (no path involved).
pub(crate) const FSTAT: &[Syscall] = calls![SYS_fstat];

/// What relaying connections through pipes adds: a pipe pair per
/// connection, and moving bytes between a socket and a pipe.
pub(crate) const SPLICE: &[Syscall] = calls![SYS_pipe2, SYS_splice];

/// The allowlist: the data path's, with the bridge network service's
/// `ioctl`s when `service` is true, with the file calls when `files` is true, those replacing
/// files when `writes` is true, and unix datagram sockets besides TCP and
/// UDP when `unix_dgram` is.
pub(crate) fn allowed(service: bool, files: bool, writes: bool, unix_dgram: bool) -> Vec<Syscall> {
    let mut all: Vec<Syscall> = BASE.iter().chain(ARCH).copied().collect();
    let ioctls = if service { SERVICE_IOCTLS } else { IOCTLS };
    let sockets = if unix_dgram {
        INET_AND_UNIX_DGRAM_SOCKETS
    } else {
        INET_SOCKETS
    };
    all.extend(calls![
        SYS_ioctl: Limit::Ioctl(ioctls),
        SYS_socket: Limit::Socket(sockets),
    ]);
    if files || writes {
        all.extend_from_slice(FILES);
    }
    if writes {
        all.extend(WRITES.iter().chain(ARCH_WRITES));
    }
    all
}

#[cfg(target_arch = "x86_64")]
const TARGET_ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET_ARCH: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;

fn rules(call: &Syscall) -> Result<Vec<SeccompRule>, SandboxError> {
    use SeccompCmpArgLen::Qword;
    let cond = |arg, op, value| SeccompCondition::new(arg, Qword, op, value);
    Ok(match call.limit {
        Limit::Any => Vec::new(),
        Limit::NoExec => vec![SeccompRule::new(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?],
        Limit::Ioctl(requests) => requests
            .iter()
            .map(|&req| {
                SeccompRule::new(vec![SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    req,
                )?])
            })
            .collect::<Result<_, _>>()?,
        Limit::OwnProcess => {
            // SAFETY: getpid cannot fail.
            let pid = unsafe { libc::getpid() } as u64;
            vec![SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, pid)?])?]
        }
        Limit::Socket(pairs) => socket_rules(pairs, false)?,
        Limit::DefaultProtocolSocket(pairs) => socket_rules(pairs, true)?,
        Limit::SockOpt(pairs) => pairs
            .iter()
            .map(|&(level, name)| {
                use SeccompCmpArgLen::Dword;
                SeccompRule::new(vec![
                    SeccompCondition::new(1, Dword, SeccompCmpOp::Eq, level as u64)?,
                    SeccompCondition::new(2, Dword, SeccompCmpOp::Eq, name as u64)?,
                ])
            })
            .collect::<Result<_, _>>()?,
        Limit::Arg(index, value) => vec![SeccompRule::new(vec![SeccompCondition::new(
            index,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            value,
        )?])?],
    })
}

/// `socket`'s rules for (family, type) `pairs`, with the protocol 0 only
/// when `default_protocol`.
fn socket_rules(
    pairs: &[(libc::c_int, libc::c_int)],
    default_protocol: bool,
) -> Result<Vec<SeccompRule>, SandboxError> {
    use SeccompCmpArgLen::Dword;
    pairs
        .iter()
        .map(|&(family, kind)| {
            let mut conds = vec![
                SeccompCondition::new(0, Dword, SeccompCmpOp::Eq, family as u64)?,
                SeccompCondition::new(
                    1,
                    Dword,
                    SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK),
                    kind as u64,
                )?,
            ];
            if default_protocol {
                conds.push(SeccompCondition::new(2, Dword, SeccompCmpOp::Eq, 0)?);
            }
            Ok(SeccompRule::new(conds)?)
        })
        .collect()
}

/// Compiles `calls` into a filter returning EPERM for everything else and
/// installs it on every thread of the process.
pub(crate) fn install(calls: &[Syscall]) -> Result<(), SandboxError> {
    let program = compile(calls, SeccompAction::Errno(libc::EPERM as u32))?;
    seccompiler::apply_filter_all_threads(&program)?;
    Ok(())
}

/// Compiles `calls` into a filter whose answer to every other call is
/// `otherwise`.
pub(crate) fn compile(
    calls: &[Syscall],
    otherwise: SeccompAction,
) -> Result<BpfProgram, SandboxError> {
    let mut map = BTreeMap::new();
    for call in calls {
        map.insert(call.nr, rules(call)?);
    }
    let filter = SeccompFilter::new(map, otherwise, SeccompAction::Allow, TARGET_ARCH)?;
    Ok(filter.try_into()?)
}

/// The socket options the loopback helper sets: address reuse on a
/// listener, and IPv6 only on a `::1` socket.
const LOOPBACK_HELPER_OPTIONS: &[(libc::c_int, libc::c_int)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
];

/// The loopback helper's whole allowlist ([`crate::ChildSandbox::loopback_helper`]):
/// requests read and answers (with the new socket) sent on `sock` only;
/// TCP and UDP sockets over IPv4 and IPv6 of the default protocol, two
/// options, `bind`, `connect`, `listen` with `backlog`, `close`, exit.
pub(crate) fn loopback_helper(sock: std::os::fd::RawFd, backlog: libc::c_int) -> Vec<Syscall> {
    let sock = sock as u64;
    calls![
        SYS_recvfrom: Limit::Arg(0, sock),
        SYS_sendto: Limit::Arg(0, sock),
        SYS_sendmsg: Limit::Arg(0, sock),
        SYS_socket: Limit::DefaultProtocolSocket(INET_SOCKETS),
        SYS_setsockopt: Limit::SockOpt(LOOPBACK_HELPER_OPTIONS),
        SYS_bind,
        SYS_connect,
        SYS_listen: Limit::Arg(1, backlog as u64),
        SYS_close,
        SYS_exit_group,
    ]
    .to_vec()
}

/// The socket-cleaning parent's whole allowlist ([`crate::cleaner`]).
pub(crate) const CLEANER: &[Syscall] = calls![
    // Its signals, from a signalfd, and the child's end, from a pidfd.
    SYS_read,
    SYS_ppoll,
    SYS_pidfd_open,
    SYS_close,
    SYS_rt_sigreturn,
    SYS_restart_syscall,
    SYS_wait4,
    SYS_kill,
    SYS_newfstatat,
    SYS_statx,
    SYS_unlinkat,
    SYS_exit_group,
];
