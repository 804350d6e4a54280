//! `tftp=`: the read-only TFTP server at the host address, port 69, in
//! both families (the IPv4 host address and the IPv6 one, `fec0::2` by
//! default).
//!
//! The protocol is [`slipway_tftp`]'s; this module only carries its
//! datagrams inside the stack. As libslirp does, every packet of every
//! transfer comes from port 69 and transfers are told apart by the guest's
//! address and port, so no host socket is involved at all. At most
//! `limits.max_tftp_transfers` transfers (default
//! [`slipway_tftp::MAX_TRANSFERS`]) run at once.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use slipway_tftp::{ErrorCode, Root, Step, Transfer};

use crate::config::StackConfig;
use crate::iface::udp::{self, UDP_HEADER_LEN};
use crate::iface::{Ctx, IPV4_HEADER_LEN, IPV6_HEADER_LEN};

/// Size of a TFTP DATA header.
const DATA_HEADER_LEN: usize = 4;

/// The server: its root and the transfers in progress.
pub(crate) struct TftpService {
    root: Root,
    transfers: Vec<(SocketAddr, Transfer)>,
}

impl TftpService {
    /// Serves files beneath `root` (which must be a directory).
    pub fn new(root: &Path) -> std::io::Result<TftpService> {
        Ok(TftpService {
            root: Root::open(root)?,
            transfers: Vec::new(),
        })
    }

    /// Handles one datagram from `guest` to `server` (the host address of
    /// its family, port 69): a new request, or an ACK or ERROR of a
    /// transfer.
    pub fn on_datagram(
        &mut self,
        ctx: &mut Ctx,
        guest: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
    ) {
        let opcode = payload.get(..2).map(|o| u16::from_be_bytes([o[0], o[1]]));
        if matches!(opcode, Some(1 | 2)) {
            self.on_request(ctx, guest, server, payload);
            return;
        }
        let Some(i) = self.transfers.iter().position(|(g, _)| *g == guest) else {
            let err = slipway_tftp::error_packet(ErrorCode::UnknownTransfer, "unknown transfer");
            udp::emit(ctx, None, server, guest, &err);
            return;
        };
        let step = self.transfers[i].1.on_packet(payload, ctx.now);
        self.apply(ctx, i, step);
    }

    fn on_request(&mut self, ctx: &mut Ctx, guest: SocketAddr, server: SocketAddr, payload: &[u8]) {
        // A new request from the same port replaces the old transfer.
        self.transfers.retain(|(g, _)| *g != guest);
        let ip_header_len = match guest {
            SocketAddr::V4(_) => IPV4_HEADER_LEN,
            SocketAddr::V6(_) => IPV6_HEADER_LEN,
        };
        let max_blksize = ctx.cfg.mtu - ip_header_len - UDP_HEADER_LEN - DATA_HEADER_LEN;
        let max_blksize = u16::try_from(max_blksize).unwrap_or(slipway_tftp::MAX_BLKSIZE);
        let started = slipway_tftp::parse_request(payload)
            .inspect_err(|e| tracing::info!(%guest, error = %e, "TFTP request refused"))
            .and_then(|req| {
                if self.transfers.len() >= ctx.cfg.limits.max_tftp_transfers {
                    tracing::info!(%guest, "TFTP: too many transfers");
                    return Err(slipway_tftp::RequestError {
                        code: ErrorCode::Undefined,
                        message: "too many transfers",
                    });
                }
                let t = Transfer::start(&self.root, &req, max_blksize, ctx.now);
                match &t {
                    Ok(t) => tracing::info!(%guest, file = %req.file, size = t.size(), "TFTP read"),
                    Err(e) => tracing::info!(%guest, file = %req.file, error = %e, "TFTP refused"),
                }
                t
            });
        match started {
            Ok(t) => {
                udp::emit(ctx, None, server, guest, t.packet());
                self.transfers.push((guest, t));
            }
            Err(e) => {
                udp::emit(ctx, None, server, guest, &e.packet());
            }
        }
    }

    fn apply(&mut self, ctx: &mut Ctx, i: usize, step: Step) {
        let guest = self.transfers[i].0;
        let server = server_for(ctx.cfg, guest);
        match step {
            Step::Send => {
                // A full queue toward the guest is a loss like any other:
                // the retransmission timer sends the block again.
                udp::emit(ctx, None, server, guest, self.transfers[i].1.packet());
            }
            Step::Wait => {}
            Step::Finished => {
                let (_, t) = self.transfers.swap_remove(i);
                tracing::info!(%guest, bytes = t.bytes_sent(), "TFTP transfer complete");
            }
            Step::Failed(reason) => {
                self.transfers.swap_remove(i);
                tracing::info!(%guest, %reason, "TFTP transfer abandoned");
            }
        }
    }

    /// Retransmits or abandons the transfers whose timers expired.
    pub fn on_timer(&mut self, ctx: &mut Ctx) {
        let mut i = 0;
        while i < self.transfers.len() {
            if self.transfers[i].1.deadline() <= ctx.now {
                let len = self.transfers.len();
                let step = self.transfers[i].1.on_timeout(ctx.now);
                self.apply(ctx, i, step);
                if self.transfers.len() < len {
                    // swap_remove moved another transfer into slot i.
                    continue;
                }
            }
            i += 1;
        }
    }

    /// When [`TftpService::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.transfers.iter().map(|(_, t)| t.deadline()).min()
    }

    /// Transfers in progress.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.transfers.len()
    }
}

/// The server end of a transfer with `guest`: port 69 at the host address
/// of the guest's family.
fn server_for(cfg: &StackConfig, guest: SocketAddr) -> SocketAddr {
    let ip = match guest {
        SocketAddr::V4(_) => IpAddr::V4(cfg.host),
        SocketAddr::V6(_) => IpAddr::V6(cfg.ipv6.host),
    };
    SocketAddr::new(ip, slipway_tftp::TFTP_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_options;
    use crate::stack::Stack;
    use smoltcp::wire::{Ipv4Packet, UdpPacket};
    use std::net::Ipv4Addr;

    /// A guest datagram from 10.0.2.15:`sport` to the host address's `dport`.
    fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        crate::stack::udp_tests::udp_frame(sport, Ipv4Addr::new(10, 0, 2, 2), dport, payload)
    }

    /// The TFTP payloads the stack queued toward the guest, drained.
    fn replies(stack: &mut Stack) -> Vec<(u16, Vec<u8>)> {
        let tx = stack.guest_tx();
        let out = (0..tx.len())
            .map(|i| {
                let f = tx.frame(i);
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                assert_eq!(udp.src_port(), 69);
                (udp.dst_port(), udp.payload().to_vec())
            })
            .collect();
        tx.clear();
        out
    }

    #[test]
    fn requests_are_served_refused_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![7u8; 600]).unwrap();
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(
            parse_options(&format!("restrict=on,tftp={}", dir.path().display())).unwrap(),
        )
        .unwrap();
        stack.start(poll.registry()).unwrap();
        let now = Instant::now();
        let reg = poll.registry();
        stack.handle_frame(reg, &udp_frame(2000, 69, b"\x00\x01f\x00octet\x00"), now);
        let r = replies(&mut stack);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, 2000);
        assert_eq!(&r[0].1[..4], b"\x00\x03\x00\x01");
        assert_eq!(r[0].1.len(), 4 + 512);
        stack.handle_frame(reg, &udp_frame(2000, 69, b"\x00\x04\x00\x01"), now);
        let r = replies(&mut stack);
        assert_eq!(r[0].1.len(), 4 + 88);
        stack.handle_frame(reg, &udp_frame(2000, 69, b"\x00\x04\x00\x02"), now);
        assert!(replies(&mut stack).is_empty());
        assert_eq!(stack.tftp_active(), 0, "the transfer is over");

        // Outside the root, a write, an ACK for nothing.
        for (req, code) in [
            (&b"\x00\x01../etc/passwd\x00octet\x00"[..], 2u8),
            (b"\x00\x01/etc/passwd\x00octet\x00", 2),
            (b"\x00\x02f\x00octet\x00", 2),
            (b"\x00\x04\x00\x01", 5),
        ] {
            stack.handle_frame(reg, &udp_frame(2001, 69, req), now);
            let r = replies(&mut stack);
            assert_eq!(&r[0].1[..4], &[0, 5, 0, code], "{req:?}");
        }

        // A flood of requests: the first MAX_TRANSFERS run, the rest are refused.
        for port in 0..(slipway_tftp::MAX_TRANSFERS as u16 + 10) {
            stack.handle_frame(
                reg,
                &udp_frame(3000 + port, 69, b"\x00\x01f\x00octet\x00"),
                now,
            );
        }
        let r = replies(&mut stack);
        let refused = r.iter().filter(|(_, p)| p[1] == 5).count();
        assert_eq!(refused, 10);
        assert_eq!(stack.tftp_active(), slipway_tftp::MAX_TRANSFERS);
        // Silent clients are given up on.
        for _ in 0..=slipway_tftp::RETRIES {
            let t = stack.next_deadline().unwrap();
            stack.on_timer(reg, t);
        }
        assert_eq!(stack.tftp_active(), 0);
    }
}
