"""Reading bundle archives back: `read_bundle`.

(The fail-closed verification of a bundle being written is `verify.VerifyingWriter`:
it scans the tar stream on its way to the compressor.) `read_bundle` is for
`doctor --bundle`: it extracts regular
members only, by hand, into a fresh private temporary directory (no absolute
names, no `..`, no links or devices, bounded sizes), so a hostile archive can
neither write outside that directory nor exhaust memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Optional

from waagent_guard.errors import InputError
from waagent_guard.fsutil import open_regular
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
READ_LIMIT_BYTES = 1024 * 1024 * 1024
MANIFEST_LIMIT_BYTES = 64 * 1024 * 1024
_COPY_CHUNK = 64 * 1024


@dataclass
class BundleContents:
    """An extracted bundle: `root` mirrors the source paths (`root / "var/log/waagent.log"`)."""

    archive: Path
    top: str
    root: Path
    members: tuple[str, ...]  # relative to the top folder, e.g. "var/log/waagent.log"
    manifest: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    _temporary: Optional[Path] = None

    @property
    def sysroot(self) -> Sysroot:
        """The bundle as a sysroot, so readers of a live system can read it unchanged."""
        return Sysroot(self.root)

    def path(self, host_path: str) -> Path:
        return self.sysroot.path(host_path)

    def read_bytes(self, member: str) -> bytes:
        """A member by its path relative to the top folder (or a host path: `/var/log/x`)."""
        relative = member.lstrip("/")
        if relative not in self.members:
            raise KeyError(member)
        return (self.root / relative).read_bytes()

    def close(self) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def __enter__(self) -> BundleContents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe_parts(name: str) -> Optional[tuple[str, ...]]:
    posix = PurePosixPath(name)
    parts = posix.parts
    if posix.is_absolute() or not parts or any(part in ("..", ".", "") for part in parts):
        return None
    if any("\x00" in part for part in parts):
        return None
    return parts


def read_bundle(path: Path, *, max_total_bytes: int = READ_LIMIT_BYTES,
                temp_parent: Optional[Path] = None) -> BundleContents:
    """Extract a bundle safely into a private temporary directory; close() removes it."""
    path = Path(path)
    temporary = Path(tempfile.mkdtemp(prefix="waagent-guard-bundle.", dir=temp_parent))
    contents = BundleContents(path, "", temporary / "tree", (), {}, [], temporary)
    try:
        _extract(path, contents, max_total_bytes)
    except BaseException:
        contents.close()
        raise
    return contents


def _extract(path: Path, contents: BundleContents, max_total_bytes: int) -> None:
    root = contents.root
    root.mkdir(mode=0o700)
    total = 0
    members: list[str] = []
    handle: Optional[BinaryIO] = None
    try:
        # The one opener: a FIFO or device given as --bundle is refused, never read.
        handle = os.fdopen(open_regular(path), "rb")
        archive = tarfile.open(fileobj=handle, mode="r:*")  # noqa: SIM115 (closed below)
    except FileNotFoundError as error:
        raise InputError(f"{path}: no such bundle; pass the archive `waagent-guard bundle` "
                         "wrote") from error
    except (tarfile.TarError, OSError) as error:
        if handle is not None:
            handle.close()
        reason = getattr(error, "strerror", None) or (
            str(error).splitlines() or [type(error).__name__])[0]
        first = reason.rstrip(":")
        raise InputError(f"{path}: not a bundle archive (tar.gz or tar.xz): {first}; "
                         "pass the archive `waagent-guard bundle` wrote") from error
    with handle, archive:
        try:
            for member in archive:
                parts = _safe_parts(member.name)
                if parts is None:
                    contents.problems.append(f"{member.name!r}: unsafe member name, ignored")
                    continue
                if not contents.top:
                    contents.top = parts[0]
                if parts[0] != contents.top or len(parts) < 2:
                    contents.problems.append(f"{member.name}: outside the top folder, ignored")
                    continue
                if not member.isfile():
                    if not member.isdir():
                        contents.problems.append(f"{member.name}: not a regular file, ignored")
                    continue
                total += member.size
                if total > max_total_bytes:
                    raise InputError(f"{path}: more than {max_total_bytes} bytes uncompressed; "
                                     "not a bundle this tool wrote")
                _write_member(archive, member, root, parts[1:])
                members.append("/".join(parts[1:]))
        except (tarfile.TarError, EOFError, OSError) as error:
            raise InputError(f"{path}: damaged archive: {error}") from error
    contents.members = tuple(members)
    if MANIFEST_NAME in members:
        manifest_path = root / MANIFEST_NAME
        if manifest_path.stat().st_size > MANIFEST_LIMIT_BYTES:
            contents.problems.append(f"{MANIFEST_NAME}: too large, not parsed")
        else:
            try:
                contents.manifest = json.loads(manifest_path.read_bytes())
            except (ValueError, RecursionError) as error:
                contents.problems.append(f"{MANIFEST_NAME}: not valid JSON ({error})")
    else:
        contents.problems.append(f"{MANIFEST_NAME}: missing")


def _write_member(archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path,
                  parts: tuple[str, ...]) -> None:
    directory = root
    for part in parts[:-1]:
        directory = directory / part
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        if directory.is_symlink() or not directory.is_dir():
            raise InputError(f"{member.name}: conflicts with another member; archive rejected")
    target = directory / parts[-1]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as error:
        raise InputError(f"{member.name}: duplicate member; archive rejected") from error
    stream = archive.extractfile(member)
    with os.fdopen(fd, "wb") as handle:
        if stream is None:  # pragma: no cover - isfile() members always have data
            return
        with stream:
            remaining = member.size
            while remaining > 0:
                chunk = stream.read(min(_COPY_CHUNK, remaining))
                if not chunk:
                    break
                handle.write(chunk)
                remaining -= len(chunk)
