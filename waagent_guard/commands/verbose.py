"""`waagent-guard verbose on|off|status`: lease verbose agent logging.

With the daemon running, requests go over its control socket and the daemon
owns the lease (it reverts it at expiry). Without a daemon the command edits
waagent.conf itself, records the lease in the state file (so a daemon started
later still reverts it) and says that nothing will revert it until then.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Optional

from waagent_guard.context import Context
from waagent_guard.daemon.control import DaemonNotRunningError, request
from waagent_guard.errors import GuardError
from waagent_guard.lease import (
    begin_lease,
    end_lease,
    lease_duration,
    lease_summary,
    load_state,
)
from waagent_guard.observe import resolve_conf_path
from waagent_guard.timeutil import format_duration

# `verbose status --json` (keys are only ever added, like status/v1).
SCHEMA = "waagent-guard/verbose-status/v1"


def _who() -> str:
    from waagent_guard.daemon.leases import user_name

    return f"{user_name(os.getuid())} (uid {os.getuid()}, pid {os.getpid()}, no daemon)"


def _duration(args: argparse.Namespace, context: Context) -> float:
    return lease_duration(args.duration or None, context.settings().verbose)


def _send(context: Context, payload: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The daemon's answer, or None when no daemon is listening."""
    settings = context.settings()
    socket_path = context.sysroot.path(settings.control.socket)
    # The daemon answers after restarting the agent: allow the manager's timeout.
    timeout = settings.agent.command_timeout_seconds + 15.0
    try:
        return request(socket_path, payload, timeout=timeout)
    except DaemonNotRunningError:
        return None


def _restart_directly(context: Context) -> str:
    from waagent_guard.service import make_service_manager

    manager = make_service_manager(context.settings(), context.sysroot)
    manager.restart()
    return f"restarted {manager.unit}"


def _report(context: Context, answer: dict[str, Any], what: str) -> int:
    if not answer.get("ok", False):
        raise GuardError(f"{what}: {answer.get('error') or 'the daemon refused'}")
    lease = answer.get("lease")
    changed = "changed" if answer.get("changed") else "already set"
    if answer.get("restart") == "requested":
        restarted = "agent restart requested"
    else:
        restarted = "agent restarted" if answer.get("restarted") else "agent not restarted"
    line = f"{what}: Logs.Verbose {changed}, {restarted}"
    if lease:
        line += f"; reverts at {lease['expires_at_iso']}"
    print(line, file=context.stdout)
    return 0


def on(args: argparse.Namespace, context: Context) -> int:
    duration = _duration(args, context)
    payload = {
        "op": "verbose_on",
        "duration": duration,
        "reason": args.reason,
        "restart": not args.no_restart,
    }
    answer = _send(context, payload)
    if answer is not None:
        return _report(context, answer, "verbose on")
    settings = context.settings()
    state_path = context.sysroot.path(settings.daemon.state_file)
    conf_path = resolve_conf_path(context.sysroot, settings)
    _state, changed = begin_lease(
        conf_path,
        load_state(state_path),
        time.time(),
        duration,
        args.reason,
        _who(),
        state_path=state_path,
        sysroot=context.sysroot,
    )
    print(
        "warning: the guard daemon is not running: nothing reverts Logs.Verbose until it "
        "starts (it reverts an expired lease at start) or you run `waagent-guard verbose off`",
        file=context.stderr,
    )
    restarted = changed and not args.no_restart and bool(_restart_directly(context))
    return _report(
        context,
        {
            "ok": True,
            "changed": changed,
            "restarted": restarted,
            "lease": lease_summary(state_path),
        },
        "verbose on",
    )


def off(args: argparse.Namespace, context: Context) -> int:
    answer = _send(context, {"op": "verbose_off", "restart": not args.no_restart})
    if answer is not None:
        return _report(context, answer, "verbose off")
    settings = context.settings()
    state_path = context.sysroot.path(settings.daemon.state_file)
    conf_path = resolve_conf_path(context.sysroot, settings)
    state = load_state(state_path)
    if state.verbose_lease is None:
        print("verbose off: no lease to end", file=context.stdout)
        return 0
    new_state, changed = end_lease(conf_path, state, sysroot=context.sysroot)
    from waagent_guard.lease import save_state

    save_state(state_path, new_state)
    restarted = changed and not args.no_restart and bool(_restart_directly(context))
    return _report(context, {"ok": True, "changed": changed, "restarted": restarted}, "verbose off")


def status(args: argparse.Namespace, context: Context) -> int:
    from waagent_guard.agent.conf import agent_config, load_conf

    settings = context.settings()
    conf_path = resolve_conf_path(context.sysroot, settings)
    verbose = agent_config(load_conf(conf_path)).logs_verbose
    lease = lease_summary(context.sysroot.path(settings.daemon.state_file))
    if args.json:
        document = {"schema": SCHEMA, "logs_verbose": verbose, "lease": lease}
        json.dump(document, context.stdout, indent=2)
        context.stdout.write("\n")
        return 0
    print(
        f"Logs.Verbose: {'y' if verbose else 'n'} ({context.sysroot.host_path(conf_path)})",
        file=context.stdout,
    )
    if lease is None:
        print("lease: none", file=context.stdout)
    else:
        remaining = max(0.0, lease["expires_at"] - time.time())
        print(
            f"lease: until {lease['expires_at_iso']} ({format_duration(remaining)} left), "
            f"started by {lease['started_by'] or '?'}: {lease['reason'] or 'no reason given'}",
            file=context.stdout,
        )
    return 0
