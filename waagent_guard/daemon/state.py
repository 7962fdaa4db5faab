"""state.json for the running daemon: loaded once, written whole on every change.

Each keeper owns its part of the document (`RestartKeeper`: `restart_policy`
and `restart_counts`; `LeaseKeeper`: `verbose_lease`) and hands it here to be
written; this module only keeps the last document and writes it atomically. A
failed write is logged, never fatal: the daemon carries on with what it knows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from waagent_guard.errors import GuardError
from waagent_guard.lease import GuardState, load_state, save_state

log = logging.getLogger(__name__)


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.document: GuardState = load_state(path)

    def save(self, document: GuardState) -> None:
        """Keep `document` and write it (a failed write is logged)."""
        self.document = document
        try:
            save_state(self.path, document)
        except GuardError as error:
            log.error("cannot save the guard's state: %s", error)

    def update(self, **parts: Any) -> None:
        """Replace some parts of the document and write it."""
        self.save(self.document.model_copy(update=parts))
