"""Row 7: `waagent-guard doctor --probe` when every endpoint hangs (accepts, never answers).

Every doctor target (WireServer, HostGAPlugin, IMDS, storage) is set to one loopback
port whose server accepts connections and never answers; the demo guest is the root.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from bench.box import Box
from bench.common import GUARD, time_runs, write_result
from bench.guest import HangServer, hanging_doctor_overrides

logger = logging.getLogger(__name__)


def run(*, quick: bool, box: Box) -> list[Path]:
    from waagent_guard.demo.guestctl import prepare_guest

    runs = 2 if quick else 10
    with tempfile.TemporaryDirectory(prefix="wg-bench-doctor-") as scratch, HangServer() as hang:
        guest = prepare_guest(
            Path(scratch) / "guest", 0, overrides=hanging_doctor_overrides(hang.port)
        ).resolve()
        config = guest / "etc/waagent-guard/guard.toml"
        timed = time_runs(
            [GUARD, "doctor", "--probe", "--json", "--root", guest, "--config", config],
            runs=runs,
            timeout=60,
        )
        hung = len(hang.accepted)
    median = timed["seconds"]["median"]
    return [
        write_result(
            "doctor",
            quick=quick,
            data={
                "what": "doctor wall time with every endpoint hanging (seconds)",
                "probe_timeout_seconds": 3.0,
                "connections_held_by_hang_server": hung,
                "guard": timed,
                "anchor": None,
                "goal": "< 5 s",
                "goal_met": median < 5.0 and timed["seconds"]["max"] < 5.0,
            },
        )
    ]
