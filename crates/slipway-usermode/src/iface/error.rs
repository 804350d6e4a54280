//! The error of setting a stack up (the data path itself does not fail:
//! what it cannot handle it drops and counts).

/// Why a stack could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The DHCP server refused the configuration derived from the options.
    #[error("DHCP configuration")]
    Dhcp(#[from] slipway_dhcp::DhcpConfigError),
    /// `smb=` cannot be served (no smbd, a bad directory).
    #[error(transparent)]
    Smb(Box<dyn std::error::Error + Send + Sync>),
    /// The user guest forward commands and smbd run as (`--runas`).
    #[error("guest forwards and SMB: {0}")]
    HelperUser(#[source] slipway_sandbox::SandboxError),
    /// The DHCPv6 server refused the configuration derived from the options.
    #[error("DHCPv6 configuration")]
    Dhcpv6(#[from] slipway_dhcp::v6::Dhcpv6ConfigError),
    /// A TCP host forward could not listen (the error names the address).
    #[error(transparent)]
    TcpForward(std::io::Error),
    /// A host socket (forward listener, DNS relay socket) could not be opened.
    #[error("{what} {addr}")]
    Socket {
        /// What the socket is for.
        what: &'static str,
        /// The address it was to use.
        addr: String,
        /// The host's error.
        source: std::io::Error,
    },
}
