#!/bin/sh
# Builds slipway (release) and the test guest's image tool, then runs the
# VM data-path benchmark (bench/vm.py: the test guest under QEMU TCG with
# iperf3 through slipway's stream, dgram and vhost-user paths, QEMU's
# libslirp and passt). Needs root and:
#   apt-get install iperf3 passt qemu-system-x86 busybox-static util-linux iproute2 python3
# vm.py runs everything in bench.py's private namespaces (see its header).
# Extra arguments go to vm.py (--seconds N, --rounds N, --paths a,b, --out DIR,
# --pin [VCPU:HOST], --rate G, --perf DIR; --perf needs linux-perf). It also
# reports each path's request/response latency (the guest pings its gateway).
set -e
cd "$(dirname "$0")/.."
cargo build --release -p slipway
cargo build -p slipway-testkit --bin guest-image
target=${CARGO_TARGET_DIR:-target}
exec python3 bench/vm.py --slipway "$target/release/slipway" \
    --guest-image "$target/debug/guest-image" "$@"
