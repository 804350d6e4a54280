//! `guest-image SCRIPT OUT`: the test guest for programs outside the Rust
//! harness (the VM benchmark, bench/vm.py). Builds or finds the cached
//! image (the same cache the tests use: `slipway-guest/` in this binary's
//! cargo target directory), writes to OUT the initramfs that runs the shell
//! script in the file SCRIPT as `/test.sh`, and prints two lines on stdout:
//! `kernel=PATH` and `append=KERNEL COMMAND LINE`, so that the caller boots
//! the guest exactly as `Guest::boot` does without repeating the image's
//! layout or the kernel's arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use slipway_testkit::{GuestImage, KERNEL_ARGS};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [script, out] = args.as_slice() else {
        eprintln!("usage: guest-image SCRIPT OUT");
        return ExitCode::from(2);
    };
    let script = match std::fs::read_to_string(script) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guest-image: reading {}: {e}", script.display());
            return ExitCode::FAILURE;
        }
    };
    let image = match GuestImage::get() {
        Ok(image) => image,
        Err(e) => {
            eprintln!("guest-image: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = image.initrd_with_script(&script, out) {
        eprintln!("guest-image: {e}");
        return ExitCode::FAILURE;
    }
    println!("kernel={}", image.kernel().display());
    println!("append={KERNEL_ARGS}");
    ExitCode::SUCCESS
}
