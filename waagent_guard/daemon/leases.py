"""`LeaseKeeper`: the verbose lease inside the daemon (control requests, expiry, revert).

`lease.py` holds the lease operations (edit one line of waagent.conf, the durable
state); the keeper is the daemon's side. It owns the lease's retry time after a
failed revert, the restart a request asked for (run after the answer) and the
manual-restart limit: restarts on request (lease on/off/expiry) are not crashes
and never spend the crash budget, so they have their own limit and toggling
cannot restart-loop the agent. It answers `verbose_*` requests, restarts the
agent when Logs.Verbose changed, and reverts the lease when it expires, also
after the guard's own restart or a reboot (the lease is on disk).

Imports: lease, errors, service.manager, settings, daemon.state. Never the
`Guard`: what the keeper needs is passed in, and what the guard must do next
(reconcile) comes back in a `LeaseReply`.
"""

from __future__ import annotations

import logging
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from waagent_guard.daemon.state import StateFile
from waagent_guard.errors import GuardError
from waagent_guard.lease import begin_lease, end_lease, expired, lease_duration, lease_summary
from waagent_guard.service.manager import ServiceManager
from waagent_guard.settings import VerboseSettings
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

MANUAL_RESTART_LIMIT = 6
MANUAL_RESTART_WINDOW_SECONDS = 1800.0
VERBOSE_OPS = frozenset({"verbose_on", "verbose_off", "verbose_status"})


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def manual_restart_refusal(times: list[float], now: float) -> Optional[str]:
    """Why a restart on request is refused now (the separate limit), or None. Pure."""
    recent = [t for t in times if now - MANUAL_RESTART_WINDOW_SECONDS < t <= now]
    if len(recent) < MANUAL_RESTART_LIMIT:
        return None
    return (
        f"not restarting the agent: {len(recent)} restarts on request within "
        f"{MANUAL_RESTART_WINDOW_SECONDS:.0f} s (limit {MANUAL_RESTART_LIMIT}); the change "
        "in waagent.conf applies at the agent's next start"
    )


class Peer(Protocol):
    """Who sent a request (SO_PEERCRED); `daemon.control.PeerCredentials` fits."""

    @property
    def pid(self) -> int: ...
    @property
    def uid(self) -> int: ...


@dataclass(frozen=True)
class LeaseReply:
    """The answer to send, and why the guard must reconcile now (None: it need not)."""

    answer: dict[str, Any]
    reconcile: Optional[str] = None


class LeaseKeeper:
    def __init__(
        self,
        store: StateFile,
        *,
        conf_path: Path,
        settings: VerboseSettings,
        manager: ServiceManager,
        retry_seconds: float,
        count_restart: Callable[[], None],
        clock: Callable[[], float],
        sysroot: Optional[Sysroot] = None,
    ) -> None:
        self._store = store
        self.conf_path = conf_path
        self.sysroot = sysroot  # symlinks in conf_path resolve inside its root
        self.settings = settings
        self.manager = manager
        self.retry_seconds = retry_seconds  # after a failed revert (daemon.tick_seconds)
        self._count_restart = count_restart
        self._clock = clock
        self.retry_at: Optional[float] = None
        # A restart a control request asked for, run after its answer (`run_pending_restart`).
        self.pending_restart: Optional[str] = None
        self.restart_times: list[float] = []

    # -- when --
    @property
    def expiry(self) -> Optional[float]:
        lease = self._store.document.verbose_lease
        return lease.expires_at if lease is not None else None

    @property
    def due_at(self) -> Optional[float]:
        """When to try reverting the lease (later than its expiry after a failed revert)."""
        expiry = self.expiry
        if expiry is None:
            return None
        return max(expiry, self.retry_at or 0.0)

    # -- restarts on request --
    def restart_agent(self, why: str) -> Optional[str]:
        """Restart the agent so a conf change takes effect; returns an error text or None."""
        now = self._clock()
        times = [t for t in self.restart_times if now - MANUAL_RESTART_WINDOW_SECONDS < t]
        refusal = manual_restart_refusal(times, now)
        if refusal is not None:
            log.warning("%s", refusal)
            return refusal
        try:
            self.manager.restart()
        except GuardError as error:
            log.error("restart after %s failed: %s", why, error)
            return str(error)
        self.restart_times = [*times, now]
        self._count_restart()
        return None

    def run_pending_restart(self) -> Optional[str]:
        """The restart a control request asked for, after its answer was sent; returns why."""
        why, self.pending_restart = self.pending_restart, None
        if why is not None:
            self.restart_agent(why)
        return why

    # -- expiry --
    def expire_if_due(self, *, agent_running: bool) -> None:
        """Revert an expired lease (called on every reconciliation)."""
        now = self._clock()
        if not expired(self._store.document, now):
            return
        if self.retry_at is not None and now < self.retry_at:
            return
        try:
            document, changed = end_lease(
                self.conf_path, self._store.document, at_expiry=True, sysroot=self.sysroot
            )
        except GuardError as error:
            # Keep the lease (it is still owed) and try again at the next tick.
            self.retry_at = now + self.retry_seconds
            log.error("cannot revert the expired verbose lease yet: %s", error)
            return
        self.retry_at = None
        self._store.save(document)
        if changed and agent_running:
            self.restart_agent("the verbose lease expired")

    # -- requests --
    def handle(self, request: Mapping[str, Any], peer: Peer) -> LeaseReply:
        """Answer one `verbose_*` request (in the loop thread); raises GuardError."""
        op = request.get("op")
        who = f"{user_name(peer.uid)} (uid {peer.uid}, pid {peer.pid})"
        restart = bool(request.get("restart", True))
        if op == "verbose_on":
            document, changed = begin_lease(
                self.conf_path,
                self._store.document,
                self._clock(),
                lease_duration(request.get("duration"), self.settings),
                str(request.get("reason", ""))[:500],
                who,
                state_path=self._store.path,
                sysroot=self.sysroot,
            )
            self._store.save(document)
            return self._answer(changed, restart, "verbose on")
        if op == "verbose_off":
            document, changed = end_lease(
                self.conf_path, self._store.document, sysroot=self.sysroot
            )
            self._store.save(document)
            return self._answer(changed, restart, "verbose off")
        if op == "verbose_status":
            return LeaseReply({"ok": True, "lease": lease_summary(self._store.path)})
        return LeaseReply({"ok": False, "error": f"unknown request {op!r}"})

    def _answer(self, changed: bool, restart: bool, why: str) -> LeaseReply:
        """Answer now; the restart (if any) follows the answer in the same wake-up."""
        error = None
        requested = False
        if changed and restart:
            error = manual_restart_refusal(self.restart_times, self._clock())
            if error is None:
                self.pending_restart = why
                requested = True
        answer = {
            "ok": error is None,
            "error": error,
            "changed": changed,
            "restarted": requested,
            "restart": "requested" if requested else None,
            "lease": lease_summary(self._store.path),
        }
        return LeaseReply(answer, reconcile=None if requested else why)
