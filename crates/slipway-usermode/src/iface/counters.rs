//! Frame and drop counters, and why a frame was dropped.

use crate::config::DenyReason;

slipway_host::keywords! {
    /// Why a frame from the guest (or a datagram from the host) was
    /// dropped, with the short stable name logs and the control API use.
    pub enum DropReason {
        /// Shorter than its headers say.
        Truncated = "truncated",
        /// Larger than the link MTU or the framing limit.
        Oversized = "oversized",
        /// A header or payload checksum did not match.
        BadChecksum = "bad-checksum",
        /// A header field has an impossible value.
        Malformed = "malformed",
        /// An EtherType or IP protocol the stack does not serve.
        UnsupportedProtocol = "unsupported-protocol",
        /// Addressed to a MAC or IP address nothing here owns.
        NotForUs = "not-for-us",
        /// An IP fragment (the stack does not reassemble).
        Fragment = "fragment",
        /// Outbound traffic refused by restrict=on.
        Restricted = "restricted",
        /// Outbound traffic to the host's loopback refused by --no-host-loopback.
        HostLoopback = "host-loopback",
        /// A flow table is full.
        FlowLimit = "flow-limit",
        /// No room left in the queue toward the guest.
        GuestTxFull = "guest-tx-full",
        /// A DHCP message that could not be parsed or answered.
        BadDhcp = "bad-dhcp",
        /// The host refused to open or use a socket.
        HostSocketError = "host-socket-error",
        /// No guest answered address resolution for the destination (or too
        /// many frames waited for it).
        Unresolved = "unresolved",
    }
}

/// Frame and drop counters of one stack.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Frames received from the guest.
    pub frames_in: u64,
    /// Frames sent to the guest.
    pub frames_out: u64,
    /// Bytes received from the guest (Ethernet frames).
    pub bytes_in: u64,
    /// Bytes sent to the guest (Ethernet frames).
    pub bytes_out: u64,
    /// DNS queries the guests sent to the DNS address.
    pub dns_queries: u64,
    /// DNS queries answered SERVFAIL because no upstream answered (or
    /// none could be asked).
    pub dns_upstream_failures: u64,
    drops: [u64; DropReason::KEYWORDS.len()],
}

impl Counters {
    /// Counts one drop and logs it at debug level.
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
        tracing::debug!(reason = reason.as_str(), "dropped");
    }

    /// How many drops `reason` has caused.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Total drops of every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

impl DenyReason {
    /// The drop counter a refused flow is counted under.
    pub fn drop_reason(self) -> DropReason {
        match self {
            DenyReason::Restricted => DropReason::Restricted,
            DenyReason::HostLoopbackDisabled => DropReason::HostLoopback,
            DenyReason::NoRoute | DenyReason::Unsupported => DropReason::NotForUs,
        }
    }
}
