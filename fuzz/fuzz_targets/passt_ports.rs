//! passt's `-t`/`-u` port specifications, as a user (or libvirt, from a
//! domain's `<portForward>`) writes them for slipway as passt. Whatever
//! parses expands to pairs inside the ranges written, with no host port
//! twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway_usermode::config::passt_ports::{non_ephemeral, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = parse(text) else {
        return;
    };
    let pairs = spec.expand(&non_ephemeral(32768..=60999));
    let mut seen = std::collections::HashSet::new();
    for (host, guest) in pairs {
        assert!(host != 0 && guest != 0, "{text}: port 0");
        assert!(seen.insert(host), "{text}: host port {host} twice");
    }
});
