"""Reading single entries: gzip tails, corrupt archives, listings, symlink resolution."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from waagent_guard.bundle.plan import FileEntry, ListingEntry, Skipped
from waagent_guard.bundle.sources import Collected, LineFilter, SourceReader
from waagent_guard.bundle.walk import list_files, resolve_in_root
from waagent_guard.sysroot import Sysroot


def file_entry(path: str, *, decode: str = "plain", keep: str = "tail") -> FileEntry:
    return FileEntry("t", 1, path, path, path.lstrip("/"), keep, 1 << 20, 0, 0.0, decode)


def read_one(root: Path, entry: FileEntry | ListingEntry, cap: int) -> Collected | Skipped:
    reader = SourceReader(Sysroot(root), root)
    results = list(reader.read(entry, cap))
    assert len(results) == 1
    return results[0]


def content(result: Collected | Skipped) -> bytes:
    assert isinstance(result, Collected)
    result.sink.file.seek(0)
    return result.sink.file.read()


def test_a_rotated_gzip_log_keeps_its_decompressed_tail(tmp_path: Path) -> None:
    lines = b"".join(b"line %04d sig=SECRET\n" % n for n in range(500))
    (tmp_path / "log.gz").write_bytes(gzip.compress(lines))
    result = read_one(tmp_path, file_entry("/log.gz", decode="gzip"), 1000)
    data = content(result)
    assert isinstance(result, Collected) and result.truncated
    assert data.endswith(b"line 0499 sig=[REDACTED]\n") and b"SECRET" not in data
    assert len(data) < 1300  # the cap is on source bytes; [REDACTED] is longer than SECRET


def test_a_corrupt_gzip_or_zip_is_skipped_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "bad.zip").write_bytes(b"PK not a zip")
    gz = read_one(tmp_path, file_entry("/bad.gz", decode="gzip"), 1000)
    assert isinstance(gz, Skipped) and gz.reason.startswith("read failed")
    zipped = read_one(tmp_path, file_entry("/bad.zip", decode="zip"), 1000)
    assert isinstance(zipped, Skipped) and zipped.reason.startswith("read failed")


def test_a_gzip_bomb_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b"\0" * (20 * 1024 * 1024)))
    result = read_one(tmp_path, file_entry("/bomb.gz", decode="gzip"), 1000)
    assert isinstance(result, Skipped) and "gzip bomb" in result.reason


def test_entries_that_are_not_regular_files_when_read_are_skipped(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to("pipe")
    assert read_one(tmp_path, file_entry("/pipe"), 10) == Skipped(
        "/pipe", "not a regular file when read, never opened", "t"
    )
    assert read_one(tmp_path, file_entry("/gone"), 10) == Skipped(
        "/gone", "vanished before it was read", "t"
    )
    assert isinstance(read_one(tmp_path, file_entry("/link"), 10), Skipped)


def test_the_head_of_a_non_log_file_drops_its_cut_last_line(tmp_path: Path) -> None:
    (tmp_path / "conf").write_bytes(b"a=1\nb=2\nc=3\n")
    result = read_one(tmp_path, file_entry("/conf", keep="head"), 6)
    assert content(result) == b"a=1\n"


def test_a_listing_marks_kinds_like_ls_dash_f(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/sub").mkdir()
    (tmp_path / "dir/run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "dir/run.sh").chmod(0o755)
    (tmp_path / "dir/link").symlink_to("run.sh")
    os.mkfifo(tmp_path / "dir/fifo")
    data = content(read_one(tmp_path, ListingEntry("l", 1, "/dir", "commands/l.txt"), 1 << 20))
    text = data.decode()
    assert text.startswith("# /dir\n")
    assert "sub/\n" in text and "run.sh*\n" in text and "link@ -> run.sh\n" in text
    assert "fifo|\n" in text
    missing = read_one(tmp_path, ListingEntry("l", 1, "/nope", "commands/l.txt"), 100)
    assert isinstance(missing, Skipped)


def test_symlinks_resolve_inside_the_root_and_loops_stop(tmp_path: Path) -> None:
    sysroot = Sysroot(tmp_path)
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text("ID=x\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("../usr/lib/os-release")
    (tmp_path / "lib").symlink_to("/usr/lib")
    (tmp_path / "loop").symlink_to("loop")
    assert resolve_in_root(sysroot, "/etc/os-release") == "/usr/lib/os-release"
    assert resolve_in_root(sysroot, "/lib/os-release") == "/usr/lib/os-release"
    assert resolve_in_root(sysroot, "/../../etc/./os-release") == "/usr/lib/os-release"
    assert resolve_in_root(sysroot, "/loop") is None
    assert resolve_in_root(sysroot, "/missing/x") is None
    listed = {
        entry.path: entry for entry in list_files(sysroot, ["/lib/*-release", "/etc/os-release"])
    }
    assert listed["/lib/os-release"].kind == "file"
    assert listed["/lib/os-release"].real == "/usr/lib/os-release"
    assert listed["/etc/os-release"].target_kind == "file"


def test_a_line_filter_drops_over_long_lines() -> None:
    line_filter = LineFilter("keep", 10)
    assert line_filter.feed(b"keep 1\nkeep but far too long\ndrop\nkee") == b"keep 1\n"
    assert line_filter.feed(b"p 2") == b""
    assert line_filter.finish() == b"keep 2"


def test_prefetched_commands_passed_over_are_dropped_and_never_block_a_later_one() -> None:
    import io as _io

    from waagent_guard.bundle.plan import CommandEntry
    from waagent_guard.bundle.sources import CommandOutcome, _Prefetch

    entries = [CommandEntry(f"c{n}", 1, ("cmd", str(n)), f"c{n}.txt", 5.0, None, None, 100)
               for n in range(5)]
    outputs: list[tuple[_io.BytesIO, _io.BytesIO]] = []  # BytesIO.getvalue() fails once closed

    def run(entry: CommandEntry) -> tuple[_io.BytesIO, _io.BytesIO, CommandOutcome]:
        out, err = _io.BytesIO(entry.argv[1].encode()), _io.BytesIO()
        outputs.append((out, err))
        return out, err, CommandOutcome(0)

    prefetch = _Prefetch(entries, run)
    ran = prefetch.take(entries[3])  # 0..2 passed over (AHEAD is 2: this waited on them)
    assert ran is not None and ran[0].getvalue() == b"3"
    last = prefetch.take(entries[4])
    assert last is not None and last[0].getvalue() == b"4"
    prefetch.close()
    passed_over = [out for out, _ in outputs if out.closed]
    assert len(passed_over) >= 2 and ran[0] not in passed_over and last[0] not in passed_over
    assert prefetch.take(CommandEntry("x", 1, ("x",), "x", 1.0, None, None, 1)) is None
