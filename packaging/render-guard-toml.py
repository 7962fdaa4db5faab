"""Print the packaged default /etc/waagent-guard/guard.toml: every key commented out.

Run by `make guard-toml` (writes packaging/guard.toml); a test checks that the
committed file matches this output, parses to the built-in defaults, and that
every commented line is valid TOML when uncommented: settings are `# key = value`
(the default, or an example for a key that has none), written by tomli-w;
explanations are `## ...`, which uncomment to a comment.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

from waagent_guard.settings import Settings, toml_line

HEADER = """\
## waagent-guard configuration (TOML). Every key below is commented out and
## shows its built-in default: uncomment a key to change it, keeping it under
## its [section]. Check the result with `waagent-guard config check`, then
## apply it with `systemctl reload waagent-guard` (or restart).
## Reference: man 5 guard.toml; /usr/share/doc/waagent-guard/docs/configuration.md
"""


def _section(prefix: str, model: type[BaseModel], out: list[str]) -> None:
    nested: list[tuple[str, type[BaseModel]]] = []
    if prefix:
        out.append(f"[{prefix}]")
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((f"{prefix}.{name}" if prefix else name, annotation))
            continue
        default = field.get_default(call_default_factory=True)
        description = field.description or ""
        if default is None:
            example = (field.examples or [""])[0]
            out.append(f"## {name}: {description} (unset by default; an example:)")
            out.append(f"# {toml_line(name, example)}")
        else:
            if description:
                out.append(f"## {name}: {description}")
            out.append(f"# {toml_line(name, default)}")
    if prefix:
        out.append("")
    for name, sub in nested:
        _section(name, sub, out)


def render() -> str:
    out = [HEADER]
    _section("", Settings, out)
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
