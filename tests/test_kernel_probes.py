"""What the running kernel supports, as `sockwrap doctor` reports it from its probes, and
the refusals by name that follow from it (`run --kernel --mptcp`, a kernel backend or
`attach` a kernel cannot carry).

Written for any kernel: the matrix runs it on the host's 6.18 and in Debian's 6.1 and 6.12
VMs. Each test first finds out what this kernel can do by a probe of its own, independent
of sockwrap's: the kernel's BTF read here in Python (is there an update_socket_protocol?),
an fmod_ret program loaded with the bpf() system call through ctypes, pidfd_getfd called
through ctypes, an IPPROTO_MPTCP socket, `bpftool feature probe` for the helpers, and
/proc/mounts for the cgroup layout. Then it checks that sockwrap says the same, and refuses
by name, in one line, what the kernel lacks. Measured when this was written:

    kernel            update_socket_protocol fmod_ret   bpf_loop etc.   run --kernel --mptcp
    6.18.44 (host)    EPERM (fmod_ret refused)          yes             "fmod_ret programs are refused"
    6.1.0-57 (VM)     no such function (ESRCH)          yes             "no update_socket_protocol"
    6.12.118 (VM)     loads and attaches                yes             converts (test_mptcp_kernel.py)

The probes attach nothing except doctor's option probe, which attaches to a cgroup of its
own for one connect and removes it: the fixture checks that no sockwrap cgroup is left.
"""
import ctypes
import json
import os
import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest

import util

SYS_BPF = {"x86_64": 321, "aarch64": 280}
SYS_PIDFD_GETFD = 438  # the same on x86_64 and aarch64 (asm-generic numbering since 5.x)
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_TRACING = 26
BPF_MODIFY_RETURN = 26
BTF_KIND_FUNC = 12

_libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------- independent probes

def btf_func_id(name, path="/sys/kernel/btf/vmlinux"):
    """The BTF id of the FUNC `name` in the kernel's BTF, read here (not with libbpf or
    aya); None when the kernel has no such function, or no BTF."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", data, 0)
    if magic != 0xEB9F:
        return None
    types = data[hdr_len + type_off: hdr_len + type_off + type_len]
    strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
    want = name.encode()
    # Bytes each kind carries after its 12-byte common header, by vlen.
    extra = {1: lambda v: 4, 3: lambda v: 12, 4: lambda v: 12 * v, 5: lambda v: 12 * v,
             6: lambda v: 8 * v, 13: lambda v: 8 * v, 14: lambda v: 4, 15: lambda v: 12 * v,
             17: lambda v: 4, 19: lambda v: 12 * v}
    off, tid = 0, 1
    while off + 12 <= len(types):
        name_off, info, _ = struct.unpack_from("<III", types, off)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == BTF_KIND_FUNC:
            end = strings.index(b"\0", name_off)
            if strings[name_off:end] == want:
                return tid
        off += 12 + extra.get(kind, lambda v: 0)(vlen)
        tid += 1
    return None


class Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("regs", ctypes.c_uint8),
                ("off", ctypes.c_int16), ("imm", ctypes.c_int32)]


class ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32),
                ("prog_btf_fd", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("line_info_cnt", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_btf_obj_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class RawTp(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def bpf(cmd, attr):
    nr = SYS_BPF[os.uname().machine]
    r = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.byref(attr),
                      ctypes.c_long(ctypes.sizeof(attr)))
    return r, (ctypes.get_errno() if r < 0 else 0)


def fmod_ret_update_socket_protocol():
    """'missing' (no such function in the BTF), 'works' (loads and attaches), or the
    errno name the kernel answered."""
    fid = btf_func_id("update_socket_protocol")
    if fid is None:
        return "missing"
    insns = (Insn * 2)(Insn(0xB7, 0, 0, 0), Insn(0x95, 0, 0, 0))  # r0 = 0; exit
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ProgLoad(prog_type=BPF_PROG_TYPE_TRACING, insn_cnt=2,
                    insns=ctypes.addressof(insns), license=ctypes.addressof(lic),
                    prog_name=b"probe_mptcp", expected_attach_type=BPF_MODIFY_RETURN,
                    attach_btf_id=fid)
    fd, err = bpf(BPF_PROG_LOAD, attr)
    if fd < 0:
        return errno_name(err)
    try:
        link, err = bpf(BPF_RAW_TRACEPOINT_OPEN, RawTp(prog_fd=fd))
        if link < 0:
            return errno_name(err)
        os.close(link)  # detaches it
        return "works"
    finally:
        os.close(fd)


def errno_name(e):
    import errno
    return errno.errorcode.get(e, str(e))


def pidfd_getfd_works():
    pidfd = os.pidfd_open(os.getpid())
    try:
        r = _libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_int(pidfd),
                          ctypes.c_int(pidfd), ctypes.c_uint(0))
        if r < 0:
            return errno_name(ctypes.get_errno())
        os.close(r)
        return "works"
    finally:
        os.close(pidfd)


def mptcp_socket_works():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262).close()
        return "works"
    except OSError as e:
        return errno_name(e.errno)


def cgroup_layout():
    """('unified' | 'hybrid' | 'v1' | 'none', where cgroup v2 is)."""
    v2, v1 = None, False
    for line in Path("/proc/mounts").read_text().splitlines():
        f = line.split()
        if len(f) >= 3 and f[2] == "cgroup2" and v2 is None:
            v2 = f[1]
        elif len(f) >= 3 and f[2] == "cgroup":
            v1 = True
    if v2:
        return ("hybrid" if v1 else "unified"), v2
    return ("v1" if v1 else "none"), None


def bpftool_helpers():
    """{program type: set of helpers} from `bpftool feature probe kernel`."""
    util.require_tool("bpftool")
    r = subprocess.run(["bpftool", "feature", "probe", "kernel"], capture_output=True,
                       text=True, timeout=120)
    helpers, cur = {}, None
    for line in r.stdout.splitlines():
        m = re.match(r"eBPF helpers supported for program type (\S+):", line)
        if m:
            cur = helpers.setdefault(m.group(1), set())
        elif cur is not None and line.strip().startswith("- "):
            cur.add(line.strip()[2:])
        elif line.strip() == "":
            cur = None
    return helpers


# What sockwrap's programs call, per program type, and the words a refusal names it by.
NEEDED_HELPERS = {
    "cgroup_sock_addr": ["bpf_loop", "bpf_set_retval", "bpf_setsockopt", "bpf_bind",
                         "bpf_sk_storage_get", "bpf_get_current_comm"],
    "sock_ops": ["bpf_loop", "bpf_setsockopt", "bpf_sk_storage_get"],
    "cgroup_sockopt": ["bpf_sk_storage_get"],
    "cgroup_sock": ["bpf_sk_storage_get", "bpf_get_current_comm"],
}


def missing_helpers():
    have = bpftool_helpers()
    return sorted({h for t, hs in NEEDED_HELPERS.items() for h in hs
                   if h not in have.get(t, set())})


# --------------------------------------------------------------------------- fixtures

def sockwrap_cgroups():
    return util.cgroups_named("sockwrap-")


@pytest.fixture(autouse=True)
def no_cgroup_left_behind():
    """None of sockwrap's cgroups left by a test here (those of other runs are not ours)."""
    yield from util.no_cgroups_left("sockwrap-", none_before=False)


def doctor_json():
    util.require_sockwrap()
    r = util.run([util.SOCKWRAP_BIN, "doctor", "--json"], timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def require_kernel_backend():
    util.require_kernel_backend("loading BPF programs needs root")


# --------------------------------------------------------------------------- doctor

def test_doctor_reports_what_independent_probes_find_on_this_kernel():
    require_kernel_backend()
    d = doctor_json()
    assert d["kernel"] == os.uname().release
    layout, v2 = cgroup_layout()
    assert d["cgroup"] == {"layout": layout, "v2": v2}
    assert d["root"] is True

    # attach: pidfd_getfd.
    got = pidfd_getfd_works()
    assert (d["attach"] is True) == (got == "works"), (d["attach"], got)
    if got == "ENOSYS":
        assert "no pidfd_getfd (ENOSYS; Linux 5.6+)" in d["attach"]

    # MPTCP sockets, the library's way.
    got = mptcp_socket_works()
    assert (d["mptcp_socket"] is True) == (got == "works"), (d["mptcp_socket"], got)

    # MPTCP from BPF: fmod_ret on update_socket_protocol.
    got = fmod_ret_update_socket_protocol()
    if got == "works":
        assert d["mptcp_bpf"] is True
    elif got == "missing":
        assert "no update_socket_protocol to attach to (ESRCH)" in d["mptcp_bpf"], d["mptcp_bpf"]
    else:
        assert d["mptcp_bpf"].startswith("fmod_ret programs are refused"), (d["mptcp_bpf"], got)
        assert f"({got}: {os.strerror(getattr(__import__('errno'), got))})" in d["mptcp_bpf"], (d, got)

    # The kernel backend: yes exactly when bpftool finds every helper the programs call.
    kb = d["kernel_backend"]
    missing = missing_helpers()
    assert kb["ok"] == (not missing), (kb, missing)
    assert set(kb["programs"]) == {
        "sw_setsockopt", "sw_sock_create", "sw_bind4", "sw_bind6", "sw_connect4", "sw_connect6",
        "sw_sendmsg4", "sw_sendmsg6", "sw_sockops", "sw_getpeername4", "sw_getpeername6",
        "sw_recvmsg4", "sw_recvmsg6"}
    for name, r in kb["programs"].items():
        # Either loads, or one line that names what this kernel lacks (never a verifier log).
        assert r is True or ("\n" not in r and "processed" not in r and "insns" not in r), (name, r)
    # Every option is accounted for, once: set here, refused here, or never from BPF.
    opts = util.run([util.SOCKWRAP_BIN, "options"]).stdout
    if kb["ok"]:
        said = kb["options_set"] + kb["options_refused"] + kb["options_never"]
        assert len(said) == len(set(said)), said
        # (mptcp is not among them: the conversion program's answer is d["mptcp_bpf"].)
        assert {"ttl", "linger"} == set(kb["options_never"])
        for name in said:
            assert re.search(rf"^\s*{re.escape(name)}\b", opts, re.M), name
        # DSCP, the backend's reason to be, is among what this kernel takes from BPF.
        assert "dscp" in kb["options_set"], kb


def test_doctor_text_is_short_and_names_each_backend_and_feature():
    require_kernel_backend()
    r = util.run([util.SOCKWRAP_BIN, "doctor"], timeout=120)
    assert r.returncode in (0, 1), r.stderr  # 1: a finding elsewhere (MPTCP limits...)
    text = r.stdout
    head = text.split("congestion control:")[0]
    lines = head.strip().splitlines()
    assert len(lines) <= 12, head
    assert lines[0].startswith(f"kernel: {os.uname().release} ")
    layout, v2 = cgroup_layout()
    assert lines[1].startswith(f"cgroups: {layout}: cgroup v2 ") and v2 in lines[1], lines[1]
    for start in ("kernel backend (--kernel): ", "  locks: ", "attach: ", "attach --follow: ",
                  "MPTCP sockets (the library's --mptcp): ",
                  "MPTCP from BPF (fmod_ret on update_socket_protocol, Linux 6.6+): "):
        assert any(l.startswith(start) for l in lines), (start, head)
    got = fmod_ret_update_socket_protocol()
    bpf_line = next(l for l in lines if l.startswith("MPTCP from BPF"))
    if got == "missing":
        assert bpf_line.endswith("no: there is no update_socket_protocol to attach to (ESRCH)"), bpf_line
    elif got == "works":
        assert ": yes: " in bpf_line and "run --kernel --mptcp" in bpf_line, bpf_line
    else:
        assert ": no: fmod_ret programs are refused (" in bpf_line, bpf_line


def test_doctor_without_root_says_what_it_could_not_probe():
    util.require_sockwrap()
    util.require_root("switching to nobody needs root")
    util.require_tool("setpriv")
    r = util.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                  util.SOCKWRAP_BIN, "doctor"], timeout=120)
    assert "kernel backend (--kernel): not probed: only root can load BPF programs" in r.stdout, r.stdout
    assert "MPTCP from BPF (fmod_ret on update_socket_protocol, Linux 6.6+): not probed" in r.stdout
    # What needs no privilege is still said.
    got = pidfd_getfd_works()
    assert ("attach: yes (pidfd_getfd)" in r.stdout) == (got == "works"), r.stdout


def test_doctor_with_a_program_keeps_its_own_report():
    """With a program, doctor reports on the program (tests/test_doctor.py); the kernel's
    support block is for `doctor` alone."""
    util.require_sockwrap()
    r = util.run([util.SOCKWRAP_BIN, "doctor", "true"], timeout=60)
    assert "glibc program" in r.stdout and "kernel: " not in r.stdout.split("\n")[0]
    assert "MPTCP from BPF" not in r.stdout, r.stdout


# --------------------------------------------------------------------------- refusals by name

def test_mptcp_under_kernel_is_refused_with_what_this_kernel_lacks(tmp_path):
    """`run --kernel --mptcp`: one line that names MPTCP, says what this kernel answered to
    an fmod_ret program on update_socket_protocol (found by the test's own probe) and what
    to use instead; exit 2; the program never starts."""
    require_kernel_backend()
    marker = tmp_path / "started"
    r = util.run([util.SOCKWRAP_BIN, "run", "--kernel", "--mptcp", "--", "touch", str(marker)])
    if fmod_ret_update_socket_protocol() == "works":
        # This kernel converts (tests/test_mptcp_kernel.py proves the sockets MPTCP).
        assert r.returncode == 0 and marker.exists(), r.stderr
        return
    assert r.returncode == 2, r.stderr
    assert not marker.exists()
    (line,) = [l for l in r.stderr.splitlines() if "cannot set mptcp" in l]
    assert "GODEBUG=multipathtcp=1" in line and "sockwrap run --mptcp without --kernel" in line
    release = os.uname().release
    got = fmod_ret_update_socket_protocol()
    if got == "missing":
        assert f"on this kernel ({release}), there is no update_socket_protocol to attach to (ESRCH" in line, line
    else:
        assert f"on this kernel ({release}), fmod_ret programs are refused (" in line, line
    assert "verifier" not in r.stderr and "processed" not in r.stderr


def test_kernel_backend_runs_or_names_the_missing_helper_never_a_verifier_log(tmp_path):
    """Every program sockwrap has, attached at once (a locked option, a redirect rule: all
    13): on a kernel that has every helper they call (bpftool), the program starts and no
    verifier log is printed even with --log debug; on one that lacks a helper, the refusal
    is one line naming it, exit 2, and the program never starts."""
    require_kernel_backend()
    policy = tmp_path / "all.toml"
    policy.write_text('[[rule]]\nname = "all"\nmatch.remote = ["192.0.2.0/24"]\n'
                      'redirect = "127.0.0.1:9"\ndscp = "EF"\n\n'
                      '[[rule]]\nname = "locked"\ndscp = "EF"\n')
    marker = tmp_path / "started"
    r = util.run([util.SOCKWRAP_BIN, "run", "--kernel", "-c", policy, "--log", "debug", "--",
                  "touch", str(marker)], timeout=60)
    missing = missing_helpers()
    if not missing:
        assert r.returncode == 0, r.stderr
        assert marker.exists()
        assert "processed" not in r.stderr and "verification time" not in r.stderr, r.stderr
    else:
        assert r.returncode == 2, r.stderr
        assert not marker.exists()
        lines = [l for l in r.stderr.splitlines() if "lacks" in l]
        assert len(lines) == 1 and f"({os.uname().release})" in lines[0], r.stderr
        assert any(h in lines[0] for h in missing), (lines, missing)
        assert "instead" in lines[0] or "use the library" in lines[0], lines[0]


def test_attach_on_this_kernel_works_or_is_refused_by_name(procs):
    """attach needs pidfd_getfd (Linux 5.6): on a kernel that has it (the test's own call),
    attach sets DSCP on a live socket (ss shows tos 0xb8); on one without, one line naming
    pidfd_getfd and the kernel, exit 2. (tests/test_attach.py simulates the second case with
    seccomp on any kernel.)"""
    util.require_sockwrap()
    util.require_root("attach to another process needs ptrace rights")
    port = util.free_port()
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    try:
        p = procs.spawn([util.PY, "-c",
                         "import socket,sys,time\n"
                         f"s=socket.create_connection(('127.0.0.1',{port}))\n"
                         "print('connected',flush=True)\n"
                         "time.sleep(30)\n"])
        # Generous bounds: a Python start takes seconds in a TCG VM of the matrix.
        assert util.wait_output_line(p, timeout=60).strip() == "connected"
        before = util.ss_client(port, "-tnieo --tos", timeout=20)
        assert before and util.ss_field(before[0], "tos") in (None, "0", "0x0"), before
        r = util.run([util.SOCKWRAP_BIN, "attach", str(p.pid), "--dscp", "EF"], timeout=60)
        got = pidfd_getfd_works()
        if got == "works":
            assert r.returncode == 0, r.stderr
            entries = util.ss_client(port, "-tnieo --tos", timeout=20)
            assert entries and util.ss_field(entries[0], "tos") == "0xb8", entries
        else:
            assert r.returncode == 2, r.stderr
            (line,) = r.stderr.strip().splitlines()
            assert f"this kernel ({os.uname().release}) has no pidfd" in line and "5.6" in line, line
    finally:
        srv.close()
