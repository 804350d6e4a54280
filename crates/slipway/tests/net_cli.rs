//! End-to-end tests of `slipway net-*` and `slipway daemon` through the real
//! binary, always under `--root` (never the machine's /etc or /run), with
//! virsh's test driver (`virsh -c test:///default`, Debian package
//! libvirt-clients) as the oracle for output.

mod net_common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use net_common::*;

const ALPHA: &str = "<network>
  <name>alpha</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <bridge name='virbr5' stp='on' delay='0'/>
  <mac address='52:54:00:aa:00:05'/>
  <ip address='10.0.5.1' prefix='24'>
    <dhcp>
      <range start='10.0.5.2' end='10.0.5.100'/>
    </dhcp>
  </ip>
</network>
";

const BETA: &str = "<network>
  <name>beta-longer-name</name>
  <uuid>21111111-2222-3333-4444-555555555555</uuid>
  <forward mode='route'/>
  <bridge name='virbr6' stp='off' delay='2'/>
  <mac address='52:54:00:aa:00:06'/>
  <ip address='10.0.6.1' netmask='255.255.255.0'>
  </ip>
</network>
";

const GAMMA: &str = "<network>
  <name>Gamma</name>
  <uuid>31111111-2222-3333-4444-555555555555</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr7' stp='on' delay='0'/>
  <mac address='52:54:00:aa:00:07'/>
  <domain name='gamma.test'/>
  <ip address='10.0.7.1' prefix='24'>
    <dhcp>
      <range start='10.0.7.2' end='10.0.7.254'/>
      <host mac='52:54:00:00:07:01' name='one' ip='10.0.7.11'/>
    </dhcp>
  </ip>
</network>
";

#[test]
fn output_matches_virsh_test_driver() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    write(root, "beta.xml", BETA);
    write(root, "gamma.xml", GAMMA);
    write(
        root,
        "alpha-other-uuid.xml",
        &ALPHA.replace("11111111-", "91111111-"),
    );
    // Same name, no UUID: refused, not a silent replacement.
    write(
        root,
        "alpha-no-uuid.xml",
        &ALPHA.replace("  <uuid>11111111-2222-3333-4444-555555555555</uuid>\n", ""),
    );
    write(
        root,
        "dup-uuid.xml",
        &ALPHA.replace("<name>alpha", "<name>other"),
    );
    // Give our default network the test driver's: same definition, running,
    // not autostarted.
    let vdefault = virsh(root, "net-dumpxml default").stdout;
    write(root, "vdefault.xml", vdefault.trim_end());
    ok(root, &["net-define", "vdefault.xml"]);
    ok(root, &["net-start", "default"]);

    let host = "<host mac=\"52:54:00:00:07:02\" name=\"two\" ip=\"10.0.7.12\"/>";
    let script: Vec<Vec<&str>> = vec![
        vec!["net-list"],
        vec!["net-define", "alpha.xml"],
        vec!["net-define", "gamma.xml"],
        vec!["net-create", "beta.xml"],
        vec!["net-start", "Gamma"],
        vec!["net-create", "beta.xml"],
        vec!["net-autostart", "Gamma"],
        vec!["net-list"],
        vec!["net-list", "--all"],
        vec!["net-list", "--inactive"],
        vec!["net-list", "--persistent"],
        vec!["net-list", "--transient", "--all"],
        vec!["net-list", "--autostart", "--all"],
        vec!["net-list", "--no-autostart", "--all"],
        vec!["net-list", "--persistent", "--transient", "--inactive"],
        vec!["net-list", "--name", "--all"],
        vec!["net-list", "--uuid", "--all"],
        vec!["net-list", "--name", "--uuid"],
        vec!["net-info", "alpha"],
        vec!["net-info", "beta-longer-name"],
        vec!["net-info", "31111111-2222-3333-4444-555555555555"],
        vec!["net-uuid", "alpha"],
        vec!["net-name", "21111111-2222-3333-4444-555555555555"],
        vec!["net-dumpxml", "alpha"],
        vec!["net-dumpxml", "beta-longer-name"],
        vec!["net-dumpxml", "Gamma"],
        vec!["net-start", "Gamma"],
        vec!["net-info", "nope"],
        vec!["net-name", "nope"],
        vec!["net-name", "41111111-2222-3333-4444-555555555555"],
        vec!["net-uuid", "11111111-2222-3333-4444-555555555555"],
        vec!["net-destroy", "nope"],
        vec!["net-define", "alpha-other-uuid.xml"],
        vec!["net-define", "alpha-no-uuid.xml"],
        vec!["net-dumpxml", "alpha"],
        vec!["net-define", "dup-uuid.xml"],
        vec!["net-define", "missing.xml"],
        vec![
            "net-update",
            "Gamma",
            "add-first",
            "ip-dhcp-host",
            host,
            "--live",
        ],
        vec!["net-update", "Gamma", "add", "ip-dhcp-host", host],
        vec!["net-dumpxml", "Gamma"],
        vec!["net-update", "Gamma", "delete", "ip-dhcp-host", host],
        vec!["net-update", "Gamma", "delete", "ip-dhcp-host", host],
        vec!["net-update", "Gamma", "frob", "ip-dhcp-host", host],
        // virsh's named forms of the positional arguments.
        vec!["net-info", "--network", "Gamma"],
        vec![
            "net-update",
            "--xml",
            "<host ip=\"10.0.7.70\"><hostname>named</hostname></host>",
            "--section",
            "dns-host",
            "--network",
            "Gamma",
            "--command",
            "add-last",
        ],
        vec!["net-dumpxml", "--network", "Gamma"],
        vec!["net-update", "Gamma", "add", "bogus", host],
        vec!["net-update", "Gamma", "add", "ip-dhcp-host", "<a/>"],
        vec![
            "net-update",
            "Gamma",
            "modify",
            "ip-dhcp-range",
            "<range start=\"10.0.7.2\" end=\"10.0.7.9\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "delete",
            "ip-dhcp-range",
            "<range start=\"10.0.7.3\" end=\"10.0.7.9\"/>",
        ],
        vec!["net-dumpxml", "Gamma"],
        vec![
            "net-update",
            "Gamma",
            "add",
            "dns-host",
            "<host ip=\"10.0.7.50\"><hostname>web</hostname></host>",
        ],
        vec![
            "net-update",
            "Gamma",
            "add",
            "dns-host",
            "<host ip=\"10.0.7.51\"><hostname>web</hostname></host>",
        ],
        vec![
            "net-update",
            "Gamma",
            "add",
            "dns-host",
            "<host ip=\"10.0.7.51\"><hostname>other</hostname></host>",
        ],
        vec![
            "net-update",
            "Gamma",
            "delete",
            "dns-host",
            "<host ip=\"10.0.7.60\"><hostname>web</hostname></host>",
        ],
        vec![
            "net-update",
            "Gamma",
            "delete",
            "dns-host",
            "<host ip=\"10.0.7.50\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "delete",
            "dns-host",
            "<host ip=\"10.0.7.50\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "modify",
            "dns-host",
            "<host ip=\"10.0.7.50\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "add",
            "ip-dhcp-range",
            "<range start=\"10.0.7.2\" end=\"10.0.7.254\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "add-first",
            "ip-dhcp-range",
            "<range start=\"10.0.7.2\" end=\"10.0.7.9\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "modify",
            "ip-dhcp-host",
            "<host mac=\"52:54:00:00:07:77\" ip=\"10.0.7.77\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "add",
            "ip-dhcp-host",
            "<host mac=\"52:54:00:00:07:01\" ip=\"10.0.7.99\"/>",
        ],
        vec![
            "net-update",
            "Gamma",
            "modify",
            "ip-dhcp-host",
            "<host mac=\"52:54:00:00:07:01\" name=\"uno\" ip=\"10.0.7.11\"/>",
        ],
        vec!["net-dumpxml", "Gamma"],
        vec!["net-destroy", "Gamma"],
        vec!["net-autostart", "Gamma", "--disable"],
        vec!["net-start", "31111111-2222-3333-4444-555555555555"],
        vec!["net-destroy", "Gamma"],
        vec!["net-create", "alpha.xml"],
        vec!["net-list", "--all"],
        vec!["net-destroy", "alpha"],
        vec!["net-undefine", "alpha"],
        vec!["net-destroy", "beta-longer-name"],
        vec!["net-list", "--all"],
    ];
    let (expected, stdout, stderr) = virsh_and_sw_script(root, &script);
    // The oracle really ran the whole script.
    assert!(
        expected
            .stdout
            .contains("Network beta-longer-name destroyed\n"),
        "{expected:?}"
    );
    assert_eq!(stdout, expected.stdout, "stdout differs from virsh");
    assert_eq!(stderr, expected.stderr, "stderr differs from virsh");
}

#[test]
fn exit_status_is_one_on_error_and_messages_name_the_problem() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = sw(root, &["net-start", "nope"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "error: failed to get network 'nope'\nerror: Network not found: no network with matching name 'nope'\n");
    // Every validation rule surfaces through the CLI with its message, and
    // nothing is written.
    let cases: &[(&str, &str)] = &[
        ("<network><name>r</name><ip address='10.1.0.1' prefix='24'><dhcp><range start='10.2.0.2' end='10.2.0.9'/></dhcp></ip></network>", "range is not entirely within network"),
        ("<network><name>a/b</name></network>", "'a/b': name cannot contain '/'"),
        ("<network><name></name></network>", "non-empty name"),
        ("<network><name>m</name><mac address='zz'/></network>", "/network/mac/@address = 'zz'"),
        ("<network><name>x</name><ip address='10.1.0.1' netmask='255.0.255.0'/></network>", "netmask must be contiguous"),
        ("<network><name>x</name>\n<ip address='10.1.0.1' prefix='24'>\n</network>", "line 3, column 1"),
        ("<network><name>o</name><forward mode='open' dev='eth0'/><ip address='10.3.0.1' prefix='24'/></network>", "forward dev not allowed"),
        ("<network><name>h</name><ip address='10.1.0.1' prefix='24'><dhcp><host mac='52:54:00:00:00:01' ip='10.1.0.1'/></dhcp></ip></network>", "static host IP is the network's own address"),
        ("<network><name>d</name><ip address='10.1.0.1' prefix='24'><dhcp><range start='10.1.0.2' end='10.1.0.9'/></dhcp></ip><ip address='10.4.0.1' prefix='24'><dhcp><range start='10.4.0.2' end='10.4.0.9'/></dhcp></ip></network>", "multiple IPv4 dhcp sections"),
        ("<network><name>b</name><forward mode='bridge'/><bridge name='br0' stp='on'/></network>", "not in bridge"),
        ("<network><name>.hidden</name></network>", "must not start with '.'"),
        // nft injection through a device name (issue 12): refused at define.
        ("<network><name>p</name><forward mode='nat' dev='eth0&quot; accept; add table inet pwned; #'/><ip address='10.5.0.1' prefix='24'/></network>",
         "/network/forward/@dev 'eth0\\\" accept; add table inet pwned; #': invalid interface name: 37 bytes long, at most 15 allowed"),
        ("<network><name>q</name><bridge name='br0&quot; #'/></network>", "/network/bridge/@name 'br0\\\" #': invalid interface name: must not contain white space"),
    ];
    let count = || {
        std::fs::read_dir(config_dir(root))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = count();
    for (i, (xml, msg)) in cases.iter().enumerate() {
        let f = format!("bad{i}.xml");
        write(root, &f, xml);
        let r = sw(root, &["net-define", &f]);
        assert_eq!(r.code, 1, "{xml} was accepted: {r:?}");
        assert!(
            r.stderr.starts_with(&format!(
                "error: Failed to define network from {f}\nerror: "
            )),
            "{r:?}"
        );
        assert!(
            r.stderr.contains(msg),
            "{xml}: expected '{msg}' in {}",
            r.stderr
        );
        let c = sw(root, &["net-create", &f]);
        assert_eq!(c.code, 1, "{xml} was created: {c:?}");
    }
    assert_eq!(count(), before, "a bad definition left a file");
    assert!(!root.join("etc/slipway/networks/a").exists());
    assert!(
        state_dir(root).read_dir().map(|d| d.count()).unwrap_or(0) == 0,
        "nothing may be running"
    );
    // Unknown elements: a warning by default, refused with --validate.
    write(
        root,
        "unknown.xml",
        "<network><name>u</name><foo/></network>",
    );
    let r = sw(root, &["net-define", "--validate", "unknown.xml"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("unknown element or attribute /network/foo"),
        "{r:?}"
    );
    let r = sw(root, &["net-define", "unknown.xml"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr
            .contains("warning: unknown element or attribute /network/foo ignored"),
        "{r:?}"
    );
}

#[test]
fn undefining_an_active_network_makes_it_transient() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    ok(root, &["net-define", "alpha.xml"]);
    ok(root, &["net-autostart", "alpha"]);
    ok(root, &["net-start", "alpha"]);
    assert_eq!(
        ok(root, &["net-undefine", "alpha"]),
        "Network alpha has been undefined\n\n"
    );
    let info = ok(root, &["net-info", "alpha"]);
    assert!(
        info.contains("Active:         yes\nPersistent:     no\nAutostart:      no\n"),
        "{info}"
    );
    assert!(!config_dir(root).join("alpha.xml").exists());
    assert!(!config_dir(root).join("autostart/alpha.xml").exists());
    // The live definition is still there; transient networks refuse
    // autostart and undefine, as libvirt's network driver does.
    assert!(ok(root, &["net-dumpxml", "alpha"]).contains("<name>alpha</name>"));
    let r = sw(root, &["net-autostart", "alpha"]);
    assert_eq!(r.stderr, "error: failed to mark network alpha as autostarted\nerror: Requested operation is not valid: cannot set autostart for transient network\n");
    let r = sw(root, &["net-undefine", "alpha"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not persistent"), "{r:?}");
    ok(root, &["net-destroy", "alpha"]);
    assert_eq!(
        sw(root, &["net-info", "alpha"]).code,
        1,
        "a destroyed transient network is gone"
    );
    // Only the Linux backend's directory is left, holding no record or
    // service configuration of the network (its leases and log stay, as
    // libvirt keeps dnsmasq's).
    let names = |dir: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(state_dir(root)), ["hostnet"]);
    let kept = names(state_dir(root).join("hostnet"));
    assert!(
        kept.iter()
            .all(|n| n == "alpha.leases" || n == "alpha.service.log"),
        "{kept:?}"
    );
}

#[test]
fn corrupted_definition_is_reported_by_path_without_hiding_others() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    ok(root, &["net-define", "alpha.xml"]);
    let bad = config_dir(root).join("broken.xml");
    std::fs::write(&bad, "<network><name>broken</name><ip address='10.9").unwrap();
    let wrong = config_dir(root).join("misnamed.xml");
    std::fs::write(
        &wrong,
        ALPHA
            .replace("alpha", "zeta")
            .replace("11111111-", "81111111-"),
    )
    .unwrap();
    let r = sw(root, &["net-list", "--all", "--name"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "alpha\n\n");
    assert!(
        r.stderr
            .contains(&format!("warning: cannot read {}: ", bad.display())),
        "{r:?}"
    );
    assert!(
        r.stderr.contains(&format!(
            "warning: cannot read {}: the file defines network 'zeta', not 'misnamed'",
            wrong.display()
        )),
        "{r:?}"
    );
    let r = sw(root, &["net-info", "broken"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("corrupted file {}", bad.display())),
        "{r:?}"
    );
    // A damaged live status is reported the same way; the definition stays usable.
    ok(root, &["net-start", "alpha"]);
    let status = state_dir(root).join("alpha.json");
    std::fs::write(&status, "{\"network\": ").unwrap();
    let r = sw(root, &["net-list", "--all", "--name"]);
    assert!(
        r.stderr
            .contains(&format!("warning: cannot read {}: ", status.display())),
        "{r:?}"
    );
    assert!(r.stdout.contains("alpha\n"), "{r:?}");
    // Redefining it from good XML repairs it.
    write(
        root,
        "broken-fixed.xml",
        "<network><name>broken</name></network>",
    );
    ok(root, &["net-define", "broken-fixed.xml"]);
    assert_eq!(sw(root, &["net-info", "broken"]).code, 0);
}

#[test]
fn racing_commands_leave_consistent_state() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    ok(&root, &["net-list"]);
    for i in 0..4 {
        let xml = format!(
            "<network><name>n{i}</name><uuid>0000000{i}-2222-3333-4444-555555555555</uuid><ip address='10.{i}.0.1' prefix='24'/></network>"
        );
        write(&root, &format!("n{i}.xml"), &xml);
    }
    // Many processes defining, undefining, starting and stopping the same
    // four networks at once: every command either succeeds or fails with a
    // clean state error, never with a corrupted file.
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                for k in 0..12 {
                    let n = format!("n{}", (t + k) % 4);
                    let f = format!("{n}.xml");
                    let args: Vec<&str> = match (t + k) % 5 {
                        0 | 3 => vec!["net-define", &f],
                        1 => vec!["net-start", &n],
                        2 => vec!["net-destroy", &n],
                        _ => vec!["net-undefine", &n],
                    };
                    let r = sw(&root, &args);
                    if r.code != 0 {
                        assert!(
                            r.stderr.contains("Network not found")
                                || r.stderr.contains("already running")
                                || r.stderr.contains("is not active")
                                || r.stderr.contains("is not persistent"),
                            "{args:?}: {r:?}"
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = sw(&root, &["net-list", "--all", "--name"]);
    assert_eq!(r.stderr, "", "unreadable files after the race");
    for name in r.stdout.lines().filter(|l| !l.is_empty()) {
        ok(&root, &["net-dumpxml", name]);
    }
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));

    // Eight processes defining one new name with eight different UUIDs:
    // exactly one wins, the others are told the name is taken.
    for i in 0..8 {
        write(&root, &format!("same{i}.xml"), &format!("<network><name>same</name><uuid>5555555{i}-2222-3333-4444-555555555555</uuid></network>"));
    }
    let children: Vec<Child> = (0..8)
        .map(|i| {
            Command::new(BIN)
                .arg("--root")
                .arg(&root)
                .args(["net-define", &format!("same{i}.xml")])
                .current_dir(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let results: Vec<Run> = children
        .into_iter()
        .map(|c| text(c.wait_with_output().unwrap()))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.code == 0).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter(|r| r.code != 0) {
        assert!(
            r.stderr
                .contains("operation failed: network 'same' already exists with uuid 5555555"),
            "{r:?}"
        );
    }
}

/// Waits (at most 30 s) until the daemon under `root` counts `n` event
/// subscribers.
#[test]
fn daemon_streams_events_like_virsh() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = sw(root, &["net-event", "--timeout", "1"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("net-event needs the slipway daemon"),
        "{r:?}"
    );
    // Asked for under --root, the default network is autostarted.
    ok(root, &["net-define-default"]);
    let _d = Daemon::start(root);
    assert!(ok(root, &["net-list"]).contains(" default   active   yes         yes\n"));
    assert_eq!(ok(root, &["net-event", "--list"]), "lifecycle\n\n");
    let mut ev = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(["net-event", "--loop", "--event", "lifecycle"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_subscribers(root, 1);
    write(root, "alpha.xml", ALPHA);
    ok(root, &["net-define", "alpha.xml"]);
    ok(root, &["net-start", "alpha"]);
    ok(
        root,
        &["net-destroy", "11111111-2222-3333-4444-555555555555"],
    );
    ok(root, &["net-undefine", "alpha"]);
    let mut lines = BufReader::new(ev.stdout.take().unwrap()).lines();
    let got: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    assert_eq!(
        got,
        [
            "event 'lifecycle' for network alpha: Defined",
            "event 'lifecycle' for network alpha: Started",
            "event 'lifecycle' for network alpha: Stopped",
            "event 'lifecycle' for network alpha: Undefined",
        ]
    );
    // Ctrl-C ends the loop as virsh's does.
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(ev.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest, ["event loop interrupted", "events received: 4", ""]);
    assert!(ev.wait().unwrap().success());
    // One-shot with a network filter: the first matching event ends it.
    // The previous subscriber has exited; the daemon notices within its
    // peer check (a second): only then does a count of 1 mean the new one.
    wait_for_subscribers(root, 0);
    let one = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(["net-event", "--network", "default", "--timeout", "600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_subscribers(root, 1);
    ok(root, &["net-define", "alpha.xml"]);
    ok(root, &["net-destroy", "default"]);
    let r = text(one.wait_with_output().unwrap());
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout,
        "event 'lifecycle' for network default: Stopped\nevents received: 1\n\n"
    );
    // --timestamp prefixes virsh's UTC timestamp.
    // The previous subscriber has exited; the daemon notices within its
    // peer check (a second): only then does a count of 1 mean the new one.
    wait_for_subscribers(root, 0);
    let stamped = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(["net-event", "--timestamp", "--timeout", "600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_subscribers(root, 1);
    ok(root, &["net-undefine", "alpha"]);
    let r = text(stamped.wait_with_output().unwrap());
    let today = text(Command::new("date").args(["-u", "+%F"]).output().unwrap()).stdout;
    let line = r.stdout.lines().next().unwrap();
    let (stamp, rest) = line.split_once(": ").unwrap();
    assert_eq!(rest, "event 'lifecycle' for network alpha: Undefined");
    assert_eq!(stamp.len(), "2026-10-07 12:47:14.828+0000".len(), "{line}");
    assert!(
        stamp.ends_with("+0000") && stamp.as_bytes()[19] == b'.',
        "{line}"
    );
    // Only the date: the test may run across midnight, but not across a day.
    assert!(
        stamp.starts_with(today.trim()) || stamp < today.trim(),
        "{line} vs {today}"
    );
    // A timeout with nothing received: virsh's text and status 1.
    let r = sw(root, &["net-event", "--timeout", "1"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (1, "event loop timed out\nevents received: 0\n\n")
    );
}

#[test]
fn daemon_killed_mid_operation_recovers_state() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    ok(&root, &["net-define-default"]);
    let mut d = Daemon::start(&root);
    for i in 0..3 {
        let xml =
            format!("<network><name>k{i}</name><ip address='10.{i}.9.1' prefix='24'/></network>");
        write(&root, &format!("k{i}.xml"), &xml);
        ok(&root, &["net-define", &format!("k{i}.xml")]);
        ok(&root, &["net-start", &format!("k{i}")]);
    }
    ok(&root, &["net-autostart", "k2"]);
    ok(&root, &["net-destroy", "k2"]);
    // Keep the daemon busy with writes, and kill it while they run.
    let busy = {
        let root = root.clone();
        std::thread::spawn(move || {
            for j in 0..40 {
                let f = format!("busy{}.xml", j % 5);
                write(
                    &root,
                    &f,
                    &format!("<network><name>busy{}</name></network>", j % 5),
                );
                let _ = sw(&root, &["net-define", &f]);
            }
        })
    };
    while !config_dir(&root).join("busy1.xml").exists() {
        std::thread::yield_now();
    }
    d.kill9();
    busy.join().unwrap();
    // What a crash in the middle of a write or a start leaves behind.
    std::fs::write(config_dir(&root).join(".tmp-4242-k0.xml"), "<network><na").unwrap();
    std::fs::write(
        state_dir(&root).join("ghost.xml"),
        "<network><name>ghost</name></network>",
    )
    .unwrap();
    let _d2 = Daemon::start(&root);
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));
    assert!(!state_dir(&root).join("ghost.xml").exists());
    let r = sw(&root, &["net-list", "--all"]);
    assert_eq!(r.stderr, "");
    // The running networks survived, and autostart brought k2 back up.
    for (name, autostart) in [
        ("default", "yes"),
        ("k0", "no"),
        ("k1", "no"),
        ("k2", "yes"),
    ] {
        let info = ok(&root, &["net-info", name]);
        let want =
            format!("Active:         yes\nPersistent:     yes\nAutostart:      {autostart}\n");
        assert!(info.contains(&want), "{name}: {info}");
    }
    for name in ok(&root, &["net-list", "--all", "--name"])
        .lines()
        .filter(|l| !l.is_empty())
    {
        ok(&root, &["net-dumpxml", name]);
    }
}

#[test]
fn daemon_refuses_changes_from_other_users() {
    enter_netns!(Ns::Root);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok(root, &["net-define-default"]);
    let _d = Daemon::start(root);
    write(root, "alpha.xml", ALPHA);
    std::fs::set_permissions(
        root.join("alpha.xml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| sw_as(65534, root, args);
    let r = as_nobody(&["net-list", "--name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "default\n\n"), "{r:?}");
    let r = as_nobody(&["net-define", "alpha.xml"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("access denied: uid 65534 may not change networks"),
        "{r:?}"
    );
    assert!(!config_dir(root).join("alpha.xml").exists());
    // A request that is not JSON gets an error line; the connection and the
    // daemon carry on.
    let v = raw(root, "this is not json").unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("daemon protocol error: bad request"),
        "{v}"
    );
    assert!(status(root).is_some());
    // An endless line is cut off with an error, not buffered.
    let s = UnixStream::connect(root.join("run/slipway/slipway-sock")).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..2 {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    writer.join().unwrap();
    assert!(
        reply.contains("request longer than 1048576 bytes"),
        "{reply}"
    );
    assert!(status(root).is_some());
}

#[test]
fn per_user_daemon_socket_is_private() {
    enter_netns!(Ns::Root);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("user");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
    let _d = Daemon::start_as(&root, &["--reuid=65534", "--regid=65534", "--clear-groups"]);
    let sock = std::fs::metadata(root.join("run/slipway/slipway-sock")).unwrap();
    assert_eq!((sock.mode() & 0o777, sock.uid()), (0o600, 65534));
    // The definitions belong to the user who runs the daemon.
    ok(&root, &["net-define-default"]);
    assert_eq!(
        std::fs::metadata(config_dir(&root).join("default.xml"))
            .unwrap()
            .uid(),
        65534
    );
    // Root may still manage them through the daemon.
    write(&root, "alpha.xml", ALPHA);
    ok(&root, &["net-define", "alpha.xml"]);
    assert_eq!(
        std::fs::metadata(config_dir(&root).join("alpha.xml"))
            .unwrap()
            .uid(),
        65534
    );
    // Another user cannot even connect, and has no write access without it.
    let r = sw_as(65533, &root, &["net-undefine", "alpha"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{r:?}");
    assert!(config_dir(&root).join("alpha.xml").exists());
}

#[test]
fn net_update_sections_and_flags() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gamma.xml", GAMMA);
    ok(root, &["net-define", "gamma.xml"]);
    let up = |args: &[&str]| sw(root, &[&["net-update", "Gamma"], args].concat());
    // Inactive: the persistent config by default.
    let r = up(&[
        "add-last",
        "dns-host",
        "<host ip='10.0.7.50'><hostname>web</hostname></host>",
    ]);
    assert_eq!(r.stdout, "Updated network Gamma persistent config\n");
    let r = up(&[
        "add",
        "dns-host",
        "<host ip='10.0.7.50'><hostname>other</hostname></host>",
    ]);
    assert!(
        r.stderr.contains(
            "there is already at least one DNS HOST record with a matching field in network Gamma"
        ),
        "{r:?}"
    );
    // XML from a file, as virsh: anything not starting with '<' is a path.
    write(
        root,
        "range.xml",
        "<range start='10.0.7.100' end='10.0.7.120'/>",
    );
    ok(
        root,
        &[
            "net-update",
            "Gamma",
            "add-first",
            "ip-dhcp-range",
            "range.xml",
            "--config",
        ],
    );
    up(&["modify", "domain", "<domain name='new.test'/>"]);
    up(&["modify", "forward", "<forward mode='route'/>"]);
    up(&["modify", "bridge", "<bridge name='virbr9' stp='off'/>"]);
    let xml = ok(root, &["net-dumpxml", "Gamma"]);
    for want in [
        "<forward mode='route'/>",
        "<bridge name='virbr9' stp='off' delay='0'/>",
        "<domain name='new.test'/>",
        "<range start='10.0.7.100' end='10.0.7.120'/>\n      <range start='10.0.7.2'",
        "<host ip='10.0.7.50'>\n      <hostname>web</hostname>",
    ] {
        assert!(xml.contains(want), "{want} missing in\n{xml}");
    }
    // A range outside the subnet breaks validation: nothing changes.
    let r = up(&[
        "add",
        "ip-dhcp-range",
        "<range start='10.9.9.2' end='10.9.9.9'/>",
    ]);
    assert!(
        r.stderr.contains("range is not entirely within network"),
        "{r:?}"
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(ok(root, &["net-dumpxml", "Gamma"]), xml);
    // --live needs a running network; once running, live and config split.
    let r = up(&[
        "add",
        "ip-dhcp-host",
        "<host mac='52:54:00:00:07:03' ip='10.0.7.13'/>",
        "--live",
    ]);
    assert!(r.stderr.contains("network 'Gamma' is not running"), "{r:?}");
    ok(root, &["net-start", "Gamma"]);
    let r = up(&[
        "add",
        "ip-dhcp-host",
        "<host mac='52:54:00:00:07:03' ip='10.0.7.13'/>",
        "--live",
        "--config",
    ]);
    assert_eq!(
        r.stdout,
        "Updated network Gamma persistent config and live state\n"
    );
    let r = up(&[
        "delete",
        "ip-dhcp-host",
        "<host mac='52:54:00:00:07:03'/>",
        "--config",
    ]);
    assert_eq!(r.stdout, "Updated network Gamma persistent config\n");
    assert!(ok(root, &["net-dumpxml", "Gamma"]).contains("52:54:00:00:07:03"));
    assert!(!ok(root, &["net-dumpxml", "--inactive", "Gamma"]).contains("52:54:00:00:07:03"));
    let r = up(&["modify", "bridge", "<bridge name='virbr8'/>", "--live"]);
    assert!(
        r.stderr
            .contains("can't update 'bridge' section of running network 'Gamma'"),
        "{r:?}"
    );
    let r = up(&[
        "modify",
        "ip-dhcp-host",
        "<host mac='52:54:00:00:07:01' name='renamed' ip='10.0.7.11'/>",
    ]);
    assert_eq!(r.stdout, "Updated network Gamma live state\n");
    assert!(ok(root, &["net-dumpxml", "Gamma"]).contains("name='renamed'"));
    let r = up(&[
        "add",
        "dns-txt",
        "<txt name='a' value='b'/>",
        "--current",
        "--live",
    ]);
    assert_eq!(
        r.stderr,
        "error: Options --current and --live are mutually exclusive\n"
    );
    let r = up(&["add", "dns-txt", "<txt name='a' value='b'/>"]);
    assert!(
        r.stderr
            .contains("can't update 'dns-txt' section of network 'Gamma'"),
        "{r:?}"
    );
}

#[test]
fn net_edit_revalidates_and_changes_nothing_on_error() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    ok(root, &["net-define", "alpha.xml"]);
    let edit = |editor: &str| {
        text(
            Command::new(BIN)
                .arg("--root")
                .arg(root)
                .args(["net-edit", "alpha"])
                .env("EDITOR", editor)
                .env_remove("VISUAL")
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    };
    let r = edit("true");
    assert_eq!(r.stdout, "Network alpha XML configuration not changed.\n\n");
    let before = ok(root, &["net-dumpxml", "alpha"]);
    let r = edit("sed -i s/10.0.5.100/10.0.5.300/");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("10.0.5.300"), "{r:?}");
    assert_eq!(ok(root, &["net-dumpxml", "alpha"]), before);
    // On a terminal, virsh's retry prompt: "n" gives up, nothing changes.
    let script_cmd = format!("{BIN} --root {} net-edit alpha", root.display());
    let mut tty = Command::new("script")
        .args(["-qec", &script_cmd, "/dev/null"])
        .env("EDITOR", "sed -i s/10.0.5.100/10.0.5.300/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (Debian package bsdutils)");
    tty.stdin.take().unwrap().write_all(b"?\nn\n").unwrap();
    let r = text(tty.wait_with_output().unwrap());
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stdout.matches("Failed. Try again? [y,n,i,f,?]: ").count(),
        2,
        "{r:?}"
    );
    assert!(r.stdout.contains("y - yes, start editor again"), "{r:?}");
    assert_eq!(ok(root, &["net-dumpxml", "alpha"]), before);
    let r = edit("sed -i s/10.0.5.100/10.0.5.200/");
    assert_eq!(
        r.stdout, "Network alpha XML configuration edited.\n\n",
        "{r:?}"
    );
    assert!(ok(root, &["net-dumpxml", "alpha"]).contains("end='10.0.5.200'"));
}

#[test]
fn dry_run_plan_runs_in_a_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gamma.xml", GAMMA);
    ok(root, &["net-define", "gamma.xml"]);
    let plan = ok(root, &["net-start", "--dry-run", "Gamma"]);
    assert!(plan.starts_with("ip link add virbr7 address 52:54:00:aa:00:07 type bridge stp_state 1 forward_delay 0\n"), "{plan}");
    assert!(plan.contains(
        "dhcp-dns on virbr7 listen 10.0.7.1; range 10.0.7.2-10.0.7.254/24 lease 3600s; host 52:54:00:00:07:01,10.0.7.11,one; router 10.0.7.1; domain gamma.test; upstream host resolvers\n"
    ), "{plan}");
    // Dry run changes nothing.
    assert!(ok(root, &["net-info", "Gamma"]).contains("Active:         no"));
    // Every command line of the plan works for real, in a namespace of our own.
    let cmds: String = plan
        .lines()
        .filter(|l| l.starts_with("ip ") || l.starts_with("nft ") || l.starts_with("sysctl "))
        .map(|l| format!("{l} >/dev/null\n"))
        .collect();
    write(
        root,
        "plan.sh",
        &format!("set -e\n{cmds}nft list table ip slipway_network\nip -br addr show virbr7\n"),
    );
    let r = text(
        Command::new("unshare")
            .args(["-Urn", "sh"])
            .arg(root.join("plan.sh"))
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("ip saddr 10.0.7.0/24 ip daddr != 10.0.7.0/24 meta l4proto tcp counter packets 0 bytes 0 masquerade to :1024-65535"), "{}", r.stdout);
    assert!(r.stdout.contains("10.0.7.1/24"), "{}", r.stdout);
    let json = ok(root, &["net-start", "--dry-run", "--json", "Gamma"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["network"], "Gamma");
    assert_eq!(v["actions"][0]["kind"], "create-bridge");
}

#[test]
fn default_network_avoids_a_routed_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = format!(
        "set -e; ip link set lo up; ip route add 192.168.122.0/24 dev lo; \
         {BIN} --root {r} net-define-default; {BIN} --root {r} net-dumpxml default",
        r = root.display()
    );
    let r = text(
        Command::new("unshare")
            .args(["-Urn", "sh", "-c", &script])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("<ip address='192.168.123.1' netmask='255.255.255.0'>"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("<range start='192.168.123.2' end='192.168.123.254'/>"),
        "{r:?}"
    );
    assert!(r.stderr.contains("192.168.122.0/24 is already in use on this host: the default network uses 192.168.123.0/24 instead"), "{r:?}");
    // The default network as shipped: virbr0 (free in that namespace), nat,
    // autostart.
    let info = ok(root, &["net-info", "default"]);
    assert!(info.ends_with("Active:         no\nPersistent:     yes\nAutostart:      yes\nBridge:         virbr0\n\n"), "{info}");
}

#[test]
fn json_output_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ok(root, &["net-define-default"]);
    let v: serde_json::Value =
        serde_json::from_str(&ok(root, &["net-list", "--all", "--json"])).unwrap();
    assert_eq!(v[0]["name"], "default");
    assert_eq!(v[0]["autostart"], true);
    assert_eq!(v[0]["active"], false);
    let v: serde_json::Value =
        serde_json::from_str(&ok(root, &["net-info", "--json", "default"])).unwrap();
    assert_eq!(v["bridge"], "virbr0");
    assert_eq!(v["persistent"], true);
}

#[test]
fn per_user_mode_uses_the_xdg_directories() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    // No --root: a non-root user gets the per-user locations.
    let as_user = |runtime: Option<&Path>| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "net-list",
            "--all",
            "--name",
        ])
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_RUNTIME_DIR");
        if let Some(r) = runtime {
            c.env("XDG_RUNTIME_DIR", r);
        }
        text(c.output().unwrap())
    };
    let rt = home.join("rt");
    let r = as_user(Some(&rt));
    assert_eq!((r.code, r.stdout.as_str()), (0, "default\n\n"), "{r:?}");
    assert!(home.join(".config/slipway/networks/default.xml").exists());
    assert!(home
        .join(".config/slipway/networks/autostart/default.xml")
        .exists());
    assert!(rt.join("slipway/lock").exists());
    let r = as_user(None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(home.join(".cache/slipway/lock").exists());
}

/// A definition rewritten on a full filesystem: the command fails naming
/// the file and the cause, the old definition stays whole, no temporary
/// file is left, and once there is room again the same command works. The
/// filesystem is a 1 MiB tmpfs mounted in a mount namespace of the test's
/// own (all of it happens inside one `unshare -m` shell, which reports back
/// through files outside the tmpfs).
#[test]
fn full_disk_during_define_keeps_the_old_definition() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let root = out.join("root");
    std::fs::create_dir(&root).unwrap();
    write(out, "alpha.xml", ALPHA);
    // The same network with room for more: the rewrite needs new blocks.
    let hosts: String = (0..40)
        .map(|i| {
            format!(
                "      <host mac='52:54:00:00:05:{i:02x}' name='h{i}' ip='10.0.5.{}'/>\n",
                150 + i
            )
        })
        .collect();
    write(
        out,
        "alpha2.xml",
        &ALPHA.replace("    </dhcp>", &format!("{hosts}    </dhcp>")),
    );
    let config = config_dir(&root);
    let script = format!(
        "set -u
         mount -t tmpfs -o size=1m tmpfs {root} || exit 90
         {bin} --root {root} net-define {out}/alpha.xml > /dev/null || exit 91
         {bin} --root {root} net-dumpxml alpha > {out}/before.xml || exit 92
         dd if=/dev/zero of={root}/filler bs=4k 2> /dev/null
         {bin} --root {root} net-define {out}/alpha2.xml > {out}/full.out 2> {out}/full.err
         echo $? > {out}/full.code
         {bin} --root {root} net-dumpxml alpha > {out}/after.xml 2>&1
         ls -A {config} > {out}/files
         rm {root}/filler
         {bin} --root {root} net-define {out}/alpha2.xml > /dev/null 2> {out}/roomy.err
         echo $? > {out}/roomy.code
         {bin} --root {root} net-dumpxml alpha > {out}/roomy.xml",
        root = root.display(),
        bin = BIN,
        out = out.display(),
        config = config.display(),
    );
    let status = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .status()
        .expect("unshare -m");
    assert!(status.success(), "setup failed: {status}");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    assert_eq!(read("full.code").trim(), "1", "{}", read("full.err"));
    let err = read("full.err");
    assert!(
        err.contains("No space left on device") && err.contains(&config.display().to_string()),
        "{err}"
    );
    assert_eq!(
        read("after.xml"),
        read("before.xml"),
        "old definition damaged"
    );
    let files = read("files");
    assert!(!files.contains(".tmp-"), "temporary file left: {files}");
    assert_eq!(read("roomy.code").trim(), "0", "{}", read("roomy.err"));
    assert!(
        read("roomy.xml").contains("name='h39'"),
        "{}",
        read("roomy.xml")
    );
}

/// A definition file its reader may not read (root's, mode 000, read by
/// `nobody`): a warning naming the file and the cause, the other networks
/// still listed, and a clear error when that network is asked for.
#[test]
fn unreadable_definition_is_reported_by_path_without_hiding_others() {
    enter_netns!(Ns::Root);
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "alpha.xml", ALPHA);
    write(root, "beta.xml", BETA);
    ok(root, &["net-define", "alpha.xml"]);
    ok(root, &["net-define", "beta.xml"]);
    // Everything open to everyone but the one file.
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let dir = p.is_dir();
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(if dir { 0o777 } else { 0o666 }),
        )
        .unwrap();
        if dir {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    let beta = config_dir(root).join("beta-longer-name.xml");
    std::fs::set_permissions(&beta, std::fs::Permissions::from_mode(0o000)).unwrap();
    let as_nobody = |args: &[&str]| sw_as(65534, root, args);
    let r = as_nobody(&["net-list", "--all", "--name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("alpha\n"), "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("cannot read {}", beta.display()))
            && r.stderr.contains("Permission denied"),
        "{r:?}"
    );
    let r = as_nobody(&["net-dumpxml", "beta-longer-name"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(&beta.display().to_string()), "{r:?}");
}

/// A raw connection to the daemon's socket.
fn connect(root: &Path) -> UnixStream {
    let s = UnixStream::connect(root.join("run/slipway/slipway-sock")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    s
}

/// Sends a line, reads the answer line (empty at end of file).
fn ask(s: &UnixStream, line: &str) -> String {
    let mut w = s;
    // The daemon may have closed it already: the answer says why.
    let _ = writeln!(w, "{line}");
    read_answer(s)
}

fn read_answer(s: &UnixStream) -> String {
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    reply
}

/// Whether the daemon closed the connection (end of file, or a reset when
/// it left what the client sent unread).
fn closed(mut s: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut s, &mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

const REFUSED: &str = "the daemon already serves 64 connections (its limit)";

#[test]
fn manager_lock_is_private_and_a_held_lock_names_its_holder() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(root, &["net-define-default"]);
    let lock = root.join("run/slipway/lock");
    assert_eq!(std::fs::metadata(&lock).unwrap().mode() & 0o777, 0o600);
    let run_dir = std::fs::metadata(root.join("run/slipway")).unwrap();
    assert_eq!((run_dir.uid(), run_dir.mode() & 0o022), (0, 0));
    // Another user can neither open the lock nor flock it...
    let other = text(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["flock", "--nonblock", "--exclusive"])
            .arg(&lock)
            .arg("true")
            .output()
            .expect("setpriv and flock (util-linux)"),
    );
    assert_ne!(other.code, 0, "{other:?}");
    assert!(other.stderr.contains("Permission denied"), "{other:?}");
    // ...and still reads the definitions (without the lock).
    let r = sw_as(65534, root, &["net-list", "--all", "--name"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "default\n\n"), "{r:?}");
    // A held lock: a command gives up after the wait, naming the holder.
    let held = std::fs::File::open(&lock).unwrap();
    assert_eq!(
        // SAFETY: flock on a descriptor open for the life of `held`.
        unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    write(root, "alpha.xml", ALPHA);
    let r = text(
        Command::new("timeout")
            .arg("60")
            .arg(BIN)
            .arg("--root")
            .arg(root)
            .args(["net-define", "alpha.xml"])
            .current_dir(root)
            .env("SLIPWAY_LOCK_WAIT_MS", "300")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 1, "{r:?}");
    let holder = format!(
        "timed out after 0.3 s waiting for the lock {}, held by pid {} (",
        lock.display(),
        std::process::id()
    );
    assert!(r.stderr.contains(&holder), "{r:?}");
    assert!(!config_dir(root).join("alpha.xml").exists());
    drop(held);
    ok(root, &["net-define", "alpha.xml"]);
}

#[test]
fn daemon_caps_connections_and_request_lines() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let d = Daemon::start(root);
    ok(root, &["net-define-default"]);
    let vm_rss_kib = || {
        let st = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        let line = st
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    // 40 clients each send 8 MiB of a line that never ends: each is cut off
    // at 1 MiB with an error, and the daemon's memory stays bounded.
    let writers: Vec<_> = (0..40)
        .map(|_| {
            let s = connect(root);
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..8 {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
            (s, writer)
        })
        .collect();
    for (s, writer) in writers {
        let reply = read_answer(&s);
        assert!(
            reply.contains("request longer than 1048576 bytes"),
            "{reply}"
        );
        assert!(closed(&s), "closed after the error");
        writer.join().unwrap();
    }
    let rss = vm_rss_kib();
    assert!(rss < 120 * 1024, "daemon RSS {rss} KiB");

    // 64 connections are served at once...
    let status = r#"{"op":"status"}"#;
    let mut held = Vec::new();
    while held.len() < 64 {
        let s = connect(root);
        let reply = ask(&s, status);
        if reply.contains(REFUSED) {
            // A connection of an earlier step is still being closed.
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        assert!(reply.contains("\"subscribers\""), "{reply}");
        held.push(s);
    }
    // ...the next one gets an error line and is closed...
    let extra = connect(root);
    let reply = read_answer(&extra);
    assert!(reply.contains(REFUSED), "{reply}");
    assert!(closed(&extra));
    // ...while the open ones still work.
    let reply = ask(
        &held[0],
        r#"{"op":"list","filter":{"active":true,"inactive":true,"persistent":false,"transient":false,"autostart":false,"no_autostart":false}}"#,
    );
    assert!(reply.contains("\"default\""), "{reply}");
    // One closes: a new connection is served again.
    held.pop();
    loop {
        let reply = ask(&connect(root), status);
        if !reply.contains(REFUSED) {
            assert!(reply.contains("\"subscribers\""), "{reply}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn daemon_keeps_slots_for_its_owner() {
    enter_netns!(Ns::Root);
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _d = Daemon::start(root);
    ok(root, &["net-define-default"]);
    // Another user opens as many connections as it can (python3 holds them
    // open until its stdin closes) and gets 48 of the 64.
    let sock = root.join("run/slipway/slipway-sock");
    let script = r#"
import socket, sys
conns = []
for i in range(64):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    try:
        s.sendall(b'{"op":"status"}\n')
    except OSError:
        pass  # refused and closed already: its error line is still there
    conns.append((s, s.makefile()))
served = sum(1 for s, f in conns if '"subscribers"' in f.readline())
print(served, flush=True)
sys.stdin.read()
"#;
    let mut other = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(&sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv and python3");
    let mut served = String::new();
    BufReader::new(other.stdout.take().unwrap())
        .read_line(&mut served)
        .unwrap();
    assert_eq!(served.trim(), "48");
    // The owner (root) is still served.
    let reply = ask(&connect(root), r#"{"op":"status"}"#);
    assert!(reply.contains("\"subscribers\""), "{reply}");
    assert!(ok(root, &["net-list", "--all", "--name"]).contains("default"));
    drop(other.stdin.take());
    other.wait().unwrap();
}

#[test]
fn daemon_closes_idle_and_slow_clients() {
    enter_netns!(Ns::User);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _d = Daemon::start_env(
        root,
        &[
            ("SLIPWAY_DAEMON_IDLE_TIMEOUT_MS", "1000"),
            ("SLIPWAY_DAEMON_WRITE_TIMEOUT_MS", "500"),
        ],
    );
    // A client that sends nothing, and one that never finishes its line,
    // are told why and closed.
    let idle = connect(root);
    let slow = connect(root);
    (&slow).write_all(b"{\"op\":").unwrap();
    for s in [&idle, &slow] {
        let reply = read_answer(s);
        assert!(reply.contains("no whole request within 1 s"), "{reply}");
        assert!(closed(s));
    }
    // A client that sends requests but never reads the replies: once they
    // fill the socket, the daemon's write times out and it closes the
    // connection (the client's next write fails) instead of waiting forever.
    let deaf = connect(root);
    deaf.set_write_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut w = &deaf;
    let err = (0..1_000_000)
        .find_map(|_| w.write_all(b"{\"op\":\"status\"}\n").err())
        .expect("the daemon never closed the connection");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{err}"
    );
    assert!(status(root).is_some());
    // A command that keeps its connection idle longer (net-edit while the
    // editor runs) connects again for its next request.
    write(root, "alpha.xml", ALPHA);
    ok(root, &["net-define", "alpha.xml"]);
    let r = text(
        Command::new(BIN)
            .arg("--root")
            .arg(root)
            .args(["net-edit", "alpha"])
            .env("EDITOR", "sleep 2; sed -i s/10.0.5.100/10.0.5.99/")
            .env_remove("VISUAL")
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "Network alpha XML configuration edited.\n\n"),
        "{r:?}"
    );
    assert!(ok(root, &["net-dumpxml", "alpha"]).contains("10.0.5.99"));
}

#[test]
fn a_subscriber_that_does_not_read_never_holds_requests() {
    enter_netns!(Ns::User);
    use slipway_netmgr::proto::{EventKind, Lookup, Request};
    use std::time::{Duration, Instant};
    // On tmpfs: thousands of definitions are written below.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let root = dir.path();
    let _d = Daemon::start(root);

    // A subscriber that never reads, one that does, and a client making
    // 4000 events (more than the stalled one's socket buffer and queue
    // hold): every request is answered at once, the reader gets every
    // event, the stalled subscriber is dropped.
    let stalled = connect(root);
    assert!(ask(&stalled, r#"{"op":"subscribe"}"#).contains("subscribed"));
    let sock = root.join("run/slipway/slipway-sock");
    let mut reader = slipway_netmgr::Client::connect(&sock)
        .unwrap()
        .subscribe()
        .unwrap();
    const N: usize = 4000;
    let got = std::thread::spawn(move || {
        let mut kinds = Vec::new();
        while kinds.len() < N {
            match reader.next(Some(Duration::from_secs(60))).unwrap() {
                Some(ev) => kinds.push(ev.kind),
                None => break,
            }
        }
        kinds
    });
    let mut client = slipway_netmgr::Client::connect(&sock).unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..N {
        let req = if i % 2 == 0 {
            Request::Define {
                xml: "<network><name>e</name></network>".into(),
                validate: false,
            }
        } else {
            Request::Undefine {
                lookup: Lookup::any("e"),
            }
        };
        let t = Instant::now();
        client.call(&req).unwrap();
        slowest = slowest.max(t.elapsed());
    }
    let kinds = got.join().unwrap();
    assert_eq!(kinds.len(), N);
    assert!(kinds.iter().enumerate().all(|(i, k)| *k
        == if i % 2 == 0 {
            EventKind::Defined
        } else {
            EventKind::Undefined
        }));
    // The old daemon blocked a request for its 5 s write timeout here.
    assert!(
        slowest < Duration::from_secs(3),
        "a request took {slowest:?}"
    );
    // The stalled subscriber was dropped: only the reader is left.
    let subs = |v: serde_json::Value| v["ok"]["subscribers"].as_u64().unwrap();
    assert_eq!(subs(status(root).unwrap()), 1);
}
