//! A container may not trace slipway nor take its descriptors.
//!
//! slipway serving a container holds host sockets, the container's tap and
//! its control socket: a process that could trace it (`PTRACE_SEIZE`),
//! read its memory (`/proc/PID/mem`, `process_vm_readv`) or copy its
//! descriptors (`pidfd_open` + `pidfd_getfd`) would reach the host's
//! network as the user. Each test starts slipway as an unprivileged user
//! (nobody) in the layout of a rootless container tool, then runs
//! `python3` as the container's root against every slipway process it
//! finds (slipway and its descendants) and prints, per process, what each
//! attempt gave: `ok`, `refused` (EPERM or EACCES) or another error. The
//! last does so with a guest forward, whose helper serves the stack's
//! connections, and checks the forward serves.

use std::path::Path;
use std::process::{Command, Stdio};

use slipway_testkit::temp_dir;

const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");

/// The attempts against one process (argv[1]): one line,
/// `getfd=… vm=… mem=… seize=…`. Tracing goes last (the tracer's exit
/// detaches).
const ATTACK: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
def verdict(ok, err):
    if ok:
        return "ok"
    return "refused" if err in (errno.EPERM, errno.EACCES) else errno.errorcode.get(err, str(err))
try:
    pidfd, err = os.pidfd_open(pid), 0
except OSError as e:
    pidfd, err = -1, e.errno
got = [libc.syscall(438, pidfd, fd, 0) for fd in range(3)] if pidfd >= 0 else [-1]
getfd = verdict(max(got) >= 0, ctypes.get_errno() or err)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.addressof(buf), 8), iovec(4096, 8)
n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
e = ctypes.get_errno()
vm = verdict(n >= 0 or e == errno.EFAULT, e)
try:
    with open(f"/proc/{pid}/mem", "rb"):
        mem = "ok"
except OSError as ex:
    mem = verdict(False, ex.errno)
seize = libc.ptrace(0x4206, pid, None, None)
print(f"getfd={getfd} vm={vm} mem={mem} seize={verdict(seize == 0, ctypes.get_errno())}")
"#;

/// Shell functions of every layout (in `$FUNCS`, for `eval`): `newns PID`
/// waits for PID's own network namespace, `up PID [NSENTER OPTIONS]` for
/// the tap in it, `attack_all ENTER...` attacks slipway ($sw) and each of
/// its slipway descendants from a process made by `ENTER... python3`.
const FUNCTIONS: &str = r#"
desc() { for c in $(cat /proc/$1/task/*/children 2>/dev/null); do echo $c; desc $c; done; }
attack_all() {
    for p in $sw $(desc $sw); do
        [ "$(cat /proc/$p/comm 2>/dev/null)" = slipway ] || continue
        echo "slipway $p: $("$@" python3 -c "$ATTACK" $p 2>&1)"
    done
}
newns() {
    i=0
    until [ "$(readlink /proc/$1/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do
        i=$((i+1)); [ $i -lt 500 ] || exit 9; sleep 0.02
    done
}
up() {
    i=0
    until nsenter -t $1 -n $2 ip -4 addr show tap0 2>/dev/null | grep -q 10.0.2.100/24; do
        i=$((i+1)); [ $i -lt 500 ] || { cat $DIR/log >&2; exit 10; }; sleep 0.02
    done
}
"#;

/// Runs `script` (which may `eval "$FUNCS"`) as nobody, with a `/dev/net/tun`
/// nobody may open bound over the machine's in a mount namespace of the
/// test's own; returns its output (stdout, then stderr).
fn as_nobody(dir: &Path, script: &str) -> String {
    let d = dir.display();
    std::fs::create_dir(dir.join("dev")).unwrap();
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let setup = format!(
        r#"set -e
mount --make-rprivate /
mount -t tmpfs -o size=64k tmpfs {d}/dev
mknod -m 666 {d}/dev/tun c 10 200
mount --bind {d}/dev/tun /dev/net/tun
exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "$1""#
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &setup, "sh"])
        .arg(script)
        .env("FUNCS", FUNCTIONS)
        .env("SLIPWAY", SLIPWAY)
        .env("ATTACK", ATTACK)
        .env("DIR", &run)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every line names a slipway process and says that each attempt on it
/// was refused; at least `least` processes were tried.
fn assert_all_refused(out: &str, least: usize) {
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("slipway ")).collect();
    assert!(lines.len() >= least, "{out}");
    for line in lines {
        assert!(
            line.ends_with(": getfd=refused vm=refused mem=refused seize=refused"),
            "{out}"
        );
    }
}

/// Podman's rootless layout: slipway (as slirp4netns, with its API
/// socket, so a cleaning parent runs too) is started in the user
/// namespace of the user's containers, whose root is the user outside;
/// the container's network namespace belongs to it, and the container's
/// root has podman's default capabilities (no CAP_SYS_PTRACE). It shares
/// slipway's uid and user namespace: only slipway not being dumpable
/// stops it.
#[test]
fn the_container_root_of_a_shared_user_namespace_cannot_trace_slipway() {
    let dir = temp_dir().unwrap();
    let out = as_nobody(
        dir.path(),
        r#"exec unshare -Ur sh -c '
eval "$FUNCS"
unshare -n sleep 120 &
ns=$!
newns $ns
"$SLIPWAY" attach --configure -a "$DIR/api.sock" $ns tap0 2>"$DIR/log" &
sw=$!
up $ns
attack_all nsenter -t $ns -n setpriv --bounding-set=-sys_ptrace
kill $ns
wait $sw
echo "attach=$?"
'"#,
    );
    assert!(out.contains("attach=0"), "{out}");
    assert_all_refused(&out, 2);
}

/// `slipway attach` started by the user outside, serving a namespace the
/// user made with `unshare -Urn` (rootlesskit's layout): the container's
/// root has every capability in its own user namespace and slipway's uid.
#[test]
fn the_root_of_a_container_user_namespace_cannot_trace_slipway() {
    let dir = temp_dir().unwrap();
    let out = as_nobody(
        dir.path(),
        r#"eval "$FUNCS"
unshare -Urn sleep 120 &
ns=$!
newns $ns
"$SLIPWAY" attach --configure -a "$DIR/api.sock" $ns tap0 2>"$DIR/log" &
sw=$!
up $ns "-U --preserve-credentials"
attack_all nsenter -t $ns -U -n --preserve-credentials
kill $ns
wait $sw
echo "attach=$?"
"#,
    );
    assert!(out.contains("attach=0"), "{out}");
    assert_all_refused(&out, 2);
}

/// `slipway run` (pasta's `-- CMD`): the command, root of the user
/// namespace slipway made for it, with every capability there and
/// slipway's uid, attacks slipway (its parent) and the stack.
#[test]
fn the_command_of_slipway_run_cannot_trace_slipway() {
    let dir = temp_dir().unwrap();
    let out = as_nobody(
        dir.path(),
        r#"exec "$SLIPWAY" run -- sh -c '
eval "$FUNCS"
sw=$PPID
attack_all
echo "uid_map: $(cat /proc/self/uid_map)"
'"#,
    );
    assert!(out.contains("uid_map: "), "{out}");
    assert_all_refused(&out, 2);
}

/// An ordinary user's stack with `guestfwd=`: its helper (a process of
/// that user) serves only the connections the stack names on a pipe, so
/// the stack is not dumpable like every other: the command, root of the
/// user namespace slipway made, can trace neither slipway nor its stack,
/// and the forward serves, sandboxed or not. (Before, the helper listed
/// `/proc/STACK/fd` and the stack had to stay dumpable.)
#[test]
fn an_ordinary_users_guest_forward_serves_and_cannot_be_traced() {
    for flag in ["", "--no-sandbox"] {
        let dir = temp_dir().unwrap();
        let out = as_nobody(
            dir.path(),
            &format!(
                r#"exec "$SLIPWAY" run {flag} 'guestfwd=tcp:10.0.2.5:7-cmd:echo hello-from-guestfwd' -- sh -c '
busybox nc 10.0.2.5 7 </dev/null
eval "$FUNCS"
sw=$PPID
attack_all
'"#
            ),
        );
        assert!(out.contains("hello-from-guestfwd\n"), "{flag}: {out}");
        assert!(!out.contains("dumpable"), "{flag}: {out}");
        assert_all_refused(&out, 2);
    }
}
