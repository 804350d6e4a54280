//! libvirt's remote RPC protocol, as libvirt's network daemon
//! (`virtnetworkd`) speaks it, in front of slipway's network manager: so
//! virsh, libvirt's language bindings and libvirt's own daemons drive
//! slipway's networks unchanged.
//!
//! Layers, each importing only those below it:
//!
//! ```text
//! server     sockets, a thread and a mio loop per connection, bounds
//! dispatch   one session: keepalive, program checks, open, read-only,
//!            procedures → Manager, events → MESSAGEs; ports in one place
//! procs      the procedure table and argument decoding
//! remote     every procedure of libvirt's remote program (a table
//!            generated from remote_protocol.x) and virtnetworkd's answer
//!            to those not served
//! host       host facts beyond virtnetworkd's (capabilities, node info)
//! errors     libvirt's error numbers/domains and messages
//! message    framing: length word, header, libvirt's size limits
//! xdr        XDR primitives (the leaf)
//! ```
//!
//! Facts are from libvirt 9.0's sources (`src/rpc/virnetprotocol.x`,
//! `src/remote/remote_protocol.x`, `remote_daemon_dispatch.c`,
//! `virnetserverprogram.c`, `virkeepalive.c`).

#![deny(missing_docs)]

pub mod dispatch;
pub mod errors;
pub mod host;
pub mod message;
pub mod procs;
pub mod remote;
pub mod server;
pub mod xdr;

pub use dispatch::{DhcpLease, LeaseSource, Session};
pub use server::{
    serve, Config, Limits, ServeError, FD_NAME, FD_NAMES, FD_NAME_RO, SOCKET, SOCKET_RO,
};
