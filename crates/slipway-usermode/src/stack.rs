//! The stack: one guest frame in, Ethernet and IPv4 checked, dispatched to
//! ARP, ICMP, UDP (with the DHCP server and DNS relay) or TCP; IPv6 frames
//! go to [`ipv6`].
//!
//! Everything the guest sends passes [`Stack::handle_frame`]; every host
//! socket event passes [`Stack::handle_host_event`]. Frames toward the
//! guest accumulate in the [`GuestTx`] queue that the attachment drains.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Instant, SystemTime};

use mio::event::Event;
use mio::Registry;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};

pub use crate::iface::StackError;

use crate::config::StackConfig;
use crate::dns::DnsRelay;
use crate::iface::udp;
use crate::iface::{
    Core, Counters, DropReason, GuestTx, Neighbours, RxChecksum, TokenKind, ETHERNET_HEADER_LEN,
    GATEWAY_MAC,
};
use crate::tcp::TcpTable;
use crate::udp::UdpTable;
use crate::{arp, icmp};

mod ipv6;

/// UDP ports of DHCP.
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;

/// One user-mode network: configuration, the queue toward the guest, and
/// every protocol handler with its flow table.
pub struct Stack {
    pub(crate) core: Core,
    pub(crate) tcp: TcpTable,
    pub(crate) udp: UdpTable,
    dns: DnsRelay,
    pub(crate) dhcp: slipway_dhcp::DhcpServer,
    /// `tftp=`: opened by [`Stack::start`].
    tftp: Option<crate::tftp::TftpService>,
    ping: crate::ping::PingTable,
    /// The process serving `guestfwd=` and `smb=` (which also removes
    /// smbd's private configuration); it ends with the stack.
    guestfwd: Option<crate::guestfwd::Helper>,
    v6: ipv6::Ipv6State,
}

impl Stack {
    /// A stack for `cfg`. No socket is opened until [`Stack::start`].
    pub fn new(cfg: StackConfig) -> Result<Stack, StackError> {
        let dhcp = slipway_dhcp::DhcpServer::new(crate::config::dhcp_config(&cfg))?;
        Ok(Stack {
            v6: ipv6::Ipv6State::new(&cfg)?,
            tcp: TcpTable::new(&cfg),
            udp: UdpTable::new(&cfg),
            dns: DnsRelay::new(&cfg),
            dhcp,
            tftp: None,
            ping: Default::default(),
            guestfwd: None,
            core: Core {
                tx: GuestTx::new(cfg.mtu, cfg.limits.guest_tx_slots),
                counters: Counters::default(),
                neighbours: Neighbours::default(),
                ip_ident: 0,
                forward_notices: None,
                cfg,
            },
        })
    }

    /// Opens the host sockets the configuration asks for: forward
    /// listeners (TCP and UDP) and the DNS relay's sockets. A forward that
    /// cannot be bound is an error naming its address.
    pub fn start(&mut self, registry: &Registry) -> Result<(), StackError> {
        self.tcp
            .listen_forwards(registry, &self.core.cfg)
            .map_err(StackError::TcpForward)?;
        self.udp.listen_forwards(registry, &self.core.cfg)?;
        self.dns.open(&self.core.cfg)?;
        if let Some(root) = &self.core.cfg.services.tftp_root {
            let tftp =
                crate::tftp::TftpService::new(root).map_err(|source| StackError::Socket {
                    what: "TFTP root directory",
                    addr: root.display().to_string(),
                    source,
                })?;
            self.tftp = Some(tftp);
        }
        let smb = match &self.core.cfg.services.smb {
            Some(share) => Some(
                crate::smb::SmbServer::prepare(share).map_err(|e| StackError::Smb(Box::new(e)))?,
            ),
            None => None,
        };
        let services = &mut self.core.cfg.services;
        let user = services.helper_user.clone();
        let smb_forwards = smb.iter().flat_map(|s| s.forwards());
        let forwards: Vec<_> = services
            .guestfwd
            .iter()
            .chain(smb_forwards)
            .cloned()
            .collect();
        if !forwards.is_empty() {
            let (mut helper, addrs) =
                crate::guestfwd::Helper::start(&forwards, smb, user.as_deref())?;
            self.core.forward_notices = helper.take_notices();
            for (fwd, to) in forwards.iter().zip(addrs) {
                services.redirects.push((fwd.server, to));
            }
            self.guestfwd = Some(helper);
        }
        if !self.core.cfg.ipv4 {
            tracing::warn!("ipv4=off: the guest gets IPv6 service only");
        }
        Ok(())
    }

    /// TFTP transfers in progress.
    #[cfg(test)]
    pub(crate) fn tftp_active(&self) -> usize {
        self.tftp.as_ref().map_or(0, |t| t.active())
    }

    /// The configuration.
    pub fn config(&self) -> &StackConfig {
        &self.core.cfg
    }

    /// Frame and drop counters.
    pub fn counters(&self) -> &Counters {
        &self.core.counters
    }

    /// Counts a drop the attachment decided on (a frame over the framing limit).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.core.counters.drop(reason);
    }

    /// The queue of frames toward the guest, for the attachment to drain.
    pub fn guest_tx(&mut self) -> &mut GuestTx {
        &mut self.core.tx
    }

    /// Forgets what belongs to the VM that went away (its MAC addresses
    /// and the frames queued for it); DHCP leases stay, so a VM that comes
    /// back gets its address again.
    pub fn reset_vm(&mut self) {
        self.core.neighbours = Neighbours::default();
        self.core.tx.clear();
    }

    /// Forgets a guest at `mac` that left a link other VMs still share:
    /// its neighbour entries go, and the flows of its addresses are closed
    /// at once (TCP host sockets reset, UDP flows dropped) rather than left
    /// to time out; everything else (other VMs' addresses, queued frames
    /// and flows, leases) stays.
    pub fn forget_guest(&mut self, registry: &Registry, mac: EthernetAddress) {
        let gone = self.core.neighbours.forget(mac);
        for ip in gone {
            self.tcp.close_guest(ip);
            self.udp.close_guest(registry, ip);
        }
    }

    /// Handles one Ethernet frame from the guest.
    pub fn handle_frame(&mut self, registry: &Registry, frame: &[u8], now: Instant) {
        self.handle_frame_with(registry, frame, RxChecksum::Unverified, now);
    }

    /// Handles one Ethernet frame from the guest whose link said what
    /// `checksum` tells of its TCP or UDP checksum. A frame from a tap
    /// with segmentation offload may be far longer than the MTU: one TCP
    /// segment of up to 64 KiB, taken whole like any other.
    pub fn handle_frame_with(
        &mut self,
        registry: &Registry,
        frame: &[u8],
        checksum: RxChecksum,
        now: Instant,
    ) {
        self.handle_frame_batched(registry, frame, checksum, &[], now);
        self.end_guest_batch(registry, now, &[]);
    }

    /// [`Stack::handle_frame_with`] for one frame of a batch the link
    /// delivers: UDP datagrams and TCP payload to the host may wait for
    /// the batch's other frames ([`crate::udp`], [`crate::tcp`]) until
    /// [`Stack::end_guest_batch`]. `batch` is the link's buffer `frame`
    /// lies in when that stays unchanged until the batch ends (TCP then
    /// sends payload from there in place), else empty.
    pub(crate) fn handle_frame_batched(
        &mut self,
        registry: &Registry,
        frame: &[u8],
        checksum: RxChecksum,
        batch: &[u8],
        now: Instant,
    ) {
        let core = &mut self.core;
        core.counters.frames_in += 1;
        core.counters.bytes_in += frame.len() as u64;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            core.counters.drop(DropReason::Truncated);
            return;
        };
        let dst_mac = eth.dst_addr();
        let ipv6_multicast =
            eth.ethertype() == EthernetProtocol::Ipv6 && dst_mac.as_bytes()[..2] == [0x33, 0x33];
        if dst_mac != GATEWAY_MAC && !dst_mac.is_broadcast() && !ipv6_multicast {
            // Other multicast (mDNS...) and other MACs.
            core.counters.drop(DropReason::NotForUs);
            return;
        }
        let src_mac = eth.src_addr();
        if !src_mac.is_unicast() {
            core.counters.drop(DropReason::Malformed);
            return;
        }
        let ethertype = eth.ethertype();
        if (!core.cfg.ipv4 && matches!(ethertype, EthernetProtocol::Arp | EthernetProtocol::Ipv4))
            || (!core.cfg.ipv6.enabled && ethertype == EthernetProtocol::Ipv6)
        {
            core.counters.drop(DropReason::UnsupportedProtocol);
            return;
        }
        let payload = &frame[ETHERNET_HEADER_LEN..];
        match ethertype {
            EthernetProtocol::Arp => arp::handle(core, src_mac, payload),
            EthernetProtocol::Ipv4 => {
                self.handle_ipv4(registry, src_mac, payload, checksum, batch, now)
            }
            EthernetProtocol::Ipv6 => {
                self.handle_ipv6(registry, src_mac, payload, checksum, batch, now)
            }
            _ => core.counters.drop(DropReason::UnsupportedProtocol),
        }
        // The frame may have resolved an address frames were held for.
        self.core.ctx(registry, now).release_held();
    }

    fn handle_ipv4(
        &mut self,
        registry: &Registry,
        src_mac: EthernetAddress,
        packet: &[u8],
        checksum: RxChecksum,
        batch: &[u8],
        now: Instant,
    ) {
        let core = &mut self.core;
        let Some((ip, payload)) = check_ipv4(&mut core.counters, packet) else {
            return;
        };
        let src = ip.src_addr();
        let dst = ip.dst_addr();
        let protocol = ip.next_header();
        if src.is_broadcast()
            || src.is_multicast()
            || (!src.is_unspecified() && !core.cfg.in_subnet(src))
        {
            // Spoofed or foreign sources would make replies go astray.
            core.counters.drop(DropReason::Malformed);
            return;
        }
        // An unspecified source (a DHCP client) still marks the guest's MAC
        // as the last one heard from.
        core.neighbours.learn(src, src_mac);
        let broadcast = dst.is_broadcast() || dst == core.cfg.broadcast();
        if dst.is_multicast()
            || (core.cfg.in_subnet(dst)
                && !broadcast
                && !core.cfg.is_virtual(dst)
                && !core.cfg.is_copied_peer(dst))
        {
            core.counters.drop(DropReason::NotForUs);
            return;
        }
        if broadcast && protocol != IpProtocol::Udp {
            core.counters.drop(DropReason::NotForUs);
            return;
        }
        if src.is_unspecified() && protocol != IpProtocol::Udp {
            core.counters.drop(DropReason::Malformed);
            return;
        }
        match protocol {
            IpProtocol::Icmp => icmp::handle(
                &mut core.ctx(registry, now),
                &mut self.ping,
                src,
                dst,
                payload,
            ),
            IpProtocol::Udp => {
                let counters = &mut core.counters;
                if let Some(datagram) =
                    udp::check(counters, src.into(), dst.into(), payload, checksum)
                {
                    for d in datagram.datagrams() {
                        self.handle_udp(registry, src_mac, src, dst, broadcast, d, now);
                    }
                }
            }
            IpProtocol::Tcp => self.tcp.on_guest_segment(
                &mut core.ctx(registry, now),
                src.into(),
                dst.into(),
                payload,
                checksum,
                batch,
            ),
            _ => core.counters.drop(DropReason::UnsupportedProtocol),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_udp(
        &mut self,
        registry: &Registry,
        src_mac: EthernetAddress,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        broadcast: bool,
        datagram: udp::Datagram,
        now: Instant,
    ) {
        let core = &mut self.core;
        let udp::Datagram {
            sport,
            dport,
            payload,
            ..
        } = datagram;
        if dport == DHCP_SERVER_PORT && (broadcast || dst == core.cfg.host) {
            self.handle_dhcp(registry, src_mac, sport, payload, now);
            return;
        }
        if broadcast || src.is_unspecified() {
            core.counters.drop(DropReason::NotForUs);
            return;
        }
        let guest = SocketAddrV4::new(src, sport);
        let remote = SocketAddrV4::new(dst, dport);
        self.udp_outbound(registry, guest.into(), remote.into(), payload, now);
    }

    /// A guest datagram (either family, not DHCP) for the TFTP server, a
    /// flow or a new outbound target: the host, the DNS relay, or refused.
    fn udp_outbound(
        &mut self,
        registry: &Registry,
        guest: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) {
        let core = &mut self.core;
        let to_host = match remote.ip() {
            IpAddr::V4(ip) => ip == core.cfg.host,
            IpAddr::V6(ip) => ip == core.cfg.ipv6.host,
        };
        if let Some(tftp) = self
            .tftp
            .as_mut()
            .filter(|_| to_host && remote.port() == slipway_tftp::TFTP_PORT)
        {
            tftp.on_datagram(&mut core.ctx(registry, now), guest, remote, payload);
            return;
        }
        if let IpAddr::V4(ip) = remote.ip() {
            if core.cfg.services.owns(ip) {
                // SMB and guest-forward servers are TCP only.
                core.counters.drop(DropReason::NotForUs);
                return;
            }
        }
        let mut ctx = core.ctx(registry, now);
        if self.udp.send_on_flow(&mut ctx, guest, remote, payload) {
            return;
        }
        match ctx.cfg.outbound_target(remote) {
            crate::config::Outbound::Dns => self.dns.query(&mut ctx, guest, payload),
            crate::config::Outbound::Host(target) => {
                self.udp.new_flow(&mut ctx, guest, remote, target, payload)
            }
            crate::config::Outbound::Denied(reason) => ctx.counters.drop(reason.drop_reason()),
        }
    }

    fn handle_dhcp(
        &mut self,
        registry: &Registry,
        src_mac: EthernetAddress,
        sport: u16,
        payload: &[u8],
        now: Instant,
    ) {
        let core = &mut self.core;
        if sport != DHCP_CLIENT_PORT {
            core.counters.drop(DropReason::BadDhcp);
            return;
        }
        let reply = match self.dhcp.handle(payload, SystemTime::now()) {
            Ok(Some(reply)) => reply,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(%err, "DHCP request refused");
                core.counters.drop(DropReason::BadDhcp);
                return;
            }
        };
        tracing::info!(kind = ?reply.kind, mac = %src_mac, "DHCP reply");
        if reply.kind == slipway_dhcp::ReplyKind::Ack {
            // The guest may stay silent after its lease (a server waiting
            // for connections); a forward must still reach it.
            if let Some(ip) = yiaddr(&reply.payload) {
                core.neighbours.learn(ip, EthernetAddress(reply.client_mac));
            }
        }
        let (dst_ip, dst_mac) = match reply.destination {
            slipway_dhcp::ReplyDestination::Broadcast => {
                (Ipv4Addr::BROADCAST, EthernetAddress::BROADCAST)
            }
            // The stack is the only host on the link: the client's MAC is
            // the frame's destination either way.
            slipway_dhcp::ReplyDestination::Unicast(ip)
            | slipway_dhcp::ReplyDestination::Assigned(ip) => {
                (ip, EthernetAddress(reply.client_mac))
            }
        };
        let src = SocketAddrV4::new(core.cfg.host, DHCP_SERVER_PORT);
        let dst = SocketAddrV4::new(dst_ip, DHCP_CLIENT_PORT);
        udp::emit(
            &mut core.ctx(registry, now),
            Some(dst_mac),
            src,
            dst,
            &reply.payload,
        );
    }

    /// Handles readiness of a host socket registered under a token of `kind`.
    pub fn handle_host_event(
        &mut self,
        registry: &Registry,
        kind: TokenKind,
        index: usize,
        event: &Event,
        now: Instant,
    ) {
        let mut ctx = self.core.ctx(registry, now);
        match kind {
            TokenKind::TcpFlow | TokenKind::TcpListener => {
                self.tcp.on_host_event(&mut ctx, kind, index, event)
            }
            TokenKind::UdpFlow => self.udp.on_flow_readable(&mut ctx, index),
            TokenKind::UdpListener => self.udp.on_forward_readable(&mut ctx, index),
            TokenKind::Dns => self.dns.on_readable(&mut ctx, index),
            TokenKind::Icmp => self.ping.on_readable(&mut ctx, index),
            // The event loop's own (the link, control, pasta's -T/-U).
            TokenKind::Attach
            | TokenKind::Control
            | TokenKind::NsListener
            | TokenKind::NsTcp
            | TokenKind::NsUdp => {}
        }
    }

    /// Sends what the frames of a batch left waiting (UDP datagrams and
    /// gathered TCP payload to the host); the link calls it after
    /// delivering each batch, with the `batch` buffer it handed the
    /// frames in ([`Stack::handle_frame_batched`]), before it changes it.
    pub(crate) fn end_guest_batch(&mut self, registry: &Registry, now: Instant, batch: &[u8]) {
        let mut ctx = self.core.ctx(registry, now);
        self.udp.flush_sends(&mut ctx);
        self.tcp.end_guest_batch(&mut ctx, batch);
    }

    /// Lets handlers that held back for lack of room toward the guest go on;
    /// the attachment calls it after draining the queue.
    pub fn on_guest_tx_space(&mut self, registry: &Registry, now: Instant) {
        self.tcp
            .on_guest_tx_space(&mut self.core.ctx(registry, now));
        self.udp
            .on_guest_tx_space(&mut self.core.ctx(registry, now));
    }

    /// Runs the timers that are due at `now` (TCP retransmission, UDP idle
    /// flows, DNS retries).
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        let mut ctx = self.core.ctx(registry, now);
        if self.tcp.next_deadline().is_some_and(|d| d <= now) {
            self.tcp.on_timer(&mut ctx);
        }
        if self.udp.next_deadline().is_some_and(|d| d <= now) {
            self.udp.on_timer(&mut ctx);
        }
        if self.dns.next_deadline().is_some_and(|d| d <= now) {
            self.dns.on_timer(&mut ctx);
        }
        if self.ping.next_deadline().is_some_and(|d| d <= now) {
            self.ping.on_timer(&mut ctx);
        }
        if let Some(tftp) = self.tftp.as_mut() {
            if tftp.next_deadline().is_some_and(|d| d <= now) {
                tftp.on_timer(&mut ctx);
            }
        }
        let due = ctx.neighbours.due(now);
        for ip in due.retry {
            ctx.solicit(ip);
        }
        for _ in 0..due.dropped {
            ctx.counters.drop(DropReason::Unresolved);
        }
        self.ipv6_timer(registry, now);
    }

    /// When [`Stack::on_timer`] next needs to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.tcp.next_deadline(),
            self.udp.next_deadline(),
            self.dns.next_deadline(),
            self.tftp.as_ref().and_then(|t| t.next_deadline()),
            self.ping.next_deadline(),
            self.v6.next_deadline(),
            self.core.neighbours.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The `yiaddr` field of a BOOTP message, unless unspecified (INFORM replies).
fn yiaddr(bootp: &[u8]) -> Option<Ipv4Addr> {
    let b = bootp.get(16..20)?;
    let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    (!ip.is_unspecified()).then_some(ip)
}

/// Validates an IPv4 header (version, lengths, checksum, fragments, TTL)
/// and returns the packet with its payload trimmed to the total length
/// (Ethernet pads short frames).
fn check_ipv4<'a>(
    counters: &mut Counters,
    packet: &'a [u8],
) -> Option<(Ipv4Packet<&'a [u8]>, &'a [u8])> {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        counters.drop(DropReason::Truncated);
        return None;
    };
    if ip.version() != 4 || ip.header_len() < 20 {
        // An IHL under 5 (smoltcp takes it) would start the payload inside
        // the addresses.
        counters.drop(DropReason::Malformed);
        return None;
    }
    if !ip.verify_checksum() {
        counters.drop(DropReason::BadChecksum);
        return None;
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        counters.drop(DropReason::Fragment);
        return None;
    }
    if ip.hop_limit() == 0 {
        counters.drop(DropReason::Malformed);
        return None;
    }
    let payload = &packet[usize::from(ip.header_len())..usize::from(ip.total_len())];
    Some((ip, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_options;
    use proptest::prelude::*;
    use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpAddress, UdpPacket};

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn stack(opts: &str) -> (Stack, mio::Poll) {
        let poll = mio::Poll::new().unwrap();
        (Stack::new(parse_options(opts).unwrap()).unwrap(), poll)
    }

    fn feed(stack: &mut Stack, poll: &mio::Poll, frame: &[u8]) {
        stack.handle_frame(poll.registry(), frame, Instant::now());
    }

    /// Who has `target`? asks 10.0.2.15 at GUEST_MAC.
    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[10, 0, 2, 15]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    /// An Ethernet + IPv4 frame from the guest with a valid header checksum.
    fn ipv4_frame(dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = GATEWAY_MAC.as_bytes().to_vec();
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + payload.len()) as u16;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            protocol,
            0,
            0,
        ];
        ip.extend_from_slice(&[10, 0, 2, 15]);
        ip.extend_from_slice(&dst);
        Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
        f.extend_from_slice(&ip);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn arp_for_the_host_address_gets_this_exact_reply() {
        let (mut s, poll) = stack("");
        feed(&mut s, &poll, &arp_request([10, 0, 2, 2]));
        assert_eq!(s.guest_tx().len(), 1);
        let reply = s.guest_tx().frame(0).to_vec();
        let mut want = GUEST_MAC.to_vec();
        want.extend_from_slice(&[0x52, 0x55, 10, 0, 2, 2, 0x08, 0x06]);
        want.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&[0x52, 0x55, 10, 0, 2, 2, 10, 0, 2, 2]);
        want.extend_from_slice(&GUEST_MAC);
        want.extend_from_slice(&[10, 0, 2, 15]);
        assert_eq!(reply, want);
    }

    #[test]
    fn arp_for_dns_answered_but_not_for_pool_or_outside() {
        let (mut s, poll) = stack("");
        feed(&mut s, &poll, &arp_request([10, 0, 2, 3]));
        assert_eq!(s.guest_tx().len(), 1);
        assert_eq!(&s.guest_tx().frame(0)[28..32], &[10, 0, 2, 3]);
        s.guest_tx().clear();
        for target in [
            [10, 0, 2, 15],
            [10, 0, 2, 16],
            [10, 0, 2, 99],
            [192, 168, 1, 1],
        ] {
            feed(&mut s, &poll, &arp_request(target));
        }
        assert!(s.guest_tx().is_empty());
    }

    #[test]
    fn bad_frames_are_counted_by_reason() {
        let (mut s, poll) = stack("");
        feed(&mut s, &poll, &[0u8; 10]);
        assert_eq!(s.counters().drops(DropReason::Truncated), 1);

        let mut bad_sum = ipv4_frame([10, 0, 2, 2], 1, &[8, 0, 0, 0, 0, 0, 0, 0]);
        bad_sum[24] ^= 0xff;
        feed(&mut s, &poll, &bad_sum);
        assert_eq!(s.counters().drops(DropReason::BadChecksum), 1);

        let mut fragment = ipv4_frame([10, 0, 2, 2], 17, &[0; 16]);
        fragment[20] = 0x20; // more fragments
        let mut ip = Ipv4Packet::new_unchecked(&mut fragment[14..]);
        ip.fill_checksum();
        feed(&mut s, &poll, &fragment);
        assert_eq!(s.counters().drops(DropReason::Fragment), 1);

        let mut short = ipv4_frame([10, 0, 2, 2], 17, &[0; 16]);
        short.truncate(14 + 20 + 4);
        feed(&mut s, &poll, &short);
        assert_eq!(s.counters().drops(DropReason::Truncated), 2);

        let mut bad_version = ipv4_frame([10, 0, 2, 2], 17, &[0; 8]);
        bad_version[14] = 0x65;
        Ipv4Packet::new_unchecked(&mut bad_version[14..]).fill_checksum();
        feed(&mut s, &poll, &bad_version);
        assert_eq!(s.counters().drops(DropReason::Malformed), 1);

        // IHL below 5 (a 16-byte header overlapping the destination
        // address, the checksum covering those 16 bytes): malformed, not
        // a packet whose payload starts inside its header.
        for ihl in [0u8, 4] {
            let mut short_header = ipv4_frame([10, 0, 2, 2], 1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
            short_header[14] = 0x40 | ihl;
            Ipv4Packet::new_unchecked(&mut short_header[14..]).fill_checksum();
            feed(&mut s, &poll, &short_header);
        }
        assert_eq!(s.counters().drops(DropReason::Malformed), 3);

        // An IPv4 packet under the IPv6 EtherType is too short for IPv6.
        let mut ipv6 = ipv4_frame([10, 0, 2, 2], 17, &[0; 8]);
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        feed(&mut s, &poll, &ipv6);
        assert_eq!(s.counters().drops(DropReason::Truncated), 3);
        let mut ipx = ipv4_frame([10, 0, 2, 2], 17, &[0; 8]);
        ipx[12..14].copy_from_slice(&[0x81, 0x37]);
        feed(&mut s, &poll, &ipx);
        assert_eq!(s.counters().drops(DropReason::UnsupportedProtocol), 1);

        // UDP with a wrong checksum.
        let mut udp = [0u8; 12];
        {
            let mut p = UdpPacket::new_unchecked(&mut udp[..]);
            p.set_src_port(1000);
            p.set_dst_port(2000);
            p.set_len(12);
            p.fill_checksum(&IpAddress::v4(10, 0, 2, 15), &IpAddress::v4(10, 0, 2, 2));
        }
        udp[6] ^= 1;
        feed(&mut s, &poll, &ipv4_frame([10, 0, 2, 2], 17, &udp));
        assert_eq!(s.counters().drops(DropReason::BadChecksum), 2);
        assert!(s.guest_tx().is_empty());
        assert_eq!(s.counters().frames_in, 10);
    }

    #[test]
    fn echo_to_host_is_answered_and_elsewhere_dropped() {
        // Under restrict the host address answers itself and no echo
        // leaves through a host ping socket.
        let (mut s, poll) = stack("restrict=on");
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
        feed(&mut s, &poll, &ipv4_frame([10, 0, 2, 2], 1, &icmp));
        assert_eq!(s.guest_tx().len(), 1);
        let reply = s.guest_tx().frame(0).to_vec();
        assert_eq!(&reply[..6], &GUEST_MAC);
        let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 2, 15));
        let echo = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(echo.verify_checksum());
        assert_eq!(echo.msg_type(), Icmpv4Message::EchoReply);
        assert_eq!(&ip.payload()[4..], &icmp[4..]);
        s.guest_tx().clear();
        feed(&mut s, &poll, &ipv4_frame([192, 0, 2, 1], 1, &icmp));
        assert!(s.guest_tx().is_empty());
        assert_eq!(s.counters().drops(DropReason::Restricted), 1);
    }

    /// A DHCPDISCOVER from GUEST_MAC, broadcast.
    fn dhcp_discover() -> Vec<u8> {
        let mut bootp = vec![0u8; 240];
        bootp[..4].copy_from_slice(&[1, 1, 6, 0]);
        bootp[4..8].copy_from_slice(&[1, 2, 3, 4]);
        bootp[28..34].copy_from_slice(&GUEST_MAC);
        bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
        bootp.extend_from_slice(&[53, 1, 1, 255]);
        let len = 8 + bootp.len();
        let mut udp = vec![0u8; len];
        {
            let mut p = UdpPacket::new_unchecked(&mut udp[..]);
            p.set_src_port(68);
            p.set_dst_port(67);
            p.set_len(len as u16);
            p.payload_mut().copy_from_slice(&bootp);
            p.fill_checksum(
                &IpAddress::v4(0, 0, 0, 0),
                &IpAddress::v4(255, 255, 255, 255),
            );
        }
        let mut f = ipv4_frame([255, 255, 255, 255], 17, &udp);
        f[..6].copy_from_slice(&[0xff; 6]);
        f[26..30].copy_from_slice(&[0, 0, 0, 0]);
        Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        f
    }

    #[test]
    fn dhcp_discover_gets_an_offer_of_the_first_pool_address() {
        let (mut s, poll) = stack("restrict=on");
        feed(&mut s, &poll, &dhcp_discover());
        assert_eq!(s.guest_tx().len(), 1, "{:?}", s.counters());
        // An offered address is not the guest's yet (the acknowledgement
        // teaches it; until then the stack would ask who has it).
        assert_eq!(s.core.neighbours.lookup(Ipv4Addr::new(10, 0, 2, 15)), None);
        let reply = s.guest_tx().frame(0).to_vec();
        let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 2, 2));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ));
        assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
        let bootp = udp.payload();
        assert_eq!(&bootp[16..20], &[10, 0, 2, 15], "yiaddr");
        // restrict=on: neither router (3) nor DNS (6) options.
        let options = &bootp[240..];
        let mut i = 0;
        while i < options.len() && options[i] != 255 {
            if options[i] == 0 {
                i += 1;
                continue;
            }
            assert!(
                options[i] != 3 && options[i] != 6,
                "option {} sent under restrict",
                options[i]
            );
            i += 2 + usize::from(options[i + 1]);
        }
    }

    #[test]
    fn dns_without_upstream_gets_servfail() {
        let (mut s, poll) = stack("");
        s.start(poll.registry()).unwrap();
        let mut query = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        let len = 8 + query.len();
        let mut udp = vec![0u8; len];
        {
            let mut p = UdpPacket::new_unchecked(&mut udp[..]);
            p.set_src_port(5353);
            p.set_dst_port(53);
            p.set_len(len as u16);
            p.payload_mut().copy_from_slice(&query);
            p.fill_checksum(&IpAddress::v4(10, 0, 2, 15), &IpAddress::v4(10, 0, 2, 3));
        }
        feed(&mut s, &poll, &ipv4_frame([10, 0, 2, 3], 17, &udp));
        assert_eq!(s.guest_tx().len(), 1);
        let reply = s.guest_tx().frame(0).to_vec();
        let answer = &reply[14 + 20 + 8..];
        assert_eq!(&answer[..4], &[0xab, 0xcd, 0x81, 0x82]);
    }

    proptest! {
        #[test]
        fn random_frames_never_panic_and_arp_still_works(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
            mutate in prop::collection::vec((0usize..120, any::<u8>()), 0..8),
        ) {
            let (mut s, poll) = stack("");
            for f in &frames {
                feed(&mut s, &poll, f);
            }
            // Valid-looking frames with random damage reach deeper layers.
            for base in [arp_request([10, 0, 2, 2]), dhcp_discover(), ipv4_frame([10, 0, 2, 2], 1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0])] {
                let mut f = base.clone();
                for (at, byte) in &mutate {
                    if *at < f.len() {
                        f[*at] = *byte;
                    }
                }
                feed(&mut s, &poll, &f);
            }
            s.guest_tx().clear();
            feed(&mut s, &poll, &arp_request([10, 0, 2, 2]));
            prop_assert_eq!(s.guest_tx().len(), 1);
        }
    }
}

/// A stack with the default options, started (its host sockets
/// registered with the returned poll), for other modules' unit tests.
#[cfg(test)]
pub(crate) fn started_for_tests() -> (Stack, mio::Poll) {
    let poll = mio::Poll::new().unwrap();
    let mut stack = Stack::new(crate::options::parse_options("").unwrap()).unwrap();
    stack.start(poll.registry()).unwrap();
    (stack, poll)
}

#[cfg(test)]
pub(crate) mod udp_tests {
    use super::*;
    use crate::options::parse_options;
    use smoltcp::wire::{IpAddress, UdpPacket};
    use std::time::Duration;

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A guest UDP datagram from 10.0.2.15:`sport` to `dst`:`dport`.
    pub(crate) fn udp_frame(sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let src = Ipv4Addr::new(10, 0, 2, 15);
        ip_frame(
            GUEST_MAC,
            src,
            dst,
            IpProtocol::Udp,
            8 + payload.len(),
            |seg| {
                let len = seg.len();
                let mut udp = UdpPacket::new_unchecked(seg);
                udp.set_src_port(sport);
                udp.set_dst_port(dport);
                udp.set_len(len as u16);
                udp.payload_mut().copy_from_slice(payload);
                udp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
            },
        )
    }

    /// A guest IPv4 frame from `mac` at `src` to `dst` with a `len`-byte
    /// payload that `fill` writes (with its checksum).
    fn ip_frame(
        mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + len];
        f[..6].copy_from_slice(GATEWAY_MAC.as_bytes());
        f[6..12].copy_from_slice(&mac);
        f[12..14].copy_from_slice(&[0x08, 0]);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len((20 + len) as u16);
            ip.set_hop_limit(64);
            ip.set_next_header(protocol);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
        }
        fill(&mut f[34..]);
        f
    }

    /// Runs the stack's host side until a frame is queued toward the guest.
    pub(super) fn pump_host(stack: &mut Stack, poll: &mut mio::Poll) {
        let mut events = mio::Events::with_capacity(16);
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            for ev in events.iter() {
                if let Some((kind, index)) = crate::iface::decode_token(ev.token()) {
                    stack.handle_host_event(poll.registry(), kind, index, ev, Instant::now());
                }
            }
            if !stack.guest_tx().is_empty() {
                return;
            }
        }
        panic!("nothing came back from the host");
    }

    /// A started stack with a UDP host forward from a free port of
    /// 127.0.0.1 to the guest's port 7777, and that host port.
    fn started_with_udp_forward(poll: &mio::Poll) -> (Stack, u16) {
        let port = {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut stack =
            Stack::new(parse_options(&format!("hostfwd=udp:127.0.0.1:{port}-:7777")).unwrap())
                .unwrap();
        stack.start(poll.registry()).unwrap();
        (stack, port)
    }

    /// Turns UDP_GRO on for `sock`: the kernel hands it coalesced runs
    /// of datagrams with their segment size in a control message.
    fn enable_gro(sock: &std::net::UdpSocket) {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int it reads, on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(rc, 0, "UDP_GRO: {}", std::io::Error::last_os_error());
    }

    fn echo_server() -> (std::net::UdpSocket, u16) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        (s, port)
    }

    #[test]
    fn host_address_flow_round_trips_through_loopback() {
        let mut poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        let (server, port) = echo_server();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        stack.handle_frame(poll.registry(), &arp_from_guest(), Instant::now());
        stack.guest_tx().clear();
        stack.handle_frame(
            poll.registry(),
            &udp_frame(4000, host, port, b"ping"),
            Instant::now(),
        );
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong!", from).unwrap();
        pump_host(&mut stack, &mut poll);
        let frame = stack.guest_tx().frame(0).to_vec();
        assert_eq!(&frame[..6], &GUEST_MAC);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(
            ip.src_addr(),
            host,
            "replies come from the address the guest used"
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ));
        assert_eq!((udp.src_port(), udp.dst_port()), (port, 4000));
        assert_eq!(udp.payload(), b"pong!");
    }

    /// Reads one datagram (or one GRO'd run of them) from `sock`, whose
    /// `UDP_GRO` is on: its bytes and the segment size the kernel reports
    /// (None: a single datagram).
    fn recv_gro(sock: &std::net::UdpSocket) -> (Vec<u8>, Option<u16>) {
        use std::os::fd::AsRawFd;
        let mut buf = vec![0u8; 65535];
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr pointed at live local buffers.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
            assert!(n >= 0, "{}", std::io::Error::last_os_error());
            let mut seg = None;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    seg = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u16>()));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            (n as usize, seg)
        };
        buf.truncate(n.0);
        (buf, n.1)
    }

    /// Datagrams of one flow delivered in one batch of the link leave in
    /// one GSO send (the receiver, with `UDP_GRO` on, gets them as one run
    /// of 1000-byte segments), datagrams of another size after them in the
    /// next, and a lone one as it is; without `UDP_GRO` the receiver sees
    /// every datagram with its own size and bytes.
    #[test]
    fn guest_datagrams_of_a_batch_leave_in_one_gso_send() {
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        let reg = poll.registry().try_clone().unwrap();
        let now = Instant::now();
        stack.handle_frame(&reg, &arp_from_guest(), now);
        let payload =
            |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| (i * 31 + j) as u8).collect() };
        let sizes = [1000, 1000, 1000, 1000, 300, 600, 600, 77];
        for gro in [true, false] {
            let (server, port) = echo_server();
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            if gro {
                enable_gro(&server);
            }
            for (i, &len) in sizes.iter().enumerate() {
                let frame = udp_frame(4100, host, port, &payload(i, len));
                stack.handle_frame_batched(&reg, &frame, RxChecksum::Unverified, &[], now);
            }
            stack.end_guest_batch(&reg, now, &[]);
            let mut got = Vec::new();
            if gro {
                // 4 x 1000 and the 300 that ends the run; 2 x 600 and the
                // 77 that ends the next.
                let (run, seg) = recv_gro(&server);
                assert_eq!((run.len(), seg), (4300, Some(1000)));
                got.extend(run);
                let (run, seg) = recv_gro(&server);
                assert_eq!((run.len(), seg), (1277, Some(600)));
                got.extend(run);
            } else {
                let mut buf = [0u8; 2048];
                for &len in &sizes {
                    let n = server.recv(&mut buf).unwrap();
                    assert_eq!(n, len, "each datagram keeps its size");
                    got.extend_from_slice(&buf[..n]);
                }
            }
            let sent: Vec<u8> = sizes
                .iter()
                .enumerate()
                .flat_map(|(i, &len)| payload(i, len))
                .collect();
            assert!(got == sent, "the bytes, in order (GRO {gro})");
            // A lone datagram goes as it is.
            stack.handle_frame(&reg, &udp_frame(4100, host, port, b"lone"), now);
            let (one, seg) = if gro {
                recv_gro(&server)
            } else {
                let mut buf = [0u8; 16];
                let n = server.recv(&mut buf).unwrap();
                (buf[..n].to_vec(), None)
            };
            assert_eq!((one.as_slice(), seg), (&b"lone"[..], None));
        }
    }

    /// The ICMP error an earlier datagram drew (nothing listened) is
    /// reported by the next send, which then sends nothing: the batch is
    /// sent again and arrives once something listens.
    #[test]
    fn a_batch_after_an_icmp_error_still_arrives() {
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        let reg = poll.registry().try_clone().unwrap();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        let now = Instant::now();
        stack.handle_frame(&reg, &arp_from_guest(), now);
        let (closed, port) = echo_server();
        drop(closed);
        stack.handle_frame(&reg, &udp_frame(4300, host, port, b"nobody"), now);
        let server = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for i in 0..3u8 {
            let frame = udp_frame(4300, host, port, &[i; 500]);
            stack.handle_frame_batched(&reg, &frame, RxChecksum::Unverified, &[], now);
        }
        stack.end_guest_batch(&reg, now, &[]);
        let mut buf = [0u8; 1024];
        for i in 0..3u8 {
            let n = server.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 500][..]);
        }
    }

    /// Toward a tap with virtio-net headers, replies waiting together on a
    /// flow's socket leave as one UDP GSO frame: one UDP header, the
    /// payloads back to back, `VIRTIO_NET_HDR_GSO_UDP_L4` with the first
    /// datagram's size, the checksum left to the receiver (the
    /// pseudo-header sum in place).
    #[test]
    fn waiting_replies_leave_as_one_udp_offload_frame() {
        use crate::wire::framing::{VIRTIO_NET_HDR_GSO_UDP_L4, VNET_HDR_LEN};
        let mut poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        stack.guest_tx().enable_offload();
        let (server, port) = echo_server();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        stack.handle_frame(poll.registry(), &arp_from_guest(), Instant::now());
        stack.guest_tx().clear();
        let frame = udp_frame(4200, host, port, b"go");
        stack.handle_frame(poll.registry(), &frame, Instant::now());
        let mut buf = [0u8; 16];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        let sizes = [900, 900, 900, 400];
        let mut sent = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let d: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            server.send_to(&d, from).unwrap();
            sent.extend(d);
        }
        pump_host(&mut stack, &mut poll);
        assert_eq!(stack.guest_tx().len(), 1, "one frame for the four");
        let framed = stack.guest_tx().frame_with_vnet_hdr(0).to_vec();
        let (vnet, frame) = framed.split_at(VNET_HDR_LEN);
        let le = |at: usize| u16::from_le_bytes([vnet[at], vnet[at + 1]]);
        assert_eq!(vnet[0], 1, "NEEDS_CSUM");
        assert_eq!(vnet[1], VIRTIO_NET_HDR_GSO_UDP_L4);
        assert_eq!((le(2), le(4), le(6), le(8)), (14 + 20 + 8, 900, 14 + 20, 6));
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (port, 4200));
        assert_eq!(usize::from(udp.len()), 8 + sent.len());
        assert!(udp.payload() == sent.as_slice());
        // What the receiver completes: the sum from the UDP header on.
        let mut whole = ip.payload().to_vec();
        let mut sum: u32 = whole
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        whole[6..8].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        assert!(UdpPacket::new_unchecked(&whole[..]).verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ));
    }

    fn arp_from_guest() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
        f
    }

    #[test]
    fn flow_count_is_capped_and_idle_flows_close() {
        let poll = mio::Poll::new().unwrap();
        let mut cfg = parse_options("").unwrap();
        cfg.limits.max_udp_flows = 2;
        cfg.limits.udp_idle_timeout_secs = 5;
        let mut stack = Stack::new(cfg).unwrap();
        let (server, port) = echo_server();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        let t0 = Instant::now();
        for sport in [4000, 4001, 4002] {
            stack.handle_frame(poll.registry(), &udp_frame(sport, host, port, b"x"), t0);
        }
        assert_eq!(stack.counters().drops(DropReason::FlowLimit), 1);
        let mut buf = [0u8; 4];
        for _ in 0..2 {
            server.recv_from(&mut buf).unwrap();
        }
        // Reusing an open flow is no new flow.
        stack.handle_frame(poll.registry(), &udp_frame(4000, host, port, b"y"), t0);
        assert_eq!(stack.counters().drops(DropReason::FlowLimit), 1);
        // After the idle timeout the flows are gone and a new one fits.
        let later = t0 + Duration::from_secs(6);
        stack.on_timer(poll.registry(), later);
        stack.handle_frame(poll.registry(), &udp_frame(4002, host, port, b"z"), later);
        assert_eq!(stack.counters().drops(DropReason::FlowLimit), 1);
    }

    /// A tap with checksum offload hands over UDP and TCP with only the
    /// pseudo-header sum in the checksum field: taken when the virtio-net
    /// header vouches for it, a bad checksum otherwise.
    #[test]
    fn partial_checksums_pass_only_when_the_link_vouches_for_them() {
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        let (server, port) = echo_server();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        let mut frame = udp_frame(4000, host, port, b"partial");
        // Anything but the full sum (the pseudo-header sum alone, here one
        // bit off) fails verification.
        frame[40] ^= 1;
        let now = Instant::now();
        stack.handle_frame(poll.registry(), &frame, now);
        assert_eq!(stack.counters().drops(DropReason::BadChecksum), 1);
        let trusted = RxChecksum::from_vnet_hdr(&[1, 0, 0, 0, 0, 0, 34, 0, 6, 0]);
        assert_eq!(trusted, RxChecksum::Trusted);
        stack.handle_frame_with(poll.registry(), &frame, trusted, now);
        assert_eq!(stack.counters().drops(DropReason::BadChecksum), 1);
        let mut buf = [0u8; 16];
        let (n, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"partial");
        // A header without NEEDS_CSUM or DATA_VALID vouches for nothing.
        assert_eq!(RxChecksum::from_vnet_hdr(&[0; 10]), RxChecksum::Unverified);
        assert_eq!(
            RxChecksum::from_vnet_hdr(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            RxChecksum::Trusted
        );
        assert_eq!(RxChecksum::from_vnet_hdr(&[]), RxChecksum::Unverified);
    }

    /// A guest TCP SYN from 10.0.2.15:40000 to `dst`:`dport`.
    fn tcp_syn_frame(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        use smoltcp::wire::{TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};
        let src = Ipv4Addr::new(10, 0, 2, 15);
        let repr = TcpRepr {
            src_port: 40000,
            dst_port: dport,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1000),
            ack_number: None,
            window_len: 64240,
            window_scale: None,
            max_seg_size: Some(1460),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        ip_frame(
            GUEST_MAC,
            src,
            dst,
            IpProtocol::Tcp,
            repr.buffer_len(),
            |seg| {
                repr.emit(
                    &mut TcpPacket::new_unchecked(seg),
                    &IpAddress::Ipv4(src),
                    &IpAddress::Ipv4(dst),
                    &smoltcp::phy::ChecksumCapabilities::default(),
                )
            },
        )
    }

    /// With `--no-host-loopback` no guest packet reaches the host's
    /// loopback, addressed to the host address or to 127/8 itself: UDP is
    /// dropped, a SYN answered with RST, an echo request dropped, each
    /// counted as `host-loopback`. Without the option 127.0.0.5 is reached.
    #[test]
    fn no_host_loopback_refuses_loopback_destinations_for_every_protocol() {
        let loopback = Ipv4Addr::new(127, 0, 0, 5);
        let udp_server = std::net::UdpSocket::bind((loopback, 0)).unwrap();
        udp_server.set_nonblocking(true).unwrap();
        let udp_port = udp_server.local_addr().unwrap().port();
        let tcp_server = std::net::TcpListener::bind((loopback, 0)).unwrap();
        tcp_server.set_nonblocking(true).unwrap();
        let tcp_port = tcp_server.local_addr().unwrap().port();

        let mut poll = mio::Poll::new().unwrap();
        let mut cfg = parse_options("").unwrap();
        cfg.host_loopback = false;
        let mut stack = Stack::new(cfg).unwrap();
        stack.start(poll.registry()).unwrap();
        stack.handle_frame(poll.registry(), &arp_from_guest(), Instant::now());
        stack.guest_tx().clear();
        for dst in [loopback, Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 2, 2)] {
            stack.handle_frame(
                poll.registry(),
                &udp_frame(4000, dst, udp_port, b"x"),
                Instant::now(),
            );
        }
        assert_eq!(stack.counters().drops(DropReason::HostLoopback), 3);
        stack.handle_frame(
            poll.registry(),
            &tcp_syn_frame(loopback, tcp_port),
            Instant::now(),
        );
        assert_eq!(stack.counters().drops(DropReason::HostLoopback), 4);
        let frame = stack.guest_tx().frame(0).to_vec();
        stack.guest_tx().clear();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(ip.src_addr(), loopback);
        let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.rst(), "a refused SYN gets a RST");
        let mut echo = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        smoltcp::wire::Icmpv4Packet::new_unchecked(&mut echo[..]).fill_checksum();
        stack.handle_frame(
            poll.registry(),
            &ip_frame(
                GUEST_MAC,
                Ipv4Addr::new(10, 0, 2, 15),
                Ipv4Addr::LOCALHOST,
                IpProtocol::Icmp,
                echo.len(),
                |p| p.copy_from_slice(&echo),
            ),
            Instant::now(),
        );
        assert_eq!(stack.counters().drops(DropReason::HostLoopback), 5);
        assert!(stack.guest_tx().is_empty());
        let mut buf = [0u8; 4];
        assert!(udp_server.recv_from(&mut buf).is_err(), "no datagram came");
        assert!(tcp_server.accept().is_err(), "no connection came");

        // Without the option the same datagram arrives (unchanged behaviour).
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        stack.handle_frame(
            poll.registry(),
            &udp_frame(4000, loopback, udp_port, b"y"),
            Instant::now(),
        );
        udp_server.set_nonblocking(false).unwrap();
        let (n, _) = udp_server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"y");
        assert_eq!(stack.counters().drops(DropReason::HostLoopback), 0);
        let _ = &mut poll;
    }

    #[test]
    fn udp_to_tcp_only_service_addresses_is_dropped() {
        let poll = mio::Poll::new().unwrap();
        let mut stack =
            Stack::new(parse_options("guestfwd=tcp:10.0.2.100:7-cmd:cat").unwrap()).unwrap();
        stack.handle_frame(
            poll.registry(),
            &udp_frame(4000, Ipv4Addr::new(10, 0, 2, 100), 7, b"x"),
            Instant::now(),
        );
        assert_eq!(stack.counters().drops(DropReason::NotForUs), 1);
        assert!(stack.guest_tx().is_empty());
    }

    #[test]
    fn restrict_blocks_new_udp_flows() {
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("restrict=on").unwrap()).unwrap();
        let (server, port) = echo_server();
        server.set_nonblocking(true).unwrap();
        stack.handle_frame(
            poll.registry(),
            &udp_frame(4000, Ipv4Addr::new(10, 0, 2, 2), port, b"x"),
            Instant::now(),
        );
        stack.handle_frame(
            poll.registry(),
            &udp_frame(4000, Ipv4Addr::new(10, 0, 2, 3), 53, b"x"),
            Instant::now(),
        );
        assert_eq!(stack.counters().drops(DropReason::Restricted), 2);
        let mut buf = [0u8; 4];
        assert!(server.recv_from(&mut buf).is_err());
    }

    #[test]
    fn udp_forward_relays_both_ways_per_peer() {
        let mut poll = mio::Poll::new().unwrap();
        let (mut stack, port) = started_with_udp_forward(&poll);
        stack.handle_frame(poll.registry(), &arp_from_guest(), Instant::now());
        stack.guest_tx().clear();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client_port = client.local_addr().unwrap().port();
        client.send_to(b"hi", ("127.0.0.1", port)).unwrap();
        pump_host(&mut stack, &mut poll);
        let frame = stack.guest_tx().frame(0).to_vec();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(
            ip.src_addr(),
            Ipv4Addr::new(10, 0, 2, 2),
            "loopback peers appear as the host address"
        );
        assert_eq!(
            ip.dst_addr(),
            Ipv4Addr::new(10, 0, 2, 15),
            "the first DHCP address by default"
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (client_port, 7777));
        assert_eq!(udp.payload(), b"hi");
        stack.handle_frame(
            poll.registry(),
            &udp_frame(7777, Ipv4Addr::new(10, 0, 2, 2), client_port, b"yo"),
            Instant::now(),
        );
        let mut buf = [0u8; 8];
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"yo");
        assert_eq!(
            from.port(),
            port,
            "the reply leaves through the forward's socket"
        );
    }

    /// A VM that leaves a shared link takes its flows with it: its TCP
    /// connection's host socket is reset and its UDP flow dropped at once,
    /// while another VM's flows stay.
    #[test]
    fn a_departed_vms_flows_close_and_the_others_stay() {
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        let (_server, port) = echo_server();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_port = listener.local_addr().unwrap().port();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        const B_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
        let b = Ipv4Addr::new(10, 0, 2, 16);
        let now = Instant::now();
        // VM A: a UDP flow and a TCP connection; VM B: a UDP flow.
        stack.handle_frame(poll.registry(), &udp_frame(4000, host, port, b"a"), now);
        let a = Ipv4Addr::new(10, 0, 2, 15);
        let syn = ip_frame(GUEST_MAC, a, host, IpProtocol::Tcp, 20, |seg| {
            let mut tcp = smoltcp::wire::TcpPacket::new_unchecked(seg);
            tcp.set_src_port(5000);
            tcp.set_dst_port(tcp_port);
            tcp.set_seq_number(smoltcp::wire::TcpSeqNumber(1));
            tcp.set_header_len(20);
            tcp.clear_flags();
            tcp.set_syn(true);
            tcp.set_window_len(65535);
            tcp.fill_checksum(&IpAddress::Ipv4(a), &IpAddress::Ipv4(host));
        });
        stack.handle_frame(poll.registry(), &syn, now);
        let from_b = ip_frame(B_MAC, b, host, IpProtocol::Udp, 9, |seg| {
            let mut udp = UdpPacket::new_unchecked(seg);
            udp.set_src_port(4000);
            udp.set_dst_port(port);
            udp.set_len(9);
            udp.payload_mut().copy_from_slice(b"b");
            udp.fill_checksum(&IpAddress::Ipv4(b), &IpAddress::Ipv4(host));
        });
        stack.handle_frame(poll.registry(), &from_b, now);
        assert_eq!(stack.udp.flows(now).count(), 2);
        assert_eq!(stack.tcp.len(), 1, "{:?}", stack.counters());
        stack.forget_guest(poll.registry(), EthernetAddress(GUEST_MAC));
        assert_eq!(stack.tcp.len(), 0, "A's connection is gone");
        let left: Vec<_> = stack.udp.flows(now).map(|f| f.guest).collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].ip(), std::net::IpAddr::V4(b), "B's flow stays");
    }

    /// A free UDP port on loopback of `family`.
    fn free_udp_port(bind: &str) -> u16 {
        let probe = std::net::UdpSocket::bind(bind).unwrap();
        probe.local_addr().unwrap().port()
    }

    /// Several VMs on the link: a datagram for a guest address nobody has
    /// been heard from is held while the stack asks for it (not sent to the
    /// VM heard from last), released to the VM that answers, and dropped
    /// and counted when nobody answers.
    #[test]
    fn unknown_guest_addresses_are_resolved_not_guessed() {
        let mut poll = mio::Poll::new().unwrap();
        let (p1, p2, p6) = (
            free_udp_port("127.0.0.1:0"),
            free_udp_port("127.0.0.1:0"),
            free_udp_port("[::1]:0"),
        );
        let mut stack = Stack::new(
            parse_options(&format!(
                "hostfwd=udp:127.0.0.1:{p1}-10.0.2.20:7777,hostfwd=udp:127.0.0.1:{p2}-10.0.2.21:7777,\
                 hostfwd=udp:[::1]:{p6}-[fec0::99]:7777"
            ))
            .unwrap(),
        )
        .unwrap();
        stack.start(poll.registry()).unwrap();
        // VM A (10.0.2.15) speaks; the forward's guest is another VM.
        stack.handle_frame(poll.registry(), &arp_from_guest(), Instant::now());
        stack.guest_tx().clear();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hi", ("127.0.0.1", p1)).unwrap();
        pump_host(&mut stack, &mut poll);
        assert_eq!(stack.guest_tx().len(), 1);
        let req = stack.guest_tx().frame(0).to_vec();
        stack.guest_tx().clear();
        assert_eq!(&req[..6], &[0xff; 6], "an ARP request, broadcast");
        assert_eq!(&req[12..14], &[0x08, 0x06]);
        assert_eq!(&req[20..22], &[0, 1], "request");
        assert_eq!(&req[28..32], &[10, 0, 2, 2], "asked by the host address");
        assert_eq!(&req[38..42], &[10, 0, 2, 20], "for the forward's guest");
        // VM C answers from 10.0.2.20: the held datagram goes to it.
        const C: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0c];
        let mut reply = GATEWAY_MAC.as_bytes().to_vec();
        reply.extend_from_slice(&C);
        reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        reply.extend_from_slice(&C);
        reply.extend_from_slice(&[10, 0, 2, 20]);
        reply.extend_from_slice(GATEWAY_MAC.as_bytes());
        reply.extend_from_slice(&[10, 0, 2, 2]);
        stack.handle_frame(poll.registry(), &reply, Instant::now());
        assert_eq!(stack.guest_tx().len(), 1);
        let frame = stack.guest_tx().frame(0).to_vec();
        stack.guest_tx().clear();
        assert_eq!(&frame[..6], &C);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 2, 20));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ));
        assert_eq!(udp.payload(), b"hi");
        // IPv6: a neighbour solicitation to the solicited-node group.
        let client6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client6.send_to(b"hi6", ("::1", p6)).unwrap();
        pump_host(&mut stack, &mut poll);
        let ns = stack.guest_tx().frame(0).to_vec();
        stack.guest_tx().clear();
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 0x99]);
        let ip6 = smoltcp::wire::Ipv6Packet::new_checked(&ns[14..]).unwrap();
        assert_eq!(
            ip6.dst_addr(),
            "ff02::1:ff00:99".parse::<std::net::Ipv6Addr>().unwrap()
        );
        let icmp = smoltcp::wire::Icmpv6Packet::new_checked(ip6.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip6.src_addr(), &ip6.dst_addr()));
        assert_eq!(
            icmp.msg_type(),
            smoltcp::wire::Icmpv6Message::NeighborSolicit
        );
        assert_eq!(
            &ip6.payload()[8..24],
            &"fec0::99".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        // Nobody answers for 10.0.2.21 (nor fec0::99): asked three times,
        // then the datagrams are dropped and counted.
        client.send_to(b"lost", ("127.0.0.1", p2)).unwrap();
        pump_host(&mut stack, &mut poll);
        stack.guest_tx().clear();
        let t0 = Instant::now();
        for s in 1..=2 {
            stack.on_timer(poll.registry(), t0 + Duration::from_secs(s));
            assert_eq!(stack.guest_tx().len(), 2, "both asked again");
            stack.guest_tx().clear();
        }
        assert_eq!(stack.counters().drops(DropReason::Unresolved), 0);
        stack.on_timer(poll.registry(), t0 + Duration::from_secs(3));
        assert!(stack.guest_tx().is_empty());
        assert_eq!(stack.counters().drops(DropReason::Unresolved), 2);
        assert_eq!(stack.core.neighbours.next_deadline(), None);
    }

    #[test]
    fn dns_query_moves_to_the_next_upstream_on_timeout() {
        let mut poll = mio::Poll::new().unwrap();
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (answering, _) = echo_server();
        let mut cfg = parse_options("").unwrap();
        cfg.dns_upstreams = vec![
            silent.local_addr().unwrap(),
            answering.local_addr().unwrap(),
        ];
        let mut stack = Stack::new(cfg).unwrap();
        stack.start(poll.registry()).unwrap();
        stack.handle_frame(poll.registry(), &arp_from_guest(), Instant::now());
        stack.guest_tx().clear();
        let mut query = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        let t0 = Instant::now();
        stack.handle_frame(
            poll.registry(),
            &udp_frame(5353, Ipv4Addr::new(10, 0, 2, 3), 53, &query),
            t0,
        );
        let mut buf = [0u8; 512];
        let (n, _) = silent.recv_from(&mut buf).unwrap();
        assert_eq!(
            &buf[2..n],
            &query[2..],
            "the query is relayed unchanged but for its ID"
        );
        assert!(stack.next_deadline().is_some());
        stack.on_timer(poll.registry(), t0 + Duration::from_secs(3));
        let (n, from) = answering.recv_from(&mut buf).unwrap();
        // Answer: the same message with QR set.
        buf[2] |= 0x80;
        answering.send_to(&buf[..n], from).unwrap();
        pump_host(&mut stack, &mut poll);
        let frame = stack.guest_tx().frame(0).to_vec();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 2, 3));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (53, 5353));
        assert_eq!(
            &udp.payload()[..3],
            &[0xab, 0xcd, 0x81],
            "the guest's ID is back"
        );
        assert_eq!(stack.next_deadline(), None, "nothing left in flight");
    }

    /// A UDP segmentation-offload frame from a tap with USO (one header,
    /// datagrams back to back, `RxChecksum::UdpSegments`) reaches the host
    /// as the datagrams the namespace's program sent, each its own size,
    /// in one GSO send; a frame that claims more segments than Linux ever
    /// makes is dropped, counted `oversized`, and nothing leaves.
    #[test]
    fn a_udp_segmentation_offload_frame_leaves_as_its_datagrams() {
        use std::num::NonZeroU16;
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        let reg = poll.registry().try_clone().unwrap();
        let now = Instant::now();
        stack.handle_frame(&reg, &arp_from_guest(), now);
        let (server, port) = echo_server();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        enable_gro(&server);
        // 5 x 1200 bytes and a last one of 345, each different.
        let payload: Vec<u8> = (0..5 * 1200 + 345)
            .map(|j| (j * 7 + j / 1200) as u8)
            .collect();
        let frame = udp_frame(4500, host, port, &payload);
        let size = NonZeroU16::new(1200).unwrap();
        stack.handle_frame_with(&reg, &frame, RxChecksum::UdpSegments(size), now);
        let (run, seg) = recv_gro(&server);
        assert_eq!((run.len(), seg), (payload.len(), Some(1200)));
        assert!(run == payload, "the bytes, in order");
        // The same without GRO: six datagrams of their own sizes.
        let (plain, plain_port) = echo_server();
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let frame = udp_frame(4501, host, plain_port, &payload);
        stack.handle_frame_with(&reg, &frame, RxChecksum::UdpSegments(size), now);
        let mut buf = [0u8; 2048];
        for (i, chunk) in payload.chunks(1200).enumerate() {
            let n = plain.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], chunk, "datagram {i}");
        }
        // 129 one-byte segments: more than Linux's UDP_MAX_SEGMENTS.
        let before = stack.core.counters.drops(DropReason::Oversized);
        let frame = udp_frame(4502, host, plain_port, &[9u8; 129]);
        let one = NonZeroU16::new(1).unwrap();
        stack.handle_frame_with(&reg, &frame, RxChecksum::UdpSegments(one), now);
        assert_eq!(stack.core.counters.drops(DropReason::Oversized), before + 1);
        // 128 are taken.
        let frame = udp_frame(4502, host, plain_port, &[8u8; 128]);
        stack.handle_frame_with(&reg, &frame, RxChecksum::UdpSegments(one), now);
        for _ in 0..128 {
            let n = plain.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[8u8], "only the 128 one-byte datagrams");
        }
    }

    /// The flow table's shortcut for bursts (the flow the last datagram
    /// found) never sends a datagram through the wrong flow: two flows'
    /// datagrams interleaved reach their own servers; after both idle out
    /// and a host forward's peer takes a freed slot, the old flow's next
    /// datagram opens a flow of its own instead of leaving through the
    /// forward's socket to that peer.
    #[test]
    fn interleaved_and_reused_udp_flows_keep_their_datagrams_apart() {
        let mut poll = mio::Poll::new().unwrap();
        let (mut stack, fport) = started_with_udp_forward(&poll);
        let reg = poll.registry().try_clone().unwrap();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        let t0 = Instant::now();
        stack.handle_frame(&reg, &arp_from_guest(), t0);
        stack.guest_tx().clear();
        let (a, pa) = echo_server();
        let (b, pb) = echo_server();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        for (sport, port, msg) in [
            (4000, pa, b"a1"),
            (4001, pb, b"b1"),
            (4000, pa, b"a2"),
            (4001, pb, b"b2"),
        ] {
            stack.handle_frame(&reg, &udp_frame(sport, host, port, msg), t0);
        }
        let mut buf = [0u8; 16];
        for (s, want) in [(&a, b"a1"), (&a, b"a2"), (&b, b"b1"), (&b, b"b2")] {
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
        // Both idle out; a peer of the forward then opens a flow in a
        // freed slot.
        let later = t0 + Duration::from_secs(61);
        stack.on_timer(&reg, later);
        assert_eq!(stack.udp.flows(later).count(), 0);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        peer.send_to(b"hi", ("127.0.0.1", fport)).unwrap();
        pump_host(&mut stack, &mut poll);
        assert_eq!(stack.udp.flows(later).count(), 1);
        for (sport, port, msg) in [(4001, pb, b"b3"), (4000, pa, b"a3")] {
            stack.handle_frame(&reg, &udp_frame(sport, host, port, msg), later);
        }
        for (s, want) in [(&b, b"b3"), (&a, b"a3")] {
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want, "the old endpoints reach their own server");
        }
        assert!(
            peer.recv(&mut buf).is_err(),
            "nothing of the old flows reached the forward's peer"
        );
    }

    /// Runs the host side as the event loop does: handles host events,
    /// then takes every frame queued toward the guest (what the link
    /// writes) and tells the stack there is room again. Returns the UDP
    /// payloads in order, once `want` came or nothing more for a second.
    fn drain_to_guest(stack: &mut Stack, poll: &mut mio::Poll, want: usize) -> Vec<Vec<u8>> {
        let mut events = mio::Events::with_capacity(64);
        let mut got = Vec::new();
        let mut quiet_since = Instant::now();
        while got.len() < want && quiet_since.elapsed() < Duration::from_secs(1) {
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for ev in events.iter() {
                if let Some((kind, index)) = crate::iface::decode_token(ev.token()) {
                    stack.handle_host_event(poll.registry(), kind, index, ev, Instant::now());
                }
            }
            let tx = stack.guest_tx();
            if !tx.is_empty() {
                quiet_since = Instant::now();
            }
            for i in 0..tx.len() {
                let frame = tx.frame(i);
                let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
                let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                got.push(udp.payload().to_vec());
            }
            tx.clear();
            stack.on_guest_tx_space(poll.registry(), Instant::now());
        }
        got
    }

    /// `n` datagrams of `len` bytes, each starting with its index.
    fn numbered(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut d = vec![0xa5; len];
                d[..4].copy_from_slice(&(i as u32).to_be_bytes());
                d
            })
            .collect()
    }

    /// Starts `stack` and opens a UDP flow from the guest's port `sport`
    /// to a fresh echo server on the host's loopback (through 10.0.2.2):
    /// the server and the flow socket's address, to answer to.
    fn flow_to_echo_server(
        stack: &mut Stack,
        poll: &mio::Poll,
        sport: u16,
    ) -> (std::net::UdpSocket, std::net::SocketAddr) {
        stack.start(poll.registry()).unwrap();
        let (server, port) = echo_server();
        let host = Ipv4Addr::new(10, 0, 2, 2);
        stack.handle_frame(poll.registry(), &arp_from_guest(), Instant::now());
        stack.guest_tx().clear();
        let go = udp_frame(sport, host, port, b"go");
        stack.handle_frame(poll.registry(), &go, Instant::now());
        let mut buf = [0u8; 16];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        (server, from)
    }

    /// A burst larger than a default socket receive buffer holds (92
    /// datagrams of 1472 bytes at 208 KiB) that arrives before the stack
    /// reads still reaches the guest whole: the flow's socket asks for
    /// more room (SOCKET_RCVBUF), so the kernel does not drop the rest.
    #[test]
    fn a_burst_beyond_a_default_socket_buffer_reaches_the_guest() {
        let mut poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("").unwrap()).unwrap();
        let (server, from) = flow_to_echo_server(&mut stack, &poll, 4300);
        let burst = numbered(150, 1472);
        for d in &burst {
            server.send_to(d, from).unwrap();
        }
        let got = drain_to_guest(&mut stack, &mut poll, burst.len());
        assert_eq!(got.len(), burst.len(), "datagrams that reached the guest");
        assert!(got == burst, "in order and intact");
        assert_eq!(stack.counters().drops(DropReason::GuestTxFull), 0);
    }

    /// With the queue toward the guest full, a flow's and a forward's
    /// sockets are left unread until the link drains it, then read on:
    /// every datagram arrives in order and none is dropped for want of
    /// room (the queue has 8 slots, each socket 40 datagrams waiting).
    #[test]
    fn a_full_queue_toward_the_guest_holds_udp_reads_and_loses_nothing() {
        let mut poll = mio::Poll::new().unwrap();
        let fport = free_udp_port("127.0.0.1:0");
        let mut cfg = parse_options(&format!("hostfwd=udp:127.0.0.1:{fport}-:7777")).unwrap();
        cfg.limits.guest_tx_slots = 8;
        let mut stack = Stack::new(cfg).unwrap();
        let (server, from) = flow_to_echo_server(&mut stack, &poll, 4301);
        let replies = numbered(40, 100);
        for d in &replies {
            server.send_to(d, from).unwrap();
        }
        assert!(drain_to_guest(&mut stack, &mut poll, replies.len()) == replies);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inbound = numbered(40, 200);
        for d in &inbound {
            peer.send_to(d, ("127.0.0.1", fport)).unwrap();
        }
        assert!(drain_to_guest(&mut stack, &mut poll, inbound.len()) == inbound);
        assert_eq!(stack.counters().drops(DropReason::GuestTxFull), 0);
    }
}
