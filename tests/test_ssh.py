"""Real OpenSSH (client and server) on loopback.  OpenSSH sets IP_TOS itself once the session
starts (IPQoS); a locked DSCP must survive that on every packet from SYN to the end.
Witness: tcpdump on the port."""
import os
import shutil
import socket
import subprocess
import textwrap

import pytest

import util
from util import EF, Capture, run, run_under_sockwrap


@pytest.fixture
def sshd(tmp_path, procs):
    util.require_root("sshd with key login as root needs root")
    util.require_tool("/usr/sbin/sshd", "ssh", "ssh-keygen")
    port = util.free_port()
    os.makedirs("/run/sshd", exist_ok=True)
    for name in ("host_key", "client_key"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / name]).check_returncode()
    shutil.copy(tmp_path / "client_key.pub", tmp_path / "authorized_keys")
    cfg = tmp_path / "sshd_config"
    cfg.write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {tmp_path}/host_key
        PidFile {tmp_path}/sshd.pid
        AuthorizedKeysFile {tmp_path}/authorized_keys
        StrictModes no
        UsePAM no
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        """))

    def start(args=None):
        cmd = ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)]
        p = procs.spawn(cmd) if args is None else procs.spawn_under_sockwrap(args, cmd)
        util.wait_listening(port)
        return p

    ssh = ["ssh", "-F", "/dev/null", "-p", str(port), "-i", str(tmp_path / "client_key"),
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
           "-o", "LogLevel=ERROR", "root@127.0.0.1"]
    return port, start, ssh


def ssh_capture(port, cmd, args=None):
    with Capture(f"tcp port {port}") as cap:
        r = run(cmd) if args is None else run_under_sockwrap(args, cmd)
        assert r.returncode == 0 and r.stdout.strip() == "hi", r.stdout + r.stderr
    return cap


def test_ssh_client_locked_dscp(sshd):
    util.require_sockwrap()
    port, start, ssh = sshd
    start()
    base = ssh_capture(port, ssh + ["-o", "IPQoS=lowdelay", "echo hi"])
    own = {p.tos for p in base.to_port(port)}
    assert own - {0}, "OpenSSH sets its own IP_TOS after login:\n" + base.text
    assert EF not in own
    cap = ssh_capture(port, ssh + ["-o", "IPQoS=lowdelay", "echo hi"], ["--dscp", "EF"])
    pkts = cap.to_port(port)
    assert pkts[0].flags == "S", cap.text
    assert len(pkts) > 10 and {p.tos for p in pkts} == {EF}, cap.text


def test_ssh_client_default_ipqos_locked(sshd):
    """Default IPQoS (no -o): whatever OpenSSH picks, EF is on every client packet."""
    util.require_sockwrap()
    port, start, ssh = sshd
    start()
    base = ssh_capture(port, ssh + ["echo hi"])
    assert {p.tos for p in base.to_port(port)} != {EF}
    cap = ssh_capture(port, ssh + ["echo hi"], ["--dscp", "EF"])
    assert {p.tos for p in cap.to_port(port)} == {EF}, cap.text


def test_ssh_client_soft_dscp(sshd):
    """Debian's OpenSSH 9.2 sets IP_TOS 0x10 itself before connect and 0x08 (bulk, no tty)
    after login.  With --soft the program's own values win; locked, EF stays."""
    util.require_sockwrap()
    port, start, ssh = sshd
    start()
    base = ssh_capture(port, ssh + ["echo hi"]).to_port(port)
    assert base[-1].tos not in (0, EF)
    cap = ssh_capture(port, ssh + ["echo hi"], ["--soft", "--dscp", "EF"])
    pkts = cap.to_port(port)
    assert pkts[-1].tos == base[-1].tos, "after login OpenSSH's own value wins with --soft:\n" + cap.text
    locked = ssh_capture(port, ssh + ["echo hi"], ["--dscp", "EF"]).to_port(port)
    assert locked[-1].tos == EF


def test_sshd_under_sockwrap(sshd):
    """The real sshd (forks, re-execs itself per connection) under sockwrap: its packets carry EF."""
    util.require_sockwrap()
    port, start, ssh = sshd
    start(["--dscp", "EF"])
    cap = ssh_capture(port, ssh + ["echo hi"])
    srv = cap.from_port(port)
    assert srv and {p.tos for p in srv} == {EF}, cap.text
    assert {p.tos for p in cap.to_port(port)} != {EF}  # the plain client
