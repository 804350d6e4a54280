//! The daemon under systemd (`slipway.socket`, `slipway.service`,
//! `Type=notify`): the listening socket systemd passed, readiness and
//! stopping notifications, and a clean stop on SIGTERM, SIGINT or SIGHUP.
//!
//! Socket activation: the daemon serves the descriptor named `json`
//! (`FileDescriptorName=json` in `slipway.socket`), or the only one when
//! a single unnamed descriptor was passed; it must be a listening unix
//! stream socket. Descriptors under other names go to the servers started
//! with the daemon that take them (libvirt's RPC takes
//! `virtnetworkd.socket` and `virtnetworkd-ro.socket`, the names libvirt's
//! own socket units give them); any other is logged and closed. With only
//! other servers' sockets, or without activation, the daemon binds its
//! JSON socket itself.
//!
//! Stopping: the signals are taken from a descriptor by a thread of their
//! own ([`slipway_host::signals`]), created before any other thread so
//! that every thread has them blocked. On SIGTERM, SIGINT or SIGHUP the
//! daemon logs why it stops, tells systemd `STOPPING=1`, finishes the
//! request in progress, removes its socket file and exits 0. Running
//! networks and their services stay up, as libvirt's do when libvirtd
//! stops (the unit's `KillMode=process` keeps systemd from killing the
//! services); the next daemon takes them over (recovery).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use slipway_host::signals::Signals;
use slipway_host::systemd::{self, Notifier};

use crate::error::{Error, Result};
use crate::manager::Manager;

/// The `FileDescriptorName=` of the daemon's JSON socket.
pub(crate) const JSON_SOCKET_NAME: &str = "json";

/// The daemon's systemd integration, set up before any thread starts.
pub(crate) struct ServiceManager {
    notifier: Option<Notifier>,
    signals: Signals,
}

impl ServiceManager {
    /// Blocks SIGTERM and SIGINT (taken later by [`Self::stop_on_signals`])
    /// and connects to `$NOTIFY_SOCKET` when set. Call before starting any
    /// thread.
    pub(crate) fn new() -> Result<ServiceManager> {
        let signals = Signals::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
            .map_err(|e| Error::Activation(format!("cannot take SIGTERM/SIGINT/SIGHUP: {e}")))?;
        let notifier = Notifier::from_env()
            .map_err(|e| Error::Activation(format!("cannot connect to $NOTIFY_SOCKET: {e}")))?;
        // The networks' services (and what they run) are not the service
        // systemd waits for; no thread runs yet to race with this.
        std::env::remove_var("NOTIFY_SOCKET");
        Ok(ServiceManager { notifier, signals })
    }

    /// Tells systemd the daemon is ready (a no-op without it).
    pub(crate) fn ready(&self, status: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.ready(status) {
                tracing::warn!("cannot notify systemd of readiness: {e}");
            }
        }
    }

    /// Starts the thread that, on SIGTERM, SIGINT or SIGHUP, logs why the
    /// daemon stops, waits for a request in progress (the manager's lock,
    /// held until the exit), removes `own_socket` (the socket file the
    /// daemon bound itself: nobody connects to a daemon that is gone; a
    /// socket systemd passed stays, its unit owns it), notifies
    /// `STOPPING=1` and exits the process with status 0. Running networks
    /// stay up.
    pub(crate) fn stop_on_signals(
        self,
        manager: Arc<Manager>,
        own_socket: Option<PathBuf>,
    ) -> Result<()> {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let signal = match self.signals.wait() {
                    Ok(signo) => slipway_host::signals::signal_name(signo),
                    Err(e) => {
                        tracing::error!(
                            "cannot read signals: {e}; SIGTERM now ends the daemon without notice"
                        );
                        return;
                    }
                };
                tracing::info!(
                    target: "slipway::lifecycle",
                    %signal,
                    "slipway daemon stopping: {signal} received (running networks stay up)"
                );
                if let Some(n) = &self.notifier {
                    let why = format!("stopping: {signal} received; running networks stay up");
                    if let Err(e) = n.stopping(&why) {
                        tracing::warn!("cannot notify systemd of stopping: {e}");
                    }
                }
                let _guard = manager
                    .lock_for_shutdown()
                    .inspect_err(|e| tracing::warn!("stopping without the manager's lock: {e}"));
                if let Some(socket) = &own_socket {
                    let _ = std::fs::remove_file(socket);
                }
                tracing::info!(target: "slipway::lifecycle", %signal, "slipway daemon stopped");
                std::process::exit(0);
            })
            .map(drop)
            .map_err(|e| Error::Activation(format!("cannot start the signal thread: {e}")))
    }
}

/// What systemd passed the daemon: its JSON socket, if it passed one, and
/// the descriptors named for the other servers of the same daemon.
pub(crate) struct Activated {
    /// The JSON API's socket.
    pub(crate) json: Option<UnixListener>,
    /// Descriptors under one of the names the caller said other servers
    /// take (libvirt's RPC: `virtnetworkd.socket`...), with their names.
    pub(crate) others: Vec<(String, OwnedFd)>,
}

/// The listening sockets systemd passed, if it passed any: the one named
/// `json` (or a single unnamed one) for the daemon, those named in
/// `others_take` for the servers started with it; any other is logged and
/// closed. Call before starting any thread (it clears the `LISTEN_*`
/// variables).
pub(crate) fn activated_listeners(others_take: &[&str]) -> Result<Activated> {
    let fds = systemd::take_listen_fds()
        .map_err(|e| Error::Activation(format!("bad LISTEN_FDS/LISTEN_PID: {e}")))?;
    let mut activated = Activated {
        json: None,
        others: Vec::new(),
    };
    if fds.is_empty() {
        return Ok(activated);
    }
    let only_unnamed = fds.len() == 1 && fds[0].0 == "unknown";
    let mut chosen: Option<OwnedFd> = None;
    for (name, fd) in fds {
        if name == JSON_SOCKET_NAME || only_unnamed {
            chosen = Some(fd);
        } else if others_take.contains(&name.as_str()) {
            activated.others.push((name, fd));
        } else {
            tracing::warn!(
                "ignoring the socket named '{name}' systemd passed (descriptor {}): not the daemon's",
                fd.as_raw_fd()
            );
        }
    }
    match chosen {
        Some(fd) => {
            let listener = systemd::unix_stream_listener(fd).map_err(|e| {
                Error::Activation(format!(
                    "the socket systemd passed {e} (ListenStream=/run/slipway/slipway-sock)"
                ))
            })?;
            activated.json = Some(listener);
        }
        // Only other servers' sockets (their own units): the daemon binds
        // its JSON socket itself.
        None if !activated.others.is_empty() => {}
        None => {
            return Err(Error::Activation(format!(
                "systemd passed sockets but none named '{JSON_SOCKET_NAME}' \
                 (set FileDescriptorName={JSON_SOCKET_NAME} in the .socket unit)"
            )))
        }
    }
    Ok(activated)
}
