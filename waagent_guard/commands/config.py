"""`waagent-guard config check [FILE]` and `config show`."""

from __future__ import annotations

import argparse
from pathlib import Path

from waagent_guard.context import Context
from waagent_guard.settings import load_settings, render_settings


def check(args: argparse.Namespace, context: Context) -> int:
    """Validate a config file; ConfigError (exit 78) names the file, key and fix."""
    path = Path(args.file) if args.file else context.effective_config_path
    explicit = args.file is not None or context.config_path is not None
    if not path.exists() and not explicit:
        print(f"{path}: not present; the guard runs with its defaults", file=context.stdout)
        return 0
    load_settings(path, required=True)
    print(f"{path}: OK", file=context.stdout)
    return 0


def show(args: argparse.Namespace, context: Context) -> int:
    """Print the effective configuration, defaults included, as TOML."""
    settings = context.settings()
    source = context.effective_config_path
    origin = str(source) if source.exists() else f"{source} (absent: defaults)"
    print(f"# effective configuration from {origin}", file=context.stdout)
    context.stdout.write(render_settings(settings))
    return 0
