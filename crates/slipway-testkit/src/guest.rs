//! Booting the test guest under QEMU (TCG) and reading its serial console.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::image::GuestImage;
use crate::process::{command_line, spawn, Capture, KillOnDrop, LineWait};

/// Prefix of the lines a guest script prints to report a value:
/// `SLIPWAY-RESULT key=value` (the `result KEY VALUE` shell helper).
pub const RESULT_MARKER: &str = "SLIPWAY-RESULT";
/// The line the `ready` shell helper prints; wait for it with
/// [`Guest::wait_for_line`].
pub const READY_MARKER: &str = "SLIPWAY-READY";
/// The line /init prints after `/test.sh` ends: `SLIPWAY-DONE status=N`.
pub const DONE_MARKER: &str = "SLIPWAY-DONE";

/// The QEMU binary, and the Debian package that has it.
const QEMU: &str = "qemu-system-x86_64";
const QEMU_PACKAGE: &str = "qemu-system-x86";
/// Default limit for a whole guest run: boots take seconds under TCG, but the
/// machine is shared with parallel builds and tests.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Least limit for a network boot: the emulated iPXE fetches kernel and
/// initramfs (about 30 MB) over lock-step TFTP, one block per round trip,
/// which alone took over 120 s on the loaded 2-core machine while still
/// making progress.
const NETBOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Set to print the guest console live on stderr while a test runs.
const ECHO_ENV: &str = "SLIPWAY_TEST_CONSOLE";
/// The kernel command line: console on the serial port the harness reads,
/// and a panic ends the run at once instead of hanging until the timeout.
/// `no_timer_check`: at boot the kernel checks that the 8254 timer's
/// interrupt arrives through the IO-APIC within a few busy-waited ticks;
/// under TCG on a loaded host the vCPU thread misses them, and the guest
/// panics with "IO-APIC + timer doesn't work!" (seen on the 2-core CI
/// machine). The timer is emulated and works; skip the check.
pub const KERNEL_ARGS: &str = "console=ttyS0 quiet panic=-1 no_timer_check";
/// The iPXE script [`GuestBuilder::network_boot`] writes; the DHCP server
/// under test must name it as the boot file.
pub const NETBOOT_FILE: &str = "boot.ipxe";

#[derive(Clone, Debug)]
struct Nic {
    netdev: String,
    id: String,
    model: String,
    mac: Option<String>,
}

/// Options for one guest run; see [`Guest::builder`].
#[derive(Clone, Debug)]
pub struct GuestBuilder {
    nics: Vec<Nic>,
    extra_args: Vec<String>,
    script: String,
    timeout: Duration,
    invalid: Option<String>,
    netboot_dir: Option<PathBuf>,
    launcher: Vec<String>,
}

impl GuestBuilder {
    /// Adds a NIC backed by `-netdev SPEC`, e.g.
    /// `"stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/x.sock"` or
    /// `"user,id=n0"`. Without `id=` one (`n0`, `n1`, …) is added. The NIC is
    /// a virtio-net-pci device unless [`nic_model`](Self::nic_model) says
    /// otherwise. Call once per NIC; the guest sees them as eth0, eth1, … in
    /// this order.
    pub fn netdev(mut self, spec: &str) -> Self {
        let id = spec
            .split(',')
            .find_map(|part| part.strip_prefix("id="))
            .map(str::to_string);
        let (netdev, id) = match id {
            Some(id) => (spec.to_string(), id),
            None => {
                let id = format!("n{}", self.nics.len());
                (format!("{spec},id={id}"), id)
            }
        };
        self.nics.push(Nic {
            netdev,
            id,
            model: "virtio-net-pci".to_string(),
            mac: None,
        });
        self
    }

    /// The QEMU device model of the NIC added last (default `virtio-net-pci`;
    /// the guest kernel has drivers for virtio-net only).
    pub fn nic_model(mut self, model: &str) -> Self {
        match self.nics.last_mut() {
            Some(nic) => nic.model = model.to_string(),
            None => self.invalid = Some(format!("nic_model({model:?}) before any netdev()")),
        }
        self
    }

    /// The MAC address of the NIC added last, e.g. `"52:54:00:12:34:56"`
    /// (QEMU assigns 52:54:00:12:34:56, …:57, … otherwise).
    pub fn mac(mut self, mac: &str) -> Self {
        match self.nics.last_mut() {
            Some(nic) => nic.mac = Some(mac.to_string()),
            None => self.invalid = Some(format!("mac({mac:?}) before any netdev()")),
        }
        self
    }

    /// More QEMU arguments, appended after the harness's own.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs QEMU through a launcher: `PROGRAM ARGS… qemu-system-x86_64
    /// QEMU-ARGS…` (e.g. `slipway launch dom.xml --`), which may add
    /// arguments of its own. The guest's process is then the launcher's.
    pub fn launcher<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.launcher = command.into_iter().map(Into::into).collect();
        self
    }

    /// The shell script the guest runs as `/test.sh` (busybox `sh`, with the
    /// helpers `result KEY VALUE`, `ready [WORD]` and `dhcp IFACE [PREFIX]`
    /// defined). Its exit status becomes the run's status.
    pub fn script(mut self, script: &str) -> Self {
        self.script = script.to_string();
        self
    }

    /// Limit for the whole run, from boot until the guest powers off
    /// (default 120 s). [`Guest::wait`] kills QEMU when it expires.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Boots from the network instead of `-kernel`: QEMU's NIC boot ROM
    /// (iPXE) does DHCP on the first NIC, fetches the boot file over TFTP and
    /// runs it. `dir` (served by the TFTP server under test) receives
    /// [`NETBOOT_FILE`], an iPXE script that loads `vmlinuz` and
    /// `initrd.cpio` (the base image plus this run's script) from the same
    /// directory; the DHCP server must hand out `boot.ipxe` as the boot file.
    /// Raises the run's limit to at least 300 s (the download is slow under
    /// emulation).
    pub fn network_boot(mut self, dir: &Path) -> Self {
        self.netboot_dir = Some(dir.to_path_buf());
        self.timeout = self.timeout.max(NETBOOT_TIMEOUT);
        self
    }

    /// Starts QEMU and returns at once; the guest runs in the background.
    pub fn boot(self) -> Result<Guest> {
        if let Some(problem) = self.invalid {
            return Err(Error::InvalidOption(problem));
        }
        if self.script.is_empty() {
            return Err(Error::InvalidOption("no script() given".to_string()));
        }
        let image = GuestImage::get()?;
        let workdir = tempfile::Builder::new()
            .prefix("slipway-guest-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory for the guest", e))?;
        let initrd_dir = self.netboot_dir.as_deref().unwrap_or(workdir.path());
        let initrd = initrd_dir.join("initrd.cpio");
        image.initrd_with_script(&self.script, &initrd)?;

        let mut cmd = match self.launcher.split_first() {
            None => Command::new(QEMU),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(QEMU);
                c
            }
        };
        cmd.args(["-accel", "tcg", "-m", "256", "-nographic", "-no-reboot"]);
        match &self.netboot_dir {
            Some(dir) => {
                write_netboot_files(&image, dir)?;
                cmd.args(["-boot", "n"]);
            }
            None => {
                cmd.arg("-kernel")
                    .arg(image.kernel())
                    .arg("-initrd")
                    .arg(&initrd)
                    .args(["-append", KERNEL_ARGS]);
            }
        }
        if self.nics.is_empty() {
            // Without any network option QEMU would add a default NIC.
            cmd.args(["-nic", "none"]);
        }
        for nic in &self.nics {
            let mut device = format!("{},netdev={}", nic.model, nic.id);
            if let Some(mac) = &nic.mac {
                device.push_str(",mac=");
                device.push_str(mac);
            }
            cmd.args(["-netdev", &nic.netdev, "-device", &device]);
        }
        cmd.args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = command_line(&cmd);
        let mut child = spawn(&mut cmd, QEMU_PACKAGE)?;
        let echo = std::env::var_os(ECHO_ENV).map(|_| "guest| ".to_string());
        // Both pipes were requested just above.
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(Guest {
            console: Capture::start(stdout, echo),
            stderr: Capture::start(stderr, None),
            child: KillOnDrop(child),
            command,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
            cursor: 0,
            _workdir: workdir,
        })
    }

    /// Boots the guest and waits for it to finish: [`boot`](Self::boot) then
    /// [`Guest::wait`].
    pub fn run(self) -> Result<GuestOutput> {
        self.boot()?.wait()
    }
}

/// Puts the kernel and the iPXE script that boots it into `dir` (the run's
/// initramfs is already there).
fn write_netboot_files(image: &GuestImage, dir: &Path) -> Result<()> {
    let kernel = dir.join("vmlinuz");
    fs::copy(image.kernel(), &kernel).map_err(|e| {
        Error::io(
            format!(
                "copying {} to {}",
                image.kernel().display(),
                kernel.display()
            ),
            e,
        )
    })?;
    let script = dir.join(NETBOOT_FILE);
    let text = format!("#!ipxe\nkernel vmlinuz {KERNEL_ARGS}\ninitrd initrd.cpio\nboot\n");
    fs::write(&script, text).map_err(|e| Error::io(format!("writing {}", script.display()), e))
}

/// A running guest. Dropping it kills QEMU.
pub struct Guest {
    console: Capture,
    stderr: Capture,
    child: KillOnDrop,
    command: String,
    deadline: Instant,
    timeout: Duration,
    /// Index of the first console line [`Guest::wait_for_line`] looks at.
    cursor: usize,
    /// Holds the per-run initramfs until QEMU is gone.
    _workdir: TempDir,
}

impl Guest {
    /// Options for a guest: NICs, script, timeout.
    ///
    /// ```no_run
    /// # use slipway_testkit::Guest;
    /// let out = Guest::builder()
    ///     .netdev("user,id=n0")
    ///     .script("dhcp eth0 && result ok yes")
    ///     .run()?;
    /// assert_eq!(out.result("ip"), Some("10.0.2.15"));
    /// # Ok::<(), slipway_testkit::Error>(())
    /// ```
    pub fn builder() -> GuestBuilder {
        GuestBuilder {
            nics: Vec::new(),
            extra_args: Vec::new(),
            script: String::new(),
            timeout: DEFAULT_TIMEOUT,
            invalid: None,
            netboot_dir: None,
            launcher: Vec::new(),
        }
    }

    /// Waits until the console shows a line containing `pattern` that comes
    /// after the line matched by the previous call, and returns that line.
    /// Fails if the guest powers off first or `timeout` passes (the guest
    /// keeps running then; dropping it kills QEMU).
    pub fn wait_for_line(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        match self
            .console
            .wait_line(pattern, self.cursor, Instant::now() + timeout)
        {
            LineWait::Found(index, line) => {
                self.cursor = index + 1;
                Ok(line)
            }
            LineWait::Eof => Err(Error::Guest {
                reason: format!("the guest ended before printing a line containing {pattern:?}"),
                transcript: self.transcript(),
            }),
            LineWait::TimedOut => Err(Error::Timeout {
                what: format!("waiting for a guest line containing {pattern:?}"),
                timeout,
                transcript: self.transcript(),
            }),
        }
    }

    /// The process id of QEMU (or of the launcher, see
    /// [`GuestBuilder::launcher`]).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The console output so far.
    pub fn console(&self) -> String {
        self.console.text()
    }

    /// The results and console of a guest that is still running, as far as
    /// it has got (the same parsing as [`Guest::wait`]'s).
    pub fn output_so_far(&self) -> GuestOutput {
        GuestOutput::from_console(self.console.text())
    }

    /// Waits for the guest to power off (killing QEMU when the builder's
    /// timeout expires) and returns what it printed. Fails, with the console
    /// transcript, on timeout, when QEMU fails, when the guest ends without
    /// `SLIPWAY-DONE` (e.g. a kernel panic), or when `/test.sh` exits non-zero.
    pub fn wait(mut self) -> Result<GuestOutput> {
        if !self.console.wait_eof(self.deadline) {
            self.child.kill();
            // Killing QEMU closes the console; collect its last lines.
            self.console
                .wait_eof(Instant::now() + Duration::from_secs(5));
            return Err(Error::Timeout {
                what: "guest run (QEMU killed)".to_string(),
                timeout: self.timeout,
                transcript: self.transcript(),
            });
        }
        let status = self.child.wait();
        self.stderr
            .wait_eof(Instant::now() + Duration::from_secs(5));
        if !status.is_some_and(|s| s.success()) {
            let how = status.map_or_else(|| "unknown status".to_string(), |s| s.to_string());
            return Err(Error::Guest {
                reason: format!("QEMU exited with {how}"),
                transcript: self.transcript(),
            });
        }
        let lines = self.console.lines();
        let Some(script_status) = done_status(&lines) else {
            return Err(Error::Guest {
                reason: format!("the guest powered off without printing {DONE_MARKER} (kernel panic or broken /init?)"),
                transcript: self.transcript(),
            });
        };
        if script_status != 0 {
            return Err(Error::Guest {
                reason: format!("/test.sh exited with status {script_status}"),
                transcript: self.transcript(),
            });
        }
        Ok(GuestOutput {
            results: parse_results(&lines),
            console: self.console.text(),
        })
    }

    /// Console, QEMU stderr and the QEMU command line, for error messages.
    fn transcript(&self) -> String {
        format!(
            "--- guest console ---\n{}\n--- QEMU stderr ---\n{}\n--- QEMU command ---\n{}",
            self.console.text(),
            self.stderr.text(),
            self.command
        )
    }
}

/// What a finished guest printed.
#[derive(Clone, Debug)]
pub struct GuestOutput {
    /// Every `SLIPWAY-RESULT key=value` line as key → value (a repeated key
    /// keeps its last value).
    pub results: BTreeMap<String, String>,
    /// The whole serial console.
    pub console: String,
}

impl GuestOutput {
    /// The results in a console transcript, e.g. of a guest this crate
    /// did not wait for (one that was killed, or that `slipway launch` ran).
    pub fn from_console(console: String) -> GuestOutput {
        let lines: Vec<String> = console.lines().map(str::to_string).collect();
        GuestOutput {
            results: parse_results(&lines),
            console,
        }
    }

    /// The value the guest reported for `key`.
    pub fn result(&self, key: &str) -> Option<&str> {
        self.results.get(key).map(String::as_str)
    }
}

/// Parses `SLIPWAY-RESULT key=value` lines (anywhere in a line, since kernel
/// messages may precede them on the console).
fn parse_results(lines: &[String]) -> BTreeMap<String, String> {
    let marker = format!("{RESULT_MARKER} ");
    lines
        .iter()
        .filter_map(|line| {
            let start = line.find(&marker)? + marker.len();
            let (key, value) = line[start..].split_once('=')?;
            Some((key.trim().to_string(), value.trim_end().to_string()))
        })
        .collect()
}

/// The script's exit status from the `SLIPWAY-DONE status=N` line.
fn done_status(lines: &[String]) -> Option<i32> {
    let marker = format!("{DONE_MARKER} status=");
    lines.iter().rev().find_map(|line| {
        let start = line.find(&marker)? + marker.len();
        line[start..].trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn results_are_parsed_from_marker_lines() {
        let out = lines(
            "boot noise\nSLIPWAY-RESULT ip=10.0.2.15\n[ 1.0] x SLIPWAY-RESULT dns=10.0.2.3 10.0.2.4 \n\
             SLIPWAY-RESULT empty=\nSLIPWAY-RESULT ip=10.0.2.16\nSLIPWAY-RESULT novalue\nSLIPWAY-RESULTx=1",
        );
        let results = parse_results(&out);
        assert_eq!(results.get("ip").map(String::as_str), Some("10.0.2.16"));
        assert_eq!(
            results.get("dns").map(String::as_str),
            Some("10.0.2.3 10.0.2.4")
        );
        assert_eq!(results.get("empty").map(String::as_str), Some(""));
        assert_eq!(results.len(), 3);
    }

    #[test]
    fn done_status_is_read() {
        assert_eq!(done_status(&lines("a\nSLIPWAY-DONE status=0")), Some(0));
        assert_eq!(done_status(&lines("SLIPWAY-DONE status=3\r")), Some(3));
        assert_eq!(done_status(&lines("a\nb")), None);
    }

    #[test]
    fn netdev_gets_an_id_when_missing() {
        let b = Guest::builder()
            .netdev("user")
            .netdev("user,id=x,hostfwd=tcp::1-:2");
        assert_eq!(b.nics[0].netdev, "user,id=n0");
        assert_eq!(b.nics[0].id, "n0");
        assert_eq!(b.nics[1].id, "x");
    }

    #[test]
    fn nic_options_need_a_netdev() {
        let err = Guest::builder()
            .mac("52:54:00:00:00:01")
            .script("true")
            .boot();
        assert!(matches!(err, Err(Error::InvalidOption(_))));
    }
}
