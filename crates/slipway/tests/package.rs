//! The Debian package (`scripts/package.sh`), as dpkg, man, groff,
//! systemd-analyze and the shells see it.
//!
//! The package is built once per run from the debug binaries cargo built
//! for these tests (`--bin-dir`: a release build of the workspace takes
//! minutes of CI's two cores; the script is the same for both, only the
//! binaries differ), into `CARGO_TARGET_TMPDIR/package-test`. Each test
//! installs it into a throwaway root of its own with
//! `dpkg --root DIR --force-script-chrootless` (the maintainer scripts run
//! with `DPKG_ROOT=DIR`, as they must for such installs; `--force-depends`
//! because the empty root has no libc6 package: the binaries run on the
//! host's).
//!
//! Needs: dpkg, binutils (objcopy, readelf), libcap2-bin (getcap), groff-base
//! and man-db, systemd (systemd-analyze), lintian, bash, zsh, fish, util-linux
//! (unshare), systemd-container (systemd-nspawn), the kernel's overlayfs;
//! runs as root (as CI does).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_slipway");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const HELPER: &str = "usr/libexec/slipway-bridge-helper";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `man -l PAGE` as plain text (man overstrikes bold when not on a
/// terminal: each "c\bc" becomes "c").
fn man(page: &Path) -> String {
    let shown = ok(Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "80"));
    let mut out = String::new();
    for c in shown.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `cmd`, which must succeed; returns its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package, built once for all the tests of this file.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package-test");
        let _ = fs::remove_dir_all(&out);
        let bin_dir = Path::new(BIN).parent().unwrap();
        let printed = ok(Command::new(repo().join("scripts/package.sh"))
            .current_dir(repo())
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--out")
            .arg(&out));
        let deb = PathBuf::from(printed.trim());
        assert!(deb.is_file(), "package.sh printed {printed:?}");
        deb
    })
}

/// A throwaway root with an empty dpkg database, removed on drop.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// The root, with the directories a Debian system with systemd has
    /// (owned by the systemd package there) for the units' enablement.
    fn new() -> Root {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["info", "updates", "triggers"] {
            fs::create_dir_all(dir.path().join("var/lib/dpkg").join(sub)).unwrap();
        }
        for sub in ["etc/systemd/system", "var/lib/systemd"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(dir.path().join("var/lib/dpkg/status"), "").unwrap();
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn dpkg(&self, args: &[&str]) -> String {
        ok(Command::new("dpkg")
            .arg(format!("--root={}", self.path().display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args))
    }

    fn install(&self) -> String {
        self.dpkg(&["--install", deb().to_str().unwrap()])
    }

    /// Every path under the root but dpkg's own database, relative.
    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                let rel = e
                    .path()
                    .strip_prefix(self.path())
                    .unwrap()
                    .display()
                    .to_string();
                if rel == "var" || rel == "var/lib" || rel.starts_with("var/lib/dpkg") {
                    if rel != "var/lib/dpkg" {
                        stack.push(e.path());
                    }
                    continue;
                }
                out.push(rel);
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

/// The files the package must install, with their modes.
const EXPECTED: &[(&str, u32)] = &[
    ("usr/bin/slipway", 0o755),
    ("usr/share/man/man1/slipway.1.gz", 0o644),
    ("usr/share/man/man1/slipway-user.1.gz", 0o644),
    ("usr/share/man/man1/slipway-net-start.1.gz", 0o644),
    ("usr/share/man/man1/slipway-daemon.1.gz", 0o644),
    ("usr/share/man/man8/slipway-bridge-helper.8.gz", 0o644),
    ("usr/share/bash-completion/completions/slipway", 0o644),
    ("usr/share/zsh/vendor-completions/_slipway", 0o644),
    ("usr/share/fish/vendor_completions.d/slipway.fish", 0o644),
    ("usr/lib/systemd/system/slipway.service", 0o644),
    ("usr/lib/systemd/system/slipway.socket", 0o644),
    ("usr/lib/systemd/system/slipway-virtnetworkd.socket", 0o644),
    (
        "usr/lib/systemd/system/slipway-virtnetworkd-ro.socket",
        0o644,
    ),
    ("usr/lib/systemd/user/slipway.service", 0o644),
    ("usr/lib/systemd/user/slipway.socket", 0o644),
    ("usr/lib/systemd/user/slipway-user@.service", 0o644),
    ("usr/share/doc/slipway/README.md", 0o644),
    ("usr/share/doc/slipway/copyright", 0o644),
    ("usr/share/doc/slipway/changelog.gz", 0o644),
    ("usr/share/doc/slipway/docs/daemon-api.md", 0o644),
    ("usr/share/doc/slipway/docs/sandbox.md", 0o644),
];

#[test]
fn package_metadata_and_contents() {
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(deb()));
    for want in [
        "Package: slipway",
        &format!("Version: {VERSION}"),
        "Depends: libc6 (>= 2.",
        "Section: net",
    ] {
        assert!(info.contains(want), "{want} missing:\n{info}");
    }
    let listing = ok(Command::new("dpkg-deb").arg("--contents").arg(deb()));
    for line in listing.lines() {
        // drwxr-xr-x root/root 0 2026-01-01 00:00 ./usr/
        let owner = line.split_whitespace().nth(1).unwrap_or("");
        assert_eq!(owner, "root/root", "not root's: {line}");
    }
    // Every generated manual page is there: one per visible command.
    let pages = listing.matches("/usr/share/man/man1/").count();
    assert!(pages >= 25, "{pages} pages in man1:\n{listing}");
    assert!(
        !listing.contains("net-service"),
        "a hidden command got a page:\n{listing}"
    );
    // The binaries are stripped: no DWARF left in them.
    let root = Root::new();
    ok(Command::new("dpkg-deb")
        .arg("--extract")
        .arg(deb())
        .arg(root.path()));
    for bin in ["usr/bin/slipway", HELPER] {
        let sections = ok(Command::new("readelf")
            .arg("--section-headers")
            .arg(root.path().join(bin)));
        assert!(
            !sections.contains(".debug_info") && !sections.contains(".debug_line"),
            "{bin} carries debug info"
        );
        assert!(sections.contains(".gnu_debuglink"), "{bin}: no debuglink");
    }
    let copyright =
        fs::read_to_string(root.path().join("usr/share/doc/slipway/copyright")).unwrap();
    assert!(copyright.contains("License: MIT") && copyright.contains(" clap "));
}

#[test]
fn install_reinstall_and_purge_leave_nothing_behind() {
    let root = Root::new();
    let empty = root.files();
    root.install();
    // Enabled as debhelper would (deb-systemd-helper, under DPKG_ROOT).
    for (link, unit) in [
        (
            "etc/systemd/system/sockets.target.wants/slipway.socket",
            "slipway.socket",
        ),
        (
            "etc/systemd/system/multi-user.target.wants/slipway.service",
            "slipway.service",
        ),
    ] {
        let target =
            fs::read_link(root.path().join(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert_eq!(target, Path::new("/usr/lib/systemd/system").join(unit));
    }
    for (path, mode) in EXPECTED {
        let meta = fs::metadata(root.path().join(path))
            .unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}");
    }
    // The bridge helper: no setuid bit, the one file capability.
    let helper = root.path().join(HELPER);
    assert_eq!(
        fs::metadata(&helper).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let caps = ok(Command::new("getcap").arg(&helper));
    assert!(caps.trim().ends_with("cap_net_admin=ep"), "getcap: {caps}");
    // The installed program runs.
    let version = ok(Command::new(root.path().join("usr/bin/slipway")).arg("--version"));
    assert_eq!(version.trim(), format!("slipway {VERSION}"));
    let usage = ok(Command::new(&helper).arg("--help"));
    assert!(usage.contains("usage: slipway-bridge-helper"), "{usage}");
    verify_units(root.path());

    let before = root.files();
    root.install();
    assert_eq!(root.files(), before, "a second install changed the tree");
    let caps = ok(Command::new("getcap").arg(&helper));
    assert!(caps.contains("cap_net_admin=ep"), "after reinstall: {caps}");

    root.dpkg(&["--purge", "slipway"]);
    assert_eq!(root.files(), empty, "left after purge");
    let status = fs::read_to_string(root.path().join("var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Package: slipway"), "{status}");
}

/// An administrator's dpkg-statoverride for the helper decides its
/// privilege: here setuid root, so no capability is added.
#[test]
fn statoverride_decides_the_helpers_privilege() {
    let root = Root::new();
    ok(Command::new("dpkg-statoverride")
        .arg(format!("--root={}", root.path().display()))
        .args(["--add", "root", "root", "4755", &format!("/{HELPER}")]));
    root.install();
    let helper = root.path().join(HELPER);
    assert_eq!(
        fs::metadata(&helper).unwrap().permissions().mode() & 0o7777,
        0o4755
    );
    let caps = ok(Command::new("getcap").arg(&helper));
    assert_eq!(caps.trim(), "", "a capability was added over the override");
    root.dpkg(&["--purge", "slipway"]);
}

/// `systemd-analyze verify` on every unit, with the package's binaries at
/// their ExecStart paths: /usr/bin is an overlay of the package root's
/// over the host's in a mount namespace of its own, and man finds the
/// pages the units name (Documentation=) in the root. Any warning fails.
fn verify_units(root: &Path) {
    let units = root.join("usr/lib/systemd");
    let runtime = tempfile::tempdir().unwrap();
    fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
    // A template is verified through an instance of it.
    let instance = tempfile::tempdir().unwrap();
    fs::copy(
        units.join("user/slipway-user@.service"),
        instance.path().join("slipway-user@vm1.service"),
    )
    .unwrap();
    let script = r#"
        set -e
        mount -t overlay overlay -o "lowerdir=$ROOT/usr/bin:/usr/bin" /usr/bin
        systemd-analyze verify "$ROOT"/usr/lib/systemd/system/slipway.service "$ROOT"/usr/lib/systemd/system/slipway.socket \
            "$ROOT"/usr/lib/systemd/system/slipway-virtnetworkd.socket "$ROOT"/usr/lib/systemd/system/slipway-virtnetworkd-ro.socket
        systemd-analyze --user verify "$ROOT"/usr/lib/systemd/user/slipway.service "$ROOT"/usr/lib/systemd/user/slipway.socket
        systemd-analyze --user verify "$INSTANCE"/slipway-user@vm1.service
    "#;
    let out = run(Command::new("unshare")
        .args(["--mount", "sh", "-c", script])
        .env("ROOT", root)
        .env("INSTANCE", instance.path())
        .env("MANPATH", root.join("usr/share/man"))
        .env("XDG_RUNTIME_DIR", runtime.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn manual_pages_render_without_warnings() {
    let root = Root::new();
    root.install();
    let mut checked = 0;
    for section in ["man1", "man8"] {
        let dir = root.path().join("usr/share/man").join(section);
        for page in fs::read_dir(&dir).unwrap().flatten() {
            let path = page.path();
            let roff = ok(Command::new("zcat").arg(&path));
            let troff = run(Command::new("sh")
                .args(["-c", "zcat \"$1\" | groff -man -ww -z", "sh"])
                .arg(&path));
            assert!(
                troff.status.success() && troff.stderr.is_empty(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&troff.stderr)
            );
            let shown = man(&path);
            assert!(
                shown.contains("NAME") && shown.contains("SYNOPSIS"),
                "{shown}"
            );
            assert!(roff.contains(".TH"), "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 26, "{checked} pages");
    let start = man(&root
        .path()
        .join("usr/share/man/man1/slipway-net-start.1.gz"));
    assert!(start.contains("--dry-run"), "{start}");
    let helper = man(&root
        .path()
        .join("usr/share/man/man8/slipway-bridge-helper.8.gz"));
    assert!(helper.contains("--use-vnet") && helper.contains("bridge.conf"));
    root.dpkg(&["--purge", "slipway"]);
}

/// Networks `alpha` and `beta` defined under a `--root` of their own.
fn networks() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, n) in [("alpha", 1), ("beta", 2)] {
        let xml = dir.path().join(format!("{name}.xml"));
        fs::write(
            &xml,
            format!(
                "<network><name>{name}</name><bridge name='swc{n}'/>\
                 <ip address='10.98.{n}.1' netmask='255.255.255.0'/></network>"
            ),
        )
        .unwrap();
        ok(Command::new(BIN)
            .arg("--root")
            .arg(dir.path())
            .arg("net-define")
            .arg(&xml));
    }
    dir
}

/// The installed programs first in PATH.
fn path_with(root: &Path) -> String {
    format!(
        "{}:{}",
        root.join("usr/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// bash: the installed script, its completion function driven as bash's
/// programmable completion calls it (COMP_WORDS, COMP_CWORD; the
/// function's arguments are the command, the word and the word before).
#[test]
fn bash_completes_network_names_from_the_system() {
    let root = Root::new();
    root.install();
    let nets = networks();
    let r = nets.path().to_str().unwrap();
    let complete = |line: &[&str]| -> Vec<String> {
        let script = r#"
            source "$ROOT/usr/share/bash-completion/completions/slipway"
            complete -p slipway >/dev/null
            read -r -a COMP_WORDS <<<"$LINE"
            [ "${LINE: -1}" = " " ] && COMP_WORDS+=("")
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            _clap_complete_slipway slipway "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\n' "${COMPREPLY[@]}"
        "#;
        let out = ok(Command::new("bash")
            .args(["--norc", "--noprofile", "-c", script])
            .env("ROOT", root.path())
            .env("LINE", line.join(" "))
            .env("PATH", path_with(root.path())));
        out.lines().map(str::to_owned).collect()
    };
    let names =
        |v: Vec<String>| -> Vec<String> { v.into_iter().filter(|w| !w.starts_with('-')).collect() };
    assert_eq!(
        names(complete(&["slipway", "--root", r, "net-start", ""])),
        ["alpha", "beta"]
    );
    assert_eq!(
        names(complete(&[
            "slipway",
            "--root",
            r,
            "net-info",
            "--network",
            "b"
        ])),
        ["beta"]
    );
    // net-destroy offers only running networks: none here.
    assert_eq!(
        names(complete(&["slipway", "--root", r, "net-destroy", ""])),
        Vec::<String>::new()
    );
    // Options and commands come from the same clap definitions.
    assert_eq!(complete(&["slipway", "net-st"]), ["net-start"]);
    assert!(complete(&["slipway", "net-start", "--dr"]).contains(&"--dry-run".to_owned()));
    root.dpkg(&["--purge", "slipway"]);
}

/// zsh and fish: the installed scripts load, and complete the same names.
#[test]
fn zsh_and_fish_complete_network_names() {
    let root = Root::new();
    root.install();
    let nets = networks();
    let fish = ok(Command::new("fish")
        .args([
            "--no-config",
            "-c",
            "source $ROOT/usr/share/fish/vendor_completions.d/slipway.fish; complete -C \"slipway --root $NETS net-start \"",
        ])
        .env("ROOT", root.path())
        .env("NETS", nets.path())
        .env("PATH", path_with(root.path())));
    let fish: Vec<&str> = fish.lines().filter(|l| !l.starts_with('-')).collect();
    assert_eq!(fish, ["alpha", "beta"]);

    // zsh's completion system needs a terminal; the script's function is
    // called the way compsys would, with `_describe` printing the matches.
    let zsh = ok(Command::new("zsh")
        .args([
            "-f",
            "-c",
            r#"compdef() { [ "$1" = _clap_dynamic_completer_slipway ] && [ "$2" = slipway ]; }
               source "$ROOT/usr/share/zsh/vendor-completions/_slipway"
               _describe() { local n=${@[-1]}; print -l -- ${(P)n}; }
               words=(slipway --root "$NETS" net-undefine al); CURRENT=5
               _clap_dynamic_completer_slipway"#,
        ])
        .env("ROOT", root.path())
        .env("NETS", nets.path())
        .env("PATH", path_with(root.path())));
    assert_eq!(zsh.lines().collect::<Vec<_>>(), ["alpha"]);
    root.dpkg(&["--purge", "slipway"]);
}

/// Debian's own package checker finds nothing to warn about.
#[test]
fn lintian_is_clean() {
    let out = run(Command::new("lintian")
        .args(["--fail-on", "warning", "--tag-display-limit", "0"])
        .arg(deb()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim().is_empty(),
        "lintian ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The script the booted container runs (as a oneshot unit), writing what
/// it sees to /out.
const IN_CONTAINER: &str = r#"#!/bin/sh
exec >/out/log 2>&1
set -x
systemctl daemon-reload
systemctl start slipway.socket
systemctl is-active slipway.socket >/out/socket-active
# The first request activates the daemon.
slipway net-list --all >/out/list-1
systemctl is-active slipway.service >/out/service-active
systemctl show -p StatusText --value slipway.service >/out/status
printf '%s\n' "<network><name>t</name><forward mode='nat'/><bridge name='swn0'/>" \
  "<ip address='10.49.0.1' prefix='24'><dhcp><range start='10.49.0.10' end='10.49.0.20'/></dhcp></ip></network>" \
  >/tmp/t.xml
slipway net-define /tmp/t.xml
slipway net-start t >/out/start 2>&1
slipway net-list --all >/out/list-2
systemctl stop slipway.service
systemctl is-active slipway.service >/out/service-stopped
# Networks outlive the daemon (KillMode=process); the next one takes them over.
ip -br addr show swn0 >/out/bridge-after-stop
slipway net-list --all >/out/list-3
slipway net-destroy t >/out/destroy 2>&1
# libvirt's sockets (README "slipway under libvirt"): with the daemon
# stopped, virsh's connection to network:///system (no socket= given: the
# path libvirt's client library picks itself) starts it again.
systemctl stop slipway.service
systemctl start slipway-virtnetworkd.socket slipway-virtnetworkd-ro.socket
systemctl is-active slipway.service >/out/service-before-virsh
stat -c '%a %U' /run/libvirt/virtnetworkd-sock /run/libvirt/virtnetworkd-sock-ro >/out/libvirt-modes
virsh -c network:///system net-list --all >/out/virsh-list 2>&1
systemctl is-active slipway.service >/out/service-after-virsh
virsh -r -c network:///system net-list --all --name >/out/virsh-ro 2>&1
setpriv --reuid=65534 --regid=65534 --clear-groups virsh -r -c network:///system net-list --all --name >/out/virsh-ro-nobody 2>&1
slipway net-list --all >/out/list-4
journalctl -u slipway.service --no-pager -o cat >/out/journal
echo done >/out/done
"#;

/// A real systemd (PID 1 of a `systemd-nspawn` container booted from this
/// machine's own /usr, with the package's /usr over it, a volatile /etc and
/// /var, and a network namespace of its own) runs the system units as
/// installed: socket activation, readiness, a network started by the
/// hardened daemon (ProtectSystem=, the capability bounding set, the system
/// call filter all in force), a stop that leaves the network up, and the
/// journal's account of it.
#[test]
fn a_real_systemd_runs_the_units() {
    let root = Root::new();
    root.install();
    let out = tempfile::tempdir().unwrap();
    let etc = tempfile::tempdir().unwrap();
    let script = etc.path().join("run-test");
    fs::write(&script, IN_CONTAINER).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let unit = etc.path().join("slipway-test.service");
    fs::write(
        &unit,
        "[Unit]\nDescription=slipway package test\nAfter=basic.target\n\
         [Service]\nType=oneshot\nExecStart=/etc/slipway-test\n\
         ExecStopPost=/bin/systemctl poweroff --no-block\n",
    )
    .unwrap();
    let usr = root.path().join("usr");
    let status = run(Command::new("timeout")
        .args([
            "300",
            "systemd-nspawn",
            "--quiet",
            "--directory=/",
            "--volatile=yes",
        ])
        .args(["--register=no", "--keep-unit", "--private-network"])
        .arg(format!("--overlay-ro=/usr:{}:/usr", usr.display()))
        .arg(format!("--bind={}:/out", out.path().display()))
        .arg(format!(
            "--bind-ro={}:/etc/systemd/system/slipway-test.service",
            unit.display()
        ))
        .arg(format!("--bind-ro={}:/etc/slipway-test", script.display()))
        .args([
            "--boot",
            "--",
            "systemd.unit=slipway-test.service",
            "systemd.firstboot=off",
        ]));
    let read = |name: &str| fs::read_to_string(out.path().join(name)).unwrap_or_default();
    assert_eq!(
        read("done").trim(),
        "done",
        "the test in the container did not finish ({}):\n{}\n{}{}",
        status.status,
        read("log"),
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    let log = read("log");
    assert_eq!(read("socket-active").trim(), "active", "{log}");
    assert_eq!(read("service-active").trim(), "active", "{log}");
    assert_eq!(
        read("status").trim(),
        "serving /run/slipway/slipway-sock",
        "{log}"
    );
    // The first run's `default` network, autostarted by the hardened daemon.
    assert!(read("list-1").contains(" default "), "{log}");
    assert_eq!(read("start"), "Network t started\n\n", "{log}");
    assert!(
        read("list-2")
            .lines()
            .any(|l| l.contains(" t ") && l.contains("active")),
        "{log}"
    );
    assert_eq!(read("service-stopped").trim(), "inactive", "{log}");
    assert!(read("bridge-after-stop").contains("10.49.0.1/24"), "{log}");
    assert_eq!(read("destroy"), "Network t destroyed\n\n", "{log}");
    assert_eq!(read("service-before-virsh").trim(), "inactive", "{log}");
    assert_eq!(read("libvirt-modes"), "600 root\n666 root\n", "{log}");
    assert_eq!(read("service-after-virsh").trim(), "active", "{log}");
    assert_eq!(read("virsh-list"), read("list-4"), "{log}");
    assert!(read("virsh-list").contains(" default "), "{log}");
    assert_eq!(read("virsh-ro"), read("virsh-ro-nobody"), "{log}");
    assert!(read("virsh-ro").contains("default\n"), "{log}");
    let journal = read("journal");
    assert!(
        journal.contains("slipway daemon stopping: SIGTERM received (running networks stay up)"),
        "{journal}"
    );
}
