"""The package's modules import each other in layers: no circle among the module-level
imports, and no import hidden inside a function to dodge one (the NTK layer had three:
``api`` <-> ``sketch``, ``api`` -> ``fsdp`` -> ``ntk``, and ``explain``/``operator``/
``alignment`` -> ``api``). Function-level imports remain only where they defer an optional
or slow dependency, each listed below with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "lazymeter"

#: (importer, imported) pairs allowed inside functions, and why.
DEFERRED = {
    ("lazymeter.meter", "lazymeter.plots"): "matplotlib: optional, imported on first figure",
    ("lazymeter.meter", "lazymeter.live"): "matplotlib: optional, imported on first figure",
    ("lazymeter.live", "lazymeter.plots"): "matplotlib: optional, imported on first figure",
    ("lazymeter.cli", "lazymeter.report"): "the command line starts fast",
    ("lazymeter.cli", "lazymeter.regime"): "the command line starts fast",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _targets(node: ast.AST, package: str, modules: dict[str, Path]) -> list[str]:
    """The lazymeter modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    out = []
    for a in node.names:
        full = f"{origin}.{a.name}"
        out.append(full if full in modules else origin)
    return [t for t in out if t in modules]


def _graph() -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """(module-level imports, imports inside functions) between lazymeter's modules."""
    modules = _modules()
    top: dict[str, set[str]] = {m: set() for m in modules}
    inner: set[tuple[str, str]] = set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for stmt in tree.body:
            body = stmt.body if isinstance(stmt, (ast.If, ast.Try)) else [stmt]
            for node in body:
                top[name].update(t for t in _targets(node, package, modules) if t != name)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    inner.update((name, t) for t in _targets(node, package, modules) if t != name)
    return top, inner


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)) is not None:
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def test_module_level_imports_form_no_circle():
    top, _ = _graph()
    assert "lazymeter.sketch" not in top and "lazymeter.ntk.sketch" in top  # the scan sees ntk
    assert "lazymeter.ntk.exact" in top["lazymeter.ntk.sketch"]
    assert _cycle(top) is None, " -> ".join(_cycle(top) or [])


def test_no_import_hides_inside_a_function_but_the_listed_optional_ones():
    _, inner = _graph()
    hidden = sorted((a, b) for a, b in inner if (a, b) not in DEFERRED)
    assert hidden == [], hidden


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_ntk_namespace_exports_what_users_call_not_its_registries():
    import lazymeter.ntk as ntk

    exported = set(ntk.__all__)
    assert {"empirical_ntk", "kernel_plan", "explain", "register_engine", "Sketch"} <= exported
    assert not exported & {"CACHE", "ENGINES", "RULES", "OP_RULES", "DECLINES", "NTKCache"}
    assert all(hasattr(ntk, name) for name in exported)
    assert ntk.ENGINES is ntk.engines.ENGINES  # still reachable by name
