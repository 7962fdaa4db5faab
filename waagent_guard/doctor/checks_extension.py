"""Guide cause 3 (the VMSnapshot backup extension): enabled, installed, version, state, status, log.

Pure functions `Facts -> CheckResult`; versions compare as integer tuples
(1.0.91.0 < 1.0.9220.0), never as strings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Callable, Optional

from waagent_guard.access import skip_reason
from waagent_guard.agent.extensions import ExtensionHandler, version_at_least
from waagent_guard.doctor.extfacts import scrub
from waagent_guard.doctor.facts import Facts
from waagent_guard.doctor.findings import CheckResult, fail, ok, skipped, warn
from waagent_guard.settings import Settings
from waagent_guard.sysroot import VMSNAPSHOT_NAME

log = logging.getLogger(__name__)

STUCK_TRANSITIONING_SECONDS = 3600.0
RECENT_SECONDS = 24 * 3600.0
VMSNAPSHOT_EVENT = "vmsnapshot_operation_failed"


def _handler(facts: Facts) -> Optional[ExtensionHandler]:
    # The agent's installed version; with none installed (a failed install or upgrade
    # left only NotInstalled/FailedUpgrade directories) the newest directory, whose
    # HandlerState then says what went wrong.
    return facts.observation.lib.newest_directory(VMSNAPSHOT_NAME)


def _not_installed(facts: Facts) -> CheckResult:
    """Skip for want of a handler: not installed, or Lib.Dir could not be listed."""
    entry = facts.blocked_for(facts.sysroot.host_path(facts.observation.lib.lib_dir))
    if entry is not None and entry.path == facts.sysroot.host_path(facts.observation.lib.lib_dir):
        return skipped(skip_reason(entry))
    return skipped("VMSnapshot is not installed (see WG-EXT-002)")


def _handler_blocked(facts: Facts, handler: ExtensionHandler, *relative: str) -> Optional[str]:
    paths = [facts.sysroot.host_path(handler.directory / name) for name in relative]
    entry = facts.blocked_for(*paths)
    return None if entry is None else skip_reason(entry)


def extensions_enabled(facts: Facts, settings: Settings) -> CheckResult:
    if facts.observation.conf_blocked is not None:
        return skipped(skip_reason(facts.observation.conf_blocked))
    enabled = facts.observation.config.extensions_enabled
    evidence = {"Extensions.Enabled": enabled}
    if not enabled:
        return fail("Extensions.Enabled=n: the agent runs no extension, so backup fails", evidence)
    return ok("Extensions.Enabled=y", evidence)


def vmsnapshot_installed(facts: Facts, settings: Settings) -> CheckResult:
    lib = facts.observation.lib
    lib_dir = facts.sysroot.host_path(lib.lib_dir)
    if not facts.observation.vmsnapshot_known and facts.observation.lib_blocked is not None:
        return skipped(skip_reason(facts.observation.lib_blocked), {"lib_dir": lib_dir})
    if not lib.exists:
        return warn(f"{lib_dir} does not exist: the agent never ran here", {"lib_dir": lib_dir})
    handler = _handler(facts)
    if handler is None:
        return warn(f"{VMSNAPSHOT_NAME} is not installed (the first backup installs it)",
                    {"lib_dir": lib_dir})
    return ok(f"{VMSNAPSHOT_NAME} {handler.version} installed",
              {"version": handler.version, "directory": facts.sysroot.host_path(handler.directory),
               "problems": list(handler.problems)})


def vmsnapshot_version(facts: Facts, settings: Settings) -> CheckResult:
    handler = _handler(facts)
    minimum = settings.vmsnapshot.min_version
    if handler is None:
        return _not_installed(facts)
    evidence = {"version": handler.version, "minimum": minimum}
    verdict = version_at_least(handler.version, minimum)
    if verdict is None:
        return warn(f"cannot compare version {handler.version!r} with {minimum}", evidence)
    if not verdict:
        return fail(f"VMSnapshot {handler.version} is older than {minimum}", evidence)
    return ok(f"VMSnapshot {handler.version} >= {minimum}", evidence)


def vmsnapshot_handler_state(facts: Facts, settings: Settings) -> CheckResult:
    handler = _handler(facts)
    if handler is None:
        return _not_installed(facts)
    why = _handler_blocked(facts, handler, "config/HandlerState", "config/HandlerStatus")
    if why is not None:
        return skipped(why)
    state = handler.handler_state or "unknown"
    evidence = {"handler_state": handler.handler_state, "handler_status": handler.handler_status,
                "heartbeat_age_seconds": handler.heartbeat_age_seconds}
    if state.lower() == "failedupgrade":
        return fail("VMSnapshot handler state FailedUpgrade: the extension is stuck", evidence,
                    handler_state=state)
    if state.lower() != "enabled":
        return warn(f"VMSnapshot handler state {state} (expected Enabled)", evidence,
                    handler_state=state)
    if (handler.handler_status or "").lower() == "notready":
        return warn("VMSnapshot handler is Enabled but reports NotReady", evidence,
                    handler_state=state)
    return ok(f"VMSnapshot handler Enabled ({handler.handler_status or 'no HandlerStatus'})",
              evidence)


def vmsnapshot_last_status(facts: Facts, settings: Settings) -> CheckResult:
    handler = _handler(facts)
    if handler is None:
        return _not_installed(facts)
    why = _handler_blocked(facts, handler, "status")
    if why is not None:
        return skipped(why)
    status = handler.status
    if status is None:
        return warn("VMSnapshot has written no status file yet")
    if not status.file_present:
        return warn(f"VMSnapshot has written no status file for sequence {status.sequence} yet "
                    "(the agent reports it as transitioning)",
                    {"sequence": status.sequence, "status": status.status})
    age = max(0.0, facts.now - status.mtime)
    evidence = {"sequence": status.sequence, "status": status.status, "code": status.code,
                "operation": status.operation,
                "message": scrub(status.message or "")[:500], "age_seconds": round(age)}
    what = f"{status.operation or 'operation'} (sequence {status.sequence})"
    if status.status == "error":
        return fail(f"VMSnapshot's last {what} failed: code {status.code}", evidence)
    if status.status == "warning":
        return warn(f"VMSnapshot's last {what} ended with a warning", evidence)
    if status.status == "transitioning" and age > STUCK_TRANSITIONING_SECONDS:
        return warn(f"VMSnapshot's {what} has been transitioning for {age / 60:.0f} min", evidence)
    return ok(f"VMSnapshot's last {what}: {status.status}", evidence)


def _iso(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


def vmsnapshot_log_failures(facts: Facts, settings: Settings) -> CheckResult:
    event = facts.observation.log.events.get(VMSNAPSHOT_EVENT)
    ext_log = facts.extension_log
    recent_event = event is not None and event.count > 0 and (
        event.last_seen is None or facts.now - event.last_seen.timestamp() < RECENT_SECONDS)
    evidence: dict[str, object] = {
        "waagent_log_failures": event.count if event else 0,
        "waagent_log_last_seen": _iso(event.last_seen) if event else None,
        "waagent_log_last_message": scrub(event.last_message or "") if event else None,
        "extension_log": ext_log.path,
        "extension_log_error_lines": ext_log.error_count,
        "extension_log_last_errors": list(ext_log.last_errors),
    }
    if recent_event or ext_log.error_count:
        parts = []
        if recent_event and event is not None:
            parts.append(f"{event.count} VMSnapshot failure(s) in waagent.log")
        if ext_log.error_count:
            parts.append(f"{ext_log.error_count} error line(s) in {ext_log.path}")
        return warn("; ".join(parts), evidence)
    entry = facts.blocked_for(facts.sysroot.host_path(facts.observation.log_path), ext_log.path)
    if entry is not None:
        return skipped(skip_reason(entry), evidence)
    if event is not None and event.count:
        return ok(f"VMSnapshot failures in waagent.log are older than "
                  f"{RECENT_SECONDS / 3600:.0f} h", evidence)
    return ok("no VMSnapshot failures in the recent logs", evidence)


CHECKS: Mapping[str, Callable[[Facts, Settings], CheckResult]] = {
    "WG-EXT-001": extensions_enabled,
    "WG-EXT-002": vmsnapshot_installed,
    "WG-EXT-003": vmsnapshot_version,
    "WG-EXT-004": vmsnapshot_handler_state,
    "WG-EXT-005": vmsnapshot_last_status,
    "WG-EXT-006": vmsnapshot_log_failures,
}
