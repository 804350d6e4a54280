//! `slipway-net-service` refuses to run when installed setuid, setgid or
//! with file capabilities (docs/bad-input.md): it is started by root, and a
//! privileged copy would parse whatever configuration its caller names.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SERVICE: &str = env!("CARGO_BIN_EXE_slipway-net-service");

/// A directory on a filesystem that honours setuid bits.
fn install_dir() -> tempfile::TempDir {
    let nosuid = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: an all-zero statvfs is valid; statvfs fills it in.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a live statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_flag & libc::ST_NOSUID != 0
    };
    let mut base = std::env::temp_dir();
    if nosuid(&base) {
        base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    }
    let dir = tempfile::tempdir_in(base).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn a_privileged_copy_refuses_to_run() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test installs a setuid-root copy: run it as root (as CI does)");
    }
    let dir = install_dir();
    // A configuration nobody could otherwise have root read: the refusal
    // comes before the file is opened, so its name is never printed.
    let config = dir.path().join("secret.json");
    std::fs::write(&config, "not json").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (name, mode) in [("setuid", 0o4755), ("setgid", 0o2755)] {
        let bin = dir.path().join(name);
        std::fs::copy(SERVICE, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux)");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(126), "{name}: {err}");
        assert!(err.contains("refusing to run setuid"), "{name}: {err}");
        assert!(!err.contains("secret.json"), "{name}: {err}");
    }
    // Run by root as itself, it gets as far as reading the file.
    let o = Command::new(SERVICE).arg(&config).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("secret.json"),
        "{o:?}"
    );
}
