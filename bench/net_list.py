#!/usr/bin/env python3
"""net-list through libvirt's protocol (virsh) against slipway's own CLI.

Starts `slipway --root DIR daemon` (in a user and network namespace of its
own, re-executing this script under `unshare -Urn`), defines --networks
networks (none started: nothing touches links), then times, interleaved,
`--runs` runs of

  virsh -c 'network:///system?socket=DIR/run/libvirt/virtnetworkd-sock' net-list --all
  slipway --root DIR net-list --all          (the JSON-lines daemon API)

checks that both print the same table, and prints the median and 90th
percentile wall time of each with the ratio virsh/slipway. Both are whole
commands (process start, connect, handshake, list, exit), as a user or a
script sees them. Asserts nothing about speed.

  bench/net_list.py --slipway target/release/slipway [--runs 200] [--networks 20]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t, out


RPC_LOOP = """
import sys, time, libvirt
conn = libvirt.open(sys.argv[1])
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    conn.listAllNetworks()
    u = time.perf_counter()
    for n in conn.listAllNetworks():
        n.isActive(); n.autostart(); n.isPersistent()
    v = time.perf_counter()
    conn.getHostname()
    print(u - t, v - u, time.perf_counter() - v)
"""


def json_loop(path, runs):
    import json
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rwb")
    req = json.dumps({"op": "list", "filter": {"active": True, "inactive": True, "persistent": False,
                      "transient": False, "autostart": False, "no_autostart": False}}).encode() + b"\n"
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f.write(req)
        f.flush()
        if b'"ok"' not in f.readline():
            sys.exit("JSON list failed")
        out.append(time.perf_counter() - t)
    s.close()
    return out


def inner(args):
    root = tempfile.mkdtemp(prefix="slipway-bench-netlist-")
    daemon = None
    try:
        sw = [args.slipway, "--root", root]
        for i in range(args.networks):
            path = os.path.join(root, "n%d.xml" % i)
            with open(path, "w") as f:
                f.write(
                    "<network><name>bench%02d</name><bridge name='vb%d'/>"
                    "<ip address='10.%d.%d.1' prefix='24'/></network>" % (i, i, 100 + i // 200, i % 200)
                )
            subprocess.run(sw + ["net-define", path], check=True, capture_output=True)
        daemon = subprocess.Popen(sw + ["daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = os.path.join(root, "run/libvirt/virtnetworkd-sock")
        end = time.time() + 30
        while not os.path.exists(sock) or not os.path.exists(os.path.join(root, "run/slipway/slipway-sock")):
            if time.time() > end:
                sys.exit("the daemon did not come up")
            time.sleep(0.05)
        virsh = ["virsh", "-c", "network:///system?socket=" + sock, "net-list", "--all"]
        own = sw + ["net-list", "--all"]
        _, a = timed(virsh)
        _, b = timed(own)
        if a != b:
            sys.exit("outputs differ:\n%s\n%s" % (a, b))
        tv, ts = [], []
        for _ in range(args.runs):
            tv.append(timed(virsh)[0])
            ts.append(timed(own)[0])
        # virsh's own fixed cost: the same command on its built-in test
        # driver (no daemon, no socket).
        tt = [timed(["virsh", "-c", "test:///default", "net-list", "--all"])[0] for _ in range(args.runs)]
        # The protocols without process start, on one open connection
        # through python3-libvirt: one list call (what a JSON `list` request
        # does), what virsh's net-list asks (list all, then
        # active/autostart/persistent of each network), and a call that
        # reads nothing (the round trip itself); against one `list`
        # request line of the JSON API.
        rpc = subprocess.run(["/usr/bin/python3", "-c", RPC_LOOP, "network:///system?socket=" + sock, str(args.runs)],
                             capture_output=True, text=True, check=True).stdout.split()
        tl = [float(x) for x in rpc[0::3]]
        tr = [float(x) for x in rpc[1::3]]
        th = [float(x) for x in rpc[2::3]]
        tj = json_loop(os.path.join(root, "run/slipway/slipway-sock"), args.runs)
        def row(name, xs):
            xs = sorted(xs)
            p90 = xs[int(0.9 * (len(xs) - 1))]
            return "| %s | %.2f | %.2f |" % (name, statistics.median(xs) * 1e3, p90 * 1e3)
        print("net-list --all of %d networks, %d runs each (interleaved)\n" % (args.networks, args.runs))
        print("| command | median (ms) | p90 (ms) |")
        print("|---|---|---|")
        print(row("virsh over libvirt RPC", tv))
        print(row("slipway net-list (JSON API)", ts))
        print(row("virsh -c test:///default (virsh alone, no daemon)", tt))
        print(row("virsh's call sequence over an open libvirt connection (python3-libvirt, %d calls)"
                  % (1 + 3 * args.networks), tr))
        print(row("one CONNECT_LIST_ALL_NETWORKS call over an open libvirt connection", tl))
        print(row("one `list` request over an open JSON connection", tj))
        print(row("one CONNECT_GET_HOSTNAME call (a round trip, no network read)", th))
        m = statistics.median
        print("\nratio virsh/slipway, whole commands (medians): %.2fx" % (m(tv) / m(ts)))
        print("ratio without virsh's own start-up ((virsh - test driver)/slipway): %.2fx" % ((m(tv) - m(tt)) / m(ts)))
        print("ratio of the protocols on an open connection, one list call each (libvirt RPC/JSON): %.2fx"
              % (m(tl) / m(tj)))
        print("ratio on an open connection, virsh's %d calls against one JSON list: %.2fx"
              % (1 + 3 * args.networks, m(tr) / m(tj)))
    finally:
        if daemon:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slipway", required=True, help="the slipway binary")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.slipway = os.path.abspath(args.slipway)
    if args.inner:
        inner(args)
        return
    cmd = ["unshare", "-Urn", sys.executable, os.path.abspath(__file__), "--inner",
           "--slipway", args.slipway, "--runs", str(args.runs), "--networks", str(args.networks)]
    sys.exit(subprocess.run(cmd).returncode)


if __name__ == "__main__":
    main()
