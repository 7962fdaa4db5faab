"""`waagent-guard run`: wiring and the event loop; the only place threads and signals meet.

One `Guard` owns the cached state. The loop wakes on a signal, a debounced file
event, the agent daemon's exit (pidfd), a control request, a policy timer or the
reconciliation tick; each wake-up ends in `reconcile()`, which observes, lets
the pure restart policy decide, acts through the service manager, persists the
decision state and publishes an immutable snapshot for scrapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from waagent_guard.agent.log import (
    LogSignals,
    LogTailer,
    RecordParser,
    guest_timezone,
)
from waagent_guard.agent.roots import ProcessFinder
from waagent_guard.agent.tail import READ_SLICE_BYTES
from waagent_guard.context import Context
from waagent_guard.daemon.loop import EventLoop, Wakeup
from waagent_guard.errors import GuardError
from waagent_guard.metrics import MetricsInput
from waagent_guard.observe import (
    Observation,
    assess,
    observe,
    read_log_signals,
    resolve_conf_path,
)
from waagent_guard.policy import PolicyState
from waagent_guard.settings import Settings
from waagent_guard.sysroot import Sysroot

if TYPE_CHECKING:
    from waagent_guard.lease import GuardState

log = logging.getLogger(__name__)


class Guard:
    """The daemon's state and decisions; `serve()` runs the loop."""

    def __init__(
        self,
        sysroot: Sysroot,
        settings: Settings,
        *,
        config_path: Path,
        manager: Any = None,
        notifier: Any = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from waagent_guard.daemon.notify import Notifier
        from waagent_guard.lease import load_state
        from waagent_guard.service import make_service_manager

        self.sysroot = sysroot
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self.monotonic = monotonic
        # One finder for the loop's observations and the manager's PID lookups: a full
        # /proc scan only every 20th look (agent/roots.py).
        self.find_processes = ProcessFinder()
        self.manager = (
            manager
            if manager is not None
            else make_service_manager(settings, sysroot, processes=self.find_processes)
        )
        self.notifier = notifier if notifier is not None else Notifier()
        self.state_path = sysroot.path(settings.daemon.state_file)
        self.state = load_state(self.state_path)
        self.conf_path = resolve_conf_path(sysroot, settings)
        # Counted across the guard's own restarts (state.json), so a counter never hides one.
        self.restarts_by_reason: dict[str, int] = dict(self.state.restart_counts)
        self.decisions_by_action: dict[str, int] = {}
        self.observation: Optional[Observation] = None
        self.published = MetricsInput(observation=None)
        self.loop = EventLoop(
            proc_root=sysroot.proc, proc_poll_seconds=settings.daemon.proc_poll_seconds
        )
        self.signals = LogSignals()
        self.tailer: Optional[LogTailer] = None
        self.parser: Optional[RecordParser] = None
        self.control: Any = None
        self.checks: Any = None
        self.http: Any = None
        self.next_tick = 0.0
        self.next_policy_wake: Optional[float] = None
        self.dirty_since: Optional[float] = None
        self.pending_paths: set[str] = set()
        self.stopping = False
        self.watch_problems: list[str] = []
        self.last_decision: Optional[tuple[str, str]] = None
        self.lease_retry_at: Optional[float] = None
        # A restart a control request asked for, run after its answer (verbose.py).
        self.pending_manual_restart: Optional[str] = None
        self.manual_restart_times: list[float] = []
        self._policy_state = self._load_policy_state()

    # -- start and stop --
    def start(self) -> None:
        """Arm every event source; READY is sent by `serve()` only after this returns."""
        settings = self.settings
        log_path = self.sysroot.path(settings.agent.log_path)
        self._open_tailer()
        try:
            self.signals = read_log_signals(log_path, self.sysroot)
        except GuardError as error:
            log.warning("%s", error)
        self.parser = RecordParser(tz=guest_timezone(self.sysroot.path("/etc/localtime")))
        self.loop.install_signal_handlers()
        self._start_control()
        self._start_metrics()
        self._start_checks()
        observation = self._observe()
        lib_dir = self.sysroot.path(observation.config.lib_dir)
        self.watch_problems = self.loop.watch_directories(
            [
                (observation.conf_path.parent, False),
                (log_path.parent, False),
                (lib_dir, True),
            ]
        )
        for problem in self.watch_problems:
            log.warning("%s", problem)

    def _start_control(self) -> None:
        from waagent_guard.daemon.control import ControlServer, group_id

        socket_path = self.sysroot.path(self.settings.control.socket)
        from waagent_guard.fsutil import make_directory

        make_directory(socket_path.parent, mode=0o755,
                       hint="run the daemon as root, or set control.socket to a writable path")
        self.control = ControlServer(
            socket_path, self.handle_request, allowed_gid=group_id(self.settings.control.group)
        )
        self.loop.register(self.control, "control")

    def _start_metrics(self) -> None:
        from waagent_guard.daemon.exporter import maybe_exporter

        self.http = maybe_exporter(
            self.settings.metrics, lambda: self.published, config_path=self.config_path
        )

    @property
    def metrics_url(self) -> Optional[str]:
        return self.http.url if self.http is not None else None

    def _published_log_signals(self) -> Optional[LogSignals]:
        """For other threads: the frozen copy published with the last observation."""
        observation = self.published.observation
        return observation.log if observation is not None else None

    def restart_checks(self) -> None:
        """A new doctor worker with the current settings (after a reload)."""
        if self.checks is not None:
            self.checks.close()
            self.checks = None
        self._start_checks()

    def _start_checks(self) -> None:
        from waagent_guard.daemon.doctor_worker import CheckWorker
        from waagent_guard.doctor.runner import DoctorRunner

        runner = DoctorRunner(self.sysroot, self.settings, clock=self.clock)
        self.checks = CheckWorker(
            runner,
            poke=self.loop.poke,
            manager=self.manager,
            proc_root=self.sysroot.proc,
            log_signals=self._published_log_signals,
        )
        self.checks.start()

    def close(self) -> None:
        if self.checks is not None:
            self.checks.close()
            self.checks = None
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.control is not None:
            self.loop.unregister(self.control)
            self.control.close()
            self.control = None
        if self.tailer is not None:
            self.tailer.close()
            self.tailer = None
        self.loop.close()

    # -- the loop --
    def serve(self, *, once: bool = False) -> int:
        try:
            self.start()
            self._guarded(self.reconcile, "start")
            self.notifier.ready(self.status_line())
            log.info("ready: %s", self.status_line())
            if once:
                return 0
            watchdog_period = self.notifier.watchdog_period
            next_ping = self.monotonic()
            while not self.stopping:
                now = self.monotonic()
                if watchdog_period is not None and now >= next_ping:
                    self.notifier.watchdog()
                    next_ping = now + watchdog_period
                wakeup = self.loop.wait(self._timeout(next_ping if watchdog_period else None))
                self._guarded(self._handle, wakeup)
            self.notifier.stopping("stopping")
            log.info("stopping")
            return 0
        finally:
            self.close()

    def _timeout(self, next_ping: Optional[float]) -> float:
        now = self.monotonic()
        deadlines = [self.next_tick]
        if next_ping is not None:
            deadlines.append(next_ping)
        if self.dirty_since is not None:
            deadlines.append(self.dirty_since + self.settings.daemon.debounce_seconds)
        if self.next_policy_wake is not None:
            deadlines.append(self.next_policy_wake)
        control_wake = self.control.wake_in() if self.control is not None else None
        if control_wake is not None:  # a control client's deadline (control.py)
            deadlines.append(now + control_wake)
        expiry = self.lease_due_at
        if expiry is not None:
            deadlines.append(now + max(0.0, expiry - self.clock()))
        return max(0.0, min(deadlines) - now)

    def _handle(self, wakeup: Wakeup) -> None:
        for signum in wakeup.signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            elif signum == signal.SIGHUP:
                self.reload()
        if self.stopping:
            return
        if self.control is not None and ("control" in wakeup.readable
                                         or self.control.wake_in() == 0.0):
            self.control.handle_ready()
        if self.pending_manual_restart is not None:
            from waagent_guard.daemon.leases import run_pending_restart

            run_pending_restart(self)  # the request was answered above
        now = self.monotonic()
        if wakeup.paths or (self.tailer is not None and self.tailer.more_pending):
            self._consume_log()
            self.pending_paths |= wakeup.paths
            if self.dirty_since is None:
                self.dirty_since = now
        if wakeup.agent_exited:
            log.info("the agent daemon exited")
            self.reconcile("agent exited")
            return
        due = now >= self.next_tick
        debounced = (
            self.dirty_since is not None
            and now >= self.dirty_since + self.settings.daemon.debounce_seconds
        )
        policy_due = self.next_policy_wake is not None and now >= self.next_policy_wake
        lease_due = self.lease_due_at is not None and self.clock() >= self.lease_due_at
        if due or policy_due or lease_due:
            self.reconcile("tick" if due else "timer")
        elif debounced:
            self._files_changed()
        elif self.checks is not None and self.checks.results()[0] is not self.published.checks:
            self._publish()  # the doctor worker finished a run

    # -- reconciliation --
    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        """The daemon's error boundary: a bug or an unexpected file is logged, never fatal.

        Timers that could fire again at once are pushed to the next tick, so a
        failure that repeats costs one attempt per tick, not a hot loop.
        """
        try:
            step(*args)
        except Exception:
            log.exception("unexpected error (the guard carries on; retrying at the next tick)")
            self.dirty_since = None
            self.next_policy_wake = None
            self.next_tick = self.monotonic() + self.settings.daemon.tick_seconds

    def _open_tailer(self) -> None:
        log_path = self.sysroot.path(self.settings.agent.log_path)
        try:
            self.tailer = LogTailer(log_path, from_start=False)
        except GuardError as error:
            log.warning("not following the agent log: %s (retrying at each tick)", error)
            self.tailer = None

    def _consume_log(self) -> None:
        if self.tailer is None or self.parser is None:
            return
        try:
            # Bounded: a huge backlog is read a slice per wake-up (memory stays flat and
            # the loop keeps serving its other sources and the watchdog in between).
            lines = self.tailer.read_lines(max_bytes=READ_SLICE_BYTES)
        except (GuardError, OSError) as error:
            log.warning("stopped following the agent log: %s (retrying at each tick)", error)
            self.tailer.close()
            self.tailer = None
            return
        for line in lines:
            for record in self.parser.feed(line):
                self.signals.update(record)
        if self.tailer.more_pending:
            self.loop.poke()

    def _files_changed(self) -> None:
        """Debounced file events: cheap work only (the tick and pidfd cover the rest).

        Log lines were already read as they came; a change elsewhere (waagent.conf,
        Lib.Dir: extension status, history) re-reads the files, but does not ask
        the service manager again: the agent's exit is seen through its pidfd.
        """
        paths, self.pending_paths = self.pending_paths, set()
        self.dirty_since = None
        if all(self._read_at_tick(path) for path in paths):
            self._publish()
            return
        self.reconcile("files", ask_manager=False)

    def _read_at_tick(self, path: str) -> bool:
        """Changes that need no look before the tick: log lines (already read as they
        came) and the agent's own status rewrites under history/ (every ~6 s)."""
        if os.path.dirname(path) == str(self.sysroot.path(self.settings.agent.log_path).parent):
            return True
        observation = self.observation
        if observation is None:
            return False
        history = os.path.join(str(self.sysroot.path(observation.config.lib_dir)), "history")
        return path == history or path.startswith(history + os.sep)

    def _observe(self, *, ask_manager: bool = True) -> Observation:
        self._consume_log()
        previous = self.observation
        observation = observe(
            self.sysroot,
            self.settings,
            manager=self.manager if ask_manager or previous is None else None,
            log_signals=self.signals,
            clock=self.clock,
            find_processes=self.find_processes,
        )
        if not ask_manager and previous is not None:
            observation = dataclasses.replace(
                observation,
                unit=previous.unit,
                unit_name=previous.unit_name,
                manager_name=previous.manager_name,
                unit_error=previous.unit_error,
                system_state=previous.system_state,
            )
        self.observation = observation
        self.loop.watch_pid(observation.daemon.pid if observation.daemon else None)
        return observation

    def reconcile(self, why: str, *, ask_manager: bool = True) -> None:
        if ask_manager:
            self.next_tick = self.monotonic() + self.settings.daemon.tick_seconds
            if self.tailer is None:
                self._open_tailer()
        observation = self._observe(ask_manager=ask_manager)
        if self.checks is not None and why == "tick":
            self.checks.sample_pressure(observation.time)
        self._expire_lease()
        self._apply_policy(observation)
        self._publish()
        self.notifier.status(self.status_line())
        log.debug("reconciled (%s): %s", why, self.status_line())

    def _apply_policy(self, observation: Observation) -> None:
        from waagent_guard.daemon.restarts import apply_policy

        self.next_policy_wake = apply_policy(self, observation)

    @property
    def policy_state(self) -> PolicyState:
        return self._policy_state

    def save_policy_state(self, state: PolicyState) -> None:
        self._policy_state = state
        self.set_state(
            self.state.model_copy(
                update={
                    "restart_policy": state.to_dict(),
                    "restart_counts": dict(self.restarts_by_reason),
                }
            )
        )

    def set_state(self, state: GuardState) -> None:
        """Keep and persist the durable state (a failed write is logged, never fatal)."""
        from waagent_guard.lease import save_state

        self.state = state
        try:
            save_state(self.state_path, state)
        except GuardError as error:
            log.error("cannot save the guard's state: %s", error)

    def _load_policy_state(self) -> PolicyState:
        try:
            return PolicyState.from_dict(self.state.restart_policy, str(self.state_path))
        except GuardError as error:
            log.warning("restart history ignored: %s", error)
            return PolicyState()

    def _publish(self) -> None:
        observation = self.observation
        if observation is not None:
            # Scrapes read from other threads: hand them a copy the loop will not change.
            observation = dataclasses.replace(observation, log=self.signals.snapshot())
        checks, backup_ready = self.checks.results() if self.checks is not None else ((), None)
        self.published = MetricsInput(
            checks=checks,
            backup_ready=backup_ready,
            observation=observation,
            restarts_by_reason=dict(self.restarts_by_reason),
            gave_up=self.gave_up,
            lease_expiry=self.lease_expiry,
            decisions_by_action=dict(self.decisions_by_action),
            last_reconcile=self.clock(),
        )

    @property
    def gave_up(self) -> bool:
        return self._policy_state.gave_up_since is not None

    def status_line(self) -> str:
        observation = self.observation
        if observation is None:
            return "starting"
        assessment = assess(observation)
        daemon = observation.daemon
        text = f"agent {assessment.health}"
        if daemon is not None:
            text += f" (pid {daemon.pid}, {observation.daemon_version or 'version ?'})"
        if self.gave_up:
            text += "; GAVE UP restarting (budget exhausted)"
        if assessment.reasons:
            text += f"; {assessment.reasons[0]}"
        return text

    # -- config reload --
    def reload(self) -> None:
        from waagent_guard.daemon.reload import reload

        reload(self)

    # -- verbose lease --
    @property
    def lease_expiry(self) -> Optional[float]:
        lease = self.state.verbose_lease
        return lease.expires_at if lease is not None else None

    @property
    def lease_due_at(self) -> Optional[float]:
        """When to try reverting the lease (later than its expiry after a failed revert)."""
        expiry = self.lease_expiry
        if expiry is None:
            return None
        return max(expiry, self.lease_retry_at or 0.0)

    def _expire_lease(self) -> None:
        from waagent_guard.daemon.leases import expire_if_due

        expire_if_due(self)

    def handle_request(self, request: dict[str, Any], peer: Any) -> dict[str, Any]:
        from waagent_guard.daemon.leases import handle_request

        try:
            return handle_request(self, request, peer)
        except GuardError as error:
            return {"ok": False, "error": error.message}


def run(args: argparse.Namespace, context: Context) -> int:
    """The systemd service's ExecStart."""
    from waagent_guard.logsetup import configure_daemon_logging

    settings = context.settings()
    configure_daemon_logging("debug" if context.debug else settings.logging.level)
    guard = Guard(context.sysroot, settings, config_path=context.effective_config_path)
    return guard.serve(once=bool(getattr(args, "once", False)))
