//! Open vSwitch ports: a guest's tap plugged into an OVS bridge the way
//! libvirt 9.0 plugs it (`src/util/virnetdevopenvswitch.c`), and unplugged.
//!
//! Theory of operation: OVS keeps its configuration in OVSDB, and the one
//! stable client interface to it is `ovs-vsctl`; libvirt drives it and so
//! does slipway, with the same transactions so that whatever reads OVSDB
//! after libvirt (ovn-controller binding a logical port by `iface-id`,
//! OpenStack's agents, `ovs-vsctl` scripts) finds the same records:
//!
//! ```text
//! ovs-vsctl --timeout=5 -- --if-exists del-port IF -- add-port BR IF [VLAN...]
//!   -- set Interface IF external-ids:attached-mac="MAC"
//!   -- set Interface IF external-ids:iface-id="IFACE-ID"
//!   -- set Interface IF external-ids:vm-id="VM-UUID"
//!   [-- set Interface IF external-ids:port-profile="PROFILE"
//!    -- set Interface IF external-ids:ifname="IF"]
//!   -- set Interface IF external-ids:iface-status=active
//! ovs-vsctl --timeout=5 -- --if-exists del-port IF
//! ```
//!
//! The leading `del-port` replaces libvirt 9.0's `--may-exist add-port`:
//! with `--may-exist`, ovs-vsctl does nothing when the port exists, so a
//! stale port of the same name (a launcher killed outright) would keep its
//! old VLAN columns; deleting first makes re-plugging start from a clean
//! port (tested: re-plugging on another VLAN moves the guest). The whole
//! command is one OVSDB transaction, so a failure leaves nothing half-set.
//! VLANs map as libvirt maps them: one tag → `tag=N`; a trunk →
//! `trunks=A,B,...` (libvirt writes the prefix `trunk=`, which ovs-vsctl
//! expands to the column `trunks`); a native VLAN → `vlan_mode=native-tagged`
//! or `native-untagged` with `tag=N`.
//!
//! Nothing from outside reaches ovs-vsctl unchecked: it runs from an argv
//! array, never a shell; bridge and interface names are [`OvsName`]s
//! (characters that mean nothing to ovs-vsctl's argument syntax, never a
//! leading `-`); ids are UUIDs; the profile id is a [`ProfileId`] written
//! as a JSON string, which is how ovs-vsctl reads a quoted value.
//!
//! Which OVS: `ovs-vsctl` from `PATH`, talking to the database it finds
//! itself (`unix:$OVS_RUNDIR/db.sock`, `/var/run/openvswitch/db.sock`
//! without `OVS_RUNDIR`); [`Ovs::from_env`] adds `--db=` from
//! `SLIPWAY_OVS_DB` when that is set (another socket or a `tcp:` remote).

use std::ffi::OsString;
use std::fmt;
use std::process::{Command, Stdio};

use slipway_host::MacAddr;
use slipway_netxml::{NativeVlanMode, Vlan, VLAN_ID_MAX};

/// libvirt's `VIR_NETDEV_OVS_DEFAULT_TIMEOUT`: ovs-vsctl gives up (and
/// changes nothing) after this many seconds without an answer from the
/// database.
pub const OVS_TIMEOUT_SECS: u32 = 5;

/// The environment variable naming the OVSDB server (`--db=` of
/// ovs-vsctl) when it is not the default one.
pub const OVS_DB_ENV: &str = "SLIPWAY_OVS_DB";

/// The most of ovs-vsctl's error output kept in an error, in bytes.
pub const MAX_OVS_STDERR: usize = 2048;

/// The longest OVS bridge or interface name (the kernel's, as taps and
/// OVS internal ports are kernel devices).
const OVS_NAME_MAX: usize = 15;

/// What is wrong with an Open vSwitch request, or why ovs-vsctl failed.
#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    /// A bridge or interface name slipway does not pass to ovs-vsctl.
    #[error("invalid Open vSwitch {what} name '{name}': {why}")]
    Name {
        /// `bridge` or `interface`.
        what: &'static str,
        /// The name, escaped for printing.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `profileid` slipway does not pass to ovs-vsctl.
    #[error("invalid Open vSwitch port profile '{name}': {why}")]
    Profile {
        /// The profile id, escaped for printing.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A VLAN setting OVS cannot carry.
    #[error("invalid VLAN for Open vSwitch port {iface}: {why}")]
    Vlan {
        /// The interface.
        iface: String,
        /// What is wrong.
        why: String,
    },
    /// ovs-vsctl could not be started.
    #[error("cannot run ovs-vsctl (is Open vSwitch installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// ovs-vsctl ran and failed.
    #[error("{what}: ovs-vsctl failed ({status}): {stderr}")]
    Failed {
        /// What was being done, as libvirt says it.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its error output (at most [`MAX_OVS_STDERR`] bytes).
        stderr: String,
    },
}

/// A bridge or interface name slipway hands to ovs-vsctl: 1 to 15 bytes of
/// ASCII letters, digits, `_`, `.` and `-`, not starting with `-` (which
/// ovs-vsctl would read as an option). Every name the kernel accepts for a
/// tap slipway creates (`vnetN`) or a bridge libvirt generates fits; names
/// with other characters are refused rather than quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OvsName(String);

impl OvsName {
    /// Checks a bridge name.
    pub fn bridge(name: &str) -> Result<OvsName, OvsError> {
        OvsName::check("bridge", name)
    }

    /// Checks an interface (port) name.
    pub fn interface(name: &str) -> Result<OvsName, OvsError> {
        OvsName::check("interface", name)
    }

    fn check(what: &'static str, name: &str) -> Result<OvsName, OvsError> {
        let bad = |why| OvsError::Name {
            what,
            name: name.escape_debug().to_string(),
            why,
        };
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if name.len() > OVS_NAME_MAX {
            return Err(bad("longer than 15 bytes"));
        }
        if name.starts_with('-') {
            return Err(bad("starts with '-'"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(bad(
                "only ASCII letters, digits, '_', '.' and '-' are allowed",
            ));
        }
        if name == "." || name == ".." {
            return Err(bad("'.' and '..' are not device names"));
        }
        Ok(OvsName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OvsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OVS `port-profile` (libvirt's `profileid`): 1 to
/// [`slipway_netxml::PROFILE_ID_MAX`] bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileId(String);

impl ProfileId {
    /// Checks a profile id.
    pub fn new(id: &str) -> Result<ProfileId, OvsError> {
        let bad = |why| OvsError::Profile {
            name: id.escape_debug().to_string(),
            why,
        };
        if id.is_empty() {
            return Err(bad("empty"));
        }
        if id.len() > slipway_netxml::PROFILE_ID_MAX {
            return Err(bad("longer than 39 bytes"));
        }
        if id.chars().any(char::is_control) {
            return Err(bad("control characters are not allowed"));
        }
        Ok(ProfileId(id.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One guest interface on an OVS bridge: what libvirt's
/// `virNetDevOpenvswitchAddPort` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsPort {
    /// The OVS bridge.
    pub bridge: OvsName,
    /// The tap (the OVS port and interface of the same name).
    pub iface: OvsName,
    /// `external-ids:iface-id`: the `<virtualport>`'s `interfaceid` (what
    /// OVN binds a logical port by).
    pub iface_id: uuid::Uuid,
    /// `external-ids:attached-mac`: the guest's MAC address.
    pub mac: MacAddr,
    /// `external-ids:vm-id`: the domain's UUID.
    pub vm_id: uuid::Uuid,
    /// `external-ids:port-profile` (with `external-ids:ifname`).
    pub profile_id: Option<ProfileId>,
    /// VLAN tags of the port (`tag`, `trunks`, `vlan_mode`).
    pub vlan: Option<Vlan>,
}

/// The `external-ids` value form libvirt writes (`key="value"`); the value
/// is a JSON string, which ovs-vsctl reads back exactly.
fn ext_id(key: &str, value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_string()).to_string();
    format!("external-ids:{key}={quoted}")
}

fn vlan_args(iface: &OvsName, vlan: &Vlan, args: &mut Vec<String>) -> Result<(), OvsError> {
    if vlan.tags.is_empty() {
        return Ok(());
    }
    let bad = |why: String| OvsError::Vlan {
        iface: iface.to_string(),
        why,
    };
    if let Some(t) = vlan.tags.iter().find(|t| **t > VLAN_ID_MAX) {
        return Err(bad(format!("tag {t} is above {VLAN_ID_MAX}")));
    }
    if !vlan.trunk && vlan.tags.len() > 1 {
        return Err(bad("several tags need trunk='yes'".into()));
    }
    if let Some((mode, tag)) = vlan.native {
        if tag > VLAN_ID_MAX {
            return Err(bad(format!("native tag {tag} is above {VLAN_ID_MAX}")));
        }
        args.push(
            match mode {
                NativeVlanMode::Tagged => "vlan_mode=native-tagged",
                NativeVlanMode::Untagged => "vlan_mode=native-untagged",
            }
            .into(),
        );
        args.push(format!("tag={tag}"));
    }
    if vlan.trunk {
        let list: Vec<String> = vlan.tags.iter().map(u16::to_string).collect();
        args.push(format!("trunks={}", list.join(",")));
    } else {
        args.push(format!("tag={}", vlan.tags[0]));
    }
    Ok(())
}

/// A tool's error output for an error message: trimmed, at most
/// [`MAX_OVS_STDERR`] bytes (cut at a character boundary, then `...`).
pub(crate) fn capped_stderr(stderr: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(stderr).trim().to_string();
    if s.len() > MAX_OVS_STDERR {
        let mut end = MAX_OVS_STDERR;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// Runs ovs-vsctl for slipway: which program and which database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovs {
    program: OsString,
    db: Option<OsString>,
}

impl Default for Ovs {
    fn default() -> Self {
        Ovs::from_env()
    }
}

impl Ovs {
    /// `ovs-vsctl` from `PATH`, with `--db=$SLIPWAY_OVS_DB` when that is
    /// set and not empty (ovs-vsctl itself honours `OVS_RUNDIR`).
    pub fn from_env() -> Ovs {
        Ovs {
            program: "ovs-vsctl".into(),
            db: std::env::var_os(OVS_DB_ENV).filter(|d| !d.is_empty()),
        }
    }

    /// `ovs-vsctl` from `PATH` with `--db=DB` (an OVSDB remote:
    /// `unix:PATH`, `tcp:HOST:PORT`, ...).
    pub fn with_db(db: &str) -> Ovs {
        Ovs {
            program: "ovs-vsctl".into(),
            db: Some(db.into()),
        }
    }

    /// The arguments of one ovs-vsctl run: the global options, then `args`.
    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.program);
        if let Some(db) = &self.db {
            let mut opt = OsString::from("--db=");
            opt.push(db);
            cmd.arg(opt);
        }
        cmd.arg(format!("--timeout={OVS_TIMEOUT_SECS}"));
        cmd.args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs ovs-vsctl with `args`; its standard output on success.
    fn run(&self, what: impl FnOnce() -> String, args: &[String]) -> Result<String, OvsError> {
        tracing::debug!("ovs-vsctl {}", args.join(" "));
        let out = self.command(args).output().map_err(OvsError::Spawn)?;
        if !out.status.success() {
            return Err(OvsError::Failed {
                what: what(),
                status: out.status,
                stderr: capped_stderr(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The ovs-vsctl arguments (after the global options) that plug `port`.
    pub fn add_port_args(port: &OvsPort) -> Result<Vec<String>, OvsError> {
        let (br, ifc) = (port.bridge.as_str(), port.iface.as_str());
        let mut args: Vec<String> = ["--", "--if-exists", "del-port", ifc]
            .into_iter()
            .chain(["--", "add-port", br, ifc])
            .map(String::from)
            .collect();
        if let Some(vlan) = &port.vlan {
            vlan_args(&port.iface, vlan, &mut args)?;
        }
        let mut ids = vec![
            ext_id("attached-mac", &port.mac.to_string()),
            ext_id("iface-id", &port.iface_id.hyphenated().to_string()),
            ext_id("vm-id", &port.vm_id.hyphenated().to_string()),
        ];
        if let Some(p) = &port.profile_id {
            ids.push(ext_id("port-profile", p.as_str()));
            ids.push(ext_id("ifname", ifc));
        }
        ids.push("external-ids:iface-status=active".into());
        for id in ids {
            args.extend(["--", "set", "Interface", ifc].map(String::from));
            args.push(id);
        }
        Ok(args)
    }

    /// Plugs `port` into its bridge, replacing a port of the same name
    /// (libvirt's `virNetDevOpenvswitchAddPort`); one OVSDB transaction.
    pub fn add_port(&self, port: &OvsPort) -> Result<(), OvsError> {
        let args = Ovs::add_port_args(port)?;
        self.run(
            || {
                format!(
                    "Unable to add port {} to OVS bridge {}",
                    port.iface, port.bridge
                )
            },
            &args,
        )
        .map(drop)
    }

    /// Removes the port `iface` from whichever bridge has it; nothing when
    /// none has (libvirt's `virNetDevOpenvswitchRemovePort`).
    pub fn del_port(&self, iface: &OvsName) -> Result<(), OvsError> {
        let args: Vec<String> = ["--", "--if-exists", "del-port", iface.as_str()]
            .map(String::from)
            .into();
        self.run(|| format!("Unable to delete port {iface} from OVS"), &args)
            .map(drop)
    }

    /// Whether `bridge` is an OVS bridge (`ovs-vsctl br-exists`, which
    /// exits 2 for "no").
    pub fn bridge_exists(&self, bridge: &OvsName) -> Result<bool, OvsError> {
        let args = vec!["br-exists".to_string(), bridge.to_string()];
        match self.run(|| format!("Unable to look up OVS bridge {bridge}"), &args) {
            Ok(_) => Ok(true),
            Err(OvsError::Failed { status, .. }) if status.code() == Some(2) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> OvsPort {
        OvsPort {
            bridge: OvsName::bridge("ovsbr0").unwrap(),
            iface: OvsName::interface("vnet0").unwrap(),
            iface_id: "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f".parse().unwrap(),
            mac: "52:54:00:AB:cd:01".parse().unwrap(),
            vm_id: "c7a5fdbd-edaf-9455-926a-d65c16db1809".parse().unwrap(),
            profile_id: None,
            vlan: None,
        }
    }

    fn set(id: &str) -> Vec<String> {
        ["--", "set", "Interface", "vnet0", id]
            .map(String::from)
            .into()
    }

    #[test]
    fn add_port_is_libvirts_transaction() {
        let args = Ovs::add_port_args(&port()).unwrap();
        let mut want: Vec<String> = [
            "--",
            "--if-exists",
            "del-port",
            "vnet0",
            "--",
            "add-port",
            "ovsbr0",
            "vnet0",
        ]
        .map(String::from)
        .into();
        want.extend(set(r#"external-ids:attached-mac="52:54:00:ab:cd:01""#));
        want.extend(set(
            r#"external-ids:iface-id="09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f""#,
        ));
        want.extend(set(
            r#"external-ids:vm-id="c7a5fdbd-edaf-9455-926a-d65c16db1809""#,
        ));
        want.extend(set("external-ids:iface-status=active"));
        assert_eq!(args, want);
    }

    #[test]
    fn profile_adds_port_profile_and_ifname_json_quoted() {
        let mut p = port();
        p.profile_id = Some(ProfileId::new(r#"gold "x"\y"#).unwrap());
        let args = Ovs::add_port_args(&p).unwrap();
        let tail: Vec<&str> = args.iter().map(String::as_str).rev().take(11).collect();
        assert_eq!(
            tail,
            [
                "external-ids:iface-status=active",
                "vnet0",
                "Interface",
                "set",
                "--",
                r#"external-ids:ifname="vnet0""#,
                "vnet0",
                "Interface",
                "set",
                "--",
                r#"external-ids:port-profile="gold \"x\"\\y""#,
            ]
        );
    }

    fn vlan_of(v: Vlan) -> Vec<String> {
        let mut p = port();
        p.vlan = Some(v);
        let args = Ovs::add_port_args(&p).unwrap();
        let start = 8;
        let end = args[start..].iter().position(|a| a == "--").unwrap() + start;
        args[start..end].to_vec()
    }

    #[test]
    fn vlans_as_libvirt_maps_them() {
        let v = |trunk, tags: &[u16], native| Vlan {
            trunk,
            tags: tags.to_vec(),
            native,
        };
        assert_eq!(vlan_of(v(false, &[42], None)), ["tag=42"]);
        assert_eq!(vlan_of(v(true, &[42], None)), ["trunks=42"]);
        assert_eq!(vlan_of(v(true, &[42, 47], None)), ["trunks=42,47"]);
        assert_eq!(
            vlan_of(v(true, &[42, 47], Some((NativeVlanMode::Untagged, 42)))),
            ["vlan_mode=native-untagged", "tag=42", "trunks=42,47"]
        );
        assert_eq!(
            vlan_of(v(true, &[3, 9], Some((NativeVlanMode::Tagged, 9)))),
            ["vlan_mode=native-tagged", "tag=9", "trunks=3,9"]
        );
        assert!(vlan_of(v(false, &[], None)).is_empty());
        let mut p = port();
        p.vlan = Some(v(false, &[4096], None));
        assert!(matches!(Ovs::add_port_args(&p), Err(OvsError::Vlan { .. })));
        p.vlan = Some(v(false, &[1, 2], None));
        assert!(matches!(Ovs::add_port_args(&p), Err(OvsError::Vlan { .. })));
    }

    #[test]
    fn names_that_could_be_options_or_syntax_are_refused() {
        for bad in [
            "",
            "-x",
            "--db=tcp:1",
            "a b",
            "a=b",
            "a\"b",
            "a,b",
            "a:b",
            "a/b",
            "x{1}",
            "0123456789abcdef",
            ".",
            "é",
        ] {
            let e = OvsName::interface(bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("invalid Open vSwitch interface name"),
                "{bad}: {e}"
            );
        }
        for good in ["vnet0", "ovsbr0", "br-int", "tap_1.2", "a-"] {
            assert_eq!(OvsName::bridge(good).unwrap().as_str(), good);
        }
        assert!(ProfileId::new("").is_err());
        assert!(ProfileId::new("a\nb").is_err());
        assert!(ProfileId::new(&"p".repeat(40)).is_err());
        assert!(ProfileId::new(&"p".repeat(39)).is_ok());
    }

    #[test]
    fn error_output_is_bounded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("ovs-vsctl");
        std::fs::write(
            &prog,
            "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ovs = Ovs {
            program: prog.into_os_string(),
            db: None,
        };
        let e = ovs
            .del_port(&OvsName::interface("vnet0").unwrap())
            .unwrap_err();
        let OvsError::Failed { stderr, what, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(what, "Unable to delete port vnet0 from OVS");
        assert_eq!(stderr.len(), MAX_OVS_STDERR + 3);
        assert!(stderr.ends_with("xx..."));
    }

    #[test]
    fn a_database_that_never_answers_fails_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("db.sock");
        let _silent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let ovs = Ovs::with_db(&format!("unix:{}", sock.display()));
        let e = ovs
            .del_port(&OvsName::interface("vnet0").unwrap())
            .unwrap_err();
        let OvsError::Failed { status, .. } = &e else {
            panic!("{e}")
        };
        // ovs-vsctl's --timeout: its alarm ends it.
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGALRM), "{e}");
    }

    #[test]
    fn db_override_comes_first() {
        let ovs = Ovs {
            program: "ovs-vsctl".into(),
            db: Some("unix:/tmp/x/db.sock".into()),
        };
        let cmd = ovs.command(&["show".into()]);
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["--db=unix:/tmp/x/db.sock", "--timeout=5", "show"]);
    }
}
