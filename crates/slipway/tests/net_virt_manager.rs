//! virt-manager 4.1 (Debian 12) manages slipway's networks: under Xvfb, in
//! the test's own user and network namespaces, it connects to `slipway
//! daemon`'s libvirt socket (`network:///system?socket=DIR/run/libvirt/
//! virtnetworkd-sock`), lists its networks in Connection Details → Virtual
//! Networks, and starts one when its Start button is pressed (through
//! AT-SPI, as virt-manager's own UI tests drive it:
//! `tests/virt-manager/drive.py`). The window is saved as a PNG: to the
//! path in `SLIPWAY_VIRT_MANAGER_SHOT` when set (how docs/virt-manager.png
//! is made), else into the test's temporary directory.
//!
//! Signals, all from programs nobody here wrote: virt-manager's `--debug`
//! log (each network it added, the start it asked for, slipway's lifecycle
//! event it received), the network list as AT-SPI reads it from the
//! window, and slipway's own CLI seeing the network started.

mod net_common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use net_common::*;

const ALPHA: &str = "<network>
  <name>alpha</name>
  <forward mode='nat'/>
  <bridge name='virbr5'/>
  <domain name='alpha.test'/>
  <ip address='10.0.5.1' prefix='24'>
    <dhcp>
      <range start='10.0.5.2' end='10.0.5.100'/>
    </dhcp>
  </ip>
</network>
";

const BETA: &str = "<network>
  <name>beta</name>
  <bridge name='virbr6'/>
  <ip address='10.0.6.1' prefix='24'/>
</network>
";

/// The Connection Details window's size (virt-manager's default), and so
/// the screen's: the screenshot is the window.
const SCREEN: (u32, u32) = (800, 600);

/// How long virt-manager may take to come up and do each step
/// (`SLIPWAY_TEST_VIRT_MANAGER_MS` overrides).
fn patience() -> Duration {
    slipway_host::env_millis("SLIPWAY_TEST_VIRT_MANAGER_MS").unwrap_or(Duration::from_secs(60))
}

/// A child process ended on drop: SIGTERM first, so Xvfb removes its lock
/// file and socket under /tmp, SIGKILL after 2 s (the namespace's guard
/// kills the rest: dbus-run-session's bus daemons and AT-SPI's).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(2);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Xvfb on a free display (`-displayfd`: it picks the number and writes
/// it to our pipe): the process and `:N`.
fn xvfb() -> (Proc, String) {
    let mut child = Command::new("Xvfb")
        .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0"])
        .arg(format!("{}x{}x24", SCREEN.0, SCREEN.1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb (Debian package xvfb) must be installed");
    let mut out = child.stdout.take().unwrap();
    let mut num = String::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        num.push(b[0] as char);
    }
    let proc_ = Proc(child);
    assert!(
        !num.is_empty() && num.bytes().all(|c| c.is_ascii_digit()),
        "Xvfb gave no display number: {num:?}"
    );
    (proc_, format!(":{num}"))
}

/// Waits until `log` holds every one of `lines`; the log on failure.
fn wait_log(log: &Path, lines: &[&str], vm: &mut Proc) -> String {
    let until = Instant::now() + patience();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if lines.iter().all(|l| text.contains(l)) {
            return text;
        }
        let exited = vm.0.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < until,
            "virt-manager ({exited:?}) never logged all of {lines:?}; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The screen as a PNG at `out` (xwd's dump through ImageMagick).
fn screenshot(display: &str, dir: &Path, out: &Path) {
    let xwd = dir.join("screen.xwd");
    let st = Command::new("xwd")
        .args(["-root", "-silent", "-display", display, "-out"])
        .arg(&xwd)
        .status()
        .expect("xwd (Debian package x11-apps) must be installed");
    assert!(st.success(), "xwd: {st}");
    let st = Command::new("/usr/bin/convert")
        .arg(format!("xwd:{}", xwd.display()))
        .arg(format!("png:{}", out.display()))
        .status()
        .expect("convert (Debian package imagemagick) must be installed");
    assert!(st.success(), "convert: {st}");
    let png = std::fs::read(out).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), SCREEN);
}

#[test]
fn virt_manager_lists_and_starts_slipways_networks() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let daemon_log = root.join("daemon.log");
    let _daemon = Daemon::start_logged(root, &daemon_log);
    write(root, "alpha.xml", ALPHA);
    write(root, "beta.xml", BETA);
    ok(root, &["net-define", "alpha.xml"]);
    ok(root, &["net-define", "beta.xml"]);
    ok(root, &["net-start", "alpha"]);

    let (_x, display) = xvfb();
    let home = root.join("home");
    let runtime = home.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let uri = format!(
        "network:///system?socket={}",
        root.join("run/libvirt/virtnetworkd-sock").display()
    );
    let vm_log = root.join("virt-manager.log");
    let log_file = std::fs::File::create(&vm_log).unwrap();
    let mut vm = Proc(
        Command::new("dbus-run-session")
            .args(["--", "virt-manager", "--no-fork", "--debug", "--connect"])
            .arg(&uri)
            .arg("--show-host-summary")
            .env("DISPLAY", &display)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("virt-manager (Debian package virt-manager) and dbus must be installed"),
    );
    // virt-manager opened the connection and built an object for each of
    // slipway's networks, in its own words.
    wait_log(
        &vm_log,
        &[
            "network=alpha status=Active added",
            "network=beta status=Inactive added",
            "Showing host details",
        ],
        &mut vm,
    );

    let drive = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/virt-manager/drive.py");
    let out = Command::new("/usr/bin/python3")
        .arg(&drive)
        .arg("beta")
        .arg(patience().as_secs().to_string())
        .env("DISPLAY", &display)
        .output()
        .expect("Debian's python3 with gir1.2-atspi-2.0 must be installed");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drive.py: {}\n{said}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The window's list is slipway's networks, in libvirt's (name) order.
    let listed: Vec<&str> = said
        .lines()
        .filter_map(|l| l.strip_prefix("listed "))
        .collect();
    assert_eq!(listed, ["alpha", "beta"]);

    // virt-manager asked slipway to start beta and heard slipway's
    // lifecycle event for it; slipway's own CLI sees it running.
    wait_log(
        &vm_log,
        &[
            "Starting network 'beta'",
            "network lifecycle event: network=beta state=VIR_NETWORK_EVENT_STARTED",
        ],
        &mut vm,
    );
    let info = ok(root, &["net-info", "beta"]);
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Active:", "yes"]),
        "{info}"
    );
    assert!(said.contains("shown running beta"), "{said}");
    // The window showed beta running (drive.py saw its Start button go
    // insensitive); a moment for GTK to paint that frame before the picture.
    std::thread::sleep(Duration::from_millis(200));
    let shot = std::env::var_os("SLIPWAY_VIRT_MANAGER_SHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("virt-manager.png"));
    screenshot(&display, root, &shot);
}

/// `lscpu -p`'s online CPUs as libvirt counts them: (cpus, nodes,
/// sockets per node, cores per socket, threads per core).
fn lscpu_topology() -> (usize, usize, usize, usize, usize) {
    use std::collections::{BTreeMap, BTreeSet};
    let out = Command::new("lscpu")
        .arg("-p=CPU,CORE,SOCKET,NODE")
        .output()
        .expect("lscpu (util-linux)");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(',').collect())
        .collect();
    let mut threads: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for r in &rows {
        *threads.entry((r[3], r[2], r[1])).or_default() += 1;
    }
    let mut cores: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    let mut sockets: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (node, socket, core) in threads.keys() {
        cores.entry((node, socket)).or_default().insert(core);
        sockets.entry(node).or_default().insert(socket);
    }
    (
        rows.len(),
        sockets.len(),
        sockets.values().map(BTreeSet::len).max().unwrap(),
        cores.values().map(BTreeSet::len).max().unwrap(),
        *threads.values().max().unwrap(),
    )
}

/// The host-level calls slipway answers beyond virtnetworkd, so that
/// virt-manager opens its socket, through virsh and the Python bindings,
/// on the read-write and the read-only socket: node info as lscpu and
/// free count the host, capabilities with that topology and no guest, an
/// empty domain list, and libvirt's error for unknown list flags.
#[test]
fn host_calls_answer_what_lscpu_and_free_see() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _daemon = Daemon::start(root);
    let free = Command::new("free")
        .arg("-k")
        .output()
        .expect("free (procps)");
    let free = String::from_utf8(free.stdout).unwrap();
    let mem_kib = free
        .lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (cpus, nodes, sockets, cores, threads) = lscpu_topology();
    let arch = Command::new("uname").arg("-m").output().unwrap();
    let arch = String::from_utf8(arch.stdout).unwrap().trim().to_string();
    for (sock, ro) in [
        ("virtnetworkd-sock", &[][..]),
        ("virtnetworkd-sock-ro", &["-r"][..]),
    ] {
        let uri = format!(
            "network:///system?socket={}",
            root.join("run/libvirt").join(sock).display()
        );
        let virsh = |cmd: &str| {
            let out = Command::new("virsh")
                .args(ro)
                .args(["-c", &uri, cmd])
                .args(if cmd == "list" { &["--all"][..] } else { &[] })
                .output()
                .expect("virsh (libvirt-clients)");
            assert!(out.status.success(), "virsh {cmd}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let info = virsh("nodeinfo");
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {info}"))
                .trim()
                .to_string()
        };
        assert_eq!(field("CPU model:"), arch);
        assert_eq!(field("CPU(s):"), cpus.to_string());
        assert_eq!(field("NUMA cell(s):"), nodes.to_string());
        assert_eq!(field("CPU socket(s):"), sockets.to_string());
        assert_eq!(field("Core(s) per socket:"), cores.to_string());
        assert_eq!(field("Thread(s) per core:"), threads.to_string());
        assert_eq!(field("Memory size:"), format!("{mem_kib} KiB"));

        let caps = virsh("capabilities");
        assert!(caps.contains(&format!("<arch>{arch}</arch>")), "{caps}");
        assert!(
            caps.contains(&format!(
                "<topology sockets='{sockets}' dies='1' cores='{cores}' threads='{threads}'/>"
            )),
            "{caps}"
        );
        assert!(!caps.contains("<guest>"), "{caps}");
        assert_eq!(
            virsh("list"),
            " Id   Name   State\n--------------------\n\n"
        );

        let py = format!(
            "import libvirt\n\
             c = libvirt.{}('{uri}')\n\
             print(c.getInfo())\n\
             print(c.listAllDomains(), c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))\n\
             try:\n    c.listAllDomains(1 << 20)\nexcept libvirt.libvirtError as e:\n    \
             print(e.get_error_code(), e)\n",
            if ro.is_empty() {
                "open"
            } else {
                "openReadOnly"
            }
        );
        let out = Command::new("/usr/bin/python3")
            .args(["-c", &py])
            .output()
            .expect("python3-libvirt");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said} {out:?}");
        let mem_mib = mem_kib.parse::<u64>().unwrap() / 1024;
        assert_eq!(
            said.lines().collect::<Vec<_>>(),
            [
                format!(
                    "['{arch}', {mem_mib}, {cpus}, {}, {nodes}, {sockets}, {cores}, {threads}]",
                    field("CPU frequency:").trim_end_matches(" MHz")
                )
                .as_str(),
                "[] []",
                "8 invalid argument: unsupported flags (0x100000) in function virConnectListAllDomains",
            ]
        );
    }
}
