"""Guide cause 2 (the agent): unit and processes, pidfile, auto-restart, versions, settings.

Pure functions `Facts -> CheckResult`; the runner attaches code, title and remedy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Callable

from waagent_guard.access import skip_reason
from waagent_guard.doctor.facts import Facts
from waagent_guard.doctor.findings import CheckResult, fail, ok, skipped, warn
from waagent_guard.settings import Settings

log = logging.getLogger(__name__)

# An ExtHandler may be missing for a moment after the daemon starts or self-updates.
EXTHANDLER_GRACE_SECONDS = 120.0


def _no_proc(facts: Facts) -> bool:
    return facts.offline and not facts.sysroot.proc.is_dir()


def _unit_text(facts: Facts) -> str:
    state = facts.unit.state
    if state is None:
        return f"{facts.unit.name}: state unknown" + (
            f" ({facts.unit.state_error})" if facts.unit.state_error else "")
    text = f"{facts.unit.name} is {state.active_state}/{state.sub_state or '-'}"
    return text + (f" (result {state.result})" if state.result else "")


def agent_running(facts: Facts, settings: Settings) -> CheckResult:
    observation = facts.observation
    daemon = observation.daemon
    state = facts.unit.state
    evidence: dict[str, object] = {"unit": facts.unit.name, "manager": facts.unit.manager}
    if state is not None:
        evidence.update(active_state=state.active_state, sub_state=state.sub_state,
                        main_pid=state.main_pid, result=state.result,
                        n_restarts=state.n_restarts)
    if daemon is None and _no_proc(facts):
        return skipped("offline: no /proc under the root, process state unknown", evidence)
    if daemon is None:
        why = _unit_text(facts) + "; no `waagent -daemon` process"
        if observation.pidfile.state == "other":
            why += f"; pidfile names PID {observation.pidfile.pid}, not the agent (WG-AGENT-003)"
        return fail(why, evidence)
    evidence["daemon_pid"] = daemon.pid
    if state is not None and state.active_state in ("failed", "inactive"):
        return warn(f"daemon PID {daemon.pid} runs, but {_unit_text(facts)}: started outside "
                    "its unit, systemd will not supervise it", evidence)
    return ok(f"daemon PID {daemon.pid} running; {_unit_text(facts)}", evidence)


def exthandler_running(facts: Facts, settings: Settings) -> CheckResult:
    observation = facts.observation
    if observation.lib.disable_agent:
        return skipped("disable_agent exists in Lib.Dir: the agent runs no extensions on purpose",
                       {"disable_agent": True})
    daemon = observation.daemon
    if daemon is None:
        return skipped("the daemon is not running (see WG-AGENT-001)")
    child = observation.exthandler
    if child is not None:
        return ok(f"ExtHandler PID {child.pid} running (version {child.version or 'unknown'})",
                  {"pid": child.pid, "version": child.version})
    lib_entry = facts.blocked_for(facts.sysroot.host_path(observation.lib.lib_dir))
    if lib_entry is not None and lib_entry.path == facts.sysroot.host_path(observation.lib.lib_dir):
        # disable_agent (no ExtHandler on purpose) lives in Lib.Dir.
        return skipped(skip_reason(lib_entry) + ": cannot tell whether the agent is disabled")
    age = None if daemon.start_time is None else facts.now - daemon.start_time
    evidence = {"daemon_pid": daemon.pid, "daemon_age_seconds": age}
    if age is not None and age < EXTHANDLER_GRACE_SECONDS:
        return warn(f"no ExtHandler yet; the daemon started {age:.0f} s ago", evidence)
    return fail("no `-run-exthandlers` process: extensions (backup included) are not handled",
                evidence)


def pidfile_fresh(facts: Facts, settings: Settings) -> CheckResult:
    pidfile = facts.observation.pidfile
    shown = facts.sysroot.host_path(pidfile.path)
    evidence = {"path": shown, "pid": pidfile.pid, "state": pidfile.state,
                "agent_treats_as_alive": pidfile.agent_sees_alive, "note": pidfile.note}
    if _no_proc(facts):
        return skipped("offline: no /proc under the root to compare the pidfile with", evidence)
    entry = facts.blocked_for(shown)
    if entry is not None:
        return skipped(skip_reason(entry), evidence)
    if pidfile.state == "other":
        if pidfile.other_cmdline is None and pidfile.note:  # 0, -1, a process group
            return fail(f"{shown} holds {pidfile.pid}: {pidfile.note}; remove it", evidence)
        cmdline = " ".join(pidfile.other_cmdline or ())[:200]
        return fail(f"{shown} names live PID {pidfile.pid} ({cmdline or 'unknown'}), not the "
                    "agent: the agent will exit at start ('Daemon is already running')",
                    {**evidence, "other_cmdline": cmdline})
    if pidfile.blocks_start:  # a zombie, or content that makes the agent's daemon fail
        return fail(f"{shown}: {pidfile.note}; remove it", evidence)
    if pidfile.state == "invalid":
        return warn(f"{shown} is not a valid PID file", evidence)
    if pidfile.state == "dead":
        return warn(f"{shown} names PID {pidfile.pid}, which is not running (left by a crash)",
                    evidence)
    return ok(f"{shown}: {pidfile.state}", evidence)


def autorestart_configured(facts: Facts, settings: Settings) -> CheckResult:
    unit = facts.unit
    evidence = {"unit": unit.name, "manager": unit.manager, "restart": unit.restart_policy,
                "unit_file": unit.unit_file, "set_by": list(unit.restart_sources)}
    if unit.manager in ("sysv", "openrc"):
        return warn(f"{unit.manager} does not restart {unit.name} after a crash; run the "
                    "waagent-guard daemon to supervise it", evidence)
    autorestart = unit.autorestart
    if autorestart is None:
        return skipped(f"no unit file for {unit.name} and no live unit state", evidence)
    if not autorestart:
        return fail(f"{unit.name} has Restart={unit.restart_policy}: after a crash the agent "
                    "stays down", evidence)
    return ok(f"{unit.name} has Restart={unit.restart_policy}", evidence)


def versions(facts: Facts, settings: Settings) -> CheckResult:
    observation = facts.observation
    blacklisted = [item for item in observation.lib.agent_versions if item.blacklisted]
    evidence: dict[str, object] = {
        "daemon_version": observation.daemon_version,
        "goal_state_version": observation.goal_state_version,
        "installed_updates": [item.version for item in observation.lib.agent_versions],
        "blacklisted": {item.version: item.reason for item in blacklisted},
    }
    if blacklisted:
        names = ", ".join(item.version for item in blacklisted)
        return warn(f"blacklisted agent version(s): {names}", evidence, blacklisted=names)
    lib_dir = facts.sysroot.host_path(observation.lib.lib_dir)
    entry = next((item for item in facts.blocked if item.input == lib_dir
                  and (item.path == lib_dir or "/WALinuxAgent-" in item.path)), None)
    if entry is not None:
        return skipped(skip_reason(entry) + ": cannot tell whether a version is blacklisted",
                       evidence)
    if observation.daemon_version is None and observation.goal_state_version is None:
        if observation.log_blocked is not None:
            return skipped(skip_reason(observation.log_blocked) + ": no agent process to ask "
                           "and the log could not be read", evidence)
        return warn("agent versions unknown: no agent process and no version line in the log",
                    evidence)
    return ok(f"daemon {observation.daemon_version or 'unknown'}, goal-state agent "
              f"{observation.goal_state_version or 'unknown'}", evidence)


def autoupdate(facts: Facts, settings: Settings) -> CheckResult:
    if facts.observation.conf_blocked is not None:
        return skipped(skip_reason(facts.observation.conf_blocked))
    config = facts.observation.config
    evidence = {"AutoUpdate.Enabled": config.autoupdate_enabled,
                "AutoUpdate.UpdateToLatestVersion": config.update_to_latest,
                "effective": config.auto_update}
    if not config.auto_update:
        return warn("agent auto-update is off: only the distro package updates the agent",
                    evidence)
    return ok("agent auto-update is on", evidence)


def logs_verbose(facts: Facts, settings: Settings) -> CheckResult:
    if facts.observation.conf_blocked is not None:
        return skipped(skip_reason(facts.observation.conf_blocked))
    config = facts.observation.config
    lease = facts.verbose_lease
    evidence: dict[str, object] = {"Logs.Verbose": config.logs_verbose, "lease": lease}
    if config.logs_verbose and not lease:
        return warn("Logs.Verbose=y with no lease: verbose logging stays on and fills "
                    "/var/log/waagent.log", evidence)
    if config.logs_verbose:
        return ok("Logs.Verbose=y under a waagent-guard lease (reverts by itself)", evidence)
    return ok("Logs.Verbose=n", evidence)


CHECKS: Mapping[str, Callable[[Facts, Settings], CheckResult]] = {
    "WG-AGENT-001": agent_running,
    "WG-AGENT-002": exthandler_running,
    "WG-AGENT-003": pidfile_fresh,
    "WG-AGENT-004": autorestart_configured,
    "WG-AGENT-005": versions,
    "WG-AGENT-006": autoupdate,
    "WG-AGENT-007": logs_verbose,
}
