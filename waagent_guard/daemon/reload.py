"""Applying a reloaded guard.toml to the running daemon (SIGHUP).

What can change in place does: the service manager and the agent's conf path
(`[agent]`), the log that is followed (`agent.log_path`), the doctor
(`[doctor]`, `[vmsnapshot]`), the log level, and everything the loop reads on
each pass (`[restart]`, `[verbose]`, `daemon.tick_seconds`, ...). What is bound
at start (the listening sockets, the state file, the /proc poll) is named in a
warning and applies at the next restart of the guard.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from waagent_guard.errors import ConfigError
from waagent_guard.logsetup import MESSAGE_IDS, parse_level
from waagent_guard.observe import resolve_conf_path
from waagent_guard.settings import Settings, load_settings

if TYPE_CHECKING:
    from waagent_guard.daemon.guard import Guard

log = logging.getLogger(__name__)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """Keys that changed but only take effect when the guard restarts."""
    changed = []
    if old.metrics != new.metrics:
        changed.append("[metrics]")
    if old.control != new.control:
        changed.append("[control]")
    for key in ("state_file", "proc_poll_seconds"):
        if getattr(old.daemon, key) != getattr(new.daemon, key):
            changed.append(f"daemon.{key}")
    return changed


def apply_settings(guard: Guard, new: Settings) -> None:
    from waagent_guard.service import make_service_manager

    old = guard.settings
    guard.settings = new
    if new.agent != old.agent:
        guard.manager = make_service_manager(
            new, guard.sysroot, processes=guard.find_processes
        )
        guard.conf_path = resolve_conf_path(guard.sysroot, new)
        if new.agent.log_path != old.agent.log_path and guard.tailer is not None:
            guard.tailer.close()
            guard.tailer = None  # reopened at the next tick, on the new path
    if (new.doctor, new.vmsnapshot, new.agent) != (old.doctor, old.vmsnapshot, old.agent):
        guard.restart_checks()
    if new.logging != old.logging:
        logging.getLogger().setLevel(parse_level(new.logging.level))
    later = restart_only_changes(old, new)
    if later:
        log.warning(
            "changed settings that apply at the next restart of the guard: %s", ", ".join(later)
        )


def reload(guard: Guard) -> None:
    """SIGHUP: load guard.toml again; an invalid file keeps the old settings."""
    guard.notifier.reloading("reloading configuration")
    try:
        settings = load_settings(guard.config_path)
    except ConfigError as error:
        log.error(
            "configuration not reloaded, keeping the old one: %s",
            error,
            extra={"MESSAGE_ID": MESSAGE_IDS["config_invalid"]},
        )
        guard.notifier.ready(f"config reload failed, old config kept: {error}"[:200])
        return
    apply_settings(guard, settings)
    log.info(
        "configuration reloaded from %s",
        guard.config_path,
        extra={"MESSAGE_ID": MESSAGE_IDS["config_reload"]},
    )
    guard.reconcile("reload")
    guard.notifier.ready(guard.status_line())
