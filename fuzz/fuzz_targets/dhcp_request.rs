//! DHCP client messages into the shared DHCP server (`DhcpServer::handle`),
//! as the user-mode stack and the bridge networks' service receive them.
//!
//! Input: records, one message each, against one server with a four-address
//! pool and a static host, so DISCOVER/REQUEST/DECLINE/RELEASE sequences
//! and pool exhaustion are reached. Every reply must parse back as DHCP.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use slipway_dhcp::{AddressPool, DhcpConfig, DhcpServer, StaticHost};

fn server() -> DhcpServer {
    DhcpServer::new(DhcpConfig {
        server_ip: Ipv4Addr::new(10, 0, 2, 2),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 0, 2, 2)),
        dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
        pool: AddressPool::Range {
            start: Ipv4Addr::new(10, 0, 2, 15),
            end: Ipv4Addr::new(10, 0, 2, 18),
        },
        static_hosts: vec![StaticHost {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            ip: Ipv4Addr::new(10, 0, 2, 100),
            name: Some("fixed".into()),
            lease_time: Some(Some(Duration::from_secs(30))),
        }],
        lease_time: Some(Duration::from_secs(60)),
        hostname: Some("guest".into()),
        domain_name: Some("example.test".into()),
        domain_search: vec!["example.test".into(), "test".into()],
        mtu: Some(1500),
        broadcast: None,
        boot_file: Some("pxelinux.0".into()),
        tftp_server_name: Some("10.0.2.2".into()),
        next_server: None,
        authoritative: true,
    })
    .expect("fixed configuration is valid")
}

fuzz_target!(|data: &[u8]| {
    let mut server = server();
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for message in slipway_fuzz::records(data) {
        if let Ok(Some(reply)) = server.handle(message, now) {
            // A reply is at least a BOOTP header plus the magic cookie.
            assert!(reply.payload.len() >= 240, "short reply");
            assert_eq!(&reply.payload[236..240], &[99, 130, 83, 99], "no cookie");
        }
        // Leases expire between some messages.
        now += Duration::from_secs(u64::from(message.first().copied().unwrap_or(0) & 0x3f));
    }
    for lease in server.leases() {
        assert!(
            (15..=18).contains(&lease.ip.octets()[3]) || lease.ip == Ipv4Addr::new(10, 0, 2, 100),
            "lease outside the pool: {}",
            lease.ip
        );
    }
});
