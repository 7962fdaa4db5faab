"""Finding the agent daemon and ExtHandler in /proc by command line; the pidfile."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from waagent_guard.agent.process import (
    AgentProcess,
    ProcessScanError,
    check_pidfile,
    classify_cmdline,
    find_agent_processes,
    read_agent_processes,
    trusted_uids,
)

BOOT_TIME = 1_790_000_000
TICKS = 100

DAEMON_ARGV = ("python3", "-u", "/usr/sbin/waagent", "-daemon")
# Another user: neither root nor the uid the tests run as (trusted beside root).
OTHER = 65534 if os.geteuid() != 65534 else 65533
EXTHANDLER_ARGV = ("python3", "-u", "bin/WALinuxAgent-2.15.0.1-py3.12.egg", "-run-exthandlers")


def make_proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text(
        "cpu  1 2 3 4 5 6 7 0 0 0\nintr 1\nctxt 2\n"
        f"btime {BOOT_TIME}\nprocesses 10\nprocs_running 1\n"
    )
    (proc / "self").mkdir()  # non-numeric entries are ignored
    return proc


def add_process(
    proc: Path,
    pid: int,
    argv: tuple[str, ...],
    *,
    comm: str = "python3",
    state: str = "S",
    utime: int = 150,
    stime: int = 50,
    start_ticks: int = 12_345,
    rss_kb: int | None = 28_000,
    cwd: str | None = None,
    uid: int = 0,
) -> Path:
    directory = proc / str(pid)
    directory.mkdir()
    (directory / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    fields = [
        state,
        "1",
        str(pid),
        str(pid),
        "0",
        "-1",
        "4194560",
        "0",
        "0",
        "0",
        "0",
        str(utime),
        str(stime),
        "0",
        "0",
        "20",
        "0",
        "3",
        "0",
        str(start_ticks),
        "123456789",
        "7000",
    ]
    (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    status = f"Name:\t{comm}\nState:\t{state}\nPid:\t{pid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
    if rss_kb is not None:
        status += f"VmRSS:\t  {rss_kb} kB\n"
    (directory / "status").write_text(status + "Threads:\t3\n")
    if cwd is not None:
        (directory / "cwd").symlink_to(cwd)
    return directory


def fail_opening(monkeypatch: pytest.MonkeyPatch, suffix: str, error: OSError) -> None:
    """os.open raises `error` for every path ending in `suffix`."""
    real_open = os.open

    def failing(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(suffix):
            raise error
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("os.open", failing)


# --- command lines --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        DAEMON_ARGV,
        ("python", "-u", "/usr/bin/waagent", "-daemon"),
        ("/usr/bin/python3.9", "-u", "/usr/share/oem/bin/waagent", "-daemon"),
        ("python3", "/usr/sbin/waagent", "--daemon"),
        ("/usr/sbin/waagent", "-daemon"),
        ("python3", "-W", "ignore", "-u", "/usr/sbin/waagent", "-daemon"),
        # Issue 10 item 2: every interpreter the agent is launched with.
        ("/usr/libexec/platform-python", "-u", "/usr/sbin/waagent", "-daemon"),  # RHEL 8
        ("/usr/bin/python2.7", "-u", "/usr/sbin/waagent", "-daemon"),
        ("/usr/bin/python3.12", "-u", "/usr/sbin/waagent", "-daemon"),
        ("/usr/bin/env", "python3", "/usr/sbin/waagent", "-daemon"),  # `#!/usr/bin/env python3`
        ("/usr/bin/env", "-i", "A=1", "python3", "-u", "/usr/sbin/waagent", "-daemon"),
        ("/usr/bin/python3", "/usr/sbin/waagent", "-daemon", "-configuration-path:/etc/w.conf"),
        ("python3", "/usr/sbin/waagent", "-verbose", "-daemon"),
        ("python3", "/usr/sbin/waagent", "/daemon"),
    ],
)
def test_daemon_is_recognised_by_command_line(argv: tuple[str, ...]) -> None:
    assert classify_cmdline(argv) == ("daemon", None)


def test_egg_exthandler_takes_its_version_from_the_egg_name() -> None:
    assert classify_cmdline(EXTHANDLER_ARGV) == ("exthandler", "2.15.0.1")
    assert classify_cmdline(("python3", "-u", "/usr/sbin/waagent", "-run-exthandlers")) == (
        "exthandler",
        None,
    )


@pytest.mark.parametrize(
    ("argv", "version"),
    [
        (("/usr/libexec/platform-python", "-u", "/usr/sbin/waagent", "-run-exthandlers"), None),
        (("python2.7", "-u", "bin/WALinuxAgent-2.1.5.rc3-py2.7.egg", "-run-exthandlers"),
         "2.1.5.rc3"),
        (("/usr/bin/python3.11", "-u", "bin/WALinuxAgent-2.15.0.1-py3.12.egg",
          "-run-exthandlers", "-configuration-path:/etc/waagent.conf"), "2.15.0.1"),
    ],
)
def test_exthandler_is_recognised_for_every_launch_form(
    argv: tuple[str, ...], version: str | None
) -> None:
    assert classify_cmdline(argv) == ("exthandler", version)


def test_egg_daemon_takes_its_version_from_the_egg_name() -> None:
    argv = ("python3", "-u", "/var/lib/waagent/WALinuxAgent-2.2.45.egg", "-daemon")
    assert classify_cmdline(argv) == ("daemon", "2.2.45")


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("python3",),
        ("python3", "-u"),
        ("python3", "-u", "/usr/sbin/waagent", "-collect-logs"),
        ("python3", "-m", "waagent_guard", "daemon"),
        ("/usr/bin/waagent-guard", "daemon", "-daemon"),
        ("vim", "/usr/sbin/waagent", "-daemon"),
        ("python3", "-c", "print('/usr/sbin/waagent -daemon')"),
        ("python3", "/usr/sbin/not-waagent-at-all", "-daemon"),
        ("sleep", "100"),
        ("tail", "-f", "/var/log/waagent.log", "-daemon"),
        ("grep", "waagent", "-daemon"),
        ("/usr/bin/less", "/usr/sbin/waagent", "-daemon"),
        ("/usr/libexec/platform-python", "-u", "/usr/sbin/waagent", "-collect-logs", "-full"),
        ("python3", "/usr/sbin/waagent", "-daemon", "-collect-logs"),  # the last command wins
        ("python3", "/usr/sbin/waagent", "-daemon", "-bogus"),  # unknown: help, stop
        ("/usr/lib/waagent-guard/venv/bin/python3", "/usr/bin/waagent-guard", "run"),
        ("/usr/bin/env", "python3", "-m", "waagent_guard", "run"),
        ("/usr/bin/env",),
    ],
)
def test_other_command_lines_are_not_the_agent(argv: tuple[str, ...]) -> None:
    assert classify_cmdline(argv) is None


# --- fake /proc -----------------------------------------------------------------------


def test_daemon_and_exthandler_are_found_with_their_numbers(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 900, EXTHANDLER_ARGV, utime=300, stime=100, start_ticks=50_000, rss_kb=60_000)
    add_process(proc, 499, DAEMON_ARGV, comm="python3 (x) y")
    add_process(proc, 1, ("/sbin/init",), comm="systemd")
    found = find_agent_processes(proc, clock_ticks=TICKS)
    assert [(p.pid, p.role, p.version) for p in found] == [
        (499, "daemon", None),
        (900, "exthandler", "2.15.0.1"),
    ]
    daemon, child = found
    assert daemon.cmdline == DAEMON_ARGV
    assert daemon.start_time == BOOT_TIME + 123.45
    assert daemon.cpu_seconds == 2.0
    assert daemon.rss_bytes == 28_000 * 1024
    assert child.start_time == BOOT_TIME + 500
    assert child.cpu_seconds == 4.0
    assert child.rss_bytes == 60_000 * 1024


def test_exthandler_version_comes_from_cwd_when_the_egg_does_not_say(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    argv = ("python3", "-u", "/usr/sbin/waagent", "-run-exthandlers")
    add_process(proc, 900, argv, cwd="/var/lib/waagent/WALinuxAgent-2.11.1.12")
    add_process(proc, 901, argv, cwd="/")
    found = find_agent_processes(proc, clock_ticks=TICKS)
    assert [(p.pid, p.version) for p in found] == [(900, "2.11.1.12"), (901, None)]


def test_zombies_and_kernel_threads_are_ignored(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 499, DAEMON_ARGV, state="Z")
    add_process(proc, 2, (), comm="kthreadd")
    assert find_agent_processes(proc, clock_ticks=TICKS) == ()


def test_missing_numbers_are_none(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    (proc / "stat").unlink()
    directory = add_process(proc, 499, DAEMON_ARGV, rss_kb=None)
    (directory / "stat").write_text("499 (python3) S 1\n")
    (process,) = find_agent_processes(proc, clock_ticks=TICKS)
    assert (process.start_time, process.cpu_seconds, process.rss_bytes) == (None, None, None)


def test_malformed_rss_is_none(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    directory = add_process(proc, 499, DAEMON_ARGV, rss_kb=None)
    (directory / "status").write_text("Name:\tpython3\nUid:\t0\t0\t0\t0\nVmRSS:\tlots\n")
    (process,) = find_agent_processes(proc, clock_ticks=TICKS)
    assert process.rss_bytes is None


@pytest.mark.parametrize(
    "status",
    [
        f"Uid:\t{OTHER}\t{OTHER}\t{OTHER}\t{OTHER}\n",  # nobody
        f"Uid:\t{OTHER}\t0\t0\t0\n",  # setuid root by another user
        f"Uid:\t0\t{OTHER}\t0\t0\n",
        f"Name:\tx\x1eUid:\t0\t0\t0\t0\nUid:\t{OTHER}\t{OTHER}\t{OTHER}\t{OTHER}\n",
        "Name:\tpython3\n",  # no Uid line: not known to be root
        "Uid:\tx\n",
    ],
)
def test_another_users_agent_lookalike_is_not_the_agent(tmp_path: Path, status: str) -> None:
    """Review of issue 14: any local user can run `python3 /usr/sbin/waagent -daemon`.
    Counted, it hid the real agent's death and chose the -configuration-path: that
    `verbose on` edits. The uid comes from status, not from the owner of /proc/PID
    (root-owned here, as a non-dumpable process's is)."""
    proc = make_proc(tmp_path)
    directory = add_process(proc, 499, (*DAEMON_ARGV, "-configuration-path:/tmp/victim.conf"))
    (directory / "status").write_text(status + "VmRSS:\t1000 kB\n")
    assert os.stat(directory).st_uid == os.geteuid()
    assert find_agent_processes(proc, clock_ticks=TICKS) == ()
    assert read_agent_processes(proc, [499], clock_ticks=TICKS) == ()
    (proc / "waagent.pid").write_text("499")
    assert check_pidfile(proc / "waagent.pid", proc).state == "other"


def test_the_guards_own_uid_is_trusted_beside_root(tmp_path: Path) -> None:
    """The demo guest's simulated agent runs as the user who runs the demo."""
    proc = make_proc(tmp_path)
    add_process(proc, 499, DAEMON_ARGV, uid=4242)
    assert find_agent_processes(proc, clock_ticks=TICKS, uids=frozenset({0})) == ()
    (found,) = find_agent_processes(proc, clock_ticks=TICKS, uids=frozenset({0, 4242}))
    assert found.pid == 499
    assert trusted_uids() == {0, os.geteuid()}


def test_unreadable_status_is_not_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 499, DAEMON_ARGV)
    fail_opening(monkeypatch, "/status", PermissionError(errno.EACCES, "Permission denied"))
    assert find_agent_processes(proc, clock_ticks=TICKS) == ()


def test_process_vanishing_mid_read_is_skipped(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    directory = add_process(proc, 499, DAEMON_ARGV)
    (directory / "stat").unlink()  # cmdline read, then the process was gone
    vanished_early = proc / "500"
    vanished_early.mkdir()  # listed, but no files left
    assert find_agent_processes(proc, clock_ticks=TICKS) == ()


def test_unreadable_proc_root_is_an_error_not_an_empty_answer(tmp_path: Path) -> None:
    """Issue 14 item 1: not seeing the agent is not "the agent is gone"."""
    with pytest.raises(ProcessScanError, match="cannot list"):
        find_agent_processes(tmp_path / "no-proc")


def test_emfile_reading_a_process_is_an_error_not_an_empty_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 499, DAEMON_ARGV)
    fail_opening(monkeypatch, "cmdline", OSError(errno.EMFILE, "Too many open files"))
    with pytest.raises(ProcessScanError, match="Too many open files"):
        find_agent_processes(proc)


# --- pidfile --------------------------------------------------------------------------


def test_pidfile_absent(tmp_path: Path) -> None:
    state = check_pidfile(tmp_path / "waagent.pid", make_proc(tmp_path))
    assert (state.state, state.pid, state.other_cmdline) == ("absent", None, None)


def test_pidfile_naming_the_live_daemon_is_agent(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 499, DAEMON_ARGV)
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text("499")
    state = check_pidfile(pidfile, proc)
    assert (state.path, state.state, state.pid, state.other_cmdline) == (
        pidfile,
        "agent",
        499,
        None,
    )


def test_pidfile_naming_a_dead_pid_is_dead(tmp_path: Path) -> None:
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text("499\n")
    state = check_pidfile(pidfile, make_proc(tmp_path))
    assert (state.state, state.pid) == ("dead", 499)


def test_pidfile_naming_another_process_records_its_cmdline(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 499, ("/usr/sbin/sshd", "-D"), comm="sshd")
    add_process(proc, 900, EXTHANDLER_ARGV)
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text("499")
    state = check_pidfile(pidfile, proc)
    assert (state.state, state.pid, state.other_cmdline) == ("other", 499, ("/usr/sbin/sshd", "-D"))
    pidfile.write_text("900")  # the ExtHandler is the agent, but not the daemon
    assert check_pidfile(pidfile, proc).state == "other"


def test_pidfile_naming_a_process_that_just_exited_is_dead(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    (proc / "499").mkdir()
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text("499")
    assert check_pidfile(pidfile, proc).state == "dead"


@pytest.mark.parametrize("content", [b"", b"abc", b"12 34", b"1.5", b"0x10"])
def test_pidfile_without_a_pid_is_invalid(tmp_path: Path, content: bytes) -> None:
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_bytes(content)
    state = check_pidfile(pidfile, make_proc(tmp_path))
    assert (state.state, state.pid) == ("invalid", None)
    assert not state.agent_sees_alive  # int() fails: the agent overwrites it and runs


# Issue 12 item 9: contents the agent's check_pid (os.kill(int(text), 0)) treats as alive.
@pytest.mark.parametrize(
    ("content", "state", "pid"),
    [
        (b"0", "other", 0),  # kill(0, 0): the agent's own process group, always "alive"
        (b"-1", "other", -1),  # kill(-1, 0): every process, "alive"
        (b"9" * 100, "invalid", None),  # OverflowError in os.kill: the daemon dies at start
        (b"\xff", "invalid", None),  # strict UTF-8 decode fails: the daemon dies at start
    ],
)
def test_pidfile_contents_the_agent_takes_as_alive_block_its_start(
    tmp_path: Path, content: bytes, state: str, pid: int | None
) -> None:
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_bytes(content)
    found = check_pidfile(pidfile, make_proc(tmp_path))
    assert (found.state, found.pid) == (state, pid)
    assert found.agent_sees_alive and found.blocks_start
    assert found.note


@pytest.mark.parametrize("content", [b"+501", b" 501\n", b"5_01", b"\n0501\n"])
def test_pidfile_is_read_with_int_as_the_agent_reads_it(tmp_path: Path, content: bytes) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 501, ("/usr/bin/python3", "-u", "/usr/sbin/waagent", "-daemon"))
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_bytes(content)
    found = check_pidfile(pidfile, proc)
    assert (found.state, found.pid) == ("agent", 501)
    assert not found.blocks_start


def test_pidfile_naming_a_negative_group_follows_kill(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 777, ("sleep", "100"))  # pgrp 777 (field 5 = pid in add_process)
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text("-777")
    assert check_pidfile(pidfile, proc).state == "other"
    pidfile.write_text("-778")
    found = check_pidfile(pidfile, proc)
    assert found.state == "dead" and not found.blocks_start


def test_pidfile_naming_a_zombie_is_dead_but_blocks_the_agents_start(tmp_path: Path) -> None:
    """Issue 10 item 4: State Z is dead (no agent runs); the agent's kill(pid, 0) still
    succeeds, so the pidfile must be removed before a start."""
    proc = make_proc(tmp_path)
    add_process(proc, 600, ("/usr/bin/python3", "-u", "/usr/sbin/waagent", "-daemon"), state="Z")
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text("600")
    found = check_pidfile(pidfile, proc)
    assert (found.state, found.pid) == ("dead", 600)
    assert found.blocks_start and "zombie" in (found.note or "")


def test_pidfile_that_is_a_directory_is_ignored_like_the_agent_does(tmp_path: Path) -> None:
    pidfile = tmp_path / "waagent.pid"
    pidfile.mkdir()
    found = check_pidfile(pidfile, make_proc(tmp_path))
    assert found.state == "invalid" and not found.blocks_start


def test_pidfile_that_is_a_directory_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "waagent.pid").mkdir()
    assert check_pidfile(tmp_path / "waagent.pid", make_proc(tmp_path)).state == "invalid"


# --- the real /proc -------------------------------------------------------------------


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path / "usr" / "sbin" / "waagent"
    script.parent.mkdir(parents=True)
    script.write_text("import sys\nsys.stdin.read()\n")  # blocks until we close stdin
    process = subprocess.Popen(
        [sys.executable, "-u", str(script), "-daemon"], stdin=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdin is not None
        process.stdin.close()


def test_real_process_that_looks_like_the_agent_is_found_then_gone(
    tmp_path: Path, fake_agent: subprocess.Popen[bytes]
) -> None:
    proc = Path("/proc")
    deadline = time.monotonic() + 10
    found: list[AgentProcess] = []
    while not found and time.monotonic() < deadline:  # the machine may be busy
        found = [p for p in find_agent_processes(proc) if p.pid == fake_agent.pid]
        if not found:
            time.sleep(0.05)
    assert len(found) == 1
    (process,) = found
    assert process.role == "daemon"
    assert process.cmdline[-2:] == (str(tmp_path / "usr/sbin/waagent"), "-daemon")
    assert process.start_time is not None and process.rss_bytes and process.rss_bytes > 0
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text(str(fake_agent.pid))
    assert check_pidfile(pidfile, proc).state == "agent"

    os.kill(fake_agent.pid, signal.SIGKILL)
    fake_agent.wait(timeout=10)
    assert all(p.pid != fake_agent.pid for p in find_agent_processes(proc))
    assert check_pidfile(pidfile, proc).state == "dead"


def test_pidfile_naming_this_test_process_is_other(tmp_path: Path) -> None:
    pidfile = tmp_path / "waagent.pid"
    pidfile.write_text(str(os.getpid()))
    state = check_pidfile(pidfile, Path("/proc"))
    assert state.state == "other"
    assert state.other_cmdline and state.other_cmdline[0]


def test_garbled_stat_numbers_are_none(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    (proc / "stat").write_text("cpu 1 2 3\n")  # no btime line
    directory = add_process(proc, 499, DAEMON_ARGV)
    text = (directory / "stat").read_text().replace(" 150 50 ", " x y ")
    (directory / "stat").write_text(text)
    (process,) = find_agent_processes(proc, clock_ticks=TICKS)
    assert (process.start_time, process.cpu_seconds) == (None, None)
