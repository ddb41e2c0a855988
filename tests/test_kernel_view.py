"""Options `ss` cannot show, read straight from the kernel on the program's own socket.

The witness runs OUTSIDE the wrapped process: pidfd_open(pid) + pidfd_getfd(pidfd, fd)
duplicate the program's real connected socket into the test, and getsockopt() on that
duplicate asks the kernel what is set on the socket (a dup shares the struct sock).
sockwrap's own view (log, interposed getsockopt) is never consulted.

Every case also reads the same option on the same program run without sockwrap and
checks that the kernel then reports something else, so each test can fail."""
import ctypes
import errno
import os
import signal
import socket
import struct
import subprocess

import pytest

import util
from util import peer, tos_server, wait_output_line

SYS_pidfd_getfd = 438  # x86_64, aarch64 and the generic syscall table

TCP_USER_TIMEOUT = 18
TCP_NOTSENT_LOWAT = 25
SO_MAX_PACING_RATE = 47

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def pidfd_getfd(pidfd, targetfd):
    fd = _libc.syscall(ctypes.c_long(SYS_pidfd_getfd), ctypes.c_int(pidfd), ctypes.c_int(targetfd),
                       ctypes.c_uint(0))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"pidfd_getfd({targetfd}): {os.strerror(e)}")
    return fd


def require_pidfd_getfd():
    """pidfd_getfd works on this kernel and for this user (checked on a child of our own)."""
    util.require(hasattr(os, "pidfd_open"), "os.pidfd_open missing (Python >= 3.9 on Linux 5.3+)")
    child = subprocess.Popen([util.PY, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        pidfd = os.pidfd_open(child.pid)
        try:
            fd = pidfd_getfd(pidfd, 0)
            os.close(fd)
            ok, why = True, ""
        except OSError as e:
            ok, why = False, f"pidfd_getfd unusable: {e} (needs Linux 5.6+ and ptrace rights)"
        finally:
            os.close(pidfd)
    finally:
        child.kill()
        child.communicate(timeout=5)
    util.require(ok, why)


def _session_pids(sid):
    """Processes of the session started by Procs.spawn (the launcher may exec or fork)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] = state, [1] = ppid, [2] = pgrp, [3] = session
        if int(fields[3]) == sid:
            pids.append(int(d))
    return pids


def grab_matching(sid, wanted, what):
    """A duplicate (socket.socket) of the first socket of the session for which wanted(sock)
    holds. The socket fd is found by its /proc/PID/fd symlink 'socket:[INODE]', duplicated
    with pidfd_getfd, and identified by looking at the duplicate."""
    for pid in _session_pids(sid):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for name in fds:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{name}")
                except OSError:
                    continue
                if not link.startswith("socket:["):
                    continue
                try:
                    dup = pidfd_getfd(pidfd, int(name))
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.ESRCH):
                        continue
                    raise
                s = socket.socket(fileno=dup)
                try:
                    if s.family in (socket.AF_INET, socket.AF_INET6) and wanted(s):
                        return s
                except OSError:
                    pass
                s.close()
        finally:
            os.close(pidfd)
    raise AssertionError(f"no {what} in session {sid} ({_session_pids(sid)})")


def grab_socket(sid, lport, rport):
    """A duplicate of the program's TCP socket 127.0.0.1:lport -> :rport."""
    return grab_matching(
        sid,
        lambda s: (s.type == socket.SOCK_STREAM and s.getsockname()[1] == lport
                   and s.getpeername()[1] == rport),
        f"TCP socket :{lport} -> :{rport}")


def kernel_read(procs, args, port, read):
    """Run tcp_client.py holding its connection (under sockwrap unless args is None), pull its
    socket out of the process and return read(sock)."""
    with tos_server(socket.AF_INET, port):
        cmd = peer("tcp_client.py", "127.0.0.1", port, "--hold", 10)
        p = procs.spawn(cmd) if args is None else procs.spawn_under_sockwrap(args, cmd)
        try:
            line = wait_output_line(p)
            assert line.startswith("connected"), f"client did not connect: {line!r}"
            lport = int(line.split()[2])
            s = grab_socket(p.pid, lport, port)
            try:
                return read(s)
            finally:
                s.close()
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate(timeout=5)


def _int(level, opt):
    return lambda s: s.getsockopt(level, opt)


def _u64(level, opt):
    return lambda s: struct.unpack("=Q", s.getsockopt(level, opt, 8))[0]


def _linger(s):
    return struct.unpack("=ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))


def _keepalive(s):
    return (s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


CASES = [
    # id, sockwrap args, reader, expected value under sockwrap
    ("user-timeout", ["--user-timeout", "5000"], _int(socket.IPPROTO_TCP, TCP_USER_TIMEOUT), 5000),
    ("notsent-lowat", ["--notsent-lowat", "16384"], _int(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT), 16384),
    ("max-pacing-rate", ["--max-pacing-rate", "1000000"], _u64(socket.SOL_SOCKET, SO_MAX_PACING_RATE), 1000000),
    ("linger", ["--linger", "5"], _linger, (1, 5)),
    ("priority", ["--priority", "3"], _int(socket.SOL_SOCKET, socket.SO_PRIORITY), 3),
    ("keepalive", ["--keepalive", "30,10,3"], _keepalive, (1, 30, 10, 3)),
    # each keepalive timer on its own flag (kernel defaults: 7200 s, 75 s, 9 probes)
    ("keepalive-idle", ["--keepalive-idle", "45"], _int(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 45),
    ("keepalive-interval", ["--keepalive-interval", "7"], _int(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 7),
    ("keepalive-count", ["--keepalive-count", "4"], _int(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 4),
]


@pytest.mark.parametrize("name,args,read,expected", CASES, ids=[c[0] for c in CASES])
def test_option_read_from_kernel(name, args, read, expected, procs, port):
    util.require_sockwrap()
    util.require_root("pidfd_getfd on another process needs ptrace rights (root)")
    require_pidfd_getfd()
    base = kernel_read(procs, None, port, read)
    assert base != expected, f"kernel shows {name}={base!r} without sockwrap: the witness cannot fail"
    forced = kernel_read(procs, args, util.free_port(), read)
    assert forced == expected, f"{name}: kernel reports {forced!r} on the program's socket, wanted {expected!r}"
