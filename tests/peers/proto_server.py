"""TCP server that tells each client which protocol the kernel gave the accepted socket.

usage: proto_server.py HOST PORT [--mptcp]
With --mptcp the listener itself is made with IPPROTO_MPTCP (262) -- by this program, not by
sockwrap. The accepted socket's SO_PROTOCOL is 262 when the client spoke MPTCP and 6 when the
connection fell back to TCP (or the listener is plain TCP). Each client gets one JSON line
{"proto": N, "peer": "addr"} after it sent a line. Prints "ready" when listening.
"""
import json
import socket
import sys
import threading

IPPROTO_MPTCP = 262


def answer_proto(c, extra=None):
    """Reads the client's line and answers it with one JSON line: {"proto": the accepted
    socket's SO_PROTOCOL, **extra}. Returns that protocol, or None if the client went away
    before its line was complete. (tests/test_mptcp_kernel.py's listener uses it too.)"""
    c.settimeout(10)
    try:
        buf = b""
        while b"\n" not in buf:
            d = c.recv(1024)
            if not d:
                return None
            buf += d
        proto = c.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
    except OSError:
        return None
    try:
        c.sendall((json.dumps({"proto": proto, **(extra or {})}) + "\n").encode())
    except OSError:
        pass
    return proto


def handle(c, addr):
    with c:
        answer_proto(c, {"peer": addr[0]})


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    proto = IPPROTO_MPTCP if "--mptcp" in sys.argv[3:] else 0
    ls = socket.socket(fam, socket.SOCK_STREAM, proto)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(16)
    print("ready", flush=True)
    while True:
        c, addr = ls.accept()
        threading.Thread(target=handle, args=(c, addr), daemon=True).start()


if __name__ == "__main__":
    main()
