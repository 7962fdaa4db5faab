"""Parsing waagent.log records: the five formats, continuation lines, local time, hostile input."""

from __future__ import annotations

import os
import random
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from waagent_guard.agent.record import (
    MAX_RECORD_LINES,
    LogRecord,
    RecordParser,
    guest_timezone,
    parse_records,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "log"
UTC = timezone.utc


def sample_lines() -> list[str]:
    """The real lines of log-lines.txt, without its annotations and blank separators."""
    with open(DATA / "log-lines.txt", encoding="utf-8") as handle:
        return [line for line in handle if not line.startswith("#") and line.strip()]


def parse_one(line: str, tz: timezone = UTC) -> LogRecord:
    records = list(parse_records([line], tz=tz))
    assert len(records) == 1
    return records[0]


def berlin() -> object:
    return guest_timezone(DATA / "Europe-Berlin.tzif")


def test_format_1_line_has_thread_and_prefix() -> None:
    record = parse_one(
        "2023-03-13T15:44:04.906673Z INFO ExtHandler ExtHandler Azure Linux Agent"
        " (Goal State Agent version 9.9.9.9)\n"
    )
    assert record.format == 1
    assert record.timestamp == datetime(2023, 3, 13, 15, 44, 4, 906673, tzinfo=UTC)
    assert (record.level, record.thread, record.prefix) == ("INFO", "ExtHandler", "ExtHandler")
    assert record.message == "Azure Linux Agent (Goal State Agent version 9.9.9.9)"


def test_format_1_line_with_extension_prefix_keeps_the_brackets() -> None:
    record = parse_one(
        "2021-03-30T19:45:33.793213Z INFO ExtHandler"
        " [Microsoft.Azure.Security.Monitoring.AzureSecurityLinuxAgent-2.14.64]"
        " Target handler state: enabled [incarnation 3]"
    )
    assert record.format == 1
    assert record.thread == "ExtHandler"
    assert record.prefix == "[Microsoft.Azure.Security.Monitoring.AzureSecurityLinuxAgent-2.14.64]"
    assert record.message == "Target handler state: enabled [incarnation 3]"


def test_format_1_line_of_a_named_thread_without_prefix() -> None:
    record = parse_one(
        "2024-08-19T16:55:38.627046Z INFO MainThread Fetched a new incarnation for the"
        " WireServer goal state [incarnation 1]"
    )
    assert (record.format, record.thread, record.prefix) == (1, "MainThread", None)
    assert record.message.startswith("Fetched a new incarnation")


def test_format_1_line_of_a_worker_thread_with_prefix() -> None:
    record = parse_one(
        "2024-08-08T22:05:26.561896Z WARNING EnvHandler ExtHandler The firewall is not"
        " configured correctly."
    )
    assert (record.format, record.level, record.thread, record.prefix) == (
        1,
        "WARNING",
        "EnvHandler",
        "ExtHandler",
    )


def test_format_2_line_has_prefix_but_no_thread() -> None:
    record = parse_one(
        "2021-05-28T01:17:40.683072Z INFO ExtHandler Wire server endpoint:168.63.129.16"
    )
    assert (record.format, record.thread, record.prefix) == (2, None, "ExtHandler")
    assert record.message == "Wire server endpoint:168.63.129.16"


def test_format_2_line_whose_message_starts_like_a_word() -> None:
    record = parse_one(
        "2020-03-31T21:19:09.111829Z INFO Daemon Agent WALinuxAgent-2.2.46 forwarding signal 15"
    )
    assert (record.format, record.prefix) == (2, "Daemon")
    assert record.message == "Agent WALinuxAgent-2.2.46 forwarding signal 15"


def test_format_2_line_without_any_prefix_keeps_the_whole_message() -> None:
    record = parse_one("2020-03-31T21:19:09.111829Z ERROR Something broke badly")
    assert (record.format, record.thread, record.prefix) == (2, None, None)
    assert record.message == "Something broke badly"


def test_format_3_line_has_a_prefix_and_local_time() -> None:
    record = parse_one("2021/03/30 19:35:35.971742 INFO Daemon Azure Linux Agent Version:2.2.45")
    assert (record.format, record.level, record.prefix) == (3, "INFO", "Daemon")
    assert record.timestamp == datetime(2021, 3, 30, 19, 35, 35, 971742, tzinfo=UTC)
    assert record.message == "Azure Linux Agent Version:2.2.45"


def test_format_3_line_with_extension_prefix() -> None:
    record = parse_one(
        "2018/03/05 14:31:57.742721 INFO"
        " [Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9120.0]"
        " Target handler state: enabled"
    )
    assert record.format == 3
    assert record.prefix == "[Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9120.0]"


def test_format_4_line_has_no_prefix() -> None:
    record = parse_one(
        "2023/06/07 08:04:35.336313 WARNING Disabling guest agent in accordance with ovf-env.xml"
    )
    assert (record.format, record.level, record.prefix) == (4, "WARNING", None)
    assert record.message == "Disabling guest agent in accordance with ovf-env.xml"


def test_format_5_line_has_no_level_and_whole_seconds() -> None:
    record = parse_one(
        "2021/03/30 19:45:31 [Microsoft.Azure.Monitor.AzureMonitorLinuxAgent-1.7.0] cwd is /var/lib"
    )
    assert (record.format, record.level) == (5, None)
    assert record.prefix == "[Microsoft.Azure.Monitor.AzureMonitorLinuxAgent-1.7.0]"
    assert record.timestamp == datetime(2021, 3, 30, 19, 45, 31, tzinfo=UTC)
    assert record.message == "cwd is /var/lib"


def test_format_5_prefix_may_touch_the_message() -> None:
    record = parse_one(
        "2017/11/14 03:06:52 [Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0]T:S snapshot"
    )
    assert record.prefix == "[Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0]"
    assert record.message == "T:S snapshot"


def test_format_5_line_without_prefix() -> None:
    record = parse_one("2021/03/30 19:45:31 Azure Monitoring Agent for Linux started to handle.")
    assert (record.format, record.prefix) == (5, None)
    assert record.message == "Azure Monitoring Agent for Linux started to handle."


def test_every_sample_line_parses_and_keeps_every_raw_line() -> None:
    lines = sample_lines()
    records = list(parse_records(lines, tz=UTC))
    assert [raw for record in records for raw in record.lines] == lines
    assert {record.format for record in records} == {1, 2, 3, 4, 5}
    header = re.compile(
        r"^(\d{4}-\d\d-\d\dT[\d:.]+Z (VERBOSE|INFO|WARNING|ERROR) |\d{4}/\d\d/\d\d )"
    )
    assert sum(1 for line in lines if header.match(line)) == len(records)
    for record in records:
        assert record.timestamp is not None and record.timestamp.tzinfo is not None


def test_debian_log_is_one_record_per_line_with_exact_levels() -> None:
    with open(DATA / "debian-waagent.log", encoding="utf-8") as handle:
        lines = handle.readlines()
    assert len(lines) == 239
    records = list(parse_records(lines, tz=UTC))
    assert len(records) == 239
    assert {record.format for record in records} == {1}
    for level in ("INFO", "WARNING", "ERROR", "VERBOSE"):
        expected = sum(1 for line in lines if line.split(" ")[1] == level)
        assert sum(1 for record in records if record.level == level) == expected


def test_traceback_lines_continue_the_previous_record() -> None:
    lines = [
        "2017/08/02 15:09:57.752121 WARNING Traceback (most recent call last):\n",
        '  File "/usr/lib/python3/dist-packages/azurelinuxagent/ga/update.py", line 280, in run\n',
        "    test_agent = self.get_test_agent()\n",
        "2017/08/02 15:09:58.000000 INFO next\n",
    ]
    first, second = parse_records(lines, tz=UTC)
    assert first.lines == tuple(lines[:3])
    assert first.message == (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/dist-packages/azurelinuxagent/ga/update.py", line 280, in run\n'
        "    test_agent = self.get_test_agent()"
    )
    assert second.message == "next"


def test_stdout_and_stderr_blocks_belong_to_the_extension_record() -> None:
    lines = [
        "2024-12-26T06:35:24.233438Z ERROR ExtHandler ExtHandler Event: name=X, op=Install\n",
        "[stdout]\n",
        "Linux distribution version is 4081.2.1.\n",
        "[stderr]\n",
        "[2024-12-26T06:35:22+0000]: Unexpected Linux distribution.\n",
    ]
    (record,) = parse_records(lines, tz=UTC)
    assert record.lines == tuple(lines)
    assert record.message.split("\n")[1:] == [
        "[stdout]",
        "Linux distribution version is 4081.2.1.",
        "[stderr]",
        "[2024-12-26T06:35:22+0000]: Unexpected Linux distribution.",
    ]


def test_continuation_before_any_record_becomes_a_format_0_record() -> None:
    lines = ["tail of a rotated line\n", "another\n", "2021/03/30 19:45:31 real\n"]
    orphan, real = parse_records(lines, tz=UTC)
    assert (orphan.format, orphan.timestamp, orphan.level) == (0, None, None)
    assert orphan.message == "tail of a rotated line\nanother"
    assert real.format == 5


def test_crlf_line_endings_are_not_part_of_the_message() -> None:
    record = parse_one("2021/03/30 19:45:31.000001 INFO Daemon hello\r\n")
    assert record.message == "hello"
    assert record.lines == ("2021/03/30 19:45:31.000001 INFO Daemon hello\r\n",)


def test_incremental_feed_returns_a_record_when_the_next_header_arrives() -> None:
    parser = RecordParser(tz=UTC)
    assert parser.feed("2021/03/30 19:45:31.000001 INFO Daemon one\n") == []
    assert parser.feed("  more\n") == []
    (done,) = parser.feed("2021/03/30 19:45:32.000001 INFO Daemon two\n")
    assert done.message == "one\n  more"
    (last,) = parser.flush()
    assert last.message == "two"
    assert parser.flush() == []


def test_local_time_formats_are_converted_from_the_guest_zone() -> None:
    zone = berlin()
    summer = parse_one("2021/03/30 19:35:35.971742 INFO Daemon x", tz=zone)  # type: ignore[arg-type]
    winter = parse_one("2021/01/15 12:00:00 [Pub.Type-1.0] y", tz=zone)  # type: ignore[arg-type]
    assert summer.timestamp == datetime(2021, 3, 30, 17, 35, 35, 971742, tzinfo=UTC)
    assert winter.timestamp == datetime(2021, 1, 15, 11, 0, 0, tzinfo=UTC)
    iso = parse_one("2021-03-30T19:35:35.5Z INFO Daemon Daemon z", tz=zone)  # type: ignore[arg-type]
    assert iso.timestamp == datetime(2021, 3, 30, 19, 35, 35, 500000, tzinfo=UTC)


def test_consecutive_lines_in_one_second_keep_their_microseconds() -> None:
    lines = [f"2021/03/30 19:35:35.{n:06d} INFO Daemon m\n" for n in (1, 2, 999999)]
    stamps = [record.timestamp for record in parse_records(lines, tz=berlin())]  # type: ignore[arg-type]
    base = datetime(2021, 3, 30, 17, 35, 35, tzinfo=UTC)
    assert stamps == [base + timedelta(microseconds=n) for n in (1, 2, 999999)]


def test_guest_timezone_reads_a_tzif_file(tmp_path: Path) -> None:
    localtime = tmp_path / "localtime"
    shutil.copy(DATA / "Europe-Berlin.tzif", localtime)
    zone = guest_timezone(localtime)
    assert datetime(2021, 7, 1, tzinfo=zone).utcoffset() == timedelta(hours=2)


def test_guest_timezone_follows_an_absolute_zoneinfo_link_by_name(tmp_path: Path) -> None:
    localtime = tmp_path / "localtime"
    os.symlink("/nonexistent-root/usr/share/zoneinfo/Europe/Berlin", localtime)
    zone = guest_timezone(localtime)
    assert datetime(2021, 1, 1, tzinfo=zone).utcoffset() == timedelta(hours=1)


def test_guest_timezone_link_to_unknown_zone_falls_back_to_utc(tmp_path: Path) -> None:
    localtime = tmp_path / "localtime"
    os.symlink("/nonexistent/zoneinfo/Not/AZone", localtime)
    assert guest_timezone(localtime) is timezone.utc


def test_guest_timezone_is_utc_when_missing_or_invalid(tmp_path: Path) -> None:
    assert guest_timezone(tmp_path / "absent") is timezone.utc
    garbage = tmp_path / "localtime"
    garbage.write_bytes(b"not a tzif file at all")
    assert guest_timezone(garbage) is timezone.utc


def test_parser_without_zone_uses_the_hosts_localtime() -> None:
    (parsed,) = parse_records(["2021/03/30 19:35:35.971742 INFO Daemon x"])
    assert parsed.timestamp is not None and parsed.timestamp.tzinfo is UTC


def test_impossible_dates_are_continuations_not_errors() -> None:
    lines = [
        "2021-03-30T19:35:35.1Z INFO Daemon Daemon ok\n",
        "2021-13-45T99:99:99.1Z INFO Daemon Daemon bad month\n",
        "2021/02/30 10:00:00.000001 INFO Daemon bad day\n",
        "2021/02/30 10:00:00 bad day format 5\n",
        "2021-03-30T19:35:35.1Z DEBUG unknown level\n",
    ]
    (record,) = parse_records(lines, tz=UTC)
    assert record.lines == tuple(lines)


def test_a_local_time_before_year_one_in_utc_is_a_continuation_not_an_error() -> None:
    # 0001/01/01 00:30 in Berlin is 0000-12-31 23:30 UTC: converting it raised
    # OverflowError out of the parser (a hostile log line stopped the daemon's ingest).
    lines = [
        "2021/03/30 19:35:35.000001 INFO Daemon ok\n",
        "0001/01/01 00:30:00.000000 ERROR before year one in UTC\n",
        "0001/01/01 00:30:00 format 5 too\n",
        "9999/12/31 23:59:59.999999 INFO east of UTC: still year 9999\n",
    ]
    records = list(parse_records(lines, tz=berlin()))  # type: ignore[arg-type]
    assert [record.lines for record in records] == [tuple(lines[:3]), (lines[3],)]
    assert records[1].timestamp == datetime(9999, 12, 31, 22, 59, 59, 999999, UTC)


def test_binary_garbage_never_raises_and_keeps_every_line() -> None:
    generator = random.Random(42)
    blob = bytes(generator.randrange(256) for _ in range(200_000))
    lines = blob.decode("utf-8", errors="replace").splitlines(keepends=True)
    records = list(parse_records(lines, tz=UTC))
    assert "".join(raw for record in records for raw in record.lines) == "".join(lines)


def test_ten_megabyte_line_never_raises() -> None:
    huge = "2021-03-30T19:35:35.1Z INFO Daemon Daemon " + "x" * (10 * 1024 * 1024) + "\n"
    tail = "y" * 10_000_000
    records = list(parse_records(["2021/03/30 19:45:31 before\n", huge, tail], tz=UTC))
    assert records[1].message.startswith("x" * 100)
    # The continuation would push the record past MAX_RECORD_CHARS: it stands alone.
    assert [record.format for record in records] == [5, 1, 0]
    assert records[2].lines == (tail,)


def test_runaway_continuation_is_cut_into_bounded_records() -> None:
    lines = ["2021/03/30 19:45:31 start\n"] + [f"continued {n}\n" for n in range(2500)]
    records = list(parse_records(lines, tz=UTC))
    assert len(records) == 3
    assert all(len(record.lines) <= MAX_RECORD_LINES for record in records)
    assert [raw for record in records for raw in record.lines] == lines
    assert [record.format for record in records] == [5, 0, 0]


def test_records_compare_equal_like_dataclasses() -> None:
    line = "2021/03/30 19:45:31 same\n"
    assert parse_one(line) == parse_one(line)
    assert parse_one(line).lines == (line,)


_LOGLIKE = st.one_of(
    st.text(),
    st.sampled_from(sample_lines()),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [
                "2021-03-30T19:35:35.1Z INFO ",
                "2021-03-30T19:35:35Z ERROR ",
                "2021/03/30 19:35:35.971742 WARNING ",
                "2021/03/30 19:45:31 ",
                "2021/03/30 19:45:31 [",
                "9999/99/99 99:99:99 ",
            ]
        ),
        st.text(),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LOGLIKE, max_size=30))
def test_parser_never_raises_and_loses_no_line(lines: list[str]) -> None:
    records = list(parse_records(lines, tz=UTC))
    assert [raw for record in records for raw in record.lines] == lines
    for record in records:
        assert record.format in (0, 1, 2, 3, 4, 5)
        assert (record.timestamp is None) == (record.format == 0)
