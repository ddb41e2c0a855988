"""What became of each connection (issue 23): the close event's `stats`, the summary's
outcome columns, the Perfetto timeline, and the one line `run`/`trace` print for a
program the library cannot reach.

Witnesses, none of them sockwrap: the peer's own byte counts (a plain socket in this test
process), the kernel's retransmit counter (`nstat TcpRetransSegs`) under a loss the test
makes itself (an nftables table of its own), `ss -ti` on the same live connection, and the
peer's count of accepted connections for the timeline's spans."""
import ast
import errno
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import util
from util import PY, run
from test_trace import read_trace, trace_cmd


def closes(evs):
    """The end events of sockets: the program's close lines and sockwrap's `closed` lines."""
    return [e for e in evs if (e["ev"], e["call"]) == ("call", "close") or e["ev"] == "closed"]


def stats_of(evs, local_port=None, peer_port=None):
    """The stats of the one TCP connection whose connect went to `peer_port` (a client) or
    that was accepted on `local_port` (a server)."""
    fds = set()
    for e in evs:
        if e["ev"] != "call" or e.get("transport") != "tcp" or e.get("ret", -1) < 0:
            continue
        if peer_port and e["call"] == "connect" and e["args"]["addr"].endswith(f":{peer_port}"):
            fds.add((e["pid"], e["fd"]))
        if local_port and e["call"] in ("accept", "accept4") and e["local"].endswith(f":{local_port}"):
            fds.add((e["pid"], e["ret"]))
    assert len(fds) == 1, fds
    ends = [e for e in closes(evs) if (e["pid"], e["fd"]) in fds and "stats" in e]
    assert len(ends) == 1, ends
    return ends[0]["stats"]


# --------------------------------------------------------------------------- bytes

CLIENT = textwrap.dedent("""\
    import os, socket, sys
    port, n, m = (int(a) for a in sys.argv[1:4])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(os.urandom(n))
    got = 0
    while got < m:
        d = s.recv(65536)
        if not d:
            break
        got += len(d)
    print(got, flush=True)
    s.close()
    """)


def test_client_bytes_equal_what_the_peer_counted(tmp_path):
    """A client sends 300001 bytes and gets 123457: its stats say so, as the peer counted."""
    util.require_sockwrap()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    n, m = 300_001, 123_457
    for under in (False, True):
        port = util.free_port()
        peer = util.CountingPeer(port, n, m)
        out = tmp_path / f"t{under}.jsonl"
        cmd = [PY, script, port, n, m]
        r = run(trace_cmd([], cmd, out) if under else cmd, timeout=60)
        peer.close()
        assert r.returncode == 0, r.stderr
        assert int(r.stdout.split()[0]) == m  # the program got everything, either way
        assert peer.counts == [(n, m)]
        if under:
            st = stats_of(read_trace(out), peer_port=port)
            assert (st["bytes_acked"], st["bytes_received"]) == peer.counts[0]
            assert st["bytes_unacked"] == 0
            assert st["segs_out"] > 0 and st["segs_in"] > 0 and st["total_retrans"] == 0
            assert st["duration_ns"] > 0 and st["state"] == "ESTAB"


SERVER = textwrap.dedent("""\
    import os, socket, sys
    ls = socket.socket()
    ls.bind(("127.0.0.1", int(sys.argv[1])))
    ls.listen(1)
    print("ready", flush=True)
    c, _ = ls.accept()
    want, got = int(sys.argv[2]), 0
    while got < want:
        d = c.recv(65536)
        if not d:
            break
        got += len(d)
    c.sendall(os.urandom(int(sys.argv[3])))
    while c.recv(65536):  # to the peer's close, whose FIN acknowledges the answer
        pass
    c.close()
    print(got, flush=True)
    """)


def test_server_bytes_equal_what_the_peer_counted(tmp_path):
    """A server reads the request, answers, and closes after the peer did (the peer's FIN is
    in the kernel's count: taken out; it also acknowledges the whole answer)."""
    util.require_sockwrap()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    n, m = 250_003, 77_777
    for under in (False, True):
        port = util.free_port()
        out = tmp_path / f"s{under}.jsonl"
        cmd = [PY, script, port, n, m]
        procs = util.Procs()
        try:
            p = procs.spawn(trace_cmd([], cmd, out) if under else cmd)
            assert util.wait_output_line(p, 20).strip() == "ready"
            c = socket.create_connection(("127.0.0.1", port), timeout=20)
            c.sendall(os.urandom(n))
            got = util.read_count(c, m)
            c.close()
            assert int(util.wait_output_line(p, 20)) == n
            p.wait(20)
        finally:
            procs.close()
        assert got == m
        if under:
            st = stats_of(read_trace(out), local_port=port)
            assert (st["bytes_acked"], st["bytes_received"]) == (got, n)
            assert st["bytes_unacked"] == 0
            assert st["state"] == "CLOSE-WAIT"  # the peer's FIN came first: taken out


ENDS = textwrap.dedent("""\
    import ctypes, os, socket, sys
    libc = ctypes.CDLL(None, use_errno=True)
    port = int(sys.argv[1])
    socks = []
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"x" * (i + 1) * 1000)
        s.recv(1)  # the peer's one byte: everything before it is acknowledged
        socks.append(s.detach())
    a, b, c, d, e = socks
    os.close(a)                                   # close
    os.dup2(os.open("/dev/null", os.O_RDONLY), b) # dup2 over it
    assert libc.close_range(c, c, 0) == 0         # close_range
    libc.closefrom(e)                             # closefrom (e and above)
    sys.exit(0)                                   # d: still open at exit
    """)


class OneBytePeer(util.AcceptServer):
    """Reads what each connection sends, answers one byte, and counts what it read."""

    def __init__(self, port):
        self.got = []
        super().__init__(port)

    def on_accept(self, c):
        threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        c.settimeout(10)
        n = 0
        with c:
            try:
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    if n == 0:
                        c.sendall(b"!")
                    n += len(d)
            except OSError:
                pass
        self.got.append(n)


def test_every_way_a_descriptor_ends_carries_stats(tmp_path):
    """close, dup2, close_range, closefrom and exit each give one end event with the bytes
    the peer read on that connection."""
    util.require_sockwrap()
    script = tmp_path / "ends.py"
    script.write_text(ENDS)
    port = util.free_port()
    out = tmp_path / "t.jsonl"
    with OneBytePeer(port) as peer:
        r = run(trace_cmd([], [PY, script, port], out), timeout=30)
        assert r.returncode == 0, r.stderr
        assert util.wait_until(lambda: len(peer.got) == 5, 10)
    evs = read_trace(out)
    ends = {e["call"]: e for e in closes(evs) if "stats" in e}
    assert set(ends) == {"close", "dup2", "close_range", "closefrom", "exit"}, ends
    sent = {k: v["stats"]["bytes_acked"] for k, v in ends.items()}
    assert sorted(sent.values()) == sorted(peer.got) == [1000, 2000, 3000, 4000, 5000]
    assert sent == {"close": 1000, "dup2": 2000, "close_range": 3000, "exit": 4000, "closefrom": 5000}
    assert all(v["stats"]["bytes_received"] == 1 for v in ends.values())
    # The summary marks each connection closed, by the call that ended it.
    rep = json.loads(run([util.SOCKWRAP_BIN, "report", "--json", out]).stdout)
    by = sorted(c["closed_by"] for c in rep["connections"] if c["role"] == "client")
    assert by == sorted(sent)
    assert rep["totals"][0]["bytes_acked"] == 15000 and rep["totals"][0]["connections"] == 5


# --------------------------------------------------------------------------- retransmits

def retrans_segs():
    """The kernel's TcpRetransSegs, absolute (`-a`; `-s`: nstat's shared history file is
    neither read for a difference nor written)."""
    r = subprocess.run(["nstat", "-asz", "TcpRetransSegs"], capture_output=True, text=True, timeout=10)
    for line in r.stdout.splitlines():
        if line.startswith("TcpRetransSegs"):
            return int(line.split()[1])
    raise AssertionError(r.stdout + r.stderr)


class Loss:
    """An nftables table of the test's own that drops one packet in `every` of those sent
    to `port` on this machine (the client's data and its ACKs to the peer); removed on exit.
    On the input hook: a packet dropped on output is an error the sender's TCP sees at
    once (no retransmission: it just sends again), one dropped on input is lost on the
    way, as on a network."""

    def __init__(self, port, every):
        self.name = f"sockwrap_loss_{uuid.uuid4().hex[:8]}"
        rules = textwrap.dedent(f"""\
            table inet {self.name} {{
              chain in {{
                type filter hook input priority 0; policy accept;
                tcp dport {port} numgen random mod {every} == 0 counter drop
              }}
            }}
            """)
        r = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr

    def dropped(self):
        r = subprocess.run(["nft", "list", "table", "inet", self.name], capture_output=True,
                           text=True, timeout=10)
        return int(r.stdout.split("packets ")[1].split()[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["nft", "delete", "table", "inet", self.name], capture_output=True, timeout=10)


def test_retransmits_under_loss_and_fewer_without(tmp_path):
    """With one packet in five of the connection dropped, total_retrans > 0 and no more than
    the kernel counted in the same interval (other connections of the machine may add to
    the kernel's count, never to ours); without the loss, fewer."""
    util.require_sockwrap()
    util.require_root("nftables rules need root")
    util.require_tool("nft", "nstat")
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    n, m = 4_000_000, 1000  # about 64 segments of 64 KiB on loopback
    seen = {}
    for lossy in (False, True):
        port = util.free_port()
        peer = util.CountingPeer(port, n, m)
        out = tmp_path / f"r{lossy}.jsonl"
        before = retrans_segs()
        if lossy:
            with Loss(port, 5) as loss:
                r = run(trace_cmd([], [PY, script, port, n, m], out), timeout=120)
                dropped = loss.dropped()
        else:
            r = run(trace_cmd([], [PY, script, port, n, m], out), timeout=60)
        after = retrans_segs()
        peer.close()
        assert r.returncode == 0, r.stderr
        assert peer.counts == [(n, m)]
        st = stats_of(read_trace(out), peer_port=port)
        assert (st["bytes_acked"], st["bytes_received"]) == (n, m)  # loss changes no byte
        seen[lossy] = (st["total_retrans"], after - before)
        # Ours never exceeds what the kernel counted for the whole machine meanwhile.
        assert st["total_retrans"] <= after - before, (st, before, after)
        if lossy:
            assert dropped > 0
            assert st["total_retrans"] > 0, (st, dropped)
    # Without loss a loaded machine may still retransmit a segment or two (a tail-loss probe
    # or a spurious timeout, which the kernel counts too); with one packet in five dropped,
    # each lost data segment has to be sent again, so the lossy run has more.
    assert seen[True][0] > seen[False][0], seen
    print("retransmits (ours, kernel delta):", seen)


# --------------------------------------------------------------------------- RTT

class KeepingServer(util.AcceptServer):
    """Accepts and keeps each connection open, reading nothing."""

    def __init__(self, port):
        self.keep = []
        super().__init__(port)

    def on_accept(self, c):
        self.keep.append(c)


RTT_CLIENT = textwrap.dedent("""\
    import socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    # Small writes the peer never answers: past the first (quick-acknowledged) ones, each
    # is acknowledged by a delayed ACK, so the RTT samples are milliseconds, not
    # loopback's microseconds.
    for _ in range(30):
        s.send(b"x")
        time.sleep(0.05)
    time.sleep(0.3)  # every ACK is in: nothing crosses the connection from here on
    print("ready", flush=True)
    sys.stdin.readline()
    s.close()
    """)


def test_srtt_is_what_ss_reads_just_before_the_close(tmp_path):
    """ss -ti reads the live connection's rtt; the close event's srtt_us is the same value:
    no packet crosses the connection between the two reads, so the kernel's smoothed RTT
    cannot move, and the only difference allowed is ss's rounding (%g of milliseconds: to
    the microsecond at these values, bound 1 µs)."""
    util.require_sockwrap()
    util.require_tool("ss")
    script = tmp_path / "rtt.py"
    script.write_text(RTT_CLIENT)
    port = util.free_port()
    out = tmp_path / "rtt.jsonl"
    procs = util.Procs()
    with KeepingServer(port) as server:
        try:
            p = procs.spawn(trace_cmd([], [PY, script, port], out), stdin=subprocess.PIPE)
            assert util.wait_output_line(p, 20).strip() == "ready"
            entries = util.ss(f"( dport = :{port} )", "-tni")
            assert len(entries) == 1, entries
            ss_rtt_ms = float(util.ss_field(entries[0], "rtt").split("/")[0])
            p.stdin.write("\n")
            p.stdin.flush()
            p.wait(20)
        finally:
            procs.close()
            for c in server.keep:
                c.close()
    st = stats_of(read_trace(out), peer_port=port)
    assert st["srtt_us"] > 1000, st  # delayed ACKs: milliseconds
    assert abs(st["srtt_us"] - ss_rtt_ms * 1000) <= 1, (st["srtt_us"], ss_rtt_ms)
    assert 0 < st["min_rtt_us"] <= st["srtt_us"] * 8


# --------------------------------------------------------------------------- the timeline

TIMELINE_CLIENT = textwrap.dedent("""\
    import socket, sys, threading
    port = int(sys.argv[1])
    def one():
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"hello"); s.close()
    one()
    a = socket.create_connection(("127.0.0.1", port))   # overlaps the next one
    one()
    t = threading.Thread(target=one); t.start(); t.join()
    a.close()
    socket.getaddrinfo("localhost", port)
    """)


def test_perfetto_timeline_has_the_required_fields_and_one_span_per_connection(tmp_path):
    """The Chrome Trace Event format's documented fields: every event has name, ph, ts,
    pid, tid (ts in microseconds); complete events ('X') have dur; processes and threads
    are named by metadata events. One span per connection the peer accepted."""
    util.require_sockwrap()
    script = tmp_path / "tl.py"
    script.write_text(TIMELINE_CLIENT)
    port = util.free_port()
    out = tmp_path / "tl.jsonl"
    with util.AcceptServer(port) as server:
        r = run(trace_cmd([], [PY, script, port], out), timeout=30)
        assert r.returncode == 0, r.stderr
        assert util.wait_until(lambda: server.accepted == 4, 5)
    r = run([util.SOCKWRAP_BIN, "report", "--format", "perfetto", out])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    evs = doc["traceEvents"]
    for e in evs:
        assert {"name", "ph", "ts", "pid", "tid"} <= set(e), e
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        assert e["ph"] in ("X", "i", "M"), e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
    spans = [e for e in evs if e["ph"] == "X" and e["cat"] == "connection"]
    assert len(spans) == server.accepted == 4
    assert all(s["args"]["remote"] == f"127.0.0.1:{port}" for s in spans)
    sent = sorted(s["args"]["bytes_acked"] + s["args"]["bytes_unacked"] for s in spans)
    assert sent == [0, 5, 5, 5]
    # ts is microseconds: the spans lie within the run's own wall time.
    trace = read_trace(out)
    run_us = (max(e["t_mono_ns"] for e in trace) - min(e["t_mono_ns"] for e in trace)) / 1e3
    assert all(s["ts"] + s["dur"] <= run_us + 1000 for s in spans)
    # Named tracks: every pid and tid used has its metadata; spans of one track nest.
    named = {(e["pid"], e["tid"]) for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    procs = {e["pid"] for e in evs if e["ph"] == "M" and e["name"] == "process_name"}
    for e in evs:
        if e["ph"] != "M":
            assert (e["pid"], e["tid"]) in named and e["pid"] in procs, e
    tracks = {}
    for s in sorted((e for e in evs if e["ph"] == "X"), key=lambda e: e["ts"]):
        tracks.setdefault((s["pid"], s["tid"]), []).append((s["ts"], s["ts"] + s["dur"]))
    for spans_ in tracks.values():
        for (s1, e1), (s2, e2) in zip(spans_, spans_[1:]):
            assert e1 <= s2 or e2 <= e1, spans_  # after, or inside
    assert len({s["tid"] for s in spans}) >= 2  # the thread's connection has its own track
    assert any(e["ph"] == "i" and e["cat"] == "resolve" for e in evs)


# --------------------------------------------------------------------------- out of reach

@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    """The same C client (tests/c/connect_once.c) built static and dynamic."""
    d = tmp_path_factory.mktemp("reach")
    return {kind: util.build_c("connect_once", d / kind, *flags)
            for kind, flags in (("static", ["-static"]), ("dynamic", []))}


def reach_lines(stderr):
    """sockwrap's line before the program runs (the summary's first line repeats it)."""
    return [line for line in stderr.splitlines()
            if line.startswith("sockwrap: ") and "libsockwrap.so sets no option" in line]


def test_run_and_trace_say_when_the_library_cannot_reach_a_static_program(clients):
    util.require_sockwrap()
    port = util.free_port()
    with util.AcceptServer(port) as server:
        for prog in ("static", "dynamic"):
            path = clients[prog]
            # Without sockwrap: both connect.
            assert run([path, port]).returncode == 0
            r = util.run_under_sockwrap(["--dscp", "EF"], [path, port])
            t = run([util.SOCKWRAP_BIN, "trace", "--", path, port])
            assert r.returncode == 0 and t.returncode == 0, (r.stderr, t.stderr)
            if prog == "static":
                for out in (r.stderr, t.stderr):
                    lines = reach_lines(out)
                    assert len(lines) == 1, out
                    assert "statically linked" in lines[0] and "--kernel" in lines[0]
                # The trace's summary says first why it is empty.
                assert t.stderr.splitlines()[1].startswith("no trace lines: ")
                assert "statically linked" in t.stderr.splitlines()[1]
                j = run([util.SOCKWRAP_BIN, "trace", "--json", "--log", "off", "--", path, port])
                doc = json.loads(j.stderr)
                assert doc["lines"] == 0 and "statically linked" in doc["why_empty"], j.stderr
                # The silence asked for.
                q = util.run_under_sockwrap(["--dscp", "EF", "--log", "off"], [path, port])
                assert q.returncode == 0 and reach_lines(q.stderr) == [], q.stderr
            else:
                assert reach_lines(r.stderr) == [] and reach_lines(t.stderr) == [], (r.stderr, t.stderr)
                assert "no trace lines" not in t.stderr
        # The connections are made (the clients exited 0); the server's accept thread may
        # still be taking the last from the backlog.
        assert util.wait_until(lambda: server.accepted == 8), server.accepted


def test_a_go_program_and_a_setuid_program_are_said_too(tmp_path, clients):
    util.require_sockwrap()
    util.require_tool("go")
    util.require_root("a set-user-id program of another user needs chown")
    (tmp_path / "c.go").write_text('package main\nimport "net"\nfunc main() { net.Dial("tcp", "127.0.0.1:1") }\n')
    env = dict(os.environ, CGO_ENABLED="0", GO111MODULE="off", GOCACHE=str(tmp_path / "cache"),
               GOPATH=str(tmp_path / "gopath"), GOPROXY="off")
    r = subprocess.run(["go", "build", "-o", str(tmp_path / "goclient"), str(tmp_path / "c.go")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    g = util.run_under_sockwrap([], [tmp_path / "goclient"])
    lines = reach_lines(g.stderr)
    assert len(lines) == 1 and "Go program" in lines[0] and "GODEBUG=multipathtcp=1" in lines[0], g.stderr
    # A dynamic program made set-user-id to another user: secure mode.
    suid = tmp_path / "suid"
    shutil.copy(clients["dynamic"], suid)
    os.chown(suid, 65534, 65534)
    os.chmod(suid, 0o4755)
    os.chmod(tmp_path, 0o755)
    s = util.run_under_sockwrap([], [suid, 1])
    lines = reach_lines(s.stderr)
    assert len(lines) == 1 and "set-user/group-id" in lines[0], s.stderr
    # Witness: the loader really ignored LD_PRELOAD (the trace has no line).
    out = tmp_path / "suid.jsonl"
    t = run([util.SOCKWRAP_BIN, "trace", "-o", out, "--", suid, 1])
    assert out.read_text() == "", t.stderr


def test_a_setcap_program_is_said_to_a_user_other_than_root(request):
    """File capabilities put the loader in secure mode for a user other than root: `run`
    says so in one line, and the witness is the program's own memory map (the library is
    not in it; in the plain copy's it is). Root, for whom the loader stays normal, gets no
    line, and neither does the plain copy."""
    util.require_sockwrap()
    util.require_root("setcap and switching users need root")
    util.require_tool("setcap", "setpriv")
    # pytest's tmp_path is under a 0700 directory: the other user needs one it can read.
    pub = Path(tempfile.mkdtemp(prefix="sockwrap-reach-"))
    request.addfinalizer(lambda: shutil.rmtree(pub, ignore_errors=True))
    pub.chmod(0o755)
    for f in (util.SOCKWRAP_BIN, util.SOCKWRAP_LIB, "/bin/cat"):
        shutil.copy(f, pub)
    plain, capped = pub / "cat", pub / "cat-capped"
    shutil.copy(plain, capped)
    r = subprocess.run(["setcap", "cap_net_raw+ep", str(capped)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr

    def under(prog, user=None):
        cmd = [pub / "sockwrap", "run", "--", prog, "/proc/self/maps"]
        if user:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        r = run(cmd, cwd=pub)
        assert r.returncode == 0, r.stderr
        return r

    c, p = under(capped, 65534), under(plain, 65534)
    lines = reach_lines(c.stderr)
    assert len(lines) == 1 and "file capabilities" in lines[0], c.stderr
    assert "libsockwrap.so" not in c.stdout
    assert reach_lines(p.stderr) == [] and "libsockwrap.so" in p.stdout, p.stderr
    r = under(capped)
    assert reach_lines(r.stderr) == [] and "libsockwrap.so" in r.stdout, r.stderr


ERRNO = textwrap.dedent("""\
    import ctypes, os, socket, sys
    libc = ctypes.CDLL(None, use_errno=True)
    port = int(sys.argv[1])
    def conn():
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"x"); return s.detach()
    out = []
    a, b, c = conn(), conn(), conn()
    ctypes.set_errno(123); out.append((libc.close(a), ctypes.get_errno()))
    ctypes.set_errno(0); out.append((libc.close(a), ctypes.get_errno()))   # closed: EBADF
    null = os.open("/dev/null", os.O_RDONLY)
    ctypes.set_errno(77); out.append((libc.dup2(null, b), ctypes.get_errno()))
    ctypes.set_errno(55); out.append((libc.close_range(c, c, 0), ctypes.get_errno()))
    print(out)
    """)


def test_the_traced_ends_leave_errno_as_the_call_left_it(tmp_path):
    """The TCP_INFO read and the line written around close, dup2 and close_range touch no
    errno: a successful call leaves the program's errno as it was, a failed one sets the
    kernel's (the same program without sockwrap gives the same answers)."""
    util.require_sockwrap()
    script = tmp_path / "errno.py"
    script.write_text(ERRNO)
    port = util.free_port()
    seen = []
    with OneBytePeer(port):
        for cmd in ([PY, script, port], trace_cmd([], [PY, script, port], tmp_path / "e.jsonl")):
            r = run(cmd, timeout=30)
            assert r.returncode == 0, r.stderr
            seen.append(ast.literal_eval(r.stdout.strip()))
    plain, traced = seen
    assert [e for _, e in traced] == [123, errno.EBADF, 77, 55], traced
    assert [r for r, _ in traced][:2] == [0, -1] and traced[3][0] == 0, traced
    assert [e for _, e in plain] == [e for _, e in traced]
    ends = [e for e in closes(read_trace(tmp_path / "e.jsonl")) if "stats" in e]
    assert sorted(e["call"] for e in ends) == ["close", "close_range", "dup2"], ends
