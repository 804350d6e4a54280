//! The realization interface: how a [`Plan`] becomes (and stops being) a
//! running network. This issue ships the recording backend; the Linux
//! backend (netlink, nftables, DHCP/DNS service) implements the same trait.

use serde::{Deserialize, Serialize};

use slipway_netxml::{Network, NetworkPort};

use crate::error::Result;
use crate::plan::{Action, Plan};

/// What a backend did to start a network: stored as the network's status in
/// the state directory so `stop` (possibly in a restarted daemon) can undo
/// exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveState {
    /// The network's name.
    pub network: String,
    /// The backend that realized it ([`Backend::name`]).
    pub backend: String,
    /// The actions carried out, in order.
    pub applied: Vec<Action>,
    /// Seconds since the epoch when the network was started.
    pub started_at: u64,
}

/// What a running network's service has counted, for the daemon's
/// metrics: the service writes it next to its leases (the one directory
/// its sandbox lets it write), the daemon reads it on a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// DHCP (and DHCPv6) leases held now.
    pub dhcp_leases: u64,
    /// DNS queries sent upstream (a retry to the next upstream counts again).
    pub dns_upstream_queries: u64,
    /// Upstream answers relayed to clients.
    pub dns_answered: u64,
    /// Queries no upstream answered (the client got SERVFAIL).
    pub dns_upstream_failures: u64,
    /// Queries dropped (the relay's table full, or malformed).
    pub dns_dropped: u64,
}

/// Brings networks up and down. `start` either completes or undoes what it
/// did before returning the error; `stop` undoes a [`LiveState`] that `start`
/// returned, possibly in another process; `recover` and `update_live` work
/// on a network that is up, also possibly started by another process.
pub trait Backend: Send + Sync {
    /// A short name recorded in the live state (`none`, `linux`).
    fn name(&self) -> &'static str;
    /// Checks the host as `start` does before it changes anything (subnet
    /// and device name collisions, the service configuration), so that
    /// `net-start --dry-run` fails where the start would.
    fn check(&self, plan: &Plan) -> Result<()>;
    /// Carries out the plan (after the same checks as [`Backend::check`]).
    fn start(&self, plan: &Plan) -> Result<LiveState>;
    /// Undoes a started network.
    fn stop(&self, live: &LiveState) -> Result<()>;
    /// At daemon start, for a network found running: brings back what may
    /// have died since it was started (the DHCP/DNS service), adding nothing
    /// that is still there.
    fn recover(&self, live: &LiveState) -> Result<()>;
    /// For a network that is up: whether the process it runs for it (the
    /// DHCP/DNS service) has ended, and how (`(pid 12) was killed by signal
    /// 9`); `None` while it runs or when there is none. The daemon asks
    /// twice a second and brings it back with [`Backend::recover`].
    fn service_exit(&self, live: &LiveState) -> Result<Option<String>>;
    /// Applies `net-update --live` to a running network without restarting
    /// it: `plan` is the plan of its updated live definition (only DHCP
    /// hosts and ranges, DNS hosts and the domain change live).
    fn update_live(&self, plan: &Plan) -> Result<()>;
    /// Guarantees a port's inbound floor on its network's bridge (libvirt's
    /// `virNetDevBandwidthPlug`, then class 1:2 set to `floor.rest`); on
    /// failure nothing of it stays.
    fn plug_floor(&self, floor: &crate::shaping::FloorClass) -> Result<()>;
    /// Removes a port's floor class (libvirt's `virNetDevBandwidthUnplug`)
    /// and gives class 1:2 `floor.rest`.
    fn unplug_floor(&self, floor: &crate::shaping::FloorClass) -> Result<()>;
    /// What the service of running network `live` last reported
    /// ([`ServiceStats`]); `None` when it has none (yet).
    fn service_stats(&self, _live: &LiveState) -> Option<ServiceStats> {
        None
    }
    /// A port was created on running network `net` (an OVN network: its
    /// logical switch port is added). Called before the port is recorded;
    /// an error refuses the port. Doing it again for the same port changes
    /// nothing (the manager repeats it at recovery).
    fn port_added(&self, _net: &Network, _port: &NetworkPort) -> Result<()> {
        Ok(())
    }
    /// A port of running network `net` is going (deleted, or the network
    /// stops): what [`Backend::port_added`] did is undone. A port that is
    /// already gone is not an error.
    fn port_removed(&self, _net: &Network, _port: &NetworkPort) -> Result<()> {
        Ok(())
    }
}

/// The backend of this issue: changes nothing on the host, records the plan
/// as applied. Everything above it (state files, events, recovery) behaves
/// as with a real backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecordingBackend;

impl Backend for RecordingBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    fn check(&self, _plan: &Plan) -> Result<()> {
        Ok(())
    }

    fn start(&self, plan: &Plan) -> Result<LiveState> {
        let started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(LiveState {
            network: plan.network.clone(),
            backend: self.name().into(),
            applied: plan.actions.clone(),
            started_at,
        })
    }

    fn stop(&self, _live: &LiveState) -> Result<()> {
        Ok(())
    }

    fn recover(&self, _live: &LiveState) -> Result<()> {
        Ok(())
    }

    fn service_exit(&self, _live: &LiveState) -> Result<Option<String>> {
        Ok(None)
    }

    fn update_live(&self, _plan: &Plan) -> Result<()> {
        Ok(())
    }

    fn plug_floor(&self, _floor: &crate::shaping::FloorClass) -> Result<()> {
        Ok(())
    }

    fn unplug_floor(&self, _floor: &crate::shaping::FloorClass) -> Result<()> {
        Ok(())
    }
}
