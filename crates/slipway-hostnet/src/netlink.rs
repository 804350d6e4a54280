//! A small synchronous rtnetlink client: exactly the link, address and route
//! requests starting and stopping a network needs, each acknowledged by the
//! kernel before the next one is sent.

use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, Result};
use crate::RouteAdded;

/// A route of the main table, as far as the collision check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dest: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// Output interface index (0 when the route has none).
    pub oif: u32,
}

/// The bridge to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec<'a> {
    /// Device name.
    pub name: &'a str,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Spanning tree on.
    pub stp: bool,
    /// Forward delay in seconds.
    pub delay: u32,
}

/// An open rtnetlink socket.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket to the kernel's routing subsystem of this network namespace.
    pub fn open() -> Result<Netlink> {
        let ctx = |e| Error::Netlink {
            what: "open rtnetlink socket".into(),
            source: e,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(ctx)?;
        socket.bind_auto().map_err(ctx)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(ctx)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request and collects the messages answering it until the
    /// kernel's acknowledgement or end of dump.
    fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let ctx = |e: std::io::Error| Error::Netlink {
            what: what.to_string(),
            source: e,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.header.length as usize];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(ctx)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(ctx)?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| {
                        ctx(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            e.to_string(),
                        ))
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                    NetlinkPayload::Error(e) => return Err(ctx(e.to_io())),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// The routes of the main table, both families.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let msgs = self.request(
                "list routes",
                RouteNetlinkMessage::GetRoute(req),
                NLM_F_DUMP,
            )?;
            for m in msgs {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                let mut table = u32::from(r.header.table);
                let mut dest = None;
                let mut oif = 0;
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Table(t) => table = *t,
                        RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                            dest = Some(IpAddr::V4(*a))
                        }
                        RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                            dest = Some(IpAddr::V6(*a))
                        }
                        RouteAttribute::Oif(i) => oif = *i,
                        _ => {}
                    }
                }
                if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                    continue;
                }
                let dest = dest.unwrap_or(match family {
                    AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                });
                out.push(Route {
                    dest,
                    prefix: r.header.destination_prefix_length,
                    oif,
                });
            }
        }
        Ok(out)
    }

    /// Creates a bridge (fails if a link of that name exists); returns its index.
    pub fn create_bridge(&mut self, spec: &BridgeSpec<'_>) -> Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(spec.name.into()));
        if let Some(mac) = spec.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![
                // The kernel takes the forward delay in centiseconds.
                InfoBridge::ForwardDelay(spec.delay.saturating_mul(100)),
                InfoBridge::StpState(u32::from(spec.stp)),
            ])),
        ]));
        self.request(
            &format!("create bridge {}", spec.name),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        link_index(spec.name).ok_or_else(|| Error::Netlink {
            what: format!("find bridge {} after creating it", spec.name),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    /// Deletes the link with this index.
    pub fn delete_link(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(
            &format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Changes a link with a `SetLink` request carrying `attrs`.
    fn set_link(&mut self, index: u32, what: &str, attrs: Vec<LinkAttribute>) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = attrs;
        self.request(what, RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Sets the link's MAC address.
    pub fn set_mac(&mut self, index: u32, name: &str, mac: [u8; 6]) -> Result<()> {
        let what = format!("set the MAC address of {name}");
        self.set_link(index, &what, vec![LinkAttribute::Address(mac.to_vec())])
    }

    /// Sets the link's MTU.
    pub fn set_mtu(&mut self, index: u32, name: &str, mtu: u32) -> Result<()> {
        let what = format!("set the MTU of {name} to {mtu}");
        self.set_link(index, &what, vec![LinkAttribute::Mtu(mtu)])
    }

    /// Enslaves the link to a bridge (`ip link set NAME master BRIDGE`).
    pub fn set_master(
        &mut self,
        index: u32,
        name: &str,
        master: u32,
        master_name: &str,
    ) -> Result<()> {
        let what = format!("attach {name} to bridge {master_name}");
        self.set_link(index, &what, vec![LinkAttribute::Controller(master)])
    }

    /// Sets or clears the bridge port flag `isolated` of a link attached to
    /// a bridge (`ip link set NAME type bridge_slave isolated on`,
    /// `IFLA_BRPORT_ISOLATED`): the bridge forwards nothing between two
    /// isolated ports; an isolated port still reaches the bridge itself and
    /// every port that is not isolated.
    pub fn set_port_isolated(&mut self, index: u32, name: &str, isolated: bool) -> Result<()> {
        let what = format!(
            "set bridge port {name} isolated {}",
            if isolated { "on" } else { "off" }
        );
        // A port's settings change through RTM_NEWLINK on the existing
        // link (as `ip link set ... type bridge_slave` sends): RTM_SETLINK
        // ignores IFLA_LINKINFO.
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = vec![LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                isolated,
            )])),
        ])];
        self.request(&what, RouteNetlinkMessage::NewLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Sets the link up.
    pub fn set_up(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(
            &format!("set link {name} up"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    fn address_message(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(addr);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        if let IpAddr::V4(a) = addr {
            let bcast =
                slipway_host::ipnet::Ipv4Net::new(a, prefix.min(32)).map_or(a, |n| n.broadcast());
            msg.attributes.push(AddressAttribute::Broadcast(bcast));
        }
        msg
    }

    /// Adds `addr/prefix` to the link.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        self.request(
            &format!("add address {addr}/{prefix}"),
            RouteNetlinkMessage::NewAddress(Self::address_message(index, addr, prefix)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    fn route_message(r: &RouteAdded, oif: u32) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(r.dest);
        msg.header.destination_prefix_length = r.prefix;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(r.dest)));
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(r.gateway)));
        msg.attributes.push(RouteAttribute::Oif(oif));
        if let Some(m) = r.metric {
            msg.attributes.push(RouteAttribute::Priority(m));
        }
        msg
    }

    /// Adds static route `r` (through a gateway) on link `oif`.
    pub fn add_route(&mut self, r: &RouteAdded, oif: u32) -> Result<()> {
        self.request(
            &format!("add route {}/{} via {}", r.dest, r.prefix, r.gateway),
            RouteNetlinkMessage::NewRoute(Self::route_message(r, oif)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes a route added by [`Netlink::add_route`].
    pub fn del_route(&mut self, r: &RouteAdded, oif: u32) -> Result<()> {
        self.request(
            &format!("delete route {}/{} via {}", r.dest, r.prefix, r.gateway),
            RouteNetlinkMessage::DelRoute(Self::route_message(r, oif)),
            NLM_F_ACK,
        )
        .map(drop)
    }
}

fn family_of(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The index of the link called `name`, if it exists (if_nametoindex rather
/// than a link dump: dumps carry per-kernel-version attributes the netlink
/// crate warns about).
pub fn link_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// An `ifreq` naming link `name`; `None` for a name no link can have.
fn ifreq(name: &str) -> Option<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE {
        return None;
    }
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Some(req)
}

/// The index of the link called `name`, if it exists, asked through a
/// socket the caller has (SIOCGIFINDEX): unlike [`link_index`], it opens
/// no socket (the confined network service may not open a Unix one).
pub fn link_index_via(sock: &impl std::os::fd::AsRawFd, name: &str) -> Option<u32> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifru.ifru_ifindex
    // of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) } < 0 {
        return None;
    }
    // SAFETY: the kernel filled the ifindex member of the union.
    u32::try_from(unsafe { req.ifr_ifru.ifru_ifindex }).ok()
}

/// The MTU of the link called `name` (SIOCGIFMTU, in this process's network
/// namespace; /sys may show another namespace's links).
pub fn link_mtu(name: &str) -> Result<u32> {
    let ctx = |e| Error::Netlink {
        what: format!("read the MTU of {name}"),
        source: e,
    };
    let mut req =
        ifreq(name).ok_or_else(|| ctx(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).map_err(ctx)?;
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_ifru.ifru_mtu of a valid ifreq.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCGIFMTU,
            &mut req,
        )
    };
    if r < 0 {
        return Err(ctx(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel filled the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| ctx(std::io::Error::from(std::io::ErrorKind::InvalidData)))
}

/// The name of the link with this index, if it exists.
pub fn link_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
