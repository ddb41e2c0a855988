#!/usr/bin/env bash
# sockwrap benchmarks: bench/run.sh [--quick]
# Builds what it needs (release workspace, floor.so, C helpers in bench/build/), installs
# missing tools (valgrind, mptcpize's libmptcpwrap0) with apt-get when run as root, measures,
# prints the table and writes bench/RESULTS.md. Full run: ~4 min on 2 cores; --quick: ~1.5 min.
# Do not run two copies at once (a lock file refuses it).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
