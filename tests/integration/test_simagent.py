"""The demo guest tree and the simulated agent, run as real processes against the real /proc."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timezone
from pathlib import Path

import pytest

from waagent_guard.agent.conf import agent_config, load_conf
from waagent_guard.agent.extensions import scan_lib_dir
from waagent_guard.agent.log import LogRecord, parse_records
from waagent_guard.agent.process import AgentProcess, check_pidfile, find_agent_processes
from waagent_guard.demo.simagent import (
    ENV_ROOT,
    find_guest_root,
    lay_demo_guest,
    main,
    start_simagent,
)
from waagent_guard.sysroot import VMSNAPSHOT_NAME

PROC = Path("/proc")
INTERVAL = "0.2"


def wait_until(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Poll a condition another process makes true (files and /proc offer no event to await)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def signal_mask_restored() -> Iterator[None]:
    """The simulated agent's main() blocks SIGTERM/SIGINT/SIGCHLD for sigtimedwait; run
    in-process, that mask must not leak into the tests after it (a later test's own
    SIGTERM would stay pending forever)."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    return lay_demo_guest(tmp_path / "guest")


@pytest.fixture
def started(guest: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at the end are killed by PID."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()  # SIGTERM lets the daemon stop its child and save coverage
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    # The ExtHandler child exits by itself once orphaned.
    wait_until(lambda: not agent_processes(guest), "the simulated agent's children to exit")


def agent_processes(guest: Path) -> list[AgentProcess]:
    prefix = str(guest.resolve()) + os.sep
    return [
        p
        for p in find_agent_processes(PROC)
        if any(argument.startswith(prefix) for argument in p.cmdline)
    ]


def records(guest: Path) -> list[LogRecord]:
    text = (guest / "var/log/waagent.log").read_text(encoding="utf-8")
    return list(parse_records(text.splitlines(keepends=True), tz=timezone.utc))


def log_text(guest: Path) -> str:
    return (guest / "var/log/waagent.log").read_text(encoding="utf-8")


def pidfile(guest: Path) -> Path:
    return guest / "var/run/waagent.pid"


def start(
    guest: Path, started: list[subprocess.Popen[bytes]], *args: str
) -> subprocess.Popen[bytes]:
    process = start_simagent(guest, "--interval", INTERVAL, *args)
    started.append(process)
    return process


def wait_running(guest: Path, process: subprocess.Popen[bytes]) -> None:
    wait_until(
        lambda: pidfile(guest).exists() and pidfile(guest).read_text() == str(process.pid),
        "the pidfile",
    )
    wait_until(
        lambda: (
            "[HEARTBEAT] Agent WALinuxAgent-2.15.0.1" in log_text(guest).split("Run daemon")[-1]
        ),
        "the goal-state agent's first heartbeat",
    )


# --- the demo guest tree --------------------------------------------------------------


def test_demo_guest_lib_dir_scans_cleanly(guest: Path) -> None:
    config = agent_config(load_conf(guest / "etc/waagent.conf"))
    assert config.lib_dir == "/var/lib/waagent"
    state = scan_lib_dir(guest / "var/lib/waagent", now=time.time())
    assert state.problems == ()
    assert state.wireserver_endpoint == "127.0.0.1"
    assert state.provisioned and not state.disable_agent
    assert [(a.version, a.blacklisted) for a in state.agent_versions] == [("2.15.0.1", False)]
    assert state.waagent_status_path is not None
    assert state.waagent_status_path.parent.name == "2026-11-26T05-00-00__3"
    vmsnapshot = state.handler(VMSNAPSHOT_NAME)
    assert vmsnapshot is not None
    assert (vmsnapshot.version, vmsnapshot.handler_state, vmsnapshot.handler_status) == (
        "1.0.9220.0",
        "Enabled",
        "Ready",
    )
    assert vmsnapshot.status is not None
    assert (vmsnapshot.status.sequence, vmsnapshot.status.status) == (1, "success")
    assert [(h.version, h.active) for h in state.handlers] == [
        ("1.0.9117.0", False),
        ("1.0.9220.0", True),
    ]


def test_demo_guest_log_mixes_all_five_formats(guest: Path) -> None:
    parsed = records(guest)
    assert {record.format for record in parsed} == {1, 2, 3, 4, 5}
    assert any(len(record.lines) > 1 and "Traceback" in record.message for record in parsed)
    assert any("[stdout]" in record.message and "[stderr]" in record.message for record in parsed)


def test_demo_guest_secrets_are_all_fake_canaries(guest: Path) -> None:
    lib = guest / "var/lib/waagent"
    for name in ("Certificates.pem", "TransportPrivate.pem", "ovf-env.xml"):
        assert "CANARY" in (lib / name).read_text()
    settings = lib / f"{VMSNAPSHOT_NAME}-1.0.9220.0/config/0.settings"
    assert "sig=CANARYsasTOKEN" in settings.read_text()
    assert (guest / "var/lib/waagent/WireServerEndpoint").read_text() == "127.0.0.1"
    assert (
        "option unknown-245 a8:3f:81:10;"
        in (guest / "var/lib/dhcp/dhclient.eth0.leases").read_text()
    )


# --- the simulated agent --------------------------------------------------------------


def test_simagent_writes_pidfile_and_format_1_lines(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    old_lines = len(log_text(guest).splitlines())
    process = start(guest, started)
    wait_running(guest, process)
    new_lines = log_text(guest).splitlines(keepends=True)[old_lines:]
    new = list(parse_records(new_lines, tz=timezone.utc))
    assert new[0].message == "Azure Linux Agent Version:2.7.3.0"
    assert all(record.format == 1 for record in new)
    assert (new[0].level, new[0].thread, new[0].prefix) == ("INFO", "Daemon", "Daemon")
    assert all(record.timestamp is not None and record.timestamp.tzinfo for record in new)
    assert not any(record.level == "VERBOSE" for record in new)  # Logs.Verbose=n

    assert check_pidfile(pidfile(guest), PROC).state == "agent"
    found = agent_processes(guest)
    assert [(p.role, p.version) for p in found] == [("daemon", None), ("exthandler", "2.15.0.1")]
    assert found[0].pid == process.pid


def test_sigterm_removes_the_pidfile_and_stops_the_child(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    process = start(guest, started)
    wait_running(guest, process)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert not pidfile(guest).exists()
    assert agent_processes(guest) == []
    assert "forwarding signal 15 to WALinuxAgent-2.15.0.1" in log_text(guest)


def test_second_start_with_live_pidfile_exits_zero(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    first = start(guest, started)
    wait_running(guest, first)
    second = start(guest, started)
    assert second.wait(timeout=15) == 0
    assert f"Daemon Daemon Daemon is already running: {first.pid}" in log_text(guest)
    assert first.poll() is None
    assert pidfile(guest).read_text() == str(first.pid)


def test_stale_pidfile_naming_another_process_keeps_the_agent_down(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    pidfile(guest).parent.mkdir(parents=True, exist_ok=True)
    pidfile(guest).write_text(str(os.getpid()))
    process = start(guest, started)
    assert process.wait(timeout=15) == 0
    assert f"Daemon is already running: {os.getpid()}" in log_text(guest)
    assert check_pidfile(pidfile(guest), PROC).state == "other"


def test_pidfile_naming_a_dead_pid_does_not_stop_the_agent(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile(guest).parent.mkdir(parents=True, exist_ok=True)
    pidfile(guest).write_text(str(dead.pid))
    process = start(guest, started)
    wait_running(guest, process)


def test_verbose_conf_adds_verbose_lines(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    conf = guest / "etc/waagent.conf"
    conf.write_text(conf.read_text().replace("Logs.Verbose=n", "Logs.Verbose=y"))
    process = start(guest, started)
    wait_running(guest, process)
    wait_until(
        lambda: "VERBOSE ExtHandler ExtHandler Report vm agent status" in log_text(guest),
        "a VERBOSE line",
    )
    verbose = [r for r in records(guest) if r.level == "VERBOSE"]
    assert verbose and all(r.format == 1 for r in verbose)


def test_sigkill_leaves_the_pidfile_and_orphans_the_child(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    process = start(guest, started)
    wait_running(guest, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=15)
    assert pidfile(guest).read_text() == str(process.pid)
    assert check_pidfile(pidfile(guest), PROC).state == "dead"
    wait_until(lambda: "is an orphan -- exiting" in log_text(guest), "the orphaned child to exit")


def test_crash_after_exits_one_and_leaves_the_pidfile(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    process = start(guest, started, "--crash-after", "0.5")
    assert process.wait(timeout=15) == 1
    assert pidfile(guest).read_text() == str(process.pid)
    assert "Daemon ended with exception: [SimulatedCrash]" in log_text(guest)


def test_daemon_relaunches_a_dead_child(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    process = start(guest, started)
    wait_running(guest, process)
    (child,) = [p for p in agent_processes(guest) if p.role == "exthandler"]
    os.kill(child.pid, signal.SIGKILL)
    wait_until(lambda: "failed with return code: -9" in log_text(guest), "the daemon to notice")
    wait_until(
        lambda: any(p.role == "exthandler" and p.pid != child.pid for p in agent_processes(guest)),
        "a new child",
    )


def test_disable_agent_keeps_the_child_away(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    (guest / "var/lib/waagent/disable_agent").write_text("")
    process = start(guest, started)
    wait_until(lambda: pidfile(guest).exists(), "the pidfile")
    wait_until(lambda: "Run daemon" in log_text(guest), "the daemon to run")
    assert [p.role for p in agent_processes(guest)] == ["daemon"]
    assert process.poll() is None


def test_heartbeats_refresh_waagent_status(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    status = guest / "var/lib/waagent/history/2026-11-26T05-00-00__3/waagent_status.json"
    os.utime(status, (1_000_000_000, 1_000_000_000))
    process = start(guest, started)
    wait_running(guest, process)
    wait_until(lambda: status.stat().st_mtime > 1_000_000_000, "waagent_status.json to be touched")


def test_without_an_egg_the_child_runs_from_usr_sbin(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    egg_dir = guest / "var/lib/waagent/WALinuxAgent-2.15.0.1/bin"
    for egg in egg_dir.iterdir():
        egg.unlink()
    process = start(guest, started)
    wait_until(lambda: "Goal State Agent version 2.7.3.0" in log_text(guest), "the child")
    wait_until(lambda: len(agent_processes(guest)) == 2, "both processes")
    child = agent_processes(guest)[1]
    assert child.cmdline[-2:] == (str(guest / "usr/sbin/waagent"), "-run-exthandlers")
    assert process.poll() is None


def test_no_exthandler_flag_runs_the_daemon_alone(
    guest: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    (guest / "etc/os-release").unlink()
    process = start(guest, started, "--no-exthandler")
    wait_until(lambda: pidfile(guest).exists(), "the pidfile")
    wait_until(lambda: "Run daemon" in log_text(guest), "the daemon to run")
    assert "Daemon Daemon OS: unknown" in log_text(guest)
    assert [p.pid for p in agent_processes(guest)] == [process.pid]


def test_guest_root_comes_from_the_environment_or_the_program_path(
    guest: Path, tmp_path: Path
) -> None:
    program = guest / "usr/sbin/waagent"
    assert find_guest_root(program, {}) == guest.resolve()
    assert find_guest_root(tmp_path / "x", {ENV_ROOT: str(guest)}) == guest
    with pytest.raises(SystemExit, match=r"no etc/waagent\.conf above it"):
        find_guest_root(tmp_path / "elsewhere" / "waagent", {})


def test_non_positive_interval_is_refused(guest: Path) -> None:
    with pytest.raises(SystemExit, match="must be > 0"):
        main(["-daemon", "--interval", "-1"], program=str(guest / "usr/sbin/waagent"), environ={})


def test_in_process_exthandler_exits_when_its_daemon_is_gone(guest: Path) -> None:
    # A parent PID that is not ours: the child sees itself orphaned at once.
    shutil.rmtree(guest / "var/lib/waagent/history")
    environ = {ENV_ROOT: str(guest), "WG_SIM_DAEMON_PID": "999999999"}
    program = guest / "var/lib/waagent/WALinuxAgent-2.15.0.1/bin/WALinuxAgent-2.15.0.1-py3.11.egg"
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    try:
        assert main(["-run-exthandlers"], program=str(program), environ=environ) == 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    assert "Agent WALinuxAgent-2.15.0.1 is an orphan -- exiting" in log_text(guest)
    assert list((guest / "var/lib/waagent/history").glob("*__1/waagent_status.json"))
