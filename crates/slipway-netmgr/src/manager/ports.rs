//! Network ports: what libvirt's network driver hands out to each VM
//! interface plugged into a network (`virNetworkPortCreateXML` and the
//! rest of the port API), with the checks and defaults of libvirt 9.0's
//! `networkPortCreateXML` / `networkAllocatePort` / `networkReleasePort`
//! (src/network/bridge_driver.c).
//!
//! Theory of operation: a port exists only while its network runs. It is
//! one file, `Paths::port_dir(NETWORK)/UUID.xml`, holding the port's XML as
//! libvirt formats it, written crash-safely under the manager's lock like
//! every other state; a daemon restart reads them back. Creating a port
//! fills in its plug from the network (the bridge and its MAC table
//! manager for NAT/route/open/isolated networks, the host bridge, the
//! macvtap device of least use, or a free PCI device of the pool) and
//! reserves what the network driver reserves: its UUID, its plug's
//! device, and (slipway's rule, see [`Manager::port_create`]) its MAC
//! address. Deleting releases them by removing the file. Destroying the
//! network removes all its ports, as libvirt does
//! (`virNetworkObjDeleteAllPorts` in `networkDestroy`); starting one
//! removes stale ones; undefining a running network keeps them.

use std::fs;
use std::path::Path;

use slipway_host::atomic;
use slipway_netxml::netport::{MacvlanMode, Plug};
use slipway_netxml::{merge, VirtualPortType};
use slipway_netxml::{ForwardMode, Network, NetworkPort};

use super::{Entry, Inventory, Manager};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::portapi::{PortCreateFlags, PortParameters, PortRef};
use crate::proto::Lookup;
use crate::shaping::{self, FloorClass, FloorFit};

/// The most ports one network holds (libvirt sets no limit; one VM
/// interface per port, so this is far above any host's VM count).
pub const MAX_PORTS_PER_NETWORK: usize = 4096;

/// The longest port XML document accepted, in bytes (libvirt's own ports
/// are under 2 KiB).
pub const MAX_PORT_XML: usize = 64 * 1024;

/// The ports of one network as found on disk, sorted by UUID (virsh's
/// order). Files that do not parse are skipped with a warning, as libvirt's
/// `virNetworkObjLoadAllPorts` skips them.
pub(super) fn load_ports(dir: &Path) -> Vec<NetworkPort> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ports = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if atomic::is_temp_name(std::ffi::OsStr::new(&name)) {
            continue;
        }
        let Some(stem) = name.strip_suffix(".xml") else {
            continue;
        };
        let path = e.path();
        let port = fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| NetworkPort::from_xml(&t).map_err(|e| e.to_string()));
        match port {
            Ok(p) if p.uuid.to_string() == stem => ports.push(p),
            Ok(p) => tracing::warn!(
                "ignoring port file {}: it holds port {}",
                path.display(),
                p.uuid
            ),
            Err(why) => tracing::warn!("cannot parse port {}: {why}", path.display()),
        }
    }
    ports.sort_by_key(|p| p.uuid);
    ports
}

/// The port `uuid` among `ports`, or libvirt's "does not exist" error.
fn find(ports: &[NetworkPort], uuid: uuid::Uuid) -> Result<&NetworkPort> {
    ports
        .iter()
        .find(|p| p.uuid == uuid)
        .ok_or_else(|| Error::NoSuchPort(uuid.to_string()))
}

/// libvirt's check of a port's bandwidth against the network's QoS
/// (`networkCheckBandwidth`): a `floor` needs a network with a bridge of
/// its own and an inbound QoS, and the floors of all its ports (`others`;
/// the port itself, if among them, is not counted) may not exceed the
/// network's inbound peak, else its average. Returns the class the floor
/// takes on the bridge (the port's own class number, else the lowest
/// free one), `None` without a floor.
fn check_floor(
    net: &Network,
    port: &NetworkPort,
    others: &[NetworkPort],
    floor: u64,
) -> Result<Option<FloorClass>> {
    if floor == 0 {
        return Ok(None);
    }
    let mac = port.mac;
    if !net.has_own_bridge() {
        return Err(Error::Unsupported(format!(
            "Invalid use of 'floor' on interface with MAC address {mac} - 'floor' is only supported for interface type 'network' with forward type 'nat', 'route', 'open' or none"
        )));
    }
    let Some(net_in) = net.bandwidth.and_then(|b| b.inbound) else {
        return Err(Error::Unsupported(format!(
            "Invalid use of 'floor' on interface with MAC address {mac} - network '{}' has no inbound QoS set",
            net.name
        )));
    };
    let bridge = net.bridge_name().unwrap_or_default();
    let fit = shaping::check_floor(
        &net_in,
        floor_sum(others, port),
        0,
        floor,
        &mac.to_string(),
        bridge,
        &net.name,
    )
    .map_err(Error::NotValid)?;
    let FloorFit::Fits { ceiling, floor_sum } = fit else {
        return Ok(None);
    };
    let own = port.bandwidth.map_or(0, |b| b.class_id);
    let class = if own != 0 {
        own
    } else {
        shaping::next_class(
            others
                .iter()
                .filter_map(|p| p.bandwidth.map(|b| b.class_id).filter(|&c| c != 0)),
        )
    };
    Ok(Some(FloorClass {
        bridge: bridge.to_string(),
        mac: mac.0,
        floor,
        class,
        ceiling,
        rest: ceiling.saturating_sub(floor_sum),
    }))
}

/// The floors of `ports` other than `port`.
fn floor_sum(ports: &[NetworkPort], port: &NetworkPort) -> u64 {
    ports
        .iter()
        .filter(|p| p.uuid != port.uuid)
        .map(|p| p.bandwidth.map_or(0, |b| b.floor()))
        .fold(0, u64::saturating_add)
}

/// The floor class `port` holds on the bridge of `net`, to release, with
/// what class 1:2 gets back once it is gone; `None` when it holds none.
fn held_floor(net: &Network, port: &NetworkPort, ports: &[NetworkPort]) -> Option<FloorClass> {
    let bw = port.bandwidth?;
    let net_in = net.bandwidth.and_then(|b| b.inbound)?;
    if bw.class_id == 0 || bw.floor() == 0 {
        return None;
    }
    let ceiling = if net_in.peak != 0 {
        net_in.peak
    } else {
        net_in.average
    };
    Some(FloorClass {
        bridge: net.bridge_name().unwrap_or_default().to_string(),
        mac: port.mac.0,
        floor: bw.floor(),
        class: bw.class_id,
        ceiling,
        rest: ceiling.saturating_sub(floor_sum(ports, port)),
    })
}

/// The `<bandwidth>` of the port's portgroup (named, else the network's
/// default one).
fn port_group_bandwidth(net: &Network, port: &NetworkPort) -> Option<slipway_netxml::Bandwidth> {
    let group = match &port.group {
        Some(g) => net.portgroups.iter().find(|p| &p.name == g),
        None => net.portgroups.iter().find(|p| p.default),
    };
    group.and_then(|g| g.bandwidth)
}

/// `<virtualport type>` of the port, for libvirt's checks.
fn vport_kind(port: &NetworkPort) -> Option<VirtualPortType> {
    port.virtualport.as_ref().and_then(|v| v.kind)
}

/// libvirt's refusal of a virtualport type the network's kind cannot use.
fn vport_refused(port: &NetworkPort, net: &Network, uses: &str) -> Error {
    let kind = vport_kind(port).map_or("none", VirtualPortType::as_str);
    Error::ConfigUnsupported(format!(
        "<virtualport type='{kind}'> not supported for network '{}' which uses {uses}",
        net.name
    ))
}

/// How many of `ports` use the macvtap device `dev`.
fn direct_uses(ports: &[NetworkPort], dev: &str) -> usize {
    ports
        .iter()
        .filter(|p| matches!(&p.plug, Some(Plug::Direct { dev: d, .. }) if d == dev))
        .count()
}

/// `networkAllocatePort`: fills in the plug of a new port from the network
/// (after the virtualport checks of its kind), choosing a device from the
/// network's pool where it has one.
fn allocate(net: &Network, port: &mut NetworkPort, others: &[NetworkPort]) -> Result<()> {
    merge_port_settings(net, port)?;
    let mode = net.forward_mode();
    let forward = net.forward.as_ref();
    let bridge = net.bridge_name();
    let mtm = net.bridge.as_ref().and_then(|b| b.mac_table_manager);
    match mode {
        None | Some(ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open) => {
            if port.virtualport.is_some() {
                return Err(vport_refused(port, net, "IP forwarding"));
            }
            port.plug = Some(Plug::Network {
                bridge: bridge.unwrap_or_default().to_string(),
                mac_table_manager: mtm,
            });
        }
        Some(ForwardMode::Bridge) if bridge.is_some() => {
            if port.virtualport.is_some() && vport_kind(port) != Some(VirtualPortType::OpenVswitch)
            {
                return Err(vport_refused(port, net, "a bridge device"));
            }
            port.plug = Some(Plug::Bridge {
                bridge: bridge.unwrap_or_default().to_string(),
                mac_table_manager: mtm,
            });
        }
        Some(ForwardMode::Hostdev) => {
            if port.virtualport.is_some()
                && !matches!(
                    vport_kind(port),
                    Some(VirtualPortType::Qbg | VirtualPortType::Qbh)
                )
            {
                return Err(vport_refused(
                    port,
                    net,
                    "an SR-IOV Virtual Function via PCI passthrough",
                ));
            }
            let fwd = forward.expect("a hostdev network has <forward>");
            let free = fwd.pci_addresses.iter().find(|a| {
                !others.iter().any(
                    |p| matches!(&p.plug, Some(Plug::HostdevPci { address, .. }) if address == *a),
                )
            });
            let Some(address) = free else {
                return Err(Error::Internal(format!(
                    "network '{}' requires exclusive access to interfaces, but none are available",
                    net.name
                )));
            };
            port.plug = Some(Plug::HostdevPci {
                managed: Some(fwd.managed.unwrap_or(false)),
                driver: fwd.driver,
                address: *address,
            });
        }
        Some(m) => {
            // bridge without a bridge name, private, vepa, passthrough: macvtap.
            if port.virtualport.is_some()
                && !matches!(
                    vport_kind(port),
                    Some(VirtualPortType::Qbg | VirtualPortType::Qbh)
                )
            {
                return Err(vport_refused(port, net, "a macvtap device"));
            }
            let fwd = forward.expect("a macvtap network has <forward>");
            if fwd.interfaces.is_empty() {
                return Err(Error::Internal(format!(
                    "network '{}' uses a direct mode, but has no forward dev and no interface pool",
                    net.name
                )));
            }
            let exclusive = m == ForwardMode::Passthrough
                || (m == ForwardMode::Private && vport_kind(port) == Some(VirtualPortType::Qbh));
            let dev = if exclusive {
                fwd.interfaces.iter().find(|d| direct_uses(others, d) == 0)
            } else {
                // The least used; the first of equals.
                fwd.interfaces.iter().min_by_key(|d| direct_uses(others, d))
            };
            let Some(dev) = dev else {
                return Err(Error::Internal(format!(
                    "network '{}' requires exclusive access to interfaces, but none are available",
                    net.name
                )));
            };
            let mode = match m {
                ForwardMode::Private => MacvlanMode::Private,
                ForwardMode::Vepa => MacvlanMode::Vepa,
                ForwardMode::Passthrough => MacvlanMode::Passthrough,
                _ => MacvlanMode::Bridge,
            };
            port.plug = Some(Plug::Direct {
                dev: dev.clone(),
                mode,
            });
        }
    }
    Ok(())
}

/// `networkAllocatePort`'s merging, before the plug is chosen: the VLAN
/// from the port, else its portgroup, else the network; the
/// `<virtualport>` merged from the port's, the network's and the
/// portgroup's; an openvswitch port's missing `interfaceid` generated (what
/// libvirt's QEMU driver then passes to ovs-vsctl as `iface-id`); and
/// `trustGuestRxFilters` from the port, else its portgroup, else the network.
fn merge_port_settings(net: &Network, port: &mut NetworkPort) -> Result<()> {
    let pg = merge::find_portgroup(net, port.group.as_deref());
    port.vlan = merge::port_vlan(port.vlan.as_ref(), pg, net);
    port.trust_guest_rx_filters = port
        .trust_guest_rx_filters
        .or(pg.and_then(|g| g.trust_guest_rx_filters))
        .or(net.trust_guest_rx_filters);
    port.virtualport = merge::merge_virtualports(
        port.virtualport.as_ref(),
        net.virtualport.as_ref(),
        pg.and_then(|p| p.virtualport.as_ref()),
    )
    .map_err(|e| Error::XmlFragment(e.to_string()))?;
    if let Some(vp) = &mut port.virtualport {
        merge::generate_missing_ids(vp);
    }
    Ok(())
}

/// `networkNotifyPort`: a reclaimed port's plug must fit the network.
fn check_reclaim(net: &Network, port: &NetworkPort, others: &[NetworkPort]) -> Result<()> {
    let internal = |m: String| Err(Error::Internal(m));
    match &port.plug {
        None => unreachable!("a reclaimed port has a plug (checked before)"),
        Some(Plug::Network { .. } | Plug::Bridge { .. }) => {
            if net.bridge_name().is_none() {
                return internal("Unexpectedly got a network port without a network bridge".into());
            }
        }
        Some(Plug::Direct { dev, .. }) => {
            let fwd = net.forward.as_ref();
            if !fwd.is_some_and(|f| f.interfaces.contains(dev)) {
                return internal(format!(
                    "network '{}' doesn't have dev='{dev}' in use by network port '{}'",
                    net.name, port.uuid
                ));
            }
            let exclusive = net.forward_mode() == Some(ForwardMode::Passthrough)
                || (net.forward_mode() == Some(ForwardMode::Private)
                    && vport_kind(port) == Some(VirtualPortType::Qbh));
            if exclusive && direct_uses(others, dev) > 0 {
                return internal(format!(
                    "network '{}' claims dev='{dev}' is already in use by a different port",
                    net.name
                ));
            }
        }
        Some(Plug::HostdevPci { address, .. }) => {
            let fwd = net.forward.as_ref();
            if !fwd.is_some_and(|f| f.pci_addresses.contains(address)) {
                return internal(format!(
                    "network '{}' doesn't have PCI device {address} in use by network port",
                    net.name
                ));
            }
            let used = others.iter().any(
                |p| matches!(&p.plug, Some(Plug::HostdevPci { address: a, .. }) if a == address),
            );
            if used {
                return internal(format!(
                    "network '{}' claims the PCI device at domain={} bus={} slot={} function={} is already in use by a different network port",
                    net.name, address.domain, address.bus, address.slot, address.function
                ));
            }
        }
    }
    Ok(())
}

impl Manager {
    /// Creates a port on running network `network` from its XML
    /// (`virNetworkPortCreateXML`), with libvirt's checks in libvirt's
    /// order: the XML parses (and, with `flags.validate`, has nothing the
    /// model ignores), the network runs, a port without a plug is created
    /// only without `flags.reclaim` and one with a plug only with it, the
    /// plug is allocated from the network (or, reclaimed, checked against
    /// it), a `floor` needs the network's QoS, the UUID is new. Beyond
    /// libvirt: no two ports of a network may have the same MAC address
    /// (libvirt 9.0 lets them, and the guests then break each other's
    /// traffic and DHCP leases), and a network holds at most
    /// [`MAX_PORTS_PER_NETWORK`] ports. Returns the port and warnings
    /// about ignored XML.
    pub fn port_create(
        &self,
        network: &Lookup,
        xml: &str,
        flags: PortCreateFlags,
    ) -> Result<(PortRef, Vec<String>)> {
        if xml.len() > MAX_PORT_XML {
            return Err(Error::InvalidArg(format!(
                "network port XML of {} bytes is larger than the {MAX_PORT_XML} bytes slipway accepts",
                xml.len()
            )));
        }
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(network)?;
        let mut port = NetworkPort::from_xml(xml)?;
        if flags.validate {
            if let Some(path) = port.unknown.first() {
                return Err(Error::Xml(slipway_netxml::XmlError::Unknown {
                    path: path.clone(),
                }));
            }
        }
        let warnings: Vec<String> = port
            .unknown
            .iter()
            .map(|p| format!("unknown element or attribute {p} ignored"))
            .collect();
        let net = e.running(name)?;
        match (&port.plug, flags.reclaim) {
            (None, true) => {
                return Err(Error::InvalidArg(
                    "Port reclaim requested but plug type is none".into(),
                ))
            }
            (Some(_), false) => {
                return Err(Error::InvalidArg(
                    "Port reclaim not requested but plug type is not none".into(),
                ))
            }
            _ => {}
        }
        let dir = self.paths.port_dir(name);
        let others = load_ports(&dir);
        if others.iter().any(|p| p.uuid == port.uuid) {
            return Err(Error::PortExists(port.uuid.to_string()));
        }
        if flags.reclaim {
            check_reclaim(net, &port, &others)?;
        } else {
            allocate(net, &mut port, &others)?;
        }
        if port.bandwidth.is_none() {
            // The portgroup's, as networkAllocatePort copies it.
            port.bandwidth = port_group_bandwidth(net, &port);
        }
        if port.isolated.is_none() {
            port.isolated = net.port_isolated;
        }
        let floor = check_floor(net, &port, &others, port.bandwidth.map_or(0, |b| b.floor()))?;
        if let (Some(bw), Some(f)) = (port.bandwidth.as_mut(), &floor) {
            bw.class_id = f.class;
        }
        if let Some(other) = others.iter().find(|p| p.mac == port.mac) {
            return Err(Error::NotValid(format!(
                "MAC address {} is already in use on network '{name}' by port {} of '{}'",
                port.mac, other.uuid, other.owner_name
            )));
        }
        if others.len() >= MAX_PORTS_PER_NETWORK {
            return Err(Error::NotValid(format!(
                "network '{name}' already has {} ports, the most slipway allows on one network",
                others.len()
            )));
        }
        self.backend.port_added(net, &port)?;
        if let Some(f) = &floor {
            if let Err(e) = self.backend.plug_floor(f) {
                if let Err(undo) = self.backend.port_removed(net, &port) {
                    tracing::error!("could not undo port {} of {name}: {undo}", port.uuid);
                }
                return Err(e);
            }
        }
        if let Err(e) = fsutil::write_atomic(
            &dir.join(format!("{}.xml", port.uuid)),
            port.to_xml().as_bytes(),
        ) {
            if let Some(f) = floor {
                let rest = f.rest.saturating_add(f.floor);
                let _ = self.backend.unplug_floor(&FloorClass { rest, ..f });
            }
            if let Err(undo) = self.backend.port_removed(net, &port) {
                tracing::error!("could not undo port {} of {name}: {undo}", port.uuid);
            }
            return Err(e);
        }
        Ok((
            PortRef {
                network: name.clone(),
                uuid: port.uuid,
            },
            warnings,
        ))
    }

    /// Reads the port `uuid` of `network` under the shared lock: the
    /// network's name, the network as it runs, and the port; with
    /// libvirt's errors (no such port, then network not active).
    fn with_port<T>(
        &self,
        network: &Lookup,
        uuid: uuid::Uuid,
        f: impl FnOnce(&str, &Network, &NetworkPort) -> Result<T>,
    ) -> Result<T> {
        let (_g, inv) = self.store().locked(false)?;
        let (name, e) = inv.find(network)?;
        let ports = load_ports(&self.paths.port_dir(name));
        let port = find(&ports, uuid)?;
        let net = e.running(name)?;
        f(name, net, port)
    }

    /// Looks up port `uuid` of `network` (`virNetworkPortLookupByUUID`).
    pub fn port_lookup(&self, network: &Lookup, uuid: uuid::Uuid) -> Result<PortRef> {
        self.with_port(network, uuid, |name, _, p| {
            Ok(PortRef {
                network: name.to_string(),
                uuid: p.uuid,
            })
        })
    }

    /// The port's XML as libvirt formats it (`virNetworkPortGetXMLDesc`),
    /// plug included: what libvirt's QEMU driver reads back after creating
    /// a port.
    pub fn port_xml(&self, network: &Lookup, uuid: uuid::Uuid) -> Result<String> {
        self.with_port(network, uuid, |_, _, p| Ok(p.to_xml()))
    }

    /// The port's bandwidth as libvirt's typed parameters
    /// (`virNetworkPortGetParameters`).
    pub fn port_parameters(&self, network: &Lookup, uuid: uuid::Uuid) -> Result<PortParameters> {
        self.with_port(network, uuid, |_, _, p| {
            Ok(PortParameters::of_bandwidth(p.bandwidth.as_ref()))
        })
    }

    /// The UUIDs of the ports of running network `network`, sorted
    /// (`virNetworkListAllPorts`, in virsh's order).
    pub fn port_list(&self, network: &Lookup) -> Result<Vec<uuid::Uuid>> {
        let (_g, inv) = self.store().locked(false)?;
        let (name, e) = inv.find(network)?;
        e.running(name)?;
        Ok(load_ports(&self.paths.port_dir(name))
            .iter()
            .map(|p| p.uuid)
            .collect())
    }

    /// Deletes port `uuid` of `network`, releasing what it held
    /// (`virNetworkPortDelete`).
    pub fn port_delete(&self, network: &Lookup, uuid: uuid::Uuid) -> Result<PortRef> {
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(network)?;
        let dir = self.paths.port_dir(name);
        let ports = load_ports(&dir);
        let port = find(&ports, uuid)?;
        let net = e.running(name)?;
        self.backend.port_removed(net, port)?;
        atomic::remove(&dir.join(format!("{uuid}.xml")))?;
        if let Some(f) = held_floor(net, port, &ports) {
            if let Err(e) = self.backend.unplug_floor(&f) {
                tracing::warn!("port {uuid}: {e}");
            }
        }
        Ok(PortRef {
            network: name.clone(),
            uuid,
        })
    }

    /// Replaces the port's bandwidth with `params`
    /// (`virNetworkPortSetParameters`): a change of `floor` is checked
    /// against the network's QoS as at creation.
    pub fn port_set_parameters(
        &self,
        network: &Lookup,
        uuid: uuid::Uuid,
        params: &PortParameters,
    ) -> Result<PortRef> {
        let (_g, inv) = self.store().locked(true)?;
        let (name, e) = inv.find(network)?;
        let dir = self.paths.port_dir(name);
        let ports = load_ports(&dir);
        let port = find(&ports, uuid)?;
        let net = e.running(name)?;
        let old = port.bandwidth;
        let class_id = old.map_or(0, |b| b.class_id);
        let new = params.to_bandwidth(class_id);
        let new_floor = new.map_or(0, |b| b.floor());
        let mut new = new;
        if new_floor != old.map_or(0, |b| b.floor()) {
            // libvirt's networkUpdatePortBandwidth: checked first, then the
            // old class goes and the new one comes.
            let floor = check_floor(net, port, &ports, new_floor)?;
            let held = held_floor(net, port, &ports);
            if let Some(h) = &held {
                self.backend.unplug_floor(h)?;
            }
            if let Some(f) = &floor {
                if let Err(e) = self.backend.plug_floor(f) {
                    if let Some(h) = &held {
                        let back = FloorClass {
                            rest: h.rest.saturating_sub(h.floor),
                            ..h.clone()
                        };
                        let _ = self.backend.plug_floor(&back);
                    }
                    return Err(e);
                }
                if let Some(bw) = new.as_mut() {
                    bw.class_id = f.class;
                }
            } else if let Some(bw) = new.as_mut() {
                bw.class_id = 0;
            }
        }
        let mut port = port.clone();
        port.bandwidth = new;
        fsutil::write_atomic(&dir.join(format!("{uuid}.xml")), port.to_xml().as_bytes())?;
        Ok(PortRef {
            network: name.clone(),
            uuid,
        })
    }

    /// Removes every port of network `name` (it stopped, or is starting
    /// afresh), as libvirt's `virNetworkObjDeleteAllPorts`. With `net`, the
    /// network the ports were on, the backend undoes each port first
    /// (failures are logged: the network goes anyway).
    pub(super) fn remove_all_ports(&self, name: &str, net: Option<&Network>) -> Result<()> {
        let dir = self.paths.port_dir(name);
        if let Some(net) = net {
            for port in load_ports(&dir) {
                if let Err(e) = self.backend.port_removed(net, &port) {
                    tracing::warn!("network {name}: cannot undo port {}: {e}", port.uuid);
                }
            }
        }
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    atomic::remove(&e.path())?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("cannot read", &dir, e)),
        }
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", &dir, e)),
        }
        // The parent goes too once no network has ports (it fails, and
        // stays, while another has).
        let _ = fs::remove_dir(self.paths.state_dir.join("ports"));
        Ok(())
    }

    /// At daemon start, for running network `net`: the backend is told
    /// of each of its ports again (adding nothing that is there: an OVN
    /// logical switch port lost while the daemon was down comes back).
    pub(super) fn readd_ports(&self, net: &Network) {
        for port in load_ports(&self.paths.port_dir(&net.name)) {
            if let Err(e) = self.backend.port_added(net, &port) {
                tracing::warn!("network {}: port {}: {e}", net.name, port.uuid);
            }
        }
    }

    /// At daemon start: the ports of networks that are not running (a stop
    /// that did not finish) are removed.
    pub(super) fn recover_ports(&self, inv: &Inventory) -> Result<()> {
        let Ok(entries) = fs::read_dir(self.paths.state_dir.join("ports")) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let running = inv.nets.get(&name).is_some_and(|n| n.live.is_some());
            if running {
                for p in atomic::clean_stale(&e.path()) {
                    tracing::info!("removed leftover temporary file {}", p.display());
                }
            } else {
                tracing::info!("removing the ports of network {name}, which is not running");
                let net = inv.nets.get(&name).map(Entry::current);
                self.remove_all_ports(&name, net)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Paths;
    use crate::portapi::{PortParam, RateParams};
    use crate::realize::RecordingBackend;

    const NET: &str = "<network><name>n</name><uuid>11111111-2222-3333-4444-555555555555</uuid>\
        <forward mode='nat'/><bridge name='br-n' macTableManager='libvirt'/>\
        <ip address='10.9.0.1' prefix='24'/></network>";

    fn port_xml(uuid: &str, mac: &str, extra: &str) -> String {
        format!(
            "<networkport><uuid>{uuid}</uuid><owner><name>vm1</name>\
             <uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid></owner>\
             <mac address='{mac}'/>{extra}</networkport>"
        )
    }

    const P1: &str = "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d";
    const P2: &str = "0d744f21-ba4a-4d6e-bdb2-30a35ff3207d";

    fn uuid(s: &str) -> uuid::Uuid {
        s.parse().unwrap()
    }

    /// A manager under a temporary root with network `n` defined (not started).
    fn setup(net: &str) -> (tempfile::TempDir, Manager) {
        let dir = tempfile::tempdir().unwrap();
        let m = Manager::new(Paths::detect(Some(dir.path())), Box::new(RecordingBackend));
        m.define(net, false).unwrap();
        (dir, m)
    }

    fn create(m: &Manager, xml: &str) -> Result<PortRef> {
        m.port_create(&Lookup::any("n"), xml, PortCreateFlags::default())
            .map(|(p, _)| p)
    }

    #[test]
    fn openvswitch_ports_get_merged_virtualport_generated_interfaceid_and_vlan() {
        let (_d, m) = setup(
            "<network><name>n</name><forward mode='bridge'/><bridge name='ovsbr0'/>\
             <virtualport type='openvswitch'/>\
             <portgroup name='blue'><vlan><tag id='42'/></vlan>\
             <virtualport type='openvswitch'><parameters profileid='gold'/></virtualport></portgroup>\
             <portgroup name='red'><virtualport type='802.1Qbh'/></portgroup></network>",
        );
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        create(
            &m,
            &port_xml(P1, "52:54:00:00:00:01", "<group>blue</group>"),
        )
        .unwrap();
        let xml = m.port_xml(&n, uuid(P1)).unwrap();
        let port = NetworkPort::from_xml(&xml).unwrap();
        let vp = port.virtualport.clone().expect("merged virtualport");
        assert_eq!(vp.kind, Some(VirtualPortType::OpenVswitch));
        assert_eq!(vp.profile_id.as_deref(), Some("gold"));
        let id = vp.interface_id.expect("a generated interfaceid");
        assert!(
            xml.contains(&format!(
                "<virtualport type='openvswitch'>\n    <parameters interfaceid='{id}' profileid='gold'/>"
            )),
            "{xml}"
        );
        assert!(
            xml.contains("<vlan>\n    <tag id='42'/>\n  </vlan>"),
            "{xml}"
        );
        assert!(
            xml.contains("<plug type='bridge' bridge='ovsbr0'/>"),
            "{xml}"
        );
        // An interfaceid given is kept; no portgroup: no VLAN.
        let given = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f";
        create(
            &m,
            &port_xml(
                P2,
                "52:54:00:00:00:02",
                &format!("<virtualport><parameters interfaceid='{given}'/></virtualport>"),
            ),
        )
        .unwrap();
        let p2 = NetworkPort::from_xml(&m.port_xml(&n, uuid(P2)).unwrap()).unwrap();
        assert_eq!(
            p2.virtualport.unwrap().interface_id,
            Some(given.parse().unwrap())
        );
        assert_eq!(p2.vlan, None);
        // A portgroup whose virtualport type is not the network's.
        let e = create(
            &m,
            &port_xml(
                "1d744f21-ba4a-4d6e-bdb2-30a35ff3207d",
                "52:54:00:00:00:03",
                "<group>red</group>",
            ),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "XML error: attempt to merge virtualports with mismatched types (openvswitch and 802.1Qbh)"
        );
    }

    #[test]
    fn create_list_dump_delete_and_destroy() {
        let (_d, m) = setup(NET);
        let n = Lookup::any("n");
        // libvirt's order: the XML first, then the network's state.
        let e = create(&m, "<networkport/>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1, column 1: /networkport: network port has no uuid"
        );
        let e = create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Requested operation is not valid: network 'n' is not active"
        );
        assert!(matches!(m.port_list(&n), Err(Error::NotValid(_))));
        m.start(&n).unwrap();
        assert!(m.port_list(&n).unwrap().is_empty());

        let p = create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap();
        assert_eq!((p.network.as_str(), p.uuid), ("n", uuid(P1)));
        // The plug comes from the network, as libvirt's networkAllocatePort.
        let xml = m.port_xml(&n, uuid(P1)).unwrap();
        assert!(
            xml.ends_with("  <mac address='52:54:00:00:00:01'/>\n  <plug type='network' bridge='br-n' macTableManager='libvirt'/>\n</networkport>\n"),
            "{xml}"
        );
        create(&m, &port_xml(P2, "52:54:00:00:00:02", "")).unwrap();
        // Sorted by UUID, as virsh sorts.
        assert_eq!(m.port_list(&n).unwrap(), vec![uuid(P2), uuid(P1)]);
        assert_eq!(m.port_lookup(&n, uuid(P1)).unwrap().uuid, uuid(P1));

        let e = create(&m, &port_xml(P1, "52:54:00:00:00:03", "")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("network port Network port with UUID {P1} already exists exists already")
        );
        assert_eq!(e.code(), crate::ErrorCode::Conflict);

        assert_eq!(m.port_delete(&n, uuid(P1)).unwrap().uuid, uuid(P1));
        let e = m.port_xml(&n, uuid(P1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("network port not found: Network port with UUID {P1} does not exist")
        );
        assert_eq!(e.code(), crate::ErrorCode::PortNotFound);
        assert!(matches!(
            m.port_delete(&n, uuid(P1)),
            Err(Error::NoSuchPort(_))
        ));

        // Destroying the network removes its ports (libvirt's networkDestroy).
        m.destroy(&n).unwrap();
        assert!(!m.paths().port_dir("n").exists());
        assert!(matches!(
            m.port_xml(&n, uuid(P2)),
            Err(Error::NoSuchPort(_))
        ));
        m.start(&n).unwrap();
        assert!(m.port_list(&n).unwrap().is_empty());
    }

    #[test]
    fn ports_survive_a_restart_and_undefine_but_not_a_stop_that_crashed() {
        let (d, m) = setup(NET);
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap();
        let file = m.paths().port_dir("n").join(format!("{P1}.xml"));
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            m.port_xml(&n, uuid(P1)).unwrap()
        );
        // A new manager (a restarted daemon) finds the port.
        let m2 = Manager::new(Paths::detect(Some(d.path())), Box::new(RecordingBackend));
        m2.recover().unwrap();
        assert_eq!(m2.port_list(&n).unwrap(), vec![uuid(P1)]);
        // Undefining the running network keeps it running, ports included.
        m2.undefine(&n).unwrap();
        assert_eq!(m2.port_list(&n).unwrap(), vec![uuid(P1)]);
        // Ports of a network that is not running are stale at recovery.
        fs::create_dir_all(m2.paths().port_dir("gone")).unwrap();
        fs::write(m2.paths().port_dir("gone").join(format!("{P2}.xml")), "x").unwrap();
        m2.recover().unwrap();
        assert!(!m2.paths().port_dir("gone").exists());
        assert!(file.exists());
    }

    #[test]
    fn libvirts_checks_and_slipways_mac_rule() {
        let (_d, m) = setup(NET);
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap();
        // Two ports with one MAC: slipway refuses (libvirt 9.0 does not).
        let e = create(&m, &port_xml(P2, "52:54:00:00:00:01", "")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("Requested operation is not valid: MAC address 52:54:00:00:00:01 is already in use on network 'n' by port {P1} of 'vm1'")
        );
        // A plug without reclaim, none with it.
        let plugged = port_xml(
            P2,
            "52:54:00:00:00:02",
            "<plug type='network' bridge='br-n'/>",
        );
        let e = create(&m, &plugged).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument: Port reclaim not requested but plug type is not none"
        );
        let reclaim = PortCreateFlags {
            reclaim: true,
            validate: false,
        };
        let e = m
            .port_create(&n, &port_xml(P2, "52:54:00:00:00:02", ""), reclaim)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument: Port reclaim requested but plug type is none"
        );
        // Reclaiming keeps the plug as given (a restarted VM driver).
        m.port_create(&n, &plugged, reclaim).unwrap();
        assert!(m
            .port_xml(&n, uuid(P2))
            .unwrap()
            .contains("<plug type='network' bridge='br-n'/>"));
        m.port_delete(&n, uuid(P2)).unwrap();
        // A floor needs the network's inbound QoS, which slipway networks never have.
        let e = create(
            &m,
            &port_xml(
                P2,
                "52:54:00:00:00:02",
                "<bandwidth><inbound average='10' floor='5'/></bandwidth>",
            ),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Operation not supported: Invalid use of 'floor' on interface with MAC address 52:54:00:00:00:02 - network 'n' has no inbound QoS set");
        let e = create(
            &m,
            &port_xml(P2, "52:54:00:00:00:02", "<virtualport type='openvswitch'/>"),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "unsupported configuration: <virtualport type='openvswitch'> not supported for network 'n' which uses IP forwarding");
        // --validate refuses what the model ignores; without it, a warning.
        let odd = port_xml(P2, "52:54:00:00:00:02", "<foo/>");
        let strict = PortCreateFlags {
            reclaim: false,
            validate: true,
        };
        assert!(matches!(
            m.port_create(&n, &odd, strict),
            Err(Error::Xml(slipway_netxml::XmlError::Unknown { .. }))
        ));
        let (_, warnings) = m.port_create(&n, &odd, PortCreateFlags::default()).unwrap();
        assert_eq!(
            warnings,
            vec!["unknown element or attribute /networkport/foo ignored"]
        );
        // Nothing else was written by the refusals.
        assert_eq!(m.port_list(&n).unwrap(), vec![uuid(P2), uuid(P1)]);
        // Oversized XML is refused before it is parsed.
        let big = port_xml(P2, "52:54:00:00:00:09", &" ".repeat(MAX_PORT_XML));
        assert!(matches!(create(&m, &big), Err(Error::InvalidArg(_))));
    }

    /// libvirt's floor accounting: floors add up against the network's
    /// inbound average, each gets the lowest free class from 3, one that
    /// does not fit is refused with libvirt's words; the network's port
    /// isolation is copied into its ports.
    #[test]
    fn floors_are_reserved_against_the_networks_inbound_average() {
        let net = NET.replace(
            "<ip ",
            "<bandwidth><inbound average='1000'/></bandwidth><port isolated='yes'/><ip ",
        );
        let (_d, m) = setup(&net);
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        let floor = |f: u64| format!("<bandwidth><inbound floor='{f}'/></bandwidth>");
        create(&m, &port_xml(P1, "52:54:00:00:00:01", &floor(600))).unwrap();
        let xml = m.port_xml(&n, uuid(P1)).unwrap();
        assert!(
            xml.contains("<bandwidth classID='3'>\n    <inbound floor='600'/>"),
            "{xml}"
        );
        assert!(xml.contains("<port isolated='yes'/>"), "{xml}");
        let e = create(&m, &port_xml(P2, "52:54:00:00:00:02", &floor(401))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Requested operation is not valid: Cannot plug '52:54:00:00:00:02' interface into 'br-n' because new combined inbound floor=1001 would overcommit average=1000 on network 'n'"
        );
        create(&m, &port_xml(P2, "52:54:00:00:00:02", &floor(400))).unwrap();
        assert!(m.port_xml(&n, uuid(P2)).unwrap().contains("classID='4'"));
        // Raising a floor counts the others, not the port's old one.
        let up = PortParameters::from_list(&[
            (PortParam::InboundAverage, 10),
            (PortParam::InboundFloor, 601),
        ]);
        assert!(m.port_set_parameters(&n, uuid(P1), &up).is_err());
        let same = PortParameters::from_list(&[
            (PortParam::InboundAverage, 10),
            (PortParam::InboundFloor, 500),
        ]);
        m.port_set_parameters(&n, uuid(P1), &same).unwrap();
        assert!(m.port_xml(&n, uuid(P1)).unwrap().contains("classID='3'"));
    }

    /// A port without `<bandwidth>` takes its portgroup's (named, else the
    /// default one), as networkAllocatePort copies it.
    #[test]
    fn a_port_takes_its_portgroups_bandwidth() {
        let net = NET.replace(
            "<ip ",
            "<portgroup name='slow' default='yes'><bandwidth><inbound average='100'/></bandwidth></portgroup>\
             <portgroup name='fast'><bandwidth><outbound average='900'/></bandwidth></portgroup><ip ",
        );
        let (_d, m) = setup(&net);
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap();
        let xml = m.port_xml(&n, uuid(P1)).unwrap();
        assert!(xml.contains("<inbound average='100'/>"), "{xml}");
        create(
            &m,
            &port_xml(P2, "52:54:00:00:00:02", "<group>fast</group>"),
        )
        .unwrap();
        let xml = m.port_xml(&n, uuid(P2)).unwrap();
        assert!(xml.contains("<outbound average='900'/>"), "{xml}");
        assert!(!xml.contains("inbound"), "{xml}");
    }

    /// `trustGuestRxFilters` comes from the port, else its portgroup,
    /// else the network, as `networkAllocatePort` copies it.
    #[test]
    fn a_port_takes_trust_guest_rx_filters_from_its_portgroup_or_network() {
        let net = NET
            .replace("<network>", "<network trustGuestRxFilters='no'>")
            .replace(
                "<ip ",
                "<portgroup name='trusted' trustGuestRxFilters='yes'/><portgroup name='plain'/><ip ",
            );
        let (_d, m) = setup(&net);
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        const P3: &str = "1d744f21-ba4a-4d6e-bdb2-30a35ff3207d";
        let cases = [
            (P1, "52:54:00:00:00:01", "<group>trusted</group>", "yes"),
            (P2, "52:54:00:00:00:02", "<group>plain</group>", "no"),
            (
                P3,
                "52:54:00:00:00:03",
                "<group>trusted</group><rxfilters trustGuest='no'/>",
                "no",
            ),
        ];
        for (id, mac, extra, want) in cases {
            create(&m, &port_xml(id, mac, extra)).unwrap();
            let xml = m.port_xml(&n, uuid(id)).unwrap();
            assert!(
                xml.contains(&format!("<rxfilters trustGuest='{want}'/>")),
                "{extra}: {xml}"
            );
        }
    }

    #[test]
    fn bandwidth_parameters() {
        let (_d, m) = setup(NET);
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        create(
            &m,
            &port_xml(
                P1,
                "52:54:00:00:00:01",
                "<bandwidth classID='3'><inbound average='1000' peak='4000' burst='1024'/></bandwidth>",
            ),
        )
        .unwrap();
        let p = m.port_parameters(&n, uuid(P1)).unwrap();
        assert_eq!(
            p.to_list(),
            vec![
                (PortParam::InboundAverage, 1000),
                (PortParam::InboundPeak, 4000),
                (PortParam::InboundFloor, 0),
                (PortParam::InboundBurst, 1024),
            ]
        );
        let new = PortParameters {
            inbound: None,
            outbound: Some(RateParams {
                average: 128,
                peak: 256,
                floor: 0,
                burst: 0,
            }),
        };
        m.port_set_parameters(&n, uuid(P1), &new).unwrap();
        assert_eq!(m.port_parameters(&n, uuid(P1)).unwrap(), new);
        assert!(m.port_xml(&n, uuid(P1)).unwrap().contains(
            "  <bandwidth classID='3'>\n    <outbound average='128' peak='256'/>\n  </bandwidth>\n"
        ));
        let floor = PortParameters::from_list(&[(PortParam::InboundFloor, 10)]);
        assert!(matches!(
            m.port_set_parameters(&n, uuid(P1), &floor),
            Err(Error::Unsupported(_))
        ));
        m.port_set_parameters(&n, uuid(P1), &PortParameters::default())
            .unwrap();
        assert!(!m.port_xml(&n, uuid(P1)).unwrap().contains("bandwidth"));
    }

    /// macvtap and hostdev networks hand out devices of their pool as
    /// libvirt does: the least used, or a free one where use is exclusive.
    #[test]
    fn pools_hand_out_devices() {
        let (_d, m) = setup(
            "<network><name>n</name><forward mode='vepa'><interface dev='eth1'/><interface dev='eth2'/></forward></network>",
        );
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        for (i, p) in [P1, P2, "1d744f21-ba4a-4d6e-bdb2-30a35ff3207d"]
            .iter()
            .enumerate()
        {
            create(&m, &port_xml(p, &format!("52:54:00:00:00:0{i}"), "")).unwrap();
        }
        let devs: Vec<String> = [P1, P2, "1d744f21-ba4a-4d6e-bdb2-30a35ff3207d"]
            .iter()
            .map(|p| m.port_xml(&n, uuid(p)).unwrap())
            .map(|x| {
                x.lines()
                    .find(|l| l.contains("<plug"))
                    .unwrap()
                    .trim()
                    .to_string()
            })
            .collect();
        assert_eq!(
            devs,
            [
                "<plug type='direct' dev='eth1' mode='vepa'/>",
                "<plug type='direct' dev='eth2' mode='vepa'/>",
                "<plug type='direct' dev='eth1' mode='vepa'/>",
            ]
        );

        // The pool's device must be an SR-IOV virtual function (libvirtd's
        // define-time check): a stand-in sysfs says it is.
        let sys = tempfile::tempdir().unwrap();
        fs::create_dir_all(sys.path().join("0000:02:03.4/physfn")).unwrap();
        let d = tempfile::tempdir().unwrap();
        let m = Manager::new(Paths::detect(Some(d.path())), Box::new(RecordingBackend))
            .with_pci_devices(sys.path());
        m.define(
            "<network><name>n</name><forward mode='hostdev' managed='yes'><driver name='vfio'/>\
             <address type='pci' domain='0' bus='2' slot='3' function='4'/></forward></network>",
            false,
        )
        .unwrap();
        m.start(&n).unwrap();
        create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap();
        assert!(m.port_xml(&n, uuid(P1)).unwrap().contains(
            "  <plug type='hostdev-pci' managed='yes'>\n    <driver name='vfio'/>\n    <address domain='0x0000' bus='0x02' slot='0x03' function='0x4'/>\n  </plug>\n"
        ));
        let e = create(&m, &port_xml(P2, "52:54:00:00:00:02", "")).unwrap_err();
        assert_eq!(e.to_string(), "internal error: network 'n' requires exclusive access to interfaces, but none are available");
    }

    /// The per-network bound, and port files that cannot be read.
    #[test]
    fn port_count_is_bounded_and_bad_files_are_skipped() {
        let (_d, m) = setup(NET);
        let n = Lookup::any("n");
        m.start(&n).unwrap();
        let dir = m.paths().port_dir("n");
        fs::create_dir_all(&dir).unwrap();
        // Files planted directly (as many ports as allowed), quicker than
        // 4096 crash-safe creations.
        for i in 0..MAX_PORTS_PER_NETWORK {
            let u = uuid::Uuid::from_u128(i as u128 + 1);
            let mac = format!("52:54:01:00:{:02x}:{:02x}", i >> 8, i & 0xff);
            fs::write(
                dir.join(format!("{u}.xml")),
                port_xml(&u.to_string(), &mac, ""),
            )
            .unwrap();
        }
        assert_eq!(m.port_list(&n).unwrap().len(), MAX_PORTS_PER_NETWORK);
        let e = create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Requested operation is not valid: network 'n' already has 4096 ports, the most slipway allows on one network"
        );
        // A file that does not parse, or holds another port, is skipped.
        let first = uuid::Uuid::from_u128(1);
        fs::write(dir.join(format!("{first}.xml")), "<networkport><uuid>").unwrap();
        fs::write(
            dir.join(format!("{P2}.xml")),
            port_xml(P1, "52:54:00:00:00:01", ""),
        )
        .unwrap();
        let listed = m.port_list(&n).unwrap();
        assert_eq!(listed.len(), MAX_PORTS_PER_NETWORK - 1);
        assert!(!listed.contains(&first) && !listed.contains(&uuid(P2)));
        assert!(matches!(m.port_xml(&n, first), Err(Error::NoSuchPort(_))));
    }

    /// A backend whose port hooks are recorded, and `port_added` fails
    /// while `refuse` is set (an OVN database that is down).
    #[derive(Default)]
    struct PortHooks {
        log: std::sync::Mutex<Vec<String>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl crate::realize::Backend for std::sync::Arc<PortHooks> {
        fn name(&self) -> &'static str {
            "none"
        }
        fn check(&self, p: &crate::Plan) -> Result<()> {
            RecordingBackend.check(p)
        }
        fn start(&self, p: &crate::Plan) -> Result<crate::LiveState> {
            RecordingBackend.start(p)
        }
        fn stop(&self, l: &crate::LiveState) -> Result<()> {
            self.log.lock().unwrap().push("stop".into());
            RecordingBackend.stop(l)
        }
        fn recover(&self, l: &crate::LiveState) -> Result<()> {
            RecordingBackend.recover(l)
        }
        fn service_exit(&self, l: &crate::LiveState) -> Result<Option<String>> {
            RecordingBackend.service_exit(l)
        }
        fn update_live(&self, p: &crate::Plan) -> Result<()> {
            RecordingBackend.update_live(p)
        }
        fn plug_floor(&self, f: &crate::shaping::FloorClass) -> Result<()> {
            RecordingBackend.plug_floor(f)
        }
        fn unplug_floor(&self, f: &crate::shaping::FloorClass) -> Result<()> {
            RecordingBackend.unplug_floor(f)
        }
        fn port_added(&self, _net: &Network, port: &NetworkPort) -> Result<()> {
            if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::Internal("OVN: database down".into()));
            }
            self.log.lock().unwrap().push(format!("add {}", port.uuid));
            Ok(())
        }
        fn port_removed(&self, _net: &Network, port: &NetworkPort) -> Result<()> {
            self.log
                .lock()
                .unwrap()
                .push(format!("remove {}", port.uuid));
            Ok(())
        }
    }

    /// The backend hears of every port: a port it refuses is not created
    /// (no file); deletion, a stop (ports before the network) and a
    /// daemon's recovery (each port again) reach it.
    #[test]
    fn the_backend_hears_of_ports_and_can_refuse_them() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = std::sync::Arc::new(PortHooks::default());
        let m = Manager::new(Paths::detect(Some(dir.path())), Box::new(hooks.clone()));
        m.define(
            "<network><name>n</name><forward mode='bridge'/><bridge name='br-int'/>\
             <virtualport type='openvswitch'/></network>",
            false,
        )
        .unwrap();
        m.start(&Lookup::any("n")).unwrap();
        hooks
            .refuse
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let e = create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap_err();
        assert!(e.to_string().contains("database down"), "{e}");
        assert!(m.port_list(&Lookup::any("n")).unwrap().is_empty());
        hooks
            .refuse
            .store(false, std::sync::atomic::Ordering::SeqCst);
        create(&m, &port_xml(P1, "52:54:00:00:00:01", "")).unwrap();
        create(&m, &port_xml(P2, "52:54:00:00:00:02", "")).unwrap();
        m.port_delete(&Lookup::any("n"), uuid(P2)).unwrap();
        m.recover().unwrap();
        m.destroy(&Lookup::any("n")).unwrap();
        assert_eq!(
            *hooks.log.lock().unwrap(),
            [
                format!("add {P1}"),
                format!("add {P2}"),
                format!("remove {P2}"),
                format!("add {P1}"),
                format!("remove {P1}"),
                "stop".to_string(),
            ]
        );
    }
}
