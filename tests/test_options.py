"""Each option, forced on an unmodified program, proven by the peer, the wire or the kernel.

Every case also runs the same program without sockwrap and checks that the witness then
shows something else, so each test can fail."""
import os
import socket

import pytest

import util
from util import (EF, Capture, keepalive_timer, peer, run, run_under_sockwrap, skmem, ss_client,
                  ss_field, tos_server, wait_output_line)

# --------------------------------------------------------------------------- helpers


def held_client(procs, args, port, host="127.0.0.1", extra=(), hold=4):
    """python3 tcp_client.py holding its connection open; args=None runs it without sockwrap."""
    cmd = peer("tcp_client.py", host, port, "--hold", hold, *extra)
    p = procs.spawn(cmd) if args is None else procs.spawn_under_sockwrap(args, cmd)
    line = wait_output_line(p)
    if not line.startswith("connected"):
        p.kill()
        raise AssertionError(f"client did not connect: {line!r} {p.communicate(timeout=5)}")
    return p


def client_entry(procs, args, port, host="127.0.0.1", extra=(), ss_opts="-tnieom", ss_extra=("--tos",)):
    """Start a held client (with or without sockwrap) and return the ss entry of its socket."""
    with tos_server(socket.AF_INET6 if ":" in host else socket.AF_INET, port, host=host):
        p = held_client(procs, args, port, host, extra)
        try:
            entries = ss_client(port, ss_opts, extra=list(ss_extra))
            assert len(entries) == 1, entries
            return entries[0]
        finally:
            p.kill()
            p.communicate(timeout=5)


def one_shot(args, port, host="127.0.0.1", extra=(), family=None):
    """Run tcp_client.py once (under sockwrap unless args is None); return the peer's record."""
    fam = family or (socket.AF_INET6 if ":" in host else socket.AF_INET)
    srv_host = "127.0.0.1" if fam == socket.AF_INET else "::1"
    with tos_server(fam, port, host=srv_host) as srv:
        cmd = peer("tcp_client.py", host, port, *extra)
        r = run(cmd) if args is None else run_under_sockwrap(args, cmd)
        assert r.returncode == 0, r.stderr
        res = srv.wait(1)
    assert len(res) == 1, res
    return res[0]


# --------------------------------------------------------------------------- DSCP seen by the peer

@pytest.mark.parametrize("fam", ["ipv4", "ipv6", "v4mapped"])
def test_dscp_seen_by_peer(fam, port):
    util.require_sockwrap()
    if fam == "ipv4":
        kw = dict(host="127.0.0.1")
    elif fam == "ipv6":
        util.require_ipv6()
        kw = dict(host="::1")
    else:
        # AF_INET6 socket connecting to ::ffff:127.0.0.1: the packets are IPv4, so IP_TOS matters
        kw = dict(host="127.0.0.1", extra=("--family", "6"), family=socket.AF_INET)
    assert one_shot(None, port, **kw)["tos"] == 0
    rec = one_shot(["--dscp", "EF"], util.free_port(), **kw)
    assert rec["tos"] == EF, rec


@pytest.mark.parametrize("args,expected", [
    (["--dscp", "EF"], 0xB8),
    (["--dscp", "AF41"], 0x88),
    (["--dscp", "AF11"], 0x28),
    (["--dscp", "CS6"], 0xC0),
    (["--dscp", "LE"], 0x04),
    (["--dscp", "VA"], 0xB0),
    (["--dscp", "46"], 0xB8),
    (["--tos", "40"], 0x28),
])
def test_dscp_spellings(args, expected, port):
    util.require_sockwrap()
    assert one_shot(args, port)["tos"] == expected


def test_dscp_via_environment_without_launcher(port):
    """LD_PRELOAD + SOCKWRAP_DSCP=EF works without the launcher."""
    with tos_server(socket.AF_INET, port) as srv:
        r = util.run_preloaded(peer("tcp_client.py", "127.0.0.1", port), SOCKWRAP_DSCP="EF")
        assert r.returncode == 0, r.stderr
        r = run(peer("tcp_client.py", "127.0.0.1", port))
        assert r.returncode == 0, r.stderr
        res = srv.wait(2)
    assert [x["tos"] for x in res] == [EF, 0]


# --------------------------------------------------------------------------- curl: the wire

@pytest.fixture
def http_server(procs, tmp_path):
    util.require_tool("curl")
    port = util.free_port()
    (tmp_path / "index.html").write_text("hello from http.server\n" * 200)
    procs.spawn([util.PY, "-m", "http.server", "--bind", "127.0.0.1", str(port)], cwd=tmp_path)
    util.wait_listening(port)
    return port


def test_curl_dscp_on_every_client_packet(http_server):
    util.require_sockwrap()
    port = http_server
    url = f"http://127.0.0.1:{port}/"
    with Capture(f"tcp port {port}") as base:
        r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        assert r.stdout == "200"
    with Capture(f"tcp port {port}") as cap:
        r = run_under_sockwrap(["--dscp", "EF"], ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        assert r.stdout == "200", r.stderr
    b = base.to_port(port)
    assert b and {p.tos for p in b} == {0}, base.text
    c = cap.to_port(port)
    assert c and c[0].flags == "S", cap.text
    assert any("F" in (p.flags or "") for p in c), "capture incomplete: no FIN from client"
    assert {p.tos for p in c} == {EF}, cap.text
    # the server was not under sockwrap
    assert {p.tos for p in cap.from_port(port)} == {0}


@pytest.fixture
def silent_server(port):
    """Accepts and never answers: curl stays connected until its own -m timeout."""
    with tos_server(socket.AF_INET, port) as srv:
        yield port, srv


@pytest.mark.parametrize("with_sockwrap", [False, True])
def test_curl_keepalive_timer(with_sockwrap, silent_server, procs):
    util.require_tool("curl")
    port, _ = silent_server
    entry = util.curl_entry(procs, port, ["--no-keepalive"], ["--keepalive=30,10,3"] if with_sockwrap else None)
    timer = keepalive_timer(entry)
    if with_sockwrap:
        assert timer is not None, entry
        assert 20 <= util.seconds(timer) <= 30, entry
    else:
        assert timer is None, entry


# --------------------------------------------------------------------------- kernel witnesses (ss)

def _ka(e):
    t = keepalive_timer(e)
    return t is not None and 20 <= util.seconds(t) <= 30


CASES = [
    # id, args, predicate on the ss entry, needs root
    ("keepalive", ["--keepalive=30,10,3"], _ka, False),
    ("keepalive-bare", ["--keepalive"], lambda e: keepalive_timer(e) is not None, False),
    ("congestion", ["--congestion", "reno"], lambda e: " reno " in f" {e} ", False),
    ("mark", ["--mark", "7"], lambda e: "fwmark:0x7" in e, True),
    ("priority", ["--priority", "5"], lambda e: "class_id:0x5" in e, False),
    ("dscp-ss", ["--dscp", "EF"], lambda e: "tos:0xb8" in e, False),
    # on IPv4 IP_TOS resets SO_PRIORITY: both must survive, whatever the order of flags
    ("dscp+priority", ["--priority", "5", "--dscp", "EF"], lambda e: "tos:0xb8" in e and "class_id:0x5" in e,
     False),
    ("sndbuf", ["--sndbuf", "32768"], lambda e: skmem(e).get("tb") == 65536, False),
    ("rcvbuf", ["--rcvbuf", "32768"], lambda e: skmem(e).get("rb") == 65536, False),
    ("maxseg", ["--maxseg", "1200"], lambda e: 1100 <= int(ss_field(e, "advmss") or 0) <= 1200, False),
    ("bind-interface", ["--bind-interface", "lo"], lambda e: "127.0.0.1%lo:" in e, True),
]


@pytest.mark.parametrize("name,args,pred,root", CASES, ids=[c[0] for c in CASES])
def test_option_seen_by_kernel(name, args, pred, root, procs, port):
    util.require_sockwrap()
    if root:
        util.require_root(f"{name} needs root")
    if name == "congestion":
        avail = open("/proc/sys/net/ipv4/tcp_available_congestion_control").read().split()
        default = open("/proc/sys/net/ipv4/tcp_congestion_control").read().strip()
        util.require("reno" in avail and default != "reno", f"reno must be available and not the default ({default})")
    base = client_entry(procs, None, port)
    assert not pred(base), f"witness shows {name} without sockwrap: {base}"
    forced = client_entry(procs, args, util.free_port())
    assert pred(forced), f"{name} not visible in ss: {forced}"


def test_nodelay_write_write_read():
    util.require_sockwrap()
    port = util.free_port()
    srv = util.NagleServer(port)
    try:
        slow = run(peer("nodelay_probe.py", "127.0.0.1", port), timeout=15)
        fast = run_under_sockwrap(["--nodelay"], peer("nodelay_probe.py", "127.0.0.1", port), timeout=15)
    finally:
        srv.close()
    assert slow.returncode == 0 and fast.returncode == 0, (slow.stderr, fast.stderr)
    assert float(slow.stdout.split()[1]) > 20, slow.stdout   # Nagle + delayed ACK
    assert float(fast.stdout.split()[1]) < 10, fast.stdout


# --------------------------------------------------------------------------- wire witnesses

def test_maxseg_in_syn(port):
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port):
        with Capture(f"tcp dst port {port} and tcp[tcpflags] & tcp-syn != 0") as cap:
            run(peer("tcp_client.py", "127.0.0.1", port)).check_returncode()
            run_under_sockwrap(["--maxseg", "1200"], peer("tcp_client.py", "127.0.0.1", port)).check_returncode()
    syns = [p for p in cap.packets if p.flags == "S"]
    assert len(syns) == 2, cap.text
    assert "mss 1200" not in syns[0].raw
    assert "mss 1200" in syns[1].raw, syns[1].raw


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ttl_on_the_wire(host, port):
    util.require_sockwrap()
    if ":" in host:
        util.require_ipv6()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with tos_server(fam, port):
        with Capture(f"tcp dst port {port}") as base:
            run(peer("tcp_client.py", host, port)).check_returncode()
        with Capture(f"tcp dst port {port}") as cap:
            run_under_sockwrap(["--ttl", "7"], peer("tcp_client.py", host, port)).check_returncode()
    assert base.packets and {p.ttl for p in base.packets} == {64}, base.text
    assert cap.packets and cap.packets[0].flags == "S"
    assert {p.ttl for p in cap.packets} == {7}, cap.text


def test_linger_zero_resets(port):
    """SO_LINGER {on, 0}: close() aborts the connection with RST instead of FIN."""
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port):
        with Capture(f"tcp src port {port} or tcp dst port {port}") as base:
            run(peer("tcp_client.py", "127.0.0.1", port)).check_returncode()
        with Capture(f"tcp src port {port} or tcp dst port {port}") as cap:
            run_under_sockwrap(["--linger", "0"], peer("tcp_client.py", "127.0.0.1", port)).check_returncode()
    b = base.to_port(port)
    assert any("F" in p.flags for p in b) and not any("R" in p.flags for p in b), base.text
    c = cap.to_port(port)
    assert any("R" in p.flags for p in c), cap.text
    assert not any("F" in p.flags for p in c), cap.text


# --------------------------------------------------------------------------- source address / device

def test_bind_address(port):
    util.require_sockwrap()
    assert one_shot(None, port)["peer"][0] == "127.0.0.1"
    rec = one_shot(["--bind-address", "127.0.0.2"], util.free_port())
    assert rec["peer"][0] == "127.0.0.2", rec


def test_bind_address_program_bound_itself_keeps_its_address(port):
    util.require_sockwrap()
    rec = one_shot(["--bind-address", "127.0.0.2"], port, extra=("--bind", "127.0.0.3"))
    assert rec["peer"][0] == "127.0.0.3", rec


def test_bind_address_other_family_untouched(port):
    """An IPv4 source address cannot apply to an IPv6 connection: it must still work."""
    util.require_sockwrap()
    util.require_ipv6()
    rec = one_shot(["--bind-address", "127.0.0.2"], port, host="::1")
    assert rec["peer"][0] == "::1", rec


def test_bind_address_many_connections_do_not_exhaust_ports(port):
    """Forced source address with IP_BIND_ADDRESS_NO_PORT: sequential connections all work."""
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port) as srv:
        r = run_under_sockwrap(["--bind-address", "127.0.0.2"],
                               peer("tcp_client.py", "127.0.0.1", port, "--count", "20"), timeout=30)
        assert r.returncode == 0, r.stderr
        res = srv.wait(20)
    assert len(res) == 20 and {x["peer"][0] for x in res} == {"127.0.0.2"}
