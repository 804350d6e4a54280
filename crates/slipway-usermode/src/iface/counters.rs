//! Frame and drop counters, and why a frame was dropped.

use crate::config::DenyReason;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a frame from the guest (or a datagram from the host) was dropped.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum DropReason { $(#[doc = $doc] $variant,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Short stable name used in logs and by the control API.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    Truncated => "truncated", "Shorter than its headers say.";
    Oversized => "oversized", "Larger than the link MTU or the framing limit.";
    BadChecksum => "bad-checksum", "A header or payload checksum did not match.";
    Malformed => "malformed", "A header field has an impossible value.";
    UnsupportedProtocol => "unsupported-protocol", "An EtherType or IP protocol the stack does not serve.";
    NotForUs => "not-for-us", "Addressed to a MAC or IP address nothing here owns.";
    Fragment => "fragment", "An IP fragment (the stack does not reassemble).";
    Restricted => "restricted", "Outbound traffic refused by restrict=on.";
    HostLoopback => "host-loopback", "Outbound traffic to the host's loopback refused by --no-host-loopback.";
    FlowLimit => "flow-limit", "A flow table is full.";
    GuestTxFull => "guest-tx-full", "No room left in the queue toward the guest.";
    BadDhcp => "bad-dhcp", "A DHCP message that could not be parsed or answered.";
    HostSocketError => "host-socket-error", "The host refused to open or use a socket.";
    Unresolved => "unresolved", "No guest answered address resolution for the destination (or too many frames waited for it).";
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
    drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts one drop and logs it at debug level.
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
        tracing::debug!(reason = reason.name(), "dropped");
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
