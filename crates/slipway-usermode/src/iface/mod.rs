//! The interface layer: what every protocol handler shares while it
//! handles one event (smoltcp's `iface`). It imports only [`crate::wire`]
//! and [`crate::config`], never a handler or the dispatcher.
//!
//! The data path is single-threaded and event-driven: the event loop wakes
//! on the VM link or on a host socket, and hands the matching handler a
//! [`Ctx`]. Through it a handler queues frames toward the guest
//! ([`GuestTx`]), registers host sockets ([`token()`]), counts what it drops
//! ([`Counters`]) and finds the guest's MAC address ([`Neighbours`]).
//!
//! - [`tx`]: the pool of frame slots toward the guest, allocated once.
//! - [`neighbours`]: the neighbour cache and the frames held while an
//!   address is resolved.
//! - [`counters`]: frame counters and drop reasons.
//! - [`token`](mod@token): event-loop tokens (handler kind and table index).
//! - [`ctx`]: the shared state (`Core`) and the per-event view of it
//!   ([`Ctx`]) with the IP emitters and the forward lookup.
//! - [`flow`]: flow descriptions the flow tables report.
//! - [`error`]: the error of setting a stack up.
//! - [`udp`]: the UDP datagram check and emitter the UDP senders share.
//! - [`listen`]: the host sockets of host forwards, bound with the
//!   options the forward asks for (`IPV6_V6ONLY`, `SO_BINDTODEVICE`).

pub mod counters;
pub mod ctx;
pub mod error;
pub mod flow;
pub mod listen;
pub mod neighbours;
pub mod token;
pub mod tx;
pub mod udp;

pub use counters::{Counters, DropReason};
pub(crate) use ctx::Core;
pub use ctx::{forward_guest, Ctx};
pub use error::StackError;
pub use neighbours::{Due, Held, Neighbours, RESOLVE_RETRY};
pub use token::{decode_token, token, TokenKind};
pub use tx::GuestTx;
// The wire items the public API has always offered here.
pub use crate::wire::framing::{
    Offload, RxChecksum, FRAME_PREFIX_LEN, MAX_OFFLOAD_PACKET, VNET_HDR_LEN,
};
pub use crate::wire::{
    ipv6_multicast_mac, ETHERNET_HEADER_LEN, GATEWAY_MAC, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};
