//! Crash-safe file writes: temporary file, fsync, rename, fsync the directory;
//! and reads that never follow a symlink nor block on a FIFO.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use slipway_host::atomic::{self, c_name, cvt};

use crate::error::{Error, Result};

/// A directory opened once, in which files are then read and replaced by
/// name (`openat`, `renameat`): still reachable after the process switched
/// to a user that may not search the directories above it (the network
/// service, confined).
#[derive(Debug)]
pub struct Dir {
    fd: File,
    path: PathBuf,
}

/// Opens `name` relative to `dir` (or the working directory for
/// `AT_FDCWD`) for reading, refusing a symlink and anything but a regular
/// file (a FIFO would block), and reads it whole.
fn read_regular_at(dir: RawFd, name: &OsStr) -> io::Result<Vec<u8>> {
    let name = c_name(name)?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    // SAFETY: openat with a valid NUL-terminated name; the new descriptor
    // is owned by the File.
    let mut file = unsafe { File::from_raw_fd(cvt(libc::openat(dir, name.as_ptr(), flags))?) };
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
    read_regular_at(libc::AT_FDCWD, path.as_os_str())
}

impl Dir {
    /// Opens directory `path`.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)?;
        Ok(Dir {
            fd,
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
        read_regular_at(self.fd.as_raw_fd(), name)
    }

    /// Renames file `name` of the directory to `name` + `suffix`, or, when
    /// that is taken, `name` + `suffix` + `.N` for the first free N (never
    /// replacing a file); returns the name given.
    pub fn rename_aside(&self, name: &OsStr, suffix: &str) -> io::Result<std::ffi::OsString> {
        let dir = self.fd.as_raw_fd();
        let from = c_name(name)?;
        for n in 0..1000 {
            let mut to_name = name.to_os_string();
            to_name.push(suffix);
            if n > 0 {
                to_name.push(format!(".{n}"));
            }
            let to = c_name(&to_name)?;
            // SAFETY: renameat2 within one directory, valid NUL-terminated
            // names; RENAME_NOREPLACE never overwrites.
            let rc = unsafe {
                libc::renameat2(dir, from.as_ptr(), dir, to.as_ptr(), libc::RENAME_NOREPLACE)
            };
            match cvt(rc) {
                Ok(_) => return Ok(to_name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::AlreadyExists.into())
    }

    /// Replaces file `name` of the directory with `data` so that a crash
    /// leaves the old or the new content, never a mix
    /// ([`slipway_host::atomic::write_at`]).
    pub fn write_atomic(&self, name: &OsStr, data: &[u8]) -> Result<()> {
        atomic::write_at(&self.fd, name, data)
            .map_err(|e| Error::io("cannot write", self.path.join(name), e))
    }
}

/// Replaces `path` with `data` so that a crash leaves the old or the new
/// content, never a mix ([`slipway_host::atomic::write`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    Ok(atomic::write(path, data)?)
}

/// Removes `path` if it exists.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
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
        use std::io::Seek;
        let mut file = &self.0;
        file.seek(io::SeekFrom::Start(0))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(text)
    }
}
