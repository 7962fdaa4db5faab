"""Every doctor check as data: stable code, title, guide cause, severity, remedy, link.

Codes never change meaning once released (fleets alert on them). Causes are
the rows of the backup troubleshooting guide: 1 network, 2 agent, 3 the
VMSnapshot extension, 4 snapshot delayed (pressure, DHCP); 0 is general. Remedy
templates are filled with this host's facts (`{unit}`, `{conf}`, ...) by
`render_remedy`, so the advice names the distro's unit and exact commands.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

GUIDE_URL = (
    "https://learn.microsoft.com/azure/backup/"
    "backup-azure-troubleshoot-vm-backup-fails-snapshot-timeout"
)

CAUSE_TITLES = {
    0: "General health",
    1: "Cause 1: the VM cannot reach Azure (WireServer, IMDS, storage)",
    2: "Cause 2: the VM agent is down, old or not restarting",
    3: "Cause 3: the backup extension (VMSnapshot) fails to update or load",
    4: "Cause 4: the snapshot cannot be taken in time (pressure, DHCP)",
}


@dataclass(frozen=True)
class CheckSpec:
    code: str
    title: str
    cause: int
    severity: str  # what a failure means: "critical" | "high" | "medium" | "low"
    remedy: str
    # The guide article; it has no stable per-cause anchors, the cause number says which row.
    link: str = GUIDE_URL


_RESTART = "sudo {restart_command}"

CATALOGUE: tuple[CheckSpec, ...] = (
    # -- cause 2: the agent ---------------------------------------------------------------
    CheckSpec(
        "WG-AGENT-001", "Agent service active and daemon process running", 2, "critical",
        "Start the agent: sudo {start_command}; then check it: {status_command} and "
        "ps -e -o pid,args | grep '[w]aagent -daemon'. If it stops again, read "
        "/var/log/waagent.log and sudo journalctl -u {unit} -n 200.",
    ),
    CheckSpec(
        "WG-AGENT-002", "Goal-state agent (ExtHandler) process running", 2, "high",
        "The daemon runs extensions through its -run-exthandlers child. Restart the agent: "
        + _RESTART + "; if {lib_dir}/disable_agent exists, extensions are disabled on purpose.",
    ),
    CheckSpec(
        "WG-AGENT-003", "Agent pidfile is not stale", 2, "high",
        "A pidfile naming another live process makes the agent exit at start ('Daemon is "
        "already running'). Remove it and start the agent: sudo rm -f {pid_file} && "
        "sudo {start_command}",
    ),
    CheckSpec(
        "WG-AGENT-004", "Agent service restarts automatically", 2, "high",
        "Configure the agent to restart automatically: sudo waagent-guard agent "
        "ensure-autorestart (adds a drop-in with Restart=always, RestartSec=5 to {unit}), "
        "or run the waagent-guard daemon, which restarts it within its limits.",
    ),
    CheckSpec(
        "WG-AGENT-005", "Agent versions known and not blacklisted", 2, "medium",
        "Install the latest agent from the distribution (sudo {update_command}) and restart "
        "it: " + _RESTART + ". "
        "A blacklisted auto-update version failed 3 times in 300 s; see its error.json under "
        "{lib_dir}.",
    ),
    CheckSpec(
        "WG-AGENT-006", "Agent auto-update enabled", 2, "low",
        "Let the agent keep itself current: in {conf} write AutoUpdate.UpdateToLatestVersion=y "
        "(and AutoUpdate.Enabled=y), then " + _RESTART + "; or keep the distro package "
        "current.",
    ),
    CheckSpec(
        "WG-AGENT-007", "Verbose agent logging (Logs.Verbose)", 2, "low",
        "Verbose logging is very chatty; use a lease that reverts itself: sudo waagent-guard "
        "verbose on --for 1h, and sudo waagent-guard verbose off when done.",
    ),
    # -- cause 3: the VMSnapshot extension ------------------------------------------------
    CheckSpec(
        "WG-EXT-001", "Extensions enabled in the agent (Extensions.Enabled)", 3, "critical",
        "With Extensions.Enabled=n every extension, backup included, fails. Set "
        "Extensions.Enabled=y in {conf} (no spaces around =), then " + _RESTART + ".",
    ),
    CheckSpec(
        "WG-EXT-002", "VMSnapshot extension installed", 3, "medium",
        "The backup service installs {vmsnapshot} at the first backup. If the VM is protected "
        "by Azure Backup, run an on-demand backup, then re-run waagent-guard doctor.",
    ),
    CheckSpec(
        "WG-EXT-003", "VMSnapshot version at least the minimum", 3, "high",
        "Uninstall the extension so the next backup installs the latest ({min_version} or "
        "newer): az vm extension delete --resource-group <rg> --vm-name <vm> --name "
        "VMSnapshotLinux (portal: VM > Extensions > VMSnapshotLinux > Uninstall), then run "
        "a backup.",
    ),
    CheckSpec(
        "WG-EXT-004", "VMSnapshot handler enabled and ready", 3, "high",
        "The handler is stuck (state {handler_state}). Uninstall it so the next backup "
        "reinstalls it: az vm extension delete --resource-group <rg> --vm-name <vm> --name "
        "VMSnapshotLinux, then run a backup.",
    ),
    CheckSpec(
        "WG-EXT-005", "VMSnapshot last status not an error", 3, "high",
        "Read the extension's log: sudo tail -n 100 {extension_log}. If failures repeat, "
        "uninstall the extension (az vm extension delete --resource-group <rg> --vm-name <vm> "
        "--name VMSnapshotLinux) and run a backup.",
    ),
    CheckSpec(
        "WG-EXT-006", "No recent VMSnapshot failures in the logs", 3, "medium",
        "Look at the failures: grep -n VMSnapshot /var/log/waagent.log | tail and sudo tail -n "
        "100 {extension_log}; collect them with sudo waagent-guard bundle for support.",
    ),
    # -- cause 1: network -----------------------------------------------------------------
    CheckSpec(
        "WG-NET-001", "WireServer reachable (HTTP {wireserver}:80 /?comp=versions)", 1,
        "critical",
        "The agent must reach {wireserver}:80 as root. Check: ip route get {wireserver}; "
        "sudo iptables -w -t security -S OUTPUT; NSG/UDR rules must not block {wireserver}. "
        "Never proxy it.",
    ),
    CheckSpec(
        "WG-NET-002", "HostGAPlugin reachable ({wireserver}:32526 /health)", 1, "high",
        "Allow TCP {wireserver}:32526 from the VM (the agent fetches vmSettings and extension "
        "packages there); check ip route get {wireserver} and local firewall rules.",
    ),
    CheckSpec(
        "WG-NET-003", "Instance Metadata Service (IMDS) reachable", 1, "medium",
        "IMDS (169.254.169.254) must be reached directly, never through a proxy: exclude it "
        "in NO_PROXY and check ip route get 169.254.169.254.",
    ),
    CheckSpec(
        "WG-NET-004", "Backup storage endpoint reachable (HTTPS)", 1, "critical",
        "Allow outbound HTTPS to Azure Storage: NSG rule with the 'Storage' service tag (or "
        "the region's IP ranges), or set HttpProxy.Host and HttpProxy.Port in {conf} and "
        + _RESTART + ".",
    ),
    CheckSpec(
        "WG-NET-005", "Configured HTTP proxy reachable", 1, "high",
        "The agent's HttpProxy.Host/HttpProxy.Port ({proxy}) in {conf} must accept "
        "connections; fix the proxy or remove the keys and " + _RESTART + ".",
    ),
    CheckSpec(
        "WG-NET-006", "Route to the WireServer", 1, "high",
        "Add or fix the route: ip route get {wireserver} must name the primary NIC; keep "
        "DHCP on so the platform's routes are installed.",
    ),
    CheckSpec(
        "WG-NET-007", "Agent firewall lets root reach the WireServer", 1, "high",
        "The agent's rules (iptables security table, OUTPUT) must ACCEPT root (uid 0) before "
        "any DROP to {wireserver}. Inspect: sudo iptables -w -t security -S OUTPUT; remove "
        "the blocking rule, then " + _RESTART + " so the agent re-adds its own.",
    ),
    CheckSpec(
        "WG-NET-008", "No WireServer / goal-state errors in the recent agent log", 1, "high",
        "The agent failed to fetch its goal state: probe the WireServer (sudo waagent-guard "
        "doctor --probe) and read grep -n 'goal state' /var/log/waagent.log | tail.",
    ),
    # -- cause 4: snapshot delayed --------------------------------------------------------
    CheckSpec(
        "WG-SNAP-001", "WireServer endpoint known (WireServerEndpoint, DHCP option 245)", 4,
        "high",
        "The VM learns the fabric address from DHCP option 245. Keep DHCP enabled in the "
        "guest (set static IPs in the platform, not the guest), then " + _RESTART + ".",
    ),
    CheckSpec(
        "WG-SNAP-002", "DHCP client in use (no static addressing)", 4, "high",
        "Re-enable DHCP on the primary NIC (netplan dhcp4: true, BOOTPROTO=dhcp, or "
        "iface eth0 inet dhcp); assign static addresses in the Azure portal instead.",
    ),
    CheckSpec(
        "WG-SNAP-003", "CPU usage below the threshold", 4, "medium",
        "Above {cpu_threshold} % CPU the snapshot is queued and times out: find the load "
        "(top -b -n1 | head -20), move the backup window to a quiet time, or try an "
        "on-demand backup.",
    ),
    CheckSpec(
        "WG-SNAP-004", "Memory usage below the threshold", 4, "medium",
        "Above {memory_threshold} % memory the snapshot is delayed: find the consumers "
        "(ps -eo pid,rss,args --sort=-rss | head), free memory or resize the VM, then retry "
        "the backup on demand.",
    ),
    # -- cause 0: general -----------------------------------------------------------------
    CheckSpec(
        "WG-SYS-001", "Agent configuration file readable", 0, "medium",
        "Fix {conf}: write Key=value lines with no spaces or quotes (the VMSnapshot "
        "extension's own parser rejects 'Key = value'), then " + _RESTART + ".",
    ),
    CheckSpec(
        "WG-SYS-002", "Free space for /var/log", 0, "high",
        "Free space on /var/log: sudo journalctl --vacuum-size=200M; remove old rotated logs "
        "(sudo find /var/log -name '*.gz' -mtime +30 -delete).",
    ),
    CheckSpec(
        "WG-SYS-003", "Free space for the agent's Lib.Dir", 0, "high",
        "Free space on the file system holding {lib_dir}: remove old handler versions the "
        "agent no longer uses and old history zips under {lib_dir}/history.",
    ),
)

_BY_CODE = {spec.code: spec for spec in CATALOGUE}


def spec(code: str) -> CheckSpec:
    """The catalogue entry for `code` (KeyError for an unknown code)."""
    return _BY_CODE[code]


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Fill `{name}` fields; unknown names stay literal instead of raising."""
    return string.Formatter().vformat(
        template, (), _Defaulting({key: str(value) for key, value in values.items()})
    )
