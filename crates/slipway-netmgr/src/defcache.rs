//! Parsed network definitions kept between requests, so that a reader
//! (`net-list`, and libvirt's clients, which ask for each network's
//! state, autostart and persistence in calls of their own) reads each
//! file but parses its XML only when the text changed.
//!
//! Theory of operation: one process-wide map from a file's path to the
//! text last read there and what it parsed to. A lookup always reads the
//! file (what is on disk decides, never a timestamp or inode number, which
//! an atomic rewrite within the clock's granularity could repeat) and
//! reuses the parse only when the text is byte for byte the same;
//! otherwise it parses and replaces the entry. Texts that do not parse
//! are not kept. The map holds at most [`MAX_ENTRIES`] files; inserting
//! beyond that empties it first (a rare reset, not an eviction policy:
//! a host has far fewer networks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use slipway_netxml::Network;

/// The most definitions kept (docs/bad-input.md).
pub(crate) const MAX_ENTRIES: usize = 1024;

type Entries = HashMap<PathBuf, (String, Network)>;

fn entries() -> &'static Mutex<Entries> {
    static ENTRIES: OnceLock<Mutex<Entries>> = OnceLock::new();
    ENTRIES.get_or_init(Mutex::default)
}

/// The network `text` (just read from `path`) defines: the kept parse when
/// `path` last held the same text, else `parse(text)`, kept when it
/// succeeds.
pub(crate) fn parsed<E>(
    path: &Path,
    text: String,
    parse: impl FnOnce(&str) -> Result<Network, E>,
) -> Result<Network, E> {
    parsed_in(entries(), MAX_ENTRIES, path, text, parse)
}

/// The map, also after a panic elsewhere while it was held: it is still
/// whole (every change is one insert or one clear).
fn lock(map: &Mutex<Entries>) -> std::sync::MutexGuard<'_, Entries> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

fn parsed_in<E>(
    map: &Mutex<Entries>,
    max: usize,
    path: &Path,
    text: String,
    parse: impl FnOnce(&str) -> Result<Network, E>,
) -> Result<Network, E> {
    if let Some((kept, net)) = lock(map).get(path) {
        if *kept == text {
            return Ok(net.clone());
        }
    }
    // Parsed without the lock: another reader is not held up by this one.
    let net = parse(&text)?;
    let mut m = lock(map);
    if m.len() >= max && !m.contains_key(path) {
        m.clear();
    }
    m.insert(path.to_path_buf(), (text, net.clone()));
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Network, String> {
        Network::from_xml(text).map_err(|e| e.to_string())
    }

    #[test]
    fn same_text_reuses_the_parse_and_changed_text_is_parsed_again() {
        let map = Mutex::default();
        let path = Path::new("/x/a.xml");
        let one = "<network><name>a</name><bridge name='br1'/></network>";
        let mut parses = 0;
        let mut counted = |t: &str| {
            parses += 1;
            parse(t)
        };
        let a = parsed_in(&map, 4, path, one.into(), &mut counted).unwrap();
        let b = parsed_in(&map, 4, path, one.into(), &mut counted).unwrap();
        assert_eq!(a, b);
        // The same length, another bridge: what the file says now.
        let two = one.replace("br1", "br2");
        let c = parsed_in(&map, 4, path, two, &mut counted).unwrap();
        assert_eq!(c.bridge_name(), Some("br2"));
        assert_eq!(parses, 2);
        // A text that does not parse is an error each time, and not kept.
        assert!(parsed_in(&map, 4, path, "<network>".into(), parse).is_err());
        assert!(parsed_in(&map, 4, path, "<network>".into(), parse).is_err());
        assert_eq!(map.lock().unwrap().len(), 1);
    }

    #[test]
    fn never_more_than_the_bound() {
        let map = Mutex::default();
        for i in 0..10 {
            let text = format!("<network><name>n{i}</name></network>");
            parsed_in(&map, 4, Path::new(&format!("/x/n{i}.xml")), text, parse).unwrap();
            assert!(map.lock().unwrap().len() <= 4);
        }
    }
}
