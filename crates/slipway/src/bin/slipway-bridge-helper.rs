//! `slipway-bridge-helper`: qemu-bridge-helper's replacement, a program of
//! its own so that a setuid-root install runs nothing but this (see the
//! slipway-bridge-helper crate). It uses no other part of slipway.

fn main() {
    match slipway_bridge_helper::helper_main(std::env::args_os().skip(1)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("slipway-bridge-helper: {e}");
            std::process::exit(1);
        }
    }
}
