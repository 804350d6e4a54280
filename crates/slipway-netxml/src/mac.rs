//! MAC addresses and the random identifiers libvirt generates. The MAC type
//! itself is [`slipway_host::MacAddr`], shared by every crate.

pub use slipway_host::mac::{MacAddr, MacParseError};

/// A random RFC 4122 version 4 UUID, as `virsh net-define` assigns to a
/// definition without one.
pub fn generate_uuid() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// A random `52:54:00:xx:xx:xx` MAC address (see [`MacAddr::random_kvm`]).
pub fn generate_mac() -> MacAddr {
    MacAddr::random_kvm()
}
