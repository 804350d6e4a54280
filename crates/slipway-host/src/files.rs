//! Files reached safely: a directory opened once and used by descriptor
//! ([`Dir`]), reads that never follow a symlink nor block on a FIFO
//! ([`read_regular`]), and kernel files reread through one descriptor
//! ([`Reread`]).
//!
//! A confined process (the bridge network's service, once it switched
//! user and applied Landlock) can no longer resolve the paths above its
//! directories: it opens them before, and from then on names files
//! relative to the descriptors (`openat`, `renameat`). Files are replaced
//! with [`crate::atomic::write_at`]'s scheme.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::atomic::{self, AtomicError};

/// Opens `name` relative to `dir` (or the working directory for
/// `AT_FDCWD`) for reading, refusing a symlink and anything but a regular
/// file (a FIFO would block), and reads it whole.
fn read_regular_at(dir: impl AsFd, name: &OsStr) -> io::Result<Vec<u8>> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let mut file = File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?);
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads the regular file `path`, without following a symlink in its last
/// component (a file another user could replace is read as itself or not
/// at all).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    read_regular_at(rustix::fs::CWD, path.as_os_str())
}

/// A directory opened once, in which files are then read and replaced by
/// name (`openat`, `renameat`): still reachable after the process switched
/// to a user that may not search the directories above it.
#[derive(Debug)]
pub struct Dir {
    fd: File,
    path: PathBuf,
}

impl Dir {
    /// Opens directory `path`.
    pub fn open(path: &Path) -> io::Result<Dir> {
        Ok(Dir {
            fd: atomic::open_dir(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The directory's descriptor.
    pub fn file(&self) -> &File {
        &self.fd
    }

    /// The path it was opened at (for messages and sandbox rules).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads regular file `name` of the directory (see [`read_regular`]).
    pub fn read(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        read_regular_at(&self.fd, name)
    }

    /// Renames file `name` of the directory to `name` + `suffix`, or, when
    /// that is taken, `name` + `suffix` + `.N` for the first free N (never
    /// replacing a file); returns the name given.
    pub fn rename_aside(&self, name: &OsStr, suffix: &str) -> io::Result<OsString> {
        for n in 0..1000 {
            let mut to_name = name.to_os_string();
            to_name.push(suffix);
            if n > 0 {
                to_name.push(format!(".{n}"));
            }
            match rustix::fs::renameat_with(
                &self.fd,
                name,
                &self.fd,
                &to_name,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(to_name),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::ErrorKind::AlreadyExists.into())
    }

    /// Replaces file `name` of the directory with `data` so that a crash
    /// leaves the old or the new content, never a mix
    /// ([`atomic::write_at`]).
    pub fn write_atomic(&self, name: &OsStr, data: &[u8]) -> Result<(), AtomicError> {
        atomic::write_at(&self.fd, name, data)
            .map_err(|e| AtomicError::new("cannot write", self.path.join(name), e))
    }
}

/// A kernel file (procfs, sysfs) opened once and read again from its start
/// each time: no path lookup once the process is confined.
#[derive(Debug)]
pub struct Reread(File);

impl Reread {
    /// Opens `path`.
    pub fn open(path: &Path) -> io::Result<Reread> {
        File::open(path).map(Reread)
    }

    /// Its current content.
    pub fn read(&self) -> io::Result<String> {
        let mut file = &self.0;
        file.seek(io::SeekFrom::Start(0))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn reads_only_regular_files_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a"), b"data").unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("link")).unwrap();
        let fifo = rustix::fs::FileType::Fifo;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo"),
            fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        assert_eq!(read_regular(&d.join("a")).unwrap(), b"data");
        let dirfd = Dir::open(d).unwrap();
        assert_eq!(dirfd.read(OsStr::new("a")).unwrap(), b"data");
        let e = dirfd.read(OsStr::new("link")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e = read_regular(&d.join("fifo")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn writes_and_renames_aside_by_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let name = OsStr::new("leases.json");
        for (content, aside) in [("1", "leases.json.bad"), ("2", "leases.json.bad.1")] {
            d.write_atomic(name, content.as_bytes()).unwrap();
            assert_eq!(d.rename_aside(name, ".bad").unwrap(), OsString::from(aside));
            assert_eq!(
                fs::read(dir.path().join(aside)).unwrap(),
                content.as_bytes()
            );
        }
        assert!(!dir.path().join(name).exists());
        let e = d.write_atomic(OsStr::new("a\0b"), b"x").unwrap_err();
        assert_eq!(e.path, dir.path().join("a\0b"));
    }

    #[test]
    fn reread_sees_the_current_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "one").unwrap();
        let r = Reread::open(&p).unwrap();
        assert_eq!(r.read().unwrap(), "one");
        fs::write(&p, "two!").unwrap();
        assert_eq!(r.read().unwrap(), "two!");
    }
}
