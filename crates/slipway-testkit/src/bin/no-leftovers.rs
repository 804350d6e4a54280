//! `no-leftovers COMMAND [ARGS...]`: runs COMMAND (a test step of
//! `scripts/test.sh`) as a child subreaper, so that every process it starts
//! and leaves behind is re-parented here rather than to init. When COMMAND
//! has ended, any such process is a test that did not end what it started:
//! each is named (pid and command line), killed with its descendants, and
//! the exit status is 1 even when COMMAND succeeded. Otherwise the exit
//! status is COMMAND's.

use std::process::{Command, ExitCode};

/// Rounds of killing: a killed process's own children come to us next.
const KILL_ROUNDS: usize = 50;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: no-leftovers COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    // SAFETY: prctl with integer arguments on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "no-leftovers: PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(2);
    }
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("no-leftovers: starting {}: {e}", program.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    let main_pid = child.id() as libc::pid_t;
    // Reap everything (orphans that ended come here too) until COMMAND ends.
    let code = loop {
        let mut status = 0;
        // SAFETY: waitpid on any child of this process, with a local status.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            eprintln!("no-leftovers: waitpid: {}", std::io::Error::last_os_error());
            return ExitCode::from(2);
        }
        if pid == main_pid {
            break if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
    };
    let mut leftovers = Vec::new();
    for _ in 0..KILL_ROUNDS {
        let children = children_of(std::process::id());
        if children.is_empty() {
            break;
        }
        for (pid, cmdline) in children {
            if !leftovers.iter().any(|(p, _)| *p == pid) {
                eprintln!("no-leftovers: left running by the tests: {pid} {cmdline}");
                leftovers.push((pid, cmdline));
            }
            // SAFETY: kill and waitpid on a child of this process.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
            }
        }
    }
    if leftovers.is_empty() {
        ExitCode::from(code as u8)
    } else {
        eprintln!(
            "no-leftovers: {} process(es) outlived the command (killed now)",
            leftovers.len()
        );
        ExitCode::from(1)
    }
}

/// The processes whose parent is `parent`, with their command lines.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace())
            .into_iter()
            .flatten();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        if state == Some("Z") {
            // Ended just now: reaped, not left running.
            // SAFETY: waitpid on a child of this process.
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
            continue;
        }
        let comm = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("", |(comm, _)| comm);
        found.push((pid, command_line(pid, comm)));
    }
    found
}

/// How long to wait for a process caught in the middle of an `execve` (whose
/// command line reads empty until the new image has set it up) before naming
/// it by its `comm` instead.
const EXEC_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// `pid`'s command line, words joined by spaces; `[comm]` if it stays empty
/// (a process mid-`execve` for longer than [`EXEC_SETTLE`], or a zombie).
fn command_line(pid: u32, comm: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let words = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        if !words.is_empty() {
            return words;
        }
        if started.elapsed() >= EXEC_SETTLE {
            return format!("[{comm}]");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
