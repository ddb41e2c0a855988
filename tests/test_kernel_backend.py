"""`sockwrap run --kernel`: the policy carried out by cgroup BPF programs.

What the library cannot reach, proved with witnesses other than sockwrap: a static C
binary and a Go binary (tcpdump on the wire, `ss` for the keepalive timer), a static binary
that resets IP_TOS after connect (tcpdump: the locked class stays), a static server with a
server-role rule (its SYN-ACK and data on the wire), glibc's own resolver socket (a DNS stub
of the test's reads the ToS with IP_RECVTOS), connected UDP per destination (each
receiver's IP_RECVTOS), SO_MARK for an unprivileged program (ss fwmark), the IPv6 paths
(an AF_INET6 listener's accepted connections on the wire, a UDP server bound on ::1 and
IPv6 UDP connected and unconnected: the peers' IPV6_RECVTCLASS), congestion, maxseg and the
buffers (ss, and the SYN's MSS option on the wire), bind-interface (ss `%lo`, and the route
in a network namespace of the test's own). Every witness is
also run without sockwrap, so the test can fail. The cgroup tree is checked after every run
and after a `kill -9` of sockwrap.

Traffic stays on loopback; programs attach only to the cgroups sockwrap makes.
"""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

import util
from util import EF

CS1 = 0x20
# An interpreter `nobody` may run (the test's own may live under /root).
SYSTEM_PY = "/usr/bin/python3"

# --------------------------------------------------------------------------- prerequisites

def udp_server_reply_class(procs, cmd, host, port):
    """Starts `cmd` (a UDP server that prints `ready`, answers one datagram with `reply`
    and exits), asks it from `host` and returns the ToS / traffic class its reply carried
    (the client's IP_RECVTOS / IPV6_RECVTCLASS)."""
    p = procs.spawn(cmd)
    assert util.wait_output_line(p).strip() == "ready"
    v6 = ":" in host
    c = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    if v6:
        c.setsockopt(socket.IPPROTO_IPV6, util.IPV6_RECVTCLASS, 1)
    else:
        c.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    c.settimeout(5)
    c.sendto(b"ask", (host, port))
    data, anc, _, _ = c.recvmsg(100, 64)
    c.close()
    assert data == b"reply" and p.wait(timeout=10) == 0
    return util.tos_from_cmsgs(anc)


# The shared helpers, under the names this file always gave them (other suites import them
# from here): util's Sink, client_packets and require_kernel_backend.
require_kernel_backend = util.require_kernel_backend


def our_cgroups():
    """Every sockwrap-PID-START directory anywhere in the cgroup v2 tree."""
    return util.cgroups_named("sockwrap-")


@pytest.fixture(autouse=True)
def no_cgroup_left_behind():
    """Every test here: no cgroup of sockwrap's before, and none after."""
    yield from util.no_cgroups_left("sockwrap-")


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    """The test's own programs: static C binaries of tests/c (client, server, udp, fetch)."""
    d = tmp_path_factory.mktemp("kernel-bins")
    out = {}
    for name in ("client", "server", "udp", "fetch"):
        out[name] = util.build_c(name, d / name, "-static")
        # Static indeed: no program interpreter, so no LD_PRELOAD can reach it.
        assert b"ld-linux" not in out[name].read_bytes()[:4096]
    return out


@pytest.fixture(scope="module")
def go_client(tmp_path_factory):
    """tests/go/client.go, built."""
    exe = util.build_go("client", tmp_path_factory.mktemp("kernel-go"))
    assert b"\xff Go buildinf:" in exe.read_bytes()
    return exe


def kernel(args, cmd, timeout=30, env=None):
    return util.run([util.SOCKWRAP_BIN, "run", "--kernel", *args, "--", *cmd],
                    env=env, timeout=timeout)


def plain(cmd, timeout=30):
    return util.run(cmd, timeout=timeout)


Sink = util.Sink
client_packets = util.client_packets


def keepalive_seconds_while(run_client, port):
    """Runs `run_client` in a thread; returns the keepalive timer `ss` shows for its
    connection to :port (None when it has none) and the client's result."""
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", run_client()), daemon=True)
    t.start()
    entries = util.ss_client(port, timeout=5)
    t.join(30)
    timers = [util.keepalive_timer(e) for e in entries]
    return [util.seconds(x) if x else None for x in timers], res.get("r")


def on_the_wire(run_client, port):
    """Runs `run_client` while tcpdump watches its packets to :port and ss its keepalive
    timer: its result, those packets, the timers (see keepalive_seconds_while), the
    capture's text."""
    with util.Capture(f"tcp dst port {port}") as cap:
        timers, r = keepalive_seconds_while(run_client, port)
    return r, client_packets(cap, port), timers, cap.text


# --------------------------------------------------------------------------- the tests

def test_static_binary_gets_dscp_on_the_wire_and_keepalive_in_ss(bins, port):
    require_kernel_backend()
    client = [bins["client"], "127.0.0.1", port, "plain", 1500]
    with Sink(port):
        r, pkts, timers, text = on_the_wire(
            lambda: kernel(["--dscp", "EF", "--keepalive", "30,10,3"], client), port)
        assert r.returncode == 0, r.stderr
        assert pkts and pkts[0].flags == "S", text
        assert all(p.tos == EF for p in pkts), [hex(p.tos) for p in pkts]
        assert timers and timers[0] is not None and 20 < timers[0] <= 30, timers

        # Control: the same binary without sockwrap.
        r, pkts, timers, text = on_the_wire(lambda: plain(client), port)
        assert r.returncode == 0, r.stderr
        assert pkts and all(p.tos == 0 for p in pkts), [hex(p.tos) for p in pkts]
        assert timers == [None], timers


def test_go_binary_gets_dscp_and_keeps_the_locked_keepalive(go_client, port):
    require_kernel_backend()
    client = [go_client, f"127.0.0.1:{port}"]
    with Sink(port):
        r, pkts, timers, text = on_the_wire(
            lambda: kernel(["--dscp", "EF", "--keepalive", "40,10,3"], client), port)
        assert r.returncode == 0, r.stderr
        assert pkts and pkts[0].flags == "S"
        assert all(p.tos == EF for p in pkts), [hex(p.tos) for p in pkts]
        # Go sets a 15 s keepalive itself after connect; the lock keeps ours (40 s).
        assert timers and timers[0] is not None and 20 < timers[0] <= 40, timers

        r, pkts, timers, text = on_the_wire(lambda: plain(client), port)
        assert pkts and all(p.tos == 0 for p in pkts)
        # Control: Go's own 15 s.
        assert timers and timers[0] is not None and timers[0] <= 15, timers


def test_a_static_binary_that_resets_ip_tos_keeps_the_locked_dscp(bins, port):
    require_kernel_backend()
    client = [bins["client"], "127.0.0.1", port, "reset", 300]
    with Sink(port):
        # Control first: the binary's own IP_TOS 0 after connect takes effect normally.
        with util.Capture(f"tcp dst port {port}") as cap:
            r = plain(client)
        assert r.returncode == 0, r.stderr
        data = [p for p in client_packets(cap, port) if p.length]
        assert data and all(p.tos == 0 for p in data), [(p.flags, hex(p.tos)) for p in data]

        with util.Capture(f"tcp dst port {port}") as cap:
            r = kernel(["--dscp", "EF"], client)
        # The program's setsockopt reported success (it exits 1 if not) ...
        assert r.returncode == 0, r.stderr
        # ... and the class stayed, on every data segment after the reset.
        data = [p for p in client_packets(cap, port) if p.length]
        assert data and all(p.tos == EF for p in data), [(p.flags, hex(p.tos)) for p in data]


RESETTING_SERVER = r"""
import socket, sys
# A server that sets its own class: IP_TOS 0x28 on the listener after listen(), and on the
# accepted socket; then answers. Exits 1 if a setsockopt reports a failure.
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
print("listening", flush=True)
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
c.recv(100)
c.sendall(b"answer\n" * 200)
c.close()
"""


def test_a_server_that_resets_ip_tos_keeps_the_locked_dscp_on_accepted_connections(port, procs):
    """The listener's and the accepted socket's own IP_TOS (0x28, after listen and after
    accept) are kept from changing the locked DSCP: every segment from the server port
    carries EF on the wire (tcpdump); without sockwrap they carry the server's 0x28. Under a
    role-blind policy like this one the TCP sockets have no storage: the setsockopt program
    finds their locks from their addresses (CFG_SOCKET_LOCKS)."""
    require_kernel_backend()

    def serve(under_kernel):
        cmd = [util.PY, "-c", RESETTING_SERVER, port]
        if under_kernel:
            cmd = [util.SOCKWRAP_BIN, "run", "--kernel", "--dscp", "EF", "--", *cmd]
        p = procs.spawn(cmd)
        assert util.wait_output_line(p).strip() == "listening"
        with util.Capture(f"tcp src port {port}") as cap:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"question\n")
                got = b""
                while len(got) < 7 * 200:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            assert got == b"answer\n" * 200
            assert p.wait(timeout=10) == 0  # every setsockopt reported success
        return [x for x in cap.packets if x.sport == port]

    pkts = serve(False)
    data = [x for x in pkts if x.length]
    assert data and all(x.tos == 0x28 for x in data), [(x.flags, hex(x.tos)) for x in pkts]
    pkts = serve(True)
    data = [x for x in pkts if x.length]
    assert data and all(x.tos == EF for x in pkts), [(x.flags, hex(x.tos)) for x in pkts]


def server_role_policy(tmp_path, port):
    """EF for the server side of `port`, CS1 for every client (which must not reach the
    accepted connections)."""
    policy = tmp_path / "server.toml"
    policy.write_text(textwrap.dedent(f"""\
        [[rule]]
        name = "server"
        match = {{ role = "server", local-port = {port} }}
        dscp = "EF"
        [[rule]]
        name = "clients-untouched"
        match = {{ role = "client" }}
        dscp = "CS1"
    """))
    return policy


def served_packets(bins, procs, port, policy, under_kernel, listen=(), client_host="127.0.0.1"):
    """The packets the static server (listening on `listen`, its default address if empty)
    sends to one connection from `client_host`, with or without `run --kernel -c policy`."""
    cmd = [bins["server"], port, *listen]
    if under_kernel:
        cmd = [util.SOCKWRAP_BIN, "run", "--kernel", "-c", policy, "--", *cmd]
    p = procs.spawn(cmd)
    assert util.wait_output_line(p).strip() == "listening"
    with util.Capture(f"tcp src port {port}") as cap:
        with socket.create_connection((client_host, port), timeout=5) as c:
            c.sendall(b"question\n")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b"answer\n"
        assert p.wait(timeout=10) == 0
    return [x for x in cap.packets if x.sport == port]


def test_server_role_rule_reaches_accepted_connections(bins, port, procs, tmp_path):
    require_kernel_backend()
    policy = server_role_policy(tmp_path, port)

    def serve(under_kernel):
        return served_packets(bins, procs, port, policy, under_kernel)

    pkts = serve(True)
    assert pkts and pkts[0].flags == "S.", [x.raw for x in pkts]  # the SYN-ACK too
    assert all(x.tos == EF for x in pkts), [(x.flags, hex(x.tos)) for x in pkts]
    pkts = serve(False)
    assert pkts and all(x.tos == 0 for x in pkts)


def udp_classes_policy(path, remote_a, port_a, remote_b, port_b):
    """A policy file at `path`: UDP to remote_a:port_a gets EF, to remote_b:port_b CS1."""
    path.write_text(textwrap.dedent(f"""\
        [[rule]]
        name = "a"
        match = {{ remote = "{remote_a}", port = {port_a}, transport = "udp" }}
        dscp = "EF"
        [[rule]]
        name = "b"
        match = {{ remote = "{remote_b}", port = {port_b}, transport = "udp" }}
        dscp = "CS1"
    """))
    return path


def test_connected_udp_gets_the_class_of_its_destination(bins, port, port2, tmp_path):
    require_kernel_backend()
    policy = udp_classes_policy(tmp_path / "udp.toml", "127.0.0.1", port, "127.0.0.0/8", port2)
    cmd = [bins["udp"], "connected", port, port2, 5]
    with util.tos_server(socket.AF_INET, port, "udp") as a, \
            util.tos_server(socket.AF_INET, port2, "udp") as b:
        r = kernel(["-c", policy], cmd)
        assert r.returncode == 0, r.stderr
        assert util.wait_until(lambda: len(a.results) == 5 and len(b.results) == 5)
        assert [x["tos"] for x in a.results] == [EF] * 5
        assert [x["tos"] for x in b.results] == [CS1] * 5
    with util.tos_server(socket.AF_INET, port, "udp") as a, \
            util.tos_server(socket.AF_INET, port2, "udp") as b:
        r = plain(cmd)
        assert util.wait_until(lambda: len(a.results) == 5 and len(b.results) == 5)
        assert {x["tos"] for x in a.results + b.results} == {0}


def test_unconnected_udp_gets_the_policy_from_its_second_datagram(bins, port, port2):
    """What 6.18 allows: udp_sendmsg copies the socket's ToS into the datagram before the
    sendmsg hook runs, and sock_create cannot set a ToS. So the first datagram of a socket
    that was never connected or bound leaves without it, the rest carry it. (Per
    destination this would be one datagram late on every change of destination, which is
    why rules naming a destination reach UDP at connect() only.) Debian's 6.1 reads the
    ToS after the hook: there the first datagram carries it too (measured in a VM)."""
    require_kernel_backend()
    cmd = [bins["udp"], "unconnected", port, port2, 4]
    with util.tos_server(socket.AF_INET, port, "udp") as a, \
            util.tos_server(socket.AF_INET, port2, "udp") as b:
        r = kernel(["--dscp", "EF"], cmd)
        assert r.returncode == 0, r.stderr
        assert util.wait_until(lambda: len(a.results) == 4 and len(b.results) == 4)
        got = [x["tos"] for x in a.results]
        assert got[0] in (0, EF) and got[1:] == [EF] * 3, got  # 0 on 6.18, EF on 6.1
        assert [x["tos"] for x in b.results] == [EF] * 4
    with util.tos_server(socket.AF_INET, port, "udp") as a:
        plain(cmd)
        assert util.wait_until(lambda: len(a.results) == 4)
        assert {x["tos"] for x in a.results} == {0}


DNS_STUB = r"""
import socket, struct, sys
IP_RECVTOS = 13
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
s.bind((sys.argv[1], 53))
s.settimeout(15)
print("ready", flush=True)
while True:
    try:
        q, anc, _, peer = s.recvmsg(512, 64)
    except socket.timeout:
        break
    tos = next((a[2][0] for a in anc if a[0] == socket.IPPROTO_IP and a[1] == 1), -1)
    print("query tos", tos, flush=True)
    # Answer A queries with 192.0.2.7, anything else with an empty answer.
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    answers = b""
    n = 0
    if qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 7])
        n = 1
    s.sendto(struct.pack("!HHHHHH", qid, 0x8180, 1, n, 0, 0) + question + answers, peer)
"""


def test_glibc_resolver_sockets_get_the_policy(tmp_path, procs):
    """glibc opens, connects and sends its resolver's UDP socket inside libc: the library
    never sees it (measured: tos 0 under --dscp EF); the kernel backend does."""
    require_kernel_backend()
    util.require_tool("unshare", "getent")
    stub_ip = "127.0.0.77"
    (tmp_path / "stub.py").write_text(DNS_STUB)
    (tmp_path / "resolv.conf").write_text(f"nameserver {stub_ip}\noptions attempts:1 timeout:2\n")
    (tmp_path / "nsswitch.conf").write_text("hosts: dns\n")
    stub = procs.spawn([util.PY, tmp_path / "stub.py", stub_ip])
    assert util.wait_output_line(stub).strip() == "ready"

    def lookup(prefix):
        inner = " ".join(str(x) for x in prefix) + " getent ahostsv4 probe.sockwrap.test"
        script = (f"mount --bind {tmp_path}/resolv.conf /etc/resolv.conf && "
                  f"mount --bind {tmp_path}/nsswitch.conf /etc/nsswitch.conf && exec {inner}")
        r = util.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], timeout=30)
        assert r.returncode == 0, r.stderr
        assert "192.0.2.7" in r.stdout, r.stdout + r.stderr
        line = util.wait_output_line(stub, timeout=5)
        assert line.startswith("query tos"), line
        return int(line.split()[2])

    assert lookup([util.SOCKWRAP_BIN, "run", "--kernel", "--dscp", "EF", "--"]) == EF
    # Control: the same lookup without sockwrap, and under the library (which glibc's
    # resolver never calls).
    assert lookup([]) == 0
    assert lookup([util.SOCKWRAP_BIN, "run", "--dscp", "EF", "--"]) == 0


def test_mark_for_an_unprivileged_program(port):
    """BPF skips the capability check: `nobody` gets SO_MARK, which its own setsockopt
    cannot set (EPERM)."""
    require_kernel_backend()
    util.require_tool(SYSTEM_PY)
    code = ("import socket,sys,time\n"
            "s=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n"
            "try:\n s2=socket.socket(); s2.setsockopt(socket.SOL_SOCKET, 36, 7); print('own mark ok')\n"
            "except PermissionError: print('own mark EPERM')\n"
            "time.sleep(1.5)\n")
    with Sink(port):
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", kernel(
            ["--mark", "0x2a", "--user", "nobody"], [SYSTEM_PY, "-c", code, port])), daemon=True)
        t.start()
        entries = util.ss_client(port, timeout=5)
        t.join(20)
        assert res["r"].returncode == 0, res["r"].stderr
        assert "own mark EPERM" in res["r"].stdout
        assert entries and util.ss_field(entries[0], "fwmark") == "0x2a", entries
        # Control: nobody without sockwrap has no mark.
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", util.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PY, "-c", code,
             port], timeout=20)), daemon=True)
        t.start()
        entries = util.ss_client(port, timeout=5)
        t.join(20)
        assert entries and util.ss_field(entries[0], "fwmark") is None, entries


@pytest.mark.parametrize("flag, option", [
    (["--linger", "5"], "SO_LINGER"),
    (["--ttl", "9"], "IP_TTL"),
])  # --mptcp: converted where the kernel allows it, refused by name elsewhere (test_mptcp_kernel.py)
def test_options_bpf_cannot_set_are_refused_by_name(flag, option):
    require_kernel_backend()
    r = kernel([*flag, "--dscp", "EF"], ["true"])
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if "--kernel cannot set" in l]
    assert len(lines) == 1 and option in lines[0], r.stderr


def test_only_root_may_attach():
    util.require_sockwrap()
    util.require_root("needs root to drop to nobody")
    util.require_tool("setpriv")
    r = util.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                  util.SOCKWRAP_BIN, "run", "--kernel", "--dscp", "EF", "--", "true"])
    assert r.returncode == 3, r.stderr
    assert "only root may attach" in r.stderr


def test_exit_status_and_signals_pass_through():
    require_kernel_backend()
    assert kernel(["--dscp", "EF"], ["sh", "-c", "exit 7"]).returncode == 7
    assert kernel(["--dscp", "EF"], ["sh", "-c", "kill -TERM $$"]).returncode == 128 + 15
    assert kernel(["--dscp", "EF"], ["/nonexistent/program"]).returncode == 127


def test_background_children_keep_the_programs_until_they_end(port):
    """The whole process tree: a child the command left behind still gets the policy."""
    require_kernel_backend()
    code = ("import socket,sys,time\n"
            "time.sleep(0.5)\n"
            "s=socket.create_connection(('127.0.0.1',int(sys.argv[1]))); s.send(b'x'); s.close()\n")
    with Sink(port):
        with util.Capture(f"tcp dst port {port}") as cap:
            t0 = time.monotonic()
            r = kernel(["--dscp", "EF"], ["sh", "-c", f"{util.PY} -c \"{code}\" {port} & exit 0"])
            elapsed = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert elapsed >= 0.4, "sockwrap returned before the background child ended"
        pkts = client_packets(cap, port)
        assert pkts and all(p.tos == EF for p in pkts), [hex(p.tos) for p in pkts]


def leave_a_cgroup_behind(procs):
    """Starts `run --kernel -- sleep`, kills sockwrap with SIGKILL, returns (cgroup, sleeper
    pids): the command outlives it in the leftover cgroup."""
    p = procs.spawn([util.SOCKWRAP_BIN, "run", "--kernel", "--dscp", "EF", "--", "sleep", "30"])
    assert util.wait_until(lambda: len(our_cgroups()) == 1, timeout=10), "no cgroup made"
    cg = our_cgroups()[0]
    sleeper = util.wait_until(lambda: (cg / "cgroup.procs").read_text().split(), timeout=5)
    assert sleeper, "the command is not in the cgroup"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=5)
    return cg, sleeper


def end(pids, cg):
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    assert util.wait_until(lambda: (cg / "cgroup.procs").read_text().strip() == "", timeout=5)


def test_doctor_finds_and_removes_the_leftovers_of_a_killed_sockwrap(procs):
    require_kernel_backend()
    cg, sleeper = leave_a_cgroup_behind(procs)
    d = util.run([util.SOCKWRAP_BIN, "doctor"])
    assert d.returncode == 1 and "still run in it" in d.stdout, d.stdout
    end(sleeper, cg)
    # Not root: reported, not removed.
    d = util.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                  util.SOCKWRAP_BIN, "doctor"])
    assert f"leftover cgroup {cg}" in d.stdout and cg.exists(), d.stdout
    d = util.run([util.SOCKWRAP_BIN, "doctor"])
    assert f"removed the leftover cgroup {cg}" in d.stdout, d.stdout
    assert not cg.exists()


def test_doctor_says_only_the_kernel_backend_reaches_static_and_go(bins, go_client):
    util.require_sockwrap()
    for prog in (bins["client"], go_client):
        d = util.run([util.SOCKWRAP_BIN, "doctor", prog])
        assert "backend: only the kernel backend reaches it: sudo sockwrap run --kernel" in d.stdout, d.stdout
    d = util.run([util.SOCKWRAP_BIN, "doctor", "/bin/true"])
    assert "backend: the library (sockwrap run) reaches" in d.stdout, d.stdout


def test_explain_kernel_shows_the_hook_and_its_calls():
    util.require_sockwrap()
    r = util.run([util.SOCKWRAP_BIN, "explain", "--kernel", "--dscp", "EF", "--mark", "5",
                  "--soft", "mark", "--dest", "10.0.0.1:22"])
    assert r.returncode == 0, r.stderr
    assert "cgroup/connect4 (connect to 10.0.0.1:22):" in r.stdout
    assert "bpf_setsockopt(IP_TOS, 184 (0xb8))" in r.stdout
    assert "bpf_setsockopt(SO_MARK, 5 (0x5))" in r.stdout
    assert "which reports success): dscp\n" in r.stdout, r.stdout  # mark is soft
    r = util.run([util.SOCKWRAP_BIN, "explain", "--kernel", "--linger", "3", "--dest", "10.0.0.1:22"])
    assert "refuses rule `flags`: linger: SO_LINGER" in r.stdout, r.stdout


def test_kill_9_leftovers_are_removed_by_the_next_run(procs):
    require_kernel_backend()
    p = procs.spawn([util.SOCKWRAP_BIN, "run", "--kernel", "--dscp", "EF", "--", "sleep", "30"])
    assert util.wait_until(lambda: len(our_cgroups()) == 1, timeout=10), "no cgroup made"
    cg = our_cgroups()[0]
    assert cg.name == f"sockwrap-{p.pid}-" + cg.name.split("-")[2]
    sleeper = util.wait_until(lambda: (cg / "cgroup.procs").read_text().split(), timeout=5)
    assert sleeper, "the command is not in the cgroup"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=5)
    # The programs were attached through BPF links: they went with sockwrap.
    if shutil.which("bpftool"):
        shown = subprocess.run(["bpftool", "cgroup", "show", str(cg)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=10)
        assert "sw_" not in shown.stdout, shown.stdout
    # While the command still runs in it, the next run leaves it alone and says so.
    r = kernel([], ["true"])
    assert r.returncode == 0, r.stderr
    assert "still run in it" in r.stderr and cg.exists(), r.stderr
    for pid in sleeper:
        os.kill(int(pid), signal.SIGKILL)
    assert util.wait_until(lambda: (cg / "cgroup.procs").read_text().strip() == "", timeout=5)
    r = kernel([], ["true"])
    assert r.returncode == 0, r.stderr
    assert f"removed the leftover cgroup {cg}" in r.stderr, r.stderr
    assert our_cgroups() == []


def test_nothing_is_left_in_the_cgroup_tree_after_a_run():
    require_kernel_backend()
    root = util.cgroup2_mount()
    before = sorted(str(p) for p, _, _ in os.walk(root))
    r = kernel(["--dscp", "EF"], ["sh", "-c", "cat /proc/self/cgroup"])
    assert r.returncode == 0, r.stderr
    # The command ran in a child of sockwrap's own cgroup, named after sockwrap.
    line = [l for l in r.stdout.splitlines() if l.startswith("0::")][0]
    assert "/sockwrap-" in line, line
    after = sorted(str(p) for p, _, _ in os.walk(root))
    assert after == before


def test_ipv6_and_v4_mapped_connections_get_the_class(port):
    """connect6: a native IPv6 connection carries the traffic class, and an AF_INET6 socket
    connecting to a v4-mapped address carries the ToS in its IPv4 header."""
    require_kernel_backend()
    util.require_ipv6()
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET6)\n"
            "s.connect((sys.argv[1], int(sys.argv[2]))); s.send(b'x'); s.close()\n")
    for host, sink_host, fam in (("::1", "::1", 6), ("::ffff:127.0.0.1", "127.0.0.1", 4)):
        with Sink(port, host=sink_host):
            with util.Capture(f"tcp dst port {port}") as cap:
                r = kernel(["--dscp", "EF"], [util.PY, "-c", code, host, port])
            assert r.returncode == 0, r.stderr
            pkts = client_packets(cap, port)
            assert pkts and all(p.family == fam and p.tos == EF for p in pkts), \
                [(p.family, hex(p.tos)) for p in pkts]
            with util.Capture(f"tcp dst port {port}") as cap:
                r = plain([util.PY, "-c", code, host, port])
            pkts = client_packets(cap, port)
            assert pkts and all(p.tos == 0 for p in pkts)


def test_source_address_is_bound_by_bpf_bind(bins, port):
    """connect4: bpf_bind gives the static client the source address (the peer sees it)."""
    require_kernel_backend()
    peers = []

    class Peer(Sink):
        def on_accept(self, c):
            peers.append(c.getpeername()[0])
            super().on_accept(c)

    client = [bins["client"], "127.0.0.1", port, "plain", 10]
    with Peer(port):
        r = kernel(["--bind-address", "127.0.0.5"], client)
        assert r.returncode == 0, r.stderr
        r = plain(client)
        assert util.wait_until(lambda: len(peers) == 2)
    assert peers == ["127.0.0.5", "127.0.0.1"]


def test_program_rules_match_the_kernel_name(bins, port, tmp_path):
    """A `program` rule matches the task's name (comm: the executable's name, 15 bytes)."""
    require_kernel_backend()
    policy = tmp_path / "prog.toml"
    policy.write_text('[[rule]]\nname = "by-name"\nmatch = { program = "client" }\ndscp = "EF"\n')
    other = tmp_path / "not-the-client"
    shutil.copy(bins["client"], other)
    with Sink(port):
        for prog, want in ((bins["client"], EF), (other, 0)):
            with util.Capture(f"tcp dst port {port}") as cap:
                r = kernel(["-c", policy], [prog, "127.0.0.1", port, "plain", 10])
            assert r.returncode == 0, r.stderr
            pkts = client_packets(cap, port)
            assert pkts and all(p.tos == want for p in pkts), (prog, [hex(p.tos) for p in pkts])


def test_a_refused_option_is_reported_and_fails_the_call_under_strict(port):
    """The kernel refuses an option while the command runs: counted and said at the end;
    with --strict, the connect itself fails (EPERM)."""
    require_kernel_backend()
    code = ("import socket,sys\n"
            "try:\n socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close(); print('connected')\n"
            "except PermissionError: print('EPERM')\n")
    with Sink(port):
        r = kernel(["--congestion", "nosuchcc"], [util.PY, "-c", code, port])
        assert r.returncode == 0 and r.stdout.strip() == "connected", r.stdout + r.stderr
        assert "congestion (TCP_CONGESTION) was refused by the kernel 1 time" in r.stderr, r.stderr
        r = kernel(["--strict", "--congestion", "nosuchcc"], [util.PY, "-c", code, port])
        assert r.stdout.strip() == "EPERM", r.stdout + r.stderr
        r = plain([util.PY, "-c", code, port])
        assert r.stdout.strip() == "connected"


def test_a_policy_with_errors_runs_the_program_untouched_unless_strict(bins, port, tmp_path):
    """As the library: one line per problem, then the program runs untouched -- no cgroup,
    no programs, not even the policy's good rule (the wire: tos 0), its exit status its
    own; --strict or on_error = "fail" refuse to start it (exit 2, nothing sent). The
    library's run of the same policy says and does the same."""
    require_kernel_backend()
    broken = textwrap.dedent("""\
        [[rule]]
        name = "good"
        dscp = "EF"
        [[rule]]
        name = "bad"
        match = { port = 22 }
        dscp = "XX"
    """)
    policy = tmp_path / "broken.toml"
    policy.write_text(broken)
    failing = tmp_path / "broken-fail.toml"
    failing.write_text('on_error = "fail"\n' + broken)
    client = [bins["client"], "127.0.0.1", port, "plain", 10]
    with Sink(port) as sink:
        with util.Capture(f"tcp dst port {port}") as cap:
            r = kernel(["-c", policy], client)
        assert r.returncode == 0, r.stderr
        errors = [l for l in r.stderr.splitlines() if "is not a DSCP" in l]
        assert len(errors) == 1 and "broken.toml:7:8" in errors[0], r.stderr
        assert "the policy has errors; running the program untouched" in r.stderr, r.stderr
        pkts = client_packets(cap, port)
        assert pkts and pkts[0].flags == "S" and all(p.tos == 0 for p in pkts), \
            [hex(p.tos) for p in pkts]
        # Untouched: not moved into a cgroup of sockwrap's, and its own exit status.
        r = kernel(["-c", policy], ["sh", "-c", "cat /proc/self/cgroup; exit 7"])
        assert r.returncode == 7, r.stderr
        assert "/sockwrap-" not in r.stdout, r.stdout
        # Control for the wire: the good rule alone does mark the connection.
        good = tmp_path / "good.toml"
        good.write_text(broken.split("[[rule]]\nname = \"bad\"")[0])
        with util.Capture(f"tcp dst port {port}") as cap:
            assert kernel(["-c", good], client).returncode == 0
        pkts = client_packets(cap, port)
        assert pkts and all(p.tos == EF for p in pkts), [hex(p.tos) for p in pkts]
        accepted = sink.accepted
        # --strict, and on_error = "fail": refused, the program never runs.
        with util.Capture(f"tcp dst port {port}") as cap:
            for args in (["--strict", "-c", policy], ["-c", failing]):
                r = kernel(args, client)
                assert r.returncode == 2, r.stderr
                assert "refusing to start the program: the policy has errors" in r.stderr, r.stderr
        assert cap.to_port(port) == [] and sink.accepted == accepted, cap.text
    # The library's run of the same files: the same outcome.
    assert util.run([util.SOCKWRAP_BIN, "run", "-c", policy, "--", "true"]).returncode == 0
    for args in (["--strict", "-c", policy], ["-c", failing]):
        assert util.run([util.SOCKWRAP_BIN, "run", *args, "--", "true"]).returncode == 2


def test_a_signal_after_the_command_ended_reaches_what_it_left_running(procs):
    require_kernel_backend()
    p = procs.spawn([util.SOCKWRAP_BIN, "run", "--kernel", "--dscp", "EF", "--",
                     "sh", "-c", "sleep 30 & exit 3"])
    assert util.wait_until(lambda: len(our_cgroups()) == 1, timeout=10)
    cg = our_cgroups()[0]
    # The shell is gone, its sleep remains: sockwrap waits for it.
    assert util.wait_until(lambda: len((cg / "cgroup.procs").read_text().split()) == 1, timeout=5)
    time.sleep(0.3)
    assert p.poll() is None, "sockwrap returned while a process of the command still ran"
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=10) == 3  # the command's own status
    assert not cg.exists()


def udp_server_gets_the_server_class(procs, policy, host, port):
    """A UDP server bound on host:port answers one datagram: under a server-role policy
    (written to `policy`) its reply carries EF, without sockwrap 0 (the client's
    IP_RECVTOS / IPV6_RECVTCLASS)."""
    policy.write_text(f'[[rule]]\nname = "dns-like"\nmatch = {{ role = "server", local-port = {port}, '
                      f'transport = "udp" }}\ndscp = "EF"\n')
    family = "AF_INET6" if ":" in host else "AF_INET"
    server = ("import socket,sys\n"
              f"s=socket.socket(socket.{family}, socket.SOCK_DGRAM)\n"
              f"s.bind(('{host}', int(sys.argv[1]))); print('ready', flush=True)\n"
              "s.settimeout(10)\n"
              "d, peer = s.recvfrom(100); s.sendto(b'reply', peer)\n")

    for cmd, want in (([util.SOCKWRAP_BIN, "run", "--kernel", "-c", policy, "--", util.PY, "-c", server, port], EF),
                      ([util.PY, "-c", server, port], 0)):
        assert udp_server_reply_class(procs, cmd, host, port) == want, cmd


def test_a_bound_udp_server_replies_with_the_server_class(port, procs, tmp_path):
    """bind4: a UDP server's socket gets the server-role options when it binds, so its
    replies (sendto on a bound, unconnected socket) carry the class: the client's IP_RECVTOS."""
    require_kernel_backend()
    udp_server_gets_the_server_class(procs, tmp_path / "udp-server.toml", "127.0.0.1", port)


# --------------------------------------------------------------------------- IPv6 paths

@pytest.mark.parametrize("host, client_host, fam", [
    ("::1", "::1", 6),                          # native IPv6: the traffic class
    ("::ffff:127.0.0.1", "127.0.0.1", 4),       # an AF_INET6 listener, an IPv4 peer: the ToS
])
def test_ipv6_listener_with_a_server_role_rule_marks_accepted_connections(
        bins, port, procs, tmp_path, host, client_host, fam):
    """sock_ops on an AF_INET6 listener: the SYN-ACK and the data of accepted connections
    carry the server rule's class, native IPv6 and v4-mapped alike (tcpdump)."""
    require_kernel_backend()
    util.require_ipv6()
    policy = server_role_policy(tmp_path, port)

    def serve(under_kernel):
        return served_packets(bins, procs, port, policy, under_kernel, [host], client_host)

    pkts = serve(True)
    assert pkts and pkts[0].flags == "S.", [x.raw for x in pkts]
    assert all(x.family == fam and x.tos == EF for x in pkts), \
        [(x.family, x.flags, hex(x.tos)) for x in pkts]
    pkts = serve(False)
    assert pkts and all(x.family == fam and x.tos == 0 for x in pkts), \
        [(x.family, x.flags, hex(x.tos)) for x in pkts]


def test_a_udp_server_bound_on_ipv6_replies_with_the_server_class(port, procs, tmp_path):
    """bind6: a UDP server bound on ::1 gets the server-role options when it binds; its
    replies carry the class (the client's IPV6_RECVTCLASS)."""
    require_kernel_backend()
    util.require_ipv6()
    udp_server_gets_the_server_class(procs, tmp_path / "udp6-server.toml", "::1", port)


def test_ipv6_udp_connected_per_destination_and_unconnected(bins, port, port2, tmp_path):
    """connect6 for connected IPv6 UDP (each destination its own class) and sendmsg6 for an
    unconnected AF_INET6 socket's sendto (from its second datagram on, as for IPv4: the
    kernel copies the class into the datagram before the hook runs; 6.1 reads it after, so
    there the first carries it too): each receiver's IPV6_RECVTCLASS."""
    require_kernel_backend()
    util.require_ipv6()
    policy = udp_classes_policy(tmp_path / "udp6.toml", "::1", port, "::/0", port2)
    connected = [bins["udp"], "connected", port, port2, 5, "::1"]
    unconnected = [bins["udp"], "unconnected", port, port2, 4, "::1"]

    def receive(cmd, args, n):
        with util.tos_server(socket.AF_INET6, port, "udp") as a, \
                util.tos_server(socket.AF_INET6, port2, "udp") as b:
            r = kernel(args, cmd) if args is not None else plain(cmd)
            assert r.returncode == 0, r.stderr
            assert util.wait_until(lambda: len(a.results) == n and len(b.results) == n), \
                (a.results, b.results)
            return [x["tos"] for x in a.results], [x["tos"] for x in b.results]

    assert receive(connected, ["-c", policy], 5) == ([EF] * 5, [CS1] * 5)
    first, rest = receive(unconnected, ["--dscp", "EF"], 4)
    assert first[0] in (0, EF) and first[1:] == [EF] * 3, first  # 0 on 6.18, EF on 6.1
    assert rest == [EF] * 4, rest
    # Control: the same binary without sockwrap.
    assert receive(connected, None, 5) == ([0] * 5, [0] * 5)
    assert receive(unconnected, None, 4) == ([0] * 4, [0] * 4)


# --------------------------------------------------------------------------- socket options

def default_congestion():
    return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()


def another_congestion():
    """An algorithm this kernel has that is not its default (reno is always built in)."""
    have = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    return next(c for c in ("reno", "cubic", "bbr") if c in have and c != default_congestion())


def syn_mss(cap, port):
    syns = [p for p in cap.to_port(port) if p.flags == "S"]
    assert len(syns) == 1, cap.text
    m = re.search(r"options \[mss (\d+)", syns[0].raw)
    assert m, syns[0].raw
    return int(m.group(1))


@pytest.mark.parametrize("client", ["static", "go"])
def test_congestion_maxseg_and_buffers_reach_static_and_go_clients(bins, go_client, port, client):
    """connect4's bpf_setsockopt before the SYN: the congestion algorithm (ss), the MSS the
    SYN announces (tcpdump) and ss's advmss, the send and receive buffers (ss skmem tb/rb:
    the kernel doubles SO_SNDBUF and SO_RCVBUF). Each against the same client without
    sockwrap, whose values differ."""
    require_kernel_backend()
    cc, default = another_congestion(), default_congestion()
    cmd = ([bins["client"], "127.0.0.1", port, "plain", 1500] if client == "static"
           else [go_client, f"127.0.0.1:{port}"])
    flags = ["--congestion", cc, "--maxseg", "1000", "--sndbuf", "40000", "--rcvbuf", "50000"]

    def observe(run):
        res = {}
        with util.Capture(f"tcp dst port {port}") as cap:
            t = threading.Thread(target=lambda: res.setdefault("r", run()), daemon=True)
            t.start()
            entries = util.ss_client(port, opts="-tniem", timeout=5)
            t.join(30)
        assert res["r"].returncode == 0, res["r"].stdout + res["r"].stderr
        assert len(entries) == 1, entries
        return entries[0], syn_mss(cap, port)

    with Sink(port):
        entry, mss = observe(lambda: kernel(flags, cmd))
        assert re.search(rf"\s{cc}\s", entry), entry
        assert mss == 1000, mss
        assert int(util.ss_field(entry, "advmss")) <= 1000, entry
        mem = util.skmem(entry)
        assert (mem.get("tb"), mem.get("rb")) == (80000, 100000), entry

        entry, mss = observe(lambda: plain(cmd))
        assert re.search(rf"\s{default}[\s:]", entry) and not re.search(rf"\s{cc}\s", entry), entry
        assert mss > 1000, mss
        mem = util.skmem(entry)
        assert mem.get("tb") != 80000 and mem.get("rb") != 100000, entry


def test_bind_interface_binds_the_static_client_to_the_device(bins, port):
    """SO_BINDTODEVICE (connect4's bpf_setsockopt, by index): ss shows the bound device after
    the local address (`127.0.0.1%lo:PORT`); without sockwrap it shows none."""
    require_kernel_backend()
    cmd = [bins["client"], "127.0.0.1", port, "plain", 1500]

    def local_address(run):
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", run()), daemon=True)
        t.start()
        entries = util.ss_client(port, opts="-tn", timeout=5)
        t.join(30)
        assert res["r"].returncode == 0, res["r"].stderr
        assert len(entries) == 1, entries
        return entries[0].split()[2]

    with Sink(port):
        assert local_address(lambda: kernel(["--bind-interface", "lo"], cmd)).startswith("127.0.0.1%lo:")
        assert "%" not in local_address(lambda: plain(cmd))


@contextlib.contextmanager
def namespace_with_a_veth_pair(ns, b_addr=None):
    """A network namespace `ns` of the test's own: lo up, a veth pair swkA (10.77.0.1/24) and
    swkB (`b_addr`, if given), both up. Yields (sh, enter): sh runs a command in it, enter
    is the nsenter prefix for one. Deleted at the end."""
    sh = lambda *a: subprocess.run(["ip", "netns", "exec", ns, *a], check=True, timeout=10,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "swkA", "type", "veth", "peer", "name", "swkB")
        sh("ip", "addr", "add", "10.77.0.1/24", "dev", "swkA")
        if b_addr:
            sh("ip", "addr", "add", b_addr, "dev", "swkB")
        sh("ip", "link", "set", "swkA", "up")
        sh("ip", "link", "set", "swkB", "up")
        yield sh, ["nsenter", f"--net=/run/netns/{ns}"]
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=10)


def test_bind_interface_decides_the_route_in_a_namespace(bins, port, procs):
    """In a network namespace of the test's own (lo and a veth pair), a static client bound
    to the veth end cannot reach 127.0.0.1 (EHOSTUNREACH: the route is the device's), bound
    to lo it can, and so it can without sockwrap. sockwrap runs in the namespace through
    nsenter --net (ip netns exec would remount /sys and hide the cgroup mount)."""
    require_kernel_backend()
    util.require_tool("ip", "nsenter")
    with namespace_with_a_veth_pair(f"swk-{os.getpid()}-{port}", "10.77.0.2/24") as (_, enter):
        server = ("import socket,sys\n"
                  "s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8)\n"
                  "print('listening', flush=True)\n"
                  "while True:\n"
                  " c,_=s.accept(); print('accepted', flush=True)\n"
                  # Read to the client's end: closing at once would reset the connection
                  # under the client's second send (SIGPIPE, exit 141).
                  " while c.recv(4096): pass\n"
                  " c.close()\n")
        srv = procs.spawn([*enter, util.PY, "-c", server, port])
        assert util.wait_output_line(srv).strip() == "listening"
        client = [bins["client"], "127.0.0.1", port, "plain", 10]
        r = util.run([*enter, util.SOCKWRAP_BIN, "run", "--kernel", "--bind-interface", "swkA",
                      "--", *client])
        assert r.returncode == 1 and "connect: No route to host" in r.stderr, r.stdout + r.stderr
        r = util.run([*enter, util.SOCKWRAP_BIN, "run", "--kernel", "--bind-interface", "lo",
                      "--", *client])
        assert r.returncode == 0, r.stderr
        assert util.wait_output_line(srv).strip() == "accepted"
        # Control: the same client in the namespace without sockwrap.
        r = util.run([*enter, *client])
        assert r.returncode == 0, r.stderr
        assert util.wait_output_line(srv).strip() == "accepted"


def test_bind_interface_sends_udp_out_of_the_device_in_a_namespace(bins, port, port2):
    """UDP under --kernel --bind-interface (sock_create writes the bound device): in a network
    namespace of the test's own, the route to 10.88.0.0/24 is through lo, and a veth end swkA
    has a static neighbour 10.88.0.9. The static UDP sender's datagrams to 10.88.0.9, from an
    unconnected socket (sendto) and from connected ones, leave on swkA when sockwrap binds
    it there (tcpdump -i swkA sees them, lo none: the route of a device-bound socket is the
    device's); without sockwrap they go out on lo and swkA sees none."""
    require_kernel_backend()
    util.require_tool("ip", "nsenter", "tcpdump")
    ns = f"swku-{os.getpid()}-{port}"
    with namespace_with_a_veth_pair(ns) as (sh, enter):
        sh("ip", "route", "add", "10.88.0.0/24", "dev", "lo")
        sh("ip", "neigh", "add", "10.88.0.9", "lladdr", "02:00:00:00:00:09", "dev", "swkA",
           "nud", "permanent")
        bpf = f"udp and dst host 10.88.0.9 and (dst port {port} or dst port {port2})"

        def send(under_sockwrap, mode):
            cmd = [bins["udp"], mode, port, port2, 3, "10.88.0.9"]
            if under_sockwrap:
                cmd = [util.SOCKWRAP_BIN, "run", "--kernel", "--bind-interface", "swkA", "--",
                       *cmd]
            with util.Capture(bpf, iface="swkA", netns=ns) as on_veth, \
                    util.Capture(bpf, iface="lo", netns=ns) as on_lo:
                r = util.run([*enter, *cmd])
            assert r.returncode == 0, r.stdout + r.stderr
            return on_veth.packets, on_lo.packets

        for mode in ("unconnected", "connected"):
            veth, lo = send(False, mode)
            assert veth == [] and len(lo) == 6, (mode, [p.raw for p in veth + lo])
            veth, lo = send(True, mode)
            assert len(veth) == 6 and lo == [], (mode, [p.raw for p in veth + lo])
            assert {p.dport for p in veth} == {port, port2}
            assert all(p.src == "10.77.0.1" for p in veth), [p.raw for p in veth]


# --------------------------------------------------------------------------- deny and redirect

def action_flags(deny=None, redirect=None, to=None):
    """`--deny` / `--redirect` with `--to`, as (args, env). Where this sockwrap has no such
    flags yet, the variables they become (SOCKWRAP_DENY, SOCKWRAP_REDIRECT, SOCKWRAP_TO),
    which `run --kernel` reads into the same policy."""
    have = "--deny" in util.run([util.SOCKWRAP_BIN, "run", "--help"]).stdout
    args, env = [], {}
    for flag, val in (("deny", deny), ("redirect", redirect), ("to", to)):
        if val is None:
            continue
        if have:
            args += [f"--{flag}", val]
        else:
            env[f"SOCKWRAP_{flag.upper()}"] = val
    return args, env


class Answerer(util.AcceptServer):
    """Answers each connection with one line naming its port, and counts them."""

    def __init__(self, port, host="127.0.0.1"):
        self.port = port
        super().__init__(port, host=host)

    def on_accept(self, c):
        with c:
            c.settimeout(5)
            try:
                c.recv(100)
                c.sendall(b"served-by-%d\n" % self.port)
            except OSError:
                pass


UdpEcho = util.UdpEcho


def test_deny_gives_static_and_go_clients_the_errno_and_the_server_no_connection(
        bins, go_client, port, port2, tmp_path):
    """connect4 refuses the connect with the rule's errno (bpf_set_retval): the program sees
    it, the server accepts nothing and no SYN is on the wire. Other destinations pass."""
    require_kernel_backend()
    static = [bins["client"], "127.0.0.1", port, "plain", 10]
    go = [go_client, f"127.0.0.1:{port}"]
    policy = tmp_path / "deny.toml"
    policy.write_text(f'[[rule]]\nname = "no-db"\nmatch = {{ port = {port} }}\ndeny = "ENETUNREACH"\n')
    args, env = action_flags(deny="ECONNREFUSED", to=f"127.0.0.1:{port}")
    with Answerer(port) as server, Sink(port2) as other:
        with util.Capture(f"tcp dst port {port}") as cap:
            r = kernel(args, static, env=env)
            assert r.returncode == 1 and "connect: Connection refused" in r.stderr, r.stdout + r.stderr
            r = kernel(["-c", policy], go)
            assert r.returncode == 1 and "connect: network is unreachable" in r.stdout, \
                r.stdout + r.stderr
            # The same policy lets another destination through.
            r = kernel(["-c", policy], [bins["client"], "127.0.0.1", port2, "plain", 10])
            assert r.returncode == 0, r.stderr
        assert server.accepted == 0
        assert cap.to_port(port) == [], cap.text
        assert util.wait_until(lambda: other.accepted == 1)
        # Control: without sockwrap both connect.
        with util.Capture(f"tcp dst port {port}") as cap:
            assert plain(static).returncode == 0
            assert plain(go).returncode == 0
        assert util.wait_until(lambda: server.accepted == 2)
        assert [p.flags for p in cap.to_port(port)][:1] == ["S"], cap.text


ASYNC_FETCH = """
import asyncio, sys
async def main():
    r, w = await asyncio.open_connection(sys.argv[1], int(sys.argv[2]))
    w.write(b"ping\\n")
    print("answer", (await r.readline()).decode().strip())
    print("peer", *w.get_extra_info("peername")[:2])
asyncio.run(main())
"""


def test_redirect_reaches_a_live_server_for_ipv4_ipv6_and_v4_mapped(bins, port, port2, tmp_path):
    """connect4/6 rewrite the address: a static client connecting where nothing listens gets
    the live server's answer, and getpeername tells it the address it asked for."""
    require_kernel_backend()
    util.require_ipv6()
    dead = util.free_port()  # nothing listens here
    fetch = bins["fetch"]
    with Answerer(port) as v4, Answerer(port2, host="::1") as v6:
        # IPv4, through the flags.
        args, env = action_flags(redirect=f"127.0.0.1:{port}", to=f":{dead}")
        r = kernel(args, [fetch, "tcp", "127.0.0.1", dead], env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == [f"answer served-by-{port}", f"peer 127.0.0.1 {dead}"], r.stdout
        # Native IPv6, and a v4-mapped address on an AF_INET6 socket to an IPv4 target.
        for host, target, served in (("::1", f"[::1]:{port2}", port2),
                                     ("::ffff:127.0.0.1", f"127.0.0.1:{port}", port)):
            policy = tmp_path / "redirect.toml"
            policy.write_text(f'[[rule]]\nname = "double"\nmatch = {{ port = {dead} }}\n'
                              f'redirect = "{target}"\n')
            r = kernel(["-c", policy], [fetch, "tcp", host, dead])
            assert r.returncode == 0, r.stdout + r.stderr
            assert r.stdout.splitlines() == [f"answer served-by-{served}", f"peer {host} {dead}"], \
                r.stdout
        # A non-blocking connect (asyncio): rewritten before it starts, the same way.
        r = kernel(args, [util.PY, "-c", ASYNC_FETCH, "127.0.0.1", dead], env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == [f"answer served-by-{port}", f"peer 127.0.0.1 {dead}"], r.stdout
        assert (v4.accepted, v6.accepted) == (3, 1)
        # Control: nothing listens where the client connects.
        for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            r = plain([fetch, "tcp", host, dead])
            assert r.returncode == 1 and "connect errno 111" in r.stdout, r.stdout
        r = plain([util.PY, "-c", ASYNC_FETCH, "127.0.0.1", dead])
        assert r.returncode == 1 and "ConnectionRefusedError" in r.stderr, r.stderr
        assert (v4.accepted, v6.accepted) == (3, 1)


def test_getpeername_shows_the_target_when_the_rule_says_so(bins, port, tmp_path):
    require_kernel_backend()
    dead = util.free_port()
    policy = tmp_path / "target.toml"
    policy.write_text(f'[[rule]]\nmatch = {{ port = {dead} }}\n'
                      f'redirect = {{ to = "127.0.0.1:{port}", peername = "target" }}\n')
    with Answerer(port) as server:
        r = kernel(["-c", policy], [bins["fetch"], "tcp", "127.0.0.1", dead])
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == [f"answer served-by-{port}", f"peer 127.0.0.1 {port}"], r.stdout
        assert server.accepted == 1


def test_redirected_udp_connected_and_unconnected_get_the_echo(bins, port, tmp_path):
    """UDP: connect4 rewrites a connected socket's peer, sendmsg4 each unconnected sendto's
    destination; getpeername and recvfrom answer the address the program used (the
    getpeername and recvmsg hooks)."""
    require_kernel_backend()
    dead = util.free_port()
    fetch = bins["fetch"]
    policy = tmp_path / "udp.toml"
    policy.write_text(f'[[rule]]\nmatch = {{ port = {dead}, transport = "udp" }}\n'
                      f'redirect = "127.0.0.1:{port}"\n')
    with UdpEcho(port) as echo:
        r = kernel(["-c", policy], [fetch, "udp", "127.0.0.1", dead])
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == ["sendto 5 errno 0 ", "answer echo-ping",
                                         f"from 127.0.0.1 {dead}"], r.stdout
        r = kernel(["-c", policy], [fetch, "udp-connect", "::ffff:127.0.0.1", dead])
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == ["answer echo-ping", f"from ::ffff:127.0.0.1 {dead}",
                                         f"peer ::ffff:127.0.0.1 {dead}"], r.stdout
        # What the kernel cannot do: a native IPv6 datagram rewritten to an IPv4 target
        # (udpv6_sendmsg refuses it); the program is told so, EAFNOSUPPORT.
        if socket.has_ipv6:
            r = kernel(["-c", policy], [fetch, "udp", "::1", dead])
            assert r.returncode == 1 and r.stdout.startswith("sendto -1 errno 97"), r.stdout
        assert echo.got == [b"ping\n"] * 2
        # Control: nothing answers at the port the program uses.
        r = plain([fetch, "udp-connect", "127.0.0.1", dead])
        assert r.returncode == 1, r.stdout
        assert echo.got == [b"ping\n"] * 2


def test_a_denied_unconnected_udp_sendto_sends_nothing(bins, port, port2, tmp_path):
    """sendmsg4 matches each datagram's destination: sendto to the denied one fails with the
    rule's errno and nothing reaches its receiver (nor the wire); the other destination of
    the same socket gets every datagram."""
    require_kernel_backend()
    policy = tmp_path / "deny-udp.toml"
    policy.write_text(f'[[rule]]\nmatch = {{ port = {port}, transport = "udp" }}\ndeny = "EACCES"\n')
    cmd = [bins["udp"], "unconnected", port, port2, 4]
    with util.tos_server(socket.AF_INET, port, "udp") as a, \
            util.tos_server(socket.AF_INET, port2, "udp") as b:
        with util.Capture(f"udp dst port {port}") as cap:
            r = kernel(["-c", policy], cmd)
            assert r.returncode == 0, r.stderr
            r = kernel(["-c", policy], [bins["fetch"], "udp", "127.0.0.1", port])
            assert r.stdout.startswith("sendto -1 errno 13 "), r.stdout
        assert util.wait_until(lambda: len(b.results) == 4)
        assert a.results == [] and cap.to_port(port) == [], cap.text
        # Control: without sockwrap the datagrams arrive.
        assert plain(cmd).returncode == 0
        assert util.wait_until(lambda: len(a.results) == 4 and len(b.results) == 8)


def test_delay_fail_and_host_stay_refused_under_kernel(tmp_path):
    require_kernel_backend()
    policy = tmp_path / "chaos.toml"
    policy.write_text(textwrap.dedent("""\
        [[rule]]
        name = "slow"
        match = { port = 5432 }
        delay = "250ms"
        [[rule]]
        name = "flaky"
        fail = { rate = 0.2, errno = "ECONNRESET" }
        [[rule]]
        name = "by-name"
        match = { host = "db.test" }
        deny = true
    """))
    r = kernel(["-c", policy], ["true"])
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if "--kernel cannot set" in l]
    assert len(lines) == 3, r.stderr
    for rule, what in (("slow", "delay:"), ("flaky", "fail:"), ("by-name", "match.host:")):
        assert any(f"rule `{rule}`: {what}" in l for l in lines), r.stderr


def test_explain_kernel_shows_deny_and_redirect(tmp_path):
    util.require_sockwrap()
    policy = tmp_path / "actions.toml"
    policy.write_text(textwrap.dedent("""\
        [[rule]]
        name = "lab"
        match = { remote = "192.0.2.10" }
        redirect = "127.0.0.1:8443"
        [[rule]]
        name = "no-db"
        match = { port = 5432, except = { remote = "10.9.0.0/16" } }
        deny = "ETIMEDOUT"
    """))

    def explain(dest, *extra):
        r = util.run([util.SOCKWRAP_BIN, "explain", "--kernel", "-c", policy, "--dest", dest, *extra])
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = explain("192.0.2.10:443")
    assert "cgroup/connect4 (connect to 192.0.2.10:443):\n    redirect: the address is rewritten to 127.0.0.1:8443" in out, out
    assert "getpeername answers 192.0.2.10:443" in out, out
    out = explain("10.1.0.1:5432", "--transport", "udp")
    assert "deny: the connect fails with ETIMEDOUT (110)" in out, out
    assert "so does an unconnected sendto() to 10.1.0.1:5432" in out, out
    out = explain("[::ffff:192.0.2.10]:5432")  # both match: deny wins, nothing leaves
    assert "cgroup/connect6" in out and "deny: the connect fails with ETIMEDOUT" in out, out
    assert "redirect" not in out.split("--kernel:")[1], out
    out = explain("10.9.0.1:5432")  # the exception
    assert "cgroup/connect4 (connect to 10.9.0.1:5432): nothing" in out, out
