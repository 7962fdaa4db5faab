"""The daemon's decisions in-process: fake /proc, fake service manager, fake clock.

Issue 10 items 1 (never act while systemd boots or acts on the unit), 3 (verbose
cycles do not spend the crash budget), 4 (kill -9 is a crash; a zombie is dead),
5 (the answer comes before the restart it causes), 6 (the lease reverts at its
expiry, deterministically); issue 14 item 1 (failure to observe is unknown).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import FAILED, INACTIVE, RUNNING, World
from waagent_guard.commands.status import guard_summary, render_text, status_document
from waagent_guard.daemon.exporter import guard_collector
from waagent_guard.metrics import exposition, make_registry
from waagent_guard.observe import assess
from waagent_guard.service import UnitState


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    box = World(tmp_path)
    yield box
    box.close()


def _restarts(world: World) -> dict[str, int]:
    return dict(world.guard.restarts.restarts_by_reason)


# -- item 1: boot ------------------------------------------------------------------------

def test_during_boot_the_guard_waits_for_systemd_then_acts_only_when_needed(
    world: World,
) -> None:
    """Debian's agent is After=multi-user.target: while the system starts, its unit is
    inactive with a start job queued. The guard must not start it itself."""
    world.manager.system = "starting"
    world.manager.unit_state = UnitState(active_state="inactive", sub_state="dead", job="start")
    world.guard.reconcile("start")
    assert world.manager.calls == []
    assert world.guard.restarts.last_decision == ("wait", "system_busy")
    assert world.guard.restarts.next_wake is not None  # it looks again

    world.monotonic.advance(2)
    world.clock.advance(2)
    world.manager.system = "running"  # booted, but the agent's job is still queued
    world.guard.reconcile("timer")
    assert world.manager.calls == []
    assert world.guard.restarts.last_decision == ("wait", "unit_busy")

    world.clock.advance(1)
    world.manager.unit_state = RUNNING  # systemd started it
    world.start_agent()
    world.guard.reconcile("timer")
    assert world.manager.calls == []
    assert world.guard.restarts.last_decision == ("none", "healthy")
    assert _restarts(world) == {}


def test_while_the_system_stops_a_stopped_agent_is_left_alone(world: World) -> None:
    world.manager.system = "stopping"
    world.manager.unit_state = INACTIVE
    world.guard.reconcile("tick")
    assert world.manager.calls == []


def test_after_boot_an_inactive_agent_is_started(world: World) -> None:
    world.manager.unit_state = INACTIVE
    world.guard.reconcile("tick")
    assert world.manager.calls == ["start"]
    assert _restarts(world) == {"unit_inactive": 1}


# -- issue 14 item 1: unknown ---------------------------------------------------------------

def test_a_failing_service_manager_makes_the_state_unknown_not_down(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.manager.unit_state = FAILED
    world.manager.fail = "Failed to connect to bus: Too many open files"
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            world.clock.advance(400)
            world.guard.reconcile("tick")
    assert world.manager.calls == []
    assert _restarts(world) == {}
    assert not world.guard.restarts.gave_up
    assert world.guard.restarts.state.restart_times == ()
    assert "unknown" in caplog.text
    collector = guard_collector(lambda: world.guard.published, checks=False)
    text = exposition(make_registry(collector, process_metrics=False)).decode()
    assert "waagent_guard_observation_ok 0.0" in text
    assert "waagent_health_status" not in text  # unknown is left out, never a number
    assert "unknown" in world.guard.status_line()


def test_a_failing_proc_makes_the_state_unknown_not_down(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.start_agent()
    world.guard.reconcile("tick")
    assert world.guard.restarts.last_decision == ("none", "healthy")
    real_listdir = os.listdir
    proc = str(world.proc)

    def emfile(path: object = ".") -> list[str]:
        if str(path) == proc:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_listdir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "listdir", emfile)
    for _ in range(5):
        world.clock.advance(400)
        world.guard.reconcile("tick")
    assert world.manager.calls == []
    assert _restarts(world) == {}
    assert world.guard.restarts.last_decision == ("wait", "observation_unknown")
    monkeypatch.setattr(os, "listdir", real_listdir)
    world.guard.reconcile("tick")  # seeing again: the agent was running all along
    assert world.guard.restarts.last_decision == ("none", "healthy")
    assert world.manager.calls == []


# -- item 3: verbose cycles and the budget ---------------------------------------------------

def test_two_verbose_cycles_do_not_spend_the_crash_budget(world: World) -> None:
    world.start_agent()
    world.guard.reconcile("start")
    for _ in range(2):
        for op in ("verbose_on", "verbose_off"):
            answer = world.request(op, duration=3600)
            assert answer["ok"] and answer["restart"] == "requested"
            world.guard.run_pending_restart()
            world.clock.advance(5)
    assert world.manager.calls == ["restart"] * 4
    assert _restarts(world) == {"manual": 4}
    assert world.guard.restarts.state.restart_times == ()

    world.kill_agent()  # a real crash after the cycles: repaired, not given up
    world.manager.unit_state = UnitState(active_state="active", sub_state="running")
    world.guard.reconcile("agent exited")
    assert world.manager.calls[-1] == "restart"
    assert _restarts(world)["process_gone"] == 1
    assert not world.guard.restarts.gave_up


def test_restarts_on_request_have_their_own_limit(world: World) -> None:
    from waagent_guard.daemon.leases import MANUAL_RESTART_LIMIT

    world.start_agent()
    world.guard.reconcile("start")
    for index in range(MANUAL_RESTART_LIMIT + 1):
        answer = world.request("verbose_on" if index % 2 == 0 else "verbose_off", duration=3600)
        world.guard.run_pending_restart()
        world.clock.advance(1)
    assert not answer["ok"] and "limit" in answer["error"]
    assert world.manager.calls.count("restart") == MANUAL_RESTART_LIMIT
    assert world.guard.restarts.state.restart_times == ()


def test_give_up_clears_when_the_agent_is_started_by_hand_and_status_says_why(
    world: World,
) -> None:
    world.start_brings_agent_back = False
    world.manager.unit_state = FAILED
    for _ in range(4):
        world.guard.reconcile("tick")
        world.clock.advance(400)
    assert world.guard.restarts.gave_up
    reason = world.guard.restarts.state.gave_up_reason
    assert reason and "GIVING UP" in reason
    assert "GAVE UP" in world.guard.status_line()
    saved = json.loads((world.root / "var/lib/waagent-guard/state.json").read_text())
    assert saved["restart_policy"]["gave_up_reason"] == reason
    summary = guard_summary(world.root / "var/lib/waagent-guard/state.json")
    assert summary["gave_up"] is True and summary["gave_up_reason"] == reason
    observation = world.guard.observation
    assert observation is not None
    document = status_document(observation, assess(observation), guard=summary)
    assert document["guard"]["gave_up_since_iso"]
    assert "GAVE UP restarting the agent at" in render_text(document, world.clock())

    world.start_agent()  # an operator ran `systemctl start walinuxagent`
    world.manager.unit_state = RUNNING
    world.guard.reconcile("tick")
    assert not world.guard.restarts.gave_up
    calls = len(world.manager.calls)
    world.clock.advance(10)
    world.kill_agent()
    world.manager.unit_state = FAILED
    world.guard.reconcile("agent exited")
    assert len(world.manager.calls) > calls  # protected again at once


# -- item 4: kill -9 and zombies -------------------------------------------------------------

def test_kill_9_next_to_debians_agent_counts_as_a_crash_and_removes_the_pidfile(
    world: World,
) -> None:
    world.start_agent()
    world.guard.reconcile("start")
    world.kill_agent()  # the pidfile still names the dead PID
    world.manager.unit_state = FAILED  # Restart=no: systemd leaves it failed
    world.guard.reconcile("agent exited")
    assert _restarts(world) == {"process_gone": 1}
    assert world.manager.calls == ["start"]
    assert world.pidfile.read_text() == str(world.agent_pid)  # the new agent's


def test_another_users_lookalike_daemon_does_not_hide_the_agents_death(world: World) -> None:
    """Review of issue 14: a uid-65534 `python3 .../waagent -daemon` is not the agent."""
    world.start_agent()
    world.guard.reconcile("start")
    argv = ("/usr/bin/python3", "-u", str(world.root / "usr/sbin/waagent"), "-daemon")
    world.kill_agent()
    world.add_process(argv, uid=65534 if os.geteuid() != 65534 else 65533)
    world.manager.unit_state = FAILED
    world.guard.reconcile("agent exited")
    assert _restarts(world) == {"process_gone": 1}
    assert world.manager.calls == ["start"]


def test_a_zombie_agent_is_dead_and_its_pidfile_goes_before_the_start(world: World) -> None:
    world.start_agent()
    world.guard.reconcile("start")
    world.kill_agent(zombie=True)
    world.manager.unit_state = FAILED
    world.start_brings_agent_back = False
    world.guard.reconcile("agent exited")
    assert _restarts(world) == {"process_gone": 1}
    assert world.manager.calls == ["start"]
    assert not world.pidfile.exists()


# -- item 5: answer before the restart -------------------------------------------------------

def test_a_control_request_is_answered_before_the_restart_it_causes(world: World) -> None:
    world.start_agent()
    world.guard.reconcile("start")
    answer = world.request("verbose_on", duration=60)
    assert answer["ok"] and answer["changed"] and answer["restart"] == "requested"
    assert world.manager.calls == []  # not yet: the answer goes out first
    assert world.guard.leases.pending_restart is not None
    world.guard.run_pending_restart()
    assert world.manager.calls == ["restart"]


# -- item 6: the lease reverts at its expiry ------------------------------------------------

def test_verbose_lease_reverts_at_expiry_with_a_fake_clock(world: World) -> None:
    world.start_agent()
    world.guard.reconcile("start")
    before = world.conf.read_text()
    world.request("verbose_on", duration=2, reason="ticket 42")
    world.guard.run_pending_restart()
    assert "Logs.Verbose=y" in world.conf.read_text()
    world.clock.advance(1.9)
    world.guard.reconcile("timer")
    assert "Logs.Verbose=y" in world.conf.read_text()
    world.clock.advance(0.2)
    world.guard.reconcile("timer")
    assert world.conf.read_text() == before
    assert world.manager.calls == ["restart", "restart"]
    assert _restarts(world) == {"manual": 2}


def test_an_expired_lease_that_cannot_be_written_is_retried_at_the_next_tick(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import waagent_guard.daemon.leases as verbose
    from waagent_guard.errors import WriteError

    world.start_agent()
    world.guard.reconcile("start")
    world.request("verbose_on", duration=2, restart=False)
    real_end_lease = verbose.end_lease

    def read_only(*args: object, **kwargs: object) -> object:
        raise WriteError("/etc/waagent.conf: read-only file system")

    monkeypatch.setattr(verbose, "end_lease", read_only)
    world.clock.advance(3)
    with caplog.at_level(logging.ERROR):
        world.guard.reconcile("timer")
    assert "cannot revert the expired verbose lease yet" in caplog.text
    assert world.guard.leases.expiry is not None  # still owed
    assert "Logs.Verbose=y" in world.conf.read_text()
    monkeypatch.setattr(verbose, "end_lease", real_end_lease)
    world.clock.advance(world.settings.daemon.tick_seconds)
    world.guard.reconcile("tick")
    assert "Logs.Verbose=y" not in world.conf.read_text()
    assert world.guard.leases.expiry is None


# -- issue 15: a quiet tick ------------------------------------------------------------------


def _steady(world: World) -> None:
    world.start_agent()
    world.manager.unit_state = UnitState(
        active_state="active", sub_state="running", main_pid=world.agent_pid
    )
    world.guard.reconcile("start")


def test_a_steady_agent_costs_one_look_at_the_manager_per_four_ticks(world: World) -> None:
    from waagent_guard.daemon.guard import MANAGER_EVERY_TICKS

    _steady(world)
    asked, systems = world.manager.state_calls, world.manager.system_calls
    for _ in range(2 * MANAGER_EVERY_TICKS):
        world.guard.reconcile("tick")
    assert world.manager.state_calls == asked + 2
    # the system state matters only to a decision to act: not asked while steady
    assert world.manager.system_calls == systems
    assert world.guard.observation is not None
    assert world.guard.observation.unit == world.manager.unit_state  # carried, not lost
    assert world.guard.observation.system_state == "running"  # carried too


def test_the_periodic_ask_that_finds_the_unit_changed_asks_the_system_state_too(
    world: World,
) -> None:
    from waagent_guard.daemon.guard import MANAGER_EVERY_TICKS

    _steady(world)
    world.manager.unit_state = UnitState(  # systemd restarted it: another MainPID
        active_state="active", sub_state="running", main_pid=world.agent_pid + 1
    )
    world.manager.system = "stopping"
    systems = world.manager.system_calls
    for _ in range(MANAGER_EVERY_TICKS):
        world.guard.reconcile("tick")
    assert world.manager.system_calls == systems + 1
    assert world.guard.observation is not None
    assert world.guard.observation.system_state == "stopping"


def test_a_look_that_finds_the_agent_down_asks_the_system_state(world: World) -> None:
    _steady(world)
    systems = world.manager.system_calls
    world.kill_agent()
    world.manager.unit_state = FAILED
    world.manager.system = "stopping"  # a shutdown: no restart
    world.guard.reconcile("agent exited")
    assert world.manager.system_calls == systems + 1
    assert world.manager.calls == []


def test_a_tick_that_finds_no_daemon_asks_the_manager_and_repairs(world: World) -> None:
    """The exit was missed (no pidfd event): the tick sees no daemon and asks at once."""
    _steady(world)
    asked = world.manager.state_calls
    world.kill_agent()
    world.manager.unit_state = FAILED
    world.guard.reconcile("tick")
    assert world.manager.state_calls == asked + 1
    assert world.manager.calls == ["start"]
    assert _restarts(world) == {"process_gone": 1}


def test_a_tick_that_finds_another_daemon_pid_asks_the_manager(world: World) -> None:
    _steady(world)
    asked = world.manager.state_calls
    world.start_agent()  # replaced behind the guard's back: a new PID
    world.guard.reconcile("tick")
    assert world.manager.state_calls == asked + 1
    assert world.manager.calls == []


def test_an_agent_not_known_as_the_units_main_process_is_asked_about_every_tick(
    world: World,
) -> None:
    world.start_agent()
    world.manager.unit_state = RUNNING  # no MainPID reported
    world.guard.reconcile("start")
    asked = world.manager.state_calls
    for _ in range(3):
        world.guard.reconcile("tick")
    assert world.manager.state_calls == asked + 3
