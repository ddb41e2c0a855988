#!/usr/bin/env bash
# Prints the module graph of a crate (who uses whom through `crate::`; default
# crates/preload/src, or the src folder given) and fails if it has a cycle. A module is a
# top-level file or a folder with a mod.rs (its files together: uses between its own
# submodules do not count). Comments, doc links and tests (`tests.rs`, a file's closing
# `#[cfg(test)] mod tests`) do not count;
# `log_at!` counts as a use of `log`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import re, sys, pathlib
src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "crates/preload/src")
files = {p.stem: [p] for p in src.glob("*.rs") if p.stem != "lib"}
files.update({d.name: sorted(f for f in d.rglob("*.rs") if f.name != "tests.rs")
              for d in src.iterdir() if (d / "mod.rs").is_file()})
mods = set(files)
edges = {m: set() for m in mods}
for m in mods:
    # A file's `#[cfg(test)] mod tests { ... }` (at its end, by convention) is test code too.
    srcs = [re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", f.read_text())[0] for f in files[m]]
    text = "\n".join(l.split("//")[0] for t in srcs for l in t.splitlines())
    used = set(re.findall(r"crate::([a-z_]+)", text))
    for group in re.findall(r"use crate::\{([^}]*)\}", text):
        used |= {g.strip().split("::")[0] for g in group.split(",") if g.strip()}
    if re.search(r"\blog_at!", text):
        used.add("log")
    edges[m] = {u for u in used if u in mods and u != m}
for m in sorted(edges):
    print(f"{m:8} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
state = {}
def visit(m, path):
    state[m] = 1
    for n in sorted(edges[m]):
        if state.get(n) == 1:
            cyc = path[path.index(n):] + [n]
            sys.exit("cycle: " + " -> ".join(cyc))
        if n not in state:
            visit(n, path + [n])
    state[m] = 2
for m in sorted(mods):
    if m not in state:
        visit(m, [m])
print("no cycle")
PY
