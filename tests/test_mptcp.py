"""MPTCP for unmodified TCP programs (issue 3), proven over two real paths.

Every test builds its own pair of network namespaces joined by two veth pairs (tests/netns.py)
and deletes them afterwards. The proof never comes from sockwrap's log: it comes from the kernel
(MIB counters via `nstat`, `ss -M`, SO_PROTOCOL of the sockets, the byte counters of the two
paths) and from the programs' own results (curl's exit code and byte count).

Each multipath scenario runs with `sockwrap run --mptcp` and, beside it, with Debian's
`mptcpize run` (the peer we compare with, see docs/mptcp-comparison.md), plus a plain-TCP
control run without any wrapper.
"""
import json
import re
import shutil
import subprocess
import time

import pytest

import netns
import util
from netns import PATH_V4, PATH_V6, MptcpBed

HTTP_PORT = 8080
PROTO_PORT = 9000
IPPROTO_MPTCP = 262
ENOPROTOOPT = 92
EOPNOTSUPP = 95

WRAPPERS = ["sockwrap", "mptcpize"]


# --------------------------------------------------------------------------- helpers

def wrap(kind, cmd, extra=()):
    """The command line that runs `cmd` with MPTCP by the given means."""
    cmd = [str(c) for c in cmd]
    if kind == "sockwrap":
        util.require_sockwrap()
        return util.sockwrap_cmd(["--mptcp", *extra], cmd)
    if kind == "mptcpize":
        util.require_tool("mptcpize")
        return ["mptcpize", "run", *cmd]
    assert kind == "plain"
    return cmd


@pytest.fixture
def bed():
    netns.require_netns()
    with MptcpBed() as b:
        yield b


@pytest.fixture
def shaped_bed():
    """Both paths shaped to 100 Mbit/s each way, so one path alone cannot carry everything."""
    netns.require_netns()
    with MptcpBed(rate="100mbit") as b:
        yield b


@pytest.fixture(scope="module")
def bigfile(tmp_path_factory):
    """The files the HTTP server offers (made once per module, removed afterwards)."""
    d = tmp_path_factory.mktemp("mptcp-www")
    netns.make_file(d / "f64", 64 << 20)
    netns.make_file(d / "f100", 100 << 20)
    netns.make_file(d / "small", 4096)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_http(procs, bed, kind, root, tmp_path):
    """python3 -m http.server in the server namespace, under `kind` (sockwrap/mptcpize/plain)."""
    log = open(tmp_path / f"http-{kind}.log", "w")
    cmd = bed.ns_cmd(bed.server, wrap(kind, [util.PY, "-m", "http.server", "-b", "0.0.0.0",
                                             "-d", root, HTTP_PORT]))
    p = procs.spawn(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        bed.wait_listening("0.0.0.0", HTTP_PORT)
    except TimeoutError:
        log.flush()
        raise AssertionError(f"http.server did not start: {(tmp_path / f'http-{kind}.log').read_text()}")
    return p


def start_proto_server(procs, bed, host, port):
    """tests/peers/proto_server.py (MPTCP listener made by itself) in the server namespace."""
    p = procs.spawn(bed.ns_cmd(bed.server, util.peer("proto_server.py", host, port, "--mptcp")))
    line = util.wait_output_line(p, 10)
    assert line.strip() == "ready", f"proto_server: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
    return p


def curl_cmd(urls, max_time):
    outs = [a for u in urls for a in ("-o", "/dev/null", u)]
    return ["curl", "-sS", "--max-time", max_time, "-w", "%{http_code} %{size_download}\\n", *outs]


def curl_result(r):
    """[(http_code, size)] per URL from curl's -w output."""
    return [(int(c), int(float(s))) for c, s in re.findall(r"^(\d{3}) (\d+(?:\.\d+)?)$", r.stdout, re.M)]


def url(name, host=PATH_V4[1][1]):
    return f"http://{host}:{HTTP_PORT}/{name}"


def sockwrap_lines(stderr):
    return [ln for ln in stderr.splitlines() if re.match(r"^sockwrap\[\d+\]: ", ln)]


def mptcp_warnings(stderr):
    return [ln for ln in sockwrap_lines(stderr)
            if re.match(r"^sockwrap\[\d+\]: warn(ing)?: ", ln, re.I) and "mptcp" in ln.lower()]


def opt_client(bed, kind, host, port, option, extra=(), timeout=20):
    r = util.run(bed.ns_cmd(bed.client, wrap(kind, util.peer("opt_client.py", host, port, option), extra)),
                 timeout=timeout)
    out = None
    for ln in r.stdout.splitlines():
        if ln.startswith("{"):
            out = json.loads(ln)
    return r, out


# --------------------------------------------------------------------------- the bed itself

def test_bed_two_paths_and_cleanup():
    """The bed has two working paths, MPTCP limits and endpoints, and leaves nothing behind."""
    netns.require_netns()
    with MptcpBed() as b:
        names = (b.client, b.server)
        lim = subprocess.run(["ip", "-n", b.client, "mptcp", "limits"], stdout=subprocess.PIPE,
                             text=True, timeout=10).stdout
        assert "subflows 2" in lim and "add_addr_accepted 2" in lim, lim
        ep = subprocess.run(["ip", "-n", b.client, "mptcp", "endpoint", "show"], stdout=subprocess.PIPE,
                            text=True, timeout=10).stdout
        assert PATH_V4[2][0] in ep and "subflow" in ep, ep
        for p in (1, 2):
            b.wait_reachable(PATH_V4[p][1])
            b.wait_reachable(PATH_V6[p][1])
    listed = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True, timeout=10).stdout
    for n in names:
        assert n not in listed


# --------------------------------------------------------------------------- 2. two paths, real programs

def _transfer_two_paths(procs, bed, kind, root, tmp_path, name="f64"):
    """Server and client under `kind`; returns (curl result, server MIB delta, client MIB delta,
    path byte deltas, ss snapshots taken mid-transfer)."""
    size = (root / name).stat().st_size
    start_http(procs, bed, kind, root, tmp_path)
    s0, c0, b0 = bed.mib(bed.server), bed.mib(bed.client), bed.path_bytes()
    cmd = bed.ns_cmd(bed.client, wrap(kind, curl_cmd([url(name)], 60)))
    p = procs.spawn(cmd)
    # mid-transfer: the kernel's view of the connection
    util.wait_until(lambda: sum(bed.path_bytes().values()) - sum(b0.values()) > size // 4 or p.poll() is not None,
                    30, 0.05)
    snap = {"ss_M_client": bed.ss(bed.client, ["-HMni"]),
            "ss_M_server": bed.ss(bed.server, ["-HMni"]),
            "ss_t_server": bed.ss(bed.server, ["-Htn", "state", "established", f"sport = :{HTTP_PORT}"])}
    try:
        out, err = p.communicate(timeout=70)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{kind}: curl did not finish in 70 s")
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    b1 = bed.path_bytes()
    sd = netns.mib_delta(s0, bed.mib(bed.server))
    cd = netns.mib_delta(c0, bed.mib(bed.client))
    return size, r, sd, cd, {k: b1[k] - b0[k] for k in b1}, snap


@pytest.mark.parametrize("kind", WRAPPERS)
def test_two_paths_http(procs, shaped_bed, bigfile, tmp_path, kind):
    """python3 -m http.server and curl, both unmodified, both wrapped: one MPTCP connection
    with two subflows, and both veth paths carry a real share of the 64 MB."""
    size, r, sd, cd, moved, snap = _transfer_two_paths(procs, shaped_bed, kind, bigfile, tmp_path)
    info = f"{kind}: rc={r.returncode} stdout={r.stdout!r} stderr={r.stderr[-2000:]!r}\n" \
           f"server MIB {sd}\nclient MIB {cd}\npath bytes {moved}\n{snap}"
    assert r.returncode == 0 and curl_result(r) == [(200, size)], info
    # the kernel: an MPTCP handshake on the server's listener, and a second subflow joined
    assert sd.get("MPTcpExtMPCapableSYNRX", 0) >= 1, info
    assert sd.get("MPTcpExtMPCapableACKRX", 0) >= 1, info
    assert sd.get("MPTcpExtMPJoinSynRx", 0) >= 1, info
    assert sd.get("MPTcpExtMPJoinAckRx", 0) >= 1, info
    assert cd.get("MPTcpExtMPCapableSYNACKRX", 0) >= 1, info
    assert cd.get("MPTcpExtMPJoinSynAckRx", 0) >= 1, info
    assert sd.get("MPTcpExtMPCapableFallbackACK", 0) == 0 and cd.get("MPTcpExtMPCapableFallbackSYNACK", 0) == 0, info
    # ss: the MPTCP socket and its two TCP subflows, seen while the data flows
    assert re.search(rf":{HTTP_PORT}\b", snap["ss_M_server"]), info
    m = re.search(r"\bsubflows:(\d+)", snap["ss_M_client"])  # additional subflows (the first not counted)
    assert m and int(m.group(1)) >= 1, info
    subflows = [ln for ln in snap["ss_t_server"].splitlines() if ln.strip()]
    assert len(subflows) >= 2, info
    assert any(PATH_V4[2][0] in ln for ln in subflows), info
    # the wire: both paths carried at least a fifth of the file
    for path in (1, 2):
        assert moved[path] >= size // 5, info


def test_two_paths_negative_control(procs, shaped_bed, bigfile, tmp_path):
    """The same transfer without any wrapper: plain TCP, no MPTCP counter moves, path 2 idle."""
    size, r, sd, cd, moved, snap = _transfer_two_paths(procs, shaped_bed, "plain", bigfile, tmp_path)
    info = f"rc={r.returncode} {r.stdout!r} {r.stderr!r} server {sd} client {cd} paths {moved}"
    assert r.returncode == 0 and curl_result(r) == [(200, size)], info
    for k in ("MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableSYNTX", "MPTcpExtMPJoinSynRx",
              "MPTcpExtMPJoinSynTx", "MPTcpExtMPCapableSYNACKRX"):
        assert sd.get(k, 0) == 0 and cd.get(k, 0) == 0, info
    assert snap["ss_M_server"].strip() == "" and snap["ss_M_client"].strip() == "", info
    assert moved[1] >= size and moved[2] < 100_000, info


# --------------------------------------------------------------------------- 3. failover

def _transfer_with_cut(procs, bed, kind, root, tmp_path, max_time):
    name = "f100"
    size = (root / name).stat().st_size
    start_http(procs, bed, kind, root, tmp_path)
    s0 = bed.mib(bed.server)
    b0 = bed.path_bytes()
    p = procs.spawn(bed.ns_cmd(bed.client, wrap(kind, curl_cmd([url(name)], max_time))))
    t0 = time.monotonic()
    got = util.wait_until(lambda: bed.path_bytes()[1] - b0[1] > 10 << 20 or p.poll() is not None, 30, 0.02)
    assert got and p.poll() is None, f"{kind}: transfer did not start or ended before the cut"
    bed.cut(1)
    t_cut = time.monotonic() - t0
    at_cut = bed.path_bytes()
    try:
        out, err = p.communicate(timeout=max_time + 15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{kind}: curl not finished {max_time + 15}s (its own --max-time is {max_time})")
    elapsed = time.monotonic() - t0
    after = bed.path_bytes()
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    sd = netns.mib_delta(s0, bed.mib(bed.server))
    info = (f"{kind}: rc={r.returncode} {r.stdout!r} {r.stderr[-1500:]!r} cut at {t_cut:.1f}s, "
            f"elapsed {elapsed:.1f}s; path bytes at cut {at_cut} after {after}; server MIB {sd}")
    return size, r, after[2] - at_cut[2], info


@pytest.mark.parametrize("kind", WRAPPERS)
def test_failover_path_cut_mid_transfer(procs, shaped_bed, bigfile, tmp_path, kind):
    """100 MB download; path 1 (the one the connection started on) goes down after 10 MB:
    the download completes, over path 2."""
    size, r, moved2_after_cut, info = _transfer_with_cut(procs, shaped_bed, kind, bigfile, tmp_path, 60)
    assert r.returncode == 0 and curl_result(r) == [(200, size)], info
    assert moved2_after_cut > 20 << 20, info


def test_failover_plain_tcp_stalls(procs, shaped_bed, bigfile, tmp_path):
    """Control: the same download as plain TCP (no wrapper) does not survive the cut."""
    size, r, moved2_after_cut, info = _transfer_with_cut(procs, shaped_bed, "plain", bigfile, tmp_path, 15)
    assert r.returncode != 0, info
    res = curl_result(r)
    assert not res or res[0][1] < size, info
    assert moved2_after_cut < 1 << 20, info


# --------------------------------------------------------------------------- 4. fallback

def test_fallback_mptcp_disabled_in_client_ns(procs, bed, bigfile, tmp_path):
    """net.mptcp.enabled=0 in the client namespace: curl still downloads (two connections,
    plain TCP), and sockwrap says so exactly once, with a warning naming MPTCP."""
    start_http(procs, bed, "sockwrap", bigfile, tmp_path)
    bed.mptcp_enabled(bed.client, False)
    s0 = bed.mib(bed.server)
    r = util.run(bed.ns_cmd(bed.client, wrap("sockwrap", curl_cmd([url("small"), url("small")], 15))),
                 timeout=30)
    sd = netns.mib_delta(s0, bed.mib(bed.server), prefix="")
    info = f"rc={r.returncode} stdout={r.stdout!r} stderr={r.stderr!r} server {sd}"
    assert r.returncode == 0 and curl_result(r) == [(200, 4096), (200, 4096)], info
    # the kernel: two plain TCP connections reached the (MPTCP) server, none of them MPTCP
    assert sd.get("TcpPassiveOpens", 0) >= 2, info
    assert sd.get("MPTcpExtMPCapableSYNRX", 0) == 0, info
    warns = mptcp_warnings(r.stderr)
    assert len(warns) == 1, info
    assert "MPTCP" in warns[0] and "falling back" in warns[0], info


def test_fallback_strict_fails_socket(procs, bed, bigfile, tmp_path):
    """--strict: with MPTCP disabled the program's socket() call fails instead (curl cannot connect),
    and no connection reaches the server."""
    start_http(procs, bed, "plain", bigfile, tmp_path)
    bed.mptcp_enabled(bed.client, False)
    s0 = bed.mib(bed.server)
    r = util.run(bed.ns_cmd(bed.client, wrap("sockwrap", curl_cmd([url("small")], 10), extra=["--strict"])),
                 timeout=30)
    sd = netns.mib_delta(s0, bed.mib(bed.server), prefix="Tcp")
    info = f"rc={r.returncode} stdout={r.stdout!r} stderr={r.stderr!r} server {sd}"
    assert r.returncode == 7, info  # curl: couldn't connect
    assert sd.get("TcpPassiveOpens", 0) == 0, info


def test_fallback_mptcpize_observed(procs, bed, bigfile, tmp_path):
    """The peer in the same setting (observed on Debian's mptcpize 0.12): its library does not
    fall back, socket() fails with ENOPROTOOPT and curl cannot connect."""
    util.require_tool("mptcpize")
    start_http(procs, bed, "plain", bigfile, tmp_path)
    bed.mptcp_enabled(bed.client, False)
    s0 = bed.mib(bed.server)
    r = util.run(bed.ns_cmd(bed.client, wrap("mptcpize", curl_cmd([url("small")], 10))), timeout=30)
    sd = netns.mib_delta(s0, bed.mib(bed.server), prefix="Tcp")
    info = f"rc={r.returncode} stdout={r.stdout!r} stderr={r.stderr!r} server {sd}"
    assert r.returncode == 7, info
    assert sd.get("TcpPassiveOpens", 0) == 0, info
    # and the errno behind it, from a program that reports it
    r2, out = opt_client(bed, "mptcpize", PATH_V4[1][1], 9, "none")
    assert r2.returncode != 0 and "Protocol not available" in r2.stderr, (r2.returncode, r2.stderr)


# --------------------------------------------------------------------------- 5. options MPTCP rejects

def test_mptcp_socket_is_mptcp_end_to_end(procs, bed):
    """Baseline for the option tests: under --mptcp, an ordinary client's socket is MPTCP
    (SO_PROTOCOL 262 on its own fd, and on the server's accepted fd) over IPv4 and IPv6."""
    start_proto_server(procs, bed, "0.0.0.0", PROTO_PORT)
    start_proto_server(procs, bed, "::", PROTO_PORT + 1)
    for host, port in ((PATH_V4[1][1], PROTO_PORT), (PATH_V6[1][1], PROTO_PORT + 1)):
        r, out = opt_client(bed, "sockwrap", host, port, "none")
        info = f"{host}: rc={r.returncode} {out} {r.stderr!r}"
        assert r.returncode == 0 and out, info
        assert out["proto_before"] == IPPROTO_MPTCP and out["proto_after"] == IPPROTO_MPTCP, info
        assert out["server"]["proto"] == IPPROTO_MPTCP, info


@pytest.mark.parametrize("option,host_i", [("user_timeout", 4), ("tclass", 6)])
def test_rejected_option_before_connect_still_connects(procs, bed, option, host_i):
    """TCP_USER_TIMEOUT (ENOPROTOOPT on MPTCP) / IPV6_TCLASS on AF_INET6 (EOPNOTSUPP) set before
    connect: under --mptcp the program's setsockopt succeeds, the option is really set (read
    back from the kernel), and the connection is made -- as plain TCP on the same fd."""
    host = PATH_V4[1][1] if host_i == 4 else PATH_V6[1][1]
    start_proto_server(procs, bed, "0.0.0.0" if host_i == 4 else "::", PROTO_PORT)
    r, out = opt_client(bed, "sockwrap", host, PROTO_PORT, option)
    info = f"rc={r.returncode} {out} stderr={r.stderr!r}"
    assert r.returncode == 0 and out, info
    assert out["proto_before"] == IPPROTO_MPTCP, info  # it was MPTCP until the option came
    assert out["setsockopt"] == "ok" and out["connect"] == "ok", info
    assert out["readback"] == (5000 if option == "user_timeout" else 0xB8), info
    assert out["proto_after"] == 6 and out["server"]["proto"] == 6, info


@pytest.mark.parametrize("option,host_i,errno", [("user_timeout", 4, ENOPROTOOPT), ("tclass", 6, EOPNOTSUPP)])
def test_rejected_option_mptcpize_observed(procs, bed, option, host_i, errno):
    """The peer (observed): mptcpize's socket stays MPTCP and the program's setsockopt fails
    (TCP_USER_TIMEOUT: ENOPROTOOPT, IPV6_TCLASS: EOPNOTSUPP), so a program that checks it gives up."""
    util.require_tool("mptcpize")
    host = PATH_V4[1][1] if host_i == 4 else PATH_V6[1][1]
    start_proto_server(procs, bed, "0.0.0.0" if host_i == 4 else "::", PROTO_PORT)
    r, out = opt_client(bed, "mptcpize", host, PROTO_PORT, option)
    info = f"rc={r.returncode} {out} stderr={r.stderr!r}"
    assert r.returncode == 3 and out, info
    assert out["proto_before"] == IPPROTO_MPTCP and out["setsockopt"] == errno, info


def test_option_failing_on_tcp_too_keeps_mptcp(procs, bed):
    """An option that plain TCP refuses as well (IPV6_V6ONLY on an AF_INET socket: ENOPROTOOPT
    either way; Python's http.server tries it on every listener and ignores the error) gives no
    reason to leave MPTCP: the program sees the same error, the socket stays MPTCP."""
    start_proto_server(procs, bed, "0.0.0.0", PROTO_PORT)
    r, out = opt_client(bed, "sockwrap", PATH_V4[1][1], PROTO_PORT, "v6only")
    info = f"rc={r.returncode} {out} stderr={r.stderr!r}"
    assert r.returncode == 0 and out, info
    assert out["setsockopt"] == ENOPROTOOPT, info  # what the program gets over plain TCP too
    assert out["proto_after"] == IPPROTO_MPTCP and out["server"]["proto"] == IPPROTO_MPTCP, info


# --------------------------------------------------------------------------- visibility, config, Go, doctor

def test_info_log_says_mptcp_or_fallback(procs, bed):
    """SOCKWRAP_LOG=info names MPTCP for an MPTCP connection, and says it fell back when the
    kernel refused (net.mptcp.enabled=0)."""
    start_proto_server(procs, bed, "0.0.0.0", PROTO_PORT)
    r, out = opt_client(bed, "sockwrap", PATH_V4[1][1], PROTO_PORT, "none", extra=["--log", "info"])
    assert r.returncode == 0 and out and out["proto_after"] == IPPROTO_MPTCP, (out, r.stderr)
    lines = [ln for ln in sockwrap_lines(r.stderr) if "mptcp" in ln.lower()]
    assert lines, r.stderr
    bed.mptcp_enabled(bed.client, False)
    r, out = opt_client(bed, "sockwrap", PATH_V4[1][1], PROTO_PORT, "none", extra=["--log", "info"])
    assert r.returncode == 0 and out and out["proto_after"] == 6, (out, r.stderr)
    assert any("mptcp" in ln.lower() and "fall" in ln.lower() for ln in sockwrap_lines(r.stderr)), r.stderr


def test_env_and_config_turn_mptcp_on(procs, bed, tmp_path):
    """SOCKWRAP_MPTCP=1 (library preloaded directly) and `mptcp = true` in a TOML rule make the
    socket MPTCP; a rule for another program does not."""
    start_proto_server(procs, bed, "0.0.0.0", PROTO_PORT)
    client = util.peer("opt_client.py", PATH_V4[1][1], PROTO_PORT, "none")
    e = util.preload_env(SOCKWRAP_MPTCP=1)
    r = util.run(bed.ns_cmd(bed.client, ["env", *[f"{k}={v}" for k, v in e.items()], *client]))
    assert r.returncode == 0 and json.loads(r.stdout)["server"]["proto"] == IPPROTO_MPTCP, (r.stdout, r.stderr)

    for prog, want in (("python3", IPPROTO_MPTCP), ("curl", 6)):
        cfg = tmp_path / f"mptcp-{prog}.toml"
        cfg.write_text(f'[[rule]]\nname = "mp"\nmatch = {{ program = "{prog}", transport = "tcp" }}\n'
                       'mptcp = true\n')
        chk = util.run([util.SOCKWRAP_BIN, "check", cfg])
        assert chk.returncode == 0, chk.stderr
        r = util.run(bed.ns_cmd(bed.client, util.sockwrap_cmd(["-c", cfg], client)))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["proto_after"] == want and out["server"]["proto"] == want, (prog, out, r.stderr)


@pytest.mark.parametrize("preset,expect", [(None, "multipathtcp=1"), ("x509sha1=1", "x509sha1=1,multipathtcp=1")])
def test_godebug_for_go_programs(preset, expect):
    """--mptcp sets GODEBUG=multipathtcp=1 for Go programs, appending to an existing GODEBUG."""
    env = {"GODEBUG": preset} if preset else None
    r = util.run_under_sockwrap(["--mptcp"], ["sh", "-c", 'printf %s "$GODEBUG"'], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expect, r.stdout


def test_doctor_reports_mptcp(bed):
    """`sockwrap doctor`, if present, reports MPTCP state of the namespace it runs in (loose)."""
    util.require_sockwrap()
    r = util.run(bed.ns_cmd(bed.client, [util.SOCKWRAP_BIN, "doctor"]))
    if r.returncode != 0 and re.search(r"unrecognized|unexpected|invalid.*subcommand", r.stderr, re.I):
        pytest.skip("sockwrap doctor not implemented")
    text = r.stdout + r.stderr
    assert "mptcp" in text.lower(), text
    bed.mptcp_enabled(bed.client, False)
    r2 = util.run(bed.ns_cmd(bed.client, [util.SOCKWRAP_BIN, "doctor"]))
    text2 = (r2.stdout + r2.stderr).lower()
    assert "enabled=0" in text2 or "disabled" in text2 or "not enabled" in text2, text2


# --------------------------------------------------------------------------- which sockets become MPTCP

_KINDS = r'''
import socket, json
out = {}
for fam in ("AF_INET", "AF_INET6"):
    for name, typ, proto in (("stream", socket.SOCK_STREAM, 0),
                             ("stream|nonblock", socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0),
                             ("stream|cloexec", socket.SOCK_STREAM | socket.SOCK_CLOEXEC, 0),
                             ("stream,tcp", socket.SOCK_STREAM, socket.IPPROTO_TCP),
                             ("dgram", socket.SOCK_DGRAM, 0)):
        with socket.socket(getattr(socket, fam), typ, proto) as s:
            out[fam + " " + name] = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    out["AF_UNIX stream"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
print(json.dumps(out))
'''


@pytest.mark.parametrize("kind", WRAPPERS)
def test_which_sockets_become_mptcp(bed, kind):
    """TCP stream sockets of both families (protocol 0 or IPPROTO_TCP, with SOCK_NONBLOCK /
    SOCK_CLOEXEC) become MPTCP; UDP and AF_UNIX are untouched (SO_PROTOCOL from the kernel)."""
    r = util.run(bed.ns_cmd(bed.client, wrap(kind, [util.PY, "-c", _KINDS])))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for k, v in out.items():
        want = IPPROTO_MPTCP if " stream" in k and not k.startswith("AF_UNIX") else (17 if "dgram" in k else 0)
        assert v == want, (k, out)


# --------------------------------------------------------------------------- peer without MPTCP

@pytest.mark.parametrize("wrapped", ["client", "server"])
def test_peer_without_mptcp_falls_back_in_handshake(procs, bed, bigfile, tmp_path, wrapped):
    """Only one side under sockwrap --mptcp: the connection falls back to TCP during the
    handshake and the download works (the kernel's fallback counters say so)."""
    start_http(procs, bed, "sockwrap" if wrapped == "server" else "plain", bigfile, tmp_path)
    s0, c0 = bed.mib(bed.server), bed.mib(bed.client)
    r = util.run(bed.ns_cmd(bed.client, wrap("sockwrap" if wrapped == "client" else "plain",
                                             curl_cmd([url("small")], 15), extra=["--log", "info"])
                            if wrapped == "client" else curl_cmd([url("small")], 15)), timeout=30)
    sd = netns.mib_delta(s0, bed.mib(bed.server))
    cd = netns.mib_delta(c0, bed.mib(bed.client))
    info = f"rc={r.returncode} {r.stdout!r} {r.stderr!r} server {sd} client {cd}"
    assert r.returncode == 0 and curl_result(r) == [(200, 4096)], info
    assert sd.get("MPTcpExtMPCapableSYNRX", 0) == 0, info
    if wrapped == "client":
        assert cd.get("MPTcpExtMPCapableSYNTX", 0) == 1, info
        assert cd.get("MPTcpExtMPCapableFallbackSYNACK", 0) == 1, info
        # visibility: the info log tells this connection fell back to TCP
        # ("MPTCP connect in progress" alone does not say it; the kernel knows after the
        # handshake: MPTCP_INFO / TCP_IS_MPTCP)
        assert any("mptcp" in ln.lower() and re.search(r"fall(s|ing)?[ -]?back|fell back|plain tcp", ln, re.I)
                   for ln in sockwrap_lines(r.stderr)), info
    else:
        assert cd.get("MPTcpExtMPCapableSYNTX", 0) == 0, info


# --------------------------------------------------------------------------- iperf3

@pytest.mark.parametrize("kind", WRAPPERS)
def test_iperf3_two_paths(procs, shaped_bed, kind):
    """Debian's iperf3 3.12 (no MPTCP of its own), server and client wrapped: the transfer uses
    both paths."""
    util.require_tool("iperf3")
    bed = shaped_bed
    procs.spawn(bed.ns_cmd(bed.server, wrap(kind, ["iperf3", "-s", "-1", "-p", 5201])),
                stdout=subprocess.DEVNULL)
    bed.wait_listening("0.0.0.0", 5201)
    s0, b0 = bed.mib(bed.server), bed.path_bytes()
    size = 48 << 20
    r = util.run(bed.ns_cmd(bed.client, wrap(kind, ["iperf3", "-c", PATH_V4[1][1], "-p", 5201,
                                                    "-n", size, "-J"])), timeout=60)
    b1 = bed.path_bytes()
    sd = netns.mib_delta(s0, bed.mib(bed.server))
    moved = {p: b1[p] - b0[p] for p in b1}
    info = f"{kind}: rc={r.returncode} stderr={r.stderr[-1500:]!r} server {sd} paths {moved}"
    assert r.returncode == 0, info
    assert json.loads(r.stdout)["end"]["sum_sent"]["bytes"] >= size, info
    assert sd.get("MPTcpExtMPCapableSYNRX", 0) >= 2, info  # control and data connections
    assert sd.get("MPTcpExtMPJoinAckRx", 0) >= 1, info
    for p in (1, 2):
        assert moved[p] >= size // 5, info
