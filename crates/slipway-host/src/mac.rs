//! Ethernet MAC addresses: one type, parsed and printed one way.
//!
//! Parses `aa:bb:cc:dd:ee:ff` in any case, one or two hex digits per byte
//! (as libvirt's `virMacAddrParse` accepts); prints lowercase, two digits
//! per byte, colon separated. Parsing then printing gives the canonical
//! form; printing then parsing gives the same address.

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address.
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
    ///
    /// # Panics
    /// If the OS random source fails (as `uuid::Uuid::new_v4` would).
    pub fn random_kvm() -> MacAddr {
        let mut b = [0u8; 3];
        getrandom::fill(&mut b).expect("the OS random source");
        MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> MacAddr {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> [u8; 6] {
        m.0
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [
            "52:54:00:12:34:56",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            let m: MacAddr = s.parse().unwrap();
            assert_eq!(m.to_string(), s);
            assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
        }
        let m: MacAddr = "52:54:0:A:b:C".parse().unwrap();
        assert_eq!(m, MacAddr([0x52, 0x54, 0, 0x0a, 0x0b, 0x0c]));
        assert_eq!(m.to_string(), "52:54:00:0a:0b:0c");
    }

    #[test]
    fn errors() {
        for s in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:",
            "52:54:00:12:34:567",
            "52:54:00:12:34:5g",
            "52-54-00-12-34-56",
            "+2:54:00:12:34:56",
            " 52:54:00:12:34:56",
        ] {
            assert_eq!(
                s.parse::<MacAddr>(),
                Err(MacParseError(s.to_string())),
                "{s:?}"
            );
        }
        let e = "x".parse::<MacAddr>().unwrap_err().to_string();
        assert!(e.contains("'x' is not a MAC address"), "{e}");
    }

    #[test]
    fn random_kvm_is_in_range_and_unicast() {
        let m = MacAddr::random_kvm();
        assert_eq!(&m.0[..3], &[0x52, 0x54, 0x00]);
        assert!(!m.is_multicast());
        assert!(MacAddr([1, 0, 0, 0, 0, 0]).is_multicast());
    }
}
