//! `slipway user` refuses bad command lines with a message naming the
//! option and the value, and exits non-zero without touching anything.

use std::process::Command;

fn slipway_user(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("user")
        .args(args)
        .output()
        .expect("slipway runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sock() -> String {
    std::env::temp_dir()
        .join(format!("slipway-cli-{}.sock", std::process::id()))
        .display()
        .to_string()
}

#[test]
fn bad_options_name_the_option_and_value() {
    let path = sock();
    for (opts, needles) in [
        ("bogus=1", vec!["unknown option 'bogus'"]),
        ("tftp=", vec!["'tftp'", "empty"]),
        ("smbserver=10.0.2.4", vec!["'smbserver'", "needs smb=DIR"]),
        (
            "ipv6-prefix=fd00::x",
            vec!["'ipv6-prefix'", "fd00::x", "not an IPv6 address"],
        ),
        (
            "guestfwd=tcp:10.0.2.100:1234-file:/x",
            vec!["'guestfwd'", "tcp:10.0.2.100:1234-file:/x"],
        ),
        ("net=10.0.2.0/40", vec!["'net'", "10.0.2.0/40"]),
        ("dns=10.0.2.2", vec!["'dns'", "10.0.2.2"]),
        (
            "hostfwd=tcp::99999-:22",
            vec!["'hostfwd'", "tcp::99999-:22"],
        ),
        ("restrict=perhaps", vec!["'restrict'", "perhaps"]),
    ] {
        let (code, err) = slipway_user(&["--socket", &path, opts]);
        assert_ne!(code, 0, "{opts} accepted");
        for n in needles {
            assert!(err.contains(n), "{opts}: {err:?} lacks {n:?}");
        }
        assert!(
            !std::path::Path::new(&path).exists(),
            "{opts}: socket created"
        );
    }
}

#[test]
fn bad_flags_are_refused() {
    let path = sock();
    let (code, err) = slipway_user(&["--socket", &path, "--mtu", "67"]);
    assert_ne!(code, 0);
    assert!(err.contains("--mtu") && err.contains("67"), "{err}");
    let (code, err) = slipway_user(&["--socket", &path, "--mtu", "65521"]);
    assert_ne!(code, 0);
    assert!(err.contains("65521"), "{err}");
    let (code, err) = slipway_user(&["--socket", &path, "--redir", "tcp:5022-:22"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("'redir'") && err.contains("tcp:5022-:22"),
        "{err}"
    );
    let (code, err) = slipway_user(&["--socket", &path, "--dns-upstream", "nowhere"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--dns-upstream") && err.contains("nowhere"),
        "{err}"
    );
    // Exactly one attachment.
    let (code, _) = slipway_user(&[]);
    assert_ne!(code, 0);
    let (code, err) = slipway_user(&["--socket", &path, "--dgram", &path]);
    assert_ne!(code, 0);
    assert!(err.contains("--dgram") || err.contains("--socket"), "{err}");
}

#[test]
fn a_forward_that_cannot_be_bound_is_fatal_and_named() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = sock() + "-fwd";
    let (code, err) = slipway_user(&[
        "--socket",
        &path,
        &format!("hostfwd=udp:127.0.0.1:{port}-:53"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn a_tcp_forward_that_cannot_be_bound_is_fatal_and_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = sock() + "-tcpfwd";
    let (code, err) = slipway_user(&[
        "--socket",
        &path,
        "--redir",
        &format!("tcp:{port}::22"),
        "restrict=on",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!(":{port}")), "{err}");
    assert!(!std::path::Path::new(&path).exists());
}
