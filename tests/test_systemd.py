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
import subprocess
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


def run_real_systemd(root, unit_dirs_from, target, timeout=40):
    """Starts the real /lib/systemd/systemd as PID 1 of new PID, mount, UTS, IPC and cgroup
    namespaces (the network is the host's, so the unit reaches the test's server), with
    `root/etc` (a copy of the host's /etc plus what `enable --root` wrote) as /etc and a
    fresh /run holding the vendor units. The target's unit ends the manager when it is done
    (SuccessAction/FailureAction=exit). Cgroups that systemd made are removed afterwards."""
    before = _cgroup_dirs()
    script = (
        "set -e\n"
        f"mount --bind '{root}/etc' /etc\n"
        "mount -t tmpfs tmpfs /run\n"
        "mkdir -p /run/systemd/system\n"
        f"cp '{unit_dirs_from}'/* /run/systemd/system/\n"
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


def test_real_systemd_starts_the_unit_with_the_drop_in(tmp_path, port):
    """systemd itself composes the environment from the vendor unit and sockwrap's drop-in
    and starts the service; the peer sees EF, the same unit without the drop-in gives 0."""
    util.require_root("systemd as PID 1 of a namespace needs root")
    util.require_tool("unshare", "/lib/systemd/systemd")
    util.require_sockwrap()
    root, vendor, other = make_root(tmp_path, port)
    out = tmp_path / "probe.out"
    # the probe reports into a file (systemd gives the service no terminal)
    probe = tmp_path / "probe.sh"
    probe.write_text(probe.read_text().replace("#!/bin/sh\n", f"#!/bin/sh\nexec >'{out}' 2>&1\n", 1))
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
