"""What the agent keeps in its Lib.Dir (`/var/lib/waagent`), read without changing it.

Owns the inventory of extension handler directories (`<Publisher>.<Type>-<version>`:
HandlerState, HandlerStatus, the newest `status/<seq>.status`, heartbeat freshness,
which directory is the active one), the agent versions downloaded by auto-update
(`WALinuxAgent-<ver>/` and their `error.json` blacklist), the agent's flag files
(`disable_agent`, `provisioned`), `WireServerEndpoint`, and where the newest
`waagent_status.json` is. Also owns version parsing: versions are integer tuples,
never strings or floats ("1.0.91.0" < "1.0.9220.0").

Everything here tolerates a half-written or damaged tree: a truncated JSON file,
a directory where a file belongs, binary garbage or an unreadable file becomes a
line in `problems` naming the path, never an exception. Every read is bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from waagent_guard.fsutil import read_bounded

logger = logging.getLogger(__name__)

# AGENT.md §4: handler directories are `<Publisher>.<Type>-<version>`.
HANDLER_DIR_PATTERN = re.compile(r"^([^-]+)-(\d+(?:\.\d+)*)$")
AGENT_DIR_PATTERN = re.compile(r"^WALinuxAgent-(\d+(?:\.\d+)*)$")
STATUS_FILE_PATTERN = re.compile(r"^(\d+)\.status$")
LEGACY_WAAGENT_STATUS_PATTERN = re.compile(r"^waagent_status.*\.json$")
VERSION_PATTERN = re.compile(r"^\d+(?:\.\d+)*$")

MAX_JSON_BYTES = 1024 * 1024
MAX_SMALL_FILE_BYTES = 4096
EXTENSION_STATUS_VALUES = ("transitioning", "warning", "error", "success")

HANDLER_STATE_FILE = "config/HandlerState"
HANDLER_STATUS_FILE = "config/HandlerStatus"
HEARTBEAT_FILE = "heartbeat.log"
AGENT_ERROR_FILE = "error.json"
WAAGENT_STATUS_FILE = "waagent_status.json"


def parse_version(text: str) -> Optional[tuple[int, ...]]:
    """`"1.0.9220.0"` -> `(1, 0, 9220, 0)`; anything that is not dotted digits -> None."""
    candidate = text.strip()
    if not VERSION_PATTERN.match(candidate):
        return None
    return tuple(int(part) for part in candidate.split("."))


def _padded(left: tuple[int, ...], right: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    width = max(len(left), len(right))
    return tuple(part + (0,) * (width - len(part)) for part in (left, right))


def version_at_least(version: Optional[str], minimum: str) -> Optional[bool]:
    """Whether `version` >= `minimum` as integer tuples (missing parts count as 0).

    None when either side is missing or not a version: "unknown" is not "too old".
    """
    if version is None:
        return None
    have = parse_version(version)
    need = parse_version(minimum)
    if have is None or need is None:
        return None
    have_padded, need_padded = _padded(have, need)
    return have_padded >= need_padded


@dataclass(frozen=True)
class ExtensionStatus:
    """The newest `status/<seq>.status` of a handler (fields None when unreadable)."""

    sequence: int
    status: Optional[str]
    code: Optional[str]
    operation: Optional[str]
    message: Optional[str]
    mtime: float


@dataclass(frozen=True)
class ExtensionHandler:
    """One `<Publisher>.<Type>-<version>` directory under Lib.Dir."""

    name: str
    version: str
    version_tuple: tuple[int, ...]
    directory: Path
    handler_state: Optional[str]
    handler_status: Optional[str]
    status: Optional[ExtensionStatus]
    heartbeat_age_seconds: Optional[float]
    active: bool
    problems: tuple[str, ...]


@dataclass(frozen=True)
class AgentVersionDir:
    """A `WALinuxAgent-<ver>/` directory left by auto-update."""

    version: str
    version_tuple: tuple[int, ...]
    blacklisted: bool
    reason: Optional[str]


@dataclass(frozen=True)
class LibState:
    """Everything `scan_lib_dir` learnt; `problems` lists every damaged file, handlers' included."""

    lib_dir: Path
    exists: bool
    handlers: tuple[ExtensionHandler, ...]
    agent_versions: tuple[AgentVersionDir, ...]
    disable_agent: bool
    provisioned: bool
    wireserver_endpoint: Optional[str]
    waagent_status_path: Optional[Path]
    waagent_status_mtime: Optional[float]
    problems: tuple[str, ...]

    def handler(self, name: str) -> Optional[ExtensionHandler]:
        """The active handler directory for `name` (e.g. sysroot.VMSNAPSHOT_NAME), if any."""
        for candidate in self.handlers:
            if candidate.name == name and candidate.active:
                return candidate
        return None


class _Unreadable(Exception):
    """A file that exists but cannot be used; the message is a ready-made problem line."""


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, at most `limit`; raises FileNotFoundError or _Unreadable."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _Unreadable(f"{path}: cannot stat ({error.strerror or error})") from error
    if stat.S_ISDIR(info.st_mode):
        raise _Unreadable(f"{path}: is a directory, expected a file")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device would block or stream forever: never open one.
        raise _Unreadable(f"{path}: is not a regular file")
    try:
        data, truncated = read_bounded(path, limit)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read ({error.strerror or error})") from error
    if truncated:
        raise _Unreadable(f"{path}: larger than {limit} bytes, not read")
    return data


def _read_text(path: Path, limit: int) -> str:
    data = _read_regular(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Unreadable(f"{path}: not UTF-8 text (byte {error.start})") from error


def _read_json(path: Path) -> Any:
    text = _read_text(path, MAX_JSON_BYTES)
    if not text.strip():
        raise _Unreadable(f"{path}: empty file, expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _Unreadable(
            f"{path}: malformed JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from error


def _optional_str(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _status_message(formatted: Any) -> Optional[str]:
    if isinstance(formatted, dict):
        return _optional_str(formatted.get("message"))
    return _optional_str(formatted)


def parse_status_document(
    document: Any, path: Path, sequence: int, mtime: float, problems: list[str]
) -> ExtensionStatus:
    """Read element 0 of a `<seq>.status` array (a bare object is accepted too)."""
    entry = document[0] if isinstance(document, list) and document else document
    inner = entry.get("status") if isinstance(entry, dict) else None
    if not isinstance(inner, dict):
        problems.append(f'{path}: no status object (expected [{{"status": {{...}}}}])')
        return ExtensionStatus(sequence, None, None, None, None, mtime)
    value = _optional_str(inner.get("status"))
    if value is not None and value.lower() not in EXTENSION_STATUS_VALUES:
        problems.append(f"{path}: unexpected status value {value!r}")
    return ExtensionStatus(
        sequence=sequence,
        status=value.lower() if value is not None else None,
        code=_optional_str(inner.get("code")),
        operation=_optional_str(inner.get("operation")),
        message=_status_message(inner.get("formattedMessage")),
        mtime=mtime,
    )


def _newest_status(directory: Path, problems: list[str]) -> Optional[ExtensionStatus]:
    status_dir = directory / "status"
    try:
        names = os.listdir(status_dir)
    except FileNotFoundError:
        return None
    except OSError as error:
        problems.append(f"{status_dir}: cannot list ({error.strerror or error})")
        return None
    sequences = [int(m.group(1)) for m in map(STATUS_FILE_PATTERN.match, names) if m]
    if not sequences:
        return None
    sequence = max(sequences)
    path = status_dir / f"{sequence}.status"
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None  # removed between listing and reading
    try:
        document = _read_json(path)
    except FileNotFoundError:
        return None
    except _Unreadable as error:
        problems.append(str(error))
        return ExtensionStatus(sequence, None, None, None, None, mtime)
    return parse_status_document(document, path, sequence, mtime, problems)


def _read_small(path: Path, problems: list[str]) -> Optional[str]:
    """A small one-value file, stripped; None when absent or unreadable (reported)."""
    try:
        return _read_text(path, MAX_SMALL_FILE_BYTES).strip()
    except FileNotFoundError:
        return None
    except _Unreadable as error:
        problems.append(str(error))
        return None


def _handler_state(directory: Path, problems: list[str]) -> Optional[str]:
    return _read_small(directory / HANDLER_STATE_FILE, problems) or None


def _handler_status(directory: Path, problems: list[str]) -> Optional[str]:
    path = directory / HANDLER_STATUS_FILE
    try:
        document = _read_json(path)
    except FileNotFoundError:
        return None
    except _Unreadable as error:
        problems.append(str(error))
        return None
    if not isinstance(document, dict) or "status" not in document:
        problems.append(f'{path}: expected a JSON object with a "status" key')
        return None
    return _optional_str(document["status"])


def _heartbeat_age(directory: Path, now: float) -> Optional[float]:
    try:
        mtime = os.stat(directory / HEARTBEAT_FILE).st_mtime
    except OSError:
        return None
    return max(0.0, now - mtime)


def _scan_handler(directory: Path, name: str, version: str, now: float) -> ExtensionHandler:
    problems: list[str] = []
    version_tuple = parse_version(version) or ()
    return ExtensionHandler(
        name=name,
        version=version,
        version_tuple=version_tuple,
        directory=directory,
        handler_state=_handler_state(directory, problems),
        handler_status=_handler_status(directory, problems),
        status=_newest_status(directory, problems),
        heartbeat_age_seconds=_heartbeat_age(directory, now),
        active=False,
        problems=tuple(problems),
    )


def _mark_active(handlers: list[ExtensionHandler]) -> tuple[ExtensionHandler, ...]:
    """Per name, the active dir is the newest `Enabled` one, else the newest version."""
    chosen: dict[str, ExtensionHandler] = {}
    for handler in handlers:
        best = chosen.get(handler.name)
        key = (handler.handler_state == "Enabled", handler.version_tuple)
        if best is None or key > (best.handler_state == "Enabled", best.version_tuple):
            chosen[handler.name] = handler
    ordered = sorted(handlers, key=lambda h: (h.name, h.version_tuple))
    return tuple(replace(h, active=chosen[h.name] is h) for h in ordered)


def _agent_version(directory: Path, version: str, problems: list[str]) -> AgentVersionDir:
    path = directory / AGENT_ERROR_FILE
    blacklisted = False
    reason: Optional[str] = None
    try:
        document = _read_json(path)
    except FileNotFoundError:
        document = None
    except _Unreadable as error:
        problems.append(str(error))
        document = None
    if document is not None:
        if isinstance(document, dict):
            blacklisted = document.get("was_fatal") is True
            reason = _optional_str(document.get("reason")) or None
        else:
            problems.append(f"{path}: expected a JSON object")
    return AgentVersionDir(version, parse_version(version) or (), blacklisted, reason)


def _wireserver_endpoint(lib_dir: Path, problems: list[str]) -> Optional[str]:
    path = lib_dir / "WireServerEndpoint"
    text = _read_small(path, problems)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        problems.append(f"{path}: not an IP address ({text[:40]!r})")
        return None


def _newest_waagent_status(
    lib_dir: Path, names: list[str]
) -> tuple[Optional[Path], Optional[float]]:
    """history/<timestamp>__<incarnation>/waagent_status.json (>=2.8) or legacy root files."""
    candidates = [lib_dir / name for name in names if LEGACY_WAAGENT_STATUS_PATTERN.match(name)]
    history = lib_dir / "history"
    with contextlib.suppress(OSError):
        candidates.extend(history / entry / WAAGENT_STATUS_FILE for entry in os.listdir(history))
    newest: tuple[Optional[Path], Optional[float]] = (None, None)
    for candidate in candidates:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and (newest[1] is None or info.st_mtime > newest[1]):
            newest = (candidate, info.st_mtime)
    return newest


def _empty_state(lib_dir: Path, exists: bool, problems: list[str]) -> LibState:
    return LibState(lib_dir, exists, (), (), False, False, None, None, None, tuple(problems))


def scan_lib_dir(lib_dir: Path, *, now: float) -> LibState:
    """Inventory `lib_dir` (the agent's Lib.Dir); `now` (epoch seconds) dates heartbeats."""
    lib_dir = Path(lib_dir)
    problems: list[str] = []
    try:
        names = sorted(os.listdir(lib_dir))
    except FileNotFoundError:
        return _empty_state(lib_dir, False, problems)
    except NotADirectoryError:
        problems.append(f"{lib_dir}: is not a directory (check Lib.Dir in waagent.conf)")
        return _empty_state(lib_dir, False, problems)
    except OSError as error:
        problems.append(f"{lib_dir}: cannot list ({error.strerror or error})")
        return _empty_state(lib_dir, True, problems)

    handlers: list[ExtensionHandler] = []
    agent_versions: list[AgentVersionDir] = []
    for name in names:
        directory = lib_dir / name
        agent_match = AGENT_DIR_PATTERN.match(name)
        handler_match = None if agent_match else HANDLER_DIR_PATTERN.match(name)
        if not (agent_match or handler_match) or not directory.is_dir():
            continue
        if agent_match:
            agent_versions.append(_agent_version(directory, agent_match.group(1), problems))
        elif handler_match:
            handler = _scan_handler(directory, handler_match.group(1), handler_match.group(2), now)
            problems.extend(handler.problems)
            handlers.append(handler)

    status_path, status_mtime = _newest_waagent_status(lib_dir, names)
    for problem in problems:
        logger.debug("Lib.Dir problem: %s", problem)
    return LibState(
        lib_dir=lib_dir,
        exists=True,
        handlers=_mark_active(handlers),
        agent_versions=tuple(sorted(agent_versions, key=lambda a: a.version_tuple)),
        disable_agent=(lib_dir / "disable_agent").exists(),
        provisioned=(lib_dir / "provisioned").exists(),
        wireserver_endpoint=_wireserver_endpoint(lib_dir, problems),
        waagent_status_path=status_path,
        waagent_status_mtime=status_mtime,
        problems=tuple(problems),
    )
