"""`waagent-guard metrics` (stdout and --textfile) and the README's metric table."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from waagent_guard.cli import main
from waagent_guard.demo.simagent import lay_demo_guest

README = Path(__file__).resolve().parents[2] / "README.md"


def run_metrics(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["metrics", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_prints_the_agent_families_for_an_offline_tree(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    code, text, _ = run_metrics("--root", str(root))
    assert code == 0
    found = families(text)
    assert "waagent_up" in found
    assert "waagent_guard_restarts" in found  # counters are named without _total here
    assert 'waagent_up 0.0' in text
    assert 'waagent_vmsnapshot_version_ok 1.0' in text
    assert (
        'waagent_extension_info{name="Microsoft.Azure.RecoveryServices.VMSnapshotLinux",'
        'state="Enabled",version="1.0.9220.0"} 1.0'
    ) in text


def test_textfile_is_written_atomically_into_the_directory(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    target = tmp_path / "textfile"
    target.mkdir()
    assert run_metrics("--root", str(root), "--textfile", str(target))[0] == 0
    assert [p.name for p in target.iterdir()] == ["waagent_guard.prom"]
    text = (target / "waagent_guard.prom").read_text()
    assert "waagent_info{" in text


def test_textfile_into_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run_metrics("--root", str(tmp_path), "--textfile", str(tmp_path / "nope"))
    assert code == 64
    assert "--textfile" in err and "not a directory" in err


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)
def test_exposition_passes_promtool_check_metrics(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    _, text, _ = run_metrics("--root", str(root))
    result = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_every_metric_in_the_readme_table_is_exported(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    _, text, _ = run_metrics("--root", str(root))
    exported = set(re.findall(r"^# TYPE (\S+)", text, flags=re.M))
    exported |= {name + "_total" for name in exported}
    documented = set(re.findall(r"^\| `(waagent_[a-z_]+)` \|", README.read_text(), flags=re.M))
    # Only the daemon exports the doctor's check families (they need a doctor run).
    daemon_only = {"waagent_guard_check_status", "waagent_guard_check_duration_seconds",
                   "waagent_guard_check_last_run_timestamp_seconds", "waagent_backup_ready",
                   "waagent_guard_decisions_total", "waagent_unit_restarts",
                   "waagent_unit_autorestart", "waagent_process_start_time_seconds",
                   "waagent_process_resident_memory_bytes", "waagent_process_cpu_seconds_total"}
    missing = documented - exported - daemon_only
    assert not missing, f"documented but not exported: {sorted(missing)}"
