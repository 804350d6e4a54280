//! DHCPv4 server logic (lease pool and replies) shared by slipway's user-mode stack and its bridge networks.
//!
//! Pure logic over byte slices and time: the caller receives UDP payloads sent to
//! port 67 (from guest frames in the user-mode stack, or from a real socket bound to
//! a bridge), passes them to [`DhcpServer::handle`] with the current time, and sends
//! the returned [`DhcpReply`] from port 67 to port 68 at the address it names. No
//! frames, sockets or event loop here, so both users drive the same code.
//!
//! [`v6`] is the DHCPv6 counterpart (stateless: DNS servers and search list
//! for clients that got their address by SLAAC; stateful: addresses leased
//! from a range), and [`ra`] builds the router advertisements that send
//! clients to it.

#![deny(missing_docs)]

mod config;
pub mod ra;
mod reply;
mod request;
mod server;
pub mod v6;

pub use config::{is_valid_name, AddressPool, DhcpConfig, DhcpConfigError, StaticHost};
pub use reply::{DhcpReply, ReplyDestination, ReplyKind};
pub use request::DhcpError;
pub use server::{DhcpServer, Lease};
/// The host name of a lease (re-exported: it is in [`Lease`] and [`v6::Binding`]).
pub use slipway_dns::HostName;
