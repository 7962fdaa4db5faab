"""Which agent processes belong to the root the guard observes.

`/proc` shows every agent-looking process on the machine: the host's agent, a
container's (systemd-nspawn, its own `/proc/PID/root`), and the demo guest's
simulated agent, which runs `<guest>/usr/sbin/waagent -daemon` on the host's
root. Only the observed root's own agent counts, or `status` on a host without
an agent reports `healthy` with another root's process (and `main_pid` names
it). The rules:

- under `--root DIR`, a process counts when one of its program arguments lies
  inside DIR (an offline tree has no processes at all);
- on the host (`/`), a process does not count when its `/proc/PID/root` is not
  the host's `/` (a systemd-nspawn container or a chroot: compared by device and
  inode, since a readlink inside another mount namespace says `/` too, and the
  guard's own sandboxed namespace still has the same root), or when its program
  lies inside another agent
  root: a directory other than `/` that holds its own `etc/waagent.conf` or
  `usr/sbin/waagent` (a demo guest, a mounted image). Relative program paths
  are resolved against `/proc/PID/cwd`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from waagent_guard.agent.process import (
    ROLE_DAEMON,
    AgentProcess,
    child_pids,
    find_agent_processes,
    read_agent_processes,
)
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

# What makes a directory another agent root (the demo guest has both).
ROOT_MARKERS = ("etc/waagent.conf", "usr/sbin/waagent")


def _link(path: Path) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None  # gone, or another user's process read by a non-root user


def program_paths(process: AgentProcess, proc_root: Path) -> list[PurePosixPath]:
    """The path-like arguments of `process` (its interpreter and script), made absolute."""
    cwd = _link(proc_root / str(process.pid) / "cwd")
    paths = []
    for argument in process.cmdline:
        if argument.startswith("-") or "/" not in argument:
            continue
        path = PurePosixPath(argument)
        if not path.is_absolute():
            if cwd is None:
                continue
            path = PurePosixPath(cwd) / path
        paths.append(path)
    return paths


def other_root_of(path: PurePosixPath, exists: Callable[[str], bool] = os.path.exists
                  ) -> Optional[str]:
    """The directory above `path` (not `/`) that is an agent root of its own, if any."""
    for parent in path.parents:
        if str(parent) == "/":
            return None
        if any(exists(str(parent / marker)) for marker in ROOT_MARKERS):
            return str(parent)
    return None


def same_root(process_root: Path, root: Path) -> Optional[bool]:
    """Whether `/proc/PID/root` is the directory `root`; None when it cannot be told."""
    try:
        theirs, ours = os.stat(process_root), os.stat(root)
    except OSError:
        return None  # gone, or another user's process read by a non-root user
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def belongs_to_host(process: AgentProcess, proc_root: Path, host_root: Path = Path("/")) -> bool:
    """Whether `process` is the host's agent, not a container's or another tree's."""
    if same_root(proc_root / str(process.pid) / "root", host_root) is False:
        log.debug("PID %d runs in another root (a container or chroot)", process.pid)
        return False
    for path in program_paths(process, proc_root):
        other = other_root_of(path)
        if other is not None:
            log.debug("PID %d runs %s from another agent root %s", process.pid, path, other)
            return False
    return True


def processes_in_root(sysroot: Sysroot) -> tuple[AgentProcess, ...]:
    """The agent processes of `sysroot`'s own agent (see the module docstring)."""
    if not sysroot.is_host and not sysroot.proc.is_dir():
        return ()  # an offline tree: no processes to look at
    return _in_root(sysroot, find_agent_processes(sysroot.proc))


class ProcessFinder:
    """`processes_in_root` for a long-running caller: a full /proc scan only now and then.

    A full scan reads the cmdline of every process on the machine (one file per
    process, twice per tick before this). Between full scans the finder re-reads
    only the agent processes it found last time (the same PID with the same start
    time is the same process) and the daemons' children (/proc/PID/task/*/children:
    a restarted ExtHandler is a new child). It falls back to the full scan when a
    known process is gone or changed, when the children cannot be listed (a kernel
    without CONFIG_PROC_CHILDREN, a read error), when no daemon was known, and every
    `full_scan_every`-th call, so a stray second daemon or an ExtHandler outside the
    daemon's tree is still seen within that many ticks. The answer is always what a
    full scan would say about the processes it re-read; errors of the full scan
    (ProcessScanError) reach the caller unchanged.
    """

    def __init__(
        self,
        *,
        full_scan_every: int = 20,
        scan: Callable[[Sysroot], tuple[AgentProcess, ...]] = processes_in_root,
    ) -> None:
        self._full_scan_every = max(1, full_scan_every)
        self._scan = scan
        self._known: tuple[AgentProcess, ...] = ()
        self._since_full = 0
        self.full_scans = 0  # for tests and benchmarks

    def __call__(self, sysroot: Sysroot) -> tuple[AgentProcess, ...]:
        self._since_full += 1
        quick = None
        if self._since_full < self._full_scan_every and any(
            process.role == ROLE_DAEMON for process in self._known
        ):
            quick = self._recheck(sysroot)
        if quick is None:
            self._since_full = 0
            self.full_scans += 1
            quick = self._scan(sysroot)
        self._known = quick
        return quick

    def _recheck(self, sysroot: Sysroot) -> Optional[tuple[AgentProcess, ...]]:
        known = {process.pid: process for process in self._known}
        candidates = dict.fromkeys(known)
        for process in self._known:
            if process.role == ROLE_DAEMON:
                children = child_pids(sysroot.proc, process.pid)
                if children is None:
                    return None
                candidates.update(dict.fromkeys(children))
        found = read_agent_processes(sysroot.proc, candidates)
        if found is None:
            return None
        seen = {process.pid: process for process in found}
        for pid, before in known.items():
            now = seen.get(pid)
            if now is None or (now.role, now.start_time) != (before.role, before.start_time):
                return None  # gone, replaced or changed role: look everywhere
        ordered = sorted(found, key=lambda p: (p.role != ROLE_DAEMON, p.pid))
        return _in_root(sysroot, ordered)


def _in_root(sysroot: Sysroot, found: Iterable[AgentProcess]) -> tuple[AgentProcess, ...]:
    processes = tuple(found)
    if sysroot.is_host:
        return tuple(p for p in processes if belongs_to_host(p, sysroot.proc))
    prefix = str(sysroot.root.resolve()) + os.sep
    return tuple(
        process
        for process in processes
        if any(argument.startswith(prefix) for argument in process.cmdline)
    )


def root_pid_finder(
    sysroot: Sysroot,
    processes: Callable[[Sysroot], tuple[AgentProcess, ...]] = processes_in_root,
) -> Callable[[], Optional[int]]:
    """The PID of `sysroot`'s own agent daemon, looked up per call (service managers).

    The daemon passes its `ProcessFinder`, so asking the manager costs no second scan.
    """

    def find() -> Optional[int]:
        return next((p.pid for p in processes(sysroot) if p.role == ROLE_DAEMON), None)

    return find
