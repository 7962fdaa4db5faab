"""What the log says: the events catalogue against real lines, versions, heartbeat, counts."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from waagent_guard.agent import log
from waagent_guard.agent.log import EVENT_CATALOGUE, LogSignals, parse_records, redact_sas
from waagent_guard.agent.logevents import MAX_SUBJECTS, OTHER_SUBJECT, SEVERITIES, EventPattern

DATA = Path(__file__).resolve().parent.parent / "data" / "log"
UTC = timezone.utc

# Real lines (log-lines.txt and the Debian run) for every event; lines built from the
# agent's format strings where no real line was collected are marked "agent source".
EXAMPLES: dict[str, list[str]] = {
    "goal_state_fetch_failed": [
        "2022-12-02T05:45:51.771876Z ERROR ExtHandler ExtHandler Error fetching the goal state:"
        " [ProtocolError] [Wireserver Exception] [HttpError] [HTTP Failed] GET"
        " http://168.63.129.16/machine/ -- IOError [Errno 104] Connection reset by peer",
        "2022-08-16T01:50:10.759502Z ERROR ExtHandler ExtHandler Error fetching the goal state:"
        " [ProtocolError] GET vmSettings [correlation ID: e162f7c3]: Timeout",
        "2022-02-16T04:46:50.477315Z WARNING Daemon Daemon Fetching the goal state failed:"
        " [ResourceGoneError] [HTTP Failed] [410: Gone] b'<?xml version=\"1.0\"?>'",
        "2020/01/19 09:15:21.783005 ERROR ExtHandler ProtocolError processing goal state,"
        " giving up",
    ],
    "vmsnapshot_operation_failed": [
        "2018/03/05 14:31:57.747218 ERROR Event:"
        " name=Microsoft.Azure.RecoveryServices.VMSnapshotLinux, op=None,"
        " message=[ExtensionError] Downgrade not allowed, duration=0",
    ],
    "extension_operation_failed": [
        "2023-03-16T14:29:48.798415Z ERROR ExtHandler ExtHandler Event:"
        " name=Microsoft.Azure.Security.Monitoring.AzureSecurityLinuxAgent, op=Install,"
        " message=[ExtensionOperationError] Non-zero exit code: 56",
        "2024-12-26T06:35:24.233438Z ERROR ExtHandler ExtHandler Event:"
        " name=Microsoft.GuestConfiguration.ConfigurationforLinux, op=Install,"
        " message=[ExtensionOperationError] Non-zero exit code: 51",
    ],
    "agent_operation_failed": [
        "2026-11-26T04:48:31.513418Z ERROR Daemon Daemon Event: name=WALinuxAgent,"
        " op=ActivateResourceDisk, message=[ResourceDiskError] unable to detect disk topology",
        "2023-01-18T02:58:25.589492Z ERROR SendTelemetryHandler ExtHandler Event:"
        " name=WALinuxAgent, op=ReportEventErrors, message=DroppedEventsCount: 1",
    ],
    "unclean_exit": [
        "2017/06/14 22:46:44.033808 INFO WALinuxAgent-2.2.12 did not terminate cleanly",
        # agent source (ga/update.py)
        "2023-01-01T00:00:00.000000Z INFO Daemon Daemon Agent did not terminate cleanly: 1",
    ],
    "daemon_already_running": [
        "2026-11-26T04:51:14.931216Z INFO Daemon Daemon Daemon is already running: 499",
    ],
    "version_blacklisted": [
        # agent source (ga/update.py, ga/guestagent.py)
        "2023-01-01T00:00:00.000000Z WARNING Daemon Daemon Agent WALinuxAgent-2.9.1.1"
        " restarted more than 3 times in 300 seconds",
        "2023-01-01T00:00:00.000000Z WARNING ExtHandler ExtHandler Agent WALinuxAgent-2.9.1.1"
        " is permanently blacklisted",
    ],
    "agent_disabled": [
        "2023/06/07 08:04:35.336313 WARNING Disabling guest agent in accordance with ovf-env.xml",
        # agent source (daemon/main.py)
        "2023-01-01T00:00:00.000000Z INFO Daemon Daemon Disabling the guest agent by sleeping"
        " forever; to re-enable, remove /var/lib/waagent/disable_agent and restart",
    ],
    "hostgaplugin_errors": [
        "2022-09-30T02:48:33.134649Z WARNING MonitorHandler ExtHandler Error in"
        " SendHostPluginHeartbeat: [HttpError] [HTTP Failed] GET http://168.63.129.16:32526/health",
        "2021-03-31T06:54:29.655861Z WARNING ExtHandler ExtHandler Fetch failed: [HttpError]"
        " [HTTP Retry] GET http://168.63.129.16:32526/extensionArtifact -- Status Code 502",
        "2019/07/22 12:36:56.449403 ERROR ExtHandler HostGAPlugin: Exception Get API versions:"
        " [HttpError] [HTTP Failed] GET http://168.63.129.16:32526/versions -- IOError timed out",
    ],
    "firewall_misconfigured": [
        "2024-08-08T22:05:26.561896Z WARNING EnvHandler ExtHandler The firewall is not configured"
        " correctly. The following rules are missing: ['ACCEPT DNS']. Will reset it.",
    ],
    "dhcp_client_not_running": [
        "2021-07-29T04:40:17.190879Z WARNING EnvHandler ExtHandler Dhcp client is not running.",
    ],
    "extension_processing_failed": [
        # agent source (ga/exthandlers.py: "ProcessExtensionsGoalState completed|failed")
        "2023-10-27T07:57:10.702114Z INFO ExtHandler ExtHandler ProcessExtensionsGoalState failed"
        " [etag_13848932411473871259 4082 ms]",
    ],
    "cgroups_disabled": [
        "2021-07-09T01:46:53.307959Z INFO MonitorHandler ExtHandler [CGW] Disabling resource usage"
        " monitoring. Reason: Check on cgroups failed:",
        "2025-03-03T09:19:03.145557Z INFO ExtHandler ExtHandler [CGW] The walinuxagent.service"
        " cgroup is not mounted at the expected path; will not track.",
    ],
}

NOT_EVENTS = [
    "2021-03-31T06:43:17.806663Z WARNING ExtHandler ExtHandler Download failed, switching to"
    " host plugin",
    "2023-10-27T08:36:49.318851Z INFO ExtHandler ExtHandler Fetching the goal state recovered"
    " from previous errors. Fetched etag_13848932411473871259",
    "2023-10-27T07:57:10.702114Z INFO ExtHandler ExtHandler ProcessExtensionsGoalState completed"
    " [etag_13848932411473871259 4082 ms]",
    "2023-03-16T14:29:48.798415Z INFO ExtHandler ExtHandler Event: name=Microsoft.X, op=Install,"
    " message=fine",
    "2024-08-19T16:55:38.425506Z INFO MainThread LogCollector WireServer endpoint 168.63.129.16"
    " read from file",
]


def signals_of(lines: list[str]) -> LogSignals:
    signals = LogSignals()
    for record in parse_records(lines, tz=UTC):
        signals.update(record)
    return signals


def test_catalogue_is_well_formed_data() -> None:
    names = [event.name for event in EVENT_CATALOGUE]
    assert len(names) == len(set(names))
    for event in EVENT_CATALOGUE:
        assert event.severity in SEVERITIES
        assert 0 <= event.cause <= 4
        assert event.description.endswith(".")
        assert isinstance(event.pattern, re.Pattern)


def test_every_catalogue_event_has_examples() -> None:
    assert set(EXAMPLES) == {event.name for event in EVENT_CATALOGUE}


@pytest.mark.parametrize(
    ("name", "line"), [(name, line) for name, lines in EXAMPLES.items() for line in lines]
)
def test_catalogue_event_matches_its_example_line(name: str, line: str) -> None:
    signals = signals_of([line])
    seen = {event for event, stat in signals.events.items() if stat.count}
    assert name in seen
    assert signals.events[name].last_message is not None


@pytest.mark.parametrize("line", NOT_EVENTS)
def test_ordinary_lines_raise_no_event(line: str) -> None:
    signals = signals_of([line])
    assert {event for event, stat in signals.events.items() if stat.count} == set()


def test_example_lines_are_real_unless_built_from_agent_source() -> None:
    real_text = (DATA / "log-lines.txt").read_text(encoding="utf-8") + (
        DATA / "debian-waagent.log"
    ).read_text(encoding="utf-8")
    built = [
        line
        for line in (line for lines in EXAMPLES.values() for line in lines)
        if line.startswith("2023-01-01T00:00:00.000000Z") or "GoalState failed" in line
    ]
    assert len(built) == 5
    for lines in EXAMPLES.values():
        for line in lines:
            if line not in built:
                assert line[:70] in real_text, line


def test_extension_failures_count_per_extension_and_vmsnapshot_separately() -> None:
    lines = EXAMPLES["extension_operation_failed"] * 2 + EXAMPLES["vmsnapshot_operation_failed"]
    signals = signals_of(lines)
    extension = signals.events["extension_operation_failed"]
    assert extension.count == 4
    assert extension.subjects == {
        "Microsoft.Azure.Security.Monitoring.AzureSecurityLinuxAgent": 2,
        "Microsoft.GuestConfiguration.ConfigurationforLinux": 2,
    }
    assert signals.events["vmsnapshot_operation_failed"].subjects == {"None": 1}
    assert signals.events["vmsnapshot_operation_failed"].last_seen == datetime(
        2018, 3, 5, 14, 31, 57, 747218, tzinfo=UTC
    )


def test_subjects_are_bounded() -> None:
    lines = [
        f"2023-03-16T14:29:48.798415Z ERROR ExtHandler ExtHandler Event: name=Pub.Ext{n}, op=Enable"
        for n in range(MAX_SUBJECTS + 10)
    ]
    subjects = signals_of(lines).events["extension_operation_failed"].subjects
    assert len(subjects) == MAX_SUBJECTS + 1
    assert subjects[OTHER_SUBJECT] == 10


def test_debian_log_gives_daemon_version_and_exact_level_counts() -> None:
    lines = (DATA / "debian-waagent.log").read_text(encoding="utf-8").splitlines(keepends=True)
    signals = signals_of(lines)
    assert signals.daemon_version == "2.7.3.0"
    assert signals.goal_state_version is None
    assert signals.record_count == 239
    independent = {level: 0 for level in ("VERBOSE", "INFO", "WARNING", "ERROR")}
    for line in lines:
        found = re.match(r"^\S+Z (VERBOSE|INFO|WARNING|ERROR) ", line)
        if found:
            independent[found.group(1)] += 1
    assert signals.counts_by_level == independent
    assert sum(independent.values()) == 239
    already = sum(1 for line in lines if "Daemon is already running" in line)
    assert signals.events["daemon_already_running"].count == already > 0
    assert signals.events["agent_operation_failed"].subjects.get("ActivateResourceDisk", 0) > 0
    assert signals.last_record_time == datetime.fromisoformat(lines[-1][:26] + "+00:00")


def test_daemon_version_only_from_daemon_lines() -> None:
    signals = signals_of(
        [
            "2021/03/30 19:35:35.971742 INFO Daemon Azure Linux Agent Version:2.2.45",
            "2021/03/30 19:35:36.971742 INFO ExtHandler Azure Linux Agent Version:9.9.9",
        ]
    )
    assert signals.daemon_version == "2.2.45"
    old = signals_of(["2017/06/14 22:46:43.331214 INFO Azure Linux Agent Version: 2.2.12"])
    assert old.daemon_version == "2.2.12"


def test_goal_state_version_from_either_announcement() -> None:
    modern = signals_of(
        [
            "2023-03-13T15:44:04.906673Z INFO ExtHandler ExtHandler Azure Linux Agent"
            " (Goal State Agent version 2.10.0.8)"
        ]
    )
    assert modern.goal_state_version == "2.10.0.8"
    legacy = signals_of(
        [
            "2023-11-17T19:35:11.878794Z INFO ExtHandler Agent WALinuxAgent-2.2.46 is running as"
            " the goal state agent"
        ]
    )
    assert legacy.goal_state_version == "2.2.46"


def test_heartbeat_time_and_version() -> None:
    signals = signals_of(
        [
            "2024-03-15T17:18:19.565463Z INFO ExtHandler ExtHandler [HEARTBEAT] Agent"
            " WALinuxAgent-2.9.1.1 is running as the goal state agent [DEBUG]",
            "2024-03-15T17:20:00.000000Z INFO ExtHandler ExtHandler later",
        ]
    )
    assert signals.last_heartbeat == datetime(2024, 3, 15, 17, 18, 19, 565463, tzinfo=UTC)
    assert signals.goal_state_version == "2.9.1.1"
    assert signals.last_record_time == datetime(2024, 3, 15, 17, 20, tzinfo=UTC)


def test_last_message_is_first_line_truncated_without_sas_query() -> None:
    url = (
        "https://acct.blob.core.windows.net/c/status?sv=2018-03-28&sr=b&sp=w"
        "&se=2030-01-01&sig=SECRETSIGNATURE%3D"
    )
    line = (
        "2022-01-20T06:52:21.515447Z WARNING Daemon Daemon Fetch failed: GET "
        + url
        + " HostPlugin "
        + "z" * 500
    )
    signals = signals_of([line, "  continuation that is not part of last_message"])
    message = signals.events["hostgaplugin_errors"].last_message
    assert message is not None
    assert "SECRETSIGNATURE" not in message and "sig=" not in message
    assert "https://acct.blob.core.windows.net/c/status?[REDACTED]" in message
    assert len(message) == 300
    assert "continuation" not in message


def test_redact_sas_leaves_plain_queries_alone() -> None:
    plain = "POST http://168.63.129.16/machine?comp=telemetrydata failed"
    assert redact_sas(plain) == plain
    assert redact_sas("x https://h/p?a=1&SIG=abc y") == "x https://h/p?[REDACTED] y"


def test_records_without_level_or_time_are_counted_but_not_by_level() -> None:
    signals = signals_of(["orphan line", "2021/03/30 19:45:31 [Pub.Type-1.0] hello"])
    assert signals.record_count == 2
    assert sum(signals.counts_by_level.values()) == 0
    assert signals.last_record_time == datetime(2021, 3, 30, 19, 45, 31, tzinfo=UTC)


def test_to_dict_is_json_with_iso_times_and_every_event() -> None:
    lines = [line for lines in EXAMPLES.values() for line in lines]
    document = signals_of(lines).to_dict()
    text = json.dumps(document)
    assert json.loads(text) == document
    assert set(document["events"]) == {event.name for event in EVENT_CATALOGUE}
    assert document["last_record_time"].endswith("Z")
    stat = document["events"]["daemon_already_running"]
    assert stat["last_seen"] == "2026-11-26T04:51:14.931216Z"
    assert (stat["severity"], stat["cause"], stat["count"]) == ("fail", 2, 1)
    empty = LogSignals().to_dict()
    assert empty["last_heartbeat"] is None and empty["daemon_version"] is None


def test_catalogue_without_keywords_checks_every_record() -> None:
    custom = EventPattern("anything_odd", re.compile(r"odd"), "warn", 0, "Odd lines.")
    signals = LogSignals([custom])
    for record in parse_records(["2021/03/30 19:45:31 something odd here"], tz=UTC):
        signals.update(record)
    assert signals.events["anything_odd"].count == 1


def test_log_module_exports_the_contract_names() -> None:
    for name in (
        "LogRecord",
        "RecordParser",
        "parse_records",
        "guest_timezone",
        "LogTailer",
        "EventPattern",
        "EVENT_CATALOGUE",
        "LogSignals",
        "read_recent",
    ):
        assert hasattr(log, name), name


def test_a_snapshot_is_not_changed_by_later_records() -> None:
    from waagent_guard.agent.log import LogSignals, parse_records

    signals = LogSignals()
    lines = [
        "2023-03-13T15:44:04.906673Z ERROR ExtHandler ExtHandler Error fetching the goal state: x",
        "2023-03-13T15:44:05.906673Z INFO ExtHandler ExtHandler done",
    ]
    for record in parse_records(lines[:1]):
        signals.update(record)
    frozen = signals.snapshot()
    for record in parse_records(lines):
        signals.update(record)
    assert frozen.counts_by_level["ERROR"] == 1
    assert signals.counts_by_level["ERROR"] == 2
    assert frozen.events["goal_state_fetch_failed"].count == 1
    assert signals.events["goal_state_fetch_failed"].count == 2


def test_a_snapshot_copies_every_field_of_every_event() -> None:
    import dataclasses

    from waagent_guard.agent.log import LogSignals, parse_records

    signals = LogSignals()
    line = ("2023-03-13T15:44:04.906673Z ERROR ExtHandler ExtHandler Error fetching the goal"
            " state: x")
    for record in parse_records([line, line.replace("04.9", "05.9")]):
        signals.update(record)
    frozen = signals.snapshot()
    for name, stat in signals.events.items():
        # a field added to EventStat later must be copied too (snapshot builds them)
        assert dataclasses.asdict(frozen.events[name]) == dataclasses.asdict(stat), name
        assert frozen.events[name].subjects is not stat.subjects
    assert frozen.events["goal_state_fetch_failed"].last_message is not None
