"""`waagent-guard agent ...`: commands that act on the agent's service unit.

`agent ensure-autorestart [--dry-run]` installs the systemd drop-in from
`autorestart.py` so systemd restarts the agent itself, then reloads systemd and
checks that the unit now reports an automatic restart policy.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Callable, Optional

from waagent_guard.service import CommandRunner, ServiceManager, make_service_manager
from waagent_guard.service.autorestart import autorestart_configured, ensure_drop_in

if TYPE_CHECKING:
    from waagent_guard.context import Context
    from waagent_guard.settings import Settings
    from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

ManagerFactory = Callable[["Settings", "Sysroot", Optional[CommandRunner]], ServiceManager]


def _systemd_is_live(sysroot: Sysroot) -> bool:
    """Whether a systemd runs this tree: the host, or a tree with /run/systemd/system."""
    return sysroot.is_host or sysroot.path("/run/systemd/system").is_dir()


def ensure_autorestart(
    args: argparse.Namespace, context: Context, *,
    manager_factory: ManagerFactory = make_service_manager,
) -> int:
    """Install the auto-restart drop-in; 0 when the unit restarts itself afterwards."""
    sysroot = context.sysroot
    manager = manager_factory(context.settings(), sysroot, None)
    dry_run = bool(getattr(args, "dry_run", False))
    live = _systemd_is_live(sysroot)
    result = ensure_drop_in(sysroot, manager, dry_run=dry_run, reload=live)
    shown = sysroot.host_path(result.path)
    out = context.stdout
    if not result.changed:
        print(f"already configured: {shown}", file=out)
        return 0
    if dry_run:
        print(f"would write {shown}:", file=out)
        out.write(result.content)
        print("(dry run: nothing changed)", file=out)
        return 0
    print(f"wrote {shown}", file=out)
    if not result.reloaded:
        print(
            f"not reloading systemd: {sysroot.root} is not a running system; it takes effect "
            "at its next boot (or run `systemctl daemon-reload` there)",
            file=out,
        )
        return 0
    print("reloaded systemd (systemctl daemon-reload)", file=out)
    state = manager.state()
    if not autorestart_configured(state):
        drop_ins = " ".join(state.drop_in_paths) or "none reported"
        print(
            f"warning: {manager.unit} still reports Restart={state.restart}; a drop-in that "
            f"sorts later may override it (drop-ins: {drop_ins})",
            file=out,
        )
        return 1
    print(f"{manager.unit} now restarts itself (Restart={state.restart})", file=out)
    return 0
