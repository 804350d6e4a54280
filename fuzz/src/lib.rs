//! Helpers shared by the fuzz targets: splitting one fuzz input into a
//! sequence of messages (so state machines see conversations, not single
//! packets), and the guard that keeps the stack target off real networks.

/// Splits `data` into records, each a 2-byte big-endian length followed by
/// that many bytes; a last record shorter than its length is taken as is.
/// The seed corpora use the same layout (see `seeds/README.md`).
pub fn records(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let end = (2 + len).min(data.len());
        let record = &data[2..end];
        data = &data[end..];
        Some(record)
    })
}

/// Exits (without a crash report) unless this process runs in a network
/// namespace with no interface but loopback: the stack target opens real
/// host sockets toward whatever addresses the fuzzer invents, which must
/// reach nothing. `scripts/fuzz.sh` runs the targets under `unshare -Urn`.
pub fn require_isolated_network() {
    // /proc/self/net/dev lists this namespace's interfaces (sysfs would
    // show the namespace it was mounted in).
    let interfaces: Vec<String> = match std::fs::read_to_string("/proc/self/net/dev") {
        Ok(text) => text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|name| name.trim().to_string())
            .collect(),
        Err(err) => {
            eprintln!("cannot list network interfaces ({err}); refusing to fuzz");
            std::process::exit(2);
        }
    };
    if interfaces.iter().any(|name| name != "lo") {
        eprintln!(
            "this target opens real host sockets: run it in an empty network \
             namespace (unshare -Urn), not with interfaces {interfaces:?}"
        );
        std::process::exit(2);
    }
}
