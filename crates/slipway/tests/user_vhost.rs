//! `slipway user --vhost-user`: the test guest boots under QEMU with
//! `-netdev vhost-user` (guest memory shared as a memfd), in a user and
//! network namespace of the test's own, and is served through the rings
//! in its memory: DHCP, DNS through slipway's relay, NAT to loopback
//! servers over IPv4 and IPv6, a host forward into the guest, and large
//! transfers both ways with identical checksums. And a hostile frontend
//! that is not QEMU.

use std::io::Read;
use std::net::TcpListener;

use slipway_testkit::{DnsServer, Guest, HttpServer};

mod common;
use common::{assert_serves, check, md5, s, vhost_args, wait_line, Slipway};

const IN_NETNS: &str = "SLIPWAY_USER_VHOST_NETNS";
/// Host to guest: 100 MiB (read by the guest straight into md5sum).
const DOWN_BYTES: u32 = 100 * 1024 * 1024;
/// Host to guest over two queue pairs: 32 MiB.
const MQ_DOWN_BYTES: u32 = 32 * 1024 * 1024;
/// Guest to host: 8 MiB (the guest holds it in its RAM-backed /tmp).
const UP_BYTES: u32 = 8 * 1024 * 1024;

fn varied(len: u32, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn vhost_user_serves_a_guest_through_shared_rings() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    slipway_testkit::netns::sh("ip link set lo up");
    let dir = slipway_testkit::temp_dir().unwrap();
    let down = dir.path().join("down.bin");
    std::fs::write(&down, varied(DOWN_BYTES, 0)).unwrap();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, varied(UP_BYTES, 0x5a5a)).unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    std::fs::write(dir.path().join("v6.txt"), "served-over-ipv6\n").unwrap();
    let http6 = HttpServer::serve_dir_on(dir.path(), "::1".parse().unwrap()).unwrap();
    let dns = DnsServer::builder()
        .host("www.example.test", "192.0.2.10".parse().unwrap())
        .start()
        .unwrap();
    // The guest's upload arrives here, through the NAT.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let received = dir.path().join("received.bin");
    let received_path = received.clone();
    let sink_thread = std::thread::spawn(move || {
        let (mut conn, _) = sink.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < UP_BYTES as usize {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        std::fs::write(&received_path, &got).unwrap();
    });
    let fwd = slipway_testkit::free_port().unwrap();
    let sock = dir.path().join("vhost.sock");
    let mut slipway = Slipway::start(&[
        s("--vhost-user"),
        s("--socket"),
        sock.display().to_string(),
        s("--dns-upstream"),
        dns.addr().to_string(),
        format!("hostfwd=tcp:127.0.0.1:{fwd}-:8080"),
    ]);
    slipway.wait_for_path(&sock);
    let script = format!(
        "dhcp eth0 || exit 1\n\
         nslookup www.example.test 10.0.2.3 > /tmp/ns 2>&1; grep -q 192.0.2.10 /tmp/ns && result nslookup ok\n\
         result down \"$(wget -q -O - http://10.0.2.2:{http}/down.bin | md5sum | cut -d' ' -f1)\"\n\
         wget -q -O /tmp/up.bin http://10.0.2.2:{http}/up.bin && nc 10.0.2.2 {sink_port} < /tmp/up.bin && result upload sent\n\
         i=0; while [ $i -lt 60 ]; do ip -6 addr show dev eth0 | grep 'inet6 fec0:' | grep -qv tentative && break; sleep 1; i=$((i+1)); done\n\
         wget -q -O /tmp/v6.txt 'http://[fec0::2]:{http6}/v6.txt' && result http6 \"$(cat /tmp/v6.txt)\"\n\
         mkdir -p /www && echo guest-page > /www/index.html\n\
         httpd -p 8080 -h /www\n\
         ready forwards\n\
         sleep 300\n",
        http = http.port(),
        http6 = http6.port(),
    );
    let mut guest = Guest::builder()
        .netdev("vhost-user,id=n0,chardev=c0")
        // INTx: QEMU 7.2 under TCG crashes starting vhost with MSI-X
        // (msix_set_vector_notifiers in vhost_net_start).
        .nic_model("virtio-net-pci,vectors=0")
        .extra_args(vhost_args(&sock))
        .script(&script)
        .timeout(std::time::Duration::from_secs(600))
        .boot()
        .unwrap();
    wait_line(&mut guest, "SLIPWAY-READY forwards", &slipway);
    let out = guest.output_so_far();
    check(&out, &slipway, "dhcp", "bound");
    check(&out, &slipway, "ip", "10.0.2.15");
    check(&out, &slipway, "router", "10.0.2.2");
    check(&out, &slipway, "nslookup", "ok");
    assert!(dns.log().contains("www.example.test"), "{}", dns.log());
    check(&out, &slipway, "down", &md5(&down));
    check(&out, &slipway, "upload", "sent");
    check(&out, &slipway, "http6", "served-over-ipv6");
    sink_thread.join().unwrap();
    assert_eq!(md5(&received), md5(&up), "{}", slipway.log());
    assert!(
        slipway.log().contains("vhost-user"),
        "not the vhost-user transport:\n{}",
        slipway.log()
    );
    // Linux's virtio-net took TSO frames: the download came in 64 KiB
    // segments over merged receive buffers.
    assert!(
        slipway
            .log()
            .contains("the guest takes checksum and segmentation offload"),
        "{}",
        slipway.log()
    );
    // And their payload was peeked straight into the guest's RX chains
    // (`link/vhost/rx_chains.rs`), md5-identical above.
    assert!(
        slipway
            .log()
            .contains("payload read straight into the guest's RX chains"),
        "{}",
        slipway.log()
    );

    // The host forward reaches the guest's httpd.
    assert_serves(("127.0.0.1", fwd), "guest-page", &slipway);

    // QEMU goes away: slipway sees the connection end, exits 0 and
    // removes its socket file.
    drop(guest);
    slipway.wait_exit_ok();
    assert!(!sock.exists(), "socket file left behind");
}

/// QEMU `queues=2` (`mq=on`) and a guest with two vCPUs, for which Linux
/// enables both queue pairs: event indices and multiqueue negotiated,
/// frames carried on the second pair (the transfers run pinned to the
/// second CPU, whose transmit queue is the second), both ways
/// md5-identical.
#[test]
fn vhost_user_two_queue_pairs_with_event_idx() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    slipway_testkit::netns::sh("ip link set lo up");
    let dir = slipway_testkit::temp_dir().unwrap();
    let down = dir.path().join("down.bin");
    std::fs::write(&down, varied(MQ_DOWN_BYTES, 7)).unwrap();
    let up = dir.path().join("up.bin");
    std::fs::write(&up, varied(UP_BYTES, 0x3c3c)).unwrap();
    let http = HttpServer::serve_dir(dir.path()).unwrap();
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let received = dir.path().join("received.bin");
    let received_path = received.clone();
    let sink_thread = std::thread::spawn(move || {
        let (mut conn, _) = sink.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(300)))
            .unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        std::fs::write(&received_path, &got).unwrap();
    });
    let sock = dir.path().join("vhost.sock");
    let mut slipway =
        Slipway::start(&[s("--vhost-user"), s("--socket"), sock.display().to_string()]);
    slipway.wait_for_path(&sock);
    let script = format!(
        "dhcp eth0 || exit 1\n\
         result queues \"$(ls /sys/class/net/eth0/queues | tr '\\n' ' ')\"\n\
         result down \"$(taskset 2 wget -q -O - http://10.0.2.2:{http}/down.bin | md5sum | cut -d' ' -f1)\"\n\
         wget -q -O /tmp/up.bin http://10.0.2.2:{http}/up.bin && taskset 2 nc 10.0.2.2 {sink_port} < /tmp/up.bin && result upload sent\n",
        http = http.port(),
    );
    let mut args = vhost_args(&sock);
    args.extend([s("-smp"), s("2")]);
    let out = common::run_guest(
        Guest::builder()
            .netdev("vhost-user,id=n0,chardev=c0,queues=2")
            .nic_model("virtio-net-pci,vectors=0,mq=on")
            .extra_args(args)
            .script(&script)
            .timeout(std::time::Duration::from_secs(600)),
        &slipway,
    );
    let queues = out.result("queues").unwrap_or_default();
    for q in ["rx-0", "rx-1", "tx-0", "tx-1"] {
        assert!(queues.contains(q), "{queues}\n{}", out.console);
    }
    check(&out, &slipway, "down", &md5(&down));
    check(&out, &slipway, "upload", "sent");
    sink_thread.join().unwrap();
    assert_eq!(md5(&received), md5(&up), "{}", slipway.log());
    let log = slipway.log();
    assert!(
        log.contains("vhost-user event indices enabled=true"),
        "{log}"
    );
    assert!(log.contains("first frame on a TX ring ring=3"), "{log}");
}

/// A frontend that is not QEMU: raw messages and a guest memory of the
/// test's own (a sealed memfd mapped here too), to send what QEMU never
/// would. slipway must end the connection or drop the frame, never
/// crash.
mod hostile {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use vhost::vhost_user::message::VhostUserVirtioFeatures;
    use vhost::vhost_user::{Frontend, VhostUserFrontend};
    use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
    use vmm_sys_util::eventfd::EventFd;

    use super::common::{s, Slipway};

    /// Guest memory: 1 MiB at guest address 0, seen by "QEMU" at USER.
    pub const MEM: usize = 1 << 20;
    const USER: u64 = 0x7000_0000;
    const QSIZE: u16 = 16;
    /// Per queue q: descriptors at 0x1000 + q*0x1000, avail at +0x400,
    /// used at +0x800; buffers from 0x10000.
    fn ring_base(q: usize) -> usize {
        0x1000 + q * 0x1000
    }

    pub fn start(dir: &Path) -> (Slipway, PathBuf) {
        let sock = dir.join("vhost.sock");
        let mut slipway =
            Slipway::start(&[s("--vhost-user"), s("--socket"), sock.display().to_string()]);
        slipway.wait_for_path(&sock);
        (slipway, sock)
    }

    /// A memfd of `len` bytes, sealed against shrinking when `seal`.
    pub fn memfd(len: usize, seal: bool) -> OwnedFd {
        // SAFETY: a NUL-terminated name; the descriptor is owned at once.
        let fd = unsafe {
            let fd = libc::memfd_create(c"guest".as_ptr(), libc::MFD_ALLOW_SEALING);
            assert!(fd >= 0);
            OwnedFd::from_raw_fd(fd)
        };
        // SAFETY: plain calls on our descriptor.
        unsafe {
            assert_eq!(libc::ftruncate(fd.as_raw_fd(), len as libc::off_t), 0);
            if seal {
                assert_eq!(
                    libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK),
                    0
                );
            }
        }
        fd
    }

    /// The memory, mapped in the test.
    pub struct Mem {
        ptr: *mut u8,
    }

    impl Mem {
        pub fn map(fd: &OwnedFd) -> Mem {
            // SAFETY: a shared mapping of our own memfd, MEM bytes long.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    MEM,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            Mem { ptr: ptr.cast() }
        }
        fn write(&self, at: usize, bytes: &[u8]) {
            assert!(at + bytes.len() <= MEM);
            // SAFETY: within the mapping.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), bytes.len()) }
        }
        fn read(&self, at: usize, len: usize) -> Vec<u8> {
            assert!(at + len <= MEM);
            // SAFETY: within the mapping; volatile as the other side writes.
            (0..len)
                .map(|i| unsafe { std::ptr::read_volatile(self.ptr.add(at + i)) })
                .collect()
        }
        fn u16_at(&self, at: usize) -> u16 {
            let b = self.read(at, 2);
            u16::from_le_bytes([b[0], b[1]])
        }
        /// Puts descriptor `i` of queue `q`.
        fn desc(&self, q: usize, i: u16, addr: u64, len: u32, write: bool) {
            let mut d = Vec::with_capacity(16);
            d.extend_from_slice(&addr.to_le_bytes());
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&(if write { 2u16 } else { 0 }).to_le_bytes());
            d.extend_from_slice(&0u16.to_le_bytes());
            self.write(ring_base(q) + 16 * i as usize, &d);
        }
        /// Puts descriptor `i` of queue `q`, chained to descriptor `next`.
        fn desc_next(&self, q: usize, i: u16, addr: u64, len: u32, write: bool, next: u16) {
            self.desc(q, i, addr, len, write);
            let flags = 1u16 | if write { 2 } else { 0 };
            self.write(ring_base(q) + 16 * i as usize + 12, &flags.to_le_bytes());
            self.write(ring_base(q) + 16 * i as usize + 14, &next.to_le_bytes());
        }
        /// Offers descriptor `head` as the next available entry of queue `q`.
        fn offer(&self, q: usize, head: u16) {
            let avail = ring_base(q) + 0x400;
            let idx = self.u16_at(avail + 2);
            self.write(avail + 4 + 2 * (idx % QSIZE) as usize, &head.to_le_bytes());
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.write(avail + 2, &idx.wrapping_add(1).to_le_bytes());
        }
        fn used_idx(&self, q: usize) -> u16 {
            self.u16_at(ring_base(q) + 0x800 + 2)
        }
        /// The used entry `n` of queue `q`: (descriptor, length).
        fn used(&self, q: usize, n: u16) -> (u32, u32) {
            let b = self.read(ring_base(q) + 0x800 + 4 + 8 * (n % QSIZE) as usize, 8);
            (
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            )
        }
    }

    impl Drop for Mem {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `map`.
            unsafe { libc::munmap(self.ptr.cast(), MEM) };
        }
    }

    /// The handshake up to the memory table, as QEMU does it.
    pub fn handshake(sock: &Path) -> Frontend {
        // Up to two queue pairs (the bound is the backend's).
        let mut fe = Frontend::connect(sock, 4).expect("connect");
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        assert_ne!(
            offered & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0
        );
        let _ = fe.get_protocol_features().unwrap();
        fe.set_features(offered).unwrap();
        fe
    }

    pub fn set_memory(fe: &mut Frontend, fd: &OwnedFd, size: u64) -> vhost::Result<()> {
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: size,
            userspace_addr: USER,
            mmap_offset: 0,
            mmap_handle: fd.as_raw_fd(),
        }])
        .map(|_| ())
    }

    /// A device up, as QEMU brings it up: slipway started, guest memory
    /// shared, queue pair `pair` started. Returns slipway, the memory, the
    /// frontend and the pair's kick and call eventfds (RX, TX).
    pub fn running(
        dir: &Path,
        pair: usize,
    ) -> (Slipway, Mem, Frontend, Vec<EventFd>, Vec<EventFd>) {
        let (slipway, sock) = start(dir);
        let fd = memfd(MEM, true);
        let mem = Mem::map(&fd);
        let mut fe = handshake(&sock);
        set_memory(&mut fe, &fd, MEM as u64).unwrap();
        let (kicks, calls) = start_rings(&mut fe, pair);
        (slipway, mem, fe, kicks, calls)
    }

    /// Sets up the rings of queue pair `pair` and starts them; returns
    /// the kick eventfds (RX, TX).
    pub fn start_rings(fe: &mut Frontend, pair: usize) -> (Vec<EventFd>, Vec<EventFd>) {
        let (mut kicks, mut calls) = (Vec::new(), Vec::new());
        for q in 2 * pair..2 * pair + 2 {
            let base = ring_base(q) as u64;
            fe.set_vring_num(q, QSIZE).unwrap();
            fe.set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: USER + base,
                    used_ring_addr: USER + base + 0x800,
                    avail_ring_addr: USER + base + 0x400,
                    log_addr: None,
                },
            )
            .unwrap();
            fe.set_vring_base(q, 0).unwrap();
            let call = EventFd::new(0).unwrap();
            fe.set_vring_call(q, &call).unwrap();
            let kick = EventFd::new(0).unwrap();
            fe.set_vring_kick(q, &kick).unwrap();
            fe.set_vring_enable(q, true).unwrap();
            kicks.push(kick);
            calls.push(call);
        }
        (kicks, calls)
    }

    /// An ARP request for the gateway 10.0.2.2 behind a virtio-net header.
    fn arp_with_header() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 10, 0, 2, 15]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 2, 2]);
        f
    }

    /// Waits until queue `q`'s used index reaches `want`.
    fn wait_used(mem: &Mem, q: usize, want: u16, slipway: &Slipway) {
        let end = Instant::now() + Duration::from_secs(30);
        while mem.used_idx(q) != want {
            assert!(
                Instant::now() < end,
                "queue {q}: used index {} (want {want})\n{}",
                mem.used_idx(q),
                slipway.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// TX chains outside guest memory or larger than any frame are
    /// handed back and dropped; the next good frame is answered. On queue
    /// pair `pair` alone (pair 1: the other pairs are never set up, as
    /// with a guest that enabled only some).
    pub fn bad_descriptors_then_a_good_frame(dir: &Path, pair: usize) {
        let (slipway, mem, fe, kicks, _calls) = running(dir, pair);
        let (rx, tx) = (2 * pair, 2 * pair + 1);
        // RX buffers: 4 of 32 bytes (device-writable), so that the
        // reply (12-byte header, 42-byte frame) takes two, merged.
        for i in 0..4u16 {
            mem.desc(rx, i, 0x10000 + 0x800 * i as u64, 32, true);
            mem.offer(rx, i);
        }
        kicks[0].write(1).unwrap();
        // TX: a chain past the end of memory, one straddling it, one of
        // 4 GiB - 1 bytes, then a good ARP request.
        mem.desc(tx, 0, 64 << 30, 100, false);
        mem.desc(tx, 1, MEM as u64 - 10, 100, false);
        mem.desc(tx, 2, 0, u32::MAX, false);
        let arp = arp_with_header();
        mem.write(0x20000, &arp);
        mem.desc(tx, 3, 0x20000, arp.len() as u32, false);
        for i in 0..4 {
            mem.offer(tx, i);
        }
        kicks[1].write(1).unwrap();
        wait_used(&mem, tx, 4, &slipway);
        // The answer: an ARP reply over the first two RX buffers.
        wait_used(&mem, rx, 2, &slipway);
        assert_eq!(mem.used(rx, 0), (0, 32));
        assert_eq!(mem.used(rx, 1), (1, 12 + 42 - 32));
        let mut reply = mem.read(0x10000, 32);
        reply.extend(mem.read(0x10800, 22));
        assert_eq!(u16::from_le_bytes([reply[10], reply[11]]), 2, "num_buffers");
        assert_eq!(&reply[12 + 12..12 + 14], &[0x08, 0x06], "{reply:?}");
        assert_eq!(&reply[12 + 20..12 + 22], &[0, 2], "an ARP reply");
        assert_eq!(&reply[12 + 28..12 + 32], &[10, 0, 2, 2]);
        drop(fe);
        slipway.wait_exit_ok();
    }

    /// The voluntary context switches of the thread named `name` of
    /// slipway's child (the sandbox's parent only waits: the network runs
    /// in the child it forks).
    fn thread_wakeups(slipway: &Slipway, name: &str) -> u64 {
        let pid = slipway.pid();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let child = children.split_whitespace().next().expect("slipway's child");
        let tasks = format!("/proc/{child}/task");
        for task in std::fs::read_dir(&tasks).unwrap().flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if status.lines().next() != Some(&format!("Name:\t{name}")) {
                continue;
            }
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
        panic!("no thread {name} in {tasks}");
    }

    /// `ROUNDS` ARP requests, each kicked on the TX ring after an RX
    /// buffer was kicked in, are all answered, and the library's worker
    /// thread (`vring_worker`) slept through the kicks: slipway's loop
    /// polls the kick eventfds itself (`link/vhost/kick.rs`). Before, the
    /// worker woke for every kick and passed it on (two wake-ups a round).
    /// Then a kick that cannot be polled (a regular file, not an eventfd)
    /// ends the connection, and slipway with it, cleanly.
    pub fn kicks_reach_the_loop_without_the_library_thread(dir: &Path) {
        const ROUNDS: u16 = 48;
        let (slipway, mem, fe, kicks, _calls) = running(dir, 0);
        let arp = arp_with_header();
        mem.write(0x20000, &arp);
        // The ring start's own wake-ups of the worker are over first.
        std::thread::sleep(Duration::from_millis(200));
        let before = thread_wakeups(&slipway, "vring_worker");
        for round in 0..ROUNDS {
            let slot = round % QSIZE;
            mem.desc(0, slot, 0x10000 + 0x100 * slot as u64, 64, true);
            mem.offer(0, slot);
            kicks[0].write(1).unwrap();
            mem.desc(1, slot, 0x20000, arp.len() as u32, false);
            mem.offer(1, slot);
            kicks[1].write(1).unwrap();
            wait_used(&mem, 1, round + 1, &slipway);
            wait_used(&mem, 0, round + 1, &slipway);
            assert_eq!(mem.used(0, round), (slot as u32, 12 + 42));
        }
        let woke = thread_wakeups(&slipway, "vring_worker") - before;
        assert!(
            woke < u64::from(ROUNDS) / 4,
            "the library's worker woke {woke} times for {ROUNDS} rounds of two kicks\n{}",
            slipway.log()
        );
        let file = std::fs::File::create(dir.join("not-an-eventfd")).unwrap();
        // SAFETY: the EventFd takes the file's descriptor over; it is only
        // sent, never used as an eventfd.
        let fake = unsafe { EventFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(file)) };
        let _ = fe.set_vring_kick(2, &fake);
        let log = slipway.wait_exit_ok();
        assert!(
            log.contains("vhost-user connection closed err=Operation not permitted"),
            "{log}"
        );
    }

    /// Chains of several descriptors, split inside the virtio-net header:
    /// a TX frame whose header spans two descriptors is read whole, and
    /// the reply's header is written across an RX chain whose first
    /// descriptor (8 bytes) is shorter than it.
    pub fn headers_split_across_descriptors(dir: &Path) {
        let (slipway, mem, fe, kicks, _calls) = running(dir, 0);
        mem.desc_next(0, 0, 0x10000, 8, true, 1);
        mem.desc(0, 1, 0x11000, 64, true);
        mem.offer(0, 0);
        kicks[0].write(1).unwrap();
        let arp = arp_with_header();
        mem.write(0x20000, &arp[..5]);
        mem.write(0x21000, &arp[5..]);
        mem.desc_next(1, 0, 0x20000, 5, false, 1);
        mem.desc(1, 1, 0x21000, arp.len() as u32 - 5, false);
        mem.offer(1, 0);
        kicks[1].write(1).unwrap();
        wait_used(&mem, 1, 1, &slipway);
        wait_used(&mem, 0, 1, &slipway);
        assert_eq!(mem.used(0, 0), (0, 12 + 42));
        let mut reply = mem.read(0x10000, 8);
        reply.extend(mem.read(0x11000, 12 + 42 - 8));
        assert_eq!(u16::from_le_bytes([reply[10], reply[11]]), 1, "num_buffers");
        assert_eq!(&reply[12 + 12..12 + 14], &[0x08, 0x06], "{reply:?}");
        assert_eq!(&reply[12 + 20..12 + 22], &[0, 2], "an ARP reply");
        assert_eq!(&reply[12 + 28..12 + 32], &[10, 0, 2, 2]);
        drop(fe);
        slipway.wait_exit_ok();
    }

    /// A message that is not what its request says ends the connection
    /// and slipway with it, cleanly.
    pub fn malformed_message(dir: &Path, msg: &[u8], log_says: &str) {
        let (slipway, sock) = start(dir);
        let mut conn = UnixStream::connect(&sock).unwrap();
        conn.write_all(msg).unwrap();
        let log = slipway.wait_exit_ok();
        assert!(log.contains(log_says), "{log}");
        drop(conn);
    }
}

fn message(request: u32, body: &[u8]) -> Vec<u8> {
    let mut m = request.to_le_bytes().to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

#[test]
fn vhost_user_survives_hostile_frontends() {
    slipway_testkit::enter_new_netns!(IN_NETNS);
    slipway_testkit::netns::sh("ip link set lo up");
    let dir = slipway_testkit::temp_dir().unwrap();
    // Descriptors pointing outside guest memory, on the first queue pair
    // and on the second alone.
    hostile::bad_descriptors_then_a_good_frame(dir.path(), 0);
    hostile::bad_descriptors_then_a_good_frame(dir.path(), 1);
    // Headers split across descriptors, both ways.
    hostile::headers_split_across_descriptors(dir.path());
    // Kicks go to slipway's loop, not through the library's thread.
    hostile::kicks_reach_the_loop_without_the_library_thread(dir.path());
    // SET_VRING_NUM for ring 16, past the last of 8 queue pairs.
    let mut past = 16u32.to_le_bytes().to_vec();
    past.extend_from_slice(&16u32.to_le_bytes());
    hostile::malformed_message(
        dir.path(),
        &message(8, &past),
        "vhost-user connection ended",
    );
    // SET_VRING_KICK for ring 16, without a descriptor (the relay passes
    // it on for the library to refuse).
    hostile::malformed_message(
        dir.path(),
        &message(12, &16u64.to_le_bytes()),
        "vhost-user connection ended",
    );
    // SET_VRING_ENABLE (held until SET_FEATURES) for ring 16, and one
    // without a ring index.
    hostile::malformed_message(dir.path(), &message(18, &past), "past the last queue pair");
    hostile::malformed_message(dir.path(), &message(18, &[]), "without a ring index");
    // A header announcing a 1 MiB body.
    let mut huge = message(1, &[]);
    huge[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
    hostile::malformed_message(dir.path(), &huge, "over 4 KiB");
    // SET_FEATURES with a 4-byte body (it takes 8).
    hostile::malformed_message(
        dir.path(),
        &message(2, &[0; 4]),
        "vhost-user connection ended",
    );
    // An unknown request.
    hostile::malformed_message(
        dir.path(),
        &message(9999, &[]),
        "vhost-user connection ended",
    );
    // Guest memory that could shrink, or smaller than its region: refused
    // before it is mapped (a read past its end would be a SIGBUS).
    for (seal, size, says) in [
        (false, hostile::MEM as u64, "not sealed"),
        (true, 16 * hostile::MEM as u64, "past the end"),
    ] {
        let (slipway, sock) = hostile::start(dir.path());
        let fd = hostile::memfd(hostile::MEM, seal);
        let mut fe = hostile::handshake(&sock);
        let _ = hostile::set_memory(&mut fe, &fd, size);
        let log = slipway.wait_exit_ok();
        assert!(log.contains(says), "{log}");
    }
}

/// vhost-user is served on a listening unix socket only.
#[test]
fn vhost_user_needs_a_listening_socket() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["user", "--vhost-user", "--dgram", "/nonexistent/s.sock"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--vhost-user serves --socket PATH"),
        "{stderr}"
    );
}

/// A vhost-user connection that cannot be set up (here: no directory
/// for the library's end of the relay) ends slipway with an error naming
/// it, instead of leaving it without a VM or a listener.
#[test]
fn vhost_user_setup_failure_is_an_error() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let sock = dir.path().join("vhost.sock");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.env("TMPDIR", dir.path().join("missing"));
    let mut slipway = Slipway::spawn(
        cmd,
        &[s("--vhost-user"), s("--socket"), sock.display().to_string()],
    );
    slipway.wait_for_path(&sock);
    let _conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let (status, log) = slipway.wait_exit();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("setting up the vhost-user connection failed"),
        "{log}"
    );
    assert!(log.contains("could not be set up"), "{log}");
}
