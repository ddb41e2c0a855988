"""`sockwrap attach --cgroup/--container/--pod`, `detach`, `status --containers`: a policy
attached by the kernel backend to a cgroup sockwrap did not make (a container's, a pod's),
pinned so that it outlives the command.

Witnesses: the peer socket (IP_RECVTOS) for new connections, the kernel (`ss --tos`) for a
socket that was open before the attach, the connect's own errno for another tool's program
on the same cgroup, and the BPF filesystem for the pins. Each also without the policy.

Everything runs in a private mount namespace with a BPF filesystem of its own, on cgroups
the test makes (and removes, which takes the programs with them)."""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import util
from util import EF, PY, tos_server

INNER = util.INNER_PRELUDE + r'''

sw, cgroot, py, port, hold_port, deny_port, unit = sys.argv[1:8]
port, hold_port, deny_port = int(port), int(hold_port), int(deny_port)
PINS = Path("/sys/fs/bpf/sockwrap/cgroups")
out = {}


# With a second argument the client sets IP_TOS itself after connecting (as OpenSSH does
# after login) and prints what the kernel then answers for IP_TOS: its own value, or the
# lock's.
CLIENT = ("import errno, socket, sys\n"
          "s = socket.socket()\n"
          "try:\n"
          "    s.connect(('127.0.0.1', int(sys.argv[1])))\n"
          "    if len(sys.argv) > 2: s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, int(sys.argv[2]))\n"
          "    tos = s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)\n"
          "    s.send(b'x'); s.close(); print(0 if len(sys.argv) < 3 else f'0 tos={tos:#x}')\n"
          "except OSError as e:\n"
          "    print(errno.errorcode.get(e.errno, e.errno))\n")


def client_in(cg, p, *extra):
    """A new process in cgroup cg connects to port p; prints 0 or the errno's name."""
    r = sh("sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", py, "-c", CLIENT, p, *extra)
    return r[1].strip() or r[2]


must("mount", "-t", "tmpfs", "tmpfs", "/run")
must("mount", "-t", "tmpfs", "tmpfs", "/etc/systemd/system")
Path("/etc/systemd/system/theirs.service").write_text(Path(unit).read_text())
a = Path(cgroot) / f"swtest-ctr-a-{os.getpid()}"
b = Path(cgroot) / f"swtest-ctr-b-{os.getpid()}"
a.mkdir()
b.mkdir()
rel_a = str(a.relative_to(cgroot))
must("mount", "-t", "tmpfs", "tmpfs", "/sys/fs/bpf")
out["not_bpffs"] = sh(sw, "attach", "--cgroup", rel_a, "--dscp", "EF")
must("umount", "/sys/fs/bpf")
must("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
holder = None
try:
    # A process of "the container", with a connection open before sockwrap comes.
    holder = subprocess.Popen(
        ["sh", "-c", f'echo $$ > {a}/cgroup.procs && exec "$@"', "sh", py, "-c",
         "import socket,sys,time; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
         "print(s.getsockname()[1], flush=True); time.sleep(900)", str(hold_port)],
        stdout=subprocess.PIPE, text=True)
    out["hold_lport"] = int(holder.stdout.readline())
    out["hold_tos_before"] = sh("ss", "-tnH", "--tos", "state", "established", f"( sport = :{out['hold_lport']} )")[1]

    # Another tool's program on the same cgroup, attached the way systemd attaches its own
    # (BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI): a connect4 that fails connects to deny_port
    # with ENETUNREACH (sockwrap's own deny, pinned by `enable --kernel`, standing in).
    out["theirs_control"] = client_in(a, deny_port)
    must(sw, "enable", "theirs", "--kernel", "--deny", "ENETUNREACH", "--to", f"127.0.0.1:{deny_port}")
    out["theirs_attach"] = sh("bpftool", "cgroup", "attach", a, "connect4", "pinned",
                              "/sys/fs/bpf/sockwrap/theirs_service/connect4", "multi")
    out["theirs_alone"] = client_in(a, deny_port)

    out["control_a"] = client_in(a, port)
    out["attach"] = sh(sw, "attach", "--cgroup", rel_a, "--dscp", "EF")
    out["pins"] = pins(PINS)
    out["bpftool_show"] = sh("bpftool", "cgroup", "show", a)[1]
    out["a"] = client_in(a, port)
    out["b"] = client_in(b, port)
    out["a_sets_its_own"] = client_in(a, port, 0x10)   # locked: EF all the same
    out["b_sets_its_own"] = client_in(b, port, 0x10)   # control: 0x10
    out["theirs_with_ours"] = client_in(a, deny_port)
    out["hold_tos_after"] = sh("ss", "-tnH", "--tos", "state", "established", f"( sport = :{out['hold_lport']} )")[1]
    out["status"] = sh(sw, "status", "--containers")
    out["status_json"] = sh(sw, "status", "--containers", "--json")
    # Again, with another policy: replaced, not stacked.
    out["attach_again"] = sh(sw, "attach", "--cgroup", str(a), "--dscp", "AF41")
    out["a_again"] = client_in(a, port)

    out["detach"] = sh(sw, "detach", "--cgroup", rel_a)
    out["pins_after_detach"] = pins(PINS)
    out["a_after_detach"] = client_in(a, port)
    out["theirs_after_detach"] = client_in(a, deny_port)
    out["detach_twice"] = sh(sw, "detach", "--cgroup", rel_a)

    # The container goes: its links go with its cgroup, its pins stay until the next command.
    out["attach_b"] = sh(sw, "attach", "--cgroup", str(b.relative_to(cgroot)), "--dscp", "EF")
finally:
    if holder:
        holder.kill()
        holder.wait()
    for cg in (a, b):
        for _ in range(100):
            if not (cg / "cgroup.procs").read_text().strip():
                break
            time.sleep(0.05)
b.rmdir()
out["status_gone"] = sh(sw, "status", "--containers")
out["doctor"] = sh(sw, "doctor")
out["pins_after_doctor"] = pins(PINS)
a.rmdir()
out["no_cgroup"] = sh(sw, "attach", "--cgroup", rel_a, "--dscp", "EF")
out["root_cgroup"] = sh(sw, "attach", "--cgroup", "/", "--dscp", "EF")
out["no_container"] = sh(sw, "attach", "--container", "0123456789abcdef0123", "--dscp", "EF")
print(json.dumps(out))
'''


def test_attach_cgroup_gives_its_new_and_open_sockets_the_policy_until_detach(tmp_path):
    """In a private mount namespace with its own bpffs, on cgroups of the test's own:
    `attach --cgroup A --dscp EF` gives connections made in A EF at the peer (0 before, and
    0 in cgroup B), holds against A's own IP_TOS (locked), sets the socket A had open
    before (`ss --tos`), keeps another tool's multi-attached program running (its deny still
    answers ENETUNREACH), is replaced by a second attach, and is gone after `detach` (0
    again, pins removed). When the cgroup goes, `status --containers` reports the pins as
    GONE and `doctor` removes them. Refusals: no bpffs, no such cgroup, the root cgroup, an
    unknown container."""
    util.require_root("attaching BPF programs to a cgroup needs root")
    util.require_tool("unshare", "bpftool", "ss")
    util.require_sockwrap()
    cgroot = util.cgroup2_mount()
    util.require(cgroot is not None, "no cgroup v2 hierarchy mounted")
    mounts = Path("/proc/self/mountinfo").read_text()
    inner = tmp_path / "inner.py"
    inner.write_text(INNER)
    unit = tmp_path / "theirs.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    port, hold_port, deny_port = util.free_port(), util.free_port(), util.free_port()
    with tos_server(socket.AF_INET, port) as srv, tos_server(socket.AF_INET, hold_port):
        r = subprocess.run(["unshare", "-m", "--propagation", "private", PY, str(inner), util.SOCKWRAP_BIN,
                            str(cgroot), PY, str(port), str(hold_port), str(deny_port), str(unit)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=180)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out = json.loads(r.stdout.splitlines()[-1])
        got = srv.wait(7, timeout=10)
    assert Path("/proc/self/mountinfo").read_text() == mounts

    rc, _, err = out["not_bpffs"]
    assert rc == 3 and "/sys/fs/bpf is not a BPF filesystem" in err, err

    # The peer saw, in order: control, A, B, A setting its own, A again (AF41), after detach.
    outcomes = [out[k] for k in ("control_a", "a", "b", "a_again", "a_after_detach")]
    assert outcomes == ["0"] * 5, out
    # The program's own setsockopt(IP_TOS, 0x10) after connecting: the kernel answers EF in
    # A (the lock kept it), 0x10 in B (no policy there).
    assert out["a_sets_its_own"] == "0 tos=0xb8" and out["b_sets_its_own"] == "0 tos=0x10", out
    tos = [g["tos"] for g in got]
    assert tos == [0, EF, 0, EF, 0, 0x88, 0], (tos, out["attach"], out["bpftool_show"])


    rc, stdout, err = out["attach"]
    assert rc == 0 and "attached " in stdout and "stay after this command" in stdout, stdout + err
    assert any(p.startswith("links/") or "/links/" in p for p in out["pins"]), out["pins"]
    assert "sw_connect4" in out["bpftool_show"], out["bpftool_show"]

    # The socket that was open before the attach: 0 before, EF after (the kernel's view).
    assert "tos:0" in out["hold_tos_before"] and "tos:0xb8" not in out["hold_tos_before"], out["hold_tos_before"]
    assert "tos:0xb8" in out["hold_tos_after"], (out["hold_tos_after"], out["attach"][1])

    # The other tool's program: denies alone, still denies beside ours, and after ours left.
    assert out["theirs_control"] == "ECONNREFUSED", out
    assert out["theirs_attach"][0] == 0, out["theirs_attach"]
    assert out["theirs_alone"] == out["theirs_with_ours"] == out["theirs_after_detach"] == "ENETUNREACH", out

    rc, stdout, _ = out["status"]
    assert rc == 0 and "swtest-ctr-a-" in stdout and ": attached: " in stdout, stdout
    doc = json.loads(out["status_json"][1])
    assert [c["attached"] for c in doc["containers"]] == [True], doc
    # What the report says agrees with what the peer saw: plans applied, and A's own
    # setsockopt(IP_TOS) kept from undoing the lock.
    assert doc["containers"][0]["plans_applied"] >= 3 and doc["containers"][0]["locked"] >= 1, doc
    assert "replaced the policy" in out["attach_again"][1], out["attach_again"]

    rc, stdout, err = out["detach"]
    assert rc == 0 and "detached" in stdout, stdout + err
    assert out["pins_after_detach"] == [], out["pins_after_detach"]
    rc, _, err = out["detach_twice"]
    assert rc == 1 and "nothing is attached" in err, err

    assert out["attach_b"][0] == 0, out["attach_b"]
    rc, stdout, _ = out["status_gone"]
    assert rc == 1 and "GONE" in stdout, stdout
    assert "removed the pins of cgroup" in out["doctor"][2], out["doctor"]
    assert out["pins_after_doctor"] == [], out["pins_after_doctor"]

    for k, want in (("no_cgroup", "no such cgroup"), ("root_cgroup", "the root cgroup"),
                    ("no_container", "not found")):
        rc, _, err = out[k]
        assert rc == 2 and want in err and len(err.strip().splitlines()) == 1, (k, err)


def _podman_env(tmp_path):
    """podman with its storage and state on tmpfs-backed paths of the test's own (the VM's
    9p root refuses podman's database), the cgroupfs manager (no systemd in the guest) and no
    event log: the same settings for the test's podman and for the one sockwrap runs."""
    store = Path("/run") / f"swtest-podman-{os.getpid()}"
    (store / "root").mkdir(parents=True, exist_ok=True)
    (store / "runroot").mkdir(exist_ok=True)
    storage = tmp_path / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{store}/root"\nrunroot = "{store}/runroot"\n')
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(storage), CONTAINERS_CONF=str(conf))
    return env, store


@pytest.mark.vm_only
@pytest.mark.timeout(600)
def test_podman_container_gets_the_policy_by_name_and_loses_it_by_id(tmp_path):
    """Two podman containers (rootfs: busybox and a static client; host network). Before:
    the peer sees tos 0 from A. `attach --container NAME --dscp EF` (found through `podman
    inspect`): A's connections carry EF at the peer; when A's program sets IP_TOS 0x10
    itself after connecting, the kernel still answers EF (the lock; in B it answers 0x10);
    B's connections stay 0. `status --containers` lists A's cgroup.
    `detach --container ID` (found by its ID in the cgroup tree): A is back to 0."""
    util.require_root("podman containers and BPF need root")
    util.require_tool("podman", "crun", "gcc", "busybox")
    util.require_sockwrap()
    client = tmp_path / "rootfs" / "ctr_client"
    client.parent.mkdir()
    r = subprocess.run(["gcc", "-static", "-O1", "-Wall", "-Werror", "-o", str(client),
                        str(Path(__file__).parent / "c" / "ctr_client.c")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (client.parent / "bin").mkdir()
    shutil.copy(shutil.which("busybox"), client.parent / "bin" / "busybox")
    env, store = _podman_env(tmp_path)

    def podman(*args, timeout=120):
        return subprocess.run(["podman", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)

    def sw(*args):
        return subprocess.run([util.SOCKWRAP_BIN, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=120)

    names = [f"swtest-a-{os.getpid()}", f"swtest-b-{os.getpid()}"]
    port = util.free_port()
    mounted_bpffs = not Path("/sys/fs/bpf/sockwrap").exists() and subprocess.run(
        ["sh", "-c", "[ \"$(stat -fc %T /sys/fs/bpf)\" = bpf_fs ] || mount -t bpf bpf /sys/fs/bpf"],
        timeout=10).returncode == 0
    try:
        ids = []
        for n in names:
            r = podman("run", "-d", "--name", n, "--network", "host", "--rootfs", str(client.parent),
                       "/bin/busybox", "sleep", "600", timeout=240)
            assert r.returncode == 0, r.stderr
            ids.append(r.stdout.strip().splitlines()[-1])

        def connect(name, tos=-1):
            r = podman("exec", name, "/ctr_client", "127.0.0.1", str(port), str(tos))
            assert r.returncode == 0, (name, r.stdout, r.stderr)
            return r.stdout.strip()

        with tos_server(socket.AF_INET, port) as srv:
            connect(names[0])
            att = sw("attach", "--container", names[0], "--dscp", "EF")
            connect(names[0])
            a_own = connect(names[0], 0x10)
            connect(names[1])
            b_own = connect(names[1], 0x10)
            st = sw("status", "--containers")
            det = sw("detach", "--container", ids[0])
            connect(names[0])
            got = srv.wait(6, timeout=30 * util.TIME_SCALE)
        assert att.returncode == 0 and "(podman)" in att.stdout, att.stdout + att.stderr
        assert f"libpod-{ids[0]}" in att.stdout, att.stdout
        assert [g["tos"] for g in got] == [0, EF, EF, 0, 0, 0], (got, att.stdout, det.stdout)
        # After the container's own setsockopt(IP_TOS, 0x10) the kernel answers EF in A (the
        # lock kept it) and 0x10 in B (no policy there).
        assert a_own == "tos=0xb8" and b_own == "tos=0x10", (a_own, b_own)
        assert st.returncode == 0 and f"libpod-{ids[0]}" in st.stdout and ": attached: " in st.stdout, st.stdout
        assert det.returncode == 0 and "detached" in det.stdout, det.stdout + det.stderr
    finally:
        podman("rm", "-f", "-t", "0", *names, timeout=240)
        if mounted_bpffs:
            subprocess.run(["umount", "/sys/fs/bpf"], timeout=10)
        shutil.rmtree(store, ignore_errors=True)


@pytest.mark.vm_only
@pytest.mark.timeout(900)
def test_agent_gives_labelled_and_assigned_containers_their_policy_and_survives_restart(tmp_path):
    """`sockwrap agent` following podman: container A (label sockwrap.policy=ef) runs before
    the agent starts, B (label) starts after, C matches an [[assign]] image-and-name rule, D
    has neither. The peer sees EF from A, B and C (AF41 from C: its policy) and 0 from D, and
    0 from A before the agent. After the agent is killed and started again, A still carries
    EF (nothing detached) and the agent says A is attached already."""
    util.require_root("podman containers and BPF need root")
    util.require_tool("podman", "crun", "gcc", "busybox")
    util.require_sockwrap()
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    r = subprocess.run(["gcc", "-static", "-O1", "-Wall", "-Werror", "-o", str(rootfs / "ctr_client"),
                        str(Path(__file__).parent / "c" / "ctr_client.c")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    shutil.copy(shutil.which("busybox"), rootfs / "bin" / "busybox")
    env, store = _podman_env(tmp_path)
    # Events need an event log (a file here).
    conf = Path(env["CONTAINERS_CONF"])
    conf.write_text(conf.read_text().replace('events_logger = "none"',
                                             f'events_logger = "file"\nevents_logfile_path = "{store}/events.log"'))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "ef.toml").write_text('[[rule]]\nname = "all"\ndscp = "EF"\n')
    (policies / "af41.toml").write_text('[[rule]]\nname = "all"\ndscp = "AF41"\n')
    agent_conf = tmp_path / "agent.toml"
    agent_conf.write_text(f'[[assign]]\nimage = "*"\nname = "swtest-c-*"\npolicy = "af41"\n')

    def podman(*args, timeout=240):
        return subprocess.run(["podman", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)

    pid = os.getpid()
    a, b, c, d = (f"swtest-{x}-{pid}" for x in "abcd")
    port = util.free_port()
    mounted_bpffs = subprocess.run(
        ["sh", "-c", "[ \"$(stat -fc %T /sys/fs/bpf)\" = bpf_fs ] && exit 1; mount -t bpf bpf /sys/fs/bpf"],
        timeout=10).returncode == 0
    agents = []

    def line_with(proc, needle, timeout):
        """The first stdout line of proc that contains needle, within timeout seconds."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = util.wait_output_line(proc, timeout=max(1.0, (deadline - time.monotonic()) / util.TIME_SCALE))
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} from the agent: {seen}")

    def start_agent():
        p = subprocess.Popen([util.SOCKWRAP_BIN, "agent", "--runtime", "podman", "--policies", str(policies),
                              "-c", str(agent_conf)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        agents.append(p)
        return p

    def run(name, *labels):
        args = [x for lb in labels for x in ("--label", lb)]
        r = podman("run", "-d", "--name", name, *args, "--network", "host", "--rootfs", str(rootfs),
                   "/bin/busybox", "sleep", "600")
        assert r.returncode == 0, r.stderr

    def connect(name):
        r = podman("exec", name, "/ctr_client", "127.0.0.1", str(port), "-1")
        assert r.returncode == 0, (name, r.stdout, r.stderr)

    try:
        run(a, "sockwrap.policy=ef")
        with tos_server(socket.AF_INET, port) as srv:
            connect(a)                                  # before the agent: 0
            ag = start_agent()
            line = line_with(ag, "ready: waiting", 120 * util.TIME_SCALE)
            run(b, "sockwrap.policy=ef")
            run(c)
            run(d, "other=label")
            logs = []
            for name in (b, c, d):
                logs.append(line_with(ag, name, 120 * util.TIME_SCALE))
            for name in (a, b, c, d):
                connect(name)
            ag.kill()
            ag.wait(timeout=10)
            connect(a)                                  # the agent gone: still EF
            ag2 = start_agent()
            again = line_with(ag2, a, 120 * util.TIME_SCALE)
            got = srv.wait(6, timeout=60 * util.TIME_SCALE)
        assert [g["tos"] for g in got] == [0, EF, EF, 0x88, 0, EF], (got, line, logs)
        assert "no policy" in logs[2], logs
        assert "attached already" in again, again
    finally:
        for p in agents:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        podman("rm", "-f", "-t", "0", a, b, c, d)
        # The containers' cgroups are gone: doctor removes their pins.
        subprocess.run([util.SOCKWRAP_BIN, "doctor"], capture_output=True, timeout=120)
        if mounted_bpffs:
            subprocess.run(["umount", "/sys/fs/bpf"], timeout=10)
        shutil.rmtree(store, ignore_errors=True)


K8S_INNER = r'''
import json, os, subprocess, sys, time
from pathlib import Path

sw, cgroot, py, port, policies, crictl_dir, pods_json = sys.argv[1:8]
subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True, timeout=10)
top = Path(cgroot) / f"swtest-k8s-{os.getpid()}"
uid1, uid2, uid3 = "8d3c6a52-1f3e-4b7a-9c1d-2e3f4a5b6c7d", "0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f", "11111111-2222-4333-8444-555555555555"
ctr = "c0ffee" + "0" * 58
# The kubelet's two drivers: systemd (Burstable) and cgroupfs (Guaranteed), each pod with a
# container cgroup inside; a third pod (BestEffort, systemd) without the annotation.
pods = {
    uid1: top / "kubepods.slice/kubepods-burstable.slice" / f"kubepods-burstable-pod{uid1.replace('-', '_')}.slice" / f"cri-containerd-{ctr}.scope",
    uid2: top / "kubepods" / f"pod{uid2}" / ctr,
    uid3: top / "kubepods.slice/kubepods-besteffort.slice" / f"kubepods-besteffort-pod{uid3.replace('-', '_')}.slice" / f"cri-containerd-{ctr[::-1]}.scope",
}
for d in pods.values():
    d.mkdir(parents=True)
Path(pods_json).write_text(json.dumps({"items": [
    {"id": "s1", "metadata": {"name": "db-0", "uid": uid1, "namespace": "prod"}, "state": "SANDBOX_READY",
     "annotations": {"sockwrap.io/policy": "ef"}},
    {"id": "s2", "metadata": {"name": "media-0", "uid": uid2, "namespace": "prod"}, "state": "SANDBOX_READY",
     "annotations": {"sockwrap.io/policy": "ef"}},
    {"id": "s3", "metadata": {"name": "web-0", "uid": uid3, "namespace": "prod"}, "state": "SANDBOX_READY",
     "annotations": {}},
]}))
env = dict(os.environ, PATH=f"{crictl_dir}:{os.environ['PATH']}")
out = {}
CLIENT = "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); s.send(b'x'); s.close()"


def client_in(cg):
    return subprocess.run(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", py, "-c", CLIENT, port],
                          timeout=60).returncode


try:
    out["before"] = [client_in(pods[u]) for u in (uid1, uid2, uid3)]
    r = subprocess.run([sw, "agent", "--runtime", "cri", "--once", "--policies", policies], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    out["agent"] = [r.returncode, r.stdout, r.stderr]
    out["after"] = [client_in(pods[u]) for u in (uid1, uid2, uid3)]
    r = subprocess.run([sw, "agent", "--runtime", "cri", "--once", "--policies", policies], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    out["agent_again"] = [r.returncode, r.stdout, r.stderr]
    out["status"] = subprocess.run([sw, "status", "--containers"], stdout=subprocess.PIPE, text=True, timeout=60).stdout
finally:
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        for _ in range(100):
            if not (d / "cgroup.procs").read_text().strip():
                break
            time.sleep(0.05)
        d.rmdir()
    top.rmdir()
print(json.dumps(out))
'''


def test_agent_gives_annotated_pods_their_policy_through_the_cri(tmp_path):
    """`sockwrap agent --runtime cri` with recorded `crictl pods -o json` answers (a crictl
    stand-in prints them) and cgroups made in the kubelet's layouts (systemd driver, Burstable;
    cgroupfs driver, Guaranteed; a BestEffort pod without the annotation): the annotated pods'
    containers carry EF at the peer (0 before), the other pod 0; a second run leaves them
    attached ("attached already"). No cluster runs here: the kubelet and the CRI are stood in
    for by what they write (cgroups) and answer (JSON)."""
    util.require_root("attaching BPF programs to a cgroup needs root")
    util.require_tool("unshare")
    util.require_sockwrap()
    cgroot = util.cgroup2_mount()
    util.require(cgroot is not None, "no cgroup v2 hierarchy mounted")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "ef.toml").write_text('[[rule]]\nname = "all"\ndscp = "EF"\n')
    crictl_dir = tmp_path / "bin"
    crictl_dir.mkdir()
    pods_json = tmp_path / "pods.json"
    crictl = crictl_dir / "crictl"
    crictl.write_text(f'#!/bin/sh\n[ "$1 $2 $3" = "pods -o json" ] || exit 64\nexec cat {pods_json}\n')
    crictl.chmod(0o755)
    inner = tmp_path / "inner.py"
    inner.write_text(K8S_INNER)
    port = util.free_port()
    with tos_server(socket.AF_INET, port) as srv:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", PY, str(inner), util.SOCKWRAP_BIN, str(cgroot),
                            PY, str(port), str(policies), str(crictl_dir), str(pods_json)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=240)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out = json.loads(r.stdout.splitlines()[-1])
        got = srv.wait(6, timeout=10)
    assert out["before"] == [0, 0, 0] and out["after"] == [0, 0, 0], out
    rc, stdout, err = out["agent"]
    assert rc == 0, stdout + err
    assert [g["tos"] for g in got] == [0, 0, 0, EF, EF, 0], (got, stdout, err)
    assert stdout.count("(annotation sockwrap.io/policy) attached") == 2, stdout
    assert "pod prod/web-0" in stdout and "no policy" in stdout, stdout
    assert out["agent_again"][1].count("attached already") == 2, out["agent_again"]
