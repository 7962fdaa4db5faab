"""Bundle planning, pure: catalogue + file listing + options -> ordered entries and skips.

No I/O here. The plan says which files become which members, with which cap and
how they are kept (head or tail), which commands run, and why everything else
matched was skipped (secrets, --since, history beyond N, symlinks that leave the
collected set, FIFOs and devices). Entries are ordered by priority, so the
guide's must-haves are written first and the total cap squeezes only the rest.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Optional, Union

from waagent_guard.bundle.catalogue import SECRET_REASON, Catalogue, CommandItem, expand
from waagent_guard.bundle.globs import glob_regex

if TYPE_CHECKING:
    from waagent_guard.bundle.walk import ListedFile

log = logging.getLogger(__name__)

JOURNAL_LINES_WITHOUT_SINCE = 20000


def matches(path: str, globs: Sequence[str]) -> bool:
    return any(glob_regex(glob).match(path) for glob in globs)


def is_secret(path: str, never_collect: Sequence[str]) -> bool:
    name = PurePosixPath(path).name
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in never_collect)


@dataclass(frozen=True)
class PlanOptions:
    lib_dir: str = "/var/lib/waagent"
    extension_log_dir: str = "/var/log/azure"
    agent_units: tuple[str, ...] = ("walinuxagent.service",)
    host: bool = True  # --root is /: host commands may run
    root: str = "/"
    config: Optional[str] = None
    python: str = "python3"
    full: bool = False
    since_cutoff: Optional[float] = None  # epoch seconds
    max_file_bytes: int = 30 * 1024 * 1024
    history_entries: int = 5


@dataclass(frozen=True)
class FileEntry:
    item: str
    priority: int
    source: str  # host path as found
    real: str  # host path opened (a symlink's target)
    member: str  # relative member path under the top folder
    keep: str  # head | tail
    max_bytes: int
    size: int
    mtime: float
    decode: str = "plain"  # plain | gzip (stored decompressed) | zip (each entry a member)


@dataclass(frozen=True)
class CommandEntry:
    item: str
    priority: int
    argv: tuple[str, ...]
    member: str
    timeout: float
    line_filter: Optional[str]
    ok_returncodes: Optional[tuple[int, ...]]
    max_bytes: int


@dataclass(frozen=True)
class ListingEntry:
    item: str
    priority: int
    directory: str
    member: str


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str
    item: str = ""


Entry = Union[FileEntry, CommandEntry, ListingEntry]


@dataclass(frozen=True)
class Plan:
    entries: tuple[Entry, ...]
    skipped: tuple[Skipped, ...]


def _newest_entries(paths: Sequence[str], under: str, keep: int) -> set[str]:
    """The paths inside the `keep` newest entries (by name, timestamps sort) of `under`."""
    prefix = under.rstrip("/") + "/"
    groups = {path[len(prefix):].split("/", 1)[0] for path in paths if path.startswith(prefix)}
    newest = set(sorted(groups, reverse=True)[:keep])
    return {path for path in paths if path[len(prefix):].split("/", 1)[0] in newest}


def _file_entry(listed: ListedFile, item_name: str, priority: int, keep: str, cap: int,
                members: set[str]) -> FileEntry:
    source = listed.path
    decode = "plain"
    member = source.lstrip("/")
    if source.endswith(".gz"):
        decode = "gzip"
        member = member[:-3]
    elif source.endswith(".zip"):
        decode = "zip"
    if member in members:
        member += ".decompressed" if decode == "gzip" else ".duplicate"
    members.add(member)
    return FileEntry(item_name, priority, source, listed.real or source, member, keep, cap,
                     listed.size, listed.mtime, decode)


def _unfollowable(listed: ListedFile, all_globs: Sequence[str],
                  never: Sequence[str]) -> Optional[str]:
    """Why a symlink is not followed (None: its target is a regular file we collect anyway)."""
    if listed.real is None or listed.error:
        return f"symlink not followed: {listed.error or 'dangling'}"
    if listed.target_kind != "file":
        return f"symlink to a {listed.target_kind or 'missing file'} ({listed.real}), not followed"
    if is_secret(listed.real, never):
        return SECRET_REASON
    if not matches(listed.real, all_globs):
        return f"symlink to {listed.real}, outside the collected set, not followed"
    return None


def _plan_files(catalogue: Catalogue, listing: Sequence[ListedFile],
                options: PlanOptions) -> tuple[list[Entry], list[Skipped]]:
    item_globs = catalogue.file_globs(options.lib_dir, options.extension_log_dir, full=options.full)
    all_globs = [glob for globs in item_globs.values() for glob in globs]
    never = catalogue.never_collect
    entries: list[Entry] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    members: set[str] = set()
    lib_prefix = options.lib_dir.rstrip("/") + "/"
    for listed in listing:
        if is_secret(listed.path, never) and (listed.path.startswith(lib_prefix)
                                              or matches(listed.path, all_globs)):
            skipped.append(Skipped(listed.path, SECRET_REASON, "never-collect"))
            seen.add(listed.path)
    for item in catalogue.files:
        globs = item_globs.get(item.name)
        if globs is None:
            continue
        matched = [listed for listed in listing
                   if listed.path not in seen and matches(listed.path, globs)]
        if item.newest_under is not None:
            under = expand(item.newest_under, options.lib_dir, options.extension_log_dir)
            newest = _newest_entries([listed.path for listed in matched], under,
                                     options.history_entries)
            for listed in matched:
                if listed.path not in newest:
                    seen.add(listed.path)
                    older = ("older history entry (bundle.history_entries = "
                             f"{options.history_entries})")
                    skipped.append(Skipped(listed.path, older, item.name))
            matched = [listed for listed in matched if listed.path in newest]
        cap = min(options.max_file_bytes, item.max_bytes or options.max_file_bytes)
        for listed in sorted(matched, key=lambda entry: entry.path):
            seen.add(listed.path)
            reason = _skip_reason(listed, item.since, options, all_globs, never)
            if reason is not None:
                skipped.append(Skipped(listed.path, reason, item.name))
                continue
            entries.append(_file_entry(listed, item.name, item.priority, item.keep, cap, members))
    return entries, skipped


def _skip_reason(listed: ListedFile, since: bool, options: PlanOptions,
                 all_globs: Sequence[str], never: Sequence[str]) -> Optional[str]:
    if listed.kind == "unreadable-dir":
        return f"directory unreadable: {listed.error}"
    if listed.kind == "symlink":
        reason = _unfollowable(listed, all_globs, never)
        if reason is not None:
            return reason
    elif listed.kind != "file":
        return f"not a regular file ({listed.kind}), never read"
    if since and options.since_cutoff is not None and listed.mtime < options.since_cutoff:
        return "not modified within --since"
    return None


def _expand_argv(argv: Sequence[str], values: dict[str, Sequence[str]]) -> tuple[str, ...]:
    out: list[str] = []
    for token in argv:
        if token in values:
            out.extend(values[token])
        else:
            out.append(token)
    return tuple(out)


def _plan_commands(commands: Sequence[CommandItem],
                   options: PlanOptions) -> tuple[list[Entry], list[Skipped]]:
    since = ([f"--since=@{int(options.since_cutoff)}"] if options.since_cutoff is not None
             else [f"--lines={JOURNAL_LINES_WITHOUT_SINCE}"])
    entries: list[Entry] = []
    skipped: list[Skipped] = []
    for item in commands:
        for unit in options.agent_units if item.per_agent_unit else ("",):
            values: dict[str, Sequence[str]] = {
                "{unit}": [unit], "{since}": since, "{python}": [options.python],
                "{root}": [options.root],
                "{config}": ["--config", options.config] if options.config else [],
            }
            argv = _expand_argv(item.argv, values)
            name = item.name.replace("{unit}", unit.removesuffix(".service"))
            member = f"commands/{name}.txt"
            if item.host_only and not options.host:
                skipped.append(Skipped(" ".join(argv), "not run: --root is not /; host commands "
                                       "describe this machine, not the tree", name))
                continue
            entries.append(CommandEntry(name, item.priority, argv, member, item.timeout,
                                        item.line_filter, item.ok_returncodes,
                                        options.max_file_bytes))
    return entries, skipped


def make_plan(catalogue: Catalogue, listing: Sequence[ListedFile], options: PlanOptions) -> Plan:
    """Order everything the catalogue asks for; say why each matched-but-excluded path is out."""
    file_entries, file_skips = _plan_files(catalogue, listing, options)
    command_entries, command_skips = _plan_commands(catalogue.commands, options)
    listing_entries: list[Entry] = [
        ListingEntry(item.name, item.priority,
                     expand(item.directory, options.lib_dir, options.extension_log_dir),
                     f"commands/{item.name}.txt")
        for item in catalogue.listings
    ]
    ordered = sorted(file_entries + command_entries + listing_entries,
                     key=lambda entry: entry.priority)  # stable: catalogue order within a priority
    return Plan(tuple(ordered), tuple(file_skips + command_skips))
