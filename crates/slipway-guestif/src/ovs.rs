//! Guest taps on Open vSwitch bridges, as libvirt's QEMU driver plugs them
//! (`qemuInterfaceBridgeConnect` → `virNetDevTapCreateInBridgePort` →
//! `virNetDevOpenvswitchAddPort` in libvirt 9.0).
//!
//! Theory of operation: a tap goes on Open vSwitch instead of a Linux
//! bridge when its interface's `<virtualport>` is `openvswitch`: for
//! `type='bridge'`, the interface's own (the bridge is an OVS bridge);
//! for `type='network'`, the one libvirt's network driver arrives at
//! (`networkAllocatePort`: the interface's merged with the network's and
//! its portgroup's, slipway-netxml's `merge`), which only a
//! `<forward mode='bridge'/>` network with a `<bridge name>` can have.
//! [`resolve`] decides this, and checks every name, before a tap exists;
//! [`plug`] then adds the up tap to the bridge with libvirt's external-ids
//! (`iface-id` the merged `interfaceid`, generated when none is given;
//! `vm-id` the domain's `<uuid>`) and VLAN, through
//! `slipway_hostnet::ovs`. The launcher records each port before plugging
//! it and removes it when the VM ends; a record left by a launcher that
//! was killed is cleaned up by the next launch ([`remove_stale`]).

use slipway_hostnet::ovs::{Ovs, OvsName, OvsPort, ProfileId};
use slipway_netxml::interface::Interface;
use slipway_netxml::{merge, ForwardMode, MacAddr, Network, VirtualPort, VirtualPortType, Vlan};

/// What an `<interface>` asks of its port: `<source portgroup>`,
/// `<virtualport>`, `<vlan>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortRequest {
    /// `<source portgroup>` (type='network').
    pub portgroup: Option<String>,
    /// `<virtualport>`.
    pub virtualport: Option<VirtualPort>,
    /// `<vlan>`.
    pub vlan: Option<Vlan>,
}

impl PortRequest {
    /// The request of interface `i`.
    pub fn of(i: &Interface) -> PortRequest {
        PortRequest {
            portgroup: i.portgroup.clone(),
            virtualport: i.virtualport.clone(),
            vlan: i.vlan.clone(),
        }
    }
}

/// Where and how a tap goes on Open vSwitch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsPlug {
    /// The OVS bridge.
    pub bridge: OvsName,
    /// The tap's name when the interface gives one (`<target dev>`),
    /// checked; a generated `vnetN` always fits.
    pub iface: Option<OvsName>,
    /// `external-ids:iface-id`.
    pub iface_id: uuid::Uuid,
    /// `external-ids:port-profile`.
    pub profile_id: Option<ProfileId>,
    /// The port's VLAN.
    pub vlan: Option<Vlan>,
}

/// What a tap is attached to.
#[derive(Debug, Clone, Copy)]
pub enum Attachment<'a> {
    /// `type='bridge'`: this bridge.
    Bridge(&'a str),
    /// `type='network'`: this running network.
    Network(&'a Network),
}

/// Whether a tap (named `tap` when the interface names it) attached to
/// `to` with `req` goes on Open vSwitch, and how; `Err` (a message for the
/// interface's error) when its settings do not fit the network or a name
/// or id is not one slipway passes to ovs-vsctl.
pub fn resolve(
    to: Attachment<'_>,
    tap: Option<&str>,
    req: &PortRequest,
) -> Result<Option<OvsPlug>, String> {
    let (bridge, vp, vlan) = match to {
        Attachment::Bridge(b) => match &req.virtualport {
            Some(vp) if vp.kind == Some(VirtualPortType::OpenVswitch) => {
                (b.to_string(), vp.clone(), req.vlan.clone())
            }
            _ => return Ok(None),
        },
        Attachment::Network(net) => {
            let pg = merge::find_portgroup(net, req.portgroup.as_deref());
            let vlan = merge::port_vlan(req.vlan.as_ref(), pg, net);
            let vp = merge::merge_virtualports(
                req.virtualport.as_ref(),
                net.virtualport.as_ref(),
                pg.and_then(|p| p.virtualport.as_ref()),
            )
            .map_err(|e| e.to_string())?;
            let on_bridge = net.forward_mode() == Some(ForwardMode::Bridge);
            match (vp, net.bridge_name()) {
                (Some(vp), Some(b))
                    if on_bridge && vp.kind == Some(VirtualPortType::OpenVswitch) =>
                {
                    (b.to_string(), vp, vlan)
                }
                (Some(vp), _) => {
                    return Err(unsupported(net, &vp));
                }
                (None, _) if vlan.is_some() => {
                    return Err(format!(
                        "network '{}' cannot carry <vlan>: its bridge is not Open vSwitch \
                         (<forward mode='bridge'/> with <virtualport type='openvswitch'/>)",
                        net.name
                    ))
                }
                (None, _) => return Ok(None),
            }
        }
    };
    let mut vp = vp;
    merge::generate_missing_ids(&mut vp);
    let Some(iface_id) = vp.interface_id else {
        unreachable!("generate_missing_ids gives an openvswitch virtualport its interfaceid")
    };
    let profile_id = vp.profile_id.as_deref().map(ProfileId::new).transpose();
    let profile_id = profile_id.map_err(|e| e.to_string())?;
    Ok(Some(OvsPlug {
        bridge: OvsName::bridge(&bridge).map_err(|e| e.to_string())?,
        iface: tap
            .map(OvsName::interface)
            .transpose()
            .map_err(|e| e.to_string())?,
        iface_id,
        profile_id,
        vlan,
    }))
}

/// libvirt's refusal of a virtualport the network's kind cannot use.
fn unsupported(net: &Network, vp: &VirtualPort) -> String {
    let kind = vp.kind.map_or("none", VirtualPortType::as_str);
    let uses = match net.forward_mode() {
        None | Some(ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open) => "IP forwarding",
        Some(ForwardMode::Bridge) if net.bridge_name().is_some() => "a bridge device",
        Some(ForwardMode::Hostdev) => "an SR-IOV Virtual Function via PCI passthrough",
        Some(_) => "a macvtap device",
    };
    format!(
        "<virtualport type='{kind}'> not supported for network '{}' which uses {uses}",
        net.name
    )
}

/// Adds the up tap `tap` to its OVS bridge: returns its port name (to
/// record before this runs, so that it is removed even if this fails
/// halfway).
pub fn port_name(plug: &OvsPlug, tap: &str) -> Result<OvsName, slipway_hostnet::ovs::OvsError> {
    match &plug.iface {
        Some(n) => Ok(n.clone()),
        None => OvsName::interface(tap),
    }
}

/// Plugs port `iface` (the tap) with guest MAC `mac` of VM `vm_id`.
pub fn plug(
    plug: &OvsPlug,
    iface: &OvsName,
    mac: MacAddr,
    vm_id: uuid::Uuid,
) -> Result<(), slipway_hostnet::ovs::OvsError> {
    Ovs::from_env().add_port(&OvsPort {
        bridge: plug.bridge.clone(),
        iface: iface.clone(),
        iface_id: plug.iface_id,
        mac,
        vm_id,
        profile_id: plug.profile_id.clone(),
        vlan: plug.vlan.clone(),
    })
}

/// Removes port `name` (recorded by a launcher); problems are logged.
pub fn unplug(name: &str) {
    let result = OvsName::interface(name).and_then(|n| Ovs::from_env().del_port(&n));
    if let Err(e) = result {
        tracing::warn!("{e}");
    }
}

/// Removes the OVS ports recorded by launchers that are gone, except those
/// a running launcher has recorded since (a `<target dev>` name used
/// again).
pub fn remove_stale<'a>(stale: impl IntoIterator<Item = &'a str>, live: &[&str]) {
    for name in stale {
        if !live.contains(&name) {
            unplug(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(xml: &str) -> Network {
        Network::from_xml(xml).unwrap()
    }

    const OVS: &str = "<network><name>o</name><forward mode='bridge'/><bridge name='ovsbr0'/>\
        <virtualport type='openvswitch'><parameters profileid='net'/></virtualport>\
        <portgroup name='dflt' default='yes'><vlan><tag id='5'/></vlan></portgroup>\
        <portgroup name='t'><vlan trunk='yes'><tag id='6'/><tag id='7'/></vlan></portgroup></network>";

    #[test]
    fn a_network_with_openvswitch_plugs_with_merged_settings() {
        let n = net(OVS);
        let p = resolve(Attachment::Network(&n), None, &PortRequest::default())
            .unwrap()
            .unwrap();
        assert_eq!(p.bridge.as_str(), "ovsbr0");
        assert_eq!(p.iface, None);
        assert_eq!(p.profile_id.as_ref().map(ProfileId::as_str), Some("net"));
        assert_eq!(p.vlan.as_ref().map(|v| v.tags.clone()), Some(vec![5]));
        // Each plug gets its own generated iface-id.
        let q = resolve(Attachment::Network(&n), None, &PortRequest::default())
            .unwrap()
            .unwrap();
        assert_ne!(p.iface_id, q.iface_id);
        let req = PortRequest {
            portgroup: Some("t".into()),
            ..PortRequest::default()
        };
        let t = resolve(Attachment::Network(&n), Some("tap1"), &req)
            .unwrap()
            .unwrap();
        assert_eq!(t.vlan.unwrap().tags, [6, 7]);
        assert_eq!(t.iface.unwrap().as_str(), "tap1");
    }

    #[test]
    fn linux_bridges_are_not_ovs_and_mismatches_are_refused() {
        let linux =
            net("<network><name>l</name><forward mode='bridge'/><bridge name='br0'/></network>");
        assert_eq!(
            resolve(Attachment::Network(&linux), None, &PortRequest::default()),
            Ok(None)
        );
        assert_eq!(
            resolve(Attachment::Bridge("br0"), None, &PortRequest::default()),
            Ok(None)
        );
        let ovs_req = PortRequest {
            virtualport: Some(VirtualPort {
                kind: Some(VirtualPortType::OpenVswitch),
                ..VirtualPort::default()
            }),
            ..PortRequest::default()
        };
        assert!(resolve(Attachment::Bridge("ovsbr0"), None, &ovs_req)
            .unwrap()
            .is_some());
        let e = resolve(Attachment::Bridge("ovsbr0"), Some("-x"), &ovs_req).unwrap_err();
        assert!(e.contains("starts with '-'"), "{e}");
        // As libvirt: a bridge network whose interface says openvswitch
        // has an OVS bridge even when the network does not say so.
        let p = resolve(Attachment::Network(&linux), None, &ovs_req)
            .unwrap()
            .unwrap();
        assert_eq!(p.bridge.as_str(), "br0");
        let nat = net(
            "<network><name>n</name><forward mode='nat'/><bridge name='virbr9'/>\
             <ip address='10.9.0.1' prefix='24'/></network>",
        );
        let e = resolve(Attachment::Network(&nat), None, &ovs_req).unwrap_err();
        assert_eq!(
            e,
            "<virtualport type='openvswitch'> not supported for network 'n' which uses IP forwarding"
        );
    }
}
