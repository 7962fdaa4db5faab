"""The standing torture suite (`make torture`, also in CI): hostile loads and faults.

Every load is on loopback, every process is the suite's own (ended by PID).
Each test prints one figure line through `report()` ("TORTURE <name>: ..."),
which `make torture` shows; docs/SECURITY.md quotes them. The suite is left
out of `make test` (it takes minutes): it runs only with WG_TORTURE=1.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("WG_TORTURE") == "1":
        return
    skip = pytest.mark.skip(reason="torture suite: run `make torture` (WG_TORTURE=1)")
    for item in items:
        if "tests/torture/" in str(item.fspath):
            item.add_marker(skip)


def report(name: str, figure: str) -> None:
    """One figure line for the torture summary (printed even when pytest captures output)."""
    line = f"TORTURE {name}: {figure}\n"
    with open(os.environ.get("WG_TORTURE_REPORT", os.devnull), "a", encoding="utf-8") as out:
        out.write(line)
    print(line, end="")
