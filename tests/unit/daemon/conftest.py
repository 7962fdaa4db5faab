"""In-process daemon tests: a `World` (temp root, fake /proc, fake manager, fake clocks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    box = World(tmp_path)
    yield box
    box.close()
