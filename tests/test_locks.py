"""Locked options survive the program's own setsockopt; soft ones do not; options sockwrap
does not manage pass through; TCP-only options stay off UDP; AF_UNIX is untouched."""
import re
import socket

import pytest

import util
from util import EF, Capture, keepalive_timer, peer, run, run_under_sockwrap, ss_client, tos_server

FAMS = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


def family_for(fam):
    """(family, host) of FAMS[fam], once sockwrap and (for ipv6) IPv6 are there."""
    util.require_sockwrap()
    family, host = FAMS[fam]
    if family == socket.AF_INET6:
        util.require_ipv6()
    return family, host


def capture_client(args, family, host, port, env=None):
    """tcp_client.py sets IP_TOS/IPV6_TCLASS 0x10 itself after connect, then sends more data."""
    cmd = peer("tcp_client.py", host, port, "--set-tos", "0x10", "--send-after", "after\n")
    with tos_server(family, port):
        with Capture(f"tcp dst port {port}") as cap:
            r = run(cmd, env=env) if args is None else run_under_sockwrap(args, cmd, env=env)
            assert r.returncode == 0, r.stderr
    pkts = cap.to_port(port)
    assert pkts and pkts[0].flags == "S", cap.text
    assert any(p.length for p in pkts), cap.text
    return pkts, cap.text, r


@pytest.mark.parametrize("fam", FAMS)
def test_locked_dscp_survives_program_setsockopt(fam, port):
    family, host = family_for(fam)
    base, text, _ = capture_client(None, family, host, port)
    assert base[-1].tos == 0x10, "the program's own IP_TOS must show without sockwrap:\n" + text
    pkts, text, _ = capture_client(["--dscp", "EF"], family, host, util.free_port())
    assert {p.tos for p in pkts} == {EF}, text


@pytest.mark.parametrize("fam", FAMS)
def test_soft_dscp_yields_to_program(fam, port):
    family, host = family_for(fam)
    pkts, text, _ = capture_client(["--soft", "--dscp", "EF"], family, host, port)
    assert pkts[0].tos == EF, "soft DSCP is still the default from the SYN on:\n" + text
    assert pkts[-1].tos == 0x10, "the program's own value must win with --soft:\n" + text


def test_soft_via_policy_list(tmp_path, port):
    util.require_sockwrap()
    cfg = tmp_path / "p.toml"
    cfg.write_text('[[rule]]\ndscp = "EF"\nsoft = ["dscp"]\n')
    pkts, text, _ = capture_client(["-c", cfg], socket.AF_INET, "127.0.0.1", port)
    assert pkts[0].tos == EF and pkts[-1].tos == 0x10, text


def test_override_is_logged_at_info(port):
    """Extra (not proof): the refused setsockopt is reported as overridden."""
    util.require_sockwrap()
    pkts, text, r = capture_client(["--dscp", "EF", "--log", "info"], socket.AF_INET, "127.0.0.1", port)
    assert {p.tos for p in pkts} == {EF}, text
    assert "overridden" in r.stderr, r.stderr


@pytest.mark.parametrize("with_sockwrap", [False, True])
def test_curl_own_keepalive_is_overridden(with_sockwrap, procs, port):
    """curl enables keepalive itself (idle 60 s); a locked --keepalive=30,10,3 wins."""
    util.require_tool("curl")
    with tos_server(socket.AF_INET, port):
        entry = util.curl_entry(procs, port, [], ["--keepalive=30,10,3"] if with_sockwrap else None)
    t = keepalive_timer(entry)
    assert t is not None, entry
    if with_sockwrap:
        assert util.seconds(t) <= 30, entry
    else:
        assert 30 < util.seconds(t) <= 60, entry


def test_program_own_keepalive_passes_through(procs, port):
    """sockwrap manages only dscp: the program's own SO_KEEPALIVE still takes effect."""
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port):
        p = procs.spawn_under_sockwrap(["--dscp", "EF"],
                                       peer("tcp_client.py", "127.0.0.1", port, "--keepalive", "--hold", "3"))
        assert util.wait_output_line(p).startswith("connected")
        e = ss_client(port, "-tnieo", extra=["--tos"])
    assert len(e) == 1, e
    assert keepalive_timer(e[0]) is not None, e[0]
    assert "tos:0xb8" in e[0], e[0]


def test_program_own_nodelay_passes_through():
    util.require_sockwrap()
    port = util.free_port()
    srv = util.NagleServer(port)
    try:
        r = run_under_sockwrap(["--dscp", "EF"], peer("nodelay_probe.py", "127.0.0.1", port, "--nodelay"))
        slow = run_under_sockwrap(["--dscp", "EF"], peer("nodelay_probe.py", "127.0.0.1", port))
    finally:
        srv.close()
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split()[1]) < 10, r.stdout
    assert float(slow.stdout.split()[1]) > 20, slow.stdout


def test_tcp_options_not_applied_to_udp(port):
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port, "udp") as srv:
        r = run_under_sockwrap(["--nodelay", "--keepalive", "--congestion", "reno", "--dscp", "EF"],
                               peer("udp_sender.py", "127.0.0.1", port, "--count", "2"),
                               env={"SOCKWRAP_LOG": "info"})
        got = srv.wait(2)
    assert r.returncode == 0, r.stderr
    assert [d["tos"] for d in got] == [EF, EF]
    bad = [ln for ln in r.stderr.splitlines()
           if re.search(r"\b(warn|warning|error)\b", ln, re.I) and re.search(r"nodelay|keepalive|congestion", ln, re.I)]
    assert not bad, r.stderr


def test_unix_sockets_pass_through():
    util.require_sockwrap()
    args = ["--dscp", "EF", "--nodelay", "--keepalive", "--sndbuf", "4096", "--bind-address", "127.0.0.2"]
    if util.IS_ROOT:
        args += ["--mark", "7"]
    r = run_under_sockwrap(args, peer("unix_echo.py"))
    assert r.returncode == 0 and "echo OK" in r.stdout, r.stdout + r.stderr
    assert "sockwrap" not in r.stderr, "no warning for AF_UNIX sockets: " + r.stderr
