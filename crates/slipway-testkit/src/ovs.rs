//! Open vSwitch run by a test, in the test's own network namespace: an
//! `ovsdb-server` on a database of its own and an `ovs-vswitchd`, both
//! children of the test, killed on drop; plus a "guest" whose NIC is a
//! tap slipway plugs in (a QEMU with no machine forwarding between that
//! tap and an `eth0` in a namespace of the test's).
//!
//! Theory of operation: everything OVS keeps lives in one temporary
//! directory, named to every OVS program by `OVS_RUNDIR`, `OVS_DBDIR`,
//! `OVS_LOGDIR` and `OVS_SYSCONFDIR` ([`OvsInstance::env`]); `ovs-vsctl`
//! finds the database at `unix:$OVS_RUNDIR/db.sock` by itself, so giving a
//! slipway process the same environment points it at this instance. The
//! system's Open vSwitch service is never started or touched. Bridges use
//! the userspace datapath (`datapath_type=netdev`): the kernel here has no
//! `openvswitch` module, and the userspace datapath needs none (it reads
//! and writes each port through a packet socket, and creates the bridge's
//! internal port as a tap).
//!
//! Call [`OvsInstance::start`] only inside a user + network namespace the
//! test created ([`crate::enter_new_netns!`]): `ovs-vswitchd` creates
//! devices in the namespace it runs in.
//!
//! Needs: openvswitch-switch (ovsdb-server, ovs-vswitchd, ovs-vsctl,
//! ovsdb-tool), qemu-system-x86 and util-linux (nsenter) for
//! [`hub_guest_qemu`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::process::{run, spawn};

/// The Debian package of the OVS programs.
const PACKAGE: &str = "openvswitch-switch";
/// Where Debian installs the Open_vSwitch schema.
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// How long each daemon may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// An `ovsdb-server` and an `ovs-vswitchd` of the test's own, stopped
/// (SIGTERM, then SIGKILL) and their directory removed on drop.
pub struct OvsInstance {
    dir: TempDir,
    vswitchd: Option<Child>,
    db: Option<Child>,
}

impl OvsInstance {
    /// Creates the database (`ovsdb-tool create`), starts `ovsdb-server`
    /// on it, initializes it (`ovs-vsctl --no-wait init`), starts
    /// `ovs-vswitchd` and waits until it answers.
    pub fn start() -> Result<OvsInstance> {
        let dir = crate::temp_dir()?;
        let d = dir.path().to_path_buf();
        let mut ovs = OvsInstance {
            dir,
            vswitchd: None,
            db: None,
        };
        let conf = d.join("conf.db");
        run(
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(&conf)
                .arg(VSWITCH_SCHEMA),
            PACKAGE,
        )?;
        let db = spawn(
            ovs.daemon("ovsdb-server")
                .arg(&conf)
                .arg(format!("--remote=punix:{}", d.join("db.sock").display())),
            PACKAGE,
        )?;
        ovs.db = Some(db);
        ovs.wait_until("ovsdb-server", |o| {
            d.join("db.sock").exists() && o.vsctl(&["--no-wait", "init"]).is_ok()
        })?;
        let vswitchd = spawn(
            ovs.daemon("ovs-vswitchd")
                .arg(format!("unix:{}", d.join("db.sock").display())),
            PACKAGE,
        )?;
        ovs.vswitchd = Some(vswitchd);
        // Without --no-wait, ovs-vsctl waits for ovs-vswitchd to apply the
        // change: it answers once the switch runs.
        ovs.wait_until("ovs-vswitchd", |o| {
            d.join("ovs-vswitchd.ctl").exists()
                && o.vsctl(&["set", "Open_vSwitch", ".", "external-ids:slipway-test=1"])
                    .is_ok()
        })?;
        Ok(ovs)
    }

    /// Daemon `program`'s command ([`daemon`]) with this instance's
    /// environment, its files and control socket named after it.
    fn daemon(&self, program: &str) -> Command {
        let dir = self.dir.path();
        let mut cmd = daemon(program, dir, program);
        let ctl = dir.join(format!("{program}.ctl"));
        cmd.envs(self.env())
            .arg(format!("--unixctl={}", ctl.display()));
        cmd
    }

    /// Polls `up` until it holds; fails if a daemon exits first or after
    /// [`START_TIMEOUT`].
    fn wait_until(&mut self, what: &str, up: impl Fn(&OvsInstance) -> bool) -> Result<()> {
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if up(self) {
                return Ok(());
            }
            let exited = [&mut self.db, &mut self.vswitchd]
                .into_iter()
                .flatten()
                .find_map(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(Error::Command {
                    command: what.to_string(),
                    status: status.to_string(),
                    output: self.logs(),
                });
            }
            if Instant::now() > end {
                return Err(Error::Timeout {
                    what: format!("{what} to start"),
                    timeout: START_TIMEOUT,
                    transcript: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The instance's directory: database, sockets, pid files, logs.
    pub fn rundir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment that points OVS programs (and slipway, which runs
    /// `ovs-vsctl`) at this instance.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        let d = self.dir.path().to_path_buf();
        ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"]
            .into_iter()
            .map(|k| (k, d.clone()))
            .collect()
    }

    /// The process ids of `ovsdb-server` and `ovs-vswitchd`.
    pub fn pids(&self) -> Vec<u32> {
        [&self.db, &self.vswitchd]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect()
    }

    /// Runs `ovs-vsctl ARGS` against this instance; its output, trimmed.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ovs-vsctl");
        cmd.envs(self.env()).arg("--timeout=10").args(args);
        let out = run(&mut cmd, PACKAGE)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Adds bridge `name` on the userspace datapath and brings its
    /// internal port up.
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        self.vsctl(&[
            "add-br",
            name,
            "--",
            "set",
            "Bridge",
            name,
            "datapath_type=netdev",
        ])?;
        run(
            Command::new("ip").args(["link", "set", name, "up"]),
            "iproute2",
        )?;
        Ok(())
    }

    /// `ovs-vsctl --if-exists get TABLE RECORD COLUMN` (empty when the
    /// record does not exist).
    pub fn get(&self, table: &str, record: &str, column: &str) -> Result<String> {
        self.vsctl(&["--if-exists", "get", table, record, column])
    }

    /// The ports of `bridge`, sorted.
    pub fn ports(&self, bridge: &str) -> Result<Vec<String>> {
        let out = self.vsctl(&["list-ports", bridge])?;
        let mut ports: Vec<String> = out.lines().map(str::to_string).collect();
        ports.sort();
        Ok(ports)
    }

    /// Both daemons' log files, for failure messages.
    pub fn logs(&self) -> String {
        ["ovsdb-server.log", "ovs-vswitchd.log"]
            .iter()
            .map(|f| {
                let text = fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                format!("--- {f}\n{text}")
            })
            .collect()
    }
}

impl Drop for OvsInstance {
    fn drop(&mut self) {
        for child in [self.vswitchd.take(), self.db.take()].into_iter().flatten() {
            stop(child);
        }
    }
}

/// An OVS or OVN daemon's command: its pid file and log named `name`
/// under `dir`, quiet console, no standard streams. (Not its control
/// socket: ovn-controller has no `--unixctl`.)
pub(crate) fn daemon(program: &str, dir: &Path, name: &str) -> Command {
    let mut cmd = Command::new(program);
    for (option, ext) in [("pidfile", "pid"), ("log-file", "log")] {
        let file = dir.join(format!("{name}.{ext}"));
        cmd.arg(format!("--{option}={}", file.display()));
    }
    cmd.args(["--no-chdir", "-vconsole:off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// SIGTERM, up to 5 s to exit, then SIGKILL; always reaped.
pub(crate) fn stop(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Writes `dir/NAME`, an executable stand-in for QEMU to give
/// `slipway launch FILE -- PROGRAM`: it runs the real
/// `qemu-system-x86_64` with no machine (`-M none`) inside the network
/// namespace of process `netns_pid` (nsenter), keeps the launcher's
/// `-netdev` arguments (the taps slipway created, on their descriptors),
/// drops its `-device` arguments (no machine, no NICs), and joins each
/// netdev to a QEMU hub with a tap `eth0` it creates in that namespace:
/// frames go between slipway's tap and the namespace's `eth0` unchanged,
/// so the namespace is a guest on slipway's tap. QEMU is exec'd, so the
/// launcher's child is QEMU itself. Returns the path.
pub fn hub_guest_qemu(dir: &Path, name: &str, netns_pid: u32) -> Result<PathBuf> {
    let path = dir.join(name);
    let script = format!(
        r#"#!/bin/bash
# Written by slipway-testkit's ovs::hub_guest_qemu; see there.
set -e
args=() hub=() n=0
while [ $# -gt 0 ]; do
  case "$1" in
    -netdev)
      args+=(-netdev "$2")
      id="${{2##*id=}}"; id="${{id%%,*}}"
      hub+=(-netdev "hubport,id=hp$n,hubid=0,netdev=$id")
      n=$((n+1)); shift 2;;
    -device) shift 2;;
    *) args+=("$1"); shift;;
  esac
done
exec nsenter -t {netns_pid} -n qemu-system-x86_64 -M none -nodefaults -display none \
  "${{args[@]}}" "${{hub[@]}}" \
  -netdev tap,id=guest,ifname=eth0,script=no,downscript=no \
  -netdev hubport,id=hpguest,hubid=0,netdev=guest
"#
    );
    fs::write(&path, script).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    Ok(path)
}
