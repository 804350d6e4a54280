//! slipway as `passt` against Debian's passt: the same command line (as
//! libvirt 9.0 writes it) run by each in twin private namespaces, and the
//! test guest under QEMU (`-netdev stream`) on each.
//!
//! Isolation: the test binary re-executes itself as PID 1 of new mount,
//! network and PID namespaces (so every process it starts, the daemonized
//! passt included, ends with it, and /etc/resolv.conf can be replaced).
//! There each twin is two namespaces the test creates: the private one
//! where passt runs, whose only way out is a veth to the "upstream" one,
//! which holds servers. Nothing reaches this machine's own network.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use slipway_testkit::netns::{sh, wait_for, Netns};
use slipway_testkit::{Guest, HttpServer, KillOnDrop};

const MARKER: &str = "SLIPWAY_PASST_TWIN_INSIDE";

/// Runs test `name` as PID 1 of new mount, network and PID namespaces.
fn inside(name: &str, body: fn()) {
    if std::env::var_os(MARKER).is_some() {
        sh("mount --make-rprivate /");
        body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut unshare = Command::new("unshare");
    // SAFETY: prctl in the child before exec touches no memory: unshare
    // (and with --kill-child, everything in its PID namespace) dies with
    // this test even if the test is killed.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut unshare, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let status = unshare
        .args(["-mnpf", "--kill-child", "--mount-proc"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(MARKER, "1")
        .status()
        .expect("unshare runs");
    assert!(
        status.success(),
        "test inside the namespaces failed: {status}"
    );
}

/// A private namespace (10.99.0.2/24, default route via 10.99.0.1) whose
/// only link is a veth into `upstream` (10.99.0.1 and 10.99.0.3 on the
/// veth, 198.51.100.7 on its loopback).
struct Twin {
    upstream: Netns,
    private: Netns,
}

impl Twin {
    fn new() -> Twin {
        let (upstream, private) = (Netns::new(), Netns::new());
        sh(&format!(
            "ip link add up0 netns {} type veth peer name eth0 netns {}",
            upstream.pid(),
            private.pid()
        ));
        upstream.run(
            "ip addr add 10.99.0.1/24 dev up0 && ip addr add 10.99.0.3/24 dev up0 && \
             ip link set up0 up && ip addr add 198.51.100.7/32 dev lo",
        );
        private.run(
            "ip addr add 10.99.0.2/24 dev eth0 && ip link set eth0 up && \
             ip route add default via 10.99.0.1",
        );
        Twin { upstream, private }
    }

    /// The web servers both twins' tests reach: `on-private-loopback` on
    /// the private namespace's loopback and `on-upstream` at 198.51.100.7,
    /// from sites made under `dir`.
    fn loopback_and_upstream_sites(&self, dir: &Path) -> (HttpServer, HttpServer) {
        let lo = Twin::http(
            &self.private,
            &site(dir, "lo", "on-private-loopback"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        let up = Twin::http(
            &self.upstream,
            &site(dir, "up", "on-upstream"),
            "198.51.100.7".parse().unwrap(),
        );
        (lo, up)
    }

    /// `program` to be run in the private namespace.
    fn in_private(&self, program: &Path) -> Command {
        self.private.command(program)
    }

    /// Boots the test guest running `script`, QEMU in the private
    /// namespace, its NIC a stream netdev to passt's `socket`; returns it
    /// once it printed `SLIPWAY-READY {ready}`, or panics with its console
    /// and passt's `log` under `label`.
    fn boot_guest(
        &self,
        socket: &Path,
        script: &str,
        ready: &str,
        label: &str,
        log: impl Fn() -> String,
    ) -> Guest {
        let mut guest = Guest::builder()
            .netdev(&format!(
                "stream,server=off,addr.type=unix,addr.path={}",
                socket.display()
            ))
            .mac("52:54:00:12:34:56")
            .script(script)
            .timeout(std::time::Duration::from_secs(400))
            .launcher(["nsenter", "-t", &self.private.pid().to_string(), "-n"])
            .boot()
            .unwrap();
        let line = format!("SLIPWAY-READY {ready}");
        if let Err(e) = guest.wait_for_line(&line, std::time::Duration::from_secs(300)) {
            panic!(
                "{label}: {e}\n--- guest ---\n{}\n--- log ---\n{}",
                guest.console(),
                log()
            );
        }
        guest
    }

    /// An HTTP server serving `dir` on `ip` inside `ns`.
    fn http(ns: &Netns, dir: &Path, ip: IpAddr) -> HttpServer {
        let dir = dir.to_path_buf();
        ns.spawn(move || HttpServer::serve_dir_on(&dir, ip).unwrap())
            .join()
            .unwrap()
    }
}

/// dnsmasq on port 53 of `ns`'s loopback address `listen` (127.0.0.1 or
/// ::1: the host's resolver, as systemd-resolved's or a local cache is),
/// answering www.example.test with `answer`.
fn dns_on_loopback(ns: &Netns, listen: &str, answer: &str) -> KillOnDrop {
    let child = Command::new("nsenter")
        .args(["-t", &ns.pid().to_string(), "-n", "dnsmasq", "--no-daemon"])
        .args([
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file",
        ])
        .arg(format!("--listen-address={listen}"))
        .args(["--bind-interfaces", "--port=53"])
        .arg(format!("--host-record=www.example.test,{answer}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let port = std::net::SocketAddr::new(listen.parse().unwrap(), 53);
    let listening = ns.cmd(&format!("ss -lun | grep -qF \"{port}\""));
    wait_for(&format!("dnsmasq on {port}"), || {
        Command::new("sh")
            .args(["-c", &listening])
            .status()
            .is_ok_and(|s| s.success())
    });
    KillOnDrop(child)
}

/// The page the upstream web servers serve (no newline).
const UPSTREAM_PAGE: &str = "on-upstream6";

/// A directory with `marker.txt` holding `text`.
fn site(root: &Path, name: &str, text: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("marker.txt"), text).unwrap();
    dir
}

/// libvirt 9.0's passt command line for a guest with MAC
/// 52:54:00:12:34:56, a log file and `<portForward proto='tcp'><range
/// start='2222' to='80'/></portForward>` (qemu_passt.c).
fn libvirt_args(dir: &Path) -> Vec<String> {
    [
        "--one-off",
        "--socket",
        &dir.join("passt.sock").display().to_string(),
        "--mac-addr",
        "52:54:00:12:34:56",
        "--log-file",
        &dir.join("passt.log").display().to_string(),
        "--tcp-ports",
        "2222:80",
        "--pid",
        &dir.join("passt.pid").display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// What the guest saw on one twin, and what reached it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    results: Vec<(String, Option<String>)>,
    forward: String,
    /// A DNS query to the gateway reached the host's loopback resolver.
    dns_gw: Option<String>,
}

/// Starts `program` (passt or slipway linked as passt) with libvirt's
/// command line in a fresh twin, boots the test guest on its socket and
/// returns what the guest saw.
fn one_twin(program: &Path, root: &Path, label: &str) -> Seen {
    let twin = Twin::new();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    // passt, started as root, serves as nobody: its socket's directory
    // must let nobody create the socket (as under libvirt).
    sh(&format!("chmod 0777 {}", dir.display()));
    let (lo, up) = twin.loopback_and_upstream_sites(&dir);
    let peer = Twin::http(
        &twin.upstream,
        &site(&dir, "peer", "on-lan-peer"),
        "10.99.0.3".parse().unwrap(),
    );
    let _dns = dns_on_loopback(&twin.private, "127.0.0.1", "192.0.2.10");
    let args = libvirt_args(&dir);
    let out = twin.in_private(program).args(&args).output().unwrap();
    let log = || std::fs::read_to_string(dir.join("passt.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{label}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    // Daemonized: the socket is there once the parent has returned.
    assert!(
        dir.join("passt.sock").exists(),
        "{label}: no socket\n{}",
        log()
    );
    let pid: u32 = std::fs::read_to_string(dir.join("passt.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "{label}: the PID file names the daemon"
    );

    let script = format!(
        "dhcp eth0 || exit 1\n\
         get() {{ rm -f /tmp/m; wget -q -O /tmp/m \"http://$1/marker.txt\" && cat /tmp/m; }}\n\
         result loopback \"$(get 10.99.0.1:{lo})\"\n\
         result upstream \"$(get 198.51.100.7:{up})\"\n\
         result lan_peer \"$(get 10.99.0.3:{peer})\"\n\
         result default_route \"$(ip route | grep ^default)\"\n\
         nslookup www.example.test 10.99.0.1 > /tmp/ns 2>&1; grep -q 192.0.2.10 /tmp/ns && result dns_gw ok\n\
         mkdir -p /www && echo guest-page > /www/index.html\n\
         httpd -p 80 -h /www\n\
         ready forward\n\
         sleep 120\n",
        lo = lo.port(),
        up = up.port(),
        peer = peer.port(),
    );
    let guest = twin.boot_guest(&dir.join("passt.sock"), &script, "forward", label, log);
    let forward = twin
        .private
        .spawn(|| common::http_get(("127.0.0.1", 2222)).unwrap_or_else(|e| e.to_string()))
        .join()
        .unwrap();
    let out = guest.output_so_far();
    let results = [
        "dhcp",
        "ip",
        "mask",
        "subnet",
        "broadcast",
        "router",
        "dns",
        "domain",
        "search",
        "hostname",
        "mtu",
        "siaddr",
        "serverid",
        "lease",
        "loopback",
        "upstream",
        "lan_peer",
        "default_route",
    ]
    .iter()
    .map(|k| (k.to_string(), out.result(k).map(str::to_owned)))
    .collect();
    drop(guest);
    // --one-off: the daemon ends with its client.
    wait_for(&format!("{label} to exit after its one client"), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let forward = forward.lines().last().unwrap_or_default().to_string();
    eprintln!("--- {label} console ---\n{}", out.console);
    let dns_gw = out.result("dns_gw").map(str::to_owned);
    Seen {
        results,
        forward,
        dns_gw,
    }
}

/// The same libvirt command line against Debian's passt and slipway as
/// passt: the same DHCP answers, the gateway reaching the private
/// namespace's loopback, the upstream and a LAN peer reached, the forward
/// reaching the guest.
#[test]
fn libvirt_command_line_matches_debian_passt() {
    inside("libvirt_command_line_matches_debian_passt", || {
        let root = slipway_testkit::temp_dir().unwrap();
        std::fs::write(
            root.path().join("resolv.conf"),
            "nameserver 198.51.100.53\nnameserver 127.0.0.1\nsearch example.test\n",
        )
        .unwrap();
        sh(&format!(
            "mount --bind {} /etc/resolv.conf",
            root.path().join("resolv.conf").display()
        ));
        // slipway, linked under passt's name (the drop-in).
        let link = root.path().join("bin/passt");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
        sh(&format!("chmod 0755 {}", root.path().display()));

        let real = one_twin(Path::new("/usr/bin/passt"), root.path(), "real");
        let ours = one_twin(&link, root.path(), "slipway");
        let want = |k: &str| {
            real.results
                .iter()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.clone())
        };
        // The expected facts first (so that a broken passt cannot make
        // a broken slipway pass), then the two side by side.
        assert_eq!(want("ip").as_deref(), Some("10.99.0.2"), "{real:?}");
        assert_eq!(want("router").as_deref(), Some("10.99.0.1"), "{real:?}");
        assert_eq!(
            want("dns").as_deref(),
            Some("198.51.100.53 10.99.0.1"),
            "{real:?}"
        );
        assert_eq!(
            want("loopback").as_deref(),
            Some("on-private-loopback"),
            "{real:?}"
        );
        assert_eq!(want("upstream").as_deref(), Some("on-upstream"), "{real:?}");
        assert_eq!(want("lan_peer").as_deref(), Some("on-lan-peer"), "{real:?}");
        assert!(real.forward.contains("guest-page"), "{real:?}");
        assert_eq!(
            (&ours.results, &ours.forward),
            (&real.results, &real.forward)
        );
        // passt advertises the gateway as DNS server for a loopback
        // resolver, and slipway's queries to it reach that resolver;
        // Debian's passt (0.0~git20230309)'s time out (README).
        assert_eq!(ours.dns_gw.as_deref(), Some("ok"), "{ours:?}");
    });
}

/// A port specification passt refuses, slipway as passt refuses too, with
/// an error naming it; and nothing is left running.
#[test]
fn bad_port_specs_are_refused_by_both() {
    inside("bad_port_specs_are_refused_by_both", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = root.path().join("passt");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
        let twin = Twin::new();
        // What passt 0.0~git20230309 refuses (it takes port 0, slipway does
        // not: README).
        for spec in [
            "80-22",
            "70000",
            "22-80:32-33",
            "22-80:32",
            "~22:23",
            "host/22",
            "22,,25",
            "20-30,25",
            "65000-65010:65530",
        ] {
            for program in [Path::new("/usr/bin/passt"), link.as_path()] {
                let out = twin
                    .in_private(program)
                    .args(["-f", "-1", "--socket"])
                    .arg(root.path().join("s.sock"))
                    .args(["-t", spec])
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !out.status.success(),
                    "{} took -t {spec}: {stderr}",
                    program.display()
                );
                if program == link {
                    assert!(
                        stderr.contains(&format!("invalid --tcp-ports '{spec}'")),
                        "{stderr}"
                    );
                }
            }
        }
    });
}

/// A forward whose port is taken fails after the fork: the parent, which
/// libvirt waits for, exits with the daemon's error, and writes no PID file;
/// Debian's passt fails to start too.
#[test]
fn taken_port_fails_in_the_parent() {
    inside("taken_port_fails_in_the_parent", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = root.path().join("passt");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
        let twin = Twin::new();
        let _taken = twin
            .private
            .spawn(|| std::net::TcpListener::bind(("0.0.0.0", 2222)).unwrap())
            .join()
            .unwrap();
        for program in [Path::new("/usr/bin/passt"), link.as_path()] {
            let pid_file = root.path().join("p.pid");
            let out = twin
                .in_private(program)
                .args(["-1", "--socket"])
                .arg(root.path().join("s.sock"))
                .args(["-t", "2222", "--pid"])
                .arg(&pid_file)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{} started: {stderr}",
                program.display()
            );
            if program == link {
                assert!(stderr.contains("2222"), "{stderr}");
                assert!(!pid_file.exists());
            }
        }
    });
}

/// A container's namespace as rootless podman makes it: a user namespace
/// owned by an unprivileged user (nobody) and its network namespace;
/// killed on drop.
struct Container(KillOnDrop);

impl Container {
    fn new() -> Container {
        let child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["unshare", "-Urn", "sleep", "3600"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        wait_for("the container's namespace", || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != own)
        });
        Container(KillOnDrop(child))
    }

    /// Runs `cmd` in the container's network namespace (as root).
    fn run(&self, cmd: &str) -> String {
        sh(&format!("nsenter -t {} -n sh -c '{cmd}'", self.pid()))
    }
}

impl Container {
    /// The process holding the container's namespaces.
    fn pid(&self) -> u32 {
        self.0 .0.id()
    }
}

/// What a pasta twin's container got, and what it reached.
#[derive(Debug, PartialEq, Eq)]
struct PastaSeen {
    address: String,
    routes: String,
    link: String,
    loopback: String,
    upstream: String,
    forward: String,
    dns: String,
}

fn pasta_twin(program: &Path, root: &Path, label: &str) -> PastaSeen {
    let twin = Twin::new();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let (lo, up) = twin.loopback_and_upstream_sites(&dir);
    let _dns = dns_on_loopback(&twin.private, "127.0.0.1", "192.0.2.10");
    let ctr = Container::new();
    let www = site(&dir, "www", "ns-page");
    std::fs::write(www.join("index.html"), "ns-page\n").unwrap();
    // podman 5's command line for a container without published ports
    // but one: -t 8080.
    let out = twin
        .in_private(program)
        .args([
            "--config-net",
            "-t",
            "8080",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
        ])
        .args(["--dns-forward", "169.254.1.1", "--quiet"])
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctr.run(&format!(
        "busybox httpd -p 0.0.0.0:8080 -h {}",
        www.display()
    ));
    let address = ctr.run("ip -4 -o addr show dev eth0 | awk \"{print \\$4}\"");
    let routes = ctr.run("ip -4 route show");
    let link = ctr.run("ip -o link show dev eth0 | grep -o \"<.*> mtu [0-9]*\"");
    let get = |url: String| {
        Command::new("nsenter")
            .args([
                "-t",
                &ctr.pid().to_string(),
                "-n",
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
                &url,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let loopback = get(format!("http://10.99.0.1:{}/marker.txt", lo.port()));
    let upstream = get(format!("http://198.51.100.7:{}/marker.txt", up.port()));
    let forward = twin
        .private
        .spawn(|| common::http_get(("127.0.0.1", 8080)).unwrap_or_else(|e| e.to_string()))
        .join()
        .unwrap();
    let forward = forward.lines().last().unwrap_or_default().to_string();
    // --dns-forward: the address relays to the host's (loopback) resolver.
    let dns = ctr.run("dig +short +time=5 +tries=2 @169.254.1.1 www.example.test || true");
    PastaSeen {
        dns,
        address,
        routes,
        link,
        loopback,
        upstream,
        forward,
    }
}

/// podman 5's pasta command line against Debian's pasta and slipway as
/// pasta: the container gets the same address, routes and link, reaches
/// the host's loopback through the gateway and the upstream, and the
/// forward reaches it.
#[test]
fn podman_command_line_matches_debian_pasta() {
    inside("podman_command_line_matches_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "127.0.0.1");
        let real = pasta_twin(Path::new("/usr/bin/pasta"), root.path(), "real");
        let ours = pasta_twin(&link, root.path(), "slipway");
        assert_eq!(real.address.trim(), "10.99.0.2/24", "{real:?}");
        assert!(
            real.routes.contains("default via 10.99.0.1 dev eth0"),
            "{real:?}"
        );
        assert!(
            real.link.contains("UP") && real.link.contains("mtu 65520"),
            "{real:?}"
        );
        assert_eq!(real.loopback, "on-private-loopback", "{real:?}");
        assert_eq!(real.upstream, "on-upstream", "{real:?}");
        assert_eq!(real.forward, "ns-page", "{real:?}");
        assert_eq!(real.dns.trim(), "192.0.2.10", "{real:?}");
        assert_eq!(ours, real);
    });
}

/// slipway as passt in vhost-user mode (`passt --vhost-user`, as newer
/// libvirt and QEMU's `-netdev passt` run it) in the private namespace:
/// the test guest boots with `-netdev vhost-user` on its socket, gets the
/// copied address by DHCP and downloads a file from the private
/// namespace's loopback through the mapped gateway with the same
/// checksum; `--one-off` ends the daemon with the guest. (Debian's passt
/// predates vhost-user: nothing to run it against.)
#[test]
fn passt_vhost_user_boots_the_test_guest() {
    inside("passt_vhost_user_boots_the_test_guest", || {
        let root = slipway_testkit::temp_dir().unwrap();
        std::fs::write(root.path().join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        sh(&format!(
            "mount --bind {} /etc/resolv.conf && chmod 0777 {}",
            root.path().join("resolv.conf").display(),
            root.path().display()
        ));
        let link = root.path().join("passt");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
        let twin = Twin::new();
        let www = site(root.path(), "www", "on-private-loopback");
        let blob: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(www.join("blob.bin"), &blob).unwrap();
        let lo = Twin::http(&twin.private, &www, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let sock = root.path().join("vhost.sock");
        let log_file = root.path().join("passt.log");
        let pid_file = root.path().join("passt.pid");
        let out = twin
            .in_private(&link)
            .args(["--vhost-user", "--one-off", "--socket"])
            .arg(&sock)
            .args(["--mac-addr", "52:54:00:12:34:56", "--log-file"])
            .arg(&log_file)
            .arg("--pid")
            .arg(&pid_file)
            .output()
            .unwrap();
        let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log()
        );
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let script = format!(
            "dhcp eth0 || exit 1\n\
             result sum \"$(wget -q -O - http://10.99.0.1:{port}/blob.bin | md5sum | cut -d' ' -f1)\"\n",
            port = lo.port()
        );
        let guest = Guest::builder()
            .netdev("vhost-user,id=n0,chardev=c0")
            // INTx: QEMU 7.2 under TCG crashes starting vhost with MSI-X.
            .nic_model("virtio-net-pci,vectors=0")
            .extra_args(common::vhost_args(&sock))
            .mac("52:54:00:12:34:56")
            .script(&script)
            .timeout(std::time::Duration::from_secs(400))
            .launcher(["nsenter", "-t", &twin.private.pid().to_string(), "-n"])
            .run();
        let out = match guest {
            Ok(out) => out,
            Err(e) => panic!("guest failed: {e}\n--- log ---\n{}", log()),
        };
        let ctx = format!("--- guest ---\n{}\n--- log ---\n{}", out.console, log());
        assert_eq!(out.result("ip"), Some("10.99.0.2"), "{ctx}");
        assert_eq!(out.result("router"), Some("10.99.0.1"), "{ctx}");
        assert_eq!(
            out.result("sum"),
            Some(common::md5(&www.join("blob.bin")).as_str()),
            "{ctx}"
        );
        assert!(log().contains("vhost-user socket"), "{ctx}");
        wait_for("the daemon to exit after its one client", || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
    });
}

/// What a command pasta started in its own namespace saw, and its status.
#[derive(Debug, PartialEq, Eq)]
struct CommandSeen {
    out: String,
    status: Option<i32>,
}

/// Runs `program` (pasta or slipway as pasta) as an unprivileged user
/// (nobody) in a fresh twin's private namespace with `options`, a command
/// given by `command_line`, and `stdin`.
fn pasta_command_twin(
    program: &Path,
    root: &Path,
    label: &str,
    options: &[&str],
    command_line: &[&str],
    stdin: &str,
) -> CommandSeen {
    let twin = Twin::new();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let lo = Twin::http(
        &twin.private,
        &site(&dir, "lo", "on-private-loopback"),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    );
    let input = dir.join("stdin");
    std::fs::write(&input, stdin).unwrap();
    // Processes left behind end with this test's PID namespace; `timeout`
    // bounds a hung twin.
    let out = Command::new("timeout")
        .args([
            "120",
            "nsenter",
            "-t",
            &twin.private.pid().to_string(),
            "-n",
        ])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(program)
        .args(options)
        .args(command_line)
        .env("LO_PORT", lo.port().to_string())
        .env("SHELL", "/bin/sh")
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    eprintln!(
        "--- {label} ---\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    CommandSeen {
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        status: out.status.code(),
    }
}

/// `pasta [OPTIONS] COMMAND` against Debian's pasta and slipway as pasta,
/// run by an unprivileged user: the command runs as root of a new user
/// namespace in a new network namespace; with `--config-net` its
/// interface gets the host's address, prefix, default route and MTU 65520
/// and reaches the host's loopback through the gateway; pasta exits with
/// the command's status. Without a command, the user's shell reads
/// standard input.
#[test]
fn pasta_runs_a_command_like_debian_pasta() {
    inside("pasta_runs_a_command_like_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "127.0.0.1");
        let script = "echo uid=$(id -u); \
             ip -4 -o addr show dev eth0 | awk '{print \"addr=\" $4}'; \
             ip -4 route show | sed 's/^/route=/'; \
             echo link=$(ip -o link show dev eth0 | grep -o '<.*> mtu [0-9]*'); \
             echo lo=$(busybox wget -q -O - http://10.99.0.1:$LO_PORT/marker.txt); \
             exit 7";
        let cases: [(&str, &[&str], &[&str], &str); 3] = [
            (
                "config",
                &["--config-net", "-q", "--"],
                &["sh", "-c", script],
                "",
            ),
            (
                "dashdash",
                &["-q", "--config-net", "--"],
                &["/bin/sh", "-c", "exit 3"],
                "",
            ),
            ("shell", &["-q"], &[], "echo from-the-shell; exit 5\n"),
        ];
        for (name, options, command, stdin) in cases {
            let real = pasta_command_twin(
                Path::new("/usr/bin/pasta"),
                root.path(),
                &format!("real-{name}"),
                options,
                command,
                stdin,
            );
            let ours = pasta_command_twin(
                &link,
                root.path(),
                &format!("slipway-{name}"),
                options,
                command,
                stdin,
            );
            match name {
                "config" => {
                    assert_eq!(real.status, Some(7), "{real:?}");
                    for want in [
                        "uid=0\n",
                        "addr=10.99.0.2/24\n",
                        "route=default via 10.99.0.1 dev eth0",
                        "link=<BROADCAST,MULTICAST,UP,LOWER_UP> mtu 65520\n",
                        "lo=on-private-loopback\n",
                    ] {
                        assert!(real.out.contains(want), "{want}: {real:?}");
                    }
                }
                "dashdash" => assert_eq!(real.status, Some(3), "{real:?}"),
                _ => {
                    assert_eq!(real.status, Some(5), "{real:?}");
                    assert!(real.out.contains("from-the-shell"), "{real:?}");
                }
            }
            assert_eq!(ours, real, "{name}");
        }
    });
}

/// A command that cannot be run: both fail (pasta with 1, slipway with
/// 127 as a shell does, naming the command), and nothing is left running.
#[test]
fn pasta_command_not_found() {
    inside("pasta_command_not_found", || {
        sh("mount -t tmpfs -o mode=755 tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200");
        let root = slipway_testkit::temp_dir().unwrap();
        sh(&format!("chmod 0755 {}", root.path().display()));
        let link = root.path().join("pasta");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
        let real = pasta_command_twin(
            Path::new("/usr/bin/pasta"),
            root.path(),
            "real",
            &["-q", "--"],
            &["/nonexistent/cmd"],
            "",
        );
        assert_eq!(real.status, Some(1), "{real:?}");
        let twin = Twin::new();
        let out = Command::new("timeout")
            .args(["60", "nsenter", "-t", &twin.private.pid().to_string(), "-n"])
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .arg(&link)
            .args(["-q", "--", "/nonexistent/cmd"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(127), "{stderr}");
        assert!(stderr.contains("cannot run '/nonexistent/cmd'"), "{stderr}");
        let left = sh("pgrep -c -f '[/]nonexistent/cmd' || true");
        assert_eq!(left.trim(), "0", "processes left: {left}");
    });
}

/// What the host side of an `auto` twin saw: the page through the forward
/// while the namespace's server listened, and whether the forward went
/// away with it.
#[derive(Debug, PartialEq, Eq)]
struct AutoSeen {
    while_listening: String,
    after_close: bool,
}

/// `PROGRAM --config-net -t auto -- sh -c SCRIPT` (run as nobody in a fresh
/// twin's private namespace): a server the command starts inside on port
/// 8080 after a while is reached from the host's 127.0.0.1:8080; once it
/// stops, the host's port closes.
fn pasta_auto_twin(program: &Path, root: &Path, label: &str, tcp: &[&str]) -> AutoSeen {
    let twin = Twin::new();
    let dir = root.join(label);
    let www = site(&dir, "www", "auto-page");
    std::fs::write(www.join("index.html"), "auto-page\n").unwrap();
    let stop = dir.join("stop");
    sh(&format!("chmod -R 0777 {}", dir.display()));
    let script = format!(
        "sleep 1; busybox httpd -f -p 0.0.0.0:8080 -h {www} & pid=$!; \
         while [ ! -e {stop} ]; do sleep 0.2; done; kill $pid; sleep 60",
        www = www.display(),
        stop = stop.display()
    );
    let child = twin
        .private
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .args(["--config-net", "-q"])
        .args(tcp)
        .args(["-u", "none", "-T", "none", "-U", "none", "--", "sh", "-c"])
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _pasta = KillOnDrop(child);
    let get = || {
        twin.private
            .spawn(|| common::http_get(("127.0.0.1", 8080)).unwrap_or_default())
            .join()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut while_listening = String::new();
    while std::time::Instant::now() < deadline {
        while_listening = get().lines().last().unwrap_or_default().to_string();
        if !while_listening.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::fs::write(&stop, "").unwrap();
    let closed = || {
        twin.private
            .spawn(|| std::net::TcpStream::connect(("127.0.0.1", 8080)).is_err())
            .join()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut after_close = closed();
    while !after_close && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        after_close = closed();
    }
    AutoSeen {
        while_listening,
        after_close,
    }
}

/// `-t auto` (pasta's default for `-t`) in slipway as pasta: the port a
/// command's server (busybox httpd) opens in its namespace is forwarded
/// from the host within a few seconds, and closed on the host after the
/// server stops; no `-t` at all does the same. (Debian's pasta
/// 0.0~git20230309 forwards nothing with `-t auto` here, for a command or
/// a PID alike, so it is no twin for this: README.)
#[test]
fn pasta_auto_forwards_follow_the_namespace() {
    inside("pasta_auto_forwards_follow_the_namespace", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "127.0.0.1");
        let want = AutoSeen {
            while_listening: "auto-page".into(),
            after_close: true,
        };
        for (label, tcp) in [("slipway", &["-t", "auto"][..]), ("slipway-default", &[])] {
            let ours = pasta_auto_twin(&link, root.path(), label, tcp);
            assert_eq!(ours, want, "{label}");
        }
    });
}

/// A domain with `<interface type='user'><backend type='passt'/>`.
const PASST_DOMAIN: &str = "<domain type='test'>
  <name>passt</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
  <devices>
    <interface type='user'>
      <mac address='52:54:00:12:34:56'/>
      <backend type='BACKEND'/>
    </interface>
  </devices>
</domain>
";

/// Debian 12's libvirt 9.0 cannot run passt at all: its patch
/// `debian/patches/debian/Disable-passt-support.patch` makes the domain
/// XML parser (`virDomainNetBackendParseXML`, src/conf/domain_conf.c) refuse
/// `<backend type='passt'/>` with the message of an unknown value, so no
/// driver (the session or system QEMU driver, virt-qemu-run, the test
/// driver) ever gets such a domain. The test driver runs that same parser;
/// an unknown value gets the same words. (If Debian enables passt, this
/// fails, and libvirt itself can then be the test of the drop-in.)
#[test]
fn debian_libvirt_refuses_the_passt_backend() {
    let dir = slipway_testkit::temp_dir().unwrap();
    for backend in ["passt", "nonesuch"] {
        let xml = dir.path().join(format!("{backend}.xml"));
        std::fs::write(&xml, PASST_DOMAIN.replace("BACKEND", backend)).unwrap();
        let out = Command::new("virsh")
            .args(["-c", "test:///default", "define"])
            .arg(&xml)
            .env("LC_ALL", "C")
            .output()
            .expect("virsh (libvirt-clients)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{backend}: defined");
        assert!(
            stderr.contains(&format!(
                "XML error: Invalid value for attribute 'type' in element 'backend': '{backend}'."
            )),
            "{backend}: {stderr}"
        );
    }
}

/// The passt command line libvirt 9.0 builds (`qemuPasstStart`,
/// src/qemu/qemu_passt.c), argument by argument, for this interface:
///
/// ```xml
/// <interface type='user'>
///   <mac address='52:54:00:12:34:56'/>
///   <source dev='eth0'/>
///   <mtu size='1500'/>
///   <ip family='ipv4' address='10.99.0.50' prefix='24'/>
///   <backend type='passt' logFile='DIR/passt.log'/>
///   <portForward proto='tcp'>
///     <range start='2222' to='80'/>
///   </portForward>
///   <portForward proto='tcp' address='127.0.0.1'>
///     <range start='8000' end='8002' to='8080'/>
///     <range start='8001' exclude='yes'/>
///   </portForward>
///   <portForward proto='udp'>
///     <range start='5353'/>
///   </portForward>
/// </interface>
/// ```
///
/// The socket is libvirt's `passtStateDir/SHORTNAME-ALIAS.socket`. No
/// `--pid` (libvirt 9.0 writes the PID file itself, of the process it
/// executes) and no `-f`: passt forks away from that process.
fn libvirt_9_0_passt_argv(dir: &Path) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    vec![
        "--one-off".into(),
        "--socket".into(),
        path("1-guest-net0.socket"),
        "--mac-addr".into(),
        "52:54:00:12:34:56".into(),
        // net->mtu
        "--mtu".into(),
        "1500".into(),
        // <source dev>
        "--interface".into(),
        "eth0".into(),
        // <backend logFile>
        "--log-file".into(),
        path("passt.log"),
        // <ip>: the address, and for IPv4 its prefix
        "--address".into(),
        "10.99.0.50".into(),
        "--netmask".into(),
        "24".into(),
        // one argument per <portForward>: [ADDRESS/]RANGE[,RANGE...], a
        // range START[-END][:TO[-TO+END-START]], '~' when excluded
        "--tcp-ports".into(),
        "2222:80".into(),
        "--tcp-ports".into(),
        "127.0.0.1/8000-8002:8080-8082,~8001".into(),
        "--udp-ports".into(),
        "5353".into(),
    ]
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        })
        .collect()
}

/// Debian's libvirt cannot start passt (above), so the drop-in is tested
/// with exactly what libvirt 9.0 would do: slipway linked as `passt`, run
/// as an unprivileged user (session libvirt's) in a private namespace with
/// [`libvirt_9_0_passt_argv`], daemonized as `virCommandDaemonize` does it
/// (a new session, `/` as working directory, standard input and output on
/// /dev/null, standard error a pipe that libvirt closes unread), then the
/// test guest under QEMU with libvirt's netdev (`qemuPasstAddNetProps`:
/// `stream`, `server=off`, the unix socket). The guest gets the address
/// of `<ip>`, reaches a server on the host's loopback through the gateway,
/// and the forwards reach it (the bound one only on 127.0.0.1, the
/// excluded port not at all); when QEMU ends, `--one-off` ends slipway.
#[test]
fn libvirt_9_0_passt_command_line_runs_slipway() {
    inside("libvirt_9_0_passt_command_line_runs_slipway", || {
        use std::os::unix::process::CommandExt;
        let root = slipway_testkit::temp_dir().unwrap();
        sh(&format!("chmod 0755 {}", root.path().display()));
        let link = root.path().join("bin/passt");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
        // The session's passt state directory, the unprivileged user's.
        let state = root.path().join("passt");
        std::fs::create_dir_all(&state).unwrap();
        sh(&format!("chown 65534:65534 {}", state.display()));

        let twin = Twin::new();
        let lo = Twin::http(
            &twin.private,
            &site(root.path(), "lo", "on-host-loopback"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        let argv = libvirt_9_0_passt_argv(&state);
        let socket = state.join("1-guest-net0.socket");
        let mut passt = Command::new("nsenter");
        passt
            .args(["-t", &twin.private.pid().to_string(), "-n", "--"])
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .arg(&link)
            .args(&argv)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // SAFETY: setsid in the child before exec touches no memory.
        unsafe {
            passt.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut parent = passt.spawn().unwrap();
        // libvirt keeps the error pipe only until its own intermediate
        // child returns, and never reads it. (That child returns once the
        // PID file is written, before passt is even executed: libvirt 9.0
        // then starts QEMU, whose stream netdev does not retry, and relies
        // on passt listening first. The test waits for slipway's parent,
        // which returns once the socket listens, so the boot cannot race.)
        let stderr = parent.stderr.take().unwrap();
        let status = parent.wait().unwrap();
        drop(stderr);
        let log = || std::fs::read_to_string(state.join("passt.log")).unwrap_or_default();
        assert!(status.success(), "{status}\n{}", log());
        assert!(socket.exists(), "no socket\n{}", log());
        let needle = socket.display().to_string();
        assert!(
            !processes_with(&needle).is_empty(),
            "the daemon runs once its parent returned\n{}",
            log()
        );

        let script = format!(
            "dhcp eth0 || exit 1\n\
             get() {{ rm -f /tmp/m; wget -q -O /tmp/m \"http://$1/marker.txt\" && cat /tmp/m; }}\n\
             result loopback \"$(get 10.99.0.1:{lo})\"\n\
             for p in 80 8080 8081 8082; do mkdir -p /www$p && echo page-$p > /www$p/index.html && httpd -p $p -h /www$p; done\n\
             ready forward\n\
             sleep 300\n",
            lo = lo.port(),
        );
        let guest = twin.boot_guest(&socket, &script, "forward", "session", log);
        let out = guest.output_so_far();
        let result = |k: &str| out.result(k).map(str::to_owned);
        assert_eq!(
            result("ip").as_deref(),
            Some("10.99.0.50"),
            "{}",
            out.console
        );
        assert_eq!(result("mask").as_deref(), Some("24"));
        assert_eq!(result("router").as_deref(), Some("10.99.0.1"));
        assert_eq!(result("mtu").as_deref(), Some("1500"));
        assert_eq!(
            result("loopback").as_deref(),
            Some("on-host-loopback"),
            "{}\n{}",
            out.console,
            log()
        );
        // The forwards, from the private namespace (the host).
        let get = |ip: &'static str, port: u16| {
            twin.private
                .spawn(move || {
                    common::http_get((ip, port))
                        .map(|b| b.lines().last().unwrap_or_default().to_string())
                })
                .join()
                .unwrap()
        };
        assert_eq!(get("127.0.0.1", 2222).unwrap(), "page-80");
        assert_eq!(
            get("10.99.0.2", 2222).unwrap(),
            "page-80",
            "unbound: every address"
        );
        assert_eq!(get("127.0.0.1", 8000).unwrap(), "page-8080");
        assert_eq!(get("127.0.0.1", 8002).unwrap(), "page-8082");
        assert!(get("127.0.0.1", 8001).is_err(), "8001 is excluded");
        assert!(get("10.99.0.2", 8000).is_err(), "bound to 127.0.0.1 only");
        drop(guest);
        // --one-off: the daemon ends with its client.
        wait_for("slipway as passt to end after its one client", || {
            processes_with(&needle).is_empty()
        });
        assert!(!log().is_empty(), "nothing in the <backend logFile>");
    });
}

/// [`Twin`] with IPv6 too: the private namespace has 2001:db8:99::2/64 on
/// eth0 and a default route via the upstream router's link-local
/// fe80::1; the upstream has 2001:db8:99::1 and 2001:db8:99::3 on the
/// veth and 2001:db8:100::7 on its loopback. Addresses without duplicate
/// address detection, so they are usable at once.
fn twin6() -> Twin {
    let twin = Twin::new();
    twin.upstream.run(
        "ip addr add fe80::1/64 dev up0 nodad && ip addr add 2001:db8:99::1/64 dev up0 nodad && \
         ip addr add 2001:db8:99::3/64 dev up0 nodad && ip addr add 2001:db8:100::7/128 dev lo",
    );
    twin.private.run(
        "ip addr add 2001:db8:99::2/64 dev eth0 nodad && \
         ip -6 route add default via fe80::1 dev eth0",
    );
    twin
}

/// What a pasta twin's container got over IPv6, and what it reached.
#[derive(Debug, PartialEq, Eq)]
struct Pasta6Seen {
    /// `ip -6 addr` of the global addresses on eth0.
    address: String,
    /// `ip -6 route`.
    routes: String,
    /// A server on the host's ::1, through the gateway's link-local address.
    loopback: String,
    /// A server beyond the upstream router.
    upstream: String,
    /// A host in the copied prefix.
    peer: String,
    /// An AAAA query to the gateway, answered by the host's ::1 resolver.
    dns: String,
    /// The same over TCP.
    dns_tcp: String,
    /// The IPv4 side, unchanged.
    address4: String,
}

/// Runs `program` as pasta with `options` and `--config-net` for a
/// container in a fresh [`twin6`] and returns what the container saw.
fn pasta6_twin(program: &Path, root: &Path, label: &str, options: &[&str]) -> Pasta6Seen {
    let twin = twin6();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let lo = Twin::http(
        &twin.private,
        &site(&dir, "lo", "on-private-loopback6"),
        "::1".parse().unwrap(),
    );
    let up = Twin::http(
        &twin.upstream,
        &site(&dir, "up", UPSTREAM_PAGE),
        "2001:db8:100::7".parse().unwrap(),
    );
    let peer = Twin::http(
        &twin.upstream,
        &site(&dir, "peer", "on-prefix-peer6"),
        "2001:db8:99::3".parse().unwrap(),
    );
    let _dns = dns_on_loopback(&twin.private, "::1", "2001:db8::10");
    let ctr = Container::new();
    let out = twin
        .in_private(program)
        .args([
            "--config-net",
            "-t",
            "none",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
        ])
        .args(options)
        .arg("--quiet")
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = ctr.run("ip -6 -o addr show dev eth0 scope global | sed \"s/^[0-9]*: //\"");
    // Router advertisements, if any, have had a moment to arrive.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let routes = ctr.run("ip -6 route show");
    let address4 = ctr.run("ip -4 -o addr show dev eth0 | awk \"{print \\$4}\"");
    let get = |url: String| {
        Command::new("nsenter")
            .args([
                "-t",
                &ctr.pid().to_string(),
                "-n",
                "curl",
                "-sg",
                "-m",
                "10",
            ])
            .arg(&url)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let loopback = get(format!("http://[fe80::1%eth0]:{}/marker.txt", lo.port()));
    let upstream = get(format!("http://[2001:db8:100::7]:{}/marker.txt", up.port()));
    let peer = get(format!(
        "http://[2001:db8:99::3]:{}/marker.txt",
        peer.port()
    ));
    let dns = ctr.run("dig +short +time=3 +tries=1 @fe80::1%eth0 AAAA www.example.test || true");
    let dns_tcp =
        ctr.run("dig +tcp +short +time=3 +tries=1 @fe80::1%eth0 AAAA www.example.test || true");
    Pasta6Seen {
        address,
        routes,
        loopback,
        upstream,
        peer,
        dns,
        dns_tcp,
        address4,
    }
}

/// pasta's default IPv6 with `--config-net`, against Debian's pasta: the
/// container gets the host's IPv6 address (nodad) and prefix and a
/// default route via the upstream router's link-local address, reaches
/// the host's ::1 through that address (HTTP and DNS), a server beyond
/// the router, and a host of the copied prefix.
#[test]
fn pasta_ipv6_matches_debian_pasta() {
    inside("pasta_ipv6_matches_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        let real = pasta6_twin(Path::new("/usr/bin/pasta"), root.path(), "real", &[]);
        let ours = pasta6_twin(&link, root.path(), "slipway", &[]);
        eprintln!("real: {real:?}\nours: {ours:?}");
        // Debian's pasta (0.0~git20230309) answers DNS over TCP on the
        // gateway's link-local address but drops it over UDP; slipway
        // answers both (README: slipway as pasta).
        assert_eq!(real.dns_tcp.trim(), "2001:db8::10", "{real:?}");
        assert_eq!(ours.dns, real.dns_tcp, "{ours:?}");
        let ours = Pasta6Seen {
            dns: real.dns.clone(),
            ..ours
        };
        assert!(
            real.address
                .contains("inet6 2001:db8:99::2/64 scope global nodad"),
            "{real:?}"
        );
        assert!(
            real.routes.contains("default via fe80::1 dev eth0"),
            "{real:?}"
        );
        assert_eq!(real.loopback, "on-private-loopback6", "{real:?}");
        assert_eq!(real.upstream, UPSTREAM_PAGE, "{real:?}");
        assert_eq!(real.peer, "on-prefix-peer6", "{real:?}");
        assert_eq!(real.address4.trim(), "10.99.0.2/24", "{real:?}");
        assert_eq!(ours, real);
    });
}

/// `-6` and `-4` against Debian's pasta: only one family configured and
/// served (with `-6`, no IPv4 address in the container; with `-4`, no
/// global IPv6 address and no IPv6 default route), the other as before.
#[test]
fn pasta_one_family_matches_debian_pasta() {
    inside("pasta_one_family_matches_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        for option in ["-6", "-4"] {
            let label = |who: &str| format!("{who}{option}");
            let real = pasta6_twin(
                Path::new("/usr/bin/pasta"),
                root.path(),
                &label("real"),
                &[option],
            );
            let ours = pasta6_twin(&link, root.path(), &label("slipway"), &[option]);
            eprintln!("{option} real: {real:?}\n{option} ours: {ours:?}");
            if option == "-6" {
                assert_eq!(real.address4, "", "{real:?}");
                assert_eq!(real.upstream, UPSTREAM_PAGE, "{real:?}");
                assert_eq!(ours.dns, real.dns_tcp, "{ours:?}");
            } else {
                assert_eq!(real.address4.trim(), "10.99.0.2/24", "{real:?}");
                assert_eq!(real.address, "", "{real:?}");
                assert!(!real.routes.contains("default"), "{real:?}");
                assert_eq!(ours.dns, real.dns, "{ours:?}");
            }
            let ours = Pasta6Seen {
                dns: real.dns.clone(),
                ..ours
            };
            assert_eq!(ours, real, "{option}");
        }
    });
}

/// What ISC dhclient got by DHCPv6 in a pasta namespace without
/// `--config-net`: `REASON ADDRESS/PREFIX` lines from its script.
fn pasta_dhcpv6_twin(program: &Path, root: &Path, label: &str) -> String {
    let twin = twin6();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let ctr = Container::new();
    let out = twin
        .in_private(program)
        .args([
            "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--quiet",
        ])
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = dir.join("dhclient-script");
    let seen = dir.join("seen");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$reason $new_ip6_address/$new_ip6_prefixlen\" >> {}\n",
            seen.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 0755 {}", script.display()));
    // The link-local address must be past duplicate address detection
    // before dhclient can send from it.
    ctr.run(&format!(
        "ip link set eth0 up && sleep 3 && timeout 30 dhclient -6 -1 -v -sf {} -pf {} -lf {} eth0 >{} 2>&1 || true",
        script.display(),
        dir.join("pid").display(),
        dir.join("leases").display(),
        dir.join("dhclient.log").display(),
    ));
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("kill $(cat {}) 2>/dev/null", dir.join("pid").display()),
        ])
        .status();
    std::fs::read_to_string(&seen)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("PREINIT6"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// DHCPv6 against Debian's pasta, with ISC dhclient as the client: both
/// lease the host's own IPv6 address (passt's DHCPv6 hands out the copied
/// address, which SLAAC cannot give).
#[test]
fn pasta_dhcpv6_leases_the_hosts_address_like_debian_pasta() {
    inside(
        "pasta_dhcpv6_leases_the_hosts_address_like_debian_pasta",
        || {
            let root = slipway_testkit::temp_dir().unwrap();
            let link = pasta_setup(root.path(), "::1");
            let real = pasta_dhcpv6_twin(Path::new("/usr/bin/pasta"), root.path(), "real");
            let ours = pasta_dhcpv6_twin(&link, root.path(), "slipway");
            eprintln!("real: {real:?}\nours: {ours:?}");
            assert!(real.contains("BOUND6 2001:db8:99::2/"), "{real:?}");
            assert_eq!(ours, real);
        },
    );
}

/// Starts `program` as passt with libvirt's command line in a fresh
/// [`twin6`], boots the test guest on it and returns what the guest's
/// IPv6 side got and reached (the guest configures itself by SLAAC: its
/// busybox has no DHCPv6 client).
fn passt6_twin(program: &Path, root: &Path, label: &str) -> Vec<(String, Option<String>)> {
    let twin = twin6();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!("chmod 0777 {}", dir.display()));
    let up = Twin::http(
        &twin.upstream,
        &site(&dir, "up", UPSTREAM_PAGE),
        "2001:db8:100::7".parse().unwrap(),
    );
    let peer = Twin::http(
        &twin.upstream,
        &site(&dir, "peer", "on-prefix-peer6"),
        "2001:db8:99::3".parse().unwrap(),
    );
    let lo = Twin::http(
        &twin.private,
        &site(&dir, "lo", "on-private-loopback6"),
        "::1".parse().unwrap(),
    );
    let out = twin
        .in_private(program)
        .args(libvirt_args(&dir))
        .output()
        .unwrap();
    let log = || std::fs::read_to_string(dir.join("passt.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{label}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let script = format!(
        "ip link set eth0 up\n\
         for i in $(seq 1 30); do ip -6 addr show dev eth0 scope global | grep -q inet6 && ip -6 route | grep -q ^default && break; sleep 1; done\n\
         sleep 2\n\
         result addr6 \"$(ip -6 addr show dev eth0 scope global | grep -o \"inet6 [^ ]*\" | sort | tr \"\\n\" \" \")\"\n\
         result route6 \"$(ip -6 route | grep ^default | cut -d\" \" -f1-5)\"\n\
         get() {{ printf \"GET /marker.txt HTTP/1.0\\r\\n\\r\\n\" | timeout 10 nc $1 $2 | tail -n 1; }}\n\
         result upstream6 \"$(get 2001:db8:100::7 {up})\"\n\
         result peer6 \"$(get 2001:db8:99::3 {peer})\"\n\
         result loopback6 \"$(get fe80::1%eth0 {lo})\"\n\
         ready done\n\
         sleep 60\n",
        up = up.port(),
        peer = peer.port(),
        lo = lo.port(),
    );
    let guest = twin.boot_guest(&dir.join("passt.sock"), &script, "done", label, log);
    let out = guest.output_so_far();
    eprintln!("--- {label} console ---\n{}", out.console);
    ["addr6", "route6", "upstream6", "peer6", "loopback6"]
        .iter()
        .map(|k| (k.to_string(), out.result(k).map(str::to_owned)))
        .collect()
}

/// `text` once when it is one string repeated (`abab` -> `ab`), else as is.
fn once_if_repeated(text: &str) -> String {
    (1..text.len())
        .filter(|&n| text.len().is_multiple_of(n) && text.is_char_boundary(n))
        .map(|n| &text[..n])
        .find(|unit| unit.repeat(text.len() / unit.len()) == text)
        .unwrap_or(text)
        .to_owned()
}

/// libvirt's passt command line on a host with IPv6, against Debian's
/// passt: the test guest gets the same SLAAC address in the host's prefix
/// and default route (via the router's link-local address), and reaches
/// a server beyond the router, a host of the copied prefix, and the
/// host's `::1` through the gateway's link-local address.
#[test]
fn passt_ipv6_matches_debian_passt() {
    inside("passt_ipv6_matches_debian_passt", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        let passt = link.with_file_name("passt");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &passt).unwrap();
        // Debian's passt 0.0~git20230309, on a loaded machine, now and
        // then delivers a page twice in one connection and then stalls
        // (seen in CI: "on-prefix-peer6on-prefix-peer6"): a page repeated
        // counts as the page on its side.
        let real: Vec<_> = passt6_twin(Path::new("/usr/bin/passt"), root.path(), "real")
            .into_iter()
            .map(|(key, value)| (key, value.map(|v| once_if_repeated(&v))))
            .collect();
        let ours = passt6_twin(&passt, root.path(), "slipway");
        eprintln!("real: {real:?}\nours: {ours:?}");
        let get = |k: &str| {
            real.iter()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.clone())
        };
        // SLAAC in the host's prefix, with the guest's own identifier.
        assert!(
            get("addr6").is_some_and(|a| a.contains("inet6 2001:db8:99:0:5054:ff:fe12:3456/64")),
            "{real:?}"
        );
        assert_eq!(
            get("route6").as_deref(),
            Some("default via fe80::1 dev eth0"),
            "{real:?}"
        );
        assert_eq!(get("upstream6").as_deref(), Some(UPSTREAM_PAGE), "{real:?}");
        assert_eq!(get("peer6").as_deref(), Some("on-prefix-peer6"), "{real:?}");
        assert_eq!(
            get("loopback6").as_deref(),
            Some("on-private-loopback6"),
            "{real:?}"
        );
        assert_eq!(ours, real);
    });
}

/// `-a` and `-g` with IPv6 addresses (and IPv4 ones beside them) against
/// Debian's pasta: the container gets the given address (nodad) and a
/// default route via the given gateway, which maps to the host's ::1.
#[test]
fn pasta_ipv6_address_and_gateway_options_match_debian_pasta() {
    inside(
        "pasta_ipv6_address_and_gateway_options_match_debian_pasta",
        || {
            let root = slipway_testkit::temp_dir().unwrap();
            let link = pasta_setup(root.path(), "::1");
            let options = [
                "-a",
                "2001:db8:99::20",
                "-g",
                "fe80::1",
                "-a",
                "10.99.0.20",
                "-g",
                "10.99.0.1",
                // Without it Debian's pasta gives 10.99.0.20 its class's
                // /8 (README: slipway as passt).
                "-n",
                "24",
            ];
            let real = pasta6_twin(Path::new("/usr/bin/pasta"), root.path(), "real", &options);
            let ours = pasta6_twin(&link, root.path(), "slipway", &options);
            eprintln!("real: {real:?}\nours: {ours:?}");
            assert!(
                real.address
                    .contains("inet6 2001:db8:99::20/64 scope global nodad"),
                "{real:?}"
            );
            assert!(
                real.routes.contains("default via fe80::1 dev eth0"),
                "{real:?}"
            );
            assert_eq!(real.address4.trim(), "10.99.0.20/24", "{real:?}");
            assert_eq!(real.loopback, "on-private-loopback6", "{real:?}");
            assert_eq!(ours.dns, real.dns_tcp, "{ours:?}");
            let ours = Pasta6Seen {
                dns: real.dns.clone(),
                ..ours
            };
            assert_eq!(ours, real);
        },
    );
}

// ---- IPv6 port forwards (issue 16) ----

/// A server in the container's namespace on IPv6 only (`IPV6_V6ONLY`),
/// so that an answer proves the forward reached it over IPv6: TCP on
/// each of `tcp` ports and UDP on `udp`, each answering what the client
/// sent first with the peer address it saw. Prints `ready` once bound.
/// (The client speaks first: Debian's pasta 0.0~git20230309 never
/// delivers the data of a server that speaks first to an IPv6 client
/// through the tap, e.g. to a python client that only reads.)
const PEER_SERVER: &str = r#"
import socket, sys, threading
def sock(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    return s
def tcp(s):
    s.listen(16)
    while True:
        c, peer = s.accept()
        c.settimeout(10)
        c.recv(100)
        c.sendall(("tcp6 from %s\n" % peer[0]).encode())
        c.close()
def udp(s):
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(("udp6 from %s\n" % peer[0]).encode(), peer)
socks = [(tcp, sock(socket.SOCK_STREAM, int(p))) for p in sys.argv[1].split(",")]
socks.append((udp, sock(socket.SOCK_DGRAM, int(sys.argv[2]))))
for f, s in socks:
    threading.Thread(target=f, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// What a TCP client at `ns` got from `addr` for a line it sent: the
/// server's line, `closed` if the connection ended without one (reset or
/// closed: no server took it), or what else went wrong.
fn tcp_reply(ns: &Netns, addr: &str) -> String {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.spawn(move || {
        use std::io::{ErrorKind, Read, Write};
        let mut conn =
            match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)) {
                Ok(c) => c,
                // Reset before connect() saw it through: closed all the same.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return "closed".to_string(),
                Err(e) => return format!("connect: {:?}", e.kind()),
            };
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        match conn
            .write_all(b"hello\n")
            .and_then(|()| conn.read_to_string(&mut line))
        {
            Ok(0) => "closed".to_string(),
            Ok(_) => line.trim().to_string(),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => "closed".to_string(),
            Err(e) => format!("read: {:?}", e.kind()),
        }
    })
    .join()
    .unwrap()
}

/// What a UDP client at `ns` got back for a datagram to `addr`.
fn udp_reply(ns: &Netns, addr: &str) -> String {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.spawn(move || {
        let sock = std::net::UdpSocket::bind("[::]:0").unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let mut buf = [0u8; 200];
        // A datagram or two may go before the way in is known.
        for _ in 0..3 {
            sock.send_to(b"hello", addr).unwrap();
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                return format!(
                    "{} (answered from {from})",
                    String::from_utf8_lossy(&buf[..n]).trim()
                );
            }
        }
        "no reply".to_string()
    })
    .join()
    .unwrap()
}

/// What reached the container's IPv6-only servers through pasta's
/// forwards, per client.
#[derive(Debug, PartialEq, Eq)]
struct Fwd6Seen {
    /// TCP from the host's `::1` through `-t 8080`.
    tcp_loopback: String,
    /// TCP from the host's IPv6 address (2001:db8:99::2) through `-t 8080`.
    tcp_host_addr: String,
    /// TCP from a host of the copied prefix (the upstream) through `-t 8080`.
    tcp_prefix_host: String,
    /// UDP from the host's `::1` through `-u 5300`.
    udp_loopback: String,
    /// UDP from the host's IPv6 address through `-u 5300`.
    udp_host_addr: String,
    /// TCP from the host's 127.0.0.1 to port 8080 (the IPv4 listener;
    /// the server inside takes IPv6 only).
    tcp_ipv4: String,
    /// `-t ::%eth0/8081`: from the upstream, which arrives through eth0.
    device_from_upstream: String,
    /// `-t ::%eth0/8081`: from the host's `::1`, which does not.
    device_from_loopback: String,
    /// `-t ::1/8082:8080`: from the host's `::1`.
    bound_loopback: String,
    /// `-t ::1/8082:8080`: from the host's IPv6 address, not bound.
    bound_host_addr: String,
}

/// Runs `program` as pasta with `--config-net`, `options` and forwards
/// (`-t 8080 -t ::%eth0/8081 -t ::1/8082:8080 -u 5300`) for a container
/// in a fresh [`twin6`] whose servers listen on IPv6 only, and returns
/// what each client got.
fn pasta_fwd6_twin(program: &Path, root: &Path, label: &str, options: &[&str]) -> Fwd6Seen {
    let twin = twin6();
    std::fs::create_dir_all(root.join(label)).unwrap();
    let ctr = Container::new();
    let out = twin
        .in_private(program)
        .args(["--config-net", "-T", "none", "-U", "none"])
        .args(["-t", "8080", "-t", "::%eth0/8081", "-t", "::1/8082:8080"])
        .args(["-u", "5300"])
        .args(options)
        .arg("--quiet")
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_server, ready) = spawn_first_line(
        Command::new("nsenter")
            .args(["-t", &ctr.pid().to_string(), "-n", "/usr/bin/python3", "-c"])
            .args([PEER_SERVER, "8080,8081", "5300"]),
    );
    assert_eq!(ready, "ready", "{label}");
    // Router advertisements and neighbour discovery have had a moment.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (host, up) = (&twin.private, &twin.upstream);
    let seen = Fwd6Seen {
        tcp_loopback: tcp_reply(host, "[::1]:8080"),
        tcp_host_addr: tcp_reply(host, "[2001:db8:99::2]:8080"),
        tcp_prefix_host: tcp_reply(up, "[2001:db8:99::2]:8080"),
        udp_loopback: udp_reply(host, "[::1]:5300"),
        udp_host_addr: udp_reply(host, "[2001:db8:99::2]:5300"),
        tcp_ipv4: tcp_reply(host, "127.0.0.1:8080"),
        device_from_upstream: tcp_reply(up, "[2001:db8:99::2]:8081"),
        device_from_loopback: tcp_reply(host, "[::1]:8081"),
        bound_loopback: tcp_reply(host, "[::1]:8082"),
        bound_host_addr: tcp_reply(host, "[2001:db8:99::2]:8082"),
    };
    eprintln!("{label}: {seen:#?}");
    seen
}

/// `-t`/`-u` over IPv6 against Debian's pasta (0.0~git20230309), by
/// default and with `-6`: the container's IPv6-only servers are reached
/// from the host's `::1`, the host's IPv6 address (both shown to it as
/// the gateway's link-local address) and a host of the copied prefix
/// (as itself) through `-t`, and through `-u` over UDP, answers coming
/// back from the forwarded port; `::%eth0/` takes only clients that
/// arrive through eth0; `::1/8082:8080` listens on `::1` only. Without
/// `-6` an IPv4 client still reaches the container over IPv4 (not its
/// IPv6-only server); with `-6` it does not either. TCP clients of the
/// host's loopback are spliced into the namespace's loopback by both (the
/// server sees `::1`). One difference is pasta's own: it splices UDP from
/// the host's loopback too, where slipway brings it through the tap from
/// the gateway's address, as passt does (README: slipway as pasta).
#[test]
fn pasta_ipv6_forwards_match_debian_pasta() {
    inside("pasta_ipv6_forwards_match_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        for options in [&[][..], &["-6"]] {
            let label = |who: &str| format!("{who}{}", options.join(""));
            let real = pasta_fwd6_twin(
                Path::new("/usr/bin/pasta"),
                root.path(),
                &label("real"),
                options,
            );
            let ours = pasta_fwd6_twin(&link, root.path(), &label("slipway"), options);
            assert_eq!(real.tcp_host_addr, "tcp6 from fe80::1", "{real:?}");
            assert_eq!(real.tcp_prefix_host, "tcp6 from 2001:db8:99::3", "{real:?}");
            assert_eq!(
                real.udp_host_addr, "udp6 from fe80::1 (answered from [2001:db8:99::2]:5300)",
                "{real:?}"
            );
            assert_eq!(real.device_from_upstream, real.tcp_prefix_host, "{real:?}");
            assert!(real.device_from_loopback.contains("Refused"), "{real:?}");
            assert!(real.bound_host_addr.contains("Refused"), "{real:?}");
            let spliced = |s: &str| s.replace("from ::1", "from fe80::1");
            assert_eq!(real.tcp_loopback, "tcp6 from ::1", "{real:?}");
            let real = Fwd6Seen {
                udp_loopback: spliced(&real.udp_loopback),
                ..real
            };
            assert_eq!(ours, real, "{options:?}");
        }
    });
}

/// What the host side of an IPv6 `auto` run reached: TCP from `::1` and
/// `127.0.0.1`, UDP from `::1`, to the command's IPv6-only servers.
#[derive(Debug, PartialEq, Eq)]
struct Auto6Seen {
    tcp6: String,
    udp6: String,
    tcp4: String,
}

/// `PROGRAM --config-net OPTIONS -t auto -u auto -- python3 PEER_SERVER`
/// run as nobody in a fresh [`twin6`]'s private namespace: what the
/// host's clients reach once the forwards follow the servers.
fn pasta_auto6_twin(program: &Path, options: &[&str]) -> Auto6Seen {
    let twin = twin6();
    let mut child = twin
        .private
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .args(["--config-net", "-q"])
        .args(options)
        .args(["-t", "auto", "-u", "auto", "-T", "none", "-U", "none"])
        .args(["--", "/usr/bin/python3", "-c", PEER_SERVER, "8080", "5300"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _pasta = KillOnDrop(child);
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let host = &twin.private;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut tcp6 = tcp_reply(host, "[::1]:8080");
    while !tcp6.starts_with("tcp6") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        tcp6 = tcp_reply(host, "[::1]:8080");
    }
    Auto6Seen {
        tcp6,
        udp6: udp_reply(host, "[::1]:5300"),
        tcp4: tcp_reply(host, "127.0.0.1:8080"),
    }
}

/// pasta's `-t auto`/`-u auto` in slipway as pasta over IPv6: the ports
/// a command's IPv6-only servers open (tcp6, udp6) are forwarded from the
/// host's `::1` to the namespace over IPv6, by default (beside the IPv4
/// forward, which reaches the namespace over IPv4, where nothing takes
/// it) and with `-6` (no IPv4 forward). (Debian's pasta 0.0~git20230309
/// forwards nothing with `auto` here: no twin, README.)
#[test]
fn pasta_auto_forwards_ipv6() {
    inside("pasta_auto_forwards_ipv6", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        for (options, tcp4) in [
            (&[][..], "closed"),
            (&["-6"][..], "connect: ConnectionRefused"),
        ] {
            let seen = pasta_auto6_twin(&link, options);
            let want = Auto6Seen {
                // TCP from the host's loopback is spliced into the
                // namespace's loopback, UDP comes through the tap.
                tcp6: "tcp6 from ::1".into(),
                udp6: "udp6 from fe80::1 (answered from [::1]:5300)".into(),
                tcp4: tcp4.into(),
            };
            assert_eq!(seen, want, "{options:?}");
        }
    });
}

/// What a container reached through the IPv6 gateway's link-local
/// address, with or without `--no-map-gw`.
#[derive(Debug, PartialEq, Eq)]
struct GatewaySeen {
    /// `ip -6 route`'s default route.
    route: String,
    /// A server on the host's `::1`, through `[fe80::1%eth0]`.
    host_loopback: String,
    /// A server on the upstream router (all its addresses, fe80::1 on
    /// its link among them), through `[fe80::1%eth0]`.
    router: String,
}

/// Runs `program` as pasta with `--config-net` and `options` for a
/// container in a fresh [`twin6`] with one server on the host's `::1`
/// and one on the router, and returns what the gateway's address led to.
fn pasta_gateway_twin(program: &Path, root: &Path, label: &str, options: &[&str]) -> GatewaySeen {
    let twin = twin6();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let lo = Twin::http(
        &twin.private,
        &site(&dir, "lo", "on-host-loopback"),
        "::1".parse().unwrap(),
    );
    let router = Twin::http(
        &twin.upstream,
        &site(&dir, "router", "on-router"),
        "::".parse().unwrap(),
    );
    let ctr = Container::new();
    let out = twin
        .in_private(program)
        .args([
            "--config-net",
            "-t",
            "none",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
        ])
        .args(options)
        .arg("--quiet")
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As in pasta6_twin: Debian's pasta needs a moment before the
    // namespace's first connections through the gateway go through.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let get = |port: u16| {
        let out = Command::new("nsenter")
            .args(["-t", &ctr.pid().to_string(), "-n", "curl", "-sg", "-m", "5"])
            .arg(format!("http://[fe80::1%eth0]:{port}/marker.txt"))
            .output()
            .unwrap();
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            "unreachable".to_string()
        }
    };
    let seen = GatewaySeen {
        route: ctr.run("ip -6 route show default | cut -d\" \" -f1-5"),
        host_loopback: get(lo.port()),
        router: get(router.port()),
    };
    eprintln!("{label}: {seen:?}");
    seen
}

/// `--no-map-gw` with the IPv6 link-local gateway, against Debian's
/// pasta: the container's default route is via the router's link-local
/// address either way; by default that address leads to the host's
/// `::1`, with `--no-map-gw` to the router itself, on the host's link
/// (and no longer to the host's loopback).
#[test]
fn pasta_no_map_gw_ipv6_matches_debian_pasta() {
    inside("pasta_no_map_gw_ipv6_matches_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        for (options, want) in [
            (&[][..], ("on-host-loopback", "unreachable")),
            (&["--no-map-gw"][..], ("unreachable", "on-router")),
        ] {
            let label = |who: &str| format!("{who}{}", options.join(""));
            let real = pasta_gateway_twin(
                Path::new("/usr/bin/pasta"),
                root.path(),
                &label("real"),
                options,
            );
            let ours = pasta_gateway_twin(&link, root.path(), &label("slipway"), options);
            assert_eq!(
                real.route.trim(),
                "default via fe80::1 dev eth0",
                "{real:?}"
            );
            assert_eq!(
                (real.host_loopback.as_str(), real.router.as_str()),
                want,
                "{options:?}"
            );
            assert_eq!(ours, real, "{options:?}");
        }
    });
}

/// Starts `program` as passt with libvirt's command line (`--tcp-ports
/// 2222:80`) in a fresh [`twin6`], boots the test guest on it (its IPv4
/// address by DHCP, its IPv6 one by SLAAC, a web server on port 80, a page fetched from beyond
/// the router first, so that passt has seen its address) and returns what
/// the host's clients got through port 2222.
fn passt6_forward_twin(program: &Path, root: &Path, label: &str) -> Vec<(String, String)> {
    let twin = twin6();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!("chmod 0777 {}", dir.display()));
    let up = Twin::http(
        &twin.upstream,
        &site(&dir, "up", UPSTREAM_PAGE),
        "2001:db8:100::7".parse().unwrap(),
    );
    let out = twin
        .in_private(program)
        .args(libvirt_args(&dir))
        .output()
        .unwrap();
    let log = || std::fs::read_to_string(dir.join("passt.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{label}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let script = format!(
        "dhcp eth0 || exit 1\n\
         for i in $(seq 1 30); do ip -6 addr show dev eth0 scope global | grep -q inet6 && ip -6 route | grep -q ^default && break; sleep 1; done\n\
         sleep 2\n\
         mkdir -p /www && echo guest-page6 > /www/index.html\n\
         httpd -p 80 -h /www\n\
         result upstream6 \"$(printf \"GET /marker.txt HTTP/1.0\\r\\n\\r\\n\" | timeout 10 nc 2001:db8:100::7 {up} | tail -n 1)\"\n\
         ready forward6\n\
         sleep 600\n",
        up = up.port(),
    );
    let guest = twin.boot_guest(&dir.join("passt.sock"), &script, "forward6", label, log);
    let get = |ns: &Netns, addr: &'static str| {
        let page = ns
            .spawn(move || common::http_get(addr).unwrap_or_else(|e| e.to_string()))
            .join()
            .unwrap();
        page.lines().last().unwrap_or_default().to_string()
    };
    let seen = vec![
        (
            "upstream6".to_string(),
            guest
                .output_so_far()
                .result("upstream6")
                .unwrap_or_default()
                .to_string(),
        ),
        ("host ::1".into(), get(&twin.private, "[::1]:2222")),
        (
            "host's address".into(),
            get(&twin.private, "[2001:db8:99::2]:2222"),
        ),
        (
            "prefix host".into(),
            get(&twin.upstream, "[2001:db8:99::2]:2222"),
        ),
        (
            "host 127.0.0.1".into(),
            get(&twin.private, "127.0.0.1:2222"),
        ),
    ];
    eprintln!("{label}: {seen:?}");
    seen
}

/// libvirt's passt command line (`--tcp-ports 2222:80`) on a host with
/// IPv6, against Debian's passt, with the test guest (its address by
/// SLAAC, not the host's): the forward reaches its web server over IPv6
/// from the host's `::1`, the host's IPv6 address and a host of the
/// prefix, and over IPv4 as before.
#[test]
fn passt_ipv6_forward_matches_debian_passt() {
    inside("passt_ipv6_forward_matches_debian_passt", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        let passt = link.with_file_name("passt");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &passt).unwrap();
        let mut real = passt6_forward_twin(Path::new("/usr/bin/passt"), root.path(), "real");
        let ours = passt6_forward_twin(&passt, root.path(), "slipway");
        // Debian's passt (0.0~git20230309) now and then hands the guest
        // the upstream page's bytes twice (seen once in CI:
        // "on-upstream6on-upstream6"; the page has no newline, so both
        // copies land on the one line the guest keeps). That is the
        // peer's fault, not a difference to copy: the page it delivered
        // is counted as the page, and slipway's must be exact.
        for (what, page) in &mut real {
            let copies = page.len() / UPSTREAM_PAGE.len();
            if what == "upstream6" && copies > 1 && *page == UPSTREAM_PAGE.repeat(copies) {
                eprintln!("real passt delivered the upstream page {copies} times");
                *page = UPSTREAM_PAGE.to_string();
            }
        }
        for (what, page) in &real {
            let want = if what == "upstream6" {
                UPSTREAM_PAGE
            } else {
                "guest-page6"
            };
            assert_eq!(page, want, "{what}: {real:?}");
        }
        assert_eq!(ours, real);
    });
}

/// Specifications with an interface or an address that Debian's passt
/// refuses (or cannot bind), slipway as passt refuses too, naming why: an
/// interface without an address, a bracketed IPv6 address, an interface
/// that does not exist, an IPv6 address on a host without IPv6.
#[test]
fn interface_and_address_specs_are_refused_by_both() {
    inside("interface_and_address_specs_are_refused_by_both", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = root.path().join("passt");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
        let twin = Twin::new();
        for (spec, ours) in [
            ("%eth0/22", "interface 'eth0' without an address"),
            ("[::1]/22", "invalid address '[::1]'"),
            ("127.0.0.1%nosuchif0/22", "binding to interface nosuchif0"),
            (
                "::1/22",
                "::1 is an IPv6 address, and the guest is served IPv4",
            ),
        ] {
            for program in [Path::new("/usr/bin/passt"), link.as_path()] {
                let out = twin
                    .in_private(program)
                    .args(["-f", "-1", "--socket"])
                    .arg(root.path().join("s.sock"))
                    .args(["-t", spec])
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !out.status.success(),
                    "{} took -t {spec}: {stderr}",
                    program.display()
                );
                if program == link {
                    assert!(stderr.contains(ours), "{spec}: {stderr}");
                }
            }
        }
    });
}

// ---- pasta's -T/-U: the namespace's loopback to the host's (issue 16) ----

/// Servers on the host's loopback (the private namespace's) for `-T`/`-U`:
/// `sums PORT`: per connection, reads to end-of-file (the client's
/// half-close), answers `SHA256 BYTES\n`, then 16 MiB of seeded random
/// bytes, and closes; `echo PORT`: holds any number of connections and
/// echoes each (closing on end-of-file); `udp PORT`: answers each
/// datagram with `echo:DATA from SOURCEPORT`.
const NS_SERVERS: &str = r#"
import hashlib, random, resource, selectors, socket, sys, threading
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
DOWN = random.Random(7).randbytes(16 << 20)
def sums(port):
    l = socket.create_server(("127.0.0.1", port))
    def one(c):
        h, n = hashlib.sha256(), 0
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            h.update(d); n += len(d)
        c.sendall(b"%s %d\n" % (h.hexdigest().encode(), n) + DOWN)
        c.close()
    while True:
        c, _ = l.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()
def echo(port):
    l = socket.create_server(("127.0.0.1", port), backlog=4096)
    l.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(l, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is l:
                try:
                    c, _ = l.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
            else:
                c = key.fileobj
                try:
                    d = c.recv(4096)
                except (BlockingIOError, ConnectionError):
                    d = b""
                if d:
                    c.send(d)
                else:
                    sel.unregister(c); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(b"echo:" + d + b" from %d" % a[1], a)
threads = []
for arg in sys.argv[1:]:
    kind, port = arg.split(":")
    t = threading.Thread(target=globals()[kind], args=(int(port),), daemon=True)
    t.start(); threads.append(t)
print("up", flush=True)
for t in threads:
    t.join()
"#;

/// The container's side: `sums PORT` (16 MiB up with a half-close, the
/// answer down: what the server counted and whether each side's bytes
/// arrived whole), `udp PORT SRC` (one datagram from source port SRC),
/// `refused PORT` (whether a connection is refused), `flood PORT N`
/// (N connections held at once: how many echo, and then whether new ones
/// work once some are closed).
const NS_CLIENT: &str = r#"
import hashlib, os, random, resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "sums":
    up = os.urandom(16 << 20)
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    c.sendall(up)
    c.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        got += d
    line, down = got.split(b"\n", 1)
    sha, n = line.decode().split()
    want = random.Random(7).randbytes(16 << 20)
    print("up", n, sha == hashlib.sha256(up).hexdigest(), "down", len(down), down == want)
elif kind == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", int(sys.argv[3])))
    s.settimeout(10)
    s.sendto(b"ping", ("127.0.0.1", port))
    print(s.recvfrom(100)[0].decode())
elif kind == "refused":
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        print("connected")
    except ConnectionRefusedError:
        print("refused")
elif kind == "flood":
    def works(c):
        try:
            c.settimeout(10)
            c.sendall(b"x")
            return c.recv(1) == b"x"
        except OSError:
            return False
    conns = []
    for _ in range(int(sys.argv[3])):
        try:
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        except OSError:
            pass
    time.sleep(2)
    ok = [c for c in conns if works(c)]
    for c in ok[:10]:
        c.close()
    time.sleep(2)
    fresh = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
    print("working", len(ok), "after-close", sum(works(c) for c in fresh))
"#;

/// What a container reached through `-T`/`-U` on one twin.
#[derive(Debug, PartialEq, Eq)]
struct NsSeen {
    /// The page of the host's loopback server, through its own port.
    page: String,
    /// The same page through a remapped port (`-T M:P`).
    remapped: String,
    /// 16 MiB each way with a half-close: the server's count and checks.
    sums: String,
    /// A UDP datagram through `-U`, answered with its source port.
    udp: String,
    /// A host loopback port that is not forwarded.
    not_forwarded: String,
}

/// Starts `cmd` with its standard output piped and returns it (killed
/// when dropped) with the first line it printed, trimmed: the servers
/// these tests start print one when they listen.
fn spawn_first_line(cmd: &mut Command) -> (KillOnDrop, String) {
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    (child, line.trim().to_string())
}

/// Starts [`NS_SERVERS`] in the private namespace of `twin`, serving
/// `what` (`kind:port` items).
fn ns_servers(twin: &Twin, dir: &Path, what: &[String]) -> KillOnDrop {
    let script = dir.join("servers.py");
    std::fs::write(&script, NS_SERVERS).unwrap();
    let (child, line) = spawn_first_line(
        Command::new("nsenter")
            .args(["-t", &twin.private.pid().to_string(), "-n", "python3"])
            .arg(&script)
            .args(what),
    );
    assert_eq!(line, "up");
    child
}

/// Runs [`NS_CLIENT`] in `ctr`'s network namespace with `args`.
fn ns_client(ctr: &Container, dir: &Path, args: &str) -> String {
    let script = dir.join("client.py");
    std::fs::write(&script, NS_CLIENT).unwrap();
    sh(&format!(
        "nsenter -t {} -n python3 {} {args} 2>&1 || true",
        ctr.pid(),
        script.display()
    ))
    .trim()
    .to_string()
}

/// A free TCP port of the private namespace's loopback.
fn free_port_in(ns: &Netns) -> u16 {
    ns.spawn(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
    .join()
    .unwrap()
}

/// `PROGRAM --config-net -t none -u none -T P,M:P,S -U U PID` in a fresh
/// twin: what the container reaches on its own loopback.
fn pasta_ns_twin(program: &Path, root: &Path, label: &str) -> NsSeen {
    let twin = Twin::new();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!("chmod 0755 {}", dir.display()));
    let (lo, _up) = twin.loopback_and_upstream_sites(&dir);
    let (sums, udp, hidden, remap) = (
        free_port_in(&twin.private),
        free_port_in(&twin.private),
        free_port_in(&twin.private),
        free_port_in(&twin.private),
    );
    let _servers = ns_servers(
        &twin,
        &dir,
        &[
            format!("sums:{sums}"),
            format!("udp:{udp}"),
            format!("echo:{hidden}"),
        ],
    );
    let ctr = Container::new();
    let p = lo.port();
    let out = twin
        .in_private(program)
        .args(["--config-net", "-t", "none", "-u", "none"])
        .args(["-T", &format!("{p},{remap}:{p}"), "-T", &sums.to_string()])
        .args(["-U", &udp.to_string(), "--quiet"])
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |port: u16| {
        ctr.run(&format!(
            "busybox wget -q -O - http://127.0.0.1:{port}/marker.txt || true"
        ))
    };
    NsSeen {
        page: get(p),
        remapped: get(remap),
        sums: ns_client(&ctr, &dir, &format!("sums {sums}")),
        udp: ns_client(&ctr, &dir, &format!("udp {udp} 40123")),
        not_forwarded: ns_client(&ctr, &dir, &format!("refused {hidden}")),
    }
}

/// What the pasta twins share: a tun device node the container's
/// (unprivileged) owner may open and `nameserver` as the resolver (both in
/// this test's mount namespace only), and slipway linked as pasta under
/// `root`; returns the link.
fn pasta_setup(root: &Path, nameserver: &str) -> PathBuf {
    sh("mount -t tmpfs -o mode=755 tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200");
    std::fs::write(
        root.join("resolv.conf"),
        format!("nameserver {nameserver}\n"),
    )
    .unwrap();
    sh(&format!(
        "mount --bind {} /etc/resolv.conf && chmod 0755 {}",
        root.join("resolv.conf").display(),
        root.display()
    ));
    let link = root.join("bin/pasta");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slipway"), &link).unwrap();
    link
}

/// `-T`/`-U` with port specifications against Debian's pasta: from the
/// container's 127.0.0.1, a server on the host's loopback is reached on
/// its port and on a remapped one, 16 MiB go up (ended by a half-close)
/// and 16 MiB come back whole, a UDP datagram is answered (the server
/// sees the container's source port), and a host port that is not
/// forwarded is refused.
#[test]
fn pasta_ns_forwards_match_debian_pasta() {
    inside("pasta_ns_forwards_match_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "127.0.0.1");
        let real = pasta_ns_twin(Path::new("/usr/bin/pasta"), root.path(), "real");
        let ours = pasta_ns_twin(&link, root.path(), "slipway");
        eprintln!("real: {real:?}\nours: {ours:?}");
        assert_eq!(real.page, "on-private-loopback", "{real:?}");
        assert_eq!(real.remapped, "on-private-loopback", "{real:?}");
        assert_eq!(real.udp, "echo:ping from 40123", "{real:?}");
        assert_eq!(real.not_forwarded, "refused", "{real:?}");
        // Debian's pasta 0.0~git20230309 gets the upload whole but cuts
        // the download short once the client has half-closed (README):
        // slipway must get both whole.
        assert!(
            real.sums
                .starts_with(&format!("up {} True down ", 16 << 20)),
            "{real:?}"
        );
        assert_eq!(
            ours.sums,
            format!("up {} True down {} True", 16 << 20, 16 << 20),
            "{ours:?}"
        );
        let ours = NsSeen {
            sums: real.sums.clone(),
            ..ours
        };
        assert_eq!(ours, real);
    });
}

/// pasta's default (`-T auto`, nothing given): a TCP port the host's
/// loopback listens on when pasta starts is bound on the container's
/// 127.0.0.1 and reaches it, against Debian's pasta; and slipway follows
/// the host: a server started later is bound within seconds and a UDP
/// port too (Debian's pasta 0.0~git20230309 binds UDP ports with no
/// option: README).
#[test]
fn pasta_ns_auto_follows_the_host() {
    inside("pasta_ns_auto_follows_the_host", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "127.0.0.1");
        let mut pages = Vec::new();
        for (program, label) in [(Path::new("/usr/bin/pasta"), "real"), (&link, "slipway")] {
            let twin = Twin::new();
            let dir = root.path().join(label);
            std::fs::create_dir_all(&dir).unwrap();
            sh(&format!("chmod 0755 {}", dir.display()));
            let (lo, _up) = twin.loopback_and_upstream_sites(&dir);
            let ctr = Container::new();
            let out = twin
                .in_private(program)
                .args(["--config-net", "--quiet"])
                .arg(ctr.pid().to_string())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let get = |port: u16| {
                ctr.run(&format!(
                    "busybox wget -q -O - http://127.0.0.1:{port}/marker.txt || true"
                ))
            };
            // pasta binds at start, then follows (every second).
            std::thread::sleep(std::time::Duration::from_secs(2));
            pages.push(get(lo.port()));
            if label == "slipway" {
                let (later, udp) = (free_port_in(&twin.private), free_port_in(&twin.private));
                let _servers = ns_servers(
                    &twin,
                    &dir,
                    &[format!("sums:{later}"), format!("udp:{udp}")],
                );
                wait_for("the later server bound in the container", || {
                    ctr.run(&format!("ss -Htln src 127.0.0.1:{later} | wc -l"))
                        .trim()
                        == "1"
                });
                assert_eq!(
                    ns_client(&ctr, &dir, &format!("sums {later}")),
                    format!("up {} True down {} True", 16 << 20, 16 << 20)
                );
                wait_for("the UDP port bound in the container", || {
                    ctr.run(&format!("ss -Hulan src 127.0.0.1:{udp} | wc -l"))
                        .trim()
                        == "1"
                });
                assert_eq!(
                    ns_client(&ctr, &dir, &format!("udp {udp} 40124")),
                    "echo:ping from 40124"
                );
                drop(_servers);
                wait_for("the port gone from the container with the host's", || {
                    ctr.run(&format!("ss -Htln src 127.0.0.1:{later} | wc -l"))
                        .trim()
                        == "0"
                });
            }
        }
        assert_eq!(pages, ["on-private-loopback", "on-private-loopback"]);
    });
}

/// A container opening 1500 connections to a `-T` port: slipway relays
/// 1024 at once (`ns_forward::tcp::MAX_RELAYS`) and resets the rest (a
/// few may already fail to connect while the listener's backlog is
/// full); once some end, new ones are relayed again. (Debian's pasta has no such
/// bound below its 128 Ki connections: no twin.)
#[test]
fn pasta_ns_forward_connections_are_bounded() {
    inside("pasta_ns_forward_connections_are_bounded", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "127.0.0.1");
        let twin = Twin::new();
        let dir = root.path().join("flood");
        std::fs::create_dir_all(&dir).unwrap();
        sh(&format!("chmod 0755 {}", dir.display()));
        let echo = free_port_in(&twin.private);
        let _servers = ns_servers(&twin, &dir, &[format!("echo:{echo}")]);
        let ctr = Container::new();
        let out = twin
            .in_private(&link)
            .args(["--config-net", "-t", "none", "-u", "none", "-U", "none"])
            .args(["-T", &echo.to_string(), "--quiet"])
            .arg(ctr.pid().to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            ns_client(&ctr, &dir, &format!("flood {echo} 1500")),
            "working 1024 after-close 5"
        );
    });
}

/// `PROGRAM --config-net -t P,S -T none -U none PID` in a fresh twin,
/// with the container's servers bound to its 127.0.0.1 only: what the
/// host's loopback reaches through the `-t` ports (the page, and 16 MiB
/// each way with a half-close).
fn pasta_inbound_twin(program: &Path, root: &Path, label: &str) -> (String, String) {
    let twin = Twin::new();
    let dir = root.join(label);
    let www = site(&dir, "inside", "inside-loopback");
    sh(&format!("chmod -R 0755 {}", dir.display()));
    let ctr = Container::new();
    let (page, sums) = (free_port_in(&twin.private), free_port_in(&twin.private));
    let out = twin
        .in_private(program)
        .args(["--config-net", "-u", "none", "-T", "none", "-U", "none"])
        .args(["-t", &format!("{page},{sums}"), "--quiet"])
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctr.run(&format!(
        "busybox httpd -p 127.0.0.1:{page} -h {}",
        www.display()
    ));
    let script = dir.join("servers.py");
    std::fs::write(&script, NS_SERVERS).unwrap();
    let (_server, _up) = spawn_first_line(
        Command::new("nsenter")
            .args(["-t", &ctr.pid().to_string(), "-n", "python3"])
            .arg(&script)
            .arg(format!("sums:{sums}")),
    );
    let got = twin.private.run(&format!(
        "busybox wget -q -O - http://127.0.0.1:{page}/marker.txt || true"
    ));
    let client = dir.join("client.py");
    std::fs::write(&client, NS_CLIENT).unwrap();
    let sums = twin.private.run(&format!(
        "python3 {} sums {sums} 2>&1 || true",
        client.display()
    ));
    (got.trim().to_string(), sums.trim().to_string())
}

/// As pasta does, a connection to a `-t` port from the host's loopback
/// is spliced into the container's loopback: a server bound to the
/// container's 127.0.0.1 only is reached, against Debian's pasta, with
/// 16 MiB each way and a half-close.
#[test]
fn pasta_splices_the_hosts_loopback_into_the_namespace() {
    inside(
        "pasta_splices_the_hosts_loopback_into_the_namespace",
        || {
            let root = slipway_testkit::temp_dir().unwrap();
            let link = pasta_setup(root.path(), "127.0.0.1");
            let real = pasta_inbound_twin(Path::new("/usr/bin/pasta"), root.path(), "real");
            let ours = pasta_inbound_twin(&link, root.path(), "slipway");
            eprintln!("real: {real:?}\nours: {ours:?}");
            assert_eq!(real.0, "inside-loopback", "{real:?}");
            assert_eq!(ours.0, real.0);
            // Debian's pasta cuts the download short here too (README).
            assert!(
                real.1.starts_with(&format!("up {} True down ", 16 << 20)),
                "{real:?}"
            );
            assert_eq!(
                ours.1,
                format!("up {} True down {} True", 16 << 20, 16 << 20)
            );
        },
    );
}

/// The host's side of [`pasta_ns6_twin`]: TCP and UDP servers bound to
/// `::1` only (`tcp:PORT`, `udp:PORT`), each answering with its port and
/// the client's address.
const LOOPBACK6_SERVERS: &str = r#"
import socket, sys, threading
def serve(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.bind(("::1", port))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
        while True:
            c, peer = s.accept()
            c.settimeout(10)
            c.recv(100)
            c.sendall(("tcp6 %d from %s\n" % (port, peer[0])).encode())
            c.close()
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(("udp6 %d from %s\n" % (port, peer[0])).encode(), peer)
for arg in sys.argv[1:]:
    kind, port = arg.split(":")
    k = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    threading.Thread(target=serve, args=(k, int(port)), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The container's side of [`pasta_ns6_twin`]: for each `tcp:PORT` or
/// `udp:PORT`, one line: what a client of the container's `[::1]:PORT`
/// got back (the answer, and for UDP the port it came from), or the
/// error's name.
const LOOPBACK6_CLIENT: &str = r#"
import socket, sys
for arg in sys.argv[1:]:
    kind, port = arg.split(":")
    try:
        if kind == "tcp":
            c = socket.create_connection(("::1", int(port)), timeout=10)
            c.sendall(b"hello\n")
            print(c.recv(100).decode().strip() or "closed")
        else:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.settimeout(3)
            got = "no reply"
            for _ in range(3):
                s.sendto(b"hello", ("::1", int(port)))
                try:
                    data, peer = s.recvfrom(100)
                except socket.timeout:
                    continue
                got = "%s (answered from port %d)" % (data.decode().strip(), peer[1])
                break
            print(got)
    except OSError as e:
        print(type(e).__name__)
"#;

/// What the container's clients of its `::1` got, per port asked
/// (`tcp:5000`, `tcp:5001`, `tcp:80`, `tcp:6001`, `udp:5300`, `udp:5301`).
const NS6_CLIENTS: &[&str] = &[
    "tcp:5000", "tcp:5001", "tcp:80", "tcp:6001", "udp:5300", "udp:5301",
];

/// `PROGRAM --config-net -t none -u none -T 5000,5001:6001,80:6001
/// -U 5300,5301:6301 PID` for a container in a fresh [`twin6`] whose
/// host (the private namespace) serves on `::1` only: one line per
/// [`NS6_CLIENTS`] item, and the `/proc/PID/status` of slipway's helper
/// in the container's namespace (`None` when there is none: Debian's
/// pasta).
fn pasta_ns6_twin(program: &Path, root: &Path, label: &str) -> (Vec<String>, Option<String>) {
    let twin = twin6();
    let dir = root.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!("chmod 0755 {}", dir.display()));
    let (_servers, ready) = spawn_first_line(
        Command::new("nsenter")
            .args(["-t", &twin.private.pid().to_string(), "-n", "python3", "-c"])
            .arg(LOOPBACK6_SERVERS)
            .args(["tcp:5000", "tcp:6001", "udp:5300", "udp:6301"]),
    );
    assert_eq!(ready, "ready", "{label}");
    let ctr = Container::new();
    let out = twin
        .in_private(program)
        .args(["--config-net", "-t", "none", "-u", "none"])
        .args(["-T", "5000,5001:6001,80:6001", "-U", "5300,5301:6301"])
        .arg("--quiet")
        .arg(ctr.pid().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = dir.join("client6.py");
    std::fs::write(&script, LOOPBACK6_CLIENT).unwrap();
    let seen = sh(&format!(
        "nsenter -t {} -n python3 {} {} 2>&1 || true",
        ctr.pid(),
        script.display(),
        NS6_CLIENTS.join(" ")
    ));
    let seen: Vec<String> = seen.lines().map(|l| l.trim().to_string()).collect();
    eprintln!("{label}: {seen:#?}");
    (seen, loopback_helper_status(&ctr))
}

/// The `/proc/PID/status` of the slipway process in `ctr`'s network
/// namespace (the loopback helper of `-T`/`-U`), if there is one.
fn loopback_helper_status(ctr: &Container) -> Option<String> {
    let ns = std::fs::read_link(format!("/proc/{}/ns/net", ctr.pid())).unwrap();
    let slipway = std::fs::canonicalize(env!("CARGO_BIN_EXE_slipway")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|n| n == ns)
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == slipway)
        })
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
}

/// `-T`/`-U` on the namespace's `::1`, against Debian's pasta: from the
/// container's `[::1]:PORT`, a TCP server on the host's `::1` only is
/// reached on its own port, through a remapped one (`5001:6001`) and
/// from a port below 1024 (`80:6001`: the helper keeps the one
/// capability that needs, in the container's user namespace), a port
/// not forwarded is refused, and UDP likewise (`5300`, `5301:6301`), the
/// answer coming back from the port the container sent to. Slipway's
/// helper in the container's namespace is confined: seccomp,
/// `no_new_privs`, CAP_NET_BIND_SERVICE alone.
#[test]
fn pasta_ns_forwards_ipv6_loopback_match_debian_pasta() {
    inside("pasta_ns_forwards_ipv6_loopback_match_debian_pasta", || {
        let root = slipway_testkit::temp_dir().unwrap();
        let link = pasta_setup(root.path(), "::1");
        let (real, _) = pasta_ns6_twin(Path::new("/usr/bin/pasta"), root.path(), "real");
        let (ours, helper) = pasta_ns6_twin(&link, root.path(), "slipway");
        let want = [
            "tcp6 5000 from ::1",
            "tcp6 6001 from ::1",
            "tcp6 6001 from ::1",
            "ConnectionRefusedError",
            "udp6 5300 from ::1 (answered from port 5300)",
            "udp6 6301 from ::1 (answered from port 5301)",
        ];
        assert_eq!(ours, want);
        assert_eq!(real, want);
        let helper = helper.expect("slipway's loopback helper in the container's namespace");
        let field = |key: &str| {
            helper
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(field("Seccomp"), "2", "{helper}");
        assert_eq!(field("NoNewPrivs"), "1", "{helper}");
        assert_eq!(field("CapEff"), "0000000000000400", "{helper}");
        assert_eq!(field("CapPrm"), "0000000000000400", "{helper}");
        assert_eq!(field("CapBnd"), "0000000000000000", "{helper}");
    });
}
