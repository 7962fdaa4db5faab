"""Print the packaged default /etc/waagent-guard/guard.toml: every key commented out.

Run by `make guard-toml` (writes packaging/guard.toml); a test checks that the
committed file matches this output and parses to the built-in defaults.
"""

from __future__ import annotations

import re
import sys

from pydantic import BaseModel

from waagent_guard.settings import Settings, render_settings

HEADER = """\
# waagent-guard configuration (TOML). Every key below is commented out and
# shows its built-in default: uncomment a key to change it, keeping it under
# its [section]. Check the result with `waagent-guard config check`, then
# apply it with `systemctl reload waagent-guard` (or restart).
# Reference: /usr/share/doc/waagent-guard/README.md
"""


def _model_at(path: str) -> type[BaseModel]:
    model: type[BaseModel] = Settings
    for part in path.split("."):
        annotation = model.model_fields[part].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation
    return model


def render() -> str:
    out = [HEADER]
    model: type[BaseModel] = Settings
    for line in render_settings(Settings()).splitlines():
        section = re.fullmatch(r"\[(.+)\]", line)
        key = re.fullmatch(r"(?:# )?([a-z_]+) = (.*)", line)
        if section:
            model = _model_at(section.group(1))
            out.append(line)
        elif key:
            description = model.model_fields[key.group(1)].description
            if description:
                out.append(f"# {key.group(1)}: {description}")
            out.append(line if line.startswith("# ") else f"# {line}")
        else:
            out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
