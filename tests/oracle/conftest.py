"""The `agent_oracle` fixture: Debian's waagent package, its code run in a subprocess.

See oracle_support.py for how the package is obtained and asked. Other oracle tests
(e.g. tests/oracle/test_process_oracle.py) reuse it: request `agent_oracle` and call
`agent_oracle.call(op, cases)` or `agent_oracle.run_script(code)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from oracle_support import DEFAULT_CACHE, AgentOracle, obtain_agent_oracle, unavailable


@pytest.fixture(scope="session")
def agent_oracle() -> Iterator[AgentOracle]:
    cache = Path(os.environ.get("WG_ORACLE_CACHE") or DEFAULT_CACHE)
    oracle, reason = obtain_agent_oracle(cache)
    if oracle is None:
        unavailable(reason)
    assert oracle is not None
    yield oracle
