"""The human report, the JSON document, exit codes and the backup-ready composite."""

from __future__ import annotations

import json

from waagent_guard.doctor.catalogue import CATALOGUE, render_template, spec
from waagent_guard.doctor.findings import Finding, Status, backup_ready, exit_code, summarize
from waagent_guard.doctor.render import SCHEMA, document, render_text


def finding(code: str, status: Status, summary: str = "seen") -> Finding:
    item = spec(code)
    return Finding(code=code, status=status, title=item.title, cause=item.cause,
                   severity=item.severity, summary=summary, evidence={"k": 1},
                   remedy=f"fix {code}", link=item.link)


def test_exit_code_is_zero_one_or_two() -> None:
    assert exit_code([finding("WG-AGENT-001", Status.OK),
                      finding("WG-NET-001", Status.SKIPPED)]) == 0
    assert exit_code([finding("WG-AGENT-006", Status.WARN)]) == 1
    assert exit_code([finding("WG-AGENT-006", Status.ERROR)]) == 1
    assert exit_code([finding("WG-AGENT-006", Status.WARN),
                      finding("WG-EXT-001", Status.FAIL)]) == 2


def test_backup_ready_needs_the_agent_and_no_failure_in_causes_one_to_four() -> None:
    running = finding("WG-AGENT-001", Status.OK)
    assert backup_ready([running, finding("WG-SYS-002", Status.FAIL)])  # cause 0 does not count
    assert not backup_ready([running, finding("WG-NET-004", Status.FAIL)])
    assert not backup_ready([finding("WG-AGENT-001", Status.SKIPPED)])
    assert backup_ready([finding("WG-AGENT-001", Status.WARN)])
    assert not backup_ready([])


def test_metric_values_follow_the_issue() -> None:
    values = {status: finding("WG-SYS-001", status).metric_value for status in Status}
    assert values == {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2, Status.SKIPPED: 3,
                      Status.ERROR: 4}


def test_json_document_has_the_documented_shape() -> None:
    findings = [finding("WG-AGENT-001", Status.OK), finding("WG-EXT-001", Status.FAIL)]
    doc = json.loads(json.dumps(document(findings, root="/", probes_ran=False,
                                         probes_reason="--no-probe given",
                                         generated_at=1727672400.0)))
    assert doc["schema"] == SCHEMA
    assert doc["generated_at"].startswith("2024-09-30T05:00:00")
    assert doc["probes"] == {"ran": False, "reason": "--no-probe given"}
    assert doc["summary"]["fail"] == 1 and doc["summary"]["ok"] == 1
    assert doc["backup_ready"] is False
    first = doc["findings"][0]
    assert first["code"] == "WG-EXT-001"  # worst first
    assert {"code", "status", "cause", "severity", "title", "evidence", "remedy",
            "link"} <= set(first)
    assert isinstance(first["cause"], int)


def test_text_report_groups_by_cause_worst_first_with_remedies() -> None:
    findings = [finding("WG-SYS-001", Status.OK), finding("WG-AGENT-006", Status.WARN),
                finding("WG-EXT-001", Status.FAIL, "Extensions.Enabled=n"),
                finding("WG-NET-001", Status.SKIPPED, "probes not run")]
    text = render_text(findings, root="/", probes_ran=False, probes_reason="not Azure",
                       generated_at=1727672400.0)
    cause3 = text.index("Cause 3:")
    cause2 = text.index("Cause 2:")
    assert cause3 < cause2 < text.index("Cause 1:") < text.index("General health")
    assert "fix: fix WG-EXT-001" in text
    assert "fix: fix WG-SYS-001" not in text  # no remedy for what is fine
    assert "network probes: not run (not Azure)" in text
    assert "backup ready: no" in text


def test_summary_counts_every_status() -> None:
    assert summarize([]) == {"ok": 0, "warn": 0, "fail": 0, "skipped": 0, "error": 0}


def test_catalogue_codes_are_unique_and_well_formed() -> None:
    codes = [item.code for item in CATALOGUE]
    assert len(codes) == len(set(codes))
    assert all(code.startswith("WG-") and code[-3:].isdigit() for code in codes)
    assert all(item.link.startswith("https://") for item in CATALOGUE)


def test_remedy_templates_leave_unknown_fields_alone() -> None:
    assert render_template("{unit} and {nope}", {"unit": "waagent.service"}) == \
        "waagent.service and {nope}"


def test_string_evidence_is_kept_as_a_string() -> None:
    item = Finding(code="WG-SYS-001", status=Status.OK, title="t", cause=0, severity="low",
                   summary="s", evidence="plain text")
    assert item.to_dict()["evidence"] == "plain text"
