//! slipway's network manager: persistent network definitions, live state,
//! the daemon and its API.
//!
//! A definition goes one way: XML → validated model (`slipway-netxml`) →
//! [`Plan`] → [`Backend::start`] → recorded [`LiveState`] → [`Backend::stop`].
//! The [`Manager`] keeps definitions and live state on disk ([`Paths`]),
//! under a lock, with crash-safe writes; [`daemon::run`] serves it over a
//! unix socket and [`Client`] talks to that socket. A reader that
//! realizes nothing (a guest looking up its network's bridge) uses
//! [`read_info`], which needs no backend.

#![deny(missing_docs)]

pub mod client;
pub mod daemon;
mod daemon_systemd;
pub mod defaultnet;
mod defcache;
pub mod dnsmasq;
mod error;
pub mod events;
mod fsutil;
mod manager;
mod metrics;
mod paths;
pub mod plan;
pub mod portapi;
pub mod proto;
mod realize;
pub mod shaping;
mod table;
pub mod update;

pub use client::{Client, EventStream};
pub use error::{Error, ErrorCode, Result};
pub use events::EventHub;
pub use manager::{read_info, read_live, Manager, ShutdownGuard};
pub use paths::Paths;
pub use plan::{Action, Plan};
pub use realize::{Backend, LiveState, RecordingBackend, ServiceStats};
pub use table::vsh_table;
