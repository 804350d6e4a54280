//! The manager's error type. Messages follow libvirt's wording (the part
//! after virsh's `error: ` prefix) so the CLI can print them unchanged.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use slipway_host::atomic::AtomicError;

/// Everything the manager can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No network has this name.
    #[error("Network not found: no network with matching name '{0}'")]
    NoSuchName(String),
    /// No network has this UUID.
    #[error("Network not found: no network with matching uuid '{0}'")]
    NoSuchUuid(String),
    /// A network of this name exists and the definition does not carry its
    /// UUID (another one, or none: libvirt would give it a fresh one).
    #[error("operation failed: network '{name}' already exists with uuid {uuid}")]
    NameTaken {
        /// The existing network.
        name: String,
        /// Its UUID.
        uuid: String,
    },
    /// Another network already has this UUID.
    #[error("operation failed: network '{name}' is already defined with uuid {uuid}")]
    UuidTaken {
        /// The network that has the UUID.
        name: String,
        /// The UUID.
        uuid: String,
    },
    /// Another network already uses this bridge device.
    #[error("bridge name '{bridge}' already in use by network '{network}'")]
    BridgeTaken {
        /// The bridge device.
        bridge: String,
        /// The network using it.
        network: String,
    },
    /// A name that cannot be a definition file name.
    #[error("invalid network name '{name}': {why}")]
    BadName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// The network has no port of this UUID (libvirt's VIR_ERR_NO_NETWORK_PORT).
    #[error("network port not found: Network port with UUID {0} does not exist")]
    NoSuchPort(String),
    /// The network already has a port of this UUID (libvirt's
    /// VIR_ERR_NETWORK_PORT_EXIST, whose message libvirt 9.0 words this
    /// way: its template wraps the detail).
    #[error("network port Network port with UUID {0} already exists exists already")]
    PortExists(String),
    /// An argument the operation cannot take (libvirt's VIR_ERR_INVALID_ARG).
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    /// A state libvirt reports as an internal error (VIR_ERR_INTERNAL_ERROR)
    /// that is not the backend's: a device pool with nothing free, a
    /// reclaimed port that does not fit its network.
    #[error("internal error: {0}")]
    Internal(String),
    /// A configuration the network cannot serve (libvirt's
    /// VIR_ERR_CONFIG_UNSUPPORTED).
    #[error("unsupported configuration: {0}")]
    ConfigUnsupported(String),
    /// The XML did not parse.
    #[error("{0}")]
    Xml(#[from] slipway_netxml::XmlError),
    /// An element given to `net-update` is not the expected one or does not parse.
    #[error("XML error: {0}")]
    XmlFragment(String),
    /// The definition parsed but breaks a rule.
    #[error("{0}")]
    Invalid(#[from] slipway_netxml::ValidationError),
    /// The operation does not fit the network's state (libvirt's
    /// VIR_ERR_OPERATION_INVALID).
    #[error("Requested operation is not valid: {0}")]
    NotValid(String),
    /// The operation is not supported for this section or mode.
    #[error("Operation not supported: {0}")]
    Unsupported(String),
    /// A definition or state file exists but cannot be read or parsed.
    #[error("corrupted file {path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] AtomicError),
    /// The realization backend failed (libvirt reports these as internal
    /// errors: "internal error: Network is already in use by interface X"),
    /// with the backend's own error, of its own type (downcast it to see
    /// what failed).
    #[error("internal error: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// The sockets systemd passed (socket activation) are not what the
    /// daemon serves on.
    #[error("socket activation: {0}")]
    Activation(String),
    /// The manager's lock stayed taken for the whole wait.
    #[error(
        "timed out after {} s waiting for the lock {path}, held by {holders}",
        waited.as_secs_f64()
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long the command waited.
        waited: std::time::Duration,
        /// Who holds it (`pid N (comm)`, from /proc/locks).
        holders: String,
    },
    /// A directory or file that should be this user's alone is not (another
    /// owner, a symlink, not a regular file).
    #[error("refusing to use {path}: {why}")]
    UnsafePath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The caller may not change networks (daemon peer-credential check).
    #[error("access denied: {0}")]
    Denied(String),
    /// The daemon answered something this client does not understand, or the
    /// connection broke.
    #[error("daemon protocol error: {0}")]
    Protocol(String),
    /// An error reported by the daemon, carried over the socket.
    #[error("{message}")]
    Remote {
        /// The error's code (see [`Error::code`]).
        code: ErrorCode,
        /// The daemon's message.
        message: String,
    },
}

/// A stable, machine-readable classification of [`Error`], sent over the
/// daemon API so clients can react (e.g. print virsh's "failed to get network").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The network lookup failed.
    NotFound,
    /// The network has no such port.
    PortNotFound,
    /// Name, UUID or bridge already in use.
    Conflict,
    /// Bad XML, bad name or a broken rule.
    Invalid,
    /// Wrong state for the operation, or unsupported.
    NotValid,
    /// Unreadable files, I/O failures, backend failures.
    Internal,
    /// Permission denied.
    Denied,
}

impl Error {
    /// The error's classification.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NoSuchName(_) | Error::NoSuchUuid(_) => ErrorCode::NotFound,
            Error::NoSuchPort(_) => ErrorCode::PortNotFound,
            Error::NameTaken { .. }
            | Error::UuidTaken { .. }
            | Error::BridgeTaken { .. }
            | Error::PortExists(_) => ErrorCode::Conflict,
            Error::BadName { .. }
            | Error::Xml(_)
            | Error::XmlFragment(_)
            | Error::Invalid(_)
            | Error::InvalidArg(_)
            | Error::ConfigUnsupported(_) => ErrorCode::Invalid,
            Error::NotValid(_) | Error::Unsupported(_) => ErrorCode::NotValid,
            Error::Corrupt { .. }
            | Error::Io(_)
            | Error::Backend(_)
            | Error::Internal(_)
            | Error::Activation(_)
            | Error::Protocol(_)
            | Error::LockTimeout { .. } => ErrorCode::Internal,
            Error::Denied(_) | Error::UnsafePath { .. } => ErrorCode::Denied,
            Error::Remote { code, .. } => *code,
        }
    }

    /// Shorthand for an [`Error::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io(AtomicError::new(action, path, source))
    }
}

/// The manager's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
