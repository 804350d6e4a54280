//! Sockets on a namespace's loopback, made by a helper that stays in the
//! namespace: pasta's `-T`/`-U` listen inside the container, on its
//! `127.0.0.1` and `::1`, for ports known only while serving (`auto`
//! follows the host's).
//!
//! Theory of operation: [`LoopbackBinder::open`] forks a helper child
//! (before the stack's sandbox, which forbids `setns` and `fork`) that
//! joins the target's user and network namespaces as the tap's helper
//! does, then answers requests on a `SOCK_SEQPACKET` pair until the other
//! end closes: each request (kind, family, port: 4 bytes) is answered
//! with the new socket (`SCM_RIGHTS`) or an errno. A socket keeps the
//! namespace it was made in, so the serving process accepts and receives
//! on it from the host side. The helper binds (or connects to: pasta's
//! splicing of a `-t` connection from the host's loopback) only the
//! loopback address of the family asked for: a compromised stack can make
//! it listen on or reach nothing beyond the namespace's loopback. Like the tap's helper it makes
//! only system calls on its stack (no allocation after the fork), and it
//! ends when its last peer (the serving process) does: the request read
//! returns end-of-file. It keeps no other descriptor of its parent (its
//! standard ones go to /dev/null), so it holds no pipe, tap or file open.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::child::{fork_with_socket, join_existing, Join};
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

/// Backlog of the listeners (pasta's).
const BACKLOG: libc::c_int = 128;

/// A helper in a namespace that makes sockets on its loopback.
#[derive(Debug)]
pub struct LoopbackBinder {
    sock: OwnedFd,
}

impl LoopbackBinder {
    /// Starts the helper in `target`'s namespaces.
    pub fn open(target: &Target) -> Result<LoopbackBinder, NetnsError> {
        let (join, _) = crate::join_of(target)?;
        let (pid, ours) = fork_with_socket(|sock| serve(&join, sock))?;
        let mut status = [0u8; 5];
        // The helper says whether it got in (0, or 1 and the errno).
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::recv(ours.as_raw_fd(), status.as_mut_ptr().cast(), 5, 0) };
        if n != 1 || status[0] != 0 {
            let errno = if n == 5 {
                i32::from_ne_bytes([status[1], status[2], status[3], status[4]])
            } else {
                libc::EIO
            };
            let _ = crate::child::wait(pid);
            return Err(NetnsError::Step {
                what: format!("joining {target} to bind its loopback"),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        // Not waited for: it ends with the serving process (which may be
        // a forked child of this one) and is reaped by whoever is left.
        Ok(LoopbackBinder { sock: ours })
    }

    /// A non-blocking, close-on-exec socket of `kind` bound to (or, for
    /// [`LoopbackSocket::TcpConnect`], connecting to) the namespace's
    /// loopback address of `family`'s kind at `port`.
    /// `family` must be a loopback address (`127.0.0.1` or `::1`).
    pub fn bind(&self, kind: LoopbackSocket, family: IpAddr, port: u16) -> io::Result<OwnedFd> {
        if !family.is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{family} is not a loopback address"),
            ));
        }
        let port = port.to_ne_bytes();
        let req = [
            match kind {
                LoopbackSocket::TcpListener => 0,
                LoopbackSocket::Udp => 1,
                LoopbackSocket::TcpConnect => 2,
            },
            u8::from(family.is_ipv6()),
            port[0],
            port[1],
        ];
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

/// Leaves the helper only `sock` (as descriptor 3) and /dev/null as its
/// standard descriptors: it holds none of the parent's pipes (whoever
/// waits for the end of pasta's output), taps or files. Returns the new
/// number of `sock`.
fn detach(sock: RawFd) -> RawFd {
    // SAFETY: descriptor calls on this child's own table, with a static
    // path; nothing allocates.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        if sock != 3 && libc::dup2(sock, 3) != 3 {
            return sock;
        }
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    3
}

/// The helper child: join, report, answer requests until end-of-file.
fn serve(join: &Join, sock: RawFd) -> ! {
    let sock = detach(sock);
    if let Err(fail) = join_existing(join) {
        reply_status(sock, Some(fail.errno));
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    reply_status(sock, None);
    let mut req = [0u8; 4];
    loop {
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::recv(sock, req.as_mut_ptr().cast(), req.len(), 0) };
        if n == 0 || (n < 0 && errno() != libc::EINTR) {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        if n != req.len() as isize || req[0] > 2 || req[1] > 1 {
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

/// Makes the socket of a request (see [`LoopbackBinder::bind`]): `kind`
/// 0 a TCP listener, 1 a UDP socket, 2 a TCP socket connecting.
fn loopback_socket(kind: u8, v6: bool, port: u16) -> Result<OwnedFd, i32> {
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
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
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
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The helper in our own namespace (a path target: nothing to join
    /// but the network namespace, which is allowed to itself).
    fn ours() -> LoopbackBinder {
        LoopbackBinder::open(&Target::Path {
            netns: "/proc/self/ns/net".into(),
            userns: None,
        })
        .unwrap()
    }

    #[test]
    fn listeners_and_udp_sockets_on_loopback_only() {
        let binder = ours();
        let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let fd = binder.bind(LoopbackSocket::TcpListener, lo4, 0).unwrap();
        let listener = std::net::TcpListener::from(fd);
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip(), lo4);
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        c.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // The port is taken now: the kernel's error comes back.
        let err = binder
            .bind(LoopbackSocket::TcpListener, lo4, addr.port())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        let udp = binder
            .bind(LoopbackSocket::Udp, IpAddr::V6(Ipv6Addr::LOCALHOST), 0)
            .map(std::net::UdpSocket::from);
        if let Ok(udp) = udp {
            assert_eq!(udp.local_addr().unwrap().ip(), Ipv6Addr::LOCALHOST);
        }
        // Nothing but loopback is asked for.
        let err = binder
            .bind(LoopbackSocket::Udp, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn connecting_sockets_reach_the_loopback_only() {
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
    }

    #[test]
    fn a_namespace_that_cannot_be_joined_is_an_error() {
        let err = LoopbackBinder::open(&Target::Path {
            netns: "/nonexistent/ns".into(),
            userns: None,
        })
        .unwrap_err();
        assert!(format!("{err}").contains("to bind its loopback"), "{err}");
    }
}
