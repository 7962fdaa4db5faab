"""Running the checks: `run_checks`, `check_codes`, and `DoctorRunner` for the daemon.

`run_checks` is pure apart from the clock: each check function gets the same
`Facts`; a check that raises becomes an `error` finding and the run goes on.
`DoctorRunner` gathers facts, feeds the CPU/memory `PressureWindow`s, runs the
checks and keeps the last findings (with per-check duration and timestamp)
for the daemon's `waagent_guard_check_*` metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Callable, Optional

from waagent_guard.doctor import checks_agent, checks_extension, checks_network, checks_system
from waagent_guard.doctor.catalogue import CATALOGUE, render_template, spec
from waagent_guard.doctor.facts import Facts, FactSources, ProbePlan, gather_facts, probe_decision
from waagent_guard.doctor.findings import CheckResult, Finding, Status, backup_ready
from waagent_guard.doctor.pressure import PressureWindow
from waagent_guard.observe import Observation
from waagent_guard.settings import Settings
from waagent_guard.sysroot import VMSNAPSHOT_NAME, Sysroot

log = logging.getLogger(__name__)

CheckFunction = Callable[[Facts, Settings], CheckResult]

CHECKS: Mapping[str, CheckFunction] = {
    **checks_agent.CHECKS,
    **checks_extension.CHECKS,
    **checks_network.CHECKS,
    **checks_system.CHECKS,
}


def check_codes() -> tuple[str, ...]:
    """Every check code, in catalogue order (the daemon initialises its label set from this)."""
    return tuple(item.code for item in CATALOGUE)


def remedy_values(facts: Facts, settings: Settings) -> dict[str, str]:
    """The fields remedy templates may use, filled for this host."""
    unit = facts.unit
    config = facts.observation.config
    proxy = facts.probes.proxy
    return {
        "unit": unit.name,
        "start_command": unit.command("start"),
        "restart_command": unit.command("restart"),
        "status_command": unit.command("status"),
        "package": unit.package,
        "update_command": unit.update_command,
        "conf": facts.sysroot.host_path(facts.observation.conf_path),
        "lib_dir": config.lib_dir,
        "pid_file": config.pid_file,
        "vmsnapshot": VMSNAPSHOT_NAME,
        "min_version": settings.vmsnapshot.min_version,
        "wireserver": settings.doctor.wireserver,
        "proxy": proxy.display() if proxy else "unset",
        "extension_log": facts.extension_log.path,
        "cpu_threshold": f"{settings.doctor.cpu_threshold_percent:g}",
        "memory_threshold": f"{settings.doctor.memory_threshold_percent:g}",
        "handler_state": "unknown",
    }


def run_checks(
    facts: Facts,
    settings: Settings,
    *,
    only: Optional[Iterable[str]] = None,
    checks: Mapping[str, CheckFunction] = CHECKS,
    clock: Callable[[], float] = time.time,
    timer: Callable[[], float] = time.perf_counter,
) -> list[Finding]:
    """Every check (or those in `only`) over one `Facts`, in catalogue order."""
    wanted = set(only) if only is not None else None
    unknown = (wanted or set()) - set(checks)
    if unknown:
        raise ValueError(f"unknown check code(s): {', '.join(sorted(unknown))}")
    values = remedy_values(facts, settings)
    findings: list[Finding] = []
    for item in CATALOGUE:
        if (wanted is not None and item.code not in wanted) or item.code not in checks:
            continue
        started = timer()
        try:
            result = checks[item.code](facts, settings)
        except Exception as error:  # one broken check must not hide the others
            log.warning("check %s failed: %s", item.code, error, exc_info=True)
            result = CheckResult(Status.ERROR, f"the check itself failed: "
                                               f"{type(error).__name__}: {error}")
        duration = timer() - started
        fields = {**values, **result.values}
        findings.append(Finding(
            code=item.code,
            status=result.status,
            title=render_template(item.title, fields),
            cause=item.cause,
            severity=item.severity,
            summary=result.summary,
            evidence=result.evidence,
            # A skipped check saw nothing to fix: a remedy there would act on a guess.
            remedy="" if result.status is Status.SKIPPED else render_template(item.remedy, fields),
            link=item.link,
            duration_seconds=duration,
            checked_at=clock(),
        ))
    return findings


class DoctorRunner:
    """The daemon's periodic doctor: gather, check, remember; pressure windows fed per tick."""

    def __init__(
        self,
        sysroot: Sysroot,
        settings: Settings,
        *,
        sources: Optional[FactSources] = None,
        plan: Optional[ProbePlan] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        doctor = settings.doctor
        self.sysroot = sysroot
        self.settings = settings
        self.sources = sources or FactSources(clock=clock)
        self.plan = plan or probe_decision(sysroot, doctor.probe)
        self.clock = clock
        self.cpu_window = PressureWindow(doctor.sustained_seconds, doctor.cpu_threshold_percent)
        self.memory_window = PressureWindow(doctor.sustained_seconds,
                                            doctor.memory_threshold_percent)
        self.findings: list[Finding] = []

    def observe_pressure(self, now: float, cpu_percent: Optional[float],
                         memory_percent: Optional[float]) -> None:
        """Feed one tick's CPU and memory use (the daemon calls this every tick)."""
        self.cpu_window.add(now, cpu_percent)
        self.memory_window.add(now, memory_percent)

    def run(self, *, observation: Optional[Observation] = None) -> list[Finding]:
        """Gather facts, update the windows with this run's sample, run every check.

        The daemon passes the loop's published `observation` (unit state and log
        signals included), so a run asks the service manager nothing again."""
        facts = gather_facts(self.sysroot, self.settings, self.plan, self.sources,
                             observation=observation)
        now = facts.now
        memory = facts.resources.memory
        self.observe_pressure(now, facts.resources.cpu_percent,
                              memory.used_percent if memory else None)
        resources = dataclasses.replace(
            facts.resources,
            cpu_sustained=self.cpu_window.sustained(now),
            memory_sustained=self.memory_window.sustained(now),
            window_seconds=float(self.settings.doctor.sustained_seconds),
        )
        facts = dataclasses.replace(facts, resources=resources)
        self.findings = run_checks(facts, self.settings, clock=self.clock)
        return self.findings

    @property
    def backup_ready(self) -> bool:
        return backup_ready(self.findings)


__all__ = ["CHECKS", "DoctorRunner", "check_codes", "remedy_values", "run_checks", "spec"]
