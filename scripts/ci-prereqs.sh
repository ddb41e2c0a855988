#!/usr/bin/env bash
# What the BUILD needs beyond Rust, installed before anything compiles (.ci/run runs clippy
# before test.sh): clang and libbpf's headers for the kernel backend's BPF programs
# (crates/kernel/build.rs). Idempotent and quiet; as root with apt-get only, otherwise it
# says what is missing and the build says the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -f /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)
[ ${#need[@]} -eq 0 ] && exit 0
scripts/apt-install.sh "build prerequisites" "${need[@]}"
