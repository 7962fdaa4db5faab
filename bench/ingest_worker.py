"""The guard's log ingest, alone in a process: `python -m bench.ingest_worker MODE FILE`.

`parse`: the daemon's work on the file, `LogIngest.feed_block` (agent/ingest.py) on
slices of `READ_SLICE_BYTES`, each decoded once and cut after its last newline.
`tail`: the same, with the slices read by `LogTailer(from_start=True).read_blocks()`,
as the daemon reads them (daemon/logfeed.py LogFeed.consume).
`reference`: the per-record path (`RecordParser.feed` on every line and
`LogSignals.update` on every record), what the daemon did before and what `status`
still does: the "before" figure and the oracle, in the same run.
Prints `{"lines": N, "records": M, "seconds": S, "signals": {...}}` (`lines` is null in
`parse` and `tail`: the daemon does not count lines, and a bare `bytes.count(b"\n")`
costs about a tenth of the ingest; the bench takes the file's lines from bench/corpus.py);
the signals
(counts, levels, times, versions, events) must be the same in every mode.
`floor`: the parts of `parse` that every line pays, timed alone over the same slices
and pieces: decoding, the one line search (records, levels and continuation lines), the
literal search of each anchor (event and heartbeat candidates; versions are looked for
from the end backwards and stop at the first lines that give them), and a bare
`str.count("\n")` as the cheapest pass.
Prints `{"lines": N, "seconds": {...}, "anchors": [...]}`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path
from typing import Any, Optional


def main(argv: list[str]) -> int:
    from waagent_guard.agent.ingest import LogIngest
    from waagent_guard.agent.log import LogSignals, LogTailer, RecordParser
    from waagent_guard.agent.tail import READ_SLICE_BYTES

    mode, path = argv[0], Path(argv[1])
    if mode == "floor":
        print(json.dumps(floor(path)))
        return 0
    lines: Optional[int] = None  # the daemon does not count lines: only `reference` does
    start = time.perf_counter()
    if mode == "reference":
        parser = RecordParser(tz=timezone.utc)
        signals = LogSignals()
        lines = 0
        with path.open(encoding="utf-8", errors="replace") as log:
            for raw in log:
                lines += 1
                for record in parser.feed(raw.rstrip("\n")):
                    signals.update(record)
        for record in parser.flush():
            signals.update(record)
    elif mode == "parse":
        ingest = LogIngest(tz=timezone.utc)
        signals = ingest.signals
        for data in _slices(path, READ_SLICE_BYTES):  # whole lines, without the last "\n"
            ingest.feed_block(data.decode("utf-8", "replace"))
        ingest.flush()
    else:
        ingest = LogIngest(tz=timezone.utc)
        signals = ingest.signals
        with LogTailer(path, from_start=True) as tailer:
            while True:
                # As the daemon reads: one bounded slice per wake-up.
                blocks = tailer.read_blocks(max_bytes=READ_SLICE_BYTES)
                if not blocks and not tailer.more_pending:
                    break
                for block in blocks:
                    ingest.feed_block(block)
        ingest.flush()
    seconds = time.perf_counter() - start
    document = {
        "lines": lines,
        "records": signals.record_count,
        "seconds": seconds,
        "signals": signals.to_dict(),
    }
    print(json.dumps(document))
    return 0


def _slices(path: Path, size: int) -> Iterator[bytes]:
    rest = b""
    with path.open("rb") as log:
        while True:
            data = log.read(size)
            if not data:
                break
            data = rest + data
            end = data.rfind(b"\n")
            rest = data[end + 1 :] if end >= 0 else data
            if end >= 0:
                yield data[:end]
    if rest:
        yield rest


def floor(path: Path) -> dict[str, Any]:
    from waagent_guard.agent.ingest import _LINE, PIECE_CHARS, LogIngest
    from waagent_guard.agent.tail import READ_SLICE_BYTES

    anchors = LogIngest()._anchors
    seconds = {"decode": 0.0, "newline_count": 0.0, "header_findall": 0.0, "anchor_search": 0.0}
    lines = 0
    for data in _slices(path, READ_SLICE_BYTES):
        start = time.perf_counter()
        block = data.decode("utf-8", "replace")
        seconds["decode"] += time.perf_counter() - start
        for at in range(0, len(block), PIECE_CHARS):
            piece = "\n" + block[at : at + PIECE_CHARS]
            start = time.perf_counter()
            lines += piece.count("\n") - (1 if at else 0)  # the "\n" put before a cut
            middle = time.perf_counter()
            _LINE.findall(piece)
            after = time.perf_counter()
            for anchor in anchors:
                piece.count(anchor)
            seconds["newline_count"] += middle - start
            seconds["header_findall"] += after - middle
            seconds["anchor_search"] += time.perf_counter() - after
    return {"lines": lines, "seconds": seconds, "anchors": list(anchors)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
