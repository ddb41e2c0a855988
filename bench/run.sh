#!/usr/bin/env bash
# sockwrap benchmarks: bench/run.sh [--quick]
# Builds what it needs (release workspace, floor.so, C helpers in bench/build/), installs
# missing tools (valgrind, mptcpize's libmptcpwrap0) with apt-get when run as root, measures,
# prints the table and writes bench/RESULTS.md. Measuring takes ~3 min on 2 cores (--quick:
# ~2 min) plus the cargo build of the library if it is stale. --no-build measures the
# existing build; --full-callgrind also counts instructions at 10,000 rules (+6 min).
# Do not run two copies at once (a lock file refuses it).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
