//! Who may connect to a daemon's unix socket, and how many at once: the
//! connection cap the JSON API (`slipway daemon`) and libvirt's RPC
//! sockets share in their shape.
//!
//! Theory of operation: [`Slots`] counts the connections being served,
//! all of them and those of *other users* (neither root nor the daemon's
//! owner). A connection is admitted while fewer than `max` are open and,
//! for another user, while other users hold fewer than
//! `max - reserved_for_owner`: the reserved slots stay free for the owner
//! and root, so other users together cannot lock them out. An admitted
//! connection holds a [`Slot`], given back when it drops (the connection's
//! thread ends). Only one accept loop admits into a [`Slots`], so the
//! check and the count cannot race with another admission; slots given
//! back meanwhile only make room. Who the peer is comes from the kernel
//! ([`peer_cred`], `SO_PEERCRED`), never from what the client says.

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The connecting process as the kernel saw it when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Its effective uid.
    pub uid: u32,
    /// Its pid (for the log).
    pub pid: i32,
}

/// The credentials of the process at the other end of `stream`
/// (`SO_PEERCRED`).
pub fn peer_cred(stream: &UnixStream) -> std::io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PeerCred {
        uid: cred.uid,
        pid: cred.pid,
    })
}

#[derive(Debug, Default)]
struct Counts {
    all: AtomicUsize,
    others: AtomicUsize,
}

/// A daemon's connection cap, shared by every socket it serves (clones
/// count together).
#[derive(Debug, Clone)]
pub struct Slots {
    max: usize,
    reserved_for_owner: usize,
    owner: u32,
    counts: Arc<Counts>,
}

/// A connection refused by [`Slots::admit`]: the daemon is full for this
/// peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Connections open when it was refused.
    pub open: usize,
    /// The cap ([`Slots::new`]'s `max`).
    pub max: usize,
}

impl Slots {
    /// A cap of `max` connections, `reserved_for_owner` of them only for
    /// `owner` (the daemon's uid) and root.
    pub fn new(max: usize, reserved_for_owner: usize, owner: u32) -> Slots {
        Slots {
            max,
            reserved_for_owner,
            owner,
            counts: Arc::default(),
        }
    }

    /// Whether `uid` is another user: neither root nor the owner.
    pub fn is_other_user(&self, uid: u32) -> bool {
        uid != 0 && uid != self.owner
    }

    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.counts.all.load(Ordering::SeqCst)
    }

    /// A slot for a connection of `uid`, or [`Full`] when the cap (for
    /// another user: the cap less the reserved slots) is reached.
    pub fn admit(&self, uid: u32) -> Result<Slot, Full> {
        let other_user = self.is_other_user(uid);
        let all = self.counts.all.load(Ordering::SeqCst);
        let others = self.counts.others.load(Ordering::SeqCst);
        let full = all >= self.max
            || (other_user && others >= self.max.saturating_sub(self.reserved_for_owner));
        if full {
            return Err(Full {
                open: all,
                max: self.max,
            });
        }
        self.counts.all.fetch_add(1, Ordering::SeqCst);
        if other_user {
            self.counts.others.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Slot {
            counts: self.counts.clone(),
            other_user,
        })
    }
}

/// A connection's place in its [`Slots`], given back on drop.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    other_user: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.all.fetch_sub(1, Ordering::SeqCst);
        if self.other_user {
            self.counts.others.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: u32 = 1000;
    const OTHER: u32 = 1001;

    #[test]
    fn other_users_leave_the_reserved_slots_free() {
        let slots = Slots::new(4, 2, OWNER);
        let a = slots.admit(OTHER).unwrap();
        let _b = slots.admit(OTHER + 1).unwrap();
        assert_eq!(slots.admit(OTHER).unwrap_err(), Full { open: 2, max: 4 });
        let _c = slots.admit(OWNER).unwrap();
        let _d = slots.admit(0).unwrap();
        assert_eq!(slots.open(), 4);
        assert_eq!(slots.admit(0).unwrap_err().open, 4);
        drop(a);
        assert_eq!(slots.open(), 3);
        // The freed slot was another user's: another user may take it.
        let _e = slots.admit(OTHER).unwrap();
    }

    #[test]
    fn clones_count_together() {
        let slots = Slots::new(1, 0, OWNER);
        let other = slots.clone();
        let held = slots.admit(OWNER).unwrap();
        assert!(other.admit(0).is_err());
        drop(held);
        assert!(other.admit(0).is_ok());
    }

    #[test]
    fn peer_cred_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_cred(&a).unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(cred.uid, unsafe { libc::geteuid() });
        assert_eq!(cred.pid, std::process::id() as i32);
    }
}
