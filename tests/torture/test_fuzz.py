"""Torture: 2,000 fuzzed guest trees x status, doctor, metrics, bundle (issue 14 items 5 and 6).

The deterministic mutator of tests/fuzzing.py replaces files with FIFOs, devices,
/dev/zero links, loops, directories, truncated/NUL/huge/garbage content, deep
JSON, absurd numbers and timestamps, flipped names; each command runs in-process
under --root with an 8 s watchdog (the issue's definition of a hang). A crash
is exit 70 or an exception; documented exits are OK. Doctor runs --no-probe with
loopback probe targets: nothing leaves the machine.
"""

from __future__ import annotations

import os

from tests import fuzzing
from tests.torture.conftest import report

SEED = int(os.environ.get("WG_FUZZ_SEED", "2026"))
CASES = int(os.environ.get("WG_FUZZ_CASES", "2000"))


def test_two_thousand_fuzzed_trees_through_four_commands_never_crash_or_hang() -> None:
    stats = fuzzing.campaign(SEED, CASES, timeout=8.0)
    kinds = "; ".join(f"{count}x {kind}" for kind, count in stats.kinds.most_common(10))
    report("fuzz", f"seed {SEED}: {stats.summary()}" + (f" [{kinds}]" if kinds else ""))
    assert stats.cases == CASES
    assert stats.runs == CASES * len(fuzzing.COMMANDS)
    assert stats.failures == 0, {kind: stats.examples[kind] for kind in stats.kinds}
