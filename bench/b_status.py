"""Row 8: `waagent-guard status` cold start (CLI wall time) vs `systemctl status walinuxagent`.

In the container both run inside it (timed there, so entering the container is not
counted), against the real agent. On the host `status --root <demo guest>` is timed
too, with `python -c pass` as the interpreter's floor.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Optional

from bench.box import AGENT_UNIT, Box
from bench.common import GUARD, PYTHON, ratio, summary, time_runs, write_result

logger = logging.getLogger(__name__)

VENV_PYTHON = "/usr/lib/waagent-guard/venv/bin/python"  # the packaged venv (packaging.md)
FLOORS = {
    "python_floor": "pass",
    "pydantic_floor": "from pydantic import BaseModel, ConfigDict, Field, ValidationError",
    "settings_floor": "import waagent_guard.settings",
}


def run(*, quick: bool, box: Box) -> list[Path]:
    runs = 3 if quick else 30
    inside: Optional[dict[str, Any]] = None
    if box.open() and box.guard_installed:
        ours_run = box.script("time-cmd", "--runs", str(runs), "waagent-guard", "status")
        anchor_run = box.script("time-cmd", "--runs", str(runs), "systemctl", "status", AGENT_UNIT)
        inside = {
            "guard_status": {
                **summary(ours_run["seconds"]),
                "returncodes": ours_run["returncodes"],
            },
            "systemctl_status": {
                **summary(anchor_run["seconds"]),
                "returncodes": anchor_run["returncodes"],
            },
        }
        # What the packaged interpreter costs before any guard code (row 8's floor): its
        # start; its start plus the declared dependency that validates the config; and
        # plus the settings models pydantic builds from waagent_guard/settings.py.
        for name, code in FLOORS.items():
            floor = box.script("time-cmd", "--runs", str(runs), "--", VENV_PYTHON, "-c", code)
            inside[name] = {**summary(floor["seconds"]), "returncodes": floor["returncodes"],
                            "code": code}
    from waagent_guard.demo.guestctl import prepare_guest

    with tempfile.TemporaryDirectory(prefix="wg-bench-status-") as scratch:
        guest = prepare_guest(Path(scratch) / "guest", 0).resolve()
        host = {
            "guard_status_root": time_runs(
                [
                    GUARD,
                    "status",
                    "--root",
                    guest,
                    "--config",
                    guest / "etc/waagent-guard/guard.toml",
                ],
                runs=runs,
            ),
            "guard_status_json_root": time_runs(
                [
                    GUARD,
                    "status",
                    "--json",
                    "--root",
                    guest,
                    "--config",
                    guest / "etc/waagent-guard/guard.toml",
                ],
                runs=runs,
            ),
            "python_floor": time_runs([PYTHON, "-c", "pass"], runs=runs),
        }
    ours: Any = (
        inside["guard_status"]["median"]
        if inside
        else host["guard_status_root"]["seconds"]["median"]
    )
    anchor: Any = inside["systemctl_status"]["median"] if inside else None
    return [
        write_result(
            "status",
            quick=quick,
            data={
                "what": "status cold start, CLI wall time (seconds)",
                "notes": None if inside else (box.reason or "guard not installed in the container"),
                "in_container": inside,
                "host_demo_guest": host,
                "ours_median_seconds": ours,
                "anchor_median_seconds": anchor,
                "ratio": ratio(ours, anchor),
                "goal": "<= 150 ms (issue 15)",
                "goal_met": ours <= 0.15,
            },
        )
    ]
