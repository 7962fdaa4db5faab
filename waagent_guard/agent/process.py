"""The agent's processes as `/proc` shows them, and what its pidfile points at.

Owns recognising the agent daemon (`python3 -u /usr/sbin/waagent -daemon`) and its
goal-state child, the ExtHandler (`python3 -u bin/WALinuxAgent-<ver>-py3.X.egg
-run-exthandlers`), by COMMAND LINE: both show up as `python3` by name (AGENT.md §1).
Also owns reading their start time, RSS and CPU time, and classifying the pidfile
(`Pid.File`), because a pidfile naming any live PID keeps the agent down.

`proc_root` is injected so tests read a fake `/proc` tree. A process that exits
while being read is skipped silently: that is normal, not a problem.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

ROLE_DAEMON = "daemon"
ROLE_EXTHANDLER = "exthandler"

PIDFILE_ABSENT = "absent"
PIDFILE_AGENT = "agent"
PIDFILE_DEAD = "dead"
PIDFILE_OTHER = "other"
PIDFILE_INVALID = "invalid"

INTERPRETER_PATTERN = re.compile(r"^python(\d+(\.\d+)*)?$")
# `WALinuxAgent-2.15.0.1-py3.12.egg` (auto-updated) or `WALinuxAgent-2.2.45.egg`.
EGG_PATTERN = re.compile(r"^WALinuxAgent-(\d+(?:\.\d+)*)(?:-py\d+(?:\.\d+)*)?\.egg$")
AGENT_DIR_PATTERN = re.compile(r"^WALinuxAgent-(\d+(?:\.\d+)*)$")
# The agent accepts `-daemon`, `--daemon`, `/daemon` (its parse_args strips [-/]*).
DAEMON_FLAG = re.compile(r"^[-/]*daemon$")
EXTHANDLER_FLAG = re.compile(r"^[-/]*run-exthandlers$")
# Interpreter options that take a value as the next argument (`python3 -W ignore x.py`).
INTERPRETER_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "-Q"})

MAX_PROC_FILE_BYTES = 64 * 1024
MAX_PIDFILE_BYTES = 64


@dataclass(frozen=True)
class AgentProcess:
    """A live agent process: the daemon or its ExtHandler child."""

    pid: int
    role: str  # "daemon" | "exthandler"
    cmdline: tuple[str, ...]
    version: Optional[str]
    start_time: Optional[float]  # epoch seconds
    rss_bytes: Optional[int]
    cpu_seconds: Optional[float]


@dataclass(frozen=True)
class PidfileState:
    """What the agent's pidfile names."""

    path: Path
    pid: Optional[int]
    state: str  # "absent" | "agent" | "dead" | "other" | "invalid"
    other_cmdline: Optional[tuple[str, ...]]


class _Vanished(Exception):
    """The process exited while we were reading it."""


def _script_argument(argv: tuple[str, ...]) -> Optional[int]:
    """Index of the script a Python interpreter runs, or 0 if argv[0] is the script itself."""
    if not argv:
        return None
    if not INTERPRETER_PATTERN.match(os.path.basename(argv[0])):
        return 0
    index = 1
    while index < len(argv):
        argument = argv[index]
        if argument in INTERPRETER_OPTIONS_WITH_VALUE:
            index += 2
        elif argument in ("-c", "-m"):
            return None  # `python3 -m waagent_guard` and friends are never the agent
        elif argument.startswith("-"):
            index += 1
        else:
            return index
    return None


def classify_cmdline(argv: tuple[str, ...]) -> Optional[tuple[str, Optional[str]]]:
    """(role, version from an egg name) when `argv` is the agent daemon or ExtHandler."""
    index = _script_argument(argv)
    if index is None:
        return None
    script = os.path.basename(argv[index])
    egg = EGG_PATTERN.match(script)
    if script != "waagent" and egg is None:
        return None
    version = egg.group(1) if egg else None
    flags = argv[index + 1 :]
    if any(EXTHANDLER_FLAG.match(flag) for flag in flags):
        return ROLE_EXTHANDLER, version
    if any(DAEMON_FLAG.match(flag) for flag in flags):
        return ROLE_DAEMON, version
    return None


def _read_proc_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_PROC_FILE_BYTES)
    except (FileNotFoundError, ProcessLookupError) as error:
        raise _Vanished(str(path)) from error


def _read_cmdline(process_dir: Path) -> tuple[str, ...]:
    data = _read_proc_file(process_dir / "cmdline")
    return tuple(part.decode("utf-8", "replace") for part in data.split(b"\0") if part)


def _stat_fields(process_dir: Path) -> list[str]:
    """Fields of /proc/PID/stat from field 3 (state) on; `comm` may hold spaces and ')'."""
    text = _read_proc_file(process_dir / "stat").decode("ascii", "replace")
    _, _, rest = text.rpartition(")")
    return rest.split()


def _boot_time(proc_root: Path) -> Optional[float]:
    try:
        with open(proc_root / "stat", "rb") as handle:
            for line in handle.read(MAX_PROC_FILE_BYTES).decode("ascii", "replace").splitlines():
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rss_bytes(process_dir: Path) -> Optional[int]:
    try:
        text = _read_proc_file(process_dir / "status").decode("ascii", "replace")
    except PermissionError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            try:
                return int(parts[1]) * 1024  # the kernel reports kB
            except (IndexError, ValueError):
                return None
    return None


def _cwd_version(process_dir: Path) -> Optional[str]:
    try:
        target = os.readlink(process_dir / "cwd")
    except OSError:
        return None
    match = AGENT_DIR_PATTERN.match(os.path.basename(target.rstrip("/")))
    return match.group(1) if match else None


def _int_field(fields: list[str], index: int) -> Optional[int]:
    try:
        return int(fields[index])
    except (IndexError, ValueError):
        return None


def _read_process(
    process_dir: Path, pid: int, boot_time: Optional[float], clock_ticks: int
) -> Optional[AgentProcess]:
    argv = _read_cmdline(process_dir)
    classified = classify_cmdline(argv)
    if classified is None:
        return None  # also zombies and kernel threads: their cmdline is empty
    role, version = classified
    fields = _stat_fields(process_dir)
    if fields and fields[0] in ("Z", "X"):
        return None
    # Field numbers per proc(5): utime 14, stime 15, starttime 22; `fields` starts at 3.
    utime, stime, start_ticks = (_int_field(fields, n - 3) for n in (14, 15, 22))
    start_time = None
    if start_ticks is not None and boot_time is not None:
        start_time = boot_time + start_ticks / clock_ticks
    cpu_seconds = None
    if utime is not None and stime is not None:
        cpu_seconds = (utime + stime) / clock_ticks
    if version is None and role == ROLE_EXTHANDLER:
        version = _cwd_version(process_dir)
    return AgentProcess(
        pid=pid,
        role=role,
        cmdline=argv,
        version=version,
        start_time=start_time,
        rss_bytes=_rss_bytes(process_dir),
        cpu_seconds=cpu_seconds,
    )


def find_agent_processes(
    proc_root: Path, *, clock_ticks: Optional[int] = None
) -> tuple[AgentProcess, ...]:
    """Every live agent daemon and ExtHandler under `proc_root`, daemons first, by PID."""
    proc_root = Path(proc_root)
    ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
    boot_time = _boot_time(proc_root)
    try:
        entries = os.listdir(proc_root)
    except OSError as error:
        logger.warning("cannot list %s: %s", proc_root, error.strerror or error)
        return ()
    found: list[AgentProcess] = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            process = _read_process(proc_root / entry, int(entry), boot_time, ticks)
        except _Vanished:
            continue
        except PermissionError:
            logger.debug("no permission to read %s", proc_root / entry)
            continue
        if process is not None:
            found.append(process)
    return tuple(sorted(found, key=lambda p: (p.role != ROLE_DAEMON, p.pid)))


def check_pidfile(path: Path, proc_root: Path) -> PidfileState:
    """Classify the agent's pidfile: absent, agent, dead, other (live non-daemon) or invalid."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PIDFILE_BYTES + 1)
    except FileNotFoundError:
        return PidfileState(path, None, PIDFILE_ABSENT, None)
    except OSError as error:
        logger.debug("cannot read pidfile %s: %s", path, error)
        return PidfileState(path, None, PIDFILE_INVALID, None)
    text = data.decode("ascii", "replace").strip()
    if len(data) > MAX_PIDFILE_BYTES or not text.isdigit() or int(text) <= 0:
        return PidfileState(path, None, PIDFILE_INVALID, None)
    pid = int(text)
    process_dir = Path(proc_root) / str(pid)
    # The agent itself only asks whether /proc/<pid> is a directory (osutil.check_pid_alive).
    if not process_dir.is_dir():
        return PidfileState(path, pid, PIDFILE_DEAD, None)
    try:
        argv = _read_cmdline(process_dir)
    except _Vanished:
        return PidfileState(path, pid, PIDFILE_DEAD, None)
    except OSError:
        argv = ()
    classified = classify_cmdline(argv)
    if classified is not None and classified[0] == ROLE_DAEMON:
        return PidfileState(path, pid, PIDFILE_AGENT, None)
    return PidfileState(path, pid, PIDFILE_OTHER, argv)
