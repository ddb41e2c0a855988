"""The documentation a newcomer reads (issue #24): a short README that links into a user
guide (docs/guide, an mdBook), and the guide builds with no broken link.

The witnesses: `mdbook build` itself, the files on disk, and the HTML mdbook wrote (every
link and every anchor a page points at must be there)."""
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import util

GUIDE = util.REPO / "docs" / "guide"
SRC = GUIDE / "src"
README = util.REPO / "README.md"


def summary_entries():
    """The .md files SUMMARY.md names, in order."""
    text = (SRC / "SUMMARY.md").read_text()
    return re.findall(r"\]\(([^)#]+\.md)\)", text)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    util.require_tool("mdbook")
    out = tmp_path_factory.mktemp("guide")
    r = subprocess.run(["mdbook", "build", str(GUIDE), "-d", str(out)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # mdbook reports a missing include or a broken SUMMARY link as WARN or ERROR and may go on.
    bad = [ln for ln in (r.stdout + r.stderr).splitlines() if re.search(r"\b(WARN|ERROR)\b", ln)]
    assert not bad, bad
    return out


def parse(page):
    p = Links()
    p.feed(page.read_text())
    return p


def test_the_book_builds_and_every_page_is_in_it(book):
    entries = summary_entries()
    assert len(entries) == len(set(entries)), "a page listed twice"
    for e in entries:
        assert (SRC / e).is_file(), f"SUMMARY.md names {e}, which does not exist"
        assert (book / e.replace(".md", ".html")).is_file(), e
    # No orphan: every page of src/ is reachable from the table of contents.
    pages = {str(p.relative_to(SRC)) for p in SRC.rglob("*.md")} - {"SUMMARY.md"}
    assert pages == set(entries), f"orphans: {pages - set(entries)}"
    # The included files were included (mdbook leaves the directive if it cannot).
    for e in entries:
        assert "{{#include" not in (book / e.replace(".md", ".html")).read_text(), e


def test_every_link_and_anchor_in_the_book_resolves(book):
    checked = 0
    pages = {p: parse(p) for p in book.glob("*.html")}
    for page, links in pages.items():
        for href in links.hrefs:
            u = urlsplit(href)
            if u.scheme or href.startswith("//") or href.startswith("mailto:"):
                continue
            target = page if not u.path else (page.parent / unquote(u.path)).resolve()
            if u.path and not u.path.endswith(".html"):
                # a file of the book (css, js, fonts) or the repository (a test, a script)
                assert target.exists() or (util.REPO / unquote(u.path)).exists() or \
                    u.path.startswith("../"), (page.name, href)
                continue
            assert target.is_file(), (page.name, href)
            if u.fragment:
                ids = pages[target].ids if target in pages else parse(target).ids
                assert unquote(u.fragment) in ids, (page.name, href)
            checked += 1
    assert checked > 50, checked


def test_readme_is_short_and_links_into_the_guide(book):
    text = README.read_text()
    lines = text.count("\n")
    assert lines <= 250, lines
    links = re.findall(r"\]\((docs/guide/src/[^)]+)\)", text)
    assert len(links) >= 15, links
    for link in links:
        path, _, frag = link.partition("#")
        assert (util.REPO / path).is_file(), link
        if frag:
            html = book / Path(path).relative_to("docs/guide/src").with_suffix(".html")
            assert frag in parse(html).ids, link
    # Every other relative link of the README resolves too.
    for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (util.REPO / link).exists(), link


def test_readme_keeps_what_a_newcomer_needs_first():
    text = README.read_text()
    opening = text.split("\n## ", 1)[0]
    assert "sockwrap trace" in opening, "tracing is in the opening"
    heads = re.findall(r"^## (.+)$", text, re.M)
    for h in ("When it will not work, and what to use instead", "Two commands", "Install",
              "Requirements", "Exit status"):
        assert h in heads, h
    two = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert "scripts/demo.sh" in two and "scripts/test.sh" in two
    req = text.split("## Requirements", 1)[1].split("\n## ", 1)[0]
    assert "| backend / feature | least kernel |" in req
    for least in ("5.18", "5.6", "any kernel glibc runs on"):
        assert least in req, least
    assert "**the last match wins**" in text


def test_the_policy_page_says_last_match_wins_first():
    page = (SRC / "policy.md").read_text()
    first = page.split("\n\n")[1]
    assert "last match wins" in first.lower() and "firewall" in first


def test_the_evidence_names_only_tests_that_exist():
    """The guarantees moved out of the README keep naming real tests."""
    text = (SRC / "evidence.md").read_text() + (SRC / "limits.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)", text))
    assert len(named) > 40, len(named)
    source = "\n".join(p.read_text() for p in util.REPO.glob("tests/*.py"))
    source += "\n".join(p.read_text() for p in util.REPO.glob("crates/*/tests/*.rs"))
    source += "\n".join(p.read_text() for p in util.REPO.glob("crates/*/src/**/*.rs"))
    missing = [n for n in sorted(named)
               if not re.search(rf"\bfn {n}\b|\bdef {n}\b|\bdef {n.rstrip('_')}", source)]
    assert not missing, missing
    for f in set(re.findall(r"`(tests/test_[a-z0-9_]+\.py)`", text)):
        assert (util.REPO / f).is_file(), f


def test_the_options_page_has_every_option_sockwrap_lists():
    util.require_sockwrap()
    r = subprocess.run([str(util.SOCKWRAP_BIN), "options"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    names = [ln.split()[0] for ln in r.stdout.splitlines()[1:]]
    page = (SRC / "options.md").read_text()
    cells = set(re.findall(r"`([a-z.\-/]+)`", page))
    # `keepalive.idle/.interval/.count` is one row for the three timers.
    cells |= {f"keepalive.{t}" for t in ("idle", "interval", "count")
              if "`keepalive.idle/.interval/.count`" in page}
    missing = [n for n in names if n not in cells]
    assert not missing, missing


def test_the_options_page_says_what_the_catalog_says():
    """Each option's row names the kernel constants `sockwrap options --json` gives (from
    the catalog) and says when it is set in the same words: the page is written by hand,
    grouped by purpose, and this keeps it from drifting from the code."""
    util.require_sockwrap()
    r = subprocess.run([str(util.SOCKWRAP_BIN), "options", "--json"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    rows = []
    for line in (SRC / "options.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append((set(re.findall(r"`([a-z\-]+)", cells[0])), cells))
    wrong = []
    for o in json.loads(r.stdout)["options"]:
        name = o["option"]
        mine = [c for names, c in rows if {name, name.split(".")[0], *o["aliases"]} & names]
        if not mine:
            wrong.append(f"{name}: no row")
            continue
        cells = mine[0]
        for k in re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", o["kernel"]):
            if not re.search(rf"\b{k}\b", cells[1]):
                wrong.append(f"{name}: {k} not in the kernel column ({cells[1]!r})")
        if o["when"] != cells[2]:
            wrong.append(f"{name}: set {o['when']!r}, the page says {cells[2]!r}")
    assert not wrong, "docs/guide/src/options.md:\n" + "\n".join(wrong)


def test_the_exit_status_page_has_the_table_help_prints():
    util.require_sockwrap()
    r = subprocess.run([str(util.SOCKWRAP_BIN), "--help"], capture_output=True, text=True,
                       timeout=20)
    table = r.stdout[r.stdout.index("Exit status:"):].strip()
    page = (SRC / "exit-status.md").read_text()
    assert table in page, "docs/guide/src/exit-status.md: paste `sockwrap --help`'s table again"
