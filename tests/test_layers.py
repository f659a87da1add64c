"""The package layout's import rules, read from the source with ``ast`` (ARCHITECTURE.md):

- a package imports only itself and the packages below it: labels < config < tracing <
  triton < classify < core < cache, backend < flow < doors < ops;
- nothing imports a door, and the two doors do not import each other;
- ``core`` (and everything it imports) uses no I/O library;
- no module imports ``export`` (the model build) at module level;
- no import cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "router_svc"
RANK = {"labels": 0, "config": 1, "tracing": 2, "triton": 3, "classify": 4, "core": 5,
        "cache": 6, "backend": 6, "flow": 7, "doors": 8, "ops": 9}
IO_LIBRARIES = {"aiohttp", "grpc", "tritonclient", "httptools", "hnswlib", "envoy"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def walk(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.module, top))
                found.extend((f"{child.module}.{a.name}", top) for a in child.names)
            inner = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            walk(child, inner if not isinstance(child, ast.ClassDef) else top)

    walk(tree, True)
    return found


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}
# the Python-backend model runs inside Triton, copied on its own: it imports nothing of ours
GRAPH = {m: sorted({i for i, _ in imports(p) if i in MODULES and i != m})
         for m, p in MODULES.items()}


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("module", sorted(m for m in MODULES if package(m)))
def test_imports_point_down(module: str) -> None:
    mine = package(module)
    assert mine in RANK, f"{module}: package {mine!r} has no place in RANK (ARCHITECTURE.md)"
    for dep in GRAPH[module]:
        theirs = package(dep)
        if theirs == mine:
            continue
        assert RANK[theirs] < RANK[mine], f"{module} imports {dep}: {theirs} is not below {mine}"


def test_no_door_imports_another_door() -> None:
    for m, deps in GRAPH.items():
        for d in deps:
            if d.startswith("router_svc.doors.") and not m.startswith("router_svc.ops."):
                assert d.split(".")[2] == m.split(".")[2], f"{m} imports {d}"


def test_core_and_what_it_imports_use_no_io_library() -> None:
    seen: set[str] = set()
    todo = [m for m in MODULES if package(m) in ("core", "config", "labels")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(GRAPH[m])
    for m in seen:
        used = {i.split(".")[0] for i, _ in imports(MODULES[m])}
        assert not used & IO_LIBRARIES, f"{m} (reached from core) imports {used & IO_LIBRARIES}"


def test_export_is_imported_lazily_only() -> None:
    for m, p in MODULES.items():
        eager = [i for i, top in imports(p) if top and i.split(".")[0] == "export"]
        assert not eager, f"{m} imports {eager} at module level"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in GRAPH[m]:
            if state.get(d) == 1:
                cycle = [*path[path.index(d):], d] if d in path else [m, d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def test_the_rules_see_the_imports() -> None:
    # a guard against a walker that finds nothing and so passes everything
    assert "router_svc.core.pipeline" in GRAPH["router_svc.flow.request"]
    assert any(i.startswith("aiohttp") for i, _ in imports(MODULES["router_svc.doors.http.app"]))
