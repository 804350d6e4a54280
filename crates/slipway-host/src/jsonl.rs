//! JSON lines, the framing of slipway's control APIs (the daemon's,
//! docs/daemon-api.md, and the user-mode stack's, docs/usermode-api.md).
//!
//! A message is one JSON object on one line: [`push_line`] and
//! [`write_line`] encode it (compact JSON, then `\n`; serde_json never
//! writes a raw newline inside a value). A reader takes one line at a time
//! with a bound on its length: [`read_line`] from a blocking reader (kept
//! partial line and all, so a call cut off by a read timeout can be made
//! again), [`take_line`] from the input buffer of a non-blocking
//! connection. A failed request is answered with the same envelope in both
//! APIs, `{"error": {"code": ..., "message": ...}}`, whose body is
//! [`WireError`] over each API's own codes.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

/// The body of an error reply: a classification (each API has its own
/// codes) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError<C> {
    /// Classification.
    pub code: C,
    /// What went wrong, for people.
    pub message: String,
}

/// Appends `msg` to `out` as one line.
pub fn push_line<T: Serialize>(out: &mut Vec<u8>, msg: &T) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, msg)?;
    out.push(b'\n');
    Ok(())
}

/// Writes `msg` to `w` as one line, in one write.
pub fn write_line<T: Serialize>(mut w: impl Write, msg: &T) -> io::Result<()> {
    let mut line = Vec::new();
    push_line(&mut line, msg).map_err(io::Error::other)?;
    w.write_all(&line)
}

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// A whole line is in the buffer (without its newline).
    Line,
    /// The peer closed the connection (what the buffer holds is a partial
    /// line, or nothing).
    Closed,
    /// The line grew past the bound; the rest of it is left unread.
    TooLong,
}

/// Reads one line of at most `max` bytes (without its newline) from
/// `reader`, appending to `line`. An error (a read timeout, an
/// interruption) leaves what was read in `line`: calling again with the
/// same buffer goes on with the same line.
pub fn read_line(reader: &mut impl BufRead, max: usize, line: &mut Vec<u8>) -> io::Result<LineEnd> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(LineEnd::Closed);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len().saturating_add(take) > max {
            return Ok(LineEnd::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return Ok(LineEnd::Line);
        }
    }
}

/// A line over the bound, from [`take_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// Takes the first whole line out of `input` (the bytes a non-blocking
/// connection received so far), without its newline. `None` while no
/// whole line has arrived and the partial one is within `max` bytes;
/// [`TooLong`] once it is not (the connection should then be closed).
pub fn take_line(input: &mut Vec<u8>, max: usize) -> Option<Result<Vec<u8>, TooLong>> {
    match input.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line: Vec<u8> = input.drain(..=end).collect();
            line.pop();
            Some(Ok(line))
        }
        None if input.len() > max => Some(Err(TooLong)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Message {
        Ok(u32),
        Error(WireError<String>),
    }

    #[test]
    fn lines_are_compact_json_and_a_newline() {
        let mut out = Vec::new();
        push_line(&mut out, &Message::Ok(7)).unwrap();
        let e = Message::Error(WireError {
            code: "invalid".into(),
            message: "two\nlines".into(),
        });
        write_line(&mut out, &e).unwrap();
        assert_eq!(
            out,
            b"{\"ok\":7}\n{\"error\":{\"code\":\"invalid\",\"message\":\"two\\nlines\"}}\n"
        );
    }

    #[test]
    fn read_line_bounds_and_resumes() {
        let mut r = io::BufReader::with_capacity(4, &b"abc\n\nlonger than six\nxy"[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut r, 6, &mut line).unwrap(), LineEnd::Line);
        assert_eq!(line, b"abc");
        line.clear();
        assert_eq!(read_line(&mut r, 6, &mut line).unwrap(), LineEnd::Line);
        assert_eq!(line, b"");
        line.clear();
        assert_eq!(read_line(&mut r, 6, &mut line).unwrap(), LineEnd::TooLong);
        // Exactly the bound is a line.
        let mut r = io::BufReader::with_capacity(2, &b"123456\n12"[..]);
        line.clear();
        assert_eq!(read_line(&mut r, 6, &mut line).unwrap(), LineEnd::Line);
        assert_eq!(line, b"123456");
        line.clear();
        assert_eq!(read_line(&mut r, 6, &mut line).unwrap(), LineEnd::Closed);
        assert_eq!(line, b"12");
    }

    /// A reader that fails once in the middle of a line, as a read timeout
    /// does: the next call completes the same line.
    #[test]
    fn read_line_goes_on_after_an_error() {
        struct Flaky(Vec<&'static [u8]>, usize);
        impl io::Read for Flaky {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some(chunk) = self.0.get(self.1) else {
                    return Ok(0);
                };
                self.1 += 1;
                if chunk.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                buf[..chunk.len()].copy_from_slice(chunk);
                Ok(chunk.len())
            }
        }
        let mut r = io::BufReader::new(Flaky(vec![b"{\"o", b"", b"k\":1}\n"], 0));
        let mut line = Vec::new();
        let e = read_line(&mut r, 100, &mut line).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(read_line(&mut r, 100, &mut line).unwrap(), LineEnd::Line);
        let m: Message = serde_json::from_slice(&line).unwrap();
        assert_eq!(m, Message::Ok(1));
    }

    #[test]
    fn take_line_splits_and_bounds() {
        let mut input = b"a\nbc\nde".to_vec();
        assert_eq!(take_line(&mut input, 3), Some(Ok(b"a".to_vec())));
        assert_eq!(take_line(&mut input, 3), Some(Ok(b"bc".to_vec())));
        assert_eq!(take_line(&mut input, 3), None);
        input.extend_from_slice(b"fg");
        assert_eq!(take_line(&mut input, 3), Some(Err(TooLong)));
    }
}
