"""The guard's loop in-process: what each wake-up leads to, the deadlines, the error
boundary, the doctor worker on the published observation, and a few wiring tests with
the real event sources (control socket, inotify, a signal, the metrics port) in-process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.inprocess import FAILED, FakeNotifier, World
from waagent_guard.daemon import loop as loop_module
from waagent_guard.daemon.control import request
from waagent_guard.daemon.doctor_worker import CheckWorker
from waagent_guard.daemon.guard import FILES, file_interest, watched_directories
from waagent_guard.daemon.loop import Wakeup
from waagent_guard.doctor.facts import FactSources
from waagent_guard.doctor.runner import DoctorRunner
from waagent_guard.metrics import CheckSample


def running(world: World) -> None:
    world.start_agent()
    world.guard.reconcile("start")


# -- each wake-up -------------------------------------------------------------------------

def test_sigterm_stops_and_nothing_else_runs(world: World) -> None:
    running(world)
    asked = world.manager.state_calls
    world.monotonic.advance(100)  # a tick is due, but stopping wins
    world.guard.handle(Wakeup(signals=[signal.SIGTERM]))
    assert world.guard.stopping
    assert world.manager.state_calls == asked


def test_sighup_reloads(world: World) -> None:
    running(world)
    world.write_config(restart={"max_restarts": 9})
    world.guard.handle(Wakeup(signals=[signal.SIGHUP]))
    assert world.guard.restarts.settings.max_restarts == 9
    assert "RELOADING reloading configuration" in world.notifier.messages


def test_the_agents_exit_reconciles_at_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    running(world)
    world.kill_agent()
    world.manager.unit_state = FAILED
    with caplog.at_level(logging.INFO):
        world.guard.handle(Wakeup(agent_exited=True))
    assert "the agent daemon exited" in caplog.text
    assert world.manager.calls == ["start"]


def test_a_file_event_is_debounced_then_rereads_files_without_asking_the_manager(
    world: World,
) -> None:
    running(world)
    asked = world.manager.state_calls
    tick = world.guard.next_tick
    world.guard.handle(Wakeup(paths={str(world.conf)}))
    assert world.guard.dirty_since == world.monotonic()
    first = world.guard.observation
    assert world.guard.timeout() == pytest.approx(world.settings.daemon.debounce_seconds)
    world.monotonic.advance(world.settings.daemon.debounce_seconds)
    world.guard.handle(Wakeup())
    assert world.guard.dirty_since is None
    assert world.guard.observation is not first  # looked again...
    assert world.manager.state_calls == asked  # ...without a `systemctl show`
    assert world.guard.next_tick == tick  # and the tick did not move


def test_new_log_lines_are_published_in_the_same_wake_up_without_looking_again(
    world: World,
) -> None:
    running(world)
    world.guard.feed.start()  # follow the log from its end, as `start()` does
    first = world.guard.observation
    errors = world.guard.feed.signals.counts_by_level["ERROR"]
    log = world.root / "var/log/waagent.log"
    world.monotonic.advance(1)
    world.clock.advance(1)
    with log.open("a") as handle:
        handle.write("2026-12-03T08:00:00.000000Z ERROR Daemon Daemon no route\n")
        # a record is complete when the next one starts (tracebacks continue it)
        handle.write("2026-12-03T08:00:02.000000Z ERROR Daemon Daemon no route\n")
    world.guard.handle(Wakeup(paths={str(log)}))
    assert world.guard.dirty_since is None  # no second wake-up for a debounce (issue 15)
    assert world.guard.observation is first  # not observed again
    assert world.guard.published.last_reconcile == world.clock()
    published = world.guard.published.observation
    assert published is not None and published.log.counts_by_level["ERROR"] == errors + 1


def test_a_log_line_during_a_pending_file_change_waits_for_its_look(world: World) -> None:
    running(world)
    log = world.root / "var/log/waagent.log"
    world.guard.handle(Wakeup(paths={str(world.conf), str(log)}))
    assert world.guard.dirty_since == world.monotonic()
    world.monotonic.advance(world.settings.daemon.debounce_seconds)
    world.guard.handle(Wakeup(paths={str(log)}))
    assert world.guard.dirty_since is None  # the look ran and published the lines too


def test_what_is_watched_follows_the_look(world: World) -> None:
    lib = world.root / "var/lib/waagent"
    for directory in (f"{HANDLER}/status", "WALinuxAgent-2.9.1.1", "history/x", "events"):
        (lib / directory).mkdir(parents=True)
    running(world)
    observation = world.guard.observation
    assert observation is not None
    assert watched_directories(observation, world.root / "var/log/waagent.log") == [
        (world.root / "etc", False),
        (world.root / "var/log", False),
        (lib, False),
        (lib / HANDLER, True),
        (lib / "WALinuxAgent-2.9.1.1", False),
    ]


@pytest.mark.parametrize(
    ("relative", "interest"),
    [
        ("etc/waagent.conf", "now"),
        ("var/log/waagent.log", "batch"),  # a line appended ("modified")
        ("etc/resolv.conf", "ignore"),  # the rest of /etc and /var/log: not ours
        ("var/log/syslog", "ignore"),
        ("var/log/waagent.log.1", "ignore"),  # rotation is seen on waagent.log itself
        ("var/log", "ignore"),  # the directory's own "modified"
        ("var/lib/waagent", "now"),
        ("var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9225.0"
         "/status/0.status", "now"),
        ("var/lib/waagent/WireServerEndpoint", "now"),
        ("var/lib/waagent/history/2026-11-26.zip", "ignore"),
        ("var/lib/waagent/history", "ignore"),
        ("var/lib/waagent/events/1764741952667947.tld", "ignore"),
        ("var/lib/waagent/Microsoft.Foo-1.0/history", "now"),  # only Lib.Dir's own
        ("var/lib/waagent-old/events/1.tld", "ignore"),  # a sibling, not Lib.Dir
    ],
)
def test_what_a_file_event_is_worth(relative: str, interest: str) -> None:
    assert file_interest(
        f"/r/{relative}", "modified", conf_path="/r/etc/waagent.conf",
        log_path="/r/var/log/waagent.log", lib_dir="/r/var/lib/waagent",
    ) == interest


def test_a_writers_close_of_the_log_is_batched_like_its_lines() -> None:
    # watchdog < 4.0 cannot filter: it reports the writer's close after every append
    assert file_interest(
        "/r/var/log/waagent.log", "closed", conf_path="/r/etc/waagent.conf",
        log_path="/r/var/log/waagent.log", lib_dir="/r/var/lib/waagent",
    ) == "batch"


@pytest.mark.parametrize("event_type", ["moved", "deleted", "created"])
def test_a_rotation_of_the_log_wakes_the_loop_at_once(event_type: str) -> None:
    # the tailer must open the new file (keeping the old one) before the next rotation
    assert file_interest(
        "/r/var/log/waagent.log", event_type, conf_path="/r/etc/waagent.conf",
        log_path="/r/var/log/waagent.log", lib_dir="/r/var/lib/waagent",
    ) == "now"


def append_line(world: World, second: int) -> None:
    with (world.root / "var/log/waagent.log").open("a") as handle:
        handle.write(f"2026-12-03T08:00:{second:02d}.000000Z ERROR Daemon Daemon no route\n")


def test_log_lines_that_keep_coming_are_read_once_per_batch(world: World) -> None:
    running(world)
    world.guard.feed.start()
    log = str(world.root / "var/log/waagent.log")
    batch = world.settings.daemon.log_batch_seconds
    append_line(world, 0)
    world.guard.handle(Wakeup(paths={log}))  # the first line after a quiet spell
    assert world.guard.loop.batching  # the next ones are only queued...
    assert world.guard.log_batch_until == world.monotonic() + batch
    assert world.guard.timeout() == pytest.approx(batch)  # ...the loop comes back for them
    append_line(world, 2)
    append_line(world, 4)
    world.monotonic.advance(batch)
    world.guard.handle(Wakeup(paths={log}))  # the batch's end: lines came, a new batch
    assert world.guard.feed.signals.counts_by_level["ERROR"] == 2  # the third is still open
    assert world.guard.loop.batching
    assert world.guard.log_batch_until == world.monotonic() + batch
    world.monotonic.advance(batch)
    world.guard.handle(Wakeup())  # no line in that batch: closed
    assert not world.guard.loop.batching and world.guard.log_batch_until is None


def test_log_batches_can_be_turned_off(world: World) -> None:
    world.settings = world.write_config(daemon={"log_batch_seconds": 0})
    guard = world.new_guard()
    guard.reconcile("start")
    log = str(world.root / "var/log/waagent.log")
    assert guard._interest(log, "modified") == "now"
    guard.handle(Wakeup(paths={log}))
    assert not guard.loop.batching and guard.log_batch_until is None


def test_a_files_reconciliation_before_any_observation_asks_the_manager(world: World) -> None:
    world.start_agent()
    world.guard.reconcile(FILES)
    assert world.manager.state_calls == 1
    assert world.guard.observation is not None and world.guard.observation.unit is not None


def test_the_tick_a_policy_timer_and_a_lease_expiry_each_reconcile(world: World) -> None:
    running(world)
    asked = world.manager.state_calls
    world.monotonic.advance(world.settings.daemon.tick_seconds)
    world.guard.handle(Wakeup())  # the tick
    assert world.manager.state_calls == asked + 1

    world.guard.restarts.next_wake = world.monotonic()
    world.guard.handle(Wakeup())  # a policy timer
    assert world.manager.state_calls == asked + 2

    assert world.request("verbose_on", duration=5, restart=False)["ok"]
    asked = world.manager.state_calls
    world.clock.advance(5)
    world.guard.handle(Wakeup())  # the lease is due
    assert "Logs.Verbose=n" in world.conf.read_text()
    assert world.manager.state_calls == asked + 1


def test_a_finished_doctor_run_is_published_without_looking_again(world: World) -> None:
    running(world)

    class Finished:
        sample = (CheckSample("WG-AGENT-001", 0.0, 0.1, world.clock()),)

        def results(self) -> tuple[tuple[CheckSample, ...], Optional[bool]]:
            return self.sample, True

        def close(self) -> None:
            pass

    world.guard.checks = Finished()  # type: ignore[assignment]
    asked = world.manager.state_calls
    world.guard.handle(Wakeup())
    assert world.guard.published.checks == Finished.sample
    assert world.guard.published.backup_ready is True
    assert world.manager.state_calls == asked


def test_the_restart_a_request_asked_for_runs_in_the_same_wake_up(world: World) -> None:
    running(world)
    assert world.request("verbose_on", duration=60)["restart"] == "requested"
    world.guard.handle(Wakeup())
    assert world.manager.calls == ["restart"]


def test_the_timeout_is_the_nearest_deadline(world: World) -> None:
    running(world)
    guard = world.guard
    now = world.monotonic()
    assert guard.timeout() == pytest.approx(world.settings.daemon.tick_seconds)
    assert guard.timeout(now + 3) == pytest.approx(3)
    guard.restarts.next_wake = now + 2
    assert guard.timeout(now + 3) == pytest.approx(2)
    world.request("verbose_on", duration=1, restart=False)
    assert guard.timeout(now + 3) == pytest.approx(1)
    guard.restarts.next_wake = now - 5
    assert guard.timeout() == 0.0


# -- the error boundary --------------------------------------------------------------------

def test_a_keeper_that_raises_is_logged_and_the_loop_carries_on(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    running(world)
    guard = world.guard
    guard.dirty_since = world.monotonic()
    guard.restarts.next_wake = world.monotonic()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in a keeper")

    monkeypatch.setattr(guard.restarts, "apply", broken)
    with caplog.at_level(logging.ERROR):
        guard._guarded(guard.handle, Wakeup(agent_exited=True))
    assert "unexpected error (the guard carries on" in caplog.text
    assert "RuntimeError: a bug in a keeper" in caplog.text
    # Timers that would fire again at once wait for the next tick: no hot loop.
    assert guard.dirty_since is None and guard.restarts.next_wake is None
    assert guard.next_tick == world.monotonic() + world.settings.daemon.tick_seconds

    monkeypatch.undo()
    world.kill_agent()
    world.manager.unit_state = FAILED
    guard._guarded(guard.handle, Wakeup(agent_exited=True))  # the next wake-up works
    assert world.manager.calls == ["start"]


def test_the_lease_keeper_raising_does_not_stop_the_restart_side_next_time(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    running(world)
    guard = world.guard

    def broken(**kwargs: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(guard.leases, "expire_if_due", broken)
    with caplog.at_level(logging.ERROR):
        guard._guarded(guard.reconcile, "tick")
    assert "Input/output error" in caplog.text
    monkeypatch.undo()
    guard._guarded(guard.reconcile, "tick")
    assert guard.restarts.last_decision == ("none", "healthy")


# -- the doctor in the daemon ----------------------------------------------------------------

def quiet_runner(world: World) -> DoctorRunner:
    stat = (world.proc / "stat").read_text()
    sources = FactSources(cpu_stat=lambda: stat, sleep=lambda seconds: None, clock=world.clock)
    return DoctorRunner(world.guard.sysroot, world.settings, sources=sources, clock=world.clock)


def test_the_doctor_uses_the_published_observation_not_a_second_systemctl_show(
    world: World,
) -> None:
    running(world)
    pokes: list[int] = []
    worker = CheckWorker(
        quiet_runner(world), poke=lambda: pokes.append(1),
        observation=lambda: world.guard.published.observation, proc_root=world.proc,
    )
    asked = world.manager.state_calls
    worker.run_once()
    samples, ready = worker.results()
    assert world.manager.state_calls == asked
    assert pokes == [1]
    assert samples and {s.code for s in samples} >= {"WG-AGENT-001"}
    assert ready is not None
    by_code = {s.code: s for s in samples}
    assert by_code["WG-AGENT-001"].value == 0.0  # the agent runs (from the observation)


def test_pressure_is_sampled_per_tick_and_fed_to_the_next_run(world: World) -> None:
    running(world)
    (world.proc / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 50 kB\n")
    runner = quiet_runner(world)
    worker = CheckWorker(runner, poke=lambda: None,
                         observation=lambda: world.guard.published.observation,
                         proc_root=world.proc)
    worker.sample_pressure(world.clock() - 15)  # two ticks up to the published observation
    (world.proc / "stat").write_text("cpu 100 2 3 4\nbtime 1\n")
    worker.sample_pressure(world.clock())
    assert len(runner.memory_window) == 0  # queued: only the worker touches the windows
    worker.run_once()
    # Two tick samples plus the run's own one; the CPU one from the two /proc/stat reads.
    assert len(runner.memory_window) == 3
    assert runner.memory_window.latest() == 95.0
    assert len(runner.cpu_window) >= 1


def test_a_failing_doctor_run_is_logged_and_the_schedule_goes_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(DoctorRunner):
        def run(self, **kwargs: Any) -> list[Any]:
            raise RuntimeError("probe exploded")

    worker = CheckWorker(Broken(world.guard.sysroot, world.settings), poke=lambda: None,
                         observation=lambda: None, proc_root=world.proc)
    with caplog.at_level(logging.ERROR):
        worker.run_once()
    assert "doctor run failed" in caplog.text
    assert worker.results() == ((), None)


def test_unreadable_proc_files_skip_the_pressure_sample(world: World) -> None:
    worker = CheckWorker(quiet_runner(world), poke=lambda: None, observation=lambda: None,
                         proc_root=world.root / "no-proc")
    worker.sample_pressure(world.clock())  # nothing to read: no sample, no error
    worker.run_once()


def test_the_worker_thread_runs_and_stops(world: World) -> None:
    running(world)
    done = threading.Event()
    worker = CheckWorker(quiet_runner(world), poke=done.set,
                         observation=lambda: world.guard.published.observation,
                         proc_root=world.proc)
    worker.start()
    try:
        assert done.wait(30), "the doctor worker did not finish its first run"
    finally:
        worker.close()
    assert worker.results()[0]


# -- wiring with the real sources, in-process ------------------------------------------------

@pytest.fixture
def started(world: World) -> World:
    """The guard with its real event sources armed (control socket, inotify, signals,
    the metrics port on 127.0.0.1:0); closed by the world fixture."""
    world.start_agent()
    world.guard.start()
    world.guard.reconcile("start")
    return world


def test_a_control_request_wakes_the_loop_and_is_answered(started: World) -> None:
    guard = started.guard
    socket_path = started.root / "run/wg/control.sock"
    answers: list[dict[str, Any]] = []
    client = threading.Thread(
        target=lambda: answers.append(request(socket_path, {"op": "status"}, timeout=30))
    )
    client.start()
    woken = False
    try:
        # other sources (inotify of our own writes) may wake it first; the connection
        # and the request line may come in two wake-ups
        for _ in range(200):
            wakeup = guard.loop.wait(1)
            guard.handle(wakeup)
            woken = woken or "control" in wakeup.readable
            if woken and not client.is_alive():
                break
        assert woken
    finally:
        client.join(30)
    assert answers and answers[0]["ok"] and answers[0]["status"].startswith("agent ")


def test_a_file_event_wakes_the_loop(started: World) -> None:
    started.conf.write_text("Logs.Verbose=n\nExtensions.Enabled=n\n")
    wakeup = started.guard.loop.wait(30)
    while not wakeup.paths:  # a watchdog thread may post after the first poke
        wakeup = started.guard.loop.wait(30)
    assert str(started.conf) in wakeup.paths


def test_the_agents_churn_and_other_files_never_wake_the_loop(started: World) -> None:
    events = started.root / "var/lib/waagent/events"
    events.mkdir(parents=True, exist_ok=True)
    for index in range(5):
        (events / f"{index}.tld").write_text("{}")
        (started.root / "var/log/syslog").write_text(f"line {index}\n")
        (started.root / "etc/hosts").write_text(f"127.0.0.{index} x\n")
    # a file that matters, written last: once it arrives, everything above has been
    # dispatched by watchdog's one thread (in order)
    started.conf.write_text("Logs.Verbose=n\n")
    seen: set[str] = set()
    while str(started.conf) not in seen:
        seen |= started.guard.loop.wait(30).paths
    assert seen == {str(started.conf)}


HANDLER = "Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9225.0"


def test_an_extension_installed_after_start_is_watched_and_the_churn_never_is(
    started: World,
) -> None:
    lib = started.root / "var/lib/waagent"
    for churn in ("history", "events"):
        (lib / churn).mkdir(exist_ok=True)
    status = lib / HANDLER / "status"
    status.mkdir(parents=True)  # the agent installs the extension
    started.guard.reconcile("tick")  # the next look sees it
    watched = started.guard.loop.watched
    assert watched[lib] is False and watched[lib / HANDLER] is True
    assert lib / "history" not in watched and lib / "events" not in watched
    seen: set[str] = set()
    (status / "0.status").write_text("[]")
    while str(status / "0.status") not in seen:
        seen |= started.guard.loop.wait(30).paths
    (lib / HANDLER / "status" / "0.status").unlink()
    (status).rmdir()
    (lib / HANDLER).rmdir()  # uninstalled: the next look drops its watch
    started.guard.reconcile("tick")
    assert lib / HANDLER not in started.guard.loop.watched


def test_a_signal_wakes_the_loop(started: World) -> None:
    os.kill(os.getpid(), signal.SIGHUP)
    wakeup = started.guard.loop.wait(30)
    assert wakeup.signals == [signal.SIGHUP]


def test_the_metrics_port_serves_what_the_loop_published(started: World) -> None:
    assert started.guard.http is not None
    with urllib.request.urlopen(started.guard.http.url, timeout=30) as response:
        text = response.read().decode()
    assert "waagent_up 1.0" in text
    assert 'waagent_guard_decisions_total{action="none"} 1.0' in text


class StopWhenReady(FakeNotifier):
    """SIGTERM as soon as READY is sent: `serve()` runs its loop once, no timing involved."""

    watchdog_period: Optional[float] = 0.0

    def ready(self, status: Optional[str] = None) -> bool:
        super().ready(status)
        os.kill(os.getpid(), signal.SIGTERM)
        return True


def test_serve_arms_everything_says_ready_then_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.notifier = StopWhenReady()
    world.start_agent()
    try:
        assert world.guard.serve() == 0
    finally:
        world.close()
    messages = world.notifier.messages
    assert messages[0].startswith("STATUS agent ")
    assert any(m.startswith("READY agent ") for m in messages)
    assert "WATCHDOG" in messages and messages[-1] == "STOPPING"
    assert not (world.root / "run/wg/control.sock").exists()
    assert world.guard.checks is None and world.guard.http is None


def test_serve_once_returns_after_the_first_reconciliation(world: World) -> None:
    world.start_agent()
    assert world.guard.serve(once=True) == 0
    assert any(m.startswith("READY ") for m in world.notifier.messages)
    assert "STOPPING" not in world.notifier.messages


def test_a_watched_directory_that_cannot_be_stated_does_not_stop_restarts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An EACCES/EIO/ESTALE from stat on one watched directory (a log directory the
    guard cannot traverse, a flaky NFS Lib.Dir) once raised out of `reconcile` before
    `restarts.apply`: the guard never started the agent again. Now the watch is a
    problem logged, and the decision comes first anyway."""
    world.guard.loop.watch_directories([])  # the daemon's observer, as Guard.start does
    try:
        running(world)
        log_dir = str(world.root / "var/log")

        class FlakyOs:
            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

            def stat(self, path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
                if str(path) == log_dir:
                    raise PermissionError(13, "Permission denied", log_dir)
                return os.stat(path, *args, **kwargs)

        world.guard.loop.rewatch([])  # forget the watches: the next look adds them again
        monkeypatch.setattr(loop_module, "os", FlakyOs())
        assert "cannot watch (Permission denied)" in world.guard.loop.rewatch(
            [(Path(log_dir), False)])[0]
        world.kill_agent()
        world.manager.unit_state = FAILED
        world.guard._guarded(world.guard.handle, Wakeup(agent_exited=True))
        assert world.manager.calls == ["start"]
    finally:
        world.guard.loop.close()
