//! Robustness of the `<interface>` parser: random bytes and random
//! mutations of valid interface documents never panic, and every error
//! that concerns one interface names it by an index that exists.

use proptest::prelude::*;
use slipway_netxml::interface::InterfacesError;
use slipway_netxml::parse_interfaces;

const CORPUS: &str = "<domain><devices>\
<interface type='user'><mac address='52:54:00:00:00:01'/><ip address='10.0.5.0' prefix='24'/>\
<portForward proto='tcp' address='127.0.0.1'><range start='2022' end='2030' to='22'/><range start='2025' exclude='yes'/></portForward></interface>\
<interface type='network'><source network='default'/><model type='virtio'/><mtu size='9000'/><link state='down'/></interface>\
<interface type='bridge'><source bridge='br0'/><target dev='tap3'/></interface>\
<interface type='ethernet'><target dev='t0' managed='no'/><script path='/up'/><downscript path='/down'/></interface>\
<interface type='mcast'><source address='230.0.0.1' port='5558'/></interface>\
<interface type='server'><source port='5558'/></interface>\
<interface type='client'><source address='127.0.0.1' port='5558'/></interface>\
<interface type='udp'><source address='127.0.0.1' port='1'><local address='127.0.0.1' port='2'/></source></interface>\
<interface type='vhostuser'><source type='unix' path='/s' mode='client'/><model type='virtio'/></interface>\
</devices></domain>";

const SNIPPETS: &[&str] = &[
    "<interface type='user'/>",
    "<mac address='fe:00:00:00:00:01'/>",
    "<source/>",
    "</interface>",
    "type='x'",
    "port='99999'",
    "<range start='0'/>",
    "<local/>",
    "'",
    "<",
    "&amp;",
    "<mtu size='1'/>",
];

fn check(text: &str) {
    let count = text.matches("<interface").count();
    match parse_interfaces(text) {
        Ok(v) => {
            for (i, iface) in v.iter().enumerate() {
                assert_eq!(iface.index, i);
            }
        }
        Err(InterfacesError::Interface(e)) => {
            assert!(e.index < count.max(1), "index {} of {count}: {e}", e.index);
            assert!(e.to_string().starts_with(&format!("interface {}", e.index)));
        }
        Err(_) => {}
    }
}

#[test]
fn corpus_parses() {
    let v = parse_interfaces(CORPUS).unwrap();
    assert_eq!(v.len(), 9);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutations_never_panic(
        at in 0usize..CORPUS.len(),
        del in 0usize..30,
        snippet in 0..SNIPPETS.len(),
    ) {
        let mut s = CORPUS.to_string();
        let at = (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        let end = (at + del).min(s.len());
        let end = (end..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
        s.replace_range(at..end, SNIPPETS[snippet]);
        check(&s);
    }
}
