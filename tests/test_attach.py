"""`sockwrap attach PID`: options given to a program that is already running, through
pidfd_getfd, with nothing of sockwrap inside the program (issue 13).

Witnesses outside sockwrap: the wire (tcpdump on lo: `tos 0xb8` per packet), the kernel
(`ss -tnio --tos`: the keepalive timer, tos, fwmark, congestion algorithm, pacing rate,
class_id, skmem), the target's own getsockopt on its socket, and strace of attach (the
system calls it made). Each witness is also read on the same program before attach (or
with attach as a user who may not), so each test can fail."""
import json
import os
import re
import select
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

import util
from util import EF, Capture, run, wait_output_line
from test_ssh import sshd  # noqa: F401  (the fixture: a real sshd on loopback)

DROP = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

# A python3 client that sends one byte every 100 ms (for at most 60 s).
CLIENT = textwrap.dedent("""\
    import socket, sys, time
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    if len(sys.argv) > 3:  # an MPTCP socket (IPPROTO_MPTCP)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
        s.connect((host, int(sys.argv[1])))
    else:
        s = socket.create_connection((host, int(sys.argv[1])))
    print(s.getsockname()[1], flush=True)
    for _ in range(600):
        s.send(b"x")
        time.sleep(0.1)
    """)

# The start of SERVER and PROBED: tick(s, byte) sends `byte` every 100 ms on s, for at
# most 60 s, and stops when the connection goes.
TICK = textwrap.dedent("""\
    import socket, sys, threading, time
    def tick(s, byte):
        for _ in range(600):
            try:
                s.send(byte)
            except OSError:
                return
            time.sleep(0.1)
    """)

# A server on ports A and B that writes one byte every 100 ms on every accepted
# connection, and is also a client of its own port A (so role matters, not only ports).
SERVER = TICK + textwrap.dedent("""\
    def serve(l):
        while True:
            c, _ = l.accept()
            threading.Thread(target=tick, args=(c, b"."), daemon=True).start()
    for p in sys.argv[1:3]:
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("127.0.0.1", int(p)))
        l.listen(64)
        threading.Thread(target=serve, args=(l,), daemon=True).start()
    own = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    threading.Thread(target=tick, args=(own, b"."), daemon=True).start()
    print(own.getsockname()[1], flush=True)
    time.sleep(60)
    """)

# Holds 400 UDP sockets; on a line on stdin closes them from the highest fd down.
CHURN = textwrap.dedent("""\
    import socket, sys, time
    socks = []
    for _ in range(400):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print("ready", flush=True)
    sys.stdin.readline()
    for s in reversed(socks):
        s.close()
        time.sleep(0.0005)
    print("closed", flush=True)
    time.sleep(30)
    """)


def attach(*args, user=None, timeout=30):
    util.require_sockwrap()
    cmd = [str(util.SOCKWRAP_BIN), "attach", *map(str, args)]
    if user:
        util.require_tool("setpriv")
        cmd = DROP + cmd
    return run(cmd, timeout=timeout)


def start_client(procs, tmp_path, port, user=None, host="127.0.0.1", mptcp=False):
    cmd = [util.PY, "-c", CLIENT, port, host] + (["mptcp"] if mptcp else [])
    p = procs.spawn(DROP + cmd if user else cmd)
    line = wait_output_line(p).strip()
    assert line.isdigit(), f"client did not start: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
    return p, int(line)


# A python3 client that sends one byte every 100 ms (for at most 60 s) and, for each line
# on stdin, prints what its own getsockopt says of its socket (one JSON line): the witness
# for options that neither the wire nor ss shows. `pace N` first sets its own
# SO_MAX_PACING_RATE to N, as a u64.
PROBED = TICK + textwrap.dedent("""\
    import json, struct
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    threading.Thread(target=tick, args=(s, b"x"), daemon=True).start()
    print(s.getsockname()[1], flush=True)
    T, S = socket.IPPROTO_TCP, socket.SOL_SOCKET
    for line in sys.stdin:
        if line.startswith("pace "):
            s.setsockopt(S, 47, struct.pack("=Q", int(line.split()[1])))
        print(json.dumps({
            "congestion": s.getsockopt(T, socket.TCP_CONGESTION, 16).split(b"\\0")[0].decode(),
            "max_pacing_rate": struct.unpack("=Q", s.getsockopt(S, 47, 8))[0],  # SO_MAX_PACING_RATE, u64
            "notsent_lowat": s.getsockopt(T, 25),  # TCP_NOTSENT_LOWAT
            "priority": s.getsockopt(S, socket.SO_PRIORITY),
            "nodelay": s.getsockopt(T, socket.TCP_NODELAY),
            "sndbuf": s.getsockopt(S, socket.SO_SNDBUF),
            "rcvbuf": s.getsockopt(S, socket.SO_RCVBUF),
            "tos": s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
            "maxseg": s.getsockopt(T, socket.TCP_MAXSEG),
            "device": s.getsockopt(S, socket.SO_BINDTODEVICE, 16).split(b"\\0")[0].decode(),
            "protocol": s.getsockopt(S, socket.SO_PROTOCOL),
            "reuseaddr": s.getsockopt(S, socket.SO_REUSEADDR),
            "reuseport": s.getsockopt(S, socket.SO_REUSEPORT),
            "local": "%s:%d" % s.getsockname(),
        }), flush=True)
    """)


class Sink(util.AcceptServer):
    """A server (in this process) that reads everything each connection sends, for at most
    60 s per connection."""

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


def sink(port, host="127.0.0.1"):
    return Sink(port, host)


def client_packets(port, lport, secs):
    """The client's packets (source port lport) during `secs` seconds."""
    with Capture(f"tcp port {port}") as cap:
        time.sleep(secs)
    return cap.from_port(lport), cap


def ss_entry(lport):
    e = util.ss(f"( sport = :{lport} )", "-tnieo --tos")
    assert len(e) == 1, e
    return e[0]


def test_running_client_gets_ef_on_the_wire_and_keeps_it(procs, tmp_path, port):
    util.require_root("tcpdump and attach to a process")
    with sink(port):
        p, lport = start_client(procs, tmp_path, port)
        before, cap = client_packets(port, lport, 1.0)
        assert len(before) >= 5 and {x.tos for x in before} == {0}, cap.text
        assert util.keepalive_timer(ss_entry(lport)) is None

        with Capture(f"tcp port {port}") as cap:
            r = attach(p.pid, "--dscp", "EF", "--keepalive", "30,10,3", "--dry-run")
            time.sleep(1.0)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"dscp \(IP_TOS\)\s*\|\s*CS0\(0x00\)\s*\|\s*would be EF\(0xb8\)", r.stdout), r.stdout
        dry = cap.from_port(lport)
        assert len(dry) >= 5 and {x.tos for x in dry} == {0}, "--dry-run changed the wire:\n" + cap.text
        assert util.keepalive_timer(ss_entry(lport)) is None, "--dry-run turned keepalive on"

        r = attach(p.pid, "--dscp", "EF", "--keepalive", "30,10,3", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        (sock,) = [s for s in doc["sockets"] if s.get("local") == f"127.0.0.1:{lport}"]
        assert sock["role"] == "client" and sock["state"] == "ESTAB"
        tos = [o for o in sock["options"] if o["kernel"] == "IP_TOS"][0]
        assert (tos["before"], tos["after"], tos["result"]) == (0, EF, "set")
        after, cap = client_packets(port, lport, 2.0)
        assert len(after) >= 10 and {x.tos for x in after} == {EF}, cap.text
        timer = util.wait_until(lambda: util.keepalive_timer(ss_entry(lport)), 3)
        assert timer and util.seconds(timer) <= 30, ss_entry(lport)
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8"
        # attach changed only what was asked: the priority that IP_TOS rewrites is kept.
        assert util.ss_field(ss_entry(lport), "class_id") == "0", ss_entry(lport)
        # and it stays: a second look, later
        later, cap = client_packets(port, lport, 1.0)
        assert later and {x.tos for x in later} == {EF}, cap.text
        assert p.poll() is None, "the program was disturbed"


def test_list_shows_the_sockets_and_changes_nothing(procs, tmp_path, port):
    util.require_root("attach to a process")
    with sink(port):
        p, lport = start_client(procs, tmp_path, port)
        r = attach(p.pid, "--list", "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        (sock,) = [s for s in doc["sockets"] if s.get("local") == f"127.0.0.1:{lport}"]
        assert sock["remote"] == f"127.0.0.1:{port}" and sock["transport"] == "tcp"
        opts = {o["kernel"]: o["after"] for o in sock["options"]}
        assert opts["IP_TOS"] == 0 and opts["SO_KEEPALIVE"] is False and "TCP_CONGESTION" in opts
        assert all(o["result"] == "current" for o in sock["options"])
        r = attach(p.pid, "--list")
        assert r.returncode == 0 and f"127.0.0.1:{lport} -> 127.0.0.1:{port}" in r.stdout, r.stdout
        e = ss_entry(lport)
        assert util.ss_field(e, "tos") in (None, "0", "0x0") and util.keepalive_timer(e) is None, e


def start_probed(procs, port):
    p = procs.spawn([util.PY, "-c", PROBED, port], stdin=subprocess.PIPE)
    line = wait_output_line(p).strip()
    assert line.isdigit(), f"client did not start: {line!r}"
    return p, int(line)


def own_view(p, line="?"):
    """The target's own getsockopt of its socket, asked on its stdin."""
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return json.loads(wait_output_line(p))


def other_congestion():
    """(the default algorithm, a loaded one that is not the default); reno is always built
    in. The sysctls are only read."""
    base = Path("/proc/sys/net/ipv4")
    default = (base / "tcp_congestion_control").read_text().strip()
    loaded = (base / "tcp_available_congestion_control").read_text().split()
    return default, next(a for a in ("reno", "cubic", *loaded) if a in loaded and a != default)


def kernel_view(lport):
    """What ss shows of the options: the congestion algorithm's name, the max pacing rate
    (bits/s after the `/` of pacing_rate; None when unlimited), class_id (the priority
    without a net_cls class), skmem tb and rb (the send and receive buffers)."""
    e = util.ss(f"( sport = :{lport} )", "-tnieom --tos")
    assert len(e) == 1, e
    algos = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    (cong,) = [w for w in e[0].split() if w in algos]
    m = re.search(r"pacing_rate \S+?bps/(\d+)bps", e[0])
    mem = util.skmem(e[0])
    return {"congestion": cong, "max_pacing_bits": int(m.group(1)) if m else None,
            "class_id": int(util.ss_field(e[0], "class_id"), 0), "tb": mem["tb"], "rb": mem["rb"]}


# Each option attach sets on an open socket: its flags, then what the target's getsockopt
# shows after (its key in PROBED), and what ss shows after (None: ss does not show it).
# Values differ from this kernel's defaults (checked before attach). None for congestion:
# other_congestion()'s.
SETTABLE = {
    "congestion": (["--congestion", None], "TCP_CONGESTION", {"congestion": None}, {"congestion": None}),
    "max-pacing-rate": (["--max-pacing-rate", "1M"], "SO_MAX_PACING_RATE", {"max_pacing_rate": 1 << 20},
                        {"max_pacing_bits": 8 << 20}),
    "notsent-lowat": (["--notsent-lowat", "16K"], "TCP_NOTSENT_LOWAT", {"notsent_lowat": 16384}, {}),
    "priority": (["--priority", "5"], "SO_PRIORITY", {"priority": 5}, {"class_id": 5}),
    "nodelay": (["--nodelay"], "TCP_NODELAY", {"nodelay": 1}, {}),
    # the kernel doubles what is set (and locks it: no more autotuning)
    "sndbuf": (["--sndbuf", "96K"], "SO_SNDBUF", {"sndbuf": 2 * 96 * 1024}, {"tb": 2 * 96 * 1024}),
    "rcvbuf": (["--rcvbuf", "40K"], "SO_RCVBUF", {"rcvbuf": 2 * 40 * 1024}, {"rb": 2 * 40 * 1024}),
}


def unasked(view, asked):
    """The target's view without the keys asked for, nor TCP_MAXSEG: the MSS in use, which
    the kernel moves by itself (32768, then 32741, with the peer's window)."""
    return {k: v for k, v in view.items() if k not in asked and k != "maxseg"}


def as_attach_reports(key, v):
    """A getsockopt value of PROBED as attach's JSON writes it: a bool for nodelay, the rate
    as a u32 reads it (the kernel clamps a larger one to u32::MAX)."""
    if key == "nodelay":
        return bool(v)
    if key == "max_pacing_rate":
        return min(v, 2**32 - 1)
    return v


@pytest.mark.parametrize("option", [*SETTABLE, "all"])
def test_running_client_gets_each_option_attach_sets_and_nothing_else(procs, port, option):
    """Congestion, max pacing rate, notsent-lowat, priority, nodelay, send and receive
    buffers on a running client: the target's own getsockopt and ss show the default before
    attach and the value after; every other option the target reads is unchanged; attach's
    before/after agree with the target's. "all": every flag in one attach (its table)."""
    util.require_root("attach to a process")
    default_cc, cc = other_congestion()
    names = list(SETTABLE) if option == "all" else [option]
    args, own_want, ss_want, kernel = [], {}, {}, {}
    for n in names:
        flags, kernel[n], own, seen = SETTABLE[n]
        args += [cc if f is None else f for f in flags]
        own_want.update({k: cc if v is None else v for k, v in own.items()})
        ss_want.update({k: cc if v is None else v for k, v in seen.items()})
    with sink(port):
        p, lport = start_probed(procs, port)
        before, ss_before = own_view(p), kernel_view(lport)
        assert ss_before["congestion"] == before["congestion"] == default_cc, (before, ss_before)
        assert ss_before["max_pacing_bits"] is None and before["max_pacing_rate"] == 2**64 - 1
        for k, v in own_want.items():
            assert before[k] != v, f"{k} is already {v} before attach: the test could not fail"
        for k, v in ss_want.items():
            assert ss_before[k] != v, f"ss shows {k} {v} before attach: the test could not fail"

        r = attach(p.pid, *args, *([] if option == "all" else ["--json"]))
        assert r.returncode == 0, r.stdout + r.stderr
        after, ss_after = own_view(p), kernel_view(lport)
        assert {k: after[k] for k in own_want} == own_want, (before, after)
        assert {k: ss_after[k] for k in ss_want} == ss_want, (ss_before, ss_after)
        # Nothing but what was asked: every other value the target reads is as before.
        assert unasked(after, own_want) == unasked(before, own_want), (before, after)
        assert p.poll() is None, "the program was disturbed"

    # attach's own before/after agree with the target's getsockopt.
    if option == "all":
        for n in names:
            (k,) = SETTABLE[n][2]
            b, a = (as_attach_reports(k, x[k]) for x in (before, after))
            b, a = ({True: "on", False: "off"}.get(x, x) if k == "nodelay" else x for x in (b, a))
            assert re.search(rf"\| {re.escape(n)} \({kernel[n]}\)\s*\|\s*{b}\s*\|\s*{a}\s*\|", r.stdout), (n, b, a, r.stdout)
        assert "1 TCP/UDP sockets: 1 changed" in r.stdout, r.stdout
        return
    (sock,) = [s for s in json.loads(r.stdout)["sockets"] if s.get("local") == f"127.0.0.1:{lport}"]
    (row,) = sock["options"]
    (k,) = own_want
    assert row["kernel"] == kernel[option] and row["result"] == "set", row
    assert (row["before"], row["after"]) == (as_attach_reports(k, before[k]), as_attach_reports(k, after[k])), (row, before, after)


def test_a_pacing_rate_above_u32_set_by_the_program_is_not_taken_for_its_low_bits(procs, port):
    """Regression: the program set its own rate as a u64, 5 GB/s (0x1_2A05_F200). attach
    read it through a 16-byte buffer, got the u64 and kept its low 32 bits, 705032704: asked
    for 705032704, it said "already" and set nothing. Witnesses: the target's getsockopt
    (u64) and ss's max pacing rate, before and after."""
    util.require_root("attach to a process")
    low_bits = 5_000_000_000 & 0xFFFFFFFF
    with sink(port):
        p, lport = start_probed(procs, port)
        before = own_view(p, "pace 5000000000")
        assert before["max_pacing_rate"] == 5_000_000_000, before
        assert kernel_view(lport)["max_pacing_bits"] == 8 * 5_000_000_000
        r = attach(p.pid, "--max-pacing-rate", low_bits, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert own_view(p)["max_pacing_rate"] == low_bits
        assert kernel_view(lport)["max_pacing_bits"] == 8 * low_bits
    (sock,) = [s for s in json.loads(r.stdout)["sockets"] if s.get("local") == f"127.0.0.1:{lport}"]
    (row,) = sock["options"]
    # as a u32 reads it: the kernel clamps 5 GB/s to u32::MAX
    assert (row["before"], row["after"], row["result"]) == (2**32 - 1, low_bits, "set"), row


# The options that cannot change on an open socket, as attach names them: (flags, the row's
# option (kernel) label, the reason).
UNCHANGEABLE = [
    (["--mptcp"], "mptcp (socket(..., IPPROTO_MPTCP))", "the protocol is chosen at socket()"),
    (["--bind-address", "127.0.0.2"], "bind-address (bind() with IP_BIND_ADDRESS_NO_PORT)",
     "the source address is chosen at bind()/connect()"),
    (["--bind-interface", "lo"], "bind-interface (SO_BINDTODEVICE)", "the device of an open connection is fixed by its route"),
    (["--maxseg", "1000"], "maxseg (TCP_MAXSEG)", "the MSS is announced in the SYN"),
    (["--reuseaddr"], "reuseaddr (SO_REUSEADDR)", "only means something before bind()"),
    (["--reuseport"], "reuseport (SO_REUSEPORT)", "only means something before bind()"),
]


def test_options_that_cannot_change_on_an_open_socket_are_named_skipped_and_not_set(procs, port, tmp_path):
    """mptcp, bind-address, bind-interface, maxseg, reuseaddr, reuseport with dscp EF on a
    running client: each skipped, with its reason; dscp set; exit 0 (`attach --help`: 0 when
    every option was set; skipping is not a refusal). Witnesses: the target's getsockopt
    (IP_TOS 0 -> 0xb8; SO_BINDTODEVICE, SO_REUSEADDR, SO_REUSEPORT, SO_PROTOCOL, TCP_MAXSEG,
    its local address unchanged), ss (the local address, tos), and strace of attach: the
    system calls it made. TCP_MAXSEG after connect reads the MSS in use, which the kernel
    moves by itself and a late setsockopt(TCP_MAXSEG) would not change (it is not 1000);
    strace is the witness that none was made. Controls:
    before attach the target has none of the asked values; SO_BINDTODEVICE and
    SO_REUSEADDR/PORT can be set on an open connected socket (one of the test's own: so the
    target would show such a call); strace shows the IP_TOS call attach did make."""
    util.require_root("attach to a process")
    util.require_tool("strace")
    args = [a for flags, _, _ in UNCHANGEABLE for a in flags] + ["--dscp", "EF"]
    with sink(port):
        p, lport = start_probed(procs, port)
        before = own_view(p)
        assert before["tos"] == 0 and before["device"] == "" and before["protocol"] == socket.IPPROTO_TCP
        assert before["maxseg"] > 1000 and before["reuseaddr"] == 0 and before["reuseport"] == 0, before
        assert before["local"] == f"127.0.0.1:{lport}"
        with socket.create_connection(("127.0.0.1", port)) as mine:
            for name, value in ((socket.SO_BINDTODEVICE, b"lo"), (socket.SO_REUSEADDR, 1), (socket.SO_REUSEPORT, 1)):
                mine.setsockopt(socket.SOL_SOCKET, name, value)
            assert mine.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
            assert mine.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            assert mine.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        st = tmp_path / "strace.txt"
        util.require_sockwrap()
        r = run(["strace", "-f", "-qq", "-e", "trace=socket,bind,setsockopt", "-o", st,
                 util.SOCKWRAP_BIN, "attach", p.pid, *args])
        assert r.returncode == 0, r.stdout + r.stderr
        after = own_view(p)
        e = ss_entry(lport)
        assert p.poll() is None, "the program was disturbed"
    # The settable one reached the program's socket, and nothing else changed.
    assert after["tos"] == EF and util.ss_field(e, "tos") == "0xb8", (after, e)
    assert unasked(after, {"tos"}) == unasked(before, {"tos"}), (before, after)
    assert after["maxseg"] > 1000, after
    assert e.split()[2] == f"127.0.0.1:{lport}", e
    calls = st.read_text()
    assert re.search(r"setsockopt\(\d+, SOL_IP, IP_TOS, \[184\], 4\) = 0", calls), calls
    for word in ("SO_BINDTODEVICE", "TCP_MAXSEG", "SO_REUSEADDR", "SO_REUSEPORT", "IP_BIND_ADDRESS_NO_PORT",
                 "bind(", "IPPROTO_MPTCP", "socket("):
        assert word not in calls, f"attach called {word}:\n{calls}"
    # attach's own account agrees: each named, with its reason.
    for _, label, why in UNCHANGEABLE:
        assert re.search(rf"\| {re.escape(label)}\s*\|\s*-\s*\|\s*skipped: cannot change on an open socket: {re.escape(why)}\s*\|",
                         r.stdout), (label, r.stdout)
    assert re.search(r"\| dscp \(IP_TOS\)\s*\|\s*CS0\(0x00\)\s*\|\s*EF\(0xb8\)\s*\|", r.stdout), r.stdout
    assert "1 TCP/UDP sockets: 1 changed, 0 unchanged, 0 closed during the run, 0 options refused" in r.stdout, r.stdout
    assert r.stderr == "", r.stderr


def test_ssh_client_session_gets_dscp_mid_session(sshd):  # noqa: F811
    util.require_sockwrap()
    port, start, ssh = sshd
    start()
    with Capture(f"tcp port {port}") as cap:
        p = subprocess.Popen(ssh + ["for i in $(seq 60); do echo tick; sleep 0.1; done"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_output_line(p, 10).strip() == "tick"
            time.sleep(1.0)
            r = attach(p.pid, "--dscp", "EF", "--json")
            t_attach = time.monotonic()
            assert r.returncode == 0, r.stdout + r.stderr
            doc = json.loads(r.stdout)
            (sock,) = [s for s in doc["sockets"] if s.get("remote") == f"127.0.0.1:{port}"]
            (tos,) = [o for o in sock["options"] if o["kernel"] == "IP_TOS"]
            assert tos["result"] == "set" and tos["after"] == EF and tos["before"] != EF
            lport = int(sock["local"].rsplit(":", 1)[1])
            time.sleep(max(0.0, 2.0 - (time.monotonic() - t_attach)))
        finally:
            out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and "tick" in out
    mine = cap.from_port(lport)
    # The session's packets before attach carry OpenSSH's own IPQoS, those after carry EF.
    tos_seq = [x.tos for x in mine]
    assert EF not in tos_seq[:5] and tos_seq[0] != EF, cap.text
    first_ef = tos_seq.index(EF)
    assert first_ef >= 5, "EF before attach?\n" + cap.text
    assert set(tos_seq[first_ef:]) == {EF}, "EF did not stay:\n" + cap.text
    assert len(tos_seq[first_ef:]) >= 10, cap.text


def test_sshd_session_gets_dscp_mid_session_with_tree(sshd):  # noqa: F811
    util.require_sockwrap()
    port, start, ssh = sshd
    daemon = start()
    with Capture(f"tcp port {port}") as cap:
        p = subprocess.Popen(ssh + ["for i in $(seq 60); do echo tick; sleep 0.1; done"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_output_line(p, 10).strip() == "tick"
            time.sleep(1.0)
            # Without --tree: only the listening daemon, not the session's processes.
            r = attach(daemon.pid, "--dscp", "EF", "--role", "server", "--dry-run", "--json")
            assert r.returncode == 0, r.stderr
            assert [s["state"] for s in json.loads(r.stdout)["sockets"]] == ["LISTEN"], r.stdout
            r = attach(daemon.pid, "--tree", "--dscp", "EF", "--role", "server", "--json")
            assert r.returncode == 0, r.stdout + r.stderr
            doc = json.loads(r.stdout)
            sessions = [s for s in doc["sockets"] if s.get("state") == "ESTAB"]
            assert sessions and all(s["pid"] != daemon.pid and s["role"] == "server" for s in sessions), r.stdout
            time.sleep(2.0)
        finally:
            out, _ = p.communicate(timeout=20)
    assert p.returncode == 0
    srv = [x.tos for x in cap.from_port(port)]
    assert srv[0] != EF and EF not in srv[:5], cap.text
    first_ef = srv.index(EF)
    assert first_ef >= 5 and set(srv[first_ef:]) == {EF}, cap.text
    # the client (not attached) keeps its own
    assert EF not in {x.tos for x in cap.to_port(port)}


def test_rules_by_local_port_and_role_choose_only_matching_sockets(procs, tmp_path, port, port2):
    util.require_root("tcpdump and attach to a process")
    policy = tmp_path / "policy.toml"
    policy.write_text(textwrap.dedent(f"""\
        [[rule]]
        name = "server side of port {port}"
        match = {{ local-port = {port}, role = "server" }}
        dscp = "EF"
        """))
    srv = procs.spawn([util.PY, "-c", SERVER, port, port2])
    own = int(wait_output_line(srv).strip())
    clients = [socket.create_connection(("127.0.0.1", pt)) for pt in (port, port2) for _ in range(4)]
    try:
        bpf = f"tcp port {port} or tcp port {port2}"
        with Capture(bpf) as base:
            time.sleep(1.0)
        assert {x.tos for x in base.packets} == {0} and len(base.from_port(port)) >= 20, base.text

        r = attach(srv.pid, "-c", policy, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        changed = [s for s in doc["sockets"] if any(o["result"] == "set" for o in s["options"])]
        untouched = [s for s in doc["sockets"] if not s["options"]]
        assert len(changed) == 6, r.stdout  # the listener on A and its 5 accepted sockets
        assert all(s["local"].endswith(f":{port}") and s["role"] == "server" for s in changed)
        assert len(untouched) == 6, r.stdout  # listener B, 4 accepted on B, its own client of A

        with Capture(bpf) as cap:
            time.sleep(1.5)
        from_a = cap.from_port(port)
        from_b = cap.from_port(port2)
        own_pkts = cap.from_port(own)
        assert len(from_a) >= 40 and {x.tos for x in from_a} == {EF}, cap.text
        assert len(from_b) >= 30 and {x.tos for x in from_b} == {0}, cap.text
        # its own client connection to port A: remote port A, role client: unchanged
        assert len(own_pkts) >= 10 and {x.tos for x in own_pkts} == {0}, cap.text

        # The listener on A was changed too: a connection accepted after attach inherits
        # its ToS; one accepted on B does not.
        with Capture(bpf) as cap:
            late = [socket.create_connection(("127.0.0.1", pt)) for pt in (port, port2)]
            clients.extend(late)
            time.sleep(1.0)
        to_a, to_b = (cap.to_port(c.getsockname()[1]) for c in late)
        assert len(to_a) >= 5 and {x.tos for x in to_a} == {EF}, cap.text
        assert len(to_b) >= 5 and {x.tos for x in to_b} == {0}, cap.text
    finally:
        for c in clients:
            c.close()


def test_missing_pid_is_one_line_exit_2():
    util.require_sockwrap()
    p = subprocess.Popen(["true"])
    p.wait(10)
    assert not os.path.exists(f"/proc/{p.pid}")
    r = attach(p.pid, "--dscp", "EF")
    assert r.returncode == 2 and r.stdout == "", r
    lines = r.stderr.strip().splitlines()
    assert lines == [f"sockwrap: attach: no process {p.pid} (check the PID with `ps -p {p.pid}` or `pgrep NAME`)"], r.stderr
    # nothing asked for, a missing or broken policy: usage errors, before any process is touched
    r = attach(os.getpid())
    assert r.returncode == 2 and "nothing to set" in r.stderr
    r = attach(os.getpid(), "-c", "/nonexistent/policy.toml")
    assert r.returncode == 2 and r.stderr.startswith("sockwrap: --config: /nonexistent/policy.toml:"), r.stderr


def test_broken_policy_touches_nothing(procs, tmp_path, port):
    util.require_root("attach to a process")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\ndscp = "EF"\nnodelay = "maybe"\n')
    with sink(port):
        p, lport = start_client(procs, tmp_path, port)
        r = attach(p.pid, "-c", bad)
        assert r.returncode == 2 and r.stdout == "", r
        assert f"{bad}:3:" in r.stderr and r.stderr.strip().splitlines()[-1] == \
            "sockwrap: attach: the policy has errors; no process was touched", r.stderr
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0"), ss_entry(lport)
        # control: the same file mended is applied
        bad.write_text('[[rule]]\ndscp = "EF"\nnodelay = true\n')
        assert attach(p.pid, "-c", bad).returncode == 0
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8"


def test_unprivileged_caller_against_another_users_process(procs, tmp_path, port):
    util.require_root("needs root to own the target and drop to nobody")
    with sink(port):
        p, lport = start_client(procs, tmp_path, port)  # runs as root
        r = attach(p.pid, "--dscp", "EF", user="nobody")
        assert r.returncode == 3, r
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"sockwrap: attach: not allowed to take the sockets of process {p.pid}")
        assert "CAP_SYS_PTRACE" in line and "kernel.yama.ptrace_scope" in line
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0"), ss_entry(lport)
        # control: the same command as root does change it (so the check above can fail)
        r = attach(p.pid, "--dscp", "EF")
        assert r.returncode == 0, r.stderr
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8", ss_entry(lport)


def test_refused_option_is_named_and_the_rest_is_set(procs, tmp_path, port):
    """As the program's own user (nobody), without CAP_NET_ADMIN: mark is refused (EPERM),
    dscp is set; as root the mark is set (the control)."""
    util.require_root("needs root to drop to nobody")
    with sink(port):
        p, lport = start_client(procs, tmp_path, port, user="nobody")
        r = attach(p.pid, "--dscp", "EF", "--mark", "7", user="nobody")
        assert r.returncode == 1, r
        (line,) = r.stderr.strip().splitlines()
        assert "mark (SO_MARK)" in line and "CAP_NET_ADMIN" in line and "not permitted" in line, line
        assert re.search(r"mark \(SO_MARK\)\s*\|\s*0x0\s*\|\s*REFUSED", r.stdout), r.stdout
        e = ss_entry(lport)
        assert util.ss_field(e, "tos") == "0xb8" and util.ss_field(e, "fwmark") is None, e
        r = attach(p.pid, "--mark", "7")
        assert r.returncode == 0, r.stderr
        assert util.ss_field(ss_entry(lport), "fwmark") == "0x7", ss_entry(lport)


def test_socket_closed_mid_run_is_skipped_not_an_error(procs, tmp_path):
    util.require_root("attach to a process")
    for attempt in range(5):
        p = procs.spawn([util.PY, "-c", CHURN], stdin=subprocess.PIPE)
        assert wait_output_line(p).strip() == "ready"
        p.stdin.write("go\n")
        p.stdin.flush()
        r = attach(p.pid, "--dscp", "EF")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "sockwrap:" not in r.stderr, r.stderr
        m = re.search(r"(\d+) closed during the run", r.stdout)
        assert m, r.stdout[-500:]
        if int(m.group(1)) > 0:
            assert "closed during the run" in r.stdout.split("\n", 2)[2]
            assert wait_output_line(p, 10).strip() == "closed" and p.poll() is None
            return
        os.killpg(p.pid, 9)
    pytest.fail("no socket closed during 5 runs of attach: the race was never met")


def test_help_says_values_are_set_once_and_not_locked():
    util.require_sockwrap()
    r = run([util.SOCKWRAP_BIN, "attach", "--help"])
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "ONCE" in text and "NOT locked" in text and "--dry-run" in text and "ptrace_scope" in text


@pytest.mark.parametrize("host", ["::1", "::ffff:127.0.0.1"])
def test_ipv6_client_gets_the_traffic_class(procs, tmp_path, port, host):
    """An AF_INET6 client: IPV6_TCLASS for native IPv6 (`class 0xb8`), and IP_TOS as well
    when it talks to a v4-mapped address (its packets are IPv4: `tos 0xb8`)."""
    util.require_root("tcpdump and attach to a process")
    util.require_ipv6()
    with sink(port, "::1" if host == "::1" else "127.0.0.1"):
        p, lport = start_client(procs, tmp_path, port, host=host)
        before, cap = client_packets(port, lport, 0.8)
        assert len(before) >= 4 and {x.tos for x in before} == {0}, cap.text
        r = attach(p.pid, "--dscp", "EF", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        (sock,) = [s for s in json.loads(r.stdout)["sockets"] if s.get("local", "").endswith(f":{lport}")]
        assert sock["family"] == "ipv6"
        kernel = {o["kernel"]: o["result"] for o in sock["options"]}
        assert kernel["IPV6_TCLASS"] == "set"
        assert ("IP_TOS" in kernel) == (host != "::1"), kernel
        after, cap = client_packets(port, lport, 1.0)
        assert len(after) >= 5 and {x.tos for x in after} == {EF}, cap.text
        assert {x.family for x in after} == {6 if host == "::1" else 4}


def test_udp_sender_gets_dscp_at_the_peer(procs, port):
    """An unconnected UDP socket sending with sendto() every 100 ms: the receiver's IP_RECVTOS
    sees 0 before attach and 0xb8 after."""
    util.require_root("attach to a process")
    sender = textwrap.dedent("""\
        import socket, sys, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1], flush=True)
        for i in range(600):
            s.sendto(b"%d" % i, ("127.0.0.1", int(sys.argv[1])))
            time.sleep(0.1)
        """)
    with util.tos_server(socket.AF_INET, port, "udp") as srv:
        p = procs.spawn([util.PY, "-c", sender, port])
        lport = int(wait_output_line(p).strip())
        srv.wait(5)
        r = attach(p.pid, "--dscp", "EF", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        (sock,) = [s for s in json.loads(r.stdout)["sockets"] if s.get("local") == f"127.0.0.1:{lport}"]
        assert sock["transport"] == "udp" and sock["state"] == "UNCONN" and sock["role"] is None
        n = len(srv.results)
        time.sleep(1.0)
        res = srv.wait(n + 5)
        assert {x["tos"] for x in res[:n - 1]} == {0}, res
        assert len(res[n + 1:]) >= 5 and {x["tos"] for x in res[n + 1:]} == {EF}, res


def test_mptcp_client_gets_dscp_and_refused_options_are_named(procs, tmp_path, port):
    """An MPTCP socket is not in /proc/net/tcp (its subflows are): attach reads it from the
    socket itself. IP_TOS reaches the subflow's packets; TCP_USER_TIMEOUT, which MPTCP
    sockets refuse (catalog fact), is skipped with its reason."""
    util.require_root("tcpdump and attach to a process")
    with sink(port):
        p, lport = start_client(procs, tmp_path, port, mptcp=True)
        before, cap = client_packets(port, lport, 0.8)
        assert len(before) >= 4 and {x.tos for x in before} == {0}, cap.text
        r = attach(p.pid, "--dscp", "EF", "--user-timeout", "5s", "--role", "client")
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(rf"mptcp 127.0.0.1:{lport} -> 127.0.0.1:{port} .* dscp \(IP_TOS\) .*\| EF\(0xb8\)", r.stdout), r.stdout
        assert "skipped: MPTCP sockets refuse TCP_USER_TIMEOUT" in r.stdout, r.stdout
        after, cap = client_packets(port, lport, 1.0)
        assert len(after) >= 5 and {x.tos for x in after} == {EF}, cap.text


def test_program_rules_match_the_targets_name(procs, tmp_path, port):
    util.require_root("attach to a process")
    pol = tmp_path / "p.toml"
    with sink(port):
        p, lport = start_client(procs, tmp_path, port)
        pol.write_text('[[rule]]\nmatch = { program = "curl" }\ndscp = "EF"\n')
        r = attach(p.pid, "-c", pol)
        assert r.returncode == 0 and "no rule applies" in r.stdout, r.stdout
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0"), ss_entry(lport)
        name = os.path.basename(os.readlink(f"/proc/{p.pid}/exe"))
        pol.write_text(f'[[rule]]\nmatch = {{ program = "{name}" }}\ndscp = "EF"\n')
        r = attach(p.pid, "-c", pol)
        assert r.returncode == 0, r.stdout + r.stderr
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8", ss_entry(lport)


def test_a_thread_id_means_its_process(procs, tmp_path, port):
    util.require_root("attach to a process")
    prog = textwrap.dedent("""\
        import socket, sys, threading, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        t = threading.Thread(target=time.sleep, args=(60,), daemon=True)
        t.start()
        print(s.getsockname()[1], t.native_id, flush=True)
        time.sleep(60)
        """)
    with sink(port):
        p = procs.spawn([util.PY, "-c", prog, port])
        lport, tid = map(int, wait_output_line(p).split())
        assert tid != p.pid
        r = attach(tid, "--dscp", "EF")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{tid} is a thread of process {p.pid}" in r.stderr
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8", ss_entry(lport)


SECCOMP_ENOSYS = r"""
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>
/* Runs argv[2..] with system call number argv[1] answering ENOSYS: a kernel without it. */
int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, atoi(argv[1]), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { sizeof f / sizeof f[0], f };
    if (argc < 3 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
        return 99;
    execv(argv[2], argv + 2);
    return 98;
}
"""


@pytest.mark.parametrize("call,nr", [("pidfd_open", 434), ("pidfd_getfd", 438)])
def test_kernel_without_pidfd_getfd_is_one_line_exit_2(procs, tmp_path, port, call, nr):
    """A kernel older than 5.6, simulated: a seccomp filter makes the call answer ENOSYS
    (x86_64/aarch64 numbers); refused by name with exit 2, as `--kernel` refuses what the
    kernel cannot do. Control: the same command without the filter works."""
    util.require_tool("gcc")
    util.require(os.uname().machine in ("x86_64", "aarch64"), "system call numbers for x86_64/aarch64")
    src = tmp_path / "nosys.c"
    src.write_text(SECCOMP_ENOSYS)
    exe = tmp_path / "nosys"
    c = run(["gcc", "-O", "-o", exe, src])
    assert c.returncode == 0, c.stderr
    with sink(port):
        p, lport = start_client(procs, tmp_path, port)
        util.require_sockwrap()
        r = run([exe, str(nr), util.SOCKWRAP_BIN, "attach", p.pid, "--dscp", "EF"])
        assert r.returncode == 2, r
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("sockwrap: attach: this kernel (") and f"has no {call}()" in line, line
        assert "Linux 5.6 or later" in line
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0")
        r = attach(p.pid, "--dscp", "EF")
        assert r.returncode == 0, r.stderr
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8"


# --------------------------------------------------------------------------- --follow
#
# `attach --follow` moves the process into a sockwrap cgroup with the kernel backend's
# programs. Witnesses: /proc/PID/cgroup and /proc/PID/task/*/cgroup (where the process is),
# the wire (tcpdump: the SYN and data of a connection opened after the move), the peer
# (IP_RECVTOS of each datagram), ss (tos of the socket). The target sits in a cgroup the test
# makes (swtest-unit-*, a stand-in for a systemd unit's cgroup), so that "back where it came
# from" and "a child of its own cgroup" are seen; BPF programs are attached only to the
# cgroups sockwrap makes under it, and all of them are removed.

# A program told what to do on stdin, one line at a time; a second thread keeps it
# multi-threaded (every thread must move).
#   tcp PORT [TOS]   open a NEW connection (then, if given, set IP_TOS itself), send, keep it
#   udp PORT [TOS]   a NEW connected UDP socket (the same), five datagrams
#   child SECS       start a child process that sleeps SECS; prints its pid
#   exit             exit (as does the end of stdin)
FOLLOWED = textwrap.dedent("""\
    import socket, subprocess, sys, threading, time
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
    keep = []
    print("ready", flush=True)
    for line in sys.stdin:
        w = line.split()
        if not w or w[0] == "exit":
            break
        if w[0] == "child":
            c = subprocess.Popen(["sleep", w[1]])
            keep.append(c)
            print(c.pid, flush=True)
            continue
        tcp = w[0] == "tcp"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", int(w[1])))
        if len(w) > 2:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, int(w[2], 0))
        for i in range(5):
            s.send(b"%d" % i)
            time.sleep(0.02)
        keep.append(s)
        print(s.getsockname()[1], flush=True)
    """)


def require_follow():
    util.require_sockwrap()
    util.require_root("attach --follow moves a process between cgroups and attaches BPF programs: root only")
    util.require(util.cgroup2_mount() is not None, "no cgroup v2 hierarchy mounted")


def cgroup_of(pid):
    """The process's cgroup v2 path, as /proc/PID/cgroup says."""
    with open(f"/proc/{pid}/cgroup") as f:
        return [l.strip()[3:] for l in f if l.startswith("0::")][0]


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def task_cgroups(pid):
    """The cgroup of each of its threads."""
    return {t: cgroup_of(f"{pid}/task/{t}") for t in os.listdir(f"/proc/{pid}/task")}


def follow_cgroups():
    """Every sockwrap-follow-* directory in the cgroup v2 tree."""
    root = util.cgroup2_mount()
    return [Path(d) / n for d, dirs, _ in os.walk(root) for n in dirs if n.startswith("sockwrap-follow-")]


def procs_in_follow_cgroups():
    """Every process /proc shows in a sockwrap-follow cgroup."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if "/sockwrap-follow-" in cgroup_of(p):
                    found.append(int(p))
            except (OSError, IndexError):
                pass
    return found


@pytest.fixture(autouse=True)
def no_follow_cgroup_left_behind():
    if os.geteuid() == 0 and util.cgroup2_mount() is not None:
        assert follow_cgroups() == [], "a sockwrap-follow cgroup was left by an earlier run"
    yield
    if os.geteuid() == 0 and util.cgroup2_mount() is not None:
        left = util.wait_until(lambda: follow_cgroups() == [], timeout=5) or follow_cgroups()
        if left is not True:
            # A test that failed half-way (its sockwrap killed at teardown): clean up with
            # sockwrap's own sweep, so that the next test starts clean, and fail this one.
            run([util.SOCKWRAP_BIN, "doctor"])
            pytest.fail(f"sockwrap-follow cgroups left behind: {left}")


@pytest.fixture
def unit():
    """A cgroup of the test's own, standing in for a service's: (directory, /proc path)."""
    require_follow()
    root = util.cgroup2_mount()
    d = root / f"swtest-unit-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    yield d, "/" + str(d.relative_to(root))
    # Only the test's own processes are in it: end them, then remove it bottom up.
    for sub, _, _ in sorted(os.walk(d), key=lambda e: -len(e[0])):
        for pid in Path(sub, "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for sub, _, _ in sorted(os.walk(d), key=lambda e: -len(e[0])):
        util.wait_until(lambda: Path(sub, "cgroup.procs").read_text().strip() == "", timeout=5)
        util.wait_until(lambda: _rmdir(sub), timeout=5)


def _rmdir(p):
    try:
        os.rmdir(p)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def put_into(cg_dir, pid):
    (Path(cg_dir) / "cgroup.procs").write_text(f"{pid}\n")


def start_followed(procs, unit_dir=None):
    p = procs.spawn([util.PY, "-c", FOLLOWED], stdin=subprocess.PIPE)
    assert wait_output_line(p).strip() == "ready"
    if unit_dir is not None:
        put_into(unit_dir, p.pid)
    return p


def tell(p, line):
    """Sends one command to the FOLLOWED program and returns its answer (a port or pid)."""
    p.stdin.write(line + "\n")
    p.stdin.flush()
    out = wait_output_line(p).strip()
    assert out.isdigit(), f"{line}: {out!r}"
    return int(out)


def start_follow(procs, pid, *args, **kw):
    """`sockwrap attach PID --follow ARGS`, in the background, once it is following."""
    util.require_sockwrap()
    f = procs.spawn([util.SOCKWRAP_BIN, "attach", pid, "--follow", *args], **kw)
    err = b""
    deadline = time.monotonic() + 30
    # Raw reads: a buffered readline could hold the line select() no longer sees.
    while time.monotonic() < deadline:
        r, _, _ = select.select([f.stderr], [], [], 0.1)
        if r:
            chunk = os.read(f.stderr.fileno(), 65536)
            err += chunk
            if b"following until" in err:
                return f, err.decode()
            if not chunk:
                break
        if f.poll() is not None and not r:
            break
    err = err.decode()
    pytest.fail(f"attach --follow did not start following: rc={f.poll()} {err}{f.stderr.read() if f.poll() is not None else ''}")


def end_follow(f, timeout=15):
    out, err = f.communicate(timeout=timeout)
    return f.returncode, out, err


def test_follow_new_connection_gets_dscp_on_the_wire_and_without_follow_it_does_not(procs, port, unit):
    unit_dir, unit_rel = unit
    with sink(port):
        p = start_followed(procs, unit_dir)
        tell(p, f"tcp {port}")  # a connection from before, for the one-shot part
        # Control: attach without --follow sets the open socket, not the next one.
        r = attach(p.pid, "--dscp", "EF")
        assert r.returncode == 0, r.stdout + r.stderr
        with Capture(f"tcp port {port}") as cap:
            lport = tell(p, f"tcp {port}")
        plain = cap.from_port(lport)
        assert len(plain) >= 5 and {x.tos for x in plain} == {0}, cap.text
        assert cgroup_of(p.pid) == unit_rel

        f, err = start_follow(procs, p.pid, "--dscp", "EF")
        here = cgroup_of(p.pid)
        # A child of the cgroup it was in, named after this sockwrap; every thread moved.
        assert here.startswith(f"{unit_rel}/sockwrap-follow-{f.pid}-"), (here, err)
        assert set(task_cgroups(p.pid).values()) == {here} and len(task_cgroups(p.pid)) == 2
        assert f"from {unit_rel} into {here}" in err, err
        with Capture(f"tcp port {port}") as cap:
            lport = tell(p, f"tcp {port}")
        new = cap.from_port(lport)
        assert len(new) >= 5 and {x.tos for x in new} == {EF}, cap.text
        assert "S" in new[0].flags, "the SYN carries it too:\n" + cap.text
        assert f.poll() is None, "attach --follow ended while the program runs"
        p.stdin.write("exit\n")
        p.stdin.flush()
        rc, out, err2 = end_follow(f)
        p.wait(timeout=5)  # reaped: a zombie still shows the cgroup it died in
    assert rc == 0, err + err2
    assert "the followed processes have exited" in err2, err2
    assert "setsockopt calls kept from changing a locked option: 0" in err2, err2
    assert not (util.cgroup2_mount() / here.lstrip("/")).exists()
    assert follow_cgroups() == [] and procs_in_follow_cgroups() == []


def test_follow_locks_the_option_against_the_programs_own_setsockopt(procs, port):
    """The program sets IP_TOS 0x20 itself on its new sockets. Before --follow the peer sees
    0x20 (UDP: IP_RECVTOS per datagram; TCP: ss); after, 0xb8: the lock held, and the
    program's call reported success (it went on)."""
    require_follow()
    with util.tos_server(socket.AF_INET, port, "udp") as srv, sink(port):
        p = start_followed(procs)
        before = tell(p, f"udp {port} 0x20")
        tcp_before = tell(p, f"tcp {port} 0x20")
        assert util.ss_field(ss_entry(tcp_before), "tos") == "0x20", ss_entry(tcp_before)
        f, err = start_follow(procs, p.pid, "--dscp", "EF")
        after = tell(p, f"udp {port} 0x20")
        tcp_after = tell(p, f"tcp {port} 0x20")
        res = srv.wait(10)
        by_port = {}
        for x in res:
            by_port.setdefault(x["peer"][1], []).append(x["tos"])
        assert by_port.get(before) == [0x20] * 5, res
        assert by_port.get(after) == [EF] * 5, res
        assert util.ss_field(ss_entry(tcp_after), "tos") == "0xb8", ss_entry(tcp_after)
        os.kill(f.pid, signal.SIGTERM)
        rc, _, err2 = end_follow(f)
    assert rc == 128 + signal.SIGTERM, err + err2
    # The lock held twice (the UDP and the TCP socket's own IP_TOS)
    assert "setsockopt calls kept from changing a locked option: 2" in err2, err2


def ctrl_c_follow(procs, pid, *args):
    """attach --follow on a terminal of its own, stopped by a real ^C typed on it (the
    kernel's SIGINT to the foreground process group, si_code SI_KERNEL)."""
    import fcntl
    import pty
    import termios
    master, slave = pty.openpty()
    f = subprocess.Popen([str(util.SOCKWRAP_BIN), "attach", str(pid), "--follow", *args],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0), env=util._env(None))
    os.close(slave)
    procs.procs.append(f)
    text = b""
    deadline = time.monotonic() + 30
    while b"following until" not in text and time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            text += os.read(master, 4096)
    assert b"following until" in text, text
    return f, master, text


@pytest.mark.parametrize("how", ["ctrl-c", "SIGTERM"])
def test_stopping_follow_moves_the_target_back_and_it_keeps_running(procs, port, unit, how):
    unit_dir, unit_rel = unit
    with sink(port):
        p = start_followed(procs, unit_dir)
        if how == "ctrl-c":
            f, master, text = ctrl_c_follow(procs, p.pid, "--dscp", "EF")
        else:
            f, text = start_follow(procs, p.pid, "--dscp", "EF")
        assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-")
        during = tell(p, f"tcp {port}")
        assert util.ss_field(ss_entry(during), "tos") == "0xb8"
        if how == "ctrl-c":
            os.write(master, b"\x03")
            assert f.wait(timeout=15) == 128 + signal.SIGINT
            time.sleep(0.2)
            r, _, _ = select.select([master], [], [], 1)
            text = os.read(master, 8192).decode() if r else ""
            os.close(master)
        else:
            os.kill(f.pid, signal.SIGTERM)
            rc, _, text = end_follow(f)
            assert rc == 128 + signal.SIGTERM, text
        assert "moved process" in text and "back to where it came from" in text, text
        # Back where it came from, every thread, and still running.
        assert cgroup_of(p.pid) == unit_rel
        assert set(task_cgroups(p.pid).values()) == {unit_rel}
        assert p.poll() is None
        # The programs are gone: a new connection gets nothing; the one made while followed
        # keeps what it was given.
        with Capture(f"tcp port {port}") as cap:
            later = tell(p, f"tcp {port}")
        pk = cap.from_port(later)
        assert len(pk) >= 5 and {x.tos for x in pk} == {0}, cap.text
        assert util.ss_field(ss_entry(during), "tos") == "0xb8"
    assert follow_cgroups() == [] and procs_in_follow_cgroups() == []


def test_follow_tree_moves_every_process_and_waits_for_all_of_them(procs, port, unit):
    """--tree: the program and its child are moved (each its own /proc/PID/cgroup); the
    follow ends when the last of them exits, not the first; then nothing is left."""
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    child = tell(p, "child 6")
    assert cgroup_of(child) == unit_rel
    f, err = start_follow(procs, p.pid, "--tree", "--dscp", "EF")
    ours = cgroup_of(p.pid)
    assert ours.startswith(f"{unit_rel}/sockwrap-follow-") and cgroup_of(child) == ours, err
    assert f"processes {p.pid} ({comm(p.pid)}), {child} (sleep)" in err, err
    p.stdin.write("exit\n")
    p.stdin.flush()
    p.wait(timeout=5)
    time.sleep(0.5)
    assert f.poll() is None, "the follow ended while the child was still in the cgroup"
    assert os.path.exists(f"/proc/{child}") and cgroup_of(child) == ours
    rc, _, err2 = end_follow(f)
    assert rc == 0, err + err2
    assert not (util.cgroup2_mount() / ours.lstrip("/")).exists()
    util.wait_until(lambda: not os.path.exists(f"/proc/{child}"), timeout=5)  # reaped by init
    assert follow_cgroups() == [] and procs_in_follow_cgroups() == []
    # Without --tree only the process itself moves (control for the check above).
    p = start_followed(procs, unit_dir)
    child = tell(p, "child 30")
    f, err = start_follow(procs, p.pid, "--dscp", "EF")
    assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-") and cgroup_of(child) == unit_rel
    os.kill(f.pid, signal.SIGTERM)
    assert end_follow(f)[0] == 128 + signal.SIGTERM


def test_follow_tree_across_two_cgroups_gives_each_its_own_and_puts_each_back(procs, unit):
    """As sshd's sessions, which systemd puts in scopes of their own: the program in the
    unit, its child in another cgroup. Each is moved into a sockwrap cgroup under its own,
    and each goes back to its own."""
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    child = tell(p, "child 30")
    session = unit_dir / "session"
    session.mkdir()
    put_into(session, child)
    f, err = start_follow(procs, p.pid, "--tree", "--dscp", "EF")
    mine, its = cgroup_of(p.pid), cgroup_of(child)
    assert mine.startswith(f"{unit_rel}/sockwrap-follow-{f.pid}-"), err
    assert its.startswith(f"{unit_rel}/session/sockwrap-follow-{f.pid}-"), err
    assert len(follow_cgroups()) == 2
    os.kill(f.pid, signal.SIGTERM)
    rc, _, err2 = end_follow(f)
    assert rc == 128 + signal.SIGTERM, err2
    assert cgroup_of(p.pid) == unit_rel and cgroup_of(child) == f"{unit_rel}/session"
    assert follow_cgroups() == []


def test_a_process_moved_out_by_someone_else_ends_the_follow_with_exit_1(procs, unit):
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    f, err = start_follow(procs, p.pid, "--dscp", "EF")
    assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-")
    put_into(unit_dir, p.pid)  # as an administrator (or systemd) could
    rc, _, err2 = end_follow(f)
    assert rc == 1, err2
    assert f"process {p.pid} ({comm(p.pid)}) left the sockwrap cgroup while it was followed" in err2, err2
    assert p.poll() is None and cgroup_of(p.pid) == unit_rel and follow_cgroups() == []


def test_follow_refuses_options_the_kernel_backend_cannot_set_and_touches_nothing(procs, port, unit):
    unit_dir, unit_rel = unit
    with sink(port):
        p = start_followed(procs, unit_dir)
        lport = tell(p, f"tcp {port}")
        r = attach(p.pid, "--follow", "--dscp", "EF", "--linger", "5", "--ttl", "9")
        assert r.returncode == 2, r
        assert r.stdout == "", "the one-shot part ran:\n" + r.stdout
        lines = r.stderr.strip().splitlines()
        refused = [l for l in lines if "attach --follow cannot set" in l]
        assert len(refused) == 2, r.stderr
        assert any("SO_LINGER" in l for l in refused) and any("IP_TTL" in l for l in refused), r.stderr
        assert lines[-1].startswith("sockwrap: attach --follow: refusing to follow; no process was touched: 2 options"), r.stderr
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0"), ss_entry(lport)
        assert cgroup_of(p.pid) == unit_rel
        # Control: the same without --follow is applied (so the checks above can fail).
        r = attach(p.pid, "--dscp", "EF", "--linger", "5", "--ttl", "9")
        assert r.returncode == 0, r.stdout + r.stderr
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8"


def test_follow_dry_run_says_what_it_would_do_and_changes_nothing(procs, port, unit):
    unit_dir, unit_rel = unit
    with sink(port):
        p = start_followed(procs, unit_dir)
        lport = tell(p, f"tcp {port}")
        r = attach(p.pid, "--follow", "--dscp", "EF", "--dry-run")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"would make a cgroup sockwrap-follow-PID-START under {unit_rel}" in r.stderr, r.stderr
        assert f"move process {p.pid} ({comm(p.pid)}) (all threads) from {unit_rel} into it" in r.stderr, r.stderr
        assert "would be EF(0xb8) (dry run)" in r.stdout, r.stdout
        assert cgroup_of(p.pid) == unit_rel and follow_cgroups() == []
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0")


SECCOMP_BPF_NR = {"x86_64": 321, "aarch64": 280}


def test_follow_errors_are_one_line_and_leave_the_target_where_it_was(procs, port, unit, tmp_path):
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)

    def refused(r, code, *words):
        assert r.returncode == code, r
        assert r.stdout == "", "the one-shot part ran:\n" + r.stdout
        (line,) = [l for l in r.stderr.strip().splitlines() if not l.startswith("sockwrap: removed the leftover")]
        assert line.startswith("sockwrap: attach --follow: ") and all(w in line for w in words), line
        assert cgroup_of(p.pid) == unit_rel and follow_cgroups() == []

    # not root
    refused(attach(p.pid, "--follow", "--dscp", "EF", user="nobody"), 3, "only root may attach")
    # a kernel thread
    refused(attach(2, "--follow", "--dscp", "EF"), 3, "process 2 (kthreadd) is a kernel thread")
    # no cgroup v2 (unmounted in a mount namespace of its own; the host keeps it)
    util.require_tool("unshare")
    r = run(["unshare", "-m", "sh", "-c",
             f"umount {util.cgroup2_mount()} && exec {util.SOCKWRAP_BIN} attach {p.pid} --follow --dscp EF"])
    refused(r, 3, "no cgroup v2 hierarchy is mounted")
    assert util.cgroup2_mount() is not None
    # BPF not loadable: bpf(2) answers ENOSYS (a seccomp filter)
    util.require_tool("gcc")
    util.require(os.uname().machine in SECCOMP_BPF_NR, "system call numbers for x86_64/aarch64")
    src = tmp_path / "nosys.c"
    src.write_text(SECCOMP_ENOSYS)
    exe = tmp_path / "nosys"
    assert run(["gcc", "-O", "-o", exe, src]).returncode == 0
    r = run([exe, SECCOMP_BPF_NR[os.uname().machine], util.SOCKWRAP_BIN, "attach", p.pid, "--follow", "--dscp", "EF"])
    refused(r, 3, "cannot attach the BPF programs to", "nothing was moved")
    # a threaded cgroup: cgroup v2 moves whole processes only between domain cgroups
    thr = unit_dir / "threaded"
    thr.mkdir()
    (thr / "cgroup.type").write_text("threaded\n")
    put_into(thr, p.pid)
    r = attach(p.pid, "--follow", "--dscp", "EF")
    assert r.returncode == 3 and "cgroup.type is `threaded`" in r.stderr, r
    assert cgroup_of(p.pid) == f"{unit_rel}/threaded" and follow_cgroups() == []
    # Control: back in a domain cgroup (the threaded child removed: the unit is a plain
    # domain again), the same command moves it.
    put_into(unit_dir, p.pid)
    thr.rmdir()
    assert (unit_dir / "cgroup.type").read_text().strip() == "domain"
    f, err = start_follow(procs, p.pid, "--dscp", "EF")
    assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-")
    os.kill(f.pid, signal.SIGTERM)
    assert end_follow(f)[0] == 128 + signal.SIGTERM and cgroup_of(p.pid) == unit_rel


def test_a_killed_follow_is_cleaned_up_by_doctor_and_by_the_next_run(procs, unit):
    """kill -9 of attach --follow: the BPF links go with it, the cgroup stays with the
    process in it. doctor (not root) reports it; doctor as root, or the next run --kernel,
    moves the process back to where it came from and removes the cgroup."""
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    for cleaner in ("doctor", "run --kernel"):
        f, _ = start_follow(procs, p.pid, "--dscp", "EF")
        left = cgroup_of(p.pid)
        assert left.startswith(f"{unit_rel}/sockwrap-follow-{f.pid}-")
        os.kill(f.pid, signal.SIGKILL)
        f.wait(timeout=5)
        cg = util.cgroup2_mount() / left.lstrip("/")
        assert cg.exists() and cgroup_of(p.pid) == left
        if cleaner == "doctor":
            d = run(DROP + [util.SOCKWRAP_BIN, "doctor"])
            assert f"leftover cgroup {cg}" in d.stdout and "are still in it" in d.stdout, d.stdout
            assert d.returncode == 1 and cgroup_of(p.pid) == left
            d = run([util.SOCKWRAP_BIN, "doctor"])
            said = d.stdout
        else:
            d = run([util.SOCKWRAP_BIN, "run", "--kernel", "--", "true"])
            assert d.returncode == 0, d.stderr
            said = d.stderr
        assert f"moved processes [{p.pid}] back to {unit_dir} and removed the leftover cgroup {cg}" in said, said
        assert cgroup_of(p.pid) == unit_rel and not cg.exists() and p.poll() is None


def test_help_and_man_page_say_what_follow_does_to_a_service(tmp_path):
    util.require_sockwrap()
    r = run([util.SOCKWRAP_BIN, "attach", "--help"])
    text = " ".join(r.stdout.split())
    for words in ("--follow", "UNDER THE CGROUP IT IS IN", "accounting", "KillMode=control-group",
                  "moves them back to the cgroup they came from", "(ttl, linger, mptcp)", "kill -9"):
        assert words in text, words
    r = run([util.SOCKWRAP_BIN, "gen-man", tmp_path])
    assert r.returncode == 0, r.stderr
    man = (tmp_path / "sockwrap-attach.1").read_text()
    assert "KillMode=control\\-group" in man or "KillMode=control-group" in man
