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
    check_pidfile,
    find_agent_processes,
)
from waagent_guard.errors import GuardError
from waagent_guard.sysroot import VMSNAPSHOT_FREEZE_LOCK, VMSNAPSHOT_NAME, Sysroot

if TYPE_CHECKING:
    from waagent_guard.service import ServiceManager, UnitState
    from waagent_guard.settings import Settings

log = logging.getLogger(__name__)

# How much of the current waagent.log a one-shot status reads (the tail).
RECENT_LOG_BYTES = 8 * 1024 * 1024

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
HEALTH_EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}


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
    unreadable: tuple[str, ...] = field(default_factory=tuple)
    # True when waagent.log could be opened for reading; None when not checked.
    log_readable: Optional[bool] = None

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


def _readable_file(path: Path) -> bool:
    """Whether `path` is a regular file this process may read (no read: it may be large)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and os.access(path, os.R_OK)
    except OSError:
        return False


def _unreadable(paths: list[Path], sysroot: Sysroot) -> tuple[str, ...]:
    missing = []
    for path in paths:
        if path.exists() and not os.access(path, os.R_OK):
            missing.append(f"{sysroot.host_path(path)}: permission denied (run as root)")
    return tuple(missing)


def _processes_of(sysroot: Sysroot) -> tuple[AgentProcess, ...]:
    """The agent's processes; under --root only those whose program lies inside the root.

    A mounted disk has no live processes, but the demo and the integration tests
    link `<root>/proc` to the host's /proc and run a simulated agent from inside
    the tree: the filter keeps one guest's agent from being mistaken for another's.
    """
    if sysroot.is_host:
        return find_agent_processes(sysroot.proc)
    if not sysroot.proc.is_dir():
        return ()  # an offline tree: no processes to look at
    processes = find_agent_processes(sysroot.proc)
    prefix = str(sysroot.root.resolve()) + os.sep
    return tuple(
        process
        for process in processes
        if any(argument.startswith(prefix) for argument in process.cmdline)
    )


def resolve_conf_path(sysroot: Sysroot, settings: Settings) -> Path:
    return conf_path(sysroot, settings.agent.conf_path)


def observe(
    sysroot: Sysroot,
    settings: Settings,
    *,
    manager: Optional[ServiceManager] = None,
    log_signals: Optional[LogSignals] = None,
    clock: Callable[[], float] = time.time,
) -> Observation:
    """Read every fact once. `log_signals` lets the daemon pass its live tailer's signals."""
    now = clock()
    conf_path = resolve_conf_path(sysroot, settings)
    conf = load_conf(conf_path)
    config = agent_config(conf)
    lib_dir = sysroot.path(config.lib_dir)
    lib = scan_lib_dir(lib_dir, now=now)
    processes = _processes_of(sysroot)
    pidfile = check_pidfile(sysroot.path(config.pid_file), sysroot.proc)
    log_path = sysroot.path(settings.agent.log_path)
    signals = log_signals
    if signals is None:
        try:
            signals = read_log_signals(log_path, sysroot)
        except GuardError as error:  # unreadable or not a file: say so, show the rest
            log.debug("log not read: %s", error)
            signals = LogSignals()
    unit = None
    unit_error = None
    if manager is not None:
        try:
            unit = manager.state()
        except Exception as error:  # a broken manager must not hide the rest
            unit_error = str(error)
            log.warning("cannot read the agent unit's state: %s", error)
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
        unreadable=_unreadable([conf_path, log_path, lib_dir], sysroot),
        log_readable=_readable_file(log_path),
    )
