//! The guest's RX chains lent to the stack's queue ([`GuestBuffers`]):
//! TCP's peek from a host socket lands straight in guest memory, and the
//! frame's headers are written in front of it when the queue is flushed.
//! Without this, each 64 KiB segment was peeked into a slot of the queue
//! and copied again into the chains (13 % of slipway's samples in a quiet
//! download's profile, and 5 % more in `Writer`; bench/README.md).
//!
//! Theory of operation. A read ([`RxChains::read_into`]) runs under the
//! RX ring's lock: it takes chains from the ring for each frame (its
//! virtio-net header and headers in the first descriptor of the first
//! chain, the payload after them and through the next chains, merged as
//! with `VIRTIO_NET_F_MRG_RXBUF`), maps their descriptors to iovecs,
//! calls the peek once over all of them, keeps the chains the bytes read
//! filled, and then puts the ring's next index back where it was. No
//! chain is taken from the ring while the lock is not held: what a read
//! keeps is a record (the chains' heads and sizes, the first
//! descriptor's guest address). [`RxChains::complete`] takes the same
//! chains again, in order, checks they are the ones recorded, writes the
//! headers and marks them used. So the ring's state is always one the
//! guest and QEMU can see (a `GET_VRING_BASE` in between reads an index
//! with no chain in flight), and a frame whose chains changed meanwhile
//! is dropped rather than delivered into the wrong buffers. Later reads
//! start past the chains recorded by earlier ones, on the same ring, so
//! frames keep their order.
//!
//! What stops a frame from being read into chains: a chain whose first
//! descriptor cannot hold the headers, a descriptor the device may not
//! write or that is not in guest memory, more than [`MAX_MERGE`] chains
//! for one frame, more than [`MAX_IOV`] pieces for one read, or an empty
//! ring. The frames before it are read; when none is, the queue reads
//! into its own slots and the ordinary flush deals with the chain (a bad
//! one is handed back empty there).
//!
//! Ring epochs ([`RingEpochs`]): the relay bumps a ring's epoch before it
//! passes QEMU a message that (re)configures it, and every ring's before a
//! memory table, a reset or new features. A recorded frame whose ring's
//! epoch changed is dropped without touching the ring. The guest's
//! memory stays mapped while a read uses it: the read holds the memory's
//! guard (a new memory table maps anew and unmaps the old one only when
//! the last guard goes).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vhost_user_backend::VringT;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend};

use super::{live, next_chain, rings, Guard, Memory, RingState, Shared};
use super::{HDR_LEN, MAX_MERGE, MAX_QUEUE_SIZE, NUM_QUEUES};
use crate::iface::tx::GuestBuffers;
use crate::wire::framing::VNET_HDR_LEN;

/// Most iovecs one read hands the kernel (`UIO_MAXIOV`).
pub(super) const MAX_IOV: usize = 1024;
/// Most frames recorded and not yet completed (the queue's offload slots
/// are fewer).
const MAX_FRAMES: usize = 256;
/// Longest headers in front of a payload: Ethernet, IPv6, TCP with
/// options, behind the virtio-net header.
const MAX_HEAD_ROOM: usize = HDR_LEN + 14 + 40 + 60;

/// Per ring, a count the relay bumps before QEMU reconfigures it.
pub(super) struct RingEpochs([AtomicU32; NUM_QUEUES]);

impl RingEpochs {
    pub fn new() -> Self {
        RingEpochs(std::array::from_fn(|_| AtomicU32::new(0)))
    }

    /// Ring `ring` is about to change (a ring past the last is ignored:
    /// the library refuses its message).
    pub fn bump(&self, ring: usize) {
        if let Some(epoch) = self.0.get(ring) {
            epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Every ring is about to change.
    pub fn bump_all(&self) {
        for epoch in &self.0 {
            epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn get(&self, ring: usize) -> u32 {
        self.0[ring].load(Ordering::Acquire)
    }
}

/// A chain a recorded frame fills.
#[derive(Clone, Copy)]
struct Chain {
    head: u16,
    /// Bytes its descriptors hold.
    room: u32,
}

/// A frame read into chains, not yet completed.
#[derive(Clone, Copy)]
struct Frame {
    /// The RX ring (0, 2, ...).
    ring: usize,
    epoch: u32,
    /// Its chains: the next `chains` of [`RxChains::chains`].
    chains: usize,
    /// Guest address of the first descriptor (the headers go there).
    first: GuestAddress,
    head_room: usize,
    payload: usize,
}

/// Why a chain cannot take (more of) a frame.
struct Unfit;

/// The RX chains of a vhost-user device, lent to the stack's queue.
pub(super) struct RxChains {
    shared: Arc<Shared>,
    mem: Memory,
    /// Chains of the recorded frames, in order.
    chains: VecDeque<Chain>,
    frames: VecDeque<Frame>,
    /// How many of the last frames the last read recorded.
    last_read: usize,
    /// The iovecs of one read (allocated once).
    iov: Vec<libc::iovec>,
    /// Rings completed into since the last `end_batch` (bit = ring).
    touched: u16,
    /// Whether a frame was read into chains yet (logged once).
    used: bool,
}

impl RxChains {
    pub fn new(shared: Arc<Shared>, mem: Memory) -> Self {
        RxChains {
            shared,
            mem,
            chains: VecDeque::with_capacity(MAX_QUEUE_SIZE),
            frames: VecDeque::with_capacity(MAX_FRAMES),
            last_read: 0,
            iov: Vec::with_capacity(MAX_IOV),
            touched: 0,
            used: false,
        }
    }

    /// Chains recorded on `ring` (all recorded frames are on one ring).
    fn recorded_on(&self, ring: usize) -> usize {
        if self.frames.front().is_some_and(|f| f.ring == ring) {
            self.chains.len()
        } else {
            0
        }
    }

    /// Drops the records of the last `n` frames.
    fn unrecord(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(f) = self.frames.pop_back() {
                self.chains.truncate(self.chains.len() - f.chains);
            }
        }
    }

    /// Sets the last recorded frame's payload to `payload` bytes (a short
    /// read) and drops the records of the chains it no longer needs.
    fn trim_last(&mut self, payload: usize) {
        let Some(last) = self.frames.back_mut() else {
            return;
        };
        last.payload = payload;
        let first = self.chains.len() - last.chains;
        let mut room = 0;
        let mut need = 0;
        for c in self.chains.range(first..) {
            if room >= last.head_room + payload {
                break;
            }
            room += c.room as usize;
            need += 1;
        }
        last.chains = need;
        self.chains.truncate(first + need);
    }

    /// Takes chains for up to `frames` frames from a ring whose lock is
    /// held and records them; the iovecs go to `self.iov` after what is
    /// there. Returns how many frames got chains.
    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &mut self,
        state: &mut RingState,
        mem: &Guard,
        ring: usize,
        head_room: usize,
        per_frame: usize,
        frames: usize,
        mut left: usize,
    ) -> usize {
        let epoch = self.shared.epochs.get(ring);
        let mut rearmed = false;
        let mut taken = 0;
        while taken < frames && left > 0 && self.frames.len() < MAX_FRAMES {
            let want = left.min(per_frame);
            let need = head_room + want;
            let (chains_before, iov_before) = (self.chains.len(), self.iov.len());
            let mut frame = Frame {
                ring,
                epoch,
                chains: 0,
                first: GuestAddress(0),
                head_room,
                payload: want,
            };
            let mut room = 0;
            let mut fits = true;
            while room < need {
                if frame.chains == MAX_MERGE || self.chains.len() == self.chains.capacity() {
                    fits = false;
                    break;
                }
                let Some(chain) = next_chain(state, mem, &mut rearmed) else {
                    fits = false;
                    break;
                };
                frame.chains += 1;
                let head = chain.head_index();
                // Payload bytes still to place, and where they start in
                // this chain.
                let skip = if room == 0 { head_room } else { 0 };
                let placed = room.saturating_sub(head_room);
                match self.map(mem, chain, skip, want - placed, &mut frame.first) {
                    Ok(chain_room) => {
                        self.chains.push_back(Chain {
                            head,
                            room: chain_room as u32,
                        });
                        room += chain_room;
                    }
                    Err(Unfit) => {
                        fits = false;
                        break;
                    }
                }
            }
            if !fits {
                // This frame's chains go back: they are the last taken.
                for _ in 0..frame.chains {
                    state.get_queue_mut().go_to_previous_position();
                }
                self.chains.truncate(chains_before);
                self.iov.truncate(iov_before);
                break;
            }
            self.frames.push_back(frame);
            taken += 1;
            left -= want;
        }
        taken
    }

    /// Appends iovecs for up to `want` payload bytes of `chain` from
    /// `skip` bytes into it (the first descriptor must hold `skip`; its
    /// address goes to `first` then). Returns the bytes the chain holds.
    fn map(
        &mut self,
        mem: &Guard,
        chain: virtio_queue::DescriptorChain<Guard>,
        mut skip: usize,
        mut want: usize,
        first: &mut GuestAddress,
    ) -> Result<usize, Unfit> {
        let mut room = 0usize;
        let mut first_desc = true;
        for desc in chain {
            if !desc.is_write_only() {
                return Err(Unfit);
            }
            let len = desc.len() as usize;
            if first_desc && skip > 0 {
                if len < skip {
                    return Err(Unfit);
                }
                *first = desc.addr();
            }
            first_desc = false;
            let slice = mem.get_slice(desc.addr(), len).map_err(|_| Unfit)?;
            room += len;
            let usable = len - skip;
            let take = usable.min(want);
            if take > 0 {
                if self.iov.len() == MAX_IOV {
                    return Err(Unfit);
                }
                self.iov.push(libc::iovec {
                    // SAFETY: `skip + take <= len`, the slice's length, so
                    // the iovec lies within one mapped region of guest
                    // memory; the caller holds the memory's guard (the
                    // region stays mapped) until the read is done.
                    iov_base: unsafe { slice.ptr_guard_mut().as_ptr().add(skip) }.cast(),
                    iov_len: take,
                });
                want -= take;
            }
            skip = 0;
        }
        if room > u32::MAX as usize {
            return Err(Unfit);
        }
        Ok(room)
    }
}

impl GuestBuffers for RxChains {
    fn read_into(
        &mut self,
        at: usize,
        per_frame: usize,
        frames: usize,
        total: usize,
        lead: Option<&mut [u8]>,
        read: &mut dyn FnMut(&mut [libc::iovec]) -> std::io::Result<usize>,
    ) -> Option<std::io::Result<usize>> {
        self.last_read = 0;
        let head_room = HDR_LEN + at;
        if head_room > MAX_HEAD_ROOM || per_frame == 0 {
            return None;
        }
        let shared = self.shared.clone();
        // Held through the read: the iovecs point into this memory.
        let mem = self.mem.memory();
        let pending_ring = self.frames.front().map(|f| f.ring);
        // The first live RX ring (the one of the frames recorded, if any).
        let (ring, vring) = rings(&shared, 0)
            .enumerate()
            .map(|(pair, vring)| (2 * pair, vring))
            .filter(|(ring, _)| pending_ring.is_none_or(|r| r == *ring))
            .find(|(_, vring)| live(&vring.get_mut()))?;
        let mut state = vring.get_mut();
        if !live(&state) {
            return None;
        }
        let base = state.get_queue().next_avail();
        let recorded = self.recorded_on(ring) as u16;
        state
            .get_queue_mut()
            .set_next_avail(base.wrapping_add(recorded));
        self.iov.clear();
        let lead_len = lead.as_ref().map_or(0, |l| l.len());
        if let Some(lead) = lead {
            self.iov.push(libc::iovec {
                iov_base: lead.as_mut_ptr().cast(),
                iov_len: lead.len(),
            });
        }
        let taken = self.reserve(&mut state, &mem, ring, head_room, per_frame, frames, total);
        let result = (taken > 0).then(|| {
            let result = read(&mut self.iov).map(|n| n.saturating_sub(lead_len));
            let filled = match &result {
                Ok(got) => got.div_ceil(per_frame).min(taken),
                Err(_) => 0,
            };
            self.unrecord(taken - filled);
            if let (Ok(got), true) = (&result, filled > 0) {
                self.trim_last(got - (filled - 1) * per_frame);
            }
            self.last_read = filled;
            if filled > 0 && !self.used {
                self.used = true;
                tracing::info!("payload read straight into the guest's RX chains");
            }
            result
        });
        // The ring's index goes back: no chain is taken until its frame
        // is completed.
        state.get_queue_mut().set_next_avail(base);
        result
    }

    fn keep_read(&mut self, keep: usize) {
        self.unrecord(self.last_read.saturating_sub(keep));
        self.last_read = 0;
    }

    fn complete(&mut self, vnet: &[u8], headers: &[u8], payload_len: usize) -> bool {
        let Some(frame) = self.frames.pop_front() else {
            return false;
        };
        let mut chains = [Chain { head: 0, room: 0 }; MAX_MERGE];
        for c in chains.iter_mut().take(frame.chains) {
            *c = self
                .chains
                .pop_front()
                .unwrap_or(Chain { head: 0, room: 0 });
        }
        let chains = &chains[..frame.chains];
        self.last_read = 0;
        let Some(vring) = rings(&self.shared, 0).nth(frame.ring / 2) else {
            return false;
        };
        let mut state = vring.get_mut();
        if !live(&state)
            || self.shared.epochs.get(frame.ring) != frame.epoch
            || vnet.len() != VNET_HDR_LEN
            || HDR_LEN + headers.len() != frame.head_room
            || payload_len != frame.payload
        {
            tracing::debug!("a frame read into RX chains that changed; dropped");
            return false;
        }
        let mem = self.mem.memory();
        // Take the recorded chains again: they must still be next.
        let mut taken = 0;
        let mut matched = 0;
        for c in chains {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                break;
            };
            taken += 1;
            if chain.head_index() != c.head {
                break;
            }
            matched += 1;
        }
        if matched != chains.len() {
            for _ in 0..taken {
                state.get_queue_mut().go_to_previous_position();
            }
            tracing::debug!("the guest changed RX chains under a frame; dropped");
            return false;
        }
        let mut head = [0u8; MAX_HEAD_ROOM];
        head[..VNET_HDR_LEN].copy_from_slice(vnet);
        head[VNET_HDR_LEN..HDR_LEN].copy_from_slice(&(chains.len() as u16).to_le_bytes());
        head[HDR_LEN..frame.head_room].copy_from_slice(headers);
        let written = mem
            .write_slice(&head[..frame.head_room], frame.first)
            .is_ok();
        let mut left = if written {
            frame.head_room + frame.payload
        } else {
            0
        };
        for c in chains {
            let len = left.min(c.room as usize);
            let _ = state.add_used(c.head, len as u32);
            left -= len;
        }
        self.touched |= 1 << frame.ring;
        written
    }

    fn end_batch(&mut self) {
        for ring in 0..NUM_QUEUES {
            if self.touched & (1 << ring) != 0 {
                self.shared.owe(ring);
            }
        }
        self.touched = 0;
    }

    fn forget(&mut self) {
        self.frames.clear();
        self.chains.clear();
        self.last_read = 0;
    }
}

#[cfg(test)]
mod tests {
    //! The chains of an RX ring in memory of the test's own, laid out as a
    //! guest driver would (and as a hostile one might), and a socket pair
    //! standing for the host socket peeked.

    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use vhost_user_backend::{VringRwLock, VringT};
    use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

    use super::*;

    const QSIZE: u16 = 512;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x3000;
    const USED: u64 = 0x4000;
    /// Buffer `i` lies at BUFS + i * BUF_STRIDE.
    const BUFS: u64 = 0x10000;
    const BUF_STRIDE: u64 = 0x1000;
    /// Ethernet, IPv4, TCP.
    const AT: usize = 54;
    const MEM: usize = 4 << 20;

    struct Ring {
        shared: Arc<Shared>,
        mem: Memory,
        /// Chains offered so far.
        offered: u16,
    }

    impl Ring {
        fn new() -> Ring {
            let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
            let mem = GuestMemoryAtomic::new(gm);
            let vrings: Vec<VringRwLock> = (0..NUM_QUEUES)
                .map(|_| VringRwLock::new(mem.clone(), QSIZE).unwrap())
                .collect();
            let rx = &vrings[0];
            rx.set_queue_size(QSIZE);
            rx.set_queue_info(DESC, AVAIL, USED).unwrap();
            rx.set_queue_ready(true);
            rx.set_enabled(true);
            let shared = Shared::new().unwrap();
            assert!(shared.vrings.set(vrings).is_ok());
            let shared = Arc::new(shared);
            Ring {
                shared,
                mem,
                offered: 0,
            }
        }

        fn chains(&self) -> RxChains {
            RxChains::new(self.shared.clone(), self.mem.clone())
        }

        fn write(&self, at: u64, bytes: &[u8]) {
            self.mem
                .memory()
                .write_slice(bytes, GuestAddress(at))
                .unwrap();
        }

        fn read(&self, at: u64, len: usize) -> Vec<u8> {
            let mut b = vec![0; len];
            self.mem
                .memory()
                .read_slice(&mut b, GuestAddress(at))
                .unwrap();
            b
        }

        fn u16_at(&self, at: u64) -> u16 {
            let b = self.read(at, 2);
            u16::from_le_bytes([b[0], b[1]])
        }

        /// Descriptor `i`: `len` bytes at `addr`, device-writable when
        /// `write`, chained to `next` when given.
        fn desc(&self, i: u16, addr: u64, len: u32, write: bool, next: Option<u16>) {
            let mut d = addr.to_le_bytes().to_vec();
            d.extend_from_slice(&len.to_le_bytes());
            let flags = u16::from(next.is_some()) | if write { 2 } else { 0 };
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&next.unwrap_or(0).to_le_bytes());
            self.write(DESC + 16 * u64::from(i), &d);
        }

        /// Offers `head` as the next available chain.
        fn offer(&mut self, head: u16) {
            let slot = AVAIL + 4 + 2 * u64::from(self.offered % QSIZE);
            self.write(slot, &head.to_le_bytes());
            self.offered += 1;
            self.write(AVAIL + 2, &self.offered.to_le_bytes());
        }

        /// Offers `n` chains of one `len`-byte descriptor each, from
        /// descriptor `first`.
        fn offer_buffers(&mut self, first: u16, n: u16, len: u32) {
            for i in first..first + n {
                self.desc(i, BUFS + BUF_STRIDE * u64::from(i), len, true, None);
                self.offer(i);
            }
        }

        fn used_idx(&self) -> u16 {
            self.u16_at(USED + 2)
        }

        /// Used entry `n`: (head, length).
        fn used(&self, n: u16) -> (u16, u32) {
            let b = self.read(USED + 4 + 8 * u64::from(n % QSIZE), 8);
            (
                u16::from_le_bytes([b[0], b[1]]),
                u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            )
        }

        fn next_avail(&self) -> u16 {
            self.shared.vrings.get().unwrap()[0].queue_next_avail()
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn socket_with(bytes: &[u8]) -> (UnixStream, UnixStream) {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(bytes).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn peek(fd: &UnixStream) -> impl FnMut(&mut [libc::iovec]) -> std::io::Result<usize> + '_ {
        move |iov| {
            // SAFETY: a zeroed msghdr pointing at the caller's iovecs,
            // which point at live writable memory.
            let r = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = iov.len() as _;
                libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_PEEK)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(r as usize)
        }
    }

    /// The frame delivered over used entries `from..from + n`: its
    /// virtio-net header, headers and payload.
    fn delivered(ring: &Ring, from: u16, n: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        for k in from..from + n {
            let (head, len) = ring.used(k);
            bytes.extend(ring.read(BUFS + BUF_STRIDE * u64::from(head), len as usize));
        }
        bytes
    }

    fn complete(chains: &mut RxChains, payload: usize) -> bool {
        chains.complete(&[9; VNET_HDR_LEN], &[0xee; AT], payload)
    }

    #[test]
    fn payload_lands_in_the_chains_and_headers_go_in_front() {
        let mut ring = Ring::new();
        ring.offer_buffers(0, 8, 1024);
        let mut chains = ring.chains();
        let sent = data(5000);
        let (_host, sock) = socket_with(&sent);
        let got = chains.read_into(AT, 2000, 3, 5000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 5000);
        // Nothing is taken from the ring until the frames are completed.
        assert_eq!((ring.next_avail(), ring.used_idx()), (0, 0));
        for payload in [2000, 2000, 1000] {
            assert!(complete(&mut chains, payload));
        }
        chains.end_batch();
        assert_eq!((ring.next_avail(), ring.used_idx()), (8, 8));
        // 12 + 54 + 2000 bytes over three 1024-byte chains, twice, then
        // 12 + 54 + 1000 over two.
        let lens: Vec<u32> = (0..8).map(|n| ring.used(n).1).collect();
        assert_eq!(lens, [1024, 1024, 18, 1024, 1024, 18, 1024, 42]);
        let mut payload = Vec::new();
        for (from, n) in [(0, 3), (3, 3), (6, 2)] {
            let frame = delivered(&ring, from, n);
            assert_eq!(&frame[..VNET_HDR_LEN], &[9; VNET_HDR_LEN]);
            assert_eq!(u16::from_le_bytes([frame[10], frame[11]]), n, "num_buffers");
            assert_eq!(&frame[HDR_LEN..HDR_LEN + AT], &[0xee; AT]);
            payload.extend_from_slice(&frame[HDR_LEN + AT..]);
        }
        assert_eq!(payload, sent);
    }

    #[test]
    fn an_avail_index_too_far_ahead_gives_nothing_and_a_later_true_one_works() {
        // A guest claiming more chains than the ring holds: no chain is
        // read, taken or marked used, and nothing loops.
        let mut ring = Ring::new();
        ring.offer_buffers(0, 6, 1024);
        ring.write(AVAIL + 2, &(QSIZE + 1).to_le_bytes());
        let mut chains = ring.chains();
        let sent = data(3000);
        let (_host, sock) = socket_with(&sent);
        assert!(chains
            .read_into(AT, 1000, 3, 3000, None, &mut peek(&sock))
            .is_none());
        assert!(!complete(&mut chains, 1000));
        assert_eq!((ring.next_avail(), ring.used_idx()), (0, 0));
        // The index set right: the chains are read and used in order,
        // two per frame (12 + 54 + 1000 bytes in 1024-byte chains).
        ring.write(AVAIL + 2, &6u16.to_le_bytes());
        let got = chains.read_into(AT, 1000, 3, 3000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 3000);
        for _ in 0..3 {
            assert!(complete(&mut chains, 1000));
        }
        chains.end_batch();
        assert_eq!((ring.next_avail(), ring.used_idx()), (6, 6));
        let heads: Vec<u16> = (0..6).map(|n| ring.used(n).0).collect();
        assert_eq!(heads, [0, 1, 2, 3, 4, 5]);
        let payload: Vec<u8> = [(0, 2), (2, 2), (4, 2)]
            .iter()
            .flat_map(|&(from, n)| delivered(&ring, from, n)[HDR_LEN + AT..].to_vec())
            .collect();
        assert_eq!(payload, sent);
    }

    #[test]
    fn chains_of_several_descriptors_and_single_ones_mix_in_one_read() {
        // Chain 0: the headers and part of the payload in descriptor 0,
        // the rest in descriptor 1; chain 2 a single descriptor.
        let mut ring = Ring::new();
        ring.desc(0, BUFS, 200, true, Some(1));
        ring.desc(1, BUFS + BUF_STRIDE, 1000, true, None);
        ring.offer(0);
        ring.desc(2, BUFS + 2 * BUF_STRIDE, 1500, true, None);
        ring.offer(2);
        let mut chains = ring.chains();
        let sent = data(2000);
        let (_host, sock) = socket_with(&sent);
        let got = chains.read_into(AT, 1000, 2, 2000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 2000);
        assert!(complete(&mut chains, 1000));
        assert!(complete(&mut chains, 1000));
        chains.end_batch();
        assert_eq!(ring.used(0), (0, (HDR_LEN + AT + 1000) as u32));
        assert_eq!(ring.used(1), (2, (HDR_LEN + AT + 1000) as u32));
        let first_room = 200 - HDR_LEN - AT;
        let mut payload = ring.read(BUFS + (HDR_LEN + AT) as u64, first_room);
        payload.extend(ring.read(BUFS + BUF_STRIDE, 1000 - first_room));
        payload.extend(ring.read(BUFS + 2 * BUF_STRIDE + (HDR_LEN + AT) as u64, 1000));
        assert_eq!(payload, sent);
    }

    #[test]
    fn a_short_read_keeps_only_the_chains_it_filled() {
        let mut ring = Ring::new();
        ring.offer_buffers(0, 8, 1024);
        let mut chains = ring.chains();
        let sent = data(2100);
        let (_host, sock) = socket_with(&sent);
        let got = chains.read_into(AT, 2000, 3, 5000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 2100);
        assert!(complete(&mut chains, 2000));
        assert!(complete(&mut chains, 100));
        assert!(!complete(&mut chains, 100), "no third frame");
        chains.end_batch();
        assert_eq!(ring.used_idx(), 4);
        assert_eq!(ring.used(3), (3, (HDR_LEN + AT + 100) as u32));
        // The chains not filled are still the guest's, next in the ring.
        assert_eq!(ring.next_avail(), 4);
    }

    #[test]
    fn later_reads_start_past_the_chains_recorded() {
        let mut ring = Ring::new();
        ring.offer_buffers(0, 6, 1024);
        let mut chains = ring.chains();
        let sent = data(1500);
        let (_host, sock) = socket_with(&sent);
        let first = chains.read_into(AT, 1000, 1, 1000, None, &mut peek(&sock));
        assert_eq!(first.unwrap().unwrap(), 1000);
        // The same bytes again (a second flow's peek, say).
        let second = chains.read_into(AT, 1000, 1, 1000, None, &mut peek(&sock));
        assert_eq!(second.unwrap().unwrap(), 1000);
        // The second frame was refused by the stack: given back.
        chains.keep_read(0);
        assert!(complete(&mut chains, 1000));
        chains.end_batch();
        assert_eq!(ring.used_idx(), 2);
        assert_eq!((ring.used(0).0, ring.used(1).0), (0, 1));
        assert_eq!(&delivered(&ring, 0, 2)[HDR_LEN + AT..], &sent[..1000]);
        assert_eq!(ring.next_avail(), 2);
    }

    #[test]
    fn chains_that_cannot_take_a_frame_are_left_to_the_ordinary_path() {
        let sent = data(3000);
        // First descriptor shorter than the headers: nothing read here.
        let mut ring = Ring::new();
        ring.desc(0, BUFS, 16, true, Some(1));
        ring.desc(1, BUFS + BUF_STRIDE, 4000, true, None);
        ring.offer(0);
        let mut chains = ring.chains();
        let (_host, sock) = socket_with(&sent);
        assert!(chains
            .read_into(AT, 1000, 2, 2000, None, &mut peek(&sock))
            .is_none());
        assert_eq!((ring.next_avail(), ring.used_idx()), (0, 0));

        // A good chain, then one the device may not write, then one
        // outside guest memory: the first frame only.
        for bad in [
            (BUFS + BUF_STRIDE, 4000, false),
            (64 << 30, 4000, true),
            (MEM as u64 - 100, 4000, true),
        ] {
            let mut ring = Ring::new();
            ring.desc(0, BUFS, 4000, true, None);
            ring.offer(0);
            ring.desc(1, bad.0, bad.1, bad.2, None);
            ring.offer(1);
            let mut chains = ring.chains();
            let got = chains.read_into(AT, 1000, 2, 2000, None, &mut peek(&sock));
            assert_eq!(got.unwrap().unwrap(), 1000, "{bad:?}");
            assert!(complete(&mut chains, 1000));
            assert!(!complete(&mut chains, 1000));
            chains.end_batch();
            assert_eq!((ring.next_avail(), ring.used_idx()), (1, 1), "{bad:?}");
        }

        // An empty ring, and more chains than a frame may merge.
        let mut ring = Ring::new();
        let mut chains = ring.chains();
        assert!(chains
            .read_into(AT, 1000, 1, 1000, None, &mut peek(&sock))
            .is_none());
        // Chains of 67 bytes: 64 of them hold 64 * 67 - 66 bytes of
        // payload, one more byte takes a 65th.
        const SMALL: usize = HDR_LEN + AT + 1;
        ring.offer_buffers(0, 70, SMALL as u32);
        let per_frame = MAX_MERGE * SMALL - HDR_LEN - AT;
        let (_host, sock) = socket_with(&data(2 * per_frame));
        let got = chains.read_into(AT, per_frame + 1, 1, per_frame + 1, None, &mut peek(&sock));
        assert!(got.is_none(), "{got:?}");
        let got = chains.read_into(AT, per_frame, 1, per_frame, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), per_frame);
    }

    #[test]
    fn a_ring_changed_between_read_and_completion_drops_the_frame_untouched() {
        // QEMU reconfigured the ring (the relay bumped its epoch).
        let mut ring = Ring::new();
        ring.offer_buffers(0, 4, 2048);
        let mut chains = ring.chains();
        let (_host, sock) = socket_with(&data(1000));
        let got = chains.read_into(AT, 1000, 1, 1000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 1000);
        ring.shared.epochs.bump(0);
        assert!(!complete(&mut chains, 1000));
        chains.end_batch();
        assert_eq!((ring.next_avail(), ring.used_idx()), (0, 0));

        // The guest rewrote the avail entry under the frame.
        let got = chains.read_into(AT, 1000, 1, 1000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 1000);
        ring.write(AVAIL + 4, &3u16.to_le_bytes());
        assert!(!complete(&mut chains, 1000));
        assert_eq!((ring.next_avail(), ring.used_idx()), (0, 0));

        // Headers of another length than read for: dropped too.
        ring.write(AVAIL + 4, &0u16.to_le_bytes());
        let got = chains.read_into(AT, 1000, 1, 1000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 1000);
        assert!(!chains.complete(&[0; VNET_HDR_LEN], &[0; AT + 20], 1000));
        assert_eq!((ring.next_avail(), ring.used_idx()), (0, 0));

        // Forgotten frames (the VM went away) leave the ring alone, and
        // the next read starts at its first chain again.
        let got = chains.read_into(AT, 1000, 1, 1000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 1000);
        chains.forget();
        let got = chains.read_into(AT, 1000, 1, 1000, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), 1000);
        assert!(complete(&mut chains, 1000));
        chains.end_batch();
        assert_eq!(ring.used(0), (0, (HDR_LEN + AT + 1000) as u32));
    }

    #[test]
    fn a_read_hands_the_kernel_at_most_max_iov_pieces() {
        // One chain through an indirect table of 1100 descriptors: the
        // headers and 8 bytes, then 8 bytes each.
        const TABLE: u64 = 0x80000;
        const PIECES: usize = 1100;
        let mut ring = Ring::new();
        for k in 0..PIECES {
            let len = if k == 0 { HDR_LEN + AT + 8 } else { 8 };
            let mut d = (BUFS + 0x100 * k as u64).to_le_bytes().to_vec();
            d.extend_from_slice(&(len as u32).to_le_bytes());
            let flags: u16 = 2 | u16::from(k + 1 < PIECES);
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&((k + 1) as u16).to_le_bytes());
            ring.write(TABLE + 16 * k as u64, &d);
        }
        let mut d = TABLE.to_le_bytes().to_vec();
        d.extend_from_slice(&((16 * PIECES) as u32).to_le_bytes());
        d.extend_from_slice(&4u16.to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes());
        ring.write(DESC, &d);
        ring.offer(0);
        let mut chains = ring.chains();
        let sent = data(8 * PIECES);
        let (_host, sock) = socket_with(&sent);
        let all = 8 * PIECES;
        let got = chains.read_into(AT, all, 1, all, None, &mut peek(&sock));
        assert!(got.is_none(), "{got:?}");
        let fits = 8 * MAX_IOV;
        let got = chains.read_into(AT, fits, 1, fits, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), fits);
        assert!(complete(&mut chains, fits));
        assert_eq!(ring.used(0), (0, (HDR_LEN + AT + fits) as u32));
        let last = ring.read(BUFS + 0x100 * (MAX_IOV as u64 - 1), 8);
        assert_eq!(last, &sent[fits - 8..fits]);
    }

    #[test]
    fn frames_recorded_and_not_completed_are_bounded() {
        // Chains of 128 bytes: one frame of 62 payload bytes each.
        let mut ring = Ring::new();
        ring.offer_buffers(0, 300, 128);
        let mut chains = ring.chains();
        let per_frame = 128 - HDR_LEN - AT;
        let (_host, sock) = socket_with(&data(64 * per_frame));
        for _ in 0..MAX_FRAMES / 64 {
            let got = chains.read_into(AT, per_frame, 64, 64 * per_frame, None, &mut peek(&sock));
            assert_eq!(got.unwrap().unwrap(), 64 * per_frame);
        }
        let got = chains.read_into(AT, per_frame, 64, 64 * per_frame, None, &mut peek(&sock));
        assert!(got.is_none(), "{got:?}");
        assert!(complete(&mut chains, per_frame));
        let got = chains.read_into(AT, per_frame, 64, 64 * per_frame, None, &mut peek(&sock));
        assert_eq!(got.unwrap().unwrap(), per_frame, "room for one more");
    }
}
