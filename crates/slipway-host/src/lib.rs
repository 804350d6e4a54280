//! Host chores every slipway crate shares, written once.
//!
//! Each module is one chore:
//!
//! - [`atomic`]: replace a file so that a crash leaves the old or the new
//!   content, with one temporary-name scheme that [`atomic::clean_stale`]
//!   (run by recovery) removes and nothing else;
//! - [`mac`]: the Ethernet address type, parsed and printed one way;
//! - [`ifaddrs`]: the host's interface addresses (`getifaddrs`);
//! - [`routes`]: the host's IPv4 routes (`/proc/net/route`);
//! - [`signals`]: signals read from a descriptor (signalfd), registered with
//!   `mio` by the event loops and waited on by the blocking users;
//! - [`privileged_exec`]: whether the kernel started this process with
//!   privileges its caller does not have (the bridge helper drops them, every
//!   other program refuses to run).
//!
//! Two chores are crates.io crates, re-exported so that every crate takes
//! them from here: [`ipnet`] for prefixes and netmasks, [`caps`] for
//! capabilities.

pub mod atomic;
pub mod ifaddrs;
pub mod mac;
pub mod routes;
pub mod signals;

pub use caps;
pub use ipnet;

pub use mac::{MacAddr, MacParseError};

/// True when the process runs with privileges it was not started with:
/// setuid, setgid, or file capabilities (the kernel's AT_SECURE).
pub fn privileged_exec() -> bool {
    // SAFETY: getauxval and the id getters only read process state.
    unsafe {
        libc::getauxval(libc::AT_SECURE) != 0
            || libc::getuid() != libc::geteuid()
            || libc::getgid() != libc::getegid()
    }
}

/// The IPv4 netmask of a prefix length (lengths past 32 are taken as 32).
pub fn netmask_v4(prefix: u8) -> std::net::Ipv4Addr {
    ipnet::Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, prefix.min(32))
        .expect("a length of at most 32")
        .netmask()
}

/// The prefix length of a contiguous IPv4 netmask, `None` for a mask whose
/// ones are not all before its zeros.
pub fn prefix_of_netmask(mask: std::net::Ipv4Addr) -> Option<u8> {
    ipnet::ipv4_mask_to_prefix(mask).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn netmasks_and_prefixes() {
        assert_eq!(netmask_v4(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask_v4(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask_v4(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask_v4(40), Ipv4Addr::BROADCAST);
        assert_eq!(prefix_of_netmask(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(prefix_of_netmask(Ipv4Addr::UNSPECIFIED), Some(0));
        assert_eq!(prefix_of_netmask(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}
