"""The README and docs/*.md link to files and headings that exist (the docs were split).

Relative links only (`http(s):` and `mailto:` are not fetched): the file must exist in
the repository, and a `#fragment` must be the anchor of a heading of the target, made
as GitHub makes it (lowercase; punctuation but `-` and `_` dropped; spaces to `-`;
a repeated heading gets `-1`, `-2`, ...).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    for title in re.findall(r"^#{1,6} (.+?)\s*$", FENCE.sub("", text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        candidate, number = slug, 0
        while candidate in found:
            number += 1
            candidate = f"{slug}-{number}"
        found.add(candidate)
    return found


def broken_links(document: Path) -> list[str]:
    text = document.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{fragment} in {file.name}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## The `x` key (y)\n## Same\n## Same\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#the-x-key-y) [ok](a.md#same-1) [ok](#here) [web](https://x/y#z)\n"
        "[bad](a.md#nope) [gone](c.md)\n```\n[in a fence](nowhere.md)\n```\n# Here\n"
    )
    assert broken_links(page) == [
        "a.md#nope: no heading #nope in a.md",
        f"c.md: no file {tmp_path / 'c.md'}",
    ]


def test_the_readme_stays_a_front_door() -> None:
    """A few hundred lines at most; the reference lives in docs/ (issue 11)."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move reference text into docs/"


CONFLICT_MARKER = re.compile(r"^(?:<{7}|={7}|>{7})(?: |$)", flags=re.M)
PROSE = [*DOCUMENTS, *REPO.glob("*/README.md"), *REPO.glob("monitoring/*.md"),
         *REPO.glob("packaging/*.[15]")]


def conflict_markers(text: str) -> list[int]:
    """Line numbers of merge-conflict markers (a merge once left three in SECURITY.md)."""
    return [text.count("\n", 0, match.start()) + 1 for match in CONFLICT_MARKER.finditer(text)]


@pytest.mark.parametrize("document", sorted(set(PROSE)), ids=lambda p: p.name)
def test_no_merge_conflict_markers(document: Path) -> None:
    assert conflict_markers(document.read_text(encoding="utf-8")) == []


def test_the_marker_check_finds_each_marker() -> None:
    text = "a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> main\n======= not at a line start? no\n"
    assert conflict_markers(text) == [2, 4, 6, 7]
    assert conflict_markers("a ======= b\n========\n") == []
