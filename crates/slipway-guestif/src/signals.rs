//! Passing the launcher's signals on to QEMU: SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT are blocked in the launcher, read from a signalfd
//! ([`slipway_host::signals`]) and forwarded to QEMU by a thread of their
//! own, so the launcher survives them and cleans up after QEMU exits.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use slipway_host::signals::Signals;

use crate::error::{Error, Result};

/// Signals passed on to QEMU.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Blocks the forwarded signals in this process (for good: the launcher
/// must survive them to clean up) and passes each one that arrives to
/// QEMU, from a thread of its own; one arriving while there is no QEMU is
/// kept in `pending`.
pub struct SignalForwarder {
    /// QEMU's pid, 0 while there is none.
    pub(crate) target: Arc<AtomicI32>,
    /// The last signal that arrived while there was no QEMU.
    pub(crate) pending: Arc<AtomicI32>,
}

impl SignalForwarder {
    /// Blocks the signals and starts the forwarding thread. Call before
    /// starting other threads, so they inherit the mask.
    pub fn start() -> Result<SignalForwarder> {
        let target = Arc::new(AtomicI32::new(0));
        let pending = Arc::new(AtomicI32::new(0));
        let signals = Signals::new(&FORWARDED)
            .map_err(|e| Error::Process(format!("cannot block signals: {e}")))?;
        let (t, p) = (target.clone(), pending.clone());
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let pid = t.load(Ordering::SeqCst);
                if pid > 0 {
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(pid, sig) };
                } else {
                    p.store(sig, Ordering::SeqCst);
                }
            }
        });
        Ok(SignalForwarder { target, pending })
    }
}
