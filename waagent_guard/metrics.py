"""Prometheus metrics over a registry passed in; no global state.

The daemon publishes an immutable `MetricsInput` after each reconciliation; the
collector renders it on scrape, so a scrape never waits on a probe, a file or
a service manager. Label sets are bounded and initialised at start (restart
reasons, log levels, catalogue events, doctor checks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from waagent_guard import __version__
from waagent_guard.agent.record import LEVELS
from waagent_guard.observe import HEALTH_EXIT_CODES, UNKNOWN, Observation, assess
from waagent_guard.redact import redact_text

LOG_LEVELS = LEVELS  # the agent's levels, one series each

# `waagent_guard_check_status` values (doctor.findings maps each status to one of these).
CHECK_STATUS_HELP = "Doctor check result: 0 ok, 1 warn, 2 fail, 3 skipped or not run yet, 4 error"
CHECK_NOT_RUN = 3


@dataclass(frozen=True)
class CheckSample:
    """One doctor check's latest result, as the daemon exports it."""

    code: str
    value: int  # Finding.metric_value: 0 ok, 1 warn, 2 fail, 3 skipped, 4 error
    duration_seconds: float
    last_run: float


@dataclass(frozen=True)
class MetricsInput:
    observation: Optional[Observation]
    restarts_by_reason: Mapping[str, int] = field(default_factory=dict)
    gave_up: bool = False
    lease_expiry: Optional[float] = None
    checks: Sequence[CheckSample] = ()
    backup_ready: Optional[bool] = None
    decisions_by_action: Mapping[str, int] = field(default_factory=dict)
    last_reconcile: Optional[float] = None



LABEL_MAX_CHARS = 128


def label_value(value: Optional[str]) -> str:
    """A label value read from a guest file: redacted and bounded, since a hostile
    log line or directory name must reach neither a scrape nor a fleet's TSDB."""
    if not value:
        return ""
    return redact_text(value)[:LABEL_MAX_CHARS]

def _gauge(name: str, documentation: str, value: Optional[float]) -> Optional[GaugeMetricFamily]:
    if value is None:
        return None
    return GaugeMetricFamily(name, documentation, value=float(value))


def _bool(value: Optional[bool]) -> Optional[float]:
    return None if value is None else (1.0 if value else 0.0)


def build_families(
    data: MetricsInput,
    *,
    restart_reasons: Sequence[str],
    event_names: Sequence[str],
    check_codes: Sequence[str] = (),
    decision_actions: Sequence[str] = (),
) -> list[Metric]:
    """Pure: the metric families for one published state."""
    families: list[Optional[Metric]] = []
    build = InfoMetricFamily("waagent_guard_build", "waagent-guard build information")
    build.add_metric([], {"version": __version__})
    families.append(build)

    restarts = CounterMetricFamily(
        "waagent_guard_restarts", "Agent restarts made by the guard, by reason", labels=["reason"]
    )
    for reason in restart_reasons:
        restarts.add_metric([reason], float(data.restarts_by_reason.get(reason, 0)))
    families.append(restarts)
    if decision_actions:
        decisions = CounterMetricFamily(
            "waagent_guard_decisions",
            "Restart-policy decisions taken, by action",
            labels=["action"],
        )
        for action in decision_actions:
            decisions.add_metric([action], float(data.decisions_by_action.get(action, 0)))
        families.append(decisions)
    families.append(
        _gauge(
            "waagent_guard_restart_gave_up",
            "1 while the guard has given up restarting the agent (budget exhausted)",
            _bool(data.gave_up),
        )
    )
    families.append(
        _gauge(
            "waagent_guard_last_reconcile_timestamp_seconds",
            "When the guard last observed the agent",
            data.last_reconcile,
        )
    )
    families.append(
        _gauge(
            "waagent_verbose_lease_expiry_timestamp_seconds",
            "When the Logs.Verbose lease reverts (0: no lease)",
            data.lease_expiry or 0.0,
        )
    )
    families.extend(_check_families(data, check_codes))
    observation = data.observation
    if observation is not None:
        families.extend(_agent_families(observation, event_names))
    return [family for family in families if family is not None]


def _check_families(data: MetricsInput, check_codes: Sequence[str]) -> Iterable[Optional[Metric]]:
    if not check_codes:
        return []
    by_code = {sample.code: sample for sample in data.checks}
    status = GaugeMetricFamily(
        "waagent_guard_check_status",
        CHECK_STATUS_HELP,
        labels=["check"],
    )
    duration = GaugeMetricFamily(
        "waagent_guard_check_duration_seconds", "Doctor check duration", labels=["check"]
    )
    for code in check_codes:
        sample = by_code.get(code)
        status.add_metric([code], float(sample.value if sample else CHECK_NOT_RUN))
        duration.add_metric([code], sample.duration_seconds if sample else 0.0)
    # One series, not one per check (they run together): the cardinality budget,
    # monitoring/README.md. Alert on its age to see a doctor that stopped running.
    last_run = GaugeMetricFamily(
        "waagent_guard_doctor_last_run_timestamp_seconds",
        "When the doctor's checks last ran (0: not yet)",
        value=max((sample.last_run for sample in data.checks), default=0.0),
    )
    ready = _gauge(
        "waagent_backup_ready",
        "1 when every check of the backup guide's causes passes and the agent runs",
        _bool(data.backup_ready),
    )
    return [status, duration, last_run, ready]


def _agent_families(
    observation: Observation, event_names: Sequence[str]
) -> Iterable[Optional[Metric]]:
    config = observation.config
    unit = observation.unit
    health = assess(observation).health
    unknown = observation.unknown is not None and observation.daemon is None
    yield _gauge(
        "waagent_guard_observation_ok",
        "1 when the guard could read /proc and the service manager; 0: the agent's state is "
        "unknown (the guard never acts on it)",
        _bool(observation.unknown is None),
    )
    yield _gauge(
        "waagent_up",
        "1 when the agent daemon process runs (NaN: unknown, see waagent_guard_observation_ok)",
        math.nan if unknown else _bool(observation.daemon is not None),
    )
    yield _gauge(
        "waagent_exthandler_up",
        "1 when the ExtHandler (goal-state agent) process runs",
        _bool(observation.exthandler is not None),
    )
    if health != UNKNOWN:  # unknown is left out, never a number (waagent_guard_observation_ok)
        yield _gauge(
            "waagent_health_status",
            "Agent health: 0 healthy, 1 degraded, 2 down",
            float(HEALTH_EXIT_CODES[health]),
        )
    yield _unreadable_family(observation)
    info = GaugeMetricFamily(
        "waagent_info",
        "The agent's versions and unit (always 1)",
        labels=["daemon_version", "goal_state_version", "unit"],
    )
    info.add_metric(
        [
            label_value(observation.daemon_version),
            label_value(observation.goal_state_version),
            label_value(observation.unit_name),
        ],
        1.0,
    )
    yield info
    start = GaugeMetricFamily(
        "waagent_process_start_time_seconds", "Agent process start time", labels=["role"]
    )
    rss = GaugeMetricFamily(
        "waagent_process_resident_memory_bytes", "Agent process resident memory", labels=["role"]
    )
    cpu = CounterMetricFamily(
        "waagent_process_cpu_seconds", "Agent process CPU time (user + system)", labels=["role"]
    )
    for process in observation.processes:
        if process.start_time is not None:
            start.add_metric([process.role], process.start_time)
        if process.rss_bytes is not None:
            rss.add_metric([process.role], float(process.rss_bytes))
        if process.cpu_seconds is not None:
            cpu.add_metric([process.role], process.cpu_seconds)
    yield start
    yield rss
    yield cpu
    if unit is not None:
        yield _gauge(
            "waagent_unit_restarts",
            "NRestarts of the agent unit (automatic restarts)",
            float(unit.n_restarts or 0),
        )
        yield _gauge(
            "waagent_unit_autorestart",
            "1 when the agent unit restarts itself (Restart=)",
            _bool(unit.autorestart),
        )
    conf_known = observation.conf_blocked is None  # else the values would be the defaults
    yield _gauge(
        "waagent_config_verbose_enabled",
        "Logs.Verbose in waagent.conf",
        _bool(config.logs_verbose) if conf_known else None,
    )
    yield _gauge(
        "waagent_config_extensions_enabled",
        "Extensions.Enabled in waagent.conf",
        _bool(config.extensions_enabled) if conf_known else None,
    )
    yield _gauge(
        "waagent_config_last_change_timestamp_seconds",
        "Modification time of waagent.conf",
        observation.conf_mtime,
    )
    yield _gauge(
        "waagent_config_autoupdate_enabled",
        "Effective agent auto-update setting",
        _bool(config.auto_update) if conf_known else None,
    )
    extensions = GaugeMetricFamily(
        "waagent_extension_info",
        "Installed extension handlers (always 1)",
        labels=["name", "version", "state"],
    )
    for handler in observation.lib.handlers:
        extensions.add_metric(
            [label_value(handler.name), label_value(handler.version),
             label_value(handler.handler_state)],
            1.0,
        )
    yield extensions
    yield _gauge(
        "waagent_vmsnapshot_installed",
        "1 when the VMSnapshot backup extension is installed",
        _bool(observation.vmsnapshot is not None) if observation.vmsnapshot_known else None,
    )
    yield _gauge(
        "waagent_vmsnapshot_version_ok",
        "1 when VMSnapshot is at least the configured minimum version",
        _bool(observation.vmsnapshot_version_ok),
    )
    signals = observation.log
    if observation.log_blocked is not None:
        return  # counts of an unreadable log are unknown, not 0
    records = CounterMetricFamily(
        "waagent_log_records", "waagent.log records read by the guard, by level", labels=["level"]
    )
    for level in LOG_LEVELS:
        records.add_metric([level], float(signals.counts_by_level.get(level, 0)))
    yield records
    events = CounterMetricFamily(
        "waagent_log_events", "Known waagent.log events seen by the guard", labels=["event"]
    )
    for name in event_names:
        stat = signals.events.get(name)
        events.add_metric([name], float(stat.count if stat is not None else 0))
    yield events
    if signals.last_record_time is not None:
        yield _gauge(
            "waagent_log_last_record_timestamp_seconds",
            "Newest waagent.log record",
            signals.last_record_time.timestamp(),
        )
    # Always present, so `time() - heartbeat` alerts can tell "stale" from "unknown".
    yield _gauge(
        "waagent_log_readable",
        "1 when waagent.log was read; 0 when missing or unreadable (log series are unknown)",
        _bool(observation.log_readable),
    )
    if signals.last_heartbeat is not None:
        yield _gauge(
            "waagent_last_heartbeat_timestamp_seconds",
            "Newest [HEARTBEAT] record",
            signals.last_heartbeat.timestamp(),
        )


def _unreadable_family(observation: Observation) -> Metric:
    """1 per observed input (waagent.conf, waagent.log, Lib.Dir, pidfile) that could not be read.

    The label is the input's host path (at most four values), not every file under it.
    """
    family = GaugeMetricFamily(
        "waagent_guard_unreadable",
        "1 when an input of the guard exists but could not be read (run as root); "
        "its series are left out rather than exported as 0",
        labels=["path"],
    )
    for path in sorted({entry.input for entry in observation.blocked}):
        family.add_metric([path], 1.0)
    return family


# Every family `build_families` can emit (name without the type's suffix, type). The
# registry learns a collector's names from `describe()`, which is what makes
# `/metrics?name[]=...` work; a test checks this list against a maximal exposition.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("waagent_guard_build", "info"),
    ("waagent_guard_restarts", "counter"),
    ("waagent_guard_decisions", "counter"),
    ("waagent_guard_restart_gave_up", "gauge"),
    ("waagent_guard_last_reconcile_timestamp_seconds", "gauge"),
    ("waagent_verbose_lease_expiry_timestamp_seconds", "gauge"),
    ("waagent_guard_check_status", "gauge"),
    ("waagent_guard_check_duration_seconds", "gauge"),
    ("waagent_guard_doctor_last_run_timestamp_seconds", "gauge"),
    ("waagent_backup_ready", "gauge"),
    ("waagent_guard_observation_ok", "gauge"),
    ("waagent_up", "gauge"),
    ("waagent_exthandler_up", "gauge"),
    ("waagent_health_status", "gauge"),
    ("waagent_guard_unreadable", "gauge"),
    ("waagent_info", "gauge"),
    ("waagent_process_start_time_seconds", "gauge"),
    ("waagent_process_resident_memory_bytes", "gauge"),
    ("waagent_process_cpu_seconds", "counter"),
    ("waagent_unit_restarts", "gauge"),
    ("waagent_unit_autorestart", "gauge"),
    ("waagent_config_verbose_enabled", "gauge"),
    ("waagent_config_extensions_enabled", "gauge"),
    ("waagent_config_last_change_timestamp_seconds", "gauge"),
    ("waagent_config_autoupdate_enabled", "gauge"),
    ("waagent_extension_info", "gauge"),
    ("waagent_vmsnapshot_installed", "gauge"),
    ("waagent_vmsnapshot_version_ok", "gauge"),
    ("waagent_log_records", "counter"),
    ("waagent_log_events", "counter"),
    ("waagent_log_last_record_timestamp_seconds", "gauge"),
    ("waagent_log_readable", "gauge"),
    ("waagent_last_heartbeat_timestamp_seconds", "gauge"),
)


def describe_families(families: Iterable[tuple[str, str]]) -> list[Metric]:
    """Sample-less families that tell a registry which names a collector serves."""
    return [Metric(name, name, kind) for name, kind in families]


class StateCollector(Collector):
    """Renders whatever the daemon last published; never blocks on I/O."""

    def __init__(
        self,
        provider: Callable[[], MetricsInput],
        *,
        restart_reasons: Sequence[str],
        event_names: Sequence[str],
        check_codes: Sequence[str] = (),
        decision_actions: Sequence[str] = (),
    ) -> None:
        self._provider = provider
        self._restart_reasons = tuple(restart_reasons)
        self._event_names = tuple(event_names)
        self._check_codes = tuple(check_codes)
        self._decision_actions = tuple(decision_actions)

    def describe(self) -> Iterable[Metric]:
        return describe_families(FAMILIES)

    def collect(self) -> Iterable[Metric]:
        return build_families(
            self._provider(),
            restart_reasons=self._restart_reasons,
            event_names=self._event_names,
            check_codes=self._check_codes,
            decision_actions=self._decision_actions,
        )


def make_registry(
    collector: Collector, *, process_metrics: bool = True, process_pid: Optional[int] = None
) -> CollectorRegistry:
    """A fresh registry with the guard's collector and the guard's process families.

    The process families describe this process, or `process_pid` (the daemon, when a
    one-shot command renders them); `process_metrics=False` leaves them out.
    """
    from prometheus_client import PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if process_metrics:
        pid: Union[int, str] = "self" if process_pid is None else process_pid
        ProcessCollector(namespace="waagent_guard", pid=lambda: pid, registry=registry)
        PlatformCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
