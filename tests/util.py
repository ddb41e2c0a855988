"""Helpers for the sockwrap end-to-end tests.

Everything here is a *witness* that is independent of sockwrap: the peer socket
(IP_RECVTOS / IP_PKTOPTIONS / IPV6_RECVTCLASS / IPV6_2292PKTOPTIONS), the wire
(tcpdump on lo) or the kernel (ss).  sockwrap's own log is never used as proof.
"""
import contextlib
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PEERS = TESTS / "peers"
PY = sys.executable  # the real interpreter (not a pyenv shim): comm is "python3"

SOCKWRAP_BIN = Path(os.environ.get("SOCKWRAP_BIN", REPO / "target" / "release" / "sockwrap"))
SOCKWRAP_LIB = Path(os.environ.get("SOCKWRAP_LIB", SOCKWRAP_BIN.parent / "libsockwrap.so"))
NO_SKIP = os.environ.get("SOCKWRAP_NO_SKIP") == "1"
# Set by scripts/vm-guest.sh inside the kernel-matrix VMs.
IN_VM = os.environ.get("SOCKWRAP_VM") == "1"

EF = 0xB8  # DSCP 46 << 2
DEFAULT_TIMEOUT = 20
# The helpers' time bounds below are set for this project's machines. Where every program
# runs several times slower (a VM under TCG emulation: scripts/vm-test.sh sets 4), each
# bound a helper waits on is multiplied by SOCKWRAP_TIME_SCALE, so a slow start is not
# taken for a failure. Assertions about speed (a median under 10 ms) are not scaled.
TIME_SCALE = float(os.environ.get("SOCKWRAP_TIME_SCALE") or 1)

IS_ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------- prerequisites

def require(cond, reason):
    """Skip the test when a prerequisite is missing -- or fail loudly under SOCKWRAP_NO_SKIP=1."""
    if cond:
        return
    if NO_SKIP:
        pytest.fail(f"prerequisite missing (SOCKWRAP_NO_SKIP=1 forbids skipping): {reason}", pytrace=False)
    pytest.skip(reason)


def require_sockwrap():
    require(SOCKWRAP_BIN.is_file() and os.access(SOCKWRAP_BIN, os.X_OK),
            f"sockwrap launcher not built: {SOCKWRAP_BIN} (cargo build --release)")
    require(SOCKWRAP_LIB.is_file(), f"preload library not built: {SOCKWRAP_LIB}")


def require_root(why="needs root"):
    require(IS_ROOT, why)


def require_tool(*names):
    for name in names:
        require(shutil.which(name) is not None or os.path.exists(name), f"tool not installed: {name}")


def cgroup2_mount():
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup/unified on these machines,
    /sys/fs/cgroup on most hosts), from /proc/mounts; None without one."""
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    return None


def require_kernel_backend(why="sockwrap run --kernel attaches BPF programs: root only"):
    """sockwrap, root and a cgroup v2 hierarchy: what every kernel-backend test needs."""
    require_sockwrap()
    require_root(why)
    require(cgroup2_mount() is not None, "no cgroup v2 hierarchy mounted")


def cgroups_named(prefix):
    """Every directory anywhere in the cgroup v2 tree whose name starts with `prefix`
    (sockwrap's: `sockwrap-` for run --kernel, `sockwrap-follow-` for attach --follow);
    [] without a cgroup v2 hierarchy."""
    root = cgroup2_mount()
    if root is None:
        return []
    return [Path(d) / n for d, dirs, _ in os.walk(root) for n in dirs if n.startswith(prefix)]


def cgroup_of(pid):
    """The process's (or `PID/task/TID`'s) cgroup v2 path, as /proc/PID/cgroup says."""
    with open(f"/proc/{pid}/cgroup") as f:
        return [l.strip()[3:] for l in f if l.startswith("0::")][0]


def no_cgroups_left(prefix, none_before=True, cleanup=None):
    """The body of an autouse fixture (`yield from util.no_cgroups_left(...)`): no cgroup
    named `prefix`* is left after the test (waits up to 5 s for sockwrap to remove its own).
    With `none_before`, one an earlier run left fails the test at its start; otherwise those
    are allowed and only new ones count. `cleanup()` runs before the failure when some are
    left (`sockwrap doctor`), so that the next test starts clean. Root only (else a no-op)."""
    if not IS_ROOT or cgroup2_mount() is None:
        yield
        return
    before = set(cgroups_named(prefix))
    if none_before:
        assert not before, f"a cgroup {prefix}* was left by an earlier run: {sorted(map(str, before))}"
    yield
    if not wait_until(lambda: set(cgroups_named(prefix)) <= before, timeout=5):
        left = sorted(map(str, set(cgroups_named(prefix)) - before))
        if cleanup:
            cleanup()
        pytest.fail(f"cgroups {prefix}* left behind: {left}")


def build_c(src, exe, *flags):
    """The one way the tests build their C: `src` (a name in tests/c, without .c, or a
    path) compiled into `exe` with -O1 -Wall -Werror and `flags` (-static, -shared -fPIC,
    libraries...). Fails the test with the compiler's message."""
    require_tool("cc")
    src = Path(src) if "/" in str(src) else TESTS / "c" / f"{src}.c"
    cmd = ["cc", "-O1", "-Wall", "-Werror", "-o", str(exe), str(src), *flags]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stderr}"
    return Path(exe)


def build_go(name, out_dir):
    """tests/go/NAME.go built into out_dir/NAME: CGO off (a static binary), offline (no
    module download, caches inside out_dir)."""
    require_tool("go")
    d = Path(out_dir)
    env = dict(os.environ, CGO_ENABLED="0", GO111MODULE="off", GOFLAGS="-mod=mod",
               GOCACHE=str(d / "gocache"), GOPATH=str(d / "gopath"), GOPROXY="off")
    exe = d / name
    r = subprocess.run(["go", "build", "-o", str(exe), str(TESTS / "go" / f"{name}.go")], cwd=d,
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def require_ipv6():
    ok = socket.has_ipv6
    if ok:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
        except OSError:
            ok = False
    require(ok, "IPv6 loopback (::1) not available")


# --------------------------------------------------------------------------- ports

_used_ports = set()


def free_port():
    """A random high port, distinct within this session, free for TCP+UDP on 127.0.0.1 and ::1.

    Chosen below the ephemeral range (32768+) so client sockets never collide with it."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 32000)
        if port in _used_ports:
            continue
        ok = True
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                try:
                    with socket.socket(fam, typ) as s:
                        s.bind((host, port))
                except OSError as e:
                    if fam == socket.AF_INET6 and e.errno == 99:  # no ::1: ignore
                        continue
                    ok = False
        if ok:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")


# --------------------------------------------------------------------------- processes

def sockwrap_cmd(args, cmd):
    return [str(SOCKWRAP_BIN), "run", *[str(a) for a in args], "--", *[str(c) for c in cmd]]


def _env(env):
    e = dict(os.environ)
    # never inherit a policy from the developer's shell
    for k in list(e):
        if k.startswith("SOCKWRAP_") and k not in ("SOCKWRAP_BIN", "SOCKWRAP_LIB", "SOCKWRAP_NO_SKIP"):
            del e[k]
    e.pop("LD_PRELOAD", None)
    if env:
        e.update({k: str(v) for k, v in env.items()})
    return e


def run(cmd, env=None, timeout=DEFAULT_TIMEOUT, **kw):
    """Run a command to completion (bounded), capturing text output."""
    return subprocess.run([str(c) for c in cmd], env=_env(env), timeout=timeout * TIME_SCALE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_under_sockwrap(args, cmd, env=None, timeout=DEFAULT_TIMEOUT, **kw):
    """`sockwrap run ARGS -- CMD`, bounded. Returns CompletedProcess (text)."""
    require_sockwrap()
    return run(sockwrap_cmd(args, cmd), env=env, timeout=timeout, **kw)


def preload_env(**vars):
    """Environment for running a program with the library preloaded directly (no launcher)."""
    require_sockwrap()
    env = {"LD_PRELOAD": str(SOCKWRAP_LIB)}
    env.update({k: str(v) for k, v in vars.items()})
    return env


def run_preloaded(cmd, timeout=DEFAULT_TIMEOUT, env=None, **vars):
    e = preload_env(**vars)
    if env:
        e.update(env)
    return run(cmd, env=e, timeout=timeout)


def peer(name, *args):
    """Command line for one of the stdlib peer programs in tests/peers/."""
    return [PY, str(PEERS / name), *[str(a) for a in args]]


class Procs:
    """Background processes owned by one test; all killed at teardown."""

    def __init__(self):
        self.procs = []

    def spawn(self, cmd, env=None, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen([str(c) for c in cmd], env=_env(env), text=True,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def spawn_under_sockwrap(self, args, cmd, env=None, **kw):
        require_sockwrap()
        return self.spawn(sockwrap_cmd(args, cmd), env=env, **kw)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    p.kill()
            try:
                p.communicate(timeout=5)
            except Exception:
                pass


def wait_output_line(proc, timeout=10):
    """Read one stdout line of a spawned process, bounded in time.

    A reader thread, not select(): select on the pipe cannot see a line that an earlier
    readline already pulled into the file object's buffer, and a readline after select
    still blocks on a partial line."""
    got = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout * TIME_SCALE)
    if not got:
        raise TimeoutError(f"no output line from {proc.args} within {timeout}s")
    return got[0]


def wait_until(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(interval)


def wait_listening(port, family=socket.AF_INET, host=None, timeout=10):
    host = host or ("127.0.0.1" if family == socket.AF_INET else "::1")

    def ok():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    if not wait_until(ok, timeout, 0.05):
        raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


# --------------------------------------------------------------------------- ancillary data

IP_PKTOPTIONS = 9
IPV6_2292PKTOPTIONS = 6
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)


def parse_cmsgs(buf):
    """Parse a raw cmsghdr buffer (64-bit Linux: size_t len, int level, int type, data aligned 8)."""
    out = []
    off = 0
    while off + 16 <= len(buf):
        ln, level, typ = struct.unpack_from("=Qii", buf, off)
        if ln < 16:
            break
        out.append((level, typ, buf[off + 16: off + ln]))
        off += (ln + 7) & ~7
    return out


def tos_from_cmsgs(cmsgs):
    for level, typ, data in cmsgs:
        if level == socket.IPPROTO_IP and typ == socket.IP_TOS and data:
            return data[0]
        if level == socket.IPPROTO_IPV6 and typ == IPV6_TCLASS and len(data) >= 4:
            return struct.unpack("=i", data[:4])[0]
    return None


# --------------------------------------------------------------------------- TOS-reporting peer

class TosServer:
    """A peer that reports the TOS / traffic class it received.

    TCP/IPv4: IP_RECVTOS + getsockopt(IP_PKTOPTIONS) after the first recv.  On this
      kernel IPv4 reports the TOS of the client's handshake ACK (rcv_tos is taken when
      the connection is established), i.e. what the socket had before connect().
    TCP/IPv6: IPV6_RECVTCLASS + getsockopt(IPV6_2292PKTOPTIONS): class of the last data
      segment.
    UDP: recvmsg ancillary data, per datagram.
    Each connection/datagram becomes a dict {peer, tos, data} in .results.
    """

    def __init__(self, family, port, transport="tcp", host=None, reply=None):
        self.family = family
        self.port = port
        self.transport = transport
        self.host = host or ("127.0.0.1" if family == socket.AF_INET else "::1")
        self.reply = reply
        self.results = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = []
        typ = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        self.sock = socket.socket(family, typ)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._recvtos(self.sock)
        self.sock.bind((self.host, port))
        self.sock.settimeout(0.2)
        if transport == "tcp":
            self.sock.listen(64)

    def _recvtos(self, s):
        if self.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)

    def start(self):
        t = threading.Thread(target=self._serve_tcp if self.transport == "tcp" else self._serve_udp,
                             daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _serve_udp(self):
        while not self.stop_ev.is_set():
            try:
                data, anc, _flags, addr = self.sock.recvmsg(65535, 1024)
            except socket.timeout:
                continue
            except OSError:
                return
            tos = None
            for level, typ, d in anc:
                if level == socket.IPPROTO_IP and typ == socket.IP_TOS and d:
                    tos = d[0]
                elif level == socket.IPPROTO_IPV6 and typ == IPV6_TCLASS and len(d) >= 4:
                    tos = struct.unpack("=i", d[:4])[0]
            with self.lock:
                self.results.append({"peer": addr, "tos": tos, "data": data})

    def _serve_tcp(self):
        while not self.stop_ev.is_set():
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._handle, args=(conn, addr), daemon=True)
            t.start()
            self.threads.append(t)

    def _pktoptions(self, conn):
        try:
            if self.family == socket.AF_INET6 and not _is_v4mapped(conn.getpeername()[0]):
                return tos_from_cmsgs(parse_cmsgs(conn.getsockopt(socket.IPPROTO_IPV6, IPV6_2292PKTOPTIONS, 512)))
            return tos_from_cmsgs(parse_cmsgs(conn.getsockopt(socket.IPPROTO_IP, IP_PKTOPTIONS, 512)))
        except OSError:
            return None

    def _handle(self, conn, addr):
        rec = {"peer": addr, "tos": None, "data": b"", "tos_per_recv": []}
        conn.settimeout(0.2)
        deadline = time.monotonic() + 30 * TIME_SCALE  # a held connection outlives a slow VM step
        try:
            self._recvtos(conn)
        except OSError:
            pass
        with conn:
            first = True
            while not self.stop_ev.is_set() and time.monotonic() < deadline:
                try:
                    d = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not d:
                    break
                tos = self._pktoptions(conn)
                rec["tos_per_recv"].append(tos)
                rec["data"] += d
                if first:
                    rec["tos"] = tos
                    with self.lock:
                        self.results.append(rec)
                    first = False
                    if self.reply is not None:
                        try:
                            conn.sendall(self.reply)
                        except OSError:
                            break
            if first:  # connection without data
                with self.lock:
                    self.results.append(rec)

    def wait(self, n=1, timeout=10):
        wait_until(lambda: len(self.results) >= n, timeout)
        with self.lock:
            return list(self.results)

    def close(self):
        self.stop_ev.set()
        try:
            self.sock.close()
        except OSError:
            pass
        for t in self.threads:
            t.join(timeout=2)


def _is_v4mapped(ip):
    return ip.startswith("::ffff:")


@contextlib.contextmanager
def tos_server(family, port, transport="tcp", host=None, reply=None):
    srv = TosServer(family, port, transport, host, reply).start()
    try:
        yield srv
    finally:
        srv.close()


# --------------------------------------------------------------------------- tcpdump

Packet = namedtuple("Packet", "family src sport dst dport tos ttl flags length raw")

_TS = re.compile(r"^\d\d:\d\d:\d\d\.\d+ ")
_ADDR = re.compile(r"(\S+)\.(\d+) > (\S+)\.(\d+): (?:Flags \[([^\]]*)\])?")


def parse_tcpdump(text):
    pkts = []
    cur = []
    blocks = []
    for line in text.splitlines():
        if _TS.match(line):
            if cur:
                blocks.append(" ".join(cur))
            cur = [line.strip()]
        elif cur and line[:1].isspace():
            cur.append(line.strip())
    if cur:
        blocks.append(" ".join(cur))
    for b in blocks:
        if " IP6 " in b[:30]:
            fam = 6
            m = re.search(r"class (0x[0-9a-f]+)", b)
            tos = int(m.group(1), 16) if m else 0
            m = re.search(r"hlim (\d+)", b)
        elif " IP " in b[:30]:
            fam = 4
            m = re.search(r"tos (0x[0-9a-f]+)", b)
            tos = int(m.group(1), 16) if m else 0
            m = re.search(r"ttl (\d+)", b)
        else:
            continue
        ttl = int(m.group(1)) if m else None
        a = _ADDR.search(b)
        if not a:
            continue
        m = re.search(r"length (\d+)\s*$", b) or re.search(r", length (\d+)", b)
        pkts.append(Packet(fam, a.group(1), int(a.group(2)), a.group(3), int(a.group(4)), tos, ttl,
                           a.group(5), int(m.group(1)) if m else None, b))
    return pkts


class Capture:
    """tcpdump -i lo -nn -v on a BPF filter; .packets after the with-block."""

    def __init__(self, bpf, iface="lo", netns=None):
        self.bpf = bpf
        self.iface = iface
        self.netns = netns
        self.packets = []
        self.text = ""

    def __enter__(self):
        require_tool("tcpdump")
        require_root("tcpdump needs root (CAP_NET_RAW)")
        cmd = ["tcpdump", "-i", self.iface, "-nn", "-v", "-l", "-s", "200", self.bpf]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        self.out = open(_tmpfile("tcpdump"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        err = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.1)
            if r:
                line = self.proc.stderr.readline()
                err += line
                if "listening on" in line:
                    break
            if self.proc.poll() is not None:
                raise RuntimeError(f"tcpdump died: {err}{self.proc.stderr.read()}")
        else:
            self.proc.kill()
            raise RuntimeError(f"tcpdump not ready after 10s: {err}")
        time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)  # let the last packets reach the capture socket
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc.stderr.close()
        self.out.seek(0)
        self.text = self.out.read()
        self.out.close()
        os.unlink(self.out.name)
        self.packets = parse_tcpdump(self.text)
        return False

    def from_port(self, port=None, dport=None):
        """Packets whose source port is `port` (or destination port is `dport`)."""
        if port is not None:
            return [p for p in self.packets if p.sport == port]
        return [p for p in self.packets if p.dport == dport]

    def to_port(self, port):
        return [p for p in self.packets if p.dport == port]


def _tmpfile(prefix):
    import tempfile
    fd, path = tempfile.mkstemp(prefix=f"sockwrap-{prefix}-", suffix=".txt")
    os.close(fd)
    return path


# --------------------------------------------------------------------------- ss

def ss(filter_expr, opts="-tnieo", state="established", extra=()):
    """Entries (one string per socket, continuation lines joined) of `ss OPTS -H state STATE FILTER`."""
    cmd = ["ss", *opts.split(), *extra, "-H"]
    if state:
        cmd += ["state", state]
    cmd += [filter_expr]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    entries = []
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        if line[:1].isspace() and entries:
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    return entries


def ss_client(port, opts="-tnieo", extra=(), timeout=5):
    """ss entries of client sockets connected to :port (waits until at least one shows up)."""
    return wait_until(lambda: ss(f"( dport = :{port} )", opts, extra=extra), timeout) or []


def ss_server(port, opts="-tnieo", extra=(), timeout=5):
    """ss entries of accepted sockets on local :port."""
    return wait_until(lambda: ss(f"( sport = :{port} )", opts, extra=extra), timeout) or []


def curl_entry(procs, port, curl_args, sockwrap_args=None):
    """Starts curl against http://127.0.0.1:port/ (under `sockwrap run` with
    `sockwrap_args`, when given) and returns the one `ss` entry of its connection."""
    cmd = ["curl", "-s", *curl_args, "-m", "4", f"http://127.0.0.1:{port}/"]
    if sockwrap_args is not None:
        procs.spawn_under_sockwrap(sockwrap_args, cmd)
    else:
        procs.spawn(cmd)
    entries = ss_client(port, "-tnieo")
    assert len(entries) == 1, entries
    return entries[0]


def ss_field(entry, name):
    """Value of `name:VALUE` in an ss entry, or None."""
    m = re.search(r"(?:^|\s)" + re.escape(name) + r":(\S+)", entry)
    return m.group(1) if m else None


def keepalive_timer(entry):
    m = re.search(r"timer:\(keepalive,([^,]+),", entry)
    return m.group(1) if m else None


def skmem(entry):
    m = re.search(r"skmem:\(([^)]*)\)", entry)
    if not m:
        return {}
    return {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", m.group(1))}


def seconds(timer):
    """'29sec' / '1min59sec' / '119min' / '500ms' -> seconds (float)."""
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(min|sec|ms)", timer):
        total += float(num) * {"min": 60, "sec": 1, "ms": 0.001}[unit]
    return total


# --------------------------------------------------------------------------- plain peers

class Served:
    """A socket of the test's own (`self.sock`) served by `serve` on a thread of its own
    until close() or the end of the with block."""

    def start_serving(self):
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def close(self):
        self.stop.set()
        self.t.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



def read_count(c, want=None):
    """Reads from `c` until `want` bytes came (None: to EOF); returns how many did."""
    got = 0
    while want is None or got < want:
        d = c.recv(65536 if want is None else min(65536, want - got))
        if not d:
            break
        got += len(d)
    return got


class CountingPeer:
    """A plain TCP peer in this process: for one connection it reads `want` bytes (or to
    EOF when None), sends `reply` bytes, then reads to EOF (so that everything it sent is
    acknowledged before the other side's close arrives) and closes. Counts every byte it
    read and wrote (`counts`) and keeps the client's address as it saw it (`clients`): the
    witness."""

    def __init__(self, port, want, reply):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(8)
        self.ls.settimeout(20 * TIME_SCALE)
        self.want, self.reply = want, reply
        self.counts, self.clients = [], []
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        try:
            c, addr = self.ls.accept()
        except OSError:
            return
        self.clients.append("%s:%d" % addr)
        c.settimeout(20 * TIME_SCALE)
        with c:
            got = read_count(c, self.want)
            c.sendall(os.urandom(self.reply))
            got += read_count(c)
        self.counts.append((got, self.reply))

    def close(self):
        self.t.join(30 * TIME_SCALE)
        self.ls.close()

class AcceptServer(Served):
    """Loopback TCP server that accepts and closes (draining any data) -- a plain peer.
    Counts the connections it accepted; subclasses handle them in on_accept(c)."""

    def __init__(self, port, host="127.0.0.1", backlog=4096):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.ls = self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((host, port))
        self.ls.listen(backlog)
        self.accepted = 0
        self.start_serving()

    def serve(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                continue
            self.accepted += 1
            self.on_accept(c)

    def on_accept(self, c):
        c.close()


class UdpEcho(Served):
    """Answers each datagram with `echo-` and the datagram, and keeps what it received."""

    def __init__(self, port, host="127.0.0.1"):
        self.s = self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                           socket.SOCK_DGRAM)
        self.s.bind((host, port))
        self.got = []
        self.start_serving()

    def serve(self):
        while not self.stop.is_set():
            try:
                d, peer = self.s.recvfrom(100)
            except OSError:
                continue
            self.got.append(d)
            self.s.sendto(b"echo-" + d, peer)


class Sink(AcceptServer):
    """A plain peer that reads everything each connection sends until the client closes it,
    for at most 60 s per connection (the witness is elsewhere: tcpdump, ss)."""

    def on_accept(self, c):
        threading.Thread(target=self.drain, args=(c,), daemon=True).start()

    def drain(self, c):
        c.settimeout(1)
        deadline = time.monotonic() + 60
        with c:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    if not c.recv(65536):
                        return
                except socket.timeout:
                    continue
                except OSError:
                    return


def client_packets(cap, port=None, lport=None):
    """The client's packets in the capture `cap`: those sent to the server's `port`, or
    those sent from the client's own port `lport`."""
    return cap.from_port(lport) if lport is not None else cap.to_port(port)


class NagleServer(AcceptServer):
    """Nagle probe peer: replies one byte only after two bytes have arrived (so its ACK is
    delayed)."""

    def __init__(self, port, host="127.0.0.1"):
        super().__init__(port, host, backlog=8)

    def on_accept(self, c):
        threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        c.settimeout(10)
        buf = b""
        with c:
            for _ in range(1000):
                try:
                    d = c.recv(10)
                except OSError:
                    return
                if not d:
                    return
                buf += d
                while len(buf) >= 2:
                    buf = buf[2:]
                    c.send(b"x")


# The helpers every script that a test runs inside its own namespace needs (the scripts
# are separate processes, so they cannot import this module): a bounded command that
# returns [status, stdout, stderr], the same that must succeed, and the files pinned below
# a BPF filesystem directory (the verifier's .debug companions left out).
INNER_PRELUDE = r"""
import errno, json, os, socket, subprocess, sys, time
from pathlib import Path


def sh(*a, timeout=60, **kw):
    r = subprocess.run([str(x) for x in a], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, **kw)
    return [r.returncode, r.stdout, r.stderr]


def must(*a, **kw):
    r = sh(*a, **kw)
    assert r[0] == 0, (a, r)
    return r


def pins(root="/sys/fs/bpf"):
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(".debug"))
"""
