"""The daemon's event sources, multiplexed in one `selectors` loop.

Signals arrive through `signal.set_wakeup_fd` on a socket pair (the handler does
nothing; the loop reads the signal numbers). watchdog observer callbacks only
enqueue a path and poke the same socket. The agent daemon's exit is noticed
through a pidfd (Linux >= 5.3) or, where that is unavailable, a short /proc
poll. This module decides nothing: it tells the daemon what happened.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import queue
import selectors
import signal
import socket
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Optional, Union

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class Wakeup:
    """What happened since the last `wait()`."""

    signals: list[int] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)
    agent_exited: bool = False
    readable: list[Any] = field(default_factory=list)


# watchdog >= 2.3 reports opens and read-only closes (inotify IN_OPEN, IN_CLOSE_NOWRITE);
# they change nothing on disk.
READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})

# The file events the guard acts on: a file or directory created, written, deleted or
# moved. Where watchdog can filter (>= 4.0, `schedule(event_filter=...)`), the kernel is
# asked for these only, so the rest never reaches watchdog's threads: the opens and
# read-only closes of the guard's own reads, a written file's close, and the "modified"
# of a directory that watchdog adds for every file event in it (every line appended to
# waagent.log).
WANTED_EVENTS = (
    "FileCreatedEvent", "FileModifiedEvent", "FileDeletedEvent", "FileMovedEvent",
    "DirCreatedEvent", "DirDeletedEvent", "DirMovedEvent",
)


# What the daemon's filter says of a file event (its path and watchdog's event_type,
# "modified", "created", "moved", "deleted"; it runs on watchdog's thread): "now" wakes
# the loop, "batch" is queued and wakes it only when no batch is open
# (`EventLoop.batching`), "ignore" is dropped.
Interest = Literal["now", "batch", "ignore"]


def _make_watch_handler(loop: EventLoop, interest: Callable[[str, str], Interest]) -> Any:
    """A watchdog event handler that only enqueues (never decides), as `interest` says."""
    from watchdog.events import FileSystemEventHandler

    class WatchHandler(FileSystemEventHandler):  # type: ignore[misc]
        def dispatch(self, event: Any) -> None:
            event_type = str(getattr(event, "event_type", ""))
            if event_type in READ_ONLY_EVENTS:
                return  # our own reads would wake us again: a busy loop at the debounce rate
            for path in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
                if not path:
                    continue
                text = os.fsdecode(path)
                kind = interest(text, event_type)
                if kind != "ignore":
                    loop.post_path(text, batch=kind == "batch")

    return WatchHandler()


def _event_filter() -> Optional[list[Any]]:
    """watchdog's event classes for WANTED_EVENTS, or None where `schedule` cannot filter."""
    import watchdog.events
    from watchdog.observers.api import BaseObserver

    if "event_filter" not in inspect.signature(BaseObserver.schedule).parameters:
        return None  # pragma: no cover - watchdog < 4.0; the handler still filters
    return [getattr(watchdog.events, name) for name in WANTED_EVENTS]


def _everything(path: str, event_type: str) -> Interest:
    return "now"


class EventLoop:
    def __init__(self, *, proc_root: Path = Path("/proc"), proc_poll_seconds: float = 0.5) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._paths: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._proc_root = proc_root
        self._proc_poll_seconds = proc_poll_seconds
        self._pidfd: Optional[int] = None
        self._watched_pid: Optional[int] = None
        self._observer: Any = None
        self._watch_handler: Any = None
        self._watch_options: dict[str, Any] = {}
        self._watches: dict[tuple[Path, bool], Any] = {}
        self._identities: dict[tuple[Path, bool], tuple[int, int]] = {}  # (st_dev, st_ino)
        # Set by the daemon while it has promised to wake by itself soon (a deadline):
        # batched paths are then only queued (see post_path, end_batch).
        self.batching = False
        self._previous_handlers: dict[int, Any] = {}
        self._previous_wakeup_fd: Optional[int] = None
        self._previous_mask: Optional[set[Union[int, signal.Signals]]] = None
        self._pidfd_supported = hasattr(os, "pidfd_open")

    # -- signals --
    def install_signal_handlers(self, signals: Iterable[int] = HANDLED_SIGNALS) -> None:
        """Route signals into the loop (main thread only)."""

        def _ignore(signum: int, frame: Optional[FrameType]) -> None:
            # set_wakeup_fd writes the signal number to the socket; nothing to do here.
            return None

        signals = tuple(signals)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_write.fileno())
        for signum in signals:
            self._previous_handlers[signum] = signal.signal(signum, _ignore)
        # A mask inherited from the parent (a process that blocks SIGTERM to sigwait for
        # it) would hold our signals pending forever: the guard would never stop.
        self._previous_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def restore_signal_handlers(self) -> None:
        if self._previous_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
            self._previous_mask = None
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None

    # -- file watching --
    def watch_directories(self, directories: Iterable[tuple[Path, bool]],
                          interest: Callable[[str, str], Interest] = _everything,
                          ) -> list[str]:
        """Start watching each existing (directory, recursive); returns problems for the
        others. `interest` (run on watchdog's thread) says which paths wake the loop."""
        from watchdog.observers import Observer

        observer = Observer()
        observer.daemon = True
        self._watch_handler = _make_watch_handler(self, interest)
        event_filter = _event_filter()
        self._watch_options = {} if event_filter is None else {"event_filter": event_filter}
        self._observer = observer
        problems = self.rewatch(directories)
        observer.start()
        return problems

    def rewatch(self, directories: Iterable[tuple[Path, bool]]) -> list[str]:
        """From now on watch exactly `directories`: the new ones are added, the ones no
        longer listed dropped (an extension's directory that appeared or went away), and
        one replaced since it was watched (deleted and created again, or another inode
        moved to its path: a reinstalled extension, a recreated Lib.Dir) is watched
        again. A directory listed twice is watched once, recursively if either asks so.
        Never raises for a directory it cannot look at: it says so in the problems
        returned (the tick still reads it).
        Does nothing before `watch_directories`."""
        if self._observer is None:
            return []
        desired: dict[Path, bool] = {}
        for directory, recursive in directories:
            desired[directory] = desired.get(directory, False) or recursive
        problems: list[str] = []
        identities: dict[Path, tuple[int, int]] = {}
        for directory in desired:
            try:
                status = os.stat(directory)
            except FileNotFoundError:
                problems.append(f"{directory}: not a directory; not watched (the tick still runs)")
                continue
            except OSError as error:
                problems.append(f"{directory}: cannot watch ({error.strerror or error}); "
                                "the tick still runs")
                continue
            if not stat.S_ISDIR(status.st_mode):
                problems.append(f"{directory}: not a directory; not watched (the tick still runs)")
                continue
            identities[directory] = (status.st_dev, status.st_ino)
        # watchdog stops a watch whose directory was deleted (even if it is back since)
        stopped = {emitter.watch for emitter in self._observer.emitters
                   if not emitter.is_alive()}
        for key in list(self._watches):
            directory, recursive = key
            if (desired.get(directory) != recursive
                    or self._identities.get(key) != identities.get(directory)
                    or self._watches[key] in stopped):
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(self._watches[key])
                del self._watches[key]
                self._identities.pop(key, None)
        for directory, identity in identities.items():
            key = (directory, desired[directory])
            if key in self._watches:
                continue
            try:
                self._watches[key] = self._observer.schedule(
                    self._watch_handler, str(directory), recursive=key[1], **self._watch_options
                )
            except OSError as error:
                problems.append(f"{directory}: cannot watch ({error}); the tick still runs")
                continue
            self._identities[key] = identity
        return problems

    @property
    def watched(self) -> dict[Path, bool]:
        """What is watched now: directory -> recursive."""
        return {directory: recursive for directory, recursive in self._watches}

    def post_path(self, path: str, *, batch: bool = False) -> None:
        """Called from observer threads: enqueue, and poke the loop unless `batch` and a
        batch is open (the loop comes back for it by itself)."""
        self._paths.put(path)
        if not (batch and self.batching):
            self.poke()

    def end_batch(self) -> None:
        """The loop will not come back by itself: batched paths poke it again. One that
        was queued while the batch was still open is not left waiting for the tick."""
        self.batching = False
        if not self._paths.empty():
            self.poke()

    def poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_write.send(b"\0")

    # -- the agent process --
    def watch_pid(self, pid: Optional[int]) -> None:
        """Follow the agent daemon's PID (None: nothing to follow)."""
        if pid == self._watched_pid:
            return
        self._close_pidfd()
        self._watched_pid = pid
        if pid is None or not self._pidfd_supported:
            return
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = None
            self.poke()  # already gone: let the daemon look again now
            return
        except OSError as error:
            log.info("pidfd_open unavailable (%s); polling /proc instead", error)
            self._pidfd_supported = False
            self._pidfd = None
            return
        self._selector.register(self._pidfd, selectors.EVENT_READ, "pidfd")

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _watched_pid_gone(self) -> bool:
        if self._watched_pid is None or self._pidfd is not None:
            return False
        return not (self._proc_root / str(self._watched_pid)).exists()

    @property
    def poll_interval(self) -> Optional[float]:
        """How often the loop must look at /proc (None when a pidfd does it)."""
        if self._watched_pid is not None and self._pidfd is None:
            return self._proc_poll_seconds
        return None

    # -- other file objects (control socket) -------------------------------------------------
    def register(self, fileobj: Any, data: Any) -> None:
        self._selector.register(fileobj, selectors.EVENT_READ, data)

    def unregister(self, fileobj: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fileobj)

    # -- waiting --
    def wait(self, timeout: Optional[float]) -> Wakeup:
        wakeup = Wakeup()
        poll = self.poll_interval
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        try:
            events = self._selector.select(None if timeout is None else max(0.0, timeout))
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            events = []
        for key, _ in events:
            if key.data == "wake":
                self._drain_wake(wakeup)
            elif key.data == "pidfd":
                wakeup.agent_exited = True
                self._close_pidfd()
                self._watched_pid = None
            else:
                wakeup.readable.append(key.data)
        if self._watched_pid_gone():
            wakeup.agent_exited = True
            self._watched_pid = None
        while True:
            try:
                wakeup.paths.add(self._paths.get_nowait())
            except queue.Empty:
                break
        return wakeup

    def _drain_wake(self, wakeup: Wakeup) -> None:
        while True:
            try:
                data = self._wake_read.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            wakeup.signals.extend(byte for byte in data if byte in set(HANDLED_SIGNALS))

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
            self._watches.clear()
            self._identities.clear()
        self._close_pidfd()
        self.restore_signal_handlers()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

