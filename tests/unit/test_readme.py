"""The README and docs stay true: the config table (docs/configuration.md) is the settings
model, the README's quick start is the two make commands, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from waagent_guard.cli import build_parser
from waagent_guard.settings import Settings, toml_value

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()


def _settings_rows() -> dict[str, str]:
    rows: dict[str, str] = {}

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(key, annotation)
                continue
            default = field.get_default(call_default_factory=True)
            rows[key] = "(unset)" if default is None else toml_value(default)

    walk("", Settings)
    return rows


def test_every_config_key_is_documented_with_its_default() -> None:
    documented = dict(
        re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", CONFIGURATION, flags=re.M)
    )
    for key, default in _settings_rows().items():
        assert key in documented, f"docs/configuration.md lacks config key {key}"
        assert documented[key] == default, (
            f"docs/configuration.md {key}: {documented[key]} != {default}"
        )
    assert set(documented) <= set(_settings_rows()), "docs/configuration.md: unknown keys"


def test_quick_start_has_exactly_the_two_make_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first_block = quick.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    ci = (Path(__file__).resolve().parents[2] / ".ci/run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call the README's test command"


def test_every_documented_command_exists() -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for command in re.findall(r"^\| `([a-z]+)", table, flags=re.M):
        assert command in subcommands, f"README documents unknown command {command}"
