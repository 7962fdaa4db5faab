"""`python -m bench.report [--quick]`: the docs/PERFORMANCE.md table from bench/results/.

Owns turning the result files into one markdown row per goal: what, the anchor's
figure, ours, the ratio, and whether the goal is met.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional

from bench.common import RESULTS_DIR

MB = 1024 * 1024


def _load(name: str, quick: bool) -> Optional[dict[str, Any]]:
    path = RESULTS_DIR / (f"{name}.quick.json" if quick else f"{name}.json")
    return json.loads(path.read_text()) if path.exists() else None


def _mb(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value / MB:.1f} MiB"


def _s(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _met(value: Optional[bool]) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[value]


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f} %"


def _x(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _footprint(d: dict[str, Any]) -> list[str]:
    agent = d["anchors"]["agent"]["rss_bytes"]
    ne = d["anchors"]["node_exporter"]
    g = d["guard"]
    return [
        "Guard RSS after start / after 24 h replay (growth after the first quarter)",
        f"agent {_mb(agent)}; node_exporter {_mb(ne['rss_idle_bytes'])} idle, "
        f"{_mb(ne['rss_after_10_scrapes_bytes'])} after 10 scrapes",
        f"{_mb(g['rss_after_start_bytes'])} / {_mb(g['rss_after_replay_bytes'])} "
        f"(+{_mb(g['growth_after_first_quarter_bytes'])})",
        _x(d["ratio_guard_to_agent"]),
        _met(d["goal_met"]),
    ]


def _idle(d: dict[str, Any]) -> list[str]:
    a = d["anchors"]
    g = d["guard"]
    return [
        f"Idle CPU over {d['window_seconds']:.0f} s (% of one core)",
        f"agent {_pct(a['agent']['percent_of_one_core'])}; node_exporter "
        f"{_pct(a['node_exporter']['percent_of_one_core'])}",
        f"{_pct(g['percent_of_one_core'])} (packaged, in the container: "
        f"{_pct(g['in_container_percent_of_one_core'])})",
        _x(d["ratio_guard_to_agent"]),
        _met(d["goal_met"]),
    ]


def _restart(d: dict[str, Any]) -> list[str]:
    g = d["guard_stock_unit"]
    up = (d.get("anchors") or {}).get("upstream_restart_always_5s") or {}
    stock = (d.get("anchors") or {}).get("stock_unit_alone") or {}
    return [
        f"kill -9 → agent active, p50 / p99 (n={g['n']})",
        f"upstream Restart=always+5s {_s(up.get('median'))} / {_s(up.get('p99'))}; "
        f"stock unit alone: never ({stock.get('never', 'n/a')} of {len(stock.get('samples', []))})",
        f"{_s(g['median'])} / {_s(g['p99'])}",
        _x(d["ratio_guard_to_upstream_median"]),
        _met(d["goal_met"]),
    ]


def _ingest(d: dict[str, Any]) -> list[str]:
    rate = d["lines_per_second"]
    small, big = d["guard_parse_rss_small_vs_big_bytes"]
    return [
        f"Log ingest, {d['log']['lines']:,} lines (lines/s, process wall); peak RSS on "
        f"{d['big_log']['bytes'] / 1024**3:.1f} GB",
        f"grep -c {rate['grep_c']:,}/s; grep -cE {rate['grep_cE_exact']:,}/s; "
        f"awk {rate['awk_count']:,}/s",
        f"{rate['guard_parse']:,}/s ({d['in_process_lines_per_second']:,}/s in process"
        + (
            f"; per-record path {rate['guard_reference']:,}/s, same signals: "
            f"{'yes' if d.get('same_signals_as_reference') else 'NO'}"
            if "guard_reference" in rate
            else ""
        )
        + "); "
        f"RSS {_mb(small)} → {_mb(big)} streamed, "
        f"{_mb(d['big_log']['runs']['guard_tail']['max_rss_bytes'])} via LogTailer",
        f"{_x(d['ratio_guard_to_grep_c'])} grep's time",
        _met(d["goal_met"]),
    ]


def _metrics(d: dict[str, Any]) -> list[str]:
    paced = d["phases"]["paced_1_per_second_each"]["latency"]
    flat = d["phases"]["back_to_back"]["latency"]
    return [
        "/metrics latency p50 / p99, 10 scrapers, probes hanging",
        "—",
        f"paced {_s(paced['median'])} / {_s(paced['p99'])}; back to back "
        f"{_s(flat['median'])} / {_s(flat['p99'])} (max {_s(flat['max'])})",
        "—",
        _met(d["goal_met"]),
    ]


def _doctor(d: dict[str, Any]) -> list[str]:
    s = d["guard"]["seconds"]
    return ["doctor, every endpoint hanging", "—", f"{_s(s['median'])} (max {_s(s['max'])})", "—",
            _met(d["goal_met"])]  # fmt: skip


def _bundle(d: dict[str, Any]) -> list[str]:
    g = d["guard"]
    t = d["anchor_tar_czf"]
    return [
        f"bundle of a {d['collected_bytes'] / MB:.0f} MB tree: time; peak RSS",
        f"tar czf {_s(t['seconds']['median'])}; {_mb(t['max_rss_bytes']['max'])}",
        f"{_s(g['seconds']['median'])}; {_mb(g['max_rss_bytes']['max'])}",
        _x(d["ratio_time"]),
        _met(d["goal_met"]),
    ]


def _status(d: dict[str, Any]) -> list[str]:
    host = d["host_demo_guest"]["guard_status_root"]["seconds"]["median"]
    return [
        "status cold start (wall)",
        f"systemctl status walinuxagent {_s(d['anchor_median_seconds'])}",
        f"{_s(d['ours_median_seconds'])} in the container ({_s(host)} on the host, demo guest)",
        _x(d["ratio"]),
        _met(d["goal_met"]),
    ]


ROWS: list[tuple[str, Callable[[dict[str, Any]], list[str]]]] = [
    ("footprint", _footprint),
    ("idle_cpu", _idle),
    ("restart", _restart),
    ("ingest", _ingest),
    ("metrics_latency", _metrics),
    ("bundle", _bundle),
    ("doctor", _doctor),
    ("status", _status),
]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    print("| What | Anchor (same run) | Ours | Ratio | Goal met? |")
    print("|---|---|---|---|---|")
    for name, row in ROWS:
        data = _load(name, quick)
        cells = row(data) if data else [name, "not run", "", "", "n/a"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
