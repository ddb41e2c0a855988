"""The exit codes `sockwrap --help` and sockwrap(1) document: the program's own status for
`run`, and distinct codes for sockwrap's own failures, each with one line on stderr."""
import util
from util import run


def sw(*args, env=None):
    util.require_sockwrap()
    return run([util.SOCKWRAP_BIN, *map(str, args)], env=env)


def one_line(r):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sockwrap: "), r.stderr
    return lines[0]


def test_program_status_is_passed_through():
    assert sw("run", "--dscp", "EF", "--", "sh", "-c", "exit 42").returncode == 42


def test_usage_errors_exit_2(tmp_path):
    r = sw("run", "--dscp", "XX", "--", "true")
    assert r.returncode == 2 and "--dscp" in one_line(r)
    r = sw("run", "-c", tmp_path / "missing.toml", "--", "true")
    assert r.returncode == 2 and "--config" in one_line(r)
    r = sw("run", "--to", "10.0.0.0/33", "--dscp", "EF", "--", "true")
    assert r.returncode == 2 and "--to" in one_line(r)
    assert sw("no-such-subcommand").returncode == 2


def test_findings_exit_1(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\ndscp = "XX"\n')
    r = sw("check", bad)
    assert r.returncode == 1 and f"{bad}:2:" in r.stderr


def test_setup_errors_exit_3(tmp_path):
    r = sw("run", "--dscp", "EF", "--", "true", env={"SOCKWRAP_LIB": str(tmp_path / "nope.so")})
    assert r.returncode == 3 and "SOCKWRAP_LIB" in one_line(r)
    r = sw("report", tmp_path / "missing.jsonl")
    assert r.returncode == 3 and "report" in one_line(r)


def test_program_not_found_127_not_executable_126(tmp_path):
    r = sw("run", "--dscp", "EF", "--", tmp_path / "nonexistent")
    assert r.returncode == 127 and "cannot run" in one_line(r)
    f = tmp_path / "data.txt"
    f.write_text("not a program\n")
    r = sw("run", "--dscp", "EF", "--", f)
    assert r.returncode == 126 and "cannot run" in one_line(r)
    # the same codes as a shell gives (the control)
    assert run(["sh", "-c", f"'{tmp_path / 'nonexistent'}'"]).returncode == 127
    assert run(["sh", "-c", f"'{f}'"]).returncode == 126


def test_help_documents_the_codes():
    out = sw("--help").stdout
    for code in ("126", "127", "  2 ", "  3 "):
        assert code in out, code
