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


def test_a_log_that_turns_into_a_fifo_is_said_once_and_read_again_when_it_is_a_file(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The in-process side of tests/integration/test_daemon.py's log-turned-device test."""
    log = world.root / "var/log/waagent.log"
    feed = feed_for(world)
    feed.start()
    before = feed.signals.record_count
    log.unlink()
    os.mkfifo(log)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            feed.consume()
    assert caplog.text.count("cannot read the agent log") == 1  # said once
    assert "not a regular file" in caplog.text
    log.unlink()  # a FIFO is refused, never opened; a file again is read from its start
    # (a record is complete at the next header: the second line closes the first)
    log.write_text("2026-11-26T10:00:00.000000Z INFO Daemon back\n"
                   "2026-11-26T10:00:01.000000Z INFO Daemon next\n")
    feed.consume()
    assert feed.signals.record_count == before + 1


def test_lines_around_a_rotation_whose_new_file_cannot_be_opened_are_all_counted(
    world: World,
) -> None:
    """Review of issue 14: on a read error the feed closed the tailer (and the rotated
    file it still drained) and reopened at the END at the next tick: the writer's last
    lines in the rotated file and the new file's first lines were never counted."""
    log = world.root / "var/log/waagent.log"
    feed = feed_for(world)
    feed.start()
    before = feed.signals.record_count

    def line(text: str) -> str:
        return f"2026-11-26T10:00:00.000000Z INFO Daemon {text}\n"

    writer = open(log, "a", buffering=1)  # the agent's descriptor, kept across the rotation
    try:
        writer.write(line("a1"))
        os.rename(log, log.with_name("waagent.log.1"))
        log.mkdir()  # the new path cannot be opened yet
        feed.consume()
        writer.write(line("a2"))  # not reopened yet: still the rotated file
        feed.consume()
        feed.consume()  # nothing new; the path still fails
        log.rmdir()
        log.write_text(line("b1"))
        writer.close()
        writer = open(log, "a", buffering=1)
        writer.write(line("b2"))
        if not feed.following:
            feed.open()  # what the next tick does
        writer.write(line("b3"))
        writer.write(line("end"))  # completes b3 (a record ends at the next header)
        feed.consume()
    finally:
        writer.close()
    assert feed.signals.record_count == before + 5  # a1 a2 b1 b2 b3


def test_a_log_that_could_not_be_opened_at_start_is_read_from_its_start(
    world: World,
) -> None:
    log = world.root / "var/log/waagent.log"
    log.unlink()
    log.mkdir()
    feed = feed_for(world)
    feed.start()
    assert not feed.following
    before = feed.signals.record_count
    log.rmdir()
    log.write_text("2026-11-26T10:00:00.000000Z INFO Daemon first\n"
                   "2026-11-26T10:00:01.000000Z INFO Daemon second\n")
    feed.open()  # the next tick
    feed.consume()
    assert feed.signals.record_count == before + 1


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
