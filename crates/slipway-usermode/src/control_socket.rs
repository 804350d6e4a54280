//! A unix stream socket on the host, served from the stack's event loop:
//! what the control APIs ([`crate::api`], [`crate::slirp4netns_api`])
//! share, whatever they speak over it.
//!
//! The socket file is created with mode 0600 (only the user running the
//! stack can connect), a stale file left by a process that is gone is
//! replaced, and the file is removed when the server is dropped. Clients
//! are non-blocking and served between frames: a client that sends
//! nothing, or reads nothing, never holds the stack up. Each server owns
//! a range of [`TokenKind::Control`] indices, so several can share one
//! `mio::Poll`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry};

use slipway_host::free_slot;

use crate::iface::{token, TokenKind};

/// Why the API socket could not be opened, or a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be created, bound or reached.
    #[error("control API socket {path}: {what}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// The host's error.
        source: std::io::Error,
    },
    /// The server's reply is not a reply line.
    #[error("control API: unreadable reply: {0}")]
    BadReply(String),
}

/// Most clients connected at once, per socket.
pub(crate) const MAX_CLIENTS: usize = 32;
/// Reply bytes a client may leave unread before it is disconnected.
const MAX_PENDING_REPLY: usize = 16 * 1024 * 1024;

/// What the protocol wants once it has looked at a client's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Keep reading requests.
    Read,
    /// Read no more; close the connection once the replies are written.
    Close,
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    closing: bool,
}

/// A listening socket and its clients, under [`TokenKind::Control`]
/// indices `first_index` (the listener) to `first_index + MAX_CLIENTS`.
pub(crate) struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
    clients: Vec<Option<Client>>,
    first_index: usize,
    what: &'static str,
}

impl ControlSocket {
    /// Creates the socket at `path` (mode 0600, a stale file replaced) and
    /// registers it under index `first_index`; `what` names it in logs.
    pub(crate) fn open(
        path: &Path,
        registry: &Registry,
        first_index: usize,
        what: &'static str,
    ) -> Result<ControlSocket, ApiError> {
        let err = |step| {
            move |source| ApiError::Socket {
                path: path.to_path_buf(),
                what: step,
                source,
            }
        };
        crate::link::remove_stale_socket(path, true).map_err(err("socket file"))?;
        let mut listener = UnixListener::bind(path).map_err(err("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(err("permissions"))?;
        registry
            .register(
                &mut listener,
                token(TokenKind::Control, first_index),
                Interest::READABLE,
            )
            .map_err(err("register"))?;
        tracing::info!(path = %path.display(), "{what} listening");
        Ok(ControlSocket {
            path: path.to_path_buf(),
            listener,
            clients: Vec::new(),
            first_index,
            what,
        })
    }

    /// Whether [`TokenKind::Control`] index `index` is this socket's.
    pub(crate) fn owns(&self, index: usize) -> bool {
        (self.first_index..=self.first_index + MAX_CLIENTS).contains(&index)
    }

    /// Handles readiness of index `index` (the listener or a client).
    /// `handle(input, eof, output)` is given a client's unconsumed input
    /// after each read (`eof`: the client shut its write side), takes the
    /// complete requests out of it and appends their replies to `output`.
    pub(crate) fn on_event(
        &mut self,
        registry: &Registry,
        index: usize,
        mut handle: impl FnMut(&mut Vec<u8>, bool, &mut Vec<u8>) -> Next,
    ) {
        if index == self.first_index {
            self.accept(registry);
            return;
        }
        let Some(slot) = index.checked_sub(self.first_index + 1) else {
            return;
        };
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        if !serve(client, &mut handle) {
            if let Some(mut client) = self.clients[slot].take() {
                let _ = registry.deregister(&mut client.stream);
            }
        }
    }

    fn accept(&mut self, registry: &Registry) {
        let what = self.what;
        loop {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::warn!(%err, "{what}: accept");
                    return;
                }
            };
            let Some(slot) = free_slot(&mut self.clients, MAX_CLIENTS) else {
                tracing::warn!("{what}: too many clients; connection closed");
                continue;
            };
            if let Err(err) = registry.register(
                &mut stream,
                token(TokenKind::Control, self.first_index + 1 + slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(%err, "{what}: registering a client");
                continue;
            }
            self.clients[slot] = Some(Client {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                closing: false,
            });
        }
    }
}

/// Reads what the client sent and lets `handle` answer it, then writes
/// what the socket takes. Returns false when the client is to be dropped.
fn serve(
    client: &mut Client,
    handle: &mut impl FnMut(&mut Vec<u8>, bool, &mut Vec<u8>) -> Next,
) -> bool {
    let mut buf = [0u8; 4096];
    while !client.closing {
        let eof = match client.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                client.input.extend_from_slice(&buf[..n]);
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        // A client that closed its end gets the replies it asked for first.
        if handle(&mut client.input, eof, &mut client.output) == Next::Close || eof {
            client.closing = true;
        }
    }
    if !flush(&mut client.stream, &mut client.output) || client.output.len() > MAX_PENDING_REPLY {
        return false;
    }
    !(client.closing && client.output.is_empty())
}

/// Writes `output` to a non-blocking `stream` until it is all written or
/// the socket is full, draining what was written; false when the peer is
/// gone.
pub(crate) fn flush(stream: &mut impl Write, output: &mut Vec<u8>) -> bool {
    while !output.is_empty() {
        match stream.write(output) {
            Ok(0) => return false,
            Ok(n) => {
                output.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::debug!(%err, path = %self.path.display(), "removing the {} socket", self.what);
        }
    }
}
