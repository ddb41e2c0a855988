"""libsockwrap.so carries its own memcpy, memmove, memset, memcmp and strlen (hidden, so
that the loader binds none of them in every exec: crates/preload/src/mem.c). They run in
every program under sockwrap, so they are checked here against libc's and byte-by-byte
references, for every length to 300 and every alignment, overlapping moves both ways."""
import os
import subprocess

import util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEM_C = os.path.join(ROOT, "crates", "preload", "src", "mem.c")
CHECK_C = os.path.join(ROOT, "tests", "c", "mem_check.c")


def test_the_librarys_memory_functions_agree_with_references(tmp_path):
    util.require_tool("cc")
    exe = tmp_path / "mem_check"
    # The library's functions under other names, built as the library builds them.
    renames = [f"-D{f}=sw_{f}" for f in ("memcpy", "memmove", "memset", "memcmp", "bcmp", "strlen")]
    lib_o = tmp_path / "mem.o"
    subprocess.run(["cc", "-O2", "-fno-builtin", "-fno-tree-loop-distribute-patterns", *renames,
                    "-c", MEM_C, "-o", str(lib_o)], check=True, timeout=60)
    subprocess.run(["cc", "-O2", CHECK_C, str(lib_o), "-o", str(exe)], check=True, timeout=60)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_the_check_can_fail(tmp_path):
    """The same check against a memmove that copies forwards only: it must report it."""
    util.require_tool("cc")
    bad = tmp_path / "bad.c"
    src = open(MEM_C).read().replace("if (n < 16 || d <= s || d >= s + n) return memcpy(dst, src, n);",
                                     "return memcpy(dst, src, n);")
    assert src != open(MEM_C).read(), "mem.c changed: update this test's mutation"
    bad.write_text(src)
    renames = [f"-D{f}=sw_{f}" for f in ("memcpy", "memmove", "memset", "memcmp", "bcmp", "strlen")]
    subprocess.run(["cc", "-O2", "-fno-builtin", *renames, "-c", str(bad), "-o", str(tmp_path / "bad.o")],
                   check=True, timeout=60)
    subprocess.run(["cc", "-O2", CHECK_C, str(tmp_path / "bad.o"), "-o", str(tmp_path / "bad")],
                   check=True, timeout=60)
    r = subprocess.run([str(tmp_path / "bad")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stdout.startswith("memmove"), r.stdout
