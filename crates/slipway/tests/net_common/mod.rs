//! Helpers shared by the `net_*` tests: running the real `slipway` binary
//! under `--root`, the daemon as a child process, and running a test in a
//! network namespace of its own.
//!
//! Each test file uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use slipway_testkit::KillOnDrop;

pub const BIN: &str = env!("CARGO_BIN_EXE_slipway");

/// A command's result as text.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn text(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs slipway under `root`, in `cwd` (so file names print as virsh prints them).
pub fn sw_in(root: &Path, cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run slipway");
    text(out)
}

pub fn sw(root: &Path, args: &[&str]) -> Run {
    sw_in(root, root, args)
}

/// Runs slipway under `root`, in `root`, as user and group `uid` with no
/// supplementary groups (`setpriv`), as another user of the machine would.
pub fn sw_as(uid: u32, root: &Path, args: &[&str]) -> Run {
    let id = uid.to_string();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .args(["--clear-groups", BIN, "--root"])
        .arg(root)
        .args(args)
        .current_dir(root)
        .output()
        .expect("run setpriv (util-linux)");
    text(out)
}

/// Runs slipway and requires success.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let r = sw(root, args);
    assert_eq!(r.code, 0, "slipway {args:?} failed: {r:?}");
    r.stdout
}

pub fn virsh(cwd: &Path, script: &str) -> Run {
    let out = Command::new("virsh")
        .args(["-c", "test:///default", script])
        .current_dir(cwd)
        .output()
        .expect("virsh (Debian package libvirt-clients) must be installed");
    text(out)
}

/// virsh quoting for one argument of a multi-command script.
fn vquote(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{arg}'")
    }
}

/// The same commands twice: all of `script` as one session of virsh's
/// test driver (the oracle, see [`virsh`]), and each command through
/// slipway's CLI in `root`. Returns virsh's run and slipway's stdout and
/// stderr, all commands' together.
pub fn virsh_and_sw_script(root: &Path, script: &[Vec<&str>]) -> (Run, String, String) {
    let joined: Vec<String> = script
        .iter()
        .map(|c| c.iter().map(|a| vquote(a)).collect::<Vec<_>>().join(" "))
        .collect();
    let expected = virsh(root, &joined.join("; "));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for c in script {
        let r = sw(root, c);
        stdout += &r.stdout;
        stderr += &r.stderr;
    }
    (expected, stdout, stderr)
}

pub fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

pub fn config_dir(root: &Path) -> PathBuf {
    root.join("etc/slipway/networks")
}

pub fn state_dir(root: &Path) -> PathBuf {
    root.join("run/slipway/networks")
}

/// The pid of the DHCP/DNS service of `net`, from the backend's record.
pub fn service_pid(root: &Path, net: &str) -> i32 {
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state_dir(root).join(format!("hostnet/{net}.json"))).unwrap(),
    )
    .unwrap();
    rec["service"]["pid"].as_i64().unwrap() as i32
}

/// Whether process `pid` runs (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| !st.contains(") Z "))
}

/// Files whose names mark an unfinished write.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in [
        config_dir(root),
        config_dir(root).join("autostart"),
        state_dir(root),
    ] {
        if let Ok(rd) = std::fs::read_dir(d) {
            v.extend(rd.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            }));
        }
    }
    v
}

pub use slipway_testkit::netns::Ns;

const IN_NETNS: &str = "SLIPWAY_NET_CLI_IN_NETNS";

/// Runs `body` in a fresh network namespace (see [`enter_netns_as`]).
pub fn in_netns(name: &str, ns: Ns, body: fn()) {
    if let Some(_inside) = enter_netns_as(name, ns) {
        body();
    }
}

/// Runs test `name` in a fresh network namespace
/// ([`slipway_testkit::netns::enter_new_netns`]): outside, `None` once it
/// ran there; inside, the guard of the test's body. Starting a network
/// creates real bridges, nft rules and service processes, so every test
/// that starts one (or a daemon, which autostarts `default`) runs this
/// way. When the body ends, passed or panicked, the guard kills every
/// other process left in the namespace (daemons, network services) so
/// none outlives the test.
pub fn enter_netns_as(name: &str, ns: Ns) -> Option<NetnsGuard> {
    // `then`, not `then_some`: a guard made outside the namespace would
    // kill every process of the machine's own on drop.
    slipway_testkit::netns::enter_new_netns(IN_NETNS, name, ns).then(|| NetnsGuard(()))
}

/// Held by a test's body inside its namespace ([`enter_netns_as`]).
pub struct NetnsGuard(());

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        kill_others_in_netns();
    }
}

/// The first statement of a test that runs in a namespace of its own:
/// `enter_netns!(Ns::User);` runs the rest of the test there
/// ([`enter_netns_as`] under the test function's own name).
#[allow(unused_macros)]
macro_rules! enter_netns {
    ($ns:expr) => {
        let name = slipway_testkit::test_name!();
        let Some(_inside) = $crate::net_common::enter_netns_as(name, $ns) else {
            return;
        };
    };
}
#[allow(unused_imports)]
pub(crate) use enter_netns;

/// SIGKILLs every process of this network namespace except this one.
pub fn kill_others_in_netns() {
    // Only ever in a namespace a test made, never in the machine's own.
    assert!(
        std::env::var_os(IN_NETNS).is_some(),
        "kill_others_in_netns outside a test's namespace"
    );
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(
        !std::fs::read_link("/proc/1/ns/net").is_ok_and(|init| init == own),
        "kill_others_in_netns in the network namespace of PID 1"
    );
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|n| n == own) {
            // SAFETY: plain kill(2) of a process in the test's own namespace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// A daemon child process, killed on drop.
pub struct Daemon(KillOnDrop);

impl Daemon {
    pub fn start(root: &Path) -> Daemon {
        Daemon::start_as(root, &[])
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_env(root: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(root, &[], env, None)
    }

    /// Starts the daemon with its log (stderr) going to `log`.
    pub fn start_logged(root: &Path, log: &Path) -> Daemon {
        Daemon::spawn(root, &[], &[], Some(log))
    }

    /// Starts the daemon with extra `daemon` arguments, its log (stderr)
    /// going to `log`.
    pub fn start_with(root: &Path, args: &[&str], log: &Path) -> Daemon {
        let child = Command::new(BIN)
            .arg("--root")
            .arg(root)
            .arg("daemon")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .unwrap();
        Daemon::ready(root, child)
    }

    /// Starts the daemon through `setpriv ARGS` when ARGS are given (to run
    /// it as another user).
    pub fn start_as(root: &Path, setpriv: &[&str]) -> Daemon {
        Daemon::spawn(root, setpriv, &[], None)
    }

    fn spawn(root: &Path, setpriv: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Daemon {
        let mut cmd = if setpriv.is_empty() {
            Command::new(BIN)
        } else {
            let mut c = Command::new("setpriv");
            c.args(setpriv).arg(BIN);
            c
        };
        let child = cmd
            .arg("--root")
            .arg(root)
            .arg("daemon")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        Daemon::ready(root, child)
    }

    /// `child`, once a status request is answered.
    fn ready(root: &Path, child: Child) -> Daemon {
        let d = Daemon(KillOnDrop(child));
        // Ready once a status request is answered.
        for _ in 0..2000 {
            if status(root).is_some() {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("daemon did not come up");
    }

    /// The daemon's pid (the child's, or setpriv's, which execs it).
    pub fn pid(&self) -> i32 {
        self.0.pid() as i32
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.0.terminate().expect("the daemon's exit status")
    }

    pub fn kill9(&mut self) {
        self.0.kill();
    }
}

/// The port XML libvirt 9.0's QEMU driver sends with
/// `NETWORK_PORT_CREATE_XML` (flags 0) when a VM with `<interface
/// type='network'>` starts (`virDomainNetDefToNetworkPort` then
/// `virNetworkPortDefFormat`, src/conf/domain_conf.c; as captured from
/// `virt-qemu-run`, docs/libvirt-qemu-driver.md, section 4): a fresh UUID,
/// the VM as owner, the interface's MAC, no plug.
pub fn qemu_port(uuid: &str, mac: &str) -> String {
    format!(
        "<networkport>
  <uuid>{uuid}</uuid>
  <owner>
    <name>guest1</name>
    <uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid>
  </owner>
  <mac address='{mac}'/>
</networkport>
"
    )
}

/// The daemon's status over the raw API, if it answers.
pub fn status(root: &Path) -> Option<serde_json::Value> {
    raw(root, r#"{"op":"status"}"#).ok()
}

pub fn raw(root: &Path, line: &str) -> std::io::Result<serde_json::Value> {
    let mut s = UnixStream::connect(root.join("run/slipway/slipway-sock"))?;
    writeln!(s, "{line}")?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

/// Waits until the daemon counts `n` event subscribers (of either API).
pub fn wait_for_subscribers(root: &Path, n: u64) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status(root).unwrap()["ok"]["subscribers"] != n {
        assert!(
            std::time::Instant::now() < end,
            "the daemon never counted {n} subscribers"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
