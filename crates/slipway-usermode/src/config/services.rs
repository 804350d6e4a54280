//! Configuration of the stack's extra services: the TFTP server (`tftp=`,
//! `bootfile=`, `tftp-server-name=`), the SMB share (`smb=`,
//! `smbserver=`) and guest forwards (`guestfwd=`).
//!
//! They live apart from the core options because each is served by its own
//! module (`tftp`, `smb`, `guestfwd`); [`crate::options`] only hands the
//! raw values to [`ServicesBuilder`], which checks them against the network.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use super::{invalid, OptionsError};

/// The extra services of a network, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    /// `tftp=`: root of the read-only TFTP server at the host address.
    pub tftp_root: Option<PathBuf>,
    /// `bootfile=`: the boot file name DHCP hands out (BOOTP `file`, option 67).
    pub bootfile: Option<String>,
    /// `tftp-server-name=`: DHCP option 66.
    pub tftp_server_name: Option<String>,
    /// `smb=DIR[,smbserver=ADDR]`.
    pub smb: Option<SmbShare>,
    /// `guestfwd=` rules, in the order given.
    pub guestfwd: Vec<GuestForward>,
    /// Guest-visible TCP endpoints redirected to host endpoints the stack
    /// opened at start (the SMB server's and guest forwards' loopback
    /// listeners); filled in by [`crate::stack::Stack::start`].
    pub redirects: Vec<(SocketAddrV4, SocketAddr)>,
    /// Started as root, the user the guest forward helper (its commands,
    /// smbd) switches to: the sandbox's `--runas`. `None` (no sandbox)
    /// keeps the process's user.
    pub helper_user: Option<String>,
}

/// `smb=`: a directory shared over SMB by a private `smbd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbShare {
    /// The shared directory (share name `qemu`).
    pub dir: PathBuf,
    /// The guest-visible server address (default x.x.x.4).
    pub server: Ipv4Addr,
}

/// One `guestfwd=` rule: guest TCP connections to `server` go to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestForward {
    /// The guest-visible address and port (inside the guest network).
    pub server: SocketAddrV4,
    /// Where each connection goes.
    pub target: GuestForwardTarget,
}

/// Where a guest-forward connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestForwardTarget {
    /// `cmd:COMMAND`: a new `/bin/sh -c COMMAND` per connection, with the
    /// connection on its standard input and output.
    Command(String),
    /// `tcp:HOST:PORT`: a TCP connection to a host address.
    Tcp(String, u16),
    /// `unix:PATH`: a connection to a unix stream socket.
    Unix(PathBuf),
}

impl Services {
    /// Whether `addr` is a guest-visible address one of the services owns.
    pub fn owns(&self, addr: Ipv4Addr) -> bool {
        self.smb.as_ref().is_some_and(|s| s.server == addr)
            || self.guestfwd.iter().any(|g| *g.server.ip() == addr)
    }

    /// The host endpoint a guest TCP connection to `dst` is redirected to.
    pub fn redirect(&self, dst: SocketAddrV4) -> Option<SocketAddr> {
        self.redirects
            .iter()
            .find(|(from, _)| *from == dst)
            .map(|(_, to)| *to)
    }
}

/// The network the services must fit in, as [`crate::options`] computed it.
pub(crate) struct Network {
    pub net: u32,
    pub mask: u32,
    pub host: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub dhcp_start: Ipv4Addr,
    pub dhcp_end: Ipv4Addr,
}

impl Network {
    /// Checks that `ip` is a free address of the guest network for a
    /// service (not the network, broadcast, host, DNS or DHCP pool).
    fn check_free(&self, key: &str, spec: &str, ip: Ipv4Addr) -> Result<(), OptionsError> {
        let u = u32::from(ip);
        let reason = if u & self.mask != self.net {
            "not inside the guest network"
        } else if u == self.net || u == self.net | !self.mask {
            "the network or broadcast address"
        } else if ip == self.host || ip == self.dns {
            "the host or DNS address"
        } else if (self.dhcp_start..=self.dhcp_end).contains(&ip) {
            "inside the DHCP pool"
        } else {
            return Ok(());
        };
        Err(invalid(key, spec, format!("address {ip} is {reason}")))
    }
}

/// The raw service options, collected while the option string is parsed.
#[derive(Default)]
pub(crate) struct ServicesBuilder {
    tftp: Option<String>,
    bootfile: Option<String>,
    tftp_server_name: Option<String>,
    smb: Option<String>,
    smbserver: Option<String>,
    guestfwd: Vec<String>,
}

impl ServicesBuilder {
    /// Takes `key=value` if it is a service option; returns false otherwise.
    pub fn take(&mut self, key: &str, value: &str) -> bool {
        let v = Some(value.to_string());
        match key {
            "tftp" => self.tftp = v,
            "bootfile" => self.bootfile = v,
            "tftp-server-name" => self.tftp_server_name = v,
            "smb" => self.smb = v,
            "smbserver" => self.smbserver = v,
            "guestfwd" => self.guestfwd.push(value.to_string()),
            _ => return false,
        }
        true
    }

    /// Validates everything against the network.
    pub fn build(self, net: &Network) -> Result<Services, OptionsError> {
        let non_empty = |key: &str, v: Option<String>| match v {
            Some(v) if v.is_empty() => Err(invalid(key, &v, "empty")),
            v => Ok(v),
        };
        let tftp_root = non_empty("tftp", self.tftp)?.map(PathBuf::from);
        let bootfile = non_empty("bootfile", self.bootfile)?;
        if let Some(b) = &bootfile {
            // The BOOTP `file` field holds 127 bytes and a NUL.
            if b.len() > 127 || b.contains('\0') {
                return Err(invalid("bootfile", b, "longer than 127 bytes"));
            }
        }
        let tftp_server_name = non_empty("tftp-server-name", self.tftp_server_name)?;
        if let Some(n) = &tftp_server_name {
            if n.len() > 255 {
                return Err(invalid("tftp-server-name", n, "longer than 255 bytes"));
            }
        }
        let smb = match (non_empty("smb", self.smb)?, self.smbserver) {
            (None, Some(s)) => return Err(invalid("smbserver", &s, "needs smb=DIR")),
            (None, None) => None,
            (Some(dir), server) => {
                let server = match server {
                    Some(s) => {
                        let ip = s
                            .parse()
                            .map_err(|_| invalid("smbserver", &s, "not an IPv4 address"))?;
                        net.check_free("smbserver", &s, ip)?;
                        ip
                    }
                    None => {
                        let ip = Ipv4Addr::from(net.net | (0x0204 & !net.mask));
                        net.check_free("smb", &dir, ip)?;
                        ip
                    }
                };
                Some(SmbShare {
                    dir: PathBuf::from(dir),
                    server,
                })
            }
        };
        let mut guestfwd: Vec<GuestForward> = Vec::with_capacity(self.guestfwd.len());
        for spec in &self.guestfwd {
            let fwd = parse_guestfwd(spec).map_err(|r| invalid("guestfwd", spec, r))?;
            net.check_free("guestfwd", spec, *fwd.server.ip())?;
            let smb_clash = smb.as_ref().is_some_and(|s| {
                s.server == *fwd.server.ip() && [139, 445].contains(&fwd.server.port())
            });
            if smb_clash || guestfwd.iter().any(|g| g.server == fwd.server) {
                return Err(invalid(
                    "guestfwd",
                    spec,
                    format!("{} is forwarded twice", fwd.server),
                ));
            }
            guestfwd.push(fwd);
        }
        Ok(Services {
            tftp_root,
            bootfile,
            tftp_server_name,
            smb,
            guestfwd,
            redirects: Vec::new(),
            helper_user: None,
        })
    }
}

/// QEMU's `slirp_guestfwd` syntax: `[tcp]:SERVER:PORT-TARGET` with TARGET
/// `cmd:COMMAND`, `tcp:HOST:PORT` or `unix:PATH`.
fn parse_guestfwd(spec: &str) -> Result<GuestForward, String> {
    const SYNTAX: &str = "expected [tcp]:SERVER:PORT-cmd:COMMAND, -tcp:HOST:PORT or -unix:PATH";
    let (proto, rest) = spec.split_once(':').ok_or(SYNTAX)?;
    if !proto.is_empty() && proto != "tcp" {
        return Err(format!("protocol '{proto}' is not tcp"));
    }
    let (server, rest) = rest.split_once(':').ok_or(SYNTAX)?;
    let server: Ipv4Addr = server
        .parse()
        .map_err(|_| format!("server '{server}' is not an IPv4 address"))?;
    // A port number, 1 to 65535; `what` names it in the error.
    let port_number = |port: &str, what: &str| {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{what} '{port}' is not a port number (1-65535)"))
    };
    let (port, target) = rest.split_once('-').ok_or(SYNTAX)?;
    let port = port_number(port, "port")?;
    let target = if let Some(cmd) = target.strip_prefix("cmd:") {
        if cmd.trim().is_empty() {
            return Err("empty command".into());
        }
        GuestForwardTarget::Command(cmd.to_string())
    } else if let Some(hp) = target.strip_prefix("tcp:") {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or("the tcp: target needs HOST:PORT")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port_number(port, "target port")?;
        if host.is_empty() {
            return Err("the tcp: target needs a host".into());
        }
        GuestForwardTarget::Tcp(host.to_string(), port)
    } else if let Some(path) = target.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("the unix: target needs a path".into());
        }
        GuestForwardTarget::Unix(PathBuf::from(path))
    } else {
        return Err(format!(
            "target '{target}' is none of cmd:COMMAND, tcp:HOST:PORT, unix:PATH"
        ));
    };
    Ok(GuestForward {
        server: SocketAddrV4::new(server, port),
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_options;
    use proptest::prelude::*;

    #[test]
    fn service_options_parse_with_defaults() {
        let c = parse_options(
            "tftp=/srv/tftp,bootfile=pxe.0,tftp-server-name=boot.test,smb=/srv/share,\
             guestfwd=tcp:10.0.2.100:1234-cmd:cat -,guestfwd=:10.0.2.101:80-tcp:127.0.0.1:8080,\
             guestfwd=tcp:10.0.2.101:81-unix:/run/x.sock",
        )
        .unwrap();
        let s = &c.services;
        assert_eq!(s.tftp_root, Some(PathBuf::from("/srv/tftp")));
        assert_eq!(s.bootfile.as_deref(), Some("pxe.0"));
        assert_eq!(s.tftp_server_name.as_deref(), Some("boot.test"));
        assert_eq!(
            s.smb,
            Some(SmbShare {
                dir: "/srv/share".into(),
                server: Ipv4Addr::new(10, 0, 2, 4)
            })
        );
        assert_eq!(
            s.guestfwd,
            vec![
                GuestForward {
                    server: "10.0.2.100:1234".parse().unwrap(),
                    target: GuestForwardTarget::Command("cat -".into())
                },
                GuestForward {
                    server: "10.0.2.101:80".parse().unwrap(),
                    target: GuestForwardTarget::Tcp("127.0.0.1".into(), 8080)
                },
                GuestForward {
                    server: "10.0.2.101:81".parse().unwrap(),
                    target: GuestForwardTarget::Unix("/run/x.sock".into())
                },
            ]
        );
        assert!(c.is_virtual(Ipv4Addr::new(10, 0, 2, 4)));
        assert!(c.is_virtual(Ipv4Addr::new(10, 0, 2, 101)));
        let c = parse_options("net=192.168.5.0/24,smb=/x,smbserver=192.168.5.9").unwrap();
        assert_eq!(
            c.services.smb.unwrap().server,
            Ipv4Addr::new(192, 168, 5, 9)
        );
    }

    #[test]
    fn bad_service_options_name_the_option() {
        for (s, key) in [
            ("smbserver=10.0.2.4", "smbserver"),
            ("smb=/x,smbserver=10.0.2.2", "smbserver"),
            ("smb=/x,smbserver=10.0.3.9", "smbserver"),
            ("smb=/x,smbserver=nope", "smbserver"),
            ("tftp=", "tftp"),
            ("guestfwd=udp:10.0.2.100:1-cmd:x", "guestfwd"),
            ("guestfwd=tcp:10.0.2.16:1-cmd:x", "guestfwd"),
            ("guestfwd=tcp:10.0.2.100:0-cmd:x", "guestfwd"),
            ("guestfwd=tcp:10.0.2.100:1-cmd:", "guestfwd"),
            ("guestfwd=tcp:10.0.2.100:1-tcp:127.0.0.1", "guestfwd"),
            ("guestfwd=tcp:10.0.2.100:1-file:/x", "guestfwd"),
            (
                "guestfwd=tcp:10.0.2.100:1-cmd:a,guestfwd=tcp:10.0.2.100:1-cmd:b",
                "guestfwd",
            ),
            ("smb=/x,guestfwd=tcp:10.0.2.4:445-cmd:b", "guestfwd"),
        ] {
            match parse_options(s) {
                Err(OptionsError::Invalid { key: k, .. }) => assert_eq!(k, key, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        let long = format!("bootfile={}", "a".repeat(128));
        assert!(parse_options(&long).is_err());
    }

    proptest! {
        #[test]
        fn random_guestfwd_specs_never_panic(spec in "[a-z0-9.:\\-/ \\[\\]]{0,40}") {
            let _ = parse_options(&format!("guestfwd={spec}"));
        }

        #[test]
        fn random_service_options_never_panic(
            key in prop::sample::select(vec!["tftp", "bootfile", "tftp-server-name", "smb", "smbserver", "guestfwd"]),
            value in any::<String>(),
            other in prop::option::of("(smb=/x|smbserver=10\\.0\\.2\\.[0-9]{1,3}|net=10\\.0\\.[0-9]\\.0/24)"),
        ) {
            let mut s = format!("{key}={value}");
            if let Some(o) = other {
                s = format!("{o},{s}");
            }
            if let Ok(cfg) = parse_options(&s) {
                // Whatever is accepted fits the network.
                if let Some(smb) = &cfg.services.smb {
                    prop_assert!(cfg.in_subnet(smb.server) && smb.server != cfg.host && smb.server != cfg.dns);
                }
                for g in &cfg.services.guestfwd {
                    prop_assert!(cfg.in_subnet(*g.server.ip()) && g.server.port() != 0);
                }
            }
        }
    }
}
