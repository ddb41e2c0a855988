"""Connection actions (deny, redirect, delay, fail) and host-name rules (issue #14).

Witnesses: the client's own result (exit status, errno, the reply it read, how long its
connect took, what getpeername said), the server (how many connections it accepted, which
port answered), the wire (tcpdump: no SYN leaves for a denied connect) and the peer socket
(IP_RECVTOS) for host-name rules. Each is also run without sockwrap, so that the test can
fail. sockwrap's own log and trace prove nothing here, except in the one test whose claim
is that log line and trace event.
"""
import errno
import json
import os
import re
import select
import socket
import subprocess
import textwrap
import threading

import pytest

import util
from util import EF, Capture, peer, run, run_under_sockwrap, tos_server


class EchoServer(util.AcceptServer):
    """Counts the connections it accepts (util.AcceptServer); answers each one's first
    read with `pong:PORT` (so the client can tell which server it reached). HTTP requests
    get an HTTP/1.0 answer with that body, for curl."""

    def __init__(self, port, host="127.0.0.1"):
        self.port = port
        super().__init__(port, host, backlog=512)

    def on_accept(self, c):
        threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        c.settimeout(5)
        try:
            d = c.recv(4096)
            body = f"pong:{self.port}".encode()
            if d.startswith(b"GET "):
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            elif d:
                c.sendall(body)
        except OSError:
            pass
        finally:
            c.close()

    def count(self):
        return self.accepted


def results(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def policy(tmp_path, text, name="policy.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def curl(port, host="127.0.0.1", extra=()):
    return ["curl", "-s", "-m", "5", *extra, f"http://{host}:{port}/"]


def settle(server, n, timeout=3):
    util.wait_until(lambda: server.count() >= n, timeout)
    return server.count()


# --------------------------------------------------------------------------- deny

def test_deny_curl_exits_7_and_no_syn_leaves(port):
    util.require_tool("curl")
    with EchoServer(port) as srv:
        r = run(curl(port))
        assert r.returncode == 0 and r.stdout == f"pong:{port}", r.stdout + r.stderr
        assert settle(srv, 1) == 1
        with Capture(f"tcp dst port {port}") as cap:
            r = run_under_sockwrap(["--deny", "--to", f"127.0.0.1:{port}"], curl(port))
        assert r.returncode == 7, (r.returncode, r.stdout, r.stderr)
        assert srv.count() == 1, "the server saw a connection that was denied"
        assert not [p for p in cap.packets if "S" in (p.flags or "")], cap.text
        # The witness works: the same capture sees the SYN of an allowed connect.
        with Capture(f"tcp dst port {port}") as cap:
            assert run(curl(port)).returncode == 0
        assert [p for p in cap.packets if "S" in (p.flags or "")], cap.text


def test_deny_errno_and_except_from_a_policy_file(tmp_path, port):
    cfg = policy(tmp_path, f"""
        [[rule]]
        name = "no-db"
        match = {{ port = {port}, except = {{ remote = "127.0.0.2" }} }}
        deny = "ENETUNREACH"
        """)
    with EchoServer(port, host="0.0.0.0") as srv:
        cmd = lambda h: peer("action_client.py", "blocking", "4", h, port)
        base = [results(run(cmd(h)))[0] for h in ("127.0.0.1", "127.0.0.2")]
        assert [b["ok"] for b in base] == [True, True]
        got = [results(run_under_sockwrap(["-c", cfg], cmd(h)))[0] for h in ("127.0.0.1", "127.0.0.2")]
        assert got[0] == {"ok": False, "errno": "ENETUNREACH", "elapsed": got[0]["elapsed"]}
        assert got[1]["ok"] and got[1]["reply"] == f"pong:{port}", got
        assert settle(srv, 3) == 3  # two without sockwrap, the excepted one with it


def test_deny_is_logged_at_info_and_traced_before_the_connect(tmp_path, port):
    """Here the log and the trace lines are the claim; that the connect was denied is
    still shown by the client's errno and the server's count."""
    cmd = peer("action_client.py", "blocking", "4", "127.0.0.1", port)
    deny = ["--deny", "--to", f"127.0.0.1:{port}"]
    line = re.compile(rf"sockwrap\[\d+\]: info: fd \d+: connect to 127\.0\.0\.1:{port} denied \(ECONNREFUSED\)")
    with EchoServer(port) as srv:
        assert results(run(cmd))[0]["ok"]
        assert settle(srv, 1) == 1
        logged = {}
        for how, args, env in (("--log info", ["--log", "info", *deny], None),
                               ("SOCKWRAP_LOG=info", deny, {"SOCKWRAP_LOG": "info"}),
                               ("no log level given (warn)", deny, None)):
            r = run_under_sockwrap(args, cmd, env=env)
            assert results(r)[0]["errno"] == "ECONNREFUSED", (how, r.stdout, r.stderr)
            logged[how] = len(line.findall(r.stderr))
        assert logged == {"--log info": 1, "SOCKWRAP_LOG=info": 1, "no log level given (warn)": 0}, logged
        traces = {}
        for name, args in (("denied", deny), ("plain", [])):
            traces[name] = tmp_path / f"{name}.jsonl"
            r = run([util.SOCKWRAP_BIN, "trace", "-o", traces[name], *args, "--", *cmd])
            assert r.returncode == 0, r.stderr
            assert results(r)[0]["ok"] is (name == "plain"), r.stdout
        assert settle(srv, 2) == 2, "only the untraced control and the plain traced run connect"
    read = lambda t: list(enumerate(json.loads(l) for l in t.read_text().splitlines()))
    plain = read(traces["plain"])
    assert not [l for _, l in plain if l["ev"] == "action"], plain
    assert [l["ret"] for _, l in plain if l["ev"] == "call" and l["call"] == "connect"] == [0], plain
    lines = read(traces["denied"])
    conns = [(i, l) for i, l in lines if l["ev"] == "call" and l["call"] == "connect"]
    acts = [(i, l) for i, l in lines if l["ev"] == "action"]
    assert len(conns) == 1 and len(acts) == 1, lines
    (ci, c), (ai, a) = conns[0], acts[0]
    assert ai < ci and a["t_mono_ns"] <= c["t_mono_ns"], (a, c)
    assert (a["call"], a["fd"], a["pid"], a["tid"]) == ("connect", c["fd"], c["pid"], c["tid"]), (a, c)
    assert a["addr"] == f"127.0.0.1:{port}" and a["action"] == {"deny": "ECONNREFUSED"}, a
    assert (c["ret"], c["errno"], c["action"]) == (-1, "ECONNREFUSED", {"deny": "ECONNREFUSED"}), c


# --------------------------------------------------------------------------- except

def test_except_on_a_port(tmp_path, port, port2):
    cfg = policy(tmp_path, f"""
        [[rule]]
        match = {{ remote = "127.0.0.0/8", except = {{ port = {port2} }} }}
        dscp = "EF"
        """)
    cmd = peer("two_dest_client.py", "127.0.0.1", port, port2)
    seen = {}
    for how in ("plain", "sockwrap"):
        with tos_server(socket.AF_INET, port) as a, tos_server(socket.AF_INET, port2) as b:
            r = run(cmd) if how == "plain" else run_under_sockwrap(["-c", cfg], cmd)
            assert r.returncode == 0, r.stderr
            seen[how] = [srv.wait(1)[0]["tos"] for srv in (a, b)]
    assert seen == {"plain": [0, 0], "sockwrap": [EF, 0]}, seen


# --------------------------------------------------------------------------- redirect

def test_redirect_curl_to_a_dead_port_gets_the_live_servers_body(port, port2):
    util.require_tool("curl")
    dead = port2
    with EchoServer(port) as srv:
        r = run(curl(dead))
        assert r.returncode == 7, "nothing may listen on the dead port"
        r = run_under_sockwrap(["--redirect", f"127.0.0.1:{port}", "--to", f":{dead}"], curl(dead))
        assert r.returncode == 0 and r.stdout == f"pong:{port}", (r.returncode, r.stdout, r.stderr)
        assert settle(srv, 1) == 1


@pytest.mark.parametrize("fam", ["6m", "6"])
def test_redirect_ipv6_and_v4_mapped_and_getpeername(tmp_path, port, port2, fam):
    if fam == "6":
        util.require_ipv6()
    host, live_host = ("127.0.0.1", "127.0.0.1") if fam == "6m" else ("::1", "::1")
    dead = port2
    target = f"127.0.0.1:{port}" if fam == "6m" else f"[::1]:{port}"
    cmd = peer("action_client.py", "blocking", fam, host, dead)
    with EchoServer(port, host=live_host) as srv:
        assert results(run(cmd))[0]["errno"] == "ECONNREFUSED"
        got = results(run_under_sockwrap(["--redirect", target, "--to", f":{dead}"], cmd))[0]
        assert got["ok"] and got["reply"] == f"pong:{port}", got
        # The program's view: the address it asked for.
        assert got["peer"][1] == dead, got
        assert got["peer"][0] == ("::ffff:127.0.0.1" if fam == "6m" else "::1"), got
        cfg = policy(tmp_path, f"""
            [[rule]]
            match = {{ port = {dead} }}
            redirect = {{ to = "{target}", peername = "target" }}
            """)
        got = results(run_under_sockwrap(["-c", cfg], cmd))[0]
        assert got["ok"] and got["peer"][1] == port, got
        assert settle(srv, 2) == 2


def test_redirect_nonblocking_asyncio(port, port2):
    dead = port2
    cmd = peer("action_client.py", "asyncio", "127.0.0.1", dead)
    with EchoServer(port) as srv:
        assert results(run(cmd))[0]["ok"] is False
        got = results(run_under_sockwrap(["--redirect", f"127.0.0.1:{port}", "--to", f":{dead}"], cmd))[0]
        assert got["ok"] and got["reply"] == f"pong:{port}" and got["peer"][1] == dead, got
        assert settle(srv, 1) == 1


# --------------------------------------------------------------------------- fail

def pattern(args, port, n=100):
    got = results(run_under_sockwrap(args, peer("action_client.py", "loop", "127.0.0.1", port, n)))
    return got[0]["pattern"]


def test_fail_is_seeded_near_the_rate_and_the_server_counts_the_rest(port):
    with EchoServer(port) as srv:
        assert pattern([], port) == "." * 100
        settle(srv, 100)
        before = srv.count()
        args = ["--fail", "0.3,ECONNRESET", "--to", f":{port}"]
        a = pattern([*args, "--seed", "7"], port)
        b = pattern([*args, "--seed", "7"], port)
        c = pattern([*args, "--seed", "8"], port)
        assert a == b, "the same seed must fail the same connects"
        assert a != c, "another seed must choose otherwise"
        for p in (a, b, c):
            assert 15 <= p.count("x") <= 45, p
        let_through = sum(p.count(".") for p in (a, b, c))
        assert settle(srv, before + let_through) == before + let_through


def test_fail_without_a_seed_says_the_seed_and_it_repeats(port):
    with EchoServer(port):
        cmd = peer("action_client.py", "loop", "127.0.0.1", port, 60)
        r = run_under_sockwrap(["--fail", "0.5", "--to", f":{port}"], cmd)
        m = re.search(r"seed (\d+) \(--seed \d+ repeats this run\)", r.stderr)
        assert m, r.stderr
        first = results(r)[0]["pattern"]
        again = pattern(["--fail", "0.5", "--to", f":{port}", "--seed", m.group(1)], port, 60)
        assert again == first


def test_fail_seed_from_the_environment_is_the_seed_flag(tmp_path, port):
    cfg = policy(tmp_path, f"""
        [[rule]]
        match = {{ port = {port} }}
        fail = {{ rate = 0.3, errno = "ECONNREFUSED" }}
        """)
    cmd = peer("action_client.py", "loop", "127.0.0.1", port, 60)
    with EchoServer(port) as srv:
        assert results(run(cmd))[0]["pattern"] == "." * 60
        runs = {"--seed 11": run_under_sockwrap(["-c", cfg, "--seed", "11"], cmd),
                "SOCKWRAP_SEED=11": run_under_sockwrap(["-c", cfg], cmd, env={"SOCKWRAP_SEED": "11"}),
                "SOCKWRAP_SEED=12": run_under_sockwrap(["-c", cfg], cmd, env={"SOCKWRAP_SEED": "12"}),
                # A flag beats a variable, as for every option.
                "SOCKWRAP_SEED=12 --seed 11": run_under_sockwrap(["-c", cfg, "--seed", "11"], cmd,
                                                                 env={"SOCKWRAP_SEED": "12"})}
        got = {k: results(r)[0]["pattern"] for k, r in runs.items()}
        assert got["SOCKWRAP_SEED=11"] == got["--seed 11"] == got["SOCKWRAP_SEED=12 --seed 11"], got
        assert got["SOCKWRAP_SEED=12"] != got["--seed 11"], got
        assert all(6 <= p.count("x") <= 30 for p in got.values()), got
        assert not [r.stderr for r in runs.values() if "choose with seed" in r.stderr], "a seed was given"
        let_through = 60 + sum(p.count(".") for p in got.values())
        assert settle(srv, let_through) == let_through


def test_fail_choices_are_per_rule(tmp_path, port, port2):
    """Two rules with `fail`, the same rate: each rule has its own sequence, and its
    choices do not depend on the other rule's connects."""
    cfg = policy(tmp_path, f"""
        [[rule]]
        match = {{ port = {port} }}
        fail = {{ rate = 0.5 }}

        [[rule]]
        match = {{ port = {port2} }}
        fail = {{ rate = 0.5 }}
        """)
    cycle = lambda *ports: peer("action_client.py", "cycle", "127.0.0.1", 40, *ports)
    under = lambda *ports: results(run_under_sockwrap(["-c", cfg, "--seed", "5"], cycle(*ports)))[0]["patterns"]
    a, b = str(port), str(port2)
    with EchoServer(port) as sa, EchoServer(port2) as sb:
        assert results(run(cycle(port, port2)))[0]["patterns"] == {a: "." * 40, b: "." * 40}
        alone = {a: under(port)[a], b: under(port2)[b]}
        both = under(port, port2)
        assert both == alone, "a rule's choices moved with the other rule's connects"
        assert alone[a] != alone[b], "the two rules drew the same sequence"
        for p, srv in ((a, sa), (b, sb)):
            assert 8 <= alone[p].count("x") <= 32, alone
            want = 40 + 2 * alone[p].count(".")
            assert settle(srv, want) == want, (p, srv.count(), want)


def test_a_forked_child_chooses_on_a_stream_of_its_own_the_same_in_every_run(port):
    """Per process: after a fork the child does not replay its parent's choices, the parent
    goes on as if it had not forked, and both repeat with the seed."""
    args = ["--fail", "0.5", "--to", f":{port}", "--seed", "9"]
    cmd = peer("action_client.py", "fork", "127.0.0.1", port, 10, 40)
    with EchoServer(port) as srv:
        base = {x["who"]: x for x in results(run(cmd))}
        assert base["child"]["pattern"] == base["parent"]["pattern"] == "." * 40, base
        runs = [{x["who"]: x for x in results(run_under_sockwrap(args, cmd))} for _ in range(2)]
        assert runs[0] == runs[1], "the same seed must make the same choices in parent and child"
        child, parent = runs[0]["child"]["pattern"], runs[0]["parent"]["pattern"]
        one_process = pattern(args, port, 50)
        assert runs[0]["parent"]["before"] + parent == one_process, (runs[0], one_process)
        assert child != parent, "the child replayed its parent's choices"
        assert child != one_process[:40], "the child started over from the seed"
        assert 8 <= child.count("x") <= 32, child
        before = runs[0]["parent"]["before"]
        want = 90 + 2 * (before + parent + child).count(".") + one_process.count(".")
        assert settle(srv, want) == want


# --------------------------------------------------------------------------- delay

def test_delay_asyncio_delays_only_the_matching_connection(port, port2):
    cmd = peer("action_client.py", "asyncio", "127.0.0.1", port, "127.0.0.1", port2)
    with EchoServer(port), EchoServer(port2):
        base = {g["port"]: g for g in results(run(cmd))}
        assert all(g["ok"] and g["elapsed"] < 0.3 for g in base.values()), base
        got = {g["port"]: g for g in results(run_under_sockwrap(["--delay", "700ms", "--to", f":{port2}"], cmd))}
        assert got[port]["ok"] and got[port]["elapsed"] < 0.3, got
        assert got[port2]["ok"] and got[port2]["reply"] == f"pong:{port2}", got
        assert 0.65 <= got[port2]["elapsed"] < 5, got


def test_delay_select_blocking_and_curl(port):
    util.require_tool("curl")
    with EchoServer(port):
        for mode in ("select", "blocking"):
            args = ("4",) if mode == "blocking" else ()
            cmd = peer("action_client.py", mode, *args, "127.0.0.1", port)
            assert results(run(cmd))[0]["elapsed"] < 0.3
            got = results(run_under_sockwrap(["--delay", "500ms", "--to", f":{port}"], cmd))[0]
            assert got["ok"] and got["reply"] == f"pong:{port}" and got["elapsed"] >= 0.45, (mode, got)
        fmt = ["-w", "%{time_connect}", "-o", "/dev/null"]
        assert float(run(curl(port, extra=fmt)).stdout) < 0.3
        r = run_under_sockwrap(["--delay", "500ms", "--to", f":{port}"], curl(port, extra=fmt))
        assert r.returncode == 0 and float(r.stdout) >= 0.45, r.stdout + r.stderr


@pytest.mark.parametrize("fam", ["6m", "6"])
def test_delay_on_ipv6_and_v4_mapped_sockets_leaves_the_socket_as_it_was(port, fam):
    """A parked dual-stack socket must still reach a v4-mapped address, and stay dual-stack
    (binding it to ::1 meanwhile would make it IPv6-only for good)."""
    if fam == "6":
        util.require_ipv6()
    host = "127.0.0.1" if fam == "6m" else "::1"
    cmd = peer("action_client.py", "select6", fam, host, port)
    with EchoServer(port, host=host):
        base = results(run(cmd))[0]
        assert base["ok"] and base["v6only"] == 0 and base["elapsed"] < 0.3, base
        got = results(run_under_sockwrap(["--delay", "400ms", "--to", f":{port}"], cmd))[0]
    assert got["ok"] and got["reply"] == f"pong:{port}" and got["elapsed"] >= 0.35, got
    assert got["v6only"] == 0 and got["peer"][1] == port, got


def test_a_delayed_connect_across_a_veth_uses_the_routes_source_address(port):
    """A parked socket waits connected from the loopback address; its real connect must
    still take the source address of the route to its destination: a server in a network
    namespace of the test's own sees the veth address, as without sockwrap."""
    util.require_root("network namespaces need root")
    util.require_tool("ip")
    ns, a, b = f"swact{os.getpid() % 10000}", "swactA", "swactB"
    sh = lambda *c: subprocess.run(c, check=True, capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", a], capture_output=True)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", b, "netns", ns)
        sh("ip", "addr", "add", "10.79.0.1/24", "dev", a)
        sh("ip", "link", "set", a, "up")
        sh("ip", "-n", ns, "addr", "add", "10.79.0.2/24", "dev", b)
        sh("ip", "-n", ns, "link", "set", b, "up")
        server = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                  f"s.bind(('10.79.0.2',{port}));s.listen(8);print('ready',flush=True)\n"
                  "for _ in range(2):\n c,a=s.accept();print(a[0],flush=True);c.recv(64);c.send(b'pong');c.close()\n")
        srv = subprocess.Popen(["ip", "netns", "exec", ns, util.PY, "-c", server],
                               stdout=subprocess.PIPE, text=True)
        try:
            assert util.wait_output_line(srv).strip() == "ready"
            cmd = peer("action_client.py", "select", "10.79.0.2", port)
            base = results(run(cmd))[0]
            got = results(run_under_sockwrap(["--delay", "300ms"], cmd))[0]
            seen = [util.wait_output_line(srv).strip() for _ in range(2)]
        finally:
            srv.kill()
            srv.wait(5)
        assert base["ok"] and base["elapsed"] < 0.25, base
        assert got["ok"] and got["reply"] == "pong" and got["elapsed"] >= 0.25, got
        assert seen == ["10.79.0.1", "10.79.0.1"], seen
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", a], capture_output=True)


def test_with_no_loopback_to_park_on_a_delayed_connect_gets_its_real_errno_at_once():
    """Where parking cannot work (here: a network namespace whose loopback is down, so the
    library's first park finds no hole to park on), a delayed non-blocking connect goes
    ahead at once, said once, and gets exactly what it gets without sockwrap: never an
    error the real connect would not give."""
    util.require_tool("unshare")
    cmd = ["unshare", "-rn", *peer("action_client.py", "select", "10.79.1.1", 80)]
    base = results(run(cmd))[0]
    assert base == {"ok": False, "errno": "ENETUNREACH", "elapsed": base["elapsed"]}, base
    r = run(["unshare", "-rn", *util.sockwrap_cmd(["--delay", "500ms"], peer("action_client.py", "select", "10.79.1.1", 80))])
    got = results(r)[0]
    assert got["errno"] == "ENETUNREACH" and got["elapsed"] < 0.3, got
    assert r.stderr.count("cannot delay this non-blocking connect here: no loopback hole to park it on") == 1, r.stderr


def test_a_delayed_deny_times_out_later_without_blocking(port, port2):
    cmd = peer("action_client.py", "asyncio", "127.0.0.1", port, "127.0.0.1", port2)
    with EchoServer(port) as srv, EchoServer(port2):
        got = {g["port"]: g for g in results(run_under_sockwrap(
            ["--deny", "ETIMEDOUT", "--delay", "600ms", "--to", f":{port}"], cmd))}
        assert got[port] ["ok"] is False and got[port]["errno"] == "ETIMEDOUT", got
        assert 0.55 <= got[port]["elapsed"] < 5, got
        assert got[port2]["ok"] and got[port2]["elapsed"] < 0.3, "the other connect was held up"
        assert srv.count() == 0


def test_more_delayed_connects_than_parking_places_all_complete(port):
    """64 sockets can wait at once; the rest go ahead at once (said once), none hangs."""
    cmd = peer("action_client.py", "crowd", "127.0.0.1", port, 90)
    with EchoServer(port) as srv:
        r = run_under_sockwrap(["--delay", "400ms", "--to", f":{port}"], cmd, timeout=60)
        got = results(r)[0]
        assert got["replies"] == [f"pong:{port}"], got
        late = [t for t in got["elapsed"] if t >= 0.35]
        assert len(late) >= 64 and len(got["elapsed"]) == 90, got
        assert r.stderr.count("cannot delay this non-blocking connect") == 1, r.stderr
        assert settle(srv, 90) == 90


def test_setuid_while_a_connect_is_delayed_does_not_hang(port):
    """glibc's setuid signals every thread (ours too, asleep in the delay) and waits for
    each: it must return at once, and the delayed connect must still complete."""
    util.require_root("setuid() needs root")
    cmd = peer("action_client.py", "setuid", "127.0.0.1", port)
    with EchoServer(port, host="0.0.0.0"):
        got = results(run_under_sockwrap(["--delay", "500ms", "--to", f":{port}"], cmd, timeout=30))[0]
    assert got["uid"] == 65534 and got["setuid_s"] < 0.4, got
    assert got["writable"] and got["so_error"] == 0 and got["connect"] == 115, got  # EINPROGRESS


def test_a_delayed_socket_closed_by_the_program_breaks_nothing(port):
    cmd = peer("action_client.py", "close", "127.0.0.1", port)
    with EchoServer(port):
        got = results(run_under_sockwrap(["--delay", "300ms", "--to", f":{port}"], cmd))[0]
    assert got == {"first": "EINPROGRESS", "second": f"pong:{port}"}, got


def intrude(addr):
    """A local connect to `addr`, as any other program could make it: `connected` when the
    kernel completed the handshake (a listener then holds it in its queue), else why not."""
    with socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET) as s:
        s.settimeout(0.5)
        try:
            s.connect(addr)
            return "connected"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno))


def syn_sent_from(local):
    """The peers of the SYN-SENT sockets whose local address is `local`, as the kernel
    (ss) lists them."""
    host, port = local
    src = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    peers = []
    for entry in util.ss(f"src {src}", opts="-tn", state="syn-sent"):
        h, _, p = entry.split()[-1].rpartition(":")
        peers.append((h.strip("[]"), int(p)))
    return peers


@pytest.mark.parametrize("fam", ["4", "6"])
def test_nobody_can_connect_to_a_parked_socket_during_its_delay(port, procs, fam):
    """A parked socket waits in SYN_SENT on a loopback *hole* (a listener of the library's
    whose filter keeps no packet). During the delay, a connect from another program must
    reach neither the parked socket nor the hole's queue: the program, polling for
    POLLIN|POLLOUT, would see its socket readable or connected before its own connect had
    even been made."""
    if fam == "6":
        util.require_ipv6()
    util.require_tool("ss")
    host = "127.0.0.1" if fam == "4" else "::1"
    # The probe works: a listener with backlog 0 still queues one connection and turns
    # readable.
    with socket.socket(socket.AF_INET if fam == "4" else socket.AF_INET6) as ls:
        ls.bind((host, 0))
        ls.listen(0)
        assert intrude(ls.getsockname()[:2]) == "connected"
        assert select.select([ls], [], [], 1)[0] == [ls]
    cmd = peer("action_client.py", "parked", fam, host, port)
    with EchoServer(port, host=host) as srv:
        base = results(run(cmd))
        assert base[1]["first"]["revents"] & select.POLLOUT and base[1]["first"]["at"] < 0.3, base
        p = procs.spawn_under_sockwrap(["--delay", "1200ms", "--to", f":{port}"], cmd)
        parked = json.loads(util.wait_output_line(p))
        assert parked["connect"] == "EINPROGRESS" and parked["local"][0] == host, parked
        local = tuple(parked["local"])
        # The kernel's view: the program's socket is in SYN-SENT, towards a loopback port
        # that is not the server's.
        holes = syn_sent_from(local)
        assert len(holes) == 1 and holes[0][0] == host and holes[0][1] != port, holes
        seen = intrude(local), intrude(holes[0])
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        got = json.loads(out.splitlines()[-1])
        assert seen == ("ECONNREFUSED", "timeout"), f"connects to the parked port and to its hole: {seen}"
        # Nothing until the delay ends, then writable and not readable. POLLHUP and
        # POLLERR may come with it: the unpark window (README, delay), a poll between the
        # disconnect from the hole (which leaves ECONNRESET pending until our thread reads
        # it) and our connect; SO_ERROR then waits for the connect and answers 0.
        assert got["first"]["revents"] & ~(select.POLLHUP | select.POLLERR) == select.POLLOUT, got
        assert got["first"]["at"] >= 1.15, got
        assert got["so_error"] == 0 and got["reply"] == f"pong:{port}", got
        assert settle(srv, 2) == 2


# --------------------------------------------------------------------------- host names

def in_private_hosts(tmp_path, hosts_text, script):
    """Runs `script` (sh) in a private mount namespace whose /etc/hosts is `hosts_text`."""
    util.require_root("a private /etc/hosts needs a mount namespace (root)")
    util.require_tool("unshare")
    hosts = tmp_path / "hosts"
    hosts.write_text(hosts_text)
    real = open("/etc/hosts").read()
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts && {script}"],
                       capture_output=True, text=True, timeout=30, env=util._env(None))
    assert open("/etc/hosts").read() == real, "the machine's /etc/hosts must not change"
    return r


def test_host_rule_marks_the_connection_made_by_name(tmp_path, port):
    cfg = policy(tmp_path, """
        [[rule]]
        match = { host = ["db.test", "*.internal.test"] }
        dscp = "EF"
        """)
    trace = tmp_path / "t.jsonl"
    client = " ".join(peer("action_client.py", "byname_then_addr", "db.test", "127.0.0.1", port))
    hosts = "127.0.0.1 localhost\n127.0.0.2 db.test\n"
    # The client connects by name (to 127.0.0.2), reads the reply, then by address (to
    # 127.0.0.1): the server's records are in that order.
    with tos_server(socket.AF_INET, port, host="0.0.0.0", reply=b"ok") as srv:
        r = in_private_hosts(tmp_path, hosts, client)
        assert [x["ok"] for x in results(r)] == [True, True], r.stderr
        plain = [x["tos"] for x in srv.wait(2)]
    assert plain == [0, 0]
    with tos_server(socket.AF_INET, port, host="0.0.0.0", reply=b"ok") as srv, \
            Capture(f"tcp dst port {port}") as cap:
        r = in_private_hosts(tmp_path, hosts,
                             f"{util.SOCKWRAP_BIN} trace -o {trace} -c {cfg} -- {client}")
        assert r.returncode == 0, r.stdout + r.stderr
        got = [x["tos"] for x in srv.wait(2)]
    assert got == [EF, 0], got
    # The wire: every packet to the name's address carries EF, none to the other.
    wire = {dst: {p.tos for p in cap.packets if p.dst == dst} for dst in ("127.0.0.2", "127.0.0.1")}
    assert wire == {"127.0.0.2": {EF}, "127.0.0.1": {0}}, cap.text
    # The summary (on stderr) names the host; the trace has the resolution.
    assert "127.0.0.2:%d (db.test)" % port in r.stderr, r.stderr
    lines = [json.loads(l) for l in trace.read_text().splitlines()]
    res = [l for l in lines if l["ev"] == "resolve" and l["name"] == "db.test"]
    assert res and res[0]["addrs"] == ["127.0.0.2"] and res[0]["result"] == "ok", res
    conns = [l for l in lines if l["ev"] == "call" and l["call"] == "connect"]
    assert [c.get("host") for c in conns] == ["db.test", None], conns


def test_deny_by_host_name(tmp_path, port):
    cfg = policy(tmp_path, """
        [[rule]]
        match = { host = "license.test" }
        deny = "ECONNREFUSED"
        """)
    hosts = "127.0.0.1 localhost license.test\n"
    client = " ".join(peer("action_client.py", "byname", "license.test", port))
    with EchoServer(port) as srv:
        r = in_private_hosts(tmp_path, hosts, client)
        assert results(r)[0]["ok"], r.stderr
        r = in_private_hosts(tmp_path, hosts, f"{util.SOCKWRAP_BIN} run -c {cfg} -- {client}")
        assert results(r)[0]["errno"] == "ECONNREFUSED", r.stdout + r.stderr
        assert settle(srv, 1) == 1


@pytest.fixture(scope="module")
def resolve_connect(tmp_path_factory):
    """tests/c/resolve_connect.c, built once: a client that resolves with a gethostbyname
    form."""
    return util.build_c("resolve_connect", tmp_path_factory.mktemp("c") / "resolve_connect")


DB_TEST = """
    [[rule]]
    match = { host = "db.test" }
    dscp = "EF"
    """
DB_HOSTS = "127.0.0.1 localhost\n127.0.0.2 db.test\n"


@pytest.mark.parametrize("func", ["gethostbyname", "gethostbyname2", "gethostbyname_r", "gethostbyname2_r"])
def test_a_name_resolved_with_gethostbyname_marks_its_address(tmp_path, port, resolve_connect, func):
    """The C client connects to 127.0.0.2 before it resolves anything (not marked), then
    resolves db.test (127.0.0.2) with FUNC and connects again (marked)."""
    cfg = policy(tmp_path, DB_TEST)
    client = f"{resolve_connect} {func} db.test 127.0.0.2 {port}"
    seen = {}
    for how, script in (("plain", client), ("sockwrap", f"{util.SOCKWRAP_BIN} run -c {cfg} -- {client}")):
        with tos_server(socket.AF_INET, port, host="0.0.0.0", reply=b"ok") as srv:
            r = in_private_hosts(tmp_path, DB_HOSTS, script)
            got = results(r)
            assert [(x["step"], x["addr"], x["ok"]) for x in got] == \
                [("addr", "127.0.0.2", True), ("name", "127.0.0.2", True)], (got, r.stderr)
            seen[how] = [x["tos"] for x in srv.wait(2)]
    assert seen == {"plain": [0, 0], "sockwrap": [0, EF]}, seen


def test_except_on_a_host_name(tmp_path, port):
    cfg = policy(tmp_path, f"""
        [[rule]]
        match = {{ port = {port}, except = {{ host = "db.test" }} }}
        dscp = "EF"
        """)
    client = " ".join(peer("action_client.py", "byname_then_addr", "db.test", "127.0.0.1", port))
    seen = {}
    for how, script in (("plain", client), ("sockwrap", f"{util.SOCKWRAP_BIN} run -c {cfg} -- {client}")):
        with tos_server(socket.AF_INET, port, host="0.0.0.0", reply=b"ok") as srv:
            r = in_private_hosts(tmp_path, DB_HOSTS, script)
            assert [x["ok"] for x in results(r)] == [True, True], r.stderr
            seen[how] = [(x["peer"][0], x["tos"]) for x in srv.wait(2)]
    # By name (to 127.0.0.2) is the exception; by address (from 127.0.0.1 to itself) is not.
    assert seen == {"plain": [("127.0.0.1", 0), ("127.0.0.1", 0)],
                    "sockwrap": [("127.0.0.1", 0), ("127.0.0.1", EF)]}, seen


def test_a_name_marks_only_the_process_that_resolved_it(tmp_path, port):
    """Two processes of one run connect to the very same address, 127.0.0.2: the one that
    resolved db.test to it is marked; its sibling, which never resolved the name, is not."""
    cfg = policy(tmp_path, DB_TEST)
    byname = " ".join(peer("action_client.py", "byname", "db.test", port))
    direct = " ".join(peer("action_client.py", "blocking", "4", "127.0.0.2", port))
    both = f"{byname} && {direct}"
    seen = {}
    for how, script in (("plain", both), ("sockwrap", f"{util.SOCKWRAP_BIN} run -c {cfg} -- sh -c '{both}'")):
        with tos_server(socket.AF_INET, port, host="0.0.0.0", reply=b"ok") as srv, \
                Capture(f"tcp dst port {port}") as cap:
            r = in_private_hosts(tmp_path, DB_HOSTS, script)
            got = results(r)
            assert [(x["ok"], x["peer"][0]) for x in got] == [(True, "127.0.0.2")] * 2, (got, r.stderr)
            recs = srv.wait(2)
        # The peer, and the wire: each connection's packets, told apart by source port.
        wire = [{p.tos for p in cap.packets if p.sport == rec["peer"][1]} for rec in recs]
        seen[how] = ([rec["tos"] for rec in recs], wire)
    assert seen == {"plain": ([0, 0], [{0}, {0}]), "sockwrap": ([EF, 0], [{EF}, {0}])}, seen


# --------------------------------------------------------------------------- the trace

def test_trace_shows_both_addresses_of_a_redirect(tmp_path, port, port2):
    trace = tmp_path / "t.jsonl"
    with EchoServer(port):
        r = run([util.SOCKWRAP_BIN, "trace", "-o", trace, "--redirect", f"127.0.0.1:{port}",
                 "--to", f":{port2}", "--",
                 *peer("action_client.py", "blocking", "4", "127.0.0.1", port2)])
        assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in trace.read_text().splitlines()]
    c = [l for l in lines if l["ev"] == "call" and l["call"] == "connect"][0]
    assert c["args"]["addr"] == f"127.0.0.1:{port2}" and c["ret"] == 0, c
    assert c["action"] == {"redirect": f"127.0.0.1:{port}"}, c
    ev = [l for l in lines if l["ev"] == "action"]
    assert len(ev) == 1 and ev[0]["addr"] == f"127.0.0.1:{port2}", ev
    assert ev[0]["action"] == {"redirect": f"127.0.0.1:{port}"} and ev[0]["fd"] == c["fd"], ev
    assert f"redirected to 127.0.0.1:{port}" in r.stderr


# --------------------------------------------------------------------------- check, explain

def test_check_and_explain_know_the_actions(tmp_path):
    bad = policy(tmp_path, """
        [[rule]]
        deny = "EBOGUS"
        fail = { rate = 1.5 }
        redirect = "localhost"
        match = { host = "a*b" }
        """, "bad.toml")
    r = run([util.SOCKWRAP_BIN, "check", bad])
    assert r.returncode == 1
    for want in ["bad.toml:3:8: error: deny: `EBOGUS` is not an errno",
                 "bad.toml:4:17: error: fail.rate: rate 1.5 is outside 0..1",
                 "bad.toml:5:12: error: redirect: `localhost` is not an address:port",
                 "bad.toml:6:18: error: match.host: `a*b` is not a host name"]:
        assert want in r.stderr, r.stderr
    good = policy(tmp_path, """
        [[rule]]
        name = "flaky-db"
        match = { port = 5432 }
        fail = { rate = 0.2, errno = "ECONNRESET" }
        delay = "250ms"

        [[rule]]
        name = "internal"
        match = { host = "*.internal.example", except = { remote = "10.9.0.0/16" } }
        dscp = "AF21"
        redirect = "127.0.0.1:8443"
        """)
    r = run([util.SOCKWRAP_BIN, "check", good])
    assert r.returncode == 0 and "fail=0.2/ECONNRESET" in r.stdout and "delay=250ms" in r.stdout, r.stdout
    r = run([util.SOCKWRAP_BIN, "explain", "-c", good, "--dest", "10.1.1.1:5432"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"fail\s+rate 0.2 errno ECONNRESET\s+from flaky-db", r.stdout), r.stdout
    assert re.search(r"delay\s+250ms\s+from flaky-db", r.stdout), r.stdout
    assert "redirect" not in r.stdout, "no host name given: the host rule must not apply"
    r = run([util.SOCKWRAP_BIN, "explain", "-c", good, "--dest", "10.1.1.1:443", "--host", "api.internal.example"])
    assert re.search(r"redirect\s+127.0.0.1:8443\s+from internal", r.stdout), r.stdout
    r = run([util.SOCKWRAP_BIN, "explain", "-c", good, "--dest", "10.9.1.1:443", "--host", "api.internal.example"])
    assert "no option applies" in r.stdout, r.stdout
    r = run([util.SOCKWRAP_BIN, "run", "--deny", "EBOGUS", "--", "true"])
    assert r.returncode == 2 and "--deny: `EBOGUS` is not an errno" in r.stderr, r.stderr
    r = run([util.SOCKWRAP_BIN, "run", "--redirect", "nowhere", "--", "true"])
    assert r.returncode == 2 and "--redirect:" in r.stderr, r.stderr


def test_attach_says_that_actions_do_not_reach_open_sockets(tmp_path, port, procs):
    cfg = policy(tmp_path, f"""
        [[rule]]
        name = "no-db"
        match = {{ port = {port} }}
        deny = true

        [[rule]]
        dscp = "EF"
        """)
    with EchoServer(port):
        p = procs.spawn([util.PY, "-c", f"import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('up',flush=True)\ntime.sleep(30)"])
        assert util.wait_output_line(p).strip() == "up"
        r = run([util.SOCKWRAP_BIN, "attach", str(p.pid), "-c", cfg, "--dry-run"])
    assert r.returncode == 0, r.stderr
    assert "rule no-db: connection actions (deny, redirect, delay, fail) and host names act on new connects only" in r.stderr, r.stderr
