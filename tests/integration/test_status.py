"""`waagent-guard status` against the demo guest: offline, live, degraded, non-root."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from tests.integration.guard_harness import Guest, wait_for
from tests.privileges import require_nobody_python
from waagent_guard.cli import main
from waagent_guard.demo.simagent import lay_demo_guest

MakeGuest = Callable[..., Guest]


def status(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["status", *argv], stdout=out, stderr=io.StringIO())
    return code, out.getvalue()


def status_json(root: Path) -> tuple[int, dict[str, Any]]:
    code, text = status("--json", "--root", str(root))
    return code, json.loads(text)


def test_offline_tree_reports_the_facts_and_the_agent_down(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    code, document = status_json(root)
    assert code == 2
    assert document["schema"] == "waagent-guard/status/v1"
    assert document["health"] == "down"
    assert document["agent"]["running"] is False
    assert document["agent"]["daemon_version"] == "2.7.3.0"  # from the log
    assert document["agent"]["goal_state_version"] == "2.15.0.1"
    assert document["config"]["logs_verbose"] is False
    assert document["config"]["extensions_enabled"] is True
    assert isinstance(document["config"]["auto_update"], bool)
    assert document["vmsnapshot"] == {
        **document["vmsnapshot"],
        "installed": True,
        "version": "1.0.9220.0",
        "version_ok": True,
    }
    assert document["log"]["last_heartbeat"].endswith("Z")
    assert isinstance(document["log"]["errors_total"], int)
    assert document["log"]["errors_total"] > 0
    assert document["agent"]["unit"] is None  # offline: no service manager asked


def test_text_screen_names_the_problem_first(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    code, text = status("--root", str(root))
    assert code == 2
    assert text.startswith("waagent-guard status: DOWN")
    assert "vmsnapshot   1.0.9220.0 (ok; minimum 1.0.91.0)" in text
    assert "the agent daemon is not running" in text


def test_live_simulated_agent_is_healthy(make_guest: MakeGuest) -> None:
    guest = make_guest()
    assert guest.run_tool("start") == 0
    wait_for(guest.agent_pid, what="the simulated agent")
    code, document = status_json(guest.root)
    assert code == 0, document["reasons"]
    assert document["health"] == "healthy"
    assert document["agent"]["running"] is True
    assert document["agent"]["daemon"]["pid"] == guest.agent_pid()
    assert document["agent"]["exthandler_running"] is True
    assert document["agent"]["unit"]["manager"] == "command"


def test_extensions_disabled_is_degraded(make_guest: MakeGuest) -> None:
    guest = make_guest()
    conf = guest.root / "etc/waagent.conf"
    conf.write_text(conf.read_text() + "Extensions.Enabled=n\n")
    assert guest.run_tool("start") == 0
    wait_for(guest.agent_pid, what="the simulated agent")
    code, document = status_json(guest.root)
    assert code == 1
    assert document["config"]["extensions_enabled"] is False
    assert any("Extensions.Enabled=n" in reason for reason in document["reasons"])


def test_old_vmsnapshot_is_reported_with_integer_comparison(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    config = root / "etc/waagent-guard/guard.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[vmsnapshot]\nmin_version = "1.0.10000.0"\n')
    _code, document = status_json(root)
    assert document["vmsnapshot"]["version_ok"] is False  # 9220 < 10000 as integers
    assert any("older than 1.0.10000.0" in reason for reason in document["reasons"])


def test_non_root_user_sees_what_it_can_read_and_is_told_what_not() -> None:
    require_nobody_python()
    top = Path(tempfile.mkdtemp(prefix="wg-nonroot-", dir="/tmp"))  # pytest's tmp is 0700
    try:
        _check_as_nobody(top)
    finally:
        shutil.rmtree(top)


def _check_as_nobody(top: Path) -> None:
    root = lay_demo_guest(top / "guest")
    for directory, _dirs, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(Path(directory) / name, 0o644)
    os.chmod(root / "var/log/waagent.log", 0o600)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "waagent_guard", "status", "--root", str(root)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "HOME": "/nonexistent"},
    )
    assert result.returncode == 2, result.stderr
    assert "could not read:" in result.stdout
    assert "/var/log/waagent.log: permission denied" in result.stdout
    assert "vmsnapshot   1.0.9220.0" in result.stdout  # what it could read is still shown


def test_a_verbose_lease_shows_on_the_screen_and_in_json(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    err = io.StringIO()
    code = main(["verbose", "on", "--for", "2h", "--reason", "case 7", "--no-restart",
                 "--root", str(root)], stdout=io.StringIO(), stderr=err)
    assert code == 0
    assert "not running" in err.getvalue()
    _code, text = status("--root", str(root))
    assert "verbose      leased until" in text and "(case 7)" in text
    assert "verbose on" in text
    _code, document = status_json(root)
    assert document["config"]["logs_verbose"] is True
    assert document["verbose_lease"]["reason"] == "case 7"
    assert document["verbose_lease"]["previous_value"] == "n"


def test_status_output_survives_a_closed_pipe(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    result = subprocess.run(
        f"{sys.executable} -m waagent_guard status --root {root} | head -1",
        shell=True, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.stdout.startswith("waagent-guard status:")
    assert "Traceback" not in result.stderr
