//! Minimal DNS message inspection (RFC 1035 section 4) for relaying and answering
//! queries: the ID, the header flags, and the one question. No allocation: names are
//! decompressed into a fixed 255-byte buffer.

use std::fmt;

/// Size of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Resource record type A (IPv4 address).
pub const TYPE_A: u16 = 1;
/// Resource record type PTR (reverse lookup).
pub const TYPE_PTR: u16 = 12;
/// Resource record type AAAA (IPv6 address).
pub const TYPE_AAAA: u16 = 28;
/// Query type ANY.
pub const TYPE_ANY: u16 = 255;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// RCODE: no error.
pub const RCODE_NOERROR: u8 = 0;
/// RCODE: the query is malformed.
pub const RCODE_FORMERR: u8 = 1;
/// RCODE: the server failed (e.g. no upstream resolver answered or none is configured).
pub const RCODE_SERVFAIL: u8 = 2;
/// RCODE: the name does not exist.
pub const RCODE_NXDOMAIN: u8 = 3;
/// RCODE: the opcode is not supported.
pub const RCODE_NOTIMP: u8 = 4;
/// RCODE: refused by policy.
pub const RCODE_REFUSED: u8 = 5;
/// Longest name in wire form, length octets and root label included (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;
/// Compression pointers followed per name at most; each must also point further back.
const MAX_JUMPS: usize = 32;

/// Why a DNS message could not be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Shorter than the 12-byte header.
    #[error("DNS message is {0} bytes, shorter than the 12-byte header")]
    TooShort(usize),
    /// A query must carry exactly one question.
    #[error("DNS message has {0} questions, not 1")]
    QuestionCount(u16),
    /// The message ends inside a name or the question.
    #[error("DNS message ends inside the question (byte {offset})")]
    Truncated {
        /// Where the missing data should start.
        offset: usize,
    },
    /// A label type other than a plain label or a compression pointer (RFC 6891 obsoleted the rest).
    #[error("DNS name has an unsupported label type at byte {offset}")]
    LabelType {
        /// Where the label starts.
        offset: usize,
    },
    /// A compression pointer that does not point strictly backwards, or too many of them.
    #[error("DNS name has a bad compression pointer at byte {offset}")]
    BadPointer {
        /// Where the pointer is.
        offset: usize,
    },
    /// The decompressed name is longer than 255 bytes.
    #[error("DNS name is longer than 255 bytes")]
    NameTooLong,
}

/// The message ID, or `None` if `msg` is shorter than a header.
pub fn query_id(msg: &[u8]) -> Option<u16> {
    msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Rewrites the message ID in place (relays give each forwarded query its own ID).
/// Returns false, changing nothing, if `msg` is shorter than a header.
pub fn set_query_id(msg: &mut [u8], id: u16) -> bool {
    if msg.len() < HEADER_LEN {
        return false;
    }
    msg[..2].copy_from_slice(&id.to_be_bytes());
    true
}

/// The fixed header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message ID.
    pub id: u16,
    /// The flags word (QR, opcode, AA, TC, RD, RA, Z, RCODE).
    pub flags: u16,
    /// Number of questions.
    pub qdcount: u16,
    /// Number of answer records.
    pub ancount: u16,
    /// Number of authority records.
    pub nscount: u16,
    /// Number of additional records.
    pub arcount: u16,
}

impl Header {
    /// Reads the header of `msg`.
    pub fn parse(msg: &[u8]) -> Result<Self, MessageError> {
        let h = msg
            .get(..HEADER_LEN)
            .ok_or(MessageError::TooShort(msg.len()))?;
        let word = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Ok(Header {
            id: word(0),
            flags: word(2),
            qdcount: word(4),
            ancount: word(6),
            nscount: word(8),
            arcount: word(10),
        })
    }

    /// QR bit: this is a response.
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// The opcode (0 = standard query).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }
}

/// A domain name, decompressed, in wire form (length-prefixed labels ending with the root).
#[derive(Clone)]
pub struct Name {
    wire: [u8; MAX_NAME],
    len: u8,
}

impl Name {
    /// Reads the (possibly compressed) name at `offset` of `msg`. Returns the name and the
    /// offset just after it in the message (after the first pointer, if compressed).
    pub fn parse(msg: &[u8], offset: usize) -> Result<(Name, usize), MessageError> {
        let mut name = Name {
            wire: [0; MAX_NAME],
            len: 0,
        };
        let mut len = 0usize;
        let mut pos = offset;
        // Start of the run of labels being read; pointers must point before it, so
        // every jump goes strictly backwards and no loop is possible.
        let mut segment_start = offset;
        let mut after: Option<usize> = None;
        let mut jumps = 0;
        loop {
            let &b = msg
                .get(pos)
                .ok_or(MessageError::Truncated { offset: pos })?;
            match b & 0xc0 {
                0x00 if b == 0 => {
                    if len + 1 > MAX_NAME {
                        return Err(MessageError::NameTooLong);
                    }
                    name.wire[len] = 0;
                    name.len = (len + 1) as u8;
                    return Ok((name, after.unwrap_or(pos + 1)));
                }
                0x00 => {
                    let label_len = usize::from(b);
                    let label = msg
                        .get(pos + 1..pos + 1 + label_len)
                        .ok_or(MessageError::Truncated { offset: pos + 1 })?;
                    // Keep room for the root label.
                    if len + 1 + label_len + 1 > MAX_NAME {
                        return Err(MessageError::NameTooLong);
                    }
                    name.wire[len] = b;
                    name.wire[len + 1..len + 1 + label_len].copy_from_slice(label);
                    len += 1 + label_len;
                    pos += 1 + label_len;
                }
                0xc0 => {
                    let &low = msg
                        .get(pos + 1)
                        .ok_or(MessageError::Truncated { offset: pos + 1 })?;
                    let target = usize::from(b & 0x3f) << 8 | usize::from(low);
                    jumps += 1;
                    if target >= segment_start || jumps > MAX_JUMPS {
                        return Err(MessageError::BadPointer { offset: pos });
                    }
                    after.get_or_insert(pos + 2);
                    pos = target;
                    segment_start = target;
                }
                _ => return Err(MessageError::LabelType { offset: pos }),
            }
        }
    }

    /// Builds a name from dotted text (`www.example.com`, trailing dot optional).
    /// `None` if a label is empty or longer than 63 bytes, or the name too long.
    pub fn from_dotted(text: &str) -> Option<Name> {
        let mut name = Name {
            wire: [0; MAX_NAME],
            len: 0,
        };
        let text = text.strip_suffix('.').unwrap_or(text);
        let mut len = 0usize;
        if !text.is_empty() {
            for label in text.split('.') {
                let l = label.len();
                if l == 0 || l > 63 || len + 1 + l + 1 > MAX_NAME {
                    return None;
                }
                name.wire[len] = l as u8;
                name.wire[len + 1..len + 1 + l].copy_from_slice(label.as_bytes());
                len += 1 + l;
            }
        }
        name.wire[len] = 0;
        name.len = (len + 1) as u8;
        Some(name)
    }

    /// The uncompressed wire form, root label included.
    pub fn as_wire(&self) -> &[u8] {
        &self.wire[..usize::from(self.len)]
    }

    /// The labels, first to last, without the root.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let wire = self.as_wire();
        let mut pos = 0;
        std::iter::from_fn(move || {
            let l = usize::from(*wire.get(pos)?);
            if l == 0 {
                return None;
            }
            let label = &wire[pos + 1..pos + 1 + l];
            pos += 1 + l;
            Some(label)
        })
    }

    /// Whether both names are equal, ignoring ASCII case (RFC 4343).
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        self.as_wire().eq_ignore_ascii_case(other.as_wire())
    }

    /// Whether this name is `suffix` or lies below it, ignoring ASCII case.
    pub fn ends_with(&self, suffix: &Name) -> bool {
        // Compare the wire form from each label start: label boundaries stay aligned.
        let wire = self.as_wire();
        let mut pos = 0;
        loop {
            if wire[pos..].eq_ignore_ascii_case(suffix.as_wire()) {
                return true;
            }
            match wire[pos] {
                0 => return false,
                l => pos += 1 + usize::from(l),
            }
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.eq_ignore_case(other)
    }
}

impl Eq for Name {}

/// Dotted presentation form with a trailing dot; bytes outside printable ASCII, dots
/// and backslashes inside labels are escaped as `\DDD` (RFC 4343).
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for label in self.labels() {
            any = true;
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
        }
        if !any {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked about.
    pub name: Name,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Offset just after the question in the message.
    pub end: usize,
}

/// Reads the header and the single question of `msg`, validating the name
/// (bounded, backwards-only compression pointers, length limits).
pub fn parse_question(msg: &[u8]) -> Result<Question, MessageError> {
    let header = Header::parse(msg)?;
    if header.qdcount != 1 {
        return Err(MessageError::QuestionCount(header.qdcount));
    }
    let (name, at) = Name::parse(msg, HEADER_LEN)?;
    let fixed = msg
        .get(at..at + 4)
        .ok_or(MessageError::Truncated { offset: at })?;
    Ok(Question {
        name,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        end: at + 4,
    })
}

/// An error response to `query` with `rcode` (e.g. [`RCODE_SERVFAIL`] when no upstream
/// resolver is reachable), echoing the question when it parses. `None` if `query` is
/// not a query (shorter than a header, or a response): such messages get no answer.
pub fn error_response(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = Header::parse(query).ok()?;
    if header.is_response() {
        return None;
    }
    let question = parse_question(query).ok();
    // QR, the query's opcode and RD, RA (the server recurses), the rcode.
    let flags = 0x8000 | (header.flags & 0x7900) | 0x0080 | u16::from(rcode & 0x0f);
    let out = start_response(header.id, flags, question.as_ref());
    Some(out)
}

/// A response header with `flags`, no records counted yet, followed by `question`
/// (its name uncompressed at offset 12, where answers can point).
pub(crate) fn start_response(id: u16, flags: u16, question: Option<&Question>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let qdcount = u16::from(question.is_some());
    for word in [id, flags, qdcount, 0, 0, 0] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    if let Some(q) = question {
        out.extend_from_slice(q.name.as_wire());
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
    }
    out
}
