"""The archive's compression worker (waagent_guard/bundle/compress.py, issue 15)."""

from __future__ import annotations

import errno
import gzip
import io
import lzma
import os
import sys
import tarfile

import pytest

from waagent_guard.bundle.compress import BLOCK_BYTES, GZIP_LEVEL, CompressingWriter


def _tar_through(compression: str, payload: bytes) -> bytes:
    raw = io.BytesIO()
    writer = CompressingWriter(raw, compression)
    with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        info = tarfile.TarInfo("top/member")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    writer.close()
    return raw.getvalue()


@pytest.mark.parametrize("compression", ["gz", "xz"])
def test_a_multi_block_archive_reads_back_byte_for_byte(compression: str) -> None:
    payload = os.urandom(BLOCK_BYTES // 2) * 5 + b"tail\n"  # several blocks, compressible
    data = _tar_through(compression, payload)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        member = archive.extractfile("top/member")
        assert member is not None and member.read() == payload
    opener = gzip.decompress if compression == "gz" else lzma.decompress
    assert opener(data)[:512].startswith(b"././@PaxHeader") or opener(data)[:3] == b"top"


def test_gzip_uses_tar_czf_level_6_not_tarfile_level_9() -> None:
    data = _tar_through("gz", b"x" * 1000)
    assert GZIP_LEVEL == 6
    # RFC 1952 XFL: 2 = slowest/best (level 9, tarfile's "w:gz"), 0 = the levels in between.
    assert data[:2] == b"\x1f\x8b" and data[8] == 0


class _FullDisk(io.RawIOBase):
    def __init__(self) -> None:
        self.writes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += len(data)
        if self.writes > 64:  # the gzip header fits; the first compressed block does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)


def test_a_worker_failure_is_raised_as_the_oserror_it_was() -> None:
    writer = CompressingWriter(_FullDisk(), "gz")  # type: ignore[arg-type]
    with pytest.raises(OSError) as raised:
        for _ in range(QUEUE_SLACK):
            writer.write(os.urandom(BLOCK_BYTES))
        writer.close()
    assert raised.value.errno == errno.ENOSPC
    writer.abort()  # already closed or failed: a no-op, never hangs


QUEUE_SLACK = 16  # more blocks than the queue holds: a failed worker must not block writes


def test_the_switch_interval_is_restored_after_close_and_abort() -> None:
    before = sys.getswitchinterval()
    writer = CompressingWriter(io.BytesIO(), "gz")
    assert sys.getswitchinterval() <= before
    writer.write(b"data")
    writer.close()
    assert sys.getswitchinterval() == before
    aborted = CompressingWriter(io.BytesIO(), "xz")
    aborted.write(os.urandom(BLOCK_BYTES + 1))
    aborted.abort()
    assert sys.getswitchinterval() == before
    aborted.close()  # after abort: nothing to do
