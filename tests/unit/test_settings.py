from __future__ import annotations

from pathlib import Path

import pytest

from waagent_guard.errors import ConfigError
from waagent_guard.settings import Settings, load_settings, parse_settings, render_settings


def test_missing_file_gives_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "absent.toml")
    assert settings == Settings()
    assert settings.restart.max_restarts == 3
    assert settings.restart.window_seconds == 1800
    assert settings.metrics.address == "127.0.0.1"
    assert not 9100 <= settings.metrics.port <= 9999
    assert settings.vmsnapshot.min_version == "1.0.91.0"


def test_missing_file_is_an_error_when_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: no such file"):
        load_settings(tmp_path / "absent.toml", required=True)


def test_values_are_read_from_each_section() -> None:
    settings = parse_settings(
        '[restart]\nmax_restarts = 5\n[metrics]\nport = 9000\naddress = "::1"\n'
        '[agent.command]\nstart = ["/bin/true"]\n'
    )
    assert settings.restart.max_restarts == 5
    assert settings.metrics.port == 9000
    assert settings.metrics.address == "::1"
    assert settings.agent.command.start == ["/bin/true"]


def test_unknown_key_names_file_key_and_known_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("[restart]\nmax_restart = 5\n", "/etc/waagent-guard/guard.toml")
    message = str(caught.value)
    assert message.startswith("/etc/waagent-guard/guard.toml: restart.max_restart: unknown key")
    assert "max_restarts" in message


def test_unknown_section_is_rejected() -> None:
    with pytest.raises(ConfigError, match="restarts: unknown key"):
        parse_settings("[restarts]\nmax_restarts = 5\n")


def test_out_of_range_value_names_the_key_and_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("[restart]\nmax_restarts = -1\n", "guard.toml")
    assert "guard.toml: restart.max_restarts: Input should be greater than 0 (got -1)" in str(
        caught.value
    )


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings('[restart]\nmax_restarts = 0\n[agent]\nunit = "agent"\n')
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert any("agent.unit" in line and ".service" in line for line in lines)


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^g.toml: not valid TOML"):
        parse_settings("[restart\n", "g.toml")


def test_bad_min_version_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"vmsnapshot\.min_version: must be a dotted version"):
        parse_settings('[vmsnapshot]\nmin_version = "latest"\n')


def test_non_utf8_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "guard.toml"
    path.write_bytes(b"[restart]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path)


def test_directory_instead_of_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(tmp_path)


def test_rendered_settings_parse_back_to_the_same_settings() -> None:
    original = parse_settings(
        '[restart]\nmax_restarts = 7\n[agent.command]\nstart = ["a", "b c"]\n'
    )
    text = render_settings(original)
    assert "[agent.command]" in text
    assert parse_settings(text) == original
