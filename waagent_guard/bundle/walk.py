"""The file listing a bundle plan is made from: directory walks under a sysroot.

Symlinks are resolved as if the sysroot were `/` (an absolute link in a mounted
disk points into that disk, never at the running host), and never followed
while walking: a link is listed with what it resolves to, and the plan decides
whether that target is something the catalogue collects anyway.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional

from waagent_guard.bundle.globs import split_glob
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

MAX_LINKS = 40
MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class ListedFile:
    """One directory entry; `path` is the host path the globs match and members are named by."""

    path: str
    kind: str  # file | dir | symlink | fifo | socket | device | other | unreadable-dir
    size: int = 0
    mtime: float = 0.0
    real: Optional[str] = None  # host path to open: the link's target, resolved in the root
    target_kind: Optional[str] = None  # for symlinks: the kind of what `real` is
    error: Optional[str] = None


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def resolve_in_root(sysroot: Sysroot, host_path: str) -> Optional[str]:
    """`host_path` with every symlink resolved inside the root; None if dangling or looping."""
    pending = deque(PurePosixPath(host_path).parts[1:])
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = sysroot.root.joinpath(*resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return None
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            return None
        try:
            target = PurePosixPath(os.readlink(candidate))
        except OSError:
            return None
        parts = target.parts
        if target.is_absolute():
            resolved = []
            parts = parts[1:]
        pending.extendleft(reversed(parts))
    return "/" + "/".join(resolved)


def _describe(sysroot: Sysroot, path: str, real_path: str) -> ListedFile:
    """The entry at logical `path`, whose physical location (parents resolved) is `real_path`."""
    try:
        info = os.lstat(sysroot.path(real_path))
    except FileNotFoundError:
        return ListedFile(path, "missing")
    except OSError as error:
        return ListedFile(path, "other", error=error.strerror or str(error))
    kind = kind_of(info.st_mode)
    if kind != "symlink":
        return ListedFile(path, kind, info.st_size, info.st_mtime, real=real_path)
    target = resolve_in_root(sysroot, real_path)
    if target is None:
        return ListedFile(path, "symlink", error="dangling or looping symlink")
    try:
        target_info = os.lstat(sysroot.path(target))
    except OSError as error:
        return ListedFile(path, "symlink", real=target, error=error.strerror or str(error))
    return ListedFile(path, "symlink", target_info.st_size, target_info.st_mtime, real=target,
                      target_kind=kind_of(target_info.st_mode))


def list_files(sysroot: Sysroot, globs: Iterable[str]) -> tuple[ListedFile, ...]:
    """Every entry under the globs' fixed prefixes, as deep as the globs reach (no dirs)."""
    bases: dict[str, Optional[int]] = {}
    for glob in globs:
        base, depth = split_glob(glob)
        if base in bases:
            known = bases[base]
            bases[base] = None if known is None or depth is None else max(known, depth)
        else:
            bases[base] = depth
    found: dict[str, ListedFile] = {}
    for base, depth in sorted(bases.items()):
        for entry in _walk_base(sysroot, base, depth):
            found.setdefault(entry.path, entry)
            if len(found) >= MAX_ENTRIES:
                log.warning("bundle listing stopped at %d entries", MAX_ENTRIES)
                return tuple(found.values())
    return tuple(found.values())


def _walk_base(sysroot: Sysroot, base: str, depth: Optional[int]) -> Iterable[ListedFile]:
    posix = PurePosixPath(base)
    if depth == 0:
        parent = resolve_in_root(sysroot, str(posix.parent))
        if parent is None:
            return
        entry = _describe(sysroot, base, str(PurePosixPath(parent) / posix.name))
        if entry.kind != "missing":
            yield entry
        return
    real_base = resolve_in_root(sysroot, base)
    if real_base is None:
        return
    stack: list[tuple[str, str, Optional[int]]] = [(base, real_base, depth)]
    while stack:
        logical, real, remaining = stack.pop()
        try:
            with os.scandir(sysroot.path(real)) as entries:
                names = sorted(entry.name for entry in entries)
        except NotADirectoryError:
            continue
        except OSError as error:
            yield ListedFile(logical, "unreadable-dir", error=error.strerror or str(error))
            continue
        for name in names:
            entry = _describe(sysroot, f"{logical.rstrip('/')}/{name}",
                              f"{real.rstrip('/')}/{name}")
            if entry.kind == "dir":
                if remaining is None or remaining > 1:
                    deeper = None if remaining is None else remaining - 1
                    stack.append((entry.path, entry.real or "", deeper))
                continue
            if entry.kind != "missing":
                yield entry
