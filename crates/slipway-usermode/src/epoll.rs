//! Registering a descriptor with the event loop's epoll instance by hand,
//! for event masks `mio` cannot express.
//!
//! mio registers every source edge-triggered and always for reading or
//! writing (`Interest` cannot be empty). Two sources need otherwise: the
//! tap is read level-triggered ([`crate::link::tap`]: no read that only
//! finds it empty), and a TCP flow's socket waits for neither data nor
//! room while the flow already knows of bytes it cannot send yet
//! ([`crate::tcp`]: no wake-up per arriving segment it would only count).
//!
//! mio's Linux selector keeps a source's `Token` in the event's `u64` and
//! reads readiness from its `events`, so a registration made or changed
//! here is reported by `Poll::poll` like one of mio's own, and mio's
//! `deregister` (or closing the descriptor) removes it. Hand-written
//! because mio offers no raw mask and this is one system call.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use mio::{Registry, Token};

/// What [`control`] does with a descriptor's registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Registers a descriptor not yet in the set (`EPOLL_CTL_ADD`).
    Add,
    /// Replaces the mask of a registered one (`EPOLL_CTL_MOD`). The
    /// kernel then reports at once whatever of the new mask is ready, so
    /// readiness that came while it was masked out is not lost.
    Modify,
}

/// Adds `fd` to the registry's epoll set, or changes its registration,
/// with the `EPOLL*` bits `events`, reported under `token`.
pub fn control(
    registry: &Registry,
    op: Op,
    fd: RawFd,
    events: u32,
    token: Token,
) -> io::Result<()> {
    let op = match op {
        Op::Add => libc::EPOLL_CTL_ADD,
        Op::Modify => libc::EPOLL_CTL_MOD,
    };
    let mut event = libc::epoll_event {
        events,
        u64: usize::from(token) as u64,
    };
    // SAFETY: the registry's descriptor is mio's epoll instance, which
    // reads a token from `u64` and readiness from `events` as set here;
    // `epoll_ctl` only reads the event, a valid local, and a descriptor
    // that is not open makes it fail with EBADF, never touch memory.
    let rc = unsafe { libc::epoll_ctl(registry.as_raw_fd(), op, fd, &mut event) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
