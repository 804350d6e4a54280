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
//! dispatches to. Replies travel back through [`ctx::GuestTx`], a pool of
//! frame slots allocated once, which the attachment drains in batches.
//!
//! Configuration comes from QEMU's `-netdev user` option string
//! ([`options`]) and is validated once into a [`config::StackConfig`].
//! [`event_loop::run`] ties it together; [`api`] lets a running stack be
//! inspected and changed over a unix socket.

#![deny(missing_docs)]

pub mod api;
mod arp;
pub mod attach;
pub mod config;
mod control_socket;
mod csum;
pub mod ctx;
mod dns;
pub mod event_loop;
mod guestfwd;
mod icmp;
mod ndp;
pub mod options;
mod ping;
pub mod services;
pub mod slirp4netns_api;
mod smb;
pub mod stack;
pub mod status;
pub mod switch;
pub mod tcp;
mod tftp;
mod udp;
