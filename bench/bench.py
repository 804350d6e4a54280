#!/usr/bin/env python3
"""Container networking benchmark: slipway against slirp4netns and pasta.

Each stack serves a network namespace; iperf3 and a small connection-rate
client run inside it against servers on the host's loopback, reached
through the stack's host-loopback mapping. All traffic stays on this
machine. Figures: TCP throughput namespace->host and host->namespace (at
MTU 1500 and 65520), UDP throughput namespace->host, short connections
per second, CPU seconds of the stack process per GiB moved over TCP, and
its peak resident memory. One table (absolute figures and slipway's
ratio to each peer), a JSON file and an SVG chart.

Run as root (pasta is started as `nobody` and needs /dev/net/tun
readable by it; the script makes the device 0666 for the run and puts
the mode back). Not part of the test suite: figures vary with the
machine's load, nothing is asserted.

Each figure is the median over --rounds rounds; within a round every
stack and MTU runs once, so a load change on the machine hits all alike.

Usage: bench/run.sh [--seconds N] [--rounds N] [--out DIR] [--stacks slipway,slirp4netns,pasta]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

STACKS = ["slipway", "slirp4netns", "pasta"]
MTUS = [1500, 65520]
IPERF_PORT = 15201
CONN_PORT = 15202
NOBODY = 65534


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

    def __init__(self, stack, mtu, slipway):
        self.stack = stack
        self.mtu = mtu
        self.procs = []
        if stack == "pasta":
            self._start_pasta()
        else:
            self._start_attached(slipway)

    def _start_attached(self, slipway):
        ns = subprocess.Popen(["unshare", "-Urn", "sleep", "600"])
        self.procs.append(ns)
        me = net_ns_inode(os.getpid())
        wait_for("the namespace", lambda: net_ns_inode(ns.pid) != me)
        self.ns_pid = ns.pid
        self.target = "10.0.2.2"
        r, w = os.pipe()
        if self.stack == "slipway":
            cmd = [slipway, "attach", "--configure", "--mtu", str(self.mtu),
                   "--ready-fd", str(w), str(ns.pid)]
        else:
            cmd = ["slirp4netns", "--configure", f"--mtu={self.mtu}",
                   f"--ready-fd={w}", str(ns.pid), "tap0"]
        stack = subprocess.Popen(cmd, pass_fds=(w,), stdout=subprocess.DEVNULL,
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
        stack = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    def run(self, args, timeout=60):
        return subprocess.run(
            ["nsenter", "-t", str(self.ns_pid), "-U", "-n", "--preserve-credentials"] + args,
            capture_output=True, text=True, timeout=timeout)

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
            args += ["-u", "-b", "0", "-l", str(min(session.mtu - 28, 8192))]
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


def listening(port):
    """Whether something listens on TCP `port` (without connecting: a
    probe connection would use up a one-off iperf3 server)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                return True
    return False


class ConnServer:
    """Accepts, reads a request, answers, closes: one short connection."""

    def __init__(self):
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
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET\n")
    while s.recv(64):
        pass
    s.close()
    n += 1
print(n / secs)
"""


def conn_rate(session, seconds):
    server = ConnServer()
    try:
        try:
            out = session.run([sys.executable, "-c", CONN_CLIENT, session.target,
                               str(CONN_PORT), str(seconds)], timeout=seconds + 20)
            return float(out.stdout.strip())
        except (ValueError, subprocess.TimeoutExpired):
            log(f"  connection client failed: {out.stderr.strip()[:200]}")
            return None
    finally:
        server.close()


def measure(stack, mtu, args):
    log(f"  {stack} at MTU {mtu}")
    s = Session(stack, mtu, args.slipway)
    try:
        r = {}
        cpu0 = cpu_seconds(s.stack_pid)
        r["tcp_out"] = iperf(s, args.seconds)
        r["tcp_in"] = iperf(s, args.seconds, reverse=True)
        cpu = cpu_seconds(s.stack_pid) - cpu0
        moved = sum(x["bytes"] for x in (r["tcp_out"], r["tcp_in"]) if x)
        r["cpu_s_per_gib"] = cpu / (moved / 2**30) if moved else None
        r["udp_out"] = iperf(s, args.seconds, udp=True)
        r["conn_per_s"] = conn_rate(s, args.seconds)
        r["peak_rss_kib"] = peak_rss_kib(s.stack_pid)
        return r
    finally:
        s.close()


ROWS = [
    ("TCP ns->host MTU 1500 (Gbit/s)", lambda res: gbps(res[1500]["tcp_out"]), True),
    ("TCP host->ns MTU 1500 (Gbit/s)", lambda res: gbps(res[1500]["tcp_in"]), True),
    ("TCP ns->host MTU 65520 (Gbit/s)", lambda res: gbps(res[65520]["tcp_out"]), True),
    ("TCP host->ns MTU 65520 (Gbit/s)", lambda res: gbps(res[65520]["tcp_in"]), True),
    ("UDP ns->host MTU 1500 (Gbit/s)", lambda res: gbps(res[1500]["udp_out"]), True),
    ("UDP ns->host MTU 65520 (Gbit/s)", lambda res: gbps(res[65520]["udp_out"]), True),
    ("short connections/s (MTU 65520)", lambda res: res[65520]["conn_per_s"], True),
    ("CPU s per GiB TCP, MTU 1500", lambda res: res[1500]["cpu_s_per_gib"], False),
    ("CPU s per GiB TCP, MTU 65520", lambda res: res[65520]["cpu_s_per_gib"], False),
    ("peak RSS (MiB)", lambda res: max(res[m]["peak_rss_kib"] for m in MTUS) / 1024, False),
]


def gbps(x):
    return x["bps"] / 1e9 if x else None


def fmt(v):
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def table(results):
    stacks = [s for s in STACKS if s in results]
    peers = [s for s in stacks if s != "slipway"]
    head = ["metric"] + stacks + [f"slipway/{p}" for p in peers]
    rows = []
    for name, get, _ in ROWS:
        vals = {s: get(results[s]) for s in stacks}
        row = [name] + [fmt(vals[s]) for s in stacks]
        for p in peers:
            a, b = vals.get("slipway"), vals[p]
            row.append(f"{a / b:.2f}x" if a is not None and b else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in [head] + rows]
    return "\n".join(lines), head, rows


def svg_chart(results, path):
    """Grouped bars: TCP and UDP throughput per stack and MTU."""
    groups = [name for name, _, _ in ROWS[:6]]
    getters = [get for _, get, _ in ROWS[:6]]
    stacks = [s for s in STACKS if s in results]
    colours = {"slipway": "#1f77b4", "slirp4netns": "#ff7f0e", "pasta": "#2ca02c"}
    vals = [[getters[g](results[s]) or 0 for s in stacks] for g in range(len(groups))]
    top = max(max(v) for v in vals) or 1
    W, H, left, bottom, top_pad = 900, 420, 60, 110, 40
    plot_h = H - bottom - top_pad
    gw = (W - left - 20) / len(groups)
    bw = gw * 0.8 / len(stacks)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">'
           f'Throughput through a network namespace (Gbit/s, higher is better)</text>']
    for i in range(5):
        v = top * i / 4
        y = top_pad + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for g, name in enumerate(groups):
        x0 = left + g * gw + gw * 0.1
        for k, s in enumerate(stacks):
            v = vals[g][k]
            h = plot_h * v / top
            x = x0 + k * bw
            y = top_pad + plot_h - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                       f'fill="{colours[s]}"><title>{s}: {v:.2f}</title></rect>')
            out.append(f'<text x="{x + bw / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{v:.2f}</text>')
        label = name.replace(" (Gbit/s)", "")
        out.append(f'<text x="{x0 + gw * 0.4:.1f}" y="{H - bottom + 18}" '
                   f'text-anchor="middle">{label}</text>')
    for k, s in enumerate(stacks):
        x = left + k * 130
        out.append(f'<rect x="{x}" y="{H - 40}" width="12" height="12" fill="{colours[s]}"/>')
        out.append(f'<text x="{x + 16}" y="{H - 30}">{s}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


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
            out[key] = {k: median([g[k] for g in got]) for k in got[0]} if got else None
        else:
            out[key] = median([r[key] for r in rounds])
    return out


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slipway", required=True, help="the slipway binary (release build)")
    ap.add_argument("--seconds", type=float, default=3, help="length of each measurement")
    ap.add_argument("--rounds", type=int, default=3, help="runs of everything; medians reported")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--stacks", default=",".join(STACKS))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (see the header of this script)")
    stacks = [s for s in args.stacks.split(",") if s]
    for s in stacks:
        if s not in STACKS:
            sys.exit(f"unknown stack {s!r}: choose from {', '.join(STACKS)}")
    for tool in ["iperf3", "unshare", "nsenter", "setpriv"] + \
            [{"slirp4netns": "slirp4netns", "pasta": "pasta"}[s] for s in stacks if s != "slipway"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install iperf3 slirp4netns passt util-linux")
    tun_mode = os.stat("/dev/net/tun").st_mode & 0o777
    if "pasta" in stacks and tun_mode & 0o006 != 0o006:
        os.chmod("/dev/net/tun", 0o666)
    runs = {s: {m: [] for m in MTUS} for s in stacks}
    try:
        for r in range(args.rounds):
            log(f"round {r + 1} of {args.rounds}")
            for s in stacks:
                for m in MTUS:
                    runs[s][m].append(measure(s, m, args))
    finally:
        os.chmod("/dev/net/tun", tun_mode)
    results = {s: {m: median_run(runs[s][m]) for m in MTUS} for s in stacks}
    text, head, rows = table(results)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "results": {s: {str(m): r for m, r in res.items()} for s, res in results.items()},
        "runs": {s: {str(m): r for m, r in res.items()} for s, res in runs.items()},
        "table": {"head": head, "rows": rows},
    }
    write_atomic(os.path.join(args.out, "latest.json"), json.dumps(doc, indent=2) + "\n")
    svg_chart(results, os.path.join(args.out, "latest.svg"))
    log(f"wrote {args.out}/latest.json and {args.out}/latest.svg")


if __name__ == "__main__":
    main()
