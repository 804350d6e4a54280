//! Interfaces → plan: for every `<interface>`, in XML order, its MAC (given
//! or generated), its QEMU NIC model, what the host side needs (a tap, a
//! user-mode stack, nothing) and its QEMU arguments.
//!
//! The plan is pure: it decides names and numbers but touches nothing, so
//! `slipway qemu-args` prints exactly what `slipway launch` passes to QEMU.
//! Ids follow libvirt: `hostnetN` for the netdev, `netN` for the device,
//! `charnetN` for a vhost-user chardev; every NIC has a netdev of its own
//! (no hub shared between NICs). Tap descriptors are numbered from
//! [`FIRST_TAP_FD`] in XML order, which is where `launch` puts them in QEMU.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use slipway_netxml::interface::{InterfaceKind, PortForward};
use slipway_netxml::{Interface, MacAddr};

use crate::error::{Error, Result};

/// The descriptor number QEMU gets the first tap on (`-netdev tap,fd=3`);
/// the next taps follow in XML order.
pub const FIRST_TAP_FD: i32 = 3;

/// Most host ports one user-mode interface may forward (each is a listening
/// socket in the stack).
pub const MAX_FORWARDS: usize = 1024;

/// Tap name prefixes libvirt reserves for the names it generates: a
/// `<target dev>` starting with one of them is replaced by a generated name.
pub const RESERVED_PREFIXES: &[&str] = &["vnet", "vif", "macvtap", "macvlan"];

/// Which bridge a tap joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeRef {
    /// The bridge of this running slipway network.
    Network(String),
    /// This host bridge.
    Bridge(String),
}

/// A tap the host side needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// The descriptor number QEMU sees it on.
    pub fd: i32,
    /// The name asked for (`None`: generate `vnetN`).
    pub name: Option<String>,
    /// False for `managed='no'`: the tap exists and is used as it is.
    pub managed: bool,
    /// The bridge to attach it to.
    pub bridge: Option<BridgeRef>,
    /// `<mtu size>`; without it the tap takes the bridge's MTU.
    pub mtu: Option<u32>,
    /// Open with the virtio-net header (virtio NICs).
    pub vnet_hdr: bool,
    /// Run with the tap's name after it is up (ethernet).
    pub script: Option<PathBuf>,
    /// Run with the tap's name when the VM is gone (ethernet).
    pub downscript: Option<PathBuf>,
    /// Portgroup, virtualport and VLAN asked for (network, bridge).
    pub port: crate::ovs::PortRequest,
    /// `<bandwidth>`: the tap's shaping (see [`crate::port`]).
    pub shape: Option<Box<slipway_netmgr::shaping::Shape>>,
    /// `<port isolated>` of the interface; `None` takes the network's.
    pub isolated: Option<bool>,
}

/// A user-mode stack the host side needs: `slipway user --dgram
/// STACK_SOCKET OPTIONS`, QEMU connected by `-netdev dgram`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStack {
    /// QEMU `-netdev user` option string for the stack.
    pub options: String,
    /// Link MTU (`<mtu size>`).
    pub mtu: Option<u32>,
    /// The datagram socket the stack binds.
    pub stack_socket: PathBuf,
    /// The datagram socket QEMU binds.
    pub qemu_socket: PathBuf,
}

/// What the host provides for a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSide {
    /// A tap device (network, bridge, ethernet).
    Tap(TapSpec),
    /// A user-mode stack process.
    User(UserStack),
    /// Nothing: QEMU's own sockets (mcast, server, client, udp) or an
    /// external backend (vhost-user).
    None,
}

/// One NIC of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Position in the document.
    pub index: usize,
    /// libvirt's type name.
    pub kind: &'static str,
    /// The guest MAC (given or generated).
    pub mac: MacAddr,
    /// True when the MAC was generated.
    pub generated_mac: bool,
    /// The QEMU device model.
    pub model: String,
    /// `<link state='down'>` makes this false.
    pub link_up: bool,
    /// The host side.
    pub host: HostSide,
    /// Its QEMU arguments (`-netdev …`, `-device …`, and a `-chardev` for
    /// vhost-user), each option and value a separate element.
    pub args: Vec<String>,
}

impl Nic {
    /// The netdev id, `hostnetN`.
    pub fn netdev_id(&self) -> String {
        format!("hostnet{}", self.index)
    }

    /// The device id, `netN` (what QMP `set_link` names).
    pub fn device_id(&self) -> String {
        format!("net{}", self.index)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Interface {
            index: self.index,
            mac: self.mac,
            message: message.into(),
        }
    }
}

/// The QEMU device of a NIC without `<model>` (libvirt's default on x86).
const DEFAULT_MODEL: &str = "rtl8139";

/// Every `<model type>` a guest NIC may have, with the QEMU device it
/// becomes: libvirt's names for QEMU's NICs (`virtio` and its variants
/// renamed, the others QEMU's own device names). Anything else is refused
/// when the interfaces are planned, so `qemu-args` and `launch` refuse it
/// alike, before QEMU would.
pub const MODELS: &[(&str, &str)] = &[
    ("virtio", "virtio-net-pci"),
    ("virtio-transitional", "virtio-net-pci-transitional"),
    ("virtio-non-transitional", "virtio-net-pci-non-transitional"),
    ("e1000", "e1000"),
    ("e1000-82544gc", "e1000-82544gc"),
    ("e1000-82545em", "e1000-82545em"),
    ("e1000e", "e1000e"),
    ("igb", "igb"),
    ("rtl8139", "rtl8139"),
    ("ne2k_pci", "ne2k_pci"),
    ("pcnet", "pcnet"),
    ("tulip", "tulip"),
    ("vmxnet3", "vmxnet3"),
    ("usb-net", "usb-net"),
    ("i82550", "i82550"),
    ("i82551", "i82551"),
    ("i82557a", "i82557a"),
    ("i82557b", "i82557b"),
    ("i82557c", "i82557c"),
    ("i82558a", "i82558a"),
    ("i82558b", "i82558b"),
    ("i82559a", "i82559a"),
    ("i82559b", "i82559b"),
    ("i82559c", "i82559c"),
    ("i82559er", "i82559er"),
    ("i82562", "i82562"),
    ("i82801", "i82801"),
];

/// The QEMU device of `<model type='model'>`, if it is one of [`MODELS`].
pub fn qemu_device(model: &str) -> Option<&'static str> {
    MODELS
        .iter()
        .find(|(name, _)| *name == model)
        .map(|(_, device)| *device)
}

/// The whole plan: NICs in XML order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The NICs.
    pub nics: Vec<Nic>,
    /// The domain's `<uuid>` (Open vSwitch's `vm-id`); `None` for bare
    /// interfaces (a launch then uses a random one).
    pub vm_id: Option<uuid::Uuid>,
}

impl Plan {
    /// Plans `interfaces`. `in_use` holds the MACs of interfaces slipway has
    /// running (generated MACs avoid them); user-mode sockets go in
    /// `socket_dir`.
    pub fn new(
        interfaces: &[Interface],
        in_use: &HashSet<MacAddr>,
        socket_dir: &Path,
    ) -> Result<Plan> {
        let mut taken: HashSet<MacAddr> = in_use.clone();
        let given: Vec<MacAddr> = interfaces.iter().filter_map(|i| i.mac).collect();
        let mut seen = HashSet::new();
        for i in interfaces {
            if let Some(m) = i.mac {
                if !seen.insert(m) {
                    return Err(Error::Interface {
                        index: i.index,
                        mac: m,
                        message: "the same MAC address is used by an earlier interface".into(),
                    });
                }
            }
        }
        taken.extend(given);
        let mut next_fd = FIRST_TAP_FD;
        let mut nics = Vec::with_capacity(interfaces.len());
        for i in interfaces {
            let (mac, generated_mac) = match i.mac {
                Some(m) => (m, false),
                None => (unique_mac(&mut taken), true),
            };
            let model = match i.model.as_deref() {
                None => DEFAULT_MODEL,
                Some(m) => qemu_device(m).ok_or_else(|| Error::Interface {
                    index: i.index,
                    mac,
                    message: format!(
                        "<model type='{m}'> is not a NIC model slipway knows: expected one of {}",
                        MODELS
                            .iter()
                            .map(|(name, _)| *name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?,
            }
            .to_string();
            let virtio = model.starts_with("virtio-net-pci");
            let mut nic = Nic {
                index: i.index,
                kind: i.kind.type_name(),
                mac,
                generated_mac,
                model,
                link_up: i.link_up.unwrap_or(true),
                host: HostSide::None,
                args: Vec::new(),
            };
            let id = nic.netdev_id();
            let netdev = match &i.kind {
                InterfaceKind::Network { .. }
                | InterfaceKind::Bridge { .. }
                | InterfaceKind::Ethernet => {
                    let bridge = match &i.kind {
                        InterfaceKind::Network { network } => {
                            Some(BridgeRef::Network(network.clone()))
                        }
                        InterfaceKind::Bridge { bridge } => Some(BridgeRef::Bridge(bridge.clone())),
                        _ => None,
                    };
                    let managed = i.target.managed != Some(false);
                    let name = i.target.dev.clone().filter(|d| {
                        !managed || !RESERVED_PREFIXES.iter().any(|p| d.starts_with(p))
                    });
                    let shape = crate::port::shape_of(i.bandwidth.as_ref()).map_err(|message| {
                        Error::Interface {
                            index: i.index,
                            mac,
                            message,
                        }
                    })?;
                    nic.host = HostSide::Tap(TapSpec {
                        fd: next_fd,
                        name,
                        managed,
                        bridge,
                        mtu: i.mtu,
                        vnet_hdr: virtio,
                        script: i.script.clone(),
                        downscript: i.downscript.clone(),
                        port: crate::ovs::PortRequest::of(i),
                        shape: shape.map(Box::new),
                        isolated: i.port_isolated,
                    });
                    next_fd += 1;
                    format!("tap,fd={},id={id}", next_fd - 1)
                }
                InterfaceKind::User { ips, port_forwards } => {
                    let options = user_options(&nic, ips, port_forwards)?;
                    let tag = mac.to_string().replace(':', "");
                    // A directory per interface: the stack, sandboxed, sees
                    // only its socket's directory (docs/sandbox.md), so it
                    // reaches this VM's socket and no other VM's.
                    let dir = socket_dir.join(format!("user-{tag}"));
                    let stack_socket = dir.join("stack");
                    let qemu_socket = dir.join("qemu");
                    let netdev = format!(
                        "dgram,local.type=unix,local.path={},remote.type=unix,remote.path={},id={id}",
                        qemu_escape(&qemu_socket.to_string_lossy()),
                        qemu_escape(&stack_socket.to_string_lossy()),
                    );
                    nic.host = HostSide::User(UserStack {
                        options,
                        mtu: i.mtu,
                        stack_socket,
                        qemu_socket,
                    });
                    netdev
                }
                InterfaceKind::Mcast { address, port } => {
                    format!("socket,mcast={},id={id}", host_port(Some(*address), *port))
                }
                InterfaceKind::Server { address, port } => {
                    format!("socket,listen={},id={id}", host_port(*address, *port))
                }
                InterfaceKind::Client { address, port } => {
                    format!(
                        "socket,connect={},id={id}",
                        host_port(Some(*address), *port)
                    )
                }
                InterfaceKind::Udp {
                    address,
                    port,
                    local_address,
                    local_port,
                } => format!(
                    "socket,udp={},localaddr={},id={id}",
                    host_port(Some(*address), *port),
                    host_port(Some(*local_address), *local_port)
                ),
                InterfaceKind::VhostUser { path, server } => {
                    let chardev = format!("charnet{}", i.index);
                    let mut c = format!(
                        "socket,id={chardev},path={}",
                        qemu_escape(&path.to_string_lossy())
                    );
                    if *server {
                        c.push_str(",server=on,wait=off");
                    }
                    nic.args.extend(["-chardev".to_string(), c]);
                    format!("vhost-user,chardev={chardev},id={id}")
                }
            };
            let mut device = format!("{},netdev={id},id={},mac={mac}", nic.model, nic.device_id());
            if let (Some(mtu), true) = (i.mtu, virtio) {
                device.push_str(&format!(",host_mtu={mtu}"));
            }
            nic.args
                .extend(["-netdev".to_string(), netdev, "-device".to_string(), device]);
            nics.push(nic);
        }
        Ok(Plan { nics, vm_id: None })
    }

    /// Every NIC's arguments, in order.
    pub fn args(&self) -> Vec<String> {
        self.nics
            .iter()
            .flat_map(|n| n.args.iter().cloned())
            .collect()
    }
}

/// `ADDR:PORT` as QEMU's socket netdev reads it (`:PORT` for any address,
/// IPv6 in brackets).
fn host_port(addr: Option<IpAddr>, port: u16) -> String {
    match addr {
        None => format!(":{port}"),
        Some(IpAddr::V4(a)) => format!("{a}:{port}"),
        Some(IpAddr::V6(a)) => format!("[{a}]:{port}"),
    }
}

/// Escapes a value for QEMU's option syntax (`,` is written `,,`).
pub fn qemu_escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// A `52:54:00` MAC not in `taken`, then added to it.
fn unique_mac(taken: &mut HashSet<MacAddr>) -> MacAddr {
    loop {
        let m = MacAddr::random_kvm();
        if taken.insert(m) {
            return m;
        }
    }
}

/// The `-netdev user` option string equivalent to a user interface's
/// `<ip>` and `<portForward>` elements.
fn user_options(
    nic: &Nic,
    ips: &[slipway_netxml::interface::UserIp],
    forwards: &[PortForward],
) -> Result<String> {
    let mut opts = Vec::new();
    let (mut v4_seen, mut v6_seen) = (false, false);
    for ip in ips {
        let seen = match ip.address {
            IpAddr::V4(_) => &mut v4_seen,
            IpAddr::V6(_) => &mut v6_seen,
        };
        if std::mem::replace(seen, true) {
            return Err(nic.err(format!(
                "<ip address='{}'>: a user interface has at most one <ip> per family",
                ip.address
            )));
        }
        // libvirt's defaults: /24 for IPv4, /64 for IPv6.
        opts.push(match ip.address {
            IpAddr::V4(a) => format!("net={a}/{}", ip.prefix.unwrap_or(24)),
            IpAddr::V6(a) => format!("ipv6-net={a}/{}", ip.prefix.unwrap_or(64)),
        });
    }
    let mut count = 0usize;
    for pf in forwards {
        if let Some(dev) = &pf.dev {
            return Err(nic.err(format!(
                "<portForward dev='{dev}'>: binding forwards to a host device is not supported; use address="
            )));
        }
        let host = match pf.address {
            None => String::new(),
            Some(IpAddr::V4(a)) => a.to_string(),
            Some(IpAddr::V6(a)) => format!("[{a}]"),
        };
        for (hp, gp) in pf.pairs() {
            count += 1;
            if count > MAX_FORWARDS {
                return Err(nic.err(format!(
                    "more than {MAX_FORWARDS} forwarded ports on one interface"
                )));
            }
            opts.push(format!("hostfwd={}:{host}:{hp}-:{gp}", pf.proto));
        }
    }
    let opts = opts.join(",");
    // The stack's own parser: a value it would refuse at start (say a
    // prefix too long for its DHCP range) is an error of this interface now.
    slipway_usermode::options::parse_options(&opts)
        .map_err(|e| nic.err(format!("user-mode options '{opts}': {e}")))?;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_netxml::parse_interfaces;

    fn plan(xml: &str) -> Plan {
        Plan::new(
            &parse_interfaces(xml).unwrap(),
            &HashSet::new(),
            Path::new("/run/s"),
        )
        .unwrap()
    }

    #[test]
    fn ids_fds_and_models_follow_xml_order() {
        let p = plan(
            "<interface type='bridge'><source bridge='br0'/><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>\
             <interface type='mcast'><source address='230.0.0.1' port='5558'/><mac address='52:54:00:00:00:02'/><model type='e1000'/></interface>\
             <interface type='network'><source network='default'/><mac address='52:54:00:00:00:03'/></interface>",
        );
        assert_eq!(
            p.args(),
            [
                "-netdev",
                "tap,fd=3,id=hostnet0",
                "-device",
                "virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01",
                "-netdev",
                "socket,mcast=230.0.0.1:5558,id=hostnet1",
                "-device",
                "e1000,netdev=hostnet1,id=net1,mac=52:54:00:00:00:02",
                "-netdev",
                "tap,fd=4,id=hostnet2",
                "-device",
                "rtl8139,netdev=hostnet2,id=net2,mac=52:54:00:00:00:03",
            ]
        );
    }

    /// Models come from one table: libvirt's virtio variants renamed (and
    /// given the vnet header), anything not in it refused with its name.
    #[test]
    fn models_come_from_the_table() {
        let p = plan(
            "<interface type='ethernet'><mac address='52:54:00:00:00:01'/><model type='virtio-transitional'/><mtu size='9000'/></interface>",
        );
        assert_eq!(
            p.nics[0].args[3],
            "virtio-net-pci-transitional,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01,host_mtu=9000"
        );
        assert!(matches!(&p.nics[0].host, HostSide::Tap(t) if t.vnet_hdr));
        let e = Plan::new(
            &parse_interfaces(
                "<interface type='user'/><interface type='user'><model type='virtio-net'/></interface>",
            )
            .unwrap(),
            &HashSet::new(),
            Path::new("/run/s"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("interface 1 ") && e.contains("<model type='virtio-net'>"),
            "{e}"
        );
        for (name, device) in MODELS {
            assert_eq!(qemu_device(name), Some(*device));
        }
    }

    #[test]
    fn generated_macs_are_kvm_and_avoid_running_ones() {
        let ifs = parse_interfaces(&"<interface type='ethernet'/>".repeat(50)).unwrap();
        let running: HashSet<MacAddr> = (0..=255u8)
            .map(|b| MacAddr([0x52, 0x54, 0, 0, 0, b]))
            .collect();
        let p = Plan::new(&ifs, &running, Path::new("/x")).unwrap();
        let macs: HashSet<MacAddr> = p.nics.iter().map(|n| n.mac).collect();
        assert_eq!(macs.len(), 50);
        for n in &p.nics {
            assert_eq!(&n.mac.0[..3], &[0x52, 0x54, 0]);
            assert!(n.generated_mac && !running.contains(&n.mac));
        }
    }

    #[test]
    fn reserved_target_names_are_regenerated() {
        let p = plan(
            "<interface type='ethernet'><target dev='vnet3'/></interface>\
             <interface type='ethernet'><target dev='mytap'/></interface>\
             <interface type='ethernet'><target dev='vnet9' managed='no'/></interface>",
        );
        let names: Vec<Option<String>> = p
            .nics
            .iter()
            .map(|n| match &n.host {
                HostSide::Tap(t) => t.name.clone(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(names, [None, Some("mytap".into()), Some("vnet9".into())]);
    }

    #[test]
    fn user_options_from_ip_and_forwards() {
        let p = plan(
            "<interface type='user'><mac address='52:54:00:00:00:09'/><ip address='172.17.2.0' prefix='24'/>\
             <ip family='ipv6' address='fd00:1::'/>\
             <portForward proto='tcp' address='127.0.0.1'><range start='2022' to='22'/></portForward>\
             <portForward proto='tcp' address='::1'><range start='2023' to='23'/></portForward>\
             <portForward proto='udp'><range start='5353'/></portForward></interface>",
        );
        let HostSide::User(u) = &p.nics[0].host else {
            panic!()
        };
        assert_eq!(
            u.options,
            "net=172.17.2.0/24,ipv6-net=fd00:1::/64,hostfwd=tcp:127.0.0.1:2022-:22,\
             hostfwd=tcp:[::1]:2023-:23,hostfwd=udp::5353-:5353"
        );
        assert_eq!(
            p.nics[0].args[1],
            "dgram,local.type=unix,local.path=/run/s/user-525400000009/qemu,\
             remote.type=unix,remote.path=/run/s/user-525400000009/stack,id=hostnet0"
        );
    }

    /// Each user-mode interface has a socket directory of its own (its
    /// sandboxed stack sees only that directory), shared by its two ends.
    #[test]
    fn each_user_interface_has_its_own_socket_directory() {
        let p = plan(
            "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>\
             <interface type='user'><mac address='52:54:00:00:00:02'/></interface>",
        );
        let dirs: Vec<_> = p
            .nics
            .iter()
            .map(|n| {
                let HostSide::User(u) = &n.host else { panic!() };
                assert_eq!(u.stack_socket.parent(), u.qemu_socket.parent());
                u.stack_socket.parent().unwrap().to_path_buf()
            })
            .collect();
        assert_ne!(dirs[0], dirs[1]);
        assert!(dirs.iter().all(|d| d.parent() == Some(Path::new("/run/s"))));
    }

    #[test]
    fn user_options_the_stack_refuses_are_errors_of_the_interface() {
        let ifs = parse_interfaces(
            "<interface type='user'><mac address='52:54:00:00:00:01'/><ip address='10.0.2.0' prefix='30'/></interface>",
        )
        .unwrap();
        let e = Plan::new(&ifs, &HashSet::new(), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "interface 0 (mac 52:54:00:00:00:01): user-mode options 'net=10.0.2.0/30'"
            ),
            "{e}"
        );
    }

    #[test]
    fn duplicate_macs_are_refused_with_index() {
        let ifs = parse_interfaces(
            "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>\
             <interface type='user'><mac address='52:54:00:00:00:01'/></interface>",
        )
        .unwrap();
        let e = Plan::new(&ifs, &HashSet::new(), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("interface 1 (mac 52:54:00:00:00:01)"), "{e}");
    }
}
