"""What a support bundle collects, declared as data: path globs, caps, priorities, commands.

Globs are host paths; `{lib_dir}` and `{extension_log_dir}` are filled from the agent's
waagent.conf (`Lib.Dir`, `Extension.LogDir`). `*` matches within one path component,
`**` any depth. Priority 0 is the troubleshooting guide's must-have set (collected
first, so the total cap never squeezes it out), 1 the standard set, 2 only with `--full`.
Nothing here does I/O; `plan.make_plan` turns this plus a file listing into a plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from waagent_guard.redact import DEFAULT_RULES, Rule
from waagent_guard.sysroot import AGENT_UNIT_NAMES, DHCP_LEASE_GLOBS, UNIT_DIRS, WAAGENT_LOG

log = logging.getLogger(__name__)

MUST_HAVE = 0
STANDARD = 1
FULL = 2

GUARD_UNIT = "waagent-guard.service"
SECRET_REASON = "secret material, never collected"  # noqa: S105 (a message)
WIRESERVER = "168.63.129.16"


@dataclass(frozen=True)
class FileItem:
    """Files matched by globs; each file becomes one member (rotated .gz decompressed)."""

    name: str
    globs: tuple[str, ...]
    priority: int = STANDARD
    keep: str = "head"  # "tail" for logs: the newest lines matter
    since: bool = False  # --since skips files not modified since the cutoff
    max_bytes: Optional[int] = None  # below the per-file cap
    newest_under: Optional[str] = None  # keep the newest N entries of this directory


@dataclass(frozen=True)
class CommandItem:
    """A command whose output becomes `commands/<name>.txt` (tokens in braces are filled)."""

    name: str
    argv: tuple[str, ...]
    priority: int = STANDARD
    timeout: float = 20.0
    host_only: bool = True  # describes the running machine: never run under --root
    line_filter: Optional[str] = None  # regex: keep only matching lines
    ok_returncodes: Optional[tuple[int, ...]] = None  # None: any exit status is output
    per_agent_unit: bool = False  # one run per agent unit name ({unit})


@dataclass(frozen=True)
class ListingItem:
    """An `ls -alF`-style listing of one directory, made in Python (works under --root)."""

    name: str
    directory: str
    priority: int = STANDARD


@dataclass(frozen=True)
class Catalogue:
    files: tuple[FileItem, ...]
    commands: tuple[CommandItem, ...]
    listings: tuple[ListingItem, ...]
    never_collect: tuple[str, ...]  # basename globs, whatever matched them
    rules: tuple[Rule, ...] = field(default=DEFAULT_RULES)

    def file_globs(self, lib_dir: str, extension_log_dir: str, *,
                   full: bool) -> dict[str, tuple[str, ...]]:
        """Item name -> globs with the agent's directories filled in."""
        return {
            item.name: tuple(expand(glob, lib_dir, extension_log_dir) for glob in item.globs)
            for item in self.files
            if full or item.priority < FULL
        }


def expand(template: str, lib_dir: str, extension_log_dir: str) -> str:
    return (template.replace("{lib_dir}", lib_dir.rstrip("/") or "/")
            .replace("{extension_log_dir}", extension_log_dir.rstrip("/") or "/"))


def _unit_globs(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        pattern
        for directory in UNIT_DIRS
        for name in names
        for pattern in (f"{directory}/{name}", f"{directory}/{name}.d/*.conf")
    )


NEVER_COLLECT = (
    "*.prv", "*.pem", "*.crt", "*.p7m", "Certificates.*", "TransportPrivate.pem", "CustomData",
    "*.key", "*.pfx", "*.p12",
    # Issue 14 item 2: password databases, SSH keys and certificate stores under any
    # name we can know; content rules (waagent_guard.redact) catch the renamed ones.
    "shadow", "shadow-", "gshadow", "gshadow-", "*.shadow", "ssh_host_*_key", "id_rsa",
    "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk", "*.ppk", "*.jks",
    "*.keystore", "*.p7b", "*.p7c", "*.p7s", "*.der", "*.cer", "*.pkcs12", "*.p8", "*.pk8",
    "*.kdbx", "*.gpg", "*.asc",
)

_FILES = (
    # The troubleshooting guide's set: Lib.Dir/*.xml, waagent.log, Extension.LogDir/**.
    FileItem("agent-xml", ("{lib_dir}/*.xml",), MUST_HAVE),
    FileItem("agent-log", (WAAGENT_LOG,), MUST_HAVE, keep="tail"),
    FileItem("extension-logs", ("{extension_log_dir}/**",), MUST_HAVE, keep="tail", since=True),
    FileItem("agent-log-rotated", (f"{WAAGENT_LOG}.*", f"{WAAGENT_LOG}-*"), keep="tail",
             since=True),
    FileItem("agent-conf", ("/etc/waagent.conf", "/usr/share/oem/waagent.conf",
                            "/usr/share/defaults/waagent/waagent.conf")),
    FileItem("extension-status", ("{lib_dir}/*/status/*.status",)),
    FileItem("handler-state", ("{lib_dir}/*/config/HandlerState",
                               "{lib_dir}/*/config/HandlerStatus")),
    FileItem("extension-settings", ("{lib_dir}/*/config/*.settings",)),
    FileItem("handler-manifest", ("{lib_dir}/*/HandlerManifest.json",
                                  "{lib_dir}/*/HandlerEnvironment.json")),
    FileItem("agent-status", ("{lib_dir}/waagent_status*.json",)),
    FileItem("history", ("{lib_dir}/history/*", "{lib_dir}/history/*/**"),
             newest_under="{lib_dir}/history"),
    FileItem("agent-errors", ("{lib_dir}/WALinuxAgent-*/error.json",)),
    FileItem("agent-markers", ("{lib_dir}/WireServerEndpoint", "{lib_dir}/provisioned",
                               "{lib_dir}/disable_agent", "{lib_dir}/current_version",
                               "{lib_dir}/*/heartbeat.log", "{lib_dir}/*/mrseq")),
    FileItem("os-release", ("/etc/*-release", "/etc/os-release", "/usr/lib/os-release")),
    FileItem("hostname", ("/etc/hostname",)),
    FileItem("agent-unit", _unit_globs(AGENT_UNIT_NAMES)),
    FileItem("guard-unit", _unit_globs((GUARD_UNIT,))),
    FileItem("guard-config", ("/etc/waagent-guard/guard.toml",)),
    FileItem("vmbackup-conf", ("/etc/azure/vmbackup.conf",)),
    FileItem("dhcp-leases", DHCP_LEASE_GLOBS),
    # --full
    FileItem("syslog", ("/var/log/syslog", "/var/log/messages"), FULL, keep="tail"),
    FileItem("cloud-init", ("/var/log/cloud-init.log", "/var/log/cloud-init-output.log",
                            "/etc/cloud/cloud.cfg", "/etc/cloud/cloud.cfg.d/*"), FULL, keep="tail"),
    FileItem("network-config", (
        "/etc/netplan/*.yaml", "/etc/network/interfaces", "/etc/network/interfaces.d/*",
        "/etc/sysconfig/network-scripts/ifcfg-*", "/etc/sysconfig/network/ifcfg-*",
        "/etc/systemd/network/*", "/etc/resolv.conf", "/etc/hosts",
    ), FULL),
)

_COMMANDS = (
    CommandItem("systemctl-status-{unit}",
                ("systemctl", "status", "--no-pager", "--full", "{unit}"), per_agent_unit=True),
    CommandItem("systemctl-show-{unit}", ("systemctl", "show", "--no-pager", "{unit}"),
                per_agent_unit=True),
    CommandItem("journal-{unit}", ("journalctl", "--no-pager", "-o", "short-iso", "-u", "{unit}",
                                   "{since}"), per_agent_unit=True, timeout=60.0),
    CommandItem(f"systemctl-status-{GUARD_UNIT}",
                ("systemctl", "status", "--no-pager", "--full", GUARD_UNIT)),
    CommandItem(f"systemctl-show-{GUARD_UNIT}", ("systemctl", "show", "--no-pager", GUARD_UNIT)),
    CommandItem("ps", ("ps", "-eo", "pid,ppid,user,etimes,rss,args"),
                line_filter=r"^\s*PID\b|waagent|WALinuxAgent|exthandlers"),
    CommandItem("ip-route", ("ip", "route", "show", "table", "all")),
    CommandItem("iptables-security", ("iptables", "-w", "5", "-t", "security", "-S"),
                line_filter=WIRESERVER.replace(".", r"\.")),
    CommandItem("iptables-filter", ("iptables", "-w", "5", "-S"),
                line_filter=WIRESERVER.replace(".", r"\.")),
    CommandItem("nft-ruleset", ("nft", "list", "ruleset"),
                line_filter=WIRESERVER.replace(".", r"\.")),
    # The guard's own view, in a subprocess so a broken module cannot break the bundle.
    CommandItem("waagent-guard-status", ("{python}", "-m", "waagent_guard", "status", "--json",
                                         "--root", "{root}", "{config}"),
                host_only=False, ok_returncodes=(0, 1, 2), timeout=60.0),
    CommandItem("waagent-guard-doctor", ("{python}", "-m", "waagent_guard", "doctor", "--json",
                                         "--root", "{root}", "{config}"),
                host_only=False, ok_returncodes=(0, 1, 2), timeout=90.0),
)

_LISTINGS = (
    ListingItem("ls-alF-var-log", "/var/log"),
    ListingItem("ls-alF-lib-dir", "{lib_dir}"),
)

DEFAULT_CATALOGUE = Catalogue(
    files=_FILES, commands=_COMMANDS, listings=_LISTINGS, never_collect=NEVER_COLLECT
)
