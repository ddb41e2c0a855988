#!/usr/bin/env python3
"""Sends datagrams: unconnected sendto (default) or connected send (--connect)."""
import argparse
import socket
import time

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("--connect", action="store_true")
p.add_argument("--count", type=int, default=3)
p.add_argument("--set-tos", type=lambda v: int(v, 0))
a = p.parse_args()
fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if a.set_tos is not None:
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, a.set_tos)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, a.set_tos)
if a.connect:
    s.connect((a.host, a.port))
for i in range(a.count):
    msg = b"dgram %d" % i
    if a.connect:
        s.send(msg)
    else:
        s.sendto(msg, (a.host, a.port))
    time.sleep(0.01)
print("sent", a.count, flush=True)
