//! What libvirtd's network driver fills in when a network is defined.

use crate::{Bridge, ForwardMode, MacAddr, Nat, Network};

/// Facts about the host the defaults depend on.
#[derive(Debug, Clone, Default)]
pub struct DefaultsContext {
    /// Bridge names already taken (by other definitions or host links);
    /// a generated `virbrN` avoids them.
    pub bridges_in_use: Vec<String>,
}

/// Fills in what is missing, in libvirtd's way (`networkValidate`:
/// `networkFindUnusedBridgeName`, `virNetworkSetBridgeMacAddr`). Values
/// already present are kept.
pub(crate) fn fill(net: &mut Network, ctx: &DefaultsContext) {
    if net.uuid.is_none() {
        net.uuid = Some(crate::generate_uuid());
    }
    // Modes that use an existing device (bridge, macvtap, hostdev) get no
    // bridge of their own; only routed/NAT/open/isolated networks do.
    if net.has_own_bridge() {
        let bridge = net.bridge.get_or_insert_with(Bridge::default);
        if bridge.name.as_deref().is_none_or(|n| n.contains("%d")) {
            let template = bridge.name.clone().unwrap_or_else(|| "virbr%d".to_string());
            bridge.name = Some(free_bridge_name(&template, &ctx.bridges_in_use));
        }
        bridge.stp.get_or_insert(true);
        bridge.delay.get_or_insert(0);
        if net.mac.is_none() {
            net.mac = Some(MacAddr::random_kvm());
        }
    }
}

/// What libvirtd adds to the live definition of a network it starts (not
/// to the persistent one): the NAT port range it masquerades to.
pub(crate) fn fill_live(net: &mut Network) {
    if let Some(fwd) = net.forward.as_mut() {
        if fwd.mode == ForwardMode::Nat {
            fwd.nat
                .get_or_insert_with(Nat::default)
                .port
                .get_or_insert((1024, 65535));
        }
    }
}

/// First name from `template` (containing `%d`) with N = 0, 1, … not in `used`.
fn free_bridge_name(template: &str, used: &[String]) -> String {
    (0u32..)
        .map(|n| template.replacen("%d", &n.to_string(), 1))
        .find(|name| !used.iter().any(|u| u == name))
        .unwrap_or_else(|| template.to_string())
}
