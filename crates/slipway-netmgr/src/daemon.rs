//! `slipway daemon`: serves the manager over a unix socket (JSON lines, see
//! docs/daemon-api.md) and streams lifecycle events to subscribers.
//!
//! One thread per connection, with hard bounds so no client (nor any number
//! of them) can exhaust the daemon ([`Limits`]): a connection cap (with
//! slots kept for the owner and root), a bounded request line, idle and
//! write timeouts, and a bounded event queue per subscriber that drops a
//! subscriber that does not read instead of ever blocking a request.
//!
//! A supervisor thread restarts the service of a running network that
//! ended (crash, `kill -9`) within a second, with backoff if it keeps dying.
//!
//! The log says what happened: a `ready` line with the socket once the
//! daemon serves, every change request with who asked (the peer's uid and
//! pid, from SO_PEERCRED) and how it ended (the backend logs each action
//! it carries out and each undo), and a `stopping` line naming the signal
//! that ended the daemon. SIGTERM, SIGINT and SIGHUP are blocked in every
//! thread and read by one of their own (a signalfd), which logs and exits
//! while holding the manager's lock, so no request is cut off half-way;
//! running networks stay up, as they do across a crash (the next daemon
//! recovers them). Lifecycle lines have the target `slipway::lifecycle`,
//! requests `slipway::audit`.

use std::io::{BufReader, ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway_host::conns::{self, Full, Slots};
use slipway_host::jsonl::{self, LineEnd};
use slipway_host::prometheus::Listen;

use crate::error::{Error, Result};
use crate::events::EventHub;
use crate::fsutil;
use crate::manager::Manager;
use crate::metrics;
use crate::proto::{DaemonStatus, Reply, Request, WireError, WireMessage};

/// The daemon's bounds (documented in docs/daemon-api.md and
/// docs/bad-input.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; the next one gets an error line and is
    /// closed.
    pub max_connections: usize,
    /// Of those, slots only the daemon's owner and root may use, so other
    /// users together cannot lock them out.
    pub reserved_for_owner: usize,
    /// The longest request line, in bytes (without its newline).
    pub max_request: usize,
    /// How long a connection may take to send a whole request line, counted
    /// from the end of the previous reply; then it is closed. Subscribers
    /// are not asked for anything and are exempt.
    pub idle_timeout: Duration,
    /// How long one write to a client (a reply, an event) may block before
    /// the connection is closed.
    pub write_timeout: Duration,
    /// Events queued for one subscriber; a subscriber whose queue is full
    /// (it does not read) is dropped and disconnected.
    pub subscriber_queue: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            reserved_for_owner: 16,
            max_request: 1 << 20,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            subscriber_queue: 1024,
        }
    }
}

impl Limits {
    /// The defaults, with the idle and write timeouts taken from
    /// `SLIPWAY_DAEMON_IDLE_TIMEOUT_MS` and `SLIPWAY_DAEMON_WRITE_TIMEOUT_MS`
    /// when set (tests use short ones).
    pub fn from_env() -> Limits {
        let ms = slipway_host::env_millis;
        let d = Limits::default();
        Limits {
            idle_timeout: ms("SLIPWAY_DAEMON_IDLE_TIMEOUT_MS").unwrap_or(d.idle_timeout),
            write_timeout: ms("SLIPWAY_DAEMON_WRITE_TIMEOUT_MS").unwrap_or(d.write_timeout),
            ..d
        }
    }
}

/// How often a subscriber's thread, waiting for events, checks whether its
/// peer went away.
const PEER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the daemon checks the running networks' services.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);
/// A service that stays up this long after a restart has its backoff reset.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// The longest wait before restarting a service that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs the daemon with [`Limits::from_env`] until the process is killed,
/// serving Prometheus metrics on `metrics` when given
/// (`crate::metrics`).
pub fn run(manager: Manager, metrics: Option<Listen>) -> Result<()> {
    run_with(manager, Limits::from_env(), metrics)
}

/// Runs the daemon until the process is killed: recovers live state, starts
/// autostart networks, then serves connections (one thread each, within
/// `limits`).
pub fn run_with(manager: Manager, limits: Limits, metrics: Option<Listen>) -> Result<()> {
    run_serving(
        manager,
        limits,
        metrics,
        AlsoServe {
            socket_names: &[],
            start: |_: &Arc<Manager>, _: &EventHub, _| Ok(()),
        },
    )
}

/// Other servers of the daemon's manager and events (libvirt's RPC),
/// started by [`run_serving`].
pub struct AlsoServe<F> {
    /// The names (`FileDescriptorName=`) of the sockets systemd may pass
    /// for them.
    pub socket_names: &'static [&'static str],
    /// Starts them, given the sockets systemd passed under those names.
    pub start: F,
}

/// [`run_with`], starting other servers of the same manager and events
/// with `also` once this daemon holds its lock and has recovered, before
/// it says it is ready and accepts connections; an error from `also`
/// stops the daemon.
pub fn run_serving<F>(
    manager: Manager,
    limits: Limits,
    metrics: Option<Listen>,
    also: AlsoServe<F>,
) -> Result<()>
where
    F: FnOnce(&Arc<Manager>, &EventHub, Vec<(String, OwnedFd)>) -> Result<()>,
{
    let paths = manager.paths().clone();
    // systemd's part (daemon_systemd) first: before any thread starts.
    let service_manager = crate::daemon_systemd::ServiceManager::new()?;
    let crate::daemon_systemd::Activated {
        json: activated,
        others: also_sockets,
    } = crate::daemon_systemd::activated_listeners(also.socket_names)?;
    let run_dir = paths
        .socket
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .to_path_buf();
    // One daemon per socket: a lock held for the process's life, on a file
    // only this user can open (nobody else can hold it to keep the daemon
    // from starting).
    let pid_path = run_dir.join("daemon.pid");
    let pid_file = fsutil::open_private(&pid_path)?;
    // SAFETY: the descriptor stays open for the life of `pid_file`.
    if unsafe { libc::flock(pid_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::NotValid(format!(
            "another slipway daemon is running for {} (lock {} is held by {})",
            paths.socket.display(),
            pid_path.display(),
            fsutil::describe_pids(&fsutil::lock_holders(&pid_file))
        )));
    }
    pid_file
        .set_len(0)
        .map_err(|e| Error::io("cannot write", &pid_path, e))?;
    writeln!(&pid_file, "{}", std::process::id())
        .map_err(|e| Error::io("cannot write", &pid_path, e))?;

    // systemd's socket file stays when the daemon stops (the .socket unit
    // owns it); one the daemon bound goes with it.
    let own_socket = activated.is_none().then(|| paths.socket.clone());
    let listener = match activated {
        // systemd made the socket file (and its mode: the .socket unit).
        Some(listener) => listener,
        None => {
            // A socket file left by a killed daemon is stale: we hold the lock.
            let _ = std::fs::remove_file(&paths.socket);
            let listener = UnixListener::bind(&paths.socket)
                .map_err(|e| Error::io("cannot listen on", &paths.socket, e))?;
            // Per-user: only the user may connect. System: everyone may read, the
            // peer-credential check keeps changes to root.
            let mode = if paths.system { 0o666 } else { 0o600 };
            std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("cannot set permissions of", &paths.socket, e))?;
            listener
        }
    };

    let events = manager.recover()?;
    for ev in &events {
        tracing::info!("autostarted network {}", ev.network);
    }

    let manager = Arc::new(manager);
    let restarts = metrics::Restarts::default();
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() };
    let slots = Slots::new(limits.max_connections, limits.reserved_for_owner, owner);
    if let Some(addr) = &metrics {
        let listener = metrics::Listener::bind(addr)?;
        let shown = listener.describe(addr);
        let slots = slots.clone();
        let sources = metrics::Sources {
            manager: manager.clone(),
            restarts: restarts.clone(),
            connections: Arc::new(move || slots.open()),
        };
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || listener.serve(&sources))
            .map_err(|e| Error::Backend(format!("cannot start the metrics thread: {e}").into()))?;
        tracing::info!(target: "slipway::lifecycle", metrics = %shown, "metrics on {shown}");
    }
    let subscribers = EventHub::new();
    (also.start)(&manager, &subscribers, also_sockets)?;
    tracing::info!(
        target: "slipway::lifecycle",
        socket = %paths.socket.display(),
        pid = std::process::id(),
        "slipway daemon ready on {}",
        paths.socket.display()
    );
    service_manager.ready(&format!("serving {}", paths.socket.display()));
    service_manager.stop_on_signals(manager.clone(), own_socket)?;
    {
        let manager = manager.clone();
        let restarts = restarts.clone();
        std::thread::Builder::new()
            .name("supervise".into())
            .spawn(move || supervise(&manager, &restarts))
            .map_err(|e| {
                Error::Backend(format!("cannot start the supervisor thread: {e}").into())
            })?;
    }
    let limits = Arc::new(limits);
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let conns::PeerCred { uid, pid } = match conns::peer_cred(&stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("no peer credentials: {e}");
                continue;
            }
        };
        // Only this loop admits into `slots`, so its check holds.
        let slot = match slots.admit(uid) {
            Ok(slot) => slot,
            Err(Full { open, max }) => {
                tracing::warn!(
                    "refusing a connection of uid {uid}: {open} connections open (limit {max})"
                );
                refuse(&stream, max);
                continue;
            }
        };
        let manager = manager.clone();
        let subscribers = subscribers.clone();
        let limits = limits.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                let _slot = slot;
                let conn = Connection {
                    stream,
                    uid,
                    pid,
                    owner,
                    limits: &limits,
                };
                if let Err(e) = conn.serve(&manager, &subscribers) {
                    tracing::debug!("connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a connection: {e}");
        }
    }
    Ok(())
}

/// Restart bookkeeping of one network's service.
#[derive(Debug, Default)]
struct Restarts {
    /// Deaths in a row, each within [`STABLE_AFTER`] of the restart before.
    failures: u32,
    /// When it was last restarted.
    last: Option<Instant>,
    /// When the pending restart is due (the service is down).
    due: Option<Instant>,
}

/// The wait before a restart after `failures` quick deaths in a row: none
/// the first time, then 1 s, 2 s, 4 s, ... up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 1).min(16)).min(MAX_BACKOFF),
    }
}

/// Watches every running network's service (DHCP, DNS, TFTP, router
/// advertisements) and restarts one that ended, with backoff when it keeps
/// dying, and a log line saying how it ended. Runs for the daemon's life.
fn supervise(manager: &Manager, restarts: &metrics::Restarts) {
    let mut state: std::collections::HashMap<String, Restarts> = Default::default();
    loop {
        std::thread::sleep(SUPERVISE_INTERVAL);
        let down = match manager.exited_services() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot check the networks' services: {e}");
                continue;
            }
        };
        let now = Instant::now();
        // What is up and stable needs no memory (its backoff starts over).
        state.retain(|name, r| {
            r.due.is_some() && down.iter().any(|(n, _)| n == name)
                || r.last.is_some_and(|t| now.duration_since(t) < STABLE_AFTER)
        });
        for (name, how) in down {
            let r = state.entry(name.clone()).or_default();
            let due = match r.due {
                Some(due) => due,
                None => {
                    r.failures = match r.last {
                        Some(t) if now.duration_since(t) < STABLE_AFTER => r.failures + 1,
                        _ => 0,
                    };
                    let delay = backoff(r.failures);
                    let when = if delay.is_zero() {
                        String::new()
                    } else {
                        format!(" in {} s", delay.as_secs())
                    };
                    tracing::warn!(
                        "the DHCP/DNS service of network {name} {how}: restarting it{when}"
                    );
                    *r.due.insert(now + delay)
                }
            };
            if now < due {
                continue;
            }
            r.due = None;
            r.last = Some(now);
            match manager.restart_service(&name) {
                Ok(true) => {
                    metrics::count_restart(restarts, &name);
                    tracing::info!("restarted the DHCP/DNS service of network {name}")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("restarting the DHCP/DNS service of network {name} failed: {e}")
                }
            }
        }
    }
}

/// Tells a connection over the cap why it is closed, without waiting on it.
fn refuse(stream: &UnixStream, max: usize) {
    let err = Error::Protocol(format!(
        "the daemon already serves {max} connections (its limit): try again later"
    ));
    // A fresh socket's buffer takes the short line; never block on it.
    let _ = stream.set_nonblocking(true);
    let _ = send(stream, &WireMessage::Error(WireError::from(&err)));
}

fn send(stream: &UnixStream, msg: &WireMessage) -> std::io::Result<()> {
    jsonl::write_line(stream, msg)
}

/// One client connection.
struct Connection<'a> {
    stream: UnixStream,
    uid: u32,
    /// The peer's pid when it connected (for the log).
    pid: i32,
    owner: u32,
    limits: &'a Limits,
}

impl Connection<'_> {
    fn error(&self, err: &Error) -> std::io::Result<()> {
        send(&self.stream, &WireMessage::Error(WireError::from(err)))
    }

    fn serve(self, manager: &Manager, subscribers: &EventHub) -> std::io::Result<()> {
        self.stream
            .set_write_timeout(Some(self.limits.write_timeout))?;
        let mut reader = BufReader::new(&self.stream);
        loop {
            let deadline = Instant::now() + self.limits.idle_timeout;
            let mut line = Vec::new();
            match self.read_line(&mut reader, deadline, &mut line)? {
                Some(LineEnd::Line) => {}
                Some(LineEnd::Closed) => return Ok(()),
                Some(LineEnd::TooLong) => {
                    return self.error(&Error::Protocol(format!(
                        "request longer than {} bytes: closing the connection",
                        self.limits.max_request
                    )))
                }
                None => {
                    return self.error(&Error::Protocol(format!(
                        "no whole request within {} s: closing the connection",
                        self.limits.idle_timeout.as_secs_f64()
                    )))
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let req: Request = match serde_json::from_slice(&line) {
                Ok(r) => r,
                Err(e) => {
                    self.error(&Error::Protocol(format!("bad request: {e}")))?;
                    continue;
                }
            };
            let (uid, pid) = (self.uid, self.pid);
            let what = req.summary();
            if req.is_mutation() && self.uid != 0 && self.uid != self.owner {
                tracing::warn!(
                    target: "slipway::audit", uid, pid, request = %what,
                    "uid {uid} (pid {pid}) may not {what}: refused"
                );
                self.error(&Error::Denied(format!(
                    "uid {} may not change networks of this daemon (uid {})",
                    self.uid, self.owner
                )))?;
                continue;
            }
            if req.is_mutation() {
                tracing::info!(
                    target: "slipway::audit", uid, pid, request = %what,
                    "uid {uid} (pid {pid}) asks to {what}"
                );
            } else {
                tracing::debug!(
                    target: "slipway::audit", uid, pid, request = %what,
                    "uid {uid} (pid {pid}) asks to {what}"
                );
            }
            let mutation = req.is_mutation();
            match req {
                Request::Subscribe => {
                    drop(reader);
                    return self.stream_events(subscribers);
                }
                Request::Status => {
                    let n = subscribers.len();
                    let st = DaemonStatus {
                        pid: std::process::id(),
                        subscribers: n,
                    };
                    send(&self.stream, &WireMessage::Ok(Reply::Status(st)))?;
                }
                req => match manager.handle(req) {
                    Ok(reply) => {
                        if let (true, Reply::Done(o)) = (mutation, &reply) {
                            tracing::info!(
                                target: "slipway::audit", uid, pid, request = %what,
                                network = %o.network,
                                "done: {what} for uid {uid} ({} host actions)",
                                o.actions.len()
                            );
                        }
                        let events = match &reply {
                            Reply::Done(o) => o.events.clone(),
                            _ => Vec::new(),
                        };
                        // Events follow the reply, and go out even when
                        // the requester is gone.
                        let sent = send(&self.stream, &WireMessage::Ok(reply));
                        subscribers.broadcast(&events);
                        sent?;
                    }
                    Err(e) => {
                        if mutation {
                            tracing::warn!(
                                target: "slipway::audit", uid, pid, request = %what,
                                "failed: {what} for uid {uid}: {e}"
                            );
                        }
                        self.error(&e)?
                    }
                },
            }
        }
    }

    /// Reads one request line of at most `max_request` bytes into `line`;
    /// `None` when it is not whole before `deadline`.
    fn read_line(
        &self,
        reader: &mut BufReader<&UnixStream>,
        deadline: Instant,
        line: &mut Vec<u8>,
    ) -> std::io::Result<Option<LineEnd>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            return match jsonl::read_line(reader, self.limits.max_request, line) {
                Ok(end) => Ok(Some(end)),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Turns the connection into an event stream: events come through a
    /// bounded queue ([`EventHub::broadcast`] never waits on this client); a write
    /// that blocks past the write timeout, or a full queue, ends it.
    fn stream_events(self, subscribers: &EventHub) -> std::io::Result<()> {
        // Registered before the reply: no event after it is missed.
        let (id, rx) = subscribers.subscribe(self.limits.subscriber_queue, None);
        let result = (|| {
            send(&self.stream, &WireMessage::Ok(Reply::Subscribed))?;
            loop {
                match rx.recv_timeout(PEER_CHECK_INTERVAL) {
                    Ok(ev) => send(&self.stream, &WireMessage::Event(ev))?,
                    // Dropped by broadcast: it fell too far behind.
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    Err(RecvTimeoutError::Timeout) if self.peer_gone() => return Ok(()),
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        })();
        subscribers.unsubscribe(id);
        result
    }

    /// Whether a subscriber hung up; discards whatever it sent (nothing more
    /// is expected from it).
    fn peer_gone(&self) -> bool {
        let mut sink = [0u8; 4096];
        // Bounded: a peer that floods is looked at again at the next check.
        for _ in 0..16 {
            // SAFETY: `sink` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    sink.as_mut_ptr().cast(),
                    sink.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return true,
                n if n > 0 => continue,
                _ => {
                    let e = std::io::Error::last_os_error();
                    return !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted);
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = [0, 1, 2, 3, 6, 7, 8, 40, u32::MAX]
            .into_iter()
            .map(|n| backoff(n).as_secs())
            .collect();
        assert_eq!(secs, [0, 1, 2, 4, 32, 60, 60, 60, 60]);
    }
}
