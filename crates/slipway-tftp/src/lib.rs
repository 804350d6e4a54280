//! A read-only TFTP server without sockets.
//!
//! slipway serves TFTP in two places: on the bridge of a virtual network
//! (real UDP sockets, `slipway-hostnet`) and inside the user-mode stack
//! (datagrams the stack builds itself, `slipway-usermode`). The protocol
//! lives here once, and the callers only move datagrams:
//!
//! - [`parse_request`]: a read request (RFC 1350) with the `blksize`,
//!   `tsize` and `timeout` options (RFC 2347, 2348, 2349);
//! - [`Root`]: the served directory; files are opened with `openat2`
//!   and `RESOLVE_BENEATH`, so neither `..`, an absolute path nor a
//!   symbolic link can lead out of it;
//! - [`Transfer`]: one transfer's state machine (option acknowledgement,
//!   lock-step DATA/ACK, retransmission on silence, give-up after
//!   [`RETRIES`] silent timeouts).
//!
//! A caller keeps at most [`MAX_TRANSFERS`] transfers at once and answers
//! more requests with an error, so a flood of requests costs a bounded
//! amount of memory and file descriptors.

#![deny(missing_docs)]

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{self, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Opcode of a read request.
const OP_RRQ: u16 = 1;
/// Opcode of a write request (refused: the server is read-only).
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// The well-known server port.
pub const TFTP_PORT: u16 = 69;
/// Block size without the `blksize` option (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest block size a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest block size a client may ask for (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Transfers a server runs at once; more requests get an error.
pub const MAX_TRANSFERS: usize = 32;
/// Silent timeouts after which a transfer is abandoned.
pub const RETRIES: u32 = 5;
/// Retransmission timeout when the client does not ask for one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest file name accepted in a request.
pub const MAX_FILE_NAME: usize = 255;

/// TFTP error codes (RFC 1350 section 5, RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see the message.
    Undefined = 0,
    /// File not found.
    NotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTransfer = 5,
}

/// Why a request is refused; sent to the client as an ERROR packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The TFTP error code.
    pub code: ErrorCode,
    /// The message for the client (and the log).
    pub message: &'static str,
}

impl RequestError {
    const fn new(code: ErrorCode, message: &'static str) -> Self {
        RequestError { code, message }
    }

    /// The ERROR packet that tells the client.
    pub fn packet(&self) -> Vec<u8> {
        error_packet(self.code, self.message)
    }
}

/// An ERROR packet with `code` and `message`.
pub fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + message.len());
    p.extend_from_slice(&OP_ERROR.to_be_bytes());
    p.extend_from_slice(&(code as u16).to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.push(0);
    p
}

/// A parsed read request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The file name as the client wrote it (relative to the root).
    pub file: String,
    /// Block size asked for with `blksize`, already within
    /// [`MIN_BLKSIZE`]..=[`MAX_BLKSIZE`].
    pub blksize: Option<u16>,
    /// Whether the client asked for the transfer size (`tsize`).
    pub tsize: bool,
    /// Retransmission timeout asked for with `timeout` (1 to 255 s).
    pub timeout: Option<u8>,
}

/// Parses a request datagram. Write requests, modes other than `octet`,
/// unsafe file names (empty, absolute, with `..`, too long) and malformed
/// packets are refused with the error to send back. Unknown options and
/// options with values out of range are ignored (RFC 2347: the server
/// leaves them out of its acknowledgement).
pub fn parse_request(pkt: &[u8]) -> Result<Request, RequestError> {
    const ILLEGAL: RequestError =
        RequestError::new(ErrorCode::IllegalOperation, "malformed request");
    if pkt.len() < 2 {
        return Err(ILLEGAL);
    }
    match u16::from_be_bytes([pkt[0], pkt[1]]) {
        OP_RRQ => {}
        OP_WRQ => {
            return Err(RequestError::new(
                ErrorCode::AccessViolation,
                "the server is read-only",
            ))
        }
        _ => {
            return Err(RequestError::new(
                ErrorCode::IllegalOperation,
                "only read requests are served",
            ))
        }
    }
    // Every field ends with a NUL; a last field without one is malformed.
    let body = &pkt[2..];
    if body.last() != Some(&0) {
        return Err(ILLEGAL);
    }
    let mut fields = body[..body.len() - 1].split(|b| *b == 0);
    let file = fields.next().ok_or(ILLEGAL)?;
    let mode = fields.next().ok_or(ILLEGAL)?;
    if !mode.eq_ignore_ascii_case(b"octet") {
        return Err(RequestError::new(
            ErrorCode::IllegalOperation,
            "only octet mode is served",
        ));
    }
    let file = check_file_name(file)?;
    let mut req = Request {
        file,
        blksize: None,
        tsize: false,
        timeout: None,
    };
    loop {
        let (name, value) = match (fields.next(), fields.next()) {
            (Some(n), Some(v)) => (n, v),
            (None, None) => break,
            _ => return Err(ILLEGAL),
        };
        let value = small_number(value);
        if name.eq_ignore_ascii_case(b"blksize") {
            req.blksize = value
                .filter(|v| *v >= u64::from(MIN_BLKSIZE))
                .map(|v| v.min(u64::from(MAX_BLKSIZE)) as u16);
        } else if name.eq_ignore_ascii_case(b"tsize") {
            req.tsize = value == Some(0);
        } else if name.eq_ignore_ascii_case(b"timeout") {
            req.timeout = value.filter(|v| (1..=255).contains(v)).map(|v| v as u8);
        }
    }
    Ok(req)
}

/// A decimal option value of at most 10 digits (larger values are out of
/// every option's range anyway).
fn small_number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn check_file_name(name: &[u8]) -> Result<String, RequestError> {
    let refuse = |message| Err(RequestError::new(ErrorCode::AccessViolation, message));
    if name.is_empty() {
        return refuse("empty file name");
    }
    if name.len() > MAX_FILE_NAME {
        return refuse("file name too long");
    }
    let Ok(name) = std::str::from_utf8(name) else {
        return refuse("file name is not UTF-8");
    };
    if name.starts_with('/') {
        return refuse("absolute paths are refused");
    }
    if name.split('/').any(|c| c == "..") {
        return refuse("'..' is refused");
    }
    Ok(name.to_string())
}

/// The served directory, held open so that every file is looked up
/// beneath it by the kernel.
#[derive(Debug)]
pub struct Root {
    dir: File,
    path: PathBuf,
}

impl Root {
    /// Opens `path` as the root. Fails if it is not a readable directory.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let dir = fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            dir: File::from(dir),
            path: path.to_path_buf(),
        })
    }

    /// The directory's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `name` (checked by [`parse_request`])
    /// beneath the root; returns it with its size.
    pub fn open_file(&self, name: &str) -> Result<(File, u64), RequestError> {
        const NOT_FOUND: RequestError = RequestError::new(ErrorCode::NotFound, "file not found");
        const ACCESS: RequestError =
            RequestError::new(ErrorCode::AccessViolation, "access violation");
        let c = CString::new(name).map_err(|_| NOT_FOUND)?;
        // O_NONBLOCK: a FIFO planted in the root must not hang the server.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let file = fs::openat2(&self.dir, c.as_c_str(), flags, Mode::empty(), resolve)
            .map(File::from)
            .map_err(|e| match e {
                Errno::NOENT | Errno::NOTDIR => NOT_FOUND,
                _ => ACCESS,
            })?;
        match file.metadata() {
            Ok(m) if m.is_file() => Ok((file, m.len())),
            _ => Err(ACCESS),
        }
    }
}

/// What the caller does after feeding a [`Transfer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send [`Transfer::packet`] (a new block, or the last one again).
    Send,
    /// Nothing to send (a duplicate or stray packet).
    Wait,
    /// The last block was acknowledged: the transfer is complete.
    Finished,
    /// The transfer is over without success (the reason is for the log).
    Failed(String),
}

/// One read transfer: the file, the packet last sent and its timer.
#[derive(Debug)]
pub struct Transfer {
    file: File,
    size: u64,
    blksize: usize,
    timeout: Duration,
    /// Block number of the packet last sent (0 for an OACK).
    block: u16,
    packet: Vec<u8>,
    /// Whether the packet last sent is the final DATA block.
    last: bool,
    silent_timeouts: u32,
    deadline: Instant,
    sent: u64,
}

impl Transfer {
    /// Starts serving `req` from `root`; `max_blksize` is the largest block
    /// the path to the client carries (the link MTU less the headers).
    /// Returns the transfer with its first packet (an OACK when the client
    /// asked for options, otherwise DATA block 1) ready to send.
    pub fn start(
        root: &Root,
        req: &Request,
        max_blksize: u16,
        now: Instant,
    ) -> Result<Transfer, RequestError> {
        let (file, size) = root.open_file(&req.file)?;
        let blksize = req
            .blksize
            .map(|b| b.min(max_blksize).max(MIN_BLKSIZE))
            .unwrap_or(DEFAULT_BLKSIZE);
        let timeout = req
            .timeout
            .map(|t| Duration::from_secs(u64::from(t)))
            .unwrap_or(DEFAULT_TIMEOUT);
        let mut t = Transfer {
            file,
            size,
            blksize: usize::from(blksize),
            timeout,
            block: 0,
            packet: Vec::with_capacity(4 + usize::from(blksize)),
            last: false,
            silent_timeouts: 0,
            deadline: now + timeout,
            sent: 0,
        };
        if req.blksize.is_some() || req.tsize || req.timeout.is_some() {
            t.packet.extend_from_slice(&OP_OACK.to_be_bytes());
            let mut option = |name: &str, value: String| {
                t.packet.extend_from_slice(name.as_bytes());
                t.packet.push(0);
                t.packet.extend_from_slice(value.as_bytes());
                t.packet.push(0);
            };
            if req.blksize.is_some() {
                option("blksize", blksize.to_string());
            }
            if req.tsize {
                option("tsize", size.to_string());
            }
            if let Some(secs) = req.timeout {
                option("timeout", secs.to_string());
            }
        } else {
            t.next_block()
                .map_err(|_| RequestError::new(ErrorCode::AccessViolation, "cannot read file"))?;
        }
        Ok(t)
    }

    /// The packet to send (again).
    pub fn packet(&self) -> &[u8] {
        &self.packet
    }

    /// When [`Transfer::on_timeout`] is due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Bytes of the file sent and acknowledged so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Handles a packet from the client (an ACK or an ERROR).
    pub fn on_packet(&mut self, pkt: &[u8], now: Instant) -> Step {
        if pkt.len() < 4 {
            return Step::Wait;
        }
        let op = u16::from_be_bytes([pkt[0], pkt[1]]);
        let n = u16::from_be_bytes([pkt[2], pkt[3]]);
        match op {
            OP_ERROR => Step::Failed(format!(
                "the client ended the transfer with error {n}: {}",
                String::from_utf8_lossy(pkt[4..].split(|b| *b == 0).next().unwrap_or(&[]))
            )),
            // A duplicate or early ACK: never resend on it (the Sorcerer's
            // Apprentice bug, RFC 1123 4.2.3.1); the timer resends.
            OP_ACK if n != self.block => Step::Wait,
            OP_ACK => {
                if self.is_data() {
                    self.sent += (self.packet.len() - 4) as u64;
                }
                if self.last {
                    return Step::Finished;
                }
                self.silent_timeouts = 0;
                self.deadline = now + self.timeout;
                match self.next_block() {
                    Ok(()) => Step::Send,
                    Err(e) => Step::Failed(format!("reading the file: {e}")),
                }
            }
            _ => Step::Wait,
        }
    }

    /// Handles the expiry of [`Transfer::deadline`]: resend, or give up
    /// after [`RETRIES`] silent timeouts.
    pub fn on_timeout(&mut self, now: Instant) -> Step {
        self.silent_timeouts += 1;
        if self.silent_timeouts > RETRIES {
            return Step::Failed(format!("no acknowledgement of block {}", self.block));
        }
        self.deadline = now + self.timeout;
        Step::Send
    }

    fn is_data(&self) -> bool {
        self.packet.get(..2) == Some(&OP_DATA.to_be_bytes()[..])
    }

    /// Reads the next block into the packet buffer.
    fn next_block(&mut self) -> std::io::Result<()> {
        // Block numbers wrap past 65535, as common clients expect.
        self.block = self.block.wrapping_add(1);
        self.packet.clear();
        self.packet.extend_from_slice(&OP_DATA.to_be_bytes());
        self.packet.extend_from_slice(&self.block.to_be_bytes());
        self.packet.resize(4 + self.blksize, 0);
        let mut n = 0;
        while n < self.blksize {
            match self.file.read(&mut self.packet[4 + n..]) {
                Ok(0) => break,
                Ok(r) => n += r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.packet.truncate(4 + n);
        self.last = n < self.blksize;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
