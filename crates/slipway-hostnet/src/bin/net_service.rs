//! The DHCP/DNS service of one bridge network as a program of its own:
//! `slipway-net-service CONFIG` (what `slipway net-service CONFIG` runs).

fn main() {
    // Started by root (the manager, the daemon); a setuid or file-capable
    // copy would parse a configuration any user names, as root.
    if slipway_host::privileged_exec() {
        eprintln!(
            "slipway-net-service: error: refusing to run setuid, setgid or with file \
             capabilities: it is started by root (slipway net-start, slipway daemon); \
             never install it that way"
        );
        std::process::exit(126);
    }
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
