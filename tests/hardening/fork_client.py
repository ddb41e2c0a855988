#!/usr/bin/env python3
"""Connects from the parent, a fork()ed child, a fork()+exec()ed child, a subprocess
(vfork/posix_spawn in CPython) and an os.posix_spawn()ed child.  Each connection sends its
tag so the peer can tell them apart.  usage: fork_client.py HOST PORT"""
import os
import socket
import subprocess
import sys


def connect(tag):
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((sys.argv[1], int(sys.argv[2])))
        s.sendall(tag.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        s.recv(10)


if len(sys.argv) > 3:  # child mode
    connect(sys.argv[3])
    sys.exit(0)

connect("parent")
pid = os.fork()
if pid == 0:
    try:
        connect("fork")
    finally:
        os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, __file__, sys.argv[1], sys.argv[2], "forkexec"])
assert os.waitpid(pid, 0)[1] == 0
subprocess.run([sys.executable, __file__, sys.argv[1], sys.argv[2], "subprocess"], check=True, timeout=20)
pid = os.posix_spawn(sys.executable, [sys.executable, __file__, sys.argv[1], sys.argv[2], "posix_spawn"],
                     os.environ)
assert os.waitpid(pid, 0)[1] == 0
print("done")
