//! The event loop's busy poll (`StackConfig::busy_poll`, `--busy-poll-us`)
//! through `event_loop::run` with a VM on a unix stream socket (QEMU's
//! framing: a 4-byte big-endian length before each frame): the VM's
//! datagrams to an echo server on loopback come back, and once the
//! exchange is over the loop blocks again instead of spinning (its
//! thread's CPU time stays flat while idle).

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use slipway_usermode::event_loop::{self, RunOptions};
use slipway_usermode::link::AttachSpec;

mod frames;
use frames::{udp, GATEWAY, GUEST};

/// CPU time (user + system) of thread `tid` of this process.
fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based); fields[0] is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn send_frame(vm: &mut UnixStream, frame: &[u8]) {
    vm.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    vm.write_all(frame).unwrap();
}

fn read_frame(vm: &mut UnixStream) -> Vec<u8> {
    let mut len = [0; 4];
    vm.read_exact(&mut len).unwrap();
    let mut frame = vec![0; u32::from_be_bytes(len) as usize];
    vm.read_exact(&mut frame).unwrap();
    frame
}

/// Runs a stack with a busy-poll window of `window`, exchanges `count`
/// datagrams with an echo server through it, then leaves it idle for
/// `idle`: the CPU time of the loop's thread during the idle time.
fn idle_cpu_after_exchanges(window: Duration, count: usize, idle: Duration) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let mut cfg = slipway_usermode::options::parse_options("").unwrap();
    cfg.dns_upstreams = vec!["127.0.0.1:9".parse().unwrap()];
    cfg.busy_poll = window;
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let spec = AttachSpec::UnixListen(path.clone());
    let stack = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        event_loop::run(cfg, spec, RunOptions::default())
    });
    let tid = tid_rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut vm = loop {
        match UnixStream::connect(&path) {
            Ok(vm) => break vm,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => panic!("the stack does not listen: {err}"),
        }
    };
    vm.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..count {
        let tag = format!("ping {i}");
        send_frame(
            &mut vm,
            &udp(GUEST, 5000, GATEWAY, echo_port, tag.as_bytes()),
        );
        loop {
            let frame = read_frame(&mut vm);
            if frame.ends_with(tag.as_bytes()) && frame[30..34] == GUEST.octets() {
                break;
            }
        }
    }
    // The last batch's window (at most 1 ms) closes, then idle time.
    std::thread::sleep(Duration::from_millis(20));
    let before = thread_cpu(tid);
    std::thread::sleep(idle);
    let spent = thread_cpu(tid) - before;
    drop(vm);
    stack.join().unwrap().unwrap();
    spent
}

#[test]
fn busy_poll_serves_traffic_and_never_spins_while_idle() {
    let idle = Duration::from_millis(1500);
    // The widest window there is; a loop that kept spinning would burn
    // the whole idle time.
    let spent = idle_cpu_after_exchanges(Duration::from_millis(1), 200, idle);
    assert!(
        spent < idle / 10,
        "the loop's thread used {spent:?} of CPU in {idle:?} of idle time"
    );
}

#[test]
fn busy_poll_off_serves_traffic_and_sleeps() {
    let idle = Duration::from_millis(500);
    let spent = idle_cpu_after_exchanges(Duration::ZERO, 50, idle);
    assert!(
        spent < idle / 10,
        "{spent:?} of CPU in {idle:?} of idle time"
    );
}
