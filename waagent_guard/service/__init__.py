"""Service managers for the agent: systemd, SysV, OpenRC and configured commands.

`make_service_manager(settings, sysroot, runner)` returns a `ServiceManager`
(state, start, restart, stop, reset_failed, daemon_reload). Every external
command goes through one injectable `CommandRunner`; execute.py (`SubprocessRunner`) is the
only caller of `subprocess` in the package.
"""

from __future__ import annotations

from waagent_guard.execute import (
    CommandResult,
    CommandRunner,
    SubprocessRunner,
    describe_command,
)
from waagent_guard.service.factory import (
    default_pid_finder,
    detect_manager_kind,
    make_service_manager,
)
from waagent_guard.service.manager import Binaries, PidFinder, ServiceManager
from waagent_guard.service.scripts import CommandManager, OpenrcManager, SysvManager
from waagent_guard.service.state import (
    AUTORESTART_POLICIES,
    UnitState,
    parse_show,
    parse_timespan,
    unit_state_from_show,
)
from waagent_guard.service.systemd import (
    SHOW_PROPERTIES,
    SystemdManager,
    detect_systemd_unit,
    installed_unit_files,
)

__all__ = [
    "AUTORESTART_POLICIES",
    "SHOW_PROPERTIES",
    "Binaries",
    "CommandManager",
    "CommandResult",
    "CommandRunner",
    "OpenrcManager",
    "PidFinder",
    "ServiceManager",
    "SubprocessRunner",
    "SystemdManager",
    "SysvManager",
    "UnitState",
    "default_pid_finder",
    "describe_command",
    "detect_manager_kind",
    "detect_systemd_unit",
    "installed_unit_files",
    "make_service_manager",
    "parse_show",
    "parse_timespan",
    "unit_state_from_show",
]
