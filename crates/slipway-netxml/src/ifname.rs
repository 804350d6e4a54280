//! Network device names: [`IfName`], a name the kernel accepts, checked once
//! where it comes in (XML) so it can reach the host only in that form.

use std::fmt;

/// The kernel's `IFNAMSIZ`: a name and its terminating NUL.
const IFNAMSIZ: usize = 16;

/// A network device name the Linux kernel accepts (`dev_valid_name`): 1 to
/// 15 bytes, not `.` or `..`, no `/`, `:`, NUL or white space (the kernel's
/// `isspace`, which also counts the byte 0xA0). `%` is refused too: the
/// kernel reads it as a template (`virbr%d`) when it creates a device.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

/// Why a name is not an [`IfName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    /// The name is empty.
    #[error("invalid interface name: empty")]
    Empty,
    /// Longer than the kernel's limit.
    #[error("invalid interface name: {0} bytes long, at most 15 allowed")]
    TooLong(usize),
    /// `.` or `..`.
    #[error("invalid interface name: '.' and '..' are not allowed")]
    Dots,
    /// A character the kernel refuses.
    #[error("invalid interface name: must not contain {0}")]
    BadChar(&'static str),
}

impl IfName {
    /// Checks `name` as the kernel does.
    pub fn new(name: impl Into<String>) -> Result<IfName, IfNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(IfNameError::Empty);
        }
        if name.len() >= IFNAMSIZ {
            return Err(IfNameError::TooLong(name.len()));
        }
        if name == "." || name == ".." {
            return Err(IfNameError::Dots);
        }
        for b in name.bytes() {
            let bad = match b {
                b'/' => "'/'",
                b':' => "':'",
                b'%' => "'%'",
                0 => "NUL",
                // The kernel's isspace(): ASCII white space, vertical tab, 0xA0.
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0 => "white space",
                _ => continue,
            };
            return Err(IfNameError::BadChar(bad));
        }
        Ok(IfName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = IfNameError;
    fn try_from(s: String) -> Result<IfName, IfNameError> {
        IfName::new(s)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rules() {
        for ok in [
            "eth0",
            "virbr0",
            "br.100",
            "a\";b",
            "x'y",
            "123456789012345",
        ] {
            assert_eq!(IfName::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(IfName::new(""), Err(IfNameError::Empty));
        assert_eq!(
            IfName::new("1234567890123456"),
            Err(IfNameError::TooLong(16))
        );
        assert_eq!(IfName::new(".."), Err(IfNameError::Dots));
        assert_eq!(IfName::new("a/b"), Err(IfNameError::BadChar("'/'")));
        assert_eq!(IfName::new("a:1"), Err(IfNameError::BadChar("':'")));
        assert_eq!(IfName::new("br%d"), Err(IfNameError::BadChar("'%'")));
        assert_eq!(
            IfName::new("a\u{b}b"),
            Err(IfNameError::BadChar("white space"))
        );
        // U+00E0 is C3 A0 in UTF-8: the kernel's isspace(0xA0) refuses it.
        assert_eq!(
            IfName::new("\u{e0}"),
            Err(IfNameError::BadChar("white space"))
        );
        assert_eq!(
            IfName::new("eth0\" accept; add table inet pwned; #")
                .unwrap_err()
                .to_string(),
            "invalid interface name: 37 bytes long, at most 15 allowed"
        );
        assert_eq!(
            IfName::new("e\" accept; #").unwrap_err().to_string(),
            "invalid interface name: must not contain white space"
        );
        let json = serde_json::to_string(&IfName::new("br0").unwrap()).unwrap();
        assert_eq!(json, "\"br0\"");
        assert!(serde_json::from_str::<IfName>("\"a/b\"").is_err());
    }
}
