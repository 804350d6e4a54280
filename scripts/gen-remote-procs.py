#!/usr/bin/env python3
"""Regenerates crates/slipway-virtrpc/src/remote_procs.rs, the table of every
procedure of libvirt's remote program, from libvirt's own sources.

Usage: scripts/gen-remote-procs.py LIBVIRT_SRC_DIR > crates/slipway-virtrpc/src/remote_procs.rs
(LIBVIRT_SRC_DIR: `apt-get source libvirt` of Debian 12, libvirt-9.0.0).

What each row records, and where it comes from (libvirt 9.0):
- the number and name: `enum remote_procedure` of src/remote/remote_protocol.x;
- whether it is an asynchronous event (a `remote_*_msg` struct): libvirt's
  dispatch table has no function for those, so a call gets "unknown procedure";
- which connection the daemon's stub takes (`Auth` for the authentication
  steps, which take none): gendispatch.pl's get_conn_method
  (argument/return types, then the name), or for a hand-written stub
  (src/remote/remote_daemon_dispatch.c) the first remoteGet*Conn it calls;
- the public API function the stub calls (its name is what libvirt's
  "not supported" and "read only" messages name), the error domain of its
  file (VIR_FROM_THIS of src/libvirt-*.c) and whether it refuses a
  read-only connection (virCheckReadOnlyGoto) before asking the driver.
"""

import os
import re
import sys

CONN_BY_TYPE = [
    ("remote_nonnull_interface", "Interface"),
    ("remote_nonnull_network", "Network"),
    ("remote_nonnull_node_device", "NodeDev"),
    ("remote_nonnull_nwfilter", "NwFilter"),
    ("remote_nonnull_secret", "Secret"),
    ("remote_nonnull_storage", "Storage"),
]

GETTERS = {
    "Hypervisor": "Hypervisor",
    "Interface": "Interface",
    "Network": "Network",
    "NodeDev": "NodeDev",
    "NWFilter": "NwFilter",
    "Secret": "Secret",
    "Storage": "Storage",
}



def proc_name(name):
    """gendispatch.pl's name_to_ProcName (without its fix-ups: the public
    API is matched case-insensitively below)."""
    return "".join(e.lower().capitalize() for e in name.split("_"))


def conn_method(procname, types):
    """gendispatch.pl's get_conn_method."""
    for t in types:
        for prefix, conn in CONN_BY_TYPE:
            if prefix in t:
                return conn
    p = procname
    if re.search("Connect.*Interface", p) or "InterfaceChange" in p:
        return "Interface"
    if re.search("Connect.*Network", p):
        return "Network"
    if re.search("Node.*Device", p) and not re.search(
        "NodeDeviceReset|NodeDeviceReAttach|NodeDeviceDettach|NodeDeviceDetachFlags", p
    ):
        return "NodeDev"
    if re.search("Connect.*Nwfilter", p, re.I):
        return "NwFilter"
    if re.search("Connect.*Secret", p):
        return "Secret"
    if re.search("Connect.*Storage", p):
        return "Storage"
    return "Hypervisor"


def functions(path):
    """Top-level C function definitions of `path`: name -> body."""
    text = open(path, encoding="utf-8").read()
    out = {}
    for m in re.finditer(r"^(?:\w[\w ]*[ *])?(\w+)\(([^;{]*?)\)\s*\n\{", text, re.M | re.S):
        start = m.end()
        end = text.find("\n}\n", start)
        out[m.group(1)] = text[start:end]
    return out


def main(src):
    proto = open(os.path.join(src, "src/remote/remote_protocol.x"), encoding="utf-8").read()
    # Member types of each args/ret struct, and the event messages.
    members = {}
    msgs = set()
    for m in re.finditer(r"^struct (remote_(\w+?)_(args|ret|msg)) \{(.*?)^\};", proto, re.M | re.S):
        key = m.group(2).replace("_", "").lower()
        if m.group(3) == "msg":
            msgs.add(key)
        members.setdefault(key, []).append(m.group(4))
    procs = [
        (int(m.group(2)), m.group(1))
        for m in re.finditer(r"^\s*REMOTE_PROC_(\w+)\s*=\s*(\d+)\s*,?\s*$", proto, re.M)
    ]

    # virErrorDomain's values.
    header = open(os.path.join(src, "include/libvirt/virterror.h"), encoding="utf-8").read()
    domains = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(VIR_FROM_\w+)\s*=\s*(\d+)", header, re.M)}

    # Public (and internal) API functions, by lower-case name without "vir".
    api = {}
    for f in sorted(os.listdir(os.path.join(src, "src"))):
        if not re.fullmatch(r"libvirt(-[\w-]+)?\.c", f):
            continue
        path = os.path.join(src, "src", f)
        text = open(path, encoding="utf-8").read()
        dm = re.search(r"#define VIR_FROM_THIS (\w+)", text)
        domain = domains[dm.group(1)] if dm else 0
        for name, body in functions(path).items():
            if name.startswith("vir"):
                api[name[3:].lower()] = (name, domain, "virCheckReadOnlyGoto" in body)

    stubs = functions(os.path.join(src, "src/remote/remote_daemon_dispatch.c"))
    stub_conn = {}
    stub_api = {}
    for name, body in stubs.items():
        if name.startswith("remoteDispatch"):
            key = name[len("remoteDispatch"):].lower()
            g = re.search(r"remoteGet(\w+?)Conn\(", body)
            if g:
                stub_conn[key] = GETTERS[g.group(1)]
            # A hand-written stub may call an API of another name (the
            # event callback variants call virConnect*EventRegisterAny).
            for c in re.finditer(r"\bvir(\w+)\(", body):
                if c.group(1).lower() in api:
                    stub_api[key] = api[c.group(1).lower()]
                    break

    print("// @generated by scripts/gen-remote-procs.py from libvirt 9.0.0's")
    print("// src/remote/remote_protocol.x, src/rpc/gendispatch.pl's rules,")
    print("// src/remote/remote_daemon_dispatch.c and src/libvirt-*.c. Do not edit.")
    print("//")
    print("// Facts taken from libvirt, Copyright 2005-2023 Red Hat, Inc. and other")
    print("// contributors, under the GNU Lesser General Public License, version 2.1")
    print("// or later (LGPL-2.1-or-later; the text is in")
    print("// crates/slipway-netxml/tests/libvirt-corpus/COPYING.LESSER).")
    print()
    print("use super::{Conn, RemoteProc};")
    print()
    print("/// Every procedure of `REMOTE_PROGRAM` 1 in libvirt 9.0, by number.")
    print("pub const REMOTE_PROCS: &[RemoteProc] = &[")
    for num, name in sorted(procs):
        key = name.replace("_", "").lower()
        pname = proc_name(name)
        event = key in msgs
        # Authentication steps run before any connection exists.
        if name.startswith("AUTH_"):
            conn = "Auth"
        else:
            conn = stub_conn.get(key) or conn_method(pname, members.get(key, []))
        fn, domain, ro = api.get(key) or stub_api.get(key) or ("vir" + pname, 0, False)
        print("    RemoteProc {")
        print(f"        num: {num},")
        print(f'        name: "{name}",')
        print(f'        api: "{fn}",')
        print(f"        conn: Conn::{conn},")
        print(f"        domain: {domain},")
        print(f"        checks_read_only: {'true' if ro else 'false'},")
        print(f"        event: {'true' if event else 'false'},")
        print("    },")
    print("];")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen-remote-procs.py LIBVIRT_SRC_DIR")
    main(sys.argv[1])
