#!/usr/bin/env bash
# The one test command. On a fresh Debian 12 machine, as root: installs the
# Debian packages in scripts/test-packages.txt that are missing, checks the
# Rust toolchain, then runs formatting, lint, the harness self-test (which
# builds the test guest) and every test of the workspace. Every step runs even
# if an earlier one failed; the exit status is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
section() { printf '\n==== %s ====\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

section "Debian packages (scripts/test-packages.txt)"
packages=()
while read -r line; do
    line=${line%%#*}
    for word in $line; do packages+=("$word"); done
done < scripts/test-packages.txt
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "missing: ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || die "these Debian packages are missing and installing them needs root: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Open vSwitch's (and OVN's: ovn-central, ovn-host) postinst starts the
    # system's daemons (invoke-rc.d
    # without systemd, deb-systemd-invoke with it); the tests run their own
    # in their own namespaces and the machine's must never run. Both honour
    # policy-rc.d: deny those services for the install unless the machine
    # already has a policy of its own.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\ncase "$1" in openvswitch-switch*|ovs-*|ovsdb-*|ovn-*) exit 101;; esac\nexit 0\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    # QEMU's packages must be of one version (qemu-utils Breaks an older
    # qemu-system-common). A machine may come with a newer qemu-utils than
    # its sources offer (a backport installed without the backports source):
    # then it is brought to the version of the QEMU installed with it, the
    # one the tests are written against.
    downgrade=()
    if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
        qemu=$(apt-cache policy qemu-system-x86 | awk '$1 == "Candidate:" { print $2 }')
        utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
        if [ -n "$utils" ] && [ -n "$qemu" ] && [ "$utils" != "$qemu" ]; then
            echo "qemu-utils $utils is installed; taking $qemu, the version of qemu-system-x86"
            missing+=("qemu-utils=$qemu")
            downgrade=(--allow-downgrades)
        fi
    fi
    apt-get install -y -q --no-install-recommends "${downgrade[@]}" "${missing[@]}" || { [ -z "$own_policy" ] || rm -f "$policy"; die "apt-get install failed"; }
    [ -z "$own_policy" ] || rm -f "$policy"
else
    echo "all ${#packages[@]} packages installed"
fi

section "Rust toolchain"
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (1.82 or later, e.g. from https://rustup.rs) and rerun"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || die "cargo fmt / cargo clippy missing and no rustup to add them"
    rustup component add rustfmt clippy
fi
cargo --version
rustc --version

failed=()
step() {
    local name=$1
    shift
    section "$name"
    local t=$SECONDS
    if "$@"; then
        echo "---- $name: ok ($((SECONDS - t)) s)"
    else
        echo "---- $name: FAILED ($((SECONDS - t)) s)"
        failed+=("$name")
    fi
}

step "cargo fmt --check" cargo fmt --all --check
# Test steps run under no-leftovers (slipway-testkit): a process a test
# started and left running fails the step, named, and is killed.
cargo build -q -p slipway-testkit --bin no-leftovers
no_leftovers="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/no-leftovers"
[ -x "$no_leftovers" ] || die "no-leftovers was not built at $no_leftovers"
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
# The import rule: no module import cycle in any crate except a module and
# its own child (scripts/check-modules.py; its self-test first).
step "module import cycles" sh -c 'scripts/check-modules.py --self-test && scripts/check-modules.py'
# The benchmarks' profile accounting (bench/perf_where.py) sorts stacks as
# it says; the benchmarks themselves are not tests.
step "bench accounting self-test" python3 bench/perf_where.py --self-test
# Builds (or reuses) the test guest and proves the harness against QEMU's own
# user-mode stack before the product's end-to-end tests rely on it.
step "test guest + harness self-test" "$no_leftovers" cargo test -p slipway-testkit
step "cargo test --workspace" "$no_leftovers" cargo test --workspace --exclude slipway-testkit --no-fail-fast
# Every fuzz target for a bounded time on stable Rust (fuzz/, docs/fuzzing.md).
step "fuzz (40 s per target)" scripts/fuzz.sh

section "summary ($((SECONDS - start)) s)"
if ((${#failed[@]})); then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all steps passed"
