//! Building reply messages: header fields, option choice and order, size limits,
//! and where a reply goes (RFC 2131 section 4.1).

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Encodable, Encoder};

use crate::config::DhcpConfig;
use crate::request::Request;

/// A reply to send from UDP port 67 to port 68.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpReply {
    /// The UDP payload.
    pub payload: Vec<u8>,
    /// The IPv4 destination (RFC 2131 4.1; relay agents are not supported, `giaddr` is ignored).
    pub destination: ReplyDestination,
    /// The client's hardware address: the Ethernet destination of a unicast reply
    /// (broadcast replies go to `ff:ff:ff:ff:ff:ff`).
    pub client_mac: [u8; 6],
    /// Which reply this is.
    pub kind: ReplyKind,
}

/// Where a reply goes at the IP level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyDestination {
    /// To 255.255.255.255 (Ethernet broadcast).
    Broadcast,
    /// To the client's own address (`ciaddr`): it is configured, and answers ARP.
    Unicast(Ipv4Addr),
    /// To the address this very reply offers or acknowledges to the client
    /// (`yiaddr`), at the client's MAC: the client does not answer ARP for it
    /// yet, so the sender tells its neighbour table (the only reply where it
    /// may: any other address is the client's own claim).
    Assigned(Ipv4Addr),
}

/// The DHCP message type of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// DHCPOFFER, answering a DISCOVER.
    Offer,
    /// DHCPACK, answering a REQUEST or an INFORM.
    Ack,
    /// DHCPNAK, refusing a REQUEST.
    Nak,
}

/// Smallest reply we send: BOOTP relays and some old clients drop shorter messages (RFC 1542).
const MIN_PAYLOAD: usize = 300;
/// IPv4 + UDP header bytes, counted in the RFC 2131 576-byte minimum and in option 57.
const IP_UDP_HEADERS: usize = 28;
/// Replies are never bigger than an unfragmented Ethernet datagram, whatever option 57 says.
const MAX_DATAGRAM: usize = 1500;
/// Every client must accept a 576-byte datagram (RFC 2131 section 2).
const MIN_DATAGRAM: usize = 576;
/// Options sent whenever configured, in this priority order, before the client's own list.
const ALWAYS_FIRST: [OptionCode; 6] = [
    OptionCode::MessageType,
    OptionCode::ServerIdentifier,
    OptionCode::AddressLeaseTime,
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
];
/// Options sent when configured even if not requested (busybox udhcpc needs 12, 15, 26, 119),
/// after the client's list, in this order.
const ALSO_SENT: [OptionCode; 9] = [
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::DomainSearch,
    OptionCode::BroadcastAddr,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::TFTPServerName,
    OptionCode::BootfileName,
];

/// What a reply says besides the configuration.
pub(crate) struct ReplyParams<'a> {
    pub kind: ReplyKind,
    /// The address given (`yiaddr`); unspecified for NAK and INFORM replies.
    pub yiaddr: Ipv4Addr,
    /// Include lease times (OFFER/ACK to DISCOVER/REQUEST, not INFORM).
    pub with_lease: bool,
    /// This client's lease time (`None`: infinite).
    pub lease_time: Option<Duration>,
    /// Option 12 for this client.
    pub hostname: Option<&'a str>,
}

/// Builds a reply to `request` (a parsed, validated BOOTREQUEST).
pub(crate) fn build(config: &DhcpConfig, request: &Request, params: ReplyParams<'_>) -> DhcpReply {
    let client_mac = request.mac;
    let is_nak = params.kind == ReplyKind::Nak;

    // RFC 2131 table 3: ciaddr echoed only in ACKs, siaddr/file only in OFFER/ACK.
    let ciaddr = if params.kind == ReplyKind::Ack {
        request.ciaddr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let siaddr = if is_nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        config.next_server.unwrap_or(config.server_ip)
    };
    let mut header = Message::new_with_id(
        request.xid,
        ciaddr,
        params.yiaddr,
        siaddr,
        request.giaddr,
        &client_mac,
    );
    header
        .set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(Flags::new(request.flags));
    if let (false, Some(file)) = (is_nak, &config.boot_file) {
        header.set_fname_str(file);
    }

    let mut payload = Vec::with_capacity(MIN_DATAGRAM);
    // Lengths were validated with the configuration, so encoding cannot fail.
    let _ = header.encode(&mut Encoder::new(&mut payload));

    let limit = payload_limit(request);
    for option in options(config, request, &params) {
        let mut bytes = Vec::new();
        if option.encode(&mut Encoder::new(&mut bytes)).is_err() {
            tracing::warn!(code = ?OptionCode::from(&option), "DHCP option could not be encoded; left out");
            continue;
        }
        // Keep one byte for the End option.
        if payload.len() + bytes.len() < limit {
            payload.extend_from_slice(&bytes);
        } else {
            tracing::debug!(code = ?OptionCode::from(&option), limit, "DHCP option does not fit the client's size limit; left out");
        }
    }
    payload.push(u8::from(OptionCode::End));
    if payload.len() < MIN_PAYLOAD {
        payload.resize(MIN_PAYLOAD, 0);
    }

    DhcpReply {
        payload,
        destination: destination(request, params.kind, params.yiaddr),
        client_mac,
        kind: params.kind,
    }
}

/// The largest UDP payload the client accepts: 576-byte datagrams always, more if
/// option 57 says so (it counts the IP and UDP headers, as the 576 of RFC 2131 does).
fn payload_limit(request: &Request) -> usize {
    let datagram = request.max_message_size.map_or(MIN_DATAGRAM, |n| {
        usize::from(n).clamp(MIN_DATAGRAM, MAX_DATAGRAM)
    });
    datagram - IP_UDP_HEADERS
}

/// The options of a reply, most important first.
fn options(config: &DhcpConfig, request: &Request, params: &ReplyParams<'_>) -> Vec<DhcpOption> {
    let message_type = match params.kind {
        ReplyKind::Offer => MessageType::Offer,
        ReplyKind::Ack => MessageType::Ack,
        ReplyKind::Nak => MessageType::Nak,
    };
    let mut out = vec![
        DhcpOption::MessageType(message_type),
        DhcpOption::ServerIdentifier(config.server_ip),
    ];
    if params.kind == ReplyKind::Nak {
        out.push(DhcpOption::Message(
            "requested address not available".to_string(),
        ));
        return out;
    }

    let order = ALWAYS_FIRST[2..]
        .iter()
        .copied()
        .chain(request.parameters.iter().map(|&c| OptionCode::from(c)))
        .chain(ALSO_SENT);
    let mut seen = Vec::with_capacity(ALWAYS_FIRST.len() + ALSO_SENT.len());
    for code in order {
        if seen.contains(&code) {
            continue;
        }
        seen.push(code);
        if let Some(option) = option_value(config, params, code) {
            out.push(option);
        }
    }
    out
}

/// The value of option `code` for this reply, when configured and one we send.
fn option_value(
    config: &DhcpConfig,
    params: &ReplyParams<'_>,
    code: OptionCode,
) -> Option<DhcpOption> {
    let lease_secs = params
        .lease_time
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    match code {
        OptionCode::AddressLeaseTime if params.with_lease => {
            Some(DhcpOption::AddressLeaseTime(lease_secs.unwrap_or(u32::MAX)))
        }
        // T1/T2 only make sense for finite leases (RFC 2131 4.4.5 defaults: 0.5 and 0.875).
        OptionCode::Renewal if params.with_lease => lease_secs.map(|s| DhcpOption::Renewal(s / 2)),
        OptionCode::Rebinding if params.with_lease => {
            lease_secs.map(|s| DhcpOption::Rebinding((u64::from(s) * 7 / 8) as u32))
        }
        OptionCode::SubnetMask => Some(DhcpOption::SubnetMask(config.netmask)),
        OptionCode::Router => config.router.map(|r| DhcpOption::Router(vec![r])),
        OptionCode::DomainNameServer if !config.dns_servers.is_empty() => {
            Some(DhcpOption::DomainNameServer(config.dns_servers.clone()))
        }
        OptionCode::Hostname => params.hostname.map(|h| DhcpOption::Hostname(h.to_string())),
        OptionCode::DomainName => config.domain_name.clone().map(DhcpOption::DomainName),
        OptionCode::InterfaceMtu => config.mtu.map(DhcpOption::InterfaceMtu),
        OptionCode::DomainSearch if !config.domain_search.is_empty() => {
            Some(DhcpOption::DomainSearch(config.search_names()))
        }
        OptionCode::BroadcastAddr => config.broadcast.map(DhcpOption::BroadcastAddr),
        OptionCode::TFTPServerName => config
            .tftp_server_name
            .as_ref()
            .map(|n| DhcpOption::TFTPServerName(n.as_bytes().to_vec())),
        OptionCode::BootfileName => config
            .boot_file
            .as_ref()
            .map(|f| DhcpOption::BootfileName(f.as_bytes().to_vec())),
        _ => None,
    }
}

/// RFC 2131 section 4.1, without relay agents: NAKs are broadcast; a client with an
/// address (ciaddr) gets unicast there; otherwise the broadcast flag decides between
/// broadcast and unicast to the new address at the client's MAC (as dnsmasq does,
/// the only case that needs a neighbour entry).
fn destination(request: &Request, kind: ReplyKind, yiaddr: Ipv4Addr) -> ReplyDestination {
    let ciaddr = request.ciaddr;
    if kind == ReplyKind::Nak {
        ReplyDestination::Broadcast
    } else if !ciaddr.is_unspecified() {
        ReplyDestination::Unicast(ciaddr)
    } else if request.broadcast_flag() || yiaddr.is_unspecified() {
        ReplyDestination::Broadcast
    } else {
        ReplyDestination::Assigned(yiaddr)
    }
}
