//! The IPv6 side of slipway as passt and pasta.
//!
//! Theory of operation: as passt does by default, the guest gets the
//! host's global IPv6 address on the template interface (`--interface`,
//! or the one with the first IPv6 default route) with that address's
//! prefix (the connected route's length; 64 without one), and its
//! default gateway is the host's (`--gateway`), usually the upstream
//! router's link-local address. The stack then takes the gateway's
//! address as its own: it answers neighbour solicitations for it, sends
//! its router advertisements from it (when link-local) and maps it to the
//! host's `::1` unless `--no-map-gw`; the prefix's other addresses are
//! hosts beyond the host, reached through host sockets
//! ([`CopiedNetwork::guest6`](slipway_usermode::config::CopiedNetwork)).
//! The IPv6 resolvers advertised (RDNSS, DHCPv6) are the host's IPv6
//! ones, a loopback one replaced by the mapped gateway. Without an IPv6
//! address or default route, IPv6 is off, as with passt; `-6` then fails.
//! With `--no-map-gw` the gateway is the real router: a link-local one is
//! reached on the template interface (its index is kept), as passt
//! binds its socket there.

use std::net::{IpAddr, Ipv6Addr};

use slipway_host::routes6::{self, Route6};
use slipway_usermode::config::{prefix6_mask, Ipv6Config, ROUTER_LINK_LOCAL};

use super::{advertised, one_of, HostView, PasstArgs};

/// passt's IPv6 side, planned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct V6Plan {
    /// The stack's IPv6 configuration.
    pub config: Ipv6Config,
    /// The guest's address (the host's).
    pub guest: Ipv6Addr,
    /// The IPv6 resolvers advertised.
    pub dns: Vec<Ipv6Addr>,
    /// The index of the interface copied from (where a link-local
    /// gateway is, under `--no-map-gw`).
    pub link: Option<u32>,
}

/// Whether the host could hand `a` to a guest as its global address.
fn is_global(a: Ipv6Addr) -> bool {
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local())
        && a.to_ipv4_mapped().is_none()
}

/// The IPv6 side passt's options describe on `host` (`None`: IPv6 off,
/// by `-4` or for want of an address or default route). `map_gw` is
/// whether the gateway maps to the host's loopback; `resolvers` are the
/// host's (or `--dns`).
pub(crate) fn plan_v6(
    args: &PasstArgs,
    host: &dyn HostView,
    map_gw: bool,
    resolvers: &[IpAddr],
) -> anyhow::Result<Option<V6Plan>> {
    if args.ipv4_only {
        return Ok(None);
    }
    // Without -6, a host without IPv6 just gets an IPv4-only guest.
    let missing = |what: String| -> anyhow::Result<Option<V6Plan>> {
        if args.ipv6_only {
            anyhow::bail!("--ipv6-only: {what}")
        }
        tracing::info!("IPv6 off: {what}");
        Ok(None)
    };
    let routes = host.routes6()?;
    let default = routes6::default_v6(&routes, args.interface.as_deref());
    let ifname = args
        .interface
        .clone()
        .or_else(|| default.map(|r| r.ifname.clone()));
    let connected = |addr: Ipv6Addr| -> Option<&Route6> {
        routes.iter().find(|r| {
            r.gateway.is_none()
                && !r.is_default()
                && ifname.as_deref().is_none_or(|n| r.ifname == n)
                && r.contains(addr)
        })
    };
    let address = match one_of::<Ipv6Addr>(&args.address, "--address")? {
        Some(a) => a,
        None => {
            let Some(name) = &ifname else {
                return missing(
                    "no IPv6 default route to copy the guest's address from: give --address and --gateway (or --interface)".into(),
                );
            };
            let addrs: Vec<Ipv6Addr> = host
                .addresses6(name)?
                .into_iter()
                .filter(|a| is_global(*a))
                .collect();
            match addrs
                .iter()
                .find(|a| connected(**a).is_some())
                .or(addrs.first())
            {
                Some(a) => *a,
                None => {
                    return missing(format!(
                        "interface {name} has no global IPv6 address to copy: give --address"
                    ))
                }
            }
        }
    };
    if !is_global(address) {
        anyhow::bail!("--address {address}: not an address a guest can have (link-local, multicast, loopback or IPv4-mapped)");
    }
    let gateway = match one_of::<Ipv6Addr>(&args.gateway, "--gateway")? {
        Some(g) => g,
        None => match default.and_then(|r| r.gateway) {
            Some(g) => g,
            None => {
                return missing(
                    "no IPv6 default route to copy the guest's gateway from: give --gateway".into(),
                )
            }
        },
    };
    let prefix_len = connected(address).map_or(64, |r| r.prefix_len);
    let prefix = Ipv6Addr::from(u128::from(address) & prefix6_mask(prefix_len));
    let on_link = gateway.is_unicast_link_local()
        || (u128::from(gateway) & prefix6_mask(prefix_len) == u128::from(prefix)
            && gateway != prefix);
    if gateway == address || !on_link || gateway.is_multicast() {
        anyhow::bail!(
            "the guest's address {address}/{prefix_len} and gateway {gateway} do not make a network: \
             the IPv6 gateway must be link-local or another address of the guest's prefix"
        );
    }
    match args.map_host_loopback {
        Some(IpAddr::V6(a)) if a != gateway => anyhow::bail!(
            "--map-host-loopback {a}: slipway maps the gateway address only (README: slipway as passt)"
        ),
        _ => {}
    }
    let dns_forward = one_of::<Ipv6Addr>(&args.dns_forward, "--dns-forward")?;
    let dns = if args.no_dhcp_dns {
        Vec::new()
    } else if let Some(fwd) = dns_forward {
        vec![fwd]
    } else {
        advertised(resolvers, gateway, map_gw)
    };
    let config = Ipv6Config {
        enabled: true,
        prefix,
        prefix_len,
        host: gateway,
        // Port 53 on the gateway reaches the host's loopback like any
        // other port, unless --dns-forward names another address.
        dns: dns_forward.unwrap_or(gateway),
        router: if gateway.is_unicast_link_local() {
            gateway
        } else {
            ROUTER_LINK_LOCAL
        },
    };
    Ok(Some(V6Plan {
        config,
        guest: address,
        dns,
        link: ifname.as_deref().and_then(|n| host.index(n)),
    }))
}
