//! `slipway bridge-helper`: a drop-in for qemu-bridge-helper, which QEMU
//! runs for `-netdev bridge,br=BR,helper=PATH` as `PATH --use-vnet
//! --fd=N --br=BR`, N being one end of a unix socket pair. The helper
//! checks the bridge against the ACL file, creates a tap, attaches it to
//! the bridge and passes its descriptor back over N (SCM_RIGHTS).
//!
//! Meant to be installable setuid root, so it does as little as possible
//! with as little as possible: before reading anything it drops every
//! capability but CAP_NET_ADMIN and sets no-new-privileges; an ACL file
//! other than the system one is only accepted when it runs without
//! privileges of its own; it touches only the tap it creates and the one
//! bridge the ACL allowed.
//!
//! ACL format (as qemu-bridge-helper): one rule a line, `allow BRIDGE`,
//! `allow all`, `deny BRIDGE`, `deny all`, `include FILE`; `#` starts a
//! comment. The bridge must be allowed by some rule and denied by none.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use slipway_hostnet::netlink::{link_index, link_mtu, Netlink};
use slipway_hostnet::tap::{Tap, TapMode};

use crate::error::{Error, Result};

/// The ACL file qemu-bridge-helper reads.
pub const DEFAULT_ACL: &str = "/etc/qemu/bridge.conf";

/// How deep `include` may nest (a loop ends here with an error).
const MAX_INCLUDE_DEPTH: usize = 10;

/// The MAC qemu-bridge-helper gives the tap: the largest unicast address,
/// so the bridge never takes it as its own.
const TAP_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// One ACL rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclRule {
    /// `allow all`.
    AllowAll,
    /// `allow BRIDGE`.
    Allow(String),
    /// `deny all`.
    DenyAll,
    /// `deny BRIDGE`.
    Deny(String),
}

/// Reads an ACL file and the files it includes, rules in order.
pub fn read_acl(path: &Path) -> Result<Vec<AclRule>> {
    let mut rules = Vec::new();
    read_acl_into(path, 0, &mut rules)?;
    Ok(rules)
}

fn read_acl_into(path: &Path, depth: usize, rules: &mut Vec<AclRule>) -> Result<()> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(Error::Helper(format!(
            "{}: includes nested more than {MAX_INCLUDE_DEPTH} deep",
            path.display()
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("cannot read ACL file", path, e))?;
    parse_acl(
        &text,
        path,
        &mut |inc, rules| read_acl_into(inc, depth + 1, rules),
        rules,
    )
}

/// Parses ACL text; `include` lines call `include`.
pub fn parse_acl(
    text: &str,
    path: &Path,
    include: &mut dyn FnMut(&Path, &mut Vec<AclRule>) -> Result<()>,
    rules: &mut Vec<AclRule>,
) -> Result<()> {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(cmd), Some(arg), None) = (words.next(), words.next(), words.next()) else {
            return Err(Error::Helper(format!(
                "{}:{}: expected 'allow NAME', 'deny NAME' or 'include FILE', got '{line}'",
                path.display(),
                n + 1
            )));
        };
        match (cmd, arg) {
            ("allow", "all") => rules.push(AclRule::AllowAll),
            ("allow", b) => rules.push(AclRule::Allow(b.to_string())),
            ("deny", "all") => rules.push(AclRule::DenyAll),
            ("deny", b) => rules.push(AclRule::Deny(b.to_string())),
            ("include", f) => include(Path::new(f), rules)?,
            (other, _) => {
                return Err(Error::Helper(format!(
                    "{}:{}: unknown command '{other}'",
                    path.display(),
                    n + 1
                )))
            }
        }
    }
    Ok(())
}

/// True when some rule allows `bridge` and none denies it.
pub fn allowed(rules: &[AclRule], bridge: &str) -> bool {
    let mut allow = false;
    for r in rules {
        match r {
            AclRule::AllowAll => allow = true,
            AclRule::Allow(b) if b == bridge => allow = true,
            AclRule::DenyAll => return false,
            AclRule::Deny(b) if b == bridge => return false,
            _ => {}
        }
    }
    allow
}

/// The helper's request.
#[derive(Debug, Clone)]
pub struct HelperRequest {
    /// `--use-vnet`: open the tap with the virtio-net header.
    pub use_vnet: bool,
    /// `--br`: the bridge.
    pub bridge: String,
    /// `--fd`: the unix socket to send the tap on.
    pub fd: RawFd,
    /// The ACL file (`None`: [`DEFAULT_ACL`]).
    pub acl: Option<PathBuf>,
}

/// True when the process runs with privileges it was not started with
/// (setuid or setgid).
pub fn is_privileged_exec() -> bool {
    // SAFETY: these getters cannot fail.
    unsafe { libc::getuid() != libc::geteuid() || libc::getgid() != libc::getegid() }
}

/// Keeps only CAP_NET_ADMIN (effective and permitted) and forbids gaining
/// privileges through exec.
pub fn drop_privileges() -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget/capset with a v3 header and two data words.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(Error::Helper(format!(
            "capget: {}",
            std::io::Error::last_os_error()
        )));
    }
    let bit = 1u32 << CAP_NET_ADMIN;
    let keep = data[0].permitted & bit;
    data = [
        Data {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(Error::Helper(format!(
            "capset: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::Helper(format!(
            "no_new_privs: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Runs the helper: privileges dropped, ACL checked, tap created and
/// attached, its descriptor sent back on `req.fd`.
pub fn run(req: &HelperRequest) -> Result<()> {
    drop_privileges()?;
    if req.acl.is_some() && is_privileged_exec() {
        return Err(Error::Helper(
            "--acl is refused when running setuid/setgid: the ACL is /etc/qemu/bridge.conf".into(),
        ));
    }
    if !slipway_netxml::interface::valid_ifname(&req.bridge) {
        return Err(Error::Helper(format!(
            "'{}' is not a valid bridge name",
            req.bridge
        )));
    }
    let acl = req
        .acl
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ACL));
    let rules = read_acl(&acl)?;
    if !allowed(&rules, &req.bridge) {
        return Err(Error::Helper(format!(
            "access denied by acl file: bridge {} is not allowed by {}",
            req.bridge,
            acl.display()
        )));
    }
    let bridge_index = link_index(&req.bridge)
        .ok_or_else(|| Error::Helper(format!("bridge {} does not exist", req.bridge)))?;
    let tap = Tap::open("tap%d", TapMode::Create, req.use_vnet)?;
    let index = link_index(&tap.name)
        .ok_or_else(|| Error::Helper(format!("tap {} vanished after it was created", tap.name)))?;
    let mut nl = Netlink::open()?;
    nl.set_mac(index, &tap.name, TAP_MAC)?;
    nl.set_mtu(index, &tap.name, link_mtu(&req.bridge)?)?;
    nl.set_master(index, &tap.name, bridge_index, &req.bridge)?;
    nl.set_up(index, &tap.name)?;
    send_fd(req.fd, tap.fd.as_raw_fd())
        .map_err(|e| Error::Helper(format!("cannot pass the tap to QEMU on fd {}: {e}", req.fd)))
}

/// Sends `fd` over the unix socket `sock` with one byte of data.
pub fn send_fd(sock: RawFd, fd: RawFd) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive
    // the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one cmsg of CMSG_SPACE(int) bytes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    loop {
        // SAFETY: msg is fully initialised.
        let r = unsafe { libc::sendmsg(sock, &msg, 0) };
        if r >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<AclRule> {
        let mut v = Vec::new();
        parse_acl(text, Path::new("t"), &mut |_, _| Ok(()), &mut v).unwrap();
        v
    }

    #[test]
    fn deny_wins_and_all_works() {
        assert!(allowed(&rules("allow br0\n"), "br0"));
        assert!(!allowed(&rules("allow br0\n"), "br1"));
        assert!(allowed(&rules("# c\nallow all\n"), "br1"));
        assert!(!allowed(&rules("allow all\ndeny br1\n"), "br1"));
        assert!(!allowed(&rules("deny all\nallow br0"), "br0"));
        assert!(!allowed(&rules(""), "br0"));
    }

    #[test]
    fn includes_nest_and_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("inner.conf");
        std::fs::write(&inner, "allow br7 # comment\n").unwrap();
        let outer = d.path().join("bridge.conf");
        std::fs::write(&outer, format!("\ninclude {}\n", inner.display())).unwrap();
        assert_eq!(
            read_acl(&outer).unwrap(),
            vec![AclRule::Allow("br7".into())]
        );
        std::fs::write(&inner, format!("include {}\n", outer.display())).unwrap();
        assert!(read_acl(&outer).unwrap_err().to_string().contains("nested"));
        std::fs::write(&inner, "permit br0\n").unwrap();
        let e = read_acl(&outer).unwrap_err().to_string();
        assert!(e.contains("inner.conf:1") && e.contains("permit"), "{e}");
        std::fs::write(&inner, "allow\n").unwrap();
        assert!(read_acl(&outer).is_err());
    }
}
