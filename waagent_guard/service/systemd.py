"""The agent's unit under systemd: state from `systemctl show`, actions via `systemctl`.

The unit is `walinuxagent.service` on Debian and Ubuntu and `waagent.service`
elsewhere; `detect_systemd_unit` looks for the unit file under the sysroot's
unit directories first (cheap, works on a mounted disk) and asks systemctl for
`LoadState` only when the files do not decide it.
"""

from __future__ import annotations

import logging

from waagent_guard.errors import ServiceError
from waagent_guard.execute import CommandResult, CommandRunner
from waagent_guard.service.manager import run_checked
from waagent_guard.service.state import UnitState, parse_show, unit_state_from_show
from waagent_guard.sysroot import AGENT_UNIT_NAMES, UNIT_DIRS, Sysroot

log = logging.getLogger(__name__)

SHOW_PROPERTIES = (
    "ActiveState", "SubState", "MainPID", "NRestarts", "Result", "ExecMainCode",
    "ExecMainStatus", "Restart", "RestartUSec", "StartLimitBurst", "StartLimitIntervalUSec",
    "LoadState", "UnitFileState", "ConditionResult", "DropInPaths", "Job",
)
# `systemctl is-system-running` answers; anything else (or a failure) is unknown.
SYSTEM_STATES = frozenset({
    "initializing", "starting", "running", "degraded", "maintenance", "stopping", "offline",
})


class SystemdManager:
    """One systemd unit, driven through `systemctl`."""

    name = "systemd"

    def __init__(
        self, unit: str, runner: CommandRunner, *, systemctl: str = "systemctl",
        timeout: float = 30.0,
    ) -> None:
        self.unit = unit
        self._runner = runner
        self._systemctl = systemctl
        self._timeout = timeout

    def _run(self, *arguments: str) -> CommandResult:
        return run_checked(
            self._runner, [self._systemctl, *arguments], timeout=self._timeout,
            hint=f"see `systemctl status {self.unit}` and `journalctl -u {self.unit}`",
        )

    def state(self) -> UnitState:
        result = self._run("show", "--no-pager", "-p", ",".join(SHOW_PROPERTIES), self.unit)
        return unit_state_from_show(parse_show(result.stdout))

    def system_state(self) -> str:
        """`systemctl is-system-running` (it exits non-zero unless `running`)."""
        result = self._runner([self._systemctl, "is-system-running"], timeout=self._timeout)
        state = result.stdout.strip()
        if state not in SYSTEM_STATES:
            raise ServiceError(
                f"`systemctl is-system-running` answered {state!r} (exit {result.returncode}); "
                "see `systemctl status`"
            )
        return state

    # Actions only enqueue a job (`--no-block`): a hung agent stop never blocks the
    # guard's loop (and its watchdog); the next look sees the job and verifies.
    def start(self) -> None:
        log.info("starting %s", self.unit)
        self._run("start", "--no-block", self.unit)

    def restart(self) -> None:
        log.info("restarting %s", self.unit)
        self._run("restart", "--no-block", self.unit)

    def stop(self) -> None:
        log.info("stopping %s", self.unit)
        self._run("stop", "--no-block", self.unit)

    def reset_failed(self) -> None:
        log.info("clearing the failed state of %s", self.unit)
        self._run("reset-failed", self.unit)

    def daemon_reload(self) -> None:
        log.info("reloading systemd's unit files")
        self._run("daemon-reload")


def installed_unit_files(sysroot: Sysroot) -> tuple[str, ...]:
    """Agent unit names with a unit file under the sysroot's unit directories."""
    return tuple(
        name for name in AGENT_UNIT_NAMES
        if any(sysroot.path(f"{directory}/{name}").is_file() for directory in UNIT_DIRS)
    )


def detect_systemd_unit(
    sysroot: Sysroot, runner: CommandRunner, *, systemctl: str = "systemctl",
    timeout: float = 30.0,
) -> str:
    """`walinuxagent.service` or `waagent.service`: the one that is installed (or loaded)."""
    present = installed_unit_files(sysroot)
    if len(present) == 1:
        return present[0]
    for name in AGENT_UNIT_NAMES:
        result = runner([systemctl, "show", "--no-pager", "-p", "LoadState", name], timeout=timeout)
        if result.returncode == 0 and parse_show(result.stdout).get("LoadState") == "loaded":
            return name
    if present:
        return present[0]
    names = " nor ".join(AGENT_UNIT_NAMES)
    raise ServiceError(
        f"no agent unit found: neither {names} is installed (looked in "
        f"{', '.join(UNIT_DIRS)} under {sysroot.root} and asked systemctl); install the "
        "agent, or set agent.unit in guard.toml"
    )
