//! The single-threaded event loop: the VM link, host sockets, timers and
//! signals, all on one `mio::Poll`.
//!
//! Each wake-up handles every ready event, then pumps: frames queued
//! toward the guest are written, more guest frames are read while there is
//! room for their replies, and TCP flows that held back are resumed. Work
//! left over (a full read budget) makes the next poll return at once, and
//! so does an open busy-poll window ([`crate::busy_poll`], off by
//! default) after a wake-up that moved data.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use slipway_host::signals::Signals;

use crate::api::{ApiError, ApiServer};
use crate::busy_poll::BusyPoll;
use crate::config::{ForwardProtocol, StackConfig};
use crate::iface::{decode_token, token, DropReason, TokenKind};
use crate::link::{AttachError, AttachSpec, Attachment, LinkState};
use crate::metrics::{MetricsAddr, MetricsError, MetricsServer};
use crate::ns_forward::{NsForward, NsForwardSpec};
use crate::port_watch::{PortWatch, PortWatchSpec};
use crate::slirp4netns_api::Slirp4netnsApiServer;
use crate::stack::{Stack, StackError};

/// Events handled per wake-up.
const EVENT_CAPACITY: usize = 1024;
/// Pump rounds per wake-up before host events get their turn again.
const PUMP_ROUNDS: usize = 16;
/// [`TokenKind::Control`] index of the signal descriptor; the control APIs
/// use others.
const SIGNALS_INDEX: usize = 0;
/// [`TokenKind::Control`] index of the first of [`RunOptions::exit_fds`]
/// (far above the control APIs').
const EXIT_FD_INDEX: usize = 1 << 32;

/// How [`run`] behaves beyond the configuration.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Wait for the next VM after the last one disconnects, instead of returning.
    pub keep_listening: bool,
    /// Serve the control API ([`crate::api`]) on a unix socket at this path.
    pub api: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics ([`crate::metrics`]) on this TCP address
    /// or unix socket, each connection closed after `metrics_timeout`.
    pub metrics: Option<MetricsAddr>,
    /// How long a metrics connection may stay open (default
    /// [`crate::metrics::DEFAULT_TIMEOUT`]).
    pub metrics_timeout: Option<Duration>,
    /// Serve slirp4netns's API ([`crate::slirp4netns_api`], slirp4netns's
    /// `--api-socket`) on a unix socket at this path.
    pub slirp4netns_api: Option<std::path::PathBuf>,
    /// Confine the process once the stack and the VM link are set up (the
    /// attachment's socket directory is added to what it may touch).
    pub sandbox: Option<slipway_sandbox::Sandbox>,
    /// Stop when one of these descriptors becomes readable or hangs up:
    /// the pidfd of the process whose namespace is served, or
    /// slirp4netns's `--exit-fd`. They stay open (the caller owns them).
    pub exit_fds: Vec<RawFd>,
    /// Once the stack serves (forwards bound, link open), write `1` to
    /// this descriptor and close it (slirp4netns's `--ready-fd`; the
    /// namespace helper's go signal). Ownership passes to [`run`].
    pub ready_fd: Option<RawFd>,
    /// Forward the ports a namespace listens on (pasta's `-t auto`),
    /// scanned from before the ready signal on.
    pub port_watch: Option<PortWatchSpec>,
    /// Forward ports of a namespace's loopback to the host's (pasta's
    /// `-T`/`-U`), bound before the ready signal.
    pub ns_forward: Option<NsForwardSpec>,
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The VM link could not be opened.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The stack could not be set up (a forward could not be bound...).
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The control API socket could not be opened.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The metrics listener could not be opened.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The sandbox could not be applied (the process does not run unconfined).
    #[error("sandbox")]
    Sandbox(#[from] slipway_sandbox::SandboxError),
    /// The event loop itself failed.
    #[error("{what}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The host's error.
        source: std::io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// Raises the soft limit on open files to the hard limit: every flow holds
/// a host socket, and the default soft limit (1024) is below the default
/// flow caps.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit on a locally owned struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!(err = %std::io::Error::last_os_error(), "raising the open-file limit");
            }
        }
    }
}

/// Runs one user-mode network for the VM(s) on `spec` until the last VM
/// goes away (unless `opts.keep_listening`) or SIGTERM/SIGINT arrives. Socket
/// files it created are removed on return.
pub fn run(mut cfg: StackConfig, spec: AttachSpec, opts: RunOptions) -> Result<(), RunError> {
    // SAFETY: the caller handed this descriptor over; owned, it is closed
    // on every way out.
    let ready = opts.ready_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    raise_file_limit();
    let signals =
        Signals::new(&[libc::SIGTERM, libc::SIGINT]).map_err(io_err("signal handling"))?;
    // Under systemd (`Type=notify`): connected now, before the sandbox.
    let notifier = slipway_host::systemd::Notifier::from_env()
        .map_err(io_err("connecting to $NOTIFY_SOCKET"))?;
    let mut poll = Poll::new().map_err(io_err("creating the event loop"))?;
    let registry = poll
        .registry()
        .try_clone()
        .map_err(io_err("creating the event loop"))?;
    registry
        .register(
            &mut SourceFd(&signals.as_raw_fd()),
            token(TokenKind::Control, SIGNALS_INDEX),
            Interest::READABLE,
        )
        .map_err(io_err("signal handling"))?;
    let sandbox = opts.sandbox.map(|sandbox| {
        let mut sandbox = sandbox_for(sandbox, &cfg, opts.api.as_deref());
        if opts.port_watch.is_some() || opts.ns_forward.as_ref().is_some_and(|f| !f.auto.is_empty())
        {
            sandbox.allow_rereading();
        }
        if opts.ns_forward.is_some() {
            sandbox.allow_splicing();
        }
        if let Some(path) = &opts.slirp4netns_api {
            sandbox.remove_on_exit(path.clone());
        }
        if let Some(MetricsAddr::Unix(path)) = &opts.metrics {
            sandbox.remove_on_exit(path.clone());
        }
        sandbox
    });
    if let Some(sandbox) = &sandbox {
        // Guest forward commands and smbd run as the sandbox's user too.
        cfg.services.helper_user = Some(sandbox.runas_user().to_owned());
    }
    let mut spin = BusyPoll::new(cfg.busy_poll);
    let mut stack = Stack::new(cfg)?;
    stack.start(&registry)?;
    let mut api = match &opts.api {
        Some(path) => Some(ApiServer::open(path, &registry)?),
        None => None,
    };
    let mut metrics = match &opts.metrics {
        Some(addr) => Some(MetricsServer::open(
            addr,
            &registry,
            opts.metrics_timeout
                .unwrap_or(crate::metrics::DEFAULT_TIMEOUT),
        )?),
        None => None,
    };
    let mut port_watch = match &opts.port_watch {
        Some(spec) => Some(
            PortWatch::open(spec).map_err(io_err("watching the namespace's listening ports"))?,
        ),
        None => None,
    };
    let mut ns_forward = match &opts.ns_forward {
        Some(spec) => Some(
            NsForward::open(spec, &registry)
                .map_err(io_err("forwarding the namespace's loopback to the host"))?,
        ),
        None => None,
    };
    if let Some(watch) = port_watch.as_mut() {
        watch.scan(
            &mut stack,
            &registry,
            &ns_ports(ns_forward.as_ref()),
            Instant::now(),
        );
    }
    if let Some(fwd) = ns_forward.as_mut() {
        fwd.scan(&registry, &forwarded_ports(&stack), Instant::now());
    }
    if opts.ns_forward.as_ref().is_some_and(|f| f.splice_inbound) {
        stack.tcp.hand_off_loopback();
    }
    let mut slirp4netns_api = match &opts.slirp4netns_api {
        Some(path) => Some(Slirp4netnsApiServer::open(path, &registry)?),
        None => None,
    };
    // A datagram attachment reaches later VMs through new unix datagram
    // sockets, in its own socket's directory only (the sandbox leaves no
    // other path to name); no other attachment needs a unix socket once
    // set up.
    let unix_dgram = match &spec {
        AttachSpec::UnixDgram(path) => Some(path.parent().unwrap_or(path).to_owned()),
        _ => None,
    };
    let socket_file = match &spec {
        AttachSpec::UnixListen(path)
        | AttachSpec::UnixDgram(path)
        | AttachSpec::VhostUser(path) => Some(path.clone()),
        AttachSpec::UnixConnect(_) | AttachSpec::TcpListen(_) | AttachSpec::Tap(_) => None,
    };
    let vhost_user = matches!(spec, AttachSpec::VhostUser(_));
    let mut attach = Attachment::open(spec, &registry)?;
    if attach.takes_offload() {
        stack.guest_tx().enable_offload();
    }
    if let Some(addr) = attach.local_addr() {
        tracing::info!(%addr, "listening");
    }
    let ready_status = match (attach.local_addr(), &socket_file) {
        (Some(addr), _) => format!("listening on {addr}"),
        (None, Some(path)) => format!("listening on {}", path.display()),
        (None, None) => "attached".to_owned(),
    };
    let mut sandbox = sandbox.map(|mut sandbox| {
        if let Some(path) = socket_file {
            sandbox.remove_on_exit(path);
        }
        if let Some(dir) = unix_dgram {
            sandbox.allow_unix_datagrams(dir);
        }
        sandbox
    });
    if let Some(sandbox) = sandbox.as_mut().filter(|_| vhost_user) {
        // vhost-user starts threads when QEMU connects, before the sandbox
        // applies: the cleaning parent must be forked before them.
        sandbox.allow_vhost_user().fork_cleaner()?;
    }
    let exit_tokens = EXIT_FD_INDEX..EXIT_FD_INDEX + opts.exit_fds.len();
    for (fd, index) in opts.exit_fds.iter().zip(exit_tokens.clone()) {
        registry
            .register(
                &mut SourceFd(fd),
                token(TokenKind::Control, index),
                Interest::READABLE,
            )
            .map_err(io_err("watching the exit descriptor"))?;
    }
    if let Some(notifier) = &notifier {
        if let Err(err) = notifier.ready(&ready_status) {
            tracing::warn!(%err, "notifying systemd of readiness");
        }
    }
    if let Some(fd) = ready {
        let mut ready = std::fs::File::from(fd);
        if let Err(err) = std::io::Write::write_all(&mut ready, b"1") {
            tracing::warn!(%err, "writing to the ready descriptor");
        }
    }
    let mut events = Events::with_capacity(EVENT_CAPACITY);
    let mut busy = false;
    let mut spinning = false;
    loop {
        // Confine the process before the first guest frame is read: at once,
        // or in datagram mode once the VM's address is known and connected
        // (the sandbox's user may not be allowed to reach it later).
        if sandbox.is_some() && attach.connect_first_peer(&registry) {
            if let Some(sandbox) = sandbox.take() {
                apply_sandbox(&sandbox, &registry, &signals)?;
            }
            busy = attach.has_pending_io(stack.guest_tx());
        }
        let timeout = if busy || spinning {
            Some(Duration::ZERO)
        } else {
            let metrics_deadline = metrics.as_ref().and_then(MetricsServer::next_deadline);
            let watch_deadline = port_watch.as_ref().map(PortWatch::next_deadline);
            let ns_deadline = ns_forward.as_ref().and_then(NsForward::next_deadline);
            [
                stack.next_deadline(),
                metrics_deadline,
                watch_deadline,
                ns_deadline,
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()))
        };
        if let Err(err) = poll.poll(&mut events, timeout) {
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err("waiting for events")(err));
        }
        attach.polled();
        let now = Instant::now();
        let mut gone = false;
        let mut moved = !events.is_empty();
        for event in events.iter() {
            match decode_token(event.token()) {
                Some((TokenKind::Attach, index)) => {
                    let state = attach.on_event(&registry, index, event);
                    if state == LinkState::Gone {
                        // Only a vhost-user connection that could not be
                        // set up (logged where it failed).
                        return Err(io_err("attaching the VM")(std::io::Error::other(
                            "the vhost-user connection could not be set up",
                        )));
                    }
                    if state == LinkState::Connected && attach.port_count() == 1 {
                        // The first VM; a VM joining others keeps theirs.
                        stack.reset_vm();
                    }
                }
                Some((TokenKind::Control, index)) if exit_tokens.contains(&index) => {
                    tracing::info!(target: "slipway::lifecycle", "stopping: the exit descriptor fired");
                    report(&stack);
                    return Ok(());
                }
                Some((TokenKind::Control, index)) if index != SIGNALS_INDEX => {
                    if let Some(api) = api.as_mut().filter(|a| a.owns(index)) {
                        api.on_event(&registry, index, &mut stack);
                    } else if let Some(api) = slirp4netns_api.as_mut().filter(|a| a.owns(index)) {
                        api.on_event(&registry, index, &mut stack);
                    } else if let Some(m) = metrics.as_mut().filter(|m| m.owns(index)) {
                        m.on_event(&registry, index, &stack, now);
                    }
                }
                Some((TokenKind::Control, _)) => {
                    if let Some(signo) = signals.next() {
                        let signal = slipway_host::signals::signal_name(signo);
                        tracing::info!(target: "slipway::lifecycle", %signal, "stopping: {signal} received");
                        if let Some(notifier) = &notifier {
                            let _ = notifier.stopping(&format!("stopping: {signal} received"));
                        }
                        report(&stack);
                        return Ok(());
                    }
                }
                Some((
                    kind @ (TokenKind::NsListener | TokenKind::NsTcp | TokenKind::NsUdp),
                    index,
                )) => {
                    if let Some(fwd) = ns_forward.as_mut() {
                        fwd.on_event(&registry, kind, index, event, now);
                    }
                }
                Some((kind, index)) => stack.handle_host_event(&registry, kind, index, event, now),
                None => {}
            }
        }
        if let Some(fwd) = ns_forward.as_mut() {
            for (conn, port) in stack.tcp.take_loopback_accepted() {
                fwd.splice_inbound(&registry, conn, port);
            }
        }
        if let Some(m) = metrics.as_mut() {
            m.expire(&registry, now);
        }
        if stack.next_deadline().is_some_and(|d| d <= now) {
            stack.on_timer(&registry, now);
        }
        if let Some(watch) = port_watch.as_mut().filter(|w| w.next_deadline() <= now) {
            watch.scan(&mut stack, &registry, &ns_ports(ns_forward.as_ref()), now);
        }
        if let Some(fwd) = ns_forward
            .as_mut()
            .filter(|f| f.next_deadline().is_some_and(|d| d <= now))
        {
            fwd.on_timer(&registry, &forwarded_ports(&stack), now);
        }
        if sandbox.is_some() {
            // No guest frame is read before the sandbox is on.
            busy = false;
            spinning = false;
            continue;
        }
        for _ in 0..PUMP_ROUNDS {
            match pump(&mut attach, &mut stack, &registry, now) {
                Pump::Idle => break,
                Pump::Progress => moved = true,
                Pump::Gone => {
                    gone = true;
                    break;
                }
            }
        }
        // After the whole batch: an interrupt wakes QEMU, which on a busy
        // host takes the CPU from the rest of the batch.
        attach.end_batch();
        for mac in attach.take_departed() {
            stack.forget_guest(&registry, mac);
        }
        for _ in 0..attach.take_drops() {
            stack.count_drop(DropReason::GuestTxFull);
        }
        if gone {
            report(&stack);
            attach.detach(&registry);
            stack.reset_vm();
            if !opts.keep_listening || !attach.can_wait_for_next() {
                tracing::info!(target: "slipway::lifecycle", "stopping: the VM went away");
                return Ok(());
            }
            tracing::info!("waiting for the next VM");
            attach.accept(&registry);
        }
        busy = attach.has_pending_io(stack.guest_tx());
        spinning = spin.after_batch(moved, now);
    }
}

/// The ports slipway binds in the namespace's loopback (pasta's `-T`/`-U`),
/// which `-t`/`-u auto` must not forward back.
fn ns_ports(fwd: Option<&NsForward>) -> BTreeSet<(ForwardProtocol, u16)> {
    fwd.map(NsForward::ns_ports).unwrap_or_default()
}

/// The ports the stack forwards from the host (`-t`/`-u`), which `-T`/`-U
/// auto` must not bind back in the namespace.
fn forwarded_ports(stack: &Stack) -> BTreeSet<(ForwardProtocol, u16)> {
    stack
        .forwards()
        .into_iter()
        .map(|f| (f.protocol, f.host.port()))
        .collect()
}

/// The sandbox [`run`] applies for `cfg`: `sandbox` plus what it must
/// still allow (the TFTP root, the API socket at `api`). (`smb=` and
/// `guestfwd=` start programs and threads from a helper process forked
/// before the sandbox, see [`crate::guestfwd`]: they need nothing here.)
pub fn sandbox_for(
    mut sandbox: slipway_sandbox::Sandbox,
    cfg: &StackConfig,
    api: Option<&std::path::Path>,
) -> slipway_sandbox::Sandbox {
    if let Some(root) = &cfg.services.tftp_root {
        sandbox.allow_read(root.clone());
    }
    if let Some(path) = api {
        sandbox.remove_on_exit(path.to_owned());
    }
    if !cfg.services.guestfwd.is_empty() || cfg.services.smb.is_some() {
        // The stack names its connections to their helper by inode.
        sandbox.allow_fstat();
    }
    sandbox
}

/// Applies the sandbox. It may have forked (see
/// `slipway_sandbox::Sandbox::remove_on_exit`): epoll reports a signalfd
/// ready only for the process that added it (a modify is not enough), so
/// the signalfd is added anew.
fn apply_sandbox(
    sandbox: &slipway_sandbox::Sandbox,
    registry: &mio::Registry,
    signals: &Signals,
) -> Result<(), RunError> {
    sandbox.apply()?;
    let mut fd = SourceFd(&signals.as_raw_fd());
    registry
        .deregister(&mut fd)
        .and_then(|()| registry.register(&mut fd, token(TokenKind::Control, 0), Interest::READABLE))
        .map_err(io_err("signal handling"))
}

enum Pump {
    Idle,
    Progress,
    Gone,
}

/// One round of: write to the guest, read from the guest (while replies
/// have room), let held-back flows go on.
fn pump(
    attach: &mut Attachment,
    stack: &mut Stack,
    registry: &mio::Registry,
    now: Instant,
) -> Pump {
    let Ok(sent) = attach.flush(registry, stack.guest_tx()) else {
        return Pump::Gone;
    };
    let mut progress = sent > 0;
    if attach.can_read(stack.guest_tx()) {
        if attach.receive(registry, stack, now) == LinkState::Gone {
            return Pump::Gone;
        }
        progress = true;
    }
    if sent > 0 {
        stack.on_guest_tx_space(registry, now);
    }
    if progress {
        Pump::Progress
    } else {
        Pump::Idle
    }
}

fn report(stack: &Stack) {
    let c = stack.counters();
    tracing::info!(
        frames_in = c.frames_in,
        frames_out = c.frames_out,
        drops = c.total_drops(),
        "traffic so far"
    );
    for (name, reason) in DropReason::KEYWORDS {
        if c.drops(reason) > 0 {
            tracing::info!(reason = name, count = c.drops(reason), "dropped");
        }
    }
}
