//! A read-only TFTP server for `<tftp root>` (RFC 1350, with the blksize and
//! tsize options of RFC 2348/2349 that PXE and iPXE ask for): one thread per
//! transfer, files only from under the root.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;
const ERR_NOT_FOUND: u16 = 1;
const ERR_ACCESS: u16 = 2;
const ERR_ILLEGAL: u16 = 4;
/// Transfers served at once; more requests get an error.
const MAX_TRANSFERS: usize = 32;
/// How long to wait for an ACK before sending a block again, and how often.
const RETRANSMIT: Duration = Duration::from_secs(1);
const RETRIES: u32 = 5;

/// A parsed read request.
#[derive(Debug, PartialEq, Eq)]
struct ReadRequest {
    file: String,
    /// Requested block size (option `blksize`).
    blksize: Option<usize>,
    /// Whether the client asked for the transfer size (option `tsize`).
    tsize: bool,
}

/// Parses a TFTP request; `Err` holds the error code and message to send.
fn parse_request(pkt: &[u8]) -> Result<ReadRequest, (u16, &'static str)> {
    if pkt.len() < 4 || u16::from_be_bytes([pkt[0], pkt[1]]) != OP_RRQ {
        return Err((ERR_ILLEGAL, "only read requests are served"));
    }
    let mut fields = pkt[2..].split(|b| *b == 0);
    let file = fields
        .next()
        .and_then(|f| std::str::from_utf8(f).ok())
        .filter(|f| !f.is_empty())
        .ok_or((ERR_ILLEGAL, "bad file name"))?
        .to_string();
    let mode = fields
        .next()
        .and_then(|m| std::str::from_utf8(m).ok())
        .ok_or((ERR_ILLEGAL, "no mode"))?;
    if !mode.eq_ignore_ascii_case("octet") {
        return Err((ERR_ILLEGAL, "only octet mode is served"));
    }
    let mut req = ReadRequest {
        file,
        blksize: None,
        tsize: false,
    };
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value);
        match name.as_str() {
            "blksize" => {
                req.blksize = value
                    .parse::<usize>()
                    .ok()
                    .filter(|b| *b >= 8)
                    .map(|b| b.min(65464))
            }
            "tsize" => req.tsize = true,
            _ => {}
        }
    }
    Ok(req)
}

/// The file under `root` that `name` names, refusing anything that would
/// leave the root (`..`, absolute paths are taken as relative to it).
fn resolve(root: &Path, name: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for c in Path::new(name.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => path.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    let real = path.canonicalize().ok()?;
    let root = root.canonicalize().ok()?;
    real.starts_with(&root).then_some(real)
}

fn error_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + msg.len());
    p.extend_from_slice(&OP_ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// The listening side: requests arrive on port 69 of the bridge address.
pub struct TftpServer {
    socket: UdpSocket,
    root: PathBuf,
    device: String,
    active: Arc<AtomicUsize>,
}

impl TftpServer {
    /// Binds port 69 of `addr` on `device`, serving files under `root`.
    pub fn bind(addr: std::net::IpAddr, device: &str, root: &Path) -> std::io::Result<TftpServer> {
        let socket = bound(SocketAddr::new(addr, 69), device)?;
        socket.set_nonblocking(true)?;
        Ok(TftpServer {
            socket,
            root: root.to_path_buf(),
            device: device.to_string(),
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The listening socket (to register with the poller).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Starts a transfer for every request waiting.
    pub fn ready(&self) {
        let mut buf = [0u8; 1024];
        while let Ok((len, client)) = self.socket.recv_from(&mut buf) {
            let req = match parse_request(&buf[..len]) {
                Ok(r) => r,
                Err((code, msg)) => {
                    let _ = self.socket.send_to(&error_packet(code, msg), client);
                    continue;
                }
            };
            if self.active.load(Ordering::SeqCst) >= MAX_TRANSFERS {
                let _ = self
                    .socket
                    .send_to(&error_packet(0, "too many transfers"), client);
                continue;
            }
            let Ok(local) = self.socket.local_addr() else {
                continue;
            };
            // Each transfer gets its own port (its TID, RFC 1350 section 4).
            let sock = match bound(SocketAddr::new(local.ip(), 0), &self.device) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("TFTP: no socket for {client}: {e}");
                    continue;
                }
            };
            self.active.fetch_add(1, Ordering::SeqCst);
            let active = self.active.clone();
            let root = self.root.clone();
            std::thread::spawn(move || {
                match transfer(&sock, client, &root, &req) {
                    Ok(bytes) => {
                        tracing::info!("TFTP: sent {} ({bytes} bytes) to {client}", req.file)
                    }
                    Err(e) => tracing::info!("TFTP: {} to {client}: {e}", req.file),
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn bound(addr: SocketAddr, device: &str) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind_device(Some(device.as_bytes()))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Sends `pkt` and waits for the ACK of `block` from `client`, resending on
/// silence; ignores packets from other ports.
fn send_acked(sock: &UdpSocket, client: SocketAddr, pkt: &[u8], block: u16) -> std::io::Result<()> {
    let mut buf = [0u8; 516];
    for _ in 0..RETRIES {
        sock.send_to(pkt, client)?;
        loop {
            match sock.recv_from(&mut buf) {
                Ok((len, from)) if from == client && len >= 4 => {
                    let op = u16::from_be_bytes([buf[0], buf[1]]);
                    let n = u16::from_be_bytes([buf[2], buf[3]]);
                    if op == OP_ACK && n == block {
                        return Ok(());
                    }
                    if op == OP_ERROR {
                        return Err(std::io::Error::other("client sent an error"));
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no ACK for block {block}"),
    ))
}

/// Serves one read request; returns the bytes sent.
fn transfer(
    sock: &UdpSocket,
    client: SocketAddr,
    root: &Path,
    req: &ReadRequest,
) -> std::io::Result<u64> {
    sock.set_read_timeout(Some(RETRANSMIT))?;
    let Some(path) = resolve(root, &req.file) else {
        sock.send_to(&error_packet(ERR_NOT_FOUND, "file not found"), client)?;
        return Err(std::io::ErrorKind::NotFound.into());
    };
    let mut file = match File::open(&path).and_then(|f| f.metadata().map(|m| (f, m))) {
        Ok((f, m)) if m.is_file() => (f, m.len()),
        _ => {
            sock.send_to(&error_packet(ERR_ACCESS, "cannot read file"), client)?;
            return Err(std::io::ErrorKind::PermissionDenied.into());
        }
    };
    let blksize = req.blksize.unwrap_or(512);
    if req.blksize.is_some() || req.tsize {
        let mut oack = OP_OACK.to_be_bytes().to_vec();
        if let Some(b) = req.blksize {
            oack.extend_from_slice(format!("blksize\0{b}\0").as_bytes());
        }
        if req.tsize {
            oack.extend_from_slice(format!("tsize\0{}\0", file.1).as_bytes());
        }
        send_acked(sock, client, &oack, 0)?;
    }
    let mut block: u16 = 1;
    let mut sent = 0u64;
    let mut pkt = vec![0u8; 4 + blksize];
    loop {
        let mut n = 0;
        while n < blksize {
            let r = file.0.read(&mut pkt[4 + n..])?;
            if r == 0 {
                break;
            }
            n += r;
        }
        pkt[..2].copy_from_slice(&OP_DATA.to_be_bytes());
        pkt[2..4].copy_from_slice(&block.to_be_bytes());
        send_acked(sock, client, &pkt[..4 + n], block)?;
        sent += n as u64;
        if n < blksize {
            return Ok(sent);
        }
        // Block numbers wrap for files over 32 MB at 512-byte blocks, as
        // common clients expect.
        block = block.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_options() {
        let r = parse_request(b"\x00\x01boot.ipxe\x00octet\x00blksize\x001432\x00tsize\x000\x00")
            .unwrap();
        assert_eq!(
            r,
            ReadRequest {
                file: "boot.ipxe".into(),
                blksize: Some(1432),
                tsize: true
            }
        );
        assert_eq!(
            parse_request(b"\x00\x02f\x00octet\x00").unwrap_err().0,
            ERR_ILLEGAL
        );
        assert_eq!(
            parse_request(b"\x00\x01f\x00netascii\x00").unwrap_err().0,
            ERR_ILLEGAL
        );
        assert_eq!(parse_request(b"\x00\x01").unwrap_err().0, ERR_ILLEGAL);
    }

    #[test]
    fn paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "x").unwrap();
        assert!(resolve(dir.path(), "a").is_some());
        assert!(resolve(dir.path(), "/a").is_some());
        assert_eq!(resolve(dir.path(), "../etc/passwd"), None);
        assert_eq!(resolve(dir.path(), "missing"), None);
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("out")).unwrap();
        assert_eq!(resolve(dir.path(), "out"), None);
    }
}
