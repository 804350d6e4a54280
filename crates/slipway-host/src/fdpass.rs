//! Passing a descriptor over a unix socket (`SCM_RIGHTS`): how the bridge
//! helper hands QEMU its tap, and the namespace helper child its parent.
//!
//! [`send_fd`] never allocates (its control buffer is on the stack, and
//! rustix's `sendmsg` builds the message there too), so a child between
//! `fork` and `exec` may call it. [`recv_fd`] takes a descriptor that
//! arrives into ownership at once, close-on-exec; any other that came
//! with it is closed (rustix's receive buffer closes what is not taken).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use rustix::io::retry_on_intr;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Sends `fd` over the unix socket `sock` with one zero byte of data.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller's open descriptors, borrowed for this call only.
    let (sock, fd) = unsafe { (BorrowedFd::borrow_raw(sock), BorrowedFd::borrow_raw(fd)) };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let data = [IoSlice::new(&[0])];
    retry_on_intr(|| sendmsg(sock, &data, &mut control, SendFlags::NOSIGNAL))?;
    Ok(())
}

/// Receives one message into `buf` from the unix socket `sock`: its length
/// and the descriptor it carried, if any.
pub fn recv_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    // SAFETY: the caller's open descriptor, borrowed for this call only.
    let sock = unsafe { BorrowedFd::borrow_raw(sock) };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = retry_on_intr(|| {
        let mut data = [IoSliceMut::new(buf)];
        recvmsg(sock, &mut data, &mut control, RecvFlags::CMSG_CLOEXEC)
    })?;
    let fd = control.drain().find_map(|message| match message {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    Ok((received.bytes, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn a_descriptor_goes_across() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let (x, y) = UnixDatagram::pair().unwrap();
        send_fd(a.as_raw_fd(), x.as_raw_fd()).unwrap();
        drop(x);
        let mut buf = [9u8; 8];
        let (n, fd) = recv_fd(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((n, buf[0]), (1, 0));
        UnixDatagram::from(fd.expect("a descriptor"))
            .send(b"x")
            .unwrap();
        assert_eq!(y.recv(&mut buf).unwrap(), 1);
        // A message without one.
        a.send(b"ab").unwrap();
        let (n, fd) = recv_fd(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((n, fd.is_none()), (2, true));
        // A closed peer is an error, not a signal.
        drop(b);
        assert!(send_fd(a.as_raw_fd(), y.as_raw_fd()).is_err());
    }
}
