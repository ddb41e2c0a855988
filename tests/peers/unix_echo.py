#!/usr/bin/env python3
"""AF_UNIX stream echo inside one process (server thread + client). Prints 'echo OK'."""
import os
import socket
import sys
import tempfile
import threading

path = os.path.join(tempfile.mkdtemp(prefix="sockwrap-unix-"), "s")
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ls.bind(path)
ls.listen(1)
ls.settimeout(10)


def serve():
    c, _ = ls.accept()
    with c:
        c.sendall(c.recv(100))


t = threading.Thread(target=serve, daemon=True)
t.start()
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.settimeout(10)
c.connect(path)
c.sendall(b"ping")
got = c.recv(100)
c.close()
t.join(5)
a, b = socket.socketpair()
a.sendall(b"pair")
got2 = b.recv(100)
os.unlink(path)
os.rmdir(os.path.dirname(path))
print("echo OK" if (got, got2) == (b"ping", b"pair") else "echo BAD %r %r" % (got, got2), flush=True)
sys.exit(0 if (got, got2) == (b"ping", b"pair") else 1)
