"""`sockwrap attach PID --follow`: the kernel backend for a running program.

`attach --follow` moves the process into a sockwrap cgroup with the kernel backend's
programs. Witnesses: /proc/PID/cgroup and /proc/PID/task/*/cgroup (where the process is),
the wire (tcpdump: the SYN and data of a connection opened after the move), the peer
(IP_RECVTOS of each datagram), ss (tos of the socket). The target sits in a cgroup the test
makes (swtest-unit-*, a stand-in for a systemd unit's cgroup), so that "back where it came
from" and "a child of its own cgroup" are seen; BPF programs are attached only to the
cgroups sockwrap makes under it, and all of them are removed."""
import os
import select
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import util
from util import EF, Capture, Sink, run, wait_output_line
from test_attach import DROP, attach, ss_entry


# A program told what to do on stdin, one line at a time; a second thread keeps it
# multi-threaded (every thread must move).
#   tcp PORT [TOS]   open a NEW connection (then, if given, set IP_TOS itself), send, keep it
#   udp PORT [TOS]   a NEW connected UDP socket (the same), five datagrams
#   child SECS       start a child process that sleeps SECS; prints its pid
#   exit             exit (as does the end of stdin)
FOLLOWED = textwrap.dedent("""\
    import socket, subprocess, sys, threading, time
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
    keep = []
    print("ready", flush=True)
    for line in sys.stdin:
        w = line.split()
        if not w or w[0] == "exit":
            break
        if w[0] == "child":
            c = subprocess.Popen(["sleep", w[1]])
            keep.append(c)
            print(c.pid, flush=True)
            continue
        tcp = w[0] == "tcp"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", int(w[1])))
        if len(w) > 2:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, int(w[2], 0))
        for i in range(5):
            s.send(b"%d" % i)
            time.sleep(0.02)
        keep.append(s)
        print(s.getsockname()[1], flush=True)
    """)


def require_follow():
    util.require_sockwrap()
    util.require_root("attach --follow moves a process between cgroups and attaches BPF programs: root only")
    util.require(util.cgroup2_mount() is not None, "no cgroup v2 hierarchy mounted")


cgroup_of = util.cgroup_of


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def task_cgroups(pid):
    """The cgroup of each of its threads."""
    return {t: cgroup_of(f"{pid}/task/{t}") for t in os.listdir(f"/proc/{pid}/task")}


def follow_cgroups():
    """Every sockwrap-follow-* directory in the cgroup v2 tree."""
    return util.cgroups_named("sockwrap-follow-")


def procs_in_follow_cgroups():
    """Every process /proc shows in a sockwrap-follow cgroup."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if "/sockwrap-follow-" in cgroup_of(p):
                    found.append(int(p))
            except (OSError, IndexError):
                pass
    return found


@pytest.fixture(autouse=True)
def no_follow_cgroup_left_behind():
    # A test that failed half-way (its sockwrap killed at teardown) is cleaned up with
    # sockwrap's own sweep, so that the next test starts clean, and fails.
    yield from util.no_cgroups_left("sockwrap-follow-", cleanup=lambda: run([util.SOCKWRAP_BIN, "doctor"]))


@pytest.fixture
def unit():
    """A cgroup of the test's own, standing in for a service's: (directory, /proc path)."""
    require_follow()
    root = util.cgroup2_mount()
    d = root / f"swtest-unit-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    yield d, "/" + str(d.relative_to(root))
    # Only the test's own processes are in it: end them, then remove it bottom up.
    for sub, _, _ in sorted(os.walk(d), key=lambda e: -len(e[0])):
        for pid in Path(sub, "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for sub, _, _ in sorted(os.walk(d), key=lambda e: -len(e[0])):
        util.wait_until(lambda: Path(sub, "cgroup.procs").read_text().strip() == "", timeout=5)
        util.wait_until(lambda: _rmdir(sub), timeout=5)


def _rmdir(p):
    try:
        os.rmdir(p)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def put_into(cg_dir, pid):
    (Path(cg_dir) / "cgroup.procs").write_text(f"{pid}\n")


def start_followed(procs, unit_dir=None):
    p = procs.spawn([util.PY, "-c", FOLLOWED], stdin=subprocess.PIPE)
    assert wait_output_line(p).strip() == "ready"
    if unit_dir is not None:
        put_into(unit_dir, p.pid)
    return p


def tell(p, line):
    """Sends one command to the FOLLOWED program and returns its answer (a port or pid)."""
    p.stdin.write(line + "\n")
    p.stdin.flush()
    out = wait_output_line(p).strip()
    assert out.isdigit(), f"{line}: {out!r}"
    return int(out)


def start_follow(procs, pid, *args, **kw):
    """`sockwrap attach PID --follow ARGS`, in the background, once it is following."""
    util.require_sockwrap()
    f = procs.spawn([util.SOCKWRAP_BIN, "attach", pid, "--follow", *args], **kw)
    err = b""
    deadline = time.monotonic() + 30
    # Raw reads: a buffered readline could hold the line select() no longer sees.
    while time.monotonic() < deadline:
        r, _, _ = select.select([f.stderr], [], [], 0.1)
        if r:
            chunk = os.read(f.stderr.fileno(), 65536)
            err += chunk
            if b"following until" in err:
                return f, err.decode()
            if not chunk:
                break
        if f.poll() is not None and not r:
            break
    err = err.decode()
    pytest.fail(f"attach --follow did not start following: rc={f.poll()} {err}{f.stderr.read() if f.poll() is not None else ''}")


def end_follow(f, timeout=15):
    out, err = f.communicate(timeout=timeout)
    return f.returncode, out, err


def test_follow_new_connection_gets_dscp_on_the_wire_and_without_follow_it_does_not(procs, port, unit):
    unit_dir, unit_rel = unit
    with Sink(port):
        p = start_followed(procs, unit_dir)
        tell(p, f"tcp {port}")  # a connection from before, for the one-shot part
        # Control: attach without --follow sets the open socket, not the next one.
        r = attach(p.pid, "--dscp", "EF")
        assert r.returncode == 0, r.stdout + r.stderr
        with Capture(f"tcp port {port}") as cap:
            lport = tell(p, f"tcp {port}")
        plain = cap.from_port(lport)
        assert len(plain) >= 5 and {x.tos for x in plain} == {0}, cap.text
        assert cgroup_of(p.pid) == unit_rel

        f, err = start_follow(procs, p.pid, "--dscp", "EF")
        here = cgroup_of(p.pid)
        # A child of the cgroup it was in, named after this sockwrap; every thread moved.
        assert here.startswith(f"{unit_rel}/sockwrap-follow-{f.pid}-"), (here, err)
        assert set(task_cgroups(p.pid).values()) == {here} and len(task_cgroups(p.pid)) == 2
        assert f"from {unit_rel} into {here}" in err, err
        with Capture(f"tcp port {port}") as cap:
            lport = tell(p, f"tcp {port}")
        new = cap.from_port(lport)
        assert len(new) >= 5 and {x.tos for x in new} == {EF}, cap.text
        assert "S" in new[0].flags, "the SYN carries it too:\n" + cap.text
        assert f.poll() is None, "attach --follow ended while the program runs"
        p.stdin.write("exit\n")
        p.stdin.flush()
        rc, out, err2 = end_follow(f)
        p.wait(timeout=5)  # reaped: a zombie still shows the cgroup it died in
    assert rc == 0, err + err2
    assert "the followed processes have exited" in err2, err2
    assert "setsockopt calls kept from changing a locked option: 0" in err2, err2
    assert not (util.cgroup2_mount() / here.lstrip("/")).exists()
    assert follow_cgroups() == [] and procs_in_follow_cgroups() == []


def test_follow_locks_the_option_against_the_programs_own_setsockopt(procs, port):
    """The program sets IP_TOS 0x20 itself on its new sockets. Before --follow the peer sees
    0x20 (UDP: IP_RECVTOS per datagram; TCP: ss); after, 0xb8: the lock held, and the
    program's call reported success (it went on)."""
    require_follow()
    with util.tos_server(socket.AF_INET, port, "udp") as srv, Sink(port):
        p = start_followed(procs)
        before = tell(p, f"udp {port} 0x20")
        tcp_before = tell(p, f"tcp {port} 0x20")
        assert util.ss_field(ss_entry(tcp_before), "tos") == "0x20", ss_entry(tcp_before)
        f, err = start_follow(procs, p.pid, "--dscp", "EF")
        after = tell(p, f"udp {port} 0x20")
        tcp_after = tell(p, f"tcp {port} 0x20")
        res = srv.wait(10)
        by_port = {}
        for x in res:
            by_port.setdefault(x["peer"][1], []).append(x["tos"])
        assert by_port.get(before) == [0x20] * 5, res
        assert by_port.get(after) == [EF] * 5, res
        assert util.ss_field(ss_entry(tcp_after), "tos") == "0xb8", ss_entry(tcp_after)
        os.kill(f.pid, signal.SIGTERM)
        rc, _, err2 = end_follow(f)
    assert rc == 128 + signal.SIGTERM, err + err2
    # The lock held twice (the UDP and the TCP socket's own IP_TOS)
    assert "setsockopt calls kept from changing a locked option: 2" in err2, err2


def ctrl_c_follow(procs, pid, *args):
    """attach --follow on a terminal of its own, stopped by a real ^C typed on it (the
    kernel's SIGINT to the foreground process group, si_code SI_KERNEL)."""
    import fcntl
    import pty
    import termios
    master, slave = pty.openpty()
    f = subprocess.Popen([str(util.SOCKWRAP_BIN), "attach", str(pid), "--follow", *args],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0), env=util._env(None))
    os.close(slave)
    procs.procs.append(f)
    text = b""
    deadline = time.monotonic() + 30
    while b"following until" not in text and time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            text += os.read(master, 4096)
    assert b"following until" in text, text
    return f, master, text


@pytest.mark.parametrize("how", ["ctrl-c", "SIGTERM"])
def test_stopping_follow_moves_the_target_back_and_it_keeps_running(procs, port, unit, how):
    unit_dir, unit_rel = unit
    with Sink(port):
        p = start_followed(procs, unit_dir)
        if how == "ctrl-c":
            f, master, text = ctrl_c_follow(procs, p.pid, "--dscp", "EF")
        else:
            f, text = start_follow(procs, p.pid, "--dscp", "EF")
        assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-")
        during = tell(p, f"tcp {port}")
        assert util.ss_field(ss_entry(during), "tos") == "0xb8"
        if how == "ctrl-c":
            os.write(master, b"\x03")
            assert f.wait(timeout=15) == 128 + signal.SIGINT
            time.sleep(0.2)
            r, _, _ = select.select([master], [], [], 1)
            text = os.read(master, 8192).decode() if r else ""
            os.close(master)
        else:
            os.kill(f.pid, signal.SIGTERM)
            rc, _, text = end_follow(f)
            assert rc == 128 + signal.SIGTERM, text
        assert "moved process" in text and "back to where it came from" in text, text
        # Back where it came from, every thread, and still running.
        assert cgroup_of(p.pid) == unit_rel
        assert set(task_cgroups(p.pid).values()) == {unit_rel}
        assert p.poll() is None
        # The programs are gone: a new connection gets nothing; the one made while followed
        # keeps what it was given.
        with Capture(f"tcp port {port}") as cap:
            later = tell(p, f"tcp {port}")
        pk = cap.from_port(later)
        assert len(pk) >= 5 and {x.tos for x in pk} == {0}, cap.text
        assert util.ss_field(ss_entry(during), "tos") == "0xb8"
    assert follow_cgroups() == [] and procs_in_follow_cgroups() == []


def test_follow_tree_moves_every_process_and_waits_for_all_of_them(procs, port, unit):
    """--tree: the program and its child are moved (each its own /proc/PID/cgroup); the
    follow ends when the last of them exits, not the first; then nothing is left."""
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    child = tell(p, "child 6")
    assert cgroup_of(child) == unit_rel
    f, err = start_follow(procs, p.pid, "--tree", "--dscp", "EF")
    ours = cgroup_of(p.pid)
    assert ours.startswith(f"{unit_rel}/sockwrap-follow-") and cgroup_of(child) == ours, err
    assert f"processes {p.pid} ({comm(p.pid)}), {child} (sleep)" in err, err
    p.stdin.write("exit\n")
    p.stdin.flush()
    p.wait(timeout=5)
    time.sleep(0.5)
    assert f.poll() is None, "the follow ended while the child was still in the cgroup"
    assert os.path.exists(f"/proc/{child}") and cgroup_of(child) == ours
    rc, _, err2 = end_follow(f)
    assert rc == 0, err + err2
    assert not (util.cgroup2_mount() / ours.lstrip("/")).exists()
    util.wait_until(lambda: not os.path.exists(f"/proc/{child}"), timeout=5)  # reaped by init
    assert follow_cgroups() == [] and procs_in_follow_cgroups() == []
    # Without --tree only the process itself moves (control for the check above).
    p = start_followed(procs, unit_dir)
    child = tell(p, "child 30")
    f, err = start_follow(procs, p.pid, "--dscp", "EF")
    assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-") and cgroup_of(child) == unit_rel
    os.kill(f.pid, signal.SIGTERM)
    assert end_follow(f)[0] == 128 + signal.SIGTERM


def test_follow_tree_across_two_cgroups_gives_each_its_own_and_puts_each_back(procs, unit):
    """As sshd's sessions, which systemd puts in scopes of their own: the program in the
    unit, its child in another cgroup. Each is moved into a sockwrap cgroup under its own,
    and each goes back to its own."""
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    child = tell(p, "child 30")
    session = unit_dir / "session"
    session.mkdir()
    put_into(session, child)
    f, err = start_follow(procs, p.pid, "--tree", "--dscp", "EF")
    mine, its = cgroup_of(p.pid), cgroup_of(child)
    assert mine.startswith(f"{unit_rel}/sockwrap-follow-{f.pid}-"), err
    assert its.startswith(f"{unit_rel}/session/sockwrap-follow-{f.pid}-"), err
    assert len(follow_cgroups()) == 2
    os.kill(f.pid, signal.SIGTERM)
    rc, _, err2 = end_follow(f)
    assert rc == 128 + signal.SIGTERM, err2
    assert cgroup_of(p.pid) == unit_rel and cgroup_of(child) == f"{unit_rel}/session"
    assert follow_cgroups() == []


def test_a_process_moved_out_by_someone_else_ends_the_follow_with_exit_1(procs, unit):
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    f, err = start_follow(procs, p.pid, "--dscp", "EF")
    assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-")
    put_into(unit_dir, p.pid)  # as an administrator (or systemd) could
    rc, _, err2 = end_follow(f)
    assert rc == 1, err2
    assert f"process {p.pid} ({comm(p.pid)}) left the sockwrap cgroup while it was followed" in err2, err2
    assert p.poll() is None and cgroup_of(p.pid) == unit_rel and follow_cgroups() == []


def test_follow_refuses_options_the_kernel_backend_cannot_set_and_touches_nothing(procs, port, unit):
    unit_dir, unit_rel = unit
    with Sink(port):
        p = start_followed(procs, unit_dir)
        lport = tell(p, f"tcp {port}")
        r = attach(p.pid, "--follow", "--dscp", "EF", "--linger", "5", "--ttl", "9")
        assert r.returncode == 2, r
        assert r.stdout == "", "the one-shot part ran:\n" + r.stdout
        lines = r.stderr.strip().splitlines()
        refused = [l for l in lines if "attach --follow cannot set" in l]
        assert len(refused) == 2, r.stderr
        assert any("SO_LINGER" in l for l in refused) and any("IP_TTL" in l for l in refused), r.stderr
        assert lines[-1].startswith("sockwrap: attach --follow: refusing to follow; no process was touched: 2 options"), r.stderr
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0"), ss_entry(lport)
        assert cgroup_of(p.pid) == unit_rel
        # Control: the same without --follow is applied (so the checks above can fail).
        r = attach(p.pid, "--dscp", "EF", "--linger", "5", "--ttl", "9")
        assert r.returncode == 0, r.stdout + r.stderr
        assert util.ss_field(ss_entry(lport), "tos") == "0xb8"


def test_follow_dry_run_says_what_it_would_do_and_changes_nothing(procs, port, unit):
    unit_dir, unit_rel = unit
    with Sink(port):
        p = start_followed(procs, unit_dir)
        lport = tell(p, f"tcp {port}")
        r = attach(p.pid, "--follow", "--dscp", "EF", "--dry-run")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"would make a cgroup sockwrap-follow-PID-START under {unit_rel}" in r.stderr, r.stderr
        assert f"move process {p.pid} ({comm(p.pid)}) (all threads) from {unit_rel} into it" in r.stderr, r.stderr
        assert "would be EF(0xb8) (dry run)" in r.stdout, r.stdout
        assert cgroup_of(p.pid) == unit_rel and follow_cgroups() == []
        assert util.ss_field(ss_entry(lport), "tos") in (None, "0", "0x0")


SECCOMP_BPF_NR = {"x86_64": 321, "aarch64": 280}


def test_follow_errors_are_one_line_and_leave_the_target_where_it_was(procs, port, unit, tmp_path):
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)

    def refused(r, code, *words):
        assert r.returncode == code, r
        assert r.stdout == "", "the one-shot part ran:\n" + r.stdout
        (line,) = [l for l in r.stderr.strip().splitlines() if not l.startswith("sockwrap: removed the leftover")]
        assert line.startswith("sockwrap: attach --follow: ") and all(w in line for w in words), line
        assert cgroup_of(p.pid) == unit_rel and follow_cgroups() == []

    # not root
    refused(attach(p.pid, "--follow", "--dscp", "EF", user="nobody"), 3, "only root may attach")
    # a kernel thread
    refused(attach(2, "--follow", "--dscp", "EF"), 3, "process 2 (kthreadd) is a kernel thread")
    # no cgroup v2 (unmounted in a mount namespace of its own; the host keeps it)
    util.require_tool("unshare")
    r = run(["unshare", "-m", "sh", "-c",
             f"umount {util.cgroup2_mount()} && exec {util.SOCKWRAP_BIN} attach {p.pid} --follow --dscp EF"])
    refused(r, 3, "no cgroup v2 hierarchy is mounted")
    assert util.cgroup2_mount() is not None
    # BPF not loadable: bpf(2) answers ENOSYS (a seccomp filter)
    util.require(os.uname().machine in SECCOMP_BPF_NR, "system call numbers for x86_64/aarch64")
    exe = util.build_c("nosys", tmp_path / "nosys")
    r = run([exe, SECCOMP_BPF_NR[os.uname().machine], util.SOCKWRAP_BIN, "attach", p.pid, "--follow", "--dscp", "EF"])
    refused(r, 3, "cannot attach the BPF programs to", "nothing was moved")
    # a threaded cgroup: cgroup v2 moves whole processes only between domain cgroups
    thr = unit_dir / "threaded"
    thr.mkdir()
    (thr / "cgroup.type").write_text("threaded\n")
    put_into(thr, p.pid)
    r = attach(p.pid, "--follow", "--dscp", "EF")
    assert r.returncode == 3 and "cgroup.type is `threaded`" in r.stderr, r
    assert cgroup_of(p.pid) == f"{unit_rel}/threaded" and follow_cgroups() == []
    # Control: back in a domain cgroup (the threaded child removed: the unit is a plain
    # domain again), the same command moves it.
    put_into(unit_dir, p.pid)
    thr.rmdir()
    assert (unit_dir / "cgroup.type").read_text().strip() == "domain"
    f, err = start_follow(procs, p.pid, "--dscp", "EF")
    assert cgroup_of(p.pid).startswith(f"{unit_rel}/sockwrap-follow-")
    os.kill(f.pid, signal.SIGTERM)
    assert end_follow(f)[0] == 128 + signal.SIGTERM and cgroup_of(p.pid) == unit_rel


def test_a_killed_follow_is_cleaned_up_by_doctor_and_by_the_next_run(procs, unit):
    """kill -9 of attach --follow: the BPF links go with it, the cgroup stays with the
    process in it. doctor (not root) reports it; doctor as root, or the next run --kernel,
    moves the process back to where it came from and removes the cgroup."""
    unit_dir, unit_rel = unit
    p = start_followed(procs, unit_dir)
    for cleaner in ("doctor", "run --kernel"):
        f, _ = start_follow(procs, p.pid, "--dscp", "EF")
        left = cgroup_of(p.pid)
        assert left.startswith(f"{unit_rel}/sockwrap-follow-{f.pid}-")
        os.kill(f.pid, signal.SIGKILL)
        f.wait(timeout=5)
        cg = util.cgroup2_mount() / left.lstrip("/")
        assert cg.exists() and cgroup_of(p.pid) == left
        if cleaner == "doctor":
            d = run(DROP + [util.SOCKWRAP_BIN, "doctor"])
            assert f"leftover cgroup {cg}" in d.stdout and "are still in it" in d.stdout, d.stdout
            assert d.returncode == 1 and cgroup_of(p.pid) == left
            d = run([util.SOCKWRAP_BIN, "doctor"])
            said = d.stdout
        else:
            d = run([util.SOCKWRAP_BIN, "run", "--kernel", "--", "true"])
            assert d.returncode == 0, d.stderr
            said = d.stderr
        assert f"moved processes [{p.pid}] back to {unit_dir} and removed the leftover cgroup {cg}" in said, said
        assert cgroup_of(p.pid) == unit_rel and not cg.exists() and p.poll() is None


def test_help_and_man_page_say_what_follow_does_to_a_service(tmp_path):
    util.require_sockwrap()
    r = run([util.SOCKWRAP_BIN, "attach", "--help"])
    text = " ".join(r.stdout.split())
    for words in ("--follow", "UNDER THE CGROUP IT IS IN", "accounting", "KillMode=control-group",
                  "moves them back to the cgroup they came from", "(ttl, linger, mptcp)", "kill -9"):
        assert words in text, words
    r = run([util.SOCKWRAP_BIN, "gen-man", tmp_path])
    assert r.returncode == 0, r.stderr
    man = (tmp_path / "sockwrap-attach.1").read_text()
    assert "KillMode=control\\-group" in man or "KillMode=control-group" in man
