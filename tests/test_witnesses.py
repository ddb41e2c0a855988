"""The witnesses themselves, proven without sockwrap: a program that sets the option by
itself must be seen by the witness, and one that does not must not.  If these fail, no
other test result means anything."""
import socket

import util
from util import EF, PY, Capture, peer, run, ss_client, tos_server


def peer_sees_its_own_tos_and_then_none(family, host, port):
    """A client that sets 0xb8 before connect, then one that sets nothing: what the peer saw."""
    with tos_server(family, port) as srv:
        run(peer("tcp_client.py", host, port, "--set-tos-before", "0xb8"), timeout=10).check_returncode()
        run(peer("tcp_client.py", host, port), timeout=10).check_returncode()
        res = srv.wait(2)
    assert [r["tos"] for r in res] == [EF, 0]


def test_peer_sees_tos_ipv4(port):
    peer_sees_its_own_tos_and_then_none(socket.AF_INET, "127.0.0.1", port)


def test_peer_sees_tclass_ipv6(port):
    util.require_ipv6()
    peer_sees_its_own_tos_and_then_none(socket.AF_INET6, "::1", port)


def test_peer_sees_tos_v4mapped(port):
    with tos_server(socket.AF_INET, port) as srv:
        run(peer("tcp_client.py", "127.0.0.1", port, "--family", "6", "--set-tos-before", "0xb8"),
            timeout=10).check_returncode()
        res = srv.wait(1)
    assert res[0]["tos"] == EF


def test_udp_peer_sees_tos(port):
    with tos_server(socket.AF_INET, port, "udp") as srv:
        run(peer("udp_sender.py", "127.0.0.1", port, "--set-tos", "0xb8", "--count", "2"), timeout=10)
        run(peer("udp_sender.py", "127.0.0.1", port, "--count", "1"), timeout=10)
        res = srv.wait(3)
    assert [r["tos"] for r in res] == [EF, EF, 0]


def test_tcpdump_sees_tos_change_after_connect(port):
    with tos_server(socket.AF_INET, port):
        with Capture(f"tcp port {port}") as cap:
            run(peer("tcp_client.py", "127.0.0.1", port, "--set-tos", "0xb8", "--send-after", "more\n"),
                timeout=10).check_returncode()
    client = cap.to_port(port)
    assert client, cap.text
    assert client[0].flags == "S" and client[0].tos == 0
    assert client[-1].tos == EF, cap.text


def test_ss_sees_keepalive_mark_priority(port, procs):
    util.require_root()
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen()
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 7)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, 5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
    c.connect(("127.0.0.1", port))
    try:
        e = ss_client(port, "-tnieo", extra=["--tos"])
        assert len(e) == 1
        assert util.keepalive_timer(e[0]) is not None
        assert "fwmark:0x7" in e[0] and "class_id:0x5" in e[0] and " reno " in e[0]
    finally:
        c.close()
        srv.close()


def test_nodelay_probe_distinguishes(port):
    srv = util.NagleServer(port)
    try:
        slow = run(peer("nodelay_probe.py", "127.0.0.1", port), timeout=15)
        fast = run(peer("nodelay_probe.py", "127.0.0.1", port, "--nodelay"), timeout=15)
    finally:
        srv.close()
    assert float(slow.stdout.split()[1]) > 20, slow.stdout
    assert float(fast.stdout.split()[1]) < 10, fast.stdout
