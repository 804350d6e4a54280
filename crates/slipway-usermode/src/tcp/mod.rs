//! TCP translation between guest segments and host sockets.
//!
//! # Theory of operation
//!
//! There is no second TCP stack here. Each guest connection is paired with
//! one kernel TCP socket on the host, and this module only *translates*:
//! guest segments become socket calls, socket state becomes guest segments.
//! The host kernel keeps every byte that is still in flight, so the stack
//! holds no per-flow data buffers at all (passt's design).
//!
//! ## Guest → host
//!
//! In-order payload goes to the host socket; the guest is acknowledged
//! only for what the socket took. The link hands the stack its frames in
//! batches (one read of a stream socket holds up to 256 KiB of them) and
//! ends each batch with [`TcpTable::end_guest_batch`]: in-order payloads
//! of up to [`GATHER_MAX_SEGMENT`] bytes of one flow are gathered in
//! [`RxBatch`] and leave in one `send` when the batch ends, another flow's
//! segment or anything but in-order data of the flow comes, or the
//! gathering buffer ([`RX_BATCH_BYTES`]) is full; one ACK then covers what
//! the socket took (a partial `send` acknowledges only that much: the guest
//! retransmits the rest), as Linux acknowledges a GRO'd packet. This turns
//! one system call per 1460-byte segment into one per batch. Where the
//! link's frames stay put until the batch ends (a stream link: its read
//! buffer is not touched again before its next read, so it hands the
//! stack that buffer with every frame) the payloads are not copied: the
//! batch keeps their places in that buffer, up to [`RX_BATCH_PIECES`] of
//! them, and one `writev` (in the kernel a `sendmsg`) takes an iovec
//! over them, as passt does; any segment size is gathered so, which also
//! puts several 64 KiB frames of one flow (MTU 65520) in one call. The places are offsets checked
//! against the buffer handed in again when the batch is sent, never
//! pointers, so a link that broke the rule would make the stack drop the
//! gathered bytes unacknowledged (the guest retransmits), not read stale
//! memory. Links that reuse their buffer for every frame (a tap,
//! vhost-user, whose guest may rewrite a buffer once it is returned)
//! hand over no buffer: their payloads of up to [`GATHER_MAX_SEGMENT`]
//! bytes are copied into the gathering buffer (at most 256 KiB per
//! batch); larger segments (segmentation-offload frames) are written
//! straight from the frame, where one `send` per segment already costs
//! little per byte and a copy would cost more than it saves. The window advertised to the guest is the free room of the host
//! socket's send buffer (`SO_SNDBUF` minus `SIOCOUTQ`, with a margin for
//! kernel overhead), tracked as a right edge that never moves left, so a
//! well-behaved guest never sends more than the socket accepts. The socket
//! is queried only when the remaining window falls below half the send
//! buffer, not per segment. As a Linux receiver does, every second
//! full-size segment is acknowledged (short, PSH and FIN segments at once;
//! a lone one after 2 ms), halving the frames toward the guest in bulk
//! transfers. Out-of-order segments are dropped with a
//! duplicate ACK (the guest retransmits). When the window closes, a short
//! timer (and the socket's writable edge) re-opens it with a window update.
//!
//! ## Host → guest
//!
//! Host data is *peeked* (`MSG_PEEK` at the socket's `SO_PEEK_OFF` offset)
//! directly into the payload area of a frame slot in [`crate::iface::GuestTx`];
//! nothing is consumed from the socket until the guest acknowledges it, and
//! then it is discarded with `MSG_TRUNC` (no copy). Unacknowledged data is
//! therefore always the first `snd_nxt - snd_una` bytes of the socket's
//! receive queue, and a retransmission is a re-peek from offset 0. Without
//! `SO_PEEK_OFF` (kernels before 6.9) the flow peeks from the queue's start
//! and skips the bytes already sent into a discard buffer, which bounds the
//! bytes in flight to that buffer's size. As passt does, the payload of as
//! many segments as the window, the known unsent bytes and `GuestTx`
//! allow (up to [`MAX_FILL_SLOTS`](crate::iface::tx::MAX_FILL_SLOTS)) is peeked with one `recvmsg` whose
//! iovec points straight at the payload areas of their frame slots, and the
//! frames' headers are written around it afterwards: one system call and
//! one copy (the kernel's) for the lot, at any segment size. Frames to a
//! guest whose Ethernet address is unknown are built one by one (they are
//! held outside `GuestTx` until it resolves).
//!
//! The guest's pure ACKs arrive in the link's batches too (Linux ACKs
//! every second segment): each moves `snd_una` at once, but what they
//! acknowledged is dropped from the socket, and what they allow is sent,
//! when the batch ends ([`TcpTable::end_guest_batch`]): one discard and
//! one peek per flow and batch rather than per ACK. Until then the
//! acknowledged bytes (`undiscarded`) stay at the head of the socket's
//! queue, and everything that uses the peek offset or the queue length
//! drops them first.
//!
//! `unsent` counts bytes known to wait in the socket beyond `snd_nxt`; it is
//! refreshed with one `FIONREAD` per readable edge, so a segment's length is
//! known before its frame is built and the peek always fills it. Sending
//! stops at the guest's window, at a full `GuestTx` (the flow then waits in
//! a list that [`TcpTable::on_guest_tx_space`] serves) or when `unsent`
//! reaches zero; mio's edge-triggered readiness is safe because a new edge
//! comes whenever new data arrives, and everything else resumes from ACKs,
//! timers and TX space.
//!
//! A flow that stops with `unsent` above zero needs no edge to know there
//! is more: its socket's readable events are parked (`EPOLL_CTL_MOD`
//! without `EPOLLIN`; the host's EOF still comes as `EPOLLRDHUP`, errors
//! always do). Otherwise every segment the host adds while the guest is
//! slower than the host (a download) would wake the loop for a `FIONREAD`
//! and nothing else: a quarter of the wake-ups of a vhost-user download.
//! When the known bytes run out, the flow asks `FIONREAD` itself and goes
//! on; only a socket found empty gets its readable events back, and the
//! change reports at once what came in between, so nothing is missed.
//! A request/response flow, which sends all it knows at once, never
//! parks and pays no system call for it.
//!
//! Losses toward the guest are repaired by fast retransmit on three
//! duplicate ACKs (NewReno-style: one segment, again on each partial ACK)
//! and by a retransmission timeout (RFC 6298 estimator, exponential
//! backoff) that goes back to `snd_una`. After a go-back, an ACK beyond
//! `snd_nxt` (data the guest had kept) simply moves `snd_nxt` forward.
//!
//! ## States
//!
//! - `Connecting`: the guest's SYN started a non-blocking `connect`; the
//!   SYN-ACK is sent only when the host accepted, and a refusal is
//!   answered with RST at once.
//! - `SynReceived`: SYN-ACK sent, waiting for the guest's ACK.
//! - `SynSent`: a host-forward connection was accepted and a SYN sent to
//!   the guest; a guest RST closes the host socket.
//! - `Established`: data both ways. Half-closes are flags: a guest FIN is
//!   `shutdown(SHUT_WR)` on the socket, a host EOF becomes a guest FIN
//!   once all host data is sent (on the last data segment when the EOF is
//!   known by then). A flow ends when both FINs are done and ours is
//!   acknowledged (no TIME_WAIT: we are not a real endpoint; the socket is
//!   closed without `shutdown` or `EPOLL_CTL_DEL`), on a RST from either
//!   side, or when retransmissions give up.
//!
//! A connected socket is registered for readable events only (parked as
//! above); writable ones are added while a connect goes on or once the
//! window toward the guest has closed. A short connection thus costs the
//! stack one `epoll_ctl` and no event of its own beyond what the host
//! sends.
//!
//! ## Invariants
//!
//! - Kernel peek offset == bytes of data in flight (`snd_nxt - snd_una`,
//!   without the FIN).
//! - The guest-facing window's right edge (`rcv_edge`) never decreases.
//! - A hostile guest cannot disturb other flows: sequence numbers are
//!   checked (RFC 5961: a RST must hit `rcv_nxt` exactly, an in-window RST
//!   or a SYN only draws a challenge ACK, ACKs beyond what was sent are
//!   refused), the flow table is capped (`limits.max_tcp_flows`), and the
//!   stack buffers nothing per flow.
//! - Host sockets are registered with a token carrying slot *and*
//!   generation, so a late event for a closed flow never reaches the flow
//!   that reused its slot.
//! - No allocation per packet: frames are built in `GuestTx` slots, the
//!   table grows only when a new flow needs a slot.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, IoSlice, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use smoltcp::wire::{IpProtocol, TcpOption, TcpPacket, TcpSeqNumber};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::{ForwardProtocol, HostForward, Outbound, StackConfig};
use crate::epoll;
use crate::iface::flow::{FlowInfo, FlowProtocol};
use crate::iface::{
    token, Ctx, DropReason, Offload, RxChecksum, TokenKind, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
    IPV6_HEADER_LEN, MAX_OFFLOAD_PACKET,
};

#[cfg(test)]
mod tests;

/// Window scale we offer (windows up to 8 MiB).
const OUR_WSCALE: u8 = 7;
/// Largest window advertised to the guest (the 16-bit field at our
/// scale): what one flow may have in flight toward the stack, and so the
/// burst a tap's transmit queue must hold.
pub const MAX_ADVERTISED_WINDOW: u32 = (u16::MAX as u32) << OUR_WSCALE;
/// Largest window scale RFC 7323 allows.
const MAX_WSCALE: u8 = 14;
/// MSS assumed when the guest's SYN carries none (RFC 9293).
const DEFAULT_GUEST_MSS: u16 = 536;
/// Smallest MSS we honour, so a guest cannot make us send tiny segments.
const MIN_GUEST_MSS: u16 = 64;
/// Retransmission timeout before the first RTT sample, and for SYNs.
const RTO_INITIAL: Duration = Duration::from_secs(1);
/// Lower bound of the retransmission timeout (Linux's value).
const RTO_MIN: Duration = Duration::from_millis(200);
/// Upper bound of the retransmission timeout.
const RTO_MAX: Duration = Duration::from_secs(60);
/// Retransmissions of data before the flow is reset.
const MAX_RETRIES: u8 = 10;
/// Retransmissions of a SYN or SYN-ACK before the flow is dropped.
const SYN_RETRIES: u8 = 5;
/// How long a host `connect` may take before the guest gets a RST.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a half-closed flow may stay silent before it is reset.
const HALF_CLOSED_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest an ACK for a lone full-size guest segment is held back (every
/// second one, and any short, PSH or FIN segment, is acknowledged at once).
const DELAYED_ACK: Duration = Duration::from_millis(2);
/// First delay of the closed-window re-check (doubles up to 64 times it).
const WINDOW_RECHECK: Duration = Duration::from_millis(5);
/// Bits of a flow token's index that hold the slot; the rest hold the
/// slot's generation.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
const GEN_MASK: u32 = (1 << 24) - 1;
/// Bytes in flight per flow when the kernel lacks `SO_PEEK_OFF`: the
/// size of the discard buffer the already-sent bytes are peeked into.
const FALLBACK_PEEK_WINDOW: usize = 1 << 20;
/// First port of the range host-forward connections appear to come from.
const FORWARD_PORT_FIRST: u16 = 49152;
/// Bytes of guest payload gathered per link batch before they are sent
/// (a stream link's read is 256 KiB).
const RX_BATCH_BYTES: usize = 256 * 1024;
/// Largest guest segment payload that is gathered by copying (from a
/// link that reuses its buffer); larger ones are written straight from
/// their frame.
const GATHER_MAX_SEGMENT: usize = 16 * 1024;
/// Most guest payloads gathered in place (in the link's buffer) and sent
/// with one `sendmsg`: its iovec's entries (Linux takes up to 1024).
const RX_BATCH_PIECES: usize = 256;
/// A TCP header without options (every data segment toward the guest).
const TCP_HEADER_LEN: usize = 20;

// Flow flags.
const HOST_EOF: u16 = 1 << 0;
const FIN_SENT: u16 = 1 << 1;
const GUEST_FIN: u16 = 1 << 2;
const TX_WAIT: u16 = 1 << 3;
const ACK_PENDING: u16 = 1 << 4;
const WND_CLOSED: u16 = 1 << 5;
const RECOVERY: u16 = 1 << 6;
const PEEK_FALLBACK: u16 = 1 << 7;
/// The host socket reported data or EOF before the flow was established
/// (a server that speaks first): `unsent` is read when it is.
const HOST_READABLE: u16 = 1 << 8;
/// The socket is registered for writable events too (a connect still
/// going on, or a window that closed); without it, only for readable ones.
const WATCH_WRITABLE: u16 = 1 << 9;
/// A pure ACK of the guest's current link batch allowed more data (or
/// acknowledged some): the flow is in `Shared::acked`, pushed when the
/// batch ends.
const PUSH_DUE: u16 = 1 << 10;
/// The socket's readable events are off (its read-closed ones stay on):
/// the flow knows of unsent bytes it cannot send yet, so a segment the
/// host adds would only be counted; it asks `FIONREAD` itself when they
/// run out ([`Flow::park_reading`]).
const READ_PARKED: u16 = 1 << 11;

// TCP header flags of segments we emit.
const F_FIN: u8 = 1 << 0;
const F_SYN: u8 = 1 << 1;
const F_RST: u8 = 1 << 2;
const F_PSH: u8 = 1 << 3;
const F_ACK: u8 = 1 << 4;

/// What the TCP translation has done, for logs and the control API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments received from the guest with a valid checksum.
    pub segments_from_guest: u64,
    /// Segments dropped as truncated, malformed or mis-checksummed.
    pub bad_segments: u64,
    /// Connections the guest opened (host `connect` started).
    pub opened_outbound: u64,
    /// Host-forward connections accepted and offered to the guest.
    pub opened_forward: u64,
    /// Connections removed from the table, for any reason.
    pub closed: u64,
    /// Host connects refused (answered with RST).
    pub refused: u64,
    /// Host connects that failed otherwise or timed out (RST).
    pub connect_failed: u64,
    /// Guest connections refused by policy (restrict, no route).
    pub denied: u64,
    /// Connections refused because the table was full.
    pub flow_limit: u64,
    /// Segments for no known connection (answered with RST).
    pub no_flow: u64,
    /// Guest segments beyond `rcv_nxt`, dropped with a duplicate ACK.
    pub out_of_order: u64,
    /// Guest payload the host socket did not take whole.
    pub partial_writes: u64,
    /// `send` calls that carried guest payload to host sockets (several
    /// segments of one link batch share one).
    pub writes_to_host: u64,
    /// `recv` calls that peeked host data for the guest (the segments of
    /// one push share one).
    pub peeks_from_host: u64,
    /// `recv` calls that dropped host data the guest acknowledged (the
    /// ACKs of one link batch share one per flow).
    pub discards: u64,
    /// Segments retransmitted after three duplicate ACKs or a partial ACK.
    pub fast_retransmits: u64,
    /// Retransmission timeouts (go back to the oldest unacknowledged byte).
    pub timeouts: u64,
    /// Challenge ACKs sent for suspicious RST/SYN/ACK (RFC 5961).
    pub challenge_acks: u64,
    /// RSTs accepted from the guest.
    pub resets_from_guest: u64,
    /// RSTs sent to the guest.
    pub resets_to_guest: u64,
    /// Window updates sent after the host socket drained.
    pub window_updates: u64,
    /// Connections dropped because the guest or host stopped answering.
    pub gave_up: u64,
    /// Host events for a flow slot that has been reused since.
    pub stale_events: u64,
    /// Payload bytes written to host sockets.
    pub bytes_to_host: u64,
    /// Payload bytes sent to and acknowledged by the guest.
    pub bytes_to_guest: u64,
}

/// A flow's identity as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    /// The guest's address and port.
    guest: SocketAddr,
    /// The address and port the guest talks to (same family as `guest`).
    remote: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connecting,
    SynReceived,
    SynSent,
    Established,
}

/// What a flow operation asks the table to do with the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Close the host socket normally.
    Close,
    /// Close the host socket with a RST (SO_LINGER 0).
    Abort,
}

/// The fields of one TCP segment from the guest.
struct Segment<'a> {
    seq: u32,
    ack: u32,
    syn: bool,
    ackf: bool,
    fin: bool,
    rst: bool,
    psh: bool,
    window: u16,
    options: &'a [u8],
    payload: &'a [u8],
    /// The link's buffer the segment lies in, unchanged until the batch
    /// ends (empty: the link reuses its buffer, see the module header).
    batch: &'a [u8],
}

/// What [`Flow::on_data`] did with a segment's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Gathered for the end of the link's batch: acknowledged then.
    Gathered,
    /// One full-size in-order segment, written whole: its ACK may wait.
    Full,
    /// Anything else: acknowledge at once.
    Other,
}

/// Header of one segment toward the guest.
struct Out {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    /// MSS and window scale options (SYN segments only).
    syn_opts: Option<(u16, Option<u8>)>,
}

/// Table-wide state every flow operation may touch.
struct Shared {
    deadline: Option<Instant>,
    stats: TcpStats,
    /// MSS we announce and the largest segment we send over IPv4 (MTU -
    /// 40); IPv6 flows use 20 bytes less ([`Flow::our_mss`]).
    our_mss: u16,
    /// Discard area for peeking without `SO_PEEK_OFF`; allocated when the
    /// first such flow appears.
    discard: Vec<u8>,
    /// Flows waiting for room in `GuestTx`.
    waiters: Vec<usize>,
    /// Flows whose pure ACKs of the current link batch are acted on when
    /// it ends ([`PUSH_DUE`]).
    acked: Vec<usize>,
    iss_key: RandomState,
    iss_counter: u64,
    next_forward_port: u16,
    /// Guest payload gathered during the link's current batch.
    rx: RxBatch,
    #[cfg(test)]
    force_peek_fallback: bool,
}

/// In-order guest payload of one flow, gathered while the link delivers
/// one batch of frames and sent with one `send` (see the module header):
/// either in place, as offsets in the link's buffer (`pieces`, while
/// `at` names that buffer), or copied into `buf`.
#[derive(Default)]
struct RxBatch {
    /// Slot and generation of the flow whose payload is gathered, while
    /// there is any.
    owner: Option<(usize, u32)>,
    /// [`RX_BATCH_BYTES`], allocated when the first segment is copied.
    buf: Vec<u8>,
    /// Offsets and lengths of the payloads gathered in place, in order;
    /// room for [`RX_BATCH_PIECES`] allocated when the first is.
    pieces: Vec<(usize, usize)>,
    /// Address and length of the link buffer `pieces` lie in (`None`:
    /// nothing gathered in place).
    at: Option<(usize, usize)>,
    /// Bytes gathered (`buf[..len]`, or the pieces'); they follow the
    /// flow's `rcv_nxt`.
    len: usize,
    /// Segments gathered.
    segments: u32,
    /// The first segment was one full-size segment without PSH (a lone
    /// one's ACK may be delayed, as without gathering).
    full: bool,
    /// The last segment carried the guest's FIN.
    fin: bool,
}

/// Where `data` starts in `batch`, when it lies wholly inside it.
fn offset_in(batch: &[u8], data: &[u8]) -> Option<usize> {
    let start = (data.as_ptr() as usize).checked_sub(batch.as_ptr() as usize)?;
    (start.checked_add(data.len())? <= batch.len()).then_some(start)
}

/// A buffer's identity for [`RxBatch::at`]: its address and length.
fn buffer_id(batch: &[u8]) -> (usize, usize) {
    (batch.as_ptr() as usize, batch.len())
}

impl RxBatch {
    /// Whether `data` (in `batch`, when it is not empty) can join what is
    /// gathered for flow `slot`/`gen`: in place when it lies in the
    /// link's buffer the gathered pieces lie in, copied when it does not
    /// and fits the copy's bounds; never both kinds in one batch.
    fn takes(&self, slot: usize, gen: u32, data: &[u8], batch: &[u8]) -> bool {
        if self.fin || self.owner.is_some_and(|o| o != (slot, gen)) {
            return false;
        }
        if data.is_empty() {
            return true;
        }
        if offset_in(batch, data).is_some() {
            return (self.len == 0 || self.at == Some(buffer_id(batch)))
                && self.pieces.len() < RX_BATCH_PIECES;
        }
        self.at.is_none()
            && data.len() <= GATHER_MAX_SEGMENT
            && self.len + data.len() <= RX_BATCH_BYTES
    }

    /// Appends one segment's in-order payload for flow `slot`/`gen` (which
    /// [`RxBatch::takes`]).
    fn push(&mut self, slot: usize, gen: u32, data: &[u8], batch: &[u8], full: bool, fin: bool) {
        if let Some(start) = offset_in(batch, data).filter(|_| !data.is_empty()) {
            if self.pieces.capacity() == 0 {
                self.pieces = Vec::with_capacity(RX_BATCH_PIECES);
            }
            self.at = Some(buffer_id(batch));
            self.pieces.push((start, data.len()));
        } else if !data.is_empty() {
            if self.buf.is_empty() {
                self.buf = vec![0; RX_BATCH_BYTES];
            }
            self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        }
        if self.owner.is_none() {
            self.owner = Some((slot, gen));
            self.full = full;
        }
        self.len += data.len();
        self.segments += 1;
        self.fin = fin;
    }

    /// Forgets what was gathered.
    fn clear(&mut self) {
        self.owner = None;
        self.pieces.clear();
        self.at = None;
        self.len = 0;
        self.segments = 0;
        self.full = false;
        self.fin = false;
    }
}

impl Shared {
    fn arm(&mut self, at: Instant) {
        if self.deadline.is_none_or(|d| at < d) {
            self.deadline = Some(at);
        }
    }
}

/// One translated connection.
struct Flow {
    sock: TcpStream,
    key: FlowKey,
    slot: usize,
    gen: u32,
    state: State,
    flags: u16,
    // Sequence space toward the guest.
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    snd_max: u32,
    snd_wnd: u32,
    snd_wscale: u8,
    mss: u16,
    unsent: u32,
    /// Bytes the guest acknowledged that are still in the host socket:
    /// dropped with one `recv` per flow and link batch
    /// ([`Flow::flush_discard`]) before anything peeks or asks the socket
    /// its queue length. The kernel's peek offset is `in_flight()` plus
    /// these.
    undiscarded: u32,
    dup_acks: u8,
    recover: u32,
    retries: u8,
    rto: Duration,
    srtt_us: u64,
    rttvar_us: u64,
    rtt_probe: Option<(u32, Instant)>,
    timer: Option<Instant>,
    wnd_timer: Option<Instant>,
    /// Full-size guest segments whose ACK is being delayed (0 or 1).
    delayed_acks: u8,
    ack_timer: Option<Instant>,
    wnd_backoff: u8,
    // Sequence space from the guest.
    rcv_nxt: u32,
    rcv_edge: u32,
    rcv_wscale: u8,
    sndbuf: u32,
    last_activity: Instant,
    /// When the flow was opened, and payload bytes each way (control API).
    created: Instant,
    bytes_from_guest: u64,
    bytes_to_guest: u64,
}

struct Listener {
    sock: TcpListener,
    fwd: HostForward,
}

/// Every TCP connection the stack translates, and the TCP forward listeners.
pub struct TcpTable {
    flows: Vec<Option<Flow>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    map: HashMap<FlowKey, usize>,
    /// The slot the last guest segment found: the next segment of the
    /// same connection (a burst) skips the hash lookup when that slot
    /// still holds a flow with its key, so a closed flow or a reused slot
    /// is never found through it.
    last: usize,
    /// Forward listeners by token index; a removed one leaves `None`
    /// (indices are never reused, so a stale event finds nothing).
    listeners: Vec<Option<Listener>>,
    max_flows: usize,
    /// The waiter list being served (swapped with `Shared::waiters`).
    serving: Vec<usize>,
    /// Connections from the host's loopback accepted on a forward, with
    /// the forward's guest port, left for the event loop to splice into
    /// the namespace's loopback (pasta); `None`: every one is translated.
    loopback_accepted: Option<Vec<(TcpStream, u16)>>,
    sh: Shared,
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

fn seq_ge(a: u32, b: u32) -> bool {
    !seq_lt(a, b)
}

impl TcpTable {
    /// An empty table sized by `cfg.limits`.
    pub fn new(cfg: &StackConfig) -> Self {
        let max_flows = cfg.limits.max_tcp_flows.min(SLOT_MASK);
        TcpTable {
            flows: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            map: HashMap::with_capacity(max_flows.min(4096)),
            last: 0,
            listeners: Vec::new(),
            max_flows,
            serving: Vec::new(),
            loopback_accepted: None,
            sh: Shared {
                deadline: None,
                stats: TcpStats::default(),
                our_mss: u16::try_from(cfg.mtu.saturating_sub(40))
                    .unwrap_or(u16::MAX)
                    .max(1),
                discard: Vec::new(),
                waiters: Vec::new(),
                acked: Vec::new(),
                iss_key: RandomState::new(),
                iss_counter: 0,
                next_forward_port: FORWARD_PORT_FIRST,
                rx: RxBatch::default(),
                #[cfg(test)]
                force_peek_fallback: false,
            },
        }
    }

    /// Binds the listeners of every TCP `hostfwd` and registers them with
    /// tokens of kind [`TokenKind::TcpListener`]. Fails with the address
    /// that could not be bound.
    pub fn listen_forwards(&mut self, registry: &Registry, cfg: &StackConfig) -> io::Result<()> {
        for fwd in cfg
            .hostfwd
            .iter()
            .filter(|f| f.protocol == ForwardProtocol::Tcp)
        {
            self.add_forward(registry, fwd)?;
        }
        Ok(())
    }

    /// Binds and registers the listener of one TCP forward; returns the
    /// bound address. The guest end is found per connection
    /// ([`Ctx::forward_guest`]).
    pub fn add_forward(
        &mut self,
        registry: &Registry,
        fwd: &HostForward,
    ) -> io::Result<SocketAddr> {
        let mut sock = crate::iface::listen::tcp_listener(fwd).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "hostfwd tcp: cannot listen on {} (guest port {}): {e}",
                    fwd.host, fwd.guest_port
                ),
            )
        })?;
        registry.register(
            &mut sock,
            token(TokenKind::TcpListener, self.listeners.len()),
            Interest::READABLE,
        )?;
        let bound = sock.local_addr()?;
        self.listeners.push(Some(Listener {
            sock,
            fwd: fwd.clone(),
        }));
        Ok(bound)
    }

    /// Closes the forward listener bound to `host`; connections it already
    /// made go on. Returns the forward, or `None` when no listener is
    /// bound there.
    pub fn remove_forward(&mut self, registry: &Registry, host: SocketAddr) -> Option<HostForward> {
        let slot = self.listeners.iter_mut().find(|l| {
            l.as_ref()
                .is_some_and(|l| l.sock.local_addr().ok() == Some(host))
        })?;
        let mut listener = slot.take()?;
        let _ = registry.deregister(&mut listener.sock);
        Some(listener.fwd)
    }

    /// From now on, leaves the connections accepted on a forward from the
    /// host's loopback to [`TcpTable::take_loopback_accepted`] instead of
    /// translating them (pasta splices them into the namespace's loopback).
    pub fn hand_off_loopback(&mut self) {
        self.loopback_accepted.get_or_insert_with(Vec::new);
    }

    /// The connections from the host's loopback accepted since the last
    /// call, each with its forward's guest port.
    pub fn take_loopback_accepted(&mut self) -> Vec<(TcpStream, u16)> {
        self.loopback_accepted
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Addresses the TCP forward listeners are bound to, in the order they
    /// were added (useful when a forward asked for port 0), with the
    /// forward each serves.
    pub fn forwards(&self) -> impl Iterator<Item = (SocketAddr, &HostForward)> + '_ {
        self.listeners
            .iter()
            .flatten()
            .filter_map(|l| Some((l.sock.local_addr().ok()?, &l.fwd)))
    }

    /// Addresses the TCP forward listeners are bound to, in `hostfwd`
    /// order (useful when a forward asked for port 0).
    pub fn forward_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.forwards().map(|(host, _)| host)
    }

    /// A snapshot of every translated connection at `now`.
    pub fn flows(&self, now: Instant) -> impl Iterator<Item = FlowInfo> + '_ {
        self.flows.iter().flatten().map(move |f| FlowInfo {
            protocol: FlowProtocol::Tcp,
            guest: f.key.guest,
            remote: f.key.remote,
            bytes_from_guest: f.bytes_from_guest,
            bytes_to_guest: f.bytes_to_guest,
            age_secs: now.saturating_duration_since(f.created).as_secs(),
        })
    }

    /// What the translation has done so far.
    pub fn stats(&self) -> &TcpStats {
        &self.sh.stats
    }

    /// Handles one TCP segment (header and payload; its checksum verified
    /// here unless the link vouched for it: `checksum`) that the guest at
    /// `src` sent to `dst`. Its payload may wait, gathered, for
    /// [`TcpTable::end_guest_batch`]: in place when `segment` lies in
    /// `batch`, the link's buffer that stays unchanged until then (empty
    /// when the link reuses its buffer: the payload is copied).
    pub fn on_guest_segment(
        &mut self,
        ctx: &mut Ctx,
        src: IpAddr,
        dst: IpAddr,
        segment: &[u8],
        checksum: RxChecksum,
        batch: &[u8],
    ) {
        let Ok(pkt) = TcpPacket::new_checked(segment) else {
            self.sh.stats.bad_segments += 1;
            ctx.counters.drop(DropReason::Truncated);
            return;
        };
        if checksum == RxChecksum::Unverified && !crate::wire::csum::verify_tcp(src, dst, segment) {
            self.sh.stats.bad_segments += 1;
            ctx.counters.drop(DropReason::BadChecksum);
            return;
        }
        if pkt.src_port() == 0 || pkt.dst_port() == 0 || (pkt.syn() && (pkt.fin() || pkt.rst())) {
            self.sh.stats.bad_segments += 1;
            ctx.counters.drop(DropReason::Malformed);
            return;
        }
        self.sh.stats.segments_from_guest += 1;
        let seg = Segment {
            seq: pkt.seq_number().0 as u32,
            ack: pkt.ack_number().0 as u32,
            syn: pkt.syn(),
            ackf: pkt.ack(),
            fin: pkt.fin(),
            rst: pkt.rst(),
            psh: pkt.psh(),
            window: pkt.window_len(),
            options: pkt.options(),
            payload: pkt.payload(),
            batch,
        };
        let key = FlowKey {
            guest: SocketAddr::new(src, pkt.src_port()),
            remote: SocketAddr::new(dst, pkt.dst_port()),
        };
        let mut found = self.lookup(&key);
        if let (Some(slot), Some(_)) = (found, self.sh.rx.owner) {
            if !self.flows[slot]
                .as_ref()
                .is_some_and(|f| f.continues_batch(&self.sh.rx, &seg))
            {
                // Gathered payload goes first; that may end its flow.
                self.flush_gathered(ctx, batch);
                found = found.filter(|&slot| self.flows[slot].is_some());
            }
        }
        match found {
            Some(slot) => {
                let Some(flow) = self.flows[slot].as_mut() else {
                    return;
                };
                flow.last_activity = ctx.now;
                let verdict = flow.on_segment(ctx, &mut self.sh, &seg);
                self.apply(slot, verdict);
            }
            None => self.stray_segment(ctx, key, &seg),
        }
    }

    /// Sends the guest payload gathered during the link's batch (see the
    /// module header) and acknowledges what the host socket took; the
    /// link calls it after delivering each batch of frames, with the
    /// buffer it handed them in (`batch`, as for
    /// [`TcpTable::on_guest_segment`]), before it changes that buffer.
    pub fn end_guest_batch(&mut self, ctx: &mut Ctx, batch: &[u8]) {
        self.flush_gathered(ctx, batch);
        self.push_acked(ctx);
    }

    /// Acts on the pure ACKs of the batch ([`PUSH_DUE`]): per flow, one
    /// discard of what they acknowledged and one push of what they allow.
    fn push_acked(&mut self, ctx: &mut Ctx) {
        if self.sh.acked.is_empty() {
            return;
        }
        let mut due = std::mem::take(&mut self.sh.acked);
        for &slot in &due {
            let Some(flow) = self.flows[slot].as_mut() else {
                continue;
            };
            if flow.flags & PUSH_DUE == 0 {
                continue;
            }
            flow.flags &= !PUSH_DUE;
            let verdict = match flow.flush_discard(&mut self.sh) {
                Ok(()) => flow.resume(ctx, &mut self.sh),
                Err(e) => flow.host_failed(ctx, &mut self.sh, &e),
            };
            self.apply(slot, verdict);
        }
        due.clear();
        self.sh.acked = due;
    }

    /// The gathered guest payload of [`TcpTable::end_guest_batch`].
    fn flush_gathered(&mut self, ctx: &mut Ctx, batch: &[u8]) {
        let Some((slot, gen)) = self.sh.rx.owner else {
            return;
        };
        match self.flows[slot].as_mut().filter(|f| f.gen == gen) {
            Some(flow) => {
                let verdict = flow.flush_batch(ctx, &mut self.sh, batch);
                self.apply(slot, verdict);
            }
            // The flow ended during the batch: nothing was acknowledged.
            None => self.sh.rx.clear(),
        }
    }

    /// The slot of the flow `key`: the last one found when it is the
    /// same, else from the table.
    fn lookup(&mut self, key: &FlowKey) -> Option<usize> {
        let hit = self
            .flows
            .get(self.last)
            .and_then(Option::as_ref)
            .is_some_and(|f| f.key == *key);
        if !hit {
            self.last = *self.map.get(key)?;
        }
        Some(self.last)
    }

    /// Handles readiness of a host socket whose token has kind
    /// [`TokenKind::TcpFlow`] or [`TokenKind::TcpListener`].
    pub fn on_host_event(&mut self, ctx: &mut Ctx, kind: TokenKind, index: usize, event: &Event) {
        match kind {
            TokenKind::TcpListener => self.accept_all(ctx, index),
            TokenKind::TcpFlow => {
                let slot = index & SLOT_MASK;
                let gen = (index >> SLOT_BITS) as u32;
                let Some(Some(flow)) = self.flows.get_mut(slot) else {
                    self.sh.stats.stale_events += 1;
                    return;
                };
                if flow.gen != gen {
                    self.sh.stats.stale_events += 1;
                    return;
                }
                flow.last_activity = ctx.now;
                let verdict = flow.on_host_event(ctx, &mut self.sh, event);
                self.apply(slot, verdict);
            }
            _ => {}
        }
    }

    /// Called after the attachment drained frames toward the guest, so
    /// flows that held back for lack of room can go on.
    pub fn on_guest_tx_space(&mut self, ctx: &mut Ctx) {
        if self.sh.waiters.is_empty() {
            return;
        }
        std::mem::swap(&mut self.sh.waiters, &mut self.serving);
        for i in 0..self.serving.len() {
            let slot = self.serving[i];
            let Some(flow) = self.flows[slot].as_mut() else {
                continue;
            };
            if flow.flags & TX_WAIT == 0 {
                continue;
            }
            flow.flags &= !TX_WAIT;
            let verdict = flow.resume(ctx, &mut self.sh);
            self.apply(slot, verdict);
        }
        self.serving.clear();
    }

    /// Runs retransmission and idle timers that are due at `ctx.now`.
    pub fn on_timer(&mut self, ctx: &mut Ctx) {
        if self.sh.deadline.is_none_or(|d| d > ctx.now) {
            return;
        }
        self.sh.deadline = None;
        for slot in 0..self.flows.len() {
            let Some(flow) = self.flows[slot].as_mut() else {
                continue;
            };
            let mut verdict = Verdict::Keep;
            if flow.timer.is_some_and(|t| t <= ctx.now) {
                flow.timer = None;
                verdict = flow.on_timeout(ctx, &mut self.sh);
            }
            if verdict == Verdict::Keep && flow.wnd_timer.is_some_and(|t| t <= ctx.now) {
                flow.wnd_timer = None;
                flow.window_recheck(ctx, &mut self.sh);
            }
            if verdict == Verdict::Keep && flow.ack_timer.is_some_and(|t| t <= ctx.now) {
                flow.ack_timer = None;
                if flow.delayed_acks > 0 {
                    flow.send_ack(ctx, &mut self.sh);
                }
            }
            if verdict == Verdict::Keep {
                for t in [flow.timer, flow.wnd_timer, flow.ack_timer]
                    .into_iter()
                    .flatten()
                {
                    self.sh.arm(t);
                }
            }
            self.apply(slot, verdict);
        }
    }

    /// Resets the host side of every connection of guest address `ip`
    /// (its VM left the link; nobody is there to answer).
    pub fn close_guest(&mut self, ip: IpAddr) {
        for slot in 0..self.flows.len() {
            if self.flows[slot]
                .as_ref()
                .is_some_and(|f| f.key.guest.ip() == ip)
            {
                self.apply(slot, Verdict::Abort);
            }
        }
    }

    /// When [`TcpTable::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sh.deadline
    }

    /// Number of translated connections.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no connection is translated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn apply(&mut self, slot: usize, verdict: Verdict) {
        if verdict == Verdict::Keep {
            return;
        }
        let Some(flow) = self.flows[slot].take() else {
            return;
        };
        // No EPOLL_CTL_DEL: closing the socket (dropping `flow`) removes it
        // from the epoll set, as the descriptor is the only reference to
        // it (nothing forks while flows exist); an event already queued
        // for it finds the slot's generation changed. One system call less
        // per connection.
        if verdict == Verdict::Abort {
            let _ = SockRef::from(&flow.sock).set_linger(Some(Duration::ZERO));
        }
        self.map.remove(&flow.key);
        self.free.push(slot);
        self.sh.stats.closed += 1;
    }

    /// A free slot and its new generation, unless the table is full.
    fn alloc_slot(&mut self) -> Option<(usize, u32)> {
        if self.map.len() >= self.max_flows {
            return None;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.flows.push(None);
            self.gens.push(0);
            self.flows.len() - 1
        });
        self.gens[slot] = (self.gens[slot] + 1) & GEN_MASK;
        Some((slot, self.gens[slot]))
    }

    /// Registers a new flow's socket and stores the flow: for readable
    /// events only when it is connected (a writable event at once would
    /// be one more turn of the event loop for nothing), for writable ones
    /// too while a connect goes on.
    fn insert(&mut self, ctx: &mut Ctx, mut flow: Flow) -> bool {
        let interest = if flow.state == State::Connecting {
            flow.flags |= WATCH_WRITABLE;
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let flow_token = flow.token();
        if let Err(e) = ctx.registry.register(&mut flow.sock, flow_token, interest) {
            tracing::warn!(error = %e, "cannot register a TCP flow socket");
            ctx.counters.drop(DropReason::HostSocketError);
            self.free.push(flow.slot);
            return false;
        }
        for t in [flow.timer, flow.wnd_timer, flow.ack_timer]
            .into_iter()
            .flatten()
        {
            self.sh.arm(t);
        }
        self.map.insert(flow.key, flow.slot);
        let slot = flow.slot;
        self.flows[slot] = Some(flow);
        true
    }

    fn next_iss(&mut self, key: &FlowKey) -> u32 {
        let mut h = self.sh.iss_key.build_hasher();
        key.hash(&mut h);
        self.sh.iss_counter += 1;
        self.sh.iss_counter.hash(&mut h);
        h.finish() as u32
    }

    /// A segment for no known flow: a SYN opens one, anything else but a
    /// RST is answered with RST.
    fn stray_segment(&mut self, ctx: &mut Ctx, key: FlowKey, seg: &Segment) {
        if seg.rst {
            return;
        }
        if seg.syn && !seg.ackf {
            self.open_outbound(ctx, key, seg);
            return;
        }
        self.sh.stats.no_flow += 1;
        reply_rst(ctx, &mut self.sh, &key, seg);
    }

    fn open_outbound(&mut self, ctx: &mut Ctx, key: FlowKey, seg: &Segment) {
        let target = match ctx.cfg.outbound_target(key.remote) {
            Outbound::Host(addr) => Some(addr),
            Outbound::Dns => ctx.cfg.dns_upstreams.first().copied(),
            Outbound::Denied(reason) => {
                ctx.counters.drop(reason.drop_reason());
                None
            }
        };
        let Some(target) = target else {
            self.sh.stats.denied += 1;
            reply_rst(ctx, &mut self.sh, &key, seg);
            return;
        };
        if self.map.len() >= self.max_flows {
            self.sh.stats.flow_limit += 1;
            ctx.counters.drop(DropReason::FlowLimit);
            reply_rst(ctx, &mut self.sh, &key, seg);
            return;
        }
        // The guest-forward helper serves only sockets the stack names to
        // it (before they connect).
        let name_to = match (ctx.forward_notices, key.remote) {
            (Some(notices), SocketAddr::V4(dst)) if ctx.cfg.services.redirect(dst).is_some() => {
                Some(notices)
            }
            _ => None,
        };
        let source = ctx.cfg.outbound.for_target(target);
        let sock = match connect_nonblocking(target, source, name_to) {
            Ok(s) => s,
            Err(e) => {
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    self.sh.stats.refused += 1;
                } else {
                    self.sh.stats.connect_failed += 1;
                    ctx.counters.drop(DropReason::HostSocketError);
                }
                tracing::debug!(%target, error = %e, "TCP connect failed at once");
                reply_rst(ctx, &mut self.sh, &key, seg);
                return;
            }
        };
        let Some((slot, gen)) = self.alloc_slot() else {
            return;
        };
        let iss = self.next_iss(&key);
        let (mss, wscale) = syn_options(seg.options);
        let mut flow = Flow::new(sock, key, slot, gen, iss, State::Connecting, ctx.now);
        flow.mss = mss.min(flow.our_mss(&self.sh));
        if let Some(ws) = wscale {
            flow.snd_wscale = ws;
            flow.rcv_wscale = OUR_WSCALE;
        }
        flow.rcv_nxt = seg.seq.wrapping_add(1);
        flow.rcv_edge = flow.rcv_nxt;
        flow.snd_wnd = u32::from(seg.window);
        flow.timer = Some(ctx.now + CONNECT_TIMEOUT);
        // A connect over loopback has usually completed by the time
        // connect() returns: answer the SYN now, not a wake-up later on the
        // socket's writable event, and register the socket as connected
        // (readable events only).
        let progress = flow.connect_progress();
        if matches!(progress, Ok(true)) {
            flow.state = State::SynReceived;
        }
        if self.insert(ctx, flow) {
            self.sh.stats.opened_outbound += 1;
            tracing::debug!(guest = %key.guest, remote = %key.remote, %target, "TCP connect");
            if let Some(flow) = self.flows[slot].as_mut() {
                let verdict = flow.check_connect(ctx, &mut self.sh, progress);
                self.apply(slot, verdict);
            }
        } else {
            reply_rst(ctx, &mut self.sh, &key, seg);
        }
    }

    fn accept_all(&mut self, ctx: &mut Ctx, index: usize) {
        loop {
            let Some(Some(listener)) = self.listeners.get(index) else {
                return;
            };
            let guest = ctx.forward_guest(&listener.fwd);
            let port = listener.fwd.guest_port;
            let (sock, peer) = match listener.sock.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "hostfwd accept failed");
                    ctx.counters.drop(DropReason::HostSocketError);
                    return;
                }
            };
            if let Some(queue) = self
                .loopback_accepted
                .as_mut()
                .filter(|_| peer.ip().is_loopback())
            {
                queue.push((sock, port));
                continue;
            }
            let Some(guest) = guest else {
                // An IPv6 forward before the guest has configured an address.
                tracing::info!(%peer, "hostfwd: the guest has no IPv6 address yet; connection closed");
                ctx.counters.drop(DropReason::NotForUs);
                let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                continue;
            };
            self.open_forward(ctx, sock, peer, guest);
        }
    }

    fn open_forward(
        &mut self,
        ctx: &mut Ctx,
        sock: TcpStream,
        peer: SocketAddr,
        guest: SocketAddr,
    ) {
        let host = ctx.host_addr_for(guest.ip());
        // A peer outside keeps its own address and port, as in libslirp;
        // a loopback peer appears as the host address on a port of its own.
        let real = crate::config::guest_visible(ctx.cfg, guest.ip(), peer)
            .filter(|r| r.ip() != host && !self.map.contains_key(&FlowKey { guest, remote: *r }));
        let remote = match real {
            Some(r) => Some(r),
            None => self
                .forward_port(guest, host)
                .map(|port| SocketAddr::new(host, port)),
        };
        let slot = remote.and_then(|_| self.alloc_slot());
        let (Some(remote), Some((slot, gen))) = (remote, slot) else {
            self.sh.stats.flow_limit += 1;
            ctx.counters.drop(DropReason::FlowLimit);
            let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
            return;
        };
        let _ = sock.set_nodelay(true);
        let _ = SockRef::from(&sock).set_keepalive(true);
        let key = FlowKey { guest, remote };
        let iss = self.next_iss(&key);
        let mut flow = Flow::new(sock, key, slot, gen, iss, State::SynSent, ctx.now);
        flow.enable_peek_offset(&mut self.sh);
        flow.open_window();
        flow.send_syn(ctx, &mut self.sh);
        flow.timer = Some(ctx.now + RTO_INITIAL);
        if self.insert(ctx, flow) {
            self.sh.stats.opened_forward += 1;
            tracing::debug!(%peer, guest = %key.guest, "hostfwd TCP connection");
        }
    }

    /// An ephemeral port of the host address not used toward `guest`.
    fn forward_port(&mut self, guest: SocketAddr, host: IpAddr) -> Option<u16> {
        for _ in FORWARD_PORT_FIRST..=u16::MAX {
            let port = self.sh.next_forward_port;
            self.sh.next_forward_port = port.checked_add(1).unwrap_or(FORWARD_PORT_FIRST);
            let key = FlowKey {
                guest,
                remote: SocketAddr::new(host, port),
            };
            if !self.map.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }
}

impl Flow {
    fn new(
        sock: TcpStream,
        key: FlowKey,
        slot: usize,
        gen: u32,
        iss: u32,
        state: State,
        now: Instant,
    ) -> Flow {
        Flow {
            sock,
            key,
            slot,
            gen,
            state,
            flags: 0,
            iss,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            snd_max: iss.wrapping_add(1),
            snd_wnd: 0,
            snd_wscale: 0,
            mss: DEFAULT_GUEST_MSS,
            unsent: 0,
            undiscarded: 0,
            dup_acks: 0,
            recover: 0,
            retries: 0,
            rto: RTO_INITIAL,
            srtt_us: 0,
            rttvar_us: 0,
            rtt_probe: None,
            timer: None,
            wnd_timer: None,
            delayed_acks: 0,
            ack_timer: None,
            wnd_backoff: 0,
            rcv_nxt: 0,
            rcv_edge: 0,
            rcv_wscale: 0,
            sndbuf: 0,
            last_activity: now,
            created: now,
            bytes_from_guest: 0,
            bytes_to_guest: 0,
        }
    }

    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The token the flow's socket is registered with: slot and generation.
    fn token(&self) -> mio::Token {
        token(
            TokenKind::TcpFlow,
            self.slot | ((self.gen as usize) << SLOT_BITS),
        )
    }

    /// Adds writable events to the socket's registration (once, when a
    /// window first closes: it re-opens on the socket's writable edge).
    /// Should the kernel refuse, the re-check timer still re-opens it.
    fn watch_writable(&mut self, registry: &Registry) {
        if self.flags & WATCH_WRITABLE != 0 {
            return;
        }
        match self.reregister(registry, self.flags | WATCH_WRITABLE) {
            Ok(()) => self.flags |= WATCH_WRITABLE,
            Err(e) => tracing::debug!(error = %e, "cannot watch a TCP socket for room"),
        }
    }

    /// Registers the socket for the events `flags` ask for: always its
    /// errors, hang-ups and the host's EOF (`EPOLLRDHUP`), data unless
    /// [`READ_PARKED`], room with [`WATCH_WRITABLE`]; edge-triggered, as
    /// mio registers it.
    fn reregister(&self, registry: &Registry, flags: u16) -> io::Result<()> {
        let mut events = libc::EPOLLET | libc::EPOLLRDHUP;
        if flags & READ_PARKED == 0 {
            events |= libc::EPOLLIN;
        }
        if flags & WATCH_WRITABLE != 0 {
            events |= libc::EPOLLOUT;
        }
        epoll::control(
            registry,
            epoll::Op::Modify,
            self.fd(),
            events as u32,
            self.token(),
        )
    }

    /// Turns the socket's readable events off while the flow knows of
    /// unsent bytes it cannot send yet (the guest's window or `GuestTx`
    /// is full): each segment the host adds meanwhile would wake the loop
    /// only for a `FIONREAD`. [`Flow::send_segments`] asks `FIONREAD`
    /// itself when the known bytes run out, and turns the events on again
    /// only once the socket is empty; the host's EOF and errors are
    /// reported all along. Should the kernel refuse, the events stay on
    /// (more wake-ups, no harm).
    fn park_reading(&mut self, registry: &Registry) {
        if self.unsent == 0 || self.flags & READ_PARKED != 0 {
            return;
        }
        match self.reregister(registry, self.flags | READ_PARKED) {
            Ok(()) => self.flags |= READ_PARKED,
            Err(e) => tracing::debug!(error = %e, "cannot park a TCP socket's readable events"),
        }
    }

    /// Turns the socket's readable events back on (the socket was found
    /// empty); the change reports at once data that came in between. An
    /// error is the host socket's failure: without the events the flow
    /// would wait for nothing.
    fn unpark_reading(&mut self, registry: &Registry) -> io::Result<()> {
        self.reregister(registry, self.flags & !READ_PARKED)?;
        self.flags &= !READ_PARKED;
        Ok(())
    }

    /// The MSS we announce and the largest segment we send on this flow:
    /// the IPv4 figure less the 20 bytes IPv6's larger header takes.
    /// Most payload bytes in one segment toward the guest: the guest's MSS,
    /// or as many whole MSS-sized segments as one offload frame carries.
    fn max_payload(&self, ctx: &Ctx) -> u32 {
        let mss = u32::from(self.mss);
        if !ctx.tx.offload() {
            return mss;
        }
        // Room for the larger (IPv6) header and a TCP header without options.
        let most = (MAX_OFFLOAD_PACKET - IPV6_HEADER_LEN - 20) as u32;
        (most / mss).max(1) * mss
    }

    fn our_mss(&self, sh: &Shared) -> u16 {
        if self.key.guest.is_ipv6() {
            sh.our_mss.saturating_sub(20).max(1)
        } else {
            sh.our_mss
        }
    }

    /// Bytes of host data sent to the guest and not yet acknowledged (the
    /// kernel's peek offset).
    fn in_flight(&self) -> u32 {
        let fin = u32::from(self.flags & FIN_SENT != 0 && self.snd_nxt == self.snd_max);
        self.snd_nxt.wrapping_sub(self.snd_una).wrapping_sub(fin)
    }

    fn rcv_room(&self) -> u32 {
        let room = self.rcv_edge.wrapping_sub(self.rcv_nxt);
        if (room as i32) < 0 {
            0
        } else {
            room
        }
    }

    fn arm_timer(&mut self, sh: &mut Shared, at: Instant) {
        self.timer = Some(at);
        sh.arm(at);
    }

    fn wait_tx(&mut self, sh: &mut Shared) {
        if self.flags & TX_WAIT == 0 {
            self.flags |= TX_WAIT;
            sh.waiters.push(self.slot);
        }
    }

    /// Switches the socket to peeking at `SO_PEEK_OFF`, or to the
    /// discard-buffer fallback where the kernel lacks it.
    fn enable_peek_offset(&mut self, sh: &mut Shared) {
        #[cfg(test)]
        let forced = sh.force_peek_fallback;
        #[cfg(not(test))]
        let forced = false;
        if forced || set_peek_offset(self.fd(), 0).is_err() {
            self.flags |= PEEK_FALLBACK;
            if sh.discard.is_empty() {
                sh.discard = vec![0; FALLBACK_PEEK_WINDOW];
            }
        }
    }

    /// Moves the guest-facing window's right edge to the host socket's
    /// free send-buffer room, when it ran low (or always with `force`).
    fn refresh_window(&mut self, force: bool) {
        if !force && self.rcv_room() >= self.sndbuf / 2 {
            return;
        }
        let Ok(queued) = ioctl_int(self.fd(), libc::TIOCOUTQ) else {
            return;
        };
        self.window_for_queued(queued);
    }

    /// The first window of a new connection: nothing has been written to
    /// its host socket, so nothing is queued there (no `TIOCOUTQ`, one
    /// system call less on the way to the SYN or SYN-ACK).
    fn open_window(&mut self) {
        self.window_for_queued(0);
    }

    /// Moves the window's right edge to the host socket's send buffer
    /// less the `queued` bytes it holds.
    fn window_for_queued(&mut self, queued: u32) {
        let sock = SockRef::from(&self.sock);
        let Ok(sndbuf) = sock.send_buffer_size() else {
            return;
        };
        self.sndbuf = u32::try_from(sndbuf).unwrap_or(u32::MAX);
        // SO_SNDBUF counts kernel overhead too: keep an eighth in reserve.
        let usable = self.sndbuf - self.sndbuf / 8;
        let max_window = 0xffff_u32 << self.rcv_wscale;
        let free = usable.saturating_sub(queued).min(max_window);
        let edge = self.rcv_nxt.wrapping_add(free);
        if seq_gt(edge, self.rcv_edge) {
            self.rcv_edge = edge;
        }
    }

    /// The window field of the next segment toward the guest; arms the
    /// re-check timer (and the socket's writable events) when the window
    /// has closed.
    fn window_field(&mut self, ctx: &Ctx, sh: &mut Shared) -> u16 {
        if self.flags & GUEST_FIN == 0 {
            self.refresh_window(false);
            if self.rcv_room() < u32::from(self.our_mss(sh)) && self.flags & WND_CLOSED == 0 {
                self.flags |= WND_CLOSED;
                self.wnd_backoff = 0;
                self.watch_writable(ctx.registry);
                let at = ctx.now + WINDOW_RECHECK;
                self.wnd_timer = Some(at);
                sh.arm(at);
            }
        }
        (self.rcv_room() >> self.rcv_wscale).min(0xffff) as u16
    }

    fn out(&self, seq: u32, flags: u8, window: u16) -> Out {
        Out {
            src: self.key.remote,
            dst: self.key.guest,
            seq,
            ack: self.rcv_nxt,
            flags,
            window,
            syn_opts: None,
        }
    }

    /// Sends a segment without payload at `seq`. A pure ACK that finds
    /// no room toward the guest is remembered and sent later.
    fn send_flags(&mut self, ctx: &mut Ctx, sh: &mut Shared, seq: u32, flags: u8) -> bool {
        if ctx.tx.free_slots() == 0 {
            if flags == F_ACK {
                self.flags |= ACK_PENDING;
                self.wait_tx(sh);
            }
            return false;
        }
        let window = self.window_field(ctx, sh);
        let sent = emit(ctx, &self.out(seq, flags, window), 0, None, |_| true);
        if sent {
            self.ack_sent();
        }
        sent
    }

    /// A segment carrying our current ACK went out: nothing is owed.
    fn ack_sent(&mut self) {
        self.flags &= !ACK_PENDING;
        self.delayed_acks = 0;
        self.ack_timer = None;
    }

    fn send_ack(&mut self, ctx: &mut Ctx, sh: &mut Shared) {
        self.send_flags(ctx, sh, self.snd_nxt, F_ACK);
    }

    fn challenge_ack(&mut self, ctx: &mut Ctx, sh: &mut Shared) {
        sh.stats.challenge_acks += 1;
        self.send_ack(ctx, sh);
    }

    /// Tells the guest the connection is gone.
    fn reset_guest(&mut self, ctx: &mut Ctx, sh: &mut Shared) {
        sh.stats.resets_to_guest += 1;
        let out = self.out(self.snd_nxt, F_RST | F_ACK, 0);
        emit(ctx, &out, 0, None, |_| true);
    }

    /// The host socket failed: RST to the guest, drop the flow.
    fn host_failed(&mut self, ctx: &mut Ctx, sh: &mut Shared, e: &io::Error) -> Verdict {
        tracing::debug!(guest = %self.key.guest, remote = %self.key.remote, error = %e, "host socket failed");
        self.reset_guest(ctx, sh);
        Verdict::Abort
    }

    /// Our SYN (host forward) or SYN-ACK (guest connect), at `iss`.
    fn send_syn(&mut self, ctx: &mut Ctx, sh: &mut Shared) {
        let (flags, ack, wscale) = if self.state == State::SynSent {
            (F_SYN, 0, Some(OUR_WSCALE))
        } else {
            (
                F_SYN | F_ACK,
                self.rcv_nxt,
                (self.rcv_wscale > 0).then_some(self.rcv_wscale),
            )
        };
        let out = Out {
            src: self.key.remote,
            dst: self.key.guest,
            seq: self.iss,
            ack,
            flags,
            // The window of a SYN is never scaled.
            window: self.rcv_room().min(0xffff) as u16,
            syn_opts: Some((self.our_mss(sh), wscale)),
        };
        emit(ctx, &out, 0, None, |_| true);
    }

    fn on_segment(&mut self, ctx: &mut Ctx, sh: &mut Shared, seg: &Segment) -> Verdict {
        match self.state {
            State::Connecting => {
                if seg.rst && seg.seq == self.rcv_nxt {
                    sh.stats.resets_from_guest += 1;
                    return Verdict::Abort;
                }
                // A retransmitted SYN: the host connect is still going on.
                Verdict::Keep
            }
            State::SynReceived => {
                if seg.rst {
                    if seg.seq == self.rcv_nxt {
                        sh.stats.resets_from_guest += 1;
                        return Verdict::Abort;
                    }
                    return Verdict::Keep;
                }
                if seg.syn {
                    if seg.seq.wrapping_add(1) == self.rcv_nxt {
                        self.send_syn(ctx, sh);
                    }
                    return Verdict::Keep;
                }
                if !seg.ackf || seg.ack != self.iss.wrapping_add(1) {
                    return Verdict::Keep;
                }
                self.snd_una = seg.ack;
                self.state = State::Established;
                self.timer = None;
                self.retries = 0;
                if let Err(e) = self.unsent_at_establishment() {
                    return self.host_failed(ctx, sh, &e);
                }
                self.established(ctx, sh, seg)
            }
            State::SynSent => {
                if seg.rst {
                    if seg.ackf && seg.ack == self.iss.wrapping_add(1) {
                        sh.stats.resets_from_guest += 1;
                        return Verdict::Abort;
                    }
                    return Verdict::Keep;
                }
                if !(seg.syn && seg.ackf && seg.ack == self.iss.wrapping_add(1)) {
                    return Verdict::Keep;
                }
                let (mss, wscale) = syn_options(seg.options);
                self.mss = mss.min(self.our_mss(sh));
                match wscale {
                    Some(ws) => {
                        self.snd_wscale = ws;
                        self.rcv_wscale = OUR_WSCALE;
                    }
                    None => {
                        self.snd_wscale = 0;
                        self.rcv_wscale = 0;
                    }
                }
                self.rcv_nxt = seg.seq.wrapping_add(1);
                self.rcv_edge = self.rcv_nxt;
                self.refresh_window(true);
                self.snd_wnd = u32::from(seg.window);
                self.snd_una = seg.ack;
                self.state = State::Established;
                self.timer = None;
                self.retries = 0;
                if let Err(e) = self.unsent_at_establishment() {
                    return self.host_failed(ctx, sh, &e);
                }
                match self.push_data(ctx, sh) {
                    Ok(0) => self.send_ack(ctx, sh),
                    Ok(_) => {}
                    Err(v) => return v,
                }
                self.settle(ctx.now, sh)
            }
            State::Established => self.established(ctx, sh, seg),
        }
    }

    fn established(&mut self, ctx: &mut Ctx, sh: &mut Shared, seg: &Segment) -> Verdict {
        if seg.rst {
            if seg.seq == self.rcv_nxt {
                sh.stats.resets_from_guest += 1;
                return Verdict::Abort;
            }
            let off = seg.seq.wrapping_sub(self.rcv_nxt);
            if off < self.rcv_room().max(1) {
                self.challenge_ack(ctx, sh);
            }
            return Verdict::Keep;
        }
        if seg.syn {
            self.challenge_ack(ctx, sh);
            return Verdict::Keep;
        }
        if !seg.ackf {
            return Verdict::Keep;
        }
        if seq_gt(seg.ack, self.snd_max) {
            self.challenge_ack(ctx, sh);
            return Verdict::Keep;
        }
        if seq_ge(seg.ack, self.snd_una) {
            let window = u32::from(seg.window) << self.snd_wscale;
            if seg.ack == self.snd_una {
                let duplicate = seg.payload.is_empty()
                    && !seg.fin
                    && window == self.snd_wnd
                    && self.snd_una != self.snd_max;
                self.snd_wnd = window;
                if self.snd_una == self.snd_max {
                    // An answer to a window probe: the guest is alive.
                    self.retries = 0;
                }
                if duplicate {
                    self.dup_acks = self.dup_acks.saturating_add(1);
                    if self.dup_acks == 3 && self.flags & RECOVERY == 0 {
                        self.flags |= RECOVERY;
                        self.recover = self.snd_max;
                        if let Err(e) = self.retransmit_first(ctx, sh) {
                            return self.host_failed(ctx, sh, &e);
                        }
                    }
                }
            } else {
                self.snd_wnd = window;
                if let Err(e) = self.on_new_ack(ctx, sh, seg.ack) {
                    return self.host_failed(ctx, sh, &e);
                }
            }
        }
        if seg.payload.is_empty() && !seg.fin {
            // A pure ACK: what it acknowledged is dropped, and what it
            // allows sent, when the link's batch ends, together with the
            // batch's other ACKs of this flow (one discard and one peek).
            if self.flags & PUSH_DUE == 0 {
                self.flags |= PUSH_DUE;
                sh.acked.push(self.slot);
            }
            return self.settle(ctx.now, sh);
        }
        let mut need_ack = false;
        if !seg.payload.is_empty() || seg.fin {
            match self.on_data(sh, seg) {
                // A lone full-size segment: its ACK may wait for the next.
                Ok(Taken::Full) if self.delayed_acks == 0 => self.delay_ack(ctx.now, sh),
                Ok(Taken::Full | Taken::Other) => need_ack = true,
                // Acknowledged when the batch is sent.
                Ok(Taken::Gathered) => {}
                Err(e) => return self.host_failed(ctx, sh, &e),
            }
        }
        match self.push_data(ctx, sh) {
            Ok(0) if need_ack => self.send_ack(ctx, sh),
            Ok(_) => {}
            Err(v) => return v,
        }
        self.settle(ctx.now, sh)
    }

    /// The guest acknowledged new data up to `ack`.
    fn on_new_ack(&mut self, ctx: &mut Ctx, sh: &mut Shared, ack: u32) -> io::Result<()> {
        let fin_acked = self.flags & FIN_SENT != 0 && ack == self.snd_max;
        let data = ack.wrapping_sub(self.snd_una) - u32::from(fin_acked);
        self.undiscarded += data;
        sh.stats.bytes_to_guest += u64::from(data);
        self.bytes_to_guest += u64::from(data);
        if seq_gt(ack, self.snd_nxt) {
            // After a go-back the guest had kept later data: skip it.
            self.unsent = self.unsent.saturating_sub(ack.wrapping_sub(self.snd_nxt));
            self.snd_nxt = ack;
        }
        self.snd_una = ack;
        if let Some((seq, sent)) = self.rtt_probe {
            if seq_ge(ack, seq) {
                self.rtt_probe = None;
                self.rtt_sample(ctx.now.saturating_duration_since(sent));
            }
        }
        self.dup_acks = 0;
        self.retries = 0;
        if self.flags & RECOVERY != 0 {
            if seq_ge(ack, self.recover) {
                self.flags &= !RECOVERY;
            } else {
                self.retransmit_first(ctx, sh)?;
            }
        }
        if self.snd_una == self.snd_max {
            self.timer = None;
        } else {
            self.arm_timer(sh, ctx.now + self.rto);
        }
        Ok(())
    }

    fn rtt_sample(&mut self, sample: Duration) {
        let r = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX / 8);
        if self.srtt_us == 0 {
            self.srtt_us = r.max(1);
            self.rttvar_us = r / 2;
        } else {
            self.rttvar_us = (3 * self.rttvar_us + self.srtt_us.abs_diff(r)) / 4;
            self.srtt_us = (7 * self.srtt_us + r) / 8;
        }
        self.rto = Duration::from_micros(self.srtt_us + 4 * self.rttvar_us).clamp(RTO_MIN, RTO_MAX);
    }

    /// Holds the ACK of a lone full-size segment until the next one or
    /// [`DELAYED_ACK`].
    fn delay_ack(&mut self, now: Instant, sh: &mut Shared) {
        self.delayed_acks = 1;
        let at = now + DELAYED_ACK;
        self.ack_timer = Some(at);
        sh.arm(at);
    }

    /// Whether `seg` may join the payload gathered in `rx` without
    /// sending it first: in-order data (or FIN) of the flow that owns it,
    /// and nothing else.
    fn continues_batch(&self, rx: &RxBatch, seg: &Segment) -> bool {
        rx.owner == Some((self.slot, self.gen))
            && self.state == State::Established
            && !seg.syn
            && !seg.rst
            && seg.ackf
            && (!seg.payload.is_empty() || seg.fin)
            && seg.seq == self.rcv_nxt.wrapping_add(rx.len as u32)
            && rx.takes(self.slot, self.gen, seg.payload, seg.batch)
    }

    /// Payload (and FIN) from the guest: in-order bytes are gathered for
    /// the end of the link's batch when they fit, else go straight to the
    /// host socket, as many as it takes. Returns what became of them.
    fn on_data(&mut self, sh: &mut Shared, seg: &Segment) -> io::Result<Taken> {
        if self.flags & GUEST_FIN != 0 {
            return Ok(Taken::Other);
        }
        let len = seg.payload.len() as u32;
        // Gathered bytes are the flow's next ones (the table sends them
        // before anything that does not continue them).
        let gathered = if sh.rx.owner == Some((self.slot, self.gen)) {
            sh.rx.len as u32
        } else {
            0
        };
        let already = self.rcv_nxt.wrapping_add(gathered).wrapping_sub(seg.seq);
        if (already as i32) < 0 {
            sh.stats.out_of_order += 1;
            return Ok(Taken::Other);
        }
        if already > len {
            return Ok(Taken::Other);
        }
        let data = &seg.payload[already as usize..];
        // A segmentation-offload frame holds several full-size segments:
        // acknowledged at once, as Linux does a GRO'd packet.
        let mss = u32::from(self.our_mss(sh));
        let full = already == 0 && !seg.fin && !seg.psh && (mss..2 * mss).contains(&len);
        if sh.rx.takes(self.slot, self.gen, data, seg.batch) {
            sh.rx
                .push(self.slot, self.gen, data, seg.batch, full, seg.fin);
            return Ok(Taken::Gathered);
        }
        let complete = self.write_payload(sh, &[IoSlice::new(data)])?;
        if seg.fin && complete {
            self.take_fin()?;
        }
        Ok(if complete && full {
            Taken::Full
        } else {
            Taken::Other
        })
    }

    /// Sends the payload gathered in `sh.rx` (this flow's; pieces in
    /// place lie in `batch`), takes a gathered FIN when all of it went,
    /// and acknowledges: at once, or after [`DELAYED_ACK`] for a lone
    /// full-size segment.
    fn flush_batch(&mut self, ctx: &mut Ctx, sh: &mut Shared, batch: &[u8]) -> Verdict {
        let buf = std::mem::take(&mut sh.rx.buf);
        let pieces = std::mem::take(&mut sh.rx.pieces);
        let mut iov = [IoSlice::new(&[]); RX_BATCH_PIECES];
        let mut n = 0;
        let mut intact = true;
        if sh.rx.at.is_some() {
            intact = sh.rx.at == Some(buffer_id(batch));
            for &(start, len) in &pieces {
                match batch.get(start..start + len).filter(|_| intact) {
                    Some(piece) => iov[n] = IoSlice::new(piece),
                    None => intact = false,
                }
                n += 1;
            }
        } else if sh.rx.len > 0 {
            iov[0] = IoSlice::new(&buf[..sh.rx.len]);
            n = 1;
        }
        let written = if intact {
            self.write_payload(sh, &iov[..n])
        } else {
            // The link changed its buffer before the batch ended (a bug
            // there): nothing is sent or acknowledged, the guest resends.
            tracing::warn!("guest payload gathered in a buffer that changed: dropped");
            Ok(false)
        };
        sh.rx.buf = buf;
        sh.rx.pieces = pieces;
        let RxBatch {
            segments,
            full,
            fin,
            ..
        } = sh.rx;
        sh.rx.clear();
        let complete = match written {
            Ok(complete) => complete,
            Err(e) => return self.host_failed(ctx, sh, &e),
        };
        if fin && complete {
            if let Err(e) = self.take_fin() {
                return self.host_failed(ctx, sh, &e);
            }
        }
        if complete && segments == 1 && full && self.delayed_acks == 0 {
            self.delay_ack(ctx.now, sh);
        } else {
            self.send_ack(ctx, sh);
        }
        self.settle(ctx.now, sh)
    }

    /// Writes in-order guest payload (`data`, in order: one `writev`)
    /// to the host socket and moves `rcv_nxt` past what it took. Returns
    /// whether it took all of it.
    fn write_payload(&mut self, sh: &mut Shared, data: &[IoSlice]) -> io::Result<bool> {
        let len: usize = data.iter().map(|d| d.len()).sum();
        if len == 0 {
            return Ok(true);
        }
        sh.stats.writes_to_host += 1;
        let written = loop {
            match (&self.sock).write_vectored(data) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.rcv_nxt = self.rcv_nxt.wrapping_add(written as u32);
        sh.stats.bytes_to_host += written as u64;
        self.bytes_from_guest += written as u64;
        if written < len {
            sh.stats.partial_writes += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// The guest's FIN, in order after all its data: half-closes the host
    /// socket.
    fn take_fin(&mut self) -> io::Result<()> {
        self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        self.flags |= GUEST_FIN;
        self.flags &= !WND_CLOSED;
        self.wnd_timer = None;
        // When our FIN is out and acknowledged the flow ends with this
        // segment, and closing the socket (every byte of it read) sends
        // the host its FIN: no `shutdown` first.
        if self.flags & FIN_SENT != 0 && self.snd_una == self.snd_max {
            return Ok(());
        }
        match self.sock.shutdown(Shutdown::Write) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What waits in the host socket when the flow becomes established:
    /// read (`FIONREAD`) only when the socket reported data or EOF before
    /// (edge-triggered events: any later data brings an event of its
    /// own), so the usual connection spends no system call here.
    fn unsent_at_establishment(&mut self) -> io::Result<()> {
        if self.flags & HOST_READABLE == 0 {
            return Ok(());
        }
        self.refresh_unsent()
    }

    /// Re-reads how many bytes wait in the host socket beyond `snd_nxt`.
    fn refresh_unsent(&mut self) -> io::Result<()> {
        debug_assert_eq!(
            self.undiscarded, 0,
            "FIONREAD would count acknowledged bytes"
        );
        let queued = ioctl_int(self.fd(), libc::FIONREAD)?;
        self.unsent = queued.saturating_sub(self.in_flight());
        Ok(())
    }

    /// Drops the bytes the guest acknowledged since the last call from the
    /// host socket ([`Flow::undiscarded`]): one `recv` for all of a
    /// batch's ACKs. Called before anything that uses the kernel's peek
    /// offset or queue length.
    fn flush_discard(&mut self, sh: &mut Shared) -> io::Result<()> {
        if self.undiscarded > 0 {
            discard(self.fd(), std::mem::take(&mut self.undiscarded))?;
            sh.stats.discards += 1;
        }
        Ok(())
    }

    /// Sends host data the guest's window allows, then our FIN once the
    /// host has closed and everything is out. Returns the segments sent.
    fn push_data(&mut self, ctx: &mut Ctx, sh: &mut Shared) -> Result<usize, Verdict> {
        if self.state != State::Established {
            return Ok(0);
        }
        let mut sent = match self.send_segments(ctx, sh) {
            Ok(n) => n,
            Err(e) => return Err(self.host_failed(ctx, sh, &e)),
        };
        self.park_reading(ctx.registry);
        if self.unsent == 0 && self.flags & (HOST_EOF | FIN_SENT) == HOST_EOF {
            if ctx.tx.free_slots() == 0 {
                self.wait_tx(sh);
            } else if self.send_flags(ctx, sh, self.snd_nxt, F_FIN | F_ACK) {
                self.snd_nxt = self.snd_nxt.wrapping_add(1);
                self.snd_max = self.snd_nxt;
                self.flags |= FIN_SENT;
                sent += 1;
            }
        }
        if sent > 0 {
            self.ack_sent();
            if self.timer.is_none() {
                self.arm_timer(sh, ctx.now + self.rto);
            }
        }
        Ok(sent)
    }

    /// The data segments of [`Flow::push_data`]. The payload of as many
    /// segments as the window, `unsent` and `GuestTx` allow is peeked with
    /// one `recvmsg` straight into the payload areas of their frame slots
    /// ([`crate::iface::GuestTx::read_into_free`]), and the frames are then
    /// built around it, headers and checksum only: one system call and one
    /// copy (the kernel's) for up to [`MAX_FILL_SLOTS`](crate::iface::tx::MAX_FILL_SLOTS) segments. A peek
    /// that returns less than asked sends what it got (the last segment
    /// shorter) and re-reads `unsent`. Toward a guest whose Ethernet
    /// address is not known yet, a segment is built on its own
    /// ([`Flow::emit_data`]: such a frame is held outside `GuestTx`).
    fn send_segments(&mut self, ctx: &mut Ctx, sh: &mut Shared) -> io::Result<usize> {
        self.flush_discard(sh)?;
        let mut sent = 0;
        let mut window = None;
        loop {
            if self.unsent == 0 {
                if self.flags & READ_PARKED == 0 {
                    break;
                }
                // No event told of what came since the socket was
                // parked: ask, and wait for events again only once it is
                // empty (the change reports what comes meanwhile).
                self.refresh_unsent()?;
                if self.unsent == 0 {
                    self.unpark_reading(ctx.registry)?;
                    break;
                }
            }
            let outstanding = self.snd_nxt.wrapping_sub(self.snd_una);
            let mut room = self.snd_wnd.saturating_sub(outstanding);
            if self.flags & PEEK_FALLBACK != 0 {
                room = room.min((sh.discard.len() as u32).saturating_sub(self.in_flight()));
            }
            if room == 0 {
                break;
            }
            if ctx.tx.free_slots() == 0 {
                self.wait_tx(sh);
                break;
            }
            let max = self.max_payload(ctx);
            let sendable = self.unsent.min(room);
            let window = *window.get_or_insert_with(|| self.window_field(ctx, sh));
            let offset = self.in_flight();
            if !ctx.resolved(self.key.guest.ip()) {
                let len = sendable.min(max);
                let (flags, fin) = self.data_flags(len);
                let fresh = self.snd_nxt == self.snd_max;
                if !self.emit_data(ctx, sh, self.snd_nxt, offset, len, flags, window)? {
                    break;
                }
                self.sent_data(ctx.now, len, fin, fresh);
                sent += 1;
                continue;
            }
            let ip_len = if self.key.guest.is_ipv6() {
                IPV6_HEADER_LEN
            } else {
                IPV4_HEADER_LEN
            };
            let at = ETHERNET_HEADER_LEN + ip_len + TCP_HEADER_LEN;
            // What a slot holds after the headers (the MSS never exceeds
            // it; kept so the segments below and the slots always agree).
            let max = max.min(ctx.tx.max_frame_len().saturating_sub(at) as u32);
            let fd = self.fd();
            let slots = ctx
                .tx
                .free_slots()
                .min(crate::iface::tx::MAX_FILL_SLOTS)
                .min(sendable.div_ceil(max) as usize);
            let asked = sendable.min(max * slots as u32);
            let skip =
                (self.flags & PEEK_FALLBACK != 0).then(|| &mut sh.discard[..offset as usize]);
            sh.stats.peeks_from_host += 1;
            let got = match ctx
                .tx
                .read_into_free(at, max as usize, asked as usize, skip, |iov| {
                    peek_iov(fd, iov)
                }) {
                Ok(0) => {
                    self.refresh_unsent()?;
                    break;
                }
                Ok(n) => n as u32,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.refresh_unsent()?;
                    break;
                }
                Err(e) => return Err(e),
            };
            let mut done = 0;
            while done < got && ctx.tx.filled() > 0 {
                let len = (got - done).min(max);
                let (flags, fin) = self.data_flags(len);
                let fresh = self.snd_nxt == self.snd_max;
                let out = self.out(self.snd_nxt, flags, window);
                let offload = ctx.tx.offload().then_some(self.mss);
                // The payload is in the slot already.
                if !emit(ctx, &out, len as usize, offload, |_| true) {
                    break;
                }
                self.sent_data(ctx.now, len, fin, fresh);
                sent += 1;
                done += len;
            }
            if done < got {
                // A frame was refused: what was peeked for it and after it
                // goes again later.
                ctx.tx.drop_filled();
                if self.flags & PEEK_FALLBACK == 0 {
                    set_peek_offset(fd, self.in_flight())?;
                }
                break;
            }
            if got < asked {
                // The socket held less than FIONREAD said.
                tracing::debug!(expected = asked, got, "short peek");
                self.refresh_unsent()?;
            }
        }
        Ok(sent)
    }

    /// The flags of a data segment of `len` bytes from `snd_nxt`, and
    /// whether it carries our FIN: the host's EOF rides on its last data,
    /// as Linux sends a FIN on the tail segment (one frame less per
    /// connection whose server answers and closes).
    fn data_flags(&self, len: u32) -> (u8, bool) {
        let last = len == self.unsent;
        let fin = last && self.flags & (HOST_EOF | FIN_SENT) == HOST_EOF;
        let flags = match (last, fin) {
            (true, true) => F_ACK | F_PSH | F_FIN,
            (true, false) => F_ACK | F_PSH,
            _ => F_ACK,
        };
        (flags, fin)
    }

    /// Moves the send state past a data segment of `len` bytes just queued
    /// (`fin`: with our FIN; `fresh`: new data, an RTT probe if none runs).
    fn sent_data(&mut self, now: Instant, len: u32, fin: bool, fresh: bool) {
        self.snd_nxt = self.snd_nxt.wrapping_add(len);
        if fin {
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.flags |= FIN_SENT;
        }
        if seq_gt(self.snd_nxt, self.snd_max) {
            self.snd_max = self.snd_nxt;
        }
        self.unsent -= len;
        if fresh && self.rtt_probe.is_none() {
            self.rtt_probe = Some((self.snd_nxt, now));
        }
    }

    /// Builds one data segment whose payload is peeked from the host
    /// socket at `offset` bytes past `snd_una` (the kernel's peek offset
    /// must already be there). Returns false when no frame was queued.
    #[allow(clippy::too_many_arguments)]
    fn emit_data(
        &mut self,
        ctx: &mut Ctx,
        sh: &mut Shared,
        seq: u32,
        offset: u32,
        len: u32,
        flags: u8,
        window: u16,
    ) -> io::Result<bool> {
        let fd = self.fd();
        let skip = (self.flags & PEEK_FALLBACK != 0).then(|| &mut sh.discard[..offset as usize]);
        let mut result = Ok(0);
        let mut peeked = false;
        let out = self.out(seq, flags, window);
        let offload = ctx.tx.offload().then_some(self.mss);
        let queued = emit(ctx, &out, len as usize, offload, |buf| {
            peeked = true;
            result = peek(fd, buf, skip);
            matches!(result, Ok(n) if n == buf.len())
        });
        sh.stats.peeks_from_host += u64::from(peeked);
        match result {
            Ok(n) if n == len as usize => Ok(queued),
            Ok(0) if !queued => Ok(false),
            Ok(n) => {
                // The socket held less than FIONREAD said: the frame went out
                // with a spoiled checksum (the guest drops it); resynchronise.
                tracing::debug!(expected = len, got = n, "short peek");
                if self.flags & PEEK_FALLBACK == 0 {
                    set_peek_offset(fd, offset)?;
                }
                self.refresh_unsent()?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.refresh_unsent()?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Resends the oldest unacknowledged segment (fast retransmit).
    fn retransmit_first(&mut self, ctx: &mut Ctx, sh: &mut Shared) -> io::Result<()> {
        self.flush_discard(sh)?;
        sh.stats.fast_retransmits += 1;
        let in_flight = self.in_flight();
        if in_flight == 0 {
            if self.flags & FIN_SENT != 0 && self.snd_una != self.snd_max {
                self.send_flags(ctx, sh, self.snd_una, F_FIN | F_ACK);
            }
            return Ok(());
        }
        if ctx.tx.free_slots() == 0 {
            return Ok(());
        }
        let len = in_flight.min(u32::from(self.mss));
        let window = self.window_field(ctx, sh);
        let fallback = self.flags & PEEK_FALLBACK != 0;
        if !fallback {
            set_peek_offset(self.fd(), 0)?;
        }
        let result = self.emit_data(ctx, sh, self.snd_una, 0, len, F_ACK, window);
        if !fallback {
            set_peek_offset(self.fd(), in_flight)?;
        }
        self.rtt_probe = None;
        result.map(|_| ())
    }

    fn on_timeout(&mut self, ctx: &mut Ctx, sh: &mut Shared) -> Verdict {
        match self.state {
            State::Connecting => {
                sh.stats.connect_failed += 1;
                reply_rst_to_syn(ctx, sh, self);
                Verdict::Abort
            }
            State::SynReceived | State::SynSent => {
                self.retries += 1;
                if self.retries > SYN_RETRIES {
                    sh.stats.gave_up += 1;
                    if self.state == State::SynReceived {
                        self.reset_guest(ctx, sh);
                    }
                    return Verdict::Abort;
                }
                self.send_syn(ctx, sh);
                self.arm_timer(sh, ctx.now + RTO_INITIAL * (1 << self.retries));
                Verdict::Keep
            }
            State::Established => {
                if self.snd_una != self.snd_max {
                    self.retries += 1;
                    if self.retries > MAX_RETRIES {
                        sh.stats.gave_up += 1;
                        self.reset_guest(ctx, sh);
                        return Verdict::Abort;
                    }
                    sh.stats.timeouts += 1;
                    self.rto = (self.rto * 2).min(RTO_MAX);
                    // Go back to the oldest unacknowledged byte.
                    self.unsent += self.in_flight();
                    if self.flags & FIN_SENT != 0 {
                        self.flags &= !FIN_SENT;
                        self.snd_max = self.snd_max.wrapping_sub(1);
                    }
                    self.snd_nxt = self.snd_una;
                    self.flags &= !RECOVERY;
                    self.dup_acks = 0;
                    self.rtt_probe = None;
                    if let Err(e) = self.flush_discard(sh) {
                        return self.host_failed(ctx, sh, &e);
                    }
                    if self.flags & PEEK_FALLBACK == 0 {
                        if let Err(e) = set_peek_offset(self.fd(), 0) {
                            return self.host_failed(ctx, sh, &e);
                        }
                    }
                    self.arm_timer(sh, ctx.now + self.rto);
                    if let Err(v) = self.push_data(ctx, sh) {
                        return v;
                    }
                } else if self.unsent > 0 && self.snd_wnd == 0 {
                    // Zero-window probe: an old sequence number makes the
                    // guest answer with its current window.
                    self.retries += 1;
                    if self.retries > MAX_RETRIES {
                        sh.stats.gave_up += 1;
                        self.reset_guest(ctx, sh);
                        return Verdict::Abort;
                    }
                    self.rto = (self.rto * 2).min(RTO_MAX);
                    self.send_flags(ctx, sh, self.snd_una.wrapping_sub(1), F_ACK);
                    self.arm_timer(sh, ctx.now + self.rto);
                } else if self.flags & (GUEST_FIN | HOST_EOF) != 0 {
                    let idle_until = self.last_activity + HALF_CLOSED_TIMEOUT;
                    if ctx.now >= idle_until {
                        sh.stats.gave_up += 1;
                        self.reset_guest(ctx, sh);
                        return Verdict::Abort;
                    }
                    self.arm_timer(sh, idle_until);
                }
                Verdict::Keep
            }
        }
    }

    /// The closed-window timer: re-opens the window if the host socket
    /// drained, or checks again later.
    fn window_recheck(&mut self, ctx: &mut Ctx, sh: &mut Shared) {
        if self.flags & WND_CLOSED == 0 || self.flags & GUEST_FIN != 0 {
            self.flags &= !WND_CLOSED;
            return;
        }
        self.refresh_window(true);
        if self.rcv_room() >= u32::from(self.our_mss(sh)) {
            self.flags &= !WND_CLOSED;
            sh.stats.window_updates += 1;
            self.send_ack(ctx, sh);
        } else {
            self.wnd_backoff = (self.wnd_backoff + 1).min(6);
            let at = ctx.now + WINDOW_RECHECK * (1 << self.wnd_backoff);
            self.wnd_timer = Some(at);
            sh.arm(at);
        }
    }

    fn on_host_event(&mut self, ctx: &mut Ctx, sh: &mut Shared, event: &Event) -> Verdict {
        // A socket whose readable events are parked reports the host's
        // EOF as `EPOLLRDHUP` alone, which mio takes for closed only
        // together with `EPOLLIN`: an event that is neither readable,
        // writable nor an error is that EOF.
        let parked_eof = self.flags & READ_PARKED != 0
            && !(event.is_readable() || event.is_writable() || event.is_error());
        if event.is_read_closed() || parked_eof {
            self.flags |= HOST_EOF;
        }
        if self.state != State::Established && (event.is_readable() || event.is_read_closed()) {
            self.flags |= HOST_READABLE;
        }
        match self.state {
            State::Connecting => {
                let progress = self.connect_progress();
                self.check_connect(ctx, sh, progress)
            }
            State::SynSent | State::SynReceived => {
                if event.is_error() {
                    let e = self
                        .sock
                        .take_error()
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| io::Error::other("socket error"));
                    return self.host_failed(ctx, sh, &e);
                }
                Verdict::Keep
            }
            State::Established => {
                if event.is_error() {
                    if let Ok(Some(e)) | Err(e) = self.sock.take_error() {
                        return self.host_failed(ctx, sh, &e);
                    }
                }
                if event.is_readable() || event.is_read_closed() || parked_eof {
                    if let Err(e) = self.flush_discard(sh).and_then(|()| self.refresh_unsent()) {
                        return self.host_failed(ctx, sh, &e);
                    }
                }
                if event.is_writable() && self.flags & WND_CLOSED != 0 {
                    self.window_recheck(ctx, sh);
                }
                if let Err(v) = self.push_data(ctx, sh) {
                    return v;
                }
                self.settle(ctx.now, sh)
            }
        }
    }

    /// Whether the non-blocking connect has completed (`Ok(false)`: it
    /// is still going on), or how it failed.
    fn connect_progress(&self) -> io::Result<bool> {
        // One `getpeername` tells a connected socket (the usual case over
        // loopback); only a socket without a peer yet is asked whether it
        // failed (`SO_ERROR`) or is still connecting.
        match self.sock.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => match self.sock.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => Ok(false),
            },
            Err(e) => Err(e),
        }
    }

    /// The non-blocking connect made `progress`: answer the guest's SYN
    /// once it completed, with a RST when it failed.
    fn check_connect(
        &mut self,
        ctx: &mut Ctx,
        sh: &mut Shared,
        progress: io::Result<bool>,
    ) -> Verdict {
        let failure = match progress {
            Ok(true) => None,
            Ok(false) => return Verdict::Keep,
            Err(e) => Some(e),
        };
        if let Some(e) = failure {
            if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                sh.stats.refused += 1;
            } else {
                sh.stats.connect_failed += 1;
            }
            tracing::debug!(remote = %self.key.remote, error = %e, "TCP connect failed");
            reply_rst_to_syn(ctx, sh, self);
            return Verdict::Abort;
        }
        self.enable_peek_offset(sh);
        self.open_window();
        self.state = State::SynReceived;
        self.retries = 0;
        self.send_syn(ctx, sh);
        self.arm_timer(sh, ctx.now + RTO_INITIAL);
        Verdict::Keep
    }

    /// Room toward the guest came back: send what was held.
    fn resume(&mut self, ctx: &mut Ctx, sh: &mut Shared) -> Verdict {
        match self.push_data(ctx, sh) {
            Ok(0) if self.flags & ACK_PENDING != 0 => self.send_ack(ctx, sh),
            Ok(_) => {}
            Err(v) => return v,
        }
        self.settle(ctx.now, sh)
    }

    /// Ends a flow whose both directions are closed, and makes sure a
    /// half-closed or window-blocked flow has a timer.
    fn settle(&mut self, now: Instant, sh: &mut Shared) -> Verdict {
        if self.flags & (GUEST_FIN | FIN_SENT) == GUEST_FIN | FIN_SENT
            && self.snd_una == self.snd_max
        {
            return Verdict::Close;
        }
        if self.timer.is_none() {
            if self.unsent > 0 && self.snd_wnd == 0 {
                self.arm_timer(sh, now + self.rto);
            } else if self.flags & (GUEST_FIN | HOST_EOF) != 0 {
                self.arm_timer(sh, self.last_activity + HALF_CLOSED_TIMEOUT);
            }
        }
        Verdict::Keep
    }
}

/// Answers a segment that has no flow with a RST (RFC 9293 3.10.7.1).
fn reply_rst(ctx: &mut Ctx, sh: &mut Shared, key: &FlowKey, seg: &Segment) {
    sh.stats.resets_to_guest += 1;
    let out = if seg.ackf {
        Out {
            src: key.remote,
            dst: key.guest,
            seq: seg.ack,
            ack: 0,
            flags: F_RST,
            window: 0,
            syn_opts: None,
        }
    } else {
        let len = seg.payload.len() as u32 + u32::from(seg.syn) + u32::from(seg.fin);
        Out {
            src: key.remote,
            dst: key.guest,
            seq: 0,
            ack: seg.seq.wrapping_add(len),
            flags: F_RST | F_ACK,
            window: 0,
            syn_opts: None,
        }
    };
    emit(ctx, &out, 0, None, |_| true);
}

/// Refuses the guest's SYN of a flow whose host connect failed.
fn reply_rst_to_syn(ctx: &mut Ctx, sh: &mut Shared, flow: &Flow) {
    sh.stats.resets_to_guest += 1;
    let out = Out {
        src: flow.key.remote,
        dst: flow.key.guest,
        seq: 0,
        ack: flow.rcv_nxt,
        flags: F_RST | F_ACK,
        window: 0,
        syn_opts: None,
    };
    emit(ctx, &out, 0, None, |_| true);
}

/// Queues one segment toward the guest. `fill` writes the payload in
/// place and says whether it is complete; an incomplete one goes out with
/// a spoiled checksum so the guest drops it. Returns whether a complete
/// segment was queued. With `offload_mss` (a link that takes offload
/// frames, [`crate::iface::GuestTx::offload`]) the checksum is left to the
/// receiver and the payload may span several segments of that size.
fn emit(
    ctx: &mut Ctx,
    out: &Out,
    payload_len: usize,
    offload_mss: Option<u16>,
    fill: impl FnOnce(&mut [u8]) -> bool,
) -> bool {
    let opts_len = match out.syn_opts {
        None => 0,
        Some((_, None)) => 4,
        Some((_, Some(_))) => 8,
    };
    let header_len = 20 + opts_len;
    let seg_len = header_len + payload_len;
    let src = out.src.ip();
    let dst = out.dst.ip();
    let mut complete = false;
    let offload = offload_mss.map(|mss| Offload {
        mss,
        header_len,
        udp: false,
    });
    let queued = ctx.emit_ip_offload(src, dst, IpProtocol::Tcp, seg_len, offload, |buf| {
        let buf = &mut buf[..seg_len];
        let mut pkt = TcpPacket::new_unchecked(&mut *buf);
        pkt.set_src_port(out.src.port());
        pkt.set_dst_port(out.dst.port());
        pkt.set_seq_number(TcpSeqNumber(out.seq as i32));
        pkt.set_ack_number(TcpSeqNumber(out.ack as i32));
        pkt.set_header_len(header_len as u8);
        pkt.clear_flags();
        pkt.set_fin(out.flags & F_FIN != 0);
        pkt.set_syn(out.flags & F_SYN != 0);
        pkt.set_rst(out.flags & F_RST != 0);
        pkt.set_psh(out.flags & F_PSH != 0);
        pkt.set_ack(out.flags & F_ACK != 0);
        pkt.set_window_len(out.window);
        pkt.set_urgent_at(0);
        if let Some((mss, wscale)) = out.syn_opts {
            let rest = TcpOption::MaxSegmentSize(mss).emit(pkt.options_mut());
            if let Some(ws) = wscale {
                let rest = TcpOption::NoOperation.emit(rest);
                TcpOption::WindowScale(ws).emit(rest);
            }
        }
        complete = fill(&mut buf[header_len..]);
        if offload.is_some() {
            crate::wire::csum::fill_partial(src, dst, IpProtocol::Tcp, buf);
        } else {
            crate::wire::csum::fill_tcp(src, dst, buf);
        }
        if !complete {
            let mut pkt = TcpPacket::new_unchecked(&mut *buf);
            // Off by 256 in one's complement: never a valid checksum.
            pkt.set_checksum(pkt.checksum() ^ 0x0100);
        }
    });
    queued && complete
}

/// MSS and window scale of a guest SYN's options.
fn syn_options(mut opts: &[u8]) -> (u16, Option<u8>) {
    let mut mss = DEFAULT_GUEST_MSS;
    let mut wscale = None;
    while !opts.is_empty() {
        let Ok((rest, opt)) = TcpOption::parse(opts) else {
            break;
        };
        match opt {
            TcpOption::MaxSegmentSize(m) => mss = m.max(MIN_GUEST_MSS),
            TcpOption::WindowScale(s) => wscale = Some(s.min(MAX_WSCALE)),
            TcpOption::EndOfList => break,
            _ => {}
        }
        opts = rest;
    }
    (mss, wscale)
}

/// Starts a non-blocking connect to `addr`, from `source` if given; the
/// socket is named on `name_to` first (a guest forward's listener, see
/// [`crate::guestfwd::notify`]).
fn connect_nonblocking(
    addr: SocketAddr,
    source: Option<IpAddr>,
    name_to: Option<BorrowedFd<'_>>,
) -> io::Result<TcpStream> {
    // Non-blocking from `socket` on (SOCK_NONBLOCK): two `fcntl`s fewer
    // per connection.
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if let Some(ip) = source {
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    sock.set_tcp_nodelay(true)?;
    sock.set_keepalive(true)?;
    if let Some(pipe) = name_to {
        crate::guestfwd::notify(pipe, &sock);
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
}

/// An `ioctl` that reads one `int` (FIONREAD, TIOCOUTQ).
fn ioctl_int(fd: RawFd, request: libc::c_ulong) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: the request writes one c_int to the pointer we pass.
    let r = unsafe { libc::ioctl(fd, request as _, &mut value as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(value).unwrap_or(0))
}

/// Sets the socket's `SO_PEEK_OFF`.
fn set_peek_offset(fd: RawFd, offset: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(offset).unwrap_or(libc::c_int::MAX);
    // SAFETY: passes a pointer to a c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies socket data into `buf` without consuming it: at the kernel's
/// peek offset, or (`skip`) after as many bytes as `skip` holds.
fn peek(fd: RawFd, buf: &mut [u8], skip: Option<&mut [u8]>) -> io::Result<usize> {
    let mut iov = [(); 2].map(|_| libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    });
    let mut n = 0;
    let skipped = skip.as_ref().map_or(0, |s| s.len());
    for part in skip.into_iter().chain([buf]) {
        iov[n] = libc::iovec {
            iov_base: part.as_mut_ptr().cast(),
            iov_len: part.len(),
        };
        n += 1;
    }
    Ok(peek_iov(fd, &mut iov[..n])?.saturating_sub(skipped))
}

/// One `recvmsg` with `MSG_PEEK` into `iov` (which must point at live,
/// writable, non-overlapping buffers): the bytes peeked.
fn peek_iov(fd: RawFd, iov: &mut [libc::iovec]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: msg describes the caller's iovecs, valid for writes of their
    // lengths for the duration of the call.
    let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Drops `len` acknowledged bytes from the socket without copying them.
fn discard(fd: RawFd, mut len: u32) -> io::Result<()> {
    while len > 0 {
        // SAFETY: with MSG_TRUNC a TCP socket discards the data and never
        // writes to the (null) buffer.
        let r = unsafe {
            libc::recv(
                fd,
                std::ptr::null_mut(),
                len as usize,
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "acknowledged data missing from the socket",
            ));
        }
        len -= (r as u32).min(len);
    }
    Ok(())
}
