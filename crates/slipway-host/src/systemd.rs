//! The two systemd protocols a service speaks: readiness notification
//! (`sd_notify(3)`: `READY=1`, `STOPPING=1`, `STATUS=…` datagrams to
//! `$NOTIFY_SOCKET`) and socket activation (`sd_listen_fds(3)`: listening
//! sockets handed over from descriptor 3 on, `$LISTEN_FDS` of them, for the
//! process `$LISTEN_PID`, named by `$LISTEN_FDNAMES`).
//!
//! Hand-written (a few lines each) rather than taken from a crate for two
//! reasons: the notifier opens its socket once, up front, so that a
//! process can still say `STOPPING=1` after a seccomp sandbox forbids
//! creating sockets (the crates open one per message); and this crate is
//! linked into the setuid bridge helper, which should pull in nothing more.
//!
//! Without systemd (no `NOTIFY_SOCKET`, no `LISTEN_PID` naming this
//! process) both do nothing, so callers use them unconditionally.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The most descriptors taken from `$LISTEN_FDS` (a unit has a handful;
/// a larger number is a broken environment, not sockets).
pub const MAX_LISTEN_FDS: usize = 64;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
}

impl Notifier {
    /// Connects to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
    /// namespace); `Ok(None)` when the variable is not set (not run by
    /// systemd as `Type=notify`). The variable is left in place: the
    /// service manager only listens to the main process anyway
    /// (`NotifyAccess=main`).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None if bytes.starts_with(b"/") => SocketAddr::from_pathname(&path)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET is neither an absolute path nor an abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.connect_addr(&addr)?;
        Ok(Some(Notifier { socket }))
    }

    /// Sends one notification: newline-separated `KEY=VALUE` lines.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket.send(message.as_bytes()).map(|_| ())
    }

    /// `READY=1` with a `STATUS=` line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `STOPPING=1` with a `STATUS=` line.
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }
}

/// A status text without line breaks (each line is a separate field).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The descriptors systemd passed this process, with their names
/// (`FileDescriptorName=`, "unknown" when unnamed), each made
/// close-on-exec; empty when none were passed to this process. The
/// variables are removed so that children never take them as theirs:
/// call this before starting any thread.
pub fn take_listen_fds() -> io::Result<Vec<(String, OwnedFd)>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let count = count
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_LISTEN_FDS)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LISTEN_FDS={count}: not a number of descriptors up to {MAX_LISTEN_FDS}"),
            )
        })?;
    let mut names = names
        .as_deref()
        .map(|n| n.split(':').map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_default();
    names.resize(count, "unknown".to_owned());
    let mut fds = Vec::with_capacity(count);
    for (fd, name) in (LISTEN_FDS_START..).zip(names) {
        // SAFETY: fcntl on a descriptor number only reads or sets its flags;
        // a closed one fails with EBADF, checked below.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::other(format!(
                "descriptor {fd} from LISTEN_FDS: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: systemd handed this open descriptor (checked just above)
        // to this process (LISTEN_PID); nothing else owns it.
        fds.push((name, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    Ok(fds)
}

/// Why a descriptor systemd passed cannot be served as a unix stream
/// socket.
#[derive(Debug, thiserror::Error)]
pub enum NotAListener {
    /// `getsockopt` failed: not a socket at all (a FIFO, a file).
    #[error("is not a socket ({0})")]
    NotASocket(#[source] io::Error),
    /// A socket, but not a listening unix stream one (a unit with
    /// `ListenDatagram=`, a TCP port...).
    #[error("is not a listening unix stream socket")]
    Kind,
}

/// `fd` as a listening unix stream socket, or why it is not one: the one
/// check every socket-activated server of slipway makes on what systemd
/// passed.
pub fn unix_stream_listener(fd: OwnedFd) -> Result<std::os::unix::net::UnixListener, NotAListener> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let not_a_socket = |e: rustix::io::Errno| NotAListener::NotASocket(e.into());
    let domain = sockopt::socket_domain(&fd).map_err(not_a_socket)?;
    let kind = sockopt::socket_type(&fd).map_err(not_a_socket)?;
    let listening = sockopt::socket_acceptconn(&fd).map_err(not_a_socket)?;
    if domain != AddressFamily::UNIX || kind != SocketType::STREAM || !listening {
        return Err(NotAListener::Kind);
    }
    Ok(std::os::unix::net::UnixListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one test of this binary touching the LISTEN_* and NOTIFY_SOCKET
    /// variables (tests run in parallel threads of one process).
    #[test]
    fn bad_systemd_environment_is_refused() {
        let pid = std::process::id().to_string();
        std::env::set_var("LISTEN_PID", &pid);
        std::env::set_var("LISTEN_FDS", "100000");
        let err = take_listen_fds().unwrap_err();
        assert!(err.to_string().contains("LISTEN_FDS=100000"), "{err}");
        assert!(std::env::var_os("LISTEN_FDS").is_none(), "not cleared");
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
        assert!(take_listen_fds().unwrap().is_empty());
        std::env::set_var("LISTEN_PID", &pid);
        std::env::set_var("LISTEN_FDS", "x");
        assert!(take_listen_fds().is_err());
        assert!(take_listen_fds().unwrap().is_empty(), "variables cleared");
        // The notification socket: neither a path nor an abstract name.
        std::env::set_var("NOTIFY_SOCKET", "relative/notify");
        let err = Notifier::from_env().unwrap_err();
        assert!(err.to_string().contains("NOTIFY_SOCKET"), "{err}");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(Notifier::from_env().unwrap().is_none());
    }

    #[test]
    fn notifier_sends_ready_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
        };
        notifier.socket.connect(&path).unwrap();
        notifier.ready("listening on\n/x").unwrap();
        notifier.stopping("SIGTERM").unwrap();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=listening on /x");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=SIGTERM");
    }
}
