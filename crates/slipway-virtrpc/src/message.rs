//! Message framing of libvirt's RPC protocol (`src/rpc/virnetprotocol.x`,
//! `virnetmessage.c`): a 4-byte big-endian length word that counts the
//! whole message (itself included), a 24-byte header, then the XDR payload.
//!
//! [`FrameReader`] cuts a byte stream into messages incrementally, with
//! libvirt's bounds: a length word under 4 or over
//! [`MESSAGE_MAX`]` + 4` ends the connection, as libvirtd ends it. It
//! buffers at most [`MAX_BUFFERED`] bytes of one message: no call of the
//! network driver can be longer (its longest argument is one string of at
//! most [`STRING_MAX`] bytes), so the rest of a longer message is read and
//! dropped, and the message is answered with the error libvirtd gives a
//! payload it cannot decode, without holding 32 MiB per connection. A
//! read-only connection (anyone may open one) keeps at most
//! [`MAX_BUFFERED_READ_ONLY`]: the calls it may make carry names, UUIDs
//! and flags, never a document.

use crate::xdr::{Reader, Writer, XdrError};

/// libvirt's `VIR_NET_MESSAGE_MAX`: the longest message, length word excluded.
pub const MESSAGE_MAX: usize = 33_554_432;
/// `VIR_NET_MESSAGE_LEN_MAX`: the length word.
pub const LEN_SIZE: usize = 4;
/// `VIR_NET_MESSAGE_HEADER_MAX`: the header.
pub const HEADER_SIZE: usize = 24;
/// `VIR_NET_MESSAGE_STRING_MAX` (and `REMOTE_STRING_MAX`): the longest string.
pub const STRING_MAX: u32 = 4_194_304;
/// `VIR_NET_MESSAGE_NUM_FDS_MAX`: descriptors one message may carry.
pub const NUM_FDS_MAX: u32 = 32;
/// The most of one message kept in memory: the header and a payload of one
/// longest string plus 64 KiB for the other arguments.
pub const MAX_BUFFERED: usize = HEADER_SIZE + STRING_MAX as usize + 65_536;
/// The most of one message kept for a read-only connection.
pub const MAX_BUFFERED_READ_ONLY: usize = 65_536;

/// `REMOTE_PROGRAM`.
pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
/// `REMOTE_PROTOCOL_VERSION`.
pub const REMOTE_VERSION: u32 = 1;
/// `KEEPALIVE_PROGRAM` ("keep").
pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
/// `KEEPALIVE_PROTOCOL_VERSION`.
pub const KEEPALIVE_VERSION: u32 = 1;
/// `KEEPALIVE_PROC_PING`.
pub const KEEPALIVE_PING: i32 = 1;
/// `KEEPALIVE_PROC_PONG`.
pub const KEEPALIVE_PONG: i32 = 2;

/// `virNetMessageType`.
pub mod kind {
    /// Client to server: a method call.
    pub const CALL: u32 = 0;
    /// Server to client: its reply.
    pub const REPLY: u32 = 1;
    /// Either way: an asynchronous message (events, keepalive).
    pub const MESSAGE: u32 = 2;
    /// Stream data.
    pub const STREAM: u32 = 3;
    /// A call carrying file descriptors.
    pub const CALL_WITH_FDS: u32 = 4;
}

/// `virNetMessageStatus`.
pub mod status {
    /// Success (and every call).
    pub const OK: u32 = 0;
    /// The reply carries a `virNetMessageError`.
    pub const ERROR: u32 = 1;
}

/// `virNetMessageHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Program.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure.
    pub proc_: i32,
    /// [`kind`].
    pub kind: u32,
    /// Serial; a reply repeats its call's.
    pub serial: u32,
    /// [`status`].
    pub status: u32,
}

impl Header {
    /// Decodes the header at the start of `body` (a message without its
    /// length word); returns it and the payload.
    pub fn decode(body: &[u8]) -> Result<(Header, &[u8]), XdrError> {
        let mut r = Reader::new(body);
        let h = Header {
            prog: r.u32()?,
            vers: r.u32()?,
            proc_: r.i32()?,
            kind: r.u32()?,
            serial: r.u32()?,
            status: r.u32()?,
        };
        Ok((h, &body[r.position()..]))
    }

    /// The whole message with this header and `payload`, length word first.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32((LEN_SIZE + HEADER_SIZE + payload.len()) as u32)
            .u32(self.prog)
            .u32(self.vers)
            .i32(self.proc_)
            .u32(self.kind)
            .u32(self.serial)
            .u32(self.status);
        let mut out = w.into_bytes();
        out.extend_from_slice(payload);
        out
    }
}

/// A complete message as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Header and payload (everything after the length word).
    Whole(Vec<u8>),
    /// A message longer than the reader keeps: only its first bytes were
    /// kept (enough for the header, if it had one).
    Oversized(Vec<u8>),
}

/// A stream that cannot be read as messages any more; the connection is
/// closed, as libvirtd closes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `packet N bytes received from server too small, want 4`.
    #[error("packet {0} bytes received too small, want {LEN_SIZE}")]
    TooSmall(u32),
    /// `packet N bytes received from server too large, want 33554432`.
    #[error("packet {0} bytes received too large, want {MESSAGE_MAX}")]
    TooLarge(u32),
}

/// Cuts a byte stream into [`Frame`]s.
#[derive(Debug)]
pub struct FrameReader {
    len_word: [u8; LEN_SIZE],
    len_have: usize,
    /// Bytes of the current message after its length word, once known.
    want: Option<usize>,
    body: Vec<u8>,
    /// Bytes of the current message read past `keep`.
    dropped: usize,
    /// The most of one message kept.
    keep: usize,
}

impl Default for FrameReader {
    fn default() -> FrameReader {
        FrameReader::with_limit(MAX_BUFFERED)
    }
}

impl FrameReader {
    /// A reader at a message boundary.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// A reader keeping at most `keep` bytes of a message.
    pub fn with_limit(keep: usize) -> FrameReader {
        FrameReader {
            len_word: [0; LEN_SIZE],
            len_have: 0,
            want: None,
            body: Vec::new(),
            dropped: 0,
            keep,
        }
    }

    /// Whether a message has started and is not complete.
    pub fn in_message(&self) -> bool {
        self.len_have > 0
    }

    /// Consumes bytes of `data` up to the end of one message at most;
    /// returns how many were consumed and the message, if it completed.
    pub fn push(&mut self, data: &[u8]) -> Result<(usize, Option<Frame>), FrameError> {
        let mut used = 0;
        if self.want.is_none() {
            let n = (LEN_SIZE - self.len_have).min(data.len());
            self.len_word[self.len_have..self.len_have + n].copy_from_slice(&data[..n]);
            self.len_have += n;
            used += n;
            if self.len_have < LEN_SIZE {
                return Ok((used, None));
            }
            let len = u32::from_be_bytes(self.len_word);
            if (len as usize) < LEN_SIZE {
                return Err(FrameError::TooSmall(len));
            }
            let rest = len as usize - LEN_SIZE;
            if rest > MESSAGE_MAX {
                return Err(FrameError::TooLarge(len));
            }
            self.want = Some(rest);
            self.body = Vec::with_capacity(rest.min(65_536));
        }
        let want = self.want.expect("set above");
        let have = self.body.len() + self.dropped;
        let n = (want - have).min(data.len() - used);
        let chunk = &data[used..used + n];
        let keep = n.min(self.keep.saturating_sub(self.body.len()));
        self.body.extend_from_slice(&chunk[..keep]);
        self.dropped += n - keep;
        used += n;
        if self.body.len() + self.dropped < want {
            return Ok((used, None));
        }
        let body = std::mem::take(&mut self.body);
        let oversized = self.dropped > 0;
        *self = FrameReader::with_limit(self.keep);
        Ok((
            used,
            Some(if oversized {
                Frame::Oversized(body)
            } else {
                Frame::Whole(body)
            }),
        ))
    }
}

/// libvirt's `virNetMessageError`: what an ERROR reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// `virErrorNumber`.
    pub code: i32,
    /// `virErrorDomain`.
    pub domain: i32,
    /// The whole message as clients print it.
    pub message: String,
}

impl RpcError {
    /// The XDR payload: code, domain, message, level (always
    /// `VIR_ERR_ERROR`), no domain, three empty strings, two zero ints, no
    /// network.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i32(self.code)
            .i32(self.domain)
            .opt_string(Some(&self.message))
            .i32(2)
            .bool(false)
            .opt_string(None)
            .opt_string(None)
            .opt_string(None)
            .i32(0)
            .i32(0)
            .bool(false);
        w.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(proc_: i32, payload: &[u8]) -> Vec<u8> {
        Header {
            prog: REMOTE_PROGRAM,
            vers: REMOTE_VERSION,
            proc_,
            kind: kind::CALL,
            serial: 9,
            status: status::OK,
        }
        .encode(payload)
    }

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let mut stream = call(66, &[]);
        stream.extend(call(1, &[0, 0, 0, 0, 0, 0, 0, 0]));
        for cut in 0..stream.len() {
            let mut r = FrameReader::new();
            let mut frames = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                let mut piece = piece;
                while !piece.is_empty() {
                    let (n, f) = r.push(piece).unwrap();
                    piece = &piece[n..];
                    frames.extend(f);
                }
            }
            assert_eq!(frames.len(), 2, "cut at {cut}");
            let Frame::Whole(b) = &frames[1] else {
                panic!()
            };
            let (h, payload) = Header::decode(b).unwrap();
            assert_eq!((h.proc_, h.serial, payload.len()), (1, 9, 8));
        }
    }

    #[test]
    fn libvirts_length_bounds() {
        let mut r = FrameReader::new();
        assert_eq!(r.push(&[0, 0, 0, 3]), Err(FrameError::TooSmall(3)));
        let mut r = FrameReader::new();
        let over = (MESSAGE_MAX + LEN_SIZE + 1) as u32;
        assert_eq!(r.push(&over.to_be_bytes()), Err(FrameError::TooLarge(over)));
        // The largest allowed length is taken, kept only up to the bound.
        let max = (MESSAGE_MAX + LEN_SIZE) as u32;
        let mut r = FrameReader::new();
        assert_eq!(r.push(&max.to_be_bytes()).unwrap(), (4, None));
        let chunk = vec![0u8; 1 << 20];
        let mut frame = None;
        while frame.is_none() {
            let (n, f) = r.push(&chunk).unwrap();
            assert!(n > 0);
            frame = f;
        }
        let Some(Frame::Oversized(kept)) = frame else {
            panic!()
        };
        assert_eq!(kept.len(), MAX_BUFFERED);
        // An empty message (length word only) is a frame without a header.
        let mut r = FrameReader::new();
        assert_eq!(
            r.push(&[0, 0, 0, 4]).unwrap(),
            (4, Some(Frame::Whole(Vec::new())))
        );
    }

    #[test]
    fn error_payload_layout() {
        let e = RpcError {
            code: 43,
            domain: 19,
            message: "x".into(),
        };
        let b = e.encode();
        // code, domain, (1, len 1, "x" + pad), level, 3 null strings + dom,
        // int1, int2, net.
        assert_eq!(b.len(), 4 + 4 + 12 + 4 + 4 + 12 + 8 + 4);
        assert_eq!(&b[..8], &[0, 0, 0, 43, 0, 0, 0, 19]);
    }
}
