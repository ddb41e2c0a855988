#!/usr/bin/env bash
# What the BUILD needs beyond Rust, installed before anything compiles (.ci/run runs clippy
# before test.sh): clang and libbpf's headers for the kernel backend's BPF programs
# (crates/kernel/build.rs). Idempotent and quiet; as root with apt-get only, otherwise it
# says what is missing and the build says the rest.
set -euo pipefail
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -f /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing build prerequisites: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "warning: missing build prerequisites: ${need[*]} (not root or no apt-get)" >&2
fi
