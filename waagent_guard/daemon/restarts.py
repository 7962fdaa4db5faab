"""`RestartKeeper`: carries out the restart policy (observation -> decision -> steps).

`policy.py` decides (pure); the keeper owns what the daemon remembers about
restarts: the policy's state (once, here; written to state.json through the
`StateFile`), the restart counts by reason and the decision counts by action
(the metrics), the last decision (so a repeated wait is logged once) and when
to look again. It builds the policy's input from an `Observation`, runs the
decision's steps through the `ServiceManager` via a step -> function table (an
unknown step is an error), and logs each decision with its reason (a journal
MESSAGE_ID per kind).

Imports: policy, observe, logsetup, service.manager, settings, daemon.state.
Never the `Guard`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Callable, Literal, Optional

from waagent_guard.daemon.state import StateFile
from waagent_guard.errors import GuardError
from waagent_guard.logsetup import decision_fields
from waagent_guard.observe import Observation
from waagent_guard.policy import (
    GIVE_UP,
    NONE,
    STEPS,
    Action,
    AgentHealth,
    Decision,
    PolicyState,
    Reason,
    RestartReason,
    Step,
    decide,
)
from waagent_guard.service.manager import ServiceManager
from waagent_guard.settings import RestartSettings

log = logging.getLogger(__name__)

# After the guard acts, look again this soon to verify the agent came back.
VERIFY_AFTER_SECONDS = 1.0

DecisionKind = Literal["restart", "wait", "give_up"]


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


# -- the steps ------------------------------------------------------------------------------

StepFunction = Callable[[ServiceManager, Decision, Observation], None]


def remove_stale_pidfile(
    manager: ServiceManager, decision: Decision, observation: Observation
) -> None:
    pidfile = observation.pidfile
    path = pidfile.path
    shown = observation.sysroot.host_path(path)
    if pidfile.state == "other":
        what = f"stale pidfile {shown} (PID {pidfile.pid} is not the agent)"
    else:
        what = f"the crashed agent's leftover pidfile {shown} (PID {pidfile.pid} is gone)"
    log.warning(
        "removing %s%s", what, f": {pidfile.note}" if pidfile.note else "",
        extra=decision_fields("stale_pidfile", decision.reason),
    )
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        # Starting is still worth trying: a pidfile naming a dead PID does not stop
        # the agent; one naming a live process will be reported.
        log.error("cannot remove %s: %s", shown, error.strerror or error)


def _reset_failed(manager: ServiceManager, decision: Decision, observation: Observation) -> None:
    manager.reset_failed()


def _start(manager: ServiceManager, decision: Decision, observation: Observation) -> None:
    manager.start()


def _restart(manager: ServiceManager, decision: Decision, observation: Observation) -> None:
    manager.restart()


STEP_FUNCTIONS: Mapping[Step, StepFunction] = {
    "remove_stale_pidfile": remove_stale_pidfile,
    "reset_failed": _reset_failed,
    "start": _start,
    "restart": _restart,
}
assert set(STEP_FUNCTIONS) == set(STEPS), "every policy step needs a function"


class UnknownStepError(LookupError):
    """A decision named a step this table has no function for (a bug, never skipped)."""


def carry_out(
    manager: ServiceManager,
    decision: Decision,
    observation: Observation,
    steps: Mapping[Step, StepFunction] = STEP_FUNCTIONS,
) -> bool:
    """Run the decision's steps in order; stops at the first failure (logged). True: all ran."""
    for step in decision.steps:
        function = steps.get(step)
        if function is None:
            raise UnknownStepError(
                f"restart step {step!r} of decision {decision.action} has no function "
                f"(known: {', '.join(steps)})"
            )
        try:
            function(manager, decision, observation)
        except (GuardError, OSError) as error:
            log.error(
                "%s failed: %s", step, error,
                extra=decision_fields("restart", decision.reason, WG_STEP=step),
            )
            return False
    return True


# -- the keeper -----------------------------------------------------------------------------

_KIND_BY_ACTION: Mapping[Action, DecisionKind] = {"wait": "wait", "give_up": "give_up"}


def load_policy_state(store: StateFile) -> PolicyState:
    try:
        return PolicyState.from_dict(store.document.restart_policy, str(store.path))
    except GuardError as error:
        log.warning("restart history ignored: %s", error)
        return PolicyState()


class RestartKeeper:
    """The restart side of the daemon; `Guard` calls `apply()` once per reconciliation."""

    def __init__(
        self,
        manager: ServiceManager,
        settings: RestartSettings,
        store: StateFile,
        *,
        monotonic: Callable[[], float],
    ) -> None:
        self.manager = manager
        self.settings = settings
        self._store = store
        self._monotonic = monotonic
        self.state = load_policy_state(store)
        # Counted across the guard's own restarts (state.json), so a counter never hides one.
        self.restarts_by_reason: dict[str, int] = dict(store.document.restart_counts)
        self.decisions_by_action: dict[str, int] = {}
        self.last_decision: Optional[tuple[Action, Reason]] = None
        # Monotonic time to decide again before the tick (verify, backoff, wait); None: the tick.
        self.next_wake: Optional[float] = None

    @property
    def gave_up(self) -> bool:
        return self.state.gave_up_since is not None

    def apply(self, observation: Observation) -> Decision:
        """Decide, act, count, log, persist; sets `next_wake`."""
        previous = self.state
        decision, state = decide(health_from(observation), previous, self.settings)
        self.decisions_by_action[decision.action] = (
            self.decisions_by_action.get(decision.action, 0) + 1
        )
        self._log(decision, previous)
        if decision.restarts:
            self.restarts_by_reason[decision.reason] = (
                self.restarts_by_reason.get(decision.reason, 0) + 1
            )
        if state != previous or decision.restarts:
            self._save(state)
        if decision.restarts:
            carry_out(self.manager, decision, observation)
            self.next_wake = self._monotonic() + VERIFY_AFTER_SECONDS
        elif decision.wait_until is not None:
            self.next_wake = self._monotonic() + max(0.0, decision.wait_until - observation.time)
        else:
            self.next_wake = None
        return decision

    def count_restart(self, reason: RestartReason) -> None:
        """A restart made outside the policy (on request: "manual"); counted and persisted."""
        self.restarts_by_reason[reason] = self.restarts_by_reason.get(reason, 0) + 1
        self._save(self.state)

    def _save(self, state: PolicyState) -> None:
        self.state = state
        self._store.update(
            restart_policy=state.to_dict(), restart_counts=dict(self.restarts_by_reason)
        )

    def _log(self, decision: Decision, previous: PolicyState) -> None:
        key = (decision.action, decision.reason)
        if decision.action == NONE:
            if self.last_decision is not None and self.last_decision[0] != NONE \
                    and previous.down_since:
                log.info(
                    "the agent is running again",
                    extra=decision_fields("recover", decision.reason),
                )
            self.last_decision = key
            return
        if key == self.last_decision and not decision.restarts:
            return  # the same wait or give-up as last time: said once is enough
        self.last_decision = key
        kind = "restart" if decision.restarts else _KIND_BY_ACTION.get(decision.action, "wait")
        level = logging.ERROR if decision.action == GIVE_UP else logging.WARNING
        log.log(
            level, "%s: %s", decision.action, decision.message,
            extra=decision_fields(kind, decision.reason, WG_ACTION=decision.action),
        )
