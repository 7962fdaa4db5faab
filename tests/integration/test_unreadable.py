"""Unreadable is not missing: `status`, `doctor` and `metrics` run as uid nobody.

The demo guest is laid readable by all, then the inputs a real VM keeps from
other users are closed (Lib.Dir 0700, a handler's config/ and status/ 0700, the
logs 0600). What could not be read must be reported as such, never taken as
"not installed", "ok", a remedy, or a 0 in the metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.privileges import require_nobody_python
from waagent_guard.demo.simagent import lay_demo_guest
from waagent_guard.sysroot import VMSNAPSHOT_NAME

HANDLER = f"var/lib/waagent/{VMSNAPSHOT_NAME}-1.0.9220.0"
EXT_LOG = f"var/log/azure/{VMSNAPSHOT_NAME}/extension.log"


@pytest.fixture
def guest() -> Iterator[Path]:
    require_nobody_python()
    top = Path(tempfile.mkdtemp(prefix="wg-unread-", dir="/tmp"))  # pytest's tmp is 0700
    try:
        root = lay_demo_guest(top / "guest")
        os.chmod(top, 0o755)
        for directory, _dirs, files in os.walk(root):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(Path(directory) / name, 0o644)
        yield root
    finally:
        shutil.rmtree(top)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "waagent_guard", *argv],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": "/nonexistent"},
    )


def json_of(*argv: str) -> dict[str, Any]:
    result = as_nobody(*argv)
    assert result.stdout.startswith("{"), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def findings(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    document = json_of("doctor", "--json", "--no-probe", "--root", str(root))
    return {item["code"]: item for item in document["findings"]}, document


def test_an_unreadable_lib_dir_is_unknown_not_not_installed(guest: Path) -> None:
    os.chmod(guest / "var/lib/waagent", 0o700)

    result = as_nobody("status", "--root", str(guest))
    assert "not installed" not in result.stdout
    assert "vmsnapshot   unknown (Lib.Dir could not be read; run as root)" in result.stdout
    assert "/var/lib/waagent: permission denied (run as root)" in result.stdout
    status = json_of("status", "--json", "--root", str(guest))
    assert status["vmsnapshot"]["installed"] is None
    assert status["unreadable"] == ["/var/lib/waagent: permission denied (run as root)"]

    by_code, doctor = findings(guest)
    assert set(status["unreadable"]) <= set(doctor["unreadable"])
    for code in ("WG-EXT-002", "WG-EXT-003", "WG-EXT-004", "WG-EXT-005"):
        assert by_code[code]["status"] == "skipped", by_code[code]
        assert "could not read /var/lib/waagent" in by_code[code]["summary"]
        assert by_code[code]["remedy"] == ""

    metrics = as_nobody("metrics", "--root", str(guest)).stdout
    assert "waagent_vmsnapshot_installed" not in metrics
    assert 'waagent_guard_unreadable{path="/var/lib/waagent"} 1.0' in metrics


def test_unreadable_handler_state_and_logs_skip_their_checks_without_a_remedy(
    guest: Path,
) -> None:
    os.chmod(guest / HANDLER / "config", 0o700)
    os.chmod(guest / HANDLER / "status", 0o700)
    os.chmod(guest / "var/log/waagent.log", 0o600)
    os.chmod(guest / EXT_LOG, 0o600)

    by_code, doctor = findings(guest)
    for code in ("WG-EXT-004", "WG-EXT-005", "WG-EXT-006", "WG-NET-008", "WG-AGENT-005"):
        item = by_code[code]
        assert item["status"] == "skipped", item
        assert item["summary"].startswith("could not read "), item
        assert "run as root" in item["summary"]
        assert item["remedy"] == ""
    assert "could not read" in by_code["WG-EXT-004"]["summary"]
    assert f"/{HANDLER}/config" in by_code["WG-EXT-004"]["summary"]
    assert f"/{HANDLER}/status" in by_code["WG-EXT-005"]["summary"]
    status = json_of("status", "--json", "--root", str(guest))
    assert status["unreadable"] == [
        entry for entry in doctor["unreadable"] if not entry.startswith("/var/log/azure/")
    ]
    assert f"/{EXT_LOG}: permission denied (run as root)" in doctor["unreadable"]
    assert status["log"]["readable"] is False
    assert status["log"]["errors_total"] is None

    text = as_nobody("status", "--root", str(guest)).stdout
    assert "heartbeat    unknown (/var/log/waagent.log unreadable; run as root)" in text
    assert "[state unreadable: run as root]" in text
    metrics = as_nobody("metrics", "--root", str(guest)).stdout
    assert "waagent_log_records_total" not in metrics  # unknown, not 0
    assert 'waagent_guard_unreadable{path="/var/log/waagent.log"} 1.0' in metrics


def test_an_unreadable_waagent_conf_is_unknown_not_the_defaults(guest: Path) -> None:
    os.chmod(guest / "etc/waagent.conf", 0o600)
    status = json_of("status", "--json", "--root", str(guest))
    assert status["config"]["readable"] is False
    assert status["config"]["extensions_enabled"] is None
    by_code, _doctor = findings(guest)
    for code in ("WG-EXT-001", "WG-AGENT-006", "WG-AGENT-007", "WG-SYS-001"):
        assert by_code[code]["status"] == "skipped", by_code[code]
        assert "could not read /etc/waagent.conf" in by_code[code]["summary"]
    metrics = as_nobody("metrics", "--root", str(guest)).stdout
    assert "waagent_config_extensions_enabled" not in metrics
    assert 'waagent_guard_unreadable{path="/etc/waagent.conf"} 1.0' in metrics
