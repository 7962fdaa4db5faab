"""The redaction rules' patterns compile on first use (issue 15: `status` start-up)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Callable

from hypothesis import given
from hypothesis import strategies as st

from waagent_guard.redact import LazyPattern, Regex


def test_importing_the_module_compiles_no_rule_pattern() -> None:
    code = (
        "import re, waagent_guard.redact as r\n"
        "fields = ('pattern', 'leak', 'begin', 'end', 'continues')\n"
        "lazy = [getattr(rule, f) for rule in r.DEFAULT_RULES for f in fields\n"
        "        if isinstance(getattr(rule, f, None), r.LazyPattern)]\n"
        "assert len(lazy) > 30, len(lazy)\n"
        "assert not [p for p in lazy if 'search' in vars(p)], 'compiled at import'\n"
        "print(len(lazy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


PATTERNS = [(rb"(?i)sig=([^&\s]+)", 0), (rb"^\s*key\s*[:=]\s*(\S+)", re.MULTILINE),
            (rb"(?!)", 0), (rb"M[A-I][A-Za-z0-9+/]{4,}", 0)]


def answers(make: Callable[[], Regex], data: bytes, pos: int, endpos: int) -> list[str]:
    """Every method's answer, each from `make()` (a fresh lazy pattern: its cold path)."""
    return [
        repr(make().search(data, pos, endpos)),
        repr(make().match(data, pos)),
        repr(make().fullmatch(data, pos, endpos)),
        repr([m.span() for m in make().finditer(data, pos)]),
        repr(make().sub(b"[R]", data, 1)),
    ]


@given(st.sampled_from(PATTERNS), st.binary(max_size=64), st.integers(0, 70),
       st.integers(0, 70))
def test_a_lazy_pattern_answers_like_the_compiled_one(
    source: tuple[bytes, int], data: bytes, pos: int, endpos: int
) -> None:
    data = b"x sig=ABC&y\n  key: MIIvalue\n" + data
    compiled = re.compile(*source)
    expected = answers(lambda: compiled, data, pos, endpos)
    assert answers(lambda: LazyPattern(*source), data, pos, endpos) == expected  # cold
    warm = LazyPattern(*source)
    assert warm.compiled().pattern == source[0]
    assert "search" in vars(warm)  # bound to the compiled pattern's own methods
    assert answers(lambda: warm, data, pos, endpos) == expected
