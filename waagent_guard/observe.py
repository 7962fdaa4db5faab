"""One observation of the agent: every fact the guard reads, gathered in one place.

`observe()` is the adapter that reads files under the sysroot (conf, log, Lib.Dir,
/proc, the pidfile) and asks the service manager for the unit's state; `assess()`
is the pure function that turns an observation into a health verdict with reasons.
`status`, the daemon, metrics and doctor all read the same `Observation`.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from waagent_guard.access import Unreadable, blocked, first_covering, lib_dir_blocks
from waagent_guard.agent.conf import (
    AgentConfig,
    ConfDocument,
    agent_config,
    conf_path,
    load_conf,
)
from waagent_guard.agent.extensions import (
    ExtensionHandler,
    LibState,
    scan_lib_dir,
    version_at_least,
)
from waagent_guard.agent.log import LogSignals, guest_timezone, parse_records, read_recent
from waagent_guard.agent.process import (
    AgentProcess,
    PidfileState,
    ProcessScanError,
    check_pidfile,
)
from waagent_guard.agent.roots import processes_in_root
from waagent_guard.errors import GuardError
from waagent_guard.sysroot import VMSNAPSHOT_FREEZE_LOCK, VMSNAPSHOT_NAME, Sysroot

if TYPE_CHECKING:
    from waagent_guard.service import ServiceManager, UnitState
    from waagent_guard.settings import Settings

log = logging.getLogger(__name__)

# How much of the current waagent.log a one-shot status reads (the tail).
RECENT_LOG_BYTES = 8 * 1024 * 1024

HEALTHY, DEGRADED, DOWN, UNKNOWN = "healthy", "degraded", "down", "unknown"
# `unknown`: the guard could not look (an error reading /proc or asking the service
# manager), or nothing wrong was seen but an input the verdict needs could not be
# read; never read as "down" (LSB's status code 4 is "unknown").
HEALTH_EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2, UNKNOWN: 4}


@dataclass(frozen=True)
class Observation:
    time: float
    sysroot: Sysroot
    conf_path: Path
    conf: ConfDocument
    config: AgentConfig
    lib: LibState
    processes: tuple[AgentProcess, ...]
    pidfile: PidfileState
    log_path: Path
    log: LogSignals
    min_vmsnapshot_version: str
    unit_name: Optional[str] = None
    manager_name: Optional[str] = None
    unit: Optional[UnitState] = None
    unit_error: Optional[str] = None
    freeze_lock_age: Optional[float] = None
    conf_mtime: Optional[float] = None
    blocked: tuple[Unreadable, ...] = field(default_factory=tuple)
    proc_error: Optional[str] = None  # /proc could not be read: processes unknown
    system_state: Optional[str] = None  # `systemctl is-system-running`, when asked
    # True when waagent.log could be opened for reading; None when not checked.
    log_readable: Optional[bool] = None

    @property
    def unreadable(self) -> tuple[str, ...]:
        """What could not be read and why, one line each (status, doctor, metrics)."""
        return tuple(str(entry) for entry in self.blocked)

    def blocked_for(self, *paths: str | Path) -> Optional[Unreadable]:
        """The unreadable entry that keeps any of `paths` (or a file under one) from being read.

        `paths` are host paths or paths under the sysroot.
        """
        host = [p if isinstance(p, str) else self.sysroot.host_path(p) for p in paths]
        return first_covering(self.blocked, *host, within=True)

    @property
    def conf_exists(self) -> bool:
        """waagent.conf is there (readable or not); False: the agent's defaults apply."""
        return self.conf_mtime is not None or self.conf_blocked is not None

    @property
    def conf_blocked(self) -> Optional[Unreadable]:
        return self.blocked_for(self.conf_path)

    @property
    def lib_blocked(self) -> Optional[Unreadable]:
        """Lib.Dir itself, or a file the guard reads in it, could not be read."""
        lib_dir = self.sysroot.host_path(self.lib.lib_dir)
        return next((entry for entry in self.blocked if entry.input == lib_dir), None)

    @property
    def vmsnapshot_known(self) -> bool:
        """Whether `vmsnapshot` (None = not installed) can be trusted: Lib.Dir was listed."""
        lib_dir = self.sysroot.host_path(self.lib.lib_dir)
        return first_covering(self.blocked, lib_dir) is None or self.vmsnapshot is not None

    @property
    def log_blocked(self) -> Optional[Unreadable]:
        return self.blocked_for(self.log_path)

    @property
    def unknown(self) -> Optional[str]:
        """Why the agent's state could not be observed, or None when it was."""
        if self.proc_error is not None:
            return self.proc_error
        if self.unit_error is not None:
            return f"the service manager failed: {self.unit_error}"
        return None

    @property
    def daemon(self) -> Optional[AgentProcess]:
        return next((p for p in self.processes if p.role == "daemon"), None)

    @property
    def exthandler(self) -> Optional[AgentProcess]:
        return next((p for p in self.processes if p.role == "exthandler"), None)

    @property
    def vmsnapshot(self) -> Optional[ExtensionHandler]:
        return self.lib.handler(VMSNAPSHOT_NAME)

    @property
    def vmsnapshot_version_ok(self) -> Optional[bool]:
        handler = self.vmsnapshot
        if handler is None:
            return None
        return version_at_least(handler.version, self.min_vmsnapshot_version)

    @property
    def snapshot_in_progress(self) -> bool:
        """A VMSnapshot freeze is held, or its enable is still transitioning."""
        if self.freeze_lock_age is not None:
            return True
        handler = self.vmsnapshot
        return bool(handler and handler.status and handler.status.status == "transitioning")

    @property
    def goal_state_version(self) -> Optional[str]:
        exthandler = self.exthandler
        if exthandler is not None and exthandler.version:
            return exthandler.version
        return self.log.goal_state_version

    @property
    def daemon_version(self) -> Optional[str]:
        daemon = self.daemon
        if daemon is not None and daemon.version:
            return daemon.version
        return self.log.daemon_version


@dataclass(frozen=True)
class Assessment:
    health: str
    reasons: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return HEALTH_EXIT_CODES[self.health]


def assess(observation: Observation) -> Assessment:
    """Pure: the health verdict and the reasons a person should read first."""
    if observation.unknown is not None and observation.daemon is None:
        return Assessment(UNKNOWN, (f"cannot tell whether the agent runs: {observation.unknown}",))
    down: list[str] = []
    degraded: list[str] = []
    unit = observation.unit
    if observation.daemon is None:
        down.append("the agent daemon is not running")
        if observation.pidfile.state == "other":
            down.append(
                f"stale pidfile {observation.sysroot.host_path(observation.pidfile.path)} names "
                f"PID {observation.pidfile.pid}, which is not the agent: "
                "the agent will refuse to start"
            )
    if (
        unit is not None
        and unit.active_state in ("failed", "inactive")
        and observation.daemon is None
    ):
        down.append(f"unit {observation.unit_name} is {unit.active_state} (result {unit.result})")
    if observation.lib.disable_agent:
        degraded.append("the agent is disabled (disable_agent file present)")
    elif observation.daemon is not None and observation.exthandler is None:
        degraded.append(
            "the ExtHandler (goal-state agent) is not running: extensions are not handled"
        )
    if not observation.config.extensions_enabled:
        degraded.append("Extensions.Enabled=n: every extension, backup included, fails")
    handler = observation.vmsnapshot
    if handler is not None:
        if observation.vmsnapshot_version_ok is False:
            degraded.append(
                f"VMSnapshot {handler.version} is older than {observation.min_vmsnapshot_version}"
            )
        if handler.status is not None and handler.status.status == "error":
            degraded.append(f"VMSnapshot's last {handler.status.operation or 'operation'} failed")
    if unit is not None and unit.active_state == "failed" and observation.daemon is not None:
        degraded.append(f"unit {observation.unit_name} is failed while the daemon runs")
    if down:
        return Assessment(DOWN, tuple(down + degraded))
    if degraded:
        return Assessment(DEGRADED, tuple(degraded))
    # Only what the verdict reads: waagent.conf, Lib.Dir's listing, VMSnapshot's own files.
    snapshot_blocked = (
        observation.blocked_for(handler.directory)
        if handler is not None
        else (None if observation.vmsnapshot_known else observation.lib_blocked)
    )
    unknown = [
        f"could not read {entry.path} ({entry.reason}): {what} unknown"
        for entry, what in (
            (observation.conf_blocked, "the agent's settings are"),
            (snapshot_blocked, "the extension and VMSnapshot state are"),
        )
        if entry is not None
    ]
    if unknown:
        return Assessment(UNKNOWN, tuple(unknown))
    return Assessment(HEALTHY, ())


def read_log_signals(
    log_path: Path, sysroot: Sysroot, *, max_bytes: int = RECENT_LOG_BYTES
) -> LogSignals:
    """Signals from the tail of the current waagent.log (bounded)."""
    signals = LogSignals()
    tz = guest_timezone(sysroot.path("/etc/localtime"))
    for record in parse_records(read_recent(log_path, max_bytes=max_bytes), tz=tz):
        signals.update(record)
    return signals


def _freeze_lock_age(sysroot: Sysroot, now: float) -> Optional[float]:
    try:
        return max(0.0, now - os.stat(sysroot.path(VMSNAPSHOT_FREEZE_LOCK)).st_mtime)
    except OSError:
        return None


def _mtime(path: Path) -> Optional[float]:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _blocked(
    sysroot: Sysroot, files: tuple[Path, ...], lib_dir: Path, lib: LibState
) -> tuple[Unreadable, ...]:
    """Every input that exists but cannot be read (a non-root user), never taken as absent."""
    found: list[Unreadable] = []
    for path in files:
        reason = blocked(path)
        if reason is not None:
            shown = sysroot.host_path(path)
            found.append(Unreadable(shown, shown, reason))
    handler_dirs = [handler.directory for handler in lib.handlers]
    agent_dirs = [lib_dir / f"WALinuxAgent-{item.version}" for item in lib.agent_versions]
    for path, reason in lib_dir_blocks(lib_dir, handler_dirs, agent_dirs):
        found.append(Unreadable(sysroot.host_path(lib_dir), sysroot.host_path(path), reason))
    return tuple(found)


def _readable_file(path: Path) -> bool:
    """Whether `path` is a regular file this process may read (no read: it may be large)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and os.access(path, os.R_OK)
    except OSError:
        return False


def resolve_conf_path(
    sysroot: Sysroot,
    settings: Settings,
    processes: Optional[tuple[AgentProcess, ...]] = None,
) -> Path:
    """The waagent.conf the running agent reads (`agent.conf.conf_path`).

    `processes` are the agent's processes when the caller has them; otherwise they are
    read here (only when `agent.conf_path` is not set).
    """
    if settings.agent.conf_path:
        return conf_path(sysroot, settings.agent.conf_path)
    if processes is None:
        try:
            processes = processes_in_root(sysroot)
        except (OSError, ProcessScanError) as error:  # /proc unreadable: the distro path
            log.debug("agent processes not read: %s", error)
            processes = ()
    ordered = sorted(processes, key=lambda process: process.role != "daemon")
    return conf_path(sysroot, None, [process.cmdline for process in ordered])


def _pidfile_state(sysroot: Sysroot, pid_file: str) -> PidfileState:
    """The pidfile as the agent will act on it; an empty Pid.File names no file."""
    if not pid_file:
        return PidfileState(sysroot.path("/"), None, "absent", None)
    return check_pidfile(sysroot.path(pid_file), sysroot.proc)


def unit_facts(
    manager: ServiceManager, *, system_state: bool = True
) -> tuple[Optional[UnitState], Optional[str], Optional[str]]:
    """(unit state, why it could not be read, system state) from the service manager;
    without `system_state` the system state is not asked (None)."""
    try:
        unit = manager.state()
        asker = getattr(manager, "system_state", None) if system_state else None
        return unit, None, (asker() if asker is not None else None)
    except Exception as error:  # a broken manager must not hide the rest
        log.warning("cannot read the agent unit's state: %s", error)
        return None, str(error) or type(error).__name__, None


def observe(
    sysroot: Sysroot,
    settings: Settings,
    *,
    manager: Optional[ServiceManager] = None,
    log_signals: Optional[LogSignals] = None,
    clock: Callable[[], float] = time.time,
    find_processes: Callable[[Sysroot], tuple[AgentProcess, ...]] = processes_in_root,
) -> Observation:
    """Read every fact once. `log_signals` lets the daemon pass its live tailer's signals,
    `find_processes` its `ProcessFinder` (a full /proc scan only now and then)."""
    now = clock()
    proc_error = None
    try:
        processes = find_processes(sysroot)
    except ProcessScanError as error:
        proc_error = str(error)
        processes = ()
        log.warning("the agent's state is unknown: %s", error)
    conf_path = resolve_conf_path(sysroot, settings, processes)
    conf = load_conf(conf_path)
    log_path = sysroot.path(settings.agent.log_path)
    signals = log_signals
    if signals is None:
        try:
            signals = read_log_signals(log_path, sysroot)
        except GuardError as error:  # unreadable or not a file: say so, show the rest
            log.debug("log not read: %s", error)
            signals = LogSignals()
    # Agents before 2.10 ignore AutoUpdate.UpdateToLatestVersion: ask the goal-state agent.
    exthandler = next((p for p in processes if p.role == "exthandler" and p.version), None)
    agent_version = exthandler.version if exthandler is not None else signals.goal_state_version
    config = agent_config(conf, agent_version)
    lib_dir = sysroot.path(config.lib_dir)
    lib = scan_lib_dir(lib_dir, now=now)
    pidfile = _pidfile_state(sysroot, config.pid_file)
    pid_path = pidfile.path
    unit, unit_error, system_state = (
        unit_facts(manager) if manager is not None else (None, None, None)
    )
    return Observation(
        time=now,
        sysroot=sysroot,
        conf_path=conf_path,
        conf=conf,
        config=config,
        lib=lib,
        processes=processes,
        pidfile=pidfile,
        log_path=log_path,
        log=signals,
        min_vmsnapshot_version=settings.vmsnapshot.min_version,
        unit_name=manager.unit if manager is not None else None,
        manager_name=manager.name if manager is not None else None,
        unit=unit,
        unit_error=unit_error,
        freeze_lock_age=_freeze_lock_age(sysroot, now),
        conf_mtime=_mtime(conf_path),
        blocked=_blocked(
            sysroot, (conf_path, log_path, *((pid_path,) if config.pid_file else ())), lib_dir, lib
        ),
        proc_error=proc_error,
        system_state=system_state,
        log_readable=_readable_file(log_path),
    )
