//! Crash-safe file writes and the manager's lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of the temporary files [`write_atomic`] creates; a crash can leave
/// one behind, so readers skip these names and recovery deletes them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Creates `dir` (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create directory", dir, e))
}

/// Replaces `path` with `data` so that a crash at any point leaves either
/// the old or the new content: write a temporary file in the same directory,
/// fsync it, rename it over `path`, fsync the directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = parent(path);
    ensure_dir(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{TEMP_PREFIX}{}-{file_name}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("cannot create", &tmp, e))?;
        f.write_all(data)
            .map_err(|e| Error::io("cannot write", &tmp, e))?;
        f.sync_all()
            .map_err(|e| Error::io("cannot sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("cannot rename into place", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Removes `path` if it exists, then makes the removal durable.
pub(crate) fn remove_durable(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// Creates (or replaces) the symlink `link` → `target` atomically.
pub(crate) fn symlink_atomic(target: &Path, link: &Path) -> Result<()> {
    let dir = parent(link);
    ensure_dir(dir)?;
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{TEMP_PREFIX}{}-{name}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| Error::io("cannot create symlink", &tmp, e))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot rename into place", link, e));
    }
    sync_dir(dir)
}

/// fsync a directory so renames and removals in it survive a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", dir, e))
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Deletes temporary files a crashed writer left in `dir`.
pub(crate) fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && fs::remove_file(entry.path()).is_ok()
        {
            removed.push(entry.path());
        }
    }
    removed
}

/// An flock(2) on the lock file, released on drop. Exclusive for mutations,
/// shared for reads; flock locks belong to the open file description, so
/// threads of one process exclude each other too.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: File,
}

impl LockGuard {
    /// Blocks until the lock is held.
    pub(crate) fn acquire(path: &Path, exclusive: bool) -> Result<LockGuard> {
        ensure_dir(parent(path))?;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            // Readers without write access to the directory (a user reading
            // the system instance) can still take a shared lock.
            Err(e) if !exclusive && e.kind() == std::io::ErrorKind::PermissionDenied => {
                File::open(path)
            }
            other => other,
        }
        .map_err(|e| Error::io("cannot open lock file", path, e))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: the descriptor is open for the life of `file`.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(LockGuard { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("cannot lock", path, err));
            }
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
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-1-a.xml"), b"half").unwrap();
        fs::write(dir.path().join("a.xml"), b"whole").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).len(), 1);
        assert!(dir.path().join("a.xml").exists());
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
