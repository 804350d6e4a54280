#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time on STABLE Rust;
# any crash (panic, abort, timeout, memory blow-up) fails the script.
#
# Stable works because the targets are built with `--sanitizer none`: no
# `-Zsanitizer`, only libFuzzer's coverage instrumentation, which rustc
# enables with stable `-C` flags. Rust's own checks (bounds, overflow with
# `--debug-assertions`, panics) are what finds bugs here; see
# docs/fuzzing.md.
#
#   FUZZ_SECONDS   seconds per target (default 40)
#   FUZZ_TARGETS   space-separated subset of targets (default: all)
#
# The growing corpus stays in fuzz/corpus/<target> (not in git) between runs;
# the small seeds in fuzz/seeds/<target> are in git. A crashing input is
# saved in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

cargo_fuzz_version=0.13.2
secs=${FUZZ_SECONDS:-40}
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi
cargo fmt --check
cargo fuzz build --sanitizer none --debug-assertions
bin_dir="${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release"

failed=()
for target in ${FUZZ_TARGETS:-$(cargo fuzz list)}; do
    printf -- '-- fuzzing %s for %s s\n' "$target" "$secs"
    mkdir -p "corpus/$target" "artifacts/$target"
    cmd=("$bin_dir/$target" "corpus/$target" "seeds/$target"
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="artifacts/$target/")
    if [ "$target" = stack_frames ]; then
        # The stack opens real host sockets toward addresses the fuzzer
        # invents: give it a network namespace with nothing but loopback.
        cmd=(unshare -Urn sh -c 'ip link set lo up && exec "$@"' sh "${cmd[@]}")
    fi
    if ! "${cmd[@]}" 2>"artifacts/$target/log"; then
        tail -n 60 "artifacts/$target/log"
        failed+=("$target")
    fi
    grep -E '^stat::number_of_executed_units|^Done' "artifacts/$target/log" || true
done
if ((${#failed[@]})); then
    printf 'fuzz: crashes in: %s (inputs in fuzz/artifacts/)\n' "${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash"
