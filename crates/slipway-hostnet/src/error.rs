//! The backend's error type.

use std::path::PathBuf;

/// Everything bringing a network up or down can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network's subnet is already routed through another interface.
    #[error("Network is already in use by interface {interface}")]
    SubnetInUse {
        /// The interface that has a route into the subnet.
        interface: String,
    },
    /// A device of the bridge's name already exists.
    #[error("bridge device {0} already exists on the host")]
    BridgeExists(String),
    /// A netlink request failed.
    #[error("netlink: cannot {what}: {source}")]
    Netlink {
        /// The request.
        what: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A sysctl could not be read or written.
    #[error("cannot set sysctl {key}: {source}")]
    Sysctl {
        /// The key, dotted.
        key: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` could not be run or refused the rules.
    #[error("nftables: {0}")]
    Nft(String),
    /// A plan action the backend cannot carry out as given.
    #[error("invalid plan: {0}")]
    Plan(String),
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A state file exists but does not parse.
    #[error("corrupted file {path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The DHCP/DNS service failed to start or to stop.
    #[error("DHCP/DNS service: {0}")]
    Service(String),
    /// The DHCP/DNS service could not confine itself (it does not serve
    /// unconfined).
    #[error("DHCP/DNS service: sandbox: {0}")]
    Sandbox(#[from] slipway_sandbox::SandboxError),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for slipway_netmgr::Error {
    fn from(e: Error) -> Self {
        slipway_netmgr::Error::Backend(e.to_string())
    }
}

/// The backend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<slipway_host::atomic::AtomicError> for Error {
    fn from(e: slipway_host::atomic::AtomicError) -> Self {
        Error::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}
