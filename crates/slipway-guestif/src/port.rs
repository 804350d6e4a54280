//! A guest tap's settings as a port of its bridge: its `<bandwidth>`
//! through traffic control and its `<port isolated>` through the bridge
//! port flag, applied when the tap is attached, as libvirt's QEMU driver
//! applies them (`virNetDevBandwidthSet(tap, bw, false, swapped=true)`
//! and `virNetDevBridgePortSetIsolated` in qemuInterfaceBridgeConnect).
//!
//! Theory of operation: both live on the tap device itself, so they go
//! away with it; nothing is recorded for the teardown beyond the tap.
//! Isolation comes from the interface's `<port isolated>`, else from its
//! network's (`networkAllocatePort` copies the network's into the port).
//! A `floor` is a reservation on the network's bridge that only the
//! network's port API makes (`slipway launch` creates no port), so
//! an interface with one is refused at planning, before anything exists.

use slipway_hostnet::netlink::Netlink;
use slipway_hostnet::tc;
use slipway_netmgr::shaping::Shape;
use slipway_netxml::Bandwidth;

use crate::plan::TapSpec;

/// The shape of an interface's `<bandwidth>`, or why slipway cannot
/// apply it (a floor, a rate out of bounds).
pub fn shape_of(bw: Option<&Bandwidth>) -> Result<Option<Shape>, String> {
    let Some(bw) = bw else { return Ok(None) };
    if bw.floor() != 0 {
        return Err(format!(
            "<bandwidth><inbound floor='{}'>: a floor is reserved on the network by its port API \
             (virNetworkPortCreateXML, as libvirt's QEMU driver does); slipway launch \
             creates no port",
            bw.floor()
        ));
    }
    Shape::of(bw).map_err(|e| e.to_string())
}

/// Applies `spec`'s port settings to tap `name` (index `index`), just
/// attached to its bridge; `network_isolated` is the isolation of the
/// network it is on (false for a host bridge).
pub fn apply(
    nl: &mut Netlink,
    spec: &TapSpec,
    name: &str,
    index: u32,
    network_isolated: bool,
) -> slipway_hostnet::Result<()> {
    if spec.bridge.is_some() && spec.isolated.unwrap_or(network_isolated) {
        nl.set_port_isolated(index, name, true)?;
    }
    if let Some(shape) = &spec.shape {
        tc::set(name, shape, false)?;
    }
    Ok(())
}
