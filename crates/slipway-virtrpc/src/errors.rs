//! libvirt's error numbers and domains (`include/libvirt/virterror.h`) and
//! the errors this server sends, worded as libvirt's daemon words them so
//! that clients print the same messages.

use slipway_netmgr::{Error, ErrorCode};

use crate::message::RpcError;

/// `virErrorNumber` values used here.
pub mod code {
    /// `VIR_ERR_INTERNAL_ERROR`.
    pub const INTERNAL_ERROR: i32 = 1;
    /// `VIR_ERR_NO_SUPPORT`.
    pub const NO_SUPPORT: i32 = 3;
    /// `VIR_ERR_NO_CONNECT`.
    pub const NO_CONNECT: i32 = 5;
    /// `VIR_ERR_INVALID_ARG`.
    pub const INVALID_ARG: i32 = 8;
    /// `VIR_ERR_OPERATION_FAILED`.
    pub const OPERATION_FAILED: i32 = 9;
    /// `VIR_ERR_XML_ERROR`.
    pub const XML_ERROR: i32 = 27;
    /// `VIR_ERR_OPERATION_DENIED`.
    pub const OPERATION_DENIED: i32 = 29;
    /// `VIR_ERR_RPC`.
    pub const RPC: i32 = 39;
    /// `VIR_ERR_AUTH_FAILED`.
    pub const AUTH_FAILED: i32 = 45;
    /// `VIR_ERR_NO_NETWORK`.
    pub const NO_NETWORK: i32 = 43;
    /// `VIR_ERR_INVALID_MAC`.
    pub const INVALID_MAC: i32 = 44;
    /// `VIR_ERR_OPERATION_INVALID`.
    pub const OPERATION_INVALID: i32 = 55;
    /// `VIR_ERR_NO_NETWORK_PORT`: no network port with that UUID.
    pub const NO_NETWORK_PORT: i32 = 107;
    /// `VIR_ERR_CONFIG_UNSUPPORTED`.
    pub const CONFIG_UNSUPPORTED: i32 = 67;
    /// `VIR_ERR_NETWORK_PORT_EXIST`: a port with that UUID exists.
    pub const NETWORK_PORT_EXIST: i32 = 106;
    /// `VIR_ERR_OPERATION_UNSUPPORTED`.
    pub const OPERATION_UNSUPPORTED: i32 = 84;
    /// `VIR_ERR_ACCESS_DENIED`.
    pub const ACCESS_DENIED: i32 = 88;
}

/// `virErrorDomain` values used here.
pub mod domain {
    /// `VIR_FROM_NONE`.
    pub const NONE: i32 = 0;
    /// `VIR_FROM_RPC`.
    pub const RPC: i32 = 7;
    /// `VIR_FROM_NETWORK`.
    pub const NETWORK: i32 = 19;
    /// `VIR_FROM_DOMAIN` (also the domain of `libvirt-host.c`'s APIs).
    pub const DOMAIN: i32 = 20;
}

impl RpcError {
    /// An error with `code` and `domain`; `message` is the whole text.
    pub fn new(code: i32, domain: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            domain,
            message: message.into(),
        }
    }

    /// `VIR_ERR_RPC` from the RPC layer (bad messages); its text is the detail.
    pub fn rpc(message: impl Into<String>) -> RpcError {
        RpcError::new(code::RPC, domain::RPC, message)
    }

    /// `internal error: ...` from the daemon's dispatcher.
    pub fn internal(detail: &str) -> RpcError {
        RpcError::new(
            code::INTERNAL_ERROR,
            domain::RPC,
            format!("internal error: {detail}"),
        )
    }

    /// What libvirt says when a read-only connection calls `api`, an API
    /// whose errors are in `domain` (`virCheckReadOnlyGoto`).
    pub fn read_only(api: &str, domain: i32) -> RpcError {
        RpcError::new(
            code::OPERATION_DENIED,
            domain,
            format!("operation forbidden: read only access prevents {api}"),
        )
    }

    /// What libvirt says when the driver lacks `api`, an API whose errors
    /// are in `domain` (`virReportUnsupportedError`).
    pub fn unsupported(api: &str, domain: i32) -> RpcError {
        RpcError::new(
            code::NO_SUPPORT,
            domain,
            format!("this function is not supported by the connection driver: {api}"),
        )
    }

    /// `virCheckFlags`'s refusal of flags `api` does not know.
    pub fn bad_flags(flags: u32, api: &str) -> RpcError {
        RpcError::new(
            code::INVALID_ARG,
            domain::NETWORK,
            format!("invalid argument: unsupported flags (0x{flags:x}) in function {api}"),
        )
    }
}

impl From<&Error> for RpcError {
    /// A manager error as libvirt's network driver reports it: the message
    /// is already libvirt's wording; the number follows the error's class.
    fn from(e: &Error) -> RpcError {
        let code = match (e, e.code()) {
            (Error::PortExists(_), _) => code::NETWORK_PORT_EXIST,
            (Error::InvalidArg(_), _) => code::INVALID_ARG,
            (Error::ConfigUnsupported(_), _) => code::CONFIG_UNSUPPORTED,
            (_, c) => match c {
                ErrorCode::NotFound => code::NO_NETWORK,
                ErrorCode::PortNotFound => code::NO_NETWORK_PORT,
                ErrorCode::Conflict => code::OPERATION_FAILED,
                ErrorCode::Invalid => code::XML_ERROR,
                ErrorCode::NotValid if matches!(e, Error::Unsupported(_)) => {
                    code::OPERATION_UNSUPPORTED
                }
                ErrorCode::NotValid => code::OPERATION_INVALID,
                ErrorCode::Internal => code::INTERNAL_ERROR,
                ErrorCode::Denied => code::ACCESS_DENIED,
            },
        };
        RpcError::new(code, domain::NETWORK, e.to_string())
    }
}
