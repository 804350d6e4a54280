//! `<slipway:ovn>`: slipway's own element, inside `<metadata>`, that puts a
//! network on an OVN logical switch spanning hosts.
//!
//! Theory of operation. libvirt's network XML has no way to say "this
//! network is an OVN logical switch", and `<metadata>` is the place libvirt
//! reserves for other applications' data: it keeps one element per
//! namespace verbatim, so a definition carrying slipway's element still
//! round-trips through libvirt (and through slipway's own printer, which
//! prints `<metadata>` unchanged: this module only reads it). The element
//! lives in the namespace [`OVN_NS`]:
//!
//! ```xml
//! <metadata>
//!   <slipway:ovn xmlns:slipway='https://slipway.dev/xmlns/network/ovn/1'
//!                switch='tenant1' nb='tcp:192.0.2.1:6641' subnet='10.10.0.0/24'>
//!     <slipway:address mac='52:54:00:00:00:10' ip='10.10.0.10'/>
//!   </slipway:ovn>
//! </metadata>
//! ```
//!
//! `switch` names the logical switch, `nb` the northbound database (one or
//! more comma-separated `unix:/ABSOLUTE/PATH` or `tcp:IP:PORT` remotes, as
//! `ovn-nbctl --db` takes them), `subnet` (optional, IPv4) turns on OVN's
//! address management for the switch (`other_config:subnet`), and each
//! `<slipway:address>` fixes the IP address of the port with that MAC.
//! Every value is checked here and refused with the element's path,
//! because the manager hands them to `ovn-nbctl` (as argv items, never
//! through a shell): a switch name must not look like an option, a remote
//! must be one `ovn-nbctl` reads as such. Anything else in the namespace
//! (an unknown attribute, another element) is refused, not ignored: a typo
//! in `subnet` must not silently leave the switch without addresses.

use std::net::IpAddr;
use std::path::PathBuf;

use slipway_host::ipnet::Ipv4Net;

use crate::mac::MacAddr;

/// slipway's namespace for the OVN element inside `<metadata>`.
pub const OVN_NS: &str = "https://slipway.dev/xmlns/network/ovn/1";

/// The longest logical switch name accepted, in bytes.
pub const OVN_SWITCH_NAME_MAX: usize = 64;

/// The most northbound remotes one `nb` attribute may list.
pub const OVN_REMOTES_MAX: usize = 8;

/// The most `<slipway:address>` elements one network may hold (one per
/// guest port: the manager's port limit).
pub const OVN_ADDRESSES_MAX: usize = 4096;

/// The longest unix socket path accepted (the kernel's `sun_path` less its
/// terminating NUL).
pub const OVN_UNIX_PATH_MAX: usize = 107;

/// The OVN side of a network: its logical switch and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnSwitch {
    /// `switch`: the logical switch's name.
    pub switch: String,
    /// `nb`: the northbound database's remotes, in the order given.
    pub nb: Vec<OvnRemote>,
    /// `subnet`: the switch's `other_config:subnet` (OVN's IPAM hands
    /// ports without a fixed address one from it).
    pub subnet: Option<Ipv4Net>,
    /// `<slipway:address>`s: fixed IP addresses by MAC.
    pub addresses: Vec<OvnAddress>,
}

/// One northbound database remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvnRemote {
    /// `unix:PATH`, an absolute path.
    Unix(PathBuf),
    /// `tcp:IP:PORT` (an IPv6 address in brackets).
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for OvnRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OvnRemote::Unix(p) => write!(f, "unix:{}", p.display()),
            OvnRemote::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// `<slipway:address mac ip>`: the port with this MAC gets this address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OvnAddress {
    /// The guest interface's MAC address.
    pub mac: MacAddr,
    /// Its IP address on the logical switch.
    pub ip: IpAddr,
}

impl OvnSwitch {
    /// The `--db` value for `ovn-nbctl`: the remotes joined by commas.
    pub fn db(&self) -> String {
        self.nb
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `addresses` of the logical switch port for a guest with `mac`:
    /// `"MAC IP"` for a fixed address, `"MAC dynamic"` when the switch has
    /// a subnet (OVN picks one), else `"MAC"`.
    pub fn port_addresses(&self, mac: MacAddr) -> String {
        match self.addresses.iter().find(|a| a.mac == mac) {
            Some(a) => format!("{mac} {}", a.ip),
            None if self.subnet.is_some() => format!("{mac} dynamic"),
            None => mac.to_string(),
        }
    }
}

/// Why a switch name is refused, or `None` when it is fine.
pub(crate) fn switch_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > OVN_SWITCH_NAME_MAX {
        return Some(format!("a name of 1 to {OVN_SWITCH_NAME_MAX} bytes"));
    }
    if name.starts_with('-') {
        return Some("a name that does not start with '-'".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Some("a name of letters, digits, '-', '_' and '.'".into());
    }
    None
}

/// Reads one remote, or says what was expected.
pub(crate) fn parse_remote(s: &str) -> Result<OvnRemote, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err("unix: with an absolute path".into());
        }
        if path.len() > OVN_UNIX_PATH_MAX {
            return Err(format!(
                "a unix socket path of at most {OVN_UNIX_PATH_MAX} bytes"
            ));
        }
        if path.contains(['\0', ',']) || path.split('/').any(|c| c == "..") {
            return Err("a unix socket path without NUL, ',' or '..'".into());
        }
        return Ok(OvnRemote::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = s.strip_prefix("tcp:") {
        return addr
            .parse()
            .map(OvnRemote::Tcp)
            .map_err(|_| "tcp:IP:PORT (an IPv6 address in brackets)".into());
    }
    Err("unix:/PATH or tcp:IP:PORT (ssl: is not supported)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_read_and_print_back() {
        for s in [
            "unix:/run/ovn/ovnnb_db.sock",
            "tcp:192.0.2.1:6641",
            "tcp:[2001:db8::1]:6641",
        ] {
            assert_eq!(parse_remote(s).unwrap().to_string(), s);
        }
        for bad in [
            "unix:relative",
            "unix:/a/../b",
            "tcp:host.example:6641",
            "tcp:192.0.2.1",
            "ssl:192.0.2.1:6641",
            "punix:/x",
            "",
        ] {
            assert!(parse_remote(bad).is_err(), "{bad}");
        }
        let long = format!("unix:/{}", "a".repeat(OVN_UNIX_PATH_MAX));
        assert!(parse_remote(&long).is_err());
    }

    #[test]
    fn switch_names() {
        assert_eq!(switch_name_problem("tenant1.net-a_b"), None);
        for bad in ["", "-x", "a b", "a;b", "a\"b", "é"] {
            assert!(switch_name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(switch_name_problem(&"a".repeat(OVN_SWITCH_NAME_MAX)).is_none());
        assert!(switch_name_problem(&"a".repeat(OVN_SWITCH_NAME_MAX + 1)).is_some());
    }

    #[test]
    fn port_addresses() {
        let mac: MacAddr = "52:54:00:00:00:10".parse().unwrap();
        let other: MacAddr = "52:54:00:00:00:11".parse().unwrap();
        let mut sw = OvnSwitch {
            switch: "s".into(),
            nb: vec![parse_remote("tcp:192.0.2.1:6641").unwrap()],
            subnet: None,
            addresses: vec![OvnAddress {
                mac,
                ip: "10.0.0.10".parse().unwrap(),
            }],
        };
        assert_eq!(sw.port_addresses(mac), "52:54:00:00:00:10 10.0.0.10");
        assert_eq!(sw.port_addresses(other), "52:54:00:00:00:11");
        sw.subnet = Some("10.0.0.0/24".parse().unwrap());
        assert_eq!(sw.port_addresses(other), "52:54:00:00:00:11 dynamic");
    }
}
