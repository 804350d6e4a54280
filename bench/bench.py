#!/usr/bin/env python3
"""Container networking benchmark: slipway against slirp4netns and pasta.

Each stack serves a network namespace; iperf3, sockperf and a small
connection-rate client run inside it against servers on loopback,
reached through the stack's host-loopback mapping. Figures: TCP
throughput namespace->host and host->namespace (at MTU 1500 and 65520),
UDP throughput namespace->host at unlimited rate, UDP goodput and packets
per second at the highest offered rate that loses under 1 % (both ways),
request/response latency (TCP and UDP ping-pong, p50 and p99),
connections per second with and without data, CPU seconds of the stack
process per GiB moved over TCP, and its peak resident memory. Latency and
connection rate are also measured with no stack at all ("loopback (no
stack)": the same clients straight to the servers over loopback), the
bound each stack is compared with. One table (absolute figures and
slipway's ratio to each peer), a JSON file and SVG charts.

Nothing can leave the machine: the script re-executes itself in new
network, PID and mount namespaces (`unshare`). The private network
namespace has loopback (where every server listens) and one veth whose
other end is in a second namespace the script creates, with no way on:
the default routes point there. The stacks copy or use that namespace's
addresses and routes (pasta maps that gateway to the private loopback).
When the script ends, its PID namespace ends, and every process it
started with it (the kernel kills them). /dev/net/tun is opened by pasta
as `nobody`: a node readable by it is bind-mounted over it in the private
mount namespace; the host's device is left as it is.

Run as root. Not part of the test suite: figures vary with the machine's
load, nothing is asserted.

Each figure is the median over --rounds rounds; within a round every
stack and MTU runs once, so a load change on the machine hits all alike.

Usage: bench/run.sh [--seconds N] [--rounds N] [--out DIR]
                    [--stacks slipway,slirp4netns,pasta] [--baseline BINARY]
                    [--metrics tcp,udp,udp_search,rr,conn,udp_gso,udp_where,udp_cpu]
                    [--perf DIR] [--syscalls DIR]
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# "baseline" is a second slipway binary (--baseline), for before/after
# figures in the same run. "loopback" is no stack at all: the same clients
# on the private namespace's loopback, straight to the servers (the bound
# every stack's latency and connection rate is measured against).
STACKS = ["slipway", "baseline", "slirp4netns", "pasta", "loopback"]
# The metrics measured without a stack (the others need one: CPU and
# memory of its process, MTUs). The UDP search runs at both "MTUs" (the
# datagram sizes of each; loopback's own MTU is 65536).
LOOPBACK_METRICS = ["udp_search", "rr", "conn"]
MTUS = [1500, 65520]
METRICS = ["tcp", "udp", "udp_search", "rr", "conn", "udp_gso", "udp_where", "udp_cpu"]
# The MTUs a metric is measured at (the others: both).
METRIC_MTUS = {"rr": [65520], "conn": [65520], "udp_gso": [1500], "udp_where": [1500],
               "udp_cpu": [1500]}
# udp_cpu: (datagram bytes, offered rate in bit/s), each well under the
# rate where any stack here starts to lose datagrams (the <1 % search).
UDP_CPU_RATES = [(1472, 0.2e9), (64, 10e3 * 64 * 8)]
IPERF_PORT = 15201
CONN_PORT = 15202
SOCKPERF_TCP_PORT = 15203
SOCKPERF_UDP_PORT = 15204
GSO_PORT = 15205
NOBODY = 65534
# The private namespace's way "out" (documentation prefixes, RFC 5737 and
# RFC 3849): a veth into the outside namespace, which routes nowhere.
PRIVATE_V4, OUTSIDE_V4 = "192.0.2.2/24", "192.0.2.1"
PRIVATE_V6, OUTSIDE_V6 = "2001:db8:17::2/64", "2001:db8:17::1"
# Loss under which a UDP rate counts as carried.
MAX_LOSS_PERCENT = 1.0
# UDP datagram sizes: filling MTU 1500, a large one at MTU 65520 (as the
# unlimited-rate figure), and a small one for packets per second.
DGRAM_1500, DGRAM_LARGE, DGRAM_SMALL = 1472, 8192, 64


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_for(what, cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def net_ns_inode(pid):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def descendants(pid):
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Session:
    """A namespace served by one stack at one MTU."""

    def __init__(self, stack, mtu, binaries, pin=None, extra=()):
        self.stack = stack
        self.extra = list(extra)
        self.mtu = mtu
        # With --pin, the stack process (and its threads and children) on
        # its own CPUs; everything else inherits the script's.
        self.prefix = ["taskset", "-c", pin] if pin else []
        self.procs = []
        self.ns_pid = None
        self.stack_pid = None
        if stack == "loopback":
            self.target = "127.0.0.1"
        elif stack == "pasta":
            self._start_pasta()
        else:
            self._start_attached(binaries.get(stack))

    def _start_attached(self, slipway):
        ns = subprocess.Popen(["unshare", "-Urn", "sleep", "600"])
        self.procs.append(ns)
        me = net_ns_inode(os.getpid())
        wait_for("the namespace", lambda: net_ns_inode(ns.pid) != me)
        self.ns_pid = ns.pid
        self.target = "10.0.2.2"
        r, w = os.pipe()
        if slipway:
            cmd = [slipway, "attach", "--configure", "--mtu", str(self.mtu),
                   "--ready-fd", str(w)] + self.extra + [str(ns.pid)]
        else:
            cmd = ["slirp4netns", "--configure", f"--mtu={self.mtu}",
                   f"--ready-fd={w}", str(ns.pid), "tap0"]
        stack = subprocess.Popen(self.prefix + cmd, pass_fds=(w,), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self.procs.insert(0, stack)
        os.close(w)
        with os.fdopen(r) as ready:
            if ready.read(1) != "1":
                raise RuntimeError(f"{self.stack} did not get ready")
        self.stack_pid = stack.pid

    def _start_pasta(self):
        # pasta will not run as root; as nobody it makes its own user
        # namespace. The namespace's default gateway reaches host loopback.
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
               "pasta", "--config-net", "-f", "-q", "--mtu", str(self.mtu),
               "-t", "none", "-u", "none", "-T", "none", "-U", "none",
               "--", "sleep", "600"]
        stack = subprocess.Popen(self.prefix + cmd, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self.procs.append(stack)
        self.stack_pid = stack.pid
        me = net_ns_inode(os.getpid())

        def sleeper():
            for p in descendants(stack.pid):
                try:
                    with open(f"/proc/{p}/comm") as f:
                        if f.read().strip() == "sleep" and net_ns_inode(p) != me:
                            return p
                except OSError:
                    pass
            return None

        wait_for("pasta's namespace", lambda: sleeper() is not None)
        self.ns_pid = sleeper()
        wait_for("pasta's default route", lambda: "via" in self.run(
            ["ip", "-4", "route", "show", "default"]).stdout)
        route = self.run(["ip", "-4", "route", "show", "default"]).stdout.split()
        self.target = route[route.index("via") + 1]

    def cpu(self):
        """CPU seconds of the stack process so far (0 without a stack)."""
        return cpu_seconds(self.stack_pid) if self.stack_pid is not None else 0.0

    def run(self, args, timeout=60):
        if self.ns_pid is not None:
            args = ["nsenter", "-t", str(self.ns_pid), "-U", "-n", "--preserve-credentials"] + args
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def iperf(session, seconds, reverse=False, udp=False):
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(IPERF_PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("iperf3 server", lambda: listening(IPERF_PORT))
        args = ["iperf3", "-c", session.target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                "--connect-timeout", "5000"]
        if reverse:
            args.append("-R")
        if udp:
            # Unlimited rate; datagrams that fit the link without fragments.
            args += ["-u", "-b", "0", "-l", str(min(session.mtu - 28, DGRAM_LARGE))]
        try:
            out = session.run(args, timeout=seconds + 20)
        except subprocess.TimeoutExpired:
            log("  iperf3 did not finish (the stack stalled)")
            return None
        data = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
        if "error" in data or "end" not in data:
            log(f"  iperf3 failed: {data.get('error', out.stderr.strip()[:200])}")
            return None
        end = data["end"]
        if udp:
            s = end["sum"]
            received = s["bytes"] * (1 - s.get("lost_percent", 0) / 100.0)
            return {"bps": received * 8 / s["seconds"], "bytes": received,
                    "lost_percent": s.get("lost_percent", 0)}
        s = end["sum_received"]
        return {"bps": s["bits_per_second"], "bytes": s["bytes"]}
    finally:
        server.kill()
        server.wait()


def listening(port, udp=False):
    """Whether something listens on `port` (without connecting: a probe
    connection would use up a one-off iperf3 server)."""
    with open("/proc/net/udp" if udp else "/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            state_ok = udp or fields[3] == "0A"
            if state_ok and int(fields[1].split(":")[1], 16) == port:
                return True
    return False


def udp_at(session, rate_bps, length, reverse, seconds):
    """One iperf3 UDP run at offered `rate_bps` (0: unlimited) with
    `length`-byte datagrams: goodput (bit/s) and loss (%), or None."""
    args = ["iperf3", "-c", session.target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
            "--connect-timeout", "5000", "-u", "-b", str(int(rate_bps)), "-l", str(length)]
    if reverse:
        args.append("-R")
    # A server per run: one whose last test went wrong stays busy.
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(IPERF_PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("iperf3 server", lambda: listening(IPERF_PORT))
        out = session.run(args, timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        log("  iperf3 did not finish (the stack stalled)")
        return None
    finally:
        server.kill()
        server.wait()
    data = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
    if "error" in data or "end" not in data:
        log(f"  iperf3 failed: {data.get('error', out.stderr.strip()[:200])}")
        return None
    s = data["end"]["sum"]
    lost = s.get("lost_percent", 0)
    if not s.get("seconds"):
        return None
    return {"goodput_bps": s["bytes"] * (1 - lost / 100.0) * 8 / s["seconds"],
            "lost_percent": lost}


def udp_trials(session, rate_bps, length, reverse, seconds, trials):
    """`trials` iperf3 runs at one offered rate: the median loss (a run
    that failed counts as all lost) and the median goodput of the runs
    that finished. One burst of loss (a process descheduled for a
    millisecond) moves one trial, not the median."""
    got = [udp_at(session, rate_bps, length, reverse, seconds) for _ in range(trials)]
    done = [g for g in got if g is not None]
    if not done:
        return None
    return {"goodput_bps": median([g["goodput_bps"] for g in done]),
            "lost_percent": median([g["lost_percent"] if g else 100.0 for g in got])}


def udp_search(session, length, reverse, args):
    """The highest offered UDP rate that loses under MAX_LOSS_PERCENT.
    One unlimited run gives the ceiling (what got through); then a
    geometric bisection between the best rate that passed and the lowest
    that failed, where a rate passes when the median of
    `--search-trials` runs of `--search-seconds` loses under 1 %; then
    `--confirm-trials` runs of `--confirm-seconds` at the rate found
    must pass too (else the rate is lowered by a quarter and confirmed
    again, at most three times). Returns the confirmed goodput (bit/s),
    packets/s, the offered rate, and the loss of the confirming runs."""
    first = udp_at(session, 0, length, reverse, args.search_seconds)
    if first is None:
        return None
    lo, hi = 0.0, first["goodput_bps"] * 1.1
    rate = first["goodput_bps"]
    for _ in range(args.search_steps):
        if rate < 1e5:
            break
        got = udp_trials(session, rate, length, reverse, args.search_seconds, args.search_trials)
        if got is not None and got["lost_percent"] < MAX_LOSS_PERCENT:
            lo = rate
        else:
            hi = rate
        rate = math.sqrt(lo * hi) if lo else rate / 2
    rate = lo
    for _ in range(3):
        if rate < 1e5:
            break
        got = udp_trials(session, rate, length, reverse, args.confirm_seconds,
                         args.confirm_trials)
        if got is not None and got["lost_percent"] < MAX_LOSS_PERCENT:
            return {"bps": got["goodput_bps"], "pps": got["goodput_bps"] / 8 / length,
                    "lost_percent": got["lost_percent"], "rate_bps": rate}
        log(f"  {rate / 1e6:.0f} Mbit/s of {length}-byte datagrams did not hold "
            f"({got['lost_percent'] if got else 100:.1f} % lost over longer runs): lowering it")
        rate *= 0.75
    return None


SOCKPERF_PERCENTILE = re.compile(r"percentile (\d+\.\d+) =\s+([\d.]+)")
# sockperf's count of the answers it got (transactions completed).
SOCKPERF_RECEIVED = re.compile(r"ReceivedMessages=(\d+)")


def udp_counters(session=None):
    """The kernel's UDP counters (/proc/net/snmp) of the private namespace,
    or of `session`'s namespace."""
    text = session.run(["cat", "/proc/net/snmp"]).stdout if session else \
        open("/proc/net/snmp").read()
    head, values = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    return dict(zip(head, map(int, values)))


def tap_drops(session):
    """Frames the namespace's end of the link dropped on transmit (the
    stack did not read them in time): the one interface besides lo."""
    links = json.loads(session.run(["ip", "-s", "-j", "link", "show"]).stdout or "[]")
    return sum(link["stats64"]["tx"]["dropped"] for link in links if link["ifname"] != "lo")


def udp_where(session, rate_bps, reverse, seconds):
    """Where the datagrams of one 1472-byte iperf3 run at `rate_bps` were
    lost: the sender's socket (`SndbufErrors` where it sends), the link
    into the stack (the namespace's transmit drops), a receive buffer
    (`RcvbufErrors`: namespace->host the host receiver's; host->namespace
    the stack's own sockets on the host side, then the namespace
    receiver's), and what is left: inside the stack. Datagrams."""
    host0, ns0, tap0 = udp_counters(), udp_counters(session), tap_drops(session)
    got = udp_at(session, rate_bps, DGRAM_1500, reverse, seconds)
    host1, ns1, tap1 = udp_counters(), udp_counters(session), tap_drops(session)
    if got is None:
        return None
    host = {k: host1[k] - host0[k] for k in host0}
    ns = {k: ns1[k] - ns0[k] for k in ns0}
    sender, receiver = (host, ns) if reverse else (ns, host)
    sent = sender["OutDatagrams"]
    lost = round(sent * got["lost_percent"] / 100.0)
    out = {"sent": sent, "lost_percent": got["lost_percent"],
           "sender_sndbuf": sender["SndbufErrors"], "tap_tx_drops": tap1 - tap0}
    if reverse:
        out["stack_socket_rcvbuf"] = host["RcvbufErrors"]
        out["receiver_rcvbuf"] = ns["RcvbufErrors"]
    else:
        out["stack_socket_rcvbuf"] = 0
        out["receiver_rcvbuf"] = host["RcvbufErrors"]
    out["in_stack"] = max(0, lost - out["tap_tx_drops"] - out["stack_socket_rcvbuf"]
                          - out["receiver_rcvbuf"])
    log(f"    {'host->ns' if reverse else 'ns->host'} at {rate_bps / 1e9:.2f} Gbit/s: "
        + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in out.items()))
    return out


def udp_cpu(session, length, rate_bps, reverse, seconds):
    """The stack's CPU time per datagram delivered (microseconds) during
    one iperf3 UDP run at a fixed offered rate every stack carries: what
    a datagram costs the stack, which bounds its rate where it has a CPU
    of its own, and depends far less than a loss threshold on whether
    the client, the server and the stack wait for one another's CPU."""
    if session.stack_pid is None:
        return None
    cpu0 = cpu_seconds(session.stack_pid)
    got = udp_at(session, rate_bps, length, reverse, seconds)
    cpu = cpu_seconds(session.stack_pid) - cpu0
    if got is None or not got["goodput_bps"]:
        return None
    delivered = got["goodput_bps"] * seconds / 8 / length
    return {"us_per_dgram": cpu / delivered * 1e6, "lost_percent": got["lost_percent"],
            "kpps": delivered / seconds / 1e3, "datagrams": delivered}


def rr_latency(session, seconds, udp):
    """sockperf ping-pong (its smallest message, 14 bytes, each way, the
    next as soon as the answer is in): p50 and p99 of half the round
    trip, in microseconds."""
    port = SOCKPERF_UDP_PORT if udp else SOCKPERF_TCP_PORT
    args = ["sockperf", "ping-pong", "-i", session.target, "-p", str(port), "-m", "14",
            "-t", str(seconds)]
    if not udp:
        args.append("--tcp")
    cpu0, t0 = session.cpu(), time.monotonic()
    try:
        out = session.run(args, timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        log("  sockperf did not finish (the stack stalled)")
        return None
    cpu = session.cpu() - cpu0
    got = {float(p): float(v) for p, v in SOCKPERF_PERCENTILE.findall(out.stdout + out.stderr)}
    if 50.0 not in got or 99.0 not in got:
        log(f"  sockperf failed: {(out.stdout + out.stderr).strip()[-200:]}")
        return None
    r = {"p50_us": got[50.0], "p99_us": got[99.0]}
    received = SOCKPERF_RECEIVED.search(out.stdout + out.stderr)
    if received:
        r["transactions"] = int(received.group(1))
    if session.stack_pid is not None:
        r["stack_cpu_percent"] = 100.0 * cpu / (time.monotonic() - t0)
    return r


class ConnServer:
    """Accepts and closes; with `data`, reads a request and answers first:
    one short connection."""

    def __init__(self, data):
        self.data = data
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", CONN_PORT))
        self.sock.listen(1024)
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.data:
                    c.recv(64)
                    c.sendall(b"ok\n")
            except OSError:
                pass
            c.close()

    def close(self):
        self.stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join()


CONN_CLIENT = r"""
import socket, sys, time
host, port, secs, data = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
n = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    s = socket.create_connection((host, port), timeout=5)
    if data:
        s.sendall(b"GET\n")
    while s.recv(64):
        pass
    s.close()
    n += 1
print(n / secs)
"""


GSO_SENDER = r"""
import socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
s.setsockopt(17, 103, 1472)  # SOL_UDP, UDP_SEGMENT: the kernel cuts each send
run = bytes(1472 * 44)
sent = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        s.send(run)
        sent += 44
    except OSError:
        pass
time.sleep(0.5)
s.send(b"END")
print(sent)
"""


def udp_gso_rate(session, seconds):
    """A sender in the namespace that uses UDP GSO (`UDP_SEGMENT`, 44
    datagrams of 1472 bytes per send, as QUIC stacks do) at unlimited
    rate, to a receiver on loopback with `UDP_GRO`: datagrams per second
    received, and the share lost. What USO on a tap (`TUN_F_USO4/6`)
    changes; iperf3 3.12 sends one datagram per call."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.setsockopt(17, 104, 1)  # SOL_UDP, UDP_GRO: many datagrams per recv
    rx.bind(("127.0.0.1", GSO_PORT))
    rx.settimeout(2)
    got = [0]

    def receive():
        while True:
            try:
                d = rx.recv(65535)
            except OSError:
                return
            if d == b"END":
                return
            got[0] += -(-len(d) // 1472)

    thread = threading.Thread(target=receive)
    thread.start()
    out = None
    try:
        out = session.run([sys.executable, "-c", GSO_SENDER, session.target, str(GSO_PORT),
                           str(seconds)], timeout=seconds + 20)
        sent = int(out.stdout.strip())
    except (ValueError, subprocess.TimeoutExpired):
        log(f"  GSO sender failed: {out.stderr.strip()[:200] if out else 'timeout'}")
        return None
    finally:
        thread.join()
        rx.close()
    if not sent:
        return None
    return {"pps": got[0] / seconds, "lost_percent": 100.0 * max(0, sent - got[0]) / sent}


def conn_rate(session, seconds, data=True):
    server = ConnServer(data)
    out = None
    try:
        try:
            out = session.run([sys.executable, "-c", CONN_CLIENT, session.target,
                               str(CONN_PORT), str(seconds), "1" if data else "0"],
                              timeout=seconds + 20)
            return float(out.stdout.strip())
        except (ValueError, subprocess.TimeoutExpired):
            log(f"  connection client failed: {out.stderr.strip()[:200] if out else 'timeout'}")
            return None
    finally:
        server.close()


class SockperfServers:
    """sockperf servers (TCP and UDP) on loopback for one session."""

    def __init__(self):
        self.procs = [
            subprocess.Popen(["sockperf", "server", "-i", "127.0.0.1", "-p", str(port)] + extra,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port, extra in [(SOCKPERF_TCP_PORT, ["--tcp"]), (SOCKPERF_UDP_PORT, [])]]
        wait_for("sockperf servers", lambda: listening(SOCKPERF_TCP_PORT)
                 and listening(SOCKPERF_UDP_PORT, udp=True))

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


class StackTool:
    """A tool attached to the stack process while one metric runs, writing
    DIR/STACK-MTU-METRIC.EXT (`argv(path, pid)`) and stopped with SIGINT
    when the metric ends; nothing when `directory` is None."""

    def __init__(self, directory, session, metric, ext, argv):
        self.proc = None
        self.out = None
        if directory and session.stack_pid is not None:
            os.makedirs(directory, exist_ok=True)
            self.out = os.path.join(directory,
                                    f"{session.stack}-{session.mtu}-{metric}.{ext}")
            self.proc = subprocess.Popen(argv(self.out, session.stack_pid),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait()


class SyscallCount(StackTool):
    """`strace -f -c` of the stack process while one metric runs, when
    --syscalls DIR was given (DIR/STACK-MTU-METRIC.txt), else nothing.
    `per(n)` turns the counts into calls per transaction over `n`
    transactions: {"sys_NAME": calls, "sys_NAME_errors": failed calls,
    "sys_total": all}. strace slows the stack, so only the counts mean
    anything, not the latency measured meanwhile; they do not depend on
    the machine's load."""

    def __init__(self, args, session, metric):
        super().__init__(args.syscalls, session, metric, "txt",
                         lambda out, pid: ["strace", "-f", "-c", "-o", out, "-p", str(pid)])

    def per(self, transactions):
        """Calls per transaction (None without --syscalls or a count)."""
        if not self.out or not transactions:
            return None
        out = {}
        with open(self.out) as f:
            for line in f:
                # % time, seconds, usecs/call, calls, [errors,] syscall
                cols = line.split()
                if len(cols) not in (5, 6) or not cols[3].isdigit():
                    continue
                name = "total" if cols[-1] == "total" else cols[-1]
                out[f"sys_{name}"] = int(cols[3]) / transactions
                if len(cols) == 6 and name != "total":
                    out[f"sys_{name}_errors"] = int(cols[4]) / transactions
        return out


class Profile(StackTool):
    """`perf record` of the stack process while one metric runs, when
    --perf DIR was given (DIR/STACK-MTU-METRIC.data), else nothing."""

    def __init__(self, args, session, metric):
        super().__init__(args.perf, session, metric, "data",
                         lambda out, pid: ["perf", "record", "-q", "-F", "2000", "-g",
                                           "-p", str(pid), "-o", out])


def measure(stack, mtu, args):
    metrics = [m for m in args.metrics if mtu in METRIC_MTUS.get(m, MTUS)
               and (stack != "loopback" or m in LOOPBACK_METRICS)]
    if not metrics:
        # Nothing to measure at this MTU: no session.
        return {}
    if stack == "loopback":
        args = argparse.Namespace(**vars(args))
        args.metrics = metrics
    log(f"  {stack} at MTU {mtu}")
    s = Session(stack, mtu, args.binaries, args.pin_stack,
                args.slipway_args.split() if stack == "slipway" else ())
    try:
        r = {}
        if "tcp" in args.metrics:
            cpu0 = cpu_seconds(s.stack_pid)
            r["tcp_out"] = iperf(s, args.seconds)
            r["tcp_in"] = iperf(s, args.seconds, reverse=True)
            cpu = cpu_seconds(s.stack_pid) - cpu0
            moved = sum(x["bytes"] for x in (r["tcp_out"], r["tcp_in"]) if x)
            r["cpu_s_per_gib"] = cpu / (moved / 2**30) if moved else None
        if "udp" in args.metrics:
            with Profile(args, s, "udp"):
                r["udp_out"] = iperf(s, args.seconds, udp=True)
        if "udp_search" in args.metrics:
            big = DGRAM_1500 if mtu == 1500 else DGRAM_LARGE
            sizes = [big, DGRAM_SMALL] if mtu == 1500 else [big]
            for size in sizes:
                for reverse, way in [(False, "out"), (True, "in")]:
                    with Profile(args, s, f"udp{size}_{way}"):
                        r[f"udp{size}_{way}"] = udp_search(s, size, reverse, args)
        if mtu == 1500 and "udp_where" in args.metrics:
            for reverse, way in [(False, "out"), (True, "in")]:
                r[f"udp_where_{way}"] = udp_where(s, args.where_rate * 1e9, reverse,
                                                  args.search_seconds)
        if mtu == 1500 and "udp_cpu" in args.metrics:
            for length, rate in UDP_CPU_RATES:
                for reverse, way in [(False, "out"), (True, "in")]:
                    name = f"udp_cpu{length}_{way}"
                    with Profile(args, s, name), SyscallCount(args, s, name) as calls:
                        got = udp_cpu(s, length, rate, reverse, args.seconds)
                    per = got and calls.per(got["datagrams"])
                    if per:
                        got.update(per)
                        log(f"  {name}: system calls per datagram: " + ", ".join(
                            f"{k[4:]} {v:.2f}" for k, v in sorted(per.items())
                            if v >= 0.01))
                    r[name] = got
        if mtu == 1500 and "udp_gso" in args.metrics:
            with Profile(args, s, "udp_gso"):
                r["udp_gso_out"] = udp_gso_rate(s, args.seconds)
        if mtu == 65520 and "rr" in args.metrics:
            servers = SockperfServers()
            try:
                for key, udp in [("tcp_rr", False), ("udp_rr", True)]:
                    with Profile(args, s, key), SyscallCount(args, s, key) as count:
                        r[key] = rr_latency(s, args.seconds, udp=udp)
                    per = count.per(r[key] and r[key].get("transactions"))
                    if per:
                        r[key].update(per)
                        log(f"  {key}: system calls per transaction: " + ", ".join(
                            f"{k[4:]} {v:.2f}" for k, v in sorted(per.items())
                            if v >= 0.01))
            finally:
                servers.close()
        if mtu == 65520 and "conn" in args.metrics:
            with Profile(args, s, "conn"):
                r["conn_per_s"] = conn_rate(s, args.seconds)
            with Profile(args, s, "conn_nodata"):
                r["conn_nodata_per_s"] = conn_rate(s, args.seconds, data=False)
        if s.stack_pid is not None:
            r["peak_rss_kib"] = peak_rss_kib(s.stack_pid)
        return r
    finally:
        s.close()


def field(res, mtu, key, sub=None, scale=1.0):
    """res[mtu][key][sub] * scale, or None where it was not measured."""
    v = res.get(mtu, {}).get(key)
    if sub is not None:
        v = v.get(sub) if isinstance(v, dict) else None
    return v * scale if v is not None else None


# (name, getter, higher is better)
ROWS = [
    ("TCP ns->host MTU 1500 (Gbit/s)", lambda r: field(r, 1500, "tcp_out", "bps", 1e-9), True),
    ("TCP host->ns MTU 1500 (Gbit/s)", lambda r: field(r, 1500, "tcp_in", "bps", 1e-9), True),
    ("TCP ns->host MTU 65520 (Gbit/s)", lambda r: field(r, 65520, "tcp_out", "bps", 1e-9), True),
    ("TCP host->ns MTU 65520 (Gbit/s)", lambda r: field(r, 65520, "tcp_in", "bps", 1e-9), True),
    ("UDP ns->host MTU 1500 (Gbit/s)", lambda r: field(r, 1500, "udp_out", "bps", 1e-9), True),
    ("UDP ns->host MTU 65520 (Gbit/s)", lambda r: field(r, 65520, "udp_out", "bps", 1e-9), True),
    ("UDP <1% loss ns->host 1472 B (Gbit/s)",
     lambda r: field(r, 1500, f"udp{DGRAM_1500}_out", "bps", 1e-9), True),
    ("UDP <1% loss host->ns 1472 B (Gbit/s)",
     lambda r: field(r, 1500, f"udp{DGRAM_1500}_in", "bps", 1e-9), True),
    ("UDP <1% loss ns->host 8192 B, MTU 65520 (Gbit/s)",
     lambda r: field(r, 65520, f"udp{DGRAM_LARGE}_out", "bps", 1e-9), True),
    ("UDP <1% loss host->ns 8192 B, MTU 65520 (Gbit/s)",
     lambda r: field(r, 65520, f"udp{DGRAM_LARGE}_in", "bps", 1e-9), True),
    ("UDP <1% loss ns->host 1472 B (kpps)",
     lambda r: field(r, 1500, f"udp{DGRAM_1500}_out", "pps", 1e-3), True),
    ("UDP <1% loss host->ns 1472 B (kpps)",
     lambda r: field(r, 1500, f"udp{DGRAM_1500}_in", "pps", 1e-3), True),
    ("UDP <1% loss ns->host 64 B (kpps)",
     lambda r: field(r, 1500, f"udp{DGRAM_SMALL}_out", "pps", 1e-3), True),
    ("UDP <1% loss host->ns 64 B (kpps)",
     lambda r: field(r, 1500, f"udp{DGRAM_SMALL}_in", "pps", 1e-3), True),
    ("UDP ns->host 1472 B at 0.2 Gbit/s: stack CPU per datagram (us)",
     lambda r: field(r, 1500, "udp_cpu1472_out", "us_per_dgram"), False),
    ("UDP host->ns 1472 B at 0.2 Gbit/s: stack CPU per datagram (us)",
     lambda r: field(r, 1500, "udp_cpu1472_in", "us_per_dgram"), False),
    ("UDP ns->host 64 B at 10 kpps: stack CPU per datagram (us)",
     lambda r: field(r, 1500, "udp_cpu64_out", "us_per_dgram"), False),
    ("UDP host->ns 64 B at 10 kpps: stack CPU per datagram (us)",
     lambda r: field(r, 1500, "udp_cpu64_in", "us_per_dgram"), False),
    ("UDP GSO sender ns->host 1472 B, unlimited (kpps)",
     lambda r: field(r, 1500, "udp_gso_out", "pps", 1e-3), True),
    ("TCP RR p50 (us, half round trip)", lambda r: field(r, 65520, "tcp_rr", "p50_us"), False),
    ("TCP RR p99 (us, half round trip)", lambda r: field(r, 65520, "tcp_rr", "p99_us"), False),
    ("UDP RR p50 (us, half round trip)", lambda r: field(r, 65520, "udp_rr", "p50_us"), False),
    ("UDP RR p99 (us, half round trip)", lambda r: field(r, 65520, "udp_rr", "p99_us"), False),
    ("UDP RR: the stack's CPU (% of one)",
     lambda r: field(r, 65520, "udp_rr", "stack_cpu_percent"), False),
    ("short connections/s (MTU 65520)", lambda r: field(r, 65520, "conn_per_s"), True),
    ("connections/s without data", lambda r: field(r, 65520, "conn_nodata_per_s"), True),
    ("CPU s per GiB TCP, MTU 1500", lambda r: field(r, 1500, "cpu_s_per_gib"), False),
    ("CPU s per GiB TCP, MTU 65520", lambda r: field(r, 65520, "cpu_s_per_gib"), False),
    ("peak RSS (MiB)", lambda r: max((field(r, m, "peak_rss_kib") or 0) for m in MTUS) / 1024
     or None, False),
]


def fmt(v):
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def advantage(a, b, higher):
    """How many times better slipway's `a` is than a peer's `b` (above 1:
    slipway leads, whichever way the metric counts)."""
    if a is None or not b or not a:
        return None
    return a / b if higher else b / a


def spread(runs):
    """Each table row's spread across the rounds, per stack: {row name:
    {stack: {"min", "max", "rounds": [figure per round]}}} (rows and
    stacks with no figure left out)."""
    out = {}
    for name, get, _ in ROWS:
        for s, by_mtu in runs.items():
            count = max(len(r) for r in by_mtu.values())
            got = [get({m: r[i] for m, r in by_mtu.items() if i < len(r)}) for i in range(count)]
            have = [v for v in got if v is not None]
            if have:
                out.setdefault(name, {})[s] = {"min": min(have), "max": max(have), "rounds": got}
    return out


def table(results, spreads=None):
    """The printed table: medians, slipway's ratio to each peer, and with
    `spreads` (see `spread`) one more column per stack, the min-max of
    its rounds."""
    stacks = [s for s in STACKS if s in results]
    peers = [s for s in stacks if s != "slipway"]
    head = ["metric"] + [LABELS.get(s, s) for s in stacks] + [f"slipway/{p}" for p in peers]
    if spreads is not None:
        head += [f"{s} min-max" for s in stacks]
    rows = []
    for name, get, _ in ROWS:
        vals = {s: get(results[s]) for s in stacks}
        if all(v is None for v in vals.values()):
            continue
        row = [name] + [fmt(vals[s]) for s in stacks]
        for p in peers:
            a, b = vals.get("slipway"), vals[p]
            row.append(f"{a / b:.2f}x" if a is not None and b else "-")
        if spreads is not None:
            for s in stacks:
                got = spreads.get(name, {}).get(s)
                row.append(f"{fmt(got['min'])}-{fmt(got['max'])}" if got else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in [head] + rows]
    return "\n".join(lines), head, rows


# Column names in the table where a stack's name alone would mislead.
LABELS = {"loopback": "loopback (no stack)"}

COLOURS = {"slipway": "#1f77b4", "baseline": "#9467bd", "slirp4netns": "#ff7f0e",
           "pasta": "#2ca02c", "loopback": "#7f7f7f"}


def bar_chart(path, title, groups, series, colours, guides=(), log_scale=False):
    """Grouped bars: `groups` labels, `series` {name: [value per group]}
    (None: not measured), horizontal `guides` lines (value, label)."""
    names = list(series)
    flat = [v for vs in series.values() for v in vs if v]
    if not flat:
        return
    W, H, left, bottom, top_pad = max(900, 70 * len(groups)), 460, 60, 150, 40
    plot_h = H - bottom - top_pad
    if log_scale:
        lo = min(min(flat), 0.5)
        hi = max(max(flat), 2.0)
        span = math.log(hi) - math.log(lo)

        def y_of(v):
            return top_pad + plot_h - plot_h * (math.log(v) - math.log(lo)) / span
        ticks = [t for t in [0.1, 0.25, 0.5, 1, 1.5, 2, 5, 10, 20, 50, 100] if lo <= t <= hi]
    else:
        top = max(flat)

        def y_of(v):
            return top_pad + plot_h - plot_h * v / top
        ticks = [top * i / 4 for i in range(5)]
    gw = (W - left - 20) / len(groups)
    bw = gw * 0.8 / len(names)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for v in ticks:
        y = y_of(v)
        out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{v:.4g}</text>')
    for v, label in guides:
        y = y_of(v)
        out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#c00" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{W - 22}" y="{y - 3:.1f}" text-anchor="end" fill="#c00">{label}</text>')
    base = y_of(1.0) if log_scale else y_of(0)
    for g, name in enumerate(groups):
        x0 = left + g * gw + gw * 0.1
        for k, s in enumerate(names):
            v = series[s][g]
            if not v:
                continue
            y = y_of(v)
            top_y, h = min(y, base), abs(base - y)
            x = x0 + k * bw
            out.append(f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                       f'fill="{colours[s]}"><title>{s}: {v:.2f}</title></rect>')
            out.append(f'<text x="{x + bw / 2:.1f}" y="{top_y - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{v:.2f}</text>')
        cx, cy = x0 + gw * 0.4, H - bottom + 12
        out.append(f'<text x="{cx:.1f}" y="{cy}" text-anchor="end" '
                   f'transform="rotate(-35 {cx:.1f} {cy})">{name}</text>')
    for k, s in enumerate(names):
        x = left + k * 200
        out.append(f'<rect x="{x}" y="{H - 22}" width="12" height="12" fill="{colours[s]}"/>')
        out.append(f'<text x="{x + 16}" y="{H - 12}">{s}</text>')
    out.append("</svg>")
    write_atomic(path, "\n".join(out) + "\n")


def svg_charts(results, out_dir):
    """latest.svg: TCP and UDP throughput per stack and MTU; ratios.svg:
    how many times better slipway is than each peer, every metric."""
    stacks = [s for s in STACKS if s in results]
    first = ROWS[:6]
    bar_chart(os.path.join(out_dir, "latest.svg"),
              "Throughput through a network namespace (Gbit/s, higher is better)",
              [n.replace(" (Gbit/s)", "") for n, _, _ in first],
              {s: [get(results[s]) for _, get, _ in first] for s in stacks}, COLOURS)
    if "slipway" not in results:
        return
    rows = [(n, g, h) for n, g, h in ROWS if g(results["slipway"]) is not None]
    peers = [s for s in stacks if s != "slipway"]
    bar_chart(os.path.join(out_dir, "ratios.svg"),
              "How many times better slipway is than each peer (log scale; above 1: ahead)",
              [n for n, _, _ in rows],
              {f"slipway vs {p}": [advantage(g(results["slipway"]), g(results[p]), h)
                                   for _, g, h in rows] for p in peers},
              {f"slipway vs {p}": COLOURS[p] for p in peers},
              guides=[(1.0, "even"), (1.5, "target 1.5x")], log_scale=True)


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def median_run(rounds):
    """One result whose every figure is the median over the rounds."""
    out = {}
    for key, first in rounds[0].items():
        if isinstance(first, dict) or (first is None and any(isinstance(r[key], dict) for r in rounds)):
            got = [r[key] for r in rounds if r[key]]
            keys = dict.fromkeys(k for g in got for k in g)
            out[key] = {k: median([g.get(k) for g in got]) for k in keys} if got else None
        else:
            out[key] = median([r[key] for r in rounds])
    return out


def parse_cpus(text):
    """A CPU list such as `0`, `1-3` or `0,2`: the set of CPU numbers."""
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def sh(args, ns_pid=None):
    """Runs a setup command (in the network namespace of `ns_pid`), failing loudly."""
    if ns_pid is not None:
        args = ["nsenter", "-t", str(ns_pid), "-n"] + args
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


class PrivateNetwork:
    """The network the benchmark runs in (see the header): called inside
    the fresh network, PID and mount namespaces."""

    def __init__(self):
        sh(["ip", "link", "set", "lo", "up"])
        self.outside = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        me = net_ns_inode(os.getpid())
        wait_for("the outside namespace", lambda: net_ns_inode(self.outside.pid) != me)
        out = self.outside.pid
        sh(["ip", "link", "add", "out0", "type", "veth", "peer", "name", "out1", "netns", str(out)])
        sh(["ip", "addr", "add", PRIVATE_V4, "dev", "out0"])
        sh(["ip", "-6", "addr", "add", PRIVATE_V6, "dev", "out0", "nodad"])
        sh(["ip", "link", "set", "out0", "up"])
        sh(["ip", "route", "add", "default", "via", OUTSIDE_V4])
        sh(["ip", "-6", "route", "add", "default", "via", OUTSIDE_V6])
        sh(["ip", "link", "set", "lo", "up"], ns_pid=out)
        sh(["ip", "addr", "add", OUTSIDE_V4 + "/24", "dev", "out1"], ns_pid=out)
        sh(["ip", "-6", "addr", "add", OUTSIDE_V6 + "/64", "dev", "out1", "nodad"], ns_pid=out)
        sh(["ip", "link", "set", "out1", "up"], ns_pid=out)
        for probe in ["192.0.2.99", "198.51.100.1", "2001:db8:ffff::1"]:
            route = sh(["ip", "route", "get", probe])
            if " dev out0 " not in route:
                raise RuntimeError(f"the private namespace routes {probe} elsewhere: {route}")
        # A tun node pasta (as nobody) may open, over the host's, in the
        # private mount namespace only.
        self.dev_dir = tempfile.mkdtemp(prefix="slipway-bench-")
        sh(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64k", "bench-dev", self.dev_dir])
        tun = os.path.join(self.dev_dir, "tun")
        os.mknod(tun, 0o600 | 0o020000, os.makedev(10, 200))
        os.chmod(tun, 0o666)
        sh(["mount", "--bind", tun, "/dev/net/tun"])

    def outside_frames(self):
        """Frames that reached the outside namespace's end of the veth (the
        private namespace's own neighbour discovery included)."""
        link = json.loads(sh(["ip", "-s", "-j", "link", "show", "out1"], ns_pid=self.outside.pid))
        return link[0]["stats64"]["rx"]["packets"]

    def close(self):
        subprocess.run(["umount", "/dev/net/tun"], capture_output=True)
        subprocess.run(["umount", self.dev_dir], capture_output=True)
        os.rmdir(self.dev_dir)
        self.outside.kill()
        self.outside.wait()


def isolate(script=__file__):
    """Re-executes `script` (this one, or bench/vm.py, which imports it) as
    PID 1 of new network, PID and mount namespaces (`--inside`); unshare
    kills it if unshare itself dies."""
    cmd = ["unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc",
           "--kill-child=SIGKILL", sys.executable, os.path.abspath(script), "--inside"]
    os.execvp("unshare", cmd + sys.argv[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slipway", required=True, help="the slipway binary (release build)")
    ap.add_argument("--baseline", help="another slipway binary, measured as stack 'baseline'")
    ap.add_argument("--slipway-args", default="", metavar="ARGS",
                    help="more options for `slipway attach` (stack 'slipway' only, not "
                    "'baseline'), e.g. \"--busy-poll-us 30\"")
    ap.add_argument("--seconds", type=float, default=3, help="length of each measurement")
    ap.add_argument("--search-seconds", type=int, default=1,
                    help="length of each step of the UDP rate search")
    ap.add_argument("--search-steps", type=int, default=6,
                    help="steps of the UDP rate search after the unlimited run")
    ap.add_argument("--search-trials", type=int, default=3,
                    help="runs per step of the UDP rate search (their median loss decides)")
    ap.add_argument("--confirm-seconds", type=int, default=3,
                    help="length of each run confirming the rate the UDP search found")
    ap.add_argument("--confirm-trials", type=int, default=2,
                    help="runs confirming the rate the UDP search found (median loss)")
    ap.add_argument("--pin", nargs="?", const="0:1", metavar="STACK:OTHERS",
                    help="pin the stack process to CPU list STACK and this script, the "
                    "clients and the servers to OTHERS (default 0:1), for every stack alike")
    ap.add_argument("--where-rate", type=float, default=0.7,
                    help="offered rate (Gbit/s) of the udp_where metric")
    ap.add_argument("--rounds", type=int, default=3, help="runs of everything; medians reported")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--stacks", help="default: slipway, baseline (with --baseline), slirp4netns, "
                    "pasta, loopback (no stack: latency and connection rate only)")
    ap.add_argument("--metrics", default=",".join(METRICS))
    ap.add_argument("--perf", metavar="DIR",
                    help="perf record the stack process during each metric into DIR")
    ap.add_argument("--syscalls", metavar="DIR",
                    help="count the stack process's system calls (strace -f -c) during the "
                    "rr metrics into DIR, and report them per transaction")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (see the header of this script)")
    default = [s for s in STACKS if s != "baseline" or args.baseline]
    stacks = [s for s in (args.stacks or ",".join(default)).split(",") if s]
    for s in stacks:
        if s not in STACKS:
            sys.exit(f"unknown stack {s!r}: choose from {', '.join(STACKS)}")
    if "baseline" in stacks and not args.baseline:
        sys.exit("stack 'baseline' needs --baseline BINARY")
    args.metrics = [m for m in args.metrics.split(",") if m]
    for m in args.metrics:
        if m not in METRICS:
            sys.exit(f"unknown metric {m!r}: choose from {', '.join(METRICS)}")
    tools = ["iperf3", "unshare", "nsenter", "setpriv", "ip", "mount", "sockperf"] + \
        [s for s in stacks if s in ("slirp4netns", "pasta")] + (["taskset"] if args.pin else [])
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install iperf3 sockperf slirp4netns passt "
                     "util-linux iproute2")
    args.binaries = {"slipway": os.path.abspath(args.slipway)}
    if args.baseline:
        args.binaries["baseline"] = os.path.abspath(args.baseline)
    if args.perf:
        args.perf = os.path.abspath(args.perf)
    if args.syscalls:
        if not shutil.which("strace"):
            sys.exit("--syscalls needs strace: apt-get install strace")
        args.syscalls = os.path.abspath(args.syscalls)
    if not args.inside:
        isolate()
    if os.getpid() != 1:
        sys.exit("--inside is for the script itself (it must be PID 1 of its own namespaces)")
    args.pin_stack = None
    if args.pin:
        stack_cpus, _, others = args.pin.partition(":")
        try:
            pin = [parse_cpus(stack_cpus), parse_cpus(others)]
        except ValueError:
            sys.exit(f"--pin {args.pin!r}: want STACK:OTHERS, CPU lists such as 0:1 or 0:1-3")
        if not all(pin) or not (pin[0] | pin[1]) <= os.sched_getaffinity(0):
            sys.exit(f"--pin {args.pin!r}: CPUs this script may run on: "
                     f"{sorted(os.sched_getaffinity(0))}")
        # Clients, servers and this script's own threads inherit this.
        os.sched_setaffinity(0, pin[1])
        args.pin_stack = ",".join(map(str, sorted(pin[0])))
    # As PID 1, SIGTERM would be ignored: make it end the run (and with it
    # the namespace and everything in it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    load_start = os.getloadavg()
    log(f"load average at the start: {' '.join(f'{x:.2f}' for x in load_start)}")
    net = PrivateNetwork()
    runs = {s: {m: [] for m in MTUS} for s in stacks}
    try:
        before = net.outside_frames()
        for r in range(args.rounds):
            log(f"round {r + 1} of {args.rounds}")
            for s in stacks:
                for m in MTUS:
                    runs[s][m].append(measure(s, m, args))
        log(f"frames that reached the outside namespace during the run: "
            f"{net.outside_frames() - before} (neighbour discovery, DNS; none leaves it)")
    finally:
        net.close()
    results = {s: {m: median_run(runs[s][m]) for m in MTUS} for s in stacks}
    spreads = spread(runs)
    text, head, rows = table(results, spreads)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "metrics": args.metrics,
        "pin": args.pin,
        "search": {"steps": args.search_steps, "trials": args.search_trials,
                   "seconds": args.search_seconds, "confirm_trials": args.confirm_trials,
                   "confirm_seconds": args.confirm_seconds},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "results": {s: {str(m): r for m, r in res.items()} for s, res in results.items()},
        "runs": {s: {str(m): r for m, r in res.items()} for s, res in runs.items()},
        "spread": spreads,
        "table": {"head": head, "rows": rows},
    }
    write_atomic(os.path.join(args.out, "latest.json"), json.dumps(doc, indent=2) + "\n")
    svg_charts(results, args.out)
    log(f"wrote {args.out}/latest.json, latest.svg and ratios.svg")


if __name__ == "__main__":
    main()
