//! Crash-safe file writes, private files, and the manager's lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use slipway_host::atomic::{self, parent};

use crate::error::{Error, Result};

/// Creates `dir` (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create directory", dir, e))
}

/// Replaces `path` with `data` crash-safely ([`atomic::write`]), creating
/// its directory first if missing.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    ensure_dir(parent(path))?;
    Ok(atomic::write(path, data)?)
}

/// How long a command waits for the manager's lock before it gives up and
/// names the holder. `SLIPWAY_LOCK_WAIT_MS` overrides it (tests).
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The lock wait in effect: [`LOCK_WAIT`] unless `SLIPWAY_LOCK_WAIT_MS` says otherwise.
fn lock_wait() -> Duration {
    slipway_host::env_millis("SLIPWAY_LOCK_WAIT_MS").unwrap_or(LOCK_WAIT)
}

/// This process's effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes sure `dir` exists, is a real directory owned by this user (else
/// `Permission denied`), and that nobody else can write in it (group/other
/// write bits are removed): nobody else can then replace or plant files
/// there.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    ensure_dir(dir)?;
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io("cannot inspect", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::UnsafePath {
            path: dir.to_path_buf(),
            why: "not a directory".into(),
        });
    }
    if meta.uid() != euid() {
        // Another user's instance: not ours to change.
        return Err(Error::io(
            "cannot use the directory",
            dir,
            std::io::Error::from_raw_os_error(libc::EACCES),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o022))
            .map_err(|e| Error::io("cannot restrict permissions of", dir, e))?;
    }
    Ok(())
}

/// Opens (creating it mode 0600) a file only this user may open, in a
/// directory only this user may write ([`ensure_private_dir`]): a symlink
/// is not followed, a file of another user is refused, and an older file
/// with wider permissions is narrowed to 0600.
pub(crate) fn open_private(path: &Path) -> Result<File> {
    ensure_private_dir(parent(path))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("cannot open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot inspect", path, e))?;
    if !meta.is_file() || meta.uid() != euid() {
        return Err(Error::UnsafePath {
            path: path.to_path_buf(),
            why: format!("not a regular file of uid {}", euid()),
        });
    }
    if meta.mode() & 0o7777 != 0o600 {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("cannot restrict permissions of", path, e))?;
    }
    Ok(file)
}

/// The pids holding an flock(2) on `file`, from `/proc/locks` (waiters,
/// shown with `->`, are not holders).
pub(crate) fn lock_holders(file: &File) -> Vec<i32> {
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    let dev = meta.dev();
    // The kernel prints "%02x:%02x:%lu": major, minor (hex), inode.
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut pids: Vec<i32> = locks
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // "N: FLOCK ADVISORY WRITE PID DEV:INO START END"
            (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str()))
                .then(|| f.get(4)?.parse().ok())
                .flatten()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `pid 12 (slipway)`, for messages naming a lock's holders.
pub(crate) fn describe_pids(pids: &[i32]) -> String {
    if pids.is_empty() {
        return "an unknown process".into();
    }
    pids.iter()
        .map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match comm.trim() {
                "" => format!("pid {pid}"),
                c => format!("pid {pid} ({c})"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An flock(2) on the lock file, released on drop. Exclusive for mutations,
/// shared for reads; flock locks belong to the open file description, so
/// threads of one process exclude each other too.
///
/// The lock file is private ([`open_private`]): another user can neither
/// open nor flock it, so nobody but the owner can freeze the manager. A
/// user reading another user's instance (the system one) cannot open it
/// and reads without the lock: every file is replaced atomically.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: Option<File>,
}

impl LockGuard {
    /// Waits (at most [`LOCK_WAIT`]) until the lock is held; past that, the
    /// error names the processes holding it.
    pub(crate) fn acquire(path: &Path, exclusive: bool) -> Result<LockGuard> {
        LockGuard::acquire_within(path, exclusive, lock_wait())
    }

    /// [`LockGuard::acquire`] with a wait of `wait`.
    fn acquire_within(path: &Path, exclusive: bool, wait: Duration) -> Result<LockGuard> {
        let dir = parent(path);
        if !exclusive {
            if let Ok(meta) = fs::symlink_metadata(dir) {
                if meta.uid() != euid() {
                    tracing::debug!(
                        "{} belongs to uid {}: reading without the lock",
                        dir.display(),
                        meta.uid()
                    );
                    return Ok(LockGuard { _file: None });
                }
            }
        }
        let file = open_private(path)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            // SAFETY: the descriptor is open for the life of `file`.
            if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
                return Ok(LockGuard { _file: Some(file) });
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
                _ => return Err(Error::io("cannot lock", path, err)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::LockTimeout {
                    path: path.to_path_buf(),
                    waited: wait,
                    holders: describe_pids(&lock_holders(&file)),
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.xml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.xml")]);
    }

    #[test]
    fn lock_file_is_private_and_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        fs::create_dir(&run).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
        let lock = run.join("lock");
        drop(LockGuard::acquire(&lock, false).unwrap());
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&lock), 0o600);
        assert_eq!(mode(&run), 0o755);
        // A lock file an older version left readable by all is narrowed.
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o644)).unwrap();
        drop(LockGuard::acquire(&lock, true).unwrap());
        assert_eq!(mode(&lock), 0o600);
        // A symlink in its place is not followed.
        fs::remove_file(&lock).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        let e = LockGuard::acquire(&lock, true).unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
    }

    #[test]
    fn a_held_lock_times_out_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        let _held = LockGuard::acquire(&lock, true).unwrap();
        let e = LockGuard::acquire_within(&lock, false, Duration::from_millis(200)).unwrap_err();
        let me = std::process::id();
        assert!(
            e.to_string().starts_with(&format!(
                "timed out after 0.2 s waiting for the lock {}, held by pid {me} (",
                lock.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn exclusive_lock_excludes_threads() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let lock = lock.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = LockGuard::acquire(&lock, true).unwrap();
                        // Inside the lock nobody else may be inside.
                        assert_eq!(counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
