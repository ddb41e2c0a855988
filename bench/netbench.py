"""Sections 6 (MPTCP) and 7 (trace) of the sockwrap benchmarks (issue 6).

Called from bench/bench.py; every figure in the report comes from these measurements.

6. MPTCP: unmodified iperf3 (Debian 3.12, no MPTCP of its own) between two network namespaces
   joined by two veth paths, each shaped to the same rate with tc tbf (the test bed of
   tests/netns.py, imported as is). Variants, interleaved and repeated: plain TCP over one
   path, `sockwrap run --mptcp` on both ends, `mptcpize run` on both ends. The kernel is the
   witness that MPTCP carried the data: MIB counters (nstat) of both namespaces and the
   per-veth byte counters.
7. Trace: wall clock of a connection-heavy run (`connbench loop N`: N connect/accept/close
   iterations on 127.0.0.1) untraced, under `sockwrap trace -o FILE`, under
   `sockwrap run --trace FILE` (the library's trace only, no summary) and under
   `strace -f -e trace=network -o FILE`, interleaved, medians, ratios to the untraced run.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "bench", "build")
CLI = os.path.join(ROOT, "target", "release", "sockwrap")
CONNBENCH = os.path.join(BUILD, "connbench")
TESTS = os.path.join(ROOT, "tests")

MPTCP_GOAL = 1.8
PIN = " @1cpu"  # suffix of the trace variants run pinned to one CPU


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _clean_env():
    return {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not k.startswith("SOCKWRAP_")}


def _rel(s):
    return s.replace(ROOT + "/", "")


def _note(note, section, cmd):
    if note:
        note(section, _rel(cmd))


def _guard(fn, quick, note):
    """A failed measurement is reported as such (the other sections' figures are kept)."""
    try:
        return fn(quick, note)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        _log(f"FAILED: {e!r}")
        return {"skipped": f"**FAILED**: {str(e)[-600:]!r}"}


# ---------------------------------------------------------------- 6. MPTCP

def mptcp_params(quick):
    return {
        "rate": "40mbit",       # tbf on both ends of each veth path
        # iperf3 -t; no -O: at 40 Mbit/s and a sub-ms RTT slow start and the subflow join take
        # milliseconds, and a 2 s window after `-O 1` was noisier (±4 %) than 3 s without.
        "secs": 3 if quick else 5,
        "omit": 0,
        "reps": 3,
    }


def _mptcp_skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/proc/sys/net/mptcp/enabled"):
        return "kernel without MPTCP (/proc/sys/net/mptcp)"
    for tool in ("ip", "tc", "nstat", "ss", "iperf3"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    if not os.path.exists(CLI):
        return "target/release/sockwrap not built"
    return None


def _wrap(kind, cmd):
    cmd = [str(c) for c in cmd]
    if kind == "sockwrap":
        return [CLI, "run", "--mptcp", "--"] + cmd
    if kind == "mptcpize":
        return ["mptcpize", "run"] + cmd
    return cmd


def _tx_bytes(ns, dev):
    r = subprocess.run(["ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev],
                       capture_output=True, text=True, timeout=10, check=True)
    return json.loads(r.stdout)[0]["stats64"]["tx"]["bytes"]


def _mptcp_socks(bed):
    """MPTCP sockets still open in either namespace (ss -M)."""
    n = 0
    for ns in (bed.client, bed.server):
        n += len([l for l in bed.ss(ns, ["-HMan"]).splitlines() if l.strip()])
    return n


def _quiet(bed, timeout=5.0):
    """Waits (bounded) until no MPTCP socket of a previous run is left, so that its closing
    does not leak into the next run's counters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _mptcp_socks(bed) == 0:
            return True
        time.sleep(0.1)
    return False


def _iperf_once(bed, netns, kind, port, P):
    """One iperf3 run; returns a dict of iperf3's figure and the kernel's witnesses."""
    srv_cmd = bed.ns_cmd(bed.server, _wrap(kind, ["iperf3", "-s", "-1", "-p", port]))
    cli_cmd = bed.ns_cmd(bed.client, _wrap(kind, ["iperf3", "-c", netns.PATH_V4[1][1], "-p", port,
                                                  "-t", P["secs"], "-O", P["omit"], "-J"]))
    quiet = _quiet(bed)
    srv = subprocess.Popen(srv_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=_clean_env())
    try:
        bed.wait_listening("0.0.0.0", port)
        c0, s0 = netns.mib(bed.client), netns.mib(bed.server)
        tx0 = {p: _tx_bytes(bed.client, netns.CLIENT_DEV[p]) for p in (1, 2)}
        t0 = time.monotonic()
        r = subprocess.run(cli_cmd, capture_output=True, text=True, env=_clean_env(),
                           timeout=P["secs"] + P["omit"] + 30)
        wall = time.monotonic() - t0
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        tx1 = {p: _tx_bytes(bed.client, netns.CLIENT_DEV[p]) for p in (1, 2)}
        c1, s1 = netns.mib(bed.client), netns.mib(bed.server)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"iperf3 ({kind}) failed ({r.returncode}): {r.stderr[-1500:]} "
                           f"{r.stdout[-1500:]}")
    end = json.loads(r.stdout)["end"]
    cd, sd = netns.mib_delta(c0, c1), netns.mib_delta(s0, s1)
    return {
        "mbps": end["sum_received"]["bits_per_second"] / 1e6,
        "sent_mbps": end["sum_sent"]["bits_per_second"] / 1e6,
        "tx": {p: tx1[p] - tx0[p] for p in (1, 2)},
        "client_mib": cd,
        "server_mib": sd,
        "wall": wall,
        "quiet": quiet,
    }


def mptcp_bench(quick, note=None):
    """Section 6. Returns a dict (or {"skipped": reason})."""
    return _guard(_mptcp_bench, quick, note)


def _mptcp_bench(quick, note):
    why = _mptcp_skip_reason()
    if why:
        return {"skipped": why}
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    try:
        import netns  # tests/netns.py: the two-path bed of the MPTCP tests
    except Exception as e:  # (it imports tests/util.py, which imports pytest)
        return {"skipped": f"cannot import tests/netns.py: {e!r}"}
    P = mptcp_params(quick)
    kinds = ["tcp", "sockwrap"] + (["mptcpize"] if shutil.which("mptcpize") else [])
    runs = {k: [] for k in kinds}
    t_start = time.monotonic()
    with netns.MptcpBed(rate=P["rate"]) as bed:
        cc = subprocess.run(["ip", "netns", "exec", bed.client, "sysctl", "-n",
                             "net.ipv4.tcp_congestion_control"], capture_output=True, text=True,
                            timeout=10).stdout.strip() or "?"
        port = 5300
        for i in range(P["reps"]):
            order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]
            for kind in order:
                port += 1
                res = _iperf_once(bed, netns, kind, port, P)
                _log(f"  mptcp rep {i + 1}/{P['reps']} {kind}: {res['mbps']:.1f} Mbit/s, "
                     f"path tx MiB {res['tx'][1] / 2**20:.1f}/{res['tx'][2] / 2**20:.1f}")
                runs[kind].append(res)
    elapsed = time.monotonic() - t_start
    tail = f"-t {P['secs']}" + (f" -O {P['omit']}" if P["omit"] else "") + " -J"
    _note(note, "mptcp", f"bed: tests/netns.py MptcpBed(rate=\"{P['rate']}\"): namespaces "
                         f"swt-PID-N-c/-s, veth c1-s1 (10.231.1.0/24) and c2-s2 (10.231.2.0/24), "
                         f"tbf rate {P['rate']} burst 64kb latency 50ms on both ends of each path, "
                         "ip mptcp limits set subflow 2 add_addr_accepted 2, client endpoint "
                         "10.231.2.1 dev c2 subflow, server endpoint fd31:2::2 dev s2 signal")
    _note(note, "mptcp", f"(tcp) server ns: iperf3 -s -1 -p PORT; client ns: iperf3 -c 10.231.1.2 "
                         f"-p PORT {tail}")
    _note(note, "mptcp", f"(sockwrap) server ns: {CLI} run --mptcp -- iperf3 -s -1 -p PORT; client ns: "
                         f"{CLI} run --mptcp -- iperf3 -c 10.231.1.2 -p PORT {tail}")
    if "mptcpize" in kinds:
        _note(note, "mptcp", f"(mptcpize) server ns: mptcpize run iperf3 -s -1 -p PORT; client ns: "
                             f"mptcpize run iperf3 -c 10.231.1.2 -p PORT {tail}")
    _note(note, "mptcp", "witnesses: ip netns exec NS nstat -asz before/after each run (MPTcpExt* "
                         "deltas); ip -n CLIENT -s -j link show dev c1|c2 (tx bytes)")
    return {"P": P, "kinds": kinds, "runs": runs, "cc": cc, "elapsed": elapsed}


def _witness(kind, runs):
    """(ok, text) from the kernel's counters over all runs of a variant."""
    syn = [r["client_mib"].get("MPTcpExtMPCapableSYNTX", 0) for r in runs]
    synrx = [r["server_mib"].get("MPTcpExtMPCapableSYNRX", 0) for r in runs]
    joins = [r["server_mib"].get("MPTcpExtMPJoinAckRx", 0) for r in runs]
    share2 = [r["tx"][2] / max(r["tx"][1] + r["tx"][2], 1) for r in runs]
    if kind == "tcp":
        ok = all(s == 0 for s in syn) and all(s < 0.05 for s in share2)
    else:
        ok = (all(s >= 1 for s in syn) and all(s >= 1 for s in synrx) and all(j >= 1 for j in joins)
              and all(0.25 <= s <= 0.75 for s in share2))
    text = (f"MPCapableSYNTX {'/'.join(map(str, syn))}; MPCapableSYNRX {'/'.join(map(str, synrx))}; "
            f"MPJoinAckRx {'/'.join(map(str, joins))}")
    return ok, text


def report_mptcp(M, summary):
    """Markdown lines for section 6; appends goal rows to `summary`."""
    L = []
    w = L.append
    w("## 6. MPTCP: iperf3 over two shaped paths")
    w("")
    if not M or "skipped" in M:
        why = (M or {}).get("skipped", "not run")
        w(f"Not measured: {why}. No figures.")
        w("")
        summary.append((f"MPTCP (sockwrap --mptcp) ≥ {MPTCP_GOAL}x TCP on one path", False,
                        f"not measured: {why}"))
        return L
    P, runs = M["P"], M["runs"]
    med = {k: statistics.median(r["mbps"] for r in v) for k, v in runs.items()}
    base = med["tcp"]
    w(f"Two network namespaces made by the bench (tests/netns.py `MptcpBed`), joined by two veth "
      f"paths, each shaped with `tc qdisc add ... tbf rate {P['rate']} burst 64kb latency 50ms` on "
      f"both ends; MPTCP limits `subflow 2 add_addr_accepted 2`, a client `subflow` endpoint on "
      f"path 2. Unmodified iperf3 {_iperf_version()}, server (`-s -1`) and client wrapped the same "
      f"way, client → 10.231.1.2 (path 1), `-t {P['secs']}`"
      + (f" `-O {P['omit']}` (the first {P['omit']} s omitted)" if P["omit"] else "")
      + f"; {P['reps']} interleaved runs per variant (rotating order), "
      f"medians. Throughput = iperf3's `sum_received` (the receiver's count). Congestion "
      f"control: {M['cc']}. Section took {M['elapsed']:.0f} s.")
    w("")
    w("The *kernel* columns are the witnesses: MIB counter deltas of the run (`nstat`, client "
      "namespace: MPCapableSYNTX = MPTCP SYNs sent; server namespace: MPCapableSYNRX, "
      "MPJoinAckRx = second subflows joined; iperf3 opens two connections, control and data) "
      "and the bytes each client veth transmitted during the run (`ip -s link`; *wire bytes × "
      "TCP* = both paths' bytes over the TCP run's, medians).")
    w("")
    w("| variant | Mbit/s (median) | runs | × TCP 1 path | path 1 tx MiB | path 2 tx MiB | path 2 share | wire bytes × TCP | kernel (per run) | MPTCP on both paths |")
    w("|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    tcp_tx = max(statistics.median(r["tx"][1] + r["tx"][2] for r in runs["tcp"]), 1)
    names = {"tcp": "plain TCP, one path (no wrapper)",
             "sockwrap": "`sockwrap run --mptcp -- iperf3`",
             "mptcpize": "`mptcpize run iperf3`"}
    for k in M["kinds"]:
        rs = runs[k]
        tx1 = statistics.median(r["tx"][1] for r in rs) / 2**20
        tx2 = statistics.median(r["tx"][2] for r in rs) / 2**20
        share = statistics.median(r["tx"][2] / max(r["tx"][1] + r["tx"][2], 1) for r in rs)
        ok, text = _witness(k, rs)
        if k == "tcp":
            wit = "no MPTCP, path 2 idle: " + ("yes" if ok else "**NO**")
        else:
            wit = "yes" if ok else "**NO**"
        w(f"| {names[k]} | {med[k]:.1f} | {', '.join('%.1f' % r['mbps'] for r in rs)} | "
          f"{med[k] / base:.2f}x | {tx1:.1f} | {tx2:.1f} | {share:.0%} | "
          f"{statistics.median(r['tx'][1] + r['tx'][2] for r in rs) / tcp_tx:.2f}x | {text} | {wit} |")
    w("")
    ratio = med["sockwrap"] / base
    sw_ok, _ = _witness("sockwrap", runs["sockwrap"])
    ok = ratio >= MPTCP_GOAL and sw_ok
    summary.append((f"MPTCP (sockwrap --mptcp) ≥ {MPTCP_GOAL}x TCP on one path", ok,
                    f"{ratio:.2f}x ({med['sockwrap']:.1f} vs {base:.1f} Mbit/s); kernel: "
                    f"{'both paths carried data' if sw_ok else 'MPTCP NOT seen on both paths'}"))
    w(f"Goal sockwrap --mptcp ≥ {MPTCP_GOAL}x plain TCP on one path: {verdict(ok)} "
      f"({ratio:.2f}x; the ceiling with two equal paths is 2x).")
    if "mptcpize" in med:
        w(f"sockwrap --mptcp / mptcpize run: {med['sockwrap'] / med['mptcpize']:.2f}x "
          f"({med['sockwrap']:.1f} vs {med['mptcpize']:.1f} Mbit/s).")
    if not ok:
        w("")
        if not sw_ok:
            w("**Missed: the kernel did not see MPTCP on both paths** under sockwrap (see the "
              "counters above).")
        else:
            wire = (statistics.median(r["tx"][1] + r["tx"][2] for r in runs["sockwrap"]) /
                    max(statistics.median(r["tx"][1] for r in runs["tcp"]), 1))
            mz = (f"mptcpize on the same bed reached {med['mptcpize'] / base:.2f}x"
                  if "mptcpize" in med else "mptcpize not measured")
            w(f"**Missed**: the kernel shows MPTCP on both paths, but iperf3 got {ratio:.2f}x "
              f"one path while the two client veths transmitted {wire:.2f}x the bytes the TCP run "
              f"sent on its one path in the same time; {mz}. "
              + ("The paths were full (wire bytes ≥ 1.9x): the shortfall is wire bytes that did "
                 "not reach iperf3 as payload within its window (MPTCP's DSS option in every "
                 "segment, retransmissions, reinjection, data still queued at the receiver)."
                 if wire >= 1.9 else
                 "The paths were not both full: the scheduler left capacity unused."))
    w("")
    return L


def _iperf_version():
    try:
        r = subprocess.run(["iperf3", "--version"], capture_output=True, text=True, timeout=10)
        return r.stdout.split()[1]
    except Exception:
        return "?"


def verdict(ok):
    return "met" if ok else "**MISSED**"


# ---------------------------------------------------------------- 7. trace

def trace_params(quick):
    return {"n": 2000 if quick else 5000, "reps": 5 if quick else 7}


def trace_bench(quick, note=None):
    """Section 7. Returns a dict (or {"skipped": reason})."""
    return _guard(_trace_bench, quick, note)


def _trace_bench(quick, note):
    if not os.path.exists(CLI):
        return {"skipped": "target/release/sockwrap not built"}
    if not os.path.exists(CONNBENCH):
        return {"skipped": "bench/build/connbench not built"}
    P = trace_params(quick)
    n = P["n"]
    tmp = tempfile.mkdtemp(prefix="swtrace.", dir=BUILD)
    files = {"sockwrap trace": os.path.join(tmp, "trace.jsonl"),
             "sockwrap run --trace": os.path.join(tmp, "run.jsonl"),
             "strace": os.path.join(tmp, "strace.txt")}
    loop = [CONNBENCH, "loop", str(n)]
    variants = [
        ("none", loop),
        ("sockwrap trace", [CLI, "trace", "-o", files["sockwrap trace"], "--"] + loop),
        ("sockwrap run --trace", [CLI, "run", "--trace", files["sockwrap run --trace"], "--"] + loop),
    ]
    if shutil.which("strace"):
        variants.append(("strace", ["strace", "-f", "-e", "trace=network", "-o", files["strace"]] + loop))
    # The same variants again with the whole process tree pinned to one CPU: strace's cost
    # depends on whether tracer and tracee wake each other across CPUs.
    cpu = max(os.sched_getaffinity(0))
    variants = [(name, cmd, False) for name, cmd in variants] + \
               [(name + PIN, cmd, True) for name, cmd in variants]
    names = [v[0] for v in variants]
    wall = {k: [] for k in names}
    inner = {k: [] for k in names}
    size = {}
    t_start = time.monotonic()
    try:
        for i in range(P["reps"]):
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for name, cmd, pin in order:
                f = files.get(name.replace(PIN, ""))
                if f and os.path.exists(f):
                    os.unlink(f)  # `run --trace` appends; start each run empty
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(),
                                   timeout=300,
                                   preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if pin else None)
                t = time.perf_counter() - t0
                if r.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-1500:]}")
                out = r.stdout.split()
                if len(out) < 2 or out[0] != str(n):
                    raise RuntimeError(f"{name}: unexpected connbench output {r.stdout[-300:]!r}")
                wall[name].append(t)
                inner[name].append(float(out[1]))
                if f:
                    with open(f, "rb") as fh:
                        data = fh.read()
                    size[name] = (len(data), data.count(b"\n"))
                if name == "sockwrap trace":
                    size["summary"] = (len(r.stderr), r.stderr.count("\n"))
        # where the library's trace time goes: system calls per connection (strace -f -c,
        # outside the timed runs)
        calls = {}
        if shutil.which("strace"):
            for name, cmd, _ in variants:
                if name in ("none", "sockwrap run --trace"):
                    calls[name] = _syscall_counts(cmd, files.get(name), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t_start
    _note(note, "trace", f"(none) bench/build/connbench loop {n}")
    _note(note, "trace", f"target/release/sockwrap trace -o FILE -- bench/build/connbench loop {n}")
    _note(note, "trace", f"target/release/sockwrap run --trace FILE -- bench/build/connbench loop {n}")
    if "strace" in names:
        _note(note, "trace", f"strace -f -e trace=network -o FILE bench/build/connbench loop {n}")
    _note(note, "trace", f"each again pinned to CPU {cpu} (sched_setaffinity, as taskset -c {cpu} CMD)")
    _note(note, "trace", f"interleaved (rotating order), {P['reps']} runs each, medians; wall = "
                         "whole command from spawn to exit, inner = connbench's own ns/iteration")
    if calls:
        _note(note, "trace", f"system calls: strace -f -c -o FILE CMD, for (none) and (run --trace), "
                             "calls / iterations")
    return {"P": P, "names": names, "wall": wall, "inner": inner, "size": size, "calls": calls,
            "elapsed": elapsed, "cpu": cpu, "ncpu": len(os.sched_getaffinity(0)), "strace_version": _strace_version()}


def _syscall_counts(cmd, trace_file, tmp):
    """{syscall: calls} of one run of cmd under strace -f -c."""
    if trace_file and os.path.exists(trace_file):
        os.unlink(trace_file)
    out = os.path.join(tmp, "strace-c.txt")
    r = subprocess.run(["strace", "-f", "-c", "-o", out] + cmd, capture_output=True, text=True,
                       env=_clean_env(), timeout=300)
    if r.returncode != 0:
        return {}
    counts = {}
    with open(out) as f:
        for line in f:
            t = line.split()
            if len(t) >= 5 and t[3].isdigit() and t[-1] != "total":
                counts[t[-1]] = counts.get(t[-1], 0) + int(t[3])
    return counts


def _strace_version():
    try:
        r = subprocess.run(["strace", "-V"], capture_output=True, text=True, timeout=10)
        return r.stdout.split("\n")[0].split()[-1]
    except Exception:
        return "?"


def report_trace(T, summary):
    """Markdown lines for section 7."""
    L = []
    w = L.append
    w("## 7. Trace: cost on a connection-heavy run")
    w("")
    if not T or "skipped" in T:
        w(f"Not measured: {(T or {}).get('skipped', 'not run')}. No figures.")
        w("")
        return L
    P = T["P"]
    n = P["n"]
    mw = {k: statistics.median(v) for k, v in T["wall"].items()}
    mi = {k: statistics.median(v) for k, v in T["inner"].items()}
    w(f"`bench/build/connbench loop {n}`: one process, {n} iterations of socket, "
      f"setsockopt(SO_LINGER), connect, accept, close ×2 on 127.0.0.1 (one *connection* = one "
      f"iteration: a client socket and the socket accept returned). {P['reps']} interleaved runs "
      f"per variant (rotating order), medians. *Wall* = the whole command from spawn to exit "
      f"(start-up, `sockwrap trace`'s summary at exit, strace's attach); *per connection* = "
      f"connbench's own clock around the loop. Trace files on the same disk (bench/build/), "
      f"strace {T['strace_version']}. Section took {T['elapsed']:.0f} s.")
    w("")
    cpus = T.get("ncpu", "?")
    w(f"Each variant runs twice per round: as a user would run it (free to use all {cpus} CPUs), "
      f"and with the whole process tree pinned to CPU {T.get('cpu', '?')} (*1 CPU*); ratios are "
      "to the untraced run with the same placement.")
    w("")
    w("| variant | CPUs | wall ms | × untraced | per connection µs | × untraced | added µs / connection | trace file | lines / connection | bytes / connection |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    labels = {"none": "untraced",
              "sockwrap trace": "`sockwrap trace -o FILE --`",
              "sockwrap run --trace": "`sockwrap run --trace FILE --` (no summary)",
              "strace": "`strace -f -e trace=network -o FILE`"}
    for k in T["names"]:
        pinned = k.endswith(PIN)
        base = "none" + (PIN if pinned else "")
        sz = T["size"].get(k)
        ftxt = f"{sz[0] / 1024:,.0f} KiB, {sz[1]:,} lines" if sz else ""
        lpc = f"{sz[1] / n:.1f}" if sz else ""
        bpc = f"{sz[0] / n:,.0f}" if sz else ""
        w(f"| {labels[k.replace(PIN, '')]} | {'1 CPU' if pinned else 'all'} | {mw[k] * 1000:,.1f} | "
          f"{mw[k] / mw[base]:.2f}x | {mi[k] / 1000:,.1f} | {mi[k] / mi[base]:.2f}x | "
          f"{(mi[k] - mi[base]) / 1000:+,.1f} | {ftxt} | {lpc} | {bpc} |")
    w("")
    if "summary" in T["size"]:
        b, l = T["size"]["summary"]
        w(f"`sockwrap trace` also printed its summary on stderr: {l:,} lines ({b / 1024:,.0f} KiB), "
          f"one row per connection and listener.")
    c0, c1 = T.get("calls", {}).get("none"), T.get("calls", {}).get("sockwrap run --trace")
    if c0 and c1:
        extra = sorted(((c1.get(k, 0) - c0.get(k, 0)) / n, k) for k in c1)
        extra = [(v, k) for v, k in reversed(extra) if v >= 0.5]
        w(f"System calls per connection (`strace -f -c`, one run each): untraced "
          f"{sum(c0.values()) / n:.1f}, `sockwrap run --trace` {sum(c1.values()) / n:.1f}; the "
          "added ones: " + ", ".join(f"{k} {v:.1f}" for v, k in extra) + ". Each traced call "
          "costs a `write` of its line plus the system calls that gather its fields.")
    if "strace" in mi:
        sz_sw, sz_st = T["size"].get("sockwrap trace"), T["size"].get("strace")

        def cmp(sfx):
            sw, st, no = mi["sockwrap trace" + sfx], mi["strace" + sfx], mi["none" + sfx]
            return (f"adds {(sw - no) / max(st - no, 1):.0%} of what strace adds (a traced "
                    f"connection takes {st / sw:.1f}x less time than under strace)")
        w(f"Per connection, `sockwrap trace` {cmp('')}; pinned to one CPU it {cmp(PIN)}"
          + (f"; it writes {sz_sw[0] / max(sz_st[0], 1):.1f}x the bytes (JSON with decoded "
             "options, results, durations, MPTCP status)" if sz_sw and sz_st else "")
          + ". strace (without --seccomp-bpf) stops the process at every system call entry and "
          "exit and waits for the tracer; when tracer and tracee sit on different CPUs each stop "
          "is a cross-CPU wakeup, which is what the difference between the two placements shows "
          f"(strace per connection: {mi['strace'] / 1000:,.0f} µs on all CPUs, "
          f"{mi['strace' + PIN] / 1000:,.0f} µs on one; it varies with the machine's load). "
          "sockwrap writes one line per socket call from inside the process (per connection: "
          f"{mi['sockwrap trace'] / 1000:,.0f} µs on all CPUs, {mi['sockwrap trace' + PIN] / 1000:,.0f} "
          "µs on one). sockwrap also records close of inet sockets (not in strace's `network` "
          "class); the few lines of setup (the listener) are counted in the per-connection "
          "figures.")
    w("")
    return L
