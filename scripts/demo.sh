#!/usr/bin/env bash
# See it work: curl against a local web server, once plain and once under
# `sockwrap run --dscp EF --keepalive 30,10,3`, with the packets as tcpdump sees them.
# Loopback only, bounded, cleans up after itself. Needs root (tcpdump).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SOCKWRAP_BIN:-}" ]; then
    cargo build --release --workspace -q
fi
SW="${SOCKWRAP_BIN:-$PWD/target/release/sockwrap}"
PORT=$(( 20000 + RANDOM % 10000 ))
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

echo "hello from sockwrap demo" >"$TMP/index.html"
(cd "$TMP" && exec timeout 60 python3 -m http.server --bind 127.0.0.1 "$PORT" >/dev/null 2>&1) &
PIDS+=($!)
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.1
done

capture() { # capture LABEL CMD...: run CMD while tcpdump watches the client's packets
    local label=$1; shift
    timeout 30 tcpdump -i lo -nn -v -l "tcp dst port $PORT" >"$TMP/$label.txt" 2>"$TMP/$label.err" &
    local td=$!
    for _ in $(seq 50); do grep -q "listening on" "$TMP/$label.err" && break; sleep 0.1; done
    "$@" >/dev/null
    sleep 0.3
    kill -INT "$td"; wait "$td" 2>/dev/null || true
    echo
    echo "### $label: $*"
    grep -E '^[0-9]' "$TMP/$label.txt" | sed -E 's/^([0-9:.]+) IP \((tos 0x[0-9a-f]+), ttl ([0-9]+).*/\1 \2 ttl \3/' \
        | paste - <(grep -E '^\s+127' "$TMP/$label.txt" | sed -E 's/^\s+//; s/, cksum.*//')
}

capture without-sockwrap curl -s "http://127.0.0.1:$PORT/"
capture with-sockwrap "$SW" run --dscp EF --keepalive=30,10,3 -- curl -s "http://127.0.0.1:$PORT/"

echo
echo "Every packet curl sent under sockwrap carries tos 0xb8 (DSCP EF), from the SYN on;"
echo "without it, tos 0x0. curl itself was not changed."
