"""UDP datagrams get the forced DSCP: unconnected sendto and connected send, python and socat.
Witness: the receiver reads IP_TOS / IPV6_TCLASS from each datagram's ancillary data."""
import socket

import pytest

import util
from util import EF, peer, run, run_under_sockwrap, tos_server

FAMS = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("mode", ["sendto", "connected"])
def test_python_udp_sender(fam, mode, port):
    util.require_sockwrap()
    family, host = FAMS[fam]
    if family == socket.AF_INET6:
        util.require_ipv6()
    extra = ["--connect"] if mode == "connected" else []
    with tos_server(family, port, "udp") as srv:
        r = run(peer("udp_sender.py", host, port, "--count", "3", *extra))
        assert r.returncode == 0, r.stderr
        base = srv.wait(3)
    assert [d["tos"] for d in base] == [0, 0, 0]
    port = util.free_port()
    with tos_server(family, port, "udp") as srv:
        r = run_under_sockwrap(["--dscp", "EF"], peer("udp_sender.py", host, port, "--count", "3", *extra))
        assert r.returncode == 0, r.stderr
        got = srv.wait(3)
    assert [d["tos"] for d in got] == [EF, EF, EF], got


def test_udp_tos_exact(port):
    """--tos sets the whole byte on UDP: 40 arrives as 0x28."""
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port, "udp") as srv:
        r = run_under_sockwrap(["--tos", "40"], peer("udp_sender.py", "127.0.0.1", port, "--count", "1"))
        assert r.returncode == 0, r.stderr
        got = srv.wait(1)
    assert got[0]["tos"] == 0x28


@pytest.mark.parametrize("addr", ["UDP4-SENDTO", "UDP4"])
def test_socat_udp(addr, port):
    """socat: UDP4-SENDTO uses sendto on an unconnected socket, UDP4 a connected one."""
    util.require_sockwrap()
    util.require_tool("socat")
    target = f"{addr}:127.0.0.1:{port}"
    with tos_server(socket.AF_INET, port, "udp") as srv:
        r = run(["socat", "-u", "STDIN", target], input="plain\n", timeout=10)
        assert r.returncode == 0, r.stderr
        r = run_under_sockwrap(["--dscp", "EF"], ["socat", "-u", "STDIN", target], input="forced\n", timeout=10)
        assert r.returncode == 0, r.stderr
        got = srv.wait(2)
    assert [(d["data"].strip(), d["tos"]) for d in got] == [(b"plain", 0), (b"forced", EF)]


def test_socat_tcp(port):
    util.require_sockwrap()
    util.require_tool("socat")
    with tos_server(socket.AF_INET, port) as srv:
        r = run(["socat", "-u", "STDIN", f"TCP4:127.0.0.1:{port}"], input="x\n", timeout=10)
        assert r.returncode == 0, r.stderr
        # The server records a connection when its handler thread reads it: wait for the
        # first before making the second, or a busy machine may record them out of order.
        assert len(srv.wait(1)) == 1
        r = run_under_sockwrap(["--dscp", "AF41"], ["socat", "-u", "STDIN", f"TCP4:127.0.0.1:{port}"],
                               input="x\n", timeout=10)
        assert r.returncode == 0, r.stderr
        got = srv.wait(2)
    assert [g["tos"] for g in got] == [0, 0x88]
