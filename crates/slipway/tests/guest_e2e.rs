//! Guest interfaces end to end: `slipway qemu-args` against libvirt's
//! argument forms, and `slipway launch` running real QEMU guests (busybox
//! test guests from slipway-testkit) on every interface type, inside a
//! user and network namespace each test creates (`unshare -Urn`): bridges,
//! taps, multicast and loopback traffic all stay in there.
//!
//! Needs: qemu-system-x86, util-linux (unshare), iproute2, nftables.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use slipway_testkit::netns::{sh, wait_for, NsGuest};
use slipway_testkit::{free_port, Guest, GuestOutput};

mod net_common;

use net_common::{in_netns, ok, write, Ns};

const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");
const HELPER: &str = env!("CARGO_BIN_EXE_slipway-bridge-helper");

/// Runs `body` in a user + network namespace of its own (see
/// [`in_netns`]), loopback up; the guest image is built (its kernel
/// downloaded) before, out here, where apt works.
fn in_new_namespace(name: &str, body: fn()) {
    if std::env::var_os("SLIPWAY_NET_CLI_IN_NETNS").is_none() {
        slipway_testkit::GuestImage::get().expect("build the test guest image");
    }
    in_netns(name, Ns::User, body);
}

/// Names of the links in this namespace.
fn links() -> BTreeSet<String> {
    sh("ip -o link show")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// `slipway ARGS`: (exit code, stdout, stderr).
fn slipway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SLIPWAY)
        .args(args)
        .output()
        .expect("run slipway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// True while something listens on 127.0.0.1:port (from /proc/net/tcp of
/// this namespace; a probe connection would be taken as QEMU's peer).
fn tcp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
}

/// Shell helpers for the guest scripts: `ifmac MAC` names the interface with
/// that MAC; `addr MAC ADDR/PREFIX` configures it; `try ADDR` pings until
/// an answer (bounded); `listening` waits for a listener on port 7777.
const GUEST_HELPERS: &str = "\
ifmac() { for i in /sys/class/net/*; do [ \"$(cat $i/address)\" = \"$1\" ] && basename $i; done; }
addr() { d=$(ifmac $1); ip link set $d up; ip addr add $2 dev $d; }
try() { n=0; while [ $n -lt 90 ]; do ping -c 1 -W 1 $1 >/dev/null 2>&1 && return 0; sleep 1; n=$((n+1)); done; return 1; }
listening() { n=0; while ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':1E61 [0-9A-F:]* 0A'; do sleep 0.1; n=$((n+1)); [ $n -gt 600 ] && exit 1; done; }
";

#[test]
fn qemu_args_match_libvirt_forms() {
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("dom.xml");
    fs::write(
        &xml,
        "<domain type='kvm'><name>vm</name><devices>\n\
         <disk type='file'/>\n\
         <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/><model type='virtio'/></interface>\n\
         <interface type='mcast'><mac address='52:54:00:00:00:02'/><source address='230.0.0.1' port='5558'/><model type='e1000'/></interface>\n\
         <interface type='server'><mac address='52:54:00:00:00:03'/><source address='192.168.0.1' port='5558'/><model type='rtl8139'/></interface>\n\
         <interface type='client'><mac address='52:54:00:00:00:04'/><source address='192.168.0.1' port='5558'/><model type='ne2k_pci'/></interface>\n\
         <interface type='udp'><mac address='52:54:00:00:00:05'/><source address='192.168.0.1' port='5558'><local address='192.168.0.1' port='5554'/></source></interface>\n\
         <interface type='vhostuser'><mac address='52:54:00:00:00:06'/><source type='unix' path='/tmp/vhost.sock' mode='server'/><model type='virtio'/></interface>\n\
         <interface type='bridge'><mac address='52:54:00:00:00:07'/><source bridge='br0'/><model type='virtio'/><mtu size='9000'/></interface>\n\
         <interface type='ethernet'><target dev='vnet3'/></interface>\n\
         </devices></domain>\n",
    )
    .unwrap();
    let root = dir.path().join("root");
    // type='network' needs a defined network (running or not).
    fs::create_dir(&root).unwrap();
    let net = write(
        dir.path(),
        "default.xml",
        "<network><name>default</name><bridge name='virbr0'/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'/></network>\n",
    );
    ok(&root, &["net-define", net.to_str().unwrap()]);
    let qemu_args = |xml: &Path| {
        slipway(&[
            "--root",
            root.to_str().unwrap(),
            "qemu-args",
            xml.to_str().unwrap(),
        ])
    };
    let (code, out, err) = qemu_args(&xml);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // libvirt's forms (reference: virtual-networks.md; libvirt's qemuxml2argv
    // output for the same XML, bus/addr properties aside).
    let expected = [
        "-netdev",
        "tap,fd=3,id=hostnet0",
        "-device",
        "virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01",
        "-netdev",
        "socket,mcast=230.0.0.1:5558,id=hostnet1",
        "-device",
        "e1000,netdev=hostnet1,id=net1,mac=52:54:00:00:00:02",
        "-netdev",
        "socket,listen=192.168.0.1:5558,id=hostnet2",
        "-device",
        "rtl8139,netdev=hostnet2,id=net2,mac=52:54:00:00:00:03",
        "-netdev",
        "socket,connect=192.168.0.1:5558,id=hostnet3",
        "-device",
        "ne2k_pci,netdev=hostnet3,id=net3,mac=52:54:00:00:00:04",
        "-netdev",
        "socket,udp=192.168.0.1:5558,localaddr=192.168.0.1:5554,id=hostnet4",
        "-device",
        "rtl8139,netdev=hostnet4,id=net4,mac=52:54:00:00:00:05",
        "-chardev",
        "socket,id=charnet5,path=/tmp/vhost.sock,server=on,wait=off",
        "-netdev",
        "vhost-user,chardev=charnet5,id=hostnet5",
        "-device",
        "virtio-net-pci,netdev=hostnet5,id=net5,mac=52:54:00:00:00:06",
        "-netdev",
        "tap,fd=4,id=hostnet6",
        "-device",
        "virtio-net-pci,netdev=hostnet6,id=net6,mac=52:54:00:00:00:07,host_mtu=9000",
        "-netdev",
        "tap,fd=5,id=hostnet7",
    ];
    assert_eq!(&lines[..expected.len()], &expected[..], "{out}");
    // The last NIC has no MAC: one is generated under 52:54:00.
    assert_eq!(lines.len(), expected.len() + 2, "{out}");
    let dev = lines[expected.len() + 1];
    let mac = dev
        .strip_prefix("rtl8139,netdev=hostnet7,id=net7,mac=52:54:00:")
        .unwrap_or_else(|| panic!("{dev}"));
    assert_eq!(mac.len(), 8, "{dev}");

    // Errors name the interface by index and MAC; nothing on stdout.
    let bad = dir.path().join("bad.xml");
    fs::write(
        &bad,
        "<interface type='user'/>\n<interface type='tunnel'><mac address='52:54:00:aa:bb:cc'/></interface>\n",
    )
    .unwrap();
    let (code, out, err) = qemu_args(&bad);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("interface 1 (mac 52:54:00:aa:bb:cc)") && err.contains("'tunnel'"),
        "{err}"
    );
    fs::write(
        &bad,
        "<interface type='bridge'><mac address='fe:54:00:aa:bb:cc'/><source bridge='br0'/></interface>\n",
    )
    .unwrap();
    let (code, _, err) = qemu_args(&bad);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("interface 0") && err.contains("0xFE"), "{err}");
    // What launch would refuse, refused here already: a network that is
    // not defined, a NIC model that is not known.
    for (iface, names) in [
        (
            "<interface type='network'><mac address='52:54:00:aa:bb:02'/><source network='nope'/></interface>",
            ["interface 1 (mac 52:54:00:aa:bb:02)", "<source network='nope'>", "no network with matching name 'nope'"],
        ),
        (
            "<interface type='mcast'><mac address='52:54:00:aa:bb:03'/><source address='230.0.0.1' port='5558'/><model type='virtio-foo'/></interface>",
            ["interface 1 (mac 52:54:00:aa:bb:03)", "<model type='virtio-foo'>", "expected one of virtio, "],
        ),
    ] {
        fs::write(&bad, format!("<interface type='user'/>{iface}\n")).unwrap();
        let (code, out, err) = qemu_args(&bad);
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        for name in names {
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    // launch refuses a network that is not running, before creating
    // anything and without running QEMU, and leaves no record behind.
    fs::write(
        &bad,
        "<interface type='user'/><interface type='network'><mac address='52:54:00:aa:bb:01'/>\
         <source network='nope'/></interface>\n",
    )
    .unwrap();
    let marker = dir.path().join("qemu-ran");
    let (code, _, err) = slipway(&[
        "--root",
        root.to_str().unwrap(),
        "launch",
        bad.to_str().unwrap(),
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("interface 1 (mac 52:54:00:aa:bb:01)") && err.contains("nope"),
        "{err}"
    );
    assert!(!marker.exists());
    let running = root.join("run/slipway/guests/running");
    assert_eq!(fs::read_dir(&running).map_or(0, |d| d.count()), 0);
    let sockets = root.join("run/slipway/guests/sockets");
    assert_eq!(fs::read_dir(&sockets).map_or(0, |d| d.count()), 0);
}

#[test]
fn guests_on_socket_user_ethernet_and_bridge_interfaces() {
    in_new_namespace(
        "guests_on_socket_user_ethernet_and_bridge_interfaces",
        guests_body,
    );
}

fn guests_body() {
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root");
    let state = root.join("run/slipway/guests");
    // Multicast needs a route: a veth pair carries the group.
    sh(
        "ip link add mc0 type veth peer name mc1 && ip link set mc1 up && ip link set mc0 up && \
        ip addr add 192.0.2.1/24 dev mc0 && ip route add 224.0.0.0/4 dev mc0",
    );
    // br0 for type='bridge' (MTU 1400: the tap must take it), br1 for QEMU's
    // own -netdev bridge through the helper, br9 refused by the ACL.
    sh("ip link add br0 type bridge && ip link set br0 mtu 1400 up && ip addr add 10.13.0.1/24 dev br0");
    sh("ip link add br1 type bridge && ip link set br1 up && ip addr add 10.14.0.1/24 dev br1");
    sh("ip link add br9 type bridge && ip link set br9 up");
    // An existing tap for <target managed='no'>: used as it is, left in place.
    sh("ip tuntap add ut0 mode tap && ip addr add 10.16.0.1/24 dev ut0 && ip link set ut0 up");
    let acl = d.join("bridge.conf");
    let acl_inc = d.join("more.conf");
    fs::write(
        &acl,
        format!("# test ACL\nallow br1\ninclude {}\n", acl_inc.display()),
    )
    .unwrap();
    fs::write(&acl_inc, "deny br9\n").unwrap();
    let helper = format!("{HELPER} --acl={}", acl.display());
    let nft_before = sh("nft list ruleset");
    let links_before = links();

    // A refused bridge: QEMU's own helper call fails, no tap is left.
    let out = Command::new("qemu-system-x86_64")
        .args([
            "-nodefaults",
            "-nographic",
            "-S",
            "-accel",
            "tcg",
            "-netdev",
        ])
        .arg(format!("bridge,id=hb,br=br9,helper={helper}"))
        .output()
        .expect("run QEMU");
    let qemu_err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "QEMU started on a refused bridge");
    assert!(qemu_err.contains("access denied by acl file"), "{qemu_err}");
    assert_eq!(links(), links_before);

    let up = d.join("up.sh");
    let down = d.join("down.sh");
    fs::write(
        &up,
        format!(
            "#!/bin/sh\nip addr add 10.12.0.1/24 dev \"$1\"\necho \"$1\" >> {}/up.log\n",
            d.display()
        ),
    )
    .unwrap();
    fs::write(
        &down,
        format!("#!/bin/sh\necho \"$1\" >> {}/down.log\n", d.display()),
    )
    .unwrap();
    sh(&format!("chmod +x {} {}", up.display(), down.display()));

    let mport = free_port().unwrap();
    let sport = free_port().unwrap();
    let fport = free_port().unwrap();
    let uport = free_port().unwrap();
    let a_xml = d.join("a.xml");
    fs::write(
        &a_xml,
        format!(
            "<domain type='qemu'><name>a</name><devices>\n\
             <interface type='mcast'><mac address='52:54:00:0a:00:01'/><source address='230.0.0.1' port='{mport}'/><model type='virtio'/></interface>\n\
             <interface type='server'><mac address='52:54:00:0a:00:02'/><source address='127.0.0.1' port='{sport}'/><model type='virtio'/></interface>\n\
             <interface type='user'><mac address='52:54:00:0a:00:03'/><ip family='ipv4' address='10.0.5.0' prefix='24'/>\
               <portForward proto='tcp' address='127.0.0.1'><range start='{fport}' to='7777'/></portForward><model type='virtio'/></interface>\n\
             <interface type='ethernet'><mac address='52:54:00:0a:00:04'/><target dev='gtap0'/>\
               <script path='{}'/><downscript path='{}'/><model type='virtio'/></interface>\n\
             <interface type='udp'><mac address='52:54:00:0a:00:05'/><source address='127.0.0.1' port='{uport}'>\
               <local address='127.0.0.1' port='{uport}'/></source><link state='down'/><model type='virtio'/></interface>\n\
             <interface type='ethernet'><mac address='52:54:00:0a:00:06'/><target dev='ut0' managed='no'/><model type='virtio'/></interface>\n\
             </devices></domain>\n",
            up.display(),
            down.display()
        ),
    )
    .unwrap();
    let b_xml = d.join("b.xml");
    fs::write(
        &b_xml,
        format!(
            "<interface type='mcast'><mac address='52:54:00:0b:00:01'/><source address='230.0.0.1' port='{mport}'/><model type='virtio'/></interface>\n\
             <interface type='client'><mac address='52:54:00:0b:00:02'/><source address='127.0.0.1' port='{sport}'/><model type='virtio'/></interface>\n\
             <interface type='bridge'><mac address='52:54:00:0b:00:03'/><source bridge='br0'/><model type='virtio'/></interface>\n"
        ),
    )
    .unwrap();
    let launcher = |xml: &Path| {
        vec![
            SLIPWAY.to_string(),
            "--root".into(),
            root.display().to_string(),
            "launch".into(),
            xml.display().to_string(),
            "--".into(),
        ]
    };

    let mut a = Guest::builder()
        .launcher(launcher(&a_xml))
        .script(&format!(
            "{GUEST_HELPERS}\
             addr 52:54:00:0a:00:01 10.10.0.1/24\n\
             addr 52:54:00:0a:00:02 10.11.0.1/24\n\
             addr 52:54:00:0a:00:04 10.12.0.2/24\n\
             addr 52:54:00:0a:00:05 10.15.0.1/24\n\
             addr 52:54:00:0a:00:06 10.16.0.2/24\n\
             result carrier5 $(cat /sys/class/net/$(ifmac 52:54:00:0a:00:05)/carrier)\n\
             result carrier1 $(cat /sys/class/net/$(ifmac 52:54:00:0a:00:01)/carrier)\n\
             dhcp $(ifmac 52:54:00:0a:00:03) || exit 1\n\
             echo from-guest-a | nc -l -p 7777 &\n\
             NC=$!\n\
             listening\n\
             ready\n\
             try 10.10.0.2 && result mcast ok\n\
             try 10.11.0.2 && result stream ok\n\
             try 10.12.0.1 && result ethernet ok\n\
             try 10.16.0.1 && result unmanaged ok\n\
             wait $NC && result forward served\n\
             nc -l -p 7777 </dev/null >/dev/null &\n\
             NC=$!\n\
             listening\n\
             ready end\n\
             wait $NC\n"
        ))
        .timeout(Duration::from_secs(300))
        .boot()
        .expect("guest A boots");
    // B's client needs A's server listening.
    wait_for("guest A's QEMU listening", || tcp_listening(sport));
    let mut b = Guest::builder()
        .launcher(launcher(&b_xml))
        .extra_args([
            "-netdev".to_string(),
            format!("bridge,id=hb,br=br1,helper={helper}"),
            "-device".into(),
            "virtio-net-pci,netdev=hb,mac=52:54:00:0b:00:04".into(),
        ])
        .script(&format!(
            "{GUEST_HELPERS}\
             addr 52:54:00:0b:00:01 10.10.0.2/24\n\
             addr 52:54:00:0b:00:02 10.11.0.2/24\n\
             addr 52:54:00:0b:00:03 10.13.0.2/24\n\
             addr 52:54:00:0b:00:04 10.14.0.2/24\n\
             try 10.10.0.1 && result mcast ok\n\
             try 10.11.0.1 && result stream ok\n\
             try 10.13.0.1 && result bridge ok\n\
             try 10.14.0.1 && result helper ok\n\
             ready done\n\
             sleep 600\n"
        ))
        .timeout(Duration::from_secs(300))
        .boot()
        .expect("guest B boots");

    // The host reaches A's server through the user-mode stack's forward.
    a.wait_for_line("SLIPWAY-READY", Duration::from_secs(240))
        .expect("guest A ready");
    let mut body = String::new();
    TcpStream::connect(("127.0.0.1", fport))
        .expect("connect to the forwarded port")
        .read_to_string(&mut body)
        .unwrap();
    assert_eq!(body.trim(), "from-guest-a");

    // While both run: the taps as libvirt makes them, and the records.
    b.wait_for_line("SLIPWAY-READY done", Duration::from_secs(240))
        .expect("guest B done");
    a.wait_for_line("SLIPWAY-READY end", Duration::from_secs(240))
        .expect("guest A done");
    let br0_ports = sh("ip -o link show master br0");
    assert!(br0_ports.contains("mtu 1400"), "{br0_ports}");
    assert!(
        br0_ports.contains("link/ether fe:54:00:0b:00:03"),
        "{br0_ports}"
    );
    let tap_b = br0_ports.split(": ").nth(1).unwrap().to_string();
    assert!(tap_b.starts_with("vnet"), "{tap_b}");
    let br1_ports = sh("ip -o link show master br1");
    assert!(
        br1_ports.contains("link/ether fe:ff:ff:ff:ff:ff"),
        "{br1_ports}"
    );
    let gtap = sh("ip -o link show gtap0");
    assert!(gtap.contains("link/ether fe:54:00:0a:00:04"), "{gtap}");
    let records: Vec<String> = fs::read_dir(state.join("running"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let stack_pids: Vec<u32> = records
        .iter()
        .flat_map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            v["stacks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap() as u32)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(stack_pids.len(), 1, "{records:?}");
    assert!(Path::new(&format!("/proc/{}", stack_pids[0])).exists());

    // B ends by QEMU being killed (once A is done with it); A ends normally.
    // A ends when the host connects again.
    drop(TcpStream::connect(("127.0.0.1", fport)).expect("tell guest A to end"));
    let qemu_b = fs::read_to_string(format!("/proc/{0}/task/{0}/children", b.pid())).unwrap();
    let qemu_b: i32 = qemu_b
        .split_whitespace()
        .next()
        .expect("QEMU is the launcher's child")
        .parse()
        .unwrap();
    // SAFETY: a process of this test's namespace.
    assert_eq!(unsafe { libc::kill(qemu_b, libc::SIGKILL) }, 0);
    let b_out = GuestOutput::from_console(b.console());
    assert!(b.wait().is_err(), "a killed QEMU is a failed run");
    for (k, v) in [
        ("mcast", "ok"),
        ("stream", "ok"),
        ("bridge", "ok"),
        ("helper", "ok"),
    ] {
        assert_eq!(b_out.result(k), Some(v), "B {k}:\n{}", b_out.console);
    }
    let out = a.wait().expect("guest A runs to the end");
    assert_eq!(out.result("ip"), Some("10.0.5.15"), "{}", out.console);
    // <link state='down'/> (set over QMP before the guest ran) against an up link.
    for (k, v) in [
        ("mcast", "ok"),
        ("stream", "ok"),
        ("ethernet", "ok"),
        ("unmanaged", "ok"),
        ("forward", "served"),
        ("carrier5", "0"),
        ("carrier1", "1"),
    ] {
        assert_eq!(out.result(k), Some(v), "A {k}:\n{}", out.console);
    }

    // Nothing left: taps, stacks, records, sockets, rules; scripts ran.
    wait_for("the launchers' cleanup", || links() == links_before);
    assert!(!Path::new(&format!("/proc/{}", stack_pids[0])).exists());
    assert_eq!(fs::read_dir(state.join("running")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(state.join("sockets")).unwrap().count(), 0);
    assert_eq!(sh("nft list ruleset"), nft_before);
    assert_eq!(fs::read_to_string(d.join("up.log")).unwrap(), "gtap0\n");
    assert_eq!(fs::read_to_string(d.join("down.log")).unwrap(), "gtap0\n");
    // The vnet counter only grows: the next tap is vnet1 even though vnet0 is gone.
    assert_eq!(
        fs::read_to_string(state.join("vnet-counter"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(tap_b, "vnet0");
}

const LAB: &str = "<network><name>lab</name><forward mode='nat'/>\
  <bridge name='br-lab'/><mtu size='1400'/>\
  <ip address='10.44.0.1' prefix='24'><dhcp><range start='10.44.0.10' end='10.44.0.20'/>\
  <host mac='52:54:00:0c:00:01' ip='10.44.0.11'/><host mac='52:54:00:0c:00:02' ip='10.44.0.12'/>\
  </dhcp></ip></network>";

#[test]
fn guests_on_a_slipway_nat_network() {
    in_new_namespace("guests_on_a_slipway_nat_network", network_body);
}

fn network_body() {
    sh("ip link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let state = root.join("run/slipway/guests");
    // The upstream: a namespace behind bridge up-br, with a one-shot TCP
    // server on 198.51.100.2:8080.
    sh("ip link add up-br type bridge && ip link set up-br up && ip addr add 198.51.100.1/24 dev up-br");
    let upstream = NsGuest::new("up-br", "up0", "02:00:00:00:00:02");
    upstream.run("ip addr add 198.51.100.2/24 dev eth0");
    let server = std::thread::spawn(move || {
        upstream.run("echo from-upstream | busybox nc -l -p 8080");
        upstream
    });
    write(root, "lab.xml", LAB);
    ok(root, &["net-define", "lab.xml"]);
    assert_eq!(ok(root, &["net-start", "lab"]), "Network lab started\n\n");
    let links_before = links();
    let nft = || sh("nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'");
    let nft_before = nft();

    let guest = |n: u8, peer: u8, extra: &str| {
        let xml = write(
            root,
            &format!("g{n}.xml"),
            &format!(
                "<domain type='qemu'><name>g{n}</name><devices>\
                 <interface type='network'><source network='lab'/><mac address='52:54:00:0c:00:0{n}'/>\
                 <model type='virtio'/></interface></devices></domain>"
            ),
        );
        Guest::builder()
            .launcher([
                SLIPWAY.to_string(),
                "--root".into(),
                root.display().to_string(),
                "launch".into(),
                xml.display().to_string(),
                "--".into(),
            ])
            .script(&format!(
                "{GUEST_HELPERS}\
                 dhcp eth0 || exit 1\n\
                 try 10.44.0.1{peer} && result peer ok\n\
                 try 198.51.100.2 && result upstream ok\n\
                 {extra}\
                 nc -l -p 7777 </dev/null >/dev/null &\n\
                 NC=$!\n\
                 listening\n\
                 ready end\n\
                 wait $NC\n\
                 result ended normally\n"
            ))
            .timeout(Duration::from_secs(300))
            .boot()
            .expect("guest boots")
    };
    let mut g1 = guest(
        1,
        2,
        "n=0; until nc 198.51.100.2 8080 </dev/null > /tmp/up; do n=$((n+1)); [ $n -gt 100 ] && break; sleep 0.2; done\n\
         result body \"$(cat /tmp/up)\"\n",
    );
    let mut g2 = guest(2, 1, "");
    g1.wait_for_line("SLIPWAY-READY end", Duration::from_secs(240))
        .expect("guest 1 done");
    g2.wait_for_line("SLIPWAY-READY end", Duration::from_secs(240))
        .expect("guest 2 done");
    // Both taps on the network's bridge, with its MTU and fe: MACs.
    let ports = sh("ip -o link show master br-lab");
    for mac in ["fe:54:00:0c:00:01", "fe:54:00:0c:00:02"] {
        assert!(ports.contains(mac), "{ports}");
    }
    assert_eq!(ports.matches("mtu 1400").count(), 2, "{ports}");
    let (c1, c2) = (
        GuestOutput::from_console(g1.console()),
        GuestOutput::from_console(g2.console()),
    );
    // Guest 1 ends normally (the host, on the bridge, tells it to power
    // off), guest 2 by SIGTERM to its launcher, which passes it on to QEMU
    // and cleans up after it.
    drop(TcpStream::connect(("10.44.0.11", 7777)).expect("tell guest 1 to end"));
    // SAFETY: a process this test started.
    assert_eq!(unsafe { libc::kill(g2.pid() as i32, libc::SIGTERM) }, 0);
    assert!(
        g2.wait().is_err(),
        "a guest stopped halfway is a failed run"
    );
    for (c, name) in [(&c2, "guest 2"), (&c1, "guest 1")] {
        let ip = c.result("ip").unwrap_or_default();
        assert!(ip.starts_with("10.44.0.1"), "{name}:\n{}", c.console);
        for key in ["peer", "upstream"] {
            assert_eq!(c.result(key), Some("ok"), "{name} {key}:\n{}", c.console);
        }
    }
    assert_eq!(c1.result("body"), Some("from-upstream"), "{}", c1.console);
    g1.wait().expect("guest 1 powers off normally");
    let _upstream = server.join().unwrap();

    // Nothing of the guests is left; the network is as it was.
    wait_for("the launchers' cleanup", || links() == links_before);
    assert_eq!(nft(), nft_before);
    wait_for("the records removed", || {
        fs::read_dir(state.join("running")).map_or(true, |d| d.count() == 0)
    });
    ok(root, &["net-destroy", "lab"]);
}
