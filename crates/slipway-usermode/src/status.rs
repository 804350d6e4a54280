//! What a running stack reports about itself, and the changes it accepts
//! while running: host forwards, DHCP leases, flows and counters.
//!
//! The types here are plain snapshots (serialisable, so the control API in
//! [`crate::api`] sends them as they are); taking one never changes the
//! stack. Adding and removing forwards goes through the same code paths as
//! the forwards of the option string, so a forward added at run time
//! behaves exactly like a `hostfwd=` one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use mio::Registry;
use serde::{Deserialize, Serialize};

use crate::config::{ForwardProtocol, HostForward};
pub use crate::iface::flow::{FlowInfo, FlowProtocol};
use crate::iface::{Counters, DropReason, StackError};
use crate::stack::Stack;

/// One host forward as it is bound now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardInfo {
    /// TCP or UDP.
    pub protocol: FlowProtocol,
    /// The host address and port it is bound to (the real port when 0 was asked for).
    pub host: SocketAddr,
    /// The guest address and port it forwards to.
    pub guest: SocketAddr,
}

/// `tcp 127.0.0.1:8080 -> 10.0.2.15:80`: as `slipway ctl` prints it.
impl std::fmt::Display for ForwardInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.protocol, self.host, self.guest)
    }
}

/// One DHCP lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The client's MAC address, `52:54:00:12:34:56` style.
    pub mac: String,
    /// The leased address.
    pub ip: IpAddr,
    /// The lease's host name (the client's, under the DHCP server's name
    /// rule: one label of letters, digits, `-`, `_`), if any.
    pub hostname: Option<String>,
    /// Seconds until the lease ends (`None`: never).
    pub expires_in_secs: Option<u64>,
}

/// Frame counters and drops by reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersInfo {
    /// Frames received from the guests.
    pub frames_in: u64,
    /// Frames sent to the guests.
    pub frames_out: u64,
    /// Bytes received from the guests.
    pub bytes_in: u64,
    /// Bytes sent to the guests.
    pub bytes_out: u64,
    /// Drops by reason ([`DropReason::as_str`]); every reason is present.
    pub drops: BTreeMap<String, u64>,
}

impl From<&Counters> for CountersInfo {
    fn from(c: &Counters) -> Self {
        CountersInfo {
            frames_in: c.frames_in,
            frames_out: c.frames_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            drops: DropReason::KEYWORDS
                .iter()
                .map(|&(name, r)| (name.to_string(), c.drops(r)))
                .collect(),
        }
    }
}

impl Stack {
    /// Every host forward, TCP first, in the order they were added.
    pub fn forwards(&self) -> Vec<ForwardInfo> {
        let tcp = self.tcp.forwards().map(|(host, fwd)| ForwardInfo {
            protocol: FlowProtocol::Tcp,
            host,
            guest: self.shown_guest(fwd),
        });
        let udp = self.udp.forwards().map(|(host, fwd)| ForwardInfo {
            protocol: FlowProtocol::Udp,
            host,
            guest: self.shown_guest(fwd),
        });
        tcp.chain(udp).collect()
    }

    /// The guest end of `fwd` as reported: `[::]:port` for an IPv6 forward
    /// to the guest's SLAAC address while that is not known yet.
    fn shown_guest(&self, fwd: &HostForward) -> SocketAddr {
        crate::iface::forward_guest(&self.core.cfg, &self.core.neighbours, fwd)
            .unwrap_or_else(|| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), fwd.guest_port))
    }

    /// Opens a host forward while the stack runs (as if it had been a
    /// `hostfwd=` option); a forward without guest address goes to the
    /// first DHCP address.
    pub fn add_forward(
        &mut self,
        registry: &Registry,
        fwd: &HostForward,
    ) -> Result<ForwardInfo, StackError> {
        let host = match fwd.protocol {
            ForwardProtocol::Tcp => self
                .tcp
                .add_forward(registry, fwd)
                .map_err(StackError::TcpForward)?,
            ForwardProtocol::Udp => self.udp.add_forward(registry, fwd)?,
        };
        let guest = self.shown_guest(fwd);
        tracing::info!(protocol = ?fwd.protocol, %host, %guest, "host forward added");
        Ok(ForwardInfo {
            protocol: fwd.protocol,
            host,
            guest,
        })
    }

    /// Closes the host forward of `protocol` bound to `host`. Connections
    /// it already made go on (TCP); its UDP flows end. Returns what was
    /// removed, or `None` when no such forward exists.
    pub fn remove_forward(
        &mut self,
        registry: &Registry,
        protocol: ForwardProtocol,
        host: SocketAddr,
    ) -> Option<ForwardInfo> {
        let fwd = match protocol {
            ForwardProtocol::Tcp => self.tcp.remove_forward(registry, host)?,
            ForwardProtocol::Udp => self.udp.remove_forward(registry, host)?,
        };
        let guest = self.shown_guest(&fwd);
        tracing::info!(?protocol, %host, %guest, "host forward removed");
        Some(ForwardInfo {
            protocol,
            host,
            guest,
        })
    }

    /// Every DHCP lease in force at `now`.
    pub fn leases(&self, now: SystemTime) -> Vec<LeaseInfo> {
        self.dhcp
            .leases()
            .filter(|l| l.is_active(now))
            .map(|l| LeaseInfo {
                mac: l
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                ip: l.ip.into(),
                hostname: l.hostname.as_ref().map(|h| h.to_string()),
                expires_in_secs: l
                    .expires
                    .map(|t| t.duration_since(now).unwrap_or_default().as_secs()),
            })
            .collect()
    }

    /// Every active flow at `now`, TCP first.
    pub fn flows(&self, now: Instant) -> Vec<FlowInfo> {
        self.tcp.flows(now).chain(self.udp.flows(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{parse_hostfwd, parse_options};

    #[test]
    fn forwards_are_added_listed_and_removed() {
        let poll = mio::Poll::new().unwrap();
        let mut stack = Stack::new(parse_options("hostfwd=udp:127.0.0.1:0-:53").unwrap()).unwrap();
        stack.start(poll.registry()).unwrap();
        assert_eq!(stack.forwards().len(), 1);
        let cfg = stack.config().clone();
        let fwd = parse_hostfwd("tcp:127.0.0.1:0-10.0.2.16:22", &cfg).unwrap();
        let added = stack.add_forward(poll.registry(), &fwd).unwrap();
        assert_eq!(added.protocol, FlowProtocol::Tcp);
        assert_ne!(added.host.port(), 0, "the real port is reported");
        assert_eq!(added.guest, "10.0.2.16:22".parse().unwrap());
        std::net::TcpStream::connect(added.host).expect("the forward listens");
        let list = stack.forwards();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], added);
        assert_eq!(list[1].protocol, FlowProtocol::Udp);
        // Removing needs the right protocol and address.
        assert_eq!(
            stack.remove_forward(poll.registry(), ForwardProtocol::Udp, added.host),
            None
        );
        assert_eq!(
            stack.remove_forward(poll.registry(), ForwardProtocol::Tcp, added.host),
            Some(added.clone())
        );
        assert!(std::net::TcpStream::connect(added.host).is_err(), "closed");
        assert_eq!(stack.forwards().len(), 1);
        // The same address can be forwarded again.
        let again = HostForward {
            host: added.host,
            ..fwd
        };
        stack.add_forward(poll.registry(), &again).unwrap();
    }

    #[test]
    fn counters_list_every_drop_reason() {
        let mut c = Counters::default();
        c.frames_in = 3;
        c.drop(DropReason::Fragment);
        let info = CountersInfo::from(&c);
        assert_eq!(info.frames_in, 3);
        assert_eq!(info.drops.len(), DropReason::KEYWORDS.len());
        assert_eq!(info.drops["fragment"], 1);
        assert_eq!(info.drops["truncated"], 0);
    }
}
