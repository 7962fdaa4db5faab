"""The guard's log ingest, alone in a process: `python -m bench.ingest_worker MODE FILE`.

`parse`: stream the file line by line through `RecordParser.feed` and
`LogSignals.update`, the daemon's per-line work (daemon/logfeed.py LogFeed.consume).
`tail`: the same, with lines read by `LogTailer(from_start=True).read_lines()` in
bounded slices (`READ_SLICE_BYTES`), as the daemon reads them.
Prints `{"lines": N, "records": M, "seconds": S}`.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timezone
from pathlib import Path


def main(argv: list[str]) -> int:
    from waagent_guard.agent.log import LogSignals, LogTailer, RecordParser

    mode, path = argv[0], Path(argv[1])
    parser = RecordParser(tz=timezone.utc)
    signals = LogSignals()
    lines = records = 0
    start = time.perf_counter()
    if mode == "parse":
        with path.open(encoding="utf-8", errors="replace") as log:
            for raw in log:
                lines += 1
                for record in parser.feed(raw.rstrip("\n")):
                    signals.update(record)
                    records += 1
    else:
        from waagent_guard.agent.tail import READ_SLICE_BYTES

        with LogTailer(path, from_start=True) as tailer:
            while True:
                # As the daemon reads: one bounded slice per wake-up.
                batch = tailer.read_lines(max_bytes=READ_SLICE_BYTES)
                if not batch and not tailer.more_pending:
                    break
                for line in batch:
                    lines += 1
                    for record in parser.feed(line):
                        signals.update(record)
                        records += 1
    for record in parser.flush():
        signals.update(record)
        records += 1
    print(json.dumps({"lines": lines, "records": records, "seconds": time.perf_counter() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
