//! Prometheus's text exposition format (version 0.0.4) and the few bytes
//! of HTTP around it: what `slipway user --metrics` (from its event loop)
//! and `slipway daemon --metrics` (from a thread) both serve.
//!
//! Theory of operation: a [`Text`] collects metric families (`# HELP`,
//! `# TYPE`, then one sample per label set, label values escaped as the
//! format says). [`head_end`] finds where a request head ends, [`route`]
//! decides from its request line what to answer (`GET`/`HEAD /metrics`,
//! else 404 or 405), and [`response`] frames an HTTP/1.0 answer that closes
//! the connection. The servers own their sockets and bounds.
//!
//! Hand-written rather than a crate: the format is a handful of lines, and
//! the crates (prometheus, prometheus-client) bring registries and atomics
//! the stacks' plain counters do not need.

use std::fmt::Write as _;

/// The longest request head a metrics server reads, in bytes; past it the
/// answer is `431`.
pub const MAX_REQUEST: usize = 8192;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a metrics server listens: `HOST:PORT` or `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A unix stream socket (mode 0600, a stale file replaced).
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "http://{a}/metrics"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// An empty page.
    pub fn new() -> Text {
        Text::default()
    }

    /// Adds family `name` of type `kind` (`counter`, `gauge`) with its help
    /// line and one sample per `(labels, value)`; labels are `(name,
    /// value)` pairs, values escaped here.
    pub fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: &[(&[(&str, &str)], u64)],
    ) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{k}=\"{}\"", escape(v));
                }
                self.out.push('}');
            }
            let _ = writeln!(self.out, " {value}");
        }
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Where a request head ends (after its empty line), if it has.
pub fn head_end(input: &[u8]) -> Option<usize> {
    let crlf = input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    crlf.or_else(|| input.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// What to answer a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (any query string): the page.
    Metrics,
    /// `HEAD /metrics`: the page's headers only.
    MetricsHead,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    BadMethod,
}

/// The route of request head `head` (its first line).
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path == "/metrics") {
        ("GET", true) => Route::Metrics,
        ("HEAD", true) => Route::MetricsHead,
        ("GET" | "HEAD", false) => Route::NotFound,
        _ => Route::BadMethod,
    }
}

/// The whole answer to a request head: `page` builds the metrics when they
/// are asked for (only then).
pub fn answer(head: &[u8], page: impl FnOnce() -> String) -> Vec<u8> {
    match route(head) {
        Route::Metrics => response("200 OK", &page(), false),
        Route::MetricsHead => response("200 OK", &page(), true),
        Route::NotFound => response("404 Not Found", "only /metrics is served\n", false),
        Route::BadMethod => response("405 Method Not Allowed", "only GET and HEAD\n", false),
    }
}

/// The answer to a head longer than [`MAX_REQUEST`].
pub fn too_long() -> Vec<u8> {
    response(
        "431 Request Header Fields Too Large",
        &format!("request head longer than {MAX_REQUEST} bytes\n"),
        false,
    )
}

/// An HTTP/1.0 response with `body` (left out when `head_only`), closing
/// the connection.
fn response(status: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_escaped_labels() {
        let mut t = Text::new();
        t.family(
            "x_total",
            "counter",
            "Xs.",
            &[(&[("net", "a\"b\\c\nd")], 3), (&[], 4)],
        );
        assert_eq!(
            t.finish(),
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{net=\"a\\\"b\\\\c\\nd\"} 3\nx_total 4\n"
        );
    }

    #[test]
    fn heads_and_routes() {
        assert_eq!(
            head_end(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(34)
        );
        assert_eq!(head_end(b"GET /metrics HTTP/1.0\n\n"), Some(23));
        assert_eq!(head_end(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.1\r\n"), Route::Metrics);
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n"), Route::MetricsHead);
        assert_eq!(route(b"GET / HTTP/1.1\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n"), Route::BadMethod);
        assert_eq!(route(b"\xff\xfe"), Route::BadMethod);
    }
}
