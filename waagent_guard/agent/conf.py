"""The agent's /etc/waagent.conf: parsed exactly as the agent does, viewed typed, edited minimally.

The parser mirrors `ConfigurationProvider.load` in the agent's
`azurelinuxagent/common/conf.py`: the file is decoded as strict UTF-8 and split on
`\\n` only (a `\\r` stays part of the line); a line is used when it does not start
with `#` (no stripping first) and contains `=`; the key is the text left of the
first `=`, stripped; the value is the rest cut at the first `#`, stripped of spaces
and double quotes, then of whitespace; the value `None` means "use the default";
the last duplicate wins. Switches accept `y`/`n` in any case, anything else means
the code default.

A `ConfDocument` keeps every physical line's bytes, so `render()` gives back the
input byte for byte and `with_value` changes one line only. `set_conf_value`
writes the result atomically (same directory, same mode and owner, fsync, rename).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from waagent_guard.errors import ConfigError, InputError, PermissionDeniedError, WriteError
from waagent_guard.fsutil import (
    TargetChanged,
    atomic_write,
    read_bounded,
    remove_stale_temps,
)
from waagent_guard.sysroot import (
    DEFAULT_EXTENSION_LOG_DIR,
    DEFAULT_LIB_DIR,
    DEFAULT_PID_FILE,
    LinkError,
    Sysroot,
)

logger = logging.getLogger(__name__)

# A waagent.conf is a few KiB; refuse to slurp (or rewrite) anything absurd.
MAX_CONF_BYTES = 64 * 1024 * 1024

# The agent's switches and their code defaults (azurelinuxagent/common/conf.py,
# __SWITCH_OPTIONS__ plus switches read directly), as of upstream 2.15; the oracle tests
# (tests/oracle/test_conf_oracle.py) compare them with Debian's agent and a vendored
# extract of upstream's table. Used to flag values the agent silently ignores.
SWITCH_DEFAULTS: dict[str, bool] = {
    "AutoUpdate.Enabled": True,
    "CGroups.Enabled": True,
    "Debug.EnableFastTrack": True,
    "DetectScvmmEnv": False,
    "EnableOverProvisioning": True,
    "Extensions.Enabled": True,
    "Logs.Collect": True,
    "Logs.Console": True,
    "Logs.Verbose": False,
    "OS.AllowHTTP": False,
    "OS.EnableFIPS": False,
    "OS.EnableFirewall": False,
    "OS.EnableRDMA": False,
    "Provisioning.AllowResetSysUser": False,
    "Provisioning.DecodeCustomData": False,
    "Provisioning.DeleteRootPassword": False,
    "Provisioning.ExecuteCustomData": False,
    "Provisioning.MonitorHostName": False,
    "Provisioning.RegenerateSshHostKeyPair": False,
    "ResourceDisk.EnableSwap": False,
    "ResourceDisk.Format": False,
}
# AutoUpdate.UpdateToLatestVersion defaults to whatever AutoUpdate.Enabled says; agents
# before 2.10 do not know the key at all (it is then ignored).
UPDATE_TO_LATEST_KEY = "AutoUpdate.UpdateToLatestVersion"
UPDATE_TO_LATEST_SINCE = (2, 10)
# Path settings: the agent uses the value as given, so an empty or relative value is
# resolved against its working directory, which is / for a systemd service (the unit
# sets no WorkingDirectory=) and for the SysV scripts (init starts them from /).
PATH_KEYS = ("Lib.Dir", "Pid.File", "Extension.LogDir")
AGENT_WORKING_DIRECTORY = "/"
INTEGER_DEFAULTS: dict[str, Optional[int]] = {
    "Extensions.GoalStatePeriod": 6,
    "HttpProxy.Port": None,
    "Logs.CollectPeriod": 3600,
    "OS.EnableFirewallPeriod": 300,  # 30 before 2.9 (Debian 12's 2.7.3.0)
}
STRING_DEFAULTS: dict[str, Optional[str]] = {
    "Extension.LogDir": DEFAULT_EXTENSION_LOG_DIR,
    "HttpProxy.Host": None,
    "Lib.Dir": DEFAULT_LIB_DIR,
    "Pid.File": DEFAULT_PID_FILE,
    "Provisioning.Agent": "auto",
}


@dataclass(frozen=True)
class ConfLine:
    """One physical line; `raw` includes its end of line (absent on an unterminated last line)."""

    number: int  # 1-based
    raw: bytes
    key: Optional[str]  # None unless the agent would use the line
    value: Optional[str]  # as the agent parses it; None for "None" or an unused line

    @property
    def eol(self) -> bytes:
        if self.raw.endswith(b"\r\n"):
            return b"\r\n"
        return b"\n" if self.raw.endswith(b"\n") else b""


@dataclass(frozen=True)
class ConfDocument:
    """A parsed waagent.conf that renders back to exactly the bytes it came from."""

    lines: tuple[ConfLine, ...]
    problems: tuple[str, ...] = ()

    def get(self, key: str) -> Optional[str]:
        """The effective value of `key` (last active line wins); None = the agent's default."""
        line = self._last_line(key)
        return line.value if line is not None else None

    def as_dict(self) -> dict[str, str]:
        """Every key with an effective value; keys set to `None` (use default) are left out."""
        values: dict[str, Optional[str]] = {}
        for line in self.lines:
            if line.key is not None:
                values[line.key] = line.value
        return {key: value for key, value in values.items() if value is not None}

    def render(self) -> bytes:
        return b"".join(line.raw for line in self.lines)

    def with_value(self, key: str, value: Optional[str]) -> ConfDocument:
        """A copy with `key` set to `value` (None removes the key's last active line).

        Only the key's last active line changes (rewritten as `Key=value`, its end of
        line kept); a key with no active line is appended. Every other byte is kept.
        """
        _check_key(key)
        last = self._last_line(key)
        if value is None:
            if last is None:
                return self
            kept = b"".join(line.raw for line in self.lines if line is not last)
            if not kept:
                # The agent refuses an empty file ("Can't not parse empty configuration"):
                # leave a comment in place of the only line.
                kept = b"# " + key.encode("utf-8") + b" removed by waagent-guard" + last.eol
                kept = kept if last.eol else kept + b"\n"
            return parse_conf(kept)
        encoded = _check_value(key, value)
        if last is not None:
            eol = last.eol
            raws = [
                key.encode("utf-8") + b"=" + encoded + eol if line is last else line.raw
                for line in self.lines
            ]
            return parse_conf(b"".join(raws))
        return parse_conf(self._appended(key.encode("utf-8") + b"=" + encoded))

    def last_line(self, key: str) -> Optional[ConfLine]:
        """The line that gives `key` its value (the last active one), or None."""
        return self._last_line(key)

    def _last_line(self, key: str) -> Optional[ConfLine]:
        for line in reversed(self.lines):
            if line.key == key:
                return line
        return None

    def _eol(self) -> bytes:
        crlf = sum(1 for line in self.lines if line.eol == b"\r\n")
        lf = sum(1 for line in self.lines if line.eol == b"\n")
        return b"\r\n" if crlf > lf else b"\n"

    def append_separator(self) -> bytes:
        """What appending a line first adds to end an unterminated last line (b"" if none)."""
        data = self.render()
        if not data or data.endswith(b"\n"):
            return b""
        # A CRLF after an unterminated last line would hand the agent an extra
        # "\r" inside that line, which can change its value (`K="v"` -> `v"`).
        last = self.lines[-1]
        return self._eol() if _parse_value(last.raw + b"\r") == last.value else b"\n"

    def _appended(self, content: bytes) -> bytes:
        return self.render() + self.append_separator() + content + self._eol()

    def with_line(self, key: str, raw: bytes) -> ConfDocument:
        """A copy with the line giving `key` its value replaced by `raw` (bytes as they were)."""
        last = self._last_line(key)
        if last is None:
            return self
        return parse_conf(b"".join(raw if line is last else line.raw for line in self.lines))

    def without_appended(self, key: str, separator: bytes) -> Optional[ConfDocument]:
        """Undo `with_value` appending `key`: drop its line and the `separator` it added.

        None when the line giving `key` its value is not the file's last line (the
        caller then removes it with `with_value(key, None)`).
        """
        last = self._last_line(key)
        if last is None or last is not self.lines[-1]:
            return None
        data = b"".join(line.raw for line in self.lines[:-1])
        if separator and data.endswith(separator):
            data = data[: -len(separator)]
        return parse_conf(data)


def parse_conf(data: bytes) -> ConfDocument:
    """Parse waagent.conf bytes the way the agent does; never raises on content."""
    pieces = data.split(b"\n")
    raws = [piece + b"\n" for piece in pieces[:-1]]
    if pieces[-1]:
        raws.append(pieces[-1])
    problems: list[str] = []
    if not data:
        problems.append("the file is empty; the agent refuses to start with an empty configuration")
    lines: list[ConfLine] = []
    for number, raw in enumerate(raws, start=1):
        content = raw[:-1] if raw.endswith(b"\n") else raw
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(
                f"line {number}: not UTF-8 (byte 0x{content[error.start]:02x} at column "
                f"{error.start + 1}); the agent decodes the whole file as strict UTF-8 and "
                "fails to load it: re-save the file as UTF-8"
            )
            text = content.decode("utf-8", errors="replace")
        key, value = _parse_text(text)
        lines.append(ConfLine(number=number, raw=raw, key=key, value=value))
    document = ConfDocument(lines=tuple(lines))
    problems.extend(_value_problems(document))
    return ConfDocument(lines=document.lines, problems=tuple(problems))


def _parse_text(text: str) -> tuple[Optional[str], Optional[str]]:
    # Same expression as ConfigurationProvider.load; keep it literally equivalent.
    if text.startswith("#") or "=" not in text:
        return None, None
    left, right = text.split("=", 1)
    value = right.split("#")[0].strip('" ').strip()
    return left.strip(), (None if value == "None" else value)


def _parse_value(raw: bytes) -> Optional[str]:
    content = raw[:-1] if raw.endswith(b"\n") else raw
    return _parse_text(content.decode("utf-8", errors="replace"))[1]


def _value_problems(document: ConfDocument) -> list[str]:
    """Switch and integer values the agent would silently ignore, in line order."""
    typed = {*SWITCH_DEFAULTS, UPDATE_TO_LATEST_KEY, *INTEGER_DEFAULTS}
    effective = {line.key: line for line in document.lines if line.key in typed}
    problems: list[tuple[int, str]] = []
    for key, line in effective.items():
        if line.value is None:
            continue
        shown = line.value if len(line.value) <= 40 else line.value[:40] + "..."
        if key in INTEGER_DEFAULTS:
            if _as_int(line.value) is None:
                problems.append(
                    (
                        line.number,
                        f"line {line.number}: {key}={shown} is not an integer; "
                        f"the agent ignores it and uses its default ({INTEGER_DEFAULTS[key]})",
                    )
                )
        elif _as_switch(line.value) is None:
            default = (
                "AutoUpdate.Enabled"
                if key == UPDATE_TO_LATEST_KEY
                else ("y" if SWITCH_DEFAULTS[key] else "n")
            )
            problems.append(
                (
                    line.number,
                    f"line {line.number}: {key}={shown} is not y or n; "
                    f"the agent ignores it and uses its default ({default})",
                )
            )
    paths = effective_path_lines(document)
    for key in PATH_KEYS:
        path_line = paths.get(key)
        if path_line is None or path_line.value is None or path_line.value.startswith("/"):
            continue
        line, value = path_line, path_line.value
        resolved = agent_path(value)
        if not value:
            consequence = (
                "the agent cannot write its pidfile (an empty path)"
                if key == "Pid.File"
                else f"the agent then uses its working directory ({resolved})"
            )
            problems.append(
                (
                    line.number,
                    f"line {line.number}: {key} is empty; {consequence}: set an absolute path "
                    f"such as {STRING_DEFAULTS[key]} or remove the line",
                )
            )
        else:
            shown = value if len(value) <= 60 else value[:60] + "..."
            problems.append(
                (
                    line.number,
                    f"line {line.number}: {key}={shown} is relative; the agent resolves it "
                    f"against its working directory ({AGENT_WORKING_DIRECTORY}), i.e. "
                    f"{resolved}: give an absolute path",
                )
            )
    return [message for _, message in sorted(problems)]


def effective_path_lines(document: ConfDocument) -> dict[str, ConfLine]:
    return {line.key: line for line in document.lines if line.key in PATH_KEYS}


def agent_path(value: str) -> str:
    """A path setting as the agent ends up using it: relative to its working directory.

    An empty value names the working directory itself (`os.path.join("", name)` is
    `name`); `..` cannot climb above the root (so a hostile value stays inside --root).
    """
    return posixpath.normpath(posixpath.join(AGENT_WORKING_DIRECTORY, value))


def _check_key(key: str) -> None:
    if not key:
        raise ConfigError("waagent.conf: the key is empty; give a key such as Logs.Verbose")
    bad = [char for char in key if char in "=#\0" or char.isspace()]
    if bad:
        raise ConfigError(
            f"waagent.conf: key {key!r} contains {bad[0]!r}; keys may not contain '=', '#', "
            "NUL or whitespace"
        )
    _encode(key, key)


def _check_value(key: str, value: str) -> bytes:
    for char, name in (
        ("#", "'#' (the agent cuts the value there)"),
        ("\n", "a newline"),
        ("\r", "a carriage return"),
        ("\0", "a NUL byte"),
    ):
        if char in value:
            raise ConfigError(f"waagent.conf: {key}: the value contains {name}; remove it")
    if value != value.strip() or value != value.strip('" '):
        raise ConfigError(
            f"waagent.conf: {key}: the value {value!r} starts or ends with whitespace or a double "
            "quote, which the agent strips; give the bare value"
        )
    return _encode(key, value)


def _encode(key: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ConfigError(f"waagent.conf: {key}: {text!r} cannot be written as UTF-8") from error


def _read_conf(path: Path) -> bytes:
    """The file's bytes, or a typed error naming the path and the fix."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONF_BYTES + 1)
    except FileNotFoundError as error:
        raise InputError(f"{path}: not found") from error
    except IsADirectoryError as error:
        raise InputError(f"{path}: is a directory, not the agent's config file") from error
    except PermissionError as error:
        raise PermissionDeniedError(
            f"{path}: cannot read it ({error.strerror}); run as root"
        ) from error
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror or error})") from error
    if len(data) > MAX_CONF_BYTES:
        raise InputError(
            f"{path}: larger than {MAX_CONF_BYTES >> 20} MiB; not a waagent.conf, not read"
        )
    return data


def load_conf(path: Path) -> ConfDocument:
    """Parse the file at `path`; a missing or unreadable file gives an empty document + problem."""
    try:
        data = _read_conf(Path(path))
    except (InputError, PermissionDeniedError) as error:
        return ConfDocument(lines=(), problems=(error.message,))
    return parse_conf(data)


MAX_EDIT_ATTEMPTS = 10
EDIT_RETRY_PAUSE_SECONDS = 0.002  # times the attempt number: 90 ms over all retries
FileIdentity = tuple[int, int, int, int]


def _identity(path: Path) -> Optional[FileIdentity]:
    try:
        status = os.lstat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _not_found(path: Path, error: InputError) -> InputError:
    if isinstance(error.__cause__, FileNotFoundError):
        return InputError(
            f"{path}: not found; the agent's config is missing, so nothing was changed "
            "(the guard never creates waagent.conf from nothing: reinstall or restore the "
            "agent's package config, or set agent.conf_path)"
        )
    return error


def conf_target(path: Path, sysroot: Optional[Sysroot] = None) -> Path:
    """The file an edit of `path` writes: its symlinks resolved inside `sysroot`'s root."""
    try:
        return (sysroot or Sysroot()).resolve(path)
    except LinkError as error:
        raise InputError(str(error)) from error


def clean_stale_edits(path: Path, sysroot: Optional[Sysroot] = None) -> list[Path]:
    """Remove temporary files a killed guard left beside the conf (daemon start; logged)."""
    try:
        target = conf_target(Path(path), sysroot)
    except InputError as error:
        logger.warning("not looking for stale temporary files: %s", error)
        return []
    return remove_stale_temps(target)


def edit_conf(
    path: Path,
    edit: Callable[[ConfDocument], ConfDocument],
    *,
    sysroot: Optional[Sysroot] = None,
    what: str = "an edit",
    pause: Callable[[float], None] = time.sleep,
) -> tuple[ConfDocument, ConfDocument]:
    """Apply `edit` to the file at `path` atomically; returns (document before, after).

    A symlink is resolved inside `sysroot`'s root (an absolute target starts again at
    the root, `..` stops at it) and the link is kept: the file it points to gets the
    new content. Temporary files a killed guard left there are removed first. Just
    before the rename the file is compared with the one read (device, inode, size,
    mtime, and its bytes: an inode number can be reused within one timestamp tick);
    if another writer changed or replaced it meanwhile, it is read again
    and `edit` applied to the new content (MAX_EDIT_ATTEMPTS times with a growing
    pause, then WriteError). The rename itself is an exchange (RENAME_EXCHANGE) where
    the file system has it: the file it displaced is checked the same way, and given
    back if it is not the one read (a replacement in the microseconds between the
    check and the rename); elsewhere that window stays.
    An unchanged file is not rewritten.
    """
    path = Path(path)
    for attempt in range(MAX_EDIT_ATTEMPTS):
        target = conf_target(path, sysroot)
        if attempt == 0:
            remove_stale_temps(target)
        before = _identity(target)
        try:
            data = _read_conf(target)
        except InputError as error:
            raise _not_found(path, error) from error
        document = parse_conf(data)
        edited = edit(document)
        new_data = edited.render()
        if new_data == data:
            return document, edited

        def same(
            path: Path, before: Optional[FileIdentity] = before, data: bytes = data
        ) -> bool:
            # The identity alone can repeat (an inode number reused within one timestamp
            # tick, same size): the content is compared too (a few KiB).
            try:
                return _identity(path) == before and _read_conf(path) == data
            except (InputError, PermissionDeniedError):
                return False

        def unchanged(target: Path = target, same: Callable[[Path], bool] = same) -> None:
            if not same(target):
                raise TargetChanged(str(target))

        try:
            atomic_write(target, new_data, before_replace=unchanged, displaced_ok=same)
        except TargetChanged:
            logger.info(
                "%s: changed by another writer during %s; reading it again and reapplying",
                path, what,
            )
            pause(EDIT_RETRY_PAUSE_SECONDS * (attempt + 1))  # let a busy writer finish
            continue
        return document, edited
    raise WriteError(
        f"{path}: another program changed the file {MAX_EDIT_ATTEMPTS} times while the guard "
        f"was making {what}; the guard changed nothing: try again when it is quiet"
    )


def set_conf_value(
    path: Path, key: str, value: Optional[str], *, sysroot: Optional[Sysroot] = None
) -> tuple[Optional[str], Optional[str]]:
    """Set (or with None, unset) `key` in the file at `path` by a minimal atomic edit.

    Returns (previous effective value, new effective value). See `edit_conf` for
    symlinks, concurrent writers and stale temporary files. The agent reads its
    config only at start: the caller must restart it for the change to apply.
    """
    document, edited = edit_conf(
        path, lambda document: document.with_value(key, value), sysroot=sysroot,
        what=f"an edit of {key}",
    )
    if edited.render() != document.render():
        logger.info("%s: %s %s", path, "unset" if value is None else "set", key)
    return document.get(key), edited.get(key)


# The agent's own argument parser (azurelinuxagent/agent.py, parse_args): re.match of this
# on each argument, the last match wins; the daemon passes it on to its ExtHandler child.
CONFIGURATION_PATH_ARGUMENT = re.compile(r"^(?:[-/]*)configuration-path:([\w/\.\-_]+)")
# Distributions whose osutil hard-codes another path (osutil/coreos.py, osutil/clearlinux.py):
# the agent reads it even when /etc/waagent.conf exists.
COREOS_CONF = "/usr/share/oem/waagent.conf"
CLEAR_LINUX_CONF = "/usr/share/defaults/waagent/waagent.conf"


def configuration_path_argument(argv: Sequence[str]) -> Optional[str]:
    """The `-configuration-path:` an agent command line gives, resolved like the agent."""
    found: Optional[str] = None
    for argument in argv:
        match = CONFIGURATION_PATH_ARGUMENT.match(argument)
        if match is not None:
            found = match.group(1)
    return None if found is None else agent_path(found)


def _os_release(sysroot: Sysroot) -> dict[str, str]:
    fields: dict[str, str] = {}
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            data = read_bounded(sysroot.path(candidate), 64 * 1024)[0]
        except OSError:
            continue
        for line in data.decode("utf-8", "replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip("\"'")
        break
    return fields


def distro_conf_path(sysroot: Sysroot) -> Optional[str]:
    """The path a distribution's osutil hard-codes, when it is not /etc/waagent.conf."""
    release = _os_release(sysroot)
    ids = {release.get("ID", "").lower(), release.get("VERSION_CODENAME", "").lower()}
    if ids & {"flatcar", "coreos"}:
        return COREOS_CONF
    if "Clear Linux" in release.get("NAME", "") or release.get("ID", "") == "clear-linux-os":
        return CLEAR_LINUX_CONF
    return None


def conf_path(
    sysroot: Sysroot, override: Optional[str], agent_cmdlines: Sequence[Sequence[str]] = ()
) -> Path:
    """The file the running agent reads.

    In order: the guard setting `agent.conf_path`; the `-configuration-path:` on a running
    agent's command line (`agent_cmdlines`, daemon first); the distribution's hard-coded
    path (CoreOS/Flatcar, Clear Linux); /etc/waagent.conf (or, on an unknown tree without
    it, the first distribution path that exists).
    """
    if override:
        if not override.startswith("/"):
            raise ConfigError(
                "agent.conf_path: must be an absolute path such as /etc/waagent.conf "
                f"(got {override!r})"
            )
        return sysroot.path(override)
    for argv in agent_cmdlines:
        argument = configuration_path_argument(argv)
        if argument is not None:
            return sysroot.path(argument)
    distro = distro_conf_path(sysroot)
    if distro is not None:
        return sysroot.path(distro)
    return sysroot.find_waagent_conf()


@dataclass(frozen=True)
class AgentConfig:
    """The settings the guard cares about, with the agent's code defaults applied."""

    logs_verbose: bool
    logs_collect: bool
    extensions_enabled: bool
    autoupdate_enabled: bool
    update_to_latest: Optional[bool]  # None when absent, not y/n, or the agent is before 2.10
    auto_update: bool  # effective: update_to_latest when set, else autoupdate_enabled
    http_proxy_host: Optional[str]
    http_proxy_port: Optional[int]
    os_enable_firewall: bool
    lib_dir: str
    extension_log_dir: str
    pid_file: str
    provisioning_agent: str
    goal_state_period: int


def _as_switch(value: Optional[str]) -> Optional[bool]:
    if value is None:
        return None
    lowered = value.lower()
    return True if lowered == "y" else False if lowered == "n" else None


def _as_int(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:  # includes Python's limit on very long digit strings
        return None


def knows_update_to_latest(agent_version: Optional[str]) -> bool:
    """Whether an agent of `agent_version` reads AutoUpdate.UpdateToLatestVersion (>= 2.10).

    An unknown version counts as a current agent.
    """
    if agent_version is None:
        return True
    # Imported here: extensions.py owns version parsing and imports nothing from here.
    from waagent_guard.agent.extensions import version_at_least

    known = version_at_least(agent_version, ".".join(map(str, UPDATE_TO_LATEST_SINCE)))
    return known is not False


def agent_config(document: ConfDocument, agent_version: Optional[str] = None) -> AgentConfig:
    """The typed view the agent itself would compute from `document`.

    `agent_version` is the goal-state agent's version when known: agents before 2.10 ignore
    AutoUpdate.UpdateToLatestVersion. Path settings come back absolute, resolved the way
    the agent resolves them (`agent_path`); an empty Pid.File stays empty (no pidfile).
    """

    def switch(key: str) -> bool:
        parsed = _as_switch(document.get(key))
        return SWITCH_DEFAULTS[key] if parsed is None else parsed

    def string(key: str) -> str:
        value = document.get(key)
        default = STRING_DEFAULTS[key]
        assert default is not None
        return default if value is None else value

    def path(key: str) -> str:
        value = string(key)
        if key == "Pid.File" and not value:
            return ""
        return agent_path(value)

    def integer(key: str) -> Optional[int]:
        parsed = _as_int(document.get(key))
        return INTEGER_DEFAULTS[key] if parsed is None else parsed

    autoupdate_enabled = switch("AutoUpdate.Enabled")
    update_to_latest = (
        _as_switch(document.get(UPDATE_TO_LATEST_KEY))
        if knows_update_to_latest(agent_version)
        else None
    )
    goal_state_period = integer("Extensions.GoalStatePeriod")
    assert goal_state_period is not None
    return AgentConfig(
        logs_verbose=switch("Logs.Verbose"),
        logs_collect=switch("Logs.Collect"),
        extensions_enabled=switch("Extensions.Enabled"),
        autoupdate_enabled=autoupdate_enabled,
        update_to_latest=update_to_latest,
        auto_update=autoupdate_enabled if update_to_latest is None else update_to_latest,
        http_proxy_host=document.get("HttpProxy.Host"),
        http_proxy_port=integer("HttpProxy.Port"),
        os_enable_firewall=switch("OS.EnableFirewall"),
        lib_dir=path("Lib.Dir"),
        extension_log_dir=path("Extension.LogDir"),
        pid_file=path("Pid.File"),
        provisioning_agent=string("Provisioning.Agent"),
        goal_state_period=goal_state_period,
    )
