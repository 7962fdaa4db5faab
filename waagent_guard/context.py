"""What every command needs from outside: the root, the config, the streams (injected).

Commands take a `Context`; tests build their own. The guard's config is loaded
once, on first use, so commands that do not need it never parse it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, TextIO

from waagent_guard.sysroot import GUARD_CONFIG, Sysroot

if TYPE_CHECKING:
    from waagent_guard.settings import Settings


@dataclass
class Context:
    """What every command needs from outside, injected (tests build their own)."""

    sysroot: Sysroot
    config_path: Optional[Path]
    debug: bool = False
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _settings: Optional[Settings] = None

    @property
    def effective_config_path(self) -> Path:
        if self.config_path is not None:
            return self.config_path
        return self.sysroot.path(GUARD_CONFIG)

    def settings(self) -> Settings:
        """The guard's config, loaded once; a missing default file means defaults."""
        if self._settings is None:
            from waagent_guard.settings import load_settings

            self._settings = load_settings(
                self.effective_config_path, required=self.config_path is not None
            )
        return self._settings
