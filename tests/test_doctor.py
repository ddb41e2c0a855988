"""`sockwrap doctor`: each finding is checked against what really happens (the finding is
only worth something if it is true): a setcap copy of a program really ignores LD_PRELOAD,
`env -i` really drops the policy (the peer's IP_RECVTOS sees no DSCP), a missing file in
/etc/ld.so.preload really makes the loader complain (inside a private mount namespace)."""
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

import util
from util import EF, PY, tos_server


def doctor(*args, user=None, **kw):
    util.require_sockwrap()
    cmd = [str(util.SOCKWRAP_BIN), "doctor", *map(str, args)]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return util.run(cmd, **kw)


@pytest.fixture
def pub():
    """A directory any user can read (pytest's tmp_path is under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="sockwrap-doctor-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def world_readable_copy(d, name):
    dst = d / Path(name).name
    shutil.copy(name, dst)
    dst.chmod(0o755)
    return dst


def test_setcap_program_is_reported_and_really_ignores_ld_preload(pub):
    util.require_root("setcap and switching users need root")
    util.require_tool("setcap", "setpriv")
    util.require_sockwrap()
    plain = world_readable_copy(pub, "/bin/cat")
    capped = plain.with_name("cat-capped")
    shutil.copy(plain, capped)
    r = subprocess.run(["setcap", "cap_net_raw+ep", str(capped)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = world_readable_copy(pub, util.SOCKWRAP_LIB)

    d = doctor(capped)
    assert d.returncode == 1 and "FILE CAPABILITIES" in d.stdout, d.stdout
    d = doctor(plain)
    assert "FILE CAPABILITIES" not in d.stdout
    # The witness: the loader of an unprivileged user maps the library into the plain copy
    # and not into the setcap one.
    def maps(prog):
        return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(prog),
                               "/proc/self/maps"], env={"LD_PRELOAD": str(lib), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=10).stdout
    assert "libsockwrap.so" in maps(plain)
    assert "libsockwrap.so" not in maps(capped)


def test_env_dropping_wrapper_is_reported_and_really_drops_the_policy(port):
    d = doctor("env", "-i", PY, "x.py")
    assert d.returncode == 1 and "env -i" in d.stdout, d.stdout
    assert "sudo" in doctor("sudo", "ls").stdout
    client = [PY, str(util.PEERS / "tcp_client.py"), "127.0.0.1", port]
    with tos_server(socket.AF_INET, port) as srv:
        r = util.run_under_sockwrap(["--dscp", "EF"], ["env", "-i", *client])
        assert r.returncode == 0, r.stderr
        r = util.run_under_sockwrap(["--dscp", "EF"], ["env", *client])
        assert r.returncode == 0, r.stderr
        got = srv.wait(2)
    assert [g["tos"] for g in got] == [0, EF]


def test_glibc_program_and_machine_findings():
    d = doctor("true")
    assert "glibc program" in d.stdout and "congestion control: available:" in d.stdout, d.stdout
    assert "host-wide:" in d.stdout


def test_options_that_need_cap_net_admin(pub):
    util.require_root("switching to an unprivileged user needs root")
    util.require_tool("setpriv")
    util.require_sockwrap()
    sw = world_readable_copy(pub, util.SOCKWRAP_BIN)
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(sw), "doctor",
           "--mark", "7", "--priority", "7"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert r.returncode == 1, r.stdout
    assert "mark (rule flags) needs CAP_NET_ADMIN" in r.stdout and "priority 7" in r.stdout, r.stdout
    r = doctor("--mark", "7", "--priority", "7")
    assert "every option can be set here" in r.stdout, r.stdout
    r = doctor("--congestion", "nosuchalgo")
    assert r.returncode == 1 and "not available" in r.stdout


def test_missing_file_in_ld_so_preload_is_reported(tmp_path):
    """Inside a private mount namespace, /etc is a copy with an ld.so.preload that names a
    missing file: the loader complains at every exec (the witness), doctor says so."""
    util.require_root("mount namespaces need root")
    util.require_tool("unshare")
    util.require_sockwrap()
    etc = tmp_path / "etc"
    shutil.copytree("/etc", etc, symlinks=True, ignore_dangling_symlinks=True,
                    ignore=shutil.ignore_patterns("ssl", "ssh", "*.lock"), dirs_exist_ok=True)
    (etc / "ld.so.preload").write_text("/nonexistent/libgone.so\n")
    script = f"mount --bind '{etc}' /etc && exec '{util.SOCKWRAP_BIN}' doctor"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=30)
    assert "/nonexistent/libgone.so" in r.stderr and "ld.so" in r.stderr, r.stderr  # the loader's own error
    assert r.returncode == 1 and "names /nonexistent/libgone.so, which is MISSING" in r.stdout, r.stdout
    assert not os.path.exists("/etc/ld.so.preload") or "libgone" not in Path("/etc/ld.so.preload").read_text()


def test_musl_program_is_reported_and_really_breaks_under_ld_preload(tmp_path):
    util.require_tool("musl-gcc")
    util.require_sockwrap()
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
    prog = tmp_path / "hello-musl"
    r = subprocess.run(["musl-gcc", "-o", str(prog), str(src)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    d = doctor(prog)
    assert d.returncode == 1 and "MUSL program" in d.stdout, d.stdout
    assert "glibc program" in doctor("/bin/true").stdout
    # the witness: it runs alone, and the loader refuses it with the library preloaded
    assert util.run([prog]).stdout == "hello\n"
    r = util.run([prog], env={"LD_PRELOAD": str(util.SOCKWRAP_LIB)})
    assert r.returncode != 0 and "hello" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    # so `sockwrap run` refuses it with one line (exit 3, setup) instead of breaking it,
    # also when it is found through PATH; a glibc program runs
    for how, env in [(str(prog), None), ("hello-musl", {"PATH": f"{tmp_path}:/usr/bin:/bin"})]:
        r = util.run([util.SOCKWRAP_BIN, "run", "--dscp", "EF", "--", how], env=env)
        assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
        assert "musl program" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "hello" not in r.stdout
    r = util.run([util.SOCKWRAP_BIN, "run", "--dscp", "EF", "--", "/bin/echo", "glibc"])
    assert r.returncode == 0 and r.stdout == "glibc\n", r.stderr
