//! The backend's error type.

use std::path::PathBuf;

use slipway_host::atomic::AtomicError;

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
    /// `tc` could not be run or refused a command.
    #[error("traffic control: {command}: {message}")]
    Tc {
        /// The command, as tc's arguments.
        command: String,
        /// tc's message.
        message: String,
    },
    /// Shaping needs a kernel module this kernel does not have.
    #[error("{what} needs {feature} of the kernel's traffic control (module {module}), which this kernel does not have: load it (modprobe {module}) or remove that limit from <bandwidth>")]
    KernelFeature {
        /// What was being set up, and on which device.
        what: String,
        /// The missing qdisc, classifier or action.
        feature: &'static str,
        /// Its kernel module.
        module: &'static str,
    },
    /// `nft` could not be run or refused the rules.
    #[error("nftables: {0}")]
    Nft(String),
    /// A plan action the backend cannot carry out as given.
    #[error("invalid plan: {0}")]
    Plan(String),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] AtomicError),
    /// An Open vSwitch port could not be plugged or removed.
    #[error(transparent)]
    Ovs(#[from] crate::ovs::OvsError),
    /// An OVN logical switch or port could not be made or removed.
    #[error(transparent)]
    Ovn(#[from] crate::ovn::OvnError),
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
    /// The DHCPv4 server's configuration is refused.
    #[error("invalid plan: DHCP configuration: {0}")]
    DhcpConfig(#[from] slipway_dhcp::DhcpConfigError),
    /// The DHCPv6 server's configuration is refused.
    #[error("invalid plan: DHCPv6 configuration: {0}")]
    Dhcpv6Config(#[from] slipway_dhcp::v6::Dhcpv6ConfigError),
    /// The network's DNS domain is not a domain name.
    #[error("invalid plan: DNS domain: {0}")]
    DnsDomain(#[source] slipway_dns::ZoneError),
    /// A `<dns><host>` record is refused.
    #[error("invalid plan: DNS host {ip}: {source}")]
    DnsHost {
        /// The host's address.
        ip: std::net::IpAddr,
        /// What is wrong with it.
        #[source]
        source: slipway_dns::ZoneError,
    },
    /// A socket of the service could not be bound.
    #[error("DHCP/DNS service: cannot bind {ty:?} {addr}: {source}")]
    Bind {
        /// Its type (datagram or stream).
        ty: socket2::Type,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call of the service failed (a socket option, a multicast
    /// group, the poller).
    #[error("DHCP/DNS service: {what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The DHCP/DNS service's program could not be run.
    #[error("DHCP/DNS service: cannot run {}: {source}", program.to_string_lossy())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
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
        Error::Io(AtomicError::new(action, path, source))
    }

    /// [`Error::Corrupt`]: the JSON of state file `path` does not decode
    /// (or a value does not encode).
    pub(crate) fn corrupt(path: impl Into<PathBuf>, e: serde_json::Error) -> Self {
        Error::Corrupt {
            path: path.into(),
            why: e.to_string(),
        }
    }
}

impl From<Error> for slipway_netmgr::Error {
    fn from(e: Error) -> Self {
        slipway_netmgr::Error::Backend(Box::new(e))
    }
}

/// The backend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The manager gets the backend's error itself, not its text: what
    /// failed (here the DHCP configuration, with the DHCP crate's own
    /// error as the source) stays visible.
    #[test]
    fn the_manager_sees_the_backends_typed_error() {
        // A range holding the bridge's own address.
        let svc = serde_json::from_str(
            r#"{"interface":"br0","listen":["10.0.0.1"],
                "ranges":[{"start":"10.0.0.1","end":"10.0.0.9","prefix":24,"lease_secs":60}],
                "hosts":[],"router":null,"mtu":null,"dns":true,"domain":null,"forwarders":[],
                "upstream":true,"dns_hosts":[],"tftp_root":null,"bootp":null}"#,
        )
        .unwrap();
        let e = crate::service::dhcp_config(&svc).unwrap_err();
        let text = e.to_string();
        let slipway_netmgr::Error::Backend(inner) = slipway_netmgr::Error::from(e) else {
            panic!("not a backend error");
        };
        assert_eq!(
            format!("internal error: {text}"),
            format!("internal error: {inner}")
        );
        let ours = inner
            .downcast_ref::<Error>()
            .expect("the backend's own error");
        assert!(matches!(ours, Error::DhcpConfig(_)), "{ours:?}");
        let source = std::error::Error::source(ours).expect("a source");
        assert!(source.is::<slipway_dhcp::DhcpConfigError>(), "{source:?}");
    }
}
