"""The guard's log ingest, alone in a process: `python -m bench.ingest_worker MODE FILE`.

`parse`: the daemon's work on the file, `LogIngest.feed_block` (agent/ingest.py) on
slices of `READ_SLICE_BYTES`, each decoded once and cut after its last newline.
`tail`: the same, with the slices read by `LogTailer(from_start=True).read_blocks()`,
as the daemon reads them (daemon/logfeed.py LogFeed.consume).
`reference`: the per-record path (`RecordParser.feed` on every line and
`LogSignals.update` on every record), what the daemon did before and what `status`
still does: the "before" figure and the oracle, in the same run.
Prints `{"lines": N, "records": M, "seconds": S, "signals": {...}}`; the signals
(counts, levels, times, versions, events) must be the same in every mode.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timezone
from pathlib import Path


def main(argv: list[str]) -> int:
    from waagent_guard.agent.ingest import LogIngest
    from waagent_guard.agent.log import LogSignals, LogTailer, RecordParser
    from waagent_guard.agent.tail import READ_SLICE_BYTES

    mode, path = argv[0], Path(argv[1])
    lines = 0
    start = time.perf_counter()
    if mode == "reference":
        parser = RecordParser(tz=timezone.utc)
        signals = LogSignals()
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
        rest = b""
        with path.open("rb") as log:
            while True:
                data = log.read(READ_SLICE_BYTES)
                if not data:
                    break
                data = rest + data
                end = data.rfind(b"\n")
                if end < 0:
                    rest = data
                    continue
                rest = data[end + 1 :]
                lines += data.count(b"\n", 0, end + 1)
                ingest.feed_block(data[:end].decode("utf-8", "replace"))
        if rest:
            lines += 1
            ingest.feed_block(rest.decode("utf-8", "replace"))
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
                    lines += block.count("\n") + 1
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
