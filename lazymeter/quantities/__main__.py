"""``python -m lazymeter.quantities``: print the docs' metric table (docs/meter.md)."""

from . import metric_table

print(metric_table())
