//! The datagram transport (`-netdev dgram` on unix sockets): one Ethernet
//! frame per datagram. The bound socket is never connected, so any number
//! of VMs can send to it; each sender (told apart by its bound address) is
//! a VM, and frames to it leave through a socket connected to its address,
//! so the kernel wakes us when that VM's small queue has room again. A
//! datagram VM that went away shows when a frame to it bounces.
//!
//! Frames from every VM arrive on the one bound socket, read by the
//! attachment in batches ([`Attachment::receive_dgram`]); a port's own
//! socket only sends.
//!
//! While one VM is attached and no other socket that could be a VM is in
//! the bound socket's directory ([`super::dir_watch`]), the bound socket
//! is connected to that VM ([`Attachment::sync_dgram_peer`]). The kernel
//! queues at most `net.unix.max_dgram_qlen` (10) datagrams on an
//! unconnected unix socket; one connected to its sender is bounded by the
//! sender's send buffer instead, so QEMU, which sends one frame per
//! `sendto` and retries EAGAIN in a loop while the guest's transmit queue
//! stops, is not held to ten frames per wakeup of ours. Connected, the
//! socket refuses every other sender (EPERM), so it is disconnected as
//! soon as another socket appears next to it, the VM leaves, or the VM's
//! socket is replaced. Leaving a peer discards what the socket holds, so
//! that waits until a read finds the socket empty, or at most
//! [`DGRAM_RESYNC_BATCHES`] batches (a VM that never lets up cannot lock
//! the others out).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use mio::net::UnixDatagram;
use mio::{Interest, Registry, Token};

use super::dir_watch::{file_name, DirWatch};
use super::transport::{Lost, Rx, Transport, VmGone, WRITE_BATCH};
use super::{Attachment, Link, LinkState, Port, MAX_PORTS};
use crate::iface::{DropReason, GuestTx};
use crate::stack::Stack;
use crate::wire::framing::RxChecksum;

/// Datagrams received per `recvmmsg`.
pub(super) const DGRAM_READ_BATCH: usize = 16;
/// Receive buffer per datagram: the largest Ethernet frame at MTU 65520.
pub(super) const DGRAM_SLOT: usize = 65536;
/// Batches read while a change of the bound socket's peer waits for the
/// socket to be empty, before it is made anyway (discarding at most what
/// the socket holds).
pub(super) const DGRAM_RESYNC_BATCHES: usize = 8;

/// One VM behind the bound datagram socket: its frames arrive on that
/// socket; ours leave through `socket`, connected to the VM's address so
/// the kernel says when the VM's queue has room again.
pub(super) struct Dgram {
    socket: UnixDatagram,
    peer: PeerAddr,
}

impl Transport for Dgram {
    fn rx_len(&self) -> usize {
        0
    }

    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        registry.register(&mut self.socket, token, Interest::WRITABLE)
    }

    fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    fn flush(
        &mut self,
        tx: &mut GuestTx,
        _skip: &mut usize,
        writable: &mut bool,
    ) -> Result<usize, VmGone> {
        flush_dgram(self.socket.as_raw_fd(), &self.peer, tx, writable)
    }

    /// Nothing: frames from this VM arrive on the bound socket.
    fn receive(
        &mut self,
        _rx: &mut Rx,
        _readable: &mut bool,
        _deliver: impl FnMut(&[u8], RxChecksum, &[u8]),
    ) -> Result<(), Lost> {
        Ok(())
    }
}

/// A datagram peer's address, kept in the raw form `sendmmsg` takes.
#[derive(Clone, Copy)]
pub(super) struct PeerAddr {
    raw: libc::sockaddr_un,
    len: libc::socklen_t,
}

/// Offset of `sun_path` in `sockaddr_un` (after the family field).
const SUN_PATH_OFFSET: usize = std::mem::size_of::<libc::sa_family_t>();

impl PeerAddr {
    /// The path bytes (without the terminating NUL), empty for an unbound peer.
    fn path_bytes(&self) -> &[u8] {
        let len = (self.len as usize)
            .saturating_sub(SUN_PATH_OFFSET)
            .min(self.raw.sun_path.len());
        // SAFETY: c_char and u8 have the same size and layout.
        let bytes: &[u8] =
            unsafe { std::slice::from_raw_parts(self.raw.sun_path.as_ptr().cast(), len) };
        bytes.split(|&b| b == 0).next().unwrap_or(&[])
    }

    fn display(&self) -> String {
        String::from_utf8_lossy(self.path_bytes()).into_owned()
    }
}

impl Attachment {
    /// Reads a batch of datagrams from the bound datagram socket; each
    /// sender is a VM with a port of its own (a new sender attaches).
    pub(super) fn receive_dgram(
        &mut self,
        registry: &Registry,
        stack: &mut Stack,
        now: Instant,
    ) -> LinkState {
        let Some(socket) = &self.dgram else {
            return LinkState::Unchanged;
        };
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_un; DGRAM_READ_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; DGRAM_READ_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; DGRAM_READ_BATCH] = unsafe { std::mem::zeroed() };
        for (slot, (iov, (msg, name))) in self
            .dgram_rx
            .chunks_exact_mut(DGRAM_SLOT)
            .zip(iovs.iter_mut().zip(msgs.iter_mut().zip(names.iter_mut())))
        {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = slot.len();
            msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_un).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer, iovec and name
        // of this frame, each as large as the header says.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                DGRAM_READ_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock => self.dgram_readable = false,
                std::io::ErrorKind::Interrupted => {}
                _ => {
                    tracing::warn!(%err, "receiving from the VMs failed");
                    self.dgram_readable = false;
                }
            }
            if self.dgram_resync.is_some() {
                // Read out: a change of peer that waited for it is made now.
                self.sync_dgram_peer(false);
            }
            return LinkState::Unchanged;
        }
        if (rc as usize) < DGRAM_READ_BATCH {
            // The socket is drained; the next datagram brings an event.
            self.dgram_readable = false;
        }
        let mut state = LinkState::Unchanged;
        let live = self.live;
        // The buffer leaves the attachment while its frames are delivered.
        let rx = std::mem::take(&mut self.dgram_rx);
        for (n, msg) in msgs.iter().enumerate().take(rc as usize) {
            let from = PeerAddr {
                raw: names[n],
                len: msg.msg_hdr.msg_namelen,
            };
            if from.path_bytes().is_empty() {
                if !self.warned_unnamed_peer {
                    tracing::warn!("datagram from an unbound socket: replies cannot reach it (give QEMU local.path=)");
                    self.warned_unnamed_peer = true;
                }
                continue;
            }
            let Some((port, new)) = self.dgram_port(registry, &from) else {
                continue;
            };
            if new {
                state = LinkState::Connected;
            }
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                stack.count_drop(DropReason::Oversized);
                continue;
            }
            let start = n * DGRAM_SLOT;
            self.deliver(
                port,
                &rx[start..start + msg.msg_len as usize],
                RxChecksum::Unverified,
                &[],
                registry,
                stack,
                now,
            );
        }
        self.dgram_rx = rx;
        if let Some(batches) = self.dgram_resync.as_mut() {
            *batches += 1;
        }
        if self.live != live || self.dgram_resync.is_some() {
            self.sync_dgram_peer(false);
        }
        state
    }

    /// Connects the bound datagram socket to the VM while it is the only
    /// one and no other socket is next to ours, and disconnects it
    /// otherwise (see the module header). A disconnect, or a connect to a
    /// replaced VM socket, waits (unless `now`) until the socket is read
    /// out or [`DGRAM_RESYNC_BATCHES`] batches have passed.
    pub(super) fn sync_dgram_peer(&mut self, now: bool) {
        let (Some(socket), Some(watch)) = (&self.dgram, self.dgram_watch.as_mut()) else {
            return;
        };
        let current = self.dgram_exclusive;
        let touched = match watch.drain(current.as_ref().map(|p| file_name(p.path_bytes()))) {
            Ok(touched) => touched,
            Err(err) => {
                tracing::warn!(%err, "reading the datagram socket directory's events");
                true
            }
        };
        let alone = if self.live == 1 {
            self.ports.iter().flatten().find_map(|p| match &p.link {
                Link::Dgram(d) => Some(d.peer),
                _ => None,
            })
        } else {
            None
        };
        let want = alone.filter(|p| watch.only(file_name(p.path_bytes())));
        let same = match (&want, &current) {
            (Some(w), Some(c)) => w.path_bytes() == c.path_bytes() && !touched,
            (None, None) => true,
            _ => false,
        };
        if same {
            self.dgram_resync = None;
            return;
        }
        if current.is_some() && self.dgram_readable && !now {
            let waited = self.dgram_resync.get_or_insert(0);
            if *waited < DGRAM_RESYNC_BATCHES {
                return;
            }
        }
        self.dgram_resync = None;
        let fd = socket.as_raw_fd();
        match want {
            Some(peer) => {
                // SAFETY: a sockaddr_un of the length given, alive during the call.
                let rc = unsafe {
                    libc::connect(fd, (&peer.raw as *const libc::sockaddr_un).cast(), peer.len)
                };
                if rc == 0 {
                    tracing::debug!(peer = %peer.display(), "datagram socket: connected to its only VM");
                    self.dgram_exclusive = Some(peer);
                    return;
                }
                let err = std::io::Error::last_os_error();
                tracing::debug!(%err, peer = %peer.display(), "datagram socket: connecting to the VM; staying shared");
                if current.is_none() {
                    return;
                }
            }
            None if current.is_none() => return,
            None => {}
        }
        // SAFETY: an all-zero sockaddr is AF_UNSPEC (0), which dissolves
        // the association; the length covers its family field.
        let rc = unsafe {
            let unspec: libc::sockaddr = std::mem::zeroed();
            libc::connect(
                fd,
                &unspec,
                std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            tracing::warn!(%err, "datagram socket: disconnecting from the VM");
            return;
        }
        tracing::debug!("datagram socket: shared again");
        self.dgram_exclusive = None;
    }

    /// Datagram mode: attaches the VM that sent the first waiting datagram
    /// (connects a socket to its address) without consuming the datagram.
    /// Returns true once done, or when there is nothing to do (another
    /// mode, a VM already attached, an unbound sender), false while no
    /// datagram has arrived. Lets the event loop reach the first VM's socket
    /// before a sandbox takes that right away (a switch from root to a user
    /// who may not write to it); a connected socket keeps sending to it.
    pub fn connect_first_peer(&mut self, registry: &Registry) -> bool {
        if self.awaits_vhost() {
            // The vhost-user library's threads start with the connection.
            return false;
        }
        let Some(socket) = &self.dgram else {
            return true;
        };
        if self.live > 0 {
            return true;
        }
        let mut from = PeerAddr {
            // SAFETY: all-zero is a valid sockaddr_un.
            raw: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        };
        let mut byte = 0_u8;
        // SAFETY: a one-byte buffer and an address buffer of the length given.
        let rc = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
                (&mut from.raw as *mut libc::sockaddr_un).cast(),
                &mut from.len,
            )
        };
        if rc < 0 {
            return false;
        }
        if !from.path_bytes().is_empty() && self.dgram_port(registry, &from).is_some() {
            self.sync_dgram_peer(true);
        }
        true
    }

    /// The port of the datagram VM at `from`, attaching it (a socket
    /// connected to its address, for sending) if it is new; `None` when
    /// it cannot be attached.
    fn dgram_port(&mut self, registry: &Registry, from: &PeerAddr) -> Option<(usize, bool)> {
        let known = self.ports.iter().position(|p| {
            matches!(p, Some(Port { link: Link::Dgram(Dgram { peer, .. }), .. })
                if peer.path_bytes() == from.path_bytes())
        });
        if let Some(i) = known {
            return Some((i, false));
        }
        if self.live >= MAX_PORTS {
            tracing::warn!(max = MAX_PORTS, peer = %from.display(), "too many VMs on one link; datagram dropped");
            return None;
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(from.path_bytes()));
        let socket = match UnixDatagram::unbound().and_then(|s| s.connect(path).map(|()| s)) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, peer = %from.display(), "connecting to the VM's datagram socket");
                return None;
            }
        };
        let peer = *from;
        let index = self.add_port(registry, Link::Dgram(Dgram { socket, peer }))?;
        tracing::info!(peer = %from.display(), port = index, vms = self.live, "VM attached (datagram)");
        Some((index, true))
    }
}

/// Watches the directory of the datagram socket at `path` (see
/// [`super::dir_watch`]) under `token`; `None`, and a log line, when it
/// cannot: the socket then stays shared.
pub(super) fn watch_directory(path: &Path, registry: &Registry, token: Token) -> Option<DirWatch> {
    let watch = match DirWatch::open(path) {
        Ok(w) => w,
        Err(err) => {
            tracing::info!(%err, "cannot watch the datagram socket's directory: VMs are limited to 10 queued frames");
            return None;
        }
    };
    let fd = watch.as_raw_fd();
    if let Err(err) = registry.register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE) {
        tracing::info!(%err, "cannot watch the datagram socket's directory: VMs are limited to 10 queued frames");
        return None;
    }
    Some(watch)
}

/// Sends queued frames to `peer`, one datagram each, many per `sendmmsg`.
fn flush_dgram(
    fd: RawFd,
    peer: &PeerAddr,
    tx: &mut GuestTx,
    writable: &mut bool,
) -> Result<usize, VmGone> {
    let mut sent = 0;
    while !tx.is_empty() {
        let n = tx.len().min(WRITE_BATCH);
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut iovs: [libc::iovec; WRITE_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; WRITE_BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let frame = tx.frame(i);
            iovs[i].iov_base = frame.as_ptr() as *mut libc::c_void;
            iovs[i].iov_len = frame.len();
            // No address: the socket is connected to the VM, so there is no
            // path lookup per frame (nor a permission check that a
            // sandboxed process, no longer root, might fail).
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers point at queued frames (only read) and their
        // iovecs, all alive during the call.
        let rc =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            tx.pop(rc as usize);
            sent += rc as usize;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::WouldBlock => {
                *writable = false;
                break;
            }
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                tracing::info!(peer = %peer.display(), "VM's datagram socket is gone");
                return Err(VmGone);
            }
            _ => {
                tracing::debug!(%err, "sending a frame to the VM failed; dropped");
                tx.pop(1);
            }
        }
    }
    Ok(sent)
}
