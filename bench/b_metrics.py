"""Row 5: `/metrics` latency with 10 concurrent scrapers while a doctor probe hangs.

The guard runs against the demo guest with `doctor.probe = "always"`, every doctor
target on a loopback port that accepts and never answers, `doctor.interval_seconds
= 1` and the longest probe timeout (4.5 s), so a probe is hanging almost all the
time. Ten scraper processes (not threads: no shared GIL on the client side) scrape
back to back; each latency is one full HTTP request on a new connection.
"""

from __future__ import annotations

import http.client
import logging
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.box import Box
from bench.common import cpu_seconds, summary, write_result
from bench.guest import HangServer, hanging_doctor_overrides, running_guard

logger = logging.getLogger(__name__)

SCRAPERS = 10


def _scrape_for(args: tuple[int, float, float]) -> tuple[list[float], int, int]:
    """Scrape for `seconds`, starting one scrape every `pace` seconds (0: back to back)."""
    port, seconds, pace = args
    latencies: list[float] = []
    errors = 0
    size = 0
    deadline = time.monotonic() + seconds
    next_start = time.monotonic()
    while time.monotonic() < deadline:
        if pace:
            time.sleep(max(0.0, next_start - time.monotonic()))
            next_start += pace
        start = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/metrics")
            body = connection.getresponse().read()
            connection.close()
        except OSError:
            errors += 1
            continue
        latencies.append(time.perf_counter() - start)
        size = len(body)
    return latencies, errors, size


def run(*, quick: bool, box: Box) -> list[Path]:
    seconds = 3.0 if quick else 60.0
    with tempfile.TemporaryDirectory(prefix="wg-bench-metrics-") as scratch, HangServer() as hang:
        overrides = hanging_doctor_overrides(hang.port)
        overrides["doctor"].update({"interval_seconds": 1, "timeout_seconds": 4.5})
        with running_guard(Path(scratch) / "guest", overrides=overrides) as guard:
            time.sleep(2.0)  # the first doctor run is under way (hanging)
            held_before = len(hang.accepted)
            context = multiprocessing.get_context("spawn")
            phases: dict[str, dict[str, Any]] = {}
            with context.Pool(SCRAPERS) as pool:
                for phase, pace in (("paced_1_per_second_each", 1.0), ("back_to_back", 0.0)):
                    cpu_before = cpu_seconds(guard.pid)
                    results = pool.map(_scrape_for, [(guard.port, seconds, pace)] * SCRAPERS)
                    cpu_after = cpu_seconds(guard.pid)
                    latencies = [value for lat, _, _ in results for value in lat]
                    phases[phase] = {
                        "scrapes": len(latencies),
                        "errors": sum(e for _, e, _ in results),
                        "latency": summary(latencies),
                        "over_100ms": sum(1 for v in latencies if v > 0.1),
                        "guard_cpu_per_scrape_seconds": (
                            None
                            if not latencies or cpu_before is None or cpu_after is None
                            else round((cpu_after - cpu_before) / len(latencies), 6)
                        ),
                        "response_bytes": results[0][2] if results else None,
                    }
            held_after = len(hang.accepted)
            body = guard.scrape().decode()
    paced = phases["paced_1_per_second_each"]
    stats = paced["latency"]
    probe_durations = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("waagent_guard_check_duration_seconds{") and "WG-NET" in line
    }
    return [
        write_result(
            "metrics_latency",
            quick=quick,
            data={
                "what": "/metrics latency with 10 concurrent scrapers while probes hang (seconds)",
                "scrapers": SCRAPERS,
                "duration_seconds": seconds,
                "phases": phases,
                "hang_connections_during_scrapes": held_after - held_before,
                "probe_check_durations_seconds": probe_durations,
                "anchor": None,
                "goal": "p99 < 10 ms (judged on the paced phase; back_to_back saturates 2 vCPUs)",
                "goal_met": (
                    None if stats["p99"] is None else paced["errors"] == 0 and stats["p99"] < 0.010
                ),
            },
        )
    ]
