//! Differential tests against libvirt's own parser and formatter (`virsh -c
//! test:///default`, Debian package libvirt-clients): slipway's output must
//! be byte-identical to what libvirt prints for the same definition. One
//! virsh process handles each whole batch.

mod common;

use std::path::Path;
use std::process::Command;

use common::{apply, corpus, corpus_files, Mutation, SNIPPETS, VALUES};
use slipway_netxml::Network;

const MARK: &str = "@@slipway-mark@@";

/// Longest script given to one virsh process: a command-line argument
/// may be at most 128 KiB (`MAX_ARG_STRLEN`).
const MAX_SCRIPT: usize = 100 * 1024;

/// Runs virsh sessions on the test driver and returns their stdout and
/// stderr, concatenated. The driver starts with an active network named
/// "default"; each session removes it first so definitions can use that
/// name. A long script is split between sessions at the start of a
/// [`define_and_dump`] group (each group stands alone).
fn virsh(script: &str) -> (String, String) {
    let sep = format!("echo {MARK}; ");
    let mut chunks: Vec<String> = Vec::new();
    for (i, group) in script.split(&sep).enumerate() {
        let part = if i == 0 {
            group.to_string()
        } else {
            format!("{sep}{group}")
        };
        match chunks.last_mut() {
            Some(last) if last.len() + part.len() < MAX_SCRIPT => last.push_str(&part),
            _ => chunks.push(part),
        }
    }
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let n = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = if i + 1 == n {
            format!("; echo {MARK} end")
        } else {
            String::new()
        };
        let script = format!("net-destroy default; net-undefine default; {chunk}{end}");
        let out = match Command::new("virsh")
            .args(["-q", "-c", "test:///default", &script])
            .env("LC_ALL", "C")
            .output()
        {
            Ok(o) => o,
            Err(e) => panic!(
                "cannot run virsh ({e}): these tests need libvirt's virsh as an oracle; \
                 install it with `apt-get install -y libvirt-clients`"
            ),
        };
        stdout.push_str(&String::from_utf8_lossy(&out.stdout));
        stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (stdout, stderr)
}

/// The commands that define `file` and print libvirt's formatting of it,
/// preceded by a marker so the output can be split per definition.
fn define_and_dump(file: &Path, name: &str) -> String {
    format!(
        "echo {MARK}; net-define --file {}; net-dumpxml {name}; net-undefine {name}; ",
        file.display()
    )
}

/// The XML libvirt printed in each marked chunk (`None` where it printed none,
/// i.e. libvirt refused the definition).
fn dumps(stdout: &str, n: usize) -> Vec<Option<String>> {
    let chunks: Vec<&str> = stdout.split(MARK).skip(1).collect();
    assert_eq!(chunks.len(), n + 1, "virsh output ends early:\n{stdout}");
    chunks[..n]
        .iter()
        .map(|chunk| {
            let start = chunk.find("<network")?;
            let end = chunk.rfind("</network>\n")? + "</network>\n".len();
            Some(chunk[start..end].to_string())
        })
        .collect()
}

#[test]
fn corpus_formats_like_virsh() {
    let files = corpus_files();
    assert!(files.len() >= 25, "corpus has only {} files", files.len());
    let mut script = String::new();
    let mut nets = Vec::new();
    for (f, text) in files.iter().zip(corpus()) {
        let net = Network::from_xml(text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // Only notes on what libvirt itself drops (as the <metadata>
        // children of metadata-mixed.xml) are allowed.
        assert!(
            net.unknown
                .iter()
                .all(|u| u.ends_with(", as libvirt does)")),
            "{}: unknown parts {:?}",
            f.display(),
            net.unknown
        );
        net.validate().unwrap_or_else(|e| {
            panic!(
                "{}: slipway refuses a definition libvirt accepts: {e}",
                f.display()
            )
        });
        script.push_str(&define_and_dump(f, &net.name));
        nets.push((f, net));
    }
    let (stdout, stderr) = virsh(&script);
    assert!(stderr.trim().is_empty(), "virsh reported errors:\n{stderr}");
    let mut failures = Vec::new();
    for ((file, net), dump) in nets.iter().zip(dumps(&stdout, nets.len())) {
        let expected = dump.unwrap_or_else(|| panic!("no XML from virsh for {}", file.display()));
        let got = net.to_xml();
        if got != expected {
            failures.push(format!(
                "{}:\n--- virsh\n{expected}--- slipway\n{got}",
                file.display()
            ));
        }
        let again = Network::from_xml(&got).expect("reparse own output");
        let mut net = net.clone();
        net.unknown.clear();
        assert_eq!(again, net, "{}: parse(format(x)) != x", file.display());
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A small deterministic generator (xorshift64*) so the mutated batch is
/// the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutated corpus definitions that slipway accepts (parse + validate) are
/// also defined in libvirt; wherever libvirt accepts them too, both must
/// print exactly the same XML.
#[test]
fn mutated_definitions_format_like_virsh() {
    const TRIES: usize = 8000;
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = std::env::var("NETXML_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng(seed);
    let mut script = String::new();
    let mut cases = Vec::new();
    for i in 0..TRIES {
        let base = &corpus()[rng.below(corpus().len())];
        let muts: Vec<Mutation> = (0..1 + rng.below(3))
            .map(|_| match rng.below(6) {
                0 => Mutation::Delete {
                    at: rng.below(usize::MAX),
                    len: rng.below(20),
                },
                1 => Mutation::Insert {
                    at: rng.below(usize::MAX),
                    snippet: rng.below(SNIPPETS.len()),
                },
                2 => Mutation::Replace {
                    at: rng.below(usize::MAX),
                    byte: b"0123456789abcdef:./ '<>=x"[rng.below(25)],
                },
                3 | 4 => Mutation::SetValue {
                    at: rng.below(usize::MAX),
                    value: rng.below(VALUES.len()),
                },
                _ => Mutation::Duplicate {
                    at: rng.below(usize::MAX),
                    len: rng.below(80),
                },
            })
            .collect();
        let text = apply(base, &muts);
        let Ok(net) = Network::from_xml(&text) else {
            continue;
        };
        // Names that virsh's own command line would need quoting for are
        // left out; the formatter escapes them like the corpus test shows.
        if net.validate().is_err()
            || net.name.is_empty()
            || !net
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            continue;
        }
        let file = dir.path().join(format!("m{i}.xml"));
        std::fs::write(&file, &text).expect("write mutated definition");
        script.push_str(&define_and_dump(&file, &net.name));
        cases.push((text, net));
    }
    assert!(cases.len() >= 50, "only {} usable mutations", cases.len());
    let (stdout, _stderr) = virsh(&script);
    let mut compared = 0;
    let mut failures = Vec::new();
    for ((text, net), dump) in cases.iter().zip(dumps(&stdout, cases.len())) {
        let Some(expected) = dump else {
            failures.push(format!("libvirt refuses what slipway accepts:\n{text}"));
            continue;
        };
        compared += 1;
        let mut net = net.clone();
        if net.uuid.is_none() {
            // Both generate a random UUID for a definition without one;
            // take libvirt's so the rest can be compared.
            net.uuid = Network::from_xml(&expected)
                .expect("virsh output parses")
                .uuid;
        }
        let got = net.to_xml();
        if got != expected {
            failures.push(format!(
                "input:\n{text}\n--- virsh\n{expected}--- slipway\n{got}"
            ));
        }
    }
    assert!(compared >= 200, "only {compared} definitions compared");
    assert!(
        failures.is_empty(),
        "{} of {compared} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The definitions under tests/invalid must be refused by slipway with the
/// error their first line names. Those marked `both` must be refused by
/// libvirt too; those marked `slipway-only` document where slipway is
/// stricter than libvirt's parser (the reason follows in parentheses), and
/// libvirt must still accept them, so the note stays true.
#[test]
fn invalid_definitions_are_refused() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/invalid")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "only {} invalid definitions",
        files.len()
    );
    let mut script = String::new();
    let mut cases = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let header = text.lines().next().unwrap_or_default();
        let (both, note) = if let Some(rest) = header.strip_prefix("<!-- both: ") {
            (true, rest)
        } else if let Some(rest) = header.strip_prefix("<!-- slipway-only: ") {
            (false, rest)
        } else {
            panic!(
                "{}: first line must be <!-- both: … --> or <!-- slipway-only: … -->",
                f.display()
            );
        };
        let expected = note
            .trim_end_matches(" -->")
            .split(" (")
            .next()
            .unwrap_or_default();
        let refusal = match Network::from_xml(&text) {
            Err(e) => e.to_string(),
            Ok(net) => match net.validate() {
                Err(e) => e.to_string(),
                Ok(()) => panic!("{}: slipway accepts it", f.display()),
            },
        };
        assert!(
            refusal.contains(expected),
            "{}: error {refusal:?} does not mention {expected:?}",
            f.display()
        );
        let stem = f.file_stem().and_then(|s| s.to_str()).expect("file name");
        script.push_str(&define_and_dump(f, stem));
        cases.push((f, both));
    }
    let (stdout, _stderr) = virsh(&script);
    for ((f, both), dump) in cases.iter().zip(dumps(&stdout, cases.len())) {
        let libvirt_accepts = dump.is_some();
        assert_eq!(
            libvirt_accepts,
            !both,
            "{}: libvirt {} it",
            f.display(),
            if libvirt_accepts {
                "accepts"
            } else {
                "refuses"
            }
        );
    }
}
