"""Where log records go: journald (structured) under systemd, stderr otherwise.

The only module that attaches logging handlers. `systemd.journal` is used when
it imports; otherwise a pure-Python journal protocol writer is used when the
journal socket exists, else plain stderr.
"""

from __future__ import annotations

import logging
import os
import sys


def under_systemd(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM"))


def configure_cli_logging(*, debug: bool = False) -> None:
    """Commands: warnings and above to stderr (debug output with --debug)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("waagent-guard: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
