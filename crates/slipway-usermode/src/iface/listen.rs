//! The host sockets of host forwards: a TCP listener or a UDP socket
//! bound where a [`HostForward`] says, with the options it asks for.
//!
//! Theory of operation: the socket is made with `socket2` so that the
//! options are set between `socket()` and `bind()`, where they must be:
//! `IPV6_V6ONLY` for [`HostForward::v6_only`] (the IPv6 listener of a port
//! whose IPv4 listener sits beside it, as passt binds one socket per
//! family; without it the kernel's default, `net.ipv6.bindv6only`, as
//! std's and mio's `bind` leave it) and `SO_BINDTODEVICE` for
//! [`HostForward::device`] (passt's `ADDR%IFNAME/`: only clients that
//! arrive through that interface; unprivileged since Linux 5.7; a
//! link-local address is bound on that interface). TCP listeners get
//! `SO_REUSEADDR` and a backlog of 128, UDP sockets neither, exactly as
//! mio's `TcpListener::bind` and `UdpSocket::bind` give them; both are
//! non-blocking and close-on-exec.

use std::io;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::HostForward;

/// The listen backlog of a TCP forward (std's and mio's).
const BACKLOG: i32 = 128;

/// A socket of `ty` bound as `fwd` says (not yet listening).
fn bound(fwd: &HostForward, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(fwd.host),
        ty.nonblocking().cloexec(),
        Some(protocol),
    )?;
    if ty == Type::STREAM {
        sock.set_reuse_address(true)?;
    }
    if fwd.host.is_ipv6() && fwd.v6_only {
        sock.set_only_v6(true)?;
    }
    if let Some(device) = &fwd.device {
        sock.bind_device(Some(device.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to interface {device}: {e}")))?;
    }
    sock.bind(&fwd.host.into())?;
    Ok(sock)
}

/// The listener of TCP forward `fwd`.
pub fn tcp_listener(fwd: &HostForward) -> io::Result<mio::net::TcpListener> {
    let sock = bound(fwd, Type::STREAM, Protocol::TCP)?;
    sock.listen(BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(sock.into()))
}

/// The socket of UDP forward `fwd`.
pub fn udp_socket(fwd: &HostForward) -> io::Result<mio::net::UdpSocket> {
    let sock = bound(fwd, Type::DGRAM, Protocol::UDP)?;
    Ok(mio::net::UdpSocket::from_std(sock.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ForwardProtocol;
    use std::net::SocketAddr;

    fn fwd(host: &str, v6_only: bool, device: Option<&str>) -> HostForward {
        HostForward {
            protocol: ForwardProtocol::Tcp,
            host: host.parse().unwrap(),
            guest_addr: None,
            guest_port: 80,
            v6_only,
            device: device.map(str::to_owned),
        }
    }

    fn only_v6(fd: &impl std::os::fd::AsFd) -> bool {
        socket2::SockRef::from(fd).only_v6().unwrap()
    }

    /// A port free on both families of the loopback.
    fn free_port() -> u16 {
        loop {
            let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = v4.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("::1", port)).is_ok() {
                return port;
            }
        }
    }

    /// An IPv6 listener with `v6_only` sits beside the IPv4 one on the
    /// same port, and each takes its own family's clients; without it, an
    /// unspecified IPv6 listener (dual-stack under the default
    /// `bindv6only=0`) cannot.
    #[test]
    fn v6_only_listeners_sit_beside_the_ipv4_one() {
        let port = free_port();
        let v4 = tcp_listener(&fwd(&format!("0.0.0.0:{port}"), false, None)).unwrap();
        let v6 = tcp_listener(&fwd(&format!("[::]:{port}"), true, None)).unwrap();
        assert!(only_v6(&v6));
        assert_eq!(v6.local_addr().unwrap().port(), port);
        for (client, listener) in [("127.0.0.1", &v4), ("::1", &v6)] {
            let c = std::net::TcpStream::connect((client, port)).unwrap();
            let (_, peer) = (0..100)
                .find_map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    listener.accept().ok()
                })
                .expect("the client is accepted by its family's listener");
            assert_eq!(peer, c.local_addr().unwrap());
        }
        if std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0") {
            let err = tcp_listener(&fwd(&format!("[::]:{port}"), false, None)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            let dual = tcp_listener(&fwd("[::]:0", false, None)).unwrap();
            assert!(!only_v6(&dual), "the kernel's default is left alone");
        }
        // UDP likewise.
        let mut u = fwd(&format!("0.0.0.0:{port}"), false, None);
        u.protocol = ForwardProtocol::Udp;
        let _u4 = udp_socket(&u).unwrap();
        u.host = SocketAddr::new("::".parse().unwrap(), port);
        u.v6_only = true;
        let u6 = udp_socket(&u).unwrap();
        assert!(only_v6(&u6));
    }

    /// The listener is bound to the device (the kernel says so) and takes
    /// clients arriving through it; an interface that does not exist
    /// fails, naming it. (That clients arriving elsewhere are not taken is
    /// `passt_twin`'s `pasta_ipv6_forwards_match_debian_pasta`.)
    #[test]
    fn device_bound_listeners() {
        let l = tcp_listener(&fwd("127.0.0.1:0", false, Some("lo"))).unwrap();
        let device = socket2::SockRef::from(&l).device().unwrap();
        assert_eq!(device.as_deref(), Some(&b"lo"[..]));
        let port = l.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let err = tcp_listener(&fwd("127.0.0.1:0", false, Some("nosuchif0"))).unwrap_err();
        assert!(
            err.to_string().contains("binding to interface nosuchif0"),
            "{err}"
        );
    }
}
