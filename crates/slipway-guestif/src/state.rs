//! What slipway keeps about running guest interfaces, in its own directory
//! next to the network manager's live state:
//!
//! ```text
//! DIR/lock            flock held while names and MACs are handed out
//! DIR/vnet-counter    the next N of `vnetN` (only ever grows)
//! DIR/running/PID.json  one record per `slipway launch`: its MACs, taps,
//!                       stacks, Open vSwitch ports
//! DIR/sockets/        user-mode stack sockets
//! ```
//!
//! A record whose process is gone is stale: it no longer reserves MACs and
//! is removed the next time the records are read, its Open vSwitch ports
//! with it (its taps went with its process). Files are written temp +
//! fsync + rename.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slipway_host::atomic;
use slipway_netxml::MacAddr;

use crate::error::{Error, Result};

/// One `slipway launch`'s record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// The launch process.
    pub pid: u32,
    /// Guest MACs of its interfaces.
    pub macs: Vec<String>,
    /// Taps it created.
    pub taps: Vec<String>,
    /// User-mode stack processes it started.
    pub stacks: Vec<u32>,
    /// Open vSwitch ports it added (taps on OVS bridges); removed when the
    /// VM ends, or by the next launch when this one was killed.
    #[serde(default)]
    pub ovs_ports: Vec<String>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// The exclusive lock; released on drop.
pub struct Lock {
    _file: File,
}

impl StateDir {
    /// The state kept in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    /// Where user-mode stack sockets go.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sockets")
    }

    fn running_dir(&self) -> PathBuf {
        self.dir.join("running")
    }

    fn ensure(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))
    }

    /// Takes the directory's lock.
    pub fn lock(&self) -> Result<Lock> {
        self.ensure(&self.dir)?;
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("cannot open", &path, e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(
                "cannot lock",
                &path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Lock { _file: file })
    }

    /// The next `vnetN` name: the counter's value, skipped past names that
    /// exist, then the counter moves past it. Needs the lock.
    pub fn next_vnet(&self, _lock: &Lock, exists: impl Fn(&str) -> bool) -> Result<String> {
        let path = self.dir.join("vnet-counter");
        let mut n: u64 = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::io(
                    "corrupted counter",
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("'{}' is not a number", s.trim()),
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io("cannot read", &path, e)),
        };
        let name = loop {
            let name = format!("vnet{n}");
            n += 1;
            if !exists(&name) {
                break name;
            }
        };
        atomic::write(&path, format!("{n}\n").as_bytes())?;
        Ok(name)
    }

    /// The records of launches still running; stale ones are removed.
    pub fn running(&self, _lock: &Lock) -> Result<Vec<Running>> {
        let dir = self.running_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot read", &dir, e)),
        };
        let mut out = Vec::new();
        let mut stale_ports = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let rec: Option<Running> = fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            match rec {
                Some(r) if process_alive(r.pid) => out.push(r),
                Some(r) => {
                    stale_ports.extend(r.ovs_ports);
                    atomic::remove(&path)?
                }
                None => atomic::remove(&path)?,
            }
        }
        if !stale_ports.is_empty() {
            let live: Vec<&str> = out
                .iter()
                .flat_map(|r| r.ovs_ports.iter().map(String::as_str))
                .collect();
            crate::ovs::remove_stale(stale_ports.iter().map(String::as_str), &live);
        }
        Ok(out)
    }

    /// MACs of every running interface.
    pub fn macs_in_use(&self, lock: &Lock) -> Result<HashSet<MacAddr>> {
        Ok(self
            .running(lock)?
            .iter()
            .flat_map(|r| r.macs.iter().filter_map(|m| m.parse().ok()))
            .collect())
    }

    /// Writes (or replaces) a launch's record.
    pub fn record(&self, rec: &Running) -> Result<()> {
        let dir = self.running_dir();
        self.ensure(&dir)?;
        let json = serde_json::to_vec_pretty(rec).map_err(|e| {
            Error::io(
                "cannot encode",
                &dir,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        atomic::write(&dir.join(format!("{}.json", rec.pid)), &json)?;
        Ok(())
    }

    /// Removes a launch's record.
    pub fn forget(&self, pid: u32) -> Result<()> {
        atomic::remove(&self.running_dir().join(format!("{pid}.json")))?;
        Ok(())
    }

    /// Creates the socket directory (private to the user).
    pub fn ensure_socket_dir(&self) -> Result<PathBuf> {
        let dir = self.socket_dir();
        self.ensure(&dir)?;
        Ok(dir)
    }
}

/// True while a process with this pid exists.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_counter_only_grows_and_skips_existing_names() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        let l = s.lock().unwrap();
        assert_eq!(s.next_vnet(&l, |_| false).unwrap(), "vnet0");
        assert_eq!(
            s.next_vnet(&l, |n| n == "vnet1" || n == "vnet2").unwrap(),
            "vnet3"
        );
        assert_eq!(s.next_vnet(&l, |_| false).unwrap(), "vnet4");
        fs::write(d.path().join("vnet-counter"), "x").unwrap();
        assert!(s
            .next_vnet(&l, |_| false)
            .unwrap_err()
            .to_string()
            .contains("not a number"));
    }

    #[test]
    fn stale_records_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        let me = Running {
            pid: std::process::id(),
            macs: vec!["52:54:00:00:00:01".into()],
            ..Running::default()
        };
        // A pid that cannot exist (above the kernel's pid_max limit).
        let gone = Running {
            pid: 1 << 23,
            macs: vec!["52:54:00:00:00:02".into()],
            ..Running::default()
        };
        s.record(&me).unwrap();
        s.record(&gone).unwrap();
        let l = s.lock().unwrap();
        let macs = s.macs_in_use(&l).unwrap();
        assert_eq!(macs, HashSet::from([MacAddr([0x52, 0x54, 0, 0, 0, 1])]));
        assert!(!d.path().join(format!("running/{}.json", 1 << 23)).exists());
    }
}
