"""Bad input gives one clear error naming the thing (and line:column for files); a broken
policy never breaks the program unless --strict; refused options warn once or fail the call."""
import os
import re
import socket

import pytest

import util
from util import PEERS, peer, run, run_under_sockwrap, tos_server

SYS_PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else util.PY
DROP = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def sockwrap_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.strip()]


def write(tmp_path, text, name="bad.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- sockwrap check

@pytest.mark.parametrize("text,line,word", [
    ('[[rule]]\ndscp = "EF"\nfrobnicate = 3\n', 3, "frobnicate"),
    ('[[rule]]\nmatch = { port = [22] }\ndscp = "XX"\n', 3, "XX"),
    ('[[rule]]\nmatch = { remote = ["10.0.0.0/33x"] }\ndscp = "EF"\n', 2, "10.0.0.0/33x"),
    ('[[rule]]\nmatch = { colour = "red" }\n', 2, "colour"),
    ('on_error = "sometimes"\n', 1, "sometimes"),
    ('[[rule]\ndscp = "EF"\n', 1, None),  # TOML syntax error
])
def test_check_reports_file_line_col(tmp_path, text, line, word):
    util.require_sockwrap()
    f = write(tmp_path, text)
    r = run([util.SOCKWRAP_BIN, "check", f])
    assert r.returncode != 0
    out = r.stdout + r.stderr
    m = re.search(re.escape(str(f)) + r":(\d+):(\d+): error: (.*)", out)
    assert m, out
    assert int(m.group(1)) == line, out
    if word:
        assert word in m.group(3), out


def test_check_accepts_valid_file(tmp_path):
    util.require_sockwrap()
    f = write(tmp_path, """on_error = "warn"
[[rule]]
name = "ssh"
match = { remote = ["127.0.0.0/8", "::1"], port = [22, "8000-8100"], role = "client", transport = "tcp", program = ["ssh"] }
dscp = "EF"
keepalive = { idle = 30, interval = 10, count = 3 }
nodelay = true
soft = ["dscp"]

[[rule]]
match = { local-port = [80], role = "server" }
dscp = "AF41"
keepalive = "30,10,3"
""", "good.toml")
    r = run([util.SOCKWRAP_BIN, "check", f])
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_takes_c_like_run_and_checks_every_file(tmp_path):
    """`check -c FILE` is `check FILE` (the -c of run and explain), and with files of both
    kinds each one is read: the bad one's error is printed and the exit is 1."""
    util.require_sockwrap()
    good = write(tmp_path, '[[rule]]\ndscp = "EF"\n', "good.toml")
    bad = write(tmp_path, '[[rule]]\nfail = { rate = 1.5 }\n', "bad.toml")
    r = run([util.SOCKWRAP_BIN, "check", "-c", good])
    assert r.returncode == 0 and f"{good}: ok, 1 rule(s)" in r.stdout, r.stdout + r.stderr
    r = run([util.SOCKWRAP_BIN, "check", "-c", good, bad])
    out = r.stdout + r.stderr
    assert r.returncode == 1 and f"{good}: ok" in out, out
    errors = [l for l in out.splitlines() if l.startswith(f"{bad}:")]
    # one error for one mistake: the refused rate, not also "missing rate"
    assert len(errors) == 1 and "fail.rate: rate 1.5 is outside 0..1" in errors[0], out


def test_check_missing_file(tmp_path):
    util.require_sockwrap()
    f = tmp_path / "nope.toml"
    r = run([util.SOCKWRAP_BIN, "check", f])
    assert r.returncode != 0
    assert str(f) in r.stdout + r.stderr


def test_one_duration_grammar_in_the_file_the_flags_and_the_environment(tmp_path):
    """`delay` and `user-timeout` (and the keepalive timers, linger) read the same texts:
    1min and 1.5s are taken by both; a duration finer than a seconds option's unit is
    refused by name, with its line and column."""
    util.require_sockwrap()
    good = write(tmp_path, '[[rule]]\ndelay = "1min"\nuser-timeout = "1.5s"\nlinger = "2m"\n'
                 'keepalive = { idle = "1min", interval = "1.5m", count = 3 }\n', "good.toml")
    r = run([util.SOCKWRAP_BIN, "check", good])
    assert r.returncode == 0, r.stderr
    for want in ("delay=60000ms", "user-timeout=1500", "linger=120s", "keepalive.idle=60", "keepalive.interval=90"):
        assert want in r.stdout, r.stdout
    bad = write(tmp_path, '[[rule]]\nkeepalive = { idle = "1.5s" }\ndelay = "0.5ms"\n')
    r = run([util.SOCKWRAP_BIN, "check", bad])
    assert r.returncode == 1
    assert f"{bad}:2:22: error: keepalive.idle: `1.5s` is not a whole number of seconds" in r.stderr, r.stderr
    assert f"{bad}:3:9: error: delay: `0.5ms` is not a whole number of milliseconds" in r.stderr, r.stderr
    r = run([util.SOCKWRAP_BIN, "explain", "--delay", "1min", "--user-timeout", "1.5s", "--dest", "127.0.0.1:9"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"user-timeout\s+1500\s", r.stdout) and re.search(r"delay\s+60000ms", r.stdout), r.stdout
    marker = tmp_path / "ran"
    r = run_under_sockwrap(["--log", "warn"], ["sh", "-c", f"touch {marker}"],
                           env={"SOCKWRAP_DELAY": "1min", "SOCKWRAP_USER_TIMEOUT": "1.5s"})
    assert r.returncode == 0 and marker.exists() and "error" not in r.stderr, r.stderr
    r = run_under_sockwrap(["--log", "warn"], ["true"], env={"SOCKWRAP_KEEPALIVE_IDLE": "1.5s"})
    assert "SOCKWRAP_KEEPALIVE_IDLE: error: keepalive.idle: `1.5s` is not a whole number of seconds" in r.stderr, r.stderr


@pytest.mark.parametrize("text", [
    '[rule]\ndscp = "EF"\n[rule]\ndscp = "AF21"\n',
    '[[rule]]\ndscp = "EF"\n[rule]\ndscp = "AF21"\n',
])
def test_a_repeated_rule_table_says_to_write_double_brackets(tmp_path, text):
    util.require_sockwrap()
    f = write(tmp_path, text)
    r = run([util.SOCKWRAP_BIN, "check", f])
    assert r.returncode == 1
    assert f"{f}:3:2: error: `[rule]` appears twice: write each rule as a [[rule]] table" in r.stderr, r.stderr
    assert "duplicate key" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- sockwrap run: bad flags

@pytest.mark.parametrize("args,word", [
    (["--dscp", "XX"], "XX"),
    (["--to", "10.0.0.0/33x", "--dscp", "EF"], "10.0.0.0/33x"),
    (["--ttl", "-3"], "-3"),
    (["--keepalive=30,x,3"], "30,x,3"),
])
def test_run_bad_flag_one_clear_line(tmp_path, args, word):
    util.require_sockwrap()
    marker = tmp_path / "ran"
    r = run_under_sockwrap(args, ["sh", "-c", f"touch {marker}"])
    assert r.returncode != 0
    assert not marker.exists(), "the program must not run with a bad command line"
    lines = sockwrap_lines(r.stderr)
    assert any(word in ln for ln in lines), r.stderr
    assert len(lines) <= 3, "a short, clear error, not a wall of text:\n" + r.stderr


def test_run_missing_config(tmp_path):
    util.require_sockwrap()
    marker = tmp_path / "ran"
    missing = tmp_path / "missing.toml"
    r = run_under_sockwrap(["-c", missing], ["sh", "-c", f"touch {marker}"])
    assert r.returncode != 0 and not marker.exists()
    assert str(missing) in r.stderr, r.stderr


# --------------------------------------------------------------------------- broken policy at run time

BROKEN = '[[rule]]\ndscp = "EF"\nfrobnicate = 3\n'


def test_broken_config_via_env_program_untouched(tmp_path, port):
    """Library preloaded directly with a broken SOCKWRAP_CONFIG: the program runs, untouched."""
    cfg = write(tmp_path, BROKEN)
    with tos_server(socket.AF_INET, port) as srv:
        r = util.run_preloaded(peer("tcp_client.py", "127.0.0.1", port), SOCKWRAP_CONFIG=cfg)
        assert r.returncode == 0, r.stderr
        got = srv.wait(1)
    assert got[0]["tos"] == 0, "a broken policy must not be half-applied"
    assert str(cfg) in r.stderr and "frobnicate" in r.stderr, r.stderr


def test_broken_config_strict_refuses_to_start(tmp_path):
    util.require_sockwrap()
    cfg = write(tmp_path, BROKEN)
    marker = tmp_path / "ran"
    r = run_under_sockwrap(["--strict", "-c", cfg], ["sh", "-c", f"touch {marker}"])
    assert r.returncode != 0
    assert not marker.exists()
    assert str(cfg) in r.stderr, r.stderr


def test_broken_config_on_error_fail_refuses_to_start(tmp_path):
    util.require_sockwrap()
    cfg = write(tmp_path, 'on_error = "fail"\n' + BROKEN)
    marker = tmp_path / "ran"
    r = run_under_sockwrap(["-c", cfg], ["sh", "-c", f"touch {marker}"])
    assert r.returncode != 0 and not marker.exists(), r.stderr


# --------------------------------------------------------------------------- refused options (EPERM)

def test_mark_unprivileged_warns_once(port):
    util.require_sockwrap()
    util.require_root("needs root to drop to nobody")
    util.require_tool("setpriv")
    with tos_server(socket.AF_INET, port) as srv:
        r = run(DROP + util.sockwrap_cmd(["--mark", "7", "--dscp", "EF"],
                                         [SYS_PY, PEERS / "tcp_client.py", "127.0.0.1", port, "--count", "3"]))
        got = srv.wait(3)
    assert r.returncode == 0, r.stderr
    assert len(got) == 3, "the program still connects every time"
    assert [g["tos"] for g in got] == [util.EF] * 3, "the other options still apply"
    mark_lines = [ln for ln in r.stderr.splitlines() if "mark" in ln.lower()]
    assert len(mark_lines) == 1, "exactly one warning for three refused SO_MARK:\n" + r.stderr
    assert "warn" in mark_lines[0].lower()


def test_a_forked_child_warns_once_of_its_own(port):
    """Once per process: a parent that warned, then forks, and each side connects twice
    more: one warning from the parent, one from the child (with the child's pid), whatever
    the order. The library registers no fork handler for a policy of options alone; the
    warning remembers which process gave it. The peer sees all six connections carry EF."""
    util.require_sockwrap()
    util.require_root("needs root to drop to nobody")
    util.require_tool("setpriv")
    code = ("import os, socket, sys\n"
            "def c():\n"
            " s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); s.sendall(b'x'); s.close()\n"
            "c(); c()\n"
            "pid = os.fork()\n"
            "c(); c()\n"
            "if pid: os.waitpid(pid, 0); print('parent', os.getpid(), 'child', pid)\n")
    with tos_server(socket.AF_INET, port) as srv:
        r = run(DROP + util.sockwrap_cmd(["--mark", "7", "--dscp", "EF"], [SYS_PY, "-c", code, port]))
        got = srv.wait(6)
    assert r.returncode == 0, r.stderr
    assert [g["tos"] for g in got] == [util.EF] * 6, "every connection still gets the DSCP"
    parent, child = (int(x) for x in r.stdout.split()[1::2])
    warned = [int(m) for m in re.findall(r"sockwrap\[(\d+)\]: warn.*mark", r.stderr, re.I)]
    assert sorted(warned) == sorted([parent, child]), r.stderr


def test_mark_unprivileged_strict_fails_connect(port):
    util.require_sockwrap()
    util.require_root("needs root to drop to nobody")
    util.require_tool("setpriv")
    with tos_server(socket.AF_INET, port) as srv:
        r = run(DROP + util.sockwrap_cmd(["--strict", "--mark", "7"],
                                         [SYS_PY, PEERS / "tcp_client.py", "127.0.0.1", port]))
        got = srv.wait(1, timeout=1)
    assert r.returncode != 0
    assert "PermissionError" in r.stderr, r.stderr
    assert got == []


def test_mark_as_root_is_applied_so_the_eperm_test_can_fail(procs, port):
    """Counter-check for the two tests above: as root the same flag does set the mark."""
    util.require_sockwrap()
    util.require_root()
    with tos_server(socket.AF_INET, port):
        p = procs.spawn_under_sockwrap(["--mark", "7"], peer("tcp_client.py", "127.0.0.1", port, "--hold", "3"))
        assert util.wait_output_line(p).startswith("connected")
        e = util.ss_client(port, "-tnieo")
    assert len(e) == 1 and "fwmark:0x7" in e[0], e


def test_unknown_congestion(tmp_path, port):
    """Refused up front or warned at run time: either way clear, naming the algorithm."""
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port) as srv:
        r = run_under_sockwrap(["--congestion", "nosuchcc"], peer("tcp_client.py", "127.0.0.1", port))
        got = srv.wait(1, timeout=2)
    assert "nosuchcc" in r.stderr, r.stderr
    if r.returncode == 0:
        assert len(got) == 1, "warned at run time: the program still connects"
    else:
        assert got == [], "refused up front: the program must not have run"
