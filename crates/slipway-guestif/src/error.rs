//! The crate's error type.

use std::path::PathBuf;

use slipway_netxml::MacAddr;

/// Everything turning interfaces into a running VM's networking can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface definitions do not parse or break a rule.
    #[error(transparent)]
    Xml(#[from] slipway_netxml::interface::InterfacesError),
    /// One interface cannot be set up: which one (index, MAC) and why.
    #[error("interface {index} (mac {mac}): {message}")]
    Interface {
        /// Position in the document.
        index: usize,
        /// Its MAC (the generated one when the definition had none).
        mac: MacAddr,
        /// What went wrong.
        message: String,
    },
    /// A host-side operation (tap, bridge, link) failed.
    #[error("interface {index} (mac {mac}): {cause}")]
    Host {
        /// Position in the document.
        index: usize,
        /// Its MAC.
        mac: MacAddr,
        /// The failure (in the message, not chained: it is the message).
        cause: slipway_hostnet::Error,
    },
    /// A host operation not tied to one interface failed (state files).
    #[error(transparent)]
    Hostnet(#[from] slipway_hostnet::Error),
    /// A state file could not be read or written.
    #[error("{action} {path}: {cause}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not chained).
        cause: std::io::Error,
    },
    /// A process (QEMU, a stack, a script) could not be run or failed.
    #[error("{0}")]
    Process(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        cause: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            cause,
        }
    }
}

impl From<slipway_host::atomic::AtomicError> for Error {
    fn from(e: slipway_host::atomic::AtomicError) -> Self {
        Error::io(e.action, e.path, e.source)
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
