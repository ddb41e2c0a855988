"""docs/fleet.md shows the files a rollout writes on each machine; this runs the same
commands under `--root` and compares the result with the document, byte for byte (after
mapping the build tree's library path to the package's, and the root prefix away)."""
import re
import subprocess

import util
from util import REPO

DOC = REPO / "docs" / "fleet.md"


def blocks(text):
    """The fenced blocks of the document that follow a line naming a file in backquotes."""
    out = {}
    for m in re.finditer(r"^`(/etc/[^`]+)`[^\n]*\n(?:[^\n]*\n)*?```\w*\n(.*?)```", text, re.M | re.S):
        out[m.group(1)] = m.group(2)
    return out


def test_rollout_writes_what_the_document_says(tmp_path):
    util.require_sockwrap()
    docs = blocks(DOC.read_text())
    dropin_doc = docs["/etc/systemd/system/nginx.service.d/sockwrap.conf"]
    policy_doc = docs["/etc/sockwrap/units/nginx.service.toml"]
    root = tmp_path / "root"
    unit = root / "lib/systemd/system/nginx.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\nDescription=nginx\n[Service]\nExecStart=/usr/sbin/nginx\n")
    pushed = root / "etc/sockwrap/nginx.toml"
    pushed.parent.mkdir(parents=True)
    pushed.write_text(policy_doc)
    assert subprocess.run([str(util.SOCKWRAP_BIN), "check", str(pushed)], capture_output=True).returncode == 0

    def enable():
        r = util.run([util.SOCKWRAP_BIN, "enable", "nginx.service", "-c", pushed, "--root", root])
        assert r.returncode == 0, r.stderr
        return (root / "etc/systemd/system/nginx.service.d/sockwrap.conf").read_text()

    first = enable()
    assert enable() == first, "enable is not idempotent"
    lib = re.search(r'LD_PRELOAD=([^"]+)"', first).group(1)
    got = first.replace(lib, "/usr/lib/sockwrap/libsockwrap.so").replace(str(root), "")
    version = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    assert got == dropin_doc.replace("sockwrap 0.1.0", f"sockwrap {version}")
    assert (root / "etc/sockwrap/units/nginx.service.toml").read_text() == policy_doc
    st = util.run([util.SOCKWRAP_BIN, "status", "nginx.service", "--root", root])
    assert st.returncode == 0 and "same as" in st.stdout, st.stdout + st.stderr
