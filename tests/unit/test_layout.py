"""The package's layout holds: no import cycles, no upward imports, one subprocess caller.

Every module of waagent_guard is parsed with `ast` (nothing is imported): every
`import` and `from ... import` at any depth counts, inside functions and under
`if TYPE_CHECKING:` too (a lazy import still ties the two modules together), relative
imports are resolved, and the `"waagent_guard.x:function"` handler strings cli.py
imports through importlib count as imports of `waagent_guard.x`.

The layers, lowest first (docs/ARCHITECTURE.md says the same in prose). A module may
import modules of its own package (`agent/*` among themselves) and of LOWER layers;
never of a higher layer, and never of another package of its own layer (the tools
`doctor/`, `bundle/` and `demo/` stay independent; `observe`, `policy` and `lease`
do not know each other). Between packages, calls go downward only:

- foundations: `errors`, `timeutil`, `sysroot`, `redact`, `access`, the package's
  `__init__` (its version): no package imports at all;
- helpers: `fsutil` (atomic writes, bounded reads), `execute` (the only subprocess
  caller), `logsetup`: on the foundations only;
- `agent/`: read-only knowledge of the agent (waagent.conf, its log, Lib.Dir, /proc).
  Below `settings` on purpose: what the agent does does not depend on the guard's config;
- `settings`, then `context` (what a command runs with: a sysroot and the settings);
- `service/`: the service managers and the auto-restart drop-in;
- `observe`, `policy`, `lease`: one observation, the pure restart decision, the
  verbose lease's state file;
- `metrics`: the exposition of an observation;
- the tools `doctor/`, `bundle/`, `demo/`;
- `daemon/`: the long-running guard wiring the layers below;
- `commands/`: one module per CLI command;
- `cli`: argument parsing and the one error boundary; `__main__` runs it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "waagent_guard"
SOURCE = Path(__file__).resolve().parents[2] / PACKAGE

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundations", frozenset({"__init__", "errors", "timeutil", "sysroot", "redact", "access"})),
    ("helpers", frozenset({"fsutil", "execute", "logsetup"})),
    ("agent", frozenset({"agent"})),
    ("settings", frozenset({"settings"})),
    ("context", frozenset({"context"})),
    ("service", frozenset({"service"})),
    ("core", frozenset({"observe", "policy", "lease"})),
    ("metrics", frozenset({"metrics"})),
    ("tools", frozenset({"doctor", "bundle", "demo"})),
    ("daemon", frozenset({"daemon"})),
    ("commands", frozenset({"commands"})),
    ("cli", frozenset({"cli"})),
    ("main", frozenset({"__main__"})),
)

# Cycles known and being removed (empty: the Guard <-> keepers cycle is gone, issue 11).
# Any other cycle, or one of these growing, fails.
PENDING: tuple[frozenset[str], ...] = ()

# The one module allowed to start processes (tests/unit/test_layout.py's last check).
PROCESS_MODULE = "waagent_guard.execute"
PROCESS_IMPORTS = frozenset({"subprocess", "pty", "multiprocessing"})
PROCESS_OS_CALLS = re.compile(r"(system|popen|fork|forkpty|exec\w*|spawn\w*|posix_spawn\w*)")


def module_files(source: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every .py under `source` (a package directory)."""
    modules: dict[str, Path] = {}
    for path in sorted(source.rglob("*.py")):
        parts = (package, *path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path, tree: ast.AST) -> set[str]:
    """Every dotted name `module` imports, at any depth, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    handler = re.compile(rf"({re.escape(module.split('.')[0])}(?:\.\w+)+):\w+")
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = handler.fullmatch(node.value)
            if match:
                names.add(match.group(1))
    return names


def import_graph(source: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (itself excluded)."""
    modules = module_files(source, package)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = {
            name for name in imported_names(module, path, tree) if name in modules
        } - {module}
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop()
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def part_of(module: str) -> str:
    """The layout unit of a module: its subpackage, or itself for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str, layers: tuple[tuple[str, frozenset[str]], ...] = LAYERS) -> int:
    unit = part_of(module)
    for rank, (_, units) in enumerate(layers):
        if unit in units:
            return rank
    raise AssertionError(
        f"{module}: `{unit}` is in no layer; add it to LAYERS in tests/unit/test_layout.py "
        "and to docs/ARCHITECTURE.md"
    )


def upward_imports(
    graph: Mapping[str, Iterable[str]],
    layers: tuple[tuple[str, frozenset[str]], ...] = LAYERS,
) -> list[str]:
    """`a -> b` lines for every import of a higher layer or of a sibling package."""
    wrong = []
    for module in sorted(graph):
        for target in sorted(graph[module]):
            if part_of(module) == part_of(target):
                continue
            mine, theirs = layer_of(module, layers), layer_of(target, layers)
            if theirs >= mine:
                how = "a sibling of its layer" if theirs == mine else "a higher layer"
                wrong.append(
                    f"{module} ({layers[mine][0]}) imports {target} ({layers[theirs][0]}): {how}"
                )
    return wrong


def process_starters(source: Path, package: str = PACKAGE) -> list[str]:
    """Modules other than execute.py that import subprocess or call os.system/fork/exec*."""
    found = []
    for module, path in module_files(source, package).items():
        if module == PROCESS_MODULE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module.split(".")[0]]
                if node.module == "os":
                    names += [f"os.{a.name}" for a in node.names]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                names = [f"os.{node.attr}"]
            for name in names:
                if name in PROCESS_IMPORTS or (
                    name.startswith("os.") and PROCESS_OS_CALLS.fullmatch(name[3:])
                ):
                    found.append(f"{module} (line {node.lineno}): {name}")  # type: ignore[attr-defined]
    return found


# --- the package -------------------------------------------------------------------------


def test_the_package_has_no_import_cycle_but_the_pending_ones() -> None:
    new = [
        sorted(component)
        for component in cycles(import_graph(SOURCE))
        if not any(component <= pending for pending in PENDING)
    ]
    assert not new, f"import cycles (break them; see docs/ARCHITECTURE.md): {new}"


def test_every_pending_cycle_still_exists() -> None:
    found = cycles(import_graph(SOURCE))
    gone = [sorted(p) for p in PENDING if not any(c <= p for c in found)]
    assert not gone, f"no longer a cycle: remove it from PENDING in {__file__}: {gone}"


def test_no_module_imports_upward() -> None:
    wrong = upward_imports(import_graph(SOURCE))
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_every_part_of_the_package_has_a_layer() -> None:
    units = {part_of(module) for module in module_files(SOURCE)}
    listed = [unit for _, members in LAYERS for unit in members]
    assert len(listed) == len(set(listed)), "a unit is in two layers"
    assert units == set(listed), f"in no layer: {units - set(listed)}; gone: {set(listed) - units}"


def test_only_execute_starts_processes() -> None:
    assert process_starters(SOURCE) == []
    assert "subprocess" in imported_names(
        PROCESS_MODULE, SOURCE / "execute.py", ast.parse((SOURCE / "execute.py").read_text())
    )


# --- the checker itself, on a made-up package --------------------------------------------


def _package(root: Path, files: Mapping[str, str]) -> Path:
    source = root / "pkg"
    for name, text in files.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return source


def test_the_checker_sees_hidden_relative_and_handler_imports(tmp_path: Path) -> None:
    source = _package(
        tmp_path,
        {
            "__init__.py": "",
            "low.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import high\n",
            "high.py": "def f():\n    from . import low\n",
            "sub/__init__.py": "from .. import low\n",
            "sub/leaf.py": "from ..sub import other\n",
            "sub/other.py": "import pkg.sub.leaf as leaf\n",
            "cli.py": "HANDLER = 'pkg.high:run'\n",
        },
    )
    graph = import_graph(source, "pkg")
    assert graph["pkg.low"] == {"pkg", "pkg.high"}  # `from pkg import high` runs pkg too
    assert graph["pkg.high"] == {"pkg", "pkg.low"}
    assert graph["pkg.sub"] == {"pkg", "pkg.low"}
    assert graph["pkg.sub.leaf"] == {"pkg.sub", "pkg.sub.other"}
    assert graph["pkg.cli"] == {"pkg.high"}  # a "module:function" handler string
    assert sorted(map(sorted, cycles(graph))) == [
        ["pkg.high", "pkg.low"],
        ["pkg.sub.leaf", "pkg.sub.other"],
    ]


def test_the_checker_finds_upward_and_sibling_imports() -> None:
    layers = (
        ("base", frozenset({"base"})),
        ("tools", frozenset({"a", "b"})),
        ("top", frozenset({"top"})),
    )
    graph = {
        "pkg.base": {"pkg.top"},
        "pkg.a.x": {"pkg.a.y", "pkg.base", "pkg.b"},
        "pkg.a.y": set(),
        "pkg.b": set(),
        "pkg.top": {"pkg.a.x"},
    }
    wrong = upward_imports(graph, layers)
    assert wrong == [
        "pkg.a.x (tools) imports pkg.b (tools): a sibling of its layer",
        "pkg.base (base) imports pkg.top (top): a higher layer",
    ]
    with pytest.raises(AssertionError, match="`c` is in no layer"):
        upward_imports({"pkg.c": {"pkg.base"}, "pkg.base": set()}, layers)


def test_the_checker_finds_every_way_to_start_a_process(tmp_path: Path) -> None:
    source = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    import subprocess\n",
            "b.py": "import os\nos.execvp('x', ['x'])\n",
            "c.py": "from os import fork\n",
            "d.py": "import os\nos.kill(1, 0)\n",
        },
    )
    found = process_starters(source, "pkg")
    assert [line.split(" ")[0] for line in found] == ["pkg.a", "pkg.b", "pkg.c"]
