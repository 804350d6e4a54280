//! The vhost-user transport: QEMU's `-netdev vhost-user` (a virtio-net
//! device whose rings and packet buffers live in guest memory that QEMU
//! shares with us as memfds, `memory-backend-memfd,share=on`).
//!
//! The protocol (the socket's messages, the memory table, the vrings'
//! addresses and eventfds) is rust-vmm's `vhost-user-backend`, the rings
//! are `virtio-queue`'s, guest memory is `vm-memory`'s: nothing of the
//! protocol is written here. Every descriptor is bounds-checked against the
//! memory table by `virtio-queue`'s `Reader`/`Writer` (a chain pointing
//! outside guest memory is an error, never an access); a chain that fails
//! is handed back to the guest empty and its frame is dropped.
//!
//! Threads and the event loop. `vhost-user-backend` runs two threads of its
//! own: one reads the socket's messages (memory table, ring addresses,
//! features), one waits in epoll for ring events. The stack is
//! single-threaded and stays on slipway's `mio` loop, which polls the
//! guest's kick eventfds itself ([`kick`]: the relay keeps them from the
//! library, so its worker thread never wakes for a kick), and the loop's
//! thread does all the ring work: it pops the guest's TX chains
//! (`receive`: copy out of guest memory, hand to the stack) and fills its
//! RX chains (`flush`), under the vrings' locks (which the protocol thread
//! takes only to reconfigure a ring). There is no copy through a socket and
//! no frame crosses a thread. The library's worker only reports a ring
//! being started (`handle_event`, which also hands us the vrings) by
//! writing our own eventfd ([`Shared::wake`], registered under the port's
//! token like the kicks). An eventfd is always writable, so each kick or
//! wake-up reports both readable and writable: a kick on either ring (TX:
//! frames to read; RX: buffers refilled) retries both directions.
//! On a quiet machine the library's worker, woken for every kick only to
//! pass it on, took a third of slipway's CPU time moving a download
//! (bench/README.md, "vhost-user: kicks on the loop, measured quiet").
//!
//! QEMU's connection reaches the library through [`relay`], which holds
//! back ring enables QEMU sends before the features and keeps the kick
//! eventfds (see there).
//!
//! Once the guest takes offload frames, the RX chains are lent to the
//! stack's queue ([`rx_chains`], `GuestBuffers`): TCP's peek from a host
//! socket writes the payload straight into them, and `flush` completes
//! those frames (headers in front, chains marked used) before it copies
//! any other frame into the next chains.
//!
//! The sandbox forbids new threads, so the connection is accepted (and the
//! library's threads, the relay's and a waiter's started) before the
//! sandbox is applied: the attachment reports no first peer until then
//! (`connect_first_peer`), and the sandbox's socket-cleaning parent is
//! forked at start (a fork keeps only the calling thread). The sandbox
//! then covers all threads (seccomp's TSYNC); the first protocol messages
//! may be read in the moments between the two. A waiter thread joins the
//! library's connection thread and wakes the loop when QEMU is gone.
//! One VM per socket: the listening socket is closed once QEMU connects,
//! and the network ends when QEMU's connection does (a second connection
//! would need a new thread).
//!
//! Notifications (`VIRTIO_RING_F_EVENT_IDX`, when the driver takes it):
//! the guest is interrupted only when the used index passes the
//! `used_event` it asked for (`needs_notification` before each signal),
//! and at most once per ring and loop batch: `flush`, `receive` and the
//! lent chains only note the ring ([`Shared::owe`]), and the loop signals
//! the noted rings when its batch is over (`end_batch`; an interrupt
//! wakes QEMU, which on a busy host takes the CPU from the batch's
//! remaining work);
//! and it kicks only when its avail index passes our `avail_event`, which
//! is re-armed (`enable_notification`, at the ring's current end) each
//! time a ring is found empty: the TX ring when all its frames are read,
//! an RX ring when it has no room for the next frame. `enable_notification`
//! reports chains that arrived meanwhile; the ring is then read again,
//! once per chain taken (a guest whose avail index lies cannot spin us).
//! Without the feature, every loop batch that used chains of a ring
//! notifies it.
//!
//! Multiqueue (`VIRTIO_NET_F_MQ`, vhost-user's `MQ` protocol feature; QEMU
//! `-netdev vhost-user,queues=N`): up to [`MAX_QUEUE_PAIRS`] pairs, queue
//! 2k receiving and 2k+1 sending for pair k. QEMU's virtio-net keeps the
//! control queue and enables as many pairs as the driver asks for
//! (`SET_VRING_ENABLE`). The stack is one thread: every enabled TX ring is
//! read in turn, and frames toward the guest fill the first enabled RX ring
//! with room, spilling to the next when it is full (a frame never spans two
//! rings). A queue index past the last pair is refused by
//! `vhost-user-backend` (the connection ends).
//!
//! Receive buffers are mergeable (`VIRTIO_NET_F_MRG_RXBUF`): a frame may
//! span several RX chains, whose count goes in the header's `num_buffers`.
//! From the guest, checksum offload and TSO (`VIRTIO_NET_F_CSUM`,
//! `HOST_TSO4/6`) are taken as from a tap with `IFF_VNET_HDR`: the stack
//! trusts a partial checksum and takes a 64 KiB segment whole. Toward the
//! guest, once its driver acknowledged `GUEST_CSUM` and `GUEST_TSO4/6`
//! (and mergeable buffers), the stack's queue switches to offload frames
//! as for a tap (`GuestTx::enable_offload`, on the first flush after;
//! frames queued before are dropped), and back if a later driver did not.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringState, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::transport::{Lost, Rx, Transport, VmGone};
use crate::iface::GuestTx;
use crate::wire::framing::{RxChecksum, VNET_HDR_LEN};

mod kick;
mod relay;
mod rx_chains;

use kick::Kicks;
use rx_chains::{RingEpochs, RxChains};

/// Most queue pairs (QEMU's `queues=N`); queue 2k of pair k carries
/// frames to the guest, queue 2k+1 frames from it.
const MAX_QUEUE_PAIRS: usize = 8;
/// The rings: two per pair.
const NUM_QUEUES: usize = 2 * MAX_QUEUE_PAIRS;
// `Vhost::seen_tx` has a bit per ring.
const _: () = assert!(NUM_QUEUES <= u16::BITS as usize);
/// Largest ring the guest may set up (QEMU's largest `rx_queue_size`).
const MAX_QUEUE_SIZE: usize = 1024;
/// The virtio-net header of a VERSION_1 or mergeable-buffer device: the
/// tap's header and the `num_buffers` field.
const HDR_LEN: usize = VNET_HDR_LEN + 2;
/// Chains read from the TX ring per receive (then the loop turns).
const READ_BATCH: usize = 64;
/// Receive buffer: a 64 KiB TSO frame and its header.
const VHOST_RX_LEN: usize = 65536 + HDR_LEN;
/// Most RX chains one frame may take (a 64 KiB TSO frame in Linux's
/// smallest mergeable buffers, 1518 bytes: 44).
const MAX_MERGE: usize = 64;

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// What the library's threads and the loop's thread share.
struct Shared {
    /// Written when a ring starts and when the connection ends; read by
    /// the loop.
    wake: EventFd,
    /// The rings' kick eventfds, set by the relay, polled by the loop.
    kicks: Mutex<Kicks>,
    /// Bumped by the relay before QEMU reconfigures a ring.
    epochs: RingEpochs,
    /// The vrings (all [`NUM_QUEUES`]), recorded from the first kick (the
    /// library creates them once, with the daemon).
    vrings: OnceLock<Vec<VringRwLock>>,
    /// Features the guest acknowledged.
    acked: AtomicU64,
    /// QEMU's connection ended.
    gone: AtomicBool,
    /// Rings with used chains the guest has not been told of (bit =
    /// ring), signalled when the loop's batch ends
    /// ([`Transport::end_batch`]).
    owed: AtomicU32,
}

impl Shared {
    /// A device with no rings yet, nothing acknowledged, nothing owed.
    fn new() -> std::io::Result<Shared> {
        Ok(Shared {
            wake: EventFd::new(EFD_NONBLOCK)?,
            vrings: OnceLock::new(),
            kicks: Mutex::new(Kicks::new(NUM_QUEUES)?),
            epochs: RingEpochs::new(),
            acked: AtomicU64::new(0),
            gone: AtomicBool::new(false),
            owed: AtomicU32::new(0),
        })
    }

    /// Ring `ring` has new used chains: the guest is told at the end of
    /// the batch.
    fn owe(&self, ring: usize) {
        self.owed.fetch_or(1 << ring, Ordering::Relaxed);
    }
}

/// The device as `vhost-user-backend` sees it.
#[derive(Clone)]
struct NetBackend(Arc<Shared>);

/// Features offered: virtio 1.0, indirect descriptors, event indices,
/// mergeable receive buffers, checksum offload and TSO both ways, several
/// queue pairs, and vhost-user's protocol features (QEMU's vhost-user NIC
/// needs them; see [`relay`]).
fn offered_features() -> u64 {
    (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_NET_F_MQ)
        | (1 << VIRTIO_NET_F_MRG_RXBUF)
        | (1 << VIRTIO_NET_F_CSUM)
        | (1 << VIRTIO_NET_F_HOST_TSO4)
        | (1 << VIRTIO_NET_F_HOST_TSO6)
        | (1 << VIRTIO_NET_F_GUEST_CSUM)
        | (1 << VIRTIO_NET_F_GUEST_TSO4)
        | (1 << VIRTIO_NET_F_GUEST_TSO6)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        offered_features()
    }

    fn acked_features(&self, features: u64) {
        self.0.acked.store(features, Ordering::Release);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // Several queue pairs; no reply acknowledgements (the relay may
        // hold a message back), no backend channel.
        VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        // The library has switched the queues already.
        tracing::info!(enabled, "vhost-user event indices");
    }

    fn update_memory(&self, _mem: Memory) -> std::io::Result<()> {
        // The loop reads the daemon's own `GuestMemoryAtomic`, which the
        // library has already updated.
        Ok(())
    }

    /// A ring started (the library reports each one once; kicks go
    /// straight to the loop, see [`kick`]): wake the loop, which does the
    /// work.
    fn handle_event(
        &self,
        _device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        self.0.vrings.get_or_init(|| vrings.to_vec());
        self.0.wake.write(1)
    }
}

/// A listening vhost-user socket, before QEMU connects.
pub(super) struct Pending {
    pub listener: mio::net::UnixListener,
}

/// Why the vhost-user connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetupError {
    /// The eventfd or the listener could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The vhost-user library refused (its error is no `std::error::Error`).
    #[error("vhost-user: {0}")]
    Daemon(String),
}

/// The VM's vhost-user device, once QEMU connected.
pub(super) struct Vhost {
    shared: Arc<Shared>,
    mem: Memory,
    /// TX rings a frame came on already (bit = ring index; logged once).
    seen_tx: u16,
}

impl Pending {
    /// Accepts QEMU's connection and starts the library's threads (before
    /// the sandbox, which allows no new thread).
    pub fn accept(self, registry: &Registry) -> Result<Vhost, SetupError> {
        let mut mio_listener = self.listener;
        let _ = registry.deregister(&mut mio_listener);
        let std_listener: UnixListener = mio_listener.into();
        // Readable, so this does not block for long.
        std_listener.set_nonblocking(false)?;
        let (qemu, _) = std_listener.accept()?;
        drop(std_listener);
        // The library's end of the relay: a socket in a private directory,
        // connected to before the library accepts (the backlog holds it).
        // Made before the library's threads: a daemon dropped after they
        // started waits for them forever (they never exit), so from there
        // on a failure leaves it undropped (the network ends with an
        // error anyway).
        let dir = tempfile::Builder::new()
            .prefix("slipway-vhost-")
            .tempdir()?;
        let inner = dir.path().join("backend.sock");
        let mut listener = Listener::from(UnixListener::bind(&inner)?);
        let backend_end = UnixStream::connect(&inner)?;
        let shared = Arc::new(Shared::new()?);
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let daemon = VhostUserDaemon::new(
            "slipway-vhost-user".to_owned(),
            NetBackend(shared.clone()),
            mem.clone(),
        )
        .map_err(|e| SetupError::Daemon(e.to_string()))?;
        let mut daemon = std::mem::ManuallyDrop::new(daemon);
        daemon
            .start(&mut listener)
            .map_err(|e| SetupError::Daemon(e.to_string()))?;
        drop(listener);
        drop(dir);
        let waiter = shared.clone();
        std::thread::Builder::new()
            .name("vhost-user-wait".to_owned())
            .spawn(move || {
                let mut daemon = std::mem::ManuallyDrop::into_inner(daemon);
                match daemon.wait() {
                    Ok(())
                    | Err(vhost_user_backend::Error::HandleRequest(
                        vhost::vhost_user::Error::Disconnected,
                    )) => tracing::info!("QEMU closed the vhost-user connection"),
                    Err(err) => tracing::warn!(%err, "vhost-user connection ended"),
                }
                waiter.gone.store(true, Ordering::Release);
                let _ = waiter.wake.write(1);
                // The daemon is not dropped: see above.
                std::mem::forget(daemon);
            })?;
        // Should this fail, the sockets close and the library's thread
        // ends, which the waiter reports.
        let relayed = shared.clone();
        std::thread::Builder::new()
            .name("vhost-user-relay".to_owned())
            .spawn(move || relay::run(qemu, backend_end, &relayed))?;
        Ok(Vhost {
            shared,
            mem,
            seen_tx: 0,
        })
    }
}

/// Where a frame toward the guest goes: the chains taken for it.
struct Target<'a> {
    head: u16,
    writer: Writer<'a>,
}

/// What became of the frame at the head of the queue on one RX ring.
enum Fill {
    /// Written into the ring: next frame.
    Sent,
    /// Its chains were broken or too small: handed back empty, the frame
    /// dropped.
    Dropped,
    /// The ring has no room for it (the chains taken were given back).
    NoRoom,
}

type Guard = GuestMemoryLoadGuard<GuestMemoryMmap>;
type RingState = VringState<Memory>;

impl Vhost {
    fn kicks(&self) -> MutexGuard<'_, Kicks> {
        self.shared.kicks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn acked(&self, bit: u32) -> bool {
        self.shared.acked.load(Ordering::Acquire) & (1 << bit) != 0
    }

    /// TSO frames toward the guest once its driver took them (with
    /// mergeable buffers to hold them); back to MTU-sized frames if a
    /// driver started later did not.
    fn update_offload(&self, tx: &mut GuestTx, merge: bool) {
        let offload = merge
            && self.acked(VIRTIO_NET_F_GUEST_CSUM)
            && self.acked(VIRTIO_NET_F_GUEST_TSO4)
            && self.acked(VIRTIO_NET_F_GUEST_TSO6);
        if offload && !tx.offload() {
            tracing::info!("the guest takes checksum and segmentation offload");
            tx.enable_offload();
        } else if !offload && tx.offload() {
            tracing::info!("the guest no longer takes offload frames");
            tx.disable_offload();
        }
        // Payload toward the guest read straight into its RX chains:
        // with offload only (see `GuestBuffers`).
        if offload && !tx.has_guest_buffers() {
            tx.lend_guest_buffers(Box::new(RxChains::new(
                self.shared.clone(),
                self.mem.clone(),
            )));
        } else if !offload && tx.has_guest_buffers() {
            tx.withdraw_guest_buffers();
        }
    }

    /// The virtio-net header's length: with `num_buffers` for a VERSION_1
    /// or mergeable-buffer device.
    fn hdr_len(&self) -> usize {
        if self.acked(VIRTIO_NET_F_MRG_RXBUF) || self.acked(VIRTIO_F_VERSION_1) {
            HDR_LEN
        } else {
            VNET_HDR_LEN
        }
    }
}

/// The rings of one direction, pair by pair: `first` 0 for RX, 1 for TX
/// (none before the first kick).
fn rings(shared: &Shared, first: usize) -> impl Iterator<Item = &VringRwLock> {
    shared
        .vrings
        .get()
        .into_iter()
        .flatten()
        .skip(first)
        .step_by(2)
}

/// Whether the guest set the ring up and QEMU enabled it.
fn live(state: &RingState) -> bool {
    state.get_queue().ready() && state.is_enabled()
}

/// The next chain of a ring; when it is empty, re-arms the guest's kick at
/// the ring's end (`avail_event` with EVENT_IDX) and takes a chain that
/// arrived meanwhile, once per empty ring (`rearmed`, cleared by each
/// chain taken) so that a lying avail index cannot spin us.
fn next_chain(
    state: &mut RingState,
    mem: &Guard,
    rearmed: &mut bool,
) -> Option<DescriptorChain<Guard>> {
    loop {
        if let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) {
            *rearmed = false;
            return Some(chain);
        }
        if *rearmed || !state.enable_notification().unwrap_or(false) {
            *rearmed = true;
            return None;
        }
        *rearmed = true;
    }
}

/// Interrupts the guest for the chains used since the last call, if its
/// `used_event` asks for it (always without EVENT_IDX).
fn notify(state: &mut RingState) {
    if state.needs_notification().unwrap_or(true) {
        let _ = state.signal_used_queue();
    }
}

/// Writes the frame at the head of `tx` into chains of one RX ring (behind
/// its virtio-net header, merging chains when one is too small).
fn fill<'m>(
    state: &mut RingState,
    mem: &'m Guard,
    targets: &mut Vec<Target<'m>>,
    frame: &[u8],
    hdr_len: usize,
    merge: bool,
) -> Fill {
    let need = hdr_len - VNET_HDR_LEN + frame.len();
    targets.clear();
    let mut room = 0;
    let mut rearmed = false;
    while room < need && targets.len() < MAX_MERGE && (merge || targets.is_empty()) {
        let Some(chain) = next_chain(state, mem, &mut rearmed) else {
            break;
        };
        let head = chain.head_index();
        match Writer::new(&**mem, chain) {
            Ok(writer) => {
                room += writer.available_bytes();
                targets.push(Target { head, writer });
            }
            Err(err) => {
                tracing::debug!(%err, "an RX chain outside guest memory; frame dropped");
                let _ = state.add_used(head, 0);
                for t in targets.drain(..) {
                    let _ = state.add_used(t.head, 0);
                }
                return Fill::Dropped;
            }
        }
    }
    if room < need {
        if targets.is_empty() || (merge && targets.len() < MAX_MERGE) {
            // The ring ran out: give the chains back, wait for a kick.
            for _ in 0..targets.len() {
                state.get_queue_mut().go_to_previous_position();
            }
            targets.clear();
            return Fill::NoRoom;
        }
        // Chains too small for the frame (a guest without mergeable
        // buffers, or one posting tiny buffers).
        for t in targets.drain(..) {
            let _ = state.add_used(t.head, 0);
        }
        return Fill::Dropped;
    }
    let count = targets.len() as u16;
    let (hdr, mut rest) = frame.split_at(VNET_HDR_LEN);
    let mut first = true;
    for t in targets.iter_mut() {
        if first {
            let _ = t.writer.write_all(hdr);
            if hdr_len > VNET_HDR_LEN {
                let _ = t.writer.write_all(&count.to_le_bytes());
            }
            first = false;
        }
        let n = rest.len().min(t.writer.available_bytes());
        let _ = t.writer.write_all(&rest[..n]);
        rest = &rest[n..];
    }
    for t in targets.drain(..) {
        let len = t.writer.bytes_written() as u32;
        let _ = state.add_used(t.head, len);
    }
    Fill::Sent
}

impl Transport for Vhost {
    fn rx_len(&self) -> usize {
        VHOST_RX_LEN
    }

    fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        let fd = self.shared.wake.as_raw_fd();
        // The frames the guest queued before the loop was told of them.
        self.shared.wake.write(1)?;
        registry.register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.kicks().attach(registry.try_clone()?, token)
    }

    fn deregister(&mut self, registry: &Registry) {
        self.kicks().detach();
        let _ = registry.deregister(&mut SourceFd(&self.shared.wake.as_raw_fd()));
    }

    /// Fills the guest's RX chains with queued frames, the first enabled
    /// ring first, the next when it is full.
    fn flush(
        &mut self,
        tx: &mut GuestTx,
        _skip: &mut usize,
        writable: &mut bool,
    ) -> Result<usize, VmGone> {
        if self.shared.gone.load(Ordering::Acquire) {
            return Err(VmGone);
        }
        let merge = self.acked(VIRTIO_NET_F_MRG_RXBUF);
        let hdr_len = self.hdr_len();
        let mem = self.mem.memory();
        // Frames read into the guest's chains first: they are the first
        // queued (no ring lock may be held: completing takes it).
        let mut sent = tx.complete_lent();
        let mut checked_offload = false;
        let mut targets: Vec<Target<'_>> = Vec::with_capacity(MAX_MERGE);
        for (pair, vring) in rings(&self.shared, 0).enumerate() {
            let mut state = vring.get_mut();
            if !live(&state) {
                continue;
            }
            // Before the first frame written (a switch drops the frames
            // queued before it).
            if !checked_offload {
                self.update_offload(tx, merge);
                checked_offload = true;
            }
            if tx.is_empty() {
                break;
            }
            let mut used = false;
            while !tx.is_empty() {
                let frame = tx.frame_with_vnet_hdr(0);
                match fill(&mut state, &mem, &mut targets, frame, hdr_len, merge) {
                    Fill::Sent => sent += 1,
                    Fill::Dropped => {}
                    Fill::NoRoom => break,
                }
                used = true;
                tx.pop(1);
            }
            if used {
                self.shared.owe(2 * pair);
            }
        }
        if !tx.is_empty() {
            // No ring had room (or none is up yet): wait for a kick.
            *writable = false;
        }
        Ok(sent)
    }

    /// Reads up to [`READ_BATCH`] frames from each enabled TX ring,
    /// handing each on with what its header says of the checksum.
    fn receive(
        &mut self,
        rx: &mut Rx,
        readable: &mut bool,
        mut deliver: impl FnMut(&[u8], RxChecksum, &[u8]),
    ) -> Result<(), Lost> {
        if self.shared.gone.load(Ordering::Acquire) {
            return Err(Lost::Closed);
        }
        // The wake-up eventfd is never read: registered edge-triggered,
        // each write is an event of its own whatever the counter holds
        // (as for the kicks, `kick`), and it is written only when a ring
        // starts or QEMU goes, so the counter cannot fill up. Reading it
        // here cost a system call on every wake-up.
        let hdr_len = self.hdr_len();
        let mem = self.mem.memory();
        let mut more = false;
        let mut seen = self.seen_tx;
        for (pair, vring) in rings(&self.shared, 1).enumerate() {
            let ring = 2 * pair + 1;
            let mut used = false;
            let mut rearmed = false;
            for n in 0..=READ_BATCH {
                // The lock is not held while the stack takes the frame.
                let chain = {
                    let mut state = vring.get_mut();
                    if !live(&state) {
                        break;
                    }
                    if n == READ_BATCH {
                        more = true;
                        break;
                    }
                    next_chain(&mut state, &mem, &mut rearmed)
                };
                let Some(chain) = chain else {
                    break;
                };
                let head = chain.head_index();
                let len = read_chain(&mem, chain, &mut rx.buf);
                let _ = vring.add_used(head, 0);
                used = true;
                let Some(len) = len else {
                    continue;
                };
                if seen & (1 << ring) == 0 {
                    seen |= 1 << ring;
                    tracing::info!(ring, "first frame on a TX ring");
                }
                let read = &rx.buf[..len];
                let (hdr, frame) = read.split_at(hdr_len.min(read.len()));
                // `rx` is reused for the next frame.
                deliver(frame, RxChecksum::from_vnet_hdr(hdr), &[]);
            }
            if used {
                self.shared.owe(ring);
            }
        }
        self.seen_tx = seen;
        *readable = more;
        Ok(())
    }

    /// Interrupts the guest for the rings the batch used chains of (those
    /// whose `used_event` asks for it): once per batch rather than once
    /// per `flush` and `receive`, and after the batch's other work, since
    /// the interrupt wakes QEMU, which on a busy host takes the CPU.
    fn end_batch(&mut self) {
        let owed = self.shared.owed.swap(0, Ordering::Relaxed);
        if owed == 0 {
            return;
        }
        for (ring, vring) in self.shared.vrings.get().into_iter().flatten().enumerate() {
            if owed & (1 << ring) != 0 {
                notify(&mut vring.get_mut());
            }
        }
    }
}

/// Copies a TX chain into `buf`; `None` (the frame dropped) when it
/// points outside guest memory or is larger than `buf`.
fn read_chain(mem: &Guard, chain: DescriptorChain<Guard>, buf: &mut [u8]) -> Option<usize> {
    let mut reader = match Reader::new(&**mem, chain) {
        Ok(r) => r,
        Err(err) => {
            tracing::debug!(%err, "a TX chain outside guest memory; frame dropped");
            return None;
        }
    };
    let len = reader.available_bytes();
    if len > buf.len() {
        tracing::debug!(len, "a TX chain larger than any frame; dropped");
        return None;
    }
    reader.read_exact(&mut buf[..len]).ok()?;
    Some(len)
}
