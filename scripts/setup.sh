#!/usr/bin/env bash
# setup.sh [build|demo|docs|test]: installs what sockwrap needs on a Debian machine, as root.
# The one place that knows it: the README's two commands (scripts/demo.sh, scripts/test.sh)
# and CI (.ci/run) all call it. Idempotent; quiet when everything is there already.
#
#   build  clang, libbpf's headers, the kernel's uapi headers (crates/kernel compiles its
#          BPF programs into the sockwrap binary)
#   demo   build + curl and tcpdump (the program the demo runs, and the wire witness)
#   docs   mdbook (cargo install: Debian has no package), which builds the user guide
#          (docs/guide, `make docs`)
#   test   demo + docs + the programs and tools the end-to-end tests run, pytest and
#          pytest-timeout, cargo-deb (the default)
#
# A fresh machine of this project's kind has none of clang, libbpf-dev or tcpdump
# (../.library/env/packages/installed-rust.txt). Not root, or no apt-get: nothing is
# installed; what is missing is said in one line and the exit status is 1.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-test}
case "$target" in build | demo | docs | test) ;; *) echo "setup.sh: unknown target '$target' (build, demo, docs or test)" >&2; exit 2 ;; esac

# Each need: "what to check|Debian package". A check is a command on PATH (or in
# /usr/sbin), or a file when it starts with /.
needs=()
if [ "$target" != docs ]; then
    needs+=(
        "clang|clang"
        "/usr/include/bpf/bpf_helpers.h|libbpf-dev"
        "/usr/include/linux/bpf.h|linux-libc-dev"
    )
fi
if [ "$target" = demo ] || [ "$target" = test ]; then
    needs+=("curl|curl" "tcpdump|tcpdump")
fi
if [ "$target" = test ]; then
    needs+=(
        "sshd|openssh-server" "ssh|openssh-client" "socat|socat" "iperf3|iperf3" "nft|nftables"
        "mptcpize|mptcpize" "strace|strace" "ss|iproute2" "setpriv|util-linux"
        "valgrind|valgrind" "proxychains4|proxychains4" "man|man-db" "dpkg-shlibdeps|dpkg-dev"
        "git|git" "make|make" "zsh|zsh" "musl-gcc|musl-tools" "go|golang-go" "bpftool|bpftool"
        "/usr/include/stdio.h|libc6-dev" "/usr/include/liburing.h|liburing-dev"
        # Containers for the kernel-matrix VMs (tests/test_containers.py; the guest runs
        # the host's own podman).
        "podman|podman" "crun|crun"
    )
fi

have() {
    case "$1" in
        /*) [ -e "$1" ] ;;
        # -x: bash's `command -v` also names a file it found but cannot execute.
        *) [ -x "$(command -v "$1")" ] || [ -x "/usr/sbin/$1" ] ;;
    esac
}

missing_pkgs() {
    local n
    for n in "${needs[@]}"; do have "${n%%|*}" || echo "${n#*|}"; done
}

root=0
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && root=1

pkgs=$(missing_pkgs | sort -u | tr '\n' ' ')
if [ -n "$pkgs" ]; then
    if [ "$root" = 1 ]; then
        echo "== setup ($target): apt-get install $pkgs"
        export DEBIAN_FRONTEND=noninteractive
        log=${TMPDIR:-/tmp}/sockwrap-setup-apt.log
        # shellcheck disable=SC2086 # one word per package
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs; } >"$log" 2>&1; then
            echo "setup.sh: apt-get install $pkgs failed (log: $log): $(tail -n 1 "$log")" >&2
            exit 1
        fi
        pkgs=$(missing_pkgs | sort -u | tr '\n' ' ')
        [ -z "$pkgs" ] || { echo "setup.sh: still missing after apt-get install: $pkgs" >&2; exit 1; }
    else
        echo "setup.sh: missing for the $target: $pkgs(not root, or no apt-get: install them with apt-get install $pkgs)" >&2
        exit 1
    fi
fi

# The user guide's builder. mdbook has no Debian package; this version builds with the
# Rust of these machines (mdbook 0.5.4 needs 1.88) and takes about 3 minutes to compile
# once (2 cores). Only its search feature: no `serve`/`watch` (a web server, a file watcher).
MDBOOK_VERSION=0.5.4
if [ "$target" = docs ] || [ "$target" = test ]; then
    if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
        echo "== setup ($target): cargo install --locked mdbook $MDBOOK_VERSION"
        cargo install --locked -q mdbook --version "$MDBOOK_VERSION" --no-default-features --features search
    fi
fi

[ "$target" = test ] || exit 0

PYTHON=${PYTHON:-python3}
# kubernetes-validate: the Kubernetes API schemas, offline, for docs/kubernetes/
# (tests/test_kubernetes.py); pinned to the schema version the test names.
if ! "$PYTHON" -c 'import pytest, pytest_timeout, kubernetes_validate, yaml' 2>/dev/null; then
    pip_pkgs="pytest pytest-timeout kubernetes-validate==1.31.0"
    echo "== setup (test): pip install $pip_pkgs for $("$PYTHON" -c 'import sys; print(sys.executable)')"
    # Debian's own python3 refuses pip installs outside a venv unless told otherwise.
    # shellcheck disable=SC2086 # one word per package
    "$PYTHON" -m pip install -q $pip_pkgs 2>/dev/null \
        || "$PYTHON" -m pip install -q --break-system-packages $pip_pkgs
fi

# `make deb` packs with cargo-deb (tests/test_deb.py). A debug build of it installs faster
# (a first install compiles for minutes) and is fast enough for a package of two files.
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "== setup (test): cargo install --locked --debug cargo-deb"
    cargo install --locked --debug -q cargo-deb
fi
