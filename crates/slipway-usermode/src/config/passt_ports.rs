//! passt's and pasta's port forwarding specifications (`-t`/`--tcp-ports`,
//! `-u`/`--udp-ports`, `-T`, `-U`), parsed into a typed model.
//!
//! Theory of operation: one option value is `none`, `all`, or
//! `[ADDR[%IFNAME]/]CHUNK[,CHUNK...]` where a chunk is either a forwarded
//! range `FIRST[-LAST][:TARGET[-TARGET_LAST]]` or an excluded range
//! `~FIRST[-LAST]`. [`parse`] checks the grammar and the rules passt
//! enforces (ports 1 to 65535, ranges in order, a target range written out
//! and as long as its source, no port forwarded twice) and yields a [`PortSpec`];
//! [`PortSpec::expand`] turns it into one (host port, guest port) pair per
//! forwarded port. A list made only of exclusions forwards every other
//! port, like `all`; "every port" means the non-ephemeral ones (passt's
//! rule for `all`: the kernel's `ip_local_port_range` is left to outgoing
//! connections), which the caller passes in.
//!
//! Hand-written: the grammar is passt's own (no crate parses it), and it is
//! small enough that a parser combinator would be larger than the parser.

use std::net::IpAddr;
use std::ops::RangeInclusive;

/// Most characters accepted in one specification (passt's own bound on an
/// option value is about this size).
pub const MAX_SPEC_LEN: usize = 4096;

/// One `-t`/`-u` option value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// `none`: nothing forwarded.
    None,
    /// `all`, or a list of exclusions only: every non-ephemeral port
    /// except the excluded ones, each to the same guest port.
    All {
        /// Address (and interface) the listeners bind to, if any.
        bind: Bind,
        /// Ports left out (`~FIRST-LAST`).
        excluded: Vec<RangeInclusive<u16>>,
    },
    /// A list of forwarded ranges, minus exclusions.
    List {
        /// Address (and interface) the listeners bind to, if any.
        bind: Bind,
        /// The forwarded ranges, in the order written.
        ranges: Vec<PortRange>,
        /// Ports left out of them.
        excluded: Vec<RangeInclusive<u16>>,
    },
}

/// Where the host-side listeners of a specification bind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bind {
    /// `ADDR/`: this host address only (default: every address).
    pub addr: Option<IpAddr>,
    /// `ADDR%IFNAME/`: this interface only.
    pub ifname: Option<String>,
}

/// A forwarded range: host ports `first..=last` to guest ports from
/// `target` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First host port.
    pub first: u16,
    /// Last host port (equal to `first` for a single port).
    pub last: u16,
    /// Guest port of `first` (the rest follow in order).
    pub target: u16,
}

/// Why a specification was refused; each names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    /// Empty, or an empty chunk (`22,,25`).
    #[error("empty port specification or empty item in '{0}'")]
    Empty(String),
    /// Longer than [`MAX_SPEC_LEN`].
    #[error("port specification longer than {MAX_SPEC_LEN} characters")]
    TooLong,
    /// The part before `/` is not an IP address.
    #[error("invalid address '{0}' (expected ADDR/ or ADDR%IFNAME/ before the ports)")]
    Address(String),
    /// The interface after `%` is empty or not a valid interface name.
    #[error("invalid interface name '{0}'")]
    Interface(String),
    /// `%IFNAME/` without an address (passt 0.0~git20230309 refuses it
    /// too: its address parser gets an empty string).
    #[error("interface '{0}' without an address: give ADDR%{0}/ (0.0.0.0%{0}/ or ::%{0}/ for every address of a family)")]
    InterfaceWithoutAddress(String),
    /// Not a number from 1 to 65535.
    #[error("invalid port '{0}': expected a number from 1 to 65535")]
    Port(String),
    /// `LAST` below `FIRST`.
    #[error("invalid range '{0}': the last port is below the first")]
    Reversed(String),
    /// A target range that is not as long as its source range.
    #[error("invalid range '{0}': the target range is not as long as the forwarded one")]
    TargetLength(String),
    /// An excluded range with a target (`~22:23`).
    #[error("invalid exclusion '{0}': an excluded range has no target")]
    ExcludedTarget(String),
    /// A port forwarded by two ranges.
    #[error("port {0} is forwarded twice")]
    Overlap(u16),
    /// `all` or `none` with something else.
    #[error("'{0}' stands alone: it takes no address and no other ports")]
    Keyword(String),
}

/// Parses one `-t`/`-u` value (see the module header).
pub fn parse(spec: &str) -> Result<PortSpec, PortSpecError> {
    if spec.len() > MAX_SPEC_LEN {
        return Err(PortSpecError::TooLong);
    }
    match spec {
        "" => return Err(PortSpecError::Empty(spec.into())),
        "none" => return Ok(PortSpec::None),
        "all" => {
            return Ok(PortSpec::All {
                bind: Bind::default(),
                excluded: Vec::new(),
            })
        }
        _ => {}
    }
    let (bind, ports) = match spec.split_once('/') {
        Some((addr, ports)) => (parse_bind(addr)?, ports),
        None => (Bind::default(), spec),
    };
    if ports == "none" || ports == "all" {
        return Err(PortSpecError::Keyword(ports.into()));
    }
    let mut ranges = Vec::new();
    let mut excluded = Vec::new();
    for chunk in ports.split(',') {
        if chunk.is_empty() {
            return Err(PortSpecError::Empty(spec.into()));
        }
        if let Some(ex) = chunk.strip_prefix('~') {
            if ex.contains(':') {
                return Err(PortSpecError::ExcludedTarget(chunk.into()));
            }
            let (first, last) = parse_range(ex, chunk)?;
            excluded.push(first..=last);
            continue;
        }
        let (from, to) = match chunk.split_once(':') {
            Some((from, to)) => (from, Some(to)),
            None => (chunk, None),
        };
        let (first, last) = parse_range(from, chunk)?;
        let target = match to {
            None => first,
            Some(to) => {
                let (t_first, t_last) = parse_range(to, chunk)?;
                // passt refuses `22-80:32` too: both ranges are written out.
                if t_last - t_first != last - first {
                    return Err(PortSpecError::TargetLength(chunk.into()));
                }
                t_first
            }
        };
        ranges.push(PortRange {
            first,
            last,
            target,
        });
    }
    let mut seen: Vec<RangeInclusive<u16>> = Vec::new();
    for r in &ranges {
        if let Some(prev) = seen
            .iter()
            .find(|s| *s.start() <= r.last && r.first <= *s.end())
        {
            return Err(PortSpecError::Overlap(r.first.max(*prev.start())));
        }
        seen.push(r.first..=r.last);
    }
    if ranges.is_empty() {
        Ok(PortSpec::All { bind, excluded })
    } else {
        Ok(PortSpec::List {
            bind,
            ranges,
            excluded,
        })
    }
}

/// `ADDR` or `ADDR%IFNAME` (the part before `/`).
fn parse_bind(text: &str) -> Result<Bind, PortSpecError> {
    let (addr, ifname) = match text.split_once('%') {
        Some((addr, ifname)) => {
            // An interface name as the kernel takes it (IFNAMSIZ - 1).
            if ifname.is_empty()
                || ifname.len() > 15
                || ifname == "."
                || ifname == ".."
                || !ifname.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
            {
                return Err(PortSpecError::Interface(ifname.into()));
            }
            (addr, Some(ifname.to_string()))
        }
        None => (text, None),
    };
    if let Some(ifname) = ifname.as_ref().filter(|_| addr.is_empty()) {
        return Err(PortSpecError::InterfaceWithoutAddress(ifname.clone()));
    }
    let addr = addr
        .parse::<IpAddr>()
        .map_err(|_| PortSpecError::Address(addr.into()))?;
    Ok(Bind {
        addr: Some(addr),
        ifname,
    })
}

/// `FIRST[-LAST]` inside `chunk` (named in errors).
fn parse_range(text: &str, chunk: &str) -> Result<(u16, u16), PortSpecError> {
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let p = parse_port(text)?;
            (p, p)
        }
    };
    if last < first {
        return Err(PortSpecError::Reversed(chunk.into()));
    }
    Ok((first, last))
}

fn parse_port(text: &str) -> Result<u16, PortSpecError> {
    // Digits only: no sign, no spaces, no hex.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortSpecError::Port(text.into()));
    }
    text.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| PortSpecError::Port(text.into()))
}

impl PortSpec {
    /// Where the listeners bind (`None` for `none`).
    pub fn bind(&self) -> Option<&Bind> {
        match self {
            PortSpec::None => None,
            PortSpec::All { bind, .. } | PortSpec::List { bind, .. } => Some(bind),
        }
    }

    /// One (host port, guest port) pair per forwarded port, in order;
    /// `every` is what "every port" means (`all`, a list of exclusions
    /// only): the non-ephemeral ports.
    pub fn expand(&self, every: &[RangeInclusive<u16>]) -> Vec<(u16, u16)> {
        let excluded_by =
            |excluded: &[RangeInclusive<u16>], p: u16| excluded.iter().any(|r| r.contains(&p));
        match self {
            PortSpec::None => Vec::new(),
            PortSpec::All { excluded, .. } => every
                .iter()
                .flat_map(|r| r.clone())
                .filter(|&p| !excluded_by(excluded, p))
                .map(|p| (p, p))
                .collect(),
            PortSpec::List {
                ranges, excluded, ..
            } => ranges
                .iter()
                .flat_map(|r| (r.first..=r.last).map(move |p| (p, r.target + (p - r.first))))
                .filter(|&(p, _)| !excluded_by(excluded, p))
                .collect(),
        }
    }
}

/// The ports "every port" covers: 1 to 65535 without the kernel's
/// ephemeral range `ephemeral` (`ip_local_port_range`).
pub fn non_ephemeral(ephemeral: RangeInclusive<u16>) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    if *ephemeral.start() > 1 {
        out.push(1..=ephemeral.start() - 1);
    }
    if *ephemeral.end() < u16::MAX {
        out.push(ephemeral.end() + 1..=u16::MAX);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(spec: &str) -> Vec<(u16, u16)> {
        parse(spec).unwrap().expand(&non_ephemeral(32768..=60999))
    }

    /// Every example of passt(1)'s `-t` description, with what it says.
    #[test]
    fn passt_manual_examples() {
        assert_eq!(pairs("22"), vec![(22, 22)]);
        assert_eq!(pairs("22:23"), vec![(22, 23)]);
        assert_eq!(pairs("22,25"), vec![(22, 22), (25, 25)]);
        let r = pairs("22-80");
        assert_eq!((r.len(), r[0], r[58]), (59, (22, 22), (80, 80)));
        let r = pairs("22-80:32-90");
        assert_eq!((r.len(), r[0], r[58]), (59, (22, 32), (80, 90)));
        let s = parse("192.0.2.1/22").unwrap();
        assert_eq!(s.bind().unwrap().addr, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(pairs("192.0.2.1/22"), vec![(22, 22)]);
        let s = parse("192.0.2.1%eth0/22").unwrap();
        assert_eq!(s.bind().unwrap().ifname.as_deref(), Some("eth0"));
        let r = pairs("2000-5000,~3000-3010");
        assert_eq!(r.len(), 3001 - 11);
        assert!(r.contains(&(2999, 2999)) && !r.contains(&(3005, 3005)));
        assert!(r.contains(&(3011, 3011)));
        assert_eq!(
            pairs("192.0.2.1/20-30,~25"),
            [20, 21, 22, 23, 24, 26, 27, 28, 29, 30].map(|p| (p, p))
        );
        let r = pairs("~20000-20010");
        assert!(r.contains(&(19999, 19999)) && !r.contains(&(20005, 20005)));
        assert!(!r.contains(&(40000, 40000)), "ephemeral ports stay out");
        assert_eq!(r.len(), 65535 - (60999 - 32768 + 1) - 11);
        assert_eq!(parse("none").unwrap(), PortSpec::None);
        assert!(pairs("none").is_empty());
        assert_eq!(pairs("all").len(), 65535 - (60999 - 32768 + 1));
    }

    /// What libvirt 9.0 writes for a `<portForward>` (qemu_passt.c).
    #[test]
    fn libvirt_forms() {
        assert_eq!(pairs("2022:22"), vec![(2022, 22)]);
        assert_eq!(
            pairs("8000-8002:9000-9002"),
            [(8000, 9000), (8001, 9001), (8002, 9002)]
        );
        assert_eq!(pairs("~30000,8080"), vec![(8080, 8080)]);
        assert_eq!(
            pairs("::1/8080").len(),
            1,
            "an IPv6 address before the ports"
        );
        let s = parse("127.0.0.1/all");
        assert_eq!(s, Err(PortSpecError::Keyword("all".into())));
    }

    #[test]
    fn bad_specs_name_the_part() {
        let bad = [
            ("", PortSpecError::Empty("".into())),
            ("22,,25", PortSpecError::Empty("22,,25".into())),
            ("0", PortSpecError::Port("0".into())),
            ("65536", PortSpecError::Port("65536".into())),
            ("+22", PortSpecError::Port("+22".into())),
            ("22-", PortSpecError::Port("".into())),
            ("80-22", PortSpecError::Reversed("80-22".into())),
            (
                "22-80:32-33",
                PortSpecError::TargetLength("22-80:32-33".into()),
            ),
            (
                "65000-65010:65530",
                PortSpecError::TargetLength("65000-65010:65530".into()),
            ),
            ("~22:23", PortSpecError::ExcludedTarget("~22:23".into())),
            ("20-30,25", PortSpecError::Overlap(25)),
            ("host/22", PortSpecError::Address("host".into())),
            ("1.2.3.4%/22", PortSpecError::Interface("".into())),
            (
                "%eth0/22",
                PortSpecError::InterfaceWithoutAddress("eth0".into()),
            ),
            ("[::1]/22", PortSpecError::Address("[::1]".into())),
            ("1.2.3.4%a/b/22", PortSpecError::Port("b/22".into())),
            (
                "1.2.3.4%averyveryverylongname/22",
                PortSpecError::Interface("averyveryverylongname".into()),
            ),
        ];
        for (spec, want) in bad {
            assert_eq!(parse(spec), Err(want), "{spec}");
        }
        assert_eq!(parse(&"1,".repeat(3000)), Err(PortSpecError::TooLong));
        // passt refuses a single target port for a range.
        assert_eq!(
            parse("22-23:32"),
            Err(PortSpecError::TargetLength("22-23:32".into()))
        );
    }

    #[test]
    fn non_ephemeral_edges() {
        assert_eq!(non_ephemeral(1..=65535), Vec::<RangeInclusive<u16>>::new());
        assert_eq!(non_ephemeral(1024..=65535), vec![1..=1023]);
    }
}
