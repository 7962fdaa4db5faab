"""The restart policy: given what the guard saw and when, what to do about the agent. Pure.

`decide(health, state, settings)` takes an `AgentHealth` (facts of one
observation, the clock included as `now`), the `PolicyState` the previous call
returned (restart history, backoff, give-up) and `RestartSettings`, and returns
a `Decision` with the updated state. Nothing here reads files, runs commands or
looks at a clock; the daemon carries out `decision.steps` and persists the
state with `to_dict`/`from_dict`.

Before any rule: an observation the guard could not make (an error listing
/proc, EMFILE, the service manager failing) is `unknown`: nothing is decided,
counted or given up, and no state changes; while systemd is booting or shutting
down, or the agent's unit has a job queued or is (de)activating, the guard
waits and looks again (systemd is already acting on the agent).

Rules, in the order they apply while the agent daemon is down:
1. restarting disabled (`restart.enabled = false`) -> none;
2. after a give-up -> give_up again, until the agent has stayed up for
   `healthy_reset_seconds` (someone fixed it);
3. the unit restarts itself (Restart=always/on-failure/..., start limit not
   hit) -> wait RestartSec + grace, then verify; still down -> act;
4. a VMSnapshot snapshot in progress -> defer, unless older than
   `snapshot_overdue_seconds`;
5. budget: at most `max_restarts` guard restarts per `window_seconds`, past it
   give up; and never a third restart within 300 s, the agent's own rule for
   blacklisting a version it had to relaunch 3 times (update.py,
   CHILD_LAUNCH_RESTART_MAX / CHILD_LAUNCH_INTERVAL);
6. exponential backoff between consecutive guard restarts;
7. otherwise act: start / restart / reset-failed then start / remove a stale
   pidfile then start.
A restart the policy decides is recorded in the returned state at once, so a
restart that then fails still counts against the budget. Restarts on request
(a verbose lease) never count: they are not crashes. Once the agent is seen
running again, by any means, an earlier give-up clears at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal, Optional, Union, get_args

from waagent_guard.errors import InputError
from waagent_guard.service.state import UnitState
from waagent_guard.settings import RestartSettings

log = logging.getLogger(__name__)

# Actions (the metric label of waagent_guard_decisions_total{action}).
Action = Literal[
    "none", "wait", "start", "restart", "reset_failed_then_start",
    "remove_stale_pidfile_then_start", "defer_snapshot", "give_up", "restart_stuck",
]
NONE: Final = "none"
WAIT: Final = "wait"
START: Final = "start"
RESTART: Final = "restart"
RESET_FAILED_THEN_START: Final = "reset_failed_then_start"
REMOVE_STALE_PIDFILE_THEN_START: Final = "remove_stale_pidfile_then_start"
DEFER_SNAPSHOT: Final = "defer_snapshot"
GIVE_UP: Final = "give_up"
RESTART_STUCK: Final = "restart_stuck"
DECISION_ACTIONS: tuple[Action, ...] = get_args(Action)
RESTARTING_ACTIONS: frozenset[Action] = frozenset(
    {START, RESTART, RESET_FAILED_THEN_START, REMOVE_STALE_PIDFILE_THEN_START, RESTART_STUCK}
)

# Steps the daemon carries out, in order, for a restarting decision.
Step = Literal["remove_stale_pidfile", "reset_failed", "start", "restart"]
STEP_REMOVE_STALE_PIDFILE: Final = "remove_stale_pidfile"
STEP_RESET_FAILED: Final = "reset_failed"
STEP_START: Final = "start"
STEP_RESTART: Final = "restart"
STEPS: tuple[Step, ...] = get_args(Step)

# Why the guard restarted the agent: the bounded label set of
# waagent_guard_restarts_total{reason}. "manual" is a restart on request
# (control socket, `verbose on`), counted by the lease keeper.
RestartReason = Literal[
    "process_gone", "unit_failed", "unit_inactive", "start_limit_hit", "stale_pidfile",
    "stuck", "manual",
]
RESTART_REASONS: tuple[RestartReason, ...] = get_args(RestartReason)
# Why the guard did not restart (decisions other than a restart).
HoldReason = Literal[
    "healthy", "restart_disabled", "waiting_for_systemd", "snapshot_in_progress", "backoff",
    "rate_limited", "budget_exhausted", "observation_unknown", "system_busy", "unit_busy",
]
HOLD_REASONS: tuple[HoldReason, ...] = get_args(HoldReason)
Reason = Union[RestartReason, HoldReason]
# `systemctl is-system-running` values during which the guard never acts.
SYSTEM_BUSY_STATES = frozenset({"initializing", "starting", "stopping"})
# ActiveState values of a unit systemd is acting on.
UNIT_BUSY_STATES = frozenset({"activating", "deactivating", "reloading"})
# How soon to look again while systemd is busy with the agent or the system.
BUSY_RECHECK_SECONDS = 2.0
DECISION_REASONS: tuple[Reason, ...] = RESTART_REASONS + HOLD_REASONS

# The agent blacklists a version relaunched 3 times within 300 s; the guard
# never restarts it that fast either.
AGENT_RESTART_LIMIT = 3
AGENT_RESTART_WINDOW_SECONDS = 300.0
# systemd's RestartSec= default when the unit does not report one.
SYSTEMD_DEFAULT_RESTART_SECONDS = 0.1


@dataclass(frozen=True)
class AgentHealth:
    """The facts of one observation the policy needs (built by the daemon)."""

    now: float
    daemon_running: bool
    pidfile_state: str = "absent"  # "absent" | "agent" | "dead" | "other" | "invalid"
    unit: Optional[UnitState] = None
    # The agent's own pidfile check would make a new daemon exit at once (a live
    # other PID, a zombie, `0`, `-1`): the pidfile must go before a start.
    pidfile_blocks_start: bool = False
    # None: the observation is complete. Otherwise why it is not (the processes or
    # the unit could not be read): the agent's state is unknown.
    unknown: Optional[str] = None
    system_state: Optional[str] = None  # `systemctl is-system-running`, when known
    snapshot_in_progress: bool = False  # the VMSnapshot freeze lock file exists
    snapshot_age_seconds: Optional[float] = None  # age of the freeze lock
    vmsnapshot_transitioning: bool = False  # VMSnapshot's enable status is transitioning
    last_progress_time: Optional[float] = None  # newest log record / status rewrite (epoch)


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between calls; persisted by the daemon as JSON."""

    restart_times: tuple[float, ...] = ()  # guard restarts, oldest first, recent ones only
    backoff_level: int = 0  # consecutive guard restarts not followed by a stable agent
    last_restart_time: Optional[float] = None
    gave_up_since: Optional[float] = None
    healthy_since: Optional[float] = None
    down_since: Optional[float] = None
    waiting_for_systemd_until: Optional[float] = None
    snapshot_since: Optional[float] = None  # first seen in progress (when its age is unknown)
    gave_up_reason: Optional[str] = None  # the sentence logged with the give-up

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {item.name: getattr(self, item.name) for item in fields(self)}
        data["restart_times"] = list(self.restart_times)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "state.json") -> PolicyState:
        """Inverse of `to_dict`; unknown keys are ignored, wrong types raise InputError."""
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: policy state must be a JSON object; delete it to reset")
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name not in data or data[item.name] is None:
                continue
            raw = data[item.name]
            if item.name == "restart_times":
                if not isinstance(raw, list) or not all(_is_number(t) for t in raw):
                    raise _bad_key(source, item.name, "a list of epoch seconds", raw)
                values[item.name] = tuple(float(t) for t in raw)
            elif item.name == "gave_up_reason":
                if not isinstance(raw, str):
                    raise _bad_key(source, item.name, "a string or null", raw)
                values[item.name] = raw[:1000]
            elif item.name == "backoff_level":
                if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                    raise _bad_key(source, item.name, "an integer >= 0", raw)
                values[item.name] = raw
            else:
                if not _is_number(raw):
                    raise _bad_key(source, item.name, "epoch seconds or null", raw)
                values[item.name] = float(raw)
        return cls(**values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad_key(source: str, key: str, expected: str, got: Any) -> InputError:
    return InputError(
        f"{source}: {key}: expected {expected} (got {got!r}); delete the file to reset the "
        "restart history"
    )


@dataclass(frozen=True)
class Decision:
    """What to do now: `action`, a stable `reason` code, a sentence for people."""

    action: Action
    reason: Reason
    message: str
    wait_until: Optional[float] = None  # when to decide again (wait, defer, backoff, ...)
    steps: tuple[Step, ...] = ()  # for restarting actions, what to run in order

    @property
    def restarts(self) -> bool:
        return self.action in RESTARTING_ACTIONS


def hold(health: AgentHealth) -> Optional[Decision]:
    """The wait before any rule: unknown observation, systemd busy with the system or
    the agent's unit. None when the rules may run."""
    if health.unknown is not None:
        return Decision(
            WAIT, "observation_unknown",
            f"the agent's state is unknown ({health.unknown}); not acting on it",
            health.now + BUSY_RECHECK_SECONDS,
        )
    if health.system_state in SYSTEM_BUSY_STATES:
        return Decision(
            WAIT, "system_busy",
            f"systemd is {health.system_state} (is-system-running); not acting on the agent "
            "until it is done",
            health.now + BUSY_RECHECK_SECONDS,
        )
    unit = health.unit
    # `activating (auto-restart)` is systemd's RestartSec= wait, with no job yet: the
    # waiting_for_systemd rule handles it (with a deadline), not this one.
    if unit is not None and (
        unit.job or (unit.active_state in UNIT_BUSY_STATES and unit.sub_state != "auto-restart")
    ):
        what = f"a {unit.job} job queued" if unit.job else unit.active_state
        return Decision(
            WAIT, "unit_busy",
            f"systemd is acting on the agent's unit ({what}); looking again shortly",
            health.now + BUSY_RECHECK_SECONDS,
        )
    return None


def decide(
    health: AgentHealth, state: PolicyState, settings: RestartSettings
) -> tuple[Decision, PolicyState]:
    """The decision for `health` and the state to pass to the next call."""
    if health.unknown is not None:
        held = hold(health)
        assert held is not None
        return held, state  # nothing seen: nothing counted, nothing changed
    state = _normalise(state, health, settings)
    if health.daemon_running:
        return _while_running(health, state, settings)
    return _while_down(health, state, settings)


def _normalise(state: PolicyState, health: AgentHealth, settings: RestartSettings) -> PolicyState:
    """Forget restarts no rule looks at; clamp times ahead of `now` (clock set back)."""
    now = health.now
    horizon = now - max(float(settings.window_seconds), AGENT_RESTART_WINDOW_SECONDS)
    times = tuple(min(t, now) for t in state.restart_times if t > horizon)

    def clamp(value: Optional[float]) -> Optional[float]:
        return None if value is None else min(value, now)

    snapshot_since: Optional[float] = None
    if health.snapshot_in_progress or health.vmsnapshot_transitioning:
        snapshot_since = state.snapshot_since if state.snapshot_since is not None else now
    return replace(
        state,
        restart_times=times,
        last_restart_time=clamp(state.last_restart_time),
        gave_up_since=clamp(state.gave_up_since),
        healthy_since=clamp(state.healthy_since),
        down_since=clamp(state.down_since),
        snapshot_since=clamp(snapshot_since),
    )


def _while_running(
    health: AgentHealth, state: PolicyState, settings: RestartSettings
) -> tuple[Decision, PolicyState]:
    now = health.now
    healthy_since = state.healthy_since if state.healthy_since is not None else now
    state = replace(
        state, healthy_since=healthy_since, down_since=None, waiting_for_systemd_until=None
    )
    stable_at = healthy_since + settings.healthy_reset_seconds
    wakes: list[float] = []
    message = "agent daemon running"
    if state.gave_up_since is not None:
        # Someone (a person, systemd) brought it back: crash protection resumes now,
        # with only the restarts the agent's own 300 s rule still looks at.
        state = replace(
            state, gave_up_since=None, gave_up_reason=None,
            restart_times=tuple(
                t for t in state.restart_times if t > now - AGENT_RESTART_WINDOW_SECONDS
            ),
        )
        message += "; running again after the guard gave up: restarting resumes"
    if state.backoff_level:
        if now >= stable_at:
            state = replace(state, backoff_level=0)
            message += f"; stable for {settings.healthy_reset_seconds} s, backoff reset"
        else:
            wakes.append(stable_at)
    if settings.enabled and settings.stuck_restart and health.last_progress_time is not None:
        silent = now - health.last_progress_time
        held = hold(health)
        if silent >= settings.stuck_after_seconds and held is not None:
            return held, state
        if silent >= settings.stuck_after_seconds:
            return _attempt(
                RESTART_STUCK, "stuck",
                f"agent alive but its log and status have not advanced for {silent:.0f} s",
                health, state, settings,
            )
        wakes.append(health.last_progress_time + settings.stuck_after_seconds)
    return Decision(NONE, "healthy", message, min(wakes) if wakes else None), state


def _while_down(
    health: AgentHealth, state: PolicyState, settings: RestartSettings
) -> tuple[Decision, PolicyState]:
    now = health.now
    state = replace(
        state, down_since=state.down_since if state.down_since is not None else now,
        healthy_since=None,
    )
    if not settings.enabled:
        return Decision(
            NONE, "restart_disabled",
            "agent daemon down; restarting is off (restart.enabled = false)",
        ), state
    held = hold(health)
    if held is not None:
        return held, state
    if state.gave_up_since is not None:
        return _give_up(state, settings, "gave up earlier"), state
    action, reason, message = _classify(health)
    unit = health.unit
    # systemd restarts the unit itself: give it RestartSec plus grace before
    # acting, or the guard and systemd both start it. A pidfile naming another
    # live process makes the agent exit at once, so waiting cannot help.
    if (
        unit is not None and unit.autorestart and not unit.start_limit_hit
        and not _pidfile_blocks_for_good(health)
    ):
        until = state.waiting_for_systemd_until
        if until is None:
            restart_seconds = unit.restart_seconds
            if restart_seconds is None or not math.isfinite(restart_seconds):
                restart_seconds = SYSTEMD_DEFAULT_RESTART_SECONDS
            until = now + restart_seconds + settings.grace_seconds
            state = replace(state, waiting_for_systemd_until=until)
        if now < until:
            return Decision(
                WAIT, "waiting_for_systemd",
                f"{message}; the unit restarts itself (Restart={unit.restart}), "
                f"checking again in {until - now:.1f} s",
                until,
            ), state
        message += "; systemd did not bring it back"
    return _attempt(action, reason, message, health, state, settings)


def _pidfile_blocks_for_good(health: AgentHealth) -> bool:
    """A pidfile that keeps every new daemon from starting until someone removes it: a
    live other process, `0`/`-1`, content that crashes the agent's check. A zombie does
    not count: systemd reaps its own main process at once, so its restart will find the
    PID gone (the guard waiting for systemd must not preempt it)."""
    return health.pidfile_state == "other" or (
        health.pidfile_blocks_start and health.pidfile_state == "invalid"
    )


def _classify(health: AgentHealth) -> tuple[Action, RestartReason, str]:
    """(action, reason code, sentence) for an agent whose daemon is not running."""
    unit = health.unit
    if health.pidfile_state == "other":
        return (
            REMOVE_STALE_PIDFILE_THEN_START, "stale_pidfile",
            "agent down and its pidfile names another live process (the agent refuses to "
            "start while the pidfile names a live PID)",
        )
    if unit is not None and unit.start_limit_hit:
        return (
            RESET_FAILED_THEN_START, "start_limit_hit",
            "agent down and systemd refuses to start it (start limit hit)",
        )
    if health.pidfile_state == "dead":
        # A crash: the killed daemon left its pidfile naming its own dead PID.
        action: Action = START if unit is not None and unit.active_state in ("failed", "inactive") \
            else RESTART
        return action, "process_gone", "agent daemon process gone (its pidfile names a dead PID)"
    if unit is not None and unit.active_state == "failed":
        return START, "unit_failed", f"agent unit failed (result {unit.result or 'unknown'})"
    if unit is not None and unit.active_state == "inactive":
        return START, "unit_inactive", "agent unit inactive"
    return RESTART, "process_gone", "agent daemon process gone"


def _give_up(state: PolicyState, settings: RestartSettings, why: str) -> Decision:
    return Decision(
        GIVE_UP, "budget_exhausted",
        f"GIVING UP restarting the agent ({why}: {settings.max_restarts} restarts within "
        f"{settings.window_seconds} s); fix the cause (journalctl, /var/log/waagent.log) "
        "and start it; restarts resume as soon as it runs again",
    )


def _attempt(
    action: Action, reason: RestartReason, message: str, health: AgentHealth, state: PolicyState,
    settings: RestartSettings,
) -> tuple[Decision, PolicyState]:
    """Apply the snapshot, budget, rate and backoff rules; restart if they all allow."""
    now = health.now
    if health.snapshot_in_progress or health.vmsnapshot_transitioning:
        since = state.snapshot_since if state.snapshot_since is not None else now
        age = health.snapshot_age_seconds if health.snapshot_age_seconds is not None \
            else now - since
        if age < settings.snapshot_overdue_seconds:
            return Decision(
                DEFER_SNAPSHOT, "snapshot_in_progress",
                f"{message}; a VMSnapshot snapshot is in progress ({age:.0f} s), "
                "restarting after it ends",
                now + settings.snapshot_overdue_seconds - age,
            ), state
        message += f"; snapshot overdue ({age:.0f} s), restarting anyway"
    in_window = [t for t in state.restart_times if t > now - settings.window_seconds]
    if len(in_window) >= settings.max_restarts:
        decision = _give_up(state, settings, message)
        return decision, replace(state, gave_up_since=now, gave_up_reason=decision.message)
    recent = [t for t in state.restart_times if t > now - AGENT_RESTART_WINDOW_SECONDS]
    if len(recent) >= AGENT_RESTART_LIMIT - 1:
        until = recent[-(AGENT_RESTART_LIMIT - 1)] + AGENT_RESTART_WINDOW_SECONDS
        return Decision(
            WAIT, "rate_limited",
            f"{message}; waiting {until - now:.0f} s: never {AGENT_RESTART_LIMIT} restarts "
            f"within {AGENT_RESTART_WINDOW_SECONDS:.0f} s (the agent's own limit)",
            until,
        ), state
    if state.backoff_level > 0 and state.last_restart_time is not None:
        delay = backoff_delay(state.backoff_level, settings)
        ready = state.last_restart_time + delay
        if now < ready:
            return Decision(
                WAIT, "backoff",
                f"{message}; backing off {delay:g} s after the last restart", ready,
            ), state
    state = replace(
        state,
        restart_times=(*state.restart_times, now),
        last_restart_time=now,
        backoff_level=state.backoff_level + 1,
    )
    return Decision(action, reason, message, None, _steps(action, health)), state


def backoff_delay(level: int, settings: RestartSettings) -> float:
    """Seconds to wait after the `level`-th consecutive restart: initial, doubling, capped."""
    if level <= 0:
        return 0.0
    doublings = min(level - 1, 64)  # past the cap anyway; keeps the float finite
    return float(min(settings.backoff_initial_seconds * 2.0**doublings,
                     settings.backoff_max_seconds))


def _steps(action: Action, health: AgentHealth) -> tuple[Step, ...]:
    steps: list[Step] = []
    if health.pidfile_state in ("other", "dead") or health.pidfile_blocks_start:
        steps.append(STEP_REMOVE_STALE_PIDFILE)
    if health.unit is not None and health.unit.start_limit_hit:
        steps.append(STEP_RESET_FAILED)
    steps.append(STEP_RESTART if action in (RESTART, RESTART_STUCK) else STEP_START)
    return tuple(steps)
