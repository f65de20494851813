"""The README and the pages under docs/: every link resolves, every `dessam` command shown parses, the
README stays short and the pages build as a site (`mkdocs build --strict`)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dessam.commands import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
README_MAX_LINES = 200


def headings(path: Path) -> set:
    """GitHub's anchors of the headings of a Markdown file (outside code blocks)."""
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = re.match(r"^#{1,6} (.*)", line)
        if match and not fenced:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def links(path: Path) -> list:
    """The link targets of a Markdown file, outside code blocks and inline code."""
    found, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith("    "):
            continue
        found += LINK.findall(re.sub(r"`[^`]*`", "", line))
    return found


def shown_commands(path: Path) -> list:
    """The `dessam ...` command lines of a Markdown file's code blocks (fenced or indented),
    backslash continuations joined."""
    commands, fenced, pending = [], False, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        words = shlex.split(text, comments=True)
        if words[:1] == ["dessam"] or words[:1] == [".venv/bin/dessam"]:
            commands.append(words[1:])
    return commands


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not followed here
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in headings(dest):
            broken.append(f"{target}: no heading '{anchor}' in {dest.name}")
    assert not broken, f"{page.name}: {broken}"


def test_pages_show_commands():
    assert sum(len(shown_commands(page)) for page in PAGES) >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_parses(page, capsys):
    parser = build_parser()
    failing = []
    for words in shown_commands(page):
        try:
            parser.parse_args(words)
        except SystemExit as exit:
            if exit.code:
                failing.append(" ".join(words) + ": " + capsys.readouterr().err.strip().splitlines()[-1])
    assert not failing, f"{page.name}: {failing}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_links_every_page():
    readme = (ROOT / "README.md").read_text()
    missing = [page.name for page in PAGES[1:] if page.name != "index.md" and f"docs/{page.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


def test_site_builds(tmp_path):
    pytest.importorskip("mkdocs")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "site" / "models" / "index.html").is_file()
