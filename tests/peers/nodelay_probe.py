#!/usr/bin/env python3
"""write-write-read probe: prints the median round time (ms) of the last half of ROUNDS rounds.

With Nagle on, the second small write waits for the ACK of the first, which the server
delays (~40 ms) because it answers only after both writes arrived."""
import argparse
import socket
import statistics
import time

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("--rounds", type=int, default=16)
p.add_argument("--nodelay", action="store_true", help="set TCP_NODELAY itself")
a = p.parse_args()
s = socket.create_connection((a.host, a.port), timeout=10)
if a.nodelay:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for i in range(a.rounds):
    t0 = time.perf_counter()
    s.send(b"a")
    s.send(b"b")
    got = s.recv(1)
    if not got:
        break
    times.append((time.perf_counter() - t0) * 1000)
s.close()
print("median_ms %.3f" % statistics.median(times[len(times) // 2:]), flush=True)
