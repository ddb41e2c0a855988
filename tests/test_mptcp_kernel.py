"""MPTCP for every program under `--kernel` (issue #27): `run --kernel --mptcp` turns the
cgroup's TCP sockets into MPTCP at socket(), through sockwrap's fmod_ret program on
update_socket_protocol, where the kernel takes one (Debian's 6.12); elsewhere it refuses in
one line that names the kernel's reason (6.1: no such function; the host's 6.18 build:
fmod_ret refused, EPERM).

Every test first asks the kernel itself whether an fmod_ret program on update_socket_protocol
loads and attaches (test_kernel_probes' own probe: BTF read in Python, bpf() through ctypes).
Where it does, the test proves the conversion with witnesses other than sockwrap: the
listener is MPTCP (IPPROTO_MPTCP, made by the test's server itself) and each accepted socket's
SO_PROTOCOL says what the client spoke (262 MPTCP, 6 TCP); the namespaces' MIB counters; the
veth byte counters of two real paths. Each witness also runs without sockwrap (6, stalls).
Where it does not, the test proves the refusal: exit 2, one line naming the errno the test's
own probe got, the program never started. No test skips on either kind of kernel.
"""
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import netns
import util
from peers.proto_server import answer_proto
from netns import PATH_V4, MptcpBed
from test_kernel_probes import fmod_ret_update_socket_protocol

IPPROTO_MPTCP = 262
IPPROTO_TCP = 6

# mpclient MODE HOST PORT [ARG]: one TCP socket (AF_INET for a dotted quad, else AF_INET6).
#   line:  socket(SOCK_STREAM, 0), connect, print "self N" (SO_PROTOCOL of its own socket),
#          send a line, print the server's answer line; then sleep ARG ms (default 0).
#   flags: the same with socket(SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC, 0) (poll for connect
#          and the answer).
#   get:   HTTP/1.0 GET ARG, print "self N", then "body N" (bytes after the header) at EOF.
# Every mode ends itself after 90 s (alarm).
# The same exchange from Go (net.Dial: socket(SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC) by raw
# system calls, which no LD_PRELOAD reaches). GODEBUG is left alone: Go 1.19 has no MPTCP.
# An HTTP server whose listener the test makes MPTCP itself (IPPROTO_MPTCP), serving DIR.
MPTCP_HTTP_PY = r"""
import functools, http.server, socket, sys
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
class Server(http.server.ThreadingHTTPServer):
    def __init__(self, addr, h):
        super().__init__(addr, h, bind_and_activate=False)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server_bind()
        self.server_activate()
print("ready", flush=True)
Server((host, port), functools.partial(Handler, directory=root)).serve_forever()
"""


# --------------------------------------------------------------------------- helpers

def require_kernel_backend():
    util.require_sockwrap()
    util.require_root("sockwrap run --kernel attaches BPF programs: root only")
    util.require(util.cgroup2_mount() is not None, "no cgroup v2 hierarchy mounted")
    util.require(os.path.exists("/proc/sys/net/mptcp/enabled"), "kernel without MPTCP")


@pytest.fixture(scope="module")
def mpclient(tmp_path_factory):
    exe = util.build_c("mpclient", tmp_path_factory.mktemp("mptcp-kernel-bins") / "mpclient", "-static")
    assert b"ld-linux" not in exe.read_bytes()[:4096]  # static: no interpreter
    return exe


@pytest.fixture(scope="module")
def goclient(tmp_path_factory):
    return util.build_go("mpclient", tmp_path_factory.mktemp("mptcp-kernel-go"))


class MptcpListener:
    """An MPTCP listener of the test's own (socket(..., IPPROTO_MPTCP)) on loopback: answers
    each client's line with the SO_PROTOCOL of the accepted socket, and records it."""

    def __init__(self, host="127.0.0.1", proto=IPPROTO_MPTCP):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM, proto)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.protos = []
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with c:
                proto = answer_proto(c)
                if proto is not None:
                    self.protos.append(proto)

    def close(self):
        self.stop = True
        self.t.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    require_kernel_backend()
    ls = MptcpListener()
    yield ls
    ls.close()


def answer(stdout):
    """The server's JSON answer in a client's output, and the client's own SO_PROTOCOL."""
    got, own = None, None
    for ln in stdout.splitlines():
        if ln.startswith("answer "):
            got = json.loads(ln[len("answer "):])
        elif ln.startswith("self "):
            own = int(ln.split()[1])
    return got, own


def kernel_mptcp(cmd, extra=(), timeout=60):
    return util.run([util.SOCKWRAP_BIN, "run", "--kernel", "--mptcp", *extra, "--", *map(str, cmd)],
                    timeout=timeout)


def converts_here_or_refused(tmp_path):
    """True where this kernel takes an fmod_ret program on update_socket_protocol (the test's
    own probe). Elsewhere it proves the refusal and returns False: exit 2, one line that names
    MPTCP, the kernel's reason as the probe found it and what to use instead, and the program
    never started."""
    got = fmod_ret_update_socket_protocol()
    if got == "works":
        return True
    marker = tmp_path / "started"
    r = util.run([util.SOCKWRAP_BIN, "run", "--kernel", "--mptcp", "--", "touch", str(marker)])
    info = f"probe={got} rc={r.returncode} stderr={r.stderr!r}"
    assert r.returncode == 2, info
    assert not marker.exists(), info
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, info
    line = lines[0]
    release = os.uname().release
    assert f"on this kernel ({release}), " in line and "mptcp" in line, info
    if got == "missing":
        assert "there is no update_socket_protocol to attach to (ESRCH" in line, info
    else:
        assert f"fmod_ret programs are refused ({got}: {os.strerror(getattr(__import__('errno'), got))}" in line, info
    assert "GODEBUG=multipathtcp=1" in line and "sockwrap run --mptcp without --kernel" in line, info
    assert "verifier" not in r.stderr and "processed" not in r.stderr, info
    return False


# --------------------------------------------------------------------------- the tests

def test_refused_by_name_where_the_kernel_cannot_convert(tmp_path):
    """Host 6.18 (EPERM) and 6.1 (ESRCH): the refusal; 6.12: the program starts and its
    socket is MPTCP (its own SO_PROTOCOL; the accepted side is proved below)."""
    require_kernel_backend()
    if converts_here_or_refused(tmp_path):
        r = kernel_mptcp([util.PY, "-c", "import socket; s = socket.socket(); "
                          "print(s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))"])
        assert r.returncode == 0 and r.stdout.strip() == str(IPPROTO_MPTCP), (r.stdout, r.stderr)
        # The control: the same program without sockwrap.
        r = util.run([util.PY, "-c", "import socket; s = socket.socket(); "
                      "print(s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))"])
        assert r.stdout.strip() == str(IPPROTO_TCP), r.stdout


@pytest.mark.parametrize("mode", ["line", "flags"])
def test_static_client_reaches_an_mptcp_listener_as_mptcp(listener, mpclient, tmp_path, mode):
    """A static binary (no LD_PRELOAD reaches it), with a plain socket and with
    SOCK_NONBLOCK|SOCK_CLOEXEC: the accepted socket is MPTCP under run --kernel --mptcp, TCP
    without sockwrap."""
    if not converts_here_or_refused(tmp_path):
        return
    r = util.run([mpclient, mode, "127.0.0.1", listener.port])
    got, own = answer(r.stdout)
    assert r.returncode == 0 and got == {"proto": IPPROTO_TCP} and own == IPPROTO_TCP, (r.stdout, r.stderr)
    r = kernel_mptcp([mpclient, mode, "127.0.0.1", listener.port])
    got, own = answer(r.stdout)
    assert r.returncode == 0, r.stderr
    assert got == {"proto": IPPROTO_MPTCP} and own == IPPROTO_MPTCP, (r.stdout, r.stderr)
    assert listener.protos == [IPPROTO_TCP, IPPROTO_MPTCP]


def test_options_mptcp_sockets_refuse_are_named_at_start(listener, mpclient, tmp_path):
    """A policy that converts and also sets an option MPTCP sockets refuse (DESIGN.md:
    TCP_USER_TIMEOUT; IPV6_TCLASS of dscp): named at start, in the library's words, the
    socket still MPTCP at the listener; without --mptcp no such line."""
    if not converts_here_or_refused(tmp_path):
        return
    r = kernel_mptcp([mpclient, "line", "127.0.0.1", listener.port], extra=("--user-timeout", "5000", "--dscp", "EF"))
    got, _ = answer(r.stdout)
    assert r.returncode == 0 and got == {"proto": IPPROTO_MPTCP}, (r.stdout, r.stderr)
    said = [ln for ln in r.stderr.splitlines() if "MPTCP sockets cannot carry" in ln]
    assert any(ln.startswith("sockwrap: --kernel: user-timeout: MPTCP sockets cannot carry TCP_USER_TIMEOUT;")
               for ln in said), r.stderr
    assert any("dscp: MPTCP sockets cannot carry IPV6_TCLASS;" in ln for ln in said), r.stderr
    r = util.run([util.SOCKWRAP_BIN, "run", "--kernel", "--user-timeout", "5000", "--",
                  mpclient, "line", "127.0.0.1", listener.port])
    assert r.returncode == 0 and "MPTCP sockets cannot carry" not in r.stderr, r.stderr


def root_mib():
    r = subprocess.run(["nstat", "-asz", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=10)
    return {k: int(v) for d in json.loads(r.stdout).values() for k, v in d.items()}


def test_a_peer_without_mptcp_falls_back_to_tcp_in_the_kernel(mpclient, tmp_path):
    """A plain TCP listener: the converted static client still talks to it (its own socket
    is MPTCP, 262; the accepted one TCP), and the kernel counts the fallback at the SYN-ACK
    (MPTcpExtMPCapableFallbackSYNACK). The control: without sockwrap no fallback is counted
    for the same exchange (the client was TCP from the start)."""
    require_kernel_backend()
    if not converts_here_or_refused(tmp_path):
        return
    util.require_tool("nstat")
    ls = MptcpListener(proto=IPPROTO_TCP)
    try:
        deltas = {}
        for under in (False, True):
            m0 = root_mib()
            cmd = [mpclient, "line", "127.0.0.1", ls.port]
            r = kernel_mptcp(cmd) if under else util.run(cmd)
            got, own = answer(r.stdout)
            assert r.returncode == 0 and got == {"proto": IPPROTO_TCP}, (under, r.stdout, r.stderr)
            assert own == (IPPROTO_MPTCP if under else IPPROTO_TCP), (under, r.stdout)
            m1 = root_mib()
            deltas[under] = m1.get("MPTcpExtMPCapableFallbackSYNACK", 0) - m0.get("MPTcpExtMPCapableFallbackSYNACK", 0)
    finally:
        ls.close()
    assert deltas[True] >= 1 and deltas[False] == 0, deltas


def test_go_client_reaches_an_mptcp_listener_as_mptcp(listener, goclient, tmp_path):
    """Go's net.Dial (raw system calls, SOCK_NONBLOCK|SOCK_CLOEXEC): MPTCP under --kernel,
    TCP without sockwrap."""
    if not converts_here_or_refused(tmp_path):
        return
    r = util.run([goclient, "127.0.0.1", listener.port])
    got, _ = answer(r.stdout)
    assert r.returncode == 0 and got == {"proto": IPPROTO_TCP}, (r.stdout, r.stderr)
    r = kernel_mptcp([goclient, "127.0.0.1", listener.port])
    got, _ = answer(r.stdout)
    assert r.returncode == 0 and got == {"proto": IPPROTO_MPTCP}, (r.stdout, r.stderr)


def test_a_program_in_another_cgroup_stays_on_tcp_meanwhile(listener, mpclient, procs, tmp_path):
    """While a run --kernel --mptcp is attached (its client connected and holding on), the
    same static client started outside its cgroup connects as TCP."""
    if not converts_here_or_refused(tmp_path):
        return
    held = procs.spawn([util.SOCKWRAP_BIN, "run", "--kernel", "--mptcp", "--",
                        mpclient, "line", "127.0.0.1", listener.port, 8000])
    assert util.wait_output_line(held, 30).startswith("self ")
    line = util.wait_output_line(held, 30)
    assert json.loads(line[len("answer "):]) == {"proto": IPPROTO_MPTCP}, line
    assert held.poll() is None, "the held client ended before the other one ran"
    r = util.run([mpclient, "line", "127.0.0.1", listener.port])
    got, own = answer(r.stdout)
    assert held.poll() is None, "the held client ended before the other one finished"
    assert r.returncode == 0 and got == {"proto": IPPROTO_TCP} and own == IPPROTO_TCP, r.stdout
    out, err = held.communicate(timeout=60 * util.TIME_SCALE)
    assert held.returncode == 0, err


def test_mptcp_disabled_says_so_and_runs_on_tcp(mpclient, tmp_path):
    """net.mptcp.enabled=0 in the client's network namespace (one of the test's own, with its
    own MPTCP listener in the server namespace): one line saying so, and the program runs on
    plain TCP (the accepted socket: 6). The control: the same run with MPTCP on there is
    MPTCP (262)."""
    require_kernel_backend()
    if not converts_here_or_refused(tmp_path):
        return
    netns.require_netns()
    util.require_tool("nsenter")
    runs = {}
    with MptcpBed(v6=False) as bed:
        server = subprocess.Popen(bed.ns_cmd(bed.server, util.peer("proto_server.py", "0.0.0.0", 9000, "--mptcp")),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        try:
            assert util.wait_output_line(server, 10).strip() == "ready"
            for enabled in (True, False):
                bed.mptcp_enabled(bed.client, enabled)
                # nsenter, not `ip netns exec`: that one remounts /sys, and with it the cgroup tree.
                runs[enabled] = util.run(["nsenter", f"--net=/run/netns/{bed.client}", util.SOCKWRAP_BIN,
                                          "run", "--kernel", "--mptcp", "--", mpclient, "line",
                                          PATH_V4[1][1], 9000], timeout=60)
        finally:
            os.killpg(server.pid, 9)
            server.communicate(timeout=10)
    for enabled, proto in ((True, IPPROTO_MPTCP), (False, IPPROTO_TCP)):
        r = runs[enabled]
        got, own = answer(r.stdout)
        info = (enabled, r.returncode, r.stdout, r.stderr)
        assert r.returncode == 0 and got and got["proto"] == proto and own == proto, info
    said = [ln for ln in runs[False].stderr.splitlines() if "mptcp" in ln.lower()]
    assert len(said) == 1 and "ENOPROTOOPT" in said[0] and "plain TCP" in said[0], runs[False].stderr
    assert runs[True].stderr == "", runs[True].stderr


def test_a_rule_that_selects_by_destination_is_refused_by_name(tmp_path):
    """The protocol is chosen at socket(), before the destination is known: such a rule is
    refused by name on every kernel, before anything is loaded."""
    require_kernel_backend()
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nname = "far"\nmatch.remote = ["10.0.0.0/8"]\nmptcp = true\n')
    marker = tmp_path / "started"
    r = util.run([util.SOCKWRAP_BIN, "run", "--kernel", "-c", policy, "--", "touch", marker])
    assert r.returncode == 2 and not marker.exists(), r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "rule `far`: mptcp:" in ln]
    assert "chosen at socket()" in line and "without --kernel" in line, line


# --------------------------------------------------------------------------- two real paths

@pytest.fixture(scope="module")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("mptcp-kernel-www")
    netns.make_file(d / "f48", 48 << 20)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# Slow enough that the 8 MB on path 1 before the cut is seen well before the end, even under
# TCG, where each look at the link counters takes a while.
PATH_RATE = "20mbit"


def transfer_with_cut(bed, mpclient, www, procs, tmp_path, under_kernel, bound):
    """The static client fetches 48 MB from the MPTCP server over path 1; path 1 goes down
    after 8 MB. Returns (client result, bytes through path 2 after the cut, server MIB)."""
    (tmp_path / "server.py").write_text(MPTCP_HTTP_PY)
    server = procs.spawn(bed.ns_cmd(bed.server, [util.PY, tmp_path / "server.py", "0.0.0.0", 8080, www]))
    assert util.wait_output_line(server, 20).strip() == "ready"
    bed.wait_listening("0.0.0.0", 8080)
    client = [mpclient, "get", PATH_V4[1][1], 8080, "/f48"]
    if under_kernel:
        client = [util.SOCKWRAP_BIN, "run", "--kernel", "--mptcp", "--", *client]
    s0 = bed.mib(bed.server)
    b0 = bed.path_bytes()
    p = procs.spawn(["nsenter", f"--net=/run/netns/{bed.client}", *client])
    got = util.wait_until(lambda: bed.path_bytes()[1] - b0[1] > 8 << 20 or p.poll() is not None, 60, 0.02)
    assert got and p.poll() is None, f"the transfer did not start, or ended before the cut: {p.poll()}"
    bed.cut(1)
    at_cut = bed.path_bytes()
    try:
        out, err = p.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, err = p.communicate(timeout=10)
    after = bed.path_bytes()
    sd = netns.mib_delta(s0, bed.mib(bed.server))
    info = f"rc={p.returncode} out={out!r} err={err[-1500:]!r} at cut {at_cut} after {after} server {sd}"
    return p.returncode, out, after[2] - at_cut[2], sd, info


def test_two_paths_one_cut_mid_transfer_the_transfer_completes(mpclient, www, procs, tmp_path):
    """The library's failover bed (tests/netns.py: two veth paths, 20 Mbit/s each, a client
    subflow endpoint on path 2), with the static client under run --kernel --mptcp: the
    server saw an MPTCP handshake (MPCapableSYNRX), the client's socket was MPTCP, and after
    path 1 went down the rest came over path 2: the whole file arrived."""
    require_kernel_backend()
    if not converts_here_or_refused(tmp_path):
        return
    netns.require_netns()
    util.require_tool("nsenter")
    with MptcpBed(rate=PATH_RATE, v6=False) as bed:
        rc, out, moved2, sd, info = transfer_with_cut(bed, mpclient, www, procs, tmp_path, True, 120 * util.TIME_SCALE)
    assert rc == 0 and "self 262" in out and f"body {48 << 20}" in out, info
    assert sd.get("MPTcpExtMPCapableSYNRX", 0) >= 1, info
    assert moved2 > 16 << 20, info


def test_two_paths_control_plain_tcp_does_not_survive_the_cut(mpclient, www, procs, tmp_path):
    """The control: the same static client without sockwrap speaks TCP (no MPTCP handshake at
    the server), and its transfer does not survive the cut (nothing more through path 2)."""
    require_kernel_backend()
    if not converts_here_or_refused(tmp_path):
        return
    netns.require_netns()
    util.require_tool("nsenter")
    with MptcpBed(rate=PATH_RATE, v6=False) as bed:
        rc, out, moved2, sd, info = transfer_with_cut(bed, mpclient, www, procs, tmp_path, False, 15)
    assert "self 6" in out and f"body {48 << 20}" not in out, info
    assert sd.get("MPTcpExtMPCapableSYNRX", 0) == 0, info
    assert moved2 < 1 << 20, info


# --------------------------------------------------------------------------- systemd

PINS = "/sys/fs/bpf/sockwrap/swdemo_service"


def test_enable_kernel_mptcp_under_root_writes_the_unit_start_line(tmp_path):
    """Under --root (nothing loaded or pinned): the drop-in names the pinned conversion and
    runs `sockwrap repin UNIT --mptcp-target` first at each start, as root (`+`), in the
    unit's fresh cgroup; its failure stops the unit only under --strict (no `-`)."""
    util.require_sockwrap()
    root = tmp_path / "root"
    vendor = root / "usr/lib/systemd/system/swdemo.service"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("[Service]\nExecStart=/bin/true\n")
    for extra, prefix in (((), "-+"), (("--strict",), "+")):
        r = util.run([util.SOCKWRAP_BIN, "enable", "swdemo", "--kernel", "--mptcp", *extra, "--root", root])
        assert r.returncode == 0, r.stderr
        lines = (root / "etc/systemd/system/swdemo.service.d/sockwrap.conf").read_text().splitlines()
        assert f"# sockwrap-kernel-mptcp: {PINS}/mptcp" in lines, lines
        assert f"ExecStartPre={prefix}{util.SOCKWRAP_BIN} repin swdemo.service --mptcp-target" in lines, lines
    assert not os.path.exists(PINS)


ENABLE_INNER = util.INNER_PRELUDE + r"""

sw, unit, cgroot, py, port = sys.argv[1:6]
out = {}


# Nothing of the machine is changed: a private mount namespace with its own /run,
# /etc/systemd/system and BPF filesystem.
must("mount", "-t", "tmpfs", "tmpfs", "/run")
must("mount", "-t", "tmpfs", "tmpfs", "/etc/systemd/system")
Path("/etc/systemd/system/swdemo.service").write_text(Path(unit).read_text())
must("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")

out["enable"] = sh(sw, "enable", "swdemo", "--kernel", "--mptcp")
out["pins"] = pins()
drop_in = Path("/etc/systemd/system/swdemo.service.d/sockwrap.conf")
out["drop_in"] = drop_in.read_text() if drop_in.exists() else None
client = [py, "-c", "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
          "s.sendall(b'x\\n'); print(s.makefile().readline().strip())", port]

if out["enable"][0] == 0:
    # What systemd does at the unit's start, by hand: a fresh cgroup for the unit (one of
    # the test's own), the drop-in's ExecStartPre= run in it, then the unit's program in it.
    pre = next(l for l in out["drop_in"].splitlines() if l.startswith("ExecStartPre="))
    pre = pre.split("=", 1)[1].lstrip("-+").split()
    cg = Path(cgroot) / f"swtest-mptcp-enable-{os.getpid()}"
    cg.mkdir()
    in_cg = ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh"]
    try:
        out["before_start"] = sh(*in_cg, *client)      # control: not aimed yet
        out["start"] = sh(*in_cg, *pre)
        out["unit"] = sh(*in_cg, *client)
        out["outside"] = sh(*client)                  # another cgroup meanwhile
        out["status"] = sh(sw, "status", "swdemo")
        out["disable"] = sh(sw, "disable", "swdemo")
        out["pins_after_disable"] = pins()
        out["after_disable"] = sh(*in_cg, *client)     # the link is gone with its pin
    finally:
        for _ in range(100):
            if not (cg / "cgroup.procs").read_text().strip():
                break
            time.sleep(0.05)
        cg.rmdir()
print(json.dumps(out))
"""


def test_enable_kernel_mptcp_pins_the_conversion_and_the_unit_start_aims_it(listener, tmp_path):
    """In a private mount namespace with a BPF filesystem of its own. Where the kernel
    converts: `enable --kernel --mptcp` pins the conversion (a link and its maps); a client in
    the unit's cgroup is TCP until the drop-in's ExecStartPre= ran there, MPTCP after it (the
    MPTCP listener's accepted socket: 262), a client outside stays TCP, and after disable
    (pins removed) the unit's cgroup is TCP again. Where it cannot: exit 2, one line with
    the kernel's reason, nothing written or pinned."""
    util.require_tool("unshare")
    unit = tmp_path / "swdemo.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    inner = tmp_path / "inner.py"
    inner.write_text(ENABLE_INNER)
    mounts = Path("/proc/self/mountinfo").read_text()
    r = subprocess.run([str(c) for c in ["unshare", "-m", "--propagation", "private", util.PY, inner,
                                         util.SOCKWRAP_BIN, unit, util.cgroup2_mount(), util.PY,
                                         listener.port]],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert Path("/proc/self/mountinfo").read_text() == mounts
    out = json.loads(r.stdout.splitlines()[-1])
    rc, stdout, err = out["enable"]
    got = fmod_ret_update_socket_protocol()
    if got != "works":
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, out["enable"]
        assert f"on this kernel ({os.uname().release}), " in lines[0], lines
        assert ("ESRCH" if got == "missing" else got) in lines[0], (got, lines)
        assert out["drop_in"] is None and out["pins"] == [], out
        return
    assert rc == 0 and "pinned the MPTCP conversion" in stdout, out["enable"]
    assert "sockwrap/swdemo_service/mptcp" in out["pins"], out["pins"]
    assert "sockwrap/swdemo_service/maps/mptcp_target" in out["pins"], out["pins"]
    tcp, mptcp = json.dumps({"proto": IPPROTO_TCP}), json.dumps({"proto": IPPROTO_MPTCP})
    assert out["before_start"][:2] == [0, tcp + "\n"], out["before_start"]
    assert out["start"][0] == 0, out["start"]
    assert out["unit"][:2] == [0, mptcp + "\n"], out["unit"]
    assert out["outside"][:2] == [0, tcp + "\n"], out["outside"]
    assert f"MPTCP conversion: {PINS}/mptcp (pinned)" in out["status"][1], out["status"]
    assert out["disable"][0] == 0 and out["pins_after_disable"] == [], out
    assert out["after_disable"][:2] == [0, tcp + "\n"], out["after_disable"]


def test_attach_follow_refuses_mptcp_by_name(procs):
    """`attach --follow` moves a running process into a cgroup of sockwrap's; the conversion
    belongs to run --kernel and enable --kernel: refused in one line, exit 2, the process
    left in its cgroup."""
    require_kernel_backend()
    p = procs.spawn(["sleep", "30"])
    before = Path(f"/proc/{p.pid}/cgroup").read_text()
    r = util.run([util.SOCKWRAP_BIN, "attach", str(p.pid), "--follow", "--mptcp"])
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "attach --follow cannot set mptcp" in lines[0], r.stderr
    assert "sockwrap run --kernel --mptcp" in lines[0], lines
    assert Path(f"/proc/{p.pid}/cgroup").read_text() == before and p.poll() is None


def test_explain_kernel_names_the_conversion_per_program(tmp_path):
    """explain --kernel says which programs' TCP sockets the conversion turns into MPTCP."""
    util.require_sockwrap()
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nname = "all"\nmptcp = true\n\n'
                      '[[rule]]\nname = "not-curl"\nmatch.program = ["curl"]\nmptcp = false\n')
    hook = "fmod_ret/update_socket_protocol (socket()): "
    for program, said in ((None, "MPTCP instead of TCP"), ("curl", "TCP stays TCP"), ("ssh", "MPTCP instead of TCP")):
        args = ["--program", program] if program else []
        r = util.run([util.SOCKWRAP_BIN, "explain", "--kernel", "-c", policy, "--dest", "10.1.2.3:22", *args])
        assert r.returncode == 0 and hook + said in r.stdout, (program, r.stdout, r.stderr)
