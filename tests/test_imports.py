"""No import cycle among the project's modules, counting every import: module level, TYPE_CHECKING
blocks and imports inside functions alike (a cycle that only works because of import order is one)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "analytics",
    "core",
    "importers",
    "mcp_server",
    "prompts",
    "resources",
    "sessions",
    "sql",
    "warehouse",
)


def project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else ():
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name `module` imports anywhere in its file (absolute, relative, `from x import y`:
    both x and x.y, since y may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            # `import a.b.c` also runs a and a.b: the nearest project module is what it depends on
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_the_imports_it_must_see():
    graph = import_graph()
    assert "mcp_server.app" in graph["mcp_server.tools.query"]  # a module-level import
    assert "mcp_server.runtime" in graph["mcp_server.cli"]  # an import inside a function


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_is_found_and_printed():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_point_one_way_between_packages():
    """core (the errors) imports nothing of ours; analytics is pure computation: it imports nothing of ours
    but itself and core (the warehouse registers its
    own database runners, nothing is loaded by a name in a string); the edge imports the rest, never the
    other way round."""
    graph = import_graph()
    lower = {
        "core": {"core"},
        "analytics": {"analytics", "core"},
        "importers": {"analytics", "core", "importers"},
    }
    for module, targets in graph.items():
        package = module.split(".")[0]
        if package in lower:
            outside = {target for target in targets if target.split(".")[0] not in lower[package]}
            assert not outside, f"{module} imports {sorted(outside)}"
        if package != "mcp_server":
            edge = {target for target in targets if target.startswith("mcp_server")}
            assert not edge, f"{module} imports the MCP edge: {sorted(edge)}"


def test_analytics_names_no_module_of_another_package_in_a_string():
    """An import by a name in a string is an import too (e.g. "warehouse.aggregates:churn_rate")."""
    for module, path in project_modules().items():
        if not module.startswith("analytics"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = node.value.split(":")[0]
                assert not named.startswith(
                    tuple(f"{p}." for p in PACKAGES if p not in ("analytics", "core"))
                ), f"{module} names {node.value!r}"
