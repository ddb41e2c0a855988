#!/usr/bin/env bash
# The single test command: installs what the tests need (scripts/setup.sh test), builds,
# runs the Rust unit tests, a load smoke test, builds the user guide (docs/guide), then the
# end-to-end suite in tests/.
# Idempotent; exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything the build and the tests need (apt, pip, cargo-deb): one script knows it.
scripts/setup.sh test
PYTHON=${PYTHON:-python3}

echo "== cargo build --release --workspace"
cargo build --release --workspace
echo "== cargo test --workspace (unit tests, dev profile: fat LTO makes test builds slow)"
cargo test --workspace

echo "== the preload library is core + alloc only (no std: see crates/preload/src/lib.rs)"
# A dependency that enables std somewhere in the workspace (feature unification) would
# bring std's start-up work back into every process under sockwrap.
if nm -C target/release/libsockwrap.so | grep -q ' std::'; then
    echo "libsockwrap.so links std; these symbols:" >&2
    nm -C target/release/libsockwrap.so | grep ' std::' | head >&2
    exit 1
fi

echo "== smoke: the preload library loads into a plain program"
LD_PRELOAD="$PWD/target/release/libsockwrap.so" /bin/true
LD_PRELOAD="$PWD/target/release/libsockwrap.so" SOCKWRAP_DSCP=EF /bin/true
out=$(target/release/sockwrap run --dscp EF -- sh -c 'echo ok')
[ "$out" = ok ] || { echo "smoke: sockwrap run failed: $out" >&2; exit 1; }

echo "== the user guide: mdbook build docs/guide (about 0.2 s; links checked by tests/test_docs.py)"
mdbook build docs/guide

echo "== end-to-end tests (those marked vm_only run in the kernel-matrix VMs instead: scripts/vm-test.sh, .ci/run)"
export SOCKWRAP_BIN="$PWD/target/release/sockwrap"
exec "$PYTHON" -m pytest -v --durations=15 -m "not vm_only" tests/ "$@"
