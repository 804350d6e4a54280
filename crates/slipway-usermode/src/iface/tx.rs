//! The queue toward the guest: a ring of frame slots allocated once, in
//! which handlers build frames in place. Each slot keeps room in front of
//! its frame so a stream attachment can write its length prefix, and a tap
//! its virtio-net header, without copying the frame.
//!
//! A handler that moves bulk data toward the guest (TCP) can also have the
//! payload of several frames read in one system call straight into their
//! slots ([`GuestTx::read_into_free`]: one iovec per free slot, each
//! pointing past the room the frame's headers will take), then push those
//! frames with headers only: the payload is copied once, by the kernel,
//! instead of into a buffer and again into each frame. The slots so filled
//! stay free until pushed; nothing else may be pushed before them (any push
//! takes the next filled slot, see [`GuestTx::filled`]), and a handler that
//! stops early gives the rest back with [`GuestTx::drop_filled`].
//!
//! A link whose frames live in the guest's own memory (vhost-user) can
//! also lend the queue the guest's receive buffers ([`GuestBuffers`],
//! [`GuestTx::lend_guest_buffers`]): [`GuestTx::read_into_free`] then
//! reads the payload straight into them, and the slot of such a frame
//! holds its headers only. The link hands those frames over with
//! [`GuestTx::complete_lent`] (the buffers write the headers in front of
//! the payload), so the payload is copied once, by the kernel, into the
//! guest. Such frames are always at the front of the queue: the buffers
//! are used only while every queued frame is one of them (a later frame
//! in a slot goes after them, in the order queued), and only for frames
//! whose checksum the guest completes itself (offload), since the
//! payload is not where the checksum could be summed.

use crate::wire::framing::{FRAME_PREFIX_LEN, MAX_OFFLOAD_PACKET, VNET_HDR_LEN};
use crate::wire::ETHERNET_HEADER_LEN;

/// Most slots one [`GuestTx::read_into_free`] fills (its iovec array
/// lives on the stack: no allocation per read).
pub const MAX_FILL_SLOTS: usize = 64;

/// Room kept in front of every slot's frame: the stream length prefix and
/// the virtio-net header both end where the frame starts.
const SLOT_HEADROOM: usize = 12;

/// The guest's own receive buffers, lent to the queue by a link whose
/// frames live in guest memory, so that payload read from a host socket
/// lands there directly (see the module header).
pub trait GuestBuffers {
    /// Takes buffers for up to `frames` frames, each `head_room` bytes of
    /// headers followed by at most `per_frame` payload bytes, `total`
    /// payload bytes at most, and calls `read` once with iovecs over their
    /// payload areas (after `lead`, when given, a buffer of bytes to skip
    /// whose length `read`'s count includes). Keeps the buffers of the
    /// frames the read filled (the last one possibly shorter) and gives
    /// back the rest. Returns the payload bytes read, `None` when no
    /// buffer fits (the queue then reads into its own slots).
    fn read_into(
        &mut self,
        head_room: usize,
        per_frame: usize,
        frames: usize,
        total: usize,
        lead: Option<&mut [u8]>,
        read: &mut dyn FnMut(&mut [libc::iovec]) -> std::io::Result<usize>,
    ) -> Option<std::io::Result<usize>>;
    /// Gives back the buffers of all but the first `keep` of the frames
    /// the last [`GuestBuffers::read_into`] filled (those were not queued).
    fn keep_read(&mut self, keep: usize);
    /// Hands the oldest frame read into buffers to the guest: its
    /// virtio-net header and its headers go in front of its payload
    /// (`payload_len` bytes, as read). Returns whether it was delivered
    /// (false: the buffers were taken back from under it, the frame is
    /// lost).
    fn complete(&mut self, vnet: &[u8], headers: &[u8], payload_len: usize) -> bool;
    /// Ends a batch of [`GuestBuffers::complete`] (tells the guest).
    fn end_batch(&mut self);
    /// Forgets every frame read into buffers and not completed (the queue
    /// was cleared); their buffers go back to the guest empty.
    fn forget(&mut self);
}

/// Frames queued toward the guest, built in place in slots allocated once.
///
/// A ring of fixed-size slots; each slot is `SLOT_HEADROOM` bytes of room
/// for a length prefix or a virtio-net header followed by room for one
/// Ethernet frame of the link MTU (of [`MAX_OFFLOAD_PACKET`] once
/// [`GuestTx::enable_offload`] was called). Handlers push frames with
/// [`GuestTx::push`]; the attachment drains them from the front.
pub struct GuestTx {
    storage: Vec<u8>,
    lens: Vec<usize>,
    slot_size: usize,
    head: usize,
    count: usize,
    offload: bool,
    /// The MTU and slot count before [`GuestTx::enable_offload`], for
    /// [`GuestTx::disable_offload`].
    plain: Option<(usize, usize)>,
    /// How many of the next free slots hold payload read in place by
    /// [`GuestTx::read_into_free`] and not yet pushed.
    filled: usize,
    /// The guest's receive buffers, when the link lent them.
    lent: Option<Box<dyn GuestBuffers>>,
    /// Per slot: the length of the frame's headers when its payload is in
    /// the guest's buffers (0: in the slot).
    lent_headers: Vec<usize>,
    /// How many queued frames (the first ones) have their payload in the
    /// guest's buffers.
    lent_queued: usize,
    /// The headers' length of the frames the last read filled, when it
    /// read into the guest's buffers (0: into the slots), and how many
    /// frames it filled.
    lent_read: (usize, usize),
}

impl GuestTx {
    /// A pool of `slots` frames of at most `ETHERNET_HEADER_LEN + mtu` bytes.
    pub fn new(mtu: usize, slots: usize) -> Self {
        let slots = slots.max(1);
        let slot_size = SLOT_HEADROOM + ETHERNET_HEADER_LEN + mtu;
        GuestTx {
            storage: vec![0; slot_size * slots],
            lens: vec![0; slots],
            slot_size,
            head: 0,
            count: 0,
            offload: false,
            plain: None,
            filled: 0,
            lent: None,
            lent_headers: vec![0; slots],
            lent_queued: 0,
            lent_read: (0, 0),
        }
    }

    /// Recreates the queue with `mtu` and `slots`, keeping the guest's
    /// buffers lent to it (the frames queued are forgotten).
    fn rebuild(&mut self, mtu: usize, slots: usize) {
        self.clear();
        let lent = self.lent.take();
        *self = GuestTx::new(mtu, slots);
        self.lent = lent;
    }

    /// Lends the queue the guest's receive buffers (a link whose frames
    /// live in guest memory): while the queue takes offload frames, bulk
    /// payload is read straight into them (see the module header).
    pub fn lend_guest_buffers(&mut self, buffers: Box<dyn GuestBuffers>) {
        self.clear();
        self.lent = Some(buffers);
    }

    /// Whether the guest's buffers are lent to the queue.
    pub fn has_guest_buffers(&self) -> bool {
        self.lent.is_some()
    }

    /// Takes the guest's buffers back (forgetting the frames read into them).
    pub fn withdraw_guest_buffers(&mut self) {
        self.clear();
        self.lent = None;
    }

    /// How many frames at the front of the queue have their payload in the
    /// guest's buffers.
    pub fn lent_queued(&self) -> usize {
        self.lent_queued
    }

    /// Hands the frames at the front whose payload is in the guest's
    /// buffers to those buffers (see [`GuestBuffers::complete`]) and takes
    /// them off the queue. Returns how many were delivered.
    pub fn complete_lent(&mut self) -> usize {
        let n = self.lent_queued;
        let Some(lent) = self.lent.as_mut() else {
            return 0;
        };
        if n == 0 {
            return 0;
        }
        let mut delivered = 0;
        for i in 0..n {
            let slot = (self.head + i) % self.lens.len();
            let start = slot * self.slot_size + SLOT_HEADROOM;
            let headers = self.lent_headers[slot];
            let len = self.lens[slot];
            let vnet = &self.storage[start - VNET_HDR_LEN..start];
            let hdrs = &self.storage[start..start + headers];
            delivered += usize::from(lent.complete(vnet, hdrs, len - headers));
        }
        lent.end_batch();
        self.pop(n);
        delivered
    }

    /// Makes room for TCP segmentation-offload frames (a quarter as many
    /// slots, each of a [`MAX_OFFLOAD_PACKET`]-byte packet) and lets TCP
    /// ask for them ([`GuestTx::offload`]): the attachment writes frames with
    /// their virtio-net header. Forgets queued frames (called at start).
    pub fn enable_offload(&mut self) {
        if self.offload {
            return;
        }
        let plain = (self.max_frame_len() - ETHERNET_HEADER_LEN, self.lens.len());
        let slots = (self.lens.len() / 4).max(1);
        self.rebuild(MAX_OFFLOAD_PACKET.max(self.max_frame_len()), slots);
        self.offload = true;
        self.plain = Some(plain);
    }

    /// Undoes [`GuestTx::enable_offload`] (a vhost-user guest whose driver
    /// no longer takes offload frames): slots of the link MTU again.
    /// Forgets queued frames.
    pub fn disable_offload(&mut self) {
        if let Some((mtu, slots)) = self.plain.take() {
            self.rebuild(mtu, slots);
        }
    }

    /// Whether the link takes TCP segmentation-offload frames.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Largest frame a slot holds.
    pub fn max_frame_len(&self) -> usize {
        self.slot_size - SLOT_HEADROOM
    }

    /// Slots still free.
    pub fn free_slots(&self) -> usize {
        self.lens.len() - self.count
    }

    /// Frames waiting to be sent.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Builds one frame in the next free slot.
    ///
    /// `build` receives the slot's frame area and returns the frame's length;
    /// returning 0 abandons the frame. Returns false, without calling
    /// `build`, when every slot is in use: the caller must hold back and try
    /// again after the attachment has drained the queue.
    pub fn push(&mut self, build: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.push_with_vnet(&[0; VNET_HDR_LEN], build)
    }

    /// [`GuestTx::push`] with the frame's virtio-net header.
    pub(crate) fn push_with_vnet(
        &mut self,
        vnet: &[u8; VNET_HDR_LEN],
        build: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        if self.count == self.lens.len() {
            return false;
        }
        let slot = (self.head + self.count) % self.lens.len();
        let start = slot * self.slot_size + SLOT_HEADROOM;
        self.storage[start - VNET_HDR_LEN..start].copy_from_slice(vnet);
        let frame = &mut self.storage[start..start + self.slot_size - SLOT_HEADROOM];
        let len = build(frame).min(frame.len());
        if len == 0 {
            return true;
        }
        self.lens[slot] = len;
        self.count += 1;
        if self.filled > 0 && self.lent_read.0 > 0 {
            // Its payload is in the guest's buffers: only its headers
            // are here.
            self.lent_headers[slot] = self.lent_read.0.min(len);
            self.lent_queued += 1;
        }
        self.filled = self.filled.saturating_sub(1);
        true
    }

    /// Reads with one call (`read`, e.g. a `recvmsg` with `MSG_PEEK`) into
    /// the payload areas of the next free slots: `total` bytes at most,
    /// `per_slot` bytes in each slot from `at` bytes into its frame (the
    /// room for the frame's headers). `lead`, when given, is a buffer the
    /// iovec starts with (bytes to skip); `read` returns the bytes read
    /// including it, and its length is subtracted. At most
    /// [`MAX_FILL_SLOTS`] slots, and never more than are free.
    ///
    /// Returns the payload bytes read: the first `n.div_ceil(per_slot)`
    /// free slots are then [`GuestTx::filled`], to be pushed in order with
    /// headers only (the payload is in place). A failed read fills none.
    pub fn read_into_free(
        &mut self,
        at: usize,
        per_slot: usize,
        total: usize,
        mut lead: Option<&mut [u8]>,
        mut read: impl FnMut(&mut [libc::iovec]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        self.filled = 0;
        self.lent_read = (0, 0);
        let frame_room = self.slot_size - SLOT_HEADROOM;
        let per_slot = per_slot.min(frame_room.saturating_sub(at));
        if per_slot == 0 || total == 0 {
            return Ok(0);
        }
        let slots = self
            .free_slots()
            .min(MAX_FILL_SLOTS)
            .min(total.div_ceil(per_slot));
        if slots == 0 {
            return Ok(0);
        }
        if let Some(lent) = self.lent.as_mut().filter(|_| {
            // Only frames the guest checksums, and only behind frames
            // of its buffers (see the module header).
            self.offload && at > 0 && self.lent_queued == self.count
        }) {
            let total = total.min(slots * per_slot);
            if let Some(got) =
                lent.read_into(at, per_slot, slots, total, lead.as_deref_mut(), &mut read)
            {
                let got = got?;
                self.filled = got.div_ceil(per_slot).min(slots);
                self.lent_read = (at, self.filled);
                return Ok(got);
            }
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_FILL_SLOTS + 1];
        let mut n = 0;
        let lead_len = lead.as_ref().map_or(0, |l| l.len());
        if let Some(lead) = lead {
            iov[0] = libc::iovec {
                iov_base: lead.as_mut_ptr().cast(),
                iov_len: lead.len(),
            };
            n = 1;
        }
        let base = self.storage.as_mut_ptr();
        let mut left = total;
        for i in 0..slots {
            let slot = (self.head + self.count + i) % self.lens.len();
            let start = slot * self.slot_size + SLOT_HEADROOM + at;
            let len = left.min(per_slot);
            debug_assert!(start + len <= self.storage.len());
            iov[n] = libc::iovec {
                // SAFETY: `start + len` lies within `storage` (a slot's
                // frame room is `frame_room` >= `at + per_slot`), and the
                // slots are distinct, so the iovecs do not overlap; the
                // pointers live while `self` is borrowed, for `read` only.
                iov_base: unsafe { base.add(start) }.cast(),
                iov_len: len,
            };
            n += 1;
            left -= len;
        }
        let got = read(&mut iov[..n])?.saturating_sub(lead_len);
        self.filled = got.div_ceil(per_slot).min(slots);
        Ok(got)
    }

    /// How many of the next free slots hold payload that
    /// [`GuestTx::read_into_free`] read in place: the next push takes the
    /// first of them, whatever it builds.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Gives back the slots [`GuestTx::read_into_free`] filled and that
    /// were not pushed (their data is forgotten; the slots stay free).
    pub fn drop_filled(&mut self) {
        if self.lent_read.0 > 0 {
            let pushed = self.lent_read.1 - self.filled;
            if let Some(lent) = self.lent.as_mut() {
                lent.keep_read(pushed);
            }
        }
        self.filled = 0;
        self.lent_read = (0, 0);
    }

    /// The `i`-th queued frame from the front preceded by its virtio-net
    /// header (all zero unless TCP asked for an offload), as a tap opened
    /// with `IFF_VNET_HDR` expects.
    pub fn frame_with_vnet_hdr(&self, i: usize) -> &[u8] {
        let (start, len) = self.slot_span(i);
        &self.storage[start + SLOT_HEADROOM - VNET_HDR_LEN..start + SLOT_HEADROOM + len]
    }

    /// The `i`-th queued frame from the front, without prefix.
    pub fn frame(&self, i: usize) -> &[u8] {
        let (start, len) = self.slot_span(i);
        &self.storage[start + SLOT_HEADROOM..start + SLOT_HEADROOM + len]
    }

    /// The `i`-th queued frame from the front preceded by its 4-byte
    /// big-endian length, as QEMU's stream netdev expects.
    pub fn frame_with_length_prefix(&mut self, i: usize) -> &[u8] {
        let (start, len) = self.slot_span(i);
        let len_be = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        let at = start + SLOT_HEADROOM - FRAME_PREFIX_LEN;
        self.storage[at..at + FRAME_PREFIX_LEN].copy_from_slice(&len_be);
        &self.storage[at..start + SLOT_HEADROOM + len]
    }

    /// Drops `n` frames from the front (they were sent).
    pub fn pop(&mut self, n: usize) {
        let n = n.min(self.count);
        // Lent frames are the first queued: only they have marks to clear
        // (none on a link that lends no buffers).
        let lent = n.min(self.lent_queued);
        for i in 0..lent {
            self.lent_headers[(self.head + i) % self.lens.len()] = 0;
        }
        self.lent_queued -= lent;
        self.head = (self.head + n) % self.lens.len();
        self.count -= n;
    }

    /// Fills `out` with the first queued frames, each preceded by its 4-byte
    /// big-endian length (QEMU's stream framing), for one `writev`. The
    /// first `skip` bytes of the first frame (already written by a partial
    /// write) are left out. Returns how many slices were filled.
    pub fn stream_slices<'a>(&'a mut self, skip: usize, out: &mut [std::io::IoSlice<'a>]) -> usize {
        let n = self.count.min(out.len());
        for i in 0..n {
            let (start, len) = self.slot_span(i);
            let len_be = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
            let at = start + SLOT_HEADROOM - FRAME_PREFIX_LEN;
            self.storage[at..at + FRAME_PREFIX_LEN].copy_from_slice(&len_be);
        }
        let storage = &self.storage;
        for (i, slot) in out.iter_mut().enumerate().take(n) {
            let slot_idx = (self.head + i) % self.lens.len();
            let start = slot_idx * self.slot_size + SLOT_HEADROOM - FRAME_PREFIX_LEN;
            let end = start + FRAME_PREFIX_LEN + self.lens[slot_idx];
            let from = if i == 0 {
                (start + skip).min(end)
            } else {
                start
            };
            *slot = std::io::IoSlice::new(&storage[from..end]);
        }
        n
    }

    /// Forgets every queued frame (the VM went away).
    pub fn clear(&mut self) {
        if self.lent_queued > 0 || self.lent_read.0 > 0 {
            if let Some(lent) = self.lent.as_mut() {
                lent.forget();
            }
        }
        self.lent_headers.fill(0);
        self.lent_queued = 0;
        self.lent_read = (0, 0);
        self.head = 0;
        self.count = 0;
        self.filled = 0;
    }

    fn slot_span(&self, i: usize) -> (usize, usize) {
        assert!(
            i < self.count,
            "frame index {i} beyond the {} queued",
            self.count
        );
        let slot = (self.head + i) % self.lens.len();
        debug_assert_eq!(
            self.lent_headers[slot], 0,
            "a frame whose payload is in the guest's buffers read from its slot"
        );
        (slot * self.slot_size, self.lens[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::{
        vnet_header, Offload, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    };
    use crate::wire::{IPV4_HEADER_LEN, IPV6_HEADER_LEN};

    #[test]
    fn guest_tx_ring_wraps_and_prefixes_lengths() {
        let mut tx = GuestTx::new(100, 2);
        assert!(tx.push(|b| {
            b[..3].copy_from_slice(b"abc");
            3
        }));
        assert!(tx.push(|b| {
            b[0] = b'x';
            1
        }));
        assert!(!tx.push(|_| 1), "full pool refuses");
        assert_eq!(
            tx.frame_with_length_prefix(0),
            &[0, 0, 0, 3, b'a', b'b', b'c']
        );
        tx.pop(1);
        assert!(tx.push(|b| {
            b[..2].copy_from_slice(b"yz");
            2
        }));
        assert_eq!(tx.frame(0), b"x");
        assert_eq!(tx.frame(1), b"yz");
        assert_eq!(tx.free_slots(), 0);
    }

    #[test]
    fn offload_is_undone_to_the_link_mtu() {
        let mut tx = GuestTx::new(1500, 8);
        tx.enable_offload();
        tx.enable_offload();
        assert!(tx.offload());
        assert_eq!(tx.max_frame_len(), ETHERNET_HEADER_LEN + MAX_OFFLOAD_PACKET);
        assert_eq!(tx.free_slots(), 2);
        assert!(tx.push(|_| 60));
        tx.disable_offload();
        assert!(!tx.offload());
        assert_eq!(tx.max_frame_len(), ETHERNET_HEADER_LEN + 1500);
        assert_eq!(tx.free_slots(), 8, "queued frames forgotten");
        tx.disable_offload();
        assert_eq!(tx.max_frame_len(), ETHERNET_HEADER_LEN + 1500);
    }

    #[test]
    fn offload_frames_carry_their_virtio_net_header() {
        let mut tx = GuestTx::new(1500, 8);
        assert!(!tx.offload());
        tx.enable_offload();
        assert!(tx.offload());
        assert_eq!(tx.max_frame_len(), ETHERNET_HEADER_LEN + MAX_OFFLOAD_PACKET);
        let gso = Some(Offload {
            mss: 1460,
            header_len: 20,
            udp: false,
        });
        // 3000 bytes of payload: segmented, TCPv4, checksum from byte 34.
        let hdr = vnet_header(gso, IPV4_HEADER_LEN, 3020, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(hdr, [1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0]);
        assert!(tx.push_with_vnet(&hdr, |b| {
            b[0] = 7;
            1
        }));
        // One MSS or less: the checksum only.
        let small = vnet_header(gso, IPV6_HEADER_LEN, 1480, VIRTIO_NET_HDR_GSO_TCPV6);
        assert_eq!(small, [1, 0, 74, 0, 0xb4, 0x05, 54, 0, 16, 0]);
        assert_eq!(
            vnet_header(None, IPV4_HEADER_LEN, 3020, 1),
            [0; VNET_HDR_LEN]
        );
        // A plain push clears the header room of a reused slot.
        assert!(tx.push(|b| {
            b[0] = 8;
            1
        }));
        assert_eq!(tx.frame_with_vnet_hdr(0), [&hdr[..], &[7]].concat());
        assert_eq!(
            tx.frame_with_vnet_hdr(1),
            [&[0; VNET_HDR_LEN][..], &[8]].concat()
        );
        assert_eq!(tx.frame_with_length_prefix(1), &[0, 0, 0, 1, 8]);
    }

    /// The kernel as the reader: `readv` from a unix stream socket holding
    /// `data` (a socket, not a closure copying by hand, so the iovecs are
    /// used exactly as `recvmsg` uses them).
    fn socket_with(
        data: &[u8],
    ) -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        use std::io::Write;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(data).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn readv(fd: &impl std::os::fd::AsRawFd, iov: &mut [libc::iovec]) -> std::io::Result<usize> {
        // SAFETY: the iovecs point at live, writable, distinct buffers.
        let r = unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), iov.len() as _) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Pushes a frame whose payload is already in place: headers only.
    fn push_header(tx: &mut GuestTx, at: usize, payload: usize) -> bool {
        tx.push(|b| {
            b[..at].fill(0xee);
            at + payload
        })
    }

    #[test]
    fn one_read_fills_the_payload_of_several_slots_in_place() {
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let (_w, r) = socket_with(&data);
        let mut tx = GuestTx::new(100, 8);
        let at = 30;
        // 100 + 14 bytes of frame room, 84 after `at`: 80 bytes a slot.
        let mut lens = Vec::new();
        let got = tx
            .read_into_free(at, 80, 250, None, |iov| {
                lens = iov.iter().map(|v| v.iov_len).collect();
                readv(&r, iov)
            })
            .unwrap();
        assert_eq!(got, 250);
        assert_eq!(lens, [80, 80, 80, 10], "the last iovec holds the rest");
        assert_eq!(tx.filled(), 4);
        assert_eq!(tx.free_slots(), 8, "filled slots stay free until pushed");
        for (i, len) in [80, 80, 80, 10].into_iter().enumerate() {
            assert!(push_header(&mut tx, at, len));
            assert_eq!(tx.filled(), 3 - i);
        }
        let mut seen = Vec::new();
        for i in 0..4 {
            let frame = tx.frame(i);
            assert!(frame[..at].iter().all(|&b| b == 0xee));
            seen.extend_from_slice(&frame[at..]);
        }
        assert_eq!(seen, data);
    }

    #[test]
    fn a_read_is_bounded_by_total_free_slots_and_frame_room() {
        let data = vec![7u8; 1000];
        let (_w, r) = socket_with(&data);
        let mut tx = GuestTx::new(100, 4);
        // Two slots in use, and the ring wraps: 3 and 4 are the free ones
        // after two pops and two more pushes.
        for _ in 0..4 {
            assert!(tx.push(|_| 1));
        }
        tx.pop(2);
        // The window (`total`) allows 150 bytes; a slot holds 84 after
        // `at` = 30 however much is asked per slot.
        let mut lens = Vec::new();
        let got = tx
            .read_into_free(30, 500, 150, None, |iov| {
                lens = iov.iter().map(|v| v.iov_len).collect();
                readv(&r, iov)
            })
            .unwrap();
        assert_eq!((got, tx.filled()), (150, 2));
        assert_eq!(lens, [84, 66]);
        // No free slot, no room after `at`, nothing asked: no read.
        for (at, total) in [(200, 100), (30, 0)] {
            let called = std::cell::Cell::new(false);
            let got = tx
                .read_into_free(at, 80, total, None, |_| {
                    called.set(true);
                    Ok(0)
                })
                .unwrap();
            assert_eq!((got, tx.filled(), called.get()), (0, 0, false));
        }
        assert!(tx.push(|_| 1) && tx.push(|_| 1));
        assert_eq!(tx.read_into_free(30, 80, 100, None, |_| Ok(99)).unwrap(), 0);
        // At most MAX_FILL_SLOTS iovecs, however many slots are free.
        let mut big = GuestTx::new(100, MAX_FILL_SLOTS + 10);
        let mut n = 0;
        big.read_into_free(0, 10, usize::MAX, None, |iov| {
            n = iov.len();
            Ok(0)
        })
        .unwrap();
        assert_eq!(n, MAX_FILL_SLOTS);
    }

    #[test]
    fn a_short_read_fills_fewer_slots_and_a_failed_one_none() {
        // The socket holds 170 bytes of the 400 asked for.
        let data = vec![1u8; 170];
        let (mut w, r) = socket_with(&data);
        let mut tx = GuestTx::new(100, 8);
        let got = tx
            .read_into_free(10, 80, 400, None, |iov| readv(&r, iov))
            .unwrap();
        assert_eq!((got, tx.filled()), (170, 3));
        // The handler gives back what it did not push: the slots are free
        // and the next push is an ordinary one.
        assert!(push_header(&mut tx, 10, 80));
        tx.drop_filled();
        assert_eq!((tx.filled(), tx.free_slots()), (0, 7));
        // A failed read (the socket is empty) fills nothing, and clears
        // what an earlier read had filled.
        std::io::Write::write_all(&mut w, &[2; 80]).unwrap();
        tx.read_into_free(10, 80, 80, None, |iov| readv(&r, iov))
            .unwrap();
        let before = tx.filled();
        let err = tx
            .read_into_free(10, 80, 400, None, |iov| readv(&r, iov))
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!((before, tx.filled(), tx.free_slots()), (1, 0, 7));
        assert!(tx.push(|b| {
            b[0] = 9;
            1
        }));
        assert_eq!(tx.frame(1), [9]);
    }

    #[test]
    fn a_lead_buffer_is_read_first_and_not_counted() {
        let data: Vec<u8> = (0..100u8).collect();
        let (_w, r) = socket_with(&data);
        let mut tx = GuestTx::new(100, 8);
        let mut skip = [0u8; 30];
        let got = tx
            .read_into_free(0, 50, 70, Some(&mut skip), |iov| readv(&r, iov))
            .unwrap();
        assert_eq!((got, tx.filled()), (70, 2));
        assert_eq!(skip[..], data[..30]);
        assert!(push_header(&mut tx, 0, 50) && push_header(&mut tx, 0, 20));
        assert_eq!(tx.frame(0), &data[30..80]);
        assert_eq!(tx.frame(1), &data[80..]);
    }

    /// Guest buffers of the test's own: plain memory, and a log of what
    /// the queue asked of them.
    #[derive(Default)]
    struct LentLog {
        /// Payload bytes read, per frame, oldest first.
        frames: std::collections::VecDeque<Vec<u8>>,
        /// Frames completed: (vnet header, headers, payload).
        completed: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
        kept: Vec<usize>,
        batches: usize,
        forgotten: usize,
        /// Answer `None` to reads (no buffer fits).
        refuse: bool,
    }

    struct FakeBuffers(std::rc::Rc<std::cell::RefCell<LentLog>>);

    impl GuestBuffers for FakeBuffers {
        fn read_into(
            &mut self,
            _at: usize,
            per_frame: usize,
            frames: usize,
            total: usize,
            lead: Option<&mut [u8]>,
            read: &mut dyn FnMut(&mut [libc::iovec]) -> std::io::Result<usize>,
        ) -> Option<std::io::Result<usize>> {
            let mut log = self.0.borrow_mut();
            if log.refuse {
                return None;
            }
            let mut bufs: Vec<Vec<u8>> = (0..frames)
                .map(|i| vec![0; per_frame.min(total - i * per_frame)])
                .collect();
            let lead_len = lead.as_ref().map_or(0, |l| l.len());
            let mut iov: Vec<libc::iovec> = lead
                .into_iter()
                .chain(bufs.iter_mut().map(|b| b.as_mut_slice()))
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            let got = match read(&mut iov) {
                Ok(n) => n - lead_len,
                Err(e) => return Some(Err(e)),
            };
            let mut left = got;
            for mut b in bufs.into_iter().take(got.div_ceil(per_frame)) {
                b.truncate(left.min(per_frame));
                left -= b.len();
                log.frames.push_back(b);
            }
            Some(Ok(got))
        }
        fn keep_read(&mut self, keep: usize) {
            let mut log = self.0.borrow_mut();
            log.kept.push(keep);
            let n = log.frames.len();
            // The frames of the last read past `keep` (all are the last
            // read's in these tests).
            log.frames.truncate(keep.min(n));
        }
        fn complete(&mut self, vnet: &[u8], headers: &[u8], payload_len: usize) -> bool {
            let mut log = self.0.borrow_mut();
            let payload = log.frames.pop_front().unwrap();
            assert_eq!(payload.len(), payload_len);
            log.completed
                .push((vnet.to_vec(), headers.to_vec(), payload));
            true
        }
        fn end_batch(&mut self) {
            self.0.borrow_mut().batches += 1;
        }
        fn forget(&mut self) {
            let mut log = self.0.borrow_mut();
            log.forgotten += log.frames.len();
            log.frames.clear();
        }
    }

    fn lent_queue() -> (GuestTx, std::rc::Rc<std::cell::RefCell<LentLog>>) {
        let log = std::rc::Rc::new(std::cell::RefCell::new(LentLog::default()));
        let mut tx = GuestTx::new(1500, 32);
        tx.enable_offload();
        tx.lend_guest_buffers(Box::new(FakeBuffers(log.clone())));
        (tx, log)
    }

    #[test]
    fn payload_read_into_lent_buffers_leaves_headers_in_the_slots() {
        let (mut tx, log) = lent_queue();
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let (_a, r) = socket_with(&data);
        let at = 54;
        let got = tx
            .read_into_free(at, 100, 250, None, |iov| readv(&r, iov))
            .unwrap();
        assert_eq!((got, tx.filled()), (250, 3));
        for len in [100, 100, 50] {
            assert!(tx.push_with_vnet(&[7; VNET_HDR_LEN], |b| {
                b[..at].fill(0xee);
                at + len
            }));
        }
        // An ACK queued after them goes after them, in a slot.
        assert!(tx.push(|b| {
            b[..3].copy_from_slice(b"ack");
            3
        }));
        assert_eq!((tx.len(), tx.lent_queued()), (4, 3));
        // Another read while a slot frame is queued: into the slots.
        let (_a2, r2) = socket_with(b"more");
        assert_eq!(
            tx.read_into_free(at, 100, 4, None, |iov| readv(&r2, iov))
                .unwrap(),
            4
        );
        assert_eq!(log.borrow().frames.len(), 3, "not into the guest's buffers");
        tx.drop_filled();
        assert_eq!(tx.complete_lent(), 3);
        let log = log.borrow();
        assert_eq!(log.batches, 1);
        let payload: Vec<u8> = log.completed.iter().flat_map(|c| c.2.clone()).collect();
        assert_eq!(payload, data);
        for (vnet, headers, _) in &log.completed {
            assert_eq!(vnet, &[7; VNET_HDR_LEN]);
            assert_eq!(headers, &vec![0xee; at]);
        }
        assert_eq!((tx.len(), tx.lent_queued()), (1, 0));
        assert_eq!(tx.frame(0), b"ack");
    }

    #[test]
    fn lent_buffers_are_used_only_for_offload_frames_and_when_they_fit() {
        let (mut tx, log) = lent_queue();
        // A link that does not take offload frames: the slots.
        tx.disable_offload();
        assert!(tx.has_guest_buffers(), "kept over a rebuild");
        let (_a, r) = socket_with(b"abcdef");
        assert_eq!(
            tx.read_into_free(10, 100, 6, None, |iov| readv(&r, iov))
                .unwrap(),
            6
        );
        assert!(push_header(&mut tx, 10, 6));
        assert_eq!((tx.lent_queued(), log.borrow().frames.len()), (0, 0));
        assert_eq!(&tx.frame(0)[10..], b"abcdef");
        tx.pop(1);
        // Buffers that do not fit: the slots too.
        tx.enable_offload();
        log.borrow_mut().refuse = true;
        let (_a, r) = socket_with(b"ghij");
        assert_eq!(
            tx.read_into_free(10, 100, 4, None, |iov| readv(&r, iov))
                .unwrap(),
            4
        );
        assert!(push_header(&mut tx, 10, 4));
        assert_eq!(tx.lent_queued(), 0);
        assert_eq!(&tx.frame(0)[10..], b"ghij");
    }

    #[test]
    fn unpushed_lent_frames_are_given_back_and_cleared_ones_forgotten() {
        let (mut tx, log) = lent_queue();
        let (_a, r) = socket_with(&[1; 300]);
        assert_eq!(
            tx.read_into_free(20, 100, 300, None, |iov| readv(&r, iov))
                .unwrap(),
            300
        );
        assert!(push_header(&mut tx, 20, 100));
        // The second frame was refused: the rest goes back.
        tx.drop_filled();
        assert_eq!(log.borrow().kept, vec![1]);
        assert_eq!(log.borrow().frames.len(), 1);
        assert_eq!(tx.lent_queued(), 1);
        // The VM went away.
        tx.clear();
        assert_eq!((log.borrow().forgotten, tx.lent_queued()), (1, 0));
        assert_eq!(tx.complete_lent(), 0);
        // A lead buffer is read first, and not counted.
        let (_a, r) = socket_with(b"skipDATA");
        let mut skip = [0u8; 4];
        assert_eq!(
            tx.read_into_free(20, 100, 4, Some(&mut skip), |iov| readv(&r, iov))
                .unwrap(),
            4
        );
        assert_eq!(&skip, b"skip");
        assert!(push_header(&mut tx, 20, 4));
        assert_eq!(tx.complete_lent(), 1);
        assert_eq!(log.borrow().completed[0].2, b"DATA");
    }
}
