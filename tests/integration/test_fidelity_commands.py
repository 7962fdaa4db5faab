"""Issue 12 through the commands: values the agent accepts never stop an observation.

Items 1 (empty/relative Lib.Dir and Pid.File), 2 (failed upgrade's active version),
3 (a capitalised "Success" is an error), 6 (auto-update by agent version) and 7 (which
waagent.conf) as `status`, `doctor` and `metrics` show them.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from waagent_guard.cli import main
from waagent_guard.demo.simagent import lay_demo_guest
from waagent_guard.sysroot import VMSNAPSHOT_NAME


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def status_json(root: Path) -> dict[str, Any]:
    code, text, err = run("status", "--json", "--root", str(root))
    assert code in (0, 1, 2), err
    document: dict[str, Any] = json.loads(text)
    return document


def set_line(root: Path, line: str) -> None:
    conf = root / "etc/waagent.conf"
    conf.write_text(conf.read_text() + line + "\n")


@pytest.mark.parametrize(
    ("line", "lib"),
    [
        ("Lib.Dir=", "/"),
        ("Lib.Dir=var/lib/waagent", "/var/lib/waagent"),
        ("Pid.File=", None),
        ("Pid.File=var/run/waagent.pid", None),
        ("Extension.LogDir=var/log/azure", None),
    ],
)
def test_empty_or_relative_paths_never_crash_status_doctor_metrics(
    tmp_path: Path, line: str, lib: str | None
) -> None:
    # Before the fix: exit 70, "host path must be absolute", from observe().
    root = lay_demo_guest(tmp_path / "guest")
    set_line(root, line)
    document = status_json(root)
    if lib is not None:
        assert document["config"]["lib_dir"] == lib
    code, text, err = run("doctor", "--json", "--root", str(root))
    assert code != 70, err
    findings = json.loads(text)
    conf_text = json.dumps(findings)
    key = line.split("=")[0]
    assert f"{key}" in conf_text and ("is empty" in conf_text or "is relative" in conf_text)
    code, text, err = run("metrics", "--root", str(root))
    assert code == 0, err
    assert "waagent_" in text


def test_relative_lib_dir_is_read_where_the_agent_reads_it(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    set_line(root, "Lib.Dir=var/lib/waagent")
    document = status_json(root)
    assert document["vmsnapshot"]["installed"] is True
    assert document["vmsnapshot"]["version"] == "1.0.9220.0"


def test_failed_upgrade_reports_the_installed_version(tmp_path: Path) -> None:
    # Item 2: 1.0.9117.0 Disabled next to 1.0.9220.0 NotInstalled: active is 1.0.9117.0.
    root = lay_demo_guest(tmp_path / "guest")
    lib = root / "var/lib/waagent"
    (lib / f"{VMSNAPSHOT_NAME}-1.0.9117.0/config/HandlerState").write_text("Disabled")
    (lib / f"{VMSNAPSHOT_NAME}-1.0.9220.0/config/HandlerState").write_text("NotInstalled")
    document = status_json(root)
    assert document["vmsnapshot"]["version"] == "1.0.9117.0"
    assert document["vmsnapshot"]["version_ok"] is True  # the default minimum is 1.0.91.0


def test_capitalised_success_is_an_error_and_degrades(tmp_path: Path) -> None:
    # Item 3: the agent reports a status it does not know ("Success") as error.
    root = lay_demo_guest(tmp_path / "guest")
    status = root / f"var/lib/waagent/{VMSNAPSHOT_NAME}-1.0.9220.0/status/1.status"
    document = json.loads(status.read_text())
    document[0]["status"]["status"] = "Success"
    status.write_text(json.dumps(document))
    assert any("failed" in reason for reason in status_json(root)["reasons"])


def test_update_to_latest_is_ignored_by_an_agent_before_2_10(tmp_path: Path) -> None:
    # Item 6: Debian 12's 2.7.3.0 does not know AutoUpdate.UpdateToLatestVersion.
    root = lay_demo_guest(tmp_path / "guest")
    set_line(root, "AutoUpdate.Enabled=y")
    set_line(root, "AutoUpdate.UpdateToLatestVersion=n")
    log = root / "var/log/waagent.log"
    assert status_json(root)["config"]["auto_update"] is False  # the log names 2.15.0.1
    log.write_text(
        log.read_text().replace("WALinuxAgent-2.15.0.1", "WALinuxAgent-2.7.3.0")
        .replace("2.15.0.1", "2.7.3.0")
    )
    document = status_json(root)
    assert document["agent"]["goal_state_version"] == "2.7.3.0"
    assert document["config"]["auto_update"] is True


def test_flatcar_reads_its_oem_conf_even_when_etc_has_one(tmp_path: Path) -> None:
    # Item 7: CoreOS/Flatcar's osutil hard-codes /usr/share/oem/waagent.conf.
    root = lay_demo_guest(tmp_path / "guest")
    (root / "etc/os-release").write_text('ID=flatcar\nNAME="Flatcar Container Linux"\n')
    oem = root / "usr/share/oem/waagent.conf"
    oem.parent.mkdir(parents=True)
    shutil.copy(root / "etc/waagent.conf", oem)
    with oem.open("a") as handle:
        handle.write("Extensions.Enabled=n\n")
    document = status_json(root)
    assert document["config"]["extensions_enabled"] is False
