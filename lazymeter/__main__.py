"""``python -m lazymeter``: the same as the ``lazymeter`` command."""

from .cli import main

raise SystemExit(main())
