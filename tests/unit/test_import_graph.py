"""The packages' import graph has no cycle and no arrow up, counting imports inside functions too:
every module can be read (and tested) after the ones it uses, and every module sits on one of the
declared layers below, importing only from its own layer or the ones beneath it
(docs/development.md draws them)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("maas", "deployments", "pipelines")

LAYERS: list[tuple[str, tuple[str, ...]]] = [  # bottom to top
    ("foundation", ("maas.config", "maas.limits", "maas.defaults", "maas.allocator", "maas.offline")),
    ("protocol", ("maas.protocol",)),
    ("generation rules", ("maas.generation_rules",)),
    ("storage", ("maas.storage",)),
    ("engines", ("maas.engines",)),
    ("serving helpers", ("maas.serving",)),
    ("edge", ("maas.edge",)),
    ("endpoints", ("maas.endpoints",)),
    ("deployments", ("deployments",)),
    ("pipelines", ("pipelines",)),
    ("cli", ("maas.cli", "maas.deploy", "maas.console")),
]
"""The floors of the house, bottom first, each a list of module prefixes (a module belongs to its
longest matching prefix). A module may import its own floor and the ones below, never above."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere in its body (``from a.b import c`` is
    ``a.b.c`` when that is a module, else ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    modules = set(files)
    edges = {name: imports_of(path, modules) - {name} for name, path in files.items()}
    for name in modules:  # a package's __init__ is not an edge to its own modules
        edges[name] = {m for m in edges[name] if not name.startswith(m + ".") or m not in PACKAGES}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module``'s floor (its longest matching prefix), or None."""
    found = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
             if module == prefix or module.startswith(prefix + ".")]
    return max(found)[1] if found else None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Each import from a lower floor to a higher one, as ``a (floor) -> b (floor)``."""
    found = []
    for module, imported in sorted(edges.items()):
        for target in sorted(imported):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                found.append(f"{module} ({LAYERS[low][0]}) -> {target} ({LAYERS[high][0]})")
    return found


def test_every_module_sits_on_a_declared_layer() -> None:
    unplaced = sorted(m for m in graph() if m not in PACKAGES and layer_of(m) is None)
    assert not unplaced, f"add these modules' prefixes to LAYERS: {unplaced}"


def test_no_import_runs_up_the_layers() -> None:
    upward = upward_imports(graph())
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from maas.cli import main\n")
    edges = {"maas.engines.m": imports_of(module, {"maas.cli"})}
    assert upward_imports(edges) == ["maas.engines.m (engines) -> maas.cli (cli)"]
