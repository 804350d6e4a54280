//! TCP connections from the namespace's loopback relayed to the host's,
//! through the kernel: `splice(2)` through a pipe pair per connection, as
//! pasta's `tcp_splice.c` does (the bytes never enter this process).
//!
//! Theory of operation: an accepted connection (side A, in the namespace)
//! gets a non-blocking connect to the host port (side B). Once B is
//! connected each direction moves bytes source → pipe → destination:
//! whatever sits in the pipe is written out first; only an empty pipe is
//! refilled from the source. So a destination that takes nothing (its
//! send buffer full) stops the reading of the source (backpressure): the
//! pipe holds at most its capacity (64 KiB by default) per direction,
//! and the source's receive buffer fills until its peer's window closes.
//! Both sockets are registered edge-triggered for reading and writing,
//! and every event of either side runs both directions until each stops
//! on "nothing to read" or "cannot write": each stop waits for an edge
//! that will come. End of file from a source, once its pipe is empty,
//! becomes a write shutdown of the destination (half-close, both ways); a
//! connection ends when both directions have, or at once on an error
//! (the other side is then reset). At most [`MAX_RELAYS`] connections
//! are relayed at once: beyond that an accepted connection is reset.
//! The other way (pasta's splicing of a `-t` connection from the host's
//! loopback into the namespace's) is the same relay with A accepted on
//! the host and B connecting inside the namespace.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use rustix::io::retry_on_intr;
use rustix::pipe::{pipe_with, PipeFlags, SpliceFlags};

use crate::iface::{token, TokenKind};

/// The most connections relayed at once (six descriptors each: two
/// sockets, two pipes).
pub const MAX_RELAYS: usize = 1024;

/// Bytes asked of one `splice` call (the kernel moves at most what the
/// pipe holds).
const SPLICE_CHUNK: usize = 1 << 20;

/// One direction of a relay: its pipe and how far it got.
struct Direction {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet written to the destination.
    queued: usize,
    /// The source gave end-of-file.
    eof: bool,
    /// The destination was shut down for writing.
    shut: bool,
}

impl Direction {
    fn new() -> io::Result<Direction> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Direction {
            read,
            write,
            queued: 0,
            eof: false,
            shut: false,
        })
    }

    fn done(&self) -> bool {
        self.eof && self.queued == 0 && self.shut
    }

    /// Moves bytes from `src` to `dst` until one of them would block (or
    /// the source ends); an error ends the relay.
    fn pump(&mut self, src: &TcpStream, dst: &TcpStream) -> io::Result<()> {
        loop {
            while self.queued > 0 {
                match splice(&self.read, dst, self.queued) {
                    Ok(n) => self.queued -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    dst.shutdown(std::net::Shutdown::Write)?;
                }
                return Ok(());
            }
            match splice(src, &self.write, SPLICE_CHUNK) {
                Ok(0) => self.eof = true,
                Ok(n) => self.queued = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `splice(2)` of up to `len` bytes, non-blocking.
fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    Ok(retry_on_intr(|| {
        rustix::pipe::splice(&from, None, &to, None, len, flags)
    })?)
}

/// One relayed connection.
struct Relay {
    /// Accepted in the namespace.
    a: TcpStream,
    /// Toward the host.
    b: TcpStream,
    /// A → B and B → A, once B is connected.
    pipes: Option<(Direction, Direction)>,
}

/// The relayed connections.
pub(crate) struct Relays {
    slots: Vec<Option<Relay>>,
    count: usize,
    max: usize,
    /// Whether the cap was logged (until the count falls under it again).
    capped: bool,
}

impl Relays {
    pub(crate) fn new(max: usize) -> Relays {
        Relays {
            slots: Vec::new(),
            count: 0,
            max,
            capped: false,
        }
    }

    /// Accepts what `listener` holds, each relayed to `host`.
    pub(crate) fn accept(&mut self, registry: &Registry, listener: &TcpListener, host: SocketAddr) {
        loop {
            let a = match listener.accept() {
                Ok((a, _)) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // Out of descriptors, or the peer gone already.
                    tracing::debug!(%err, "accepting on the namespace's loopback");
                    return;
                }
            };
            if !self.has_room(&a) {
                continue;
            }
            match TcpStream::connect(host) {
                Ok(b) => self.insert(registry, a, b),
                Err(err) => {
                    tracing::debug!(%err, %host, "connecting to the host's loopback");
                    reset(a);
                }
            }
        }
    }

    /// Whether another relay fits; if not, `a` is reset (and the cap
    /// logged once).
    pub(crate) fn has_room(&mut self, a: &TcpStream) -> bool {
        if self.count < self.max {
            return true;
        }
        if !self.capped {
            tracing::warn!(
                "{} connections are relayed already: resetting new ones",
                self.max
            );
            self.capped = true;
        }
        set_reset(a);
        false
    }

    /// Relays between `a` (accepted) and `b` (connecting).
    pub(crate) fn insert(&mut self, registry: &Registry, a: TcpStream, b: TcpStream) {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let mut relay = Relay { a, b, pipes: None };
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = registry
            .register(&mut relay.a, token(TokenKind::NsTcp, slot * 2), both)
            .and_then(|()| {
                registry.register(&mut relay.b, token(TokenKind::NsTcp, slot * 2 + 1), both)
            });
        if let Err(err) = registered {
            tracing::debug!(%err, "registering a relayed connection");
            let _ = registry.deregister(&mut relay.a);
            reset(relay.a);
            return;
        }
        self.slots[slot] = Some(relay);
        self.count += 1;
    }

    /// Handles readiness of side `index % 2` of relay `index / 2`.
    pub(crate) fn on_event(&mut self, registry: &Registry, index: usize, _event: &Event) {
        let slot = index / 2;
        let Some(Some(relay)) = self.slots.get_mut(slot) else {
            return;
        };
        match step(relay) {
            Ok(false) => {}
            Ok(true) => self.close(registry, slot, false),
            Err(err) => {
                tracing::debug!(%err, "a relayed connection failed");
                self.close(registry, slot, true);
            }
        }
    }

    /// Ends relay `slot`; `abort` resets both sides.
    fn close(&mut self, registry: &Registry, slot: usize, abort: bool) {
        if let Some(mut relay) = self.slots[slot].take() {
            let _ = registry.deregister(&mut relay.a);
            let _ = registry.deregister(&mut relay.b);
            if abort {
                reset(relay.a);
                reset(relay.b);
            }
            self.count -= 1;
            if self.count < self.max {
                self.capped = false;
            }
        }
    }

    /// Connections relayed now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.count
    }
}

/// Runs `relay`: finishes the connect, then both directions. Whether it
/// is done.
fn step(relay: &mut Relay) -> io::Result<bool> {
    if relay.pipes.is_none() {
        if let Some(err) = relay.b.take_error()? {
            return Err(err);
        }
        match relay.b.peer_addr() {
            Ok(_) => relay.pipes = Some((Direction::new()?, Direction::new()?)),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    let Some((ab, ba)) = relay.pipes.as_mut() else {
        return Ok(false);
    };
    ab.pump(&relay.a, &relay.b)?;
    ba.pump(&relay.b, &relay.a)?;
    Ok(ab.done() && ba.done())
}

/// Closes `stream` with a reset (SO_LINGER of zero), so its peer learns
/// at once that nothing is relayed.
pub(crate) fn reset(stream: TcpStream) {
    set_reset(&stream);
}

/// Makes the close of `stream` a reset.
fn set_reset(stream: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(stream, Some(Duration::ZERO));
}
