//! MAC addresses and the random identifiers libvirt generates.

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address. Parses `aa:bb:cc:dd:ee:ff` in any case (one or
/// two hex digits per byte, as libvirt's `virMacAddrParse` accepts) and
/// prints lowercase, colon separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address (expected six hex bytes separated by ':')")]
pub struct MacParseError(pub String);

impl MacAddr {
    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for a multicast (or broadcast) address: the low bit of the first byte.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A random address in QEMU/KVM's `52:54:00` range, as libvirt generates
    /// for bridges and guest NICs.
    pub fn random_kvm() -> MacAddr {
        // A v4 UUID is 122 bits from the OS random source; borrowing three of
        // its bytes avoids a second randomness dependency.
        let r = uuid::Uuid::new_v4();
        let b = r.as_bytes();
        MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(MacParseError(s.to_string()));
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A random RFC 4122 version 4 UUID, as `virsh net-define` assigns to a
/// definition without one.
pub fn generate_uuid() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// A random `52:54:00:xx:xx:xx` MAC address (see [`MacAddr::random_kvm`]).
pub fn generate_mac() -> MacAddr {
    MacAddr::random_kvm()
}
