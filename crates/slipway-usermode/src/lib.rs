//! slipway's user-mode network stack.
//!
//! One process serves one virtual Ethernet link. A frame from the VM
//! travels one way through the crate:
//!
//! attach (framing) → switch (several VMs on one link) → stack (Ethernet,
//! ARP, IPv4 dispatch) → protocol handlers (ICMP, UDP, TCP) → flow tables
//! → host sockets,
//!
//! with services (DHCP, DNS forwarding) as handlers the IPv4 layer
//! dispatches to. Replies travel back through [`iface::GuestTx`], a pool of
//! frame slots allocated once, which the attachment drains in batches.
//!
//! Configuration comes from QEMU's `-netdev user` option string
//! ([`options`]) and is validated once into a [`config::StackConfig`].
//! [`event_loop::run`] ties it together; [`api`] lets a running stack be
//! inspected and changed over a unix socket.
//!
//! # Layers
//!
//! Modules import only the layers below them (smoltcp's rule; a module
//! and its own child may import each other), so the tree reads bottom-up:
//!
//! 1. [`wire`]: addresses, header lengths, link framing, the ARP and
//!    neighbour-solicitation builders, checksums. Imports nothing here.
//! 2. [`config`] (with its [`config::services`]) and [`options`]: the
//!    validated model and the option parser. Never import the runtime.
//! 3. [`iface`]: the TX slot pool, neighbour cache, counters and drop
//!    reasons, tokens, the shared context, the error type, flow
//!    descriptions. Imports `wire` and `config`.
//! 4. Protocol handlers: `arp`, `icmp`/`ping`, `ndp`, `udp`, [`tcp`],
//!    `dns`, `tftp`, `smb`, `guestfwd`. Import `iface`, `wire` and
//!    `config` only, save the echo table ICMPv4 and ICMPv6 share
//!    (`ndp` → `icmp` → `ping`) and the smbd that `guestfwd` starts
//!    (`guestfwd` → `smb`); never the dispatcher.
//! 5. [`stack`]: the dispatcher; [`status`]: snapshots of it.
//! 6. [`link`]: the [`Attachment`](link::Attachment), one file per
//!    transport, and the learning [`switch`] between its VMs.
//! 7. On top: [`event_loop`], [`api`] (over `control_socket`),
//!    [`slirp4netns_api`], [`port_watch`] and [`ns_forward`] (pasta's
//!    `-T`/`-U`, which reads the socket tables as `port_watch` does).
//!
//! `python3 ../shared/tools/modcycles.py crates` checks the rule.

#![deny(missing_docs)]

pub mod api;
mod arp;
pub mod busy_poll;
pub mod config;
mod control_socket;
mod dns;
mod epoll;
pub mod event_loop;
mod guestfwd;
mod icmp;
pub mod iface;
pub mod link;
pub mod metrics;
mod ndp;
pub mod ns_forward;
pub mod options;
mod ping;
pub mod port_watch;
pub mod slirp4netns_api;
mod smb;
pub mod stack;
pub mod status;
pub mod tcp;
mod tftp;
mod udp;
pub mod wire;

/// The services' configuration under its former path.
pub use config::services;
/// The interface layer under its former name (`ctx`), for callers of the
/// public API.
pub use iface as ctx;
/// The VM link under its former name (`attach`).
pub use link as attach;
/// The switch under its former path.
pub use link::switch;
