//! Router advertisements (RFC 4861 4.2) with the options IPv6 hosts
//! configure themselves from: source link-layer address, MTU, prefix
//! information (SLAAC), and the DNS servers and search list (RDNSS and
//! DNSSL, RFC 8106).
//!
//! Shared, like the DHCPv6 server beside it, by the user-mode stack (which
//! wraps the message in frames it builds) and bridge networks (which send
//! it from a raw ICMPv6 socket on the bridge). Pure bytes: the message is
//! returned with a zero checksum, which the caller fills (the stack with
//! the pseudo-header it knows, a raw ICMPv6 socket in the kernel).

use std::net::Ipv6Addr;

use slipway_host::ipnet::Ipv6Net;

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// All-nodes multicast group (ff02::1): where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Neighbour discovery messages are sent, and must arrive, with this hop
/// limit (RFC 4861 6.1): proof that they were not routed.
pub const NDP_HOP_LIMIT: u8 = 255;
/// How often an unsolicited advertisement goes out, seconds (libslirp's
/// minimum interval).
pub const INTERVAL_SECS: u64 = 200;
/// Router lifetime advertised, seconds: three intervals (RFC 4861's
/// default ratio); also the lifetime of the DNS information.
pub const ROUTER_LIFETIME_SECS: u16 = 3 * INTERVAL_SECS as u16;
/// Prefix lifetimes (libslirp's: valid one day, preferred four hours).
pub const PREFIX_VALID_SECS: u32 = 86400;
/// See [`PREFIX_VALID_SECS`].
pub const PREFIX_PREFERRED_SECS: u32 = 14400;

/// Option types (RFC 4861 4.6, RFC 8106).
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_PREFIX: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_RDNSS: u8 = 25;
const OPT_DNSSL: u8 = 31;
/// Header flags: managed address configuration, other configuration.
const FLAG_MANAGED: u8 = 0x80;
const FLAG_OTHER: u8 = 0x40;
/// Prefix flags: on-link, autonomous address configuration.
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;

/// One prefix advertised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The prefix (host bits are cleared when written).
    pub prefix: Ipv6Addr,
    /// Its length.
    pub len: u8,
    /// Hosts may form addresses in it by SLAAC (the A flag).
    pub autonomous: bool,
}

/// What a router advertisement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterAdvert {
    /// The router's link-layer address (source link-layer option).
    pub source_mac: Option<[u8; 6]>,
    /// Seconds hosts may use this router as default; 0: not a default router.
    pub router_lifetime: u16,
    /// Addresses come from DHCPv6 (the M flag).
    pub managed: bool,
    /// Other configuration (DNS...) comes from DHCPv6 (the O flag).
    pub other: bool,
    /// The link MTU.
    pub mtu: Option<u32>,
    /// Prefixes, each on-link.
    pub prefixes: Vec<Prefix>,
    /// DNS servers (RDNSS); none leaves the option out.
    pub dns_servers: Vec<Ipv6Addr>,
    /// Search domains (DNSSL), in order; names that are not valid DNS
    /// names are left out, and the whole option if it would not fit.
    pub search: Vec<String>,
    /// Lifetime of the RDNSS and DNSSL information, seconds.
    pub dns_lifetime: u32,
}

impl RouterAdvert {
    /// The ICMPv6 message (type 134) with a zero checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.managed {
            flags |= FLAG_MANAGED;
        }
        if self.other {
            flags |= FLAG_OTHER;
        }
        let mut m = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, 64, flags];
        m.extend_from_slice(&self.router_lifetime.to_be_bytes());
        // Reachable time and retransmission timer: unspecified.
        m.extend_from_slice(&[0; 8]);
        if let Some(mac) = self.source_mac {
            m.extend_from_slice(&[OPT_SOURCE_LLADDR, 1]);
            m.extend_from_slice(&mac);
        }
        if let Some(mtu) = self.mtu {
            m.extend_from_slice(&[OPT_MTU, 1, 0, 0]);
            m.extend_from_slice(&mtu.to_be_bytes());
        }
        for p in &self.prefixes {
            let len = p.len.min(128);
            let mut pflags = PREFIX_ON_LINK;
            if p.autonomous {
                pflags |= PREFIX_AUTONOMOUS;
            }
            m.extend_from_slice(&[OPT_PREFIX, 4, len, pflags]);
            m.extend_from_slice(&PREFIX_VALID_SECS.to_be_bytes());
            m.extend_from_slice(&PREFIX_PREFERRED_SECS.to_be_bytes());
            m.extend_from_slice(&[0; 4]);
            let network = Ipv6Net::new(p.prefix, len).map_or(p.prefix, |n| n.network());
            m.extend_from_slice(&network.octets());
        }
        // RDNSS: 8 bytes of header, 16 per address, in 8-byte units.
        if !self.dns_servers.is_empty() && self.dns_servers.len() <= 127 {
            m.extend_from_slice(&[OPT_RDNSS, (1 + 2 * self.dns_servers.len()) as u8, 0, 0]);
            m.extend_from_slice(&self.dns_lifetime.to_be_bytes());
            for a in &self.dns_servers {
                m.extend_from_slice(&a.octets());
            }
        }
        let names: Vec<slipway_dns::Name> = self
            .search
            .iter()
            .filter_map(|d| slipway_dns::Name::from_dotted(d))
            .collect();
        let wire: usize = names.iter().map(|n| n.as_wire().len()).sum();
        let len = (8 + wire).div_ceil(8) * 8;
        if wire > 0 && len / 8 <= usize::from(u8::MAX) {
            let start = m.len();
            m.extend_from_slice(&[OPT_DNSSL, (len / 8) as u8, 0, 0]);
            m.extend_from_slice(&self.dns_lifetime.to_be_bytes());
            for n in &names {
                m.extend_from_slice(n.as_wire());
            }
            m.resize(start + len, 0);
        }
        m
    }
}

/// Whether `msg` (an ICMPv6 message received with `hop_limit`) is a
/// well-formed router solicitation: type 133, code 0, hop limit 255 and
/// whole options (RFC 4861 6.1.1).
pub fn is_router_solicitation(msg: &[u8], hop_limit: u8) -> bool {
    if msg.len() < 8 || msg[0] != ROUTER_SOLICITATION || msg[1] != 0 {
        return false;
    }
    if hop_limit != NDP_HOP_LIMIT {
        return false;
    }
    let mut opts = &msg[8..];
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1).unwrap_or(&0)) * 8;
        if len == 0 || len > opts.len() {
            return false;
        }
        opts = &opts[len..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn advert_carries_flags_prefixes_rdnss_and_dnssl() {
        let ra = RouterAdvert {
            source_mac: Some([0x52, 0x54, 0, 1, 2, 3]),
            router_lifetime: 1800,
            managed: true,
            other: true,
            mtu: Some(1500),
            prefixes: vec![
                Prefix {
                    prefix: a("fd00:1::1"),
                    len: 64,
                    autonomous: false,
                },
                Prefix {
                    prefix: a("fd00:2::1"),
                    len: 48,
                    autonomous: true,
                },
            ],
            dns_servers: vec![a("fd00:1::1")],
            search: vec!["a.test".into(), "x".repeat(64)],
            dns_lifetime: 600,
        };
        let m = ra.to_bytes();
        let mut want = vec![134, 0, 0, 0, 64, 0xc0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[1, 1, 0x52, 0x54, 0, 1, 2, 3]);
        want.extend_from_slice(&[5, 1, 0, 0, 0, 0, 0x05, 0xdc]);
        want.extend_from_slice(&[
            3, 4, 64, 0x80, 0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40, 0, 0, 0, 0,
        ]);
        want.extend_from_slice(&a("fd00:1::").octets());
        want.extend_from_slice(&[
            3, 4, 48, 0xc0, 0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40, 0, 0, 0, 0,
        ]);
        want.extend_from_slice(&a("fd00:2::").octets());
        want.extend_from_slice(&[25, 3, 0, 0, 0, 0, 0x02, 0x58]);
        want.extend_from_slice(&a("fd00:1::1").octets());
        want.extend_from_slice(&[31, 2, 0, 0, 0, 0, 0x02, 0x58, 1, b'a', 4]);
        want.extend_from_slice(b"test");
        want.push(0);
        assert_eq!(m, want);

        // Nothing optional: the bare header.
        let bare = RouterAdvert {
            source_mac: None,
            router_lifetime: 0,
            managed: false,
            other: false,
            mtu: None,
            prefixes: Vec::new(),
            dns_servers: Vec::new(),
            search: Vec::new(),
            dns_lifetime: 0,
        };
        assert_eq!(
            bare.to_bytes(),
            [134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn solicitations_are_checked() {
        let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 1, 2, 3];
        assert!(is_router_solicitation(&rs, 255));
        assert!(!is_router_solicitation(&rs, 64), "routed");
        assert!(!is_router_solicitation(&rs[..7], 255), "short");
        rs[9] = 0;
        assert!(!is_router_solicitation(&rs, 255), "zero-length option");
        rs[9] = 2;
        assert!(!is_router_solicitation(&rs, 255), "option past the end");
        assert!(!is_router_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0], 255));
    }

    proptest! {
        #[test]
        fn any_message_is_judged_without_panic(
            msg in prop::collection::vec(any::<u8>(), 0..64),
            hop in any::<u8>(),
        ) {
            let _ = is_router_solicitation(&msg, hop);
        }

        #[test]
        fn options_fill_the_advert_exactly(
            n_prefixes in 0usize..4,
            n_dns in 0usize..4,
            search in prop::collection::vec("[a-z]{1,20}(\\.[a-z]{1,20}){0,3}", 0..5),
        ) {
            let ra = RouterAdvert {
                source_mac: Some([2, 0, 0, 0, 0, 1]),
                router_lifetime: 600,
                managed: false,
                other: true,
                mtu: Some(9000),
                prefixes: (0..n_prefixes)
                    .map(|i| Prefix { prefix: a("fd00::"), len: 64 + i as u8, autonomous: true })
                    .collect(),
                dns_servers: vec![a("fd00::1"); n_dns],
                search,
                dns_lifetime: 600,
            };
            let m = ra.to_bytes();
            // Options walk to the end in whole 8-byte units.
            let mut opts = &m[16..];
            while !opts.is_empty() {
                let len = usize::from(opts[1]) * 8;
                prop_assert!(len > 0 && len <= opts.len());
                opts = &opts[len..];
            }
        }
    }
}
