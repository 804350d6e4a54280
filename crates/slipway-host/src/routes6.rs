//! The host's IPv6 routing table, from `/proc/net/ipv6_route` (the main
//! table of the network namespace the calling thread is in).
//!
//! Theory of operation: each line is one route in fixed columns:
//! destination (32 hex digits) and its prefix length (hex), source and
//! its length, next hop, metric, reference count, use count, flags (all
//! hex) and the interface. [`parse`] reads the usable ones into
//! [`Route6`]s in the kernel's order; [`default_v6`] picks the default
//! route passt and pasta copy for the guest (its gateway is usually the
//! router's link-local address). Hand-written for the same reason as
//! [`crate::routes`]: one line format.

use std::io;
use std::net::Ipv6Addr;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x1;
/// `RTF_GATEWAY`: the destination is reached through a gateway.
const RTF_GATEWAY: u32 = 0x2;
/// `RTF_LOCAL`: one of this host's own addresses.
const RTF_LOCAL: u32 = 0x8000_0000;

/// One IPv6 route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route6 {
    /// The interface it goes through.
    pub ifname: String,
    /// Destination prefix (host bits zero).
    pub destination: Ipv6Addr,
    /// Length of the destination prefix.
    pub prefix_len: u8,
    /// The gateway (`None` for a connected route).
    pub gateway: Option<Ipv6Addr>,
}

impl Route6 {
    /// Whether this is a default route (::/0).
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }

    /// Whether `addr` lies inside the destination prefix.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        let mask = match self.prefix_len {
            0 => 0,
            l => u128::MAX << (128 - u32::from(l.min(128))),
        };
        u128::from(addr) & mask == u128::from(self.destination) & mask
    }
}

/// The usable routes of `/proc/net/ipv6_route`'s text, in the kernel's
/// order, without the loopback interface's, the local and the multicast
/// ones; lines
/// that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Route6> {
    let addr = |f: &str| u128::from_str_radix(f, 16).ok().map(Ipv6Addr::from);
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[9] == "lo" {
                return None;
            }
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            let destination = addr(f[0])?;
            if flags & RTF_UP == 0 || flags & RTF_LOCAL != 0 || destination.is_multicast() {
                return None;
            }
            let gateway = addr(f[4])?;
            Some(Route6 {
                ifname: f[9].to_string(),
                destination,
                prefix_len: u8::from_str_radix(f[1], 16).ok().filter(|l| *l <= 128)?,
                gateway: (flags & RTF_GATEWAY != 0 && !gateway.is_unspecified()).then_some(gateway),
            })
        })
        .collect()
}

/// The IPv6 routes of this network namespace (none where IPv6 is off).
pub fn list_v6() -> io::Result<Vec<Route6>> {
    match std::fs::read_to_string("/proc/net/ipv6_route") {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The first default route with a gateway (through `ifname` only, if given).
pub fn default_v6<'a>(routes: &'a [Route6], ifname: Option<&str>) -> Option<&'a Route6> {
    routes
        .iter()
        .find(|r| r.is_default() && r.gateway.is_some() && ifname.is_none_or(|n| r.ifname == n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_table() {
        // As a namespace with 2001:db8:99::2/64 on veth0 and a default
        // route via fe80::1 shows it.
        let text = "\
20010db8009900000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001    veth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001    veth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003    veth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001    veth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000002 00000400 00000001 00000000 00000001    veth1
20010db8009900000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001    veth0
garbage
";
        let routes = parse(text);
        assert_eq!(routes.len(), 4, "{routes:?}");
        let prefix = &routes[0];
        assert_eq!(
            (prefix.destination, prefix.prefix_len, prefix.gateway),
            ("2001:db8:99::".parse().unwrap(), 64, None)
        );
        assert!(prefix.contains("2001:db8:99::2".parse().unwrap()));
        assert!(!prefix.contains("2001:db8:98::2".parse().unwrap()));
        let default = default_v6(&routes, None).unwrap();
        assert_eq!(
            (default.ifname.as_str(), default.gateway),
            ("veth0", Some("fe80::1".parse().unwrap()))
        );
        // Flags without RTF_GATEWAY: no gateway, so not a default to copy.
        assert_eq!(default_v6(&routes, Some("veth1")), None);
        assert_eq!(default_v6(&routes, Some("veth9")), None);
    }
}
