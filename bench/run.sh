#!/bin/sh
# Builds slipway (release) and runs the container networking benchmark
# against slirp4netns and pasta. Needs root and:
#   apt-get install iperf3 slirp4netns passt util-linux python3
# Extra arguments go to bench.py (--seconds N, --stacks a,b, --out DIR).
set -e
cd "$(dirname "$0")/.."
cargo build --release -p slipway
target=${CARGO_TARGET_DIR:-target}
exec python3 bench/bench.py --slipway "$target/release/slipway" "$@"
