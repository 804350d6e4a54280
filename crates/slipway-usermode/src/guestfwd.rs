//! Guest forwards (`guestfwd=`) and the SMB server behind them.
//!
//! A guest TCP connection to a forward's server address is translated like
//! any other (see [`crate::tcp`]) toward a loopback listener the stack
//! opened for the forward at start ([`crate::config::services::Services::redirect`]
//! maps one to the other).
//!
//! The listeners are served by a helper process the stack forks at start,
//! before any sandbox is applied ([`Helper`]): there a thread per forward
//! accepts and hands each connection to its target, so the stack itself
//! (which parses the guest's frames, and may be sandboxed) never forks,
//! runs a program or starts a thread. The helper reads no frame; it only
//! starts the configured commands and copies bytes:
//!
//! - `cmd:COMMAND`: `/bin/sh -c COMMAND` with the connection as its standard
//!   input and output (no copy: the socket itself is the child's stdio);
//! - `tcp:HOST:PORT` and `unix:PATH`: a new connection there, and two
//!   threads copying each way until end of file.
//!
//! A forward serves at most [`MAX_CONNECTIONS`] connections at once (a
//! guest must not start commands or threads without bound); more are
//! closed at once.
//!
//! The listener is on host loopback, where other local processes could
//! reach it too, so a connection is served only if the stack said it is
//! its own: when the stack connects a socket to a forward's listener it
//! writes the socket's inode on a pipe to the helper ([`notify`]), and the
//! helper looks the connecting socket up in `/proc/self/net/tcp` (its
//! inode is there, world-readable) and serves it only if that inode was
//! named. The stack names a socket before it connects it, so the notice
//! is always in the pipe when the helper accepts: the helper never waits
//! for one, and anything else is closed at once. An inode names one live socket, so
//! no other process can pass as the stack (a process of the same user
//! cannot write on the pipe: the stack and the helper hold its only
//! ends), and the stack needs to show the helper nothing else: it stays
//! not dumpable (docs/sandbox.md). At most [`MAX_NOTICES`] notices wait to
//! be matched (those of connections that never reached the helper); the
//! oldest goes first.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustix::pipe::{pipe_with, PipeFlags};

use crate::config::services::{GuestForward, GuestForwardTarget};
use crate::iface::StackError;
use crate::smb::SmbServer;

/// Connections one guest forward serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Notices kept until their connection arrives.
const MAX_NOTICES: usize = 1024;

/// One notice: a socket's inode, little-endian.
const NOTICE_LEN: usize = 8;

/// How long the helper, when it ends, waits for the commands' process
/// groups to be gone (after SIGKILL) before it removes smbd's files.
const GROUPS_GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The process groups of the running commands (each command leads its
/// own). A group stays listed until it is empty, not only until its
/// leader ends: smbd's own children outlive it for a moment, and Linux
/// never reuses the id of a group that still has a member, so killing a
/// listed group never reaches another process.
type Groups = Arc<std::sync::Mutex<Vec<libc::pid_t>>>;

/// Whether process group `pgid` still has a member.
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Ends every command still running (SIGKILL to its process group: its
/// connection is gone with the stack) and waits, within
/// [`GROUPS_GONE_WITHIN`], until their groups are empty, so that nothing
/// writes into smbd's private directory once it is removed.
fn end_commands(groups: &Groups) {
    let deadline = std::time::Instant::now() + GROUPS_GONE_WITHIN;
    loop {
        {
            let mut live = groups.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|&pgid| group_alive(pgid));
            if live.is_empty() {
                return;
            }
            for &pgid in live.iter() {
                // SAFETY: the group has a member (checked under the lock
                // the reapers take), so its id is not reused.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!("guest forward: commands still running after SIGKILL");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Counts a connection as active until dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The process serving the guest forwards; it ends when this is dropped
/// (or the stack's process ends, however), and dropping this waits until
/// it has removed smbd's files.
pub(crate) struct Helper {
    /// The write end of a pipe the helper reads: its end of file tells
    /// the helper to go.
    alive: Option<OwnedFd>,
    /// The read end of a pipe whose only writer is the helper: end of file
    /// once it has exited. (Reading is all a sandboxed stack may do; it
    /// cannot wait for a child.)
    done: OwnedFd,
    /// The write end of the pipe the stack names its connections on
    /// ([`notify`]), until the stack takes it.
    notices: Option<OwnedFd>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.alive.take());
        wait_for_end(&self.done);
    }
}

impl Helper {
    /// Opens a loopback listener for each of `forwards` and forks the
    /// helper that serves them; returns it and the listeners' addresses
    /// (where the guest's connections go), in order. The helper owns
    /// `smb` (smbd's private directory) and removes it when it ends.
    /// Started as root, the commands and smbd run as `user` (the
    /// sandbox's `--runas`), never as root; the helper itself stays root
    /// to recognise the stack's connections and remove smbd's files (it
    /// reads no guest data, only copies it).
    ///
    /// Call it while the process is single-threaded (the stack's start).
    /// (In a multi-threaded test, glibc's fork leaves memory allocation
    /// usable in the child, which is all the helper needs before exec.)
    pub(crate) fn start(
        forwards: &[GuestForward],
        smb: Option<SmbServer>,
        user: Option<&str>,
    ) -> Result<(Helper, Vec<SocketAddr>), StackError> {
        let socket_err = |fwd: &GuestForward| {
            let addr = fwd.server.to_string();
            move |source| StackError::Socket {
                what: "guest forward",
                addr,
                source,
            }
        };
        let mut listeners = Vec::with_capacity(forwards.len());
        for fwd in forwards {
            let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
                .map_err(socket_err(fwd))?;
            let addr = listener.local_addr().map_err(socket_err(fwd))?;
            listeners.push((listener, addr, fwd.clone()));
        }
        let addrs = listeners.iter().map(|(_, addr, _)| *addr).collect();
        let ids = match user {
            Some(user) => slipway_sandbox::runas_ids(user).map_err(StackError::HelperUser)?,
            None => None,
        };
        if let (Some(smb), Some((uid, gid))) = (&smb, ids) {
            // smbd, run as that user, writes there and serves as it.
            smb.give_to(uid, gid).map_err(socket_err(&forwards[0]))?;
        }
        let helper_err = socket_err(&forwards[0]);
        let pipe = || pipe_with(PipeFlags::CLOEXEC).map_err(|e| socket_err(&forwards[0])(e.into()));
        let (alive_r, alive_w) = pipe()?;
        let (done_r, done_w) = pipe()?;
        let (notices_r, notices_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| socket_err(&forwards[0])(e.into()))?;
        // SAFETY: the child runs `serve_forwards`, which never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(helper_err(io::Error::last_os_error()));
        }
        if pid == 0 {
            drop((alive_w, done_r, notices_w));
            serve_forwards(listeners, alive_r, done_w, notices_r, smb, ids);
        }
        drop(notices_r);
        // The helper removes the private directory; this process (maybe
        // sandboxed by then) must not try.
        std::mem::forget(smb);
        tracing::debug!(
            pid,
            forwards = forwards.len(),
            "guest forward helper started"
        );
        Ok((
            Helper {
                alive: Some(alive_w),
                done: done_r,
                notices: Some(notices_w),
            },
            addrs,
        ))
    }
}

impl Helper {
    /// The write end of the pipe the stack names its connections to the
    /// listeners on (see [`notify`]); `None` once taken.
    pub(crate) fn take_notices(&mut self) -> Option<OwnedFd> {
        self.notices.take()
    }
}

/// Names `sock`, a socket the stack is about to connect to a forward's
/// listener, to the helper, so that it serves the connection: its inode
/// on the helper's pipe. A notice that cannot be written (a full pipe: a helper
/// that stopped reading) is lost, and the helper refuses the connection.
pub(crate) fn notify(pipe: BorrowedFd<'_>, sock: &impl AsFd) {
    let Ok(stat) = rustix::fs::fstat(sock) else {
        return;
    };
    let notice = stat.st_ino.to_le_bytes();
    if !matches!(rustix::io::write(pipe, &notice), Ok(NOTICE_LEN)) {
        tracing::warn!("guest forward: the helper takes no more notices; connection refused");
    }
}

/// The notices the helper has read, shared by its forwards' threads.
struct Notices {
    pipe: OwnedFd,
    /// Inodes named and not yet matched, oldest first.
    named: std::sync::Mutex<std::collections::VecDeque<u64>>,
}

impl Notices {
    /// Whether the stack named `inode` (its notice, written before the
    /// socket connected, is in the pipe by now); a match is used up.
    fn take(&self, inode: u64) -> bool {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = [0u8; NOTICE_LEN * 64];
        // The pipe is non-blocking: read what is there.
        while let Ok(n @ 1..) = rustix::io::read(&self.pipe, &mut buf) {
            // Writes of one notice are atomic on a pipe: reads return
            // whole ones.
            for notice in buf[..n - n % NOTICE_LEN].chunks_exact(NOTICE_LEN) {
                if named.len() == MAX_NOTICES {
                    named.pop_front();
                }
                let mut b = [0u8; NOTICE_LEN];
                b.copy_from_slice(notice);
                named.push_back(u64::from_le_bytes(b));
            }
        }
        match named.iter().position(|&n| n == inode) {
            Some(i) => {
                named.remove(i);
                true
            }
            None => false,
        }
    }
}

/// The helper process: keeps only its listeners, the pipes and stdio,
/// serves each listener on a thread (commands run as `ids`, when given)
/// until `alive` reaches end of file, then ends the commands still running,
/// removes `smb`'s files and exits (closing `done`).
fn serve_forwards(
    listeners: Vec<(TcpListener, SocketAddr, GuestForward)>,
    alive: OwnedFd,
    done: OwnedFd,
    notices: OwnedFd,
    smb: Option<SmbServer>,
    ids: Option<(u32, u32)>,
) -> ! {
    let mut keep: Vec<RawFd> = vec![
        0,
        1,
        2,
        alive.as_raw_fd(),
        done.as_raw_fd(),
        notices.as_raw_fd(),
    ];
    keep.extend(listeners.iter().map(|(l, _, _)| l.as_raw_fd()));
    close_all_but(&mut keep);

    let groups = Groups::default();
    let notices = Arc::new(Notices {
        pipe: notices,
        named: Default::default(),
    });
    for (listener, addr, fwd) in listeners {
        let server = fwd.server;
        let groups = groups.clone();
        let notices = notices.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("guestfwd {server}"))
            .spawn(move || {
                accept_loop(&listener, addr, server, &fwd.target, &notices, ids, &groups)
            });
        if let Err(e) = spawned {
            tracing::warn!(%server, error = %e, "guest forward: cannot serve");
        }
    }
    wait_for_end(&alive);
    end_commands(&groups);
    drop(smb);
    // SAFETY: ends the helper (its threads with it) without running the
    // stack's destructors, which this process copied but does not own.
    unsafe { libc::_exit(0) }
}

/// Waits until the pipe's read end `fd` reaches end of file (its writers
/// are gone; nothing else is written to these pipes), or fails.
fn wait_for_end(fd: &OwnedFd) {
    let _ = rustix::io::retry_on_intr(|| rustix::io::read(fd, &mut [0u8; 1]));
}

/// Closes every descriptor but those in `keep` (the helper must not hold
/// the stack's sockets: a VM's connection would outlive the stack).
fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: u32 = 0;
    for &fd in keep.iter() {
        let fd = fd as u32;
        if fd > next {
            // SAFETY: closes descriptors this process does not use.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0) };
        }
        next = next.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

fn accept_loop(
    listener: &TcpListener,
    addr: SocketAddr,
    server: SocketAddrV4,
    target: &GuestForwardTarget,
    notices: &Notices,
    ids: Option<(u32, u32)>,
    groups: &Groups,
) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let (conn, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(%server, error = %e, "guest forward: accept failed");
                return;
            }
        };
        if !peer_inode(peer, addr).is_some_and(|inode| notices.take(inode)) {
            tracing::warn!(%server, %peer, "guest forward: connection from another process refused");
            continue;
        }
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%server, "guest forward: {MAX_CONNECTIONS} connections already, refused");
            continue;
        }
        if let Err(e) = serve(conn, target, ids, Active(active.clone()), groups) {
            tracing::warn!(%server, error = %e, "guest forward: target failed");
        }
    }
}

/// Hands one connection to the target; a command runs as `ids` (uid,
/// gid; no supplementary groups) when given, leading a process group
/// listed in `groups` until the group is empty.
/// `active` is released when the connection is over.
fn serve(
    conn: TcpStream,
    target: &GuestForwardTarget,
    ids: Option<(u32, u32)>,
    active: Active,
    groups: &Groups,
) -> io::Result<()> {
    match target {
        GuestForwardTarget::Command(cmd) => {
            let fd = OwnedFd::from(conn);
            // A process group of its own: smbd, for one, signals its whole
            // group when it ends, which must not reach the stack.
            let mut command = Command::new("/bin/sh");
            command
                .arg("-c")
                .arg(cmd)
                .process_group(0)
                .stdin(Stdio::from(fd.try_clone()?))
                .stdout(Stdio::from(fd));
            if let Some((uid, gid)) = ids {
                // std drops the supplementary groups when root sets a uid.
                command.uid(uid).gid(gid);
            }
            // Listed before it can end: the reaper below unlists it.
            let mut live = groups.lock().unwrap_or_else(|p| p.into_inner());
            let mut child = command.spawn()?;
            let pgid = child.id() as libc::pid_t;
            live.push(pgid);
            drop(live);
            tracing::debug!(pid = pgid, command = %cmd, "guest forward: command started");
            // Reap it when it ends (the connection closes with it), then
            // unlist its group once the group is empty.
            let groups = groups.clone();
            std::thread::spawn(move || {
                let _ = child.wait();
                drop(active);
                loop {
                    {
                        let mut live = groups.lock().unwrap_or_else(|p| p.into_inner());
                        if !group_alive(pgid) {
                            live.retain(|&g| g != pgid);
                            return;
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
            Ok(())
        }
        GuestForwardTarget::Tcp(host, port) => relay(
            conn,
            TcpStream::connect((host.as_str(), *port))?.into(),
            active,
        ),
        GuestForwardTarget::Unix(path) => relay(conn, UnixStream::connect(path)?.into(), active),
    }
}

/// Copies `conn` to `out` and `out` to `conn` on two threads; each
/// direction passes end of file on as a half-close. `active` is released
/// when both directions are done.
fn relay(conn: TcpStream, out: socket2::Socket, active: Active) -> io::Result<()> {
    let mut out_r = out.try_clone()?;
    let mut out_w = out;
    let Ok(mut conn_w) = conn.try_clone() else {
        return Ok(());
    };
    let mut conn_r = conn;
    let guest_to_target = std::thread::spawn(move || {
        let _ = io::copy(&mut conn_r, &mut out_w);
        let _ = out_w.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = io::copy(&mut out_r, &mut conn_w);
        let _ = conn_w.shutdown(Shutdown::Write);
        let _ = guest_to_target.join();
        drop(active);
    });
    Ok(())
}

/// The inode of the socket connected from `peer` to `listener` (in the
/// helper's network namespace, the stack's), from `/proc/self/net/tcp`.
fn peer_inode(peer: SocketAddr, listener: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/self/net/tcp").ok()?;
    let (want_local, want_remote) = (proc_addr(peer), proc_addr(listener));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// An IPv4 address and port as `/proc/net/tcp` writes them.
fn proc_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn fwd(target: GuestForwardTarget) -> GuestForward {
        GuestForward {
            server: "10.0.2.100:1".parse().unwrap(),
            target,
        }
    }

    /// A helper serving `fwd` alone, and its listener's address; this
    /// process stands for the stack.
    fn start(fwd: &GuestForward) -> (Helper, SocketAddr) {
        let (helper, addrs) = Helper::start(std::slice::from_ref(fwd), None, None).unwrap();
        (helper, addrs[0])
    }

    /// A connection to the helper's listener, named to it as the stack
    /// names its own.
    fn connect(helper: &Helper, addr: SocketAddr) -> TcpStream {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        notify(helper.notices.as_ref().unwrap().as_fd(), &sock);
        sock.connect(&addr.into()).unwrap();
        sock.into()
    }

    fn roundtrip(helper: &Helper, addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
        let mut c = connect(helper, addr);
        c.write_all(msg).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn command_tcp_and_unix_targets_serve_our_connections() {
        let (helper, addr) = start(&fwd(GuestForwardTarget::Command("tr a-z A-Z".into())));
        assert_eq!(roundtrip(&helper, addr, b"hello"), b"HELLO");

        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let (helper, addr) = start(&fwd(GuestForwardTarget::Tcp(
            "127.0.0.1".into(),
            echo_addr.port(),
        )));
        assert_eq!(roundtrip(&helper, addr, b"via tcp"), b"via tcp");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = unix.accept().unwrap();
            s.write_all(b"from unix").unwrap();
        });
        let (helper, addr) = start(&fwd(GuestForwardTarget::Unix(path)));
        assert_eq!(roundtrip(&helper, addr, b""), b"from unix");
    }

    /// Started as root, a guest forward's command runs as the sandbox's
    /// user (`--runas`), with no supplementary group, never as root.
    #[test]
    fn commands_run_as_the_runas_user() {
        let fwd = fwd(GuestForwardTarget::Command("id -u; id -g; id -G".into()));
        let (helper, addrs) =
            Helper::start(std::slice::from_ref(&fwd), None, Some("nobody")).unwrap();
        let out = String::from_utf8(roundtrip(&helper, addrs[0], b"")).unwrap();
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = slipway_sandbox::runas_ids("nobody")
            .unwrap()
            .unwrap_or_else(|| unsafe { (libc::getuid(), libc::getgid()) });
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
        // SAFETY: geteuid cannot fail.
        let host_root = unsafe { libc::geteuid() } == 0
            && map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        if host_root {
            assert_ne!(uid, 0, "root on the host runs commands as nobody");
        }
        assert_eq!(out, format!("{uid}\n{gid}\n{gid}\n"), "uid, gid, groups");
    }

    #[test]
    fn connections_are_capped() {
        let (helper, addr) = start(&fwd(GuestForwardTarget::Command("cat".into())));
        // MAX_CONNECTIONS commands that wait for input, then one too many.
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| connect(&helper, addr))
            .collect();
        for mut c in held.iter().take(1) {
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
        }
        let mut extra = connect(&helper, addr);
        let mut buf = Vec::new();
        assert_eq!(extra.read_to_end(&mut buf).unwrap(), 0, "closed at once");
        // One ends: a new connection is served again.
        let first = held.into_iter().next().unwrap();
        first.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        (&first).read_to_end(&mut rest).unwrap();
        // Until the command's exit has been noticed.
        let mut again = None;
        for _ in 0..500 {
            let mut c = connect(&helper, addr);
            c.write_all(b"y").unwrap();
            let mut b = [0u8; 1];
            if c.read_exact(&mut b).is_ok() {
                again = Some(b[0]);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(again, Some(b'y'));
    }

    /// A connection the stack did not name is closed, one named is
    /// served, and a notice is used up by its connection. Another process
    /// of the user cannot name one: the pipe's ends are the stack's and
    /// the helper's.
    #[test]
    fn only_connections_the_stack_named_are_served() {
        let (helper, addr) = start(&fwd(GuestForwardTarget::Command("echo served".into())));
        let mut foreign = TcpStream::connect(addr).unwrap();
        let mut got = Vec::new();
        foreign.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"", "not served");
        assert_eq!(roundtrip(&helper, addr, b""), b"served\n");
        // A notice for a socket that never connects (the stack's connect
        // failed) serves nobody else.
        let other = TcpStream::connect(addr).unwrap();
        notify(helper.notices.as_ref().unwrap().as_fd(), &foreign);
        let mut got = Vec::new();
        (&other).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"", "another socket's notice does not serve it");
    }

    /// Notices whose connection never came are kept up to MAX_NOTICES,
    /// the oldest dropped first; each is used once.
    #[test]
    fn notices_waiting_for_their_connection_are_bounded() {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).unwrap();
        let notices = Notices {
            pipe: r,
            named: Default::default(),
        };
        for inode in 1..=MAX_NOTICES as u64 + 1 {
            rustix::io::write(&w, &inode.to_le_bytes()).unwrap();
        }
        assert!(!notices.take(1), "the oldest was dropped");
        assert!(notices.take(2));
        assert!(!notices.take(2), "used up");
        assert!(notices.take(MAX_NOTICES as u64 + 1));
    }

    #[test]
    fn a_peer_socket_is_found_by_its_addresses() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).unwrap();
        let inode = rustix::fs::fstat(&c).unwrap().st_ino;
        assert_eq!(peer_inode(c.local_addr().unwrap(), addr), Some(inode));
        assert_eq!(peer_inode("127.0.0.1:1".parse().unwrap(), addr), None);
    }
}
