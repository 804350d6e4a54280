//! Signals read from a descriptor: the one way slipway takes signals.
//!
//! [`Signals::new`] blocks the given signals in the calling thread (threads
//! spawned afterwards inherit the mask, so create it before them) and opens
//! a `signalfd` for them, non-blocking and close-on-exec. An event loop
//! registers it with `mio` (it is a [`mio::event::Source`]) and drains
//! [`Signals::pending`] when it is readable; a blocking user iterates
//! [`Signals::forever`] (or calls [`Signals::wait`]) in a thread of its own.
//!
//! A signal arriving before its reader is never lost (it stays pending,
//! blocked), and no handler runs in the middle of other code.
//!
//! Under seccomp: once the descriptor exists, taking signals needs only
//! `read` (and `epoll_ctl`, or `ppoll` for [`Signals::wait`]); create it
//! before the sandbox is applied. epoll reports a signalfd ready only to
//! the process that added it: after a fork, deregister and register it
//! again in the child.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

/// A signalfd for a set of blocked signals.
pub struct Signals {
    fd: OwnedFd,
    /// The calling thread's signal mask before [`Signals::new`].
    previous: libc::sigset_t,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").field("fd", &self.fd).finish()
    }
}

impl Signals {
    /// Blocks `signals` in the calling thread and opens a descriptor that
    /// reads them.
    pub fn new(signals: &[libc::c_int]) -> io::Result<Signals> {
        // SAFETY: plain libc calls on a zeroed, locally owned sigset; the
        // returned descriptor is checked and owned from here on.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                if libc::sigaddset(&mut set, s) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                let e = io::Error::last_os_error();
                libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
                return Err(e);
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
                previous,
            })
        }
    }

    /// Closes the descriptor and gives the calling thread back the signal
    /// mask it had before [`Signals::new`] (in the child of a fork that
    /// does not take the signals itself, say). Signals still pending are
    /// delivered then.
    pub fn restore(self) {
        // SAFETY: sets the calling thread's mask to a saved, valid one.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }

    /// The next pending signal, if any (never blocks).
    pub fn next(&self) -> Option<libc::c_int> {
        let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into a buffer of that size.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
        if usize::try_from(n).ok() != Some(size) {
            return None;
        }
        // SAFETY: the kernel filled the whole struct.
        libc::c_int::try_from(unsafe { info.assume_init() }.ssi_signo).ok()
    }

    /// The signals pending now (for an event loop, when the descriptor is
    /// readable).
    pub fn pending(&self) -> impl Iterator<Item = libc::c_int> + '_ {
        std::iter::from_fn(|| self.next())
    }

    /// Waits for the next signal.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        loop {
            if let Some(sig) = self.next() {
                return Ok(sig);
            }
            // rustix's poll is ppoll, the one poll call of every
            // architecture (poll is x86_64's alone): a seccomp profile
            // allows one name.
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every signal as it arrives, blocking in between (for a thread of its
    /// own); ends only if waiting fails.
    pub fn forever(&self) -> impl Iterator<Item = libc::c_int> + '_ {
        std::iter::from_fn(|| self.wait().ok())
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl mio::event::Source for Signals {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

/// The name of signal `signo` for log lines (`SIGTERM`), or `signal N` for
/// one without a name here.
pub fn signal_name(signo: libc::c_int) -> String {
    let name = match signo {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signo}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `sig` to this thread only (process-directed signals could be
    /// taken by another test thread that does not block them).
    fn raise_here(sig: libc::c_int) {
        // SAFETY: signals the calling thread, which blocks `sig`.
        unsafe { libc::pthread_kill(libc::pthread_self(), sig) };
    }

    #[test]
    fn blocking_and_pending() {
        let s = Signals::new(&[libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        assert_eq!(s.next(), None);
        raise_here(libc::SIGUSR2);
        assert_eq!(s.wait().unwrap(), libc::SIGUSR2);
        raise_here(libc::SIGUSR1);
        assert_eq!(s.pending().collect::<Vec<_>>(), vec![libc::SIGUSR1]);
        assert_eq!(s.next(), None);
        s.restore();
        assert!(!blocked(libc::SIGUSR1) && !blocked(libc::SIGUSR2));
    }

    /// Whether `sig` is blocked in the calling thread.
    fn blocked(sig: libc::c_int) -> bool {
        // SAFETY: reads the calling thread's mask into a local set.
        unsafe {
            let mut now: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
            libc::sigismember(&now, sig) == 1
        }
    }

    #[test]
    fn with_mio() {
        let mut s = Signals::new(&[libc::SIGWINCH]).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(&mut s, mio::Token(7), mio::Interest::READABLE)
            .unwrap();
        raise_here(libc::SIGWINCH);
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == mio::Token(7)));
        assert_eq!(s.pending().collect::<Vec<_>>(), vec![libc::SIGWINCH]);
        poll.registry().deregister(&mut s).unwrap();
    }
}
