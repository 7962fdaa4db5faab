"""The health verdict when an input could not be read: `unknown`, never `healthy` or 0."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from waagent_guard.access import Unreadable
from waagent_guard.agent.process import AgentProcess
from waagent_guard.commands.status import render_text, status_document
from waagent_guard.daemon.exporter import guard_collector
from waagent_guard.demo.simagent import lay_demo_guest
from waagent_guard.metrics import MetricsInput, exposition, make_registry
from waagent_guard.observe import UNKNOWN, Observation, assess, observe
from waagent_guard.settings import Settings
from waagent_guard.sysroot import Sysroot


def _healthy_looking(tmp_path: Path) -> Observation:
    root = lay_demo_guest(tmp_path / "guest")
    observation = observe(Sysroot(root), Settings())
    # No agent process under an offline tree: pretend the verdict would otherwise be healthy.
    return dataclasses.replace(observation, processes=(), lib=dataclasses.replace(
        observation.lib, handlers=(), disable_agent=False))


def test_an_unreadable_lib_dir_turns_healthy_into_unknown(tmp_path: Path) -> None:
    observation = _healthy_looking(tmp_path)
    blocked = (Unreadable("/var/lib/waagent", "/var/lib/waagent", "permission denied"),)
    observation = dataclasses.replace(observation, blocked=blocked)
    verdict = assess(observation)
    # the daemon is absent here, so down wins; unknown never hides a known problem
    assert verdict.health == "down"
    running = dataclasses.replace(observation, processes=_fake_processes())
    verdict = assess(running)
    assert verdict.health == UNKNOWN
    assert verdict.exit_code == 4
    assert "could not read /var/lib/waagent (permission denied)" in verdict.reasons[0]
    document = status_document(running, verdict)
    assert document["vmsnapshot"]["installed"] is None
    assert "vmsnapshot   unknown" in render_text(document, running.time)
    published = MetricsInput(observation=running)
    text = exposition(make_registry(guard_collector(lambda: published, checks=False),
                                    process_metrics=False)).decode()
    assert "waagent_health_status" not in text
    assert "waagent_vmsnapshot_installed" not in text
    assert 'waagent_guard_unreadable{path="/var/lib/waagent"} 1.0' in text


def _fake_processes() -> tuple[AgentProcess, ...]:
    daemon = AgentProcess(pid=4242, role="daemon", cmdline=("waagent", "-daemon"),
                          version="2.7.3.0", start_time=None, rss_bytes=None, cpu_seconds=None)
    return (daemon, dataclasses.replace(daemon, pid=4243, role="exthandler"))


def test_label_values_read_from_guest_files_are_redacted_and_bounded(tmp_path: Path) -> None:
    observation = _healthy_looking(tmp_path)
    sas = "https://acct.blob.core.windows.net/c/b?sv=2020-08-04&sig=LABELSECRET0123456789"
    signals = observation.log
    signals.daemon_version = sas + "x" * 500
    running = dataclasses.replace(observation, processes=(), log=signals)
    published = MetricsInput(observation=running)
    text = exposition(make_registry(guard_collector(lambda: published, checks=False),
                                    process_metrics=False)).decode()
    info = next(line for line in text.splitlines() if line.startswith("waagent_info{"))
    assert "LABELSECRET" not in text
    assert "xxxx" * 40 not in info  # bounded
