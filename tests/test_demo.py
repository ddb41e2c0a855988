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
import textwrap
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


@pytest.mark.timeout(1200)
def test_demo_on_a_fresh_machine_installs_what_it_lacks_builds_and_shows_ef(tmp_path):
    """The README's first command as a new user runs it: a fresh clone, nothing prebuilt
    (no SOCKWRAP_BIN), on a machine without clang, libbpf's headers or tcpdump. Those are
    hidden in a private mount namespace; an apt-get stand-in records what it is asked for and
    brings them back. The demo must ask for them, build, and show tos 0xb8 on the wire."""
    util.require_root("hiding packages needs a private mount namespace (root)")
    for t in ("git", "unshare", "clang", "tcpdump", "cargo"):
        util.require_tool(t)
    clone = tmp_path / "repo"
    r = subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    clang = os.path.realpath(shutil.which("clang"))
    tcpdump = os.path.realpath(shutil.which("tcpdump"))
    bpf_headers = "/usr/include/bpf"
    assert os.path.exists(f"{bpf_headers}/bpf_helpers.h")
    stand_in = tmp_path / "bin"
    stand_in.mkdir()
    log = tmp_path / "apt-get.log"
    (stand_in / "apt-get").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        # apt-get, as a fresh machine's would act: what it is asked for appears.
        echo "$*" >> {log}
        [ "$1" = update ] && exit 0
        for p in "$@"; do
            case "$p" in
                clang) umount {clang} ;;
                libbpf-dev) umount {bpf_headers} ;;
                tcpdump) umount {tcpdump} ;;
            esac
        done
        exit 0
        """))
    (stand_in / "apt-get").chmod(0o755)
    script = textwrap.dedent(f"""\
        mount --bind /dev/null {clang} && mount -t tmpfs none {bpf_headers} && mount --bind /dev/null {tcpdump} || exit 97
        if command -v clang || command -v tcpdump || [ -e {bpf_headers}/bpf_helpers.h ]; then exit 98; fi
        exec {clone}/scripts/demo.sh
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKWRAP_") and k != "LD_PRELOAD"}
    env["PATH"] = f"{stand_in}:{env['PATH']}"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                       capture_output=True, text=True, timeout=1100, cwd="/")
    out = r.stdout + r.stderr
    assert r.returncode not in (97, 98), f"could not hide the packages: {out}"
    assert os.access(clang, os.X_OK) and os.path.exists(f"{bpf_headers}/bpf_helpers.h"), "the machine must not change"
    asked = log.read_text() if log.exists() else ""
    installs = [l.split() for l in asked.splitlines() if l.split()[:1] == ["install"]]
    assert installs and {"clang", "libbpf-dev", "tcpdump"} <= set(installs[0]), asked
    assert r.returncode == 0, out
    assert "building" in r.stdout and "on the wire" in r.stdout, r.stdout
    assert "tos 0xb8" in r.stdout and "tos 0x0" in r.stdout, r.stdout
    assert (clone / "target/release/sockwrap").exists()
