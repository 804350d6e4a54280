//! The tap transport (containers): one Ethernet frame per `read` and
//! `write` on a tap descriptor (IFF_TAP | IFF_NO_PI) opened inside a
//! network namespace (see the slipway-netns crate), many reads per
//! wake-up. A tap opened with `IFF_VNET_HDR` puts a virtio-net header in
//! front of every frame, which lets the kernel hand over (and take) TCP
//! segments and runs of UDP datagrams (`TUN_F_USO4`/`TUN_F_USO6`, when
//! the kernel offers them: [`negotiate_offloads`]) of up to 64 KiB with
//! the checksum left undone.
//!
//! **Reading without a read that finds the tap empty.** A tap hands over
//! one frame per `read`, so no read says "that was the last one": an
//! edge-triggered link must read until `EAGAIN`, one system call per
//! wake-up that moves nothing (half the tap reads of a UDP
//! request/response exchange, bench/README.md). The tap is therefore
//! registered level-triggered for reading, by hand (`epoll_ctl` on the
//! registry's descriptor: mio registers every source edge-triggered), so
//! a receive may stop after any number of frames: if frames are left, the
//! next poll reports the tap again at once. How many frames to read
//! before stopping without probing ([`ReadBudget`]) follows the traffic:
//! the number the last drained receive found (one, in a ping-pong),
//! doubled whenever the poll right after a receive that stopped at its
//! budget reports the tap again (frames were left: a burst), up to
//! [`TAP_READ_BATCH`]. A receive that reads a whole batch at the largest
//! budget reads on in the same wake-up, until `EAGAIN`, as before.
//!
//! Writes are watched for room only after one was refused (a tap's
//! default send buffer makes that rare): level-triggered, a writable tap
//! would wake the loop all the time, so until the room comes back the tap
//! is registered edge-triggered for both (`EPOLL_CTL_MOD` reports what is
//! ready at once, so nothing is missed), read until `EAGAIN` as an
//! edge-triggered link must, and level-triggered again after. Nor does it
//! spin while the stack holds off reading because its queue toward the
//! guest is nearly full: that queue empties by writing to the tap, which
//! either succeeds at once (and the loop goes on without waiting anyway)
//! or is refused (and the tap is edge-triggered until the room comes).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use mio::{Registry, Token};

use super::transport::{Lost, Rx, Transport, VmGone};
use crate::epoll;
use crate::iface::GuestTx;
use crate::wire::framing::{RxChecksum, VNET_HDR_LEN};

/// Frames read from a tap per receive.
const TAP_READ_BATCH: usize = 64;
/// Receive buffer: the largest Ethernet frame at MTU 65520 and its header.
const TAP_RX_LEN: usize = 65536 + VNET_HDR_LEN;

/// How many frames a receive from the level-triggered tap reads before it
/// stops without a read that finds the tap empty (see the module header).
#[derive(Debug)]
struct ReadBudget {
    /// Frames the next receive reads at most, 1 to [`TAP_READ_BATCH`].
    frames: usize,
    /// The poll in whose wake-up the last receive stopped at its budget,
    /// below the largest, with frames perhaps left.
    stopped_at: Option<u64>,
}

impl ReadBudget {
    fn new() -> ReadBudget {
        ReadBudget {
            frames: TAP_READ_BATCH,
            stopped_at: None,
        }
    }

    /// The budget of a receive in the wake-up of poll `poll`: doubled when
    /// the last receive stopped at its budget in the wake-up right before
    /// (the level-triggered tap was reported again at once: frames were
    /// left).
    fn start(&mut self, poll: u64) -> usize {
        if self
            .stopped_at
            .take()
            .is_some_and(|at| at.wrapping_add(1) == poll)
        {
            self.frames = (self.frames * 2).min(TAP_READ_BATCH);
        }
        self.frames
    }

    /// Ends a receive in the wake-up of poll `poll` that read `read`
    /// frames and found the tap empty (`drained`) or stopped at its
    /// budget. Returns whether to read on in this wake-up: only after a
    /// whole batch at the largest budget (otherwise the poll reports what
    /// is left).
    fn end(&mut self, poll: u64, read: usize, drained: bool) -> bool {
        if drained {
            self.frames = read.clamp(1, TAP_READ_BATCH);
            return false;
        }
        if self.frames < TAP_READ_BATCH {
            self.stopped_at = Some(poll);
            return false;
        }
        true
    }
}

/// A tap device: one frame per read and write, each preceded by a
/// virtio-net header when the tap was opened with `IFF_VNET_HDR`
/// (`vnet`).
pub(super) struct Tap {
    pub fd: Arc<OwnedFd>,
    pub vnet: bool,
    /// Registered level-triggered for reading only (the usual case), or
    /// edge-triggered for reading and writing while a refused write
    /// waits for room.
    level: bool,
    budget: ReadBudget,
    /// The number of the poll whose wake-up this is
    /// ([`Tap::set_poll`]).
    poll: u64,
}

impl Tap {
    /// A tap (`fd`, opened non-blocking) with a virtio-net header on
    /// every frame if `vnet`.
    pub fn new(fd: Arc<OwnedFd>, vnet: bool) -> Tap {
        Tap {
            fd,
            vnet,
            level: true,
            budget: ReadBudget::new(),
            poll: 0,
        }
    }

    /// Tells the tap which poll's wake-up the next receives belong to
    /// (the attachment counts the event loop's polls).
    pub fn set_poll(&mut self, poll: u64) {
        self.poll = poll;
    }

    /// Watches for room to write (`on`: edge-triggered for reading and
    /// writing) or not (level-triggered for reading only).
    pub fn watch_writable(
        &mut self,
        registry: &Registry,
        token: Token,
        on: bool,
    ) -> std::io::Result<()> {
        self.level = !on;
        self.epoll_ctl(registry, epoll::Op::Modify, token)
    }

    /// Adds or changes (`op`) the tap's registration, as [`Tap::level`]
    /// says, with `token` as mio's events carry it.
    fn epoll_ctl(&self, registry: &Registry, op: epoll::Op, token: Token) -> std::io::Result<()> {
        let events = if self.level {
            libc::EPOLLIN | libc::EPOLLRDHUP
        } else {
            libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT | libc::EPOLLET
        };
        epoll::control(registry, op, self.fd.as_raw_fd(), events as u32, token)
    }
}

impl Transport for Tap {
    fn rx_len(&self) -> usize {
        TAP_RX_LEN
    }

    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        self.level = true;
        self.epoll_ctl(registry, epoll::Op::Add, token)
    }

    fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut mio::unix::SourceFd(&self.fd.as_raw_fd()));
    }

    fn flush(
        &mut self,
        tx: &mut GuestTx,
        _skip: &mut usize,
        writable: &mut bool,
    ) -> Result<usize, VmGone> {
        flush_tap(self.fd.as_raw_fd(), self.vnet, tx, writable)
    }

    /// Reads up to [`TAP_READ_BATCH`] frames (level-triggered: up to the
    /// [`ReadBudget`]), one `read` each (a tap has no batched read),
    /// handing each on as it arrives.
    fn receive(
        &mut self,
        rx: &mut Rx,
        readable: &mut bool,
        mut deliver: impl FnMut(&[u8], RxChecksum, &[u8]),
    ) -> Result<(), Lost> {
        let fd = self.fd.as_raw_fd();
        let skip = if self.vnet { VNET_HDR_LEN } else { 0 };
        let limit = if self.level {
            self.budget.start(self.poll)
        } else {
            TAP_READ_BATCH
        };
        let mut read = 0;
        let mut drained = false;
        while read < limit {
            // SAFETY: reads into the port's own buffer.
            let n = unsafe { libc::read(fd, rx.buf.as_mut_ptr().cast(), rx.buf.len()) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::WouldBlock => drained = true,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => {
                        // EBADFD: the device was deleted.
                        tracing::info!(%err, "the tap device went away");
                        return Err(Lost::Closed);
                    }
                }
                break;
            }
            read += 1;
            let read = rx.buf.get(..n as usize).unwrap_or_default();
            let (hdr, frame) = read.split_at(skip.min(read.len()));
            let checksum = if self.vnet {
                RxChecksum::from_vnet_hdr(hdr)
            } else {
                RxChecksum::Unverified
            };
            // The buffer is read into again for the next frame.
            deliver(frame, checksum, &[]);
        }
        // Edge-triggered, only `EAGAIN` ends the reading.
        let more = if self.level {
            self.budget.end(self.poll, read, drained)
        } else {
            !drained
        };
        if !more {
            *readable = false;
        }
        Ok(())
    }
}

/// Whether the tap `fd` was opened with `IFF_VNET_HDR`; if so, fixes its
/// header length at [`VNET_HDR_LEN`] (the layout [`GuestTx`] writes) and
/// offers the namespace's kernel checksum, TCP and UDP segmentation
/// offload ([`negotiate_offloads`]), so that it hands over TCP segments
/// and runs of UDP datagrams of up to 64 KiB with the checksum left
/// undone rather than MTU-sized, summed frames.
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
    negotiate_offloads(|flags| {
        // SAFETY: TUNSETOFFLOAD takes the flags as its argument.
        if unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, libc::c_ulong::from(flags)) } < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    });
    Ok(true)
}

/// Offloads the tap's reader (the stack) takes, best first: checksum, TCP
/// segmentation and UDP segmentation (`TUN_F_USO4`/`TUN_F_USO6`, Linux
/// 6.2+: the stack cuts such frames into datagrams, `iface::udp`); then
/// the same without UDP for an older kernel; then nothing.
const OFFLOAD_CHOICES: [libc::c_uint; 2] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_USO4 | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
];

/// Offers the tap's kernel the offloads of [`OFFLOAD_CHOICES`] in turn
/// through `set` (a `TUNSETOFFLOAD`), until one is taken; returns the
/// flags taken, 0 when every choice was refused (frames still work,
/// MTU-sized and with their checksums). A kernel before 6.2 refuses the
/// UDP flags with `EINVAL`.
fn negotiate_offloads(mut set: impl FnMut(libc::c_uint) -> std::io::Result<()>) -> libc::c_uint {
    for flags in OFFLOAD_CHOICES {
        match set(flags) {
            Ok(()) => {
                let uso = flags & libc::TUN_F_USO4 != 0;
                tracing::debug!(flags, uso, "tap offloads negotiated");
                return flags;
            }
            Err(err) => tracing::debug!(%err, flags, "the tap refused these offloads"),
        }
    }
    tracing::warn!("the tap refused checksum and segmentation offload");
    0
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One receive from a level-triggered tap holding `queued` frames, in
    /// the wake-up of poll `poll`, as [`Tap::receive`] drives the budget:
    /// the `read`s it makes (one more than the frames when it finds the
    /// tap empty) and whether it reads on in this wake-up.
    fn receive(budget: &mut ReadBudget, poll: u64, queued: &mut usize) -> (usize, bool) {
        let limit = budget.start(poll);
        let frames = limit.min(*queued);
        *queued -= frames;
        let drained = frames < limit;
        let more = budget.end(poll, frames, drained);
        (frames + usize::from(drained), more)
    }

    /// A ping-pong (one frame per tap wake-up, the reply's wake-up in
    /// between) settles at one read per frame: no read finds the tap
    /// empty once the first has.
    #[test]
    fn a_ping_pong_reads_each_frame_once() {
        let mut budget = ReadBudget::new();
        let mut reads = 0;
        for poll in (1..=200).step_by(2) {
            let mut queued = 1;
            let (r, more) = receive(&mut budget, poll, &mut queued);
            assert!(!more);
            assert_eq!(queued, 0);
            reads += r;
        }
        // The first receive reads twice (its budget starts at a batch).
        assert_eq!(reads, 100 + 1);
    }

    /// A burst left in the tap: each wake-up's receive stops at its
    /// budget, the level-triggered poll reports the rest at once and the
    /// budget doubles up to a batch; every frame is read, with no more
    /// wake-ups than the doubling needs, and the budget follows a quieter
    /// stream back down.
    #[test]
    fn a_burst_doubles_the_budget_and_is_read_whole() {
        let mut budget = ReadBudget::new();
        let mut one = 1;
        receive(&mut budget, 1, &mut one);
        assert_eq!(budget.frames, 1);
        let mut queued = 1000;
        let mut reads = 0;
        let mut poll = 3;
        while queued > 0 {
            loop {
                let (r, more) = receive(&mut budget, poll, &mut queued);
                reads += r;
                if !more {
                    break;
                }
            }
            poll += 1;
        }
        // Budgets 1, 2, 4, ..., 32 (63 frames), then whole batches of 64
        // read on within the seventh wake-up, the last one 41 frames and
        // a read that found the tap empty.
        assert_eq!(poll - 3, 7, "wake-ups");
        assert_eq!(reads, 1000 + 1);
        assert_eq!(budget.frames, 41);
        // A ping-pong again: back to one frame at once.
        let mut one = 1;
        receive(&mut budget, poll + 1, &mut one);
        assert_eq!(budget.frames, 1);
    }

    /// A kernel that takes everything gets UDP segmentation offered.
    #[test]
    fn offloads_include_udp_segmentation_when_the_kernel_takes_it() {
        let mut offered = Vec::new();
        let taken = negotiate_offloads(|flags| {
            offered.push(flags);
            Ok(())
        });
        assert_eq!(offered.len(), 1);
        for flag in [
            libc::TUN_F_CSUM,
            libc::TUN_F_TSO4,
            libc::TUN_F_TSO6,
            libc::TUN_F_USO4,
            libc::TUN_F_USO6,
        ] {
            assert_ne!(taken & flag, 0, "{flag:#x} in {taken:#x}");
        }
    }

    /// A kernel before 6.2 refuses the USO flags (EINVAL): checksum and
    /// TCP segmentation are still taken; a tap that refuses all keeps
    /// working without.
    #[test]
    fn offloads_fall_back_without_udp_then_to_none() {
        let old_kernel = |flags: libc::c_uint| {
            if flags & (libc::TUN_F_USO4 | libc::TUN_F_USO6) != 0 {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        };
        let taken = negotiate_offloads(old_kernel);
        assert_eq!(
            taken,
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
        );
        let mut tries = 0;
        let none = negotiate_offloads(|_| {
            tries += 1;
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        });
        assert_eq!((none, tries), (0, OFFLOAD_CHOICES.len()));
    }
}
