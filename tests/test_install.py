"""`make install PREFIX=... DESTDIR=...` / `make uninstall`, and the generated man pages and
completions. The installed `sockwrap` must find its library with no variable set; the peer
(IP_RECVTOS) is the witness that the installed tool really changes a program's traffic."""
import os
import re
import shutil
import socket
import subprocess

import pytest

import util
from util import EF, PY, REPO, tos_server

PREFIX = "/usr/local"


def make(*args, timeout=600):
    util.require_tool("make")
    util.require_sockwrap()
    # make install takes the tree's target/release/ build (and builds only what is missing)
    return subprocess.run(["make", "-C", str(REPO), *args], timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def clean_env(**extra):
    """No SOCKWRAP_* (SOCKWRAP_LIB above all) and no LD_PRELOAD: the installed tool must
    find everything by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKWRAP_") and k != "LD_PRELOAD"}
    env.update(extra)
    return env


@pytest.fixture
def installed(tmp_path):
    dest = tmp_path / "dest"
    r = make("install", f"PREFIX={PREFIX}", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stdout + r.stderr
    yield dest, dest / PREFIX.lstrip("/")
    # the uninstall test checks the removal itself; here just tidy up
    shutil.rmtree(dest, ignore_errors=True)


EXPECTED = [
    "bin/sockwrap",
    "lib/sockwrap/libsockwrap.so",
    "share/man/man1/sockwrap.1",
    "share/man/man1/sockwrap-run.1",
    "share/man/man1/sockwrap-enable.1",
    "share/man/man1/sockwrap-status.1",
    "share/man/man1/sockwrap-attach.1",
    "share/man/man5/sockwrap.toml.5",
    "share/bash-completion/completions/sockwrap",
    "share/zsh/site-functions/_sockwrap",
    "share/fish/vendor_completions.d/sockwrap.fish",
    "share/doc/sockwrap/examples/example-policy.toml",
    "share/doc/sockwrap/examples/ssh-qos.toml",
    "share/doc/sockwrap/examples/webrtc-udp.toml",
    "share/doc/sockwrap/examples/db-keepalive.toml",
    "share/doc/sockwrap/examples/mptcp-legacy.toml",
    "share/doc/sockwrap/examples/source-per-interface.toml",
]


def test_install_layout(installed):
    _dest, prefix = installed
    missing = [f for f in EXPECTED if not (prefix / f).is_file()]
    assert not missing, missing
    assert os.access(prefix / "bin/sockwrap", os.X_OK)
    # unversioned, in its own directory, nothing else there
    assert sorted(os.listdir(prefix / "lib/sockwrap")) == ["libsockwrap.so"]


def test_installed_tool_finds_its_library_and_marks_traffic(installed, port):
    _dest, prefix = installed
    sw = prefix / "bin/sockwrap"
    lib = prefix / "lib/sockwrap/libsockwrap.so"
    # The library it preloads is the installed one (seen by the program's own loader).
    r = subprocess.run([str(sw), "run", "--dscp", "EF", "--", "cat", "/proc/self/maps"],
                       env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert str(lib.resolve()) in r.stdout, r.stdout[-2000:]
    client = [PY, str(util.PEERS / "tcp_client.py"), "127.0.0.1", str(port)]
    with tos_server(socket.AF_INET, port) as srv:
        plain = subprocess.run(client, env=clean_env(), timeout=20, capture_output=True)
        assert plain.returncode == 0
        wrapped = subprocess.run([str(sw), "run", "--dscp", "EF", "--", *client], env=clean_env(),
                                 timeout=20, capture_output=True, text=True)
        assert wrapped.returncode == 0, wrapped.stderr
        got = srv.wait(2)
    assert [g["tos"] for g in got] == [0, EF]


def test_installed_tool_without_library_says_so(installed):
    _dest, prefix = installed
    (prefix / "lib/sockwrap/libsockwrap.so").unlink()
    r = subprocess.run([str(prefix / "bin/sockwrap"), "run", "--dscp", "EF", "--", "true"],
                       env=clean_env(), capture_output=True, text=True, timeout=20)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "libsockwrap.so not found" in r.stderr, r.stderr


def test_uninstall_removes_everything(tmp_path):
    dest = tmp_path / "dest"
    r = make("install", f"PREFIX={PREFIX}", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stderr
    assert any(p.is_file() for p in dest.rglob("*"))
    r = make("uninstall", f"PREFIX={PREFIX}", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stderr
    left = [str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir()]
    assert not left, left
    # our own directories are gone too (shared ones such as share/man/man1 may stay)
    assert not (dest / PREFIX.lstrip("/") / "lib/sockwrap").exists()
    assert not (dest / PREFIX.lstrip("/") / "share/doc/sockwrap").exists()


def test_man_pages_render(installed):
    util.require_tool("man")
    _dest, prefix = installed
    for page, must in [("man1/sockwrap.1", ["EXIT STATUS", "FILES", "libsockwrap.so", "SOCKWRAP_LIB"]),
                       ("man1/sockwrap-run.1", ["--dscp", "EXAMPLES"]),
                       ("man1/sockwrap-enable.1", ["--dry-run", "COPIED"]),
                       ("man1/sockwrap-attach.1", ["--dry-run", "cannot be locked", "ptrace_scope", "CAP_SYS_PTRACE"]),
                       ("man5/sockwrap.toml.5", ["keepalive.idle", "TCP_KEEPIDLE", "SSH QoS", "MPTCP for a legacy client",
                                                 "Per-interface source selection", "Database keepalive",
                                                 "WebRTC"])]:
        r = subprocess.run(["man", "-l", str(prefix / "share/man" / page)], capture_output=True, text=True,
                           env=clean_env(MANWIDTH="200"), timeout=30)
        assert r.returncode == 0, r.stderr
        text = re.sub(".\b", "", r.stdout).replace("\u2010", "-").replace("\u2212", "-")
        for m in must:
            assert m in text, (page, m)
        assert "warning" not in r.stderr.lower(), (page, r.stderr)


def test_every_catalog_option_is_in_the_policy_man_page(installed):
    """The option table is generated from the catalog: every option `sockwrap options`
    lists is there."""
    _dest, prefix = installed
    names = [ln.split()[0] for ln in subprocess.run([str(prefix / "bin/sockwrap"), "options"], env=clean_env(),
                                                      capture_output=True, text=True).stdout.splitlines()[1:]]
    assert len(names) > 15
    page = (prefix / "share/man/man5/sockwrap.toml.5").read_text().replace("\\-", "-")
    for n in names:
        assert f"\\fB{n}\\fP" in page, n


def test_bash_completion_completes_subcommands_and_flags(installed):
    _dest, prefix = installed
    comp = prefix / "share/bash-completion/completions/sockwrap"
    script = (f"source '{comp}'; COMP_WORDS=(sockwrap en); COMP_CWORD=1; COMP_LINE='sockwrap en'; "
              "COMP_POINT=${#COMP_LINE}; _sockwrap sockwrap en sockwrap; printf '%s\\n' \"${COMPREPLY[@]}\"; "
              "COMP_WORDS=(sockwrap run --ds); COMP_CWORD=2; _sockwrap sockwrap --ds run; "
              "printf '%s\\n' \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    assert "enable" in words and "--dscp" in words, r.stdout
    zsh = (prefix / "share/zsh/site-functions/_sockwrap").read_text()
    fish = (prefix / "share/fish/vendor_completions.d/sockwrap.fish").read_text()
    for sub in ("run", "enable", "disable", "status", "doctor"):
        assert sub in zsh and sub in fish, sub
    assert zsh.startswith("#compdef sockwrap")
    for sh, f in (("zsh", prefix / "share/zsh/site-functions/_sockwrap"),
                  ("fish", prefix / "share/fish/vendor_completions.d/sockwrap.fish")):
        if shutil.which(sh):
            r = subprocess.run([sh, "-n", str(f)], capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, (sh, r.stderr)


def test_examples_check_clean(installed):
    _dest, prefix = installed
    ex = sorted((prefix / "share/doc/sockwrap/examples").glob("*.toml"))
    assert len(ex) == 7  # example-policy.toml and docs/examples/*.toml
    r = subprocess.run([str(prefix / "bin/sockwrap"), "check", *map(str, ex)], env=clean_env(),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
