//! libvirt 9.0's network XML corpus through slipway's `net-define` and
//! `net-dumpxml --inactive` (the manager's define path and the formatter),
//! compared byte for byte with libvirt's expected output.
//!
//! What the running libvirtd 9.0 does on `net-define` is the reference
//! (`cases.txt` records it, checked with libvirtd and virsh): it adds a
//! generated bridge MAC to networks that have a bridge of their own and no
//! `<mac>` (checked here for shape and place, then removed before
//! comparing), and nothing else; and its `networkValidate` refuses five
//! cases the parser test accepts (the passthrough networks with an `<ip>` or
//! a PCI address, the hostdev pool of PCI devices that are not SR-IOV
//! virtual functions of this host, and two networks whose `<vlan>` their
//! forward mode cannot apply). slipway follows libvirtd there: those must
//! be refused, with a message naming the element, as must the parser test's
//! own error cases. `corpus_matches_a_running_libvirtd` checks all of this
//! against a libvirtd 9.0 the test starts (Debian package libvirt-daemon).

#[path = "../../slipway-netxml/tests/libvirt-corpus/cases.rs"]
mod cases;

use cases::{Define, Parser};
use slipway_netmgr::proto::Lookup;
use slipway_netmgr::{Manager, Paths, RecordingBackend};
use slipway_netxml::Network;

/// Cases not yet supported, with the reason. Empty: every case passes.
const NOT_YET: &[(&str, &str)] = &[];

/// A generated bridge MAC line: libvirt's `52:54:00` prefix, lower case.
fn is_generated_mac_line(line: &str) -> bool {
    let Some(mac) = line
        .strip_prefix("  <mac address='52:54:00:")
        .and_then(|r| r.strip_suffix("'/>"))
    else {
        return false;
    };
    mac.len() == 8
        && mac.split(':').count() == 3
        && mac.split(':').all(|b| {
            b.len() == 2
                && b.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

/// Defines `case` in a fresh manager and dumps it as `net-dumpxml --inactive` does.
fn define_and_dump(case: &cases::Case) -> Result<(String, Vec<String>), String> {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::new(Paths::detect(Some(dir.path())), Box::new(RecordingBackend));
    let out = m.define(&case.input, false).map_err(|e| e.to_string())?;
    let xml = m
        .dumpxml(&Lookup::any(&out.network), true)
        .map_err(|e| format!("dumpxml: {e}"))?;
    Ok((xml, out.warnings))
}

/// Checks the dump of a case libvirtd defines: the expected output, plus
/// the generated MAC where libvirtd adds one.
fn check_dump(case: &cases::Case, got: &str, warnings: &[String]) -> Result<(), String> {
    let want = case.output.as_deref().expect("an ok case has an output");
    // Only the dnsmasq options slipway does not act on are reported.
    if let Some(w) = warnings.iter().find(|w| !w.contains("dnsmasq:option")) {
        return Err(format!("unexpected warning: {w}"));
    }
    let has_bridge = Network::from_xml(&case.input)
        .map_err(|e| e.to_string())?
        .has_own_bridge();
    let mut lines: Vec<&str> = got.lines().collect();
    if has_bridge && !want.contains("<mac address=") {
        let Some(i) = lines.iter().position(|l| is_generated_mac_line(l)) else {
            return Err(format!("no generated bridge MAC:\n{got}"));
        };
        // libvirt prints it after <bridge> and <mtu>.
        if !(lines[i - 1].starts_with("  <bridge ") || lines[i - 1].starts_with("  <mtu ")) {
            return Err(format!("generated MAC in the wrong place:\n{got}"));
        }
        lines.remove(i);
    }
    let got = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "--- want\n{want}--- got (generated MAC removed)\n{got}"
        ))
    }
}

#[test]
fn corpus_through_net_define_and_dumpxml_inactive() {
    let mut refused_like_libvirtd = 0;
    cases::check_all(
        "libvirt networkxml2xml corpus through net-define + net-dumpxml --inactive",
        NOT_YET,
        |case| {
            let expect_refusal = match (&case.parser, &case.define) {
                (Parser::Error(path), _) => Some((path.clone(), "the parser test".to_string())),
                (Parser::Ok, Define::Refused { path, libvirtd }) => {
                    Some((path.clone(), format!("libvirtd: {libvirtd}")))
                }
                (Parser::Ok, Define::Ok) => None,
            };
            match (define_and_dump(case), expect_refusal) {
                (Ok((xml, warnings)), None) => check_dump(case, &xml, &warnings),
                (Err(e), None) => Err(format!("refused: {e}")),
                (Ok((xml, _)), Some((_, who))) => {
                    Err(format!("accepted, refused by {who}:\n{xml}"))
                }
                (Err(e), Some((path, _))) if e.contains(&path) => {
                    if case.parser == Parser::Ok {
                        refused_like_libvirtd += 1;
                    }
                    Ok(())
                }
                (Err(e), Some((path, _))) => Err(format!("refused, but not naming {path}: {e}")),
            }
        },
    );
    println!("{refused_like_libvirtd} refused as libvirtd refuses them");
}

/// libvirt 9.0's `tests/networkxml2xmlupdatetest.c`, its portgroup cases:
/// the update applied to the parsed definition (no define-time rules, as
/// there) must give libvirt's expected output, or fail where it fails.
#[test]
fn portgroup_updates_as_networkxml2xmlupdatetest() {
    use slipway_netmgr::update::{apply, Section, UpdateCommand, UpdateSpec};
    let dir = cases::dir();
    let read = |sub: &str, name: &str| {
        std::fs::read_to_string(dir.join(sub).join(format!("{name}.xml")))
            .unwrap_or_else(|e| panic!("{sub}/{name}.xml: {e}"))
    };
    // (test name, update, network, expected output or None for failure, command)
    let tests: &[(&str, &str, &str, Option<&str>, UpdateCommand)] = &[
        (
            "insert-portgroup",
            "portgroup-alison",
            "openvswitch-net",
            Some("openvswitch-net-more-portgroups"),
            UpdateCommand::AddFirst,
        ),
        (
            "append-duplicate-portgroup",
            "portgroup-alice-new",
            "openvswitch-net",
            None,
            UpdateCommand::AddLast,
        ),
        (
            "modify-portgroup",
            "portgroup-alice-new",
            "openvswitch-net",
            Some("openvswitch-net-modified"),
            UpdateCommand::Modify,
        ),
        (
            "modify-missing-portgroup",
            "portgroup-alison",
            "openvswitch-net",
            None,
            UpdateCommand::Modify,
        ),
        (
            "delete-portgroup",
            "portgroup-alice-new",
            "openvswitch-net",
            Some("openvswitch-net-without-alice"),
            UpdateCommand::Delete,
        ),
        (
            "delete-missing-portgroup",
            "portgroup-alice-new",
            "nat-network-dns-srv-record",
            None,
            UpdateCommand::Delete,
        ),
    ];
    for (test, update, network, out, command) in tests {
        let mut net = Network::from_xml(&read("in", network)).unwrap();
        let spec = UpdateSpec {
            command: *command,
            section: Section::Portgroup,
            xml: read("update-in", update),
            parent_index: None,
            live: false,
            config: true,
        };
        match (apply(&mut net, &spec), out) {
            (Ok(()), Some(out)) => assert_eq!(net.to_xml(), read("update-out", out), "{test}"),
            (Err(e), None) => assert!(e.to_string().contains("portgroup"), "{test}: {e}"),
            (Ok(()), None) => panic!("{test}: accepted, libvirt refuses it"),
            (Err(e), Some(_)) => panic!("{test}: {e}"),
        }
    }
}

/// A libvirtd of the test's own: session mode, in a private directory (its
/// XDG directories), as `nobody` when the test runs as root, in a network
/// namespace of its own then; killed with the test.
struct Libvirtd {
    /// First: killed before `dir` goes.
    _child: slipway_testkit::KillOnDrop,
    dir: tempfile::TempDir,
    as_nobody: bool,
}

impl Libvirtd {
    fn start() -> Libvirtd {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_nobody = unsafe { libc::geteuid() } == 0;
        if as_nobody {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let mut cmd = if as_nobody {
            let mut c = std::process::Command::new("unshare");
            c.args([
                "-n",
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]);
            c.arg("libvirtd");
            c
        } else {
            std::process::Command::new("libvirtd")
        };
        Self::env(&mut cmd, dir.path());
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run libvirtd (Debian package libvirt-daemon)");
        let d = Libvirtd {
            _child: slipway_testkit::KillOnDrop(child),
            dir,
            as_nobody,
        };
        let sock = d.dir.path().join("run/libvirt/libvirt-sock");
        for _ in 0..300 {
            if sock.exists() {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("libvirtd did not create {}", sock.display());
    }

    /// The session environment under `dir`; no autostarted daemon of
    /// virsh's own.
    fn env(cmd: &mut std::process::Command, dir: &std::path::Path) {
        cmd.env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env("LIBVIRT_AUTOSTART", "0")
            .env("LC_ALL", "C");
    }

    /// Runs a virsh script against this daemon; stdout and stderr.
    fn virsh(&self, script: &str) -> (String, String) {
        let mut cmd = if self.as_nobody {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "virsh"]);
            c
        } else {
            std::process::Command::new("virsh")
        };
        Self::env(&mut cmd, self.dir.path());
        let out = cmd
            .args(["-q", "-c", "qemu:///session", script])
            .output()
            .expect("run virsh (Debian package libvirt-clients)");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The corpus against a running libvirtd 9.0 (not its test driver):
/// `cases.txt`'s DEFINE column is what libvirtd does, and where it defines
/// a case its `net-dumpxml --inactive` is slipway's, byte for byte but for
/// the randomly generated bridge MAC.
#[test]
fn corpus_matches_a_running_libvirtd() {
    const MARK: &str = "@@slipway-case@@";
    let daemon = Libvirtd::start();
    let all = cases::cases();
    let dir = cases::dir();
    let mut script = String::new();
    for case in &all {
        let name = Network::from_xml(&case.input)
            .map(|n| n.name)
            .unwrap_or_else(|_| "none".to_string());
        script.push_str(&format!(
            "echo {MARK}; net-define --file {}; net-dumpxml --inactive {name}; net-undefine {name}; ",
            dir.join("in").join(format!("{}.xml", case.name)).display()
        ));
    }
    script.push_str(&format!("echo {MARK}"));
    let (stdout, stderr) = daemon.virsh(&script);
    let chunks: Vec<&str> = stdout.split(MARK).skip(1).collect();
    assert_eq!(
        chunks.len(),
        all.len() + 1,
        "virsh stopped early:\n{stdout}\n{stderr}"
    );
    let mask = |xml: &str| -> String {
        xml.lines()
            .map(|l| {
                if is_generated_mac_line(l) {
                    "  <mac address='GENERATED'/>"
                } else {
                    l
                }
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let mut failures = Vec::new();
    for (case, chunk) in all.iter().zip(&chunks) {
        let libvirtd = chunk.find("<network").and_then(|s| {
            chunk
                .rfind("</network>")
                .map(|e| format!("{}\n", &chunk[s..e + "</network>".len()]))
        });
        let slipway = define_and_dump(case).ok().map(|(xml, _)| xml);
        let expect_ok = case.parser == Parser::Ok && case.define == Define::Ok;
        match (libvirtd, slipway) {
            (Some(_), _) if !expect_ok => failures.push(format!(
                "{}: libvirtd defines it; cases.txt says it refuses it",
                case.name
            )),
            (None, _) if expect_ok => failures.push(format!(
                "{}: libvirtd refuses it; cases.txt says it defines it",
                case.name
            )),
            (Some(l), Some(s)) if mask(&l) != mask(&s) => {
                failures.push(format!("{}:\n--- libvirtd\n{l}--- slipway\n{s}", case.name))
            }
            (Some(_), None) => failures.push(format!("{}: slipway refuses it", case.name)),
            (None, Some(_)) => failures.push(format!("{}: slipway accepts it", case.name)),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// slipway-netxml's own corpus and refusals against the running libvirtd:
/// every definition of `tests/corpus/` that libvirtd defines, slipway
/// defines to the same `net-dumpxml --inactive` (generated MAC and bridge
/// name aside), and the ones it refuses slipway refuses; every document of
/// `tests/invalid/` that says libvirt (its parser, or libvirtd at define)
/// refuses it is refused by libvirtd.
#[test]
fn own_corpus_and_refusals_match_a_running_libvirtd() {
    const MARK: &str = "@@slipway-file@@";
    let daemon = Libvirtd::start();
    let netxml = cases::dir().join("..");
    let files = |sub: &str| {
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(netxml.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "xml"))
            .collect();
        v.sort();
        v
    };
    let corpus = files("corpus");
    let invalid = files("invalid");
    let name_of = |text: &str| {
        text.split_once("<name>")
            .and_then(|(_, r)| r.split_once("</name>"))
            .map_or("none".to_string(), |(n, _)| n.to_string())
    };
    let mut script = String::new();
    for f in corpus.iter().chain(&invalid) {
        let name = name_of(&std::fs::read_to_string(f).unwrap());
        script.push_str(&format!(
            "echo {MARK}; net-define --file {}; net-dumpxml --inactive {name}; net-undefine {name}; ",
            f.display()
        ));
    }
    script.push_str(&format!("echo {MARK}"));
    let (stdout, stderr) = daemon.virsh(&script);
    let chunks: Vec<&str> = stdout.split(MARK).skip(1).collect();
    assert_eq!(
        chunks.len(),
        corpus.len() + invalid.len() + 1,
        "virsh stopped early:\n{stdout}\n{stderr}"
    );
    let dump = |chunk: &str| {
        chunk.find("<network").and_then(|s| {
            chunk
                .rfind("</network>")
                .map(|e| format!("{}\n", &chunk[s..e + "</network>".len()]))
        })
    };
    let mut failures = Vec::new();
    for (f, chunk) in corpus.iter().zip(&chunks) {
        let text = std::fs::read_to_string(f).unwrap();
        // Generated values differ between the two: mask them.
        let bridge_given = text.contains("bridge name");
        let mask = |xml: &str| -> String {
            xml.lines()
                .map(|l| {
                    if is_generated_mac_line(l) {
                        "  <mac address='GENERATED'/>".to_string()
                    } else if !bridge_given && l.starts_with("  <bridge name='virbr") {
                        let rest = l.split_once("' ").map_or("", |(_, r)| r);
                        format!("  <bridge name='GENERATED' {rest}")
                    } else {
                        l.to_string()
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let m = Manager::new(Paths::detect(Some(dir.path())), Box::new(RecordingBackend));
        let slipway = m
            .define(&text, false)
            .and_then(|o| m.dumpxml(&Lookup::any(&o.network), true));
        match (dump(chunk), slipway) {
            (Some(l), Ok(s)) if mask(&l) != mask(&s) => failures.push(format!(
                "{}:\n--- libvirtd\n{l}--- slipway\n{s}",
                f.display()
            )),
            (Some(_), Err(e)) => failures.push(format!(
                "{}: libvirtd defines it, slipway refuses it: {e}",
                f.display()
            )),
            (None, Ok(_)) => failures.push(format!(
                "{}: libvirtd refuses it, slipway defines it:{chunk}",
                f.display()
            )),
            _ => {}
        }
    }
    for (f, chunk) in invalid.iter().zip(&chunks[corpus.len()..]) {
        let header = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let libvirt_refuses = header.starts_with("<!-- both:")
            || header.contains("libvirtd refuses it")
            || header.contains("networkValidate refuses it");
        if libvirt_refuses && dump(chunk).is_some() {
            failures.push(format!("{}: libvirtd defines it", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
