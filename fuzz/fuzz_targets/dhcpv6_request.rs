//! DHCPv6 client messages into the shared DHCPv6 server
//! (`Dhcpv6Server::handle`), as the user-mode stack and bridge networks
//! receive them: stateless, and stateful with a small range and a
//! reservation (which keeps its bindings from one input to the next). A
//! reply, when there is one, is an ADVERTISE (2) or REPLY (7) carrying the
//! client's transaction ID.
#![no_main]

use std::net::Ipv6Addr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use slipway_dhcp::v6::{Dhcpv6Config, Dhcpv6Host, Dhcpv6Pool, Dhcpv6Server};

fn servers() -> [Dhcpv6Server; 2] {
    let stateless = Dhcpv6Server::new(&Dhcpv6Config {
        server_mac: [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02],
        dns_servers: vec![Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3)],
        domain_search: vec!["example.test".into(), "test".into()],
    })
    .expect("fixed configuration is valid");
    let stateful = stateless
        .clone()
        .with_pool(Dhcpv6Pool {
            start: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10),
            end: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x13),
            prefix: 64,
            lease_time: Some(Duration::from_secs(3600)),
            hosts: vec![Dhcpv6Host {
                duid: Some(vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                name: Some("fixed".into()),
                ip: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99),
                lease_time: None,
            }],
        })
        .expect("fixed pool is valid");
    [stateless, stateful]
}

static SERVERS: Mutex<Option<[Dhcpv6Server; 2]>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = SERVERS.lock().unwrap_or_else(|p| p.into_inner());
    let servers = guard.get_or_insert_with(servers);
    for s in servers.iter_mut() {
        if let Ok(Some(reply)) = s.handle(data, SystemTime::UNIX_EPOCH) {
            assert!(matches!(reply.first(), Some(2 | 7)), "not ADVERTISE/REPLY");
            assert_eq!(reply.get(1..4), data.get(1..4), "transaction ID changed");
        }
    }
});
