//! DNS pieces shared by slipway's user-mode stack and its bridge networks: host resolver discovery and query handling.
//!
//! Pure logic over byte slices: [`system_upstreams`] finds where to relay queries,
//! [`query_id`]/[`set_query_id`]/[`parse_question`] read and rewrite messages,
//! [`LocalZone`] answers a bridge network's own names, and [`HostName`] is the
//! one rule for the names DHCP clients give themselves. The one part with
//! sockets is the [`Relay`] both stacks forward queries through (see [`relay`]).

#![deny(missing_docs)]

mod hostname;
mod message;
pub mod relay;
mod resolv;
mod zone;

pub use hostname::{HostName, HostNameError, MAX_HOST_NAME};
pub use message::{
    error_response, parse_question, query_id, set_query_id, Header, MessageError, Name, Question,
    CLASS_IN, HEADER_LEN, RCODE_FORMERR, RCODE_NOERROR, RCODE_NOTIMP, RCODE_NXDOMAIN,
    RCODE_REFUSED, RCODE_SERVFAIL, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR,
};
pub use relay::{Dropped, Relay, RelayConfig, RelayStats, Submitted};
pub use resolv::{
    system_search_domains, system_upstreams, upstreams_from_file, upstreams_from_resolv_conf,
    DnsError, ResolvConf, RESOLV_CONF,
};
pub use zone::{Answer, LocalZone, ZoneError};
