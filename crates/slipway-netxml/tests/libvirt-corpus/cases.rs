//! The case list of libvirt 9.0's `tests/networkxml2xmltest.c` (see
//! `cases.txt` and the README here), shared by the corpus tests of
//! slipway-netxml and slipway-netmgr (`#[path]`-included; each reads the
//! fields it needs, hence the allowance below).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// What libvirt's parser test expects of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parser {
    /// Parsed and formatted, it gives `out/NAME.xml`.
    Ok,
    /// Refused; slipway's message names this path.
    Error(String),
}

/// What the running libvirtd does on `net-define`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Define {
    /// Defined; `net-dumpxml --inactive` gives `out/NAME.xml` (plus a generated MAC).
    Ok,
    /// Refused; slipway's message names this path.
    Refused {
        /// The element or attribute the message names.
        path: String,
        /// libvirtd's message, for the report.
        libvirtd: String,
    },
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file name without `.xml`.
    pub name: String,
    /// `VIR_NETWORK_XML_INACTIVE` was passed to the formatter.
    pub inactive: bool,
    /// The parser test's expectation.
    pub parser: Parser,
    /// libvirtd's `net-define`.
    pub define: Define,
    /// The input.
    pub input: String,
    /// The expected output (`None` for parse-error cases).
    pub output: Option<String>,
}

/// The corpus directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("slipway-netxml")
        .join("tests")
        .join("libvirt-corpus")
}

/// Every case, in the C test's order.
pub fn cases() -> Vec<Case> {
    let dir = dir();
    let list = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    let mut out = Vec::new();
    for line in list.lines() {
        let (data, note) = line.split_once('#').unwrap_or((line, ""));
        let f: Vec<&str> = data.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        assert_eq!(f.len(), 4, "bad line in cases.txt: {line}");
        let name = f[0].to_string();
        let parser = match f[2].strip_prefix("parse-error=") {
            Some(p) => Parser::Error(p.to_string()),
            None if f[2] == "ok" => Parser::Ok,
            None => panic!("bad parser column: {line}"),
        };
        let define = match f[3].strip_prefix("refused=") {
            Some(p) => Define::Refused {
                path: p.to_string(),
                libvirtd: note.trim().to_string(),
            },
            None if f[3] == "ok" => Define::Ok,
            None => panic!("bad define column: {line}"),
        };
        let input = std::fs::read_to_string(dir.join("in").join(format!("{name}.xml")))
            .unwrap_or_else(|e| panic!("in/{name}.xml: {e}"));
        let output = match parser {
            Parser::Ok => Some(
                std::fs::read_to_string(dir.join("out").join(format!("{name}.xml")))
                    .unwrap_or_else(|e| panic!("out/{name}.xml: {e}")),
            ),
            Parser::Error(_) => None,
        };
        out.push(Case {
            name,
            inactive: f[1] == "inactive",
            parser,
            define,
            input,
            output,
        });
    }
    out
}

/// Runs `check` on every case (the 46 of `networkxml2xmltest.c`), prints
/// `{what}: N of 46 match`, names each case that fails, and fails the test
/// when one that fails is not listed in `not_yet` (name, reason).
pub fn check_all(
    what: &str,
    not_yet: &[(&str, &str)],
    mut check: impl FnMut(&Case) -> Result<(), String>,
) {
    let all = cases();
    assert_eq!(all.len(), 46, "networkxml2xmltest.c runs 46 cases");
    let mut failures = Vec::new();
    let mut passed = 0;
    for case in &all {
        match check(case) {
            Ok(()) => passed += 1,
            Err(why) => failures.push((case.name.clone(), why)),
        }
    }
    println!("{what}: {passed} of {} match", all.len());
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|(name, _)| !not_yet.iter().any(|(n, _)| n == name))
        .collect();
    for (name, why) in &unexpected {
        println!("FAIL {name}: {why}");
    }
    for (name, reason) in not_yet {
        println!("not yet supported: {name}: {reason}");
    }
    assert!(
        unexpected.is_empty(),
        "{} case(s) differ from libvirt ({what})",
        unexpected.len()
    );
}
