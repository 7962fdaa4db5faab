"""`waagent-guard run`: the wiring and the event loop; the only place threads and signals meet.

`Guard` wires the keepers and owns only the loop's own state (timers, the last
observation, the published snapshot). The loop wakes on a signal, a debounced
file event, the agent daemon's exit (pidfd), a control request, a policy timer
or the reconciliation tick; each wake-up ends in the one `reconcile(why)`,
which observes, lets the `LeaseKeeper` revert an expired lease, lets the
`RestartKeeper` decide and act, and publishes an immutable snapshot for scrapes.

Keepers (daemon/restarts.py, leases.py, logfeed.py, doctor_worker.py) own their
state, take explicit values and never import this module; `reload.py` is a pure
settings diff this module applies.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

from waagent_guard.agent.conf import clean_stale_edits
from waagent_guard.agent.roots import ProcessFinder
from waagent_guard.context import Context
from waagent_guard.daemon.control import ControlServer, group_id
from waagent_guard.daemon.doctor_worker import CheckWorker
from waagent_guard.daemon.exporter import Exporter, maybe_exporter
from waagent_guard.daemon.leases import LeaseKeeper, Peer
from waagent_guard.daemon.logfeed import LogFeed
from waagent_guard.daemon.loop import EventLoop, Interest, Wakeup
from waagent_guard.daemon.notify import Notifier, ServiceNotifier
from waagent_guard.daemon.reload import ReloadPlan, plan_reload
from waagent_guard.daemon.restarts import RestartKeeper
from waagent_guard.daemon.state import StateFile
from waagent_guard.doctor.runner import DoctorRunner
from waagent_guard.errors import ConfigError, GuardError
from waagent_guard.fsutil import make_directory
from waagent_guard.logsetup import MESSAGE_IDS, configure_daemon_logging, parse_level
from waagent_guard.metrics import MetricsInput
from waagent_guard.observe import Observation, assess, observe, resolve_conf_path, unit_facts
from waagent_guard.service import make_service_manager
from waagent_guard.service.manager import ServiceManager
from waagent_guard.settings import Settings, load_settings
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

ManagerFactory = Callable[[Settings, Sysroot], ServiceManager]

# The reconciliation a debounced file event asks for: it re-reads files but does not
# ask the service manager again (the agent's exit is seen through its pidfd).
FILES = "files"
# While the agent daemon runs steadily as the unit's main process, a tick asks the
# service manager (two `systemctl` runs) only every MANAGER_EVERY_TICKS-th time: the
# daemon's exit wakes the loop through its pidfd and that look asks at once, and a
# tick that finds another daemon PID (or none) asks too.
MANAGER_EVERY_TICKS = 4
# Directories under Lib.Dir the agent rewrites all the time and the guard never reads.
AGENT_CHURN_DIRS = ("history", "events")


def watched_directories(observation: Observation, log_path: Path) -> list[tuple[Path, bool]]:
    """What the guard watches, as (directory, recursive): waagent.conf's and the log's
    directories, Lib.Dir itself (its own files and new directories), and inside it only
    what the guard reads: each extension handler's directory (its status/ and config/)
    and each downloaded agent's (its error.json). Not the agent's history/ and events/,
    which it rewrites every few seconds: their events would wake watchdog's threads
    for nothing. The list follows each look (`EventLoop.rewatch`)."""
    lib = observation.lib
    return [
        (observation.conf_path.parent, False),
        (log_path.parent, False),
        (lib.lib_dir, False),
        *((handler.directory, True) for handler in lib.handlers),
        *((lib.lib_dir / f"WALinuxAgent-{agent.version}", False) for agent in lib.agent_versions),
    ]


def file_interest(
    path: str, event_type: str, *, conf_path: str, log_path: str, lib_dir: str
) -> Interest:
    """What a file event at `path` is worth before the tick (`EventLoop`'s Interest).

    Of waagent.conf's and the log's directories (`watched_directories`) only those two
    files matter: /etc and /var/log are written by everything else on the VM (syslog,
    journald's files, other daemons), and each of their events would otherwise cost a
    wake-up. New log lines (the log "modified") are read in batches
    (`daemon.log_batch_seconds`): an agent that logs an error every 2 s would otherwise
    wake the guard every 2 s; the log moved, deleted or created (a rotation) wakes it at
    once, so the tailer keeps the rotated file open before the next one. Under Lib.Dir
    everything watched matters (its own files, extension status, new directories) except
    the creation of what the agent rewrites all the time and the guard never reads
    (AGENT_CHURN_DIRS: history/ every ~6 s, events/ a file per logged error). The tick
    still looks at everything.
    """
    if path == log_path:  # "closed": watchdog < 4.0 reports the writer's closes too
        return "batch" if event_type in ("modified", "closed") else "now"
    if path == conf_path:
        return "now"
    prefix = lib_dir.rstrip(os.sep) + os.sep
    if path != lib_dir and not path.startswith(prefix):
        return "ignore"
    relative = path[len(prefix):]
    return "ignore" if relative.split(os.sep, 1)[0] in AGENT_CHURN_DIRS else "now"


class Guard:
    """The daemon: wires the keepers; `serve()` runs the loop."""

    def __init__(
        self,
        sysroot: Sysroot,
        settings: Settings,
        *,
        config_path: Path,
        manager: Optional[ServiceManager] = None,
        notifier: Optional[ServiceNotifier] = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        make_manager: Optional[ManagerFactory] = None,
    ) -> None:
        self.sysroot = sysroot
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self.monotonic = monotonic
        # One finder for the loop's observations and the manager's PID lookups: a full
        # /proc scan only every 20th look (agent/roots.py).
        self.find_processes = ProcessFinder()
        # Called again after a reload that changes [agent].
        self.make_manager: ManagerFactory = (
            make_manager
            if make_manager is not None
            else lambda new, root: make_service_manager(new, root, processes=self.find_processes)
        )
        self.manager: ServiceManager = (
            manager if manager is not None else self.make_manager(settings, sysroot)
        )
        self.notifier: ServiceNotifier = notifier if notifier is not None else Notifier()
        self.store = StateFile(sysroot.path(settings.daemon.state_file))
        self.restarts = RestartKeeper(
            self.manager, settings.restart, self.store, monotonic=monotonic
        )
        self.leases = LeaseKeeper(
            self.store,
            conf_path=resolve_conf_path(sysroot, settings),
            settings=settings.verbose,
            manager=self.manager,
            retry_seconds=settings.daemon.tick_seconds,
            count_restart=lambda: self.restarts.count_restart("manual"),
            clock=clock,
            sysroot=sysroot,
        )
        self.feed = LogFeed(sysroot, sysroot.path(settings.agent.log_path))
        self.loop = EventLoop(
            proc_root=sysroot.proc, proc_poll_seconds=settings.daemon.proc_poll_seconds
        )
        self.observation: Optional[Observation] = None
        self.published = MetricsInput(observation=None)
        self.control: Optional[ControlServer] = None
        self.http: Optional[Exporter] = None
        self.checks: Optional[CheckWorker] = None
        self.next_tick = 0.0
        self.ticks_since_manager = 0
        self.dirty_since: Optional[float] = None
        self.log_batch_until: Optional[float] = None  # see _batch_log
        self.stopping = False

    # -- start and stop --
    def start(self) -> None:
        """Arm every event source; READY is sent by `serve()` only after this returns."""
        clean_stale_edits(self.leases.conf_path, self.sysroot)  # a guard killed mid-edit
        self.feed.start()
        self.loop.install_signal_handlers()
        self._start_control()
        self.http = maybe_exporter(
            self.settings.metrics, lambda: self.published, config_path=self.config_path
        )
        observation = self._observe()
        problems = self.loop.watch_directories(
            watched_directories(observation, self.feed.log_path), interest=self._interest
        )
        for problem in problems:
            log.warning("%s", problem)

    def _start_control(self) -> None:
        socket_path = self.sysroot.path(self.settings.control.socket)
        make_directory(socket_path.parent, mode=0o755,
                       hint="run the daemon as root, or set control.socket to a writable path")
        self.control = ControlServer(
            socket_path, self.handle_request, allowed_gid=group_id(self.settings.control.group)
        )
        self.loop.register(self.control, "control")

    def start_checks(self) -> None:
        """A (new) doctor worker with the current settings, on the published observation."""
        if self.checks is not None:
            self.checks.close()
        self.checks = CheckWorker(
            DoctorRunner(self.sysroot, self.settings, clock=self.clock),
            poke=self.loop.poke,
            observation=lambda: self.published.observation,
            proc_root=self.sysroot.proc,
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
        self.feed.close()
        self.loop.close()

    # -- the loop --
    def serve(self, *, once: bool = False) -> int:
        try:
            self.start()
            self._guarded(self.reconcile, "start")
            self.start_checks()  # after the first observation was published
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
                wakeup = self.loop.wait(self.timeout(next_ping if watchdog_period else None))
                self._guarded(self.handle, wakeup)
            self.notifier.stopping("stopping")
            log.info("stopping")
            return 0
        finally:
            self.close()

    def timeout(self, next_ping: Optional[float] = None) -> float:
        """Seconds until the loop must wake by itself (the nearest deadline)."""
        now = self.monotonic()
        deadlines = [self.next_tick]
        if next_ping is not None:
            deadlines.append(next_ping)
        if self.dirty_since is not None:
            deadlines.append(self.dirty_since + self.settings.daemon.debounce_seconds)
        if self.log_batch_until is not None:
            deadlines.append(self.log_batch_until)
        if self.restarts.next_wake is not None:
            deadlines.append(self.restarts.next_wake)
        control_wake = self.control.wake_in() if self.control is not None else None
        if control_wake is not None:  # a control client's deadline (control.py)
            deadlines.append(now + control_wake)
        lease_due = self.leases.due_at
        if lease_due is not None:
            deadlines.append(now + max(0.0, lease_due - self.clock()))
        return max(0.0, min(deadlines) - now)

    def handle(self, wakeup: Wakeup) -> None:
        """One wake-up of the loop: what happened decides which reconciliation runs."""
        for signum in wakeup.signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            elif signum == signal.SIGHUP:
                self.reload()
        if self.stopping:
            return
        if self.control is not None and ("control" in wakeup.readable
                                         or self.control.wake_in() == 0.0):
            self.control.handle_ready()  # also a client's deadline (control.py)
        self.run_pending_restart()  # the request was answered above
        now = self.monotonic()
        log_path = str(self.feed.log_path)
        if wakeup.paths or self.feed.more_pending:
            self._consume_log()
            if wakeup.paths - {log_path}:  # waagent.conf, Lib.Dir
                if self.dirty_since is None:
                    self.dirty_since = now
            elif self.dirty_since is None:
                self._publish()  # only new log lines: counted above, published now
        self._batch_log(log_path in wakeup.paths, now)
        if wakeup.agent_exited:
            log.info("the agent daemon exited")
            self.reconcile("agent exited")
            return
        due = now >= self.next_tick
        debounced = (
            self.dirty_since is not None
            and now >= self.dirty_since + self.settings.daemon.debounce_seconds
        )
        wake = self.restarts.next_wake
        policy_due = wake is not None and now >= wake
        lease_due = self.leases.due_at is not None and self.clock() >= self.leases.due_at
        if due or policy_due or lease_due:
            self.reconcile("tick" if due else "timer")
        elif debounced:
            self._files_changed()
        elif self.checks is not None and self.checks.results()[0] is not self.published.checks:
            self._publish()  # the doctor worker finished a run

    def _batch_log(self, lines_came: bool, now: float) -> None:
        """While log lines keep coming, read them once per `daemon.log_batch_seconds`:
        the first line after a quiet spell wakes the loop and opens a batch, the lines
        within it are only queued (`EventLoop.batching`), and the loop comes back at its
        end; a batch in which no line came is closed (the next line wakes the loop)."""
        seconds = self.settings.daemon.log_batch_seconds
        due = self.log_batch_until is not None and now >= self.log_batch_until
        if lines_came and seconds > 0 and (self.log_batch_until is None or due):
            self.log_batch_until = now + seconds
            self.loop.batching = True
        elif due or (self.log_batch_until is not None and seconds == 0):
            self.log_batch_until = None
            self.loop.end_batch()

    def run_pending_restart(self) -> None:
        """The restart a control request asked for, after its answer was sent."""
        why = self.leases.run_pending_restart()
        if why is not None:
            self.reconcile(why)

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
            self.restarts.next_wake = None
            self.next_tick = self.monotonic() + self.settings.daemon.tick_seconds

    def _consume_log(self) -> None:
        self.feed.consume()
        if self.feed.more_pending:
            self.loop.poke()

    def _files_changed(self) -> None:
        """Debounced file events (waagent.conf, Lib.Dir): the files are read again, but
        the service manager is not asked: the agent's exit is seen through its pidfd."""
        self.dirty_since = None
        self.reconcile(FILES)

    def _interest(self, path: str, event_type: str) -> Interest:
        """`file_interest` for the current observation (called on watchdog's thread)."""
        observation = self.observation
        if observation is None:
            return "now"
        interest = file_interest(
            path,
            event_type,
            conf_path=str(observation.conf_path),
            log_path=str(self.feed.log_path),
            lib_dir=str(observation.lib.lib_dir),
        )
        if interest == "batch" and self.settings.daemon.log_batch_seconds == 0:
            return "now"
        return interest

    def _observe(self, *, ask_manager: bool = True, steady_tick: bool = False,
                 steady_ask: bool = False) -> Observation:
        self._consume_log()
        previous = self.observation
        asking = ask_manager or previous is None
        observation = observe(
            self.sysroot,
            self.settings,
            manager=self.manager if asking and not steady_ask else None,
            log_signals=self.feed.signals,
            clock=self.clock,
            find_processes=self.find_processes,
        )
        if previous is not None and (steady_ask or not asking):
            # Not a full ask: a steady tick carries the unit's facts over; the periodic ask
            # while the agent runs steadily reads the unit only (the system state matters
            # only to a decision to act, and a look that finds the agent down asks for it).
            if steady_ask:
                unit, unit_error, _ = unit_facts(self.manager, system_state=False)
            else:
                unit, unit_error = previous.unit, previous.unit_error
            system_state = previous.system_state
            daemon = observation.daemon
            if (steady_ask or steady_tick) and (
                daemon is None or unit is None or unit.main_pid != daemon.pid
            ):  # not the daemon the manager last named: ask for everything now
                unit, unit_error, system_state = unit_facts(self.manager)
                asking = True
            observation = dataclasses.replace(
                observation,
                unit=unit,
                unit_name=previous.unit_name,
                manager_name=previous.manager_name,
                unit_error=unit_error,
                system_state=system_state,
            )
        if asking:
            self.ticks_since_manager = 0
        self.observation = observation
        self.loop.watch_pid(observation.daemon.pid if observation.daemon else None)
        return observation

    def reconcile(self, why: str) -> None:
        """The one reconciliation: observe, expire the lease, decide and act, publish.

        `why` is logged; `FILES` (a debounced file event) does not ask the service
        manager again and does not move the tick."""
        ask_manager = why != FILES
        if ask_manager:
            self.next_tick = self.monotonic() + self.settings.daemon.tick_seconds
            if not self.feed.following:
                self.feed.open()
        steady_tick = why == "tick" and self._steady()
        observation = self._observe(
            ask_manager=ask_manager and not steady_tick, steady_tick=steady_tick,
            steady_ask=why == "tick" and not steady_tick and self._was_steady(),
        )
        if self.checks is not None and why == "tick":
            self.checks.sample_pressure(observation.time)
        self.leases.expire_if_due(agent_running=observation.daemon is not None)
        self.restarts.apply(observation)
        # After the decision: what cannot be watched never keeps the agent down.
        for problem in self.loop.rewatch(watched_directories(observation, self.feed.log_path)):
            log.debug("%s", problem)  # e.g. gone since the look: the next one drops it
        self._publish()
        self.notifier.status(self.status_line())
        log.debug("reconciled (%s): %s", why, self.status_line())

    def _steady(self) -> bool:
        """Whether this tick may skip the service manager (see MANAGER_EVERY_TICKS)."""
        self.ticks_since_manager += 1
        if self.ticks_since_manager >= MANAGER_EVERY_TICKS:
            return False
        return self._was_steady()

    def _was_steady(self) -> bool:
        """The last look found the agent daemon running as its active unit's MainPID."""
        previous = self.observation
        if previous is None:
            return False
        unit, daemon = previous.unit, previous.daemon
        return (
            unit is not None
            and previous.unit_error is None
            and daemon is not None
            and unit.active_state == "active"
            and unit.main_pid == daemon.pid
            and unit.job is None
        )

    def _publish(self) -> None:
        observation = self.observation
        if observation is not None:
            # Scrapes read from other threads: hand them a copy the loop will not change.
            observation = dataclasses.replace(observation, log=self.feed.signals.snapshot())
        checks, backup_ready = self.checks.results() if self.checks is not None else ((), None)
        self.published = MetricsInput(
            checks=checks,
            backup_ready=backup_ready,
            observation=observation,
            restarts_by_reason=dict(self.restarts.restarts_by_reason),
            gave_up=self.restarts.gave_up,
            lease_expiry=self.leases.expiry,
            decisions_by_action=dict(self.restarts.decisions_by_action),
            last_reconcile=self.clock(),
        )

    def status_line(self) -> str:
        observation = self.observation
        if observation is None:
            return "starting"
        assessment = assess(observation)
        daemon = observation.daemon
        text = f"agent {assessment.health}"
        if daemon is not None:
            text += f" (pid {daemon.pid}, {observation.daemon_version or 'version ?'})"
        if self.restarts.gave_up:
            text += "; GAVE UP restarting (budget exhausted)"
        if assessment.reasons:
            text += f"; {assessment.reasons[0]}"
        return text

    # -- config reload (SIGHUP) --
    def reload(self) -> None:
        """Load guard.toml again and apply it; an invalid file keeps the old settings."""
        self.notifier.reloading("reloading configuration")
        try:
            settings = load_settings(self.config_path)
        except ConfigError as error:
            log.error(
                "configuration not reloaded, keeping the old one: %s",
                error,
                extra={"MESSAGE_ID": MESSAGE_IDS["config_invalid"]},
            )
            self.notifier.ready(f"config reload failed, old config kept: {error}"[:200])
            return
        self.apply_settings(settings)
        log.info(
            "configuration reloaded from %s",
            self.config_path,
            extra={"MESSAGE_ID": MESSAGE_IDS["config_reload"]},
        )
        self.reconcile("reload")
        self.notifier.ready(self.status_line())

    def apply_settings(self, new: Settings) -> ReloadPlan:
        """Apply what `plan_reload` says can change in place; name the rest."""
        plan = plan_reload(self.settings, new)
        self.settings = new
        self.restarts.settings = new.restart
        self.leases.settings = new.verbose
        self.leases.retry_seconds = new.daemon.tick_seconds
        if plan.new_manager:
            self.manager = self.make_manager(new, self.sysroot)
            self.restarts.manager = self.manager
            self.leases.manager = self.manager
            self.leases.conf_path = resolve_conf_path(self.sysroot, new)
        if plan.reopen_log:
            self.feed.move_to(self.sysroot.path(new.agent.log_path))
        if plan.restart_doctor and self.checks is not None:
            self.start_checks()
        if plan.log_level:
            logging.getLogger().setLevel(parse_level(new.logging.level))
        if plan.at_next_start:
            log.warning(
                "changed settings that apply at the next restart of the guard: %s",
                ", ".join(plan.at_next_start),
            )
        return plan

    # -- control requests --
    def handle_request(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Answer one control request (in the loop thread: no locking needed)."""
        if request.get("op") == "status":
            return {"ok": True, "status": self.status_line()}
        try:
            reply = self.leases.handle(request, peer)
            if reply.reconcile is not None:
                self.reconcile(reply.reconcile)
        except GuardError as error:
            return {"ok": False, "error": error.message}
        return reply.answer


def run(args: argparse.Namespace, context: Context) -> int:
    """The systemd service's ExecStart."""
    settings = context.settings()
    configure_daemon_logging("debug" if context.debug else settings.logging.level)
    guard = Guard(context.sysroot, settings, config_path=context.effective_config_path)
    return guard.serve(once=bool(getattr(args, "once", False)))
