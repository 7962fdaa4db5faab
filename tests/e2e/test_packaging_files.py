"""Checks of the packaging inputs that need no container (they run everywhere)."""

from __future__ import annotations

import configparser
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from waagent_guard.settings import Settings, parse_settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "waagent-guard.service"
WHEELHOUSE = REPO / "packaging" / "wheelhouse"


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_guard_toml", REPO / "packaging" / "render-guard-toml.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_packaged_guard_toml_is_the_rendered_defaults_all_commented_out() -> None:
    text = (REPO / "packaging" / "guard.toml").read_text()
    assert text == _load_renderer().render(), "run `make guard-toml`"
    assert parse_settings(text, "packaging/guard.toml") == Settings()
    active = [
        line for line in text.splitlines() if line and not line.startswith(("#", "["))
    ]
    assert active == []


def test_unit_is_a_notify_service_with_watchdog_not_ordered_against_the_agent() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/bin/waagent-guard run"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["WatchdogSec"] == "60"
    assert service["Restart"] == "on-failure"
    unit = _unit()["Unit"]
    ordering = " ".join(unit.get(key, "") for key in ("After", "Before", "Requires", "Wants"))
    assert "walinuxagent.service" not in ordering and "waagent.service" not in ordering


def test_unit_hardening_is_on_and_each_relaxation_says_why() -> None:
    service = _unit()["Service"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "StateDirectory": "waagent-guard",
        "RuntimeDirectory": "waagent-guard",
        "ConfigurationDirectory": "waagent-guard",
    }.items():
        assert service[key] == value, key
    text = UNIT.read_text()
    for relaxation in ("ReadWritePaths=/etc", "CapabilityBoundingSet=", "RestrictAddressFamilies="):
        before = text.split(relaxation, 1)[0].rstrip().splitlines()[-1]
        assert before.startswith("#"), f"{relaxation} needs a comment naming its feature"
    assert "PrivateUsers" not in service and service["ProtectProc"] != "invisible"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_exposure_offline_is_at_most_four() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0"},
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze has no --offline here: {result.stderr.strip()}")
    assert float(match.group(1)) <= 4.0


@pytest.mark.parametrize("name", ["requirements", "build-requirements"])
def test_every_locked_pin_is_exact_hashed_and_matches_the_in_file(name: str) -> None:
    pins = [
        line.split("#", 1)[0].split(";", 1)[0].strip()
        for line in (WHEELHOUSE / f"{name}.in").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    lock = (WHEELHOUSE / f"{name}.lock").read_text()
    entry = r"^(\S+==\S+)[^\n]*\\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)"
    entries = re.findall(entry, lock, re.M)
    assert sorted(entry[0] for entry in entries) == sorted(pins)
    assert all("--hash=sha256:" in hashes for _, hashes in entries)
