//! Flow descriptions: what a flow table reports of one flow (the control
//! API serialises them as they are).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a flow: the same two as a forward's, named as
/// the API names them.
pub use crate::config::ForwardProtocol as FlowProtocol;

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
