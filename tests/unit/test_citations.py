"""Comments and docstrings cite documents in the repository (docs/...), an issue, a CVE or a
man page, never the numbered sections of a specification outside the tree (issue 20 item 6)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"decisions [0-9]|decisions\.md|\.\./shared|ENVIRONMENT\.md"
                     r"|protocol\.md (?:section |§)?[0-9]"
                     r"|commands\.md (?:section |§)?[0-9]|``(?:commands|protocol)\.md`` section"
                     r"|\bSTYLE(?:\.md|\s+[0-9]|\s+habit|:|\s+\")")
DOC = re.compile(r"docs/([a-z]+\.md)")


def sources():
    return sorted(p for p in (ROOT / "agent").rglob("*.py"))


def test_the_code_cites_no_document_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sources()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if OUTSIDE.search(line)]
    assert found == []


def test_every_cited_document_exists():
    cited = {name for path in sources() for name in DOC.findall(path.read_text(encoding="utf-8"))}
    assert cited, "no docs/ citation found at all?"
    assert sorted(name for name in cited if not (ROOT / "docs" / name).is_file()) == []


def test_the_pattern_catches_each_form():
    for text in ("(decisions 12)", "see decisions.md", "../shared/spec", "protocol.md 6",
                 "commands.md 2.5.3", "commands.md section 3", "``commands.md`` section 1.2",
                 "(STYLE 7)", "STYLE: every greenlet", "STYLE.md \"Performance habits\"",
                 "(ENVIRONMENT.md, \"Caddy\")", "shared/ENVIRONMENT.md"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search('docs/commands.md, "Operations"')
