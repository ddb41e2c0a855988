"""`sockwrap explain` tells the whole decision (every rule that matched, in order, and what a
later rule overrode: the last match wins), in client and server context; `sockwrap check`
warns of what parses but does nothing; the docs say "last match wins" where rules begin."""
import re

import util
from util import run

# The case: a port-22 EF rule, then a 10.0.0.0/8 AF21 rule, then a server rule.
POLICY = """\
[[rule]]
name = "ssh"
match = { port = 22 }
dscp = "EF"
nodelay = true

[[rule]]
name = "lan"
match = { remote = "10.0.0.0/8" }
dscp = "AF21"

[[rule]]
name = "https-server"
match = { role = "server", local-port = 443 }
dscp = "CS2"
"""


def write(tmp_path, text, name="policy.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def explain(*args):
    r = run([util.SOCKWRAP_BIN, "explain", *args])
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_explain_takes_dest_as_argument_and_names_what_a_later_rule_overrode(tmp_path):
    util.require_sockwrap()
    cfg = write(tmp_path, POLICY)
    out = explain("-c", cfg, "10.1.2.3:22")
    assert out == explain("-c", cfg, "--dest", "10.1.2.3:22"), "DEST and --dest are the same"
    assert out.startswith("10.1.2.3:22 (Tcp Client):\n"), out
    assert re.search(r"^  dscp\s+AF21\(0x48\)\s+locked from lan$", out, re.M), out
    assert re.search(r"^  nodelay\s+on\s+locked from ssh$", out, re.M), out
    tail = out.split("rules that matched, in order (the last match wins):\n")[1]
    assert tail == ("  #1 ssh: dscp=EF(0xb8) (overridden by lan), nodelay=on\n"
                    "  #2 lan: dscp=AF21(0x48)\n"), out
    # Outside 10/8 the ssh rule decides alone.
    out = explain("-c", cfg, "192.0.2.1:22")
    assert "#1 ssh: dscp=EF(0xb8), nodelay=on\n" in out and "lan" not in out, out
    r = run([util.SOCKWRAP_BIN, "explain", "-c", cfg, "10.1.2.3"])
    assert r.returncode == 2 and "DEST: `10.1.2.3` is not IP:PORT" in r.stderr, r.stderr


def test_explain_says_when_a_flag_took_dest_as_its_value():
    util.require_sockwrap()
    r = run([util.SOCKWRAP_BIN, "explain", "--nodelay", "10.1.2.3:22"])
    assert r.returncode == 2, r.stderr
    assert r.stderr == ("sockwrap: --nodelay took `10.1.2.3:22` as its value: put DEST first "
                        "(sockwrap explain 10.1.2.3:22 --nodelay ...) or write --nodelay=on\n"), r.stderr
    r = run([util.SOCKWRAP_BIN, "explain", "--dscp", "EF"])
    assert r.returncode == 2 and "DEST is missing" in r.stderr, r.stderr
    assert "nodelay            on" in explain("10.1.2.3:22", "--nodelay")
    assert "nodelay            on" in explain("--nodelay=on", "10.1.2.3:22")


def test_explain_numbers_rules_as_the_file_does_and_leaves_out_other_programs_rules(tmp_path):
    """Rules that name programs apply only to those programs, as in the library: without
    --program they are left out (and counted); with it, #N is still the file's numbering."""
    util.require_sockwrap()
    cfg = write(tmp_path, """\
[[rule]]
name = "curl-only"
match = { program = ["curl"] }
dscp = "CS1"

[[rule]]
name = "ssh"
match = { program = ["ssh"] }
dscp = "EF"

[[rule]]
name = "all"
nodelay = true
""")
    out = explain("-c", cfg, "10.0.0.1:22", "--program", "ssh")
    assert out.endswith("  #2 ssh: dscp=EF(0xb8)\n  #3 all: nodelay=on\n"), out
    out = explain("-c", cfg, "10.0.0.1:22")
    assert "dscp" not in out and "  #3 all: nodelay=on\n" in out, out
    assert out.endswith("(2 rule(s) for named programs left out: give --program NAME)\n"), out


def test_explain_in_server_context_uses_the_local_port(tmp_path):
    util.require_sockwrap()
    cfg = write(tmp_path, POLICY)
    # DEST's port is a server's local port unless --local-port says otherwise.
    out = explain("-c", cfg, "--role", "server", "--dest", "192.0.2.1:443")
    assert out.startswith("192.0.2.1:443 (Tcp Server, local port 443):\n"), out
    assert re.search(r"^  dscp\s+CS2\(0x40\)\s+locked from https-server$", out, re.M), out
    # A peer in 10/8 on port 443: lan matches too, and is overridden entirely.
    out = explain("-c", cfg, "--role", "server", "10.0.0.1:50000", "--local-port", "443")
    assert "(Tcp Server, local port 443)" in out, out
    assert "#2 lan: dscp=AF21(0x48) (overridden by https-server)  -- all overridden" in out, out
    out = explain("-c", cfg, "--role", "server", "192.0.2.1:50000", "--local-port", "80")
    assert out == "192.0.2.1:50000 (Tcp Server, local port 80): no option applies\n", out
    # A client has no local port unless one is given.
    out = explain("-c", cfg, "192.0.2.1:443")
    assert "no option applies" in out, out


def test_check_warns_of_a_rule_later_rules_override_and_of_an_empty_policy(tmp_path):
    util.require_sockwrap()
    shadowed = write(tmp_path, """\
[[rule]]
name = "db"
match = { remote = "10.1.0.0/16", port = 5432 }
dscp = "EF"

[[rule]]
name = "lan"
match = { remote = "10.0.0.0/8" }
dscp = "AF21"
""", "shadowed.toml")
    r = run([util.SOCKWRAP_BIN, "check", shadowed])
    assert r.returncode == 0, r.stderr
    assert (f"{shadowed}:1: warning: rule `db` never decides anything: later rules override every "
            "option it sets (`lan`), and the last match wins") in r.stderr, r.stderr
    # The policy: ssh still decides outside 10/8, so no warning.
    r = run([util.SOCKWRAP_BIN, "check", write(tmp_path, POLICY)])
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    for text, want in [("", "the policy has no [[rule]]: it changes nothing"),
                       ('on_error = "fail"\n', "the policy has no [[rule]]: it changes nothing"),
                       ('[[rule]]\nname = "x"\n', "no rule sets an option or an action")]:
        f = write(tmp_path, text, "empty.toml")
        r = run([util.SOCKWRAP_BIN, "check", f])
        assert r.returncode == 0 and f"{f}: warning: {want}" in r.stderr, r.stderr


def test_the_man_page_and_readme_say_the_last_match_wins(tmp_path):
    util.require_sockwrap()
    r = run([util.SOCKWRAP_BIN, "gen-man", tmp_path])
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "sockwrap.toml.5").read_text().replace("\\-", "-")
    desc = page.split(".SH \"DESCRIPTION\"")[1]
    assert "\\fBlast match wins\\fP" in desc.split(".TP")[0], "said where rules are introduced"
    assert "1min" in page and "not rounded" in page, "the duration grammar is described"
    readme = (util.REPO / "README.md").read_text()
    assert "**the last match wins**" in readme
