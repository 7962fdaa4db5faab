"""`LogFeed`: the agent's log followed into live signals; a log that cannot be followed
is said once and retried, never fatal."""

from __future__ import annotations

import logging
import os
from pathlib import Path

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


def test_the_followed_log_gives_the_signals_of_parsing_every_record(world: World) -> None:
    """What the daemon counts while following equals the per-record path on the same lines."""
    import random

    from waagent_guard.agent.log import LogSignals, RecordParser, guest_timezone

    sample = (
        Path(__file__).resolve().parents[2] / "data" / "log" / "log-lines.txt"
    ).read_text(encoding="utf-8")
    lines = [line for line in sample.splitlines() if not line.startswith("#") and line.strip()]
    rng = random.Random(4)
    text = "\n".join(rng.choice(lines) for _ in range(3000)) + "\n"
    feed = feed_for(world)
    feed.start()
    path = world.root / "var/log/waagent.log"
    at = 0
    while at < len(text):
        step = rng.randrange(1, 40_000)
        with path.open("a", encoding="utf-8") as log:
            log.write(text[at : at + step])  # mid-line too: only complete lines are read
        at += step
        feed.consume()
        while feed.more_pending:
            feed.consume()
    parser = RecordParser(guest_timezone(world.root / "etc/localtime"))
    expected = LogSignals()
    for line in text.splitlines():
        for record in parser.feed(line):
            expected.update(record)
    assert feed.signals.to_dict() == expected.to_dict()
    assert expected.record_count > 2000
    feed.close()
