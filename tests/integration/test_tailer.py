"""LogTailer against a real writer process, and read_recent against real rotated files.

The writer (tests/data/log/numbered_writer.py) appends numbered lines the way the agent
does (open, append, close per line). At chosen line numbers it stops and waits for the
test, which rotates the file the way logrotate would and lets it continue; between
handshakes the tailer reads while the writer writes. Every scenario asserts that lines
1..N came out exactly once, in order.

copytruncate has two inherent windows no tailer can close: lines written between the
copy and the truncate exist in neither file, and lines the tailer had not read before
the truncate exist only in the copy. The test therefore makes the tailer read, then
copies and truncates while the writer is paused, as logrotate would on an idle log.
"""

from __future__ import annotations

import gzip
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import pytest

from waagent_guard.agent.log import LogTailer, read_recent, rotated_logs
from waagent_guard.errors import InputError

DATA = Path(__file__).resolve().parent.parent / "data" / "log"
WRITER = DATA / "numbered_writer.py"
DEADLINE_SECONDS = 60.0


def expected(first: int, last: int) -> list[str]:
    return [
        f"2024-01-01T00:00:00.000000Z INFO ExtHandler ExtHandler line {number}"
        for number in range(first, last + 1)
    ]


def run_writer(
    log: Path,
    tailer: LogTailer,
    count: int,
    *,
    pauses: Optional[dict[int, Callable[[], None]]] = None,
    split: bool = False,
    on_progress: Optional[Callable[[list[str]], None]] = None,
) -> list[str]:
    """Run the writer to the end, reading with `tailer` all along; return every line read."""
    pauses = pauses or {}
    argv = [sys.executable, str(WRITER), str(log), str(count)]
    argv += ["--split"] if split else []
    argv += [str(number) for number in pauses]
    collected: list[str] = []
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={"LC_ALL": "C"}
    )
    assert process.stdin is not None and process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while True:
            assert time.monotonic() < deadline, "writer did not finish"
            collected += tailer.read_lines()
            if on_progress is not None:
                on_progress(collected)
            if not selector.select(timeout=0.005):
                continue
            message = process.stdout.readline().strip()
            if message == "done" or message == "":
                break
            number = int(message.split()[1])
            collected += tailer.read_lines()  # the tailer must have seen the file to follow it
            pauses[number]()
            process.stdin.write("go\n")
            process.stdin.flush()
        assert process.wait(timeout=DEADLINE_SECONDS) == 0
    finally:
        selector.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
        process.stdout.close()
    collected += tailer.read_lines()
    return collected


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "waagent.log"


@pytest.fixture
def tailer(log: Path) -> Iterator[LogTailer]:
    with LogTailer(log, from_start=False) as instance:
        yield instance


def test_tailer_started_before_the_file_exists_reads_every_line(
    log: Path, tailer: LogTailer
) -> None:
    assert tailer.read_lines() == []
    assert run_writer(log, tailer, 2000, split=True) == expected(1, 2000)


def test_tailer_follows_rename_and_create_rotation(log: Path, tailer: LogTailer) -> None:
    def rotate() -> None:
        os.rename(log, log.with_name("waagent.log.1"))

    def rotate_again() -> None:
        os.rename(log, log.with_name("waagent.log.2"))

    lines = run_writer(log, tailer, 3000, pauses={700: rotate, 1900: rotate_again}, split=True)
    assert lines == expected(1, 3000)
    assert log.with_name("waagent.log.1").read_text().count("\n") == 699


def test_tailer_follows_a_rename_racing_the_writer(log: Path, tailer: LogTailer) -> None:
    rotated = log.with_name("waagent.log.1")

    def rotate_once_midway(collected: list[str]) -> None:
        if len(collected) >= 300 and not rotated.exists():
            os.rename(log, rotated)

    lines = run_writer(log, tailer, 4000, split=True, on_progress=rotate_once_midway)
    assert rotated.exists()
    assert lines == expected(1, 4000)


def test_tailer_follows_copytruncate(log: Path, tailer: LogTailer) -> None:
    def copy_and_truncate() -> None:
        shutil.copyfile(log, log.with_name("waagent.log.1"))
        os.truncate(log, 0)

    lines = run_writer(log, tailer, 3000, pauses={500: copy_and_truncate, 2500: copy_and_truncate})
    assert lines == expected(1, 3000)


def test_tailer_follows_delete_and_recreate(log: Path, tailer: LogTailer) -> None:
    def delete() -> None:
        log.unlink()

    lines = run_writer(log, tailer, 2000, pauses={400: delete, 1200: delete}, split=True)
    assert lines == expected(1, 2000)


def test_tailer_survives_every_kind_of_rotation_in_one_run(log: Path, tailer: LogTailer) -> None:
    def rename() -> None:
        os.rename(log, log.with_name("waagent.log.1"))

    def copytruncate() -> None:
        shutil.copyfile(log, log.with_name("waagent.log.2"))
        os.truncate(log, 0)

    def delete() -> None:
        log.unlink()

    pauses: dict[int, Callable[[], None]] = {300: rename, 900: copytruncate, 1500: delete}
    assert run_writer(log, tailer, 2000, pauses=pauses) == expected(1, 2000)


def test_tailer_from_end_skips_existing_lines(log: Path) -> None:
    log.write_text("\n".join(expected(1, 10)) + "\n")
    with LogTailer(log) as tailer:
        assert tailer.read_lines() == []
        assert run_writer(log, tailer, 0) == []
        with open(log, "a") as handle:
            handle.write("new line\n")
        assert tailer.read_lines() == ["new line"]


def test_tailer_from_start_reads_existing_lines(log: Path) -> None:
    log.write_text("one\ntwo\n")
    with LogTailer(log, from_start=True) as tailer:
        assert tailer.read_lines() == ["one", "two"]
        assert tailer.read_lines() == []


def test_tailer_started_mid_line_skips_to_the_next_line(log: Path) -> None:
    log.write_text("complete\nhalf of a li")
    with LogTailer(log) as tailer:
        with open(log, "a") as handle:
            handle.write("ne\nnext\n")
        assert tailer.read_lines() == ["next"]


def test_partial_line_waits_for_its_newline(log: Path) -> None:
    with LogTailer(log) as tailer:
        with open(log, "a") as handle:
            handle.write("abc")
        assert tailer.read_lines() == []
        with open(log, "a") as handle:
            handle.write("def\n\nghi\r\n")
        assert tailer.read_lines() == ["abcdef", "", "ghi\r"]


def test_unterminated_last_line_of_a_rotated_file_is_not_lost(log: Path) -> None:
    now = [0.0]
    with LogTailer(log, monotonic=lambda: now[0]) as tailer:
        log.write_text("first\nunterminated")
        assert tailer.read_lines() == ["first"]
        os.rename(log, log.with_name("waagent.log.1"))
        log.write_text("second\n")
        # Its writer may still end the line in the old file: it waits for the linger.
        assert tailer.read_lines() == ["second"]
        assert tailer.draining
        now[0] += tailer.linger_seconds
        assert tailer.read_lines() == ["unterminated"]
        assert not tailer.draining


def test_deleted_file_is_drained_until_a_new_one_appears(log: Path) -> None:
    log.write_text("")
    with LogTailer(log) as tailer, open(log, "a") as keeper:
        log.unlink()
        keeper.write("still written\n")
        keeper.flush()
        assert tailer.read_lines() == ["still written"]
        assert tailer.read_lines() == []


def test_truncated_file_that_grew_past_the_old_offset_is_reread(log: Path) -> None:
    log.write_text("")
    with LogTailer(log) as tailer:
        log.write_text("aaaa\nbbbb\n")
        assert tailer.read_lines() == ["aaaa", "bbbb"]
        log.write_text("cccccccccc\ndddd\n")  # truncate + longer content, same inode
        assert tailer.read_lines() == ["cccccccccc", "dddd"]


def test_overlong_line_is_returned_in_bounded_pieces(log: Path) -> None:
    log.write_text("")
    with LogTailer(log, max_line_bytes=1000) as tailer:
        log.write_text("x" * 2500)
        assert tailer.read_lines() == ["x" * 1000, "x" * 1000]
        with open(log, "a") as handle:
            handle.write("\n")
        assert tailer.read_lines() == ["x" * 500]


def test_two_megabyte_line_with_default_limit(log: Path) -> None:
    log.write_text("")
    with LogTailer(log) as tailer:
        log.write_text("y" * (2 * 1024 * 1024 + 10) + "\n")
        pieces = tailer.read_lines()
    assert [len(piece) for piece in pieces] == [1024 * 1024, 1024 * 1024, 10]


def test_invalid_utf8_is_replaced_not_fatal(log: Path) -> None:
    log.write_bytes(b"")
    with LogTailer(log) as tailer:
        log.write_bytes(b"ok \xff\xfe\n")
        assert tailer.read_lines() == ["ok \ufffd\ufffd"]


def test_directory_instead_of_log_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a regular file"):
        LogTailer(tmp_path)


def test_lines_of_the_rotated_file_survive_a_new_file_that_cannot_be_opened(
    log: Path,
) -> None:
    """Review of issue 14: the new file at the path raising (here: a directory) threw
    away the lines already read from the rotated one in the same call."""
    log.write_text("")
    with LogTailer(log) as tailer:
        with open(log, "a") as handle:
            handle.write("before\n")
        os.rename(log, log.with_name("waagent.log.1"))
        log.mkdir()
        assert tailer.read_lines() == ["before"]
        with pytest.raises(InputError, match="not a regular file"):
            tailer.read_lines()  # nothing was read: the error itself
        log.rmdir()
        log.write_text("after\n")
        assert tailer.read_lines() == ["after"]


def test_lines_of_the_rotated_file_survive_a_failed_read_of_the_new_file(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue 14: the new file opened but reading it failed (EIO): the
    rotated file's lines read in the same call were lost with the error."""
    import errno

    log.write_text("")
    with LogTailer(log) as tailer, open(log, "a", buffering=1) as writer:
        writer.write("old-1\nold-2\n")
        os.rename(log, log.with_name("waagent.log.1"))
        log.write_text("new-1\n")
        new_inode = os.stat(log).st_ino
        real_pread = os.pread

        def eio_on_the_new_file(fd: int, size: int, offset: int) -> bytes:
            if os.fstat(fd).st_ino == new_inode:
                raise OSError(errno.EIO, "Input/output error")
            return real_pread(fd, size, offset)

        monkeypatch.setattr(os, "pread", eio_on_the_new_file)
        assert tailer.read_lines() == ["old-1", "old-2"]
        with pytest.raises(InputError, match="Input/output error"):
            tailer.read_lines()  # nothing else was read: the error itself
        monkeypatch.undo()
        assert tailer.read_lines() == ["new-1"]


def test_a_tailer_whose_first_read_fails_leaves_no_descriptor(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    log.write_text("x\n")
    before = len(os.listdir("/proc/self/fd"))

    def eio(*args: object) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pread", eio)
    with pytest.raises(InputError, match="Input/output error"):
        LogTailer(log)
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == before


# read_recent ---------------------------------------------------------------------------


def write_rotations(log: Path) -> None:
    """A current log plus three rotated files with increasing age."""
    log.write_text("current 1\ncurrent 2\n")
    plain = log.with_name("waagent.log.1")
    plain.write_text("one 1\none 2\n")
    with gzip.open(log.with_name("waagent.log.2.gz"), "wt") as handle:
        handle.write("two 1\ntwo 2\n")
    with gzip.open(log.with_name("waagent.log-2020-01-01-1577836800.gz"), "wt") as handle:
        handle.write("dated 1\ndated 2\n")
    now = time.time()
    for age, name in ((300, "waagent.log-2020-01-01-1577836800.gz"), (200, "waagent.log.2.gz")):
        os.utime(log.with_name(name), (now - age, now - age))
    os.utime(plain, (now - 100, now - 100))


def test_read_recent_returns_the_tail_aligned_to_a_line(log: Path) -> None:
    log.write_text("aaaa\nbbbb\ncccc\n")
    assert list(read_recent(log, max_bytes=7)) == ["cccc"]
    assert list(read_recent(log, max_bytes=10)) == ["bbbb", "cccc"]
    assert list(read_recent(log, max_bytes=1000)) == ["aaaa", "bbbb", "cccc"]
    assert list(read_recent(log, max_bytes=0)) == []


def test_read_recent_includes_rotated_files_oldest_first(log: Path) -> None:
    write_rotations(log)
    assert rotated_logs(log) == [
        log.with_name("waagent.log-2020-01-01-1577836800.gz"),
        log.with_name("waagent.log.2.gz"),
        log.with_name("waagent.log.1"),
    ]
    assert list(read_recent(log, max_bytes=10_000, include_rotated=True)) == [
        "dated 1",
        "dated 2",
        "two 1",
        "two 2",
        "one 1",
        "one 2",
        "current 1",
        "current 2",
    ]
    assert list(read_recent(log, max_bytes=10_000)) == ["current 1", "current 2"]


def test_read_recent_stays_within_the_byte_budget(log: Path) -> None:
    write_rotations(log)
    lines = list(read_recent(log, max_bytes=20 + 12 + 6, include_rotated=True))
    assert lines == ["two 2", "one 1", "one 2", "current 1", "current 2"]


def test_read_recent_trims_a_large_gzip_to_its_tail(log: Path) -> None:
    log.write_text("")
    with gzip.open(log.with_name("waagent.log.1.gz"), "wt") as handle:
        for number in range(100_000):
            handle.write(f"old line {number}\n")
    lines = list(read_recent(log, max_bytes=40, include_rotated=True))
    assert lines == ["old line 99998", "old line 99999"]


def test_read_recent_skips_corrupt_rotated_files(log: Path) -> None:
    log.write_text("current\n")
    log.with_name("waagent.log.1.gz").write_bytes(b"\x1f\x8bnot really gzip")
    log.with_name("waagent.log.2").write_text("older\n")
    os.utime(log.with_name("waagent.log.2"), (1, 1))
    assert list(read_recent(log, max_bytes=1000, include_rotated=True)) == ["older", "current"]


def test_read_recent_of_a_missing_log_reads_only_rotated_files(log: Path) -> None:
    assert list(read_recent(log, max_bytes=1000, include_rotated=True)) == []
    log.with_name("waagent.log.1").write_text("left over\n")
    assert list(read_recent(log, max_bytes=1000, include_rotated=True)) == ["left over"]


def test_rotated_logs_ignores_unrelated_names(log: Path) -> None:
    for name in ("waagent.log.bak", "waagent.logger", "other.log.1", "waagent.log.1.tmp"):
        log.with_name(name).write_text("x\n")
    log.with_name("waagent.log-20240101").write_text("x\n")
    (log.parent / "waagent.log.3").mkdir()
    assert rotated_logs(log) == [log.with_name("waagent.log-20240101")]
    assert rotated_logs(log.parent / "missing-dir" / "waagent.log") == []


def test_read_recent_of_a_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        list(read_recent(tmp_path, max_bytes=10))


def test_read_recent_stops_decompressing_a_hostile_gzip(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waagent_guard.agent import tail

    monkeypatch.setattr(tail, "READ_CHUNK_BYTES", 64)
    monkeypatch.setattr(tail, "MAX_DECOMPRESSED_BYTES", 128)
    log.write_text("")
    with gzip.open(log.with_name("waagent.log.1.gz"), "wt") as handle:
        handle.write("z" * 9 + "\n" * 10_000)
    lines = list(read_recent(log, max_bytes=10_000, include_rotated=True))
    assert len(lines) < 200


def test_a_bounded_read_takes_a_slice_and_says_more_is_pending(tmp_path: Path) -> None:
    from waagent_guard.agent.log import LogTailer

    path = tmp_path / "waagent.log"
    path.write_text("")
    tailer = LogTailer(path, from_start=True)
    try:
        line = "2023-03-13T15:44:04.906673Z INFO ExtHandler ExtHandler " + "x" * 100
        with open(path, "a") as handle:
            for number in range(20000):  # about 3 MB
                handle.write(f"{line} {number}\n")
        seen: list[str] = []
        slices = 0
        while True:
            batch = tailer.read_lines(max_bytes=512 * 1024)
            seen.extend(batch)
            slices += 1
            assert len(batch) * len(line) < 2 * 1024 * 1024  # never the whole backlog
            if not tailer.more_pending:
                break
        assert slices > 3
        assert [int(item.rsplit(" ", 1)[1]) for item in seen] == list(range(20000))
    finally:
        tailer.close()


# --- a writer that keeps appending to the file rotated away (issue 14 item 4) ------------


class KeptWriter:
    """A writer holding its descriptor (as a daemon does until postrotate tells it to reopen)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.number = 0
        self.fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, count: int) -> None:
        text = "".join(
            f"2024-01-01T00:00:00.000000Z INFO ExtHandler ExtHandler line {self.number + at}\n"
            for at in range(1, count + 1)
        )
        self.number += count
        os.write(self.fd, text.encode())

    def reopen(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)


def read_all(tailer: LogTailer, max_bytes: Optional[int]) -> list[str]:
    lines: list[str] = []
    while True:
        lines += tailer.read_lines(max_bytes=max_bytes)
        if not tailer.more_pending:
            return lines


def rotate(kind: str, log: Path, generation: int) -> None:
    rotated = log.with_name("waagent.log.1")
    if kind == "copytruncate":
        shutil.copyfile(log, rotated)
        os.truncate(log, 0)
        return
    if kind == "delete":
        log.unlink()
    else:
        os.replace(log, rotated)
    log.touch()
    if kind == "gzip":
        with open(rotated, "rb") as source, gzip.open(
            log.with_name(f"waagent.log.{generation}.gz"), "wb"
        ) as target:
            shutil.copyfileobj(source, target)
        rotated.unlink()


@pytest.mark.parametrize("max_bytes", [None, 4096, 100])
@pytest.mark.parametrize("kind", ["rename", "gzip", "delete", "copytruncate"])
def test_lines_the_writer_still_appends_to_the_rotated_file_are_read(
    log: Path, kind: str, max_bytes: Optional[int]
) -> None:
    """Issue 14: the tailer closed the old descriptor as soon as a new file appeared,
    losing every line a writer that had not reopened yet still appended there
    (rename-and-create lost ~60 % under a heavy writer). Deterministic: the test
    interleaves writer, rotation and reads itself, on a fake clock."""
    now = [0.0]
    writer = KeptWriter(log)
    tailer = LogTailer(log, from_start=True, monotonic=lambda: now[0])
    lines: list[str] = []
    try:
        for generation in range(1, 4):
            writer.write(300)
            lines += read_all(tailer, max_bytes)
            rotate(kind, log, generation)
            writer.write(50)  # before the tailer looks: still the old file
            lines += read_all(tailer, max_bytes)  # the tailer sees the new file here
            writer.write(70)  # after the tailer switched: still the old file
            lines += read_all(tailer, max_bytes)
            now[0] += 1.0
            writer.write(30)
            writer.reopen()  # postrotate: the writer moves to the new file
            writer.write(40)
            lines += read_all(tailer, max_bytes)
        now[0] += tailer.linger_seconds
        lines += read_all(tailer, max_bytes)
        lines += read_all(tailer, max_bytes)
    finally:
        writer.close()
        tailer.close()
    assert lines == expected(1, writer.number)
    assert not tailer.draining


def test_a_rotated_file_that_keeps_growing_is_followed_and_retired_once_quiet(
    log: Path,
) -> None:
    now = [0.0]
    writer = KeptWriter(log)
    with LogTailer(log, from_start=True, monotonic=lambda: now[0]) as tailer:
        writer.write(1)
        assert tailer.read_lines() == expected(1, 1)
        os.replace(log, log.with_name("waagent.log.1"))
        log.touch()
        for step in range(2, 12):  # a writer that never reopens: followed as long as it grows
            now[0] += tailer.linger_seconds
            writer.write(1)
            assert tailer.read_lines() == expected(step, step)
            assert tailer.draining
        now[0] += tailer.linger_seconds
        assert tailer.read_lines() == []
        assert not tailer.draining
    writer.close()


def test_at_most_a_few_rotated_files_stay_open(log: Path) -> None:
    from waagent_guard.agent.tail import MAX_ROTATED_OPEN

    now = [0.0]
    with LogTailer(log, from_start=True, monotonic=lambda: now[0]) as tailer:
        for generation in range(MAX_ROTATED_OPEN + 5):
            log.write_text(f"generation {generation}\n")
            tailer.read_lines()
            os.replace(log, log.with_name(f"waagent.log.{generation}"))
        log.write_text("last\n")
        assert tailer.read_lines() == ["last"]
        open_fds = len(os.listdir("/proc/self/fd"))
        tailer.close()
        assert len(os.listdir("/proc/self/fd")) == open_fds - MAX_ROTATED_OPEN - 1
