"""`RestartKeeper` on its own: explicit values in (manager, settings, state file, clock),
decisions and counts out. No Guard, no thread, no real time."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from tests.inprocess import FAILED, RUNNING, World
from waagent_guard.daemon.restarts import (
    STEP_FUNCTIONS,
    VERIFY_AFTER_SECONDS,
    RestartKeeper,
    UnknownStepError,
    carry_out,
)
from waagent_guard.daemon.state import StateFile
from waagent_guard.observe import Observation, observe
from waagent_guard.policy import STEPS, Decision, PolicyState
from waagent_guard.settings import RestartSettings
from waagent_guard.sysroot import Sysroot

BUDGET = RestartSettings(
    max_restarts=3, window_seconds=1800, backoff_initial_seconds=5, backoff_max_seconds=60,
)


def look(world: World) -> Observation:
    return observe(
        Sysroot(world.root, proc_root=world.proc), world.settings, manager=world.manager,
        clock=world.clock,
    )


def keeper(world: World, settings: RestartSettings = BUDGET) -> RestartKeeper:
    store = StateFile(world.root / "var/lib/waagent-guard/state.json")
    return RestartKeeper(world.manager, settings, store, monotonic=world.monotonic)


def saved(world: World) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (world.root / "var/lib/waagent-guard/state.json").read_text()
    )
    return data


def test_the_budget_allows_n_restarts_then_gives_up_and_says_so(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.start_brings_agent_back = False
    world.manager.unit_state = FAILED
    restarts = keeper(world)
    actions = []
    with caplog.at_level(logging.WARNING):
        for _ in range(6):
            actions.append(restarts.apply(look(world)).action)
            world.clock.advance(400)  # past the agent's own 300 s rule and any backoff
    assert actions == ["start", "start", "start", "give_up", "give_up", "give_up"]
    assert world.manager.calls == ["start"] * 3
    assert restarts.gave_up
    assert restarts.restarts_by_reason == {"unit_failed": 3}
    assert restarts.decisions_by_action == {"start": 3, "give_up": 3}
    assert caplog.text.count("GIVING UP") == 1  # the same give-up is said once
    assert restarts.next_wake is None  # nothing to look at before the tick


def test_the_policy_state_is_held_once_and_persisted_with_the_counts(world: World) -> None:
    world.manager.unit_state = FAILED
    world.start_brings_agent_back = False
    restarts = keeper(world)
    restarts.apply(look(world))
    document = saved(world)
    assert document["restart_policy"] == restarts.state.to_dict()
    assert document["restart_counts"] == {"unit_failed": 1}
    again = keeper(world)  # the guard restarted: the history is read back, not reset
    assert again.state == restarts.state
    assert again.restarts_by_reason == {"unit_failed": 1}


def test_a_restart_is_verified_a_second_later_and_a_wait_wakes_when_it_ends(
    world: World,
) -> None:
    world.manager.unit_state = FAILED
    world.start_brings_agent_back = False
    restarts = keeper(world)
    restarts.apply(look(world))
    assert restarts.next_wake == world.monotonic() + VERIFY_AFTER_SECONDS
    world.clock.advance(1)
    decision = restarts.apply(look(world))
    assert decision.action == "wait" and decision.reason == "backoff"
    assert decision.wait_until is not None
    assert restarts.next_wake == world.monotonic() + (decision.wait_until - world.clock())


def test_give_up_clears_as_soon_as_the_agent_is_seen_running(world: World) -> None:
    world.manager.unit_state = FAILED
    world.start_brings_agent_back = False
    restarts = keeper(world)
    for _ in range(4):
        restarts.apply(look(world))
        world.clock.advance(400)
    assert restarts.gave_up
    world.start_agent()
    world.manager.unit_state = RUNNING
    assert restarts.apply(look(world)).action == "none"
    assert not restarts.gave_up
    assert saved(world)["restart_policy"]["gave_up_since"] is None  # type: ignore[index]


def test_an_unknown_observation_never_acts_counts_or_changes_state(world: World) -> None:
    world.manager.unit_state = FAILED
    world.manager.fail = "Failed to connect to bus: Connection refused"
    restarts = keeper(world)
    before = restarts.state
    for _ in range(10):
        decision = restarts.apply(look(world))
        world.clock.advance(400)
        assert (decision.action, decision.reason) == ("wait", "observation_unknown")
    assert world.manager.calls == []
    assert restarts.state == before
    assert restarts.restarts_by_reason == {}
    assert not (world.root / "var/lib/waagent-guard/state.json").exists()


def test_every_policy_step_has_a_function_and_an_unknown_step_is_an_error(
    world: World,
) -> None:
    assert set(STEP_FUNCTIONS) == set(STEPS)
    bogus = Decision("start", "unit_failed", "test", steps=("reboot",))  # type: ignore[arg-type]
    with pytest.raises(UnknownStepError, match="'reboot'"):
        carry_out(world.manager, bogus, look(world))
    assert world.manager.calls == []


def test_a_failing_step_is_logged_with_its_fields_and_stops_the_rest(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.manager.fail_actions = "`systemctl reset-failed` failed (exit 1): denied"
    decision = Decision(
        "reset_failed_then_start", "start_limit_hit", "test", steps=("reset_failed", "start")
    )
    with caplog.at_level(logging.ERROR):
        assert carry_out(world.manager, decision, look(world)) is False
    assert world.manager.calls == ["reset_failed"]  # start was not tried after the failure
    record = caplog.records[-1]
    assert record.getMessage().startswith("reset_failed failed: ")
    assert record.__dict__["WG_STEP"] == "reset_failed"
    assert record.__dict__["WG_REASON"] == "start_limit_hit"


def test_a_restart_that_fails_still_counts_against_the_budget(world: World) -> None:
    world.manager.unit_state = FAILED
    world.manager.fail_actions = "`systemctl start` failed (exit 1)"
    restarts = keeper(world)
    restarts.apply(look(world))
    assert restarts.state.restart_times == (world.clock(),)
    assert restarts.restarts_by_reason == {"unit_failed": 1}


def test_a_stale_pidfile_naming_another_process_is_removed_then_the_agent_started(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Replaces the subprocess test of the same name (tests/integration/test_daemon.py)."""
    other = world.add_process(("/usr/bin/sleep", "1000"))
    world.pidfile.write_text(str(other))
    world.manager.unit_state = replace(FAILED, result="exit-code")
    restarts = keeper(world)
    with caplog.at_level(logging.WARNING):
        decision = restarts.apply(look(world))
    assert decision.action == "remove_stale_pidfile_then_start"
    assert world.manager.calls == ["start"]
    assert world.pidfile.read_text() == str(world.agent_pid)  # the new agent's
    assert restarts.restarts_by_reason == {"stale_pidfile": 1}
    assert "not the agent" in caplog.text


def test_a_pidfile_that_cannot_be_removed_is_logged_and_the_start_still_tried(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.start_agent()
    world.kill_agent()  # the pidfile names the dead PID
    world.manager.unit_state = FAILED
    world.start_brings_agent_back = False

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "unlink", read_only)
    with caplog.at_level(logging.WARNING):
        keeper(world).apply(look(world))
    assert "cannot remove" in caplog.text and "Permission denied" in caplog.text
    assert world.manager.calls == ["start"]


def test_a_recovery_is_logged_once_the_agent_runs_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.manager.unit_state = FAILED
    restarts = keeper(world)
    restarts.apply(look(world))  # started; the fake agent comes back
    world.clock.advance(2)
    with caplog.at_level(logging.INFO):
        restarts.apply(look(world))
    assert "the agent is running again" in caplog.text
    assert caplog.records[-1].__dict__["WG_DECISION"] == "recover"


def test_restart_history_that_is_not_valid_is_ignored_not_fatal(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    path = world.root / "var/lib/waagent-guard/state.json"
    path.write_text(json.dumps({"restart_policy": {"restart_times": "yesterday"}}))
    with caplog.at_level(logging.WARNING):
        restarts = keeper(world)
    assert restarts.state == PolicyState()
    assert "restart history ignored" in caplog.text


def test_a_manual_restart_is_counted_and_persisted(world: World) -> None:
    restarts = keeper(world)
    restarts.count_restart("manual")
    assert saved(world)["restart_counts"] == {"manual": 1}
