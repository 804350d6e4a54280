//! Error types: XML-level errors (with positions) and validation errors.

/// A definition that could not be read: malformed XML, a value that does not
/// parse, a missing required part, or (strict mode) an unknown element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The text is not well-formed XML.
    #[error("XML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What the XML reader found wrong.
        message: String,
    },
    /// An attribute or element text has a value of the wrong shape.
    #[error("line {line}, column {column}: {path} = '{value}': {expected}")]
    Value {
        /// 1-based line of the element.
        line: usize,
        /// 1-based column of the element.
        column: usize,
        /// Path of the attribute or element, e.g. `/network/ip/@address`.
        path: String,
        /// The offending value.
        value: String,
        /// What was expected instead.
        expected: String,
    },
    /// A required element or attribute is absent, or the structure is wrong.
    #[error("line {line}, column {column}: {path}: {message}")]
    Structure {
        /// 1-based line of the element.
        line: usize,
        /// 1-based column of the element.
        column: usize,
        /// Path of the element concerned.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Strict parsing met an element or attribute slipway ignores (libvirt
    /// silently drops unknown ones; see [`crate::Network::unknown`]).
    #[error("unknown element or attribute {path}: refused by strict parsing")]
    Unknown {
        /// Its path, e.g. `/network/foo`, possibly followed by a note in
        /// parentheses (repeated element, unsupported libvirt feature).
        path: String,
    },
}

/// A definition that parses but breaks one of libvirt's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{element} '{value}': {rule}")]
pub struct ValidationError {
    /// The element or attribute concerned, e.g. `/network/ip[1]/dhcp/range[2]`.
    pub element: String,
    /// The offending value.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

impl ValidationError {
    pub(crate) fn new(
        element: impl Into<String>,
        value: impl std::fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        ValidationError {
            element: element.into(),
            value: value.to_string(),
            rule: rule.into(),
        }
    }
}
