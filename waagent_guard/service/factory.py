"""Choose and build the agent's service manager from `[agent]` settings and the sysroot.

`agent.manager = "auto"` picks, in order: systemd when `/run/systemd/system`
exists (sd_booted(3)'s test; on the host that is the real path) or, on an
offline tree that has no /run, when an agent unit file is installed; OpenRC
when an agent init script exists and `rc-service` is installed (OpenRC scripts
live in /etc/init.d too, so it is checked before SysV); SysV when
`/etc/init.d/walinuxagent` or `/etc/init.d/waagent` exists.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from waagent_guard.errors import GuardError, ServiceError
from waagent_guard.execute import CommandRunner, SubprocessRunner
from waagent_guard.service.manager import Binaries, PidFinder, ServiceManager
from waagent_guard.service.scripts import CommandManager, OpenrcManager, SysvManager
from waagent_guard.service.systemd import (
    SystemdManager,
    detect_systemd_unit,
    installed_unit_files,
)
from waagent_guard.settings import Settings
from waagent_guard.sysroot import AGENT_UNIT_NAMES, Sysroot

if TYPE_CHECKING:
    from waagent_guard.agent.process import AgentProcess

log = logging.getLogger(__name__)

SYSTEMD_RUNTIME_DIR = "/run/systemd/system"
RC_SERVICE_PATHS = ("/sbin/rc-service", "/usr/sbin/rc-service", "/bin/rc-service",
                    "/usr/bin/rc-service")
SCRIPT_NAMES = tuple(name.removesuffix(".service") for name in AGENT_UNIT_NAMES)


def _init_script(sysroot: Sysroot, unit: str) -> Optional[str]:
    names = SCRIPT_NAMES if unit == "auto" else (unit.removesuffix(".service"),)
    for name in names:
        if sysroot.path(f"/etc/init.d/{name}").exists():
            return name
    return None


def detect_manager_kind(sysroot: Sysroot, unit: str = "auto") -> str:
    """`systemd`, `openrc` or `sysv` for this sysroot; ServiceError when nothing fits."""
    if sysroot.path(SYSTEMD_RUNTIME_DIR).is_dir():
        return "systemd"
    if not sysroot.is_host and installed_unit_files(sysroot):
        return "systemd"
    if _init_script(sysroot, unit) is not None:
        if any(sysroot.path(path).exists() for path in RC_SERVICE_PATHS):
            return "openrc"
        return "sysv"
    raise ServiceError(
        f"cannot tell how the agent is managed under {sysroot.root}: no {SYSTEMD_RUNTIME_DIR} "
        "and no /etc/init.d/walinuxagent or /etc/init.d/waagent; set agent.manager "
        '(systemd, sysv, openrc or command) in guard.toml'
    )


def default_pid_finder(proc_root: Path) -> PidFinder:
    """The running agent daemon's PID from /proc (agent/process.py), looked up per call."""

    def find() -> Optional[int]:
        from waagent_guard.agent.process import find_agent_processes

        for process in find_agent_processes(proc_root):
            if process.role == "daemon":
                return process.pid
        return None

    return find


def make_service_manager(
    settings: Settings,
    sysroot: Sysroot,
    runner: Optional[CommandRunner] = None,
    *,
    binaries: Binaries = Binaries(),  # noqa: B008 - frozen dataclass, never mutated
    pid_finder: Optional[PidFinder] = None,
    processes: Optional[Callable[[Sysroot], tuple[AgentProcess, ...]]] = None,
) -> ServiceManager:
    """The manager `settings.agent` asks for (`auto`: detected under `sysroot`).

    `processes` finds the agent's processes (the daemon passes its `ProcessFinder`).
    """
    agent = settings.agent
    runner = runner if runner is not None else SubprocessRunner()
    if pid_finder is None:  # only this root's own agent (not a container's or demo's)
        from waagent_guard.agent.roots import processes_in_root, root_pid_finder

        pid_finder = root_pid_finder(sysroot, processes or processes_in_root)
    finder = pid_finder
    timeout = agent.command_timeout_seconds
    kind = agent.manager if agent.manager != "auto" else detect_manager_kind(sysroot, agent.unit)
    log.debug("agent service manager: %s", kind)
    if kind == "systemd":
        unit = agent.unit
        if unit == "auto":
            unit = detect_systemd_unit(
                sysroot, runner, systemctl=binaries.systemctl, timeout=timeout
            )
        return SystemdManager(unit, runner, systemctl=binaries.systemctl, timeout=timeout)
    if kind == "command":
        return CommandManager(agent.command, runner, timeout=timeout, pid_finder=finder)
    name = _init_script(sysroot, agent.unit) or (
        SCRIPT_NAMES[-1] if agent.unit == "auto" else agent.unit.removesuffix(".service")
    )
    if kind == "openrc":
        return OpenrcManager(
            name, runner, binary=binaries.rc_service, timeout=timeout, pid_finder=finder
        )
    return SysvManager(name, runner, binary=binaries.service, timeout=timeout, pid_finder=finder)


def reading_manager(settings: Settings, sysroot: Sysroot) -> Optional[ServiceManager]:
    """The manager for commands that only read (status, metrics, doctor), or None.

    Only the running system has a service manager worth asking (never a tree
    under --root, unless the `command` manager is configured for it); a
    system where none can be detected still gets its report, without unit facts.
    """
    if not (sysroot.is_host or settings.agent.manager == "command"):
        return None
    try:
        return make_service_manager(settings, sysroot)
    except GuardError as error:
        log.debug("no service manager: %s", error)
        return None
