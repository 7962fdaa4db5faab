"""The monitoring kit (monitoring/): rules, their promtool unit tests, the runbook, dashboards,
scrape configurations, and the cardinality budget of the default exposition."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from waagent_guard.agent.process import AgentProcess
from waagent_guard.daemon.exporter import HttpStatsCollector, guard_collector
from waagent_guard.demo.simagent import lay_demo_guest
from waagent_guard.metrics import CheckSample, MetricsInput, exposition, make_registry
from waagent_guard.observe import observe
from waagent_guard.service.state import UnitState
from waagent_guard.settings import Settings
from waagent_guard.sysroot import Sysroot

KIT = Path(__file__).resolve().parents[2] / "monitoring"
ALERTS = KIT / "rules/waagent-guard-alerts.yml"
RECORDS = KIT / "rules/waagent-guard-records.yml"
RULE_TESTS = KIT / "tests/alerts.test.yml"
RUNBOOK = KIT / "RUNBOOK.md"

# The cardinality budget (monitoring/README.md): series per guard at the default config,
# counting the five series Prometheus adds per target (up, scrape_*), and bytes per scrape.
SERIES_BUDGET = 150
BYTES_BUDGET = 20 * 1024
PROMETHEUS_SYNTHETIC_SERIES = 5

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)


def promtool(*args: str, cwd: Path = KIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, text=True, capture_output=True,
                          timeout=900, check=False)


def alert_rules() -> list[dict[str, str]]:
    """Each alert's name, for:, labels and annotations (the file's own regular layout)."""
    text = ALERTS.read_text()
    rules = []
    for block in re.split(r"\n(?=      - alert: )", text)[1:]:
        rule: dict[str, str] = {"alert": re.search(r"- alert: (\S+)", block).group(1)}  # type: ignore[union-attr]
        for key in ("for", "severity", "cause", "summary", "description", "runbook_url"):
            found = re.search(rf"^\s+{key}: (.+)$", block, flags=re.M)
            if found:
                rule[key] = found.group(1).strip().strip('"')
        rules.append(rule)
    return rules


@needs_promtool
def test_the_rule_files_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS), str(RECORDS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_and_stays_silent_in_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS.relative_to(KIT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    text = RULE_TESTS.read_text()
    cases = re.findall(r'alertname: "(\w+)"\n\s+exp_alerts:( \[\])?', text)
    names = {rule["alert"] for rule in alert_rules()}
    fires = {name for name, empty in cases if not empty}
    silent = {name for name, empty in cases if empty}
    assert names and names == fires == silent


def test_every_alert_carries_for_severity_cause_annotations_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.M)
    }
    rules = alert_rules()
    assert len(rules) >= 18
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), name
        assert rule.get("severity") in {"critical", "warning", "info"}, name
        assert rule.get("cause") in {"1", "2", "3", "4", "1-4", "guard"}, name
        assert "$labels.instance" in rule.get("summary", "") or name == "WaagentGuardAbsent"
        assert rule.get("description"), name
        anchor = rule.get("runbook_url", "").split("#")[-1]
        assert anchor == name.lower() and anchor in anchors, name


def test_thresholds_in_seconds_are_marked_for_the_fleet_scaling() -> None:
    # monitoring/fleet scales `for:`, range windows and thresholds marked `# seconds`; an
    # unmarked literal compared with time() would not scale and the fleet would not fire.
    for block in re.split(r"\n(?=      - alert: )", ALERTS.read_text())[1:]:
        expr = block.split("expr:", 1)[1].split("\n        for:", 1)[0]
        if "time() -" in expr:
            assert re.search(r"> \d+ # seconds", expr), block.splitlines()[0]


# --- dashboards and scrape configurations -------------------------------------------------


@pytest.mark.parametrize("name", ["fleet.json", "vm.json"])
def test_dashboards_have_the_fields_grafana_requires(name: str) -> None:
    dashboard = json.loads((KIT / "dashboards" / name).read_text())
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"type", "title", "gridPos", "datasource", "targets"} <= set(panel), panel
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"] and all(t.get("expr") and t.get("refId") for t in panel["targets"])
    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert "datasource" in names


@needs_promtool
@pytest.mark.parametrize(
    "name", sorted(p.name for p in (KIT / "scrape").glob("*.yml")) or ["(none)"]
)
def test_scrape_examples_pass_promtool_check_config(name: str, tmp_path: Path) -> None:
    source = KIT / "scrape" / name
    # Files the examples name (certificates, target lists) are laid out where they point.
    text = source.read_text()
    work = tmp_path / "etc"
    work.mkdir()
    for referenced in set(re.findall(r"/etc/prometheus/[\w./-]+", text)):
        if referenced.endswith("/"):  # a directory of a glob: made by its files
            continue
        target = work / Path(referenced).relative_to("/etc/prometheus")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("[]\n" if referenced.endswith(".json") else "placeholder\n")
    config = tmp_path / name
    text = text.replace("/etc/prometheus/", f"{work}/")
    # The rule files as the packages install them: checked too (not --syntax-only).
    config.write_text(text.replace("/usr/share/waagent-guard/monitoring/", f"{KIT}/"))
    result = promtool("check", "config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# --- the cardinality budget ---------------------------------------------------------------


def default_exposition(tmp_path: Path) -> bytes:
    """What one guard serves at the default config, at its largest: both agent processes
    running, a unit, every check and decision label, the guard's own process families."""
    root = lay_demo_guest(tmp_path / "guest")
    settings = Settings()
    sysroot = Sysroot(root)
    observation = observe(sysroot, settings)
    processes = tuple(
        AgentProcess(pid, role, ("waagent",), "2.15.0.1", 1.0, 1 << 20, 1.0)
        for pid, role in ((100, "daemon"), (101, "exthandler"))
    )
    observation = dataclasses.replace(
        observation, processes=processes, unit=UnitState("active", n_restarts=0)
    )
    from waagent_guard.doctor.runner import check_codes

    checks = tuple(CheckSample(code, 0, 0.001, 1.0) for code in check_codes())
    data = MetricsInput(observation=observation, checks=checks, backup_ready=True,
                        last_reconcile=1.0)
    return exposition(maximal_registry(data))


class FakeServer:
    """What HttpStatsCollector reads from the daemon's metrics server."""

    cap = 256
    rejected: dict[str, int] = {}


def maximal_registry(data: MetricsInput) -> CollectorRegistry:
    """The daemon's registry: its collector, the process families, the HTTP server's own."""
    registry = make_registry(guard_collector(lambda: data, checks=True))
    registry.register(HttpStatsCollector(lambda: FakeServer()))  # type: ignore[arg-type,return-value]
    return registry


def test_the_default_exposition_stays_within_the_cardinality_budget(tmp_path: Path) -> None:
    text = default_exposition(tmp_path)
    samples = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
    series = len(samples) + PROMETHEUS_SYNTHETIC_SERIES
    assert series <= SERIES_BUDGET, f"{series} series per guard; budget {SERIES_BUDGET}"
    assert len(text) <= BYTES_BUDGET, f"{len(text)} bytes per scrape; budget {BYTES_BUDGET}"
    # The budget counts what operators alert on: those families must be in it.
    for family in ("waagent_up", "waagent_log_readable", "waagent_guard_restarts_total",
                   "waagent_backup_ready", "waagent_guard_check_status"):
        assert any(line.startswith(family) for line in samples), family


# --- /metrics?name[]=... (the registry learns each collector's names from describe()) ------


def test_every_family_served_is_described(tmp_path: Path) -> None:
    from waagent_guard.daemon.exporter import HTTP_FAMILIES
    from waagent_guard.metrics import FAMILIES

    text = default_exposition(tmp_path).decode()
    served = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    own = {name for name in served if not name.startswith(("waagent_guard_process", "python_"))}
    described = set()
    for name, kind in (*FAMILIES, *HTTP_FAMILIES):
        described.add(name + {"counter": "_total", "info": "_info"}.get(kind, ""))
    assert own == described


def test_a_name_filter_returns_only_the_named_families(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    root = lay_demo_guest(tmp_path / "guest")
    data = MetricsInput(observation=observe(Sysroot(root), Settings()), last_reconcile=1.0)
    registry = maximal_registry(data)
    names = ["waagent_up", "waagent_log_records_total", "waagent_guard_http_connection_limit"]
    text = generate_latest(registry.restricted_registry(names)).decode()
    assert set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M)) == {
        "waagent_up", "waagent_log_records_total", "waagent_guard_http_connection_limit"
    }
