"""Griffe extension: the library's Sphinx cross-reference roles as mkdocstrings links.

The docstrings say ``:func:`~lazymeter.empirical_ntk```, ``:class:`Sink```,
``:meth:`Quantity.probe_points``` (Sphinx roles, with ``~`` shortening and names relative
to the docstring's scope); mkdocstrings renders Markdown. When the package is loaded, this
extension rewrites each role into an *optional* mkdocs-autorefs reference to the object's
full path (resolved by Griffe in the docstring's scope: the object, its class, its module,
the modules' imports): a link where the API reference renders that object, plain code
where it does not (a private helper, a name Griffe cannot resolve), never a warning, so
``mkdocs build --strict`` passes whatever the docstrings name.

Loaded by mkdocstrings-python through ``extensions: [docs/_ext/sphinx_roles.py]`` in
mkdocs.yml; ``exclude_docs`` keeps this file out of the built site.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: ``:role:`target```, ``:role:`~target```, ``:role:`title <target>```, ``:py:role:`...```.
ROLE = re.compile(
    r":(?:py:)?(?P<role>func|class|meth|attr|mod|data|exc|obj|const):"
    r"`(?P<body>[^`]+)`"
)
EXPLICIT = re.compile(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>\s*$", re.DOTALL)


class SphinxRoles(griffe.Extension):
    """Rewrites Sphinx roles in every docstring of a loaded package (see the module)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self._packages = set(loader.modules_collection.members)
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = self.rewrite(obj.docstring.value, obj)
            stack.extend(m for m in obj.members.values() if not m.is_alias)

    def rewrite(self, text: str, scope: griffe.Object) -> str:
        """``text`` with each role replaced by an optional autoref to its resolved path."""

        def replace(m: re.Match[str]) -> str:
            body = m["body"].strip()
            explicit = EXPLICIT.match(body)
            title, target = (explicit["title"], explicit["target"]) if explicit else (None, body)
            short = target.startswith("~")
            target = target.lstrip("~").lstrip(".").removesuffix("()")
            if title is None:
                title = target.rsplit(".", 1)[-1] if short else target
            identifier = self.resolve(target, scope)
            # Backticks, not <code>: Markdown escapes the title (``__init__`` stays itself).
            return f'<autoref identifier="{html.escape(identifier)}" optional>`{title}`</autoref>'

        return ROLE.sub(replace, text)

    def resolve(self, target: str, scope: griffe.Object) -> str:
        """The full path of ``target`` seen from ``scope``: as written when it starts with a
        loaded package's name, else its first name resolved in ``scope`` (members, parents'
        members, imports) and the rest appended; as written when that fails."""
        head, _, rest = target.partition(".")
        if head in self._packages:
            return target
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError):
            return target
        return f"{path}.{rest}" if rest else path
