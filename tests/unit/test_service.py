"""Service managers against fake systemctl/service/rc-service binaries (tests/fakes)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from waagent_guard.errors import ConfigError, ServiceError
from waagent_guard.service import (
    SHOW_PROPERTIES,
    Binaries,
    CommandManager,
    OpenrcManager,
    SubprocessRunner,
    SystemdManager,
    SysvManager,
    UnitState,
    default_pid_finder,
    detect_manager_kind,
    detect_systemd_unit,
    make_service_manager,
    parse_show,
    parse_timespan,
    unit_state_from_show,
)
from waagent_guard.settings import AgentCommandSettings, Settings, parse_settings
from waagent_guard.sysroot import Sysroot

FAKES = Path(__file__).resolve().parent.parent / "fakes"
DATA = Path(__file__).resolve().parent.parent / "data" / "service"
BINARIES = Binaries(
    systemctl=str(FAKES / "systemctl"),
    service=str(FAKES / "service"),
    rc_service=str(FAKES / "rc-service"),
)


class Fake:
    """The state directory the fake binaries read and record into."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        self.runner = SubprocessRunner(extra_env={"FAKE_BIN_DIR": str(directory)})

    def set_unit(self, unit: str, text: str) -> None:
        self._write(f"units/{unit}", text)

    def set_exit(self, verb: str, code: int, stderr: str = "", stdout: str = "") -> None:
        self._write(f"exit/{verb}", str(code))
        if stderr:
            self._write(f"stderr/{verb}", stderr)
        if stdout:
            self._write(f"stdout/{verb}", stdout)

    def set_after(self, verb: str, unit: str, text: str) -> None:
        self._write(f"after/{verb}/{unit}", text)

    def set_sleep(self, verb: str, seconds: float) -> None:
        self._write(f"sleep/{verb}", str(seconds))

    def _write(self, relative: str, text: str) -> None:
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def calls(self) -> list[dict[str, Any]]:
        log = self.directory / "calls.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls()]


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path / "fake")


@pytest.fixture
def root(tmp_path: Path) -> Sysroot:
    (tmp_path / "root").mkdir()
    return Sysroot(tmp_path / "root", proc_root=tmp_path / "proc")


def touch(sysroot: Sysroot, host_path: str) -> None:
    path = sysroot.path(host_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def settings_with(text: str) -> Settings:
    return parse_settings(text, "guard.toml")


def systemd(
    fake: Fake, unit: str = "walinuxagent.service", timeout: float = 10.0
) -> SystemdManager:
    return SystemdManager(unit, fake.runner, systemctl=BINARIES.systemctl, timeout=timeout)


# -- parsing --

@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100ms", 0.1), ("5s", 5.0), ("1min 30s", 90.0), ("0", 0.0), ("2h 5min", 7500.0),
        ("500us", 0.0005), ("1.5s", 1.5), ("1d", 86400.0), ("3 sec", 3.0), ("1min30s", 90.0),
    ],
)
def test_parse_timespan_reads_systemd_durations(text: str, seconds: float) -> None:
    assert parse_timespan(text) == pytest.approx(seconds)


def test_parse_timespan_reads_infinity() -> None:
    assert parse_timespan("infinity") == math.inf


@pytest.mark.parametrize("text", ["", "   ", "5x", "abc", "5s garbage"])
def test_parse_timespan_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="time span"):
        parse_timespan(text)


def test_parse_show_keeps_equals_signs_inside_values() -> None:
    assert parse_show("A=b=c\nnot a property\n=x\nB=\n") == {"A": "b=c", "B": ""}


def test_debian_stock_unit_reports_no_autorestart() -> None:
    state = unit_state_from_show(parse_show((DATA / "debian-stock-show.txt").read_text()))
    assert state.active_state == "inactive"
    assert state.restart == "no"
    assert not state.autorestart
    assert state.restart_seconds == pytest.approx(0.1)
    assert state.start_limit_burst == 5
    assert state.start_limit_interval_seconds == 10.0
    assert state.main_pid is None
    assert state.condition_result is False
    assert not state.start_limit_hit


def test_unit_state_after_sigkill_reads_signal_result() -> None:
    state = unit_state_from_show(parse_show(
        "ActiveState=failed\nSubState=failed\nResult=signal\nExecMainCode=2\n"
        "ExecMainStatus=9\nMainPID=0\nRestart=always\nRestartUSec=5s\nConditionResult=yes\n"
        "DropInPaths=/etc/a.conf /etc/b.conf\n"
    ))
    assert state.result == "signal"
    assert state.exec_main_status == 9
    assert state.autorestart
    assert state.restart_seconds == 5.0
    assert state.condition_result is True
    assert state.drop_in_paths == ("/etc/a.conf", "/etc/b.conf")
    assert not state.is_active


def test_unit_state_ignores_unparsable_numbers() -> None:
    state = unit_state_from_show({"MainPID": "x", "RestartUSec": "soon", "NRestarts": ""})
    assert state.main_pid is None
    assert state.restart_seconds is None
    assert state.n_restarts is None
    assert state.active_state == "unknown"


def test_start_limit_hit_is_read_from_result() -> None:
    assert UnitState(active_state="failed", result="start-limit-hit").start_limit_hit


# -- the runner --

def test_runner_passes_lc_all_c_and_returns_output(fake: Fake) -> None:
    fake.set_unit("x.service", "ActiveState=active\n")
    result = fake.runner([BINARIES.systemctl, "show", "-p", "ActiveState", "x.service"],
                         timeout=10)
    assert result.returncode == 0
    assert result.stdout == "ActiveState=active\n"
    assert fake.calls()[0]["lc_all"] == "C"


def test_runner_timeout_names_the_command(fake: Fake) -> None:
    fake.set_sleep("start", 30)
    with pytest.raises(ServiceError, match=r"systemctl start x.service` did not finish within"):
        fake.runner([BINARIES.systemctl, "start", "x.service"], timeout=0.3)


def test_runner_missing_binary_says_not_found(tmp_path: Path) -> None:
    runner = SubprocessRunner(base_env={"PATH": str(tmp_path)})
    with pytest.raises(ServiceError, match=r"not found; install it or set agent\.manager"):
        runner([str(tmp_path / "no-such-tool"), "status"], timeout=5)


def test_runner_unexecutable_file_is_a_service_error(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(ServiceError, match="cannot run"):
        SubprocessRunner()([str(script)], timeout=5)


# -- systemd --

def test_systemd_state_asks_for_every_property(fake: Fake) -> None:
    fake.set_unit("walinuxagent.service", "ActiveState=active\nSubState=running\nMainPID=42\n"
                  "Restart=always\nRestartUSec=5s\nLoadState=loaded\n")
    state = systemd(fake).state()
    assert state.active_state == "active"
    assert state.main_pid == 42
    assert state.load_state == "loaded"
    assert fake.argvs() == [
        ["show", "--no-pager", "-p", ",".join(SHOW_PROPERTIES), "walinuxagent.service"]
    ]


@pytest.mark.parametrize(
    ("method", "argv"),
    [
        # Issue 10 item 5: actions only enqueue a job; the next look verifies.
        ("start", ["start", "--no-block", "waagent.service"]),
        ("restart", ["restart", "--no-block", "waagent.service"]),
        ("stop", ["stop", "--no-block", "waagent.service"]),
        ("reset_failed", ["reset-failed", "waagent.service"]),
        ("daemon_reload", ["daemon-reload"]),
    ],
)
def test_systemd_actions_run_systemctl(fake: Fake, method: str, argv: list[str]) -> None:
    getattr(systemd(fake, "waagent.service"), method)()
    assert fake.argvs() == [argv]


def test_systemd_start_changes_the_reported_state(fake: Fake) -> None:
    fake.set_unit("waagent.service", "ActiveState=failed\n")
    fake.set_after("start", "waagent.service", "ActiveState=active\n")
    manager = systemd(fake, "waagent.service")
    manager.start()
    assert manager.state().is_active


def test_systemd_failure_reports_command_exit_code_and_stderr(fake: Fake) -> None:
    fake.set_exit("start", 1, "Job for waagent.service failed.\nSee journal.\n")
    with pytest.raises(ServiceError) as raised:
        systemd(fake, "waagent.service").start()
    message = str(raised.value)
    assert "systemctl start --no-block waagent.service` failed (exit 1): See journal." in message
    assert "journalctl -u waagent.service" in message


@pytest.mark.parametrize("answer", ["starting", "running", "degraded", "stopping"])
def test_systemd_system_state_is_is_system_running(fake: Fake, answer: str) -> None:
    fake.set_exit("is-system-running", 0 if answer == "running" else 1, stdout=answer + "\n")
    assert systemd(fake).system_state() == answer


def test_systemd_system_state_that_makes_no_sense_is_an_error(fake: Fake) -> None:
    fake.set_exit("is-system-running", 1, stdout="Failed to connect to bus\n")
    with pytest.raises(ServiceError, match="is-system-running"):
        systemd(fake).system_state()


def test_systemd_job_is_read_from_show() -> None:
    assert unit_state_from_show({"ActiveState": "inactive", "Job": "17 start"}).job == "start"
    assert unit_state_from_show({"ActiveState": "inactive", "Job": "17"}).job == "pending"
    assert unit_state_from_show({"ActiveState": "inactive", "Job": ""}).job is None


def test_systemd_failure_without_output_says_so(fake: Fake) -> None:
    fake.set_exit("stop", 5)
    with pytest.raises(ServiceError, match=r"exit 5\): no output"):
        systemd(fake).stop()


def test_detect_unit_prefers_the_installed_unit_file(fake: Fake, root: Sysroot) -> None:
    touch(root, "/lib/systemd/system/walinuxagent.service")
    assert detect_systemd_unit(root, fake.runner, systemctl=BINARIES.systemctl) == (
        "walinuxagent.service"
    )
    assert fake.calls() == []


def test_detect_unit_asks_systemctl_when_no_file_decides(fake: Fake, root: Sysroot) -> None:
    fake.set_unit("waagent.service", "LoadState=loaded\n")
    assert detect_systemd_unit(root, fake.runner, systemctl=BINARIES.systemctl) == (
        "waagent.service"
    )


def test_detect_unit_with_both_files_and_none_loaded_takes_the_first(
    fake: Fake, root: Sysroot
) -> None:
    touch(root, "/usr/lib/systemd/system/waagent.service")
    touch(root, "/etc/systemd/system/walinuxagent.service")
    assert detect_systemd_unit(root, fake.runner, systemctl=BINARIES.systemctl) == (
        "walinuxagent.service"
    )


def test_detect_unit_without_any_agent_unit_explains_the_fix(fake: Fake, root: Sysroot) -> None:
    with pytest.raises(ServiceError, match=r"set agent\.unit in guard\.toml"):
        detect_systemd_unit(root, fake.runner, systemctl=BINARIES.systemctl)


# -- choosing a manager --

def test_runtime_directory_means_systemd(root: Sysroot) -> None:
    root.path("/run/systemd/system").mkdir(parents=True)
    assert detect_manager_kind(root) == "systemd"


def test_offline_tree_with_a_unit_file_means_systemd(root: Sysroot) -> None:
    touch(root, "/lib/systemd/system/waagent.service")
    assert detect_manager_kind(root) == "systemd"


def test_init_script_with_rc_service_means_openrc(root: Sysroot) -> None:
    touch(root, "/etc/init.d/waagent")
    touch(root, "/sbin/rc-service")
    assert detect_manager_kind(root) == "openrc"


def test_init_script_alone_means_sysv(root: Sysroot) -> None:
    touch(root, "/etc/init.d/walinuxagent")
    assert detect_manager_kind(root) == "sysv"


def test_nothing_recognisable_asks_for_agent_manager(root: Sysroot) -> None:
    with pytest.raises(ServiceError, match=r"set agent.manager"):
        detect_manager_kind(root)


def test_make_manager_auto_builds_systemd_with_the_detected_unit(
    fake: Fake, root: Sysroot
) -> None:
    root.path("/run/systemd/system").mkdir(parents=True)
    touch(root, "/lib/systemd/system/walinuxagent.service")
    manager = make_service_manager(Settings(), root, fake.runner, binaries=BINARIES)
    assert isinstance(manager, SystemdManager)
    assert (manager.name, manager.unit) == ("systemd", "walinuxagent.service")


def test_make_manager_honours_a_configured_unit(fake: Fake, root: Sysroot) -> None:
    settings = settings_with('[agent]\nmanager = "systemd"\nunit = "waagent.service"\n')
    manager = make_service_manager(settings, root, fake.runner, binaries=BINARIES)
    assert manager.unit == "waagent.service"


def test_make_manager_builds_sysv_for_the_installed_script(fake: Fake, root: Sysroot) -> None:
    touch(root, "/etc/init.d/walinuxagent")
    manager = make_service_manager(Settings(), root, fake.runner, binaries=BINARIES,
                                   pid_finder=lambda: None)
    assert isinstance(manager, SysvManager)
    assert manager.unit == "walinuxagent"


def test_make_manager_builds_openrc_from_a_configured_unit(fake: Fake, root: Sysroot) -> None:
    settings = settings_with('[agent]\nmanager = "openrc"\nunit = "waagent.service"\n')
    manager = make_service_manager(settings, root, fake.runner, binaries=BINARIES)
    assert isinstance(manager, OpenrcManager)
    assert manager.unit == "waagent"


def test_make_manager_sysv_without_a_script_defaults_to_waagent(
    fake: Fake, root: Sysroot
) -> None:
    settings = settings_with('[agent]\nmanager = "sysv"\n')
    assert make_service_manager(settings, root, fake.runner, binaries=BINARIES).unit == "waagent"


def test_make_manager_builds_the_command_manager(root: Sysroot) -> None:
    settings = settings_with('[agent]\nmanager = "command"\n[agent.command]\nstart = ["true"]\n')
    manager = make_service_manager(settings, root)
    assert isinstance(manager, CommandManager)
    assert manager.name == "command"


# -- SysV and OpenRC --

@pytest.mark.parametrize(
    ("code", "active_state"),
    [(0, "active"), (3, "inactive"), (1, "failed"), (32, "failed"), (4, "unknown")],
)
def test_init_script_status_codes_map_to_states(fake: Fake, code: int, active_state: str) -> None:
    fake.set_exit("status", code)
    manager = SysvManager("walinuxagent", fake.runner, binary=BINARIES.service,
                          pid_finder=lambda: 77)
    state = manager.state()
    assert state.active_state == active_state
    assert state.main_pid == 77
    assert not state.autorestart


def test_openrc_actions_run_rc_service(fake: Fake) -> None:
    manager = OpenrcManager("waagent", fake.runner, binary=BINARIES.rc_service)
    manager.start()
    manager.restart()
    manager.stop()
    manager.reset_failed()
    manager.daemon_reload()
    assert manager.state().main_pid is None
    assert [(c["tool"], c["argv"]) for c in fake.calls()] == [
        ("rc-service", ["waagent", "start"]),
        ("rc-service", ["waagent", "restart"]),
        ("rc-service", ["waagent", "stop"]),
        ("rc-service", ["waagent", "status"]),
    ]


def test_sysv_failure_names_the_command(fake: Fake) -> None:
    fake.set_exit("restart", 1, "waagent: not installed\n")
    manager = SysvManager("waagent", fake.runner, binary=BINARIES.service)
    with pytest.raises(ServiceError, match=r"service waagent restart` failed \(exit 1\)"):
        manager.restart()


# -- configured commands --

def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def recorder(path: Path, word: str) -> list[str]:
    return python(f"open({str(path)!r}, 'a').write({word!r} + '\\n')")


def test_command_manager_state_follows_the_status_exit_code(tmp_path: Path) -> None:
    commands = AgentCommandSettings(status=python("raise SystemExit(3)"), start=["true"])
    manager = CommandManager(commands, SubprocessRunner(), pid_finder=lambda: 5)
    state = manager.state()
    assert (state.active_state, state.main_pid) == ("inactive", 5)
    running = AgentCommandSettings(status=["true"], start=["true"])
    assert CommandManager(running, SubprocessRunner()).state().is_active


def test_command_manager_without_status_uses_the_process_finder() -> None:
    commands = AgentCommandSettings(start=["true"])
    pid: Optional[int] = None
    manager = CommandManager(commands, SubprocessRunner(), pid_finder=lambda: pid)
    assert manager.state().active_state == "inactive"
    pid = 12
    assert manager.state().active_state == "active"
    assert CommandManager(commands, SubprocessRunner()).state().active_state == "unknown"


def test_command_manager_runs_configured_argv_lists(tmp_path: Path) -> None:
    log = tmp_path / "log"
    commands = AgentCommandSettings(
        start=recorder(log, "start"), restart=recorder(log, "restart"),
        stop=recorder(log, "stop"),
    )
    manager = CommandManager(commands, SubprocessRunner())
    manager.start()
    manager.restart()
    manager.stop()
    manager.reset_failed()
    manager.daemon_reload()
    assert log.read_text().split() == ["start", "restart", "stop"]


def test_command_manager_restarts_by_stop_then_start_without_restart(tmp_path: Path) -> None:
    log = tmp_path / "log"
    commands = AgentCommandSettings(start=recorder(log, "start"), stop=recorder(log, "stop"))
    CommandManager(commands, SubprocessRunner()).restart()
    assert log.read_text().split() == ["stop", "start"]


def test_command_manager_starts_with_restart_when_start_is_unset(tmp_path: Path) -> None:
    log = tmp_path / "log"
    commands = AgentCommandSettings(restart=recorder(log, "restart"))
    CommandManager(commands, SubprocessRunner()).start()
    assert log.read_text().split() == ["restart"]


def test_command_manager_needs_a_start_command() -> None:
    with pytest.raises(ConfigError, match=r"agent.command.start: empty"):
        CommandManager(AgentCommandSettings(), SubprocessRunner())


def test_command_manager_stop_needs_a_stop_command() -> None:
    manager = CommandManager(AgentCommandSettings(start=["true"]), SubprocessRunner())
    with pytest.raises(ConfigError, match=r"agent.command.stop: empty"):
        manager.stop()


def test_command_manager_failure_points_at_the_setting() -> None:
    manager = CommandManager(AgentCommandSettings(start=["false"]), SubprocessRunner())
    with pytest.raises(ServiceError, match=r"check agent.command.start in guard.toml"):
        manager.start()


# -- the default process finder --

def test_default_pid_finder_finds_the_agent_daemon(tmp_path: Path) -> None:
    process = tmp_path / "proc" / "4242"
    process.mkdir(parents=True)
    (process / "cmdline").write_bytes(b"python3\0-u\0/usr/sbin/waagent\0-daemon\0")
    (process / "stat").write_text("4242 (python3) S 1 4242 4242 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 "
                                  "0 100 0 0\n")
    (process / "status").write_text("Name:\tpython3\nUid:\t0\t0\t0\t0\nVmRSS:\t  28000 kB\n")
    (tmp_path / "proc" / "self").mkdir()
    assert default_pid_finder(tmp_path / "proc")() == 4242


def test_default_pid_finder_returns_none_without_an_agent(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    assert default_pid_finder(tmp_path / "proc")() is None


def test_a_hung_agent_stop_never_blocks_the_guards_restart(
    fake: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10 item 5: `systemctl restart` of an agent whose stop hangs would block for
    the whole stop timeout (here longer than the manager's); `--no-block` queues it."""
    fake.set_sleep("restart", 600)
    fake.set_sleep("stop", 600)
    manager = systemd(fake, "walinuxagent.service", timeout=5.0)
    manager.restart()  # raises ServiceError ("timed out") if it waited for the job
    manager.stop()
    assert [argv[0] for argv in fake.argvs()] == ["restart", "stop"]
