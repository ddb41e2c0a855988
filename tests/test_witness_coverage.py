"""Every option sockwrap knows has an end-to-end witness test.

The option list comes from the code: `sockwrap options --json` gives the catalog (one entry
per option slot, canonical names; aliases such as `tos`, `hop-limit`, `keepidle` are spellings
of these and count for them). WITNESSES maps each option to the tests that prove it with
something other than sockwrap (the kernel, the peer or the wire) and that also run without
sockwrap to show the witness can fail.

The map cannot be satisfied by a name alone:
- every entry must match tests that pytest really collects (a separate `--collect-only`
  run over tests/, so this holds when this file runs alone too);
- each matched test must reach a sockwrap argument list (its CASES parameters, or a literal
  in its own code or the module functions it calls) for which `sockwrap explain` -- the
  policy code itself, aliases resolved -- reports that option.
"""
import json

import pytest

import util

# option (canonical catalog name) -> test ids: `file::function` (all its parametrizations)
# or `file::function[id]` (one case).
WITNESSES = {
    "dscp": [
        "test_options.py::test_dscp_seen_by_peer",              # the peer: IP_PKTOPTIONS / tclass
        "test_options.py::test_dscp_spellings",                 # incl. the `tos` alias
        "test_options.py::test_curl_dscp_on_every_client_packet",  # the wire (tcpdump)
        "test_options.py::test_option_seen_by_kernel[dscp-ss]",    # ss --tos
        "test_udp.py::test_python_udp_sender",                  # UDP: ancillary data per datagram
        "test_udp.py::test_udp_tos_exact",
    ],
    "priority": [
        "test_options.py::test_option_seen_by_kernel[priority]",
        "test_kernel_view.py::test_option_read_from_kernel[priority]",
    ],
    "ttl": ["test_options.py::test_ttl_on_the_wire"],
    "mark": ["test_options.py::test_option_seen_by_kernel[mark]"],
    "bind-interface": ["test_options.py::test_option_seen_by_kernel[bind-interface]"],
    "bind-address": ["test_options.py::test_bind_address"],
    "reuseaddr": [
        "test_bind_options.py::test_reuseaddr_server_restarts_over_time_wait",
        "test_bind_options.py::test_two_servers_bind_one_port[reuseaddr-udp4]",
        "test_bind_options.py::test_bind_option_read_from_kernel[reuseaddr-tcp]",
        "test_bind_options.py::test_bind_option_read_from_kernel[reuseaddr-udp]",
    ],
    "reuseport": [
        "test_bind_options.py::test_two_servers_bind_one_port[reuseport-tcp4]",
        "test_bind_options.py::test_two_servers_bind_one_port[reuseport-tcp6]",
        "test_bind_options.py::test_two_servers_bind_one_port[reuseport-udp4]",
        "test_bind_options.py::test_reuseport_kernel_spreads_connections_over_both_servers",
        "test_bind_options.py::test_bind_option_read_from_kernel[reuseport-tcp]",
        "test_bind_options.py::test_bind_option_read_from_kernel[reuseport-udp]",
    ],
    "sndbuf": ["test_options.py::test_option_seen_by_kernel[sndbuf]"],
    "rcvbuf": ["test_options.py::test_option_seen_by_kernel[rcvbuf]"],
    "max-pacing-rate": ["test_kernel_view.py::test_option_read_from_kernel[max-pacing-rate]"],
    "linger": [
        "test_options.py::test_linger_zero_resets",
        "test_kernel_view.py::test_option_read_from_kernel[linger]",
    ],
    "keepalive": [
        "test_options.py::test_option_seen_by_kernel[keepalive]",
        "test_options.py::test_option_seen_by_kernel[keepalive-bare]",
        "test_options.py::test_curl_keepalive_timer[True]",
        "test_kernel_view.py::test_option_read_from_kernel[keepalive]",
    ],
    "keepalive.idle": [
        "test_kernel_view.py::test_option_read_from_kernel[keepalive-idle]",
        "test_kernel_view.py::test_option_read_from_kernel[keepalive]",   # IDLE,INTVL,CNT
    ],
    "keepalive.interval": [
        "test_kernel_view.py::test_option_read_from_kernel[keepalive-interval]",
        "test_kernel_view.py::test_option_read_from_kernel[keepalive]",
    ],
    "keepalive.count": [
        "test_kernel_view.py::test_option_read_from_kernel[keepalive-count]",
        "test_kernel_view.py::test_option_read_from_kernel[keepalive]",
    ],
    "nodelay": ["test_options.py::test_nodelay_write_write_read"],
    "user-timeout": ["test_kernel_view.py::test_option_read_from_kernel[user-timeout]"],
    "congestion": ["test_options.py::test_option_seen_by_kernel[congestion]"],
    "maxseg": [
        "test_options.py::test_option_seen_by_kernel[maxseg]",
        "test_options.py::test_maxseg_in_syn",
    ],
    "notsent-lowat": ["test_kernel_view.py::test_option_read_from_kernel[notsent-lowat]"],
    "mptcp": [
        "test_mptcp.py::test_two_paths_http[sockwrap]",   # MIB counters, ss -M, both paths carry data
        "test_mptcp.py::test_mptcp_socket_is_mptcp_end_to_end",  # SO_PROTOCOL on both ends
    ],
}

def catalog_options():
    """Canonical option names, from the catalog as `sockwrap options --json` gives it (the
    table also prints rows for the alias spellings `tos` and `hop-limit`: their own ranges)."""
    r = util.run([util.SOCKWRAP_BIN, "options", "--json"], timeout=10)
    assert r.returncode == 0, r.stderr
    names = [o["option"] for o in json.loads(r.stdout)["options"]]
    assert len(names) == len(set(names)) and len(names) >= 20, names
    return names


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Every test pytest collects in tests/, with the sockwrap argument lists it reaches."""
    util.require_sockwrap()
    dump = tmp_path_factory.mktemp("witness") / "collected.json"
    r = util.run([util.PY, "-m", "pytest", "--collect-only", "-q", "-p", "witness_collect",
                  "-p", "no:cacheprovider", str(util.TESTS)],
                 env={"SOCKWRAP_WITNESS_DUMP": dump, "PYTHONPATH": util.TESTS}, timeout=120,
                 cwd=util.TESTS)
    assert r.returncode == 0 and dump.exists(), f"collection failed: {r.stdout[-3000:]} {r.stderr[-3000:]}"
    items = json.loads(dump.read_text())
    assert len(items) > 100, f"only {len(items)} tests collected"
    return {it["nodeid"]: it["arg_lists"] for it in items}


_explained = {}


def options_set_by(arg_list):
    """The options `sockwrap explain ARGS` says a TCP client would get; empty when the list is
    not a sockwrap option list (explain refuses it)."""
    key = tuple(arg_list)
    if key not in _explained:
        r = util.run([util.SOCKWRAP_BIN, "explain", *arg_list, "--dest", "127.0.0.1:9"], timeout=10)
        names = set()
        if r.returncode == 0:
            for ln in r.stdout.splitlines()[1:]:
                if not ln.startswith("  "):
                    break  # the option rows end; "rules that matched" follows
                if ln.split():
                    names.add(ln.split()[0])
        _explained[key] = names
    return _explained[key]


def matches(pattern, nodeid):
    return nodeid == pattern or ("[" not in pattern and nodeid.startswith(pattern + "["))


def test_every_option_has_a_witness(items):
    options = catalog_options()

    unknown = sorted(set(WITNESSES) - set(options))
    assert not unknown, f"WITNESSES names options the catalog does not have: {unknown}"

    missing, dangling, unproven = [], [], []
    for opt in options:
        entries = WITNESSES.get(opt, [])
        if not entries:
            missing.append(opt)
            continue
        for pat in entries:
            hits = [n for n in items if matches(pat, n)]
            if not hits:
                dangling.append(f"{opt}: {pat}")
            for n in hits:
                if not any(opt in options_set_by(a) for a in items[n]):
                    unproven.append(f"{opt}: {n} (sockwrap argument lists it reaches: {items[n]})")
    msg = []
    if missing:
        msg.append(f"options with no end-to-end witness test: {', '.join(missing)}")
    if dangling:
        msg.append("witness entries that match no collected test:\n  " + "\n  ".join(dangling))
    if unproven:
        msg.append("witness tests that never ask sockwrap for their option:\n  " + "\n  ".join(unproven))
    assert not msg, "\n".join(msg)


def test_coverage_check_can_fail(items):
    """The checks above reject what they should: an entry naming no real test, and a real
    test that does not force the option; aliases count for their option."""
    options = catalog_options()
    assert "reuseport" in options and "reuseaddr" in options
    # a name alone: no collected test is called this
    assert not [n for n in items if matches("test_bind_options.py::test_no_such_witness", n)]
    # a real test that forces another option: the DSCP peer test does not set reuseport
    hits = [n for n in items if matches("test_options.py::test_dscp_seen_by_peer", n)]
    assert hits and not any("reuseport" in options_set_by(a) for n in hits for a in items[n])
    # and its own option is found, through the `--tos` alias too
    assert options_set_by(["--tos", "40"]) == {"dscp"}
    assert options_set_by(["--keepalive-idle", "45"]) == {"keepalive.idle"}
    # a non-option list is refused by explain, not counted
    assert options_set_by(["--family", "6"]) == set()

