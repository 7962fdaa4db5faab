from __future__ import annotations

from collections.abc import Iterator
from typing import Callable

import pytest

from tests.integration.guard_harness import Daemon, Guest


@pytest.fixture
def make_guest() -> Iterator[Callable[..., Guest]]:
    guests: list[Guest] = []

    def make(*agent_args: str, extra: dict[str, dict[str, object]] | None = None) -> Guest:
        guest = Guest(agent_args, extra)
        guests.append(guest)
        return guest

    yield make
    for guest in guests:
        guest.cleanup()


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def make(guest: Guest, **options: int) -> Daemon:
        daemon = Daemon(guest, **options)
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        daemon.stop()
