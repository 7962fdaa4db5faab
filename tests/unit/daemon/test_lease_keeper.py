"""`LeaseKeeper` and the lease through the guard: begin, expiry, revert after the guard's
own restart, the manual-restart limit, bad durations. Fake clock, no real time."""

from __future__ import annotations

import logging

import pytest

from tests.inprocess import ROOT_PEER, World
from waagent_guard.daemon.leases import (
    MANUAL_RESTART_LIMIT,
    MANUAL_RESTART_WINDOW_SECONDS,
    LeaseKeeper,
    manual_restart_refusal,
    user_name,
)
from waagent_guard.daemon.state import StateFile
from waagent_guard.errors import UsageError, WriteError
from waagent_guard.lease import lease_duration
from waagent_guard.settings import VerboseSettings


def keeper(world: World, counted: list[str]) -> LeaseKeeper:
    return LeaseKeeper(
        StateFile(world.root / "var/lib/waagent-guard/state.json"),
        conf_path=world.conf,
        settings=VerboseSettings(),
        manager=world.manager,
        retry_seconds=15.0,
        count_restart=lambda: counted.append("manual"),
        clock=world.clock,
    )


def test_begin_answers_first_then_restarts_and_expiry_reverts(world: World) -> None:
    counted: list[str] = []
    leases = keeper(world, counted)
    world.start_agent()
    reply = leases.handle({"op": "verbose_on", "duration": 60, "reason": "ticket"}, ROOT_PEER)
    assert reply.answer["ok"] and reply.answer["restart"] == "requested"
    assert reply.reconcile is None  # the restart comes first, then the guard reconciles
    assert "Logs.Verbose=y" in world.conf.read_text()
    assert reply.answer["lease"]["reason"] == "ticket"
    assert reply.answer["lease"]["started_by"].endswith("(uid 0, pid 1)")
    assert world.manager.calls == []
    assert leases.run_pending_restart() == "verbose on"
    assert world.manager.calls == ["restart"] and counted == ["manual"]
    assert leases.run_pending_restart() is None  # only once
    assert leases.expiry == world.clock() + 60 == leases.due_at

    world.clock.advance(59)
    leases.expire_if_due(agent_running=True)
    assert "Logs.Verbose=y" in world.conf.read_text()
    world.clock.advance(1)
    leases.expire_if_due(agent_running=True)
    assert "Logs.Verbose=n" in world.conf.read_text()
    assert leases.expiry is None and leases.due_at is None
    assert world.manager.calls == ["restart", "restart"] and counted == ["manual", "manual"]


def test_an_expired_lease_with_the_agent_down_reverts_without_a_restart(world: World) -> None:
    leases = keeper(world, [])
    leases.handle({"op": "verbose_on", "duration": 5, "restart": False}, ROOT_PEER)
    world.clock.advance(5)
    leases.expire_if_due(agent_running=False)
    assert "Logs.Verbose=n" in world.conf.read_text()
    assert world.manager.calls == []


def test_without_restart_the_guard_is_told_to_reconcile(world: World) -> None:
    reply = keeper(world, []).handle(
        {"op": "verbose_on", "duration": 5, "restart": False}, ROOT_PEER
    )
    assert reply.reconcile == "verbose on"
    assert reply.answer["restart"] is None and reply.answer["restarted"] is False


def test_the_lease_reverts_after_the_guards_own_restart(world: World) -> None:
    """Replaces tests/integration/test_daemon.py::test_verbose_lease_survives_a_guard_restart."""
    world.start_agent()
    world.guard.reconcile("start")
    before = world.conf.read_text()
    assert world.request("verbose_on", duration=3, restart=False)["ok"]
    guard = world.new_guard()  # stopped and started again: only state.json remembers
    assert guard.leases.expiry is not None
    world.clock.advance(3)
    guard.reconcile("start")
    assert world.conf.read_text() == before
    assert world.manager.calls == ["restart"]  # the revert is applied by a restart


def test_the_manual_restart_limit_refuses_the_seventh_restart_in_the_window(
    world: World,
) -> None:
    counted: list[str] = []
    leases = keeper(world, counted)
    for _ in range(MANUAL_RESTART_LIMIT):
        assert leases.restart_agent("test") is None
        world.clock.advance(1)
    refusal = leases.restart_agent("test")
    assert refusal is not None and f"limit {MANUAL_RESTART_LIMIT}" in refusal
    assert len(counted) == MANUAL_RESTART_LIMIT
    world.clock.advance(MANUAL_RESTART_WINDOW_SECONDS)
    assert leases.restart_agent("test") is None  # the window moved on


def test_manual_restart_refusal_counts_only_the_window() -> None:
    now = 10_000.0
    inside = [now - i for i in range(MANUAL_RESTART_LIMIT)]
    assert manual_restart_refusal(inside, now) is not None
    assert manual_restart_refusal(inside[:-1], now) is None
    old = [now - MANUAL_RESTART_WINDOW_SECONDS - 1] * 10
    assert manual_restart_refusal(old, now) is None


def test_a_failed_manual_restart_is_reported_and_not_counted(world: World) -> None:
    counted: list[str] = []
    leases = keeper(world, counted)
    world.manager.fail_actions = "`systemctl restart` failed (exit 1)"
    assert leases.restart_agent("verbose on") == "`systemctl restart` failed (exit 1)"
    assert counted == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("nan", "positive number of seconds"),
        ("inf", "positive number of seconds"),
        (0, "positive number of seconds"),
        (-5, "positive number of seconds"),
        ("soon", "not a number of seconds"),
        ([1], "not a number of seconds"),
        (8 * 86400, "longer than verbose.max_duration_seconds (7d)"),
    ],
)
def test_one_rule_refuses_bad_lease_durations(raw: object, message: str) -> None:
    with pytest.raises(UsageError, match=r"--for"):
        lease_duration(raw, VerboseSettings())
    with pytest.raises(UsageError) as caught:
        lease_duration(raw, VerboseSettings())
    assert message in caught.value.message


def test_the_default_duration_applies_without_one() -> None:
    assert lease_duration(None, VerboseSettings(default_duration_seconds=600)) == 600.0
    assert lease_duration("90", VerboseSettings()) == 90.0


def test_a_nan_duration_over_the_control_socket_is_refused_and_edits_nothing(
    world: World,
) -> None:
    """Replaces tests/integration/test_daemon.py::test_a_nan_lease_duration_is_refused."""
    before = world.conf.read_text()
    answer = world.request("verbose_on", duration="nan")
    assert answer["ok"] is False and "--for" in answer["error"]
    assert world.conf.read_text() == before


def test_verbose_status_off_and_unknown_requests(world: World) -> None:
    assert world.request("verbose_status") == {"ok": True, "lease": None}
    assert world.request("verbose_on", duration=60, restart=False)["ok"]
    status = world.request("verbose_status")
    assert status["lease"]["expires_at"] == world.clock() + 60
    off = world.request("verbose_off", restart=False)
    assert off["ok"] and off["changed"] and off["lease"] is None
    assert world.request("reboot") == {"ok": False, "error": "unknown request 'reboot'"}
    assert world.request("status")["status"].startswith("agent ")


def test_the_manual_limit_is_checked_before_a_restart_is_promised(world: World) -> None:
    world.start_agent()
    leases = world.guard.leases
    leases.restart_times = [world.clock()] * MANUAL_RESTART_LIMIT
    answer = world.request("verbose_on", duration=60)
    assert answer["ok"] is False and "limit" in answer["error"]
    assert answer["restart"] is None and leases.pending_restart is None


def test_an_unknown_uid_is_named_by_number() -> None:
    assert user_name(0) == "root"
    assert user_name(2**31 - 2) == f"uid {2**31 - 2}"


def test_a_lease_that_cannot_be_reverted_is_retried_after_retry_seconds(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import waagent_guard.daemon.leases as leases_module

    leases = keeper(world, [])
    leases.handle({"op": "verbose_on", "duration": 5, "restart": False}, ROOT_PEER)

    def read_only(*args: object, **kwargs: object) -> object:
        raise WriteError(f"{world.conf}: read-only file system")

    monkeypatch.setattr(leases_module, "end_lease", read_only)
    world.clock.advance(5)
    with caplog.at_level(logging.ERROR):
        leases.expire_if_due(agent_running=False)
    assert leases.retry_at == world.clock() + 15.0
    assert leases.due_at == leases.retry_at
    world.clock.advance(1)
    leases.expire_if_due(agent_running=False)  # before the retry time: not tried
    assert caplog.text.count("cannot revert the expired verbose lease yet") == 1
