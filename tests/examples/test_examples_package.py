"""The paper's experiments are examples of the plugin, not part of it: the installed library
has no task code, and the examples (``examples/paper`` and the scripts) use lazymeter's
public API only."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
from example_scripts import EXAMPLES

import lazymeter

ROOT = EXAMPLES.parent

#: Modules of lazymeter that are public API (documented in docs/api.md or named there as
#: public namespaces); the examples import nothing else from it.
PUBLIC_MODULES = {
    "lazymeter",
    "lazymeter.decompose",
    "lazymeter.fsdp",
    "lazymeter.grokking",
    "lazymeter.integrations",
    "lazymeter.layer_plots",
    "lazymeter.ntk",
    "lazymeter.plots",
    "lazymeter.quantities",
    "lazymeter.regime",
    "lazymeter.report",
    "lazymeter.sinks",
}


def _public_module(name: str) -> bool:
    return name in PUBLIC_MODULES or name.startswith("lazymeter.integrations.")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _example_files() -> list[Path]:
    files = sorted(EXAMPLES.rglob("*.py"))
    assert EXAMPLES / "paper" / "harness.py" in files and EXAMPLES / "mnist.py" in files
    return files


def _offences(path: Path) -> list[str]:
    """Every use of lazymeter in ``path`` that is not its public API."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = set(lazymeter.__all__) | {"__version__"}
    top_level |= {m.rsplit(".", 1)[-1] for m in PUBLIC_MODULES if m != "lazymeter"}
    aliases: dict[str, str] = {}  # local name -> the lazymeter module it is
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] != "lazymeter":
                    continue
                if not _public_module(a.name):
                    bad.append(f"line {node.lineno}: import {a.name}")
                aliases[a.asname or a.name.split(".")[0]] = a.asname and a.name or "lazymeter"
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                bad.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''}")
            module = node.module or ""
            if node.level or module.split(".")[0] != "lazymeter":
                continue
            if not _public_module(module):
                bad.append(f"line {node.lineno}: from {module} import ...")
            for a in node.names:
                if _private(a.name) or (module == "lazymeter" and a.name not in top_level):
                    bad.append(f"line {node.lineno}: from {module} import {a.name}")
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:  # whole chains only
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if not isinstance(base, ast.Name) or base.id not in aliases:
            continue
        chain.reverse()
        if any(_private(a) for a in chain) or (
            aliases[base.id] == "lazymeter" and chain[0] not in top_level
        ):
            bad.append(f"line {node.lineno}: {base.id}.{'.'.join(chain)}")
    return bad


def test_the_library_has_no_task_code():
    assert importlib.util.find_spec("lazymeter.tasks") is None
    package = Path(lazymeter.__file__).parent
    assert not (package / "tasks").exists()
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) (paper|examples)\b", text, re.M), path


def test_the_wheel_holds_the_library_only():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from setuptools import find_namespace_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    find = config["setuptools"]["packages"]["find"]
    assert find.get("namespaces", True)  # the default: what find_namespace_packages finds
    packages = find_namespace_packages(where=str(ROOT), include=find["include"])
    assert "lazymeter" in packages and "lazymeter.ntk" in packages
    assert all(p == "lazymeter" or p.startswith("lazymeter.") for p in packages), packages
    assert not [p for p in packages if p.startswith("lazymeter.tasks")]
    assert "tasks" not in str(config["setuptools"].get("package-data", {}))


def test_the_examples_use_the_public_api_only():
    offences = {str(p.relative_to(ROOT)): o for p in _example_files() if (o := _offences(p))}
    assert offences == {}


def test_the_checker_catches_private_names(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import lazymeter as lm\n"
        "import lazymeter.threads\n"
        "from lazymeter.history import series\n"
        "from lazymeter.metrics import _centre\n"
        "from lazymeter import _version, center_kernel\n"
        "from ..threads import torch_threads\n"
        "lm._private(1)\n"
        "lm.metrics.center_kernel\n"
        "lm.ntk._cache\n"
        "lm.empirical_ntk, lm.__version__, lm.quantities.default\n"
    )
    found = _offences(bad)
    flagged = {int(f.split(":")[0].removeprefix("line ")) for f in found}
    assert flagged == set(range(2, 10)), found  # not the first line, nor the last
    assert len(found) == 9, found  # line 4: a private module and a private name


def test_no_example_switches_the_matplotlib_backend_or_uses_pyplot():
    """The examples' figures are ``matplotlib.figure.Figure`` objects of their own, as the
    library's are (tests/test_side_effects.py checks the package)."""
    pattern = re.compile(
        r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot"
    )
    offenders = [
        str(p.relative_to(ROOT))
        for p in _example_files()
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
