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
import socket
import subprocess
import textwrap
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


def packets_during(port, lport, secs):
    """The client's packets (source port lport) during `secs` seconds."""
    with Capture(f"tcp port {port}") as cap:
        time.sleep(secs)
    return util.client_packets(cap, lport=lport), cap


def ss_entry(lport):
    e = util.ss(f"( sport = :{lport} )", "-tnieo --tos")
    assert len(e) == 1, e
    return e[0]


def test_running_client_gets_ef_on_the_wire_and_keeps_it(procs, tmp_path, port):
    util.require_root("tcpdump and attach to a process")
    with util.Sink(port):
        p, lport = start_client(procs, tmp_path, port)
        before, cap = packets_during(port, lport, 1.0)
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
        after, cap = packets_during(port, lport, 2.0)
        assert len(after) >= 10 and {x.tos for x in after} == {EF}, cap.text
        timer = util.wait_until(lambda: util.keepalive_timer(ss_entry(lport)), 3)
        assert timer and util.seconds(timer) <= 30, ss_entry(lport)
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8"
        # attach changed only what was asked: the priority that IP_TOS rewrites is kept.
        assert util.ss_field(ss_entry(lport), "class_id") == "0", ss_entry(lport)
        # and it stays: a second look, later
        later, cap = packets_during(port, lport, 1.0)
        assert later and {x.tos for x in later} == {EF}, cap.text
        assert p.poll() is None, "the program was disturbed"


def test_list_shows_the_sockets_and_changes_nothing(procs, tmp_path, port):
    util.require_root("attach to a process")
    with util.Sink(port):
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
    with util.Sink(port):
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
    with util.Sink(port):
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
    with util.Sink(port):
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


def ticking_session(ssh):
    """An ssh session that prints `tick` every 0.1 s for 6 s, a second into its ticking."""
    p = subprocess.Popen(ssh + ["for i in $(seq 60); do echo tick; sleep 0.1; done"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_output_line(p, 10).strip() == "tick"
    except BaseException:
        p.kill()
        p.communicate(timeout=20)
        raise
    time.sleep(1.0)
    return p


def test_ssh_client_session_gets_dscp_mid_session(sshd):  # noqa: F811
    util.require_sockwrap()
    port, start, ssh = sshd
    start()
    with Capture(f"tcp port {port}") as cap:
        p = ticking_session(ssh)
        try:
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
        p = ticking_session(ssh)
        try:
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
    with util.Sink(port):
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
    with util.Sink(port):
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
    with util.Sink(port):
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
    with util.Sink(port, "::1" if host == "::1" else "127.0.0.1"):
        p, lport = start_client(procs, tmp_path, port, host=host)
        before, cap = packets_during(port, lport, 0.8)
        assert len(before) >= 4 and {x.tos for x in before} == {0}, cap.text
        r = attach(p.pid, "--dscp", "EF", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        (sock,) = [s for s in json.loads(r.stdout)["sockets"] if s.get("local", "").endswith(f":{lport}")]
        assert sock["family"] == "ipv6"
        kernel = {o["kernel"]: o["result"] for o in sock["options"]}
        assert kernel["IPV6_TCLASS"] == "set"
        assert ("IP_TOS" in kernel) == (host != "::1"), kernel
        after, cap = packets_during(port, lport, 1.0)
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
    with util.Sink(port):
        p, lport = start_client(procs, tmp_path, port, mptcp=True)
        before, cap = packets_during(port, lport, 0.8)
        assert len(before) >= 4 and {x.tos for x in before} == {0}, cap.text
        r = attach(p.pid, "--dscp", "EF", "--user-timeout", "5s", "--role", "client")
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(rf"mptcp 127.0.0.1:{lport} -> 127.0.0.1:{port} .* dscp \(IP_TOS\) .*\| EF\(0xb8\)", r.stdout), r.stdout
        assert "skipped: MPTCP sockets refuse TCP_USER_TIMEOUT" in r.stdout, r.stdout
        after, cap = packets_during(port, lport, 1.0)
        assert len(after) >= 5 and {x.tos for x in after} == {EF}, cap.text


def test_program_rules_match_the_targets_name(procs, tmp_path, port):
    util.require_root("attach to a process")
    pol = tmp_path / "p.toml"
    with util.Sink(port):
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
    with util.Sink(port):
        p = procs.spawn([util.PY, "-c", prog, port])
        lport, tid = map(int, wait_output_line(p).split())
        assert tid != p.pid
        r = attach(tid, "--dscp", "EF")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{tid} is a thread of process {p.pid}" in r.stderr
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8", ss_entry(lport)


@pytest.mark.parametrize("call,nr", [("pidfd_open", 434), ("pidfd_getfd", 438)])
def test_kernel_without_pidfd_getfd_is_one_line_exit_2(procs, tmp_path, port, call, nr):
    """A kernel older than 5.6, simulated: a seccomp filter makes the call answer ENOSYS
    (x86_64/aarch64 numbers); refused by name with exit 2, as `--kernel` refuses what the
    kernel cannot do. Control: the same command without the filter works."""
    util.require(os.uname().machine in ("x86_64", "aarch64"), "system call numbers for x86_64/aarch64")
    exe = util.build_c("nosys", tmp_path / "nosys")  # tests/c/nosys.c
    with util.Sink(port):
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


@pytest.fixture(autouse=True)
def no_follow_cgroup_left_behind():
    """As in test_attach_follow.py: attach without --follow never makes a sockwrap-follow
    cgroup, and none may be left."""
    yield from util.no_cgroups_left("sockwrap-follow-", cleanup=lambda: run([util.SOCKWRAP_BIN, "doctor"]))
