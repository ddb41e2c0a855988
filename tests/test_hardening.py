"""The hardening matrix (issue 5): situations that try to break libsockwrap.so inside a
program we did not write -- threads, signals, fork/exec/daemons, load order and stacked
preloads, fd reuse and duplication, errno parity, secure mode, memory, language runtimes.

Every check is made by a witness other than sockwrap: the peer socket (util.tos_server),
nft counters on the output path, /proc, files on disk, valgrind."""
import array
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import util
from util import EF, PY, AcceptServer, run, run_preloaded, run_under_sockwrap, tos_server

HERE = Path(__file__).resolve().parent / "hardening"
OPTS = ["--dscp", "EF", "--nodelay", "--keepalive", "30,10,3"]  # locked (the default)


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def cbuild(tmp_path_factory):
    """Compile tests/hardening/NAME.c once per module: cbuild(NAME, *flags) -> path."""
    out = tmp_path_factory.mktemp("hardening-bin")
    cache = {}

    def build(name, *flags, shared=False):
        key = (name, flags, shared)
        if key in cache:
            return cache[key]
        suffix = ".so" if shared else ""
        dest = out / (name + "-" + str(len(cache)) + suffix)
        shared_flags = ["-shared", "-fPIC"] if shared else []
        cache[key] = util.build_c(HERE / (name + ".c"), dest, "-g", *shared_flags, *flags)
        return dest
    return build


def unix_listener(path):
    """AF_UNIX stream listener on path (backlog 1, 10 s timeout): the descriptor-passing channel."""
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.bind(path)
    us.listen(1)
    us.settimeout(10)
    return us


class NftCounters:
    """nft counters on the output hook for TCP packets to one local port (loopback)."""

    def __init__(self, port):
        self.table = f"sockwrap_hard_{port}"
        self.port = port

    def __enter__(self):
        util.require_root("nft counters need root")
        util.require_tool("nft")
        p, t = self.port, self.table
        script = f"""
table ip {t} {{
  chain out {{
    type filter hook output priority 0; policy accept;
    tcp dport {p} tcp flags & (syn | ack) == syn ip dscp ef counter comment "syn_ef"
    tcp dport {p} tcp flags & (syn | ack) == syn ip dscp != ef counter comment "syn_other"
    tcp dport {p} tcp flags & rst == 0 ip dscp != ef counter comment "other_not_ef"
    tcp dport {p} tcp flags & rst == rst ip dscp != ef counter comment "rst_not_ef"
    tcp dport {p} ip dscp ef counter comment "all_ef"
  }}
}}
"""
        r = subprocess.run(["nft", "-f", "-"], input=script, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        assert r.returncode == 0, r.stderr
        return self

    def read(self):
        r = subprocess.run(["nft", "-j", "list", "table", "ip", self.table],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        out = {}
        for item in json.loads(r.stdout)["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            pk = None
            for e in rule["expr"]:
                if "counter" in e:
                    pk = e["counter"]["packets"]
            out[rule.get("comment")] = pk
        return out

    def __exit__(self, *exc):
        subprocess.run(["nft", "delete", "table", "ip", self.table], timeout=10)
        return False


def tos_of(results, tag):
    rec = [r for r in results if r["data"].startswith(tag)]
    assert rec, f"no connection sent {tag!r}: {results}"
    return rec[0]


# --------------------------------------------------------------------------- 1. threads

def test_threads_32x200_every_connection_marked_no_fd_leak(cbuild, port):
    """32 threads x 200 connect/close under a locked policy; each thread sets IP_TOS 0 itself
    after connect.  nft counts: every SYN and every packet to the port has DSCP EF."""
    util.require_sockwrap()
    prog = cbuild("threads", "-pthread")
    n_threads, per = 32, 200
    with AcceptServer(port), NftCounters(port) as nft:
        r = run_under_sockwrap(OPTS, [prog, port, n_threads, per], timeout=90)
        time.sleep(0.3)
        c = nft.read()
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr[-2000:]}"
    start, end = r.stdout.split("\n")[0].split()[1:3]
    assert start == end, f"fd leak: {r.stdout}"
    total = n_threads * per
    # >= : a SYN dropped by a full accept queue is retransmitted (and must be EF too)
    assert c["syn_ef"] >= total and c["syn_other"] == 0, (c, r.stdout)
    # Every SYN, ACK, data and FIN segment of every connection carries EF. RSTs are counted
    # apart: a reset the kernel sends in answer to a segment (tcp_v4_send_reset) is built by
    # its own control socket, not by the program's, so it does not carry the socket's ToS;
    # under this load (accept queue overflows, retransmitted SYNs) a few occur. A lost lock
    # would show in the ACKs and FINs every connection sends.
    print("nft counters:", c)
    assert c["other_not_ef"] == 0, f"packets without EF (lock lost under threads?): {c}"
    assert c["rst_not_ef"] <= total // 20, f"more resets than the load explains: {c}"


def test_threads_witness_can_fail(cbuild, port):
    """Control: without sockwrap the same program's packets are counted as not EF."""
    prog = cbuild("threads", "-pthread")
    with AcceptServer(port), NftCounters(port) as nft:
        r = run([prog, port, 4, 10], timeout=30)
        time.sleep(0.3)
        c = nft.read()
    assert r.returncode == 0, r.stdout + r.stderr
    assert c["syn_ef"] == 0 and c["syn_other"] == 40 and c["other_not_ef"] > 0, c


# --------------------------------------------------------------------------- 2. signals

def test_signal_handler_uses_sockets_while_main_is_in_hooks(cbuild, port):
    """SIGALRM every 100 us; the handler does socket/setsockopt/close while the main loop
    does socket/connect/setsockopt/close 5000 times.  Must finish (no deadlock), exit 0."""
    util.require_sockwrap()
    prog = cbuild("signals")
    with AcceptServer(port) as srv, NftCounters(port) as nft:
        t0 = time.monotonic()
        try:
            r = run_under_sockwrap(OPTS, [prog, port, 5000], timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("deadlock: signal test did not finish within 60 s")
        elapsed = time.monotonic() - t0
        time.sleep(0.3)
        c = nft.read()
    assert r.returncode == 0, f"rc={r.returncode} {r.stdout} {r.stderr[-2000:]}"
    handled = int(r.stdout.split()[5])
    assert handled > 100, f"the timer barely fired, the test proves nothing: {r.stdout}"
    assert c["syn_ef"] >= 5000 and c["syn_other"] == 0, (c, r.stdout, elapsed)


# --------------------------------------------------------------------------- 3. fork / exec / daemons

def test_fork_exec_spawn_children_keep_policy(port):
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port, reply=b"k") as srv:
        r = run_under_sockwrap(["--dscp", "EF"], [PY, HERE / "fork_client.py", "127.0.0.1", port], timeout=40)
        res = srv.wait(5, timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    for tag in (b"parent", b"fork\n", b"forkexec", b"subprocess", b"posix_spawn"):
        assert tos_of(res, tag)["tos"] == EF, (tag, res)


@pytest.mark.parametrize("close_from", [3, 2], ids=["close_range3", "close_range2"])
@pytest.mark.parametrize("logdest", ["stderr", "logfile"])
def test_daemon_closing_fds_never_gets_log_text(cbuild, tmp_path, port, close_from, logdest):
    """A daemon closes every fd >= 3 (or >= 2) with close_range, then opens a file (it gets
    the number of sockwrap's log descriptor / stderr) and connects: the file holds only its
    own data, no sockwrap text; the log goes on where it still can."""
    util.require_sockwrap()
    prog = cbuild("daemon")
    data = tmp_path / "data.txt"
    args = ["--dscp", "EF", "--log", "debug"]
    log = tmp_path / "sw.log"
    if logdest == "logfile":
        args += ["--log-file", log]
    with tos_server(socket.AF_INET, port) as srv:
        r = run_under_sockwrap(args, [prog, close_from, data, port])
        res = srv.wait(3)
    assert r.returncode == 0, f"rc={r.returncode} {r.stdout} {r.stderr}"
    assert data.read_bytes() == b"DATA\n", f"log text in the daemon's file:\n{data.read_text()!r}"
    assert [x["tos"] for x in res] == [EF] * 3, res
    # The connections' lines come after the close_range. With fds >= 3 closed the log goes
    # on (OpenSSH's closefrom(3) at start is the common case): the log file opened again,
    # or the program's own fd 2, still the stderr sockwrap was given. With fd 2 closed too
    # and its number reused for the program's file, stderr gets nothing more (a log file
    # still does).
    text = log.read_text() if logdest == "logfile" else r.stderr
    overridden = text.count("program's setsockopt(IP_TOS, 0x0) overridden")
    assert overridden == (3 if close_from == 3 or logdest == "logfile" else 0), text
    if logdest == "logfile":
        # control: the library did want to log (debug), into its own file
        assert "sockwrap" in log.read_text(), "nothing logged at debug: the test proves nothing"


def test_stderr_closed_file_gets_fd2_no_log_text(cbuild, tmp_path, port):
    """`2>&-`: the program's first open() returns fd 2; sockwrap must not log into it."""
    util.require_sockwrap()
    prog = cbuild("daemon")
    data = tmp_path / "data.txt"
    # preloaded directly: the launcher (Rust std) would reopen a closed fd 2 on /dev/null
    cmd = ["sh", "-c", 'exec "$@" 2>&-', "sh", prog, -1, data, port]
    with tos_server(socket.AF_INET, port) as srv:
        r = run_preloaded(cmd, SOCKWRAP_DSCP="EF", SOCKWRAP_LOG="debug")
        res = srv.wait(3)
    assert r.returncode == 0, f"rc={r.returncode} {r.stdout} {r.stderr}"
    assert "fd 2" in r.stdout, f"the file did not get fd 2, the test proves nothing: {r.stdout}"
    assert data.read_bytes() == b"DATA\n", f"log text in the program's file:\n{data.read_text()!r}"
    assert [x["tos"] for x in res] == [EF] * 3, res


@pytest.mark.parametrize("config", [False, True], ids=["flags", "policy_file"])
def test_log_fd_does_not_leak_across_exec(tmp_path, config):
    """A program under sockwrap (env, with the library and its log file open) execs a child
    without the library: the child's /proc/self/fd shows no sockwrap descriptor (nor one
    the launcher opened, e.g. for the policy file)."""
    util.require_sockwrap()
    log = tmp_path / "sw.log"
    args = ["--log", "debug", "--log-file", log]
    if config:
        cfg = tmp_path / "policy.toml"
        cfg.write_text('[[rule]]\ndscp = "EF"\nnodelay = true\n')
        args += ["-c", cfg]
    else:
        args += ["--dscp", "EF"]
    r = run_under_sockwrap(args, ["sh", "-c", "exec env -u LD_PRELOAD ls -l /proc/self/fd/"])
    assert r.returncode == 0, r.stderr
    assert log.exists() and "sockwrap" in log.read_text(), "the library logged nothing: no proof"
    assert "sw.log" not in r.stdout and "policy.toml" not in r.stdout, r.stdout
    fds = sorted(int(line.split()[-3]) for line in r.stdout.splitlines() if "->" in line)
    assert fds == [0, 1, 2, 3], f"descriptors leaked into the exec'd child:\n{r.stdout}"


def test_log_fd_of_shell_child_is_cloexec(tmp_path):
    """`sh -c 'ls -l /proc/$$/fd'`: the shell has the library loaded (log fd open); its
    exec'd ls child must not inherit it -- compare the child's own table."""
    util.require_sockwrap()
    log = tmp_path / "sw.log"
    r = run_under_sockwrap(["--log", "debug", "--log-file", log, "--dscp", "EF"],
                           ["sh", "-c", "ls -l /proc/$$/fd/; echo ===; exec env -u LD_PRELOAD ls -l /proc/self/fd/"])
    assert r.returncode == 0, r.stderr
    shell, child = r.stdout.split("===")
    assert "sw.log" in shell, f"the shell should hold the log descriptor (library loaded):\n{shell}"
    assert "sw.log" not in child, f"log descriptor leaked across exec:\n{child}"


@pytest.mark.parametrize("kind", ["socketpair", "tcp"])
def test_stderr_socket_gets_no_log_text(kind, port, port2):
    """inetd style: stderr is a socket.  With --log debug nothing mentioning sockwrap may
    arrive on it; with a pipe as stderr the same run does log (control)."""
    util.require_sockwrap()
    if kind == "socketpair":
        ours, theirs = socket.socketpair()
    else:
        ls = socket.socket()
        ls.bind(("127.0.0.1", port2))
        ls.listen(1)
        theirs = socket.create_connection(("127.0.0.1", port2))
        ours, _ = ls.accept()
        ls.close()
    cmd = util.sockwrap_cmd(["--dscp", "EF", "--log", "debug"],
                            util.peer("tcp_client.py", "127.0.0.1", port, "--set-tos", "0x10", "--send-after", "x\n"))
    with tos_server(socket.AF_INET, port) as srv:
        p = subprocess.Popen(cmd, env=util._env(None), stdout=subprocess.PIPE, stderr=theirs.fileno())
        theirs.close()
        out, _ = p.communicate(timeout=20)
        ours.settimeout(2)
        got = b""
        while True:
            try:
                d = ours.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            got += d
        ours.close()
        res = srv.wait(1)
    assert p.returncode == 0, (out, got)
    assert b"sockwrap" not in got, f"log text arrived on the stderr socket: {got[:500]!r}"
    assert res and res[0]["tos"] == EF, res
    control = run(cmd)
    assert "sockwrap" in control.stderr, "control: --log debug to a pipe should log"


# --------------------------------------------------------------------------- 3b. load order, stacked preloads

def _preload_client(port, preload, extra_env=None, family=socket.AF_INET):
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    env = {"LD_PRELOAD": preload, "SOCKWRAP_DSCP": "EF"}
    env.update(extra_env or {})
    with tos_server(family, port) as srv:
        r = run(util.peer("tcp_client.py", host, port), env=env, timeout=20)
        res = srv.wait(1, timeout=5)
    return r, res


@pytest.mark.parametrize("order", ["early_first", "sockwrap_first"])
def test_other_constructor_calls_socket_before_ours(cbuild, port, order):
    util.require_sockwrap()
    early = cbuild("early_preload", shared=True)
    libs = [str(early), str(util.SOCKWRAP_LIB)]
    if order == "sockwrap_first":
        libs.reverse()
    r, res = _preload_client(port, ":".join(libs))
    assert r.returncode == 0, r.stderr
    assert res and res[0]["tos"] == EF, (res, r.stderr)


def _libmptcpwrap():
    r = subprocess.run(["dpkg", "-L", "libmptcpwrap0", "mptcpize"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    libs = [l for l in r.stdout.split() if ".so" in l and os.path.isfile(l)]
    return libs[0] if libs else None


@pytest.mark.parametrize("order", ["mptcpwrap_first", "sockwrap_first"])
def test_stacked_with_libmptcpwrap(port, order):
    util.require_sockwrap()
    lib = _libmptcpwrap()
    util.require(lib is not None, "libmptcpwrap.so not installed (apt-get install mptcpize)")
    libs = [lib, str(util.SOCKWRAP_LIB)]
    if order == "sockwrap_first":
        libs.reverse()
    r, res = _preload_client(port, ":".join(libs))
    assert r.returncode == 0, r.stderr
    assert res and res[0]["tos"] == EF, (res, r.stderr)


@pytest.mark.parametrize("order", ["proxychains_first", "sockwrap_first"])
def test_stacked_with_proxychains(tmp_path, port, order):
    util.require_sockwrap()
    lib = "/usr/lib/x86_64-linux-gnu/libproxychains.so.4"
    util.require(os.path.isfile(lib), "proxychains4 not installed (apt-get install proxychains4)")
    conf = tmp_path / "proxychains.conf"
    conf.write_text("strict_chain\nquiet_mode\ntcp_read_time_out 2000\ntcp_connect_time_out 2000\n"
                    "localnet 127.0.0.0/255.0.0.0\n[ProxyList]\nsocks5 192.0.2.1 1080\n")
    libs = [lib, str(util.SOCKWRAP_LIB)]
    if order == "sockwrap_first":
        libs.reverse()
    r, res = _preload_client(port, ":".join(libs), {"PROXYCHAINS_CONF_FILE": conf})
    assert r.returncode == 0, r.stderr
    assert res and res[0]["data"].startswith(b"hello"), res
    assert res[0]["tos"] == EF, (res, r.stderr)


# --------------------------------------------------------------------------- 4. fd reuse and duplication

FAMS = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


def _to(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.mark.parametrize("mode", ["reuse", "dup2"])
@pytest.mark.parametrize("fam", FAMS)
def test_lock_does_not_leak_to_new_socket_on_same_fd(mode, fam, port, port2):
    util.require_sockwrap()
    family, host = FAMS[fam]
    if family == socket.AF_INET6:
        util.require_ipv6()
    with tos_server(family, port) as s1, tos_server(family, port2) as s2:
        r = run_under_sockwrap(["--to", _to(host, port), "--dscp", "EF"],
                               [PY, HERE / "fdreuse.py", mode, host, port, port2])
        r1, r2 = s1.wait(1), s2.wait(1)
        time.sleep(0.3)
    assert r.returncode == 0, r.stderr
    if mode == "reuse":
        assert "reused True" in r.stdout, f"fd number not reused, test proves nothing: {r.stdout}"
    assert r1 and r1[0]["tos"] == EF, f"the covered connection must be marked: {r1}"
    assert r2, "no connection on the uncovered port"
    seen = [t for t in r2[0]["tos_per_recv"] if t is not None] or [r2[0]["tos"]]
    assert set(seen) == {0x10}, f"program's own TOS 0x10 on the new socket was not honoured: {r2}"


@pytest.mark.parametrize("with_sockwrap", [False, True])
def test_lock_follows_dup(with_sockwrap, port):
    """dup of a locked socket: the program's IPV6_TCLASS on the duplicate is overridden
    (peer: class of the last data segment).  Without sockwrap the peer sees 0x10."""
    util.require_sockwrap()
    util.require_ipv6()
    cmd = [PY, HERE / "fdreuse.py", "dup", "::1", port, util.free_port()]
    with tos_server(socket.AF_INET6, port) as srv:
        r = run_under_sockwrap(["--to", f"[::1]:{port}", "--dscp", "EF"], cmd) if with_sockwrap else run(cmd)
        srv.wait(1)
        util.wait_until(lambda: srv.results and b"after" in srv.results[0]["data"], 5)
        res = srv.results
    assert r.returncode == 0, r.stderr
    assert res and b"after" in res[0]["data"], res
    last = res[0]["tos_per_recv"][-1]
    assert last == (EF if with_sockwrap else 0x10), res


def test_scm_rights_socket_leaves_sockwrap_process(tmp_path, port):
    """A locked socket passed to a process not under sockwrap keeps working (and its
    options, which live in the kernel)."""
    util.require_sockwrap()
    util.require_ipv6()
    path = str(tmp_path / "pass.sock")
    us = unix_listener(path)
    with tos_server(socket.AF_INET6, port) as srv:
        procs = util.Procs()
        try:
            p = procs.spawn_under_sockwrap(["--dscp", "EF"],
                                           [PY, HERE / "fdreuse.py", "scm_out", "::1", port, 1, path])
            c, _ = us.accept()
            c.settimeout(10)
            msg, anc, _, _ = c.recvmsg(1, socket.CMSG_SPACE(4))
            assert anc, "no descriptor received"
            fd = array.array("i", anc[0][2][:4])[0]
            s = socket.socket(fileno=fd)
            s.sendall(b"theirs")
            time.sleep(0.25)
            c.sendall(b"k")
            out, err = p.communicate(timeout=10)
            s.sendall(b"late")
            time.sleep(0.25)
            s.close()
            c.close()
        finally:
            procs.close()
        util.wait_until(lambda: srv.results and b"late" in srv.results[0]["data"], 5)
        res = srv.results
    assert p.returncode == 0, err
    assert res and res[0]["data"] == b"out1theirslate", res
    assert set(t for t in res[0]["tos_per_recv"]) == {EF}, res


def test_scm_rights_socket_received_by_sockwrap_process(tmp_path, port):
    """A connected socket received over SCM_RIGHTS by a program under sockwrap is adopted
    when the program sets a managed option: the lock holds (README: sockets made elsewhere)."""
    util.require_sockwrap()
    util.require_ipv6()
    path = str(tmp_path / "pass.sock")
    us = unix_listener(path)
    with tos_server(socket.AF_INET6, port) as srv:
        mine = socket.create_connection(("::1", port))
        mine.sendall(b"in1")
        time.sleep(0.25)
        procs = util.Procs()
        try:
            p = procs.spawn_under_sockwrap(["--dscp", "EF"],
                                           [PY, HERE / "fdreuse.py", "scm_in", "::1", port, 1, path])
            c, _ = us.accept()
            c.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [mine.fileno()]))])
            c.settimeout(10)
            c.recv(1)
            out, err = p.communicate(timeout=10)
        finally:
            procs.close()
        mine.close()
        util.wait_until(lambda: srv.results and b"in2" in srv.results[0]["data"], 5)
        res = srv.results
    assert p.returncode == 0, err
    assert res and res[0]["data"] == b"in1in2", res
    assert res[0]["tos_per_recv"][-1] == EF, f"adopted socket: lock did not hold: {res}"


# --------------------------------------------------------------------------- 5. errno parity

# setsockopt calls on a TCP socket for options the policy manages (locked): the lock may
# keep sockwrap's value, but invalid arguments must still fail as the kernel says
MANAGED_SETSOCKOPT = re.compile(r"^setsockopt (connected )?(IP_TOS|NODELAY|KEEPIDLE|KEEPALIVE|CONGESTION)")


@pytest.mark.parametrize("group", ["hooked_calls", "managed_setsockopt_args"])
def test_errno_parity(cbuild, group):
    """Each hooked call with failing inputs (bad fd, non-socket, bad address/length, bad
    family, EINPROGRESS, ECONNREFUSED, bad level...) and a few successes (errno untouched):
    identical results and errno with and without the library, under two policies (one
    whose options the kernel refuses internally)."""
    util.require_sockwrap()
    prog = cbuild("errno_parity")
    closed = util.free_port()
    base = run([prog, closed])
    assert base.returncode == 0, base.stderr
    assert "EINPROGRESS" in base.stdout and "ECONNREFUSED" in base.stdout, base.stdout

    def pick(text):
        lines = text.splitlines()
        return [l for l in lines if bool(MANAGED_SETSOCKOPT.match(l)) == (group != "hooked_calls")]
    failures = []
    for env in ({"SOCKWRAP_DSCP": "EF", "SOCKWRAP_NODELAY": "on", "SOCKWRAP_KEEPALIVE": "30,10,3",
                 "SOCKWRAP_PRIORITY": "3"},
                # options the kernel refuses: internal failures must not leak into errno
                {"SOCKWRAP_DSCP": "EF", "SOCKWRAP_CONGESTION": "nosuchalgo", "SOCKWRAP_NODELAY": "on",
                 "SOCKWRAP_MAXSEG": "88"},
                # strict, with options the kernel accepts: the program's failing input must
                # still fail with the kernel's errno, not with one from sockwrap's own work
                {"SOCKWRAP_STRICT": "1", "SOCKWRAP_DSCP": "EF", "SOCKWRAP_NODELAY": "on",
                 "SOCKWRAP_KEEPALIVE": "30,10,3"}):
        r = run_preloaded([prog, closed], **env)
        assert r.returncode == 0, r.stderr
        a, b = pick(base.stdout), pick(r.stdout)
        assert len(a) == len(b) and a, (base.stdout, r.stdout)
        diff = [f"  {x.strip()}\n  {y.strip()}  <- with sockwrap" for x, y in zip(a, b) if x != y]
        if diff:
            failures.append(f"result/errno differ under {env}:\n" + "\n".join(diff))
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- 6. secure mode

def _world_dir():
    d = tempfile.mkdtemp(prefix="sockwrap-suid-")
    os.chmod(d, 0o755)
    return Path(d)


def _setuid_client(cbuild):
    d = _world_dir()
    prog = d / "client"
    shutil.copy(cbuild("client"), prog)
    lib = d / "libsockwrap.so"
    shutil.copy(util.SOCKWRAP_LIB, lib)
    os.chmod(lib, 0o755)
    os.chown(prog, 0, 0)
    return d, prog, lib


@pytest.mark.parametrize("setuid", [False, True])
def test_setuid_program_ignores_ld_preload(cbuild, port, setuid):
    """A root-owned setuid program run by `nobody` with LD_PRELOAD: the loader ignores the
    preload, the program works and the peer sees TOS 0 (the documented limit).  Control: the
    same program without the setuid bit gets EF."""
    util.require_sockwrap()
    util.require_root("chown/setuid needs root")
    util.require_tool("setpriv")
    d, prog, lib = _setuid_client(cbuild)
    try:
        os.chmod(prog, 0o4755 if setuid else 0o755)
        with tos_server(socket.AF_INET, port, reply=b"ok") as srv:
            r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     prog, "127.0.0.1", port], env={"LD_PRELOAD": lib, "SOCKWRAP_DSCP": "EF"})
            res = srv.wait(1)
    finally:
        shutil.rmtree(d)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    assert res and res[0]["tos"] == (0 if setuid else EF), res


def _secure_ns_run(prog, lib, port, env, uid=65534, host_policy=None):
    """In a private mount namespace with an overlay on /etc, write /etc/ld.so.preload naming
    the library (and /etc/sockwrap/host.policy, when given), drop to `uid` and exec `prog`
    directly from a python process that was started before the file existed (so no other,
    non-secure process loads the library there)."""
    ovl = Path(tempfile.mkdtemp(prefix="sockwrap-ovl-"))
    (ovl / "u").mkdir()
    (ovl / "w").mkdir()
    if host_policy is not None:
        (ovl / "host.policy").write_text(host_policy)
    code = f"""
import os, shutil, subprocess, sys
subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                "lowerdir=/etc,upperdir={ovl}/u,workdir={ovl}/w", "/etc"], check=True)
if {host_policy is not None!r}:
    os.makedirs("/etc/sockwrap", exist_ok=True)
    shutil.copy("{ovl}/host.policy", "/etc/sockwrap/host.policy")
open("/etc/ld.so.preload", "w").write("{lib}\\n")
os.setgroups([]); os.setresgid({uid}, {uid}, {uid}); os.setresuid({uid}, {uid}, {uid})
os.execv("{prog}", ["{prog}", "127.0.0.1", "{port}"])
"""
    try:
        return run(["unshare", "-m", "--propagation", "private", PY, "-c", code], env=env)
    finally:
        shutil.rmtree(ovl, ignore_errors=True)


def test_secure_mode_library_ignores_environment(cbuild, port, tmp_path):
    """The library loaded into an AT_SECURE process anyway (via /etc/ld.so.preload, set up in
    a private mount namespace): it must ignore SOCKWRAP_* from the environment -- no DSCP,
    no log file created at the path the environment names."""
    util.require_sockwrap()
    util.require_root("mount namespace + setuid need root")
    util.require_tool("unshare")
    d, prog, lib = _setuid_client(cbuild)
    os.chmod(prog, 0o4755)
    evil = Path(tempfile.mkdtemp(prefix="sockwrap-evil-"))
    os.chmod(evil, 0o777)
    evil_log = evil / "created-by-secure-process.log"
    try:
        with tos_server(socket.AF_INET, port, reply=b"ok") as srv:
            r = _secure_ns_run(prog, lib, port, {"SOCKWRAP_DSCP": "EF", "SOCKWRAP_LOG": "debug",
                                                 "SOCKWRAP_LOG_FILE": evil_log})
            res = srv.wait(1)
        created = evil_log.read_text() if evil_log.exists() else None
    finally:
        shutil.rmtree(d)
        shutil.rmtree(evil, ignore_errors=True)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
    assert res, "no connection"
    assert res[0]["tos"] == 0, f"secure-mode process took SOCKWRAP_DSCP from the environment: {res}"
    assert created is None, f"secure-mode process opened SOCKWRAP_LOG_FILE from the environment:\n{created}"
    assert "sockwrap" not in r.stderr, f"secure-mode process logged at the environment's level: {r.stderr}"


def test_secure_mode_process_gets_the_host_policy(cbuild, port, tmp_path):
    """A setuid program ignores the environment but does get the host-wide policy
    (`sockwrap enable --system`): a root-owned file, not the caller's wish. The peer sees
    the host's EF, not the environment's CS1 (the test above is the control: no host
    policy, tos 0)."""
    util.require_sockwrap()
    util.require_root("mount namespace + setuid need root")
    util.require_tool("unshare")
    d, prog, lib = _setuid_client(cbuild)
    os.chmod(prog, 0o4755)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / str(lib).lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(lib, root / str(lib).lstrip("/"))
    os.chmod(root / str(lib).lstrip("/"), 0o755)
    pol = tmp_path / "host.toml"
    pol.write_text('[[rule]]\ndscp = "EF"\n')
    try:
        r = run([util.SOCKWRAP_BIN, "enable", "--system", "-c", pol, "--root", root],
                env={"SOCKWRAP_LIB": str(lib)})
        assert r.returncode == 0, r.stderr
        host = (root / "etc/sockwrap/host.policy").read_text()
        with tos_server(socket.AF_INET, port, reply=b"ok") as srv:
            r = _secure_ns_run(prog, lib, port, {"SOCKWRAP_DSCP": "CS1"}, host_policy=host)
            res = srv.wait(1)
    finally:
        shutil.rmtree(d)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
    assert res and res[0]["tos"] == EF, f"setuid program under a host policy: {res}"


def test_secure_mode_control_library_loaded_via_ld_so_preload(cbuild, port, tmp_path):
    """Control for the test above: the same set-up without the setuid bit applies the policy
    (so /etc/ld.so.preload in the namespace really loads the library)."""
    util.require_sockwrap()
    util.require_root("mount namespace needs root")
    util.require_tool("unshare")
    d, prog, lib = _setuid_client(cbuild)
    os.chmod(prog, 0o755)
    logdir = _world_dir()
    os.chmod(logdir, 0o777)
    log = logdir / "ok.log"
    try:
        with tos_server(socket.AF_INET, port, reply=b"ok") as srv:
            r = _secure_ns_run(prog, lib, port, {"SOCKWRAP_DSCP": "EF", "SOCKWRAP_LOG": "debug",
                                                 "SOCKWRAP_LOG_FILE": log})
            res = srv.wait(1)
        logged = log.exists()
    finally:
        shutil.rmtree(d)
        shutil.rmtree(logdir, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    assert res and res[0]["tos"] == EF, res
    assert logged, "control: the non-secure process should log to SOCKWRAP_LOG_FILE"


def test_log_file_created_0600_even_with_umask_0(tmp_path, port):
    util.require_sockwrap()
    log = tmp_path / "new.log"
    with tos_server(socket.AF_INET, port):
        r = run_under_sockwrap(["--dscp", "EF", "--log", "debug", "--log-file", log],
                               util.peer("tcp_client.py", "127.0.0.1", port), umask=0)
    assert r.returncode == 0, r.stderr
    assert log.exists() and "sockwrap" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600, oct(log.stat().st_mode)


def test_log_file_symlink_not_followed(tmp_path, port):
    util.require_sockwrap()
    target = tmp_path / "precious.txt"
    target.write_text("ORIGINAL\n")
    link = tmp_path / "sw.log"
    link.symlink_to(target)
    with tos_server(socket.AF_INET, port) as srv:
        r = run_under_sockwrap(["--dscp", "EF", "--log", "debug", "--log-file", link],
                               util.peer("tcp_client.py", "127.0.0.1", port))
        res = srv.wait(1)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "ORIGINAL\n", "the log symlink was followed"
    assert res and res[0]["tos"] == EF, "the program must still get its policy"


# --------------------------------------------------------------------------- 8. memory

def test_valgrind_memcheck_client(cbuild, port):
    util.require_sockwrap()
    util.require_tool("valgrind")
    prog = cbuild("client")
    with tos_server(socket.AF_INET, port, reply=b"ok") as srv:
        r = run(["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
                 prog, "127.0.0.1", port], env={"LD_PRELOAD": util.SOCKWRAP_LIB, "SOCKWRAP_DSCP": "EF",
                                                "SOCKWRAP_NODELAY": "on", "SOCKWRAP_KEEPALIVE": "30,10,3",
                                                "SOCKWRAP_LOG": "info"}, timeout=120)
        res = srv.wait(1)
    assert r.returncode not in (99,), r.stderr[-4000:]
    assert r.returncode == 0, r.stderr[-4000:]
    assert res and res[0]["tos"] == EF, "the library was not active under valgrind: " + str(res)
    blocks = r.stderr.split("==\n")
    bad = [b for b in blocks if ("Invalid read" in b or "Invalid write" in b or "uninitialised" in b)
           and "sockwrap" in b]
    assert not bad, "\n".join(bad)[:4000]


# --------------------------------------------------------------------------- 9. runtimes

RUNTIME_CLIENTS = {
    "python_asyncio": ("client.py", """
import asyncio, sys
async def main():
    r, w = await asyncio.open_connection(sys.argv[1], int(sys.argv[2]))
    w.write(b"asyncio\\n"); await w.drain()
    await asyncio.wait_for(r.read(2), 5)
    w.close(); await w.wait_closed()
asyncio.run(main())
"""),
    "node": ("client.js", """
const net = require('net');
const s = net.connect({host: process.argv[2], port: +process.argv[3]}, () => s.write('node\\n'));
s.on('data', () => s.end());
s.setTimeout(5000, () => process.exit(3));
"""),
    "java": ("Client.java", """
import java.io.*; import java.net.*;
public class Client { public static void main(String[] a) throws Exception {
  try (Socket s = new Socket(a[0], Integer.parseInt(a[1]))) {
    s.setSoTimeout(5000);
    s.getOutputStream().write("java\\n".getBytes()); s.getOutputStream().flush();
    s.getInputStream().read(); } } }
"""),
    "perl": ("client.pl", """
use IO::Socket::INET;
my $s = IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => $ARGV[1], Proto => 'tcp', Timeout => 5) or die "connect: $!";
print $s "perl\\n"; my $b; $s->recv($b, 2); close($s);
"""),
    "rust": ("client.rs", """
use std::io::{Read, Write};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mut s = std::net::TcpStream::connect((a[1].as_str(), a[2].parse::<u16>().unwrap())).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    s.write_all(b"rust\\n").unwrap();
    let mut b = [0u8; 2]; let _ = s.read(&mut b);
}
"""),
}


def _runtime_cmd(name, src):
    if name == "python_asyncio":
        return [PY, src]
    if name == "node":
        util.require_tool("node")
        return ["node", src]
    if name == "java":
        util.require_tool("java")
        return ["java", src]
    if name == "perl":
        util.require_tool("perl")
        return ["perl", src]
    if name == "rust":
        rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
        util.require(os.path.exists(rustc), "rustc not installed")
        exe = src.with_suffix("")
        r = subprocess.run([rustc, "-O", "-o", str(exe), str(src)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return [exe]
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(RUNTIME_CLIENTS))
def test_runtime_client_gets_dscp(name, tmp_path, port):
    util.require_sockwrap()
    fname, code = RUNTIME_CLIENTS[name]
    src = tmp_path / fname
    src.write_text(code)
    cmd = _runtime_cmd(name, src)
    with tos_server(socket.AF_INET, port, reply=b"ok") as srv:
        r = run_under_sockwrap(["--dscp", "EF"], [*cmd, "127.0.0.1", port], timeout=60)
        res = srv.wait(1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert res and res[0]["data"].startswith(name.split("_")[-1].encode()), res
    assert res[0]["tos"] == EF, f"{name}: peer saw tos {res[0]['tos']}"


def test_go_or_static_binary_is_reported(tmp_path, cbuild):
    """Go programs and static binaries never reach the library: `sockwrap doctor` says so."""
    util.require_sockwrap()
    src = tmp_path / "static.c"
    src.write_text("#include <sys/socket.h>\nint main(void){return socket(2,1,0) < 0;}\n")
    exe = tmp_path / "static"
    r = subprocess.run(["cc", "-static", "-o", str(exe), str(src)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    util.require(r.returncode == 0, f"cc -static failed (no static libc?): {r.stderr}")
    d = run([util.SOCKWRAP_BIN, "doctor", exe])
    assert "STATIC" in d.stdout, d.stdout + d.stderr
    dyn = run([util.SOCKWRAP_BIN, "doctor", cbuild("client")])
    assert "STATIC" not in dyn.stdout, "control: a dynamic binary must not be reported static\n" + dyn.stdout
    if shutil.which("go"):
        gsrc = tmp_path / "main.go"
        gsrc.write_text('package main\nimport "net"\nfunc main(){ net.Dial("tcp", "127.0.0.1:1") }\n')
        gexe = tmp_path / "goprog"
        g = subprocess.run(["go", "build", "-o", str(gexe), str(gsrc)], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=300, env={**os.environ, "GOFLAGS": "-mod=mod"})
        assert g.returncode == 0, g.stderr
        gd = run([util.SOCKWRAP_BIN, "doctor", gexe])
        assert "go" in gd.stdout.lower(), gd.stdout
