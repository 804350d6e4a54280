//! Adaptive, bounded busy polling of the event loop (`--busy-poll-us`).
//!
//! Theory of operation: a request/response exchange through the stack is
//! two wake-ups of the stack per transaction (the request from one side,
//! the answer from the other), and on an idle vCPU each wake-up from a
//! blocking `epoll_wait` costs tens of microseconds. After a batch that
//! moved data, the loop may instead poll with a zero timeout for a short
//! window, so an answer that comes within it is picked up without
//! sleeping. The window restarts at every batch that moves data and ends
//! `window` after the last one: an idle stack never spins, and a busy one
//! spins only between batches that are at most `window` apart. The cost
//! is CPU time (up to `window` of spinning after every exchange), so it is
//! off by default (a zero window).

use std::time::{Duration, Instant};

/// Most a busy-poll window may be: beyond this it is a spinning process,
/// not a shortened wake-up.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// Whether the event loop polls without blocking, and until when.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    /// How long after the last batch that moved data the loop keeps
    /// polling without blocking (zero: never).
    window: Duration,
    /// The end of the current window, while one is open.
    until: Option<Instant>,
}

impl BusyPoll {
    /// A busy poll of `window` (zero: off), capped at [`MAX_BUSY_POLL`].
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window: window.min(MAX_BUSY_POLL),
            until: None,
        }
    }

    /// Called after each batch (`moved`: whether it moved data): whether
    /// the next poll should return at once instead of blocking.
    pub(crate) fn after_batch(&mut self, moved: bool, now: Instant) -> bool {
        if self.window.is_zero() {
            return false;
        }
        if moved {
            self.until = Some(now + self.window);
        }
        match self.until {
            Some(until) if now < until => true,
            _ => {
                self.until = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn off_never_spins() {
        let mut b = BusyPoll::new(Duration::ZERO);
        let t = Instant::now();
        assert!(!b.after_batch(true, t));
        assert!(!b.after_batch(false, t));
    }

    #[test]
    fn idle_never_spins() {
        let mut b = BusyPoll::new(30 * US);
        let t = Instant::now();
        for i in 0..10 {
            assert!(!b.after_batch(false, t + i * 100 * US));
        }
    }

    #[test]
    fn spins_for_the_window_after_the_last_batch_that_moved_data() {
        let mut b = BusyPoll::new(30 * US);
        let t = Instant::now();
        assert!(b.after_batch(true, t));
        assert!(b.after_batch(false, t + 10 * US));
        assert!(b.after_batch(false, t + 29 * US));
        // More data restarts the window.
        assert!(b.after_batch(true, t + 29 * US));
        assert!(b.after_batch(false, t + 58 * US));
        assert!(!b.after_batch(false, t + 59 * US));
        // Once over, an empty batch does not reopen it.
        assert!(!b.after_batch(false, t + 60 * US));
    }

    #[test]
    fn window_is_capped() {
        let mut b = BusyPoll::new(Duration::from_secs(5));
        let t = Instant::now();
        assert!(b.after_batch(true, t));
        assert!(b.after_batch(false, t + MAX_BUSY_POLL - US));
        assert!(!b.after_batch(false, t + MAX_BUSY_POLL));
    }
}
