//! OVN run by a test, in network namespaces of the test's own: the central
//! part ([`OvnCentral`]: the northbound and southbound `ovsdb-server`s and
//! `ovn-northd`) and a host's part ([`OvnController`]: `ovn-controller`
//! on an [`OvsInstance`]). Every daemon is a child of the test, started
//! with its own database, sockets, pid and log files in a temporary
//! directory, and stopped on drop (SIGTERM, then SIGKILL). Debian's
//! `ovn-central` and `ovn-host` services are never started or touched.
//!
//! Theory of operation: a daemon runs in the network namespace of the
//! thread that starts it, so a test starts each "host"'s daemons from a
//! thread that entered that host's namespace
//! ([`crate::netns::Netns::spawn`]). ovn-controller reads its
//! configuration from the host's Open_vSwitch table (`external_ids`:
//! `system-id`, `ovn-remote`, `ovn-encap-type`, `ovn-encap-ip`,
//! `ovn-bridge-datapath-type`), which [`OvnController::start`] sets; it
//! has no `--unixctl` option and puts its control socket in `OVN_RUNDIR`,
//! and it finds each bridge's OpenFlow socket (`br-int.mgmt`) in
//! `OVS_RUNDIR`, which must be the Open vSwitch instance's.
//!
//! What the kernel here lacks and how this works without it: there is no
//! `openvswitch` (nor `geneve`) kernel module, so bridges use OVS's
//! userspace datapath (`datapath_type=netdev`), which encapsulates Geneve
//! itself. Its tunnels route by OVS's own routing table, which only knows
//! addresses on OVS bridges: the underlay address must sit on an OVS
//! bridge (`br-phy` here) with the underlay device as its port, as OVS's
//! "userspace tunneling" guide describes; with the address on the bare
//! device the tunnel port exists but sends nothing.
//!
//! Needs: ovn-central (ovn-northd, the OVN schemas), ovn-host
//! (ovn-controller), ovn-common (ovn-nbctl, ovn-sbctl), openvswitch-switch.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::ovs::{stop, OvsInstance};
use crate::process::{run, spawn};

/// Where Debian installs the OVN northbound schema.
pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
/// Where Debian installs the OVN southbound schema.
pub const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
/// OVN's northbound port.
pub const NB_PORT: u16 = 6641;
/// OVN's southbound port.
pub const SB_PORT: u16 = 6642;
/// How long each daemon may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon's command ([`crate::ovs::daemon`]) with OVN's and OVS's run
/// directory `dir`.
fn daemon(program: &str, dir: &Path, name: &str) -> Command {
    let mut cmd = crate::ovs::daemon(program, dir, name);
    cmd.env("OVN_RUNDIR", dir).env("OVS_RUNDIR", dir);
    cmd
}

/// The logs `names` in `dir`, for failure messages.
fn logs(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            let text = fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            format!("--- {n}.log\n{text}")
        })
        .collect()
}

/// Polls `up` until it holds; fails when one of `children` exits first or
/// after [`START_TIMEOUT`].
fn wait_until(
    what: &str,
    children: &mut [Child],
    transcript: impl Fn() -> String,
    up: impl Fn() -> bool,
) -> Result<()> {
    let end = Instant::now() + START_TIMEOUT;
    loop {
        if up() {
            return Ok(());
        }
        if let Some(status) = children
            .iter_mut()
            .find_map(|c| c.try_wait().ok().flatten())
        {
            return Err(Error::Command {
                command: what.to_string(),
                status: status.to_string(),
                output: transcript(),
            });
        }
        if Instant::now() > end {
            return Err(Error::Timeout {
                what: format!("{what} to start"),
                timeout: START_TIMEOUT,
                transcript: transcript(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The OVN databases and `ovn-northd`, stopped on drop.
pub struct OvnCentral {
    dir: TempDir,
    children: Vec<Child>,
}

impl OvnCentral {
    /// Creates both databases, serves them on unix sockets in its
    /// directory and, with `listen`, on TCP `listen:6641` (northbound)
    /// and `listen:6642` (southbound) for the other hosts; starts
    /// ovn-northd between them and waits until the northbound database
    /// answers `ovn-nbctl`.
    pub fn start(listen: Option<IpAddr>) -> Result<OvnCentral> {
        let dir = crate::temp_dir()?;
        let d = dir.path().to_path_buf();
        let mut central = OvnCentral {
            dir,
            children: Vec::new(),
        };
        for (db, schema, port) in [("nb", NB_SCHEMA, NB_PORT), ("sb", SB_SCHEMA, SB_PORT)] {
            let file = d.join(format!("{db}.db"));
            run(
                Command::new("ovsdb-tool")
                    .arg("create")
                    .arg(&file)
                    .arg(schema),
                "ovn-central",
            )?;
            let mut cmd = daemon("ovsdb-server", &d, &format!("ovsdb-{db}"));
            cmd.arg(&file)
                .arg(format!(
                    "--remote=punix:{}",
                    d.join(format!("{db}.sock")).display()
                ))
                .arg(format!(
                    "--unixctl={}",
                    d.join(format!("ovsdb-{db}.ctl")).display()
                ));
            if let Some(ip) = listen {
                let ip = match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                };
                cmd.arg(format!("--remote=ptcp:{port}:{ip}"));
            }
            central
                .children
                .push(spawn(&mut cmd, "openvswitch-common")?);
        }
        let mut northd = daemon("ovn-northd", &d, "ovn-northd");
        northd
            .arg(format!("--ovnnb-db=unix:{}", d.join("nb.sock").display()))
            .arg(format!("--ovnsb-db=unix:{}", d.join("sb.sock").display()))
            .arg(format!("--unixctl={}", d.join("ovn-northd.ctl").display()));
        central.children.push(spawn(&mut northd, "ovn-central")?);
        // Polled mutably while the closures read the rest.
        let mut children = std::mem::take(&mut central.children);
        let c = &central;
        let r = wait_until(
            "the OVN databases",
            &mut children,
            || c.logs(),
            || c.nbctl(&["ls-list"]).is_ok() && c.sbctl(&["show"]).is_ok(),
        );
        central.children = children;
        r?;
        Ok(central)
    }

    /// The northbound database's unix socket.
    pub fn nb_sock(&self) -> PathBuf {
        self.dir.path().join("nb.sock")
    }

    /// The southbound database's unix socket.
    pub fn sb_sock(&self) -> PathBuf {
        self.dir.path().join("sb.sock")
    }

    /// `ovn-nbctl ARGS` on the northbound database; its output, trimmed.
    pub fn nbctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ovn-nbctl");
        cmd.env_remove("OVN_NB_DAEMON")
            .arg(format!("--db=unix:{}", self.nb_sock().display()))
            .arg("--timeout=10")
            .args(args);
        let out = run(&mut cmd, "ovn-common")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `ovn-sbctl ARGS` on the southbound database; its output, trimmed.
    pub fn sbctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ovn-sbctl");
        cmd.arg(format!("--db=unix:{}", self.sb_sock().display()))
            .arg("--timeout=10")
            .args(args);
        let out = run(&mut cmd, "ovn-common")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The process ids of its daemons.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path(), &["ovsdb-nb", "ovsdb-sb", "ovn-northd"])
    }
}

impl Drop for OvnCentral {
    fn drop(&mut self) {
        for child in self.children.drain(..).rev() {
            stop(child);
        }
    }
}

/// One host's `ovn-controller`, stopped on drop.
pub struct OvnController {
    dir: TempDir,
    child: Option<Child>,
}

impl OvnController {
    /// Configures `ovs` as chassis `system_id` (Geneve tunnels from
    /// `encap_ip`, the southbound database at `sb`, an OVSDB remote such
    /// as `tcp:192.0.2.1:6642`, bridges on the userspace datapath) and
    /// starts ovn-controller on it; waits until it has created the
    /// integration bridge `br-int`.
    pub fn start(
        ovs: &OvsInstance,
        system_id: &str,
        sb: &str,
        encap_ip: IpAddr,
    ) -> Result<OvnController> {
        ovs.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("external_ids:system-id={system_id}"),
            &format!("external_ids:ovn-remote={sb}"),
            "external_ids:ovn-encap-type=geneve",
            &format!("external_ids:ovn-encap-ip={encap_ip}"),
            "external_ids:ovn-bridge-datapath-type=netdev",
        ])?;
        let dir = crate::temp_dir()?;
        let d = dir.path().to_path_buf();
        let mut cmd = daemon("ovn-controller", &d, "ovn-controller");
        // It reaches the bridges' OpenFlow sockets (`br-int.mgmt`) in the
        // OVS run directory.
        cmd.envs(ovs.env())
            .arg(format!("unix:{}", ovs.rundir().join("db.sock").display()));
        let child = spawn(&mut cmd, "ovn-host")?;
        let mut children = vec![child];
        let r = wait_until(
            "ovn-controller",
            &mut children,
            || logs(&d, &["ovn-controller"]),
            || ovs.vsctl(&["br-exists", "br-int"]).is_ok(),
        );
        let ctl = OvnController {
            dir,
            child: children.pop(),
        };
        r?;
        Ok(ctl)
    }

    /// The process id of ovn-controller.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log, for failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path(), &["ovn-controller"])
    }
}

impl Drop for OvnController {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}
