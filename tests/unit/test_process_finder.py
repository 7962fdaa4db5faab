"""The daemon's `ProcessFinder`: the same answer as a full /proc scan, with few scans.

Issue 15 (idle CPU): every tick scanned /proc twice (observe, then the service
manager's PID lookup), one cmdline read per process on the machine. The finder
re-reads the known agent processes and the daemons' children instead, and falls
back to the full scan whenever it cannot be sure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.test_process import add_process, make_proc
from waagent_guard.agent.process import AgentProcess, ProcessScanError
from waagent_guard.agent.roots import ProcessFinder, processes_in_root
from waagent_guard.sysroot import Sysroot


class Counting:
    """`processes_in_root` that counts its calls (the full scans)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, sysroot: Sysroot) -> tuple[AgentProcess, ...]:
        self.calls += 1
        return processes_in_root(sysroot)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_proc(tmp_path)
    return tmp_path


def daemon_argv(root: Path) -> tuple[str, ...]:
    return ("python3", "-u", f"{root}/usr/sbin/waagent", "-daemon")


def exthandler_argv(root: Path) -> tuple[str, ...]:
    egg = f"{root}/var/lib/waagent/WALinuxAgent-2.9.1.1/bin/WALinuxAgent-2.9.1.1-py3.9.egg"
    return ("python3", "-u", egg, "-run-exthandlers")


def set_children(root: Path, pid: int, children: list[int]) -> None:
    task = root / "proc" / str(pid) / "task" / str(pid)
    task.mkdir(parents=True, exist_ok=True)
    (task / "children").write_text("".join(f"{child} " for child in children))


def agent(root: Path, daemon: int = 100, exthandler: int = 200) -> None:
    proc = root / "proc"
    add_process(proc, daemon, daemon_argv(root))
    add_process(proc, exthandler, exthandler_argv(root), start_ticks=20_000)
    set_children(root, daemon, [exthandler])


def pids(found: tuple[AgentProcess, ...]) -> list[tuple[str, int]]:
    return [(process.role, process.pid) for process in found]


def test_between_full_scans_the_answer_is_the_full_scans(root: Path) -> None:
    agent(root)
    add_process(root / "proc", 300, ("/usr/sbin/sshd", "-D"))
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    answers = [finder(sysroot) for _ in range(10)]
    assert scan.calls == 1  # the first look only
    assert all(answer == processes_in_root(sysroot) for answer in answers)
    assert pids(answers[-1]) == [("daemon", 100), ("exthandler", 200)]


def test_a_restarted_exthandler_is_found_without_a_full_scan(root: Path) -> None:
    agent(root)
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    finder(sysroot)
    shutil.rmtree(root / "proc" / "200")
    add_process(root / "proc", 201, exthandler_argv(root), start_ticks=30_000)
    set_children(root, 100, [201])
    # The old ExtHandler is gone: that is a change, so the finder looks everywhere once.
    assert pids(finder(sysroot)) == [("daemon", 100), ("exthandler", 201)]
    assert scan.calls == 2
    assert pids(finder(sysroot)) == [("daemon", 100), ("exthandler", 201)]
    assert scan.calls == 2


def test_a_new_child_of_the_known_daemon_is_seen_at_once(root: Path) -> None:
    proc = root / "proc"
    add_process(proc, 100, daemon_argv(root))
    set_children(root, 100, [])
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    assert pids(finder(sysroot)) == [("daemon", 100)]
    add_process(proc, 200, exthandler_argv(root))
    set_children(root, 100, [200])
    assert pids(finder(sysroot)) == [("daemon", 100), ("exthandler", 200)]
    assert scan.calls == 1


def test_a_replaced_daemon_forces_a_full_scan(root: Path) -> None:
    agent(root)
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    finder(sysroot)
    shutil.rmtree(root / "proc" / "100")
    add_process(root / "proc", 101, daemon_argv(root))
    assert pids(finder(sysroot)) == [("daemon", 101), ("exthandler", 200)]
    assert scan.calls == 2


def test_a_reused_pid_is_not_taken_for_the_same_daemon(root: Path) -> None:
    agent(root)
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    before = finder(sysroot)
    shutil.rmtree(root / "proc" / "100")
    add_process(root / "proc", 100, daemon_argv(root), start_ticks=99_999)  # same PID, new start
    after = finder(sysroot)
    assert scan.calls == 2
    assert after[0].start_time != before[0].start_time
    assert after == processes_in_root(sysroot)


def test_a_daemon_that_is_now_a_zombie_is_gone(root: Path) -> None:
    agent(root)
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    finder(sysroot)
    shutil.rmtree(root / "proc" / "100")
    add_process(root / "proc", 100, (), state="Z")  # a zombie's cmdline is empty
    assert pids(finder(sysroot)) == [("exthandler", 200)]
    assert scan.calls == 2


def test_without_a_children_file_every_look_is_a_full_scan(root: Path) -> None:
    agent(root)
    shutil.rmtree(root / "proc" / "100" / "task")  # a kernel without CONFIG_PROC_CHILDREN
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    for _ in range(3):
        assert pids(finder(sysroot)) == [("daemon", 100), ("exthandler", 200)]
    assert scan.calls == 3


def test_a_stray_second_daemon_is_seen_at_the_next_periodic_full_scan(root: Path) -> None:
    agent(root)
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=5)
    sysroot = Sysroot(root)
    finder(sysroot)
    add_process(root / "proc", 500, daemon_argv(root))  # not a child of the known daemon
    seen = [pids(finder(sysroot)) for _ in range(5)]
    assert seen[:3] == [[("daemon", 100), ("exthandler", 200)]] * 3
    assert ("daemon", 500) in seen[4]
    assert scan.calls == 2


def test_no_known_daemon_means_a_full_scan_every_time(root: Path) -> None:
    scan = Counting()
    finder = ProcessFinder(scan=scan, full_scan_every=100)
    sysroot = Sysroot(root)
    assert finder(sysroot) == ()
    assert finder(sysroot) == ()
    assert scan.calls == 2  # an agent that starts later is found on the next look


def test_a_scan_error_reaches_the_caller(root: Path) -> None:
    def broken(sysroot: Sysroot) -> tuple[AgentProcess, ...]:
        raise ProcessScanError("cannot list /proc: Too many open files")

    finder = ProcessFinder(scan=broken)
    with pytest.raises(ProcessScanError):
        finder(Sysroot(root))
