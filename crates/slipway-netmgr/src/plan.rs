//! What starting a network means, as data: the [`Plan`] computed from a
//! validated definition. Backends execute it; `net-start --dry-run` prints it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use slipway_host::keywords;
use slipway_netxml::{ForwardMode, IfName, IpDef, LeaseUnit, Network};

use crate::dnsmasq::{self, DnsmasqOption};
use crate::error::{Error, Result};

/// The nftables table slipway's rules live in (one per family, `ip` and
/// `ip6`), laid out like libvirt's `libvirt_network`.
pub const NFT_TABLE: &str = "slipway_network";

/// Default dnsmasq lease time libvirt relies on: one hour.
const DEFAULT_LEASE_SECS: u64 = 3600;

/// Everything starting one network does, in order. Stopping undoes it in
/// reverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The network's name.
    pub network: String,
    /// The steps, in execution order.
    pub actions: Vec<Action>,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Create the bridge device.
    CreateBridge {
        /// Device name.
        name: IfName,
        /// Its MAC address.
        mac: Option<String>,
        /// Its MTU.
        mtu: Option<u32>,
        /// Spanning tree on/off.
        stp: bool,
        /// Forward delay in seconds.
        delay: u32,
    },
    /// Write a sysctl.
    Sysctl {
        /// The key, dotted (`net.ipv4.ip_forward`).
        key: String,
        /// The value.
        value: String,
    },
    /// One firewall step, as data: the backend renders it in its own
    /// language (nftables JSON for the Linux backend).
    Firewall {
        /// What to add.
        step: FirewallStep,
    },
    /// Add an address to the bridge.
    AddAddress {
        /// Device.
        dev: IfName,
        /// Address with prefix length.
        address: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// Bring the bridge up.
    LinkUp {
        /// Device.
        dev: IfName,
    },
    /// Add a static route through the bridge.
    AddRoute {
        /// Destination network.
        dest: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// Gateway.
        gateway: IpAddr,
        /// Metric.
        metric: Option<u32>,
        /// Device.
        dev: IfName,
    },
    /// Run the DHCP/DNS service for the network.
    DhcpDns(Box<ServiceConfig>),
    /// Make sure the network's OVN logical switch exists (`<slipway:ovn>`
    /// in its `<metadata>`); removed at stop once no ports are left on it.
    OvnSwitch {
        /// The logical switch's name.
        switch: String,
        /// The northbound database's remotes (`unix:PATH`, `tcp:IP:PORT`).
        nb: Vec<String>,
        /// Its `other_config:subnet`, if any.
        subnet: Option<String>,
    },
    /// Shape the bridge's traffic (`<bandwidth>`, libvirt's
    /// `virNetDevBandwidthSet(bridge, bandwidth, hierarchical, swapped)`):
    /// inbound as HTB classes 1:1 and 1:2 on its transmit side, outbound
    /// policed on its receive side.
    Bandwidth {
        /// Device.
        dev: IfName,
        /// The limits.
        shape: crate::shaping::Shape,
    },
}

/// The DHCP and DNS service of one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Bridge the service binds to (and only to).
    pub interface: IfName,
    /// Addresses it listens on (the network's own addresses).
    pub listen: Vec<IpAddr>,
    /// DHCP pools.
    pub ranges: Vec<DhcpPool>,
    /// Static leases.
    pub hosts: Vec<StaticLease>,
    /// Router option (none on isolated networks).
    pub router: Option<IpAddr>,
    /// MTU option.
    pub mtu: Option<u32>,
    /// DNS enabled.
    pub dns: bool,
    /// Local DNS domain.
    pub domain: Option<String>,
    /// Upstream servers (empty: the host's resolvers; isolated: none).
    pub forwarders: Vec<IpAddr>,
    /// Forward unanswered queries upstream at all.
    pub upstream: bool,
    /// `<dns><host>` records: address and names.
    pub dns_hosts: Vec<(IpAddr, Vec<String>)>,
    /// TFTP root.
    pub tftp_root: Option<String>,
    /// BOOTP file and server.
    pub bootp: Option<(String, Option<IpAddr>)>,
    /// Router advertisements on the bridge, one prefix per IPv6 `<ip>`
    /// (libvirt's dnsmasq sends them for every IPv6 address).
    #[serde(default)]
    pub ipv6_prefixes: Vec<RaPrefix>,
    /// The advertisements make the bridge the guests' default router (the
    /// network forwards); otherwise their router lifetime is 0.
    #[serde(default)]
    pub ipv6_router: bool,
}

/// One IPv6 prefix advertised on the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaPrefix {
    /// The bridge's address in it (also the advertised DNS server).
    pub address: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Addresses in it come from a DHCPv6 range (managed) rather than SLAAC.
    pub managed: bool,
}

/// A DHCP range with its lease time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpPool {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// Lease seconds; 0 = infinite.
    pub lease_secs: u64,
}

/// A static DHCP lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticLease {
    /// Client MAC (IPv4) or none.
    pub mac: Option<String>,
    /// Client id / DUID.
    pub id: Option<String>,
    /// Address.
    pub ip: Option<IpAddr>,
    /// Host name.
    pub name: Option<String>,
    /// Lease seconds, when set.
    pub lease_secs: Option<u64>,
}

keywords! {
    /// An nftables family slipway keeps a table in (nft's names).
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum NftFamily {
        /// IPv4.
        Ip = "ip",
        /// IPv6.
        Ip6 = "ip6",
    }
}

keywords! {
    /// A chain of slipway's table (libvirt's layout), by its name.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum NftChain {
        /// The filter chain on the forward hook, shared by all networks: only
        /// jumps to the three guest chains.
        Forward = "forward",
        /// Traffic leaving the guests.
        GuestOutput = "guest_output",
        /// Traffic to the guests.
        GuestInput = "guest_input",
        /// Guest to guest on one bridge.
        GuestCross = "guest_cross",
        /// The NAT chain on the postrouting hook.
        GuestNat = "guest_nat",
    }
}

/// A firewall step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum FirewallStep {
    /// slipway's table of `family` with all its chains, created when
    /// missing (shared by all networks), and its `forward` chain emptied:
    /// it holds only the jumps, which every start adds again, so there is
    /// one copy of them however many networks run.
    Layout {
        /// The family.
        family: NftFamily,
    },
    /// One rule.
    Rule(FirewallRule),
}

/// One rule in slipway's table: every match, then a counter, then the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    /// The table's family.
    pub family: NftFamily,
    /// The chain.
    pub chain: NftChain,
    /// Put at the head of the chain (nft `insert`) instead of its end.
    pub first: bool,
    /// The conditions, all of which must hold.
    pub matches: Vec<RuleMatch>,
    /// What happens to a matching packet.
    pub verdict: Verdict,
}

/// A condition of a [`FirewallRule`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "match", rename_all = "kebab-case")]
pub enum RuleMatch {
    /// Arrived on this device.
    InIface {
        /// The device.
        name: IfName,
    },
    /// Leaves through this device.
    OutIface {
        /// The device.
        name: IfName,
    },
    /// Source address in the subnet.
    Source {
        /// The subnet.
        net: Subnet,
    },
    /// Destination address in the subnet (or, `negate`, outside it).
    Dest {
        /// The subnet.
        net: Subnet,
        /// Match addresses outside it instead.
        negate: bool,
    },
    /// Part of a connection already seen (conntrack state established or
    /// related).
    Established,
    /// The transport protocol.
    L4Proto {
        /// The protocol.
        proto: L4Proto,
    },
}

/// A subnet (a single address when the prefix is the full length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The network address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Whether the subnet is one address.
    pub fn is_host(&self) -> bool {
        self.prefix == if self.address.is_ipv4() { 32 } else { 128 }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.address)
        } else {
            write!(f, "{}/{}", self.address, self.prefix)
        }
    }
}

keywords! {
    /// A transport protocol NAT gives a port range to, by its name.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum L4Proto {
        /// TCP.
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
    }
}

/// What a [`FirewallRule`] does with a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Let it through.
    Accept,
    /// Refuse it (ICMP port unreachable).
    Reject,
    /// Stop processing this chain.
    Return,
    /// Continue in another chain.
    Jump {
        /// The chain.
        chain: NftChain,
    },
    /// Source NAT to the outgoing device's address.
    Masquerade {
        /// Source port range.
        ports: Option<(u16, u16)>,
    },
    /// Source NAT to an address range.
    Snat {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
        /// Source port range.
        ports: Option<(u16, u16)>,
    },
}

/// Single-quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl fmt::Display for FirewallStep {
    /// The step as `nft` command lines, for people (`net-start --dry-run`)
    /// and pastable into a shell; backends do not parse or run this text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirewallStep::Layout { family } => {
                let t = format!("{} {NFT_TABLE}", family.as_str());
                let lines = [
                    format!("add table {t}"),
                    format!("add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}"),
                    format!("add chain {t} guest_output"),
                    format!("add chain {t} guest_input"),
                    format!("add chain {t} guest_cross"),
                    format!("add chain {t} guest_nat {{ type nat hook postrouting priority srcnat; policy accept; }}"),
                    format!("flush chain {t} forward"),
                ];
                let lines: Vec<String> = lines
                    .iter()
                    .map(|l| format!("nft {}", shell_quote(l)))
                    .collect();
                write!(f, "{}", lines.join("\n"))
            }
            FirewallStep::Rule(r) => write!(f, "nft {}", shell_quote(&r.to_string())),
        }
    }
}

impl fmt::Display for FirewallRule {
    /// nft's command syntax, without the leading `nft`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.first { "insert" } else { "add" };
        write!(
            f,
            "{verb} rule {} {NFT_TABLE} {}",
            self.family.as_str(),
            self.chain.as_str()
        )?;
        for m in &self.matches {
            let addr_kw = |n: &Subnet| if n.address.is_ipv4() { "ip" } else { "ip6" };
            match m {
                RuleMatch::InIface { name } => write!(f, " iifname \"{name}\"")?,
                RuleMatch::OutIface { name } => write!(f, " oifname \"{name}\"")?,
                RuleMatch::Source { net } => write!(f, " {} saddr {net}", addr_kw(net))?,
                RuleMatch::Dest { net, negate } => {
                    let not = if *negate { "!= " } else { "" };
                    write!(f, " {} daddr {not}{net}", addr_kw(net))?
                }
                RuleMatch::Established => write!(f, " ct state related,established")?,
                RuleMatch::L4Proto { proto } => write!(f, " meta l4proto {}", proto.as_str())?,
            }
        }
        write!(f, " counter ")?;
        let ports =
            |p: &Option<(u16, u16)>| p.map(|(a, b)| format!(":{a}-{b}")).unwrap_or_default();
        match &self.verdict {
            Verdict::Accept => write!(f, "accept"),
            Verdict::Reject => write!(f, "reject"),
            Verdict::Return => write!(f, "return"),
            Verdict::Jump { chain } => write!(f, "jump {}", chain.as_str()),
            Verdict::Masquerade { ports: None } => write!(f, "masquerade"),
            Verdict::Masquerade { ports: p } => write!(f, "masquerade to {}", ports(p)),
            Verdict::Snat {
                start,
                end,
                ports: p,
            } if start == end => {
                write!(f, "snat to {start}{}", ports(p))
            }
            Verdict::Snat {
                start,
                end,
                ports: p,
            } => write!(f, "snat to {start}-{end}{}", ports(p)),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateBridge {
                name,
                mac,
                mtu,
                stp,
                delay,
            } => {
                write!(f, "ip link add {name}")?;
                if let Some(mac) = mac {
                    write!(f, " address {mac}")?;
                }
                if let Some(mtu) = mtu {
                    write!(f, " mtu {mtu}")?;
                }
                // iproute2 takes the forward delay in centiseconds.
                let stp = u8::from(*stp);
                write!(
                    f,
                    " type bridge stp_state {stp} forward_delay {}",
                    delay * 100
                )
            }
            Action::Sysctl { key, value } => write!(f, "sysctl -w {key}={value}"),
            Action::Firewall { step } => write!(f, "{step}"),
            Action::AddAddress {
                dev,
                address,
                prefix,
            } => write!(f, "ip addr add {address}/{prefix} dev {dev}"),
            Action::LinkUp { dev } => write!(f, "ip link set {dev} up"),
            Action::AddRoute {
                dest,
                prefix,
                gateway,
                metric,
                dev,
            } => {
                write!(f, "ip route add {dest}/{prefix} via {gateway} dev {dev}")?;
                if let Some(m) = metric {
                    write!(f, " metric {m}")?;
                }
                Ok(())
            }
            Action::DhcpDns(s) => write!(f, "{s}"),
            Action::OvnSwitch { switch, nb, subnet } => {
                write!(f, "OVN logical switch {switch} at {}", nb.join(","))?;
                if let Some(s) = subnet {
                    write!(f, " with other_config:subnet={s}")?;
                }
                Ok(())
            }
            Action::Bandwidth { dev, shape } => {
                write!(f, "tc: shape {dev} (HTB root 1: with classes 1:1, 1:2)")?;
                for (dir, r) in [("inbound", shape.inbound), ("outbound", shape.outbound)] {
                    if let Some(r) = r {
                        write!(f, " {dir} average {}kbps", r.average)?;
                        if r.peak != 0 {
                            write!(f, " peak {}kbps", r.peak)?;
                        }
                        if r.burst != 0 {
                            write!(f, " burst {}kb", r.burst)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listen: Vec<String> = self.listen.iter().map(|a| a.to_string()).collect();
        write!(
            f,
            "dhcp-dns on {} listen {}",
            self.interface,
            listen.join(",")
        )?;
        for r in &self.ranges {
            write!(
                f,
                "; range {}-{}/{} lease {}",
                r.start,
                r.end,
                r.prefix,
                lease_text(r.lease_secs)
            )?;
        }
        for h in &self.hosts {
            let fields: Vec<String> = [
                h.mac.clone(),
                h.id.clone(),
                h.ip.map(|i| i.to_string()),
                h.name.clone(),
            ]
            .into_iter()
            .flatten()
            .collect();
            write!(f, "; host {}", fields.join(","))?;
            if let Some(l) = h.lease_secs {
                write!(f, " lease {}", lease_text(l))?;
            }
        }
        match self.router {
            Some(r) => write!(f, "; router {r}")?,
            None => write!(f, "; no router")?,
        }
        if let Some(mtu) = self.mtu {
            write!(f, "; mtu {mtu}")?;
        }
        for p in &self.ipv6_prefixes {
            let how = if p.managed { "dhcpv6" } else { "slaac" };
            write!(f, "; ra {}/{} {how}", p.address, p.prefix)?;
        }
        if !self.ipv6_prefixes.is_empty() && !self.ipv6_router {
            write!(f, " no default route")?;
        }
        if !self.dns {
            return write!(f, "; dns off");
        }
        if let Some(d) = &self.domain {
            write!(f, "; domain {d}")?;
        }
        for (ip, names) in &self.dns_hosts {
            write!(f, "; dns-host {ip} {}", names.join(" "))?;
        }
        if !self.upstream {
            write!(f, "; no upstream dns")?;
        } else if self.forwarders.is_empty() {
            write!(f, "; upstream host resolvers")?;
        } else {
            let fw: Vec<String> = self.forwarders.iter().map(|a| a.to_string()).collect();
            write!(f, "; upstream {}", fw.join(","))?;
        }
        if let Some(t) = &self.tftp_root {
            write!(f, "; tftp {t}")?;
        }
        if let Some((file, server)) = &self.bootp {
            write!(f, "; bootp {file}")?;
            if let Some(s) = server {
                write!(f, " from {s}")?;
            }
        }
        Ok(())
    }
}

fn lease_text(secs: u64) -> String {
    if secs == 0 {
        "infinite".into()
    } else {
        format!("{secs}s")
    }
}

impl fmt::Display for Plan {
    /// One line per action (per nft command for a firewall layout).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.actions {
            writeln!(f, "{a}")?;
        }
        Ok(())
    }
}

/// The prefix length of an `<ip>`: `prefix`, else the netmask's, else the
/// classful default libvirt uses for IPv4 (and 64 for IPv6).
pub fn ip_prefix(ip: &IpDef) -> u8 {
    if let Some(p) = ip.prefix {
        return p;
    }
    if let Some(mask) = ip.netmask {
        return u32::from(mask).count_ones() as u8;
    }
    match ip.address {
        IpAddr::V4(a) => match a.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
        IpAddr::V6(_) => 64,
    }
}

/// The network address of `addr/prefix`.
pub fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    slipway_host::ipnet::IpNet::new(addr, prefix.min(max)).map_or(addr, |n| n.network())
}

fn lease_secs(lease: &slipway_netxml::Lease) -> u64 {
    let unit = match lease.unit.unwrap_or(LeaseUnit::Minutes) {
        LeaseUnit::Seconds => 1,
        LeaseUnit::Minutes => 60,
        LeaseUnit::Hours => 3600,
    };
    lease.expiry.saturating_mul(unit)
}

/// Computes the plan for a validated network whose defaults are filled
/// (bridge name present). Networks that use an existing host bridge or
/// macvtap/hostdev pools need no links or services and get an empty plan.
pub fn plan(net: &Network) -> Result<Plan> {
    let mode = net.forward_mode();
    let mut actions = Vec::new();
    if matches!(
        mode,
        Some(
            ForwardMode::Bridge
                | ForwardMode::Private
                | ForwardMode::Vepa
                | ForwardMode::Passthrough
                | ForwardMode::Hostdev
        )
    ) {
        if let Some(ovn) = &net.ovn {
            actions.push(Action::OvnSwitch {
                switch: ovn.switch.clone(),
                nb: ovn.nb.iter().map(ToString::to_string).collect(),
                subnet: ovn.subnet.map(|s| s.to_string()),
            });
        }
        // An existing host bridge is shaped as libvirt shapes it
        // (networkStartNetworkBridge), and unshaped when the network stops.
        if let (Some(ForwardMode::Bridge), Some(br)) = (mode, net.bridge_name()) {
            bandwidth(net, &ifname(net, "<bridge name", br)?, &mut actions)?;
        }
        return Ok(Plan {
            network: net.name.clone(),
            actions,
        });
    }
    let br = net
        .bridge_name()
        .ok_or_else(|| Error::NotValid(format!("network '{}' has no bridge name", net.name)))?;
    let br = ifname(net, "<bridge name", br)?;
    let bridge = net.bridge.clone().unwrap_or_default();
    actions.push(Action::CreateBridge {
        name: br.clone(),
        mac: net.mac.map(|m| m.to_string()),
        mtu: net.mtu,
        stp: bridge.stp.unwrap_or(true),
        delay: bridge.delay.unwrap_or(0),
    });
    let has_v6 = net.ips.iter().any(|ip| ip.address.is_ipv6());
    if !has_v6 {
        actions.push(sysctl(format!("net.ipv6.conf.{br}.disable_ipv6"), "1"));
    } else {
        actions.push(sysctl(format!("net.ipv6.conf.{br}.accept_ra"), "0"));
        actions.push(sysctl(format!("net.ipv6.conf.{br}.autoconf"), "0"));
    }
    if mode != Some(ForwardMode::Open) {
        firewall(net, &br, &mut actions)?;
    }
    for ip in &net.ips {
        actions.push(Action::AddAddress {
            dev: br.clone(),
            address: ip.address,
            prefix: ip_prefix(ip),
        });
    }
    actions.push(Action::LinkUp { dev: br.clone() });
    bandwidth(net, &br, &mut actions)?;
    for r in &net.routes {
        let dest = r.address;
        let prefix = r
            .prefix
            .or_else(|| r.netmask.map(|m| u32::from(m).count_ones() as u8))
            .unwrap_or(if dest.is_ipv4() { 32 } else { 128 });
        actions.push(Action::AddRoute {
            dest,
            prefix,
            gateway: r.gateway,
            metric: r.metric,
            dev: br.clone(),
        });
    }
    if mode.is_some() {
        if net.ips.iter().any(|ip| ip.address.is_ipv4()) {
            actions.push(sysctl("net.ipv4.ip_forward".into(), "1"));
        }
        if has_v6 {
            actions.push(sysctl("net.ipv6.conf.all.forwarding".into(), "1"));
        }
    }
    if let Some(svc) = service(net, &br) {
        actions.push(Action::DhcpDns(Box::new(svc)));
    }
    Ok(Plan {
        network: net.name.clone(),
        actions,
    })
}

/// The network's `<bandwidth>` on bridge `br`, when it limits anything.
fn bandwidth(net: &Network, br: &IfName, actions: &mut Vec<Action>) -> Result<()> {
    let Some(bw) = &net.bandwidth else {
        return Ok(());
    };
    let shape = crate::shaping::Shape::of(bw)
        .map_err(|e| Error::NotValid(format!("network '{}': {e}", net.name)))?;
    if let Some(shape) = shape {
        actions.push(Action::Bandwidth {
            dev: br.clone(),
            shape,
        });
    }
    Ok(())
}

fn sysctl(key: String, value: &str) -> Action {
    Action::Sysctl {
        key,
        value: value.into(),
    }
}

/// A device name of `net` as an [`IfName`]; `what` says where it comes from.
/// Definitions are validated when defined, but a stored file may have been
/// edited since.
fn ifname(net: &Network, what: &str, name: &str) -> Result<IfName> {
    IfName::new(name).map_err(|e| {
        Error::NotValid(format!(
            "network '{}': {what}='{}': {e}",
            net.name,
            name.escape_debug()
        ))
    })
}

/// libvirt's nftables layout: per family a table with a `forward` chain
/// jumping to `guest_output`, `guest_input`, `guest_cross`, and a NAT chain.
fn firewall(net: &Network, br: &IfName, actions: &mut Vec<Action>) -> Result<()> {
    let mode = net.forward_mode();
    let dev = net.forward.as_ref().and_then(|f| f.dev());
    let dev = dev.map(|d| ifname(net, "<forward dev", d)).transpose()?;
    let in_br = || RuleMatch::InIface { name: br.clone() };
    let out_br = || RuleMatch::OutIface { name: br.clone() };
    for family in [NftFamily::Ip, NftFamily::Ip6] {
        let v6 = family == NftFamily::Ip6;
        // Tables and chains are shared by all networks and "add" is a no-op
        // for existing ones; the layout empties the forward chain and the
        // jumps are added again, which keeps one copy however many networks
        // start. A backend applies a plan's firewall actions as one
        // transaction, so there is no moment without them.
        actions.push(Action::Firewall {
            step: FirewallStep::Layout { family },
        });
        let mut rule = |chain, first, matches, verdict| {
            actions.push(Action::Firewall {
                step: FirewallStep::Rule(FirewallRule {
                    family,
                    chain,
                    first,
                    matches,
                    verdict,
                }),
            })
        };
        for chain in [
            NftChain::GuestCross,
            NftChain::GuestInput,
            NftChain::GuestOutput,
        ] {
            rule(NftChain::Forward, false, vec![], Verdict::Jump { chain });
        }
        // Default: reject everything into and out of the bridge, allow
        // guest-to-guest on the same bridge.
        rule(NftChain::GuestOutput, false, vec![in_br()], Verdict::Reject);
        rule(NftChain::GuestInput, false, vec![out_br()], Verdict::Reject);
        rule(
            NftChain::GuestCross,
            false,
            vec![in_br(), out_br()],
            Verdict::Accept,
        );
        let Some(mode) = mode else { continue };
        for ip in &net.ips {
            let (address, prefix) = (ip.address, ip_prefix(ip));
            if address.is_ipv6() != v6 {
                continue;
            }
            let subnet = Subnet {
                address: network_of(address, prefix),
                prefix,
            };
            // Inserted ahead of the rejects.
            let mut out = vec![RuleMatch::Source { net: subnet }, in_br()];
            out.extend(dev.iter().map(|d| RuleMatch::OutIface { name: d.clone() }));
            rule(NftChain::GuestOutput, true, out, Verdict::Accept);
            let mut inbound: Vec<RuleMatch> = dev
                .iter()
                .map(|d| RuleMatch::InIface { name: d.clone() })
                .collect();
            inbound.push(out_br());
            inbound.push(RuleMatch::Dest {
                net: subnet,
                negate: false,
            });
            let nat = mode == ForwardMode::Nat && !v6;
            if nat {
                inbound.push(RuleMatch::Established);
            }
            rule(NftChain::GuestInput, true, inbound, Verdict::Accept);
            if nat {
                for (matches, verdict) in nat_rules(net, subnet, dev.as_ref()) {
                    rule(NftChain::GuestNat, false, matches, verdict);
                }
            }
        }
    }
    Ok(())
}

/// The rules (matches and verdict) of the NAT chain for one IPv4 subnet.
fn nat_rules(
    net: &Network,
    subnet: Subnet,
    dev: Option<&IfName>,
) -> Vec<(Vec<RuleMatch>, Verdict)> {
    let nat = net
        .forward
        .as_ref()
        .and_then(|f| f.nat.clone())
        .unwrap_or_default();
    let ports = Some(nat.port.unwrap_or((1024, 65535)));
    // Masquerade, or SNAT to the configured address range; TCP and UDP get
    // the source port range, everything else keeps its ports.
    let target = |ports| match nat.address {
        Some((start, end)) => Verdict::Snat { start, end, ports },
        None => Verdict::Masquerade { ports },
    };
    let nat_rule = |dest: Subnet, negate: bool, proto: Option<L4Proto>, verdict| {
        let mut matches = vec![
            RuleMatch::Source { net: subnet },
            RuleMatch::Dest { net: dest, negate },
        ];
        matches.extend(dev.map(|d| RuleMatch::OutIface { name: d.clone() }));
        matches.extend(proto.map(|proto| RuleMatch::L4Proto { proto }));
        (matches, verdict)
    };
    let host = |a: [u8; 4], prefix| Subnet {
        address: IpAddr::V4(Ipv4Addr::from(a)),
        prefix,
    };
    vec![
        nat_rule(host([224, 0, 0, 0], 24), false, None, Verdict::Return),
        nat_rule(host([255, 255, 255, 255], 32), false, None, Verdict::Return),
        nat_rule(subnet, true, Some(L4Proto::Tcp), target(ports)),
        nat_rule(subnet, true, Some(L4Proto::Udp), target(ports)),
        nat_rule(subnet, true, None, target(None)),
    ]
}

fn service(net: &Network, br: &IfName) -> Option<ServiceConfig> {
    let dns_on = net.dns.as_ref().and_then(|d| d.enable).unwrap_or(true);
    let mut svc = ServiceConfig {
        interface: br.clone(),
        listen: net.ips.iter().map(|ip| ip.address).collect(),
        ranges: Vec::new(),
        hosts: Vec::new(),
        router: None,
        mtu: net.mtu,
        dns: dns_on,
        domain: net.domain.as_ref().map(|d| d.name.clone()),
        forwarders: net
            .dns
            .iter()
            .flat_map(|d| d.forwarders.iter().filter_map(|f| f.addr))
            .collect(),
        upstream: net.forward.is_some(),
        dns_hosts: net
            .dns
            .iter()
            .flat_map(|d| {
                d.hosts
                    .iter()
                    .filter_map(|h| Some((h.ip?, h.hostnames.clone())))
            })
            .collect(),
        tftp_root: net.ips.iter().find_map(|ip| ip.tftp_root.clone()),
        bootp: None,
        ipv6_prefixes: net
            .ips
            .iter()
            .filter_map(|ip| match ip.address {
                IpAddr::V6(address) => Some(RaPrefix {
                    address,
                    prefix: ip_prefix(ip),
                    managed: ip.dhcp.as_ref().is_some_and(|d| !d.ranges.is_empty()),
                }),
                IpAddr::V4(_) => None,
            })
            .collect(),
        ipv6_router: net.forward.is_some(),
    };
    // The dnsmasq options slipway's service can honour (crate::dnsmasq).
    for o in &net.dnsmasq_options {
        match dnsmasq::interpret(o) {
            DnsmasqOption::Server(a) => svc.forwarders.push(a),
            DnsmasqOption::HostRecord { names, addrs } => {
                for a in addrs {
                    svc.dns_hosts.push((a, names.clone()));
                }
            }
            DnsmasqOption::Ignored => {}
        }
    }
    let mut any_dhcp = false;
    for ip in &net.ips {
        let Some(dhcp) = ip.dhcp.as_ref() else {
            continue;
        };
        let (address, prefix) = (ip.address, ip_prefix(ip));
        any_dhcp = true;
        if address.is_ipv4() && net.forward.is_some() {
            svc.router = Some(address);
        }
        for r in &dhcp.ranges {
            svc.ranges.push(DhcpPool {
                start: r.start,
                end: r.end,
                prefix,
                lease_secs: r
                    .lease
                    .as_ref()
                    .map(lease_secs)
                    .unwrap_or(DEFAULT_LEASE_SECS),
            });
        }
        for h in &dhcp.hosts {
            svc.hosts.push(StaticLease {
                mac: h.mac.map(|m| m.to_string()),
                id: h.id.clone(),
                ip: h.ip,
                name: h.name.clone(),
                lease_secs: h.lease.as_ref().map(lease_secs),
            });
        }
        if let Some(b) = &dhcp.bootp {
            svc.bootp = Some((b.file.clone(), b.server));
        }
    }
    if !any_dhcp && !dns_on && svc.ipv6_prefixes.is_empty() {
        return None;
    }
    Some(svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(xml: &str) -> Plan {
        let mut net = Network::from_xml(xml).unwrap();
        net.validate().unwrap();
        net.fill_defaults(&Default::default());
        plan(&net).unwrap()
    }

    fn lines(p: &Plan) -> Vec<String> {
        p.actions.iter().map(|a| a.to_string()).collect()
    }

    /// The dnsmasq options slipway honours reach the service; others do not.
    #[test]
    fn honoured_dnsmasq_options_reach_the_service() {
        let p = plan_of(
            "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
             <name>d</name><forward/><bridge name='br7'/><ip address='10.7.0.1' prefix='24'/>\
             <dnsmasq:options><dnsmasq:option value='server=192.0.2.53'/>\
             <dnsmasq:option value='host-record=nas,10.7.0.9,fd00::9'/>\
             <dnsmasq:option value='server=/lab/192.0.2.54'/></dnsmasq:options></network>",
        );
        let svc = p
            .actions
            .iter()
            .find_map(|a| match a {
                Action::DhcpDns(s) => Some(s),
                _ => None,
            })
            .expect("a DHCP/DNS service");
        assert_eq!(svc.forwarders, ["192.0.2.53".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            svc.dns_hosts,
            [
                ("10.7.0.9".parse().unwrap(), vec!["nas".to_string()]),
                ("fd00::9".parse().unwrap(), vec!["nas".to_string()]),
            ]
        );
    }

    #[test]
    fn isolated_network_gets_only_the_reject_trio_and_no_router() {
        let p = plan_of("<network><name>i</name><bridge name='br1'/><ip address='10.1.0.1' prefix='24'><dhcp><range start='10.1.0.2' end='10.1.0.3'/></dhcp></ip></network>");
        let l = lines(&p);
        assert!(
            l.iter().all(|r| !r.contains("accept")
                || r.contains("guest_cross")
                || r.contains("policy accept")),
            "{l:#?}"
        );
        assert!(
            l.iter()
                .all(|r| !r.contains("masquerade") && !r.contains("ip_forward")),
            "{l:#?}"
        );
        assert!(
            l.last().unwrap().ends_with("; no router; no upstream dns"),
            "{l:#?}"
        );
    }

    #[test]
    fn route_open_and_bridge_modes() {
        let route = lines(&plan_of("<network><name>r</name><forward mode='route' dev='eth1'/><bridge name='br2'/><ip address='10.2.0.1' prefix='24'/></network>"));
        assert!(route.contains(&"nft 'insert rule ip slipway_network guest_output ip saddr 10.2.0.0/24 iifname \"br2\" oifname \"eth1\" counter accept'".to_string()), "{route:#?}");
        assert!(route.contains(&"nft 'insert rule ip slipway_network guest_input iifname \"eth1\" oifname \"br2\" ip daddr 10.2.0.0/24 counter accept'".to_string()), "{route:#?}");
        assert!(!route.iter().any(|r| r.contains("masquerade")));
        let open = lines(&plan_of("<network><name>o</name><forward mode='open'/><bridge name='br3'/><ip address='10.3.0.1' prefix='24'/></network>"));
        assert!(!open.iter().any(|r| r.starts_with("nft")), "{open:#?}");
        assert!(open.contains(&"sysctl -w net.ipv4.ip_forward=1".to_string()));
        assert!(plan_of(
            "<network><name>b</name><forward mode='bridge'/><bridge name='br0'/></network>"
        )
        .actions
        .is_empty());
    }

    #[test]
    fn snat_range_ports_mtu_routes_and_ipv6() {
        let l = lines(&plan_of(
            "<network><name>s</name><forward mode='nat'><nat><address start='1.2.3.4' end='1.2.3.9'/><port start='2000' end='3000'/></nat></forward>\
             <bridge name='br4' delay='3'/><mtu size='9000'/><ip address='10.4.0.1' prefix='24'/><ip family='ipv6' address='fd00::1' prefix='64'/>\
             <route address='10.40.0.0' prefix='16' gateway='10.4.0.2' metric='5'/></network>",
        ));
        assert!(
            l[0].ends_with(" mtu 9000 type bridge stp_state 1 forward_delay 300"),
            "{}",
            l[0]
        );
        assert!(l.iter().any(|r| r.ends_with("meta l4proto udp counter snat to 1.2.3.4-1.2.3.9:2000-3000'")), "{l:#?}");
        assert!(
            l.iter()
                .any(|r| r.ends_with("counter snat to 1.2.3.4-1.2.3.9'")),
            "{l:#?}"
        );
        assert!(l.contains(&"ip addr add fd00::1/64 dev br4".to_string()));
        assert!(l.contains(&"ip route add 10.40.0.0/16 via 10.4.0.2 dev br4 metric 5".to_string()));
        assert!(l.contains(&"sysctl -w net.ipv6.conf.all.forwarding=1".to_string()));
        assert!(l.contains(&"sysctl -w net.ipv6.conf.br4.accept_ra=0".to_string()));
        // No DHCP, but router advertisements for the IPv6 address: the
        // service runs for them.
        assert!(
            l.last().unwrap().contains("; ra fd00::1/64 slaac; "),
            "{l:#?}"
        );
    }

    /// Each IPv6 `<ip>` is advertised; one with a DHCPv6 range is marked
    /// managed; an isolated network is nobody's default router.
    #[test]
    fn ipv6_addresses_are_advertised() {
        let p = plan_of(
            "<network><name>i</name><bridge name='br7'/><dns enable='no'/>\
             <ip family='ipv6' address='fd00:7::1' prefix='64'><dhcp><range start='fd00:7::10' end='fd00:7::20'/></dhcp></ip>\
             <ip family='ipv6' address='fd00:8::1' prefix='48'/></network>",
        );
        let Some(Action::DhcpDns(svc)) = p.actions.last() else {
            panic!("no service: {p:#?}");
        };
        assert!(!svc.ipv6_router);
        let got: Vec<(String, u8, bool)> = svc
            .ipv6_prefixes
            .iter()
            .map(|r| (r.address.to_string(), r.prefix, r.managed))
            .collect();
        assert_eq!(
            got,
            [
                ("fd00:7::1".into(), 64, true),
                ("fd00:8::1".into(), 48, false)
            ]
        );
        assert!(svc.to_string().ends_with(
            "; ra fd00:7::1/64 dhcpv6; ra fd00:8::1/48 slaac no default route; dns off"
        ));
        let v4 = plan_of("<network><name>v</name><bridge name='br8'/><dns enable='no'/><ip address='10.8.0.1' prefix='24'/></network>");
        assert!(!v4.actions.iter().any(|a| matches!(a, Action::DhcpDns(_))));
    }

    /// A stored definition edited by hand after define (never validated):
    /// its device names are still checked before anything is planned.
    #[test]
    fn unchecked_device_names_fail_the_plan() {
        let net = Network::from_xml(
            "<network><name>x</name><forward mode='nat' dev='eth0&quot; accept; #'/><bridge name='br0'/><ip address='10.1.0.1' prefix='24'/></network>",
        )
        .unwrap();
        assert_eq!(
            plan(&net).unwrap_err().to_string(),
            "Requested operation is not valid: network 'x': <forward dev='eth0\\\" accept; #': invalid interface name: must not contain white space"
        );
        let net =
            Network::from_xml("<network><name>y</name><bridge name='../b'/></network>").unwrap();
        assert!(plan(&net)
            .unwrap_err()
            .to_string()
            .contains("<bridge name='../b': invalid interface name: must not contain '/'"));
    }

    /// Two networks' firewall actions, as printed, run by the real nft in a namespace
    /// of our own: both sets of rules load, and the shared forward chain
    /// keeps a single set of jumps.
    #[test]
    fn firewall_actions_load_into_nft_and_stay_single() {
        let a = plan_of("<network><name>a</name><forward/><bridge name='br5'/><ip address='10.5.0.1' prefix='24'/></network>");
        let b = plan_of("<network><name>b</name><bridge name='br6'/><ip address='10.6.0.1' prefix='24'/></network>");
        // The dry-run text of the firewall steps is nft command lines.
        let script = |p: &Plan| -> String {
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::Firewall { .. }))
                .map(|a| format!("{a}\n"))
                .collect()
        };
        let out = std::process::Command::new("unshare")
            .args(["-Urn", "sh", "-ec"])
            .arg(format!(
                "{}{}nft list chain ip slipway_network forward; nft list chain ip slipway_network guest_output",
                script(&a),
                script(&b)
            ))
            .output()
            .expect("unshare and nft (Debian packages util-linux, nftables)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.matches("jump guest_input").count(), 1, "{stdout}");
        assert!(
            stdout.contains("iifname \"br5\" counter packets 0 bytes 0 reject"),
            "{stdout}"
        );
        assert!(
            stdout.contains("iifname \"br6\" counter packets 0 bytes 0 reject"),
            "{stdout}"
        );
    }
}
