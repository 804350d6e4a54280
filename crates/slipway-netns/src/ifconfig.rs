//! Creating and configuring the tap inside the namespace with the classic
//! `SIOC*` ioctls (as slirp4netns does): they need no netlink message
//! building, so the helper child can run them without allocating. The
//! queue length is the exception: `SIOCSIFTXQLEN` wants CAP_NET_ADMIN in
//! the initial namespace, so it is one fixed-size rtnetlink request; and
//! so is the IPv6 side (pasta's `--config-net`): an address without
//! duplicate address detection (`IFA_F_NODAD`, which the ioctl cannot
//! ask for) and a default route through a link-local gateway.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use crate::fail::{last, Fail};

/// An `AF_INET` datagram socket for the interface ioctls, closed on drop.
pub(crate) struct CtlSocket(RawFd);

impl CtlSocket {
    pub(crate) fn open() -> Result<CtlSocket, Fail> {
        // SAFETY: plain socket call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(last("opening a socket for interface configuration"));
        }
        Ok(CtlSocket(fd))
    }

    fn ioctl<T>(
        &self,
        request: libc::c_ulong,
        arg: &mut T,
        what: &'static str,
    ) -> Result<(), Fail> {
        // SAFETY: `arg` is the struct type the request expects.
        if unsafe { libc::ioctl(self.0, request as _, arg as *mut T) } < 0 {
            return Err(last(what));
        }
        Ok(())
    }

    /// Sets IFF_UP on the interface.
    pub(crate) fn set_up(
        &self,
        name: &[libc::c_char; libc::IFNAMSIZ],
        what: &'static str,
    ) -> Result<(), Fail> {
        let mut ifr = ifreq(name);
        self.ioctl(libc::SIOCGIFFLAGS, &mut ifr, what)?;
        // SAFETY: the kernel filled the flags member.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        self.ioctl(libc::SIOCSIFFLAGS, &mut ifr, what)
    }

    pub(crate) fn set_mac(
        &self,
        name: &[libc::c_char; libc::IFNAMSIZ],
        mac: [u8; 6],
    ) -> Result<(), Fail> {
        let mut ifr = ifreq(name);
        // SAFETY: the hardware-address member is a plain sockaddr.
        unsafe {
            ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (dst, src) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                *dst = src as libc::c_char;
            }
        }
        self.ioctl(
            libc::SIOCSIFHWADDR,
            &mut ifr,
            "setting the tap's MAC address",
        )
    }

    pub(crate) fn set_mtu(
        &self,
        name: &[libc::c_char; libc::IFNAMSIZ],
        mtu: i32,
    ) -> Result<(), Fail> {
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_mtu = mtu;
        self.ioctl(libc::SIOCSIFMTU, &mut ifr, "setting the tap's MTU")
    }

    pub(crate) fn set_ipv4(
        &self,
        name: &[libc::c_char; libc::IFNAMSIZ],
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), Fail> {
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_addr = sockaddr(addr);
        self.ioctl(libc::SIOCSIFADDR, &mut ifr, "setting the tap's address")?;
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_netmask = sockaddr(slipway_host::netmask_v4(prefix));
        self.ioctl(libc::SIOCSIFNETMASK, &mut ifr, "setting the tap's netmask")
    }

    pub(crate) fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), Fail> {
        // SAFETY: all-zero is a valid rtentry.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        self.ioctl(libc::SIOCADDRT, &mut rt, "adding the default route")
    }
}

impl Drop for CtlSocket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.0) };
    }
}

pub(crate) fn ifreq(name: &[libc::c_char; libc::IFNAMSIZ]) -> libc::ifreq {
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = *name;
    ifr
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel
    // reads the family and interprets the rest accordingly.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Opens `/dev/net/tun` as the tap `name` (IFF_TAP | IFF_NO_PI: raw
/// Ethernet frames, no packet-information header; IFF_VNET_HDR: each frame
/// behind a virtio-net header, so the stack can hand the namespace large
/// TCP segments with the checksum left to it), non-blocking.
pub(crate) fn open_tap(name: &[libc::c_char; libc::IFNAMSIZ]) -> Result<RawFd, Fail> {
    // SAFETY: a constant NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(last("opening /dev/net/tun"));
    }
    let mut ifr = ifreq(name);
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF takes an ifreq.
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, &mut ifr) } < 0 {
        let fail = last("creating the tap device (TUNSETIFF)");
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return Err(fail);
    }
    Ok(fd)
}

/// An `RTM_NEWLINK` request that sets `IFLA_TXQLEN`, laid out as the
/// kernel reads it.
#[repr(C)]
struct TxqlenRequest {
    header: libc::nlmsghdr,
    ifinfo: IfInfoMsg,
    attr_len: u16,
    attr_type: u16,
    qlen: u32,
}

/// `struct ifinfomsg` (not in the libc crate).
#[repr(C)]
struct IfInfoMsg {
    family: u8,
    pad: u8,
    kind: u16,
    index: i32,
    flags: u32,
    change: u32,
}

/// `IFLA_TXQLEN` from linux/if_link.h.
const IFLA_TXQLEN: u16 = 13;

/// The index of interface `name`.
fn index_of(name: &[libc::c_char; libc::IFNAMSIZ], what: &'static str) -> Result<u32, Fail> {
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(last(what));
    }
    Ok(index)
}

/// Sets the transmit queue length of interface `name` over rtnetlink.
pub(crate) fn set_txqueuelen(name: &[libc::c_char; libc::IFNAMSIZ], len: u32) -> Result<(), Fail> {
    const WHAT: &str = "setting the tap's queue length";
    let index = index_of(name, WHAT)?;
    let req = TxqlenRequest {
        header: header::<TxqlenRequest>(libc::RTM_NEWLINK, 0),
        ifinfo: IfInfoMsg {
            family: libc::AF_UNSPEC as u8,
            pad: 0,
            kind: 0,
            index: index as i32,
            flags: 0,
            change: 0,
        },
        attr_len: 8,
        attr_type: IFLA_TXQLEN,
        qlen: len,
    };
    request(&req, WHAT)
}

/// The header of a one-message rtnetlink request of type `T`.
fn header<T>(kind: u16, flags: libc::c_int) -> libc::nlmsghdr {
    libc::nlmsghdr {
        nlmsg_len: std::mem::size_of::<T>() as u32,
        nlmsg_type: kind,
        nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16,
        nlmsg_seq: 1,
        nlmsg_pid: 0,
    }
}

/// An `RTM_NEWADDR` request for one IPv6 address (`IFA_LOCAL` and
/// `IFA_ADDRESS`, as iproute2 sends them), laid out as the kernel reads it.
#[repr(C)]
struct Addr6Request {
    header: libc::nlmsghdr,
    family: u8,
    prefixlen: u8,
    flags: u8,
    scope: u8,
    index: u32,
    local_len: u16,
    local_type: u16,
    local: [u8; 16],
    address_len: u16,
    address_type: u16,
    address: [u8; 16],
}

/// An `RTM_NEWROUTE` request for an IPv6 default route through a gateway
/// on one interface (`RTA_GATEWAY`, `RTA_OIF`).
#[repr(C)]
struct Route6Request {
    header: libc::nlmsghdr,
    family: u8,
    dst_len: u8,
    src_len: u8,
    tos: u8,
    table: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
    gateway_len: u16,
    gateway_type: u16,
    gateway: [u8; 16],
    oif_len: u16,
    oif_type: u16,
    oif: u32,
}

/// `IFA_ADDRESS` and `IFA_LOCAL` from linux/if_addr.h.
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `IFA_F_NODAD`: no duplicate address detection (pasta's `nodad`).
const IFA_F_NODAD: u8 = 0x02;
/// `RTA_OIF` and `RTA_GATEWAY` from linux/rtnetlink.h.
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

/// Gives interface `name` the IPv6 address `addr`/`prefix` without
/// duplicate address detection (the address is the host's, copied: the
/// namespace's link has nobody else on it).
pub(crate) fn add_ipv6(
    name: &[libc::c_char; libc::IFNAMSIZ],
    addr: Ipv6Addr,
    prefix: u8,
) -> Result<(), Fail> {
    const WHAT: &str = "setting the tap's IPv6 address";
    let index = index_of(name, WHAT)?;
    let req = Addr6Request {
        header: header::<Addr6Request>(libc::RTM_NEWADDR, libc::NLM_F_CREATE | libc::NLM_F_EXCL),
        family: libc::AF_INET6 as u8,
        prefixlen: prefix,
        flags: IFA_F_NODAD,
        scope: libc::RT_SCOPE_UNIVERSE,
        index,
        local_len: 20,
        local_type: IFA_LOCAL,
        local: addr.octets(),
        address_len: 20,
        address_type: IFA_ADDRESS,
        address: addr.octets(),
    };
    request(&req, WHAT)
}

/// Adds the IPv6 default route via `gateway` (link-local: hence the
/// interface) on interface `name`.
pub(crate) fn add_ipv6_default_route(
    name: &[libc::c_char; libc::IFNAMSIZ],
    gateway: Ipv6Addr,
) -> Result<(), Fail> {
    const WHAT: &str = "adding the IPv6 default route";
    let index = index_of(name, WHAT)?;
    let req = Route6Request {
        header: header::<Route6Request>(libc::RTM_NEWROUTE, libc::NLM_F_CREATE | libc::NLM_F_EXCL),
        family: libc::AF_INET6 as u8,
        dst_len: 0,
        src_len: 0,
        tos: 0,
        table: libc::RT_TABLE_MAIN,
        protocol: libc::RTPROT_BOOT,
        scope: libc::RT_SCOPE_UNIVERSE,
        kind: libc::RTN_UNICAST,
        flags: 0,
        gateway_len: 20,
        gateway_type: RTA_GATEWAY,
        gateway: gateway.octets(),
        oif_len: 8,
        oif_type: RTA_OIF,
        oif: index,
    };
    request(&req, WHAT)
}

/// Sends the one-message rtnetlink request `req` (a `repr(C)` struct
/// that starts with its `nlmsghdr`) and reads the kernel's answer.
fn request<T>(req: &T, what: &'static str) -> Result<(), Fail> {
    // SAFETY: plain socket call; closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(last(what));
    }
    // The kernel answers with an nlmsgerr: header, error code, request header.
    let mut ack = [0u32; 16];
    // SAFETY: sends the request struct and receives into a live buffer.
    let result = unsafe {
        let sent = libc::send(fd, (req as *const T).cast(), std::mem::size_of::<T>(), 0);
        if sent < 0 {
            Err(last(what))
        } else {
            let n = libc::recv(fd, ack.as_mut_ptr().cast(), std::mem::size_of_val(&ack), 0);
            if n < 0 {
                Err(last(what))
            } else if n >= 20 && ack[1] & 0xffff == libc::NLMSG_ERROR as u32 && ack[4] != 0 {
                // The error field is a negative errno.
                Err(Fail {
                    what,
                    errno: -(ack[4] as i32),
                })
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    result
}
