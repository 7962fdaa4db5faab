"""Host-path globs of the bundle catalogue: where a walk starts, and matching a path.

Pure functions shared by `walk.py` (which directories to list, how deep) and
`plan.py` (which listed files an item takes); neither imports the other for them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Optional

_GLOB_CHARS = re.compile(r"[*?\[]")


def split_glob(glob: str) -> tuple[str, Optional[int]]:
    """`/var/lib/waagent/*/status/*.status` -> (`/var/lib/waagent`, 3); `**` -> depth None."""
    parts = PurePosixPath(glob).parts
    for index, part in enumerate(parts):
        if _GLOB_CHARS.search(part):
            base = str(PurePosixPath(*parts[:index]))
            rest = parts[index:]
            return base, None if "**" in rest else len(rest)
    return glob, 0


@lru_cache(maxsize=512)
def glob_regex(glob: str) -> re.Pattern[str]:
    """A host-path glob as a regex: `*`, `?` and `[...]` stay in one component, `**` crosses."""
    out = []
    index = 0
    while index < len(glob):
        char = glob[index]
        if glob.startswith("**", index):
            out.append(".*")
            index += 2
        elif char == "*":
            out.append("[^/]*")
            index += 1
        elif char == "?":
            out.append("[^/]")
            index += 1
        elif char == "[":
            close = glob.find("]", index + 1)
            if close < 0:
                out.append(re.escape(char))
                index += 1
            else:
                body = glob[index + 1:close].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                index = close + 1
        else:
            out.append(re.escape(char))
            index += 1
    return re.compile("".join(out) + r"\Z")
