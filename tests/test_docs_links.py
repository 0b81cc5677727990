"""The documentation's links hold: every relative link and `#anchor` in README.md and
docs/*.md points at a file that exists and at a heading that is there (GitHub's anchor
slugs), and every `README.md#...` or `docs/<page>.md#...` that code, configuration or
tests mention names a heading of that page. README stays the front door: it shows the two
commands `.ci/run` runs and leads to every page of docs/."""

import os
import re
from pathlib import Path

import pytest

from avatar_devstack.environment import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`+[^`]*`+")
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...
# A page's anchor named anywhere else in the repository (comments, tests, settings).
MENTION = re.compile(r"\b((?:docs/)?[\w-]+\.md)#([\w-]+)")
SKIP_DIRS = {".git", ".venv", ".tools", "node_modules", "vendor", "var", "__pycache__"}
MENTION_SUFFIXES = {".py", ".yml", ".yaml", ".toml", ".sh", ".js", ".html", ".example", ".md"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed (but
    `-` and `_`), each space a `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose_lines(page: Path) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, with their line numbers."""
    lines, fenced = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(page):
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(page):
        line = INLINE_CODE.sub("", line)
        found += [(number, target) for target in INLINE_LINK.findall(line)]
        if match := REFERENCE_LINK.match(line):
            found.append((number, match.group(1)))
    return [(n, t) for n, t in found if not EXTERNAL.match(t)]


def broken(page: Path, target: str) -> str | None:
    """Why a relative link from `page` does not resolve, or None."""
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    if not destination.exists():
        return f"no file {path}"
    if REPO_ROOT.resolve() not in (destination, *destination.parents):
        return f"{path} is outside the repository"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"no heading #{anchor} in {destination.relative_to(REPO_ROOT.resolve())}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path):
    problems = [
        f"{page.relative_to(REPO_ROOT)}:{number}: ({target}) {why}"
        for number, target in links(page)
        if (why := broken(page, target))
    ]
    assert problems == []


def mentioning_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            path = Path(folder) / name
            if path.suffix in MENTION_SUFFIXES or name in {"Makefile", "Dockerfile"}:
                found.append(path)
            elif name.endswith("Dockerfile"):
                found.append(path)
    return found


def test_every_anchor_mentioned_in_the_repository_exists():
    problems = []
    for path in mentioning_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for page, anchor in MENTION.findall(text):
            target = REPO_ROOT / page
            if not target.exists() and "/" not in page:  # docs' pages name each other bare
                target = REPO_ROOT / "docs" / page
            if not target.exists():
                if page == "README.md" or page.startswith("docs/"):
                    problems.append(f"{path.relative_to(REPO_ROOT)}: no page {page}")
            elif anchor not in anchors(target):
                problems.append(f"{path.relative_to(REPO_ROOT)}: {page}#{anchor}")
    assert problems == []


def test_readme_shows_the_two_commands_ci_runs():
    """`.ci/run` runs README's own install and test commands: README must show them."""
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    for command in ("make install", "make test"):
        assert command in ci
        assert re.search(rf"^{command}\b", readme, re.M), f"README no longer shows {command}"


def test_readme_leads_to_every_page_of_docs():
    linked = {target.partition("#")[0] for _, target in links(REPO_ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in PAGES[1:]}
    assert pages - linked == set()


def test_the_slugs_are_githubs():
    assert slug("3D generation (gen3d)") == "3d-generation-gen3d"
    assert slug("Compose quick start (one machine)") == "compose-quick-start-one-machine"
    assert slug("Issue 10: the one service shape, before and after") == (
        "issue-10-the-one-service-shape-before-and-after"
    )
    assert slug("`make run` and `.env`") == "make-run-and-env"
    page = REPO_ROOT / "README.md"
    assert broken(page, "docs/no-such-page.md") == "no file docs/no-such-page.md"
    assert broken(page, "#no-such-heading") is not None
