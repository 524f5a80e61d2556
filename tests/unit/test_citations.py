"""Comments, docstrings and documents cite documents in the repository (docs/...), an issue, a
CVE or a man page, never the numbered sections of a specification outside the tree (issue 20
item 6). Every git-tracked text file is checked: the code, the tests, the benchmarks, the
scripts, the packaging, the docs and the root files."""

import os
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"decisions [0-9]|decisions\.md|\.\./shared|ENVIRONMENT\.md"
                     r"|protocol\.md (?:section |§)?[0-9]"
                     r"|commands\.md (?:section |§)?[0-9]|``(?:commands|protocol)\.md`` section"
                     r"|\bSTYLE(?:\.md|\s+[0-9]|\s+habit|:|\s+\")")
DOC = re.compile(r"docs/([a-z]+\.md)")
# This file spells the forbidden forms out as examples of what the pattern catches.
SELF = pathlib.Path(__file__).resolve().relative_to(ROOT).as_posix()
# Without git (an exported tree), these are walked instead of the tracked list.
TREES = (".ci", "agent", "bench", "conf", "docs", "packaging", "scripts", "tests")
UNTRACKED_DIRS = {".git", ".venv", "__pycache__", "dist", "build", ".pytest_cache", ".hypothesis"}


def _git_files():
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, timeout=60,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})
    except (OSError, subprocess.SubprocessError):
        return []
    return [name for name in done.stdout.decode("utf-8", "replace").split("\0") if name] if done.returncode == 0 else []


def _walked_files():
    names = [p.name for p in ROOT.iterdir() if p.is_file()]
    for top in TREES:
        for folder, dirs, files in os.walk(ROOT / top):
            dirs[:] = [d for d in dirs if d not in UNTRACKED_DIRS]
            names += [(pathlib.Path(folder) / f).relative_to(ROOT).as_posix() for f in files]
    return names


def text_files():
    """(relative name, text) of every tracked file that is UTF-8 text, this file excepted."""
    found = []
    for name in sorted(set(_git_files() or _walked_files())):
        path = ROOT / name
        if name == SELF or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue            # binary (screenshots, packages)
        try:
            found.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return found


def test_the_check_covers_the_whole_repository():
    names = {name for name, _ in text_files()}
    for area in ("agent/", "tests/", "bench/", "scripts/", "packaging/", "docs/"):
        assert [name for name in names if name.startswith(area)], area
    assert {"README.md", "Dockerfile", "run.sh", "test.sh"} <= names
    assert "packaging/systemd/pulseup-worker.service.in" in names      # not only Python files
    assert SELF not in names
    assert not [name for name in names if name.endswith(".png")]      # binaries are skipped


def test_nothing_cites_a_document_outside_the_repository():
    found = [f"{name}:{number}: {line.strip()}"
             for name, text in text_files()
             for number, line in enumerate(text.splitlines(), 1)
             if OUTSIDE.search(line)]
    assert found == []


def test_every_cited_document_exists():
    cited = {}
    for name, text in text_files():
        for doc in DOC.findall(text):
            cited.setdefault(doc, name)
    assert cited, "no docs/ citation found at all?"
    assert sorted(f"docs/{doc} (cited in {name})" for doc, name in cited.items()
                  if not (ROOT / "docs" / doc).is_file()) == []


def test_the_pattern_catches_each_form():
    for text in ("(decisions 12)", "see decisions.md", "../shared/spec", "protocol.md 6",
                 "commands.md 2.5.3", "commands.md section 3", "``commands.md`` section 1.2",
                 "(STYLE 7)", "STYLE: every greenlet", "STYLE.md \"Performance habits\"",
                 "(ENVIRONMENT.md, \"Caddy\")", "shared/ENVIRONMENT.md"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search('docs/commands.md, "Operations"')
