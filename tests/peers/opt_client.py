"""An ordinary TCP client that sets one socket option before connecting.

usage: opt_client.py HOST PORT OPTION      OPTION: none | user_timeout | tclass | v6only
It makes socket(AF_INET[6], SOCK_STREAM, 0) like any program, sets the option (TCP_USER_TIMEOUT
5000 ms, or IPV6_TCLASS 0xb8), connects, sends a line and reads the server's JSON answer
(see proto_server.py). Prints one JSON line with what the kernel said at each step:
  proto_before / proto_after: SO_PROTOCOL of our socket (262 = MPTCP, 6 = TCP)
  setsockopt: "ok" or the errno; readback: the option's value read back after connect
  connect: "ok" or the error; server: the server's answer.
Like a real program, it gives up (exit 3) when setsockopt fails -- except for `v6only`:
IPV6_V6ONLY=0 tried on any socket with the error ignored, as Python's http.server
(DualStackServer) does; on an AF_INET socket it fails (ENOPROTOOPT) over TCP and MPTCP alike.
"""
import json
import socket
import sys

IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


def main():
    host, port, opt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    res = {"proto_before": s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)}
    level, name, value = {
        "none": (None, None, None),
        "user_timeout": (socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 5000),
        "tclass": (socket.IPPROTO_IPV6, IPV6_TCLASS, 0xB8),
        "v6only": (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0),
    }[opt]
    if level is not None:
        try:
            s.setsockopt(level, name, value)
            res["setsockopt"] = "ok"
        except OSError as e:
            res["setsockopt"] = e.errno
            if opt != "v6only":
                print(json.dumps(res), flush=True)
                sys.exit(3)
    s.settimeout(10)
    try:
        s.connect((host, port))
        res["connect"] = "ok"
    except OSError as e:
        res["connect"] = f"{e.errno} {e.strerror}"
        print(json.dumps(res), flush=True)
        sys.exit(4)
    res["proto_after"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
    if level is not None:
        try:
            res["readback"] = s.getsockopt(level, name)
        except OSError as e:
            res["readback"] = f"errno {e.errno}"
    s.sendall(b"hello\n")
    buf = b""
    while b"\n" not in buf:
        d = s.recv(1024)
        if not d:
            break
        buf += d
    res["server"] = json.loads(buf.decode()) if buf.strip() else None
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
