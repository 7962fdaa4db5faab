"""`waagent-guard status`: the agent's health on one screen, or as stable JSON.

`status_document()` is pure (Observation -> dict) and defines the JSON schema
documented in docs/status.md; `render_text()` is the five-second screen. Exit code:
0 healthy, 1 degraded, 2 down, 4 unknown (the agent's state could not be read).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from typing import Any, Optional

from waagent_guard import __version__
from waagent_guard.context import Context
from waagent_guard.observe import Assessment, Observation, assess, observe
from waagent_guard.service.factory import reading_manager
from waagent_guard.timeutil import format_duration, iso_utc

log = logging.getLogger(__name__)

SCHEMA = "waagent-guard/status/v1"


def _iso(moment: Optional[datetime]) -> Optional[str]:
    if moment is None:
        return None
    return iso_utc(moment.timestamp())


def _process(process: Any) -> Optional[dict[str, Any]]:
    if process is None:
        return None
    return {
        "pid": process.pid,
        "version": process.version,
        "start_time": iso_utc(process.start_time),
        "rss_bytes": process.rss_bytes,
        "cpu_seconds": process.cpu_seconds,
    }


def status_document(
    observation: Observation,
    assessment: Assessment,
    *,
    lease: Optional[dict[str, Any]] = None,
    guard: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The stable JSON document (schema waagent-guard/status/v1)."""
    config = observation.config
    conf_known = observation.conf_blocked is None
    unit = observation.unit
    handler = observation.vmsnapshot
    snapshot_blocked = observation.blocked_for(handler.directory) if handler is not None else None
    status = handler.status if handler is not None else None
    counts = dict(observation.log.counts_by_level)
    events = {
        name: {"count": stat.count, "last_seen": _iso(stat.last_seen)}
        for name, stat in sorted(observation.log.events.items())
        if stat.count
    }
    return {
        "schema": SCHEMA,
        "generated_at": iso_utc(observation.time),
        "guard_version": __version__,
        "root": str(observation.sysroot.root),
        "health": assessment.health,
        "reasons": list(assessment.reasons),
        "agent": {
            "running": observation.daemon is not None,
            "daemon_version": observation.daemon_version,
            "goal_state_version": observation.goal_state_version,
            "daemon": _process(observation.daemon),
            "exthandler_running": observation.exthandler is not None,
            "exthandler": _process(observation.exthandler),
            "disabled": observation.lib.disable_agent,
            "pidfile": {
                "path": observation.sysroot.host_path(observation.pidfile.path),
                "pid": observation.pidfile.pid,
                "state": observation.pidfile.state,
                # The agent's own check at start (os.kill(int(text), 0)): true makes a
                # new daemon exit with "Daemon is already running".
                "agent_treats_as_alive": observation.pidfile.agent_sees_alive,
                "note": observation.pidfile.note,
            },
            "unit": None
            if unit is None
            else {
                "name": observation.unit_name,
                "manager": observation.manager_name,
                "active_state": unit.active_state,
                "sub_state": unit.sub_state,
                "main_pid": unit.main_pid,
                "n_restarts": unit.n_restarts,
                "result": unit.result,
                "restart": unit.restart,
                "autorestart": unit.autorestart,
            },
            "unit_error": observation.unit_error,
        },
        "config": {
            "path": observation.sysroot.host_path(observation.conf_path),
            "exists": observation.conf_exists,
            # null when waagent.conf exists but could not be read: unknown, not the defaults
            "readable": conf_known,
            "logs_verbose": config.logs_verbose if conf_known else None,
            "extensions_enabled": config.extensions_enabled if conf_known else None,
            "auto_update": config.auto_update if conf_known else None,
            "autoupdate_enabled": config.autoupdate_enabled if conf_known else None,
            "update_to_latest_version": config.update_to_latest if conf_known else None,
            "http_proxy": (
                f"{config.http_proxy_host}:{config.http_proxy_port}"
                if config.http_proxy_host
                else None
            ),
            "os_enable_firewall": config.os_enable_firewall,
            "lib_dir": config.lib_dir,
            "extension_log_dir": config.extension_log_dir,
            "problems": list(observation.conf.problems),
        },
        "verbose_lease": lease,
        "vmsnapshot": {
            # null when Lib.Dir could not be read: unknown is not "not installed"
            "installed": (handler is not None) if observation.vmsnapshot_known else None,
            "unreadable": None if snapshot_blocked is None else str(snapshot_blocked),
            "version": handler.version if handler is not None else None,
            "version_ok": observation.vmsnapshot_version_ok,
            "min_version": observation.min_vmsnapshot_version,
            "handler_state": handler.handler_state if handler is not None else None,
            "status": status.status if status is not None else None,
            "operation": status.operation if status is not None else None,
            "code": status.code if status is not None else None,
            "snapshot_in_progress": observation.snapshot_in_progress,
        },
        "extensions": [
            {
                "name": item.name,
                "version": item.version,
                "handler_state": item.handler_state,
                "status": item.status.status if item.status is not None else None,
                "active": item.active,
            }
            for item in observation.lib.handlers
        ],
        "wireserver_endpoint": observation.lib.wireserver_endpoint,
        "log": {
            "path": observation.sysroot.host_path(observation.log_path),
            "readable": observation.log_blocked is None,
            "last_heartbeat": _iso(observation.log.last_heartbeat),
            "last_record": _iso(observation.log.last_record_time),
            # null when the log could not be read: unknown, not zero
            "errors_total": counts.get("ERROR", 0) if observation.log_blocked is None else None,
            "warnings_total": (
                counts.get("WARNING", 0) if observation.log_blocked is None else None
            ),
            "counts_by_level": counts,
            "events": events,
        },
        "guard": guard,
        "problems": list(observation.lib.problems),
        "unreadable": list(observation.unreadable),
    }


def _ago(moment: Optional[str], now: float) -> str:
    if moment is None:
        return "never seen"
    stamp = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
    return f"{moment} ({format_duration(now - stamp)} ago)"


def _onoff(value: Optional[bool]) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def render_text(document: dict[str, Any], now: float) -> str:
    """The screen a person reads in five seconds."""
    agent = document["agent"]
    config = document["config"]
    snapshot = document["vmsnapshot"]
    logdoc = document["log"]
    health = document["health"]
    lines = [f"waagent-guard status: {health.upper() if health != 'healthy' else health}"]
    if document["unreadable"]:
        lines[0] += "  (could not read everything: run as root for the full picture)"
    if agent["running"]:
        daemon = agent["daemon"]
        lines.append(
            f"  agent        running (pid {daemon['pid']})  daemon {agent['daemon_version'] or '?'}"
            f"  goal-state {agent['goal_state_version'] or '?'}"
        )
    else:
        lines.append(f"  agent        NOT RUNNING (pidfile {agent['pidfile']['state']})")
    exthandler = agent["exthandler"]
    lines.append(
        "  exthandler   "
        + (f"running (pid {exthandler['pid']})" if exthandler else "not running")
        + ("  [agent disabled]" if agent["disabled"] else "")
    )
    unit = agent["unit"]
    if unit is not None:
        lines.append(
            f"  unit         {unit['name']} {unit['active_state']}/{unit['sub_state']}"
            f"  restarts itself: {'yes' if unit['autorestart'] else 'no'}"
            f" (Restart={unit['restart']})"
        )
    elif agent["unit_error"]:
        lines.append(f"  unit         unknown: {agent['unit_error']}")
    if not config["exists"]:
        lines.append(
            f"  config       {config['path']} MISSING (the agent's built-in defaults apply)"
        )
    elif not config["readable"]:
        lines.append(f"  config       {config['path']} unreadable (run as root)")
    else:
        lines.append(
            f"  config       {config['path']}  verbose {_onoff(config['logs_verbose'])}"
            f"  extensions {_onoff(config['extensions_enabled'])}"
            f"  auto-update {_onoff(config['auto_update'])}"
        )
    lease = document.get("verbose_lease")
    if lease:
        lines.append(
            f"  verbose      leased until {lease.get('expires_at_iso')}"
            f" ({lease.get('reason') or 'no reason'})"
        )
    if snapshot["installed"] is None:
        lines.append("  vmsnapshot   unknown (Lib.Dir could not be read; run as root)")
    elif snapshot["installed"]:
        verdict = {True: "ok", False: "TOO OLD", None: "unknown"}[snapshot["version_ok"]]
        lines.append(
            f"  vmsnapshot   {snapshot['version']} ({verdict}; minimum {snapshot['min_version']})"
            f"  state {snapshot['handler_state'] or '?'}"
            f"  last {snapshot['operation'] or 'status'}: {snapshot['status'] or 'none'}"
            + ("  [snapshot in progress]" if snapshot["snapshot_in_progress"] else "")
            + ("  [state unreadable: run as root]" if snapshot.get("unreadable") else "")
        )
    else:
        lines.append("  vmsnapshot   not installed (installed by the first backup)")
    if not logdoc.get("readable", True):
        lines.append(f"  heartbeat    unknown ({logdoc['path']} unreadable; run as root)")
    else:
        lines.append(f"  heartbeat    {_ago(logdoc['last_heartbeat'], now)}")
    recent = ", ".join(f"{name} x{item['count']}" for name, item in logdoc["events"].items())
    if logdoc.get("readable", True):
        lines.append(
            f"  log          {logdoc['errors_total']} errors,"
            f" {logdoc['warnings_total']} warnings recently"
            + (f"; {recent}" if recent else "")
        )
    guard = document.get("guard") or {}
    if guard.get("gave_up"):
        lines.append(
            f"  guard        GAVE UP restarting the agent at {guard.get('gave_up_since_iso')}: "
            f"{guard.get('gave_up_reason') or 'restart budget exhausted'}"
        )
    if document["reasons"]:
        lines.append("why:")
        lines.extend(f"  - {reason}" for reason in document["reasons"])
    if document["unreadable"]:
        lines.append("could not read:")
        lines.extend(f"  - {item}" for item in document["unreadable"])
    return "\n".join(lines) + "\n"


def _lease(context: Context) -> Optional[dict[str, Any]]:
    try:
        from waagent_guard.lease import lease_summary
    except ImportError:  # pragma: no cover - lease module is part of the package
        return None
    settings = context.settings()
    return lease_summary(context.sysroot.path(settings.daemon.state_file))


def guard_summary(state_path: Any) -> dict[str, Any]:
    """The daemon's restart state from its state file: whether (when, why) it gave up."""
    from waagent_guard.errors import GuardError
    from waagent_guard.lease import load_state
    from waagent_guard.policy import PolicyState

    try:
        policy = PolicyState.from_dict(
            load_state(state_path, quarantine=False).restart_policy, str(state_path)
        )
    except GuardError as error:
        return {"gave_up": None, "error": str(error)}
    return {
        "gave_up": policy.gave_up_since is not None,
        "gave_up_since": policy.gave_up_since,
        "gave_up_since_iso": iso_utc(policy.gave_up_since) if policy.gave_up_since else None,
        "gave_up_reason": policy.gave_up_reason,
        "recent_restarts": len(policy.restart_times),
    }


def run(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings()
    manager = reading_manager(settings, context.sysroot)
    observation = observe(context.sysroot, settings, manager=manager)
    assessment = assess(observation)
    document = status_document(
        observation, assessment, lease=_lease(context),
        guard=guard_summary(context.sysroot.path(settings.daemon.state_file)),
    )
    if args.json:
        json.dump(document, context.stdout, indent=2, sort_keys=False)
        context.stdout.write("\n")
    else:
        context.stdout.write(render_text(document, observation.time))
    return assessment.exit_code

