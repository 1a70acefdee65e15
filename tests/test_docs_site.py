"""The built documentation site browses from disk: every internal link names a file."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_internal_link_of_the_built_site_is_a_file(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-q", "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
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
