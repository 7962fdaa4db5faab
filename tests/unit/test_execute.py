"""execute.py: what every command the guard runs inherits (real subprocesses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from waagent_guard.execute import NOTIFY_VARIABLES, SubprocessRunner, run_command

SYSTEMD_GAVE_US = {
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "WATCHDOG_USEC": "30000000",
    "WATCHDOG_PID": "1",
    "PATH": "/usr/bin:/bin",
    "KEEP_ME": "yes",
}


def _names(env_output: str) -> set[str]:
    return {line.split("=", 1)[0] for line in env_output.splitlines() if "=" in line}


def test_children_never_inherit_the_notify_socket_or_the_watchdog() -> None:
    result = SubprocessRunner(base_env=SYSTEMD_GAVE_US)(["env"], timeout=30)
    names = _names(result.stdout)
    assert not names & set(NOTIFY_VARIABLES), result.stdout
    assert "KEEP_ME" in names and "LC_ALL" in names


def test_bundle_commands_do_not_inherit_them_either(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in SYSTEMD_GAVE_US.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    with out.open("wb") as stdout, (tmp_path / "err").open("wb") as stderr:
        outcome = run_command(["env"], 30, stdout, stderr)
    assert outcome.returncode == 0
    names = _names(out.read_text())
    assert not names & set(NOTIFY_VARIABLES)
    assert "KEEP_ME" in names
