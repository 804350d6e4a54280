//! The host's IPv4 routing table, from `/proc/net/route` (the table of the
//! network namespace the calling thread is in).
//!
//! Theory of operation: each line after the header is one route:
//! interface, destination, gateway, flags and mask in the kernel's hex
//! notation (the address's bytes in memory order). [`parse`] reads the
//! text into [`Route`]s; [`default_v4`] picks the first default route, the
//! one passt copies for its guest, and [`Route::prefix_len`] gives the
//! length of a connected route's prefix. Hand-written: one line format,
//! and the netlink crates would pull a dump-and-decode loop for the same.

use std::io;
use std::net::Ipv4Addr;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x1;
/// `RTF_GATEWAY`: the destination is reached through a gateway.
const RTF_GATEWAY: u32 = 0x2;

/// One IPv4 route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface it goes through.
    pub ifname: String,
    /// Destination network.
    pub destination: Ipv4Addr,
    /// The gateway (unspecified for a connected route).
    pub gateway: Option<Ipv4Addr>,
    /// The destination's netmask.
    pub mask: Ipv4Addr,
}

impl Route {
    /// Length of the destination prefix, or `None` for a mask that is not
    /// a prefix.
    pub fn prefix_len(&self) -> Option<u8> {
        crate::prefix_of_netmask(self.mask)
    }

    /// Whether this is a default route (0.0.0.0/0).
    pub fn is_default(&self) -> bool {
        self.destination.is_unspecified() && self.mask.is_unspecified()
    }

    /// Whether `addr` lies inside the destination network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & u32::from(self.mask) == u32::from(self.destination)
    }
}

/// The usable routes of `/proc/net/route`'s text, in the kernel's order;
/// lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Route> {
    let hex_addr = |f: &str| {
        u32::from_str_radix(f, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            if flags & RTF_UP == 0 {
                return None;
            }
            let gateway = hex_addr(f[2])?;
            Some(Route {
                ifname: f[0].to_string(),
                destination: hex_addr(f[1])?,
                gateway: (flags & RTF_GATEWAY != 0 && !gateway.is_unspecified()).then_some(gateway),
                mask: hex_addr(f[7])?,
            })
        })
        .collect()
}

/// The routes of this network namespace.
pub fn list_v4() -> io::Result<Vec<Route>> {
    Ok(parse(&std::fs::read_to_string("/proc/net/route")?))
}

/// The first default route (through `ifname` only, if given).
pub fn default_v4<'a>(routes: &'a [Route], ifname: Option<&str>) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.is_default() && r.gateway.is_some() && ifname.is_none_or(|n| r.ifname == n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_table() {
        // As a namespace with 10.99.0.2/24 on veth0 and a default route
        // via 10.99.0.1 shows it (a little-endian machine).
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    veth0\t00000000\t0100630A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    veth0\t0000630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    down0\t0000640A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    junk\n";
        let routes = parse(text);
        assert_eq!(routes.len(), 2, "{routes:?}");
        let def = default_v4(&routes, None).unwrap();
        assert_eq!(def.gateway, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(def.ifname, "veth0");
        assert!(default_v4(&routes, Some("eth1")).is_none());
        let connected = &routes[1];
        assert_eq!(connected.prefix_len(), Some(24));
        assert!(connected.contains(Ipv4Addr::new(10, 99, 0, 2)));
        assert!(!connected.contains(Ipv4Addr::new(10, 98, 0, 2)));
    }
}
