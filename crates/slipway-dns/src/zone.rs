//! Local answers for a bridge network: `<dns><host>` entries and DHCP lease hostnames
//! (A, AAAA, PTR); everything else is for the upstream resolvers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::hostname::HostName;
use crate::message::{
    error_response, parse_question, start_response, Header, Name, Question, CLASS_IN, HEADER_LEN,
    RCODE_FORMERR, RCODE_NOERROR, RCODE_NOTIMP, RCODE_NXDOMAIN, TYPE_A, TYPE_AAAA, TYPE_ANY,
    TYPE_PTR,
};

/// QCLASS `*` (any class).
const CLASS_ANY: u16 = 255;
/// Responses stay within the classic 512-byte UDP limit (no EDNS); longer ones are
/// cut at a record boundary and flagged TC.
const MAX_UDP_RESPONSE: usize = 512;

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Answered from the local zone (records, NODATA or NXDOMAIN): send this response.
    Local(Vec<u8>),
    /// Not a local name: relay the query to the upstream resolvers.
    Forward,
    /// Malformed or unsupported query: send this error response (FORMERR, NOTIMP).
    Refuse(Vec<u8>),
    /// Not a query at all (a response, or shorter than a header): drop it silently.
    Ignore,
}

/// Why a name was not accepted into the zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// Not a valid host or domain name (letters, digits, `-`, `_`; labels of 1-63 bytes).
    #[error("{0:?} is not a valid DNS host or domain name")]
    BadName(String),
}

#[derive(Debug, Clone)]
struct HostEntry {
    name: Name,
    /// `name.domain` for a single-label name when the zone has a domain.
    qualified: Option<Name>,
    addr: IpAddr,
    from_lease: bool,
}

impl HostEntry {
    fn matches(&self, qname: &Name) -> bool {
        self.name == *qname || self.qualified.as_ref() == Some(qname)
    }

    /// Whether a query could name both entries.
    fn shares_a_name(&self, other: &HostEntry) -> bool {
        self.matches(&other.name) || other.qualified.as_ref().is_some_and(|q| self.matches(q))
    }

    /// The name given in PTR answers: the fully qualified one when known.
    fn canonical(&self) -> &Name {
        self.qualified.as_ref().unwrap_or(&self.name)
    }
}

/// The names a network's DNS server answers itself.
#[derive(Debug, Clone)]
pub struct LocalZone {
    domain: Option<Name>,
    hosts: Vec<HostEntry>,
    /// Names of DHCP `<host>` reservations (not answered, only guarded).
    reserved: Vec<HostEntry>,
    local_only: bool,
}

/// Parses a host or domain name, accepting only hostname characters.
fn host_name(text: &str) -> Result<Name, ZoneError> {
    let bad = || ZoneError::BadName(text.to_string());
    let valid_chars = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid_chars || text.trim_end_matches('.').is_empty() {
        return Err(bad());
    }
    Name::from_dotted(text).ok_or_else(bad)
}

impl LocalZone {
    /// An empty zone. Single-label host names are also answered as `name.domain`
    /// when a domain is given (the network's `<domain name>`).
    pub fn new(domain: Option<&str>) -> Result<Self, ZoneError> {
        Ok(LocalZone {
            domain: domain.map(host_name).transpose()?,
            hosts: Vec::new(),
            reserved: Vec::new(),
            local_only: false,
        })
    }

    /// When set, unknown names inside the domain get NXDOMAIN instead of being
    /// forwarded (libvirt `<domain localOnly='yes'>`).
    pub fn set_local_only(&mut self, local_only: bool) {
        self.local_only = local_only;
    }

    fn entry(&self, name: Name, addr: IpAddr, from_lease: bool) -> HostEntry {
        let qualified = match (&self.domain, name.labels().count()) {
            (Some(domain), 1) => {
                let label = name.labels().next().unwrap_or_default();
                let text = format!("{}.{domain}", String::from_utf8_lossy(label));
                Name::from_dotted(&text)
            }
            _ => None,
        };
        HostEntry {
            name,
            qualified,
            addr,
            from_lease,
        }
    }

    /// Adds a configured host (`<dns><host ip><hostname>`); call once per hostname.
    pub fn add_host(&mut self, addr: IpAddr, hostname: &str) -> Result<(), ZoneError> {
        let entry = self.entry(host_name(hostname)?, addr, false);
        self.hosts.push(entry);
        Ok(())
    }

    /// Reserves `hostname` for `addr` (a DHCP `<host>` with a name): no lease
    /// of another address may publish it. Not answered by itself: the
    /// host's own lease carries the name.
    pub fn reserve_host(&mut self, addr: IpAddr, hostname: &str) -> Result<(), ZoneError> {
        let entry = self.entry(host_name(hostname)?, addr, false);
        self.reserved.push(entry);
        Ok(())
    }

    /// Replaces the names learnt from DHCP leases (the name of each lease):
    /// A records for DHCPv4 leases, AAAA for DHCPv6 bindings. Guests choose
    /// these names, so, as dnsmasq does, a lease never shadows a configured
    /// name (`<dns><host>` or a DHCP `<host>` reservation) of another
    /// address, and a name already published for another lease of the same
    /// family stays with the first (the servers already keep names unique;
    /// this holds for any list, e.g. a leases file of an older version).
    pub fn set_lease_hosts<'a, A: Into<IpAddr>>(
        &mut self,
        leases: impl IntoIterator<Item = (&'a HostName, A)>,
    ) {
        self.hosts.retain(|h| !h.from_lease);
        for (hostname, addr) in leases {
            let addr = addr.into();
            let Some(name) = Name::from_dotted(hostname.as_str()) else {
                continue;
            };
            let entry = self.entry(name, addr, true);
            if self
                .hosts
                .iter()
                .any(|h| h.shares_a_name(&entry) && h.addr == addr)
            {
                continue; // Already answered.
            }
            let taken = self.hosts.iter().chain(&self.reserved).find(|h| {
                h.shares_a_name(&entry)
                    && h.addr != addr
                    && (!h.from_lease || h.addr.is_ipv4() == addr.is_ipv4())
            });
            match taken {
                Some(h) if h.from_lease => tracing::warn!(
                    "not giving name {hostname} to the DHCP lease of {addr}: the lease of {} has it",
                    h.addr
                ),
                Some(h) => tracing::warn!(
                    "not giving name {hostname} to the DHCP lease of {addr}: the name is configured for {}",
                    h.addr
                ),
                None => self.hosts.push(entry),
            }
        }
    }

    /// Decides what to do with a query (a UDP payload sent to the DNS port).
    pub fn answer(&self, query: &[u8]) -> Answer {
        let Ok(header) = Header::parse(query) else {
            return Answer::Ignore;
        };
        if header.is_response() {
            return Answer::Ignore;
        }
        let refuse = |rcode| error_response(query, rcode).map_or(Answer::Ignore, Answer::Refuse);
        if header.opcode() != 0 {
            return refuse(RCODE_NOTIMP);
        }
        let question = match parse_question(query) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!("malformed DNS query: {e}");
                return refuse(RCODE_FORMERR);
            }
        };
        if question.qclass != CLASS_IN && question.qclass != CLASS_ANY {
            return Answer::Forward;
        }

        let named: Vec<&HostEntry> = self
            .hosts
            .iter()
            .filter(|h| h.matches(&question.name))
            .collect();
        if !named.is_empty() {
            let records = named.iter().filter_map(|h| match (h.addr, question.qtype) {
                (IpAddr::V4(a), TYPE_A | TYPE_ANY) => Some((TYPE_A, a.octets().to_vec())),
                (IpAddr::V6(a), TYPE_AAAA | TYPE_ANY) => Some((TYPE_AAAA, a.octets().to_vec())),
                _ => None,
            });
            // A known name without records of the asked type: NODATA (RCODE_NOERROR, no answers).
            return Answer::Local(self.response(&header, &question, RCODE_NOERROR, records));
        }
        if question.qtype == TYPE_PTR || question.qtype == TYPE_ANY {
            if let Some(addr) = reverse_address(&question.name) {
                if let Some(host) = self.hosts.iter().find(|h| h.addr == addr) {
                    let record = (TYPE_PTR, host.canonical().as_wire().to_vec());
                    return Answer::Local(self.response(
                        &header,
                        &question,
                        RCODE_NOERROR,
                        std::iter::once(record),
                    ));
                }
            }
        }
        let inside_domain = self
            .domain
            .as_ref()
            .is_some_and(|d| question.name.ends_with(d));
        if self.local_only && inside_domain {
            return Answer::Local(self.response(
                &header,
                &question,
                RCODE_NXDOMAIN,
                std::iter::empty(),
            ));
        }
        Answer::Forward
    }

    /// An authoritative response echoing the question, with `records` (type, rdata)
    /// owned by the question name.
    fn response(
        &self,
        header: &Header,
        question: &Question,
        rcode: u8,
        records: impl Iterator<Item = (u16, Vec<u8>)>,
    ) -> Vec<u8> {
        // QR, same opcode (0), AA, RD echoed, RA (we recurse through the upstreams).
        let flags = 0x8000 | 0x0400 | (header.flags & 0x0100) | 0x0080 | u16::from(rcode);
        let mut out = start_response(header.id, flags, Some(question));
        let mut count: u16 = 0;
        for (rtype, rdata) in records {
            let len = 2 + 2 + 2 + 4 + 2 + rdata.len();
            if out.len() + len > MAX_UDP_RESPONSE {
                out[2] |= 0x02; // TC
                break;
            }
            out.extend_from_slice(&[0xc0, HEADER_LEN as u8]); // pointer to the question name
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            // TTL 0: guests do not cache names that change with leases.
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&rdata);
            count += 1;
        }
        out[6..8].copy_from_slice(&count.to_be_bytes());
        out
    }
}

/// The address a reverse-lookup name (`4.3.2.1.in-addr.arpa`, nibbles under
/// `ip6.arpa`) stands for.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.labels().collect();
    let n = labels.len();
    if n < 2 || !labels[n - 1].eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let suffix = labels[n - 2];
    if suffix.eq_ignore_ascii_case(b"in-addr") && n == 6 {
        let mut octets = [0u8; 4];
        for (i, label) in labels[..4].iter().enumerate() {
            let text = std::str::from_utf8(label).ok()?;
            // No leading zeros or signs: one canonical spelling per address.
            if text.is_empty()
                || (text.len() > 1 && text.starts_with('0'))
                || !text.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            octets[3 - i] = text.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if suffix.eq_ignore_ascii_case(b"ip6") && n == 34 {
        let mut value: u128 = 0;
        for label in labels[..32].iter().rev() {
            let [digit] = label else { return None };
            let nibble = (*digit as char).to_digit(16)?;
            value = value << 4 | u128::from(nibble);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}
