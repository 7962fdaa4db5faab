"""Guide cause 4 (snapshot delayed: DHCP, option 245, CPU, memory) and general checks (0).

Pure functions `Facts -> CheckResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Callable, Optional

from waagent_guard.access import skip_reason
from waagent_guard.doctor.facts import DiskFacts, Facts
from waagent_guard.doctor.findings import CheckResult, fail, ok, skipped, warn
from waagent_guard.settings import Settings
from waagent_guard.sysroot import DHCP_LEASE_GLOBS
from waagent_guard.timeutil import format_duration

log = logging.getLogger(__name__)


def wireserver_endpoint(facts: Facts, settings: Settings) -> CheckResult:
    lib = facts.observation.lib
    from_leases = sorted({lease.option_245 for lease in facts.network.leases if lease.option_245})
    evidence = {"WireServerEndpoint": lib.wireserver_endpoint, "dhcp_option_245": from_leases,
                "leases": [lease.path for lease in facts.network.leases]}
    if lib.wireserver_endpoint or from_leases:
        known = lib.wireserver_endpoint or from_leases[0]
        return ok(f"WireServer endpoint {known} known", evidence)
    entry = facts.blocked_for(facts.sysroot.host_path(lib.lib_dir / "WireServerEndpoint"),
                              *_lease_dirs())
    if entry is not None:
        return skipped(skip_reason(entry), evidence)
    return warn("WireServer endpoint unknown: no WireServerEndpoint file and no DHCP option 245 "
                "in any lease", evidence)


def _lease_dirs() -> list[str]:
    return [pattern.rsplit("/", 1)[0] for pattern in DHCP_LEASE_GLOBS]


def dhcp_in_use(facts: Facts, settings: Settings) -> CheckResult:
    network = facts.network
    event = facts.observation.log.events.get("dhcp_client_not_running")
    evidence = {"leases": [lease.path for lease in network.leases],
                "static_config": list(network.static_hints),
                "log_dhcp_client_not_running": event.count if event else 0}
    if network.static_hints and not network.leases:
        return fail("static addressing configured and no DHCP lease: the VM cannot learn the "
                    "fabric address (option 245)", evidence)
    if event is not None and event.count:
        return warn("the agent logged 'DHCP client is not running'", evidence)
    if network.static_hints:
        return warn("DHCP leases exist, but some interfaces are configured statically", evidence)
    entry = facts.blocked_for(*_lease_dirs())
    if not network.leases and entry is not None:
        return skipped(skip_reason(entry), evidence)
    if not network.leases:
        return warn("no DHCP lease file found (dhclient, systemd-networkd, NetworkManager)",
                    evidence)
    return ok(f"DHCP in use ({len(network.leases)} lease file(s))", evidence)


def _pressure(name: str, now: Optional[float], sustained: Optional[bool], threshold: float,
              window: Optional[float], unavailable: str) -> CheckResult:
    if now is None:
        return skipped(f"{name} not measurable: {unavailable}")
    evidence = {"percent": round(now, 1), "threshold_percent": threshold,
                "sustained": sustained, "window_seconds": window}
    span = format_duration(window) if window else "the window"
    if sustained:
        return fail(f"{name} above {threshold:g} % for all of the last {span} "
                    f"(now {now:.0f} %): snapshots will be delayed", evidence)
    if now > threshold:
        return warn(f"{name} at {now:.0f} % now (> {threshold:g} %)", evidence)
    return ok(f"{name} at {now:.0f} %", evidence)


def cpu(facts: Facts, settings: Settings) -> CheckResult:
    resources = facts.resources
    return _pressure("CPU", resources.cpu_percent, resources.cpu_sustained,
                     settings.doctor.cpu_threshold_percent, resources.window_seconds,
                     resources.unavailable)


def memory(facts: Facts, settings: Settings) -> CheckResult:
    resources = facts.resources
    used = resources.memory.used_percent if resources.memory else None
    result = _pressure("memory", used, resources.memory_sustained,
                       settings.doctor.memory_threshold_percent, resources.window_seconds,
                       resources.unavailable)
    if resources.memory and isinstance(result.evidence, Mapping):
        evidence = {**result.evidence, "total_bytes": resources.memory.total_bytes,
                    "available_bytes": resources.memory.available_bytes}
        return type(result)(result.status, result.summary, evidence, result.values)
    return result


def conf_readable(facts: Facts, settings: Settings) -> CheckResult:
    observation = facts.observation
    shown = facts.sysroot.host_path(observation.conf_path)
    evidence = {"path": shown, "problems": list(observation.conf.problems),
                "unreadable": list(observation.unreadable)}
    if observation.conf_blocked is not None:
        return skipped(skip_reason(observation.conf_blocked), evidence)
    if not observation.conf_exists:
        return warn(f"{shown} not found: the agent's code defaults apply", evidence)
    if observation.conf.problems:
        return warn(f"{shown}: " + "; ".join(observation.conf.problems[:3]), evidence)
    return ok(f"{shown} parsed ({len(observation.conf.as_dict())} keys)", evidence)


def _free_space(disk: DiskFacts, minimum: int) -> CheckResult:
    if disk.free_bytes is None or disk.total_bytes is None:
        return skipped(f"{disk.path}: {disk.error or 'not measured'}")
    evidence = {"path": disk.path, "free_bytes": disk.free_bytes,
                "total_bytes": disk.total_bytes, "min_free_bytes": minimum}
    free_mib = disk.free_bytes / 1048576
    if disk.free_bytes < minimum:
        return fail(f"{disk.path}: only {free_mib:.0f} MiB free (< {minimum // 1048576} MiB)",
                    evidence)
    if disk.free_bytes < 2 * minimum:
        return warn(f"{disk.path}: {free_mib:.0f} MiB free, close to the floor", evidence)
    return ok(f"{disk.path}: {free_mib:.0f} MiB free", evidence)


def _disk(facts: Facts, label: str) -> Optional[DiskFacts]:
    return next((disk for disk in facts.disks if disk.label == label), None)


def var_log_space(facts: Facts, settings: Settings) -> CheckResult:
    disk = _disk(facts, "/var/log")
    if disk is None:
        return skipped("/var/log not measured")
    return _free_space(disk, settings.doctor.min_free_bytes)


def lib_dir_space(facts: Facts, settings: Settings) -> CheckResult:
    disk = _disk(facts, "Lib.Dir")
    if disk is None:
        return skipped("Lib.Dir not measured")
    return _free_space(disk, settings.doctor.min_free_bytes)


CHECKS: Mapping[str, Callable[[Facts, Settings], CheckResult]] = {
    "WG-SNAP-001": wireserver_endpoint,
    "WG-SNAP-002": dhcp_in_use,
    "WG-SNAP-003": cpu,
    "WG-SNAP-004": memory,
    "WG-SYS-001": conf_readable,
    "WG-SYS-002": var_log_space,
    "WG-SYS-003": lib_dir_space,
}
