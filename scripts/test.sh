#!/usr/bin/env bash
# The single test command: installs what the tests need (Debian, as root), builds,
# runs the Rust unit tests, a load smoke test, then the end-to-end suite in tests/.
# Idempotent; exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(tcpdump openssh-server openssh-client socat iperf3 nftables mptcpize strace curl iproute2 util-linux valgrind proxychains4 man-db dpkg-dev git make zsh musl-tools golang-go bpftool libc6-dev)
TOOLS=(tcpdump sshd ssh socat iperf3 nft mptcpize strace curl ss setpriv valgrind proxychains4 man dpkg-shlibdeps git make zsh musl-gcc go bpftool)

missing_tools() {
    local t
    for t in "${TOOLS[@]}"; do
        command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || echo "$t"
    done
}

missing=$(missing_tools | tr '\n' ' ')
if [ -n "$missing" ]; then
    scripts/apt-install.sh "test tools ($missing)" "${PKGS[@]}"
fi

# The build's own prerequisites (clang, libbpf-dev for crates/kernel), when run by hand.
scripts/ci-prereqs.sh

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import pytest' 2>/dev/null; then
    echo "== installing pytest for $("$PYTHON" -c 'import sys; print(sys.executable)')"
    "$PYTHON" -m pip install -q pytest 2>/dev/null \
        || "$PYTHON" -m pip install -q --break-system-packages pytest
fi

# `make deb` packs with cargo-deb (tests/test_deb.py). A debug build of it installs faster
# and is fast enough for a package of two files.
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "== installing cargo-deb (cargo install --locked --debug cargo-deb)"
    cargo install --locked --debug -q cargo-deb
fi

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

echo "== end-to-end tests"
export SOCKWRAP_BIN="$PWD/target/release/sockwrap"
exec "$PYTHON" -m pytest -v tests/ "$@"
