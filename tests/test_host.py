"""Whole hosts: `sockwrap enable --system` / `disable --system` / `status --system`.

Everything happens inside a private mount namespace whose /etc is an overlay over the real
one (writes land in the test's own upper directory): the machine's /etc/ld.so.preload and
/etc/sockwrap are never touched, which the tests check from outside after each run. The
network namespace is shared, so the peer socket that reads the TOS (IP_RECVTOS) runs in the
test process, outside, on loopback.
"""
import os
import shlex
import socket
import subprocess
import textwrap

import util
from util import EF

CS1 = 0x20
REAL_PRELOAD = "/etc/ld.so.preload"


def real_etc_state():
    return (os.path.exists(REAL_PRELOAD) and open(REAL_PRELOAD).read(),
            os.path.exists("/etc/sockwrap") and sorted(os.listdir("/etc/sockwrap")))


def host_ns(tmp_path, script, timeout=60):
    """Runs the shell `script` in a private mount namespace with an overlay over /etc.
    The same namespace (its upper dir) persists across calls of one test."""
    util.require_root("a private mount namespace with an overlay over /etc needs root")
    util.require_tool("unshare")
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    before = real_etc_state()
    setup = (f"mount --make-rprivate / && mount -t overlay overlay "
             f"-o lowerdir=/etc,upperdir={upper},workdir={work} /etc && ")
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("SOCKWRAP_") and k not in ("SOCKWRAP_LIB", "SOCKWRAP_BIN"):
            del env[k]
    env["SW"] = str(util.SOCKWRAP_BIN)
    r = subprocess.run(["unshare", "-m", "sh", "-c", setup + script], capture_output=True,
                       text=True, timeout=timeout, env=env)
    assert real_etc_state() == before, "the machine's own /etc changed"
    return r


def client_py(port, msg="x"):
    """A python3 client: one connection to 127.0.0.1:port, sends msg."""
    code = (f"import socket; s=socket.create_connection(('127.0.0.1',{port}));"
            f"s.sendall(b{msg!r}); s.close()")
    return f"python3 -c {shlex.quote(code)}"


def policy(tmp_path, text, name="host.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def ef_policy(tmp_path):
    """A host policy that gives every program EF (sockwrap is needed to enable it)."""
    util.require_sockwrap()
    return policy(tmp_path, """
        [[rule]]
        dscp = "EF"
    """)


def tos_of(srv, n):
    res = srv.wait(n)
    assert len(res) >= n, res
    return [r["tos"] for r in res]


def test_a_named_program_gets_the_policy_and_others_do_not(tmp_path, port):
    util.require_sockwrap()
    util.require_tool("curl")
    p = policy(tmp_path, """
        [[rule]]
        match = { program = ["python3"] }
        dscp = "EF"
    """)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with util.tos_server(socket.AF_INET, port, reply=ok) as srv:
        # Control: the same programs before enable.
        r = host_ns(tmp_path, f"{client_py(port, 'before')} && "
                              f"curl -s -m 5 -o /dev/null http://127.0.0.1:{port}/before || true")
        assert r.returncode == 0, r.stderr
        r = host_ns(tmp_path, f'"$SW" enable --system -c {p} && cat /etc/ld.so.preload && '
                              f"{client_py(port, 'python')} && "
                              f"curl -s -m 5 -o /dev/null http://127.0.0.1:{port}/curl || true")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "libsockwrap.so" in r.stdout
        # Nothing printed into the programs' stderr but the build-tree note of enable.
        stray = [line for line in r.stderr.splitlines() if "note:" not in line]
        assert stray == [], r.stderr
        res = srv.wait(4)
    by = {r["data"][:12]: r["tos"] for r in res}
    assert by[b"before"] == 0 and by[b"GET /before "] == 0, by
    assert by[b"python"] == EF, by
    assert by[b"GET /curl HT"] == 0, by


def test_the_environment_wins_over_the_host_policy(tmp_path, port):
    """A program started by `sockwrap run` gets what run says, not the host's policy."""
    p = ef_policy(tmp_path)
    with util.tos_server(socket.AF_INET, port) as srv:
        r = host_ns(tmp_path, f'"$SW" enable --system -c {p} >/dev/null 2>&1 && '
                              f"{client_py(port, 'host')} && "
                              f'"$SW" run --dscp CS1 -- {client_py(port, "run")}')
        assert r.returncode == 0, r.stderr
        res = srv.wait(2)
    by = {r["data"]: r["tos"] for r in res}
    assert by == {b"host": EF, b"run": CS1}, by


def test_disable_removes_exactly_its_own_line(tmp_path):
    util.require_sockwrap()
    p = policy(tmp_path, """
        [[rule]]
        match = { program = ["nothing-is-called-this"] }
        nodelay = true
    """)
    other = "/lib/x86_64-linux-gnu/libdl.so.2"
    util.require(os.path.exists(other), f"{other} (a harmless library to preload) is missing")
    original = f"# a comment the admin keeps\n{other}\n"
    r = host_ns(tmp_path, f"printf %s {shlex.quote(original)} > /etc/ld.so.preload && "
                          "stat -c %i /etc/ld.so.preload && "
                          f'"$SW" enable --system -c {p} >/dev/null 2>&1 && '
                          "stat -c %i /etc/ld.so.preload && cat /etc/ld.so.preload && echo === && "
                          '"$SW" disable --system && echo === && cat /etc/ld.so.preload && '
                          "ls /etc/sockwrap 2>&1 || true")
    assert r.returncode == 0, r.stderr
    ino_before, ino_after, rest = r.stdout.split("\n", 2)
    assert ino_before != ino_after, "ld.so.preload was edited in place, not replaced by a rename"
    enabled, disabled_msgs, after = rest.split("===\n")
    assert enabled.startswith(original) and enabled.rstrip().endswith("libsockwrap.so"), enabled
    assert after.startswith(original), after
    assert after[len(original):].strip().endswith("No such file or directory"), after
    # A second disable finds nothing to do and says so.
    r = host_ns(tmp_path, '"$SW" disable --system')
    assert r.returncode == 0 and "not enabled" in r.stdout, r.stdout


def test_a_damaged_policy_leaves_programs_untouched_and_doctor_says_so(tmp_path, port):
    p = ef_policy(tmp_path)
    with util.tos_server(socket.AF_INET, port) as srv:
        r = host_ns(tmp_path, f'"$SW" enable --system -c {p} >/dev/null 2>&1 && '
                              # cut the compiled file in half, as a full disk might
                              "n=$(stat -c %s /etc/sockwrap/host.policy) && "
                              "truncate -s $((n/2)) /etc/sockwrap/host.policy && "
                              f"{client_py(port, 'cut')} && echo client-ok && "
                              '"$SW" status --system; echo "status=$?"; '
                              '"$SW" doctor; echo "doctor=$?"')
        assert "client-ok" in r.stdout, r.stdout + r.stderr
        res = srv.wait(1)
    assert [x["tos"] for x in res] == [0], res
    assert "status=1" in r.stdout and "doctor=1" in r.stdout, r.stdout
    assert "damaged" in r.stdout, r.stdout
    # The program's stderr stayed clean: the host log is off by default.
    assert "sockwrap:" not in r.stderr.replace("sockwrap: note:", ""), r.stderr


def ef_policy_and_library_copy(tmp_path, folder, mode):
    """A policy giving EF, and a copy of libsockwrap.so in tmp_path/folder with `mode`."""
    p = ef_policy(tmp_path)
    lib = tmp_path / folder / "libsockwrap.so"
    lib.parent.mkdir()
    lib.write_bytes(util.SOCKWRAP_LIB.read_bytes())
    lib.chmod(mode)
    return p, lib


def test_a_missing_library_is_reported(tmp_path):
    p, lib = ef_policy_and_library_copy(tmp_path, "lib", 0o644)
    r = host_ns(tmp_path, f'SOCKWRAP_LIB={lib} "$SW" enable --system -c {p} && rm {lib} && '
                          '"$SW" status --system; echo "status=$?"; '
                          '"$SW" doctor; echo "doctor=$?"; '
                          '"$SW" disable --system >/dev/null 2>&1; echo ===; /bin/true 2>&1; echo "true=$?"')
    assert "status=1" in r.stdout and "doctor=1" in r.stdout, r.stdout + r.stderr
    assert "MISSING" in r.stdout, r.stdout
    # The loader complained while the line named a missing file (the witness that the test
    # really removed it), and has nothing to complain about after disable.
    assert "cannot be preloaded" in r.stderr, r.stderr
    assert r.stdout.split("===\n")[-1] == "true=0\n", r.stdout


def test_enable_refuses_a_library_that_would_endanger_the_host(tmp_path):
    p, wlib = ef_policy_and_library_copy(tmp_path, "w", 0o666)
    junk = tmp_path / "j" / "libsockwrap.so"
    junk.parent.mkdir()
    junk.write_text("not an ELF file\n")
    junk.chmod(0o644)
    for lib, why in [(wlib, "writable by group or others"), (junk, "does not load cleanly")]:
        r = host_ns(tmp_path, f'SOCKWRAP_LIB={lib} "$SW" enable --system -c {p}; echo "rc=$?"; '
                              "ls /etc/ld.so.preload /etc/sockwrap 2>&1 | wc -l; "
                              "test -e /etc/ld.so.preload && echo PRELOAD-EXISTS || true")
        assert "rc=3" in r.stdout, r.stdout + r.stderr
        assert why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "PRELOAD-EXISTS" not in r.stdout


def test_bad_policy_and_missing_options_change_nothing(tmp_path):
    util.require_sockwrap()
    bad = policy(tmp_path, """
        [[rule]]
        dscp = "NOPE"
    """, "bad.toml")
    r = host_ns(tmp_path, f'"$SW" enable --system -c {bad}; echo "rc=$?"; '
                          '"$SW" enable --system; echo "rc2=$?"; '
                          '"$SW" enable --system --log-file /tmp/x -c /dev/null; echo "rc3=$?"; '
                          "test -e /etc/ld.so.preload && echo PRELOAD-EXISTS || true")
    assert "rc=2" in r.stdout and "rc2=2" in r.stdout and "rc3=2" in r.stdout, r.stdout + r.stderr
    assert "NOPE" in r.stderr and "no policy given" in r.stderr and "--log-file" in r.stderr
    assert "PRELOAD-EXISTS" not in r.stdout


def test_an_edited_copy_is_recompiled_by_enable(tmp_path, port):
    util.require_sockwrap()
    p = policy(tmp_path, """
        [[rule]]
        match = { program = ["python3"] }
        dscp = "EF"
    """)
    edit = "sed -i 's/\"EF\"/\"CS1\"/' /etc/sockwrap/host.toml"
    with util.tos_server(socket.AF_INET, port) as srv:
        r = host_ns(tmp_path, f'"$SW" enable --system -c {p} >/dev/null 2>&1 && '
                              '"$SW" status --system && '
                              f"{client_py(port, 'one')} && {edit} && "
                              '{ "$SW" status --system; echo "status=$?"; } && '
                              f"{client_py(port, 'two')} && "
                              '"$SW" enable --system && "$SW" status --system && echo up-to-date && '
                              f"{client_py(port, 'three')}")
        assert r.returncode == 0, r.stdout + r.stderr
        res = srv.wait(3)
    assert "up to date" in r.stdout and "has changed since" in r.stdout and "status=1" in r.stdout
    assert "recompiled" in r.stdout and "up-to-date" in r.stdout, r.stdout
    by = {x["data"]: x["tos"] for x in res}
    # Until the recompile, processes get the compiled policy, not the edited text.
    assert by == {b"one": EF, b"two": EF, b"three": CS1}, by


def test_dry_run_changes_nothing(tmp_path):
    p = ef_policy(tmp_path)
    r = host_ns(tmp_path, f'"$SW" enable --system -c {p} --dry-run && '
                          "test ! -e /etc/ld.so.preload && test ! -e /etc/sockwrap && echo untouched")
    assert r.returncode == 0 and "untouched" in r.stdout, r.stdout + r.stderr
    assert "swh1 " in r.stdout and "would read" in r.stdout


def test_root_dir_works_without_a_namespace(tmp_path):
    """--root DIR: an image being prepared; nothing on this machine is touched."""
    p = ef_policy(tmp_path)
    root = tmp_path / "img"
    (root / "etc").mkdir(parents=True)
    lib = util.SOCKWRAP_LIB.resolve()
    (root / str(lib.parent).lstrip("/")).mkdir(parents=True)
    (root / str(lib).lstrip("/")).write_bytes(lib.read_bytes())
    (root / str(lib).lstrip("/")).chmod(0o644)
    before = real_etc_state()
    r = util.run([util.SOCKWRAP_BIN, "enable", "--system", "-c", p, "--root", root])
    assert r.returncode == 0, r.stderr
    assert (root / "etc/ld.so.preload").read_text() == f"{lib}\n"
    assert (root / "etc/sockwrap/host.policy").read_text().startswith("swh1 ")
    st = util.run([util.SOCKWRAP_BIN, "status", "--system", "--root", root])
    assert st.returncode == 0, st.stdout
    r = util.run([util.SOCKWRAP_BIN, "disable", "--system", "--root", root])
    assert r.returncode == 0, r.stderr
    assert not (root / "etc/ld.so.preload").exists() and not (root / "etc/sockwrap").exists()
    assert real_etc_state() == before
