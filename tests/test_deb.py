"""The Debian package: `make deb` builds target/debian/sockwrap_VERSION_ARCH.deb; installed
with dpkg -i, `/usr/bin/sockwrap run` (no variable set) marks curl's packets, seen by tcpdump
on the wire, with the same curl without sockwrap as the control; `dpkg -r` leaves nothing.

This installs into the real /usr (that is the point of a package test): it needs root and
refuses to run where a sockwrap package is already installed."""
import os
import re
import subprocess
from pathlib import Path

import util
from util import EF, REPO, Capture


def sh(*cmd, timeout=600, **kw):
    return subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, **kw)


def dpkg_status():
    r = sh("dpkg-query", "-W", "-f", "${Status}", "sockwrap")
    return r.stdout.strip() if r.returncode == 0 else ""


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("SOCKWRAP_") and k != "LD_PRELOAD"}


def test_deb_install_run_remove(port):
    util.require_root("dpkg -i needs root")
    util.require_tool("dpkg", "dpkg-deb", "make", "curl", "tcpdump")
    util.require(sh("sh", "-c", "command -v cargo-deb").returncode == 0,
                 "cargo-deb not installed (cargo install cargo-deb)")
    util.require_sockwrap()
    assert "installed" not in dpkg_status(), "a sockwrap package is already installed here; not touching it"

    r = sh("make", "-C", REPO, "deb", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    version = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    arch = sh("dpkg", "--print-architecture").stdout.strip()
    deb = REPO / "target" / "debian" / f"sockwrap_{version}_{arch}.deb"
    assert deb.exists(), sorted(p.name for p in deb.parent.glob("*.deb"))

    contents = sh("dpkg-deb", "-c", deb).stdout
    for f in ("./usr/bin/sockwrap", "./usr/lib/sockwrap/libsockwrap.so", "./usr/lib/systemd/system/sockwrap-agent.service", "./usr/share/man/man1/sockwrap.1",
              "./usr/share/man/man5/sockwrap.toml.5", "./usr/share/bash-completion/completions/sockwrap",
              "./usr/share/doc/sockwrap/examples/ssh-qos.toml"):
        assert f in contents, (f, contents)

    r = sh("dpkg", "-i", deb)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        files = [f for f in sh("dpkg", "-L", "sockwrap").stdout.splitlines() if f.strip()]
        assert Path("/usr/bin/sockwrap").is_file()

        srv = subprocess.Popen(["python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        try:
            util.wait_listening(port)
            url = f"http://127.0.0.1:{port}/"
            with Capture(f"tcp dst port {port}") as plain:
                assert sh("curl", "-s", "-o", "/dev/null", url, env=clean_env()).returncode == 0
            with Capture(f"tcp dst port {port}") as wrapped:
                r = sh("/usr/bin/sockwrap", "run", "--dscp", "EF", "--", "curl", "-s", "-o", "/dev/null", url,
                       env=clean_env())
                assert r.returncode == 0, r.stderr
        finally:
            srv.kill()
            srv.wait(10)
        assert plain.packets and {p.tos for p in plain.packets} == {0}, plain.text
        assert wrapped.packets and {p.tos for p in wrapped.packets} == {EF}, wrapped.text
        man = sh("man", "-w", "sockwrap.toml")
        assert man.returncode == 0 and "/usr/share/man/man5/" in man.stdout, man.stdout + man.stderr
    finally:
        r = sh("dpkg", "-r", "sockwrap")
    assert r.returncode == 0, r.stdout + r.stderr
    assert dpkg_status() in ("", "unknown ok not-installed", "deinstall ok not-installed"), dpkg_status()
    left = [f for f in files if os.path.isfile(f) or os.path.islink(f)]
    assert not left, left
    assert not Path("/usr/lib/sockwrap").exists() and not Path("/usr/share/doc/sockwrap").exists()
