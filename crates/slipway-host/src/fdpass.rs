//! Passing a descriptor over a unix socket (`SCM_RIGHTS`): how the bridge
//! helper hands QEMU its tap, and the namespace helper child its parent.
//!
//! [`send_fd`] never allocates (its control buffer is on the stack), so a
//! child between `fork` and `exec` may call it. [`recv_fd`] takes a
//! descriptor that arrives into ownership at once, close-on-exec.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A control buffer for one descriptor: u64s keep it aligned for
/// `cmsghdr`, and CMSG_SPACE(4) is 24 bytes on 64-bit.
type Control = [u64; 4];

fn message(iov: &mut libc::iovec, control: &mut Control, len: usize) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid; the caller keeps the buffers
    // alive while the message is used.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = len as _;
    msg
}

/// Retries `call` while it fails with EINTR.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        match usize::try_from(call()) {
            Ok(n) => return Ok(n),
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(io::Error::last_os_error()),
        }
    }
}

/// Sends `fd` over the unix socket `sock` with one zero byte of data.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control: Control = [0; 4];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let msg = message(&mut iov, &mut control, space);
    // SAFETY: the control buffer holds one cmsg of CMSG_SPACE(int) bytes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg and the buffers it points to are live.
    retry(|| unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) }).map(drop)
}

/// Receives one message into `buf` from the unix socket `sock`: its length
/// and the descriptor it carried, if any.
pub fn recv_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control: Control = [0; 4];
    let mut msg = message(&mut iov, &mut control, std::mem::size_of::<Control>());
    // SAFETY: a receive into live buffers.
    let n = retry(|| unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    // SAFETY: the kernel filled the control buffer up to msg_controllen;
    // a descriptor that arrived is owned by nobody else.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (!cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS)
            .then(|| {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                OwnedFd::from_raw_fd(raw)
            })
    };
    Ok((n, fd))
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
