//! `slipway net-service CONFIG` (hidden): the DHCP/DNS service of one bridge
//! network, started and stopped by the Linux backend (`slipway-hostnet`),
//! which writes CONFIG and waits for the `ready` line on stdout.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `slipway net-service`.
#[derive(clap::Args, Debug)]
pub struct NetServiceArgs {
    /// The service's configuration file, written by the backend.
    pub config: PathBuf,
}

/// Serves until SIGTERM; returns the exit status.
pub fn run(args: NetServiceArgs) -> anyhow::Result<i32> {
    slipway_hostnet::service::run(&args.config)
        .with_context(|| format!("network service {}", args.config.display()))?;
    Ok(0)
}
