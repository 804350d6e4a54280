//! libvirt's own QEMU driver on a slipway network: `virt-qemu-run` (Debian
//! 12's `libvirt-daemon-driver-qemu`, the QEMU driver embedded in one
//! process) starts the test guest from a domain XML with `<interface
//! type='network'>`, and asks for its port on
//! `/run/libvirt/virtnetworkd-sock`, which `slipway daemon` serves
//! (docs/libvirt-qemu-driver.md says why Debian 12's libvirtd cannot).
//!
//! Isolation: the test runs in a network namespace of its own (as root:
//! libvirt sets QEMU's supplementary groups, which a user namespace denies);
//! `virt-qemu-run` additionally in private mount and PID namespaces, where
//! `/run/libvirt` (and so `/var/run/libvirt`) is the daemon's
//! `ROOT/run/libvirt` bound over it, and `/var/lib/libvirt` and
//! `/var/cache/libvirt` are empty tmpfs. Nothing of the machine's own
//! `/run` or network is touched. The upstream is a namespace behind a
//! bridge, with a one-shot TCP server.

mod net_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use net_common::*;
use slipway_testkit::netns::{sh, wait_for, NsGuest};
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

/// Kills a process this test started when dropped.
struct Killed(Child);

impl Killed {
    /// What the process wrote on stderr (once it ended).
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
fn wait_console(console: &Path, line: &str, vqr: &mut Killed, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if text.lines().any(|l| l.trim_end() == line) {
            return text;
        }
        if let Ok(Some(st)) = vqr.0.try_wait() {
            panic!(
                "virt-qemu-run ended ({st}) before {line:?}: {}\nconsole:\n{text}",
                vqr.stderr()
            );
        }
        assert!(
            Instant::now() < end,
            "no {line:?} within {limit:?}; console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn libvirts_qemu_driver_runs_a_guest_on_a_slipway_port() {
    if std::env::var_os("SLIPWAY_NET_CLI_IN_NETNS").is_none() {
        GuestImage::get().expect("build the test guest image");
    }
    in_netns(
        "libvirts_qemu_driver_runs_a_guest_on_a_slipway_port",
        // Real root in a network namespace: in a user namespace, libvirt's
        // start of QEMU fails (`cannot set supplemental groups: Operation
        // not permitted`: setgroups is denied there).
        Ns::Root,
        qemu_driver_body,
    );
}

fn qemu_driver_body() {
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
             NC=$!\n\
             ready end\n\
             wait $NC\n",
            &initrd,
        )
        .unwrap();
    let console = dir.path().join("console.log");
    let dom = write(
        dir.path(),
        "dom.xml",
        &domain(image.kernel(), &initrd, &console),
    );
    // The mount and PID namespaces of virt-qemu-run; paths come in as
    // arguments, never into the script's text.
    let vqr = Command::new("unshare")
        .args([
            "-m",
            "-p",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-ec",
            "mount --bind \"$1\" /run/libvirt\n\
             mount -t tmpfs tmpfs /var/lib/libvirt\n\
             mount -t tmpfs tmpfs /var/cache/libvirt\n\
             exec virt-qemu-run --verbose --root \"$2\" \"$3\"",
            "sh",
        ])
        .arg(root.join("run/libvirt"))
        .arg(&qroot)
        .arg(&dom)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) and virt-qemu-run (libvirt-daemon-driver-qemu)");
    let mut vqr = Killed(vqr);
    let text = wait_console(
        &console,
        "SLIPWAY-READY end",
        &mut vqr,
        Duration::from_secs(240),
    );
    let out = GuestOutput::from_console(text);

    // The port came from slipway: one port, the guest's, plugged into the
    // network's bridge, with QEMU's tap on it.
    let uuids = ok(&root, &["net-port-list", "lab", "--uuid"]);
    let port: Vec<&str> = uuids.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(port.len(), 1, "{uuids}");
    let xml = ok(&root, &["net-port-dumpxml", "lab", port[0]]);
    for want in [
        "<name>porttest</name>",
        "<uuid>5aa2201d-0bfa-4eea-a5be-c4314adaa94a</uuid>",
        &format!("<mac address='{MAC}'/>"),
        "<plug type='network' bridge='br-lab'/>",
    ] {
        assert!(xml.contains(want), "{want} in\n{xml}");
    }
    assert!(
        sh("ip -o link show master br-lab").contains("fe:54:00:46:00:07"),
        "QEMU's tap on br-lab"
    );
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

    // The guest powers off; virt-qemu-run ends and deletes the port.
    drop(std::net::TcpStream::connect((ip.as_str(), 7777)).expect("tell the guest to end"));
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = vqr.0.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let ports = sw(&root, &["net-port-list", "lab", "--uuid"]);
            let ps =
                sh("ps -eo pid,stat,wchan:20,args | grep -E 'qemu|unshare' | grep -v grep || true");
            let _ = vqr.0.kill();
            let _ = vqr.0.wait();
            panic!(
                "virt-qemu-run did not end; ports {ports:?}\n{ps}\nstderr: {}\nconsole:\n{}",
                vqr.stderr(),
                std::fs::read_to_string(&console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    use std::io::Read;
    vqr.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "virt-qemu-run: {status}\n{stderr}");
    wait_for("the port's deletion", || {
        ok(&root, &["net-port-list", "lab", "--uuid"]) == "\n"
    });
}
