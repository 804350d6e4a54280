//! The host's interface addresses, from `getifaddrs(3)`.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// The interface's name (`lo`, `eth0`).
    pub name: String,
    /// The address.
    pub addr: IpAddr,
}

/// Every IPv4 and IPv6 address of every interface, in the kernel's order.
pub fn list() -> io::Result<Vec<InterfaceAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills in a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut entry = head;
    while !entry.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*entry };
        entry = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a NUL-terminated string in the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push(InterfaceAddr { name, addr });
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The addresses of interface `name`.
pub fn of(name: &str) -> io::Result<Vec<IpAddr>> {
    Ok(list()?
        .into_iter()
        .filter(|a| a.name == name)
        .map(|a| a.addr)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_loopback() {
        let all = list().unwrap();
        assert!(
            all.iter()
                .any(|a| a.name == "lo" && a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{all:?}"
        );
        assert!(of("lo").unwrap().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(of("no-such-interface0").unwrap().is_empty());
    }
}
