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
//! own error cases.

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
        && mac
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
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
        Err(format!("--- want\n{want}--- got (generated MAC removed)\n{got}"))
    }
}

#[test]
fn corpus_through_net_define_and_dumpxml_inactive() {
    let all = cases::cases();
    assert_eq!(all.len(), 46, "networkxml2xmltest.c runs 46 cases");
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut refused_like_libvirtd = 0;
    for case in &all {
        let expect_refusal = match (&case.parser, &case.define) {
            (Parser::Error(path), _) => Some((path.clone(), "the parser test".to_string())),
            (Parser::Ok, Define::Refused { path, libvirtd }) => {
                Some((path.clone(), format!("libvirtd: {libvirtd}")))
            }
            (Parser::Ok, Define::Ok) => None,
        };
        let result = match (define_and_dump(case), expect_refusal) {
            (Ok((xml, warnings)), None) => check_dump(case, &xml, &warnings),
            (Err(e), None) => Err(format!("refused: {e}")),
            (Ok((xml, _)), Some((_, who))) => Err(format!("accepted, refused by {who}:\n{xml}")),
            (Err(e), Some((path, _))) if e.contains(&path) => {
                if case.parser == Parser::Ok {
                    refused_like_libvirtd += 1;
                }
                Ok(())
            }
            (Err(e), Some((path, _))) => Err(format!("refused, but not naming {path}: {e}")),
        };
        match result {
            Ok(()) => passed += 1,
            Err(why) => failures.push((case.name.clone(), why)),
        }
    }
    println!(
        "libvirt networkxml2xml corpus through net-define + net-dumpxml --inactive: \
         {passed} of {} match ({refused_like_libvirtd} refused as libvirtd refuses them)",
        all.len()
    );
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|(name, _)| !NOT_YET.iter().any(|(n, _)| n == name))
        .collect();
    for (name, why) in &unexpected {
        println!("FAIL {name}: {why}");
    }
    for (name, reason) in NOT_YET {
        println!("not yet supported: {name}: {reason}");
    }
    assert!(unexpected.is_empty(), "{} case(s) differ from libvirtd", unexpected.len());
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
        ("insert-portgroup", "portgroup-alison", "openvswitch-net", Some("openvswitch-net-more-portgroups"), UpdateCommand::AddFirst),
        ("append-duplicate-portgroup", "portgroup-alice-new", "openvswitch-net", None, UpdateCommand::AddLast),
        ("modify-portgroup", "portgroup-alice-new", "openvswitch-net", Some("openvswitch-net-modified"), UpdateCommand::Modify),
        ("modify-missing-portgroup", "portgroup-alison", "openvswitch-net", None, UpdateCommand::Modify),
        ("delete-portgroup", "portgroup-alice-new", "openvswitch-net", Some("openvswitch-net-without-alice"), UpdateCommand::Delete),
        ("delete-missing-portgroup", "portgroup-alice-new", "nat-network-dns-srv-record", None, UpdateCommand::Delete),
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
