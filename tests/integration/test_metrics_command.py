"""`waagent-guard metrics` (stdout and --textfile) and the metric table of docs/metrics.md."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from waagent_guard.cli import main
from waagent_guard.commands.metrics import daemon_pid
from waagent_guard.demo.simagent import lay_demo_guest

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


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


def test_every_metric_in_the_docs_table_is_exported(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    _, text, _ = run_metrics("--root", str(root))
    exported = set(re.findall(r"^# TYPE (\S+)", text, flags=re.M))
    exported |= {name + "_total" for name in exported}
    documented = set(re.findall(r"^\| `(waagent_[a-z_]+)` \|", METRICS_DOC.read_text(), flags=re.M))
    # Families the daemon alone has (decisions), or that need a unit or a running agent.
    daemon_only = {"waagent_guard_decisions_total", "waagent_unit_restarts",
                   "waagent_unit_autorestart", "waagent_process_start_time_seconds",
                   "waagent_process_resident_memory_bytes", "waagent_process_cpu_seconds_total",
                   "waagent_guard_http_rejected_total", "waagent_guard_http_connection_limit"}
    missing = documented - exported - daemon_only
    assert not missing, f"documented but not exported: {sorted(missing)}"


# --- issue 13 item 3: the one-shot command serves the daemon's families -------------------


def family_names(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+)", text, flags=re.M))


def test_oneshot_has_the_doctor_verdicts_and_backup_ready(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    _, text, _ = run_metrics("--root", str(root))
    names = family_names(text)
    assert {"waagent_guard_check_status", "waagent_guard_check_duration_seconds",
            "waagent_guard_doctor_last_run_timestamp_seconds", "waagent_backup_ready"} <= names
    # A real verdict, not "not run yet": the configuration check passes on the demo guest.
    assert 'waagent_guard_check_status{check="WG-SYS-001"} 0.0' in text
    # Under --root the probes never run: they are skipped (3), never an error (4).
    assert 'waagent_guard_check_status{check="WG-NET-001"} 3.0' in text


def test_oneshot_restart_counters_and_lease_come_from_the_state_file(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    state = root / "var/lib/waagent-guard/state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({
        "version": 1,
        "restart_counts": {"process_gone": 3, "stale_pidfile": 1},
        "restart_policy": {"gave_up_since": 1700000000.0},
        "verbose_lease": {"expires_at": 1800000000.0, "started_at": 1700000000.0},
    }))
    _, text, _ = run_metrics("--root", str(root))
    assert 'waagent_guard_restarts_total{reason="process_gone"} 3.0' in text
    assert 'waagent_guard_restarts_total{reason="stale_pidfile"} 1.0' in text
    assert "waagent_guard_restart_gave_up 1.0" in text
    assert "waagent_verbose_lease_expiry_timestamp_seconds 1.8e+09" in text


def test_the_daemon_pid_is_read_from_its_control_socket(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    assert daemon_pid(path) is None  # nobody listens: no process families
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        assert daemon_pid(path) == os.getpid()


def test_heartbeat_unknown_is_explicit_when_the_log_is_unreadable(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    _, text, _ = run_metrics("--root", str(root))
    assert "waagent_log_readable 1.0" in text
    assert "waagent_last_heartbeat_timestamp_seconds " in text
    log = root / "var/log/waagent.log"
    log.unlink()
    log.mkdir()  # unreadable as a file, for root too
    _, text, _ = run_metrics("--root", str(root))
    assert "waagent_log_readable 0.0" in text
    assert "waagent_last_heartbeat_timestamp_seconds " not in text


def test_oneshot_and_daemon_serve_the_same_families(tmp_path: Path) -> None:
    from tests.integration.guard_harness import Daemon, Guest, wait_for

    guest = Guest()
    daemon = None
    try:
        assert guest.run_tool("start") == 0
        wait_for(guest.agent_pid, what="the simulated agent's pidfile")
        daemon = Daemon(guest)
        daemon.wait_notify("READY=1")
        wait_for(lambda: daemon is not None and
                 daemon.metric("waagent_guard_doctor_last_run_timestamp_seconds"),
                 what="the first doctor run")
        os.kill(guest.agent_pid() or 0, signal.SIGKILL)
        def restarts(samples: dict[str, float]) -> float:
            return sum(v for k, v in samples.items() if k.startswith("waagent_guard_restarts"))

        wait_for(lambda: daemon is not None and restarts(daemon.scrape()) >= 1,
                 what="the guard's restart")
        with urllib.request.urlopen(f"http://127.0.0.1:{guest.port}/metrics", timeout=5) as r:
            served = family_names(r.read().decode())
        _, text, _ = run_metrics("--config", str(guest.config), "--root", str(guest.root))
        oneshot = family_names(text)
        # Decisions count one daemon's choices since it started, and the HTTP server's own
        # families describe the server: only the daemon has them.
        assert oneshot == served - {
            "waagent_guard_decisions", "waagent_guard_decisions_total",
            "waagent_guard_http_rejected", "waagent_guard_http_rejected_total",
            "waagent_guard_http_connection_limit",
        }
        assert "waagent_guard_process_resident_memory_bytes" in oneshot
        # The restart the daemon made is in the state file, so the one-shot counts it too.
        samples = {f"{s.name}{s.labels}": s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert restarts(samples) >= 1
    finally:
        if daemon is not None:
            daemon.stop()
        guest.cleanup()
