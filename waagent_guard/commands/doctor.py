"""`waagent-guard doctor [--json] [--probe] [--no-probe] [--bundle FILE]`.

Wires the pieces: decide whether probes may run, gather facts (live, under
--root, or from a bundle unpacked safely by `bundle.read_bundle`), run every check, print the report
or the JSON document, exit 0 (all ok), 1 (warnings) or 2 (failures).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from waagent_guard.doctor.facts import FactSources, ProbePlan, gather_facts, probe_decision
from waagent_guard.doctor.findings import exit_code
from waagent_guard.doctor.render import document, render_text
from waagent_guard.doctor.runner import run_checks
from waagent_guard.errors import UsageError
from waagent_guard.settings import Settings
from waagent_guard.sysroot import Sysroot

if TYPE_CHECKING:
    from waagent_guard.context import Context

log = logging.getLogger(__name__)


def _manager(sysroot: Sysroot, settings: Settings) -> Any:
    """The live service manager, only for the running system (never under --root)."""
    from waagent_guard.service.factory import reading_manager

    return reading_manager(settings, sysroot)


def _lease(sysroot: Sysroot, settings: Settings) -> Optional[dict[str, Any]]:
    """The verbose-logging lease the guard holds, if any (read from its state file)."""
    from waagent_guard.lease import lease_summary

    try:
        return lease_summary(sysroot.path(settings.daemon.state_file))
    except Exception as error:  # an unreadable state file must not stop the diagnosis
        log.debug("cannot read the lease: %s", error)
        return None


def diagnose(args: argparse.Namespace, context: Context, sysroot: Sysroot, *,
             shown_root: str, bundle: bool, sources: Optional[FactSources] = None) -> int:
    settings = context.settings()
    plan = probe_decision(sysroot, settings.doctor.probe, probe_flag=bool(args.probe),
                          no_probe_flag=bool(args.no_probe))
    if bundle and plan.run and not args.probe:
        # doctor.probe = "always" means this host; a bundle is another VM's state.
        plan = ProbePlan(False, "diagnosing a bundle (probes would test this machine; "
                                "--probe forces)")
    if sources is None:
        sources = FactSources(manager=None if bundle else _manager(sysroot, settings),
                              verbose_lease=None if bundle else _lease(sysroot, settings))
    facts = gather_facts(sysroot, settings, plan, sources, offline=not sysroot.is_host or bundle,
                         bundle=bundle)
    findings = run_checks(facts, settings)
    if args.json:
        json.dump(document(findings, root=shown_root, probes_ran=plan.run,
                           probes_reason=plan.reason, generated_at=facts.now,
                           unreadable=facts.unreadable),
                  context.stdout, indent=2)
        context.stdout.write("\n")
    else:
        context.stdout.write(render_text(findings, root=shown_root, probes_ran=plan.run,
                                         probes_reason=plan.reason, generated_at=facts.now,
                                         unreadable=facts.unreadable))
    return exit_code(findings)


def run(args: argparse.Namespace, context: Context) -> int:
    if args.bundle is None:
        return diagnose(args, context, context.sysroot,
                        shown_root=str(context.sysroot.root), bundle=False)
    if not context.sysroot.is_host:
        raise UsageError("--bundle and --root exclude each other: --bundle FILE already "
                         "names the tree to diagnose")
    from waagent_guard.bundle import read_bundle

    archive = Path(args.bundle)
    # read_bundle extracts regular files only, into a private temporary directory.
    with read_bundle(archive) as contents:
        for problem in contents.problems:
            log.warning("%s: %s", archive, problem)
        return diagnose(args, context, contents.sysroot, shown_root=f"bundle:{archive}",
                        bundle=True)
