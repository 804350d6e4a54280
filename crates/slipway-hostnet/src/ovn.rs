//! OVN logical switches and ports for networks marked with `<slipway:ovn>`
//! (`slipway_netxml::OvnSwitch`): slipway's half of a network spanning
//! hosts. OVN does the rest: ovn-northd turns the northbound database into
//! logical flows, each host's ovn-controller binds a logical switch port
//! when an OVS interface's `external_ids:iface-id` names it (the
//! [`crate::ovs`] module puts that there), and tunnels (Geneve) carry the
//! traffic between hosts.
//!
//! Theory of operation. Everything goes through OVN's own clients, run from
//! argv arrays (never a shell), `--db` naming the northbound database of
//! the network's XML: `ovn-nbctl` for what it has commands for, and
//! `ovsdb-client transact` for the one thing it cannot do atomically.
//!
//! * Starting a network: [`OvnNb::ensure_switch`] creates the logical
//!   switch unless one of that name exists, marking it
//!   `external_ids:slipway-network=NAME`, and sets `other_config:subnet`
//!   on a switch carrying that mark. Several hosts running the same
//!   network share the switch; a switch someone else made is used as is.
//! * A port (libvirt's port API, one per guest interface):
//!   [`OvnNb::set_port`] adds the logical switch port named by the guest's
//!   `iface-id` (`--may-exist`: doing it again changes nothing), sets its
//!   addresses (`MAC IP`, `MAC dynamic` or `MAC`) and marks it with the
//!   network and the port's UUID; [`OvnNb::del_port`] removes it
//!   (`--if-exists`).
//! * Stopping: the network's ports go first, then
//!   [`OvnNb::remove_switch`] deletes the switch in one OVSDB transaction
//!   whose `where` requires it to carry this network's mark and to have no
//!   ports left, so a switch still holding another host's guests, or one
//!   slipway did not make, stays.
//!
//! Every step is idempotent, which is what makes a daemon restart (or a
//! start after a crash) safe: doing it again finds what is there. Values
//! go into `set` commands as JSON strings, which is how ovn-nbctl reads a
//! quoted value, and names were checked by the XML reader (no leading `-`,
//! nothing ovn-nbctl's syntax gives a meaning to). `OVN_NB_DAEMON` is
//! removed from the environment, so an ovn-nbctl daemon the caller may
//! have set up is never used in place of the network's `--db`.

use std::ffi::OsString;
use std::process::{Command, Stdio};

use slipway_netxml::OvnSwitch;

use crate::ovs::capped_stderr;

/// How long ovn-nbctl and ovsdb-client wait for the database, in seconds,
/// before giving up (and changing nothing).
pub const OVN_TIMEOUT_SECS: u32 = 10;

/// The `external_ids` key marking the switches and ports slipway made,
/// with the network's name as value.
pub const EXT_NETWORK: &str = "slipway-network";

/// The `external_ids` key holding a logical switch port's slipway port
/// UUID.
pub const EXT_PORT: &str = "slipway-port";

/// Why an OVN request failed.
#[derive(Debug, thiserror::Error)]
pub enum OvnError {
    /// The program could not be started.
    #[error("cannot run {program} (is OVN installed? Debian: ovn-common): {source}")]
    Spawn {
        /// `ovn-nbctl` or `ovsdb-client`.
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("OVN: {what}: {program} failed ({status}): {stderr}")]
    Failed {
        /// What was being done.
        what: String,
        /// `ovn-nbctl` or `ovsdb-client`.
        program: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its error output (capped).
        stderr: String,
    },
    /// The program's answer was not what it documents.
    #[error("OVN: {what}: unexpected answer: {why}")]
    Reply {
        /// What was being done.
        what: String,
        /// What was wrong with the answer.
        why: String,
    },
    /// More than one logical switch has the name (OVN allows it with
    /// `ls-add --add-duplicate`): slipway will not guess which is meant.
    #[error(
        "OVN: {count} logical switches are named '{switch}'; slipway needs the name to be unique"
    )]
    Duplicate {
        /// The name.
        switch: String,
        /// How many there are.
        count: usize,
    },
}

/// Who made a logical switch, as [`OvnNb::ensure_switch`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchOwner {
    /// slipway, for this network (now or earlier, on this host or another).
    Network,
    /// Someone else (no mark, or another network's): used, never changed
    /// or removed.
    Other(Option<String>),
}

/// A value as ovn-nbctl reads a quoted string: JSON.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// One network's northbound database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnNb {
    /// The `--db` value.
    db: String,
    /// The remotes, in order, for ovsdb-client (which takes one).
    remotes: Vec<String>,
    nbctl: OsString,
    client: OsString,
}

impl OvnNb {
    /// The northbound database at `remotes` (as the XML reader checked
    /// them), through `ovn-nbctl` and `ovsdb-client` from `PATH`.
    pub fn new(remotes: &[String]) -> OvnNb {
        OvnNb {
            db: remotes.join(","),
            remotes: remotes.to_vec(),
            nbctl: "ovn-nbctl".into(),
            client: "ovsdb-client".into(),
        }
    }

    /// The northbound database of `sw`.
    pub fn of(sw: &OvnSwitch) -> OvnNb {
        let remotes: Vec<String> = sw.nb.iter().map(ToString::to_string).collect();
        OvnNb::new(&remotes)
    }

    fn output(
        program: &'static str,
        mut cmd: Command,
        what: impl FnOnce() -> String,
    ) -> Result<String, OvnError> {
        let out = cmd
            .env_remove("OVN_NB_DAEMON")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| OvnError::Spawn { program, source })?;
        if !out.status.success() {
            return Err(OvnError::Failed {
                what: what(),
                program,
                status: out.status,
                stderr: capped_stderr(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ovn-nbctl --db=DB --timeout=N ARGS`.
    fn nbctl(&self, what: impl FnOnce() -> String, args: &[String]) -> Result<String, OvnError> {
        tracing::debug!("ovn-nbctl --db={} {}", self.db, args.join(" "));
        let mut cmd = Command::new(&self.nbctl);
        cmd.arg(format!("--db={}", self.db))
            .arg(format!("--timeout={OVN_TIMEOUT_SECS}"))
            .args(args);
        Self::output("ovn-nbctl", cmd, what)
    }

    /// The `slipway-network` mark of each logical switch named `switch`
    /// (`None` for one without it).
    fn switch_marks(&self, switch: &str) -> Result<Vec<Option<String>>, OvnError> {
        let what = || format!("cannot look up logical switch {switch}");
        let out = self.nbctl(
            what,
            &[
                "--format=json".into(),
                "--columns=external_ids".into(),
                "find".into(),
                "Logical_Switch".into(),
                format!("name={}", quoted(switch)),
            ],
        )?;
        let bad = |why: &str| OvnError::Reply {
            what: what(),
            why: why.to_string(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let rows = v["data"].as_array().ok_or_else(|| bad("no data array"))?;
        rows.iter()
            .map(|row| {
                // ["map", [[key, value], ...]]
                let pairs = row[0][1]
                    .as_array()
                    .ok_or_else(|| bad("external_ids is not a map"))?;
                Ok(pairs
                    .iter()
                    .find(|p| p[0] == EXT_NETWORK)
                    .and_then(|p| p[1].as_str())
                    .map(str::to_string))
            })
            .collect()
    }

    /// Makes sure logical switch `name` exists for `network`: creates it
    /// (marked for the network, with `other_config:subnet`) when there is
    /// none; on one marked for the network, sets (or removes)
    /// `other_config:subnet` as the XML says; leaves anyone else's alone.
    pub fn ensure_switch(
        &self,
        network: &str,
        name: &str,
        subnet: Option<&str>,
    ) -> Result<SwitchOwner, OvnError> {
        let mark = format!("external_ids:{EXT_NETWORK}={}", quoted(network));
        let subnet_args = |args: &mut Vec<String>| match subnet {
            Some(s) => args.extend([
                "--".into(),
                "set".into(),
                "Logical_Switch".into(),
                name.into(),
                format!("other_config:subnet={}", quoted(s)),
            ]),
            None => args.extend(
                [
                    "--",
                    "remove",
                    "Logical_Switch",
                    name,
                    "other_config",
                    "subnet",
                ]
                .map(String::from),
            ),
        };
        // Twice at most: another host may create it between the look-up
        // and the ls-add, which then fails and the second look-up finds it.
        for attempt in 0..2 {
            let marks = self.switch_marks(name)?;
            match marks.as_slice() {
                [] => {
                    let mut args: Vec<String> =
                        ["--", "ls-add", name, "--", "set", "Logical_Switch", name]
                            .map(String::from)
                            .into();
                    args.push(mark.clone());
                    subnet_args(&mut args);
                    match self.nbctl(|| format!("cannot create logical switch {name}"), &args) {
                        Ok(_) => return Ok(SwitchOwner::Network),
                        Err(OvnError::Failed { .. }) if attempt == 0 => continue,
                        Err(e) => return Err(e),
                    }
                }
                [Some(m)] if m == network => {
                    let mut args = Vec::new();
                    subnet_args(&mut args);
                    self.nbctl(|| format!("cannot configure logical switch {name}"), &args)?;
                    return Ok(SwitchOwner::Network);
                }
                [other] => return Ok(SwitchOwner::Other(other.clone())),
                many => {
                    return Err(OvnError::Duplicate {
                        switch: name.to_string(),
                        count: many.len(),
                    })
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Deletes logical switch `switch` if, in one transaction, it is
    /// marked for `network` and has no ports left. Returns whether it was
    /// deleted.
    pub fn remove_switch(&self, network: &str, switch: &str) -> Result<bool, OvnError> {
        let txn = serde_json::json!([
            "OVN_Northbound",
            {
                "op": "delete",
                "table": "Logical_Switch",
                "where": [
                    ["name", "==", switch],
                    ["ports", "==", ["set", []]],
                    ["external_ids", "includes", ["map", [[EXT_NETWORK, network]]]]
                ]
            }
        ])
        .to_string();
        let what = || format!("cannot remove logical switch {switch}");
        let mut last = None;
        // ovsdb-client talks to one server: the first that answers.
        for remote in &self.remotes {
            let mut cmd = Command::new(&self.client);
            cmd.arg(format!("--timeout={OVN_TIMEOUT_SECS}"))
                .arg("transact")
                .arg(remote)
                .arg(&txn);
            match Self::output("ovsdb-client", cmd, what) {
                Ok(out) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&out).map_err(|e| OvnError::Reply {
                            what: what(),
                            why: format!("not JSON: {e}"),
                        })?;
                    if let Some(err) = v[0]["error"].as_str() {
                        return Err(OvnError::Reply {
                            what: what(),
                            why: format!("{err}: {}", v[0]["details"]),
                        });
                    }
                    return v[0]["count"]
                        .as_u64()
                        .map(|n| n > 0)
                        .ok_or_else(|| OvnError::Reply {
                            what: what(),
                            why: format!("no count in {out}"),
                        });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("an OVN network has at least one remote"))
    }

    /// Adds (or finds) logical switch port `lsp` on `switch` with
    /// `addresses`, marked for `network` and slipway port `port`.
    pub fn set_port(
        &self,
        network: &str,
        switch: &str,
        lsp: &str,
        addresses: &str,
        port: uuid::Uuid,
    ) -> Result<(), OvnError> {
        let mut args: Vec<String> = [
            "--",
            "--may-exist",
            "lsp-add",
            switch,
            lsp,
            "--",
            "lsp-set-addresses",
            lsp,
            addresses,
            "--",
            "set",
            "Logical_Switch_Port",
            lsp,
        ]
        .map(String::from)
        .into();
        args.push(format!("external_ids:{EXT_NETWORK}={}", quoted(network)));
        args.push(format!(
            "external_ids:{EXT_PORT}={}",
            quoted(&port.to_string())
        ));
        self.nbctl(
            || format!("cannot add logical switch port {lsp} to {switch}"),
            &args,
        )
        .map(drop)
    }

    /// Removes logical switch port `lsp`, if it exists.
    pub fn del_port(&self, lsp: &str) -> Result<(), OvnError> {
        self.nbctl(
            || format!("cannot remove logical switch port {lsp}"),
            &["--", "--if-exists", "lsp-del", lsp].map(String::from),
        )
        .map(drop)
    }
}
