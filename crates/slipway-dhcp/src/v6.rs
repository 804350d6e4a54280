//! DHCPv6 (RFC 8415): stateless service, INFORMATION-REQUEST answered
//! with DNS servers (RFC 3646) and the domain search list, for clients
//! that configure their addresses by SLAAC (router advertisements with the
//! O flag); and, when given a range ([`Dhcpv6Server::with_pool`]),
//! stateful service: addresses leased in IA_NA options (module
//! `stateful`), for advertisements with the M flag.
//!
//! Without a range the server keeps no state and ignores stateful
//! messages (SOLICIT, REQUEST, ...), as RFC 8415 lets a server without
//! addresses do. Like the DHCPv4 server this is pure logic over byte
//! slices and time, shared by the user-mode stack (payloads from guest
//! frames) and bridge networks (a real socket on port 547); messages are
//! decoded and encoded with `dhcproto`'s v6 support.

use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, Message, MessageType, OptionCode, Status, StatusCode, IANA,
};
use dhcproto::{Decodable, Decoder, Encodable, Name};

mod stateful;

use slipway_dns::HostName;
use stateful::Leases;
pub use stateful::{Binding, Dhcpv6Host, Dhcpv6Pool, DEFAULT_LEASE, MAX_BINDINGS};

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
    /// The range is empty or does not lie in one prefix.
    #[error("DHCPv6 range {start} - {end} is empty or not within one /{prefix}")]
    BadRange {
        /// First address.
        start: Ipv6Addr,
        /// Last address.
        end: Ipv6Addr,
        /// The link's prefix length.
        prefix: u8,
    },
    /// A reservation's address is not on the range's link.
    #[error("DHCPv6 host address {0} is not in the range's prefix")]
    HostOffLink(Ipv6Addr),
    /// A reservation names neither a DUID nor a host name.
    #[error("DHCPv6 host {0} has neither an id (DUID) nor a name")]
    HostWithoutId(Ipv6Addr),
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

/// The DHCPv6 server: stateless, or stateful with a pool.
#[derive(Clone, Debug)]
pub struct Dhcpv6Server {
    duid: Vec<u8>,
    dns_servers: Vec<Ipv6Addr>,
    domain_search: Vec<Name>,
    leases: Option<Leases>,
}

/// The FQDN option (RFC 4704), which `dhcproto` does not decode.
const OPTION_CLIENT_FQDN: u16 = 39;

/// Lifetimes and renewal times of an address leased for `lease` (`None`:
/// infinite), as dnsmasq sets them: preferred = valid = lease time, T1 at
/// half of it, T2 at seven eighths.
fn lifetimes(lease: Option<Duration>) -> (u32, u32, u32) {
    match lease {
        None => (u32::MAX, u32::MAX, u32::MAX),
        Some(l) => {
            let secs = u32::try_from(l.as_secs()).unwrap_or(u32::MAX - 1);
            (secs, secs / 2, (u64::from(secs) * 7 / 8) as u32)
        }
    }
}

fn status(status: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status,
        msg: msg.into(),
    })
}

/// An IA_NA answer: the address with its lifetimes, or a status alone.
fn ia_na(id: u32, grant: Result<(Ipv6Addr, Option<Duration>), DhcpOption>) -> DhcpOption {
    let mut opts = DhcpOptions::new();
    let (t1, t2) = match grant {
        Ok((addr, lease)) => {
            let (life, t1, t2) = lifetimes(lease);
            opts.insert(DhcpOption::IAAddr(IAAddr {
                addr,
                preferred_life: life,
                valid_life: life,
                opts: DhcpOptions::new(),
            }));
            (t1, t2)
        }
        Err(code) => {
            opts.insert(code);
            (0, 0)
        }
    };
    DhcpOption::IANA(IANA { id, t1, t2, opts })
}

/// The host name a client sends in its FQDN option: the first label, when
/// valid (see [`HostName`]).
fn fqdn_host(opts: &DhcpOptions) -> Option<HostName> {
    let data = opts.iter().find_map(|o| match o {
        DhcpOption::Unknown(u) if u16::from(u.code()) == OPTION_CLIENT_FQDN => Some(u.data()),
        _ => None,
    })?;
    // Flags, then the name in wire format (possibly partial).
    let len = usize::from(*data.get(1)?);
    HostName::from_client(data.get(2..2 + len)?)
        .inspect_err(|e| tracing::info!("DHCPv6 client name ignored: {e}"))
        .ok()
}

/// The IA_NA options of a message: identifier and the first address asked for.
fn ias(opts: &DhcpOptions) -> Vec<(u32, Option<Ipv6Addr>)> {
    opts.iter()
        .filter_map(|o| match o {
            DhcpOption::IANA(ia) => Some((
                ia.id,
                ia.opts.iter().find_map(|a| match a {
                    DhcpOption::IAAddr(a) => Some(a.addr),
                    _ => None,
                }),
            )),
            _ => None,
        })
        .collect()
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
            leases: None,
        })
    }

    /// The same server leasing addresses from `pool` (stateful DHCPv6).
    pub fn with_pool(mut self, pool: Dhcpv6Pool) -> Result<Self, Dhcpv6ConfigError> {
        pool.validate()?;
        self.leases = Some(Leases::new(pool));
        Ok(self)
    }

    /// Replaces the reservations (a live update of `<host>`s); bindings stay.
    pub fn set_hosts(&mut self, hosts: Vec<Dhcpv6Host>) -> Result<(), Dhcpv6ConfigError> {
        if let Some(l) = &mut self.leases {
            let pool = Dhcpv6Pool {
                hosts,
                ..l.pool.clone()
            };
            pool.validate()?;
            l.pool = pool;
        }
        Ok(())
    }

    /// Every binding, expired ones included (a returning client gets its
    /// address back; see [`Binding::is_active`]).
    pub fn bindings(&self) -> &[Binding] {
        self.leases.as_ref().map_or(&[], |l| &l.bindings)
    }

    /// Loads bindings saved by an earlier run (those that no longer fit
    /// the configuration are dropped with a warning).
    pub fn restore_bindings(&mut self, bindings: impl IntoIterator<Item = Binding>) {
        if let Some(l) = &mut self.leases {
            l.restore(bindings);
        }
    }

    /// The server's DUID (its Server Identifier option's content).
    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// Answers one client message (the UDP payload sent to port 547)
    /// received at `now`. `Ok(None)` means no answer is due: a message
    /// type this server does not serve (stateful ones without a pool),
    /// one meant for another server, or one RFC 8415 says to discard.
    pub fn handle(
        &mut self,
        request: &[u8],
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, Dhcpv6Error> {
        if let Some(tail) = request.get(MESSAGE_HEADER_LEN..) {
            check_option_lengths(tail, 0)?;
        }
        let msg = Message::decode(&mut Decoder::new(request))
            .map_err(|e| Dhcpv6Error::Decode(e.to_string()))?;
        let opts = msg.opts();
        let server_id = match opts.get(OptionCode::ServerId) {
            Some(DhcpOption::ServerId(id)) => Some(id),
            _ => None,
        };
        if server_id.is_some_and(|id| *id != self.duid) {
            return Ok(None);
        }
        let reply = match msg.msg_type() {
            MessageType::InformationRequest => self.information(&msg),
            t => self.stateful(t, &msg, server_id.is_some(), now),
        };
        reply
            .map(|r| r.to_vec().map_err(|e| Dhcpv6Error::Encode(e.to_string())))
            .transpose()
    }

    /// A reply or advertisement to `msg`: our identity, the client's, the
    /// DNS servers and search list.
    fn answer(&self, kind: MessageType, msg: &Message) -> Message {
        let mut reply = Message::new_with_id(kind, msg.xid());
        let out = reply.opts_mut();
        out.insert(DhcpOption::ServerId(self.duid.clone()));
        if let Some(DhcpOption::ClientId(id)) = msg.opts().get(OptionCode::ClientId) {
            out.insert(DhcpOption::ClientId(id.clone()));
        }
        if !self.dns_servers.is_empty() {
            out.insert(DhcpOption::DomainNameServers(self.dns_servers.clone()));
        }
        if !self.domain_search.is_empty() {
            out.insert(DhcpOption::DomainSearchList(self.domain_search.clone()));
        }
        reply
    }

    /// INFORMATION-REQUEST: configuration without addresses.
    fn information(&self, msg: &Message) -> Option<Message> {
        // RFC 8415 16.12: an INFORMATION-REQUEST carrying IA options is
        // discarded.
        if msg.opts().iter().any(|o| {
            matches!(
                o,
                DhcpOption::IANA(_) | DhcpOption::IATA(_) | DhcpOption::IAPD(_)
            )
        }) {
            return None;
        }
        let mut reply = self.answer(MessageType::Reply, msg);
        reply
            .opts_mut()
            .insert(DhcpOption::InformationRefreshTime(INFORMATION_REFRESH_SECS));
        Some(reply)
    }

    /// The messages about addresses (RFC 8415 18.3), when the server has
    /// a pool. `to_us`: the message names our server identifier.
    fn stateful(
        &mut self,
        kind: MessageType,
        msg: &Message,
        to_us: bool,
        now: SystemTime,
    ) -> Option<Message> {
        let leases = self.leases.as_mut()?;
        let opts = msg.opts();
        let Some(DhcpOption::ClientId(duid)) = opts.get(OptionCode::ClientId) else {
            return None; // RFC 8415 16: every stateful message names its client
        };
        let duid = duid.clone();
        // RFC 8415 16: which messages must, and which must not, name a server.
        let must_name_us = match kind {
            MessageType::Solicit | MessageType::Rebind | MessageType::Confirm => false,
            MessageType::Request
            | MessageType::Renew
            | MessageType::Release
            | MessageType::Decline => true,
            _ => return None,
        };
        if must_name_us != to_us {
            return None;
        }
        let host = fqdn_host(opts);
        let name = host.as_ref().map(HostName::as_str);
        let mut answers = Vec::new();
        let mut top_status = None;
        match kind {
            MessageType::Solicit | MessageType::Request | MessageType::Rebind => {
                let commit =
                    kind != MessageType::Solicit || opts.get(OptionCode::RapidCommit).is_some();
                let mut granted = 0;
                for (iaid, hint) in ias(opts) {
                    let grant = match leases.choose(&duid, iaid, name, hint, now) {
                        Some(ip) if commit => {
                            Ok((ip, leases.commit(&duid, iaid, ip, host.as_ref(), now)))
                        }
                        Some(ip) => Ok((ip, leases.lease_time(&duid, name))),
                        None => Err(status(Status::NoAddrsAvail, "no addresses available")),
                    };
                    granted += usize::from(grant.is_ok());
                    answers.push(ia_na(iaid, grant));
                }
                if granted == 0 {
                    top_status = Some(status(Status::NoAddrsAvail, "no addresses available"));
                    if kind == MessageType::Solicit {
                        answers.clear(); // RFC 8415 18.3.9: no IA in that Advertise
                    }
                }
            }
            MessageType::Renew => {
                for (iaid, _) in ias(opts) {
                    let grant = match leases.binding(&duid, iaid).map(|b| b.ip) {
                        Some(ip) if leases.choose(&duid, iaid, name, Some(ip), now) == Some(ip) => {
                            Ok((ip, leases.commit(&duid, iaid, ip, host.as_ref(), now)))
                        }
                        _ => Err(status(Status::NoBinding, "no binding for this IA")),
                    };
                    answers.push(ia_na(iaid, grant));
                }
            }
            MessageType::Release | MessageType::Decline => {
                for (iaid, _) in ias(opts) {
                    let had = if kind == MessageType::Release {
                        leases.release(&duid, iaid).is_some()
                    } else {
                        leases.decline(&duid, iaid, now)
                    };
                    if !had {
                        answers.push(ia_na(
                            iaid,
                            Err(status(Status::NoBinding, "no binding for this IA")),
                        ));
                    }
                }
                top_status = Some(status(Status::Success, "done"));
            }
            _ => {
                // CONFIRM: are the client's addresses still on this link?
                let addrs: Vec<Ipv6Addr> = ias(opts).into_iter().filter_map(|(_, a)| a).collect();
                if addrs.is_empty() {
                    return None; // RFC 8415 18.3.3
                }
                top_status = Some(if addrs.iter().all(|a| leases.pool.on_link(*a)) {
                    status(Status::Success, "all addresses still on link")
                } else {
                    status(Status::NotOnLink, "addresses not on link")
                });
            }
        }
        let rapid = kind == MessageType::Solicit && opts.get(OptionCode::RapidCommit).is_some();
        let reply_kind = if kind == MessageType::Solicit && !rapid {
            MessageType::Advertise
        } else {
            MessageType::Reply
        };
        let mut reply = self.answer(reply_kind, msg);
        let out = reply.opts_mut();
        if rapid {
            out.insert(DhcpOption::RapidCommit);
        }
        for a in answers {
            out.insert(a);
        }
        if let Some(s) = top_status {
            out.insert(s);
        }
        Some(reply)
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

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

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
        let mut s = server(&["fec0::3"], &[]);
        // The fuzzer's input: a vendor class (16) of 0 bytes inside an
        // IA_NA-like container, after a short client ID.
        let found = [
            0x0b, 0x17, 0x00, 0x18, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x80, 0x12, 0x00,
        ];
        assert!(!matches!(s.handle(&found, T0), Ok(Some(_))));
        // The second finding: an elapsed time of length 0 (read as 2 bytes
        // anyway) hid a vendor-options header of length 0 behind it.
        let found = [
            0x0b, 0x17, 0x00, 0x18, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00,
            0x0a, 0x00, 0xc1, 0x00,
        ];
        assert!(matches!(s.handle(&found, T0), Err(Dhcpv6Error::Decode(_))));
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
        assert!(matches!(s.handle(&found, T0), Err(Dhcpv6Error::Decode(_))));
        for (code, len) in [(13_u16, 1_u16), (16, 3), (17, 2), (11, 10), (8, 0), (7, 2)] {
            let mut msg = info_request();
            msg.extend_from_slice(&code.to_be_bytes());
            msg.extend_from_slice(&len.to_be_bytes());
            msg.extend(std::iter::repeat_n(0, usize::from(len)));
            assert!(
                matches!(s.handle(&msg, T0), Err(Dhcpv6Error::Decode(_))),
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
                matches!(s.handle(&msg, T0), Err(Dhcpv6Error::Decode(_))),
                "nested {code}"
            );
        }
    }

    #[test]
    fn information_request_gets_dns_and_search_list() {
        let reply = server(&["fec0::3"], &["example.test"])
            .handle(&info_request(), T0)
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
        let reply = server(&[], &[])
            .handle(&info_request(), T0)
            .unwrap()
            .unwrap();
        let msg = Message::decode(&mut Decoder::new(&reply)).unwrap();
        assert!(msg.opts().get(OptionCode::DomainNameServers).is_none());
        assert!(msg.opts().get(OptionCode::DomainSearchList).is_none());
        assert!(msg.opts().get(OptionCode::ServerId).is_some());
    }

    #[test]
    fn stateful_foreign_and_ia_messages_get_no_answer() {
        let mut s = server(&["fec0::3"], &[]);
        let mut solicit = info_request();
        solicit[0] = 1;
        assert_eq!(s.handle(&solicit, T0), Ok(None));
        let mut foreign = info_request();
        foreign.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(s.handle(&foreign, T0), Ok(None));
        let mut ours = info_request();
        ours.extend_from_slice(&[0, 2, 0, 10]);
        ours.extend_from_slice(s.duid());
        assert!(s.handle(&ours, T0).unwrap().is_some());
        let mut with_ia = info_request();
        with_ia.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.handle(&with_ia, T0), Ok(None));
        assert!(matches!(
            s.handle(&[11, 1], T0),
            Err(Dhcpv6Error::Decode(_))
        ));
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

    const C1: &[u8] = &[0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 1];
    const C2: &[u8] = &[0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 2];

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A server leasing fd00::10 - fd00::11, with fd00::99 reserved for
    /// DUID C2 and fd00::98 for the host named "named".
    fn pool_server() -> Dhcpv6Server {
        server(&["fd00::1"], &["lab.test"])
            .with_pool(Dhcpv6Pool {
                start: a("fd00::10"),
                end: a("fd00::11"),
                prefix: 64,
                lease_time: Some(Duration::from_secs(3600)),
                hosts: vec![
                    Dhcpv6Host {
                        duid: Some(C2.to_vec()),
                        name: None,
                        ip: a("fd00::99"),
                        lease_time: Some(None),
                    },
                    Dhcpv6Host {
                        duid: None,
                        name: Some("named".into()),
                        ip: a("fd00::98"),
                        lease_time: None,
                    },
                ],
            })
            .unwrap()
    }

    /// A client message with its DUID, one IA_NA per IAID, and the extra options.
    fn msg(
        kind: MessageType,
        duid: &[u8],
        ias: &[(u32, Option<&str>)],
        extra: Vec<DhcpOption>,
    ) -> Vec<u8> {
        let mut m = Message::new_with_id(kind, [1, 2, 3]);
        let o = m.opts_mut();
        o.insert(DhcpOption::ClientId(duid.to_vec()));
        for (id, addr) in ias {
            let mut opts = DhcpOptions::new();
            if let Some(addr) = addr {
                opts.insert(DhcpOption::IAAddr(IAAddr {
                    addr: a(addr),
                    preferred_life: 0,
                    valid_life: 0,
                    opts: DhcpOptions::new(),
                }));
            }
            o.insert(DhcpOption::IANA(IANA {
                id: *id,
                t1: 0,
                t2: 0,
                opts,
            }));
        }
        for e in extra {
            o.insert(e);
        }
        m.to_vec().unwrap()
    }

    fn ours(s: &Dhcpv6Server) -> Vec<DhcpOption> {
        vec![DhcpOption::ServerId(s.duid().to_vec())]
    }

    /// What a reply says: its type, the IA_NAs' (id, T1, T2, address and
    /// valid lifetime, or status) and the top-level status.
    #[allow(clippy::type_complexity)]
    fn read(
        reply: Vec<u8>,
    ) -> (
        MessageType,
        Vec<(u32, u32, u32, Result<(Ipv6Addr, u32), Status>)>,
        Option<Status>,
        Message,
    ) {
        let m = Message::decode(&mut Decoder::new(&reply)).unwrap();
        let mut ias: Vec<_> = m
            .opts()
            .iter()
            .filter_map(|o| match o {
                DhcpOption::IANA(ia) => {
                    let got = ia
                        .opts
                        .iter()
                        .find_map(|x| match x {
                            DhcpOption::IAAddr(ad) => Some(Ok((ad.addr, ad.valid_life))),
                            DhcpOption::StatusCode(c) => Some(Err(c.status)),
                            _ => None,
                        })
                        .unwrap();
                    Some((ia.id, ia.t1, ia.t2, got))
                }
                _ => None,
            })
            .collect();
        ias.sort_by_key(|ia| ia.0);
        let top = match m.opts().get(OptionCode::StatusCode) {
            Some(DhcpOption::StatusCode(c)) => Some(c.status),
            _ => None,
        };
        (m.msg_type(), ias, top, m)
    }

    #[test]
    fn solicit_request_renew_release_lease_an_address() {
        let mut s = pool_server();
        // SOLICIT: an ADVERTISE with the first address, nothing bound yet.
        let reply = s.handle(&msg(MessageType::Solicit, C1, &[(7, None)], vec![]), T0);
        let (kind, ias, top, m) = read(reply.unwrap().unwrap());
        assert_eq!(kind, MessageType::Advertise);
        assert_eq!(ias, vec![(7, 1800, 3150, Ok((a("fd00::10"), 3600)))]);
        assert_eq!(top, None);
        assert!(m.opts().get(OptionCode::DomainNameServers).is_some());
        assert!(m.opts().get(OptionCode::DomainSearchList).is_some());
        assert_eq!(
            m.opts().get(OptionCode::ClientId),
            Some(&DhcpOption::ClientId(C1.to_vec()))
        );
        assert!(s.bindings().is_empty());
        // REQUEST without our server identifier: not for us.
        let req = msg(MessageType::Request, C1, &[(7, Some("fd00::10"))], vec![]);
        assert_eq!(s.handle(&req, T0), Ok(None));
        // REQUEST: bound for an hour.
        let req = msg(MessageType::Request, C1, &[(7, Some("fd00::10"))], ours(&s));
        let (kind, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
        assert_eq!(kind, MessageType::Reply);
        assert_eq!(ias, vec![(7, 1800, 3150, Ok((a("fd00::10"), 3600)))]);
        let hour = T0 + Duration::from_secs(3600);
        assert_eq!(
            s.bindings(),
            [Binding {
                duid: C1.to_vec(),
                iaid: 7,
                ip: a("fd00::10"),
                hostname: None,
                expires: Some(hour),
            }]
        );
        // RENEW later: extended from then.
        let later = T0 + Duration::from_secs(2000);
        let renew = msg(MessageType::Renew, C1, &[(7, Some("fd00::10"))], ours(&s));
        let (_, ias, _, _) = read(s.handle(&renew, later).unwrap().unwrap());
        assert_eq!(ias[0].3, Ok((a("fd00::10"), 3600)));
        assert_eq!(
            s.bindings()[0].expires,
            Some(later + Duration::from_secs(3600))
        );
        // RENEW of an IA we never bound: NoBinding.
        let renew = msg(MessageType::Renew, C1, &[(8, Some("fd00::11"))], ours(&s));
        let (_, ias, _, _) = read(s.handle(&renew, later).unwrap().unwrap());
        assert_eq!(ias, vec![(8, 0, 0, Err(Status::NoBinding))]);
        // RELEASE: the binding is gone, the reply says Success.
        let release = msg(MessageType::Release, C1, &[(7, Some("fd00::10"))], ours(&s));
        let (kind, ias, top, _) = read(s.handle(&release, later).unwrap().unwrap());
        assert_eq!(
            (kind, ias, top),
            (MessageType::Reply, vec![], Some(Status::Success))
        );
        assert!(s.bindings().is_empty());
    }

    #[test]
    fn rapid_commit_binds_at_once_and_rebind_finds_the_binding() {
        let mut s = pool_server();
        let sol = msg(
            MessageType::Solicit,
            C1,
            &[(1, None)],
            vec![DhcpOption::RapidCommit],
        );
        let (kind, ias, _, m) = read(s.handle(&sol, T0).unwrap().unwrap());
        assert_eq!(kind, MessageType::Reply);
        assert!(m.opts().get(OptionCode::RapidCommit).is_some());
        assert_eq!(ias[0].3, Ok((a("fd00::10"), 3600)));
        assert_eq!(s.bindings().len(), 1);
        // REBIND (no server identifier) of the same IA: the same address.
        let rebind = msg(MessageType::Rebind, C1, &[(1, Some("fd00::10"))], vec![]);
        let (_, ias, _, _) = read(s.handle(&rebind, T0).unwrap().unwrap());
        assert_eq!(ias[0].3, Ok((a("fd00::10"), 3600)));
        // A REBIND naming a server is discarded.
        let rebind = msg(MessageType::Rebind, C1, &[(1, None)], ours(&s));
        assert_eq!(s.handle(&rebind, T0), Ok(None));
    }

    /// The FQDN option carrying `wire` (a name in DNS wire format).
    fn fqdn_option(wire: &[u8]) -> DhcpOption {
        let mut data = vec![0];
        data.extend_from_slice(wire);
        DhcpOption::Unknown(dhcproto::v6::UnknownOption::new(
            OptionCode::from(OPTION_CLIENT_FQDN),
            data,
        ))
    }

    /// The same rule as for DHCPv4 option 12: the first label only, a valid
    /// one, not a name another client's binding holds.
    #[test]
    fn client_names_follow_the_host_name_rule() {
        let mut s = pool_server();
        let name_of = |s: &Dhcpv6Server, duid: &[u8]| {
            s.bindings()
                .iter()
                .find(|b| b.duid == duid)
                .and_then(|b| b.hostname.as_ref().map(HostName::to_string))
        };
        let mut extra = ours(&s);
        extra.push(fqdn_option(b"\x03www\x07example\x03com\x00"));
        let req = msg(MessageType::Request, C1, &[(1, None)], extra);
        s.handle(&req, T0).unwrap().unwrap();
        assert_eq!(name_of(&s, C1).as_deref(), Some("www"));
        // Another client asking for it: its address, without the name.
        const C3: &[u8] = &[0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 3];
        let mut extra = ours(&s);
        extra.push(fqdn_option(b"\x03WWW\x00"));
        let req = msg(MessageType::Request, C3, &[(1, None)], extra);
        let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
        assert!(ias[0].3.is_ok(), "{ias:?}");
        assert_eq!(name_of(&s, C3), None);
        // An invalid name: no name at all.
        let mut extra = ours(&s);
        extra.push(fqdn_option(b"\x05e\x1bvil\x00"));
        let req = msg(MessageType::Request, C1, &[(1, None)], extra);
        s.handle(&req, T0).unwrap().unwrap();
        assert_eq!(name_of(&s, C1), None);
    }

    #[test]
    fn reservations_by_duid_and_by_name() {
        let mut s = pool_server();
        let req = msg(MessageType::Request, C2, &[(3, None)], ours(&s));
        let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
        // `lease_time: Some(None)`: infinite, never renewed.
        assert_eq!(
            ias,
            vec![(3, u32::MAX, u32::MAX, Ok((a("fd00::99"), u32::MAX)))]
        );
        assert_eq!(s.bindings()[0].expires, None);
        // FQDN option (39): flags, then "named" in wire format.
        let mut fqdn = vec![0, 5];
        fqdn.extend_from_slice(b"named");
        let fqdn = DhcpOption::Unknown(dhcproto::v6::UnknownOption::new(
            OptionCode::from(OPTION_CLIENT_FQDN),
            fqdn,
        ));
        let mut extra = ours(&s);
        extra.push(fqdn);
        let req = msg(MessageType::Request, C1, &[(3, None)], extra);
        let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
        assert_eq!(ias[0].3, Ok((a("fd00::98"), 3600)));
        assert_eq!(
            s.bindings()[1].hostname.as_ref().map(HostName::as_str),
            Some("named")
        );
        // The reserved addresses never go to others.
        for iaid in 10..12 {
            let req = msg(
                MessageType::Request,
                C1,
                &[(iaid, Some("fd00::99"))],
                ours(&s),
            );
            let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
            assert_ne!(ias[0].3, Ok((a("fd00::99"), 3600)));
        }
    }

    #[test]
    fn exhausted_range_says_no_addrs_avail() {
        let mut s = pool_server();
        let req = msg(MessageType::Request, C1, &[(1, None), (2, None)], ours(&s));
        let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
        let mut got: Vec<_> = ias.iter().map(|ia| ia.3).collect();
        got.sort_by_key(|g| g.map(|(ip, _)| ip).ok());
        assert_eq!(got, [Ok((a("fd00::10"), 3600)), Ok((a("fd00::11"), 3600))]);
        // A third IA in a REQUEST: the IA says NoAddrsAvail.
        let req = msg(MessageType::Request, C1, &[(3, None)], ours(&s));
        let (_, ias, top, _) = read(s.handle(&req, T0).unwrap().unwrap());
        assert_eq!(ias, vec![(3, 0, 0, Err(Status::NoAddrsAvail))]);
        assert_eq!(top, Some(Status::NoAddrsAvail));
        // An ADVERTISE with nothing to offer: no IA, top-level status.
        let sol = msg(MessageType::Solicit, C1, &[(3, None)], vec![]);
        let (kind, ias, top, _) = read(s.handle(&sol, T0).unwrap().unwrap());
        assert_eq!(
            (kind, ias, top),
            (MessageType::Advertise, vec![], Some(Status::NoAddrsAvail))
        );
        // Once the leases run out, the addresses go to a new client.
        let late = T0 + Duration::from_secs(3601);
        let sol = msg(MessageType::Solicit, C2, &[(9, None)], vec![]);
        // (C2 has its reservation; a third DUID takes a range address.)
        let (_, ias, _, _) = read(s.handle(&sol, late).unwrap().unwrap());
        assert_eq!(ias[0].3, Ok((a("fd00::99"), u32::MAX)));
        let c3 = [0, 3, 0, 1, 2, 2, 2, 2, 2, 2];
        let req = msg(MessageType::Request, &c3, &[(1, None)], ours(&s));
        let (_, ias, _, _) = read(s.handle(&req, late).unwrap().unwrap());
        assert_eq!(ias[0].3, Ok((a("fd00::10"), 3600)));
        assert_eq!(s.bindings().len(), 2, "the expired binding was taken over");
    }

    #[test]
    fn the_binding_table_is_bounded() {
        let mut s = server(&[], &[])
            .with_pool(Dhcpv6Pool {
                start: a("fd00::1:0"),
                end: a("fd00::ffff:ffff"),
                prefix: 64,
                lease_time: None,
                hosts: Vec::new(),
            })
            .unwrap();
        for n in 0..MAX_BINDINGS as u32 {
            let duid = [&[0, 4][..], &n.to_be_bytes()].concat();
            let req = msg(MessageType::Request, &duid, &[(1, None)], ours(&s));
            let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
            assert!(ias[0].3.is_ok());
        }
        let req = msg(MessageType::Request, C1, &[(1, None)], ours(&s));
        let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
        assert_eq!(ias[0].3, Err(Status::NoAddrsAvail));
        assert_eq!(s.bindings().len(), MAX_BINDINGS);
    }

    #[test]
    fn decline_quarantines_and_confirm_checks_the_link() {
        let mut s = pool_server();
        let req = msg(MessageType::Request, C1, &[(1, None)], ours(&s));
        s.handle(&req, T0).unwrap().unwrap();
        let decline = msg(MessageType::Decline, C1, &[(1, Some("fd00::10"))], ours(&s));
        let (_, _, top, _) = read(s.handle(&decline, T0).unwrap().unwrap());
        assert_eq!(top, Some(Status::Success));
        let (_, ias, _, _) = read(s.handle(&req, T0).unwrap().unwrap());
        assert_eq!(
            ias[0].3,
            Ok((a("fd00::11"), 3600)),
            "fd00::10 is in quarantine"
        );
        let confirm = |addr: &str| msg(MessageType::Confirm, C1, &[(1, Some(addr))], vec![]);
        let (_, _, top, _) = read(s.handle(&confirm("fd00::1234"), T0).unwrap().unwrap());
        assert_eq!(top, Some(Status::Success));
        let (_, _, top, _) = read(s.handle(&confirm("fd01::10"), T0).unwrap().unwrap());
        assert_eq!(top, Some(Status::NotOnLink));
        // A CONFIRM without addresses gets no answer; nor messages without a client id.
        let empty = msg(MessageType::Confirm, C1, &[(1, None)], vec![]);
        assert_eq!(s.handle(&empty, T0), Ok(None));
        let mut anon = Message::new_with_id(MessageType::Solicit, [1, 2, 3]);
        anon.opts_mut().insert(DhcpOption::IANA(IANA {
            id: 1,
            t1: 0,
            t2: 0,
            opts: DhcpOptions::new(),
        }));
        assert_eq!(s.handle(&anon.to_vec().unwrap(), T0), Ok(None));
        // Without a pool, stateful messages are not ours.
        let mut stateless = server(&[], &[]);
        let sol = msg(MessageType::Solicit, C1, &[(1, None)], vec![]);
        assert_eq!(stateless.handle(&sol, T0), Ok(None));
    }

    #[test]
    fn bindings_survive_a_restart_when_they_still_fit() {
        let mut s = pool_server();
        let req = msg(MessageType::Request, C1, &[(1, None)], ours(&s));
        s.handle(&req, T0).unwrap().unwrap();
        let saved = s.bindings().to_vec();
        let mut again = pool_server();
        let foreign = Binding {
            ip: a("fd09::10"),
            iaid: 2,
            ..saved[0].clone()
        };
        let stolen = Binding {
            ip: a("fd00::99"),
            iaid: 3,
            ..saved[0].clone()
        };
        again.restore_bindings(saved.iter().cloned().chain([foreign, stolen]));
        assert_eq!(again.bindings(), saved);
        // The client renews with the new process.
        let renew = msg(MessageType::Renew, C1, &[(1, None)], ours(&again));
        let (_, ias, _, _) = read(again.handle(&renew, T0).unwrap().unwrap());
        assert_eq!(ias[0].3, Ok((a("fd00::10"), 3600)));
    }

    #[test]
    fn bad_pools_are_refused() {
        let base = Dhcpv6Pool {
            start: a("fd00::20"),
            end: a("fd00::10"),
            prefix: 64,
            lease_time: None,
            hosts: Vec::new(),
        };
        let e = server(&[], &[]).with_pool(base.clone()).unwrap_err();
        assert!(matches!(e, Dhcpv6ConfigError::BadRange { .. }), "{e}");
        let other_prefix = Dhcpv6Pool {
            start: a("fd00::10"),
            end: a("fd01::10"),
            ..base.clone()
        };
        assert!(server(&[], &[]).with_pool(other_prefix).is_err());
        let ok = Dhcpv6Pool {
            start: a("fd00::10"),
            end: a("fd00::20"),
            ..base
        };
        let host = |ip: &str, duid: Option<Vec<u8>>| Dhcpv6Host {
            duid,
            name: None,
            ip: a(ip),
            lease_time: None,
        };
        let off = Dhcpv6Pool {
            hosts: vec![host("fd01::5", Some(C1.to_vec()))],
            ..ok.clone()
        };
        assert_eq!(
            server(&[], &[]).with_pool(off).unwrap_err(),
            Dhcpv6ConfigError::HostOffLink(a("fd01::5"))
        );
        let mut s = server(&[], &[]).with_pool(ok).unwrap();
        assert_eq!(
            s.set_hosts(vec![host("fd00::5", None)]),
            Err(Dhcpv6ConfigError::HostWithoutId(a("fd00::5")))
        );
        assert_eq!(
            s.set_hosts(vec![host("fd00::5", Some(C1.to_vec()))]),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn random_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = server(&["fec0::3"], &["a.test"]).handle(&bytes, T0);
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
            let _ = server(&["fec0::3"], &["a.test"]).handle(&req, T0);
        }

        /// Sequences of well-formed and damaged stateful messages from a
        /// few clients: never a panic, never an address off the range or
        /// held twice.
        #[test]
        fn stateful_exchanges_never_panic_or_double_book(
            steps in prop::collection::vec(
                (0u8..8, 0usize..3, 0u32..3, prop::option::of(0u16..0x30),
                 any::<bool>(), prop::collection::vec((0usize..80, any::<u8>()), 0..3),
                 0u64..10_000),
                1..24),
        ) {
            let mut s = pool_server();
            let kinds = [
                MessageType::Solicit, MessageType::Request, MessageType::Renew,
                MessageType::Rebind, MessageType::Release, MessageType::Decline,
                MessageType::Confirm, MessageType::InformationRequest,
            ];
            let duids = [C1.to_vec(), C2.to_vec(), vec![0, 2, 0, 0, 0, 9, 1]];
            for (kind, client, iaid, hint, to_us, damage, secs) in steps {
                let hint = hint.map(|h| format!("fd00::{h:x}"));
                let extra = if to_us { ours(&s) } else { Vec::new() };
                let mut m = msg(kinds[usize::from(kind)], &duids[client], &[(iaid, hint.as_deref())], extra);
                for (at, b) in damage {
                    if let Some(x) = m.get_mut(at) {
                        *x = b;
                    }
                }
                let _ = s.handle(&m, T0 + Duration::from_secs(secs));
                let now = T0 + Duration::from_secs(secs);
                let active: Vec<Ipv6Addr> = s.bindings().iter().filter(|b| b.is_active(now)).map(|b| b.ip).collect();
                for ip in &active {
                    prop_assert!(active.iter().filter(|x| *x == ip).count() == 1, "{ip} twice");
                    prop_assert!(
                        (a("fd00::10") <= *ip && *ip <= a("fd00::11")) || *ip == a("fd00::99") || *ip == a("fd00::98"),
                        "{ip} off the range"
                    );
                }
            }
        }
    }
}
