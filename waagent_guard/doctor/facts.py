"""Everything the doctor's checks read, gathered once into one `Facts` value.

`gather_facts` is the adapter: it builds on `observe.observe()` (conf, log
signals, Lib.Dir, processes, pidfile, unit state) and adds what only the doctor
needs (resources, free space, DHCP and routes, firewall, the VMSnapshot
extension log, the probes). Every side effect comes through `FactSources`
with a production default, so tests lay a sysroot tree and inject the rest.
Checks are pure functions of the resulting `Facts`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from waagent_guard.access import Unreadable, blocked, first_covering
from waagent_guard.doctor import netfacts
from waagent_guard.doctor.extfacts import (
    ExtensionLogFacts,
    StorageTarget,
    extension_log_facts,
    storage_target,
)
from waagent_guard.doctor.pressure import MemoryInfo, cpu_percent, parse_meminfo, parse_proc_stat
from waagent_guard.doctor.probes import (
    ProbeResult,
    ProbeTarget,
    Proxy,
    run_probes,
    targets_from_url,
)
from waagent_guard.doctor.unitfacts import UnitFacts, unit_facts
from waagent_guard.execute import CommandRunner, SubprocessRunner
from waagent_guard.observe import Observation, observe
from waagent_guard.service.manager import ServiceManager
from waagent_guard.settings import Settings
from waagent_guard.sysroot import DHCP_LEASE_GLOBS, VMSNAPSHOT_NAME, Sysroot

log = logging.getLogger(__name__)

CPU_SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class ProbePlan:
    """Whether probes run, and why (the reason is printed either way)."""

    run: bool
    reason: str


def probe_decision(
    sysroot: Sysroot, setting: str, *, probe_flag: bool = False, no_probe_flag: bool = False
) -> ProbePlan:
    """The safety rule: only on an Azure host and never under --root, unless asked."""
    if no_probe_flag:
        return ProbePlan(False, "--no-probe given")
    if probe_flag:
        return ProbePlan(True, "--probe given")
    if setting == "always":
        return ProbePlan(True, "doctor.probe = always")
    if setting == "never":
        return ProbePlan(False, "doctor.probe = never (pass --probe to run them)")
    if not sysroot.is_host:
        return ProbePlan(False, f"offline diagnosis under --root {sysroot.root} "
                                "(probes would test this machine, not that disk; --probe forces)")
    if not sysroot.is_azure():
        return ProbePlan(False, "not an Azure VM (DMI chassis asset tag does not match; "
                                "--probe forces)")
    return ProbePlan(True, "Azure VM detected (DMI chassis asset tag)")


@dataclass(frozen=True)
class ResourceFacts:
    cpu_percent: Optional[float]
    memory: Optional[MemoryInfo]
    cpu_sustained: Optional[bool] = None  # from the daemon's PressureWindow
    memory_sustained: Optional[bool] = None
    window_seconds: Optional[float] = None
    unavailable: str = ""  # why cpu/memory could not be measured


@dataclass(frozen=True)
class DiskFacts:
    label: str  # "/var/log" or "Lib.Dir"
    path: str  # host path
    free_bytes: Optional[int]
    total_bytes: Optional[int]
    error: str = ""


@dataclass(frozen=True)
class ProbeFacts:
    ran: bool
    reason: str
    results: Mapping[str, ProbeResult] = field(default_factory=dict)
    storage: Optional[StorageTarget] = None
    proxy: Optional[Proxy] = None


@dataclass(frozen=True)
class NetworkFacts:
    leases: tuple[netfacts.LeaseFacts, ...] = ()
    static_hints: tuple[str, ...] = ()
    route: Optional[netfacts.RouteFacts] = None
    route_skipped: str = ""
    firewall: Optional[netfacts.FirewallFacts] = None
    firewall_skipped: str = ""
    wireserver: str = ""  # the address route and firewall were judged for


@dataclass(frozen=True)
class Facts:
    observation: Observation
    unit: UnitFacts
    resources: ResourceFacts
    disks: tuple[DiskFacts, ...]
    network: NetworkFacts
    extension_log: ExtensionLogFacts
    probes: ProbeFacts
    is_root_user: bool
    offline: bool  # files come from --root / --bundle, not the running system
    verbose_lease: Optional[Mapping[str, Any]] = None
    # What could not be read: the observation's entries, then the doctor's own inputs.
    blocked: tuple[Unreadable, ...] = ()

    @property
    def unreadable(self) -> tuple[str, ...]:
        return tuple(str(entry) for entry in self.blocked)

    def blocked_for(self, *host_paths: str) -> Optional[Unreadable]:
        """The entry that kept any of `host_paths` (or a path under one of them) from a check."""
        return first_covering(self.blocked, *host_paths, within=True)

    @property
    def now(self) -> float:
        return self.observation.time

    @property
    def sysroot(self) -> Sysroot:
        return self.observation.sysroot


def _read_proc_stat(sysroot: Sysroot) -> Optional[str]:
    try:
        return (sysroot.proc / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


@dataclass
class FactSources:
    """Side effects of gathering, injectable; defaults are the production ones."""

    runner: Optional[CommandRunner] = None
    cpu_stat: Optional[Callable[[], Optional[str]]] = None  # /proc/stat text, sampled twice
    sleep: Callable[[float], None] = time.sleep
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs
    euid: Callable[[], int] = os.geteuid
    clock: Callable[[], float] = time.time
    manager: Optional[ServiceManager] = None  # None: no live unit state
    pressure: Optional[tuple[Optional[bool], Optional[bool], float]] = None  # cpu, mem, window
    verbose_lease: Optional[Mapping[str, Any]] = None


def _resources(sysroot: Sysroot, sources: FactSources) -> ResourceFacts:
    sample = sources.cpu_stat or (lambda: _read_proc_stat(sysroot))
    first_text = sample()
    cpu: Optional[float] = None
    missing: list[str] = []
    first = parse_proc_stat(first_text) if first_text else None
    if first is None:
        missing.append(f"{sysroot.host_path(sysroot.proc / 'stat')} not readable")
    else:
        sources.sleep(CPU_SAMPLE_SECONDS)
        second_text = sample()
        second = parse_proc_stat(second_text) if second_text else None
        cpu = cpu_percent(first, second) if second is not None else None
        if cpu is None:
            missing.append("no CPU time passed between two /proc/stat samples (a copied /proc?)")
    try:
        memory = parse_meminfo((sysroot.proc / "meminfo").read_text("ascii", "replace"))
    except OSError:
        memory = None
    if memory is None:
        missing.append(f"{sysroot.host_path(sysroot.proc / 'meminfo')} has no MemAvailable")
    unavailable = "; ".join(missing)
    cpu_sustained = memory_sustained = None
    window = None
    if sources.pressure is not None:
        cpu_sustained, memory_sustained, window = sources.pressure
    return ResourceFacts(cpu, memory, cpu_sustained, memory_sustained, window, unavailable)


def _disk(label: str, host_path: str, sysroot: Sysroot, sources: FactSources) -> DiskFacts:
    path = sysroot.path(host_path)
    # The directory may be missing on a copied tree: measure its nearest existing parent.
    probe_path = path
    while not probe_path.exists() and probe_path != probe_path.parent:
        probe_path = probe_path.parent
    try:
        stats = sources.statvfs(str(probe_path))
    except OSError as error:
        return DiskFacts(label, host_path, None, None, f"statvfs failed: {error.strerror}")
    return DiskFacts(label, host_path, stats.f_bavail * stats.f_frsize,
                     stats.f_blocks * stats.f_frsize)


def plan_targets(
    settings: Settings, observation: Observation
) -> tuple[list[ProbeTarget], Optional[StorageTarget], Optional[Proxy]]:
    doctor = settings.doctor
    config = observation.config
    proxy = None
    if config.http_proxy_host and config.http_proxy_port:
        proxy = Proxy(config.http_proxy_host, config.http_proxy_port)
    targets = [
        ProbeTarget("wireserver", doctor.wireserver, doctor.wireserver_port, "/?comp=versions"),
        ProbeTarget("hostgaplugin", doctor.wireserver, doctor.hostgaplugin_port, "/health"),
    ]
    try:
        targets.append(targets_from_url("imds", doctor.imds_url, (("Metadata", "true"),)))
    except ValueError as error:
        log.warning("doctor.imds_url: %s; IMDS probe skipped", error)
    storage = storage_target(settings, observation)
    if storage is not None:
        targets.append(ProbeTarget("storage", storage.host, doctor.storage_port,
                                   via_proxy=proxy is not None))
    if proxy is not None:
        targets.append(ProbeTarget("proxy", proxy.host, proxy.port))
    return targets, storage, proxy


def gather_facts(
    sysroot: Sysroot,
    settings: Settings,
    plan: ProbePlan,
    sources: Optional[FactSources] = None,
    *,
    offline: Optional[bool] = None,
    bundle: bool = False,
    observation: Optional[Observation] = None,
) -> Facts:
    """Read everything once; probes run in the background while the rest is read.

    `observation`: one already made (the daemon's loop publishes one per pass);
    without it the agent is observed here, asking `sources.manager` if set."""
    sources = sources or FactSources()
    offline = (not sysroot.is_host) if offline is None else offline
    if observation is None:
        observation = observe(sysroot, settings, manager=sources.manager, clock=sources.clock)
    targets, storage, proxy = plan_targets(settings, observation)
    doctor = settings.doctor
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wg-doctor") as background:
        pending = None
        if plan.run:
            pending = background.submit(run_probes, targets, proxy=proxy,
                                        timeout=doctor.timeout_seconds,
                                        total_seconds=doctor.timeout_seconds)
        resources = _resources(sysroot, sources)
        config = observation.config
        if bundle:
            why = "diagnosing a bundle: free space would be this machine's, not the VM's"
            disks = (DiskFacts("/var/log", "/var/log", None, None, why),
                     DiskFacts("Lib.Dir", config.lib_dir, None, None, why))
        else:
            disks = (_disk("/var/log", "/var/log", sysroot, sources),
                     _disk("Lib.Dir", config.lib_dir, sysroot, sources))
        # Route and firewall are judged for the agent's WireServer, not the probe target.
        wireserver = observation.lib.wireserver_endpoint or doctor.wireserver
        network = _network(sysroot, wireserver, sources, offline)
        extension_log = extension_log_facts(sysroot, config.extension_log_dir, VMSNAPSHOT_NAME)
        results = pending.result() if pending is not None else {}
    return Facts(
        blocked=observation.blocked + _doctor_blocked(sysroot, extension_log.path),
        observation=observation,
        unit=unit_facts(sysroot, settings, observation),
        resources=resources,
        disks=disks,
        network=network,
        extension_log=extension_log,
        probes=ProbeFacts(plan.run, plan.reason, results, storage, proxy),
        is_root_user=sources.euid() == 0,
        offline=offline,
        verbose_lease=sources.verbose_lease,
    )


def _doctor_blocked(sysroot: Sysroot, extension_log: str) -> tuple[Unreadable, ...]:
    """The doctor's own inputs that exist but cannot be read: extension log, lease dirs."""
    found: list[Unreadable] = []
    reason = blocked(sysroot.path(extension_log))
    if reason is not None:
        found.append(Unreadable(extension_log, extension_log, reason))
    for pattern in DHCP_LEASE_GLOBS:
        directory = pattern.rsplit("/", 1)[0]
        reason = blocked(sysroot.path(directory), directory=True)
        if reason is not None and first_covering(found, directory) is None:
            found.append(Unreadable(directory, directory, reason))
    return tuple(found)


def _network(sysroot: Sysroot, wireserver: str, sources: FactSources,
             offline: bool) -> NetworkFacts:
    leases = netfacts.gather_leases(sysroot)
    hints = netfacts.static_addressing_hints(sysroot)
    if offline:
        why = "offline diagnosis: the routing table and firewall are this machine's, not the disk's"
        return NetworkFacts(leases, hints, None, why, None, why, wireserver)
    runner = sources.runner or SubprocessRunner()
    route = netfacts.gather_route(runner, wireserver)
    if sources.euid() != 0:
        return NetworkFacts(leases, hints, route, "", None, "reading iptables rules needs root",
                            wireserver)
    firewall, why = netfacts.gather_firewall(runner, wireserver)
    return NetworkFacts(leases, hints, route, "", firewall, why, wireserver)

