//! `slipway-net-service` refuses to run when installed setuid, setgid or
//! with file capabilities (docs/bad-input.md): it is started by root, and a
//! privileged copy would parse whatever configuration its caller names.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const SERVICE: &str = env!("CARGO_BIN_EXE_slipway-net-service");

#[test]
fn a_privileged_copy_refuses_to_run() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test installs a setuid-root copy: run it as root (as CI does)");
    }
    let dir = slipway_testkit::setuid_temp_dir(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap();
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
