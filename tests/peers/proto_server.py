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


def handle(c, addr):
    with c:
        c.settimeout(10)
        try:
            buf = b""
            while b"\n" not in buf:
                d = c.recv(1024)
                if not d:
                    break
                buf += d
            proto = c.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
            c.sendall((json.dumps({"proto": proto, "peer": addr[0]}) + "\n").encode())
        except OSError:
            pass


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
