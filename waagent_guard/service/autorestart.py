"""The systemd drop-in that makes systemd restart the agent itself, and checking for it.

The troubleshooting guide asks to "configure the agent to restart
automatically"; Debian 12's packaged unit has `Restart=no`, so after a crash
the agent stays down. `ensure_drop_in` installs
`/etc/systemd/system/<unit>.d/50-waagent-guard-autorestart.conf` (atomically,
idempotently) and reloads systemd. `autorestart_configured` tells from a
`UnitState` whether the unit restarts itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from waagent_guard.errors import UsageError, write_failure
from waagent_guard.fsutil import atomic_write, make_directory, read_file
from waagent_guard.service import ServiceManager, UnitState
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

DROP_IN_DIR = "/etc/systemd/system"
MAX_DROP_IN_BYTES = 64 * 1024
DROP_IN_NAME = "50-waagent-guard-autorestart.conf"

DROP_IN_TEXT = """\
# Installed by `waagent-guard agent ensure-autorestart`; remove this file and run
# `systemctl daemon-reload` to undo. The guard rewrites it only if its content differs.
[Unit]
# A crash loop must end up visible as `failed` (Result=start-limit-hit) instead of
# restarting forever: with RestartSec=5, 5 starts take at least 20 s, so a unit
# that dies at every start fails within a minute, and the guard (which resets
# it under its own slower budget) and `systemctl --failed` both see it. Five in
# ten minutes still leaves room for deliberate restarts (verbose on/off, updates).
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# Restart after any exit: the agent also exits 0 when it refuses to run, and
# Debian's packaged unit ships Restart=no, which leaves a killed agent down.
Restart=always
# Upstream's own value. It keeps the daemon well clear of the agent's rule that
# blacklists a version relaunched 3 times within 300 s, and of systemd's
# default start limit (5 in 10 s), which 100 ms restarts would trip at once.
RestartSec=5
"""


@dataclass(frozen=True)
class DropInResult:
    path: Path
    content: str
    changed: bool  # False: already configured (or a dry run that would change nothing)
    reloaded: bool


def autorestart_configured(unit_state: UnitState) -> bool:
    """Whether the unit's manager restarts the agent after a crash (Restart=always, ...)."""
    return unit_state.autorestart


def drop_in_path(sysroot: Sysroot, unit: str) -> Path:
    return sysroot.path(f"{DROP_IN_DIR}/{unit}.d/{DROP_IN_NAME}")


def ensure_drop_in(
    sysroot: Sysroot, manager: ServiceManager, *, dry_run: bool = False, reload: bool = True
) -> DropInResult:
    """Install the drop-in for `manager.unit` unless it is there already; reload systemd."""
    if manager.name != "systemd":
        raise UsageError(
            f"ensure-autorestart: drop-ins are a systemd feature, but the agent is managed by "
            f"{manager.name}; make that init system respawn {manager.unit} instead, or set "
            'agent.manager = "systemd" in guard.toml if systemd runs the agent'
        )
    path = drop_in_path(sysroot, manager.unit)
    data = DROP_IN_TEXT.encode("utf-8")
    try:
        current = read_file(path, MAX_DROP_IN_BYTES, oversize="truncate")[0]
    except (FileNotFoundError, NotADirectoryError):  # absent; mkdir below says why
        current = None
    except OSError as error:
        raise write_failure(f"{path}: cannot read: {error.strerror or error}", error) from error
    if current == data:
        return DropInResult(path, DROP_IN_TEXT, changed=False, reloaded=False)
    if dry_run:
        return DropInResult(path, DROP_IN_TEXT, changed=True, reloaded=False)
    make_directory(
        path.parent,
        mode=0o755,
        hint="the agent unit's drop-ins go there: run as root, or move away a file in its way",
    )
    atomic_write(path, data, mode=0o644)
    log.info("wrote %s", sysroot.host_path(path))
    if reload:
        manager.daemon_reload()
    return DropInResult(path, DROP_IN_TEXT, changed=True, reloaded=reload)
