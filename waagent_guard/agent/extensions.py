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

from waagent_guard.fsutil import FileTooLarge, NotRegularFile, read_file

logger = logging.getLogger(__name__)

# AGENT.md §4: handler directories are `<Publisher>.<Type>-<version>`.
HANDLER_DIR_PATTERN = re.compile(r"^([^-]+)-(\d+(?:\.\d+)*)$")
AGENT_DIR_PATTERN = re.compile(r"^WALinuxAgent-(\d+(?:\.\d+)*)$")
STATUS_FILE_PATTERN = re.compile(r"^(\d+)\.status$")
LEGACY_WAAGENT_STATUS_PATTERN = re.compile(r"^waagent_status.*\.json$")
VERSION_PATTERN = re.compile(r"^\d+(?:\.\d+)*$")
# The agent's FlexibleVersion (azurelinuxagent/common/utils/flexible_version.py):
# dotted numbers, then optionally a pre-release tag alpha < beta < rc with a number,
# after ".", "-" or nothing ("1.0.0rc1" == "1.0.0-rc1" == "1.0.0.rc1").
FLEXIBLE_VERSION_PATTERN = re.compile(r"^(\d+(?:\.\d+)*)(?:[.-]?(alpha|beta|rc)(\d*))?$")
PRERELEASE_TAGS = ("alpha", "beta", "rc")
SETTINGS_FILE_PATTERN = re.compile(r"((?P<ext_name>\w+)\.)*(?P<seq_no>\d+)\.settings")
# The agent ignores handler directories in these states (get_installed_version).
NOT_INSTALLED_STATES = ("NotInstalled", "FailedUpgrade")

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


def version_key(numbers: tuple[int, ...]) -> tuple[int, ...]:
    """A sort key that pads like the agent: (1, 0, 91, 0) and (1, 0, 91) are the same key."""
    end = len(numbers)
    while end and numbers[end - 1] == 0:
        end -= 1
    return numbers[:end]


# (release numbers, pre-release (tag index, number or None) or None)
_Flexible = tuple[tuple[int, ...], Optional[tuple[int, Optional[int]]]]


def parse_flexible_version(text: str) -> Optional[_Flexible]:
    """A version as the agent's FlexibleVersion reads it; None when it would raise."""
    match = FLEXIBLE_VERSION_PATTERN.match(text.strip())
    if match is None:
        return None
    numbers = tuple(int(part) for part in match.group(1).split("."))
    tag = match.group(2)
    if tag is None:
        return numbers, None
    number = match.group(3)
    return numbers, (PRERELEASE_TAGS.index(tag), int(number) if number else None)


def compare_versions(left: str, right: str) -> Optional[int]:
    """-1, 0 or 1 as FlexibleVersion orders `left` and `right`; None when it cannot.

    Missing release parts count as 0 ('1' == '1.0', '1.0.91' == '1.0.91.0'); a
    pre-release sorts before its release and alpha < beta < rc. None where the agent's
    own comparison raises: a side that is not a version, or two pre-releases with the
    same tag where one has no number ('1.0rc' vs '1.0rc1').
    """
    first, second = parse_flexible_version(left), parse_flexible_version(right)
    if first is None or second is None:
        return None
    numbers = (version_key(first[0]), version_key(second[0]))
    if numbers[0] != numbers[1]:
        return -1 if numbers[0] < numbers[1] else 1
    pre_first, pre_second = first[1], second[1]
    if pre_first == pre_second:
        return 0
    if pre_first is None or pre_second is None:
        return 1 if pre_first is None else -1
    if pre_first[0] != pre_second[0]:
        return -1 if pre_first[0] < pre_second[0] else 1
    if pre_first[1] is None or pre_second[1] is None:
        return None
    return -1 if pre_first[1] < pre_second[1] else 1


def version_at_least(version: Optional[str], minimum: str) -> Optional[bool]:
    """Whether `version` >= `minimum` as the agent compares them (`compare_versions`).

    None when either side is missing or not a version: "unknown" is not "too old".
    """
    if version is None:
        return None
    order = compare_versions(version, minimum)
    return None if order is None else order >= 0


@dataclass(frozen=True)
class ExtensionStatus:
    """An extension's current status as the agent reports it (see `_current_status`).

    `status` is what the agent would send: "error" for a status file it cannot use,
    "transitioning" while the current sequence has no status file yet, None where the
    agent reports no value (a `null` or `[]` status file). `mtime` is the status file's
    (the settings file's while there is no status file).
    """

    sequence: int
    status: Optional[str]
    code: Optional[str]
    operation: Optional[str]
    message: Optional[str]
    mtime: float
    extension: Optional[str] = None  # the extension's name for a multi-config handler
    file_present: bool = True  # False: no status file for this sequence yet


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
    installed: bool = True  # HandlerState exists and is neither NotInstalled nor FailedUpgrade
    extension_statuses: tuple[ExtensionStatus, ...] = ()  # every extension of the handler


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

    def newest_directory(self, name: str) -> Optional[ExtensionHandler]:
        """The active directory, else (none installed) the highest-version one, if any."""
        active = self.handler(name)
        if active is not None:
            return active
        candidates = [candidate for candidate in self.handlers if candidate.name == name]
        return candidates[-1] if candidates else None


class _Unreadable(Exception):
    """A file that exists but cannot be used; the message is a ready-made problem line."""


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, at most `limit`; raises FileNotFoundError or _Unreadable."""
    try:
        return read_file(path, limit)[0]
    except FileNotFoundError:
        raise
    except NotRegularFile as error:
        # A FIFO or device would block or stream forever: never opened.
        expected = "expected a file" if error.kind == "a directory" else "not a regular file"
        raise _Unreadable(f"{path}: is {error.kind}, {expected}") from error
    except FileTooLarge as error:
        raise _Unreadable(f"{path}: larger than {limit} bytes, not read") from error
    except OSError as error:
        raise _Unreadable(f"{path}: cannot read ({error.strerror or error})") from error


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
    except RecursionError as error:
        raise _Unreadable(f"{path}: malformed JSON (nested too deeply)") from error
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise _Unreadable(f"{path}: malformed JSON ({error})") from error


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
    """Element 0 of a `<seq>.status` array, judged as the agent's `parse_ext_status` does.

    `null` and `[]` leave the status unset; anything but an array, a first element
    without `status`, or a `status.status` that is not exactly one of transitioning,
    warning, error, success (case matters: "Success" is an error) is "error".
    """
    if document is None or document == []:
        return ExtensionStatus(sequence, None, None, None, None, mtime)
    entry = document[0] if isinstance(document, list) else None
    inner = entry.get("status") if isinstance(entry, dict) else None
    if not isinstance(document, list):
        problems.append(f"{path}: not a JSON array; the agent reports the status as error")
        return ExtensionStatus(sequence, "error", None, None, None, mtime)
    if not isinstance(inner, dict) or "status" not in inner:
        problems.append(
            f'{path}: no status object (expected [{{"status": {{"status": ...}}}}]); '
            "the agent reports the status as error"
        )
        return ExtensionStatus(sequence, "error", None, None, None, mtime)
    value = inner["status"]
    if not (isinstance(value, str) and value in EXTENSION_STATUS_VALUES):
        problems.append(
            f"{path}: status {value!r} is not one of {', '.join(EXTENSION_STATUS_VALUES)} "
            "(lower case); the agent reports it as error"
        )
        value = "error"
    code = inner.get("code", 0)
    return ExtensionStatus(
        sequence=sequence,
        status=value,
        code=_optional_str(code),
        operation=_optional_str(inner.get("operation")),
        message=_status_message(inner.get("formattedMessage")),
        mtime=mtime,
    )


def _settings_sequences(config_dir: Path) -> dict[Optional[str], tuple[int, float]]:
    """Per extension name (None: single config), the last-modified settings' sequence.

    As the agent's `_get_last_modified_seq_no_from_config_files`: the sequence number of
    the settings file modified last, not the largest one.
    """
    chosen: dict[Optional[str], tuple[int, float]] = {}
    try:
        names = os.listdir(config_dir)
    except OSError:
        return chosen
    for name in names:
        match = SETTINGS_FILE_PATTERN.search(name)
        if match is None:
            continue
        try:
            info = os.stat(config_dir / name)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        extension = match.group("ext_name")
        best = chosen.get(extension)
        candidate = (int(match.group("seq_no")), info.st_mtime)
        # Equal mtimes (a copied tree): the agent's pick depends on listing order; the
        # guard takes the larger sequence number so the answer is stable.
        if best is None or (candidate[1], candidate[0]) > (best[1], best[0]):
            chosen[extension] = candidate
    return chosen


def _status_file(
    path: Path, sequence: int, settings_mtime: float, problems: list[str]
) -> ExtensionStatus:
    """The agent's `collect_ext_status` for one (sequence, status file)."""
    try:
        mtime = os.stat(path).st_mtime
        data = _read_regular(path, MAX_JSON_BYTES)
    except FileNotFoundError:
        # No status file for the current settings yet: the agent reports transitioning.
        return ExtensionStatus(
            sequence, "transitioning", "0", None, None, settings_mtime, file_present=False
        )
    except OSError as error:
        problems.append(f"{path}: cannot stat ({error.strerror or error})")
        return ExtensionStatus(sequence, "error", None, None, None, settings_mtime)
    except _Unreadable as error:
        problems.append(str(error))
        if "larger than" in str(error):
            # The agent would read it; the guard reads bounded: status unknown.
            return ExtensionStatus(sequence, None, None, None, None, settings_mtime)
        return ExtensionStatus(sequence, "error", None, None, None, settings_mtime)
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        problems.append(f"{path}: not UTF-8 text (byte {error.start}); the agent reports error")
        return ExtensionStatus(sequence, "error", None, None, None, mtime)
    except json.JSONDecodeError as error:
        what = (
            "empty file"
            if not data.strip()
            else f"malformed JSON ({error.msg} at line {error.lineno} column {error.colno})"
        )
        problems.append(f"{path}: {what}; the agent reports the status as error")
        return ExtensionStatus(sequence, "error", None, None, None, mtime)
    except (RecursionError, ValueError) as error:  # nested too deeply, a 5,000-digit number
        what = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:80]
        problems.append(f"{path}: malformed JSON ({what}); the agent reports the status as error")
        return ExtensionStatus(sequence, "error", None, None, None, mtime)
    return parse_status_document(document, path, sequence, mtime, problems)


def _legacy_newest_status(status_dir: Path, problems: list[str]) -> Optional[ExtensionStatus]:
    """No settings at all (a tree copied without config/): the highest-numbered status.

    The agent reports nothing without settings; the guard still shows the last result a
    support bundle or a copied tree holds (a deliberate difference, tests/oracle).
    """
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
    if not path.exists():
        return None
    return _status_file(path, sequence, 0.0, problems)


def _current_statuses(directory: Path, problems: list[str]) -> tuple[ExtensionStatus, ...]:
    """Each extension's status: sequence from its last-modified settings, then its file.

    Single config: `config/<seq>.settings` -> `status/<seq>.status`. Multi-config:
    `config/<ext>.<seq>.settings` -> `status/<ext>.<seq>.status`, one per extension.
    """
    status_dir = directory / "status"
    sequences = _settings_sequences(directory / "config")
    if not sequences:
        legacy = _legacy_newest_status(status_dir, problems)
        return () if legacy is None else (legacy,)
    found: list[ExtensionStatus] = []
    for extension in sorted(sequences, key=lambda name: name or ""):
        sequence, settings_mtime = sequences[extension]
        name = f"{sequence}.status" if extension is None else f"{extension}.{sequence}.status"
        status = _status_file(status_dir / name, sequence, settings_mtime, problems)
        found.append(replace(status, extension=extension))
    return tuple(found)


def _summary_status(statuses: tuple[ExtensionStatus, ...]) -> Optional[ExtensionStatus]:
    """One status for the handler: the single-config one, else the worst extension's."""
    if not statuses:
        return None
    single = [status for status in statuses if status.extension is None]
    if single:
        return single[0]
    rank = {"error": 0, "warning": 1, "transitioning": 2, "success": 3}
    return min(statuses, key=lambda status: (rank.get(status.status or "", 4), -status.mtime))


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


def _installed(directory: Path) -> bool:
    """The agent's test in `get_installed_version`: HandlerState exists and its exact
    content (not stripped) is neither NotInstalled nor FailedUpgrade."""
    path = directory / HANDLER_STATE_FILE
    try:
        path.stat()
    except PermissionError:
        return True  # could not look (not root): unreadable is not missing, keep the handler
    except OSError:
        return False
    try:
        text = _read_text(path, MAX_SMALL_FILE_BYTES)
    except (OSError, _Unreadable):
        return False  # the agent could not read it either (it would fail on it)
    return text not in NOT_INSTALLED_STATES


def _scan_handler(directory: Path, name: str, version: str, now: float) -> ExtensionHandler:
    problems: list[str] = []
    version_tuple = parse_version(version) or ()
    handler_state = _handler_state(directory, problems)
    handler_status = _handler_status(directory, problems)
    statuses = _current_statuses(directory, problems)
    return ExtensionHandler(
        name=name,
        version=version,
        version_tuple=version_tuple,
        directory=directory,
        handler_state=handler_state,
        handler_status=handler_status,
        status=_summary_status(statuses),
        heartbeat_age_seconds=_heartbeat_age(directory, now),
        active=False,
        problems=tuple(problems),
        installed=_installed(directory),
        extension_statuses=statuses,
    )


def _mark_active(handlers: list[ExtensionHandler]) -> tuple[ExtensionHandler, ...]:
    """Per name, the agent's installed version: the highest version whose HandlerState is
    present and not NotInstalled/FailedUpgrade (`ExtHandlerInstance.get_installed_version`).
    No such directory: no active one (the agent considers the handler not installed)."""
    chosen: dict[str, ExtensionHandler] = {}
    for handler in handlers:
        if not handler.installed:
            continue
        best = chosen.get(handler.name)
        if best is None or version_key(handler.version_tuple) > version_key(best.version_tuple):
            chosen[handler.name] = handler
    ordered = sorted(handlers, key=lambda h: (h.name, version_key(h.version_tuple)))
    return tuple(replace(h, active=chosen.get(h.name) is h) for h in ordered)


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
            blacklisted = _blacklisted(document)
            reason = _optional_str(document.get("reason")) or None
        else:
            problems.append(f"{path}: expected a JSON object")
    return AgentVersionDir(version, parse_version(version) or (), blacklisted, reason)


# The agent's ErrorState/GuestAgentError: a version is blacklisted once it failed this many
# times, or once a failure was fatal (azurelinuxagent/ga/guestagent.py, ga/update.py).
MAX_AGENT_FAILURES = 3


def _blacklisted(document: dict[str, Any]) -> bool:
    """`GuestAgentError.load` + `is_blacklisted`: a truthy was_fatal, or failure_count >= 3.

    A value the agent's `max(0, value)` cannot take (a string, null) makes it discard the
    whole file: not blacklisted.
    """
    try:
        count = max(0, document.get("failure_count", 0))
        max(0.0, document.get("last_failure", 0.0))
    except TypeError:
        return False
    return bool(document.get("was_fatal", False)) or count >= MAX_AGENT_FAILURES


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
