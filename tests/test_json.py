"""`--json` of check, explain, options and status: one JSON document on stdout, in the shape
docs/json.md gives, with the exit status the text output has."""
import json

import util
from util import run

POLICY = """\
on_error = "warn"

[[rule]]
name = "ssh"
match = { port = 22 }
dscp = "EF"
nodelay = true
delay = "250ms"

[[rule]]
name = "lan"
match = { remote = "10.0.0.0/8" }
dscp = "AF21"
"""

OPTION_KEYS = ["option", "value", "shown", "soft"]


def sockwrap_json(*args, rc=0):
    r = run([util.SOCKWRAP_BIN, *args])
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.count("\n") == 1, "one document on one line: " + r.stdout
    return json.loads(r.stdout)


def test_check_json(tmp_path):
    util.require_sockwrap()
    good = tmp_path / "good.toml"
    good.write_text(POLICY)
    shadow = tmp_path / "shadow.toml"
    shadow.write_text('[[rule]]\nmatch = { remote = "10.1.0.0/16" }\ndscp = "EF"\n'
                      '[[rule]]\nname = "all"\ndscp = "CS1"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[rule]\ndscp = "EF"\n[rule]\ndscp = "AF21"\n')
    d = sockwrap_json("check", "--json", good, shadow, rc=0)
    assert list(d) == ["ok", "files"] and d["ok"] is True
    f = d["files"][0]
    assert list(f) == ["file", "ok", "on_error", "rules", "warnings", "errors"]
    assert (f["file"], f["ok"], f["on_error"], f["warnings"], f["errors"]) == (str(good), True, "warn", [], [])
    ssh, lan = f["rules"]
    assert (ssh["index"], ssh["name"], ssh["line"]) == (1, "ssh", 3)
    assert [list(o) for o in ssh["options"]] == [OPTION_KEYS, OPTION_KEYS]
    assert {o["option"]: o["value"] for o in ssh["options"]} == {"dscp": 0xB8, "nodelay": True}
    assert ssh["options"][0]["shown"] == "EF(0xb8)" and ssh["options"][0]["soft"] is False
    assert ssh["actions"] == [{"action": "delay", "value": "250ms"}]
    assert (lan["index"], lan["line"], lan["options"][0]["value"]) == (2, 10, 0x48)
    w = d["files"][1]["warnings"]
    assert len(w) == 1 and w[0]["line"] == 1 and "never decides anything" in w[0]["message"], w
    assert d["files"][1]["rules"][0]["name"] == f"{shadow}:1"
    d = sockwrap_json("check", "--json", good, bad, tmp_path / "missing.toml", rc=1)
    assert d["ok"] is False and [f["ok"] for f in d["files"]] == [True, False, False]
    e = d["files"][1]["errors"]
    assert (e[0]["line"], e[0]["column"]) == (3, 2) and "[[rule]]" in e[0]["message"], e
    e = d["files"][2]["errors"]
    assert e[0]["line"] is None and "cannot read the policy file" in e[0]["message"], e
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    d = sockwrap_json("check", "--json", empty)
    assert d["files"][0]["warnings"] == [{"line": None, "message": "the policy has no [[rule]]: it changes nothing"}]


def test_explain_json(tmp_path):
    util.require_sockwrap()
    cfg = tmp_path / "p.toml"
    cfg.write_text(POLICY)
    d = sockwrap_json("explain", "--json", "-c", cfg, "10.1.2.3:22")
    assert list(d) == ["dest", "host", "transport", "role", "local_port", "program", "options", "actions", "matched",
                       "program_rules_left_out"]
    assert (d["dest"], d["host"], d["transport"], d["role"], d["local_port"], d["program"]) == \
        ("10.1.2.3:22", None, "tcp", "client", None, None)
    assert [(o["option"], o["value"], o["rule"], o["note"]) for o in d["options"]] == \
        [("dscp", 0x48, "lan", None), ("nodelay", True, "ssh", None)]
    assert d["actions"] == [{"action": "delay", "value": "250ms", "rule": "ssh", "note": None}]
    ssh, lan = d["matched"]
    assert (ssh["index"], ssh["name"], lan["index"], lan["name"]) == (1, "ssh", 2, "lan")
    assert [(o["option"], o["overridden_by"]) for o in ssh["options"]] == [("dscp", "lan"), ("nodelay", None)]
    assert ssh["actions"] == [{"action": "delay", "value": "250ms", "overridden_by": None}]
    assert lan["options"][0]["overridden_by"] is None
    # Server context, flags as one more rule, UDP notes.
    d = sockwrap_json("explain", "--json", "-c", cfg, "--role", "server", "--transport", "udp",
                      "--nodelay", "--dest", "192.0.2.1:22", "--local-port", "8022")
    assert (d["role"], d["transport"], d["local_port"]) == ("server", "udp", 8022)
    assert d["actions"] == [] and all(m["actions"] == [] for m in d["matched"])
    assert [m["name"] for m in d["matched"]] == ["ssh", "flags"]
    nodelay = [o for o in d["options"] if o["option"] == "nodelay"][0]
    assert nodelay["rule"] == "flags" and nodelay["note"] == "TCP only: not applied to UDP"
    d = sockwrap_json("explain", "--json", "-c", cfg, "192.0.2.1:80")
    assert (d["options"], d["actions"], d["matched"], d["program_rules_left_out"]) == ([], [], [], 0)
    r = run([util.SOCKWRAP_BIN, "explain", "--json", "--kernel", "-c", cfg, "192.0.2.1:80"])
    assert r.returncode == 2 and "cannot be used with" in r.stderr, r.stderr


def test_options_json():
    util.require_sockwrap()
    d = sockwrap_json("options", "--json")
    rows = d["options"]
    names = [o["option"] for o in rows]
    assert "dscp" in names and "keepalive.idle" in names and len(names) == len(set(names))
    for o in rows:
        assert list(o) == ["option", "aliases", "flag", "variable", "kernel", "when", "tcp_only", "values"]
        assert o["when"] in ("at socket()", "before bind", "before connect", "any time"), o
        assert isinstance(o["tcp_only"], bool) and isinstance(o["aliases"], list)
    idle = rows[names.index("keepalive.idle")]
    assert (idle["flag"], idle["variable"]) == ("--keepalive-idle", "SOCKWRAP_KEEPALIVE_IDLE")
    assert "TCP_KEEPIDLE" in idle["kernel"] and idle["tcp_only"] is True
    # The text table lists the same options.
    text = run([util.SOCKWRAP_BIN, "options"]).stdout
    assert all(any(ln.split()[:1] == [n] for ln in text.splitlines()) for n in names)


def test_status_json(tmp_path):
    util.require_sockwrap()
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "demo.service").write_text("[Service]\nExecStart=/bin/true\n")
    d = sockwrap_json("status", "--json", "demo", "--root", tmp_path, rc=1)
    assert list(d) == ["unit", "system", "root", "ok", "lines"]
    assert (d["unit"], d["system"], d["root"], d["ok"]) == ("demo", False, str(tmp_path), False)
    assert any("not enabled" in ln for ln in d["lines"]), d
    r = run([util.SOCKWRAP_BIN, "enable", "demo", "--root", tmp_path, "--dscp", "EF"])
    assert r.returncode == 0, r.stderr
    d = sockwrap_json("status", "--json", "demo", "--root", tmp_path)
    assert d["ok"] is True and "  SOCKWRAP_DSCP=EF" in d["lines"], d
    text = run([util.SOCKWRAP_BIN, "status", "demo", "--root", tmp_path]).stdout
    assert [ln for ln in text.splitlines() if ln.strip()] == d["lines"], "the same report"
    d = sockwrap_json("status", "--json", "--system", "--root", tmp_path)
    assert (d["unit"], d["system"], d["ok"]) == (None, True, True)
    assert d["lines"] == ["host-wide: not enabled (`sockwrap enable --system -c FILE` enables it)"]
