"""reuseaddr and reuseport, forced on unmodified servers, proven by the kernel.

sockwrap sets SO_REUSEADDR / SO_REUSEPORT in its bind() hook, before the real bind. The
server here (tests/peers/bind_server.py) sets neither itself. Witnesses, none of them sockwrap:
- the kernel's answer to bind(): EADDRINUSE or success, as the program itself reports it;
- `ss -lnp`: which processes hold a listening / bound socket on the port, and `ss -tnp`:
  which process each accepted connection went to (the kernel spreads them over a
  SO_REUSEPORT group);
- `ss state time-wait`: the port really holds a TIME_WAIT connection when the restarted
  server binds it;
- getsockopt() on the program's own listening socket, duplicated out of it with pidfd_getfd.

Every case also runs the same programs without sockwrap and checks that the kernel then
gives the other answer, so each test can fail."""
import errno
import os
import re
import signal
import socket

import pytest

import util
from test_kernel_view import _session_pids, grab_matching, require_pidfd_getfd
from util import peer, wait_output_line

EADDRINUSE = str(errno.EADDRINUSE)


def start_server(procs, args, host, port, *extra):
    """bind_server.py (under `sockwrap run ARGS` unless args is None); returns (proc, first line split)."""
    cmd = peer("bind_server.py", host, port, *extra)
    p = procs.spawn(cmd) if args is None else procs.spawn_under_sockwrap(args, cmd)
    line = wait_output_line(p).split()
    return p, line


def owners(entries):
    """pids named in the users:(...) field of ss -p entries, one set per entry."""
    return [set(int(x) for x in re.findall(r"pid=(\d+)", e)) for e in entries]


def bound_sockets(port, transport):
    """ss entries of the sockets bound to local :port: listeners (TCP) or unconnected (UDP)."""
    if transport == "tcp":
        return util.ss(f"( sport = :{port} )", "-tlnp", state=None)
    return util.ss(f"( sport = :{port} )", "-ulnp", state=None)


def _host(host):
    if ":" in host:
        util.require_ipv6()
    return host


def _connect_many(host, port, n):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    for _ in range(n):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((host, port))
        socks.append(s)
    return socks


# --------------------------------------------------------------------------- two servers, one port

SHARE = [
    # id, sockwrap args, transport, host
    ("reuseport-tcp4", ["--reuseport"], "tcp", "127.0.0.1"),
    ("reuseport-tcp6", ["--reuseport"], "tcp", "::1"),
    ("reuseport-udp4", ["--reuseport"], "udp", "127.0.0.1"),
    # UDP: two sockets that both have SO_REUSEADDR may bind the same address and port
    ("reuseaddr-udp4", ["--reuseaddr"], "udp", "127.0.0.1"),
]


@pytest.mark.parametrize("name,args,transport,host", SHARE, ids=[c[0] for c in SHARE])
def test_two_servers_bind_one_port(name, args, transport, host, procs, port):
    """Without sockwrap the second server's bind() fails with EADDRINUSE and ss shows one
    socket on the port; under sockwrap both bind and ss shows two, one per process."""
    util.require_sockwrap()
    util.require_tool("ss")
    host = _host(host)
    extra = ("--hold", 15, *(("--udp",) if transport == "udp" else ()))

    a, la = start_server(procs, None, host, port, *extra)
    assert la == ["bound", str(port)], la
    b, lb = start_server(procs, None, host, port, *extra)
    assert lb == ["bind-error", EADDRINUSE], f"second plain server: {lb} (witness cannot fail)"
    assert b.wait(5) == 2
    base = bound_sockets(port, transport)
    assert len(base) == 1 and owners(base)[0] and owners(base)[0] <= set(_session_pids(a.pid)), base
    os.killpg(a.pid, signal.SIGKILL)

    port = util.free_port()
    a, la = start_server(procs, args, host, port, *extra)
    b, lb = start_server(procs, args, host, port, *extra)
    assert la == ["bound", str(port)], (la, a.stderr.read() if a.poll() is not None else "")
    assert lb == ["bound", str(port)], (lb, b.stderr.read() if b.poll() is not None else "")
    pa, pb = set(_session_pids(a.pid)), set(_session_pids(b.pid))

    def one_each():
        o = owners(bound_sockets(port, transport))
        return len(o) == 2 and any(x and x <= pa for x in o) and any(x and x <= pb for x in o)
    assert util.wait_until(one_each, 5), (bound_sockets(port, transport), pa, pb)


def test_reuseport_kernel_spreads_connections_over_both_servers(procs, port):
    """Two unmodified servers under --reuseport form one SO_REUSEPORT group: the kernel
    hands the connections of 32 clients to both of them (ss -tnp: which process holds each
    accepted socket). Without sockwrap the second server cannot bind, and all 32 go to the
    first."""
    util.require_sockwrap()
    util.require_tool("ss")

    def spread(args, port):
        a, la = start_server(procs, args, "127.0.0.1", port, "--hold", 15)
        b, lb = start_server(procs, args, "127.0.0.1", port, "--hold", 15)
        assert la == ["bound", str(port)], la
        pa, pb = set(_session_pids(a.pid)), set(_session_pids(b.pid))
        socks = _connect_many("127.0.0.1", port, 32)
        try:
            def accepted():
                o = owners(util.ss(f"( sport = :{port} )", "-tnp", state="established"))
                return o if len(o) == 32 and all(o) else None
            o = util.wait_until(accepted, 5)
            assert o, util.ss(f"( sport = :{port} )", "-tnp", state="established")
            return lb, sum(1 for x in o if x <= pa), sum(1 for x in o if pb and x <= pb)
        finally:
            for s in socks:
                s.close()
            for p in (a, b):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)

    lb, by_a, by_b = spread(None, port)
    assert lb == ["bind-error", EADDRINUSE] and (by_a, by_b) == (32, 0), (lb, by_a, by_b)
    port = util.free_port()
    lb, by_a, by_b = spread(["--reuseport"], port)
    assert lb == ["bound", str(port)] and by_a + by_b == 32, (lb, by_a, by_b)
    # a hash of the 4-tuple picks the listener: all 32 on one side has odds 2**-31
    assert by_a > 0 and by_b > 0, (by_a, by_b)


# --------------------------------------------------------------------------- restart with TIME_WAIT

@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_reuseaddr_server_restarts_over_time_wait(host, procs, port):
    """A server that closes a connection first leaves it in TIME_WAIT on its port. Restarted
    without sockwrap, its bind() fails with EADDRINUSE; restarted under --reuseaddr (both
    runs, as a restarted service would be), it binds and serves."""
    util.require_sockwrap()
    util.require_tool("ss")
    host = _host(host)

    def restart(args, port):
        p, line = start_server(procs, args, host, port, "--serve-one")
        assert line == ["bound", str(port)], line
        (c,) = _connect_many(host, port, 1)
        with c:
            assert c.recv(16) == b"bye\n"
            assert c.recv(16) == b""  # the server closed first
        assert p.wait(10) == 0
        tw = util.wait_until(lambda: util.ss(f"( sport = :{port} )", "-tn", state="time-wait"), 5)
        assert len(tw) == 1, f"no TIME_WAIT connection on :{port}: {tw}"
        p2, line2 = start_server(procs, args, host, port, "--serve-one")
        if line2[:1] == ["bound"]:
            (c,) = _connect_many(host, port, 1)
            with c:
                assert c.recv(16) == b"bye\n"
            assert p2.wait(10) == 0
        return line2

    assert restart(None, port) == ["bind-error", EADDRINUSE], "the witness cannot fail"
    port = util.free_port()
    assert restart(["--reuseaddr"], port) == ["bound", str(port)]


# --------------------------------------------------------------------------- the kernel's own view

def grab_listener(sid, port):
    """A duplicate of the program's socket bound to local :port, taken with pidfd_getfd."""
    return grab_matching(sid, lambda s: s.getsockname()[1] == port, f"socket on :{port}")


READ = [
    # id, sockwrap args, option, transport
    ("reuseaddr-tcp", ["--reuseaddr"], socket.SO_REUSEADDR, "tcp"),
    ("reuseport-tcp", ["--reuseport"], socket.SO_REUSEPORT, "tcp"),
    ("reuseaddr-udp", ["--reuseaddr"], socket.SO_REUSEADDR, "udp"),
    ("reuseport-udp", ["--reuseport"], socket.SO_REUSEPORT, "udp"),
]


@pytest.mark.parametrize("name,args,opt,transport", READ, ids=[c[0] for c in READ])
def test_bind_option_read_from_kernel(name, args, opt, transport, procs, port):
    """getsockopt on the server's own bound socket, pulled out of the process: 0 without
    sockwrap, 1 under it."""
    util.require_sockwrap()
    util.require_root("pidfd_getfd on another process needs ptrace rights (root)")
    require_pidfd_getfd()
    extra = ("--hold", 15, *(("--udp",) if transport == "udp" else ()))

    def read(args, port):
        p, line = start_server(procs, args, "127.0.0.1", port, *extra)
        assert line == ["bound", str(port)], line
        try:
            s = grab_listener(p.pid, port)
            with s:
                return s.getsockopt(socket.SOL_SOCKET, opt)
        finally:
            os.killpg(p.pid, signal.SIGKILL)

    assert read(None, port) == 0, f"{name} already set without sockwrap: the witness cannot fail"
    assert read(args, util.free_port()) == 1, f"{name}: the kernel reports it unset on the program's socket"
