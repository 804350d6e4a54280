//! The TFTP server of a virtual network's bridge: the socket side of
//! [`slipway_tftp`]. Requests arrive on port 69 of the bridge address;
//! each transfer gets its own socket (its TID, RFC 1350 section 4), polled
//! by the service's loop like every other socket: a datagram on it drives
//! the protocol core's state machine, and so does its retransmission
//! timer ([`Tftp::expire`]), as the user-mode stack drives the same core.
//! At most [`MAX_TRANSFERS`] run at once; a further request gets an error.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slipway_tftp::{ErrorCode, Root, Step, Transfer, MAX_TRANSFERS, TFTP_PORT};

use super::socket::bound_udp;
use crate::error::{Error, Result};

/// Largest block over a real network: the most a UDP datagram carries.
const MAX_BLKSIZE: u16 = slipway_tftp::MAX_BLKSIZE;

/// One transfer: the client, the transfer's own socket, the protocol state.
struct Active {
    client: SocketAddr,
    sock: UdpSocket,
    transfer: Transfer,
    /// The file's name (for the log).
    file: String,
}

/// The listening socket and the transfers in progress, in slots whose
/// index makes their poll token ([`super::TFTP_TRANSFER_BASE`] + slot).
pub(super) struct Tftp {
    socket: UdpSocket,
    root: Root,
    device: String,
    transfers: Vec<Option<Active>>,
}

impl Tftp {
    /// Binds port 69 of `addr` on `device`, serving files under `root`.
    pub(super) fn open(addr: IpAddr, device: &str, root: &Path) -> Result<Tftp> {
        if !root.is_dir() {
            return Err(Error::Service(format!(
                "TFTP root {} is not a directory",
                root.display()
            )));
        }
        let root = Root::open(root).map_err(|e| Error::io("cannot open", root, e))?;
        let socket = bound_udp(SocketAddr::new(addr, TFTP_PORT), Some(device), false)?;
        Ok(Tftp {
            socket,
            root,
            device: device.to_string(),
            transfers: (0..MAX_TRANSFERS).map(|_| None).collect(),
        })
    }

    /// The listening socket (to register with the poller).
    pub(super) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Starts a transfer for every request waiting.
    pub(super) fn listener_ready(&mut self, registry: &Registry) {
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
            let Some(slot) = self.transfers.iter().position(Option::is_none) else {
                let _ = self.socket.send_to(
                    &slipway_tftp::error_packet(ErrorCode::Undefined, "too many transfers"),
                    client,
                );
                continue;
            };
            let sock = match self
                .socket
                .local_addr()
                .map_err(|e| Error::io("cannot read the address of", "the TFTP socket", e))
                .and_then(|local| {
                    bound_udp(SocketAddr::new(local.ip(), 0), Some(&self.device), false)
                }) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("TFTP: no socket for {client}: {e}");
                    continue;
                }
            };
            let transfer = match Transfer::start(&self.root, &req, MAX_BLKSIZE, Instant::now()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!("TFTP: {} to {client}: {e}", req.file);
                    let _ = sock.send_to(&e.packet(), client);
                    continue;
                }
            };
            let token = Token(super::TFTP_TRANSFER_BASE + slot);
            let fd = sock.as_raw_fd();
            if let Err(e) = registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
                tracing::warn!("TFTP: cannot poll the socket for {client}: {e}");
                continue;
            }
            let _ = sock.send_to(transfer.packet(), client);
            self.transfers[slot] = Some(Active {
                client,
                sock,
                transfer,
                file: req.file,
            });
        }
    }

    /// Takes the datagrams waiting on the socket of transfer `slot`.
    pub(super) fn transfer_ready(&mut self, registry: &Registry, slot: usize) {
        let mut buf = [0u8; 1024];
        loop {
            let Some(Some(t)) = self.transfers.get_mut(slot) else {
                return;
            };
            let step = match t.sock.recv_from(&mut buf) {
                Ok((len, from)) if from == t.client => {
                    t.transfer.on_packet(&buf[..len], Instant::now())
                }
                Ok((_, from)) => {
                    // Another port is not this transfer (RFC 1350 section 4).
                    let _ = t.sock.send_to(
                        &slipway_tftp::error_packet(
                            ErrorCode::UnknownTransfer,
                            "unknown transfer ID",
                        ),
                        from,
                    );
                    Step::Wait
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => Step::Failed(e.to_string()),
            };
            self.apply(registry, slot, step);
        }
    }

    /// Retransmits or abandons the transfers whose timers expired.
    pub(super) fn expire(&mut self, registry: &Registry, now: Instant) {
        for slot in 0..self.transfers.len() {
            let step = match &mut self.transfers[slot] {
                Some(t) if t.transfer.deadline() <= now => t.transfer.on_timeout(now),
                _ => continue,
            };
            self.apply(registry, slot, step);
        }
    }

    /// When [`Tftp::expire`] next needs to run.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.transfers
            .iter()
            .flatten()
            .map(|t| t.transfer.deadline())
            .min()
    }

    fn apply(&mut self, registry: &Registry, slot: usize, step: Step) {
        let Some(t) = &mut self.transfers[slot] else {
            return;
        };
        match step {
            Step::Send => match t.sock.send_to(t.transfer.packet(), t.client) {
                Ok(_) => return,
                Err(e) => tracing::info!("TFTP: {} to {}: {e}", t.file, t.client),
            },
            Step::Wait => return,
            Step::Finished => tracing::info!(
                "TFTP: sent {} ({} bytes) to {}",
                t.file,
                t.transfer.bytes_sent(),
                t.client
            ),
            Step::Failed(reason) => tracing::info!("TFTP: {} to {}: {reason}", t.file, t.client),
        }
        let fd = t.sock.as_raw_fd();
        let _ = registry.deregister(&mut SourceFd(&fd));
        self.transfers[slot] = None;
    }
}
