"""The agent's processes as `/proc` shows them, and what its pidfile points at.

Owns recognising the agent daemon (`python3 -u /usr/sbin/waagent -daemon`) and its
goal-state child, the ExtHandler (`python3 -u bin/WALinuxAgent-<ver>-py3.X.egg
-run-exthandlers`), by COMMAND LINE: both show up as `python3` by name (AGENT.md §1).
Also owns reading their start time, RSS and CPU time, and classifying the pidfile
(`Pid.File`), because a pidfile naming any live PID keeps the agent down.

Only a process whose real and effective uid are trusted counts (root, and the uid
the guard itself runs as: the demo guest's simulated agent runs as its user). Any
local user can start `python3 /usr/sbin/waagent -daemon`: counted, it would hide
the real agent's death and choose the `-configuration-path:` that `verbose on`
edits. The uids come from `Uid:` in /proc/PID/status, not from the owner of
/proc/PID, which a non-dumpable process turns into root (proc(5)).

`proc_root` is injected so tests read a fake `/proc` tree. A process that exits
while being read is skipped silently: that is normal, not a problem.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from waagent_guard.fsutil import FileTooLarge, NotRegularFile, read_file, read_text
from waagent_guard.timeutil import MAX_EPOCH_SECONDS

logger = logging.getLogger(__name__)

ROLE_DAEMON = "daemon"
ROLE_EXTHANDLER = "exthandler"

PIDFILE_ABSENT = "absent"
PIDFILE_AGENT = "agent"
PIDFILE_DEAD = "dead"
PIDFILE_OTHER = "other"
PIDFILE_INVALID = "invalid"

# Any Python the agent is launched with: its units run `python`, `python3`,
# RHEL 8's `/usr/libexec/platform-python`, and `run_latest` replaces a leading
# `python` with the daemon's own `sys.executable` (python2.7, python3.12, a
# debug build `python3.11d`, pypy). Matched on the basename.
INTERPRETER_PATTERN = re.compile(
    r"^(?:platform-)?(?:python|pypy)(?:\d+(?:\.\d+)*)?(?:[dmu]+)?(?:-(?:dbg|debug))?$"
)
# `#!/usr/bin/env python3` runs `env [-i] [-u NAME] [NAME=VALUE...] python3 SCRIPT ...`.
ENV_LAUNCHER = "env"
ENV_OPTIONS_WITH_VALUE = frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"})
# `WALinuxAgent-2.15.0.1-py3.12.egg` (auto-updated), `WALinuxAgent-2.2.45.egg`, and
# pre-release builds such as `WALinuxAgent-2.1.5.rc3-py2.7.egg` (makepkg names the egg
# after AGENT_LONG_VERSION, whatever the version string holds).
EGG_PATTERN = re.compile(
    r"^WALinuxAgent-(\d+(?:\.\d+)*(?:[.-]?(?:rc|a|b|alpha|beta|dev|post)\d*)?)"
    r"(?:-py\d+(?:\.\d+)*)?\.egg$"
)
AGENT_DIR_PATTERN = re.compile(r"^WALinuxAgent-(\d+(?:\.\d+)*)$")
# The agent's own parse_args (agent.py), in its order: each argument is matched
# by PREFIX after any leading `-`/`/`; the last command wins; an argument it does
# not know turns the command into `help` and stops parsing. (pattern, command;
# None for an option that leaves the command alone.)
_PARSE_ARGS_TABLE: tuple[tuple[re.Pattern[str], Optional[str]], ...] = tuple(
    (re.compile(pattern), command)
    for pattern, command in (
        (r"^(?:[-/]*)configuration-path:([\w/\.\-_]+)", None),
        (r"^([-/]*)deprovision\+user", "deprovision+user"),
        (r"^([-/]*)deprovision", "deprovision"),
        (r"^([-/]*)daemon", "daemon"),
        (r"^([-/]*)start", "start"),
        (r"^([-/]*)register-service", "register-service"),
        (r"^([-/]*)run-exthandlers", "run-exthandlers"),
        (r"^([-/]*)resourcedisk", "resourcedisk"),
        (r"^([-/]*)version", "version"),
        (r"^([-/]*)verbose", None),
        (r"^([-/]*)debug", None),
        (r"^([-/]*)force", None),
        (r"^([-/]*)show-configuration", "show-configuration"),
        (r"^([-/]*)(help|usage|\?)", "help"),
        (r"^([-/]*)collect-logs", "collect-logs"),
        (r"^([-/]*)full", None),
        (r"^([-/]*)setup-firewall", "setup-firewall"),
        (r"^([-/]*)dst_ip=(?P<dst_ip>[\d.]{7,})", None),
        (r"^([-/]*)uid=(?P<uid>[\d]+)", None),
        (r"^([-/]*)(w|wait)$", None),
    )
)
# Interpreter options that take a value as the next argument (`python3 -W ignore x.py`).
INTERPRETER_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "-Q"})

MAX_PROC_FILE_BYTES = 64 * 1024
MAX_PIDFILE_BYTES = 4096
# os.kill() takes a C int: the agent's check_pid_alive raises OverflowError beyond it.
PID_T_MAX = 2**31 - 1


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
    """What the agent's pidfile names, and what the agent will do about it at start.

    `agent_sees_alive` is the agent's own verdict (daemon/main.py check_pid:
    `os.kill(int(text), 0)` succeeds or fails with EPERM): when True, a newly
    started daemon logs "Daemon is already running" and exits, so the pidfile
    must go before a start. That differs from `state` on purpose for a zombie
    (dead to the guard, alive to the agent) and for `0` and `-1` (no process, but
    kill(0|-1, 0) succeeds). `note` says why in words, or is None.
    """

    path: Path
    pid: Optional[int]
    state: str  # "absent" | "agent" | "dead" | "other" | "invalid"
    other_cmdline: Optional[tuple[str, ...]]
    agent_sees_alive: bool = False
    note: Optional[str] = None

    @property
    def blocks_start(self) -> bool:
        """A start of the agent would exit at once (or crash) because of this pidfile."""
        return self.agent_sees_alive and self.state != PIDFILE_AGENT


class ProcessScanError(Exception):
    """/proc could not be read (EMFILE, EACCES, ...): whether the agent runs is unknown."""


class _Vanished(Exception):
    """The process exited while we were reading it."""


def _skip_env(argv: tuple[str, ...]) -> int:
    """Index of the program `env` runs (argv[0] is `env`), or len(argv)."""
    index = 1
    while index < len(argv):
        argument = argv[index]
        if argument in ENV_OPTIONS_WITH_VALUE:
            index += 2
        elif argument.startswith("-") or ("=" in argument and not argument.startswith("/")):
            index += 1
        else:
            return index
    return index


def _script_argument(argv: tuple[str, ...]) -> Optional[int]:
    """Index of the script a Python interpreter runs, or of argv[0] when it is the script."""
    if not argv:
        return None
    start = 0
    if os.path.basename(argv[0]) == ENV_LAUNCHER:
        start = _skip_env(argv)
        if start >= len(argv):
            return None
    if not INTERPRETER_PATTERN.match(os.path.basename(argv[start])):
        return start
    index = start + 1
    while index < len(argv):
        argument = argv[index]
        if argument in INTERPRETER_OPTIONS_WITH_VALUE:
            index += 2
        elif argument in ("-c", "-m") or argument == "-":
            return None  # `python3 -m waagent_guard` and friends are never the agent
        elif argument.startswith("-"):
            index += 1
        else:
            return index
    return None


def agent_command(flags: tuple[str, ...]) -> str:
    """The command the agent's parse_args picks from its arguments (a faithful port)."""
    command = "help"
    for flag in flags:
        if flag == "":
            continue
        for pattern, found in _PARSE_ARGS_TABLE:
            if pattern.match(flag):
                if found is not None:
                    command = found
                break
        else:
            return "help"
    return command


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
    command = agent_command(argv[index + 1 :])
    if command == "run-exthandlers":
        return ROLE_EXTHANDLER, version
    if command == "daemon":
        return ROLE_DAEMON, version
    return None


def _read_proc_file(path: Path) -> bytes:
    try:
        return read_file(path, MAX_PROC_FILE_BYTES, oversize="truncate")[0]
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
        text = read_text(proc_root / "stat", MAX_PROC_FILE_BYTES, encoding="ascii",
                         oversize="truncate")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("btime "):
            try:
                boot = float(line.split()[1])
            except (ValueError, IndexError):
                return None
            return boot if math.isfinite(boot) and 0 <= boot < MAX_EPOCH_SECONDS else None
    return None


def trusted_uids() -> frozenset[int]:
    """The uids an agent process may run as: root, and the guard's own (see the docstring)."""
    return frozenset({0, os.geteuid()})


@dataclass(frozen=True)
class _StatusFacts:
    uids: Optional[tuple[int, int]]  # (real, effective); None when `Uid:` is missing or bad
    rss_bytes: Optional[int]


def status_fields(data: bytes) -> dict[str, str]:
    """The `Key:\tvalue` lines of /proc/PID/status, split on "\n" ONLY.

    `Name:` is the process's own choice (prctl PR_SET_NAME) and the kernel escapes only
    "\n" and "\\" in it: str.splitlines() would also split on "\r", "\v", "\f",
    "\x1c"-"\x1e", ... and a name such as "\x1eUid:\t0" or "\x1eGroups:\t4242" would add a
    line of the attacker's making. The first occurrence of a key wins.
    """
    fields: dict[str, str] = {}
    for line in data.split(b"\n"):
        key, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(key.decode("ascii", "replace"), value.decode("ascii", "replace"))
    return fields


def _status_facts(process_dir: Path) -> _StatusFacts:
    """The uids and RSS of /proc/PID/status (PermissionError reaches the caller)."""
    fields = status_fields(_read_proc_file(process_dir / "status"))
    uids: Optional[tuple[int, int]] = None
    rss: Optional[int] = None
    try:
        real, effective = fields.get("Uid", "").split()[:2]
        uids = (int(real), int(effective))
    except ValueError:
        uids = None
    try:
        rss = int(fields.get("VmRSS", "").split()[0]) * 1024  # the kernel reports kB
    except (IndexError, ValueError):
        rss = None
    return _StatusFacts(uids, rss)


def _runs_as(facts: _StatusFacts, trusted: frozenset[int]) -> bool:
    return facts.uids is not None and all(uid in trusted for uid in facts.uids)


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
    process_dir: Path,
    pid: int,
    boot_time: Optional[float],
    clock_ticks: int,
    trusted: frozenset[int],
) -> Optional[AgentProcess]:
    argv = _read_cmdline(process_dir)
    classified = classify_cmdline(argv)
    if classified is None:
        return None  # also zombies and kernel threads: their cmdline is empty
    role, version = classified
    try:
        facts = _status_facts(process_dir)
    except PermissionError:
        logger.debug("no permission to read %s: not counted as the agent", process_dir)
        return None
    if not _runs_as(facts, trusted):
        logger.debug("PID %d looks like the agent but runs as uid %s: not counted", pid,
                     facts.uids)
        return None
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
        rss_bytes=facts.rss_bytes,
        cpu_seconds=cpu_seconds,
    )


def read_agent_processes(
    proc_root: Path,
    pids: Iterable[int],
    *,
    clock_ticks: Optional[int] = None,
    uids: Optional[frozenset[int]] = None,
) -> Optional[tuple[AgentProcess, ...]]:
    """The agent processes among `pids` (the others are skipped), or None when unsure.

    None when a process could not be read for another reason than exiting
    (permission, EMFILE, ...): the caller then scans /proc in full, which reports
    such errors as it should.
    """
    ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
    trusted = uids if uids is not None else trusted_uids()
    boot_time = _boot_time(Path(proc_root))
    found: list[AgentProcess] = []
    for pid in pids:
        try:
            process = _read_process(Path(proc_root) / str(pid), pid, boot_time, ticks, trusted)
        except _Vanished:
            continue
        except OSError:
            return None
        if process is not None:
            found.append(process)
    return tuple(found)


def child_pids(proc_root: Path, pid: int) -> Optional[list[int]]:
    """The children of `pid`, from /proc/PID/task/*/children; None when that cannot be read.

    The file exists on kernels built with CONFIG_PROC_CHILDREN (Debian, Ubuntu, RHEL
    and SUSE kernels are); without it the caller scans /proc.
    """
    task_dir = Path(proc_root) / str(pid) / "task"
    try:
        tasks = os.listdir(task_dir)
        children: list[int] = []
        for task in tasks:
            text = _read_proc_file(task_dir / task / "children").decode("ascii", "replace")
            children.extend(int(word) for word in text.split() if word.isdigit())
    except (_Vanished, OSError):
        return None
    return children


def hidepid(proc_root: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> Optional[str]:
    """The `hidepid=` of the proc mount at `proc_root` when it hides other users'
    processes (1, 2, invisible, noaccess), else None (also for a fake tree)."""
    try:
        text = read_text(mountinfo, 1 << 20, encoding="utf-8", errors="replace",
                         oversize="truncate")
    except OSError:
        return None
    target = os.path.realpath(proc_root)
    found = None
    for line in text.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5 or fields[4] != target:
            continue
        _, _, after = line.partition(" - ")
        parts = after.split(" ")
        if len(parts) >= 3 and parts[0] == "proc":
            options = dict(
                option.partition("=")[::2] for option in parts[2].split(",")
            )
            value = options.get("hidepid")
            found = value if value not in (None, "0", "off") else None  # the last mount wins
    return found


def find_agent_processes(
    proc_root: Path, *, clock_ticks: Optional[int] = None, uids: Optional[frozenset[int]] = None
) -> tuple[AgentProcess, ...]:
    """Every live agent daemon and ExtHandler under `proc_root`, daemons first, by PID.

    Raises ProcessScanError when /proc cannot be listed or a process cannot be read
    for another reason than exiting meanwhile (EMFILE, ENOMEM, ...): an empty answer
    would say "the agent is gone" when nothing was seen. For a caller other than
    root, so is a /proc mounted with hidepid and any process it cannot read: root's
    agent may be among them. Root skips a process it cannot read (an LSM's refusal:
    not one of its agents). A process running as a uid outside `uids` (default
    `trusted_uids()`) is never the agent.
    """
    proc_root = Path(proc_root)
    ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
    trusted = uids if uids is not None else trusted_uids()
    euid = os.geteuid()
    hidden = hidepid(proc_root) if euid != 0 else None
    if hidden is not None:
        raise ProcessScanError(
            f"{proc_root} is mounted with hidepid={hidden}: root's processes are invisible "
            f"to uid {euid}; run as root"
        )
    boot_time = _boot_time(proc_root)
    try:
        entries = os.listdir(proc_root)
    except OSError as error:
        raise ProcessScanError(f"cannot list {proc_root}: {error.strerror or error}") from error
    found: list[AgentProcess] = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            process = _read_process(proc_root / entry, int(entry), boot_time, ticks, trusted)
        except _Vanished:
            continue
        except PermissionError as error:
            if euid != 0:  # root's agent may be among the unreadable: unknown, not absent
                raise ProcessScanError(
                    f"cannot read {proc_root / entry} as uid {euid}: {error.strerror}; "
                    "run as root"
                ) from error
            logger.debug("no permission to read %s", proc_root / entry)
            continue
        except OSError as error:
            raise ProcessScanError(
                f"cannot read {proc_root / entry}: {error.strerror or error}"
            ) from error
        if process is not None:
            found.append(process)
    return tuple(sorted(found, key=lambda p: (p.role != ROLE_DAEMON, p.pid)))


def _process_state(process_dir: Path) -> Optional[str]:
    """The one-letter state of /proc/PID/stat (`R`, `S`, `Z`, ...), None if unreadable."""
    try:
        fields = _stat_fields(process_dir)
    except (_Vanished, OSError):
        return None
    return fields[0] if fields else None


def _group_exists(proc_root: Path, group: int) -> bool:
    """Whether any process is in process group `group` (what kill(-group, 0) asks)."""
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return False
    for entry in entries:
        if entry.isdigit():
            fields = None
            try:
                fields = _stat_fields(Path(proc_root) / entry)
            except (_Vanished, OSError):
                continue
            if _int_field(fields, 2) == group:  # field 5 (pgrp); `fields` starts at 3
                return True
    return False


def pidfile_value(data: bytes) -> tuple[Optional[int], Optional[str]]:
    """What the agent's check_pid makes of the pidfile's bytes: (int(text), None) or
    (None, why the agent cannot use it). It decodes UTF-8 strictly and calls `int()`,
    which accepts surrounding whitespace, a sign and underscores between digits."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8: the agent's daemon fails reading it at start"
    try:
        return int(text), None
    except ValueError:
        return None, None


def check_pidfile(
    path: Path, proc_root: Path, *, uids: Optional[frozenset[int]] = None
) -> PidfileState:
    """Classify the agent's pidfile the way the agent will act on it at start.

    A PID running the agent's command line as an untrusted uid is `other`: the agent
    does not run there, whatever the command line says.
    """
    path = Path(path)
    try:
        data = read_file(path, MAX_PIDFILE_BYTES)[0]
    except FileNotFoundError:
        return PidfileState(path, None, PIDFILE_ABSENT, None)
    except FileTooLarge:
        return PidfileState(path, None, PIDFILE_INVALID, None, note="longer than 4 KiB")
    except NotRegularFile as error:  # a directory is not os.path.isfile for the agent either
        return PidfileState(path, None, PIDFILE_INVALID, None, note=error.strerror)
    except OSError as error:
        logger.debug("cannot read pidfile %s: %s", path, error)
        return PidfileState(path, None, PIDFILE_INVALID, None, note=error.strerror)
    pid, problem = pidfile_value(data)
    if pid is None:
        return PidfileState(
            path, None, PIDFILE_INVALID, None, agent_sees_alive=problem is not None,
            note=problem,
        )
    if abs(pid) > PID_T_MAX:
        return PidfileState(
            path, None, PIDFILE_INVALID, None, agent_sees_alive=True,
            note=f"{pid} does not fit a pid_t: the agent's check raises OverflowError and "
            "its daemon exits at start",
        )
    if pid == 0:
        return PidfileState(
            path, 0, PIDFILE_OTHER, None, agent_sees_alive=True,
            note="0 means the agent's own process group to kill(): the agent takes it as a "
            "running daemon and exits at start",
        )
    if pid == -1:
        return PidfileState(
            path, -1, PIDFILE_OTHER, None, agent_sees_alive=True,
            note="-1 means every process to kill(): the agent takes it as a running daemon "
            "and exits at start",
        )
    if pid < 0:
        alive = _group_exists(proc_root, -pid)
        return PidfileState(
            path, pid, PIDFILE_OTHER if alive else PIDFILE_DEAD, None, agent_sees_alive=alive,
            note=f"{pid} means process group {-pid} to kill(): "
            + ("it exists, so the agent exits at start" if alive else "no such group"),
        )
    process_dir = Path(proc_root) / str(pid)
    if not process_dir.is_dir():
        return PidfileState(path, pid, PIDFILE_DEAD, None)
    if _process_state(process_dir) in ("Z", "X"):
        # Dead, not yet reaped: no agent runs, but kill(pid, 0) still succeeds.
        return PidfileState(
            path, pid, PIDFILE_DEAD, None, agent_sees_alive=True,
            note=f"PID {pid} is a zombie (exited, not yet reaped): the agent would take it "
            "as running and exit at start",
        )
    try:
        argv = _read_cmdline(process_dir)
    except _Vanished:
        return PidfileState(path, pid, PIDFILE_DEAD, None)
    except OSError:
        argv = ()
    classified = classify_cmdline(argv)
    if classified is not None and classified[0] == ROLE_DAEMON and _trusted(process_dir, uids):
        return PidfileState(path, pid, PIDFILE_AGENT, None, agent_sees_alive=True)
    return PidfileState(path, pid, PIDFILE_OTHER, argv, agent_sees_alive=True)


def _trusted(process_dir: Path, uids: Optional[frozenset[int]]) -> bool:
    try:
        facts = _status_facts(process_dir)
    except (_Vanished, OSError):
        return False
    return _runs_as(facts, uids if uids is not None else trusted_uids())
