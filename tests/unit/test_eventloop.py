"""The event loop's sources: file events, the agent's exit (pidfd), signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from waagent_guard.daemon.loop import EventLoop


def wait_until(loop: EventLoop, predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    collected = set()
    while time.monotonic() < deadline:
        wakeup = loop.wait(0.2)
        collected |= wakeup.paths
        if predicate(wakeup, collected):
            return wakeup, collected
    raise AssertionError("the loop never reported the event")


def test_writes_are_reported_but_our_own_reads_are_not(tmp_path: Path) -> None:
    loop = EventLoop()
    try:
        target = tmp_path / "waagent.log"
        target.write_text("one\n")
        assert loop.watch_directories([(tmp_path, False)]) == []
        with open(target, "a") as handle:
            handle.write("two\n")
        _, seen = wait_until(loop, lambda _w, paths: str(target) in paths)
        while True:  # let the write's last events arrive
            later = loop.wait(0.5).paths
            if not later:
                break
            seen |= later
        # only the file: not the directory's own "modified" that watchdog adds for every
        # line appended (issue 15: the kernel is not even asked for it)
        assert seen == {str(target)}
        for _ in range(20):  # reading must not wake the loop (it would spin)
            target.read_text()
        assert loop.wait(0.5).paths == set()
    finally:
        loop.close()


def test_only_the_paths_the_daemon_wants_wake_the_loop(tmp_path: Path) -> None:
    loop = EventLoop()
    try:
        wanted, other = tmp_path / "waagent.conf", tmp_path / "resolv.conf"
        assert loop.watch_directories(
            [(tmp_path, False)],
            interest=lambda path, _event: "now" if path == str(wanted) else "ignore",
        ) == []
        other.write_text("nameserver 127.0.0.1\n")  # first: watchdog dispatches in order
        wanted.write_text("Logs.Verbose=n\n")
        _, seen = wait_until(loop, lambda _w, paths: str(wanted) in paths)
        assert str(other) not in seen
    finally:
        loop.close()


def test_rewatch_adds_new_directories_and_drops_the_rest(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    loop = EventLoop()
    try:
        assert loop.rewatch([(first, False)]) == []  # nothing before watch_directories
        assert loop.watch_directories([(first, False)]) == []
        assert loop.rewatch([(first, False), (second, True), (second, False)]) == []
        assert loop.watched == {first: False, second: True}
        (second / "a").write_text("a")
        wait_until(loop, lambda _w, paths: str(second / "a") in paths)
        loop.rewatch([(second, True)])
        assert loop.watched == {second: True}
        (first / "b").write_text("b")  # no longer watched: written before the marker
        (second / "c").write_text("c")
        _, seen = wait_until(loop, lambda _w, paths: str(second / "c") in paths)
        assert str(first / "b") not in seen
    finally:
        loop.close()


def poked(loop: EventLoop) -> bool:
    try:
        return bool(loop._wake_read.recv(4096))
    except BlockingIOError:
        return False


def test_batched_paths_poke_only_when_no_batch_is_open() -> None:
    loop = EventLoop()
    try:
        loop.post_path("/var/log/waagent.log", batch=True)
        assert poked(loop)  # no batch open: the first line wakes the loop
        loop.batching = True
        loop.post_path("/var/log/waagent.log", batch=True)
        assert not poked(loop)  # queued: the loop comes back by itself
        loop.post_path("/etc/waagent.conf")
        assert poked(loop)  # anything else wakes it at once
        assert loop.wait(0).paths == {"/var/log/waagent.log", "/etc/waagent.conf"}
        loop.end_batch()
        assert not loop.batching and not poked(loop)  # nothing left behind
        loop.batching = True
        loop.post_path("/var/log/waagent.log", batch=True)  # queued just before the end
        loop.end_batch()
        assert poked(loop)  # not left waiting for the tick
    finally:
        loop.close()


def test_a_missing_directory_is_reported_not_fatal(tmp_path: Path) -> None:
    loop = EventLoop()
    try:
        problems = loop.watch_directories([(tmp_path / "nope", True)])
        assert len(problems) == 1 and "not a directory" in problems[0]
    finally:
        loop.close()


def test_the_agent_exit_is_seen_through_its_pidfd() -> None:
    loop = EventLoop()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        loop.watch_pid(child.pid)
        assert loop.poll_interval is None  # a pidfd follows it, no /proc poll
        assert not loop.wait(0.1).agent_exited
        child.kill()
        wait_until(loop, lambda wakeup, _p: wakeup.agent_exited)
    finally:
        child.kill()
        child.wait()
        loop.close()


def test_without_pidfd_a_short_proc_poll_sees_the_exit(tmp_path: Path) -> None:
    fake_proc = tmp_path / "proc"
    (fake_proc / "4242").mkdir(parents=True)
    loop = EventLoop(proc_root=fake_proc, proc_poll_seconds=0.05)
    loop._pidfd_supported = False  # a kernel without pidfd_open
    try:
        loop.watch_pid(4242)
        assert loop.poll_interval == 0.05
        assert not loop.wait(0.1).agent_exited
        (fake_proc / "4242").rmdir()
        assert loop.wait(1.0).agent_exited
    finally:
        loop.close()


def test_signals_arrive_through_the_wakeup_socket() -> None:
    loop = EventLoop()
    loop.install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        wakeup, _ = wait_until(loop, lambda w, _p: signal.SIGHUP in w.signals)
        assert signal.SIGHUP in wakeup.signals
    finally:
        loop.close()


def test_signals_blocked_by_the_parent_still_reach_the_loop() -> None:
    """A guard started with SIGTERM blocked (an inherited mask) must still stop on it;
    the mask is put back when the loop closes."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    loop = EventLoop()
    try:
        loop.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        assert loop.wait(10).signals == [signal.SIGTERM]
    finally:
        loop.close()
        handler = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM left pending
        blocked = signal.pthread_sigmask(signal.SIG_SETMASK, before)
        signal.signal(signal.SIGTERM, handler)
    assert signal.SIGTERM in blocked  # restored as the parent had it


def test_a_directory_recreated_between_two_looks_is_watched_again(
    tmp_path: Path,
) -> None:
    """An extension directory (or Lib.Dir) deleted and re-created under the same name
    between two looks (watchdog stops a watch on IN_DELETE_SELF; the new directory may
    even reuse the inode): the next look watches it again."""
    ext = tmp_path / "Microsoft.Ext-1.0"
    (ext / "status").mkdir(parents=True)
    loop = EventLoop()

    def paths(wanted: str = "", seconds: float = 3.0) -> set[str]:
        got: set[str] = set()
        end = time.monotonic() + seconds
        while time.monotonic() < end and wanted not in got:
            got |= loop.wait(0.2).paths
        return got

    def seen(path: Path) -> bool:
        for attempt in range(5):  # watchdog's emitter adds its inotify watch on its thread
            path.write_text(str(attempt))
            if str(path) in paths(str(path), 1.0):
                return True
        return False

    try:
        assert loop.watch_directories([(tmp_path, False), (ext, True)]) == []
        assert seen(ext / "status" / "0.status")
        shutil.rmtree(ext)
        (ext / "status").mkdir(parents=True)
        paths(seconds=1.0)  # the deletion and creation events
        assert loop.rewatch([(tmp_path, False), (ext, True)]) == []  # the next look
        assert seen(ext / "status" / "0.status")
    finally:
        loop.close()
