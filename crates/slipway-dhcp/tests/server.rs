//! Server behaviour, driven with requests encoded by dhcproto and raw captures.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use slipway_dhcp::{
    AddressPool, DhcpConfig, DhcpConfigError, DhcpError, DhcpReply, DhcpServer, HostName, Lease,
    ReplyDestination, ReplyKind, StaticHost,
};

const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0, 0, 0xb];
const MAC_C: [u8; 6] = [0x52, 0x54, 0x00, 0, 0, 0xc];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const DAY: Duration = Duration::from_secs(86400);

/// A DISCOVER captured from busybox udhcpc 1.35 (MAC 52:54:00:12:34:56, hostname guest1,
/// client id 01+MAC, parameter request list 1 3 6 12 15 28 42).
const UDHCPC_DISCOVER: &str = "01010600b15bf81d000000000000000000000000000000000000000052540012345600000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000638253633501013902024037070103060c0f1c2a0c066775657374313c0c756468637020312e33352e303d0701525400123456ff000000000000000000000000";

/// The REQUEST (SELECTING 10.0.2.15 from server 10.0.2.2) busybox udhcpc 1.35 sent
/// after such an offer: options 53, 50, 54, 57 (576), 55, 12, 60, 61.
const UDHCPC_REQUEST: &str = "01010600c1a9377b0000000000000000000000000000000000000000525400123456000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000006382536335010332040a00020f36040a0002023902024037070103060c0f1c2a0c066775657374313c0c756468637020312e33352e303d0701525400123456ff";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// QEMU's user-mode defaults: 10.0.2.0/24, host .2, DNS .3, pool .15-.30, 24 h.
fn qemu_config() -> DhcpConfig {
    DhcpConfig {
        server_ip: SERVER,
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(SERVER),
        dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
        pool: AddressPool::Range {
            start: Ipv4Addr::new(10, 0, 2, 15),
            end: Ipv4Addr::new(10, 0, 2, 30),
        },
        static_hosts: vec![],
        lease_time: Some(DAY),
        hostname: None,
        domain_name: None,
        domain_search: vec![],
        mtu: None,
        broadcast: None,
        boot_file: None,
        tftp_server_name: None,
        next_server: None,
        authoritative: true,
    }
}

fn server() -> DhcpServer {
    DhcpServer::new(qemu_config()).unwrap()
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2, last)
}

fn message(kind: MessageType, mac: [u8; 6]) -> Message {
    let mut m = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

fn decode(reply: &DhcpReply) -> Message {
    Message::decode(&mut Decoder::new(&reply.payload)).unwrap()
}

fn discover(mac: [u8; 6]) -> Vec<u8> {
    encode(&message(MessageType::Discover, mac))
}

/// A SELECTING-state REQUEST for `addr` from `server`.
fn select(mac: [u8; 6], addr: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut m = message(MessageType::Request, mac);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&m)
}

/// An INIT-REBOOT REQUEST for `addr` (no server id, no ciaddr).
fn init_reboot(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut m = message(MessageType::Request, mac);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
    encode(&m)
}

/// A RENEWING-state REQUEST (ciaddr set, no option 50 or 54).
fn renew(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut m = message(MessageType::Request, mac);
    m.set_ciaddr(addr);
    encode(&m)
}

fn handle(s: &mut DhcpServer, req: &[u8], now: SystemTime) -> DhcpReply {
    s.handle(req, now).unwrap().expect("a reply")
}

/// DISCOVER + REQUEST; returns the address acknowledged.
fn obtain(s: &mut DhcpServer, mac: [u8; 6], now: SystemTime) -> Ipv4Addr {
    let offer = handle(s, &discover(mac), now);
    assert_eq!(offer.kind, ReplyKind::Offer);
    let addr = decode(&offer).yiaddr();
    let ack = handle(s, &select(mac, addr, SERVER), now);
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(decode(&ack).yiaddr(), addr);
    addr
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

/// The raw option codes of a reply, in wire order.
fn option_codes(payload: &[u8]) -> Vec<u8> {
    let mut codes = Vec::new();
    let mut i = 240;
    while i < payload.len() && payload[i] != 255 {
        if payload[i] == 0 {
            i += 1;
            continue;
        }
        codes.push(payload[i]);
        i += 2 + usize::from(payload[i + 1]);
    }
    codes
}

#[test]
fn discover_gets_offer_with_configured_options() {
    let mut s = server();
    let offer = handle(&mut s, &discover(MAC_A), t0());
    assert_eq!(offer.kind, ReplyKind::Offer);
    assert_eq!(offer.client_mac, MAC_A);
    // No broadcast flag, no ciaddr: unicast to the offered address (RFC 2131 4.1).
    assert_eq!(offer.destination, ReplyDestination::Assigned(ip(15)));
    assert!(offer.payload.len() >= 300 && offer.payload.len() <= 548);
    let m = decode(&offer);
    assert_eq!(m.opcode(), dhcproto::v4::Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234_5678);
    assert_eq!(m.yiaddr(), ip(15));
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(&m.chaddr()[..6], &MAC_A);
    assert_eq!(
        opt(&m, OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Offer))
    );
    assert_eq!(
        opt(&m, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&m, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        opt(&m, OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        opt(&m, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![ip(3)]))
    );
    assert_eq!(
        opt(&m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(86400))
    );
    assert_eq!(
        opt(&m, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(43200))
    );
    assert_eq!(
        opt(&m, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(75600))
    );
    // Not configured: not sent.
    assert!(opt(&m, OptionCode::Hostname).is_none());
    assert!(opt(&m, OptionCode::DomainSearch).is_none());
    // An offer is not a lease yet.
    assert_eq!(s.leases().count(), 0);
}

#[test]
fn restricted_network_gets_no_router_or_dns() {
    let mut config = qemu_config();
    config.router = None;
    config.dns_servers = vec![];
    let mut s = DhcpServer::new(config).unwrap();
    let offer = handle(&mut s, &hex(UDHCPC_DISCOVER), t0());
    let codes = option_codes(&offer.payload);
    assert!(!codes.contains(&3) && !codes.contains(&6), "{codes:?}");
    assert!(codes.contains(&1) && codes.contains(&51), "{codes:?}");
}

#[test]
fn service_addresses_inside_the_pool_are_never_leased() {
    let mut config = qemu_config();
    config.pool = AddressPool::Range {
        start: ip(3),
        end: ip(5),
    };
    config.router = Some(ip(4));
    let mut s = DhcpServer::new(config).unwrap();
    // .3 is the DNS server, .4 the router: only .5 is left.
    assert_eq!(obtain(&mut s, MAC_A, t0()), ip(5));
    assert_eq!(s.handle(&discover(MAC_B), t0()).unwrap(), None);
    assert_eq!(
        handle(&mut s, &init_reboot(MAC_B, ip(3)), t0()).kind,
        ReplyKind::Nak
    );
}

#[test]
fn broadcast_flag_gives_broadcast_reply() {
    let mut s = server();
    let mut m = message(MessageType::Discover, MAC_A);
    m.set_flags(Flags::default().set_broadcast());
    let offer = handle(&mut s, &encode(&m), t0());
    assert_eq!(offer.destination, ReplyDestination::Broadcast);
    assert!(decode(&offer).flags().broadcast());
}

fn host_name(name: &str) -> HostName {
    HostName::from_client(name.as_bytes()).unwrap()
}

#[test]
fn request_binds_lease_with_client_hostname() {
    let mut s = server();
    let mut m = message(MessageType::Request, MAC_A);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(20)));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    m.opts_mut().insert(DhcpOption::Hostname("guest".into()));
    let ack = handle(&mut s, &encode(&m), t0());
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(ack.destination, ReplyDestination::Assigned(ip(20)));
    let leases: Vec<&Lease> = s.leases().collect();
    assert_eq!(
        leases,
        vec![&Lease {
            mac: MAC_A,
            ip: ip(20),
            hostname: Some(host_name("guest")),
            client_id: None,
            expires: Some(t0() + DAY),
        }]
    );
}

/// REQUESTs `addr` for `mac` sending option 12 as `name` (raw bytes).
fn request_named(s: &mut DhcpServer, mac: [u8; 6], addr: Ipv4Addr, name: &[u8]) -> Lease {
    let mut m = message(MessageType::Request, mac);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
    let mut raw = encode(&m);
    // Option 12 by hand: dhcproto only encodes UTF-8.
    raw.pop(); // End
    raw.push(12);
    raw.push(name.len() as u8);
    raw.extend_from_slice(name);
    raw.push(255);
    assert_eq!(handle(s, &raw, t0()).kind, ReplyKind::Ack);
    s.leases().find(|l| l.mac == mac).unwrap().clone()
}

/// dnsmasq's rules for the names clients give themselves: the first label
/// only, legal characters only (else the lease has no name), a static
/// host's name only for that host, a name held by another lease not taken.
#[test]
fn lease_names_follow_dnsmasqs_rules() {
    let mut config = qemu_config();
    config.static_hosts = vec![StaticHost {
        mac: MAC_C,
        ip: ip(100),
        name: Some("fixed".into()),
        lease_time: None,
    }];
    let mut s = DhcpServer::new(config).unwrap();
    let name = |l: &Lease| l.hostname.as_ref().map(|h| h.to_string());
    let l = request_named(&mut s, MAC_A, ip(20), b"www.example.com");
    assert_eq!(name(&l).as_deref(), Some("www"));
    // Invalid: the lease is granted, without a name.
    for bad in [&b"evil\x1b[2J"[..], b"a b", b"-x", &[b'a'; 64]] {
        let l = request_named(&mut s, MAC_B, ip(21), bad);
        assert_eq!((l.ip, name(&l)), (ip(21), None), "{bad:?}");
    }
    // Held by A's lease: B does not get it, A keeps it.
    let l = request_named(&mut s, MAC_B, ip(21), b"WWW");
    assert_eq!(name(&l), None);
    // A static host's name is not for other clients...
    let l = request_named(&mut s, MAC_B, ip(21), b"fixed");
    assert_eq!(name(&l), None);
    // ... and the static host's lease has it, whatever the client says.
    let l = request_named(&mut s, MAC_C, ip(100), b"www");
    assert_eq!(name(&l).as_deref(), Some("fixed"));
    assert_eq!(
        name(s.leases().find(|l| l.mac == MAC_A).unwrap()).as_deref(),
        Some("www")
    );
    // Once A's lease has ended, its name is free.
    let later = t0() + 2 * DAY;
    let mut m = message(MessageType::Request, MAC_B);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(21)));
    m.opts_mut().insert(DhcpOption::Hostname("www".into()));
    handle(&mut s, &encode(&m), later);
    let l = s.leases().find(|l| l.mac == MAC_B).unwrap();
    assert_eq!(name(l).as_deref(), Some("www"));
}

/// An INFORM (or a renewal) goes to the address the client claims, which
/// the server must not put in a neighbour table: only a reply to an
/// address this server gives is `Assigned`.
#[test]
fn only_given_addresses_are_assigned_destinations() {
    let mut s = server();
    for kind in [MessageType::Inform, MessageType::Discover] {
        let mut m = message(kind, MAC_A);
        m.set_ciaddr(ip(77));
        let r = handle(&mut s, &encode(&m), t0());
        assert_eq!(r.destination, ReplyDestination::Unicast(ip(77)), "{kind:?}");
    }
    let mut m = message(MessageType::Inform, MAC_A);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(77)));
    let r = handle(&mut s, &encode(&m), t0());
    assert_eq!(r.destination, ReplyDestination::Broadcast);
}

#[test]
fn lease_is_stable_across_rediscover_renew_and_expiry() {
    let mut s = server();
    let a = obtain(&mut s, MAC_A, t0());
    let b = obtain(&mut s, MAC_B, t0());
    assert_eq!((a, b), (ip(15), ip(16)));
    // Re-DISCOVER: same address.
    assert_eq!(obtain(&mut s, MAC_A, t0() + Duration::from_secs(10)), a);
    // RENEWING: ACK unicast to ciaddr, ciaddr echoed, lease extended.
    let later = t0() + Duration::from_secs(3600);
    let ack = handle(&mut s, &renew(MAC_A, a), later);
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(ack.destination, ReplyDestination::Unicast(a));
    assert_eq!(decode(&ack).ciaddr(), a);
    let lease = s.leases().find(|l| l.mac == MAC_A).unwrap();
    assert_eq!(lease.expires, Some(later + DAY));
    // The hostname given earlier is kept when a renewal does not repeat it.
    let mut named = message(MessageType::Request, MAC_A);
    named.set_ciaddr(a);
    named
        .opts_mut()
        .insert(DhcpOption::Hostname("guest-a".into()));
    handle(&mut s, &encode(&named), later);
    handle(&mut s, &renew(MAC_A, a), later);
    let lease = s.leases().find(|l| l.mac == MAC_A).unwrap();
    assert_eq!(
        lease.hostname.as_ref().map(HostName::as_str),
        Some("guest-a")
    );
    // Long after expiry, with the address still free: the same address again.
    let much_later = t0() + 10 * DAY;
    assert_eq!(obtain(&mut s, MAC_A, much_later), a);
    assert_eq!(s.leases().count(), 2);
}

#[test]
fn udhcpc_capture_is_served_and_keyed_by_client_id() {
    let mut s = server();
    let raw = hex(UDHCPC_DISCOVER);
    let offer = handle(&mut s, &raw, t0());
    assert_eq!(offer.kind, ReplyKind::Offer);
    assert_eq!(offer.client_mac, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    let m = decode(&offer);
    assert_eq!(m.xid(), 0xb15b_f81d);
    assert_eq!(m.yiaddr(), ip(15));
    // Requested list 1 3 6 12 15 28 42: after the always-sent 53 54 51 1 3 6 comes
    // the client's order; 58/59 are extras at the end.
    assert_eq!(
        option_codes(&offer.payload),
        vec![53, 54, 51, 1, 3, 6, 58, 59]
    );
}

#[test]
fn udhcpc_request_capture_is_acked() {
    let mut s = server();
    handle(&mut s, &hex(UDHCPC_DISCOVER), t0());
    let ack = handle(&mut s, &hex(UDHCPC_REQUEST), t0());
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(ack.destination, ReplyDestination::Assigned(ip(15)));
    assert!(ack.payload.len() <= 548);
    let m = decode(&ack);
    assert_eq!(m.xid(), 0xc1a9_377b);
    assert_eq!(m.yiaddr(), ip(15));
    let lease = s.leases().next().unwrap();
    assert_eq!(
        lease.hostname.as_ref().map(HostName::as_str),
        Some("guest1")
    );
    assert_eq!(
        lease.client_id.as_deref(),
        Some(&[1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56][..])
    );
}

#[test]
fn options_follow_request_list_and_always_include_udhcpc_needs() {
    let mut config = qemu_config();
    config.hostname = Some("vm".into());
    config.domain_name = Some("example.test".into());
    config.domain_search = vec!["example.test".into()];
    config.mtu = Some(1400);
    config.broadcast = Some(ip(255));
    let mut s = DhcpServer::new(config).unwrap();
    let mut m = message(MessageType::Discover, MAC_A);
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::BroadcastAddr,
        OptionCode::DomainName,
        OptionCode::SubnetMask,
    ]));
    let offer = handle(&mut s, &encode(&m), t0());
    assert_eq!(
        option_codes(&offer.payload),
        vec![53, 54, 51, 1, 3, 6, 28, 15, 12, 26, 119, 58, 59]
    );
}

#[test]
fn rfc3397_section2_example_encoding() {
    // RFC 3397 section 2: "eng.apple.com." and "marketing.apple.com.", the second
    // compressed to a pointer at offset 4 ("apple.com.").
    let mut config = qemu_config();
    config.domain_search = vec!["eng.apple.com".into(), "marketing.apple.com".into()];
    let mut s = DhcpServer::new(config).unwrap();
    let offer = handle(&mut s, &discover(MAC_A), t0());
    let expected: &[u8] = &[
        119, 27, 3, b'e', b'n', b'g', 5, b'a', b'p', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 9,
        b'm', b'a', b'r', b'k', b'e', b't', b'i', b'n', b'g', 0xc0, 0x04,
    ];
    assert!(
        offer.payload.windows(expected.len()).any(|w| w == expected),
        "option 119 not encoded as in RFC 3397: {:02x?}",
        offer.payload
    );
}

#[test]
fn reply_fits_576_unless_client_allows_more() {
    let mut config = qemu_config();
    config.dns_servers = (1..=63).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
    config.tftp_server_name = Some("t".repeat(200));
    config.boot_file = Some("b".repeat(100));
    config.domain_name = Some(format!("{}.test", "d".repeat(60)));
    let mut s = DhcpServer::new(config).unwrap();

    let small = handle(&mut s, &discover(MAC_A), t0());
    assert!(small.payload.len() <= 548, "{} bytes", small.payload.len());
    let codes = option_codes(&small.payload);
    for needed in [53, 54, 51, 1, 3, 6] {
        assert!(
            codes.contains(&needed),
            "option {needed} missing: {codes:?}"
        );
    }
    assert!(!codes.contains(&66), "option 66 cannot fit in 576 bytes");

    let mut m = message(MessageType::Discover, MAC_A);
    m.opts_mut().insert(DhcpOption::MaxMessageSize(1500));
    let big = handle(&mut s, &encode(&m), t0());
    assert!(big.payload.len() > 548 && big.payload.len() <= 1472);
    let codes = option_codes(&big.payload);
    for wanted in [15, 66, 67] {
        assert!(
            codes.contains(&wanted),
            "option {wanted} missing: {codes:?}"
        );
    }
    // The BOOTP `file` field (offset 108, 128 bytes, NUL-terminated).
    assert_eq!(&big.payload[108..208], "b".repeat(100).as_bytes());
    assert!(big.payload[208..236].iter().all(|&b| b == 0));
}

#[test]
fn requested_address_honoured_when_free() {
    let mut s = server();
    let mut m = message(MessageType::Discover, MAC_A);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(25)));
    assert_eq!(decode(&handle(&mut s, &encode(&m), t0())).yiaddr(), ip(25));
    // Outside the pool: ignored, a pool address is offered instead.
    let mut m = message(MessageType::Discover, MAC_B);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(100)));
    assert_eq!(decode(&handle(&mut s, &encode(&m), t0())).yiaddr(), ip(15));
}

#[test]
fn nak_for_addresses_not_ours_or_not_the_clients() {
    let mut s = server();
    let a = obtain(&mut s, MAC_A, t0());
    // INIT-REBOOT for another client's address.
    let nak = handle(&mut s, &init_reboot(MAC_B, a), t0());
    assert_eq!(nak.kind, ReplyKind::Nak);
    assert_eq!(nak.destination, ReplyDestination::Broadcast);
    let m = decode(&nak);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&m, OptionCode::AddressLeaseTime).is_none());
    // INIT-REBOOT for an address from another network (guest moved).
    let nak = handle(
        &mut s,
        &init_reboot(MAC_C, Ipv4Addr::new(192, 168, 1, 50)),
        t0(),
    );
    assert_eq!(nak.kind, ReplyKind::Nak);
    // RENEWING an address outside the pool.
    assert_eq!(
        handle(&mut s, &renew(MAC_C, ip(100)), t0()).kind,
        ReplyKind::Nak
    );
    // SELECTING with our server id but an address we would not give.
    assert_eq!(
        handle(&mut s, &select(MAC_C, a, SERVER), t0()).kind,
        ReplyKind::Nak
    );
    // The owner is untouched.
    assert_eq!(handle(&mut s, &renew(MAC_A, a), t0()).kind, ReplyKind::Ack);
}

#[test]
fn init_reboot_for_free_pool_address_is_acked() {
    // After a restart without saved leases, a returning client keeps its address.
    let mut s = server();
    let ack = handle(&mut s, &init_reboot(MAC_A, ip(22)), t0());
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(s.leases().next().unwrap().ip, ip(22));
}

#[test]
fn non_authoritative_server_stays_silent() {
    let mut config = qemu_config();
    config.authoritative = false;
    let mut s = DhcpServer::new(config).unwrap();
    let foreign = init_reboot(MAC_A, Ipv4Addr::new(192, 168, 1, 50));
    assert_eq!(s.handle(&foreign, t0()).unwrap(), None);
}

#[test]
fn request_for_other_server_releases_offer() {
    let mut config = qemu_config();
    config.pool = AddressPool::Range {
        start: ip(15),
        end: ip(15),
    };
    let mut s = DhcpServer::new(config).unwrap();
    assert_eq!(
        decode(&handle(&mut s, &discover(MAC_A), t0())).yiaddr(),
        ip(15)
    );
    // The only address is reserved for A's offer...
    assert_eq!(s.handle(&discover(MAC_B), t0()).unwrap(), None);
    // ...until A takes another server's offer.
    let other = select(
        MAC_A,
        Ipv4Addr::new(10, 0, 2, 99),
        Ipv4Addr::new(10, 0, 2, 1),
    );
    assert_eq!(s.handle(&other, t0()).unwrap(), None);
    assert_eq!(
        decode(&handle(&mut s, &discover(MAC_B), t0())).yiaddr(),
        ip(15)
    );
}

#[test]
fn static_hosts_always_get_their_address() {
    let mut config = qemu_config();
    config.hostname = Some("generic".into());
    config.static_hosts = vec![
        StaticHost {
            mac: MAC_A,
            ip: ip(100),
            name: Some("fixed".into()),
            lease_time: None,
        },
        StaticHost {
            mac: MAC_C,
            ip: ip(15),
            name: None,
            lease_time: None,
        },
    ];
    let mut s = DhcpServer::new(config).unwrap();
    let offer = handle(&mut s, &discover(MAC_A), t0());
    let m = decode(&offer);
    assert_eq!(m.yiaddr(), ip(100));
    assert_eq!(
        opt(&m, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("fixed".into()))
    );
    assert_eq!(obtain(&mut s, MAC_A, t0()), ip(100));
    // Asking for a pool address instead: refused.
    assert_eq!(
        handle(&mut s, &init_reboot(MAC_A, ip(16)), t0()).kind,
        ReplyKind::Nak
    );
    // .15 is reserved for C, so B gets .16, and the generic hostname.
    let offer = handle(&mut s, &discover(MAC_B), t0());
    let m = decode(&offer);
    assert_eq!(m.yiaddr(), ip(16));
    assert_eq!(
        opt(&m, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("generic".into()))
    );
    assert_eq!(
        handle(&mut s, &init_reboot(MAC_B, ip(15)), t0()).kind,
        ReplyKind::Nak
    );
    assert_eq!(obtain(&mut s, MAC_C, t0()), ip(15));
}

#[test]
fn live_static_host_update_takes_address_from_dynamic_client() {
    let mut s = server();
    let a = obtain(&mut s, MAC_A, t0());
    s.set_static_hosts(vec![StaticHost {
        mac: MAC_B,
        ip: a,
        name: None,
        lease_time: None,
    }])
    .unwrap();
    assert_eq!(obtain(&mut s, MAC_B, t0()), a);
    assert_eq!(handle(&mut s, &renew(MAC_A, a), t0()).kind, ReplyKind::Nak);
    assert_ne!(obtain(&mut s, MAC_A, t0()), a);
    // Invalid updates are refused and leave the hosts alone.
    let bad = vec![StaticHost {
        mac: MAC_C,
        ip: Ipv4Addr::new(192, 168, 0, 1),
        name: None,
        lease_time: None,
    }];
    assert!(matches!(
        s.set_static_hosts(bad),
        Err(DhcpConfigError::OutsideSubnet { .. })
    ));
    assert_eq!(s.config().static_hosts.len(), 1);
}

#[test]
fn inform_gets_ack_without_lease() {
    let mut s = server();
    let mut m = message(MessageType::Inform, MAC_A);
    m.set_ciaddr(ip(77));
    let ack = handle(&mut s, &encode(&m), t0());
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(ack.destination, ReplyDestination::Unicast(ip(77)));
    let m = decode(&ack);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&m, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&m, OptionCode::Renewal).is_none());
    assert!(opt(&m, OptionCode::DomainNameServer).is_some());
    assert_eq!(s.leases().count(), 0);
}

#[test]
fn exhaustion_gives_no_offer_until_a_lease_expires() {
    let mut config = qemu_config();
    config.pool = AddressPool::Range {
        start: ip(15),
        end: ip(16),
    };
    let mut s = DhcpServer::new(config).unwrap();
    obtain(&mut s, MAC_A, t0());
    obtain(&mut s, MAC_B, t0());
    assert_eq!(s.handle(&discover(MAC_C), t0()).unwrap(), None);
    assert_eq!(s.handle(&discover(MAC_C), t0() + DAY / 2).unwrap(), None);
    // A's and B's leases have ended: C gets one of their addresses.
    let after = t0() + DAY + Duration::from_secs(1);
    let c = obtain(&mut s, MAC_C, after);
    assert!(c == ip(15) || c == ip(16));
    // And the old owner of that address is refused it now.
    let owner = if c == ip(15) { MAC_A } else { MAC_B };
    assert_eq!(handle(&mut s, &renew(owner, c), after).kind, ReplyKind::Nak);
}

#[test]
fn release_frees_the_address() {
    let mut config = qemu_config();
    config.pool = AddressPool::Range {
        start: ip(15),
        end: ip(15),
    };
    let mut s = DhcpServer::new(config).unwrap();
    let a = obtain(&mut s, MAC_A, t0());
    assert_eq!(s.handle(&discover(MAC_B), t0()).unwrap(), None);
    let mut m = message(MessageType::Release, MAC_A);
    m.set_ciaddr(a);
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    assert_eq!(s.handle(&encode(&m), t0()).unwrap(), None);
    let lease = s.leases().next().unwrap();
    assert!(!lease.is_active(t0()));
    assert_eq!(obtain(&mut s, MAC_B, t0()), a);
}

#[test]
fn declined_address_is_not_offered_again_for_a_while() {
    let mut s = server();
    let a = obtain(&mut s, MAC_A, t0());
    let mut m = message(MessageType::Decline, MAC_A);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    assert_eq!(s.handle(&encode(&m), t0()).unwrap(), None);
    assert_eq!(s.leases().count(), 0);
    assert_ne!(obtain(&mut s, MAC_A, t0()), a);
    assert_ne!(obtain(&mut s, MAC_B, t0()), a);
    // Hours later the address is usable again.
    assert_eq!(obtain(&mut s, MAC_C, t0() + DAY / 4), a);
}

#[test]
fn restored_leases_are_kept_and_bad_ones_dropped() {
    let mut s = server();
    let saved = vec![
        Lease {
            mac: MAC_A,
            ip: ip(20),
            hostname: Some(host_name("a")),
            client_id: None,
            expires: Some(t0() + DAY),
        },
        Lease {
            mac: MAC_B,
            ip: ip(200),
            hostname: None,
            client_id: None,
            expires: Some(t0() + DAY),
        },
        Lease {
            mac: MAC_C,
            ip: ip(20),
            hostname: None,
            client_id: None,
            expires: None,
        },
    ];
    s.restore_leases(saved.clone());
    assert_eq!(
        s.leases().cloned().collect::<Vec<_>>(),
        vec![saved[0].clone()]
    );
    assert_eq!(obtain(&mut s, MAC_A, t0()), ip(20));
    assert_eq!(obtain(&mut s, MAC_B, t0()), ip(15));
}

#[test]
fn client_id_identifies_the_client() {
    let mut s = server();
    let with_id = |id: &[u8]| {
        let mut m = message(MessageType::Discover, MAC_A);
        m.opts_mut()
            .insert(DhcpOption::ClientIdentifier(id.to_vec()));
        encode(&m)
    };
    let one = decode(&handle(&mut s, &with_id(b"\x01one"), t0())).yiaddr();
    let two = decode(&handle(&mut s, &with_id(b"\x01two"), t0())).yiaddr();
    assert_ne!(one, two);
    assert_eq!(
        decode(&handle(&mut s, &with_id(b"\x01one"), t0())).yiaddr(),
        one
    );
}

#[test]
fn infinite_lease() {
    let mut config = qemu_config();
    config.lease_time = None;
    let mut s = DhcpServer::new(config).unwrap();
    let ack = handle(&mut s, &select(MAC_A, ip(15), SERVER), t0());
    let m = decode(&ack);
    assert_eq!(
        opt(&m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(u32::MAX))
    );
    assert!(opt(&m, OptionCode::Renewal).is_none());
    assert_eq!(s.leases().next().unwrap().expires, None);
}

#[test]
fn malformed_requests_are_errors() {
    let mut s = server();
    let good = discover(MAC_A);
    assert_eq!(s.handle(&good[..100], t0()), Err(DhcpError::Truncated(100)));
    let mut reply_op = good.clone();
    reply_op[0] = 2;
    assert_eq!(s.handle(&reply_op, t0()), Err(DhcpError::NotBootRequest(2)));
    let mut htype = good.clone();
    htype[1] = 6;
    assert_eq!(
        s.handle(&htype, t0()),
        Err(DhcpError::UnsupportedHardware { htype: 6, hlen: 6 })
    );
    let mut hlen = good.clone();
    hlen[2] = 16;
    assert!(matches!(
        s.handle(&hlen, t0()),
        Err(DhcpError::UnsupportedHardware { .. })
    ));
    let mut magic = good.clone();
    magic[236] = 0;
    assert!(matches!(
        s.handle(&magic, t0()),
        Err(DhcpError::BadMagic(_))
    ));
    let mut bootp = good.clone();
    bootp.truncate(240);
    bootp.push(255);
    assert_eq!(s.handle(&bootp, t0()), Err(DhcpError::MissingMessageType));
    let mut cut_option = good[..240].to_vec();
    cut_option.extend_from_slice(&[53, 1, 1, 50, 4, 10, 0]);
    assert_eq!(
        s.handle(&cut_option, t0()),
        Err(DhcpError::BadOption {
            code: 50,
            offset: 243,
            reason: "runs past the end of the message"
        })
    );
    let mut short_type = good[..240].to_vec();
    short_type.extend_from_slice(&[53, 2, 1, 1, 255]);
    assert!(matches!(
        s.handle(&short_type, t0()),
        Err(DhcpError::BadOption { code: 53, .. })
    ));
    let offer = encode(&message(MessageType::Offer, MAC_A));
    assert_eq!(
        s.handle(&offer, t0()),
        Err(DhcpError::UnexpectedMessageType(2))
    );
    let empty_request = encode(&message(MessageType::Request, MAC_A));
    assert_eq!(
        s.handle(&empty_request, t0()),
        Err(DhcpError::RequestWithoutAddress)
    );
}

#[test]
fn invalid_configurations_are_refused() {
    let check = |f: fn(&mut DhcpConfig)| {
        let mut c = qemu_config();
        f(&mut c);
        DhcpServer::new(c).unwrap_err()
    };
    assert_eq!(
        check(|c| c.netmask = Ipv4Addr::new(255, 0, 255, 0)),
        DhcpConfigError::BadNetmask(Ipv4Addr::new(255, 0, 255, 0))
    );
    assert!(matches!(
        check(|c| c.pool = AddressPool::Range {
            start: ip(1),
            end: ip(20)
        }),
        DhcpConfigError::ContainsServer { .. }
    ));
    assert!(matches!(
        check(|c| c.pool = AddressPool::Range {
            start: ip(15),
            end: Ipv4Addr::new(10, 0, 3, 1)
        }),
        DhcpConfigError::OutsideSubnet { .. }
    ));
    assert!(matches!(
        check(|c| c.pool = AddressPool::Range {
            start: ip(20),
            end: ip(15)
        }),
        DhcpConfigError::EmptyRange { .. }
    ));
    assert!(matches!(
        check(|c| c.pool = AddressPool::Range {
            start: ip(15),
            end: ip(255)
        }),
        DhcpConfigError::OutsideSubnet { .. }
    ));
    assert!(matches!(
        check(|c| c.domain_search = vec!["bad domain".into()]),
        DhcpConfigError::BadName { .. }
    ));
    assert!(matches!(
        check(|c| c.hostname = Some(String::new())),
        DhcpConfigError::BadName { .. }
    ));
    assert!(matches!(
        check(|c| c.lease_time = Some(Duration::ZERO)),
        DhcpConfigError::BadLeaseTime(_)
    ));
    assert!(matches!(
        check(|c| c.boot_file = Some("x".repeat(128))),
        DhcpConfigError::TooLong { .. }
    ));
    assert!(matches!(
        check(|c| c.static_hosts = vec![
            StaticHost {
                mac: MAC_A,
                ip: ip(50),
                name: None,
                lease_time: None
            },
            StaticHost {
                mac: MAC_A,
                ip: ip(51),
                name: None,
                lease_time: None
            },
        ]),
        DhcpConfigError::DuplicateMac(_)
    ));
    assert!(matches!(
        check(|c| c.static_hosts = vec![StaticHost {
            mac: MAC_A,
            ip: SERVER,
            name: None,
            lease_time: None
        }]),
        DhcpConfigError::ContainsServer { .. }
    ));
    assert_eq!(check(|c| c.mtu = Some(10)), DhcpConfigError::BadMtu(10));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = server().handle(&bytes, t0());
        }

        #[test]
        fn random_options_after_valid_header_never_panic(
            kind in 1u8..=18,
            opts in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut bytes = hex(UDHCPC_DISCOVER);
            bytes.truncate(240);
            bytes.extend_from_slice(&[53, 1, kind]);
            bytes.extend_from_slice(&opts);
            let mut s = server();
            let _ = s.handle(&bytes, t0());
            let _ = s.handle(&bytes, t0());
        }

        #[test]
        fn truncated_or_mutated_valid_messages_never_panic(
            cut in 0usize..400,
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..8),
        ) {
            let mut s = server();
            for msg in [hex(UDHCPC_DISCOVER), select(MAC_A, ip(15), SERVER), renew(MAC_B, ip(16))] {
                let mut bytes = msg[..cut.min(msg.len())].to_vec();
                let _ = s.handle(&bytes, t0());
                bytes = msg.clone();
                for &(at, value) in &flips {
                    if at < bytes.len() {
                        bytes[at] = value;
                    }
                }
                if let Ok(Some(reply)) = s.handle(&bytes, t0()) {
                    prop_assert!(reply.payload.len() <= 548);
                }
            }
        }
    }
}

#[test]
fn static_hosts_have_their_own_lease_time() {
    let mut config = qemu_config();
    config.static_hosts = vec![
        StaticHost {
            mac: MAC_A,
            ip: ip(100),
            name: None,
            lease_time: Some(Some(Duration::from_secs(600))),
        },
        StaticHost {
            mac: MAC_C,
            ip: ip(15),
            name: None,
            lease_time: Some(None),
        },
    ];
    let mut s = DhcpServer::new(config.clone()).unwrap();
    let m = decode(&handle(&mut s, &discover(MAC_A), t0()));
    assert_eq!(
        opt(&m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        opt(&m, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(300))
    );
    // Infinite: all ones, and no renewal times.
    let m = decode(&handle(&mut s, &discover(MAC_C), t0()));
    assert_eq!(
        opt(&m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(u32::MAX))
    );
    assert_eq!(opt(&m, OptionCode::Renewal), None);
    // Other clients keep the server's lease time.
    let m = decode(&handle(&mut s, &discover(MAC_B), t0()));
    assert_eq!(
        opt(&m, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(DAY.as_secs() as u32))
    );
    obtain(&mut s, MAC_A, t0());
    obtain(&mut s, MAC_C, t0());
    let expiry = |mac| s.leases().find(|l| l.mac == mac).unwrap().expires;
    assert_eq!(expiry(MAC_A), Some(t0() + Duration::from_secs(600)));
    assert_eq!(expiry(MAC_C), None);
    // A zero per-host lease time is refused as a zero server one is.
    config.static_hosts[0].lease_time = Some(Some(Duration::ZERO));
    assert!(matches!(
        DhcpServer::new(config),
        Err(DhcpConfigError::BadLeaseTime(_))
    ));
}
