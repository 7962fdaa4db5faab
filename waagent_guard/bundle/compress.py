"""Compressing the archive stream on a second thread, at `tar czf`'s level.

`tarfile` writes the uncompressed tar stream into `CompressingWriter`; whole 2 MiB
blocks go through a bounded queue to one worker thread that runs gzip (level 6,
gzip's and therefore `tar czf`'s default; tarfile's own `w:gz` uses 9, ~1.5x slower
for a few per cent smaller archives) or xz (preset 6, tarfile's default) and writes
the result. zlib and lzma release the GIL while they compress, so the redaction of
the next member runs meanwhile. Memory stays bounded: at most `QUEUE_BLOCKS` blocks
wait. A failure of the worker (a full disk) is raised, as the `OSError` it was, by
the next `write` or by `close`.
"""

from __future__ import annotations

import gzip
import lzma
import queue
import sys
import threading
from typing import BinaryIO, Optional, Union, cast

GZIP_LEVEL = 6
XZ_PRESET = 6
BLOCK_BYTES = 4 * 1024 * 1024
QUEUE_BLOCKS = 1  # one more waits while one is compressed: 12 MiB at most with the gathering
# Each block costs the worker a few hand-backs of the GIL (crc, compress, write), each
# waiting for the reading thread's next switch: with 1 MiB blocks that was about a third
# of the worker's time (py-spy). tarfile still writes 1 MiB pieces (`TAR_COPY_BYTES`);
# they are gathered here.
TAR_COPY_BYTES = 1024 * 1024
# The worker takes the GIL back three times per block (crc, compress, write); at
# Python's default 5 ms switch interval that wait alone slowed it by about a third.
SWITCH_INTERVAL = 0.0005


class _Counting:
    """The output file as the compressor sees it, counting the bytes written to it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.written = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class CompressingWriter:
    """A write-only file object for `tarfile.open(fileobj=..., mode="w")`."""

    def __init__(self, raw: BinaryIO, compression: str = "gz") -> None:
        self._file: Union[gzip.GzipFile, lzma.LZMAFile]
        self._raw = _Counting(raw)
        out = cast(BinaryIO, self._raw)
        if compression == "xz":
            self._file = lzma.LZMAFile(out, "wb", preset=XZ_PRESET)  # noqa: SIM115 (closed by the worker)
        else:
            self._file = gzip.GzipFile(
                filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL)
        self._pieces: list[bytes] = []
        self._pending = 0
        self._position = 0
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue(maxsize=QUEUE_BLOCKS)
        self._error: Optional[BaseException] = None
        self._closed = False
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))
        self._thread = threading.Thread(target=self._work, name="bundle-compress", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            block = self._queue.get()
            if block is None:
                break
            if self._error is None:
                try:
                    self._file.write(block)
                except BaseException as error:  # handed to the writer thread
                    self._error = error
        if self._error is None:
            try:
                self._file.close()
            except BaseException as error:
                self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> int:
        self._raise()
        self._position += len(data)
        # Pieces are kept (bytes are immutable) and joined once per block: one copy.
        self._pieces.append(data if type(data) is bytes else bytes(data))
        self._pending += len(data)
        if self._pending >= BLOCK_BYTES:
            self._flush()
        return len(data)

    def _flush(self) -> None:
        pieces = self._pieces
        self._pieces = []
        self._pending = 0
        self._queue.put(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def tell(self) -> int:
        return self._position

    @property
    def raw_bytes(self) -> int:
        """Compressed bytes written to the output so far (all of them after `close`)."""
        return self._raw.written

    def close(self) -> None:
        """Compress what is left, finish the stream, and raise the worker's failure."""
        if self._closed:
            return
        self._closed = True
        if self._pieces and self._error is None:
            self._flush()
        self._pieces = []
        self._queue.put(None)
        self._thread.join()
        sys.setswitchinterval(self._switch_interval)
        self._raise()

    def abort(self) -> None:
        """Stop the worker without raising (the caller is already failing)."""
        if self._closed:
            return
        self._closed = True
        self._error = self._error or RuntimeError("aborted")
        self._pieces = []
        self._queue.put(None)
        self._thread.join()
        sys.setswitchinterval(self._switch_interval)
