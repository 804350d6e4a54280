//! libvirt's own QEMU driver on a slipway network: `virt-qemu-run` (Debian
//! 12's `libvirt-daemon-driver-qemu`, the QEMU driver embedded in one
//! process) starts the test guest from a domain XML with `<interface
//! type='network'>`, and asks for its port on
//! `/run/libvirt/virtnetworkd-sock`, which `slipway daemon` serves
//! (docs/libvirt-qemu-driver.md says why Debian 12's libvirtd cannot).
//!
//! Isolation: the test runs in a network namespace of its own (as root:
//! libvirt sets QEMU's supplementary groups, which a user namespace
//! denies); `virt-qemu-run` additionally in private mount and PID
//! namespaces, where `/run` is an empty tmpfs with the daemon's
//! `ROOT/run/libvirt` bound on its `/run/libvirt` (and so
//! `/var/run/libvirt`), and `/var/lib` and `/var/cache` are overlays whose
//! writes go to a tmpfs of the test's, with empty tmpfs on libvirt's
//! `/var/lib/libvirt` and `/var/cache/libvirt`: a machine that never ran
//! libvirt's services (and so lacks all three directories) needs nothing
//! created on its own disks. Nothing of the machine's own `/run`, `/var` or
//! network is touched. The upstream is a namespace behind a bridge, with a
//! one-shot TCP server.
//!
//! One test stops the guest as libvirt documents for virt-qemu-run, with
//! SIGTERM; the other lets the guest power itself off. Either way the port
//! must then be gone (virsh and slipway's CLI) and QEMU's tap with it. The PID namespace's PID 1 reaps orphans, as init
//! does on a host: without that libvirt cannot see its QEMU processes end
//! ([`VirtQemuRun`] has the story).

mod net_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use net_common::*;
use slipway_testkit::netns::{sh, NsGuest};
use slipway_testkit::{GuestImage, GuestOutput, KERNEL_ARGS};

const LAB: &str = "<network>
  <name>lab</name>
  <forward mode='nat'/>
  <bridge name='br-lab'/>
  <ip address='10.46.0.1' prefix='24'>
    <dhcp>
      <range start='10.46.0.10' end='10.46.0.20'/>
    </dhcp>
  </ip>
</network>
";

const MAC: &str = "52:54:00:46:00:07";

/// `virt-qemu-run`'s configuration (`ROOT/etc/qemu.conf`): QEMU's output
/// to files (no virtlogd), no security driver, QEMU as root.
const QEMU_CONF: &str =
    "stdio_handler = \"file\"\nsecurity_driver = \"none\"\nuser = \"root\"\ngroup = \"root\"\n";

/// `virt-qemu-run` in private mount and PID namespaces (`unshare -m -p
/// --fork --kill-child --mount-proc`), killed with everything in them when
/// dropped.
///
/// PID 1 of the PID namespace is a shell that runs virt-qemu-run as its
/// child and waits, so that it *reaps orphans*: libvirt starts QEMU
/// daemonized (its capability probes with `-daemonize`, the guest through
/// a double fork), so each QEMU is re-parented to PID 1. With
/// virt-qemu-run itself as PID 1 (as `exec` made it) nothing reaped them:
/// every QEMU that ended stayed a zombie, `kill(pid, 0)` kept succeeding,
/// and libvirt's `virProcessKillPainfully` gave up after its SIGKILL wait
/// (`Failed to terminate process N with SIGKILL: Device or resource
/// busy`). At the guest's power-down that failure made
/// `qemuProcessBeginStopJob` return before `qemuProcessStop`: no STOPPED
/// event, so virt-qemu-run never ended, and the port was never released;
/// a SIGTERM then failed the same way.
struct VirtQemuRun {
    unshare: Child,
    /// virt-qemu-run's standard output and error (`--verbose` progress).
    out: PathBuf,
    /// libvirt's warnings and errors (`LIBVIRT_LOG_OUTPUTS`).
    log: PathBuf,
}

/// The namespaces' PID 1: the private mounts (the scratch directory `$4`
/// becomes a tmpfs holding the overlays' upper layers); a user and group
/// `libvirt-qemu` where the machine has none (the QEMU driver resolves
/// its built-in default user before it reads `qemu.conf`, and only
/// Debian's libvirt-daemon-system creates it: copies of `/etc/passwd` and
/// `/etc/group` with it are bound over the originals); then
/// virt-qemu-run as a child, SIGTERM passed on to it, and its status as
/// the exit status. Paths come in as arguments, never into the script's
/// text.
const PID1: &str = r#"s=$4
mount -t tmpfs -o mode=700 tmpfs "$s" &&
mkdir "$s/lib" "$s/lib.work" "$s/cache" "$s/cache.work" &&
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$s/lib,workdir=$s/lib.work" /var/lib &&
mount -t overlay overlay -o "lowerdir=/var/cache,upperdir=$s/cache,workdir=$s/cache.work" /var/cache &&
mkdir -p /var/lib/libvirt /var/cache/libvirt &&
mount -t tmpfs tmpfs /var/lib/libvirt &&
mount -t tmpfs tmpfs /var/cache/libvirt &&
mount -t tmpfs -o mode=755 tmpfs /run &&
mkdir /run/libvirt &&
mount --bind "$1" /run/libvirt || exit 125
for db in passwd group; do
    getent "$db" libvirt-qemu >/dev/null && continue
    id=64055
    while getent passwd $id >/dev/null || getent group $id >/dev/null; do id=$((id + 1)); done
    cp "/etc/$db" "$s/$db" || exit 125
    if [ $db = passwd ]; then
        echo "libvirt-qemu:x:$id:$id:libvirt's QEMU user:/var/lib/libvirt:/usr/sbin/nologin"
    else
        echo "libvirt-qemu:x:$id:"
    fi >>"$s/$db" && mount --bind "$s/$db" "/etc/$db" || exit 125
done
virt-qemu-run --verbose --root "$2" "$3" &
vqr=$!
trap 'kill -TERM $vqr' TERM
st=0
while kill -0 $vqr 2>/dev/null; do wait $vqr; st=$?; done
exit $st
"#;

impl VirtQemuRun {
    /// Starts `virt-qemu-run --root qroot dom` with `run_libvirt` as its
    /// `/run/libvirt`; its output and libvirt's log go to files in `dir`,
    /// the private mounts' writes to a tmpfs on `dir/mounts`.
    fn start(dir: &Path, run_libvirt: &Path, qroot: &Path, dom: &Path) -> VirtQemuRun {
        let out = dir.join("virt-qemu-run.out");
        let log = dir.join("libvirt.log");
        let scratch = dir.join("mounts");
        std::fs::create_dir(&scratch).unwrap();
        let file = std::fs::File::create(&out).unwrap();
        let unshare = Command::new("unshare")
            .args([
                "-m",
                "-p",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                PID1,
                "sh",
            ])
            .arg(run_libvirt)
            .arg(qroot)
            .arg(dom)
            .arg(&scratch)
            .env("LIBVIRT_LOG_OUTPUTS", format!("3:file:{}", log.display()))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("unshare (util-linux) and virt-qemu-run (libvirt-daemon-driver-qemu)");
        VirtQemuRun { unshare, out, log }
    }

    /// virt-qemu-run's output and libvirt's log, for messages.
    fn report(&self) -> String {
        format!(
            "--- virt-qemu-run ---\n{}\n--- libvirt log ---\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// The exit status, once the namespaces' PID 1 has ended.
    fn ended(&mut self) -> Option<ExitStatus> {
        self.unshare.try_wait().unwrap()
    }

    /// Sends SIGTERM to virt-qemu-run (through PID 1, which passes it
    /// on): libvirt's documented way to stop the guest.
    fn terminate(&self) {
        let pid = self.unshare.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let pid1: i32 = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("unshare's child, the namespaces' PID 1");
        // SAFETY: kill(2) of a process this test started.
        assert_eq!(unsafe { libc::kill(pid1, libc::SIGTERM) }, 0);
    }
}

impl Drop for VirtQemuRun {
    fn drop(&mut self) {
        // --kill-child: PID 1, and with it the PID namespace, dies too.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The upstream's one-shot server thread, which owns the upstream
/// namespace: on drop (the test passed, or failed before the guest
/// connected) the server is served once from here if still waiting, so
/// the thread ends and the namespace's holder is killed.
struct Upstream(Option<std::thread::JoinHandle<NsGuest>>);

impl Drop for Upstream {
    fn drop(&mut self) {
        let Some(t) = self.0.take() else { return };
        if !t.is_finished() {
            let addr = std::net::SocketAddr::from(([198, 51, 100, 2], 8080));
            let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5));
        }
        let _ = t.join();
    }
}

/// The guest's domain: ACPI on (without it libvirt passes `-no-acpi`, and
/// the guest's `poweroff` only halts the CPU, so QEMU never stops).
fn domain(kernel: &Path, initrd: &Path, console: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>porttest</name>
  <uuid>5aa2201d-0bfa-4eea-a5be-c4314adaa94a</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
    <cmdline>{KERNEL_ARGS}</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'>
      <source network='lab'/>
      <mac address='{MAC}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
",
        kernel.display(),
        initrd.display(),
        console.display()
    )
}

/// Waits until the guest's console (a file) has `line`.
fn wait_console(console: &Path, line: &str, vqr: &mut VirtQemuRun, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if text.lines().any(|l| l.trim_end() == line) {
            return text;
        }
        if let Some(st) = vqr.ended() {
            panic!(
                "virt-qemu-run ended ({st}) before {line:?}\n{}\n--- console ---\n{text}",
                vqr.report()
            );
        }
        assert!(
            Instant::now() < end,
            "no {line:?} within {limit:?}\n{}\n--- console ---\n{text}",
            vqr.report()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The name of QEMU's tap among br-lab's ports: libvirt gives it the
/// guest's MAC with the first byte 0xfe.
fn tap_on_br_lab() -> Option<String> {
    let tap_mac = format!("fe{}", &MAC[2..]);
    sh("ip -o link show master br-lab")
        .lines()
        .find(|l| l.contains(&tap_mac))
        .and_then(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
}

/// The ports of network `lab`, by UUID, as virsh lists them through
/// slipway's read-write socket under `root`.
fn virsh_ports(root: &Path) -> String {
    let uri = format!(
        "network:///system?socket={}",
        root.join("run/libvirt/virtnetworkd-sock").display()
    );
    let out = Command::new("virsh")
        .args(["-c", &uri, "net-port-list", "lab", "--uuid"])
        .stdin(Stdio::null())
        .output()
        .expect("virsh (libvirt-clients)");
    assert!(out.status.success(), "virsh net-port-list: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// How the test stops the guest.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGTERM to virt-qemu-run (libvirt's documented way).
    Sigterm,
    /// The guest powers itself off (ACPI); virt-qemu-run then ends.
    GuestPowerOff,
}

/// Runs the test body in a network namespace of its own, as real root:
/// in a user namespace, libvirt's start of QEMU fails (`cannot set
/// supplemental groups: Operation not permitted`: setgroups is denied
/// there).
fn in_own_netns(name: &str, body: fn()) {
    if std::env::var_os("SLIPWAY_NET_CLI_IN_NETNS").is_none() {
        GuestImage::get().expect("build the test guest image");
    }
    in_netns(name, Ns::Root, body);
}

#[test]
fn libvirts_qemu_driver_runs_a_guest_on_a_slipway_port() {
    in_own_netns(
        "libvirts_qemu_driver_runs_a_guest_on_a_slipway_port",
        || qemu_driver_body(Stop::Sigterm),
    );
}

#[test]
fn guest_power_off_ends_virt_qemu_run_and_releases_the_port() {
    in_own_netns(
        "guest_power_off_ends_virt_qemu_run_and_releases_the_port",
        || qemu_driver_body(Stop::GuestPowerOff),
    );
}

fn qemu_driver_body(stop: Stop) {
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let qroot = dir.path().join("qemu");
    std::fs::create_dir_all(qroot.join("etc")).unwrap();
    std::fs::write(qroot.join("etc/qemu.conf"), QEMU_CONF).unwrap();
    std::fs::create_dir_all(&root).unwrap();

    // The upstream: a namespace behind bridge up-br, with a one-shot TCP
    // server on 198.51.100.2:8080.
    sh("ip link add up-br type bridge && ip link set up-br up && ip addr add 198.51.100.1/24 dev up-br");
    let upstream = NsGuest::new("up-br", "up0", "02:00:00:00:00:02");
    upstream.run("ip addr add 198.51.100.2/24 dev eth0");
    let server = Upstream(Some(std::thread::spawn(move || {
        upstream.run("echo from-upstream | busybox nc -l -p 8080");
        upstream
    })));

    write(&root, "lab.xml", LAB);
    let _daemon = Daemon::start(&root);
    ok(&root, &["net-define", "lab.xml"]);
    ok(&root, &["net-start", "lab"]);
    assert!(root.join("run/libvirt/virtnetworkd-sock").exists());

    let image = GuestImage::get().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    image
        .initrd_with_script(
            "dhcp eth0 || exit 1\n\
             n=0; until nc 198.51.100.2 8080 </dev/null > /tmp/up; do n=$((n+1)); [ $n -gt 100 ] && break; sleep 0.2; done\n\
             result body \"$(cat /tmp/up)\"\n\
             nc -l -p 7777 </dev/null >/dev/null &\n\
             ready end\n\
             wait $!\n",
            &initrd,
        )
        .unwrap();
    let console = dir.path().join("console.log");
    let dom = write(
        dir.path(),
        "dom.xml",
        &domain(image.kernel(), &initrd, &console),
    );
    let mut vqr = VirtQemuRun::start(dir.path(), &root.join("run/libvirt"), &qroot, &dom);
    let text = wait_console(
        &console,
        "SLIPWAY-READY end",
        &mut vqr,
        Duration::from_secs(300),
    );
    let out = GuestOutput::from_console(text);

    // The port came from slipway: one port, the guest's, plugged into the
    // network's bridge, with QEMU's tap on it.
    let uuids = ok(&root, &["net-port-list", "lab", "--uuid"]);
    let port: Vec<&str> = uuids.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(port.len(), 1, "{uuids}");
    assert_eq!(virsh_ports(&root), uuids, "virsh sees the same port");
    let xml = ok(&root, &["net-port-dumpxml", "lab", port[0]]);
    for want in [
        "<name>porttest</name>",
        "<uuid>5aa2201d-0bfa-4eea-a5be-c4314adaa94a</uuid>",
        &format!("<mac address='{MAC}'/>"),
        "<plug type='network' bridge='br-lab'/>",
    ] {
        assert!(xml.contains(want), "{want} in\n{xml}");
    }
    let tap = tap_on_br_lab().expect("QEMU's tap on br-lab");
    // The lease from slipway's DHCP, and the NAT to the upstream.
    let ip = out.result("ip").unwrap_or_default().to_string();
    assert!(ip.starts_with("10.46.0."), "{}", out.console);
    let leases = ok(&root, &["net-dhcp-leases", "lab"]);
    assert!(
        leases.contains(MAC) && leases.contains(&format!("{ip}/24")),
        "{leases}"
    );
    assert_eq!(out.result("body"), Some("from-upstream"), "{}", out.console);
    drop(server);

    match stop {
        // SIGTERM, libvirt's documented way to stop virt-qemu-run's
        // guest: it destroys the guest, which releases (deletes) the
        // port, and ends.
        Stop::Sigterm => vqr.terminate(),
        // The guest's script ends on a connection to its port 7777, and
        // the guest powers off: libvirt stops the domain and releases the
        // port by itself. virt-qemu-run 9.0 then does not end on its own
        // (its event loop thread, told to quit by the STOPPED event, polls
        // once more with nothing left to wake it: docs/libvirt-qemu-driver.md
        // section 5), so a SIGTERM ends it, as a user would.
        Stop::GuestPowerOff => {
            drop(std::net::TcpStream::connect((ip.as_str(), 7777)).expect("tell the guest to end"));
            let end = Instant::now() + Duration::from_secs(120);
            while virsh_ports(&root) != "\n" {
                assert!(
                    Instant::now() < end,
                    "the port outlived the guest's power-off\n{}\n--- console ---\n{}",
                    vqr.report(),
                    std::fs::read_to_string(&console).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            assert_eq!(tap_on_br_lab(), None, "QEMU's tap left on br-lab");
            vqr.terminate();
        }
    }
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = vqr.ended() {
            break st;
        }
        if Instant::now() > end {
            let ps = sh("ps -eo pid,ppid,stat,wchan:20,args | grep -E 'qemu|unshare' | grep -v grep || true");
            panic!(
                "virt-qemu-run did not end; ports {:?}\n{ps}\n{}",
                sw(&root, &["net-port-list", "lab", "--uuid"]),
                vqr.report()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "virt-qemu-run: {status}\n{}",
        vqr.report()
    );
    // Every QEMU libvirt started ended and was reaped: none had to be
    // given up on (the hang's cause, see VirtQemuRun).
    let report = vqr.report();
    assert!(!report.contains("Failed to terminate process"), "{report}");
    // The port is gone, as virsh and slipway's CLI see it, and so is
    // QEMU's tap on the bridge.
    assert_eq!(virsh_ports(&root), "\n", "{report}");
    assert_eq!(ok(&root, &["net-port-list", "lab", "--uuid"]), "\n");
    assert_eq!(tap_on_br_lab(), None, "QEMU's tap left on br-lab");
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "QEMU's tap {tap} left"
    );
}
