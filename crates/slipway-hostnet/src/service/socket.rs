//! Sockets bound to the bridge, and what the service reads of the bridge
//! itself, shared by the protocols.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use slipway_host::files::Reread;

/// A non-blocking UDP socket bound to `addr` on `device` (when given).
pub(super) fn bound_udp(
    addr: SocketAddr,
    device: Option<&str>,
    broadcast: bool,
) -> Result<UdpSocket> {
    bound(addr, device, broadcast, Type::DGRAM).map(Into::into)
}

/// A non-blocking socket of type `ty` (UDP or a listening TCP socket)
/// bound to `addr` on `device` (when given), the bridge's addresses
/// possibly still tentative.
pub(super) fn bound(
    addr: SocketAddr,
    device: Option<&str>,
    broadcast: bool,
    ty: Type,
) -> Result<Socket> {
    let ctx = |source| Error::Bind { ty, addr, source };
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let s = Socket::new(domain, ty, Some(proto)).map_err(ctx)?;
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes())).map_err(ctx)?;
        // The bridge's addresses may still be tentative (IPv6 DAD).
        if addr.is_ipv4() {
            s.set_freebind_v4(true).map_err(ctx)?;
        } else {
            s.set_only_v6(true).map_err(ctx)?;
            s.set_freebind_v6(true).map_err(ctx)?;
        }
    }
    s.set_reuse_address(true).map_err(ctx)?;
    if broadcast {
        s.set_broadcast(true).map_err(ctx)?;
    }
    s.set_nonblocking(true).map_err(ctx)?;
    s.bind(&addr.into()).map_err(ctx)?;
    if ty == Type::STREAM {
        s.listen(16).map_err(ctx)?;
    }
    Ok(s)
}

/// The bridge's MAC address, from its sysfs file (`/sys/class/net/DEV/address`).
pub(super) fn link_mac(address: Option<&Reread>) -> Option<[u8; 6]> {
    let text = address?.read().ok()?;
    text.trim()
        .parse::<slipway_host::MacAddr>()
        .ok()
        .map(|m| m.0)
}
