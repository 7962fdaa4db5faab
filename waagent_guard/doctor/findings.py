"""What a check returns: `Finding`, its `Status`, and the verdicts over a list of them.

Pure values and pure functions only: exit code, summary counts, ordering
(worst first) and the composite `backup_ready` the daemon exports as
`waagent_backup_ready`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Union

log = logging.getLogger(__name__)


class Status(str, Enum):
    """A check's result. `skipped` carries why; `error` means the check itself broke."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"
    ERROR = "error"


# Worst first when sorting: a failure outranks a broken check, which outranks a warning.
_SEVERITY_ORDER = {
    Status.FAIL: 4,
    Status.ERROR: 3,
    Status.WARN: 2,
    Status.SKIPPED: 1,
    Status.OK: 0,
}

# The value of `waagent_guard_check_status{check}`: 0 ok, 1 warn, 2 fail, 3 skipped, 4 error
# (error: the check itself broke; alerts must tell it from a check that could not apply).
_METRIC_VALUE = {
    Status.OK: 0,
    Status.WARN: 1,
    Status.FAIL: 2,
    Status.SKIPPED: 3,
    Status.ERROR: 4,
}

Evidence = Union[Mapping[str, Any], str]


@dataclass(frozen=True)
class Finding:
    """One check's result, with the catalogue's words attached."""

    code: str
    status: Status
    title: str
    cause: int
    severity: str
    summary: str
    evidence: Evidence = field(default_factory=dict)
    remedy: str = ""
    link: str = ""
    duration_seconds: float = 0.0
    checked_at: float = 0.0

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER[self.status]

    @property
    def metric_value(self) -> int:
        return _METRIC_VALUE[self.status]

    def to_dict(self) -> dict[str, Any]:
        """The finding as it appears in the `--json` document."""
        evidence: Any = self.evidence if isinstance(self.evidence, str) else dict(self.evidence)
        return {
            "code": self.code,
            "status": self.status.value,
            "cause": self.cause,
            "severity": self.severity,
            "title": self.title,
            "summary": self.summary,
            "evidence": evidence,
            "remedy": self.remedy,
            "link": self.link,
            "duration_seconds": round(self.duration_seconds, 6),
            "checked_at": self.checked_at,
        }


def status_rank(status: Status) -> int:
    return _SEVERITY_ORDER[status]


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    """Stable sort: worst status first, then by code."""
    return sorted(findings, key=lambda item: (-item.rank, item.code))


def summarize(findings: Iterable[Finding]) -> dict[str, int]:
    """Counts per status, every status present (zero when absent)."""
    counts = {status.value: 0 for status in Status}
    for finding in findings:
        counts[finding.status.value] += 1
    return counts


def exit_code(findings: Iterable[Finding]) -> int:
    """0 all ok (skipped counts as ok), 1 warnings (or a broken check), 2 failures."""
    worst = 0
    for finding in findings:
        if finding.status is Status.FAIL:
            return 2
        if finding.status in (Status.WARN, Status.ERROR):
            worst = 1
    return worst


AGENT_RUNNING_CODE = "WG-AGENT-001"


def backup_ready(findings: Iterable[Finding]) -> bool:
    """No failure under guide causes 1-4, and the agent is running (WG-AGENT-001 ok or warn)."""
    agent_running = False
    for finding in findings:
        if finding.status is Status.FAIL and 1 <= finding.cause <= 4:
            return False
        if finding.code == AGENT_RUNNING_CODE:
            agent_running = finding.status in (Status.OK, Status.WARN)
    return agent_running


@dataclass(frozen=True)
class CheckResult:
    """What a check function returns; the runner adds the catalogue's words and timing."""

    status: Status
    summary: str
    evidence: Evidence = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict)  # extra remedy template fields


def ok(summary: str, evidence: Evidence | None = None) -> CheckResult:
    return CheckResult(Status.OK, summary, evidence or {})


def warn(summary: str, evidence: Evidence | None = None, **values: str) -> CheckResult:
    return CheckResult(Status.WARN, summary, evidence or {}, values)


def fail(summary: str, evidence: Evidence | None = None, **values: str) -> CheckResult:
    return CheckResult(Status.FAIL, summary, evidence or {}, values)


def skipped(why: str, evidence: Evidence | None = None) -> CheckResult:
    return CheckResult(Status.SKIPPED, why, evidence or {})
