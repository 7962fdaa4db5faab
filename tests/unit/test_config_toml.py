"""`config show` and the packaged guard.toml are valid TOML for any value."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from waagent_guard.cli import main
from waagent_guard.settings import Settings, parse_settings, render_settings

REPO = Path(__file__).resolve().parents[2]
AWKWARD = ["/usr/sbin/waagent", "line one\nline two", 'say "hi"', "back\\slash", "tab\there",
           "é ünïcode", "# not a comment", "x = 1", "[not.a.table]", "'single'"]


def test_config_show_prints_toml_that_parses_back_to_the_same_settings(tmp_path: Path) -> None:
    config = tmp_path / "guard.toml"
    config.write_text(
        "[agent]\n"
        "manager = \"command\"\n"
        "log_path = \"/var/log/wa\\nagent \\\"odd\\\".log\"\n"
        "[agent.command]\n"
        f"start = [{', '.join(_basic(item) for item in AWKWARD)}]\n"
        "[control]\n"
        "group = \"adm\\\\x\"\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    assert main(["config", "show", "--config", str(config)], stdout=out) == 0
    shown = out.getvalue()
    settings = parse_settings(shown, "config show")
    assert settings.agent.command.start == AWKWARD
    assert settings.agent.log_path == '/var/log/wa\nagent "odd".log'
    assert settings == parse_settings(config.read_text(encoding="utf-8"))


def test_unset_keys_are_named_in_a_comment_not_as_invalid_toml() -> None:
    text = render_settings(Settings())
    assert text.startswith("# unset (the built-in behaviour applies): agent.conf_path,")
    assert "(unset)" not in text
    assert parse_settings(text) == Settings()


def _basic(text: str) -> str:
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def _packaged_lines() -> list[tuple[int, str]]:
    text = (REPO / "packaging" / "guard.toml").read_text(encoding="utf-8")
    return [(number, line) for number, line in enumerate(text.splitlines()) if line.startswith("#")]


@pytest.mark.parametrize("number,line", _packaged_lines(), ids=lambda item: str(item))
def test_every_commented_line_of_the_packaged_guard_toml_is_valid_when_uncommented(
    number: int, line: str
) -> None:
    lines = (REPO / "packaging" / "guard.toml").read_text(encoding="utf-8").splitlines()
    uncommented = line[2:] if line.startswith("# ") else line[1:]
    lines[number] = uncommented
    # parses as TOML and validates against the model (a bad example would fail here too)
    parse_settings("\n".join(lines) + "\n", f"packaging/guard.toml line {number + 1}")
