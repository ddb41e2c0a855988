#!/usr/bin/env python3
"""An ordinary server that binds a fixed port and sets no socket option of its own.

usage: bind_server.py HOST PORT [--udp] [--serve-one | --hold SECS]
It makes socket(), bind(HOST, PORT) -- no SO_REUSEADDR, no SO_REUSEPORT -- and for TCP
listen(). It prints one line: 'bind-error ERRNO' (and exits 2) when the kernel refuses the
bind, else 'bound PORT'.
  --serve-one  (TCP) accept one connection, send 'bye', close it first (so the server's side
               of the connection goes to TIME_WAIT), close the listener and exit 0;
  --hold SECS  keep the socket (and every accepted connection) open, accepting, for SECS,
               then exit 0.
"""
import argparse
import select
import socket
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("--udp", action="store_true")
p.add_argument("--serve-one", action="store_true")
p.add_argument("--hold", type=float, default=0)
a = p.parse_args()

fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM if a.udp else socket.SOCK_STREAM)
try:
    s.bind((a.host, a.port))
except OSError as e:
    print("bind-error", e.errno, flush=True)
    sys.exit(2)
if not a.udp:
    s.listen(64)
print("bound", s.getsockname()[1], flush=True)

if a.serve_one:
    s.settimeout(10)
    c, _ = s.accept()
    c.sendall(b"bye\n")
    c.close()
    s.close()
    sys.exit(0)

conns = []
deadline = time.monotonic() + a.hold
while time.monotonic() < deadline:
    r, _, _ = select.select([s], [], [], 0.1)
    if s in r and not a.udp:
        c, _ = s.accept()
        conns.append(c)  # held open: ss shows which process accepted it
    elif s in r:
        s.recv(2048)
