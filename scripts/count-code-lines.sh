#!/bin/sh
# Rust code lines added and removed between revisions, as issue 13 counts
# them: lines of .rs files that are neither blank nor `//` comments
# (`///` and `//!` docs included among the comments).
#
#   scripts/count-code-lines.sh 7f57b71..HEAD            whole range
#   scripts/count-code-lines.sh 7f57b71..HEAD crates/x   only under crates/x
set -eu
range=${1:?usage: count-code-lines.sh REV..REV [PATH...]}
shift
git diff --no-color -U0 "$range" -- "$@" | awk '
/^diff --git / { rs = ($NF ~ /\.rs$/); next }
/^(\+\+\+|---) / { next }
rs && /^[+-]/ {
    s = substr($0, 2); gsub(/^[ \t]+/, "", s)
    if (s == "" || s ~ /^\/\//) next
    if (substr($0, 1, 1) == "+") a++; else d++
}
END { printf "+%d -%d net %d\n", a, d, a - d }'
