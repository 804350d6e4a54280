//! Every procedure of libvirt's remote program, served here or not, and
//! what libvirt's network daemon answers to one it has no driver for.
//!
//! Theory of operation: libvirt's daemons share one dispatch table
//! (generated from `remote_protocol.x`) holding all ~450 procedures. A
//! procedure number outside it, or an asynchronous event's number (no
//! function in the table), gets the RPC layer's "unknown procedure". Any
//! other call runs its stub, which first takes the connection of the
//! procedure's driver (`remoteGet*Conn`). In `virtnetworkd` (libvirt 9.0,
//! `remoteDispatchConnectOpen` with `MODULE_NAME` "network") only the
//! primary connection (the network driver's) exists after
//! `CONNECT_OPEN`; so:
//!
//! - a procedure of the storage, interface, node device, nwfilter or
//!   secret driver gets `remoteOpenConn`'s "internal error: connection not
//!   open" (no URI for that driver), before or after `CONNECT_OPEN`;
//! - a procedure of the hypervisor connection gets "hypervisor connection
//!   not open" before `CONNECT_OPEN`; after it, the public API function
//!   runs on the network driver's connection: a write on a read-only
//!   connection is refused first (`virCheckReadOnlyGoto`, "operation
//!   forbidden: read only access prevents virDomainCreate"), then the
//!   missing driver method gives `virReportUnsupportedError` ("this function
//!   is not supported by the connection driver: virConnectGetSysinfo"), in
//!   the error domain of the API's file (`VIR_FROM_DOMAIN` for
//!   `libvirt-domain.c` and `libvirt-host.c`);
//! - a network procedure slipway does not serve behaves the same on the
//!   network connection ("connection not open" before `CONNECT_OPEN`);
//! - the SASL and polkit steps fail with "authentication failed" (the
//!   sockets' authentication is none).
//!
//! The table is generated from libvirt's sources by
//! `scripts/gen-remote-procs.py` (see there for where each column comes
//! from) and vendored in `remote/table.rs`, so no libvirt source is needed
//! to build. Unlike libvirt, the arguments of an unserved procedure are not
//! decoded: the error does not depend on them, except that libvirt would
//! first refuse a payload its XDR decoder rejects, a few hand-written
//! stubs check an argument first (an event ID out of range), and a few
//! public APIs refuse contradictory flags before asking the driver.

mod table;

pub use table::REMOTE_PROCS;

use crate::errors::{code, domain};
use crate::message::RpcError;

/// Which connection a procedure's stub takes in libvirt's daemon
/// (`remoteGet*Conn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// The primary connection (`remoteGetHypervisorConn`).
    Hypervisor,
    /// The interface driver's.
    Interface,
    /// The network driver's: the primary connection in `virtnetworkd`.
    Network,
    /// The node device driver's.
    NodeDev,
    /// The nwfilter driver's.
    NwFilter,
    /// The secret driver's.
    Secret,
    /// The storage driver's.
    Storage,
    /// None: an authentication step.
    Auth,
}

/// One procedure of the remote program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteProc {
    /// Its number.
    pub num: i32,
    /// Its name in `remote_protocol.x`, without `REMOTE_PROC_`.
    pub name: &'static str,
    /// The public API function its stub calls (named in libvirt's errors).
    pub api: &'static str,
    /// The connection its stub takes.
    pub conn: Conn,
    /// The `virErrorDomain` of the API's errors.
    pub domain: i32,
    /// The API refuses a read-only connection before asking the driver.
    pub checks_read_only: bool,
    /// An asynchronous event (server to client), not a call.
    pub event: bool,
}

/// The procedure `num` of the remote program, if libvirt 9.0 has one.
pub fn lookup(num: i32) -> Option<&'static RemoteProc> {
    // The table is sorted by number (the generator sorts it).
    REMOTE_PROCS
        .binary_search_by_key(&num, |p| p.num)
        .ok()
        .map(|i| &REMOTE_PROCS[i])
}

/// libvirt's RPC error for a procedure number its dispatch table has no
/// function for.
pub fn unknown(num: i32) -> RpcError {
    RpcError::rpc(format!("unknown procedure: {num}"))
}

/// What libvirt's stub of `num` says before `CONNECT_OPEN`.
pub fn not_open(num: i32) -> RpcError {
    match lookup(num).map(|p| p.conn) {
        Some(Conn::Hypervisor) => RpcError::internal("hypervisor connection not open"),
        _ => RpcError::internal("connection not open"),
    }
}

/// What `virtnetworkd` answers to a call of `num`, a procedure slipway
/// does not serve; `open` is `Some(read_only)` once `CONNECT_OPEN`
/// succeeded.
pub fn unserved(num: i32, open: Option<bool>) -> RpcError {
    let Some(p) = lookup(num).filter(|p| !p.event) else {
        return unknown(num);
    };
    match (p.conn, open) {
        (Conn::Auth, _) => RpcError::new(
            code::AUTH_FAILED,
            domain::RPC,
            "authentication failed: authentication failed",
        ),
        (Conn::Hypervisor, None) => not_open(num),
        (Conn::Hypervisor | Conn::Network, Some(read_only)) => {
            if read_only && p.checks_read_only {
                RpcError::read_only(p.api, p.domain)
            } else {
                RpcError::unsupported(p.api, p.domain)
            }
        }
        (_, _) => RpcError::internal("connection not open"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(REMOTE_PROCS.windows(2).all(|w| w[0].num < w[1].num));
        // libvirt 9.0's last procedure.
        assert_eq!(REMOTE_PROCS.last().map(|p| p.num), Some(443));
        assert_eq!(REMOTE_PROCS.len(), 443);
        // Every procedure slipway serves is one of libvirt's.
        for p in crate::procs::PROCEDURES {
            let r = lookup(p.num).unwrap_or_else(|| panic!("{}", p.num));
            assert!(!r.event, "{}", r.name);
        }
    }

    #[test]
    fn answers_follow_the_stub_and_the_api() {
        // CONNECT_LIST_ALL_STORAGE_POOLS: no storage connection.
        for open in [None, Some(false), Some(true)] {
            let e = unserved(281, open);
            assert_eq!((e.code, e.domain), (code::INTERNAL_ERROR, domain::RPC));
            assert_eq!(e.message, "internal error: connection not open");
        }
        // CONNECT_GET_SYSINFO on the network driver's connection.
        let e = unserved(203, Some(false));
        assert_eq!((e.code, e.domain), (code::NO_SUPPORT, domain::DOMAIN));
        assert_eq!(
            e.message,
            "this function is not supported by the connection driver: virConnectGetSysinfo"
        );
        assert_eq!(
            unserved(203, None).message,
            "internal error: hypervisor connection not open"
        );
        // DOMAIN_CREATE (9): read-only refused before the driver.
        let e = unserved(9, Some(true));
        assert_eq!((e.code, e.domain), (code::OPERATION_DENIED, domain::DOMAIN));
        assert_eq!(
            e.message,
            "operation forbidden: read only access prevents virDomainCreate"
        );
        assert_eq!(unserved(9, Some(false)).code, code::NO_SUPPORT);
        // DOMAIN_EVENT_LIFECYCLE (107) is a message; 0 and 444 are not
        // procedures.
        for n in [107, 0, 444, -1] {
            let e = unserved(n, Some(false));
            assert_eq!((e.code, e.domain), (code::RPC, domain::RPC));
            assert_eq!(e.message, format!("unknown procedure: {n}"));
        }
        assert_eq!(unserved(67, Some(false)).code, code::AUTH_FAILED);
    }
}
