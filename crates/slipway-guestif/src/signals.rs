//! Passing the launcher's signals on to QEMU: SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT are blocked in the launcher and forwarded to QEMU by a thread of
//! their own, so the launcher survives them and cleans up after QEMU exits.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

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
        // SAFETY: plain sigset manipulation on local values.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(Error::Process("cannot block signals".into()));
            }
            set
        };
        let set = SigSet(set);
        let (t, p) = (target.clone(), pending.clone());
        std::thread::spawn(move || {
            let set = set;
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: waits for one of the blocked signals.
                if unsafe { libc::sigwait(&set.0, &mut sig) } != 0 {
                    return;
                }
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

/// A signal set moved to the forwarding thread.
struct SigSet(libc::sigset_t);
// SAFETY: sigset_t is plain data.
unsafe impl Send for SigSet {}
