//! `slipway daemon`: serves the manager over a unix socket (JSON lines, see
//! docs/daemon-api.md) and streams lifecycle events to subscribers.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::manager::Manager;
use crate::proto::{DaemonStatus, Event, Reply, Request, WireError, WireMessage};

/// The longest request line accepted (virsh reads XML files up to 10 MiB).
const MAX_REQUEST: u64 = 16 << 20;

/// How long an event write to a subscriber may block.
const SUBSCRIBER_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connected event subscribers, by connection number.
type Subscribers = Arc<Mutex<Vec<(u64, UnixStream)>>>;

/// Runs the daemon until the process is killed: recovers live state, starts
/// autostart networks, then serves connections (one thread each).
pub fn run(manager: Manager) -> Result<()> {
    let paths = manager.paths().clone();
    let run_dir = paths
        .socket
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .to_path_buf();
    fsutil::ensure_dir(&run_dir)?;
    // One daemon per socket: a lock held for the process's life.
    let pid_path = run_dir.join("daemon.pid");
    let pid_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&pid_path)
        .map_err(|e| Error::io("cannot open", &pid_path, e))?;
    // SAFETY: the descriptor stays open for the life of `pid_file`.
    if unsafe { libc::flock(pid_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::NotValid(format!(
            "another slipway daemon is running for {} (lock {} is held)",
            paths.socket.display(),
            pid_path.display()
        )));
    }
    pid_file
        .set_len(0)
        .map_err(|e| Error::io("cannot write", &pid_path, e))?;
    writeln!(&pid_file, "{}", std::process::id())
        .map_err(|e| Error::io("cannot write", &pid_path, e))?;

    // A socket file left by a killed daemon is stale: we hold the lock.
    let _ = fs::remove_file(&paths.socket);
    let listener = UnixListener::bind(&paths.socket)
        .map_err(|e| Error::io("cannot listen on", &paths.socket, e))?;
    // Per-user: only the user may connect. System: everyone may read, the
    // peer-credential check keeps changes to root.
    let mode = if paths.system { 0o666 } else { 0o600 };
    fs::set_permissions(&paths.socket, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot set permissions of", &paths.socket, e))?;

    let events = manager.recover()?;
    for ev in &events {
        tracing::info!("autostarted network {}", ev.network);
    }
    tracing::info!("listening on {}", paths.socket.display());

    let manager = Arc::new(manager);
    let subscribers: Subscribers = Arc::default();
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() };
    for (conn_id, conn) in (0u64..).zip(listener.incoming()) {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let manager = manager.clone();
        let subscribers = subscribers.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, conn_id, &manager, &subscribers, owner) {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    Ok(())
}

/// The connecting process's uid (SO_PEERCRED).
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn send(mut stream: &UnixStream, msg: &WireMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())
}

fn broadcast(subscribers: &Subscribers, events: &[Event]) {
    let mut subs = subscribers.lock().unwrap_or_else(|p| p.into_inner());
    for ev in events {
        subs.retain(|(_, s)| send(s, &WireMessage::Event(ev.clone())).is_ok());
    }
}

fn serve(
    stream: UnixStream,
    conn_id: u64,
    manager: &Manager,
    subscribers: &Subscribers,
    owner: u32,
) -> std::io::Result<()> {
    let uid = peer_uid(&stream)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded, so a client cannot make the daemon buffer without end.
        if (&mut reader).take(MAX_REQUEST + 1).read_line(&mut line)? == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && line.len() as u64 > MAX_REQUEST {
            let err = Error::Protocol(format!("request longer than {MAX_REQUEST} bytes"));
            send(&stream, &WireMessage::Error(WireError::from(&err)))?;
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let err = Error::Protocol(format!("bad request: {e}"));
                send(&stream, &WireMessage::Error(WireError::from(&err)))?;
                continue;
            }
        };
        if req.is_mutation() && uid != 0 && uid != owner {
            let err = Error::Denied(format!(
                "uid {uid} may not change networks of this daemon (uid {owner})"
            ));
            send(&stream, &WireMessage::Error(WireError::from(&err)))?;
            continue;
        }
        match req {
            Request::Subscribe => {
                send(&stream, &WireMessage::Ok(Reply::Subscribed))?;
                // A subscriber that stops reading is dropped instead of
                // stalling the daemon's broadcasts.
                stream.set_write_timeout(Some(SUBSCRIBER_WRITE_TIMEOUT))?;
                subscribers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((conn_id, stream.try_clone()?));
                // Nothing more is expected from a subscriber: discard what it
                // sends until it goes away, then forget it.
                let mut sink = [0u8; 512];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                subscribers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(id, _)| *id != conn_id);
                return Ok(());
            }
            Request::Status => {
                let n = subscribers.lock().unwrap_or_else(|p| p.into_inner()).len();
                let st = DaemonStatus {
                    pid: std::process::id(),
                    subscribers: n,
                };
                send(&stream, &WireMessage::Ok(Reply::Status(st)))?;
            }
            req => {
                let result = manager.handle(req);
                match result {
                    Ok(reply) => {
                        let events = match &reply {
                            Reply::Done(o) => o.events.clone(),
                            _ => Vec::new(),
                        };
                        send(&stream, &WireMessage::Ok(reply))?;
                        broadcast(subscribers, &events);
                    }
                    Err(e) => send(&stream, &WireMessage::Error(WireError::from(&e)))?,
                }
            }
        }
    }
}
