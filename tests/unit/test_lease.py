"""The verbose lease and state.json, on real files in tmp_path."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from waagent_guard.agent.conf import load_conf
from waagent_guard.errors import InputError, WriteError
from waagent_guard.lease import (
    GuardState,
    VerboseLease,
    begin_lease,
    end_lease,
    expired,
    lease_summary,
    load_state,
    save_state,
    written_value,
)
from waagent_guard.logsetup import MESSAGE_IDS

DATA = Path(__file__).resolve().parent.parent / "data" / "lease"
NOW = 1_700_000_000.0
HOUR = 3600.0


def conf_with(tmp_path: Path, sample: str = "waagent.conf", *, drop_verbose: bool = False) -> Path:
    data = (DATA / sample).read_bytes()
    if drop_verbose:
        data = b"".join(
            line for line in data.splitlines(keepends=True) if not line.startswith(b"Logs.Verbose")
        )
    path = tmp_path / "waagent.conf"
    path.write_bytes(data)
    return path


def verbose(path: Path) -> str | None:
    return load_conf(path).get("Logs.Verbose")


# --- on/off round trips ---------------------------------------------------------------


@pytest.mark.parametrize("sample", ["waagent.conf", "debian-waagent.conf"])
def test_on_then_off_restores_n_byte_for_byte(tmp_path: Path, sample: str) -> None:
    conf = conf_with(tmp_path, sample)
    original = conf.read_bytes()

    state, changed = begin_lease(conf, GuardState(), NOW, HOUR, "support case 42", "root")
    assert changed
    assert verbose(conf) == "y"
    assert state.verbose_lease == VerboseLease(
        expires_at=NOW + HOUR,
        reason="support case 42",
        previous_value="n",
        started_at=NOW,
        started_by="root",
        previous_line="Logs.Verbose=n\n",
    )

    state, changed = end_lease(conf, state)
    assert changed
    assert state.verbose_lease is None
    assert conf.read_bytes() == original


def test_on_then_off_removes_the_key_it_added_byte_for_byte(tmp_path: Path) -> None:
    conf = conf_with(tmp_path, drop_verbose=True)
    original = conf.read_bytes()

    state, changed = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    assert changed
    assert state.verbose_lease is not None
    assert state.verbose_lease.previous_value is None
    assert conf.read_bytes().endswith(b"Logs.Verbose=y\n")

    state, changed = end_lease(conf, state)
    assert changed
    assert conf.read_bytes() == original


def test_a_none_line_comes_back_as_none(tmp_path: Path) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(b"Logs.Verbose=None\nExtensions.Enabled=y\n")
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    assert state.verbose_lease is not None and state.verbose_lease.previous_value == "None"
    end_lease(conf, state)
    assert conf.read_bytes() == b"Logs.Verbose=None\nExtensions.Enabled=y\n"


def test_off_keeps_edits_made_to_other_lines_during_the_lease(tmp_path: Path) -> None:
    conf = conf_with(tmp_path)
    original = conf.read_bytes()
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")

    # Someone else edits another line while the lease is on.
    during = conf.read_bytes().replace(b"Extensions.Enabled=y", b"Extensions.Enabled=n")
    assert during != conf.read_bytes()
    conf.write_bytes(during)

    state, changed = end_lease(conf, state)
    assert changed
    assert conf.read_bytes() == original.replace(b"Extensions.Enabled=y", b"Extensions.Enabled=n")
    assert load_conf(conf).get("Extensions.Enabled") == "n"
    assert verbose(conf) == "n"


def test_off_does_not_clobber_a_verbose_value_someone_else_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = conf_with(tmp_path)
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    conf.write_bytes(conf.read_bytes().replace(b"Logs.Verbose=y", b"Logs.Verbose=None"))
    edited = conf.read_bytes()

    with caplog.at_level(logging.WARNING, logger="waagent_guard.lease"):
        state, changed = end_lease(conf, state)
    assert not changed
    assert state.verbose_lease is None
    assert conf.read_bytes() == edited
    assert "someone changed it during the lease" in caplog.text
    assert caplog.records[-1].MESSAGE_ID == MESSAGE_IDS["verbose_dropped"]  # type: ignore[attr-defined]


def test_off_after_someone_already_restored_the_old_value_just_drops_the_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = conf_with(tmp_path)
    original = conf.read_bytes()
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    conf.write_bytes(original)
    with caplog.at_level(logging.INFO, logger="waagent_guard.lease"):
        state, changed = end_lease(conf, state)
    assert (state.verbose_lease, changed) == (None, False)
    assert "already n" in caplog.text


def test_a_lease_over_an_already_verbose_agent_changes_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(b"Logs.Verbose=y\n")
    state, changed = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    assert not changed
    state, changed = end_lease(conf, state)
    assert not changed
    assert conf.read_bytes() == b"Logs.Verbose=y\n"


def test_off_without_a_lease_is_a_no_op(tmp_path: Path) -> None:
    conf = conf_with(tmp_path)
    state = GuardState(restart_policy={"budget": [1, 2]})
    assert end_lease(conf, state) == (state, False)


def test_expiry_revert_is_logged_with_the_expired_message_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = conf_with(tmp_path)
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    with caplog.at_level(logging.INFO, logger="waagent_guard.lease"):
        end_lease(conf, state, at_expiry=True)
    assert caplog.records[-1].MESSAGE_ID == MESSAGE_IDS["verbose_expired"]  # type: ignore[attr-defined]


# --- extending ------------------------------------------------------------------------


def test_a_second_on_extends_the_lease_and_keeps_the_original_previous_value(
    tmp_path: Path,
) -> None:
    conf = conf_with(tmp_path)
    original = conf.read_bytes()
    first, _ = begin_lease(conf, GuardState(), NOW, HOUR, "first", "root")
    second, changed = begin_lease(conf, first, NOW + 600, 2 * HOUR, "second", "alice")
    assert not changed
    lease = second.verbose_lease
    assert lease is not None
    assert lease.expires_at == NOW + 600 + 2 * HOUR
    assert lease.previous_value == "n"
    assert (lease.started_at, lease.started_by, lease.reason) == (NOW, "root", "second")
    end_lease(conf, second)
    assert conf.read_bytes() == original


def test_a_shorter_second_on_never_shortens_the_lease(tmp_path: Path) -> None:
    conf = conf_with(tmp_path)
    first, _ = begin_lease(conf, GuardState(), NOW, 2 * HOUR, "why", "root")
    second, _ = begin_lease(conf, first, NOW + 1, 60, "", "root")
    assert second.verbose_lease is not None
    assert second.verbose_lease.expires_at == NOW + 2 * HOUR
    assert second.verbose_lease.reason == "why"


def test_on_again_after_someone_turned_verbose_off_sets_it_back_keeping_the_original(
    tmp_path: Path,
) -> None:
    conf = conf_with(tmp_path, drop_verbose=True)
    first, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    conf.write_bytes(conf.read_bytes().replace(b"Logs.Verbose=y", b"Logs.Verbose=n"))
    second, changed = begin_lease(conf, first, NOW + 1, HOUR, "", "root")
    assert changed
    assert verbose(conf) == "y"
    assert second.verbose_lease is not None and second.verbose_lease.previous_value is None


def test_a_non_positive_duration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="must be positive"):
        begin_lease(conf_with(tmp_path), GuardState(), NOW, 0, "", "root")


def test_on_with_a_missing_conf_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        begin_lease(tmp_path / "waagent.conf", GuardState(), NOW, HOUR, "", "root")


def test_off_when_the_conf_file_vanished_drops_the_lease(tmp_path: Path) -> None:
    conf = conf_with(tmp_path)
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    conf.unlink()
    state, changed = end_lease(conf, state)
    assert (state.verbose_lease, changed) == (None, False)
    assert not conf.exists()


# --- expiry ---------------------------------------------------------------------------


def test_expired_is_true_from_the_expiry_time_on(tmp_path: Path) -> None:
    state, _ = begin_lease(conf_with(tmp_path), GuardState(), NOW, HOUR, "", "root")
    assert not expired(state, NOW + HOUR - 1)
    assert expired(state, NOW + HOUR)
    assert expired(state, NOW + 2 * HOUR)
    assert not expired(GuardState(), NOW)


# --- state.json -----------------------------------------------------------------------


def test_the_lease_survives_a_reload_of_the_state_file(tmp_path: Path) -> None:
    conf = conf_with(tmp_path)
    original = conf.read_bytes()
    state_file = tmp_path / "state" / "state.json"
    state, _ = begin_lease(
        conf,
        GuardState(restart_policy={"history": [NOW - 5]}),
        NOW,
        HOUR,
        "case 7",
        "root",
        state_path=state_file,
    )
    assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o600

    reloaded = load_state(state_file)  # e.g. after a guard restart or a reboot
    assert reloaded == state
    assert reloaded.restart_policy == {"history": [NOW - 5]}
    assert expired(reloaded, NOW + HOUR)
    reverted, changed = end_lease(conf, reloaded)
    assert changed
    save_state(state_file, reverted)
    assert load_state(state_file).verbose_lease is None
    assert conf.read_bytes() == original


def test_a_missing_state_file_is_empty_state(tmp_path: Path) -> None:
    assert load_state(tmp_path / "state.json") == GuardState()


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"verbose_lease": {"reason": "no expiry"}}', b"\xff\xfe"],
)
def test_a_corrupt_state_file_is_moved_aside_and_treated_as_empty(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="waagent_guard.lease"):
        state = load_state(state_file, clock=lambda: NOW)
    assert state == GuardState()
    aside = tmp_path / "state.json.corrupt-20231114T221320Z"
    assert aside.read_bytes() == content
    assert not state_file.exists()
    assert "moved it to" in caplog.text and str(aside) in caplog.text


def test_an_oversized_state_file_is_treated_as_corrupt(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_bytes(b" " * (1024 * 1024 + 1))
    assert load_state(state_file, clock=lambda: NOW) == GuardState()
    assert (tmp_path / "state.json.corrupt-20231114T221320Z").exists()


def test_an_unreadable_state_file_is_reported_and_treated_as_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_file = tmp_path / "state.json"
    state_file.mkdir()  # reading a directory fails like an unreadable file
    with caplog.at_level(logging.ERROR, logger="waagent_guard.lease"):
        assert load_state(state_file, clock=lambda: NOW) == GuardState()
    assert "cannot read it" in caplog.text


def test_a_corrupt_state_file_that_cannot_be_moved_is_still_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_bytes(b"{")
    # A directory in the way of the rename target makes os.replace fail.
    (tmp_path / "state.json.corrupt-20231114T221320Z").mkdir()
    (tmp_path / "state.json.corrupt-20231114T221320Z" / "x").write_text("x")
    with caplog.at_level(logging.ERROR, logger="waagent_guard.lease"):
        assert load_state(state_file, clock=lambda: NOW) == GuardState()
    assert "cannot be moved aside" in caplog.text
    assert state_file.read_bytes() == b"{"


def test_read_only_loading_leaves_a_corrupt_file_in_place(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_bytes(b"{")
    assert load_state(state_file, quarantine=False) == GuardState()
    assert state_file.read_bytes() == b"{"


def test_unknown_fields_from_a_newer_guard_are_ignored(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"version": 2, "future": True, "restart_policy": {"a": 1}}))
    assert load_state(state_file).restart_policy == {"a": 1}


def test_saving_into_an_unwritable_place_is_a_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WriteError, match=r"check daemon\.state_file"):
        save_state(blocker / "state.json", GuardState())


def test_lease_summary_shows_iso_times_for_status(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    assert lease_summary(state_file) is None
    conf = conf_with(tmp_path)
    begin_lease(conf, GuardState(), NOW, HOUR, "case 9", "root", state_path=state_file)
    summary = lease_summary(state_file)
    assert summary is not None
    assert summary["expires_at_iso"] == "2023-11-14T23:13:20Z"
    assert summary["started_at_iso"] == "2023-11-14T22:13:20Z"
    assert summary["reason"] == "case 9"
    assert summary["previous_value"] == "n"


def test_written_value_tells_absent_from_none(tmp_path: Path) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(b"# Logs.Verbose=y\n")
    assert written_value(load_conf(conf)) is None
    conf.write_bytes(b"Logs.Verbose=None\n")
    assert written_value(load_conf(conf)) == "None"
    conf.write_bytes(b'Logs.Verbose = "n" # quiet\n')
    assert written_value(load_conf(conf)) == "n"
