"""`LogFeed`: the agent's log followed into live signals; a log that cannot be followed
is said once and retried, never fatal."""

from __future__ import annotations

import logging
import os

import pytest

from tests.inprocess import World
from waagent_guard.daemon.logfeed import LogFeed
from waagent_guard.sysroot import Sysroot

LINES = (
    "2026-11-26T04:48:31.499310Z INFO Daemon Daemon Azure Linux Agent Version:2.7.3.0\n"
    "2026-11-26T04:48:31.499518Z INFO Daemon Daemon OS: debian 12\n"
)


def feed_for(world: World) -> LogFeed:
    return LogFeed(Sysroot(world.root, proc_root=world.proc), world.root / "var/log/waagent.log")


def test_new_lines_become_signals(world: World) -> None:
    feed = feed_for(world)
    feed.start()
    assert feed.following and not feed.more_pending
    with (world.root / "var/log/waagent.log").open("a") as log:
        log.write(LINES)
    feed.consume()
    assert feed.signals.last_record_time is not None
    feed.close()
    assert not feed.following


def test_a_log_that_is_not_a_file_is_not_followed_and_said_so(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    log = world.root / "var/log/waagent.log"
    log.unlink()
    log.mkdir()
    feed = feed_for(world)
    with caplog.at_level(logging.WARNING):
        feed.start()
    assert not feed.following
    assert "not following the agent log" in caplog.text
    feed.consume()  # nothing to read: no error


def test_a_log_that_turns_into_a_fifo_stops_the_feed_not_the_guard(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The in-process side of tests/integration/test_daemon.py's log-turned-device test."""
    log = world.root / "var/log/waagent.log"
    feed = feed_for(world)
    feed.start()
    log.unlink()
    os.mkfifo(log)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            feed.consume()
    assert not feed.following
    assert caplog.text.count("stopped following the agent log") == 1  # said once
    assert "not a regular file" in caplog.text
    feed.open()  # the next tick tries again: a FIFO is refused, never opened
    assert not feed.following
