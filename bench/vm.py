#!/usr/bin/env python3
"""VM data-path benchmark: the test guest's iperf3 through slipway's
stream, dgram and vhost-user transports, QEMU's built-in user networking
(libslirp) and Debian's passt, both directions.

The test guest (crates/slipway-testkit, built by its `guest-image`
binary: Debian's cloud kernel, busybox and iperf3 in an initramfs) boots
under QEMU TCG with one virtio-net NIC on the path measured; it takes a
DHCP lease from the stack and runs `iperf3 -c GATEWAY` (guest to host,
"up") and `iperf3 -c GATEWAY -R` (host to guest, "down") against an
iperf3 server on the private namespace's loopback, which every stack
reaches through its gateway mapping (10.0.2.2 for slipway and libslirp,
the copied default gateway for passt).

After the two runs the guest pings its gateway, each echo request sent
as soon as the last answer is in (`ping -A`, 2000 of them): the median
and 99th percentile of the round trip are the path's request/response
latency (through the device, the stack and the stack's ping socket to
the private namespace's loopback, and back). The private namespace lets
every group open ping sockets (passt serves as nobody).

Under TCG the guest's one emulated CPU bounds throughput, so the figure
that tells the stacks apart is CPU time per GiB moved, read from
/proc/PID/stat (utime + stime) when the guest prints its marker before
and after each iperf3 run:
- stack: the stack's processes (slipway, passt; with their children).
  libslirp runs inside QEMU, on QEMU's main-loop thread, which also runs
  the virtio-net device model: its "stack" figure is that thread's time.
- data path: the stack plus every QEMU thread but the vCPU's ("CPU n/TCG"),
  i.e. all host work between the guest's rings and the host socket: the
  figure comparable across every path (vhost-user moves the device model
  out of QEMU into slipway).
- vCPU: QEMU's emulated CPU thread (the guest's own work, for reference).

Every path runs with the same machine: 256 MiB of memfd-backed, shared
guest memory (vhost-user needs it), `virtio-net-pci,vectors=0` (INTx:
QEMU 7.2 under TCG crashes starting vhost with MSI-X; used for all paths
alike). MTU is each stack's default unless the path says otherwise
(slipway and libslirp 1500, passt 65520), with 65520 variants of slipway's
stream and 1500 of passt's for like-for-like ratios.

Isolation is bench.py's (imported, not copied): the script re-executes
itself as PID 1 of new network, PID and mount namespaces whose only way
out is a veth into a dead-end namespace; every process ends with it.
passt (as root it serves as `nobody`) copies that namespace's address and
routes and maps its gateway to the private loopback.

Each figure is the median over --rounds rounds; within a round every path
runs once (interleaved), so a load change on the machine hits all alike,
in the order given on even rounds and in reverse on odd ones, so that
over an even number of rounds no path always runs first.
The load average before and after is recorded. Not a test: nothing is
asserted.

Two ways to hold the guest's speed still, which otherwise moves CPU per
GiB with it (a slow TCG round makes every stack do less per wake-up):
- --pin VCPU:HOST puts QEMU's vCPU thread alone on the CPUs VCPU and
  everything else (the stack, QEMU's other threads, iperf3's server) on
  HOST, so the guest never waits for a CPU the host side holds, nor the
  host side for the guest's.
- --rate G has the guest's iperf3 offer G Gbit/s (`-b`, both ways)
  rather than all it can: below every path's ceiling, each path moves
  the same bytes at the same pace, and CPU per GiB compares the work
  each does for them.

--perf DIR records the stack (`perf record -g`) during each iperf3 run
and splits each profile by what the stack was doing (bench/perf_where.py:
each system call, interrupts taken in user mode, its own code, libc), in
CPU seconds per GiB: where two paths differ, and what no path can avoid
(the host socket's reads).

Usage: bench/vm.sh [--seconds N] [--rounds N] [--paths a,b] [--out DIR]
                   [--baseline OTHER_SLIPWAY] [--pin [VCPU:HOST]] [--rate G]
                   [--perf DIR]
"""

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import bench
import perf_where

IPERF_PORT = 15211
GUEST_MEM = "256M"
NIC = "virtio-net-pci,netdev=n0,vectors=0"
BOOT_TIMEOUT = 180.0

# name: (stack, transport, MTU or None for the stack's default, label)
PATHS = {
    "stream": ("slipway", "stream", 1500, "slipway stream (MTU 1500)"),
    "stream-65520": ("slipway", "stream", 65520, "slipway stream (MTU 65520)"),
    "dgram": ("slipway", "dgram", 1500, "slipway dgram (MTU 1500)"),
    "vhost-user": ("slipway", "vhost-user", 1500, "slipway vhost-user (MTU 1500, TSO)"),
    "libslirp": ("libslirp", "user", None, "QEMU -netdev user (libslirp, MTU 1500)"),
    "passt": ("passt", "stream", None, "passt stream (its default MTU 65520)"),
    "passt-1500": ("passt", "stream", 1500, "passt stream (MTU 1500)"),
    # With --baseline: another slipway binary, for before/after figures.
    "vhost-user-before": ("baseline", "vhost-user", 1500,
                          "slipway vhost-user, --baseline binary (MTU 1500, TSO)"),
    "stream-before": ("baseline", "stream", 1500, "slipway stream, --baseline binary (MTU 1500)"),
    "stream-65520-before": ("baseline", "stream", 65520,
                            "slipway stream, --baseline binary (MTU 65520)"),
    "dgram-before": ("baseline", "dgram", 1500, "slipway dgram, --baseline binary (MTU 1500)"),
}
WAYS = ["up", "down"]
# (label, numerator path, denominator path, the goal for the
# data-path CPU ratio or None)
RATIOS = [
    ("vhost-user / stream", "vhost-user", "stream", 0.5),
    ("stream / passt, MTU 1500", "stream", "passt-1500", 1.0),
    ("stream / passt, MTU 65520", "stream-65520", "passt", 1.0),
    ("dgram / stream", "dgram", "stream", None),
    ("stream / libslirp", "stream", "libslirp", None),
    ("vhost-user / libslirp", "vhost-user", "libslirp", None),
    ("vhost-user / passt", "vhost-user", "passt", None),
    ("vhost-user / its --baseline", "vhost-user", "vhost-user-before", None),
    ("stream / its --baseline", "stream", "stream-before", None),
    ("stream MTU 65520 / its --baseline", "stream-65520", "stream-65520-before", None),
    ("dgram / its --baseline", "dgram", "dgram-before", None),
]
# Chart series: each way's label and colour.
SERIES = {"up": ("guest to host (up)", "#1f77b4"), "down": ("host to guest (down)", "#ff7f0e")}
COLOURS = {label: colour for label, colour in SERIES.values()}

GUEST_SCRIPT = """\
dhcp eth0 || exit 1
result devmtu "$(cat /sys/class/net/eth0/mtu)"
gw=$(ip route | awk '/^default/ {{ print $3; exit }}')
for way in up down; do
    flag=; [ $way = down ] && flag=-R
    ready $way
    iperf3 -c "$gw" -p {port} -t {seconds} -f k --connect-timeout 5000 {rate}$flag > /tmp/$way.txt 2>&1
    result $way "$(grep receiver /tmp/$way.txt | tr -s ' ' | tail -n 1)"
done
ready rr
ping -A -c {echoes} -W 2 -w 60 "$gw" 2>/dev/null \
    | awk -F 'time=' 'NF > 1 {{ split($2, t, " "); printf "%d\\n", t[1] * 1000 }}' \
    | sort -n > /tmp/rr.txt
n=$(wc -l < /tmp/rr.txt)
if [ "$n" -gt 0 ]; then
    result rr "n=$n p50=$(sed -n "$((n / 2 + 1))p" /tmp/rr.txt) p99=$(sed -n "$((n * 99 / 100 + 1))p" /tmp/rr.txt)"
else
    result rr "n=0"
fi
"""
# Echo requests of the request/response figure: each sent as soon as the
# last answer is in (`ping -A`), so one is in flight at a time.
RR_ECHOES = 2000
# "n=2000 p50=412 p99=1630": echoes answered, and the round trip's median
# and 99th percentile in microseconds.
RR_RESULT = re.compile(r"n=(\d+)(?: p50=(\d+) p99=(\d+))?$")
# "[  5]   0.00-5.00   sec  2.66 GBytes  22814665 Kbits/sec   receiver"
RECEIVER = re.compile(r"([\d.]+)-([\d.]+) sec .* ([\d.]+) Kbits/sec")


def log(msg):
    bench.log(msg)


def thread_cpu(pid):
    """{tid: (comm, CPU seconds)} of every thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


class Sample:
    """CPU seconds at one moment: the stack's processes, QEMU's vCPU
    threads and QEMU's other threads."""

    def __init__(self, run):
        self.stack = 0.0
        for pid in run.stack_pids():
            try:
                self.stack += bench.cpu_seconds(pid)
            except OSError:
                pass
        self.vcpu = self.qemu_other = 0.0
        vcpus = 0
        for tid, (comm, cpu) in thread_cpu(run.qemu.pid).items():
            # QEMU names its threads with -name debug-threads=on.
            if comm.startswith("CPU "):
                self.vcpu += cpu
                vcpus += 1
            elif run.stack == "libslirp" and tid == run.qemu.pid:
                # libslirp runs on QEMU's main loop: that thread is its stack.
                self.stack += cpu
            else:
                self.qemu_other += cpu
        if not vcpus:
            raise RuntimeError("no QEMU vCPU thread found (named \"CPU n/TCG\")")


class Run:
    """One guest boot on one path: the stack, QEMU and the iperf3 server."""

    def __init__(self, name, args):
        self.name = name
        self.stack, self.transport, self.mtu, _ = PATHS[name]
        self.args = args
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="slipway-vmbench-")
        # passt serves as nobody: it creates its socket here.
        os.chmod(self.dir, 0o777)
        self.stack_proc = None
        self.qemu = None
        # --perf: the running `perf record`, and each way's profile.
        self.perf = None
        self.profiles = {}

    def stack_pids(self):
        if not self.stack_proc:
            return []
        return [self.stack_proc.pid] + bench.descendants(self.stack_proc.pid)

    def _spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def _start_stack(self):
        """Starts the stack; returns QEMU's -netdev."""
        sock = os.path.join(self.dir, "net.sock")
        stream = f"stream,id=n0,server=off,addr.type=unix,addr.path={sock}"
        if self.stack == "libslirp":
            return "user,id=n0"
        err = open(os.path.join(self.dir, "stack.log"), "w")
        if self.stack == "passt":
            cmd = ["passt", "-f", "-q", "-1", "--socket", sock]
            if self.mtu:
                cmd += ["--mtu", str(self.mtu)]
            netdev = stream
        else:
            binary = self.args.baseline if self.stack == "baseline" else self.args.slipway
            cmd = [binary, "user", "--mtu", str(self.mtu)]
            if self.transport == "stream":
                cmd += ["--socket", sock]
                netdev = stream
            elif self.transport == "dgram":
                # QEMU (root) makes its datagram socket root's: the stack
                # must stay uid 0 to send to it (still sandboxed, no caps).
                cmd += ["--dgram", sock, "--runas", "root"]
                vm = os.path.join(self.dir, "vm.sock")
                netdev = (f"dgram,id=n0,local.type=unix,local.path={vm},"
                          f"remote.type=unix,remote.path={sock}")
            else:
                cmd += ["--vhost-user", "--socket", sock]
                netdev = "vhost-user,id=n0,chardev=c0"
        self.stack_proc = self._spawn(cmd, stdout=err, stderr=err)
        err.close()
        bench.wait_for(f"{self.name}'s socket", lambda: os.path.exists(sock)
                       or self.stack_proc.poll() is not None)
        if self.stack_proc.poll() is not None:
            raise RuntimeError(f"{self.name}: the stack exited: {self.stack_log()}")
        return netdev

    def stack_log(self):
        try:
            with open(os.path.join(self.dir, "stack.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def measure(self):
        """Boots the guest and returns {way: {bps, bytes, stack, datapath,
        vcpu (CPU s per GiB)}, "mtu": the guest's MTU}."""
        server = self._spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.wait_for("iperf3 server", lambda: bench.listening(IPERF_PORT))
        netdev = self._start_stack()
        script = os.path.join(self.dir, "test.sh")
        with open(script, "w") as f:
            rate = f"-b {self.args.rate}G " if self.args.rate else ""
            f.write(GUEST_SCRIPT.format(port=IPERF_PORT, seconds=self.args.seconds, rate=rate,
                                        echoes=RR_ECHOES))
        initrd = os.path.join(self.dir, "initrd.cpio")
        out = subprocess.run([self.args.guest_image, script, initrd], capture_output=True,
                             text=True, check=True).stdout
        info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", GUEST_MEM, "-nographic",
               "-no-reboot", "-name", "vmbench,debug-threads=on",
               "-kernel", info["kernel"], "-initrd", initrd,
               "-append", info["append"],
               "-object", f"memory-backend-memfd,id=mem,size={GUEST_MEM},share=on",
               "-machine", "memory-backend=mem", "-netdev", netdev, "-device", NIC]
        if self.transport == "vhost-user":
            cmd += ["-chardev", f"socket,id=c0,path={os.path.join(self.dir, 'net.sock')}"]
        self.qemu = self._spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if self.args.pin_vcpu:
            self._pin_vcpu()
        return self._follow()

    def _pin_vcpu(self):
        """Moves QEMU's vCPU threads onto the --pin VCPU list (QEMU and
        its other threads inherited the HOST list from this script)."""
        def vcpus():
            if self.qemu.poll() is not None:
                raise RuntimeError(f"{self.name}: QEMU exited at start")
            return [tid for tid, (comm, _) in thread_cpu(self.qemu.pid).items()
                    if comm.startswith("CPU ")]
        bench.wait_for("QEMU's vCPU thread", vcpus)
        for tid in vcpus():
            os.sched_setaffinity(tid, self.args.pin_vcpu)

    def _follow(self):
        result = {}
        starts = {}
        console = []
        buf = b""
        deadline = time.monotonic() + BOOT_TIMEOUT + 2 * (self.args.seconds + 30)
        fd = self.qemu.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: guest timed out\n" + "".join(console[-30:]))
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                console.append(line + "\n")
                m = re.match(r"SLIPWAY-READY (\w+)$", line)
                if m:
                    starts[m.group(1)] = Sample(self)
                    self._profile_start(m.group(1))
                    continue
                m = re.match(r"SLIPWAY-RESULT (\w+)=(.*)$", line)
                if m and m.group(1) == "rr":
                    self._profile_stop()
                    result["rr"] = self._round_trips(m.group(2))
                elif m and m.group(1) in starts:
                    end = Sample(self)
                    self._profile_stop()
                    result[m.group(1)] = self._figures(m.group(1), m.group(2),
                                                       starts[m.group(1)], end, console)
                elif m and m.group(1) == "devmtu":
                    result["mtu"] = int(m.group(2))
                if line.startswith("SLIPWAY-DONE"):
                    if line != "SLIPWAY-DONE status=0":
                        raise RuntimeError(f"{self.name}: guest script failed\n"
                                           + "".join(console[-30:]) + self.stack_log())
                    if self.profiles:
                        result["perf"] = self.profiles
                    return result
        raise RuntimeError(f"{self.name}: QEMU ended early\n" + "".join(console[-30:])
                           + self.stack_log())

    def _profile_start(self, way):
        """With --perf DIR: `perf record -g` of the stack while the guest's
        iperf3 runs `way`, into DIR/PATH-WAY-N.data (N: the first free).
        libslirp's stack is QEMU's main-loop thread, recorded alone."""
        if not self.args.perf:
            return
        n = 1
        while os.path.exists(os.path.join(self.args.perf, f"{self.name}-{way}-{n}.data")):
            n += 1
        out = os.path.join(self.args.perf, f"{self.name}-{way}-{n}.data")
        target = (["-t", str(self.qemu.pid)] if self.stack == "libslirp"
                  else ["-p", ",".join(str(pid) for pid in self.stack_pids())])
        self.perf = self._spawn(["perf", "record", "-q", "-F", "2000", "-g", "-o", out] + target,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.profiles[way] = out

    def _profile_stop(self):
        if self.perf:
            # perf writes its file out on SIGINT.
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait(timeout=60)
            self.perf = None

    def _round_trips(self, text):
        """The guest's echo round trips: {n, p50, p99 (microseconds)}, or
        None when no echo was answered."""
        m = RR_RESULT.match(text.strip())
        if not m or not int(m.group(1)) or m.group(2) is None:
            log(f"  {self.name}: no echo answered ({text!r})")
            return None
        return {"n": int(m.group(1)), "p50": float(m.group(2)), "p99": float(m.group(3))}

    def _figures(self, way, receiver, start, end, console):
        m = RECEIVER.search(receiver)
        if not m:
            log(f"  {self.name} {way}: iperf3 failed: {receiver!r}")
            return None
        seconds = float(m.group(2)) - float(m.group(1))
        bps = float(m.group(3)) * 1000
        gib = bps / 8 * seconds / 2**30
        if gib <= 0:
            return None
        return {
            "bps": bps,
            "bytes": bps / 8 * seconds,
            "stack": (end.stack - start.stack) / gib,
            "datapath": (end.stack - start.stack + end.qemu_other - start.qemu_other) / gib,
            "vcpu": (end.vcpu - start.vcpu) / gib,
        }

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.qemu and self.qemu.stdout:
            self.qemu.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(name, args):
    log(f"  {name}")
    run = Run(name, args)
    try:
        return run.measure()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"  {name} failed: {e}")
        return None
    finally:
        run.close()


def median_result(runs):
    """Per way and figure, the median over the rounds that produced it."""
    got = [r for r in runs if r]
    if not got:
        return None
    out = {"mtu": bench.median([r.get("mtu") for r in got])}
    rr = [r["rr"] for r in got if r.get("rr")]
    out["rr"] = {k: bench.median([x[k] for x in rr]) for k in rr[0]} if rr else None
    for way in WAYS:
        ways = [r[way] for r in got if r.get(way)]
        out[way] = {k: bench.median([w[k] for w in ways]) for k in ways[0]} if ways else None
    return out


def fig(results, name, way, key):
    r = results.get(name)
    w = r.get(way) if r else None
    return w.get(key) if w else None


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def tables(results, paths):
    """Two markdown tables: the figures per path, and the ratios."""
    lines = ["| path | MTU | Gbit/s up | Gbit/s down | stack CPU s/GiB up | down "
             "| data-path CPU s/GiB up | down | vCPU s/GiB up | down |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in paths:
        r = results.get(name)
        cells = [PATHS[name][3], fmt(r.get("mtu") if r else None, 0)]
        for key, scale in [("bps", 1e-9), ("stack", 1), ("datapath", 1), ("vcpu", 1)]:
            for way in WAYS:
                v = fig(results, name, way, key)
                cells.append(fmt(v * scale if v is not None else None))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| ratio | Gbit/s up | down | stack CPU/GiB up | down "
              "| data-path CPU/GiB up | down | goal (CPU/GiB, both ways) |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for label, a, b, goal in RATIOS:
        if a not in paths or b not in paths:
            continue
        cells = [label]
        met = {"stack": [], "datapath": []}
        for key in ["bps", "stack", "datapath"]:
            for way in WAYS:
                x, y = fig(results, a, way, key), fig(results, b, way, key)
                ratio = x / y if x is not None and y else None
                cells.append(fmt(ratio) + "x" if ratio is not None else "-")
                if key in met and goal is not None and ratio is not None:
                    met[key].append(ratio <= goal)
        verdicts = []
        for key, name in [("stack", "stack"), ("datapath", "data path")]:
            got = met[key]
            verdicts.append(f"{name} " + ("met" if got and all(got) else
                                          ("not met" if got else "-")))
        cells.append(f"<= {goal:g}: " + ", ".join(verdicts) if goal is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| path | echo round trip p50 (us) | p99 (us) | echoes answered |",
              "|---|---:|---:|---:|"]
    for name in paths:
        rr = (results.get(name) or {}).get("rr")
        lines.append(f"| {PATHS[name][3]} | " + (
            f"{rr['p50']:.0f} | {rr['p99']:.0f} | {rr['n']:.0f} |" if rr else "- | - | - |"))
    return "\n".join(lines)


def paired_ratios(runs, paths):
    """A markdown table: for each ratio of the RATIOS list, the stack and
    data-path CPU per GiB of the two paths divided round by round (both
    ran in the same round, so a change of the guest's speed between
    rounds, which moves CPU per GiB with it, hits both alike), and the
    median of those ratios."""
    lines = ["| ratio, round by round | stack CPU/GiB up | down "
             "| data-path CPU/GiB up | down |", "|---|---|---|---|---|"]
    for label, a, b, _goal in RATIOS:
        if a not in paths or b not in paths:
            continue
        cells = [label]
        for key in ["stack", "datapath"]:
            for way in WAYS:
                got = []
                for x, y in zip(runs[a], runs[b]):
                    xv = x and x.get(way) and x[way].get(key)
                    yv = y and y.get(way) and y[way].get(key)
                    if xv is not None and yv:
                        got.append(xv / yv)
                cells.append(" / ".join(f"{v:.2f}" for v in got)
                             + (f" (median {bench.median(got):.2f}x)" if got else "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def charts(results, paths, out_dir):
    groups = [n for n in paths if results.get(n)]
    bench.bar_chart(os.path.join(out_dir, "vm-cpu.svg"),
                    "VM data path: host CPU seconds per GiB (stack + QEMU's non-vCPU "
                    "threads; lower is better)",
                    groups, {SERIES[w][0]: [fig(results, n, w, "datapath") for n in groups]
                             for w in WAYS},
                    COLOURS)
    bench.bar_chart(os.path.join(out_dir, "vm-gbps.svg"),
                    "VM data path under TCG: iperf3 Gbit/s (higher is better)",
                    groups, {SERIES[w][0]: [(fig(results, n, w, "bps") or 0) * 1e-9 or None
                                            for n in groups] for w in WAYS}, COLOURS)


def where(runs, paths):
    """--perf: each profile's parts (perf_where.py), in CPU s per GiB of
    its own round's stack figure for the iperf3 runs, as shares for the
    echoes."""
    out = ["# Where each path's stack CPU goes (bench/perf_where.py)", ""]
    for p in paths:
        for i, run in enumerate(runs[p]):
            run = run or {}
            for key in WAYS + ["rr"]:
                data = run.get("perf", {}).get(key)
                figures = run.get(key)
                if not data or not figures or not os.path.exists(data):
                    continue
                if key == "rr":
                    # Echoes move no bytes: shares of the samples only.
                    title = (f"echo round trips, round {i + 1}: p50 {figures['p50']:.0f} us, "
                             f"p99 {figures['p99']:.0f} us")
                    per_gib = None
                else:
                    title = (f"{key}, round {i + 1}: {figures['bps'] / 1e9:.2f} Gbit/s, "
                             f"stack {figures['stack']:.3f} CPU s/GiB")
                    per_gib = figures["stack"]
                out += [f"## {p}, {title} ({os.path.basename(data)})", "",
                        perf_where.table(perf_where.parts(data), per_gib), ""]
    return "\n".join(out)


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slipway", required=True, help="the slipway binary (release build)")
    ap.add_argument("--guest-image", required=True,
                    help="slipway-testkit's guest-image binary (builds the test guest)")
    ap.add_argument("--baseline", help="another slipway binary: adds the paths "
                    "vhost-user-before and stream-before")
    ap.add_argument("--seconds", type=int, default=8, help="length of each iperf3 run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of every path; medians reported")
    ap.add_argument("--paths", help="default: all of them (the -before ones with --baseline)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--pin", nargs="?", const="1:0", metavar="VCPU:HOST",
                    help="pin QEMU's vCPU thread to CPU list VCPU and everything else "
                    "(stack, QEMU's other threads, iperf3) to HOST (default 1:0)")
    ap.add_argument("--rate", type=float, metavar="GBITS",
                    help="offered rate of the guest's iperf3 (-b), both ways; default: "
                    "all it can")
    ap.add_argument("--perf", metavar="DIR",
                    help="perf record -g the stack during each iperf3 run (DIR/PATH-WAY-N.data) "
                    "and write DIR/where.md: each profile split by system call, interrupts "
                    "and user code (bench/perf_where.py), in CPU s/GiB. The sampling itself "
                    "costs the stack some CPU: compare the parts, not these runs' totals "
                    "with runs made without it")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (see the header of this script)")
    if args.rate is not None and not 0 < args.rate <= 100:
        sys.exit(f"--rate {args.rate}: want Gbit/s above 0 and at most 100")
    args.pin_vcpu = None
    if args.pin:
        vcpu, _, host = args.pin.partition(":")
        try:
            pin = [bench.parse_cpus(vcpu), bench.parse_cpus(host)]
        except ValueError:
            sys.exit(f"--pin {args.pin!r}: want VCPU:HOST, CPU lists such as 1:0 or 3:0-2")
        if not all(pin) or pin[0] & pin[1] or not (pin[0] | pin[1]) <= os.sched_getaffinity(0):
            sys.exit(f"--pin {args.pin!r}: two disjoint CPU lists, of the CPUs this script "
                     f"may run on: {sorted(os.sched_getaffinity(0))}")
        args.pin_vcpu, args.pin_host = pin
    default = [p for p in PATHS if args.baseline or PATHS[p][0] != "baseline"]
    paths = [p for p in (args.paths or ",".join(default)).split(",") if p]
    for p in paths:
        if p not in PATHS:
            sys.exit(f"unknown path {p!r}: choose from {', '.join(PATHS)}")
    if args.perf:
        args.perf = os.path.abspath(args.perf)
        os.makedirs(args.perf, exist_ok=True)
    for tool in ["iperf3", "unshare", "ip", "mount", "qemu-system-x86_64"] + \
            (["perf"] if args.perf else []) + \
            (["passt"] if any(PATHS[p][0] == "passt" for p in paths) else []):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install iperf3 passt qemu-system-x86 "
                     "util-linux iproute2")
    if any(PATHS[p][0] == "baseline" for p in paths) and not args.baseline:
        sys.exit("the -before paths need --baseline BINARY")
    args.slipway = os.path.abspath(args.slipway)
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
    args.guest_image = os.path.abspath(args.guest_image)
    if not args.inside:
        bench.isolate(__file__)
    if os.getpid() != 1:
        sys.exit("--inside is for the script itself (it must be PID 1 of its own namespaces)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    if args.pin_vcpu:
        # The stack, QEMU and iperf3's server inherit this.
        os.sched_setaffinity(0, args.pin_host)
    load_before = load_average()
    net = bench.PrivateNetwork()
    # The guests' echo requests to the gateway leave through the stacks'
    # ping sockets (passt serves as nobody): allow every group, in this
    # private network namespace only.
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("0 2147483647")
    runs = {p: [] for p in paths}
    try:
        before = net.outside_frames()
        for r in range(args.rounds):
            log(f"round {r + 1} of {args.rounds} (load average {load_average()})")
            # Odd rounds run the paths in reverse: a path's place in the
            # round moved its figures by about 5 % in one paired run
            # (results/vm-availiter-2026-12-07), so over an even number
            # of rounds each pair of paths has each order equally often.
            for p in (paths if r % 2 == 0 else paths[::-1]):
                runs[p].append(measure(p, args))
        log(f"frames that reached the outside namespace during the run: "
            f"{net.outside_frames() - before} (neighbour discovery; none leaves it)")
    finally:
        net.close()
    load_after = load_average()
    results = {p: median_result(runs[p]) for p in paths}
    text = tables(results, paths)
    paired = paired_ratios(runs, paths)
    if paired:
        text += "\n\n" + paired
    print(text)
    print(f"\nload average before {load_before}, after {load_after}; "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.seconds} s per way"
          + (f", offered {args.rate:g} Gbit/s" if args.rate else "")
          + (f", pinned {args.pin} (vCPU:host)" if args.pin else ""))
    os.makedirs(args.out, exist_ok=True)
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "load_average": {"before": load_before, "after": load_after},
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "rate_gbits": args.rate,
        "pin": args.pin,
        "results": results,
        "runs": runs,
        "table": text,
    }
    bench.write_atomic(os.path.join(args.out, "vm.json"), json.dumps(doc, indent=2) + "\n")
    charts(results, paths, args.out)
    if args.perf:
        bench.write_atomic(os.path.join(args.perf, "where.md"), where(runs, paths) + "\n")
        log(f"wrote {args.perf}/where.md")
    log(f"wrote {args.out}/vm.json, vm-cpu.svg and vm-gbps.svg")


if __name__ == "__main__":
    main()
