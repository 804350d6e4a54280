//! The stream transport (`-netdev stream`, `-netdev socket,connect=`, on a
//! unix or TCP socket): each frame is a 4-byte big-endian length and the
//! Ethernet frame, both ways. Read in large chunks into one reassembly
//! buffer, written with one `writev` of many queued frames; a partial
//! write resumes mid-frame.
//!
//! A read that returns less than the room it was given drained the socket,
//! so the port stops being readable at once instead of reading again to
//! see `EAGAIN`: the link is registered edge-triggered, and the kernel
//! raises a new edge for every later arrival (a stream socket's
//! `sk_data_ready` wakes epoll on each enqueue), so nothing is missed. This
//! saves one `recv` per wake-up (passt relies on the same).
//!
//! The socket is registered for readable edges only. A unix stream socket
//! raises a writable edge every time the peer reads what was written
//! (`unix_write_space`), so watching it throughout woke the stack once per
//! read QEMU made, with nothing to do. Writable edges are asked for
//! ([`Stream::watch_writable`]) only after a write the socket refused,
//! until the edge comes (the attachment does both, see `link`); re-arming
//! with `EPOLL_CTL_MOD` reports a socket that became writable meanwhile,
//! so no edge is lost.
//!
//! The frames of one read are handed to the stack with the buffer they
//! lie in, which is not written again until the next read: the partial
//! frame at its end is moved to the front then, not right after the
//! frames were delivered. So the stack may send their TCP payload to the
//! host from there in place, with one `sendmsg` over them, when the
//! attachment ends its batch (see `tcp`).

use std::io::{IoSlice, Read, Write};

use mio::{Interest, Registry, Token};

use super::transport::{Lost, Rx, Transport, VmGone, WRITE_BATCH};
use crate::iface::GuestTx;
use crate::wire::framing::{RxChecksum, FRAME_PREFIX_LEN};

/// Largest stream frame QEMU accepts (and so do we).
pub const MAX_STREAM_FRAME: usize = 69632;
/// Bytes read from a stream in one go: many frames per system call.
const STREAM_READ_CHUNK: usize = 256 * 1024;

/// One VM on a connected stream socket.
pub(super) struct Stream<S>(pub S);

impl<S: Read + Write + mio::event::Source> Transport for Stream<S> {
    fn rx_len(&self) -> usize {
        STREAM_READ_CHUNK + FRAME_PREFIX_LEN + MAX_STREAM_FRAME
    }

    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        registry.register(&mut self.0, token, Interest::READABLE)
    }

    fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.0);
    }

    fn flush(
        &mut self,
        tx: &mut GuestTx,
        skip: &mut usize,
        writable: &mut bool,
    ) -> Result<usize, VmGone> {
        flush_stream(&mut self.0, tx, skip, writable)
    }

    /// One large read, then every whole frame in the buffer (with the
    /// buffer: it stays as it is until the next call). The partial frame
    /// the last call left is moved to the front first when a whole one
    /// might not fit after it. A short read clears `readable` (see the
    /// module header).
    fn receive(
        &mut self,
        rx: &mut Rx,
        readable: &mut bool,
        mut deliver: impl FnMut(&[u8], RxChecksum, &[u8]),
    ) -> Result<(), Lost> {
        if rx.start == rx.end {
            rx.start = 0;
            rx.end = 0;
        } else if rx.buf.len() - rx.end < FRAME_PREFIX_LEN + MAX_STREAM_FRAME {
            // Move the partial frame to the front so a whole one always fits.
            rx.buf.copy_within(rx.start..rx.end, 0);
            rx.end -= rx.start;
            rx.start = 0;
        }
        let room = rx.buf.len() - rx.end;
        match self.0.read(&mut rx.buf[rx.end..]) {
            Ok(0) => {
                tracing::info!("VM closed the link");
                return Err(Lost::Closed);
            }
            Ok(n) => {
                rx.end += n;
                // Drained: the next arrival raises a new edge.
                *readable = n == room;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                *readable = false;
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(err) => {
                tracing::warn!(%err, "reading from the VM failed");
                return Err(Lost::Closed);
            }
        }
        let mut state = Ok(());
        while rx.end - rx.start >= FRAME_PREFIX_LEN {
            let head = &rx.buf[rx.start..rx.start + FRAME_PREFIX_LEN];
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len > MAX_STREAM_FRAME {
                tracing::warn!(
                    len,
                    max = MAX_STREAM_FRAME,
                    "stream frame over the limit: closing the link"
                );
                state = Err(Lost::Oversized);
                break;
            }
            let start = rx.start + FRAME_PREFIX_LEN;
            if rx.end - start < len {
                break;
            }
            deliver(&rx.buf[start..start + len], RxChecksum::Unverified, &rx.buf);
            rx.start = start + len;
        }
        state
    }
}

impl<S: mio::event::Source> Stream<S> {
    /// Adds (`on`) or removes the socket's writable edges to what it is
    /// watched for (see the module header).
    pub(super) fn watch_writable(
        &mut self,
        registry: &Registry,
        token: Token,
        on: bool,
    ) -> std::io::Result<()> {
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry.reregister(&mut self.0, token, interest)
    }
}

/// `writev`s queued frames with their length prefixes; a partial write
/// leaves `skip` bytes of the first frame already sent.
fn flush_stream(
    sock: &mut impl Write,
    tx: &mut GuestTx,
    skip: &mut usize,
    writable: &mut bool,
) -> Result<usize, VmGone> {
    let mut sent = 0;
    while !tx.is_empty() {
        let mut iov = [IoSlice::new(&[]); WRITE_BATCH];
        let n = tx.stream_slices(*skip, &mut iov);
        let written = match sock.write_vectored(&iov[..n]) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                *writable = false;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::info!(%err, "writing to the VM failed");
                return Err(VmGone);
            }
        };
        let mut left = written;
        let mut done = 0;
        for i in 0..n {
            let whole = FRAME_PREFIX_LEN + tx.frame(i).len() - if i == 0 { *skip } else { 0 };
            if left >= whole {
                left -= whole;
                done += 1;
                if i == 0 {
                    *skip = 0;
                }
            } else {
                *skip = if i == 0 { *skip + left } else { left };
                break;
            }
        }
        tx.pop(done);
        sent += done;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes handed out in reads of the given sizes, as a socket would.
    struct Script {
        data: Vec<u8>,
        at: usize,
        reads: std::collections::VecDeque<usize>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(want) = self.reads.pop_front().filter(|_| self.at < self.data.len()) else {
                return Err(std::io::ErrorKind::WouldBlock.into());
            };
            let n = want.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl mio::event::Source for Script {
        fn register(&mut self, _: &Registry, _: Token, _: Interest) -> std::io::Result<()> {
            Ok(())
        }
        fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> std::io::Result<()> {
            Ok(())
        }
        fn deregister(&mut self, _: &Registry) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Frames handed over with the buffer are still there, unchanged, when
    /// `receive` returns, even when a read filled the buffer so far that
    /// the partial frame at its end has to move to the front (the stack
    /// sends their TCP payload from there after the call): it moves at
    /// the next call, and the frames after it arrive whole.
    #[test]
    fn delivered_frames_stay_put_until_the_next_receive() {
        let sizes = [
            60_000, 61_000, 62_000, 63_000, 64_000, 65_000, 1_000, 69_000,
        ];
        let mut data = Vec::new();
        let mut frames = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let frame: Vec<u8> = (0..len).map(|b| (b * 7 + i * 13) as u8).collect();
            data.extend_from_slice(&(len as u32).to_be_bytes());
            data.extend_from_slice(&frame);
            frames.push(frame);
        }
        // The first read ends inside the sixth frame, past where a whole
        // frame still fits after it.
        let first = 5 * FRAME_PREFIX_LEN + sizes[..5].iter().sum::<usize>() + 1000;
        let mut link = Stream(Script {
            reads: [first, usize::MAX, usize::MAX].into(),
            data,
            at: 0,
        });
        let mut rx = Rx {
            buf: vec![0; link.rx_len()],
            start: 0,
            end: 0,
        };
        assert!(rx.buf.len() - first < FRAME_PREFIX_LEN + MAX_STREAM_FRAME);
        let mut got = Vec::new();
        for _ in 0..3 {
            // Each read was short: the next arrival would raise an edge.
            let mut readable = true;
            let mut places = Vec::new();
            link.receive(&mut rx, &mut readable, |frame, sum, batch| {
                assert_eq!(sum, RxChecksum::Unverified);
                let at = frame.as_ptr() as usize - batch.as_ptr() as usize;
                assert!(
                    at + frame.len() <= batch.len(),
                    "the frame lies in the batch"
                );
                places.push((at, frame.to_vec()));
            })
            .unwrap();
            for (at, frame) in places {
                assert!(
                    rx.buf[at..at + frame.len()] == frame[..],
                    "frame changed in place"
                );
                got.push(frame);
            }
        }
        assert_eq!(got.len(), frames.len());
        assert!(got == frames, "every frame whole, in order");
    }
}
