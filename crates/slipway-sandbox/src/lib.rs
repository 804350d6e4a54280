//! Confines a slipway process once it has set itself up.
//!
//! The user-mode stack parses bytes from a guest that may be hostile (the
//! libslirp CVE record is the reason this crate exists). Once every socket
//! the process needs at start is open, [`Sandbox::apply`] makes a
//! compromised data path nearly powerless, in this order:
//!
//! 1. Landlock rules are prepared (paths opened while they still can be);
//!    with unix datagrams allowed, the process moves into a private mount
//!    namespace whose root holds only the directories it needs (the
//!    datagram socket directory, the read-only trees): see [`mountns`];
//! 2. when started as root, the process switches to an unprivileged user
//!    (default `nobody`, supplementary groups cleared), after dropping
//!    every capability from the bounding set;
//! 3. the process is made not dumpable again ([`make_undumpable`]; the
//!    `slipway` command makes itself so first thing, a switch of user may
//!    undo it), every capability (effective, permitted, inheritable,
//!    ambient) is dropped, but for those the profile keeps (effective and
//!    permitted only), and `no_new_privs` is set;
//! 4. Landlock restricts the filesystem to the paths the options need
//!    (read-only files and trees, directories whose files it replaces);
//!    socket files to remove at exit are removed by a parent forked first
//!    ([`Sandbox::remove_on_exit`]);
//! 5. a seccomp filter allows only the system calls the data path makes
//!    ([`Sandbox::syscalls`]; `socket` only for TCP and UDP over IPv4
//!    and IPv6, and unix datagrams when allowed); any other call fails
//!    with `EPERM` (not a
//!    kill: an unforeseen call in a rare path becomes an error the stack
//!    reports, while anything an attacker would need stays impossible).
//!
//! Reusable by every long-running slipway process: the caller lists what
//! it needs (files to read, socket directories) and applies it.
//! [`Sandbox::network_service`] is the profile of a bridge network's
//! DHCP/DNS/TFTP/RA service: it keeps CAP_NET_ADMIN (ARP entries for
//! DHCP clients), uses its `ioctl`s, and may replace files in its leases
//! directory; like every profile, it starts no thread and no process.
//! [`ChildSandbox`] confines a helper child forked by such a process (the
//! namespace's loopback helper of pasta's `-T`/`-U`): prepared before the
//! fork, entered by the child without allocating.

#![deny(missing_docs)]

mod child;
mod cleaner;
mod mountns;
mod syscalls;

use std::ffi::CString;

use slipway_host::caps::{self, CapSet, Capability, CapsHashSet};
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, ABI,
};

pub use child::{ChildFail, ChildSandbox};
pub use cleaner::{forward_signals_until_exit, supervisor_signals};
pub use syscalls::Syscall;

/// The Landlock ABI whose filesystem rights are asked for; older kernels
/// enforce what they know (best effort), newer ones add nothing we need.
const LANDLOCK_ABI: ABI = ABI::V5;

/// Why the sandbox could not be applied. The process must not go on
/// unconfined when asked to confine itself, so every error is fatal to the
/// caller.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A Landlock rule could not be built (e.g. a path that does not exist).
    #[error("Landlock rule for {path}: {source}")]
    LandlockPath {
        /// The path the rule was for.
        path: PathBuf,
        /// The library's error.
        source: landlock::RulesetError,
    },
    /// The Landlock ruleset could not be created or enforced.
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The user to switch to does not exist.
    #[error("user {0:?} not found (needed to drop root privileges; choose another with --runas)")]
    NoSuchUser(String),
    /// A system call of the privilege drop failed.
    #[error("{what}: {source}")]
    Os {
        /// The step that failed.
        what: &'static str,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A capability set could not be read or changed.
    #[error("{what}: {source}")]
    Capabilities {
        /// The step that failed.
        what: &'static str,
        /// The `caps` crate's error.
        source: caps::errors::CapsError,
    },
    /// The kernel does not enforce Landlock and the sandbox was required
    /// in full (`--require-sandbox`).
    #[error("the kernel does not enforce Landlock (not built in, or not in its lsm= list), and --require-sandbox refuses to run with the filesystem unrestricted")]
    NoLandlock,
    /// The private mount namespace that confines unix datagrams could not
    /// be made (user namespaces disabled, say) and the sandbox was required
    /// in full (`--require-sandbox`).
    #[error("cannot make the private mount namespace that limits unix datagrams to {dir} ({source}), and --require-sandbox refuses to run with every unix datagram socket of the user reachable")]
    NoMountNamespace {
        /// The datagram socket directory.
        dir: PathBuf,
        /// The kernel's refusal.
        source: std::io::Error,
    },
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// The seccomp filter could not be compiled to BPF.
    #[error("seccomp: {0}")]
    SeccompBackend(#[from] seccompiler::BackendError),
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> SandboxError {
    move |source| SandboxError::Capabilities { what, source }
}

fn os_err(what: &'static str) -> SandboxError {
    SandboxError::Os {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// What a process may still do once confined.
#[derive(Clone, Debug)]
pub struct Sandbox {
    read_only: Vec<PathBuf>,
    write_dirs: Vec<PathBuf>,
    remove_on_exit: Vec<PathBuf>,
    runas: String,
    service: bool,
    unix_dgram: Option<PathBuf>,
    require: bool,
    /// Whether a vhost-user link runs under it ([`Sandbox::allow_vhost_user`]).
    vhost_user: bool,
    /// Whether files opened before are read again from their start
    /// ([`Sandbox::allow_rereading`]).
    reread: bool,
    /// Whether connections are relayed through pipes
    /// ([`Sandbox::allow_splicing`]).
    splice: bool,
    /// Whether `fstat` is allowed ([`Sandbox::allow_fstat`]).
    fstat: bool,
    /// The socket-cleaning parent, when forked ahead of [`Sandbox::apply`]
    /// ([`Sandbox::fork_cleaner`]).
    cleaner: Option<libc::pid_t>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            read_only: Vec::new(),
            write_dirs: Vec::new(),
            remove_on_exit: Vec::new(),
            runas: "nobody".into(),
            service: false,
            unix_dgram: None,
            require: false,
            vhost_user: false,
            reread: false,
            splice: false,
            fstat: false,
            cleaner: None,
        }
    }
}

/// What [`Sandbox::apply`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The user and group the process switched to (only when started as root).
    pub switched_to: Option<(u32, u32)>,
    /// Whether the kernel enforces the Landlock rules fully, partly (older
    /// ABI) or not at all (Landlock disabled).
    pub landlock: LandlockState,
    /// Number of system calls the seccomp filter allows.
    pub syscalls: usize,
    /// The capabilities kept (effective and permitted), as a bit mask by
    /// capability number: none, or CAP_NET_ADMIN for the network service.
    pub capabilities: u64,
    /// Whether the process sees only the directories it needs, in a
    /// private mount namespace (made only when unix datagrams are allowed).
    pub private_root: bool,
}

/// How far the kernel enforces the filesystem rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockState {
    /// Every requested right is enforced.
    Full,
    /// The kernel knows an older Landlock ABI: some rights are not enforced.
    Partial,
    /// The kernel has Landlock disabled: the filesystem is not restricted
    /// (seccomp and the privilege drop still apply).
    Unsupported,
}

impl Sandbox {
    /// A sandbox allowing no file access at all and only the data path's
    /// system calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// The profile of a bridge network's DHCP/DNS/TFTP/RA service, once
    /// its sockets are bound: like [`Sandbox::new`], but it keeps
    /// CAP_NET_ADMIN (ARP entries for DHCP clients) in its effective and
    /// permitted sets (the bounding set is still emptied), may open only
    /// IPv4 and IPv6 sockets (no netlink, no Unix), and may also use the
    /// `ioctl`s `SIOCSARP` and `SIOCGIFINDEX`. It starts no thread (one
    /// event loop serves every client).
    pub fn network_service() -> Self {
        Sandbox {
            service: true,
            ..Self::default()
        }
    }

    /// Allows reading `path` (a file, or a directory tree: a TFTP root,
    /// `/etc/resolv.conf`). It must exist when [`Sandbox::apply`] runs.
    pub fn allow_read(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.read_only.push(path.into());
        self
    }

    /// Allows reading, creating, replacing (by a rename inside it) and
    /// removing regular files in directory `dir` (a leases directory), and
    /// the calls that writing files safely needs (`fsync`, `rename`).
    /// Started as root, the process reaches `dir` as the sandbox's user:
    /// give it the directory with [`Sandbox::hand_over`] and use a
    /// descriptor of it opened before [`Sandbox::apply`] (its parents need
    /// not be searchable by that user).
    pub fn allow_write_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.write_dirs.push(dir.into());
        self
    }

    /// Makes the user the process will switch to the owner of `file` (a
    /// directory given to [`Sandbox::allow_write_dir`]), when the process
    /// runs as root and will switch. Nothing to do otherwise, nor in a
    /// user namespace where that user does not exist (the process stays
    /// uid 0 there).
    pub fn hand_over(&self, file: &std::fs::File) -> Result<(), SandboxError> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(());
        }
        let (uid, gid) = lookup_user(&self.runas)?;
        // SAFETY: fchown on a descriptor the caller owns.
        if unsafe { libc::fchown(std::os::fd::AsRawFd::as_raw_fd(file), uid, gid) } != 0
            && !unmapped_in_user_namespace()
        {
            return Err(os_err("giving the directory to the sandbox's user"));
        }
        Ok(())
    }

    /// Has `path` (a socket file the process created) removed when the
    /// process ends. The sandboxed process itself may remove no file (nor
    /// create a socket file): [`Sandbox::apply`] forks first, and the
    /// parent (confined to waiting, forwarding SIGTERM/SIGINT and removing
    /// these files if they are still sockets) outlives the sandboxed child
    /// and exits with its status.
    pub fn remove_on_exit(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.remove_on_exit.push(path.into());
        self
    }

    /// Allows new unix datagram sockets (a datagram attachment reaching
    /// later VMs), which can reach only sockets in directory `dir` (and
    /// beneath it): [`Sandbox::apply`] gives the process a private root
    /// holding only `dir` and the paths allowed otherwise, so no other
    /// socket file can be named. Without it `socket` is for TCP and UDP
    /// only.
    pub fn allow_unix_datagrams(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.unix_dgram = Some(dir.into());
        self
    }

    /// Allows what a vhost-user link needs besides the data path's calls:
    /// `lseek` (the sizes of the guest memory files QEMU passes).
    pub fn allow_vhost_user(&mut self) -> &mut Self {
        self.vhost_user = true;
        self
    }

    /// Allows `lseek`, to read files opened before the sandbox again from
    /// their start (a namespace's socket tables in /proc, which the kernel
    /// writes anew for each read from offset 0).
    pub fn allow_rereading(&mut self) -> &mut Self {
        self.reread = true;
        self
    }

    /// Allows `fstat` on a descriptor (no path): a stack with guest
    /// forwards reads the inode of each socket it connects to their
    /// helper's listeners, to name the socket to the helper.
    pub fn allow_fstat(&mut self) -> &mut Self {
        self.fstat = true;
        self
    }

    /// Allows `pipe2` and `splice`: connections relayed between two
    /// sockets through a pipe pair each (pasta's `-T`), never copied
    /// through the process's memory.
    pub fn allow_splicing(&mut self) -> &mut Self {
        self.splice = true;
        self
    }

    /// Makes a part of the sandbox the kernel cannot give an error of
    /// [`Sandbox::apply`] (`--require-sandbox`) instead of a warning:
    /// Landlock, and the private mount namespace of
    /// [`Sandbox::allow_unix_datagrams`].
    pub fn require(&mut self, require: bool) -> &mut Self {
        self.require = require;
        self
    }

    /// The user to switch to when started as root.
    pub fn runas_user(&self) -> &str {
        &self.runas
    }

    /// The user to switch to when started as root (default `nobody`).
    pub fn runas(&mut self, user: impl Into<String>) -> &mut Self {
        self.runas = user.into();
        self
    }

    /// The system calls the filter allows, by name, in table order. Reading
    /// files adds the calls that opening and reading them needs.
    pub fn syscalls(&self) -> Vec<Syscall> {
        let mut all = syscalls::allowed(
            self.service,
            !self.read_only.is_empty(),
            !self.write_dirs.is_empty(),
            self.unix_dgram.is_some(),
        );
        if self.vhost_user && !all.iter().any(|c| syscalls::VHOST_USER.contains(c)) {
            all.extend_from_slice(syscalls::VHOST_USER);
        }
        if self.reread && !all.iter().any(|c| syscalls::REREAD.contains(c)) {
            all.extend_from_slice(syscalls::REREAD);
        }
        if self.splice {
            all.extend_from_slice(syscalls::SPLICE);
        }
        if self.fstat && !all.iter().any(|c| syscalls::FSTAT.contains(c)) {
            all.extend_from_slice(syscalls::FSTAT);
        }
        all
    }

    /// The capabilities kept, as a bit mask by capability number.
    fn kept_capabilities(&self) -> u64 {
        if self.service {
            // CAP_NET_ADMIN, the one capability the network service keeps:
            // adding a complete ARP entry (`SIOCSARP`) for a DHCP client
            // that has no address yet, as dnsmasq does.
            Capability::CAP_NET_ADMIN.bitmask()
        } else {
            0
        }
    }

    /// Forks the socket-cleaning parent now instead of in
    /// [`Sandbox::apply`], for a caller that starts threads in between (a
    /// fork keeps only the calling thread: threads started before it would
    /// stay behind in the cleaning parent). Call it once every
    /// [`Sandbox::remove_on_exit`] path is registered, while the process
    /// has one thread.
    pub fn fork_cleaner(&mut self) -> Result<(), SandboxError> {
        if self.cleaner.is_none() && !self.remove_on_exit.is_empty() {
            self.cleaner = Some(cleaner::fork(
                &self.remove_on_exit,
                self.cleaner_ruleset()?,
            )?);
        }
        Ok(())
    }

    /// Confines the calling process (every thread it has now and later).
    /// Call it once setup is complete: nothing it forbids can be done
    /// afterwards.
    pub fn apply(&self) -> Result<Report, SandboxError> {
        let ruleset = self.landlock_ruleset()?;
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        // Read while /etc and /proc are still there.
        let user = if root {
            Some((lookup_user(&self.runas)?, in_user_namespace()))
        } else {
            None
        };
        let parent = if self.cleaner.is_some() {
            self.cleaner
        } else if self.remove_on_exit.is_empty() {
            None
        } else {
            Some(cleaner::fork(
                &self.remove_on_exit,
                self.cleaner_ruleset()?,
            )?)
        };
        // After the fork (the cleaning parent removes the socket files in
        // the real filesystem), before the switch of user (root needs
        // CAP_SYS_ADMIN for it).
        let private_root = match &self.unix_dgram {
            Some(dir) => self.enter_private_root(dir, !root)?,
            None => false,
        };
        let switched_to = match user {
            Some(((uid, gid), userns)) => self.drop_root(uid, gid, userns)?,
            None => None,
        };
        if let Some(parent) = parent {
            // After the switch of user, which clears the parent-death signal.
            cleaner::die_with_parent(parent)?;
        }
        // After the switch of user, which makes the process dumpable if
        // `fs.suid_dumpable` says so.
        make_undumpable().map_err(|source| SandboxError::Os {
            what: "setting whether the process is dumpable",
            source,
        })?;
        let capabilities = keep_capabilities(self.kept_capabilities())?;
        // SAFETY: plain prctl with integer arguments.
        if unsafe { prctl(libc::PR_SET_NO_NEW_PRIVS, 1) } != 0 {
            return Err(os_err("setting no_new_privs"));
        }
        let landlock = match ruleset.restrict_self()?.ruleset {
            RulesetStatus::FullyEnforced => LandlockState::Full,
            RulesetStatus::PartiallyEnforced => LandlockState::Partial,
            RulesetStatus::NotEnforced => LandlockState::Unsupported,
        };
        check_landlock(landlock, self.require)?;
        let syscalls = self.syscalls();
        syscalls::install(&syscalls)?;
        tracing::info!(
            syscalls = syscalls.len(),
            ?switched_to,
            ?landlock,
            capabilities = format_args!("{capabilities:#x}"),
            private_root,
            "sandbox applied"
        );
        Ok(Report {
            switched_to,
            landlock,
            syscalls: syscalls.len(),
            capabilities,
            private_root,
        })
    }

    /// Moves the process into a private mount namespace holding only the
    /// datagram socket directory `dgram_dir` and the paths Landlock allows
    /// (see [`mountns`]). Returns whether it did: when the kernel refuses
    /// the namespaces, a warning names the gap (or, required, an error).
    fn enter_private_root(
        &self,
        dgram_dir: &Path,
        new_user_ns: bool,
    ) -> Result<bool, SandboxError> {
        let dir = if dgram_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dgram_dir
        };
        let paths: Vec<(PathBuf, bool)> = std::iter::once((dir.to_owned(), false))
            .chain(self.read_only.iter().map(|p| (p.clone(), false)))
            .chain(self.write_dirs.iter().map(|p| (p.clone(), true)))
            .collect();
        match mountns::enter(&paths, new_user_ns) {
            Ok(()) => Ok(true),
            Err(mountns::MountNsError::Unavailable(source)) if self.require => {
                Err(SandboxError::NoMountNamespace {
                    dir: dir.to_owned(),
                    source,
                })
            }
            Err(mountns::MountNsError::Unavailable(err)) => {
                tracing::warn!(
                    %err,
                    dir = %dir.display(),
                    "cannot make a private mount namespace (user namespaces disabled, e.g. kernel.unprivileged_userns_clone=0, or refused by policy): unix datagrams are NOT limited to the socket directory, a compromised stack could reach every unix datagram socket its user may write (--require-sandbox makes this an error)"
                );
                Ok(false)
            }
            Err(mountns::MountNsError::Failed { what, source }) => {
                Err(SandboxError::Os { what, source })
            }
        }
    }

    /// The sandboxed process's filesystem: the read-only trees and the
    /// directories whose files it replaces, nothing else (no socket file
    /// created or removed: the cleaning parent removes them).
    fn landlock_ruleset(&self) -> Result<RulesetCreated, SandboxError> {
        let all = AccessFs::from_all(LANDLOCK_ABI);
        let mut ruleset = Ruleset::default().handle_access(all)?.create()?;
        for path in &self.read_only {
            ruleset = add_rule(ruleset, path, AccessFs::from_read(LANDLOCK_ABI))?;
        }
        // Not `Refer`: a rename stays inside the directory.
        let files = AccessFs::ReadFile
            | AccessFs::WriteFile
            | AccessFs::ReadDir
            | AccessFs::MakeReg
            | AccessFs::RemoveFile
            | AccessFs::Truncate;
        for dir in &self.write_dirs {
            ruleset = add_rule(ruleset, dir, files)?;
        }
        Ok(ruleset)
    }

    /// The cleaning parent's filesystem: removing files in the directories
    /// of the socket files it removes (it runs fixed code, reads no guest
    /// input, and removes only these paths, and only while they are
    /// sockets).
    fn cleaner_ruleset(&self) -> Result<RulesetCreated, SandboxError> {
        let all = AccessFs::from_all(LANDLOCK_ABI);
        let mut ruleset = Ruleset::default().handle_access(all)?.create()?;
        for path in &self.remove_on_exit {
            let dir = slipway_host::atomic::parent(path);
            ruleset = add_rule(ruleset, dir, AccessFs::RemoveFile.into())?;
        }
        Ok(ruleset)
    }

    /// Leaves root for the configured user; returns its uid and gid, or
    /// `None` inside a user namespace that has no such user (`unshare -r`
    /// maps only uid 0): there the process stays uid 0 of the namespace,
    /// without capabilities.
    /// `userns` says whether the process runs in a user namespace (read
    /// beforehand: /proc may be gone by now).
    fn drop_root(
        &self,
        uid: u32,
        gid: u32,
        userns: bool,
    ) -> Result<Option<(u32, u32)>, SandboxError> {
        // Without CAP_SETPCAP later, the bounding set must shrink now.
        slipway_host::clear_bounding_set().map_err(|source| SandboxError::Os {
            what: "dropping the capability bounding set",
            source,
        })?;
        // SAFETY: plain system calls with integer arguments.
        unsafe {
            // Capabilities to keep survive the switch in the permitted set
            // (the effective set is emptied; `keep_capabilities` restores it).
            if self.kept_capabilities() != 0 && prctl(libc::PR_SET_KEEPCAPS, 1) != 0 {
                return Err(os_err("keeping capabilities across the switch of user"));
            }
            // A user namespace may deny setgroups (unshare -r does); it has
            // no supplementary groups to drop then.
            if libc::setgroups(0, std::ptr::null()) != 0 && !userns {
                return Err(os_err("dropping supplementary groups"));
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                if unmapped(userns) {
                    tracing::warn!(
                        user = %self.runas,
                        "root of a user namespace where this user does not exist: staying uid 0, without capabilities"
                    );
                    return Ok(None);
                }
                return Err(os_err("switching group"));
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return Err(os_err("switching user"));
            }
            if prctl(libc::PR_SET_KEEPCAPS, 0) != 0 {
                return Err(os_err("keeping capabilities across the switch of user"));
            }
        }
        Ok(Some((uid, gid)))
    }
}

/// Says what a Landlock state leaves unrestricted: nothing (full), newer
/// rights (partial: a warning), the whole filesystem (unsupported: a
/// warning, or with `require` the error [`SandboxError::NoLandlock`]).
pub fn check_landlock(state: LandlockState, require: bool) -> Result<(), SandboxError> {
    match state {
        LandlockState::Full => Ok(()),
        LandlockState::Partial => {
            tracing::warn!(
                "the kernel enforces an older Landlock ABI: rights it does not know (file truncation, device ioctls, ...) are not restricted"
            );
            Ok(())
        }
        LandlockState::Unsupported if require => Err(SandboxError::NoLandlock),
        LandlockState::Unsupported => {
            tracing::warn!(
                "Landlock is missing (a kernel without it, or not in its lsm= list): the filesystem is NOT restricted; seccomp and the privilege drop still apply (--require-sandbox makes this an error)"
            );
            Ok(())
        }
    }
}

fn add_rule(
    ruleset: RulesetCreated,
    path: &Path,
    access: landlock::BitFlags<AccessFs>,
) -> Result<RulesetCreated, SandboxError> {
    let rule = path_beneath_rules([path], access)
        .next()
        .expect("one path gives one rule")
        .map_err(|source| SandboxError::LandlockPath {
            path: path.to_owned(),
            source,
        })?;
    Ok(ruleset.add_rule(rule)?)
}

/// Makes the calling process not dumpable (`PR_SET_DUMPABLE` 0), as passt
/// and pasta make themselves: no process without CAP_SYS_PTRACE in the
/// user namespace slipway was started in may trace it, read or write its
/// memory (`/proc/PID/mem`, `process_vm_readv`), take its descriptors
/// (`pidfd_getfd`) or list them; its `/proc/PID` files belong to root; it
/// leaves no core dump. Without it a container's root, which holds every
/// capability in its user namespace and has the user's uid, could do all
/// of that to a slipway process in that namespace (a rootless container
/// tool runs slipway there) and use its host sockets.
///
/// The kernel makes a process dumpable again at `execve` (the program
/// run is then what it is) and may at a change of credentials (a switch
/// of user, joining a user namespace another user owns): call it again
/// after those. Allocates nothing: safe between `fork` and `exec`.
pub fn make_undumpable() -> std::io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { prctl(libc::PR_SET_DUMPABLE, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the calling process dumpable again (`PR_SET_DUMPABLE` 1), for a
/// child that is to become a container's own first process (its command,
/// dumpable anyway once it runs): it may then write its id maps, and
/// slipway may join its namespaces through `/proc/PID/ns`. Nothing else:
/// a dumpable process can be traced by every process of its user.
/// Allocates nothing: safe between `fork` and `exec`.
pub fn make_dumpable() -> std::io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { prctl(libc::PR_SET_DUMPABLE, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `write` (writes to the process's own `/proc/self/uid_map`,
/// `gid_map` and `setgroups` after it made a user namespace) with the
/// process dumpable for that time only, as it was before when it was not
/// dumpable. A process that is not dumpable does not own its `/proc/self`
/// files (root of the user namespace it was started in does), so an
/// ordinary user could not open them. The process is then briefly
/// traceable by its own user in its own namespaces, and by no container
/// (it is alone in the user namespace it just made); the error is that of
/// making it not dumpable again, which it must not go on without.
/// Allocates nothing: safe between `fork` and `exec`.
pub fn while_dumpable<T>(write: impl FnOnce() -> T) -> std::io::Result<T> {
    // SAFETY: plain prctl with integer arguments.
    let was = unsafe { prctl(libc::PR_GET_DUMPABLE, 0) };
    if was == 1 {
        return Ok(write());
    }
    make_dumpable()?;
    let done = write();
    make_undumpable()?;
    Ok(done)
}

/// `prctl(option, arg, 0, 0, 0)` with every argument passed at its full
/// width (a variadic call would leave the upper halves of narrower
/// integers undefined, which the kernel rejects).
///
/// # Safety
/// `option` must be one whose argument is a plain integer.
unsafe fn prctl(option: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
    let zero: libc::c_ulong = 0;
    libc::prctl(option, arg, zero, zero, zero)
}

/// Whether the last call failed with EINVAL because the process runs in a
/// user namespace where the ids are not mapped.
fn unmapped_in_user_namespace() -> bool {
    unmapped(in_user_namespace())
}

/// Whether the last call failed with EINVAL, in a user namespace (`userns`)
/// where that means the ids are not mapped.
fn unmapped(userns: bool) -> bool {
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) && userns
}

/// Whether the process runs in a user namespace other than the initial one.
fn in_user_namespace() -> bool {
    !std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// The uid and gid that programs started on behalf of the sandboxed
/// process (guest forward commands, smbd) run as: `user`'s when started
/// as root, `None` when not root (they run as this process's user) or in
/// a user namespace that does not map `user` (they stay uid 0 of the
/// namespace, as the sandbox does, and a warning says so).
pub fn runas_ids(user: &str) -> Result<Option<(u32, u32)>, SandboxError> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let (uid, gid) = lookup_user(user)?;
    if !id_mapped(uid, "/proc/self/uid_map") || !id_mapped(gid, "/proc/self/gid_map") {
        tracing::warn!(
            user,
            "root of a user namespace where this user does not exist: programs run as uid 0"
        );
        return Ok(None);
    }
    Ok(Some((uid, gid)))
}

/// Whether `id` lies in one of the ranges of a uid_map or gid_map file
/// (`inside outside count` lines).
fn id_mapped(id: u32, map: &str) -> bool {
    std::fs::read_to_string(map).is_ok_and(|text| {
        text.lines().any(|line| {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            f.len() == 3 && (f[0]..f[0] + f[2]).contains(&u64::from(id))
        })
    })
}

/// The uid and gid of `user` (a name, or a number).
fn lookup_user(user: &str) -> Result<(u32, u32), SandboxError> {
    let name = CString::new(user).map_err(|_| SandboxError::NoSuchUser(user.into()))?;
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0_u8; 16384];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live buffer of the size given.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc == 0 && !found.is_null() {
        return Ok((pwd.pw_uid, pwd.pw_gid));
    }
    match user.parse::<u32>() {
        Ok(uid) if uid != 0 => Ok((uid, uid)),
        _ => Err(SandboxError::NoSuchUser(user.into())),
    }
}

/// Empties the inheritable and ambient capability sets and leaves in the
/// effective and permitted sets only the capabilities of `keep` (a bit
/// mask by number) the process still has: nothing for the data path (a
/// root process that could not switch user, e.g. in a user namespace,
/// keeps uid 0 but no power). Returns what was kept.
fn keep_capabilities(keep: u64) -> Result<u64, SandboxError> {
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing ambient capabilities"))?;
    let kept: CapsHashSet = caps::read(None, CapSet::Permitted)
        .map_err(caps_err("reading capabilities"))?
        .into_iter()
        .filter(|c| c.bitmask() & keep != 0)
        .collect();
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("dropping capabilities"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(caps_err("dropping capabilities"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("dropping capabilities"))?;
    Ok(kept.iter().fold(0, |m, c| m | c.bitmask()))
}
