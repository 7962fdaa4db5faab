"""Realistic agent log text for the benchmarks, from the real lines in tests/data/log/.

Owns turning the collected real lines (every format generation, multi-line records)
into large logs: `real_records()` (each a list of physical lines), `write_log()`
(a mixed-format log of N lines or B bytes, streamed to disk).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from bench.common import REPO

logger = logging.getLogger(__name__)

DATA = REPO / "tests" / "data" / "log"


def real_records() -> list[list[str]]:
    """Records (head line + continuation lines) from the real-line collections."""
    records: list[list[str]] = []
    for name in ("log-lines.txt", "debian-waagent.log"):
        current: list[str] = []
        for raw in (DATA / name).read_text(encoding="utf-8").splitlines():
            if raw.startswith("#") or not raw.strip():
                if current:
                    records.append(current)
                    current = []
                continue
            starts = raw[:4].isdigit() and raw[4:5] in ("-", "/")
            if starts and current:
                records.append(current)
                current = []
            current.append(raw)
        if current:
            records.append(current)
    return records


def format1_messages() -> list[str]:
    """`LEVEL thread prefix message` of the real Debian 12 agent's lines (no timestamp)."""
    lines = (DATA / "debian-waagent.log").read_text(encoding="utf-8").splitlines()
    return [line.split(" ", 1)[1] for line in lines if line[:4].isdigit() and " " in line]


def record_stream(seed: int = 7) -> Iterator[list[str]]:
    records = real_records()
    rng = random.Random(seed)
    while True:
        yield rng.choice(records)


def write_log(
    path: Path, *, lines: Optional[int] = None, size_bytes: Optional[int] = None, seed: int = 7
) -> tuple[int, int]:
    """Write a mixed-format log of about `lines` lines or `size_bytes` bytes; (lines, bytes)."""
    written_lines = 0
    written_bytes = 0
    batch: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        for record in record_stream(seed):
            batch.extend(record)
            if len(batch) >= 4096:
                text = "\n".join(batch) + "\n"
                out.write(text)
                written_lines += len(batch)
                written_bytes += len(text.encode("utf-8"))
                batch = []
                if lines is not None and written_lines >= lines:
                    break
                if size_bytes is not None and written_bytes >= size_bytes:
                    break
    return written_lines, written_bytes
