//! The neighbour cache: which guest MAC address has which IP address
//! (learned from the frames the guests send), and the frames held while
//! an address is being resolved.
//!
//! Several VMs may share the link, so a destination address nobody has
//! been heard from is resolved as a router does: the frame is held (a few
//! per address) while an ARP request or neighbour solicitation asks who
//! has it, released when the answer (or any frame from that address)
//! arrives, and dropped and counted (`DropReason::Unresolved`) when
//! nobody answers. Guessing the VM heard from last would send it to the
//! wrong VM.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use smoltcp::wire::EthernetAddress;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6_multicast_mac;
    use std::net::{Ipv4Addr, Ipv6Addr};

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
