//! The host-level answers a network daemon gives beyond libvirt's own
//! `virtnetworkd`: the host's capabilities (a `<host>` and no `<guest>`),
//! its CPU and memory facts (`virNodeGetInfo`), and an empty domain list.
//!
//! Why: libvirt 9.0's network daemon answers none of them (its
//! `networkHypervisorDriver` in `src/network/bridge_driver.c` has only
//! open, close, is-encrypted, is-secure, is-alive and supports-feature), and
//! virt-manager 4.1 refuses a connection that lacks them: it asks for the
//! capabilities while opening (`virtinst/connection.py`, `open` → `_get_caps`),
//! requires `listAllDomains` (`virtManager/connection.py`,
//! `_populate_initial_state`: "Connection does not support required domain
//! listing APIs") and calls `getInfo` on every tick (`_tick`). With these
//! three, true of a host that runs networks and no guests through this
//! connection, virt-manager opens `network:///system` and manages its
//! virtual networks.
//!
//! The facts are read as libvirt's `virHostCPUGetInfoPopulateLinux` and
//! `virCapabilitiesFormatXML` produce them: the model is the machine
//! architecture, memory is `MemTotal` in KiB, CPUs are the online ones,
//! MHz is the first `cpu MHz` of `/proc/cpuinfo`, and the topology
//! (NUMA nodes, sockets per node, cores per socket, threads per core) is
//! counted from each online CPU's `topology/` and `nodeN` link, with
//! libvirt's fallback (1 node, 1 socket, one core per CPU, 1 thread) when
//! the counts do not multiply out to the CPUs. The host UUID is the
//! SMBIOS one when readable, else `/etc/machine-id` (libvirt's
//! `host_uuid_source = "machine-id"`).
//!
//! Hand-written: a handful of procfs and sysfs files; the crates that read
//! them (`sysinfo`, `procfs`) bring far more than these numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::xdr::Writer;

/// `virNodeInfo.model`'s size (`char model[32]`, NUL included).
const MODEL_LEN: usize = 32;

/// `VIR_CONNECT_LIST_DOMAINS_*`: every filter flag libvirt 9.0 defines
/// (active … no-checkpoint); filtering an empty list by any of them gives
/// an empty list.
pub const LIST_DOMAINS_FLAGS: u32 = 0xffff;

/// What `virNodeGetInfo` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The machine architecture (`uname -m`).
    pub model: String,
    /// Memory in KiB (`MemTotal`).
    pub memory_kib: u64,
    /// Online CPUs.
    pub cpus: u32,
    /// The first CPU's clock in MHz (0 when the kernel does not say).
    pub mhz: u32,
    /// NUMA nodes.
    pub nodes: u32,
    /// Sockets per node.
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

impl NodeInfo {
    /// This host's facts.
    pub fn host() -> NodeInfo {
        NodeInfo::read(Path::new("/"), &machine())
    }

    /// The facts of the procfs and sysfs under `root` (`root/proc`,
    /// `root/sys`) of a machine of architecture `arch`. A file that cannot
    /// be read counts as empty: the numbers fall back as libvirt's do.
    pub fn read(root: &Path, arch: &str) -> NodeInfo {
        let text = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
        let cpu_dir = root.join("sys/devices/system/cpu");
        let online = cpu_list(text("sys/devices/system/cpu/online").trim());
        // (node, package, core) of each online CPU.
        let placed: Vec<(u32, i64, i64)> = online
            .iter()
            .map(|cpu| {
                let dir = cpu_dir.join(format!("cpu{cpu}"));
                let id = |f: &str| {
                    std::fs::read_to_string(dir.join("topology").join(f))
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .unwrap_or(0)
                };
                (node_of(&dir), id("physical_package_id"), id("core_id"))
            })
            .collect();
        let cpus = online.len().max(1) as u32;
        let (nodes, sockets, cores, threads) = topology(&placed, cpus);
        NodeInfo {
            model: arch.to_string(),
            memory_kib: mem_total_kib(&text("proc/meminfo")),
            cpus,
            mhz: cpu_mhz(&text("proc/cpuinfo")),
            nodes,
            sockets,
            cores,
            threads,
        }
    }

    /// `remote_node_get_info_ret`: `char model[32]` (an XDR vector of
    /// `char`, each element a 4-byte word, NUL-padded and cut to 31
    /// bytes), `unsigned hyper memory`, then six `int`s.
    pub fn encode(&self, w: &mut Writer) {
        let model = self.model.as_bytes();
        for i in 0..MODEL_LEN {
            let b = if i < MODEL_LEN - 1 {
                model.get(i).copied().unwrap_or(0)
            } else {
                0
            };
            w.i32(i32::from(b as i8));
        }
        w.u64(self.memory_kib);
        for v in [
            self.cpus,
            self.mhz,
            self.nodes,
            self.sockets,
            self.cores,
            self.threads,
        ] {
            w.i32(v.min(i32::MAX as u32) as i32);
        }
    }
}

/// The host's capabilities XML as libvirt's network daemon host would
/// describe it: its UUID, CPU architecture and topology, and no guest
/// types (this connection runs no guests); without a host UUID
/// ([`host_uuid`]) no `<uuid>`.
pub fn capabilities_xml(info: &NodeInfo, uuid: Option<&uuid::Uuid>) -> String {
    let uuid = uuid
        .map(|u| format!("    <uuid>{u}</uuid>\n"))
        .unwrap_or_default();
    format!(
        "<capabilities>\n\n  <host>\n{uuid}    <cpu>\n      \
         <arch>{}</arch>\n      <topology sockets='{}' dies='1' cores='{}' threads='{}'/>\n    \
         </cpu>\n  </host>\n\n</capabilities>\n",
        xml_text(&info.model),
        info.sockets,
        info.cores,
        info.threads
    )
}

/// The host UUID: SMBIOS's (`product_uuid`, readable by root) when it is a
/// real one, else the systemd machine ID; `None` when neither is there.
pub fn host_uuid(root: &Path) -> Option<uuid::Uuid> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let smbios = read("sys/devices/virtual/dmi/id/product_uuid")
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
        // libvirt refuses an SMBIOS UUID of one repeated digit (firmware
        // placeholders such as all zeros or all F).
        .filter(|u| {
            let b = u.as_bytes();
            !b.iter().all(|x| *x == b[0])
        });
    smbios.or_else(|| read("etc/machine-id").and_then(|s| uuid::Uuid::try_parse(s.trim()).ok()))
}

/// `uname -m`.
fn machine() -> String {
    // SAFETY: `utsname` is plain bytes; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname; uname fills it.
    if unsafe { libc::uname(&mut u) } != 0 {
        return std::env::consts::ARCH.to_string();
    }
    let bytes: Vec<u8> = u
        .machine
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The CPUs of a kernel CPU list (`0-3,8,10-11`); malformed parts are
/// skipped, and a range is capped to keep a bad file from costing memory.
fn cpu_list(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            v.extend((a..=b.min(a.saturating_add(65_535))).take(65_536));
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The NUMA node of the CPU whose sysfs directory is `dir` (its `nodeN`
/// entry), 0 without NUMA.
fn node_of(dir: &Path) -> u32 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .unwrap_or(0)
}

/// (nodes, sockets per node, cores per socket, threads per core) of CPUs
/// placed at (node, package, core); libvirt's fallback when they do not
/// multiply out to `cpus`.
fn topology(placed: &[(u32, i64, i64)], cpus: u32) -> (u32, u32, u32, u32) {
    let mut per_core: BTreeMap<(u32, i64, i64), u32> = BTreeMap::new();
    for p in placed {
        *per_core.entry(*p).or_default() += 1;
    }
    let mut per_socket: BTreeMap<(u32, i64), BTreeSet<i64>> = BTreeMap::new();
    let mut per_node: BTreeMap<u32, BTreeSet<i64>> = BTreeMap::new();
    for (node, pkg, core) in per_core.keys() {
        per_socket.entry((*node, *pkg)).or_default().insert(*core);
        per_node.entry(*node).or_default().insert(*pkg);
    }
    let max = |it: &mut dyn Iterator<Item = usize>| it.max().unwrap_or(1).max(1) as u32;
    let nodes = per_node.len().max(1) as u32;
    let sockets = max(&mut per_node.values().map(BTreeSet::len));
    let cores = max(&mut per_socket.values().map(BTreeSet::len));
    let threads = max(&mut per_core.values().map(|n| *n as usize));
    if u64::from(nodes) * u64::from(sockets) * u64::from(cores) * u64::from(threads)
        == u64::from(cpus)
    {
        (nodes, sockets, cores, threads)
    } else {
        (1, 1, cpus, 1)
    }
}

/// `MemTotal` of `/proc/meminfo`, in KiB (0 if missing).
fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The integer part of the first `cpu MHz` of `/proc/cpuinfo` (0 if none).
fn cpu_mhz(cpuinfo: &str) -> u32 {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "cpu MHz").then_some(v)
        })
        .and_then(|v| v.trim().split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `s` with XML's special characters escaped.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    /// A fake sysfs: CPUs `cpus` (each (node, package, core)) online.
    fn machine(root: &Path, cpus: &[(u32, i64, i64)]) {
        let list: Vec<String> = (0..cpus.len()).map(|i| i.to_string()).collect();
        put(root, "sys/devices/system/cpu/online", &list.join(","));
        for (i, (node, pkg, core)) in cpus.iter().enumerate() {
            let d = format!("sys/devices/system/cpu/cpu{i}");
            put(
                root,
                &format!("{d}/topology/physical_package_id"),
                &format!("{pkg}\n"),
            );
            put(root, &format!("{d}/topology/core_id"), &format!("{core}\n"));
            std::fs::create_dir_all(root.join(format!("{d}/node{node}"))).unwrap();
        }
    }

    #[test]
    fn topology_counts_per_node_socket_and_core() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        // Two nodes, one socket each, two cores with two threads each.
        let mut cpus = Vec::new();
        for node in 0..2u32 {
            for core in 0..2 {
                cpus.push((node, i64::from(node), core));
                cpus.push((node, i64::from(node), core));
            }
        }
        machine(r, &cpus);
        put(
            r,
            "proc/meminfo",
            "MemTotal:       16303480 kB\nMemFree: 1 kB\n",
        );
        put(
            r,
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: 2893.204\n",
        );
        let i = NodeInfo::read(r, "x86_64");
        assert_eq!(
            i,
            NodeInfo {
                model: "x86_64".into(),
                memory_kib: 16_303_480,
                cpus: 8,
                mhz: 2893,
                nodes: 2,
                sockets: 1,
                cores: 2,
                threads: 2
            }
        );
    }

    /// Counts that do not multiply out (an offline sibling, odd firmware)
    /// give libvirt's fallback; missing files give zeros, not a failure.
    #[test]
    fn uneven_or_missing_facts_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        machine(r, &[(0, 0, 0), (0, 0, 0), (0, 0, 1)]);
        let i = NodeInfo::read(r, "aarch64");
        assert_eq!(
            (i.cpus, i.nodes, i.sockets, i.cores, i.threads),
            (3, 1, 1, 3, 1)
        );
        assert_eq!((i.memory_kib, i.mhz), (0, 0));
        let empty = tempfile::tempdir().unwrap();
        let i = NodeInfo::read(empty.path(), "x86_64");
        assert_eq!(
            (i.cpus, i.nodes, i.sockets, i.cores, i.threads),
            (1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(
            cpu_list("0-3,8,10-11\n".trim()),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(cpu_list("0"), vec![0]);
        assert_eq!(cpu_list(""), Vec::<u32>::new());
        assert_eq!(cpu_list("x,2,3-y"), vec![2]);
        assert_eq!(cpu_list("0-4294967295").len(), 65_536);
    }

    /// The model travels as 32 XDR chars (a word each) and is cut to 31
    /// bytes plus NUL, as libvirt's `virStrcpyStatic` into `char[32]`.
    #[test]
    fn node_info_encodes_as_remote_node_get_info_ret() {
        let i = NodeInfo {
            model: "m".repeat(40),
            memory_kib: 1 << 33,
            cpus: 2,
            mhz: 3,
            nodes: 1,
            sockets: 1,
            cores: 2,
            threads: 1,
        };
        let mut w = Writer::new();
        i.encode(&mut w);
        let b = w.into_bytes();
        assert_eq!(b.len(), 32 * 4 + 8 + 6 * 4);
        let mut r = crate::xdr::Reader::new(&b);
        let model: Vec<i32> = (0..32).map(|_| r.i32().unwrap()).collect();
        assert!(model[..31].iter().all(|c| *c == i32::from(b'm')));
        assert_eq!(model[31], 0);
        assert_eq!(r.u64().unwrap(), 1 << 33);
        let rest: Vec<i32> = (0..6).map(|_| r.i32().unwrap()).collect();
        assert_eq!(rest, vec![2, 3, 1, 1, 2, 1]);
    }

    #[test]
    fn host_uuid_prefers_a_real_smbios_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        assert_eq!(host_uuid(r), None);
        put(r, "etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n");
        let mid = uuid::Uuid::parse_str("3d1219c7-c4c5-404a-aa1f-6d2a48adfda4").unwrap();
        assert_eq!(host_uuid(r), Some(mid));
        put(
            r,
            "sys/devices/virtual/dmi/id/product_uuid",
            "00000000-0000-0000-0000-000000000000\n",
        );
        assert_eq!(host_uuid(r), Some(mid));
        put(
            r,
            "sys/devices/virtual/dmi/id/product_uuid",
            "4c4c4544-0042-3510-8052-b4c04f4a4d32\n",
        );
        assert_eq!(
            host_uuid(r).unwrap().to_string(),
            "4c4c4544-0042-3510-8052-b4c04f4a4d32"
        );
    }

    #[test]
    fn capabilities_have_a_host_and_no_guest() {
        let i = NodeInfo {
            model: "x86_64".into(),
            memory_kib: 1,
            cpus: 4,
            mhz: 0,
            nodes: 1,
            sockets: 1,
            cores: 2,
            threads: 2,
        };
        let u = uuid::Uuid::from_bytes([7; 16]);
        assert!(!capabilities_xml(&i, None).contains("uuid"));
        assert_eq!(
            capabilities_xml(&i, Some(&u)),
            "<capabilities>\n\n  <host>\n    <uuid>07070707-0707-0707-0707-070707070707</uuid>\n    \
             <cpu>\n      <arch>x86_64</arch>\n      \
             <topology sockets='1' dies='1' cores='2' threads='2'/>\n    </cpu>\n  </host>\n\n\
             </capabilities>\n"
        );
    }
}
