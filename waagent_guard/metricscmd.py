"""`waagent-guard metrics [--textfile DIR]`: one observation, rendered as Prometheus text.

For hosts that scrape node_exporter instead of the guard: a timer runs this with
`--textfile /var/lib/prometheus/node-exporter` and node_exporter's textfile
collector picks up `waagent_guard.prom`, which is replaced atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from waagent_guard.cli import Context
from waagent_guard.errors import UsageError
from waagent_guard.exporter import guard_collector
from waagent_guard.fsutil import atomic_write
from waagent_guard.metrics import MetricsInput, exposition, make_registry
from waagent_guard.observe import observe
from waagent_guard.service.factory import reading_manager

TEXTFILE_NAME = "waagent_guard.prom"


def run(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings()
    manager = reading_manager(settings, context.sysroot)
    observation = observe(context.sysroot, settings, manager=manager)
    published = MetricsInput(observation=observation, last_reconcile=observation.time)
    collector = guard_collector(lambda: published, checks=False)
    # The guard's own process metrics describe this short-lived command, not the daemon.
    data = exposition(make_registry(collector, process_metrics=False))
    if args.textfile is None:
        context.stdout.write(data.decode("utf-8"))
        return 0
    directory = Path(args.textfile)
    if not directory.is_dir():
        raise UsageError(f"--textfile {directory}: not a directory; create it or pass another")
    atomic_write(directory / TEXTFILE_NAME, data, mode=0o644)
    return 0
