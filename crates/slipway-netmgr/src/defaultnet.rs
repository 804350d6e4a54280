//! The shipped `default` network, moved off 192.168.122.0/24 when that
//! subnet is already routed on the host, and off `virbr0` when a device of
//! that name exists (libvirt fails to start there).

use std::net::Ipv4Addr;

use slipway_host::ipnet::Ipv4Net;

/// An IPv4 route: destination and prefix length.
pub type Route4 = (Ipv4Addr, u8);

/// Parses `/proc/net/route` ([`slipway_host::routes::parse`]) into
/// destinations and prefix lengths.
pub fn parse_proc_routes(text: &str) -> Vec<Route4> {
    slipway_host::routes::parse(text)
        .iter()
        .filter_map(|r| Some((r.destination, r.prefix_len()?)))
        .collect()
}

/// The host's IPv4 routes, from `/proc/net/route` (empty if unreadable).
pub fn host_routes() -> Vec<Route4> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_proc_routes(&t))
        .unwrap_or_default()
}

/// The names of the network devices in this process's network namespace
/// (`if_nameindex`; /sys/class/net may show another namespace's).
pub fn host_links() -> Vec<String> {
    // SAFETY: if_nameindex returns NULL or an array ended by a zero entry,
    // each name a NUL-terminated string, all freed by if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut names = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        names
    }
}

fn overlaps(a: Route4, b: Route4) -> bool {
    // Two prefixes overlap when they agree on the shorter prefix's bits;
    // the default route (prefix 0) is ignored: it overlaps everything.
    let p = a.1.min(b.1);
    if p == 0 {
        return false;
    }
    let net = |ip| Ipv4Net::new(ip, p.min(32)).map(|n| n.network());
    net(a.0) == net(b.0)
}

/// The third octet N of the first 192.168.N.0/24 (from 122 upwards, then
/// from 0) that overlaps none of `routes`; `None` if all are taken.
pub fn pick_subnet(routes: &[Route4]) -> Option<u8> {
    (122..=255u8).chain(0..122).find(|&n| {
        let cand = (Ipv4Addr::new(192, 168, n, 0), 24);
        !routes.iter().any(|r| overlaps(*r, cand))
    })
}

/// The default network's XML on subnet 192.168.N.0/24. Its bridge is the
/// first free `virbrN` (libvirt's template), chosen by
/// [`slipway_netxml::Network::fill_defaults`] among the host's devices.
pub fn default_xml(n: u8) -> String {
    format!(
        "<network>\n  <name>default</name>\n  <forward mode='nat'/>\n  <bridge name='virbr%d' stp='on' delay='0'/>\n  \
         <ip address='192.168.{n}.1' netmask='255.255.255.0'>\n    <dhcp>\n      \
         <range start='192.168.{n}.2' end='192.168.{n}.254'/>\n    </dhcp>\n  </ip>\n</network>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
br1\t0000100A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn parses_proc_net_route() {
        let r = parse_proc_routes(PROC);
        assert_eq!(
            r,
            vec![
                (Ipv4Addr::new(0, 0, 0, 0), 0),
                (Ipv4Addr::new(192, 168, 122, 0), 24),
                (Ipv4Addr::new(10, 16, 0, 0), 16)
            ]
        );
    }

    #[test]
    fn picks_122_when_free_and_next_when_taken() {
        assert_eq!(pick_subnet(&[(Ipv4Addr::UNSPECIFIED, 0)]), Some(122));
        assert_eq!(pick_subnet(&parse_proc_routes(PROC)), Some(123));
        let wide = [(Ipv4Addr::new(192, 168, 122, 0), 23)];
        assert_eq!(pick_subnet(&wide), Some(124));
        let all = [(Ipv4Addr::new(192, 168, 0, 0), 16)];
        assert_eq!(pick_subnet(&all), None);
        let host = [(Ipv4Addr::new(192, 168, 122, 7), 32)];
        assert_eq!(pick_subnet(&host), Some(123));
    }

    #[test]
    fn default_xml_parses_and_validates() {
        let mut net = slipway_netxml::Network::from_xml(&default_xml(122)).unwrap();
        net.validate().unwrap();
        assert!(net.unknown.is_empty());
        let mut taken = net.clone();
        net.fill_defaults(&Default::default());
        assert_eq!(net.bridge_name(), Some("virbr0"));
        taken.fill_defaults(&slipway_netxml::DefaultsContext {
            bridges_in_use: vec!["lo".into(), "virbr0".into()],
        });
        assert_eq!(taken.bridge_name(), Some("virbr1"));
    }

    #[test]
    fn host_links_lists_this_namespace() {
        assert!(host_links().iter().any(|l| l == "lo"), "{:?}", host_links());
    }
}
