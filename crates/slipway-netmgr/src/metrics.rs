//! `slipway daemon --metrics ADDR|unix:PATH`: the daemon's Prometheus
//! metrics, served by a thread of their own.
//!
//! Theory of operation: one thread accepts and serves one connection at a
//! time (others wait in the listen backlog): it reads the request head
//! (at most `slipway_host::prometheus::MAX_REQUEST` bytes, within
//! [`TIMEOUT`]), answers and closes. The page is built on each scrape from
//! what the daemon already keeps: every network's state, the restarts the
//! supervisor made of each service, the connections open, and for running
//! networks what their service last wrote next to its leases (leases,
//! DNS relay counts: [`crate::ServiceStats`]). The services keep their
//! sandbox: they open no listener for this, and write only in the
//! directory they already write.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slipway_host::prometheus::{self, Listen, Text, MAX_REQUEST};

use crate::error::{Error, Result};
use crate::manager::Manager;

/// How long one connection may take to send its request, and each write
/// of the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Restarts of each network's service by the supervisor.
pub(crate) type Restarts = Arc<Mutex<BTreeMap<String, u64>>>;

/// A bound metrics listener.
pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// What the page shows besides the manager's networks.
pub(crate) struct Sources {
    pub manager: Arc<Manager>,
    pub restarts: Restarts,
    pub connections: Arc<dyn Fn() -> usize + Send + Sync>,
}

impl Listener {
    /// Binds `addr` (a unix socket with mode 0600, replacing a file there:
    /// the daemon's lock is held).
    pub(crate) fn bind(addr: &Listen) -> Result<Listener> {
        match addr {
            Listen::Tcp(a) => std::net::TcpListener::bind(a)
                .map(Listener::Tcp)
                .map_err(|e| Error::Backend(format!("cannot listen on {addr}: {e}").into())),
            Listen::Unix(p) => {
                let _ = std::fs::remove_file(p);
                let l = std::os::unix::net::UnixListener::bind(p)
                    .map_err(|e| Error::io("cannot listen on", p, e))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io("cannot set permissions of", p, e))?;
                Ok(Listener::Unix(l))
            }
        }
    }

    /// What to show in the log: the URL with the real port.
    pub(crate) fn describe(&self, addr: &Listen) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| addr.to_string(), |a| Listen::Tcp(a).to_string()),
            Listener::Unix(_) => addr.to_string(),
        }
    }

    /// Serves scrapes for the daemon's life, one connection at a time.
    pub(crate) fn serve(self, sources: &Sources) {
        loop {
            let served = match &self {
                Listener::Tcp(l) => l.accept().map(|(s, _)| serve_one(s, sources)),
                Listener::Unix(l) => l.accept().map(|(s, _)| serve_one(s, sources)),
            };
            match served {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
                Err(e) => tracing::warn!("metrics: accept failed: {e}"),
            }
        }
    }
}

/// A connected stream: TCP or unix.
trait Stream: Read + Write {
    fn set_timeouts(&self, read: Option<Duration>) -> std::io::Result<()>;
}

impl Stream for std::net::TcpStream {
    fn set_timeouts(&self, read: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(Some(TIMEOUT))
    }
}

impl Stream for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, read: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(Some(TIMEOUT))
    }
}

/// Reads one request head (within [`TIMEOUT`] in all), answers it.
fn serve_one(mut stream: impl Stream, sources: &Sources) -> std::io::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let mut input = Vec::new();
    let mut buf = [0u8; 2048];
    let answer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_timeouts(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        input.extend_from_slice(&buf[..n]);
        if let Some(end) = prometheus::head_end(&input) {
            break prometheus::answer(&input[..end], || render(sources));
        }
        if input.len() > MAX_REQUEST {
            break prometheus::too_long();
        }
    };
    stream.write_all(&answer)
}

/// The daemon's page.
fn render(sources: &Sources) -> String {
    let nets = sources.manager.metrics();
    let restarts = sources
        .restarts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut t = Text::new();
    t.family(
        "slipway_daemon_connections",
        "gauge",
        "Client connections the daemon serves now.",
        &[(&[], (sources.connections)() as u64)],
    );
    let labels: Vec<[(&str, &str); 1]> = nets
        .iter()
        .map(|(n, ..)| [("network", n.as_str())])
        .collect();
    let per_net = |value: &dyn Fn(usize) -> Option<u64>| -> Vec<(&[(&str, &str)], u64)> {
        (0..nets.len())
            .filter_map(|i| value(i).map(|v| (&labels[i][..], v)))
            .collect()
    };
    t.family(
        "slipway_network_active",
        "gauge",
        "Whether the network is running (1) or defined but stopped (0).",
        &per_net(&|i| Some(u64::from(nets[i].1))),
    );
    t.family(
        "slipway_network_service_restarts_total",
        "counter",
        "Times the daemon restarted the network's DHCP/DNS service after it ended.",
        &per_net(&|i| Some(restarts.get(&nets[i].0).copied().unwrap_or(0))),
    );
    let nets = &nets;
    let stat = |f: fn(&crate::ServiceStats) -> u64| move |i: usize| nets[i].2.as_ref().map(f);
    t.family(
        "slipway_network_dhcp_leases",
        "gauge",
        "DHCP leases the network's service holds.",
        &per_net(&stat(|s| s.dhcp_leases)),
    );
    t.family(
        "slipway_network_dns_upstream_queries_total",
        "counter",
        "DNS queries the network's service sent upstream.",
        &per_net(&stat(|s| s.dns_upstream_queries)),
    );
    t.family(
        "slipway_network_dns_answered_total",
        "counter",
        "Upstream DNS answers the network's service relayed.",
        &per_net(&stat(|s| s.dns_answered)),
    );
    t.family(
        "slipway_network_dns_upstream_failures_total",
        "counter",
        "DNS queries no upstream answered (SERVFAIL).",
        &per_net(&stat(|s| s.dns_upstream_failures)),
    );
    t.family(
        "slipway_network_dns_dropped_total",
        "counter",
        "DNS queries the network's service dropped.",
        &per_net(&stat(|s| s.dns_dropped)),
    );
    t.finish()
}

/// Counts one restart of `network`'s service.
pub(crate) fn count_restart(restarts: &Restarts, network: &str) {
    let mut r = restarts.lock().unwrap_or_else(|p| p.into_inner());
    *r.entry(network.to_string()).or_default() += 1;
}
