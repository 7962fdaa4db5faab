"""Helpers for tests that drop privileges to uid nobody."""

from __future__ import annotations

import pytest

_NOBODY_PROBE: list[str] = []


def require_nobody_python() -> None:
    """Skip unless uid nobody can run this interpreter and import the guard.

    The tests that drop to `nobody` need a Python and a checkout that nobody can
    read (a venv on Debian's /usr/bin/python3 under /work, as CI builds it; not
    a pyenv interpreter under /root). Under CI (`WG_REQUIRE_ALL=1`) a missing
    prerequisite fails instead of skipping.
    """
    import os
    import shutil
    import subprocess
    import sys

    if not _NOBODY_PROBE:
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            _NOBODY_PROBE.append("needs root and setpriv to drop to nobody")
        else:
            result = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-c", "import waagent_guard"],
                capture_output=True, text=True, timeout=60, check=False,
            )
            _NOBODY_PROBE.append(
                "" if result.returncode == 0
                else f"uid nobody cannot run {sys.executable} with the guard importable "
                     f"({result.stderr.strip()[-200:]}); build the venv with /usr/bin/python3 "
                     "in a directory others can read"
            )
    reason = _NOBODY_PROBE[0]
    if reason:
        if os.environ.get("WG_REQUIRE_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
