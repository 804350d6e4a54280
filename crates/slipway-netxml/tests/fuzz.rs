//! Robustness: random bytes and random mutations of the corpus never make
//! the parser panic, and every mutated definition that parses and
//! validates survives a format/parse round trip unchanged.

mod common;

use common::{apply, corpus, mutation};
use proptest::prelude::*;
use slipway_netxml::Network;

/// Parses; if the result is a valid definition, checks the round trip.
fn check(text: &str) {
    let _ = Network::from_xml_strict(text);
    if let Ok(net) = Network::from_xml(text) {
        if net.validate().is_ok() {
            let out = net.to_xml();
            let again = Network::from_xml(&out)
                .unwrap_or_else(|e| panic!("own output does not parse: {e}\n{out}"));
            let mut expected = net.clone();
            expected.unknown.clear();
            assert_eq!(
                again, expected,
                "parse(format(x)) != x for\n{text}\nformatted\n{out}"
            );
            assert_eq!(again.to_xml(), out, "formatting is not idempotent");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn corpus_mutations_never_panic_and_round_trip(
        file in any::<prop::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let text = &corpus()[file.index(corpus().len())];
        check(&apply(text, &muts));
    }
}

#[test]
fn corpus_round_trips() {
    for text in corpus() {
        check(text);
    }
}

/// Tab, newline and carriage return in attribute values (found by
/// `cargo fuzz` in a forwarder's domain): written raw, a parser reads
/// them back as spaces, so they must be written as character references.
#[test]
fn control_characters_in_attributes_round_trip() {
    for (name, value) in [("newline", "a&#10;b"), ("tab", "a&#9;b"), ("cr", "a&#13;b")] {
        let text = format!(
            "<network><name>n</name><dns><forwarder domain='{value}' addr='192.0.2.53'/>\
             <srv service='{value}' protocol='udp'/></dns>\
             <ip address='192.168.15.1' prefix='24'/></network>"
        );
        let net = Network::from_xml(&text).unwrap();
        assert!(
            net.to_xml().contains(&format!("domain='{value}'")),
            "{name}: {}",
            net.to_xml()
        );
        check(&text);
    }
}
