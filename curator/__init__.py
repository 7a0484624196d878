"""curator: curate teacher chain-of-thought data in an embedded DuckDB warehouse.

The package is library first: every CLI command in :mod:`curator.cli` is a thin wrapper
over a function in one of the concept modules (``warehouse``, ``sources``, ``imports``,
``grading``, ``teachers``, ``export``).
"""

__version__ = "0.1.0"
