//! Host-side peers for end-to-end tests, all on loopback: a real HTTP file
//! server (busybox httpd), a real DNS server that never forwards (dnsmasq),
//! UDP and TCP echo servers, and port and temp-dir helpers. Every peer stops when
//! dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::process::{spawn, wait_tcp_ready, Capture, KillOnDrop};

/// How often a server is restarted on another port when the free port it was
/// given got taken in between.
const PORT_ATTEMPTS: usize = 5;

/// A TCP port on 127.0.0.1 that is free for both TCP and UDP right now. Another
/// process may still take it before the caller binds it; the servers here
/// retry on a new port when that happens.
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding a TCP port on 127.0.0.1", e))?;
        let port = tcp
            .local_addr()
            .map_err(|e| Error::io("reading a bound TCP port", e))?
            .port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::io(
        "finding a port on 127.0.0.1 free for TCP and UDP",
        std::io::Error::from(std::io::ErrorKind::AddrInUse),
    ))
}

/// A fresh temporary directory (removed when dropped), named `slipway-test-*`.
pub fn temp_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("slipway-test-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))
}

/// A fresh temporary directory (removed when dropped, mode 0755) on a
/// filesystem that honours setuid bits, for tests that install privileged
/// copies of a program: the system's temporary directory, or `fallback`
/// (a test's `CARGO_TARGET_TMPDIR`) when that one is mounted nosuid.
pub fn setuid_temp_dir(fallback: &std::path::Path) -> Result<TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let nosuid = |p: &std::path::Path| -> Result<bool> {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|e| Error::io("naming a directory", e.into()))?;
        // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a live statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(Error::io("statvfs", std::io::Error::last_os_error()));
        }
        Ok(st.f_flag & libc::ST_NOSUID != 0)
    };
    let mut base = std::env::temp_dir();
    if nosuid(&base)? {
        base = fallback.to_path_buf();
    }
    if nosuid(&base)? {
        return Err(Error::io(
            "finding a directory that honours setuid bits",
            std::io::Error::other(format!("{} is mounted nosuid", base.display())),
        ));
    }
    let dir =
        tempfile::tempdir_in(base).map_err(|e| Error::io("creating a temporary directory", e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("making a temporary directory readable", e))?;
    Ok(dir)
}

/// Starts a server child on a free port of `ip` (a loopback address),
/// retrying on another port if the child exits before it listens (the port
/// was taken meanwhile).
fn start_on_free_port(
    what: &str,
    package: &str,
    ip: IpAddr,
    command: impl Fn(u16) -> Command,
) -> Result<(KillOnDrop, Capture, u16)> {
    let mut last_stderr = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        let mut cmd = command(port);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut cmd, package)?;
        let stderr = Capture::start(child.stderr.take().expect("stderr is piped"), None);
        let mut child = KillOnDrop(child);
        let addr = SocketAddr::new(ip, port);
        let what = format!("{what} on {addr}");
        if wait_tcp_ready(&what, addr, &mut child, &stderr)? {
            return Ok((child, stderr, port));
        }
        // Exited: make sure all of its stderr is in before reporting it.
        stderr.wait_eof(std::time::Instant::now() + Duration::from_secs(5));
        last_stderr = stderr.text();
    }
    Err(Error::Peer {
        what: what.to_string(),
        reason: format!("exited {PORT_ATTEMPTS} times; last stderr:\n{last_stderr}"),
    })
}

/// A real HTTP file server on loopback: `busybox httpd -f` serving a
/// directory. Guests on a user-mode network reach it as `10.0.2.2:PORT`
/// (or, served on `::1`, as `[fec0::2]:PORT`).
pub struct HttpServer {
    ip: IpAddr,
    port: u16,
    _child: KillOnDrop,
    _stderr: Capture,
}

impl HttpServer {
    /// Serves the files in `dir` (`GET /name` returns `dir/name`) on 127.0.0.1.
    pub fn serve_dir(dir: &Path) -> Result<HttpServer> {
        HttpServer::serve_dir_on(dir, Ipv4Addr::LOCALHOST.into())
    }

    /// Serves the files in `dir` on loopback address `ip` (127.0.0.1 or ::1).
    pub fn serve_dir_on(dir: &Path, ip: IpAddr) -> Result<HttpServer> {
        if !dir.is_dir() {
            return Err(Error::Peer {
                what: "busybox httpd".to_string(),
                reason: format!("{} is not a directory", dir.display()),
            });
        }
        let (child, stderr, port) =
            start_on_free_port("busybox httpd", "busybox-static", ip, |port| {
                let mut cmd = Command::new("busybox");
                let listen = match ip {
                    IpAddr::V4(v4) => format!("{v4}:{port}"),
                    IpAddr::V6(v6) => format!("[{v6}]:{port}"),
                };
                cmd.args(["httpd", "-f", "-p", &listen, "-h"]).arg(dir);
                cmd
            })?;
        Ok(HttpServer {
            ip,
            port,
            _child: child,
            _stderr: stderr,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address, e.g. 127.0.0.1:port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// Options for a [`DnsServer`].
#[derive(Clone, Debug, Default)]
pub struct DnsServerBuilder {
    args: Vec<String>,
}

impl DnsServerBuilder {
    /// Answers `name` (exactly; A for IPv4, AAAA for IPv6, plus the PTR
    /// record) with `addr`. Repeat for more names or more addresses.
    pub fn host(mut self, name: &str, addr: IpAddr) -> Self {
        self.args.push(format!("--host-record={name},{addr}"));
        self
    }

    /// Another dnsmasq option, e.g. `"--txt-record=t.test,hello"`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Starts dnsmasq on a free port of 127.0.0.1 (UDP and TCP).
    pub fn start(self) -> Result<DnsServer> {
        self.start_on(Ipv4Addr::LOCALHOST.into())
    }

    /// Starts dnsmasq on a free port of `ip` (e.g. `::1`, for an IPv6
    /// upstream).
    pub fn start_on(self, ip: IpAddr) -> Result<DnsServer> {
        let listen = format!("--listen-address={ip}");
        let (child, log, port) = start_on_free_port("dnsmasq", "dnsmasq-base", ip, |port| {
            let mut cmd = Command::new("dnsmasq");
            cmd.args([
                "--no-daemon",
                "--conf-file=/dev/null",
                // Never forward: no resolv.conf, no upstream servers.
                "--no-resolv",
                "--no-poll",
                "--no-hosts",
                "--pid-file",
                &listen,
                "--bind-interfaces",
                "--log-queries",
                "--log-facility=-",
                &format!("--port={port}"),
            ])
            .args(&self.args);
            cmd
        })?;
        Ok(DnsServer {
            ip,
            port,
            log,
            _child: child,
        })
    }
}

/// A real DNS server on 127.0.0.1 or another loopback address (dnsmasq)
/// that answers only the names it was given and never forwards anywhere.
pub struct DnsServer {
    ip: IpAddr,
    port: u16,
    log: Capture,
    _child: KillOnDrop,
}

impl DnsServer {
    /// Options: the names to answer.
    ///
    /// ```no_run
    /// # use slipway_testkit::DnsServer;
    /// let dns = DnsServer::builder()
    ///     .host("www.example.test", "192.0.2.10".parse().unwrap())
    ///     .start()?;
    /// println!("dig -p {} @127.0.0.1 www.example.test", dns.port());
    /// # Ok::<(), slipway_testkit::Error>(())
    /// ```
    pub fn builder() -> DnsServerBuilder {
        DnsServerBuilder::default()
    }

    /// The port it listens on (UDP and TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address, 127.0.0.1:port unless started on another.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// dnsmasq's log so far, one line per query and answer (`query[A]
    /// name from 127.0.0.1`, `config name is 192.0.2.10`), to check which
    /// queries reached it.
    pub fn log(&self) -> String {
        self.log.text()
    }
}

/// The thread of an echo server, serving on `addr` until dropped: `stop`
/// tells it to end, checked whenever its socket's wait returns.
struct EchoThread {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Connect to `addr` at drop, to wake an accept that would block.
    wake_by_connecting: bool,
}

impl EchoThread {
    fn spawn(
        addr: SocketAddr,
        wake_by_connecting: bool,
        serve: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> EchoThread {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        EchoThread {
            addr,
            stop,
            thread: Some(thread::spawn(move || serve(&stopped))),
            wake_by_connecting,
        }
    }
}

impl Drop for EchoThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.wake_by_connecting {
            let _ = std::net::TcpStream::connect(self.addr);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP echo server on 127.0.0.1 (or another local address): every
/// datagram goes back to its sender.
pub struct UdpEchoServer(EchoThread);

impl UdpEchoServer {
    /// Starts it on a free port of 127.0.0.1.
    pub fn start() -> Result<UdpEchoServer> {
        UdpEchoServer::start_on(Ipv4Addr::LOCALHOST.into())
    }

    /// Starts it on a free port of `ip` (e.g. `::1`).
    pub fn start_on(ip: IpAddr) -> Result<UdpEchoServer> {
        let socket = UdpSocket::bind((ip, 0))
            .map_err(|e| Error::io(format!("binding the UDP echo socket on {ip}"), e))?;
        let addr = socket
            .local_addr()
            .map_err(|e| Error::io("reading the UDP echo address", e))?;
        // The thread checks `stop` this often.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| Error::io("setting the UDP echo read timeout", e))?;
        Ok(UdpEchoServer(EchoThread::spawn(addr, false, move |stop| {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    // A lost echo is what UDP does; the test sees it missing.
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        })))
    }

    /// Its address, e.g. 127.0.0.1:port.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.0.addr.port()
    }
}

/// A TCP echo server on 127.0.0.1: each connection gets back every byte it
/// sends, until it closes its side.
pub struct TcpEchoServer(EchoThread);

impl TcpEchoServer {
    /// Starts it on a free port.
    pub fn start() -> Result<TcpEchoServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding the TCP echo socket on 127.0.0.1", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the TCP echo address", e))?;
        // The blocking accept is woken at drop to see `stop`.
        Ok(TcpEchoServer(EchoThread::spawn(addr, true, move |stop| {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                // One thread per connection; it ends when the peer closes.
                thread::spawn(move || {
                    if let Ok(mut reader) = conn.try_clone() {
                        let _ = std::io::copy(&mut reader, &mut conn);
                    }
                });
            }
        })))
    }

    /// Its address, e.g. 127.0.0.1:port.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.0.addr.port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn udp_echo_echoes() {
        let echo = UdpEchoServer::start().unwrap();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.send_to(b"ping", echo.addr()).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, echo.addr());
    }

    #[test]
    fn tcp_echo_echoes_until_close() {
        let echo = TcpEchoServer::start().unwrap();
        let mut s = TcpStream::connect(echo.addr()).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut reader = s.try_clone().unwrap();
        let back = thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            got
        });
        s.write_all(&data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(back.join().unwrap(), data);
    }

    #[test]
    fn http_server_serves_files() {
        let dir = temp_dir().unwrap();
        std::fs::write(dir.path().join("f.txt"), "hello\n").unwrap();
        let http = HttpServer::serve_dir(dir.path()).unwrap();
        let mut s = TcpStream::connect(http.addr()).unwrap();
        s.write_all(b"GET /f.txt HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nhello\n"), "{reply}");
    }

    #[test]
    fn http_server_rejects_missing_dir() {
        let err = HttpServer::serve_dir(Path::new("/nonexistent/slipway")).err();
        assert!(matches!(err, Some(Error::Peer { .. })), "{err:?}");
    }

    #[test]
    fn dns_server_answers_with_dig_and_refuses_the_rest() {
        let dns = DnsServer::builder()
            .host("www.example.test", "192.0.2.10".parse().unwrap())
            .start()
            .unwrap();
        let dig = |name: &str| {
            let out = Command::new("dig")
                .args(["+short", "+tries=1", "+time=5", "-p"])
                .arg(dns.port().to_string())
                .arg("@127.0.0.1")
                .arg(name)
                .output()
                .expect("dig (dnsutils) is installed");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(dig("www.example.test"), "192.0.2.10");
        assert_eq!(dig("other.example.test"), "");
        assert!(
            dns.log().contains("query[A] www.example.test"),
            "{}",
            dns.log()
        );
    }
}
