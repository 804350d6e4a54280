//! UDP from the namespace's loopback relayed to the host's: a flow per
//! (namespace socket, source), as pasta's spliced UDP.
//!
//! Theory of operation: a datagram received on a namespace socket from a
//! source (an address and port on the namespace's loopback) goes out of
//! that source's flow: a host socket bound to the host's loopback at the
//! source's port when that is free (pasta binds the same port, so the
//! server sees the port the client used), else at any port, and
//! connected to the forwarded host port. What that socket receives (only
//! from the port it is connected to) goes back to the source through the
//! namespace socket. A flow unused for [`FLOW_TIMEOUT`] (pasta's 180 s)
//! ends; at most [`MAX_FLOWS`] flows exist at once, and a new source
//! beyond that takes the slot of the flow used least recently.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry};

use super::Listener;
use crate::iface::{token, TokenKind};

/// The most UDP flows at once.
pub const MAX_FLOWS: usize = 1024;

/// How long a flow lives unused.
pub const FLOW_TIMEOUT: Duration = Duration::from_secs(180);

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65535;

struct Flow {
    /// The namespace socket's slot (listener index).
    listener: usize,
    /// The source in the namespace.
    source: SocketAddr,
    /// Toward the host port.
    host: UdpSocket,
    last_used: Instant,
}

/// The UDP flows.
pub(crate) struct Flows {
    slots: Vec<Option<Flow>>,
    by_source: HashMap<(usize, SocketAddr), usize>,
    max: usize,
    timeout: Duration,
    buf: Vec<u8>,
    next_expiry: Option<Instant>,
}

impl Flows {
    pub(crate) fn new(max: usize, timeout: Duration) -> Flows {
        Flows {
            slots: Vec::new(),
            by_source: HashMap::new(),
            max,
            timeout,
            buf: vec![0; MAX_DATAGRAM],
            next_expiry: None,
        }
    }

    /// Relays what the namespace socket `listener` (bound socket `ns`)
    /// received toward `host`.
    pub(crate) fn on_namespace_readable(
        &mut self,
        registry: &Registry,
        listener: usize,
        ns: &UdpSocket,
        host: SocketAddr,
        now: Instant,
    ) {
        loop {
            let (n, source) = match ns.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // An ICMP error queued on the socket, say: go on.
                    tracing::debug!(%err, "receiving on the namespace's loopback");
                    continue;
                }
            };
            let slot = match self.by_source.get(&(listener, source)) {
                Some(&slot) => slot,
                None => match self.open(registry, listener, source, host, now) {
                    Ok(slot) => slot,
                    Err(err) => {
                        tracing::debug!(%err, %host, "opening a UDP flow to the host's loopback");
                        continue;
                    }
                },
            };
            if let Some(flow) = self.slots[slot].as_mut() {
                flow.last_used = now;
                if let Err(err) = flow.host.send(&self.buf[..n]) {
                    tracing::debug!(%err, %host, "sending to the host's loopback");
                }
            }
        }
    }

    /// A new flow for `source` on `listener`, in a free slot or the least
    /// recently used one.
    fn open(
        &mut self,
        registry: &Registry,
        listener: usize,
        source: SocketAddr,
        host: SocketAddr,
        now: Instant,
    ) -> io::Result<usize> {
        let same_port = SocketAddr::new(host.ip(), source.port());
        let mut socket = UdpSocket::bind(same_port)
            .or_else(|_| UdpSocket::bind(SocketAddr::new(host.ip(), 0)))?;
        socket.connect(host)?;
        // The least recently used flow makes room when all are taken.
        let slot = if let Some(slot) = slipway_host::free_slot(&mut self.slots, self.max) {
            slot
        } else {
            let oldest = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.as_ref().map(|f| (f.last_used, i)))
                .min()
                .map(|(_, i)| i)
                .ok_or_else(|| io::Error::other("no UDP flow slot"))?;
            self.end(registry, oldest);
            oldest
        };
        registry.register(
            &mut socket,
            token(TokenKind::NsUdp, slot),
            Interest::READABLE,
        )?;
        self.slots[slot] = Some(Flow {
            listener,
            source,
            host: socket,
            last_used: now,
        });
        self.by_source.insert((listener, source), slot);
        if self.next_expiry.is_none() {
            self.next_expiry = Some(now + self.timeout);
        }
        Ok(slot)
    }

    /// Relays what flow `slot`'s host socket received back to its source.
    pub(crate) fn on_host_readable(
        &mut self,
        slot: usize,
        listeners: &[Option<Listener>],
        now: Instant,
    ) {
        let Some(Some(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        let ns = match listeners.get(flow.listener) {
            Some(Some(Listener::Udp { socket, .. })) => socket,
            _ => return,
        };
        loop {
            let n = match flow.host.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // Connection refused (nothing on the host port): go on.
                    tracing::debug!(%err, "receiving from the host's loopback");
                    continue;
                }
            };
            flow.last_used = now;
            if let Err(err) = ns.send_to(&self.buf[..n], flow.source) {
                tracing::debug!(%err, "sending to the namespace's loopback");
            }
        }
    }

    fn end(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut flow) = self.slots[slot].take() {
            let _ = registry.deregister(&mut flow.host);
            self.by_source.remove(&(flow.listener, flow.source));
        }
    }

    /// Ends the flows of namespace socket `listener` (closed).
    pub(crate) fn end_of_listener(&mut self, registry: &Registry, listener: usize) {
        let slots: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, f)| f.as_ref().is_some_and(|f| f.listener == listener))
            .map(|(i, _)| i)
            .collect();
        for slot in slots {
            self.end(registry, slot);
        }
    }

    /// When the next flow may have expired.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Ends the flows unused for the timeout.
    pub(crate) fn expire(&mut self, registry: &Registry, now: Instant) {
        if self.next_expiry.is_none_or(|d| d > now) {
            return;
        }
        let timeout = self.timeout;
        let idle: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, f)| f.as_ref().is_some_and(|f| now >= f.last_used + timeout))
            .map(|(i, _)| i)
            .collect();
        for slot in idle {
            self.end(registry, slot);
        }
        self.next_expiry = self
            .slots
            .iter()
            .flatten()
            .map(|f| f.last_used + timeout)
            .min();
    }

    /// Flows now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}
