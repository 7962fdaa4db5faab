"""The one bounded reader (`fsutil.read_file`): regular files only, capped, with a deadline.

Issue 14 item 5 and issue 11: every guest, /proc and config file goes through it.
Each node kind a hostile tree can hold is refused with a typed error (an
OSError, so callers' `except OSError` holds), and opening never blocks.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from waagent_guard import fsutil
from waagent_guard.fsutil import (
    FileRefused,
    FileTooLarge,
    NotRegularFile,
    ReadTimedOut,
    UndecodableFile,
    open_regular,
    read_bounded,
    read_file,
    read_text,
)


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert read_file(path, 100) == (b"hello\n", False)
    assert read_file(path, 6) == (b"hello\n", False)


def test_a_proc_file_of_size_zero_is_read_to_its_end() -> None:
    assert os.stat("/proc/self/status").st_size == 0
    data, truncated = read_file("/proc/self/status", 1 << 20)
    assert b"Pid:\t" in data and not truncated


@pytest.mark.parametrize("kind", ["fifo", "dev_zero_link", "dev_urandom_link", "socket",
                                  "directory", "dev_null_link"])
def test_nodes_that_are_not_regular_files_are_refused_without_blocking(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "node"
    listener = None
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: a blocking open would wait forever
    elif kind == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to({"dev_zero_link": "/dev/zero", "dev_urandom_link": "/dev/urandom",
                         "dev_null_link": "/dev/null"}[kind])
    try:
        with pytest.raises(NotRegularFile) as caught:
            read_file(path, 1 << 30)
    finally:
        if listener is not None:
            listener.close()
    assert isinstance(caught.value, OSError)
    assert "not a regular file" in caught.value.strerror
    assert caught.value.filename == str(path)


def test_a_character_device_node_in_a_tree_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    path = tmp_path / "zero"
    try:
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod refused here (a container without CAP_MKNOD)")
    with pytest.raises(NotRegularFile, match="character device"):
        read_file(path, 1 << 30)


def test_nofollow_refuses_a_symlink_and_follow_reads_its_target(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to("target")
    assert read_file(tmp_path / "link", 10) == (b"x", False)
    with pytest.raises(NotRegularFile, match="symbolic link"):
        read_file(tmp_path / "link", 10, nofollow=True)


def test_a_symlink_loop_is_an_oserror(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError) as caught:
        read_file(tmp_path / "loop", 10)
    assert caught.value.errno == errno.ELOOP


def test_a_nul_in_a_path_from_a_guest_file_is_refused_not_a_valueerror(tmp_path: Path) -> None:
    with pytest.raises(FileRefused, match="NUL byte"):
        read_file(f"{tmp_path}/a\0b", 10)


def test_the_cap_is_an_error_or_the_head_or_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with pytest.raises(FileTooLarge, match="larger than 4 bytes"):
        read_file(path, 4)
    assert read_file(path, 4, oversize="truncate") == (b"0123", True)
    assert read_file(path, 4, oversize="tail") == (b"6789", True)
    assert read_file(path, 10, oversize="tail") == (b"0123456789", False)
    assert read_bounded(path, 4) == (b"0123", True)


def test_a_huge_sparse_file_costs_only_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with open(path, "wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB of zeros on paper
    data, truncated = read_file(path, 1000, oversize="truncate")
    assert data == b"\0" * 1000 and truncated
    with pytest.raises(FileTooLarge):
        read_file(path, 1000)


def test_decoding_is_explicit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"ok \xff")
    assert read_text(path, 100) == "ok \ufffd"
    with pytest.raises(UndecodableFile, match=r"not UTF-8 text \(byte 3\)"):
        read_text(path, 100, errors="strict")


def test_a_read_slower_than_the_deadline_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * (fsutil.READ_CHUNK * 3))
    ticks = iter(range(0, 1000, 10))  # every look at the clock: 10 s later

    with pytest.raises(ReadTimedOut, match="did not finish in 5 s"):
        read_file(path, 1 << 20, timeout=5.0, clock=lambda: float(next(ticks)))


def test_a_read_stuck_in_the_kernel_returns_an_error_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung filesystem: the open/read never returns; the caller gets ReadTimedOut."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    release = threading.Event()
    real = fsutil._read_now

    def stuck(*args: Any) -> bytes:
        release.wait()
        return real(*args)

    monkeypatch.setattr(fsutil, "_read_now", stuck)
    try:
        with pytest.raises(ReadTimedOut):
            read_file(path, 10, timeout=0.05, isolate=True)
    finally:
        release.set()  # let the left-behind reader finish (the suite checks for leaks)
        for thread in threading.enumerate():
            if thread.name == "wg-read":
                thread.join(5)


def test_errors_from_the_reading_thread_reach_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_file(tmp_path / "absent", 10, isolate=True)
    (tmp_path / "d").mkdir()
    with pytest.raises(NotRegularFile):
        read_file(tmp_path / "d", 10, isolate=True)
    assert read_file(__file__, 1 << 20, isolate=True)[0].startswith(b'"""')
    (tmp_path / "secret").write_bytes(b"x")
    os.chmod(tmp_path / "secret", 0)
    if os.geteuid() != 0:
        with pytest.raises(PermissionError):
            read_file(tmp_path / "secret", 10)


def test_open_regular_never_leaks_the_descriptor_it_refuses(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with pytest.raises(NotRegularFile):
            open_regular(tmp_path / "d")
    assert len(os.listdir("/proc/self/fd")) == before


def test_no_other_reader_of_guest_files_opens_files_itself() -> None:
    """Issue 11: one reader. No module but fsutil (and the writers, the demo, the
    extraction of our own bundle archives) reads a file by itself."""
    package = Path(fsutil.__file__).parent
    allowed = {"fsutil.py", "commands/demo.py", "bundle/archive.py", "bundle/writer.py",
               "execute.py", "cli.py", "agent/tail.py"}
    offenders = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative in allowed or relative.startswith("demo/"):  # the demo writes its own tree
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("open(path, \"rb\")", ".read_text(", ".read_bytes(", "with open("):
            if needle in text:
                offenders.append(f"{relative}: {needle}")
    assert offenders == []
