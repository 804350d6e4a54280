//! QEMU's `-netdev user` option string and the legacy `-redir` spec, as a
//! user types them on `slipway user`'s command line. Whatever parses must
//! be a configuration the stack accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway_usermode::options::{parse_options, parse_redir};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (opts, redir) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(cfg) = parse_options(opts) else {
        return;
    };
    assert!(cfg.in_subnet(cfg.host) && cfg.in_subnet(cfg.dns) && cfg.in_subnet(cfg.dhcp_start));
    if !redir.is_empty() {
        let _ = parse_redir(redir, &cfg);
    }
    // The stack builds its DHCP server from the configuration: it must accept it.
    slipway_usermode::stack::Stack::new(cfg).expect("parsed options make a stack");
});
