"""The package's shape: imports point down the layers, no cycle, no long module.

Built from the source (the AST of every module, imports inside functions
included), so an import on a branch that never runs counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import duroot_stream

PACKAGE = "duroot_stream"
ROOT = Path(duroot_stream.__file__).parent
MAX_LINES = 420  # "about 400": a module that needs a table of contents is too long

# Each part may import only the parts on lower lines (and itself).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"domain"}),
    frozenset({"compiled", "version", "ids", "config", "logs", "serving", "metrics", "tracing"}),
    frozenset({"wire"}),
    frozenset({"kafka"}),
    frozenset({"processor", "client"}),
    frozenset({"runner"}),
    frozenset({"web"}),
    # Downstream services: they read the topics and send commands like any client.
    frozenset({"exporter", "scheduler"}),
    # Local development infrastructure and operator tools: no service imports them.
    frozenset({"local"}),
    frozenset({"ops"}),
    frozenset({"cli"}),
)

# What every service shares; development and operator tools live in local/ and ops/.
ROOT_MODULES = frozenset(
    {"__init__", "compiled", "version", "ids", "config", "logs", "serving", "metrics", "tracing"}
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str) -> Iterator[str]:
    """The package's own modules that importing `name` runs, one step deep."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    here = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in MODULES else base for t in targets]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            # Importing a.b.c runs a and a.b first: their __init__ counts too.
            for i in range(2, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in MODULES and not name.startswith(ancestor + ".") and ancestor != name:
                    yield ancestor


GRAPH: dict[str, set[str]] = {name: set(imports_of(name)) for name in MODULES}


def part_of(name: str) -> str:
    return name.split(".")[1] if "." in name else ""


def layer_of(part: str) -> int:
    for i, parts in enumerate(LAYERS):
        if part in parts:
            return i
    raise AssertionError(f"{PACKAGE}.{part} is in no layer of tests/test_layout.py: add it")


def find_cycle() -> list[str] | None:
    """A cycle of imports as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_graph_sees_the_known_edges() -> None:
    # A guard against a graph builder that finds nothing.
    assert "duroot_stream.processor" in GRAPH["duroot_stream.cli.processor"]
    assert "duroot_stream.domain" in GRAPH["duroot_stream.wire.codec"]
    assert any(t.startswith("duroot_stream.client") for t in GRAPH["duroot_stream.cli.run"])


def test_no_import_cycle() -> None:
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("name", sorted(MODULES), ids=lambda n: n.removeprefix(PACKAGE + "."))
def test_imports_point_down_the_layers(name: str) -> None:
    if name == PACKAGE:
        return
    mine = layer_of(part_of(name))
    upward = sorted(t for t in GRAPH[name] if t != PACKAGE and layer_of(part_of(t)) > mine)
    assert not upward, f"{name} imports {upward}, which sit above it"


def test_services_never_import_the_cli() -> None:
    offenders = {
        name: sorted(t for t in targets if part_of(t) == "cli")
        for name, targets in GRAPH.items()
        if part_of(name) != "cli"
    }
    assert {n: t for n, t in offenders.items() if t} == {}


@pytest.mark.parametrize("name", sorted(MODULES), ids=lambda n: n.removeprefix(PACKAGE + "."))
def test_no_module_is_too_long(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines (at most about 400)"


def test_a_cycle_is_found_when_there_is_one() -> None:
    # The detector itself, on a graph with a known cycle.
    saved = dict(GRAPH)
    try:
        GRAPH["duroot_stream.domain"] = {*GRAPH["duroot_stream.domain"], "duroot_stream.wire"}
        cycle = find_cycle()
        assert cycle is not None and cycle[0] == cycle[-1]
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_the_package_root_holds_only_what_every_service_shares() -> None:
    here = {p.stem for p in ROOT.glob("*.py")}
    assert here == ROOT_MODULES, f"move {sorted(here - ROOT_MODULES)} into a package of its own"


def test_no_two_modules_share_a_name() -> None:
    # The same file name in two packages reads as the same job; give each its own.
    by_name: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            by_name.setdefault(path.stem, []).append(name)
    assert {n: ms for n, ms in by_name.items() if len(ms) > 1} == {}
