"""Lib.Dir inventory: handler directories, agent versions, flag files, damaged files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from waagent_guard.agent.extensions import (
    MAX_JSON_BYTES,
    parse_version,
    scan_lib_dir,
    version_at_least,
)
from waagent_guard.sysroot import VMSNAPSHOT_NAME

DATA = Path(__file__).resolve().parent.parent / "data" / "lib"
NOW = 1_800_000_000.0


def make_handler(
    lib: Path,
    name: str,
    version: str,
    *,
    state: str | None = "Enabled",
    handler_status: str | None = "Ready",
    statuses: dict[int, str] | None = None,
) -> Path:
    directory = lib / f"{name}-{version}"
    (directory / "config").mkdir(parents=True)
    (directory / "status").mkdir()
    shutil.copy(DATA / "valid_manifest.json", directory / "HandlerManifest.json")
    if state is not None:
        (directory / "config" / "HandlerState").write_text(state)
    if handler_status is not None:
        document = {"name": name, "version": version, "status": handler_status, "code": 0}
        (directory / "config" / "HandlerStatus").write_text(json.dumps(document))
    for sequence, text in (statuses or {}).items():
        (directory / "status" / f"{sequence}.status").write_text(text)
    return directory


def status_text(
    status: str, *, code: object = 0, operation: str = "Enable", message: str = "ok"
) -> str:
    entry = {
        "version": "1.0",
        "timestampUTC": "2026-11-26T05:00:00Z",
        "status": {
            "name": VMSNAPSHOT_NAME,
            "operation": operation,
            "status": status,
            "code": code,
            "formattedMessage": {"lang": "en-US", "message": message},
        },
    }
    return json.dumps([entry])


# --- versions -------------------------------------------------------------------------


def test_parse_version_returns_integer_tuple() -> None:
    assert parse_version("1.0.9220.0") == (1, 0, 9220, 0)
    assert parse_version(" 2.15.0.1\n") == (2, 15, 0, 1)


@pytest.mark.parametrize("text", ["", "1.0.x", "v1.0", "1..0", "1.0.", "-1"])
def test_parse_version_rejects_non_versions(text: str) -> None:
    assert parse_version(text) is None


def test_version_compare_is_numeric_not_textual() -> None:
    # The troubleshooting guide's "1.0.91.0" is older than 1.0.9220.0, not newer.
    assert version_at_least("1.0.9220.0", "1.0.91.0") is True
    assert version_at_least("1.0.91.0", "1.0.9220.0") is False
    assert version_at_least("2.10.0.8", "2.9.1.1") is True


def test_version_at_least_pads_missing_parts_with_zero() -> None:
    assert version_at_least("2.8", "2.8.0.0") is True
    assert version_at_least("2.8.0.1", "2.8") is True
    assert version_at_least("2.7", "2.8.0.0") is False


def test_version_at_least_is_unknown_without_a_version() -> None:
    assert version_at_least(None, "2.8") is None
    assert version_at_least("garbage", "2.8") is None
    assert version_at_least("2.8", "garbage") is None


# --- handlers -------------------------------------------------------------------------


def test_scan_reads_the_upstream_sample_status(tmp_path: Path) -> None:
    sample = (DATA / "sample-status.json").read_text()
    directory = make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.9220.0", statuses={0: sample})
    state = scan_lib_dir(tmp_path, now=NOW)
    handler = state.handler(VMSNAPSHOT_NAME)
    assert handler is not None
    assert handler.directory == directory
    assert handler.version == "1.0.9220.0"
    assert handler.version_tuple == (1, 0, 9220, 0)
    assert handler.handler_state == "Enabled"
    assert handler.handler_status == "Ready"
    assert handler.status is not None
    assert handler.status.sequence == 0
    assert handler.status.status == "success"
    assert handler.status.code == "1"
    assert handler.status.operation == "Enable"
    assert handler.status.message is not None
    assert handler.status.message.startswith("Aenean semper")
    assert handler.problems == ()
    assert state.problems == ()


def test_highest_numeric_sequence_is_the_current_status(tmp_path: Path) -> None:
    statuses = {n: status_text("success", message=f"seq {n}") for n in (2, 9)}
    statuses[10] = status_text("error", code="1", message="snapshot failed")
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.9220.0", statuses=statuses)
    (tmp_path / f"{VMSNAPSHOT_NAME}-1.0.9220.0" / "status" / "notes.txt").write_text("x")
    handler = scan_lib_dir(tmp_path, now=NOW).handler(VMSNAPSHOT_NAME)
    assert handler is not None and handler.status is not None
    assert handler.status.sequence == 10
    assert handler.status.status == "error"
    assert handler.status.message == "snapshot failed"


def test_status_mtime_is_the_files_mtime(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0", statuses={0: status_text("success")})
    os.utime(directory / "status" / "0.status", (NOW - 60, NOW - 60))
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None and handler.status is not None
    assert handler.status.mtime == NOW - 60


def test_status_accepts_string_message_and_missing_fields(tmp_path: Path) -> None:
    text = json.dumps([{"status": {"status": "transitioning", "formattedMessage": "working"}}])
    make_handler(tmp_path, "Pub.Ext", "1.0", statuses={3: text})
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None and handler.status is not None
    assert handler.status.status == "transitioning"
    assert handler.status.message == "working"
    assert handler.status.code == "0"  # the agent's default code
    assert handler.status.operation is None


def test_handler_without_status_files_has_no_status(tmp_path: Path) -> None:
    make_handler(tmp_path, "Pub.Ext", "1.0")
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None
    assert handler.status is None
    assert handler.heartbeat_age_seconds is None


def test_heartbeat_age_comes_from_the_heartbeat_file_mtime(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0")
    (directory / "heartbeat.log").write_text('[{"version": 1.0, "heartbeat": {}}]')
    os.utime(directory / "heartbeat.log", (NOW - 700, NOW - 700))
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None
    assert handler.heartbeat_age_seconds == pytest.approx(700)


def test_highest_installed_version_is_active_like_the_agent(tmp_path: Path) -> None:
    # get_installed_version: the highest version whose HandlerState is present and not
    # NotInstalled/FailedUpgrade; Enabled is not preferred over Installed.
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.9117.0", state="Enabled")
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.9220.0", state="Installed")
    state = scan_lib_dir(tmp_path, now=NOW)
    active = state.handler(VMSNAPSHOT_NAME)
    assert active is not None and active.version == "1.0.9220.0"
    assert [h.active for h in state.handlers] == [False, True]


def test_directory_without_handler_state_is_not_the_installed_one(tmp_path: Path) -> None:
    # 1.0.9220.0 sorts below 1.0.999.0 as text; as integers it is the newest, but it
    # has no HandlerState, so the agent's installed version is 1.0.999.0.
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.999.0", state="Installed")
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.9220.0", state=None)
    active = scan_lib_dir(tmp_path, now=NOW).handler(VMSNAPSHOT_NAME)
    assert active is not None and active.version == "1.0.999.0"


@pytest.mark.parametrize("old_state", ["Enabled", "Disabled", "Installed"])
@pytest.mark.parametrize("new_state", ["NotInstalled", "FailedUpgrade"])
def test_failed_upgrade_leaves_the_old_version_active(
    tmp_path: Path, old_state: str, new_state: str
) -> None:
    # Issue 12 item 2: 1.0.91.0 Enabled/Disabled next to 1.0.9220.0 NotInstalled (a failed
    # upgrade): the agent's handler is 1.0.91.0, and version_ok is computed on it.
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.91.0", state=old_state)
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.9220.0", state=new_state)
    active = scan_lib_dir(tmp_path, now=NOW).handler(VMSNAPSHOT_NAME)
    assert active is not None and active.version == "1.0.91.0"
    assert version_at_least(active.version, "1.0.9220.0") is False


def test_no_installed_directory_means_no_active_handler(tmp_path: Path) -> None:
    make_handler(tmp_path, VMSNAPSHOT_NAME, "1.0.9220.0", state="NotInstalled")
    state = scan_lib_dir(tmp_path, now=NOW)
    assert state.handler(VMSNAPSHOT_NAME) is None
    assert [h.installed for h in state.handlers] == [False]


def test_agent_dirs_and_stray_names_are_not_handlers(tmp_path: Path) -> None:
    make_handler(tmp_path, "Pub.Ext", "1.0")
    (tmp_path / "WALinuxAgent-2.15.0.1").mkdir()
    (tmp_path / "Pub.Other-2.0.zip").write_text("zip")
    (tmp_path / "Pub.File-3.0").write_text("a file, not a directory")
    (tmp_path / "history").mkdir()
    (tmp_path / "Weird-Name-1.0").mkdir()
    state = scan_lib_dir(tmp_path, now=NOW)
    assert [(h.name, h.version) for h in state.handlers] == [("Pub.Ext", "1.0")]
    assert state.handler("WALinuxAgent") is None


def test_handler_lookup_misses_unknown_names(tmp_path: Path) -> None:
    make_handler(tmp_path, "Pub.Ext", "1.0")
    assert scan_lib_dir(tmp_path, now=NOW).handler(VMSNAPSHOT_NAME) is None


# --- damaged files --------------------------------------------------------------------


def test_truncated_status_is_a_problem_not_an_error(tmp_path: Path) -> None:
    sample = (DATA / "sample-status.json").read_text()
    directory = make_handler(tmp_path, "Pub.Ext", "1.0", statuses={4: sample[:200]})
    state = scan_lib_dir(tmp_path, now=NOW)
    handler = state.handler("Pub.Ext")
    assert handler is not None and handler.status is not None
    assert handler.status.sequence == 4
    assert handler.status.status == "error"  # what the agent reports for invalid JSON
    path = str(directory / "status" / "4.status")
    assert len(handler.problems) == 1
    assert path in handler.problems[0] and "malformed JSON" in handler.problems[0]
    assert state.problems == handler.problems


def test_directory_where_a_file_belongs_is_a_problem(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0", state=None, handler_status=None)
    (directory / "config" / "HandlerState").mkdir()
    (directory / "config" / "HandlerStatus").mkdir()
    (directory / "status" / "0.status").mkdir()
    (handler,) = scan_lib_dir(tmp_path, now=NOW).handlers
    assert not handler.installed
    assert handler.handler_state is None and handler.handler_status is None
    assert len(handler.problems) == 3
    assert all("is a directory" in problem for problem in handler.problems)


def test_binary_garbage_is_a_problem(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0", state=None, handler_status=None)
    (directory / "config" / "HandlerState").write_bytes(b"\xff\xfe\x00garbage")
    (directory / "config" / "HandlerStatus").write_bytes(b"\x89PNG\r\n")
    (handler,) = scan_lib_dir(tmp_path, now=NOW).handlers
    assert handler.handler_state is None
    assert all("not UTF-8" in problem for problem in handler.problems)
    assert len(handler.problems) == 2


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0", handler_status=None)
    os.mkfifo(directory / "config" / "HandlerStatus")
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None
    assert handler.problems == (
        f"{directory}/config/HandlerStatus: is a FIFO (named pipe), not a regular file",
    )


def test_oversized_json_is_not_read(tmp_path: Path) -> None:
    huge = "[" + " " * MAX_JSON_BYTES + "]"
    make_handler(tmp_path, "Pub.Ext", "1.0", statuses={0: huge})
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None
    assert "larger than" in handler.problems[0]


@pytest.mark.parametrize(
    ("text", "expected", "status"),
    [
        ("", "empty file", "error"),
        ("[]", None, None),
        ("null", None, None),
        ("5", "not a JSON array", "error"),
        ("\ufeff" + status_text("success"), "malformed JSON", "error"),
        ('{"status": {"status": "success"}}', "not a JSON array", "error"),
        ('[{"status": {"status": "exploded"}}]', "is not one of", "error"),
        ('[{"status": {"status": "Success"}}]', "is not one of", "error"),
        ('[{"status": {"code": 1}}]', "no status object", "error"),
    ],
)
def test_odd_status_documents_read_as_the_agent_reads_them(
    tmp_path: Path, text: str, expected: str | None, status: str | None
) -> None:
    # Issue 12 item 3: what the agent's parse_ext_status reports (tests/oracle checks it).
    make_handler(tmp_path, "Pub.Ext", "1.0", statuses={0: text})
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None and handler.status is not None
    assert handler.status.status == status
    if expected is None:
        assert handler.problems == ()
    else:
        assert len(handler.problems) == 1 and expected in handler.problems[0]


def test_handler_status_without_status_key_is_a_problem(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0", handler_status=None)
    (directory / "config" / "HandlerStatus").write_text('["Ready"]')
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None and handler.handler_status is None
    assert 'with a "status" key' in handler.problems[0]


def test_empty_handler_state_means_unknown(tmp_path: Path) -> None:
    make_handler(tmp_path, "Pub.Ext", "1.0", state="\n")
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None and handler.handler_state is None


# --- agent state ----------------------------------------------------------------------


def test_missing_lib_dir_is_reported_as_absent(tmp_path: Path) -> None:
    state = scan_lib_dir(tmp_path / "nope", now=NOW)
    assert state.exists is False
    assert state.handlers == () and state.problems == ()


def test_lib_dir_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    target = tmp_path / "waagent"
    target.write_text("")
    state = scan_lib_dir(target, now=NOW)
    assert state.exists is False
    assert "is not a directory" in state.problems[0]


def test_flag_files_and_wireserver_endpoint(tmp_path: Path) -> None:
    (tmp_path / "disable_agent").write_text("")
    (tmp_path / "provisioned").write_text("")
    (tmp_path / "WireServerEndpoint").write_text("127.0.0.1\n")
    state = scan_lib_dir(tmp_path, now=NOW)
    assert state.exists is True
    assert state.disable_agent is True
    assert state.provisioned is True
    assert state.wireserver_endpoint == "127.0.0.1"


def test_empty_lib_dir_has_no_flags(tmp_path: Path) -> None:
    state = scan_lib_dir(tmp_path, now=NOW)
    assert (state.disable_agent, state.provisioned, state.wireserver_endpoint) == (
        False,
        False,
        None,
    )
    assert state.waagent_status_path is None and state.waagent_status_mtime is None


@pytest.mark.parametrize("content", [b"not-an-ip\n", b"\xff\xff"])
def test_bad_wireserver_endpoint_is_a_problem(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "WireServerEndpoint").write_bytes(content)
    state = scan_lib_dir(tmp_path, now=NOW)
    assert state.wireserver_endpoint is None
    assert "WireServerEndpoint" in state.problems[0]


def test_agent_versions_report_blacklisting_from_error_json(tmp_path: Path) -> None:
    fatal = tmp_path / "WALinuxAgent-2.10.0.8"
    fatal.mkdir()
    (fatal / "error.json").write_text(
        json.dumps(
            {
                "last_failure": NOW,
                "failure_count": 3,
                "was_fatal": True,
                "reason": "restarted more than 3 times in 300 seconds",
            }
        )
    )
    benign = tmp_path / "WALinuxAgent-2.9.1.1"
    benign.mkdir()
    (benign / "error.json").write_text(
        json.dumps({"last_failure": 0.0, "failure_count": 0, "was_fatal": False, "reason": ""})
    )
    (tmp_path / "WALinuxAgent-2.15.0.1").mkdir()
    (tmp_path / "WALinuxAgent-2.15.0.1.zip").write_text("zip")
    state = scan_lib_dir(tmp_path, now=NOW)
    versions = [(a.version, a.blacklisted, a.reason) for a in state.agent_versions]
    assert versions == [
        ("2.9.1.1", False, None),
        ("2.10.0.8", True, "restarted more than 3 times in 300 seconds"),
        ("2.15.0.1", False, None),
    ]
    assert state.agent_versions[1].version_tuple == (2, 10, 0, 8)


@pytest.mark.parametrize("content", ['{"was_fatal": tr', '["was_fatal"]'])
def test_damaged_error_json_is_a_problem(tmp_path: Path, content: str) -> None:
    directory = tmp_path / "WALinuxAgent-2.15.0.1"
    directory.mkdir()
    (directory / "error.json").write_text(content)
    state = scan_lib_dir(tmp_path, now=NOW)
    assert state.agent_versions[0].blacklisted is False
    assert "error.json" in state.problems[0]


def test_newest_history_waagent_status_is_found(tmp_path: Path) -> None:
    for index, name in enumerate(["2026-11-26T04-00-00__2", "2026-11-26T05-00-00__3"]):
        directory = tmp_path / "history" / name
        directory.mkdir(parents=True)
        (directory / "waagent_status.json").write_text("{}")
        os.utime(directory / "waagent_status.json", (NOW - 100 + index, NOW - 100 + index))
    (tmp_path / "history" / "2026-11-26T03-00-00__1.zip").write_text("zip")
    state = scan_lib_dir(tmp_path, now=NOW)
    expected = tmp_path / "history" / "2026-11-26T05-00-00__3" / "waagent_status.json"
    assert state.waagent_status_path == expected
    assert state.waagent_status_mtime == NOW - 99


def test_legacy_waagent_status_in_the_root_is_found(tmp_path: Path) -> None:
    (tmp_path / "waagent_status.7.json").write_text("{}")
    (tmp_path / "waagent_status.json").mkdir()  # a directory is never the status file
    state = scan_lib_dir(tmp_path, now=NOW)
    assert state.waagent_status_path == tmp_path / "waagent_status.7.json"


def test_handler_with_only_a_manifest_has_nothing_to_report(tmp_path: Path) -> None:
    make_handler(tmp_path, "Pub.Ext", "1.0", state=None, handler_status=None)
    (handler,) = scan_lib_dir(tmp_path, now=NOW).handlers
    assert (handler.handler_state, handler.handler_status, handler.status) == (None, None, None)
    assert handler.problems == ()


def test_symlink_loops_are_problems(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0", state=None)
    (directory / "config" / "HandlerState").symlink_to(directory / "config" / "HandlerState")
    shutil.rmtree(directory / "status")
    (directory / "status").symlink_to(directory / "status")
    (handler,) = scan_lib_dir(tmp_path, now=NOW).handlers
    assert len(handler.problems) == 2
    assert "HandlerState: cannot read (Too many levels of symbolic links)" in handler.problems[0]
    assert "status: cannot list" in handler.problems[1]


def test_dangling_newest_status_link_means_no_status(tmp_path: Path) -> None:
    directory = make_handler(tmp_path, "Pub.Ext", "1.0")
    (directory / "status" / "5.status").symlink_to(tmp_path / "gone")
    handler = scan_lib_dir(tmp_path, now=NOW).handler("Pub.Ext")
    assert handler is not None and handler.status is None


def test_unlistable_lib_dir_is_a_problem(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    state = scan_lib_dir(loop, now=NOW)
    assert state.exists is True
    assert "cannot list" in state.problems[0]
