"""`waagent-guard bundle`: wiring of settings, agent config, listing, plan and writer.

`run(args, context)` is the CLI handler; `create_bundle(request, ...)` does the work
with every side effect injectable (sysroot, command runner, opener, clock, rules),
so tests drive it directly.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import re
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional, TextIO

from waagent_guard import __version__
from waagent_guard.bundle.catalogue import DEFAULT_CATALOGUE, Catalogue
from waagent_guard.bundle.plan import Plan, PlanOptions, make_plan
from waagent_guard.bundle.sources import CommandRunner, Opener, open_regular, run_command
from waagent_guard.bundle.walk import list_files
from waagent_guard.bundle.writer import BundleResult, BundleWriter, check_destination
from waagent_guard.errors import UsageError, WriteError
from waagent_guard.fsutil import read_text
from waagent_guard.redact import DEFAULT_RULES, Rule
from waagent_guard.sysroot import (
    AGENT_UNIT_NAMES,
    DEFAULT_EXTENSION_LOG_DIR,
    DEFAULT_LIB_DIR,
    UNIT_DIRS,
    Sysroot,
)

if TYPE_CHECKING:
    from waagent_guard.context import Context

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class BundleRequest:
    """What to bundle and where; defaults are the guard's settings.bundle defaults."""

    output: Optional[Path] = None  # a file; None: output_dir/<top>.tar.gz
    stream: Optional[BinaryIO] = None  # `-o -`
    output_dir: str = "/var/lib/waagent-guard/bundles"  # host path under the sysroot
    since_seconds: Optional[float] = None
    full: bool = False
    xz: bool = False
    max_file_bytes: int = 30 * 1024 * 1024
    max_total_bytes: int = 150 * 1024 * 1024
    history_entries: int = 5
    config: Optional[str] = None  # the guard's --config, passed to status/doctor
    agent_conf: Optional[str] = None  # the guard's agent.conf_path (None: per distro)


@dataclass(frozen=True)
class AgentPaths:
    lib_dir: str
    extension_log_dir: str
    problem: Optional[str] = None


def read_agent_paths(sysroot: Sysroot, agent_conf: Optional[str] = None) -> AgentPaths:
    """Lib.Dir and Extension.LogDir from waagent.conf; the agent's defaults if it is unusable."""
    try:
        from waagent_guard.agent.conf import agent_config, conf_path, load_conf

        config = agent_config(load_conf(conf_path(sysroot, agent_conf)))
    except Exception as error:  # a support bundle must survive a broken config reader
        log.warning("bundle: using the agent's default directories: %s", error)
        return AgentPaths(DEFAULT_LIB_DIR, DEFAULT_EXTENSION_LOG_DIR,
                          f"waagent.conf not usable ({error}); used the agent's defaults")
    problems: list[str] = []
    lib_dir = _confined(config.lib_dir, "Lib.Dir", DEFAULT_LIB_DIR, problems)
    log_dir = _confined(config.extension_log_dir, "Extension.LogDir",
                        DEFAULT_EXTENSION_LOG_DIR, problems)
    return AgentPaths(lib_dir, log_dir, "; ".join(problems) or None)


LOG_DIR_PARENT = "/var/log/"
# Lib.Dir may live elsewhere on some images, but never in or below these.
FORBIDDEN_LIB_DIRS = ("/etc", "/root", "/home", "/boot", "/proc", "/sys", "/dev", "/run",
                      "/usr", "/bin", "/sbin", "/lib", "/lib64", "/tmp", "/var/tmp")
SYSTEM_DIRS = ("/", "/var", "/var/lib", "/var/log", "/opt", "/srv", "/mnt", "/media")


def _confined(value: Optional[str], key: str, default: str, problems: list[str]) -> str:
    """A directory read from the guest's waagent.conf, kept only where it cannot widen.

    The path comes from a file on the guest: `Extension.LogDir=/etc` would make
    `{extension_log_dir}/**` collect /etc/shadow (issue 14 item 2). Extension.LogDir
    must lie below /var/log; Lib.Dir (whose globs are narrow) anywhere but a system
    directory. Anything else is replaced by the agent's default, and the manifest says so.
    """
    if not value:
        return default
    normal = posixpath.normpath(value)
    if key == "Extension.LogDir":
        allowed = normal.startswith(LOG_DIR_PARENT)
        where = f"below {LOG_DIR_PARENT}"
    else:
        allowed = normal.startswith("/") and normal not in SYSTEM_DIRS and not any(
            normal == forbidden or normal.startswith(forbidden + "/")
            for forbidden in FORBIDDEN_LIB_DIRS)
        where = "outside system directories"
    if allowed and "\x00" not in normal:
        return normal
    problems.append(f"waagent.conf {key}={value} is not {where}; collected {default} "
                    "instead (a guest file never widens what a bundle collects)")
    return default


def agent_units(sysroot: Sysroot) -> tuple[str, ...]:
    """The agent's unit names that have a unit file (both when neither is found)."""
    found = tuple(name for name in AGENT_UNIT_NAMES
                  if any(sysroot.path(f"{directory}/{name}").exists() for directory in UNIT_DIRS))
    return found or AGENT_UNIT_NAMES


def host_name(sysroot: Sysroot) -> str:
    if sysroot.is_host:
        name = socket.gethostname()
    else:
        try:
            name = read_text(sysroot.path("/etc/hostname"), 4096, oversize="truncate")
        except OSError:
            name = ""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name.strip().split("\n")[0])[:64].strip("._")
    return cleaned or "unknown-host"


def build_plan(sysroot: Sysroot, request: BundleRequest, *, now: float,
               catalogue: Catalogue = DEFAULT_CATALOGUE,
               python: str = sys.executable) -> tuple[Plan, AgentPaths]:
    paths = read_agent_paths(sysroot, request.agent_conf)
    options = PlanOptions(
        lib_dir=paths.lib_dir, extension_log_dir=paths.extension_log_dir,
        agent_units=agent_units(sysroot), host=sysroot.is_host, root=str(sysroot.root),
        config=request.config, python=python, full=request.full,
        since_cutoff=None if request.since_seconds is None else now - request.since_seconds,
        max_file_bytes=request.max_file_bytes, history_entries=request.history_entries,
    )
    globs = catalogue.file_globs(paths.lib_dir, paths.extension_log_dir, full=request.full)
    listing = list_files(sysroot, [glob for item in globs.values() for glob in item])
    return make_plan(catalogue, listing, options), paths


def create_bundle(request: BundleRequest, *, sysroot: Sysroot,
                  runner: CommandRunner = run_command, opener: Opener = open_regular,
                  clock: Clock = time.time, rules: Sequence[Rule] = DEFAULT_RULES,
                  catalogue: Catalogue = DEFAULT_CATALOGUE,
                  progress: Optional[Callable[[str], None]] = None,
                  python: str = sys.executable) -> BundleResult:
    """Plan, write, verify and publish one bundle."""
    now = clock()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    top = f"{host_name(sysroot)}-{stamp}"
    compression = "xz" if request.xz else "gz"
    plan, paths = build_plan(sysroot, request, now=now, catalogue=catalogue, python=python)
    destination = request.output
    if request.stream is None and destination is None:
        directory = sysroot.path(request.output_dir)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise WriteError(f"{directory}: cannot create the bundle directory: {error.strerror}; "
                             "set bundle.output_dir or pass -o FILE") from error
        destination = directory / f"{top}.tar.{compression}"
    work_dir = destination.parent if destination is not None else Path(_temp_dir())
    header: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "guard_version": __version__, "host": top.rsplit("-", 1)[0], "root": str(sysroot.root),
        "options": {"full": request.full, "since_seconds": request.since_seconds,
                    "max_file_bytes": request.max_file_bytes,
                    "max_total_bytes": request.max_total_bytes, "compression": compression},
        "agent": {"lib_dir": paths.lib_dir, "extension_log_dir": paths.extension_log_dir,
                  "problem": paths.problem},
        "redaction_rules": sorted({rule.name for rule in rules}),
    }
    writer = BundleWriter(sysroot, rules=rules, runner=runner, opener=opener, progress=progress,
                          never_collect=catalogue.never_collect, header=header)
    return writer.write(plan, top=top, work_dir=work_dir, max_total_bytes=request.max_total_bytes,
                        compression=compression, destination=destination, stream=request.stream)


def _temp_dir() -> str:
    return tempfile.gettempdir()


class TerminalProgress:
    """One rewritten status line on a terminal; `""` ends it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, message: str) -> None:
        if message:
            self.stream.write("\r\x1b[K" + message[:120])
            self.shown = True
        elif self.shown:
            self.stream.write("\r\x1b[K")
            self.shown = False
        self.stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def run(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings().bundle
    stream: Optional[BinaryIO] = None
    output: Optional[Path] = None
    if args.output == "-":
        if _is_terminal(context.stdout):
            raise UsageError("-o -: stdout is a terminal; redirect it to a file or pass -o FILE")
        stream = getattr(context.stdout, "buffer", None)
        if stream is None:
            raise UsageError("-o -: stdout cannot take binary data here; pass -o FILE")
    elif args.output:
        output = Path(args.output)
        check_destination(output)
    request = BundleRequest(
        output=output, stream=stream, output_dir=settings.output_dir,
        since_seconds=args.since, full=bool(args.full), xz=bool(args.xz),
        max_file_bytes=args.max_file_size or settings.max_file_bytes,
        max_total_bytes=args.max_total_size or settings.max_total_bytes,
        history_entries=settings.history_entries,
        config=str(context.config_path) if context.config_path else None,
        agent_conf=context.settings().agent.conf_path,
    )
    progress = TerminalProgress(context.stderr) if _is_terminal(context.stderr) else None
    result = create_bundle(request, sysroot=context.sysroot, progress=progress)
    manifest = result.manifest
    summary = (f"{len(manifest['members'])} files, {len(manifest['skipped'])} skipped, "
               f"{sum(manifest['redactions'].values())} redactions, "
               f"{result.archive_bytes} bytes")
    if result.path is not None:
        print(f"{result.path}\n  {summary}", file=context.stdout)
    else:
        print(f"waagent-guard: bundle written to stdout ({summary})", file=context.stderr)
    return 0
