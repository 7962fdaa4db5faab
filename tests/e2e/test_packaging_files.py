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
from pydantic import BaseModel

from waagent_guard.settings import Settings, parse_settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "waagent-guard.service"
WHEELHOUSE = REPO / "packaging" / "wheelhouse"


def _load_renderer(script: str = "render-guard-toml.py") -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        script.removesuffix(".py").replace("-", "_"), REPO / "packaging" / script
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


def _settings_keys(prefix: str = "", model: type[BaseModel] = Settings) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _settings_keys(f"{prefix}{name}.", annotation)
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_guard_toml_man_page_is_rendered_from_the_settings_model() -> None:
    page = (REPO / "packaging" / "guard.toml.5").read_text()
    assert page == _load_renderer("render-guard-toml-man.py").render(), "run `make guard-toml`"
    sections = re.findall(r"^\.SS \[([a-z_.]+)\]$", page, flags=re.M)
    shown = []
    for part in re.split(r"^\.SS ", page, flags=re.M)[1:]:
        section = part.split("]", 1)[0].lstrip("[")
        names = re.findall(r"^\\fB([a-z_\\-]+)\\fR = ", part, flags=re.M)
        shown += [f"{section}.{name.replace(chr(92) + '-', '-')}" for name in names]
    assert sections and sorted(shown) == sorted(_settings_keys())


def test_guard_toml_man_page_formats_without_warnings() -> None:
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed")
    result = subprocess.run(
        [man, "--warnings", "-l", str(REPO / "packaging" / "guard.toml.5")],
        capture_output=True, text=True, timeout=60, check=False,
        env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "daemon.state_file" in result.stdout and "tick_seconds" in result.stdout


def test_deb_and_rpm_ship_both_man_pages_and_the_docs() -> None:
    manpages = (REPO / "packaging" / "debian" / "waagent-guard.manpages").read_text().split()
    assert manpages == ["packaging/waagent-guard.1", "packaging/guard.toml.5"]
    spec = (REPO / "packaging" / "rpm" / "waagent-guard.spec").read_text()
    assert "gzip -9n <packaging/guard.toml.5 >%{buildroot}%{_mandir}/man5/guard.toml.5.gz" in spec
    assert "%{_mandir}/man5/guard.toml.5*" in spec.split("%files", 1)[1]
    rules = (REPO / "packaging" / "debian" / "rules").read_text()
    for build in (rules, spec):
        assert "for doc in README.md docs/*.md; do" in build


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
