//! Shared by the integration tests: the corpus and corpus mutations.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;

/// Paths of the corpus files, sorted.
pub fn corpus_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("corpus dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    files
}

/// The texts of the corpus files, in [`corpus_files`] order.
pub fn corpus() -> &'static [String] {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        corpus_files()
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("corpus file"))
            .collect()
    })
}

/// Fragments that make mutations land on interesting syntax.
pub const SNIPPETS: &[&str] = &[
    "<",
    ">",
    "/>",
    "'",
    "\"",
    "&",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "<!--",
    "-->",
    "<![CDATA[x]]>",
    "<ip address='10.0.0.1'/>",
    "<dhcp>",
    "</dhcp>",
    "<forward mode='bridge'/>",
    "prefix='99'",
    "<nat><port start='0' end='70000'/></nat>",
    "<host>",
    "<lease expiry='-1'/>",
    "=",
    " ",
    "\u{0}",
    "é",
    "<network>",
    "</network>",
    "<?xml version='1.0'?>",
    "<!DOCTYPE x>",
    "start='::'",
    "mac='ff:ff:ff:ff:ff:ff'",
    "<dns enable='no'>",
    "<route address='0.0.0.0' gateway='10.0.0.1'/>",
];

#[derive(Debug, Clone)]
pub enum Mutation {
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        snippet: usize,
    },
    Replace {
        at: usize,
        byte: u8,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    /// Replaces the value of the `at`-th single-quoted attribute.
    SetValue {
        at: usize,
        value: usize,
    },
}

/// Attribute values that exercise parsing and formatting edge cases.
pub const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "2",
    "24",
    "64",
    "65535",
    "65536",
    "yes",
    "no",
    "on",
    "off",
    "nat",
    "route",
    "open",
    "bridge",
    "hours",
    "seconds",
    "minutes",
    "kernel",
    "libvirt",
    "ipv4",
    "ipv6",
    "10.0.0.1",
    "10.0.0.0",
    "192.168.122.2",
    "192.168.122.1",
    "255.255.255.0",
    "255.255.0.0",
    "fd00::1",
    "2001:DB8:0:0::1",
    "::ffff:10.0.0.1",
    "0.0.0.0",
    " x ",
    "a&amp;b",
    "a&lt;b",
    "a&quot;b",
    "a&apos;b",
    "52:54:00:AA:BB:CC",
    "eth0",
    "virbr99",
    "x.example",
    "4294967296",
];

/// Applies the mutations in order; positions wrap around the text length.
pub fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut b = text.as_bytes().to_vec();
    for m in muts {
        let n = b.len().max(1);
        match *m {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Mutation::Insert { at, snippet } => {
                let at = (at % n).min(b.len());
                let s = SNIPPETS[snippet].as_bytes();
                b.splice(at..at, s.iter().copied());
            }
            Mutation::Replace { at, byte } => {
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] = byte;
                }
            }
            Mutation::SetValue { at, value } => {
                let starts: Vec<usize> = b
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| w == b"='")
                    .map(|(i, _)| i + 2)
                    .collect();
                if !starts.is_empty() {
                    let start = starts[at % starts.len()];
                    let end = b[start..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map_or(b.len(), |p| start + p);
                    b.splice(start..end, VALUES[value].bytes());
                }
            }
            Mutation::Duplicate { at, len } => {
                let at = at % n;
                let end = (at + len).min(b.len());
                if at < end {
                    let chunk = b[at..end].to_vec();
                    b.splice(end..end, chunk);
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// A random [`Mutation`] (positions wrap around the text they apply to).
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..SNIPPETS.len())
            .prop_map(|(at, snippet)| Mutation::Insert { at, snippet }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        (any::<usize>(), 0usize..80).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        (any::<usize>(), 0..VALUES.len()).prop_map(|(at, value)| Mutation::SetValue { at, value }),
    ]
}
