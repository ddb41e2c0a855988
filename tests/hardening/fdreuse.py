#!/usr/bin/env python3
"""fd reuse / duplication scenarios.  usage: fdreuse.py MODE HOST PORT1 PORT2 [UNIXPATH]
PORT1 is covered by the policy's rule (--to HOST:PORT1), PORT2 is not.
  reuse  A connects to PORT1 (locked), close A; B gets A's number, sets TOS 0x10 itself, connects to PORT2
  dup2   A connects to PORT1; dup2(new socket B, A) ; the fd sets TOS 0x10, connects to PORT2
  dup    A connects to PORT1; D = dup(A); program sets TOS 0x10 on D and sends more on D
  scm_out  A connects to PORT1, sends 'out1', passes A over SCM_RIGHTS to UNIXPATH
  scm_in   receives a connected socket over UNIXPATH, sets TOS 0x10 on it, sends 'in2'"""
import array
import os
import socket
import sys
import time

mode, host, p1, p2 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET


def settos(s, v):
    if s.family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, v)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, v)


def pause():
    time.sleep(0.25)  # separate segments so the peer reads them one by one


def send(s, data):
    s.sendall(data)
    pause()


def covered(data):
    """A: a socket connected to PORT1 (the rule's port) that has sent data."""
    a = socket.socket(fam, socket.SOCK_STREAM)
    a.connect((host, p1))
    send(a, data)
    return a


def uncovered(s):
    """s sets TOS 0x10 itself, connects to PORT2, sends B1, sets TOS 0x10 again, sends B2."""
    settos(s, 0x10)
    s.connect((host, p2))
    send(s, b"B1")
    settos(s, 0x10)
    send(s, b"B2")
    s.close()


if mode == "reuse":
    a = covered(b"A1")
    n = a.fileno()
    a.close()
    b = socket.socket(fam, socket.SOCK_STREAM)
    print("reused", b.fileno() == n, flush=True)
    uncovered(b)
elif mode == "dup2":
    a = covered(b"A1")
    n = a.detach()
    b = socket.socket(fam, socket.SOCK_STREAM)
    os.dup2(b.fileno(), n)
    b.close()
    uncovered(socket.socket(fileno=n))
elif mode == "dup":
    a = covered(b"before")
    d = socket.socket(fileno=os.dup(a.fileno()))
    settos(d, 0x10)
    send(d, b"after")
    d.close()
    a.close()
elif mode == "scm_out":
    a = covered(b"out1")
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(sys.argv[5])
    u.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [a.fileno()]))])
    u.recv(1)  # wait until the receiver is done
    a.close()
elif mode == "scm_in":
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(sys.argv[5])
    msg, anc, _, _ = u.recvmsg(1, socket.CMSG_SPACE(4))
    fd = array.array("i", anc[0][2][:4])[0]
    s = socket.socket(fileno=fd)
    settos(s, 0x10)
    send(s, b"in2")
    s.close()
    u.sendall(b"k")
else:
    sys.exit("unknown mode")
print("done", flush=True)
