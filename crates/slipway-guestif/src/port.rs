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

/// Applies a tap's port settings to tap `name` (index `index`), just
/// attached to a bridge when `on_bridge`: its `shape`, and isolation when
/// `isolated` (the interface's) says so, else when `network_isolated`
/// (its network's; false for a host bridge).
pub fn apply(
    nl: &mut Netlink,
    name: &str,
    index: u32,
    on_bridge: bool,
    shape: Option<&Shape>,
    isolated: Option<bool>,
    network_isolated: bool,
) -> slipway_hostnet::Result<()> {
    if on_bridge && isolated.unwrap_or(network_isolated) {
        nl.set_port_isolated(index, name, true)?;
    }
    if let Some(shape) = shape {
        tc::set(name, shape, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_netxml::parse_interfaces;

    fn one(xml: &str) -> Result<slipway_netxml::Interface, String> {
        parse_interfaces(xml)
            .map(|mut v| v.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_interfaces_bandwidth_and_isolation_are_read_and_checked() {
        let i = one("<interface type='network'><source network='n'/>\
             <bandwidth><inbound average='1000' peak='2000'/><outbound average='10'/></bandwidth>\
             <port isolated='yes'/></interface>")
        .unwrap();
        assert_eq!(i.port_isolated, Some(true));
        let shape = shape_of(i.bandwidth.as_ref()).unwrap().unwrap();
        assert_eq!(shape.inbound.unwrap().peak, 2000);
        assert_eq!(shape.outbound.unwrap().average, 10);
        // A floor is the port API's: refused, naming it.
        let f = one("<interface type='network'><source network='n'/>\
             <bandwidth><inbound average='10' floor='5'/></bandwidth></interface>")
        .unwrap();
        let e = shape_of(f.bandwidth.as_ref()).unwrap_err();
        assert!(
            e.starts_with("<bandwidth><inbound floor='5'>: a floor is reserved"),
            "{e}"
        );
        // Out of bounds: named.
        let big = one("<interface type='bridge'><source bridge='br0'/>\
             <bandwidth><inbound average='1000000001'/></bandwidth></interface>")
        .unwrap();
        assert!(shape_of(big.bandwidth.as_ref())
            .unwrap_err()
            .contains("<inbound average='1000000001'>"));
    }

    #[test]
    fn bandwidth_and_isolation_need_a_tap_on_a_bridge() {
        let e = one(
            "<interface type='user'><bandwidth><inbound average='10'/></bandwidth></interface>",
        )
        .unwrap_err();
        assert!(e.contains("<bandwidth> is for interfaces on a tap"), "{e}");
        let e = one("<interface type='ethernet'><port isolated='yes'/></interface>").unwrap_err();
        assert!(
            e.contains("<port isolated> is for interfaces on a bridge"),
            "{e}"
        );
        let e = one(
            "<interface type='network'><source network='n'/><port isolated='maybe'/></interface>",
        )
        .unwrap_err();
        assert!(e.contains("interface/port/@isolated = 'maybe'"), "{e}");
        let e = one("<interface type='network'><source network='n'/>\
             <bandwidth classID='4'><inbound average='10'/></bandwidth></interface>")
        .unwrap_err();
        assert!(e.contains("only a network port has a class"), "{e}");
    }
}
