//! The tap transport (containers): one Ethernet frame per `read` and
//! `write` on a tap descriptor (IFF_TAP | IFF_NO_PI) opened inside a
//! network namespace (see the slipway-netns crate), many reads per
//! wake-up. A tap opened with `IFF_VNET_HDR` puts a virtio-net header in
//! front of every frame, which lets the kernel hand over (and take) TCP
//! segments of up to 64 KiB with the checksum left undone.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::transport::{Lost, Rx, Transport, VmGone};
use crate::iface::GuestTx;
use crate::wire::framing::{RxChecksum, VNET_HDR_LEN};

/// Frames read from a tap per receive.
const TAP_READ_BATCH: usize = 64;
/// Receive buffer: the largest Ethernet frame at MTU 65520 and its header.
const TAP_RX_LEN: usize = 65536 + VNET_HDR_LEN;

/// A tap device: one frame per read and write, each preceded by a
/// virtio-net header when the tap was opened with `IFF_VNET_HDR`
/// (`vnet`).
pub(super) struct Tap {
    pub fd: Arc<OwnedFd>,
    pub vnet: bool,
}

impl Transport for Tap {
    fn rx_len(&self) -> usize {
        TAP_RX_LEN
    }

    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        registry.register(&mut SourceFd(&self.fd.as_raw_fd()), token, interest)
    }

    fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.fd.as_raw_fd()));
    }

    fn flush(
        &mut self,
        tx: &mut GuestTx,
        _skip: &mut usize,
        writable: &mut bool,
    ) -> Result<usize, VmGone> {
        flush_tap(self.fd.as_raw_fd(), self.vnet, tx, writable)
    }

    /// Reads up to [`TAP_READ_BATCH`] frames, one `read` each (a tap has
    /// no batched read), handing each on as it arrives.
    fn receive(
        &mut self,
        rx: &mut Rx,
        readable: &mut bool,
        mut deliver: impl FnMut(&[u8], RxChecksum),
    ) -> Result<(), Lost> {
        let fd = self.fd.as_raw_fd();
        let skip = if self.vnet { VNET_HDR_LEN } else { 0 };
        for _ in 0..TAP_READ_BATCH {
            // SAFETY: reads into the port's own buffer.
            let n = unsafe { libc::read(fd, rx.buf.as_mut_ptr().cast(), rx.buf.len()) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::WouldBlock => *readable = false,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => {
                        // EBADFD: the device was deleted.
                        tracing::info!(%err, "the tap device went away");
                        return Err(Lost::Closed);
                    }
                }
                break;
            }
            let read = rx.buf.get(..n as usize).unwrap_or_default();
            let (hdr, frame) = read.split_at(skip.min(read.len()));
            let checksum = if self.vnet {
                RxChecksum::from_vnet_hdr(hdr)
            } else {
                RxChecksum::Unverified
            };
            deliver(frame, checksum);
        }
        Ok(())
    }
}

/// Whether the tap `fd` was opened with `IFF_VNET_HDR`; if so, fixes its
/// header length at [`VNET_HDR_LEN`] (the layout [`GuestTx`] writes) and
/// offers the namespace's kernel checksum and TCP segmentation offload
/// (`TUNSETOFFLOAD`), so that it hands over TCP segments of up to 64 KiB
/// with the checksum left undone rather than MTU-sized, summed frames.
pub(super) fn tap_vnet_hdr(fd: RawFd) -> std::io::Result<bool> {
    // SAFETY: all-zero is a valid ifreq; TUNGETIFF fills it in.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF takes an ifreq.
    if unsafe { libc::ioctl(fd, libc::TUNGETIFF as _, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TUNGETIFF filled in the flags member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if i32::from(flags) & libc::IFF_VNET_HDR == 0 {
        return Ok(false);
    }
    let len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads an int.
    if unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // No UDP segmentation (TUN_F_USO*): the stack would have to cut such
    // frames into datagrams itself.
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes the flags as its argument.
    if unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, libc::c_ulong::from(offloads)) } < 0 {
        // Frames still work, MTU-sized and with their checksums.
        let err = std::io::Error::last_os_error();
        tracing::warn!(%err, "the tap refused checksum and segmentation offload");
    }
    Ok(true)
}

/// Writes queued frames to a tap, one `write` each (with its virtio-net
/// header when the tap has them: `vnet`).
fn flush_tap(
    fd: RawFd,
    vnet: bool,
    tx: &mut GuestTx,
    writable: &mut bool,
) -> Result<usize, VmGone> {
    let mut sent = 0;
    while !tx.is_empty() {
        let frame = if vnet {
            tx.frame_with_vnet_hdr(0)
        } else {
            tx.frame(0)
        };
        // SAFETY: writes from a queued frame.
        let rc = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock => {
                    *writable = false;
                    break;
                }
                std::io::ErrorKind::Interrupted => continue,
                _ if err.raw_os_error() == Some(libc::EBADFD) => {
                    tracing::info!("the tap device went away");
                    return Err(VmGone);
                }
                // EIO: the device is down; the frame is lost as on a wire.
                _ => tracing::debug!(%err, "writing a frame to the tap failed; dropped"),
            }
        }
        tx.pop(1);
        sent += 1;
    }
    Ok(sent)
}
