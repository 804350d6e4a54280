//! The guest's kicks, polled on slipway's own event loop.
//!
//! A kick is QEMU writing a ring's eventfd (`SET_VRING_KICK`) when the
//! guest's driver notifies the device: TX frames to read, or RX buffers
//! refilled. `vhost-user-backend` would wait for them in its own worker
//! thread, which could only pass each one on to the loop's thread (the
//! stack is single-threaded): a thread wake-up, a `read` and a `write`
//! per kick. On a quiet machine that thread took a third of slipway's CPU
//! samples moving a download (`perf record -g` during `bench/vm.py`'s
//! vhost-user `-R` run; bench/README.md, "vhost-user: kicks on the loop,
//! measured quiet").
//! So [`super::relay`] keeps QEMU's kick eventfds and gives the library
//! a stand-in nobody writes in their place (the library still starts the
//! ring when it gets one): one eventfd made before the sandbox (which
//! allows no new one), sent each time (the library receives a descriptor
//! of its own), and the kicks are registered here with the
//! loop's `mio` registry, under the port's token, readable and writable:
//! an eventfd is always writable, so each kick marks the port both ways
//! and both rings are looked at, as the loop's own wake-up eventfd does.
//!
//! `mio` registers edge-triggered: every write of the eventfd is an event
//! of its own, whether or not the counter was read, so the counter is
//! never read (a `u64` counting single kicks does not fill up). An
//! eventfd that was already written when it is registered reports at
//! once. The relay's thread sets the kicks, the loop's thread registers
//! them when the port is: one mutex between the two.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC, EFD_NONBLOCK};

/// The kick eventfds QEMU gave, per ring, and where they are registered.
pub(super) struct Kicks {
    /// One place per ring.
    fds: Vec<Option<OwnedFd>>,
    /// What the library gets instead: never written.
    stand_in: EventFd,
    /// The loop's registry and the port's token, once the port registered.
    registry: Option<(Registry, Token)>,
}

fn register(registry: &Registry, token: Token, fd: &OwnedFd) -> std::io::Result<()> {
    registry.register(
        &mut SourceFd(&fd.as_raw_fd()),
        token,
        Interest::READABLE | Interest::WRITABLE,
    )
}

impl Kicks {
    /// No kicks yet, for `rings` rings.
    pub fn new(rings: usize) -> std::io::Result<Kicks> {
        Ok(Kicks {
            fds: (0..rings).map(|_| None).collect(),
            stand_in: EventFd::new(EFD_NONBLOCK | EFD_CLOEXEC)?,
            registry: None,
        })
    }

    /// The eventfd to give the library in place of a kick kept here.
    pub fn stand_in(&self) -> RawFd {
        self.stand_in.as_raw_fd()
    }

    /// Replaces ring `ring`'s kick (`None`: the ring has none); registers
    /// the new one if the port is registered. An error (a descriptor
    /// that cannot be polled) leaves the ring without a kick.
    pub fn set(&mut self, ring: usize, fd: Option<OwnedFd>) -> std::io::Result<()> {
        let Some(slot) = self.fds.get_mut(ring) else {
            return Ok(());
        };
        if let (Some(old), Some((registry, _))) = (slot.take(), &self.registry) {
            let _ = registry.deregister(&mut SourceFd(&old.as_raw_fd()));
        }
        if let (Some(fd), Some((registry, token))) = (&fd, &self.registry) {
            register(registry, *token, fd)?;
        }
        *slot = fd;
        Ok(())
    }

    /// Registers every kick (and those set later) under `token`.
    pub fn attach(&mut self, registry: Registry, token: Token) -> std::io::Result<()> {
        for fd in self.fds.iter().flatten() {
            register(&registry, token, fd)?;
        }
        self.registry = Some((registry, token));
        Ok(())
    }

    /// Takes every kick out of the loop.
    pub fn detach(&mut self) {
        if let Some((registry, _)) = self.registry.take() {
            for fd in self.fds.iter().flatten() {
                let _ = registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
    }

    /// How many rings have a kick (for tests).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.fds.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::super::NUM_QUEUES;
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn eventfd() -> (EventFd, OwnedFd) {
        let efd = EventFd::new(EFD_NONBLOCK).unwrap();
        // SAFETY: the eventfd is open for as long as this borrow (it is
        // duplicated at once).
        let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(efd.as_raw_fd()) }
            .try_clone_to_owned()
            .unwrap();
        (efd, dup)
    }

    fn tokens(poll: &mut Poll) -> Vec<(Token, bool, bool)> {
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        events
            .iter()
            .map(|e| (e.token(), e.is_readable(), e.is_writable()))
            .collect()
    }

    /// Every write of a kick, read or not, wakes the loop under the
    /// port's token both ways; a kick written before the port registered
    /// reports at registration; a replaced kick no longer wakes it.
    #[test]
    fn kicks_wake_the_loop_under_the_port_token() {
        let mut poll = Poll::new().unwrap();
        let mut kicks = Kicks::new(NUM_QUEUES).unwrap();
        let (early, early_fd) = eventfd();
        early.write(1).unwrap();
        kicks.set(1, Some(early_fd)).unwrap();
        assert!(tokens(&mut poll).is_empty(), "not registered yet");
        let token = Token(7);
        kicks
            .attach(poll.registry().try_clone().unwrap(), token)
            .unwrap();
        assert_eq!(tokens(&mut poll), [(token, true, true)]);
        assert!(tokens(&mut poll).is_empty(), "edge-triggered");
        for _ in 0..3 {
            early.write(1).unwrap();
            assert_eq!(tokens(&mut poll), [(token, true, true)]);
        }
        let (later, later_fd) = eventfd();
        kicks.set(1, Some(later_fd)).unwrap();
        assert_eq!(kicks.count(), 1);
        // The fresh eventfd is writable: registering it reports once.
        let _ = tokens(&mut poll);
        early.write(1).unwrap();
        assert!(tokens(&mut poll).is_empty(), "the replaced kick is gone");
        later.write(1).unwrap();
        assert_eq!(tokens(&mut poll), [(token, true, true)]);
        kicks.detach();
        later.write(1).unwrap();
        assert!(tokens(&mut poll).is_empty(), "detached");
        // Past the last ring: ignored (the library refuses the message).
        let (_, fd) = eventfd();
        kicks.set(NUM_QUEUES, Some(fd)).unwrap();
        assert_eq!(kicks.count(), 1);
    }

    /// A descriptor that cannot be polled (a regular file) is an error
    /// and leaves the ring without a kick.
    #[test]
    fn an_unpollable_kick_is_refused() {
        let poll = Poll::new().unwrap();
        let mut kicks = Kicks::new(NUM_QUEUES).unwrap();
        kicks
            .attach(poll.registry().try_clone().unwrap(), Token(1))
            .unwrap();
        let file = tempfile::tempfile().unwrap();
        assert!(kicks.set(0, Some(file.into())).is_err());
        assert_eq!(kicks.count(), 0);
    }
}
