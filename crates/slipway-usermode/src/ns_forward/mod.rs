//! pasta's `-T`/`-U`: ports on the served namespace's loopback forwarded
//! to the host's loopback, without the tap and the stack in between.
//!
//! Theory of operation: for each forwarded port, a listener (TCP) or a
//! bound socket (UDP) sits on the namespace's `127.0.0.1` and `::1` (as
//! pasta binds them), made inside the namespace by a
//! [`LoopbackSockets`] (a helper process that stays there: the sockets
//! then work from this process, on this event loop). A TCP connection
//! accepted there is connected to the same (or mapped) port on the host's
//! loopback of the same family and relayed by [`tcp`]; a UDP datagram is
//! sent on by [`udp`] from a host socket per source, whose replies go
//! back to that source. With `auto` (pasta's default), [`NsForward::scan`]
//! reads this process's own socket tables every
//! [`SCAN_INTERVAL`](crate::port_watch::SCAN_INTERVAL) (the host's
//! network namespace: the same reading as `-t auto`'s, in
//! [`crate::port_watch`]) and binds each port listening there (TCP) or
//! bound (UDP) in the namespace, the same port, removing it when the
//! host's goes away; ports the stack itself forwards from the host (`-t`,
//! `-u`) are left out, so nothing loops. At most
//! [`MAX_AUTO_FORWARDS`] ports per protocol are followed.
//!
//! The other way, as pasta does: with [`NsForwardSpec::splice_inbound`],
//! a connection the stack accepts on a `-t` forward from the host's
//! loopback is not translated through the tap but handed over
//! ([`NsForward::splice_inbound`]) and relayed the same way to the
//! forward's port on the namespace's loopback, through a socket the
//! helper makes there, so a server bound to the namespace's `127.0.0.1`
//! is reached.

pub mod tcp;
pub mod udp;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use mio::event::Event;
use mio::{Interest, Registry};

use crate::config::ForwardProtocol;
use crate::iface::{token, TokenKind};
use crate::port_watch::{open_tables, read_listening, MAX_AUTO_FORWARDS, SCAN_INTERVAL};

/// Makes sockets on the served namespace's loopback.
pub trait LoopbackSockets: Send + Sync {
    /// A non-blocking TCP listener (`protocol` TCP) or UDP socket bound to
    /// `loopback` (`127.0.0.1` or `::1`) port `port` in the namespace.
    fn bind(&self, protocol: ForwardProtocol, loopback: IpAddr, port: u16) -> io::Result<OwnedFd>;

    /// A non-blocking TCP socket in the namespace connecting to
    /// `loopback` port `port` there.
    fn connect(&self, loopback: IpAddr, port: u16) -> io::Result<OwnedFd>;
}

/// What to forward from the namespace's loopback to the host's.
#[derive(Clone)]
pub struct NsForwardSpec {
    /// TCP: (namespace port, host port) pairs.
    pub tcp: Vec<(u16, u16)>,
    /// UDP: (namespace port, host port) pairs.
    pub udp: Vec<(u16, u16)>,
    /// Protocols whose host ports are followed (`auto`).
    pub auto: Vec<ForwardProtocol>,
    /// The loopback addresses bound: `127.0.0.1`, `::1` or both.
    pub loopbacks: Vec<IpAddr>,
    /// Splice `-t` connections from the host's loopback into the
    /// namespace's loopback (pasta's way) instead of translating them.
    pub splice_inbound: bool,
    /// Where the namespace's sockets come from.
    pub sockets: Arc<dyn LoopbackSockets>,
}

impl std::fmt::Debug for NsForwardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsForwardSpec")
            .field("tcp", &self.tcp.len())
            .field("udp", &self.udp.len())
            .field("auto", &self.auto)
            .field("loopbacks", &self.loopbacks)
            .field("splice_inbound", &self.splice_inbound)
            .finish()
    }
}

/// One socket on the namespace's loopback.
pub(crate) enum Listener {
    /// Accepts connections relayed to `host`.
    Tcp {
        socket: mio::net::TcpListener,
        host: SocketAddr,
    },
    /// Receives datagrams relayed to `host`.
    Udp {
        socket: mio::net::UdpSocket,
        host: SocketAddr,
    },
}

/// The namespace-to-host forwards of one served namespace.
pub struct NsForward {
    sockets: Arc<dyn LoopbackSockets>,
    loopbacks: Vec<IpAddr>,
    listeners: Vec<Option<Listener>>,
    /// The slots of the listeners of each (protocol, namespace port).
    ports: BTreeMap<(ForwardProtocol, u16), Vec<usize>>,
    tcp: tcp::Relays,
    udp: udp::Flows,
    tables: Vec<(ForwardProtocol, File)>,
    auto_active: BTreeSet<(ForwardProtocol, u16)>,
    auto_failed: BTreeSet<(ForwardProtocol, u16)>,
    /// The most ports `auto` binds per protocol ([`MAX_AUTO_FORWARDS`]).
    auto_limit: usize,
    capped: bool,
    next_scan: Option<Instant>,
}

impl NsForward {
    /// Binds `spec`'s ports in the namespace (a port that cannot be bound
    /// on any loopback is logged and left out, as pasta does) and opens
    /// this process's socket tables for `auto`.
    pub fn open(spec: &NsForwardSpec, registry: &Registry) -> io::Result<NsForward> {
        let tables = open_tables(None, &spec.auto)?;
        let mut fwd = NsForward {
            sockets: spec.sockets.clone(),
            loopbacks: spec.loopbacks.clone(),
            listeners: Vec::new(),
            ports: BTreeMap::new(),
            tcp: tcp::Relays::new(tcp::MAX_RELAYS),
            udp: udp::Flows::new(udp::MAX_FLOWS, udp::FLOW_TIMEOUT),
            next_scan: (!tables.is_empty()).then(Instant::now),
            tables,
            auto_active: BTreeSet::new(),
            auto_failed: BTreeSet::new(),
            auto_limit: MAX_AUTO_FORWARDS,
            capped: false,
        };
        let mut failed = 0usize;
        for (protocol, pairs) in [
            (ForwardProtocol::Tcp, &spec.tcp),
            (ForwardProtocol::Udp, &spec.udp),
        ] {
            for &(ns_port, host_port) in pairs {
                if let Err(err) = fwd.add(registry, protocol, ns_port, host_port) {
                    failed += 1;
                    if failed <= 8 {
                        tracing::warn!(%err, "not forwarding {protocol:?} port {ns_port} of the namespace's loopback");
                    }
                }
            }
        }
        if failed > 8 {
            tracing::warn!("{failed} ports of the namespace's loopback could not be bound in all");
        }
        Ok(fwd)
    }

    /// Binds `ns_port` on each loopback of the namespace, relayed to
    /// `host_port` on the host's loopback of the same family; an error
    /// when no loopback could be bound.
    fn add(
        &mut self,
        registry: &Registry,
        protocol: ForwardProtocol,
        ns_port: u16,
        host_port: u16,
    ) -> io::Result<()> {
        let mut slots = Vec::new();
        let mut last_err = None;
        for &lo in &self.loopbacks.clone() {
            let fd = match self.sockets.bind(protocol, lo, ns_port) {
                Ok(fd) => fd,
                Err(err) => {
                    last_err = Some(err);
                    continue;
                }
            };
            let host = SocketAddr::new(lo, host_port);
            let slot = self.free_slot();
            let tok = token(TokenKind::NsListener, slot);
            let listener = match protocol {
                ForwardProtocol::Tcp => {
                    let mut socket =
                        mio::net::TcpListener::from_std(std::net::TcpListener::from(fd));
                    registry.register(&mut socket, tok, Interest::READABLE)?;
                    Listener::Tcp { socket, host }
                }
                ForwardProtocol::Udp => {
                    let mut socket = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd));
                    registry.register(&mut socket, tok, Interest::READABLE)?;
                    Listener::Udp { socket, host }
                }
            };
            self.listeners[slot] = Some(listener);
            slots.push(slot);
        }
        if slots.is_empty() {
            return Err(last_err.unwrap_or_else(|| io::Error::other("no loopback to bind")));
        }
        self.ports.insert((protocol, ns_port), slots);
        Ok(())
    }

    /// Closes the namespace's sockets of (`protocol`, `ns_port`); TCP
    /// connections made go on, UDP flows end.
    fn remove(&mut self, registry: &Registry, protocol: ForwardProtocol, ns_port: u16) {
        for slot in self.ports.remove(&(protocol, ns_port)).unwrap_or_default() {
            match self.listeners[slot].take() {
                Some(Listener::Tcp { mut socket, .. }) => {
                    let _ = registry.deregister(&mut socket);
                }
                Some(Listener::Udp { mut socket, .. }) => {
                    let _ = registry.deregister(&mut socket);
                    self.udp.end_of_listener(registry, slot);
                }
                None => {}
            }
        }
    }

    fn free_slot(&mut self) -> usize {
        match self.listeners.iter().position(Option::is_none) {
            Some(slot) => slot,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        }
    }

    /// Relays `a`, accepted on a `-t` forward from the host's loopback,
    /// to `port` on the namespace's loopback of the same family.
    pub fn splice_inbound(&mut self, registry: &Registry, a: mio::net::TcpStream, port: u16) {
        if !self.tcp.has_room(&a) {
            return;
        }
        let lo = match a.peer_addr() {
            Ok(peer) if peer.is_ipv6() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            Ok(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            // Gone already.
            Err(_) => return,
        };
        match self.sockets.connect(lo, port) {
            Ok(fd) => {
                let b = mio::net::TcpStream::from_std(std::net::TcpStream::from(fd));
                self.tcp.insert(registry, a, b);
            }
            Err(err) => {
                tracing::debug!(%err, %lo, port, "connecting to the namespace's loopback");
                tcp::reset(a);
            }
        }
    }

    /// The (protocol, port) pairs bound in the namespace now.
    pub fn ns_ports(&self) -> BTreeSet<(ForwardProtocol, u16)> {
        self.ports.keys().copied().collect()
    }

    /// Handles readiness of a socket registered under `kind`/`index`.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        kind: TokenKind,
        index: usize,
        event: &Event,
        now: Instant,
    ) {
        match kind {
            TokenKind::NsListener => match self.listeners.get(index) {
                Some(Some(Listener::Tcp { socket, host })) => {
                    self.tcp.accept(registry, socket, *host)
                }
                Some(Some(Listener::Udp { socket, host })) => self
                    .udp
                    .on_namespace_readable(registry, index, socket, *host, now),
                _ => {}
            },
            TokenKind::NsTcp => self.tcp.on_event(registry, index, event),
            TokenKind::NsUdp => self.udp.on_host_readable(index, &self.listeners, now),
            _ => {}
        }
    }

    /// When [`NsForward::on_timer`] is due next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.next_scan, self.udp.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Ends idle UDP flows; follows the host's ports when a scan is due
    /// (`forwarded`: the ports the stack forwards from the host).
    pub fn on_timer(
        &mut self,
        registry: &Registry,
        forwarded: &BTreeSet<(ForwardProtocol, u16)>,
        now: Instant,
    ) {
        self.udp.expire(registry, now);
        if self.next_scan.is_some_and(|d| d <= now) {
            self.scan(registry, forwarded, now);
        }
    }

    /// Reads the host's socket tables and binds (or closes) the ports
    /// `auto` follows (see the module header).
    pub fn scan(
        &mut self,
        registry: &Registry,
        forwarded: &BTreeSet<(ForwardProtocol, u16)>,
        now: Instant,
    ) {
        if self.tables.is_empty() {
            return;
        }
        self.next_scan = Some(now + SCAN_INTERVAL);
        let mut listening = match read_listening(&mut self.tables) {
            Ok(l) => l,
            Err(err) => {
                tracing::debug!(%err, "reading the host's socket tables");
                return;
            }
        };
        listening.retain(|p| !forwarded.contains(p));
        let gone: Vec<_> = self.auto_active.difference(&listening).copied().collect();
        for (protocol, port) in gone {
            self.auto_active.remove(&(protocol, port));
            self.remove(registry, protocol, port);
        }
        self.auto_failed.retain(|p| listening.contains(p));
        for &(protocol, port) in listening.difference(&self.auto_active.clone()) {
            if self.ports.contains_key(&(protocol, port)) {
                // Given explicitly as well.
                continue;
            }
            if self
                .auto_active
                .iter()
                .filter(|(p, _)| *p == protocol)
                .count()
                >= self.auto_limit
            {
                if !self.capped {
                    tracing::warn!(
                        "the host listens on more than {} {protocol:?} ports: the rest are not bound in the namespace",
                        self.auto_limit
                    );
                    self.capped = true;
                }
                continue;
            }
            match self.add(registry, protocol, port, port) {
                Ok(()) => {
                    self.auto_active.insert((protocol, port));
                    self.auto_failed.remove(&(protocol, port));
                }
                Err(err) => {
                    if self.auto_failed.insert((protocol, port)) {
                        tracing::info!(%err, "not binding {protocol:?} port {port} in the namespace");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
