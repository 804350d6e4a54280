//! What every protocol handler shares while it handles one event.
//!
//! The data path is single-threaded and event-driven: the event loop wakes
//! on the VM link or on a host socket, and hands the matching handler a
//! [`Ctx`]. Through it a handler queues frames toward the guest
//! ([`GuestTx`]), registers host sockets ([`token`]), counts what it drops
//! ([`Counters`]) and finds the guest's MAC address ([`Neighbours`]).
//!
//! Several VMs may share the link, so a destination address nobody has
//! been heard from is resolved as a router does: the frame is held (a few
//! per address) while an ARP request or neighbour solicitation asks who
//! has it, released when the answer (or any frame from that address)
//! arrives, and dropped and counted ([`DropReason::Unresolved`]) when
//! nobody answers. Guessing the VM heard from last would send it to the
//! wrong VM.
//!
//! Frames toward the guest are built in place in a pool of slots allocated
//! once at start-up; each slot keeps room in front of the frame so a
//! stream attachment can write its length prefix, and a tap its virtio-net
//! header, without copying the frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet,
};

use crate::config::{HostForward, StackConfig};

/// MAC address the stack uses for every virtual address (gateway, DNS,
/// forwards): `52:55` followed by the default host address, as libslirp does.
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);

/// Length of an Ethernet header without VLAN tag.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of an IPv6 header (the stack sends no extension headers).
pub const IPV6_HEADER_LEN: usize = 40;
/// Room kept in front of every queued frame for a stream length prefix.
pub const FRAME_PREFIX_LEN: usize = 4;

/// Length of the `virtio_net_hdr` a tap opened with `IFF_VNET_HDR` puts in
/// front of every frame (the kernel's default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;
/// Room kept in front of every slot's frame: the stream length prefix and
/// the virtio-net header both end where the frame starts.
const SLOT_HEADROOM: usize = 12;
/// Largest IP packet a segmentation-offload frame carries.
pub const MAX_OFFLOAD_PACKET: usize = 65535;

/// `virtio_net_hdr` flag: the checksum from `csum_start` is left to the
/// receiver (the pseudo-header sum is in place).
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr` flag: the sender's kernel already checked the checksum.
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `virtio_net_hdr` GSO types.
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;

/// What the link says of a received frame's TCP or UDP checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxChecksum {
    /// Nothing: the stack verifies it.
    Unverified,
    /// The sending kernel vouches for the payload, so the stack does not
    /// sum it again: a tap's virtio-net header said `NEEDS_CSUM` (the field
    /// holds only the pseudo-header sum, Linux's `CHECKSUM_PARTIAL`, as
    /// for any frame of a tap with `TUN_F_CSUM` offload) or `DATA_VALID`.
    Trusted,
}

impl RxChecksum {
    /// Reads the flags of the `virtio_net_hdr` in front of a frame read
    /// from a tap opened with `IFF_VNET_HDR`.
    pub fn from_vnet_hdr(hdr: &[u8]) -> RxChecksum {
        let flags = hdr.first().copied().unwrap_or(0);
        if flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) != 0 {
            RxChecksum::Trusted
        } else {
            RxChecksum::Unverified
        }
    }
}

/// A TCP segment the attachment's receiver finishes (a tap with
/// `IFF_VNET_HDR`): it computes the checksum from the pseudo-header sum the
/// stack put in place, and a segment with more than `mss` bytes of payload
/// arrives as one large (GRO-like) packet of `mss`-sized segments.
#[derive(Clone, Copy, Debug)]
pub struct TcpOffload {
    /// Payload bytes per segment on the wire (the guest's MSS).
    pub mss: u16,
    /// Length of the TCP header (options included).
    pub tcp_header_len: usize,
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
        }
    }

    /// Makes room for TCP segmentation-offload frames (a quarter as many
    /// slots, each of a [`MAX_OFFLOAD_PACKET`]-byte packet) and lets TCP
    /// ask for them ([`GuestTx::offload`]): the attachment writes frames with
    /// their virtio-net header. Forgets queued frames (called at start).
    pub fn enable_offload(&mut self) {
        let slots = (self.lens.len() / 4).max(1);
        *self = GuestTx::new(MAX_OFFLOAD_PACKET.max(self.max_frame_len()), slots);
        self.offload = true;
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
    fn push_with_vnet(
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
        true
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
        self.head = 0;
        self.count = 0;
    }

    fn slot_span(&self, i: usize) -> (usize, usize) {
        assert!(
            i < self.count,
            "frame index {i} beyond the {} queued",
            self.count
        );
        let slot = (self.head + i) % self.lens.len();
        (slot * self.slot_size, self.lens[slot])
    }
}

/// What a host socket registered with the event loop belongs to.
///
/// A [`Token`] carries the kind in its top bits and the handler's own table
/// index below, so the event loop dispatches without a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum TokenKind {
    /// The VM link (listener or connection); index chosen by the attachment.
    Attach = 1,
    /// A translated TCP connection's host socket.
    TcpFlow = 2,
    /// A TCP host-forward listener.
    TcpListener = 3,
    /// A UDP flow's host socket.
    UdpFlow = 4,
    /// A UDP host-forward socket.
    UdpListener = 5,
    /// An ICMP echo socket.
    Icmp = 6,
    /// A control or API socket (also the signal descriptor).
    Control = 7,
    /// A socket of the DNS relay toward the upstream resolvers.
    Dns = 8,
}

const TOKEN_KIND_SHIFT: u32 = 48;

/// The token for entry `index` of a handler of kind `kind`.
pub fn token(kind: TokenKind, index: usize) -> Token {
    Token(((kind as usize) << TOKEN_KIND_SHIFT) | (index & ((1 << TOKEN_KIND_SHIFT) - 1)))
}

/// Splits a token made by [`token`] back into kind and index.
pub fn decode_token(t: Token) -> Option<(TokenKind, usize)> {
    let index = t.0 & ((1 << TOKEN_KIND_SHIFT) - 1);
    let kind = match t.0 >> TOKEN_KIND_SHIFT {
        1 => TokenKind::Attach,
        2 => TokenKind::TcpFlow,
        3 => TokenKind::TcpListener,
        4 => TokenKind::UdpFlow,
        5 => TokenKind::UdpListener,
        6 => TokenKind::Icmp,
        7 => TokenKind::Control,
        8 => TokenKind::Dns,
        _ => return None,
    };
    Some((kind, index))
}

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a frame from the guest (or a datagram from the host) was dropped.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum DropReason { $(#[doc = $doc] $variant,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Short stable name used in logs and by the control API.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    Truncated => "truncated", "Shorter than its headers say.";
    Oversized => "oversized", "Larger than the link MTU or the framing limit.";
    BadChecksum => "bad-checksum", "A header or payload checksum did not match.";
    Malformed => "malformed", "A header field has an impossible value.";
    UnsupportedProtocol => "unsupported-protocol", "An EtherType or IP protocol the stack does not serve.";
    NotForUs => "not-for-us", "Addressed to a MAC or IP address nothing here owns.";
    Fragment => "fragment", "An IP fragment (the stack does not reassemble).";
    Restricted => "restricted", "Outbound traffic refused by restrict=on.";
    HostLoopback => "host-loopback", "Outbound traffic to the host's loopback refused by --no-host-loopback.";
    FlowLimit => "flow-limit", "A flow table is full.";
    GuestTxFull => "guest-tx-full", "No room left in the queue toward the guest.";
    BadDhcp => "bad-dhcp", "A DHCP message that could not be parsed or answered.";
    HostSocketError => "host-socket-error", "The host refused to open or use a socket.";
    Unresolved => "unresolved", "No guest answered address resolution for the destination (or too many frames waited for it).";
}

/// Frame and drop counters of one stack.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Frames received from the guest.
    pub frames_in: u64,
    /// Frames sent to the guest.
    pub frames_out: u64,
    /// Bytes received from the guest (Ethernet frames).
    pub bytes_in: u64,
    /// Bytes sent to the guest (Ethernet frames).
    pub bytes_out: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts one drop and logs it at debug level.
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
        tracing::debug!(reason = reason.name(), "dropped");
    }

    /// How many drops `reason` has caused.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Total drops of every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// IP address (either family) to MAC address of the guests on the link,
/// learned from the frames they send, and the frames held for addresses
/// being resolved.
#[derive(Clone, Debug, Default)]
pub struct Neighbours {
    entries: Vec<(IpAddr, EthernetAddress)>,
    last_seen: Option<EthernetAddress>,
    pending: Vec<Pending>,
    /// Held frames whose address was learnt, with their destination MAC
    /// written, waiting for [`Neighbours::take_released`].
    released: Vec<Vec<u8>>,
}

/// An address being resolved and the frames held for it.
#[derive(Clone, Debug)]
struct Pending {
    ip: IpAddr,
    frames: Vec<Vec<u8>>,
    /// When the next request goes out (or, after the last, when it ends).
    next_try: Instant,
    /// Requests sent so far.
    tries: u32,
}

/// Most neighbours remembered; a guest cannot grow the table beyond it.
const MAX_NEIGHBOURS: usize = 256;
/// Most addresses resolved at once.
const MAX_UNRESOLVED: usize = 32;
/// Most frames held for one address being resolved.
const MAX_HELD: usize = 8;
/// Time between requests for an address, and how many go out before its
/// frames are dropped (Linux's defaults: 1 s, 3 probes).
pub const RESOLVE_RETRY: Duration = Duration::from_secs(1);
const RESOLVE_TRIES: u32 = 3;

/// What became of a frame handed to [`Neighbours::hold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Held; the address is new, so a request must go out now.
    Solicit,
    /// Held behind a request already sent.
    Waiting,
    /// Not held: too many frames or addresses wait already.
    Full,
}

/// Addresses to ask for again and frames dropped, from [`Neighbours::due`].
#[derive(Debug, Default)]
pub struct Due {
    /// Addresses whose request goes out again.
    pub retry: Vec<IpAddr>,
    /// Frames dropped because nobody answered for their address.
    pub dropped: usize,
}

impl Neighbours {
    /// Records that `ip` is at `mac` (from an ARP packet, an IP frame or a
    /// neighbour discovery message the guest sent). Frames held for `ip`
    /// are released.
    pub fn learn(&mut self, ip: impl Into<IpAddr>, mac: EthernetAddress) {
        let ip = ip.into();
        self.last_seen = Some(mac);
        if ip.is_unspecified() || ip.is_multicast() || !mac.is_unicast() {
            return;
        }
        if let Some(i) = self.pending.iter().position(|p| p.ip == ip) {
            let pending = self.pending.swap_remove(i);
            for mut frame in pending.frames {
                frame[..6].copy_from_slice(mac.as_bytes());
                self.released.push(frame);
            }
        }
        // The common case on the data path: the address heard from last.
        if let Some(last) = self.entries.last_mut().filter(|(a, _)| *a == ip) {
            last.1 = mac;
            return;
        }
        // Otherwise it moves to the end, so the order is by recency.
        if let Some(i) = self.entries.iter().position(|(a, _)| *a == ip) {
            self.entries.remove(i);
        }
        if self.entries.len() == MAX_NEIGHBOURS {
            self.entries.remove(0);
        }
        self.entries.push((ip, mac));
    }

    /// Forgets every address at `mac` (that VM left a shared link) and
    /// returns them.
    pub fn forget(&mut self, mac: EthernetAddress) -> Vec<IpAddr> {
        let gone = self
            .entries
            .iter()
            .filter(|(_, m)| *m == mac)
            .map(|(a, _)| *a)
            .collect();
        self.entries.retain(|(_, m)| *m != mac);
        if self.last_seen == Some(mac) {
            self.last_seen = None;
        }
        gone
    }

    /// MAC address of `ip`, if a guest at it has been heard from.
    pub fn lookup(&self, ip: impl Into<IpAddr>) -> Option<EthernetAddress> {
        let ip = ip.into();
        self.entries
            .iter()
            .rev()
            .find(|(a, _)| *a == ip)
            .map(|(_, m)| *m)
    }

    /// Holds `frame` (its destination MAC still to be written) until `ip`
    /// is resolved.
    pub fn hold(&mut self, ip: IpAddr, frame: Vec<u8>, now: Instant) -> Held {
        if let Some(p) = self.pending.iter_mut().find(|p| p.ip == ip) {
            if p.frames.len() >= MAX_HELD {
                return Held::Full;
            }
            p.frames.push(frame);
            return Held::Waiting;
        }
        if self.pending.len() >= MAX_UNRESOLVED {
            return Held::Full;
        }
        self.pending.push(Pending {
            ip,
            frames: vec![frame],
            next_try: now + RESOLVE_RETRY,
            tries: 1,
        });
        Held::Solicit
    }

    /// Held frames whose destination was learnt since the last call.
    pub fn take_released(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.released)
    }

    /// When [`Neighbours::due`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.next_try).min()
    }

    /// Requests due again and frames whose address nobody answered for.
    pub fn due(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        self.pending.retain_mut(|p| {
            if p.next_try > now {
                return true;
            }
            if p.tries >= RESOLVE_TRIES {
                due.dropped += p.frames.len();
                return false;
            }
            p.tries += 1;
            p.next_try = now + RESOLVE_RETRY;
            due.retry.push(p.ip);
            true
        });
        due
    }

    /// The guest heard from last, if any has spoken yet.
    pub fn last_seen(&self) -> Option<EthernetAddress> {
        self.last_seen
    }

    /// The most recently learned address that `want` accepts (the guest's
    /// SLAAC address, for an IPv6 forward without a guest address).
    pub fn latest(&self, want: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
        self.entries
            .iter()
            .rev()
            .map(|(a, _)| *a)
            .find(|a| want(*a))
    }
}

/// Where a frame toward the guests goes on the link.
#[derive(Clone, Copy, Debug)]
enum NextHop {
    /// To this Ethernet address.
    Mac(EthernetAddress),
    /// To whoever answers for this address (held until then).
    Resolve(IpAddr),
}

/// Everything a handler may use while it handles one event.
pub struct Ctx<'a> {
    /// The network's configuration.
    pub cfg: &'a StackConfig,
    /// Frames toward the guest.
    pub tx: &'a mut GuestTx,
    /// Registry for host sockets (use [`token`] to make their tokens).
    pub registry: &'a Registry,
    /// Counters.
    pub counters: &'a mut Counters,
    /// Guest MAC addresses (and frames held while resolving one).
    pub neighbours: &'a mut Neighbours,
    /// Time of the current event.
    pub now: Instant,
    /// Next IPv4 identification value.
    pub ip_ident: &'a mut u16,
}

impl Ctx<'_> {
    /// Queues one IPv4 packet to the guest at `dst`: writes the Ethernet and
    /// IPv4 headers (TTL 64, don't-fragment, header checksum) and lets
    /// `fill` write `payload_len` bytes of payload in place. The caller fills
    /// in its own transport checksum.
    ///
    /// A `dst` no guest has been heard from is resolved first (the packet
    /// is held meanwhile: see the module header).
    ///
    /// Returns false when the packet was not queued: no room toward the
    /// guest (counted as [`DropReason::GuestTxFull`]), a payload larger
    /// than the MTU allows, or too many packets held for resolution.
    pub fn emit_ipv4(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let next = self.next_hop_v4(dst);
        self.emit_ipv4_via(next, src, dst, protocol, payload_len, None, fill)
    }

    /// Where an IPv4 packet to `dst` goes on the link.
    fn next_hop_v4(&self, dst: Ipv4Addr) -> NextHop {
        if dst.is_broadcast() || dst == self.cfg.broadcast() {
            NextHop::Mac(EthernetAddress::BROADCAST)
        } else {
            match self.neighbours.lookup(dst) {
                Some(mac) => NextHop::Mac(mac),
                None => NextHop::Resolve(dst.into()),
            }
        }
    }

    /// [`Ctx::emit_ipv4`] to an Ethernet address the caller already knows
    /// (a DHCP client that has no IPv4 address yet).
    pub fn emit_ipv4_to(
        &mut self,
        dst_mac: EthernetAddress,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let next = NextHop::Mac(dst_mac);
        self.emit_ipv4_via(next, src, dst, protocol, payload_len, None, fill)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_ipv4_via(
        &mut self,
        next: NextHop,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        offload: Option<TcpOffload>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let total = IPV4_HEADER_LEN + payload_len;
        if total > self.packet_limit(offload) {
            self.counters.drop(DropReason::Oversized);
            return false;
        }
        let ident = *self.ip_ident;
        *self.ip_ident = ident.wrapping_add(1);
        let vnet = vnet_header(
            offload,
            IPV4_HEADER_LEN,
            payload_len,
            VIRTIO_NET_HDR_GSO_TCPV4,
        );
        self.queue_frame(next, EthernetProtocol::Ipv4, total, &vnet, |buf| {
            let mut ip = Ipv4Packet::new_unchecked(&mut *buf);
            ip.set_version(4);
            ip.set_header_len(IPV4_HEADER_LEN as u8);
            ip.set_dscp(0);
            ip.set_ecn(0);
            ip.set_total_len(total as u16);
            ip.set_ident(ident);
            ip.clear_flags();
            ip.set_dont_frag(true);
            ip.set_frag_offset(0);
            ip.set_hop_limit(64);
            ip.set_next_header(protocol);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
            fill(&mut buf[IPV4_HEADER_LEN..]);
        })
    }

    /// Queues one IPv6 packet to the guest at `dst` (or to the Ethernet
    /// address `dst_mac` when given: multicast, or a neighbour the caller
    /// knows): writes the Ethernet and IPv6 headers (hop limit 255 for
    /// neighbour discovery's sake, which every receiver accepts) and lets
    /// `fill` write `payload_len` bytes of payload. The caller fills in its
    /// own transport checksum. Returns false as [`Ctx::emit_ipv4`] does.
    pub fn emit_ipv6(
        &mut self,
        dst_mac: Option<EthernetAddress>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.ipv6(dst_mac, src, dst, protocol, payload_len, None, fill)
    }

    /// [`Ctx::emit_ipv6`], for a TCP segment the link may finish (`offload`).
    #[allow(clippy::too_many_arguments)]
    fn ipv6(
        &mut self,
        dst_mac: Option<EthernetAddress>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: IpProtocol,
        payload_len: usize,
        offload: Option<TcpOffload>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let next = match dst_mac {
            Some(mac) => NextHop::Mac(mac),
            None if dst.is_multicast() => NextHop::Mac(ipv6_multicast_mac(dst)),
            None => match self.neighbours.lookup(dst) {
                Some(mac) => NextHop::Mac(mac),
                None => NextHop::Resolve(dst.into()),
            },
        };
        let total = IPV6_HEADER_LEN + payload_len;
        if total > self.packet_limit(offload) {
            self.counters.drop(DropReason::Oversized);
            return false;
        }
        let vnet = vnet_header(
            offload,
            IPV6_HEADER_LEN,
            payload_len,
            VIRTIO_NET_HDR_GSO_TCPV6,
        );
        self.queue_frame(next, EthernetProtocol::Ipv6, total, &vnet, |buf| {
            let mut ip = Ipv6Packet::new_unchecked(&mut *buf);
            ip.set_version(6);
            ip.set_traffic_class(0);
            ip.set_flow_label(0);
            ip.set_payload_len(payload_len as u16);
            ip.set_next_header(protocol);
            ip.set_hop_limit(255);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            fill(&mut buf[IPV6_HEADER_LEN..]);
        })
    }

    /// Queues one frame to the guest at `next`: the gateway's Ethernet
    /// header with `ethertype`, then `packet_len` bytes that `fill` writes.
    /// Counts the frame, or the drop when the queue toward the guest is full.
    /// An offload frame (`vnet` not all zero) is not held for an unresolved
    /// address (a held frame goes out plain): it is dropped, the address
    /// solicited, and TCP sends it again.
    fn queue_frame(
        &mut self,
        next: NextHop,
        ethertype: EthernetProtocol,
        packet_len: usize,
        vnet: &[u8; VNET_HDR_LEN],
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let frame_len = ETHERNET_HEADER_LEN + packet_len;
        let dst_mac = match next {
            NextHop::Mac(mac) => mac,
            NextHop::Resolve(ip) if vnet[0] != 0 => {
                self.solicit(ip);
                self.counters.drop(DropReason::Unresolved);
                return false;
            }
            NextHop::Resolve(ip) => {
                let mut frame = vec![0; frame_len];
                let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
                eth.set_src_addr(GATEWAY_MAC);
                eth.set_ethertype(ethertype);
                fill(&mut frame[ETHERNET_HEADER_LEN..]);
                return match self.neighbours.hold(ip, frame, self.now) {
                    Held::Solicit => {
                        self.solicit(ip);
                        true
                    }
                    Held::Waiting => true,
                    Held::Full => {
                        self.counters.drop(DropReason::Unresolved);
                        false
                    }
                };
            }
        };
        let queued = self.tx.push_with_vnet(vnet, |buf| {
            let buf = &mut buf[..frame_len];
            let mut eth = EthernetFrame::new_unchecked(&mut *buf);
            eth.set_dst_addr(dst_mac);
            eth.set_src_addr(GATEWAY_MAC);
            eth.set_ethertype(ethertype);
            fill(&mut buf[ETHERNET_HEADER_LEN..]);
            frame_len
        });
        if queued {
            self.counters.frames_out += 1;
            self.counters.bytes_out += frame_len as u64;
        } else {
            self.counters.drop(DropReason::GuestTxFull);
        }
        queued
    }

    /// Asks the link who has `ip`: an ARP request, or a neighbour
    /// solicitation to its solicited-node group.
    pub fn solicit(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(ip) => {
                let sender = self.cfg.host;
                self.queue_frame(
                    NextHop::Mac(EthernetAddress::BROADCAST),
                    EthernetProtocol::Arp,
                    crate::arp::ARP_LEN,
                    &[0; VNET_HDR_LEN],
                    |buf| crate::arp::write_request(buf, sender, ip),
                );
            }
            IpAddr::V6(ip) => crate::ndp::send_neighbour_solicit(self, ip),
        }
    }

    /// Queues the held frames whose destination was learnt.
    pub fn release_held(&mut self) {
        for frame in self.neighbours.take_released() {
            let len = frame.len();
            if self.tx.push(|buf| {
                buf[..len].copy_from_slice(&frame);
                len
            }) {
                self.counters.frames_out += 1;
                self.counters.bytes_out += len as u64;
            } else {
                self.counters.drop(DropReason::GuestTxFull);
            }
        }
    }

    /// [`Ctx::emit_ipv4`] or [`Ctx::emit_ipv6`], by the addresses' family;
    /// mixed families are refused.
    pub fn emit_ip(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        protocol: IpProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.emit_ip_offload(src, dst, protocol, payload_len, None, fill)
    }

    /// [`Ctx::emit_ip`] for a TCP segment the link finishes (`offload`,
    /// only when [`GuestTx::offload`]): the caller puts the pseudo-header
    /// sum in the checksum field, and the packet may exceed the MTU up to
    /// [`MAX_OFFLOAD_PACKET`].
    pub fn emit_ip_offload(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        protocol: IpProtocol,
        payload_len: usize,
        offload: Option<TcpOffload>,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let next = self.next_hop_v4(d);
                self.emit_ipv4_via(next, s, d, protocol, payload_len, offload, fill)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.ipv6(None, s, d, protocol, payload_len, offload, fill)
            }
            _ => {
                self.counters.drop(DropReason::UnsupportedProtocol);
                false
            }
        }
    }

    /// Largest IP packet to queue: the MTU, or an offload frame's limit.
    fn packet_limit(&self, offload: Option<TcpOffload>) -> usize {
        if offload.is_some() && self.tx.offload() {
            MAX_OFFLOAD_PACKET.min(self.tx.max_frame_len() - ETHERNET_HEADER_LEN)
        } else {
            self.cfg.mtu
        }
    }

    /// The guest end of host forward `fwd` ([`forward_guest`]).
    pub fn forward_guest(&self, fwd: &HostForward) -> Option<SocketAddr> {
        forward_guest(self.cfg, self.neighbours, fwd)
    }

    /// The host address as the guest sees it in the family of `guest`
    /// (the source of connections forwarded from host loopback).
    pub fn host_addr_for(&self, guest: IpAddr) -> IpAddr {
        match guest {
            IpAddr::V4(_) => IpAddr::V4(self.cfg.host),
            IpAddr::V6(_) => IpAddr::V6(self.cfg.ipv6.host),
        }
    }
}

/// The virtio-net header (little-endian, as a tap on a little-endian host
/// reads it) of a frame whose IP header is `ip_header_len` bytes: none
/// without `offload`; else the checksum left to the receiver and, when the
/// payload exceeds the MSS, segmentation of type `gso_type`.
fn vnet_header(
    offload: Option<TcpOffload>,
    ip_header_len: usize,
    segment_len: usize,
    gso_type: u8,
) -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let Some(o) = offload else {
        return hdr;
    };
    let csum_start = ETHERNET_HEADER_LEN + ip_header_len;
    let headers = csum_start + o.tcp_header_len;
    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    if segment_len > o.tcp_header_len + usize::from(o.mss) {
        hdr[1] = gso_type;
    }
    // hdr_len, gso_size, csum_start, csum_offset (the TCP checksum field).
    hdr[2..4].copy_from_slice(&(headers as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&o.mss.to_le_bytes());
    hdr[6..8].copy_from_slice(&(csum_start as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    hdr
}

/// The guest end of host forward `fwd`: its guest address, or by default
/// the first DHCP address (IPv4) or the guest's most recently learned
/// address in the IPv6 prefix (its SLAAC address). `None` while no such
/// IPv6 address is known.
pub fn forward_guest(
    cfg: &StackConfig,
    neighbours: &Neighbours,
    fwd: &HostForward,
) -> Option<SocketAddr> {
    let ip = match fwd.guest_addr {
        Some(ip) => ip,
        None if fwd.guest_is_ipv6() => {
            let v6 = &cfg.ipv6;
            neighbours
                .latest(|a| matches!(a, IpAddr::V6(a) if v6.in_prefix(a) && !v6.is_virtual(a)))?
        }
        None => IpAddr::V4(cfg.dhcp_start),
    };
    Some(SocketAddr::new(ip, fwd.guest_port))
}

/// The Ethernet multicast address of IPv6 multicast group `group`
/// (RFC 2464: `33:33` and the group's last four bytes).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn offload_frames_carry_their_virtio_net_header() {
        let mut tx = GuestTx::new(1500, 8);
        assert!(!tx.offload());
        tx.enable_offload();
        assert!(tx.offload());
        assert_eq!(tx.max_frame_len(), ETHERNET_HEADER_LEN + MAX_OFFLOAD_PACKET);
        let gso = Some(TcpOffload {
            mss: 1460,
            tcp_header_len: 20,
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

    #[test]
    fn tokens_round_trip() {
        for kind in [
            TokenKind::Attach,
            TokenKind::TcpFlow,
            TokenKind::Control,
            TokenKind::Dns,
        ] {
            assert_eq!(decode_token(token(kind, 12345)), Some((kind, 12345)));
        }
        assert_eq!(decode_token(Token(0)), None);
    }

    #[test]
    fn neighbours_keep_both_families_and_know_the_latest() {
        let mut n = Neighbours::default();
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        n.learn(Ipv4Addr::new(10, 0, 2, 15), mac);
        n.learn("fec0::5".parse::<Ipv6Addr>().unwrap(), mac);
        n.learn("fe80::5".parse::<Ipv6Addr>().unwrap(), mac);
        n.learn("ff02::1".parse::<Ipv6Addr>().unwrap(), mac);
        let in_prefix = |a: IpAddr| matches!(a, IpAddr::V6(a) if a.segments()[0] == 0xfec0);
        assert_eq!(n.latest(in_prefix), Some("fec0::5".parse().unwrap()));
        assert_eq!(n.latest(|a| a.is_multicast()), None);
        n.learn("fec0::6".parse::<Ipv6Addr>().unwrap(), mac);
        n.learn("fec0::5".parse::<Ipv6Addr>().unwrap(), mac);
        assert_eq!(n.latest(in_prefix), Some("fec0::5".parse().unwrap()));
        assert_eq!(
            ipv6_multicast_mac("ff02::1:ff00:2".parse().unwrap()),
            EthernetAddress([0x33, 0x33, 0xff, 0, 0, 2])
        );
    }
}
