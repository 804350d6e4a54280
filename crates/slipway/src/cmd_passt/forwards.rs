//! passt's `-t`/`-u` forwards, planned: which host sockets listen and
//! where they lead.
//!
//! Theory of operation: each specification (parsed by
//! `slipway_usermode::config::passt_ports`) names host ports and the guest
//! ports they lead to. As passt does, a specification without an address
//! listens on every family the guest is served (IPv4 unless `-6`, IPv6
//! unless `-4` or the host has none to copy): an IPv4 listener on
//! 0.0.0.0 and, beside it, an IPv6 one on `::` taking IPv6 clients only
//! (`IPV6_V6ONLY`; passt's single dual-stack socket takes the same
//! clients), each leading to the guest over its own family: the copied
//! IPv4 address, and the IPv6 address the guest was last seen using (at
//! first the copied one). A specification with an address (`ADDR/`)
//! listens on that address only, so in its family only, which must be
//! served (passt fails with "Failed to bind any port" otherwise);
//! `ADDR%IFNAME/` binds the listener to that interface too
//! (`SO_BINDTODEVICE`). `all` and exclusion-only lists forward the free
//! non-ephemeral ports, each family probed apart (passt falls back to one
//! socket per family when a port is taken in one). A port forwarded by two
//! specifications is refused, as passt refuses it, whatever their
//! addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context;
use slipway_usermode::config::passt_ports::{self, PortSpec};
use slipway_usermode::config::{ForwardProtocol, HostForward, StackConfig};

use super::{HostView, PasstArgs};

/// The forwards of `args`' `-t`/`-u` for a guest served as `cfg` says
/// (its families), on `host`.
pub(super) fn plan_forwards(
    args: &PasstArgs,
    cfg: &StackConfig,
    host: &dyn HostView,
) -> anyhow::Result<Vec<HostForward>> {
    let served: Vec<IpAddr> = [
        cfg.ipv4.then_some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        cfg.ipv6
            .enabled
            .then_some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let every = passt_ports::non_ephemeral(host.ephemeral_ports());
    let mut forwards: Vec<HostForward> = Vec::new();
    for (protocol, option, specs) in [
        (ForwardProtocol::Tcp, "--tcp-ports", &args.tcp_ports),
        (ForwardProtocol::Udp, "--udp-ports", &args.udp_ports),
    ] {
        for text in specs {
            let spec =
                passt_ports::parse(text).with_context(|| format!("invalid {option} '{text}'"))?;
            let Some(bind) = spec.bind() else { continue };
            let listen: Vec<IpAddr> = match bind.addr {
                None => served.clone(),
                Some(addr) if served.iter().any(|s| s.is_ipv6() == addr.is_ipv6()) => vec![addr],
                Some(addr) => anyhow::bail!(
                    "invalid {option} '{text}': {addr} is an {} address, and the guest is served {} only",
                    if addr.is_ipv6() { "IPv6" } else { "IPv4" },
                    if addr.is_ipv6() {
                        "IPv4 (-4, or the host has no IPv6 to copy)"
                    } else {
                        "IPv6 (-6)"
                    }
                ),
            };
            let probe = matches!(spec, PortSpec::All { .. });
            for (host_port, guest_port) in spec.expand(&every) {
                if forwards
                    .iter()
                    .any(|f| f.protocol == protocol && f.host.port() == host_port)
                {
                    anyhow::bail!("invalid {option} '{text}': port {host_port} is forwarded twice");
                }
                for &ip in &listen {
                    let fwd = HostForward {
                        protocol,
                        host: SocketAddr::new(ip, host_port),
                        guest_addr: None,
                        guest_port,
                        v6_only: ip.is_ipv6(),
                        device: bind.ifname.clone(),
                    };
                    // `all` (and exclusions only) forward the ports that are free.
                    if probe && !host.can_bind(&fwd) {
                        continue;
                    }
                    forwards.push(fwd);
                }
            }
        }
    }
    Ok(forwards)
}
