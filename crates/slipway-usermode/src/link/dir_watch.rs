//! Which unix sockets might be VMs in the directory of the bound datagram
//! socket (`--dgram DIR/s.sock`), kept up to date with inotify.
//!
//! Why: a unix datagram socket that is not connected queues at most
//! `net.unix.max_dgram_qlen` (10) datagrams from its senders, whatever its
//! buffer sizes; past that QEMU's `sendto` gets EAGAIN, and QEMU (whose
//! own socket is not connected, so `poll` calls it writable at once)
//! retries in a loop while virtio-net stops the guest's transmit queue. A
//! socket connected to its sender skips that limit (the kernel then
//! bounds the sender by its own send buffer, about 90 Ethernet frames by
//! default, and `poll` tells it when there is room). But a connected
//! socket takes datagrams from its peer only: any other VM's `sendto`
//! gets EPERM, and nothing tells us it tried. So the attachment connects
//! its bound socket to the VM only while that VM is alone and no other
//! socket that could be a VM exists next to it; this module tells which.
//!
//! Theory: VMs must bind their address in the directory of the stack's
//! socket (the sandbox's mount namespace holds nothing else, see the
//! README), so every VM that could appear creates a name there first,
//! normally long before its guest sends its first frame (QEMU binds at
//! start). The watch starts with the sockets the directory holds and adds
//! each name created or moved in (`IN_CREATE`, `IN_MOVED_TO`), drops each
//! name deleted or moved out, and forgets a name that is opened
//! (`IN_OPEN`: a regular file such as a log, since a socket cannot be
//! opened). Directories are ignored. When the directory itself moves or
//! goes away (the kernel says so once nothing pins it; our own socket
//! does) or the kernel's event queue overflows, or more than
//! [`MAX_WATCHED_NAMES`] names are tracked, the names cannot be trusted
//! any more and [`DirWatch::only`] answers false for good: the bound
//! socket then stays unconnected (slower, never exclusive).
//!
//! Hand-written on `libc` (no inotify crate in the dependency tree): four
//! calls and one fixed event layout.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Names tracked at most; past this the watch gives up (see the module
/// header): a local user filling the directory can only make the link
/// slower, never exclusive.
pub(super) const MAX_WATCHED_NAMES: usize = 1024;

/// Events the watch asks for on the directory.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_OPEN
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Events after which the names are no longer known.
const LOST: u32 =
    libc::IN_Q_OVERFLOW | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED;

/// The inotify watch on the directory of the bound datagram socket and
/// the names in it that may be other VMs' sockets.
pub(super) struct DirWatch {
    fd: OwnedFd,
    /// The bound socket's own file name (never a VM).
    own: OsString,
    names: BTreeSet<OsString>,
    /// The names can no longer be trusted (see the module header).
    lost: bool,
}

impl DirWatch {
    /// Starts watching the directory of `socket` (already bound) and
    /// lists the sockets it holds, `socket` itself left out.
    pub(super) fn open(socket: &Path) -> std::io::Result<DirWatch> {
        let dir = match socket.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let own = socket.file_name().unwrap_or_default().to_owned();
        // SAFETY: no pointer arguments; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor inotify_init1 just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c_dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a NUL-terminated path alive during the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_dir.as_ptr(), MASK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Listed after the watch starts, so no socket bound meanwhile is missed.
        let mut watch = DirWatch {
            fd,
            own,
            names: BTreeSet::new(),
            lost: false,
        };
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type().is_ok_and(|t| t.is_socket()) {
                watch.add(entry.file_name());
            }
        }
        Ok(watch)
    }

    /// The inotify descriptor, for the event loop.
    pub(super) fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every waiting event and updates the names; true when one of
    /// them created, removed or moved the name `peer` (a socket file name:
    /// the VM there may have been replaced).
    pub(super) fn drain(&mut self, peer: Option<&OsStr>) -> std::io::Result<bool> {
        let mut touched = false;
        // u64s: aligned for the event headers (read unaligned anyway).
        let mut buf = [0_u64; 1024];
        loop {
            // SAFETY: the buffer is writable for its whole size.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    std::mem::size_of_val(&buf),
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                return match err.kind() {
                    std::io::ErrorKind::WouldBlock => Ok(touched),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => {
                        self.lost = true;
                        Err(err)
                    }
                };
            }
            // SAFETY: the first n bytes were written by read; u8 has no invalid values.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            touched |= self.apply(bytes, peer);
        }
    }

    /// Applies a buffer of inotify events; true when one named `peer`.
    fn apply(&mut self, mut bytes: &[u8], peer: Option<&OsStr>) -> bool {
        let mut touched = false;
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        while bytes.len() >= HEADER {
            // SAFETY: HEADER bytes are there; any bit pattern is a valid
            // inotify_event (plain integers).
            let event: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let end = HEADER.saturating_add(event.len as usize).min(bytes.len());
            let name = bytes[HEADER..end].split(|&b| b == 0).next().unwrap_or(&[]);
            let name = OsStr::from_bytes(name);
            bytes = &bytes[end..];
            if event.mask & LOST != 0 {
                if !self.lost {
                    tracing::debug!(
                        "datagram socket directory: watch lost; the socket stays shared"
                    );
                }
                self.lost = true;
            } else if event.mask & libc::IN_ISDIR != 0 || name.is_empty() {
            } else if event.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                touched |= Some(name) == peer;
                self.add(name.to_owned());
            } else if event.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                touched |= Some(name) == peer;
                self.names.remove(name);
            } else if event.mask & libc::IN_OPEN != 0 {
                self.names.remove(name);
            }
        }
        touched
    }

    fn add(&mut self, name: OsString) {
        if name == self.own {
            return;
        }
        if self.names.len() >= MAX_WATCHED_NAMES && !self.names.contains(&name) {
            if !self.lost {
                tracing::warn!(
                    max = MAX_WATCHED_NAMES,
                    "datagram socket directory: too many names to follow; the socket stays shared"
                );
            }
            self.lost = true;
            return;
        }
        self.names.insert(name);
    }

    /// Whether the only possible VM socket in the directory is the one
    /// named `peer` (see [`file_name`]) or there is none.
    pub(super) fn only(&self, peer: &OsStr) -> bool {
        !self.lost && self.names.iter().all(|n| n == peer)
    }

    /// The names followed, for tests.
    #[cfg(test)]
    pub(super) fn names(&self) -> Vec<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        self.names.iter().map(|n| n.clone().into_vec()).collect()
    }
}

/// The file name of a VM's socket address: how [`DirWatch`] names it (a
/// VM bound outside the directory counts by its file name too).
pub(super) fn file_name(address: &[u8]) -> &OsStr {
    Path::new(OsStr::from_bytes(address))
        .file_name()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("slipway-dirwatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn follows_sockets_and_ignores_files_and_directories() {
        let d = dir("follow");
        let ours = d.join("s.sock");
        let _s = std::os::unix::net::UnixDatagram::bind(&ours).unwrap();
        let _early = std::os::unix::net::UnixDatagram::bind(d.join("early.sock")).unwrap();
        std::fs::write(d.join("old.log"), b"x").unwrap();
        let mut w = DirWatch::open(&ours).unwrap();
        assert_eq!(w.names(), vec![b"early.sock".to_vec()]);
        let early = d.join("early.sock");
        assert!(w.only(file_name(early.as_os_str().as_bytes())));
        assert!(!w.only(file_name(b"/elsewhere/vm.sock")));
        let _vm = std::os::unix::net::UnixDatagram::bind(d.join("vm.sock")).unwrap();
        std::fs::write(d.join("new.log"), b"x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::remove_file(d.join("early.sock")).unwrap();
        assert!(!w.drain(Some(OsStr::new("other.sock"))).unwrap());
        assert_eq!(w.names(), vec![b"vm.sock".to_vec()]);
        assert!(w.only(OsStr::new("vm.sock")));
        // The VM's own name removed and made again (a restarted VM): touched.
        std::fs::rename(d.join("vm.sock"), d.join("moved.sock")).unwrap();
        assert!(w.drain(Some(OsStr::new("vm.sock"))).unwrap());
        assert_eq!(w.names(), vec![b"moved.sock".to_vec()]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn too_many_names_or_a_moved_directory_never_answer_only() {
        let d = dir("bound");
        let ours = d.join("s.sock");
        let _s = std::os::unix::net::UnixDatagram::bind(&ours).unwrap();
        let mut w = DirWatch::open(&ours).unwrap();
        for i in 0..MAX_WATCHED_NAMES {
            w.add(OsString::from(format!("n{i}")));
        }
        assert!(!w.lost);
        w.add(OsString::from("one-more"));
        assert!(w.lost);
        assert!(!w.only(OsStr::new("n0")));

        let d2 = dir("gone");
        let ours2 = d2.join("s.sock");
        let _s2 = std::os::unix::net::UnixDatagram::bind(&ours2).unwrap();
        let mut w2 = DirWatch::open(&ours2).unwrap();
        assert!(w2.only(OsStr::new("vm.sock")));
        // (Removing it sends nothing while our socket, bound in it, pins it.)
        let moved = d2.with_extension("moved");
        let _ = std::fs::remove_dir_all(&moved);
        std::fs::rename(&d2, &moved).unwrap();
        w2.drain(None).unwrap();
        assert!(!w2.only(OsStr::new("vm.sock")));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&moved);
    }
}
