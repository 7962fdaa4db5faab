"""The doctor's two outputs: the human report and the stable JSON document.

Pure functions: findings and a little context in, text or a dict out. The JSON
schema (`waagent-guard/doctor/v1`) is documented in docs/doctor.md (JSON document); add
fields, never rename or remove them.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from typing import Any

from waagent_guard.doctor.catalogue import CAUSE_TITLES, GUIDE_URL
from waagent_guard.doctor.findings import (
    Finding,
    Status,
    backup_ready,
    status_rank,
    summarize,
    worst_first,
)
from waagent_guard.timeutil import iso_utc

log = logging.getLogger(__name__)

SCHEMA = "waagent-guard/doctor/v1"
_LABELS = {Status.OK: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL",
           Status.SKIPPED: "skip", Status.ERROR: "ERROR"}
_WIDTH = 100


def document(
    findings: Sequence[Finding],
    *,
    root: str,
    probes_ran: bool,
    probes_reason: str,
    generated_at: float,
    unreadable: Sequence[str] = (),
) -> dict[str, Any]:
    """The `--json` document (schema `waagent-guard/doctor/v1`)."""
    return {
        "schema": SCHEMA,
        "generated_at": iso_utc(generated_at),
        "root": root,
        "probes": {"ran": probes_ran, "reason": probes_reason},
        "summary": summarize(findings),
        "backup_ready": backup_ready(findings),
        "findings": [finding.to_dict() for finding in worst_first(findings)],
        # The same entries as `status --json`'s, plus the doctor's own inputs.
        "unreadable": list(unreadable),
    }


def _groups(findings: Sequence[Finding]) -> list[tuple[int, list[Finding]]]:
    by_cause: dict[int, list[Finding]] = {}
    for finding in findings:
        by_cause.setdefault(finding.cause, []).append(finding)
    ordered = sorted(by_cause.items(),
                     key=lambda item: (-max(f.rank for f in item[1]), item[0] == 0, item[0]))
    return [(cause, worst_first(items)) for cause, items in ordered]


def _wrap(prefix: str, text: str) -> list[str]:
    return textwrap.wrap(text, width=_WIDTH, initial_indent=prefix,
                         subsequent_indent=" " * len(prefix), break_on_hyphens=False) or [prefix]


def render_text(
    findings: Sequence[Finding],
    *,
    root: str,
    probes_ran: bool,
    probes_reason: str,
    generated_at: float,
    verbose: bool = False,
    unreadable: Sequence[str] = (),
) -> str:
    """The human report: grouped by guide cause, worst group and worst finding first."""
    lines = [f"waagent-guard doctor  {iso_utc(generated_at)}  root {root}",
             f"network probes: {'ran' if probes_ran else 'not run'} ({probes_reason})", ""]
    for cause, items in _groups(findings):
        worst = max(item.rank for item in items)
        marker = next(_LABELS[s] for s in Status if status_rank(s) == worst)
        lines.append(f"{CAUSE_TITLES.get(cause, f'Cause {cause}')}  [{marker}]")
        for item in items:
            head = f"  {_LABELS[item.status]:<5} {item.code:<12} {item.title}"
            lines.append(head)
            lines.extend(_wrap("        ", item.summary))
            if item.remedy and (item.status in (Status.WARN, Status.FAIL, Status.ERROR)
                                or verbose):
                lines.extend(_wrap("        fix: ", item.remedy))
        lines.append("")
    counts = summarize(findings)
    ready = "yes" if backup_ready(findings) else "no"
    lines.append(", ".join(f"{counts[s.value]} {s.value}" for s in Status)
                 + f"; backup ready: {ready}")
    if unreadable:
        lines.append("could not read (the checks that needed these are skipped; run as root):")
        lines.extend(f"  - {item}" for item in unreadable)
    lines.append(f"guide: {GUIDE_URL}")
    return "\n".join(lines) + "\n"
