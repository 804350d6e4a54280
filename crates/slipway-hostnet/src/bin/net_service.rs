//! The DHCP/DNS service of one bridge network as a program of its own:
//! `slipway-net-service CONFIG` (what `slipway net-service CONFIG` runs).

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Some(config) = std::env::args_os().nth(1) else {
        eprintln!("usage: slipway-net-service CONFIG");
        std::process::exit(2);
    };
    if let Err(e) = slipway_hostnet::service::run(std::path::Path::new(&config)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
