//! `slipway launch`: plan under the state lock, realize, run QEMU with the
//! networking arguments and the tap descriptors, and undo everything when
//! QEMU ends.
//!
//! QEMU is a child of the launcher. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent
//! to the launcher are passed on to QEMU (the launcher itself keeps going,
//! so it can clean up after QEMU exits); if the launcher is killed outright,
//! QEMU and the stacks get SIGTERM from the kernel (parent-death signal) and
//! the taps, held only by them, disappear with them. Interfaces with
//! `<link state='down'>` are set down over QMP before the guest runs: QEMU
//! starts paused, the links are set, then it continues, as libvirt does.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slipway_netxml::parse_interfaces;

use crate::error::{Error, Result};
use crate::host::{realize, Context, HeldTap};
use crate::plan::Plan;
pub use crate::signals::SignalForwarder;

/// Runs `qemu` (program and arguments) with the networking of the interfaces
/// in `xml` added, and returns its exit code (128 + signal when killed).
pub fn launch(xml: &str, qemu: &[OsString], ctx: &Context<'_>) -> Result<i32> {
    if ctx.signals.pending.load(Ordering::SeqCst) != 0 {
        return Err(Error::Process("interrupted".into()));
    }
    let interfaces = parse_interfaces(xml)?;
    for i in &interfaces {
        for u in &i.unknown {
            tracing::warn!("interface {}: ignoring {u}", i.index);
        }
    }
    let socket_dir = ctx.state.socket_dir();
    let (plan, realized) = {
        let lock = ctx.state.lock()?;
        let in_use = ctx.state.macs_in_use(&lock)?;
        let mut plan = Plan::new(&interfaces, &in_use, &socket_dir)?;
        plan.vm_id = slipway_netxml::domain_uuid(xml);
        let realized = realize(&plan, ctx, &lock)?;
        (plan, realized)
    };
    let result = run_qemu(&plan, qemu, &realized.taps, ctx);
    realized.teardown();
    result
}

fn run_qemu(plan: &Plan, qemu: &[OsString], taps: &[HeldTap], ctx: &Context<'_>) -> Result<i32> {
    let (program, args) = qemu
        .split_first()
        .ok_or_else(|| Error::Process("no QEMU command given after --".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(args).args(plan.args());
    let down: Vec<String> = plan
        .nics
        .iter()
        .filter(|n| !n.link_up)
        .map(|n| n.device_id())
        .collect();
    let qmp_path = ctx
        .state
        .socket_dir()
        .join(format!("qmp-{}.sock", std::process::id()));
    if !down.is_empty() {
        ctx.state.ensure_socket_dir()?;
        slipway_host::atomic::remove(&qmp_path)?;
        cmd.arg("-S").arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            crate::plan::qemu_escape(&qmp_path.to_string_lossy())
        ));
    }
    // (our descriptor, QEMU's number), moved into place in the child.
    let moves: Vec<(i32, i32)> = taps.iter().map(|t| (t.fd.as_raw_fd(), t.qemu_fd)).collect();
    // SAFETY: only async-signal-safe calls (fcntl, dup2) in the child.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way of every target number, then into place.
            let mut tmp = [0i32; 64];
            if moves.len() > tmp.len() {
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            for (k, (src, _)) in moves.iter().enumerate() {
                let fd = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 1024);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp[k] = fd;
            }
            for (k, (_, dst)) in moves.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(tmp[k], *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // Runs after the closure above (pre_exec closures run in order).
    crate::host::launcher_child(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Process(format!("cannot run {}: {e}", program.to_string_lossy())))?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    ctx.signals.target.store(pid, Ordering::SeqCst);
    let pending = ctx.signals.pending.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // A signal came while the host side was being set up.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, pending) };
    }
    if !down.is_empty() {
        if let Err(e) = set_links_down(&qmp_path, &down, &mut child) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&qmp_path);
            return Err(e);
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Process(format!("waiting for QEMU: {e}")))?;
    ctx.signals.target.store(0, Ordering::SeqCst);
    if !down.is_empty() {
        let _ = std::fs::remove_file(&qmp_path);
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Connects to QEMU's QMP socket, sets `devices` down, and lets the paused
/// guest run.
fn set_links_down(
    path: &PathBuf,
    devices: &[String],
    child: &mut std::process::Child,
) -> Result<()> {
    let err = |m: String| Error::Process(format!("QMP {}: {m}", path.display()));
    let end = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) => {
                if let Ok(Some(st)) = child.try_wait() {
                    return Err(Error::Process(format!("QEMU exited at start: {st}")));
                }
                if Instant::now() > end {
                    return Err(err(e.to_string()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| err(e.to_string()))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| err(e.to_string()))?);
    let mut writer = stream;
    let mut line = String::new();
    // The greeting.
    reader
        .read_line(&mut line)
        .map_err(|e| err(e.to_string()))?;
    let mut call = |cmd: String| -> Result<()> {
        writer
            .write_all(cmd.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        loop {
            line.clear();
            if reader
                .read_line(&mut line)
                .map_err(|e| err(e.to_string()))?
                == 0
            {
                return Err(err("QEMU closed the connection".into()));
            }
            if line.contains("\"return\"") {
                return Ok(());
            }
            if line.contains("\"error\"") {
                return Err(err(line.trim().to_string()));
            }
            // Events: keep reading.
        }
    };
    call("{\"execute\":\"qmp_capabilities\"}\n".into())?;
    for d in devices {
        call(format!(
            "{{\"execute\":\"set_link\",\"arguments\":{{\"name\":\"{d}\",\"up\":false}}}}\n"
        ))?;
    }
    call("{\"execute\":\"cont\"}\n".into())
}
