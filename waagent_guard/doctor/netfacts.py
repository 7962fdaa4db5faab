"""Network facts for the doctor: DHCP leases (option 245), static addressing, route, firewall.

Parsers are pure (text in, values out); the gatherers read files under the
sysroot or run `ip route get` / `iptables -S` through an injected runner. None
of this sends a packet: `ip route get` only asks the kernel's routing table.
"""

from __future__ import annotations

import glob
import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from waagent_guard.errors import GuardError
from waagent_guard.execute import CommandRunner
from waagent_guard.fsutil import read_text
from waagent_guard.sysroot import DHCP_LEASE_GLOBS, Sysroot

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_SECONDS = 2.0
MAX_LEASE_BYTES = 256 * 1024

# dhclient writes unknown options as hex bytes (`option unknown-245 a8:3f:81:10;`);
# systemd-networkd writes `OPTION_245=A83F8110`; some tools write the dotted address.
_DHCLIENT_245 = re.compile(r"option\s+unknown-245\s+\"?([0-9A-Fa-f:.]+)\"?\s*;")
_NETWORKD_245 = re.compile(r"^OPTION_245=([0-9A-Fa-f]+)\s*$", re.MULTILINE)

STATIC_CONFIG_GLOBS = (
    "/etc/network/interfaces",
    "/etc/network/interfaces.d/*",
    "/etc/netplan/*.yaml",
    "/etc/sysconfig/network-scripts/ifcfg-*",
    "/etc/sysconfig/network/ifcfg-*",
    "/etc/NetworkManager/system-connections/*",
    "/etc/systemd/network/*.network",
)
_STATIC_PATTERNS = (
    re.compile(r"^\s*iface\s+\S+\s+inet6?\s+static\b"),  # ifupdown
    re.compile(r"^\s*dhcp4\s*:\s*(false|no|off)\b", re.IGNORECASE),  # netplan
    re.compile(r"^\s*BOOTPROTO\s*=\s*[\"']?(static|none)\b", re.IGNORECASE),  # ifcfg
    re.compile(r"^\s*method\s*=\s*manual\b"),  # NetworkManager keyfile ([ipv4] section)
)


@dataclass(frozen=True)
class LeaseFacts:
    path: str  # host path
    option_245: Optional[str]


@dataclass(frozen=True)
class RouteFacts:
    ok: bool
    text: str
    device: Optional[str] = None


@dataclass(frozen=True)
class FirewallFacts:
    """`iptables -S OUTPUT` lines of the security and filter tables that name the WireServer."""

    rules: tuple[str, ...]
    root_allowed: Optional[bool]  # None: no rule for the WireServer at all
    blocking_rule: Optional[str]


def decode_option_245(value: str) -> Optional[str]:
    """`a8:3f:81:10` / `A83F8110` / `168.63.129.16` -> `168.63.129.16`."""
    text = value.strip().strip('"')
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    digits = text.replace(":", "")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 4 or not all(1 <= len(p) <= 2 for p in parts):
            return None
        digits = "".join(p.rjust(2, "0") for p in parts)
    if len(digits) != 8:
        return None
    try:
        return str(ipaddress.IPv4Address(bytes.fromhex(digits)))
    except ValueError:
        return None


def parse_lease_option_245(text: str) -> Optional[str]:
    """The last option 245 in a lease file (dhclient appends newer leases)."""
    found: Optional[str] = None
    for match in _DHCLIENT_245.finditer(text):
        found = decode_option_245(match.group(1)) or found
    for match in _NETWORKD_245.finditer(text):
        found = decode_option_245(match.group(1)) or found
    return found


def _expand(sysroot: Sysroot, pattern: str) -> list[str]:
    return sorted(glob.glob(str(sysroot.path(pattern))))


def _read_text(path: str) -> Optional[str]:
    try:
        return read_text(path, MAX_LEASE_BYTES, oversize="truncate")
    except OSError:
        return None


def gather_leases(sysroot: Sysroot) -> tuple[LeaseFacts, ...]:
    leases: list[LeaseFacts] = []
    for pattern in DHCP_LEASE_GLOBS:
        for path in _expand(sysroot, pattern):
            text = _read_text(path)
            if text is None or not text.strip():
                continue
            leases.append(LeaseFacts(sysroot.host_path(path), parse_lease_option_245(text)))
    return tuple(leases)


def static_addressing_hints(sysroot: Sysroot) -> tuple[str, ...]:
    """`file:line: text` for each line that configures a static address instead of DHCP."""
    hints: list[str] = []
    for pattern in STATIC_CONFIG_GLOBS:
        for path in _expand(sysroot, pattern):
            text = _read_text(path)
            if text is None:
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if any(rule.search(line) for rule in _STATIC_PATTERNS):
                    hints.append(f"{sysroot.host_path(path)}:{number}: {line.strip()}")
    return tuple(hints)


def parse_route_get(text: str) -> RouteFacts:
    """Output of `ip route get ADDR`: the first line names `dev X` when there is a route."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if not first or first.split()[0] in ("unreachable", "prohibit", "blackhole", "throw"):
        return RouteFacts(False, first or "no output")
    words = first.split()
    device = words[words.index("dev") + 1] if "dev" in words[:-1] else None
    return RouteFacts(device is not None, first, device)


def _command_error(program: str, error: GuardError) -> str:
    if "not found" in error.message:
        return f"{program} is not installed"
    return f"{program} failed: {error.message}"


def gather_route(runner: CommandRunner, wireserver: str) -> RouteFacts:
    try:
        result = runner(["ip", "route", "get", wireserver], timeout=COMMAND_TIMEOUT_SECONDS)
    except GuardError as error:
        return RouteFacts(False, _command_error("ip", error))
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip() or f"exit {result.returncode}"
        return RouteFacts(False, message)
    return parse_route_get(result.stdout)


def _names_wireserver(rule: str, wireserver: str) -> bool:
    return f"-d {wireserver}/32" in rule or f"-d {wireserver} " in f"{rule} "


def _is_drop(rule: str) -> bool:
    return bool(re.search(r"-j (DROP|REJECT)\b", rule))


def _is_root_accept(rule: str) -> bool:
    return "-j ACCEPT" in rule and re.search(r"--uid-owner 0\b", rule) is not None


def evaluate_firewall(rules: Sequence[str], wireserver: str) -> FirewallFacts:
    """Walk the OUTPUT rules in order: does root get an ACCEPT before any DROP/REJECT?"""
    relevant = tuple(rule for rule in rules if _names_wireserver(rule, wireserver))
    if not relevant:
        return FirewallFacts((), None, None)
    for rule in relevant:
        if _is_root_accept(rule):
            return FirewallFacts(relevant, True, None)
        # The agent's own DROP carries `--ctstate INVALID,NEW` and an owner match for
        # non-root; a plain DROP/REJECT for the WireServer hits root too.
        if _is_drop(rule) and "--uid-owner" not in rule:
            return FirewallFacts(relevant, False, rule)
    return FirewallFacts(relevant, True, None)


def gather_firewall(runner: CommandRunner, wireserver: str) -> tuple[Optional[FirewallFacts], str]:
    """(facts, "") or (None, why it could not be read)."""
    rules: list[str] = []
    errors: list[str] = []
    for table in ("security", "filter"):
        argv = ["iptables", "-w", "-t", table, "-S", "OUTPUT"]
        try:
            result = runner(argv, timeout=COMMAND_TIMEOUT_SECONDS)
        except GuardError as error:
            errors.append(_command_error("iptables", error))
            break
        if result.returncode != 0:
            errors.append((result.stderr or result.stdout).strip() or f"exit {result.returncode}")
            continue
        rules.extend(line.strip() for line in result.stdout.splitlines() if line.startswith("-A"))
    if errors and not rules:
        return None, "; ".join(errors)
    return evaluate_firewall(rules, wireserver), ""
