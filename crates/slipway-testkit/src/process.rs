//! Child processes of the harness: spawning with clear "not installed"
//! errors, output capture by line, and kill-on-drop ownership ([`KillOnDrop`]).

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Renders a command line for messages.
pub(crate) fn command_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Spawns `cmd`; a missing program becomes [`Error::MissingTool`] naming the
/// Debian `package` to install.
pub(crate) fn spawn(cmd: &mut Command, package: &str) -> Result<Child> {
    cmd.spawn().map_err(|e| spawn_error(cmd, package, e))
}

fn spawn_error(cmd: &Command, package: &str, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::MissingTool {
            tool: cmd.get_program().to_string_lossy().into_owned(),
            package: package.to_string(),
        }
    } else {
        Error::io(format!("starting `{}`", command_line(cmd)), e)
    }
}

/// Runs `cmd` to completion and returns its output; a non-zero exit is an
/// [`Error::Command`] carrying its stderr.
pub(crate) fn run(cmd: &mut Command, package: &str) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, package, e))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: command_line(cmd),
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ),
        });
    }
    Ok(output)
}

/// A child process that is killed (and reaped) when this is dropped, so no
/// test leaves QEMU, a server or a daemon running, even when it panics.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The exit status if the child has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Kills the child (if still running) and returns how it ended.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        // Killing an already-exited child fails harmlessly; wait reaps it.
        let _ = self.0.kill();
        self.wait()
    }

    /// Asks the child to stop (SIGTERM, as systemd and a VM's end do) and
    /// returns how it ended.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        // SAFETY: kill(2) of our own child, not reaped before this wait
        // (the pid cannot have been reused).
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        self.wait()
    }

    /// Waits for the child to end by itself.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        self.0.wait().ok()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct CaptureState {
    lines: Vec<String>,
    partial: Vec<u8>,
    eof: bool,
}

/// Where a wait on a [`Capture`] ended.
pub(crate) enum LineWait {
    /// A line containing the pattern, at this index.
    Found(usize, String),
    /// The stream ended first.
    Eof,
    /// The deadline passed first.
    TimedOut,
}

/// Output of a child, collected line by line on a background thread so tests
/// can wait for a line while the child keeps running.
#[derive(Clone)]
pub(crate) struct Capture {
    shared: Arc<(Mutex<CaptureState>, Condvar)>,
}

impl Capture {
    /// Starts reading `reader` until end of file. With `echo`, every line is
    /// also printed to stderr with that prefix (live debugging).
    pub(crate) fn start(mut reader: impl Read + Send + 'static, echo: Option<String>) -> Self {
        let capture = Capture {
            shared: Arc::new((Mutex::new(CaptureState::default()), Condvar::new())),
        };
        let shared = Arc::clone(&capture.shared);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let (lock, cond) = &*shared;
                let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
                if n == 0 {
                    if !st.partial.is_empty() {
                        let last = std::mem::take(&mut st.partial);
                        st.lines.push(line_text(&last));
                    }
                    st.eof = true;
                    cond.notify_all();
                    return;
                }
                st.partial.extend_from_slice(&buf[..n]);
                while let Some(pos) = st.partial.iter().position(|&b| b == b'\n') {
                    let rest = st.partial.split_off(pos + 1);
                    let line = line_text(&std::mem::replace(&mut st.partial, rest));
                    if let Some(prefix) = &echo {
                        eprintln!("{prefix}{line}");
                    }
                    st.lines.push(line);
                }
                cond.notify_all();
            }
        });
        capture
    }

    fn state(&self) -> MutexGuard<'_, CaptureState> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything captured so far, one line per line.
    pub(crate) fn text(&self) -> String {
        let st = self.state();
        let mut s = st.lines.join("\n");
        if !st.partial.is_empty() {
            s.push('\n');
            s.push_str(&line_text(&st.partial));
        }
        s
    }

    /// Complete lines captured so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// Waits until a line at index `from` or later contains `pattern`.
    pub(crate) fn wait_line(&self, pattern: &str, from: usize, deadline: Instant) -> LineWait {
        let (_, cond) = &*self.shared;
        let mut st = self.state();
        let mut next = from;
        loop {
            if let Some((i, line)) = st
                .lines
                .iter()
                .enumerate()
                .skip(next)
                .find(|(_, l)| l.contains(pattern))
            {
                return LineWait::Found(i, line.clone());
            }
            next = next.max(st.lines.len());
            if st.eof {
                return LineWait::Eof;
            }
            let now = Instant::now();
            if now >= deadline {
                return LineWait::TimedOut;
            }
            st = cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for end of file; false if the deadline passed first.
    pub(crate) fn wait_eof(&self, deadline: Instant) -> bool {
        let (_, cond) = &*self.shared;
        let mut st = self.state();
        while !st.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// One console line as text: lossy UTF-8, without the line end (serial
/// consoles send "\r\n").
fn line_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches(['\n', '\r'])
        .to_string()
}

/// How long a host-side server may take to start listening.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until something accepts TCP connections on `addr`, or the
/// child exits (then its stderr explains why), or [`STARTUP_TIMEOUT`] passes.
/// Returns `Ok(false)` if the child exited (its stderr says why; the caller
/// may retry on another port).
pub(crate) fn wait_tcp_ready(
    what: &str,
    addr: SocketAddr,
    child: &mut KillOnDrop,
    stderr: &Capture,
) -> Result<bool> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(true);
        }
        if child.try_wait().is_some() {
            return Ok(false);
        }
        if Instant::now() >= deadline {
            return Err(Error::Peer {
                what: what.to_string(),
                reason: format!(
                    "not listening after {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    stderr.text()
                ),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}
