//! The host name a DHCP client gives itself (DHCPv4 option 12, the DHCPv6
//! client FQDN option), as the network's DNS may publish it.
//!
//! The one rule for names that come from guests, shared by the DHCPv4 and
//! DHCPv6 servers, the user-mode stack's leases and the bridge network's
//! zone. It is dnsmasq's (`legal_hostname`, `strip_hostname`): only the first
//! label is kept (a guest calling itself `www.example.com` is `www`, published
//! under the network's own domain only), made of letters, digits, `-` and
//! `_`, not starting with `-` or `_`, at most 63 bytes. Anything else is not
//! a name at all: the lease is still granted, without a DNS name.

use std::fmt;

/// Longest label (RFC 1035 2.3.4).
pub const MAX_HOST_NAME: usize = 63;

/// A valid single-label host name from a DHCP client (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostName(String);

/// Why a client's host name was refused. The offending text is kept escaped
/// (no control bytes reach a log line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    /// Nothing before the first dot.
    #[error("empty host name {0:?}")]
    Empty(String),
    /// The first label is longer than [`MAX_HOST_NAME`] bytes.
    #[error("host name {name:?} is {len} bytes long, more than {MAX_HOST_NAME}")]
    TooLong {
        /// The label, escaped.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A byte other than letters, digits, `-` and `_` (or `-`/`_` first).
    #[error("host name {0:?} has characters other than letters, digits, '-' and '_'")]
    BadCharacter(String),
}

/// `bytes` with every byte outside printable ASCII written as `\xNN`.
fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

impl HostName {
    /// The host name in what a client sent: trailing NUL bytes (some
    /// Windows clients add one) and everything from the first dot on are
    /// dropped; what is left must be a valid label.
    pub fn from_client(raw: &[u8]) -> Result<HostName, HostNameError> {
        let end = raw.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let raw = &raw[..end];
        let label = raw.split(|b| *b == b'.').next().unwrap_or_default();
        if label.is_empty() {
            return Err(HostNameError::Empty(escaped(raw)));
        }
        if label.len() > MAX_HOST_NAME {
            return Err(HostNameError::TooLong {
                name: escaped(label),
                len: label.len(),
            });
        }
        let legal = label
            .iter()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && (*b == b'-' || *b == b'_')));
        if !legal {
            return Err(HostNameError::BadCharacter(escaped(raw)));
        }
        // Only ASCII is left.
        Ok(HostName(String::from_utf8_lossy(label).into_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is the same name (DNS names compare without case).
    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &[u8]) -> Result<String, HostNameError> {
        HostName::from_client(raw).map(|h| h.to_string())
    }

    #[test]
    fn only_the_first_label_is_kept() {
        assert_eq!(name(b"www.example.com").unwrap(), "www");
        assert_eq!(name(b"guest1").unwrap(), "guest1");
        assert_eq!(name(b"guest1.").unwrap(), "guest1");
        assert_eq!(name(b"Web_01-a.lab").unwrap(), "Web_01-a");
        // A trailing NUL (Windows) is not part of the name.
        assert_eq!(name(b"win\0").unwrap(), "win");
        assert_eq!(name(&[b'a'; 63]).unwrap().len(), 63);
    }

    #[test]
    fn invalid_names_are_refused_escaped() {
        for raw in [&b""[..], b".", b".example.com", b"\0\0"] {
            assert!(matches!(name(raw), Err(HostNameError::Empty(_))), "{raw:?}");
        }
        assert_eq!(
            name(&[b'a'; 64]),
            Err(HostNameError::TooLong {
                name: "a".repeat(64),
                len: 64
            })
        );
        for raw in [
            &b"-lead"[..],
            b"_lead",
            b"a b",
            b"a*",
            b"caf\xc3\xa9",
            b"evil\x1b[2J",
            b"a\0b",
            b"x/y",
        ] {
            let e = name(raw).unwrap_err();
            assert!(matches!(e, HostNameError::BadCharacter(_)), "{raw:?}");
            assert!(!e.to_string().bytes().any(|b| b.is_ascii_control()), "{e}");
        }
        let e = name(b"evil\x1b[2J").unwrap_err().to_string();
        assert!(e.contains(r"evil\\x1b[2J"), "{e}");
    }

    #[test]
    fn names_compare_without_case() {
        let h = HostName::from_client(b"Guest").unwrap();
        assert!(h.is("guest") && h.is("GUEST") && !h.is("guest2"));
    }
}
