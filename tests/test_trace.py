"""`sockwrap trace` / `sockwrap report`: the JSON-lines record of every socket call.

Witnesses: strace (an independent record of the same run's connect calls), and the programs'
own view of their connections (each prints the local ports it got).  Schema:
docs/trace-schema.md."""
import json
import re
import socket
import subprocess
import textwrap
import threading

import pytest

import util
from util import PY, run

from test_ssh import sshd  # noqa: F401  (fixture)


def trace_cmd(args, cmd, out=None, json_summary=False):
    c = [str(util.SOCKWRAP_BIN), "trace", *[str(a) for a in args]]
    if out is not None:
        c += ["-o", str(out)]
    if json_summary:
        c.append("--json")
    return c + ["--", *[str(x) for x in cmd]]


def read_trace(path):
    lines = path.read_text().splitlines()
    evs = [json.loads(line) for line in lines]  # every line must parse
    for e in evs:
        assert e["v"] == 1 and {"t_mono_ns", "t_wall_ns", "pid", "tid", "prog", "ev", "call", "fd"} <= set(e), e
    return evs


class Servers:
    """N listening sockets in the test process that accept and close, plus one refused port."""

    def __init__(self, n):
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", util.free_port()))
            s.listen(256)
            self.socks.append(s)
            threading.Thread(target=self._loop, args=(s,), daemon=True).start()
        self.ports = [s.getsockname()[1] for s in self.socks]
        self.refused = util.free_port()

    @staticmethod
    def _loop(s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.close()

    def close(self):
        for s in self.socks:
            s.close()


@pytest.fixture
def servers():
    s = Servers(3)
    yield s
    s.close()


CLIENT = textwrap.dedent("""\
    import socket, sys
    for p in sys.argv[1:]:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", int(p)))
        except OSError:
            pass
        s.close()
    # and one non-blocking connect, completed through poll + SO_ERROR
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(("127.0.0.1", int(sys.argv[1])))
    import select; select.select([], [s], [], 5)
    s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR); s.close()
    """)

STRACE_CONNECT = re.compile(
    r'connect\(\d+, \{sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([\d.]+)"\)\}, \d+\)'
    r'\s*= (-?\d+)(?: (E[A-Z]+))?')


def test_connects_match_strace(tmp_path, servers):
    util.require_sockwrap()
    util.require_tool("strace")
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    out, st = tmp_path / "t.jsonl", tmp_path / "strace.txt"
    ports = servers.ports + [servers.refused]
    r = run(trace_cmd([], ["strace", "-f", "-e", "trace=network", "-o", st, PY, script, *ports], out))
    assert r.returncode == 0, r.stderr
    ours = set()
    for e in read_trace(out):
        if e["ev"] == "call" and e["call"] == "connect" and e.get("transport") == "tcp":
            ours.add((e["args"]["addr"], "ok" if e["ret"] == 0 else e["errno"]))
    theirs = set()
    for line in st.read_text().splitlines():
        m = STRACE_CONNECT.search(line)
        if m:
            port, ip, ret, err = m.groups()
            theirs.add((f"{ip}:{port}", "ok" if ret == "0" else err))
    assert theirs, st.read_text()
    assert ours == theirs
    expected = {(f"127.0.0.1:{p}", "ok") for p in servers.ports}
    expected |= {(f"127.0.0.1:{servers.refused}", "ECONNREFUSED"), (f"127.0.0.1:{servers.ports[0]}", "EINPROGRESS")}
    assert ours == expected
    # The summary sees the non-blocking connect through SO_ERROR: every row has a final result.
    rep = json.loads(run([util.SOCKWRAP_BIN, "report", "--json", out]).stdout)
    clients = [c for c in rep["connections"] if c["role"] == "client"]
    assert sorted(c["result"] for c in clients) == ["ECONNREFUSED", "ok", "ok", "ok", "ok"], clients
    assert all(c["connect_latency_ns"] is not None for c in clients)


def test_ssh_own_tos_and_override(tmp_path, sshd):  # noqa: F811
    util.require_sockwrap()
    port, start, ssh = sshd
    start()
    dest = f"127.0.0.1:{port}"

    def client_events(args, out):
        r = run(trace_cmd(args, ssh + ["-o", "IPQoS=lowdelay", "echo hi"], out))
        assert r.returncode == 0 and r.stdout.strip() == "hi", r.stdout + r.stderr
        assert dest in r.stderr, r.stderr  # the summary table names the connection
        evs = read_trace(out)
        fds = {e["fd"] for e in evs if e["ev"] == "call" and e["call"] == "connect" and e["args"]["addr"] == dest}
        assert len(fds) == 1, evs
        return [e for e in evs if e["fd"] in fds], r.stderr

    evs, _ = client_events([], tmp_path / "plain.jsonl")
    own = [e for e in evs if e["ev"] == "call" and e["call"] == "setsockopt"
           and e["args"]["name"] in ("IP_TOS", "IPV6_TCLASS")]
    assert own, evs
    assert all(e["ret"] == 0 for e in own)
    assert any("DSCP" in e["args"]["value"] for e in own)
    assert not [e for e in evs if e["ev"] in ("apply", "override")]

    evs, table = client_events(["--dscp", "EF"], tmp_path / "ef.jsonl")
    applied = [e for e in evs if e["ev"] == "apply" and e["option"] == "dscp"]
    assert applied and applied[0]["result"] == "ok" and "DSCP EF" in applied[0]["value"], evs
    over = [e for e in evs if e["ev"] == "override"]
    assert over and all(e["kernel"] == "IP_TOS" for e in over), evs
    # the program's own call is still recorded, as the program saw it (success)
    own_after = [e for e in evs if e["ev"] == "call" and e["call"] == "setsockopt"
                 and e["args"]["name"] == "IP_TOS" and e["t_mono_ns"] > over[0]["t_mono_ns"] - 1]
    assert own_after and own_after[0]["ret"] == 0
    assert "overrode IP_TOS" in table


MANY = textwrap.dedent("""\
    import os, socket, subprocess, sys, threading
    port, n = int(sys.argv[1]), int(sys.argv[2])
    def conns():
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect(("127.0.0.1", port))
            os.write(1, f"{os.getpid()} {s.getsockname()[1]}\\n".encode())  # one write: whole lines
            s.close()
    if len(sys.argv) > 3:
        conns(); sys.exit(0)
    ts = [threading.Thread(target=conns) for _ in range(8)]
    for t in ts: t.start()
    kids = [subprocess.Popen([sys.executable, __file__, str(port), str(n), "child"]) for _ in range(3)]
    pid = os.fork()
    if pid == 0:
        conns(); os._exit(0)
    for t in ts: t.join()
    for k in kids: assert k.wait(30) == 0
    os.waitpid(pid, 0)
    """)


def test_threads_and_processes(tmp_path):
    util.require_sockwrap()
    srv = Servers(1)
    try:
        script = tmp_path / "many.py"
        script.write_text(MANY)
        out = tmp_path / "t.jsonl"
        r = run(trace_cmd(["--nodelay"], [PY, script, srv.ports[0], 6], out), timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        srv.close()
    seen = {tuple(int(x) for x in line.split()) for line in r.stdout.split("\n") if line.strip()}
    assert len(seen) == (8 + 3 + 1) * 6
    evs = read_trace(out)  # no torn or interleaved line
    traced = {(e["pid"], int(e["local"].rsplit(":", 1)[1])) for e in evs
              if e["ev"] == "call" and e["call"] == "connect" and e["ret"] == 0}
    assert seen <= traced
    assert len({pid for pid, _ in seen}) == 5  # parent, 3 exec'ed children, 1 forked child
    closes = [e for e in evs if e["call"] == "close"]
    assert len(closes) >= len(seen)
    rep = json.loads(run([util.SOCKWRAP_BIN, "report", "--json", out]).stdout)
    rows = {(c["pid"], int(c["local"].rsplit(":", 1)[1])) for c in rep["connections"]
            if c["role"] == "client" and c["result"] == "ok"}
    assert seen <= rows
    assert rep["bad_lines"] == 0 and rep["processes"] >= 5


def test_report_json_round_trip(tmp_path, servers):
    util.require_sockwrap()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    out = tmp_path / "t.jsonl"
    r = run(trace_cmd(["--dscp", "CS1"], [PY, script, *servers.ports, servers.refused], out, json_summary=True))
    assert r.returncode == 0, r.stderr
    live = json.loads(r.stderr)
    again = run([util.SOCKWRAP_BIN, "report", "--json", out])
    assert again.returncode == 0
    assert json.loads(again.stdout) == live
    rows = live["connections"]
    assert len(rows) == 5
    assert all(c["sockwrap"] == ["dscp=0x20 (DSCP CS1)"] for c in rows), rows
    table = run([util.SOCKWRAP_BIN, "report", out]).stdout
    assert "\x1b[" not in table  # no colour when not a terminal
    assert table.splitlines()[0].split()[:4] == ["PID", "PROG", "ROLE", "PROTO"]
    assert f"127.0.0.1:{servers.refused}" in table and "ECONNREFUSED" in table


def test_exit_status_and_data_path(tmp_path):
    util.require_sockwrap()
    util.require_tool("nm")
    r = run([util.SOCKWRAP_BIN, "trace", "--", PY, "-c", "import sys; sys.exit(7)"])
    assert r.returncode == 7
    assert "0 connection(s)" in r.stderr
    syms = run(["nm", "-D", "--defined-only", util.SOCKWRAP_LIB]).stdout.split()
    for name in ("read", "write", "send", "recv", "sendto", "recvfrom", "sendmsg", "recvmsg"):
        assert name not in syms, f"{name} must not be interposed without --io"
