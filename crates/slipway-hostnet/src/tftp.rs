//! The TFTP server of a virtual network's bridge: the socket side of
//! [`slipway_tftp`]. Requests arrive on port 69 of the bridge address;
//! each transfer gets its own socket (its TID, RFC 1350 section 4) and a
//! thread that runs the protocol core's state machine with real timeouts.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use slipway_tftp::{ErrorCode, Request, Root, Step, Transfer, MAX_TRANSFERS, TFTP_PORT};
use socket2::{Domain, Protocol, Socket, Type};

/// Largest block over a real network: the most a UDP datagram carries.
const MAX_BLKSIZE: u16 = slipway_tftp::MAX_BLKSIZE;

/// The listening side: requests arrive on port 69 of the bridge address.
pub struct TftpServer {
    socket: UdpSocket,
    root: Arc<Root>,
    device: String,
    active: Arc<AtomicUsize>,
}

impl TftpServer {
    /// Binds port 69 of `addr` on `device`, serving files under `root`.
    pub fn bind(addr: std::net::IpAddr, device: &str, root: &Path) -> std::io::Result<TftpServer> {
        let root = Root::open(root)?;
        let socket = bound(SocketAddr::new(addr, TFTP_PORT), device)?;
        socket.set_nonblocking(true)?;
        Ok(TftpServer {
            socket,
            root: Arc::new(root),
            device: device.to_string(),
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The listening socket (to register with the poller).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Starts a transfer for every request waiting.
    pub fn ready(&self) {
        let mut buf = [0u8; 1024];
        while let Ok((len, client)) = self.socket.recv_from(&mut buf) {
            let req = match slipway_tftp::parse_request(&buf[..len]) {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!("TFTP: request from {client} refused: {e}");
                    let _ = self.socket.send_to(&e.packet(), client);
                    continue;
                }
            };
            if self.active.load(Ordering::SeqCst) >= MAX_TRANSFERS {
                let _ = self.socket.send_to(
                    &slipway_tftp::error_packet(ErrorCode::Undefined, "too many transfers"),
                    client,
                );
                continue;
            }
            let Ok(local) = self.socket.local_addr() else {
                continue;
            };
            let sock = match bound(SocketAddr::new(local.ip(), 0), &self.device) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("TFTP: no socket for {client}: {e}");
                    continue;
                }
            };
            self.active.fetch_add(1, Ordering::SeqCst);
            let active = self.active.clone();
            let root = self.root.clone();
            std::thread::spawn(move || {
                match serve(&sock, client, &root, &req) {
                    Ok(bytes) => {
                        tracing::info!("TFTP: sent {} ({bytes} bytes) to {client}", req.file)
                    }
                    Err(e) => tracing::info!("TFTP: {} to {client}: {e}", req.file),
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn bound(addr: SocketAddr, device: &str) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind_device(Some(device.as_bytes()))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Serves one read request on the transfer's own socket; returns the bytes
/// sent.
fn serve(sock: &UdpSocket, client: SocketAddr, root: &Root, req: &Request) -> std::io::Result<u64> {
    let mut transfer = match Transfer::start(root, req, MAX_BLKSIZE, Instant::now()) {
        Ok(t) => t,
        Err(e) => {
            sock.send_to(&e.packet(), client)?;
            return Err(std::io::Error::other(e));
        }
    };
    let mut buf = [0u8; 1024];
    sock.send_to(transfer.packet(), client)?;
    loop {
        let now = Instant::now();
        let wait = transfer.deadline().saturating_duration_since(now);
        let step = if wait.is_zero() {
            transfer.on_timeout(now)
        } else {
            sock.set_read_timeout(Some(wait))?;
            match sock.recv_from(&mut buf) {
                Ok((len, from)) if from == client => {
                    transfer.on_packet(&buf[..len], Instant::now())
                }
                Ok((_, from)) => {
                    // Another port is not this transfer (RFC 1350 section 4).
                    let _ = sock.send_to(
                        &slipway_tftp::error_packet(
                            ErrorCode::UnknownTransfer,
                            "unknown transfer ID",
                        ),
                        from,
                    );
                    Step::Wait
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Step::Wait
                }
                Err(e) => return Err(e),
            }
        };
        match step {
            Step::Send => {
                sock.send_to(transfer.packet(), client)?;
            }
            Step::Wait => {}
            Step::Finished => return Ok(transfer.bytes_sent()),
            Step::Failed(reason) => return Err(std::io::Error::other(reason)),
        }
    }
}
