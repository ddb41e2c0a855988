#!/usr/bin/env python3
"""An ordinary TCP server: listen, accept, read a line, reply, hold.

Prints 'listening PORT' when ready and 'peer IP PORT' per accepted connection."""
import argparse
import socket
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--reply", default="hello from server\n")
p.add_argument("--hold", type=float, default=0.5, help="seconds to keep each connection open")
p.add_argument("--max", type=int, default=20, help="stop after this many connections")
p.add_argument("--lifetime", type=float, default=30)
a = p.parse_args()

fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
ls = socket.socket(fam, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((a.host, a.port))
ls.listen(16)
ls.settimeout(0.5)
print("listening", a.port, flush=True)


def handle(c):
    with c:
        c.settimeout(5)
        try:
            c.recv(4096)
            c.sendall(a.reply.encode())
            time.sleep(a.hold)
        except OSError:
            pass


deadline = time.monotonic() + a.lifetime
n = 0
threads = []
while n < a.max and time.monotonic() < deadline:
    try:
        c, addr = ls.accept()
    except socket.timeout:
        continue
    print("peer", addr[0], addr[1], flush=True)
    t = threading.Thread(target=handle, args=(c,), daemon=True)
    t.start()
    threads.append(t)
    n += 1
for t in threads:
    t.join(timeout=a.hold + 6)
