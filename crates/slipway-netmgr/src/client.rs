//! A client of the daemon's JSON-lines API.

use std::io::{BufReader, ErrorKind};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slipway_host::jsonl::{self, LineEnd};

use crate::error::{Error, Result};
use crate::proto::{into_result, Event, Reply, Request, WireMessage};

/// One connection to the daemon.
pub struct Client {
    socket: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the daemon's socket. `Err` with `NotFound` or
    /// `ConnectionRefused` means no daemon is running.
    pub fn connect(socket: &Path) -> std::io::Result<Client> {
        let writer = UnixStream::connect(socket)?;
        let reader = BufReader::new(writer.try_clone()?);
        Ok(Client {
            socket: socket.to_path_buf(),
            writer,
            reader,
        })
    }

    /// Whether the daemon ended the connection while no request was out
    /// (it closes idle ones, with a parting error line): anything readable
    /// now, data or end of file, says so.
    fn closed_by_daemon(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let mut byte = 0u8;
        // SAFETY: `byte` is valid for a write of one byte.
        let n = unsafe {
            libc::recv(
                self.writer.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n >= 0
            || !matches!(
                std::io::Error::last_os_error().kind(),
                ErrorKind::WouldBlock | ErrorKind::Interrupted
            )
    }

    /// Sends one request and waits for its reply. A connection the daemon
    /// closed for idleness (see docs/daemon-api.md) is opened again first.
    pub fn call(&mut self, req: &Request) -> Result<Reply> {
        if self.closed_by_daemon() {
            *self = Client::connect(&self.socket)
                .map_err(|e| Error::Protocol(format!("cannot reconnect to the daemon: {e}")))?;
        }
        jsonl::write_line(&self.writer, req)
            .map_err(|e| Error::Protocol(format!("cannot send request: {e}")))?;
        let msg = self
            .read_message(None)?
            .ok_or_else(|| Error::Protocol("timed out".into()))?;
        into_result(msg)
    }

    /// Subscribes to lifecycle events; the connection then only delivers events.
    pub fn subscribe(mut self) -> Result<EventStream> {
        match self.call(&Request::Subscribe)? {
            Reply::Subscribed => Ok(EventStream { client: self }),
            other => Err(Error::Protocol(format!(
                "unexpected reply to subscribe: {other:?}"
            ))),
        }
    }

    /// Reads one message; `None` when `deadline` passes first.
    fn read_message(&mut self, deadline: Option<Instant>) -> Result<Option<WireMessage>> {
        let mut line = Vec::new();
        loop {
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
                None => None,
            };
            self.reader
                .get_ref()
                .set_read_timeout(timeout)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            // read_line keeps what it read before a timeout in `line`, so a
            // line split across timeouts is still assembled whole.
            match jsonl::read_line(&mut self.reader, usize::MAX, &mut line) {
                Ok(LineEnd::Line) => {
                    return serde_json::from_slice(&line)
                        .map(Some)
                        .map_err(|e| Error::Protocol(format!("bad message from the daemon: {e}")))
                }
                Ok(_) => return Err(Error::Protocol("the daemon closed the connection".into())),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(Error::Protocol(format!("cannot read from the daemon: {e}"))),
            }
        }
    }
}

/// A subscribed connection delivering lifecycle events.
pub struct EventStream {
    client: Client,
}

impl EventStream {
    /// The next event, or `None` if `timeout` passes first.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            match self.client.read_message(deadline)? {
                None => return Ok(None),
                Some(WireMessage::Event(ev)) => return Ok(Some(ev)),
                Some(other) => tracing::debug!("ignoring non-event message {other:?}"),
            }
        }
    }
}
