"""A two-path MPTCP test bed made of network namespaces (root only).

    client ns                                 server ns
    c1 10.231.1.1/24  fd31:1::1/64  <-veth->  s1 10.231.1.2/24  fd31:1::2/64   path 1
    c2 10.231.2.1/24  fd31:2::1/64  <-veth->  s2 10.231.2.2/24  fd31:2::2/64   path 2

Both namespaces: `ip mptcp limits set subflow 2 add_addr_accepted 2`. The client has an
IPv4 `subflow` endpoint on c2 (a second subflow from 10.231.2.1, bound to c2); the server
announces fd31:2::2 with a `signal` endpoint (IPv6 second path). Optionally each path is
shaped with `tbf` so that one path alone cannot carry the whole transfer.

Namespace names are unique per run (`swt-<pid>-<n>-c` / `-s`); the veth pairs are created
directly inside the namespaces, so nothing is added to the root namespace and deleting the
namespaces deletes everything. Everything the bed learns (MIB counters, link byte counters,
`ss -M`) comes from the kernel, never from sockwrap.
"""
import itertools
import json
import os
import re
import shutil
import subprocess
import time

import util

_seq = itertools.count()

PATH_V4 = {1: ("10.231.1.1", "10.231.1.2"), 2: ("10.231.2.1", "10.231.2.2")}
PATH_V6 = {1: ("fd31:1::1", "fd31:1::2"), 2: ("fd31:2::1", "fd31:2::2")}
CLIENT_DEV = {1: "c1", 2: "c2"}
SERVER_DEV = {1: "s1", 2: "s2"}


def _ip(*args, timeout=10, check=True):
    r = subprocess.run(["ip", *[str(a) for a in args]], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r


def require_netns():
    util.require_root("network namespaces need root")
    util.require_tool("ip", "nstat", "ss", "tc")
    util.require(os.path.exists("/proc/sys/net/mptcp/enabled"), "kernel without MPTCP (/proc/sys/net/mptcp)")


def mib(ns):
    """All MIB counters of a namespace (absolute; the shared nstat history is not touched)."""
    r = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=10)
    if r.returncode == 0 and r.stdout.strip().startswith("{"):
        data = json.loads(r.stdout)
        out = {}
        for v in data.values():  # {"kernel": {...}}
            out.update({k: int(x) for k, x in v.items()})
        return out
    r = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=10)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def mib_delta(before, after, prefix="MPTcpExt"):
    """Counters (with `prefix`) that changed between two `mib()` snapshots."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if k.startswith(prefix) and after.get(k, 0) != before.get(k, 0)}


class MptcpBed:
    """Two namespaces, two veth paths, MPTCP limits and endpoints. Use as a context manager."""

    def __init__(self, rate=None, v6=True):
        n = next(_seq)
        self.client = f"swt-{os.getpid()}-{n}-c"
        self.server = f"swt-{os.getpid()}-{n}-s"
        self.rate = rate
        self.v6 = v6
        self.created = []

    # ---------------------------------------------------------------- setup / teardown

    def __enter__(self):
        try:
            self.setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def setup(self):
        C, S = self.client, self.server
        for ns in (C, S):
            _ip("netns", "add", ns)
            self.created.append(ns)
        for p in (1, 2):
            _ip("link", "add", CLIENT_DEV[p], "netns", C, "type", "veth",
                "peer", "name", SERVER_DEV[p], "netns", S)
        for ns in (C, S):
            self.sysctl(ns, "net.ipv6.conf.all.keep_addr_on_down", 1)
            self.sysctl(ns, "net.ipv6.conf.default.keep_addr_on_down", 1)
            self.sysctl(ns, "net.mptcp.enabled", 1)
            _ip("-n", ns, "link", "set", "lo", "up")
        for p in (1, 2):
            c4, s4 = PATH_V4[p]
            _ip("-n", C, "addr", "add", f"{c4}/24", "dev", CLIENT_DEV[p])
            _ip("-n", S, "addr", "add", f"{s4}/24", "dev", SERVER_DEV[p])
            if self.v6:
                c6, s6 = PATH_V6[p]
                _ip("-n", C, "addr", "add", f"{c6}/64", "dev", CLIENT_DEV[p], "nodad")
                _ip("-n", S, "addr", "add", f"{s6}/64", "dev", SERVER_DEV[p], "nodad")
            _ip("-n", C, "link", "set", CLIENT_DEV[p], "up")
            _ip("-n", S, "link", "set", SERVER_DEV[p], "up")
            if self.rate:
                for ns, dev in ((C, CLIENT_DEV[p]), (S, SERVER_DEV[p])):
                    self.tc(ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
                            "burst", "64kb", "latency", "50ms")
        for ns in (C, S):
            _ip("-n", ns, "mptcp", "limits", "set", "subflow", 2, "add_addr_accepted", 2)
        _ip("-n", C, "mptcp", "endpoint", "add", PATH_V4[2][0], "dev", CLIENT_DEV[2], "subflow")
        if self.v6:
            _ip("-n", S, "mptcp", "endpoint", "add", PATH_V6[2][1], "dev", SERVER_DEV[2], "signal")
        # both paths answer before any test traffic
        for p in (1, 2):
            self.wait_reachable(PATH_V4[p][1])

    def teardown(self):
        for ns in self.created:
            # kill whatever is still running inside (only processes of our own namespaces)
            r = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, timeout=10)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in self.created:
            for _ in range(20):
                r = _ip("netns", "del", ns, check=False)
                if r.returncode == 0 or "No such file" in r.stderr:
                    break
                time.sleep(0.1)
        self.created = []

    # ---------------------------------------------------------------- helpers

    def ns_cmd(self, ns, cmd):
        return ["ip", "netns", "exec", ns, *[str(c) for c in cmd]]

    def sysctl(self, ns, key, value):
        r = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"sysctl {key}={value} in {ns}: {r.stderr.strip()}")

    def tc(self, ns, *args):
        r = subprocess.run(["tc", "-n", ns, *[str(a) for a in args]], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"tc {' '.join(map(str, args))}: {r.stderr.strip()}")

    def wait_reachable(self, addr, port=None, timeout=10):
        """Waits until `addr` (server side) answers from the client namespace (a TCP connect that
        gets either a SYN-ACK or a RST proves the path works)."""
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
                "s.settimeout(0.5)\n"
                "try:\n s.connect((sys.argv[1], int(sys.argv[2])))\n"
                "except ConnectionRefusedError: pass\n")
        # Scaled (util.TIME_SCALE): a python3 start in a TCG guest can take seconds.
        deadline = time.monotonic() + timeout * util.TIME_SCALE
        while time.monotonic() < deadline:
            r = subprocess.run(self.ns_cmd(self.client, [util.PY, "-c", code, addr, port or 9]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10 * util.TIME_SCALE)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{addr} not reachable from {self.client}")

    def wait_listening(self, addr, port, timeout=10):
        """Waits until a server in the server namespace listens on addr:port."""
        def ok():
            r = subprocess.run(["ip", "netns", "exec", self.server, "ss", "-Hltn", f"sport = :{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
            return r.stdout.strip() != ""
        if not util.wait_until(ok, timeout, 0.05):
            raise TimeoutError(f"nothing listening on {addr}:{port} in {self.server}")

    def mib(self, ns):
        return mib(ns)

    def link_bytes(self, ns, dev):
        """rx + tx bytes of a device (from the kernel's link statistics)."""
        r = _ip("-n", ns, "-j", "-s", "link", "show", "dev", dev)
        st = json.loads(r.stdout)[0]["stats64"]
        return st["rx"]["bytes"] + st["tx"]["bytes"]

    def path_bytes(self):
        """{1: bytes, 2: bytes} through the client ends of the two paths."""
        return {p: self.link_bytes(self.client, CLIENT_DEV[p]) for p in (1, 2)}

    def cut(self, path):
        """Takes one path down (the client end; the veth peer loses its carrier too)."""
        _ip("-n", self.client, "link", "set", CLIENT_DEV[path], "down")

    def ss(self, ns, args):
        r = subprocess.run(["ip", "netns", "exec", ns, "ss", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=10)
        return r.stdout

    def mptcp_enabled(self, ns, on):
        self.sysctl(ns, "net.mptcp.enabled", 1 if on else 0)


def make_file(path, size):
    """A file of `size` bytes (sparse-free, incompressible enough for HTTP)."""
    with open(path, "wb") as f:
        chunk = os.urandom(1 << 20)
        left = size
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return path


def have_mptcpize():
    return shutil.which("mptcpize") is not None
