#!/usr/bin/env python3
"""Connects to HOST:PORT1 and HOST:PORT2 in one run, sends a line on each."""
import socket
import sys
import time

host, p1, p2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for port in (p1, p2):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"hello %d\n" % port)
    time.sleep(0.1)
    s.close()
print("done", flush=True)
