#!/usr/bin/env python3
"""Writes crates/preload/start.order: the functions of libsockwrap.so that run at every
start, for the linker's --symbol-ordering-file (see crates/preload/build.rs).

Each exec maps the library's code in 64 KiB windows (the kernel's fault-around), one page
fault each; the constructor's few dozen functions were spread over six of them. Listed
first in .text, they fill two. The names are the linker's (mangled), taken from callgrind
runs of /bin/true under a release build: no policy, the three flags, the launcher's
compiled form, and (as root, in a private mount namespace) a host policy that does not
name the program. A stale list (renamed functions, a new rustc or crate version: the
names carry hashes) costs page faults, never correctness: the linker skips the names it
does not find. Run it after such a change:

    python3 scripts/start-order.py [--check]

--check: exit 1 when the list differs from what the current code gives.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "preload", "start.order")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
LIB = os.path.join(TARGET, "release", "libsockwrap.so")
CLI = os.path.join(TARGET, "release", "sockwrap")
FLAGS = {"SOCKWRAP_DSCP": "EF", "SOCKWRAP_NODELAY": "1", "SOCKWRAP_KEEPALIVE": "30,10,3"}
RULES = ('[[rule]]\nmatch = { remote = ["10.1.0.0/24", "fd00::/64"], port = [443] }\n'
         'dscp = "AF41"\n\n[[rule]]\nmatch = { program = ["prog"] }\nnodelay = true\n')


def functions(callgrind_file):
    """The library's functions that executed."""
    out, ob, fn, obs, fns = [], None, None, {}, {}
    for line in open(callgrind_file):
        m = re.match(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            kind, i, name = m.groups()
            table = obs if kind.endswith("ob") else fns
            if name:
                table[i] = name
            if kind == "ob":
                ob = obs[i]
            elif kind == "fn":
                fn = fns[i]
            continue
        if fn and ob == os.path.realpath(LIB) and line[:1].isdigit() and fn not in out:
            out.append(fn)
    # PLT entries are named by their address; the rest (Rust, and the C of crtbeginS.o,
    # libc_nonshared.a and src/*.c) are the library's functions.
    return [f for f in out if not f.startswith("0x")]


def callgrind(env, tmp, wrap=()):
    f = os.path.join(tmp, "cg.out")
    e = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": LIB, **env}
    subprocess.run([*wrap, "valgrind", "--tool=callgrind", "--demangle=no",
                    f"--callgrind-out-file={f}", "/bin/true"],
                   env=e, check=True, stderr=subprocess.DEVNULL)
    return functions(f)


def launcher_env(config):
    r = subprocess.run([CLI, "run", "--config", config, "--", "env", "-0"],
                       env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
    pairs = (item.partition("=") for item in r.stdout.split("\0"))
    return {k: v for k, _, v in pairs if k.startswith("SOCKWRAP_")}


def host_run(config, tmp):
    """The host-policy path, as root: the compiled host file at /etc/sockwrap/host.policy
    inside a private mount namespace whose /etc is an overlay (the machine's is untouched)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("start-order: not root, the host-policy path is not listed", file=sys.stderr)
        return []
    root = os.path.join(tmp, "root")
    lib = os.path.realpath(LIB)
    os.makedirs(root + os.path.dirname(lib))
    shutil.copy(lib, root + lib)
    subprocess.run([CLI, "enable", "--system", "-c", config, "--root", root], check=True,
                   env={"PATH": "/usr/bin:/bin", "SOCKWRAP_LIB": lib}, capture_output=True)
    up, wk = os.path.join(tmp, "up"), os.path.join(tmp, "wk")
    os.makedirs(up)
    os.makedirs(wk)
    script = (f"mount --make-rprivate / && mount -t overlay overlay -o lowerdir=/etc,"
              f"upperdir={up},workdir={wk} /etc && mkdir -p /etc/sockwrap && "
              f"cp {root}/etc/sockwrap/host.policy /etc/sockwrap/ && exec \"$@\"")
    return callgrind({}, tmp, wrap=("unshare", "-m", "sh", "-c", script, "sh"))


def main():
    subprocess.run(["cargo", "build", "--release", "-p", "sockwrap-preload", "-p", "sockwrap-cli",
                    "--target-dir", TARGET], cwd=ROOT, check=True)
    names = []
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "rules.toml")
        with open(config, "w") as f:
            f.write(RULES)
        for env in ({}, FLAGS, launcher_env(config)):
            names += callgrind(env, tmp)
        names += host_run(config, tmp)
    # Sorted: which functions, not their order, decides the windows; and the order
    # callgrind names them in follows the layout, so a list made from a build of itself
    # would otherwise never settle.
    names = sorted(set(names))
    text = ("# Generated by scripts/start-order.py: the functions that run at every start,\n"
            "# placed first in .text (see crates/preload/build.rs).\n" + "".join(n + "\n" for n in names))
    if "--check" in sys.argv:
        old = open(OUT).read() if os.path.exists(OUT) else ""
        if old != text:
            sys.exit("crates/preload/start.order is stale: run python3 scripts/start-order.py")
        return
    with open(OUT, "w") as f:
        f.write(text)
    print(f"{OUT}: {len(names)} functions")


if __name__ == "__main__":
    main()
