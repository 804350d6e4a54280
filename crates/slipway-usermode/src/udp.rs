//! UDP: NAT flows from the guest to host sockets, and UDP host forwards.
//!
//! A guest datagram to `remote` from `guest` opens a flow: one connected,
//! non-blocking host socket, so the kernel matches replies to the flow and
//! the stack needs no port table of its own. Replies go back to the guest
//! from `remote` as the guest addressed it (the host address stays the
//! host address even though the socket talks to 127.0.0.1).
//!
//! A UDP host forward is one bound host socket; each remote peer that
//! sends to it gets a flow, so the guest's replies find their way back.
//! Flows are capped and close after `limits.udp_idle_timeout_secs` idle.
//!
//! A NAT flow's socket is read in batches (`recvmmsg`, [`RECV_BATCH`]
//! datagrams per call into a buffer allocated once). Toward a tap with
//! virtio-net headers, each run of equal-sized datagrams of a batch (the
//! last may be shorter) leaves as one frame the namespace's kernel cuts
//! into datagrams (`iface::udp::emit_offload`): one `write` to the tap
//! and no checksum summed here for up to [`MAX_RUN`] datagrams. Elsewhere
//! each datagram is a frame of its own, as before.
//!
//! The other way, a guest datagram on a NAT flow is not sent at once: it
//! is copied into one send batch (allocated once) while the link delivers
//! its batch of frames, and consecutive datagrams of the same flow of
//! equal size (the last may be shorter) leave together in one `sendmsg`
//! with `UDP_SEGMENT` (UDP GSO: the host's kernel cuts them up, over
//! loopback only at the receiving socket). A datagram of another flow, a
//! different size, a full batch and the end of the link's batch
//! ([`UdpTable::flush_sends`]) send what is pending; a socket that
//! refuses GSO (a datagram over the route's MTU) gets its datagrams one
//! `send` each from then on. (libc's `recvmmsg` and `sendmsg` with a
//! control message by hand: mio and socket2 offer neither.)
//!
//! Toward the guest the host socket is the queue. Every flow and forward
//! socket asks for a receive buffer of [`SOCKET_RCVBUF`] (the kernel caps
//! it at `net.core.rmem_max`), so that a burst that arrives while the
//! stack waits for the CPU waits in the kernel instead of being dropped
//! there (a default buffer holds 92 datagrams of 1472 bytes, about a
//! millisecond at 1 Gbit/s). A socket is read only as far as the queue
//! toward the guest has free slots (one datagram needs at most one): when
//! it is full, the flow or forward stops reading and waits in a list that
//! [`UdpTable::on_guest_tx_space`] serves once the link has drained the
//! queue, so no datagram already read is dropped for want of room.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry};

use crate::config::{guest_visible, ForwardProtocol, HostForward, StackConfig};
use crate::iface::flow::{FlowInfo, FlowProtocol};
use std::os::fd::AsRawFd;

use crate::iface::udp::{emit, emit_offload};
use crate::iface::StackError;
use crate::iface::{token, Ctx, DropReason, TokenKind};

/// Largest datagram read from a host socket.
const MAX_DATAGRAM: usize = 65535;
/// Datagrams read from a NAT flow's socket per `recvmmsg`.
const RECV_BATCH: usize = 32;
/// Most datagrams in one offload frame toward the guest or one GSO send
/// (Linux takes up to 64 segments in one GSO packet everywhere).
const MAX_RUN: usize = 64;
/// Most payload bytes of one GSO send (what fits one IPv4 datagram).
const SEND_BATCH_BYTES: usize = 65507;
/// How often idle flows are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Receive buffer asked for on every flow and forward socket (`SO_RCVBUF`:
/// the kernel caps it at `net.core.rmem_max` and doubles it for its own
/// bookkeeping). Doubled to 2 MiB it holds 910 datagrams of 1472 bytes
/// (about 10 ms at 1 Gbit/s), where the default (208 KiB) holds 92.
const SOCKET_RCVBUF: usize = 1 << 20;

/// What a flow's datagrams travel through on the host.
enum FlowKind {
    /// Its own socket, connected to the target.
    Nat(UdpSocket),
    /// The socket of host forward `forward`, to and from `peer`.
    Forward { forward: usize, peer: SocketAddr },
}

struct Flow {
    /// The guest's address and port.
    guest: SocketAddr,
    /// The other end as the guest sees it.
    remote: SocketAddr,
    last_used: Instant,
    kind: FlowKind,
    /// When the flow was opened, and payload bytes each way (control API).
    created: Instant,
    bytes_from_guest: u64,
    bytes_to_guest: u64,
    /// The socket refused a GSO send: one `send` per datagram.
    no_gso: bool,
    /// Its socket has datagrams left unread for want of room toward the
    /// guest (the flow is in [`UdpTable::waiting`]).
    held: bool,
}

/// Guest datagrams of one NAT flow waiting to be sent together.
struct SendBatch {
    /// The flow they belong to (`None`: nothing pending).
    flow: Option<usize>,
    /// Their payloads back to back ([`SEND_BATCH_BYTES`], allocated once).
    buf: Vec<u8>,
    len: usize,
    /// Size of the first; the others are as large but the last.
    size: usize,
    count: usize,
    /// A shorter datagram ended the run.
    closed: bool,
}

/// A UDP host forward: a bound host socket relaying to one guest port.
struct Forward {
    socket: UdpSocket,
    fwd: HostForward,
    /// As [`Flow::held`] (in [`UdpTable::waiting_forwards`]).
    held: bool,
}

/// Every UDP flow and UDP host forward.
pub(crate) struct UdpTable {
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    by_endpoints: HashMap<(SocketAddr, SocketAddr), usize>,
    /// The flow the last guest datagram found: the next datagram of a
    /// burst skips the hash lookup when that slot still holds a flow with
    /// its endpoints (so a removed flow or a reused slot is never found
    /// through it).
    last: usize,
    by_peer: HashMap<(usize, SocketAddr), usize>,
    /// Forwards by token index; a removed one leaves `None` (indices are
    /// never reused, so a stale event finds nothing).
    forwards: Vec<Option<Forward>>,
    max_flows: usize,
    idle: Duration,
    next_sweep: Option<Instant>,
    buf: Vec<u8>,
    /// Flows and forwards that stopped reading while the queue toward the
    /// guest was full, and the list being served (swapped, so neither
    /// allocates once grown).
    waiting: Vec<usize>,
    waiting_forwards: Vec<usize>,
    serving: Vec<usize>,
    /// [`RECV_BATCH`] slots of [`MAX_DATAGRAM`] bytes for `recvmmsg`
    /// (pages are touched only as far as datagrams fill them).
    batch: Vec<u8>,
    sends: SendBatch,
}

impl UdpTable {
    /// An empty table sized by `cfg.limits`.
    pub fn new(cfg: &StackConfig) -> Self {
        let max_flows = cfg.limits.max_udp_flows.max(1);
        UdpTable {
            flows: Vec::with_capacity(max_flows),
            free: Vec::with_capacity(max_flows),
            by_endpoints: HashMap::with_capacity(max_flows),
            last: 0,
            by_peer: HashMap::new(),
            forwards: Vec::new(),
            max_flows,
            idle: Duration::from_secs(cfg.limits.udp_idle_timeout_secs.max(1)),
            next_sweep: None,
            buf: vec![0; MAX_DATAGRAM],
            waiting: Vec::with_capacity(max_flows),
            waiting_forwards: Vec::new(),
            serving: Vec::with_capacity(max_flows),
            batch: vec![0; RECV_BATCH * MAX_DATAGRAM],
            sends: SendBatch {
                flow: None,
                buf: vec![0; SEND_BATCH_BYTES],
                len: 0,
                size: 0,
                count: 0,
                closed: false,
            },
        }
    }

    /// Binds the socket of every UDP host forward.
    pub fn listen_forwards(
        &mut self,
        registry: &Registry,
        cfg: &StackConfig,
    ) -> Result<(), StackError> {
        for fwd in cfg
            .hostfwd
            .iter()
            .filter(|f| f.protocol == ForwardProtocol::Udp)
        {
            self.add_forward(registry, fwd)?;
        }
        Ok(())
    }

    /// Binds and registers the socket of one UDP forward; returns the
    /// bound address. The guest end is found per peer
    /// ([`Ctx::forward_guest`]).
    pub fn add_forward(
        &mut self,
        registry: &Registry,
        fwd: &HostForward,
    ) -> Result<SocketAddr, StackError> {
        let err = |source| StackError::Socket {
            what: "UDP host forward",
            addr: fwd.host.to_string(),
            source,
        };
        let mut socket = crate::iface::listen::udp_socket(fwd).map_err(err)?;
        enlarge_rcvbuf(&socket);
        let index = self.forwards.len();
        registry
            .register(
                &mut socket,
                token(TokenKind::UdpListener, index),
                Interest::READABLE,
            )
            .map_err(err)?;
        let bound = socket.local_addr().map_err(err)?;
        tracing::info!(host = %bound, guest = ?fwd.guest_addr, port = fwd.guest_port, "UDP host forward");
        self.forwards.push(Some(Forward {
            socket,
            fwd: fwd.clone(),
            held: false,
        }));
        Ok(bound)
    }

    /// Closes the forward socket bound to `host` and the flows through it.
    /// Returns the forward, or `None` when no forward is bound there.
    pub fn remove_forward(&mut self, registry: &Registry, host: SocketAddr) -> Option<HostForward> {
        let index = self.forwards.iter().position(|f| {
            f.as_ref()
                .is_some_and(|f| f.socket.local_addr().ok() == Some(host))
        })?;
        let mut forward = self.forwards[index].take()?;
        let _ = registry.deregister(&mut forward.socket);
        let through: Vec<usize> = self
            .by_peer
            .iter()
            .filter(|((f, _), _)| *f == index)
            .map(|(_, &flow)| flow)
            .collect();
        for flow in through {
            self.remove(registry, flow);
        }
        Some(forward.fwd)
    }

    /// Bound address and forward of every UDP forward.
    pub fn forwards(&self) -> impl Iterator<Item = (SocketAddr, &HostForward)> + '_ {
        self.forwards
            .iter()
            .flatten()
            .filter_map(|f| Some((f.socket.local_addr().ok()?, &f.fwd)))
    }

    /// A snapshot of every UDP flow at `now`.
    pub fn flows(&self, now: Instant) -> impl Iterator<Item = FlowInfo> + '_ {
        self.flows.iter().flatten().map(move |f| FlowInfo {
            protocol: FlowProtocol::Udp,
            guest: f.guest,
            remote: f.remote,
            bytes_from_guest: f.bytes_from_guest,
            bytes_to_guest: f.bytes_to_guest,
            age_secs: now.saturating_duration_since(f.created).as_secs(),
        })
    }

    /// Sends a guest datagram through the flow `guest` ↔ `remote` if one
    /// exists (on a NAT flow: queued in the send batch, see the module
    /// header); returns false when there is none.
    pub fn send_on_flow(
        &mut self,
        ctx: &mut Ctx,
        guest: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
    ) -> bool {
        let Some(index) = self.lookup(guest, remote) else {
            return false;
        };
        let Some(flow) = self.flows[index].as_mut() else {
            return false;
        };
        flow.last_used = ctx.now;
        if matches!(flow.kind, FlowKind::Nat(_)) && !flow.no_gso {
            self.queue_send(ctx, index, payload);
            return true;
        }
        self.flush_sends(ctx);
        let Some(flow) = self.flows[index].as_mut() else {
            return true;
        };
        let sent = match &flow.kind {
            FlowKind::Nat(socket) => socket.send(payload),
            FlowKind::Forward { forward, peer } => match &self.forwards[*forward] {
                Some(f) => f.socket.send_to(payload, *peer),
                None => Err(std::io::ErrorKind::NotConnected.into()),
            },
        };
        match sent {
            Ok(n) => flow.bytes_from_guest += n as u64,
            Err(err) => {
                tracing::debug!(%err, %remote, "UDP send failed");
                ctx.counters.drop(DropReason::HostSocketError);
            }
        }
        true
    }

    /// The index of the flow `guest` ↔ `remote`: the last one found when
    /// it is the same (a burst), else from the table.
    fn lookup(&mut self, guest: SocketAddr, remote: SocketAddr) -> Option<usize> {
        let hit = self
            .flows
            .get(self.last)
            .and_then(Option::as_ref)
            .is_some_and(|f| f.guest == guest && f.remote == remote);
        if !hit {
            self.last = *self.by_endpoints.get(&(guest, remote))?;
        }
        Some(self.last)
    }

    /// Adds a datagram of NAT flow `index` to the send batch, sending what
    /// was pending first when it cannot join it.
    fn queue_send(&mut self, ctx: &mut Ctx, index: usize, payload: &[u8]) {
        let b = &self.sends;
        let joins = b.flow == Some(index)
            && !b.closed
            && b.count < MAX_RUN
            && payload.len() <= b.size
            && b.len + payload.len() <= SEND_BATCH_BYTES;
        if !joins {
            self.flush_sends(ctx);
        }
        let b = &mut self.sends;
        if payload.is_empty() || payload.len() > SEND_BATCH_BYTES {
            // Nothing to cut (GSO needs a payload), or more than a batch.
            b.flow = Some(index);
            b.size = payload.len();
            self.send_one(ctx, index, payload);
            self.sends.flow = None;
            return;
        }
        if b.count == 0 {
            b.flow = Some(index);
            b.size = payload.len();
        } else if payload.len() < b.size {
            b.closed = true;
        }
        b.buf[b.len..b.len + payload.len()].copy_from_slice(payload);
        b.len += payload.len();
        b.count += 1;
    }

    /// Sends the guest datagrams waiting in the send batch: one GSO
    /// `sendmsg` for several, a plain `send` for one. The link calls it at
    /// the end of each batch of frames it delivers.
    pub fn flush_sends(&mut self, ctx: &mut Ctx) {
        let Some(index) = self.sends.flow.take() else {
            return;
        };
        let (len, size, count) = (self.sends.len, self.sends.size, self.sends.count);
        self.sends.len = 0;
        self.sends.count = 0;
        self.sends.closed = false;
        if count == 0 {
            return;
        }
        let Some(Some(flow)) = self.flows.get_mut(index) else {
            return;
        };
        let FlowKind::Nat(socket) = &flow.kind else {
            return;
        };
        let data = &self.sends.buf[..len];
        let send = || {
            if count == 1 {
                socket.send(data)
            } else {
                send_segmented(socket.as_raw_fd(), data, size)
            }
        };
        // An ICMP error from an earlier send is reported once, by a send
        // that then sends nothing: try again so that it costs the batch no
        // more than it cost one datagram.
        let sent = match send() {
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => send(),
            other => other,
        };
        let sent = if count == 1 {
            sent
        } else {
            match sent {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIO)) => {
                    // No GSO on this socket's path: one send each, from now on.
                    tracing::debug!(err = %e, remote = %flow.remote, "UDP GSO refused");
                    flow.no_gso = true;
                    let mut result = Ok(0);
                    for chunk in data.chunks(size) {
                        result = socket.send(chunk).map(|_| len);
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
                other => other,
            }
        };
        match sent {
            Ok(_) => flow.bytes_from_guest += len as u64,
            Err(err) => {
                tracing::debug!(%err, remote = %flow.remote, "UDP send failed");
                ctx.counters.drop(DropReason::HostSocketError);
            }
        }
    }

    /// Sends one datagram of NAT flow `index` at once (after the batch).
    fn send_one(&mut self, ctx: &mut Ctx, index: usize, payload: &[u8]) {
        let Some(Some(flow)) = self.flows.get_mut(index) else {
            return;
        };
        let FlowKind::Nat(socket) = &flow.kind else {
            return;
        };
        match socket.send(payload) {
            Ok(n) => flow.bytes_from_guest += n as u64,
            Err(err) => {
                tracing::debug!(%err, remote = %flow.remote, "UDP send failed");
                ctx.counters.drop(DropReason::HostSocketError);
            }
        }
    }

    /// Opens a NAT flow for a guest datagram to `remote`, which the host
    /// reaches at `target`, and sends the datagram.
    pub fn new_flow(
        &mut self,
        ctx: &mut Ctx,
        guest: SocketAddr,
        remote: SocketAddr,
        target: SocketAddr,
        payload: &[u8],
    ) {
        let socket = match open_connected(target, ctx.cfg.outbound.for_target(target)) {
            Ok(s) => s,
            Err(err) => {
                tracing::debug!(%err, %target, "UDP flow socket");
                ctx.counters.drop(DropReason::HostSocketError);
                return;
            }
        };
        if self
            .insert(ctx, guest, remote, FlowKind::Nat(socket))
            .is_none()
        {
            return;
        }
        tracing::debug!(%guest, %remote, %target, "UDP flow opened");
        self.send_on_flow(ctx, guest, remote, payload);
    }

    fn insert(
        &mut self,
        ctx: &mut Ctx,
        guest: SocketAddr,
        remote: SocketAddr,
        mut kind: FlowKind,
    ) -> Option<usize> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.flows.len() < self.max_flows => {
                self.flows.push(None);
                self.flows.len() - 1
            }
            None => {
                ctx.counters.drop(DropReason::FlowLimit);
                return None;
            }
        };
        if let FlowKind::Nat(socket) = &mut kind {
            if let Err(err) =
                ctx.registry
                    .register(socket, token(TokenKind::UdpFlow, index), Interest::READABLE)
            {
                tracing::debug!(%err, "UDP flow registration");
                ctx.counters.drop(DropReason::HostSocketError);
                self.free.push(index);
                return None;
            }
        }
        if let FlowKind::Forward { forward, peer } = kind {
            self.by_peer.insert((forward, peer), index);
        }
        self.by_endpoints.insert((guest, remote), index);
        self.flows[index] = Some(Flow {
            guest,
            remote,
            last_used: ctx.now,
            kind,
            created: ctx.now,
            bytes_from_guest: 0,
            bytes_to_guest: 0,
            no_gso: false,
            held: false,
        });
        if self.next_sweep.is_none() {
            self.next_sweep = Some(ctx.now + SWEEP_INTERVAL);
        }
        Some(index)
    }

    /// Relays what arrived on NAT flow `index` to the guest, a batch of
    /// datagrams per `recvmmsg`, as far as the queue toward the guest has
    /// room (else the flow waits for [`UdpTable::on_guest_tx_space`]).
    pub fn on_flow_readable(&mut self, ctx: &mut Ctx, index: usize) {
        let Some(Some(flow)) = self.flows.get_mut(index) else {
            return;
        };
        let FlowKind::Nat(socket) = &flow.kind else {
            return;
        };
        let fd = socket.as_raw_fd();
        let mut lens = [0usize; RECV_BATCH];
        loop {
            // A datagram takes at most one slot (a run of them, one).
            let room = ctx.tx.free_slots().min(RECV_BATCH);
            if room == 0 {
                if !flow.held {
                    flow.held = true;
                    self.waiting.push(index);
                }
                break;
            }
            let n = match recv_batch(fd, &mut self.batch, &mut lens[..room]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // An ICMP error from an earlier send (port unreachable...).
                Err(err) => {
                    tracing::debug!(%err, remote = %flow.remote, "UDP flow receive");
                    continue;
                }
            };
            flow.last_used = ctx.now;
            let datagram = |i: usize| &self.batch[i * MAX_DATAGRAM..i * MAX_DATAGRAM + lens[i]];
            let offload = ctx.can_offload_to(flow.guest.ip());
            let max_run_bytes = ctx.max_offload_udp_payload(flow.guest.ip());
            let mut i = 0;
            while i < n {
                let size = lens[i];
                let (mut end, mut total) = (i + 1, size);
                if offload && size > 0 {
                    while end < n
                        && end - i < MAX_RUN
                        && lens[end] <= size
                        && total + lens[end] <= max_run_bytes
                    {
                        total += lens[end];
                        end += 1;
                        if lens[end - 1] < size {
                            break;
                        }
                    }
                }
                let sent = if offload && total <= max_run_bytes {
                    emit_offload(
                        ctx,
                        flow.remote,
                        flow.guest,
                        size,
                        (i..end).map(datagram),
                        total,
                    )
                } else {
                    emit(ctx, None, flow.remote, flow.guest, datagram(i))
                };
                if sent {
                    flow.bytes_to_guest += total as u64;
                }
                i = end;
            }
            if n < room {
                // The socket is drained (the next call would block).
                break;
            }
        }
    }

    /// Relays datagrams that arrived on host forward `index` to the guest,
    /// opening a flow per remote peer.
    pub fn on_forward_readable(&mut self, ctx: &mut Ctx, index: usize) {
        loop {
            let Some(Some(forward)) = self.forwards.get_mut(index) else {
                return;
            };
            if ctx.tx.free_slots() == 0 {
                if !forward.held {
                    forward.held = true;
                    self.waiting_forwards.push(index);
                }
                return;
            }
            let guest = ctx.forward_guest(&forward.fwd);
            let (n, peer) = match forward.socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::debug!(%err, "UDP forward receive");
                    continue;
                }
            };
            let flow = match self.by_peer.get(&(index, peer)) {
                Some(&f) => f,
                None => {
                    let Some(guest) = guest else {
                        // An IPv6 forward before the guest has an address.
                        ctx.counters.drop(DropReason::NotForUs);
                        continue;
                    };
                    let remote = match guest_visible(ctx.cfg, guest.ip(), peer) {
                        Some(r) => r,
                        None => {
                            ctx.counters.drop(DropReason::UnsupportedProtocol);
                            continue;
                        }
                    };
                    let guest = ctx.link_local_guest(guest, remote);
                    if self.by_endpoints.contains_key(&(guest, remote)) {
                        // Another peer already shows up as this address and port.
                        ctx.counters.drop(DropReason::FlowLimit);
                        continue;
                    }
                    match self.insert(
                        ctx,
                        guest,
                        remote,
                        FlowKind::Forward {
                            forward: index,
                            peer,
                        },
                    ) {
                        Some(f) => f,
                        None => continue,
                    }
                }
            };
            if let Some(flow) = self.flows[flow].as_mut() {
                flow.last_used = ctx.now;
                if emit(ctx, None, flow.remote, flow.guest, &self.buf[..n]) {
                    flow.bytes_to_guest += n as u64;
                }
            }
        }
    }

    /// Called after the link drained frames toward the guest: flows and
    /// forwards that stopped reading for want of room read on (and wait
    /// again if the queue fills first).
    pub fn on_guest_tx_space(&mut self, ctx: &mut Ctx) {
        if !self.waiting.is_empty() {
            std::mem::swap(&mut self.waiting, &mut self.serving);
            for i in 0..self.serving.len() {
                let index = self.serving[i];
                if let Some(Some(flow)) = self.flows.get_mut(index) {
                    if flow.held {
                        flow.held = false;
                        self.on_flow_readable(ctx, index);
                    }
                }
            }
            self.serving.clear();
        }
        if !self.waiting_forwards.is_empty() {
            std::mem::swap(&mut self.waiting_forwards, &mut self.serving);
            for i in 0..self.serving.len() {
                let index = self.serving[i];
                if let Some(Some(forward)) = self.forwards.get_mut(index) {
                    if forward.held {
                        forward.held = false;
                        self.on_forward_readable(ctx, index);
                    }
                }
            }
            self.serving.clear();
        }
    }

    /// Closes flows idle for longer than the timeout.
    pub fn on_timer(&mut self, ctx: &mut Ctx) {
        let cutoff = ctx.now.checked_sub(self.idle);
        for index in 0..self.flows.len() {
            let expired = match (&self.flows[index], cutoff) {
                (Some(flow), Some(cutoff)) => flow.last_used <= cutoff,
                _ => false,
            };
            if expired {
                self.remove(ctx.registry, index);
            }
        }
        self.next_sweep = (!self.by_endpoints.is_empty()).then_some(ctx.now + SWEEP_INTERVAL);
    }

    /// Drops every flow of guest address `ip` (its VM left the link).
    pub fn close_guest(&mut self, registry: &Registry, ip: IpAddr) {
        for index in 0..self.flows.len() {
            if self.flows[index]
                .as_ref()
                .is_some_and(|f| f.guest.ip() == ip)
            {
                self.remove(registry, index);
            }
        }
    }

    fn remove(&mut self, registry: &Registry, index: usize) {
        let Some(flow) = self.flows[index].take() else {
            return;
        };
        if self.sends.flow == Some(index) {
            // Never the case between batches (the link flushes each).
            self.sends.flow = None;
            self.sends.len = 0;
            self.sends.count = 0;
            self.sends.closed = false;
        }
        if flow.held {
            // Its slot may be reused: an index is waiting only while its
            // flow is held.
            self.waiting.retain(|&i| i != index);
        }
        self.by_endpoints.remove(&(flow.guest, flow.remote));
        match flow.kind {
            FlowKind::Nat(mut socket) => {
                let _ = registry.deregister(&mut socket);
            }
            FlowKind::Forward { forward, peer } => {
                self.by_peer.remove(&(forward, peer));
            }
        }
        tracing::debug!(guest = %flow.guest, remote = %flow.remote, "UDP flow closed");
        self.free.push(index);
    }

    /// When [`UdpTable::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_sweep
    }
}

/// A non-blocking UDP socket connected to `target`, from `source` if given.
fn open_connected(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<UdpSocket> {
    let unspecified = match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(source.unwrap_or(unspecified), 0))?;
    socket.connect(target)?;
    enlarge_rcvbuf(&socket);
    Ok(socket)
}

/// Asks for a receive buffer of [`SOCKET_RCVBUF`] on `socket` (see the
/// module header). A refusal leaves the kernel's default, which works,
/// only with less room for bursts.
fn enlarge_rcvbuf(socket: &UdpSocket) {
    if let Err(err) = socket2::SockRef::from(socket).set_recv_buffer_size(SOCKET_RCVBUF) {
        tracing::debug!(%err, "UDP socket receive buffer");
    }
}

/// Reads up to `lens.len()` (at most [`RECV_BATCH`]) datagrams from the
/// non-blocking socket `fd` with one `recvmmsg`, datagram `i` into
/// `buf[i * MAX_DATAGRAM..]` and its length into `lens[i]`. Returns how
/// many arrived (at least one).
fn recv_batch(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    lens: &mut [usize],
) -> std::io::Result<usize> {
    let want = lens.len().min(RECV_BATCH);
    // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers,
    // zero lengths); they are filled in below.
    let mut iov: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
    for (i, (v, m)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate() {
        let slot = &mut buf[i * MAX_DATAGRAM..(i + 1) * MAX_DATAGRAM];
        v.iov_base = slot.as_mut_ptr().cast();
        v.iov_len = slot.len();
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every message points at one iovec into its own disjoint
    // MAX_DATAGRAM-byte slot of `buf`, which outlives the call; no names
    // or control data are asked for.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            want as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    for (len, m) in lens.iter_mut().zip(&msgs).take(n) {
        *len = (m.msg_len as usize).min(MAX_DATAGRAM);
    }
    Ok(n)
}

/// Sends `data`, datagrams of `size` bytes back to back (the last may be
/// shorter), on the connected socket `fd` with one `sendmsg` whose
/// `UDP_SEGMENT` control message has the kernel cut them up (UDP GSO).
fn send_segmented(fd: std::os::fd::RawFd, data: &[u8], size: usize) -> std::io::Result<usize> {
    let gso_size =
        u16::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // Room for one cmsghdr and a u16, aligned as the kernel reads it.
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no data, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // SAFETY: `msg` points at `control`, which has room for the one
    // header CMSG_SPACE sized (32 bytes >= 24), so CMSG_FIRSTHDR is
    // non-null and CMSG_DATA lies within it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), gso_size);
    }
    // SAFETY: the message's iovec points at `data` and its control at
    // `control`, both alive for the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}
