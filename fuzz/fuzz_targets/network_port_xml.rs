//! libvirt network port XML (`<networkport>`) as `slipway net-port-create`
//! and libvirt's port API read it: bad input is an error, never a panic,
//! and what parses formats to XML that parses again and formats the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway_netxml::NetworkPort;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(port) = NetworkPort::from_xml(text) else {
        return;
    };
    let xml = port.to_xml();
    let again = NetworkPort::from_xml(&xml)
        .unwrap_or_else(|e| panic!("formatted XML does not parse: {e}\n{xml}"));
    assert_eq!(again.to_xml(), xml, "format is not stable");
});
