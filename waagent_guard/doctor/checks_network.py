"""Guide cause 1 (network): WireServer, HostGAPlugin, IMDS, storage, proxy, route, firewall, log.

Pure functions `Facts -> CheckResult` over the probe results gathered in
`facts`. A failure is explained (refused, timeout, no route, DNS, proxy); a
WireServer failure seen by a non-root user while the agent's firewall is on is
only a warning, because that firewall lets only root through.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Callable

from waagent_guard.access import skip_reason
from waagent_guard.doctor.extfacts import scrub
from waagent_guard.doctor.facts import Facts
from waagent_guard.doctor.findings import CheckResult, Status, fail, ok, skipped, warn
from waagent_guard.doctor.probes import Outcome
from waagent_guard.settings import Settings

log = logging.getLogger(__name__)

RECENT_SECONDS = 24 * 3600.0
NETWORK_LOG_EVENTS = ("goal_state_fetch_failed", "hostgaplugin_errors", "firewall_misconfigured")


def _probe_check(facts: Facts, name: str, *, behind_agent_firewall: bool = False) -> CheckResult:
    probes = facts.probes
    if not probes.ran:
        return skipped(f"probes not run: {probes.reason}")
    result = probes.results.get(name)
    if result is None:
        return skipped(f"no {name} target to probe")
    evidence = result.to_dict()
    if result.ok:
        return ok(f"{result.target}: {result.detail} in {result.elapsed_seconds:.2f} s", evidence)
    summary = f"{result.target}: {result.explanation} ({result.detail})"
    if result.outcome is Outcome.HTTP_ERROR:
        return warn(summary, evidence)
    firewall_on = facts.observation.config.os_enable_firewall
    if behind_agent_firewall and firewall_on and not facts.is_root_user:
        return warn(summary + "; not root and OS.EnableFirewall=y: the agent's firewall only "
                    "lets root reach the WireServer, re-run as root", evidence)
    return fail(summary, evidence)


def wireserver(facts: Facts, settings: Settings) -> CheckResult:
    return _probe_check(facts, "wireserver", behind_agent_firewall=True)


def hostgaplugin(facts: Facts, settings: Settings) -> CheckResult:
    return _probe_check(facts, "hostgaplugin", behind_agent_firewall=True)


def imds(facts: Facts, settings: Settings) -> CheckResult:
    return _probe_check(facts, "imds")


def storage(facts: Facts, settings: Settings) -> CheckResult:
    target = facts.probes.storage
    handler = facts.observation.vmsnapshot
    if handler is not None:
        entry = facts.blocked_for(facts.sysroot.host_path(handler.directory / "config"))
    elif not facts.observation.vmsnapshot_known:
        entry = facts.observation.lib_blocked
    else:
        entry = None
    if target is None and entry is not None:
        return skipped(skip_reason(entry) + " (the storage host comes from VMSnapshot's settings)")
    if target is None:
        return skipped("no storage host known: VMSnapshot has no settings with a blob URI "
                       "(set doctor.storage_host to probe one)")
    result = _probe_check(facts, "storage")
    if isinstance(result.evidence, Mapping):
        evidence = {**result.evidence, "host_source": target.source}
        return type(result)(result.status, result.summary, evidence, result.values)
    return result  # pragma: no cover - _probe_check always returns a mapping


def proxy(facts: Facts, settings: Settings) -> CheckResult:
    if facts.probes.proxy is None:
        return skipped("no HttpProxy.Host/HttpProxy.Port in waagent.conf: the agent goes direct")
    result = _probe_check(facts, "proxy")
    tunnel = facts.probes.results.get("storage")
    if result.status is Status.OK and tunnel is not None and tunnel.outcome in (
            Outcome.PROXY_REJECTED, Outcome.TIMEOUT, Outcome.BAD_RESPONSE, Outcome.RESET):
        return warn(f"the proxy accepts connections but its tunnel to storage failed: "
                    f"{tunnel.explanation} ({tunnel.detail})", result.evidence)
    return result


def route(facts: Facts, settings: Settings) -> CheckResult:
    network = facts.network
    if network.route is None:
        return skipped(network.route_skipped or "route not read")
    evidence = {"ip_route_get": network.route.text, "device": network.route.device}
    if not network.route.ok:
        return fail(f"no route to {network.wireserver}: {network.route.text}", evidence)
    return ok(f"{network.wireserver} via dev {network.route.device}", evidence)


def firewall(facts: Facts, settings: Settings) -> CheckResult:
    network = facts.network
    event = facts.observation.log.events.get("firewall_misconfigured")
    config = facts.observation.config
    if network.firewall is None:
        return skipped(network.firewall_skipped or "firewall rules not read")
    rules = network.firewall
    evidence = {"rules": list(rules.rules), "OS.EnableFirewall": config.os_enable_firewall,
                "log_firewall_errors": event.count if event else 0}
    if rules.root_allowed is False:
        return fail(f"rule blocks root from {network.wireserver}: {rules.blocking_rule}",
                    evidence)
    if rules.root_allowed is None and config.os_enable_firewall:
        return warn("OS.EnableFirewall=y but no rule names the WireServer (the agent adds them "
                    "at start; is it running?)", evidence)
    if event is not None and event.count:
        return warn("the agent logged firewall setup errors", evidence)
    if rules.root_allowed is None:
        return ok("no firewall rule names the WireServer", evidence)
    return ok("root may reach the WireServer (agent firewall in place)", evidence)


def log_errors(facts: Facts, settings: Settings) -> CheckResult:
    signals = facts.observation.log
    entry = facts.blocked_for(facts.sysroot.host_path(facts.observation.log_path))
    if entry is not None:
        return skipped(skip_reason(entry))
    if not signals.record_count:
        return skipped("waagent.log is missing or empty")
    evidence: dict[str, object] = {}
    recent: list[str] = []
    for name in NETWORK_LOG_EVENTS:
        event = signals.events.get(name)
        if event is None or not event.count:
            continue
        evidence[name] = {**event.to_dict(), "last_message": scrub(event.last_message or "")}
        seen = event.last_seen
        if seen is None or facts.now - seen.timestamp() < RECENT_SECONDS:
            recent.append(f"{name} x{event.count}")
    if recent:
        return warn("recent WireServer/HostGAPlugin trouble in waagent.log: " + ", ".join(recent),
                    evidence)
    if evidence:
        return ok("network errors in waagent.log are older than 24 h", evidence)
    return ok("no goal-state or HostGAPlugin errors in the recent log", evidence)


CHECKS: Mapping[str, Callable[[Facts, Settings], CheckResult]] = {
    "WG-NET-001": wireserver,
    "WG-NET-002": hostgaplugin,
    "WG-NET-003": imds,
    "WG-NET-004": storage,
    "WG-NET-005": proxy,
    "WG-NET-006": route,
    "WG-NET-007": firewall,
    "WG-NET-008": log_errors,
}
