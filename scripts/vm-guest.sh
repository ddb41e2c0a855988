#!/usr/bin/env bash
# vm-guest.sh OUTDIR: the half of scripts/vm-test.sh that runs INSIDE the VM (virtme-ng's
# --exec). Not for running by hand on a host.
#
# The guest sees the host's root read-only, so everything it reports goes into OUTDIR, the
# one directory shared read-write with the host (--rwdir): the host reads status, junit.xml
# and pytest.log from there after the VM is gone. With --exec, the guest's stdout reaches
# the host only mixed into the kernel log (and the exit code not at all when virtio-serial
# is missing, as with Debian's kernels), so files are the only channel we trust.
#
# OUTDIR/guest.env, written by the host, sets TREE, PY, HOST_PATH, SOCKWRAP_BIN,
# PYTEST_BOUND, PER_TEST_TIMEOUT, TIME_SCALE, NO_SKIP and the array PYTEST_ARGS.
set -uo pipefail
out=${1:?usage: vm-guest.sh OUTDIR}
status=$out/status
# shellcheck source=/dev/null
. "$out/guest.env"

# One key=value a line; the host greps these (it never sources what the guest wrote).
note() { printf '%s=%s\n' "$1" "$2" >>"$status"; }

note kernel "$(uname -r)"

# The cgroup layout the tests see: most users have cgroup2 alone at /sys/fs/cgroup, this
# project's host machines have v1 hierarchies beside a v2 tree at /sys/fs/cgroup/unified.
v2=$(awk '$3 == "cgroup2" { print $2 }' /proc/mounts | paste -sd, -)
v1=$(awk '$3 == "cgroup" { n++ } END { print n + 0 }' /proc/mounts)
if [ -n "$v2" ] && [ "$v1" = 0 ]; then
    layout="cgroup2 only at $v2"
elif [ -n "$v2" ]; then
    layout="hybrid: $v1 cgroup v1 hierarchies + cgroup2 at $v2"
elif [ "$v1" != 0 ]; then
    layout="cgroup v1 only ($v1 hierarchies)"
else
    layout="no cgroup mounted"
fi
note cgroups "$layout"

# virtme-ng links /lib/modules/RELEASE to the unpacked kernel package in the host's cache;
# without it no module loads (veth, nf_tables, sch_tbf ...) and tests fail in odd ways.
if [ -e "/lib/modules/$(uname -r)/modules.dep" ]; then
    note modules ok
else
    note modules "missing: /lib/modules/$(uname -r)/modules.dep is not visible in the guest"
fi

# Only loopback exists (no --network): the tests' traffic stays inside the VM.
ip link set lo up 2>/dev/null
if ip -br addr show lo 2>/dev/null | grep -q '127.0.0.1'; then
    note loopback up
else
    note loopback "down ($(ip -br addr show lo 2>&1))"
fi
# A host has some address besides loopback, and glibc counts on it: getaddrinfo with
# AI_ADDRCONFIG (getent ahosts, most programs) asks no DNS server at all for IPv4 names on
# a machine whose only IPv4 address is on lo. A dummy device (it drops whatever is sent
# to it) with one /32 of a documentation range gives the guest that address, and no route
# to anywhere else.
if ip link add swvm0 type dummy 2>/dev/null && ip addr add 198.51.100.1/32 dev swvm0 &&
    ip link set swvm0 up; then
    note extra_address "swvm0 198.51.100.1/32 (dummy)"
else
    note extra_address "none: cannot make a dummy device"
fi

export PATH=$HOST_PATH SOCKWRAP_BIN PYTHONDONTWRITEBYTECODE=1 SOCKWRAP_TIME_SCALE=$TIME_SCALE SOCKWRAP_VM=1
if [ -n "$NO_SKIP" ]; then
    export SOCKWRAP_NO_SKIP=$NO_SKIP
fi
cd "$TREE" || { note pytest_rc "cannot cd to $TREE"; note finished 1; exit 1; }

# virtme-ng-init, the guest's pid 1, reaps only the script it started: an orphan stays a
# zombie, and a test that waits for "reaped by init" waits for ever. So pytest runs under
# a child subreaper (prctl PR_SET_CHILD_SUBREAPER) that reaps every orphan of the tests
# and returns pytest's own exit status.
REAPER='
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
while True:
    p, status = os.wait()
    if p == pid:
        sys.exit(os.waitstatus_to_exitcode(status) % 256)
'

# The tree is read-only here: no .pytest_cache, no bytecode. pytest-timeout bounds each
# test, `timeout` the whole run, so the guest always gets to write its status before the
# host's own bound kills the VM.
start=$(date +%s)
timeout -k 10 "$PYTEST_BOUND" "$PY" -c "$REAPER" "$PY" -m pytest -p no:cacheprovider \
    --timeout="$PER_TEST_TIMEOUT" --junitxml="$out/junit.xml" \
    "${PYTEST_ARGS[@]}" >"$out/pytest.log" 2>&1
rc=$?
note pytest_rc "$rc"
note pytest_seconds "$(($(date +%s) - start))"
sync
note finished 1
sync
