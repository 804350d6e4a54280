//! Host chores every slipway crate shares, written once.
//!
//! Each module is one chore:
//!
//! - [`atomic`]: replace a file so that a crash leaves the old or the new
//!   content, with one temporary-name scheme that [`atomic::clean_stale`]
//!   (run by recovery) removes and nothing else;
//! - [`conns`]: a daemon socket's connection cap (slots kept for the owner
//!   and root) and its peers' credentials (`SO_PEERCRED`);
//! - [`fdpass`]: a descriptor sent over a unix socket (`SCM_RIGHTS`);
//! - [`files`]: a directory used by descriptor, reads that follow no
//!   symlink, kernel files reread;
//! - [`mac`]: the Ethernet address type, parsed and printed one way;
//! - [`keywords!`]: an enumeration and its keywords declared in one table,
//!   printed and read through it;
//! - [`ifaddrs`]: the host's interface addresses (`getifaddrs`);
//! - [`jsonl`]: JSON lines, the framing of the control APIs, and their
//!   error envelope;
//! - [`routes`]: the host's IPv4 routes (`/proc/net/route`);
//! - [`signals`]: signals read from a descriptor (signalfd), registered with
//!   `mio` by the event loops and waited on by the blocking users;
//! - [`clear_bounding_set`]: the capability bounding set emptied up to the
//!   kernel's last capability;
//! - [`free_slot`]: a free place in a capped table of connections or
//!   flows;
//! - [`systemd`]: readiness notification and socket activation, the two
//!   protocols a systemd service speaks;
//! - [`prometheus`]: Prometheus's text format and the bit of HTTP the
//!   metrics servers answer with;
//! - [`privileged_exec`]: whether the kernel started this process with
//!   privileges its caller does not have (the bridge helper drops them, every
//!   other program refuses to run).
//!
//! Two chores are crates.io crates, re-exported so that every crate takes
//! them from here: [`ipnet`] for prefixes and netmasks, [`caps`] for
//! capabilities.

pub mod atomic;
pub mod conns;
pub mod fdpass;
pub mod files;
pub mod ifaddrs;
pub mod jsonl;
mod keywords;
pub mod mac;
pub mod prometheus;
pub mod routes;
pub mod routes6;
pub mod signals;
pub mod systemd;

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

/// The highest capability number the running kernel knows (its
/// `cap_last_cap`), probed with `PR_CAPBSET_READ`, which fails with EINVAL
/// past it: no /proc needed (a confined process may have none), and
/// capabilities newer than the `caps` crate's list are counted too.
pub fn last_capability() -> u32 {
    // Capability sets are 64-bit masks in the kernel.
    (1..64)
        .take_while(|&cap| {
            // SAFETY: prctl with integer arguments only reads the bounding set.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) >= 0 }
        })
        .last()
        .unwrap_or(0)
}

/// Empties the calling thread's capability bounding set: every capability
/// up to [`last_capability`] (the `caps` crate's `clear` knows only the
/// capabilities of its own list). Needs CAP_SETPCAP.
pub fn clear_bounding_set() -> std::io::Result<()> {
    for cap in 0..=libc::c_ulong::from(last_capability()) {
        // SAFETY: prctl with integer arguments on the calling thread.
        let held = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 1;
        // SAFETY: as above.
        if held && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A duration of `var` milliseconds, from the environment variable `var`
/// when it holds a whole number (the tests shorten timeouts this way);
/// `None` when it is unset or holds anything else.
pub fn env_millis(var: &str) -> Option<std::time::Duration> {
    millis(&std::env::var(var).ok()?)
}

fn millis(value: &str) -> Option<std::time::Duration> {
    value.parse().ok().map(std::time::Duration::from_millis)
}

/// The first free place in `slots` (a table whose free places are
/// `None`: connections, flows), grown by one while it holds fewer than
/// `max`; `None` when all `max` are taken.
pub fn free_slot<T>(slots: &mut Vec<Option<T>>, max: usize) -> Option<usize> {
    match slots.iter().position(Option::is_none) {
        Some(s) => Some(s),
        None if slots.len() < max => {
            slots.push(None);
            Some(slots.len() - 1)
        }
        None => None,
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
    fn last_capability_is_the_kernels() {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap();
        assert_eq!(last_capability(), last.trim().parse::<u32>().unwrap());
    }

    /// In a thread of its own (the bounding set is per thread): with
    /// CAP_SETPCAP the set ends empty up to the kernel's last capability,
    /// without it the clearing fails.
    #[test]
    fn clearing_the_bounding_set_empties_it() {
        std::thread::spawn(|| {
            let may = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
                .unwrap();
            let result = clear_bounding_set();
            if !may {
                assert!(result.is_err());
                return;
            }
            result.unwrap();
            let bounding = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let line = bounding.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
            assert_eq!(line.split_whitespace().nth(1), Some("0000000000000000"));
            for cap in 0..=libc::c_ulong::from(last_capability()) {
                // SAFETY: prctl with integer arguments.
                let held = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
                assert_eq!(held, 0, "capability {cap}");
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn env_millis_reads_whole_numbers_only() {
        assert_eq!(millis("250"), Some(std::time::Duration::from_millis(250)));
        assert_eq!(millis("2.5"), None);
        assert_eq!(millis(""), None);
        assert_eq!(env_millis("SLIPWAY_HOST_TEST_UNSET_MS"), None);
    }

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
