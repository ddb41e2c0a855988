"""Client for the connection-action tests. Prints one JSON object per connect on stdout.

  action_client.py blocking FAMILY HOST PORT           one blocking connect, send b"ping", read the reply
  action_client.py asyncio HOST PORT [HOST PORT ...]    concurrent asyncio connects (epoll)
  action_client.py select HOST PORT                     non-blocking connect, select() for writability
  action_client.py select6 FAMILY HOST PORT             the same on an IPv6 socket (6: native, 6m: v4-mapped)
  action_client.py loop HOST PORT N                     N blocking connects, one char each: . ok, x refused/reset
  action_client.py cycle HOST N PORT [PORT ...]         N rounds of one connect to each PORT in turn: a pattern per port
  action_client.py fork HOST PORT K M                   K connects, fork, M in the child, then M in the parent
  action_client.py parked FAMILY HOST PORT              non-blocking connect; says its local address, then polls
                                                        (FAMILY 4, or 6: an IPv6-only socket)
  action_client.py byname NAME PORT                     getaddrinfo(NAME) then connect, send, read
  action_client.py byname_then_addr NAME ADDR PORT      the same, then a connect to ADDR (no name)

FAMILY is 4, 6 (IPv6 socket) or 6m (IPv6 socket, v4-mapped address). Each result has
`ok`, `errno` (name), `peer` (getpeername), `reply`, `elapsed` (s).
"""
import asyncio
import errno
import json
import select
import socket
import sys
import time


def name(e):
    return errno.errorcode.get(e, str(e))


def report(**kw):
    print(json.dumps(kw), flush=True)


def talk(s):
    s.sendall(b"ping")
    s.settimeout(5)
    try:
        return s.recv(64).decode(errors="replace")
    except OSError:
        return ""


def blocking(fam, host, port):
    family = socket.AF_INET if fam == "4" else socket.AF_INET6
    if fam == "6m":
        host = "::ffff:" + host
    s = socket.socket(family, socket.SOCK_STREAM)
    t0 = time.monotonic()
    try:
        s.connect((host, port))
    except OSError as e:
        report(ok=False, errno=name(e.errno), elapsed=time.monotonic() - t0)
        return
    elapsed = time.monotonic() - t0
    peer = s.getpeername()
    report(ok=True, peer=[peer[0], peer[1]], reply=talk(s), elapsed=elapsed)
    s.close()


async def one(host, port, t0):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, asyncio.TimeoutError) as e:
        report(port=port, ok=False, errno=name(getattr(e, "errno", None) or errno.ETIMEDOUT),
               elapsed=time.monotonic() - t0)
        return
    elapsed = time.monotonic() - t0
    peer = w.get_extra_info("peername")
    w.write(b"ping")
    await w.drain()
    try:
        reply = (await asyncio.wait_for(r.read(64), 5)).decode(errors="replace")
    except asyncio.TimeoutError:
        reply = ""
    report(port=port, ok=True, peer=[peer[0], peer[1]], reply=reply, elapsed=elapsed)
    w.close()


async def many(pairs):
    t0 = time.monotonic()
    await asyncio.gather(*(one(h, p, t0) for h, p in pairs))


def with_select(host, port, fam="4"):
    family = socket.AF_INET if fam == "4" else socket.AF_INET6
    if fam == "6m":
        host = "::ffff:" + host
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    t0 = time.monotonic()
    r = s.connect_ex((host, port))
    if r not in (0, errno.EINPROGRESS):
        report(ok=False, errno=name(r), elapsed=time.monotonic() - t0)
        return
    _, w, _ = select.select([], [s], [], 10)
    if not w:
        report(ok=False, errno="TIMEOUT", elapsed=time.monotonic() - t0)
        return
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    elapsed = time.monotonic() - t0
    if err:
        report(ok=False, errno=name(err), elapsed=elapsed)
        return
    s.setblocking(True)
    peer = s.getpeername()
    v6only = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) if fam != "4" else None
    report(ok=True, peer=[peer[0], peer[1]], reply=talk(s), elapsed=elapsed, v6only=v6only)


def connects(host, port, n):
    """n blocking connects to host:port, one char each: . connected, x refused or reset."""
    out = []
    for _ in range(n):
        s = socket.socket()
        try:
            s.connect((host, port))
            out.append(".")
        except OSError:
            out.append("x")
        s.close()
    return "".join(out)


def loop(host, port, n):
    report(pattern=connects(host, port, n))


def cycle(host, n, ports):
    """The ports' connects interleaved: round after round, one connect to each port."""
    out = {p: "" for p in ports}
    for _ in range(n):
        for p in ports:
            out[p] += connects(host, p, 1)
    report(patterns={str(p): v for p, v in out.items()})


def fork_then_connect(host, port, k, m):
    """k connects, then a fork: the child makes m connects and says its pattern, then the
    parent (after the child ended, so the server counts them in that order) makes m."""
    import os
    before = connects(host, port, k)
    pid = os.fork()
    if pid == 0:
        report(who="child", pattern=connects(host, port, m))
        os._exit(0)
    os.waitpid(pid, 0)
    report(who="parent", before=before, pattern=connects(host, port, m))


def parked(fam, host, port):
    """A non-blocking connect (delayed by the test's rule): says its local address at once,
    then polls for POLLIN|POLLOUT, as a program that waits for "connected or data" does."""
    s = socket.socket(socket.AF_INET if fam == "4" else socket.AF_INET6)
    if fam == "6":  # IPv6 only: parked on ::1 (a dual-stack socket parks v4-mapped)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setblocking(False)
    t0 = time.monotonic()
    r = s.connect_ex((host, port))
    report(connect=name(r), local=list(s.getsockname()[:2]))
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLOUT)
    ev = p.poll(10_000)
    first = {"at": time.monotonic() - t0, "revents": ev[0][1] if ev else 0}
    p.modify(s, select.POLLOUT)
    p.poll(10_000)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    done = time.monotonic() - t0
    s.setblocking(True)
    report(first=first, writable_at=done, so_error=name(err) if err else 0,
           reply=talk(s) if not err else "")


def byname(host, port):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        report(ok=False, errno=name(e.errno), elapsed=time.monotonic() - t0)
        return
    peer = s.getpeername()
    report(ok=True, peer=[peer[0], peer[1]], reply=talk(s), elapsed=time.monotonic() - t0)


async def crowd(host, port, n):
    t0 = time.monotonic()

    async def go():
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
        took = time.monotonic() - t0
        w.write(b"ping")
        await w.drain()
        reply = (await asyncio.wait_for(r.read(64), 5)).decode(errors="replace")
        w.close()
        return took, reply
    res = await asyncio.gather(*(go() for _ in range(n)))
    report(elapsed=[t for t, _ in res], replies=sorted({r for _, r in res}))


def setuid_during_delay(host, port):
    """A delayed non-blocking connect, and the program drops privileges meanwhile: glibc's
    setuid signals every thread (SIGSETXID) and waits for each."""
    import os
    import threading
    s = socket.socket()
    s.setblocking(False)
    r = s.connect_ex((host, port))
    t = threading.Thread(target=lambda: time.sleep(0.1))
    t.start()  # the program has threads of its own too
    t0 = time.monotonic()
    os.setgid(65534)
    os.setuid(65534)
    took = time.monotonic() - t0
    _, w, _ = select.select([], [s], [], 10)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if w else -1
    t.join()
    report(connect=r, setuid_s=took, writable=bool(w), so_error=err, uid=os.getuid())


def close_during_delay(host, port):
    """The program gives up on a delayed connect: closes it, makes another socket."""
    s = socket.socket()
    s.setblocking(False)
    r = s.connect_ex((host, port))
    s.close()
    s2 = socket.socket()
    s2.settimeout(5)
    s2.connect((host, port))
    reply = talk(s2)
    time.sleep(0.6)  # past the first delay: our thread finishes it meanwhile
    report(first=name(r), second=reply)


def main():
    mode = sys.argv[1]
    a = sys.argv[2:]
    if mode == "blocking":
        blocking(a[0], a[1], int(a[2]))
    elif mode == "asyncio":
        asyncio.run(many([(a[i], int(a[i + 1])) for i in range(0, len(a), 2)]))
    elif mode == "select":
        with_select(a[0], int(a[1]))
    elif mode == "select6":
        with_select(a[1], int(a[2]), a[0])
    elif mode == "loop":
        loop(a[0], int(a[1]), int(a[2]))
    elif mode == "byname":
        byname(a[0], int(a[1]))
    elif mode == "cycle":
        cycle(a[0], int(a[1]), [int(p) for p in a[2:]])
    elif mode == "fork":
        fork_then_connect(a[0], int(a[1]), int(a[2]), int(a[3]))
    elif mode == "parked":
        parked(a[0], a[1], int(a[2]))
    elif mode == "crowd":
        asyncio.run(crowd(a[0], int(a[1]), int(a[2])))
    elif mode == "setuid":
        setuid_during_delay(a[0], int(a[1]))
    elif mode == "close":
        close_during_delay(a[0], int(a[1]))
    elif mode == "byname_then_addr":
        byname(a[0], int(a[2]))
        blocking("4", a[1], int(a[2]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
