//! Stateless DHCPv6 (RFC 8415 section 6.1): answers INFORMATION-REQUEST
//! with DNS servers (RFC 3646) and the domain search list.
//!
//! Addresses come from SLAAC (router advertisements with the O flag set
//! tell clients to ask here for the rest), so the server keeps no state
//! and hands out no address: stateful messages (SOLICIT, REQUEST, ...) are
//! ignored, as RFC 8415 lets a server without addresses do. Like the DHCPv4
//! server this is pure logic over byte slices, shared by the user-mode
//! stack (payloads from guest frames) and bridge networks (a real socket on
//! port 547); messages are decoded and encoded with `dhcproto`'s v6 support.

use std::net::Ipv6Addr;
use std::str::FromStr;

use dhcproto::v6::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Name};

/// UDP port DHCPv6 servers listen on.
pub const SERVER_PORT: u16 = 547;
/// UDP port DHCPv6 clients listen on.
pub const CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers (ff02::1:2): where clients send.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// How long a client may keep the information (RFC 8415's default, 24 h).
const INFORMATION_REFRESH_SECS: u32 = 86400;

/// What the stateless server hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcpv6Config {
    /// The server's link-layer address, from which its DUID (DUID-LL,
    /// RFC 8415 section 11.4) is made.
    pub server_mac: [u8; 6],
    /// DNS servers (option 23); none leaves the option out.
    pub dns_servers: Vec<Ipv6Addr>,
    /// Domain search list (option 24), in order; none leaves it out.
    pub domain_search: Vec<String>,
}

/// A configuration the server cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dhcpv6ConfigError {
    /// A search domain is not a valid DNS name.
    #[error("DHCPv6 search domain '{0}' is not a valid DNS name")]
    BadDomain(String),
}

/// Why a message got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dhcpv6Error {
    /// The message does not decode (truncated, bad option lengths...).
    #[error("DHCPv6 message does not decode: {0}")]
    Decode(String),
    /// The reply could not be encoded (a configuration beyond the format's limits).
    #[error("DHCPv6 reply does not encode: {0}")]
    Encode(String),
}

/// The stateless DHCPv6 server.
#[derive(Clone, Debug)]
pub struct Dhcpv6Server {
    duid: Vec<u8>,
    dns_servers: Vec<Ipv6Addr>,
    domain_search: Vec<Name>,
}

impl Dhcpv6Server {
    /// A server for `cfg`; fails on a search domain that is not a DNS name.
    pub fn new(cfg: &Dhcpv6Config) -> Result<Self, Dhcpv6ConfigError> {
        let domain_search = cfg
            .domain_search
            .iter()
            .map(|d| {
                // Fully qualified, so the encoding ends with the root label.
                let fqdn = if d.ends_with('.') {
                    d.clone()
                } else {
                    format!("{d}.")
                };
                Name::from_str(&fqdn).map_err(|_| Dhcpv6ConfigError::BadDomain(d.clone()))
            })
            .collect::<Result<_, _>>()?;
        // DUID-LL: type 3, hardware type 1 (Ethernet), the address.
        let mut duid = vec![0, 3, 0, 1];
        duid.extend_from_slice(&cfg.server_mac);
        Ok(Dhcpv6Server {
            duid,
            dns_servers: cfg.dns_servers.clone(),
            domain_search,
        })
    }

    /// The server's DUID (its Server Identifier option's content).
    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// Answers one client message (the UDP payload sent to port 547).
    /// `Ok(None)` means no answer is due: a message type this stateless
    /// server does not serve, or one meant for another server.
    pub fn handle(&self, request: &[u8]) -> Result<Option<Vec<u8>>, Dhcpv6Error> {
        if let Some(tail) = request.get(MESSAGE_HEADER_LEN..) {
            check_option_lengths(tail, 0)?;
        }
        let msg = Message::decode(&mut Decoder::new(request))
            .map_err(|e| Dhcpv6Error::Decode(e.to_string()))?;
        if msg.msg_type() != MessageType::InformationRequest {
            return Ok(None);
        }
        let opts = msg.opts();
        if let Some(DhcpOption::ServerId(id)) = opts.get(OptionCode::ServerId) {
            if *id != self.duid {
                return Ok(None);
            }
        }
        // RFC 8415 16.12: an INFORMATION-REQUEST carrying IA options is
        // discarded.
        if opts.iter().any(|o| {
            matches!(
                o,
                DhcpOption::IANA(_) | DhcpOption::IATA(_) | DhcpOption::IAPD(_)
            )
        }) {
            return Ok(None);
        }
        let mut reply = Message::new_with_id(MessageType::Reply, msg.xid());
        let out = reply.opts_mut();
        out.insert(DhcpOption::ServerId(self.duid.clone()));
        if let Some(DhcpOption::ClientId(id)) = opts.get(OptionCode::ClientId) {
            out.insert(DhcpOption::ClientId(id.clone()));
        }
        if !self.dns_servers.is_empty() {
            out.insert(DhcpOption::DomainNameServers(self.dns_servers.clone()));
        }
        if !self.domain_search.is_empty() {
            out.insert(DhcpOption::DomainSearchList(self.domain_search.clone()));
        }
        out.insert(DhcpOption::InformationRefreshTime(INFORMATION_REFRESH_SECS));
        reply
            .to_vec()
            .map(Some)
            .map_err(|e| Dhcpv6Error::Encode(e.to_string()))
    }
}

/// Client message header: type and transaction ID.
const MESSAGE_HEADER_LEN: usize = 4;
/// Relay message header: type, hop count, link and peer addresses
/// (`dhcproto` decodes every relayed message with it).
const RELAY_HEADER_LEN: usize = 34;
/// Nesting deeper than this (relay in relay in IA in ...) is refused.
const MAX_OPTION_DEPTH: usize = 8;

/// Refuses options shorter than their fixed part before `dhcproto` sees
/// them: its decoder subtracts the fixed part from the length (status
/// code, vendor class and options, authentication), which overflows (a
/// panic with overflow checks) on a hostile message; and options of fixed
/// size with another length, which it would read past. Found by the
/// `dhcpv6_request` fuzz target. Walks nested options (IA_NA, IA_TA,
/// IA_PD, IA addresses and prefixes, vendor options, relayed messages),
/// which `dhcproto` decodes the same way.
fn check_option_lengths(mut opts: &[u8], depth: usize) -> Result<(), Dhcpv6Error> {
    let bad = |what: String| Err(Dhcpv6Error::Decode(what));
    if depth > MAX_OPTION_DEPTH {
        return bad("options nested too deep".into());
    }
    while opts.len() >= 4 {
        let code = u16::from_be_bytes([opts[0], opts[1]]);
        let len = usize::from(u16::from_be_bytes([opts[2], opts[3]]));
        let Some(body) = opts.get(4..4 + len) else {
            return bad(format!("option {code} longer than the message"));
        };
        // (fixed part before nested options or data, whether nested options follow)
        let (fixed, nested) = match code {
            3 | 25 => (12, true),          // IA_NA, IA_PD
            4 | 17 => (4, true),           // IA_TA, vendor options
            5 => (24, true),               // IA address
            26 => (25, true),              // IA prefix
            11 => (11, false),             // authentication
            13 => (2, false),              // status code
            16 => (4, false),              // vendor class
            9 => (RELAY_HEADER_LEN, true), // relay message (decoded as a relay's)
            _ => (0, false),
        };
        if len < fixed {
            return bad(format!(
                "option {code} of {len} bytes is shorter than its fixed part"
            ));
        }
        // Options `dhcproto` reads at their fixed size whatever the length
        // says: another length would desynchronise it from the walk here.
        let exact = match code {
            7 | 19 => Some(1),  // preference, reconfigure message
            8 => Some(2),       // elapsed time
            12 => Some(16),     // server unicast
            14 | 20 => Some(0), // rapid commit, reconfigure accept
            _ => None,
        };
        if exact.is_some_and(|size| size != len) {
            return bad(format!("option {code} of {len} bytes has a fixed size"));
        }
        if nested {
            check_option_lengths(&body[fixed..], depth + 1)?;
        }
        opts = &opts[4 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

    fn server(dns: &[&str], search: &[&str]) -> Dhcpv6Server {
        Dhcpv6Server::new(&Dhcpv6Config {
            server_mac: MAC,
            dns_servers: dns.iter().map(|d| d.parse().unwrap()).collect(),
            domain_search: search.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    /// An INFORMATION-REQUEST as busybox udhcpc6 -l sends it: client ID
    /// (DUID-LL), option request for DNS servers and search list, elapsed
    /// time.
    fn info_request() -> Vec<u8> {
        vec![
            11, 0x12, 0x34, 0x56, // INFORMATION-REQUEST, xid
            0, 1, 0, 10, 0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, // client ID
            0, 6, 0, 4, 0, 23, 0, 24, // ORO: DNS servers, domain list
            0, 8, 0, 2, 0, 0, // elapsed time
        ]
    }

    /// Found by the `dhcpv6_request` fuzz target: options shorter than
    /// their fixed part, at the top and nested, are refused as undecodable
    /// instead of overflowing in the decoder.
    #[test]
    fn short_fixed_part_options_are_refused_not_a_panic() {
        let s = server(&["fec0::3"], &[]);
        // The fuzzer's input: a vendor class (16) of 0 bytes inside an
        // IA_NA-like container, after a short client ID.
        let found = [
            0x0b, 0x17, 0x00, 0x18, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x80, 0x12, 0x00,
        ];
        assert!(!matches!(s.handle(&found), Ok(Some(_))));
        // The second finding: an elapsed time of length 0 (read as 2 bytes
        // anyway) hid a vendor-options header of length 0 behind it.
        let found = [
            0x0b, 0x17, 0x00, 0x18, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00,
            0x0a, 0x00, 0xc1, 0x00,
        ];
        assert!(matches!(s.handle(&found), Err(Dhcpv6Error::Decode(_))));
        // The third: a relayed message shorter than a relay header, which
        // `dhcproto` decodes as a relay's whatever its type.
        let found = [
            0x35, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09,
            0x00, 0x2e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x17,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x43, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert!(matches!(s.handle(&found), Err(Dhcpv6Error::Decode(_))));
        for (code, len) in [(13_u16, 1_u16), (16, 3), (17, 2), (11, 10), (8, 0), (7, 2)] {
            let mut msg = info_request();
            msg.extend_from_slice(&code.to_be_bytes());
            msg.extend_from_slice(&len.to_be_bytes());
            msg.extend(std::iter::repeat_n(0, usize::from(len)));
            assert!(
                matches!(s.handle(&msg), Err(Dhcpv6Error::Decode(_))),
                "{code}"
            );
            // The same inside an IA_NA.
            let mut msg = info_request();
            msg.extend_from_slice(&3_u16.to_be_bytes());
            msg.extend_from_slice(&(12 + 4 + len).to_be_bytes());
            msg.extend_from_slice(&[0; 12]);
            msg.extend_from_slice(&code.to_be_bytes());
            msg.extend_from_slice(&len.to_be_bytes());
            msg.extend(std::iter::repeat_n(0, usize::from(len)));
            assert!(
                matches!(s.handle(&msg), Err(Dhcpv6Error::Decode(_))),
                "nested {code}"
            );
        }
    }

    #[test]
    fn information_request_gets_dns_and_search_list() {
        let reply = server(&["fec0::3"], &["example.test"])
            .handle(&info_request())
            .unwrap()
            .unwrap();
        let mut want = vec![7, 0x12, 0x34, 0x56];
        // Options in code order: client ID (1), server ID (2), DNS (23),
        // domain list (24), information refresh time (32).
        want.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        want.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1, 0x52, 0x55, 10, 0, 2, 2]);
        want.extend_from_slice(&[0, 23, 0, 16, 0xfe, 0xc0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        want.extend_from_slice(&[0, 24, 0, 14, 7]);
        want.extend_from_slice(b"example");
        want.extend_from_slice(&[4]);
        want.extend_from_slice(b"test");
        want.extend_from_slice(&[0]);
        want.extend_from_slice(&[0, 32, 0, 4, 0, 1, 0x51, 0x80]);
        assert_eq!(reply, want);
    }

    #[test]
    fn empty_lists_leave_options_out() {
        let reply = server(&[], &[]).handle(&info_request()).unwrap().unwrap();
        let msg = Message::decode(&mut Decoder::new(&reply)).unwrap();
        assert!(msg.opts().get(OptionCode::DomainNameServers).is_none());
        assert!(msg.opts().get(OptionCode::DomainSearchList).is_none());
        assert!(msg.opts().get(OptionCode::ServerId).is_some());
    }

    #[test]
    fn stateful_foreign_and_ia_messages_get_no_answer() {
        let s = server(&["fec0::3"], &[]);
        let mut solicit = info_request();
        solicit[0] = 1;
        assert_eq!(s.handle(&solicit), Ok(None));
        let mut foreign = info_request();
        foreign.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(s.handle(&foreign), Ok(None));
        let mut ours = info_request();
        ours.extend_from_slice(&[0, 2, 0, 10]);
        ours.extend_from_slice(s.duid());
        assert!(s.handle(&ours).unwrap().is_some());
        let mut with_ia = info_request();
        with_ia.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.handle(&with_ia), Ok(None));
        assert!(matches!(s.handle(&[11, 1]), Err(Dhcpv6Error::Decode(_))));
    }

    #[test]
    fn bad_search_domain_is_refused() {
        let err = Dhcpv6Server::new(&Dhcpv6Config {
            server_mac: MAC,
            dns_servers: Vec::new(),
            domain_search: vec!["a..b".into()],
        })
        .unwrap_err();
        assert_eq!(err, Dhcpv6ConfigError::BadDomain("a..b".into()));
    }

    proptest! {
        #[test]
        fn random_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = server(&["fec0::3"], &["a.test"]).handle(&bytes);
        }

        #[test]
        fn truncated_and_damaged_requests_never_panic(
            cut in 0usize..40,
            damage in prop::collection::vec((0usize..40, any::<u8>()), 0..6),
        ) {
            let mut req = info_request();
            for (at, b) in damage {
                if at < req.len() {
                    req[at] = b;
                }
            }
            req.truncate(cut);
            let _ = server(&["fec0::3"], &["a.test"]).handle(&req);
        }
    }
}
