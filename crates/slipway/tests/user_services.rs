//! The user-mode stack's services end to end. One real guest: it boots
//! from the network (QEMU's iPXE ROM gets DHCP from slipway and loads
//! kernel and initramfs over slipway's TFTP server), then fetches files
//! with busybox `tftp`, pings through host ping sockets and uses guest
//! forwards. slipway runs in a user and network namespace of its own
//! (`unshare -Urn`) where the test may allow ping sockets and give the
//! loopback an extra address; QEMU reaches it through a unix socket.
//! And, with no guest but host tools in a namespace whose tap device QEMU
//! joins to the stack: Samba's own client lists and reads the SMB share
//! from smbd, and busybox ping shows what happens where the host forbids
//! ping sockets.

mod common;

use std::path::Path;
use std::process::Command;

use common::{check, md5, run_guest, s, unix_stream_netdev, Slipway};
use slipway_testkit::Guest;

/// Commands run in slipway's namespace before it starts.
const NETNS_SETUP: &str = "set -e\n\
    ip link set lo up\n\
    # Ping sockets for the (only) group mapped in the namespace.\n\
    echo '0 0' > /proc/sys/net/ipv4/ping_group_range\n\
    # A destination that is not the host address, made by the test.\n\
    ip addr add 192.0.2.1/32 dev lo\n\
    ip addr add 2001:db8::1/128 dev lo\n\
    # Targets of the tcp: and unix: guest forwards.\n\
    ncat -lk 127.0.0.1 7001 --sh-exec 'read line; echo TCPOK' &\n\
    ncat -lkU \"$GUESTFWD_UNIX\" --sh-exec 'read line; echo UNIXOK' &\n\
    # Clients of the guest's web server through the host forward, from\n\
    # loopback and from 192.0.2.1, trying until the guest serves.\n\
    (for i in $(seq 600); do curl -sf -o \"$OUT_LO\" http://127.0.0.1:8080/cgi-bin/ip && break; sleep 0.5; done) &\n\
    (for i in $(seq 600); do curl -sf --interface 192.0.2.1 -o \"$OUT_EXT\" http://192.0.2.1:8080/cgi-bin/ip && break; sleep 0.5; done) &\n";

/// Network boot through slipway's DHCP and TFTP, then TFTP, ping and guest
/// forwards from the booted guest.
#[test]
fn network_boot_tftp_ping_and_guest_forwards() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let tftp = dir.path().join("tftp");
    std::fs::create_dir(&tftp).unwrap();
    // 3 MiB of varied bytes.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(tftp.join("big.bin"), &data).unwrap();
    std::fs::write(dir.path().join("secret"), "outside the root").unwrap();
    std::os::unix::fs::symlink("../secret", tftp.join("escape")).unwrap();
    let sock = dir.path().join("vm.sock");
    let unix_target = dir.path().join("fwd.sock");
    let (out_lo, out_ext) = (dir.path().join("lo.txt"), dir.path().join("ext.txt"));
    let setup = NETNS_SETUP
        .replace("$GUESTFWD_UNIX", &unix_target.display().to_string())
        .replace("$OUT_LO", &out_lo.display().to_string())
        .replace("$OUT_EXT", &out_ext.display().to_string());

    let mut slipway = Slipway::start_in_netns(
        &setup,
        &[
            s("--socket"),
            sock.display().to_string(),
            format!(
                "tftp={},bootfile={},tftp-server-name=boot.test,hostfwd=tcp::8080-:8080,\
                 guestfwd=tcp:10.0.2.100:7-cmd:head -n1 | tr a-z A-Z,\
                 guestfwd=:10.0.2.100:8-tcp:127.0.0.1:7001,\
                 guestfwd=tcp:10.0.2.101:9-unix:{}",
                tftp.display(),
                slipway_testkit::NETBOOT_FILE,
                unix_target.display(),
            ),
        ],
    );
    slipway.wait_for_path(&sock);
    let script = "dhcp eth0 || exit 1\n\
         tftp -g -r big.bin -l /tmp/a.bin 10.0.2.2 && result tftp_md5 \"$(md5sum /tmp/a.bin | cut -d' ' -f1)\"\n\
         rm -f /tmp/a.bin\n\
         tftp -b 1468 -g -r big.bin -l /tmp/b.bin 10.0.2.2 && result tftp_big_md5 \"$(md5sum /tmp/b.bin | cut -d' ' -f1)\"\n\
         rm -f /tmp/b.bin\n\
         tftp -g -r escape -l /tmp/e 10.0.2.2 2>/tmp/escape; result tftp_escape \"$(cat /tmp/e 2>/dev/null)$(grep -c -i -e access -e refused /tmp/escape)\"\n\
         tftp -g -r ../secret -l /tmp/s 10.0.2.2 2>/tmp/dotdot; result tftp_dotdot \"$(cat /tmp/s 2>/dev/null)$(grep -c -i -e access -e refused /tmp/dotdot)\"\n\
         cat /tmp/escape /tmp/dotdot\n\
         ping -c 2 -W 10 10.0.2.2 >/dev/null && result ping_host ok\n\
         ping -c 2 -W 10 192.0.2.1 >/dev/null && result ping_other ok\n\
         ping -c 1 -W 3 192.0.2.99 >/dev/null; result ping_nobody $?\n\
         i=0; while [ $i -lt 60 ]; do ip -6 addr show dev eth0 | grep 'inet6 fec0:' | grep -qv tentative && break; sleep 1; i=$((i+1)); done\n\
         ping6 -c 2 -W 10 fec0::2 >/dev/null && result ping6_host ok\n\
         ping6 -c 2 -W 10 2001:db8::1 >/dev/null && result ping6_other ok\n\
         # Sends a line and prints the answer; nc's input stays open (no\n\
         # half-close) until the target answers and closes.\n\
         fwd() {\n\
           rm -f /tmp/in; mkfifo /tmp/in\n\
           nc $1 $2 </tmp/in >/tmp/out & pid=$!\n\
           exec 3>/tmp/in; echo $3 >&3; wait $pid; exec 3>&-\n\
           cat /tmp/out\n\
         }\n\
         result gf_cmd \"$(fwd 10.0.2.100 7 hello)\"\n\
         result gf_tcp \"$(fwd 10.0.2.100 8 x)\"\n\
         result gf_unix \"$(fwd 10.0.2.101 9 x)\"\n\
         # A web server whose CGI records who connected.\n\
         mkdir -p /www/cgi-bin\n\
         echo '#!/bin/sh' > /www/cgi-bin/ip\n\
         # httpd listens on IPv6: REMOTE_ADDR is [::ffff:a.b.c.d].\n\
         echo 'a=${REMOTE_ADDR##*:}; a=${a%]}; echo $a >> /tmp/seen' >> /www/cgi-bin/ip\n\
         echo 'echo Content-Type: text/plain; echo; echo $a' >> /www/cgi-bin/ip\n\
         chmod +x /www/cgi-bin/ip\n\
         httpd -p 8080 -h /www\n\
         i=0; while [ \"$(cat /tmp/seen 2>/dev/null | wc -l)\" != 2 ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done\n\
         result sources \"$(echo $(sort /tmp/seen))\"\n";
    let out = run_guest(
        Guest::builder()
            .netdev(&unix_stream_netdev(&sock))
            .network_boot(&tftp)
            .timeout(std::time::Duration::from_secs(300))
            .script(script),
        &slipway,
    );
    check(&out, &slipway, "dhcp", "bound");
    check(&out, &slipway, "tftp_md5", &md5(&tftp.join("big.bin")));
    check(&out, &slipway, "tftp_big_md5", &md5(&tftp.join("big.bin")));
    check(&out, &slipway, "tftp_escape", "1");
    check(&out, &slipway, "tftp_dotdot", "1");
    // Echo to the host address and to another local address of the host
    // goes through real ping sockets; a silent address stays silent.
    check(&out, &slipway, "ping_host", "ok");
    check(&out, &slipway, "ping_other", "ok");
    check(&out, &slipway, "ping_nobody", "1");
    check(&out, &slipway, "ping6_host", "ok");
    check(&out, &slipway, "ping6_other", "ok");
    check(&out, &slipway, "gf_cmd", "HELLO");
    check(&out, &slipway, "gf_tcp", "TCPOK");
    check(&out, &slipway, "gf_unix", "UNIXOK");
    // Forwarded connections: from host loopback they come from the host
    // address, from elsewhere with their real source address.
    check(&out, &slipway, "sources", "10.0.2.2 192.0.2.1");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert_eq!(read(&out_lo).trim(), "10.0.2.2");
    assert_eq!(read(&out_ext).trim(), "192.0.2.1");
    let log = slipway.log();
    assert!(
        log.contains("ICMP echo flow through a ping socket") && log.contains("127.0.0.1"),
        "ping went through host ping sockets:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("through a ping socket") && l.contains("fec0::2")),
        "ping6 to the host address went through a host ping socket:\n{log}"
    );
    assert!(
        log.contains("TFTP read") && log.contains("vmlinuz"),
        "iPXE loaded the kernel over TFTP:\n{log}"
    );
    // All of it with the stack sandboxed: the forwards' commands and
    // copies run in the helper forked before.
    assert!(
        log.contains("sandbox applied") && !log.contains("sandbox off"),
        "the stack ran sandboxed:\n{log}"
    );
}

/// `smb=DIR`: smbclient on a tap device (QEMU's hub joins it to slipway's
/// socket, no guest) lists and reads the share at 10.0.2.4 through the
/// stack; smbd's private files are gone when slipway exits.
#[test]
fn smb_share_reaches_smbd_through_the_stack() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello.txt"), "shared through slipway\n").unwrap();
    let sock = dir.path().join("vm.sock");
    let got = dir.path().join("got.txt");
    let listing = dir.path().join("listing.txt");
    let mut slipway = Slipway::start(&[
        s("--socket"),
        sock.display().to_string(),
        format!("smb={}", share.display()),
    ]);
    slipway.wait_for_path(&sock);
    let status = tap_client(
        &sock,
        &format!(
            "# Until QEMU has joined the link.\n\
             for i in $(seq 150); do\n\
               smbclient //10.0.2.4/qemu -N -c 'ls; get hello.txt {got}' >{listing} 2>&1 && exit 0\n\
               sleep 0.2\n\
             done\n\
             exit 1\n",
            got = got.display(),
            listing = listing.display(),
        ),
    );
    let listed = std::fs::read_to_string(&listing).unwrap_or_default();
    assert!(
        status.success(),
        "smbclient failed: {listed}\n{}",
        slipway.log()
    );
    assert!(listed.contains("hello.txt"), "{listed}");
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        "shared through slipway\n"
    );
    // QEMU went away: slipway exits and removes smbd's private directory.
    let log = slipway.wait_exit_ok();
    assert!(
        log.contains("sandbox applied"),
        "the stack ran sandboxed (smbd started by its helper):\n{log}"
    );
    let plain = log
        .replace("\u{1b}[3m", "")
        .replace("\u{1b}[0m", "")
        .replace("\u{1b}[2m", "");
    let private = plain
        .split("private=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no private directory logged:\n{log}"));
    assert!(!Path::new(private).exists(), "{private} left behind\n{log}");
}

/// Runs `commands` (shell) in a new user and network namespace whose tap
/// device 10.0.2.15/24 QEMU joins to slipway's socket `sock` (a hub, no
/// guest): a client on the stack's link made of host tools.
fn tap_client(sock: &Path, commands: &str) -> std::process::ExitStatus {
    let script = format!(
        "set -e\n\
         ip link set lo up\n\
         ip tuntap add tap0 mode tap\n\
         ip link set tap0 up\n\
         ip addr add 10.0.2.15/24 dev tap0\n\
         ip route add default via 10.0.2.2\n\
         qemu-system-x86_64 -M none -nographic -nodefaults \\\n\
           -netdev tap,id=t,ifname=tap0,script=no,downscript=no \\\n\
           -netdev stream,id=s,server=off,addr.type=unix,addr.path={sock} \\\n\
           -netdev hubport,id=h0,hubid=0,netdev=t -netdev hubport,id=h1,hubid=0,netdev=s &\n\
         trap \"kill $!\" EXIT\n\
         {commands}",
        sock = sock.display(),
    );
    Command::new("unshare")
        .args(["-Urn", "sh", "-c", &script])
        .status()
        .expect("unshare runs")
}

/// Where the host forbids ping sockets (a new network namespace's default
/// `net.ipv4.ping_group_range` is "1 0"), slipway says so in one log line;
/// the host address still answers echo as the gateway, and other hosts get
/// no made-up replies.
#[test]
fn forbidden_ping_sockets_are_reported_and_nothing_is_faked() {
    let dir = slipway_testkit::temp_dir().unwrap();
    let sock = dir.path().join("vm.sock");
    let mut slipway = Slipway::start_in_netns(
        "ip link set lo up\nip addr add 192.0.2.1/32 dev lo\n",
        &[s("--socket"), sock.display().to_string()],
    );
    slipway.wait_for_path(&sock);
    let status = tap_client(
        &sock,
        "# Until QEMU has joined the link.\n\
         for i in $(seq 150); do busybox ping -c 1 -W 1 10.0.2.2 >/dev/null && break; sleep 0.2; done\n\
         busybox ping -c 1 -W 5 10.0.2.2 >/dev/null\n\
         # 192.0.2.1 would answer a real ping socket; with none it stays silent.\n\
         if busybox ping -c 2 -W 3 192.0.2.1 >/dev/null; then exit 1; fi\n",
    );
    let log = slipway.log();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(
        log.matches("forbids ICMP ping sockets").count(),
        1,
        "one clear line about ping_group_range:\n{log}"
    );
}
