//! libvirt network XML as `slipway net-define` reads it. What parses and
//! validates must format to XML that parses again to the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway_netxml::Network;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Network::from_xml_strict(text);
    let Ok(net) = Network::from_xml(text) else {
        return;
    };
    if net.validate().is_err() {
        return;
    }
    let xml = net.to_xml();
    let again = Network::from_xml(&xml)
        .unwrap_or_else(|e| panic!("formatted XML does not parse: {e}\n{xml}"));
    assert_eq!(again.to_xml(), xml, "format is not stable");
});
