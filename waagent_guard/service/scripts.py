"""Managers without systemd: SysV `service`, OpenRC `rc-service`, and configured commands.

These report less than systemd: the state comes from the status command's exit
code (LSB init-script codes; OpenRC's 32 = crashed), the main PID from the
injected process finder, and the restart policy is always `no` (nothing
restarts the agent but the guard). `reset_failed` and `daemon_reload` are
systemd notions and do nothing here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Optional

from waagent_guard.errors import ConfigError
from waagent_guard.execute import CommandRunner
from waagent_guard.service.manager import PidFinder, run_checked
from waagent_guard.service.state import UnitState
from waagent_guard.settings import AgentCommandSettings

log = logging.getLogger(__name__)

# LSB init script `status` exit codes (LSB core, "Init Script Actions"), plus
# OpenRC's 32 for a crashed service.
_RUNNING = 0
_STOPPED = 3
_DEAD = frozenset({1, 2, 32})


def _state_from_status(returncode: int, main_pid: Optional[int]) -> UnitState:
    if returncode == _RUNNING:
        return UnitState(active_state="active", sub_state="running", main_pid=main_pid)
    if returncode == _STOPPED:
        return UnitState(active_state="inactive", sub_state="dead", main_pid=main_pid)
    if returncode in _DEAD:
        return UnitState(active_state="failed", sub_state="dead", main_pid=main_pid)
    return UnitState(active_state="unknown", sub_state=f"status-{returncode}", main_pid=main_pid)


class InitScriptManager:
    """`<binary> NAME status|start|restart|stop`: the shape `service` and `rc-service` share."""

    name = "initscript"

    def __init__(
        self, service_name: str, runner: CommandRunner, *, binary: str, timeout: float = 30.0,
        pid_finder: Optional[PidFinder] = None,
    ) -> None:
        self.unit = service_name
        self._runner = runner
        self._binary = binary
        self._timeout = timeout
        self._pid_finder = pid_finder

    def _argv(self, verb: str) -> list[str]:
        return [self._binary, self.unit, verb]

    def state(self) -> UnitState:
        result = self._runner(self._argv("status"), timeout=self._timeout)
        main_pid = self._pid_finder() if self._pid_finder is not None else None
        return _state_from_status(result.returncode, main_pid)

    def _act(self, verb: str) -> None:
        log.info("%s %s via %s", verb, self.unit, self.name)
        run_checked(
            self._runner, self._argv(verb), timeout=self._timeout,
            hint=f"check `{self._binary} {self.unit} status` and /var/log/waagent.log",
        )

    def start(self) -> None:
        self._act("start")

    def restart(self) -> None:
        self._act("restart")

    def stop(self) -> None:
        self._act("stop")

    def system_state(self) -> Optional[str]:
        return None  # no notion of a booting system here: the guard may act any time

    def reset_failed(self) -> None:
        log.debug("%s has no failed state to reset", self.name)

    def daemon_reload(self) -> None:
        log.debug("%s has no unit files to reload", self.name)


class SysvManager(InitScriptManager):
    name = "sysv"

    def __init__(
        self, service_name: str, runner: CommandRunner, *, binary: str = "service",
        timeout: float = 30.0, pid_finder: Optional[PidFinder] = None,
    ) -> None:
        super().__init__(
            service_name, runner, binary=binary, timeout=timeout, pid_finder=pid_finder
        )


class OpenrcManager(InitScriptManager):
    name = "openrc"

    def __init__(
        self, service_name: str, runner: CommandRunner, *, binary: str = "rc-service",
        timeout: float = 30.0, pid_finder: Optional[PidFinder] = None,
    ) -> None:
        super().__init__(
            service_name, runner, binary=binary, timeout=timeout, pid_finder=pid_finder
        )


class CommandManager:
    """argv lists from `[agent.command]` (the demo, containers without an init system)."""

    name = "command"

    def __init__(
        self, commands: AgentCommandSettings, runner: CommandRunner, *, timeout: float = 30.0,
        pid_finder: Optional[PidFinder] = None, unit: str = "command",
    ) -> None:
        if not commands.start and not commands.restart:
            raise ConfigError(
                "agent.command.start: empty; with agent.manager = \"command\" set at least "
                "agent.command.start (and status, restart, stop) to argv lists in guard.toml"
            )
        self.unit = unit
        self._commands = commands
        self._runner = runner
        self._timeout = timeout
        self._pid_finder = pid_finder

    def _run(self, key: str, argv: Sequence[str]) -> None:
        log.info("running agent.command.%s", key)
        run_checked(
            self._runner, argv, timeout=self._timeout,
            hint=f"check agent.command.{key} in guard.toml",
        )

    def state(self) -> UnitState:
        main_pid = self._pid_finder() if self._pid_finder is not None else None
        if self._commands.status:
            result = self._runner(self._commands.status, timeout=self._timeout)
            running = result.returncode == 0
        elif self._pid_finder is not None:
            running = main_pid is not None
        else:
            return UnitState(active_state="unknown", sub_state="no-status-command")
        if running:
            return UnitState(active_state="active", sub_state="running", main_pid=main_pid)
        return UnitState(active_state="inactive", sub_state="dead", main_pid=main_pid)

    def start(self) -> None:
        if self._commands.start:
            self._run("start", self._commands.start)
        else:
            self._run("restart", self._commands.restart)

    def restart(self) -> None:
        if self._commands.restart:
            self._run("restart", self._commands.restart)
            return
        if self._commands.stop:
            self._run("stop", self._commands.stop)
        self._run("start", self._commands.start)

    def stop(self) -> None:
        if not self._commands.stop:
            raise ConfigError(
                "agent.command.stop: empty; set it to an argv list in guard.toml to let the "
                "guard stop the agent"
            )
        self._run("stop", self._commands.stop)

    def system_state(self) -> Optional[str]:
        return None  # no notion of a booting system here: the guard may act any time

    def reset_failed(self) -> None:
        log.debug("command manager has no failed state to reset")

    def daemon_reload(self) -> None:
        log.debug("command manager has no unit files to reload")
