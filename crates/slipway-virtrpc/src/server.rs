//! The sockets libvirt's clients connect to, as virtnetworkd's:
//! `virtnetworkd-sock` (read-write; mode 0600, and only root or the
//! daemon's own user is served) and `virtnetworkd-sock-ro` (read-only), in
//! the directory [`Config::dir`]. The system daemon's read-only socket has
//! mode 0666 and serves anyone; a user's daemon (`network:///session`,
//! `$XDG_RUNTIME_DIR/libvirt`) serves only its user and root on both, as
//! libvirt's session daemons do (their directory 0700, their socket 0700),
//! its read-only socket mode 0600. The directory the daemon binds in must
//! be its own and writable by nobody else (else another user could swap
//! the socket files), or the daemon refuses to start.
//!
//! Socket activation: sockets systemd passed under the names libvirt's own
//! units give them ([`FD_NAME`], [`FD_NAME_RO`]: `virtnetworkd.socket`,
//! `virtnetworkd-ro.socket`) are served as they are (their unit made the
//! file and its mode); a socket not passed is bound as without systemd.
//!
//! A thread accepts on each socket; each connection gets a thread of its
//! own running a small `mio` loop over its socket and a waker, so it reads
//! calls, writes replies, and delivers events the moment the
//! [`EventHub`] queues them. Calls run one at a time per connection,
//! through the [`Session`]. Bounds ([`Limits`], docs/bad-input.md): a
//! connection cap shared by both sockets with slots kept for the owner and
//! root; `CONNECT_OPEN` within the handshake timeout; a message begun must
//! arrive whole within the same time; output that the client does not
//! read within the write timeout, or more than [`Limits::max_output`]
//! bytes of it, closes the connection; keepalive as libvirtd does it (a
//! PING after 5 s of silence, closed after 5 unanswered) once the client
//! asked for it.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use slipway_host::conns::{self, Full, Slots};
use slipway_netmgr::proto::Event;
use slipway_netmgr::{EventHub, Manager};

use crate::dispatch::{Context, LeaseSource, Session};
use crate::message::{FrameReader, MAX_BUFFERED, MAX_BUFFERED_READ_ONLY};

/// The read-write socket's name.
pub const SOCKET: &str = "virtnetworkd-sock";
/// The read-only socket's name.
pub const SOCKET_RO: &str = "virtnetworkd-sock-ro";
/// The name systemd gives the read-write socket's descriptor
/// (`LISTEN_FDNAMES`): libvirt's `virtnetworkd.socket` unit's own name,
/// and `FileDescriptorName=` in slipway's unit.
pub const FD_NAME: &str = "virtnetworkd.socket";
/// The read-only socket's descriptor name (`virtnetworkd-ro.socket`).
pub const FD_NAME_RO: &str = "virtnetworkd-ro.socket";
/// The descriptor names this server takes from systemd.
pub const FD_NAMES: &[&str] = &[FD_NAME, FD_NAME_RO];

/// The server's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once over both sockets; the next is closed.
    pub max_connections: usize,
    /// Of those, slots only the daemon's owner and root may take.
    pub reserved_for_owner: usize,
    /// Time to `CONNECT_OPEN`, and to send a message once begun.
    pub handshake_timeout: Duration,
    /// How long output may wait for the client to read it.
    pub write_timeout: Duration,
    /// Bytes of output (replies, events) queued for one client.
    pub max_output: usize,
    /// Lifecycle callbacks one connection may register.
    pub max_callbacks: usize,
    /// Events queued for one connection before it is dropped.
    pub event_queue: usize,
    /// Silence before a keepalive PING (libvirtd's `keepalive_interval`).
    pub keepalive_interval: Duration,
    /// Unanswered PINGs before the connection is closed (`keepalive_count`).
    pub keepalive_count: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            reserved_for_owner: 16,
            handshake_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_output: 8 << 20,
            max_callbacks: 64,
            event_queue: 1024,
            keepalive_interval: Duration::from_secs(5),
            keepalive_count: 5,
        }
    }
}

impl Limits {
    /// The defaults, with the handshake and write timeouts taken from
    /// `SLIPWAY_DAEMON_IDLE_TIMEOUT_MS` and `SLIPWAY_DAEMON_WRITE_TIMEOUT_MS`
    /// when set, as the JSON API's, and the keepalive interval from
    /// `SLIPWAY_LIBVIRT_KEEPALIVE_MS` (tests use short ones).
    pub fn from_env() -> Limits {
        let ms = slipway_host::env_millis;
        let d = Limits::default();
        Limits {
            handshake_timeout: ms("SLIPWAY_DAEMON_IDLE_TIMEOUT_MS").unwrap_or(d.handshake_timeout),
            write_timeout: ms("SLIPWAY_DAEMON_WRITE_TIMEOUT_MS").unwrap_or(d.write_timeout),
            keepalive_interval: ms("SLIPWAY_LIBVIRT_KEEPALIVE_MS").unwrap_or(d.keepalive_interval),
            ..d
        }
    }
}

/// Where and how to serve.
pub struct Config {
    /// The directory of the two sockets.
    pub dir: PathBuf,
    /// Whether this is the privileged daemon (`network:///system`) rather
    /// than a user's (`network:///session`).
    pub system: bool,
    /// The bounds.
    pub limits: Limits,
    /// DHCP leases.
    pub leases: Arc<dyn LeaseSource>,
    /// Sockets systemd passed, by descriptor name ([`FD_NAMES`]).
    pub activated: Vec<(String, OwnedFd)>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A file-system or socket operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The socket directory belongs to another user, or others may write
    /// in it.
    #[error("{path}: {why}; refusing to serve libvirt's sockets in it")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A socket systemd passed is not a listening unix stream socket.
    #[error("socket activation: the socket systemd passed as '{name}' {source}")]
    Activation {
        /// Its descriptor name.
        name: String,
        /// What it is instead.
        #[source]
        source: slipway_host::systemd::NotAListener,
    },
    /// Something (libvirt's own virtnetworkd, or its systemd socket) answers
    /// on the socket already.
    #[error(
        "{0} is served by another process (libvirt's virtnetworkd, or its systemd socket unit?): stop it first, see README \"slipway under libvirt\""
    )]
    InUse(PathBuf),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServeError {
    let path = path.to_path_buf();
    move |source| ServeError::Io {
        action,
        path,
        source,
    }
}

/// What every connection thread shares.
struct Shared {
    manager: Arc<Manager>,
    hub: EventHub,
    leases: Arc<dyn LeaseSource>,
    uri: &'static str,
    limits: Limits,
    /// The connection cap over both sockets.
    slots: Slots,
    /// Whether other users may use the read-only socket (the system
    /// daemon's); a user's daemon serves only its user and root.
    others_read_only: bool,
}

/// Serves both sockets in `config.dir` (those systemd passed, else bound
/// here) on threads of their own; returns once they listen.
pub fn serve(manager: Arc<Manager>, hub: EventHub, config: Config) -> Result<(), ServeError> {
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() };
    let mut passed: Vec<(String, Option<UnixListener>)> = Vec::new();
    for (name, fd) in config.activated {
        let listener = slipway_host::systemd::unix_stream_listener(fd).map_err(|source| {
            ServeError::Activation {
                name: name.clone(),
                source,
            }
        })?;
        passed.push((name, Some(listener)));
    }
    let mut take = |fd_name: &str| {
        passed
            .iter_mut()
            .find(|(n, _)| n == fd_name)
            .and_then(|(_, l)| l.take())
    };
    let sockets = [
        (SOCKET, FD_NAME, false, take(FD_NAME)),
        (SOCKET_RO, FD_NAME_RO, true, take(FD_NAME_RO)),
    ];
    for (name, listener) in &passed {
        if listener.is_some() {
            tracing::warn!("ignoring a second socket named '{name}' systemd passed");
        }
    }
    if sockets.iter().any(|s| s.3.is_none()) {
        own_dir(&config.dir, config.system, owner)?;
    }
    let shared = Arc::new(Shared {
        manager,
        hub,
        leases: config.leases,
        uri: if config.system {
            "network:///system"
        } else {
            "network:///session"
        },
        slots: Slots::new(
            config.limits.max_connections,
            config.limits.reserved_for_owner,
            owner,
        ),
        limits: config.limits,
        others_read_only: config.system,
    });
    for (name, fd_name, readonly, listener) in sockets {
        let path = config.dir.join(name);
        let listener = match listener {
            Some(l) => {
                tracing::info!("libvirt RPC serving {fd_name} (from systemd)");
                l
            }
            None => {
                // Anyone may connect to the system daemon's read-only
                // socket; a user's daemon serves only that user.
                let mode = if readonly && config.system {
                    0o666
                } else {
                    0o600
                };
                let l = bind(&path, mode)?;
                tracing::info!("libvirt RPC listening on {}", path.display());
                l
            }
        };
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("accept-{name}"))
            .spawn(move || accept_loop(&listener, readonly, &shared))
            .map_err(io("cannot start a thread for", &path))?;
    }
    Ok(())
}

/// Creates the socket directory (0755 for the system daemon, 0700 for a
/// user's) unless it exists, and checks that it belongs to `owner` and
/// that nobody else may write in it.
fn own_dir(dir: &Path, system: bool, owner: u32) -> Result<(), ServeError> {
    use std::os::unix::fs::MetadataExt;
    let mode = if system { 0o755 } else { 0o700 };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io("cannot create", dir))?;
    let meta = std::fs::symlink_metadata(dir).map_err(io("cannot read", dir))?;
    let unsafe_dir = |why: String| ServeError::UnsafeDir {
        path: dir.to_path_buf(),
        why,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory (a symbolic link?)".into()));
    }
    if meta.uid() != owner {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by this daemon's uid {owner}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:04o}: others may write in it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Binds `path` with `mode`, replacing a stale socket file but never one
/// something still answers on.
fn bind(path: &Path, mode: u32) -> Result<UnixListener, ServeError> {
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io("cannot remove the stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("cannot listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot set permissions of", path))?;
    Ok(listener)
}

fn accept_loop(listener: &UnixListener, readonly: bool, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let Ok(conns::PeerCred { uid, .. }) = conns::peer_cred(&stream) else {
            continue;
        };
        // The sockets' modes already keep others out of the read-write
        // socket (and of a user's daemon); their owner may have loosened
        // them, the daemon does not.
        if shared.slots.is_other_user(uid) && !(readonly && shared.others_read_only) {
            tracing::warn!(
                "refusing uid {uid} on the {} libvirt socket",
                if readonly { "read-only" } else { "read-write" }
            );
            continue;
        }
        let slot = match shared.slots.admit(uid) {
            Ok(slot) => slot,
            Err(Full { open, max }) => {
                tracing::warn!(
                    "refusing a libvirt connection of uid {uid}: {open} connections open (limit {max})"
                );
                continue;
            }
        };
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("virtrpc-conn".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = Connection::run(stream, readonly, &shared) {
                    tracing::debug!("libvirt connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a libvirt connection: {e}");
        }
    }
}

const SOCK: Token = Token(0);
const WAKE: Token = Token(1);

/// Why a connection ended (for the debug log).
#[derive(Debug)]
enum End {
    Closed,
    Io(std::io::Error),
    Bounds(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            End::Closed => write!(f, "closed"),
            End::Io(e) => write!(f, "{e}"),
            End::Bounds(why) => write!(f, "{why}"),
        }
    }
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> End {
        End::Io(e)
    }
}

/// One client connection.
struct Connection<'a> {
    shared: &'a Shared,
    stream: mio::net::UnixStream,
    session: Session,
    frames: FrameReader,
    out: Vec<u8>,
    /// Written bytes at the front of `out`.
    out_done: usize,
    /// Events for this connection, once it registered callbacks.
    events: Option<(u64, Receiver<Event>)>,
    waker: Arc<Waker>,
    started: Instant,
    last_rx: Instant,
    /// When the current partial message began.
    message_since: Option<Instant>,
    /// When output last stopped making progress.
    stalled_since: Option<Instant>,
    pings: u32,
    last_ping: Option<Instant>,
    closing: bool,
}

impl Connection<'_> {
    fn run(stream: UnixStream, readonly: bool, shared: &Shared) -> Result<(), End> {
        stream.set_nonblocking(true)?;
        let mut poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut stream = mio::net::UnixStream::from_std(stream);
        poll.registry()
            .register(&mut stream, SOCK, Interest::READABLE | Interest::WRITABLE)?;
        let now = Instant::now();
        let mut conn = Connection {
            shared,
            stream,
            session: Session::new(readonly),
            frames: FrameReader::with_limit(if readonly {
                MAX_BUFFERED_READ_ONLY
            } else {
                MAX_BUFFERED
            }),
            out: Vec::new(),
            out_done: 0,
            events: None,
            waker,
            started: now,
            last_rx: now,
            message_since: None,
            stalled_since: None,
            pings: 0,
            last_ping: None,
            closing: false,
        };
        let result = conn.serve(&mut poll);
        if let Some((id, _)) = conn.events.take() {
            shared.hub.unsubscribe(id);
        }
        result
    }

    fn serve(&mut self, poll: &mut Poll) -> Result<(), End> {
        let mut events = Events::with_capacity(8);
        // Edge-triggered: whether the socket may have more to read, or
        // room to write, since it last said it had not.
        let mut readable = true;
        let mut writable = true;
        loop {
            if writable && self.pending() > 0 {
                writable = self.flush()?;
            }
            if self.closing && self.pending() == 0 {
                return Ok(());
            }
            // Backpressure: no new call is read while output waits.
            if readable && !self.closing && self.pending() == 0 {
                readable = self.read_some()?;
                continue;
            }
            self.check_time()?;
            let timeout = self.next_deadline();
            poll.poll(&mut events, Some(timeout))?;
            for ev in events.iter() {
                match ev.token() {
                    SOCK => {
                        readable |= ev.is_readable() || ev.is_read_closed();
                        writable |= ev.is_writable();
                    }
                    _ => self.deliver_events()?,
                }
            }
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_done
    }

    /// Reads what is there (up to one buffer) and handles the messages
    /// completed; false once the socket would block.
    fn read_some(&mut self) -> Result<bool, End> {
        let mut buf = [0u8; 65_536];
        let n = match self.stream.read(&mut buf) {
            Ok(0) => return Err(End::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        self.last_rx = now;
        self.pings = 0;
        let mut data = &buf[..n];
        while !data.is_empty() && !self.closing {
            if !self.frames.in_message() {
                self.message_since = Some(now);
            }
            let (used, frame) = self
                .frames
                .push(data)
                .map_err(|e| End::Bounds(e.to_string()))?;
            data = &data[used..];
            if let Some(frame) = frame {
                self.message_since = None;
                self.handle(frame)?;
            }
        }
        Ok(true)
    }

    fn handle(&mut self, frame: crate::message::Frame) -> Result<(), End> {
        let ctx = Context {
            manager: &self.shared.manager,
            leases: &*self.shared.leases,
            uri: self.shared.uri,
            max_callbacks: self.shared.limits.max_callbacks,
        };
        let out = self.session.handle(&ctx, frame);
        for m in out.send {
            self.queue(&m)?;
        }
        // Events go out after the reply, to this client too.
        if self.session.wants_events() && self.events.is_none() {
            let waker = self.waker.clone();
            let notify = Box::new(move || {
                let _ = waker.wake();
            });
            self.events = Some(
                self.shared
                    .hub
                    .subscribe(self.shared.limits.event_queue, Some(notify)),
            );
        } else if !self.session.wants_events() {
            if let Some((id, _)) = self.events.take() {
                self.shared.hub.unsubscribe(id);
            }
        }
        self.shared.hub.broadcast(&out.events);
        if out.close {
            self.closing = true;
        }
        Ok(())
    }

    fn deliver_events(&mut self) -> Result<(), End> {
        loop {
            let Some((_, rx)) = &self.events else {
                return Ok(());
            };
            match rx.try_recv() {
                Ok(ev) => {
                    for m in self.session.event_messages(&ev) {
                        self.queue(&m)?;
                    }
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    return Err(End::Bounds(format!(
                        "more than {} events not read",
                        self.shared.limits.event_queue
                    )))
                }
            }
        }
    }

    fn queue(&mut self, msg: &[u8]) -> Result<(), End> {
        if self.pending() + msg.len() > self.shared.limits.max_output {
            return Err(End::Bounds(format!(
                "more than {} bytes of output not read",
                self.shared.limits.max_output
            )));
        }
        if self.pending() == 0 {
            self.stalled_since = Some(Instant::now());
        }
        self.out.extend_from_slice(msg);
        Ok(())
    }

    /// Writes queued output; false once the socket would block.
    fn flush(&mut self) -> Result<bool, End> {
        while self.pending() > 0 {
            match self.stream.write(&self.out[self.out_done..]) {
                Ok(0) => return Err(End::Closed),
                Ok(n) => {
                    self.out_done += n;
                    self.stalled_since = Some(Instant::now());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.out.clear();
        self.out_done = 0;
        self.stalled_since = None;
        Ok(true)
    }

    fn check_time(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let l = &self.shared.limits;
        if !self.session.is_open() && now.duration_since(self.started) >= l.handshake_timeout {
            return Err(End::Bounds("no CONNECT_OPEN in time".into()));
        }
        if self
            .message_since
            .is_some_and(|t| now.duration_since(t) >= l.handshake_timeout)
        {
            return Err(End::Bounds("a message did not arrive whole in time".into()));
        }
        if self
            .stalled_since
            .is_some_and(|t| now.duration_since(t) >= l.write_timeout)
        {
            return Err(End::Bounds("output not read in time".into()));
        }
        if self.session.keepalive() {
            let since = self.last_ping.map_or(self.last_rx, |p| p.max(self.last_rx));
            if now.duration_since(since) >= l.keepalive_interval {
                if self.pings >= l.keepalive_count {
                    return Err(End::Bounds("keepalive: no answer".into()));
                }
                self.pings += 1;
                self.last_ping = Some(now);
                self.queue(&Session::ping())?;
            }
        }
        Ok(())
    }

    /// How long to wait for the next event at most.
    fn next_deadline(&self) -> Duration {
        let l = &self.shared.limits;
        let now = Instant::now();
        let mut at: Vec<Instant> = Vec::new();
        if !self.session.is_open() {
            at.push(self.started + l.handshake_timeout);
        }
        if let Some(t) = self.message_since {
            at.push(t + l.handshake_timeout);
        }
        if let Some(t) = self.stalled_since {
            at.push(t + l.write_timeout);
        }
        if self.session.keepalive() {
            let since = self.last_ping.map_or(self.last_rx, |p| p.max(self.last_rx));
            at.push(since + l.keepalive_interval);
        }
        at.into_iter().min().map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(now) + Duration::from_millis(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_socket_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET);
        let live = UnixListener::bind(&path).unwrap();
        assert!(matches!(bind(&path, 0o600), Err(ServeError::InUse(p)) if p == path));
        // Gone (a killed daemon's leftover): replaced, with the mode asked for.
        drop(live);
        let _l = bind(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
