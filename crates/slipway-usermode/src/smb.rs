//! `smb=DIR`: the directory shared with the guest by Debian's `smbd`.
//!
//! As QEMU does, `smbd` runs in inetd mode: every guest connection to the
//! SMB server address (ports 445 and 139) is a guest forward whose command
//! is `smbd` with the connection as its standard input. So `smbd` never
//! listens anywhere, and it lives exactly as long as its connection. Its
//! configuration and every directory it writes (private, lock, state,
//! cache, pid, log) live in a private temporary directory that is removed
//! when the stack exits. The share is named `qemu`, guests are mapped to
//! the invoking user (`force user`), as QEMU's generated configuration does.

use std::io;
use std::path::{Path, PathBuf};

use slipway_host::atomic;

use crate::config::services::{GuestForward, GuestForwardTarget, SmbShare};

/// Where `smbd` is looked for besides `PATH` (Debian installs it in /usr/sbin,
/// which a user's `PATH` often lacks).
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];
/// TCP ports the SMB server answers on.
const SMB_PORTS: [u16; 2] = [445, 139];

/// Why the SMB share cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SmbError {
    /// No `smbd` binary.
    #[error("smb=: smbd not found in PATH or {SBIN_DIRS:?}; install Debian's samba package")]
    NoSmbd,
    /// The shared directory is unusable.
    #[error("smb={dir}: {reason}")]
    Dir {
        /// The directory as given.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The private directory or configuration could not be written.
    #[error("smb=: cannot prepare smbd's private directory: {0}")]
    Io(#[from] io::Error),
}

/// A prepared `smbd` configuration; dropping it removes every file.
pub(crate) struct SmbServer {
    private: tempfile::TempDir,
    /// smb.conf but its last line, `force user`: the user smbd serves as
    /// is the one it runs as, known only where it is started.
    conf: String,
    forwards: Vec<GuestForward>,
}

impl SmbServer {
    /// Finds `smbd` and writes its private configuration for `share`.
    pub fn prepare(share: &SmbShare) -> Result<SmbServer, SmbError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::env::split_paths(&path).chain(SBIN_DIRS.iter().map(PathBuf::from));
        let smbd = find_smbd(dirs).ok_or(SmbError::NoSmbd)?;
        let dir_error = |reason: String| SmbError::Dir {
            dir: share.dir.clone(),
            reason,
        };
        let dir = share
            .dir
            .canonicalize()
            .map_err(|e| dir_error(e.to_string()))?;
        if !dir.is_dir() {
            return Err(dir_error("not a directory".into()));
        }
        let dir_str = dir
            .to_str()
            .filter(|d| !d.contains(['\n', '\r', '%']))
            .ok_or_else(|| dir_error("the path cannot be written in smb.conf".into()))?;
        let private = tempfile::Builder::new().prefix("slipway-smb-").tempdir()?;
        let root = private.path();
        for sub in ["private", "lock", "state", "cache", "pid", "log", "ncalrpc"] {
            std::fs::create_dir(root.join(sub))?;
        }
        let r = root.display();
        let conf = format!(
            "[global]\n\
             private dir = {r}/private\n\
             lock directory = {r}/lock\n\
             state directory = {r}/state\n\
             cache directory = {r}/cache\n\
             pid directory = {r}/pid\n\
             ncalrpc dir = {r}/ncalrpc\n\
             log file = {r}/log/log.smbd\n\
             smb passwd file = {r}/private/smbpasswd\n\
             interfaces = 127.0.0.1\n\
             bind interfaces only = yes\n\
             security = user\n\
             map to guest = Bad User\n\
             load printers = no\n\
             printing = bsd\n\
             disable spoolss = yes\n\
             usershare max shares = 0\n\
             [qemu]\n\
             path = {dir_str}\n\
             read only = no\n\
             guest ok = yes\n"
        );
        let conf_path = root.join("smb.conf");
        let command = format!(
            "exec {} -s {} -l {}",
            quote(&smbd.display().to_string()),
            quote(&conf_path.display().to_string()),
            quote(&root.join("log").display().to_string()),
        );
        let forwards = SMB_PORTS
            .iter()
            .map(|port| GuestForward {
                server: std::net::SocketAddrV4::new(share.server, *port),
                target: GuestForwardTarget::Command(command.clone()),
            })
            .collect();
        tracing::info!(
            dir = %dir.display(),
            server = %share.server,
            smbd = %smbd.display(),
            private = %root.display(),
            "SMB share 'qemu'"
        );
        let server = SmbServer {
            private,
            conf,
            forwards,
        };
        // SAFETY: getuid cannot fail.
        server.write_config(unsafe { libc::getuid() })?;
        Ok(server)
    }

    /// Writes smb.conf, guests mapped to the user `uid` (the one smbd
    /// runs as).
    fn write_config(&self, uid: libc::uid_t) -> io::Result<()> {
        let conf = format!("{}force user = {}\n", self.conf, user_name(uid)?);
        atomic::write(&self.private.path().join("smb.conf"), conf.as_bytes())
            .map_err(io::Error::other)
    }

    /// Hands the private directory (and what is in it) to `uid`/`gid`, the
    /// user smbd will run as (started as root): it writes there, and
    /// guests are mapped to it.
    pub fn give_to(&self, uid: u32, gid: u32) -> io::Result<()> {
        self.write_config(uid)?;
        let root = self.private.path();
        std::os::unix::fs::chown(root, Some(uid), Some(gid))?;
        for entry in std::fs::read_dir(root)? {
            std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// The guest forwards (ports 445 and 139) that start `smbd`.
    pub fn forwards(&self) -> &[GuestForward] {
        &self.forwards
    }
}

/// The first executable `smbd` in `dirs`.
fn find_smbd(mut dirs: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.find_map(|d| Some(d.join("smbd")).filter(|p| is_executable(p)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The name of user `uid`.
fn user_name(uid: libc::uid_t) -> io::Result<String> {
    // SAFETY: getpwuid_r writes only into the buffers passed, and `result`
    // points into `pwd` when it succeeds.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() {
            return Err(io::Error::other(format!("user {uid} has no passwd entry")));
        }
        Ok(std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_string_lossy()
            .into_owned())
    }
}

/// `s` quoted for `/bin/sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_private_and_removed() {
        let share = tempfile::tempdir().unwrap();
        let server = SmbServer::prepare(&SmbShare {
            dir: share.path().to_path_buf(),
            server: "10.0.2.4".parse().unwrap(),
        });
        match server {
            Err(SmbError::NoSmbd) => {}
            Err(e) => panic!("{e}"),
            Ok(server) => {
                let fwd = server.forwards();
                assert_eq!(fwd.len(), 2);
                assert_eq!(fwd[0].server, "10.0.2.4:445".parse().unwrap());
                let GuestForwardTarget::Command(cmd) = &fwd[0].target else {
                    panic!("{fwd:?}");
                };
                let conf = cmd.split('\'').nth(3).unwrap().to_string();
                let text = std::fs::read_to_string(&conf).unwrap();
                assert!(text.contains(&format!(
                    "path = {}",
                    share.path().canonicalize().unwrap().display()
                )));
                drop(server);
                assert!(!Path::new(&conf).exists(), "removed with the server");
            }
        }
    }

    #[test]
    fn bad_directories_are_named() {
        let err = SmbServer::prepare(&SmbShare {
            dir: "/nonexistent/share".into(),
            server: "10.0.2.4".parse().unwrap(),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("/nonexistent/share") || err.contains("smbd not found"),
            "{err}"
        );
    }

    #[test]
    fn missing_smbd_is_found_missing_and_named() {
        let empty = tempfile::tempdir().unwrap();
        let with = tempfile::tempdir().unwrap();
        let fake = with.path().join("smbd");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        assert_eq!(find_smbd([empty.path().to_path_buf()].into_iter()), None);
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert_eq!(
            find_smbd([with.path().to_path_buf()].into_iter()),
            None,
            "not executable"
        );
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(
            find_smbd([empty.path().to_path_buf(), with.path().to_path_buf()].into_iter()),
            Some(fake)
        );
        let msg = SmbError::NoSmbd.to_string();
        assert!(
            msg.contains("smbd not found") && msg.contains("samba"),
            "{msg}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a'b"), "'a'\\''b'");
    }
}
