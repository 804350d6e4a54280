//! Where definitions, live state, the lock and the daemon socket live.

use std::path::{Path, PathBuf};

/// The file-system locations of one manager instance.
///
/// | | system (root) | per-user | `--root DIR` |
/// |---|---|---|---|
/// | definitions | `/etc/slipway/networks` | `$XDG_CONFIG_HOME/slipway/networks` | `DIR/etc/slipway/networks` |
/// | autostart links | `…/networks/autostart` | same | same |
/// | live state | `/run/slipway/networks` | `$XDG_RUNTIME_DIR/slipway/networks` (else `~/.cache/slipway/networks`) | `DIR/run/slipway/networks` |
/// | ports of a running network | `…/networks/ports/NAME/UUID.xml` | same | same |
/// | socket | `/run/slipway/slipway-sock` | `$XDG_RUNTIME_DIR/slipway/slipway-sock` | `DIR/run/slipway/slipway-sock` |
/// | lock | `/run/slipway/lock` | `$XDG_RUNTIME_DIR/slipway/lock` | `DIR/run/slipway/lock` |
/// | libvirt's sockets | `/run/libvirt` | `$XDG_RUNTIME_DIR/libvirt` (else `~/.cache/libvirt`) | `DIR/run/libvirt` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Persistent definitions, one `NAME.xml` each.
    pub config_dir: PathBuf,
    /// Autostart symlinks `NAME.xml` pointing at the definitions.
    pub autostart_dir: PathBuf,
    /// Live state: `NAME.xml` (the running definition) and `NAME.json` (status).
    pub state_dir: PathBuf,
    /// The daemon's unix socket.
    pub socket: PathBuf,
    /// The lock file every mutation holds exclusively.
    pub lock: PathBuf,
    /// Where libvirt's clients look for `virtnetworkd-sock` and
    /// `virtnetworkd-sock-ro`.
    pub libvirt_dir: PathBuf,
    /// True for the system instance (and `--root` run as root): the socket
    /// accepts everyone and only root may change networks.
    pub system: bool,
    /// Create the shipped `default` network on the first run. Off under
    /// `--root` (development and tests), where `net-define-default` asks for
    /// it.
    pub first_run_default: bool,
}

impl Paths {
    /// The locations for this process: under `root` when given, else the
    /// system locations for root, else the per-user ones.
    pub fn detect(root: Option<&Path>) -> Paths {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        match root {
            Some(root) => Paths {
                first_run_default: false,
                ..Paths::layout(&root.join("etc/slipway"), &root.join("run"), euid == 0)
            },
            None if euid == 0 => Paths::layout(Path::new("/etc/slipway"), Path::new("/run"), true),
            None => Paths::user(euid),
        }
    }

    fn user(euid: u32) -> Paths {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        let xdg = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        // Without XDG_RUNTIME_DIR the runtime files go under the home
        // directory rather than a shared /tmp another user could occupy;
        // /tmp is the last resort.
        let (config, runtime) = match &home {
            Some(h) => (
                xdg("XDG_CONFIG_HOME").unwrap_or_else(|| h.join(".config")),
                xdg("XDG_RUNTIME_DIR").unwrap_or_else(|| h.join(".cache")),
            ),
            None => {
                let tmp = PathBuf::from(format!("/tmp/slipway-{euid}"));
                (
                    xdg("XDG_CONFIG_HOME").unwrap_or_else(|| tmp.join("config")),
                    xdg("XDG_RUNTIME_DIR").unwrap_or_else(|| tmp.join("run")),
                )
            }
        };
        Paths::layout(&config.join("slipway"), &runtime, false)
    }

    /// The layout for definitions under `config` and runtime files under
    /// `runtime` (its `slipway` and `libvirt` directories).
    fn layout(config: &Path, runtime: &Path, system: bool) -> Paths {
        let config_dir = config.join("networks");
        let run = runtime.join("slipway");
        Paths {
            libvirt_dir: runtime.join("libvirt"),
            autostart_dir: config_dir.join("autostart"),
            config_dir,
            state_dir: run.join("networks"),
            socket: run.join("slipway-sock"),
            lock: run.join("lock"),
            system,
            first_run_default: true,
        }
    }

    /// The definition file of a network.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.config_dir.join(format!("{name}.xml"))
    }

    /// The autostart symlink of a network.
    pub fn autostart_link(&self, name: &str) -> PathBuf {
        self.autostart_dir.join(format!("{name}.xml"))
    }

    /// The live definition of a running network.
    pub fn live_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.xml"))
    }

    /// The ports of a running network, one `UUID.xml` each (libvirt keeps
    /// them in `/run/libvirt/network/NAME/ports/`).
    pub fn port_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("ports").join(name)
    }

    /// The status (realized state) of a running network.
    pub fn status_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_puts_everything_under_root() {
        let p = Paths::detect(Some(Path::new("/x")));
        for path in [
            &p.config_dir,
            &p.autostart_dir,
            &p.state_dir,
            &p.socket,
            &p.lock,
            &p.libvirt_dir,
        ] {
            assert!(path.starts_with("/x"), "{path:?}");
        }
        assert_eq!(
            p.config_file("n"),
            Path::new("/x/etc/slipway/networks/n.xml")
        );
        assert_eq!(
            p.autostart_link("n"),
            Path::new("/x/etc/slipway/networks/autostart/n.xml")
        );
        assert_eq!(
            p.status_file("n"),
            Path::new("/x/run/slipway/networks/n.json")
        );
        assert_eq!(p.socket, Path::new("/x/run/slipway/slipway-sock"));
        assert_eq!(p.libvirt_dir, Path::new("/x/run/libvirt"));
        assert!(!p.first_run_default);
    }
}
