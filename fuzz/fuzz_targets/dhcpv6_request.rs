//! DHCPv6 client messages into the shared stateless DHCPv6 server
//! (`Dhcpv6Server::handle`), as the user-mode stack and bridge networks
//! receive them. A reply, when there is one, is a REPLY (type 7) carrying
//! the client's transaction ID.
#![no_main]

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slipway_dhcp::v6::{Dhcpv6Config, Dhcpv6Server};

fn server() -> &'static Dhcpv6Server {
    static SERVER: OnceLock<Dhcpv6Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Dhcpv6Server::new(&Dhcpv6Config {
            server_mac: [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02],
            dns_servers: vec![Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3)],
            domain_search: vec!["example.test".into(), "test".into()],
        })
        .expect("fixed configuration is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(reply)) = server().handle(data) {
        assert_eq!(reply.first(), Some(&7), "not a REPLY");
        assert_eq!(reply.get(1..4), data.get(1..4), "transaction ID changed");
    }
});
