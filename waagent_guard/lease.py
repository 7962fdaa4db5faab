"""The guard's durable state and the verbose lease on `Logs.Verbose`.

Owns `/var/lib/waagent-guard/state.json` (path passed in): a `GuardState`
holding the verbose lease and the restart policy's opaque memory, loaded and
saved atomically (mode 0600). A corrupt or unreadable file is logged, renamed
aside to `state.json.corrupt-<UTC time>` and treated as empty: the daemon never
fails to start over it.

The lease turns `Logs.Verbose=y` on for a while and puts the previous value
back afterwards, editing only that one line through `agent.conf`. If someone
else changed `Logs.Verbose` meanwhile, their value wins and the lease is dropped.
The functions here edit waagent.conf and return the new state; the caller saves
it (or passes `state_path=` to `begin_lease`, which saves the lease *before*
editing so a crash can never leave verbose logging on with no lease to undo it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from waagent_guard.agent.conf import ConfDocument, conf_target, edit_conf, load_conf
from waagent_guard.errors import GuardError, InputError, UsageError
from waagent_guard.fsutil import atomic_write, make_directory, read_bounded
from waagent_guard.logsetup import decision_fields
from waagent_guard.settings import VerboseSettings
from waagent_guard.sysroot import Sysroot
from waagent_guard.timeutil import format_duration, iso_utc

logger = logging.getLogger(__name__)

VERBOSE_KEY = "Logs.Verbose"
STATE_VERSION = 1
MAX_STATE_BYTES = 1024 * 1024


class VerboseLease(BaseModel):
    """Verbose agent logging until `expires_at` (epoch seconds)."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    expires_at: float
    reason: str = ""
    # Logs.Verbose as written before the lease; None = the key was absent,
    # "None" = a `Logs.Verbose=None` line (the agent's default) was there.
    previous_value: Optional[str] = None
    started_at: float
    started_by: str = ""
    # How to put the bytes back exactly (absent in a lease from before issue 14: the
    # value is restored then): the line the lease rewrote, or the separator it added
    # before appending its own line (latin-1, so any byte survives JSON).
    previous_line: Optional[str] = None
    appended_separator: Optional[str] = None


class GuardState(BaseModel):
    """Everything the daemon must remember across its own restarts and reboots."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = STATE_VERSION
    verbose_lease: Optional[VerboseLease] = None
    restart_policy: dict[str, Any] = Field(default_factory=dict)
    # Agent restarts the guard made, by reason, since the state file was created: the
    # daemon's `waagent_guard_restarts_total` starts from these, and `metrics` reads them.
    restart_counts: dict[str, int] = Field(default_factory=dict)


# --- state.json ---------------------------------------------------------------------


def load_state(
    path: Path, *, quarantine: bool = True, clock: Callable[[], float] = time.time
) -> GuardState:
    """The state in `path`; empty when it is missing, corrupt or unreadable (never raises).

    A corrupt or unreadable file is logged and, with `quarantine`, renamed to
    `<name>.corrupt-<UTC time>` so the next save does not destroy the evidence.
    Read-only callers (`status`) pass `quarantine=False`.
    """
    path = Path(path)
    try:
        data, truncated = read_bounded(path, MAX_STATE_BYTES)
    except FileNotFoundError:
        return GuardState()
    except OSError as error:
        return _discard(path, f"cannot read it ({error.strerror or error})", quarantine, clock)
    if truncated:
        return _discard(path, f"larger than {MAX_STATE_BYTES} bytes", quarantine, clock)
    try:
        return GuardState.model_validate(json.loads(data))
    except (ValueError, ValidationError, RecursionError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        return _discard(path, f"not valid guard state ({first_line})", quarantine, clock)


def _discard(path: Path, problem: str, quarantine: bool, clock: Callable[[], float]) -> GuardState:
    if not quarantine:
        logger.warning("%s: %s; ignoring it", path, problem)
        return GuardState()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        os.replace(path, aside)
    except OSError as error:
        logger.error(
            "%s: %s, and it cannot be moved aside (%s); starting with empty state",
            path,
            problem,
            error.strerror or error,
        )
    else:
        logger.error(
            "%s: %s; moved it to %s and started with empty state (a verbose lease in it "
            "will not be reverted automatically: check Logs.Verbose in waagent.conf)",
            path,
            problem,
            aside,
        )
    return GuardState()


def save_state(path: Path, state: GuardState) -> None:
    """Write `state` atomically and durably, mode 0600 (raises WriteError)."""
    path = Path(path)
    make_directory(path.parent, mode=0o700, hint="check daemon.state_file")
    data = json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    atomic_write(path, data.encode("utf-8"), mode=0o600)


def lease_summary(path: Path) -> Optional[dict[str, Any]]:
    """The lease in the state file as a JSON-ready dict (for `status`), or None."""
    lease = load_state(path, quarantine=False).verbose_lease
    if lease is None:
        return None
    summary = lease.model_dump(mode="json", exclude=_UNDO_FIELDS)
    summary["expires_at_iso"] = iso_utc(lease.expires_at)
    summary["started_at_iso"] = iso_utc(lease.started_at)
    return summary


# --- the lease ----------------------------------------------------------------------

_UNDO_FIELDS = {"previous_line", "appended_separator"}
_VERBOSE_ON = VERBOSE_KEY.encode("ascii") + b"=y"


def _undo_fields(document: ConfDocument) -> dict[str, Optional[str]]:
    """What `end_lease` needs to give back the exact bytes `document` has now."""
    last = document.last_line(VERBOSE_KEY)
    if last is None:
        return {"appended_separator": document.append_separator().decode("latin-1")}
    return {"previous_line": last.raw.decode("latin-1")}


def _restore(document: ConfDocument, lease: VerboseLease) -> ConfDocument:
    """`document` with the lease's line undone: exact bytes when the line is still ours."""
    last = document.last_line(VERBOSE_KEY)
    ours = last is not None and last.raw in (_VERBOSE_ON, _VERBOSE_ON + last.eol)
    if ours and lease.previous_value is None and lease.appended_separator is not None:
        undone = document.without_appended(
            VERBOSE_KEY, lease.appended_separator.encode("latin-1")
        )
        if undone is not None:
            return undone
    if ours and lease.previous_line is not None:
        raw = lease.previous_line.encode("latin-1")
        assert last is not None
        # The line's own end (the lease kept it) is what ends it now.
        original_eol = b"\r\n" if raw.endswith(b"\r\n") else b"\n" if raw.endswith(b"\n") else b""
        if last.eol == original_eol:
            return document.with_line(VERBOSE_KEY, raw)
    return document.with_value(VERBOSE_KEY, lease.previous_value)


def written_value(document: ConfDocument, key: str = VERBOSE_KEY) -> Optional[str]:
    """What the last active `key` line says: None when absent, "None" for `key=None`."""
    for line in reversed(document.lines):
        if line.key == key:
            return "None" if line.value is None else line.value
    return None


def expired(state: GuardState, now: float) -> bool:
    lease = state.verbose_lease
    return lease is not None and now >= lease.expires_at


def lease_duration(raw: object, settings: VerboseSettings) -> float:
    """The one rule for a lease's length (CLI and daemon): a finite number of seconds in
    (0, verbose.max_duration_seconds]; None means verbose.default_duration_seconds."""
    try:
        duration = float(settings.default_duration_seconds if raw is None else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"--for: not a number of seconds: {raw!r}") from None
    if not math.isfinite(duration) or duration <= 0:
        raise UsageError(f"--for: the lease must last a positive number of seconds (got {raw!r})")
    if duration > settings.max_duration_seconds:
        raise UsageError(
            f"--for {format_duration(duration)}: longer than verbose.max_duration_seconds "
            f"({format_duration(settings.max_duration_seconds)}); ask for less or raise the limit"
        )
    return duration


def begin_lease(
    conf_path: Path,
    state: GuardState,
    now: float,
    duration: float,
    reason: str,
    who: str,
    *,
    state_path: Optional[Path] = None,
    sysroot: Optional[Sysroot] = None,
) -> tuple[GuardState, bool]:
    """Turn `Logs.Verbose=y` on until `now + duration`; returns (new state, conf changed).

    An existing lease is extended (never shortened: `end_lease` ends it early) and
    keeps its original `previous_value`, so the value from before the first
    lease is what comes back. With `state_path`, the lease is saved before
    waagent.conf is edited.
    """
    if not math.isfinite(duration) or duration <= 0:
        raise InputError(f"verbose on: the lease duration must be positive (got {duration:g}s)")
    document = load_conf(conf_target(conf_path, sysroot))
    current = document.get(VERBOSE_KEY)
    old = state.verbose_lease
    if old is None:
        lease = VerboseLease(
            expires_at=now + duration,
            reason=reason,
            previous_value=written_value(document),
            started_at=now,
            started_by=who,
            **_undo_fields(document),
        )
    else:
        lease = old.model_copy(
            update={
                "expires_at": max(old.expires_at, now + duration),
                "reason": reason or old.reason,
            }
        )
    new_state = state.model_copy(update={"verbose_lease": lease})
    if state_path is not None:
        save_state(state_path, new_state)
    changed = False
    if current != "y":
        try:
            edit_conf(
                conf_path,
                lambda document: document.with_value(VERBOSE_KEY, "y"),
                sysroot=sysroot,
                what=f"the verbose lease's edit of {VERBOSE_KEY}",
            )
        except GuardError:
            if state_path is not None and not _verbose_now(conf_path, sysroot):
                # no lease is owed for an edit that did not happen; one that did (the
                # failure came after the rename) keeps its lease, so it is put back
                with contextlib.suppress(GuardError):
                    save_state(state_path, state)
            raise
        changed = True
    logger.info(
        "verbose lease %s by %s until %s: %s",
        "extended" if old is not None else "started",
        who or "unknown",
        iso_utc(lease.expires_at),
        reason or "no reason given",
        extra=decision_fields(
            "verbose_on",
            reason,
            WG_LEASE_EXPIRES_AT=iso_utc(lease.expires_at),
            WG_STARTED_BY=who,
            WG_CONF_CHANGED=int(changed),
        ),
    )
    return new_state, changed


def _verbose_now(conf_path: Path, sysroot: Optional[Sysroot]) -> bool:
    """Whether waagent.conf may say `Logs.Verbose=y` now: True when it cannot be read
    (a lease kept in doubt is harmless, end_lease drops one whose file is not y; one
    dropped in doubt could leave verbose on for good)."""
    try:
        return load_conf(conf_target(conf_path, sysroot)).get(VERBOSE_KEY) == "y"
    except (GuardError, OSError):
        return True


def end_lease(
    conf_path: Path,
    state: GuardState,
    *,
    at_expiry: bool = False,
    sysroot: Optional[Sysroot] = None,
) -> tuple[GuardState, bool]:
    """Put back the value from before the lease; returns (state without lease, conf changed).

    `at_expiry` only picks the journal MESSAGE_ID (verbose_expired vs verbose_off).
    Only the `Logs.Verbose` line is touched. When it no longer says `y`, someone
    else changed it during the lease: their value is kept and the lease dropped.
    """
    lease = state.verbose_lease
    if lease is None:
        return state, False
    cleared = state.model_copy(update={"verbose_lease": None})
    document = load_conf(conf_target(conf_path, sysroot))
    current = document.get(VERBOSE_KEY)
    restored = "unset" if lease.previous_value is None else lease.previous_value
    if current != "y":
        if written_value(document) == lease.previous_value:
            logger.info("verbose lease ended: %s is already %s", VERBOSE_KEY, restored)
            return cleared, False
        shown = "absent" if written_value(document) is None else written_value(document)
        why = (
            f"{conf_path}: {VERBOSE_KEY} is {shown}, not y: someone changed it during the "
            f"lease; keeping their value instead of restoring {restored}"
        )
        logger.warning(
            "verbose lease dropped: %s", why, extra=decision_fields("verbose_dropped", why)
        )
        return cleared, False
    if lease.previous_value == "y":
        logger.info("verbose lease ended: %s was already y before the lease", VERBOSE_KEY)
        return cleared, False
    edit_conf(
        conf_path,
        # Re-read on a concurrent change: a value someone set meanwhile still wins.
        lambda document: (
            document if document.get(VERBOSE_KEY) != "y" else _restore(document, lease)
        ),
        sysroot=sysroot,
        what=f"the verbose lease's restore of {VERBOSE_KEY}",
    )
    why = f"{VERBOSE_KEY} restored to {restored}"
    kind = "verbose_expired" if at_expiry else "verbose_off"
    logger.info("verbose lease ended: %s", why, extra=decision_fields(kind, why))
    return cleared, True
