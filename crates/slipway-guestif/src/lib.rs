//! Guest interfaces: a VM's libvirt `<interface>` elements turned into host
//! plumbing and QEMU arguments.
//!
//! One way through: XML ([`slipway_netxml::interface`]) → [`Plan`] (MACs,
//! ids, QEMU arguments; pure, so `slipway qemu-args` prints exactly what
//! `launch` uses) → [`host::realize`] (taps on bridges or networks, scripts,
//! user-mode stacks; recorded in the [`StateDir`]) → [`launch::launch`]
//! (QEMU with the tap descriptors) → teardown when QEMU ends. QEMU's own
//! `-netdev bridge` goes through the separate `slipway-bridge-helper`
//! crate instead.
//!
//! Taps, bridges and MTUs go through `slipway-hostnet`'s netlink client; a
//! `type='network'` interface finds its bridge in the network manager's
//! live state ([`host::ManagerNetworks`]). A tap whose `<virtualport>` is
//! `openvswitch` (its own, or its network's) goes on an Open vSwitch bridge
//! instead ([`ovs`]), as libvirt plugs it.

#![deny(missing_docs)]

mod error;
pub mod host;
pub mod launch;
pub mod ovs;
pub mod plan;
pub mod port;
pub mod signals;
pub mod state;

pub use error::{Error, Result};
pub use plan::{HostSide, Nic, Plan};
pub use state::StateDir;
