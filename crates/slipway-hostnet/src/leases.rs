//! The leases file of a network's DHCP service (crash-safe JSON in a
//! directory of its own next to the live state, which the confined service
//! owns) and virsh's `net-dhcp-leases` table built from it. IPv4 leases and
//! DHCPv6 bindings share the file (files written before IPv6 was leased
//! hold IPv4 records only, and read the same).

use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use slipway_dhcp::v6::Binding;
use slipway_dhcp::{HostName, Lease};
use slipway_host::MacAddr;

use crate::error::{Error, Result};
use slipway_host::files::{read_regular, Dir};

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Client MAC, `52:54:00:…`; for IPv6, the one in the client's DUID
    /// (DUID-LL or DUID-LLT), else `-`.
    pub mac: String,
    /// The leased address.
    pub ip: IpAddr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// The lease's host name (see [`Lease::hostname`]); files of older
    /// versions may hold any text here (see [`LeaseRecord::host_name`]).
    pub hostname: Option<String>,
    /// Client identifier (IPv4) or DUID (IPv6), colon-separated hex as
    /// dnsmasq prints it.
    pub client_id: Option<String>,
    /// The IA_NA's identifier of an IPv6 binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iaid: Option<u32>,
    /// Expiry, seconds since the epoch; `None` for an infinite lease.
    pub expires: Option<u64>,
}

fn epoch(t: Option<SystemTime>) -> Option<u64> {
    t.map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// The Ethernet address in a DUID-LLT (type 1) or DUID-LL (type 3) of
/// hardware type 1 (RFC 8415 11.2, 11.4), which is where dnsmasq finds a
/// DHCPv6 client's MAC when the neighbour table does not say.
pub fn duid_mac(duid: &[u8]) -> Option<[u8; 6]> {
    let mac = match duid.get(..4)? {
        [0, 1, 0, 1] => duid.get(8..)?,
        [0, 3, 0, 1] => duid.get(4..)?,
        _ => return None,
    };
    mac.try_into().ok()
}

/// Parses a DUID as libvirt writes it in `<host id=...>`: hex bytes
/// separated by colons, leading zeros optional (`0:3:0:1:52:54:0:0:0:1`).
pub fn parse_duid(text: &str) -> Option<Vec<u8>> {
    unhex(text)
}

/// The leases file of network `name` in the backend's directory `dir`: in
/// a directory of its own (`NAME.leases/`), the only place the confined
/// service may write.
pub(crate) fn leases_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.leases")).join("leases.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    text.split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

impl LeaseRecord {
    /// The record of a server lease.
    pub fn from_lease(lease: &Lease, prefix: u8) -> LeaseRecord {
        LeaseRecord {
            mac: MacAddr(lease.mac).to_string(),
            ip: IpAddr::V4(lease.ip),
            prefix,
            hostname: lease.hostname.as_ref().map(HostName::to_string),
            client_id: lease.client_id.as_deref().map(hex),
            iaid: None,
            expires: epoch(lease.expires),
        }
    }

    /// The record of a DHCPv6 binding.
    pub fn from_binding(binding: &Binding, prefix: u8) -> LeaseRecord {
        LeaseRecord {
            mac: duid_mac(&binding.duid).map_or_else(|| "-".into(), |m| MacAddr(m).to_string()),
            ip: IpAddr::V6(binding.ip),
            prefix,
            hostname: binding.hostname.as_ref().map(HostName::to_string),
            client_id: Some(hex(&binding.duid)),
            iaid: Some(binding.iaid),
            expires: epoch(binding.expires),
        }
    }

    /// Back to a DHCPv6 binding; `None` for an IPv4 lease or a malformed DUID.
    pub fn to_binding(&self) -> Option<Binding> {
        let IpAddr::V6(ip) = self.ip else { return None };
        Some(Binding {
            duid: unhex(self.client_id.as_deref()?)?,
            iaid: self.iaid?,
            ip,
            hostname: self.host_name(),
            expires: self.expires.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        })
    }

    /// The record's host name under the rule for client names (a file of an
    /// older version may hold anything): `None` when it does not pass.
    pub fn host_name(&self) -> Option<HostName> {
        let text = self.hostname.as_deref()?;
        HostName::from_client(text.as_bytes())
            .inspect_err(|e| tracing::warn!("saved lease of {}: {e}; name dropped", self.ip))
            .ok()
    }

    /// Whether the lease holds at `now` (seconds since the epoch).
    pub fn is_active(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    /// Back to a server lease; `None` for an IPv6 binding or if the MAC or
    /// client id is malformed.
    pub fn to_lease(&self) -> Option<Lease> {
        let IpAddr::V4(ip) = self.ip else { return None };
        let mac = self.mac.parse::<MacAddr>().ok()?.0;
        let client_id = match &self.client_id {
            Some(c) => Some(unhex(c)?),
            None => None,
        };
        Some(Lease {
            mac,
            ip,
            hostname: self.host_name(),
            client_id,
            expires: self.expires.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        })
    }
}

fn parse(path: &Path, read: std::io::Result<Vec<u8>>) -> Result<Vec<LeaseRecord>> {
    match read {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

/// Reads a leases file; a missing file is no leases. A symlink or anything
/// but a regular file is refused (the file is the confined service's).
pub fn load(path: &Path) -> Result<Vec<LeaseRecord>> {
    parse(path, read_regular(path))
}

/// The leases file as the service holds it: its directory, opened once
/// (created if missing, mode 0700), then read and replaced by name, so
/// that the service can keep writing it once confined.
#[derive(Debug)]
pub struct LeasesFile {
    dir: Dir,
    name: std::ffi::OsString,
}

impl LeasesFile {
    /// Opens the directory of leases file `path`, creating it if need be.
    pub fn open(path: &Path) -> Result<LeasesFile> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::io(
                "cannot use",
                path,
                std::io::ErrorKind::InvalidInput.into(),
            ));
        };
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("cannot create", dir, e)),
        }
        // What a writer that crashed (the service, killed) left behind.
        slipway_host::atomic::clean_stale(dir);
        Ok(LeasesFile {
            dir: Dir::open(dir).map_err(|e| Error::io("cannot open", dir, e))?,
            name: name.to_os_string(),
        })
    }

    /// The directory holding the file.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// Reads the leases; a missing file is no leases.
    pub fn load(&self) -> Result<Vec<LeaseRecord>> {
        parse(&self.path(), self.dir.read(&self.name))
    }

    /// Replaces the file with `leases` atomically.
    pub fn save(&self, leases: &[LeaseRecord]) -> Result<()> {
        let json = serde_json::to_vec_pretty(leases).map_err(|e| Error::corrupt(self.path(), e))?;
        Ok(self.dir.write_atomic(&self.name, &json)?)
    }

    /// Reads the leases when the service starts. A file that does not read
    /// (garbage, cut short, records of the wrong shape) does not stop the
    /// network: it is moved aside to `FILE.corrupt-SECONDS` (never over an
    /// earlier one) with a warning, and the leases that could be read from
    /// it are kept (and written back).
    pub fn load_or_recover(&self) -> Result<Vec<LeaseRecord>> {
        let why = match self.load() {
            Err(Error::Corrupt { why, .. }) => why,
            other => return other,
        };
        let path = self.path();
        let bytes = self
            .dir
            .read(&self.name)
            .map_err(|e| Error::io("cannot read", &path, e))?;
        let (kept, lost) = salvage(&bytes);
        let suffix = format!(".corrupt-{}", epoch(Some(SystemTime::now())).unwrap_or(0));
        let aside = self
            .dir
            .rename_aside(&self.name, &suffix)
            .map_err(|e| Error::io("cannot move aside", &path, e))?;
        tracing::warn!(
            "leases file {} is damaged ({why}): moved to {}; {} leases kept, {lost} unreadable",
            path.display(),
            self.dir.path().join(aside).display(),
            kept.len()
        );
        self.save(&kept)?;
        Ok(kept)
    }
}

/// The records readable from a damaged leases file, and how many elements
/// of its list were not: every well-formed record of the list up to where
/// the JSON itself breaks (if it does).
fn salvage(bytes: &[u8]) -> (Vec<LeaseRecord>, usize) {
    struct Salvage<'a>(&'a mut Vec<LeaseRecord>, &'a mut usize);
    impl<'de> serde::de::Visitor<'de> for Salvage<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of leases")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(value) = seq.next_element::<serde_json::Value>()? {
                match serde_json::from_value(value) {
                    Ok(record) => self.0.push(record),
                    Err(_) => *self.1 += 1,
                }
            }
            Ok(())
        }
    }
    let (mut kept, mut lost) = (Vec::new(), 0);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // An error ends the list; what was read before it stays in `kept`.
    let _ = serde::Deserializer::deserialize_seq(&mut de, Salvage(&mut kept, &mut lost));
    (kept, lost)
}

/// Formats seconds since the epoch as local time, `%Y-%m-%d %H:%M:%S`.
fn local_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: an all-zero tm is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "-".into();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `text` for a terminal: everything but printable ASCII (control bytes,
/// escape sequences, any other character) as `\u{..}`, and `\` as `\\`. The
/// leases file may be one an older version wrote, with names as guests sent
/// them.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\\' => "\\\\".to_string(),
            ' '..='~' => c.to_string(),
            _ => c.escape_unicode().to_string(),
        })
        .collect()
}

/// virsh's `net-dhcp-leases` table of the active leases at `now`, sorted by
/// MAC, only those of `mac` when given (compared case-insensitively).
pub fn table(leases: &[LeaseRecord], mac: Option<&str>, now: SystemTime) -> String {
    let active = active(leases, mac, now);
    let header = [
        "Expiry Time",
        "MAC address",
        "Protocol",
        "IP address",
        "Hostname",
        "Client ID or DUID",
    ];
    let rows: Vec<Vec<String>> = active
        .iter()
        .map(|l| {
            vec![
                // libvirt reports an infinite lease with expiry time 0.
                local_time(l.expires.unwrap_or(0)),
                printable(&l.mac),
                if l.ip.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
                format!("{}/{}", l.ip, l.prefix),
                l.hostname.as_deref().map_or_else(|| "-".into(), printable),
                l.client_id.as_deref().map_or_else(|| "-".into(), printable),
            ]
        })
        .collect();
    slipway_netmgr::vsh_table(&header, &rows)
}

/// Every stored lease (active or not) of network `name` whose live state is
/// in `state_dir`: what `net-dhcp-leases` and libvirt's
/// `virNetworkGetDHCPLeases` read.
pub fn network_leases(state_dir: &Path, name: &str) -> Result<Vec<LeaseRecord>> {
    load(&leases_file(&crate::own_dir(state_dir), name))
}

/// The leases of `leases` active at `now`, sorted by MAC, only those of
/// `mac` when given (compared case-insensitively): what `net-dhcp-leases`
/// shows.
fn active<'a>(
    leases: &'a [LeaseRecord],
    mac: Option<&str>,
    now: SystemTime,
) -> Vec<&'a LeaseRecord> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut active: Vec<&LeaseRecord> = leases
        .iter()
        .filter(|l| l.is_active(now))
        .filter(|l| mac.is_none_or(|m| m.eq_ignore_ascii_case(&l.mac)))
        .collect();
    active.sort_by_key(|l| l.mac.to_ascii_lowercase());
    active
}

/// One lease as `net-dhcp-leases --json` prints it: the keys and values of
/// python-libvirt's `virNetwork.DHCPLeases()` dictionaries, so scripts
/// written for libvirt read it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseJson {
    /// The network's bridge.
    pub iface: String,
    /// Expiry, seconds since the epoch; 0 for an infinite lease (libvirt's).
    pub expirytime: u64,
    /// libvirt's address type: 0 for IPv4, 1 for IPv6.
    #[serde(rename = "type")]
    pub kind: u8,
    /// The client's MAC address.
    pub mac: String,
    /// The IA_NA's identifier of an IPv6 binding, as text (libvirt's).
    pub iaid: Option<String>,
    /// The leased address.
    pub ipaddr: IpAddr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// The lease's host name.
    pub hostname: Option<String>,
    /// Client identifier (IPv4) or DUID (IPv6).
    pub clientid: Option<String>,
}

/// The `net-dhcp-leases NAME [--mac MAC]` table of network `name` whose live
/// state is in `state_dir`.
pub fn leases_table(state_dir: &Path, name: &str, mac: Option<&str>) -> Result<String> {
    let leases = network_leases(state_dir, name)?;
    Ok(table(&leases, mac, SystemTime::now()))
}

/// The leases of [`leases_table`] as data, for `net-dhcp-leases --json`;
/// `iface` is the network's bridge.
pub fn leases_json(
    state_dir: &Path,
    name: &str,
    iface: &str,
    mac: Option<&str>,
) -> Result<Vec<LeaseJson>> {
    let leases = load(&leases_file(&crate::own_dir(state_dir), name))?;
    Ok(active(&leases, mac, SystemTime::now())
        .into_iter()
        .map(|l| LeaseJson {
            iface: iface.to_string(),
            expirytime: l.expires.unwrap_or(0),
            kind: u8::from(l.ip.is_ipv6()),
            mac: l.mac.clone(),
            iaid: l.iaid.map(|i| i.to_string()),
            ipaddr: l.ip,
            prefix: l.prefix,
            hostname: l.hostname.clone(),
            clientid: l.client_id.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table as virsh printed it for one lease, with the expiry checked
    /// separately (it is local time).
    #[test]
    fn table_matches_virsh_layout() {
        let rec = LeaseRecord {
            mac: "52:54:00:90:ca:e0".into(),
            ip: IpAddr::from([192, 168, 122, 240]),
            prefix: 24,
            hostname: None,
            client_id: Some("01:52:54:00:90:ca:e0".into()),
            iaid: None,
            expires: Some(4_000_000_000),
        };
        let expired = LeaseRecord {
            mac: "52:54:00:00:00:01".into(),
            expires: Some(10),
            ..rec.clone()
        };
        let out = table(&[rec, expired], None, UNIX_EPOCH + Duration::from_secs(100));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], " Expiry Time           MAC address         Protocol   IP address           Hostname   Client ID or DUID");
        assert_eq!(lines[1], "-".repeat(108));
        assert_eq!(
            &lines[2][20..],
            "   52:54:00:90:ca:e0   ipv4       192.168.122.240/24   -          01:52:54:00:90:ca:e0"
        );
        assert_eq!(lines[2][..20], format!(" {}", local_time(4_000_000_000)));
        let none = table(&[], Some("52:54:00:90:CA:E0"), UNIX_EPOCH);
        assert_eq!(none.lines().count(), 2);
    }

    #[test]
    fn records_round_trip_to_leases() {
        let lease = Lease {
            mac: [0x52, 0x54, 0, 1, 2, 3],
            ip: std::net::Ipv4Addr::new(10, 0, 0, 5),
            hostname: HostName::from_client(b"g").ok(),
            client_id: Some(vec![1, 0x52, 0x54, 0, 1, 2, 3]),
            expires: Some(UNIX_EPOCH + Duration::from_secs(77)),
        };
        let rec = LeaseRecord::from_lease(&lease, 24);
        assert_eq!(rec.client_id.as_deref(), Some("01:52:54:00:01:02:03"));
        assert_eq!(rec.to_lease(), Some(lease));
        let bad = LeaseRecord {
            mac: "zz".into(),
            ..rec
        };
        assert_eq!(bad.to_lease(), None);
    }

    /// An IPv6 row as virsh prints one for dnsmasq's DHCPv6 lease: protocol
    /// ipv6, address/prefix, the DUID in the last column.
    #[test]
    fn ipv6_bindings_make_ipv6_rows() {
        let binding = Binding {
            duid: vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x46, 0, 3],
            iaid: 0x46_0003,
            ip: "2001:db8:ca2:2::1ff".parse().unwrap(),
            hostname: HostName::from_client(b"g6").ok(),
            expires: Some(UNIX_EPOCH + Duration::from_secs(4_000_000_000)),
        };
        let rec = LeaseRecord::from_binding(&binding, 64);
        assert_eq!(rec.mac, "52:54:00:46:00:03");
        assert_eq!(
            rec.client_id.as_deref(),
            Some("00:03:00:01:52:54:00:46:00:03")
        );
        assert_eq!(rec.to_binding(), Some(binding.clone()));
        assert_eq!(rec.to_lease(), None, "not an IPv4 lease");
        let out = table(&[rec], None, UNIX_EPOCH);
        let row = out.lines().nth(2).unwrap();
        assert_eq!(
            &row[20..],
            "   52:54:00:46:00:03   ipv6       2001:db8:ca2:2::1ff/64   g6         00:03:00:01:52:54:00:46:00:03"
        );
        // A DUID-EN names no MAC.
        let en = Binding {
            duid: vec![0, 2, 0, 0, 0, 9, 1, 2],
            ..binding
        };
        assert_eq!(LeaseRecord::from_binding(&en, 64).mac, "-");
        assert_eq!(
            duid_mac(&[0, 1, 0, 1, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6]),
            Some([1, 2, 3, 4, 5, 6])
        );
        assert_eq!(duid_mac(&[0, 3, 0, 1, 1]), None);
        assert_eq!(
            parse_duid("0:3:0:1:52:54:0:46:0:3"),
            Some(vec![0, 3, 0, 1, 0x52, 0x54, 0, 0x46, 0, 3])
        );
        assert_eq!(parse_duid("0:3::1"), None);
    }

    /// The leases directory belongs to the confined service's user: what it
    /// leaves there is read as a regular file or not at all, never through
    /// a symlink nor blocking on a FIFO (root reads it: the next service,
    /// `net-dhcp-leases`).
    #[test]
    fn a_planted_symlink_or_fifo_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "[]").unwrap();
        let path = dir.path().join("n.leases/leases.json");
        let file = LeasesFile::open(&path).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        for e in [load(&path).unwrap_err(), file.load().unwrap_err()] {
            let e = e.to_string();
            assert!(
                e.starts_with(&format!("cannot read {}", path.display())),
                "{e}"
            );
        }
        std::fs::remove_file(&path).unwrap();
        let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // Saving replaces whatever is there.
        file.save(&[]).unwrap();
        assert_eq!(file.load().unwrap(), []);
    }

    /// A leases file written before IPv6 was leased still reads.
    #[test]
    fn old_ipv4_only_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.leases/leases.json");
        let file = LeasesFile::open(&path).unwrap();
        std::fs::write(
            &path,
            r#"[{"mac":"52:54:00:01:02:03","ip":"10.0.0.5","prefix":24,"hostname":"g","client_id":null,"expires":77}]"#,
        )
        .unwrap();
        let recs = load(&path).unwrap();
        assert_eq!(recs[0].ip, IpAddr::from([10, 0, 0, 5]));
        assert_eq!(recs[0].iaid, None);
        assert!(recs[0].to_lease().is_some());
        // Written back, an IPv4 record has no iaid field (old readers agree).
        file.save(&recs).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("iaid"));
        assert_eq!(file.load().unwrap(), recs);
    }

    /// A name with control bytes in a file of an older version is printed
    /// escaped: nothing reaches the terminal but printable ASCII and the
    /// table's own newlines.
    #[test]
    fn table_escapes_what_the_file_holds() {
        let rec = LeaseRecord {
            mac: "52:54:00:00:00:01\u{7}".into(),
            ip: IpAddr::from([10, 0, 0, 5]),
            prefix: 24,
            hostname: Some("evil\u{1b}[2J\r\nx\\y\u{202e}".into()),
            client_id: Some("01\u{9b}31m".into()),
            iaid: None,
            expires: None,
        };
        let out = table(&[rec], None, UNIX_EPOCH);
        assert!(
            out.chars().all(|c| c == '\n' || (' '..='~').contains(&c)),
            "{out:?}"
        );
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.contains(r"evil\u{1b}[2J\u{d}\u{a}x\\y\u{202e}"),
            "{out}"
        );
        assert!(out.contains(r"52:54:00:00:00:01\u{7}"), "{out}");
        assert!(out.contains(r"01\u{9b}31m"), "{out}");
    }

    /// Garbage, a file cut short and records of the wrong shape: moved
    /// aside, the readable leases kept and written back.
    #[test]
    fn damaged_files_are_moved_aside_keeping_what_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.leases.json");
        let file = LeasesFile::open(&path).unwrap();
        let good = r#"{"mac":"52:54:00:01:02:03","ip":"10.0.0.5","prefix":24,"hostname":"g","client_id":null,"expires":null}"#;
        let good2 = good.replace("10.0.0.5", "10.0.0.6").replace(":03", ":04");
        let bad_shape = r#"{"mac":"52:54:00:01:02:05","ip":"not an address","prefix":24}"#;
        for (text, kept) in [
            ("\u{0}\u{ff}garbage".to_string(), 0),
            (format!("[{good},{bad_shape},{good2}]"), 2),
            (format!("[{good},{good2},{{\"mac\":\"52:5"), 2),
            (format!("{{\"not\": [{good}]}}"), 0),
        ] {
            std::fs::write(&path, &text).unwrap();
            assert!(load(&path).is_err(), "{text}");
            let recs = file.load_or_recover().unwrap();
            assert_eq!(recs.len(), kept, "{text}");
            assert_eq!(load(&path).unwrap(), recs, "written back");
            let aside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains(".leases.json.corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1, "{aside:?}");
            assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), text);
            std::fs::remove_file(&aside[0]).unwrap();
        }
        assert_eq!(file.load_or_recover().unwrap().len(), 0);
        // Damaged twice within a second: the second copy set aside does not
        // replace the first.
        for text in ["garbage one", "garbage two"] {
            std::fs::write(&path, text).unwrap();
            file.load_or_recover().unwrap();
        }
        let mut aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::remove_file(&p).unwrap();
                text
            })
            .collect();
        aside.sort();
        assert_eq!(aside, ["garbage one", "garbage two"]);
        std::fs::remove_file(&path).unwrap();
        // A good file and a missing one are left alone.
        std::fs::write(&path, format!("[{good}]")).unwrap();
        assert_eq!(file.load_or_recover().unwrap().len(), 1);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.load_or_recover().unwrap().len(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
