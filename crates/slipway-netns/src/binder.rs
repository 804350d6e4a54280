//! Sockets on a namespace's loopback, made by a helper that stays in the
//! namespace: pasta's `-T`/`-U` listen inside the container, on its
//! `127.0.0.1` and `::1`, for ports known only while serving (`auto`
//! follows the host's).
//!
//! Theory of operation: [`LoopbackBinder::open`] forks a helper child
//! (before the stack's sandbox, which forbids `setns` and `fork`) that
//! joins the target's user and network namespaces as the tap's helper
//! does, confines itself, then answers requests on a `SOCK_SEQPACKET` pair
//! until the other end closes: each request (kind, family, port: 4 bytes)
//! is answered with the new socket (`SCM_RIGHTS`) or an errno. A socket
//! keeps the namespace it was made in, so the serving process accepts and
//! receives on it from the host side.
//!
//! The helper trusts nothing it reads: the serving process parses guest
//! and container traffic and may be taken over. It checks every request
//! itself (exactly 4 bytes, a known kind and family, a port other than 0;
//! anything else gets EINVAL, and descriptors sent along are dropped by the
//! kernel since it reads no control data) and binds (or connects to:
//! pasta's splicing of a `-t` connection from the host's loopback) only
//! the loopback address of the family asked for. And it is confined
//! ([`slipway_sandbox::ChildSandbox::loopback_helper`], prepared before
//! the fork): once in the namespaces it keeps only CAP_NET_BIND_SERVICE
//! there (ports below 1024, as pasta's `-T 80` needs), sets
//! `no_new_privs`, may open no file (Landlock) and make only the system
//! calls of its loop (seccomp; any other kills it). So a compromised
//! stack gets from it TCP and UDP sockets on the namespace's loopback,
//! and nothing else. Like the tap's helper it makes only system calls on
//! its stack (no allocation after the fork), and it ends when its last
//! peer (the serving process) does: the request read returns end-of-file
//! (so does an empty request: `SOCK_SEQPACKET` cannot tell them apart).
//! It keeps no other descriptor of its parent (its standard ones go to
//! /dev/null), so it holds no pipe, tap or file open.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use slipway_sandbox::ChildSandbox;

use crate::child::{fork_with_pair, join_existing, send_fail, socketpair, Join, MAX_WHAT};
use crate::fail::Fail;
use crate::{NetnsError, Target};

/// What kind of loopback socket to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopbackSocket {
    /// A TCP socket listening on the port.
    TcpListener,
    /// A UDP socket bound to the port.
    Udp,
    /// A TCP socket connecting (non-blocking) to the port: a connection
    /// from the host's loopback spliced into the namespace's.
    TcpConnect,
}

impl LoopbackSocket {
    /// The request's kind byte.
    fn code(self) -> u8 {
        match self {
            LoopbackSocket::TcpListener => 0,
            LoopbackSocket::Udp => 1,
            LoopbackSocket::TcpConnect => 2,
        }
    }
}

/// Backlog of the listeners (pasta's).
const BACKLOG: libc::c_int = 128;

/// Length of a request: kind, family (0 IPv4, 1 IPv6), port (native order).
const REQUEST_LEN: usize = 4;

/// A helper in a namespace that makes sockets on its loopback.
#[derive(Debug)]
pub struct LoopbackBinder {
    sock: OwnedFd,
    pid: libc::pid_t,
}

impl LoopbackBinder {
    /// Starts the helper in `target`'s namespaces, confined (see the
    /// module header).
    pub fn open(target: &Target) -> Result<LoopbackBinder, NetnsError> {
        let (join, _) = crate::join_of(target)?;
        let (ours, theirs) = socketpair()?;
        // Above the standard descriptors, which the child replaces.
        let theirs = if theirs.as_raw_fd() <= 2 {
            theirs
                .try_clone()
                .map_err(crate::step("moving the helper's socket"))?
        } else {
            theirs
        };
        let sandbox = ChildSandbox::loopback_helper(theirs.as_raw_fd(), BACKLOG)?;
        // Only a warning when the kernel has no Landlock: seccomp forbids
        // opening files all the same.
        slipway_sandbox::check_landlock(sandbox.landlock(), false)?;
        let (pid, ours) = fork_with_pair(ours, theirs, |sock| serve(&join, &sandbox, sock))?;
        // The helper says whether it got in and confined itself: 0, or 1,
        // the errno and what failed.
        let mut status = [0u8; 5 + MAX_WHAT];
        // SAFETY: reads into a live buffer.
        let n = unsafe {
            libc::recv(
                ours.as_raw_fd(),
                status.as_mut_ptr().cast(),
                status.len(),
                0,
            )
        };
        if n != 1 || status[0] != 0 {
            let (errno, what) = match usize::try_from(n) {
                Ok(n) if n >= 5 => (
                    i32::from_ne_bytes([status[1], status[2], status[3], status[4]]),
                    String::from_utf8_lossy(&status[5..n]).into_owned(),
                ),
                _ => (libc::EIO, "ended without a word".to_string()),
            };
            let _ = crate::child::wait(pid);
            return Err(NetnsError::Step {
                what: format!("the helper binding the loopback of {target}: {what}"),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        // Not waited for: it ends with the serving process (which may be
        // a forked child of this one) and is reaped by whoever is left.
        Ok(LoopbackBinder { sock: ours, pid })
    }

    /// The helper's process ID.
    pub fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// A non-blocking, close-on-exec socket of `kind` bound to (or, for
    /// [`LoopbackSocket::TcpConnect`], connecting to) the namespace's
    /// loopback address of `family`'s kind at `port`.
    /// `family` must be a loopback address (`127.0.0.1` or `::1`), `port`
    /// not 0.
    pub fn bind(&self, kind: LoopbackSocket, family: IpAddr, port: u16) -> io::Result<OwnedFd> {
        if !family.is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{family} is not a loopback address"),
            ));
        }
        if port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "port 0 of the namespace's loopback: a port must be given",
            ));
        }
        let port = port.to_ne_bytes();
        self.request(&[kind.code(), u8::from(family.is_ipv6()), port[0], port[1]])
    }

    /// Sends one request as is and reads its answer.
    fn request(&self, req: &[u8]) -> io::Result<OwnedFd> {
        let fd = self.sock.as_raw_fd();
        // SAFETY: sends from a live buffer.
        let sent = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), libc::MSG_NOSIGNAL) };
        if sent != req.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 5];
        match slipway_host::fdpass::recv_fd(fd, &mut reply)? {
            (1, Some(sock)) if reply[0] == 0 => Ok(sock),
            (5, None) if reply[0] == 1 => Err(io::Error::from_raw_os_error(i32::from_ne_bytes([
                reply[1], reply[2], reply[3], reply[4],
            ]))),
            _ => Err(io::Error::other("the namespace's loopback helper is gone")),
        }
    }
}

/// Sends `[1, errno]` (or `[0]` when `errno` is `None`).
fn reply_status(sock: RawFd, errno: Option<i32>) {
    let mut buf = [0u8; 5];
    let len = match errno {
        None => 1,
        Some(e) => {
            buf[0] = 1;
            buf[1..5].copy_from_slice(&e.to_ne_bytes());
            5
        }
    };
    // SAFETY: sends from a live buffer.
    unsafe { libc::send(sock, buf.as_ptr().cast(), len, libc::MSG_NOSIGNAL) };
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Leaves the helper only the descriptors of `keep` (its socket, the
/// Landlock ruleset until the sandbox is entered; each above 2) and
/// /dev/null as its standard descriptors: it holds none of the parent's
/// pipes (whoever waits for the end of pasta's output), taps or files.
fn detach(keep: [RawFd; 2]) {
    // SAFETY: descriptor calls on this child's own table, with a static
    // path; nothing allocates.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                if fd != null {
                    libc::dup2(null, fd);
                }
            }
        }
        let (low, high) = (keep[0].min(keep[1]), keep[0].max(keep[1]));
        let mut from: RawFd = 3;
        for kept in [low, high] {
            if kept > from {
                libc::syscall(libc::SYS_close_range, from as u32, (kept - 1) as u32, 0u32);
            }
            from = from.max(kept + 1);
        }
        libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0u32);
    }
}

/// Whether a request of `n` bytes (its real length) is one the helper
/// answers with a socket: 4 bytes, kind 0 to 2, family 0 or 1, port not 0.
fn valid(req: &[u8; REQUEST_LEN], n: isize) -> bool {
    n == REQUEST_LEN as isize && req[0] <= 2 && req[1] <= 1 && (req[2], req[3]) != (0, 0)
}

/// The helper child: detach, join, confine, report, answer requests until
/// end-of-file.
fn serve(join: &Join, sandbox: &ChildSandbox, sock: RawFd) -> ! {
    detach([sock, sandbox.keep_fd().unwrap_or(sock)]);
    let ready = join_existing(join).and_then(|()| {
        sandbox.enter().map_err(|fail| Fail {
            what: fail.what,
            errno: fail.errno,
        })
    });
    if let Err(fail) = ready {
        send_fail(sock, &fail);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    reply_status(sock, None);
    let mut req = [0u8; REQUEST_LEN];
    loop {
        // MSG_TRUNC: the real length of a longer request, not the 4 bytes
        // read of it.
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::recv(sock, req.as_mut_ptr().cast(), req.len(), libc::MSG_TRUNC) };
        if n == 0 || (n < 0 && errno() != libc::EINTR) {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        if n < 0 {
            continue;
        }
        #[cfg(test)]
        if n == REQUEST_LEN as isize && req[0] >= tests::FORBIDDEN {
            tests::forbidden_call(req[0], sock);
        }
        if !valid(&req, n) {
            reply_status(sock, Some(libc::EINVAL));
            continue;
        }
        let v6 = req[1] == 1;
        let port = u16::from_ne_bytes([req[2], req[3]]);
        match loopback_socket(req[0], v6, port) {
            Ok(fd) => {
                let _ = slipway_host::fdpass::send_fd(sock, fd.as_raw_fd());
            }
            Err(e) => reply_status(sock, Some(e)),
        }
    }
}

/// A descriptor of the helper, closed when dropped. Not an `OwnedFd`,
/// whose drop checks the descriptor with `fcntl` in debug builds: a call
/// outside the helper's filter.
struct ChildFd(RawFd);

impl ChildFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Drop for ChildFd {
    fn drop(&mut self) {
        // SAFETY: the helper's own descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Makes the socket of a request (see [`LoopbackBinder::bind`]): `kind`
/// 0 a TCP listener, 1 a UDP socket, 2 a TCP socket connecting.
fn loopback_socket(kind: u8, v6: bool, port: u16) -> Result<ChildFd, i32> {
    let udp = kind == 1;
    let connect = kind == 2;
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let kind = if udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: socket returns a new descriptor or -1.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    let fd = ChildFd(fd);
    let one: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: an int option from a live local.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if !udp && !connect {
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR);
    }
    // The address goes to bind, or to connect for a connecting socket.
    let call = |fd: RawFd, sa: *const libc::sockaddr, len: libc::socklen_t| {
        // SAFETY: a live sockaddr of its size, on our own socket.
        unsafe {
            if connect {
                libc::connect(fd, sa, len)
            } else {
                libc::bind(fd, sa, len)
            }
        }
    };
    let rc = if v6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
        // SAFETY: an all-zero sockaddr_in6 is valid.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        sa.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
        call(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    } else {
        // SAFETY: an all-zero sockaddr_in is valid.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        call(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 && !(connect && errno() == libc::EINPROGRESS) {
        return Err(errno());
    }
    if connect {
        return Ok(fd);
    }
    // SAFETY: listen on our own socket.
    if !udp && unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(errno());
    }
    Ok(fd)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::process::{Child, Command, Stdio};

    /// Request kinds from here up make the helper try a call its filter
    /// forbids (this build only): see [`forbidden_call`].
    pub(super) const FORBIDDEN: u8 = 0xf0;

    /// What each test-only kind tries, in order from [`FORBIDDEN`].
    const FORBIDDEN_CALLS: &[&str] = &[
        "open /etc/passwd",
        "a unix stream socket",
        "a raw IPv4 socket",
        "a netlink socket",
        "an MPTCP socket (TCP-typed, not the default protocol)",
        "an unlisted socket option (SO_BINDTODEVICE)",
        "sendto on another socket than the helper's",
        "listen with another backlog",
        "fork",
        "execve /bin/true",
        "kill (of PID 1, signal 0)",
    ];

    /// The helper's side of a test-only request: one call its filter
    /// forbids, then a reply (which a helper without the filter sends).
    pub(super) fn forbidden_call(kind: u8, sock: RawFd) {
        // SAFETY: plain system calls with static or local arguments; the
        // helper is expected to be killed by the first of them.
        unsafe {
            let udp = || libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            match kind - FORBIDDEN {
                0 => {
                    libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY);
                }
                1 => {
                    libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                }
                2 => {
                    libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
                }
                3 => {
                    libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0);
                }
                4 => {
                    libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP);
                }
                5 => {
                    let dev = c"lo";
                    libc::setsockopt(
                        udp(),
                        libc::SOL_SOCKET,
                        libc::SO_BINDTODEVICE,
                        dev.as_ptr().cast(),
                        3,
                    );
                }
                6 => {
                    let mut sa: libc::sockaddr_in = std::mem::zeroed();
                    sa.sin_family = libc::AF_INET as libc::sa_family_t;
                    sa.sin_port = 9u16.to_be();
                    sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
                    libc::sendto(
                        udp(),
                        b"x".as_ptr().cast(),
                        1,
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    );
                }
                7 => {
                    libc::listen(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0), 4096);
                }
                8 => {
                    if libc::fork() == 0 {
                        libc::_exit(0);
                    }
                }
                9 => {
                    let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                    libc::execv(argv[0], argv.as_ptr());
                }
                _ => {
                    libc::kill(1, 0);
                }
            }
        }
        reply_status(sock, Some(libc::ENOSYS));
    }

    /// Runs `f` on a thread in a new network namespace with its loopback
    /// up, where the helper (forked from that thread) binds: no port of
    /// this machine's own namespace is touched.
    fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unshare of this thread's network namespace only.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
                let ctl = crate::ifconfig::CtlSocket::open().ok().unwrap();
                assert!(ctl.set_up(&crate::child::lo_name(), "loopback up").is_ok());
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// The helper in the calling thread's network namespace (nothing to
    /// join but that namespace, which is allowed to itself).
    fn ours() -> LoopbackBinder {
        LoopbackBinder::open(&Target::Path {
            netns: "/proc/thread-self/ns/net".into(),
            userns: None,
        })
        .unwrap()
    }

    /// A TCP port of the namespace's 127.0.0.1 that is free now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// The helper's `/proc/PID/status` line `key`.
    fn status(binder: &LoopbackBinder, key: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", binder.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {key} in the helper's status"))
            .trim()
            .to_string()
    }

    /// How the helper ended: the signal that killed it, or its exit code
    /// as a negative number.
    fn ending(binder: LoopbackBinder) -> i32 {
        let pid = binder.pid;
        drop(binder);
        let status = crate::child::wait_status(pid).unwrap();
        if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            -libc::WEXITSTATUS(status)
        }
    }

    #[test]
    fn listeners_and_udp_sockets_on_loopback_only() {
        in_private_netns(|| {
            let binder = ours();
            let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let port = free_port();
            let fd = binder.bind(LoopbackSocket::TcpListener, lo4, port).unwrap();
            let listener = std::net::TcpListener::from(fd);
            let addr = listener.local_addr().unwrap();
            assert_eq!(addr, (lo4, port).into());
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            listener.set_nonblocking(false).unwrap();
            let (mut s, _) = listener.accept().unwrap();
            c.write_all(b"hi").unwrap();
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
            // The port is taken now: the kernel's error comes back.
            let err = binder
                .bind(LoopbackSocket::TcpListener, lo4, port)
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
            let udp = binder
                .bind(LoopbackSocket::Udp, IpAddr::V6(Ipv6Addr::LOCALHOST), 5353)
                .map(std::net::UdpSocket::from)
                .unwrap();
            assert_eq!(udp.local_addr().unwrap(), "[::1]:5353".parse().unwrap());
            // Nothing but loopback, and a port, is asked for.
            let err = binder
                .bind(LoopbackSocket::Udp, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let err = binder.bind(LoopbackSocket::Udp, lo4, 0).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        });
    }

    #[test]
    fn connecting_sockets_reach_the_loopback_only() {
        in_private_netns(|| {
            let binder = ours();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let fd = binder.bind(LoopbackSocket::TcpConnect, lo4, port).unwrap();
            let (_, peer) = listener.accept().unwrap();
            let stream = std::net::TcpStream::from(fd);
            assert_eq!(stream.local_addr().unwrap(), peer);
            assert_eq!(stream.peer_addr().unwrap().port(), port);
            let err = binder
                .bind(
                    LoopbackSocket::TcpConnect,
                    "192.0.2.1".parse().unwrap(),
                    port,
                )
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        });
    }

    #[test]
    fn a_namespace_that_cannot_be_joined_is_an_error() {
        let err = LoopbackBinder::open(&Target::Path {
            netns: "/nonexistent/ns".into(),
            userns: None,
        })
        .unwrap_err();
        let text = format!("{err}");
        assert!(
            text.contains("the helper binding the loopback of network namespace /nonexistent/ns")
                && text.contains("joining the network namespace"),
            "{text}"
        );
    }

    /// A container's namespaces as rootless podman makes them: a user
    /// namespace owned by nobody, its network namespace with the loopback
    /// up; killed on drop.
    pub(crate) struct Container(pub(crate) Child);

    impl Container {
        fn new() -> Container {
            Container::start(
                Command::new("setpriv")
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .arg("unshare"),
            )
        }

        /// A container whose user namespace the test's own user owns (as
        /// rootless podman's is owned by the user running slipway).
        pub(crate) fn owned_by_us() -> Container {
            Container::start(&mut Command::new("unshare"))
        }

        fn start(unshare: &mut Command) -> Container {
            let mut child = unshare
                .args(["-Urn", "sh", "-c"])
                .arg("ip link set lo up && echo up && exec sleep 600")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = [0u8; 3];
            child.stdout.take().unwrap().read_exact(&mut line).unwrap();
            assert_eq!(&line, b"up\n");
            Container(child)
        }
    }

    impl Drop for Container {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// In a container's user namespace, where joining gives it every
    /// capability, the helper keeps CAP_NET_BIND_SERVICE alone (port 80 of
    /// the container's loopback is bound, as pasta's `-T 80` needs), with
    /// an empty bounding set, `no_new_privs` and a seccomp filter on.
    #[test]
    fn the_helper_keeps_only_what_binding_low_ports_needs() {
        let ctr = Container::new();
        let binder = LoopbackBinder::open(&Target::Pid(ctr.0.id())).unwrap();
        let bind_service = format!(
            "{:016x}",
            slipway_host::caps::Capability::CAP_NET_BIND_SERVICE.bitmask()
        );
        for (key, want) in [
            ("CapEff", bind_service.as_str()),
            ("CapPrm", &bind_service),
            ("CapInh", "0000000000000000"),
            ("CapBnd", "0000000000000000"),
            ("CapAmb", "0000000000000000"),
            ("NoNewPrivs", "1"),
            ("Seccomp", "2"),
        ] {
            assert_eq!(status(&binder, key), want, "{key}");
        }
        // Its descriptors: /dev/null three times, and its socket.
        let fds = std::fs::read_dir(format!("/proc/{}/fd", binder.pid()))
            .unwrap()
            .count();
        assert_eq!(fds, 4);
        let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listener = binder
            .bind(LoopbackSocket::TcpListener, lo4, 80)
            .map(std::net::TcpListener::from)
            .unwrap();
        assert_eq!(
            listener.local_addr().unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        // In the container's namespace, not ours.
        let inode = |path: String| std::fs::read_link(path).unwrap();
        assert_eq!(
            inode(format!("/proc/{}/ns/net", binder.pid())),
            inode(format!("/proc/{}/ns/net", ctr.0.id()))
        );
        assert_eq!(ending(binder), 0, "it ends when its peer does");
    }

    /// The container's root (all capabilities in the user namespace the
    /// helper joined, the same uid as the helper) may neither take the
    /// helper's socket to the stack (`pidfd_getfd`) nor trace it.
    #[test]
    fn the_container_cannot_take_the_helpers_socket() {
        let ctr = Container::owned_by_us();
        let binder = LoopbackBinder::open(&Target::Pid(ctr.0.id())).unwrap();
        let sock = std::fs::read_dir(format!("/proc/{}/fd", binder.pid()))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&fd| fd > 2)
            .unwrap();
        let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pid, fd = int(sys.argv[1]), int(sys.argv[2])
got = libc.syscall(438, os.pidfd_open(pid), fd, 0)
print("pidfd_getfd:", "got it" if got >= 0 else os.strerror(ctypes.get_errno()))
got = libc.ptrace(16, pid, None, None)
print("ptrace:", "attached" if got == 0 else os.strerror(ctypes.get_errno()))
"#;
        let out = Command::new("nsenter")
            .args([
                "-t",
                &ctr.0.id().to_string(),
                "-U",
                "-n",
                "python3",
                "-c",
                script,
            ])
            .args([binder.pid().to_string(), sock.to_string()])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "pidfd_getfd: Operation not permitted\nptrace: Operation not permitted\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(ending(binder), 0);
    }

    /// Each call outside the helper's list kills it with SIGSYS.
    #[test]
    fn a_forbidden_call_kills_the_helper() {
        in_private_netns(|| {
            for (i, what) in FORBIDDEN_CALLS.iter().enumerate() {
                let binder = ours();
                let req = [FORBIDDEN + i as u8, 0, 0, 0];
                let answer = binder.request(&req);
                assert!(answer.is_err(), "{what}: {answer:?}");
                assert_eq!(ending(binder), libc::SIGSYS, "{what}");
            }
        });
    }

    /// Requests a compromised stack could send: every malformed one gets
    /// EINVAL and the helper goes on; descriptors sent along are not kept;
    /// an empty request ends it.
    #[test]
    fn malformed_requests_are_refused() {
        in_private_netns(|| {
            let binder = ours();
            let port = 8080u16.to_ne_bytes();
            let einval = |req: &[u8]| {
                let err = binder.request(req).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{req:?}: {err}");
            };
            for req in [
                &[0u8][..],
                &[0, 0, port[0]],
                &[0, 0, port[0], port[1], 0],
                &[0u8; 100],
                &[0u8; 70000][..65000],
                &[3, 0, port[0], port[1]],
                &[0xef, 0, port[0], port[1]],
                &[0, 2, port[0], port[1]],
                &[1, 0xff, port[0], port[1]],
                &[0, 0, 0, 0],
                &[1, 1, 0, 0],
                &[2, 0, 0, 0],
            ] {
                einval(req);
            }
            // A pseudo-random mix (a fixed xorshift sequence): lengths 1 to
            // 9, any bytes; what is well-formed gets a socket or the
            // kernel's error, the rest EINVAL.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let bytes = x.to_ne_bytes();
                let len = 1 + (bytes[7] % 9) as usize;
                let mut req = [0u8; 9];
                req[..len.min(8)].copy_from_slice(&bytes[..len.min(8)]);
                // Mostly the test-only kinds' range left out: they kill.
                if len == REQUEST_LEN && req[0] >= FORBIDDEN {
                    req[0] &= 0x03;
                }
                let mut fixed = [0u8; REQUEST_LEN];
                fixed.copy_from_slice(&req[..REQUEST_LEN]);
                match binder.request(&req[..len]) {
                    Ok(_) => assert!(valid(&fixed, len as isize), "{:?}", &req[..len]),
                    Err(e) if !valid(&fixed, len as isize) => {
                        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{:?}", &req[..len])
                    }
                    Err(e) => assert!(e.raw_os_error().is_some(), "{:?}: {e}", &req[..len]),
                }
            }
            // A descriptor sent with a request is dropped unread.
            let file = std::fs::File::open("/etc/hostname").unwrap();
            slipway_host::fdpass::send_fd(binder.sock.as_raw_fd(), file.as_raw_fd()).unwrap();
            let mut reply = [0u8; 5];
            let (n, fd) =
                slipway_host::fdpass::recv_fd(binder.sock.as_raw_fd(), &mut reply).unwrap();
            assert_eq!((n, fd.is_none(), reply[0]), (5, true, 1));
            let fds = std::fs::read_dir(format!("/proc/{}/fd", binder.pid()))
                .unwrap()
                .count();
            assert_eq!(fds, 4, "only /dev/null and its socket");
            // It still answers.
            let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
            binder.bind(LoopbackSocket::Udp, lo6, 4000).unwrap();
            // An empty message reads as the end.
            // SAFETY: a zero-length send on our socket.
            unsafe { libc::send(binder.sock.as_raw_fd(), [0u8].as_ptr().cast(), 0, 0) };
            assert_eq!(ending(binder), 0);
        });
    }
}
