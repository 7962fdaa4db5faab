"""The verbose lease inside the daemon: control requests and expiry.

`lease.py` holds the pure-ish lease operations (edit one line, durable state);
this module is the daemon's side: it answers `verbose_*` and `status` requests
from the control socket, restarts the agent when Logs.Verbose changed (a
"manual" restart, counted against the budget), and reverts the lease when it
expires, also after the guard's own restart or a reboot (the lease is on disk).
"""

from __future__ import annotations

import logging
import math
import pwd
from typing import TYPE_CHECKING, Any, Optional

from waagent_guard.errors import GuardError, UsageError
from waagent_guard.lease import begin_lease, end_lease, expired, lease_summary

if TYPE_CHECKING:
    from waagent_guard.daemon.control import PeerCredentials
    from waagent_guard.daemon.guard import Guard

log = logging.getLogger(__name__)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# Restarts on request (lease on/off/expiry) are not crashes and never spend the
# crash budget; they have their own limit so toggling cannot restart-loop the agent.
MANUAL_RESTART_LIMIT = 6
MANUAL_RESTART_WINDOW_SECONDS = 1800.0


def manual_restart_refusal(times: list[float], now: float) -> Optional[str]:
    """Why a restart on request is refused now (the separate limit), or None. Pure."""
    recent = [t for t in times if now - MANUAL_RESTART_WINDOW_SECONDS < t <= now]
    if len(recent) < MANUAL_RESTART_LIMIT:
        return None
    return (
        f"not restarting the agent: {len(recent)} restarts on request within "
        f"{MANUAL_RESTART_WINDOW_SECONDS:.0f} s (limit {MANUAL_RESTART_LIMIT}); the change "
        "in waagent.conf applies at the agent's next start"
    )


def restart_agent_manually(guard: Guard, why: str) -> Optional[str]:
    """Restart the agent so a conf change takes effect; returns an error text or None."""
    now = guard.clock()
    times = [t for t in guard.manual_restart_times if now - MANUAL_RESTART_WINDOW_SECONDS < t]
    refusal = manual_restart_refusal(times, now)
    if refusal is not None:
        log.warning("%s", refusal)
        return refusal
    try:
        guard.manager.restart()
    except GuardError as error:
        log.error("restart after %s failed: %s", why, error)
        return str(error)
    guard.manual_restart_times = [*times, now]
    guard.restarts_by_reason["manual"] = guard.restarts_by_reason.get("manual", 0) + 1
    return None


def run_pending_restart(guard: Guard) -> None:
    """The restart a control request asked for, after its answer was sent."""
    why, guard.pending_manual_restart = guard.pending_manual_restart, None
    if why is not None:
        restart_agent_manually(guard, why)
        guard.reconcile(why)


def expire_if_due(guard: Guard) -> None:
    """Revert an expired lease (called on every reconciliation)."""
    if not expired(guard.state, guard.clock()):
        return
    if guard.lease_retry_at is not None and guard.clock() < guard.lease_retry_at:
        return
    try:
        state, changed = end_lease(
            guard.conf_path, guard.state, at_expiry=True, sysroot=guard.sysroot
        )
    except GuardError as error:
        # Keep the lease (it is still owed) and try again at the next tick.
        guard.lease_retry_at = guard.clock() + guard.settings.daemon.tick_seconds
        log.error("cannot revert the expired verbose lease yet: %s", error)
        return
    guard.lease_retry_at = None
    guard.set_state(state)
    if changed and guard.observation is not None and guard.observation.daemon is not None:
        restart_agent_manually(guard, "the verbose lease expired")


def _duration(guard: Guard, request: dict[str, Any]) -> float:
    settings = guard.settings.verbose
    raw = request.get("duration")
    try:
        duration = float(settings.default_duration_seconds if raw is None else raw)
    except (TypeError, ValueError):
        raise UsageError(f"--for: not a number of seconds: {raw!r}") from None
    if not math.isfinite(duration) or duration <= 0 or duration > settings.max_duration_seconds:
        raise UsageError(
            f"--for: {duration:g}s is outside 1s..{settings.max_duration_seconds}s "
            "(verbose.max_duration_seconds)"
        )
    return duration


def handle_request(guard: Guard, request: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
    """Answer one control request (runs in the loop thread: no locking needed)."""
    op = request.get("op")
    who = f"{user_name(peer.uid)} (uid {peer.uid}, pid {peer.pid})"
    restart = bool(request.get("restart", True))
    if op == "verbose_on":
        state, changed = begin_lease(
            guard.conf_path,
            guard.state,
            guard.clock(),
            _duration(guard, request),
            str(request.get("reason", ""))[:500],
            who,
            state_path=guard.state_path,
            sysroot=guard.sysroot,
        )
        guard.set_state(state)
        return _answer(guard, changed, restart, "verbose on")
    if op == "verbose_off":
        state, changed = end_lease(guard.conf_path, guard.state, sysroot=guard.sysroot)
        guard.set_state(state)
        return _answer(guard, changed, restart, "verbose off")
    if op == "verbose_status":
        return {"ok": True, "lease": lease_summary(guard.state_path)}
    if op == "status":
        return {"ok": True, "status": guard.status_line()}
    return {"ok": False, "error": f"unknown request {op!r}"}


def _answer(guard: Guard, changed: bool, restart: bool, why: str) -> dict[str, Any]:
    """Answer now; the restart (if any) follows the answer in the same wake-up."""
    error = None
    requested = False
    if changed and restart:
        now = guard.clock()
        error = manual_restart_refusal(guard.manual_restart_times, now)
        if error is None:
            guard.pending_manual_restart = why
            requested = True
    if not requested:
        guard.reconcile(why)
    return {
        "ok": error is None,
        "error": error,
        "changed": changed,
        "restarted": requested,
        "restart": "requested" if requested else None,
        "lease": lease_summary(guard.state_path),
    }
