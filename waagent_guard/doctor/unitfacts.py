"""The agent's service unit as the doctor sees it: name, manager, live state, Restart= on disk.

Live state comes from the observation (the service manager); `Restart=` is also
read from the unit file and its drop-ins under the sysroot, so auto-restart can
be judged offline (a mounted disk or a bundle). Remedies use `command()` so the
advice names this distro's unit and tool.
"""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass
from typing import Optional

from waagent_guard.fsutil import read_text
from waagent_guard.observe import Observation
from waagent_guard.service.state import AUTORESTART_POLICIES, UnitState
from waagent_guard.settings import Settings
from waagent_guard.sysroot import AGENT_UNIT_NAMES, UNIT_DIRS, Sysroot

log = logging.getLogger(__name__)

_RESTART_LINE = re.compile(r"^\s*Restart\s*=\s*(\S*)\s*$")
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
# Package names per /etc/os-release ID (the unit name follows the same split).
_PACKAGES = {
    "ubuntu": "walinuxagent", "debian": "waagent", "rhel": "WALinuxAgent",
    "centos": "WALinuxAgent", "almalinux": "WALinuxAgent", "rocky": "WALinuxAgent",
    "ol": "WALinuxAgent", "fedora": "WALinuxAgent", "mariner": "WALinuxAgent",
    "azurelinux": "WALinuxAgent", "sles": "python-azure-agent",
    "opensuse-leap": "python-azure-agent",
}

MAX_OS_RELEASE_BYTES = 64 * 1024
MAX_UNIT_BYTES = 256 * 1024


@dataclass(frozen=True)
class UnitFacts:
    name: str  # walinuxagent.service | waagent.service
    manager: str  # systemd | sysv | openrc | command | unknown
    state: Optional[UnitState]
    state_error: Optional[str]
    unit_file: Optional[str]  # host path of the unit file
    file_restart: Optional[str]  # effective Restart= from the files (None: no unit file)
    restart_sources: tuple[str, ...]  # files that set Restart=, in order
    package: str
    os_id: str = ""

    @property
    def update_command(self) -> str:
        """How this distro upgrades the agent package."""
        if self.os_id in ("ubuntu", "debian"):
            return f"apt-get update && sudo apt-get install --only-upgrade {self.package}"
        if self.os_id.startswith(("sles", "opensuse")):
            return f"zypper update {self.package}"
        if self.os_id in ("mariner", "azurelinux"):
            return f"tdnf update {self.package}"
        return f"dnf update {self.package}"

    @property
    def restart_policy(self) -> Optional[str]:
        """Live Restart= when the manager told us, else the files' value."""
        if self.state is not None and self.manager == "systemd":
            return self.state.restart
        return self.file_restart

    @property
    def autorestart(self) -> Optional[bool]:
        policy = self.restart_policy
        return None if policy is None else policy in AUTORESTART_POLICIES

    def command(self, action: str) -> str:
        service = self.name.removesuffix(".service")
        if self.manager == "openrc":
            return f"rc-service {service} {action}"
        if self.manager in ("sysv",) or (self.manager == "unknown" and self.unit_file is None):
            return f"service {service} {action}"
        return f"systemctl {action} {self.name}"


def os_release_id(sysroot: Sysroot) -> str:
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = read_text(sysroot.path(candidate), MAX_OS_RELEASE_BYTES, oversize="truncate")
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ID":
                return value.strip().strip('"').lower()
    return ""


def _unit_name(sysroot: Sysroot, settings: Settings, observation: Observation) -> str:
    if observation.unit_name:
        return observation.unit_name
    if settings.agent.unit != "auto":
        return settings.agent.unit
    for name in AGENT_UNIT_NAMES:
        if any(sysroot.path(f"{d}/{name}").is_file() for d in UNIT_DIRS):
            return name
    if os_release_id(sysroot) in ("ubuntu", "debian"):
        return "walinuxagent.service"
    return "waagent.service"


def _restart_in(path: str) -> Optional[str]:
    try:
        lines = read_text(path, MAX_UNIT_BYTES, oversize="truncate").splitlines()
    except OSError:
        return None
    section = ""
    value: Optional[str] = None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section = header.group(1).strip()
            continue
        match = _RESTART_LINE.match(line)
        if match and section == "Service":
            value = match.group(1) or "no"  # `Restart=` resets to the default
    return value


def unit_file_restart(sysroot: Sysroot, name: str
                      ) -> tuple[Optional[str], Optional[str], tuple[str, ...]]:
    """(unit file host path, effective Restart=, files that set it) per systemd's precedence."""
    unit_file = next((sysroot.path(f"{d}/{name}") for d in UNIT_DIRS
                      if sysroot.path(f"{d}/{name}").is_file()), None)
    if unit_file is None:
        return None, None, ()
    restart = _restart_in(str(unit_file)) or "no"
    sources = [sysroot.host_path(unit_file)] if _restart_in(str(unit_file)) else []
    # Drop-ins: all directories, sorted by file name; for equal names the first directory wins.
    drop_ins: dict[str, str] = {}
    for directory in UNIT_DIRS:
        for path in glob.glob(str(sysroot.path(f"{directory}/{name}.d")) + "/*.conf"):
            drop_ins.setdefault(path.rsplit("/", 1)[1], path)
    for file_name in sorted(drop_ins):
        value = _restart_in(drop_ins[file_name])
        if value is not None:
            restart = value
            sources.append(sysroot.host_path(drop_ins[file_name]))
    return sysroot.host_path(unit_file), restart, tuple(sources)


def unit_facts(sysroot: Sysroot, settings: Settings, observation: Observation) -> UnitFacts:
    name = _unit_name(sysroot, settings, observation)
    unit_file, restart, sources = unit_file_restart(sysroot, name)
    manager = observation.manager_name or ("systemd" if unit_file else "unknown")
    os_id = os_release_id(sysroot)
    package = _PACKAGES.get(os_id, "WALinuxAgent")
    return UnitFacts(name, manager, observation.unit, observation.unit_error, unit_file,
                     restart, sources, package, os_id)
