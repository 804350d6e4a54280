//! A private filesystem view holding only the directories the process
//! still needs, as passt builds one.
//!
//! Landlock does not govern `connect`/`sendto` on a unix socket path, so a
//! process that may open unix datagram sockets (a `--dgram` attachment,
//! reaching VMs that join later) could otherwise send to any datagram
//! socket its user may write (the journal, notify sockets, ...). Before
//! anything is dropped, [`enter`] moves the process into a new mount
//! namespace (with a new user namespace first when not root, mapping only
//! its own uid and gid) whose root is an empty read-only tmpfs holding,
//! at their usual absolute paths, bind mounts of the directories given
//! (read-only unless writable; `nosuid`, `nodev`, `noexec`), then detaches
//! the old root. A socket elsewhere no longer has a path the process can
//! name. Descriptors opened before (the attachment, a TFTP root) keep
//! working; the socket-cleaning parent, forked before, stays in the
//! original namespace and removes the socket files there.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Where the new root is built: a tmpfs mounted over it (in the new
/// namespace only) before it becomes the root. Any directory would do;
/// `/tmp` exists everywhere.
const BUILD: &str = "/tmp";

/// Why the private view could not be made.
#[derive(Debug)]
pub(crate) enum MountNsError {
    /// The kernel or its policy refuses the namespaces (user namespaces
    /// disabled by sysctl, no CAP_SYS_ADMIN, an AppArmor policy on user
    /// namespaces): nothing changed; the caller warns or, when the
    /// sandbox is required, fails.
    Unavailable(io::Error),
    /// A later step failed, with the namespace half built: fatal.
    Failed {
        /// The step.
        what: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
}

/// One directory (or file) to keep, at its absolute path.
struct Keep {
    /// Its place beneath the new root (absolute, `..` resolved, no `/`).
    relative: PathBuf,
    source: OwnedFd,
    dir: bool,
    writable: bool,
}

/// Moves the calling (single-threaded) process into a mount namespace
/// whose root holds only `paths` (each with whether it stays writable),
/// at their absolute paths; `new_user_ns` creates a user namespace first
/// (not root: mapping only the caller's own uid and gid). The working
/// directory stays if it is inside a kept directory, else it becomes `/`.
pub(crate) fn enter(paths: &[(PathBuf, bool)], new_user_ns: bool) -> Result<(), MountNsError> {
    let failed = |what| move |source| MountNsError::Failed { what, source };
    let mut targets = Vec::new();
    for (path, writable) in paths {
        let absolute = std::path::absolute(path).map_err(failed("resolving a kept path"))?;
        let relative = beneath_root(&absolute);
        if relative.as_os_str().is_empty() {
            return Err(MountNsError::Unavailable(io::Error::other(
                "the directory to keep is the root directory itself",
            )));
        }
        targets.push((absolute, relative, *writable));
    }
    // Parents first: a kept path inside another is mounted on top of it.
    targets.sort_by_key(|(_, relative, _)| relative.components().count());
    let cwd = std::env::current_dir().ok();
    // SAFETY: plain system calls on integer arguments.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let unavailable = |e: io::Error| MountNsError::Unavailable(e);
    if new_user_ns {
        // SAFETY: unshare with flags only.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            return Err(unavailable(io::Error::last_os_error()));
        }
        // Its own ids only: files keep their owners as the kernel checks
        // them; `setgroups` is denied, as an unprivileged map requires.
        // A process that is not dumpable could not open them.
        let (uid_map, gid_map) = (format!("{uid} {uid} 1"), format!("{gid} {gid} 1"));
        crate::while_dumpable(|| {
            std::fs::write("/proc/self/setgroups", "deny")
                .and_then(|()| std::fs::write("/proc/self/uid_map", uid_map))
                .and_then(|()| std::fs::write("/proc/self/gid_map", gid_map))
        })
        .map_err(failed("making the process not dumpable again"))?
        .map_err(unavailable)?;
    } else {
        // SAFETY: unshare with flags only.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(unavailable(io::Error::last_os_error()));
        }
    }
    // Nothing done here shows outside, nor anything done outside here.
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(unavailable)?;
    // Opened in the new namespace (a bind mount's source must be one of
    // its mounts), before anything is covered (a source may be under /tmp).
    let mut keep = Vec::new();
    for (target, relative, writable) in targets {
        let source = open_path(&target).map_err(failed("opening a kept path"))?;
        let dir = std::fs::metadata(format!("/proc/self/fd/{}", source.as_raw_fd()))
            .map_err(failed("opening a kept path"))?
            .is_dir();
        keep.push(Keep {
            relative,
            source,
            dir,
            writable,
        });
    }
    mount(
        Some("tmpfs"),
        BUILD,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(unavailable)?;
    for k in &keep {
        let at = Path::new(BUILD).join(&k.relative);
        // (It may exist already, inside a kept directory mounted before.)
        let made = if k.dir {
            std::fs::create_dir_all(&at)
        } else if at.exists() {
            Ok(())
        } else {
            at.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::File::create(&at).map(drop))
        };
        made.map_err(failed("building the private root"))?;
        let source = format!("/proc/self/fd/{}", k.source.as_raw_fd());
        mount(Some(&source), &at, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(failed("bind-mounting a kept path"))?;
        let mut flags = libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | atime_flags(&at);
        if !k.writable {
            flags |= libc::MS_RDONLY;
        }
        mount(None, &at, None, flags, None).map_err(failed("restricting a kept path"))?;
    }
    mount(
        None,
        BUILD,
        None,
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )
    .map_err(failed("making the private root read-only"))?;
    drop(keep);
    // pivot_root(".", "."): the old root ends up on top of the new one,
    // and detaching it leaves the new one alone.
    std::env::set_current_dir(BUILD).map_err(failed("entering the private root"))?;
    let dot = c".";
    // SAFETY: pivot_root and umount2 on a constant C string.
    unsafe {
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
            return Err(failed("pivot_root")(io::Error::last_os_error()));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(failed("detaching the old root")(io::Error::last_os_error()));
        }
    }
    // Relative socket addresses keep meaning what they meant, where they
    // still can.
    let back = cwd.is_some_and(|cwd| std::env::set_current_dir(cwd).is_ok());
    if !back {
        std::env::set_current_dir("/").map_err(failed("entering the private root"))?;
    }
    Ok(())
}

/// Absolute path `path` as a relative one beneath the root, `.` and `..`
/// resolved as the new root (real directories all the way) resolves them.
fn beneath_root(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `mount(2)` on Rust strings.
fn mount(
    source: Option<&str>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let source = source.map(c).transpose()?;
    let target = CString::new(target.as_ref().as_os_str().as_bytes()).map_err(io::Error::other)?;
    let fstype = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a live NUL-terminated string.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The access-time flags of the mount at `path` (a bind remount must keep
/// them when the mount came from a more privileged namespace).
fn atime_flags(path: &Path) -> libc::c_ulong {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs of a NUL-terminated path into a locally owned struct.
    if unsafe { libc::statvfs(cpath.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

/// An `O_PATH` descriptor of `path`.
fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let cpath = CString::new(OsStr::as_bytes(path.as_os_str())).map_err(io::Error::other)?;
    // SAFETY: open on a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept paths land beneath the new root, never above it (`..` at the
    /// root stays there, as the kernel resolves it).
    #[test]
    fn kept_paths_stay_beneath_the_new_root() {
        for (path, want) in [
            ("/run/vms", "run/vms"),
            ("/a/./b/../c", "a/c"),
            ("/../etc", "etc"),
            ("/x/../..", ""),
            ("/", ""),
        ] {
            assert_eq!(beneath_root(Path::new(path)), Path::new(want), "{path}");
        }
    }
}
