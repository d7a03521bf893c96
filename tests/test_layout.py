"""The package layout's rules, checked on the source with ``ast``: imports run one way, without cycles,
and no function takes more than :data:`MAX_PARAMETERS` parameters."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("blocks", "search", "trainers")
MAX_PARAMETERS = 8


def module_name(path: Path) -> str:
    """``search/engine/rungs.py`` -> ``search.engine.rungs``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (``pkg.mod.func`` -> ``pkg.mod``), or ``None`` outside the project."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` imports anywhere (module level and inside functions)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            target = resolve(n, modules)
            if target is not None and target != me and not me.startswith(target + "."):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that ends where it starts, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_trainers_and_blocks_never_import_the_search() -> None:
    wrong = sorted(f"{m} imports {t}" for m, targets in import_graph().items() if not m.startswith("search")
                   for t in targets if t == "search" or t.startswith("search."))
    assert not wrong, wrong
    wrong = sorted(f"{m} imports {t}" for m, targets in import_graph().items() if m.startswith("blocks")
                   for t in targets if t.startswith("trainers"))
    assert not wrong, wrong


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_and_lazy_imports_are_seen(tmp_path: Path) -> None:
    modules = project_modules()
    path = ROOT / "search" / "engine" / "optuna_driver.py"
    assert "search.engine.ray_searcher" in imports_of(path, modules)  # imported inside run_search


def wide_functions() -> list[str]:
    """Functions (anywhere in the packages) with more than :data:`MAX_PARAMETERS` parameters."""
    wide = []
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
                if len(params) > MAX_PARAMETERS:
                    wide.append(f"{name}.{node.name} ({len(params)} parameters)")
    return sorted(wide)


def test_no_function_takes_more_than_eight_parameters() -> None:
    assert wide_functions() == []
