//! DHCPv4 on the bridge: [`slipway_dhcp::DhcpServer`] over a UDP socket on
//! port 67 bound to the bridge. A reply is handed to the loop, which saves
//! the leases before [`Dhcp::send`] lets the client hear of it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::SystemTime;

use slipway_dhcp::{DhcpReply, DhcpServer, ReplyDestination};
use slipway_netmgr::plan::ServiceConfig;

use super::config::{dhcp_config, static_hosts};
use super::socket::bound_udp;
use crate::error::Result;
use crate::leases::LeaseRecord;

/// The DHCPv4 server of a network with an IPv4 range.
pub(super) struct Dhcp {
    server: DhcpServer,
    /// The subnet's prefix length (for the leases table).
    prefix: u8,
    sock: UdpSocket,
    /// The bridge (where ARP entries go).
    interface: String,
}

impl Dhcp {
    /// Binds port 67 on the bridge with the leases `saved` by an earlier
    /// run; `None` when the network serves no IPv4 range.
    pub(super) fn open(svc: &ServiceConfig, saved: &[LeaseRecord]) -> Result<Option<Dhcp>> {
        let Some((config, prefix)) = dhcp_config(svc)? else {
            return Ok(None);
        };
        let mut server = DhcpServer::new(config)?;
        server.restore_leases(saved.iter().filter_map(LeaseRecord::to_lease));
        let sock = bound_udp(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 67)),
            Some(svc.interface.as_str()),
            true,
        )?;
        Ok(Some(Dhcp {
            server,
            prefix,
            sock,
            interface: svc.interface.to_string(),
        }))
    }

    /// The socket to poll.
    pub(super) fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// The answer to the next message waiting that gets one; `None` once
    /// none is waiting.
    pub(super) fn next(&mut self) -> Option<DhcpReply> {
        let mut buf = [0u8; 1500];
        while let Ok((len, _)) = self.sock.recv_from(&mut buf) {
            match self.server.handle(&buf[..len], SystemTime::now()) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(e) => tracing::debug!("ignored DHCP message: {e}"),
            }
        }
        None
    }

    /// Sends a reply [`Dhcp::next`] made.
    pub(super) fn send(&self, reply: &DhcpReply) {
        let to = match reply.destination {
            ReplyDestination::Broadcast => Ipv4Addr::BROADCAST,
            // The client's own address (INFORM, renewal): the kernel
            // resolves it. Never a neighbour entry for what a client
            // merely claims.
            ReplyDestination::Unicast(ip) => ip,
            ReplyDestination::Assigned(ip) => {
                // The address this reply gives, to a client that does not
                // answer ARP for it yet: tell the kernel its MAC, as
                // dnsmasq does.
                if let Err(e) = set_arp(&self.sock, ip, reply.client_mac, &self.interface) {
                    tracing::warn!("cannot add ARP entry for {ip}: {e}");
                }
                ip
            }
        };
        if let Err(e) = self.sock.send_to(&reply.payload, SocketAddrV4::new(to, 68)) {
            tracing::warn!("cannot send DHCP reply to {to}: {e}");
        }
    }

    /// The leases as lease records.
    pub(super) fn lease_records(&self) -> impl Iterator<Item = LeaseRecord> + '_ {
        self.server
            .leases()
            .map(|l| LeaseRecord::from_lease(l, self.prefix))
    }

    /// Takes new `<host>` reservations (a live update).
    pub(super) fn set_hosts(&mut self, svc: &ServiceConfig) -> Result<()> {
        Ok(self.server.set_static_hosts(static_hosts(svc))?)
    }
}

/// Adds a complete ARP entry `ip` → `mac` on `dev` (SIOCSARP).
fn set_arp(sock: &UdpSocket, ip: Ipv4Addr, mac: [u8; 6], dev: &str) -> std::io::Result<()> {
    // SAFETY: arpreq is plain old data; all-zero is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes).
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            (&mut req.arp_pa as *mut libc::sockaddr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    req.arp_flags = libc::ATF_COM;
    for (d, s) in req.arp_dev.iter_mut().zip(dev.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: the fd is a valid socket and req a valid arpreq for SIOCSARP.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSARP, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
