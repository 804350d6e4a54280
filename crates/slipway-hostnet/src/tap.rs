//! Tap devices for guest NICs: opened through `/dev/net/tun`, the file
//! descriptor handed to QEMU (`-netdev tap,fd=N`).
//!
//! A tap created here is not persistent: it lives as long as some process
//! holds its descriptor, so a QEMU that dies, however it dies, takes its tap
//! with it. An existing persistent tap (libvirt's `managed='no'`) is opened
//! the same way without the exclusive flag and is left in place on close.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Error, Result};

const TUN_PATH: &str = "/dev/net/tun";
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// Fail instead of attaching to a tap that already exists.
const IFF_TUN_EXCL: libc::c_short = -0x8000;

/// How to open the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapMode {
    /// Create a new tap; fail if a device of that name exists.
    Create,
    /// Open an existing (persistent) tap, or create it if it does not exist.
    Existing,
}

/// An open tap device.
#[derive(Debug)]
pub struct Tap {
    /// The queue's file descriptor (what QEMU reads and writes frames on).
    pub fd: OwnedFd,
    /// The device name the kernel gave it.
    pub name: String,
}

impl Tap {
    /// Opens the tap `name` (a `%d` template such as `tap%d` lets the
    /// kernel pick the number). `vnet_hdr` enables the virtio-net header
    /// (what QEMU's virtio NICs use for offloads).
    pub fn open(name: &str, mode: TapMode, vnet_hdr: bool) -> Result<Tap> {
        let what = |e| Error::Netlink {
            what: format!("open tap {name}"),
            source: e,
        };
        if name.is_empty() || name.len() >= libc::IF_NAMESIZE {
            return Err(what(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "interface names are 1-15 bytes",
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(TUN_PATH)
            .map_err(what)?;
        let fd: OwnedFd = file.into();
        // SAFETY: an all-zero ifreq is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        let mut flags = IFF_TAP | IFF_NO_PI;
        if vnet_hdr {
            flags |= IFF_VNET_HDR;
        }
        if mode == TapMode::Create {
            flags |= IFF_TUN_EXCL;
        }
        req.ifr_ifru.ifru_flags = flags;
        // SAFETY: TUNSETIFF reads and writes a valid ifreq.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if r < 0 {
            return Err(what(std::io::Error::last_os_error()));
        }
        let end = req
            .ifr_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(req.ifr_name.len());
        let name: Vec<u8> = req.ifr_name[..end].iter().map(|&c| c as u8).collect();
        Ok(Tap {
            fd,
            name: String::from_utf8_lossy(&name).into_owned(),
        })
    }
}
