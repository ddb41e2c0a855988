#!/usr/bin/env bash
# See it work: curl fetches a page from a local server twice, once plain and once under
# `sockwrap run --dscp EF --keepalive 30,10,3`. Two witnesses that are not sockwrap say what
# curl's packets carried:
#   - the server itself reads the ToS byte of each connection (IP_RECVTOS); needs nothing
#     but python3, works without root;
#   - tcpdump on the wire, when it is there or can be installed (root + apt-get); without
#     root tcpdump cannot capture, and the demo says so and goes on with the server's view.
# Loopback only, bounded in time, cleans up after itself. Exits 0 only when the witnesses
# saw tos 0x0 without sockwrap and tos 0xb8 (DSCP EF) with it.
#
# Knobs: SOCKWRAP_BIN=PATH uses that sockwrap instead of building one;
#        DEMO_WITNESS=auto|server|tcpdump (auto: tcpdump too when possible).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

die() { echo "demo: $*" >&2; exit 1; }
note() { echo "demo: $*"; }

WITNESS=${DEMO_WITNESS:-auto}
case "$WITNESS" in auto | server | tcpdump) ;; *) die "DEMO_WITNESS=$WITNESS: expected auto, server or tcpdump" ;; esac
command -v python3 >/dev/null || die "python3 is missing (it runs the local server): apt-get install python3"

IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1
if [ "$IS_ROOT" = 1 ] && command -v apt-get >/dev/null; then
    # As root: what the build and the demo need (clang, libbpf-dev, curl, tcpdump), from the
    # same script the tests and CI use. A fresh machine has none of them.
    scripts/setup.sh demo || die "could not install what the demo needs (scripts/setup.sh demo, above)"
fi
command -v curl >/dev/null || die "curl is missing: apt-get install curl (or run the demo as root: it installs it)"

USE_TCPDUMP=0
if [ "$WITNESS" != server ]; then
    if [ "$IS_ROOT" != 1 ]; then
        [ "$WITNESS" = tcpdump ] && die "tcpdump needs root to capture packets: run the demo as root, or with DEMO_WITNESS=server"
        note "not root: tcpdump cannot capture here; the server's own view (IP_RECVTOS) is the witness"
    elif command -v tcpdump >/dev/null; then
        USE_TCPDUMP=1
    else
        [ "$WITNESS" = tcpdump ] && die "tcpdump is missing and could not be installed (scripts/setup.sh demo)"
        note "tcpdump is missing; the server's own view (IP_RECVTOS) is the witness"
    fi
fi

if [ -z "${SOCKWRAP_BIN:-}" ]; then
    command -v cargo >/dev/null || die "cargo is missing: install Rust (https://rustup.rs), or set SOCKWRAP_BIN to a built sockwrap"
    # Not root: nothing was installed; the build's prerequisites must be there already.
    need=$(scripts/setup.sh build 2>&1) || die "${need#setup.sh: }"
    note "building (cargo build --release; the first build takes a few minutes)"
    cargo build --release --workspace -q || die "cargo build --release failed (its errors are above)"
fi
SW="${SOCKWRAP_BIN:-$PWD/target/release/sockwrap}"
[ -x "$SW" ] || die "no sockwrap program at $SW"

TMP=$(mktemp -d) || die "mktemp failed"
SERVER_PID=
TCPDUMP_PID=
cleanup() {
    for p in "$TCPDUMP_PID" "$SERVER_PID"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server: answers each HTTP request and writes one line "tos 0x.." per connection, read
# from the connection's IP_PKTOPTIONS (the ToS the kernel recorded when the handshake ended).
cat >"$TMP/server.py" <<'EOF'
import socket, struct, sys
IP_PKTOPTIONS = 9
port, log = int(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
try:
    s.bind(("127.0.0.1", port))
except OSError as e:
    print(f"bind 127.0.0.1:{port}: {e.strerror}", flush=True)
    sys.exit(1)
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    c.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            d = c.recv(4096)
            if not d:
                break
            data += d
        tos, buf, off = None, c.getsockopt(socket.IPPROTO_IP, IP_PKTOPTIONS, 512), 0
        while off + 16 <= len(buf):
            ln, level, typ = struct.unpack_from("=Qii", buf, off)
            if ln < 16:
                break
            if level == socket.IPPROTO_IP and typ == socket.IP_TOS:
                tos = buf[off + 16]
            off += (ln + 7) & ~7
        log.write("tos none\n" if tos is None else f"tos {tos:#x}\n")
        body = b"hello from sockwrap demo\n"
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    c.close()
EOF

PORT=
for _ in 1 2 3 4 5; do
    p=$((20000 + RANDOM % 10000))
    : >"$TMP/server.out"
    timeout 120 python3 "$TMP/server.py" "$p" "$TMP/seen.txt" >"$TMP/server.out" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 50); do
        grep -q . "$TMP/server.out" && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q ready "$TMP/server.out"; then PORT=$p; break; fi
    wait "$SERVER_PID" 2>/dev/null; SERVER_PID=
done
[ -n "$PORT" ] || die "the local server could not start: $(head -n1 "$TMP/server.out")"

URL="http://127.0.0.1:$PORT/"
: >"$TMP/seen.txt"

# show LABEL CMD...: run CMD (tcpdump watching when it can) and print what the witnesses saw.
show() {
    local label=$1; shift
    local before; before=$(wc -l <"$TMP/seen.txt")
    if [ "$USE_TCPDUMP" = 1 ]; then
        timeout 30 tcpdump -i lo -nn -v -l "tcp dst port $PORT" >"$TMP/$label.txt" 2>"$TMP/$label.err" &
        TCPDUMP_PID=$!
        for _ in $(seq 50); do
            grep -q "listening on" "$TMP/$label.err" && break
            kill -0 "$TCPDUMP_PID" 2>/dev/null || break
            sleep 0.1
        done
        if ! grep -q "listening on" "$TMP/$label.err"; then
            note "tcpdump did not start ($(grep -v '^$' "$TMP/$label.err" | head -n1)); the server's view is the witness"
            kill "$TCPDUMP_PID" 2>/dev/null; wait "$TCPDUMP_PID" 2>/dev/null; TCPDUMP_PID=
            USE_TCPDUMP=0
        fi
    fi
    local out rc
    out=$("$@" 2>&1); rc=$?
    [ "$rc" = 0 ] || die "$label: \`$*\` failed (exit $rc): $(echo "$out" | head -n1)"
    echo
    echo "### $label: $*"
    echo "curl got: $out"
    for _ in $(seq 30); do [ "$(wc -l <"$TMP/seen.txt")" -gt "$before" ] && break; sleep 0.1; done
    SEEN=$(tail -n +"$((before + 1))" "$TMP/seen.txt" | head -n1)
    echo "the server saw: ${SEEN:-nothing}"
    if [ -n "$TCPDUMP_PID" ]; then
        sleep 0.3
        kill -INT "$TCPDUMP_PID" 2>/dev/null; wait "$TCPDUMP_PID" 2>/dev/null; TCPDUMP_PID=
        echo "on the wire (tcpdump -v, curl's packets to the server):"
        grep -E '^[0-9]' "$TMP/$label.txt" | sed -E 's/^([0-9:.]+) IP \((tos 0x[0-9a-f]+), ttl ([0-9]+).*/  \1 \2 ttl \3/' \
            | paste - <(grep -E '^\s+127' "$TMP/$label.txt" | sed -E 's/^\s+//; s/, cksum.*//')
        WIRE=$(grep -oE 'tos 0x[0-9a-f]+' "$TMP/$label.txt" | sort -u | tr '\n' ' ')
    fi
}

WIRE=
show without-sockwrap curl -s "$URL"
plain_seen=$SEEN plain_wire=$WIRE
WIRE=
show with-sockwrap "$SW" run --dscp EF --keepalive=30,10,3 -- curl -s "$URL"
wrapped_seen=$SEEN wrapped_wire=$WIRE

echo
[ "$plain_seen" = "tos 0x0" ] || die "FAILED: without sockwrap the server saw '${plain_seen:-nothing}', expected tos 0x0"
[ "$wrapped_seen" = "tos 0xb8" ] || die "FAILED: under sockwrap the server saw '${wrapped_seen:-nothing}', expected tos 0xb8 (DSCP EF)"
if [ -n "$plain_wire$wrapped_wire" ]; then
    [ "$plain_wire" = "tos 0x0 " ] || die "FAILED: without sockwrap tcpdump saw '$plain_wire', expected only tos 0x0"
    [ "$wrapped_wire" = "tos 0xb8 " ] || die "FAILED: under sockwrap tcpdump saw '$wrapped_wire', expected only tos 0xb8"
    echo "Every packet curl sent under sockwrap carried tos 0xb8 (DSCP EF), from the SYN on;"
    echo "without it, tos 0x0. curl itself was not changed."
else
    echo "Under sockwrap the server received curl's connection with tos 0xb8 (DSCP EF); without"
    if [ "$IS_ROOT" = 1 ]; then
        echo "it, tos 0x0. curl itself was not changed."
    else
        echo "it, tos 0x0. curl itself was not changed. (Run as root to see the packets in tcpdump too.)"
    fi
fi
