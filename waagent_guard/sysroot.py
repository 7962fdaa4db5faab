"""Every host path the guard reads or writes, resolved under one root.

In production the root is `/`; `--root DIR` points every command at a mounted
disk, a copied tree or a test fixture. Nothing else in the package builds host
paths by hand: it asks a `Sysroot`.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Where distributions put the agent's configuration, in the order the guard tries them.
WAAGENT_CONF_CANDIDATES = (
    "/etc/waagent.conf",
    "/usr/share/oem/waagent.conf",  # CoreOS / Flatcar
    "/usr/share/defaults/waagent/waagent.conf",  # Clear Linux
)
WAAGENT_LOG = "/var/log/waagent.log"
DEFAULT_LIB_DIR = "/var/lib/waagent"
DEFAULT_EXTENSION_LOG_DIR = "/var/log/azure"
DEFAULT_PID_FILE = "/var/run/waagent.pid"

GUARD_CONFIG = "/etc/waagent-guard/guard.toml"

# DHCP leases: dhclient (Debian/Ubuntu, RHEL) and systemd-networkd.
DHCP_LEASE_GLOBS = (
    "/var/lib/dhcp/dhclient*.leases",
    "/var/lib/dhclient/*.lease*",
    "/var/lib/NetworkManager/*.lease",
    "/run/systemd/netif/leases/*",
)
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
AGENT_UNIT_NAMES = ("walinuxagent.service", "waagent.service")

VMSNAPSHOT_NAME = "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
VMSNAPSHOT_FREEZE_LOCK = "/etc/azure/MicrosoftRecoverySvcsSafeFreezeLock/SafeFreezeLockFile"
DMI_CHASSIS_ASSET_TAG = "/sys/class/dmi/id/chassis_asset_tag"
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
MAX_LINK_HOPS = 40  # as the kernel's MAXSYMLINKS


class LinkError(ValueError):
    """A path's symlinks cannot be resolved (a loop, too many, unreadable); names the path."""


@dataclass(frozen=True)
class Sysroot:
    """A root directory under which absolute host paths are resolved lexically."""

    root: Path = Path("/")
    # The demo and the integration tests lay a guest tree but watch real processes:
    # they set proc_root to the host's /proc while files resolve under root.
    proc_root: Path | None = None

    @classmethod
    def of(cls, root: str | os.PathLike[str] | None) -> Sysroot:
        return cls(Path(root) if root else Path("/"))

    @property
    def is_host(self) -> bool:
        """True when this is the running system's own root (`/`)."""
        return self.root == Path("/")

    def path(self, host_path: str | os.PathLike[str]) -> Path:
        """`/etc/waagent.conf` -> `<root>/etc/waagent.conf`."""
        posix = PurePosixPath(os.fspath(host_path))
        if not posix.is_absolute():
            raise ValueError(f"host path must be absolute: {host_path}")
        if self.is_host:
            return Path(posix)
        return self.root.joinpath(*posix.parts[1:])

    def host_path(self, path: str | os.PathLike[str]) -> str:
        """The inverse of `path`: `<root>/etc/x` -> `/etc/x` (for messages and manifests)."""
        resolved = Path(path)
        if self.is_host:
            return str(resolved)
        try:
            relative = resolved.relative_to(self.root)
        except ValueError:
            return str(resolved)
        return "/" + relative.as_posix() if relative.parts else "/"

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """`path` (a path under the root) with its symlinks resolved INSIDE the root.

        Like the kernel would if the root were `/`: an absolute link target starts
        again at the root, `..` never climbs above it. A component that does not
        exist ends the resolution (the rest is kept as written). A loop or more
        than MAX_LINK_HOPS links raises LinkError naming the path.
        """
        start = self.host_path(path)
        pending = deque(PurePosixPath(start).parts[1:])
        resolved: list[str] = []
        hops = 0
        missing = False  # past a component that does not exist: the rest is lexical
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            try:
                mode = 0 if missing else os.lstat(candidate).st_mode
            except OSError:
                missing = True
                mode = 0
            if not stat.S_ISLNK(mode):
                resolved.append(part)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise LinkError(
                    f"{start}: more than {MAX_LINK_HOPS} symbolic links to follow (a loop?)"
                    f"{'' if self.is_host else f' under {self.root}'}; point the link at the "
                    "real file"
                )
            try:
                target = PurePosixPath(os.readlink(candidate))
            except OSError as error:
                raise LinkError(
                    f"{self.host_path(candidate)}: cannot read the symbolic link "
                    f"({error.strerror or error})"
                ) from error
            if target.is_absolute():
                resolved = []
                pending.extendleft(reversed(target.parts[1:]))
            else:
                pending.extendleft(reversed(target.parts))
        return self.path("/" + "/".join(resolved))

    @property
    def proc(self) -> Path:
        return self.proc_root if self.proc_root is not None else self.path("/proc")

    def find_waagent_conf(self) -> Path:
        """The agent's config file for this distribution (first existing candidate)."""
        for candidate in WAAGENT_CONF_CANDIDATES:
            resolved = self.path(candidate)
            if resolved.exists():
                return resolved
        return self.path(WAAGENT_CONF_CANDIDATES[0])

    def is_azure(self) -> bool:
        """Whether the machine identifies as Azure by its DMI chassis asset tag."""
        try:
            tag = self.path(DMI_CHASSIS_ASSET_TAG).read_text(encoding="ascii", errors="replace")
        except OSError:
            return False
        return tag.strip() == AZURE_ASSET_TAG
