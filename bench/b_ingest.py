"""Row 4: log ingest throughput (1M-line mixed-format log) and peak memory (2 GB log)
vs `grep -c` and `awk` on the same file.

`guard_parse`/`guard_tail` are the daemon's ingest (`LogIngest`, whole slices);
`guard_reference` is the per-record path it replaced (the "before" of the same run). The
three must give the same signals (counts, levels, times, versions, events): the result
says so in `same_signals_as_reference`.

The logs are written from the real lines in tests/data/log/ (every format, multi-line
records) and deleted afterwards. Wall times: hyperfine (`--output=pipe`) when
installed, else the median of N runs; peak RSS: GNU time's %M of each program alone.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.box import Box
from bench.common import (
    PYTHON,
    REPO,
    clean_env,
    hyperfine,
    ratio,
    run_measured,
    time_runs,
    write_result,
)
from bench.corpus import write_log

logger = logging.getLogger(__name__)

GREP_EXACT = r"^[0-9]{4}[-/][0-9]{2}[-/][0-9]{2}[T ][0-9:.]+Z? (ERROR|WARNING) "


def _programs(log: Path) -> dict[str, list[str]]:
    worker = [str(PYTHON), "-m", "bench.ingest_worker"]
    return {
        "guard_parse": [*worker, "parse", str(log)],
        "guard_tail": [*worker, "tail", str(log)],
        "guard_reference": [*worker, "reference", str(log)],
        "grep_c": ["grep", "-c", " ERROR ", str(log)],
        "grep_cE_exact": ["grep", "-cE", GREP_EXACT, str(log)],
        "awk_count": ["awk", '$2 == "ERROR" { n++ } END { print n }', str(log)],
    }


def _worker_json(argv: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
        env=clean_env(),
        cwd=str(REPO),
    )
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def run(*, quick: bool, box: Box) -> list[Path]:
    line_count = 50_000 if quick else 1_000_000
    big_bytes = 50 * 1024 * 1024 if quick else 2 * 1024**3
    runs = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="wg-bench-ingest-", dir="/var/tmp") as scratch:
        log = Path(scratch) / "waagent.log"
        lines, size = write_log(log, lines=line_count)
        programs = _programs(log)
        worker = _worker_json(programs["guard_parse"])
        reference = _worker_json(programs["guard_reference"])
        tail = _worker_json(programs["guard_tail"])
        same = worker["signals"] == reference["signals"] == tail["signals"]
        floor = _worker_json([str(PYTHON), "-m", "bench.ingest_worker", "floor", str(log)])
        walls = hyperfine(programs, runs=runs) if not quick else None
        timed = {
            name: time_runs(argv, runs=runs, cwd=REPO, timeout=3600)
            for name, argv in programs.items()
        }
        log.unlink()
        big = Path(scratch) / "big.log"
        big_lines, big_size = write_log(big, size_bytes=big_bytes, seed=11)
        memory = {
            name: run_measured(argv, timeout=7200, cwd=REPO).__dict__
            for name, argv in _programs(big).items()
            if name in ("guard_parse", "guard_tail", "grep_c", "awk_count")
        }
        big.unlink()
    median = {
        name: (walls[name]["median"] if walls else t["seconds"]["median"])
        for name, t in timed.items()
    }
    rate = {name: round(lines / seconds) for name, seconds in median.items() if seconds}
    small_rss = timed["guard_parse"]["max_rss_bytes"]["median"]
    big_rss = memory["guard_parse"]["max_rss_bytes"]
    ours = median["guard_parse"]
    within = ratio(ours, median["grep_c"])
    return [
        write_result(
            "ingest",
            quick=quick,
            data={
                "what": "lines/s through the daemon's log ingest (LogIngest) and the per-record"
                " path it replaced; peak RSS on a big log",
                "log": {"lines": lines, "bytes": size, "records": worker["records"]},
                "in_process_lines_per_second": round(lines / worker["seconds"]),
                "in_process_records_per_second": round(worker["records"] / worker["seconds"]),
                "in_process_lines_per_second_reference": round(lines / reference["seconds"]),
                "same_signals_as_reference": same,
                "signals": worker["signals"],
                "timing_tool": "hyperfine --output=pipe" if walls else "median of subprocess runs",
                "wall_seconds_median": median,
                "lines_per_second": rate,
                "runs": {"hyperfine": walls, "measured": timed},
                "big_log": {"lines": big_lines, "bytes": big_size, "runs": memory},
                "guard_parse_rss_small_vs_big_bytes": [small_rss, big_rss],
                "ratio_guard_to_grep_c": within,
                "ratio_guard_to_awk": ratio(ours, median["awk_count"]),
                "ratio_guard_to_reference": ratio(ours, median["guard_reference"]),
                # What any exact ingest in this process pays per line, timed alone: the
                # one header search and decoding are the floor of exact counting; each
                # literal anchor adds one more search over the text.
                "floor": {
                    **floor,
                    "lines_per_second_decode_and_headers": round(
                        lines / (floor["seconds"]["decode"] + floor["seconds"]["header_findall"])
                    ),
                    "lines_per_second_decode_headers_anchors": round(
                        lines
                        / (
                            floor["seconds"]["decode"]
                            + floor["seconds"]["header_findall"]
                            + floor["seconds"]["anchor_search"]
                        )
                    ),
                },
                "goal": ">= 1.5M lines/s (issue 15) with the same signals as the per-record"
                " path; memory constant",
                "goal_met": rate.get("guard_parse", 0) >= 1_500_000
                and same
                and big_rss <= small_rss + 8 * 1024 * 1024,
            },
        )
    ]
