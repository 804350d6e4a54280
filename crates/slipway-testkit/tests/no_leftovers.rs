//! `no-leftovers` (the wrapper `scripts/test.sh` runs the test steps in)
//! passes a clean command's status on, and fails a command that leaves a
//! process running, naming it and killing it.

use std::process::Command;

const NO_LEFTOVERS: &str = env!("CARGO_BIN_EXE_no-leftovers");

#[test]
fn a_clean_command_keeps_its_status() {
    let out = Command::new(NO_LEFTOVERS)
        .args(["sh", "-c", "sleep 0.1 & wait; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn a_process_left_running_fails_the_run_and_is_killed() {
    // Orphaned twice over (setsid, then its shell exits): it still comes
    // back to the subreaper.
    let out = Command::new(NO_LEFTOVERS)
        .args(["sh", "-c", "setsid sleep 1001 & echo $!"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sleep 1001"), "{stderr}");
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let alive =
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("1001"));
    assert!(!alive, "the leftover {pid} was killed");
}
