#!/usr/bin/env python3
"""The whole-host start figure alone (bench/RESULTS.md section 1, "Whole host"), without
the full bench/run.sh: a 50-rule host policy that names no `true`, measured as run.sh does
(bench.host_start: compiled by `sockwrap enable --system --root`, put at
/etc/sockwrap/host.policy inside `unshare -m` with an overlay over /etc; startbench with
none, floor and the library, interleaved; callgrind; minor faults), then sw-nopolicy in a
run of its own for comparison. Needs root and an existing build (bench/run.sh builds).
Usage: sudo python3 bench/host_quick.py [ROUNDS]"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
tmp = tempfile.mkdtemp(prefix="hostq.", dir=bench.BUILD)
res = bench.host_start(rounds, bench.host_policies(tmp)["nomatch"], tmp, "nomatch")
st, name = res["start"], "sw-host-nomatch"
print(f"host nomatch: added {st[name][3]:.1f} µs, floor {st['floor'][3]:.1f} µs, "
      f"{st[name][3] / st['floor'][3]:.2f}x; callgrind {res['cg'].get(name)}, faults {res['faults']}")
r = bench.startbench(rounds, [("none", {}), ("floor", {"LD_PRELOAD": bench.FLOOR}),
                              ("sw-nopolicy", {"LD_PRELOAD": bench.LIB})])
print(f"sw-nopolicy: added {r['sw-nopolicy'][3]:.1f} µs, floor {r['floor'][3]:.1f} µs, "
      f"{r['sw-nopolicy'][3] / r['floor'][3]:.2f}x")
