"""`LogIngest` (the daemon's whole-slice ingest) against the per-record path, the oracle.

The oracle is `RecordParser.feed` on every line and `LogSignals.update` on every record
(what the daemon did before, and what `status`/doctor still do). Both are given the same
lines, cut into the same slices; after every slice and at the end, every field of the
signals must be equal: record and level counts, newest record time, heartbeat, versions,
and per event its count, last time, last message and subjects.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.corpus import real_records, write_log
from tests.unit.test_log_signals import EXAMPLES, NOT_EVENTS
from waagent_guard.agent import ingest as ingest_module
from waagent_guard.agent.ingest import PIECE_CHARS, LogIngest
from waagent_guard.agent.log import EVENT_CATALOGUE, LogSignals, LogTailer, RecordParser
from waagent_guard.agent.logevents import EventPattern, _event
from waagent_guard.agent.record import MAX_RECORD_LINES, guest_timezone

DATA = Path(__file__).resolve().parent.parent / "data" / "log"
BERLIN = guest_timezone(DATA / "Europe-Berlin.tzif")


def state(signals: LogSignals) -> dict[str, Any]:
    """Every field of the signals, with the raw datetimes (not only their ISO text)."""
    return {
        "daemon_version": signals.daemon_version,
        "goal_state_version": signals.goal_state_version,
        "last_heartbeat": signals.last_heartbeat,
        "last_record_time": signals.last_record_time,
        "record_count": signals.record_count,
        "counts_by_level": dict(signals.counts_by_level),
        "events": {name: dataclasses.asdict(stat) for name, stat in signals.events.items()},
        "as_dict": signals.to_dict(),
    }


def oracle_steps(
    blocks: Sequence[str], tz: tzinfo, catalogue: Sequence[EventPattern] = EVENT_CATALOGUE
) -> list[dict[str, Any]]:
    parser = RecordParser(tz)
    signals = LogSignals(catalogue)
    steps = []
    for block in blocks:
        for line in block.split("\n"):
            for record in parser.feed(line):
                signals.update(record)
        steps.append(state(signals))
    for record in parser.flush():
        signals.update(record)
    steps.append(state(signals))
    return steps


def ingest_steps(
    blocks: Sequence[str], tz: tzinfo, catalogue: Sequence[EventPattern] = EVENT_CATALOGUE
) -> list[dict[str, Any]]:
    ingest = LogIngest(LogSignals(catalogue), tz=tz)
    steps = []
    for block in blocks:
        ingest.feed_block(block)
        steps.append(state(ingest.signals))
    ingest.flush()
    steps.append(state(ingest.signals))
    return steps


def cut(lines: Sequence[str], cuts: Sequence[int]) -> list[str]:
    """The lines as blocks ("\\n"-joined), cut before each index in `cuts`."""
    bounds = sorted({0, len(lines), *(c for c in cuts if 0 < c < len(lines))})
    return ["\n".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def assert_same(blocks: Sequence[str], tz: tzinfo, **kwargs: Any) -> dict[str, Any]:
    expected = oracle_steps(blocks, tz, **kwargs)
    got = ingest_steps(blocks, tz, **kwargs)
    for index, (want, have) in enumerate(zip(expected, got)):
        assert have == want, f"after slice {index} of {len(blocks)}"
    return expected[-1]


@pytest.fixture(scope="module")
def corpus_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The bench's mixed-format corpus (bench/corpus.py), 60k lines, as the tailer gives it."""
    path = tmp_path_factory.mktemp("corpus") / "waagent.log"
    write_log(path, lines=60_000, seed=3)
    lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    assert lines.pop() == ""
    return lines


@pytest.mark.parametrize("tz", [BERLIN, dataclasses.MISSING], ids=["Berlin", "UTC"])
def test_the_bench_corpus_gives_the_same_signals_cut_anywhere(
    corpus_lines: list[str], tz: Any
) -> None:
    zone: tzinfo = guest_timezone(Path("/nonexistent")) if tz is dataclasses.MISSING else tz
    rng = random.Random(15)
    # Slices from one line to several pieces (PIECE_CHARS) long, cut anywhere in records.
    cuts = [rng.randrange(len(corpus_lines)) for _ in range(25)] + [1, 2, 3, 4000, 4001]
    final = assert_same(cut(corpus_lines, cuts), zone)
    # Not vacuous: the corpus exercises every signal.
    assert final["record_count"] > 50_000
    assert all(final["counts_by_level"][level] for level in ("INFO", "WARNING", "ERROR"))
    assert final["daemon_version"] and final["goal_state_version"]
    assert final["last_heartbeat"] is not None
    seen = [name for name, stat in final["events"].items() if stat["count"]]
    assert len(seen) >= 9, seen
    assert any(stat["subjects"] for stat in final["events"].values())


def test_the_corpus_in_one_block_is_mostly_not_parsed_line_by_line(
    corpus_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The equality above is not the oracle's own: the shortcut does the counting."""
    through_reference = []
    original = LogIngest._reference

    def spy(self: LogIngest, text: str) -> None:
        through_reference.append(text.count("\n"))
        original(self, text)

    monkeypatch.setattr(LogIngest, "_reference", spy)
    block = "\n".join(corpus_lines)
    assert len(block) > 10 * PIECE_CHARS
    assert_same([block], BERLIN)
    assert sum(through_reference) < len(corpus_lines) / 20


def edge_lines() -> list[str]:
    """Every shape the parser knows, and the ones it must refuse."""
    lines = [line for lines in EXAMPLES.values() for line in lines] + list(NOT_EVENTS)
    lines += [raw for record in real_records() for raw in record]
    lines += [
        # heartbeats and versions, in each family and order
        "2024-03-15T17:18:19.565463Z INFO ExtHandler ExtHandler [HEARTBEAT] Agent"
        " WALinuxAgent-2.9.1.1 is running as the goal state agent [DEBUG HeartbeatCounter: 1]",
        "2024-03-15T17:18:19Z INFO ExtHandler ExtHandler [HEARTBEAT] Agent WALinuxAgent-2.9.1.2"
        " is running as the goal state agent",
        "2024-03-15T17:18:19.5Z INFO ExtHandler [HEARTBEAT] later by half a second",
        "2024-03-15T17:18:19.49Z INFO ExtHandler [HEARTBEAT] earlier than .5",
        "2021/03/30 19:35:35.971742 INFO Daemon Azure Linux Agent Version:2.2.45",
        "2020-03-31T21:19:09.446124Z INFO Daemon Azure Linux Agent Version:2.2.46",
        "2023-01-01T00:00:00.000000Z INFO ExtHandler ExtHandler Azure Linux Agent Version:9.9",
        "2021/03/30 19:35:36 INFO Azure Linux Agent (Goal State Agent version 2.2.53)",
        # format 5: glued levels, with and without the extension prefix
        "2021/03/30 19:45:31 ERROR:[Microsoft.OSTCExtensions.VMAccessForLinux-1.5.9] failed",
        "2021/03/30 19:45:31 WARN:[Pub.Type-1.0] guest agent firewall",
        "2021/03/30 19:45:31 WARNING:[Pub.Type-1.0]did not terminate cleanly",
        "2021/03/30 19:45:31 ERROR: no prefix after the level",
        "2021/03/30 19:45:31.5 [Pub.Type-1.0] fraction, no level",
        "2021/03/30 19:45:31",
        "2021/03/30 19:45:31.123456 VERBOSE Daemon goal state agent text",
        # local times around Berlin's DST changes (02:30 on 2021-03-28 does not exist)
        "2021/03/28 02:30:00.000000 INFO Daemon in the gap: Event: name=X.Y, op=Enable",
        "2021/03/28 03:10:00.000000 INFO Daemon after the gap",
        "2021/10/31 02:30:00.000000 WARNING Daemon ambiguous hour HostGAPlugin down",
        "2021/10/31 02:59:59.999999 ERROR Event: name=Microsoft.Azure.RecoveryServices"
        ".VMSnapshotLinux, op=Enable, message=x",
        # dates and times that do not exist: continuation lines
        "2021-02-29T00:00:00.000000Z ERROR ExtHandler not a leap year",
        "1900-02-29T00:00:00.000000Z ERROR ExtHandler not a leap year either",
        "2000-02-29T00:00:00.000000Z ERROR ExtHandler a leap year",
        "2024-02-29T23:59:59.999999Z INFO ExtHandler a leap day",
        "2021-04-31T00:00:00.000000Z ERROR ExtHandler April has 30 days",
        "2021-13-01T00:00:00.000000Z ERROR ExtHandler month 13",
        "2021-12-01T24:00:00.000000Z ERROR ExtHandler hour 24",
        "2021-12-01T23:60:00.000000Z ERROR ExtHandler minute 60",
        "2021-12-01T23:59:60.000000Z ERROR ExtHandler leap second",
        "0000-01-01T00:00:00.000000Z ERROR ExtHandler year 0",
        "0001-01-01T00:00:00.000000Z ERROR ExtHandler year 1 UTC",
        "0001/01/01 00:30:00.000000 ERROR before year 1 in UTC",
        "9999/12/31 23:59:59.999999 ERROR Daemon Event: name=WALinuxAgent, op=Far",
        "2021/02/30 10:00:00.000000 ERROR no such day",
        "2021-03-13T15:44:04.1234567Z INFO ExtHandler seven digits",
        "2021/03/13 15:44:04.1234567 INFO seven digits",
        "2021-03-13T15:44:04Z INFOX not a level",
        "2021-03-13T15:44:04Z INFO",
        "2021-03-13T15:44:04Z ERROR\r",
        "2021-03-13T15:44:04Z ERROR\r\r",
        "2021-03-13 15:44:04.000000Z INFO a space instead of T",
        # Unicode digits: the parser's \\d takes them
        "\u0662\u0660\u0662\u0661-\u0660\u0663-\u0661\u0663T15:44:04.000000Z ERROR ExtHandler"
        " Event: name=A.B, op=Install",
        "2021-03-13T15:44:0\u0664.000000Z WARNING ExtHandler HostPlugin broke",
        "2021/03/13 15:44:04.\u0663 INFO Daemon Azure Linux Agent Version:7.7",
        # CRLF, non-UTF-8 (as decoded), text around the anchors
        "2023-03-13T15:44:04.906673Z INFO ExtHandler ExtHandler crlf goal state agent\r",
        "2023-03-13T15:44:04.906673Z ERROR ExtHandler \ufffd\ufffd bytes Event: name=Q.R, op=x",
        "caf\u00e9 \ufffd continuation with did not terminate cleanly",
        "Traceback (most recent call last):",
        '  File "/usr/lib/python3/dist-packages/azurelinuxagent/ga/update.py", line 1',
        "Event: name=Cont.Inuation, op=Install at the start of a line",
        "[HEARTBEAT] a continuation line",
        "",
        " ",
        "\r",
        "2023-03-13T15:44:04.906673Z ERROR Daemon Daemon is already running: 42",
        "2023-03-13T15:44:05.000001Z ERROR Daemon Daemon Event: name=WALinuxAgent,"
        " op=Install, message=sig=SECRET&se=2030 https://x.blob.core.windows.net/c?sv=1&sig=abc",
    ]
    return lines


EDGE_LINES = edge_lines()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(st.integers(0, len(EDGE_LINES) - 1), min_size=1, max_size=120),
    cuts=st.lists(st.integers(0, 120), max_size=12),
    zone=st.sampled_from(["Berlin", "UTC"]),
)
def test_every_edge_case_gives_the_same_signals_cut_anywhere(
    picks: list[int], cuts: list[int], zone: str
) -> None:
    lines = [EDGE_LINES[index] for index in picks]
    tz = BERLIN if zone == "Berlin" else guest_timezone(Path("/nonexistent"))
    assert_same(cut(lines, cuts), tz)


def test_every_edge_case_in_order_and_shuffled_gives_the_same_signals() -> None:
    rng = random.Random(7)
    for _ in range(20):
        lines = list(EDGE_LINES)
        rng.shuffle(lines)
        lines *= 3
        cuts = [rng.randrange(len(lines)) for _ in range(rng.randrange(1, 10))]
        assert_same(cut(lines, cuts), BERLIN)


def test_a_record_long_enough_to_be_cut_is_cut_like_the_parser_cuts_it() -> None:
    header = "2023-03-13T15:44:04.906673Z ERROR ExtHandler ExtHandler start"
    runaway = [f"  output line {n}" for n in range(2 * MAX_RECORD_LINES + 10)]
    # The line that starts the second piece of the runaway record is an event there.
    runaway[MAX_RECORD_LINES - 1] = "Agent did not terminate cleanly: its record's first line"
    lines = [header, *runaway, header.replace("04.9", "05.9"), header.replace("04.9", "06.9")]
    for cuts in ([], [1], [500, 1500], [MAX_RECORD_LINES - 1], [len(lines) - 1]):
        final = assert_same(cut(lines, cuts), BERLIN)
        assert final["events"]["unclean_exit"]["count"] == 1
        assert final["record_count"] == 5  # 1000 + 1000 + 11 lines, then two headers


def test_lines_before_any_header_are_one_record_like_the_parsers() -> None:
    lines = [
        "Event: name=Orphan.Ext, op=Install before any header",
        "did not terminate cleanly",
        *EXAMPLES["extension_operation_failed"],
        *EXAMPLES["unclean_exit"],
    ]
    for cuts in ([], [1], [2], [3]):
        final = assert_same(cut(lines, cuts), BERLIN)
        assert final["record_count"] == 5


def test_a_catalogue_event_without_keywords_is_checked_on_every_record(
    corpus_lines: list[str],
) -> None:
    catalogue = (
        *EVENT_CATALOGUE,
        _event("any_traceback", r"Traceback|Exception", "warn", 0, "Anything."),
    )
    final = assert_same(cut(corpus_lines[:3000], [700, 1400]), BERLIN, catalogue=catalogue)
    assert final["events"]["any_traceback"]["count"] > 0


def test_more_analyses_than_the_cache_holds_give_the_same_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_module, "_ANALYSIS_CACHE_SIZE", 3)
    lines = [
        f"2023-03-13T15:44:{n % 60:02d}.{n:06d}Z ERROR ExtHandler ExtHandler Event:"
        f" name=Ext{n % 70}.Type, op=Install"
        for n in range(400)
    ]
    final = assert_same(cut(lines, [100, 250]), BERLIN)
    assert final["events"]["extension_operation_failed"]["count"] == 400
    assert "other" in final["events"]["extension_operation_failed"]["subjects"]


def test_long_candidate_lines_are_not_kept_and_give_the_same_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_module, "_ANALYSIS_KEY_CHARS", 64)
    lines = [
        f"2023-03-13T15:44:{n % 60:02d}.{n:06d}Z ERROR ExtHandler ExtHandler Event:"
        f" name=Ext{n % 7}.Type, op=Install, message={'x' * (n % 90)}"
        for n in range(300)
    ]
    ingest = LogIngest(tz=BERLIN)
    ingest.feed_lines(lines)
    assert all(len(key) <= 64 for key in ingest._analyses)
    final = assert_same(cut(lines, [100, 250]), BERLIN)
    assert final["events"]["extension_operation_failed"]["count"] == 300


def test_feed_lines_is_feed_block_of_the_joined_lines(corpus_lines: list[str]) -> None:
    by_lines = LogIngest(tz=BERLIN)
    by_lines.feed_lines(corpus_lines[:20_000])
    by_lines.flush()
    assert state(by_lines.signals) == oracle_steps(["\n".join(corpus_lines[:20_000])], BERLIN)[-1]


def test_tailer_blocks_are_its_lines(tmp_path: Path) -> None:
    log = tmp_path / "waagent.log"
    content = (
        b"2023-03-13T15:44:04.906673Z INFO ExtHandler one\r\n"
        + b"x" * 5000
        + b"\ncaf\xc3\xa9 \xff\xfe not utf-8\n\n"
        + ("\u20ac" * 700).encode()
        + b"\nlast line without newline"
    )
    log.write_bytes(content)
    for max_bytes in (None, 7, 1000, 4096):
        with LogTailer(log, from_start=True, max_line_bytes=1024) as by_lines, LogTailer(
            log, from_start=True, max_line_bytes=1024
        ) as by_blocks:
            while True:
                lines = by_lines.read_lines(max_bytes=max_bytes)
                blocks = by_blocks.read_blocks(max_bytes=max_bytes)
                assert [line for block in blocks for line in block.split("\n")] == lines
                assert by_lines.more_pending == by_blocks.more_pending
                if not lines and not by_lines.more_pending:
                    break


def test_a_later_line_that_starts_like_the_last_header_is_not_taken_for_it() -> None:
    lines = [
        "2023-03-13T15:44:03Z ERROR ExtHandler Event: name=A.B, op=Install",
        "2023-03-13T15:44:04Z INFO ExtHandler ExtHandler the last header",
        "2023-03-13T15:44:04Z INFOrmation: a continuation that starts like it",
        "2023-03-13T15:44:04Z INFO\tnot a header either",
    ]
    final = assert_same(["\n".join(lines)], BERLIN)
    assert final["record_count"] == 2


def test_records_cut_by_size_are_cut_like_the_parser_cuts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import waagent_guard.agent.record as record_module

    monkeypatch.setattr(record_module, "MAX_RECORD_CHARS", 3000)
    monkeypatch.setattr(ingest_module, "MAX_RECORD_CHARS", 3000)
    rng = random.Random(5)
    lines: list[str] = []
    for n in range(200):
        lines.append(f"2023-03-13T15:44:{n % 60:02d}.{n:06d}Z WARNING ExtHandler record {n}")
        for m in range(rng.randrange(0, 12)):
            lines.append(f"  [stdout] {'y' * rng.randrange(50, 700)} group {m}")
    for cuts in ([], [7, 300, 301], [rng.randrange(len(lines)) for _ in range(6)]):
        final = assert_same(cut(lines, cuts), BERLIN)
        assert final["record_count"] > 200  # some records were cut by size


def test_more_local_seconds_than_the_cache_holds_give_the_same_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_module, "_LOCAL_SECONDS_CACHE_SIZE", 2)
    lines = [
        f"2021/10/31 0{n % 4}:{n % 60:02d}:{(7 * n) % 60:02d}.{n:06d} INFO Daemon local {n}"
        for n in range(300)
    ]
    assert_same(cut(lines, [120]), BERLIN)
    assert_same(cut(list(reversed(lines)), [33, 34]), BERLIN)


def test_every_catalogue_keyword_and_the_heartbeat_is_found_through_an_anchor() -> None:
    """The lines `LogIngest` inspects are those holding an anchor: an anchor inside every
    keyword (and the heartbeat marker) finds every line a keyword would."""
    anchors = LogIngest()._anchors
    words = {word for event in EVENT_CATALOGUE for word in event.keywords} | {"[HEARTBEAT]"}
    assert words  # not vacuous
    uncovered = [word for word in words if not any(anchor in word for anchor in anchors)]
    assert uncovered == []
    # Fewer searches than keywords: the shared anchors stand for several each.
    assert len(anchors) < len(words)
    # And a catalogue of its own gets its own keywords as anchors.
    own = (_event("own", r"quux (?P<subject>\w+)", "warn", 0, "Own.", keywords=("quux",)),)
    assert LogIngest(LogSignals(own))._anchors == ("EARTB", "quux")


def test_the_version_gates_are_the_references() -> None:
    """Versions are looked for from the end of a piece, on the lines holding one of the
    phrases `LogSignals.update` gates them on."""
    import inspect

    from waagent_guard.agent import logevents

    source = inspect.getsource(logevents.LogSignals.update)
    for phrase in ingest_module._VERSION_ANCHORS:
        assert f'"{phrase}" in first_line' in source
    assert source.count(" in first_line or ") == len(ingest_module._VERSION_ANCHORS) - 1


def test_the_last_line_that_gives_each_version_wins_wherever_it_is() -> None:
    filler = [
        f"2023-03-13T15:44:{n % 60:02d}.{n:06d}Z INFO ExtHandler ExtHandler filler {n}"
        for n in range(40)
    ]
    lines = [
        *filler[:10],
        "2023-03-13T15:45:00.000000Z INFO Daemon Daemon Azure Linux Agent Version:1.1.1",
        "2023-03-13T15:45:01.000000Z INFO ExtHandler Agent WALinuxAgent-5.5.5 is running as"
        " the goal state agent",
        *filler[10:20],
        "2021/03/30 19:35:35.971742 INFO Daemon Azure Linux Agent Version:2.2.2",
        # Later lines holding the phrases that give no version, or are no record's start.
        "2023-03-13T15:45:02.000000Z INFO ExtHandler ExtHandler Azure Linux Agent Version:3.3",
        "  Azure Linux Agent Version:4.4 in a continuation line",
        "2023-03-13T15:45:03.000000Z INFO ExtHandler the goal state agent said nothing",
        "2023-13-13T15:45:03.000000Z INFO Daemon Azure Linux Agent Version:6.6 (month 13)",
        *filler[20:],
    ]
    for cuts in ([], [11], [12, 30], [25]):
        final = assert_same(cut(lines, cuts), BERLIN)
        assert final["daemon_version"] == "2.2.2"
        assert final["goal_state_version"] == "5.5.5"


def test_a_continuation_line_shaped_like_a_known_header_line_is_not_counted() -> None:
    event = "2023-03-13T15:44:04.906673Z ERROR ExtHandler ExtHandler Event: name=A.B, op=Install"
    quiet = "2023-03-13T15:44:04.906673Z INFO ExtHandler ExtHandler the goal state is 5"
    lines = [
        event,
        quiet,
        # The same text after the timestamp, on lines that are no header: a known analysis
        # must not make them records' first lines.
        "2023-13-13T15:44:04.906673Z ERROR ExtHandler ExtHandler Event: name=A.B, op=Install",
        "x023-03-13T15:44:04.906673Z INFO ExtHandler ExtHandler the goal state is 5",
        "ab",
        event.replace("04.9", "05.9"),
        quiet,
    ]
    final = assert_same(["\n".join(lines * 3)], BERLIN)
    assert final["events"]["extension_operation_failed"]["count"] == 6


def test_a_piece_with_many_short_records_and_few_continuations_takes_the_shortcut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The continuation lines are counted in the middle only: those before the first
    header and after the last one do not send a piece to the reference."""
    calls = []
    original = LogIngest._fast_middle

    def spy(self: LogIngest, *args: Any) -> bool:
        calls.append(args[-1])
        return original(self, *args)

    monkeypatch.setattr(LogIngest, "_fast_middle", spy)
    lines = (
        ["  leading continuation"] * (MAX_RECORD_LINES - 5)
        + [f"2023-03-13T15:44:{n:02d}Z INFO ExtHandler r{n}" for n in range(30)]
        + ["  trailing continuation"] * (MAX_RECORD_LINES + 5)
    )
    lines.insert(MAX_RECORD_LINES + 3, "  one in the middle")
    assert_same(["\n".join(lines)], BERLIN)
    assert calls == [1]
