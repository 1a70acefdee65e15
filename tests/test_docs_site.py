"""The built documentation site renders what the docs say, and browses from disk.

* every internal link names a file (file:// opens no directory index);
* the API reference shows the docstrings' Sphinx roles (``:func:`~lazymeter.x```) as links
  where the object is rendered, as code where not, never as raw role text
  (docs/_ext/sphinx_roles.py, a Griffe extension);
* the integrations page is in the menu;
* search works from disk: mkdocs-material's offline plugin inlines the index as a script,
  and the Web Worker shim it needs for file:// is a local file, not a CDN's.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as ``mkdocs build`` writes it (mkdocs.yml has ``strict: true``)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-q", "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_every_internal_link_of_the_built_site_is_a_file(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > 10
    broken = []
    for page in pages:
        if page.name == "404.html":  # served sites only: absolute links by design
            continue
        for href in re.findall(r'href="([^"#?]+)', page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", href):  # http:, mailto:, data:
                continue
            target = (page.parent / href).resolve()
            if not target.is_file():  # a directory opens as a listing from file://
                broken.append(f"{page.relative_to(site)} -> {href}")
    assert broken == []
    assert "example.invalid" not in (site / "index.html").read_text(encoding="utf-8")


def test_the_api_page_renders_cross_references_as_links_not_sphinx_roles(site):
    html = (site / "api.html").read_text(encoding="utf-8")
    assert not ROLE.findall(html), sorted(set(ROLE.findall(html)))
    assert "<autoref" not in html  # every reference was settled: a link or plain code
    links = re.findall(r'<a class="autorefs autorefs-internal"[^>]*href="(#[^"]+)"', html)
    assert len(links) > 80  # type annotations alone give ~25: the docstrings give the rest
    # e.g. LazyMeter's docstring: :class:`~lazymeter.ProbeSet`, shortened to its name
    assert re.search(r'href="#lazymeter\.ProbeSet"[^>]*><code>ProbeSet</code></a>', html)
    # every link points at an object the page renders
    anchors = set(re.findall(r'id="([^"]+)"', html))
    assert {h[1:] for h in links} <= anchors


def test_the_menu_has_the_integrations_page(site):
    page = site / "integrations.html"
    assert page.is_file()
    nav = (site / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<a href="integrations\.html" class="md-nav__link">\s*'
                     r'<span class="md-ellipsis">\s*Integrations', nav)  # fmt: skip
    text = page.read_text(encoding="utf-8")
    for ref in (
        "lazymeter.integrations.huggingface.LazyMeterCallback",
        "lazymeter.integrations.lightning.LazyMeterCallback",
        "lazymeter.integrations.mlflow.MlflowSink",
        "lazymeter.integrations.wandb.WandbSink",
    ):
        assert f'href="api.html#{ref}"' in text, ref


def test_search_works_from_disk(site):
    index = site / "search" / "search_index.js"  # the offline plugin's inlined index
    assert index.is_file()
    assert index.read_text(encoding="utf-8").startswith("var __index = {")
    page = (site / "api.html").read_text(encoding="utf-8")
    shims = re.findall(r'<script src="([^"]*iframe-worker[^"]*)"', page)
    assert shims and not any(re.match(r"[a-z]+:", s) for s in shims), shims  # local, no CDN
    assert all((site / s).is_file() for s in shims)


def _rewrite(tmp_path, source):
    """``source`` as a package ``pkg`` loaded by Griffe with the docs' extension."""
    griffe = pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location(
        "sphinx_roles", ROOT / "docs" / "_ext" / "sphinx_roles.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "pkg").mkdir()
    for name, text in source.items():
        (tmp_path / "pkg" / name).write_text(text)
    loader = griffe.GriffeLoader(
        extensions=griffe.load_extensions(module.SphinxRoles()), search_paths=[tmp_path]
    )
    return loader.load("pkg")


def test_the_extension_resolves_roles_in_the_docstrings_scope(tmp_path):
    pkg = _rewrite(tmp_path, {
        "__init__.py": (
            '"""See :func:`~pkg.core.run` and :mod:`pkg.core`."""\n'
            "from .core import Thing\n"
        ),
        "core.py": (
            "class Thing:\n"
            '    """Uses :meth:`go`, :func:`run`, :class:`the thing <Thing>`, :attr:`missing`."""\n'
            "    def go(self):\n"
            '        """Calls :meth:`~Thing.go` and :py:func:`.run`."""\n'
            "def run():\n"
            '    """:exc:`ValueError` for a builtin."""\n'
        ),
    })  # fmt: skip

    def ref(identifier, title):
        return f'<autoref identifier="{identifier}" optional>`{title}`</autoref>'

    assert pkg.docstring.value == (
        f"See {ref('pkg.core.run', 'run')} and {ref('pkg.core', 'pkg.core')}."
    )
    thing = pkg["core.Thing"]
    assert thing.docstring.value == (
        f"Uses {ref('pkg.core.Thing.go', 'go')}, {ref('pkg.core.run', 'run')}, "
        f"{ref('pkg.core.Thing', 'the thing')}, {ref('missing', 'missing')}."
    )
    assert thing["go"].docstring.value == (
        f"Calls {ref('pkg.core.Thing.go', 'go')} and {ref('pkg.core.run', 'run')}."
    )
    # not resolvable: kept as written (rendered as code, no link, no warning)
    assert pkg["core.run"].docstring.value == f"{ref('ValueError', 'ValueError')} for a builtin."
