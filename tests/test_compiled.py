"""The launcher's compiled policy (SOCKWRAP_POLICY): processes under `sockwrap run` apply the
policy without reading the file again, and a process whose SOCKWRAP_* variables differ from
the launcher's ignores the compiled form. The witness is the peer's IP_RECVTOS, never
sockwrap's log."""
import socket

import util
from util import EF, PY, run, run_under_sockwrap, tos_server

CS1 = 0x20
AF41 = 0x88


def _client(port):
    return f"'{PY}' '{util.PEERS}/tcp_client.py' 127.0.0.1 {port}"


def test_launcher_passes_the_compiled_policy(tmp_path):
    util.require_sockwrap()
    pol = tmp_path / "p.toml"
    pol.write_text('[[rule]]\ndscp = "AF41"\n')
    r = run_under_sockwrap(["--config", str(pol)], ["env"])
    assert r.returncode == 0, r.stderr
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("SOCKWRAP_POLICY=")), None)
    assert line and line.startswith("SOCKWRAP_POLICY=swp2 "), r.stdout


def two_clients(pol, text, port, script):
    """`sh -c script` (which starts two clients of `port`) under `sockwrap run --config pol`,
    pol holding `text`: what the server saw, and the run."""
    util.require_sockwrap()
    pol.write_text(text)
    with tos_server(socket.AF_INET, port) as srv:
        r = run_under_sockwrap(["--config", str(pol)], ["sh", "-c", script])
        assert r.returncode == 0, r.stderr
        got = srv.wait(2)
    return got, r


def test_children_apply_the_policy_after_the_file_is_gone(tmp_path, port):
    """The file is deleted before any socket is made: only the compiled form can say AF41."""
    pol = tmp_path / "p.toml"
    got, r = two_clients(pol, '[[rule]]\ndscp = "AF41"\n', port,
                         f"rm '{pol}' && {_client(port)} && sh -c \"{_client(port)}\"")
    assert not pol.exists()
    assert [g["tos"] for g in got] == [AF41, AF41]
    assert "cannot read" not in r.stderr, r.stderr


def test_a_child_that_changes_a_variable_gets_what_the_variables_say(tmp_path, port):
    """A child sets SOCKWRAP_DSCP itself: the compiled form no longer fits its variables, so
    the library reads the file and the variable (the variable wins, as always)."""
    got, _ = two_clients(tmp_path / "p.toml", '[[rule]]\ndscp = "AF41"\nnodelay = true\n', port,
                         f"{_client(port)} && SOCKWRAP_DSCP=CS1 sh -c \"{_client(port)}\"")
    assert [g["tos"] for g in got] == [AF41, CS1]


def fingerprint(env):
    """The launcher's fingerprint (crates/policy/src/compiled/mod.rs): FNV-1a 64 over the sorted
    SOCKWRAP_* variables other than SOCKWRAP_POLICY, each as NAME=VALUE and a NUL."""
    h = 0xcbf29ce484222325
    for k, v in sorted((k, v) for k, v in env.items()
                       if k.startswith("SOCKWRAP_") and k != "SOCKWRAP_POLICY"):
        for b in f"{k}={v}".encode() + b"\0":
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def test_a_damaged_compiled_form_is_ignored(tmp_path, port):
    """Set by hand and wrong (or from another sockwrap version), even with the right
    fingerprint: never half-applied; the library builds the policy from the file."""
    pol = tmp_path / "p.toml"
    pol.write_text('[[rule]]\ndscp = "EF"\n')
    env = {k: v for k, v in util._env(None).items() if k.startswith("SOCKWRAP_")}
    env["SOCKWRAP_CONFIG"] = str(pol)
    fp = fingerprint(env)
    blobs = [
        "garbage",
        f"swp9 {fp} w 0",                              # unknown version
        f"swp1 {fp} w 1 r 0 0 0 - - 0 1 0 0 i32",      # the version before (no hosts, actions)
        f"swp2 {fp} w 1 r 0 0 0 - - 0 0 - 1 0 0 b1 -",       # dscp (slot 0) given a boolean
        f"swp2 {fp} w 1 r 0 0 0 - - 0 0 - 1 0 0 i300 -",     # ToS byte out of range
        f"swp2 {fp} w 2 r 0 0 0 - - 0 0 - 1 0 0 i32 -",      # says 2 rules, holds 1
        f"swp2 {fp} w 1 r 0 0 0 - - 0 0 - 1 0 0 i32 - x",    # trailing token
        f"swp2 {fp} w 1 r 1 ffff0a000001/120 0 0 - - 0 0 - 1 0 0 i32 -",  # host bits set in a /120
        f"swp2 {fp} w 1 r 1 ffff0a000000/129 0 0 - - 0 0 - 1 0 0 i32 -",  # prefix beyond 128
        f"swp2 {fp} w 1 r 0 0 0 - - 0 1 a*b - 1 0 0 i32 -",  # not a host pattern
        f"swp2 {fp} w 1 r 0 0 0 - - 0 0 - 1 0 0 i32 A - - - 2000000,104",  # fail rate above 1
    ]
    for blob in blobs:
        with tos_server(socket.AF_INET, port) as srv:
            r = util.run_preloaded(util.peer("tcp_client.py", "127.0.0.1", port),
                                   SOCKWRAP_CONFIG=str(pol), SOCKWRAP_POLICY=blob)
            assert r.returncode == 0, r.stderr
            assert [g["tos"] for g in srv.wait(1)] == [EF], blob
    # Counter-check: the same fingerprint with a well-formed form is used (CS1, not EF).
    good = f"swp2 {fp} w 1 r 0 0 0 - - 0 0 - 1 0 0 i32 -"
    with tos_server(socket.AF_INET, port) as srv:
        r = util.run_preloaded(util.peer("tcp_client.py", "127.0.0.1", port),
                               SOCKWRAP_CONFIG=str(pol), SOCKWRAP_POLICY=good)
        assert r.returncode == 0, r.stderr
        assert [g["tos"] for g in srv.wait(1)] == [CS1]


def test_plain_run_is_untouched_by_a_stray_compiled_form(port):
    """Counter-check: without the library, the variable does nothing."""
    with tos_server(socket.AF_INET, port) as srv:
        r = run(["sh", "-c", _client(port)], env={"SOCKWRAP_POLICY": "swp1 x"})
        assert r.returncode == 0
        assert srv.wait(1)[0]["tos"] == 0
