"""`python -m bench.run [--quick] [--only NAME,...]`: run the benchmarks, write results.

Owns the order (the ones that need the shared e2e container share one boot) and
the smoke check of quick mode: every benchmark must run and write valid JSON. It
never asserts a timing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

from bench.box import Box

logger = logging.getLogger(__name__)

# module -> the result files it writes
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "b_footprint": ("footprint", "idle_cpu"),
    "b_restart": ("restart",),
    "b_status": ("status",),
    "b_ingest": ("ingest",),
    "b_metrics": ("metrics_latency",),
    "b_doctor": ("doctor",),
    "b_bundle": ("bundle",),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (~2 minutes)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated result names: "
        + ", ".join(n for names in BENCHMARKS.values() for n in names),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s")
    wanted = {name for name in args.only.split(",") if name}
    known = {n for names in BENCHMARKS.values() for n in names}
    if wanted - known:
        parser.error(f"--only: unknown {', '.join(sorted(wanted - known))}; known: {sorted(known)}")
    box = Box(quick=args.quick)
    failures: list[str] = []
    written: list[Path] = []
    try:
        for module_name, names in BENCHMARKS.items():
            if wanted and not wanted & set(names):
                continue
            started = time.monotonic()
            logger.info("%s ...", module_name)
            module = importlib.import_module(f"bench.{module_name}")
            try:
                paths: list[Path] = module.run(quick=args.quick, box=box)
            except Exception as error:
                logger.exception("%s failed", module_name)
                failures.append(f"{module_name}: {error}")
                continue
            for path in paths:
                json.loads(path.read_text())  # valid JSON, or the smoke test fails
                written.append(path)
            logger.info("%s done in %.1fs", module_name, time.monotonic() - started)
    finally:
        box.close()
    for path in written:
        print(f"wrote {path}")
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
