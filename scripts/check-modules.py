#!/usr/bin/env python3
"""Module import cycles in each crate of the workspace.

The rule (docs: the import rule in the architecture notes): a module imports
only modules below it, so the import graph of a crate's modules has no
cycle, except between a module and its own child (a parent using its
child's items while the child uses the parent's, e.g. `tcp` and
`tcp::state`).

How the graph is built, per crate root (src/lib.rs, src/main.rs and each
src/bin/*.rs):

* Modules are found by following `mod x;` declarations from the root
  (file `x.rs` or `x/mod.rs` beside or below the declaring file) and inline
  `mod x { ... }` blocks.
* Test code is left out: an item under `#[cfg(test)]` (usually
  `mod tests`) and its whole body.
* Comments, string and character literals are removed first.
* An edge `a -> b` is a path in `a`'s code that names `b`: `use` trees
  (expanded, with `{...}` groups, `self`, `super`, `crate` and paths
  starting with one of `a`'s own child modules) and paths in code that
  start with `crate::`, `super::` or `self::`. A path names the deepest
  module that is a prefix of it (`crate::tcp::state::State` -> `tcp::state`).
* A path that ends at the crate root (an item defined or re-exported in
  lib.rs) is not an edge: the root is the crate's table of contents.
* `pub(in path)` visibilities are not imports.

Every strongly connected component of more than one module, other than
exactly a parent and its own child, is a cycle: printed as
`crate: N modules: a, b, c`, and the exit status is 1.

Usage: check-modules.py [CRATES_DIR]   (default: crates/ beside scripts/)
       check-modules.py --self-test
"""

import os
import re
import sys
import tempfile

# ---------------------------------------------------------------- source text


def strip_comments_and_literals(text):
    """The code with comments, strings and char literals blanked out
    (newlines kept, so nothing else moves)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
            out.append(" ")
        elif c == "r" and re.match(r'r#*"', text[i:]) and not _ident_char(text, i - 1):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(?:\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _ident_char(text, i):
    return i >= 0 and (text[i].isalnum() or text[i] == "_")


def matching_brace(code, i):
    """Index just past the `}` matching the `{` at `i`."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def item_end(code, i):
    """Index just past the item starting at `i`: its `;` or its braced body,
    whichever comes first."""
    depth = 0
    for j in range(i, len(code)):
        c = code[j]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0 and c == ";":
            return j + 1
        elif depth == 0 and c == "{":
            return matching_brace(code, j)
    return len(code)


CFG_TEST = re.compile(r"#\[\s*cfg\s*\(\s*test\s*\)\s*\]")
ATTR = re.compile(r"\s*#\[[^\]]*\]")


def strip_test_items(code):
    """The code without the items under `#[cfg(test)]`."""
    while True:
        m = CFG_TEST.search(code)
        if not m:
            return code
        i = m.end()
        while True:  # further attributes of the same item
            a = ATTR.match(code, i)
            if not a:
                break
            i = a.end()
        j = item_end(code, i)
        code = code[: m.start()] + "\n" * code.count("\n", m.start(), j) + code[j:]


# ------------------------------------------------------------------- modules

MOD_DECL = re.compile(r"\b(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])")


class Module:
    def __init__(self, path, code, file):
        self.path = path  # tuple of names; () is the crate root
        self.code = code  # own code, inline child modules cut out
        self.file = file
        self.children = set()


def load_modules(root_file):
    """Every module reachable from a crate root file: {path: Module}."""
    mods = {}

    def add(path, code, file, dir_for_children):
        own = []
        children = []
        pos = 0
        for m in MOD_DECL.finditer(code):
            if m.start() < pos:
                continue
            name = m.group(1)
            if m.group(2) == ";":
                children.append((name, None))
                own.append(code[pos : m.end()])
                pos = m.end()
            else:
                brace = m.end() - 1
                end = matching_brace(code, brace)
                children.append((name, code[brace + 1 : end - 1]))
                own.append(code[pos : m.start()])
                pos = end
        own.append(code[pos:])
        mod = Module(path, "".join(own), file)
        mods[path] = mod
        for name, inline in children:
            mod.children.add(name)
            child = path + (name,)
            if inline is not None:
                add(child, inline, file, os.path.join(dir_for_children, name))
                continue
            for cand in (
                os.path.join(dir_for_children, name + ".rs"),
                os.path.join(dir_for_children, name, "mod.rs"),
            ):
                if os.path.isfile(cand):
                    add(child, read_code(cand), cand, os.path.join(dir_for_children, name))
                    break

    root_dir = os.path.dirname(root_file)
    add((), read_code(root_file), root_file, root_dir)
    return mods


def read_code(file):
    with open(file, encoding="utf-8", errors="replace") as f:
        return strip_test_items(strip_comments_and_literals(f.read()))


# --------------------------------------------------------------------- paths

USE = re.compile(r"\buse\s+([^;]*);")
PUB_IN = re.compile(r"\bpub\s*\(\s*in\s+[^)]*\)")
PATH = re.compile(r"(?<![\w:])(crate|super|self)((?:\s*::\s*\w+)+)")


def _expand(tree):
    """`a::{b, c::{d, e}}` (no spaces, no `as`) -> [[a, b], [a, c, d], [a, c, e]]."""
    if "{" not in tree:
        segs = [s for s in tree.split("::") if s]
        return [segs] if segs else []
    i = tree.index("{")
    prefix = [s for s in tree[:i].split("::") if s]
    inner = tree[i + 1 : tree.rindex("}")]
    out = []
    for part in split_top(inner):
        for rest in _expand(part):
            if rest == ["self"]:
                out.append(prefix)
            else:
                out.append(prefix + rest)
    return out


def split_top(s):
    parts, depth, cur = [], 0, ""
    for c in s:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return [p for p in parts if p]


def resolve(here, segs, mod, mods, in_use):
    """The module a path from module `here` names, or None (not a module
    of this crate, or the crate root)."""
    if not segs:
        return None
    head = segs[0]
    if head == "crate":
        base, rest = (), segs[1:]
    elif head == "self":
        base, rest = here, segs[1:]
    elif head == "super":
        base, rest = here, segs
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif in_use and head in mod.children:
        base, rest = here, segs
    else:
        return None
    target = base
    for s in rest:
        if target + (s,) in mods:
            target = target + (s,)
        else:
            break
    return target or None


def edges(mods):
    graph = {p: set() for p in mods}
    for here, mod in mods.items():
        code = PUB_IN.sub(" ", mod.code)
        targets = []
        for m in USE.finditer(code):
            tree = m.group(1)
            tree = re.sub(r"\s+as\s+\w+", "", tree)
            for segs in _expand(re.sub(r"\s+", "", tree)):
                targets.append(resolve(here, segs, mod, mods, True))
        code = USE.sub(" ", code)
        for m in PATH.finditer(code):
            segs = [m.group(1)] + [s.strip() for s in m.group(2).split("::") if s.strip()]
            targets.append(resolve(here, segs, mod, mods, False))
        for t in targets:
            if t is not None and t != here:
                graph[here].add(t)
    return graph


# -------------------------------------------------------------------- cycles


def components(graph):
    """Strongly connected components (Tarjan, iterative)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def allowed(comp):
    if len(comp) == 1:
        return True
    if len(comp) != 2:
        return False
    a, b = sorted(comp, key=len)
    return len(b) == len(a) + 1 and b[: len(a)] == a


def crate_roots(crate_dir):
    src = os.path.join(crate_dir, "src")
    roots = []
    for name in ("lib.rs", "main.rs"):
        if os.path.isfile(os.path.join(src, name)):
            roots.append((name[:-3], os.path.join(src, name)))
    bindir = os.path.join(src, "bin")
    if os.path.isdir(bindir):
        for f in sorted(os.listdir(bindir)):
            if f.endswith(".rs"):
                roots.append(("bin " + f[:-3], os.path.join(bindir, f)))
            elif os.path.isfile(os.path.join(bindir, f, "main.rs")):
                roots.append(("bin " + f, os.path.join(bindir, f, "main.rs")))
    return roots


def find_cycles(crates_dir):
    """[(crate name, [module names])] for every forbidden cycle."""
    found = []
    for crate in sorted(os.listdir(crates_dir)):
        crate_dir = os.path.join(crates_dir, crate)
        roots = crate_roots(crate_dir)
        for kind, root in roots:
            label = crate if len(roots) == 1 or kind == "lib" else f"{crate} ({kind})"
            mods = load_modules(root)
            for comp in components(edges(mods)):
                if not allowed(comp):
                    names = sorted("::".join(p) or "crate" for p in comp)
                    found.append((label, names))
    return found


# ----------------------------------------------------------------- self-test

FIXTURES = {
    # A cycle through `use crate::` in both directions.
    "cycle/src/lib.rs": "mod a;\nmod b;\n",
    "cycle/src/a.rs": "use crate::b::B;\npub struct A;\n",
    "cycle/src/b.rs": "pub struct B;\nfn f() -> crate::a::A { todo!() }\n",
    # Parent and its own child only: allowed.
    "parent/src/lib.rs": "pub mod p;\n",
    "parent/src/p/mod.rs": "mod c;\nuse self::c::C;\npub struct P(C);\n",
    "parent/src/p/c.rs": "use super::P;\npub struct C;\n",
    # Three modules through a nested use tree, `super::super` and a path
    # that starts with the module's own child; test code, comments and
    # strings do not count.
    "three/src/lib.rs": "mod x;\nmod y;\nmod z;\n",
    "three/src/x.rs": "mod inner;\nuse inner::I;\n",
    "three/src/x/inner.rs": "use super::super::y::Y;\npub struct I;\n",
    "three/src/y.rs": "use crate::{z::{self, Z}, x as _};\npub struct Y;\n",
    "three/src/z.rs": (
        "// use crate::x;\nconst S: &str = \"crate::y\";\n"
        "pub struct Z;\nfn g() -> Option<crate::x::inner::I> { None }\n"
    ),
    "notest/src/lib.rs": "mod a;\nmod b;\n",
    "notest/src/a.rs": "use crate::b;\n",
    "notest/src/b.rs": (
        "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a;\n    fn f() { let _ = '{'; }\n}\n"
        "/* crate::a */\nconst C: char = '}';\npub(in crate::a) fn h() {}\n"
    ),
    # A grandparent and its grandchild are not parent and child.
    "grand/src/lib.rs": "mod g;\n",
    "grand/src/g.rs": "mod m { pub mod k { use crate::g::G; } }\nuse self::m::k;\npub struct G;\n",
}

EXPECTED = [
    ("cycle", ["a", "b"]),
    ("grand", ["g", "g::m::k"]),
    ("three", ["x", "x::inner", "y", "z"]),
]


def self_test():
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in FIXTURES.items():
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        got = find_cycles(tmp)
    if got != EXPECTED:
        print(f"self-test FAILED:\n  expected {EXPECTED}\n  got      {got}")
        return 1
    print(f"self-test ok: {len(FIXTURES)} fixture files, {len(EXPECTED)} cycles found as expected")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    crates = argv[1] if len(argv) == 2 else os.path.join(here, "..", "crates")
    cycles = find_cycles(crates)
    for crate, names in cycles:
        print(f"{crate}: {len(names)} modules: {', '.join(names)}")
    if cycles:
        print(
            f"{len(cycles)} module import cycles (allowed: only a module and its own child)",
            file=sys.stderr,
        )
        return 1
    print("no module import cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
