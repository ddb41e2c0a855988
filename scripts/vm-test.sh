#!/usr/bin/env bash
# vm-test.sh: runs the end-to-end tests inside a VM booted with another kernel, so that the
# suite is proved on the kernels our users run, and with cgroup v2 mounted alone at
# /sys/fs/cgroup (this project's hosts have the hybrid layout).
#
#   scripts/vm-test.sh KERNEL [--full | PYTEST ARGS...]    one kernel
#   scripts/vm-test.sh --matrix [--full | PYTEST ARGS...]  each of SOCKWRAP_VM_KERNELS in
#                                                          turn, then one table
#
# KERNEL is 6.1 (Debian 12's default kernel), 6.12 (Debian 12's updates), or one Debian
# kernel: its release (6.1.0-57-amd64), its ABI (6.1.0-57, 6.12.118+deb12) or its package
# name (linux-image-6.1.0-57-amd64). The aliases are resolved through apt-cache, so a new
# point release is picked up by itself.
#
# What runs: by default the matrix selection (MATRIX_TESTS and MATRIX_K below: the kernel
# backend whole, and from the other suites the tests whose outcome depends on the kernel:
# 103 tests, 11m50s on 6.1 in a fresh-clone CI run under TCG on a 2-core machine; the
# containers' vm_only tests run only here); --full runs the seven suites whole (172 tests, about 40 minutes a
# kernel); PYTEST ARGS replace both (paths relative to the tree).
#
# How: Debian's kernel package is downloaded once and unpacked into a cache; virtme-ng boots
# its vmlinuz under qemu, with the host's root filesystem read-only as the guest's root
# (so the built tree, python3 and the test tools are the host's own) and links the cached
# modules at /lib/modules/RELEASE inside the guest only: nothing on the host changes.
# scripts/vm-guest.sh runs pytest inside and writes its results into a directory shared
# read-write with the host; this script reads them and prints a summary.
#
# Build first: cargo build --release --workspace. Installs (as root, when missing): what
# the tests need (scripts/setup.sh test: the guest runs the host's own tools), then
# qemu-system-x86, kmod, busybox-static (apt) and virtme-ng (pip).
#
# Environment:
#   SOCKWRAP_VM_CACHE    kernel cache (default ${XDG_CACHE_HOME:-~/.cache}/sockwrap-vm)
#   SOCKWRAP_VM_OUT      results, one directory per kernel (default TREE/target/vm-test)
#   SOCKWRAP_VM_KERNELS  the matrix (default "6.1 6.12")
#   SOCKWRAP_VM_CPUS, SOCKWRAP_VM_MEMORY   the guest's size (default 2, 3G)
#   SOCKWRAP_VM_TIMEOUT  seconds for one VM, boot to power-off (default 1800: twice a
#                        normal run, so only a hang reaches it)
#   SOCKWRAP_VM_TEST_TIMEOUT  seconds for one test (pytest-timeout; default 600)
#   SOCKWRAP_VM_TIME_SCALE    the tests' own waits are multiplied by this in the guest
#                        (SOCKWRAP_TIME_SCALE in tests/util.py; default 4: TCG runs programs
#                        about 8 times slower than the host)
#   SOCKWRAP_NO_SKIP     passed to the tests (1: a missing prerequisite fails the test)
# Exit status: 0 when every test passed; 1 when a test failed, the VM did not boot or did
# not report; 2 for a usage or set-up error.
set -euo pipefail
cd "$(dirname "$0")/.."
TREE=$PWD

FULL_TESTS=(tests/test_kernel_backend.py tests/test_actions.py tests/test_attach.py
    tests/test_attach_follow.py tests/test_locks.py tests/test_options.py tests/test_trace.py)
# The matrix selection: the same seven suites, filtered by name. Each term is a test (or
# group) whose outcome depends on the kernel; the rest of those suites exercises the
# library, which does the same on every kernel, and costs ~30 more minutes a kernel here.
MATRIX_TESTS=("${FULL_TESTS[@]}" tests/test_kernel_probes.py tests/test_mptcp_kernel.py
    tests/test_trace_kernel.py tests/test_systemd.py tests/test_containers.py)
MATRIX_K="test_kernel_backend"                          # cgroup BPF: loads, hooks, helpers
MATRIX_K+=" or follow"                                  # attach --follow (test_attach_follow.py): cgroup v2 moves
MATRIX_K+=" or pidfd or test_running_client_gets_ef"    # attach: pidfd_getfd
# delay: a connect parked, then made. (Not test_nobody_can_connect_to_a_parked_socket: its
# 1.2 s window is shorter than an `ss` start under TCG, so it fails here on every kernel.)
MATRIX_K+=" or test_delay_asyncio or test_delay_on_ipv6 or test_a_delayed_connect_across_a_veth"
MATRIX_K+=" or test_with_no_loopback_to_park_on"
# (Not test_delay_select_blocking_and_curl either: curl takes the POLLHUP/POLLERR of the
# unpark window for failure, and under TCG its poll lands there; README, delay.)
MATRIX_K+=" or test_kernel_probes"                      # what this kernel lacks, refused by name
MATRIX_K+=" or test_mptcp_kernel"                       # MPTCP from BPF, or its refusal (~5 min on 6.12)
MATRIX_K+=" or test_trace_kernel"                       # trace --kernel: ring buffer, sock_ops
MATRIX_K+=" or test_deny_curl"                          # deny: the connect never leaves
MATRIX_K+=" or test_locked_dscp"                        # locks: IP_TOS/IPV6_TCLASS
MATRIX_K+=" or test_dscp_seen_by_peer"                  # DSCP on v4, v6, v4-mapped
MATRIX_K+=" or test_connects_match_strace"              # trace against strace
# enable --kernel: systemd 252, PID 1 of a namespace, attaches the pinned programs to the
# unit's cgroup on pure cgroup v2 (and after a "reboot", the boot unit pins them again).
MATRIX_K+=" or test_real_systemd_attaches_the_pinned_programs"
MATRIX_K+=" or test_attach_cgroup"                      # a container's cgroup: pinned links
MATRIX_K+=" or test_podman_container or test_agent"    # podman containers, the agent (podman; CRI)

CACHE=${SOCKWRAP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sockwrap-vm}
OUT_ROOT=${SOCKWRAP_VM_OUT:-$TREE/target/vm-test}
KERNELS=${SOCKWRAP_VM_KERNELS:-6.1 6.12}
CPUS=${SOCKWRAP_VM_CPUS:-2}
MEMORY=${SOCKWRAP_VM_MEMORY:-3G}
VM_TIMEOUT=${SOCKWRAP_VM_TIMEOUT:-1800}
TEST_TIMEOUT=${SOCKWRAP_VM_TEST_TIMEOUT:-600}
TIME_SCALE=${SOCKWRAP_VM_TIME_SCALE:-4}
PYTHON=${PYTHON:-python3}

die() {
    echo "vm-test: $*" >&2
    exit 2
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# ----------------------------------------------------------------------------- set-up

# The guest mounts fresh tmpfs over these host directories (virtme-ng's init), so a file
# the guest must read (the tree, the kernel cache) cannot live under them.
guest_hidden() {
    case $1/ in
    /var/tmp/* | /var/cache/* | /var/log/* | /var/lib/apt/* | /var/lib/private/* | /run/* | /dev/shm/*) return 0 ;;
    esac
    return 1
}

install_prereqs() {
    # The guest runs the host's own test tools, python and pytest: the host needs them.
    timeout 1800 scripts/setup.sh test
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || need+=(kmod)
    # virtme-ng's initramfs is built around a static busybox.
    [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
    if [ ${#need[@]} -gt 0 ]; then
        echo "== installing the VM runner's packages: apt-get install ${need[*]}"
        apt_update_once
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
    fi
    if ! command -v vng >/dev/null; then
        echo "== installing virtme-ng (pip)"
        # Debian's own python3 refuses pip outside a venv (externally managed): then the
        # flag, as scripts/setup.sh does.
        timeout 600 "$PYTHON" -m pip install -q virtme-ng 2>/dev/null ||
            timeout 600 "$PYTHON" -m pip install -q --break-system-packages virtme-ng
        hash -r
    fi
    command -v vng >/dev/null || die "virtme-ng's vng is not on PATH after installing it"
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
}

check_tree() {
    local bin=$TREE/target/release/sockwrap lib=$TREE/target/release/libsockwrap.so
    if [ ! -x "$bin" ] || [ ! -f "$lib" ]; then
        die "the tree is not built ($bin or $lib missing): run 'cargo build --release --workspace' in $TREE first"
    fi
    guest_hidden "$TREE" && die "the tree $TREE is under a directory the guest cannot see (its own tmpfs there); use a checkout elsewhere"
    guest_hidden "$CACHE" && die "SOCKWRAP_VM_CACHE=$CACHE is under a directory the guest cannot see; the guest reads the kernel modules from it"
    guest_hidden "$OUT_ROOT" && die "SOCKWRAP_VM_OUT=$OUT_ROOT is under a directory the guest cannot see"
    return 0
}

# apt-cache needs package lists; a fresh machine has none until the first apt-get update.
apt_update_once() {
    [ -n "${APT_UPDATED:-}" ] && return 0
    APT_UPDATED=1
    echo "== apt-get update (to resolve kernel package names)"
    timeout 600 apt-get update -qq || echo "vm-test: warning: apt-get update failed" >&2
}

# The package name for KERNEL (see the header).
resolve_package() {
    local k=$1 meta want pkg
    case $k in
    6.1) meta=linux-image-amd64 want=linux-image-6.1. ;;  # Debian 12's default kernel
    6.12) meta=linux-image-6.12-amd64 want=linux-image-6.12. ;;  # Debian 12's updates
    linux-image-*) echo "$k" && return 0 ;;
    *-amd64) echo "linux-image-$k" && return 0 ;;
    [0-9]*) echo "linux-image-$k-amd64" && return 0 ;;
    *) die "unknown kernel '$k': give 6.1, 6.12, a release such as 6.1.0-57-amd64 or a package name" ;;
    esac
    pkg=$(timeout 60 apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }') || true
    if [ -z "$pkg" ]; then
        apt_update_once >&2
        pkg=$(timeout 60 apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }') || true
    fi
    [ -n "$pkg" ] || die "cannot resolve $k: 'apt-cache depends $meta' names no linux-image package"
    # On a newer Debian the meta package moves on to another series: refuse, do not guess.
    case $pkg in "$want"*) ;; *) die "$meta depends on $pkg, not a $k kernel; give the package name instead" ;; esac
    echo "$pkg"
}

# Downloads and unpacks PACKAGE into the cache once; prints the unpacked tree's path. A
# complete tree has a .complete stamp, so a download cut off half-way is redone.
fetch_kernel() {
    local pkg=$1 dir=$CACHE/$1 tmp deb
    if [ ! -e "$dir/.complete" ]; then
        mkdir -p "$CACHE"
        tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
        echo "== downloading $pkg into $CACHE" >&2
        # APT::Sandbox::User=root: apt's _apt user cannot write into root's cache directory.
        if ! (cd "$tmp" && timeout 600 apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2); then
            apt_update_once >&2
            (cd "$tmp" && timeout 600 apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2) ||
                { rm -rf "$tmp"; die "cannot download $pkg (apt-get download)"; }
        fi
        deb=$(ls "$tmp"/*.deb)
        mkdir "$tmp/root"
        timeout 300 dpkg -x "$deb" "$tmp/root" || { rm -rf "$tmp"; die "cannot unpack $deb"; }
        local rel
        rel=$(release_of "$tmp/root") || { rm -rf "$tmp"; die "$pkg holds no lib/modules/RELEASE"; }
        # Debian makes modules.dep in the package's postinst; without it nothing loads.
        timeout 300 depmod -a -b "$tmp/root" "$rel" || { rm -rf "$tmp"; die "depmod failed for $rel"; }
        rm -rf "$dir"
        mv "$tmp/root" "$dir"
        rm -rf "$tmp"
        touch "$dir/.complete"
    fi
    echo "$dir"
}

release_of() {
    local d
    for d in "$1"/lib/modules/*/; do
        [ -d "$d/kernel" ] && basename "$d" && return 0
    done
    return 1
}

# ----------------------------------------------------------------------------- one VM

fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# key=value from the guest's status file (never sourced: the guest wrote it).
# A guest that never ran leaves no file: then empty, and the caller says so.
status_of() {
    [ -f "$2" ] || return 0
    sed -n "s/^$1=//p" "$2" | tail -n 1
}

# Counts from junit.xml: "tests passed failed skipped", then one line per failed test and
# a line "by-file: ..." with seconds per test file (the figures for choosing a selection).
junit_summary() {
    "$PYTHON" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

root = ET.parse(sys.argv[1]).getroot()
tests = passed = failed = skipped = 0
names, per_file = [], defaultdict(float)
for case in root.iter("testcase"):
    tests += 1
    # classname is module[.Class] relative to the rootdir, tests/ (where pytest.ini is).
    parts = case.get("classname", "").split(".")
    file = parts[0] + ".py"
    per_file[file] += float(case.get("time", 0) or 0)
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
        names.append("::".join(["tests/" + file, *parts[1:], case.get("name", "")]))
    elif case.find("skipped") is not None:
        skipped += 1
    else:
        passed += 1
print(tests, passed, failed, skipped)
print("by-file: " + ", ".join(f"{f} {s:.0f}s" for f, s in sorted(per_file.items())))
for n in names:
    print(n)
EOF
}

# An outer bound (CI's `timeout`) or ^C stops this script, not the VM: the inner
# `timeout` runs in a process group of its own. Passing the signal on to it stops qemu.
VM_PID=""
stop_vm() {
    [ -n "$VM_PID" ] && kill -TERM "$VM_PID" 2>/dev/null
    VM_PID=""
}
trap 'stop_vm; exit 143' TERM
trap 'stop_vm; exit 130' INT

ROWS=()  # one table row per kernel, for --matrix
TOTAL_PASSED=0 TOTAL_FAILED=0 TOTAL_SKIPPED=0

# Boots KERNEL, runs pytest in it, prints the summary. Returns 0 only when every test
# passed; 1 when a test failed or the VM did not boot or report.
run_kernel() {
    local k=$1 pkg dir rel out start took vm_rc=0 vng_pid tail_pid
    shift
    local args=("$@")
    if [ ${#args[@]} = 0 ]; then
        args=("${MATRIX_TESTS[@]}" -k "$MATRIX_K")
    elif [ "${args[*]}" = --full ]; then
        args=("${FULL_TESTS[@]}")
    fi
    pkg=$(resolve_package "$k")
    dir=$(fetch_kernel "$pkg")
    rel=$(release_of "$dir") || die "$dir holds no lib/modules/RELEASE"
    out=$OUT_ROOT/$rel
    rm -rf "$out" "$out.crash"
    mkdir -p "$out"

    # What the guest needs to know, for scripts/vm-guest.sh. PATH is the host's: the guest's
    # root is the host's, and the interpreter must be the one that has pytest.
    local py
    py=$("$PYTHON" -c 'import sys; print(sys.executable)')
    local PYTEST_ARGS=("${args[@]}")
    {
        printf 'TREE=%q\n' "$TREE"
        printf 'PY=%q\n' "$py"
        printf 'HOST_PATH=%q\n' "$PATH"
        printf 'SOCKWRAP_BIN=%q\n' "$TREE/target/release/sockwrap"
        printf 'NO_SKIP=%q\n' "${SOCKWRAP_NO_SKIP-}"
        # Leave the guest two minutes of its bound to boot, report and power off.
        printf 'PYTEST_BOUND=%q\n' "$((VM_TIMEOUT > 300 ? VM_TIMEOUT - 120 : VM_TIMEOUT / 2))"
        printf 'PER_TEST_TIMEOUT=%q\n' "$TEST_TIMEOUT"
        printf 'TIME_SCALE=%q\n' "$TIME_SCALE"
        declare -p PYTEST_ARGS
    } >"$out/guest.env"

    echo "== vm-test: $pkg (release $rel), ${CPUS} vCPUs, $MEMORY, TCG, bound ${VM_TIMEOUT}s"
    echo "   pytest$(printf ' %q' "${args[@]}")"
    # A guest kernel that crashes (an Oops or panic in console.log before the guest reported
    # to the end) is booted once more, and said: under TCG, with two vCPU threads on a busy
    # host, the guest's own live text patching (static keys flipped by cgroup and BPF
    # attach/detach, int3-based) has been seen to trap once ("Oops: int3" in
    # __alloc_pages, 6.12, in a fresh-clone CI run that had passed the same tests before).
    # A crash that comes back the second time counts as the failure it is.
    local attempt crash="" crashed=""
    for attempt in 1 2; do
        vm_rc=0
        # One VM at a time on this machine (2 cores shared with builds): a second runner waits,
        # and its wall time starts when its own VM does.
        start=$(date +%s)
        exec 9>"$CACHE/.vm.lock"
        if ! timeout "$VM_TIMEOUT" flock 9; then
            die "another vm-test held $CACHE/.vm.lock for ${VM_TIMEOUT}s"
        fi
        if [ $(($(date +%s) - start)) -gt 1 ]; then
            echo "   (waited $(fmt_time $(($(date +%s) - start))) for another vm-test's VM)"
        fi
        start=$(date +%s)
        # TCG (--disable-kvm): on these machines /dev/kvm opens but guests hang after the
        # kernel is decompressed. --verbose puts the kernel log into console.log, the only
        # trace of a guest that panics or hangs. timeout signals vng's whole process group
        # (qemu included), and SIGKILLs it 30 s later if it lingers. 9>&-: only this script
        # holds the lock, not a qemu that might outlive it.
        timeout -k 30 "$VM_TIMEOUT" vng --run "$dir/boot/vmlinuz-$rel" --disable-kvm \
            --cpus "$CPUS" --memory "$MEMORY" --rwdir "$out" --verbose \
            --exec "bash $(printf %q "$TREE/scripts/vm-guest.sh") $(printf %q "$out")" \
            </dev/null >"$out/console.log" 2>&1 9>&- &
        vng_pid=$!
        VM_PID=$vng_pid
        # The shared directory is live: show the tests' progress as it is written.
        touch "$out/pytest.log"
        tail -n +1 -F --pid="$vng_pid" "$out/pytest.log" 2>/dev/null 9>&- &
        tail_pid=$!
        wait "$vng_pid" || vm_rc=$?
        VM_PID=""
        wait "$tail_pid" 2>/dev/null || true
        flock -u 9
        took=$(($(date +%s) - start))

        crash=$(grep -a -m1 -oE '(Oops: [^[]*|Kernel panic - not syncing: .*)' "$out/console.log" || true)
        if [ "$attempt" = 1 ] && [ -n "$crash" ] && [ "$(status_of finished "$out/status")" != 1 ]; then
            rm -rf "$out.crash"
            mkdir -p "$out.crash"
            mv "$out"/* "$out.crash"/
            cp "$out.crash/guest.env" "$out/"
            crashed="the guest kernel crashed once ($crash; kept in $out.crash), booted again"
            echo "== vm-test: $rel: the guest kernel crashed before the tests ended: $crash" >&2
            echo "   its console.log and results are kept in $out.crash; booting $rel once more" >&2
            continue
        fi
        break
    done

    local status=$out/status kernel cgroups pytest_rc problem=""
    kernel=$(status_of kernel "$status")
    cgroups=$(status_of cgroups "$status")
    pytest_rc=$(status_of pytest_rc "$status")
    if [ "$vm_rc" = 124 ] || [ "$vm_rc" = 137 ]; then
        problem="the VM did not finish within ${VM_TIMEOUT}s and was killed"
    fi
    if [ -z "$kernel" ]; then
        problem="${problem:+$problem; }the VM did not boot or its guest script never ran (no status; see $out/console.log)"
    elif [ "$(status_of finished "$status")" != 1 ]; then
        problem="${problem:+$problem; }the guest did not report to the end (status incomplete)"
    fi
    [ "$pytest_rc" = 124 ] && problem="${problem:+$problem; }pytest ran past its bound and was killed"
    local modules loopback
    modules=$(status_of modules "$status")
    loopback=$(status_of loopback "$status")
    [ -n "$modules" ] && [ "$modules" != ok ] && problem="${problem:+$problem; }modules $modules"
    [ -n "$loopback" ] && [ "$loopback" != up ] && problem="${problem:+$problem; }loopback $loopback"

    local counts="" tests=0 passed=0 failed=0 skipped=0 byfile="" failures=""
    if [ -s "$out/junit.xml" ]; then
        counts=$(junit_summary "$out/junit.xml") || counts=""
    fi
    if [ -n "$counts" ]; then
        read -r tests passed failed skipped <<<"$(sed -n 1p <<<"$counts")"
        byfile=$(sed -n '2s/^by-file: //p' <<<"$counts")
        failures=$(sed -n '3,$p' <<<"$counts")
    else
        problem="${problem:+$problem; }NO RESULTS: $out/junit.xml is missing or unreadable"
    fi
    if [ -n "$counts" ] && [ "$tests" = 0 ]; then
        problem="${problem:+$problem; }pytest ran no test"
    fi
    if [ -n "$counts" ] && [ "$failed" = 0 ] && [ -n "$pytest_rc" ] && [ "$pytest_rc" != 0 ]; then
        problem="${problem:+$problem; }pytest exited $pytest_rc"
    fi

    echo
    echo "== vm-test summary: $pkg"
    echo "kernel:    ${kernel:-(no report)}"
    echo "cgroups:   ${cgroups:-(no report)}"
    echo "tests:     $tests run, $passed passed, $failed failed, $skipped skipped"
    [ -n "$byfile" ] && echo "per file:  $byfile"
    if [ -n "$failures" ]; then
        echo "failed:"
        while IFS= read -r f; do echo "    $f"; done <<<"$failures"
    fi
    echo "wall time: $(fmt_time "$took") (boot, tests, power-off)"
    [ -n "$crashed" ] && echo "NOTE:      $crashed"
    echo "results:   $out (junit.xml, pytest.log, console.log)"
    if [ -n "$problem" ]; then
        echo "PROBLEM:   $problem" >&2
        if [ ! -s "$out/junit.xml" ]; then
            echo "---- last lines of $out/console.log" >&2
            tail -n 25 "$out/console.log" >&2 || true
        fi
    fi
    # The plain closing line CI reads; a VM that did not report counts as one failure, so
    # that line cannot read all-green.
    local failed_or_lost=$((failed + (${#problem} > 0 && failed == 0 ? 1 : 0)))
    echo "vm-test $rel: $passed passed, $failed_or_lost failed, $skipped skipped"

    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed_or_lost))
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + skipped))
    ROWS+=("$(printf '%-24s %-34s %5s %6s %6s %7s  %s' "$rel" "${cgroups:-?}" "$tests" "$passed" \
        "$failed" "$skipped" "$(fmt_time "$took")${problem:+  ($problem)}${crashed:+  ($crashed)}")")
    [ -z "$problem" ] && [ "$failed" = 0 ]
}

# ----------------------------------------------------------------------------- main

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts (Debian's amd64 kernels under qemu-system-x86_64)"
[ "$(id -u)" = 0 ] || die "run as root: the tests inside need root, and the guest runs as the caller"
check_tree
install_prereqs
mkdir -p "$CACHE" "$OUT_ROOT"

if [ "$1" = --matrix ]; then
    shift
    rc=0
    for k in $KERNELS; do
        run_kernel "$k" "$@" || rc=1
        echo
    done
    echo "== kernel matrix (${CPUS} vCPUs each, TCG, one VM after the other)"
    printf '%-24s %-34s %5s %6s %6s %7s  %s\n' kernel cgroups tests passed failed skipped "wall time"
    printf '%s\n' "${ROWS[@]}"
    # The plain closing line CI reads.
    echo "kernel matrix: $TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
    exit "$rc"
fi

k=$1
shift
run_kernel "$k" "$@"
