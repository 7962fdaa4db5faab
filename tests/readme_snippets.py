"""The install snippets of docs/packaging.md (cloud-config, rollout script, client
files; the README's two install blocks are copies, checked equal), for the tests that
check them: one parser, used by the unit and the e2e tests."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PACKAGING = REPO / "docs" / "packaging.md"
SCRIPT_MARKER = "# waagent-guard-rollout.sh"


def section(title: str, document: Path = PACKAGING) -> str:
    """The text of the `## title` section of `document` (up to the next `## `)."""
    text = document.read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    """Fenced code blocks of `language` in `text`."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def install_section() -> str:
    return section("Install on a VM")


def cloud_configs() -> list[str]:
    return [b for b in blocks(install_section(), "yaml") if b.startswith("#cloud-config\n")]


def rollout_script() -> str:
    found = [b for b in blocks(install_section(), "bash") if SCRIPT_MARKER in b.splitlines()[1]]
    assert len(found) == 1, "docs/packaging.md: one bash block named waagent-guard-rollout.sh"
    return found[0]


def settings_command() -> str:
    """The README's line that builds the Custom Script settings (cse-settings.json)."""
    lines = [
        line
        for block in blocks(install_section(), "sh")
        for line in block.splitlines()
        if line.endswith(">cse-settings.json")
    ]
    assert len(lines) == 1, "docs/packaging.md: one command writing cse-settings.json"
    return lines[0]


def repo_file() -> str:
    found = [b for b in blocks(install_section(), "ini") if b.startswith("[waagent-guard]")]
    assert len(found) == 1, "docs/packaging.md: one waagent-guard.repo block"
    return found[0]


def apt_source_line() -> str:
    """The `deb [signed-by=...] ... main` line docs/packaging.md tells users to add."""
    match = re.search(r'^echo "(deb \[signed-by=[^"]+)"', install_section(), flags=re.M)
    assert match, "docs/packaging.md: no deb [signed-by=...] line"
    return match.group(1)
