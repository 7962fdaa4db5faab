"""The auto-restart drop-in and `waagent-guard agent ensure-autorestart`."""

from __future__ import annotations

import argparse
import configparser
import io
import json
import stat
from pathlib import Path
from typing import Optional

import pytest

from waagent_guard.cli import main
from waagent_guard.commands.agent import ensure_autorestart
from waagent_guard.context import Context
from waagent_guard.errors import UsageError, WriteError
from waagent_guard.service import (
    Binaries,
    CommandRunner,
    ServiceManager,
    SubprocessRunner,
    SystemdManager,
    SysvManager,
    UnitState,
    make_service_manager,
)
from waagent_guard.service.autorestart import (
    DROP_IN_TEXT,
    autorestart_configured,
    drop_in_path,
    ensure_drop_in,
)
from waagent_guard.settings import Settings
from waagent_guard.sysroot import Sysroot

FAKES = Path(__file__).resolve().parent.parent / "fakes"
UNIT = "walinuxagent.service"
DROP_IN = f"/etc/systemd/system/{UNIT}.d/50-waagent-guard-autorestart.conf"


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "fake"
    (directory / "units").mkdir(parents=True)
    (directory / "units" / UNIT).write_text("LoadState=loaded\nRestart=no\n")
    return directory


@pytest.fixture
def runner(fake_dir: Path) -> SubprocessRunner:
    return SubprocessRunner(extra_env={"FAKE_BIN_DIR": str(fake_dir)})


@pytest.fixture
def root(tmp_path: Path) -> Sysroot:
    sysroot = Sysroot(tmp_path / "root")
    unit_file = sysroot.path(f"/lib/systemd/system/{UNIT}")
    unit_file.parent.mkdir(parents=True)
    unit_file.write_text("[Service]\nExecStart=/usr/sbin/waagent -daemon\n")
    return sysroot


def systemctl_calls(fake_dir: Path) -> list[list[str]]:
    log = fake_dir / "calls.log"
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]


def systemd(runner: SubprocessRunner) -> SystemdManager:
    return SystemdManager(UNIT, runner, systemctl=str(FAKES / "systemctl"))


# -- the pure check and the file --

def test_autorestart_configured_reads_the_restart_policy() -> None:
    assert autorestart_configured(UnitState(active_state="active", restart="always"))
    assert autorestart_configured(UnitState(active_state="active", restart="on-failure"))
    assert not autorestart_configured(UnitState(active_state="active", restart="no"))
    assert not autorestart_configured(UnitState(active_state="active", restart="on-success"))


def test_drop_in_sets_restart_and_a_visible_start_limit() -> None:
    parser = configparser.ConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(DROP_IN_TEXT)
    assert dict(parser["Service"]) == {"Restart": "always", "RestartSec": "5"}
    assert dict(parser["Unit"]) == {"StartLimitIntervalSec": "600", "StartLimitBurst": "5"}


def test_drop_in_lives_in_the_units_d_directory(root: Sysroot) -> None:
    assert drop_in_path(root, UNIT) == root.path(DROP_IN)


def test_ensure_writes_the_drop_in_and_reloads_systemd(
    root: Sysroot, runner: SubprocessRunner, fake_dir: Path
) -> None:
    result = ensure_drop_in(root, systemd(runner))
    path = root.path(DROP_IN)
    assert result.changed and result.reloaded
    assert path.read_text() == DROP_IN_TEXT
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert systemctl_calls(fake_dir) == [["daemon-reload"]]


def test_second_run_changes_nothing(
    root: Sysroot, runner: SubprocessRunner, fake_dir: Path
) -> None:
    ensure_drop_in(root, systemd(runner))
    before = root.path(DROP_IN).stat()
    result = ensure_drop_in(root, systemd(runner))
    assert not result.changed and not result.reloaded
    assert root.path(DROP_IN).stat().st_ino == before.st_ino
    assert systemctl_calls(fake_dir) == [["daemon-reload"]]


def test_a_different_drop_in_is_replaced(root: Sysroot, runner: SubprocessRunner) -> None:
    path = root.path(DROP_IN)
    path.parent.mkdir(parents=True)
    path.write_text("[Service]\nRestart=no\n")
    assert ensure_drop_in(root, systemd(runner)).changed
    assert path.read_text() == DROP_IN_TEXT


def test_dry_run_writes_nothing(root: Sysroot, runner: SubprocessRunner, fake_dir: Path) -> None:
    result = ensure_drop_in(root, systemd(runner), dry_run=True)
    assert result.changed
    assert result.content == DROP_IN_TEXT
    assert not root.path(DROP_IN).exists()
    assert systemctl_calls(fake_dir) == []


def test_without_reload_systemd_is_not_called(
    root: Sysroot, runner: SubprocessRunner, fake_dir: Path
) -> None:
    result = ensure_drop_in(root, systemd(runner), reload=False)
    assert result.changed and not result.reloaded
    assert systemctl_calls(fake_dir) == []


def test_other_managers_are_refused_with_an_explanation(
    root: Sysroot, runner: SubprocessRunner
) -> None:
    manager = SysvManager("waagent", runner, binary=str(FAKES / "service"))
    with pytest.raises(UsageError, match=r"drop-ins are a systemd feature.*managed by sysv"):
        ensure_drop_in(root, manager)


def test_a_file_where_the_directory_belongs_is_a_write_error(
    root: Sysroot, runner: SubprocessRunner
) -> None:
    blocker = root.path(f"/etc/systemd/system/{UNIT}.d")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    with pytest.raises(WriteError, match="cannot create the directory"):
        ensure_drop_in(root, systemd(runner))


def test_an_unreadable_drop_in_is_a_write_error(root: Sysroot, runner: SubprocessRunner) -> None:
    root.path(DROP_IN).mkdir(parents=True)  # a directory where the file belongs
    with pytest.raises(WriteError, match="cannot read"):
        ensure_drop_in(root, systemd(runner))


# -- the command --

def context_for(sysroot: Sysroot) -> tuple[Context, io.StringIO]:
    out = io.StringIO()
    context = Context(sysroot=sysroot, config_path=None, stdout=out, stderr=io.StringIO())
    context._settings = Settings()
    return context, out


def factory_with(runner: SubprocessRunner):  # type: ignore[no-untyped-def]
    def build(
        settings: Settings, sysroot: Sysroot, _runner: Optional[CommandRunner]
    ) -> ServiceManager:
        binaries = Binaries(systemctl=str(FAKES / "systemctl"))
        return make_service_manager(settings, sysroot, runner, binaries=binaries)

    return build


def args(dry_run: bool = False) -> argparse.Namespace:
    return argparse.Namespace(dry_run=dry_run)


def test_command_on_a_live_system_reloads_and_verifies(
    root: Sysroot, runner: SubprocessRunner, fake_dir: Path
) -> None:
    root.path("/run/systemd/system").mkdir(parents=True)
    after = fake_dir / "after" / "daemon-reload" / UNIT
    after.parent.mkdir(parents=True)
    after.write_text("LoadState=loaded\nRestart=always\nRestartUSec=5s\n")
    context, out = context_for(root)
    assert ensure_autorestart(args(), context, manager_factory=factory_with(runner)) == 0
    text = out.getvalue()
    assert f"wrote {DROP_IN}" in text
    assert "reloaded systemd" in text
    assert f"{UNIT} now restarts itself (Restart=always)" in text
    context, out = context_for(root)
    assert ensure_autorestart(args(), context, manager_factory=factory_with(runner)) == 0
    assert out.getvalue() == f"already configured: {DROP_IN}\n"


def test_command_warns_when_another_drop_in_overrides(
    root: Sysroot, runner: SubprocessRunner, fake_dir: Path
) -> None:
    root.path("/run/systemd/system").mkdir(parents=True)
    (fake_dir / "units" / UNIT).write_text(
        "LoadState=loaded\nRestart=no\nDropInPaths=/etc/systemd/system/x.d/99-no.conf\n"
    )
    context, out = context_for(root)
    assert ensure_autorestart(args(), context, manager_factory=factory_with(runner)) == 1
    assert "still reports Restart=no" in out.getvalue()
    assert "99-no.conf" in out.getvalue()


def test_command_dry_run_prints_the_drop_in(root: Sysroot, runner: SubprocessRunner) -> None:
    context, out = context_for(root)
    assert ensure_autorestart(args(True), context, manager_factory=factory_with(runner)) == 0
    text = out.getvalue()
    assert text.startswith(f"would write {DROP_IN}:\n")
    assert DROP_IN_TEXT in text
    assert "nothing changed" in text
    assert not root.path(DROP_IN).exists()


def test_cli_on_an_offline_tree_writes_without_reloading(root: Sysroot) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["agent", "ensure-autorestart", "--root", str(root.root)], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert f"wrote {DROP_IN}" in out.getvalue()
    assert "not reloading systemd" in out.getvalue()
    assert root.path(DROP_IN).read_text() == DROP_IN_TEXT


def test_cli_refuses_a_sysv_tree(tmp_path: Path) -> None:
    sysroot = Sysroot(tmp_path)
    script = sysroot.path("/etc/init.d/waagent")
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    err = io.StringIO()
    code = main(["agent", "ensure-autorestart", "--root", str(tmp_path)],
                stdout=io.StringIO(), stderr=err)
    assert code == 64
    assert "drop-ins are a systemd feature" in err.getvalue()
