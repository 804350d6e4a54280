//! The host's resolver configuration (`/etc/resolv.conf`, glibc syntax).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The system resolver configuration file.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// glibc uses at most this many `nameserver` lines (MAXNS); later ones are ignored.
const MAX_NAMESERVERS: usize = 3;

/// Why the host's upstream resolvers are not known.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The resolver configuration could not be read.
    #[error("cannot read resolver configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file names no usable nameserver (an offline host, or only scoped IPv6).
    #[error("resolver configuration {path} lists no usable nameserver: DNS cannot be forwarded")]
    NoNameservers {
        /// The file.
        path: PathBuf,
    },
}

/// What resolv.conf says about name resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses in file order, at most three (glibc's limit).
    /// Loopback stub resolvers (127.0.0.53) are kept: the host reaches them.
    pub nameservers: Vec<IpAddr>,
    /// The search list: the last `search` or `domain` line wins, as in glibc.
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text. Comment lines (`#`, `;`), unknown keywords and
    /// unparsable addresses are skipped; so are link-local IPv6 addresses with a
    /// `%scope`, which an `IpAddr` cannot carry.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword {
                "nameserver" => {
                    let Some(addr) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
                        tracing::debug!(line, "resolv.conf: nameserver line skipped");
                        continue;
                    };
                    if conf.nameservers.len() < MAX_NAMESERVERS {
                        conf.nameservers.push(addr);
                    }
                }
                "search" | "domain" => {
                    conf.search = words
                        .take_while(|w| !w.starts_with(['#', ';']))
                        .map(|w| w.trim_end_matches('.').to_string())
                        .filter(|w| !w.is_empty())
                        .collect();
                }
                _ => {}
            }
        }
        conf
    }

    /// Reads and parses a resolv.conf file.
    pub fn read(path: &Path) -> Result<Self, DnsError> {
        std::fs::read_to_string(path)
            .map(|text| Self::parse(&text))
            .map_err(|source| DnsError::Read {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The nameservers as socket addresses on port 53.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .map(|&ip| SocketAddr::new(ip, 53))
            .collect()
    }
}

/// The `nameserver` addresses of resolv.conf text (see [`ResolvConf::parse`]).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<IpAddr> {
    ResolvConf::parse(text).nameservers
}

/// The upstream resolvers listed in `path`, on port 53; an error when there are none.
pub fn upstreams_from_file(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let upstreams = ResolvConf::read(path)?.upstreams();
    if upstreams.is_empty() {
        return Err(DnsError::NoNameservers {
            path: path.to_path_buf(),
        });
    }
    Ok(upstreams)
}

/// The host's upstream resolvers from `/etc/resolv.conf`, on port 53. An offline
/// host with no nameserver gives [`DnsError::NoNameservers`] for the caller to report.
pub fn system_upstreams() -> Result<Vec<SocketAddr>, DnsError> {
    upstreams_from_file(Path::new(RESOLV_CONF))
}

/// The host's DNS search list from `/etc/resolv.conf` (empty when none is set).
pub fn system_search_domains() -> Result<Vec<String>, DnsError> {
    ResolvConf::read(Path::new(RESOLV_CONF)).map(|c| c.search)
}
