//! pasta's `-T`/`--tcp-ns` and `-U`/`--udp-ns`: which ports of the
//! namespace's loopback are forwarded to the host's loopback, read into
//! the stack's [`NsForwardSpec`], and the namespace helper that binds
//! them there ([`slipway_netns::LoopbackBinder`]).
//!
//! Theory of operation: each option value is `none`, `auto` (pasta's
//! default when the option is not given: follow the host's listening
//! ports) or passt's port specification (ports, ranges, `a:b` remapping,
//! `~` exclusions; a list of exclusions only means every non-ephemeral
//! port but those), without an address (pasta refuses `ADDR/` for
//! `-T`/`-U`) and without `all` (passt's only). `none` and `auto` stand
//! alone; specifications may be given several times, no port twice. The
//! sockets are bound on `127.0.0.1` unless `-6`, and on `::1` when the
//! host has IPv6 (unless `-4`), as pasta binds them. The same helper
//! makes the sockets through which a `-t` connection from the host's
//! loopback is spliced into the namespace's loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use anyhow::Context;
use slipway_netns::{LoopbackBinder, LoopbackSocket, Target};
use slipway_usermode::config::passt_ports::{self, PortSpec};
use slipway_usermode::config::ForwardProtocol;
use slipway_usermode::ns_forward::{LoopbackSockets, NsForwardSpec};

use super::PastaArgs;

/// What `-T`/`-U` ask for, before a namespace is known.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NsPorts {
    tcp: Vec<(u16, u16)>,
    udp: Vec<(u16, u16)>,
    auto: Vec<ForwardProtocol>,
}

impl NsPorts {
    /// Whether anything is forwarded.
    fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty() && self.auto.is_empty()
    }
}

/// Reads `-T`/`-U` of `args`; "every port" is `every` (the non-ephemeral
/// ports).
pub(super) fn ns_ports(
    args: &PastaArgs,
    every: &[std::ops::RangeInclusive<u16>],
) -> anyhow::Result<NsPorts> {
    let mut out = NsPorts {
        tcp: Vec::new(),
        udp: Vec::new(),
        auto: Vec::new(),
    };
    for (protocol, option, specs) in [
        (ForwardProtocol::Tcp, "--tcp-ns", &args.tcp_ns),
        (ForwardProtocol::Udp, "--udp-ns", &args.udp_ns),
    ] {
        let keyword = specs.iter().find(|s| *s == "none" || *s == "auto");
        if let Some(keyword) = keyword.filter(|_| specs.len() > 1) {
            anyhow::bail!("{option} {keyword} stands alone: give it without other specifications");
        }
        if specs.is_empty() || keyword.is_some_and(|k| k == "auto") {
            out.auto.push(protocol);
            continue;
        }
        let pairs = match protocol {
            ForwardProtocol::Tcp => &mut out.tcp,
            ForwardProtocol::Udp => &mut out.udp,
        };
        for text in specs {
            if text == "all" {
                anyhow::bail!("{option} all: 'all' port forwarding is only allowed for passt");
            }
            let spec =
                passt_ports::parse(text).with_context(|| format!("invalid {option} '{text}'"))?;
            if spec
                .bind()
                .is_some_and(|b| b.addr.is_some() || b.ifname.is_some())
            {
                anyhow::bail!(
                    "invalid {option} '{text}': the namespace side binds its loopback, it takes no address"
                );
            }
            if spec == PortSpec::None {
                continue;
            }
            for (ns_port, host_port) in spec.expand(every) {
                if pairs.iter().any(|&(p, _)| p == ns_port) {
                    anyhow::bail!("invalid {option} '{text}': port {ns_port} is forwarded twice");
                }
                pairs.push((ns_port, host_port));
            }
        }
    }
    Ok(out)
}

/// The namespace's sockets, from the helper in it.
struct Binder(LoopbackBinder);

impl LoopbackSockets for Binder {
    fn bind(
        &self,
        protocol: ForwardProtocol,
        loopback: IpAddr,
        port: u16,
    ) -> std::io::Result<std::os::fd::OwnedFd> {
        let kind = match protocol {
            ForwardProtocol::Tcp => LoopbackSocket::TcpListener,
            ForwardProtocol::Udp => LoopbackSocket::Udp,
        };
        self.0.bind(kind, loopback, port)
    }

    fn connect(&self, loopback: IpAddr, port: u16) -> std::io::Result<std::os::fd::OwnedFd> {
        self.0.bind(LoopbackSocket::TcpConnect, loopback, port)
    }
}

/// The stack's part of `ports` for `target`: `None` when nothing is
/// forwarded and no `-t` connection is to be spliced (`inbound`: some
/// TCP port is forwarded from the host); else the helper is started in
/// the namespace (before the sandbox). `ipv4`/`ipv6`: which loopbacks to
/// bind.
pub(super) fn spec(
    ports: NsPorts,
    target: &Target,
    (ipv4, ipv6): (bool, bool),
    inbound: bool,
) -> anyhow::Result<Option<NsForwardSpec>> {
    let mut loopbacks = Vec::new();
    if ipv4 {
        loopbacks.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if ipv6 {
        loopbacks.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    if (ports.is_empty() && !inbound) || loopbacks.is_empty() {
        return Ok(None);
    }
    let binder = LoopbackBinder::open(target)
        .with_context(|| format!("starting the loopback helper in {target}"))?;
    tracing::debug!(
        pid = binder.pid(),
        "loopback helper in {target} (confined: seccomp, Landlock, CAP_NET_BIND_SERVICE alone)"
    );
    Ok(Some(NsForwardSpec {
        tcp: ports.tcp,
        udp: ports.udp,
        auto: ports.auto,
        loopbacks,
        splice_inbound: inbound,
        sockets: Arc::new(Binder(binder)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: PastaArgs,
    }

    fn ports(line: &[&str]) -> anyhow::Result<NsPorts> {
        let args = Cmd::try_parse_from(std::iter::once("pasta").chain(line.iter().copied()))
            .unwrap()
            .args;
        ns_ports(&args, &passt_ports::non_ephemeral(32768..=60999))
    }

    #[test]
    fn auto_is_the_default_and_specs_are_passts() {
        let p = ports(&["1"]).unwrap();
        assert_eq!(p.auto, [ForwardProtocol::Tcp, ForwardProtocol::Udp]);
        let p = ports(&["-T", "none", "-U", "auto", "1"]).unwrap();
        assert_eq!(p.auto, [ForwardProtocol::Udp]);
        assert!(p.tcp.is_empty());
        let p = ports(&[
            "-T",
            "5432,6000-6001:7000-7001",
            "-T",
            "9000",
            "-U",
            "53:5353",
            "1",
        ])
        .unwrap();
        assert_eq!(
            p.tcp,
            [(5432, 5432), (6000, 7000), (6001, 7001), (9000, 9000)]
        );
        assert_eq!(p.udp, [(53, 5353)]);
        assert!(p.auto.is_empty());
        let p = ports(&["-T", "~22", "-U", "none", "1"]).unwrap();
        assert_eq!(
            p.tcp.len(),
            65535 - (60999 - 32768 + 1) - 1,
            "every non-ephemeral port but 22"
        );
        assert!(!p.tcp.contains(&(22, 22)));
    }

    #[test]
    fn what_pasta_refuses_is_refused_by_name() {
        for (line, want) in [
            (
                &["-T", "all", "1"][..],
                "--tcp-ns all: 'all' port forwarding is only allowed for passt",
            ),
            (
                &["-T", "auto", "-T", "80", "1"],
                "--tcp-ns auto stands alone",
            ),
            (
                &["-U", "none", "-U", "53", "1"],
                "--udp-ns none stands alone",
            ),
            (&["-T", "127.0.0.1/80", "1"], "takes no address"),
            (
                &["-T", "80", "-T", "70-90", "1"],
                "port 80 is forwarded twice",
            ),
            (&["-U", "0", "1"], "invalid --udp-ns '0'"),
            (&["-T", "80-70", "1"], "last port is below the first"),
        ] {
            let err = ports(line).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{line:?}: {err:#}");
        }
    }
}
