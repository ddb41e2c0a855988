#!/usr/bin/env python3
"""An ordinary TCP client: connect, send a line, optionally read a reply and hold the connection.

Options let it behave like programs that set their own socket options."""
import argparse
import socket
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("--family", choices=["4", "6", "auto"], default="auto",
               help="socket family; 6 with an IPv4 host uses a v4-mapped address")
p.add_argument("--set-tos", type=lambda v: int(v, 0), help="IP_TOS/IPV6_TCLASS after connect")
p.add_argument("--set-tos-before", type=lambda v: int(v, 0), help="IP_TOS/IPV6_TCLASS before connect")
p.add_argument("--nodelay", action="store_true", help="set TCP_NODELAY itself")
p.add_argument("--keepalive", action="store_true", help="set SO_KEEPALIVE itself")
p.add_argument("--bind", help="bind to this address itself before connect")
p.add_argument("--send", default="hello\n")
p.add_argument("--send-after", default="", help="second line, sent after --set-tos")
p.add_argument("--read", action="store_true", help="read one reply")
p.add_argument("--hold", type=float, default=0, help="keep the connection open N seconds")
p.add_argument("--count", type=int, default=1, help="number of connections (sequential)")
a = p.parse_args()

host = a.host
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
if a.family == "6":
    fam = socket.AF_INET6
    if ":" not in host:
        host = "::ffff:" + host
elif a.family == "4":
    fam = socket.AF_INET


def settos(s, v):
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, v)
        try:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, v)
        except OSError:
            pass
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, v)


for i in range(a.count):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    if a.set_tos_before is not None:
        settos(s, a.set_tos_before)
    if a.nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if a.keepalive:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if a.bind:
        s.bind((a.bind, 0))
    s.connect((host, a.port))
    print("connected", s.getsockname()[0], s.getsockname()[1], flush=True)
    s.sendall(a.send.encode())
    if a.set_tos is not None:
        time.sleep(0.05)
        settos(s, a.set_tos)
        time.sleep(0.05)
    if a.send_after:
        s.sendall(a.send_after.encode())
    if a.read:
        print("reply", s.recv(4096).decode(errors="replace").strip(), flush=True)
    if a.hold:
        time.sleep(a.hold)
    s.close()
print("done", flush=True)
