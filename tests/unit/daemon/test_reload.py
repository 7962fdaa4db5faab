"""Reload (SIGHUP): the pure settings diff, and the guard applying it, per section."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.inprocess import FAILED, World
from waagent_guard.daemon.doctor_worker import CheckWorker
from waagent_guard.daemon.reload import ReloadPlan, plan_reload
from waagent_guard.doctor.runner import DoctorRunner
from waagent_guard.settings import Settings

DEFAULTS = Settings()


def changed(**sections: dict[str, object]) -> Settings:
    data = DEFAULTS.model_dump()
    for section, values in sections.items():
        data[section].update(values)
    return Settings.model_validate(data)


@pytest.fixture
def root_level() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


# -- the plan (pure) -------------------------------------------------------------------------

def test_nothing_changed_plans_nothing() -> None:
    plan = plan_reload(DEFAULTS, Settings())
    assert plan == ReloadPlan() and not plan.changed


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (changed(agent={"unit": "waagent.service"}),
         ReloadPlan(new_manager=True, restart_doctor=True)),
        (changed(agent={"log_path": "/var/log/other.log"}),
         ReloadPlan(new_manager=True, reopen_log=True, restart_doctor=True)),
        (changed(doctor={"interval_seconds": 60}), ReloadPlan(restart_doctor=True)),
        (changed(vmsnapshot={"min_version": "1.0.99.0"}), ReloadPlan(restart_doctor=True)),
        (changed(logging={"level": "debug"}), ReloadPlan(log_level=True)),
        (changed(restart={"max_restarts": 5}), ReloadPlan(next_pass=("[restart]",))),
        (changed(verbose={"max_duration_seconds": 60}), ReloadPlan(next_pass=("[verbose]",))),
        (changed(daemon={"tick_seconds": 5.0}), ReloadPlan(next_pass=("daemon.tick_seconds",))),
        (changed(daemon={"debounce_seconds": 1.0}),
         ReloadPlan(next_pass=("daemon.debounce_seconds",))),
        (changed(metrics={"port": 9999}), ReloadPlan(at_next_start=("[metrics]",))),
        (changed(control={"socket": "/run/x.sock"}), ReloadPlan(at_next_start=("[control]",))),
        (changed(daemon={"state_file": "/var/lib/x.json"}),
         ReloadPlan(at_next_start=("daemon.state_file",))),
        (changed(daemon={"proc_poll_seconds": 2.0}),
         ReloadPlan(at_next_start=("daemon.proc_poll_seconds",))),
    ],
    ids=[
        "agent", "agent.log_path", "doctor", "vmsnapshot", "logging", "restart", "verbose",
        "tick", "debounce", "metrics", "control", "state_file", "proc_poll",
    ],
)
def test_each_section_is_planned_in_place_or_named_for_the_next_start(
    new: Settings, expected: ReloadPlan
) -> None:
    plan = plan_reload(DEFAULTS, new)
    assert plan == expected and plan.changed


# -- the guard applying it (SIGHUP path: guard.toml is read again) ---------------------------

def test_agent_section_gets_a_new_service_manager_and_conf_path(world: World) -> None:
    world.guard.reconcile("start")
    other_conf = world.root / "etc/other-waagent.conf"
    other_conf.write_text("Logs.Verbose=n\n")
    world.write_config(agent={"unit": "waagent.service", "conf_path": "/etc/other-waagent.conf"})
    world.guard.reload()
    assert [s.agent.unit for s in world.manager_requests] == ["waagent.service"]
    assert world.guard.leases.conf_path == other_conf
    assert world.guard.settings.agent.unit == "waagent.service"
    assert world.notifier.messages[-1].startswith("READY agent ")


def test_a_new_log_path_is_followed_from_the_next_tick(world: World) -> None:
    world.guard.feed.start()
    assert world.guard.feed.following
    new_log = world.root / "var/log/agent2.log"
    new_log.write_text("")
    world.write_config(agent={"log_path": "/var/log/agent2.log"})
    world.guard.reload()  # reconciles: the tick reopens the log on the new path
    assert world.guard.feed.log_path == new_log
    assert world.guard.feed.following
    with new_log.open("a") as log:  # a record is complete when the next one starts
        log.write("2026-11-26T04:48:31.499310Z INFO Daemon Daemon Azure Linux Agent "
                  "Version:2.7.3.0\n2026-11-26T04:48:31.499518Z INFO Daemon Daemon OS: x\n")
    world.guard.reconcile("tick")
    assert world.guard.feed.signals.last_record_time is not None


def test_doctor_and_vmsnapshot_restart_the_doctor_worker(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    world.guard.checks = CheckWorker(  # a worker (its thread not started)
        DoctorRunner(world.guard.sysroot, world.settings), poke=lambda: None,
        observation=lambda: None,
    )
    monkeypatch.setattr(world.guard, "start_checks", lambda: started.append(1))
    world.write_config(doctor={"interval_seconds": 60})
    world.guard.reload()
    world.write_config(doctor={"interval_seconds": 60}, vmsnapshot={"min_version": "1.0.99.0"})
    world.guard.reload()
    assert started == [1, 1]


def test_the_log_level_changes_in_place(world: World, root_level: None) -> None:
    logging.getLogger().setLevel(logging.INFO)
    world.write_config(logging={"level": "debug"})
    world.guard.reload()
    assert logging.getLogger().level == logging.DEBUG


def test_restart_section_applies_at_the_next_pass(world: World) -> None:
    world.start_agent()
    world.guard.reconcile("start")
    world.write_config(restart={"enabled": False})
    world.guard.reload()
    world.manager.unit_state = FAILED
    world.kill_agent()
    world.guard.reconcile("tick")
    assert world.manager.calls == []
    assert world.guard.restarts.last_decision == ("none", "restart_disabled")


def test_verbose_section_applies_to_the_next_request(world: World) -> None:
    world.write_config(verbose={"max_duration_seconds": 60})
    world.guard.reload()
    answer = world.request("verbose_on", duration=3600)
    assert answer["ok"] is False and "verbose.max_duration_seconds" in answer["error"]


def test_tick_seconds_applies_to_the_next_tick_and_the_lease_retry(world: World) -> None:
    world.write_config(daemon={"tick_seconds": 5.0})
    world.guard.reload()
    assert world.guard.next_tick == world.monotonic() + 5.0
    assert world.guard.leases.retry_seconds == 5.0


def test_settings_bound_at_start_are_named_in_a_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.write_config(
        metrics={"port": 9999}, control={"socket": "/run/wg/other.sock"},
        daemon={"state_file": "/var/lib/waagent-guard/other.json", "proc_poll_seconds": 2.0},
    )
    with caplog.at_level(logging.WARNING):
        world.guard.reload()
    assert (
        "changed settings that apply at the next restart of the guard: [metrics], [control], "
        "daemon.proc_poll_seconds, daemon.state_file" in caplog.text
    )
    assert world.guard.store.path == world.root / "var/lib/waagent-guard/state.json"


def test_a_broken_config_keeps_the_old_one_and_says_why(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Replaces tests/integration/test_daemon.py::test_sighup_with_a_broken_config_keeps..."""
    world.guard.reconcile("start")
    before = world.guard.settings
    world.config_path.write_text("[restart]\ngrace_seconds = -1.0\n")
    with caplog.at_level(logging.ERROR):
        world.guard.reload()
    assert world.guard.settings is before
    assert world.notifier.messages[-2] == "RELOADING reloading configuration"
    assert world.notifier.messages[-1].startswith("READY config reload failed, old config kept")
    assert "restart.grace_seconds" in caplog.text
    assert caplog.records[-1].__dict__["MESSAGE_ID"] == "404388c31e304c82ac980300475aede5"
