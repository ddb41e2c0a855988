"""The launcher gets out of the way: exit codes and signals are the program's own, no extra
process stays, LD_PRELOAD entries are kept, children inherit the policy; logging is where
and what it says."""
import os
import re
import signal
import socket
import subprocess

import util
from util import EF, PY, peer, run, run_under_sockwrap, tos_server


def test_exit_status_passed_through():
    for code in (0, 1, 7, 255):
        r = run_under_sockwrap([], ["sh", "-c", f"exit {code}"])
        assert r.returncode == code, r.stderr


def test_killed_by_signal_same_as_without():
    plain = run(["sh", "-c", "kill -TERM $$"])
    wrapped = run_under_sockwrap(["--dscp", "EF"], ["sh", "-c", "kill -TERM $$"])
    assert plain.returncode == -signal.SIGTERM
    assert wrapped.returncode == plain.returncode


def test_command_not_found_is_an_error():
    r = run_under_sockwrap([], ["/nonexistent/program"])
    assert r.returncode != 0
    assert "/nonexistent/program" in r.stderr, r.stderr


def test_no_extra_process():
    """sockwrap exec()s the program: the program's pid is the pid sockwrap was started as."""
    util.require_sockwrap()
    p = subprocess.Popen(util.sockwrap_cmd(["--dscp", "EF"], ["sh", "-c", "echo $$; echo $PPID"]),
                         stdout=subprocess.PIPE, text=True, env=util._env(None))
    out, _ = p.communicate(timeout=10)
    pid, ppid = out.split()
    assert int(pid) == p.pid
    assert int(ppid) == os.getpid()


def test_existing_ld_preload_kept(tmp_path):
    """An LD_PRELOAD entry from the environment stays; both libraries are really loaded."""
    util.require_sockwrap()
    other = tmp_path / "libother.so"
    # any real shared library serves as a marker; copy it so its path is unique
    src = next(p for p in ("/lib/x86_64-linux-gnu/libutil.so.1", "/lib/x86_64-linux-gnu/libdl.so.2",
                           "/usr/lib/x86_64-linux-gnu/libutil.so.1", "/lib64/libutil.so.1")
               if os.path.exists(p))
    other.write_bytes(open(src, "rb").read())
    r = run_under_sockwrap(["--dscp", "EF"], ["cat", "/proc/self/maps"], env={"LD_PRELOAD": str(other)})
    assert r.returncode == 0, r.stderr
    assert str(other) in r.stdout, "the program's own LD_PRELOAD entry was dropped"
    assert "libsockwrap.so" in r.stdout, "libsockwrap.so not loaded"


def test_children_inherit_policy(port):
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port) as srv:
        cmd = ["sh", "-c", f"'{PY}' '{util.PEERS}/tcp_client.py' 127.0.0.1 {port} && "
                           f"sh -c \"'{PY}' '{util.PEERS}/tcp_client.py' 127.0.0.1 {port}\""]
        r = run_under_sockwrap(["--dscp", "EF"], cmd)
        assert r.returncode == 0, r.stderr
        got = srv.wait(2)
    assert [g["tos"] for g in got] == [EF, EF]


def test_children_of_plain_run_untouched(port):
    """Counter-check: the same command line without sockwrap gives tos 0."""
    with tos_server(socket.AF_INET, port) as srv:
        r = run(["sh", "-c", f"'{PY}' '{util.PEERS}/tcp_client.py' 127.0.0.1 {port}"])
        assert r.returncode == 0
        assert srv.wait(1)[0]["tos"] == 0


LOG_LINE = re.compile(r"^sockwrap\[(\d+)\]: (\w+): (.*)$")


def _info_log_checks(text, pid):
    lines = [m for m in (LOG_LINE.match(ln) for ln in text.splitlines()) if m]
    assert lines, text
    assert {m.group(1) for m in lines} == {str(pid)}, text
    assert sum(1 for m in lines if m.group(2).lower() == "info") >= 2, text
    assert any("summary" in m.group(3) for m in lines), "no exit summary:\n" + text


def test_log_info_per_socket_and_summary(port):
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port) as srv:
        p = subprocess.Popen(util.sockwrap_cmd(["--dscp", "EF"], peer("tcp_client.py", "127.0.0.1", port, "--count", "2")),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=util._env({"SOCKWRAP_LOG": "info"}))
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
        assert [g["tos"] for g in srv.wait(2)] == [EF, EF]
    _info_log_checks(err, p.pid)


def test_log_flag_and_default_quiet(port):
    util.require_sockwrap()
    with tos_server(socket.AF_INET, port):
        quiet = run_under_sockwrap(["--dscp", "EF"], peer("tcp_client.py", "127.0.0.1", port))
        loud = run_under_sockwrap(["--dscp", "EF", "--log", "info"], peer("tcp_client.py", "127.0.0.1", port))
    assert quiet.returncode == 0 and loud.returncode == 0
    assert "sockwrap[" not in quiet.stderr, "default level is warn: nothing to say here:\n" + quiet.stderr
    assert "summary" in loud.stderr, loud.stderr


def test_log_file_env(tmp_path, port):
    util.require_sockwrap()
    log = tmp_path / "sw.log"
    with tos_server(socket.AF_INET, port):
        p = subprocess.Popen(util.sockwrap_cmd(["--dscp", "EF"], peer("tcp_client.py", "127.0.0.1", port)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=util._env({"SOCKWRAP_LOG": "info", "SOCKWRAP_LOG_FILE": str(log)}))
        out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "sockwrap[" not in err, "log must go to the file, not stderr:\n" + err
    _info_log_checks(log.read_text(), p.pid)


def test_log_file_flag(tmp_path, port):
    util.require_sockwrap()
    log = tmp_path / "sw.log"
    with tos_server(socket.AF_INET, port):
        r = run_under_sockwrap(["--dscp", "EF", "--log", "info", "--log-file", log],
                               peer("tcp_client.py", "127.0.0.1", port))
    assert r.returncode == 0, r.stderr
    assert "sockwrap[" not in r.stderr
    assert "summary" in log.read_text()


def test_program_closing_all_fds_still_works(port):
    """The log descriptor is the library's own: a program that closes every fd keeps working."""
    util.require_sockwrap()
    code = ("import os, socket, sys\n"
            "os.closerange(3, 1024)\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=5); s.sendall(b'x'); s.close()\n"
            "print('ok')\n")
    with tos_server(socket.AF_INET, port) as srv:
        r = run_under_sockwrap(["--dscp", "EF", "--log", "info"], [PY, "-c", code])
        assert r.returncode == 0 and "ok" in r.stdout, r.stderr
        assert srv.wait(1)[0]["tos"] == EF
