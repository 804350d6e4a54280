//! What a guest's port on a network gets from the interface, its
//! `<portgroup>` and the network: libvirt 9.0's `networkAllocatePort`
//! (src/network/bridge_driver.c) choosing the portgroup and the VLAN, and
//! `virNetDevVPortProfileMerge3` / `virNetDevVPortProfileCheckComplete`
//! (src/util/virnetdevvportprofile.c) combining the `<virtualport>`s.
//!
//! Theory of operation: pure functions over the XML model, shared by the
//! network port API (slipway-netmgr) and the guest launcher
//! (slipway-guestif), so a port created through libvirt's API and a tap
//! slipway plugs itself get the same settings. The interface's settings
//! win; the network's and then the portgroup's fill in what the interface
//! leaves unset, and a value set twice differently is refused with
//! libvirt's message.

use crate::netdev::{VirtualPort, VirtualPortType, Vlan};
use crate::{Network, PortGroup};

/// Two `<virtualport>`s that cannot be combined (libvirt's
/// `VIR_ERR_XML_ERROR` messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attempt to merge virtualports with mismatched {0}")]
pub struct MergeError(pub String);

/// The portgroup a port uses (`virPortGroupFindByName`): the one named
/// `name`, or without a name the network's default one; `None` when there
/// is none of that name (libvirt then uses no portgroup).
pub fn find_portgroup<'n>(net: &'n Network, name: Option<&str>) -> Option<&'n PortGroup> {
    net.portgroups.iter().find(|pg| match name {
        Some(n) => pg.name == n,
        None => pg.default,
    })
}

/// The port's VLAN: its own when it has tags, else the portgroup's, else
/// the network's.
pub fn port_vlan(own: Option<&Vlan>, portgroup: Option<&PortGroup>, net: &Network) -> Option<Vlan> {
    let has = |v: &&Vlan| !v.tags.is_empty();
    own.filter(has)
        .or(portgroup.and_then(|p| p.vlan.as_ref()).filter(has))
        .or(net.vlan.as_ref().filter(has))
        .cloned()
}

/// `virNetDevVPortProfileMerge`: fills `orig` from `mods`.
fn merge(orig: &mut VirtualPort, mods: &VirtualPort) -> Result<(), MergeError> {
    use VirtualPortType::*;
    if let Some(m) = mods.kind {
        match orig.kind {
            Some(o) if o != m => {
                return Err(MergeError(format!(
                    "types ({} and {})",
                    o.as_str(),
                    m.as_str()
                )))
            }
            _ => orig.kind = Some(m),
        }
    }
    let otype = orig.kind;
    let for_types = |types: &[VirtualPortType]| otype.is_none_or(|t| types.contains(&t));
    fn fill<T: PartialEq + Clone>(
        orig: &mut Option<T>,
        mods: &Option<T>,
        what: &str,
        show: impl Fn(&T) -> String,
    ) -> Result<(), MergeError> {
        if let Some(m) = mods {
            if let Some(o) = orig.as_ref().filter(|o| *o != m) {
                return Err(MergeError(format!("{what} ({} and {})", show(o), show(m))));
            }
            *orig = Some(m.clone());
        }
        Ok(())
    }
    if for_types(&[Qbg]) {
        let n = |x: &u8| x.to_string();
        fill(&mut orig.manager_id, &mods.manager_id, "managerids", n)?;
        fill(&mut orig.type_id, &mods.type_id, "typeids", u32::to_string)?;
        fill(
            &mut orig.type_id_version,
            &mods.type_id_version,
            "typeidversions",
            n,
        )?;
        let u = |x: &uuid::Uuid| format!("'{x}'");
        fill(&mut orig.instance_id, &mods.instance_id, "instanceids", u)?;
    }
    if for_types(&[OpenVswitch]) {
        let u = |x: &uuid::Uuid| format!("'{x}'");
        fill(
            &mut orig.interface_id,
            &mods.interface_id,
            "interfaceids",
            u,
        )?;
    }
    if for_types(&[OpenVswitch, Qbh]) {
        let s = |x: &String| format!("'{x}'");
        fill(&mut orig.profile_id, &mods.profile_id, "profileids", s)?;
    }
    Ok(())
}

/// `virNetDevVPortProfileMerge3`: the `<virtualport>` a port uses, from
/// the interface's (highest priority), the network's and the portgroup's;
/// `None` when none of them has a type.
pub fn merge_virtualports(
    interface: Option<&VirtualPort>,
    network: Option<&VirtualPort>,
    portgroup: Option<&VirtualPort>,
) -> Result<Option<VirtualPort>, MergeError> {
    if [interface, network, portgroup]
        .iter()
        .all(|v| v.is_none_or(|v| v.kind.is_none()))
    {
        return Ok(None);
    }
    let mut out = interface.cloned().unwrap_or_default();
    for mods in [network, portgroup].into_iter().flatten() {
        merge(&mut out, mods)?;
    }
    Ok(Some(out))
}

/// `virNetDevVPortProfileCheckComplete(…, generateMissing = true)` for the
/// ids libvirt generates: an `interfaceid` for openvswitch, an
/// `instanceid` for 802.1Qbg (random UUIDs).
pub fn generate_missing_ids(vp: &mut VirtualPort) {
    match vp.kind {
        Some(VirtualPortType::OpenVswitch) if vp.interface_id.is_none() => {
            vp.interface_id = Some(crate::generate_uuid());
        }
        Some(VirtualPortType::Qbg) if vp.instance_id.is_none() => {
            vp.instance_id = Some(crate::generate_uuid());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(kind: Option<VirtualPortType>) -> VirtualPort {
        VirtualPort {
            kind,
            ..VirtualPort::default()
        }
    }

    const ID: &str = "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f";

    #[test]
    fn interface_wins_network_and_portgroup_fill_in() {
        let ovs = Some(VirtualPortType::OpenVswitch);
        let mut own = vp(None);
        own.interface_id = Some(ID.parse().unwrap());
        let mut pg = vp(None);
        pg.profile_id = Some("gold".into());
        let got = merge_virtualports(Some(&own), Some(&vp(ovs)), Some(&pg))
            .unwrap()
            .unwrap();
        assert_eq!(got.kind, ovs);
        assert_eq!(got.interface_id, Some(ID.parse().unwrap()));
        assert_eq!(got.profile_id.as_deref(), Some("gold"));
        // Nobody has a type: no virtualport at all.
        assert_eq!(merge_virtualports(Some(&own), None, Some(&pg)), Ok(None));
        assert_eq!(merge_virtualports(None, None, None), Ok(None));
    }

    #[test]
    fn conflicts_are_libvirts_errors() {
        let ovs = vp(Some(VirtualPortType::OpenVswitch));
        let e = merge_virtualports(Some(&vp(Some(VirtualPortType::Qbh))), Some(&ovs), None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "attempt to merge virtualports with mismatched types (802.1Qbh and openvswitch)"
        );
        let mut a = ovs.clone();
        a.profile_id = Some("a".into());
        let mut b = vp(None);
        b.profile_id = Some("b".into());
        let e = merge_virtualports(Some(&a), None, Some(&b)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "attempt to merge virtualports with mismatched profileids ('a' and 'b')"
        );
        // The same value twice is no conflict.
        assert!(merge_virtualports(Some(&a), Some(&a), None).is_ok());
    }

    #[test]
    fn missing_interfaceid_is_generated_for_openvswitch_only() {
        let mut o = vp(Some(VirtualPortType::OpenVswitch));
        generate_missing_ids(&mut o);
        assert!(o.interface_id.is_some());
        let before = o.interface_id;
        generate_missing_ids(&mut o);
        assert_eq!(o.interface_id, before);
        let mut m = vp(Some(VirtualPortType::Midonet));
        generate_missing_ids(&mut m);
        assert_eq!(m.interface_id, None);
    }

    #[test]
    fn vlan_from_port_then_portgroup_then_network() {
        let net = Network::from_xml(
            "<network><name>n</name><forward mode='bridge'/><bridge name='ovsbr0'/>\
             <virtualport type='openvswitch'/>\
             <vlan><tag id='10'/></vlan>\
             <portgroup name='pg' default='yes'><vlan><tag id='20'/></vlan></portgroup>\
             <portgroup name='plain'/></network>",
        )
        .unwrap();
        let tag = |t| Vlan {
            trunk: false,
            tags: vec![t],
            native: None,
        };
        let dflt = find_portgroup(&net, None);
        assert_eq!(dflt.map(|p| p.name.as_str()), Some("pg"));
        assert_eq!(port_vlan(None, dflt, &net), Some(tag(20)));
        assert_eq!(port_vlan(Some(&tag(30)), dflt, &net), Some(tag(30)));
        let plain = find_portgroup(&net, Some("plain"));
        assert_eq!(port_vlan(None, plain, &net), Some(tag(10)));
        assert!(find_portgroup(&net, Some("nosuch")).is_none());
    }
}
