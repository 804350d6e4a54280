//! The VM link: how frames reach the VMs, one `Transport` per way QEMU
//! (or a container) attaches, each in its own file:
//!
//! - `stream`: `-netdev stream`, `-netdev socket,connect=` (unix or TCP),
//!   length-prefixed frames;
//! - `dgram`: `-netdev dgram` on unix sockets, one frame per datagram;
//! - `tap`: a tap descriptor inside a container's network namespace;
//! - `vhost`: `-netdev vhost-user`, virtio-net rings in guest memory
//!   shared with QEMU (one VM per socket).
//!
//! The transports are the variants of `Link`, which implements the trait
//! by matching once per batch (a read or a flush), so the per-frame path
//! has no dynamic dispatch: the frame callback is a generic closure,
//! inlined into each transport's read loop.
//!
//! A listening or datagram attachment takes several VMs at once, each on
//! its own connection or address (a port); together they form one Ethernet segment through
//! the learning switch of [`switch`]. With one VM the switch stays
//! out of the way: frames go straight to the stack, and the stack's queue
//! is written to the VM without a copy. With several, frames toward the
//! VMs are copied from the stack's queue into per-port queues, and frames
//! from VM to VM go from port to port without touching the stack.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UnixDatagram, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use smoltcp::wire::EthernetAddress;

use crate::iface::{token, DropReason, GuestTx, TokenKind};
use crate::stack::Stack;
use crate::wire::framing::RxChecksum;
use crate::wire::ETHERNET_HEADER_LEN;
use switch::{Route, Switch};

mod dgram;
mod dir_watch;
mod stream;
pub mod switch;
mod tap;
mod transport;
mod vhost;

use dgram::{Dgram, DGRAM_READ_BATCH, DGRAM_SLOT};
use stream::Stream;
use tap::Tap;
use transport::{Lost, Rx, Transport};
use vhost::Vhost;

pub use stream::MAX_STREAM_FRAME;
pub use transport::VmGone;

/// Token of a listening socket.
const LISTENER: usize = 0;
/// Token index of the first VM link (port 0); port `i` has `FIRST_PORT + i`.
const FIRST_PORT: usize = 1;
/// Token of the datagram socket directory's watch (past every port's).
const DIR_WATCH: usize = FIRST_PORT + MAX_PORTS;
/// Most VMs attached at once to one listening socket.
const MAX_PORTS: usize = 64;
/// Frames a port's own queue holds while several VMs share the link.
const PORT_QUEUE_SLOTS: usize = 128;
/// How long frames to one VM whose queue is full may hold back the frames
/// to the others (a VM that stopped reading must not stall the LAN).
const STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Where and how the VM attaches.
#[derive(Clone, Debug)]
pub enum AttachSpec {
    /// Listen on a unix stream socket (QEMU `-netdev stream,server=off,addr.type=unix`).
    UnixListen(PathBuf),
    /// Connect to a unix stream socket QEMU listens on (`server=on`).
    UnixConnect(PathBuf),
    /// Listen on a TCP address (`-netdev stream` inet, `-netdev socket,connect=`).
    TcpListen(SocketAddr),
    /// Bind a unix datagram socket (`-netdev dgram` with unix addresses).
    UnixDgram(PathBuf),
    /// A tap device's descriptor (IFF_TAP | IFF_NO_PI), opened inside a
    /// container's network namespace; set non-blocking on open.
    Tap(Arc<OwnedFd>),
    /// Listen on a unix stream socket for QEMU's vhost-user frontend
    /// (`-chardev socket,path=PATH -netdev vhost-user,chardev=...`), one VM.
    VhostUser(PathBuf),
}

impl std::fmt::Display for AttachSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachSpec::UnixListen(p) => write!(f, "unix stream socket {}", p.display()),
            AttachSpec::UnixConnect(p) => write!(f, "unix stream socket {} (connect)", p.display()),
            AttachSpec::TcpListen(a) => write!(f, "TCP address {a}"),
            AttachSpec::UnixDgram(p) => write!(f, "unix datagram socket {}", p.display()),
            AttachSpec::Tap(fd) => write!(f, "tap device (descriptor {})", fd.as_raw_fd()),
            AttachSpec::VhostUser(p) => write!(f, "vhost-user socket {}", p.display()),
        }
    }
}

/// Why the attachment could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{spec}: {what}")]
pub struct AttachError {
    spec: String,
    what: &'static str,
    source: std::io::Error,
}

/// What happened on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Nothing that changes who is attached.
    Unchanged,
    /// A VM attached.
    Connected,
    /// The VM went away (closed its end, or the link broke).
    Gone,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// The transports, statically dispatched: one `match` per batch.
enum Link {
    Unix(Stream<UnixStream>),
    Tcp(Stream<TcpStream>),
    Dgram(Dgram),
    Tap(Tap),
    Vhost(Vhost),
}

macro_rules! each_link {
    ($link:expr, $t:ident => $e:expr) => {
        match $link {
            Link::Unix($t) => $e,
            Link::Tcp($t) => $e,
            Link::Dgram($t) => $e,
            Link::Tap($t) => $e,
            Link::Vhost($t) => $e,
        }
    };
}

impl Transport for Link {
    fn rx_len(&self) -> usize {
        each_link!(self, t => t.rx_len())
    }
    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        each_link!(self, t => t.register(registry, token))
    }
    fn deregister(&mut self, registry: &Registry) {
        each_link!(self, t => t.deregister(registry))
    }
    fn flush(
        &mut self,
        tx: &mut GuestTx,
        skip: &mut usize,
        writable: &mut bool,
    ) -> Result<usize, VmGone> {
        each_link!(self, t => t.flush(tx, skip, writable))
    }
    fn receive(
        &mut self,
        rx: &mut Rx,
        readable: &mut bool,
        deliver: impl FnMut(&[u8], RxChecksum, &[u8]),
    ) -> Result<(), Lost> {
        each_link!(self, t => t.receive(rx, readable, deliver))
    }
    fn end_batch(&mut self) {
        each_link!(self, t => t.end_batch())
    }
}

impl Link {
    /// Asks for (`on`) or stops asking for the link's writable edges: a
    /// stream link is watched for them only while a write waits (see
    /// `stream`); the other links are registered for them throughout.
    fn watch_writable(
        &mut self,
        registry: &Registry,
        token: Token,
        on: bool,
    ) -> std::io::Result<()> {
        match self {
            Link::Unix(s) => s.watch_writable(registry, token, on),
            Link::Tcp(s) => s.watch_writable(registry, token, on),
            Link::Tap(t) => t.watch_writable(registry, token, on),
            Link::Dgram(_) | Link::Vhost(_) => Ok(()),
        }
    }
}

/// One VM's link and its buffers (allocated when it attaches).
struct Port {
    link: Link,
    rx: Rx,
    /// Bytes of the first frame to send (of `queue`, or of the stack's
    /// queue while this is the only port and `queue` is empty) that a
    /// partial write already sent.
    tx_skip: usize,
    readable: bool,
    writable: bool,
    /// Whether the link was asked for its writable edge after a refused
    /// write ([`Port::await_writable`]).
    write_armed: bool,
    /// Frames switched to this port while several VMs share the link
    /// (allocated when a second VM attaches).
    queue: Option<GuestTx>,
}

impl Port {
    fn new(link: Link) -> Port {
        let rx_len = link.rx_len();
        Port {
            link,
            rx: Rx {
                buf: vec![0; rx_len],
                start: 0,
                end: 0,
            },
            tx_skip: 0,
            // A datagram VM's frames are read from the attachment's socket.
            readable: rx_len > 0,
            writable: true,
            write_armed: false,
            queue: None,
        }
    }

    fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, GuestTx::len)
    }

    fn register(&mut self, registry: &Registry, index: usize) -> std::io::Result<()> {
        self.link
            .register(registry, token(TokenKind::Attach, FIRST_PORT + index))
    }

    /// After a write the link refused (`writable` cleared by its flush):
    /// asks for the writable edge that resumes it. A link that cannot be
    /// watched is given up (nothing would ever resume it).
    fn await_writable(&mut self, registry: &Registry, index: usize) -> Result<(), VmGone> {
        if self.writable || self.write_armed {
            return Ok(());
        }
        let token = token(TokenKind::Attach, FIRST_PORT + index);
        if let Err(err) = self.link.watch_writable(registry, token, true) {
            tracing::warn!(%err, port = index, "watching the VM's link for room failed");
            return Err(VmGone);
        }
        self.write_armed = true;
        Ok(())
    }

    /// The writable edge came: stops asking for more of them.
    fn writable_again(&mut self, registry: &Registry, index: usize) {
        self.writable = true;
        if !std::mem::take(&mut self.write_armed) {
            return;
        }
        let token = token(TokenKind::Attach, FIRST_PORT + index);
        if let Err(err) = self.link.watch_writable(registry, token, false) {
            // Only costs wake-ups with nothing to do.
            tracing::debug!(%err, port = index, "unwatching the VM's link for room failed");
        }
    }
}

/// The VM links (one per VM, see [`switch`]) and the socket they
/// attach through.
pub struct Attachment {
    spec: AttachSpec,
    listener: Option<Listener>,
    /// The bound datagram socket every datagram VM sends to (never
    /// connected, so any number of VMs can), and its receive buffer.
    dgram: Option<UnixDatagram>,
    dgram_rx: Vec<u8>,
    dgram_readable: bool,
    /// The other sockets next to the bound datagram socket (`None`
    /// without a watch: the socket then stays unconnected).
    dgram_watch: Option<dir_watch::DirWatch>,
    /// The VM the bound datagram socket is connected to while it is the
    /// only one (see `dgram`), and how many batches a change of that has
    /// waited for the socket to be read out.
    dgram_exclusive: Option<dgram::PeerAddr>,
    dgram_resync: Option<usize>,
    /// Ports by token index minus [`FIRST_PORT`]; a VM that went away
    /// leaves `None` until another takes its place.
    ports: Vec<Option<Port>>,
    /// Ports in use.
    live: usize,
    /// Whether a VM has sent a frame since the link was last detached:
    /// only then is the last connection closing a VM leaving (a
    /// connection that closes without a frame is a probe, such as a health
    /// check or a second `slipway user` finding the socket in use).
    had_vm: bool,
    switch: Switch,
    /// MAC addresses of VMs that went away while others stayed, for the
    /// stack to forget ([`Attachment::take_departed`]).
    departed: Vec<EthernetAddress>,
    /// Since when a frame to one VM whose queue is full holds back the
    /// stack's queue, and how long it may ([`STALL_TIMEOUT`]).
    blocked_since: Option<Instant>,
    stall_timeout: Duration,
    /// Frames toward the VMs dropped while switching (a full queue), for
    /// the stack's counters ([`Attachment::take_drops`]).
    drops: u64,
    /// The socket file to remove when done.
    owned_path: Option<PathBuf>,
    warned_unnamed_peer: bool,
    /// A vhost-user socket QEMU has not connected to yet.
    vhost: Option<vhost::Pending>,
    /// The event loop's polls so far ([`Attachment::polled`]).
    polls: u64,
}
/// Removes a socket file left behind by a process that is gone; refuses
/// (with `AddrInUse`) when something still listens on it, and leaves
/// anything that is not a socket alone (bind then fails on it).
pub(crate) fn remove_stale_socket(path: &Path, stream: bool) -> std::io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    let alive = if stream {
        std::os::unix::net::UnixStream::connect(path).is_ok()
    } else {
        std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect(path))
            .is_ok()
    };
    if alive {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        ));
    }
    std::fs::remove_file(path)
}

/// Copies one frame into a port's own queue (allocated on first use, with
/// slots of `max_frame` bytes); false when the queue is full.
fn enqueue(port: &mut Port, frame: &[u8], max_frame: usize) -> bool {
    let queue = port.queue.get_or_insert_with(|| {
        GuestTx::new(
            max_frame.saturating_sub(ETHERNET_HEADER_LEN),
            PORT_QUEUE_SLOTS,
        )
    });
    if frame.len() > queue.max_frame_len() {
        // Larger than the link MTU: no VM on it could take it either.
        return true;
    }
    queue.push(|buf| {
        buf[..frame.len()].copy_from_slice(frame);
        frame.len()
    })
}

impl Attachment {
    /// Binds, listens on or connects to the socket `spec` names.
    pub fn open(spec: AttachSpec, registry: &Registry) -> Result<Attachment, AttachError> {
        let err = |what: &'static str| {
            let spec = spec.to_string();
            move |source| AttachError { spec, what, source }
        };
        let mut listener = None;
        let mut dgram = None;
        let mut link = None;
        let mut owned_path = None;
        let mut vhost = None;
        let mut dgram_watch = None;
        let listening = token(TokenKind::Attach, LISTENER);
        // A unix listener at `path` (a stale socket file replaced), registered.
        let listen_unix = |path: &Path| -> Result<UnixListener, AttachError> {
            remove_stale_socket(path, true).map_err(err("socket file"))?;
            let mut l = UnixListener::bind(path).map_err(err("bind"))?;
            registry
                .register(&mut l, listening, Interest::READABLE)
                .map_err(err("register"))?;
            Ok(l)
        };
        match &spec {
            AttachSpec::UnixListen(path) => {
                listener = Some(Listener::Unix(listen_unix(path)?));
                owned_path = Some(path.clone());
            }
            AttachSpec::TcpListen(addr) => {
                let mut l = TcpListener::bind(*addr).map_err(err("bind"))?;
                registry
                    .register(&mut l, listening, Interest::READABLE)
                    .map_err(err("register"))?;
                listener = Some(Listener::Tcp(l));
            }
            AttachSpec::UnixConnect(path) => {
                let s = std::os::unix::net::UnixStream::connect(path).map_err(err("connect"))?;
                s.set_nonblocking(true).map_err(err("connect"))?;
                link = Some(Link::Unix(Stream(UnixStream::from_std(s))));
            }
            AttachSpec::UnixDgram(path) => {
                remove_stale_socket(path, false).map_err(err("socket file"))?;
                let mut s = UnixDatagram::bind(path).map_err(err("bind"))?;
                owned_path = Some(path.clone());
                registry
                    .register(&mut s, listening, Interest::READABLE)
                    .map_err(err("register"))?;
                dgram = Some(s);
                dgram_watch =
                    dgram::watch_directory(path, registry, token(TokenKind::Attach, DIR_WATCH));
            }
            AttachSpec::VhostUser(path) => {
                vhost = Some(vhost::Pending {
                    listener: listen_unix(path)?,
                });
                owned_path = Some(path.clone());
            }
            AttachSpec::Tap(fd) => {
                // SAFETY: fcntl on a descriptor the spec keeps open.
                let nonblocking = unsafe {
                    let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                    flags >= 0
                        && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
                };
                if !nonblocking {
                    return Err(err("non-blocking mode")(std::io::Error::last_os_error()));
                }
                let vnet = tap::tap_vnet_hdr(fd.as_raw_fd()).map_err(err("virtio-net header"))?;
                link = Some(Link::Tap(Tap::new(fd.clone(), vnet)));
            }
        }
        let mut ports = Vec::new();
        if let Some(link) = link {
            let mut port = Port::new(link);
            port.register(registry, 0).map_err(err("register"))?;
            ports.push(Some(port));
        }
        // The line `slipway user` shows by default (slipway::lifecycle).
        tracing::info!(target: "slipway::lifecycle", %spec, "ready: waiting for the VM on {spec}");
        let dgram_rx = if dgram.is_some() {
            vec![0; DGRAM_READ_BATCH * DGRAM_SLOT]
        } else {
            Vec::new()
        };
        Ok(Attachment {
            spec,
            listener,
            dgram_readable: dgram.is_some(),
            dgram,
            dgram_rx,
            dgram_watch,
            dgram_exclusive: None,
            dgram_resync: None,
            live: ports.len(),
            ports,
            had_vm: false,
            switch: Switch::default(),
            departed: Vec::new(),
            blocked_since: None,
            stall_timeout: STALL_TIMEOUT,
            drops: 0,
            owned_path,
            warned_unnamed_peer: false,
            vhost,
            polls: 0,
        })
    }

    /// The address the attachment listens on (a TCP listener's real port
    /// when port 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Some(Listener::Tcp(l)) => l.local_addr().ok(),
            _ => None,
        }
    }

    /// Whether the link takes TCP segmentation-offload frames (a tap with
    /// virtio-net headers): the stack's queue should then
    /// [`GuestTx::enable_offload`].
    pub fn takes_offload(&self) -> bool {
        self.ports
            .iter()
            .flatten()
            .any(|p| matches!(p.link, Link::Tap(Tap { vnet: true, .. })))
    }

    /// Whether a VM link is open (for datagrams: a VM has sent a frame).
    pub fn is_attached(&self) -> bool {
        self.live > 0
    }

    /// How many VM links are open (several VMs on a listening socket form
    /// one LAN through [`switch`]).
    pub fn port_count(&self) -> usize {
        self.live
    }

    /// The only port, when frames can go to it straight from the stack's
    /// queue: one VM and nothing left in its own queue from a time when
    /// there were several.
    fn direct(&self) -> Option<usize> {
        if self.live != 1 {
            return None;
        }
        let i = self.ports.iter().position(Option::is_some)?;
        (self.ports[i].as_ref()?.queued() == 0).then_some(i)
    }

    /// Whether there is more to read or write without waiting for an event.
    pub fn has_pending_io(&self, tx: &GuestTx) -> bool {
        if self.can_read(tx) {
            return true;
        }
        match self.direct() {
            Some(i) => self.ports[i]
                .as_ref()
                .is_some_and(|p| p.writable && !tx.is_empty()),
            None => self
                .ports
                .iter()
                .flatten()
                .any(|p| p.writable && p.queued() > 0),
        }
    }

    /// Whether guest frames may be waiting and their replies have room:
    /// while the queue toward the guest is nearly full, the guest is not
    /// read, which pushes back on it instead of dropping replies.
    pub fn can_read(&self, tx: &GuestTx) -> bool {
        let headroom = (tx.free_slots() + tx.len()).div_ceil(4).min(64);
        tx.free_slots() >= headroom
            && (self.dgram_readable || self.ports.iter().flatten().any(|p| p.readable))
    }

    /// Counts one return of the event loop's poll: a tap judges by it
    /// whether a burst left frames behind (see `tap`).
    pub fn polled(&mut self) {
        self.polls = self.polls.wrapping_add(1);
    }

    /// Handles readiness of a token of kind [`TokenKind::Attach`].
    pub fn on_event(&mut self, registry: &Registry, index: usize, event: &Event) -> LinkState {
        if index == DIR_WATCH {
            self.sync_dgram_peer(false);
            return LinkState::Unchanged;
        }
        if index == LISTENER {
            if let Some(pending) = self.vhost.take() {
                return self.accept_vhost(registry, pending);
            }
            if self.dgram.is_some() {
                self.dgram_readable = true;
                return LinkState::Unchanged;
            }
            return self.accept(registry);
        }
        let Some((i, Some(port))) = index
            .checked_sub(FIRST_PORT)
            .and_then(|i| Some((i, self.ports.get_mut(i)?)))
        else {
            return LinkState::Unchanged;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            port.readable = true;
        }
        if event.is_writable() || event.is_write_closed() {
            port.writable_again(registry, i);
        }
        LinkState::Unchanged
    }

    /// Accepts every VM waiting on the listening socket, up to
    /// `MAX_PORTS` (64) at once.
    pub fn accept(&mut self, registry: &Registry) -> LinkState {
        let mut state = LinkState::Unchanged;
        loop {
            let accepted = match &self.listener {
                Some(Listener::Unix(l)) => l.accept().map(|(s, _)| Link::Unix(Stream(s))),
                Some(Listener::Tcp(l)) => l.accept().map(|(s, peer)| {
                    let _ = s.set_nodelay(true);
                    tracing::info!(%peer, "VM connected over TCP");
                    Link::Tcp(Stream(s))
                }),
                None => return state,
            };
            let link = match accepted {
                Ok(link) => link,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return state,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::warn!(%err, "accepting the VM's connection failed");
                    return state;
                }
            };
            if self.live >= MAX_PORTS {
                tracing::warn!(
                    max = MAX_PORTS,
                    "too many VMs on one link; connection closed"
                );
                continue;
            }
            if let Some(index) = self.add_port(registry, link) {
                tracing::info!(spec = %self.spec, port = index, vms = self.live, "VM attached");
                state = LinkState::Connected;
            }
        }
    }

    /// Accepts QEMU's vhost-user connection: the one VM of this socket.
    fn accept_vhost(&mut self, registry: &Registry, pending: vhost::Pending) -> LinkState {
        match pending.accept(registry) {
            Ok(link) => match self.add_port(registry, Link::Vhost(link)) {
                Some(_) => {
                    tracing::info!(spec = %self.spec, "VM attached");
                    LinkState::Connected
                }
                None => LinkState::Gone,
            },
            Err(err) => {
                tracing::warn!(%err, spec = %self.spec, "setting up the vhost-user connection failed");
                LinkState::Gone
            }
        }
    }

    /// Whether QEMU's vhost-user connection is still awaited (the sandbox
    /// waits for it: see `vhost`).
    pub(crate) fn awaits_vhost(&self) -> bool {
        self.vhost.is_some()
    }

    /// Gives `link` a port (the first free one) and registers it; `None`
    /// when it cannot be registered.
    fn add_port(&mut self, registry: &Registry, link: Link) -> Option<usize> {
        let index = self
            .ports
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                self.ports.push(None);
                self.ports.len() - 1
            });
        let mut port = Port::new(link);
        if let Err(err) = port.register(registry, index) {
            tracing::warn!(%err, "registering the VM's link failed");
            return None;
        }
        self.ports[index] = Some(port);
        self.live += 1;
        Some(index)
    }

    /// Closes every VM link (the last VM went away) and resets the
    /// buffers. A datagram socket stays bound for the next VM.
    pub fn detach(&mut self, registry: &Registry) {
        self.switch = Switch::default();
        self.had_vm = false;
        self.departed.clear();
        for slot in &mut self.ports {
            if let Some(mut port) = slot.take() {
                port.link.deregister(registry);
            }
        }
        self.live = 0;
        self.sync_dgram_peer(true);
    }

    /// Whether a VM that goes away can be followed by another on this
    /// attachment (listening and datagram modes; not connect mode).
    pub fn can_wait_for_next(&self) -> bool {
        !matches!(
            self.spec,
            AttachSpec::UnixConnect(_) | AttachSpec::Tap(_) | AttachSpec::VhostUser(_)
        )
    }

    /// MAC addresses of VMs that went away while others stayed on the
    /// link; the stack forgets them ([`Stack::forget_guest`]).
    pub fn take_departed(&mut self) -> std::vec::Drain<'_, EthernetAddress> {
        self.departed.drain(..)
    }

    /// The event loop's batch is over: each link tells its VM of what the
    /// batch left for it (see [`Transport::end_batch`]).
    pub fn end_batch(&mut self) {
        for port in self.ports.iter_mut().flatten() {
            port.link.end_batch();
        }
    }

    /// Frames toward the VMs dropped since the last call because a VM's
    /// queue was full (counted by the stack as [`DropReason::GuestTxFull`]).
    pub fn take_drops(&mut self) -> u64 {
        std::mem::take(&mut self.drops)
    }

    /// Port `i` failed or closed. The last VM is reported as
    /// [`LinkState::Gone`] (the caller detaches); another is removed here
    /// and its addresses are forgotten, and the others go on. On a
    /// listening socket the last connection closing is no VM leaving
    /// unless a VM sent a frame: a probe that connected and closed is
    /// removed and the network goes on.
    fn lost(&mut self, i: usize) -> LinkState {
        let last = self.live <= 1;
        if last && (self.had_vm || !self.can_wait_for_next()) {
            return LinkState::Gone;
        }
        // Dropping the socket closes it and takes it out of the poll set.
        if self.ports[i].take().is_some() {
            self.live -= 1;
        }
        if last {
            tracing::info!(
                port = i,
                "a connection closed without sending a frame (not a VM): still listening"
            );
            return LinkState::Unchanged;
        }
        let macs = self.switch.forget_port(i);
        tracing::info!(port = i, vms = self.live, "VM went away; the others stay");
        self.departed.extend(macs);
        self.sync_dgram_peer(false);
        LinkState::Unchanged
    }

    /// Reads what the guests sent (one large read per stream, a batch of
    /// datagrams) and hands each frame to the stack or, with several VMs,
    /// to the switch.
    pub fn receive(&mut self, registry: &Registry, stack: &mut Stack, now: Instant) -> LinkState {
        let state = self.receive_frames(registry, stack, now);
        // Datagrams the frames left waiting go now (see `crate::udp`).
        stack.end_guest_batch(registry, now, &[]);
        state
    }

    fn receive_frames(
        &mut self,
        registry: &Registry,
        stack: &mut Stack,
        now: Instant,
    ) -> LinkState {
        let mut state = LinkState::Unchanged;
        if self.dgram_readable {
            state = self.receive_dgram(registry, stack, now);
        }
        for i in 0..self.ports.len() {
            if !self.ports[i].as_ref().is_some_and(|p| p.readable) {
                continue;
            }
            // The port leaves the table while its frames are delivered
            // (the switch may queue them to the other ports).
            let Some(mut port) = self.ports[i].take() else {
                continue;
            };
            if let Link::Tap(tap) = &mut port.link {
                tap.set_poll(self.polls);
            }
            let read = port
                .link
                .receive(&mut port.rx, &mut port.readable, |frame, sum, batch| {
                    self.deliver(i, frame, sum, batch, registry, stack, now)
                });
            // Payload gathered in place leaves before the port's buffer
            // is read into again (see `Transport::receive`).
            stack.end_guest_batch(registry, now, &port.rx.buf);
            self.ports[i] = Some(port);
            if let Err(lost) = read {
                if lost == Lost::Oversized {
                    stack.count_drop(DropReason::Oversized);
                }
                if self.lost(i) == LinkState::Gone {
                    return LinkState::Gone;
                }
            }
        }
        state
    }

    /// Hands one frame from port `from` on: straight to the stack when it
    /// is the only VM, else where the switch says.
    ///
    /// A frame whose `checksum` is [`RxChecksum::Trusted`] (from a tap,
    /// which is always the only port) may carry a partial checksum, so it
    /// must never be switched to another VM.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        from: usize,
        frame: &[u8],
        checksum: RxChecksum,
        batch: &[u8],
        registry: &Registry,
        stack: &mut Stack,
        now: Instant,
    ) {
        self.had_vm = true;
        if self.live <= 1 || frame.len() < ETHERNET_HEADER_LEN {
            // Frames too short for Ethernet are counted by the stack.
            stack.handle_frame_batched(registry, frame, checksum, batch, now);
            return;
        }
        let dst = EthernetAddress::from_bytes(&frame[..6]);
        let src = EthernetAddress::from_bytes(&frame[6..12]);
        self.switch.learn(src, from, now);
        let max_frame = stack.guest_tx().max_frame_len();
        let to_stack = match self.switch.route(dst, from, now) {
            Route::Stack => true,
            Route::Drop => false,
            Route::Port(p) => {
                if let Some(Some(port)) = self.ports.get_mut(p) {
                    if !enqueue(port, frame, max_frame) {
                        stack.count_drop(DropReason::GuestTxFull);
                    }
                }
                false
            }
            Route::Flood { stack: to_stack } => {
                for (i, port) in self.ports.iter_mut().enumerate() {
                    let Some(port) = port.as_mut().filter(|_| i != from) else {
                        continue;
                    };
                    if !enqueue(port, frame, max_frame) {
                        stack.count_drop(DropReason::GuestTxFull);
                    }
                }
                to_stack
            }
        };
        if to_stack {
            stack.handle_frame_batched(registry, frame, RxChecksum::Unverified, batch, now);
        }
    }

    /// Sends queued frames to the VMs until the queues are empty or the
    /// sockets are full. With one VM the stack's queue is written as it
    /// is; with several, its frames are first switched to the ports' own
    /// queues. Returns how many frames left the stack's queue or a port's.
    pub fn flush(&mut self, registry: &Registry, tx: &mut GuestTx) -> Result<usize, VmGone> {
        if let Some(i) = self.direct() {
            let Some(port) = self.ports[i].as_mut() else {
                return Ok(0);
            };
            if !port.writable {
                return Ok(0);
            }
            let sent = port
                .link
                .flush(tx, &mut port.tx_skip, &mut port.writable)
                .and_then(|sent| port.await_writable(registry, i).map(|()| sent));
            return match sent {
                Err(VmGone) if self.lost(i) != LinkState::Gone => Ok(0),
                sent => sent,
            };
        }
        if self.live == 0 {
            return Ok(0);
        }
        let mut done = self.distribute(tx);
        for i in 0..self.ports.len() {
            let Some(port) = self.ports[i].as_mut() else {
                continue;
            };
            let Some(queue) = port.queue.as_mut() else {
                continue;
            };
            if !port.writable || queue.is_empty() {
                continue;
            }
            let sent = port
                .link
                .flush(queue, &mut port.tx_skip, &mut port.writable);
            match sent.and_then(|sent| port.await_writable(registry, i).map(|()| sent)) {
                Ok(n) => done += n,
                Err(VmGone) => {
                    if self.lost(i) == LinkState::Gone {
                        return Err(VmGone);
                    }
                }
            }
        }
        Ok(done)
    }

    /// Moves frames from the stack's queue to the ports' queues: a frame
    /// to a learnt address to its port (waiting while that queue is full,
    /// which holds the stack back), others to every port (skipping full
    /// ones). Returns how many frames left the stack's queue.
    fn distribute(&mut self, tx: &mut GuestTx) -> usize {
        if tx.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let max_frame = tx.max_frame_len();
        let mut moved = 0;
        // A frame half-written to the VM that was alone until now goes to
        // that VM only, ahead of everything else.
        if let Some(port) = self
            .ports
            .iter_mut()
            .flatten()
            .find(|p| p.tx_skip > 0 && p.queued() == 0)
        {
            enqueue(port, tx.frame(0), max_frame);
            tx.pop(1);
            moved += 1;
        }
        while !tx.is_empty() {
            let frame = tx.frame(0);
            let dst = EthernetAddress::from_bytes(&frame[..6]);
            let target = if dst.is_unicast() {
                self.switch
                    .lookup(dst, now)
                    .filter(|&p| self.ports.get(p).is_some_and(Option::is_some))
            } else {
                None
            };
            match target {
                Some(p) => {
                    let Some(port) = self.ports[p].as_mut() else {
                        break;
                    };
                    if enqueue(port, frame, max_frame) {
                        self.blocked_since = None;
                    } else {
                        // Hold the stack back while this VM catches up,
                        // but not the other VMs for long if it stopped
                        // reading: then its frames are dropped.
                        let since = *self.blocked_since.get_or_insert(now);
                        if now.saturating_duration_since(since) < self.stall_timeout {
                            break;
                        }
                        tracing::debug!(port = p, "VM not reading: frame to it dropped");
                        self.drops += 1;
                    }
                }
                None => {
                    for port in self.ports.iter_mut().flatten() {
                        if !enqueue(port, frame, max_frame) {
                            tracing::debug!("frame to a full VM queue dropped");
                            self.drops += 1;
                        }
                    }
                }
            }
            tx.pop(1);
            moved += 1;
        }
        moved
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_path {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::debug!(%err, path = %path.display(), "removing the socket file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::GATEWAY_MAC;
    use crate::options::parse_options;
    use std::io::{Read, Write};

    /// An attachment in connect mode to a listener the test holds, the
    /// test's end of the connection, and a stack.
    fn connected() -> (
        Attachment,
        std::os::unix::net::UnixStream,
        Stack,
        mio::Poll,
        PathBuf,
    ) {
        let dir = std::env::temp_dir().join(format!(
            "slipway-attach-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qemu.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let poll = mio::Poll::new().unwrap();
        let attach =
            Attachment::open(AttachSpec::UnixConnect(path.clone()), poll.registry()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        let stack = Stack::new(parse_options("").unwrap()).unwrap();
        (attach, peer, stack, poll, dir)
    }

    impl Attachment {
        /// Marks every port readable and/or writable, as events would.
        fn set_ready(&mut self, readable: bool, writable: bool) {
            for port in self.ports.iter_mut().flatten() {
                port.readable |= readable && !port.rx.is_empty();
                port.writable |= writable;
            }
            self.dgram_readable |= readable && self.dgram.is_some();
        }

        fn any_readable(&self) -> bool {
            self.dgram_readable || self.ports.iter().flatten().any(|p| p.readable)
        }
    }

    fn arp_request() -> Vec<u8> {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
        f
    }

    fn receive_all(attach: &mut Attachment, stack: &mut Stack, poll: &mio::Poll) -> LinkState {
        attach.set_ready(true, false);
        let mut state = LinkState::Unchanged;
        while attach.any_readable() && state == LinkState::Unchanged {
            state = attach.receive(poll.registry(), stack, Instant::now());
        }
        state
    }

    #[test]
    fn frames_split_across_reads_are_reassembled_and_answered() {
        let (mut attach, mut peer, mut stack, poll, dir) = connected();
        let frame = arp_request();
        let mut wire = Vec::new();
        for _ in 0..3 {
            wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            wire.extend_from_slice(&frame);
        }
        // A runt (shorter than Ethernet) is counted, and the stream stays in sync.
        wire.extend_from_slice(&[0, 0, 0, 2, 0xaa, 0xbb]);
        wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        wire.extend_from_slice(&frame);
        let (first, rest) = wire.split_at(7);
        peer.write_all(first).unwrap();
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Unchanged
        );
        assert_eq!(stack.counters().frames_in, 0);
        peer.write_all(rest).unwrap();
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Unchanged
        );
        assert_eq!(stack.counters().frames_in, 5);
        assert_eq!(stack.counters().drops(DropReason::Truncated), 1);
        assert_eq!(stack.guest_tx().len(), 4);
        assert_eq!(attach.flush(poll.registry(), stack.guest_tx()), Ok(4));
        let mut back = vec![0u8; 4 * (4 + 42)];
        peer.read_exact(&mut back).unwrap();
        for chunk in back.chunks(46) {
            assert_eq!(&chunk[..4], &[0, 0, 0, 42]);
            assert_eq!(&chunk[4 + 12..4 + 14], &[0x08, 0x06]);
        }
        drop(peer);
        assert_eq!(receive_all(&mut attach, &mut stack, &poll), LinkState::Gone);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Waits up to `wait` for the ports' readiness events and hands them
    /// to the attachment; whether one said readable, and writable.
    fn next_event(
        attach: &mut Attachment,
        poll: &mut mio::Poll,
        wait: std::time::Duration,
    ) -> (bool, bool) {
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(wait)).unwrap();
        let (mut readable, mut writable) = (false, false);
        for event in events.iter() {
            if let Some((crate::iface::TokenKind::Attach, index)) =
                crate::iface::decode_token(event.token())
            {
                attach.on_event(poll.registry(), index, event);
                readable |= event.is_readable();
                writable |= event.is_writable();
            }
        }
        (readable, writable)
    }

    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

    #[test]
    fn a_short_stream_read_waits_for_the_next_edge() {
        let (mut attach, mut peer, mut stack, mut poll, dir) = connected();
        let frame = arp_request();
        let mut wire = Vec::new();
        for _ in 0..2 {
            wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            wire.extend_from_slice(&frame);
        }
        peer.write_all(&wire).unwrap();
        assert!(next_event(&mut attach, &mut poll, SECOND).0);
        assert!(attach.any_readable());
        // One read took all there was: no second read to see EAGAIN.
        attach.receive(poll.registry(), &mut stack, Instant::now());
        assert_eq!(stack.counters().frames_in, 2);
        assert!(!attach.any_readable());
        // The kernel raises a new edge for the next frame, even split.
        peer.write_all(&wire[..10]).unwrap();
        assert!(next_event(&mut attach, &mut poll, SECOND).0);
        attach.receive(poll.registry(), &mut stack, Instant::now());
        assert!(!attach.any_readable());
        peer.write_all(&wire[10..46]).unwrap();
        assert!(next_event(&mut attach, &mut poll, SECOND).0);
        attach.receive(poll.registry(), &mut stack, Instant::now());
        assert_eq!(stack.counters().frames_in, 3);
        assert!(!attach.any_readable());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_stream_link_is_watched_for_room_only_while_a_write_waits() {
        let (mut attach, mut peer, mut stack, mut poll, dir) = connected();
        let short = std::time::Duration::from_millis(200);
        assert_eq!(next_event(&mut attach, &mut poll, short), (false, false));
        // QEMU reading what was written raises no event (it did once per
        // read while the link was watched for room throughout).
        let tx = stack.guest_tx();
        assert!(tx.push(|b| {
            b[..100].fill(7);
            100
        }));
        assert_eq!(attach.flush(poll.registry(), stack.guest_tx()), Ok(1));
        let mut one = [0u8; 104];
        peer.read_exact(&mut one).unwrap();
        assert_eq!(next_event(&mut attach, &mut poll, short), (false, false));
        // A full socket: the refused write asks for the writable edge ...
        loop {
            let tx = stack.guest_tx();
            while tx.push(|b| {
                b[..1400].fill(0x5a);
                1400
            }) {}
            attach.flush(poll.registry(), stack.guest_tx()).unwrap();
            if !attach.ports.iter().flatten().all(|p| p.writable) {
                break;
            }
        }
        assert!(attach.ports.iter().flatten().all(|p| p.write_armed));
        assert_eq!(attach.flush(poll.registry(), stack.guest_tx()), Ok(0));
        // ... which comes once QEMU reads, and the rest goes.
        let mut chunk = vec![0u8; 64 * 1024];
        peer.set_nonblocking(true).unwrap();
        let mut got = 0;
        while let Ok(n) = peer.read(&mut chunk) {
            got += n;
        }
        assert!(got > 0);
        assert_eq!(next_event(&mut attach, &mut poll, SECOND), (false, true));
        assert!(attach
            .ports
            .iter()
            .flatten()
            .all(|p| p.writable && !p.write_armed));
        assert!(attach.flush(poll.registry(), stack.guest_tx()).unwrap() > 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn oversized_stream_frame_closes_the_link() {
        let (mut attach, mut peer, mut stack, poll, dir) = connected();
        peer.write_all(&((MAX_STREAM_FRAME + 1) as u32).to_be_bytes())
            .unwrap();
        peer.write_all(&[0u8; 64]).unwrap();
        assert_eq!(receive_all(&mut attach, &mut stack, &poll), LinkState::Gone);
        assert_eq!(stack.counters().drops(DropReason::Oversized), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let (mut attach, mut peer, mut stack, poll, dir) = connected();
        let tx = stack.guest_tx();
        let mut pushed = 0;
        while pushed < 400
            && tx.push(|b| {
                b[..1400].fill(0x5a);
                1400
            })
        {
            pushed += 1;
        }
        // Far more than a socket buffer: flush until the kernel pushes back,
        // then read on the other side and flush again until all is through.
        let total = pushed * (4 + 1400);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let mut sent = 0;
        while sent < pushed {
            attach.set_ready(false, true);
            sent += attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        }
        let got = reader.join().unwrap();
        for chunk in got.chunks(1404) {
            assert_eq!(&chunk[..4], &1400u32.to_be_bytes());
            assert!(chunk[4..].iter().all(|&b| b == 0x5a));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dgram_learns_the_peer_batches_both_ways_and_counts_oversize() {
        let dir = std::env::temp_dir().join(format!("slipway-dgram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ours, theirs) = (dir.join("stack.sock"), dir.join("vm.sock"));
        let _ = std::fs::remove_file(&theirs);
        let poll = mio::Poll::new().unwrap();
        let mut attach =
            Attachment::open(AttachSpec::UnixDgram(ours.clone()), poll.registry()).unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        let vm = std::os::unix::net::UnixDatagram::bind(&theirs).unwrap();
        assert!(!attach.is_attached());
        // The kernel queues only 10 datagrams per unix socket by default.
        for _ in 0..8 {
            vm.send_to(&arp_request(), &ours).unwrap();
        }
        vm.send_to(&vec![0u8; DGRAM_SLOT + 10], &ours).unwrap();
        let mut state = LinkState::Unchanged;
        attach.set_ready(true, false);
        while attach.any_readable() {
            let s = attach.receive(poll.registry(), &mut stack, Instant::now());
            if s != LinkState::Unchanged {
                state = s;
            }
        }
        assert_eq!(state, LinkState::Connected);
        assert!(attach.is_attached());
        assert_eq!(stack.counters().drops(DropReason::Oversized), 1);
        assert_eq!(stack.guest_tx().len(), 8);
        assert_eq!(attach.flush(poll.registry(), stack.guest_tx()), Ok(8));
        let mut buf = [0u8; 128];
        for _ in 0..8 {
            let n = vm.recv(&mut buf).unwrap();
            assert_eq!(n, 42);
            assert_eq!(&buf[12..14], &[0x08, 0x06]);
        }
        // The VM's socket goes away: the next send says so.
        drop(vm);
        std::fs::remove_file(&theirs).unwrap();
        stack.guest_tx().push(|b| {
            b[..60].fill(1);
            60
        });
        assert_eq!(attach.flush(poll.registry(), stack.guest_tx()), Err(VmGone));
        drop(attach);
        assert!(!ours.exists(), "socket file removed");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn arp_from(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
        let mut f = arp_request();
        f[6..12].copy_from_slice(&mac);
        f[22..28].copy_from_slice(&mac);
        f[28..32].copy_from_slice(&ip);
        f
    }

    fn send(sock: &mut std::os::unix::net::UnixStream, frame: &[u8]) {
        sock.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
        sock.write_all(frame).unwrap();
    }

    fn read_frame(sock: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).unwrap();
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        sock.read_exact(&mut frame).unwrap();
        frame
    }

    fn nothing_to_read(sock: &mut std::os::unix::net::UnixStream) -> bool {
        sock.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let empty =
            matches!(sock.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        sock.set_nonblocking(false).unwrap();
        empty
    }

    /// A listening unix stream attachment in a fresh directory named after
    /// `name` (removed by the caller), a stack, and two VMs connected to it
    /// (not yet accepted).
    fn two_stream_vms(
        name: &str,
    ) -> (
        std::path::PathBuf,
        mio::Poll,
        Attachment,
        Stack,
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lan.sock");
        let poll = mio::Poll::new().unwrap();
        let attach =
            Attachment::open(AttachSpec::UnixListen(path.clone()), poll.registry()).unwrap();
        let stack = Stack::new(parse_options("").unwrap()).unwrap();
        let a = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let b = std::os::unix::net::UnixStream::connect(&path).unwrap();
        (dir, poll, attach, stack, a, b)
    }

    #[test]
    fn two_vms_on_one_listener_form_one_segment() {
        const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
        const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];
        let (dir, poll, mut attach, mut stack, mut a, mut b) = two_stream_vms("slipway-lan");
        assert_eq!(attach.accept(poll.registry()), LinkState::Connected);
        assert_eq!(attach.port_count(), 2);

        // A asks for the gateway (broadcast): the stack answers A only,
        // and B sees the request.
        send(&mut a, &arp_from(A, [10, 0, 2, 15]));
        receive_all(&mut attach, &mut stack, &poll);
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        let reply = read_frame(&mut a);
        assert_eq!(
            (&reply[..6], &reply[6..12]),
            (&A[..], GATEWAY_MAC.as_bytes())
        );
        assert_eq!(read_frame(&mut b), arp_from(A, [10, 0, 2, 15]));
        assert!(nothing_to_read(&mut b), "the reply to A is not flooded");

        // B does the same; now both are learnt.
        send(&mut b, &arp_from(B, [10, 0, 2, 16]));
        receive_all(&mut attach, &mut stack, &poll);
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        assert_eq!(&read_frame(&mut b)[..6], &B[..]);
        assert_eq!(read_frame(&mut a), arp_from(B, [10, 0, 2, 16]));

        // A to B: switched port to port; the stack never sees it.
        let mut unicast = vec![0u8; 60];
        unicast[..6].copy_from_slice(&B);
        unicast[6..12].copy_from_slice(&A);
        unicast[12..14].copy_from_slice(&[0x08, 0x00]);
        unicast[14..].fill(0x77);
        let frames_in = stack.counters().frames_in;
        send(&mut a, &unicast);
        receive_all(&mut attach, &mut stack, &poll);
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        assert_eq!(read_frame(&mut b), unicast);
        assert_eq!(stack.counters().frames_in, frames_in);
        assert!(nothing_to_read(&mut a));

        // B leaves: A stays attached, and B's address is handed back.
        drop(b);
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Unchanged
        );
        assert_eq!(attach.port_count(), 1);
        assert_eq!(
            attach.take_departed().collect::<Vec<_>>(),
            vec![EthernetAddress(B)]
        );
        send(&mut a, &arp_from(A, [10, 0, 2, 15]));
        receive_all(&mut attach, &mut stack, &poll);
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        assert_eq!(&read_frame(&mut a)[6..12], GATEWAY_MAC.as_bytes());
        // The last VM leaving is the end of the link.
        drop(a);
        assert_eq!(receive_all(&mut attach, &mut stack, &poll), LinkState::Gone);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A connection that closes without having sent a frame (a health
    /// check, a second `slipway user` finding the socket in use) is no VM
    /// leaving: the link stays up and the next VM is served. A VM that
    /// sent a frame and leaves ends the link.
    #[test]
    fn a_probe_that_closes_without_a_frame_is_not_a_vm_leaving() {
        const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
        let (dir, poll, mut attach, mut stack, probe, mut vm) = two_stream_vms("slipway-probe");
        drop(probe);
        assert_eq!(attach.accept(poll.registry()), LinkState::Connected);
        assert_eq!(attach.port_count(), 2);
        // The probe's close is seen first (it connected first)...
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Unchanged
        );
        assert_eq!(attach.port_count(), 1);
        assert_eq!(attach.take_departed().count(), 0);
        // ...and a probe alone on the link closing leaves it listening.
        let probe = std::os::unix::net::UnixStream::connect(dir.join("lan.sock")).unwrap();
        drop(vm);
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Unchanged,
            "the silent VM connection closing"
        );
        assert_eq!(attach.accept(poll.registry()), LinkState::Connected);
        drop(probe);
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Unchanged
        );
        assert_eq!(attach.port_count(), 0);
        // A VM then attaches, is answered, and its leaving is the end.
        vm = std::os::unix::net::UnixStream::connect(dir.join("lan.sock")).unwrap();
        assert_eq!(attach.accept(poll.registry()), LinkState::Connected);
        send(&mut vm, &arp_from(A, [10, 0, 2, 15]));
        receive_all(&mut attach, &mut stack, &poll);
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        assert_eq!(&read_frame(&mut vm)[6..12], GATEWAY_MAC.as_bytes());
        drop(vm);
        assert_eq!(receive_all(&mut attach, &mut stack, &poll), LinkState::Gone);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn drain(sock: &mut std::os::unix::net::UnixStream) {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while sock.read(&mut buf).is_ok_and(|n| n > 0) {}
        sock.set_nonblocking(false).unwrap();
    }

    #[test]
    fn a_vm_that_stops_reading_stalls_the_others_only_briefly() {
        const A: [u8; 6] = [0x52, 0x54, 0, 0, 2, 0xa];
        const B: [u8; 6] = [0x52, 0x54, 0, 0, 2, 0xb];
        let (dir, poll, mut attach, mut stack, mut a, mut b) = two_stream_vms("slipway-stall");
        attach.accept(poll.registry());
        send(&mut a, &arp_from(A, [10, 0, 2, 15]));
        send(&mut b, &arp_from(B, [10, 0, 2, 16]));
        receive_all(&mut attach, &mut stack, &poll);
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        drain(&mut a);
        drain(&mut b);
        // Far more frames to B than its socket and queue hold (B reads
        // nothing from now on), then one to A.
        let frame_to = |mac: [u8; 6]| {
            move |buf: &mut [u8]| {
                buf[..6].copy_from_slice(&mac);
                buf[6..12].copy_from_slice(GATEWAY_MAC.as_bytes());
                buf[12..14].copy_from_slice(&[0x08, 0x00]);
                buf[14..1400].fill(0x42);
                1400
            }
        };
        for _ in 0..450 {
            assert!(stack.guest_tx().push(frame_to(B)));
        }
        assert!(stack.guest_tx().push(frame_to(A)));
        attach.stall_timeout = std::time::Duration::from_secs(3600);
        for _ in 0..8 {
            attach.set_ready(false, true);
            attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        }
        assert!(nothing_to_read(&mut a), "held back behind B's frames");
        assert_eq!(attach.take_drops(), 0);
        // Past the stall timeout B's frames are dropped and A's goes.
        attach.stall_timeout = std::time::Duration::ZERO;
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        assert_eq!(&read_frame(&mut a)[..6], &A[..]);
        assert!(attach.take_drops() > 0);
        assert!(stack.guest_tx().is_empty());
        drop(attach);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `net.unix.max_dgram_qlen`: an unconnected unix datagram socket
    /// takes one more datagram than this before senders get EAGAIN.
    fn max_dgram_qlen() -> usize {
        std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// How many datagrams `vm` can send to `to` before EAGAIN (at most `max`).
    fn sends_until_full(vm: &std::os::unix::net::UnixDatagram, to: &Path, max: usize) -> usize {
        vm.set_nonblocking(true).unwrap();
        let mut sent = 0;
        while sent < max {
            match vm.send_to(&arp_from([0x52, 0x54, 0, 0, 2, 0xa], [10, 0, 2, 100]), to) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("sending to the stack: {e}"),
            }
        }
        vm.set_nonblocking(false).unwrap();
        sent
    }

    /// Waits for the directory watch's event and hands it to the attachment.
    fn dir_watch_event(attach: &mut Attachment, poll: &mut mio::Poll) {
        let mut events = mio::Events::with_capacity(16);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if let Some(e) = events
                .iter()
                .find(|e| e.token() == token(TokenKind::Attach, DIR_WATCH))
            {
                attach.on_event(poll.registry(), DIR_WATCH, e);
                return;
            }
        }
        panic!("no event from the directory watch");
    }

    /// The only VM gets the bound socket connected to it, past the kernel's
    /// queue limit: its frames, several batches of them, all reach the stack
    /// in order. A log file next to the socket changes nothing; another
    /// socket there makes the socket shared again at once, so that VM can
    /// send (a connected socket would refuse it: EPERM).
    #[test]
    fn dgram_sole_vm_is_connected_in_order_until_another_socket_appears() {
        // Removed with the test.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ours = dir.join("stack.sock");
        let mut poll = mio::Poll::new().unwrap();
        let mut attach =
            Attachment::open(AttachSpec::UnixDgram(ours.clone()), poll.registry()).unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        let a = std::os::unix::net::UnixDatagram::bind(dir.join("a.sock")).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let qlen = max_dgram_qlen();
        a.send_to(&arp_from([0x52, 0x54, 0, 0, 2, 0xa], [10, 0, 2, 99]), &ours)
            .unwrap();
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Connected
        );
        assert!(attach.dgram_exclusive.is_some());
        let burst = 3 * (qlen + 1);
        let mut buf = [0u8; 128];
        for round in 0..2 {
            // Sent before the stack reads any: the queue limit would stop
            // an unconnected socket at qlen + 1.
            vm_burst(&a, &ours, burst);
            receive_all(&mut attach, &mut stack, &poll);
            let mut replies = Vec::new();
            a.set_nonblocking(true).unwrap();
            while !stack.guest_tx().is_empty() {
                attach.set_ready(false, true);
                attach.flush(poll.registry(), stack.guest_tx()).unwrap();
                while let Ok(n) = a.recv(&mut buf) {
                    replies.push(buf[..n].to_vec());
                }
            }
            a.set_nonblocking(false).unwrap();
            let targets: Vec<u8> = replies.iter().map(|r| r[41]).collect();
            let mut want: Vec<u8> = (0..burst as u8).collect();
            if round == 0 {
                want.insert(0, 99);
            }
            assert_eq!(
                targets, want,
                "round {round}: replies in the order of the requests"
            );
            if round == 0 {
                // A log file opened next to the socket: still the only VM.
                std::fs::write(dir.join("stack.log"), b"x").unwrap();
                dir_watch_event(&mut attach, &mut poll);
                assert!(attach.dgram_exclusive.is_some());
            }
        }
        // Another VM's socket appears: shared again, B's frames get in.
        let b = std::os::unix::net::UnixDatagram::bind(dir.join("b.sock")).unwrap();
        // Leaving the peer would discard what the socket holds: while it
        // may hold frames the change waits for a read to find it empty.
        attach.set_ready(true, false);
        dir_watch_event(&mut attach, &mut poll);
        assert!(attach.dgram_exclusive.is_some());
        attach.receive(poll.registry(), &mut stack, Instant::now());
        assert!(attach.dgram_exclusive.is_none());
        b.send_to(&arp_from([0x52, 0x54, 0, 0, 2, 0xb], [10, 0, 2, 16]), &ours)
            .unwrap();
        assert_eq!(sends_until_full(&a, &ours, burst), qlen);
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Connected
        );
        assert_eq!(attach.port_count(), 2);
        drop(attach);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `n` ARP requests from `vm`, the i-th for sender address 10.0.2.i.
    fn vm_burst(vm: &std::os::unix::net::UnixDatagram, to: &Path, n: usize) {
        vm.set_nonblocking(true).unwrap();
        for i in 0..n {
            let f = arp_from([0x52, 0x54, 0, 0, 2, 0xa], [10, 0, 2, i as u8]);
            vm.send_to(&f, to)
                .unwrap_or_else(|e| panic!("frame {i} of {n} refused: {e}"));
        }
        vm.set_nonblocking(false).unwrap();
    }

    /// Toward the VM the kernel's queue limit stays (QEMU's socket is not
    /// connected): a flush sends what fits, and the next one, once the VM
    /// has read, resumes at the first frame not sent: every frame arrives
    /// once and in order.
    #[test]
    fn dgram_short_send_resumes_at_the_first_frame_not_sent() {
        // Removed with the test.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ours = dir.join("stack.sock");
        let poll = mio::Poll::new().unwrap();
        let mut attach =
            Attachment::open(AttachSpec::UnixDgram(ours.clone()), poll.registry()).unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        let vm = std::os::unix::net::UnixDatagram::bind(dir.join("vm.sock")).unwrap();
        vm.send_to(&arp_from([0x52, 0x54, 0, 0, 2, 0xa], [10, 0, 2, 15]), &ours)
            .unwrap();
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Connected
        );
        let qlen = max_dgram_qlen();
        let total = 3 * (qlen + 1) + 5;
        for i in 0..total {
            assert!(stack.guest_tx().push(|b| {
                b[..60].fill(0);
                b[59] = i as u8;
                60
            }));
        }
        // The stack's ARP reply first, then the numbered frames.
        let total = total + 1;
        attach.set_ready(false, true);
        let sent = attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        assert_eq!(sent, qlen + 1, "the first flush fills the VM's queue");
        assert_eq!(stack.guest_tx().len(), total - sent);
        // Not writable until the VM reads: nothing more goes.
        assert_eq!(attach.flush(poll.registry(), stack.guest_tx()), Ok(0));
        let mut got = Vec::new();
        let mut buf = [0u8; 128];
        vm.set_nonblocking(true).unwrap();
        while got.len() < total {
            while let Ok(n) = vm.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            attach.set_ready(false, true);
            attach.flush(poll.registry(), stack.guest_tx()).unwrap();
            if stack.guest_tx().is_empty() {
                while let Ok(n) = vm.recv(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
                break;
            }
        }
        assert_eq!(got.len(), total);
        assert_eq!(got[0].len(), 42, "the ARP reply");
        let seq: Vec<u8> = got[1..].iter().map(|f| f[59]).collect();
        assert_eq!(seq, (0..(total - 1) as u8).collect::<Vec<_>>());
        drop(attach);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn two_dgram_vms_share_one_socket() {
        const A: [u8; 6] = [0x52, 0x54, 0, 0, 1, 0xa];
        const B: [u8; 6] = [0x52, 0x54, 0, 0, 1, 0xb];
        let dir = std::env::temp_dir().join(format!("slipway-dgram-lan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours = dir.join("stack.sock");
        let poll = mio::Poll::new().unwrap();
        let mut attach =
            Attachment::open(AttachSpec::UnixDgram(ours.clone()), poll.registry()).unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        let bind = |name: &str| {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let s = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            (s, path)
        };
        let (a, _) = bind("a.sock");
        let (b, b_path) = bind("b.sock");
        let mut buf = [0u8; 128];
        a.send_to(&arp_from(A, [10, 0, 2, 15]), &ours).unwrap();
        b.send_to(&arp_from(B, [10, 0, 2, 16]), &ours).unwrap();
        assert_eq!(
            receive_all(&mut attach, &mut stack, &poll),
            LinkState::Connected
        );
        assert_eq!(attach.port_count(), 2);
        attach.flush(poll.registry(), stack.guest_tx()).unwrap();
        // Each gets the stack's answer and the other's broadcast request.
        let mut got_a = vec![a.recv(&mut buf).map(|n| buf[..n].to_vec()).unwrap()];
        got_a.push(a.recv(&mut buf).map(|n| buf[..n].to_vec()).unwrap());
        assert!(got_a.contains(&arp_from(B, [10, 0, 2, 16])), "{got_a:?}");
        assert!(got_a
            .iter()
            .any(|f| f[..6] == A && f[6..12] == *GATEWAY_MAC.as_bytes()));
        let n = b.recv(&mut buf).unwrap();
        let m = b.recv(&mut buf[n..]).unwrap();
        assert_eq!(n + m, 2 * 42);
        // B's socket goes away: the next frame to it finds out, A stays.
        drop(b);
        std::fs::remove_file(&b_path).unwrap();
        let mut to_b = arp_from(A, [10, 0, 2, 15]);
        to_b[..6].copy_from_slice(&B);
        a.send_to(&to_b, &ours).unwrap();
        receive_all(&mut attach, &mut stack, &poll);
        assert_eq!(
            attach.flush(poll.registry(), stack.guest_tx()).map(|_| ()),
            Ok(())
        );
        assert_eq!(attach.port_count(), 1);
        assert_eq!(
            attach.take_departed().collect::<Vec<_>>(),
            vec![EthernetAddress(B)]
        );
        drop(attach);
        let _ = std::fs::remove_dir_all(dir);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn random_stream_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..8),
            small_lengths in proptest::prelude::any::<bool>(),
        ) {
            let (mut attach, mut peer, mut stack, poll, dir) = connected();
            for mut chunk in chunks {
                if small_lengths && chunk.len() >= 4 {
                    // Mostly plausible lengths, so frames get parsed.
                    chunk[0] = 0;
                    chunk[1] = 0;
                    chunk[2] &= 0x01;
                }
                peer.write_all(&chunk).unwrap();
                if receive_all(&mut attach, &mut stack, &poll) == LinkState::Gone {
                    break;
                }
                let _ = attach.flush(poll.registry(), stack.guest_tx());
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
