//! The learning switch that makes several VMs on one stack one Ethernet
//! segment.
//!
//! Every VM link of an attachment is a port; the stack itself is one more
//! station, at [`GATEWAY_MAC`]. The switch learns which port each source
//! MAC address lives behind and decides where a frame goes:
//!
//! - to the stack when it is addressed to the gateway MAC;
//! - to the stack and every other port when it is broadcast or multicast
//!   (ARP, DHCP discovery, IPv6 neighbour discovery);
//! - to the one port that learnt its destination, so frames from VM to VM
//!   never touch the stack;
//! - to every other port when the destination is unknown (flooding), as a
//!   real switch does.
//!
//! Entries age out after [`AGEING`] without a frame from that address, and
//! all entries of a port go when the port goes. The table is capped
//! ([`MAX_ENTRIES`]) so a guest inventing source addresses cannot grow it
//! without bound; when it is full, new addresses are flooded to, not learnt.
//!
//! The attachment asks the switch only when more than one port exists; a
//! single VM's frames go straight to the stack.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use smoltcp::wire::EthernetAddress;

use crate::wire::GATEWAY_MAC;

/// How long a learnt address is kept without a frame from it (the
/// customary 300 s of IEEE 802.1D bridges).
pub const AGEING: Duration = Duration::from_secs(300);
/// Most addresses learnt at once.
pub const MAX_ENTRIES: usize = 4096;

/// Where a frame from a port goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the stack only (addressed to the gateway MAC).
    Stack,
    /// To one other port only.
    Port(usize),
    /// To every port but the sender's, and to the stack when `stack`
    /// (broadcast and multicast; unknown unicast is not for the stack).
    Flood {
        /// Whether the stack gets it too.
        stack: bool,
    },
    /// Nowhere: the destination is behind the sender's own port.
    Drop,
}

/// MAC address table of the switch.
#[derive(Debug, Default)]
pub struct Switch {
    table: HashMap<EthernetAddress, (usize, Instant)>,
}

impl Switch {
    /// Records that `mac` sent a frame through `port` at `now`.
    pub fn learn(&mut self, mac: EthernetAddress, port: usize, now: Instant) {
        if !mac.is_unicast() || mac == GATEWAY_MAC {
            return;
        }
        if let Some(entry) = self.table.get_mut(&mac) {
            *entry = (port, now);
            return;
        }
        if self.table.len() >= MAX_ENTRIES {
            self.table
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < AGEING);
            if self.table.len() >= MAX_ENTRIES {
                return;
            }
        }
        self.table.insert(mac, (port, now));
    }

    /// The port `mac` was learnt on, unless it aged out.
    pub fn lookup(&self, mac: EthernetAddress, now: Instant) -> Option<usize> {
        self.table
            .get(&mac)
            .filter(|(_, seen)| now.saturating_duration_since(*seen) < AGEING)
            .map(|(port, _)| *port)
    }

    /// Where a frame to `dst` that arrived on port `from` goes.
    pub fn route(&self, dst: EthernetAddress, from: usize, now: Instant) -> Route {
        if dst == GATEWAY_MAC {
            return Route::Stack;
        }
        if !dst.is_unicast() {
            return Route::Flood { stack: true };
        }
        match self.lookup(dst, now) {
            Some(port) if port == from => Route::Drop,
            Some(port) => Route::Port(port),
            None => Route::Flood { stack: false },
        }
    }

    /// Forgets every address learnt on `port` (it went away) and returns them.
    pub fn forget_port(&mut self, port: usize) -> Vec<EthernetAddress> {
        let gone: Vec<EthernetAddress> = self
            .table
            .iter()
            .filter(|(_, (p, _))| *p == port)
            .map(|(mac, _)| *mac)
            .collect();
        for mac in &gone {
            self.table.remove(mac);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0, 0, 1]);
    const B: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0, 0, 2]);

    #[test]
    fn learns_forwards_floods_and_ages() {
        let t0 = Instant::now();
        let mut sw = Switch::default();
        assert_eq!(sw.route(B, 0, t0), Route::Flood { stack: false });
        assert_eq!(
            sw.route(EthernetAddress::BROADCAST, 0, t0),
            Route::Flood { stack: true }
        );
        assert_eq!(
            sw.route(EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), 0, t0),
            Route::Flood { stack: true }
        );
        assert_eq!(sw.route(GATEWAY_MAC, 0, t0), Route::Stack);
        sw.learn(A, 0, t0);
        sw.learn(B, 1, t0);
        assert_eq!(sw.route(B, 0, t0), Route::Port(1));
        assert_eq!(sw.route(A, 1, t0), Route::Port(0));
        assert_eq!(sw.route(A, 0, t0), Route::Drop);
        // A moves to port 2.
        sw.learn(A, 2, t0);
        assert_eq!(sw.route(A, 1, t0), Route::Port(2));
        // Ageing: unknown again after AGEING without frames.
        let later = t0 + AGEING;
        assert_eq!(sw.route(B, 0, later), Route::Flood { stack: false });
        // Multicast sources and the gateway's address are never learnt.
        sw.learn(EthernetAddress::BROADCAST, 3, t0);
        sw.learn(GATEWAY_MAC, 3, t0);
        assert_eq!(sw.route(GATEWAY_MAC, 0, t0), Route::Stack);
        assert_eq!(sw.forget_port(3), vec![]);
        assert_eq!(sw.forget_port(1), vec![B]);
        assert_eq!(sw.route(B, 0, t0), Route::Flood { stack: false });
    }

    #[test]
    fn table_is_capped() {
        let t0 = Instant::now();
        let mut sw = Switch::default();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let b = i.to_be_bytes();
            sw.learn(EthernetAddress([0x02, 0, b[0], b[1], b[2], b[3]]), 1, t0);
        }
        assert_eq!(sw.table.len(), MAX_ENTRIES);
        // Once the old ones age out, new ones are learnt again.
        sw.learn(A, 0, t0 + AGEING);
        assert_eq!(sw.lookup(A, t0 + AGEING), Some(0));
    }
}
