//! End-to-end test harness: builds a small real Linux guest from Debian packages and boots it under QEMU.
//!
//! - [`Guest`]: boots Debian's cloud kernel with a busybox initramfs under
//!   QEMU (TCG, no KVM), with NICs on any `-netdev`, runs a shell script as
//!   `/test.sh` and collects `SLIPWAY-RESULT key=value` lines from the serial
//!   console.
//! - [`GuestImage`]: the kernel and base initramfs, built once (kernel from
//!   `apt-get download`) and cached under the cargo target directory.
//! - Host peers on loopback, stopped on drop: [`HttpServer`] (busybox httpd),
//!   [`DnsServer`] (dnsmasq, never forwarding), [`UdpEchoServer`],
//!   [`TcpEchoServer`]; and [`free_port`], [`temp_dir`], [`dns_query`].
//! - [`netns`]: network namespaces and veth "guests" with udhcpc, for tests
//!   of host networking inside a namespace the test created.
//! - [`ovs`]: Open vSwitch (ovsdb-server, ovs-vswitchd) of the test's own in
//!   that namespace, and a QEMU stand-in joining a slipway tap to a namespace.
//! - [`ovn`]: OVN of the test's own (databases, ovn-northd, ovn-controller
//!   per "host" namespace), on those Open vSwitch instances.
//!
//! Inside the guest, `/test.sh` runs under busybox `sh` with these helpers:
//! `result KEY VALUE` (report a value), `ready [WORD]` (print
//! `SLIPWAY-READY`), `dhcp IFACE [PREFIX]` (lease with udhcpc, configure the
//! interface, route and resolv.conf, report the lease; see [`UDHCPC_SCRIPT`]).
//! Besides busybox (`udhcpc`, `wget`, `nc` without UDP, `nslookup`, `ping`,
//! `tftp`, `httpd`, `ip`, …) the guest has `ncat` (UDP: `(echo hi; sleep 1)
//! | ncat -u HOST PORT`) and `iperf3` from the host ([`HOST_PROGRAMS`]).
//! Set `SLIPWAY_TEST_CONSOLE=1` to watch guest consoles live on stderr.
//!
//! ```no_run
//! use slipway_testkit::{Guest, HttpServer};
//!
//! let dir = slipway_testkit::temp_dir()?;
//! std::fs::write(dir.path().join("f"), "hello\n").unwrap();
//! let http = HttpServer::serve_dir(dir.path())?;
//! let out = Guest::builder()
//!     .netdev("stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/vm0.sock")
//!     .script(&format!(
//!         "dhcp eth0 || exit 1\n\
//!          result body \"$(wget -q -O - http://10.0.2.2:{}/f)\"\n",
//!         http.port()
//!     ))
//!     .run()?;
//! assert_eq!(out.result("ip"), Some("10.0.2.15"), "{}", out.console);
//! assert_eq!(out.result("body"), Some("hello"), "{}", out.console);
//! # Ok::<(), slipway_testkit::Error>(())
//! ```

#![deny(missing_docs)]

mod error;
mod guest;
mod image;
pub mod netns;
pub mod ovn;
pub mod ovs;
mod peers;
mod process;

pub use error::{Error, Result};
pub use guest::{
    Guest, GuestBuilder, GuestOutput, DONE_MARKER, KERNEL_ARGS, NETBOOT_FILE, READY_MARKER,
    RESULT_MARKER,
};
pub use image::{cache_dir, GuestImage, HOST_PROGRAMS, MODULES, UDHCPC_SCRIPT};
pub use peers::{
    free_port, setuid_temp_dir, temp_dir, DnsServer, DnsServerBuilder, HttpServer, TcpEchoServer,
    UdpEchoServer,
};
pub use process::KillOnDrop;

/// A standard DNS query with RD set, as dig sends it without EDNS: ID
/// `id`, one question for `name` (dotted; a trailing dot is the root) of
/// type `qtype`, class IN.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}
