"""The core's modules form layers: each imports only modules below it, so the core reads
bottom-up and no import cycle can come back (docs/architecture.md describes the layers).

Every import counts: module-level, inside functions (lazy for speed, still a dependency) and
under ``if TYPE_CHECKING:`` (a type is a dependency too). One type-only back-reference is
allowed by design: ``hook_types`` (the objects hooks receive) names the hook facade
``plugins.Plugins`` that ``RunContext.plugins`` and ``EvalContext.plugins`` carry, so plugins
can call hooks; it never runs. Shims kept for third parties (``context``) sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

CORE = ROOT / "core" / "tinkerplug"
ALLOWED = {("tinkerplug.hook_types", "tinkerplug.plugins")}  # type-only; see above


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The core modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tinkerplug import rundir` imports the submodule; `from tinkerplug import hookimpl` the package
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [s for s in subs if s in modules] or [node.module]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def core_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in CORE.rglob("*.py")}
    modules = set(files)
    return {m: {d for d in imported(p, modules) if d != m and (m, d) not in ALLOWED} for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (``[a, b, a]``), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_core_has_no_import_cycle():
    cycle = find_cycle(core_graph())
    assert cycle is None, "import cycle in the core: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_no_plugin():
    """The core never depends on a plugin: no ``tinkerplug_*`` package, and outside the
    first-party ``commands`` plugin (which lives in the core package) nothing imports it."""
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith("tinkerplug_"), f"{path.relative_to(ROOT)} imports the plugin {name}"
                if not module_name(path).startswith("tinkerplug.commands"):
                    assert not name.startswith("tinkerplug.commands"), f"{path.relative_to(ROOT)} imports the commands plugin"
