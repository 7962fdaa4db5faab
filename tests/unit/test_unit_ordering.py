"""The guard's unit forms no ordering cycle with any agent unit we know (issue 10 item 1).

systemd orders by After=/Before= plus implicit edges: a unit in
`WantedBy=X.target` with default dependencies is ordered Before=X.target (unless it
is explicitly After= it), and a
service is After=basic.target (itself after sysinit). This builds that graph for
our unit next to each agent unit in tests/data/units (Debian 12's has
After=multi-user.target) and looks for a cycle. The end-to-end boot test
(tests/e2e/test_boot.py) proves the same with real systemd.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUARD_UNIT = REPO / "systemd" / "waagent-guard.service"
AGENT_UNITS = sorted((REPO / "tests" / "data" / "units").glob("*.service"))
# The targets' own ordering (systemd.special(7)): multi-user after basic after sysinit.
TARGET_EDGES = {
    ("basic.target", "sysinit.target"),
    ("multi-user.target", "basic.target"),
    ("network-online.target", "network.target"),
    ("network.target", "sysinit.target"),
    ("cloud-init.service", "basic.target"),  # cloud-init runs before multi-user
    ("multi-user.target", "cloud-init.service"),
}


def _unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def ordering_edges(name: str, path: Path) -> set[tuple[str, str]]:
    """(a, b) means a starts after b."""
    unit = _unit(path)
    edges: set[tuple[str, str]] = set()
    section = unit["Unit"] if unit.has_section("Unit") else {}
    for other in section.get("After", "").split():
        edges.add((name, other))
    for other in section.get("Before", "").split():
        edges.add((other, name))
    if section.get("DefaultDependencies", "yes") != "no":
        edges.add((name, "basic.target"))
        install = unit["Install"] if unit.has_section("Install") else {}
        for target in install.get("WantedBy", "").split():
            # The target's implicit After= on what it wants, unless the unit is ordered
            # after the target itself (systemd's target_add_default_dependencies skips
            # it rather than make a loop: Debian's agent is After=multi-user.target).
            if (name, target) not in edges:
                edges.add((target, name))
    return edges


def find_cycle(edges: set[tuple[str, str]]) -> list[str]:
    graph: dict[str, set[str]] = {}
    for after, before in edges:
        graph.setdefault(after, set()).add(before)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str]:
        if node in visiting:
            return [*visiting[visiting.index(node):], node]
        if node in done:
            return []
        visiting.append(node)
        for successor in sorted(graph.get(node, ())):
            cycle = visit(successor)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return []


def test_the_checker_finds_the_cycle_issue_10_reported() -> None:
    """The old unit (After=walinuxagent.service) next to Debian's is a cycle."""
    debian = REPO / "tests" / "data" / "units" / "debian12__walinuxagent.service"
    edges = ordering_edges("walinuxagent.service", debian) | TARGET_EDGES
    edges |= {("waagent-guard.service", "walinuxagent.service"),
              ("multi-user.target", "waagent-guard.service")}
    assert find_cycle(edges)


@pytest.mark.parametrize("agent_unit", AGENT_UNITS, ids=lambda p: p.name)
def test_guard_unit_has_no_ordering_cycle_with_the_agent_unit(agent_unit: Path) -> None:
    agent_name = agent_unit.name.split("__", 1)[1]
    edges = (
        ordering_edges("waagent-guard.service", GUARD_UNIT)
        | ordering_edges(agent_name, agent_unit)
        | TARGET_EDGES
    )
    assert find_cycle(edges) == []


def test_every_known_agent_unit_is_covered() -> None:
    names = {path.name.split("__", 1)[0] for path in AGENT_UNITS}
    assert {"debian12", "ubuntu", "upstream", "redhat", "rhel8", "sles"} <= names
