//! libvirt `<interface>` XML (a VM's network interfaces) as
//! `slipway-guestif` reads it: `parse_interfaces` must refuse bad input
//! with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = slipway_netxml::domain_uuid(text);
    let Ok(interfaces) = slipway_netxml::parse_interfaces(text) else {
        return;
    };
    for iface in &interfaces {
        let _ = iface.kind.type_name();
        // Every parsed field must be readable (no lazily invalid state).
        let _ = format!("{iface:?}");
    }
});
