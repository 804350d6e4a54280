//! Crash-safe file replacement.
//!
//! A file is replaced by writing a temporary file in the same directory,
//! fsyncing it, renaming it over the file and fsyncing the directory: a
//! crash at any point leaves the old content or the new, never a mix. What a
//! crash can leave is the temporary file itself. Every writer in every crate
//! names it the same way, [`temp_name`]: `.tmp-PID-SEQ-NAME` (the writer's
//! process id, a per-process sequence number, the file's name), created
//! with `O_EXCL` so two writers never share one. Readers that list a
//! directory skip names for which [`is_temp_name`] holds, and recovery calls
//! [`clean_stale`], which removes those names and nothing else.
//!
//! [`write_at`] is the directory-descriptor form (`openat`, `renameat`) for
//! a confined process that can no longer resolve the path of the directory.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// What every temporary name starts with.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A file operation that failed: what was being done, on which path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct AtomicError {
    /// What was being done ("cannot write", "cannot sync directory", ...).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl AtomicError {
    /// `action` on `path` failed with `source`.
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> AtomicError {
        AtomicError {
            action,
            path: path.into(),
            source,
        }
    }
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AtomicError + 'a {
    move |source| AtomicError::new(action, path, source)
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name for replacing `name`: `.tmp-PID-SEQ-NAME`.
pub fn temp_name(name: &OsStr) -> OsString {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut tmp = OsString::from(format!("{TEMP_PREFIX}{}-{seq}-", std::process::id()));
    tmp.push(name);
    tmp
}

/// True for a name [`temp_name`] makes: `.tmp-`, decimal digits, `-`, then
/// anything.
pub fn is_temp_name(name: &OsStr) -> bool {
    let Some(rest) = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes()) else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest.get(digits) == Some(&b'-') && rest.len() > digits + 1
}

/// The directory `path` is in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Replaces file `name` of the open directory `dir` with `data` (mode
/// 0644), crash-safely (see the module doc). The calls are `openat`,
/// `write`, `fsync`, `renameat` and, on failure, `unlinkat`: all relative
/// to `dir`, none resolving a path above it.
pub fn write_at(dir: &File, name: &OsStr, data: &[u8]) -> io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let (tmp, mut file) = loop {
        let tmp = temp_name(name);
        match rustix::fs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => break (tmp, File::from(fd)),
            // A leftover of an earlier process that had our pid.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let result = (|| {
        file.write_all(data)?;
        file.sync_all()?;
        rustix::fs::renameat(dir, &tmp, dir, name)?;
        dir.sync_all()
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    result
}

/// Replaces `path` with `data` crash-safely (see the module doc); the
/// directory must exist.
pub fn write(path: &Path, data: &[u8]) -> Result<(), AtomicError> {
    let dir = parent(path);
    let name = path.file_name().unwrap_or_default();
    let d = open_dir(dir).map_err(err("cannot open directory", dir))?;
    write_at(&d, name, data).map_err(err("cannot write", path))
}

/// Creates (or replaces) the symlink `link` → `target` atomically: a
/// symlink of the temporary-name scheme renamed over `link`.
pub fn symlink(target: &Path, link: &Path) -> Result<(), AtomicError> {
    let dir = parent(link);
    let tmp = dir.join(temp_name(link.file_name().unwrap_or_default()));
    std::os::unix::fs::symlink(target, &tmp).map_err(err("cannot create symlink", &tmp))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(err("cannot rename into place", link)(e));
    }
    sync_dir(dir)
}

/// Removes `path` if it exists, then makes the removal durable.
pub fn remove(path: &Path) -> Result<(), AtomicError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("cannot remove", path)(e)),
    }
}

/// fsyncs directory `dir`, so that renames and removals in it survive a
/// crash.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicError> {
    open_dir(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("cannot sync directory", dir))
}

pub(crate) fn open_dir(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

/// Removes from `dir` the temporary files crashed writers left (the names
/// [`is_temp_name`] recognises, nothing else); returns their paths. A
/// missing directory has none.
pub fn clean_stale(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        if is_temp_name(&entry.file_name()) && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("a.json")]);
    }

    #[test]
    fn write_at_through_a_directory_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let d = open_dir(dir.path()).unwrap();
        write_at(&d, OsStr::new("leases"), b"x").unwrap();
        assert_eq!(fs::read(dir.path().join("leases")).unwrap(), b"x");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_names_follow_the_scheme() {
        let a = temp_name(OsStr::new("k0.xml"));
        let b = temp_name(OsStr::new("k0.xml"));
        assert_ne!(a, b);
        assert!(is_temp_name(&a), "{a:?}");
        let s = a.to_string_lossy();
        assert!(s.starts_with(&format!(".tmp-{}-", std::process::id())));
        assert!(s.ends_with("-k0.xml"));
        for not in [
            ".tmp-",
            ".tmp-12",
            ".tmp-12-",
            ".tmp-x-a",
            ".tmp",
            "a.xml",
            ".a.xml.tmp123",
            "tmp-1-a",
        ] {
            assert!(!is_temp_name(OsStr::new(not)), "{not}");
        }
    }

    /// Crash recovery: what a crashed writer left is removed, and nothing
    /// else, not even names that look alike.
    #[test]
    fn clean_stale_removes_exactly_the_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A writer that crashed between create and rename.
        let stale = d.join(temp_name(OsStr::new("k0.xml")));
        fs::write(&stale, b"<netw").unwrap();
        fs::write(d.join(".tmp-4242-k0.xml"), b"half").unwrap();
        let keep = [
            "k0.xml",
            ".tmp-",
            ".tmp-abc-k0.xml",
            "x.tmp-1-a",
            ".k0.xml.tmp77",
            "k0.xml.tmp",
        ];
        for k in keep {
            fs::write(d.join(k), b"keep").unwrap();
        }
        let mut removed = clean_stale(d);
        removed.sort();
        let mut want = vec![d.join(".tmp-4242-k0.xml"), stale];
        want.sort();
        assert_eq!(removed, want);
        for k in keep {
            assert!(d.join(k).exists(), "{k} was removed");
        }
        assert!(clean_stale(d).is_empty());
        assert!(clean_stale(&d.join("missing")).is_empty());
    }

    #[test]
    fn symlink_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (t, l) = (dir.path().join("t"), dir.path().join("l"));
        symlink(&t, &l).unwrap();
        symlink(&t, &l).unwrap();
        assert_eq!(fs::read_link(&l).unwrap(), t);
        remove(&l).unwrap();
        remove(&l).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_write_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("a");
        let e = write(&p, b"x").unwrap_err();
        assert_eq!(e.path, dir.path().join("missing"));
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
    }
}
