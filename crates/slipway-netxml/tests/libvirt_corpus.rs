//! libvirt 9.0's own network XML test corpus, run as its
//! `tests/networkxml2xmltest.c` runs it: every `DO_TEST` case is parsed and
//! formatted and must give libvirt's expected output byte for byte; every
//! `DO_TEST_PARSE_ERROR` case must be refused (by the parser or the
//! definition rules `net-define` applies) with a message naming the
//! element. The same corpus goes through `net-define` and
//! `net-dumpxml --inactive` in slipway-netmgr's `libvirt_corpus` test.

#[path = "libvirt-corpus/cases.rs"]
mod cases;

use cases::Parser;
use slipway_netxml::Network;

/// Cases not yet supported, with the reason. Empty: every case passes.
const NOT_YET: &[(&str, &str)] = &[];

#[test]
fn networkxml2xml_corpus() {
    cases::check_all(
        "libvirt networkxml2xml corpus",
        NOT_YET,
        |case| match &case.parser {
            Parser::Ok => match Network::from_xml(&case.input) {
                Err(e) => Err(format!("refused: {e}")),
                Ok(net) if !net.unknown.is_empty() => {
                    Err(format!("parts not understood: {:?}", net.unknown))
                }
                Ok(net) => {
                    let got = net.to_xml();
                    let want = case.output.as_deref().expect("an ok case has an output");
                    if got == want {
                        // Formatting is idempotent: the output reads back the same.
                        match Network::from_xml(&got) {
                            Ok(again) if again.to_xml() == got => Ok(()),
                            Ok(again) => Err(format!("not idempotent:\n{}", again.to_xml())),
                            Err(e) => Err(format!("own output refused: {e}")),
                        }
                    } else {
                        Err(format!("--- want\n{want}--- got\n{got}"))
                    }
                }
            },
            Parser::Error(path) => {
                let refusal = Network::from_xml(&case.input)
                    .map_err(|e| e.to_string())
                    .and_then(|n| n.validate().map_err(|e| e.to_string()));
                match refusal {
                    Ok(()) => Err("accepted; libvirt refuses it".to_string()),
                    Err(msg) if msg.contains(path.as_str()) => Ok(()),
                    Err(msg) => Err(format!(
                        "refused, but the message does not name {path}: {msg}"
                    )),
                }
            }
        },
    );
}
