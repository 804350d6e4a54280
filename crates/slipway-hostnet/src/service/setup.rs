//! Opening the service (its files, its sandbox, every protocol's sockets)
//! and rereading its configuration on SIGHUP.

use std::path::Path;

use slipway_sandbox::{Sandbox, SandboxError};

use super::config::{epoch_secs, parse_service_file, read_service_file, zone};
use super::dhcp::Dhcp;
use super::dhcpv6::Dhcpv6;
use super::dns::Dns;
use super::ra::Advertiser;
use super::tftp::Tftp;
use super::Service;
use crate::error::{Error, Result};
use crate::leases::LeasesFile;
use slipway_host::files::Dir;

impl Service {
    /// Reads the configuration at `path`, opens the leases and binds every
    /// socket; the sandbox is ready to apply.
    pub(super) fn new(path: &Path) -> Result<Service> {
        let file = read_service_file(path)?;
        let svc = &file.service;
        let config_dir = slipway_host::atomic::parent(path);
        let config_dir =
            Dir::open(config_dir).map_err(|e| Error::io("cannot open", config_dir, e))?;
        let config_name = path.file_name().unwrap_or_default().to_os_string();
        let leases = LeasesFile::open(&file.leases_file)?;
        if same_file(leases.dir().file(), config_dir.file()) {
            // It is handed to the confined service's user.
            return Err(Error::Service(format!(
                "the leases file {} must be in a directory of its own, not in {}",
                file.leases_file.display(),
                config_dir.path().display()
            )));
        }
        let mut sandbox = Sandbox::network_service();
        sandbox
            .runas(file.user.clone())
            .allow_read(config_dir.path())
            .allow_write_dir(leases.dir().path());
        if let Some(root) = &svc.tftp_root {
            sandbox.allow_read(root);
        }
        sandbox
            .hand_over(leases.dir().file())
            .map_err(|e| match e {
                SandboxError::NoSuchUser(user) => Error::Service(format!(
                    "user {user:?} (\"user\" in {}) not found: the service switches to it from root",
                    path.display()
                )),
                e => e.into(),
            })?;
        let mut saved = leases.load_or_recover()?;
        // Names in a file of an older version pass today's rule or go (once,
        // with a warning, not at every rebuild of the zone).
        for r in &mut saved {
            r.hostname = r.host_name().map(|h| h.to_string());
        }
        let ra = Advertiser::open(svc)?;
        let dhcpv6 = ra
            .as_ref()
            .map(|ra| Dhcpv6::open(svc, ra.ifindex(), ra.mac().unwrap_or_default(), &saved));
        let dhcpv6 = dhcpv6.transpose()?;
        let dhcp = Dhcp::open(svc, &saved)?;
        let dns = Dns::open(svc, &file.resolv_conf, zone(svc, &saved)?)?;
        let tftp = match &svc.tftp_root {
            Some(root) => {
                let addr = svc.listen.iter().find(|a| a.is_ipv4()).ok_or_else(|| {
                    Error::Plan("TFTP needs an IPv4 address on the bridge".into())
                })?;
                Some(Tftp::open(*addr, svc.interface.as_str(), Path::new(root))?)
            }
            None => None,
        };
        Ok(Service {
            path: path.to_path_buf(),
            config_dir,
            config_name,
            leases,
            sandbox,
            dhcp,
            ra,
            dhcpv6,
            dns,
            tftp,
            saved,
            zone_built: epoch_secs(),
            stats: Default::default(),
            file,
        })
    }

    /// Rereads the configuration: static hosts and DNS records change live.
    pub(super) fn reload(&mut self) {
        // Through the directory opened at start: the confined service may
        // not search the directories above it.
        let read = self.config_dir.read(&self.config_name);
        let file = match parse_service_file(&self.path, read) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("reload: {e}");
                return;
            }
        };
        let applied = (|| {
            if let Some(dhcp) = &mut self.dhcp {
                dhcp.set_hosts(&file.service)?;
            }
            if let Some(v6) = &mut self.dhcpv6 {
                v6.set_hosts(&file.service)?;
            }
            zone(&file.service, &self.saved)
        })();
        match applied {
            Ok(z) => self.dns.set_zone(z),
            Err(e) => {
                tracing::error!("reload: {e}");
                return;
            }
        }
        self.dns.set_upstream(file.service.upstream);
        self.file.service = file.service;
        tracing::info!("configuration reloaded");
    }
}

/// Whether two open files are the same (device and inode).
fn same_file(a: &std::fs::File, b: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}
