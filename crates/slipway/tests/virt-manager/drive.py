"""Drives a running virt-manager's Connection Details window through
AT-SPI (the accessibility bus GTK publishes on the X display, as
virt-manager's own UI tests reach it): opens the Virtual Networks tab,
prints the networks the list shows (one `listed NAME` line each), selects
network argv[1], presses its Start button (accessible name `net-start`,
from virt-manager's ui/hostnets.ui) and waits until the window shows the
network running (the button insensitive again: virt-manager's
hostnets.py sets it so when the network reports itself active).

Used by crates/slipway/tests/net_virt_manager.rs; run with Debian's
/usr/bin/python3 (package gir1.2-atspi-2.0). Exits non-zero, saying what
was missing, when a widget does not show up within argv[2] seconds.
"""

import sys
import time

import gi

gi.require_version("Atspi", "2.0")
from gi.repository import Atspi  # noqa: E402

START = sys.argv[1]
DEADLINE = time.monotonic() + float(sys.argv[2])


def walk(node, depth=0):
    """Every accessible under node (GTK's trees are shallow; capped)."""
    if node is None or depth > 40:
        return
    yield node
    for i in range(node.get_child_count()):
        yield from walk(node.get_child_at_index(i), depth + 1)


def wait_for(what, find):
    """find()'s first non-empty result, retried until the deadline."""
    while True:
        try:
            found = find()
        except gi.repository.GLib.Error:
            found = None
        if found:
            return found
        if time.monotonic() > DEADLINE:
            sys.exit(f"virt-manager never showed {what}")
        time.sleep(0.1)


def app():
    desk = Atspi.get_desktop(0)
    for i in range(desk.get_child_count()):
        a = desk.get_child_at_index(i)
        if a is not None and a.get_name() == "virt-manager":
            return a
    return None


def first(root, name, role):
    for n in walk(root):
        if n.get_name() == name and n.get_role_name() == role:
            return n
    return None


vm = wait_for("its accessible application", app)
tab = wait_for("the Virtual Networks tab",
               lambda: first(vm, "Virtual Networks", "page tab"))
Atspi.Selection.select_child(tab.get_parent(), tab.get_index_in_parent())


def net_list():
    """The network list's table and its rows' (name, top-level cell)."""
    for t in walk(vm):
        if t.get_role_name() not in ("table", "tree table"):
            continue
        rows = []
        for i in range(t.get_child_count()):
            top = t.get_child_at_index(i)
            for n in walk(top):
                if n.get_role_name() == "table cell" and n.get_name():
                    rows.append((n.get_name(), top))
                    break
        if any(name == START for name, _ in rows):
            return t, rows
    return None


table, rows = wait_for(f"network {START} in its list", net_list)
for name, _ in rows:
    print("listed", name, flush=True)
cell = next(top for name, top in rows if name == START)
Atspi.Selection.select_child(table, cell.get_index_in_parent())


def start_button():
    b = first(vm, "net-start", "push button")
    if b is not None and b.get_state_set().contains(Atspi.StateType.SENSITIVE):
        return b
    return None


button = wait_for(f"a Start button for {START}", start_button)
Atspi.Action.do_action(button, 0)
print("pressed net-start", flush=True)
wait_for(f"{START} running",
         lambda: not button.get_state_set().contains(Atspi.StateType.SENSITIVE))
print("shown running", START, flush=True)
