"""The command line explains itself (issue #24, item 3): each subcommand's help shows its own
flags and folds the socket options away where they are not the point, `doctor` offers no
flag it ignores, `attach --help` is short, a program named without `--` gets a tip with the
corrected command, `sockwrap options` lists every spelling with a flag of its own in aligned
columns, and the shell completions offer option values and the command after `--`, not the
internal subcommands.

The witnesses are the texts a user sees (help, the error line, the table) and the
completion scripts run by bash itself."""
import re
import shutil
import subprocess

import pytest

import util


def sw(*args, timeout=20):
    util.require_sockwrap()
    return subprocess.run([str(util.SOCKWRAP_BIN), *args], capture_output=True, text=True,
                          timeout=timeout)


def help_text(sub):
    r = sw(sub, "--help")
    assert r.returncode == 0, r.stderr
    return r.stdout


def sections(text):
    """{heading: [flag lines]} of a clap help text, in order."""
    out, cur = {}, None
    for line in text.splitlines():
        if re.match(r"^[A-Z][^:]*:$", line):
            cur = line[:-1]
            out[cur] = []
        elif cur and line.startswith("  ") and line.strip().startswith("-"):
            out[cur].append(line.strip())
    return out


@pytest.mark.parametrize("sub,own", [
    ("trace", ["--output", "--json"]),
    ("explain", ["--dest", "--local-port", "--role", "--program", "--kernel"]),
    ("doctor", ["--json"]),
    ("attach", ["--list", "--dry-run", "--tree", "--follow", "--role"]),
])
def test_own_flags_first_and_socket_options_folded(sub, own):
    text = help_text(sub)
    secs = sections(text)
    first = next(h for h in secs if h != "Arguments")
    assert first == "Options", secs.keys()
    for flag in own:
        assert any(flag in ln for ln in secs["Options"]), (flag, secs["Options"])
    # Not the ~30 option flags, but one pointer to where they are.
    assert "--keepalive-interval" not in text and "--notsent-lowat" not in text
    assert "Socket options" not in secs
    assert "`sockwrap options` lists them all" in " ".join(text.split())
    # ... and still taken: a folded flag is parsed, a wrong value refused by name.
    assert text.count("\n") < 60, (sub, text.count("\n"))


def test_run_still_lists_the_socket_options():
    text = help_text("run")
    secs = sections(text)
    assert "Socket options" in secs
    names = " ".join(secs["Socket options"])
    for flag in ("--dscp", "--tos", "--ttl", "--hop-limit", "--keepalive", "--congestion", "--mptcp"):
        assert flag in names, flag
    # run's own flags come before the policy and the options.
    assert [h for h in secs if h != "Arguments"][0] == "Options"
    assert "--kernel" in " ".join(secs["Options"])


def test_folded_flags_are_still_taken():
    util.require_sockwrap()
    r = sw("explain", "--dscp", "EF", "--keepalive-idle", "30", "10.1.2.3:22")
    assert r.returncode == 0, r.stderr
    assert "EF" in r.stdout and "30" in r.stdout, r.stdout
    r = sw("explain", "--dscp", "XX", "10.1.2.3:22")
    assert r.returncode == 2 and "dscp" in r.stderr.lower(), r.stderr


def test_doctor_offers_no_soft_or_strict():
    text = help_text("doctor")
    assert "--soft" not in text and "--strict" not in text
    # Nor hidden: doctor has no such flag, so the word is taken for the PROGRAM to check.
    r = sw("doctor", "--strict")
    assert "`--strict` not found" in r.stdout + r.stderr, r.stdout + r.stderr
    # run and trace keep them.
    assert "--strict" in help_text("run") and "--soft" in help_text("trace")


def test_attach_help_is_short_and_points_to_the_details(tmp_path):
    text = help_text("attach")
    lines = text.count("\n")
    assert lines < 60, lines
    flat = " ".join(text.split())
    assert "sockwrap-attach(1)" in flat and "set ONCE and are NOT locked" in flat
    # The man page keeps the whole story.
    r = sw("gen-man", str(tmp_path))
    assert r.returncode == 0, r.stderr
    man = (tmp_path / "sockwrap-attach.1").read_text().replace("\\-", "-")
    for words in ("KillMode=control-group", "MemoryMax=", "cgroup.procs", "--keepalive"):
        assert words in man or words in " ".join(man.split()), words


@pytest.mark.parametrize("sub", ["run", "trace"])
def test_a_program_without_dashes_gets_a_tip_with_the_corrected_command(sub):
    r = sw(sub, "--dscp", "AF41", "curl", "-s", "http://127.0.0.1:1/a b")
    assert r.returncode == 2, r.stderr
    assert "unexpected argument 'curl' found" in r.stderr, r.stderr
    tips = [ln.strip() for ln in r.stderr.splitlines() if ln.strip().startswith("tip:")]
    want = f"sockwrap {sub} --dscp AF41 -- curl -s 'http://127.0.0.1:1/a b'"
    assert any(t.endswith(want) and "`--`" in t for t in tips), r.stderr
    # One line, and the corrected command parses (it fails later, on the program, not on
    # the command line: exit 127, not 2).
    assert len(tips) == 1


def test_the_corrected_command_parses():
    r = sw("run", "--dscp", "AF41", "--", "/nonexistent-program-sw")
    assert r.returncode == 127, (r.returncode, r.stderr)
    assert "tip:" not in r.stderr


def test_options_lists_tos_and_hop_limit_aligned():
    r = sw("options")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    names = [ln.split()[0] for ln in lines[1:]]
    for n in ("dscp", "tos", "ttl", "hop-limit", "keepalive", "keepalive.idle", "mptcp"):
        assert n in names, n
    assert names.index("tos") == names.index("dscp") + 1
    assert names.index("hop-limit") == names.index("ttl") + 1
    # Every column starts at the same place on every line: where the header's does.
    head = lines[0]
    starts = [head.index(h) for h in ("KERNEL", "WHEN", "VALUES")]
    for ln in lines[1:]:
        for s in starts:
            assert ln[s - 2:s] == "  " and ln[s] != " ", (ln, s)
    keep = next(ln for ln in lines if ln.startswith("keepalive "))
    assert keep.index("any time") == starts[1], keep


def test_every_listed_option_is_a_flag_and_a_policy_key(tmp_path):
    r = sw("options")
    names = [ln.split()[0] for ln in r.stdout.splitlines()[1:]]
    run_help = help_text("run")
    for n in names:
        assert f"--{n.replace('.', '-')}" in run_help, n
    # tos and hop-limit are policy keys too.
    pol = tmp_path / "p.toml"
    pol.write_text('[[rule]]\ntos = "0xb8"\nhop-limit = 9\n')
    r = sw("check", str(pol))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def completions(tmp_path_factory):
    util.require_sockwrap()
    d = tmp_path_factory.mktemp("comp")
    r = subprocess.run([str(util.SOCKWRAP_BIN), "gen-completions", str(d)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return d


def bash_complete(comp, *words):
    """COMPREPLY of the generated bash completion for the command line `words` (the last
    word being completed), run by bash itself without bash-completion loaded."""
    util.require_tool("bash")
    arr = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (f"source '{comp / 'sockwrap.bash'}'; COMP_WORDS=({arr}); "
              "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); "
              "_sockwrap sockwrap \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"; "
              "printf '%s\\n' \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20,
                       cwd=comp)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completes_option_values_from_their_lists(completions):
    assert "EF" in bash_complete(completions, "sockwrap", "run", "--dscp", "")
    assert set(bash_complete(completions, "sockwrap", "run", "--dscp", "AF4")) == {"AF41", "AF42", "AF43"}
    # the folded flags complete too
    assert "CS6" in bash_complete(completions, "sockwrap", "trace", "--dscp", "")
    assert set(bash_complete(completions, "sockwrap", "trace", "--log", "")) == {
        "off", "error", "warn", "info", "debug"}
    # --congestion: what this kernel has (the witness: its own list in /proc).
    cc = bash_complete(completions, "sockwrap", "run", "--congestion", "")
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        assert sorted(cc) == sorted(f.read().split()), cc
    # not file names: the directory holds the scripts, none of them offered
    assert not {"sockwrap.bash", "_sockwrap"} & set(cc)


def test_bash_completes_the_command_after_dashes(completions):
    # A command on PATH, not a file of the current directory nor a sockwrap flag.
    got = bash_complete(completions, "sockwrap", "run", "--dscp", "EF", "--", "pytho")
    assert any(g.startswith("python3") for g in got), got
    assert not any(g.startswith("--") for g in got), got
    got = bash_complete(completions, "sockwrap", "trace", "--", "bas")
    assert "bash" in got, got
    # Before `--` the flags are still offered.
    assert "--dscp" in bash_complete(completions, "sockwrap", "run", "--ds")


def test_completions_hide_the_internal_subcommands(completions):
    subs = bash_complete(completions, "sockwrap", "")
    assert "run" in subs and "attach" in subs
    for hidden in ("repin", "gen-man", "gen-completions"):
        assert hidden not in subs
        for f in ("sockwrap.bash", "_sockwrap", "sockwrap.fish"):
            assert hidden not in (completions / f).read_text(), (hidden, f)


def test_zsh_completes_values_and_the_command_after_dashes(completions):
    z = (completions / "_sockwrap").read_text()
    for sub in ("run", "trace"):
        body = re.split(rf"\n\s*\({sub}\)\n", z, maxsplit=1)[1].split("\n;;", 1)[0]
        # `_cmdambivalent` completes a command name, then that command's own arguments.
        assert "'*::command:_cmdambivalent'" in body, sub
        assert re.search(r"'--dscp=\[[^\n]*:CLASS:\([^)]*\bEF\b", body), sub
        assert re.search(r"'--log=\[[^\n]*:LEVEL:\(off error warn info debug\)", body), sub
    if shutil.which("zsh"):
        r = subprocess.run(["zsh", "-n", str(completions / "_sockwrap")], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 0, r.stderr
    f = (completions / "sockwrap.fish").read_text()
    assert re.search(r'using_subcommand run" -l dscp .* -a "[^"]*\bEF\b', f)
