"""What the guard could not read, kept apart from what is missing.

A non-root user sees `/var/lib/waagent` (0700), a 0600 `waagent.log` or a 0600
handler state file as "absent" if nobody asks why a read failed. This module
asks: `blocked()` says why an existing path cannot be read (permission denied),
and `lib_dir_blocks()` walks the few files the guard reads in the agent's
Lib.Dir. Each `Unreadable` names the observed input it belongs to (a bounded
set of host paths: waagent.conf, waagent.log, Lib.Dir, the pidfile, ...), the
exact path, and the reason; `status`, `doctor` and `metrics` show the same list
and treat what it covers as unknown, never as absent, ok or 0.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

_STATUS_FILE = re.compile(r"^(\d+)\.status$")
_SETTINGS_FILE = re.compile(r"^(\d+)\.settings$")
# The files the guard reads inside one extension handler directory.
_HANDLER_FILES = ("config/HandlerState", "config/HandlerStatus", "heartbeat.log")


@dataclass(frozen=True)
class Unreadable:
    """One input that exists but could not be read."""

    input: str  # the observed input (host path), a bounded label: conf, log, Lib.Dir, ...
    path: str  # the host path that could not be read
    reason: str  # e.g. "permission denied"

    def __str__(self) -> str:
        hint = " (run as root)" if self.reason == "permission denied" else ""
        return f"{self.path}: {self.reason}{hint}"

    def covers(self, host_path: str) -> bool:
        """Whether reading `host_path` needs this path (it is the path or lies under it)."""
        mine, theirs = PurePosixPath(self.path), PurePosixPath(host_path)
        return mine == theirs or mine in theirs.parents


def blocked(path: Path, *, directory: bool = False) -> Optional[str]:
    """Why the existing `path` cannot be read; None when it is readable or does not exist."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        return "permission denied"  # a parent directory cannot be searched
    except OSError as error:
        return (error.strerror or str(error)).lower()
    wanted = os.R_OK | (os.X_OK if directory and stat.S_ISDIR(info.st_mode) else 0)
    if not os.access(path, wanted):
        return "permission denied"
    return None


def _listing(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _newest(directory: Path, pattern: re.Pattern[str]) -> Optional[Path]:
    numbered = [(int(m.group(1)), name) for name in _listing(directory)
                if (m := pattern.match(name))]
    return directory / max(numbered)[1] if numbered else None


def lib_dir_blocks(lib_dir: Path, handler_dirs: Iterable[Path],
                   agent_dirs: Iterable[Path]) -> list[tuple[Path, str]]:
    """The paths under Lib.Dir the guard reads that exist but cannot be read, with why.

    When Lib.Dir itself cannot be listed, that one path says it all.
    """
    reason = blocked(lib_dir, directory=True)
    if reason is not None:
        return [(lib_dir, reason)]
    found: list[tuple[Path, str]] = []

    def note(path: Path, *, directory: bool = False) -> bool:
        if any(path.is_relative_to(done) for done, _ in found):
            return True
        why = blocked(path, directory=directory)
        if why is not None:
            found.append((path, why))
        return why is not None

    note(lib_dir / "WireServerEndpoint")
    for handler in handler_dirs:
        if note(handler, directory=True):
            continue
        note(handler / "config", directory=True)
        note(handler / "status", directory=True)
        for name in _HANDLER_FILES:
            note(handler / name)
        for newest in (_newest(handler / "status", _STATUS_FILE),
                       _newest(handler / "config", _SETTINGS_FILE)):
            if newest is not None:
                note(newest)
    for agent in agent_dirs:
        if not note(agent, directory=True):
            note(agent / "error.json")
    return found


def first_covering(
    entries: Sequence[Unreadable], *host_paths: str, within: bool = False
) -> Optional[Unreadable]:
    """The first entry that keeps any of `host_paths` from being read.

    With `within`, an entry for a path under one of `host_paths` counts too (a
    handler directory is unknown when its `config/` cannot be read).
    """
    for entry in entries:
        for path in host_paths:
            if entry.covers(path) or (within and Unreadable(path, path, "").covers(entry.path)):
                return entry
    return None


def skip_reason(entry: Unreadable) -> str:
    """The words of a check skipped for want of an input."""
    hint = ": run as root" if entry.reason == "permission denied" else ""
    return f"could not read {entry.path} ({entry.reason}){hint}"
