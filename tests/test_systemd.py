"""`sockwrap enable/disable/status UNIT`: a drop-in for a systemd service, tested under
`--root DIR` only (never the machine's /etc).

Two ways of starting the service:
- the real systemd (test_real_systemd_*): /lib/systemd/systemd runs as PID 1 of new PID,
  mount, UTS, IPC and cgroup namespaces, with the test root's /etc bind-mounted over /etc
  (a copy of the host's plus what `enable --root` wrote) and the vendor unit in a fresh
  /run; it reads the vendor unit and the drop-in itself and starts the unit;
- for the finer cases, the environment composed the way systemd.exec(5) says (unit file,
  then its drop-ins by file name; Environment= merged per variable, an empty assignment
  resetting the list; quotes and `%%`), by the test's own parser -- not sockwrap's -- and
  the unit's ExecStart started with exactly that environment.
The witness is the peer: the server reads the ToS of the connection (IP_RECVTOS); the same
start without the drop-in is the control.
"""
import os
import shlex
import shutil
import socket
import json
import subprocess
import textwrap
from pathlib import Path

import util
from util import EF, PY, run, tos_server

AF11 = 10 << 2


# --------------------------------------------------------------------------- systemd, as documented

UNIT_DIRS = ["etc/systemd/system", "run/systemd/system", "usr/local/lib/systemd/system",
             "usr/lib/systemd/system", "lib/systemd/system"]


def _words(value):
    """systemd's unquoting of an Environment= value (extract_first_word, UNQUOTE|CUNESCAPE)."""
    value = value.replace("%%", "\0")
    lex = shlex.shlex(value, posix=True)
    lex.whitespace_split = True
    lex.escapedquotes = "\"'"
    return [w.replace("\0", "%") for w in lex]


def _service_lines(path):
    section, out, cont = None, [], ""
    for raw in Path(path).read_text().splitlines():
        line = cont + raw
        if line.rstrip().endswith("\\"):
            cont = line.rstrip()[:-1] + " "
            continue
        cont = ""
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            section = s
            continue
        if section == "[Service]" and "=" in s:
            k, v = s.split("=", 1)
            out.append((k.strip(), v.strip()))
    return out


def unit_files(root, unit):
    """The unit file and its drop-ins, in systemd's reading order."""
    main = next(Path(root, d, unit) for d in UNIT_DIRS if Path(root, d, unit).is_file())
    drop = {}
    for d in reversed(UNIT_DIRS):
        dd = Path(root, d, unit + ".d")
        if dd.is_dir():
            for f in dd.glob("*.conf"):
                drop[f.name] = f
    return [main] + [drop[n] for n in sorted(drop)]


def service_env(files):
    env, exec_start = {}, None
    for f in files:
        for k, v in _service_lines(f):
            if k == "Environment":
                if not v:
                    env.clear()
                for w in _words(v):
                    name, _, val = w.partition("=")
                    env[name] = val
            elif k == "ExecStart":
                exec_start = v
    return env, exec_start


def start_as_systemd(files, root=None, timeout=20):
    """Run ExecStart with the environment systemd would give it (plus PATH, as systemd's
    default), return CompletedProcess. With `root`, the service sees that directory's
    /etc/sockwrap (where `enable --root` copied the policy) as its /etc/sockwrap."""
    env, exec_start = service_env(files)
    if root is not None and env.get("SOCKWRAP_CONFIG", "").startswith("/etc/sockwrap/"):
        env["SOCKWRAP_CONFIG"] = str(Path(root) / env["SOCKWRAP_CONFIG"].lstrip("/"))
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    argv = shlex.split(exec_start.lstrip("-@:+!"))
    return subprocess.run(argv, env=env, timeout=timeout, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------------------- fixtures

def make_root(tmp_path, port, extra_service=""):
    """A root with one vendor unit: a TCP client that connects to the test server and
    reports its environment and loaded libraries."""
    root = tmp_path / "root"
    vendor = root / "usr/lib/systemd/system/swdemo.service"
    vendor.parent.mkdir(parents=True)
    other = tmp_path / "libother.so"
    src = next(p for p in ("/lib/x86_64-linux-gnu/libutil.so.1", "/usr/lib/x86_64-linux-gnu/libutil.so.1",
                           "/lib/x86_64-linux-gnu/libdl.so.2") if os.path.exists(p))
    other.write_bytes(Path(src).read_bytes())
    probe = tmp_path / "probe.sh"
    probe.write_text(
        "#!/bin/sh\n"
        f"'{PY}' '{util.PEERS}/tcp_client.py' 127.0.0.1 {port} || exit 1\n"
        "echo \"FOO=$FOO\"\n"
        "grep -o '[^ ]*lib[a-z]*\\.so[.0-9]*$' /proc/self/maps | sort -u\n")
    probe.chmod(0o755)
    vendor.write_text(
        "[Unit]\nDescription=sockwrap test service\n\n[Service]\nType=oneshot\n"
        f"Environment=FOO=bar \"LD_PRELOAD={other}\"\n{extra_service}"
        f"ExecStart={probe}\n")
    return root, vendor, other


def sw(*args):
    util.require_sockwrap()
    return run([util.SOCKWRAP_BIN, *args])


def tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


# --------------------------------------------------------------------------- tests

def test_enable_gives_the_service_the_policy_and_keeps_its_environment(tmp_path, port):
    root, vendor, other = make_root(tmp_path, port)
    vendor_bytes = vendor.read_bytes()
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nname = "all"\ndscp = "EF"\n')

    # Control: the unit as the vendor ships it gets no DSCP.
    with tos_server(socket.AF_INET, port) as srv:
        r = start_as_systemd(unit_files(root, "swdemo.service"))
        assert r.returncode == 0, r.stderr
        assert srv.wait(1)[0]["tos"] == 0

    r = sw("enable", "swdemo", "-c", policy, "--root", root)
    assert r.returncode == 0, r.stderr
    dropin = root / "etc/systemd/system/swdemo.service.d/sockwrap.conf"
    copy = root / "etc/sockwrap/units/swdemo.service.toml"
    assert dropin.is_file() and copy.read_bytes() == policy.read_bytes()
    assert vendor.read_bytes() == vendor_bytes, "the vendor unit was edited"

    files = unit_files(root, "swdemo.service")
    env, _ = service_env(files)
    lib = env["LD_PRELOAD"].split(":")[0]
    assert lib.endswith("/libsockwrap.so") and "/../" not in lib
    assert env["LD_PRELOAD"].split(":")[1:] == [str(other)], env["LD_PRELOAD"]
    assert env["FOO"] == "bar"
    assert env["SOCKWRAP_CONFIG"] == "/etc/sockwrap/units/swdemo.service.toml"
    with tos_server(socket.AF_INET, port) as srv:
        r = start_as_systemd(files, root=root)
        assert r.returncode == 0, r.stderr
        got = srv.wait(1)
    assert got[0]["tos"] == EF, (got, r.stderr)
    assert "FOO=bar" in r.stdout
    assert "libsockwrap.so" in r.stdout and other.name in r.stdout, r.stdout


def test_copied_policy_is_not_changed_by_later_edits(tmp_path, port):
    root, _vendor, _ = make_root(tmp_path, port)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\ndscp = "EF"\n')
    assert sw("enable", "swdemo.service", "-c", policy, "--root", root).returncode == 0
    policy.write_text('[[rule]]\ndscp = "AF11"\n')
    st = sw("status", "swdemo", "--root", root)
    assert st.returncode == 0, st.stdout + st.stderr
    assert "has changed since" in st.stdout, st.stdout
    copy = root / "etc/sockwrap/units/swdemo.service.toml"
    with tos_server(socket.AF_INET, port) as srv:
        r = start_as_systemd(unit_files(root, "swdemo.service"), root=root)
        assert r.returncode == 0, r.stderr
        assert srv.wait(1)[0]["tos"] == EF  # the copy, not the edited file (AF11)
    # Enabling again takes the new version.
    assert sw("enable", "swdemo.service", "-c", policy, "--root", root).returncode == 0
    assert copy.read_text() == policy.read_text()


def test_flags_only_and_disable_leaves_nothing(tmp_path, port):
    root, vendor, _ = make_root(tmp_path, port)
    before = tree(root)
    r = sw("enable", "swdemo", "--dscp", "AF11", "--keepalive", "30,10,3", "--root", root)
    assert r.returncode == 0, r.stderr
    with tos_server(socket.AF_INET, port) as srv:
        r = start_as_systemd(unit_files(root, "swdemo.service"))
        assert r.returncode == 0, r.stderr
        assert srv.wait(1)[0]["tos"] == AF11
    st = sw("status", "swdemo", "--root", root)
    assert st.returncode == 0 and "SOCKWRAP_DSCP=AF11" in st.stdout, st.stdout
    r = sw("disable", "swdemo", "--root", root)
    assert r.returncode == 0, r.stderr
    files = lambda: [p for p in tree(root) if not (root / p).is_dir()]  # noqa: E731
    assert files() == [p for p in before if not (root / p).is_dir()], "disable left files behind"
    assert not (root / "etc/systemd/system/swdemo.service.d").exists()
    assert not (root / "etc/sockwrap").exists()
    st = sw("status", "swdemo", "--root", root)
    assert st.returncode == 1 and "not enabled" in st.stdout
    # disable twice: nothing to do, still fine
    assert sw("disable", "swdemo", "--root", root).returncode == 0


def test_dry_run_changes_nothing(tmp_path, port):
    root, _vendor, _ = make_root(tmp_path, port)
    before = tree(root)
    r = sw("enable", "--dry-run", "swdemo", "--dscp", "EF", "--root", root)
    assert r.returncode == 0, r.stderr
    assert "[Service]" in r.stdout and "SOCKWRAP_DSCP=EF" in r.stdout
    assert tree(root) == before


def test_later_drop_in_overriding_ld_preload_is_reported(tmp_path, port):
    root, _vendor, _ = make_root(tmp_path, port)
    assert sw("enable", "swdemo", "--dscp", "EF", "--root", root).returncode == 0
    zz = root / "etc/systemd/system/swdemo.service.d/zz-local.conf"
    zz.write_text("[Service]\nEnvironment=LD_PRELOAD=/opt/other.so\n")
    st = sw("status", "swdemo", "--root", root)
    assert st.returncode == 1 and "OVERRIDDEN" in st.stdout and "zz-local.conf" in st.stdout, st.stdout
    # ... and systemd would indeed start it without the library (the witness agrees):
    env, _ = service_env(unit_files(root, "swdemo.service"))
    assert "libsockwrap" not in env["LD_PRELOAD"]


def test_refusals(tmp_path, port):
    root, _vendor, _ = make_root(tmp_path, port, extra_service="EnvironmentFile=-/etc/default/swdemo\n")
    r = sw("enable", "nosuchunit", "--dscp", "EF", "--root", root)
    assert r.returncode == 3 and "no such unit file" in r.stderr
    r = sw("enable", "swdemo", "--root", root)
    assert r.returncode == 2 and "no policy given" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\ndscp = "XX"\n')
    r = sw("enable", "swdemo", "-c", bad, "--root", root)
    assert r.returncode == 2 and "bad.toml:2:" in r.stderr, r.stderr
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/swdemo").write_text("LD_PRELOAD=/opt/x.so\n")
    r = sw("enable", "swdemo", "--dscp", "EF", "--root", root)
    assert r.returncode == 3 and "EnvironmentFile" in r.stderr, r.stderr
    assert not (root / "etc/systemd/system/swdemo.service.d").exists()
    # A file of the same name that sockwrap did not write is left alone.
    foreign = root / "etc/systemd/system/swdemo.service.d/sockwrap.conf"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Service]\nEnvironment=A=1\n")
    r = sw("disable", "swdemo", "--root", root)
    assert r.returncode == 3 and foreign.exists()


# --------------------------------------------------------------------------- a real systemd

CGROUP_FS = Path("/sys/fs/cgroup")


def _cgroup_dirs():
    return {p for p in CGROUP_FS.rglob("*") if p.is_dir()} if CGROUP_FS.is_dir() else set()


def run_real_systemd(root, unit_dirs_from, target, timeout=40, prelude=""):
    """Starts the real /lib/systemd/systemd as PID 1 of new PID, mount, UTS, IPC and cgroup
    namespaces (the network is the host's, so the unit reaches the test's server), with
    `root/etc` (a copy of the host's /etc plus what `enable --root` wrote) as /etc and a
    fresh /run holding the vendor units (none when `unit_dirs_from` is None). `prelude` runs
    in the namespace before systemd takes /run/systemd/system. The target's unit ends the
    manager when it is done (SuccessAction/FailureAction=exit). Cgroups that systemd made
    are removed afterwards."""
    before = _cgroup_dirs()
    script = (
        "set -e\n"
        f"mount --bind '{root}/etc' /etc\n"
        "mount -t tmpfs tmpfs /run\n"
        f"{prelude}\n"
        "mkdir -p /run/systemd/system\n"
        + (f"cp '{unit_dirs_from}'/* /run/systemd/system/\n" if unit_dirs_from else "") +
        "export container=sockwrap-test\n"
        f"exec /lib/systemd/systemd --system --unit={target} --log-target=console --log-level=warning\n")
    try:
        return subprocess.run(["timeout", "-s", "KILL", str(timeout), "unshare", "--fork", "--pid", "--mount",
                               "--uts", "--ipc", "--cgroup", "--mount-proc", "--propagation", "private",
                               "sh", "-c", script],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout + 10)
    finally:
        for d in sorted(_cgroup_dirs() - before, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass


def probe_reports_to_file(tmp_path):
    """Makes make_root's probe write its report into a file (systemd gives the service no
    terminal); returns the file."""
    out = tmp_path / "probe.out"
    probe = tmp_path / "probe.sh"
    probe.write_text(probe.read_text().replace("#!/bin/sh\n", f"#!/bin/sh\nexec >'{out}' 2>&1\n", 1))
    return out


def test_real_systemd_starts_the_unit_with_the_drop_in(tmp_path, port):
    """systemd itself composes the environment from the vendor unit and sockwrap's drop-in
    and starts the service; the peer sees EF, the same unit without the drop-in gives 0."""
    util.require_root("systemd as PID 1 of a namespace needs root")
    util.require_tool("unshare", "/lib/systemd/systemd")
    util.require_sockwrap()
    root, vendor, other = make_root(tmp_path, port)
    out = probe_reports_to_file(tmp_path)
    vendor.write_text(vendor.read_text().replace(
        "[Service]\n", "[Unit]\nDefaultDependencies=no\nSuccessAction=exit\nFailureAction=exit\n\n[Service]\n", 1))
    target = vendor.parent / "swtest.target"
    target.write_text("[Unit]\nDescription=sockwrap test\nRequires=swdemo.service\nAfter=swdemo.service\n")
    shutil.copytree("/etc", root / "etc", symlinks=True, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.lock", "systemd"))
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)  # only what enable writes

    # Control: the vendor unit alone.
    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, vendor.parent, "swtest.target")
        got = srv.wait(1, timeout=15)
    assert got and got[0]["tos"] == 0, (got, r.stdout[-3000:], out.read_text() if out.exists() else "")
    assert "FOO=bar" in out.read_text()
    out.unlink()

    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nname = "all"\ndscp = "EF"\n')
    r = sw("enable", "swdemo", "-c", policy, "--root", root)
    assert r.returncode == 0, r.stderr
    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, vendor.parent, "swtest.target")
        got = srv.wait(1, timeout=15)
    text = out.read_text() if out.exists() else ""
    assert got and got[0]["tos"] == EF, (got, r.stdout[-3000:], text)
    assert "FOO=bar" in text, text
    assert "libsockwrap.so" in text and other.name in text, text


# --------------------------------------------------------------------------- enable --kernel

KERNEL_PINS = "/sys/fs/bpf/sockwrap/swdemo_service"
BOOT_UNIT = "etc/systemd/system/sockwrap-pins-swdemo_service.service"
KINDS = ["setsockopt", "sock_create", "bind4", "bind6", "connect4", "connect6", "sendmsg4",
         "sendmsg6", "sock_ops"]


def test_enable_kernel_under_root_writes_bpfprogram_lines_and_pins_nothing(tmp_path, port):
    """Under --root: the drop-in names the pins in BPFProgram= lines (no LD_PRELOAD), nothing
    is pinned (said, with what would be), --dry-run writes nothing, `--strict` makes the unit
    refuse to start without its programs (AssertPathExists=), disable removes the drop-in;
    what the kernel backend cannot do, and redirects (systemd has no getpeername attach
    type), are refused with nothing written."""
    root, vendor, _ = make_root(tmp_path, port)
    vendor_bytes = vendor.read_bytes()
    before = tree(root)
    r = sw("enable", "swdemo", "--kernel", "--dscp", "EF", "--dry-run", "--root", root)
    assert r.returncode == 0, r.stderr
    assert tree(root) == before
    assert "BPFProgram=connect4:" + KERNEL_PINS + "/connect4" in r.stdout, r.stdout
    assert f"# would write {root / BOOT_UNIT}:" in r.stdout, r.stdout

    r = sw("enable", "swdemo", "--kernel", "--dscp", "EF", "--root", root)
    assert r.returncode == 0, r.stderr
    assert "not pinned: --root" in r.stdout, r.stdout
    for kind in KINDS:
        assert f"  {kind}: {KERNEL_PINS}/{kind}\n" in r.stdout, r.stdout
    drop_in = root / "etc/systemd/system/swdemo.service.d/sockwrap.conf"
    lines = drop_in.read_text().splitlines()
    assert [l for l in lines if l.startswith("BPFProgram=")] == \
        [f"BPFProgram={k}:{KERNEL_PINS}/{k}" for k in KINDS], lines
    assert not any("LD_PRELOAD" in l or l.startswith("Environment=") for l in lines), lines
    assert not any(l.startswith("AssertPathExists=") for l in lines)
    # The unit that pins the programs again at boot, pulled in before the unit starts; it
    # holds the policy as the variables the flags give.
    assert "Wants=sockwrap-pins-swdemo_service.service" in lines, lines
    assert "After=sockwrap-pins-swdemo_service.service" in lines, lines
    boot = (root / BOOT_UNIT).read_text().splitlines()
    assert "Before=swdemo.service" in boot and "Type=oneshot" in boot, boot
    assert 'Environment="SOCKWRAP_DSCP=EF"' in boot, boot
    assert f"ExecStart={util.SOCKWRAP_BIN} repin swdemo.service" in boot, boot
    assert vendor.read_bytes() == vendor_bytes
    assert not Path(KERNEL_PINS).exists()
    # What systemd will read: the test's own parser of the unit files.
    env, _ = service_env(unit_files(root, "swdemo.service"))
    assert "LD_PRELOAD" not in env or "libsockwrap" not in env["LD_PRELOAD"], env

    st = sw("status", "swdemo", "--root", root)
    assert st.returncode == 0, st.stdout + st.stderr
    assert "kernel backend: BPF programs pinned in " + KERNEL_PINS in st.stdout, st.stdout
    assert f"at boot: {root / BOOT_UNIT} pins them again" in st.stdout, st.stdout

    r = sw("enable", "swdemo", "--kernel", "--dscp", "EF", "--strict", "--root", root)
    assert r.returncode == 0, r.stderr
    asserts = [l for l in drop_in.read_text().splitlines() if l.startswith("AssertPathExists=")]
    assert asserts == [f"AssertPathExists={KERNEL_PINS}/{k}" for k in KINDS], asserts

    r = sw("disable", "swdemo", "--root", root)
    assert r.returncode == 0, r.stderr
    assert not drop_in.parent.exists()
    assert [p for p in tree(root) if p not in before] == ["etc", "etc/systemd", "etc/systemd/system"]
    before = tree(root)

    redirect = tmp_path / "redirect.toml"
    redirect.write_text('[[rule]]\nname = "lab"\nmatch = { port = 80 }\nredirect = "127.0.0.1:8080"\n')
    for args, why in ((["-c", redirect], "rule `lab`: redirect: systemd's BPFProgram= has no getpeername4/6"),
                      (["--linger", "3"], "linger: SO_LINGER")):
        r = sw("enable", "swdemo", "--kernel", *args, "--root", root)
        assert r.returncode == 2 and why in r.stderr, r.stderr
        assert tree(root) == before


ENABLE_KERNEL_INNER = util.INNER_PRELUDE + r"""

sw, unit, port0, port1, cgroot, py = sys.argv[1:7]
PINS = Path("/sys/fs/bpf/sockwrap/swdemo_service")
out = {}


# Nothing of the machine is changed: a private mount namespace, with its own /run (no
# daemon-reload of the machine's systemd), /etc/systemd/system and BPF filesystem.
must("mount", "-t", "tmpfs", "tmpfs", "/run")
must("mount", "-t", "tmpfs", "tmpfs", "/etc/systemd/system")
Path("/etc/systemd/system/swdemo.service").write_text(Path(unit).read_text())
must("mount", "-t", "tmpfs", "tmpfs", "/sys/fs/bpf")
out["not_bpffs"] = sh(sw, "enable", "swdemo", "--kernel", "--dscp", "EF")
out["not_bpffs_wrote"] = Path("/etc/systemd/system/swdemo.service.d").exists()
must("umount", "/sys/fs/bpf")
must("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")

out["enable"] = sh(sw, "enable", "swdemo", "--kernel", "--dscp", "EF")
out["pins"] = pins()
drop_in = Path("/etc/systemd/system/swdemo.service.d/sockwrap.conf").read_text()
progs = [l.split("=", 1)[1].split(":", 1) for l in drop_in.splitlines() if l.startswith("BPFProgram=")]
out["progs"] = progs

# What systemd does with BPFProgram= when it starts the unit, done by hand: attach each
# pinned program to the unit's cgroup (one of the test's own), then start the program in it.
cg = Path(cgroot) / f"swtest-enable-kernel-{os.getpid()}"
cg.mkdir()
client = [py, "-c", "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
          "s.send(b'x'); s.close()"]
in_cg = ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh"]
try:
    out["control"] = sh(*in_cg, *client, port0)
    out["attach"] = [sh("bpftool", "cgroup", "attach", cg, kind, "pinned", path, "multi")
                     for kind, path in progs]
    out["attached"] = sh("bpftool", "cgroup", "show", cg)
    out["client"] = sh(*in_cg, *client, port1)
    out["status"] = sh(sw, "status", "swdemo")
finally:
    for _ in range(100):
        if not (cg / "cgroup.procs").read_text().strip():
            break
        time.sleep(0.05)
    cg.rmdir()  # takes the attached programs with it

out["disable"] = sh(sw, "disable", "swdemo")
out["pins_after_disable"] = pins()
out["drop_in_after_disable"] = Path("/etc/systemd/system/swdemo.service.d/sockwrap.conf").exists()

# A reboot empties the BPF filesystem: status says the pins are missing.
must(sw, "enable", "swdemo", "--kernel", "--dscp", "EF")
must("umount", "/sys/fs/bpf")
must("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
out["status_after_reboot"] = sh(sw, "status", "swdemo")
# What the boot unit does (systemd runs it before the unit): its ExecStart with its
# Environment=. Without them, repin has no policy and pins nothing.
boot = Path("/etc/systemd/system/sockwrap-pins-swdemo_service.service").read_text().splitlines()
env = dict(l.split("=", 1)[1].strip('"').split("=", 1) for l in boot if l.startswith("Environment="))
argv = next(l for l in boot if l.startswith("ExecStart=")).split("=", 1)[1].split()
out["repin_no_env"] = sh(*argv)
out["pins_after_repin_no_env"] = pins()
r = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", **env}, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, timeout=60)
out["repin"] = [r.returncode, r.stdout, r.stderr]
out["pins_after_repin"] = pins()
r = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", **env}, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, timeout=60)
out["repin_again"] = [r.returncode, r.stdout, r.stderr]
out["disable_after_reboot"] = sh(sw, "disable", "swdemo")
out["boot_unit_after_disable"] = Path("/etc/systemd/system/sockwrap-pins-swdemo_service.service").exists()
print(json.dumps(out))
"""


def test_enable_kernel_pins_programs_that_give_a_cgroup_the_policy(tmp_path, port, port2):
    """In a private mount namespace with a BPF filesystem of its own: `enable --kernel` pins
    the programs and maps and names them in BPFProgram= lines; the programs attached by hand
    the way systemd does (bpftool cgroup attach TYPE pinned PATH multi, to a cgroup of the
    test's) give a client in that cgroup EF at the peer (IP_RECVTOS; before attaching: 0);
    status shows the pins and what they counted; disable removes pins and drop-in; after a
    "reboot" (a fresh bpffs) status reports the pins missing; a /sys/fs/bpf that is not a
    bpffs is refused with nothing written. The machine's own mounts are unchanged."""
    util.require_root("pinning BPF programs needs root")
    util.require_tool("unshare", "bpftool")
    util.require_sockwrap()
    cgroot = util.cgroup2_mount()
    util.require(cgroot is not None, "no cgroup v2 hierarchy mounted")
    mounts = Path("/proc/self/mountinfo").read_text()
    unit = tmp_path / "swdemo.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    inner = tmp_path / "inner.py"
    inner.write_text(ENABLE_KERNEL_INNER)
    with tos_server(socket.AF_INET, port) as ctl, tos_server(socket.AF_INET, port2) as srv:
        cmd = ["unshare", "-m", "--propagation", "private", PY, inner,
               util.SOCKWRAP_BIN, unit, port, port2, cgroot, PY]
        r = subprocess.run([str(c) for c in cmd],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout.splitlines()[-1])
        got_ctl, got = ctl.wait(1), srv.wait(1)
    assert Path("/proc/self/mountinfo").read_text() == mounts
    assert not Path(KERNEL_PINS).exists()

    rc, _, err = out["not_bpffs"]
    assert rc == 3 and "/sys/fs/bpf is not a BPF filesystem" in err, err
    assert out["not_bpffs_wrote"] is False

    rc, stdout, err = out["enable"]
    assert rc == 0 and "pinned 9 programs and" in stdout, stdout + err
    pinned_list = out["pins"]
    pinned = set(pinned_list)
    for kind in KINDS:
        assert f"sockwrap/swdemo_service/{kind}" in pinned, pinned
    for m in ("config", "plans", "decisions", "counters", "sockets", "lockable"):
        assert f"sockwrap/swdemo_service/maps/{m}" in pinned, pinned
    assert out["progs"] == [[k, f"{KERNEL_PINS}/{k}"] for k in KINDS], out["progs"]
    assert all(a[0] == 0 for a in out["attach"]), out["attach"]
    assert "sw_connect4" in out["attached"][1], out["attached"]

    assert out["control"][0] == 0 and out["client"][0] == 0, (out["control"], out["client"])
    assert got_ctl and got_ctl[0]["tos"] == 0, got_ctl
    assert got and got[0]["tos"] == EF, got

    rc, stdout, _ = out["status"]
    assert f"connect4: {KERNEL_PINS}/connect4 (pinned)" in stdout, stdout
    assert "plans applied:" in stdout and "connect 1" in stdout, stdout

    rc, stdout, err = out["disable"]
    assert rc == 0 and f"pins in {KERNEL_PINS}" in stdout, stdout + err
    assert out["pins_after_disable"] == [] and out["drop_in_after_disable"] is False

    rc, stdout, _ = out["status_after_reboot"]
    assert rc == 1 and "connect4: " + KERNEL_PINS + "/connect4 is MISSING" in stdout, stdout
    assert "pins do not survive a reboot" in stdout, stdout
    # The boot unit's command: without its environment no policy, nothing pinned; with it
    # the pins are back (the same files), and a second run leaves them as they are.
    rc, _, err = out["repin_no_env"]
    assert rc == 2 and "no policy in the environment" in err, err
    assert out["pins_after_repin_no_env"] == []
    rc, stdout, err = out["repin"]
    assert rc == 0 and "pinned 9 programs and" in stdout, stdout + err
    assert out["pins_after_repin"] == pinned_list, out["pins_after_repin"]
    rc, stdout, err = out["repin_again"]
    assert rc == 0 and "the 9 pins in " + KERNEL_PINS + " are there" in stdout, stdout + err
    assert out["disable_after_reboot"][0] == 0, out["disable_after_reboot"]
    assert out["boot_unit_after_disable"] is False


def test_real_systemd_attaches_the_pinned_programs(tmp_path, port):
    """systemd 252 itself, PID 1 of its namespaces, reads sockwrap's BPFProgram= lines and
    attaches the pinned programs to the unit's cgroup: the unit's connection carries EF at
    the peer; the same unit without the drop-in gives 0. After a "reboot" (a fresh bpffs)
    the boot unit enable wrote pins them again before the unit starts: EF again (also under
    --strict); without the boot unit the unit runs without them (0), or not at all under
    --strict. systemd attaches BPFProgram= only
    with the unified cgroup v2 hierarchy, so the namespace mounts cgroup2 at /sys/fs/cgroup
    (this machine runs hybrid); its bpffs and pins are the namespace's own."""
    util.require_root("systemd as PID 1 of a namespace needs root")
    util.require_tool("unshare", "/lib/systemd/systemd")
    util.require_sockwrap()
    root, vendor, _ = make_root(tmp_path, port)
    out = probe_reports_to_file(tmp_path)
    shutil.copytree("/etc", root / "etc", symlinks=True, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.lock", "systemd"))
    units = root / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    # Units in /etc (the namespace's /etc is root/etc): `enable` runs before systemd does.
    (units / "swdemo.service").write_text(vendor.read_text().replace(
        "[Service]\n", "[Unit]\nDefaultDependencies=no\nSuccessAction=exit\nFailureAction=exit\n\n[Service]\n", 1))
    # swdone ends the manager even when swdemo does not start (an assertion failed).
    (units / "swdone.service").write_text(
        "[Unit]\nDefaultDependencies=no\nAfter=swdemo.service\nSuccessAction=exit\n\n"
        "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    (units / "swtest.target").write_text(
        "[Unit]\nDescription=sockwrap test\nWants=swdemo.service swdone.service\n"
        "After=swdemo.service swdone.service\n")
    # A cgroup2 mount of the namespace's own (rooted at its cgroup namespace). Where cgroup
    # v2 is already mounted alone there (the kernel-matrix VMs), mounting it again on the
    # same place is EBUSY: that mount goes first (the namespace's mounts are private).
    mounts = ("mount -t bpf bpf /sys/fs/bpf\n"
              "if [ \"$(stat -fc %T /sys/fs/cgroup)\" = cgroup2fs ]; then umount -l /sys/fs/cgroup; fi\n"
              "mount -t cgroup2 none /sys/fs/cgroup\n")
    enable = f"'{util.SOCKWRAP_BIN}' enable swdemo.service --kernel --dscp EF\n"

    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, None, "swtest.target", prelude=mounts)
        got = srv.wait(1, timeout=15)
    assert got and got[0]["tos"] == 0, (got, r.stdout[-3000:], out.read_text() if out.exists() else "")
    assert not (units / "swdemo.service.d").exists()
    out.unlink()

    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, None, "swtest.target", prelude=mounts + enable)
        got = srv.wait(1, timeout=15)
    text = out.read_text() if out.exists() else ""
    assert "pinned 9 programs" in r.stdout, r.stdout[-3000:]
    assert got and got[0]["tos"] == EF, (got, r.stdout[-3000:], text)
    # Through the kernel backend alone: no library in the service.
    assert "libsockwrap.so" not in text, text
    assert (units / "swdemo.service.d/sockwrap.conf").read_text().count("BPFProgram=") == 9
    assert not Path(KERNEL_PINS).exists()

    # After a reboot: a fresh, empty BPF filesystem, and no sockwrap command run by hand.
    # The boot unit enable wrote (sockwrap-pins-swdemo_service.service, pulled in by the
    # drop-in before the unit) pins the programs again: EF at the peer.
    reboot = "umount /sys/fs/bpf\nmount -t bpf bpf /sys/fs/bpf\n"
    assert (root / BOOT_UNIT).is_file()
    out.unlink()
    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, None, "swtest.target", prelude=mounts + enable + reboot)
        got = srv.wait(1, timeout=15)
    text = out.read_text() if out.exists() else ""
    assert got and got[0]["tos"] == EF, (got, r.stdout[-3000:], text)
    assert "libsockwrap.so" not in text, text
    # Control: the same reboot without the boot unit. systemd starts the unit without the
    # programs (as the library runs a program untouched when its policy is broken) ...
    no_boot_unit = f"rm /etc/systemd/system/{Path(BOOT_UNIT).name}\n"
    out.unlink()
    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, None, "swtest.target",
                             prelude=mounts + enable + reboot + no_boot_unit)
        got = srv.wait(1, timeout=15)
    assert got and got[0]["tos"] == 0, (got, r.stdout[-3000:])
    # ... and with --strict (AssertPathExists=) it does not start it at all.
    out.unlink()
    strict = enable.replace("--kernel", "--kernel --strict")
    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, None, "swtest.target",
                             prelude=mounts + strict + reboot + no_boot_unit)
        got = srv.wait(1, timeout=3)
    assert got == [] and not out.exists(), (got, r.stdout[-3000:])
    assert "AssertPathExists=" in (units / "swdemo.service.d/sockwrap.conf").read_text()
    # With the boot unit, a --strict unit starts after the reboot, with its programs.
    with tos_server(socket.AF_INET, port) as srv:
        r = run_real_systemd(root, None, "swtest.target", prelude=mounts + strict + reboot)
        got = srv.wait(1, timeout=15)
    assert got and got[0]["tos"] == EF, (got, r.stdout[-3000:])
