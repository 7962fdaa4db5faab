"""Issue 12 regressions at the unit level (the oracle layer checks the same against the agent)."""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import pytest

from waagent_guard.agent.conf import (
    INTEGER_DEFAULTS,
    SWITCH_DEFAULTS,
    conf_path,
    configuration_path_argument,
    load_conf,
    parse_conf,
    set_conf_value,
)
from waagent_guard.agent.extensions import compare_versions, scan_lib_dir, version_at_least
from waagent_guard.agent.log import parse_records
from waagent_guard.sysroot import Sysroot


def test_set_conf_value_never_leaves_an_empty_conf(tmp_path: Path) -> None:
    # Item 8: the agent refuses an empty file ("Can't not parse empty configuration").
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"Logs.Verbose=y\n")
    assert set_conf_value(path, "Logs.Verbose", None) == ("y", None)
    assert path.read_bytes() != b""
    document = load_conf(path)
    assert document.get("Logs.Verbose") is None and document.problems == ()


def test_extension_library_level_is_read() -> None:
    # Item 5: `YYYY/MM/DD HH:MM:SS ERROR:[Publisher.Type-Version] message`.
    lines = ["2021/03/30 19:45:31 ERROR:[Microsoft.Azure.Ext-1.0.2] snapshot failed\n",
             "2021/03/30 19:45:32 [Microsoft.Azure.Ext-1.0.2] plain\n",
             "2021/03/30 19:45:33 ERROR:not the library's shape\n"]
    records = list(parse_records(lines, tz=timezone.utc))
    assert [(r.level, r.prefix, r.message) for r in records] == [
        ("ERROR", "[Microsoft.Azure.Ext-1.0.2]", "snapshot failed"),
        (None, "[Microsoft.Azure.Ext-1.0.2]", "plain"),
        (None, None, "ERROR:not the library's shape"),
    ]


@pytest.mark.parametrize(
    "line",
    ["2017/06/14 22:46:43.331214 INFO Daemon is already running: 1234\n",
     "2020-03-31T21:19:09.111829Z INFO Firewall appears established\n",
     "2023-03-13T15:44:04.906673Z INFO MainThread Daemon is already running: 1\n"],
)
def test_prefix_like_first_word_stays_in_the_message(line: str) -> None:
    # Item 5: the 2.2.2x/2.2.46 layouts without a prefix.
    (record,) = parse_records([line], tz=timezone.utc)
    assert record.prefix is None
    assert record.message.split()[0] in ("Daemon", "Firewall")


def test_a_real_prefix_is_still_a_prefix() -> None:
    (record,) = parse_records(["2021/03/30 19:35:35.971742 INFO Daemon Daemon is running\n"],
                              tz=timezone.utc)
    assert (record.prefix, record.message) == ("Daemon", "Daemon is running")


def test_configuration_path_argument_is_honoured(tmp_path: Path) -> None:
    # Item 7: `-configuration-path:` on the running agent's command line.
    argv = ("/usr/bin/python3", "-u", "/usr/sbin/waagent", "-daemon",
            "-configuration-path:/srv/agent/waagent.conf")
    assert configuration_path_argument(argv) == "/srv/agent/waagent.conf"
    assert configuration_path_argument(("waagent", "--configuration-path:rel/w.conf")) == (
        "/rel/w.conf")
    assert configuration_path_argument(("waagent", "-daemon")) is None
    sysroot = Sysroot.of(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/waagent.conf").write_text("Logs.Verbose=n\n")
    assert conf_path(sysroot, None, [argv]) == tmp_path / "srv/agent/waagent.conf"
    assert conf_path(sysroot, None, []) == tmp_path / "etc/waagent.conf"


def test_clear_linux_reads_its_distro_path(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/waagent.conf").write_text("Logs.Verbose=n\n")
    (tmp_path / "etc/os-release").write_text('NAME="Clear Linux OS"\nID=clear-linux-os\n')
    assert conf_path(Sysroot.of(tmp_path), None) == (
        tmp_path / "usr/share/defaults/waagent/waagent.conf")


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [("1", "1.0", 0), ("1.0.91", "1.0.91.0", 0), ("1.0.0rc1", "1.0.0", -1),
     ("1.0.0alpha2", "1.0.0beta1", -1), ("1.0.0-rc2", "1.0.0.rc2", 0),
     ("1.0.91.0", "1.0.9220.0", -1), ("1.0rc", "1.0rc1", None), ("x", "1", None)],
)
def test_versions_compare_like_flexible_version(left: str, right: str, order: int | None) -> None:
    # Item 9: padded, pre-releases ordered; None where FlexibleVersion raises.
    assert compare_versions(left, right) == order
    assert version_at_least("1.0.0rc1", "1.0.0") is False
    assert version_at_least("1", "1.0") is True


def test_three_non_fatal_failures_blacklist_an_agent_version(tmp_path: Path) -> None:
    # Item 4: what 2.7.3.0 writes after three failures.
    directory = tmp_path / "WALinuxAgent-2.9.1.1"
    directory.mkdir()
    (directory / "error.json").write_text(
        json.dumps({"last_failure": 1.0, "failure_count": 3, "was_fatal": False}))
    (version,) = scan_lib_dir(tmp_path, now=0).agent_versions
    assert version.blacklisted


def test_problem_texts_name_current_defaults() -> None:
    # Item 10: OS.EnableFirewallPeriod 300 and Debug.EnableFastTrack true (2.15).
    assert INTEGER_DEFAULTS["OS.EnableFirewallPeriod"] == 300
    assert SWITCH_DEFAULTS["Debug.EnableFastTrack"] is True
    problems = parse_conf(b"OS.EnableFirewallPeriod=soon\nDebug.EnableFastTrack=maybe\n").problems
    assert "default (300)" in problems[0] and "default (y)" in problems[1]
