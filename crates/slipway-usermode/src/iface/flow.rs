//! Flow descriptions: what a flow table reports of one flow (the control
//! API serialises them as they are).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::ForwardProtocol;

/// Transport protocol of a flow or forward, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl From<ForwardProtocol> for FlowProtocol {
    fn from(p: ForwardProtocol) -> Self {
        match p {
            ForwardProtocol::Tcp => FlowProtocol::Tcp,
            ForwardProtocol::Udp => FlowProtocol::Udp,
        }
    }
}

impl std::fmt::Display for FlowProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlowProtocol::Tcp => "tcp",
            FlowProtocol::Udp => "udp",
        })
    }
}

/// One active flow (a translated connection or a UDP flow).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    /// TCP or UDP.
    pub protocol: FlowProtocol,
    /// The guest's end.
    pub guest: SocketAddr,
    /// The other end as the guest sees it.
    pub remote: SocketAddr,
    /// Payload bytes from the guest delivered to the host.
    pub bytes_from_guest: u64,
    /// Payload bytes from the host delivered to the guest.
    pub bytes_to_guest: u64,
    /// Seconds since the flow was opened.
    pub age_secs: u64,
}
