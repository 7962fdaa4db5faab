"""Carrying out the restart policy: observation -> `AgentHealth` -> decision -> actions.

`policy.py` decides (pure); this module builds its input from an `Observation`,
runs the decision's steps through the service manager, counts and logs every
decision with its reason (a journal MESSAGE_ID per kind), and tells the loop
when to look again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from waagent_guard.errors import GuardError
from waagent_guard.logsetup import decision_fields
from waagent_guard.observe import Observation
from waagent_guard.policy import (
    GIVE_UP,
    NONE,
    STEP_REMOVE_STALE_PIDFILE,
    STEP_RESET_FAILED,
    STEP_RESTART,
    STEP_START,
    WAIT,
    AgentHealth,
    Decision,
    PolicyState,
    decide,
)

if TYPE_CHECKING:
    from waagent_guard.daemon.guard import Guard

log = logging.getLogger(__name__)

# After the guard acts, look again this soon to verify the agent came back.
VERIFY_AFTER_SECONDS = 1.0

_KIND_BY_ACTION = {WAIT: "wait", GIVE_UP: "give_up"}


def health_from(observation: Observation) -> AgentHealth:
    """The policy's view of one observation."""
    progress: list[float] = []
    if observation.log.last_record_time is not None:
        progress.append(observation.log.last_record_time.timestamp())
    if observation.lib.waagent_status_mtime is not None:
        progress.append(observation.lib.waagent_status_mtime)
    handler = observation.vmsnapshot
    transitioning = bool(
        handler is not None
        and handler.status is not None
        and handler.status.status == "transitioning"
    )
    return AgentHealth(
        now=observation.time,
        daemon_running=observation.daemon is not None,
        pidfile_state=observation.pidfile.state,
        pidfile_blocks_start=observation.pidfile.blocks_start,
        unit=observation.unit,
        unknown=observation.unknown,
        system_state=observation.system_state,
        snapshot_in_progress=observation.freeze_lock_age is not None,
        snapshot_age_seconds=observation.freeze_lock_age,
        vmsnapshot_transitioning=transitioning,
        last_progress_time=max(progress) if progress else None,
    )


def apply_policy(guard: Guard, observation: Observation) -> Optional[float]:
    """Decide and act; returns the monotonic time to look again (None: at the tick)."""
    previous = guard.policy_state
    decision, state = decide(health_from(observation), previous, guard.settings.restart)
    guard.decisions_by_action[decision.action] = (
        guard.decisions_by_action.get(decision.action, 0) + 1
    )
    _log_decision(guard, decision, previous)
    if decision.restarts:
        guard.restarts_by_reason[decision.reason] = (
            guard.restarts_by_reason.get(decision.reason, 0) + 1
        )
        _carry_out(guard, decision, observation)
    if state != previous:
        guard.save_policy_state(state)
    if decision.restarts:
        return guard.monotonic() + VERIFY_AFTER_SECONDS
    if decision.wait_until is not None:
        return guard.monotonic() + max(0.0, decision.wait_until - observation.time)
    return None


def _log_decision(guard: Guard, decision: Decision, previous: PolicyState) -> None:
    key = (decision.action, decision.reason)
    if decision.action == NONE:
        if (
            guard.last_decision is not None
            and guard.last_decision[0] != NONE
            and previous.down_since
        ):
            log.info(
                "the agent is running again", extra=decision_fields("recover", decision.reason)
            )
        guard.last_decision = key
        return
    if key == guard.last_decision and not decision.restarts:
        return  # the same wait or give-up as last time: said once is enough
    guard.last_decision = key
    kind = "restart" if decision.restarts else _KIND_BY_ACTION.get(decision.action, "wait")
    level = logging.ERROR if decision.action == GIVE_UP else logging.WARNING
    log.log(
        level,
        "%s: %s",
        decision.action,
        decision.message,
        extra=decision_fields(kind, decision.reason, WG_ACTION=decision.action),
    )


def _carry_out(guard: Guard, decision: Decision, observation: Observation) -> None:
    manager = guard.manager
    for step in decision.steps:
        try:
            if step == STEP_REMOVE_STALE_PIDFILE:
                pidfile = observation.pidfile
                path = pidfile.path
                if pidfile.state == "other":
                    what = f"stale pidfile {observation.sysroot.host_path(path)} (PID " \
                        f"{pidfile.pid} is not the agent)"
                else:
                    what = f"the crashed agent's leftover pidfile " \
                        f"{observation.sysroot.host_path(path)} (PID {pidfile.pid} is gone)"
                log.warning(
                    "removing %s%s", what, f": {pidfile.note}" if pidfile.note else "",
                    extra=decision_fields("stale_pidfile", decision.reason),
                )
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as error:
                    # Starting is still worth trying: a pidfile naming a dead PID does
                    # not stop the agent; one naming a live process will be reported.
                    log.error(
                        "cannot remove %s: %s",
                        observation.sysroot.host_path(path),
                        error.strerror or error,
                    )
            elif step == STEP_RESET_FAILED:
                manager.reset_failed()
            elif step == STEP_START:
                manager.start()
            elif step == STEP_RESTART:
                manager.restart()
        except (GuardError, OSError) as error:
            log.error(
                "%s failed: %s",
                step,
                error,
                extra=decision_fields("restart", decision.reason, WG_STEP=step),
            )
            return
