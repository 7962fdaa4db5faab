"""The restart policy: every branch, the budget, backoff, and a property over any history."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from waagent_guard.errors import InputError
from waagent_guard.policy import (
    DECISION_ACTIONS,
    DECISION_REASONS,
    RESTART_REASONS,
    AgentHealth,
    Decision,
    PolicyState,
    backoff_delay,
    decide,
)
from waagent_guard.service import UnitState
from waagent_guard.settings import RestartSettings

DEFAULTS = RestartSettings()
NO_RESTART_FAILED = UnitState(active_state="failed", sub_state="failed", result="signal",
                              restart="no")
INACTIVE = UnitState(active_state="inactive", sub_state="dead", restart="no")
AUTO_RESTARTING = UnitState(active_state="activating", sub_state="auto-restart",
                            result="signal", restart="always", restart_seconds=5.0)
START_LIMIT_HIT = UnitState(active_state="failed", sub_state="failed", result="start-limit-hit",
                            restart="always", restart_seconds=5.0)
RUNNING = UnitState(active_state="active", sub_state="running", main_pid=10, restart="always",
                    restart_seconds=5.0)


def down(now: float, unit: Optional[UnitState] = None, **facts: Any) -> AgentHealth:
    return AgentHealth(now=now, daemon_running=False, unit=unit, **facts)


def up(now: float, **facts: Any) -> AgentHealth:
    return AgentHealth(now=now, daemon_running=True, unit=RUNNING, **facts)


def run(
    health: AgentHealth, state: Optional[PolicyState] = None,
    settings: RestartSettings = DEFAULTS,
) -> tuple[Decision, PolicyState]:
    return decide(health, state or PolicyState(), settings)


# -- single decisions --

def test_running_agent_needs_nothing_and_starts_its_healthy_clock() -> None:
    decision, state = run(up(100.0))
    assert (decision.action, decision.reason) == ("none", "healthy")
    assert decision.wait_until is None
    assert state.healthy_since == 100.0
    assert state.down_since is None


def test_restarting_disabled_only_reports() -> None:
    decision, state = run(down(5.0), settings=RestartSettings(enabled=False))
    assert (decision.action, decision.reason) == ("none", "restart_disabled")
    assert "restart.enabled = false" in decision.message
    assert state.down_since == 5.0
    assert state.restart_times == ()


def test_gone_process_without_unit_state_is_restarted_at_once() -> None:
    decision, state = run(down(10.0))
    assert (decision.action, decision.reason) == ("restart", "process_gone")
    assert decision.steps == ("restart",)
    assert decision.restarts
    assert state.restart_times == (10.0,)
    assert state.backoff_level == 1
    assert state.last_restart_time == 10.0


def test_failed_unit_without_restart_policy_is_started() -> None:
    decision, _ = run(down(10.0, NO_RESTART_FAILED))
    assert (decision.action, decision.reason, decision.steps) == (
        "start", "unit_failed", ("start",)
    )
    assert "result signal" in decision.message


def test_inactive_unit_is_started() -> None:
    decision, _ = run(down(10.0, INACTIVE))
    assert (decision.action, decision.reason) == ("start", "unit_inactive")


def test_active_unit_whose_daemon_is_gone_is_restarted() -> None:
    unit = replace(RUNNING, restart="no")
    decision, _ = run(down(10.0, unit))
    assert (decision.action, decision.reason) == ("restart", "process_gone")


def test_unit_that_restarts_itself_is_given_restart_sec_plus_grace() -> None:
    decision, state = run(down(100.0, AUTO_RESTARTING))
    assert (decision.action, decision.reason) == ("wait", "waiting_for_systemd")
    assert decision.wait_until == 110.0  # RestartSec 5 + grace 5
    assert state.waiting_for_systemd_until == 110.0
    assert state.restart_times == ()
    decision, state = run(down(105.0, AUTO_RESTARTING), state)
    assert decision.action == "wait"
    assert decision.wait_until == 110.0


def test_unit_that_came_back_by_itself_needs_nothing() -> None:
    _, state = run(down(100.0, AUTO_RESTARTING))
    decision, state = run(up(106.0), state)
    assert decision.action == "none"
    assert state.waiting_for_systemd_until is None
    assert state.restart_times == ()


def test_unit_still_down_after_the_wait_is_acted_on() -> None:
    _, state = run(down(100.0, AUTO_RESTARTING))
    still_failed = replace(AUTO_RESTARTING, active_state="failed", sub_state="failed")
    decision, state = run(down(110.0, still_failed), state)
    assert (decision.action, decision.reason) == ("start", "unit_failed")
    assert "systemd did not bring it back" in decision.message
    assert state.restart_times == (110.0,)


def test_unknown_restart_sec_waits_systemds_default() -> None:
    unit = replace(AUTO_RESTARTING, restart_seconds=None)
    decision, _ = run(down(0.0, unit), settings=RestartSettings(grace_seconds=1.0))
    assert decision.wait_until == pytest.approx(1.1)
    unit = replace(AUTO_RESTARTING, restart_seconds=float("inf"))
    decision, _ = run(down(0.0, unit), settings=RestartSettings(grace_seconds=1.0))
    assert decision.wait_until == pytest.approx(1.1)


def test_start_limit_hit_is_reset_before_starting() -> None:
    decision, _ = run(down(10.0, START_LIMIT_HIT))
    assert (decision.action, decision.reason) == ("reset_failed_then_start", "start_limit_hit")
    assert decision.steps == ("reset_failed", "start")


def test_pidfile_naming_another_process_is_removed_without_waiting_for_systemd() -> None:
    inactive_always = replace(INACTIVE, restart="always", restart_seconds=5.0)
    decision, _ = run(down(10.0, inactive_always, pidfile_state="other"))
    assert (decision.action, decision.reason) == (
        "remove_stale_pidfile_then_start", "stale_pidfile"
    )
    assert decision.steps == ("remove_stale_pidfile", "start")
    assert "another live process" in decision.message


def test_pidfile_naming_a_dead_process_waits_for_systemd_first() -> None:
    decision, state = run(down(10.0, AUTO_RESTARTING, pidfile_state="dead"))
    assert decision.action == "wait"
    decision, _ = run(down(20.0, AUTO_RESTARTING, pidfile_state="dead"), state)
    assert decision.reason == "process_gone"
    assert decision.steps[0] == "remove_stale_pidfile"
    assert "dead PID" in decision.message


def test_kill_9_next_to_debians_agent_is_a_crash_not_a_stale_pidfile() -> None:
    """Issue 10 item 4: the killed daemon leaves its pidfile naming its dead PID; the
    unit (Restart=no) is failed. That is `process_gone`, removing the pidfile a step."""
    failed = UnitState(active_state="failed", sub_state="failed", result="signal", restart="no")
    decision, _ = run(down(10.0, failed, pidfile_state="dead"))
    assert decision.reason == "process_gone"
    assert decision.steps == ("remove_stale_pidfile", "start")
    active = replace(RUNNING, restart="no")  # still active: the process is just gone
    decision, _ = run(down(10.0, active, pidfile_state="dead"))
    assert decision.reason == "process_gone"
    assert decision.steps == ("remove_stale_pidfile", "restart")


def test_a_zombie_in_the_pidfile_waits_for_systemd_then_goes_before_the_start() -> None:
    """A zombie is dead, and the agent's own check would take it as running: the pidfile
    goes before the guard's start. But under a unit that restarts itself the zombie is
    systemd's unreaped main process: the guard waits for systemd first (the e2e
    ensure-autorestart test caught the guard preempting systemd's own restart)."""
    facts = {"pidfile_state": "dead", "pidfile_blocks_start": True}
    decision, state = run(down(10.0, AUTO_RESTARTING, **facts))
    assert decision.reason == "waiting_for_systemd"
    decision, _ = run(down(20.0, AUTO_RESTARTING, **facts), state)
    assert decision.reason == "process_gone"
    assert decision.steps[0] == "remove_stale_pidfile"


@pytest.mark.parametrize("pidfile_state", ["other", "invalid"])
def test_a_pidfile_that_blocks_for_good_does_not_wait_for_systemd(pidfile_state: str) -> None:
    decision, _ = run(down(10.0, AUTO_RESTARTING, pidfile_state=pidfile_state,
                           pidfile_blocks_start=True))
    assert decision.restarts and decision.steps[0] == "remove_stale_pidfile"


# -- issue 14 item 1 / issue 10 item 1: never act on unknown or while systemd is busy --

@pytest.mark.parametrize("unit", [None, INACTIVE, NO_RESTART_FAILED, RUNNING])
def test_an_unknown_observation_never_restarts_counts_or_gives_up(
    unit: Optional[UnitState],
) -> None:
    state = PolicyState(restart_times=(1.0, 2.0, 3.0))  # a restart now would give up
    for now in (10.0, 400.0, 5000.0):
        decision, new = run(down(now, unit, unknown="cannot list /proc: Too many open files"),
                            state)
        assert (decision.action, decision.reason) == ("wait", "observation_unknown")
        assert new == state
        assert "unknown" in decision.message and decision.wait_until is not None


@pytest.mark.parametrize("system", ["starting", "initializing", "stopping"])
def test_the_guard_never_acts_while_systemd_is_booting_or_stopping(system: str) -> None:
    decision, state = run(down(10.0, INACTIVE, system_state=system))
    assert (decision.action, decision.reason) == ("wait", "system_busy")
    assert state.restart_times == ()
    assert decision.wait_until is not None and decision.wait_until > 10.0
    decision, _ = run(down(12.0, INACTIVE, system_state="running"), state)
    assert decision.reason == "unit_inactive"  # booted: now it acts


@pytest.mark.parametrize(
    "unit",
    [
        replace(INACTIVE, job="start"),  # Debian's agent queued behind multi-user.target
        UnitState(active_state="activating", sub_state="start", restart="no"),
        UnitState(active_state="deactivating", sub_state="stop-sigterm", restart="no"),
        replace(RUNNING, job="restart"),
    ],
)
def test_the_guard_waits_while_the_agents_unit_has_a_job_or_is_changing(unit: UnitState) -> None:
    decision, state = run(down(10.0, unit, system_state="running"))
    assert (decision.action, decision.reason) == ("wait", "unit_busy")
    assert state.restart_times == ()


def test_stale_pidfile_with_start_limit_hit_also_resets_the_unit() -> None:
    decision, _ = run(down(10.0, START_LIMIT_HIT, pidfile_state="other"))
    assert decision.steps == ("remove_stale_pidfile", "reset_failed", "start")


def test_agent_pidfile_or_invalid_pidfile_is_left_alone() -> None:
    for pidfile in ("agent", "invalid", "absent"):
        decision, _ = run(down(10.0, INACTIVE, pidfile_state=pidfile))
        assert decision.action == "start"


# -- VMSnapshot --

def test_snapshot_in_progress_defers_the_restart() -> None:
    decision, state = run(down(1000.0, INACTIVE, snapshot_in_progress=True,
                               snapshot_age_seconds=600.0))
    assert (decision.action, decision.reason) == ("defer_snapshot", "snapshot_in_progress")
    assert decision.wait_until == 1000.0 + 3600.0 - 600.0
    assert state.restart_times == ()


def test_overdue_snapshot_no_longer_blocks() -> None:
    decision, _ = run(down(9000.0, INACTIVE, snapshot_in_progress=True,
                           snapshot_age_seconds=3600.0))
    assert decision.action == "start"
    assert "snapshot overdue" in decision.message


def test_transitioning_snapshot_without_age_is_timed_from_first_sight() -> None:
    decision, state = run(down(0.0, INACTIVE, vmsnapshot_transitioning=True))
    assert decision.action == "defer_snapshot"
    assert state.snapshot_since == 0.0
    decision, state = run(down(3599.0, INACTIVE, vmsnapshot_transitioning=True), state)
    assert decision.action == "defer_snapshot"
    decision, state = run(down(3600.0, INACTIVE, vmsnapshot_transitioning=True), state)
    assert decision.action == "start"


def test_snapshot_ending_forgets_when_it_was_first_seen() -> None:
    _, state = run(down(0.0, INACTIVE, vmsnapshot_transitioning=True))
    decision, state = run(down(10.0, INACTIVE), state)
    assert decision.action == "start"
    assert state.snapshot_since is None


# -- budget, rate and backoff --

def test_backoff_doubles_up_to_the_ceiling() -> None:
    delays = [backoff_delay(level, DEFAULTS) for level in range(0, 9)]
    assert delays == [0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert backoff_delay(10_000, DEFAULTS) == 300.0


def test_second_restart_waits_out_the_backoff() -> None:
    _, state = run(down(0.0))
    decision, state = run(down(1.0), state)
    assert (decision.action, decision.reason, decision.wait_until) == ("wait", "backoff", 5.0)
    decision, state = run(down(5.0), state)
    assert decision.action == "restart"
    assert state.backoff_level == 2


def test_backoff_doubles_between_restarts() -> None:
    settings = RestartSettings(backoff_initial_seconds=400.0, backoff_max_seconds=5000.0,
                               max_restarts=10, window_seconds=100_000)
    times: list[float] = []
    state = PolicyState()
    now = 0.0
    while len(times) < 4:
        decision, state = run(down(now), state, settings)
        if decision.restarts:
            times.append(now)
            now += 1.0
        else:
            assert decision.reason == "backoff"
            assert decision.wait_until is not None
            now = decision.wait_until
    assert [b - a for a, b in zip(times, times[1:])] == [400.0, 800.0, 1600.0]


def test_never_three_restarts_within_300_seconds() -> None:
    _, state = run(down(0.0))
    _, state = run(down(5.0), state)
    decision, state = run(down(15.0), state)
    assert (decision.action, decision.reason) == ("wait", "rate_limited")
    assert decision.wait_until == 300.0
    assert "the agent's own limit" in decision.message
    decision, state = run(down(300.0), state)
    assert decision.action == "restart"
    assert state.restart_times == (0.0, 5.0, 300.0)


def test_past_the_budget_the_guard_gives_up_loudly_and_stays_given_up() -> None:
    state = PolicyState()
    for now in (0.0, 5.0, 300.0):
        decision, state = run(down(now), state)
        assert decision.action == "restart"
    decision, state = run(down(600.0), state)
    assert (decision.action, decision.reason) == ("give_up", "budget_exhausted")
    assert "GIVING UP" in decision.message
    assert state.gave_up_since == 600.0
    decision, state = run(down(5000.0), state)  # the window has passed: still given up
    assert decision.action == "give_up"
    assert state.gave_up_since == 600.0


def test_budget_window_slides() -> None:
    settings = RestartSettings(max_restarts=2, window_seconds=1000, backoff_initial_seconds=0)
    _, state = run(down(0.0), None, settings)
    decision, state = run(down(500.0), state, settings)
    assert decision.action == "restart"
    decision, _ = run(down(1001.0), state, settings)
    assert decision.action == "restart"
    decision, _ = run(down(999.0), state, settings)
    assert decision.action == "give_up"


def test_give_up_clears_as_soon_as_the_agent_is_seen_running() -> None:
    """Issue 10 item 3: started by hand or by systemd, crash protection resumes at once."""
    state = PolicyState(restart_times=(0.0, 5.0, 300.0), backoff_level=3,
                        last_restart_time=300.0, gave_up_since=600.0,
                        gave_up_reason="GIVING UP ...")
    decision, state = run(up(700.0), state)
    assert decision.action == "none"
    assert "restarting resumes" in decision.message
    assert (state.gave_up_since, state.gave_up_reason) == (None, None)
    assert state.restart_times == ()  # none within the agent's 300 s rule
    decision, _ = run(down(800.0), state)
    assert decision.restarts  # the next real crash is repaired (after the backoff)
    decision, state = run(up(2500.0), state)
    assert state.backoff_level == 0
    assert "backoff reset" in decision.message


def test_the_give_up_keeps_its_reason_for_status() -> None:
    state = PolicyState(restart_times=(0.0, 400.0, 800.0))
    decision, state = run(down(900.0), state)
    assert decision.action == "give_up"
    assert state.gave_up_reason == decision.message
    assert PolicyState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_backoff_level_resets_after_a_stable_period() -> None:
    _, state = run(down(0.0))
    _, state = run(up(2.0), state)
    decision, state = run(up(100.0), state)
    assert state.backoff_level == 1
    assert decision.wait_until == 2.0 + 1800.0
    _, state = run(up(1802.0), state)
    assert state.backoff_level == 0


def test_a_clock_set_back_does_not_block_restarts_forever() -> None:
    state = PolicyState(restart_times=(10_000.0,), last_restart_time=10_000.0, backoff_level=1,
                        healthy_since=20_000.0)
    decision, state = run(down(100.0), state)
    assert state.restart_times == (100.0,)
    assert decision.wait_until == 105.0


# -- stuck --

def test_stuck_detection_is_off_by_default() -> None:
    decision, _ = run(up(100_000.0, last_progress_time=0.0))
    assert decision.action == "none"


def test_stuck_agent_is_restarted_when_enabled() -> None:
    settings = RestartSettings(stuck_restart=True, stuck_after_seconds=600)
    decision, state = run(up(1000.0, last_progress_time=300.0), settings=settings)
    assert (decision.action, decision.reason, decision.steps) == (
        "restart_stuck", "stuck", ("restart",)
    )
    assert state.restart_times == (1000.0,)


def test_progressing_agent_is_checked_again_when_it_could_become_stuck() -> None:
    settings = RestartSettings(stuck_restart=True, stuck_after_seconds=600)
    decision, _ = run(up(1000.0, last_progress_time=900.0), settings=settings)
    assert decision.action == "none"
    assert decision.wait_until == 1500.0


def test_stuck_restart_waits_for_a_snapshot() -> None:
    settings = RestartSettings(stuck_restart=True, stuck_after_seconds=600)
    decision, _ = run(up(1000.0, last_progress_time=0.0, snapshot_in_progress=True,
                         snapshot_age_seconds=5.0), settings=settings)
    assert decision.action == "defer_snapshot"


# -- persistence --

def test_state_survives_a_json_round_trip() -> None:
    state = PolicyState(restart_times=(1.5, 2.25), backoff_level=2, last_restart_time=2.25,
                        gave_up_since=None, healthy_since=7.0, down_since=None,
                        waiting_for_systemd_until=9.5, snapshot_since=3.0)
    text = json.dumps(state.to_dict())
    assert PolicyState.from_dict(json.loads(text)) == state


def test_state_from_dict_ignores_unknown_keys_and_nulls() -> None:
    state = PolicyState.from_dict({"future_key": 1, "gave_up_since": None, "down_since": 4})
    assert state == PolicyState(down_since=4.0)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"restart_times": "1,2"}, "restart_times"),
        ({"restart_times": [1, "x"]}, "restart_times"),
        ({"backoff_level": -1}, "backoff_level"),
        ({"backoff_level": True}, "backoff_level"),
        ({"gave_up_since": "yesterday"}, "gave_up_since"),
        ({"down_since": float("nan")}, "down_since"),
    ],
)
def test_state_from_dict_names_the_bad_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(InputError, match=rf"state.json: {key}: expected .* delete the file"):
        PolicyState.from_dict(data)


def test_state_from_dict_rejects_a_non_object() -> None:
    with pytest.raises(InputError, match="must be a JSON object"):
        PolicyState.from_dict([1, 2], "x.json")  # type: ignore[arg-type]


def test_reason_codes_are_a_bounded_set() -> None:
    assert len(set(RESTART_REASONS)) == len(RESTART_REASONS)
    assert set(RESTART_REASONS) <= set(DECISION_REASONS)
    assert "give_up" in DECISION_ACTIONS


# -- the property --

UNITS = st.sampled_from(
    [None, NO_RESTART_FAILED, INACTIVE, AUTO_RESTARTING, START_LIMIT_HIT, RUNNING,
     replace(AUTO_RESTARTING, restart_seconds=0.1)]
)
STEPS = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2000.0),  # time since the previous observation
        st.booleans(),  # daemon running
        UNITS,
        st.sampled_from(["absent", "agent", "dead", "other", "invalid"]),
        st.booleans(),  # freeze lock
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=10_000.0)),
        st.booleans(),  # transitioning
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=10_000.0)),  # progress age
    ),
    max_size=80,
)
SETTINGS = st.builds(
    RestartSettings,
    max_restarts=st.integers(min_value=1, max_value=6),
    window_seconds=st.integers(min_value=1, max_value=5000),
    backoff_initial_seconds=st.floats(min_value=0.0, max_value=100.0),
    backoff_max_seconds=st.floats(min_value=0.1, max_value=1000.0),
    grace_seconds=st.floats(min_value=0.0, max_value=20.0),
    healthy_reset_seconds=st.integers(min_value=1, max_value=5000),
    snapshot_overdue_seconds=st.integers(min_value=1, max_value=5000),
    stuck_restart=st.booleans(),
    stuck_after_seconds=st.integers(min_value=1, max_value=5000),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(steps=STEPS, settings=SETTINGS)
def test_no_history_makes_the_guard_restart_too_often(
    steps: list[tuple[Any, ...]], settings: RestartSettings
) -> None:
    now = 1_000_000.0
    state = PolicyState()
    restarts: list[float] = []
    resumed_at = -1.0  # the agent ran again after a give-up: the budget starts over
    budget: list[float] = []
    for gap, running, unit, pidfile, lock, lock_age, transitioning, progress_age in steps:
        now += gap
        health = AgentHealth(
            now=now, daemon_running=running, pidfile_state=pidfile,
            unit=RUNNING if running else unit, snapshot_in_progress=lock,
            snapshot_age_seconds=lock_age if lock else None,
            vmsnapshot_transitioning=transitioning,
            last_progress_time=None if progress_age is None else now - progress_age,
        )
        gave_up = state.gave_up_since is not None
        decision, state = decide(health, state, settings)
        if gave_up and state.gave_up_since is None:
            assert running
            resumed_at = now
        state = PolicyState.from_dict(json.loads(json.dumps(state.to_dict())))
        assert decision.action in DECISION_ACTIONS
        assert decision.reason in DECISION_REASONS
        if decision.restarts:
            assert decision.reason in RESTART_REASONS
            assert decision.steps
            restarts.append(now)
            budget.append(now)
        else:
            assert decision.steps == ()
            if decision.wait_until is not None:
                assert decision.wait_until >= now
        budget = [t for t in budget if t > resumed_at]
        in_window = [t for t in budget if t > now - settings.window_seconds]
        assert len(in_window) <= settings.max_restarts
    for index, moment in enumerate(restarts):
        if index >= 2:
            assert moment - restarts[index - 2] >= 300.0


def test_a_stuck_agent_is_not_restarted_while_systemd_is_busy() -> None:
    settings = RestartSettings(stuck_restart=True, stuck_after_seconds=100)
    decision, _ = run(up(500.0, last_progress_time=0.0, system_state="stopping"), None, settings)
    assert (decision.action, decision.reason) == ("wait", "system_busy")
    decision, _ = run(up(500.0, last_progress_time=0.0), None, settings)
    assert decision.reason == "stuck"
