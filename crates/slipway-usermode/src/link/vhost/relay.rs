//! A relay between QEMU and `vhost-user-backend` that holds back the
//! `SET_VRING_ENABLE` messages QEMU sends before `SET_FEATURES`, and keeps
//! the rings' kick eventfds for the loop (`SET_VRING_KICK`, see
//! [`super::kick`]).
//!
//! QEMU's virtio-net (7.2 and later) enables the rings as soon as the
//! device is realized (`peer_attach`), when the backend has merely
//! *offered* `VHOST_USER_F_PROTOCOL_FEATURES`; the features are set later,
//! when the guest's driver starts the device. rust-vmm's `vhost` (0.18)
//! takes `SET_VRING_ENABLE` only once `SET_FEATURES` acknowledged that
//! bit, and ends the connection otherwise. Without the bit QEMU cannot
//! start a vhost-user NIC at all ("unable to start vhost net: 22"). So
//! QEMU's connection goes through this relay: it passes every message on
//! unchanged (with the descriptors it carries), except that a
//! `SET_VRING_ENABLE` before the first `SET_FEATURES` is held and passed on
//! right after it. Only the last one per ring is held: QEMU with
//! `queues=N` enables and disables rings several times while it realizes
//! the device, and only their final state matters. A `SET_VRING_KICK`
//! with one eventfd for one of our rings goes on with a stand-in in
//! its place, which nobody writes; QEMU's goes to [`Kicks::set`] (one that
//! cannot be polled ends the connection). Any other `SET_VRING_KICK` (no
//! descriptor, several, a ring past the last) goes on unchanged, for the
//! library to judge, and the ring's kick is forgotten.
//! Replies go back as raw bytes (the backend sends no
//! descriptors: no backend channel is offered). Only the 12-byte header is
//! read here (request, flags, size); the messages themselves are parsed
//! by `vhost`. Written by hand because it is that small and neither crate
//! has a hook for it.
//!
//! Bounds: a message body over [`MAX_BODY`] bytes, a held message for a
//! ring past the last queue pair (`super::NUM_QUEUES` rings, so at most
//! that many are held) or without a ring index, descriptors on a held
//! message, or guest memory that could fault when read (`check_memory`)
//! end the connection.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::kick::Kicks;
use super::rx_chains::RingEpochs;
use super::Shared;

/// The vhost-user message header: request, flags, body size (u32 each).
const HEADER: usize = 12;
/// Largest message body passed on (`vhost`'s own limit, 4 KiB).
pub(super) const MAX_BODY: usize = 0x1000;
/// Most descriptors one message carries (`vhost`'s limit).
const MAX_FDS: usize = 32;
const SET_FEATURES: u32 = 2;
const RESET_OWNER: u32 = 4;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const GET_VRING_BASE: u32 = 11;
const RESET_DEVICE: u32 = 34;
/// A memory table's header (region count, padding) and one region (guest
/// address, size, QEMU's address, offset in the file).
const MEM_TABLE_HEADER: usize = 8;
const MEM_REGION: usize = 32;
const SET_VRING_KICK: u32 = 12;
/// `SET_VRING_KICK`'s body: the ring in bits 0-7, bit 8 set when no
/// descriptor comes with it.
const VRING_INDEX_MASK: u64 = 0xff;
const VRING_NOFD: u64 = 0x100;
const SET_VRING_ENABLE: u32 = 18;

fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn errno(e: vmm_sys_util::errno::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

/// Relays until either side closes or QEMU breaks a bound; then shuts
/// both down (the backend's thread then ends, and with it the network).
pub(super) fn run(qemu: UnixStream, backend: UnixStream, shared: &Shared) {
    match relay(&qemu, &backend, shared) {
        Ok(()) => tracing::debug!("vhost-user relay: a side closed"),
        Err(err) => tracing::warn!(%err, "vhost-user connection closed"),
    }
    let _ = qemu.shutdown(std::net::Shutdown::Both);
    let _ = backend.shutdown(std::net::Shutdown::Both);
}

fn relay(qemu: &UnixStream, backend: &UnixStream, shared: &Shared) -> std::io::Result<()> {
    let mut features_set = false;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut replies = vec![0u8; MAX_BODY + HEADER];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: qemu.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: backend.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds of our own.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            let n = (&*backend).read(&mut replies)?;
            if n == 0 {
                return Ok(());
            }
            (&*qemu).write_all(&replies[..n])?;
        }
        if fds[0].revents != 0 {
            let Some((msg, files)) = read_message(qemu)? else {
                return Ok(());
            };
            let request = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
            if request == SET_VRING_ENABLE && !features_set {
                if !files.is_empty() {
                    return Err(invalid("descriptors on SET_VRING_ENABLE"));
                }
                let ring = ring_index(&msg)?;
                held.retain(|m| ring_index(m).ok() != Some(ring));
                held.push(msg);
                continue;
            }
            if request == SET_MEM_TABLE {
                check_memory(&msg[HEADER..], &files)?;
            }
            bump_epochs(request, &msg[HEADER..], &shared.epochs);
            if request == SET_VRING_KICK {
                let stand_in = keep_kick(&msg[HEADER..], files, &shared.kicks)?;
                send(backend, &msg, stand_in.as_slice())?;
                continue;
            }
            let raw: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
            send(backend, &msg, &raw)?;
            if request == SET_FEATURES && !features_set {
                features_set = true;
                for msg in held.drain(..) {
                    send(backend, &msg, &[])?;
                }
            }
        }
    }
}

/// Bumps the epochs of the rings a message is about to change (before it
/// reaches the library, see [`RingEpochs`]): the ring a ring-state or
/// ring-address message names, every ring for new features, a memory
/// table or a reset. Kicks and calls change no ring.
fn bump_epochs(request: u32, body: &[u8], epochs: &RingEpochs) {
    match request {
        SET_VRING_NUM | SET_VRING_ADDR | SET_VRING_BASE | GET_VRING_BASE | SET_VRING_ENABLE => {
            match body.get(..4) {
                Some(index) => epochs
                    .bump(u32::from_le_bytes([index[0], index[1], index[2], index[3]]) as usize),
                None => epochs.bump_all(),
            }
        }
        SET_FEATURES | SET_MEM_TABLE | RESET_OWNER | RESET_DEVICE => epochs.bump_all(),
        _ => {}
    }
}

/// The ring a `SET_VRING_ENABLE` names (its body: ring index, then the
/// state, u32 each), if it is one of ours.
fn ring_index(msg: &[u8]) -> std::io::Result<u32> {
    let Some(index) = msg.get(HEADER..HEADER + 4) else {
        return Err(invalid("SET_VRING_ENABLE without a ring index"));
    };
    let index = u32::from_le_bytes([index[0], index[1], index[2], index[3]]);
    if index as usize >= super::NUM_QUEUES {
        return Err(invalid(
            "SET_VRING_ENABLE for a ring past the last queue pair",
        ));
    }
    Ok(index)
}

/// Takes QEMU's kick eventfd of a `SET_VRING_KICK` (`body`, `files`) for
/// the loop and returns the stand-in to pass on instead; `None` (the
/// message goes on without descriptors: none came, or the library
/// refuses it) for anything but one descriptor for one of our rings.
fn keep_kick(
    body: &[u8],
    mut files: Vec<File>,
    kicks: &Mutex<Kicks>,
) -> std::io::Result<Option<RawFd>> {
    let Ok(value) = <[u8; 8]>::try_from(body) else {
        return Ok(None);
    };
    let value = u64::from_le_bytes(value);
    let ring = (value & VRING_INDEX_MASK) as usize;
    if ring >= super::NUM_QUEUES {
        return Ok(None);
    }
    let mut kicks = kicks.lock().unwrap_or_else(|e| e.into_inner());
    if value & VRING_NOFD != 0 || files.len() != 1 {
        kicks.set(ring, None)?;
        return Ok(None);
    }
    let kick: OwnedFd = files.remove(0).into();
    kicks.set(ring, Some(kick))?;
    Ok(Some(kicks.stand_in()))
}

/// Refuses a memory table whose files could shrink under the mapping or
/// are smaller than their regions: a read past the end of a mapped file
/// is a SIGBUS, which would end slipway (`vm-memory` 0.18 maps
/// `offset + size` of the file without comparing it with the file's
/// size). QEMU's `memory-backend-memfd` seals its memfds against
/// shrinking (`seal=on`, the default); other backends (a file under
/// /dev/shm or hugetlbfs) are refused. A malformed table is left to
/// `vhost`, which refuses it.
fn check_memory(body: &[u8], files: &[File]) -> std::io::Result<()> {
    let Some(count) = body.get(..4) else {
        return Ok(());
    };
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    for (i, file) in files.iter().enumerate().take(count) {
        let at = MEM_TABLE_HEADER + i * MEM_REGION;
        let Some(region) = body.get(at..at + MEM_REGION) else {
            return Ok(());
        };
        let field = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&region[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let (size, offset) = (field(8), field(24));
        let fd = file.as_raw_fd();
        // SAFETY: fcntl and lseek on a descriptor we own.
        let (seals, len) = unsafe {
            (
                libc::fcntl(fd, libc::F_GET_SEALS),
                libc::lseek(fd, 0, libc::SEEK_END),
            )
        };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(invalid(
                "guest memory not sealed against shrinking (use memory-backend-memfd)",
            ));
        }
        let end = offset.checked_add(size);
        if len < 0 || end.is_none_or(|end| end > len as u64) {
            return Err(invalid("a guest memory region past the end of its file"));
        }
    }
    Ok(())
}

/// One whole message from QEMU and the descriptors that came with it;
/// `None` when QEMU closed the connection.
fn read_message(qemu: &UnixStream) -> std::io::Result<Option<(Vec<u8>, Vec<File>)>> {
    let mut msg = vec![0u8; HEADER];
    let mut fds = [-1 as RawFd; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: HEADER,
    }];
    // SAFETY: the iovec points into `msg`, HEADER bytes long.
    let (n, nfds) = unsafe { qemu.recv_with_fds(&mut iov, &mut fds) }.map_err(errno)?;
    // SAFETY: the kernel just gave us these descriptors; each is owned once.
    let files: Vec<File> = fds[..nfds]
        .iter()
        .map(|&fd| unsafe { File::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    (&*qemu).read_exact(&mut msg[n..])?;
    let size = u32::from_le_bytes([msg[8], msg[9], msg[10], msg[11]]) as usize;
    if size > MAX_BODY {
        return Err(invalid("a vhost-user message over 4 KiB"));
    }
    msg.resize(HEADER + size, 0);
    (&*qemu).read_exact(&mut msg[HEADER..])?;
    Ok(Some((msg, files)))
}

/// Sends `msg` to the backend, the descriptors with its first bytes.
fn send(backend: &UnixStream, msg: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let sent = if fds.is_empty() {
        0
    } else {
        backend.send_with_fds(&[msg], fds).map_err(errno)?
    };
    (&*backend).write_all(&msg[sent..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs_after(request: u32, body: &[u8]) -> Vec<u32> {
        let epochs = RingEpochs::new();
        bump_epochs(request, body, &epochs);
        (0..super::super::NUM_QUEUES)
            .map(|r| epochs.get(r))
            .collect()
    }

    #[test]
    fn ring_messages_bump_their_rings_epochs() {
        let ring2 = [2u8, 0, 0, 0, 1, 0, 0, 0];
        for request in [
            SET_VRING_NUM,
            SET_VRING_ADDR,
            SET_VRING_BASE,
            GET_VRING_BASE,
            SET_VRING_ENABLE,
        ] {
            let e = epochs_after(request, &ring2);
            assert_eq!(e[2], 1, "request {request}");
            assert_eq!(e.iter().sum::<u32>(), 1, "request {request}: only ring 2");
            // Without a ring index: every ring.
            assert!(epochs_after(request, &[]).iter().all(|&e| e == 1));
        }
        for request in [SET_FEATURES, SET_MEM_TABLE, RESET_OWNER, RESET_DEVICE] {
            assert!(
                epochs_after(request, &ring2).iter().all(|&e| e == 1),
                "request {request}"
            );
        }
        // Kicks (and a ring past the last) change no ring.
        assert!(epochs_after(SET_VRING_KICK, &ring2).iter().all(|&e| e == 0));
        assert!(epochs_after(SET_VRING_BASE, &[99, 0, 0, 0])
            .iter()
            .all(|&e| e == 0));
    }
}
