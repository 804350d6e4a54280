//! A user's own `slipway daemon` (no `--root`, not root: the per-user
//! locations) serves libvirt's session URI: `virsh -c network:///session`
//! and python3-libvirt's `libvirt.open('network:///session')`, run as that
//! user, find `$XDG_RUNTIME_DIR/libvirt/virtnetworkd-sock` by themselves
//! (libvirt 9.0's `remoteGetUNIXSocketHelper`: the user runtime directory,
//! `g_get_user_runtime_dir()/libvirt`, then `virtnetworkd-sock`) and do
//! what that user may do. Another user reaches neither socket: the modes
//! keep it out, and with the modes loosened the daemon's peer-credential
//! check still does. A socket directory another user owns, or may write
//! in, stops the daemon.
//!
//! The users are uids the test picks (no passwd entry needed), each with
//! its own HOME and XDG_RUNTIME_DIR, switched to with setpriv, in a network
//! namespace of the test's own (`Ns::Root`: root outside any user namespace,
//! to switch users). Needs: libvirt-clients (virsh), python3-libvirt,
//! util-linux (setpriv, unshare).

mod net_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use net_common::*;
use slipway_testkit::netns::wait_for;
use slipway_testkit::KillOnDrop;

/// The user whose daemon it is.
const USER: u32 = 4242;
/// Another local user.
const OTHER: u32 = 4343;

/// A user's HOME and XDG_RUNTIME_DIR (both 0700, the user's), under a
/// 0755 directory of the test's.
struct Account {
    uid: u32,
    home: PathBuf,
    runtime: PathBuf,
}

impl Account {
    fn new(base: &Path, uid: u32) -> Account {
        let home = base.join(format!("home-{uid}"));
        let runtime = base.join(format!("run-{uid}"));
        for dir in [&home, &runtime] {
            std::fs::create_dir(dir).unwrap();
            std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Account { uid, home, runtime }
    }

    /// `argv` as this user, with only its own environment (and no libvirt
    /// daemon autostart: a missing socket is an error, not a spawned
    /// virtnetworkd).
    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .args([
                "--clear-groups",
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            ])
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime.display()))
            .arg("LIBVIRT_AUTOSTART=0")
            .args(argv)
            .current_dir(&self.home)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, argv: &[&str]) -> Run {
        text(self.cmd(argv).output().expect("setpriv (util-linux)"))
    }

    fn virsh(&self, args: &[&str]) -> Run {
        let mut argv = vec!["virsh", "-c", "network:///session"];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    fn slipway(&self, args: &[&str]) -> Run {
        let mut argv = vec![BIN];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    fn libvirt_dir(&self) -> PathBuf {
        self.runtime.join("libvirt")
    }

    /// Starts this user's daemon, its log in `log`; returns once both
    /// libvirt sockets and the JSON one are there.
    fn daemon(&self, log: &Path) -> KillOnDrop {
        let child = self
            .cmd(&[BIN, "-v", "daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut proc = KillOnDrop(child);
        wait_for("the user's daemon", || {
            if let Some(status) = proc.try_wait() {
                panic!(
                    "daemon exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            self.libvirt_dir().join("virtnetworkd-sock-ro").exists()
                && self.runtime.join("slipway/slipway-sock").exists()
        });
        proc
    }
}

/// A 0755 base directory for the accounts.
fn base() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn error_lines(r: &Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect()
}

/// What libvirt's clients send first (`AUTH_LIST`, serial 1) on `socket`
/// as `who`: what came back (empty: closed unserved), or the error of the
/// connect.
fn probe(who: &Account, socket: &Path) -> Run {
    let script = format!(
        "import socket,struct\ns=socket.socket(socket.AF_UNIX)\ns.connect('{}')\n\
         try:\n    s.sendall(struct.pack('!IIIiIII',28,0x20008086,1,66,0,1,0))\n    r=s.recv(100)\n\
         except ConnectionError:\n    r=b''\nprint(repr(r))",
        socket.display()
    );
    who.run(&["/usr/bin/python3", "-c", &script])
}

#[test]
fn virsh_and_python_reach_a_users_daemon_on_the_session_uri() {
    enter_netns!(Ns::Root);
    let dir = base();
    let user = Account::new(dir.path(), USER);
    let _daemon = user.daemon(&dir.path().join("daemon.log"));

    // virtnetworkd's per-user layout: the directory and both sockets the
    // user's only.
    for (path, mode) in [
        (user.libvirt_dir(), 0o700),
        (user.libvirt_dir().join("virtnetworkd-sock"), 0o600),
        (user.libvirt_dir().join("virtnetworkd-sock-ro"), 0o600),
    ] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (USER, mode),
            "{}",
            path.display()
        );
    }

    // No socket= in the URI: virsh finds the daemon by the user's
    // XDG_RUNTIME_DIR, and it answers as the session driver.
    let r = user.virsh(&["uri"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "network:///session\n\n"),
        "{r:?}"
    );
    let v = user.virsh(&["net-list", "--all"]);
    let s = user.slipway(&["net-list", "--all"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.stdout, s.stdout);
    // The first run's default network, in the user's own definitions.
    assert!(v.stdout.contains(" default "), "{v:?}");

    write(
        &user.home,
        "s1.xml",
        "<network><name>s1</name><bridge name='swu1'/></network>",
    );
    let r = user.virsh(&["net-define", "s1.xml"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "Network s1 defined from s1.xml\n\n"),
        "{r:?}"
    );
    let def = user.home.join(".config/slipway/networks/s1.xml");
    assert_eq!(std::fs::metadata(&def).unwrap().uid(), USER);
    let r = user.virsh(&["net-autostart", "s1"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "Network s1 marked as autostarted\n\n"),
        "{r:?}"
    );
    let info = user.slipway(&["net-info", "s1"]);
    assert!(info.stdout.contains("Autostart:      yes"), "{info:?}");
    assert_eq!(user.virsh(&["net-info", "s1"]).stdout, info.stdout);
    // Starting needs CAP_NET_ADMIN, which the user has not: the same
    // refusal through libvirt's protocol as through slipway's CLI.
    let v = user.virsh(&["net-start", "s1"]);
    let s = user.slipway(&["net-start", "s1"]);
    assert_ne!(v.code, 0, "{v:?}");
    assert_eq!(error_lines(&v), error_lines(&s));
    assert!(v.stderr.contains("Operation not permitted"), "{v:?}");

    // Python's bindings on the same URI.
    let script = "import libvirt\n\
        c = libvirt.open('network:///session')\n\
        print(c.getURI())\n\
        n = c.networkDefineXML(\"<network><name>s2</name><bridge name='swu2'/></network>\")\n\
        print(sorted(x.name() for x in c.listAllNetworks()))\n\
        print(n.isPersistent(), n.isActive(), c.networkLookupByName('s1').autostart())\n\
        n.undefine()\n\
        print(sorted(c.listDefinedNetworks()))\n";
    let r = user.run(&["/usr/bin/python3", "-c", script]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            "network:///session\n['default', 's1', 's2']\n1 0 1\n['default', 's1']\n"
        ),
        "{r:?}"
    );
    let r = user.virsh(&["net-undefine", "s1"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!def.exists());
}

#[test]
fn other_users_never_reach_a_users_daemon() {
    enter_netns!(Ns::Root);
    let dir = base();
    let user = Account::new(dir.path(), USER);
    let other = Account::new(dir.path(), OTHER);
    let _daemon = user.daemon(&dir.path().join("daemon.log"));
    let rw = user.libvirt_dir().join("virtnetworkd-sock");
    let ro = user.libvirt_dir().join("virtnetworkd-sock-ro");

    // The other user's session URI goes to its own runtime directory
    // (with no virtnetworkd-sock there, libvirt 9.0 falls back to the
    // monolithic daemon's libvirt-sock in it).
    let r = other.virsh(&["net-list", "--all"]);
    assert_ne!(r.code, 0, "{r:?}");
    let own = other.libvirt_dir().join("libvirt-sock");
    assert!(r.stderr.contains(&own.display().to_string()), "{r:?}");
    // Naming the user's sockets: the directories' modes keep it out.
    for socket in [&rw, &ro] {
        let uri = format!("network:///session?socket={}", socket.display());
        let r = other.run(&["virsh", "-c", &uri, "net-list", "--all"]);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("Permission denied"), "{r:?}");
    }

    // A careless user opens everything up: the daemon still serves only
    // its user (and root), on both sockets.
    for (path, mode) in [
        (&user.runtime, 0o755),
        (&user.libvirt_dir(), 0o755),
        (&rw, 0o666),
        (&ro, 0o666),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for socket in [&rw, &ro] {
        let r = probe(&other, socket);
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "b''\n"),
            "{socket:?}: {r:?}"
        );
        let uri = format!("network:///session?socket={}", socket.display());
        let r = other.run(&["virsh", "-c", &uri, "net-list", "--all"]);
        assert_ne!(r.code, 0, "{r:?}");
        // The user is served on both, as before.
        let r = probe(&user, socket);
        assert!(
            r.stdout.starts_with("b'\\x00\\x00\\x00"),
            "{socket:?}: {r:?}"
        );
    }
    let r = user.virsh(&["net-list", "--all", "--name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "default\n\n"), "{r:?}");
}

#[test]
fn a_socket_directory_of_another_user_stops_the_daemon() {
    enter_netns!(Ns::Root);
    let dir = base();
    let user = Account::new(dir.path(), USER);
    let libvirt = user.libvirt_dir();
    // Made by another user (a shared runtime directory, ~/.cache on a
    // careless system)...
    std::fs::create_dir(&libvirt).unwrap();
    std::os::unix::fs::chown(&libvirt, Some(OTHER), Some(OTHER)).unwrap();
    std::fs::set_permissions(&libvirt, std::fs::Permissions::from_mode(0o777)).unwrap();
    let stopped = |want: &str| {
        let r = text(
            // Bounded: a daemon that does not stop would serve forever.
            user.cmd(&["timeout", "60", BIN, "daemon"])
                .output()
                .expect("setpriv (util-linux)"),
        );
        assert_eq!(r.code, 1, "{r:?}");
        let line = format!(
            "{}: {want}; refusing to serve libvirt's sockets in it\n",
            libvirt.display()
        );
        assert!(r.stderr.contains(&line), "{r:?}");
        assert!(!libvirt.join("virtnetworkd-sock").exists());
    };
    stopped(&format!(
        "owned by uid {OTHER}, not by this daemon's uid {USER}"
    ));
    // ...or the user's own, but writable by others.
    std::os::unix::fs::chown(&libvirt, Some(USER), Some(USER)).unwrap();
    stopped("mode 0777: others may write in it");
    // Put right, the daemon starts.
    std::fs::set_permissions(&libvirt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let _daemon = user.daemon(&dir.path().join("daemon.log"));
    let r = user.virsh(&["net-list", "--all", "--name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "default\n\n"), "{r:?}");
}
