//! What every transport of the link offers ([`Transport`]) and the
//! buffers and outcomes it shares with the attachment.

use mio::{Registry, Token};

use crate::iface::GuestTx;
use crate::wire::framing::RxChecksum;

/// Frames handed to one `writev` or `sendmmsg`.
pub(super) const WRITE_BATCH: usize = 64;

/// The VM went away: it closed its end or the link broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the VM went away")]
pub struct VmGone;

/// What a transport reports when its VM is lost while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lost {
    /// The VM closed its end or the link broke.
    Closed,
    /// A frame over [`super::MAX_STREAM_FRAME`]: the framing cannot be trusted.
    Oversized,
}

/// A port's receive buffer: frames (or a partial frame) in `buf[start..end]`.
pub(super) struct Rx {
    pub buf: Vec<u8>,
    pub start: usize,
    pub end: usize,
}

#[cfg(test)]
impl Rx {
    /// Whether the port reads frames itself (a datagram port does not).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One VM's end of the link, whatever carries it.
pub(super) trait Transport {
    /// Size of the port's receive buffer, allocated when the VM attaches
    /// (0: its frames arrive elsewhere).
    fn rx_len(&self) -> usize;
    /// Registers with the event loop under `token`.
    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()>;
    /// Takes the link out of the event loop.
    fn deregister(&mut self, registry: &Registry);
    /// Sends `tx` to the VM until it is empty or the link is full
    /// (`writable` cleared); `skip` bytes of the first frame were sent by
    /// an earlier partial write. Returns how many frames left `tx`.
    fn flush(
        &mut self,
        tx: &mut GuestTx,
        skip: &mut usize,
        writable: &mut bool,
    ) -> Result<usize, VmGone>;
    /// Reads what the VM sent into `rx` and hands each whole frame to
    /// `deliver`, with what the link knows of its checksum and the buffer
    /// it lies in when that stays unchanged until the next `receive`
    /// (`rx.buf`: the stack may send payload from there in place until
    /// its batch ends; empty when the transport reuses the buffer for the
    /// next frame); clears `readable` once the link has nothing more.
    fn receive(
        &mut self,
        rx: &mut Rx,
        readable: &mut bool,
        deliver: impl FnMut(&[u8], RxChecksum, &[u8]),
    ) -> Result<(), Lost>;
    /// The event loop's batch is over: tells the VM of what `flush` and
    /// `receive` left for it, where the link holds that back until now
    /// (vhost-user's interrupts).
    fn end_batch(&mut self) {}
}
