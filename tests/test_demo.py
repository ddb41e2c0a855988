"""The README's first command, `scripts/demo.sh`, from a fresh clone of the repository: it
ends 0 only when its witnesses (the server's IP_RECVTOS, and tcpdump when it can run) saw
tos 0x0 without sockwrap and 0xb8 with it; every failure is one line starting `demo:`.

The build step is skipped here (SOCKWRAP_BIN points at the build under test: a fresh
clone would rebuild everything, minutes of fat LTO); the rest of the script runs as a user
would run it."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import util
from util import REPO


@pytest.fixture
def clone():
    util.require_tool("git")
    util.require_sockwrap()
    d = Path(tempfile.mkdtemp(prefix="sockwrap-demo-"))
    try:
        r = subprocess.run(["git", "clone", "-q", str(REPO), str(d / "repo")], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        # the build under test, copied where any user can run it (the library next to it)
        shutil.copy(util.SOCKWRAP_BIN, d / "sockwrap")
        shutil.copy(util.SOCKWRAP_LIB, d / "libsockwrap.so")
        for p in [d, *d.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o755 if p.is_dir() or os.access(p, os.X_OK) else p.stat().st_mode | 0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def demo(clone, env=None, user=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SOCKWRAP_") and k != "LD_PRELOAD"}
    e["SOCKWRAP_BIN"] = str(clone / "sockwrap")
    e.update(env or {})
    cmd = [str(clone / "repo/scripts/demo.sh")]
    if user:
        util.require_tool("setpriv")
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        e["HOME"] = "/tmp"
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=180, cwd="/")


def test_demo_with_tcpdump(clone):
    util.require_root("the wire witness needs root")
    util.require_tool("tcpdump")
    r = demo(clone, {"DEMO_WITNESS": "tcpdump"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "on the wire" in r.stdout and "tos 0xb8" in r.stdout and "tos 0x0" in r.stdout, r.stdout
    assert "No such process" not in r.stdout + r.stderr


def test_demo_without_root_needs_no_install(clone):
    """Not root: no apt, no tcpdump; the server's own view is the witness."""
    util.require_root("needs root to switch to an unprivileged user")
    r = demo(clone, user="nobody")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the server saw: tos 0xb8" in r.stdout and "the server saw: tos 0x0" in r.stdout, r.stdout
    assert "not root" in r.stdout
    assert "No such process" not in r.stdout + r.stderr


def test_demo_failures_are_one_line(clone):
    r = demo(clone, {"SOCKWRAP_BIN": "/nonexistent/sockwrap", "DEMO_WITNESS": "server"})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["demo: no sockwrap program at /nonexistent/sockwrap"], r.stderr
    r = demo(clone, {"DEMO_WITNESS": "bogus"})
    assert r.returncode == 1 and r.stderr.startswith("demo: DEMO_WITNESS=bogus"), r.stderr
    # a sockwrap that does nothing: the witnesses notice and the demo fails, in one line
    fake = clone / "fake-sockwrap"
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done; shift; exec "$@"\n')
    fake.chmod(0o755)
    r = demo(clone, {"SOCKWRAP_BIN": str(fake), "DEMO_WITNESS": "server"})
    assert r.returncode == 1, r.stdout
    assert r.stderr.strip().splitlines() == [
        "demo: FAILED: under sockwrap the server saw 'tos 0x0', expected tos 0xb8 (DSCP EF)"], r.stderr
