"""The `ServiceManager` interface every implementation satisfies, and shared pieces.

A manager answers "what state is the agent's unit in" and carries out start,
restart, stop (and, on systemd, reset-failed and daemon-reload). Commands that
fail raise `ServiceError` with the command, its exit code and its last stderr
line, so the daemon can log it and the CLI can print it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from waagent_guard.errors import ServiceError
from waagent_guard.execute import CommandResult, CommandRunner, describe_command
from waagent_guard.service.state import UnitState

log = logging.getLogger(__name__)

# Returns the PID of the running agent daemon, or None (see agent/process.py).
PidFinder = Callable[[], Optional[int]]


class ServiceManager(Protocol):
    name: str  # "systemd", "sysv", "openrc" or "command"
    unit: str  # the unit or service the manager acts on

    def state(self) -> UnitState: ...
    def system_state(self) -> Optional[str]: ...  # is-system-running; None: no such notion
    def start(self) -> None: ...
    def restart(self) -> None: ...
    def stop(self) -> None: ...
    def reset_failed(self) -> None: ...
    def daemon_reload(self) -> None: ...


@dataclass(frozen=True)
class Binaries:
    """Programs the managers run; tests point them at fakes under tests/fakes."""

    systemctl: str = "systemctl"
    service: str = "service"
    rc_service: str = "rc-service"


def run_checked(
    runner: CommandRunner, argv: Sequence[str], *, timeout: float, hint: str
) -> CommandResult:
    """Run `argv`; a non-zero exit raises ServiceError ending with `hint` (what to look at)."""
    result = runner(argv, timeout=timeout)
    if result.returncode != 0:
        detail = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
        raise ServiceError(
            f"`{describe_command(argv)}` failed (exit {result.returncode}): {detail}; {hint}"
        )
    return result


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
