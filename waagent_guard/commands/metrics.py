"""`waagent-guard metrics [--textfile DIR] [--probe]`: the daemon's families, rendered once.

For hosts that scrape node_exporter instead of the guard: a timer runs this with
`--textfile /var/lib/prometheus/node-exporter` and node_exporter's textfile
collector picks up `waagent_guard.prom`, which is replaced atomically.

The families are the daemon's (one collector, `exporter.guard_collector`): the
agent's, the doctor's verdicts (checks run here, without network probes unless
`--probe`), the restart history and verbose lease from the guard's state file,
and the running daemon's process families (found through its control socket).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
from pathlib import Path
from typing import Any, Optional

from waagent_guard.context import Context
from waagent_guard.daemon.exporter import guard_collector
from waagent_guard.errors import GuardError, UsageError
from waagent_guard.fsutil import atomic_write
from waagent_guard.metrics import CheckSample, MetricsInput, exposition, make_registry
from waagent_guard.observe import Observation, observe
from waagent_guard.service.factory import reading_manager
from waagent_guard.settings import Settings
from waagent_guard.sysroot import Sysroot

TEXTFILE_NAME = "waagent_guard.prom"
_UCRED = struct.Struct("3i")


def daemon_pid(socket_path: Path, *, timeout: float = 1.0) -> Optional[int]:
    """The PID of the daemon listening on its control socket (SO_PEERCRED), or None."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(str(socket_path))
            pid, _uid, _gid = _UCRED.unpack(
                client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
            # A well-formed request, so the daemon has nothing to complain about.
            with contextlib.suppress(OSError):
                client.sendall(b'{"op":"status"}\n')
    except OSError:
        return None
    return pid if pid > 0 else None


def doctor_samples(
    sysroot: Sysroot, settings: Settings, *, manager: Any, probe: bool, observation: Observation
) -> tuple[tuple[CheckSample, ...], bool]:
    """One doctor run as the daemon would export it (probes only when asked)."""
    from waagent_guard.doctor.facts import FactSources, gather_facts, probe_decision
    from waagent_guard.doctor.findings import backup_ready
    from waagent_guard.doctor.runner import run_checks
    from waagent_guard.lease import lease_summary

    plan = probe_decision(sysroot, settings.doctor.probe, probe_flag=probe, no_probe_flag=not probe)
    lease = None
    with contextlib.suppress(GuardError, OSError):
        lease = lease_summary(sysroot.path(settings.daemon.state_file))
    sources = FactSources(manager=manager, verbose_lease=lease)
    facts = gather_facts(sysroot, settings, plan, sources, observation=observation)
    findings = run_checks(facts, settings)
    samples = tuple(
        CheckSample(f.code, f.metric_value, f.duration_seconds, f.checked_at) for f in findings
    )
    return samples, backup_ready(findings)


def metrics_input(
    observation: Observation,
    settings: Settings,
    sysroot: Sysroot,
    *,
    checks: tuple[CheckSample, ...] = (),
    backup_ready: Optional[bool] = None,
) -> MetricsInput:
    """What the daemon would publish, rebuilt from the observation and the state file."""
    from waagent_guard.lease import load_state
    from waagent_guard.policy import PolicyState

    state = load_state(sysroot.path(settings.daemon.state_file), quarantine=False)
    try:
        gave_up = PolicyState.from_dict(state.restart_policy).gave_up_since is not None
    except GuardError:
        gave_up = False
    lease = state.verbose_lease
    return MetricsInput(
        observation=observation,
        restarts_by_reason=dict(state.restart_counts),
        gave_up=gave_up,
        lease_expiry=lease.expires_at if lease is not None else None,
        checks=checks,
        backup_ready=backup_ready,
        last_reconcile=observation.time,
    )


def run(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings()
    sysroot = context.sysroot
    manager = reading_manager(settings, sysroot)
    observation = observe(sysroot, settings, manager=manager)
    checks, ready = doctor_samples(
        sysroot, settings, manager=manager, probe=bool(args.probe), observation=observation
    )
    published = metrics_input(observation, settings, sysroot, checks=checks, backup_ready=ready)
    collector = guard_collector(lambda: published, checks=True, decisions=False)
    # The guard's process families describe the running daemon, not this short command.
    pid = daemon_pid(sysroot.path(settings.control.socket))
    data = exposition(make_registry(collector, process_metrics=pid is not None, process_pid=pid))
    if args.textfile is None:
        context.stdout.write(data.decode("utf-8"))
        return 0
    directory = Path(args.textfile)
    if not directory.is_dir():
        raise UsageError(f"--textfile {directory}: not a directory; create it or pass another")
    atomic_write(directory / TEXTFILE_NAME, data, mode=0o644)
    return 0
