#!/bin/sh
# Builds slipway (release) and runs the container networking benchmark
# against slirp4netns and pasta. Needs root and:
#   apt-get install iperf3 sockperf slirp4netns passt util-linux iproute2 python3
# bench.py runs everything in its own network, PID and mount namespaces:
# a private network whose only way out is a veth into a second namespace
# it creates (nothing leaves the machine), servers on that private
# loopback, and every process it starts ends with it (see its header).
# Extra arguments go to bench.py (--seconds N, --rounds N, --stacks a,b,
# --metrics tcp,udp,udp_search,rr,conn,udp_gso, --baseline OTHER_SLIPWAY, --out DIR).
set -e
cd "$(dirname "$0")/.."
cargo build --release -p slipway
target=${CARGO_TARGET_DIR:-target}
exec python3 bench/bench.py --slipway "$target/release/slipway" "$@"
