"""What a reloaded guard.toml changes in the running daemon (SIGHUP). Pure.

`plan_reload(old, new)` compares two `Settings` and names what applies how:
- in place, by the `Guard` (`ReloadPlan` flags): a new service manager and conf
  path (`[agent]`), the followed log reopened (`agent.log_path`), a new doctor
  worker (`[doctor]`, `[vmsnapshot]`, `[agent]`), the log level (`[logging]`);
- in place, read on the next pass (`ReloadPlan.next_pass`): `[restart]`,
  `[verbose]`, `daemon.tick_seconds`, `daemon.debounce_seconds`, `daemon.log_batch_seconds`;
- at the guard's next start only (`ReloadPlan.at_next_start`, named in a
  warning): the listening sockets (`[metrics]`, `[control]`), the state file and
  the /proc poll (`daemon.state_file`, `daemon.proc_poll_seconds`).
Nothing here touches the daemon: the `Guard` applies the plan.

Imports: settings only.
"""

from __future__ import annotations

from dataclasses import dataclass

from waagent_guard.settings import Settings

# daemon.* keys bound when the guard starts (the others are read on each pass).
DAEMON_KEYS_AT_START = ("state_file", "proc_poll_seconds")


@dataclass(frozen=True)
class ReloadPlan:
    new_manager: bool = False  # [agent] changed: a new ServiceManager and conf path
    reopen_log: bool = False  # agent.log_path changed: follow the new file
    restart_doctor: bool = False  # [doctor], [vmsnapshot] or [agent] changed
    log_level: bool = False  # [logging] changed
    next_pass: tuple[str, ...] = ()  # changed keys read on each pass (nothing to do)
    at_next_start: tuple[str, ...] = ()  # changed keys that apply when the guard restarts

    @property
    def changed(self) -> bool:
        return bool(
            self.new_manager or self.reopen_log or self.restart_doctor or self.log_level
            or self.next_pass or self.at_next_start
        )


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    at_start: list[str] = []
    if old.metrics != new.metrics:
        at_start.append("[metrics]")
    if old.control != new.control:
        at_start.append("[control]")
    next_pass: list[str] = []
    for section in ("restart", "verbose"):
        if getattr(old, section) != getattr(new, section):
            next_pass.append(f"[{section}]")
    for key in type(old.daemon).model_fields:
        if getattr(old.daemon, key) == getattr(new.daemon, key):
            continue
        (at_start if key in DAEMON_KEYS_AT_START else next_pass).append(f"daemon.{key}")
    return ReloadPlan(
        new_manager=new.agent != old.agent,
        reopen_log=new.agent.log_path != old.agent.log_path,
        restart_doctor=(new.doctor, new.vmsnapshot, new.agent)
        != (old.doctor, old.vmsnapshot, old.agent),
        log_level=new.logging != old.logging,
        next_pass=tuple(next_pass),
        at_next_start=tuple(at_start),
    )
