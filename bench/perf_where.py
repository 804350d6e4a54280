#!/usr/bin/env python3
"""Where a stack's CPU goes, by what it was doing: each sample of a
`perf record -g` of the stack's process counted once, under the system
call it was in (the outermost one on its kernel stack), an interrupt
taken in user mode, the stack's own code, libc, or other kernel work.

A flat profile cannot say this: the kernel's receive work shows under
`tcp_recvmsg` when the stack reads, under softirqs when a packet lands
while it runs, and the TCP work of a peer on the same CPU (loopback's
sender, its pacing timer) lands in the stack's context too. Counting
each sample once under its outermost frame splits the stack's CPU into
parts that add up, so two stacks (or two paths of one stack) can be
compared part by part, in CPU seconds per GiB when the run's figure is
given.

Used by bench/vm.py --perf; standalone:

    bench/perf_where.py FILE.data [CPU_SECONDS_PER_GIB]
    bench/perf_where.py --self-test

prints each part's share of the samples (and, given the figure, its
CPU seconds per GiB). Needs `perf` (linux-perf) and a profile with
call chains (`-g`). --self-test checks the sorting on stacks written
out here (scripts/test.sh runs it).
"""

import collections
import re
import subprocess
import sys

# The frame inside `do_syscall_64` is the system call's entry point
# (`__x64_sys_recvfrom`), or on some kernels the helper it is inlined
# into (`__sys_recvmsg`, `do_writev`, `ksys_write`): the name is what
# follows the prefix.
SYSCALL_PREFIX = re.compile(r"^(?:__x64_sys_|__do_sys_|__se_sys_|__sys_|ksys_|do_)")
# Interrupt entries: a sample under one of these and under no system
# call interrupted user code (softirqs run at its exit).
INTERRUPT = ("asm_sysvec_", "asm_common_interrupt", "asm_exc_")
# Work at a system call's edges that belongs to no call in particular.
SYSCALL_EDGES = {
    "syscall_trace_enter": "system calls: seccomp filter and tracing at entry",
    "exit_to_user_mode_loop": "system calls: rescheduling and signals at return",
    "syscall_exit_to_user_mode": "system calls: rescheduling and signals at return",
}
LIBC = ("libc.so", "ld-linux", "[vdso]")


def frames(block):
    """(symbol, dso) of each frame of one sample, innermost first."""
    out = []
    for line in block.splitlines()[1:]:
        m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)$", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def part(stack):
    """The part one sample's stack belongs to."""
    syms = [sym for sym, _ in stack]
    if "do_syscall_64" in syms:
        at = syms.index("do_syscall_64")
        inner = [sym.split(".")[0] for sym in reversed(syms[:at])]
        if inner and inner[0] == "x64_sys_call":
            # The dispatch switch: the call is the frame inside it.
            inner = inner[1:]
        if not inner:
            return "system calls: entry and dispatch"
        if inner[0] in SYSCALL_EDGES:
            return SYSCALL_EDGES[inner[0]]
        return f"system call: {SYSCALL_PREFIX.sub('', inner[0])}"
    if any(sym.startswith(INTERRUPT) for sym, _ in stack):
        return "interrupts in user mode (softirqs: peers' packets, timers)"
    if not stack:
        return "unknown"
    sym, dso = stack[0]
    if "kernel" in dso:
        return "other kernel work"
    if any(name in dso for name in LIBC):
        return "libc"
    return "the stack's own code"


def parts(data):
    """{part: samples} of one perf.data file."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    count = collections.Counter()
    for block in out.split("\n\n"):
        if block.strip():
            count[part(frames(block))] += 1
    return count


def table(count, per_gib=None):
    """Markdown rows: part, share, and CPU s/GiB when `per_gib` is given."""
    total = sum(count.values()) or 1
    rows = ["| part | share | CPU s/GiB |", "|---|---:|---:|"]
    for name, n in count.most_common():
        share = n / total
        if share < 0.005:
            continue
        rows.append(f"| {name} | {100 * share:.1f} % | "
                    + (f"{per_gib * share:.3f} |" if per_gib else "- |"))
    rows.append(f"| (samples) | {total} | {per_gib:.3f} |" if per_gib
                else f"| (samples) | {total} | - |")
    return "\n".join(rows)


def self_test():
    """Each kind of stack lands in its part (innermost frame first, as
    `perf script` prints them)."""
    k, own, libc = "[kernel.kallsyms]", "/usr/bin/slipway", "/lib/libc.so.6"
    cases = [
        ([("_copy_to_iter", k), ("tcp_recvmsg", k), ("__sys_recvmsg", k),
          ("do_syscall_64", k), ("entry_SYSCALL_64_after_hwframe", k),
          ("__libc_recvmsg", libc)], "system call: recvmsg"),
        ([("tcp_tsq_handler", k), ("handle_softirqs", k), ("__irq_exit_rcu", k),
          ("__x64_sys_recvfrom", k), ("x64_sys_call", k), ("do_syscall_64", k),
          ("__libc_recv", libc)], "system call: recvfrom"),
        ([("do_writev", k), ("do_syscall_64", k)], "system call: writev"),
        ([("finish_task_switch.isra.0", k), ("exit_to_user_mode_loop", k),
          ("do_syscall_64", k)], SYSCALL_EDGES["exit_to_user_mode_loop"]),
        ([("do_syscall_64", k)], "system calls: entry and dispatch"),
        ([("tcp_pace_kick", k), ("handle_softirqs", k),
          ("asm_sysvec_apic_timer_interrupt", k), ("Vhost::end_batch", own)],
         "interrupts in user mode (softirqs: peers' packets, timers)"),
        ([("RxChains::read_into", own), ("event_loop::run", own)], "the stack's own code"),
        ([("__memmove_avx512_unaligned_erms", libc), ("Flow::push_data", own)], "libc"),
        ([("clear_page_erms", k)], "other kernel work"),
        ([], "unknown"),
    ]
    for stack, want in cases:
        got = part(stack)
        assert got == want, f"{stack}: {got!r}, want {want!r}"
    block = ("slipway 17717 \n"
             "\tffffffff8207bd26 tcp_established_options ([kernel.kallsyms])\n"
             "\t          6826e1 <Vhost as Transport>::end_batch (/work/bin/slipway)\n")
    assert frames(block) == [("tcp_established_options", k),
                             ("<Vhost as Transport>::end_batch", "/work/bin/slipway")]
    rows = table(collections.Counter({"a": 3, "b": 1}), 0.8).splitlines()
    assert rows[2] == "| a | 75.0 % | 0.600 |" and rows[3] == "| b | 25.0 % | 0.200 |", rows
    print("perf_where self-test: ok")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.split("\n\n")[-2])
    per_gib = float(sys.argv[2]) if len(sys.argv) == 3 else None
    print(table(parts(sys.argv[1]), per_gib))


if __name__ == "__main__":
    main()
