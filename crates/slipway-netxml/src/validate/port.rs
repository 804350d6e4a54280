//! The rules libvirtd's `networkValidate` applies to port settings when a
//! network is defined: where network-wide `<bandwidth>` is allowed, where
//! `<vlan>` tags can be applied, and the `<portgroup>` names and default.

use super::{err, R};
use crate::model::*;
use crate::netdev::{VirtualPort, VirtualPortType};

/// Characters libvirt would print unescaped in a portgroup name or a
/// profileid, making its XML malformed (or different from slipway's,
/// which escapes them).
const RAW_PRINTED: &[char] = &['<', '>', '&', '\'', '"'];

fn printable(path: String, value: &str, what: &str) -> R {
    if let Some(c) = value.chars().find(|c| RAW_PRINTED.contains(c)) {
        return err(
            path,
            value,
            format!("{what} cannot contain '{c}' (libvirt writes it unescaped into its XML)"),
        );
    }
    Ok(())
}

fn virtualport_rules(vp: &VirtualPort, path: &str) -> R {
    match &vp.profile_id {
        Some(p) => printable(format!("{path}/parameters/@profileid"), p, "a profileid"),
        None => Ok(()),
    }
}

/// `networkValidate`'s checks of `<bandwidth>`, `<vlan>` and `<portgroup>`.
pub(super) fn port_rules(net: &Network) -> R {
    if let Some(vp) = &net.virtualport {
        virtualport_rules(vp, "/network/virtualport")?;
    }
    let mode = net.forward_mode();
    let mode_name = mode.map_or("none", ForwardMode::as_str);
    // Network-wide limits need a bridge to put them on: the network's own,
    // or the host bridge of a forward mode='bridge' network.
    let bandwidth_allowed = match mode {
        None => true,
        Some(m) if m.has_own_bridge() => true,
        Some(ForwardMode::Bridge) => net.bridge_name().is_some(),
        Some(_) => false,
    };
    if net.bandwidth.is_some() && !bandwidth_allowed {
        return err(
            "/network/bandwidth",
            mode_name,
            format!("unsupported network-wide <bandwidth> element with forward mode='{mode_name}'"),
        );
    }
    // Only hostdev SR-IOV pools and Open vSwitch bridges apply VLAN tags.
    let network_is_ovs = net
        .virtualport
        .as_ref()
        .is_some_and(|v| v.kind == Some(VirtualPortType::OpenVswitch));
    let vlan_allowed = matches!(mode, Some(ForwardMode::Hostdev | ForwardMode::Passthrough))
        || (mode == Some(ForwardMode::Bridge) && network_is_ovs);
    let vlan_used = net.vlan.as_ref().is_some_and(|v| !v.tags.is_empty());
    let refuse_vlan = |path: String| {
        err(
            path,
            &net.name,
            format!(
                "<vlan> element specified for a network whose type doesn't support vlan \
                 configuration (forward mode='{mode_name}'; only hostdev, passthrough, and \
                 bridge with <virtualport type='openvswitch'/>; a <portgroup>'s own \
                 <virtualport> must have type='openvswitch')"
            ),
        )
    };
    let mut default: Option<&PortGroup> = None;
    for (i, pg) in net.portgroups.iter().enumerate() {
        let p = format!("/network/portgroup[{}]", i + 1);
        printable(format!("{p}/@name"), &pg.name, "a portgroup name")?;
        if let Some(vp) = &pg.virtualport {
            virtualport_rules(vp, &format!("{p}/virtualport"))?;
        }
        let pg_vlan = pg.vlan.as_ref().is_some_and(|v| !v.tags.is_empty());
        if vlan_used || pg_vlan {
            // Whoever uses this portgroup gets a VLAN tag: its own
            // virtualport (if any) decides, else the network's.
            let bad = match &pg.virtualport {
                Some(vp) => {
                    mode != Some(ForwardMode::Bridge)
                        || vp.kind != Some(VirtualPortType::OpenVswitch)
                }
                None => !vlan_allowed,
            };
            if bad {
                let path = if pg_vlan {
                    format!("{p}/vlan")
                } else {
                    "/network/vlan".to_string()
                };
                return refuse_vlan(path);
            }
        }
        if pg.default {
            if let Some(first) = default {
                return err(
                    format!("{p}/@default"),
                    &pg.name,
                    format!(
                        "multiple default <portgroup> elements ({} and {}), but only one default is allowed",
                        first.name, pg.name
                    ),
                );
            }
            default = Some(pg);
        }
        if let Some(j) = net.portgroups[..i].iter().position(|o| o.name == pg.name) {
            return err(
                format!("{p}/@name"),
                &pg.name,
                format!(
                    "multiple <portgroup> elements with the same name (also portgroup[{}])",
                    j + 1
                ),
            );
        }
        if pg.bandwidth.is_some() && !bandwidth_allowed {
            return err(
                format!("{p}/bandwidth"),
                &pg.name,
                format!("unsupported <bandwidth> element in a portgroup with forward mode='{mode_name}'"),
            );
        }
    }
    // With a default portgroup every port gets one, and the loop above
    // checked each.
    if vlan_used && !vlan_allowed && default.is_none() {
        return refuse_vlan("/network/vlan".to_string());
    }
    Ok(())
}
